"""Generation with a key/value cache: the same tokens as the plain loop, the cache's memory, the SDPA path.

The definition every cached result must match is ``generate_text_simple``, the series' loop that runs
the whole (cropped) sequence through the model at every step.
"""

import matplotlib

matplotlib.use("Agg")

import sys

import pytest
import torch
import torch.nn.functional as F

from gpt_from_scratch import (GPT_CONFIG_124M, AttentionExplorer, GenerationPlayground, GPTModel, KVCache,
                              MultiHeadAttention, generate, generate_text_simple, get_tokenizer)
from gpt_from_scratch.cli import main

generate_module = sys.modules["gpt_from_scratch.generate"]  # the package's `generate` is the function
model_module = sys.modules["gpt_from_scratch.model"]


@pytest.fixture
def tiny(tiny_cfg):
    return GPTModel(tiny_cfg).eval()


@pytest.fixture(scope="module")
def gpt124m():
    torch.manual_seed(123)
    return GPTModel(GPT_CONFIG_124M).eval()


# --- the attention layer ------------------------------------------------------------------------------

def test_attention_fed_one_token_at_a_time_equals_all_at_once():
    mha = MultiHeadAttention(d_in=8, d_out=12, context_length=10, dropout=0.0, num_heads=3, qkv_bias=True).eval()
    x = torch.randn(2, 7, 8)
    full = mha(x)
    cache = mha.new_kv_cache(batch_size=2)
    steps = [mha(x[:, :3], cache)] + [mha(x[:, t:t + 1], cache) for t in range(3, 7)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-6)
    assert cache.length == 7
    # what the cache holds is exactly the keys and values of the 7 tokens, computed independently
    keys = mha.W_key(x).view(2, 7, 3, 4).transpose(1, 2)
    values = mha.W_value(x).view(2, 7, 3, 4).transpose(1, 2)
    assert torch.allclose(cache.keys[:, :, :7], keys, atol=1e-6)
    assert torch.allclose(cache.values[:, :, :7], values, atol=1e-6)


def test_a_cached_chunk_of_several_tokens_is_masked_causally():
    mha = MultiHeadAttention(8, 8, 10, 0.0, 2).eval()
    x = torch.randn(1, 9, 8)
    cache = mha.new_kv_cache(1)
    out = torch.cat([mha(x[:, :4], cache), mha(x[:, 4:9], cache)], dim=1)  # the second call: 4 past, 5 new
    assert torch.allclose(out, mha(x), atol=1e-6)


def test_cache_append_returns_everything_so_far_and_refuses_overflow():
    cache = KVCache(batch_size=1, num_heads=2, max_tokens=3, head_dim=4)
    k, v = torch.ones(1, 2, 2, 4), 2 * torch.ones(1, 2, 2, 4)
    keys, values = cache.append(k, v)
    assert keys.shape == (1, 2, 2, 4) and torch.equal(values, v)
    with pytest.raises(ValueError, match="the cache holds 2 of at most 3 tokens: no room for 2 more"):
        cache.append(k, v)
    with pytest.raises(ValueError, match=r"expected keys and values of shape \(1, 2, 1, 4\)"):
        cache.append(torch.ones(1, 2, 1, 4), torch.ones(1, 3, 1, 4))
    assert "length=2" in repr(cache)


@pytest.mark.parametrize("kwargs, err, msg", [
    ({"batch_size": 0}, ValueError, "batch_size must be a positive integer, got 0"),
    ({"max_tokens": 2.5}, TypeError, "max_tokens must be a positive integer, got 2.5"),
])
def test_bad_cache_sizes(kwargs, err, msg):
    args = {"batch_size": 1, "num_heads": 2, "max_tokens": 3, "head_dim": 4, **kwargs}
    with pytest.raises(err, match=msg):
        KVCache(**args)


def test_model_cache_size_is_bounded_by_the_context(tiny):
    with pytest.raises(ValueError, match=r"max_tokens must be an integer in \[1, 12\] \(the context length\), got 13"):
        tiny.new_kv_cache(1, 13)
    with pytest.raises(ValueError, match="a model without transformer blocks has no keys and values to cache"):
        GPTModel({**tiny.cfg, "n_layers": 0}).new_kv_cache(1)


def test_feeding_past_the_context_through_the_cache_is_refused(tiny):
    cache = tiny.new_kv_cache(1)
    tiny(torch.arange(10).unsqueeze(0), kv_cache=cache)
    with pytest.raises(ValueError, match="10 cached \\+ 3 new tokens is more than context_length=12"):
        tiny(torch.tensor([[1, 2, 3]]), kv_cache=cache)


def test_model_with_cache_continues_positions_and_last_only_gives_the_last_row(tiny):
    idx = torch.randint(0, 50, (2, 12))
    full = tiny(idx)
    cache = tiny.new_kv_cache(2)
    first = tiny(idx[:, :5], kv_cache=cache)
    rest = [tiny(idx[:, t:t + 1], kv_cache=cache, last_only=True) for t in range(5, 12)]
    assert first.shape == (2, 5, 50) and rest[0].shape == (2, 1, 50)
    assert torch.allclose(torch.cat([first] + rest, dim=1), full, atol=1e-5)
    assert torch.allclose(tiny(idx, last_only=True), full[:, -1:], atol=1e-6)


