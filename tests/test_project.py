"""The repository's promises: one source of truth, notebooks in sync, README and CI in agreement."""

import ast
import importlib.util
import json
import re
import sys
import tomllib
from pathlib import Path

import pytest
from IPython.core.inputtransformer2 import TransformerManager

import gpt_from_scratch

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _tools():
    spec = importlib.util.spec_from_file_location("nbtools", ROOT / "tools" / "notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _requirement_names(requirements):
    return {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_environment_yml_names_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_names = _requirement_names(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        pip_names |= _requirement_names(extra)
    pip_names.discard(project["name"])  # an extra that includes another extra of this project
    conda_names = set()
    in_deps = False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if line.startswith("dependencies:"):
            in_deps = True
        elif in_deps and re.match(r"^  - [A-Za-z][^:]*$", line):
            conda_names |= _requirement_names([line[4:].strip()])
    conda_names = {"torch" if n == "pytorch" else n for n in conda_names} - {"python", "pip"}
    assert conda_names == pip_names
    assert '-e ".[lab,dev]"' in (ROOT / "environment.yml").read_text()


def test_distribution_is_not_named_like_the_unrelated_pypi_project():
    name = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
    assert re.sub(r"[-_.]+", "-", name).lower() != "gpt-from-scratch"


def test_every_public_name_is_importable_from_the_top_level():
    for name in gpt_from_scratch.__all__:
        assert hasattr(gpt_from_scratch, name), name
    for name in ("GPTModel", "MultiHeadAttention", "generate_text_simple", "GPT_CONFIG_124M", "get_tokenizer",
                 "GPTDatasetV1", "create_dataloader", "DummyGPTModel", "LayerNorm", "GELU", "FeedForward",
                 "TransformerBlock", "SelfAttention_v1", "SelfAttention_v2", "CausalAttention",
                 "MultiHeadAttentionWrapper", "SimpleTokenizerV1", "SimpleTokenizerV2",
                 "text_to_token_ids", "token_ids_to_text"):
        assert name in gpt_from_scratch.__all__, name


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- test-command -->", 1)[1].split("```", 2)[1]
    command = block.split("\n", 1)[1].strip()
    assert "pytest" in command
    ci = (ROOT / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in ci and "eval" in ci
    assert "torch==2.13.0" in ci


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tools/notebooks.py uses tomllib (Python 3.11+)")
def test_notebooks_and_readme_are_in_sync_with_the_repository_url():
    assert _tools().check() == []


def test_there_are_the_six_lessons():
    names = [p.name for p in NOTEBOOKS]
    for prefix in ("01_", "02_", "03_", "04_", "05_", "06_"):
        assert any(n.startswith(prefix) for n in names), f"no notebook {prefix}*"


def _code_cells(path):
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_uses_the_package_and_never_redefines_it(path):
    cells = _code_cells(path)
    sources = ["".join(c["source"]) for c in cells]
    assert "google.colab" in sources[0], "first code cell must be the setup cell"
    assert any("from gpt_from_scratch import" in s for s in sources)
    public = set(gpt_from_scratch.__all__)
    for src in sources:
        tree = ast.parse(TransformerManager().transform_cell(src))  # %pip etc. become plain Python
        for node in ast.walk(tree):
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                assert node.name not in public, f"{path.name} redefines gpt_from_scratch.{node.name}"
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id in public:
                        raise AssertionError(f"{path.name} rebinds gpt_from_scratch.{target.id}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_was_executed_top_to_bottom_once(path):
    counts = [c["execution_count"] for c in _code_cells(path)]
    assert counts == list(range(1, len(counts) + 1))
    outputs = [o for c in _code_cells(path) for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "at least one figure"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_ends_with_a_recap_and_exercises(path):
    markdown = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"]
                         if c["cell_type"] == "markdown")
    assert re.search(r"^#+ .*Recap", markdown, re.M), "a Recap section"
    assert re.search(r"^#+ .*Exercise", markdown, re.M), "an Exercises section"
    cells = _code_cells(path)
    sources = ["".join(c["source"]) for c in cells]
    solutions = [i for i, s in enumerate(sources) if "### BEGIN SOLUTION" in s]
    assert len(solutions) >= 2, "at least two exercises with marked solutions"
    for i in solutions:
        check = sources[i + 1] if i + 1 < len(sources) else ""
        assert re.search(r"^\s*(print\()?check_\w+\(", check, re.M), \
            f"the cell after solution {sources[i][:40]!r} must call a checker from gpt_from_scratch.classroom.exercises"
        assert cells[i]["metadata"]["nbgrader"]["solution"] and cells[i + 1]["metadata"]["nbgrader"]["grade"]


# The newest PyTorch API the package calls, by the version that introduced it according to PyTorch's
# documentation and release notes (no older torch has been run here: PyPI's Linux wheels of it are
# CUDA builds of several GB). If one of these calls goes, or a newer API comes in, update the table.
TORCH_APIS = {
    "torch.amp.GradScaler(": (2, 3),  # before 2.3 only torch.cuda.amp.GradScaler
    "torch.load(": (2, 1),  # mmap=True
    "F.scaled_dot_product_attention(": (2, 0),
}


def test_the_declared_torch_floor_has_every_api_the_package_calls():
    """Issue 17, bug 8: torch>=2.1 was declared while every run calls torch.amp.GradScaler (2.3)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (torch_req,) = [r for r in pyproject["project"]["dependencies"] if r.startswith("torch")]
    floor = tuple(int(p) for p in re.fullmatch(r"torch>=(\d+)\.(\d+)", torch_req).groups())
    source = "\n".join(p.read_text() for p in (ROOT / "gpt_from_scratch").rglob("*.py"))
    for api, since in TORCH_APIS.items():
        assert api in source, f"{api} is no longer called: update TORCH_APIS"
        assert floor >= since, f"{api} needs torch {since}, the package declares {torch_req}"
    assert floor == max(TORCH_APIS.values()), "the floor is higher than any API listed needs: list the reason"
