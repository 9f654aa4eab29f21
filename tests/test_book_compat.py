"""The book's names and behaviour, where a reader of the book would trip over a difference.

The book's GPTModel saves its causal masks (``trf_blocks.N.att.mask``, float 0/1) with the weights; a
reader who saved a model with the book's code must be able to load it here with
``load_state_dict(..., strict=True)``, and the other way round. The expected state dict is built here
from the book's naming rules, not from our model.
"""

import io
import sys

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from gpt_from_scratch import (GPT_CONFIG_124M, GPTModel, create_dataloader_v1, generate_text_simple, get_tokenizer,
                              load_sample_text, plot_losses, text_to_token_ids, token_ids_to_text, train_model_simple)

CFG = {**GPT_CONFIG_124M, "vocab_size": 60, "context_length": 10, "emb_dim": 16, "n_heads": 4, "n_layers": 2,
       "drop_rate": 0.0}


def book_state_dict(cfg, generator):
    """A state dict in the book's layout and naming, random values, float masks as the book saves them."""
    d, v, n = cfg["emb_dim"], cfg["vocab_size"], cfg["context_length"]
    sd = {"tok_emb.weight": (v, d), "pos_emb.weight": (n, d)}
    for i in range(cfg["n_layers"]):
        p = f"trf_blocks.{i}."
        for name in ("W_query", "W_key", "W_value"):
            sd[p + f"att.{name}.weight"] = (d, d)
            if cfg["qkv_bias"]:
                sd[p + f"att.{name}.bias"] = (d,)
        sd[p + "att.out_proj.weight"], sd[p + "att.out_proj.bias"] = (d, d), (d,)
        sd[p + "ff.layers.0.weight"], sd[p + "ff.layers.0.bias"] = (4 * d, d), (4 * d,)
        sd[p + "ff.layers.2.weight"], sd[p + "ff.layers.2.bias"] = (d, 4 * d), (d,)
        for norm in ("norm1", "norm2"):
            sd[p + f"{norm}.scale"], sd[p + f"{norm}.shift"] = (d,), (d,)
    sd["final_norm.scale"], sd["final_norm.shift"] = (d,), (d,)
    sd["out_head.weight"] = (v, d)
    out = {k: torch.randn(shape, generator=generator) for k, shape in sd.items()}
    for i in range(cfg["n_layers"]):
        out[f"trf_blocks.{i}.att.mask"] = torch.triu(torch.ones(n, n), diagonal=1)  # float, as in the book
    return out


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_a_state_dict_saved_by_the_books_code_loads_strictly(qkv_bias):
    cfg = {**CFG, "qkv_bias": qkv_bias}
    book = book_state_dict(cfg, torch.Generator().manual_seed(0))
    buffer = io.BytesIO()
    torch.save(book, buffer)  # through a file, as a reader would: torch.load(torch.save(...))
    buffer.seek(0)
    model = GPTModel(cfg)
    model.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    assert torch.equal(model.trf_blocks[1].att.W_key.weight, book["trf_blocks.1.att.W_key.weight"])
    assert model.trf_blocks[0].att.mask.dtype == torch.bool  # the loaded float mask did not replace ours


def test_our_state_dict_has_exactly_the_books_keys_and_shapes():
    ours = GPTModel(CFG).state_dict()
    book = book_state_dict(CFG, torch.Generator().manual_seed(0))
    assert set(ours) == set(book)
    for key, value in book.items():
        assert ours[key].shape == value.shape, key
        # the book's code keeps its float mask; copying our bool mask into it gives the same 0/1 values
        if key.endswith("att.mask"):
            assert torch.equal(value.clone().copy_(ours[key]), value)


def test_files_without_masks_still_load_strictly():
    # Our own files from before the mask was saved, or a state dict written by hand.
    source = GPTModel(CFG)
    sd = {k: v for k, v in source.state_dict().items() if not k.endswith(".mask")}
    target = GPTModel(CFG)
    target.load_state_dict(sd, strict=True)
    idx = torch.randint(0, CFG["vocab_size"], (2, 7))
    assert torch.equal(source.eval()(idx), target.eval()(idx))


def test_a_mask_that_lets_tokens_see_the_future_is_refused():
    sd = GPTModel(CFG).state_dict()
    sd["trf_blocks.1.att.mask"] = torch.zeros(CFG["context_length"], CFG["context_length"])
    with pytest.raises(ValueError, match=r"trf_blocks\.1\.att\.mask in the state dict is not the causal mask"):
        GPTModel(CFG).load_state_dict(sd)
    sd["trf_blocks.1.att.mask"] = torch.triu(torch.ones(4, 4), diagonal=1)  # another context length
    with pytest.raises(ValueError, match=r"got shape \(4, 4\)"):
        GPTModel(CFG).load_state_dict(sd)


