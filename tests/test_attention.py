import pytest
import torch
import torch.nn.functional as F

from gpt_from_scratch import (CausalAttention, MultiHeadAttention, MultiHeadAttentionWrapper, SelfAttention_v1,
                              SelfAttention_v2, causal_mask)

# "Your journey starts with one step": six tokens with three-dimensional embeddings.
INPUTS = torch.tensor([[0.43, 0.15, 0.89], [0.55, 0.87, 0.66], [0.57, 0.85, 0.64],
                       [0.22, 0.58, 0.33], [0.77, 0.25, 0.10], [0.05, 0.80, 0.55]])


def naive_attention(q, k, v, causal):
    """Attention written out token by token with Python loops: an independent reference."""
    n, d = q.shape
    out = torch.zeros(n, v.shape[1])
    for i in range(n):
        visible = range(i + 1) if causal else range(n)
        scores = torch.stack([q[i] @ k[j] / d ** 0.5 for j in visible])
        weights = torch.exp(scores - scores.max())
        weights = weights / weights.sum()
        out[i] = sum(w * v[j] for w, j in zip(weights, visible))
    return out


def test_v1_equals_the_loop_reference():
    sa = SelfAttention_v1(3, 2)
    expected = naive_attention(INPUTS @ sa.W_query, INPUTS @ sa.W_key, INPUTS @ sa.W_value, causal=False)
    assert torch.allclose(sa(INPUTS), expected, atol=1e-6)


def test_v2_equals_v1_given_transposed_weights():
    v2 = SelfAttention_v2(3, 2)
    v1 = SelfAttention_v1(3, 2)
    with torch.no_grad():
        v1.W_query.copy_(v2.W_query.weight.T)
        v1.W_key.copy_(v2.W_key.weight.T)
        v1.W_value.copy_(v2.W_value.weight.T)
    assert torch.allclose(v1(INPUTS), v2(INPUTS), atol=1e-6)


def test_causal_attention_equals_the_loop_reference():
    ca = CausalAttention(3, 2, context_length=6, dropout=0.0)
    batch = torch.stack([INPUTS, INPUTS.flip(0)])
    out = ca(batch)
    assert out.shape == (2, 6, 2)
    for b in range(2):
        x = batch[b]
        expected = naive_attention(ca.W_query(x), ca.W_key(x), ca.W_value(x), causal=True)
        assert torch.allclose(out[b], expected, atol=1e-6)


def _attention_modules():
    return {
        "CausalAttention": CausalAttention(8, 8, 10, 0.0),
        "MultiHeadAttentionWrapper": MultiHeadAttentionWrapper(8, 4, 10, 0.0, num_heads=2),
        "MultiHeadAttention": MultiHeadAttention(8, 8, 10, 0.0, num_heads=4),
    }


@pytest.mark.parametrize("name", list(_attention_modules()))
def test_changing_later_tokens_leaves_earlier_outputs_unchanged(name):
    torch.manual_seed(0)
    module = _attention_modules()[name]
    x = torch.randn(3, 10, 8)
    for t in range(10):
        changed = x.clone()
        changed[:, t + 1:] = torch.randn_like(changed[:, t + 1:]) * 10
        a, b = module(x), module(changed)
        assert torch.allclose(a[:, :t + 1], b[:, :t + 1], atol=1e-6), f"position <= {t} saw the future"
        if t < 9:
            assert not torch.allclose(a[:, t + 1:], b[:, t + 1:]), "later positions should change"


def test_multi_head_equals_pytorch_sdpa_with_the_same_projections():
    torch.manual_seed(1)
    mha = MultiHeadAttention(d_in=16, d_out=24, context_length=20, dropout=0.0, num_heads=3, qkv_bias=True)
    x = torch.randn(2, 9, 16)

    def heads(t):  # (b, n, d_out) -> (b, heads, n, head_dim)
        return t.view(2, 9, 3, 8).transpose(1, 2)

    ctx = F.scaled_dot_product_attention(heads(mha.W_query(x)), heads(mha.W_key(x)), heads(mha.W_value(x)),
                                         is_causal=True)
    expected = mha.out_proj(ctx.transpose(1, 2).reshape(2, 9, 24))
    assert torch.allclose(mha(x), expected, atol=1e-5)


def test_one_head_wrapper_equals_causal_attention():
    wrapper = MultiHeadAttentionWrapper(5, 3, context_length=7, dropout=0.0, num_heads=1)
    single = CausalAttention(5, 3, context_length=7, dropout=0.0)
    single.load_state_dict(wrapper.heads[0].state_dict())
    x = torch.randn(2, 7, 5)
    assert torch.allclose(wrapper(x), single(x))


def test_multi_head_equals_wrapper_heads_when_weights_are_sliced():
    """Each head of MultiHeadAttention is a CausalAttention on a slice of the projections."""
    mha = MultiHeadAttention(6, 6, context_length=5, dropout=0.0, num_heads=2)
    wrapper = MultiHeadAttentionWrapper(6, 3, context_length=5, dropout=0.0, num_heads=2)
    with torch.no_grad():
        for h, head in enumerate(wrapper.heads):
            for name in ("W_query", "W_key", "W_value"):
                getattr(head, name).weight.copy_(getattr(mha, name).weight[h * 3:(h + 1) * 3])
    x = torch.randn(2, 5, 6)
    assert torch.allclose(mha(x), mha.out_proj(wrapper(x)), atol=1e-6)


def test_causal_mask_is_the_strict_upper_triangle():
    mask = causal_mask(4)
    assert mask.tolist() == [[False, True, True, True], [False, False, True, True],
                             [False, False, False, True], [False, False, False, False]]


def test_dropout_acts_in_train_mode_only():
    mha = MultiHeadAttention(8, 8, context_length=6, dropout=0.5, num_heads=2)
    x = torch.randn(2, 6, 8)
    mha.eval()
    assert torch.equal(mha(x), mha(x))
    mha.train()
    assert not torch.allclose(mha(x), mha(x))


@pytest.mark.parametrize("cls", [CausalAttention, MultiHeadAttention])
def test_sequence_longer_than_context_is_a_clear_error(cls):
    module = cls(4, 4, 5, 0.0, num_heads=2) if cls is MultiHeadAttention else cls(4, 4, 5, 0.0)
    with pytest.raises(ValueError, match="sequence of 6 tokens is longer than context_length=5"):
        module(torch.randn(1, 6, 4))


def test_wrong_input_shape_is_a_clear_error():
    mha = MultiHeadAttention(4, 4, 5, 0.0, num_heads=2)
    with pytest.raises(ValueError, match=r"expected a tensor of shape \(batch, num_tokens, 4\), got \(5, 4\)"):
        mha(torch.randn(5, 4))
    with pytest.raises(ValueError, match=r"got \(1, 5, 3\)"):
        mha(torch.randn(1, 5, 3))


def test_heads_must_divide_d_out():
    with pytest.raises(ValueError, match="d_out = 10 must be divisible by num_heads = 4"):
        MultiHeadAttention(4, 10, 5, 0.0, num_heads=4)
    with pytest.raises(ValueError, match="num_heads must be a positive integer, got 0"):
        MultiHeadAttentionWrapper(4, 10, 5, 0.0, num_heads=0)
