"""Generating text: turn a prompt into ids, extend it one token at a time, turn the ids back into text.

A GPT predicts, at every position, scores (logits) for the token that comes next. To generate, we
feed the prompt, keep only the last position's logits (the prediction for the token after the
prompt), pick a token, append it and repeat. ``generate_text_simple`` picks greedily: always the token
with the highest score. The model can only look at ``context_size`` tokens, so a prompt that has grown
longer is cropped to its last ``context_size`` tokens before each step.

``generate`` adds the two knobs that make text less repetitive, both applied to the last position's
logits before a token is drawn:

- ``top_k``: keep only the k highest logits (the rest get -inf, so probability 0);
- ``temperature``: divide the logits by it, then *sample* from the softmax. Below 1 the distribution
  sharpens towards the top token, above 1 it flattens towards uniform; 0 means greedy (argmax).

and it is fast: with ``use_cache=True`` (the default) the prompt goes through the model once, which
keeps every layer's keys and values in a cache, and each later step feeds only the one new token
(notebook 07). The tokens are the same as without the cache; ``generate_text_simple`` is the
definition both must match.
"""

import torch

from . import checks
from .model import check_token_ids
from .tokenizer import END_OF_TEXT


def _check_generation_args(model, idx, max_new_tokens, context_size, temperature=0.0, top_k=None, eos_id=None):
    """The checks ``generate_text_simple`` and ``generate`` share, done once per call; returns the
    vocabulary size (or the largest id a long tensor holds, for a model without a ``cfg``)."""
    checks.non_negative_int("max_new_tokens", max_new_tokens)
    checks.positive_int("context_size", context_size)
    checks.number("temperature", temperature, low=0, what="0 = greedy")
    cfg = getattr(model, "cfg", None)
    vocab_size = cfg["vocab_size"] if isinstance(cfg, dict) and "vocab_size" in cfg else torch.iinfo(torch.long).max
    if top_k is not None:
        checks.int_in_range("top_k", top_k, 1, vocab_size, "the vocabulary size")
    if eos_id is not None:
        checks.int_in_range("eos_id", eos_id, 0, vocab_size - 1, "a token id")
    check_token_ids(idx, vocab_size)
    return vocab_size


def generate_text_simple(model, idx, max_new_tokens, context_size):
    """Greedy generation.

    ``idx``: ``(batch, num_tokens)`` token ids of the prompt. Returns ``(batch, num_tokens +
    max_new_tokens)``: the prompt followed by the new tokens. Runs under ``torch.no_grad()``; put the
    model in ``eval()`` mode first, or dropout makes the result random.
    """
    _check_generation_args(model, idx, max_new_tokens, context_size)

    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]  # (batch, <= context_size): what the model can see
        with torch.no_grad():
            logits = model(idx_cond)  # (batch, n_tokens, vocab_size)
        logits = logits[:, -1, :]  # (batch, vocab_size): the prediction for the next token
        # softmax keeps the order of the logits, so argmax of either picks the same token;
        # the probabilities are what one would look at or sample from.
        probas = torch.softmax(logits, dim=-1)
        idx_next = torch.argmax(probas, dim=-1, keepdim=True)  # (batch, 1)
        idx = torch.cat((idx, idx_next), dim=1)  # (batch, n_tokens + 1)
    return idx


def top_k_filter(logits, k):
    """Keep the ``k`` largest logits of each row (last dimension); set the others to -inf.

    ``(..., vocab_size) -> (..., vocab_size)``. Ties with the k-th largest value are kept.
    """
    kth_largest = torch.topk(logits, k).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth_largest, -torch.inf)


def sample_next_token(logits, temperature=0.0, top_k=None, generator=None):
    """From the last position's logits ``(batch, vocab_size)`` to the next token's ids ``(batch, 1)``.

    ``top_k`` keeps only the k highest logits; ``temperature`` 0 picks the highest (greedy), above 0
    divides the logits by it and draws from the softmax with ``generator`` (the draw runs on the CPU,
    so that a seed gives the same tokens on every device).
    """
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if temperature == 0:
        return torch.argmax(logits, dim=-1, keepdim=True)
    probs = torch.softmax(logits / temperature, dim=-1)
    return torch.multinomial(probs.cpu(), num_samples=1, generator=generator).to(logits.device)


