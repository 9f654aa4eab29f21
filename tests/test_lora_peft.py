"""Our LoRA on our Llama equals peft's LoRA on transformers' Llama: same logits, same gradients for
every A and B (a tiny random configuration, so it runs in a second)."""

import pytest
import torch

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

from gpt_from_scratch.llama_weights import llama_from_hf  # noqa: E402
from gpt_from_scratch.lora import apply_lora, lora_layers  # noqa: E402

OURS_TO_HF = {"W_query": "q_proj", "W_key": "k_proj", "W_value": "v_proj", "out_proj": "o_proj"}


@pytest.mark.parametrize("targets, blocks", [(("W_query", "W_value"), None), (("W_key", "out_proj"), [1, 2])])
def test_lora_matches_peft_logits_and_gradients(targets, blocks):
    torch.manual_seed(0)
    hf_cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                                      num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=64,
                                      rms_norm_eps=1e-5, tie_word_embeddings=True, rope_theta=10000.0)
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    ours = llama_from_hf(hf)
    rank, alpha = 4, 12
    names = apply_lora(ours, targets, rank, alpha, blocks=blocks)
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, bias="none",
                             target_modules=[OURS_TO_HF[t] for t in targets], layers_to_transform=blocks)
    theirs = peft.get_peft_model(hf, config).eval()

    g = torch.Generator().manual_seed(1)
    their_modules = dict(theirs.named_modules())
    pairs = []
    for name, layer in lora_layers(ours).items():
        _, i, _, proj = name.split(".")
        their = their_modules[f"base_model.model.model.layers.{i}.self_attn.{OURS_TO_HF[proj]}"]
        with torch.no_grad():
            layer.B.copy_(torch.randn(layer.B.shape, generator=g) * 0.2)  # B != 0, so A gets a gradient too
            their.lora_A["default"].weight.copy_(layer.A)
            their.lora_B["default"].weight.copy_(layer.B)
        pairs.append((name, layer, their))
    assert len(pairs) == len(names) == sum(1 for n, _ in theirs.named_modules() if n.endswith("lora_A.default"))
    assert {n for n, p in ours.named_parameters() if p.requires_grad} == {f"{n}.{m}" for n in names for m in "AB"}

    x = torch.randint(0, 97, (2, 11), generator=g)
    y = torch.randint(0, 97, (2, 11), generator=g)
    our_logits = ours(x)
    their_logits = theirs(input_ids=x).logits
    diff = (our_logits - their_logits).abs().max().item()
    assert diff < 1e-5, diff
    ce = torch.nn.functional.cross_entropy
    ce(our_logits.flatten(0, 1), y.flatten()).backward()
    ce(their_logits.flatten(0, 1), y.flatten()).backward()
    for name, layer, their in pairs:
        assert torch.allclose(layer.A.grad, their.lora_A["default"].weight.grad, atol=1e-6), name
        assert torch.allclose(layer.B.grad, their.lora_B["default"].weight.grad, atol=1e-6), name
        assert layer.A.grad.abs().max() > 0 and layer.B.grad.abs().max() > 0
