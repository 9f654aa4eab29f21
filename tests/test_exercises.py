"""Every checker accepts a right answer and explains the common wrong ones in a learner's words."""

import math

import pytest
import torch
import torch.nn as nn

from gpt_from_scratch import GPTModel, MultiHeadAttention, causal_mask, generate, generate_text_simple, top_k_filter
from gpt_from_scratch.classroom import exercises as ex
from gpt_from_scratch.classroom.exercises import ExerciseFailure


def fails(checker, answer, message):
    with pytest.raises(ExerciseFailure, match=message):
        checker(answer)


# --- 01 ---

def windows(ids, max_length, stride, shift=1, end=0):
    return [(ids[s:s + max_length], ids[s + shift:s + max_length + shift])
            for s in range(0, len(ids) - max_length - end, stride)]


def test_sliding_window():
    assert ex.check_sliding_window_pairs(windows) == "sliding windows: correct"
    fails(ex.check_sliding_window_pairs, lambda i, m, s: windows(i, m, s, shift=0), "targets are not shifted")
    fails(ex.check_sliding_window_pairs, lambda i, m, s: windows(i, m, s, end=-1)[:-1] + [windows(i, m, s)[-1]] * 2,
          "expected .* windows")
    fails(ex.check_sliding_window_pairs, lambda i, m, s: windows(i, m, 1), "second window should start at token")


