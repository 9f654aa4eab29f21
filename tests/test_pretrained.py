"""load_pretrained_gpt2 on files in the Hugging Face Hub's exact layout, all offline.

GPT-2's real weights cannot be downloaded here. These tests write a random ``transformers``
GPT2LMHeadModel the way the Hub stores ``openai-community/gpt2/model.safetensors``: keys without the
``transformer.`` prefix, no ``lm_head.weight`` (tied), the ``h.N.attn.bias`` mask buffers kept as
float (1, 1, context, context), Conv1D weights as (in, out), and the Hub's ``config.json``. Our loaded
model must then compute transformers' logits and greedy text.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch

from gpt_from_scratch import (GPTModel, generate_text_simple, get_tokenizer, load_hf_gpt2_weights,
                              load_pretrained_gpt2, save_checkpoint, text_to_token_ids, token_ids_to_text)

transformers = pytest.importorskip("transformers", reason="transformers is a test-only dependency (dev extra)")
safetensors_torch = pytest.importorskip("safetensors.torch")

# A small GPT-2 with the full vocabulary, so that the tokenizer's text can be compared.
SMALL = {"vocab_size": 50257, "context_length": 32, "emb_dim": 64, "n_heads": 4, "n_layers": 2}
# GPT-2 small's width (its 12 heads follow from the width when there is no config.json), 2 blocks.
WIDE = {"vocab_size": 300, "context_length": 24, "emb_dim": 768, "n_heads": 12, "n_layers": 2}


def random_hf_gpt2(sizes, seed=0):
    config = transformers.GPT2Config(
        vocab_size=sizes["vocab_size"], n_positions=sizes["context_length"], n_embd=sizes["emb_dim"],
        n_layer=sizes["n_layers"], n_head=sizes["n_heads"], activation_function="gelu_new",
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5, bos_token_id=0, eos_token_id=0,
    )
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():  # biases and norms away from 0 and 1, so a swapped weight cannot hide
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def hub_config(sizes):
    """The Hub's config.json for openai-community/gpt2, with these sizes."""
    return {
        "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
        "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": sizes["context_length"],
        "n_embd": sizes["emb_dim"], "n_head": sizes["n_heads"], "n_layer": sizes["n_layers"],
        "n_positions": sizes["context_length"], "resid_pdrop": 0.1, "summary_activation": None,
        "summary_first_dropout": 0.1, "summary_proj_to_labels": True, "summary_type": "cls_index",
        "summary_use_proj": True, "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
        "vocab_size": sizes["vocab_size"],
    }


