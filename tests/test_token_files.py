"""prepare_token_files / TokenFileDataset / `gpt-from-scratch prepare` and `train --data`.

The references: the tokenizer itself (the files must hold exactly its ids) and GPTDatasetV1 (the
memory-mapped windows must be the windows of the in-memory dataset over the same text).
"""

import json

import numpy as np
import pytest
import torch

from gpt_from_scratch import GPTDatasetV1, get_tokenizer, load_sample_text
from gpt_from_scratch.cli import main
from gpt_from_scratch.data import TokenFileDataset, _text_chunks, prepare_token_files, read_token_files_meta

EOT = 50256


def _ids(path):
    return np.fromfile(path, dtype=np.uint16).tolist()


def test_files_hold_the_tokenizers_ids_with_separators(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("The clock struck twelve.\n" * 40, encoding="utf-8")
    b.write_text("Über die Brücke — naïve café, 東京.\n" * 40, encoding="utf-8")
    meta = prepare_token_files([a, b], tmp_path / "out", val_fraction=0.25, progress=False)
    tok = get_tokenizer()
    expected = tok.encode(a.read_text()) + [EOT] + tok.encode(b.read_text())
    train, val = _ids(tmp_path / "out" / "train.bin"), _ids(tmp_path / "out" / "val.bin")
    assert train + val == expected
    assert len(val) == int(len(expected) * 0.25)
    assert meta == json.loads((tmp_path / "out" / "meta.json").read_text())
    assert (meta["train_tokens"], meta["val_tokens"], meta["documents"]) == (len(train), len(val), 2)
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == 50257
    assert tok.decode(train + val) == a.read_text() + "<|endoftext|>" + b.read_text()
    assert read_token_files_meta(tmp_path / "out") == meta
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["meta.json", "train.bin", "val.bin"]


def test_a_folder_gives_its_txt_files_in_sorted_order(tmp_path):
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "b.txt").write_text("second " * 20)
    (tmp_path / "docs" / "sub" / "c.txt").write_text("third " * 20)
    (tmp_path / "docs" / "a.txt").write_text("first " * 20)
    (tmp_path / "docs" / "notes.md").write_text("not a text file of the corpus")
    meta = prepare_token_files(tmp_path / "docs", tmp_path / "out", progress=False)
    tok = get_tokenizer()
    ids = _ids(tmp_path / "out" / "train.bin") + _ids(tmp_path / "out" / "val.bin")
    assert meta["documents"] == 3
    assert tok.decode(ids) == "<|endoftext|>".join(["first " * 20, "second " * 20, "third " * 20])


def test_large_files_are_read_in_pieces_that_join_to_the_text(tmp_path):
    text = "".join(f"line {i}: ünïcode\r\n" if i % 3 else f"line {i}\n" for i in range(500))
    (tmp_path / "t.txt").write_bytes(text.encode("utf-8"))
    pieces = list(_text_chunks(tmp_path / "t.txt", chunk_chars=100))
    assert len(pieces) > 10 and "".join(pieces) == text


