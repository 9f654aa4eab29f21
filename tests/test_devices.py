"""Devices, precision, torch.compile's fallback, fused AdamW, gradient accumulation (devices.py, fit.py).

This machine has no GPU: the CUDA and mps branches of the choices are tested by making PyTorch
report a GPU (monkeypatch); the test that really trains on a GPU is skipped unless one is present.
"""

import pytest
import torch

from gpt_from_scratch import GPTModel, GPTDatasetV1, get_tokenizer, load_sample_text, train_model
from gpt_from_scratch import devices
from gpt_from_scratch.cli import _describe_setup, main, mps_caution
from gpt_from_scratch.devices import autocast, compile_model, make_adamw, resolve_device, resolve_precision
from gpt_from_scratch.distributed import distributed_loader

CFG = {"vocab_size": 50257, "context_length": 16, "emb_dim": 32, "n_heads": 2, "n_layers": 2, "drop_rate": 0.0,
       "qkv_bias": False}
CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")


@pytest.fixture(scope="module")
def windows():
    text = load_sample_text()[:6000]
    split = int(len(text) * 0.9)
    tok = get_tokenizer()
    return GPTDatasetV1(text[:split], tok, 16, 16), GPTDatasetV1(text[split:], tok, 16, 16)


def _train(windows, batch_size, grad_accum=1, precision="fp32", steps=4):
    torch.manual_seed(123)
    model = GPTModel(CFG)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    train = distributed_loader(windows[0], batch_size, seed=3)
    val = distributed_loader(windows[1], 4, shuffle=False, drop_last=False)
    history = train_model(model, train, val, opt, max_steps=steps, eval_freq=2, eval_iter=2, seed=3, progress=False,
                          precision=precision, grad_accum=grad_accum)
    return model, history


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == CPU
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == MPS
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == CUDA


@pytest.mark.parametrize("name, message", [
    ("tpu", "device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got 'tpu'"),
    ("gpu", "got 'gpu'"),
    ("meta", "got 'meta'"),
])
def test_unknown_devices(name, message):
    with pytest.raises(ValueError, match=message):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_says_so():
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        resolve_device("cuda")


def test_precision_choices(monkeypatch):
    assert resolve_precision("auto", CPU) == "fp32" and resolve_precision("auto", MPS) == "fp32"
    assert resolve_precision("bf16", CPU) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", CUDA) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # a T4
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    assert resolve_precision("auto", CUDA) == "fp16" and resolve_precision("fp16", CUDA) == "fp16"
    with pytest.raises(ValueError, match=r"this GPU \(Tesla T4\) has no bfloat16; use 'fp16'"):
        resolve_precision("bf16", CUDA)


@pytest.mark.parametrize("precision, device, message", [
    ("fp16", CPU, "precision 'fp16' needs a CUDA GPU"),
    ("fp8", CPU, "precision must be one of auto, fp32, bf16, fp16, got 'fp8'"),
    ("FP32", CPU, "got 'FP32'"),
])
def test_bad_precision(precision, device, message):
    with pytest.raises(ValueError, match=message):
        resolve_precision(precision, device)


def test_bf16_autocast_on_the_cpu_trains_close_to_fp32(windows):
    _, fp32 = _train(windows, 4, steps=2)  # bfloat16 is slow on CPUs without bfloat16 instructions
    _, bf16 = _train(windows, 4, precision="bf16", steps=2)
    with autocast(CPU, "bf16"):  # the context really computes matrix products in bfloat16
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    assert bf16.train_losses != fp32.train_losses  # another computation...
    for a, b in zip(fp32.train_losses + fp32.val_losses, bf16.train_losses + bf16.val_losses):
        assert abs(a - b) < 0.05  # ... to bfloat16's 3 significant digits


def test_grad_accumulation_equals_the_larger_batch(windows):
    model_a, ha = _train(windows, 4)
    model_b, hb = _train(windows, 2, grad_accum=2)
    assert ha.step == hb.step == 4 and ha.total_tokens == hb.total_tokens == 4 * 4 * 16
    for p, q in zip(model_a.parameters(), model_b.parameters()):
        assert torch.allclose(p, q, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kwargs, message", [
    ({"grad_accum": 0}, "grad_accum must be a positive integer, got 0"),
    ({"grad_accum": 1000}, "fewer than one optimizer step of grad_accum=1000"),
    ({"precision": "fp16"}, "needs a CUDA GPU"),
])
def test_bad_trainer_arguments(windows, kwargs, message):
    model = GPTModel(CFG)
    opt = torch.optim.AdamW(model.parameters())
    loader = distributed_loader(windows[0], 4)
    with pytest.raises(ValueError, match=message):
        train_model(model, loader, loader, opt, progress=False, **kwargs)


