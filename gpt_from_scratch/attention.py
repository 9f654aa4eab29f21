"""Self-attention, from the simplest version to the multi-head attention GPT-2 uses.

Attention lets each token build its new vector as a weighted average of (projections of) all the
tokens it may look at. For one token, the *query*, the weights come from comparing its query vector
with every token's *key* vector (a dot product, a score), turned into a distribution with softmax; the
average is taken over the tokens' *value* vectors. In matrix form, for ``x`` of shape
``(num_tokens, d_in)``::

    Q, K, V = x @ W_q, x @ W_k, x @ W_v            # (num_tokens, d_out) each
    weights = softmax(Q @ K.T / sqrt(d_out))       # (num_tokens, num_tokens), rows sum to 1
    context = weights @ V                          # (num_tokens, d_out)

The classes below add one idea each:

- ``SelfAttention_v1``: the formula above with the weight matrices as ``nn.Parameter``.
- ``SelfAttention_v2``: the same with ``nn.Linear`` layers (better initialisation, optional bias).
- ``CausalAttention``: a token may not look at the tokens after it (a mask), dropout on the weights,
  and a batch dimension.
- ``MultiHeadAttentionWrapper``: several ``CausalAttention`` heads side by side, outputs concatenated.
- ``MultiHeadAttention``: the same computation done for all heads at once by splitting one big
  projection into ``num_heads`` slices, plus an output projection. This is what ``GPTModel`` uses.
- ``KVCache``: the keys and values one ``MultiHeadAttention`` has computed so far, kept between calls
  so that generation feeds only the new token at each step (notebook 07).

Scores are divided by ``sqrt(d_k)`` (``d_k`` = the key dimension) because a dot product of ``d_k``
random components grows like ``sqrt(d_k)``; unscaled, large scores push softmax towards a one-hot
output whose gradients are almost zero.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import checks
from .checks import positive_int


def _check_tokens_input(x, d_in, context_length):
    """Check ``x`` is a float tensor of shape (batch, num_tokens, d_in) with num_tokens <= context_length."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a tensor of shape (batch, num_tokens, {d_in}), got {type(x).__name__}")
    if x.dim() != 3 or x.shape[-1] != d_in:
        raise ValueError(f"expected a tensor of shape (batch, num_tokens, {d_in}), got {tuple(x.shape)}")
    if x.shape[1] > context_length:
        raise ValueError(
            f"sequence of {x.shape[1]} tokens is longer than context_length={context_length}; "
            f"crop it to the last {context_length} tokens"
        )


def _check_heads(d_out, num_heads, divisible=True):
    positive_int("num_heads", num_heads)
    if divisible and d_out % num_heads != 0:
        raise ValueError(f"d_out = {d_out} must be divisible by num_heads = {num_heads}")


def check_cache_room(past, num_tokens, context_length):
    """Refuse ``num_tokens`` new tokens after ``past`` cached ones when together they exceed the context."""
    if past + num_tokens > context_length:
        raise ValueError(
            f"{past} cached + {num_tokens} new tokens is more than context_length={context_length}: "
            f"start a new cache from the last tokens (generate recomputes the window then)"
        )


def causal_mask(num_tokens, device=None):
    """Boolean ``(num_tokens, num_tokens)`` mask, True above the diagonal: the future a token must not see."""
    return torch.triu(torch.ones(num_tokens, num_tokens, dtype=torch.bool, device=device), diagonal=1)


