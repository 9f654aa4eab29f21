"""Turning one long text into (input, target) training pairs with a sliding window.

A language model learns to predict the next token. From token ids ``[t0, t1, t2, ...]`` a window of
``max_length`` tokens gives an input ``[t_i, ..., t_{i+max_length-1}]`` and a target that is the same
window moved one token to the right, ``[t_{i+1}, ..., t_{i+max_length}]``: at every position the target
is the token that follows. The window then slides ``stride`` tokens; ``stride == max_length`` gives
non-overlapping windows, a smaller stride makes them overlap.

The second half of the file does the same for corpora larger than memory: ``prepare_token_files``
writes the token ids once to disk, ``TokenFileDataset`` reads its windows through ``np.memmap``.
"""

from pathlib import Path

import tiktoken
import torch
from torch.utils.data import DataLoader, Dataset

from .checks import non_negative_int, positive_int
from .tokenizer import ASSETS, END_OF_TEXT, get_tokenizer

SAMPLE_TEXT_FILE = ASSETS / "corpus.txt"


def load_sample_text():
    """The short story shipped with the package (written for this project; see assets/README.md)."""
    return SAMPLE_TEXT_FILE.read_text(encoding="utf-8")


def _encode(tokenizer, text):
    # tiktoken refuses special tokens found in the text unless they are allowed explicitly;
    # the simple word-level tokenizers know <|endoftext|> as an ordinary vocabulary entry.
    if isinstance(tokenizer, tiktoken.Encoding):
        return tokenizer.encode(text, allowed_special={END_OF_TEXT})
    return tokenizer.encode(text)


class GPTDatasetV1(Dataset):
    """Sliding-window dataset over one text.

    Item ``k`` is a pair of ``LongTensor`` of shape ``(max_length,)``: the input ids starting at token
    ``k * stride`` and the target ids, the same window shifted right by one token.
    """

    def __init__(self, txt, tokenizer, max_length, stride):
        if not isinstance(txt, str):
            raise TypeError(f"txt must be a str, got {type(txt).__name__}")
        positive_int("max_length", max_length)
        positive_int("stride", stride)
        token_ids = _encode(tokenizer, txt)
        if len(token_ids) < max_length + 1:
            raise ValueError(
                f"the text has {len(token_ids)} tokens, too short for max_length={max_length}: "
                f"one window needs max_length + 1 = {max_length + 1} tokens (its input plus the next token)"
            )
        self.input_ids = []
        self.target_ids = []
        # The last start position still leaves room for the target's final token.
        for i in range(0, len(token_ids) - max_length, stride):
            self.input_ids.append(torch.tensor(token_ids[i : i + max_length]))
            self.target_ids.append(torch.tensor(token_ids[i + 1 : i + max_length + 1]))

    def __len__(self):
        return len(self.input_ids)

    def __getitem__(self, idx):
        return self.input_ids[idx], self.target_ids[idx]


def create_dataloader(txt, batch_size=4, max_length=256, stride=128, shuffle=True, drop_last=True,
                      num_workers=0, tokenizer=None, seed=None):
    """A ``DataLoader`` over ``GPTDatasetV1(txt, tokenizer, max_length, stride)``.

    Each batch is ``(inputs, targets)``, both of shape ``(batch_size, max_length)``. The tokenizer
    defaults to GPT-2's BPE (``get_tokenizer()``). ``drop_last`` drops a final short batch, which
    would otherwise give a noisier loss step. With ``seed``, shuffling uses the loader's own
    ``torch.Generator`` (``loader.generator``) instead of the global random state, so the order of
    batches is reproducible and independent of everything else that draws random numbers.
    """
    positive_int("batch_size", batch_size)
    non_negative_int("num_workers", num_workers)
    dataset = GPTDatasetV1(txt, tokenizer or get_tokenizer(), max_length, stride)
    if drop_last and len(dataset) < batch_size:
        raise ValueError(
            f"the text gives only {len(dataset)} window(s) of max_length={max_length}, stride={stride}; "
            f"with drop_last=True a batch_size of {batch_size} would leave no batch at all"
        )
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      num_workers=num_workers, generator=generator)


