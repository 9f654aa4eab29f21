import base64
import hashlib
import shutil
import socket

import pytest
import regex
import tiktoken

import gpt_from_scratch.tokenizer as tokmod
from gpt_from_scratch import (END_OF_TEXT, UNKNOWN, SimpleTokenizerV1, SimpleTokenizerV2, build_vocab,
                              get_tokenizer, split_text)

SAMPLES = [
    "Hello, I am",
    "Every effort moves you",
    "Akwirw ier",
    "  leading spaces,\ttabs\tand\n\nnewlines   \n  trailing   ",
    "It's they're we've I'll you'd I'M IT'S",
    "Numbers: 3.14159, 1,000,000 and 2026-11-21.",
    "Unicode: café, naïve, Zürich, 東京, Москва, emoji 🙂🚀, math ∑∫√",
    "code = {'a': [1, 2, 3]}  # comment\n    return x**2",
    "Hello, do you like tea? <|endoftext|> In the sunlit terraces of the palace.",
    "",
]

# The original GPT-2 split pattern, as published with GPT-2's encoder.py.
ORIGINAL_GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def reference_bpe_encode(text, ranks):
    """Textbook byte-level BPE, written independently of tiktoken: split with GPT-2's original regex,
    then in each piece repeatedly merge the adjacent pair whose merged bytes have the lowest rank."""
    ids = []
    for piece in regex.findall(ORIGINAL_GPT2_PATTERN, text):
        parts = [bytes([b]) for b in piece.encode("utf-8")]
        while len(parts) > 1:
            candidates = [(ranks.get(parts[i] + parts[i + 1]), i) for i in range(len(parts) - 1)]
            candidates = [(r, i) for r, i in candidates if r is not None]
            if not candidates:
                break
            _, i = min(candidates)
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        ids.extend(ranks[p] for p in parts)
    return ids


@pytest.fixture(scope="module")
def ranks():
    out = {}
    for line in tokmod.GPT2_BPE_FILE.read_text().splitlines():
        token, rank = line.split()
        out[base64.b64decode(token)] = int(rank)
    return out


def test_series_results():
    tok = get_tokenizer()
    assert tok.encode("Hello, I am") == [15496, 11, 314, 716]
    assert tok.encode("Every effort moves you") == [6109, 3626, 6100, 345]
    assert tok.n_vocab == 50257
    assert tok.encode(END_OF_TEXT, allowed_special={END_OF_TEXT}) == [50256]
    assert tok.eot_token == 50256


def test_shipped_file_is_r50k_base(ranks):
    data = tokmod.GPT2_BPE_FILE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == tokmod.GPT2_BPE_SHA256 == \
        "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
    assert len(ranks) == 50256 and sorted(ranks.values()) == list(range(50256))


def test_tokenizer_is_built_once():
    assert get_tokenizer() is get_tokenizer()
    assert isinstance(get_tokenizer(), tiktoken.Encoding)


@pytest.mark.parametrize("text", [s for s in SAMPLES if END_OF_TEXT not in s])
def test_equals_an_independent_reference_bpe(text, ranks):
    assert get_tokenizer().encode_ordinary(text) == reference_bpe_encode(text, ranks)


@pytest.mark.parametrize("text", SAMPLES)
def test_decode_inverts_encode(text):
    tok = get_tokenizer()
    assert tok.decode(tok.encode(text, allowed_special={END_OF_TEXT})) == text


def test_special_token_in_text_must_be_allowed():
    tok = get_tokenizer()
    with pytest.raises(ValueError):
        tok.encode("a <|endoftext|> b")
    assert 50256 in tok.encode("a <|endoftext|> b", allowed_special={END_OF_TEXT})


def test_unknown_word_splits_into_known_pieces():
    tok = get_tokenizer()
    ids = tok.encode("Akwirw ier")
    assert len(ids) > 2
    assert "".join(tok.decode([i]) for i in ids) == "Akwirw ier"


