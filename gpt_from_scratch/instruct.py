"""Instruction data for finetuning a chat model: a task, its prompts, the label mask, the score.

The task: read one sentence about a trip and answer with a fixed JSON shape,

    "Maria flew to Lisbon on 3 March 2024."  ->  {"person": "Maria", "city": "Lisbon", "date": "2024-03-03"}

Every answer is exact (one right string), so a model either gets it or not: exact match is the score.
The sentences come from templates and word lists written for this series, filled in by a seeded
random generator (``make_extraction_splits``). The train, validation and test splits share no
template, no name and no city, so the test measures whether the model learnt the *task*, not the
examples.

    make_extraction_splits     the three splits: lists of {"sentence", "answer"}
    encode_example             (prompt ids, answer ids + end-of-turn) through the chat template
    InstructionDataset         the encoded examples
    InstructionCollator        pad a batch; labels -100 on the prompt and the padding
    exact_match                greedy answers (with the KV cache) and the share that is exactly right

The label mask is the heart of instruction finetuning. Inputs and targets are the same sequence
shifted by one, as in pretraining; but we do not want the model to learn to *write prompts*, only to
answer them. So every target that is a prompt token, or padding, is set to -100, the index
``cross_entropy`` ignores by default (``ignore_index=-100``): the loss is the mean over the answer
tokens only (the answer's last target is the end-of-turn token, so the model also learns to stop).
"""

import json
import random

import torch

from . import checks
from .generate import generate
from .model import evaluating

IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy's default ignore_index

SYSTEM_PROMPT = "Extract person, city and date as JSON."

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]

# Disjoint pools per split: (train, validation, test). Names and cities invented for this series' lists.
_NAMES = (
    ["Maria", "Tom", "Aisha", "Lukas", "Mei", "Pedro", "Ingrid", "Kofi", "Sofia", "Ravi", "Elena", "Jonas",
     "Yuki", "Omar", "Clara", "Felix", "Nadia", "Hugo", "Leila", "Marco", "Anya", "Diego", "Freya", "Samir",
     "Beatrix", "Chidi", "Dmitri", "Esther", "Fatima", "Gustav", "Haruto", "Isabel", "Jamal", "Katarina",
     "Lars", "Magnus", "Noor", "Olga", "Pablo", "Quentin", "Rosa", "Stefan", "Tamara", "Ulrich", "Vera",
     "Wanda", "Xavier", "Yasmin", "Zoltan", "Adele", "Bjorn", "Camille", "Desmond", "Eloise", "Florian",
     "Gabriela", "Henrik", "Ilse", "Joaquin", "Kwame"],
    ["Greta", "Tariq", "Lucia", "Bruno", "Hana", "Emil", "Rosalind", "Anton"],
    ["Zara", "Nikolai", "Amara", "Oskar", "Priya", "Mateo", "Ines", "Kenji", "Lena", "Farid", "Theodora", "Sven"],
)
_CITIES = (
    ["Lisbon", "Oslo", "Madrid", "Vienna", "Dublin", "Prague", "Warsaw", "Athens", "Helsinki", "Zurich",
     "Porto", "Seville", "Krakow", "Lyon", "Munich", "Bergen", "Naples", "Riga", "Copenhagen", "Edinburgh",
     "Marseille", "Rotterdam", "Salzburg", "Thessaloniki", "Vilnius", "Gdansk", "Bratislava", "Ljubljana",
     "Zagreb", "Belgrade", "Bucharest", "Cardiff", "Glasgow", "Toulouse", "Bordeaux", "Granada", "Palermo",
     "Turin", "Verona", "Innsbruck", "Lausanne", "Utrecht", "Leipzig", "Dresden", "Cologne", "Aarhus",
     "Gothenburg", "Tampere", "Tartu", "Coimbra"],
    ["Tallinn", "Ghent", "Bologna", "Malaga", "Nantes", "Basel"],
    ["Budapest", "Stockholm", "Florence", "Hamburg", "Valencia", "Bremen", "Antwerp", "Geneva", "Heidelberg",
     "Montpellier"],
)
_TEMPLATES = (
    ["{person} flew to {city} on {date}.",
     "On {date}, {person} arrived in {city}.",
     "{person} took the train to {city} on {date}.",
     "{person} will visit {city} on {date}.",
     "On {date} {person} moved to {city}.",
     "{person} landed in {city} on {date}.",
     "{person} drove to {city} on {date}.",
     "{person} met a friend in {city} on {date}.",
     "A conference in {city} brought {person} there on {date}.",
     "{person} spent {date} walking around {city}.",
     "{person} reached {city} by bus on {date}.",
     "{person} started a new job in {city} on {date}."],
    ["{person} sailed to {city} on {date}.",
     "On {date}, {person} left home for {city}.",
     "{person} gave a talk in {city} on {date}."],
    ["{person} travelled to {city} on {date}.",
     "On {date}, {person} checked into a hotel in {city}.",
     "{person} cycled into {city} on {date}.",
     "{person} celebrated a birthday in {city} on {date}."],
)
SPLITS = ("train", "val", "test")