# --- generation: the same tokens as generate_text_simple ------------------------------------------------

def test_the_series_example_with_the_cache(gpt124m):
    idx = torch.tensor([[15496, 11, 314, 716]])  # "Hello, I am", seed 123
    expected = [[15496, 11, 314, 716, 27018, 24086, 47843, 30961, 42348, 7267]]
    assert generate(gpt124m, idx, 6, 1024).tolist() == expected
    assert generate_text_simple(gpt124m, idx, 6, 1024).tolist() == expected


def test_200_cached_greedy_tokens_of_gpt2_124m_equal_the_plain_loop(gpt124m):
    """generate_text_simple's step i picks argmax(model(seq[:, :4 + i])[:, -1]). The model is causal,
    so that row equals row 3 + i of one forward pass over the whole final sequence: one pass checks
    all 200 steps of the plain loop (which itself would take minutes at this length)."""
    prompt = torch.tensor([[15496, 11, 314, 716]])
    out = generate(gpt124m, prompt, 200, 1024)
    assert out.shape == (1, 204) and torch.equal(out[:, :4], prompt)
    with torch.no_grad():
        logits = gpt124m(out)  # (1, 204, vocab)
    plain_choices = logits[0, 3:-1].argmax(dim=-1)
    assert torch.equal(out[0, 4:], plain_choices)
    assert torch.equal(out[:, :24], generate_text_simple(gpt124m, prompt, 20, 1024))  # and directly, 20 steps


@pytest.mark.parametrize("context_size", [3, 5, 8, 12])
def test_tiny_model_run_past_its_context_equals_the_plain_loop(tiny, context_size):
    idx = torch.randint(0, 50, (2, 4))
    expected = generate_text_simple(tiny, idx, 25, context_size)
    assert torch.equal(generate(tiny, idx, 25, context_size), expected)
    assert torch.equal(generate(tiny, idx, 25, context_size, use_cache=False), expected)


def test_a_prompt_longer_than_the_window(tiny):
    idx = torch.randint(0, 50, (1, 20))
    assert torch.equal(generate(tiny, idx, 5, 12), generate_text_simple(tiny, idx, 5, 12))


@pytest.mark.parametrize("temperature, top_k", [(1.0, None), (0.7, 5), (1.5, 20)])
def test_sampling_with_a_seed_gives_the_same_tokens_with_and_without_the_cache(tiny, temperature, top_k):
    idx = torch.randint(0, 50, (3, 2))
    kwargs = {"temperature": temperature, "top_k": top_k, "seed": 7}
    with_cache = generate(tiny, idx, 20, 12, **kwargs)
    assert torch.equal(with_cache, generate(tiny, idx, 20, 12, use_cache=False, **kwargs))
    assert not torch.equal(with_cache, generate(tiny, idx, 20, 12, **{**kwargs, "seed": 8}))


def test_eos_in_a_batch_with_the_cache(tiny):
    idx = torch.randint(0, 50, (4, 3))
    free = generate(tiny, idx, 10, 12, temperature=1.0, seed=1)
    eos = int(free[0, 5])  # a token the first sequence picks: it stops there
    assert torch.equal(generate(tiny, idx, 10, 12, temperature=1.0, seed=1, eos_id=eos),
                       generate(tiny, idx, 10, 12, temperature=1.0, seed=1, eos_id=eos, use_cache=False))


def test_use_cache_must_be_a_bool(tiny):
    with pytest.raises(TypeError, match="use_cache must be True or False, got 1"):
        generate(tiny, torch.tensor([[1]]), 1, 12, use_cache=1)


def test_token_ids_are_range_checked_once_per_generate_call(tiny, monkeypatch):
    range_checks = []
    original = model_module.check_token_ids

    def counting(idx, vocab_size=None, context_length=None):
        range_checks.append(vocab_size is not None)
        return original(idx, vocab_size, context_length)

    monkeypatch.setattr(model_module, "check_token_ids", counting)
    monkeypatch.setattr(generate_module, "check_token_ids", counting)
    for use_cache in (True, False):
        range_checks.clear()
        generate(tiny, torch.tensor([[1, 2]]), 8, 12, use_cache=use_cache)
        assert range_checks.count(True) == 1 and range_checks.count(False) == 8  # the prompt; 8 model calls
    range_checks.clear()
    generate_text_simple(tiny, torch.tensor([[1, 2]]), 3, 12)
    assert range_checks == [True, False, False, False]


def test_the_playground_and_the_cli_generate_with_the_cache(tiny, monkeypatch, tmp_path):
    made = []
    original = GPTModel.new_kv_cache
    monkeypatch.setattr(GPTModel, "new_kv_cache", lambda self, *a: made.append(a) or original(self, *a))
    big_vocab = GPTModel({**tiny.cfg, "vocab_size": 50257})
    GenerationPlayground(big_vocab, get_tokenizer()).run("The clock", max_new_tokens=3)
    assert len(made) == 1
    from gpt_from_scratch import save_checkpoint
    path = tmp_path / "m.pt"
    save_checkpoint(path, big_vocab)
    assert main(["generate", "--checkpoint", str(path), "--prompt", "Hi", "--max-new-tokens", "3"]) == 0
    assert len(made) == 2


