"""The GPT model, in the order it is explained: its pieces, the full ``GPTModel``, then the placeholder.

    LayerNorm         normalise each token vector (mean 0, variance 1), then scale and shift
    GELU              the smooth non-linearity of the feed-forward network
    FeedForward       emb_dim -> 4 * emb_dim -> GELU -> emb_dim, the same for every position
    TransformerBlock  attention and feed-forward, each behind a LayerNorm and a shortcut
    GPTModel          embeddings -> n_layers blocks -> final LayerNorm -> output head
    DummyGPTModel     the same skeleton with blocks and norm that do nothing (notebook 03)

Order of construction matters for reproducibility: PyTorch's default initialisation draws from one
random stream, so building the modules in the series' order (token embedding, position embedding,
then per block query, key, value, out_proj, feed-forward, norms; final norm; output head) is what makes
``torch.manual_seed(123)`` give the series' exact weights and exact generated text.
"""

import contextlib
import math

import torch
import torch.nn as nn

from .attention import MultiHeadAttention, check_cache_room
from .config import validate_config


class LayerNorm(nn.Module):
    """Normalise each vector over its last dimension to mean 0 and variance 1, then scale and shift.

    ``(..., emb_dim) -> (..., emb_dim)``. The variance is the biased one (divide by n, not n - 1), as
    in GPT-2 and ``torch.nn.LayerNorm``; ``eps`` keeps the division finite when the variance is 0.
    ``scale`` (init 1) and ``shift`` (init 0) are trained, so the model can undo the normalisation.
    """

    def __init__(self, emb_dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x):
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        norm_x = (x - mean) / torch.sqrt(var + self.eps)
        return self.scale * norm_x + self.shift


class GELU(nn.Module):
    """Gaussian error linear unit, tanh approximation (as in GPT-2). Elementwise, any shape.

    ``GELU(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``: like ReLU for large |x|, but smooth
    around 0 and slightly negative for small negative x, so every input still gets a gradient.
    """

    def forward(self, x):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


class FeedForward(nn.Module):
    """Position-wise feed-forward network: ``emb_dim -> 4*emb_dim -> GELU -> emb_dim``. ``(b, t, d) -> (b, t, d)``."""

    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg["emb_dim"], 4 * cfg["emb_dim"]),
            GELU(),
            nn.Linear(4 * cfg["emb_dim"], cfg["emb_dim"]),
        )

    def forward(self, x):
        return self.layers(x)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm transformer block: attention and feed-forward, each with a shortcut. ``(b, t, d) -> (b, t, d)``.

    "Pre-LayerNorm" as in GPT-2: normalise, transform, add the result back to the block's input::

        x = x + dropout(attention(norm1(x)))     # tokens exchange information
        x = x + dropout(feed_forward(norm2(x)))  # each token is transformed on its own

    The shortcuts (``x + f(x)``) give gradients a path around every block, which is what lets a deep
    stack of blocks train at all.
    """

    def __init__(self, cfg, use_sdpa=False):
        super().__init__()
        self.att = MultiHeadAttention(
            d_in=cfg["emb_dim"],
            d_out=cfg["emb_dim"],
            context_length=cfg["context_length"],
            num_heads=cfg["n_heads"],
            dropout=cfg["drop_rate"],
            qkv_bias=cfg["qkv_bias"],
            use_sdpa=use_sdpa,
        )
        self.ff = FeedForward(cfg)
        self.norm1 = LayerNorm(cfg["emb_dim"])
        self.norm2 = LayerNorm(cfg["emb_dim"])
        self.drop_shortcut = nn.Dropout(cfg["drop_rate"])

    def forward(self, x, kv_cache=None):
        """``kv_cache``: this block's attention cache, or None (see ``MultiHeadAttention.forward``)."""
        x = x + self.drop_shortcut(self.att(self.norm1(x), kv_cache))
        x = x + self.drop_shortcut(self.ff(self.norm2(x)))
        return x


