"""Pretraining: the loss a GPT minimises, and the loop that minimises it.

The model outputs logits ``(batch, num_tokens, vocab_size)``; the targets are the input ids shifted by
one, ``(batch, num_tokens)``. The loss is the cross-entropy between the two: at each position, minus
the log of the probability the model gave to the true next token, averaged over all positions. An
untrained model spreads its probability about evenly over the vocabulary, so it starts near
``ln(vocab_size)`` (10.8 for GPT-2's 50,257 tokens). ``exp(loss)``, the perplexity, reads as "the model
is as unsure as if it chose uniformly among this many tokens".

``train_model_simple`` is the classic loop, short enough to read in one screen: for each batch,
forward, loss, backward, optimizer step; every ``eval_freq`` steps, the mean loss on a few training and
validation batches; at the end of each epoch, a sample of generated text so one can watch the model
learn. The full trainer in ``trainer.py`` (``train_model``) adds a learning-rate schedule, gradient
clipping, a progress bar and exact resuming from a checkpoint; the loop at its heart is this one.
"""

import math

import torch

from .checks import positive_int
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
    positive_int("num_batches", num_batches, allow_none=True)
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
    evaluating never changes the shuffling or the dropout of training.

    With several processes (the loader's sampler is a ``DistributedSampler`` of ``num_replicas``
    processes), batch ``b`` of all processes together is the windows ``b * size * num_replicas`` and
    on, and this process takes every ``num_replicas``-th of them from its ``rank``.
    """
    dataset, size = loader.dataset, loader.batch_size
    world, rank = getattr(loader.sampler, "num_replicas", 1), getattr(loader.sampler, "rank", 0)
    n = min(num_batches, len(loader))
    for b in range(n):
        items = [dataset[j] for j in range(b * size * world + rank, min((b + 1) * size * world, len(dataset)), world)]
        if not items:
            if b == 0:
                raise ValueError(f"this process (rank {rank} of {world}) has no window to evaluate: the data set "
                                 f"has {len(dataset)} windows")
            return
        yield loader.collate_fn(items)  # the loader's own batching (stacks windows; pads instruction examples)


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
    out = generate(model, idx, max_new_tokens, context_size)  # temperature 0: greedy
    model.train(was_training)
    return token_ids_to_text(out, tokenizer).replace("\n", " ")


def generate_and_print_sample(model, tokenizer, device, start_context):
    """Print a greedy continuation of ``start_context`` (50 tokens) on one line: the book's name."""
    print(generate_sample(model, tokenizer, start_context, 50, device))


def train_model_simple(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
                       start_context, tokenizer):
    """Train for ``num_epochs`` passes over ``train_loader``; returns ``(train_losses, val_losses,
    track_tokens_seen)``, three lists with one entry per evaluation.

    An evaluation (the mean loss over ``eval_iter`` training and validation batches) follows every
    optimizer step whose number, counted from 0, is a multiple of ``eval_freq``: steps 0, eval_freq,
    2 * eval_freq, ... So the first point of a loss curve comes right after the first step.
    """
    positive_int("num_epochs", num_epochs)
    positive_int("eval_freq", eval_freq)
    positive_int("eval_iter", eval_iter)
    train_losses, val_losses, track_tokens_seen = [], [], []
    tokens_seen, global_step = 0, -1

    for epoch in range(num_epochs):
        model.train()  # dropout on (evaluation switches it off and back on)
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()  # gradients add up in .grad: clear the last step's
            loss = calc_loss_batch(input_batch, target_batch, model, device)
            loss.backward()  # d loss / d weight, for every weight
            optimizer.step()  # move every weight a little against its gradient
            tokens_seen += input_batch.numel()
            global_step += 1

            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                track_tokens_seen.append(tokens_seen)
                print(f"Ep {epoch + 1} (Step {global_step:06d}): Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")

        generate_and_print_sample(model, tokenizer, device, start_context)  # watch the text improve
    return train_losses, val_losses, track_tokens_seen


def plot_losses(epochs_seen, tokens_seen, train_losses, val_losses):
    """Both losses against epochs (bottom axis) and tokens seen (top axis); returns the figure.

    ``epochs_seen`` and ``tokens_seen`` give the x position of each evaluation in the two units, e.g.
    ``torch.linspace(0, num_epochs, len(train_losses))`` and the third list ``train_model_simple``
    returns.
    """
    import matplotlib.pyplot as plt  # here, so that importing the package does not load matplotlib

    fig, ax1 = plt.subplots(figsize=(5, 3))
    ax1.plot(epochs_seen, train_losses, label="Training loss")
    ax1.plot(epochs_seen, val_losses, linestyle="-.", label="Validation loss")
    ax1.set_xlabel("Epochs")
    ax1.set_ylabel("Loss")
    ax1.legend(loc="upper right")
    ax2 = ax1.twiny()  # a second x axis sharing the y axis
    ax2.plot(tokens_seen, train_losses, alpha=0)  # invisible: only aligns the ticks
    ax2.set_xlabel("Tokens seen")
    fig.tight_layout()
    return fig


