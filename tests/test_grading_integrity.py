"""Forged submissions of a real lesson get their true score when graded against the instructor notebook.

Each forgery starts from the student version of notebook 02 (what a student downloads) with wrong
answers, then tries to pass anyway: a deleted check cell, an edited check cell, a rebound checker name,
functions of the exercise module (and torch) patched, an exception handler that swallows the failure,
an exercise deleted. The true score of every forged exercise is 0; an exercise solved honestly scores
its point whatever else the notebook does.
"""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from gpt_from_scratch.classroom.grading import (NOTEBOOK_KEY, exercises_of, find_source, format_report,
                                                grade_notebook, make_student_version, tag_exercises)
from gpt_from_scratch.cli import main

SOURCE = Path(__file__).resolve().parent.parent / "notebooks" / "02_causal_multihead_attention.ipynb"

LEAKY = '''def causal_softmax(scores):
    n = scores.shape[-1]
    mask = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=2)  # one diagonal too high
    return torch.softmax(scores.masked_fill(mask, -torch.inf), dim=-1)
'''
UNSCALED = '''def my_scaled_dot_product_attention(q, k, v, is_causal=True):
    scores = q @ k.transpose(-2, -1)  # not divided by sqrt(head_dim)
    if is_causal:
        scores = scores.masked_fill(causal_mask(scores.shape[-1]), -torch.inf)
    return torch.softmax(scores, dim=-1) @ v
'''


def _student(tmp_path, name):
    nb = nbformat.read(SOURCE, as_version=4)
    tag_exercises(nb)
    student = make_student_version(nb)
    student.metadata[NOTEBOOK_KEY] = {"notebook": SOURCE.stem}
    return student, tmp_path / name


def _cell(nb, grade_id):
    return next(c for c in nb.cells if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id)


