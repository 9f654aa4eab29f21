"""Real weights for :class:`~gpt_from_scratch.llama.LlamaModel`: GGUF files and transformers' state dicts.

GGUF is llama.cpp's file format: one file holding the configuration (key/value *metadata*, e.g.
``llama.block_count = 30``), the tokenizer and the tensors, many of them quantized. We read it with
``gguf``, llama.cpp's own Python reader (pure Python and numpy), which maps the file into memory
(``np.memmap``): a tensor's bytes are read from disk only when we dequantize that tensor, one at a
time, so loading never holds the file and the model twice.

Quantized formats store blocks of 32 weights. ``Q4_1`` (most of SmolLM2's matrices): per block a scale
``d`` and a minimum ``m`` (float16) and 32 codes of 4 bits, weight = ``d * code + m``; ``Q8_0``
(its embedding): a scale and 32 signed bytes, weight = ``d * code``. ``gguf.quants.dequantize`` turns
them back into float32, exactly the numbers llama.cpp and transformers compute from the same file.

Two details of the layout:

- ``t.shape`` in GGUF lists the fastest-varying dimension first (ggml's convention), so a PyTorch
  ``nn.Linear`` weight ``(out, in)`` is stored with shape ``[in, out]``: reverse it.
- llama.cpp rotates query and key features in interleaved pairs (features 2i, 2i+1), transformers and
  ``LlamaModel`` in split halves (i, i + head_dim/2). The converter that wrote the file therefore
  reordered the rows of ``attn_q`` and ``attn_k`` within each head; :func:`unpermute_qk` puts them back.
"""

import os
from pathlib import Path

import numpy as np
import torch

from .llama import LlamaModel, rope_angles, validate_llama_config

# GGUF tensor names -> LlamaModel's; "blk.N." prefixes the per-block ones.
GGUF_BLOCK_NAMES = {
    "attn_norm.weight": "norm1.weight",
    "attn_q.weight": "att.W_query.weight",
    "attn_k.weight": "att.W_key.weight",
    "attn_v.weight": "att.W_value.weight",
    "attn_output.weight": "att.out_proj.weight",
    "ffn_norm.weight": "norm2.weight",
    "ffn_gate.weight": "ff.fc1.weight",
    "ffn_up.weight": "ff.fc2.weight",
    "ffn_down.weight": "ff.fc3.weight",
}
GGUF_TOP_NAMES = {"token_embd.weight": "tok_emb.weight", "output_norm.weight": "final_norm.weight",
                  "output.weight": "out_head.weight"}

# transformers' LlamaForCausalLM names -> LlamaModel's; "model.layers.N." prefixes the per-block ones.
HF_BLOCK_NAMES = {
    "input_layernorm.weight": "norm1.weight",
    "self_attn.q_proj.weight": "att.W_query.weight",
    "self_attn.k_proj.weight": "att.W_key.weight",
    "self_attn.v_proj.weight": "att.W_value.weight",
    "self_attn.o_proj.weight": "att.out_proj.weight",
    "post_attention_layernorm.weight": "norm2.weight",
    "mlp.gate_proj.weight": "ff.fc1.weight",
    "mlp.up_proj.weight": "ff.fc2.weight",
    "mlp.down_proj.weight": "ff.fc3.weight",
}
HF_TOP_NAMES = {"model.embed_tokens.weight": "tok_emb.weight", "model.norm.weight": "final_norm.weight",
                "lm_head.weight": "out_head.weight"}


class GGUFError(ValueError):
    """A GGUF file that cannot be loaded; the message is one line naming the file and the reason."""


# --- the q/k permutation ----------------------------------------------------------------------------