def test_memmap_windows_equal_the_in_memory_windows(tmp_path):
    text = load_sample_text()[:4000]
    reference = GPTDatasetV1(text, get_tokenizer(), max_length=16, stride=5)
    f = tmp_path / "t.bin"
    np.asarray(get_tokenizer().encode(text), dtype=np.uint16).tofile(f)
    ds = TokenFileDataset(f, max_length=16, stride=5)
    assert isinstance(ds.tokens, np.memmap)  # read from disk on demand, never loaded whole
    assert len(ds) == len(reference)
    for k in (0, 1, len(ds) // 2, len(ds) - 1):
        x, y = ds[k]
        assert x.dtype == torch.long and x.shape == (16,)
        assert torch.equal(x, reference[k][0]) and torch.equal(y, reference[k][1])
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_uint16_limits(tmp_path):
    f = tmp_path / "edge.bin"
    np.asarray([0, 65535, EOT, 1, 65534], dtype=np.uint16).tofile(f)
    x, y = TokenFileDataset(f, max_length=4, stride=1)[0]
    assert x.tolist() == [0, 65535, EOT, 1] and y.tolist() == [65535, EOT, 1, 65534]  # no sign wrap-around

    class HugeVocabulary:
        n_vocab = 100_000

    (tmp_path / "a.txt").write_text("hello " * 50)
    with pytest.raises(ValueError, match="100000 tokens; uint16 files hold ids below 65536"):
        prepare_token_files(tmp_path / "a.txt", tmp_path / "out", tokenizer=HugeVocabulary(), progress=False)


@pytest.mark.parametrize("setup, error, message", [
    (lambda p: p / "missing.txt", FileNotFoundError, "corpus not found"),
    (lambda p: (p / "empty_dir").mkdir() or p / "empty_dir", ValueError, "holds no .txt file"),
    (lambda p: (p / "bad.txt").write_bytes(b"ok\n\xff\xfe bad") and p / "bad.txt", ValueError, "is not UTF-8 text"),
    (lambda p: (p / "tiny.txt").write_text("Hi") and p / "tiny.txt", ValueError, "too few to hold out"),
    (lambda p: [], ValueError, "no corpus given"),
])
def test_bad_corpus(tmp_path, setup, error, message):
    with pytest.raises(error, match=message):
        prepare_token_files(setup(tmp_path), tmp_path / "out", progress=False)


@pytest.mark.parametrize("fraction", [0, 1, -0.5, 1.5])
def test_bad_val_fraction(tmp_path, fraction):
    (tmp_path / "a.txt").write_text("hello " * 50)
    with pytest.raises(ValueError, match=r"val_fraction must be a number in \(0, 1\)"):
        prepare_token_files(tmp_path / "a.txt", tmp_path / "out", val_fraction=fraction, progress=False)


def test_bad_token_files(tmp_path):
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="odd number of bytes"):
        TokenFileDataset(odd, 4, 4)
    short = tmp_path / "short.bin"
    np.asarray([1, 2, 3], dtype=np.uint16).tofile(short)
    with pytest.raises(ValueError, match="holds 3 tokens, too few for max_length=4"):
        TokenFileDataset(short, 4, 4)
    with pytest.raises(FileNotFoundError, match="token file not found"):
        TokenFileDataset(tmp_path / "nope.bin", 4, 4)
    with pytest.raises(FileNotFoundError, match="meta.json not found"):
        read_token_files_meta(tmp_path)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    from gpt_from_scratch.data import SAMPLE_TEXT_FILE

    assert main(["prepare", str(SAMPLE_TEXT_FILE), "--out", str(out), "--no-progress"]) == 0
    return out


def test_train_on_prepared_data(prepared, tmp_path, capsys):
    capsys.readouterr()
    code = main(["train", "--data", str(prepared), "--context-length", "16", "--batch-size", "2", "--max-steps", "2",
                 "--eval-every", "2", "--eval-batches", "1", "--device", "cpu", "--no-progress",
                 "--out", str(tmp_path / "m.pt")])
    stdout = capsys.readouterr().out
    assert code == 0 and "step 2: train loss" in stdout and (tmp_path / "m.pt").is_file()


def test_train_data_errors(prepared, tmp_path, capsys):
    meta = json.loads((prepared / "meta.json").read_text())
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("train.bin", "val.bin"):
        (broken / name).write_bytes((prepared / name).read_bytes())
    (broken / "meta.json").write_text(json.dumps({**meta, "train_tokens": meta["train_tokens"] + 1}))
    assert main(["train", "--data", str(broken), "--no-progress"]) == 1
    assert "the folder is incomplete or was changed" in capsys.readouterr().err
    (broken / "meta.json").write_text(json.dumps({**meta, "vocab_size": 60000}))
    assert main(["train", "--data", str(broken), "--no-progress"]) == 1
    assert "60000-token vocabulary, but the model's vocab_size is 50257" in capsys.readouterr().err
    (broken / "meta.json").write_text(json.dumps({"format": meta["format"], "vocab_size": 50257}))
    assert main(["train", "--data", str(broken), "--no-progress"]) == 1
    assert "lacks the integer field(s) train_tokens, val_tokens" in capsys.readouterr().err
    (broken / "meta.json").write_text("{not json")
    assert main(["train", "--data", str(broken), "--no-progress"]) == 1
    assert "meta.json is not valid JSON" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--no-progress"]) == 1
    assert "meta.json not found" in capsys.readouterr().err
    assert main(["prepare", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert "corpus not found" in err and len(err.splitlines()) == 1
