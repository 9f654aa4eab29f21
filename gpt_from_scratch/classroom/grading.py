"""Notebooks as assignments: nbgrader-compatible cell metadata, student versions and offline grading.

The instructor notebooks are the source of truth. In them, an exercise is two code cells:

- a *solution* cell whose answer sits between nbgrader's solution markers (the constants ``BEGIN`` and
  ``END`` below; an nbgrader user can take the notebooks as they are). The marker text must appear in no
  other cell, markdown included, or nbgrader refuses the notebook (``stray_markers`` finds it);
- a *check* cell that calls a checker from ``gpt_from_scratch.classroom.exercises``, e.g.
  ``check_causal_softmax(causal_softmax)``; it passes if it runs without an error.

``tag_exercises`` writes nbgrader's cell metadata from these two rules. ``make_student_version``
replaces every solution with ``# YOUR CODE HERE`` / ``raise NotImplementedError()`` and clears all
outputs; ``write_student_versions`` also records in the notebook's metadata which notebook it came from.

``grade_notebook`` runs a submitted notebook in a fresh kernel, cell by cell with a time limit, carries
on past errors and reports each exercise with the checker's message. No database, no Docker, no
network. Given the instructor notebook (``source``), it grades what the source asks, not what the
submission claims: the exercises, points and check cells come from the source, edited check cells are
restored and deleted ones put back (both reported), an exercise whose solution cell is gone scores 0,
and the total is the source's. Every check runs through ``guard.run_check`` in the kernel, which undoes
and reports the obvious ways of swapping the checker (a rebound name, patched functions of the exercise
module or of torch, a swapped ``__code__``, a handler that swallows the failure).

What is not defended: student code runs in the same process as the checks, so code written against the
grader itself (replacing ``guard``, writing its log, reaching the genuine checkers through the garbage
collector or frames, patching C extensions) can still forge a result. Without ``source``, an edited or
deleted check cell silently changes what is graded; the report says the notebook was not checked
against instructor notebooks.
"""

import json
import os
import re
import time
from pathlib import Path

import nbformat

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
# nbgrader refuses a notebook in which any of these strings appears in a cell that is not a solution
# cell, markdown included ("Solution region detected in a non-solution cell").
MARKER_TEXT = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
# The key under which ``write_student_versions`` records, in a student version's metadata, which
# instructor notebook it came from; ``grade --source`` matches submissions by it.
NOTEBOOK_KEY = "gpt_from_scratch"
_CHECK_CALL = re.compile(r"^\s*(?:print\()?\s*(check_\w+)\(", re.M)


def _is_solution(cell):
    return cell.cell_type == "code" and BEGIN in cell.source


def _checker_name(cell):
    match = _CHECK_CALL.search(cell.source) if cell.cell_type == "code" else None
    return match.group(1) if match else None


def stray_markers(nb):
    """(cell index, marker) for every marker text outside a solution cell; nbgrader needs none."""
    return [(i, m) for i, cell in enumerate(nb.cells) if not _is_solution(cell)
            for m in MARKER_TEXT if m in cell.source]


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
        target = out_dir / path.name
        nbformat.write(student_version_of(path), target)
        written.append(target)
    return written


def student_version_of(path):
    """The student version of the notebook file ``path``, marked with the notebook it came from."""
    nb = nbformat.read(path, as_version=4)
    tag_exercises(nb)
    student = make_student_version(nb)
    student.metadata[NOTEBOOK_KEY] = {"notebook": Path(path).stem}  # grade --source matches by it
    return student


# --- grading ---------------------------------------------------------------------------------------

def _error_of(cell):
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return out.get("ename", "Error"), out.get("evalue", "")
    return None


def _first_line(cell):
    return next((line.strip() for line in cell.source.splitlines() if line.strip()), "")


def exercises_of(nb):
    """The exercises of a (tagged) notebook: id, points, the check cell and the solution cells before it."""
    tag_exercises(nb)
    exercises, solutions = [], []
    for cell in nb.cells:
        info = cell.get("metadata", {}).get("nbgrader")
        if info and info["solution"]:
            solutions.append(cell)
        elif info and info["grade"]:
            exercises.append({"id": info["grade_id"], "points": info.get("points", 1), "check": cell,
                              "solutions": solutions})
            solutions = []
    return exercises