class GPTModel(nn.Module):
    """GPT-2: embeddings, ``n_layers`` transformer blocks, final LayerNorm, output head.

    ``(batch, num_tokens)`` token ids -> ``(batch, num_tokens, vocab_size)`` logits: at each position,
    an unnormalised score for every possible next token. Data flows like this (``b`` = batch,
    ``t`` = tokens, ``d`` = ``emb_dim``)::

        token ids                                   (b, t)
          -> token embedding + position embedding   (b, t, d)
          -> dropout
          -> n_layers x TransformerBlock            (b, t, d)
          -> final LayerNorm                        (b, t, d)
          -> output head (linear, no bias)          (b, t, vocab_size)  = logits

    Generation keeps each block's keys and values in a cache (``new_kv_cache``, notebook 07), so that
    every step runs only the new token through the model; ``use_sdpa=True`` computes attention with
    PyTorch's fused kernel instead of the explicit softmax (same result, faster; see MultiHeadAttention).

    With ``tie_weights=True`` the output head reuses the token embedding matrix (as the original GPT-2
    does), which saves ``vocab_size * emb_dim`` parameters: 124,412,160 instead of 163,009,536 for
    ``GPT_CONFIG_124M``. The head's own weight is still created first, so the random stream and the
    other weights are the same either way.
    """

    def __init__(self, cfg, tie_weights=False, use_sdpa=False):
        super().__init__()
        self.cfg = dict(validate_config(cfg))
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])
        self.drop_emb = nn.Dropout(cfg["drop_rate"])
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg, use_sdpa) for _ in range(cfg["n_layers"])])
        self.final_norm = LayerNorm(cfg["emb_dim"])
        self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)
        if tie_weights:
            self.out_head.weight = self.tok_emb.weight

    def forward(self, in_idx, kv_cache=None, last_only=False):
        """``in_idx`` (batch, num_tokens) of token ids -> logits (batch, num_tokens, vocab_size).

        For generation (notebook 07): ``kv_cache``, a list from :meth:`new_kv_cache`, holds the keys
        and values of the tokens before ``in_idx``, which then continue from position ``past`` (the
        cache's length) instead of 0; ``last_only=True`` runs the output head on the last position
        only and returns ``(batch, 1, vocab_size)``, all a generation step needs.

        Only the shape of ``in_idx`` is checked here: reading its values (is every id below
        vocab_size?) would make a GPU wait at every training step. Ids are checked where they enter:
        ``generate`` checks the prompt, the datasets hold the tokenizer's ids.
        """
        check_token_ids(in_idx, context_length=self.cfg["context_length"])
        _, seq_len = in_idx.shape
        past = 0 if kv_cache is None else kv_cache[0].length  # tokens already in the cache
        check_cache_room(past, seq_len, self.cfg["context_length"])
        # Token t gets the vector of its id plus the vector of its position: without the second,
        # the model could not tell "dog bites man" from "man bites dog" at the first layer.
        tok_embeds = self.tok_emb(in_idx)  # (b, t, d)
        positions = torch.arange(past, past + seq_len, device=in_idx.device)  # 0 .. t-1 without a cache
        pos_embeds = self.pos_emb(positions)  # (t, d), broadcast over b
        x = self.drop_emb(tok_embeds + pos_embeds)  # (b, t, d)
        if kv_cache is None:
            x = self.trf_blocks(x)  # (b, t, d): each block mixes information across positions, then within
        else:
            for block, layer_cache in zip(self.trf_blocks, kv_cache):
                x = block(x, layer_cache)
        if last_only:
            x = x[:, -1:, :]  # (b, 1, d): the only position whose prediction generation uses
        x = self.final_norm(x)  # (b, t, d)
        return self.out_head(x)  # (b, t, vocab_size): a score for every possible next token

    def new_kv_cache(self, batch_size, max_tokens=None):
        """An empty cache for generation: a list with one :class:`KVCache` per block, each for
        ``batch_size`` sequences of up to ``max_tokens`` tokens (default and limit: context_length).

        Memory: ``2 x n_layers x max_tokens x emb_dim`` numbers per sequence (keys and values).
        """
        if len(self.trf_blocks) == 0:
            raise ValueError("a model without transformer blocks has no keys and values to cache")
        return [block.att.new_kv_cache(batch_size, max_tokens) for block in self.trf_blocks]