# The series' name for the same function.
create_dataloader_v1 = create_dataloader


# ---------------------------------------------------------------------------------------------------
# Corpora larger than memory: token ids in a file, read through np.memmap.
#
# GPTDatasetV1 keeps the whole text and every window in memory: fine for a story, not for gigabytes.
# For those, ``prepare_token_files`` tokenizes the text once and writes the ids as 2-byte unsigned
# integers (uint16: 0 .. 65,535, enough for GPT-2's 50,257 tokens) to ``train.bin`` and ``val.bin``,
# with ``meta.json`` describing them. ``TokenFileDataset`` then maps a file into memory with
# ``np.memmap``: the operating system reads from disk only the pages a window touches, so a window
# costs 2 x (max_length + 1) bytes whatever the file's size.
# ---------------------------------------------------------------------------------------------------

TOKEN_FILES_FORMAT = "gpt_from_scratch.tokens/1"
_UINT16_LIMIT = 2**16  # uint16 holds the ids 0 .. 65,535


class TokenFileDataset(Dataset):
    """Sliding windows over a file of uint16 token ids, read through ``np.memmap``.

    The same windows as ``GPTDatasetV1`` over the same ids: item ``k`` is ``(input, target)``, two
    ``LongTensor`` of shape ``(max_length,)`` starting at token ``k * stride`` and one token later.
    """

    def __init__(self, path, max_length, stride):
        import numpy as np

        positive_int("max_length", max_length)
        positive_int("stride", stride)
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"token file not found: {self.path}")
        if self.path.stat().st_size % 2:
            raise ValueError(f"{self.path} has an odd number of bytes: not a file of uint16 token ids")
        self.tokens = np.memmap(self.path, dtype=np.uint16, mode="r")  # nothing is read yet
        if len(self.tokens) < max_length + 1:
            raise ValueError(f"{self.path} holds {len(self.tokens)} tokens, too few for max_length={max_length}: "
                             f"one window needs max_length + 1 = {max_length + 1}")
        self.max_length, self.stride = max_length, stride

    def __len__(self):
        return len(range(0, len(self.tokens) - self.max_length, self.stride))  # as in GPTDatasetV1

    def __getitem__(self, idx):
        start = range(0, len(self.tokens) - self.max_length, self.stride)[idx]  # IndexError past the end
        window = torch.from_numpy(self.tokens[start : start + self.max_length + 1].astype("int64"))
        return window[:-1], window[1:]


