"""Interactive figures for the notebooks: an attention explorer and a generation playground.

Each is a small class whose drawing and computing methods are plain functions of their arguments
(``figure(...)``, ``run(...)``), so they can be tested without a browser; ``widget()`` wires them to
ipywidgets controls, and ``show()`` displays the widget where a front end can render it, or a static
figure of the default view where it cannot (no ipywidgets, no front-end extension, or
``GPT_FROM_SCRATCH_STATIC=1``). Works with ipywidgets 7 (Google Colab) and 8.
"""

import html
import importlib.util
import io
import os
import sys

import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import MaxNLocator, PercentFormatter

from ..generate import generate, sample_next_token, text_to_token_ids, token_ids_to_text, top_k_filter
from ..model import evaluating


def widgets_supported():
    """True if ipywidgets is installed and the current front end is expected to render it."""
    if os.environ.get("GPT_FROM_SCRATCH_STATIC") == "1" or importlib.util.find_spec("ipywidgets") is None:
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return False  # a plain Python or terminal IPython session
    if "google.colab" in sys.modules:
        import ipywidgets

        if int(ipywidgets.__version__.split(".")[0]) >= 8:  # Colab renders 7.x natively only
            from google.colab import output

            output.enable_custom_widget_manager()
        return True
    return any(importlib.util.find_spec(m) for m in ("jupyterlab_widgets", "widgetsnbextension"))


def _display(obj):
    from IPython.display import display

    display(obj)


# Figures are shown at DISPLAY_DPI CSS pixels per inch of their matplotlib figsize (matplotlib's own
# default) and drawn with PIXEL_RATIO PNG pixels per CSS pixel, so that text stays sharp on high-DPI
# ("retina") screens instead of a small PNG stretched to the output's width.
DISPLAY_DPI = 100
PIXEL_RATIO = 2


def _png(fig):
    """A figure as ``(png_bytes, display_width)``: PNG bytes drawn at ``PIXEL_RATIO`` times the figure's
    display size, and that display width in CSS pixels. The figure is closed afterwards.

    Widgets show pictures through an ``Image`` widget rather than an ``Output`` widget: an ``Output``
    widget's content lives only in the front end's widget state, which notebook runners (nbclient,
    nbval) do not keep."""
    width = round(fig.get_figwidth() * DISPLAY_DPI)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DISPLAY_DPI * PIXEL_RATIO)
    plt.close(fig)
    return buffer.getvalue(), width


def _set_picture(picture, fig):
    """Draw ``fig`` into the ``Image`` widget ``picture`` at its display width (never wider than the output)."""
    picture.value, width = _png(fig)
    picture.layout.width = f"{width}px"


def _show_static(fig):
    """The static fallback: in a Jupyter kernel, ``fig`` as a sharp PNG at its display width (as the widget
    shows it); elsewhere (a script, a terminal) ``plt.show()``."""
    from IPython import get_ipython  # IPython comes with ipykernel, a dependency
    from IPython.display import Image

    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        plt.show()
        return

    data, width = _png(fig)
    _display(Image(data=data, format="png", width=width))


def _style(description_width):
    """Layout arguments shared by a widget's controls: the same description width for every control, so
    labels are read in full and the controls line up in columns (ipywidgets 7 and 8 alike)."""
    return {"style": {"description_width": description_width}}


def _token_labels(tokenizer, ids):
    return [f"{i}:{tokenizer.decode([t])!r}" for i, t in enumerate(ids)]


