"""The conceptual diagrams: each draws, shows what its arguments say, stays legible.

They are lesson tooling called with fixed arguments, so they check none (issue 17)."""

import itertools
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from gpt_from_scratch import GPT_CONFIG_124M, GPT_CONFIG_1558M, GPT_CONFIG_TINY, get_tokenizer  # noqa: E402
from gpt_from_scratch.classroom import diagrams as dg  # noqa: E402
from gpt_from_scratch.llama import SMOLLM2_CONFIG_135M  # noqa: E402

# A Llama config of another shape: multi-query attention (1 key/value head), 4 blocks, small sizes.
LLAMA_TINY = {**SMOLLM2_CONFIG_135M, "emb_dim": 64, "n_heads": 4, "n_kv_groups": 1, "n_layers": 4, "hidden_dim": 160}

# Every figure the notebooks show, with the arguments they use, and a few other configurations.
CASES = {
    "token_pipeline": (dg.draw_token_pipeline, {}),
    "token_pipeline_long": (dg.draw_token_pipeline, {"text": "In the heart of the city stood the old library",
                                                     "max_length": 8, "emb_dim": 768, "batch_size": 2}),
    "token_pipeline_very_long": (dg.draw_token_pipeline, {"text": "Tobias Wren opened the green door at eight "
                                                          "o'clock every morning, as his father had done"}),
    "attention_one_query": (dg.draw_attention_one_query, {}),
    "attention_weights": (dg.draw_attention_one_query, {"query": 5, "weights": [0.1, 0.2, 0.3, 0.1, 0.1, 0.2]}),
    "attention_ten_tokens": (dg.draw_attention_one_query, {"tokens": list("abcdefghij"), "query": 9}),
    "causal_mask": (dg.draw_causal_mask, {}),
    "causal_mask_ten": (dg.draw_causal_mask, {"tokens": [f"token{i}" for i in range(10)]}),
    "multihead_small": (dg.draw_multihead_split, {}),
    "multihead_124M": (dg.draw_multihead_split, {"d_out": 768, "num_heads": 12}),
    "multihead_xl": (dg.draw_multihead_split, {"d_out": 1600, "num_heads": 25, "batch_size": 2, "num_tokens": 4}),
    "gpt_placeholder": (dg.draw_gpt_model, {"cfg": GPT_CONFIG_124M, "placeholder": True}),
    "gpt_124M": (dg.draw_gpt_model, {"cfg": GPT_CONFIG_124M}),
    "gpt_1558M_sized": (dg.draw_gpt_model, {"cfg": GPT_CONFIG_1558M, "batch_size": 2, "num_tokens": 4}),
    "gpt_one_layer": (dg.draw_gpt_model, {"cfg": {**GPT_CONFIG_TINY, "n_layers": 1}}),
    "block_124M": (dg.draw_transformer_block, {"cfg": GPT_CONFIG_124M}),
    "block_1558M_sized": (dg.draw_transformer_block, {"cfg": GPT_CONFIG_1558M, "batch_size": 2, "num_tokens": 4}),
    "generation": (dg.draw_generation_loop, {}),
    "generation_small": (dg.draw_generation_loop, {"context_size": 4, "max_new_tokens": 6}),
    "training": (dg.draw_training_loop, {}),
    "training_eval": (dg.draw_training_loop, {"batch_size": 128, "context_length": 1024, "eval_freq": 50}),
    "kv_cache": (dg.draw_kv_cache, {"cfg": GPT_CONFIG_124M}),
    "kv_cache_full": (dg.draw_kv_cache, {"cfg": GPT_CONFIG_1558M, "cached_tokens": 10}),
    "weight_mapping": (dg.draw_gpt2_weight_mapping, {"cfg": GPT_CONFIG_124M}),
    "llama_block": (dg.draw_llama_block, {"cfg": SMOLLM2_CONFIG_135M}),
    "llama_block_tiny_sized": (dg.draw_llama_block, {"cfg": LLAMA_TINY, "batch_size": 2, "num_tokens": 4}),
    "lora": (dg.draw_lora, {}),
    "lora_wide": (dg.draw_lora, {"d_in": 4096, "d_out": 11008, "rank": 64, "alpha": 128}),
}