def _write(nb, path):
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def forged(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("forged")
    paths = {}

    # 1. Cell edits: a check deleted, a check reduced to a print, a checker rebound and its check trimmed.
    nb, path = _student(tmp, f"{SOURCE.stem} (1).ipynb")  # a second download: matched by metadata
    _cell(nb, "causal_softmax_solution").source = LEAKY
    nb.cells.remove(_cell(nb, "causal_softmax"))
    _cell(nb, "scaled_dot_product_attention_solution").source = UNSCALED
    _cell(nb, "scaled_dot_product_attention").source = 'print("scaled dot-product attention: correct")'
    _cell(nb, "mha_from_wrapper_solution").source += '\n\ncheck_mha_from_wrapper = lambda fn: "correct"\n'
    _cell(nb, "mha_from_wrapper").source = "print(check_mha_from_wrapper(mha_from_wrapper))"
    paths["edits"] = _write(nb, path)

    # 2. Patches: the exercise module's helpers and torch.allclose, a checker's code, a swallowing handler.
    nb, path = _student(tmp, "patches.ipynb")
    _cell(nb, "causal_softmax_solution").source = LEAKY + '''
import gpt_from_scratch.classroom.exercises as ex
ex._diagnose_weights = lambda *args: None
ex._close = lambda *args, **kwargs: True
torch.allclose = lambda *args, **kwargs: True
'''
    _cell(nb, "scaled_dot_product_attention_solution").source = UNSCALED + '''
check_scaled_dot_product_attention.__code__ = (lambda fn: "correct").__code__
torch.allclose = lambda *args, **kwargs: True
'''
    _cell(nb, "mha_from_wrapper_solution").source += '''
get_ipython().set_custom_exc((BaseException,), lambda *args, **kwargs: None)  # swallow every error
'''
    paths["patches"] = _write(nb, path)

    # 3. The instructor's notebook, one exercise deleted (solution and check), the others right.
    nb = nbformat.read(SOURCE, as_version=4)
    tag_exercises(nb)
    nb.cells.remove(_cell(nb, "mha_from_wrapper_solution"))
    nb.cells.remove(_cell(nb, "mha_from_wrapper"))
    paths["deleted"] = _write(nb, tmp / f"{SOURCE.stem}-Copy1.ipynb")  # no metadata id: matched by name
    return paths


def _by_id(result):
    return {e["id"]: e for e in result["exercises"]}


def test_cell_edits_get_the_true_score(forged):
    result = grade_notebook(forged["edits"], cell_timeout=120, source=SOURCE)
    ex = _by_id(result)
    assert (result["score"], result["max_score"]) == (0, 3)
    assert "check cell deleted: restored" in ex["causal_softmax"]["tampering"]
    assert "leaks future tokens" in ex["causal_softmax"]["message"]
    assert "check cell edited: restored" in ex["scaled_dot_product_attention"]["tampering"]
    assert "not scaled" in ex["scaled_dot_product_attention"]["message"]
    assert "checker check_mha_from_wrapper replaced by the submission" in ex["mha_from_wrapper"]["tampering"]
    assert "not written yet" in ex["mha_from_wrapper"]["message"]
    lines = format_report([result])
    assert "checked against the instructor notebook" in lines[0]
    assert "    tampering: check cell edited: restored" in lines


def test_patched_module_torch_and_error_handler_get_the_true_score(forged):
    result = grade_notebook(forged["patches"], cell_timeout=120, source=SOURCE)
    ex = _by_id(result)
    assert (result["score"], result["max_score"]) == (0, 3)
    notes = ex["causal_softmax"]["tampering"]
    assert "gpt_from_scratch.classroom.exercises._close was replaced" in notes
    assert "torch.allclose was replaced" in notes
    assert "leaks future tokens" in ex["causal_softmax"]["message"]
    assert any("code of gpt_from_scratch.classroom.exercises.check_scaled_dot_product_attention" in t
               for t in ex["scaled_dot_product_attention"]["tampering"])
    assert "an IPython exception handler was installed" in ex["mha_from_wrapper"]["tampering"]
    assert not ex["mha_from_wrapper"]["passed"]


def test_a_deleted_exercise_scores_zero_and_the_total_is_the_sources(forged, tmp_path, capsys):
    report = tmp_path / "marks.json"
    source_dir = tmp_path / "source"
    source_dir.mkdir()
    (source_dir / SOURCE.name).write_bytes(SOURCE.read_bytes())
    assert main(["grade", "--source", str(source_dir), str(forged["deleted"]), "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "mha_from_wrapper: missing" in out and out.strip().endswith("score: 2/3")
    data = json.loads(report.read_text())
    assert data["checked_against_source"] and (data["score"], data["max_score"]) == (2, 3)
    assert data["notebooks"][0]["source"] == SOURCE.name
    assert [e["missing"] for e in data["notebooks"][0]["exercises"]] == [False, False, True]


def test_without_source_the_guard_still_undoes_a_rebound_checker(forged):
    result = grade_notebook(forged["edits"], cell_timeout=120)
    ex = _by_id(result)
    assert result["source"] is None and "NOT checked against instructor notebooks" in format_report([result])[0]
    assert not ex["mha_from_wrapper"]["passed"]  # the trimmed check cell ran the genuine checker
    assert "checker check_mha_from_wrapper replaced by the submission" in ex["mha_from_wrapper"]["tampering"]
    # Without the source, an edited or deleted check cell silently takes its exercise out of the total.
    assert list(ex) == ["mha_from_wrapper"] and result["max_score"] == 1


def test_submissions_are_matched_to_their_source(tmp_path):
    sources = [tmp_path / "01_a.ipynb", tmp_path / "02_b.ipynb", tmp_path / "02_b_extra.ipynb"]
    plain = nbformat.v4.new_notebook()
    assert find_source("02_b (1).ipynb", plain, sources) == sources[1]
    assert find_source("jdoe-02_b_extra-Copy1.ipynb", plain, sources) == sources[2]  # the longest name wins
    tagged = nbformat.v4.new_notebook(metadata={NOTEBOOK_KEY: {"notebook": "01_a"}})
    assert find_source("renamed.ipynb", tagged, sources) == sources[0]
    with pytest.raises(ValueError, match="matches none of the instructor notebooks"):
        find_source("homework.ipynb", plain, sources)


def test_source_exercises_come_from_the_checker_calls():
    ids = [e["id"] for e in exercises_of(nbformat.read(SOURCE, as_version=4))]
    assert ids == ["causal_softmax", "scaled_dot_product_attention", "mha_from_wrapper"]


def test_grade_source_errors(tmp_path, capsys):
    nb = tmp_path / "x.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), nb)
    assert main(["grade", "--source", str(tmp_path / "nowhere"), str(nb)]) == 1
    assert "instructor notebook folder not found" in capsys.readouterr().err
    src = tmp_path / "src"
    src.mkdir()
    nbformat.write(nbformat.v4.new_notebook(), src / "01_a.ipynb")
    assert main(["grade", "--source", str(src), str(nb)]) == 1
    assert "x.ipynb matches none of the instructor notebooks (01_a)" in capsys.readouterr().err
    assert main(["grade", "--source", str(src), str(tmp_path / "missing.ipynb")]) == 1
    assert "notebook not found" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["grade", "--source", str(empty), str(nb)]) == 1
    assert "no notebooks" in capsys.readouterr().err


def test_guard_undoes_and_reports_tampering_in_process(tmp_path, monkeypatch):
    """The guard's logic without a kernel: what notebook runs above exercise end to end."""
    import torch

    from gpt_from_scratch.classroom import exercises, guard

    monkeypatch.setattr(torch, "allclose", torch.allclose)  # put back at teardown whatever happens
    monkeypatch.setattr(exercises, "_call", exercises._call)
    log = tmp_path / "checks.jsonl"
    guard.install(log)

    def records():
        return [json.loads(line) for line in log.read_text().splitlines()]

    right = lambda n, m, s: (n - m - 1) // s + 1  # noqa: E731
    namespace = {"num_windows": lambda n, m, s: 0, "check_num_windows": lambda fn: "correct"}
    exercises._call = lambda fn, *args, what="": right(*args)  # the checker's helper patched before the check
    with pytest.raises(exercises.ExerciseFailure, match="you say 0"):
        guard.run_check("num_windows", "print(check_num_windows(num_windows))", namespace)
    assert namespace["check_num_windows"] is exercises.check_num_windows
    record = records()[-1]
    assert not record["passed"] and set(record["tampering"]) == {
        "gpt_from_scratch.classroom.exercises._call was replaced",
        "checker check_num_windows replaced by the submission"}

    def sneaky(n, m, s):  # right, but patches torch while it is being checked
        torch.allclose = lambda *args, **kwargs: True
        return right(n, m, s)
    guard.run_check("num_windows", "check_num_windows(sneaky)", {**namespace, "sneaky": sneaky})
    record = records()[-1]
    assert not record["passed"] and record["error"] == "Tampering"
    assert record["tampering"] == ["during the check: torch.allclose was replaced"]
    guard.run_check("num_windows", "check_num_windows(right)", {"right": right})
    assert records()[-1]["passed"] and records()[-1]["tampering"] == []


def test_pytorch_rebinding_manual_seed_on_importing_dynamo_is_not_tampering(tmp_path):
    """Importing torch._dynamo (transformers' Llama does, in notebook 09) makes PyTorch itself wrap
    torch.manual_seed; in a fresh interpreter, after the guard is installed, that is no tampering."""
    code = (f"import json, torch\nfrom gpt_from_scratch.classroom import guard\nguard.install({str(tmp_path / 'log')!r})\n"
            "import torch._dynamo\nprint(json.dumps(guard.restore()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.splitlines()[-1]) == []