def causal_sdpa(queries, keys, values, mask, dropout_p=0.0):
    """PyTorch's fused ``scaled_dot_product_attention`` with our causal ``mask`` (True = masked).

    ``queries`` ``(b, heads, num_tokens, head_dim)``; ``keys``, ``values`` ``(b, heads, past + num_tokens,
    head_dim)``; ``mask`` ``(num_tokens, past + num_tokens)``, the new tokens' rows of the causal mask.
    The fused call never stores the (num_tokens x num_tokens) weights, which saves time and memory on
    long sequences. Its boolean mask means "may attend" (ours means "masked"); ``is_causal`` builds the
    usual mask itself and is right when there is no past. Used by ``MultiHeadAttention`` and by
    ``llama.GroupedQueryAttention``.
    """
    num_tokens, total = mask.shape
    if num_tokens == total:  # no cached past: the plain causal mask
        return F.scaled_dot_product_attention(queries, keys, values, dropout_p=dropout_p, is_causal=True)
    if num_tokens == 1:  # one new token after the past: it may see everything, no mask needed
        return F.scaled_dot_product_attention(queries, keys, values, dropout_p=dropout_p)
    return F.scaled_dot_product_attention(queries, keys, values, attn_mask=~mask, dropout_p=dropout_p)


def _load_mask(module, state_dict, prefix):
    """Let ``load_state_dict(strict=True)`` accept files with and without the causal mask.

    The mask is saved with the weights (a persistent buffer) so that the book's code, which expects
    ``...att.mask``, loads our files. Files that lack it (ours from before, or written by hand) get
    the module's own mask. A saved mask, bool or the book's float 0/1, must be the causal one: a file
    that would let tokens see the future is refused.
    """
    key = prefix + "mask"
    saved = state_dict.get(key)
    if saved is None:
        state_dict[key] = module.mask
    elif saved.shape != module.mask.shape or not torch.equal(saved.bool().cpu(), module.mask.cpu()):
        raise ValueError(
            f"{key} in the state dict is not the causal mask of shape {tuple(module.mask.shape)} "
            f"(got shape {tuple(saved.shape)}): it would let tokens attend to later tokens"
        )
    else:
        state_dict[key] = module.mask


class SelfAttention_v1(nn.Module):
    """Scaled dot-product self-attention with raw ``nn.Parameter`` weights, no mask.

    Input ``(num_tokens, d_in)`` (or with leading batch dims), output ``(num_tokens, d_out)``.
    """

    def __init__(self, d_in, d_out):
        super().__init__()
        self.W_query = nn.Parameter(torch.rand(d_in, d_out))
        self.W_key = nn.Parameter(torch.rand(d_in, d_out))
        self.W_value = nn.Parameter(torch.rand(d_in, d_out))

    def forward(self, x):
        keys = x @ self.W_key  # (num_tokens, d_out)
        queries = x @ self.W_query
        values = x @ self.W_value
        attn_scores = queries @ keys.transpose(-2, -1)  # (num_tokens, num_tokens)
        attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
        return attn_weights @ values  # (num_tokens, d_out)


class SelfAttention_v2(nn.Module):
    """``SelfAttention_v1`` with ``nn.Linear`` projections. Input/output shapes as v1.

    ``nn.Linear`` stores its weight as ``(d_out, d_in)``, so ``v1.W_query`` equals ``v2.W_query.weight.T``.
    """

    def __init__(self, d_in, d_out, qkv_bias=False):
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)

    def forward(self, x):
        keys = self.W_key(x)
        queries = self.W_query(x)
        values = self.W_value(x)
        attn_scores = queries @ keys.transpose(-2, -1)
        attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
        return attn_weights @ values


