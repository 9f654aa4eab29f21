"""Conceptual diagrams of the architecture, drawn by code, one function per idea.

Every function returns a matplotlib ``Figure``; in a notebook, call it and end the cell with
``plt.show()``. Importing this module imports matplotlib, so the package's ``__init__`` does not: a
notebook asks for it explicitly (``from gpt_from_scratch.classroom.diagrams import draw_transformer_block``).

One visual vocabulary for all diagrams, in the colour-blind-safe Okabe-Ito palette, with the shape of
each box saying the same as its colour (so the figure also reads in grey):

- **tensors** (data flowing through): blue, square corners, their shape written in them or on the arrow;
- **learned weights** (modules whose parameters training changes): orange, square corners, thick edge;
- **operations** (no parameters: +, softmax, dropout, argmax, ...): green, rounded ends.

Shapes use the notebooks' letters: ``b`` the batch size, ``t`` (or ``n``) the number of tokens, and the
config's sizes as numbers. A diagram that depends on a config takes it as an argument, so the picture
changes with the model: ``draw_gpt_model(GPT_CONFIG_TINY)`` shows 2 blocks of width 64.

Each figure is laid out in inches (one axis unit = one inch, font sizes in points), at most about
10 inches wide, so that text keeps a readable size at a notebook's width.
"""

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle


__all__ = [
    "PALETTE",
    "draw_token_pipeline",
    "draw_attention_one_query",
    "draw_causal_mask",
    "draw_multihead_split",
    "draw_gpt_model",
    "draw_transformer_block",
    "draw_generation_loop",
    "draw_training_loop",
    "draw_kv_cache",
    "draw_gpt2_weight_mapping",
    "draw_llama_block",
    "draw_lora",
]

# Okabe & Ito (2008), "Color Universal Design": distinguishable with every common colour-vision deficiency.
PALETTE = {
    "tensor": "#0072B2",   # blue
    "weight": "#E69F00",   # orange
    "op": "#009E73",       # bluish green
    "accent": "#D55E00",   # vermillion: the masked future, the new token
    "sky": "#56B4E9",      # sky blue: alternating heads
    "grey": "#555555",     # arrows and notes
}
FONT = 11          # box labels
SMALL = 9.5        # second lines, notes, shapes on arrows (never smaller)
TITLE = 13
MONO = "DejaVu Sans Mono"


def _tint(hex_colour, amount):
    """``hex_colour`` mixed with white: amount 0 = white, 1 = the colour itself."""
    rgb = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    return tuple(1 - amount * (1 - c) for c in rgb)


FILL = {"tensor": _tint(PALETTE["tensor"], 0.22), "weight": _tint(PALETTE["weight"], 0.35),
        "op": _tint(PALETTE["op"], 0.22)}


# ----------------------------------------------------------------------------------------------------
# Drawing primitives: a canvas in inches, boxes of the three kinds, arrows with labels, the legend.

def _canvas(width, height, title=None):
    """A figure of ``width`` x ``height`` inches whose data coordinates are inches, without axes."""
    width, height = round(width, 1), round(height, 1)  # whole pixels at 100 dpi: "<Figure size 960x740 ...>"
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    if title:
        ax.text(0.2, height - 0.3, title, fontsize=TITLE, fontweight="bold", va="center", ha="left")
    return fig, ax


def _box(ax, cx, cy, w, h, text, kind, sub=None, fontsize=FONT, dashed=False, edge=None, fill=None, lw=None,
         sub_mono=False):
    """A box of ``kind`` 'tensor', 'weight' or 'op' centred at (cx, cy); ``sub`` is a smaller second line."""
    style = f"round,pad=0,rounding_size={min(h, w) / 2:.3f}" if kind == "op" else "square,pad=0"
    patch = FancyBboxPatch((cx - w / 2, cy - h / 2), w, h, boxstyle=style,
                           facecolor=fill if fill is not None else FILL[kind],
                           edgecolor=edge or PALETTE[kind], linewidth=lw or (2.4 if kind == "weight" else 1.4),
                           linestyle=(0, (4, 3)) if dashed else "solid", zorder=2)
    ax.add_patch(patch)
    if sub is None:
        ax.text(cx, cy, text, fontsize=fontsize, ha="center", va="center", zorder=3)
    else:
        ax.text(cx, cy + h * 0.2, text, fontsize=fontsize, ha="center", va="center", zorder=3)
        ax.text(cx, cy - h * 0.23, sub, fontsize=SMALL, ha="center", va="center", zorder=3,
                family=MONO if sub_mono else None, color="#222222")
    return patch


def _arrow(ax, start, end, label=None, side="right", color=None, lw=1.5, dashed=False, label_offset=0.12,
           fontsize=SMALL):
    """A straight arrow from ``start`` to ``end``; ``label`` (a shape, usually) beside its middle."""
    arrow = FancyArrowPatch(start, end, arrowstyle="-|>,head_length=6,head_width=3.5",
                            color=color or PALETTE["grey"], lw=lw, shrinkA=0, shrinkB=0, zorder=1,
                            linestyle=(0, (4, 3)) if dashed else "solid", mutation_scale=1.2)
    ax.add_patch(arrow)
    if label:
        mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
        if side == "right":
            ax.text(mx + label_offset, my, label, fontsize=fontsize, ha="left", va="center", family=MONO)
        elif side == "left":
            ax.text(mx - label_offset, my, label, fontsize=fontsize, ha="right", va="center", family=MONO)
        elif side == "above":
            ax.text(mx, my + label_offset, label, fontsize=fontsize, ha="center", va="bottom", family=MONO)
        else:
            ax.text(mx, my - label_offset, label, fontsize=fontsize, ha="center", va="top", family=MONO)
    return arrow


def _line(ax, points, color=None, lw=1.5, dashed=False, arrow_at_end=True):
    """A polyline through ``points``, with an arrow head on its last segment."""
    xs, ys = zip(*(points[:-1] if arrow_at_end else points))  # the last segment is drawn by the arrow
    ax.plot(xs, ys, color=color or PALETTE["grey"], lw=lw, linestyle=(0, (4, 3)) if dashed else "solid", zorder=1)
    if arrow_at_end:
        _arrow(ax, points[-2], points[-1], color=color, lw=lw, dashed=dashed)


def _legend(ax, x, y, extra=None):
    """The vocabulary, as a row of three small boxes starting at (x, y); ``extra``: a note after them."""
    entries = [("tensor", "tensor (data)"), ("weight", "learned weights"), ("op", "operation")]
    for kind, label in entries:
        _box(ax, x + 0.25, y, 0.5, 0.26, "", kind)
        ax.text(x + 0.6, y, label, fontsize=SMALL, va="center", ha="left")
        x += 0.75 + 0.078 * len(label)
    if extra:
        ax.text(x + 0.1, y, extra, fontsize=SMALL, va="center", ha="left", color=PALETTE["grey"])


def _dim(value, symbol):
    return symbol if value is None else str(value)


def _shape(*dims):
    return "(" + ", ".join(str(d) for d in dims) + (",)" if len(dims) == 1 else ")")


# ----------------------------------------------------------------------------------------------------
# 01 · Tokens and embeddings