def hub_tensors(hf):
    """The state dict as the Hub's model.safetensors holds it."""
    tensors = {k.removeprefix("transformer."): v.clone() for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    c = hf.config.n_positions
    for i in range(hf.config.n_layer):
        tensors[f"h.{i}.attn.bias"] = torch.tril(torch.ones(c, c)).view(1, 1, c, c)
    return tensors


def write_hub_dir(directory, hf, sizes, config=True, tensors=None):
    directory.mkdir(parents=True, exist_ok=True)
    safetensors_torch.save_file(hub_tensors(hf) if tensors is None else tensors,
                                str(directory / "model.safetensors"), metadata={"format": "pt"})
    if config:
        (directory / "config.json").write_text(json.dumps(hub_config(sizes), indent=2))
    return directory


def max_logit_diff(ours, hf, sizes, seed=1):
    idx = torch.randint(0, sizes["vocab_size"], (2, sizes["context_length"]), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return (ours(idx) - hf(idx).logits).abs().max().item()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    hf = random_hf_gpt2(SMALL)
    return hf, write_hub_dir(tmp_path_factory.mktemp("hub") / "gpt2-small-layout", hf, SMALL)


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    hf = random_hf_gpt2(WIDE, seed=3)
    return hf, write_hub_dir(tmp_path_factory.mktemp("hub") / "wide", hf, WIDE, config=False)


def test_hub_layout_directory_gives_transformers_logits(small):
    hf, directory = small
    model = load_pretrained_gpt2(directory)
    assert not model.training
    assert model.cfg == {**SMALL, "drop_rate": 0.0, "qkv_bias": True}
    assert model.out_head.weight is model.tok_emb.weight  # tied, as GPT-2
    assert max_logit_diff(model, hf, SMALL) < 1e-4


def test_hub_layout_greedy_text_equals_transformers(small):
    hf, directory = small
    model = load_pretrained_gpt2(str(directory))
    tokenizer = get_tokenizer()
    prompt = text_to_token_ids("Every effort moves you", tokenizer)
    ours = generate_text_simple(model, prompt, 10, SMALL["context_length"])
    theirs = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=10, do_sample=False,
                         pad_token_id=0, eos_token_id=None)
    assert token_ids_to_text(ours, tokenizer) == token_ids_to_text(theirs, tokenizer)
    assert ours.tolist() == theirs.tolist()


def test_without_config_json_the_sizes_follow_from_the_shapes(wide):
    hf, directory = wide
    for path in (directory, directory / "model.safetensors"):
        model = load_pretrained_gpt2(path)
        assert model.cfg == {**WIDE, "drop_rate": 0.0, "qkv_bias": True}  # 12 heads: GPT-2's for width 768
        assert max_logit_diff(model, hf, WIDE) < 1e-4


def test_a_directory_written_by_transformers_save_pretrained_loads(tmp_path):
    # transformers' own writer keeps the "transformer." prefix: the loader takes both.
    hf = random_hf_gpt2(SMALL, seed=5)
    hf.save_pretrained(tmp_path)
    assert max_logit_diff(load_pretrained_gpt2(tmp_path), hf, SMALL) < 1e-4


@pytest.mark.parametrize("book_mask", [False, True], ids=["ours", "book"])
def test_pth_state_dict_of_a_gptmodel_gives_identical_logits(tmp_path, wide, book_mask):
    hf, _ = wide
    cfg = {**WIDE, "drop_rate": 0.0, "qkv_bias": True}
    source = load_hf_gpt2_weights(GPTModel(cfg, tie_weights=True), hf.state_dict()).eval()
    state = source.state_dict()
    if book_mask:  # the book saves its mask as float 0/1
        state = {k: v.float() if k.endswith(".att.mask") else v for k, v in state.items()}
    torch.save(state, tmp_path / "model.pth")
    model = load_pretrained_gpt2(tmp_path / "model.pth")
    assert model.cfg == cfg and model.out_head.weight is model.tok_emb.weight
    idx = torch.randint(0, WIDE["vocab_size"], (2, WIDE["context_length"]))
    with torch.no_grad():
        assert torch.equal(model(idx), source(idx))
    assert max_logit_diff(model, hf, WIDE) < 1e-4


def test_checkpoint_of_an_untied_model_keeps_its_config_and_head(tmp_path):
    cfg = {**SMALL, "vocab_size": 100, "n_heads": 2, "drop_rate": 0.1, "qkv_bias": False}  # width 64: heads from the file
    source = GPTModel(cfg).eval()
    save_checkpoint(tmp_path / "run.pt", source)
    model = load_pretrained_gpt2(tmp_path / "run.pt")
    assert model.cfg == {**cfg, "drop_rate": 0.0}
    assert model.out_head.weight is not model.tok_emb.weight
    idx = torch.randint(0, 100, (1, 8))
    with torch.no_grad():
        assert torch.equal(model(idx), source(idx))


# --- errors -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, hint", [("gpt3", ""), ("gpt2-mediun", "did you mean 'gpt2-medium'?"),
                                        ("124m", "did you mean '124M'?")])
def test_unknown_size_lists_the_valid_ones(name, hint):
    with pytest.raises(ValueError) as err:
        load_pretrained_gpt2(name)
    message = str(err.value)
    assert f"unknown GPT-2 size {name!r}" in message and hint in message
    for valid in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "124M", "355M", "774M", "1558M"):
        assert repr(valid) in message


@pytest.mark.parametrize("kwargs, message", [
    ({"name_or_path": 124}, "name_or_path must be a GPT-2 size name or a path, got int"),
    ({"name_or_path": "gpt2", "local_files_only": "yes"}, "local_files_only must be True or False, got 'yes'"),
    ({"name_or_path": "gpt2", "cache_dir": 3}, "cache_dir must be a path"),
])
def test_arguments_of_the_wrong_type(kwargs, message):
    with pytest.raises(TypeError, match=message):
        load_pretrained_gpt2(**kwargs)