def test_models_without_a_cache_still_generate():
    class Echo(torch.nn.Module):  # next token = last token + 1; no new_kv_cache
        cfg = {"vocab_size": 10}

        def forward(self, idx):
            return F.one_hot((idx + 1) % 10, 10).float()

    assert generate(Echo(), torch.tensor([[1]]), 3, 4).tolist() == [[1, 2, 3, 4]]


# --- memory -----------------------------------------------------------------------------------------------

def test_cache_memory_is_what_the_formula_says():
    cfg = {**GPT_CONFIG_124M, "vocab_size": 10, "n_layers": 3}
    cache = GPTModel(cfg).new_kv_cache(batch_size=2, max_tokens=100)
    expected = 2 * 3 * 100 * 768 * 4 * 2  # keys and values x n_layers x tokens x emb_dim x 4 bytes x sequences
    assert sum(layer.nbytes() for layer in cache) == expected == 3_686_400


# --- the fused attention path ---------------------------------------------------------------------------

def test_sdpa_gives_the_same_logits_and_greedy_text(gpt124m):
    torch.manual_seed(123)
    fast = GPTModel(GPT_CONFIG_124M, use_sdpa=True).eval()  # same seed: same weights, creation order unchanged
    assert all(torch.equal(a, b) for a, b in zip(fast.state_dict().values(), gpt124m.state_dict().values()))
    assert list(fast.state_dict()) == list(gpt124m.state_dict())  # the same file layout, mask included
    idx = torch.randint(0, 50257, (2, 64))
    with torch.no_grad():
        diff = (fast(idx) - gpt124m(idx)).abs().max().item()
    assert diff < 1e-5, diff
    prompt = torch.tensor([[15496, 11, 314, 716]])
    assert generate(fast, prompt, 6, 1024)[0, 4:].tolist() == [27018, 24086, 47843, 30961, 42348, 7267]


def test_sdpa_with_the_cache_equals_the_explicit_path(tiny_cfg):
    explicit = GPTModel(tiny_cfg).eval()
    fast = GPTModel(tiny_cfg, use_sdpa=True).eval()
    fast.load_state_dict(explicit.state_dict())
    idx = torch.randint(0, 50, (2, 12))
    for model in (explicit, fast):
        cache = model.new_kv_cache(2)
        # no past (is_causal), several new tokens after a past (explicit mask), one new token (no mask)
        model.steps = torch.cat([model(idx[:, :4], cache), model(idx[:, 4:9], cache), model(idx[:, 9:10], cache)], 1)
    assert (fast.steps - explicit.steps).abs().max() < 1e-5
    assert torch.equal(generate(fast, idx[:, :3], 20, 12), generate_text_simple(explicit, idx[:, :3], 20, 12))


def test_sdpa_applies_dropout_in_train_mode_only(tiny_cfg):
    fast = GPTModel({**tiny_cfg, "drop_rate": 0.5}, use_sdpa=True)
    idx = torch.randint(0, 50, (1, 12))
    assert not torch.equal(fast.train()(idx), fast(idx))
    assert torch.equal(fast.eval()(idx), fast(idx))


def test_use_sdpa_must_be_a_bool():
    with pytest.raises(TypeError, match="use_sdpa must be True or False, got 'yes'"):
        MultiHeadAttention(4, 4, 4, 0.0, 2, use_sdpa="yes")


def test_the_explorer_reads_weights_from_a_model_built_with_sdpa(tiny_cfg):
    cfg = {**tiny_cfg, "vocab_size": 50257}
    torch.manual_seed(5)
    explicit = GPTModel(cfg)
    torch.manual_seed(5)
    fast = GPTModel(cfg, use_sdpa=True)
    a = AttentionExplorer.from_model(explicit, get_tokenizer(), "The clock struck")
    b = AttentionExplorer.from_model(fast, get_tokenizer(), "The clock struck")
    assert len(b.weights) == 2 and all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a.weights, b.weights))
    assert all(block.att.use_sdpa for block in fast.trf_blocks)  # switched back afterwards


@pytest.mark.parametrize("use_cache", [True, False])
def test_a_context_size_beyond_the_model_is_refused_up_front_with_and_without_the_cache(tiny_cfg, use_cache):
    """Issue 17, bug 1: context_size=8 on a 4-token model failed only at the second step, with advice
    about the cache that means nothing to the caller (and another message without the cache)."""
    model = GPTModel({**tiny_cfg, "context_length": 4}).eval()
    idx = torch.tensor([[1, 2, 3]])
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    with pytest.raises(ValueError, match=r"^context_size must be an integer in \[1, 4\] \(the model's "
                                         r"context_length\), got 8$"):
        generate(model, idx, 8, context_size=8, use_cache=use_cache)
    assert calls == []  # refused before the first step
    assert generate(model, idx, 8, context_size=4, use_cache=use_cache).shape == (1, 11)
