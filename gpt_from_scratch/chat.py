"""A terminal chat with an instruction-tuned model (SmolLM2): tokens printed as they come.

``generate`` returns when all the tokens are there; a chat wants to show each one as soon as it is
picked. :func:`stream_tokens` is the same loop written as a Python generator: the prompt goes through
the model once (filling the key/value cache), then each step feeds the one token picked last and
yields the next. :class:`ChatSession` keeps the conversation: every turn re-renders the whole chat
with the tokenizer's template, and only the tokens the cache does not hold yet are run through the
model, so a long conversation does not slow down each answer. ``gpt-from-scratch chat`` drives it.
"""

import sys

import torch

from . import checks

QUIT_COMMANDS = ("/quit", "/exit")


def next_token(logits, temperature=0.0, top_k=None, generator=None):
    """Pick the next token from the last position's ``logits`` ``(batch, vocab_size)`` -> ``(batch, 1)``.

    ``temperature=0``: greedy (argmax); otherwise keep the ``top_k`` largest logits (if given), divide
    by ``temperature`` and sample from the softmax with ``generator``. The same rule as ``generate``.
    """
    if temperature == 0:
        return torch.argmax(logits, dim=-1, keepdim=True)
    if top_k is not None:
        kth = torch.topk(logits, top_k).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -torch.inf)
    probs = torch.softmax(logits / temperature, dim=-1)
    return torch.multinomial(probs.cpu(), num_samples=1, generator=generator).to(logits.device)


@torch.no_grad()
def stream_tokens(model, prompt_ids, max_new_tokens, *, temperature=0.0, top_k=None, generator=None,
                  eos_id=None, kv_cache=None):
    """Yield up to ``max_new_tokens`` token ids (ints) continuing ``prompt_ids`` (a list of ints).

    ``kv_cache``: a cache from ``model.new_kv_cache(1, n)`` that already holds the first
    ``kv_cache[0].length`` tokens of ``prompt_ids`` (the earlier turns of a chat); only the rest is
    run. The cache must have room for the prompt and the new tokens. Stops after yielding ``eos_id``
    (it is yielded, so the caller sees why the answer ended, but not fed to the model).
    """
    checks.non_negative_int("max_new_tokens", max_new_tokens)
    cache = model.new_kv_cache(1, len(prompt_ids) + max_new_tokens) if kv_cache is None else kv_cache
    device = model.tok_emb.weight.device
    new = torch.tensor([prompt_ids[cache[0].length:]], device=device)  # (1, tokens not yet in the cache)
    for step in range(max_new_tokens):
        logits = model(new, kv_cache=cache, last_only=True)[:, -1, :]  # (1, vocab_size)
        token = next_token(logits, temperature, top_k, generator)  # (1, 1)
        yield int(token)
        if int(token) == eos_id or step == max_new_tokens - 1:
            return
        new = token


