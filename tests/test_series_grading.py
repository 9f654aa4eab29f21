"""Grading a real lesson: the instructor notebook scores full marks, its untouched student version 0,
and a planted mistake (a causal mask that lets each token see the next one) fails exactly its exercise."""

import re
from pathlib import Path

import nbformat
import pytest

from gpt_from_scratch.classroom.grading import BEGIN, END, grade_notebook, write_student_versions

LESSON = Path(__file__).resolve().parent.parent / "notebooks" / "02_causal_multihead_attention.ipynb"

LEAKY_BODY = """    n = scores.shape[-1]
    mask = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=2)  # one diagonal too high
    return torch.softmax(scores.masked_fill(mask, -torch.inf), dim=-1)"""


@pytest.fixture(scope="module")
def instructor_result():
    return grade_notebook(LESSON, cell_timeout=300)


def test_instructor_version_scores_full_marks(instructor_result):
    assert instructor_result["max_score"] >= 2
    failed = [e for e in instructor_result["exercises"] if not e["passed"]]
    assert failed == []


def test_student_version_scores_zero(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / LESSON.name).write_bytes(LESSON.read_bytes())
    write_student_versions(src, tmp_path / "out")
    result = grade_notebook(tmp_path / "out" / LESSON.name, cell_timeout=300)
    assert result["score"] == 0 and result["max_score"] >= 2
    assert all(not e["passed"] for e in result["exercises"])


def test_planted_leaky_mask_fails_exactly_its_exercise(tmp_path, instructor_result):
    nb = nbformat.read(LESSON, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and "def causal_softmax" in c.source and BEGIN in c.source)
    cell.source = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), BEGIN + "\n" + LEAKY_BODY + "\n    " + END,
                         cell.source, flags=re.S)
    planted = tmp_path / LESSON.name
    nbformat.write(nb, planted)
    result = grade_notebook(planted, cell_timeout=300)
    failed = [e for e in result["exercises"] if not e["passed"]]
    assert [e["id"] for e in failed] == ["causal_softmax"]
    assert "leaks future tokens" in failed[0]["message"] and "to position 1" in failed[0]["message"]
    assert result["score"] == instructor_result["max_score"] - 1