def generate(model, idx, max_new_tokens, context_size, temperature=0.0, top_k=None, eos_id=None, seed=None,
             use_cache=True):
    """Generate with optional top-k filtering and temperature sampling.

    ``idx``: ``(batch, num_tokens)`` prompt ids; returns ``(batch, num_tokens + n)`` with
    ``n <= max_new_tokens``. ``temperature=0`` is greedy and equals ``generate_text_simple``;
    ``top_k=k`` keeps the k most likely tokens; ``seed`` (an int or a ``torch.Generator``) makes
    sampling reproducible without touching the global random state.

    ``eos_id``: generation stops when the model picks this token, which is not included in the result
    (as in the series). In a batch, a sequence that has finished is padded with ``eos_id`` until every
    sequence has finished.

    ``use_cache``: keep the keys and values between steps, for a model that has
    ``new_kv_cache(batch_size, max_tokens)`` and ``forward(idx, kv_cache=None, last_only=False)`` (such
    as ``GPTModel``); other models run on the whole window every step. Same tokens either way.
    """
    _check_generation_args(model, idx, max_new_tokens, context_size, temperature, top_k, eos_id)
    cfg = getattr(model, "cfg", None)
    if isinstance(cfg, dict) and "context_length" in cfg:  # up front: the same error with and without the cache
        checks.int_in_range("context_size", context_size, 1, cfg["context_length"], "the model's context_length")
    if not isinstance(use_cache, bool):
        raise TypeError(f"use_cache must be True or False, got {use_cache!r}")
    generator = _generator(seed)

    # The cache holds the keys and values of every token fed so far, at positions 0, 1, 2, ... Step 1
    # feeds the prompt (priming the cache), each later step only the token picked last. Once the
    # sequence outgrows context_size the window slides, every token moves to a new position and the
    # cached keys and values no longer apply: from then on each step runs the whole window, exactly
    # as generate_text_simple does.
    cached_model = use_cache and hasattr(model, "new_kv_cache")
    cache = None
    if cached_model and idx.shape[1] < context_size:
        cache = model.new_kv_cache(idx.shape[0], min(idx.shape[1] + max_new_tokens, context_size))
    new_tokens = idx
    finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    for _ in range(max_new_tokens):
        if idx.shape[1] > context_size:
            cache = None  # the window slides: recompute it
        with torch.no_grad():
            if cache is not None:
                logits = model(new_tokens, kv_cache=cache, last_only=True)[:, -1, :]  # (batch, vocab_size)
            elif cached_model:  # the same model, its output head run on the last position only
                logits = model(idx[:, -context_size:], last_only=True)[:, -1, :]
            else:
                logits = model(idx[:, -context_size:])[:, -1, :]
        idx_next = sample_next_token(logits, temperature, top_k, generator)  # (batch, 1)
        if eos_id is not None:
            idx_next = idx_next.masked_fill(finished.unsqueeze(1), eos_id)  # keep finished ones padded
            finished |= idx_next.squeeze(1) == eos_id
            if finished.all():
                break
        idx = torch.cat((idx, idx_next), dim=1)
        new_tokens = idx_next
    return idx


def _generator(seed):
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, int) and not isinstance(seed, bool):
        return torch.Generator().manual_seed(seed)
    raise TypeError(f"seed must be an int or a torch.Generator, got {seed!r}")


def text_to_token_ids(text, tokenizer):
    """str -> ``(1, num_tokens)`` LongTensor, ready for the model (``<|endoftext|>`` allowed)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not text:
        raise ValueError("the prompt is empty: the model needs at least one token to continue from")
    encoded = tokenizer.encode(text, allowed_special={END_OF_TEXT})
    return torch.tensor(encoded).unsqueeze(0)  # add the batch dimension


def token_ids_to_text(token_ids, tokenizer):
    """``(1, num_tokens)`` or ``(num_tokens,)`` ids -> str."""
    if isinstance(token_ids, torch.Tensor):
        if token_ids.dim() == 2 and token_ids.shape[0] != 1:
            raise ValueError(f"expected one sequence, shape (1, num_tokens); got {tuple(token_ids.shape)}")
        token_ids = token_ids.reshape(-1).tolist()
    return tokenizer.decode(token_ids)
