"""Notebooks as assignments: nbgrader-compatible cell metadata, student versions and offline grading.

The instructor notebooks are the source of truth. In them, an exercise is two code cells:

- a *solution* cell whose answer sits between the lines ``### BEGIN SOLUTION`` and ``### END SOLUTION``
  (nbgrader's markers; an nbgrader user can take the notebooks as they are);
- a *check* cell that calls a checker from ``gpt_from_scratch.classroom.exercises``, e.g.
  ``check_causal_softmax(causal_softmax)``; it passes if it runs without an error.

``tag_exercises`` writes nbgrader's cell metadata from these two rules. ``make_student_version``
replaces every solution with ``# YOUR CODE HERE`` / ``raise NotImplementedError()`` and clears all
outputs. ``grade_notebook`` runs a submitted notebook in a fresh kernel, cell by cell with a time limit,
carries on past errors and reports each exercise with the checker's message. No database, no Docker,
no network.
"""

import json
import os
import re
import time
from pathlib import Path

import nbformat

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
_CHECK_CALL = re.compile(r"^\s*(?:print\()?\s*(check_\w+)\(", re.M)


def _is_solution(cell):
    return cell.cell_type == "code" and BEGIN in cell.source


def _checker_name(cell):
    match = _CHECK_CALL.search(cell.source) if cell.cell_type == "code" else None
    return match.group(1) if match else None


def tag_exercises(nb, points=1):
    """Write nbgrader metadata (schema 3) on solution and check cells; returns the check cells' grade ids."""
    ids = []
    for cell in nb.cells:
        meta = cell.setdefault("metadata", {})
        meta.pop("nbgrader", None)
        checker = _checker_name(cell)
        if _is_solution(cell):
            meta["nbgrader"] = {"grade": False, "grade_id": None, "locked": False, "schema_version": 3,
                                "solution": True, "task": False}
        elif checker:
            grade_id = checker.removeprefix("check_")
            n = sum(1 for i in ids if i == grade_id or i.startswith(grade_id + "_"))
            grade_id = grade_id if n == 0 else f"{grade_id}_{n + 1}"
            ids.append(grade_id)
            meta["nbgrader"] = {"grade": True, "grade_id": grade_id, "locked": True, "points": points,
                                "schema_version": 3, "solution": False, "task": False}
    # A solution cell takes its id from the check that follows it.
    pending = []
    for cell in nb.cells:
        info = cell.get("metadata", {}).get("nbgrader")
        if info and info["solution"]:
            pending.append(info)
        elif info and info["grade"]:
            for k, sol in enumerate(pending):
                sol["grade_id"] = info["grade_id"] + ("_solution" if k == 0 else f"_solution_{k + 1}")
            pending = []
    for k, sol in enumerate(pending):
        sol["grade_id"] = f"solution_{k + 1}"
    return ids


