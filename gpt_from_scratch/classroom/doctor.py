"""``gpt-from-scratch doctor``: check a learner's environment, one line per check, and say what to fix."""

import importlib
import importlib.util
import shutil
import sys

MIN_PYTHON = (3, 10)
FIX_INSTALL = 'pip install -e ".[lab]" from the repository root (in Colab: run the notebook\'s first cell)'


def _version(module):
    return getattr(module, "__version__", "unknown version")


def _check_python():
    ok = sys.version_info >= MIN_PYTHON
    found = ".".join(map(str, sys.version_info[:3]))
    return ok, f"Python {found}" if ok else f"Python {found} is too old: install Python 3.10 or newer"


def _check_module(name, purpose, required=True):
    try:
        module = importlib.import_module(name)
    except Exception as err:  # ImportError, or a broken install raising something else
        return (not required), f"{name} missing ({purpose}): {FIX_INSTALL} [{type(err).__name__}]"
    return True, f"{name} {_version(module)}"


def _check_torch():
    ok, line = _check_module("torch", "the model")
    if not ok:
        return ok, line
    import torch

    x = torch.ones(2, 2)
    if not torch.equal(x @ x, torch.full((2, 2), 2.0)):
        return False, f"torch {torch.__version__} gives wrong results: reinstall it"
    device = "CUDA GPU available" if torch.cuda.is_available() else "CPU only (fine for this series)"
    return True, f"torch {torch.__version__}, {device}"


def _check_tokenizer():
    try:
        from ..tokenizer import get_tokenizer

        ids = get_tokenizer().encode("Hello, I am")
    except Exception as err:
        return False, f"offline GPT-2 tokenizer broken ({type(err).__name__}: {err}): reinstall the package"
    if ids != [15496, 11, 314, 716]:
        return False, f"offline GPT-2 tokenizer gives {ids} for 'Hello, I am', expected [15496, 11, 314, 716]"
    return True, "offline GPT-2 tokenizer: 'Hello, I am' -> [15496, 11, 314, 716]"


def _check_widgets():
    ok, line = _check_module("ipywidgets", "interactive figures", required=False)
    if not ok or "missing" in line:
        return ok, line + " (the notebooks fall back to static figures)"
    import ipywidgets

    major = int(str(ipywidgets.__version__).split(".")[0])
    if "google.colab" in sys.modules:
        hint = "Colab renders ipywidgets 7 directly" if major < 8 else \
            "in Colab, ipywidgets 8 needs google.colab.output.enable_custom_widget_manager()"
        return True, f"ipywidgets {ipywidgets.__version__}: {hint}"
    if importlib.util.find_spec("jupyterlab_widgets") is None and major >= 8:
        return True, (f"ipywidgets {ipywidgets.__version__}, but no jupyterlab_widgets: JupyterLab will show text "
                      "instead of widgets (pip install jupyterlab_widgets)")
    return True, f"ipywidgets {ipywidgets.__version__}, front-end support installed"


def _check_jupyterlab():
    if "google.colab" in sys.modules:
        return True, "running in Google Colab (JupyterLab not needed)"
    ok, line = _check_module("jupyterlab", "the notebook front end", required=False)
    if "missing" in line:
        return True, "jupyterlab not installed (needed to open the notebooks locally): pip install -e \".[lab]\""
    where = shutil.which("jupyter")
    return True, line + ("" if where else " (but no `jupyter` command on PATH: activate the environment)")


def _check_package_for_kernels():
    """Notebook kernels must import the same package: check the default kernel's Python can."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        spec = KernelSpecManager().get_kernel_spec("python3")
    except Exception as err:
        return False, f"no python3 Jupyter kernel ({type(err).__name__}): pip install ipykernel"
    python = spec.argv[0]
    if python in ("python", "python3", "{python}") or python == sys.executable:
        return True, "the python3 kernel uses this Python, which has gpt_from_scratch"
    import subprocess

    try:
        found = subprocess.run([python, "-c", "import gpt_from_scratch"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        found = False
    if found:
        return True, f"the python3 kernel ({python}) can import gpt_from_scratch"
    return False, (f"the python3 kernel runs {python}, which cannot import gpt_from_scratch: install the package "
                   f"there, or run `python -m ipykernel install --user` from this environment")


CHECKS = [
    ("python", _check_python),
    ("torch", _check_torch),
    ("tokenizer", _check_tokenizer),
    ("matplotlib", lambda: _check_module("matplotlib", "figures")),
    ("ipywidgets", _check_widgets),
    ("jupyterlab", _check_jupyterlab),
    ("kernel", _check_package_for_kernels),
]


def run_checks(out=print):
    """Run every check, print one line each (``ok`` or ``FIX``); True when nothing needed is missing."""
    all_ok = True
    for name, check in CHECKS:
        try:
            ok, line = check()
        except Exception as err:  # a check must never crash the doctor
            ok, line = False, f"check failed unexpectedly: {type(err).__name__}: {err}"
        all_ok &= ok
        out(f"{'ok ' if ok else 'FIX'}  {name:<10} {line}")
    out("everything needed is in place" if all_ok else "some things need fixing (lines marked FIX)")
    return all_ok