def draw(name):
    function, kwargs = CASES[name]
    return function(**kwargs)


def texts(fig):
    """Every visible string in the figure, in drawing order."""
    return [t.get_text() for t in fig.findobj(Text) if t.get_text() and t.get_visible()]


def joined(fig):
    return "\n".join(texts(fig))


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.mark.parametrize("name", CASES)
def test_draws_a_legible_figure(name):
    """A Figure whose labels all lie inside it, never overlap one another, and are at least 9.5 pt; its
    legend names the three kinds of box."""
    fig = draw(name)
    assert isinstance(fig, Figure)
    for kind in ("tensor (data)", "learned weights", "operation"):
        assert kind in texts(fig)
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    page = fig.bbox
    boxes = []
    for text in fig.findobj(Text):
        if not text.get_text().strip() or not text.get_visible():
            continue
        assert text.get_fontsize() >= 9.5, (text.get_text(), text.get_fontsize())
        box = text.get_window_extent(renderer)
        assert page.x0 - 1 <= box.x0 and box.x1 <= page.x1 + 1, f"{text.get_text()!r} sticks out sideways"
        assert page.y0 - 1 <= box.y0 and box.y1 <= page.y1 + 1, f"{text.get_text()!r} sticks out at the top/bottom"
        if text.get_rotation() % 90 == 0:  # a slanted label's box is much larger than its glyphs: skip
            boxes.append((text.get_text(), box.shrunk(0.96, 0.9)))  # glyph boxes have some air around them
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        assert not box_a.overlaps(box_b), f"{a!r} overlaps {b!r}"


def test_the_three_kinds_have_distinct_okabe_ito_colours():
    okabe_ito = {"#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"}
    kinds = [dg.PALETTE[k] for k in ("tensor", "weight", "op")]
    assert len(set(kinds)) == 3 and set(kinds) <= okabe_ito


def test_token_pipeline_shows_gpt2s_ids_and_the_shifted_target():
    fig = dg.draw_token_pipeline("Every effort moves you forward", max_length=4, emb_dim=256, batch_size=8)
    labels = texts(fig)
    # The book's ids for "Every effort moves you" under GPT-2's BPE: 6109, 3626, 6100, 345.
    ids = get_tokenizer().encode("Every effort moves you forward")
    assert ids[:4] == [6109, 3626, 6100, 345]
    for i in ids:
        assert str(i) in labels
    # every id of the input row and of the target row, so the first id appears twice (ids + input) and
    # the last twice (ids + target), the middle ones three times
    assert labels.count(str(ids[0])) == 2 and labels.count(str(ids[4])) == 2
    assert all(labels.count(str(i)) == 3 for i in ids[1:4])
    assert "\u2423effort" in labels  # the leading space, made visible
    text = joined(fig)
    for shape in ("(8, 4)", "(8, 4, 256)", "(4, 256)", "Embedding(50257, 256)", "Embedding(4, 256)"):
        assert shape in text, shape


def test_token_pipeline_follows_its_arguments():
    text = joined(dg.draw_token_pipeline("one two three four five six seven", max_length=6, emb_dim=12,
                                         batch_size=3))
    assert "(3, 6, 12)" in text and "Embedding(6, 12)" in text and "max_length = 6" in text


