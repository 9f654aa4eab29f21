import pytest
import torch

from gpt_from_scratch import (GPTDatasetV1, SimpleTokenizerV2, build_vocab, create_dataloader, get_tokenizer,
                              load_sample_text)


@pytest.fixture(scope="module")
def story():
    return load_sample_text()


def test_sample_text_is_a_real_corpus(story):
    assert len(story) >= 20_000
    assert story.isascii()
    assert len(get_tokenizer().encode(story)) > 5_000


@pytest.mark.parametrize("max_length, stride", [(4, 1), (4, 4), (8, 3), (256, 128)])
def test_windows_are_the_text_shifted_by_one(story, max_length, stride):
    ids = get_tokenizer().encode(story)
    ds = GPTDatasetV1(story, get_tokenizer(), max_length, stride)
    # A window may start at 0, stride, 2*stride, ... as long as its target's last token exists.
    assert len(ds) == len(range(0, len(ids) - max_length, stride))
    for k in (0, 1, len(ds) - 1):
        x, y = ds[k]
        start = k * stride
        assert x.tolist() == ids[start:start + max_length]
        assert y.tolist() == ids[start + 1:start + max_length + 1]
        assert x.dtype == y.dtype == torch.long


def test_stride_sets_the_overlap(story):
    tok = get_tokenizer()
    overlapping = GPTDatasetV1(story, tok, max_length=4, stride=1)
    disjoint = GPTDatasetV1(story, tok, max_length=4, stride=4)
    assert overlapping[1][0][:3].tolist() == overlapping[0][0][1:].tolist()  # 3 tokens shared
    assert disjoint[1][0][0].item() == disjoint[0][1][-1].item()  # next window starts where the last target ends
    assert len(overlapping) > 3 * len(disjoint)  # stride 1 makes about 4x as many windows


def test_dataloader_batches(story):
    torch.manual_seed(123)
    loader = create_dataloader(story, batch_size=8, max_length=4, stride=4, shuffle=False)
    x, y = next(iter(loader))
    assert x.shape == y.shape == (8, 4)
    assert torch.equal(x[:, 1:], y[:, :-1])
    ids = get_tokenizer().encode(story)
    assert x[1].tolist() == ids[4:8]


def test_dataloader_drop_last_and_shuffle(story):
    ds_len = len(GPTDatasetV1(story, get_tokenizer(), 16, 16))
    loader = create_dataloader(story, batch_size=7, max_length=16, stride=16, drop_last=True)
    assert len(loader) == ds_len // 7
    torch.manual_seed(1)
    a = next(iter(create_dataloader(story, batch_size=4, max_length=8, stride=8, shuffle=True)))[0]
    torch.manual_seed(1)
    b = next(iter(create_dataloader(story, batch_size=4, max_length=8, stride=8, shuffle=True)))[0]
    assert torch.equal(a, b)


def test_end_of_text_is_allowed_in_the_corpus():
    ds = GPTDatasetV1("one story <|endoftext|> another story here", get_tokenizer(), 4, 1)
    assert 50256 in torch.cat([x for x, _ in ds]).tolist()


def test_works_with_the_simple_tokenizer():
    text = "the cat sat on the mat and the dog sat on the log"
    tok = SimpleTokenizerV2(build_vocab(text, ["<|endoftext|>", "<|unk|>"]))
    ds = GPTDatasetV1(text, tok, max_length=3, stride=2)
    assert tok.decode(ds[0][0].tolist()) == "the cat sat" and tok.decode(ds[0][1].tolist()) == "cat sat on"


def test_text_too_short_names_both_lengths():
    with pytest.raises(ValueError, match=r"the text has 4 tokens, too short for max_length=4.*needs max_length \+ 1 = 5"):
        GPTDatasetV1("Hello, I am", get_tokenizer(), max_length=4, stride=1)


@pytest.mark.parametrize("kwargs, err, msg", [
    ({"max_length": 0, "stride": 1}, ValueError, "max_length must be a positive integer, got 0"),
    ({"max_length": 4, "stride": -2}, ValueError, "stride must be a positive integer, got -2"),
    ({"max_length": 4.5, "stride": 1}, TypeError, "max_length must be a positive integer, got 4.5"),
])
def test_bad_window_arguments(story, kwargs, err, msg):
    with pytest.raises(err, match=msg):
        GPTDatasetV1(story, get_tokenizer(), **kwargs)


def test_no_full_batch_is_an_error():
    text = "one two three four five six seven eight nine ten"
    with pytest.raises(ValueError, match="only 2 window.*batch_size of 4 would leave no batch"):
        create_dataloader(text, batch_size=4, max_length=4, stride=4)


def test_text_must_be_a_string():
    with pytest.raises(TypeError, match="txt must be a str, got list"):
        GPTDatasetV1(["a", "b"], get_tokenizer(), 1, 1)
