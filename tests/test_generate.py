import pytest
import torch

from gpt_from_scratch import (GPT_CONFIG_124M, GPTModel, generate_text_simple, get_tokenizer, text_to_token_ids,
                              token_ids_to_text)


def test_the_series_result():
    """Seed 123, untrained GPT-2 124M, greedy: the exact ids and text the series prints."""
    torch.manual_seed(123)
    model = GPTModel(GPT_CONFIG_124M)
    model.eval()
    tok = get_tokenizer()
    idx = text_to_token_ids("Hello, I am", tok)
    assert idx.tolist() == [[15496, 11, 314, 716]]
    out = generate_text_simple(model, idx, max_new_tokens=6, context_size=GPT_CONFIG_124M["context_length"])
    assert out.tolist() == [[15496, 11, 314, 716, 27018, 24086, 47843, 30961, 42348, 7267]]
    assert token_ids_to_text(out, tok) == "Hello, I am Featureiman Byeswickattribute argue"


class LastTokenEcho(torch.nn.Module):
    """A fake model that predicts 'previous token + 1' and records what it was shown."""

    def __init__(self, vocab_size=20):
        super().__init__()
        self.cfg = {"vocab_size": vocab_size}
        self.seen = []

    def forward(self, idx):
        self.seen.append(idx.clone())
        logits = torch.zeros(*idx.shape, self.cfg["vocab_size"])
        logits.scatter_(2, ((idx + 1) % self.cfg["vocab_size"]).unsqueeze(-1), 1.0)
        return logits


def test_greedy_picks_the_argmax_and_appends():
    model = LastTokenEcho()
    out = generate_text_simple(model, torch.tensor([[3, 4], [10, 11]]), max_new_tokens=3, context_size=5)
    assert out.tolist() == [[3, 4, 5, 6, 7], [10, 11, 12, 13, 14]]


def test_context_is_cropped_to_context_size():
    model = LastTokenEcho()
    generate_text_simple(model, torch.tensor([[1, 2, 3, 4]]), max_new_tokens=3, context_size=2)
    assert [s.tolist() for s in model.seen] == [[[3, 4]], [[4, 5]], [[5, 6]]]


def test_generation_beyond_the_model_context_works_by_cropping(tiny_cfg):
    model = GPTModel(tiny_cfg).eval()
    out = generate_text_simple(model, torch.tensor([[1, 2, 3]]), max_new_tokens=20, context_size=12)
    assert out.shape == (1, 23)


def test_zero_new_tokens_returns_the_prompt(tiny_cfg):
    idx = torch.tensor([[1, 2, 3]])
    assert torch.equal(generate_text_simple(GPTModel(tiny_cfg), idx, 0, 12), idx)


def test_negative_max_new_tokens():
    with pytest.raises(ValueError, match="max_new_tokens must be a non-negative integer, got -1"):
        generate_text_simple(LastTokenEcho(), torch.tensor([[1]]), -1, 4)


def test_bad_context_size():
    with pytest.raises(ValueError, match="context_size must be a positive integer, got 0"):
        generate_text_simple(LastTokenEcho(), torch.tensor([[1]]), 1, 0)


def test_prompt_must_be_a_batch_of_integer_ids():
    with pytest.raises(ValueError, match="add a batch dimension"):
        generate_text_simple(LastTokenEcho(), torch.tensor([1, 2]), 1, 4)
    with pytest.raises(TypeError, match="integer tensor"):
        generate_text_simple(LastTokenEcho(), torch.tensor([[1.0, 2.0]]), 1, 4)
    with pytest.raises(ValueError, match=r"token id 25 is outside the vocabulary \[0, 20\)"):
        generate_text_simple(LastTokenEcho(), torch.tensor([[1, 25]]), 1, 4)


def test_empty_prompt():
    with pytest.raises(ValueError, match="the prompt is empty"):
        text_to_token_ids("", get_tokenizer())
    with pytest.raises(ValueError, match="token ids are empty"):
        generate_text_simple(LastTokenEcho(), torch.zeros(1, 0, dtype=torch.long), 1, 4)


def test_text_round_trip_with_end_of_text():
    tok = get_tokenizer()
    ids = text_to_token_ids("one<|endoftext|>two", tok)
    assert ids.shape[0] == 1 and 50256 in ids[0].tolist()
    assert token_ids_to_text(ids, tok) == "one<|endoftext|>two"
    assert token_ids_to_text(ids[0], tok) == "one<|endoftext|>two"


def test_decoding_a_batch_of_several_is_refused():
    with pytest.raises(ValueError, match=r"expected one sequence.*got \(2, 3\)"):
        token_ids_to_text(torch.zeros(2, 3, dtype=torch.long), get_tokenizer())
