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

Scores are divided by ``sqrt(d_k)`` (``d_k`` = the key dimension) because a dot product of ``d_k``
random components grows like ``sqrt(d_k)``; unscaled, large scores push softmax towards a one-hot
output whose gradients are almost zero.
"""

import torch
import torch.nn as nn

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


def causal_mask(num_tokens, device=None):
    """Boolean ``(num_tokens, num_tokens)`` mask, True above the diagonal: the future a token must not see."""
    return torch.triu(torch.ones(num_tokens, num_tokens, dtype=torch.bool, device=device), diagonal=1)


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

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        _check_heads(d_out, num_heads)
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

    def forward(self, x):
        _check_tokens_input(x, self.d_in, self.context_length)
        b, num_tokens, _ = x.shape

        # (b, num_tokens, d_out) -> (b, num_tokens, num_heads, head_dim) -> (b, num_heads, num_tokens, head_dim)
        def split_heads(t):
            return t.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)

        queries = split_heads(self.W_query(x))
        keys = split_heads(self.W_key(x))
        values = split_heads(self.W_value(x))

        attn_scores = queries @ keys.transpose(2, 3)  # (b, num_heads, num_tokens, num_tokens)
        attn_scores = attn_scores.masked_fill(self.mask[:num_tokens, :num_tokens], -torch.inf)
        attn_weights = torch.softmax(attn_scores / self.head_dim ** 0.5, dim=-1)
        # (The attention explorer reads the weights with a forward hook on self.dropout, their one
        # way out of this function, so this class needs no switch for it.)
        attn_weights = self.dropout(attn_weights)

        context = attn_weights @ values  # (b, num_heads, num_tokens, head_dim)
        # Back to (b, num_tokens, num_heads, head_dim), then glue the heads: (b, num_tokens, d_out).
        context = context.transpose(1, 2).contiguous().view(b, num_tokens, self.d_out)
        return self.out_proj(context)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        _load_mask(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