def draw_token_pipeline(text="Every effort moves you forward", max_length=4, emb_dim=256, batch_size=8,
                        tokenizer=None):
    """Text -> tokens -> ids -> one (input, target) window -> token + position embeddings.

    ``text`` is tokenised with ``tokenizer`` (default: GPT-2's, from ``get_tokenizer()``) and must give at
    least ``max_length + 1`` tokens; the first ``max_length + 1`` are drawn (at most 9). The embedding part
    shows a batch of ``batch_size`` windows embedded in ``emb_dim`` dimensions, with a position table of
    ``max_length`` rows (the context length of notebook 01).
    """
    if tokenizer is None:
        from ..tokenizer import get_tokenizer

        tokenizer = get_tokenizer()
    ids = tokenizer.encode(text)
    ids = ids[: max_length + 1]
    pieces = [tokenizer.decode([i]).replace(" ", "\u2423") for i in ids]  # ␣ makes a leading space visible
    vocab_size = getattr(tokenizer, "n_vocab", None) or "vocab_size"
    n = len(ids)

    W, H = 9.6, 7.7
    fig, ax = _canvas(W, H, "From text to the model's input")
    left = 1.75                                   # stage names end here
    cw = min(1.3, (W - left - 0.3) / n)           # column width
    col = [left + 0.15 + cw * (i + 0.5) for i in range(n)]
    bw, bh = cw - 0.14, 0.42

    def stage(y, name):
        ax.text(left - 0.1, y, name, fontsize=FONT, ha="right", va="center", fontweight="bold")

    y_text, y_tok, y_ids, y_x, y_y = 6.9, 5.75, 4.95, 3.95, 3.3
    stage(y_text, "text")
    shown = repr(text if len(text) <= 60 else text[:57] + "…")
    text_w = 0.105 * len(shown) + 0.4
    tx = left + 0.15 + text_w / 2                 # the centre of the text box
    _box(ax, tx, y_text, text_w, bh, shown, "tensor")
    y_enc = (y_text + y_tok) / 2
    _box(ax, tx, y_enc, 2.4, 0.34, "tokenizer.encode (BPE)", "op", fontsize=SMALL)
    _arrow(ax, (tx, y_text - bh / 2), (tx, y_enc + 0.17))
    _arrow(ax, (tx, y_enc - 0.17), (tx, y_tok + bh / 2 + 0.02))

    stage(y_tok, "tokens")
    stage(y_ids, "token ids")
    for i in range(n):
        _box(ax, col[i], y_tok, bw, bh, pieces[i], "tensor", fontsize=FONT if len(pieces[i]) < 9 else SMALL)
        _arrow(ax, (col[i], y_tok - bh / 2), (col[i], y_ids + bh / 2))
        _box(ax, col[i], y_ids, bw, bh, str(ids[i]), "tensor")

    stage(y_x, "input x")
    stage(y_y, "target y")
    for i in range(max_length):
        _box(ax, col[i], y_x, bw, bh, str(ids[i]), "tensor")
        _box(ax, col[i + 1], y_y, bw, bh, str(ids[i + 1]), "tensor")
        _arrow(ax, (col[i] + bw * 0.2, y_x - bh / 2), (col[i + 1] - bw * 0.2, y_y + bh / 2), color=PALETTE["accent"],
               lw=1.2)
    # the window: a bracket over the input ids
    xa, xb = col[0] - bw / 2, col[max_length - 1] + bw / 2
    yb = y_x + bh / 2 + 0.12
    ax.plot([xa, xa, xb, xb], [yb - 0.06, yb, yb, yb - 0.06], color=PALETTE["grey"], lw=1.2)
    ax.text((xa + xb) / 2, yb + 0.06, f"a window of max_length = {max_length} ids, shape {_shape(max_length)}",
            fontsize=SMALL, ha="center", va="bottom")
    ax.text(col[-1] + bw / 2, y_y - bh / 2 - 0.12, "target = input shifted by one: each arrow is one\n"
            "'predict the next token' task", fontsize=SMALL, ha="right", va="top", color=PALETTE["accent"])

    # the embeddings of a batch of such windows
    y_a, y_b = 1.95, 0.95
    xs = [0.95, 2.95, 5.0, 6.55, 8.35]            # box centres: ids, table, looked-up vectors, +, sum
    ax.text(xs[0] + 0.2, 2.6, f"a batch of {batch_size} such windows, embedded", fontsize=FONT, fontweight="bold",
            va="center")
    _box(ax, xs[0], y_a, 1.5, 0.62, "token ids x", "tensor", sub=_shape(batch_size, max_length), sub_mono=True)
    _box(ax, xs[1], y_a, 1.9, 0.62, "tok_emb", "weight", sub=f"Embedding({vocab_size}, {emb_dim})", sub_mono=True)
    _box(ax, xs[2], y_a, 1.75, 0.62, "token vectors", "tensor", sub=_shape(batch_size, max_length, emb_dim),
         sub_mono=True)
    _box(ax, xs[0], y_b, 1.5, 0.62, "positions", "tensor", sub=f"0 … {max_length - 1}  {_shape(max_length)}",
         sub_mono=True)
    _box(ax, xs[1], y_b, 1.9, 0.62, "pos_emb", "weight", sub=f"Embedding({max_length}, {emb_dim})", sub_mono=True)
    _box(ax, xs[2], y_b, 1.75, 0.62, "position vectors", "tensor", sub=_shape(max_length, emb_dim), sub_mono=True)
    y_plus = (y_a + y_b) / 2
    _box(ax, xs[3], y_plus, 0.5, 0.5, "+", "op", fontsize=14)
    _box(ax, xs[4], y_plus, 2.0, 0.62, "input embeddings", "tensor", sub=_shape(batch_size, max_length, emb_dim),
         sub_mono=True)
    for y in (y_a, y_b):
        _arrow(ax, (xs[0] + 0.75, y), (xs[1] - 0.95, y))
        _arrow(ax, (xs[1] + 0.95, y), (xs[2] - 0.875, y))
    _arrow(ax, (xs[2] + 0.875, y_a), (xs[3] - 0.2, y_plus + 0.12))
    _arrow(ax, (xs[2] + 0.875, y_b), (xs[3] - 0.2, y_plus - 0.12))
    ax.text(xs[3], y_b - 0.1, "broadcast\nover the batch", fontsize=SMALL, ha="center", va="top", color=PALETTE["grey"])
    _arrow(ax, (xs[3] + 0.25, y_plus), (xs[4] - 1.0, y_plus))
    _line(ax, [(col[0], y_x - bh / 2), (col[0], 2.9), (xs[0], 2.9), (xs[0], y_a + 0.31)], dashed=True)
    _legend(ax, 0.2, 0.25)
    return fig


# ----------------------------------------------------------------------------------------------------
# 02 · Causal multi-head attention