def _example(rng, names, cities, templates):
    person, city, template = rng.choice(names), rng.choice(cities), rng.choice(templates)
    year, month, day = rng.randint(1990, 2030), rng.randint(1, 12), rng.randint(1, 28)
    sentence = template.format(person=person, city=city, date=f"{day} {MONTHS[month - 1]} {year}")
    answer = json.dumps({"person": person, "city": city, "date": f"{year:04d}-{month:02d}-{day:02d}"})
    return {"sentence": sentence, "answer": answer}


def make_extraction_splits(n_train=300, n_val=40, n_test=40, seed=123):
    """``{"train": [...], "val": [...], "test": [...]}``, each a list of ``{"sentence", "answer"}``.

    Deterministic for ``seed``. Each split draws from its own templates, names and cities, so no two
    splits share any of them; the answer is the JSON ``{"person", "city", "date"}`` with an ISO date.
    """
    sizes = {"train": checks.positive_int("n_train", n_train), "val": checks.positive_int("n_val", n_val),
             "test": checks.positive_int("n_test", n_test)}
    checks.non_negative_int("seed", seed)
    splits = {}
    for i, split in enumerate(SPLITS):
        rng = random.Random(seed * 10 + i)  # one stream per split: a split does not change with another's size
        splits[split] = [_example(rng, _NAMES[i], _CITIES[i], _TEMPLATES[i]) for _ in range(sizes[split])]
    return splits


def split_vocabulary(split):
    """The templates, names and cities a split draws from (to show or check that splits are disjoint)."""
    i = SPLITS.index(split)
    return {"templates": list(_TEMPLATES[i]), "names": list(_NAMES[i]), "cities": list(_CITIES[i])}


def prompt_messages(sentence, system_prompt=SYSTEM_PROMPT):
    """The chat messages of one question: a short system prompt (it also replaces the template's long
    default one) and the sentence as the user's turn."""
    messages = [{"role": "user", "content": sentence}]
    return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + messages


def prompt_ids(tokenizer, sentence, system_prompt=SYSTEM_PROMPT):
    """Token ids of the prompt, ending where the assistant's answer starts."""
    return list(tokenizer.apply_chat_template(prompt_messages(sentence, system_prompt), add_generation_prompt=True))


def encode_example(tokenizer, example, eos_id, system_prompt=SYSTEM_PROMPT):
    """``(prompt_ids, answer_ids)``: the chat prompt, and the answer's ids followed by ``eos_id`` (the
    end-of-turn token, so that the model learns to stop after the JSON)."""
    return prompt_ids(tokenizer, example["sentence"], system_prompt), list(tokenizer.encode(example["answer"])) + [eos_id]