class CausalAttention(nn.Module):
    """One causal attention head with dropout on the attention weights.

    Input ``(batch, num_tokens, d_in)`` with ``num_tokens <= context_length``; output
    ``(batch, num_tokens, d_out)``. Position ``t`` of the output depends only on inputs ``0..t``.
    """

    def __init__(self, d_in, d_out, context_length, dropout, qkv_bias=False):
        super().__init__()
        self.d_in = d_in
        self.d_out = d_out
        self.context_length = context_length
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout)
        # A buffer moves with the module (.to(device)) but is not trained. It is saved in state_dict,
        # as in the book, so weights saved by either code load into the other (see _load_mask).
        self.register_buffer("mask", causal_mask(context_length))

    def forward(self, x):
        _check_tokens_input(x, self.d_in, self.context_length)
        b, num_tokens, d_in = x.shape
        keys = self.W_key(x)  # (b, num_tokens, d_out)
        queries = self.W_query(x)
        values = self.W_value(x)

        attn_scores = queries @ keys.transpose(1, 2)  # (b, num_tokens, num_tokens)
        # -inf before softmax gives exactly 0 weight to the future; each row still sums to 1.
        attn_scores = attn_scores.masked_fill(self.mask[:num_tokens, :num_tokens], -torch.inf)
        attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
        attn_weights = self.dropout(attn_weights)
        return attn_weights @ values  # (b, num_tokens, d_out)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        _load_mask(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class MultiHeadAttentionWrapper(nn.Module):
    """``num_heads`` independent ``CausalAttention`` heads whose outputs are concatenated.

    Input ``(batch, num_tokens, d_in)``; output ``(batch, num_tokens, num_heads * d_out)``: here
    ``d_out`` is the size of *each* head, as in the series.
    """

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        _check_heads(d_out, num_heads, divisible=False)
        self.heads = nn.ModuleList(
            [CausalAttention(d_in, d_out, context_length, dropout, qkv_bias) for _ in range(num_heads)]
        )

    def forward(self, x):
        return torch.cat([head(x) for head in self.heads], dim=-1)