def draw_attention_one_query(tokens=("Your", "journey", "starts", "with", "one", "step"), query=1, d_in=3,
                             d_out=2, weights=None):
    """One query's attention: scores against every key, softmax, weighted sum of the values.

    ``tokens``: the words (2 to 10); ``query``: the index (from 0) of the token whose context vector is
    computed; ``d_in``/``d_out``: the sizes of the input vectors and of the projections. ``weights``
    (optional, one number per token, summing to 1) draws the attention weights as bars with their values.
    The labels count tokens from 1, as the formulas do.
    """
    tokens = list(tokens)
    T = len(tokens)
    if weights is not None:
        weights = [float(w) for w in (weights.tolist() if hasattr(weights, "tolist") else weights)]
    qn = query + 1                                # the formulas count from 1

    row_h = 0.5
    rows_top = 0.6 + 1.2 + T * row_h            # the y of the top edge of the first row
    H = rows_top + 2.6
    W = 10.0
    fig, ax = _canvas(W, H, f"Attention for one query: the context vector of {tokens[query]!r}")
    cx = {"x": 1.75, "k": 3.1, "s": 4.55, "soft": 5.75, "a": 6.85, "v": 8.25, "sum": 9.1, "z": 9.55}
    bw, bh = 0.78, 0.38
    ys = [rows_top - row_h * (j + 0.5) for j in range(T)]

    for j, (word, y) in enumerate(zip(tokens, ys)):
        is_q = j == query
        ax.text(cx["x"] - bw / 2 - 0.1, y, word, fontsize=FONT, ha="right", va="center",
                fontweight="bold" if is_q else "normal", color=PALETTE["accent"] if is_q else "black")
        _box(ax, cx["x"], y, bw, bh, f"$x^{{({j + 1})}}$", "tensor", edge=PALETTE["accent"] if is_q else None,
             lw=2.4 if is_q else None)
        _box(ax, cx["k"], y, bw, bh, f"$k^{{({j + 1})}}$", "tensor")
        _box(ax, cx["s"], y, 1.0, bh, f"$q^{{({qn})}} \\cdot k^{{({j + 1})}}$", "tensor")
        _arrow(ax, (cx["k"] + bw / 2, y), (cx["s"] - 0.5, y))
        aw = 1.05
        if weights is None:
            _box(ax, cx["a"], y, aw, bh, f"$\\alpha_{{{qn},{j + 1}}}$", "tensor")
        else:
            _box(ax, cx["a"], y, aw, bh, "", "tensor")
            ax.add_patch(Rectangle((cx["a"] - aw / 2, y - bh / 2), aw * weights[j], bh, color=_tint(PALETTE["tensor"], 0.55),
                                   zorder=2.5, lw=0))
            ax.text(cx["a"], y, f"{weights[j]:.2f}", fontsize=FONT, ha="center", va="center", zorder=3)
        ax.text((cx["a"] + aw / 2 + cx["v"] - bw / 2) / 2, y, "×", fontsize=FONT + 2, ha="center", va="center")
        _box(ax, cx["v"], y, bw, bh, f"$v^{{({j + 1})}}$", "tensor")
        _arrow(ax, (cx["v"] + bw / 2, y), (cx["sum"] - 0.15, y), lw=1.2)
    rows_bottom = ys[-1] - bh / 2
    span = rows_top - rows_bottom
    mid = (rows_top + rows_bottom) / 2
    _box(ax, cx["soft"], mid, 0.5, span, "", "op")
    ax.text(cx["soft"], mid, f"softmax( scores / √{d_out} )", rotation=90, fontsize=FONT, ha="center", va="center",
            zorder=3)
    _box(ax, cx["sum"], mid, 0.3, span, "Σ", "op", fontsize=FONT + 2)
    for y in ys:
        _arrow(ax, (cx["s"] + 0.5, y), (cx["soft"] - 0.25, y), lw=1.2)
        _arrow(ax, (cx["soft"] + 0.25, y), (cx["a"] - 0.525, y), lw=1.2)

    # the context vector, below the Σ
    _arrow(ax, (cx["sum"], rows_bottom), (cx["sum"], rows_bottom - 0.3))
    _box(ax, cx["sum"], rows_bottom - 0.55, 0.8, 0.5, f"$z^{{({qn})}}$", "tensor", edge=PALETTE["accent"], lw=2.4)

    # the projections: the inputs go up a bus into W_key, W_query (the query's row only) and W_value
    y_w = rows_top + 1.2
    y_bus = y_w + 0.62
    y_q = rows_top + 0.42
    _line(ax, [(cx["x"], rows_top + 0.02), (cx["x"], y_bus), (cx["v"], y_bus)], arrow_at_end=False)
    for key, name in (("k", "W_key"), ("s", "W_query"), ("v", "W_value")):
        _arrow(ax, (cx[key], y_bus), (cx[key], y_w + 0.24))
        _box(ax, cx[key], y_w, 1.3, 0.48, name, "weight", sub=_shape(d_in, d_out), sub_mono=True)
    ax.text(cx["x"] + 0.1, y_bus + 0.12, f"inputs {_shape(T, d_in)}", fontsize=SMALL, family=MONO, va="bottom")
    ax.text(cx["s"] + 0.1, (y_bus + y_w + 0.24) / 2, f"row {qn} only", fontsize=SMALL, va="center",
            color=PALETTE["accent"])
    _arrow(ax, (cx["k"], y_w - 0.24), (cx["k"], rows_top), label=_shape(T, d_out), side="right")
    _arrow(ax, (cx["v"], y_w - 0.24), (cx["v"], rows_top), label=_shape(T, d_out), side="left")
    _box(ax, cx["s"], y_q, 1.0, 0.36, f"$q^{{({qn})}}$", "tensor", edge=PALETTE["accent"], lw=2.4)
    _arrow(ax, (cx["s"], y_w - 0.24), (cx["s"], y_q + 0.18), label=_shape(d_out), side="right")
    _arrow(ax, (cx["s"], y_q - 0.18), (cx["s"], rows_top), lw=1.2)

    # column names and shapes under the rows
    y_f = rows_bottom - 0.3
    for key, name, shape in (("x", "inputs", _shape(T, d_in)), ("k", "keys", _shape(T, d_out)),
                             ("s", "scores", _shape(T)), ("a", "weights, sum 1", _shape(T)),
                             ("v", "values", _shape(T, d_out))):
        ax.text(cx[key], y_f, name, fontsize=SMALL, ha="center", va="center", fontweight="bold")
        ax.text(cx[key], y_f - 0.27, shape, fontsize=SMALL, ha="center", va="center", family=MONO)
    ax.text(cx["sum"], rows_bottom - 0.95, "context", fontsize=SMALL, ha="center", va="center", fontweight="bold")
    ax.text(cx["sum"], rows_bottom - 1.22, _shape(d_out), fontsize=SMALL, ha="center", va="center", family=MONO)
    _legend(ax, 0.2, 0.3)
    return fig


def draw_causal_mask(tokens=("Your", "journey", "starts", "with", "one", "step")):
    """The causal mask as a triangle: scores of future keys set to -inf, then softmax gives them weight 0.

    ``tokens``: the words (2 to 10), used as row (query) and column (key) labels.
    """
    tokens = list(tokens)
    T = len(tokens)
    cell = min(0.5, 3.4 / T)
    grid = cell * T
    label_w = 0.1 + 0.085 * max(len(t) for t in tokens)
    gx = [0.55 + label_w, 0.55 + label_w + grid + 2.55]   # left edges of the two grids
    W = gx[1] + grid + 0.3
    H = grid + 2.45
    fig, ax = _canvas(W, H, "The causal mask: a token sees itself and the tokens before it")
    top = H - 1.55                                     # top edge of the grids
    write = cell >= 0.33
    for g, (x0, title, future) in enumerate(zip(gx, ("scores, future set to −∞", "weights after softmax"),
                                                ("−∞", "0"))):
        ax.text(x0 + grid / 2, top + 0.95, title, fontsize=FONT, ha="center", va="center", fontweight="bold")
        for i in range(T):        # query (row)
            for j in range(T):    # key (column)
                x, y = x0 + j * cell, top - (i + 1) * cell
                hidden = j > i
                ax.add_patch(Rectangle((x, y), cell, cell, facecolor="#E6E6E6" if hidden else FILL["tensor"],
                                       edgecolor="white", lw=1.5, hatch="///" if hidden else None, zorder=2))
                if hidden and write:
                    ax.text(x + cell / 2, y + cell / 2, future, fontsize=SMALL, ha="center", va="center",
                            color=PALETTE["accent"], zorder=3, fontweight="bold")
        ax.add_patch(Rectangle((x0, top - grid), grid, grid, fill=False, edgecolor=PALETTE["tensor"], lw=1.4, zorder=3))
        for i, word in enumerate(tokens):
            ax.text(x0 - 0.08, top - (i + 0.5) * cell, word, fontsize=SMALL, ha="right", va="center")
            ax.text(x0 + (i + 0.5) * cell, top + 0.06, word, fontsize=SMALL, ha="left", va="bottom", rotation=40,
                    rotation_mode="anchor")
        ax.text(x0 + grid / 2, top - grid - 0.2, f"{_shape(T, T)}: rows = queries, columns = keys",
                fontsize=SMALL, ha="center", va="top")
    mid_y = top - grid / 2
    _box(ax, gx[0] + grid + 1.27, mid_y, 1.65, 0.46, "softmax, per row", "op", fontsize=SMALL)
    _arrow(ax, (gx[0] + grid + 0.15, mid_y), (gx[0] + grid + 0.44, mid_y))
    _arrow(ax, (gx[0] + grid + 2.1, mid_y), (gx[1] - 0.9, mid_y))
    ax.text(gx[0] + grid + 1.27, mid_y - 0.45, "$e^{-\\infty} = 0$: each row\nsums to 1 over the\nvisible keys",
            fontsize=SMALL, ha="center", va="top", color=PALETTE["grey"])
    _legend(ax, 0.2, 0.28, extra="hatched: masked (the future)")
    return fig


