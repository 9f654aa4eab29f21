"""The interactive figures' logic and callbacks, without a browser."""

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from gpt_from_scratch import AttentionExplorer, GenerationPlayground, GPTModel, generate, get_tokenizer
from gpt_from_scratch.classroom import widgets as wmod

def controls(box):
    """A widget's controls by their description, wherever they sit in its boxes."""
    found = {}
    for child in box.children:
        if hasattr(child, "children"):
            found.update(controls(child))
        elif getattr(child, "description", ""):
            found[child.description] = child
    return found


def png_size(data):
    """(width, height) in pixels, read from a PNG's header (the IHDR chunk)."""
    data = bytes(data)
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


CFG = {"vocab_size": 50257, "context_length": 16, "emb_dim": 16, "n_heads": 2, "n_layers": 3, "drop_rate": 0.1,
       "qkv_bias": False}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(123)
    return GPTModel(CFG)


def test_explorer_holds_causal_weights_for_every_layer_and_head(model):
    model.train()
    ex = AttentionExplorer.from_model(model, get_tokenizer(), "The clock struck nine")
    assert model.training  # mode restored
    assert (ex.num_layers, ex.num_heads, len(ex.tokens)) == (3, 2, 4)
    assert ex.tokens[1] == "1:' clock'"
    for w in ex.weights:
        assert torch.allclose(w.sum(-1), torch.ones(2, 4))
        assert torch.all(w.triu(1) == 0)  # no weight on future tokens
    # the hooks are gone: the model is left as it was
    assert all(not b.att.dropout._forward_hooks for b in model.trf_blocks)


def test_explorer_row_and_figure(model):
    ex = AttentionExplorer.from_model(model, get_tokenizer(), "The clock struck nine")
    assert torch.equal(ex.row(2, 1, 3), ex.weights[2][1, 3])
    fig = ex.figure(layer=1, head=0, query=2)
    assert fig.axes[0].get_title() == "Attention weights, layer 1, head 0"
    with pytest.raises(ValueError, match=r"head must be an integer in \[0, 2\), got 5"):
        ex.figure(head=5)
    with pytest.raises(ValueError, match=r"expected weights of shape \(num_heads, 3, 3\)"):
        AttentionExplorer([torch.ones(2, 4, 4)], ["a", "b", "c"])


def test_explorer_widget_redraws_when_a_control_changes(model, monkeypatch):
    pytest.importorskip("ipywidgets")
    ex = AttentionExplorer.from_model(model, get_tokenizer(), "The clock struck nine")
    calls = []
    monkeypatch.setattr(ex, "figure", lambda layer, head, query: calls.append((layer, head, query)) or
                        matplotlib.figure.Figure())
    box = ex.widget()
    layer, head, query = (controls(box)[name] for name in ("layer", "head", "query"))
    assert calls == [(0, 0, 3)]
    layer.value = 2
    head.value = 1
    query.value = 1
    assert calls[-3:] == [(2, 0, 3), (2, 1, 3), (2, 1, 1)]
    assert bytes(box.children[1].value).startswith(b"\x89PNG")  # the picture is a PNG in an Image widget


def test_explorer_widget_draws_the_real_figure(model):
    pytest.importorskip("ipywidgets")
    box = AttentionExplorer.from_model(model, get_tokenizer(), "The clock struck nine").widget()
    first = bytes(box.children[1].value)
    controls(box)["head"].value = 1  # another head, another picture
    assert first.startswith(b"\x89PNG") and bytes(box.children[1].value) != first


def test_playground_matches_generate_and_the_distribution_is_right(model):
    tok = get_tokenizer()
    pg = GenerationPlayground(model, tok)
    text = pg.run("The clock", temperature=0.8, top_k=5, max_new_tokens=6, seed=3)
    ids = generate(model.eval(), torch.tensor([tok.encode("The clock")]), 6, 16, temperature=0.8, top_k=5, seed=3)
    assert text == tok.decode(ids[0].tolist())
    top3 = pg.next_token_distribution("The clock", temperature=1.0, top_k=3)
    assert len(top3) == 10 and sum(p for _, p in top3[:3]) == pytest.approx(1.0) and top3[3][1] == 0
    hot = pg.next_token_distribution("The clock", temperature=5.0)
    cold = pg.next_token_distribution("The clock", temperature=0.2)
    assert cold[0][1] > hot[0][1]


def bar_pixels(fig):
    """How many pixels of the rendered figure are the bars' colour (tab:blue), and the figure's size."""
    import numpy as np

    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)
    blue = (np.abs(rgb - np.array([31, 119, 180])).sum(-1) < 30).sum()
    return int(blue), rgb.shape[0] * rgb.shape[1]


def test_playground_bars_are_visible_for_an_untrained_model(model):
    """An untrained model gives its top tokens about 1e-4 each: on a fixed 0..1 axis the bars were
    invisible. The axis follows the largest probability shown, and the label says so."""
    pg = GenerationPlayground(model, get_tokenizer())
    pairs = pg.next_token_distribution("The clock")
    largest = pairs[0][1]
    assert largest < 1e-3  # the case that drew an empty chart
    for fig, top in ((pg.figure("The clock"), largest), (pg.figure("The clock", top_k=1), 1.0)):
        ax = fig.axes[0]
        assert ax.get_xlim()[0] == 0 and top <= ax.get_xlim()[1] <= 1.1 * top
        assert ax.get_xlabel() == f"probability (axis up to the largest shown, {100 * top:.3g}%)"
        widths = sorted(bar.get_width() for bar in ax.patches)
        assert widths[-1] == pytest.approx(top)
        blue, total = bar_pixels(fig)
        assert blue > 0.01 * total, f"the bars cover {blue} of {total} pixels"
        matplotlib.pyplot.close(fig)


