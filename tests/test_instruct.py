"""Instruction data: the generated task, the chat prompt, the label mask, the loss on answers only,
exact match with the KV cache, and a short finetuning through the package's loop."""

import json
import re

import pytest
import torch

from gpt_from_scratch import GPTModel, calc_loss_batch, calc_loss_loader, train_model
from gpt_from_scratch.instruct import (IGNORE_INDEX, MONTHS, SYSTEM_PROMPT, InstructionCollator, InstructionDataset,
                                      answers, encode_example, exact_match, instruction_loader,
                                      make_extraction_splits, prompt_ids, split_vocabulary)
from gpt_from_scratch.lora import apply_lora


class CharChatTokenizer:
    """A character tokenizer with a ChatML-like template, small enough for a tiny model: id = ord(c)
    for printable ASCII; 1 starts a turn, 2 ends one (the end-of-sequence id), 0 pads."""

    START, END = 1, 2

    def encode(self, text):
        assert all(32 <= ord(c) < 127 or c == "\n" for c in text), text
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join({1: "<s>", 2: "</s>", 0: "<pad>"}.get(i, chr(i)) for i in ids)

    def apply_chat_template(self, messages, add_generation_prompt=True):
        ids = []
        for m in messages:
            ids += [self.START] + self.encode(m["role"][0] + ":" + m["content"]) + [self.END]
        return ids + ([self.START] + self.encode("a:") if add_generation_prompt else [])


TOK = CharChatTokenizer()


def test_splits_are_deterministic_and_disjoint():
    splits = make_extraction_splits(n_train=200, n_val=30, n_test=30, seed=5)
    assert splits == make_extraction_splits(n_train=200, n_val=30, n_test=30, seed=5)
    assert splits != make_extraction_splits(n_train=200, n_val=30, n_test=30, seed=6)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [200, 30, 30]
    # a split does not change when another split's size changes
    assert make_extraction_splits(n_train=10, n_val=30, n_test=30, seed=5)["test"] == splits["test"]
    used = {}
    for split, examples in splits.items():
        vocab = split_vocabulary(split)
        used[split] = {"names": set(), "cities": set(), "templates": set()}
        for ex in examples:
            target = json.loads(ex["answer"])  # every target parses, with exactly these keys in this order
            assert list(target) == ["person", "city", "date"]
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", target["date"])
            assert target["person"] in vocab["names"] and target["city"] in vocab["cities"]
            y, m, d = target["date"].split("-")
            date_words = f"{int(d)} {MONTHS[int(m) - 1]} {y}"
            template = [t for t in vocab["templates"]
                        if t.format(person=target["person"], city=target["city"], date=date_words) == ex["sentence"]]
            assert len(template) == 1, ex
            used[split]["names"].add(target["person"])
            used[split]["cities"].add(target["city"])
            used[split]["templates"].add(template[0])
    for a, b in [("train", "val"), ("train", "test"), ("val", "test")]:
        for kind in ("names", "cities", "templates"):
            assert not set(split_vocabulary(a)[kind]) & set(split_vocabulary(b)[kind]), (a, b, kind)
            assert not used[a][kind] & used[b][kind]
    words = {w for s in ("train", "val", "test") for kind in ("names", "cities") for w in split_vocabulary(s)[kind]}
    assert len(words) == sum(len(split_vocabulary(s)[k]) for s in ("train", "val", "test") for k in ("names", "cities"))
    assert splits["train"][0] == {"sentence": splits["train"][0]["sentence"], "answer": splits["train"][0]["answer"]}


def test_split_arguments_are_checked():
    with pytest.raises(ValueError, match="n_train must be a positive integer, got 0"):
        make_extraction_splits(n_train=0)
    with pytest.raises(TypeError, match="seed"):
        make_extraction_splits(seed=1.5)


def test_prompt_goes_through_the_chat_template():
    ids = prompt_ids(TOK, "Tom flew to Oslo on 1 May 2020.")
    assert TOK.decode(ids) == f"<s>s:{SYSTEM_PROMPT}</s><s>u:Tom flew to Oslo on 1 May 2020.</s><s>a:"
    assert TOK.decode(prompt_ids(TOK, "Hi.", system_prompt=None)) == "<s>u:Hi.</s><s>a:"
    prompt, answer = encode_example(TOK, {"sentence": "Hi.", "answer": "{}"}, eos_id=2, system_prompt=None)
    assert (prompt, answer) == (TOK.apply_chat_template([{"role": "user", "content": "Hi."}]), [ord("{"), ord("}"), 2])


def test_collate_masks_exactly_the_prompt_and_the_padding():
    # two hand-made examples: prompt [11, 12, 13] + answer [21, 22, 2]; prompt [11, 12] + answer [2]
    batch = [(torch.tensor([11, 12, 13, 21, 22, 2]), 3), (torch.tensor([11, 12, 2]), 2)]
    inputs, targets = InstructionCollator(pad_id=0)(batch)
    I = IGNORE_INDEX
    assert inputs.tolist() == [[11, 12, 13, 21, 22], [11, 12, 0, 0, 0]]
    # position t predicts token t + 1: only the answer tokens (and its end token) are targets
    assert targets.tolist() == [[I, I, 21, 22, 2], [I, 2, I, I, I]]
    with pytest.raises(ValueError, match="pad_id"):
        InstructionCollator(pad_id=-1)


