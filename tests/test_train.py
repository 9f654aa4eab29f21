import math

import pytest
import torch

from gpt_from_scratch import (GPTModel, History, calc_loss_batch, calc_loss_loader, create_dataloader,
                              evaluate_model, load_checkpoint, load_sample_text, lr_at_step, perplexity,
                              save_checkpoint, train_model)
from gpt_from_scratch.tokenizer import get_tokenizer

SMALL = {"vocab_size": 50257, "context_length": 16, "emb_dim": 32, "n_heads": 2, "n_layers": 2,
         "drop_rate": 0.1, "qkv_bias": False}


@pytest.fixture(scope="module")
def loaders():
    text = load_sample_text()[:5_000]
    split = int(len(text) * 0.9)
    train = create_dataloader(text[:split], batch_size=4, max_length=16, stride=16, shuffle=True, seed=7)
    val = create_dataloader(text[split:], batch_size=4, max_length=16, stride=16, shuffle=False, drop_last=False)
    return train, val


def test_initial_loss_is_close_to_ln_vocab_size(loaders):
    torch.manual_seed(123)
    model = GPTModel(SMALL).eval()
    with torch.no_grad():
        loss = calc_loss_loader(loaders[1], model)
    # An untrained model is close to uniform over 50,257 tokens: cross-entropy ~ ln(50257) = 10.82.
    assert abs(loss - math.log(50257)) < 0.5
    assert perplexity(loss) == pytest.approx(math.exp(loss))


def test_loss_equals_manual_cross_entropy(tiny_cfg):
    model = GPTModel(tiny_cfg).eval()
    x = torch.randint(0, 50, (2, 5))
    y = torch.randint(0, 50, (2, 5))
    logp = torch.log_softmax(model(x), dim=-1)
    manual = -logp.gather(-1, y.unsqueeze(-1)).mean()
    assert torch.allclose(calc_loss_batch(x, y, model), manual, atol=1e-6)


def test_a_few_steps_on_one_batch_lower_its_loss(tiny_cfg):
    model = GPTModel(tiny_cfg)
    x = torch.randint(0, 50, (4, 12))
    y = torch.roll(x, -1, dims=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    before = calc_loss_batch(x, y, model).item()
    for _ in range(10):
        opt.zero_grad()
        calc_loss_batch(x, y, model).backward()
        opt.step()
    assert calc_loss_batch(x, y, model).item() < before - 1.0


def test_train_model_records_history_and_loss_falls(loaders, capsys):
    torch.manual_seed(123)
    model = GPTModel(SMALL)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.1)
    h = train_model(model, *loaders, opt, num_epochs=2, eval_freq=5, eval_iter=2, start_context="The clock",
                    tokenizer=get_tokenizer(), progress=False, sample_tokens=5)
    samples = capsys.readouterr().out.splitlines()
    steps_per_epoch = len(loaders[0])
    assert h.step == 2 * steps_per_epoch == len(h.learning_rates)
    assert h.steps == list(range(5, h.step + 1, 5))
    assert h.tokens_seen == [s * 4 * 16 for s in h.steps]
    assert h.train_losses[-1] < h.train_losses[0] - 1.0
    assert len(samples) == 2 and samples[0].startswith("epoch 1, step") and "The clock" in samples[0]
    assert model.training  # left in train mode


def test_max_steps_stops_early(loaders):
    model = GPTModel(SMALL)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    h = train_model(model, *loaders, opt, num_epochs=5, eval_freq=3, eval_iter=1, max_steps=7, progress=False)
    assert h.step == 7 and h.steps == [3, 6]


def test_warmup_and_cosine_schedule():
    lrs = [lr_at_step(s, 1.0, total_steps=20, warmup_steps=5, min_lr=0.1, cosine=True) for s in range(20)]
    assert lrs[0] == pytest.approx(0.1 + 0.9 / 5) and lrs[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))  # decays monotonically after warmup
    assert lrs[-1] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 14 / 15)))
    assert lr_at_step(100, 3e-4, 20) == 3e-4  # no schedule: constant


def test_schedule_and_clipping_are_applied(loaders):
    model = GPTModel(SMALL)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    h = train_model(model, *loaders, opt, eval_freq=100, max_steps=6, warmup_steps=3, cosine_decay=True,
                    grad_clip=0.5, progress=False)
    assert h.learning_rates[:3] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3])
    assert h.learning_rates[-1] < 1e-3


def test_evaluation_iterates_the_loaders_as_the_book_does(loaders):
    model = GPTModel(SMALL).train()
    train, val = loaders
    a = evaluate_model(model, train, val, eval_iter=2)
    assert model.training  # left as it was
    with torch.no_grad():
        model.eval()
        first_two = [calc_loss_batch(x, y, model).item() for x, y in list(val)[:2]]
    assert a[1] == sum(first_two) / 2  # the first two batches of the (unshuffled) validation loader
    # The shuffled training loader gives other batches at the next evaluation, as in the book.
    assert evaluate_model(model, train, val, eval_iter=2)[0] != a[0]


def _run(loaders, steps, history=None, model=None, opt=None):
    train, val = loaders
    h = train_model(model, train, val, opt, num_epochs=3, eval_freq=2, eval_iter=1, max_steps=steps, seed=11,
                    history=history, progress=False)
    return h


def test_resume_from_checkpoint_reproduces_an_uninterrupted_run(loaders, tmp_path):
    steps = 2 * len(loaders[0]) + 3  # crosses epoch boundaries, resumes mid-epoch

    torch.manual_seed(123)
    model = GPTModel(SMALL)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    full = _run(loaders, steps, model=model, opt=opt)

    torch.manual_seed(123)
    model = GPTModel(SMALL)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    first = _run(loaders, len(loaders[0]) + 2, model=model, opt=opt)
    save_checkpoint(tmp_path / "run.pt", model, opt, step=first.step, history=first)

    torch.manual_seed(999)  # a different global random state: the checkpoint must restore it
    model2 = GPTModel(SMALL)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-3, weight_decay=0.1)
    model2, state = load_checkpoint(tmp_path / "run.pt", model2, opt2, restore_rng=True)
    resumed = _run(loaders, steps, history=state["history"], model=model2, opt=opt2)

    assert resumed.step == full.step == steps
    assert resumed.steps == full.steps
    assert resumed.train_losses == full.train_losses
    assert resumed.val_losses == full.val_losses
    assert resumed.tokens_seen == full.tokens_seen


@pytest.mark.parametrize("kwargs, msg", [
    ({"num_epochs": 0}, "num_epochs must be a positive integer, got 0"),
    ({"eval_freq": -1}, "eval_freq must be a positive integer, got -1"),
    ({"max_steps": 0}, "max_steps must be a positive integer, got 0"),
    ({"grad_clip": 0}, "grad_clip must be a number > 0, got 0"),
    ({"start_context": "Hi"}, "start_context needs a tokenizer"),
])
def test_bad_training_arguments(loaders, kwargs, msg):
    model = GPTModel(SMALL)
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(ValueError, match=msg):
        train_model(model, *loaders, opt, progress=False, **kwargs)


def test_seed_needs_a_loader_with_its_own_generator():
    text = load_sample_text()[:3000]
    loader = create_dataloader(text, batch_size=2, max_length=16, stride=16)
    model = GPTModel(SMALL)
    with pytest.raises(ValueError, match="create_dataloader\\(..., seed=...\\)"):
        train_model(model, loader, loader, torch.optim.AdamW(model.parameters()), seed=1, progress=False)


def test_history_defaults():
    assert History().step == 0 and History().train_losses == []
