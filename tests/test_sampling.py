import pytest
import torch

from gpt_from_scratch import GPTModel, evaluating, generate, generate_text_simple
from gpt_from_scratch.generate import sample_next_token  # not at the top level: notebook 06 has it as an exercise


@pytest.fixture
def model(tiny_cfg):
    torch.manual_seed(123)
    return GPTModel(tiny_cfg).eval()


PROMPT = torch.tensor([[1, 2, 3], [4, 5, 6]])


def test_temperature_zero_and_top_k_one_are_greedy(model):
    greedy = generate_text_simple(model, PROMPT, 8, 12)
    assert torch.equal(generate(model, PROMPT, 8, 12), greedy)
    assert torch.equal(generate(model, PROMPT, 8, 12, temperature=1.5, top_k=1, seed=0), greedy)


def test_same_seed_same_text_and_global_rng_untouched(model):
    state = torch.get_rng_state()
    a = generate(model, PROMPT, 10, 12, temperature=1.0, seed=42)
    b = generate(model, PROMPT, 10, 12, temperature=1.0, seed=torch.Generator().manual_seed(42))
    assert torch.equal(a, b)
    assert torch.equal(state, torch.get_rng_state())
    others = [generate(model, PROMPT, 10, 12, temperature=1.0, seed=s) for s in range(5)]
    assert any(not torch.equal(a, o) for o in others)


class FixedLogits(torch.nn.Module):
    """A fake model whose next-token logits are always the same vector."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor(logits)
        self.cfg = {"vocab_size": len(logits)}

    def forward(self, idx):
        return self.logits.expand(idx.shape[0], idx.shape[1], -1)


def test_top_k_never_picks_outside_the_k_best():
    fake = FixedLogits([0.0, 5.0, 1.0, 4.9, 3.0, -2.0, 4.8])
    out = generate(fake, torch.zeros(64, 1, dtype=torch.long), 20, 4, temperature=5.0, top_k=3, seed=0)
    picked = set(out[:, 1:].flatten().tolist())
    assert picked == {1, 3, 6}  # all three best are drawn at a high temperature, nothing else


def test_temperature_sharpens_and_flattens():
    fake = FixedLogits([2.0, 1.0, 0.0])
    start = torch.zeros(1, 1, dtype=torch.long)

    def freq(t):
        out = generate(fake, start, 3000, 1, temperature=t, seed=1)[0, 1:]
        return torch.bincount(out, minlength=3).float() / out.numel()

    expected = torch.softmax(torch.tensor([2.0, 1.0, 0.0]) / 2.0, dim=0)
    assert torch.allclose(freq(2.0), expected, atol=0.03)
    assert freq(0.1)[0] > 0.99
    assert freq(100.0).min() > 0.28


def test_eos_stops_generation_and_is_not_included():
    fake = FixedLogits([0.0, 0.0, 9.0, 0.0])  # always picks token 2
    out = generate(fake, torch.tensor([[0, 1]]), 10, 4, eos_id=2)
    assert out.tolist() == [[0, 1]]
    out = generate(fake, torch.tensor([[0, 1]]), 10, 4, eos_id=3)
    assert out.shape == (1, 12)


def test_eos_in_a_batch_pads_finished_sequences(model):
    out = generate(model, PROMPT, 6, 12)
    eos = out[0, 4].item()  # the second token row 0 generates
    stopped = generate(model, PROMPT, 6, 12, eos_id=eos)
    row0 = stopped[0, 3:].tolist()
    assert row0[:1] == out[0, 3:4].tolist() and all(t == eos for t in row0[1:])


@pytest.mark.parametrize("kwargs, msg", [
    ({"temperature": -0.5}, r"temperature must be a number >= 0 \(0 = greedy\), got -0.5"),
    ({"temperature": float("nan")}, "temperature must be a number >= 0"),
    ({"top_k": 0}, r"top_k must be an integer in \[1, 50\] \(the vocabulary size\), got 0"),
    ({"top_k": 51}, r"top_k must be an integer in \[1, 50\].*got 51"),
    ({"eos_id": 50}, r"eos_id must be an integer in \[0, 49\] \(a token id\), got 50"),
    ({"max_new_tokens": -3}, "max_new_tokens must be a non-negative integer, got -3"),
])
def test_bad_sampling_arguments(model, kwargs, msg):
    args = {"max_new_tokens": 2, **kwargs}
    with pytest.raises(ValueError, match=msg):
        generate(model, PROMPT, context_size=12, **args)


def test_bad_seed(model):
    with pytest.raises(TypeError, match="seed must be an int or a torch.Generator"):
        generate(model, PROMPT, 2, 12, temperature=1.0, seed="42")


def test_sample_next_token_is_the_step_generate_takes(model):
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sample_next_token(logits), logits.argmax(dim=-1, keepdim=True))  # (batch, 1)
    assert torch.equal(sample_next_token(logits, temperature=2.0, top_k=1), logits.argmax(dim=-1, keepdim=True))
    draws = sample_next_token(logits[:1].repeat(2000, 1), 1.0, 3, torch.Generator().manual_seed(1))
    assert draws.shape == (2000, 1) and set(draws.flatten().tolist()) == set(logits[0].topk(3).indices.tolist())
    # generate's first new token is sample_next_token on the prompt's last logits with the seeded generator
    with torch.no_grad():
        last = model(PROMPT)[:, -1, :]
    first = sample_next_token(last, 1.3, 5, torch.Generator().manual_seed(9))
    assert torch.equal(generate(model, PROMPT, 1, 12, temperature=1.3, top_k=5, seed=9)[:, -1:], first)


def test_the_playground_marks_the_token_generate_picks_first():
    from gpt_from_scratch import GPT_CONFIG_124M, GenerationPlayground, get_tokenizer

    torch.manual_seed(123)
    pg = GenerationPlayground(GPTModel({**GPT_CONFIG_124M, "context_length": 16, "emb_dim": 16, "n_heads": 2,
                                        "n_layers": 1}), get_tokenizer())
    for seed in (1, 2, 3):
        text = pg.run("The clock", temperature=1.5, top_k=20, max_new_tokens=1, seed=seed)
        assert text == "The clock" + pg.next_token("The clock", temperature=1.5, top_k=20, seed=seed)


def test_evaluating_restores_the_mode_even_after_an_error(model):
    model.train()
    with pytest.raises(RuntimeError):
        with evaluating(model):
            assert not model.training
            raise RuntimeError
    assert model.training
    with evaluating(model.eval()):
        pass
    assert not model.training
