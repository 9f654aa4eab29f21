"""Where and how fast a training run computes: the device, the number format, compilation, the optimizer.

A notebook trains on the CPU in 32-bit floats. A real run uses whatever the machine has, and these
functions pick it, each with a clear error when a choice cannot work:

- ``resolve_device("auto")``: a CUDA GPU, else Apple's ``mps``, else the CPU.
- ``resolve_precision``: ``fp32``; ``bf16`` (bfloat16: float32's range with 8 bits of mantissa, so it
  needs no loss scaling); ``fp16`` (float16: less range, so small gradients would round to zero; a
  ``GradScaler`` multiplies the loss before ``backward`` and divides the gradients back before the
  step). Both run under ``torch.autocast``: matrix products in the low precision, sums, softmax and
  the loss in float32, the weights themselves stay float32.
- ``compile_model``: ``torch.compile`` where it can work, else the model unchanged and one line saying why.
- ``make_adamw``: AdamW with ``fused=True`` (one kernel for the whole update) where PyTorch has it.

``describe_setup`` turns the choices into the lines a run prints once at its start.
"""

import contextlib
import platform
import shutil
import warnings

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

# Apple's mps backend has given other losses than the CPU for the same GPT training: badly in PyTorch
# 2.1, "almost the same" in 2.4 (rasbt/LLMs-from-scratch#324), yet still reported with 2.6
# (karpathy/build-nanogpt#92) and 2.8 (rasbt/LLMs-from-scratch#791). Versions before this one get a caution.
MPS_TRUSTED_FROM = (2, 9)


def _mps_available():
    return torch.backends.mps.is_available()


def resolve_device(device="auto"):
    """``"auto"`` -> cuda if a GPU is visible, else mps (Apple silicon), else cpu. Any other name
    (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, a ``torch.device``) is checked to exist here.
    Returns a ``torch.device``."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: this PyTorch sees no CUDA GPU (torch.cuda.is_available() is False)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: there are only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not _mps_available():
        raise ValueError(f"device {device!r}: the mps backend is not available (it needs Apple silicon and macOS)")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}")
    return dev


def _cuda_has_bf16(device):
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def resolve_precision(precision, device):
    """Check ``precision`` for ``device`` (a ``torch.device``); returns "fp32", "bf16" or "fp16".

    ``"auto"``: bf16 on a GPU that has it (Ampere and later), fp16 on an older GPU (a T4), fp32 on the
    CPU and on mps. ``bf16`` on the CPU works (autocast) but is only faster on CPUs with bfloat16
    instructions. ``fp16`` needs a GPU: its gradient scaler is for GPUs.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if _cuda_has_bf16(device) else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision 'fp16' needs a CUDA GPU (its gradient scaler is for GPUs), got device "
                         f"{str(device)!r}: use 'bf16' or 'fp32'")
    if precision == "bf16" and device.type == "cuda" and not _cuda_has_bf16(device):
        raise ValueError(f"precision 'bf16': this GPU ({torch.cuda.get_device_name(device)}) has no bfloat16; "
                         "use 'fp16' (float16 with a gradient scaler)")
    return precision


def autocast(device, precision):
    """The context the forward pass and the loss run in: ``torch.autocast`` for bf16/fp16, nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=_DTYPES[precision])


def grad_scaler(device, precision):
    """A ``torch.amp.GradScaler``, active only for fp16 (with bf16 or fp32 it passes everything through)."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=precision == "fp16")


def _compile_obstacle(device):
    """Why ``torch.compile`` cannot work here, or None. torch.compile fails late (at the first forward
    pass, deep in its compiler) on setups it does not support, so the known ones are checked first."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if major < 7:  # Triton, which generates the GPU kernels, needs compute capability 7.0
            return f"this GPU has compute capability {major}.{minor}; torch.compile's Triton needs 7.0 or newer"
        try:
            import triton  # noqa: F401
        except ImportError:
            return "torch.compile on a GPU needs the triton package, which is not installed"
    if device.type == "cpu" and platform.system() != "Windows" and not any(
            shutil.which(cc) for cc in ("cc", "gcc", "g++", "clang", "clang++")):
        return "torch.compile on the CPU needs a C++ compiler (gcc or clang) on PATH"
    return None


def compile_model(model, device, enabled=True, warn=None):
    """``torch.compile(model)`` where it can work; otherwise ``model`` itself and one line passed to
    ``warn`` (default: ``warnings.warn``). Returns ``(model, compiled)``."""
    if not enabled:
        return model, False
    warn = warn or (lambda message: warnings.warn(message, stacklevel=3))
    reason = _compile_obstacle(torch.device(device))
    if reason is None:
        try:
            return torch.compile(model), True
        except Exception as err:  # e.g. "Windows not yet supported for torch.compile", an unsupported Python
            reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    warn(f"--compile: running without torch.compile ({reason})")
    return model, False


def make_adamw(params, lr, weight_decay, device):
    """AdamW, fused (one kernel updates every parameter) where this PyTorch has a fused kernel for the
    device, else PyTorch's default implementation. Returns ``(optimizer, fused)``."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True), True
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device or this PyTorch
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay), False


def mps_caution(device):
    """One line of caution for mps on a PyTorch version reported to train differently there, else None."""
    if torch.device(device).type != "mps":
        return None
    version = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    if version >= MPS_TRUSTED_FROM:
        return None
    return (f"caution: on mps, PyTorch {torch.__version__} has been reported to give other losses than the CPU "
            "for the same run; if the loss stalls, compare a few steps with --device cpu")


def describe_setup(device, precision, compiled, fused, world_size=1, grad_accum=1, batch_size=None, context=None):
    """The lines a run prints once at its start: one per choice."""
    device = torch.device(device)
    name = device.type
    if device.type == "cuda":
        name = f"{device} ({torch.cuda.get_device_name(device)})"
    elif device.type == "cpu":
        name = f"cpu ({torch.get_num_threads()} threads)"
    how = {"fp32": "float32", "bf16": "bfloat16 autocast", "fp16": "float16 autocast with a gradient scaler"}
    lines = [f"device: {name}", f"precision: {precision} ({how[precision]})",
             f"compile: {'on' if compiled else 'off'}", f"optimizer: AdamW ({'fused' if fused else 'not fused'})"]
    if world_size > 1 or grad_accum > 1:
        per_step = "" if batch_size is None else (
            f": {batch_size} x {world_size} x {grad_accum} = {batch_size * world_size * grad_accum} sequences"
            + (f" of {context} tokens" if context else "") + " per optimizer step")
        lines.append(f"processes: {world_size}, gradient accumulation: {grad_accum}{per_step}")
    caution = mps_caution(device)
    if caution:
        lines.append(caution)
    return lines