class AttentionExplorer:
    """Attention weights of every layer and head, for one prompt.

    ``weights``: a list with one tensor ``(num_heads, num_tokens, num_tokens)`` per layer;
    ``tokens``: the ``num_tokens`` labels. Build it from a ``GPTModel`` with :meth:`from_model`.
    """

    def __init__(self, weights, tokens):
        if not weights:
            raise ValueError("no attention weights: the model has no transformer blocks")
        n = len(tokens)
        for layer, w in enumerate(weights):
            if w.dim() != 3 or w.shape[1:] != (n, n):
                raise ValueError(f"layer {layer}: expected weights of shape (num_heads, {n}, {n}), got {tuple(w.shape)}")
        self.weights = [w.detach().cpu() for w in weights]
        self.tokens = list(tokens)

    @classmethod
    def from_model(cls, model, tokenizer, prompt):
        """Run ``model`` (a ``GPTModel``) once on ``prompt`` and keep each layer's attention weights.

        The weights are read with PyTorch forward hooks on each attention module's dropout, which
        receives exactly the softmax output ``(batch, num_heads, T, T)`` (their one way out of
        ``MultiHeadAttention.forward``, so the attention class needs no switch for the explorer); in
        eval mode dropout passes it on unchanged. A model built with ``use_sdpa=True`` never forms those weights (the fused
        kernel keeps them internal), so for this one call its blocks use the explicit path. Hooks and
        switches are undone afterwards, so the model is left as it was.
        """
        idx = text_to_token_ids(prompt, tokenizer)
        captured = []

        def keep(module, inputs, output):
            captured.append(inputs[0][0].detach())  # the first (only) sequence: (num_heads, T, T)

        handles = [block.att.dropout.register_forward_hook(keep) for block in model.trf_blocks]
        sdpa_flags = [getattr(block.att, "use_sdpa", False) for block in model.trf_blocks]
        try:
            for block in model.trf_blocks:
                if getattr(block.att, "use_sdpa", False):
                    block.att.use_sdpa = False
            with evaluating(model), torch.no_grad():
                model(idx)
        finally:
            for handle in handles:
                handle.remove()
            for block, flag in zip(model.trf_blocks, sdpa_flags):
                if flag:
                    block.att.use_sdpa = flag
        if len(captured) != len(model.trf_blocks):
            raise RuntimeError(
                f"captured attention weights from {len(captured)} of {len(model.trf_blocks)} layers: the explorer "
                "needs the explicit softmax path of MultiHeadAttention"
            )
        weights = captured  # (num_heads, T, T) per layer
        return cls(weights, _token_labels(tokenizer, idx[0].tolist()))

    @property
    def num_layers(self):
        return len(self.weights)

    @property
    def num_heads(self):
        return self.weights[0].shape[0]

    def _check(self, layer, head, query):
        for name, value, limit in (("layer", layer, self.num_layers), ("head", head, self.num_heads),
                                   ("query", query, len(self.tokens))):
            if not isinstance(value, int) or not 0 <= value < limit:
                raise ValueError(f"{name} must be an integer in [0, {limit}), got {value!r}")

    def row(self, layer, head, query):
        """The weights query token ``query`` gives to every token: ``(num_tokens,)``, summing to 1."""
        self._check(layer, head, query)
        return self.weights[layer][head, query]

    def figure(self, layer=0, head=0, query=None):
        """A heatmap of layer ``layer``, head ``head``, with the ``query`` row outlined."""
        query = len(self.tokens) - 1 if query is None else query
        self._check(layer, head, query)
        w = self.weights[layer][head].numpy()
        n = len(self.tokens)
        fig, ax = plt.subplots(figsize=(1.2 + 0.55 * n, 1.0 + 0.5 * n))
        im = ax.imshow(w, cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(n), self.tokens, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), self.tokens, fontsize=8)
        ax.add_patch(plt.Rectangle((-0.5, query - 0.5), n, 1, fill=False, edgecolor="red", linewidth=2))
        for j in range(query + 1):
            ax.text(j, query, f"{w[query, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if w[query, j] < 0.6 else "black")
        ax.set_xlabel("key token (attended to)")
        ax.set_ylabel("query token")
        ax.set_title(f"Attention weights, layer {layer}, head {head}")
        fig.colorbar(im, ax=ax, fraction=0.046)
        fig.tight_layout()
        return fig

    def widget(self, layer=0, head=0, query=None):
        """ipywidgets controls (layer, head, query token) above a figure that follows them."""
        import ipywidgets as w

        query = len(self.tokens) - 1 if query is None else query
        self._check(layer, head, query)
        look = _style("3.5em")
        layer = w.IntSlider(value=layer, min=0, max=self.num_layers - 1, description="layer",
                            continuous_update=False, layout=w.Layout(width="15em"), **look)
        head = w.IntSlider(value=head, min=0, max=self.num_heads - 1, description="head",
                           continuous_update=False, layout=w.Layout(width="15em"), **look)
        query = w.Dropdown(options=[(t, i) for i, t in enumerate(self.tokens)], value=query, description="query",
                           layout=w.Layout(width="18em"), **look)
        picture = w.Image(format="png", layout=w.Layout(max_width="100%", height="auto"))

        def redraw(_=None):
            _set_picture(picture, self.figure(layer.value, head.value, query.value))

        for control in (layer, head, query):
            control.observe(redraw, names="value")
        redraw()
        box = w.VBox([w.HBox([layer, head, query]), picture])
        box.redraw = redraw  # for tests: call after changing a control's value
        return box

    def show(self, layer=0, head=0, query=None):
        """Display the widget, or a static figure where widgets cannot render."""
        if widgets_supported():
            _display(self.widget(layer, head, query))
        else:
            _show_static(self.figure(layer, head, query))


class GenerationPlayground:
    """Prompt, temperature, top-k, length and seed in; generated text and next-token chart out."""

    def __init__(self, model, tokenizer, context_size=None):
        self.model = model
        self.tokenizer = tokenizer
        self.context_size = context_size or model.cfg["context_length"]

    def _last_logits(self, prompt):
        """The model's logits for the token after ``prompt``: ``(1, vocab_size)``."""
        idx = text_to_token_ids(prompt, self.tokenizer)[:, -self.context_size:]
        with evaluating(self.model), torch.no_grad():
            return self.model(idx)[:, -1, :]

    def next_token_distribution(self, prompt, temperature=1.0, top_k=None, n=10):
        """The ``n`` most likely next tokens after ``prompt`` as ``[(token, probability)]``, with the
        same temperature and top-k ``generate`` would use (temperature 0 shows temperature 1)."""
        logits = self._last_logits(prompt)[0]
        if top_k is not None:
            logits = top_k_filter(logits, top_k)
        probs = torch.softmax(logits / (temperature if temperature > 0 else 1.0), dim=-1)
        top = torch.topk(probs, min(n, probs.numel()))
        return [(self.tokenizer.decode([i]), p) for i, p in zip(top.indices.tolist(), top.values.tolist())]

    def next_token(self, prompt, temperature=1.0, top_k=None, seed=123):
        """The token ``generate`` picks first after ``prompt`` with these settings and ``seed``: the same
        ``sample_next_token`` call on the same logits with the same generator."""
        generator = torch.Generator().manual_seed(seed)
        return self.tokenizer.decode(sample_next_token(self._last_logits(prompt), temperature, top_k, generator)[0].tolist())

    def run(self, prompt, temperature=1.0, top_k=None, max_new_tokens=20, seed=123):
        """Generate: returns the prompt and its continuation as text."""
        idx = text_to_token_ids(prompt, self.tokenizer)
        with evaluating(self.model):
            out = generate(self.model, idx, max_new_tokens, self.context_size, temperature=temperature, top_k=top_k,
                           seed=seed)
        return token_ids_to_text(out, self.tokenizer)

    def figure(self, prompt, temperature=1.0, top_k=None, seed=None):
        """Bar chart of the next-token distribution after ``prompt``; with ``seed``, the token picked
        with that seed (the first of ``run``'s continuation) in orange.

        The axis runs from 0 to a little past the largest probability shown, not to 1: an untrained
        model's top tokens have about 1e-4 each, invisible on a 0..1 axis. The label says so."""
        pairs = self.next_token_distribution(prompt, temperature, top_k)
        picked = None if seed is None else self.next_token(prompt, temperature, top_k, seed)
        fig, ax = plt.subplots(figsize=(6, 3.2))
        labels = [repr(t) for t, _ in pairs][::-1]
        probs = [p for _, p in pairs][::-1]
        largest = max(probs)
        colors = ["tab:orange" if t == picked else "tab:blue" for t, _ in pairs][::-1]
        ax.barh(labels, probs, color=colors)
        xlabel = f"probability (axis up to the largest shown, {100 * largest:.3g}%)"
        ax.set_xlabel(xlabel if picked is None else f"{xlabel}\norange: picked with seed {seed}: {picked!r}")
        ax.set_xlim(0, largest * 1.05 if largest > 0 else 1)
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.xaxis.set_major_formatter(PercentFormatter(xmax=1))  # 0.005% rather than 5e-05
        k = "off" if top_k is None else top_k
        ax.set_title(f"Next token after the prompt (temperature {temperature}, top-k {k})")
        fig.tight_layout()
        return fig

    def widget(self, prompt="The clock", temperature=1.0, top_k=None, max_new_tokens=20, seed=123):
        """Controls for prompt, temperature, top-k, length and seed, above the text and the chart."""
        import ipywidgets as w

        # One description width and one control width for all: full labels, two aligned columns.
        look, column = _style("7.5em"), w.Layout(width="21em")
        text = w.Text(value=prompt, description="prompt", continuous_update=False, layout=w.Layout(width="42em"),
                      **look)
        temperature = w.FloatSlider(value=temperature, min=0.0, max=3.0, step=0.1, description="temperature",
                                    continuous_update=False, layout=column, **look)
        top_k = w.IntSlider(value=top_k or 0, min=0, max=100, description="top-k (0 = off)", continuous_update=False,
                            layout=column, **look)
        length = w.IntSlider(value=max_new_tokens, min=1, max=100, description="new tokens", continuous_update=False,
                             layout=column, **look)
        seed = w.IntText(value=seed, description="seed", layout=column, **look)
        generated = w.HTML()
        picture = w.Image(format="png", layout=w.Layout(max_width="100%", height="auto"))

        def redraw(_=None):
            if not text.value:
                generated.value = "<i>type a prompt</i>"
                return
            k = top_k.value or None
            continuation = self.run(text.value, temperature.value, k, length.value, seed.value)
            generated.value = f"<pre style='white-space: pre-wrap'>{html.escape(continuation)}</pre>"
            _set_picture(picture, self.figure(text.value, temperature.value, k, seed.value))

        for control in (text, temperature, top_k, length, seed):
            control.observe(redraw, names="value")
        redraw()
        box = w.VBox([text, w.HBox([temperature, top_k]), w.HBox([length, seed]), generated, picture])
        box.redraw = redraw
        return box

    def show(self, prompt="The clock", temperature=1.0, top_k=None, max_new_tokens=20, seed=123):
        """Display the widget, or the text and a static figure where widgets cannot render."""
        if widgets_supported():
            _display(self.widget(prompt, temperature, top_k, max_new_tokens, seed))
        else:
            print(self.run(prompt, temperature, top_k, max_new_tokens, seed))
            _show_static(self.figure(prompt, temperature, top_k, seed))
