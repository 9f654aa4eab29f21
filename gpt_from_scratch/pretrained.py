"""OpenAI's GPT-2 in a ``GPTModel``: from the Hugging Face Hub, a safetensors file, or a ``.pth``.

``load_pretrained_gpt2`` finds the weights, on the Hub or on disk, reads them without holding two
copies in memory, checks their keys and shapes once (naming the file and the first key that does
not fit) and returns a ready ``GPTModel``. The mapping from GPT-2's layout to ours is ``weights.py``.
"""

import difflib
import json
import re
from pathlib import Path

import torch

from .config import GPT_CONFIGS, gpt2_names
from .model import GPTModel
from .weights import hub_layout_shapes, load_hf_gpt2_weights

# OpenAI's four GPT-2 models are on the Hub as safetensors files: a JSON header (every tensor's name,
# dtype, shape and byte range) followed by the raw bytes. safetensors memory-maps the file, so a tensor
# is read from disk only when it is asked for. We ask for one tensor at a time, copy it into the model
# and let it go: loading never holds the model twice, whatever its size.

HUB_FILE = "model.safetensors"

# Every name of a GPT-2 size the loader accepts ("gpt2", "124M", "openai-community/gpt2") -> (Hub
# repository, our config), read off config.GPT_CONFIGS.
_ROWS = [(*gpt2_names(book_name), cfg) for book_name, cfg in GPT_CONFIGS.items()]  # (size, Hub name, config)
GPT2_SIZES = {**{hub: (f"openai-community/{hub}", cfg) for _, hub, cfg in _ROWS},
              **{size: (f"openai-community/{hub}", cfg) for size, hub, cfg in _ROWS},
              **{f"openai-community/{hub}": (f"openai-community/{hub}", cfg) for _, hub, cfg in _ROWS}}

# Every GPT-2 size uses heads of 64 dimensions; a file without config.json tells the width, not the
# number of heads, so we look it up.
_HEADS_BY_WIDTH = {cfg["emb_dim"]: cfg["n_heads"] for cfg in GPT_CONFIGS.values()}

# In the Hub's files but not weights: each block's causal mask (attn.bias, as a float buffer) and, in
# older files, attn.masked_bias. We build our own mask.
_HF_BUFFERS = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)$")


def load_pretrained_gpt2(name_or_path, *, cache_dir=None, local_files_only=False):
    """OpenAI's GPT-2 in a ``GPTModel``, in eval mode, ready to generate.

    ``name_or_path`` is either

    - a size: ``"gpt2"``, ``"gpt2-medium"``, ``"gpt2-large"``, ``"gpt2-xl"`` (or ``"124M"``, ``"355M"``,
      ``"774M"``, ``"1558M"``): ``model.safetensors`` is downloaded once from the Hub repository
      ``openai-community/<size>`` into Hugging Face's cache (``cache_dir`` to choose another folder;
      ``local_files_only=True`` never uses the network). A file already in the cache is used without
      asking the network: GPT-2's weights never change.
    - a path: a ``.safetensors`` file in the Hub's layout; a directory holding ``model.safetensors``
      (and, optionally, the Hub's ``config.json``, which gives the sizes; without it they follow from
      the tensors' shapes); or a ``.pth``/``.pt`` file holding the state dict of a ``GPTModel`` (ours or
      the book's), or a checkpoint written by ``save_checkpoint``.

    The model has GPT-2's config for that size: ``qkv_bias=True``, ``drop_rate`` 0, and its output
    head tied to the token embedding (GPT-2 has no separate head: its file holds no ``lm_head``).

    Raises ``ValueError`` for an unknown size name (the message lists the valid ones) or a file that is
    truncated, of another architecture or with shapes that do not fit (naming the first such key);
    ``FileNotFoundError`` for a missing path; ``ConnectionError`` when the weights are neither in the
    cache nor downloadable (offline, ``HF_HUB_OFFLINE=1``, the Hub unreachable), within seconds.
    """
    if not isinstance(local_files_only, bool):
        raise TypeError(f"local_files_only must be True or False, got {local_files_only!r}")
    if cache_dir is not None and not isinstance(cache_dir, (str, Path)):
        raise TypeError(f"cache_dir must be a path (str or Path) or None, got {type(cache_dir).__name__}")
    cfg = None
    if isinstance(name_or_path, str) and name_or_path in GPT2_SIZES:
        repo, size_cfg = GPT2_SIZES[name_or_path]
        path = _download(repo, cache_dir, local_files_only)
        cfg = {**size_cfg, "qkv_bias": True, "drop_rate": 0.0}
    else:
        path = _local_path(name_or_path)
        if path.is_dir():
            cfg = _read_hub_config(path / "config.json") if (path / "config.json").is_file() else None
            path = path / HUB_FILE
            if not path.is_file():
                raise FileNotFoundError(f"no {HUB_FILE} in the directory {path.parent}")
    return _build_and_load(_Tensors(path), cfg, path).eval()


