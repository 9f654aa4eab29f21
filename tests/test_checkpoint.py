import pytest
import torch

from gpt_from_scratch import GPTModel, History, load_checkpoint, read_checkpoint, save_checkpoint


def test_round_trip_gives_identical_logits(tiny_cfg, tmp_path):
    model = GPTModel(tiny_cfg, tie_weights=True).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 50, (2, 12))
    model(x).sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "sub" / "ck.pt", model, opt, step=7, history=History(step=7))
    loaded, state = load_checkpoint(path)
    loaded.eval()
    assert torch.equal(loaded(x), model(x))
    assert loaded.out_head.weight is loaded.tok_emb.weight
    assert state["step"] == 7 and state["history"].step == 7
    opt2 = torch.optim.AdamW(loaded.parameters(), lr=1e-3)
    load_checkpoint(path, loaded, opt2)
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_loading_into_another_config_names_the_key(tiny_cfg, tmp_path):
    path = save_checkpoint(tmp_path / "ck.pt", GPTModel(tiny_cfg))
    with pytest.raises(ValueError, match=r"saved with config\['emb_dim'\] = 32, but the model has 64"):
        load_checkpoint(path, GPTModel({**tiny_cfg, "emb_dim": 64}))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*nope.pt"):
        read_checkpoint(tmp_path / "nope.pt")


def test_corrupt_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt is not a readable checkpoint"):
        read_checkpoint(bad)


def test_some_other_torch_file(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="other.pt is not a gpt_from_scratch checkpoint"):
        read_checkpoint(other)


def test_optimizer_requested_but_not_saved(tiny_cfg, tmp_path):
    model = GPTModel(tiny_cfg)
    path = save_checkpoint(tmp_path / "ck.pt", model)
    with pytest.raises(ValueError, match="holds no optimizer state"):
        load_checkpoint(path, model, torch.optim.AdamW(model.parameters()))


def test_the_gpu_random_state_is_saved_and_restored_too(tiny_cfg, tmp_path, monkeypatch):
    """Issue 17, bug 2: only the CPU generator was saved, so a resumed GPU run drew other dropout masks.
    A fake CUDA device with two generators stands in for a GPU here."""
    cuda_states = [torch.tensor([1, 2, 3], dtype=torch.uint8), torch.tensor([4, 5], dtype=torch.uint8)]
    restored = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in cuda_states])
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.__setitem__(device, state))
    model = GPTModel(tiny_cfg)
    path = save_checkpoint(tmp_path / "ck.pt", model)
    cpu_state = torch.get_rng_state()
    torch.rand(5)  # move the CPU generator on
    load_checkpoint(path, model, restore_rng=True)
    assert torch.equal(torch.get_rng_state(), cpu_state)
    assert sorted(restored) == [0, 1]
    assert all(torch.equal(restored[i], cuda_states[i]) for i in (0, 1))
