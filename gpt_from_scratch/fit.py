"""The full training loop: ``train_model``, for runs longer than a notebook cell.

(Named ``fit`` rather than ``trainer`` so that it does not read as ``train.py``, which holds the
book's loss functions and its simple loop.)

Nothing here is specific to GPT: it trains any model whose loss ``calc_loss_batch`` computes. The loop
at its heart is ``train.train_model_simple``'s (zero the gradients, forward, loss, backward, step,
evaluate every ``eval_freq`` steps, a sample at the end of each epoch). Around it, ``train_model``
adds what a real run needs:

- a learning-rate schedule (linear warmup, then constant or a cosine decay: :func:`lr_at_step`);
- gradient clipping;
- ``max_steps``, a progress bar, and a :class:`History` of everything it measured;
- exact resuming: with ``seed`` the data order is a function of the epoch, evaluation leaves the
  loaders' random state as it found it, and a checkpoint (``checkpoint.py``) stores the model, the
  optimizer, the history and the random state, so a resumed run continues exactly like an
  uninterrupted one;
- faster hardware (``devices.py``): mixed precision (``precision``: the forward pass under
  ``torch.autocast``, a gradient scaler for fp16) and gradient accumulation (``grad_accum``: the
  gradients of K batches add up before one optimizer step, for a batch larger than memory holds);
- several processes (``distributed.py``): given a model wrapped in ``DistributedDataParallel`` and a
  loader with a ``DistributedSampler``, each process trains on its share, evaluation losses are
  averaged over the processes, and only rank 0 prints and shows the progress bar.
"""

import contextlib
import math

import torch
from tqdm.auto import tqdm

from .checkpoint import History
from .checks import number, positive_int
from .devices import autocast, grad_scaler, resolve_precision
from .distributed import current_world, mean_over_processes
from .train import calc_loss_batch, evaluate_model, generate_sample


def lr_at_step(step, peak_lr, total_steps, warmup_steps=0, min_lr=0.0, cosine=False):
    """Learning rate at ``step``: linear warmup from ``min_lr`` to ``peak_lr`` over ``warmup_steps``,
    then constant, or with ``cosine=True`` a half-cosine decay from ``peak_lr`` to ``min_lr`` at
    ``total_steps``. Warmup avoids large, noisy updates while the model's gradients are still wild; the
    decay lets it settle at the end."""
    if step < warmup_steps:
        return min_lr + (peak_lr - min_lr) * (step + 1) / warmup_steps
    if not cosine:
        return peak_lr
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + 0.5 * (peak_lr - min_lr) * (1 + math.cos(math.pi * progress))


