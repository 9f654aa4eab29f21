"""LlamaModel and its parts against PyTorch and transformers, with random weights; GGUF files written here."""

import numpy as np
import pytest
import torch

from gpt_from_scratch import (GGUFError, LlamaModel, RMSNorm, SMOLLM2_CONFIG_135M, apply_rope, apply_rope_interleaved,
                              generate, llama_from_hf, load_llama_gguf, permute_qk, repeat_kv, rope_angles,
                              unpermute_qk, validate_llama_config)
from gpt_from_scratch.llama import GroupedQueryAttention

transformers = pytest.importorskip("transformers", reason="transformers is a test-only dependency (dev extra)")
gguf = pytest.importorskip("gguf")
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402


def tiny_hf(theta=10000.0, tie=False, layers=3, vocab=97, context=64, seed=0):
    """A random tiny Llama: 4 query heads sharing 2 key/value heads (GQA 4:2), head size 16."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
                         rope_theta=theta, tie_word_embeddings=tie, rms_norm_eps=1e-5)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # larger weights than the default init, so that the logits are not all near 0
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.1)
    return model


CASES = [(10000.0, False), (10000.0, True), (100000.0, False), (100000.0, True)]


@pytest.mark.parametrize("theta,tie", CASES)
@pytest.mark.parametrize("use_sdpa", [True, False])
def test_logits_equal_transformers(theta, tie, use_sdpa):
    hf = tiny_hf(theta, tie)
    ours = llama_from_hf(hf, use_sdpa=use_sdpa)
    assert (ours.out_head.weight is ours.tok_emb.weight) == tie
    idx = torch.randint(0, 97, (2, 40))
    with torch.no_grad():
        expected = hf(idx).logits
        assert torch.allclose(ours(idx), expected, atol=1e-5, rtol=0)
        assert expected.abs().max() > 1  # the comparison is not between numbers all near 0
        # the same through the cache, fed in pieces: positions continue from the cache's length
        cache = ours.new_kv_cache(2, 40)
        pieces = [ours(idx[:, a:b], kv_cache=cache) for a, b in [(0, 7), (7, 8), (8, 20), (20, 21), (21, 40)]]
        assert cache[0].length == 40
        assert torch.allclose(torch.cat(pieces, dim=1), expected, atol=1e-5, rtol=0)
        last = ours(idx, last_only=True)
    assert last.shape == (2, 1, 97)
    assert torch.allclose(last[:, 0], expected[:, -1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("theta,tie", CASES)
def test_greedy_text_equals_transformers(theta, tie):
    hf = tiny_hf(theta, tie)
    ours = llama_from_hf(hf)
    prompt = torch.randint(0, 97, (1, 5))
    expected = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=40, do_sample=False,
                           eos_token_id=None, pad_token_id=0)
    assert torch.equal(generate(ours, prompt, 40, 64), expected)  # with the cache (the default)
    assert torch.equal(generate(ours, prompt, 40, 64, use_cache=False), expected)


def test_cache_holds_fewer_heads_and_counts():
    model = LlamaModel({**SMOLLM2_CONFIG_135M, "n_layers": 2, "vocab_size": 100, "context_length": 32})
    cache = model.new_kv_cache(1, 10)
    assert len(cache) == 2 and cache[0].keys.shape == (1, 3, 10, 64)  # 3 key/value heads, not 9
    assert sum(c.nbytes() for c in cache) == 2 * 2 * 3 * 64 * 4 * 10
    with pytest.raises(ValueError, match="max_tokens must be an integer in \\[1, 32\\]"):
        model.new_kv_cache(1, 33)
    with pytest.raises(ValueError, match="no room"):
        c = model.new_kv_cache(1, 4)
        model(torch.zeros(1, 5, dtype=torch.long), kv_cache=c)


def test_smollm2_config_has_134m_parameters():
    with torch.device("meta"):
        model = LlamaModel(SMOLLM2_CONFIG_135M)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008


@pytest.mark.parametrize("change,message", [
    ({"n_kv_groups": 4}, "n_heads = 9 must be divisible by n_kv_groups = 4"),
    ({"n_heads": 7}, "emb_dim = 576 must be divisible by n_heads = 7"),
    ({"emb_dim": 9 * 63}, "must be even"),
    ({"n_layers": 0}, "n_layers must be a positive integer, got 0"),
    ({"rope_base": 0}, "rope_base must be a number > 0"),
    ({"drop_rate": 0.1}, "unknown Llama config key"),
    ({"tie_weights": 1}, "tie_weights must be True or False"),
])
def test_config_errors_name_the_value(change, message):
    with pytest.raises((TypeError, ValueError), match=message):
        validate_llama_config({**SMOLLM2_CONFIG_135M, **change})
    with pytest.raises(ValueError, match="missing n_kv_groups"):
        validate_llama_config({k: v for k, v in SMOLLM2_CONFIG_135M.items() if k != "n_kv_groups"})


# --- the parts -------------------------------------------------------------------------------------

def test_rmsnorm_equals_torch():
    ours, ref = RMSNorm(24, eps=1e-5), torch.nn.RMSNorm(24, eps=1e-5)
    with torch.no_grad():
        ours.weight.normal_()
        ref.weight.copy_(ours.weight)
    x = torch.randn(3, 5, 24) * 4 + 1
    assert torch.allclose(ours(x), ref(x), atol=1e-6, rtol=0)
    y = RMSNorm(24)(x)
    assert torch.allclose(y.pow(2).mean(-1), torch.ones(3, 5), atol=1e-4)  # RMS 1 with weight 1
    assert ours.bfloat16()(x.bfloat16()).dtype == torch.bfloat16  # a bf16 model stays in bf16


def test_rope_equals_transformers():
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    config = LlamaConfig(hidden_size=64, num_attention_heads=4, max_position_embeddings=50, rope_theta=100000.0)
    rotary = LlamaRotaryEmbedding(config)
    q, k = torch.randn(2, 4, 50, 16), torch.randn(2, 4, 50, 16)
    positions = torch.arange(50)[None]
    hf_cos, hf_sin = rotary(q, positions)
    cos, sin = rope_angles(16, 50, 100000.0)
    assert torch.equal(cos, hf_cos[0]) and torch.equal(sin, hf_sin[0])
    hq, hk = apply_rotary_pos_emb(q, k, hf_cos, hf_sin)
    assert torch.equal(apply_rope(q, cos, sin), hq) and torch.equal(apply_rope(k, cos, sin), hk)


@pytest.mark.parametrize("rope", [apply_rope, apply_rope_interleaved])
def test_rope_scores_depend_only_on_the_offset(rope):
    cos, sin = rope_angles(16, 40)
    q, k = torch.randn(16), torch.randn(16)

    def score(m, n):  # query at position m, key at position n
        rq = rope(q.view(1, 1, 1, 16), cos[m:m + 1], sin[m:m + 1])
        rk = rope(k.view(1, 1, 1, 16), cos[n:n + 1], sin[n:n + 1])
        return float((rq * rk).sum())

    assert score(5, 2) == pytest.approx(score(33, 30), abs=1e-4)
    assert score(7, 7) == pytest.approx(float(q @ k), abs=1e-4)  # offset 0: no rotation left
    assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-3)
    x = torch.randn(1, 1, 40, 16)  # a rotation keeps lengths
    assert torch.allclose(rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1), atol=1e-5)


def test_the_two_rope_layouts_agree_through_the_permutation():
    """Interleaved RoPE on the permuted projection = split-halves RoPE on the original, up to the
    order of the features within each head, which the dot product q.k does not see."""
    cos, sin = rope_angles(16, 10)
    w_q, w_k, x = torch.randn(32, 24), torch.randn(32, 24), torch.randn(10, 24)

    def heads(w):  # (10, 32) -> (1, 2 heads, 10, 16)
        return (x @ w.T).view(10, 2, 16).transpose(0, 1)[None]

    split = apply_rope(heads(w_q), cos, sin) @ apply_rope(heads(w_k), cos, sin).transpose(-1, -2)
    inter = (apply_rope_interleaved(heads(permute_qk(w_q, 2)), cos, sin)
             @ apply_rope_interleaved(heads(permute_qk(w_k, 2)), cos, sin).transpose(-1, -2))
    assert torch.allclose(split, inter, atol=1e-4)
    assert torch.equal(unpermute_qk(permute_qk(w_q, 2), 2), w_q)
    assert not torch.equal(permute_qk(w_q, 2), w_q)


def test_gqa_equals_attention_with_repeated_heads():
    torch.manual_seed(1)
    gqa = GroupedQueryAttention(32, 32, num_heads=4, num_kv_groups=2, use_sdpa=False)
    mha = GroupedQueryAttention(32, 32, num_heads=4, num_kv_groups=4, use_sdpa=False)
    with torch.no_grad():
        mha.W_query.weight.copy_(gqa.W_query.weight)
        mha.out_proj.weight.copy_(gqa.out_proj.weight)
        # key/value head j of gqa serves query heads 2j and 2j+1: repeat its rows for each of them
        for name in ("W_key", "W_value"):
            w = getattr(gqa, name).weight.view(2, 8, 32)
            getattr(mha, name).weight.copy_(w.repeat_interleave(2, dim=0).reshape(32, 32))
    cos, sin = rope_angles(8, 12)
    x = torch.randn(2, 12, 32)
    assert torch.allclose(gqa(x, cos, sin), mha(x, cos, sin), atol=1e-6)
    gqa.use_sdpa = True
    assert torch.allclose(gqa(x, cos, sin), mha(x, cos, sin), atol=1e-6)
    kv = torch.arange(2 * 3).float().view(1, 2, 3, 1)
    assert repeat_kv(kv, 2)[0, :, :, 0].tolist() == [[0, 1, 2], [0, 1, 2], [3, 4, 5], [3, 4, 5]]


# --- GGUF files written here -----------------------------------------------------------------------

HF_TO_GGUF = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def write_gguf(path, hf, arch="llama", quantize=None, truncate=0):
    """Write ``hf``'s weights as llama.cpp's converter does: q/k permuted, names and metadata of GGUF.

    ``quantize``: {gguf tensor name: quantization type}; other tensors are F32.
    """
    quantize = quantize or {}
    c = hf.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_rope_freq_base(c.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    writer.add_vocab_size(c.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"<t{i}>" for i in range(c.vocab_size)])
    for name, value in hf.state_dict().items():
        value = value.numpy().astype(np.float32)
        if name == "model.embed_tokens.weight":
            gname = "token_embd.weight"
        elif name == "model.norm.weight":
            gname = "output_norm.weight"
        elif name == "lm_head.weight":
            if c.tie_word_embeddings:
                continue
            gname = "output.weight"
        else:
            _, _, n, rest = name.split(".", 3)
            module = rest.rsplit(".", 1)[0]
            gname = f"blk.{n}.{HF_TO_GGUF[module]}.weight"
            if module == "self_attn.q_proj":
                value = permute_qk(value, c.num_attention_heads)
            elif module == "self_attn.k_proj":
                value = permute_qk(value, c.num_key_value_heads)
        qtype = quantize.get(gname)
        if qtype is None:
            writer.add_tensor(gname, np.ascontiguousarray(value))
        elif qtype == gguf.GGMLQuantizationType.Q8_1:  # a type gguf cannot (de)quantize: bytes of the right size
            block, size = gguf.GGML_QUANT_SIZES[qtype]
            raw = np.zeros((value.shape[0], value.shape[1] // block * size), dtype=np.uint8)
            writer.add_tensor(gname, raw, raw_dtype=qtype)
        else:
            writer.add_tensor(gname, gguf.quants.quantize(value, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if truncate:
        data = path.read_bytes()
        path.write_bytes(data[:-truncate])
    return path


Q = gguf.GGMLQuantizationType if gguf else None


@pytest.mark.parametrize("tie", [False, True])
def test_gguf_loads_like_transformers(tmp_path, tie):
    hf = tiny_hf(100000.0, tie, vocab=128)
    quantize = {"blk.0.attn_q.weight": Q.Q4_1, "blk.1.ffn_up.weight": Q.Q8_0, "token_embd.weight": Q.Q8_0}
    path = write_gguf(tmp_path / "tiny.gguf", hf, quantize=quantize)
    ours = load_llama_gguf(path)
    assert not ours.training and ours.cfg == llama_from_hf(hf).cfg
    theirs = LlamaForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf", dtype=torch.float32).eval()
    idx = torch.randint(0, 128, (2, 30))
    with torch.no_grad():
        expected = theirs(idx).logits
        assert torch.allclose(ours(idx), expected, atol=1e-5, rtol=0)
        assert not torch.allclose(hf(idx).logits, expected, atol=1e-3)  # the quantization changed something
    # F32 tensors come back exactly, q/k in transformers' order (unpermuted); a Q4_1 one approximately
    assert torch.equal(ours.trf_blocks[1].att.W_query.weight, hf.model.layers[1].self_attn.q_proj.weight)
    assert torch.equal(ours.trf_blocks[2].att.W_key.weight, hf.model.layers[2].self_attn.k_proj.weight)
    q4 = ours.trf_blocks[0].att.W_query.weight - hf.model.layers[0].self_attn.q_proj.weight
    assert 0 < q4.abs().max() < 0.05
    assert (ours.out_head.weight is ours.tok_emb.weight) == tie


def test_gguf_errors_are_one_line(tmp_path):
    hf = tiny_hf(layers=2)
    cases = {
        "qwen.gguf": (dict(arch="qwen2"), "architecture 'qwen2'; only 'llama'"),
        "q81.gguf": (dict(quantize={"blk.1.ffn_down.weight": Q.Q8_1}), "blk.1.ffn_down.weight is of type Q8_1, "
                                                                        "which the gguf package .* cannot dequantize"),
        "cut.gguf": (dict(truncate=1000), "is truncated or damaged .*; fetch it again"),
        "cut_little.gguf": (dict(truncate=10), "is truncated or damaged"),
    }
    for name, (kwargs, message) in cases.items():
        path = write_gguf(tmp_path / name, hf, **kwargs)
        with pytest.raises(GGUFError, match=message) as err:
            load_llama_gguf(path)
        assert "\n" not in str(err.value) and name in str(err.value)
    (tmp_path / "text.gguf").write_text("not a gguf file at all")
    with pytest.raises(GGUFError, match="text.gguf is not a GGUF file"):
        load_llama_gguf(tmp_path / "text.gguf")
    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        load_llama_gguf(tmp_path / "missing.gguf")