def _corpus_files(paths):
    """The files named in ``paths``: files as given, folders as their ``*.txt`` files (recursively, sorted)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*.txt") if f.is_file())
            if not found:
                raise ValueError(f"folder {p} holds no .txt file")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"corpus not found: {p}")
    if not files:
        raise ValueError("no corpus given: name at least one text file or folder")
    return files


def _text_chunks(path, chunk_chars=1 << 20):
    """The text of ``path`` in pieces of about ``chunk_chars`` characters, each ending at a line end, so
    a large file is never held whole (cut at a line end, BPE tokens almost never change)."""
    with open(path, encoding="utf-8", newline="") as f:
        piece, size = [], 0
        try:
            for line in f:
                piece.append(line)
                size += len(line)
                if size >= chunk_chars:
                    yield "".join(piece)
                    piece, size = [], 0
        except UnicodeDecodeError as err:
            raise ValueError(f"corpus {path} is not UTF-8 text ({err.reason} at a byte near {err.start})") from None
        if piece:
            yield "".join(piece)


def prepare_token_files(corpus, out_dir, val_fraction=0.1, tokenizer=None, progress=True):
    """Tokenize the UTF-8 text files ``corpus`` (a path, a folder of ``*.txt``, or a list of them) into
    ``out_dir/train.bin``, ``out_dir/val.bin`` (uint16 token ids) and ``out_dir/meta.json``.

    Each file is one document; ``<|endoftext|>`` separates documents, as in GPT-2's training data. The
    last ``val_fraction`` of all the tokens (files in the order given, folders sorted) becomes the
    validation set, like the CLI's split of a single text. Files are read piece by piece, so the
    corpus never needs to fit in memory. Returns the metadata dict.
    """
    import json

    import numpy as np
    from tqdm.auto import tqdm

    from .checks import number

    number("val_fraction", val_fraction, low=0, high=1, low_open=True, high_open=True)
    tokenizer = tokenizer or get_tokenizer()
    if tokenizer.n_vocab > _UINT16_LIMIT:
        raise ValueError(f"the tokenizer has {tokenizer.n_vocab} tokens; uint16 files hold ids below {_UINT16_LIMIT}")
    files = _corpus_files(corpus)
    eot = tokenizer.encode(END_OF_TEXT, allowed_special={END_OF_TEXT})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_path, val_path = out_dir / "train.bin", out_dir / "val.bin"
    tmp = out_dir / "all.bin.tmp"

    total, documents = 0, 0
    bar = tqdm(total=sum(f.stat().st_size for f in files), unit="B", unit_scale=True, desc="tokenizing",
               disable=not progress)
    with open(tmp, "wb") as out:
        for f in files:
            if documents:
                np.asarray(eot, dtype=np.uint16).tofile(out)
                total += len(eot)
            for text in _text_chunks(f):
                ids = np.asarray(_encode(tokenizer, text), dtype=np.uint16)
                ids.tofile(out)
                total += len(ids)
                bar.update(len(text.encode("utf-8")))
            documents += 1
    bar.close()

    n_val = int(total * val_fraction)
    if n_val < 2 or total - n_val < 2:
        tmp.unlink()
        raise ValueError(f"the corpus has {total} tokens: too few to hold out val_fraction={val_fraction} "
                         "(each split needs at least 2 tokens)")
    # The validation tokens are the tail: copy it to val.bin, then cut it off the file.
    all_tokens = np.memmap(tmp, dtype=np.uint16, mode="r")
    with open(val_path, "wb") as out:
        for start in range(total - n_val, total, 1 << 24):
            all_tokens[start : min(start + (1 << 24), total)].tofile(out)
    del all_tokens
    with open(tmp, "r+b") as f:
        f.truncate(2 * (total - n_val))
    tmp.replace(train_path)
    meta = {"format": TOKEN_FILES_FORMAT, "tokenizer": getattr(tokenizer, "name", "gpt2"),
            "vocab_size": tokenizer.n_vocab, "dtype": "uint16", "train_tokens": total - n_val,
            "val_tokens": n_val, "val_fraction": val_fraction, "documents": documents,
            "separator": END_OF_TEXT}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def read_token_files_meta(data_dir):
    """The ``meta.json`` of a folder written by ``prepare_token_files``, checked against its two files."""
    import json

    data_dir = Path(data_dir)
    meta_path = data_dir / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: is {data_dir} a folder written by 'gpt-from-scratch prepare'?")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"{meta_path} is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != TOKEN_FILES_FORMAT:
        raise ValueError(f"{meta_path} is not token-file metadata (expected format {TOKEN_FILES_FORMAT!r})")
    missing = [key for key in ("vocab_size", "train_tokens", "val_tokens") if not isinstance(meta.get(key), int)]
    if missing:
        raise ValueError(f"{meta_path} lacks the integer field(s) {', '.join(missing)}")
    for split in ("train", "val"):
        path = data_dir / f"{split}.bin"
        if not path.is_file():
            raise FileNotFoundError(f"token file not found: {path}")
        if path.stat().st_size != 2 * meta[f"{split}_tokens"]:
            raise ValueError(f"{path} holds {path.stat().st_size // 2} tokens but {meta_path} says "
                             f"{meta[f'{split}_tokens']}: the folder is incomplete or was changed")
    return meta