def draw_multihead_split(d_out=4, num_heads=2, batch_size=None, num_tokens=None):
    """How ``MultiHeadAttention`` splits ``d_out`` into heads, runs them at once and concatenates them.

    ``d_out`` must be divisible by ``num_heads``; ``batch_size``/``num_tokens`` (optional) replace the
    letters ``b``/``t`` in the shapes. Up to 12 heads are drawn one by one; beyond that, the middle ones are
    summarised as "…".
    """
    hd = d_out // num_heads
    b, t = _dim(batch_size, "b"), _dim(num_tokens, "t")
    shown = list(range(num_heads)) if num_heads <= 12 else [0, 1, 2, 3, 4, None, num_heads - 2, num_heads - 1]

    W, H = 9.6, 7.0
    fig, ax = _canvas(W, H, f"{num_heads} heads of {hd} dimensions: split, attend, concatenate")
    x0, x1 = 1.3, W - 2.4                    # the span of the head columns
    slot = (x1 - x0) / len(shown)
    centres = [x0 + slot * (i + 0.5) for i in range(len(shown))]
    shade = [_tint(PALETTE["tensor"], 0.18), _tint(PALETTE["sky"], 0.55)]   # alternate heads, two tints
    note_x = x1 + 0.25

    def bar(y, joined, label):
        """One row of head segments; ``joined``: touching (one tensor axis) or apart (a head axis)."""
        gap = 0.0 if joined else min(0.14, slot * 0.2)
        for i, (h, cxh) in enumerate(zip(shown, centres)):
            if h is None:
                ax.text(cxh, y, "…", fontsize=FONT + 2, ha="center", va="center")
                continue
            ax.add_patch(Rectangle((cxh - slot / 2 + gap / 2, y - 0.22), slot - gap, 0.44, facecolor=shade[h % 2],
                                   edgecolor=PALETTE["tensor"], lw=1.2, zorder=2))
            if slot >= 0.4:
                ax.text(cxh, y, f"head {h}" if slot >= 0.75 else str(h), fontsize=SMALL, ha="center", va="center",
                        zorder=3)
        ax.text(note_x, y, label, fontsize=SMALL, ha="left", va="center", family=MONO)

    y1, y2, y3, y4, y5, y6 = 5.95, 4.8, 3.7, 2.6, 1.6, 0.95
    ax.text(0.2, y1, "queries\n(keys and\nvalues\nalike)", fontsize=SMALL, ha="left", va="center")
    bar(y1, True, f"{_shape(b, t, d_out)}\nfrom W_query")
    ax.text(x1, y1 + 0.3, f"d_out = {d_out}", fontsize=SMALL, ha="right", va="bottom")
    ax.text(x0, y1 + 0.3, f"head_dim = {hd} each", fontsize=SMALL, ha="left", va="bottom")
    _arrow(ax, ((x0 + x1) / 2, y1 - 0.25), ((x0 + x1) / 2, y2 + 0.25))
    ax.text((x0 + x1) / 2 + 0.12, (y1 + y2) / 2, f".view({b}, {t}, {num_heads}, {hd}).transpose(1, 2)",
            fontsize=SMALL, family=MONO, va="center")
    bar(y2, False, f"{_shape(b, num_heads, t, hd)}\none slice per head")
    for h, cxh in zip(shown, centres):
        if h is None:
            continue
        _arrow(ax, (cxh, y2 - 0.22), (cxh, y3 + 0.23), lw=1.2)
        _box(ax, cxh, y3, slot - min(0.14, slot * 0.2), 0.46, "attn" if slot < 0.8 else "attention", "op",
             fontsize=SMALL)
        _arrow(ax, (cxh, y3 - 0.23), (cxh, y4 + 0.22), lw=1.2)
    ax.text(note_x, y3, "causal attention,\nall heads in one\nbatched matmul", fontsize=SMALL, va="center")
    bar(y4, False, f"{_shape(b, num_heads, t, hd)}\ncontext per head")
    _arrow(ax, ((x0 + x1) / 2, y4 - 0.25), ((x0 + x1) / 2, y5 + 0.25))
    ax.text((x0 + x1) / 2 + 0.12, (y4 + y5) / 2, f".transpose(1, 2).contiguous().view({b}, {t}, {d_out})",
            fontsize=SMALL, family=MONO, va="center")
    bar(y5, True, f"{_shape(b, t, d_out)}\nheads side by side")
    mx = (x0 + x1) / 2
    _box(ax, mx, y6 - 0.2, 2.4, 0.55, "out_proj", "weight", sub=f"Linear({d_out}, {d_out})", sub_mono=True)
    _arrow(ax, (mx, y5 - 0.22), (mx, y6 + 0.075))
    _box(ax, x1 - 0.6, y6 - 0.2, 1.5, 0.55, "output", "tensor", sub=_shape(b, t, d_out), sub_mono=True)
    _arrow(ax, (mx + 1.2, y6 - 0.2), (x1 - 1.35, y6 - 0.2))
    ax.text(note_x, y6 - 0.2, "out_proj mixes\nthe heads", fontsize=SMALL, va="center")
    _legend(ax, 0.2, 0.2)
    return fig


# ----------------------------------------------------------------------------------------------------
# 03 / 04 · The GPT model and the transformer block

def draw_gpt_model(cfg, batch_size=None, num_tokens=None, placeholder=False):
    """The GPT data flow: token ids -> embeddings -> n blocks -> final norm -> output head -> logits.

    ``cfg``: a config like ``GPT_CONFIG_124M`` (its sizes label the boxes and shapes); ``batch_size`` and
    ``num_tokens`` (optional) replace ``b`` and ``t``; ``placeholder=True`` draws notebook 03's
    ``DummyGPTModel``, whose blocks and final norm return their input (dashed).
    """
    b, t = _dim(batch_size, "b"), _dim(num_tokens, "t")
    d, V, L = cfg["emb_dim"], cfg["vocab_size"], cfg["n_layers"]

    W, H = 8.4, 8.1
    fig, ax = _canvas(W, H, "DummyGPTModel: the skeleton" if placeholder else "GPTModel: from token ids to logits")
    cx, bw, bh = 3.2, 3.3, 0.62
    note_x = cx + bw / 2 + 0.35
    ys = {"ids": 7.2, "emb": 6.15, "plus": 5.2, "drop": 4.45, "blocks": 3.3, "norm": 2.2, "head": 1.4, "logits": 0.62}

    _box(ax, cx, ys["ids"], 2.0, 0.5, "token ids", "tensor", sub=_shape(b, t), sub_mono=True)
    tok_x, pos_x = cx - 1.05, cx + 1.75
    _box(ax, tok_x, ys["emb"], 2.0, bh, "tok_emb", "weight", sub=f"Embedding({V}, {d})", sub_mono=True)
    _box(ax, pos_x, ys["emb"], 2.0, bh, "pos_emb", "weight", sub=f"Embedding({cfg['context_length']}, {d})",
         sub_mono=True)
    _arrow(ax, (tok_x, ys["ids"] - 0.25), (tok_x, ys["emb"] + bh / 2))
    _line(ax, [(cx + 1.0, ys["ids"]), (pos_x, ys["ids"]), (pos_x, ys["emb"] + bh / 2)])
    ax.text(pos_x + 0.1, (ys["ids"] + ys["emb"]) / 2 + 0.05, "arange(t):\n0, 1, …, t−1", fontsize=SMALL, va="center")
    _box(ax, cx, ys["plus"], 0.5, 0.46, "+", "op", fontsize=14)
    _line(ax, [(tok_x, ys["emb"] - bh / 2), (tok_x, ys["plus"]), (cx - 0.25, ys["plus"])])
    _line(ax, [(pos_x, ys["emb"] - bh / 2), (pos_x, ys["plus"]), (cx + 0.25, ys["plus"])])
    ax.text(tok_x - 0.1, (ys["emb"] + ys["plus"]) / 2 - 0.15, _shape(b, t, d), fontsize=SMALL, family=MONO,
            ha="right", va="center")
    ax.text(pos_x + 0.1, (ys["emb"] + ys["plus"]) / 2 - 0.15, _shape(t, d), fontsize=SMALL, family=MONO,
            ha="left", va="center")
    _box(ax, cx, ys["drop"], 2.0, 0.46, "drop_emb", "op", sub=f"Dropout({cfg['drop_rate']})", sub_mono=True)
    _arrow(ax, (cx, ys["plus"] - 0.23), (cx, ys["drop"] + 0.23), label=_shape(b, t, d))

    # the stack of blocks: a few shadows behind the front box say "n of these"
    blocks_h = 0.8
    for k in (2, 1):
        if L > k:
            ax.add_patch(Rectangle((cx - bw / 2 + 0.09 * k, ys["blocks"] - blocks_h / 2 + 0.09 * k), bw, blocks_h,
                                   facecolor=FILL["weight"], edgecolor=PALETTE["weight"], lw=1.4, zorder=1.5 - 0.1 * k,
                                   linestyle=(0, (4, 3)) if placeholder else "solid"))
    block_name = "DummyTransformerBlock" if placeholder else "TransformerBlock"
    _box(ax, cx, ys["blocks"], bw, blocks_h, f"trf_blocks: {L} × {block_name}", "weight",
         sub="each returns its input" if placeholder else "attention + feed-forward,\neach with a shortcut",
         dashed=placeholder, fontsize=FONT if len(block_name) < 20 else SMALL + 0.5)
    _arrow(ax, (cx, ys["drop"] - 0.23), (cx, ys["blocks"] + blocks_h / 2 + (0.18 if L > 1 else 0)),
           label=_shape(b, t, d))
    norm_name = "DummyLayerNorm" if placeholder else f"LayerNorm({d})"
    _box(ax, cx, ys["norm"], 2.4, 0.5, "final_norm", "weight", sub=norm_name, sub_mono=True, dashed=placeholder)
    _arrow(ax, (cx, ys["blocks"] - blocks_h / 2), (cx, ys["norm"] + 0.25), label=_shape(b, t, d))
    _box(ax, cx, ys["head"], 2.9, 0.5, "out_head", "weight", sub=f"Linear({d}, {V}, bias=False)", sub_mono=True)
    _arrow(ax, (cx, ys["norm"] - 0.25), (cx, ys["head"] + 0.25), label=_shape(b, t, d))
    _box(ax, cx, ys["logits"], 2.4, 0.5, "logits", "tensor", sub=_shape(b, t, V), sub_mono=True)
    _arrow(ax, (cx, ys["head"] - 0.25), (cx, ys["logits"] + 0.25))

    notes = {
        "drop": "only in train mode",
        "blocks": "the real blocks come\nin notebook 04" if placeholder else
                  "tokens exchange information;\nthe shape never changes",
        "norm": "returns its input too" if placeholder else "mean 0, variance 1 per token",
        "logits": "one score per vocabulary entry,\nat every position",
    }
    for key, note in notes.items():
        ax.text(note_x, ys[key], note, fontsize=SMALL, va="center", color=PALETTE["grey"])
    _legend(ax, 0.2, 0.15, extra="dashed: placeholder" if placeholder else None)
    ax.set_ylim(-0.1, H)
    return fig


