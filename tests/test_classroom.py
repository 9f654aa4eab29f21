"""Student versions and offline grading, on small notebooks built here (the real ones: test_series_grading)."""

import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from gpt_from_scratch.classroom.grading import (format_report, grade_notebook, make_student_version, strip_solution,
                                        tag_exercises, write_student_versions)
from gpt_from_scratch.cli import main

WINDOWS = '''def num_windows(n_tokens, max_length, stride):
    ### BEGIN SOLUTION
    return (n_tokens - max_length - 1) // stride + 1
    ### END SOLUTION'''

SOFTMAX = '''import torch
from gpt_from_scratch import causal_mask

def causal_softmax(scores):
    ### BEGIN SOLUTION
    mask = causal_mask(scores.shape[-1])
    return torch.softmax(scores.masked_fill(mask, -torch.inf), dim=-1)
    ### END SOLUTION'''

# A planted mistake: the mask starts one diagonal too high, so each token also sees the next one.
LEAKY = SOFTMAX.replace("mask = causal_mask(scores.shape[-1])",
                        "mask = torch.triu(torch.ones(scores.shape[-1], scores.shape[-1], dtype=torch.bool), diagonal=2)")


def build(path, softmax=SOFTMAX, stuck=False):
    cells = [new_markdown_cell("# Test lesson"),
             new_code_cell("from gpt_from_scratch.classroom.exercises import check_num_windows, check_causal_softmax"),
             new_code_cell(WINDOWS), new_code_cell("check_num_windows(num_windows)")]
    if stuck:
        cells.append(new_code_cell("while True:\n    pass"))
    cells += [new_code_cell(softmax), new_code_cell("print(check_causal_softmax(causal_softmax))")]
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"}})
    nbformat.write(nb, path)
    return path


def test_tagging_writes_nbgrader_metadata(tmp_path):
    nb = nbformat.read(build(tmp_path / "a.ipynb"), as_version=4)
    assert tag_exercises(nb) == ["num_windows", "causal_softmax"]
    meta = [c.metadata.get("nbgrader") for c in nb.cells]
    assert meta[2] == {"grade": False, "grade_id": "num_windows_solution", "locked": False, "schema_version": 3,
                       "solution": True, "task": False}
    assert meta[3]["grade"] and meta[3]["locked"] and meta[3]["points"] == 1 and meta[3]["grade_id"] == "num_windows"
    assert meta[0] is None and meta[1] is None


def test_strip_solution_keeps_indentation_and_drops_hidden_tests():
    src = "def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n### BEGIN HIDDEN TESTS\nassert f(1)\n### END HIDDEN TESTS\nprint(1)"
    assert strip_solution(src) == "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()\nprint(1)"
    with pytest.raises(ValueError, match="has no matching"):
        strip_solution("### BEGIN SOLUTION\nx = 1")


def test_student_version_clears_outputs_and_solutions(tmp_path):
    nb = nbformat.read(build(tmp_path / "a.ipynb"), as_version=4)
    nb.cells[3].outputs = [nbformat.v4.new_output("stream", text="number of windows: correct\n")]
    nb.cells[3].execution_count = 3
    student = make_student_version(nb)
    assert all(c.outputs == [] and c.execution_count is None for c in student.cells if c.cell_type == "code")
    assert "### BEGIN SOLUTION" not in nbformat.writes(student)
    assert "raise NotImplementedError()" in student.cells[2].source
    assert student.cells[3].source == nb.cells[3].source  # checks unchanged
    assert nb.cells[3].outputs  # the original is untouched


def test_instructor_scores_full_marks(tmp_path):
    result = grade_notebook(build(tmp_path / "lesson.ipynb"), cell_timeout=120)
    assert [(e["id"], e["passed"]) for e in result["exercises"]] == [("num_windows", True), ("causal_softmax", True)]
    assert (result["score"], result["max_score"]) == (2, 2)


def test_untouched_student_version_scores_zero(tmp_path):
    (tmp_path / "src").mkdir()
    build(tmp_path / "src" / "lesson.ipynb")
    write_student_versions(tmp_path / "src", tmp_path / "out")
    result = grade_notebook(tmp_path / "out" / "lesson.ipynb", cell_timeout=60)
    assert result["score"] == 0 and result["max_score"] == 2
    assert all("not written yet" in e["message"] for e in result["exercises"])


def test_planted_mistake_fails_exactly_its_exercise(tmp_path):
    result = grade_notebook(build(tmp_path / "lesson.ipynb", softmax=LEAKY), cell_timeout=60)
    passed = {e["id"]: e for e in result["exercises"]}
    assert passed["num_windows"]["passed"]
    assert not passed["causal_softmax"]["passed"]
    assert "leaks future tokens: position 0 gives weight" in passed["causal_softmax"]["message"]
    assert "to position 1" in passed["causal_softmax"]["message"]
    lines = format_report([result])
    assert lines[-1] == "score: 1/2"


def test_cells_that_never_finish_are_stopped_and_the_rest_is_graded(tmp_path):
    # A stray infinite loop between exercises, and a solution cell that never finishes.
    never = SOFTMAX.replace("def causal_softmax", "while True:\n    pass\n\ndef causal_softmax")
    result = grade_notebook(build(tmp_path / "lesson.ipynb", softmax=never, stuck=True), cell_timeout=20)
    ex = {e["id"]: e for e in result["exercises"]}
    assert ex["num_windows"]["passed"] and not ex["causal_softmax"]["passed"]
    assert ex["causal_softmax"]["message"] == "your solution cell did not finish within 20 s and was stopped"
    assert result["score"] == 1


def test_grade_command_writes_json_and_prints_the_score(tmp_path, capsys):
    good = build(tmp_path / "good.ipynb")
    bad = build(tmp_path / "bad.ipynb", softmax=LEAKY)
    report = tmp_path / "report.json"
    assert main(["grade", str(good), str(bad), "--json", str(report), "--timeout", "60"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == "score: 3/4"
    data = json.loads(report.read_text())
    assert data["score"] == 3 and data["max_score"] == 4
    assert [n["notebook"] for n in data["notebooks"]] == ["good.ipynb", "bad.ipynb"]


def test_student_command_and_its_errors(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    build(tmp_path / "src" / "lesson.ipynb")
    assert main(["student", str(tmp_path / "src"), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "lesson.ipynb").is_file()
    assert main(["student", str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 1
    assert "notebook folder not found" in capsys.readouterr().err
    assert main(["student", str(tmp_path / "src"), str(tmp_path / "src")]) == 1
    assert "OUT_DIR must differ from SRC_DIR" in capsys.readouterr().err
    assert main(["grade", str(tmp_path / "missing.ipynb")]) == 1
    assert "notebook not found" in capsys.readouterr().err