def _local_path(name_or_path):
    if not isinstance(name_or_path, (str, Path)):
        raise TypeError(f"name_or_path must be a GPT-2 size name or a path, got {type(name_or_path).__name__}")
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    text = str(name_or_path)
    if path.suffix or "/" in text or "\\" in text:  # meant as a path
        raise FileNotFoundError(f"no such file or directory: {text}")
    names = [name for name in GPT2_SIZES if "/" not in name]
    valid = ", ".join(map(repr, names))
    close = difflib.get_close_matches(text, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown GPT-2 size {text!r}{hint}: valid sizes are {valid}, or give the path of a "
                     f"weights file or directory")


# --- the Hub ---------------------------------------------------------------------------------------

# Seconds to wait for the Hub's answer about the file before giving up: it answers in well under a
# second when it is reachable at all.
HUB_TIMEOUT = 10


def _download(repo, cache_dir, local_files_only):
    """Path of ``model.safetensors`` of ``repo`` in Hugging Face's cache, downloading it if needed.

    ``huggingface_hub`` does the downloading (its cache, resuming, progress bar). On its own it retries
    a failed connection for half a minute or more before giving up, so we first ask once, with a short
    timeout, whether the file can be had at all, and fail at once with our message if not.
    """
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:  # the cache first: no network at all when the file is already there
        return huggingface_hub.hf_hub_download(repo, HUB_FILE, cache_dir=cache_dir, local_files_only=True)
    except LocalEntryNotFoundError:
        pass
    if local_files_only:
        raise ConnectionError(_unavailable(repo, "local_files_only=True"))
    try:
        huggingface_hub.get_hf_file_metadata(huggingface_hub.hf_hub_url(repo, HUB_FILE), timeout=HUB_TIMEOUT)
    except Exception as err:  # offline mode, no network, a timeout, an HTTP error: all mean "cannot download"
        raise ConnectionError(_unavailable(repo, _reason(err))) from None
    return huggingface_hub.hf_hub_download(repo, HUB_FILE, cache_dir=cache_dir)


def _reason(err):
    from huggingface_hub.errors import OfflineModeIsEnabled

    if isinstance(err, OfflineModeIsEnabled):
        return "offline mode is on: HF_HUB_OFFLINE=1"
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160]}" if text else type(err).__name__


def _unavailable(repo, reason):
    return (f"cannot get {HUB_FILE} of {repo} from the Hugging Face Hub ({reason}) and it is not in the "
            f"cache; download it where there is a network (https://huggingface.co/{repo}) and pass the "
            f"path of the file, or of a directory holding it, instead")


def _read_hub_config(path):
    """Our config from the Hub's ``config.json`` (``n_embd``, ``n_head``, ``n_layer``, ...)."""
    try:
        hub = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a readable config.json ({type(err).__name__}: {err})") from None
    model_type = hub.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise ValueError(f"{path} describes a {model_type!r} model, not GPT-2 (model_type 'gpt2')")
    activation = hub.get("activation_function", "gelu_new")
    if activation not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"{path} uses the activation {activation!r}; GPTModel's GELU is GPT-2's 'gelu_new'")
    try:
        return {"vocab_size": hub["vocab_size"], "context_length": hub.get("n_positions", hub.get("n_ctx")),
                "emb_dim": hub["n_embd"], "n_heads": hub["n_head"], "n_layers": hub["n_layer"],
                "drop_rate": 0.0, "qkv_bias": True}
    except KeyError as err:
        raise ValueError(f"{path} has no {err.args[0]!r}: not a GPT-2 config.json") from None