class InstructionDataset(torch.utils.data.Dataset):
    """Encoded examples: item ``i`` is ``(ids, prompt_length)``, ``ids`` a LongTensor of prompt + answer."""

    def __init__(self, examples, tokenizer, eos_id, system_prompt=SYSTEM_PROMPT):
        self.items = []
        for example in examples:
            prompt, answer = encode_example(tokenizer, example, eos_id, system_prompt)
            self.items.append((torch.tensor(prompt + answer), len(prompt)))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class InstructionCollator:
    """Turn a list of ``(ids, prompt_length)`` into ``(inputs, targets)``, both ``(batch, T)``.

    ``T`` is the longest sequence's length minus 1. ``inputs[b, t] = ids[t]`` and ``targets[b, t] =
    ids[t + 1]`` (the next token), padded on the right with ``pad_id`` and ``ignore_index``. A target
    is also ``ignore_index`` while it is still a prompt token (``t + 1 < prompt_length``): the first
    target kept is the answer's first token, predicted from the prompt's last position.
    """

    def __init__(self, pad_id, ignore_index=IGNORE_INDEX):
        self.pad_id = checks.non_negative_int("pad_id", pad_id)
        self.ignore_index = ignore_index

    def __call__(self, batch):
        width = max(len(ids) for ids, _ in batch) - 1
        inputs = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        targets = torch.full((len(batch), width), self.ignore_index, dtype=torch.long)
        for b, (ids, prompt_length) in enumerate(batch):
            # at least one prompt token to predict from, and at least one answer token to learn
            checks.int_in_range("prompt_length", prompt_length, 1, len(ids) - 1,
                               f"the example has {len(ids)} tokens: one to predict from, one answer token")
            n = len(ids) - 1
            inputs[b, :n] = ids[:-1]
            targets[b, :n] = ids[1:]
            targets[b, :prompt_length - 1] = self.ignore_index  # these targets are prompt tokens
        return inputs, targets


def instruction_loader(examples, tokenizer, eos_id, pad_id, batch_size, shuffle, seed=123, system_prompt=SYSTEM_PROMPT):
    """A ``DataLoader`` of ``(inputs, targets)`` batches; its own generator makes the order repeatable."""
    dataset = InstructionDataset(examples, tokenizer, eos_id, system_prompt)
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=shuffle,
                                       collate_fn=InstructionCollator(pad_id), generator=generator)


def answer(model, tokenizer, sentence, eos_id, context_size, max_new_tokens=40, system_prompt=SYSTEM_PROMPT):
    """The model's greedy answer to one sentence (text), generated with the KV cache, stopping at ``eos_id``."""
    return answers(model, tokenizer, [sentence], eos_id, context_size, max_new_tokens, system_prompt)[0]


def answers(model, tokenizer, sentences, eos_id, context_size, max_new_tokens=40, system_prompt=SYSTEM_PROMPT,
            batch_size=16):
    """Greedy answers (texts) to ``sentences``, generated with the KV cache and stopping at ``eos_id``.

    Prompts of the same length go through ``generate`` together, in batches of up to ``batch_size``:
    no padding is needed (so no attention mask), and a batch costs little more than one prompt on a
    CPU. Each answer is the same as generated alone; ``eos_id`` and what ``generate`` pads after it
    are cut off.
    """
    checks.positive_int("batch_size", batch_size)
    prompts = [prompt_ids(tokenizer, s, system_prompt) for s in sentences]
    by_length = {}
    for i, p in enumerate(prompts):
        by_length.setdefault(len(p), []).append(i)
    out_texts = [None] * len(prompts)
    with evaluating(model):
        for length, indices in by_length.items():
            for k in range(0, len(indices), batch_size):
                chunk = indices[k:k + batch_size]
                out = generate(model, torch.tensor([prompts[i] for i in chunk]), max_new_tokens, context_size,
                               eos_id=eos_id)
                for row, i in zip(out[:, length:].tolist(), chunk):
                    out_texts[i] = tokenizer.decode(row[:row.index(eos_id)] if eos_id in row else row)
    return out_texts


def exact_match(model, tokenizer, examples, eos_id, context_size, max_new_tokens=40, system_prompt=SYSTEM_PROMPT):
    """``(accuracy, answers)``: the share of ``examples`` whose greedy answer equals the target string
    exactly (spaces at either end ignored), and the answers themselves."""
    if not examples:
        raise ValueError("examples is empty: exact match needs at least one example")
    texts = answers(model, tokenizer, [ex["sentence"] for ex in examples], eos_id, context_size, max_new_tokens,
                    system_prompt)
    correct = sum(t.strip() == ex["answer"] for t, ex in zip(texts, examples))
    return correct / len(examples), texts
