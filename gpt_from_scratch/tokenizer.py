"""From text to token ids and back.

Two kinds of tokenizer live here, in the order the series meets them:

1. Simple word-level tokenizers built from a regular expression. ``build_vocab`` collects every word
   and punctuation mark of a text; ``SimpleTokenizerV1`` maps them to ids and fails on a word it has
   never seen; ``SimpleTokenizerV2`` maps unknown words to ``<|unk|>`` and knows ``<|endoftext|>``.
2. GPT-2's byte-pair encoding (BPE), through ``get_tokenizer()``. BPE never meets an unknown word: a
   rare word is split into known sub-word pieces, down to single bytes if need be.

``get_tokenizer()`` works offline. ``tiktoken.get_encoding("gpt2")`` downloads GPT-2's merge ranks the
first time it runs; we ship the same file (``assets/gpt2.tiktoken``, byte-identical to tiktoken's
``r50k_base.tiktoken``, MIT licence in ``assets/LICENSE-gpt2-tiktoken``) and build the encoding from it
with tiktoken's documented constructor.
"""

import functools
import re
from pathlib import Path

import tiktoken
from tiktoken.load import load_tiktoken_bpe

# Split on punctuation, double dashes and whitespace; the capture group keeps the separators.
_SPLIT = re.compile(r'([,.:;?_!"()\']|--|\s)')
# When decoding, remove the spaces that joining put before punctuation and after "(".
_SPACE_BEFORE_PUNCT = re.compile(r'\s+([,.:;?!")\'])')
_SPACE_AFTER_PAREN = re.compile(r'\(\s+')

END_OF_TEXT = "<|endoftext|>"
UNKNOWN = "<|unk|>"


def split_text(text):
    """Split ``text`` into words and punctuation marks, dropping whitespace.

    >>> split_text("Hello, world. Is this-- a test?")
    ['Hello', ',', 'world', '.', 'Is', 'this', '--', 'a', 'test', '?']
    """
    return [piece.strip() for piece in _SPLIT.split(text) if piece.strip()]


def build_vocab(text, special_tokens=()):
    """Map every distinct word/punctuation of ``text`` to an id, in sorted order.

    ``special_tokens`` (e.g. ``[END_OF_TEXT, UNKNOWN]``) get the ids after the words.
    Returns a dict ``{token: id}``.
    """
    words = sorted(set(split_text(text)))
    words += [tok for tok in special_tokens if tok not in words]
    return {token: i for i, token in enumerate(words)}


class UnknownTokenError(KeyError):
    """A word that is not in the vocabulary. A KeyError, like a failed dict lookup, that prints cleanly."""

    def __str__(self):
        return str(self.args[0])


class SimpleTokenizerV1:
    """Word-level tokenizer over a fixed vocabulary; an unknown word is an error."""

    def __init__(self, vocab):
        if not isinstance(vocab, dict) or not vocab:
            raise TypeError("vocab must be a non-empty dict {token: id}, e.g. from build_vocab(text)")
        self.str_to_int = vocab
        self.int_to_str = {i: s for s, i in vocab.items()}

    def _lookup(self, token):
        if token not in self.str_to_int:
            raise UnknownTokenError(
                f"{token!r} is not in the vocabulary ({len(self.str_to_int)} tokens); "
                f"SimpleTokenizerV2 maps unknown words to {UNKNOWN}"
            )
        return self.str_to_int[token]

    def encode(self, text):
        """str -> list of ids."""
        return [self._lookup(token) for token in split_text(text)]

    def decode(self, ids):
        """list of ids -> str, with words joined by spaces and no space before punctuation."""
        unknown = [i for i in ids if i not in self.int_to_str]
        if unknown:
            raise ValueError(f"token id {unknown[0]} is not in the vocabulary (ids 0..{len(self.int_to_str) - 1})")
        text = " ".join(self.int_to_str[i] for i in ids)
        return _SPACE_AFTER_PAREN.sub("(", _SPACE_BEFORE_PUNCT.sub(r"\1", text))


class SimpleTokenizerV2(SimpleTokenizerV1):
    """Like V1, but an unknown word becomes ``<|unk|>``; the vocab must contain that token."""

    def __init__(self, vocab):
        super().__init__(vocab)
        if UNKNOWN not in vocab:
            raise ValueError(f"SimpleTokenizerV2 needs {UNKNOWN!r} in its vocab: build_vocab(text, [{END_OF_TEXT!r}, {UNKNOWN!r}])")

    def _lookup(self, token):
        return self.str_to_int.get(token, self.str_to_int[UNKNOWN])


# --- GPT-2's byte-pair encoding, offline --------------------------------------------------------

ASSETS = Path(__file__).parent / "assets"
GPT2_BPE_FILE = ASSETS / "gpt2.tiktoken"
GPT2_BPE_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"

# GPT-2's pre-tokenisation pattern: BPE merges never cross these pieces, so "don't", " world" and a
# run of spaces are split apart before merging. This is tiktoken's r50k_pat_str, a faster but
# equivalent spelling of the original GPT-2 pattern
#   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
GPT2_PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


@functools.lru_cache(maxsize=None)
def get_tokenizer():
    """GPT-2's BPE tokenizer as a ``tiktoken.Encoding``, built from the file shipped in the package.

    Equal to ``tiktoken.get_encoding("gpt2")`` but never touches the network. Built once, then cached.
    The file's SHA-256 is checked when it is read, so a damaged copy fails loudly.

    >>> get_tokenizer().encode("Hello, I am")
    [15496, 11, 314, 716]
    """
    ranks = load_tiktoken_bpe(str(GPT2_BPE_FILE), expected_hash=GPT2_BPE_SHA256)
    return tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=len(ranks) + 1,
        pat_str=GPT2_PAT_STR,
        mergeable_ranks=ranks,
        special_tokens={END_OF_TEXT: len(ranks)},  # 50256
    )