# --- the placeholder model ------------------------------------------------------------------------
# Written out in full rather than derived from GPTModel: it is the skeleton notebook 03 builds before
# the real pieces exist, and reading it next to GPTModel shows exactly what the pieces add.

class DummyGPTModel(nn.Module):
    """The GPT skeleton with placeholder blocks and norm: real embeddings and output head only.

    ``(batch, num_tokens)`` token ids -> ``(batch, num_tokens, vocab_size)`` logits, like ``GPTModel``.
    """

    def __init__(self, cfg):
        super().__init__()
        self.cfg = dict(validate_config(cfg))
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])
        self.drop_emb = nn.Dropout(cfg["drop_rate"])
        self.trf_blocks = nn.Sequential(*[DummyTransformerBlock(cfg) for _ in range(cfg["n_layers"])])
        self.final_norm = DummyLayerNorm(cfg["emb_dim"])
        self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)

    def forward(self, in_idx):
        check_token_ids(in_idx, context_length=self.cfg["context_length"])
        _, seq_len = in_idx.shape
        tok_embeds = self.tok_emb(in_idx)  # (b, t, d)
        pos_embeds = self.pos_emb(torch.arange(seq_len, device=in_idx.device))  # (t, d)
        x = self.drop_emb(tok_embeds + pos_embeds)
        x = self.trf_blocks(x)  # placeholder blocks: x unchanged
        x = self.final_norm(x)  # placeholder norm: x unchanged
        return self.out_head(x)  # (b, t, vocab_size)


class DummyTransformerBlock(nn.Module):
    """Placeholder block: returns its input unchanged. ``(b, t, d) -> (b, t, d)``."""

    def __init__(self, cfg):
        super().__init__()

    def forward(self, x):
        return x


class DummyLayerNorm(nn.Module):
    """Placeholder norm with LayerNorm's signature: returns its input unchanged."""

    def __init__(self, normalized_shape, eps=1e-5):
        super().__init__()

    def forward(self, x):
        return x


# --- helpers --------------------------------------------------------------------------------------

@contextlib.contextmanager
def evaluating(model):
    """``with evaluating(model):`` runs the block in eval mode (dropout off), then puts the model back
    in the mode it was in, even if the block raised."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def check_token_ids(idx, vocab_size=None, context_length=None):
    """Check ``idx`` is an integer tensor of shape (batch, num_tokens), at most ``context_length``
    tokens long, and, given ``vocab_size``, that every id is in [0, vocab_size).

    The range check turns PyTorch's "index out of range in self" into a message that names the
    offending value and the limit; it reads the data (one min, one max), so a GPU waits for it: the
    models check only the shape, ``generate`` checks the prompt's ids once.
    """
    if not isinstance(idx, torch.Tensor):
        raise TypeError(f"token ids must be a torch.Tensor of shape (batch, num_tokens), got {type(idx).__name__}")
    if idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
        raise TypeError(f"token ids must be an integer tensor (torch.long), got dtype {idx.dtype}")
    if idx.dim() != 2:
        hint = "; add a batch dimension with idx.unsqueeze(0)" if idx.dim() == 1 else ""
        raise ValueError(f"token ids must have shape (batch, num_tokens), got shape {tuple(idx.shape)}{hint}")
    if idx.shape[1] == 0:
        raise ValueError("token ids are empty: need at least one token per sequence")
    if context_length is not None and idx.shape[1] > context_length:
        raise ValueError(
            f"sequence of {idx.shape[1]} tokens is longer than context_length={context_length}; "
            f"crop it, e.g. idx[:, -{context_length}:]"
        )
    if vocab_size is not None:
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"token id {bad} is outside the vocabulary [0, {vocab_size})")
