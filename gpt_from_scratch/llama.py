"""A modern LLM: the Llama architecture, built from the same parts as GPT-2 with five changes.

Llama 2 and 3, SmolLM2, Qwen, Mistral and most open models since 2023 keep GPT-2's skeleton (token
embedding, a stack of pre-norm blocks with shortcuts, a final norm, an output head) and change five
things, each explained where it is defined, in this order:

    RMSNorm             LayerNorm without the mean and the shift: rescale each vector to RMS 1
    RoPE                no position embedding; queries and keys are *rotated* by an angle that grows
                        with the position, so q.k depends only on how far apart two tokens are
    SwiGLUFeedForward   SwiGLU: two projections up, one gated by SiLU (``silu(x W1) * (x W2)``), one down
    GroupedQueryAttention  several query heads share one key/value head: a smaller KV cache
    (no biases)         no Linear has a bias; the output head is often tied to the token embedding

then ``LlamaBlock`` and ``LlamaModel``, and ``SMOLLM2_CONFIG_135M``, the configuration of
SmolLM2-135M, which ``load_smollm2`` fills with real weights (see ``smollm2.py``).

The interface is GPTModel's, so ``generate`` works unchanged: ``model.cfg`` holds ``vocab_size`` and
``context_length``; ``model(idx, kv_cache=None, last_only=False)`` returns logits ``(b, t, vocab)``;
``model.new_kv_cache(batch_size, max_tokens)`` gives one :class:`KVCache` per block.

The names follow the book's Llama notebooks (``W_query``, ``fc1``/``fc2``/``fc3``, ``trf_blocks``,
``n_kv_groups``); ``llama_weights.py`` maps them to the names in GGUF files and transformers.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import checks
from .attention import KVCache, causal_sdpa, check_cache_room
from .model import check_token_ids

# SmolLM2-135M(-Instruct), as its GGUF metadata and transformers' config describe it.
SMOLLM2_CONFIG_135M = {
    "vocab_size": 49152,      # byte-level BPE (GPT-2 has 50257)
    "context_length": 8192,   # RoPE has no table of positions: this is only how far it was trained
    "emb_dim": 576,           # width of the token vectors
    "n_heads": 9,             # query heads, 64 dimensions each
    "n_kv_groups": 3,         # key/value heads: each serves 9 / 3 = 3 query heads
    "n_layers": 30,           # blocks (GPT-2 124M has 12, but wider)
    "hidden_dim": 1536,       # feed-forward width (8/3 x 576 rounded up to a multiple of 256 is 1536)
    "rope_base": 100000.0,    # theta: the slowest rotation's wavelength grows with it
    "rms_norm_eps": 1e-5,
    "tie_weights": True,      # output head = token embedding matrix
}

_REQUIRED_KEYS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_kv_groups", "n_layers", "hidden_dim",
                  "rope_base")
_OPTIONAL_KEYS = {"rms_norm_eps": 1e-5, "tie_weights": False}


def validate_llama_config(cfg):
    """Check a Llama config dict and return a copy with the optional keys filled in.

    Every message names the key, its value and the rule: ``n_heads`` must be a multiple of
    ``n_kv_groups`` (each key/value head serves the same number of query heads), ``emb_dim`` a
    multiple of ``n_heads``, and the head size even (RoPE rotates pairs of features).
    """
    if not isinstance(cfg, dict):
        raise TypeError(f"a Llama config must be a dict, got {type(cfg).__name__}")
    missing = [key for key in _REQUIRED_KEYS if key not in cfg]
    if missing:
        raise ValueError(f"Llama config is missing {', '.join(missing)} (see SMOLLM2_CONFIG_135M)")
    unknown = sorted(set(cfg) - set(_REQUIRED_KEYS) - set(_OPTIONAL_KEYS))
    if unknown:
        raise ValueError(f"unknown Llama config key(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(_REQUIRED_KEYS + tuple(_OPTIONAL_KEYS))}")
    cfg = {**_OPTIONAL_KEYS, **cfg}
    for key in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_kv_groups", "n_layers", "hidden_dim"):
        checks.positive_int(key, cfg[key])
    checks.number("rope_base", cfg["rope_base"], low=0, low_open=True)
    checks.number("rms_norm_eps", cfg["rms_norm_eps"], low=0)
    if not isinstance(cfg["tie_weights"], bool):
        raise TypeError(f"tie_weights must be True or False, got {cfg['tie_weights']!r}")
    if cfg["emb_dim"] % cfg["n_heads"]:
        raise ValueError(f"emb_dim = {cfg['emb_dim']} must be divisible by n_heads = {cfg['n_heads']}")
    if cfg["n_heads"] % cfg["n_kv_groups"]:
        raise ValueError(f"n_heads = {cfg['n_heads']} must be divisible by n_kv_groups = {cfg['n_kv_groups']}")
    if (cfg["emb_dim"] // cfg["n_heads"]) % 2:
        raise ValueError(f"the head size emb_dim / n_heads = {cfg['emb_dim'] // cfg['n_heads']} must be even: "
                         "RoPE rotates pairs of features")
    return cfg


# --- 1. RMSNorm ------------------------------------------------------------------------------------

class RMSNorm(nn.Module):
    """Divide each vector by its root mean square, then scale: ``(..., emb_dim) -> (..., emb_dim)``.

    ``y = x / sqrt(mean(x^2) + eps) * weight``. LayerNorm also subtracts the mean and adds a shift;
    models trained with RMSNorm instead reach comparable quality (the next layer can absorb a shift),
    and it saves a reduction per vector. Same computation as ``torch.nn.RMSNorm`` (parameter name
    ``weight`` as there). The mean of squares is taken in float32 whatever the input's dtype, as
    transformers does, so a bf16 model normalises as precisely as an fp32 one.
    """

    def __init__(self, emb_dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(emb_dim))

    def forward(self, x):
        x32 = x.float()
        norm_x = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * norm_x.to(x.dtype)


# --- 2. RoPE: rotary position embeddings -------------------------------------------------------------

def rope_angles(head_dim, context_length, theta_base=10000.0):
    """Precompute ``cos`` and ``sin`` of the rotation angles: two tensors ``(context_length, head_dim)``.

    Feature pair ``i`` (``i = 0 .. head_dim/2 - 1``) of the token at position ``p`` is rotated by the
    angle ``p * theta_base ** (-2i / head_dim)``: pair 0 turns by 1 radian per position, the last pair
    very slowly, so together they tell near from far like the hands of a clock. Row ``p`` holds the
    angles of position ``p`` twice (``[angles, angles]``): the split-halves layout of :func:`apply_rope`.
    Computed in float32 the way transformers does, so the two models agree to the last bit.
    """
    checks.positive_int("head_dim", head_dim)
    if head_dim % 2:
        raise ValueError(f"head_dim must be even (RoPE rotates pairs of features), got {head_dim}")
    checks.positive_int("context_length", context_length)
    inv_freq = 1.0 / (theta_base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    positions = torch.arange(context_length, dtype=torch.float32)
    angles = positions[:, None] * inv_freq[None, :]  # (context_length, head_dim / 2)
    angles = torch.cat([angles, angles], dim=-1)  # (context_length, head_dim)
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x, cos, sin):
    """Rotate the feature pairs of ``x`` ``(batch, heads, tokens, head_dim)`` by the angles of its positions.

    ``cos``, ``sin``: ``(tokens, head_dim)``, the rows of :func:`rope_angles` for the tokens' positions.
    Split-halves layout (transformers, the book): pair ``i`` is features ``i`` and ``i + head_dim/2``.
    A 2-d rotation of ``(a, b)`` by angle ``phi`` is ``(a cos - b sin, a sin + b cos)``; with
    ``rotated = [-second half, first half]`` that is ``x * cos + rotated * sin`` for all pairs at once.

    Why it works: rotating the query by ``m * w`` and the key by ``n * w`` leaves their dot product
    depending on ``(m - n) * w`` only, so attention sees relative positions, with nothing learned.
    """
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


def apply_rope_interleaved(x, cos, sin):
    """The same rotation in the interleaved layout (the RoPE paper, Meta's Llama code, llama.cpp).

    Pair ``i`` is features ``2i`` and ``2i + 1``. Same ``cos``/``sin`` as :func:`apply_rope` (only
    their first half is used). The two layouts compute the same function once the query and key
    weights' output rows are reordered (``llama_weights.unpermute_qk``), which is why GGUF files store
    ``attn_q``/``attn_k`` permuted: the per-head dot products q.k are unchanged by the reordering.
    """
    half = x.shape[-1] // 2
    c, s = cos[..., :half], sin[..., :half]
    even, odd = x[..., 0::2], x[..., 1::2]  # (..., head_dim / 2) each: the pairs' two coordinates
    out = torch.stack([even * c - odd * s, even * s + odd * c], dim=-1)  # (..., head_dim / 2, 2)
    return out.flatten(-2).to(x.dtype)


# --- 3. SwiGLU feed-forward -----------------------------------------------------------------------

class SwiGLUFeedForward(nn.Module):
    """SwiGLU feed-forward: ``fc3(silu(fc1(x)) * fc2(x))``. ``(b, t, emb_dim) -> (b, t, emb_dim)``.

    GPT-2 computes ``W2 gelu(W1 x)``. Here a second projection ``fc2`` is multiplied feature by feature
    with the activated ``fc1`` (a *gate*: the network decides, per feature, how much passes). Three
    matrices instead of two, so the hidden size is about 2/3 of 4 x emb_dim for the same parameter
    count (SmolLM2: 1536 for emb_dim 576). ``fc1`` is GGUF's ``ffn_gate`` (transformers' ``gate_proj``),
    ``fc2`` its ``ffn_up`` (``up_proj``), ``fc3`` its ``ffn_down`` (``down_proj``). No biases.
    """

    def __init__(self, cfg):
        super().__init__()
        self.fc1 = nn.Linear(cfg["emb_dim"], cfg["hidden_dim"], bias=False)
        self.fc2 = nn.Linear(cfg["emb_dim"], cfg["hidden_dim"], bias=False)
        self.fc3 = nn.Linear(cfg["hidden_dim"], cfg["emb_dim"], bias=False)

    def forward(self, x):
        return self.fc3(F.silu(self.fc1(x)) * self.fc2(x))  # silu(z) = z * sigmoid(z)


# --- 4. Grouped-query attention --------------------------------------------------------------------

def repeat_kv(x, n_rep):
    """``(b, n_kv_heads, t, head_dim) -> (b, n_kv_heads * n_rep, t, head_dim)``: each key/value head
    repeated ``n_rep`` times in a row, so that query head ``h`` meets key/value head ``h // n_rep``.
    (``expand`` makes views; the ``reshape`` copies once, as attention needs the heads laid out.)"""
    if n_rep == 1:
        return x
    b, n_kv, t, d = x.shape
    return x[:, :, None, :, :].expand(b, n_kv, n_rep, t, d).reshape(b, n_kv * n_rep, t, d)


class GroupedQueryAttention(nn.Module):
    """Causal attention in which ``num_heads`` query heads share ``num_kv_groups`` key/value heads.

    ``(b, t, d_in) -> (b, t, d_out)``. Multi-head attention gives each head its own keys and values;
    during generation those are what the cache holds for every past token, and reading them is what
    bounds the speed. Sharing each key/value head among ``num_heads / num_kv_groups`` query heads
    shrinks the key and value projections and the cache by that factor (3 for SmolLM2), at little cost
    in quality. ``num_kv_groups == num_heads`` is ordinary multi-head attention, 1 is multi-query.

    Queries and keys are rotated by RoPE after the projection; the cache stores the rotated keys (a
    key's rotation depends on its own position only, so it never changes).
    """

    def __init__(self, d_in, d_out, num_heads, num_kv_groups, use_sdpa=True):
        super().__init__()
        checks.positive_int("num_heads", num_heads)
        checks.positive_int("num_kv_groups", num_kv_groups)
        if d_out % num_heads or num_heads % num_kv_groups:
            raise ValueError(f"d_out = {d_out} must be divisible by num_heads = {num_heads}, and num_heads by "
                             f"num_kv_groups = {num_kv_groups}")
        if not isinstance(use_sdpa, bool):
            raise TypeError(f"use_sdpa must be True or False, got {use_sdpa!r}")
        self.use_sdpa = use_sdpa
        self.d_in, self.d_out = d_in, d_out
        self.num_heads, self.num_kv_groups = num_heads, num_kv_groups
        self.head_dim = d_out // num_heads
        self.group_size = num_heads // num_kv_groups  # query heads per key/value head

        self.W_query = nn.Linear(d_in, d_out, bias=False)
        self.W_key = nn.Linear(d_in, num_kv_groups * self.head_dim, bias=False)  # 3x smaller for SmolLM2
        self.W_value = nn.Linear(d_in, num_kv_groups * self.head_dim, bias=False)
        self.out_proj = nn.Linear(d_out, d_out, bias=False)

    def forward(self, x, cos, sin, kv_cache=None):
        """``x`` (b, t, d_in); ``cos``/``sin`` (t, head_dim): the angles of the t tokens' positions;
        ``kv_cache``: a :class:`KVCache` with ``num_kv_groups`` heads holding the earlier tokens."""
        b, num_tokens, _ = x.shape
        queries = self.W_query(x).view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        keys = self.W_key(x).view(b, num_tokens, self.num_kv_groups, self.head_dim).transpose(1, 2)
        values = self.W_value(x).view(b, num_tokens, self.num_kv_groups, self.head_dim).transpose(1, 2)
        queries = apply_rope(queries, cos, sin)  # (b, num_heads, t, head_dim)
        keys = apply_rope(keys, cos, sin)  # (b, num_kv_groups, t, head_dim)
        past = 0
        if kv_cache is not None:
            past = kv_cache.length
            keys, values = kv_cache.append(keys, values)  # (b, num_kv_groups, past + t, head_dim)
        keys = repeat_kv(keys, self.group_size)  # (b, num_heads, past + t, head_dim)
        values = repeat_kv(values, self.group_size)

        # The new tokens are at positions past .. past + t - 1: their rows of the causal mask.
        # (t, past + t), True = masked: token i may see keys 0 .. past + i (only these rows are built)
        mask = torch.ones(num_tokens, past + num_tokens, dtype=torch.bool, device=x.device).triu(past + 1)
        if self.use_sdpa:
            context = causal_sdpa(queries, keys, values, mask)
        else:
            scores = queries @ keys.transpose(2, 3) / math.sqrt(self.head_dim)  # (b, heads, t, past + t)
            weights = torch.softmax(scores.masked_fill(mask, -torch.inf), dim=-1)
            context = weights @ values  # (b, num_heads, t, head_dim)
        context = context.transpose(1, 2).reshape(b, num_tokens, self.d_out)
        return self.out_proj(context)

    def new_kv_cache(self, batch_size, max_tokens):
        """An empty cache for this layer: ``num_kv_groups`` heads, same dtype and device as the weights."""
        weight = self.W_key.weight
        return KVCache(batch_size, self.num_kv_groups, max_tokens, self.head_dim, dtype=weight.dtype,
                       device=weight.device)


# --- 5. The block and the model -----------------------------------------------------------------------

class LlamaBlock(nn.Module):
    """Pre-norm block, as GPT-2's, with RMSNorm, grouped-query attention and SwiGLU. ``(b, t, d) -> (b, t, d)``::

        x = x + attention(norm1(x))     # GGUF attn_norm
        x = x + feed_forward(norm2(x))  # GGUF ffn_norm

    No dropout: these models are pretrained on so much text that they see each example about once.
    """

    def __init__(self, cfg, use_sdpa=True):
        super().__init__()
        self.att = GroupedQueryAttention(cfg["emb_dim"], cfg["emb_dim"], cfg["n_heads"], cfg["n_kv_groups"],
                                         use_sdpa=use_sdpa)
        self.ff = SwiGLUFeedForward(cfg)
        self.norm1 = RMSNorm(cfg["emb_dim"], eps=cfg["rms_norm_eps"])
        self.norm2 = RMSNorm(cfg["emb_dim"], eps=cfg["rms_norm_eps"])

    def forward(self, x, cos, sin, kv_cache=None):
        x = x + self.att(self.norm1(x), cos, sin, kv_cache)
        x = x + self.ff(self.norm2(x))
        return x


class LlamaModel(nn.Module):
    """The Llama architecture: token embedding, ``n_layers`` :class:`LlamaBlock`, RMSNorm, output head.

    ``(batch, num_tokens)`` ids -> ``(batch, num_tokens, vocab_size)`` logits, like ``GPTModel``::

        token ids                          (b, t)
          -> token embedding               (b, t, d)      no position embedding: RoPE, inside attention
          -> n_layers x LlamaBlock         (b, t, d)
          -> final RMSNorm                 (b, t, d)
          -> output head (no bias)         (b, t, vocab_size)

    Named after the architecture (SmolLM2, TinyLlama and Llama 2/3 are configurations of it), as the
    series names ``GPTModel``; transformers' own ``LlamaModel`` is the stack without the head, ours
    is the whole model (``LlamaForCausalLM`` there). With ``cfg["tie_weights"]`` the head shares the
    token embedding matrix (SmolLM2: 28.3M of the 134.5M parameters would otherwise be doubled).
    ``use_sdpa=False`` computes attention with the explicit softmax (same result, slower).
    RoPE's cos/sin tables are buffers (``persistent=False``: computed, not saved, ~4 MB for 8192
    positions).
    """

    def __init__(self, cfg, use_sdpa=True):
        super().__init__()
        cfg = validate_llama_config(cfg)
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.trf_blocks = nn.ModuleList([LlamaBlock(cfg, use_sdpa) for _ in range(cfg["n_layers"])])
        self.final_norm = RMSNorm(cfg["emb_dim"], eps=cfg["rms_norm_eps"])
        self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)
        if cfg["tie_weights"]:
            self.out_head.weight = self.tok_emb.weight
        cos, sin = rope_angles(cfg["emb_dim"] // cfg["n_heads"], cfg["context_length"], cfg["rope_base"])
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, in_idx, kv_cache=None, last_only=False):
        """``in_idx`` (batch, num_tokens) -> logits (batch, num_tokens, vocab_size).

        ``kv_cache`` (from :meth:`new_kv_cache`): the tokens continue from position ``past``, the
        cache's length; ``last_only=True`` returns ``(batch, 1, vocab_size)``. As in ``GPTModel``.
        """
        check_token_ids(in_idx, context_length=self.cfg["context_length"])  # shape only: reading values would sync a GPU
        num_tokens = in_idx.shape[1]
        past = 0 if kv_cache is None else kv_cache[0].length
        check_cache_room(past, num_tokens, self.cfg["context_length"])
        cos = self.cos[past:past + num_tokens].to(self.tok_emb.weight.dtype)  # (t, head_dim)
        sin = self.sin[past:past + num_tokens].to(self.tok_emb.weight.dtype)
        x = self.tok_emb(in_idx)  # (b, t, d)
        for i, block in enumerate(self.trf_blocks):
            x = block(x, cos, sin, None if kv_cache is None else kv_cache[i])
        if last_only:
            x = x[:, -1:, :]
        x = self.final_norm(x)
        return self.out_head(x)  # (b, t, vocab_size)

    def new_kv_cache(self, batch_size, max_tokens=None):
        """One :class:`KVCache` per block, each for ``batch_size`` sequences of up to ``max_tokens``
        tokens (default and limit: context_length), with ``n_kv_groups`` heads.

        Bytes per token (fp32): ``n_layers x 2 x n_kv_groups x head_dim x 4`` = 46,080 for SmolLM2
        (30 x 2 x 3 x 64 x 4); with a key/value head per query head it would be 3 times that.
        """
        max_tokens = self.cfg["context_length"] if max_tokens is None else max_tokens
        checks.positive_int("batch_size", batch_size)
        checks.int_in_range("max_tokens", max_tokens, 1, self.cfg["context_length"], "the context length")
        return [block.att.new_kv_cache(batch_size, max_tokens) for block in self.trf_blocks]
