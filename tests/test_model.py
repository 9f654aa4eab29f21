import pytest
import torch
import torch.nn as nn

from gpt_from_scratch import (GELU, GPT_CONFIG_124M, DummyGPTModel, FeedForward, GPTModel, LayerNorm,
                              TransformerBlock, check_token_ids, generate, generate_text_simple, get_tokenizer)

BATCH_TEXTS = ["Every effort moves you", "Every day holds a"]


def _batch():
    tok = get_tokenizer()
    return torch.stack([torch.tensor(tok.encode(t)) for t in BATCH_TEXTS])


@pytest.fixture(scope="module")
def gpt124m():
    torch.manual_seed(123)
    model = GPTModel(GPT_CONFIG_124M)
    model.eval()
    return model


# --- the series' exact results ------------------------------------------------------------------------

def test_parameter_counts_and_memory(gpt124m):
    total = sum(p.numel() for p in gpt124m.parameters())
    assert total == 163_009_536
    assert total - gpt124m.out_head.weight.numel() == 124_412_160
    assert round(total * 4 / 1024 ** 2, 2) == 621.83


def test_weight_tying_shares_one_tensor():
    torch.manual_seed(123)
    tied = GPTModel(GPT_CONFIG_124M, tie_weights=True)
    assert tied.out_head.weight is tied.tok_emb.weight
    assert sum(p.numel() for p in tied.parameters()) == 124_412_160


def test_placeholder_model_logits_shape():
    torch.manual_seed(123)
    model = DummyGPTModel(GPT_CONFIG_124M)
    batch = _batch()
    assert batch.tolist()[0] == [6109, 3626, 6100, 345]
    assert model(batch).shape == (2, 4, 50257)


def test_placeholder_blocks_pass_through_and_share_attribute_names(tiny_cfg):
    dummy, real = DummyGPTModel(tiny_cfg), GPTModel(tiny_cfg)
    assert [n for n, _ in dummy.named_children()] == [n for n, _ in real.named_children()] == \
        ["tok_emb", "pos_emb", "drop_emb", "trf_blocks", "final_norm", "out_head"]
    x = torch.randn(2, 3, tiny_cfg["emb_dim"])
    assert torch.equal(dummy.trf_blocks(x), x) and torch.equal(dummy.final_norm(x), x)


def test_full_model_logits_shape(gpt124m):
    with torch.no_grad():
        assert gpt124m(_batch()).shape == (2, 4, 50257)


# --- pieces against PyTorch's own ---------------------------------------------------------------------

def test_layernorm_equals_torch():
    torch.manual_seed(0)
    ours, theirs = LayerNorm(16), nn.LayerNorm(16, eps=1e-5)
    with torch.no_grad():
        ours.scale.copy_(torch.randn(16))
        ours.shift.copy_(torch.randn(16))
        theirs.weight.copy_(ours.scale)
        theirs.bias.copy_(ours.shift)
    x = torch.randn(3, 5, 16) * 4 + 2
    assert torch.allclose(ours(x), theirs(x), atol=1e-5)


def test_layernorm_normalises_with_the_biased_variance():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    out = LayerNorm(4, eps=0.0)(x)
    assert torch.allclose(out.mean(-1), torch.zeros(1), atol=1e-6)
    assert torch.allclose(out.var(-1, unbiased=False), torch.ones(1), atol=1e-5)
    # variance of 1..4 is 1.25 with n, 1.667 with n - 1; first value (1 - 2.5) / sqrt(1.25)
    assert torch.isclose(out[0, 0], torch.tensor(-1.5 / 1.25 ** 0.5))


def test_gelu_equals_torch_tanh_approximation():
    x = torch.linspace(-6, 6, 1001)
    assert torch.allclose(GELU()(x), nn.GELU(approximate="tanh")(x), atol=1e-6)


def test_feed_forward_shapes(tiny_cfg):
    ff = FeedForward(tiny_cfg)
    assert ff.layers[0].weight.shape == (4 * 32, 32)
    assert ff(torch.randn(2, 3, 32)).shape == (2, 3, 32)


