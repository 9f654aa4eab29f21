"""Copying GPT-2 weights in Hugging Face's layout into a ``GPTModel``.

Hugging Face's ``GPT2LMHeadModel`` computes the same function as ``GPTModel`` but stores it
differently:

- its linear layers are ``Conv1D`` modules whose weight is ``(in, out)``, the transpose of
  ``nn.Linear``'s ``(out, in)``: the keys in ``TRANSPOSED``;
- query, key and value are one fused projection ``c_attn`` of width ``3 * emb_dim``, which we split
  into ``W_query``, ``W_key``, ``W_value`` (in that order);
- names differ (``KEYS``): ``wte``/``wpe`` are ``tok_emb``/``pos_emb``, ``ln_1``/``ln_2``/``ln_f`` are
  ``norm1``/``norm2``/``final_norm`` with ``weight``/``bias`` for ``scale``/``shift``, ``mlp.c_fc`` and
  ``mlp.c_proj`` are ``ff.layers[0]`` and ``ff.layers[2]``; the output head is tied to ``wte``.

``load_hf_gpt2_weights`` takes a state dict, so it needs no network: tests build a random Hugging
Face model locally and check that both models then give the same logits. Reading OpenAI's files
from the Hub or from disk is ``pretrained.py``'s job.
"""

import torch

# Conv1D weights, stored (in, out): transposed on the way in.
TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")

# Hugging Face's key -> ours. In a block, "h.N." becomes "trf_blocks.N."; c_attn feeds three layers.
KEYS = {
    "wte.weight": "tok_emb.weight", "wpe.weight": "pos_emb.weight",
    "ln_1.weight": "norm1.scale", "ln_1.bias": "norm1.shift",
    "attn.c_attn.weight": ("att.W_query.weight", "att.W_key.weight", "att.W_value.weight"),
    "attn.c_attn.bias": ("att.W_query.bias", "att.W_key.bias", "att.W_value.bias"),
    "attn.c_proj.weight": "att.out_proj.weight", "attn.c_proj.bias": "att.out_proj.bias",
    "ln_2.weight": "norm2.scale", "ln_2.bias": "norm2.shift",
    "mlp.c_fc.weight": "ff.layers.0.weight", "mlp.c_fc.bias": "ff.layers.0.bias",
    "mlp.c_proj.weight": "ff.layers.2.weight", "mlp.c_proj.bias": "ff.layers.2.bias",
    "ln_f.weight": "final_norm.scale", "ln_f.bias": "final_norm.shift",
}


def load_hf_gpt2_weights(model, state_dict, source="checkpoint"):
    """Copy a Hugging Face GPT-2 ``state_dict`` into ``model`` (a ``GPTModel``) in place; returns ``model``.

    The model must have been built with ``qkv_bias=True`` (GPT-2's query/key/value projections have a
    bias) and the same sizes as the checkpoint (checked first, key by key, against
    :func:`hub_layout_shapes`). Keys may carry transformers' ``transformer.`` prefix. Without an
    ``lm_head.weight`` in the state dict the output head gets the token embedding, as GPT-2 ties them.
    Any mapping works, also one that reads each tensor from disk only when asked for: every tensor is
    fetched, copied into the model and dropped in turn. ``source`` names it in error messages.
    """
    if not model.cfg["qkv_bias"]:
        raise ValueError("GPT-2 checkpoints have query/key/value biases: build the model with qkv_bias=True")
    names = {key.removeprefix("transformer."): key for key in state_dict.keys()}  # Hub key -> key in state_dict
    check_hub_layout(names, state_dict, model.cfg, source)
    blocks = {key.split(".")[1] for key in names if key.startswith("h.")}
    if len(blocks) != model.cfg["n_layers"]:
        raise ValueError(f"{source} has {len(blocks)} transformer blocks, the model has {model.cfg['n_layers']}")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for hf_key in hub_layout_shapes(model.cfg):  # "wte.weight", ..., "h.0.ln_1.weight", ...
            if hf_key.startswith("h."):
                _, block, name = hf_key.split(".", 2)  # "h", "0", "ln_1.weight"
                prefix = f"trf_blocks.{block}."
            else:
                prefix, name = "", hf_key
            tensor = state_dict[names[hf_key]]
            if name in TRANSPOSED:
                tensor = tensor.T  # (in, out) -> (out, in)
            ours = KEYS[name] if isinstance(KEYS[name], tuple) else (KEYS[name],)
            for our_key, part in zip(ours, tensor.chunk(len(ours), dim=0)):  # c_attn: q, k, v one after another
                params[prefix + our_key].copy_(part)
        if model.out_head.weight is not model.tok_emb.weight:
            model.out_head.weight.copy_(state_dict[names.get("lm_head.weight", names["wte.weight"])])
    return model


def hub_layout_shapes(cfg):
    """The keys and shapes of a GPT-2 file in the Hub's layout, for config ``cfg``, in file order.

    Conv1D weights are ``(in, out)``; ``c_attn`` holds query, key and value side by side. Leaves out the
    masks (``h.N.attn.bias``) and ``lm_head.weight``, which the Hub's files may or may not hold.
    """
    d, shapes = cfg["emb_dim"], {"wte.weight": (cfg["vocab_size"], cfg["emb_dim"]),
                                 "wpe.weight": (cfg["context_length"], cfg["emb_dim"])}
    for i in range(cfg["n_layers"]):
        for name, shape in (("ln_1.weight", (d,)), ("ln_1.bias", (d,)),
                            ("attn.c_attn.weight", (d, 3 * d)), ("attn.c_attn.bias", (3 * d,)),
                            ("attn.c_proj.weight", (d, d)), ("attn.c_proj.bias", (d,)),
                            ("ln_2.weight", (d,)), ("ln_2.bias", (d,)),
                            ("mlp.c_fc.weight", (d, 4 * d)), ("mlp.c_fc.bias", (4 * d,)),
                            ("mlp.c_proj.weight", (4 * d, d)), ("mlp.c_proj.bias", (d,))):
            shapes[f"h.{i}.{name}"] = shape
    shapes.update({"ln_f.weight": (d,), "ln_f.bias": (d,)})
    return shapes


def check_hub_layout(names, tensors, cfg, source="checkpoint"):
    """Raise a ValueError naming the first key (in file order) that ``source`` lacks or holds with
    another shape than a GPT-2 of config ``cfg`` needs. ``names``: Hub key -> key in ``tensors``."""
    sizes = (f"{cfg['n_layers']} layers, width {cfg['emb_dim']}, vocabulary {cfg['vocab_size']}, "
             f"context {cfg['context_length']}")
    expected = hub_layout_shapes(cfg)
    expected["lm_head.weight"] = expected["wte.weight"]  # optional: GPT-2 ties it
    shape = getattr(tensors, "shape", None) or (lambda key: tuple(tensors[key].shape))
    for key, needed in expected.items():
        if key not in names:
            if key == "lm_head.weight":
                continue
            raise ValueError(f"{source} has no {key!r}, which a GPT-2 of {sizes} needs")
        got = shape(names[key])
        if got != tuple(needed):
            raise ValueError(f"{source}: {names[key]!r} has shape {got}, but a GPT-2 of {sizes} needs {tuple(needed)}")