def test_loss_is_cross_entropy_over_the_answer_tokens_only():
    torch.manual_seed(0)
    cfg = {"vocab_size": 40, "context_length": 16, "emb_dim": 16, "n_heads": 2, "n_layers": 1, "drop_rate": 0.0,
           "qkv_bias": False}
    model = GPTModel(cfg).eval()
    batch = [(torch.tensor([11, 12, 13, 21, 22, 2]), 3), (torch.tensor([11, 12, 2]), 2)]
    inputs, targets = InstructionCollator(pad_id=0)(batch)
    logp = torch.log_softmax(model(inputs), dim=-1)
    # by hand: the four answer targets (row 0: positions 2, 3, 4; row 1: position 1)
    picked = [logp[0, 2, 21], logp[0, 3, 22], logp[0, 4, 2], logp[1, 1, 2]]
    expected = -torch.stack(picked).mean()
    assert torch.allclose(calc_loss_batch(inputs, targets, model), expected, atol=1e-6)
    # the padding's input ids change nothing the loss sees (causal attention, right padding)
    inputs_other_pad = inputs.clone()
    inputs_other_pad[1, 2:] = 7
    assert torch.allclose(calc_loss_batch(inputs_other_pad, targets, model), expected, atol=1e-6)


def _tiny_model(seed=123):
    torch.manual_seed(seed)
    return GPTModel({"vocab_size": 128, "context_length": 192, "emb_dim": 64, "n_heads": 4, "n_layers": 2,
                     "drop_rate": 0.0, "qkv_bias": False})


def test_answers_batched_by_prompt_length_equal_answers_one_by_one():
    model = _tiny_model().eval()
    sentences = [ex["sentence"] for ex in make_extraction_splits(n_train=1, n_val=1, n_test=12)["test"]]
    together = answers(model, TOK, sentences, eos_id=2, context_size=192, max_new_tokens=8, system_prompt=None,
                       batch_size=4)
    alone = [answers(model, TOK, [s], eos_id=2, context_size=192, max_new_tokens=8, system_prompt=None)[0]
             for s in sentences]
    assert together == alone and all(isinstance(a, str) for a in together)
    examples = [{"sentence": s, "answer": a.strip()} for s, a in zip(sentences, alone)]
    examples[0] = {"sentence": sentences[0], "answer": "something else"}
    acc, texts = exact_match(model, TOK, examples, eos_id=2, context_size=192, max_new_tokens=8, system_prompt=None)
    assert acc == pytest.approx(11 / 12) and texts == alone


def test_short_lora_finetuning_of_a_tiny_model_lowers_the_validation_loss():
    splits = make_extraction_splits(n_train=64, n_val=16, n_test=4, seed=1)
    model = _tiny_model()
    apply_lora(model, ("W_query", "W_value", "out_proj"), rank=8, alpha=16)
    train = instruction_loader(splits["train"], TOK, eos_id=2, pad_id=0, batch_size=8, shuffle=True,
                               system_prompt=None)
    val = instruction_loader(splits["val"], TOK, eos_id=2, pad_id=0, batch_size=8, shuffle=False,
                             system_prompt=None)
    before = calc_loss_loader(val, model.eval())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    history = train_model(model, train, val, optimizer, num_epochs=3, eval_freq=8, eval_iter=2, progress=False,
                          seed=123)
    after = calc_loss_loader(val, model.eval())
    assert after < before - 0.5, (before, after)
    assert history.val_losses[-1] < history.val_losses[0]
    # evaluation inside the loop used the loader's collate (padding and masking), so it matches this one
    first_two = sum(calc_loss_batch(x, y, model) .item() for x, y in list(val)[:2]) / 2
    assert history.val_losses[-1] == pytest.approx(first_two, abs=1e-5)


def test_dataset_items_hold_prompt_length():
    dataset = InstructionDataset([{"sentence": "Hi.", "answer": "{}"}], TOK, eos_id=2, system_prompt=None)
    ids, n_prompt = dataset[0]
    assert TOK.decode(ids.tolist()) == "<s>u:Hi.</s><s>a:{}</s>" and n_prompt == 10  # <s> u : H i . </s> <s> a :


@pytest.mark.parametrize("prompt_length", [0, 4, 5])
def test_collate_refuses_a_prompt_length_that_leaves_no_prompt_or_no_answer(prompt_length):
    # 0 masked the wrong targets; 4 (every target a prompt token) gave a loss of nan
    with pytest.raises(ValueError, match=r"prompt_length must be an integer in \[1, 3\]"):
        InstructionCollator(pad_id=0)([(torch.tensor([5, 6, 7, 8]), prompt_length)])