def test_missing_file_or_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or directory: .*nowhere.safetensors"):
        load_pretrained_gpt2(tmp_path / "nowhere.safetensors")
    with pytest.raises(FileNotFoundError, match="no model.safetensors in the directory"):
        load_pretrained_gpt2(tmp_path)


@pytest.mark.parametrize("name", ["model.safetensors", "model.pth"])
def test_truncated_file(tmp_path, small, name):
    hf, directory = small
    if name == "model.pth":
        torch.save(hub_tensors(hf), tmp_path / "full")
        data = (tmp_path / "full").read_bytes()
    else:
        data = (directory / name).read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    kind = "safetensors" if name.endswith("safetensors") else "PyTorch"
    with pytest.raises(ValueError, match=f"is not a complete {kind} file"):
        load_pretrained_gpt2(tmp_path / name)


def test_a_file_of_another_architecture_names_its_first_key(tmp_path):
    llama = {"model.embed_tokens.weight": torch.zeros(10, 4), "model.norm.weight": torch.ones(4)}
    safetensors_torch.save_file(llama, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="does not hold GPT-2 weights: its first key is 'model.embed_tokens.weight'"):
        load_pretrained_gpt2(tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="describes a 'llama' model, not GPT-2"):
        load_pretrained_gpt2(tmp_path)


def test_a_shape_that_does_not_fit_is_named(tmp_path, small):
    hf, _ = small
    tensors = hub_tensors(hf)
    tensors["h.1.mlp.c_fc.weight"] = tensors["h.1.mlp.c_fc.weight"].T.contiguous()  # stored as nn.Linear would
    write_hub_dir(tmp_path / "a", hf, SMALL, tensors=tensors)
    with pytest.raises(ValueError, match=r"'h.1.mlp.c_fc.weight' has shape \(256, 64\), but a GPT-2 of 2 layers, "
                                         r"width 64, vocabulary 50257, context 32 needs \(64, 256\)"):
        load_pretrained_gpt2(tmp_path / "a")
    # config.json and tensors that disagree: the first key whose shape differs is named
    write_hub_dir(tmp_path / "b", hf, {**SMALL, "context_length": 64})
    safetensors_torch.save_file(hub_tensors(hf), str(tmp_path / "b" / "model.safetensors"))
    with pytest.raises(ValueError, match=r"'wpe.weight' has shape \(32, 64\), but .* needs \(64, 64\)"):
        load_pretrained_gpt2(tmp_path / "b")


def test_a_missing_or_extra_key_is_named(tmp_path, small):
    hf, _ = small
    tensors = hub_tensors(hf)
    del tensors["h.1.ln_2.bias"]
    write_hub_dir(tmp_path / "a", hf, SMALL, tensors=tensors)
    with pytest.raises(ValueError, match="has no 'h.1.ln_2.bias', which a GPT-2 of 2 layers"):
        load_pretrained_gpt2(tmp_path / "a")
    tensors = {**hub_tensors(hf), "score.weight": torch.zeros(2, 64)}
    write_hub_dir(tmp_path / "b", hf, SMALL, tensors=tensors)
    with pytest.raises(ValueError, match="holds 'score.weight', which a GPT-2 of 2 layers, .* does not have"):
        load_pretrained_gpt2(tmp_path / "b")


def test_width_without_a_gpt2_head_count_asks_for_config_json(tmp_path, small):
    hf, directory = small
    with pytest.raises(ValueError, match="cannot tell the number of heads of a model 64 wide"):
        load_pretrained_gpt2(directory / "model.safetensors")  # the file alone, without its config.json


