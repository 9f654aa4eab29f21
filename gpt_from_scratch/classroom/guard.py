"""What the grader runs inside the student's kernel, around every check cell.

``gpt-from-scratch grade`` puts one cell at the top of the notebook it runs, ``install(log_path)``,
which executes before any student code and keeps the genuine objects a check relies on: every
function and class of ``gpt_from_scratch.classroom.exercises`` (with their code objects), the
namespaces of ``torch``, ``torch.nn.functional``, ``torch.Tensor``, ``torch.nn.Module``, ``math`` and
``builtins``, the package classes the checkers build models from, and IPython's exception handlers
and input transformers. Each check cell is then run through ``run_check(grade_id, source, globals())``,
which

1. puts back whatever student code changed in those namespaces (a module function replaced, a
   ``__code__`` swapped, ``torch.allclose`` redefined, an exception handler installed) and notes it;
2. binds the checker names the cell calls to the genuine checkers, whatever the notebook bound them to
   (a solution cell that says ``check_causal_softmax = lambda f: "ok"`` is noted and undone);
3. runs the check cell's source in its own ``try``, so the verdict does not depend on how IPython
   reports errors (a handler that swallows them changes nothing), and looks again afterwards: a
   student function that patches the checker while being checked fails the exercise;
4. appends one JSON line per check to the log file the grader reads: the exercise id, passed or not,
   the message, what was tampered with, and a hash of the source it ran (so a cell rewritten on its
   way to the kernel is noticed by the grader).

This is a defence against the obvious forgeries, not a sandbox: code running in the same process can
always reach the grader's own objects (this module, the log file, the garbage collector, frames). See
"For instructors" in the README for what is and is not defended.
"""

import builtins
import hashlib
import json
import math
import re
import types

_STATE = {}
_MISSING = object()
# Names the kernel itself rebinds on every cell (ipykernel forwards input() to the front end).
_KERNEL_MANAGED = {"builtins": {"input", "_"}}
_SHELL_METHODS = ("showtraceback", "showsyntaxerror", "_showtraceback")
_CHECK_NAME = re.compile(r"\b(check_\w+)\s*\(")


def _watched():
    """The namespaces a check depends on: (label, namespace dict or class) pairs."""
    import torch
    import torch.nn.functional as F

    from . import exercises

    spaces = [("gpt_from_scratch.classroom.exercises", exercises), ("torch", torch),
              ("torch.nn.functional", F), ("torch.Tensor", torch.Tensor), ("torch.nn.Module", torch.nn.Module),
              ("math", math), ("builtins", builtins)]
    base = getattr(torch._C, "TensorBase", None) or getattr(torch._C, "_TensorBase", None)
    if base is not None:
        spaces.append(("torch.Tensor", base))
    for name, value in vars(exercises).items():  # GPTModel, MultiHeadAttention, ... as the checkers see them
        if isinstance(value, type) and value.__module__.startswith("gpt_from_scratch"):
            spaces.append((f"{value.__module__}.{value.__qualname__}", value))
    return spaces


def _functions(namespace):
    """Functions defined in a namespace (module or class): their code, defaults and keyword defaults."""
    out = {}
    for name, value in list(vars(namespace).items()):
        if isinstance(value, types.FunctionType):
            out[name] = (value, value.__code__, value.__defaults__, value.__kwdefaults__)
    return out


def _watch(label, name, value):
    """Functions, classes and modules are watched; plain data (a lazily filled cache, a constant) is not,
    so a checker that keeps state in a module global is not mistaken for tampering."""
    if name in _KERNEL_MANAGED.get(label, ()):
        return False
    return callable(value) or isinstance(value, (types.ModuleType, classmethod, staticmethod, property))