def draw_transformer_block(cfg, batch_size=None, num_tokens=None):
    """The pre-LayerNorm transformer block with its two shortcuts, shapes on the arrows.

    ``x = x + dropout(att(norm1(x)))`` then ``x = x + dropout(ff(norm2(x)))``. ``cfg`` gives the width,
    the heads and the dropout rate; ``batch_size``/``num_tokens`` (optional) replace ``b``/``t``.
    """
    b, t = _dim(batch_size, "b"), _dim(num_tokens, "t")
    d, nh, p = cfg["emb_dim"], cfg["n_heads"], cfg["drop_rate"]
    shape = _shape(b, t, d)

    W, H = 8.6, 9.9
    fig, ax = _canvas(W, H, f"TransformerBlock (one of {cfg['n_layers']}): pre-LayerNorm, two shortcuts")
    main_x, det_x, bw = 1.55, 4.6, 3.2
    blue = PALETTE["tensor"]

    _box(ax, main_x, 8.95, 1.7, 0.55, "input x", "tensor", sub=shape, sub_mono=True)
    ax.add_patch(Rectangle((0.35, 1.25), W - 0.6, 6.95, fill=False, edgecolor="#999999", lw=1.2,
                           linestyle=(0, (5, 4)), zorder=0))

    def detour(y_top, boxes, plus_y, label):
        """Branch at ``y_top``: the shortcut runs straight down the main line, the detour through ``boxes``
        (name, centre y, kind, height, second line) and back into the + at ``plus_y``."""
        ax.plot([main_x], [y_top], marker="o", color=blue, markersize=6, zorder=3)
        _arrow(ax, (main_x, y_top), (main_x, plus_y + 0.24), color=blue, lw=2.6)
        ax.text(main_x - 0.15, (y_top + plus_y) / 2, label, rotation=90, fontsize=SMALL, color=blue,
                ha="right", va="center", fontweight="bold")
        _line(ax, [(main_x, y_top), (det_x, y_top), (det_x, boxes[0][1] + boxes[0][3] / 2)])
        for k, (name, y, kind, h, sub) in enumerate(boxes):
            _box(ax, det_x, y, bw, h, name, kind, sub=sub, sub_mono=True)
            if k + 1 < len(boxes):
                _arrow(ax, (det_x, y - h / 2), (det_x, boxes[k + 1][1] + boxes[k + 1][3] / 2), label=shape)
        last = boxes[-1]
        _line(ax, [(det_x, last[1] - last[3] / 2), (det_x, plus_y), (main_x + 0.25, plus_y)])
        ax.text((main_x + det_x) / 2 + 0.2, plus_y + 0.1, shape, fontsize=SMALL, family=MONO, ha="center", va="bottom")
        _box(ax, main_x, plus_y, 0.5, 0.48, "+", "op", fontsize=14)

    _arrow(ax, (main_x, 8.95 - 0.275), (main_x, 8.05), label=shape, side="right")
    detour(8.05, [("norm1", 7.5, "weight", 0.55, f"LayerNorm({d})"),
                  ("att", 6.55, "weight", 0.7, f"MultiHeadAttention\n{nh} heads × {d // nh}"),
                  ("drop_shortcut", 5.6, "op", 0.5, f"Dropout({p})")],
           4.95, "shortcut 1: x unchanged")
    _arrow(ax, (main_x, 4.95 - 0.24), (main_x, 4.55), label=shape, side="right")
    detour(4.55, [("norm2", 4.0, "weight", 0.55, f"LayerNorm({d})"),
                  ("ff", 3.05, "weight", 0.7, f"Linear({d}, {4 * d}) → GELU\n→ Linear({4 * d}, {d})"),
                  ("drop_shortcut", 2.1, "op", 0.5, f"Dropout({p})")],
           1.55, "shortcut 2: x unchanged")
    note = {"color": PALETTE["grey"], "fontsize": SMALL, "va": "center", "ha": "left"}
    ax.text(det_x + bw / 2 + 0.1, 6.55, "tokens look\nat earlier\ntokens", **note)
    ax.text(det_x + bw / 2 + 0.1, 3.05, f"{_shape(b, t, 4 * d)}\ninside: each\ntoken on its own", **note)
    _box(ax, main_x, 0.9, 1.7, 0.55, "output", "tensor", sub=shape, sub_mono=True)
    _arrow(ax, (main_x, 1.55 - 0.24), (main_x, 0.9 + 0.275))
    ax.text(main_x + 1.05, 0.9, "the same shape as the input: blocks stack without glue", **note)
    _legend(ax, 0.2, 0.25, extra="thick blue: the shortcuts")
    return fig


# ----------------------------------------------------------------------------------------------------
# 05 · Greedy generation

def draw_generation_loop(context_size=1024, vocab_size=50257, max_new_tokens=None):
    """The greedy generation loop of ``generate_text_simple``: crop, forward, last position, argmax, append.

    ``context_size`` and ``vocab_size`` label the shapes; ``max_new_tokens`` (optional) the loop count.
    ``b`` is the batch, ``n`` the length of the sequence so far.
    """
    W, H = 9.8, 5.0
    fig, ax = _canvas(W, H, "Greedy generation: one new token per turn of the loop")
    top, bottom = 3.55, 1.45
    n_crop = f"min(n, {context_size})"
    _box(ax, 1.2, top, 1.7, 0.62, "idx", "tensor", sub="(b, n)", sub_mono=True)
    _box(ax, 3.55, top, 2.2, 0.62, "crop to the context", "op", sub=f"idx[:, -{context_size}:]", sub_mono=True)
    _box(ax, 6.2, top, 1.6, 0.62, "model", "weight", sub="GPTModel", sub_mono=True)
    _box(ax, 8.6, top, 1.9, 0.62, "logits", "tensor", sub=_shape("b", "n'", vocab_size), sub_mono=True)
    _arrow(ax, (2.05, top), (2.45, top))
    _arrow(ax, (4.65, top), (5.4, top), label=_shape("b", "n'"), side="above", label_offset=0.06)
    _arrow(ax, (7.0, top), (7.65, top))
    ax.text(3.55, top - 0.5, f"n' = {n_crop}", fontsize=SMALL, family=MONO, ha="center", va="top")

    _box(ax, 8.6, (top + bottom) / 2, 2.1, 0.55, "last position", "op", sub="logits[:, -1, :]", sub_mono=True)
    _arrow(ax, (8.6, top - 0.31), (8.6, (top + bottom) / 2 + 0.275))
    _arrow(ax, (8.6, (top + bottom) / 2 - 0.275), (8.6, bottom + 0.31), label=_shape("b", vocab_size), side="left")
    _box(ax, 8.6, bottom, 1.9, 0.62, "argmax", "op", sub="(softmax keeps\nthe order)", fontsize=FONT)
    _box(ax, 6.2, bottom, 1.6, 0.62, "next id", "tensor", sub="(b, 1)", sub_mono=True)
    _box(ax, 3.55, bottom, 2.2, 0.62, "append", "op", sub="torch.cat(dim=1)", sub_mono=True)
    _arrow(ax, (7.65, bottom), (7.0, bottom))
    _arrow(ax, (5.4, bottom), (4.65, bottom))
    _line(ax, [(2.45, bottom), (1.2, bottom), (1.2, top - 0.31)])
    ax.text(1.1, (top + bottom) / 2, "(b, n + 1)", fontsize=SMALL, family=MONO, ha="right", va="center")
    repeat = "repeat" + (f" {max_new_tokens} times" if max_new_tokens is not None else " max_new_tokens times")
    ax.text(4.9, (top + bottom) / 2, repeat, fontsize=FONT, ha="center", va="center", fontweight="bold",
            color=PALETTE["grey"])
    _legend(ax, 0.2, 0.35)
    return fig


