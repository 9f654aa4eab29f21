"""Render every conceptual diagram of gpt_from_scratch.classroom.diagrams to a PNG in docs/diagrams/.

    python tools/render_diagrams.py            # all of them
    python tools/render_diagrams.py block      # only those whose file name contains "block"

The PNGs are what the notebooks show (same functions, same arguments), at the resolution of a
notebook's inline figures, so that a reviewer can look at them without running a notebook.
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gpt_from_scratch import GPT_CONFIG_124M  # noqa: E402
from gpt_from_scratch.classroom import diagrams  # noqa: E402
from gpt_from_scratch.llama import SMOLLM2_CONFIG_135M  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "docs" / "diagrams"

# file name -> (function, arguments): the calls the notebooks make
FIGURES = {
    "01_token_pipeline": (diagrams.draw_token_pipeline, {}),
    "02_attention_one_query": (diagrams.draw_attention_one_query, {}),
    "02_causal_mask": (diagrams.draw_causal_mask, {}),
    "02_multihead_split": (diagrams.draw_multihead_split, {"d_out": 768, "num_heads": 12}),
    "03_gpt_model_placeholder": (diagrams.draw_gpt_model, {"cfg": GPT_CONFIG_124M, "placeholder": True}),
    "04_gpt_model": (diagrams.draw_gpt_model, {"cfg": GPT_CONFIG_124M}),
    "04_transformer_block": (diagrams.draw_transformer_block, {"cfg": GPT_CONFIG_124M}),
    "05_generation_loop": (diagrams.draw_generation_loop, {"context_size": 1024}),
    "06_training_loop": (diagrams.draw_training_loop, {"batch_size": 8, "context_length": 32}),
    "07_kv_cache": (diagrams.draw_kv_cache, {"cfg": GPT_CONFIG_124M}),
    "08_gpt2_weight_mapping": (diagrams.draw_gpt2_weight_mapping, {"cfg": GPT_CONFIG_124M}),
    "09_llama_block": (diagrams.draw_llama_block, {"cfg": SMOLLM2_CONFIG_135M}),
    "10_lora": (diagrams.draw_lora, {"d_in": 576, "d_out": 576, "rank": 8}),
}


def main(patterns):
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (function, kwargs) in FIGURES.items():
        if patterns and not any(p in name for p in patterns):
            continue
        fig = function(**kwargs)
        path = OUT / f"{name}.png"
        # bbox_inches="tight" and dpi 100: what the inline backend of JupyterLab and Colab does
        fig.savefig(path, dpi=100, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        print(path.relative_to(OUT.parent.parent))


if __name__ == "__main__":
    main(sys.argv[1:])