def test_attention_diagram_follows_query_sizes_and_weights():
    text = joined(dg.draw_attention_one_query(query=1, d_in=3, d_out=2))
    assert "'journey'" in text and "(6, 3)" in text and "(6, 2)" in text and "√2" in text
    text = joined(dg.draw_attention_one_query(["a", "b", "c"], query=2, d_in=5, d_out=4))
    assert "'c'" in text and "(3, 5)" in text and "(5, 4)" in text and "(3, 4)" in text and "√4" in text
    assert "$z^{(3)}$" in text  # the formulas count from 1
    labels = texts(dg.draw_attention_one_query(query=5, weights=[0.1, 0.2, 0.3, 0.1, 0.1, 0.2]))
    assert [s for s in labels if s in ("0.10", "0.20", "0.30")] == ["0.10", "0.20", "0.30", "0.10", "0.10", "0.20"]


def test_causal_mask_hides_exactly_the_future():
    for n in (2, 6, 8):
        labels = texts(dg.draw_causal_mask([f"w{i}" for i in range(n)]))
        # above the diagonal: n (n - 1) / 2 cells in each of the two grids
        assert labels.count("−∞") == n * (n - 1) // 2
        assert labels.count("0") == n * (n - 1) // 2
        plt.close("all")


def test_multihead_split_follows_the_sizes():
    text = joined(dg.draw_multihead_split(d_out=768, num_heads=12))
    assert "12 heads of 64" in text and ".view(b, t, 12, 64)" in text and "(b, 12, t, 64)" in text
    assert "Linear(768, 768)" in text
    labels = texts(dg.draw_multihead_split(d_out=4, num_heads=2, batch_size=2, num_tokens=6))
    assert "head 0" in labels and "head 1" in labels and "(2, 2, 6, 2)\none slice per head" in labels
    labels = texts(dg.draw_multihead_split(d_out=1600, num_heads=25))
    assert "24" in labels and "…" in labels and "12" not in labels  # the middle heads are summarised


def test_gpt_model_follows_the_config():
    text = joined(dg.draw_gpt_model(GPT_CONFIG_124M))
    assert "12 × TransformerBlock" in text and "(b, t, 768)" in text and "(b, t, 50257)" in text
    assert "Embedding(1024, 768)" in text and "Dropout(0.1)" in text
    text = joined(dg.draw_gpt_model(GPT_CONFIG_TINY, batch_size=2, num_tokens=4))
    assert "2 × TransformerBlock" in text and "(2, 4, 64)" in text and "Embedding(64, 64)" in text
    assert "(b, t, 768)" not in text
    text = joined(dg.draw_gpt_model(GPT_CONFIG_124M, placeholder=True))
    assert "DummyTransformerBlock" in text and "DummyLayerNorm" in text and "LayerNorm(768)" not in text


def test_transformer_block_follows_the_config():
    text = joined(dg.draw_transformer_block(GPT_CONFIG_124M))
    for part in ("norm1", "norm2", "att", "ff", "drop_shortcut", "shortcut 1", "shortcut 2", "12 heads × 64",
                 "Linear(768, 3072)", "(b, t, 3072)", "LayerNorm(768)", "one of 12"):
        assert part in text, part
    text = joined(dg.draw_transformer_block(GPT_CONFIG_1558M, batch_size=2, num_tokens=4))
    assert "25 heads × 64" in text and "(2, 4, 1600)" in text and "Linear(1600, 6400)" in text and "one of 48" in text


def test_loops_follow_their_sizes():
    text = joined(dg.draw_generation_loop(context_size=4, vocab_size=100, max_new_tokens=6))
    assert "idx[:, -4:]" in text and "(b, 100)" in text and "repeat 6 times" in text
    text = joined(dg.draw_training_loop(batch_size=2, context_length=3, vocab_size=7, eval_freq=5))
    assert "input (2, 3)" in text and "(2, 3, 7)" in text and "(6, 7)" in text and "every 5 steps" in text