# --- reading a file ----------------------------------------------------------------------------------

class _Tensors:
    """A file's tensors, by name, read one at a time when asked for; ``shape(key)`` reads no data.

    Works as the mapping ``load_hf_gpt2_weights`` and ``load_state_dict`` take. A safetensors file is
    opened anew for each tensor and a ``.pth`` is memory-mapped, so nothing needs closing: the mapping
    goes when the object does.
    """

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no such file: {self.path}")
        if self.path.suffix == ".safetensors":
            self._open_safetensors()
        else:
            self._open_torch()

    def _open_safetensors(self):
        from safetensors import safe_open

        try:
            with safe_open(str(self.path), framework="pt", device="cpu") as file:
                self._keys = list(file.keys())
                shapes = {key: tuple(file.get_slice(key).get_shape()) for key in self._keys}
        except Exception as err:  # safetensors' own error type differs between versions
            raise ValueError(f"{self.path} is not a complete safetensors file (truncated or corrupt: "
                             f"{_first_line(err)})") from None

        def get(key):
            # A tensor from safe_open is a view of the mapped file, read from disk when touched. The
            # file is mapped anew for each tensor and unmapped when the tensor is dropped, so the pages
            # already copied into the model do not linger in the process's memory.
            with safe_open(str(self.path), framework="pt", device="cpu") as file:
                return file.get_tensor(key)

        self._get = get
        self._shape = shapes.__getitem__

    def _open_torch(self):
        # weights_only=True reads tensors and plain data but never runs code from the file; mmap=True
        # maps it instead of reading it all (files from before PyTorch 1.6 cannot be mapped).
        try:
            try:
                obj = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as err:
                if "mmap" not in str(err):
                    raise
                obj = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"{self.path} is not a complete PyTorch file (truncated or corrupt: "
                             f"{_first_line(err)})") from None
        from .checkpoint import FORMAT

        self.config = None
        if isinstance(obj, dict) and obj.get("format") == FORMAT:  # a checkpoint of save_checkpoint
            self.config, obj = obj["config"], obj["model"]
        elif isinstance(obj, dict) and isinstance(obj.get("model_state_dict"), dict):  # the book's
            obj = obj["model_state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise ValueError(f"{self.path} holds no state dict (a dict of tensors); got {type(obj).__name__}")
        self._keys = list(obj)
        self._get = obj.__getitem__
        self._shape = lambda key: tuple(obj[key].shape)

    def keys(self):
        return list(self._keys)

    def __contains__(self, key):
        return key in self._keys

    def __iter__(self):
        return iter(self._keys)

    def __len__(self):
        return len(self._keys)

    def __getitem__(self, key):
        if key not in self._keys:
            raise KeyError(key)
        return self._get(key)

    def items(self):
        return ((key, self[key]) for key in self._keys)

    def shape(self, key):
        return self._shape(key)


def _first_line(err):
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:200]}" if lines else type(err).__name__


# --- from tensors to a model -------------------------------------------------------------------------

def _build_and_load(tensors, cfg, path):
    """Check the file's keys and shapes against ``cfg`` (read off the shapes when None), then build a
    model and copy the tensors into it."""
    keys = tensors.keys()
    if any(k.removeprefix("transformer.") == "wte.weight" for k in keys):  # the Hub's layout
        cfg = cfg or _config_from_shapes(tensors, path, hub_layout=True)
        wte = "transformer.wte.weight" if "transformer.wte.weight" in tensors else "wte.weight"
        tied = _same_tensor(tensors, "lm_head.weight", wte)
        _check_no_other_keys(tensors, cfg, path)
        return load_hf_gpt2_weights(GPTModel(cfg, tie_weights=tied), tensors, source=str(path))
    if "tok_emb.weight" in keys:  # GPTModel's own layout (ours and the book's)
        cfg = cfg or getattr(tensors, "config", None) or _config_from_shapes(tensors, path, hub_layout=False)
        cfg = {**cfg, "drop_rate": 0.0}
        tied = _same_tensor(tensors, "out_head.weight", "tok_emb.weight")
        _check_our_layout(tensors, cfg, tied, path)
        model = GPTModel(cfg, tie_weights=tied)
        state = dict(tensors.items())
        state.setdefault("out_head.weight", state["tok_emb.weight"])
        model.load_state_dict(state)
        return model
    first = keys[0] if keys else None
    raise ValueError(f"{path} does not hold GPT-2 weights: its first key is {first!r}, expected 'wte.weight' "
                     f"(the Hub's layout) or 'tok_emb.weight' (GPTModel's)")


