"""Copying GPT-2 weights in Hugging Face's layout into a ``GPTModel``.

Hugging Face's ``GPT2LMHeadModel`` computes the same function as ``GPTModel`` but stores it
differently:

- its linear layers are ``Conv1D`` modules whose weight is ``(in, out)``, the transpose of
  ``nn.Linear``'s ``(out, in)``;
- query, key and value are one fused projection ``c_attn`` of width ``3 * emb_dim``, which we split
  into ``W_query``, ``W_key``, ``W_value`` (in that order);
- names differ: ``wte``/``wpe`` are ``tok_emb``/``pos_emb``, ``ln_1``/``ln_2``/``ln_f`` are
  ``norm1``/``norm2``/``final_norm`` with ``weight``/``bias`` for ``scale``/``shift``, ``mlp.c_fc`` and
  ``mlp.c_proj`` are ``ff.layers[0]`` and ``ff.layers[2]``, ``lm_head`` is ``out_head``.

The function takes a state dict, so it needs no network: tests build a random Hugging Face model
locally and check that both models then give the same logits.
"""

import torch


def _get(sd, key):
    for candidate in (key, "transformer." + key):
        if candidate in sd:
            return sd[candidate]
    raise KeyError(f"Hugging Face GPT-2 state dict has no {key!r} (nor 'transformer.{key}')")


def _assign(param, value, name):
    if param.shape != value.shape:
        raise ValueError(f"shape mismatch for {name}: model has {tuple(param.shape)}, checkpoint has {tuple(value.shape)}")
    with torch.no_grad():
        param.copy_(value)


def load_hf_gpt2_weights(model, state_dict):
    """Copy a Hugging Face GPT-2 ``state_dict`` into ``model`` (a ``GPTModel``) in place; returns ``model``.

    The model must have been built with ``qkv_bias=True`` (GPT-2's query/key/value projections have a
    bias) and the same sizes as the checkpoint. Without an ``lm_head.weight`` in the state dict the
    output head gets the token embedding, as GPT-2 ties the two.
    """
    if not model.cfg["qkv_bias"]:
        raise ValueError("GPT-2 checkpoints have query/key/value biases: build the model with qkv_bias=True")
    sd = {k: v.detach() for k, v in state_dict.items()}
    n_layers = len({k.split(".")[k.split(".").index("h") + 1] for k in sd if ".h." in f".{k}"})
    if n_layers != len(model.trf_blocks):
        raise ValueError(f"checkpoint has {n_layers} transformer blocks, the model has {len(model.trf_blocks)}")
    _assign(model.tok_emb.weight, _get(sd, "wte.weight"), "tok_emb.weight")
    _assign(model.pos_emb.weight, _get(sd, "wpe.weight"), "pos_emb.weight")

    for i, block in enumerate(model.trf_blocks):
        p = f"h.{i}."
        q_w, k_w, v_w = _get(sd, p + "attn.c_attn.weight").chunk(3, dim=-1)  # (d, 3d) -> 3 x (d, d)
        q_b, k_b, v_b = _get(sd, p + "attn.c_attn.bias").chunk(3, dim=-1)
        att = block.att
        for linear, w, b, name in ((att.W_query, q_w, q_b, "W_query"), (att.W_key, k_w, k_b, "W_key"),
                                   (att.W_value, v_w, v_b, "W_value")):
            _assign(linear.weight, w.T, f"trf_blocks.{i}.att.{name}.weight")
            _assign(linear.bias, b, f"trf_blocks.{i}.att.{name}.bias")
        pairs = [
            (att.out_proj.weight, _get(sd, p + "attn.c_proj.weight").T, "att.out_proj.weight"),
            (att.out_proj.bias, _get(sd, p + "attn.c_proj.bias"), "att.out_proj.bias"),
            (block.ff.layers[0].weight, _get(sd, p + "mlp.c_fc.weight").T, "ff.layers.0.weight"),
            (block.ff.layers[0].bias, _get(sd, p + "mlp.c_fc.bias"), "ff.layers.0.bias"),
            (block.ff.layers[2].weight, _get(sd, p + "mlp.c_proj.weight").T, "ff.layers.2.weight"),
            (block.ff.layers[2].bias, _get(sd, p + "mlp.c_proj.bias"), "ff.layers.2.bias"),
            (block.norm1.scale, _get(sd, p + "ln_1.weight"), "norm1.scale"),
            (block.norm1.shift, _get(sd, p + "ln_1.bias"), "norm1.shift"),
            (block.norm2.scale, _get(sd, p + "ln_2.weight"), "norm2.scale"),
            (block.norm2.shift, _get(sd, p + "ln_2.bias"), "norm2.shift"),
        ]
        for param, value, name in pairs:
            _assign(param, value, f"trf_blocks.{i}.{name}")

    _assign(model.final_norm.scale, _get(sd, "ln_f.weight"), "final_norm.scale")
    _assign(model.final_norm.shift, _get(sd, "ln_f.bias"), "final_norm.shift")
    head = sd.get("lm_head.weight", _get(sd, "wte.weight"))
    if model.out_head.weight is not model.tok_emb.weight:
        _assign(model.out_head.weight, head, "out_head.weight")
    return model