def test_one_hot_and_num_windows():
    right = lambda ids, w: nn.functional.one_hot(ids, w.shape[0]).float() @ w
    assert ex.check_one_hot_embedding(right).endswith("correct")
    one_hot = lambda ids, w: (ids[..., None] == torch.arange(w.shape[0])).to(w.dtype)
    assert ex.check_one_hot_embedding(lambda ids, w: (one_hot(ids, w)[..., None] * w).sum(-2)).endswith("correct")
    fails(ex.check_one_hot_embedding, lambda ids, w: (one_hot(ids, w) @ w).sum(0), "wrong shape: expected \\(7, 5\\), got \\(5,\\)")
    fails(ex.check_one_hot_embedding, lambda ids, w: one_hot((ids + 1) % 11, w) @ w, "differs from the embedding lookup")
    # Loopholes: a lookup gives the right numbers without any one-hot product.
    for lookup in (lambda ids, w: w[ids], lambda ids, w: nn.functional.embedding(ids, w),
                   lambda ids, w: w.index_select(0, ids.flatten()).view(*ids.shape, -1),
                   lambda ids, w: torch.stack([list(w)[i] for i in ids.flatten()]).view(*ids.shape, -1)):
        fails(ex.check_one_hot_embedding, lookup, "looks rows of the weight up")
    fails(ex.check_one_hot_embedding, lambda ids, w: torch.zeros(*ids.shape, w.shape[1]), "never multiplies the weight")
    assert ex.check_num_windows(lambda n, m, s: (n - m - 1) // s + 1).endswith("correct")
    fails(ex.check_num_windows, lambda n, m, s: (n - m) // s + 1, "the dataset has")
    fails(ex.check_num_windows, lambda n, m, s: (n - m - 1) / s // 1 + 1, "return a whole number")


def test_not_implemented_is_explained():
    def todo(*args):
        raise NotImplementedError()
    fails(ex.check_num_windows, todo, "not written yet")


# --- 02 ---

def causal_softmax(scores):
    return torch.softmax(scores.masked_fill(causal_mask(scores.shape[-1]), -torch.inf), dim=-1)


def test_causal_softmax():
    assert ex.check_causal_softmax(causal_softmax).endswith("correct")
    fails(ex.check_causal_softmax, lambda s: torch.softmax(s, -1), "leaks future tokens")
    # a mask shifted by one lets each token see the next one
    fails(ex.check_causal_softmax,
          lambda s: torch.softmax(s.masked_fill(torch.triu(torch.ones(6, 6, dtype=torch.bool), 2), -torch.inf), -1),
          "position 0 gives weight .* to position 1")
    fails(ex.check_causal_softmax, lambda s: torch.softmax(s, -1).masked_fill(causal_mask(s.shape[-1]), 0),
          "each row must sum to 1")
    fails(ex.check_causal_softmax, lambda s: torch.softmax(s.masked_fill(causal_mask(6), -torch.inf), -1),
          "raised RuntimeError")  # a mask hard-coded to six tokens


def sdpa(q, k, v, is_causal=True, scale=None, dim=-1):
    s = q @ k.transpose(-2, -1) * (scale if scale is not None else q.shape[-1] ** -0.5)
    if is_causal:
        s = s.masked_fill(causal_mask(s.shape[-1]), -torch.inf)
    return torch.softmax(s, dim=dim) @ v


def test_scaled_dot_product_attention():
    assert ex.check_scaled_dot_product_attention(sdpa).endswith("correct")
    fails(ex.check_scaled_dot_product_attention, lambda q, k, v, c=True: sdpa(q, k, v, c, scale=1.0),
          "not scaled: divide q @ k\\^T by sqrt\\(d_k\\)")
    fails(ex.check_scaled_dot_product_attention, lambda q, k, v, c=True: sdpa(q, k, v, False), "leaks future tokens")
    fails(ex.check_scaled_dot_product_attention, lambda q, k, v, c=True: sdpa(q, k, v, c, dim=-2), "wrong dimension")
    fails(ex.check_scaled_dot_product_attention, lambda q, k, v, c=True: sdpa(q, k, v, True),
          "is_causal=False every token may look")


def mha_from_wrapper(wrapper):
    heads = list(wrapper.heads)
    head_dim, d_in = heads[0].W_query.weight.shape
    mha = MultiHeadAttention(d_in, head_dim * len(heads), heads[0].context_length, 0.0, len(heads))
    for name in ("W_query", "W_key", "W_value"):
        getattr(mha, name).weight.copy_(torch.cat([getattr(h, name).weight for h in heads]))
    mha.out_proj.weight.copy_(torch.eye(head_dim * len(heads)))
    mha.out_proj.bias.zero_()
    return mha


def test_mha_from_wrapper():
    assert ex.check_mha_from_wrapper(mha_from_wrapper).endswith("correct")
    fails(ex.check_mha_from_wrapper, lambda w: w, "return a MultiHeadAttention")

    def no_identity(wrapper):
        mha = mha_from_wrapper(wrapper)
        mha.out_proj.bias.fill_(1.0)
        return mha
    fails(ex.check_mha_from_wrapper, no_identity, "out_proj the identity")


# --- 03 ---

def test_counts_and_positions():
    dummy = lambda c: 2 * c["vocab_size"] * c["emb_dim"] + c["context_length"] * c["emb_dim"]
    assert ex.check_dummy_param_count(dummy).endswith("correct")
    fails(ex.check_dummy_param_count, lambda c: c["vocab_size"] * c["emb_dim"], "token embedding \\+ position")

    def top(model, ids):
        return model(torch.tensor([ids]))[0].argmax(-1).tolist()
    assert ex.check_top_choices(top).endswith("correct")
    fails(ex.check_top_choices, lambda m, ids: m(torch.tensor([ids]))[0].argmax(0).tolist(), "return a list|expected")

    def unchanged(model, ids, t):
        changed = ids.clone()
        changed[0, t] = (ids[0, t] + 1) % model.cfg["vocab_size"]
        return [torch.allclose(a, b) for a, b in zip(model(ids)[0], model(changed)[0])]
    assert ex.check_positions_unchanged(unchanged).endswith("correct")
    fails(ex.check_positions_unchanged, lambda m, ids, t: [True] * 6, "should change only row")
    # Loophole: the placeholder's answer does not depend on the model; a GPTModel's does.
    fails(ex.check_positions_unchanged, lambda m, ids, t: [i != t for i in range(ids.shape[1])],
          "input of a GPTModel should change rows 0 to 5")


# --- 04 ---

def make_layernorm(unbiased=False, scale_shift=True):
    class MyLayerNorm(nn.Module):
        def __init__(self, emb_dim, eps=1e-5):
            super().__init__()
            self.eps = eps
            self.scale = nn.Parameter(torch.ones(emb_dim))
            self.shift = nn.Parameter(torch.zeros(emb_dim))

        def forward(self, x):
            norm = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True, unbiased=unbiased) + self.eps)
            return self.scale * norm + self.shift if scale_shift else norm
    return MyLayerNorm


def test_layer_norm():
    assert ex.check_layer_norm(make_layernorm()).endswith("correct")
    fails(ex.check_layer_norm, make_layernorm(unbiased=True), "variance is not the biased one")
    fails(ex.check_layer_norm, make_layernorm(scale_shift=False), "scale and shift are not applied")
    fails(ex.check_layer_norm, nn.Identity, "needs a trainable parameter `scale`")

    class NoEps(make_layernorm()):
        def forward(self, x):
            return self.scale * (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True, unbiased=False) + self.shift
    fails(ex.check_layer_norm, NoEps, "inf or nan for a constant vector")

    class EpsOutside(make_layernorm()):
        def forward(self, x):
            std = torch.sqrt(x.var(-1, keepdim=True, unbiased=False)) + self.eps
            return self.scale * (x - x.mean(-1, keepdim=True)) / std + self.shift
    fails(ex.check_layer_norm, EpsOutside, "eps inside the square root")


def count(cfg, tie_weights=False):
    V, C, d, L = cfg["vocab_size"], cfg["context_length"], cfg["emb_dim"], cfg["n_layers"]
    att = 4 * d * d + d + (3 * d if cfg["qkv_bias"] else 0)
    ff = 8 * d * d + 5 * d
    return V * d + C * d + L * (att + ff + 4 * d) + 2 * d + (0 if tie_weights else V * d)


def test_count_gpt_params():
    assert ex.check_count_gpt_params(count).endswith("correct")
    fails(ex.check_count_gpt_params, lambda c, t=False: count({**c, "qkv_bias": False}, t), "qkv_bias=True")


# --- 05 ---

def greedy_step(model, idx, context_size):
    return model(idx[:, -context_size:])[:, -1, :].argmax(-1, keepdim=True)


def test_greedy_step():
    assert ex.check_greedy_step(greedy_step).endswith("correct")
    fails(ex.check_greedy_step, lambda m, i, c: greedy_step(m, i, c).squeeze(1), "use keepdim=True")
    fails(ex.check_greedy_step, lambda m, i, c: m(i[:, -c:])[:, 0, :].argmax(-1, keepdim=True), "first position")
    fails(ex.check_greedy_step, lambda m, i, c: m(i)[:, -1, :].argmax(-1, keepdim=True), "longer than context_length=10; crop it")
    fails(ex.check_greedy_step, lambda m, i, c: greedy_step(m, i[:, :c], c), "expected next ids")  # cropped the front


def my_generate(model, idx, n, context_size, crop=True):
    for _ in range(n):
        logits = model(idx[:, -context_size:] if crop else idx)[:, -1, :]
        idx = torch.cat((idx, logits.argmax(-1, keepdim=True)), dim=1)
    return idx


def test_generate_and_replay():
    assert ex.check_generate(my_generate).endswith("correct")
    fails(ex.check_generate, lambda m, i, n, c: my_generate(m, i, n, c, crop=False), "crop it to idx")
    fails(ex.check_generate, lambda m, i, n, c: my_generate(m, i, n - 1, c), "wrong shape")
    # The "do not call" rule is enforced.
    fails(ex.check_generate, lambda m, i, n, c: generate_text_simple(m, i, n, c), "calls generate_text_simple")
    fails(ex.check_generate, lambda m, i, n, c: generate(m, i, n, c), "calls the package's generate")

    def with_greedy_step(m, i, n, c):
        for _ in range(n):
            i = torch.cat((i, greedy_step(m, i, c)), dim=1)
        return i
    fails(ex.check_generate, with_greedy_step, "calls greedy_step")

    def stub(*args):
        raise NotImplementedError()
    fails(ex.check_generate, stub, "not written yet")
    replay = lambda m, ids, p: m(ids)[0, p - 1:-1].argmax(-1).tolist()
    assert ex.check_replay_choices(replay).endswith("correct")
    fails(ex.check_replay_choices, lambda m, ids, p: m(ids)[0, p:].argmax(-1).tolist(), "position i predicts")
    # Loopholes: copying greedy ids back, and one forward pass per position.
    fails(ex.check_replay_choices, lambda m, ids, p: ids[0, p:].tolist(), "never runs the model")
    fails(ex.check_replay_choices, lambda m, ids, p: (m(ids), ids[0, p:].tolist())[1], "only works when they were chosen greedily")
    fails(ex.check_replay_choices, lambda m, ids, p: [m(ids[:, :i + 1])[0, -1].argmax().item()
                                                     for i in range(p - 1, ids.shape[1] - 1)], "ran the model 6 times")


# --- 06 ---

def test_cross_entropy():
    per_position = lambda lg, t: -(lg.gather(-1, t.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(lg, dim=-1))
    right = lambda lg, t: per_position(lg, t).mean()
    assert ex.check_cross_entropy(right).endswith("correct")
    fails(ex.check_cross_entropy, lambda lg, t: -right(lg, t), "sign is wrong")
    fails(ex.check_cross_entropy, lambda lg, t: per_position(lg, t).sum(), "summed over the positions")
    fails(ex.check_cross_entropy, lambda lg, t: -lg.gather(-1, t.unsqueeze(-1)).mean(), "apply log_softmax")
    fails(ex.check_cross_entropy, per_position, "one number")
    # The "do not call" rule is enforced, whichever way the forbidden function is reached.
    fails(ex.check_cross_entropy, lambda lg, t: nn.functional.cross_entropy(lg.flatten(0, 1), t.flatten()),
          "calls F.cross_entropy")
    fails(ex.check_cross_entropy, lambda lg, t: nn.CrossEntropyLoss()(lg.flatten(0, 1), t.flatten()), "calls F.cross_entropy")
    fails(ex.check_cross_entropy, lambda lg, t: -lg.log_softmax(-1).gather(-1, t.unsqueeze(-1)).mean(), "calls log_softmax")
    fails(ex.check_cross_entropy, lambda lg, t: -torch.softmax(lg, -1).gather(-1, t.unsqueeze(-1)).log().mean(),
          "calls softmax")


def test_top_k_and_temperature():
    def top_k(logits, k):
        kth = torch.topk(logits, k).values[:, -1:]
        return logits.masked_fill(logits < kth, -torch.inf)
    assert ex.check_top_k_filter(top_k).endswith("correct")
    fails(ex.check_top_k_filter, lambda lg, k: top_k(lg, max(1, k - 1)), "keep exactly")
    fails(ex.check_top_k_filter, top_k_filter, "calls the package's top_k_filter")
    fails(ex.check_top_k_filter, lambda lg, k: (-top_k(-lg, k)).masked_fill(torch.isinf(top_k(-lg, k)), -math.inf),
          "the .* largest")

    def sample(logits, t, g):
        return torch.multinomial(torch.softmax(logits / t, -1), 1, generator=g)
    assert ex.check_temperature_sampling(sample).endswith("correct")

    def gumbel_max(logits, t, g):  # a correct sampler that draws differently from torch.multinomial
        u = torch.rand(logits.shape, generator=g).clamp_min(1e-20)
        return (logits / t - torch.log(-torch.log(u))).argmax(-1, keepdim=True)

    def inverse_cdf(logits, t, g):
        cdf = torch.softmax(logits / t, -1).cumsum(-1)
        return (torch.rand(logits.shape[0], 1, generator=g) > cdf).sum(-1, keepdim=True).clamp_max(logits.shape[-1] - 1)
    assert ex.check_temperature_sampling(gumbel_max).endswith("correct")
    assert ex.check_temperature_sampling(inverse_cdf).endswith("correct")
    fails(ex.check_temperature_sampling, lambda lg, t, g: torch.multinomial(torch.softmax(lg / t, -1), 1),
          "used the global random generator")
    fails(ex.check_temperature_sampling, lambda lg, t, g: sample(lg, t, torch.Generator().manual_seed(0)),
          "two different seeds gave the same draws")
    fails(ex.check_temperature_sampling, lambda lg, t, g: sample(lg, t, g)[:1], "wrong shape")
    fails(ex.check_temperature_sampling, lambda lg, t, g: sample(lg, 1.0, g), "temperature has no effect")
    fails(ex.check_temperature_sampling, lambda lg, t, g: sample(lg, 1 / t, g), "multiplied by the temperature")


# --- 07 ---

def test_cache_update():
    right = lambda pk, pv, nk, nv: (torch.cat((pk, nk), dim=2), torch.cat((pv, nv), dim=2))
    assert ex.check_cache_update(right) == "cache update: correct"
    fails(ex.check_cache_update, lambda pk, pv, nk, nv: (torch.cat((pk, nk), 1), torch.cat((pv, nv), 1)),
          "tokens are on dim 2")
    fails(ex.check_cache_update, lambda pk, pv, nk, nv: (torch.cat((nk, pk), 2), torch.cat((nv, pv), 2)),
          "new tokens go after the past ones")
    fails(ex.check_cache_update, lambda pk, pv, nk, nv: right(pk, pv, nk, nv)[::-1], "keys and values are swapped")
    fails(ex.check_cache_update, lambda pk, pv, nk, nv: (nk, nv), "wrong shape")
    fails(ex.check_cache_update, lambda pk, pv, nk, nv: torch.cat((pk, nk), 2), "return two tensors")


def test_cached_positions():
    assert ex.check_cached_positions(lambda past, n: torch.arange(past, past + n)).endswith("correct")
    fails(ex.check_cached_positions, lambda past, n: torch.arange(n), "not from 0: start counting at past")
    fails(ex.check_cached_positions, lambda past, n: torch.arange(past + 1, past + n + 1), "off by one")
    fails(ex.check_cached_positions, lambda past, n: torch.arange(past, past + n).float(), "integer tensor")
    fails(ex.check_cached_positions, lambda past, n: torch.arange(past + n), "wrong shape")


def test_kv_cache_bytes():
    right = lambda cfg, n: 2 * cfg["n_layers"] * n * cfg["emb_dim"] * 4
    assert ex.check_kv_cache_bytes(right).endswith("correct")
    assert right({"n_layers": 12, "emb_dim": 768}, 1024) == 75_497_472  # 72 MiB: GPT-2 124M at 1,024 tokens
    fails(ex.check_kv_cache_bytes, lambda cfg, n: cfg["n_layers"] * n * cfg["emb_dim"] * 4, "keys and values")
    fails(ex.check_kv_cache_bytes, lambda cfg, n: 2 * n * cfg["emb_dim"] * 4, "multiply by n_layers")
    fails(ex.check_kv_cache_bytes, lambda cfg, n: 2 * cfg["n_layers"] * n * cfg["emb_dim"], "not bytes")
    fails(ex.check_kv_cache_bytes, lambda cfg, n: right(cfg, cfg["context_length"]), "not context_length")
    fails(ex.check_kv_cache_bytes, lambda cfg, n: right(cfg, n) + 1, "expected")


# --- 08 ---

def test_split_qkv():
    def right(w, b):
        q, k, v = w.chunk(3, dim=-1)
        return (q.T, k.T, v.T, *b.chunk(3))
    assert ex.check_split_qkv(right).endswith("correct")
    fails(ex.check_split_qkv, lambda w, b: (*w.chunk(3, dim=-1), *b.chunk(3)), "transpose it")
    fails(ex.check_split_qkv, lambda w, b: (*[t.T for t in w.chunk(3, dim=-1)[::-1]], *b.chunk(3)),
          "W_query holds the value block")
    fails(ex.check_split_qkv, lambda w, b: (w[:, 0::3].T, w[:, 1::3].T, w[:, 2::3].T, *b.chunk(3)),
          "not every third column")
    fails(ex.check_split_qkv, lambda w, b: (*[t.T for t in w.chunk(3, dim=-1)], *b.chunk(3)[::-1]),
          "b_query should be entries 0 to 5")
    fails(ex.check_split_qkv, lambda w, b: right(w, b)[:3], "return six tensors")


def test_config_from_shapes():
    def right(shapes):
        vocab, emb = shapes["wte.weight"]
        blocks = {int(k.split(".")[1]) for k in shapes if k.startswith("h.")}
        return {"vocab_size": vocab, "context_length": shapes["wpe.weight"][0], "emb_dim": emb,
                "n_heads": emb // 64, "n_layers": max(blocks) + 1, "drop_rate": 0.0, "qkv_bias": True}
    assert ex.check_config_from_shapes(right).endswith("correct")
    fails(ex.check_config_from_shapes, lambda s: {**right(s), "n_layers": right(s)["n_layers"] - 1},
          "numbered from 0")
    fails(ex.check_config_from_shapes, lambda s: {**right(s), "n_layers": sum(k.startswith("h.") for k in s)},
          "count the blocks")
    fails(ex.check_config_from_shapes, lambda s: {**right(s), "n_heads": 12}, "64 wide")
    fails(ex.check_config_from_shapes, lambda s: {**right(s), "qkv_bias": False}, "has a bias")
    fails(ex.check_config_from_shapes, lambda s: {k: v for k, v in right(s).items() if k != "drop_rate"},
          "no 'drop_rate'")


# --- 10 ---

def test_lora_forward():
    def right(x, w, b, A, B, alpha, rank):
        return x @ w.T + b + (x @ A.T @ B.T) * (alpha / rank)
    assert ex.check_lora_forward(right).endswith("correct")
    fails(ex.check_lora_forward, lambda x, w, b, A, B, alpha, rank: x @ w.T + b, "frozen layer's alone")
    fails(ex.check_lora_forward, lambda x, w, b, A, B, alpha, rank: x @ w.T + b + x @ A.T @ B.T, "not scaled")
    fails(ex.check_lora_forward, lambda x, w, b, A, B, alpha, rank: x @ w.T + b + x @ A.T @ B.T * alpha,
          "scaled by alpha \\(12\\)")
    fails(ex.check_lora_forward, lambda x, w, b, A, B, alpha, rank: x @ w.T + b + x @ A.T @ B.T * rank / alpha,
          "upside down")
    fails(ex.check_lora_forward, lambda x, w, b, A, B, alpha, rank: x @ w.T + x @ A.T @ B.T * alpha / rank,
          "bias is missing")
    fails(ex.check_lora_forward, lambda x, w, b, A, B, alpha, rank: x @ w.T + b + (x @ B @ A).T, "wrong shape|raised")
    fails(ex.check_lora_forward, lambda *a: (_ for _ in ()).throw(NotImplementedError()), "not written yet")


def test_answer_targets():
    def right(ids, n):
        return [-100 if t + 1 < n else ids[t + 1] for t in range(len(ids) - 1)]
    assert ex.check_answer_targets(right).endswith("correct")
    assert ex.check_answer_targets(lambda ids, n: torch.tensor(right(ids, n))).endswith("correct")
    fails(ex.check_answer_targets, lambda ids, n: ids[1:], "nothing is masked")
    fails(ex.check_answer_targets, lambda ids, n: [-100 if t < n else ids[t + 1] for t in range(len(ids) - 1)],
          "one target too many")
    fails(ex.check_answer_targets, lambda ids, n: [-100 if t + 2 < n else ids[t + 1] for t in range(len(ids) - 1)],
          "one target too few")
    fails(ex.check_answer_targets, lambda ids, n: [-100 if t < n else ids[t] for t in range(len(ids) - 1)],
          "not shifted")
    fails(ex.check_answer_targets, lambda ids, n: right(ids, n) + [0], "return 5 targets")


def test_lora_param_count_reference_equals_apply_lora():
    from gpt_from_scratch.llama import LlamaModel
    from gpt_from_scratch.lora import apply_lora, count_parameters
    cfg = {"vocab_size": 50, "context_length": 8, "emb_dim": 48, "n_heads": 6, "n_kv_groups": 2, "n_layers": 3,
           "hidden_dim": 80, "rope_base": 10000.0, "rms_norm_eps": 1e-5, "tie_weights": True}
    for targets, rank, blocks in [(("W_query", "W_value"), 8, None), (("W_key", "fc1", "fc3", "out_proj"), 3, [1, 2])]:
        model = LlamaModel(cfg)
        apply_lora(model, targets, rank, alpha=1, blocks=blocks)
        assert count_parameters(model)[0] == ex.lora_trainable_count(cfg, targets, rank, blocks)
    # the notebook's numbers: rank 8 on the query and value projections of SmolLM2's 30 blocks
    smol = {"emb_dim": 576, "n_heads": 9, "n_kv_groups": 3, "hidden_dim": 1536, "n_layers": 30}
    assert ex.lora_trainable_count(smol, ("W_query", "W_value"), 8) == 30 * 8 * (576 + 576 + 576 + 192)


def test_lora_param_count():
    def right(cfg, targets, rank, blocks):
        d, kv, h = cfg["emb_dim"], cfg["n_kv_groups"] * cfg["emb_dim"] // cfg["n_heads"], cfg["hidden_dim"]
        sizes = {"W_query": d + d, "W_key": d + kv, "W_value": d + kv, "out_proj": d + d, "fc1": d + h, "fc2": d + h,
                 "fc3": h + d}
        n = cfg["n_layers"] if blocks is None else len(list(blocks))
        return n * rank * sum(sizes[t] for t in targets)
    assert ex.check_lora_param_count(right).endswith("correct")
    fails(ex.check_lora_param_count, lambda c, t, r, b: right({**c, "n_kv_groups": c["n_heads"]}, t, r, b),
          "grouped-query attention")
    fails(ex.check_lora_param_count,
          lambda c, t, r, b: right(c, t, r, b) // (c["n_layers"] if b is None else len(list(b))), "every adapted block")
    fails(ex.check_lora_param_count, lambda c, t, r, b: 2 * right(c, t, r, b), "adds A \\(rank, d_in\\)")