def train_model(model, train_loader, val_loader, optimizer, num_epochs=1, eval_freq=5, eval_iter=5,
                start_context=None, tokenizer=None, *, max_steps=None, grad_clip=None, warmup_steps=0,
                cosine_decay=False, min_lr=0.0, seed=None, history=None, progress=True, log_evals=False,
                sample_tokens=50, precision="fp32", grad_accum=1):
    """Train ``model`` and return a :class:`History` of its losses.

    The loop runs ``num_epochs`` passes over ``train_loader`` (or stops after ``max_steps`` optimizer
    steps in all). Every ``eval_freq`` steps it records the mean loss over ``eval_iter`` training and
    validation batches; at the end of each epoch it prints a greedy sample continuing
    ``start_context`` (if given, with ``tokenizer``).

    Unlike ``train_model_simple``, it evaluates after steps ``eval_freq``, ``2 * eval_freq``, ...
    (counting steps from 1), so ``history.steps`` holds the number of steps taken at each evaluation.

    Off by default: ``grad_clip`` (max gradient norm), ``warmup_steps`` and ``cosine_decay`` (the
    optimizer's ``lr`` is the peak; see :func:`lr_at_step`).

    Reproducible and resumable: with ``seed``, the loader's shuffling is re-seeded with ``seed +
    epoch`` at the start of each epoch (the loader needs its own ``generator``, as
    ``create_dataloader(..., seed=...)`` gives it). To resume, load a checkpoint's model, optimizer
    and random state and pass its ``history``: training continues at ``history.step`` (the batches
    before it are skipped) and the losses continue as in an uninterrupted run.

    ``progress`` shows a tqdm bar (a widget in notebooks); ``log_evals`` also prints each evaluation.

    Hardware: the batches go to the device the model's weights are on (move the model there before
    creating its optimizer). ``precision`` is "fp32", "bf16" or "fp16"
    (see ``devices.resolve_precision``). ``grad_accum=K`` makes each optimizer step from K batches of
    the loader (each loss divided by K, so the gradient is that of their mean).

    Several processes: pass the model wrapped in ``DistributedDataParallel`` and a training loader
    whose sampler is a ``DistributedSampler`` (see ``distributed.py``). Its ``set_epoch`` is called at
    each epoch; gradients are synchronised only on the last batch of each accumulation (``no_sync``
    on the others); ``history.total_tokens`` counts the tokens of all processes.
    """
    positive_int("num_epochs", num_epochs)
    positive_int("eval_freq", eval_freq)
    positive_int("eval_iter", eval_iter)
    positive_int("max_steps", max_steps, allow_none=True)
    positive_int("grad_accum", grad_accum)
    raw_model = getattr(model, "module", model)  # the model inside a DistributedDataParallel wrapper
    device = next(raw_model.parameters()).device
    precision = resolve_precision(precision, device)
    if grad_clip is not None:
        number("grad_clip", grad_clip, low=0, low_open=True)
    if start_context is not None and tokenizer is None:
        raise ValueError("start_context needs a tokenizer to encode it")
    steps_per_epoch = len(train_loader) // grad_accum
    if steps_per_epoch == 0:
        raise ValueError(f"the training loader has {len(train_loader)} batches per epoch, fewer than one optimizer "
                         f"step of grad_accum={grad_accum}: is the text shorter than one batch of windows?")
    if seed is not None and getattr(train_loader, "generator", None) is None and _shuffles(train_loader):
        raise ValueError("seed needs a loader with its own torch.Generator: create_dataloader(..., seed=...)")

    total_steps = steps_per_epoch * num_epochs if max_steps is None else min(max_steps, steps_per_epoch * num_epochs)
    schedule = warmup_steps > 0 or cosine_decay
    for group in optimizer.param_groups:
        # The peak learning rate, kept in the optimizer's state so a resumed run schedules the same.
        group.setdefault("initial_lr", group["lr"])
    history = history if history is not None else History()
    world = current_world()
    scaler = grad_scaler(device, precision)
    start_step = step = history.step
    bar = tqdm(total=total_steps, initial=start_step, desc="training", disable=not progress or not world.is_main)
    say = print if world.is_main else (lambda *_: None)

    model.train()
    for epoch in range(start_step // steps_per_epoch, num_epochs):
        if seed is not None and getattr(train_loader, "generator", None) is not None:
            train_loader.generator.manual_seed(seed + epoch)
        if hasattr(train_loader.sampler, "set_epoch"):
            train_loader.sampler.set_epoch(epoch)  # DistributedSampler: shuffle with seed + epoch
        for i, micro_batches in enumerate(_in_groups(train_loader, grad_accum)):
            if epoch * steps_per_epoch + i < start_step:
                continue  # already trained on before the checkpoint
            if step >= total_steps:
                break
            if schedule:
                for group in optimizer.param_groups:
                    group["lr"] = lr_at_step(step, group["initial_lr"], total_steps, warmup_steps, min_lr,
                                             cosine_decay)
            _optimizer_step(model, micro_batches, optimizer, scaler, device, precision, grad_clip)
            history.learning_rates.append(optimizer.param_groups[0]["lr"])
            history.total_tokens += sum(inputs.numel() for inputs, _ in micro_batches) * world.size
            step = history.step = step + 1
            bar.update(1)

            if step % eval_freq == 0:
                train_loss, val_loss = _evaluate(raw_model, train_loader, val_loader, device, eval_iter, precision)
                history.steps.append(step)
                history.tokens_seen.append(history.total_tokens)
                history.train_losses.append(train_loss)
                history.val_losses.append(val_loss)
                bar.set_postfix(train=f"{train_loss:.3f}", val=f"{val_loss:.3f}")
                if log_evals:
                    say(f"step {step}: train loss {train_loss:.3f}, val loss {val_loss:.3f}")
        if start_context is not None and world.is_main and (step % steps_per_epoch == 0 or step >= total_steps):
            plain = getattr(raw_model, "_orig_mod", raw_model)  # torch.compile's original, for any length
            sample = generate_sample(plain, tokenizer, start_context, sample_tokens, device)
            history.samples.append(sample)
            say(f"epoch {epoch + 1}, step {step}: {sample}")
        if step >= total_steps:
            break
    bar.close()
    return history


def _evaluate(model, train_loader, val_loader, device, eval_iter, precision):
    """``evaluate_model`` (the book's: the first ``eval_iter`` batches of each loader), leaving the
    training loader's generator as it was, so that where a run evaluates does not change what it draws
    next and a resumed run, which evaluates only after the checkpoint, continues exactly.

    ``model`` is the one without its DDP wrapper: each process evaluates its own share of the batches
    (the same number everywhere: the samplers pad), then the losses are averaged over the processes.
    """
    generator = getattr(train_loader, "generator", None)
    state = None if generator is None else generator.get_state()
    with autocast(device, precision):
        losses = evaluate_model(model, train_loader, val_loader, device, eval_iter)
    if generator is not None:
        generator.set_state(state)
    return mean_over_processes(losses, device)


def _optimizer_step(model, micro_batches, optimizer, scaler, device, precision, grad_clip):
    """One optimizer step from K batches: the loss of each divided by K, so that the gradients, which
    add up in ``.grad``, are those of the mean loss. A ``DistributedDataParallel`` model averages the
    gradients over the processes in the backward pass of the last batch only (``no_sync`` on the others)."""
    no_sync = getattr(model, "no_sync", contextlib.nullcontext)
    optimizer.zero_grad()
    for k, (inputs, targets) in enumerate(micro_batches):
        with no_sync() if k < len(micro_batches) - 1 else contextlib.nullcontext():
            with autocast(device, precision):  # matrix products in bf16/fp16, the loss in float32
                loss = calc_loss_batch(inputs, targets, model, device) / len(micro_batches)
            scaler.scale(loss).backward()  # fp16: loss x scale, so that small gradients survive
    if grad_clip is not None:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)  # fp16: skipped if a gradient overflowed (and the scale lowered)
    scaler.update()


def _in_groups(loader, k):
    """The loader's batches in lists of ``k`` (a short last group is dropped)."""
    group = []
    for batch in loader:
        group.append(batch)
        if len(group) == k:
            yield group
            group = []


def _shuffles(loader):
    return isinstance(getattr(loader, "sampler", None), torch.utils.data.RandomSampler)