class ChatSession:
    """A conversation with ``model`` through ``tokenizer`` (a :class:`~gpt_from_scratch.smollm2.GGUFTokenizer`).

    ``session.reply(text, on_text=print_piece)`` adds the user's message, generates the answer (calling
    ``on_text`` with each new piece of text as it is decoded), adds it to ``session.messages`` and
    returns it. ``system``: the system prompt (None: the template's default).
    """

    def __init__(self, model, tokenizer, system=None, temperature=0.0, top_k=None, max_new_tokens=256, seed=None):
        checks.number("temperature", temperature, low=0, what="0 = greedy")
        if top_k is not None:
            checks.int_in_range("top_k", top_k, 1, model.cfg["vocab_size"], "the vocabulary size")
        checks.positive_int("max_new_tokens", max_new_tokens)
        self.model, self.tokenizer = model, tokenizer
        self.temperature, self.top_k, self.max_new_tokens = temperature, top_k, max_new_tokens
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.messages = [] if system is None else [{"role": "system", "content": system}]
        self._cache, self._cached_ids = None, []  # the tokens whose keys and values the cache holds

    def _prompt_ids(self):
        """The chat so far as ids, dropping the oldest exchanges if it does not fit the context."""
        limit = self.model.cfg["context_length"] - self.max_new_tokens
        while True:
            ids = self.tokenizer.apply_chat_template(self.messages, add_generation_prompt=True)
            if len(ids) <= limit:
                return ids
            first = 1 if self.messages[0]["role"] == "system" else 0
            if len(self.messages) - first <= 1:
                self.messages.pop()
                raise ValueError(f"the message is {len(ids)} tokens long with the chat template; at most {limit} "
                                 f"fit with max_new_tokens={self.max_new_tokens}")
            del self.messages[first:first + 2]  # forget the oldest question and its answer

    def reply(self, text, on_text=None):
        self.messages.append({"role": "user", "content": text})
        ids = self._prompt_ids()
        self._prepare_cache(ids)
        yielded, answer_ids, shown = [], [], ""
        for token in stream_tokens(self.model, ids, self.max_new_tokens, temperature=self.temperature,
                                   top_k=self.top_k, generator=self.generator, eos_id=self.tokenizer.eos_id,
                                   kv_cache=self._cache):
            yielded.append(token)
            if token == self.tokenizer.eos_id:
                break
            answer_ids.append(token)
            text_so_far = self.tokenizer.decode(answer_ids)
            # A character of several UTF-8 bytes can span tokens: wait until it is complete.
            if on_text is not None and not text_so_far.endswith("\ufffd"):
                on_text(text_so_far[len(shown):])
                shown = text_so_far
        # The cache holds the prompt and every token picked but the last (which was never fed).
        self._cached_ids = (ids + yielded)[:self._cache[0].length]
        answer = self.tokenizer.decode(answer_ids)
        if on_text is not None and answer != shown:
            on_text(answer[len(shown):])
        self.messages.append({"role": "assistant", "content": answer})
        return answer

    def _prepare_cache(self, ids):
        """Keep the cached keys and values of the longest common prefix of ``ids`` and the cached
        tokens (the earlier turns), forget the rest; a new, larger cache if this turn may not fit."""
        needed = len(ids) + self.max_new_tokens
        if self._cache is None or needed > self._cache[0].max_tokens:
            size = min(self.model.cfg["context_length"], -(-needed // 1024) * 1024)  # room for a few turns
            self._cache, self._cached_ids = self.model.new_kv_cache(1, size), []
        common = 0
        for a, b in zip(ids, self._cached_ids):
            if a != b:
                break
            common += 1
        common = min(common, len(ids) - 1)  # at least one prompt token must run, to get the next logits
        for layer_cache in self._cache:
            layer_cache.length = common  # "rewind": positions after it are overwritten by the next append
        self._cached_ids = self._cached_ids[:common]


def run_chat(session, stdin=None, stdout=None, interactive=None):
    """The read-answer loop: one line per message; an empty line is skipped; Ctrl-D or /quit ends it.

    With piped input (``interactive=False``, the default when stdin is not a terminal) no prompt is
    shown and each answer is followed by a newline, so the output reads as a transcript.
    """
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    if interactive is None:
        interactive = stdin.isatty()

    def show(piece):
        stdout.write(piece)
        stdout.flush()

    if interactive:
        show("Chat with SmolLM2 (Ctrl-D or /quit to end).\n")
    while True:
        if interactive:
            show("\n> ")
        line = stdin.readline()
        if not line:  # end of input: Ctrl-D, or the end of a pipe
            if interactive:
                show("\n")
            return
        text = line.strip()
        if text in QUIT_COMMANDS:
            return
        if not text:
            continue
        session.reply(text, on_text=show)
        show("\n")


# --- the command line (gpt-from-scratch chat, generate --model smollm2) --------------------------------

def load_chat_model(weights=None):
    """(model, tokenizer) from a Llama GGUF file, or SmolLM2's (fetched once) when ``weights`` is None."""
    from pathlib import Path

    from .smollm2 import load_smollm2, load_smollm2_tokenizer

    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"--weights: no such file: {weights}")
    return load_smollm2(weights), load_smollm2_tokenizer(weights)


def generate_llama_text(weights, prompt, max_new_tokens, temperature=0.0, top_k=None, seed=None):
    """The prompt continued by SmolLM2 (or the GGUF model in ``weights``), ending at its end token."""
    from .generate import generate

    model, tokenizer = load_chat_model(weights)
    idx = torch.tensor([tokenizer.encode(prompt)])
    ids = generate(model, idx, max_new_tokens, model.cfg["context_length"], temperature=temperature, top_k=top_k,
                   eos_id=tokenizer.eos_id, seed=seed)
    return tokenizer.decode(ids[0])


def main(args):
    """``gpt-from-scratch chat``: ``args`` from the command's parser (weights, system, temperature, ...)."""
    model, tokenizer = load_chat_model(args.weights)
    session = ChatSession(model, tokenizer, system=args.system, temperature=args.temperature, top_k=args.top_k,
                          max_new_tokens=args.max_new_tokens, seed=args.seed)
    try:
        run_chat(session)
    except KeyboardInterrupt:  # Ctrl-C ends the chat as quietly as Ctrl-D
        sys.stdout.write("\n")
    return 0
