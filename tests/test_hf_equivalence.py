"""GPTModel computes the same function as Hugging Face's GPT2LMHeadModel, given the same weights."""

import pytest
import torch

from gpt_from_scratch import GPTModel, generate_text_simple, load_hf_gpt2_weights

transformers = pytest.importorskip("transformers", reason="transformers is a test-only dependency (dev extra)")

CFG = {"vocab_size": 300, "context_length": 16, "emb_dim": 64, "n_heads": 4, "n_layers": 3,
       "drop_rate": 0.0, "qkv_bias": True}


def hf_model(cfg, tied):
    config = transformers.GPT2Config(
        vocab_size=cfg["vocab_size"], n_positions=cfg["context_length"], n_embd=cfg["emb_dim"],
        n_layer=cfg["n_layers"], n_head=cfg["n_heads"], activation_function="gelu_new",
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
        tie_word_embeddings=tied,
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    # Hugging Face initialises biases to 0 and norms to 1; randomise everything so that a swapped or
    # untransposed weight cannot hide.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return model.eval()


@pytest.mark.parametrize("tied", [False, True])
def test_same_logits_as_hugging_face(tied):
    hf = hf_model(CFG, tied)
    ours = load_hf_gpt2_weights(GPTModel(CFG, tie_weights=tied).eval(), hf.state_dict())
    idx = torch.randint(0, CFG["vocab_size"], (3, CFG["context_length"]))
    with torch.no_grad():
        diff = (ours(idx) - hf(idx).logits).abs().max().item()
    assert diff < 1e-4, f"max |logit difference| = {diff}"


def test_same_greedy_continuation_as_hugging_face_generate():
    hf = hf_model(CFG, tied=True)
    ours = load_hf_gpt2_weights(GPTModel(CFG, tie_weights=True).eval(), hf.state_dict())
    prompt = torch.tensor([[5, 17, 42, 99]])
    theirs = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False,
                         pad_token_id=0)
    assert generate_text_simple(ours, prompt, 8, CFG["context_length"]).tolist() == theirs.tolist()


def test_loading_needs_qkv_bias():
    hf = hf_model(CFG, tied=True)
    with pytest.raises(ValueError, match="qkv_bias=True"):
        load_hf_gpt2_weights(GPTModel({**CFG, "qkv_bias": False}), hf.state_dict())


def test_loading_into_a_model_of_another_size_names_the_mismatch():
    hf = hf_model(CFG, tied=True)
    with pytest.raises(ValueError, match="checkpoint has 3 transformer blocks, the model has 2"):
        load_hf_gpt2_weights(GPTModel({**CFG, "n_layers": 2}), hf.state_dict())
    with pytest.raises(ValueError, match=r"'transformer.wpe.weight' has shape \(16, 64\), but a GPT-2 of 3 layers, "
                                         r"width 64, vocabulary 300, context 32 needs \(32, 64\)"):
        load_hf_gpt2_weights(GPTModel({**CFG, "context_length": 32}), hf.state_dict())