def test_corrupted_rank_file_fails_its_hash_check(tmp_path, monkeypatch):
    bad = tmp_path / "gpt2.tiktoken"
    shutil.copy(tokmod.GPT2_BPE_FILE, bad)
    with open(bad, "ab") as f:
        f.write(b"IQ== 50256\n")
    monkeypatch.setattr(tokmod, "GPT2_BPE_FILE", bad)
    tokmod.get_tokenizer.cache_clear()
    try:
        with pytest.raises(ValueError, match="[Hh]ash"):
            tokmod.get_tokenizer()
    finally:
        tokmod.get_tokenizer.cache_clear()


def _online_gpt2():
    try:
        socket.create_connection(("openaipublic.blob.core.windows.net", 443), timeout=3).close()
        return tiktoken.get_encoding("gpt2")
    except Exception as err:  # no network, DNS failure, proxy refusal...
        pytest.skip(f"tiktoken.get_encoding('gpt2') needs the internet, unavailable here ({type(err).__name__})")


@pytest.mark.parametrize("text", SAMPLES)
def test_equals_tiktoken_online_gpt2(text):
    online = _online_gpt2()
    assert get_tokenizer().encode(text, allowed_special="all") == online.encode(text, allowed_special="all")


# --- the simple word-level tokenizers --------------------------------------------------------------

TEXT = 'It\'s the last he painted, you know," Mrs. Gisburn said with pardonable pride.'


def test_split_text_keeps_punctuation_and_drops_whitespace():
    assert split_text("Hello, world. Is this-- a test?") == \
        ["Hello", ",", "world", ".", "Is", "this", "--", "a", "test", "?"]
    assert split_text("  \n\t ") == []


def test_build_vocab_is_sorted_and_specials_come_last():
    vocab = build_vocab("b a, c a", special_tokens=[END_OF_TEXT, UNKNOWN])
    assert vocab == {",": 0, "a": 1, "b": 2, "c": 3, END_OF_TEXT: 4, UNKNOWN: 5}


def test_v1_round_trip():
    text = 'He painted, you know," Mrs. Gisburn said (with pride): yes!'
    tok = SimpleTokenizerV1(build_vocab(text))
    assert tok.decode(tok.encode(text)) == text


def test_v1_is_lossy_where_the_series_says_so():
    # Whitespace is dropped and re-made as single spaces; an apostrophe is punctuation, so "It's"
    # comes back with a space after it. Byte-pair encoding has neither problem.
    tok = SimpleTokenizerV1(build_vocab(TEXT))
    assert tok.decode(tok.encode("It's  the\nlast")) == "It' s the last"


def test_v1_unknown_word_names_it():
    tok = SimpleTokenizerV1(build_vocab(TEXT))
    with pytest.raises(KeyError, match="'Hello' is not in the vocabulary"):
        tok.encode("Hello, Mrs. Gisburn")


def test_v1_decode_unknown_id():
    tok = SimpleTokenizerV1(build_vocab("a b"))
    with pytest.raises(ValueError, match="token id 7 is not in the vocabulary"):
        tok.decode([0, 7])


def test_v2_maps_unknown_words_and_knows_end_of_text():
    vocab = build_vocab(TEXT, special_tokens=[END_OF_TEXT, UNKNOWN])
    tok = SimpleTokenizerV2(vocab)
    ids = tok.encode(f"Hello, do you like tea? {END_OF_TEXT} the last he painted")
    # Not in TEXT: Hello, do, like, tea and "?"; known: ",", "you", "the", "last", "he", "painted".
    assert ids.count(vocab[UNKNOWN]) == 5
    assert ids.count(vocab[END_OF_TEXT]) == 1
    assert tok.decode(ids) == f"{UNKNOWN}, {UNKNOWN} you {UNKNOWN} {UNKNOWN} {UNKNOWN} {END_OF_TEXT} the last he painted"


def test_v2_needs_the_unknown_token():
    with pytest.raises(ValueError, match="needs '<\\|unk\\|>'"):
        SimpleTokenizerV2(build_vocab(TEXT))


def test_tokenizer_needs_a_vocab():
    with pytest.raises(TypeError, match="non-empty dict"):
        SimpleTokenizerV1({})