def unpermute_qk(w, n_heads):
    """Rows of a GGUF ``attn_q``/``attn_k`` weight ``(n_heads * head_dim, d)`` -> transformers' order.

    Within each head, the file's row order is ``0, half, 1, half+1, ...`` (pairs side by side, for the
    interleaved RoPE); we want ``0, 1, ..., half-1, half, ...`` (split halves). Per head, view the rows
    as ``(head_dim/2, 2)`` and transpose to ``(2, head_dim/2)``. Works on numpy arrays and tensors.
    """
    rows, d = w.shape
    head_dim = rows // n_heads
    return w.reshape(n_heads, head_dim // 2, 2, d).swapaxes(1, 2).reshape(rows, d)


def permute_qk(w, n_heads):
    """The inverse of :func:`unpermute_qk`: what llama.cpp's converter does when it writes the file."""
    rows, d = w.shape
    head_dim = rows // n_heads
    return w.reshape(n_heads, 2, head_dim // 2, d).swapaxes(1, 2).reshape(rows, d)


# --- reading a GGUF file --------------------------------------------------------------------------------

def open_gguf(path):
    """A ``gguf.GGUFReader`` for ``path``, or a one-line :class:`GGUFError` (missing, not GGUF, truncated)."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    try:
        reader = gguf.GGUFReader(path)
    except Exception as err:  # gguf raises several kinds: ValueError, IndexError, KeyError, ...
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        with open(path, "rb") as f:
            is_gguf = f.read(4) == b"GGUF"
        if not is_gguf:
            raise GGUFError(f"{path} is not a GGUF file (it does not start with the bytes 'GGUF')") from None
        # The reader views every tensor's bytes as it opens the file: a file cut short fails there.
        raise GGUFError(f"{path} is truncated or damaged ({reason}); fetch it again") from None
    return reader


def gguf_field(reader, key, default=None):
    """The value of metadata ``key`` (a number, a string or a list), or ``default`` if absent."""
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def gguf_llama_config(reader, path="the file"):
    """The ``LlamaModel`` config described by a GGUF's ``llama.*`` metadata (any Llama-architecture file)."""
    arch = gguf_field(reader, "general.architecture")
    if arch != "llama":
        raise GGUFError(f"{path} holds a model of architecture {arch!r}; only 'llama' GGUF files load into "
                        "LlamaModel")

    def get(key, default=None):
        value = gguf_field(reader, f"llama.{key}", default)
        if value is None:
            raise GGUFError(f"{path} lacks the metadata llama.{key}")
        return value

    n_heads = get("attention.head_count")
    emb_dim = get("embedding_length")
    head_dim = emb_dim // n_heads
    if get("rope.dimension_count", head_dim) != head_dim:
        raise GGUFError(f"{path}: RoPE on {get('rope.dimension_count')} of {head_dim} head dimensions is not supported")
    scaling = gguf_field(reader, "llama.rope.scaling.type", "none")
    if scaling not in ("none", None):
        raise GGUFError(f"{path}: RoPE scaling {scaling!r} is not supported")
    embedding = next(t for t in reader.tensors if t.name == "token_embd.weight")
    cfg = {
        "vocab_size": int(gguf_field(reader, "llama.vocab_size", int(embedding.shape[1]))),
        "context_length": int(get("context_length")),
        "emb_dim": int(emb_dim),
        "n_heads": int(n_heads),
        "n_kv_groups": int(get("attention.head_count_kv", n_heads)),
        "n_layers": int(get("block_count")),
        "hidden_dim": int(get("feed_forward_length")),
        "rope_base": float(get("rope.freq_base", 10000.0)),
        # stored as float32: 1e-5 reads back as 9.99999974e-06; round to the number that was meant
        "rms_norm_eps": float(f"{get('attention.layer_norm_rms_epsilon'):.6g}"),
        "tie_weights": not any(t.name == "output.weight" for t in reader.tensors),
    }
    return validate_llama_config(cfg)


def _dequantize(tensor, path, rows_per_chunk=4096):
    """One GGUF tensor -> a float32 numpy array in PyTorch's shape (dimensions reversed).

    Large matrices are dequantized ``rows_per_chunk`` rows at a time into the result, so the
    temporaries of ``gguf.quants.dequantize`` stay small (the embedding alone is 113 MB in float32).
    """
    import gguf

    shape = tuple(int(n) for n in reversed(tensor.shape))
    data = tensor.data  # a view of the memory-mapped file; rows along its first axis
    try:
        if data.ndim < 2 or len(data) <= rows_per_chunk:
            values = gguf.quants.dequantize(data, tensor.tensor_type).astype(np.float32, copy=False).reshape(shape)
            # F32 tensors come back as views of the read-only memory map: copy those (small: the norms)
            return values if values.flags.writeable else values.copy()
        values = np.empty(shape, dtype=np.float32)
        flat = values.reshape(len(data), -1)  # a view: one row of the file per row
        for start in range(0, len(data), rows_per_chunk):
            chunk = gguf.quants.dequantize(data[start:start + rows_per_chunk], tensor.tensor_type)
            flat[start:start + len(chunk)] = chunk.reshape(len(chunk), -1)
        return values
    except NotImplementedError:
        raise GGUFError(f"{path}: tensor {tensor.name} is of type {tensor.tensor_type.name}, which the gguf "
                        f"package {gguf_version()} cannot dequantize; convert the file to another type "
                        "(e.g. Q8_0, Q4_K or F16)") from None


def gguf_version():
    try:
        from importlib.metadata import version

        return version("gguf")
    except Exception:
        return "installed"


def gguf_state_dict(reader, cfg, path="the file"):
    """Yield ``(name, tensor)`` for every tensor, dequantized one at a time, in LlamaModel's names.

    Only one tensor is dequantized at a time; ``attn_q``/``attn_k`` are unpermuted here.
    """
    for tensor in reader.tensors:
        name = tensor.name
        if name in GGUF_TOP_NAMES:
            ours = GGUF_TOP_NAMES[name]
        else:
            parts = name.split(".", 2)
            if parts[0] != "blk" or len(parts) < 3 or parts[2] not in GGUF_BLOCK_NAMES:
                if name.startswith("rope_freqs"):  # Llama 3's scaled frequencies: refused in the config
                    raise GGUFError(f"{path}: tensor {name} (RoPE scaling) is not supported")
                raise GGUFError(f"{path}: unexpected tensor {name!r} for a Llama model")
            ours = f"trf_blocks.{parts[1]}.{GGUF_BLOCK_NAMES[parts[2]]}"
        values = _dequantize(tensor, path)
        if name.endswith("attn_q.weight"):
            values = unpermute_qk(values, cfg["n_heads"])
        elif name.endswith("attn_k.weight"):
            values = unpermute_qk(values, cfg["n_kv_groups"])
        yield ours, torch.from_numpy(np.ascontiguousarray(values))


def load_llama_gguf(path, dtype=torch.float32, use_sdpa=True):
    """A :class:`LlamaModel` in eval mode with the weights of a Llama-architecture GGUF file.

    The config comes from the file's metadata. The model is built on PyTorch's ``meta`` device (shapes,
    no memory, no random initialisation) and each dequantized tensor becomes its parameter as it is
    read (``load_state_dict(assign=True)``), so the peak memory is about the fp32 model plus the file's
    pages and one tensor in flight.

    Errors, each one line: a missing file (``FileNotFoundError``), not a GGUF or truncated, another
    architecture, a tensor type ``gguf`` cannot dequantize, missing or misshapen tensors (``GGUFError``).
    """
    reader = open_gguf(path)
    cfg = gguf_llama_config(reader, path)
    with torch.device("meta"):
        model = LlamaModel(cfg, use_sdpa=use_sdpa)
    expected = {name: p.shape for name, p in model.named_parameters()}  # out_head absent when tied
    state = {}
    for name, value in gguf_state_dict(reader, cfg, path):
        if name not in expected:
            raise GGUFError(f"{path}: unexpected tensor {name} (the config has {cfg['n_layers']} blocks)")
        if value.shape != expected[name]:
            raise GGUFError(f"{path}: tensor {name} has shape {tuple(value.shape)}, the config implies "
                            f"{tuple(expected[name])}")
        state[name] = value if dtype == torch.float32 else value.to(dtype)
    del reader  # closes the memory map once the last tensor is read
    missing = sorted(set(expected) - set(state))
    if missing:
        raise GGUFError(f"{path} lacks {len(missing)} tensor(s), e.g. {missing[0]}")
    if cfg["tie_weights"]:
        state["out_head.weight"] = state["tok_emb.weight"]
    return _finish(model, state, cfg)


def _finish(model, state, cfg):
    """Put ``state`` into a meta-device ``model``: assign the tensors, re-tie the head, compute RoPE."""
    model.load_state_dict(state, strict=True, assign=True)
    if cfg["tie_weights"]:
        model.out_head.weight = model.tok_emb.weight  # assign=True made two parameters of one tensor
    dtype = model.tok_emb.weight.dtype
    cos, sin = rope_angles(cfg["emb_dim"] // cfg["n_heads"], cfg["context_length"], cfg["rope_base"])
    model.cos, model.sin = cos, sin  # buffers (not saved): the meta device gave them no values
    return model.to(dtype).eval()


# --- transformers' state dicts --------------------------------------------------------------------

def llama_config_from_hf(hf_config):
    """A ``LlamaModel`` config from a transformers ``LlamaConfig`` (only plain RoPE: no scaling)."""
    rope = getattr(hf_config, "rope_parameters", None) or {}
    rope_type = rope.get("rope_type", "default")
    if rope_type != "default":
        raise ValueError(f"RoPE type {rope_type!r} is not supported (LlamaModel implements the plain RoPE)")
    theta = rope.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    return validate_llama_config({
        "vocab_size": hf_config.vocab_size,
        "context_length": hf_config.max_position_embeddings,
        "emb_dim": hf_config.hidden_size,
        "n_heads": hf_config.num_attention_heads,
        "n_kv_groups": hf_config.num_key_value_heads,
        "n_layers": hf_config.num_hidden_layers,
        "hidden_dim": hf_config.intermediate_size,
        "rope_base": float(theta),
        "rms_norm_eps": float(hf_config.rms_norm_eps),
        "tie_weights": bool(hf_config.tie_word_embeddings),
    })


def hf_to_llama_state_dict(hf_state_dict):
    """Rename a transformers ``LlamaForCausalLM`` state dict to ``LlamaModel``'s names (same tensors)."""
    state = {}
    for name, value in hf_state_dict.items():
        if name in HF_TOP_NAMES:
            state[HF_TOP_NAMES[name]] = value
        elif name.startswith("model.layers."):
            index, rest = name[len("model.layers."):].split(".", 1)
            if rest not in HF_BLOCK_NAMES:
                raise ValueError(f"unexpected tensor {name!r} in a Llama state dict (biases are not supported)")
            state[f"trf_blocks.{index}.{HF_BLOCK_NAMES[rest]}"] = value
        elif not name.endswith("rotary_emb.inv_freq"):
            raise ValueError(f"unexpected tensor {name!r} in a Llama state dict")
    return state


def llama_from_hf(hf_model, use_sdpa=True):
    """A ``LlamaModel`` in eval mode with a copy of a transformers ``LlamaForCausalLM``'s weights."""
    cfg = llama_config_from_hf(hf_model.config)
    model = LlamaModel(cfg, use_sdpa=use_sdpa)
    state = hf_to_llama_state_dict(hf_model.state_dict())
    if cfg["tie_weights"]:
        state.setdefault("out_head.weight", state["tok_emb.weight"])
    model.load_state_dict(state, strict=True)
    return model.to(hf_model.dtype).eval()


def cache_dir_from_env(default="~/.cache/gpt_from_scratch"):
    """The package's download cache: ``$GPT_FROM_SCRATCH_CACHE``, else ``~/.cache/gpt_from_scratch``."""
    return Path(os.environ.get("GPT_FROM_SCRATCH_CACHE") or default).expanduser()