def test_adamw_decays_the_matrices_only_and_matches_the_default_adamw():
    torch.manual_seed(0)
    a, b = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8)), torch.nn.Linear(8, 8)
    b = torch.nn.Sequential(b, torch.nn.LayerNorm(8))
    b.load_state_dict(a.state_dict())
    fused_opt = make_adamw(a, 1e-2, 0.1)
    decayed, plain = fused_opt.param_groups
    assert [p.shape for p in decayed["params"]] == [(8, 8)] and decayed["weight_decay"] == 0.1
    assert [p.shape for p in plain["params"]] == [(8,)] * 3 and plain["weight_decay"] == 0.0
    reference = torch.optim.AdamW([{"params": [b[0].weight], "weight_decay": 0.1},
                                   {"params": [b[0].bias, b[1].weight, b[1].bias], "weight_decay": 0.0}], lr=1e-2)
    x = torch.randn(4, 8)
    for _ in range(3):
        for model, opt in ((a, fused_opt), (b, reference)):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(a.parameters(), b.parameters()))


def test_compile_falls_back_with_one_warning(monkeypatch):
    model = torch.nn.Linear(2, 2)

    def broken(*args, **kwargs):
        raise RuntimeError("Windows not yet supported for torch.compile\nmore detail")

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(UserWarning, match=r"^--compile: running without torch.compile \(RuntimeError: Windows not "
                                         r"yet supported for torch.compile\)$"):
        assert compile_model(model) is model


def test_mps_caution(monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.8.0")
    assert "caution: on mps, PyTorch 2.8.0 has been reported" in mps_caution(MPS)
    assert mps_caution(CPU) is None
    monkeypatch.setattr(torch, "__version__", "2.9.1")
    assert mps_caution(MPS) is None


def test_each_choice_is_described_once():
    lines = _describe_setup(CPU, "bf16", False, True, world_size=2, grad_accum=3, batch_size=4, context=16)
    assert lines[0].startswith("device: cpu (") and lines[1] == "precision: bf16 (bfloat16 autocast)"
    assert lines[2:] == ["compile: off", "optimizer: AdamW (fused)",
                         "processes: 2, gradient accumulation: 3: 4 x 2 x 3 = 24 sequences of 16 tokens "
                         "per optimizer step"]


@pytest.mark.parametrize("args, code, message", [
    (["train", "--device", "tpu"], 1, "device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got 'tpu'"),
    (["train", "--device", "cpu", "--precision", "fp16"], 1, "precision 'fp16' needs a CUDA GPU"),
    (["train", "--precision", "fp8"], 2, "argument --precision: invalid choice: 'fp8'"),
    (["train", "--grad-accum", "0"], 2, "argument --grad-accum: must be a positive integer, got 0"),
    (["train", "--dropout", "1"], 2, "argument --dropout: must be a number in [0, 1), got 1.0"),
    (["train", "--eval-batches", "0"], 2, "argument --eval-batches: must be a positive integer, got 0"),
    (["train", "--device", "cpu", "--batch-size", "64", "--grad-accum", "8"], 1,
     "fewer than one optimizer step takes (64 x 1 process(es) x 8 accumulated)"),
])
def test_cli_errors(args, code, message, capsys):
    try:
        returned = main(args + ["--no-progress"])
    except SystemExit as exit_:
        returned = exit_.code
    err = capsys.readouterr().err.strip()
    assert returned == code and message in err and len(err.splitlines()) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (not available on the CI machine)")
def test_training_on_a_gpu_with_auto_precision_and_compile(tmp_path, capsys):  # pragma: no cover
    assert main(["train", "--device", "cuda", "--compile", "--max-steps", "4", "--eval-every", "2",
                 "--context-length", "32", "--batch-size", "4", "--no-progress", "--out", str(tmp_path / "m.pt")]) == 0
    out = capsys.readouterr().out
    assert "device: cuda" in out and "step 4: train loss" in out