# ----------------------------------------------------------------------------------------------------
# 06 · Pretraining

def draw_training_loop(batch_size=8, context_length=32, vocab_size=50257, eval_freq=None):
    """The training loop: batch, forward, loss, backward, AdamW step, and the periodic evaluation.

    ``batch_size``, ``context_length`` and ``vocab_size`` label the shapes; ``eval_freq`` (optional) says
    how often ``evaluate_model`` runs.
    """
    b, t, V = batch_size, context_length, vocab_size
    W, H = 9.8, 6.3
    fig, ax = _canvas(W, H, "One training step, repeated for every batch")
    top, bottom = 4.45, 2.25
    mid = (top + bottom) / 2
    xs = [1.0, 3.2, 5.75, 8.2]
    _box(ax, xs[0], top, 1.6, 0.62, "train_loader", "op", fontsize=SMALL + 0.5)
    _box(ax, xs[1], top, 2.1, 0.8, "batch", "tensor", sub=f"input {_shape(b, t)}\ntarget {_shape(b, t)}",
         sub_mono=True)
    _box(ax, xs[2], top, 1.9, 0.62, "model(input)", "weight", sub="the forward pass")
    _box(ax, xs[3], top, 2.0, 0.62, "logits", "tensor", sub=_shape(b, t, V), sub_mono=True)
    _arrow(ax, (xs[0] + 0.8, top), (xs[1] - 1.05, top))
    _arrow(ax, (xs[1] + 1.05, top), (xs[2] - 0.95, top))
    _arrow(ax, (xs[2] + 0.95, top), (xs[3] - 1.0, top))

    _box(ax, xs[3], mid, 2.2, 0.62, "cross_entropy", "op", sub="against the targets")
    _arrow(ax, (xs[3], top - 0.31), (xs[3], mid + 0.31), label=_shape(b * t, V), side="left")
    _line(ax, [(xs[1], top + 0.4), (xs[1], top + 0.75), (xs[3] + 1.35, top + 0.75), (xs[3] + 1.35, mid),
               (xs[3] + 1.1, mid)], dashed=True)
    ax.text((xs[2] + xs[3]) / 2, top + 0.82, f"targets, flattened {_shape(b * t)}", fontsize=SMALL, family=MONO,
            ha="center", va="bottom")
    _box(ax, xs[3], bottom, 1.6, 0.62, "loss", "tensor", sub="() one number", sub_mono=True)
    _arrow(ax, (xs[3], mid - 0.31), (xs[3], bottom + 0.31))
    _box(ax, xs[2], bottom, 1.9, 0.62, "loss.backward()", "op", fontsize=SMALL + 0.5)
    _arrow(ax, (xs[3] - 0.8, bottom), (xs[2] + 0.95, bottom))
    _box(ax, xs[1], bottom, 2.1, 0.62, "optimizer.step()", "op", sub="AdamW", fontsize=SMALL + 0.5)
    _arrow(ax, (xs[2] - 0.95, bottom), (xs[1] + 1.05, bottom), label=".grad", side="above", label_offset=0.06)
    ax.text(xs[2], bottom - 0.45, "a gradient for every weight", fontsize=SMALL, ha="center", va="center",
            color=PALETTE["grey"])
    _box(ax, xs[0], bottom, 1.6, 0.62, "zero_grad()", "op", fontsize=SMALL + 0.5)
    _arrow(ax, (xs[1] - 1.05, bottom), (xs[0] + 0.8, bottom))
    _arrow(ax, (xs[0], bottom + 0.31), (xs[0], top - 0.31), label="next batch", side="right")
    _arrow(ax, (xs[1] + 0.55, bottom + 0.31), (xs[2] - 0.45, top - 0.31), color=PALETTE["weight"], lw=1.8)
    ax.text((xs[1] + xs[2]) / 2 + 0.25, mid, "changes every\nweight in place", fontsize=SMALL, ha="left",
            va="center", color="#8A5F00")

    every = f"every {eval_freq} steps" if eval_freq else "every eval_freq steps"
    _box(ax, 4.4, 0.95, 5.6, 0.62, f"{every}: evaluate_model", "op",
         sub="train and validation loss, model.eval(), no gradients")
    _arrow(ax, (xs[1], bottom - 0.31), (xs[1], 1.26), dashed=True)
    _legend(ax, 0.2, 0.25)
    return fig


# ----------------------------------------------------------------------------------------------------
# 07 · The KV cache

def draw_kv_cache(cfg, cached_tokens=4):
    """What the key/value cache keeps between generation steps, for one attention layer.

    At each step only the new token is run through the layer: its key and value are written into the
    cache after the ones already there, its query is used once and dropped. The cache is drawn with room
    for two more positions (a cache allocated once for the whole context, filled from the left; one that
    grows with ``torch.cat`` holds the same numbers). ``cfg`` gives the sizes (and the memory the cache
    takes per token); ``cached_tokens`` (1 to 10) is how many tokens are already in the cache.
    """
    d, nh, L = cfg["emb_dim"], cfg["n_heads"], cfg["n_layers"]
    hd = d // nh
    n = cached_tokens
    W, H = 9.8, 6.6
    fig, ax = _canvas(W, H, f"The KV cache: step {n + 1} runs only the new token through the layer")
    y_k, y_q, y_v = 4.75, 3.45, 2.15
    accent = PALETTE["accent"]
    _box(ax, 1.0, y_q, 1.5, 0.75, "new token", "tensor", sub=_shape("b", 1, d), sub_mono=True, edge=accent, lw=2.4)
    for y, name in ((y_k, "W_key"), (y_q, "W_query"), (y_v, "W_value")):
        _box(ax, 2.85, y, 1.3, 0.5, name, "weight")
        _line(ax, [(1.75, y_q), (1.95, y_q), (1.95, y), (2.2, y)])
    cell = min(0.42, 2.75 / (n + 1))
    gx = 4.0                                          # left edge of the cache rows
    gend = gx + (n + 1) * cell
    for y, letter, name, side in ((y_k, "k", "keys", 1), (y_v, "v", "values", -1)):
        for j in range(n + 1):
            new = j == n
            ax.add_patch(Rectangle((gx + j * cell, y - 0.25), cell, 0.5, zorder=2, lw=1.2,
                                   facecolor=_tint(accent, 0.25) if new else FILL["tensor"],
                                   edgecolor=accent if new else PALETTE["tensor"]))
            if cell >= 0.33:
                ax.text(gx + (j + 0.5) * cell, y, f"{letter}{j}", fontsize=SMALL, ha="center", va="center", zorder=3)
        ax.add_patch(Rectangle((gend, y - 0.25), 0.45, 0.5, facecolor="white", edgecolor="#999999", lw=1.0,
                               linestyle=(0, (3, 2)), zorder=1.5))
        ax.text(gend + 0.225, y, "…", fontsize=SMALL, ha="center", va="center", color="#777777")
        # the new key (value) goes round the kept ones and into the last slot
        xn = gx + (n + 0.5) * cell
        _line(ax, [(3.5, y), (3.72, y), (3.72, y + side * 0.45), (xn, y + side * 0.45), (xn, y + side * 0.25)],
              color=accent)
        ax.text(gx, y + 0.6 if side > 0 else y + 0.4, f"{name} cache {_shape('b', nh, n + 1, hd)}",
                fontsize=SMALL, family=MONO, va="bottom")
    ax.text(gx, y_v - 0.62, f"{n} kept from earlier steps; the new key and value go to position {n}",
            fontsize=SMALL, va="top", color=accent)
    _box(ax, gx + 0.35, y_q, 0.7, 0.5, "q", "tensor", edge=accent)
    _arrow(ax, (3.5, y_q), (gx, y_q))
    ax.text(gx, y_q - 0.33, f"q {_shape('b', nh, 1, hd)}: used once, not kept", fontsize=SMALL, va="top",
            color=PALETTE["grey"])
    ox = 8.35
    _box(ax, ox, y_q + 0.7, 2.3, 0.62, "q · keys, softmax", "op", sub=f"over all {n + 1} positions")
    _box(ax, ox, y_q - 0.7, 2.3, 0.62, "weighted sum", "op", sub=f"of all {n + 1} values")
    _line(ax, [(gend + 0.45, y_k), (ox, y_k), (ox, y_q + 1.01)])
    _line(ax, [(gend + 0.45, y_v), (ox, y_v), (ox, y_q - 1.01)])
    _line(ax, [(gx + 0.7, y_q), (6.85, y_q), (6.85, y_q + 0.7), (ox - 1.15, y_q + 0.7)])
    _arrow(ax, (ox, y_q + 0.39), (ox, y_q - 0.39), label=_shape("b", nh, 1, n + 1), side="left")
    ax.text(ox, y_v - 0.35, f"→ out_proj → {_shape('b', 1, d)}", fontsize=SMALL, family=MONO, ha="center",
            va="top")

    per_token = 2 * L * d * 4
    ax.text(0.2, 1.05, f"Kept between steps, in each of the {L} layers: the keys and values of every earlier "
            f"token.\nMemory per sequence (float32): 2 × {L} layers × {d} × 4 bytes = {_bytes(per_token)} per "
            f"token, {_bytes(per_token * cfg['context_length'])} at {cfg['context_length']} tokens.",
            fontsize=SMALL, va="center")
    _legend(ax, 0.2, 0.3, extra="vermillion: what the new token adds")
    return fig