def _same_tensor(tensors, head, embedding):
    """True when the output head is missing (GPT-2's files) or equal to the token embedding: tie them."""
    return head not in tensors or (tensors.shape(head) == tensors.shape(embedding)
                                   and torch.equal(tensors[head], tensors[embedding]))


def _config_from_shapes(tensors, path, hub_layout):
    """A config read off the tensors: vocabulary and width from the token embedding, context from the
    position embedding, depth from the block numbers, heads from GPT-2's head count for that width."""
    prefix = "transformer." if "transformer.wte.weight" in tensors else ""
    emb, pos, block = (f"{prefix}wte.weight", f"{prefix}wpe.weight", r"(?:transformer\.)?h\.(\d+)\.") if hub_layout \
        else ("tok_emb.weight", "pos_emb.weight", r"trf_blocks\.(\d+)\.")
    if pos not in tensors:
        raise ValueError(f"{path} has no {pos!r}: not a complete GPT-2 file")
    vocab_size, emb_dim = tensors.shape(emb)
    numbers = {int(m.group(1)) for k in tensors.keys() if (m := re.match(block, k))}
    if emb_dim not in _HEADS_BY_WIDTH:
        widths = ", ".join(f"{w} -> {h}" for w, h in _HEADS_BY_WIDTH.items())
        raise ValueError(f"{path}: cannot tell the number of heads of a model {emb_dim} wide from the tensors "
                         f"alone (GPT-2's widths: {widths}); put the Hub's config.json (with n_head) next to "
                         f"the file, in one directory")
    return {"vocab_size": vocab_size, "context_length": tensors.shape(pos)[0], "emb_dim": emb_dim,
            "n_heads": _HEADS_BY_WIDTH[emb_dim], "n_layers": max(numbers) + 1 if numbers else 0,
            "drop_rate": 0.0, "qkv_bias": True if hub_layout else "trf_blocks.0.att.W_query.bias" in tensors}


def _check_no_other_keys(tensors, cfg, path):
    """The Hub's layout: a key GPT-2 does not have means another architecture (the keys it needs and
    their shapes are load_hf_gpt2_weights' to check)."""
    known = {*hub_layout_shapes(cfg), "lm_head.weight"}
    found = {k.removeprefix("transformer."): k for k in tensors.keys()}
    _compare({}, found, tensors, path, cfg, ignore=lambda key: key in known or _HF_BUFFERS.match(key))


def _check_our_layout(tensors, cfg, tied, path):
    with torch.device("meta"):  # shapes only: no memory, no random numbers
        expected = {k: tuple(v.shape) for k, v in GPTModel(cfg, tie_weights=tied).state_dict().items()}
    masks = [k for k in expected if k.endswith(".att.mask")]
    _compare(expected, {k: k for k in tensors.keys()}, tensors, path, cfg, optional=("out_head.weight", *masks))


def _compare(expected, found, tensors, path, cfg, optional=(), ignore=lambda key: False):
    """Raise a ValueError naming the first key (in model order) that is missing or has another shape,
    or else the first key of the file that the model does not have. ``found``: our key -> file's key."""
    sizes = (f"{cfg['n_layers']} layers, width {cfg['emb_dim']}, vocabulary {cfg['vocab_size']}, "
             f"context {cfg['context_length']}")
    for key, shape in expected.items():
        if key not in found:
            if key in optional:
                continue
            raise ValueError(f"{path} has no {key!r}, which a GPT-2 of {sizes} needs")
        got = tensors.shape(found[key])
        if got != tuple(shape):
            raise ValueError(f"{path}: {found[key]!r} has shape {got}, but a GPT-2 of {sizes} needs {tuple(shape)}")
    extra = [k for k in found if k not in expected and not ignore(k)]
    if extra:
        raise ValueError(f"{path} holds {found[extra[0]]!r}, which a GPT-2 of {sizes} does not have "
                         f"(another architecture?)")
