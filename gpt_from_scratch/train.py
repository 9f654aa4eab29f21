"""Pretraining: the loss a GPT minimises, and the loop that minimises it.

The model outputs logits ``(batch, num_tokens, vocab_size)``; the targets are the input ids shifted by
one, ``(batch, num_tokens)``. The loss is the cross-entropy between the two: at each position, minus
the log of the probability the model gave to the true next token, averaged over all positions. An
untrained model spreads its probability about evenly over the vocabulary, so it starts near
``ln(vocab_size)`` (10.8 for GPT-2's 50,257 tokens). ``exp(loss)``, the perplexity, reads as "the model
is as unsure as if it chose uniformly among this many tokens".

``train_model`` is the classic loop: for each batch, forward, loss, backward, optimizer step; every
``eval_freq`` steps, the mean loss on a few training and validation batches; at the end of each epoch,
a sample of generated text so one can watch the model learn.
"""

import math
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .generate import generate, text_to_token_ids, token_ids_to_text


def calc_loss_batch(input_batch, target_batch, model, device="cpu"):
    """Mean cross-entropy of one batch. ``input_batch``, ``target_batch``: ``(batch, num_tokens)``."""
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)  # (b, t, vocab)
    # cross_entropy wants (N, classes) and (N,): flatten batch and tokens into one axis of b*t.
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), target_batch.flatten())


def calc_loss_loader(data_loader, model, device="cpu", num_batches=None):
    """Mean of ``calc_loss_batch`` over the loader, or over its first ``num_batches`` batches."""
    if len(data_loader) == 0:
        raise ValueError("the data loader has no batches: is the text shorter than one batch of windows?")
    if num_batches is not None and (not isinstance(num_batches, int) or num_batches < 1):
        raise ValueError(f"num_batches must be a positive integer or None, got {num_batches!r}")
    n = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    total = 0.0
    for i, (inputs, targets) in enumerate(data_loader):
        if i >= n:
            break
        total += calc_loss_batch(inputs, targets, model, device).item()
    return total / n


def perplexity(loss):
    """``exp(loss)``: the effective number of equally likely choices the model hesitates between."""
    return math.exp(loss)


def _first_batches(loader, num_batches):
    """The loader's first ``num_batches`` batches in dataset order, drawing no random numbers, so that
    evaluating never changes the shuffling or the dropout of training."""
    dataset, size = loader.dataset, loader.batch_size
    n = min(num_batches, len(loader))
    for b in range(n):
        items = [dataset[j] for j in range(b * size, min((b + 1) * size, len(dataset)))]
        yield torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])


def evaluate_model(model, train_loader, val_loader, device="cpu", eval_iter=5):
    """(train loss, validation loss), each the mean over the first ``eval_iter`` batches (in dataset
    order, so every evaluation sees the same batches), in eval mode and without gradients."""
    was_training = model.training
    model.eval()
    losses = []
    with torch.no_grad():
        for loader in (train_loader, val_loader):
            if len(loader) == 0:
                raise ValueError("a data loader has no batches: is the text shorter than one batch of windows?")
            batch_losses = [calc_loss_batch(x, y, model, device).item() for x, y in _first_batches(loader, eval_iter)]
            losses.append(sum(batch_losses) / len(batch_losses))
    model.train(was_training)
    return tuple(losses)


def generate_sample(model, tokenizer, start_context, max_new_tokens=50, device="cpu"):
    """Greedy continuation of ``start_context`` as one line of text (newlines shown as spaces)."""
    was_training = model.training
    model.eval()
    context_size = model.pos_emb.weight.shape[0]
    idx = text_to_token_ids(start_context, tokenizer).to(device)
    out = generate(model, idx, max_new_tokens, context_size)
    model.train(was_training)
    return token_ids_to_text(out, tokenizer).replace("\n", " ")


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


@dataclass
class History:
    """What ``train_model`` records: at each evaluation, the step, the tokens seen so far and both losses."""

    steps: list = field(default_factory=list)
    tokens_seen: list = field(default_factory=list)
    train_losses: list = field(default_factory=list)
    val_losses: list = field(default_factory=list)
    learning_rates: list = field(default_factory=list)  # one per optimizer step
    samples: list = field(default_factory=list)  # one per epoch
    total_tokens: int = 0  # tokens trained on so far
    step: int = 0  # optimizer steps taken so far


