"""Turning one long text into (input, target) training pairs with a sliding window.

A language model learns to predict the next token. From token ids ``[t0, t1, t2, ...]`` a window of
``max_length`` tokens gives an input ``[t_i, ..., t_{i+max_length-1}]`` and a target that is the same
window moved one token to the right, ``[t_{i+1}, ..., t_{i+max_length}]``: at every position the target
is the token that follows. The window then slides ``stride`` tokens; ``stride == max_length`` gives
non-overlapping windows, a smaller stride makes them overlap.
"""

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