def test_kv_cache_diagram_states_the_memory_formula():
    # 2 (keys and values) x 12 layers x 768 numbers x 4 bytes = 73,728 bytes = 72 KiB per token;
    # x 1024 tokens = 72 MiB
    text = joined(dg.draw_kv_cache(GPT_CONFIG_124M, cached_tokens=4))
    assert "72 KiB per token" in text and "72 MiB at 1024 tokens" in text
    assert "(b, 12, 5, 64)" in text and "step 5" in text
    # GPT-2 XL: 2 x 48 x 1600 x 4 = 614,400 bytes = 600 KiB per token; x 1024 = 600 MiB
    text = joined(dg.draw_kv_cache(GPT_CONFIG_1558M, cached_tokens=2))
    assert "600 KiB per token" in text and "600 MiB at 1024 tokens" in text and "(b, 25, 3, 64)" in text


def test_weight_mapping_shows_conv1d_shapes_transposed():
    text = joined(dg.draw_gpt2_weight_mapping(GPT_CONFIG_124M))
    # GPT-2 small's checkpoint: c_attn (768, 2304), c_fc (768, 3072), c_proj of the MLP (3072, 768)
    for part in ("(768, 2304)", "mlp.c_fc.weight\n", "(3072, 768)", "(768, 3072)", "att.W_query.weight",
                 "ff.layers[2].weight", ".chunk(3,\ndim=-1)"):
        assert part in text or part.strip() in text, part
    assert "(1600, 4800)" in joined(dg.draw_gpt2_weight_mapping(GPT_CONFIG_1558M))


def test_llama_block_follows_the_config_and_marks_the_changes():
    fig = dg.draw_llama_block(SMOLLM2_CONFIG_135M)
    text = joined(fig)
    for part in ("norm1", "norm2", "RMSNorm(576)", "GroupedQueryAttention\n9 query heads, 3 k/v heads", "RoPE",
                 "head size 64", "serves 3 query heads", "Linear(576, 1536)", "Linear(1536, 576)", "(b, t, 1536)",
                 "SiLU", "×", "one of 30", "shortcut 1", "shortcut 2", "no dropout, no biases"):
        assert part in text, part
    assert "LayerNorm" not in text and "Dropout" not in text
    # the changed parts (two norms, attention) have vermillion edges; GPT-2's shortcuts are still blue
    accent = matplotlib.colors.to_rgba(dg.PALETTE["accent"])
    edged = [p for p in fig.axes[0].patches if tuple(p.get_edgecolor()) == accent]
    assert len(edged) >= 4
    text = joined(dg.draw_llama_block(LLAMA_TINY, batch_size=2, num_tokens=4))
    assert "4 query heads, 1 k/v heads" in text and "serves 4 query heads" in text and "head size 16" in text
    assert "(2, 4, 64)" in text and "(2, 4, 160)" in text and "Linear(64, 160)" in text and "one of 4" in text


def test_the_heads_alternate_two_shades_of_the_tensor_colour():
    fig = dg.draw_multihead_split(d_out=8, num_heads=4)
    fills = {tuple(round(c, 3) for c in p.get_facecolor()[:3]) for p in fig.findobj(Rectangle)
             if p.get_edgecolor()[:3] == matplotlib.colors.to_rgb(dg.PALETTE["tensor"])}
    assert len(fills) >= 2


def test_importing_the_package_does_not_import_matplotlib():
    code = ("import sys, gpt_from_scratch; print('matplotlib' in sys.modules, "
            "'gpt_from_scratch.classroom.diagrams' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_the_render_script_draws_every_diagram():
    """tools/render_diagrams.py renders docs/diagrams/: it must not forget a diagram."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "tools" / "render_diagrams.py"
    spec = importlib.util.spec_from_file_location("render_diagrams", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rendered = {function.__name__ for function, _ in module.FIGURES.values()}
    assert rendered == {name for name in dg.__all__ if name.startswith("draw_")}
    for name in module.FIGURES:
        assert (path.parent.parent / "docs" / "diagrams" / f"{name}.png").exists(), name


def test_lora_diagram_counts_the_two_paths():
    text = joined(dg.draw_lora(d_in=576, d_out=192, rank=8))
    assert "(8, 576)" in text and "(192, 8)" in text and "110,592" in text and "6,144 (5.6%)" in text