def find_source(path, nb, sources):
    """The instructor notebook (a path from ``sources``) a submission was made from.

    First the id that ``write_student_versions`` wrote into the notebook's metadata, then the file
    name: the longest source name contained in the submission's (so ``02_x (1).ipynb``, a second
    download, and ``02_x-Copy1.ipynb`` still match ``02_x.ipynb``)."""
    by_stem = {Path(s).stem: Path(s) for s in sources}
    key = nb.get("metadata", {}).get(NOTEBOOK_KEY, {}).get("notebook")
    if key in by_stem:
        return by_stem[key]
    candidates = [stem for stem in by_stem if stem in Path(path).stem]
    if not candidates:
        raise ValueError(f"{Path(path).name} matches none of the instructor notebooks "
                         f"({', '.join(sorted(by_stem))}): rename it after the notebook it answers")
    return by_stem[max(candidates, key=len)]


def _assemble(nb, exercises):
    """Put the instructor's check cells into a submission: returns {exercise id: plan}.

    Cells are matched by nbgrader grade id, then by cell id, then by content (the check cell by the
    checker it calls, a solution cell by its first line). A check cell whose text differs is restored;
    a deleted one is put back after its solution; an exercise whose solution cells are all gone is
    missing."""
    used = set()

    def find(cell, same):
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        tests = [lambda c: grade_id and c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id,
                 lambda c: cell.get("id") and c.get("id") == cell.get("id"), same]
        for test in tests:
            for c in nb.cells:
                if id(c) not in used and c.cell_type == "code" and test(c):
                    used.add(id(c))
                    return c
        return None

    plans = {}
    for ex in exercises:
        plan = {"solutions": [], "check": None, "notes": [], "missing": False}
        for sol in ex["solutions"]:
            found = find(sol, lambda c, sol=sol: _first_line(c) == _first_line(sol))
            if found is not None:
                plan["solutions"].append(found)
        checker = _checker_name(ex["check"])
        check = find(ex["check"], lambda c: _checker_name(c) == checker)
        if not plan["solutions"] and ex["solutions"]:
            plan["missing"] = True
            if check is not None:
                check.source = "# (grader: this exercise's solution is missing)"
        else:
            if check is None:
                check = nbformat.v4.new_code_cell(ex["check"].source)
                anchor = plan["solutions"][-1] if plan["solutions"] else None
                nb.cells.insert(nb.cells.index(anchor) + 1 if anchor is not None else len(nb.cells), check)
                used.add(id(check))
                plan["notes"].append("check cell deleted: restored")
            elif check.source != ex["check"].source:
                check.source = ex["check"].source
                plan["notes"].append("check cell edited: restored")
            plan["check"] = check
        plans[ex["id"]] = plan
    return plans


def grade_notebook(path, cell_timeout=120, source=None):
    """Run ``path`` in a fresh kernel and grade its exercises.

    With ``source`` (the instructor notebook it answers), the exercises, their points and their check
    cells come from the source: edited check cells are restored, deleted ones put back, and an exercise
    whose solution is missing scores 0. Without it, the submission's own check cells are graded, which
    suits a student checking their own work but not an instructor (the report says so).

    Every check runs through :mod:`gpt_from_scratch.classroom.guard`, which undoes the obvious ways of
    swapping the checker and reports them. Returns ``{"notebook", "source", "exercises": [{"id",
    "points", "passed", "missing", "message", "tampering"}], "score", "max_score", "seconds"}``. A
    cell that runs longer than ``cell_timeout`` seconds is interrupted and execution goes on.
    """
    import hashlib
    import tempfile

    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    path = Path(path)
    nb = _read(path, "notebook")
    if source is not None:
        exercises = exercises_of(_read(Path(source), "instructor notebook"))
    else:
        exercises = exercises_of(nb)
    plans = _assemble(nb, exercises)
    for cell in nb.cells:
        cell.get("metadata", {}).pop("nbgrader", None)
    expected = {}
    for ex in exercises:
        check = plans[ex["id"]]["check"]
        if check is not None:
            expected[ex["id"]] = hashlib.sha256(check.source.encode()).hexdigest()
            check.source = ("__import__('gpt_from_scratch.classroom.guard').classroom.guard.run_check(\n"
                            f"    {ex['id']!r}, {check.source!r}, globals())")

    timed_out = set()

    class _Client(NotebookClient):
        async def _async_handle_timeout(self, timeout, cell=None):  # remember which cell ran out of time
            timed_out.add(id(cell))
            return await super()._async_handle_timeout(timeout, cell)

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "checks.jsonl"
        log.touch()
        nb.cells.insert(0, nbformat.v4.new_code_cell(
            f"__import__('gpt_from_scratch.classroom.guard').classroom.guard.install({str(log)!r})"))
        client = _Client(nb, timeout=cell_timeout, kernel_name="python3", allow_errors=True,
                         interrupt_on_timeout=True, store_widget_state=False,
                         resources={"metadata": {"path": str(path.parent.resolve())}})
        saved = os.environ.get("GPT_FROM_SCRATCH_STATIC")
        os.environ["GPT_FROM_SCRATCH_STATIC"] = "1"  # the kernel inherits it: static figures, no widgets
        died = False
        try:
            client.execute()
        except DeadKernelError:
            died = True
        finally:
            if saved is None:
                del os.environ["GPT_FROM_SCRATCH_STATIC"]
            else:
                os.environ["GPT_FROM_SCRATCH_STATIC"] = saved
        records = {}
        for line in log.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("id") in expected:
                records[record["id"]] = record

    results = [_verdict(ex, plans[ex["id"]], records.get(ex["id"]), expected.get(ex["id"]), timed_out,
                        cell_timeout, died) for ex in exercises]
    return {
        "notebook": path.name,
        "source": Path(source).name if source is not None else None,
        "exercises": results,
        "score": sum(e["points"] for e in results if e["passed"]),
        "max_score": sum(e["points"] for e in results),
        "seconds": round(time.perf_counter() - start, 1),
    }