def test_the_saved_masks_are_buffers_not_parameters():
    # Saving the mask adds one (1024, 1024) buffer per block and no trainable parameter: the series'
    # parameter count stands (the seed-123 text itself is checked in test_generate).
    torch.manual_seed(123)
    model = GPTModel(GPT_CONFIG_124M)
    assert sum(p.numel() for p in model.parameters()) == 163_009_536
    assert sum(b.numel() for b in model.buffers()) == 12 * 1024 * 1024


def _loaders(batches, batch_size, tokens):
    g = torch.Generator().manual_seed(5)
    data = torch.randint(0, 50257, (batches * batch_size, tokens + 1), generator=g)
    train = DataLoader(TensorDataset(data[:, :-1], data[:, 1:]), batch_size=batch_size, shuffle=False)
    val = DataLoader(TensorDataset(data[:4, :-1], data[:4, 1:]), batch_size=batch_size, shuffle=False)
    return train, val


def test_train_model_simple_evaluates_from_step_0_like_the_book(capsys):
    # The book's run: eval_freq=5, batches of 2 x 32 tokens; its printed curve starts after the first
    # optimizer step ("Step 000000"), so with 12 steps the evaluations follow steps 0, 5 and 10 and
    # the tokens seen are 1 x 64, 6 x 64 and 11 x 64.
    torch.manual_seed(123)
    cfg = {**GPT_CONFIG_124M, "context_length": 32, "emb_dim": 16, "n_heads": 2, "n_layers": 1, "drop_rate": 0.0}
    model = GPTModel(cfg)
    train, val = _loaders(12, 2, 32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    train_losses, val_losses, tokens_seen = train_model_simple(
        model, train, val, opt, "cpu", num_epochs=1, eval_freq=5, eval_iter=1, start_context="Every effort moves you",
        tokenizer=get_tokenizer())
    assert tokens_seen == [64, 384, 704]
    assert len(train_losses) == len(val_losses) == 3
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == ["Ep 1 (Step 000000)", "Ep 1 (Step 000005)", "Ep 1 (Step 000010)"]
    assert lines[3].startswith("Every effort moves you")  # the sample after the epoch
    assert len(lines) == 4


def test_train_model_simple_takes_the_same_steps_as_the_loop_written_out():
    # An independent reference: the four lines of a training step, written out here.
    cfg = {**GPT_CONFIG_124M, "context_length": 8, "emb_dim": 16, "n_heads": 2, "n_layers": 1, "drop_rate": 0.0,
           "vocab_size": 100}
    train, val = _loaders(3, 2, 8)
    train = DataLoader(TensorDataset(*(t % 100 for t in train.dataset.tensors)), batch_size=2)
    val = DataLoader(TensorDataset(*(t % 100 for t in val.dataset.tensors)), batch_size=2)
    torch.manual_seed(1)
    a = GPTModel(cfg)
    torch.manual_seed(1)
    b = GPTModel(cfg)
    opt_a, opt_b = torch.optim.AdamW(a.parameters(), lr=1e-2), torch.optim.AdamW(b.parameters(), lr=1e-2)
    for _ in range(2):
        for x, y in train:
            opt_a.zero_grad()
            torch.nn.functional.cross_entropy(a(x).flatten(0, 1), y.flatten()).backward()
            opt_a.step()

    class Chars:  # a tokenizer for the sample: any ids below 100 decode
        def encode(self, text, **_):
            return [ord(c) % 100 for c in text]

        def decode(self, ids):
            return "".join(chr(65 + i % 26) for i in ids)

    train_model_simple(b, train, val, opt_b, "cpu", 2, 100, 1, "hi", Chars())
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("kwargs, message", [
    ({"num_epochs": 0}, "num_epochs must be a positive integer, got 0"),
    ({"eval_freq": 0}, "eval_freq must be a positive integer, got 0"),
    ({"eval_iter": -1}, "eval_iter must be a positive integer, got -1"),
])
def test_train_model_simple_bad_arguments(kwargs, message):
    model = GPTModel(CFG)
    train, val = _loaders(1, 2, 4)
    args = {"num_epochs": 1, "eval_freq": 1, "eval_iter": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        train_model_simple(model, train, val, torch.optim.AdamW(model.parameters()), "cpu", args["num_epochs"],
                           args["eval_freq"], args["eval_iter"], "x", get_tokenizer())


def test_plot_losses_draws_both_curves_on_two_x_axes():
    fig = plot_losses(torch.linspace(0, 2, 3), [64, 384, 704], [9.0, 7.0, 6.0], [9.5, 8.0, 7.5])
    ax1, ax2 = fig.axes
    assert [line.get_label() for line in ax1.get_lines()] == ["Training loss", "Validation loss"]
    assert (ax1.get_xlabel(), ax2.get_xlabel(), ax1.get_ylabel()) == ("Epochs", "Tokens seen", "Loss")
    assert list(ax1.get_lines()[1].get_ydata()) == [9.5, 8.0, 7.5]


def test_importing_the_package_loads_no_notebook_tooling():
    import subprocess

    code = ("import sys, gpt_from_scratch; from gpt_from_scratch import GPTModel; "
            "print(sorted(m for m in ('matplotlib', 'ipywidgets', 'nbformat', 'nbclient', 'IPython') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    # ... and the classroom names are still reachable from the top level, on first use
    code = "import gpt_from_scratch as g; print(g.AttentionExplorer.__module__, g.GenerationPlayground.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["gpt_from_scratch.classroom.widgets", "GenerationPlayground"]


# --- the book's chapter 5 loop, written out as the book has it, to compare train_model_simple with ---------

def book_calc_loss_batch(input_batch, target_batch, model, device):
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target_batch.flatten())
    return loss


def book_calc_loss_loader(data_loader, model, device, num_batches=None):
    total_loss = 0.
    if len(data_loader) == 0:
        return float("nan")
    elif num_batches is None:
        num_batches = len(data_loader)
    else:
        num_batches = min(num_batches, len(data_loader))
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i < num_batches:
            loss = book_calc_loss_batch(input_batch, target_batch, model, device)
            total_loss += loss.item()
        else:
            break
    return total_loss / num_batches


def book_evaluate_model(model, train_loader, val_loader, device, eval_iter):
    model.eval()
    with torch.no_grad():
        train_loss = book_calc_loss_loader(train_loader, model, device, num_batches=eval_iter)
        val_loss = book_calc_loss_loader(val_loader, model, device, num_batches=eval_iter)
    model.train()
    return train_loss, val_loss


def book_generate_and_print_sample(model, tokenizer, device, start_context):
    model.eval()
    context_size = model.pos_emb.weight.shape[0]
    encoded = text_to_token_ids(start_context, tokenizer).to(device)
    with torch.no_grad():
        token_ids = generate_text_simple(model=model, idx=encoded, max_new_tokens=50, context_size=context_size)
    decoded_text = token_ids_to_text(token_ids, tokenizer)
    print(decoded_text.replace("\n", " "))
    model.train()


def book_train_model_simple(model, train_loader, val_loader, optimizer, device, num_epochs,
                            eval_freq, eval_iter, start_context, tokenizer):
    train_losses, val_losses, track_tokens_seen = [], [], []
    tokens_seen, global_step = 0, -1
    for epoch in range(num_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            loss = book_calc_loss_batch(input_batch, target_batch, model, device)
            loss.backward()
            optimizer.step()
            tokens_seen += input_batch.numel()
            global_step += 1
            if global_step % eval_freq == 0:
                train_loss, val_loss = book_evaluate_model(model, train_loader, val_loader, device, eval_iter)
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                track_tokens_seen.append(tokens_seen)
                print(f"Ep {epoch+1} (Step {global_step:06d}): "
                      f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
        book_generate_and_print_sample(model, tokenizer, device, start_context)
    return train_losses, val_losses, track_tokens_seen


@pytest.mark.parametrize("eval_iter", [1, 3])
def test_train_model_simple_records_the_books_losses(capsys, eval_iter):
    """Issue 17, bug 7: the book's loop, run beside ours on the book's layout (its loaders: shuffled
    training batches from the global random state, dropout on), must record the same losses. Ours
    picked its evaluation batches itself instead of iterating the loaders, so both its losses and the
    rest of the run (the loaders' draws from the random state) differed."""
    text = load_sample_text()[:4000]
    split_idx = int(0.90 * len(text))
    cfg = {**GPT_CONFIG_124M, "context_length": 16, "emb_dim": 32, "n_heads": 2, "n_layers": 2, "drop_rate": 0.1}
    tokenizer = get_tokenizer()
    runs = []
    for loop in (book_train_model_simple, train_model_simple):
        torch.manual_seed(123)
        train_loader = create_dataloader_v1(text[:split_idx], batch_size=2, max_length=16, stride=16,
                                            drop_last=True, shuffle=True, num_workers=0)
        val_loader = create_dataloader_v1(text[split_idx:], batch_size=2, max_length=16, stride=16,
                                          drop_last=False, shuffle=False, num_workers=0)
        model = GPTModel(cfg)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.0004, weight_decay=0.1)
        runs.append(loop(model, train_loader, val_loader, optimizer, "cpu", num_epochs=2, eval_freq=5,
                         eval_iter=eval_iter, start_context="Every effort moves you", tokenizer=tokenizer))
        runs[-1] += (capsys.readouterr().out,)
    book, ours = runs
    assert len(book[0]) >= 4
    assert ours[0] == book[0] and ours[1] == book[1] and ours[2] == book[2]  # exactly, float for float
    assert ours[3] == book[3]  # the printed lines and samples too