def test_the_cache_is_read_before_the_network(tmp_path, small):
    # A file in Hugging Face's cache layout is found without any network access (local_files_only is
    # not needed). This one has the wrong sizes for GPT-2 124M, which the loader then reports.
    _, directory = small
    repo = tmp_path / "models--openai-community--gpt2"
    commit = "0" * 40
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit / "model.safetensors").write_bytes((directory / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match=r"'wte.weight' has shape \(50257, 64\), but a GPT-2 of 12 layers, width 768"):
        load_pretrained_gpt2("gpt2", cache_dir=tmp_path)


def test_local_files_only_with_an_empty_cache(tmp_path):
    start = time.monotonic()
    with pytest.raises(ConnectionError) as err:
        load_pretrained_gpt2("124M", cache_dir=tmp_path, local_files_only=True)
    assert time.monotonic() - start < 30
    message = str(err.value)
    assert "model.safetensors of openai-community/gpt2" in message and "local_files_only=True" in message
    assert "pass the path of the file" in message


def _offline_env(tmp_path, **extra):
    """An environment with an empty Hugging Face cache; HF_HUB_OFFLINE only when given (notebooks/conftest.py
    sets it for nbval's kernels, in this process too)."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_ENDPOINT")}
    return {**env, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"), **extra}


def test_offline_download_fails_fast_with_one_line(tmp_path):
    # The wall time includes starting Python and importing torch, which on a busy machine takes a
    # while; the network part is timed on its own in the next test.
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "gpt_from_scratch", "generate", "--pretrained", "gpt2", "--prompt",
         "Every effort moves you", "--max-new-tokens", "25", "--temperature", "1.5", "--top-k", "50", "--seed", "123"],
        capture_output=True, text=True, timeout=120, env=_offline_env(tmp_path, HF_HUB_OFFLINE="1"))
    assert time.monotonic() - start < 60
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("gpt-from-scratch generate: error: cannot get model.safetensors of "
                               "openai-community/gpt2 from the Hugging Face Hub (offline mode is on: HF_HUB_OFFLINE=1)")
    assert lines[0].endswith("instead, with --weights PATH")


def test_an_unreachable_hub_fails_fast_without_retrying(tmp_path):
    # A server that accepts connections and never answers: the worst case. huggingface_hub alone would
    # retry for minutes; the loader gives up after its own timeout (shortened here to 1 s).
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    stop = threading.Event()
    accepted = []

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    # huggingface_hub's own retries would take more than 20 s even with a 1 s timeout.
    code = ("import time, gpt_from_scratch.pretrained as w; w.HUB_TIMEOUT = 1\n"
            "start = time.monotonic()\n"
            "try:\n    w.load_pretrained_gpt2('gpt2-medium')\n"
            "except ConnectionError as err:\n    print(err)\n"
            "print(time.monotonic() - start)\n")
    endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              env=_offline_env(tmp_path, HF_ENDPOINT=endpoint))
    finally:
        stop.set()
        thread.join()
        server.close()
        for conn in accepted:
            conn.close()
    message, elapsed = proc.stdout.strip().splitlines()
    assert float(elapsed) < 10, elapsed
    assert message.startswith("cannot get model.safetensors of openai-community/gpt2-medium from the Hugging "
                                  "Face Hub (ReadTimeout"), message + proc.stderr
    assert proc.stderr == ""


def test_cli_generates_from_local_weights_as_the_api_does(small, capsys):
    from gpt_from_scratch.cli import main

    _, directory = small
    assert main(["generate", "--weights", str(directory), "--prompt", "Every effort moves you",
                 "--max-new-tokens", "6", "--temperature", "0"]) == 0
    tokenizer = get_tokenizer()
    model = load_pretrained_gpt2(directory)
    ids = generate_text_simple(model, text_to_token_ids("Every effort moves you", tokenizer), 6, 32)
    assert capsys.readouterr().out == token_ids_to_text(ids, tokenizer) + "\n"


@pytest.mark.parametrize("args, message", [
    (["--weights", "nowhere/model.safetensors"], "--weights: no such file or directory: nowhere/model.safetensors"),
    (["--pretrained", "gpt3"], "unknown GPT-2 size 'gpt3'"),
])
def test_cli_errors_are_one_line(args, message, capsys):
    from gpt_from_scratch.cli import main

    assert main(["generate", *args, "--prompt", "Hi"]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_cli_needs_exactly_one_source_of_weights(capsys):
    from gpt_from_scratch.cli import main

    for args in ([], ["--checkpoint", "a.pt", "--pretrained", "gpt2"]):
        with pytest.raises(SystemExit) as exit_:
            main(["generate", *args, "--prompt", "Hi"])
        assert exit_.value.code == 2
    assert "one of the arguments --checkpoint --pretrained --weights --model is required" in capsys.readouterr().err


def test_importing_the_package_loads_neither_safetensors_nor_huggingface_hub():
    code = ("import sys, gpt_from_scratch\n"
            "print(sorted(m for m in ('safetensors', 'huggingface_hub', 'transformers') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr
