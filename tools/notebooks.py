"""Maintainers' command for the notebooks: keep their setup cells in sync and execute them in place.

    python tools/notebooks.py sync              # rewrite setup cells and the README's notebook table
    python tools/notebooks.py execute [NB ...]  # sync, then run each notebook top to bottom in a
                                                # fresh kernel and store its outputs (default: all)
    python tools/notebooks.py check             # exit 1 if sync would change anything

``sync`` also writes nbgrader's cell metadata on every exercise (solution and check cells), so the
instructor notebooks can be used by nbgrader as they are, and regenerates ``student/``: every
notebook's student version (``gpt-from-scratch student notebooks/ student/``: solutions replaced by
stubs, outputs cleared), which the README's second Colab column opens.

The repository's address lives in one place, ``[project.urls] Repository`` in pyproject.toml. ``sync``
writes it into the first code cell of every notebook (the Colab/JupyterLab setup cell) and into the
README's table of notebooks with their "Open in Colab" badges. When the repository moves, change
pyproject.toml, run ``sync`` (or ``execute``) and commit.

``execute`` produces the outputs that nbval later compares: one clean run, execution counts 1, 2, 3,
..., the kernel started in ``notebooks/`` as nbval does, and no widget state stored (interactive
figures store their static view, with GPT_FROM_SCRATCH_STATIC=1, as under nbval).
"""

import argparse
import os
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
STUDENT = ROOT / "student"
README = ROOT / "README.md"
TABLE_START, TABLE_END = "<!-- notebooks:start -->", "<!-- notebooks:end -->"
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"

SETUP_CELL = '''\
# Setup: in Google Colab, install the companion package gpt_from_scratch from the project's
# repository (takes a minute); in JupyterLab, just check that it is installed.
import sys

if "google.colab" in sys.modules:
    %pip install --quiet "{dist} @ git+{repo}"

try:
    import gpt_from_scratch
except ImportError as err:
    raise ImportError(
        "gpt_from_scratch is not installed in this kernel. In a terminal, from the repository's "
        'root, run:  pip install -e ".[lab]"  and then restart the kernel.'
    ) from err
print("gpt_from_scratch is ready")'''

# The same for a notebook that needs packages beyond the package's own dependencies.
SETUP_CELL_EXTRA = '''\
# Setup: in Google Colab, install the companion package gpt_from_scratch from the project's
# repository, and {pip} (takes a minute); in JupyterLab, just check that they are installed.
# {why}
import sys

if "google.colab" in sys.modules:
    %pip install --quiet "{dist} @ git+{repo}" {pip}

try:
    import gpt_from_scratch
{imports}
except ImportError as err:
    raise ImportError(
        f"{{err.name}} is not installed in this kernel. In a terminal, from the repository's "
        'root, run:  pip install -e ".[lab]" {pip}  and then restart the kernel.'
    ) from err
print("gpt_from_scratch is ready")'''

# Packages a notebook needs beyond the package's own dependencies, by notebook number: (pip names,
# modules to import, why). Colab installs them with the package; JupyterLab checks they are there.
EXTRA_PACKAGES = {
    "09": (["accelerate"], ["accelerate"],
           "(accelerate: transformers needs it to load a GGUF file, the reference this notebook compares with)"),
}


def project():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return meta["name"], meta["urls"]["Repository"].rstrip("/")


def notebook_paths(names=None):
    if names:
        return [Path(n).resolve() for n in names]
    return sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def title(nb):
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return "(untitled)"


def setup_source(name=""):
    """The setup cell of notebook file ``name``: the package, plus the notebook's EXTRA_PACKAGES."""
    dist, repo = project()
    if name[:2] not in EXTRA_PACKAGES:
        return SETUP_CELL.format(dist=dist, repo=repo)
    pip, modules, why = EXTRA_PACKAGES[name[:2]]
    return SETUP_CELL_EXTRA.format(dist=dist, repo=repo, pip=" ".join(pip), why=why,
                                   imports="\n".join(f"    import {m}" for m in modules))


def sync_notebook(nb, name=""):
    """Put the standard setup cell (of notebook file ``name``) first among the code cells and write the
    exercises' nbgrader metadata (gpt_from_scratch.classroom.grading.tag_exercises); True if anything
    changed."""
    from gpt_from_scratch.classroom.grading import tag_exercises

    before = nbformat.writes(nb)
    setup = next((cell for cell in nb.cells if cell.cell_type == "code"), None)
    if setup is None:
        raise ValueError("notebook has no code cell to hold the setup")
    setup.source = setup_source(name)
    tag_exercises(nb)
    return nbformat.writes(nb) != before


