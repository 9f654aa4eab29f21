"""Saving a training run and picking it up again.

A checkpoint is one file written with ``torch.save``: the model's config and weights, and optionally
the optimizer's state (AdamW keeps two running averages per parameter: without them a resumed run
would restart its momentum from zero), the step reached, the loss history and the random state of
every generator dropout can draw from (the CPU's, and each GPU's or mps's where there is one), so
that a resumed run continues exactly like an uninterrupted one. It is loaded with
``torch.load(weights_only=True)``, which reads tensors and plain data but never runs code from the file.
"""

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .config import validate_config
from .model import GPTModel

FORMAT = "gpt_from_scratch.checkpoint/1"


@dataclass
class History:
    """What ``train_model`` records and a checkpoint keeps: at each evaluation, the step, the tokens seen
    so far and both losses."""

    steps: list = field(default_factory=list)
    tokens_seen: list = field(default_factory=list)
    train_losses: list = field(default_factory=list)
    val_losses: list = field(default_factory=list)
    learning_rates: list = field(default_factory=list)  # one per optimizer step
    samples: list = field(default_factory=list)  # one per epoch
    total_tokens: int = 0  # tokens trained on so far
    step: int = 0  # optimizer steps taken so far


def save_checkpoint(path, model, optimizer=None, step=0, history=None, extra=None, rng_states=None):
    """Write ``model`` (and ``optimizer``, ``step``, ``history``) to ``path``; returns the path.

    ``rng_states``: the random state of every process of the run, in rank order (default: this
    process's, :func:`rng_state`); under DDP each process draws its own dropout masks.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": FORMAT,
        "config": dict(model.cfg),
        "tie_weights": model.out_head.weight is model.tok_emb.weight,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "step": int(step),
        "history": asdict(history) if history is not None else None,
        "rng_states": rng_states if rng_states is not None else [rng_state()],
        "extra": extra or {},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint under the real name
    return path


def rng_state():
    """This process's random state: the CPU generator's, and those of the CUDA devices or mps."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()  # one per visible GPU
    if torch.backends.mps.is_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_rng_state(state):
    """Restore what :func:`rng_state` returned (the generators this machine has)."""
    torch.set_rng_state(state["cpu"])
    if torch.cuda.is_available():
        for device, cuda_state in enumerate(state.get("cuda", [])[:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)
    if "mps" in state and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])


def read_checkpoint(path):
    """Read and check a checkpoint file; returns its dict. Clear errors for a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path} is not a readable checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a gpt_from_scratch checkpoint (expected format {FORMAT!r})")
    if "rng_state" in state:  # written before every process's and every device's state was kept
        state["rng_states"] = [{"cpu": state.pop("rng_state")}]
    validate_config(state["config"])
    return state


def load_checkpoint(path, model=None, optimizer=None, restore_rng=False):
    """Load a checkpoint (a path, or the dict :func:`read_checkpoint` returned: the file is then not
    read again) into ``model`` (built from the saved config if None) and ``optimizer``.

    Returns ``(model, state)`` where ``state`` holds ``step``, ``history`` (a :class:`History` or None)
    and the rest of the file. A ``model`` built with another config is refused with an error naming the
    first key that differs. ``restore_rng=True`` also restores PyTorch's random state, the CPU's and
    the GPUs' (needed to resume training bit for bit, since dropout draws from it), as the first
    process of the run left it (the CLI gives each process of a DDP run its own).
    """
    state = dict(path) if isinstance(path, dict) else read_checkpoint(path)
    saved = state["config"]
    if model is None:
        model = GPTModel(saved, tie_weights=state["tie_weights"])
    else:
        for key in saved:
            if model.cfg.get(key) != saved[key]:
                raise ValueError(
                    f"checkpoint {_name(path)} was saved with config[{key!r}] = {saved[key]!r}, "
                    f"but the model has {model.cfg.get(key)!r}"
                )
    model.load_state_dict(state["model"])
    if optimizer is not None:
        if state["optimizer"] is None:
            raise ValueError(f"checkpoint {_name(path)} holds no optimizer state")
        optimizer.load_state_dict(state["optimizer"])
    if restore_rng:
        set_rng_state(state["rng_states"][0])
    if isinstance(state["history"], dict):
        state["history"] = History(**state["history"])
    return model, state


def _name(path):
    return "(already read)" if isinstance(path, dict) else path