@pytest.fixture
def recording_playground(model, monkeypatch):
    """A playground whose run() records its arguments instead of generating."""
    pytest.importorskip("ipywidgets")
    pg = GenerationPlayground(model, get_tokenizer())
    pg.runs = []
    monkeypatch.setattr(pg, "run", lambda *a: pg.runs.append(a) or "text")
    monkeypatch.setattr(pg, "figure", lambda *a: matplotlib.figure.Figure())
    return pg


def test_playground_widget_callbacks(recording_playground):
    pg, runs = recording_playground, recording_playground.runs
    box = pg.widget("Hello")
    c = controls(box)
    temperature, top_k, seed = c["temperature"], c["top-k (0 = off)"], c["seed"]
    assert set(c) == {"prompt", "temperature", "top-k (0 = off)", "new tokens", "seed"}
    assert box.children[3].value == "<pre style='white-space: pre-wrap'>text</pre>"
    temperature.value = 0.0
    top_k.value = 7
    seed.value = 9
    assert runs[0] == ("Hello", 1.0, None, 20, 123)
    assert runs[-1] == ("Hello", 0.0, 7, 20, 9)


def test_static_fallback_where_widgets_cannot_render(model, monkeypatch, capsys):
    monkeypatch.setenv("GPT_FROM_SCRATCH_STATIC", "1")
    assert wmod.widgets_supported() is False
    shown = []
    monkeypatch.setattr(matplotlib.pyplot, "show", lambda: shown.append(matplotlib.pyplot.gcf().axes[0].get_title()))
    ex = AttentionExplorer.from_model(model, get_tokenizer(), "The clock")
    ex.show(head=1)
    GenerationPlayground(model, get_tokenizer()).show("The clock", max_new_tokens=3)
    # outside a kernel (this test), the figures go to plt.show()
    assert shown[0] == "Attention weights, layer 0, head 1"
    assert shown[1].startswith("Next token after the prompt")
    assert capsys.readouterr().out.startswith("The clock")


class FakeKernelShell:
    kernel = object()


def test_static_fallback_in_a_kernel_shows_a_sharp_png_at_display_width(model, monkeypatch):
    import IPython

    monkeypatch.setenv("GPT_FROM_SCRATCH_STATIC", "1")
    monkeypatch.setattr(IPython, "get_ipython", lambda: FakeKernelShell())
    shown = []
    monkeypatch.setattr(wmod, "_display", shown.append)
    monkeypatch.setattr(matplotlib.pyplot, "show", lambda: pytest.fail("plt.show() in a kernel"))
    open_before = matplotlib.pyplot.get_fignums()
    AttentionExplorer.from_model(model, get_tokenizer(), "The clock").show()
    (image,) = shown
    # 2 tokens: figsize (1.2 + 0.55 * 2) inches wide = 230 CSS pixels, drawn with twice as many PNG pixels
    assert image.width == 230
    assert png_size(image.data)[0] == 460
    assert matplotlib.pyplot.get_fignums() == open_before  # the figure was closed


def test_widget_pictures_are_drawn_at_twice_their_display_width(model):
    pytest.importorskip("ipywidgets")
    box = GenerationPlayground(model, get_tokenizer()).widget("The clock", max_new_tokens=2)
    picture = box.children[-1]
    assert picture.layout.width == "600px"  # figsize (6, 3.2) inches at 100 CSS pixels per inch
    assert png_size(picture.value) == (1200, 640)
    assert picture.layout.max_width == "100%"  # shrinks in a narrow output rather than overflowing
    ex_box = AttentionExplorer.from_model(model, get_tokenizer(), "The clock struck nine").widget()
    width = int(ex_box.children[-1].layout.width.removesuffix("px"))
    assert width == round((1.2 + 0.55 * 4) * 100) and png_size(ex_box.children[-1].value)[0] == 2 * width


def test_labels_are_shown_in_full_and_controls_line_up(model):
    pytest.importorskip("ipywidgets")
    for box in (GenerationPlayground(model, get_tokenizer()).widget("The clock", max_new_tokens=2),
                AttentionExplorer.from_model(model, get_tokenizer(), "The clock").widget()):
        found = controls(box)
        widths = {c.style.description_width for c in found.values()}
        assert len(widths) == 1, widths  # one description width: the controls' left edges align
        (width,) = widths
        # about 0.6 em per character of a proportional font: the longest label fits
        assert float(width.removesuffix("em")) >= 0.5 * max(len(name) for name in found)
        # redraw when a drag or a typed prompt ends, not at every pixel or keystroke
        assert not any(getattr(c, "continuous_update", False) for c in found.values())


def test_outside_a_kernel_widgets_are_not_used(monkeypatch):
    monkeypatch.delenv("GPT_FROM_SCRATCH_STATIC", raising=False)
    assert wmod.widgets_supported() is False  # pytest is not a Jupyter kernel


def test_widgets_start_from_the_values_show_was_given(model, recording_playground):
    recording_playground.widget("Hello", 0.5, 7, 5, 9)
    assert recording_playground.runs == [("Hello", 0.5, 7, 5, 9)]
    ex = AttentionExplorer.from_model(model, get_tokenizer(), "The clock struck nine")
    box = ex.widget(layer=2, head=1, query=0)
    assert [controls(box)[name].value for name in ("layer", "head", "query")] == [2, 1, 0]
