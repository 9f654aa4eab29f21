"""Several processes training one model: PyTorch's DistributedDataParallel (DDP) under ``torchrun``.

``torchrun --nproc_per_node N -m gpt_from_scratch train ...`` starts N copies of the same command and
tells each, through environment variables, who it is: ``RANK`` (0 .. N-1 over all machines),
``LOCAL_RANK`` (which GPU of this machine), ``WORLD_SIZE`` (N), and where rank 0 listens. Then:

1. every process joins a *process group* (``torch.distributed.init_process_group``): NCCL between
   GPUs, gloo between CPU processes;
2. each wraps the same model in ``DistributedDataParallel``, which copies rank 0's weights to all;
3. each reads its own share of the training windows (``torch.utils.data.DistributedSampler``: the
   same shuffled order everywhere, rank r takes every N-th window from position r);
4. during ``backward`` DDP averages the gradients over all processes, so every optimizer step is the
   same everywhere and the weights stay identical, as if one process had seen all N batches;
5. only rank 0 prints, shows a progress bar and writes checkpoints.

Nothing here is home-made: these are thin conveniences over ``torch.distributed``.
"""

import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the processes of a run (one process: rank 0 of 1)."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self):
        return self.rank == 0


def launched_by_torchrun():
    """True when the environment says several processes run together (torchrun sets these variables)."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device):
    """Join the process group if started by torchrun; returns ``(World, device)``.

    On GPUs each process takes the GPU ``LOCAL_RANK`` and the NCCL backend; on the CPU, gloo. Without
    torchrun (or with one process) nothing is initialised and ``device`` is returned unchanged.
    """
    if not launched_by_torchrun():
        return World(), device
    world = World(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), int(os.environ["WORLD_SIZE"]))
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    elif device.type == "mps":
        raise ValueError("several processes on mps are not supported by torch.distributed: use one process")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return world, device


def current_world():
    """The ``World`` of the initialised process group, or one process when there is none."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size())
    return World()


def wrap_ddp(model, device, world):
    """``DistributedDataParallel(model)`` when several processes run, else ``model``.

    No buffer sync before each forward pass (``broadcast_buffers=False``, in newer PyTorch
    ``forward_sync_buffers=False``): the only buffers are the causal masks, equal everywhere.
    """
    if world.size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    # Newer PyTorch renamed the option (and warns about the old name).
    options = inspect.signature(DistributedDataParallel.__init__).parameters
    no_buffer_sync = {"forward_sync_buffers" if "forward_sync_buffers" in options else "broadcast_buffers": False}
    return DistributedDataParallel(model, device_ids=device_ids, **no_buffer_sync)


def mean_over_processes(values, device):
    """The mean of each number in ``values`` over all processes (the numbers themselves with one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tuple(values)
    t = torch.tensor(values, dtype=torch.float64 if device.type != "mps" else torch.float32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return tuple((t / dist.get_world_size()).tolist())


def gather(obj):
    """``obj`` of every process, in rank order (``[obj]`` with one process); every process must call it."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    objects = [None] * dist.get_world_size()
    dist.all_gather_object(objects, obj)
    return objects


def shutdown_distributed():
    """Leave the process group (at the end of a run, on every rank)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def distributed_loader(dataset, batch_size, world=World(), shuffle=True, seed=0, drop_last=True):
    """A ``DataLoader`` giving this process its share of ``dataset``'s windows.

    The ``DistributedSampler`` shuffles all the windows with ``seed + epoch`` (the trainer calls its
    ``set_epoch``), the same order in every process, and gives rank r the windows at positions r,
    r + N, r + 2N, ... With one process it is simply a seeded shuffle, and N processes with batch b
    see together exactly the windows one process with batch N x b sees: the runs match.
    """
    from torch.utils.data import DataLoader, DistributedSampler

    sampler = DistributedSampler(dataset, num_replicas=world.size, rank=world.rank, shuffle=shuffle, seed=seed,
                                 drop_last=drop_last)
    # Its own generator: each pass over a DataLoader draws a number from it, which would otherwise come
    # from the global random state that dropout draws from (and a resumed run would draw one more).
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                      generator=torch.Generator())
