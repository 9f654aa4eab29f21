"""LoRA from scratch: starts equal to the base model, merges exactly, trains only A and B, saves
only the adapter and refuses one made for another model."""

import pytest
import torch
import torch.nn as nn

from gpt_from_scratch import GPTModel
from gpt_from_scratch.lora import (LoRALinear, apply_lora, count_parameters, load_adapter, lora_layers, merge_lora,
                                   save_adapter)

CFG = {"vocab_size": 60, "context_length": 16, "emb_dim": 32, "n_heads": 4, "n_layers": 3, "drop_rate": 0.0,
       "qkv_bias": True}


def _model(seed=123):
    torch.manual_seed(seed)
    return GPTModel(CFG).eval()


def _randomise_B(model, seed=1):
    # B starts at zero (the adapted model equals the base); give it values to test the adapter path.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.B.copy_(torch.randn(layer.B.shape, generator=g) * 0.1)


def test_lora_linear_formula_shapes_and_init():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    layer = LoRALinear(base, rank=3, alpha=6)
    assert layer.A.shape == (3, 6) and layer.B.shape == (5, 3) and layer.scale == 2.0
    assert torch.count_nonzero(layer.B) == 0 and torch.count_nonzero(layer.A) == 18
    assert layer.A.abs().max() <= 1 / 6 ** 0.5  # kaiming_uniform(a=sqrt(5)): bound 1/sqrt(d_in)
    with torch.no_grad():
        layer.B.normal_()
    x = torch.randn(2, 4, 6)
    expected = base(x) + x @ (layer.B @ layer.A).T * 2.0
    assert torch.allclose(layer(x), expected, atol=1e-6)
    assert not base.weight.requires_grad and not base.bias.requires_grad


@pytest.mark.parametrize("kwargs, error", [
    ({"rank": 0, "alpha": 1}, ValueError), ({"rank": 2.0, "alpha": 1}, TypeError),
    ({"rank": 2, "alpha": 0}, ValueError), ({"rank": 2, "alpha": 1, "dropout": 1.0}, ValueError),
])
def test_lora_linear_rejects_bad_arguments(kwargs, error):
    with pytest.raises(error):
        LoRALinear(nn.Linear(4, 4), **kwargs)
    with pytest.raises(TypeError, match="torch.nn.Linear"):
        LoRALinear(nn.Conv1d(4, 4, 1), 2, 4)


def test_wrapped_model_starts_with_identical_logits():
    model = _model()
    x = torch.randint(0, 60, (2, 10))
    before = model(x)
    names = apply_lora(model, ("W_query", "W_value"), rank=4, alpha=8)
    assert names == [f"trf_blocks.{i}.att.{n}" for i in range(3) for n in ("W_query", "W_value")]
    assert torch.equal(model(x), before)


def test_blocks_and_targets_choose_the_layers():
    model = _model()
    names = apply_lora(model, ["W_key", "out_proj"], rank=2, alpha=2, blocks=[2])
    assert names == ["trf_blocks.2.att.W_key", "trf_blocks.2.att.out_proj"]
    with pytest.raises(ValueError, match=r"no nn.Linear layer matches targets=\['q_proj'\].*W_query"):
        apply_lora(_model(), ["q_proj"], rank=2, alpha=2)
    with pytest.raises(ValueError, match="in blocks \\[7\\]"):
        apply_lora(_model(), ["W_query"], rank=2, alpha=2, blocks=[7])


def test_merge_equals_unmerged():
    model = _model()
    apply_lora(model, ("W_query", "W_value", "out_proj"), rank=4, alpha=8)
    _randomise_B(model)
    x = torch.randint(0, 60, (2, 10))
    adapted = model(x)
    merge_lora(model)
    assert not lora_layers(model)
    assert all(type(model.trf_blocks[i].att.W_query) is nn.Linear for i in range(3))
    merged = model(x)
    assert (merged - adapted).abs().max() < 1e-5
    assert not torch.equal(adapted, _model()(x))  # the adapter did change the model


def test_only_A_and_B_get_gradients_and_the_optimizer_holds_only_them():
    model = _model()
    apply_lora(model, ("W_query", "W_value"), rank=4, alpha=8, blocks=[1, 2])
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == [f"trf_blocks.{i}.att.{w}.{m}" for i in (1, 2) for w in ("W_query", "W_value") for m in "AB"]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for p in model.parameters() if p.requires_grad}
    x = torch.randint(0, 60, (2, 10))
    model(x).sum().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
        else:
            assert p.grad is None, name
    # B = 0 at the start, so A's gradient (which goes through B) is zero and B's is not
    layer = model.trf_blocks[1].att.W_query
    assert torch.count_nonzero(layer.A.grad) == 0 and torch.count_nonzero(layer.B.grad) > 0
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    optimizer.step()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if not p.requires_grad)


def test_count_parameters():
    model = _model()
    total = sum(p.numel() for p in model.parameters())
    assert count_parameters(model) == (total, total)
    apply_lora(model, ("W_query", "W_value"), rank=4, alpha=8)
    # 3 blocks x 2 layers x rank 4 x (32 + 32)
    assert count_parameters(model) == (3 * 2 * 4 * 64, total + 3 * 2 * 4 * 64)