def readme_table(paths):
    _, repo = project()
    github = repo.removeprefix("https://github.com/")
    rows = ["| # | notebook | Colab | student version (no solutions) |", "| --- | --- | --- | --- |"]
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        url = f"https://colab.research.google.com/github/{github}/blob/main/notebooks/{path.name}"
        student = f"https://colab.research.google.com/github/{github}/blob/main/student/{path.name}"
        rows.append(f"| {path.name[:2]} | [{title(nb)}](notebooks/{path.name}) | "
                    f"[![Open In Colab]({BADGE})]({url}) | [![Open In Colab]({BADGE})]({student}) |")
    return "\n".join(rows)


def synced_readme(paths):
    text = README.read_text()
    if TABLE_START not in text:
        return text
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    return f"{head}{TABLE_START}\n{readme_table(paths)}\n{TABLE_END}{tail}"


def student_versions():
    """{file name: text} of the student version of every notebook, as ``student/`` should hold them."""
    from gpt_from_scratch.classroom.grading import student_version_of

    return {path.name: nbformat.writes(student_version_of(path)) + "\n" for path in notebook_paths()}


def stale_student_versions():
    expected = student_versions()
    stale = [name for name, text in expected.items()
             if not (STUDENT / name).is_file() or (STUDENT / name).read_text() != text]
    extra = [p.name for p in STUDENT.glob("*.ipynb") if p.name not in expected] if STUDENT.is_dir() else []
    return stale + extra


def sync(paths):
    changed = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if sync_notebook(nb, path.name):
            nbformat.write(nb, path)
            changed.append(path.name)
    stale = stale_student_versions()
    if stale:
        STUDENT.mkdir(exist_ok=True)
        for name in stale:
            (STUDENT / name).unlink(missing_ok=True)
        for name, text in student_versions().items():
            (STUDENT / name).write_text(text)
        changed += [f"student/{name}" for name in stale]
    text = synced_readme(notebook_paths())
    if text != README.read_text():
        README.write_text(text)
        changed.append("README.md")
    return changed


def check():
    stale = []
    for path in notebook_paths():
        nb = nbformat.read(path, as_version=4)
        if sync_notebook(nb, path.name):
            stale.append(path.name)
    stale += [f"student/{name}" for name in stale_student_versions()]
    if README.exists() and synced_readme(notebook_paths()) != README.read_text():
        stale.append("README.md")
    return stale


def execute(paths, timeout):
    from nbclient import NotebookClient

    # Widgets store their static view (a figure a reader of the file can see); notebooks/conftest.py
    # sets the same for nbval, and the grader for its runs.
    os.environ["GPT_FROM_SCRATCH_STATIC"] = "1"
    # No GPT-2 download (notebook 08): Hugging Face's offline mode and an empty cache, as under nbval.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_CACHE"] = tempfile.mkdtemp(prefix="notebooks-hf-cache-")

    for path in paths:
        nb = nbformat.read(path, as_version=4)
        sync_notebook(nb, path.name)
        for cell in nb.cells:
            cell.get("metadata", {}).pop("execution", None)
        start = time.perf_counter()
        # coalesce_streams: one stdout output per cell, not pieces split wherever the kernel flushed
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=False,
                                coalesce_streams=True, resources={"metadata": {"path": str(path.parent)}})
        client.execute()
        for cell in nb.cells:
            cell.get("metadata", {}).pop("execution", None)
        nb.metadata.pop("widgets", None)
        nbformat.write(nb, path)
        print(f"{path.name}: executed in {time.perf_counter() - start:.1f} s")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("sync", help="write the setup cell and README table from pyproject.toml")
    run = sub.add_parser("execute", help="sync, then execute notebooks in place")
    run.add_argument("notebooks", nargs="*", help="notebook files (default: all in notebooks/)")
    run.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    sub.add_parser("check", help="exit 1 if any notebook or the README is out of sync")
    args = parser.parse_args(argv)

    if args.command == "sync":
        changed = sync(notebook_paths())
        print("updated: " + ", ".join(changed) if changed else "everything already in sync")
    elif args.command == "execute":
        sync(notebook_paths())
        execute(notebook_paths(args.notebooks), args.timeout)
    else:
        stale = check()
        if stale:
            print("out of sync (run: python tools/notebooks.py sync): " + ", ".join(stale))
            return 1
        print("notebooks and README in sync with pyproject.toml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