def _check_positive_int(name, value, allow_none=False):
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def train_model(model, train_loader, val_loader, optimizer, device="cpu", num_epochs=1, eval_freq=5,
                eval_iter=5, start_context=None, tokenizer=None, *, max_steps=None, grad_clip=None,
                warmup_steps=0, cosine_decay=False, min_lr=0.0, seed=None, history=None,
                progress=True, print_fn=print, log_evals=False, sample_tokens=50):
    """Train ``model`` and return a :class:`History` of its losses.

    The loop runs ``num_epochs`` passes over ``train_loader`` (or stops after ``max_steps`` optimizer
    steps in all). Every ``eval_freq`` steps it records the mean loss over ``eval_iter`` training and
    validation batches; at the end of each epoch it prints a greedy sample continuing
    ``start_context`` (if given, with ``tokenizer``).

    Off by default: ``grad_clip`` (max gradient norm), ``warmup_steps`` and ``cosine_decay`` (the
    optimizer's ``lr`` is the peak; see :func:`lr_at_step`).

    Reproducible and resumable: with ``seed``, the loader's shuffling is re-seeded with ``seed +
    epoch`` at the start of each epoch (the loader needs its own ``generator``, as
    ``create_dataloader(..., seed=...)`` gives it). To resume, load a checkpoint's model, optimizer
    and random state and pass its ``history``: training continues at ``history.step`` (the batches
    before it are skipped) and the losses continue as in an uninterrupted run.

    ``progress`` shows a tqdm bar (a widget in notebooks); ``log_evals`` also prints each evaluation
    with ``print_fn``.
    """
    _check_positive_int("num_epochs", num_epochs)
    _check_positive_int("eval_freq", eval_freq)
    _check_positive_int("eval_iter", eval_iter)
    _check_positive_int("max_steps", max_steps, allow_none=True)
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip must be a positive number or None, got {grad_clip!r}")
    if start_context is not None and tokenizer is None:
        raise ValueError("start_context needs a tokenizer to encode it")
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ValueError("the training loader has no batches: is the text shorter than one batch of windows?")
    if seed is not None and getattr(train_loader, "generator", None) is None and _shuffles(train_loader):
        raise ValueError("seed needs a loader with its own torch.Generator: create_dataloader(..., seed=...)")

    total_steps = steps_per_epoch * num_epochs if max_steps is None else min(max_steps, steps_per_epoch * num_epochs)
    schedule = warmup_steps > 0 or cosine_decay
    for group in optimizer.param_groups:
        # The peak learning rate, kept in the optimizer's state so a resumed run schedules the same.
        group.setdefault("initial_lr", group["lr"])
    history = history if history is not None else History()
    start_step = step = history.step
    bar = tqdm(total=total_steps, initial=start_step, desc="training", disable=not progress)

    model.train()
    for epoch in range(start_step // steps_per_epoch, num_epochs):
        if seed is not None and getattr(train_loader, "generator", None) is not None:
            train_loader.generator.manual_seed(seed + epoch)
        for i, (inputs, targets) in enumerate(train_loader):
            if epoch * steps_per_epoch + i < start_step:
                continue  # already trained on before the checkpoint
            if step >= total_steps:
                break
            if schedule:
                for group in optimizer.param_groups:
                    group["lr"] = lr_at_step(step, group["initial_lr"], total_steps, warmup_steps, min_lr,
                                             cosine_decay)
            optimizer.zero_grad()
            loss = calc_loss_batch(inputs, targets, model, device)
            loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            history.learning_rates.append(optimizer.param_groups[0]["lr"])
            history.total_tokens += inputs.numel()
            step = history.step = step + 1
            bar.update(1)

            if step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                history.steps.append(step)
                history.tokens_seen.append(history.total_tokens)
                history.train_losses.append(train_loss)
                history.val_losses.append(val_loss)
                bar.set_postfix(train=f"{train_loss:.3f}", val=f"{val_loss:.3f}")
                if log_evals:
                    print_fn(f"step {step}: train loss {train_loss:.3f}, val loss {val_loss:.3f}")
        if start_context is not None and (step % steps_per_epoch == 0 or step >= total_steps):
            sample = generate_sample(model, tokenizer, start_context, sample_tokens, device)
            history.samples.append(sample)
            print_fn(f"epoch {epoch + 1}, step {step}: {sample}")
        if step >= total_steps:
            break
    bar.close()
    return history


def _shuffles(loader):
    return isinstance(getattr(loader, "sampler", None), torch.utils.data.RandomSampler)


def train_model_simple(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
                       start_context, tokenizer):
    """The series' signature: returns ``(train_losses, val_losses, tokens_seen)``."""
    h = train_model(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
                    start_context, tokenizer)
    return h.train_losses, h.val_losses, h.tokens_seen
