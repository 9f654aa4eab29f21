"""Grading the real lessons, with our grader and with nbgrader itself.

- No notebook (07 and later included) spells nbgrader's marker text outside a solution cell, and no
  student version contains it at all: nbgrader refuses such a notebook.
- nbgrader 0.9 takes the notebooks as they are: ``generate_assignment`` on all of them, then
  ``autograde`` gives the instructor versions of two lessons full marks and the released versions 0;
  the released code cells are exactly our student version's.
- Our ``grade`` agrees with nbgrader on lesson 02 (instructor full marks, released version 0), and a
  planted mistake (a causal mask that lets each token see the next one) fails exactly its exercise.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from gpt_from_scratch.classroom.grading import (BEGIN, END, MARKER_TEXT, grade_notebook, make_student_version,
                                                stray_markers, tag_exercises)

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
LESSON = ROOT / "notebooks" / "02_causal_multihead_attention.ipynb"
AUTOGRADED = ["01_tokens_and_embeddings", "02_causal_multihead_attention"]

LEAKY_BODY = """    n = scores.shape[-1]
    mask = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=2)  # one diagonal too high
    return torch.softmax(scores.masked_fill(mask, -torch.inf), dim=-1)"""


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_marker_text_only_in_solution_cells(path):
    nb = nbformat.read(path, as_version=4)
    assert stray_markers(nb) == [], f"nbgrader refuses {path.name}: reword these cells"
    tag_exercises(nb)
    student = nbformat.writes(make_student_version(nb))
    assert not [m for m in MARKER_TEXT if m in student]


def test_stray_markers_finds_prose_that_spells_a_marker():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("write it between ### BEGIN SOLUTION and ..."),
                                         nbformat.v4.new_code_cell("x = 1\n### BEGIN SOLUTION\nx = 2\n### END SOLUTION"),
                                         nbformat.v4.new_code_cell("# END HIDDEN TESTS")])
    assert stray_markers(nb) == [(0, "BEGIN SOLUTION"), (2, "END HIDDEN TESTS")]


def _nbgrader(args, cwd):
    # nbgrader calls its own command-line tools (alembic), so the environment's bin goes first on PATH.
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    run = subprocess.run([sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={cwd}"], cwd=cwd,
                         env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def nbgrader_course(tmp_path_factory):
    pytest.importorskip("nbgrader", reason="nbgrader is in the dev extra: pip install -e '.[dev]'")
    from nbgrader.api import Gradebook

    course = tmp_path_factory.mktemp("course")
    (course / "source" / "ps1").mkdir(parents=True)
    for path in NOTEBOOKS:
        shutil.copy(path, course / "source" / "ps1" / path.name)
    _nbgrader(["generate_assignment", "ps1", "--force"], course)
    # autograde grades every notebook of a submission folder: hand in only the two lessons it runs.
    for student, folder in (("instructor", "source"), ("student0", "release")):
        (course / "submitted" / student / "ps1").mkdir(parents=True)
        for name in AUTOGRADED:
            shutil.copy(course / folder / "ps1" / f"{name}.ipynb", course / "submitted" / student / "ps1")
    _nbgrader(["autograde", "ps1", "--create", "--force"], course)
    scores = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        for student in ("instructor", "student0"):
            for nb in gradebook.find_submission("ps1", student).notebooks:
                if nb.name in AUTOGRADED:
                    scores[student, nb.name] = (nb.score, nb.max_score)
    return course, scores


def test_nbgrader_releases_every_notebook_as_our_student_version(nbgrader_course):
    course, _ = nbgrader_course
    for path in NOTEBOOKS:
        released = nbformat.read(course / "release" / "ps1" / path.name, as_version=4)
        nb = nbformat.read(path, as_version=4)
        tag_exercises(nb)
        ours = make_student_version(nb)
        assert [c.source.strip() for c in released.cells if c.cell_type == "code"] == \
               [c.source.strip() for c in ours.cells if c.cell_type == "code"], path.name


def test_nbgrader_autograde_full_marks_and_zero(nbgrader_course):
    _, scores = nbgrader_course
    for name in AUTOGRADED:
        score, max_score = scores["instructor", name]
        assert max_score >= 2 and score == max_score, name
        assert scores["student0", name] == (0, max_score), name


@pytest.fixture(scope="module")
def instructor_result():
    return grade_notebook(LESSON, cell_timeout=300, source=LESSON)


def test_instructor_version_scores_full_marks_as_with_nbgrader(instructor_result, nbgrader_course):
    assert instructor_result["max_score"] >= 2
    assert [e for e in instructor_result["exercises"] if not e["passed"] or e["tampering"]] == []
    _, scores = nbgrader_course
    assert scores["instructor", LESSON.stem] == (instructor_result["score"], instructor_result["max_score"])


def test_released_version_scores_zero_as_with_nbgrader(nbgrader_course):
    course, scores = nbgrader_course
    released = course / "release" / "ps1" / LESSON.name
    result = grade_notebook(released, cell_timeout=300, source=LESSON)
    assert result["score"] == 0 and result["max_score"] >= 2
    assert all("not written yet" in e["message"] and not e["tampering"] for e in result["exercises"])
    assert scores["student0", LESSON.stem] == (result["score"], result["max_score"])


def test_planted_leaky_mask_fails_exactly_its_exercise(tmp_path, instructor_result):
    nb = nbformat.read(LESSON, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and "def causal_softmax" in c.source and BEGIN in c.source)
    cell.source = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), BEGIN + "\n" + LEAKY_BODY + "\n    " + END,
                         cell.source, flags=re.S)
    planted = tmp_path / LESSON.name
    nbformat.write(nb, planted)
    result = grade_notebook(planted, cell_timeout=300, source=LESSON)
    failed = [e for e in result["exercises"] if not e["passed"]]
    assert [e["id"] for e in failed] == ["causal_softmax"]
    assert "leaks future tokens" in failed[0]["message"] and "to position 1" in failed[0]["message"]
    assert result["score"] == instructor_result["max_score"] - 1


def test_student_folder_is_what_the_student_command_writes(tmp_path):
    from gpt_from_scratch.cli import main

    assert main(["student", str(ROOT / "notebooks"), str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.glob("*.ipynb"))
    assert written == sorted(p.name for p in (ROOT / "student").glob("*.ipynb")) == [p.name for p in NOTEBOOKS]
    for name in written:
        assert (ROOT / "student" / name).read_text() == (tmp_path / name).read_text(), \
            f"student/{name} is stale: run python tools/notebooks.py sync"
        student = nbformat.read(tmp_path / name, as_version=4)
        assert all(not c.outputs for c in student.cells if c.cell_type == "code")
        assert student.metadata["gpt_from_scratch"] == {"notebook": name.removesuffix(".ipynb")}


def test_student_folder_is_not_collected_by_nbval():
    import tomllib

    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "student" not in options["testpaths"] and "notebooks" in options["testpaths"]
