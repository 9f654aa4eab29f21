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