def _read(path, what):
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return nbformat.read(path, as_version=4)
    except Exception as err:
        raise ValueError(f"{path} is not a readable notebook ({type(err).__name__})") from None


def _verdict(ex, plan, record, sha, timed_out, cell_timeout, died):
    result = {"id": ex["id"], "points": ex["points"], "passed": False, "missing": plan["missing"],
              "message": None, "tampering": list(plan["notes"])}
    if plan["missing"]:
        result["message"] = ("its solution cell is not in the submission (looked for by nbgrader id, cell id and "
                             "first line): 0 points")
        return result
    solution_error = None
    for cell in plan["solutions"]:
        error = _error_of(cell)
        if id(cell) in timed_out:
            solution_error = f"your solution cell did not finish within {cell_timeout} s and was stopped"
        elif error and error[0] != "KeyboardInterrupt":
            solution_error = f"your solution cell raised {error[0]}: {error[1]}"
    check = plan["check"]
    if id(check) in timed_out:
        result["message"] = f"the check did not finish within {cell_timeout} s and was stopped"
    elif record is None:
        error = _error_of(check)
        if error is None and check.get("execution_count") is None:
            result["message"] = "the check never ran" + (" (the kernel died before it)" if died else "")
        else:
            result["message"] = "the check did not report a result: the cell was changed on its way to the kernel"
            result["tampering"].append("check cell did not run as written")
    elif record.get("sha256") != sha:
        result["message"] = "the check that ran is not the instructor's: the cell was rewritten in the kernel"
        result["tampering"].append("check cell rewritten in the kernel")
    else:
        result["tampering"] += record.get("tampering", [])
        if record.get("passed"):
            result["passed"] = True
        elif record.get("error") == "NameError" and solution_error:
            result["message"] = solution_error
        elif record.get("error") in ("ExerciseFailure", "Tampering"):
            result["message"] = record.get("message")
        else:
            result["message"] = f"{record.get('error')}: {record.get('message')}"
    return result


def format_report(results):
    """Human-readable lines for a list of ``grade_notebook`` results, ending with ``score: X/Y``."""
    lines = []
    for result in results:
        if result.get("source"):
            against = f"checked against the instructor notebook {result['source']}"
        else:
            against = "NOT checked against instructor notebooks (grade --source DIR does that)"
        lines.append(f"{result['notebook']}: {result['score']}/{result['max_score']} ({against})")
        for ex in result["exercises"]:
            if ex.get("missing"):
                verdict = f"missing: {ex['message']}"
            else:
                verdict = "passed" if ex["passed"] else f"failed: {ex['message']}"
            lines.append(f"  {ex['id']}: {verdict}")
            for note in ex.get("tampering", []):
                lines.append(f"    tampering: {note}")
    score = sum(r["score"] for r in results)
    total = sum(r["max_score"] for r in results)
    lines.append(f"score: {score}/{total}")
    return lines
