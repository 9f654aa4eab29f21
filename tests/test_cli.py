"""The gpt-from-scratch command, run as a user would: in a subprocess, checking output and exit code."""

import subprocess
import sys

import pytest

from gpt_from_scratch.cli import main


def run(*args):
    proc = subprocess.run([sys.executable, "-m", "gpt_from_scratch", *args], capture_output=True, text=True,
                          timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "model.pt"
    code, stdout, stderr = run("train", "--max-steps", "6", "--eval-every", "3", "--batch-size", "4",
                               "--context-length", "32", "--out", str(out), "--no-progress")
    assert code == 0, stderr
    return out, stdout


def test_train_prints_losses_and_saves(trained):
    out, stdout = trained
    assert out.is_file()
    assert "step 3: train loss" in stdout and "step 6: train loss" in stdout and "val loss" in stdout
    assert f"saved {out} (step 6)" in stdout


def test_generate_same_seed_same_text(trained):
    out, _ = trained
    args = ("generate", "--checkpoint", str(out), "--prompt", "The clock", "--max-new-tokens", "8",
            "--temperature", "1.0", "--top-k", "20", "--seed", "5")
    a, b = run(*args), run(*args)
    assert a[0] == 0 and a == b
    assert a[1].startswith("The clock") and len(a[1]) > len("The clock\n")


def test_resume_continues_the_step_count(trained, tmp_path):
    out, _ = trained
    code, stdout, stderr = run("train", "--resume", str(out), "--max-steps", "8", "--eval-every", "4",
                               "--batch-size", "4", "--out", str(tmp_path / "more.pt"), "--no-progress")
    assert code == 0, stderr
    assert "resuming from" in stdout and "at step 6" in stdout and "(step 8)" in stdout


def test_resume_reads_the_checkpoint_once(trained, tmp_path, monkeypatch):
    """Issue 17, bug 6: --resume read the whole checkpoint twice (to build the model, then to restore)."""
    import torch

    out, _ = trained
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a[0]) or real_load(*a, **k))
    assert main(["train", "--resume", str(out), "--max-steps", "7", "--eval-every", "7", "--batch-size", "4",
                 "--out", str(tmp_path / "more.pt"), "--no-progress"]) == 0
    assert [str(p) for p in loads] == [str(out)]


@pytest.mark.parametrize("args, code, message", [
    (["generate", "--checkpoint", "missing.pt", "--prompt", "Hi"], 1, "checkpoint not found: missing.pt"),
    (["train", "--corpus", "nowhere.txt"], 1, "corpus not found: nowhere.txt"),
    (["train", "--max-steps", "0"], 2, "argument --max-steps: must be a positive integer, got 0"),
    (["train", "--epochs", "-2"], 2, "argument --epochs: must be a positive integer, got -2"),
    (["generate", "--checkpoint", "x.pt", "--prompt", "Hi", "--temperature", "-1"], 2,
     "argument --temperature: must be a number >= 0, got -1.0"),
    (["generate", "--checkpoint", "x.pt", "--prompt", "Hi", "--temperature", "hot"], 2,
     "argument --temperature: must be a number, got 'hot'"),
    (["train", "--batch-size", "two"], 2, "argument --batch-size: must be an integer, got 'two'"),
    (["train", "--val-fraction", "1.5"], 2, "argument --val-fraction: must be a number in (0, 1), got 1.5"),
    (["train", "--warmup-steps", "-1"], 2, "argument --warmup-steps: must be a non-negative integer, got -1"),
    (["train", "--grad-clip", "0"], 2, "argument --grad-clip: must be a number > 0, got 0.0"),
])
def test_errors_are_one_line_without_traceback(args, code, message, capsys):
    try:
        returned = main(args)
    except SystemExit as exit_:  # argparse rejects a malformed command line by exiting with 2
        returned = exit_.code
    assert returned == code
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_corrupt_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_text("garbage")
    assert main(["generate", "--checkpoint", str(bad), "--prompt", "Hi"]) == 1
    assert "bad.pt is not a readable checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [(b"", "the text has 0 tokens, too short"),
                                              (b"  \n\t", "too short for max_length=64"),
                                              (b"\xff\xfe\x00bad", "is not UTF-8 text"),
                                              (b"far too short", "too short for max_length=64")])
def test_bad_corpus(tmp_path, capsys, content, message):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(content)
    assert main(["train", "--corpus", str(corpus), "--max-steps", "1", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and "corpus.txt" in err and len(err.splitlines()) == 1


def test_empty_prompt(trained, capsys):
    assert main(["generate", "--checkpoint", str(trained[0]), "--prompt", ""]) == 1
    assert "the prompt is empty" in capsys.readouterr().err


def test_console_script_is_declared():
    import tomllib
    from pathlib import Path
    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["gpt-from-scratch"] == "gpt_from_scratch.cli:main"


def test_doctor_reports_one_line_per_check(capsys):
    assert main(["doctor"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "everything needed is in place"
    names = [line.split()[1] for line in lines[:-1]]
    assert names == ["python", "torch", "tokenizer", "matplotlib", "ipywidgets", "jupyterlab", "kernel"]
    assert all(line.startswith("ok ") for line in lines[:-1])


def test_doctor_says_what_to_fix_and_fails(monkeypatch, capsys):
    from gpt_from_scratch.classroom import doctor

    real = __import__("importlib").import_module

    def missing_matplotlib(name, *args):
        if name == "matplotlib":
            raise ImportError("No module named 'matplotlib'")
        return real(name, *args)

    monkeypatch.setattr(doctor.importlib, "import_module", missing_matplotlib)
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "FIX  matplotlib matplotlib missing (figures): pip install" in out
    assert out.strip().endswith("some things need fixing (lines marked FIX)")


@pytest.mark.parametrize("command", [["grade", "x.ipynb"], ["student", "src", "out"]])
def test_grading_commands_name_the_extra_when_nbformat_is_missing(command, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "nbformat", None)  # makes `import nbformat` raise ImportError
    monkeypatch.delitem(sys.modules, "gpt_from_scratch.classroom.grading", raising=False)
    import gpt_from_scratch.classroom

    monkeypatch.delattr(gpt_from_scratch.classroom, "grading", raising=False)  # or `from . import` finds it
    assert main(command) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"gpt-from-scratch {command[0]}: error: this command needs nbformat, from the classroom extra: "
                   'pip install -e ".[classroom]" in a clone of the repository')


def test_a_failure_inside_the_package_shows_its_traceback(trained, monkeypatch):
    """Issue 17: only the user's mistakes become one line; an error the package raises while working
    (here a ValueError from inside generation, which a bug would raise) keeps its traceback."""
    import gpt_from_scratch.cli as cli

    def broken(*args, **kwargs):
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr(cli, "token_ids_to_text", broken)
    with pytest.raises(ValueError, match="an internal invariant broke"):
        main(["generate", "--checkpoint", str(trained[0]), "--prompt", "Hi", "--max-new-tokens", "2"])