def test_dropout_acts_on_the_adapter_input_only_in_training():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(8, 8), rank=2, alpha=2, dropout=0.5)
    with torch.no_grad():
        layer.B.normal_()
    x = torch.randn(4, 8)
    layer.eval()
    assert torch.equal(layer(x), layer(x))
    layer.train()
    assert not torch.equal(layer(x), layer(x))
    with torch.no_grad():
        layer.B.zero_()  # no adapter: the base output, whatever dropout does
    assert torch.equal(layer(x), layer.linear(x))


def test_adapter_round_trip_is_small_and_exact(tmp_path):
    model = _model()
    apply_lora(model, ("W_query", "W_value"), rank=4, alpha=8)
    _randomise_B(model)
    x = torch.randint(0, 60, (2, 10))
    expected = model(x)
    size = save_adapter(model, tmp_path / "adapter.pt")
    n_adapter = count_parameters(model)[0]
    assert size < 4 * n_adapter + 10_000  # the adapter's floats and a little metadata, not the model
    fresh = _model()  # the base model again
    load_adapter(fresh, tmp_path / "adapter.pt")
    assert torch.equal(fresh(x), expected)
    assert count_parameters(fresh)[0] == n_adapter
    wrapped = _model()
    apply_lora(wrapped, ("W_query", "W_value"), rank=4, alpha=8)
    assert torch.equal(load_adapter(wrapped, tmp_path / "adapter.pt")(x), expected)


def test_load_adapter_refuses_another_base(tmp_path):
    model = _model()
    apply_lora(model, ("W_query", "W_value"), rank=4, alpha=8)
    path = tmp_path / "adapter.pt"
    save_adapter(model, path)
    wider = GPTModel({**CFG, "emb_dim": 64})
    with pytest.raises(ValueError, match=r"another model: layer 'trf_blocks.0.att.W_query' has weight shape \(64, 64\)"):
        load_adapter(wider, path)
    shallower = GPTModel({**CFG, "n_layers": 2})
    with pytest.raises(ValueError, match="adapts layer 'trf_blocks.2.att.W_query', which this model does not have"):
        load_adapter(shallower, path)
    other_layers = _model()
    apply_lora(other_layers, ("W_key",), rank=4, alpha=8)
    with pytest.raises(ValueError, match="another model|does not have"):
        load_adapter(other_layers, path)
    other_rank = _model()
    apply_lora(other_rank, ("W_query", "W_value"), rank=2, alpha=8)
    with pytest.raises(ValueError, match="rank 2, the adapter has rank 4"):
        load_adapter(other_rank, path)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a LoRA adapter"):
        load_adapter(_model(), tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no LoRA layers"):
        save_adapter(_model(), tmp_path / "none.pt")


def test_a_wrapped_llama_generates_with_the_cache():
    # LlamaModel allocates its KV cache from W_key.weight's dtype and device: a wrapped W_key must answer.
    from gpt_from_scratch import generate
    from gpt_from_scratch.llama import LlamaModel
    torch.manual_seed(0)
    cfg = {"vocab_size": 50, "context_length": 16, "emb_dim": 32, "n_heads": 4, "n_kv_groups": 2, "n_layers": 2,
           "hidden_dim": 48, "rope_base": 10000.0, "rms_norm_eps": 1e-5, "tie_weights": True}
    model = LlamaModel(cfg).eval()
    apply_lora(model, ("W_query", "W_key", "W_value", "out_proj", "fc1", "fc2", "fc3"), rank=2, alpha=4)
    _randomise_B(model)
    layer = model.trf_blocks[0].att.W_key
    assert layer.weight is layer.linear.weight and layer.bias is None
    idx = torch.randint(0, 50, (2, 4))
    cached = generate(model, idx, 8, 16, use_cache=True)
    assert torch.equal(cached, generate(model, idx, 8, 16, use_cache=False))


def test_a_wrapped_model_in_eval_mode_draws_no_dropout():
    # load_smollm2 returns a model in eval mode; its new LoRA layers used to start in training mode.
    model = _model()
    apply_lora(model, ("W_query", "W_value"), rank=4, alpha=8, dropout=0.5)
    _randomise_B(model)
    assert not any(m.training for m in model.modules())
    x = torch.randint(0, 60, (2, 8))
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    model.train()
    assert all(m.training for m in lora_layers(model).values())


def test_a_second_apply_lora_is_refused_instead_of_freezing_the_first_adapters():
    model = _model()
    apply_lora(model, ("W_query",), rank=4, alpha=8)
    with pytest.raises(ValueError, match="already has LoRA layers"):
        apply_lora(model, ("W_value",), rank=4, alpha=8)
    assert all(m.A.requires_grad and m.B.requires_grad for m in lora_layers(model).values())


def test_merged_layers_are_frozen_like_the_rest():
    model = _model()
    apply_lora(model, ("W_query", "W_value"), rank=4, alpha=8)
    merge_lora(model)
    assert count_parameters(model)[0] == 0


def test_blocks_must_be_a_collection_of_indices():
    with pytest.raises(TypeError, match="blocks must be None or a collection"):
        apply_lora(_model(), ("W_query",), rank=4, alpha=8, blocks=1)