def strip_solution(source):
    """Replace each BEGIN/END SOLUTION block with a stub at the same indentation; drop hidden tests."""
    out, skipping = [], None
    for line in source.splitlines():
        stripped = line.strip()
        if skipping:
            if stripped == skipping:
                skipping = None
            continue
        if stripped == BEGIN:
            indent = line[: len(line) - len(line.lstrip())]
            out += [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError()"]
            skipping = END
        elif stripped == HIDDEN_BEGIN:
            skipping = HIDDEN_END
        else:
            out.append(line)
    if skipping:
        raise ValueError(f"a '{BEGIN if skipping == END else HIDDEN_BEGIN}' has no matching '{skipping}'")
    return "\n".join(out)


def make_student_version(nb):
    """A copy of ``nb`` with solutions replaced by stubs and every output cleared."""
    student = nbformat.from_dict(json.loads(json.dumps(nb)))
    for cell in student.cells:
        if cell.cell_type != "code":
            continue
        if BEGIN in cell.source or HIDDEN_BEGIN in cell.source:
            cell.source = strip_solution(cell.source)
        cell.outputs = []
        cell.execution_count = None
    return student


def write_student_versions(src_dir, out_dir):
    """Write the student version of every ``*.ipynb`` in ``src_dir`` to ``out_dir``; returns the paths."""
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    if not src_dir.is_dir():
        raise FileNotFoundError(f"notebook folder not found: {src_dir}")
    paths = sorted(p for p in src_dir.glob("*.ipynb") if not p.name.startswith("."))
    if not paths:
        raise ValueError(f"no notebooks (*.ipynb) in {src_dir}")
    if out_dir.resolve() == src_dir.resolve():
        raise ValueError("OUT_DIR must differ from SRC_DIR: student versions would overwrite the solutions")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        tag_exercises(nb)
        target = out_dir / path.name
        nbformat.write(make_student_version(nb), target)
        written.append(target)
    return written


# --- grading ---------------------------------------------------------------------------------------

def _error_of(cell):
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return out.get("ename", "Error"), out.get("evalue", "")
    return None


def grade_notebook(path, cell_timeout=120):
    """Run ``path`` in a fresh kernel and grade its exercises.

    Returns ``{"notebook", "exercises": [{"id", "points", "passed", "message"}], "score", "max_score",
    "seconds"}``. A cell that runs longer than ``cell_timeout`` seconds is interrupted and execution
    goes on with the next cell.
    """
    from nbclient import NotebookClient

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"notebook not found: {path}")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:
        raise ValueError(f"{path} is not a readable notebook ({type(err).__name__})") from None
    tag_exercises(nb)
    timed_out = set()

    class _Client(NotebookClient):
        async def _async_handle_timeout(self, timeout, cell=None):  # remember which cell ran out of time
            timed_out.add(id(cell))
            return await super()._async_handle_timeout(timeout, cell)

    start = time.perf_counter()
    client = _Client(nb, timeout=cell_timeout, kernel_name="python3", allow_errors=True,
                     interrupt_on_timeout=True, store_widget_state=False,
                     resources={"metadata": {"path": str(path.parent.resolve())}})
    saved = os.environ.get("GPT_FROM_SCRATCH_STATIC")
    os.environ["GPT_FROM_SCRATCH_STATIC"] = "1"  # the kernel inherits it: static figures, no widgets
    try:
        client.execute()
    finally:
        if saved is None:
            del os.environ["GPT_FROM_SCRATCH_STATIC"]
        else:
            os.environ["GPT_FROM_SCRATCH_STATIC"] = saved

    exercises, solution_error = [], None
    for cell in nb.cells:
        info = cell.get("metadata", {}).get("nbgrader")
        if not info:
            continue
        error = _error_of(cell)
        if info["solution"]:
            if id(cell) in timed_out:
                solution_error = f"your solution cell did not finish within {cell_timeout} s and was stopped"
            elif error and error[0] != "KeyboardInterrupt":
                solution_error = f"your solution cell raised {error[0]}: {error[1]}"
            continue
        if id(cell) in timed_out:
            message = f"the check did not finish within {cell_timeout} s and was stopped"
        elif error is None:
            message = None
        elif error[0] == "NameError" and solution_error:
            message = solution_error
        else:
            message = error[1] if error[0] == "ExerciseFailure" else f"{error[0]}: {error[1]}"
        exercises.append({"id": info["grade_id"], "points": info.get("points", 1), "passed": message is None,
                          "message": message})
        solution_error = None
    return {
        "notebook": path.name,
        "exercises": exercises,
        "score": sum(e["points"] for e in exercises if e["passed"]),
        "max_score": sum(e["points"] for e in exercises),
        "seconds": round(time.perf_counter() - start, 1),
    }


def format_report(results):
    """Human-readable lines for a list of ``grade_notebook`` results, ending with ``score: X/Y``."""
    lines = []
    for result in results:
        lines.append(f"{result['notebook']}: {result['score']}/{result['max_score']}")
        for ex in result["exercises"]:
            verdict = "passed" if ex["passed"] else f"failed: {ex['message']}"
            lines.append(f"  {ex['id']}: {verdict}")
    score = sum(r["score"] for r in results)
    total = sum(r["max_score"] for r in results)
    lines.append(f"score: {score}/{total}")
    return lines