def _bytes(n):
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}".replace(".0 ", " ")
        n /= 1024


# ----------------------------------------------------------------------------------------------------
# 08 · OpenAI's GPT-2 weights

def draw_gpt2_weight_mapping(cfg):
    """How GPT-2's checkpoint layout maps onto ``GPTModel``: Conv1D stores (in, out), c_attn is fused.

    ``cfg`` gives the width ``d`` (768 for GPT-2 small), so the shapes are those of that model.
    """
    d = cfg["emb_dim"]
    W, H = 9.8, 7.4
    fig, ax = _canvas(W, H, "GPT-2's checkpoint (Conv1D, fused c_attn) → our layers")
    lx, mx, rx = 1.75, 4.6, 7.75         # centres: Hugging Face, the split, ours
    ax.text(lx, H - 0.9, "Hugging Face: h.N.…\nConv1D: weight (in, out),\ny = x @ W + b", fontsize=SMALL,
            ha="center", va="center", fontweight="bold")
    ax.text(rx, H - 0.9, "ours: trf_blocks[N].…\nnn.Linear: weight (out, in),\ny = x @ W.T + b", fontsize=SMALL,
            ha="center", va="center", fontweight="bold")

    # the fused projection, to scale: (d, 3d) is three squares side by side, one per projection
    s = 0.6
    y0 = 4.7
    ys = [y0 + 0.75, y0, y0 - 0.75]
    x_left = lx - 1.5 * s
    for k, name in enumerate(("q", "k", "v")):
        ax.add_patch(Rectangle((x_left + k * s, y0 - s / 2), s, s, facecolor=FILL["weight"], edgecolor=PALETTE["weight"],
                               lw=2.2, zorder=2))
        ax.text(x_left + (k + 0.5) * s, y0, name, fontsize=FONT, ha="center", va="center", zorder=3)
    ax.text(lx, y0 + s / 2 + 0.1, "attn.c_attn.weight", fontsize=SMALL, family=MONO, ha="center", va="bottom")
    ax.text(lx, y0 - s / 2 - 0.1, _shape(d, 3 * d), fontsize=SMALL, family=MONO, ha="center", va="top")
    for k, (name, y) in enumerate(zip(("W_query", "W_key", "W_value"), ys)):
        ax.add_patch(Rectangle((mx - s / 2, y - s / 2), s, s, facecolor=FILL["weight"], edgecolor=PALETTE["weight"],
                               lw=2.2, zorder=2))
        ax.text(mx, y, "qkv"[k], fontsize=FONT, ha="center", va="center", zorder=3)
        _arrow(ax, (lx + 1.5 * s + 0.05, y0 + 0.15 * (1 - k)), (mx - s / 2 - 0.05, y), lw=1.2)
        _box(ax, rx, y, 3.3, 0.52, f"att.{name}.weight", "weight", sub=_shape(d, d), sub_mono=True,
             fontsize=SMALL + 0.5)
        _arrow(ax, (mx + s / 2 + 0.05, y), (rx - 1.65, y), label=".T", side="above", label_offset=0.04)
    ax.text((lx + 1.5 * s + mx - s / 2) / 2, ys[0] + 0.1, ".chunk(3,\ndim=-1)", fontsize=SMALL, family=MONO,
            ha="center", va="bottom")
    ax.text(mx, ys[-1] - s / 2 - 0.08, f"3 × {_shape(d, d)}", fontsize=SMALL, family=MONO, ha="center", va="top")
    ax.text(rx, ys[-1] - 0.36, f"the bias {_shape(3 * d)} is split the same way", fontsize=SMALL, ha="center",
            va="top", color=PALETTE["grey"])

    rows = [("attn.c_proj.weight", _shape(d, d), "att.out_proj.weight", _shape(d, d)),
            ("mlp.c_fc.weight", _shape(d, 4 * d), "ff.layers[0].weight", _shape(4 * d, d)),
            ("mlp.c_proj.weight", _shape(4 * d, d), "ff.layers[2].weight", _shape(d, 4 * d))]
    for k, (hf, hf_shape, ours, our_shape) in enumerate(rows):
        y = 2.8 - 0.72 * k
        _box(ax, lx, y, 3.1, 0.52, hf, "weight", sub=hf_shape, sub_mono=True, fontsize=SMALL + 0.5)
        _box(ax, rx, y, 3.3, 0.52, ours, "weight", sub=our_shape, sub_mono=True, fontsize=SMALL + 0.5)
        _arrow(ax, (lx + 1.55, y), (rx - 1.65, y), label=".T", side="above", label_offset=0.04)
    ax.text(0.2, 0.85, "Renamed, not transposed: wte → tok_emb, wpe → pos_emb, ln_1 / ln_2 / ln_f → norm1 / norm2 / "
            "final_norm\n(weight → scale, bias → shift), lm_head → out_head (GPT-2 ties it to wte). "
            "attn.bias is the causal mask: skipped.", fontsize=SMALL, va="center")
    _legend(ax, 0.2, 0.25)
    return fig


# ----------------------------------------------------------------------------------------------------
# 09 · From GPT-2 to a modern LLM

