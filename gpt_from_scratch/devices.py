"""Where and how fast a training run computes: the device, the number format, compilation, the optimizer.

A notebook trains on the CPU in 32-bit floats. A real run uses whatever the machine has, and these
functions pick it, each with a clear error when a choice cannot work:

- ``resolve_device("auto")``: a CUDA GPU, else Apple's ``mps``, else the CPU.
- ``resolve_precision``: ``fp32``; ``bf16`` (bfloat16: float32's range with 8 bits of mantissa, so it
  needs no loss scaling); ``fp16`` (float16: less range, so small gradients would round to zero; a
  ``GradScaler`` multiplies the loss before ``backward`` and divides the gradients back before the
  step). Both run under ``torch.autocast``: matrix products in the low precision, sums, softmax and
  the loss in float32, the weights themselves stay float32.
- ``compile_model``: ``torch.compile``, else the model unchanged and one warning saying why.
- ``make_adamw``: AdamW with weight decay on the matrices only, fused where PyTorch has it.
"""

import contextlib
import warnings

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device="auto"):
    """``"auto"`` -> cuda if a GPU is visible, else mps (Apple silicon), else cpu. Any other name
    (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, a ``torch.device``) is checked to exist here.
    Returns a ``torch.device``."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if torch.backends.mps.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: this PyTorch sees no CUDA GPU (torch.cuda.is_available() is False)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: there are only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
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


def compile_model(model):
    """``torch.compile(model)``, or ``model`` itself with one warning where ``torch.compile`` refuses
    (an unsupported platform or Python). Errors that surface only at the first compiled forward pass
    (a missing C++ compiler, an old GPU) are PyTorch's own."""
    try:
        return torch.compile(model)
    except Exception as err:
        first_line = (str(err).splitlines() or [""])[0]
        warnings.warn(f"--compile: running without torch.compile ({type(err).__name__}: {first_line})", stacklevel=2)
        return model


def make_adamw(model, lr, weight_decay):
    """AdamW as nanoGPT sets it up: weight decay on the weights of 2 or more dimensions (the matrices
    and embeddings), none on biases and on LayerNorm's scale and shift; fused (one kernel updates
    every parameter) where this PyTorch has a fused kernel for the device."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device or this PyTorch
        return torch.optim.AdamW(groups, lr=lr)