def test_transformer_block_is_pre_layernorm_with_shortcuts(tiny_cfg):
    block = TransformerBlock(tiny_cfg).eval()
    x = torch.randn(2, 5, 32)
    h = x + block.att(block.norm1(x))
    expected = h + block.ff(block.norm2(h))
    assert torch.allclose(block(x), expected, atol=1e-6)


# --- behaviour of the whole model ---------------------------------------------------------------------

@pytest.mark.parametrize("cls", [GPTModel, DummyGPTModel])
def test_model_is_causal(cls, tiny_cfg):
    model = cls(tiny_cfg).eval()
    idx = torch.randint(0, 50, (2, 12))
    full = model(idx)
    for t in range(11):
        changed = idx.clone()
        changed[:, t + 1:] = (changed[:, t + 1:] + 7) % 50
        assert torch.allclose(model(changed)[:, :t + 1], full[:, :t + 1], atol=1e-5), f"position {t} saw the future"


def test_dropout_acts_in_train_mode_only(tiny_cfg):
    model = GPTModel({**tiny_cfg, "drop_rate": 0.5})
    idx = torch.randint(0, 50, (2, 8))
    model.eval()
    assert torch.equal(model(idx), model(idx))
    model.train()
    assert not torch.allclose(model(idx), model(idx))


def test_same_seed_same_model(tiny_cfg):
    torch.manual_seed(5)
    a = GPTModel(tiny_cfg)
    torch.manual_seed(5)
    b = GPTModel(tiny_cfg)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_parameters_are_created_in_the_series_order(tiny_cfg):
    names = [n for n, _ in GPTModel(tiny_cfg).named_parameters()]
    assert names[:2] == ["tok_emb.weight", "pos_emb.weight"]
    assert names[2:8] == ["trf_blocks.0.att.W_query.weight", "trf_blocks.0.att.W_key.weight",
                          "trf_blocks.0.att.W_value.weight", "trf_blocks.0.att.out_proj.weight",
                          "trf_blocks.0.att.out_proj.bias", "trf_blocks.0.ff.layers.0.weight"]
    assert names[-3:] == ["final_norm.scale", "final_norm.shift", "out_head.weight"]


# --- bad input ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, err, msg", [
    (torch.zeros(1, 13, dtype=torch.long), ValueError, "sequence of 13 tokens is longer than context_length=12"),
    (torch.tensor([[1.0, 2.0]]), TypeError, "must be an integer tensor .*got dtype torch.float32"),
    (torch.tensor([1, 2, 3]), ValueError, r"shape \(batch, num_tokens\), got shape \(3,\); add a batch dimension"),
    ([[1, 2, 3]], TypeError, "must be a torch.Tensor .*got list"),
    (torch.zeros(1, 0, dtype=torch.long), ValueError, "token ids are empty"),
])
@pytest.mark.parametrize("cls", [GPTModel, DummyGPTModel])
def test_bad_token_ids_get_a_clear_error(cls, tiny_cfg, bad, err, msg):
    with pytest.raises(err, match=msg):
        cls(tiny_cfg)(bad)


@pytest.mark.parametrize("cls", [GPTModel, DummyGPTModel])
def test_a_forward_pass_reads_no_value_from_the_device(cls, tiny_cfg):
    """Issue 17, bug 4: the forward pass read idx.min() and idx.max() (a host sync per micro-batch on
    a GPU). On the meta device no value can be read at all, so the forward pass must run there."""
    with torch.device("meta"):
        model = cls(tiny_cfg)
        idx = torch.zeros(2, 5, dtype=torch.long)
    assert model(idx).shape == (2, 5, 50)


@pytest.mark.parametrize("bad, msg", [(torch.tensor([[1, 2, 50]]), r"token id 50 is outside the vocabulary \[0, 50\)"),
                                      (torch.tensor([[-1, 2]]), r"token id -1 is outside the vocabulary \[0, 50\)")])
def test_token_ids_are_range_checked_where_they_enter(tiny_cfg, bad, msg):
    with pytest.raises(ValueError, match=msg):
        check_token_ids(bad, 50)
    with pytest.raises(ValueError, match=msg):
        generate(GPTModel(tiny_cfg), bad, 1, 12)
    with pytest.raises(ValueError, match=msg):
        generate_text_simple(GPTModel(tiny_cfg), bad, 1, 12)