def draw_llama_block(cfg, batch_size=None, num_tokens=None):
    """The Llama block (SmolLM2, Llama 2/3, ...) drawn as notebook 04's GPT-2 block, its changes marked.

    ``x = x + att(norm1(x))`` then ``x = x + ff(norm2(x))``, as in GPT-2, with RMSNorm instead of
    LayerNorm, grouped-query attention with RoPE on the queries and keys, the SwiGLU feed-forward
    ``fc3(silu(fc1(x)) * fc2(x))``, no dropout and no biases. What differs from GPT-2's block has a
    vermillion edge. ``cfg``: a Llama config such as ``SMOLLM2_CONFIG_135M`` (its sizes label the
    boxes); ``batch_size``/``num_tokens`` (optional) replace ``b``/``t``.
    """
    from ..llama import validate_llama_config

    cfg = validate_llama_config(cfg)  # fills in the optional keys
    b, t = _dim(batch_size, "b"), _dim(num_tokens, "t")
    d, nh, nkv, hidden = cfg["emb_dim"], cfg["n_heads"], cfg["n_kv_groups"], cfg["hidden_dim"]
    hd = d // nh
    shape = _shape(b, t, d)
    new = PALETTE["accent"]

    W, H = 9.6, 10.9
    fig, ax = _canvas(W, H, f"LlamaBlock (one of {cfg['n_layers']}): GPT-2's block, five changes")
    main_x, det_x, bw = 1.55, 4.6, 3.2
    blue = PALETTE["tensor"]
    note = {"color": PALETTE["grey"], "fontsize": SMALL, "va": "center", "ha": "left"}
    new_note = {**note, "color": new}
    nx = det_x + bw / 2 + 0.15                    # notes column

    _box(ax, main_x, 10.0, 1.7, 0.55, "input x", "tensor", sub=shape, sub_mono=True)
    ax.add_patch(Rectangle((0.35, 1.25), W - 0.6, 8.0, fill=False, edgecolor="#999999", lw=1.2,
                           linestyle=(0, (5, 4)), zorder=0))

    def shortcut(y_top, plus_y, label):
        ax.plot([main_x], [y_top], marker="o", color=blue, markersize=6, zorder=3)
        _arrow(ax, (main_x, y_top), (main_x, plus_y + 0.24), color=blue, lw=2.6)
        ax.text(main_x - 0.15, (y_top + plus_y) / 2, label, rotation=90, fontsize=SMALL, color=blue,
                ha="right", va="center", fontweight="bold")
        _box(ax, main_x, plus_y, 0.5, 0.48, "+", "op", fontsize=14)

    # --- the attention half
    _arrow(ax, (main_x, 10.0 - 0.275), (main_x, 9.1), label=shape, side="right")
    shortcut(9.1, 6.45, "shortcut 1: x unchanged")
    _line(ax, [(main_x, 9.1), (det_x, 9.1), (det_x, 8.525)])
    _box(ax, det_x, 8.25, bw, 0.55, "norm1", "weight", sub=f"RMSNorm({d})", sub_mono=True, edge=new)
    ax.text(nx, 8.25, "no mean, no shift:\nx / rms(x) · weight", **new_note)
    _arrow(ax, (det_x, 8.25 - 0.275), (det_x, 7.65), label=shape)
    _box(ax, det_x, 7.25, bw, 0.8, "att", "weight", sub=f"GroupedQueryAttention\n{nh} query heads, {nkv} k/v heads",
         sub_mono=True, edge=new)
    ax.text(nx, 7.25, f"RoPE rotates q and k;\nhead size {hd}; each k/v head\nserves {nh // nkv} query heads",
            **new_note)
    _line(ax, [(det_x, 7.25 - 0.4), (det_x, 6.45), (main_x + 0.25, 6.45)])
    ax.text((main_x + det_x) / 2 + 0.2, 6.55, shape, fontsize=SMALL, family=MONO, ha="center", va="bottom")

    # --- the feed-forward half: SwiGLU, drawn open
    _arrow(ax, (main_x, 6.45 - 0.24), (main_x, 5.95), label=shape, side="right")
    shortcut(5.95, 1.6, "shortcut 2: x unchanged")
    _line(ax, [(main_x, 5.95), (det_x, 5.95), (det_x, 5.575)])
    _box(ax, det_x, 5.3, bw, 0.55, "norm2", "weight", sub=f"RMSNorm({d})", sub_mono=True, edge=new)
    g_x, u_x, fw = det_x - 0.85, det_x + 0.85, 1.5
    y_fc, y_silu, y_mul, y_down = 3.95, 3.25, 2.75, 2.15
    _line(ax, [(det_x, 5.3 - 0.275), (det_x, 4.6), (g_x, 4.6), (g_x, y_fc + 0.3)], arrow_at_end=True)
    _line(ax, [(det_x, 4.6), (u_x, 4.6), (u_x, y_fc + 0.3)])
    ax.text(det_x + 0.1, 4.81, shape, fontsize=SMALL, family=MONO, ha="left", va="center")
    _box(ax, g_x, y_fc, fw, 0.6, "ff.fc1 (gate)", "weight", sub=f"Linear({d}, {hidden})", sub_mono=True,
         fontsize=SMALL + 0.5)
    _box(ax, u_x, y_fc, fw, 0.6, "ff.fc2 (up)", "weight", sub=f"Linear({d}, {hidden})", sub_mono=True,
         fontsize=SMALL + 0.5)
    _box(ax, g_x, y_silu, 1.1, 0.42, "SiLU", "op")
    _arrow(ax, (g_x, y_fc - 0.3), (g_x, y_silu + 0.21))
    _box(ax, det_x, y_mul, 0.46, 0.42, "×", "op", fontsize=14)
    _line(ax, [(g_x, y_silu - 0.21), (g_x, y_mul), (det_x - 0.23, y_mul)])
    _line(ax, [(u_x, y_fc - 0.3), (u_x, y_mul), (det_x + 0.23, y_mul)])
    ax.text(u_x - 0.08, y_silu + 0.1, _shape(b, t, hidden), fontsize=SMALL, family=MONO, ha="right", va="center")
    _box(ax, det_x, y_down, 2.2, 0.5, "ff.fc3 (down)", "weight", sub=f"Linear({hidden}, {d})", sub_mono=True,
         fontsize=SMALL + 0.5)
    _arrow(ax, (det_x, y_mul - 0.21), (det_x, y_down + 0.25))
    ax.add_patch(Rectangle((det_x - bw / 2, y_down - 0.3), bw, y_fc - y_down + 0.7, fill=False, edgecolor=new,
                           lw=1.4, linestyle=(0, (4, 3)), zorder=0.5))
    ax.text(nx, 3.45, f"SwiGLU: the gate decides,\nfeature by feature, how\nmuch passes; hidden {hidden}\n"
            f"(not 4 × {d}: three\nmatrices instead of two)", **new_note)
    _line(ax, [(det_x, y_down - 0.25), (det_x, 1.6), (main_x + 0.25, 1.6)])
    ax.text((main_x + det_x - bw / 2) / 2 + 0.1, 1.7, shape, fontsize=SMALL, family=MONO, ha="center", va="bottom")

    _box(ax, main_x, 0.85, 1.7, 0.55, "output", "tensor", sub=shape, sub_mono=True)
    _arrow(ax, (main_x, 1.6 - 0.24), (main_x, 0.85 + 0.275))
    ax.text(main_x + 1.05, 0.85, "no dropout, no biases; the shape never changes", **note)
    _legend(ax, 0.2, 0.25, extra="vermillion: changed from GPT-2")
    return fig


# ----------------------------------------------------------------------------------------------------
# 10 · Finetuning with LoRA

def draw_lora(d_in=576, d_out=576, rank=8, alpha=16):
    """A linear layer with LoRA: the frozen ``W`` beside the trained low-rank path ``B A``.

    ``y = x W^T + (dropout(x) A^T B^T) * alpha / rank``; the note counts what each path holds, so the
    figure shows the saving for the given sizes.
    """
    W, H = 9.8, 5.6
    fig, ax = _canvas(W, H, "LoRA: a frozen weight W, and a small trained path B A beside it")
    y_top, y_low = 3.85, 2.05
    _box(ax, 0.95, 2.95, 1.3, 0.8, "x", "tensor", sub=_shape("b", "t", d_in), sub_mono=True)
    _box(ax, 4.6, y_top, 2.6, 0.72, "W  (frozen)", "weight", sub=_shape(d_out, d_in), sub_mono=True, dashed=True,
         fill="#EEEEEE", edge=PALETTE["grey"])
    _line(ax, [(1.6, 2.95), (2.0, 2.95), (2.0, y_top), (3.3, y_top)])
    _box(ax, 2.75, y_low, 1.0, 0.5, "dropout", "op")
    _line(ax, [(2.0, 2.95), (2.0, y_low), (2.25, y_low)])
    _box(ax, 4.05, y_low, 0.95, 0.72, "A", "weight", sub=_shape(rank, d_in), sub_mono=True)
    _arrow(ax, (3.25, y_low), (3.575, y_low))
    _box(ax, 5.45, y_low, 0.95, 0.72, "B", "weight", sub=_shape(d_out, rank), sub_mono=True)
    _arrow(ax, (4.525, y_low), (4.975, y_low))
    ax.text(4.75, y_low - 0.5, _shape("b", "t", rank), fontsize=SMALL, family=MONO, ha="center", va="top")
    _box(ax, 6.85, y_low, 1.05, 0.5, f"× {alpha:g}/{rank}", "op")
    _arrow(ax, (5.925, y_low), (6.325, y_low))
    _box(ax, 7.75, 2.95, 0.5, 0.5, "+", "op")
    _line(ax, [(5.9, y_top), (7.75, y_top), (7.75, 3.2)])
    _line(ax, [(7.375, y_low), (7.75, y_low), (7.75, 2.7)])
    _box(ax, 9.0, 2.95, 1.2, 0.8, "y", "tensor", sub=_shape("b", "t", d_out), sub_mono=True)
    _arrow(ax, (8.0, 2.95), (8.4, 2.95))
    ax.text(4.6, y_top + 0.5, "pretrained, no gradient", fontsize=SMALL, ha="center", va="bottom",
            color=PALETTE["grey"])
    ax.text(4.75, y_low + 0.5, "trained: A small random, B = 0 at the start", fontsize=SMALL, ha="center",
            va="bottom", color=PALETTE["accent"])
    frozen, trained = d_in * d_out, rank * (d_in + d_out)
    ax.text(0.2, 0.95, f"W holds {d_out} × {d_in} = {frozen:,} numbers; A and B hold {rank} × ({d_in} + {d_out}) = "
            f"{trained:,} ({trained / frozen:.1%}).\nB = 0 makes y = x Wᵀ at the start: the adapted model starts "
            "exactly as the pretrained one.", fontsize=SMALL, va="center")
    _legend(ax, 0.2, 0.3)
    return fig