class MultiHeadAttention(nn.Module):
    """Causal multi-head attention with all heads computed in one batched matrix product.

    Input ``(batch, num_tokens, d_in)``; output ``(batch, num_tokens, d_out)``. Each of the
    ``num_heads`` heads works on ``head_dim = d_out // num_heads`` dimensions.

    Rather than ``num_heads`` separate ``d_in -> head_dim`` projections, one ``d_in -> d_out``
    projection is computed and its last dimension viewed as ``(num_heads, head_dim)``. Moving the head
    axis in front of the token axis turns the per-head attention into one batched matmul. At the end the
    heads are put side by side again and mixed by ``out_proj``.
    """

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False, use_sdpa=False):
        super().__init__()
        _check_heads(d_out, num_heads)
        if not isinstance(use_sdpa, bool):
            raise TypeError(f"use_sdpa must be True or False, got {use_sdpa!r}")
        self.use_sdpa = use_sdpa  # True: PyTorch's fused kernel instead of the explicit softmax (same result)
        self.d_in = d_in
        self.d_out = d_out
        self.context_length = context_length
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads

        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)  # mixes the heads' outputs
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", causal_mask(context_length))  # saved, as in CausalAttention

    def forward(self, x, kv_cache=None):
        """``x`` (b, num_tokens, d_in) -> (b, num_tokens, d_out).

        ``kv_cache``: a :class:`KVCache` holding the keys and values of the ``past`` tokens before
        ``x``. The new tokens' keys and values are appended to it, and the new tokens attend to all
        ``past + num_tokens`` of them, as if the whole sequence had been passed at once.
        """
        _check_tokens_input(x, self.d_in, self.context_length)
        b, num_tokens, _ = x.shape
        past = 0 if kv_cache is None else kv_cache.length
        check_cache_room(past, num_tokens, self.context_length)

        # (b, num_tokens, d_out) -> (b, num_tokens, num_heads, head_dim) -> (b, num_heads, num_tokens, head_dim)
        def split_heads(t):
            return t.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)

        queries = split_heads(self.W_query(x))
        keys = split_heads(self.W_key(x))
        values = split_heads(self.W_value(x))
        if kv_cache is not None:
            # The earlier tokens' keys and values do not depend on the new tokens (causal mask), so
            # they were computed once and kept; append the new ones and attend to all of them.
            keys, values = kv_cache.append(keys, values)  # (b, num_heads, past + num_tokens, head_dim)
        # The new tokens are at positions past .. past + num_tokens - 1: their rows of the causal mask.
        mask = self.mask[past:past + num_tokens, :past + num_tokens]  # (num_tokens, past + num_tokens)

        if self.use_sdpa:
            context = self._sdpa(queries, keys, values, mask)
        else:
            attn_scores = queries @ keys.transpose(2, 3)  # (b, num_heads, num_tokens, past + num_tokens)
            attn_scores = attn_scores.masked_fill(mask, -torch.inf)
            attn_weights = torch.softmax(attn_scores / self.head_dim ** 0.5, dim=-1)
            attn_weights = self.dropout(attn_weights)
            context = attn_weights @ values  # (b, num_heads, num_tokens, head_dim)

        # Back to (b, num_tokens, num_heads, head_dim), then glue the heads: (b, num_tokens, d_out).
        context = context.transpose(1, 2).contiguous().view(b, num_tokens, self.d_out)
        return self.out_proj(context)

    def _sdpa(self, queries, keys, values, mask):
        """The explicit lines of ``forward`` in one fused call: scale, mask, softmax, dropout, weights @ values."""
        return causal_sdpa(queries, keys, values, mask, dropout_p=self.dropout.p if self.training else 0.0)

    def new_kv_cache(self, batch_size, max_tokens=None):
        """An empty :class:`KVCache` for this layer: ``batch_size`` sequences of up to ``max_tokens``
        tokens (default and limit: ``context_length``), same dtype and device as the weights."""
        max_tokens = self.context_length if max_tokens is None else max_tokens
        checks.int_in_range("max_tokens", max_tokens, 1, self.context_length, "the context length")
        weight = self.W_key.weight
        return KVCache(batch_size, self.num_heads, max_tokens, self.head_dim, dtype=weight.dtype, device=weight.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        _load_mask(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class KVCache:
    """The keys and values one attention layer has computed so far, for ``batch_size`` sequences.

    In generation, step ``n`` feeds one new token, but its attention needs the keys and values of all
    ``n`` tokens. Those of the earlier tokens do not change (a token never sees later ones), so instead
    of recomputing them every step the layer keeps them here and computes only the new token's.
    Queries need no cache: only the new token asks a question.

    Design: tensors of shape ``(batch_size, num_heads, max_tokens, head_dim)`` allocated once, filled
    from the left; ``length`` says how many positions hold data. The alternative, a tensor that grows
    with ``torch.cat`` at every step, reads just as well but copies the whole cache each step (its
    cost grows with the length) and allocates anew each time. Memory: ``2 x max_tokens x d_out`` numbers
    per sequence and layer (keys and values), whatever ``length`` is.
    """

    def __init__(self, batch_size, num_heads, max_tokens, head_dim, dtype=torch.float32, device=None):
        for name, value in (("batch_size", batch_size), ("num_heads", num_heads), ("max_tokens", max_tokens),
                            ("head_dim", head_dim)):
            positive_int(name, value)
        shape = (batch_size, num_heads, max_tokens, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0  # positions filled so far

    @property
    def max_tokens(self):
        return self.keys.shape[2]

    def append(self, keys, values):
        """Store the new tokens' ``keys`` and ``values`` ``(batch_size, num_heads, num_new, head_dim)``
        after the ones already held; return all of them, ``(batch_size, num_heads, length, head_dim)``
        each (views into the cache, not copies)."""
        expected = (self.keys.shape[0], self.keys.shape[1], keys.shape[2], self.keys.shape[3])
        if keys.shape != expected or values.shape != expected:
            raise ValueError(f"expected keys and values of shape {expected} (batch, heads, new tokens, head_dim), "
                             f"got {tuple(keys.shape)} and {tuple(values.shape)}")
        start, end = self.length, self.length + keys.shape[2]
        if end > self.max_tokens:
            raise ValueError(f"the cache holds {start} of at most {self.max_tokens} tokens: no room for "
                             f"{keys.shape[2]} more; start a new cache")
        self.keys[:, :, start:end] = keys
        self.values[:, :, start:end] = values
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def nbytes(self):
        """Bytes the cache occupies (allocated, whatever ``length`` is)."""
        return self.keys.numel() * self.keys.element_size() + self.values.numel() * self.values.element_size()

    def __repr__(self):
        b, h, n, d = self.keys.shape
        return f"KVCache(batch_size={b}, num_heads={h}, max_tokens={n}, head_dim={d}, length={self.length})"