def install(log_path):
    """Keep the genuine objects; called by the grader's first cell, before any student code runs."""
    # Importing torch._dynamo replaces torch.manual_seed with a wrapper (torch/_dynamo/__init__.py), and
    # building a transformers model (notebooks 08 and 09) imports it: done here, before the snapshot, so
    # an honest notebook is not reported as tampering.
    import torch._dynamo  # noqa: F401

    from . import exercises

    _STATE.clear()
    _STATE["log"] = str(log_path)
    _STATE["spaces"] = [(label, ns, {k: v for k, v in vars(ns).items() if _watch(label, k, v)})
                        for label, ns in _watched()]
    _STATE["code"] = [(label, _functions(ns)) for label, ns, _ in _STATE["spaces"]]
    _STATE["checkers"] = {name: obj for name, obj in vars(exercises).items() if name.startswith("check_")}
    shell = _shell()
    if shell is not None:
        _STATE["shell"] = {name: list(getattr(shell, name, ()))
                           for name in ("input_transformers_cleanup", "input_transformers_post", "ast_transformers")}
        _STATE["custom_exceptions"] = shell.custom_exceptions
        _STATE["methods"] = {name: vars(shell).get(name, _MISSING) for name in _SHELL_METHODS}


def _shell():
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - the grader always runs in an IPython kernel
        return None
    return get_ipython()


def restore():
    """Undo every change to the watched namespaces and IPython hooks; returns what was changed."""
    changed = []
    for label, ns, saved in _STATE["spaces"]:
        current = vars(ns)
        for name, value in saved.items():
            if current.get(name, _MISSING) is not value:
                changed.append(f"{label}.{name} was replaced")
                try:
                    setattr(ns, name, value)
                except (AttributeError, TypeError):  # a read-only slot: nothing student code could change either
                    pass
    for label, functions in _STATE["code"]:
        for name, (fn, code, defaults, kwdefaults) in functions.items():
            if (fn.__code__, fn.__defaults__, fn.__kwdefaults__) != (code, defaults, kwdefaults):
                changed.append(f"the code of {label}.{name} was replaced")
                fn.__code__, fn.__defaults__, fn.__kwdefaults__ = code, defaults, kwdefaults
    shell = _shell()
    if shell is not None and "shell" in _STATE:
        for name, saved in _STATE["shell"].items():
            current = getattr(shell, name, None)
            if current is not None and list(current) != saved:
                changed.append(f"IPython's {name} were changed")
                current[:] = saved
        if shell.custom_exceptions != _STATE["custom_exceptions"]:
            changed.append("an IPython exception handler was installed")
            shell.set_custom_exc((), None)
        for name, saved in _STATE["methods"].items():
            if vars(shell).get(name, _MISSING) is not saved:  # an instance attribute hides the method
                changed.append(f"IPython's {name} was replaced")
                if saved is _MISSING:
                    delattr(shell, name)
                else:
                    setattr(shell, name, saved)
    return changed


def run_check(grade_id, source, namespace):
    """Run one check cell's ``source`` in the notebook's ``namespace`` with the genuine checkers."""
    if "log" not in _STATE:
        raise RuntimeError("the grader's guard was not installed before the check ran")
    tampering = restore()
    for name in dict.fromkeys(_CHECK_NAME.findall(source)):
        genuine = _STATE["checkers"].get(name)
        if genuine is not None:
            if namespace.get(name, genuine) is not genuine:
                tampering.append(f"checker {name} replaced by the submission")
            namespace[name] = genuine
    shell = _shell()
    code = shell.transform_cell(source) if shell is not None else source
    record = {"id": grade_id, "sha256": hashlib.sha256(source.encode()).hexdigest(), "tampering": tampering}
    try:
        exec(compile(code, f"<check cell {grade_id}>", "exec"), namespace)  # noqa: S102 - the instructor's cell
    except BaseException as err:
        record.update(passed=False, error=type(err).__name__, message=str(err))
        _finish(record)
        raise
    record.update(passed=True, error=None, message=None)
    _finish(record)


def _finish(record):
    during = restore()
    if during:
        record["tampering"] = record["tampering"] + [f"during the check: {t}" for t in during]
        if record["passed"]:
            record.update(passed=False, error="Tampering",
                          message="the submission changed the checker while it ran: " + "; ".join(during))
    with open(_STATE["log"], "a", encoding="utf-8") as log:
        log.write(json.dumps(record) + "\n")
