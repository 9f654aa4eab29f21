"""Insert the conceptual diagrams of gpt_from_scratch.diagrams into notebooks 01-06 (sources only).

    python tools/insert_diagram_cells.py

Each diagram goes right after an existing cell, found by its id, where its idea is introduced. The
script edits cell sources only and leaves every other cell and output alone; it is idempotent (a
diagram already in the notebook is not inserted again), so it can be re-run after a merge that lost
the cells. Re-execute the notebooks afterwards (``python tools/notebooks.py execute``).
"""

from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

# notebook -> [(id of the cell to insert after, markdown before the figure or None, code of the figure)]
INSERTS = {
    "01_tokens_and_embeddings.ipynb": [
        ("d089bec3",
         "The whole path of this notebook in one picture, on the series' example sentence: text, tokens, "
         "ids, one\n(input, target) window, and the embeddings the model starts from. Blue boxes are tensors "
         "(data), orange\nones hold learned weights, green ones are operations; every diagram of the series "
         "uses these colours.",
         'from gpt_from_scratch.diagrams import draw_token_pipeline\n\n'
         'draw_token_pipeline("Every effort moves you forward", max_length=4, emb_dim=256, batch_size=8)\n'
         'plt.show()'),
    ],
    "02_causal_multihead_attention.ipynb": [
        ("9cc4f9e2",
         "The whole computation for the query \"journey\", drawn: three weight matrices make queries, keys "
         "and values;\nthe query's scores against every key become weights through softmax; the weights "
         "mix the values into\nthe context vector $z^{(2)}$.",
         "from gpt_from_scratch.diagrams import draw_attention_one_query\n\n"
         "draw_attention_one_query(tokens, query=1, d_in=3, d_out=2)\n"
         "plt.show()"),
        ("f5a0422e",
         None,
         "from gpt_from_scratch.diagrams import draw_causal_mask\n\n"
         "draw_causal_mask(tokens)  # rows: queries, columns: keys\n"
         "plt.show()"),
        ("c5faf0ef",
         "The steps that follow, drawn for these sizes: the `d_out` numbers of each token are cut into "
         "`num_heads`\nslices, every head attends on its own slice, and the slices are put side by side "
         "again.",
         "from gpt_from_scratch.diagrams import draw_multihead_split\n\n"
         "draw_multihead_split(d_out=mha.d_out, num_heads=num_heads, batch_size=b, num_tokens=num_tokens)\n"
         "plt.show()"),
    ],
    "03_placeholder_gpt.ipynb": [
        ("f6f5e12c",
         "The same wiring as a picture, with the shapes on the arrows (dashed: the placeholders, which "
         "return their\ninput):",
         "from gpt_from_scratch.diagrams import draw_gpt_model\n\n"
         "draw_gpt_model(GPT_CONFIG_124M, placeholder=True)\n"
         "plt.show()"),
    ],
    "04_transformer_block.ipynb": [
        ("da7367a6",
         None,
         "from gpt_from_scratch.diagrams import draw_transformer_block\n\n"
         "draw_transformer_block(GPT_CONFIG_124M, batch_size=2, num_tokens=4)  # the sizes of the cell below\n"
         "plt.show()"),
        ("83f98ef3",
         None,
         "from gpt_from_scratch.diagrams import draw_gpt_model\n\n"
         "draw_gpt_model(GPT_CONFIG_124M)\n"
         "plt.show()"),
    ],
    "05_greedy_generation.ipynb": [
        ("ee7613ce",
         None,
         "from gpt_from_scratch.diagrams import draw_generation_loop\n\n"
         "draw_generation_loop(context_size=GPT_CONFIG_124M[\"context_length\"], max_new_tokens=6)\n"
         "plt.show()"),
    ],
    "06_pretraining.ipynb": [
        ("2ff332ae",
         None,
         "from gpt_from_scratch.diagrams import draw_training_loop\n\n"
         "draw_training_loop(batch_size=BATCH_SIZE, context_length=CONTEXT, vocab_size=cfg[\"vocab_size\"])\n"
         "plt.show()"),
    ],
}

# Cells whose text moves so that a diagram can sit where its idea is introduced:
# (notebook, cell id, paragraph moved out of that cell into a new markdown cell after the diagram).
MOVED = {
    ("02_causal_multihead_attention.ipynb", "f5a0422e"):
        "Here are the attention weights of `sa_v2` before any masking, computed step by step with its layers:",
}


def main():
    for name, inserts in INSERTS.items():
        path = NOTEBOOKS / name
        nb = nbformat.read(path, as_version=4)
        changed = False
        for anchor, markdown, code in inserts:
            function = code.split("import ")[1].split("\n")[0]
            if any(c.cell_type == "code" and f"{function}(" in c.source for c in nb.cells):
                continue
            index = next(i for i, c in enumerate(nb.cells) if c.get("id") == anchor)
            new = ([nbformat.v4.new_markdown_cell(markdown)] if markdown else []) + [nbformat.v4.new_code_cell(code)]
            moved = MOVED.get((name, anchor))
            if moved and moved in nb.cells[index].source:
                nb.cells[index].source = nb.cells[index].source.replace(moved, "").rstrip() + "\n"
                nb.cells[index].source = nb.cells[index].source.rstrip("\n")
                new.append(nbformat.v4.new_markdown_cell(moved))
            nb.cells[index + 1 : index + 1] = new
            changed = True
            print(f"{name}: {function} after cell {anchor}")
        if changed:
            nbformat.write(nb, path)


if __name__ == "__main__":
    main()
