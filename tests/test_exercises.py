"""Every checker accepts a right answer and explains the common wrong ones in a learner's words."""

import math

import pytest
import torch
import torch.nn as nn

from gpt_from_scratch import (DummyGPTModel, GPTDatasetV1, GPTModel, MultiHeadAttention, causal_mask, create_dataloader,
                              generate, generate_text_simple, top_k_filter)
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


class StubTokenizer:
    def encode(self, text):
        return [int(w) for w in text.split()]


def test_sliding_window_loophole_a_dataset_with_a_stub_tokenizer():
    """The exercise is to write the windows by hand: handing the ids to GPTDatasetV1 through a stand-in
    tokenizer (or to create_dataloader) gave the right windows and passed."""
    text = lambda ids: " ".join(map(str, ids))
    via_dataset = lambda i, m, s: [(x.tolist(), y.tolist()) for x, y in GPTDatasetV1(text(i), StubTokenizer(), m, s)]
    fails(ex.check_sliding_window_pairs, via_dataset, "calls GPTDatasetV1")
    via_loader = lambda i, m, s: [(x[0].tolist(), y[0].tolist()) for x, y in create_dataloader(
        text(i), batch_size=1, max_length=m, stride=s, shuffle=False, drop_last=False, tokenizer=StubTokenizer())]
    fails(ex.check_sliding_window_pairs, via_loader, "calls GPTDatasetV1")
    assert ex.check_sliding_window_pairs(windows).endswith("correct")  # and the tripwire is gone afterwards
    assert len(GPTDatasetV1(text(range(10)), StubTokenizer(), 4, 2)) == 3


def test_one_hot_and_num_windows():
    one_hot = lambda ids, w: (ids[..., None] == torch.arange(w.shape[0])).to(w.dtype)
    assert ex.check_one_hot_embedding(lambda ids, w: one_hot(ids, w) @ w).endswith("correct")
    assert ex.check_one_hot_embedding(lambda ids, w: torch.einsum("...v,vd->...d", one_hot(ids, w), w)).endswith("correct")
    # Indexing the product's result is no lookup of the weight's rows.
    assert ex.check_one_hot_embedding(lambda ids, w: (one_hot(ids, w)[None] @ w)[0]).endswith("correct")
    assert ex.check_one_hot_embedding(lambda ids, w: (one_hot(ids, w)[..., None] * w).sum(-2)).endswith("correct")
    fails(ex.check_one_hot_embedding, lambda ids, w: (one_hot(ids, w) @ w).sum(0), "wrong shape: expected \\(7, 5\\), got \\(5,\\)")
    fails(ex.check_one_hot_embedding, lambda ids, w: one_hot((ids + 1) % 11, w) @ w, "differs from the embedding lookup")
    # Loopholes: a lookup gives the right numbers without any one-hot product.
    for lookup in (lambda ids, w: w[ids], lambda ids, w: nn.functional.embedding(ids, w),
                   lambda ids, w: w.index_select(0, ids.flatten()).view(*ids.shape, -1),
                   lambda ids, w: torch.stack([list(w)[i] for i in ids.flatten()]).view(*ids.shape, -1)):
        fails(ex.check_one_hot_embedding, lookup, "looks rows of the weight up")
    fails(ex.check_one_hot_embedding, lambda ids, w: torch.zeros(*ids.shape, w.shape[1]), "never multiplies the weight")
    # Loopholes: a lookup of a copy computed from the weight (the product with 1 made it pass), and F.one_hot,
    # which the text rules out.
    fails(ex.check_one_hot_embedding, lambda ids, w: (w * 1)[ids], "looks rows of the weight up")
    fails(ex.check_one_hot_embedding, lambda ids, w: (w @ torch.eye(w.shape[1]))[ids], "looks rows of the weight up")
    fails(ex.check_one_hot_embedding, lambda ids, w: (1 * w.clone()).index_select(0, ids.flatten()).view(*ids.shape, -1),
          "looks rows of the weight up")
    fails(ex.check_one_hot_embedding, lambda ids, w: torch.stack([w.T.unbind(1)[i] for i in ids.flatten()]).view(*ids.shape, -1),
          "looks rows of the weight up")
    fails(ex.check_one_hot_embedding, lambda ids, w: nn.functional.one_hot(ids, w.shape[0]).float() @ w,
          "calls F.one_hot")
    assert ex.check_num_windows(lambda n, m, s: (n - m - 1) // s + 1).endswith("correct")
    fails(ex.check_num_windows, lambda n, m, s: (n - m) // s + 1, "the dataset has")
    fails(ex.check_num_windows, lambda n, m, s: (n - m - 1) / s // 1 + 1, "return a whole number")
    # The text says "without building a dataset": counting one built from a stand-in id list fails.
    fails(ex.check_num_windows, lambda n, m, s: len(GPTDatasetV1(" ".join(["7"] * n), StubTokenizer(), m, s)),
          "calls GPTDatasetV1")


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


def test_causal_softmax_loophole_renormalising_after_softmax():
    """Zeroing the future after softmax and renormalising the rows is equal on ordinary scores, and passed;
    the text rules it out (the -inf trick). Large future scores tell the two apart."""
    def renormalised(scores):
        w = torch.softmax(scores, -1).masked_fill(causal_mask(scores.shape[-1]), 0)
        return w / w.sum(-1, keepdim=True)
    fails(ex.check_causal_softmax, renormalised, "renormalising after softmax cannot recover it")

    def renormalised_safely(scores):  # no division by zero, still the wrong numbers
        w = torch.softmax(scores, -1).masked_fill(causal_mask(scores.shape[-1]), 0)
        return w / w.sum(-1, keepdim=True).clamp_min(1e-30)
    fails(ex.check_causal_softmax, renormalised_safely, "set the future scores to -inf before softmax")
    assert ex.check_causal_softmax(causal_softmax).endswith("correct")


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
    # Loophole: PyTorch's own function, which the text forbids, passed.
    fails(ex.check_scaled_dot_product_attention,
          lambda q, k, v, c=True: nn.functional.scaled_dot_product_attention(q, k, v, is_causal=c),
          "calls F.scaled_dot_product_attention")
    # The text asks for the masking to be written again, not borrowed from exercise 1's answer.
    namespace = {"causal_softmax": causal_softmax, "torch": torch}
    exec("def reuses(q, k, v, is_causal=True):\n"
         "    s = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5\n"
         "    return (causal_softmax(s) if is_causal else torch.softmax(s, -1)) @ v\n", namespace)
    fails(ex.check_scaled_dot_product_attention, namespace["reuses"], "calls your causal_softmax")
    assert causal_softmax(torch.zeros(2, 2))[0, 1] == 0  # the tripwire is gone afterwards


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


def test_mha_from_wrapper_loophole_a_borrowed_forward():
    """A right-sized MultiHeadAttention whose forward (or a hook) hands the input to the wrapper passed
    without a single weight copied; only the returned weights count now."""
    def sized(wrapper):
        heads = list(wrapper.heads)
        head_dim, d_in = heads[0].W_query.weight.shape
        return MultiHeadAttention(d_in, head_dim * len(heads), heads[0].context_length, 0.0, len(heads))

    def borrowed_forward(wrapper):
        mha = sized(wrapper)
        mha.forward = wrapper.forward
        return mha
    fails(ex.check_mha_from_wrapper, borrowed_forward, "outputs differ")

    def borrowed_by_hook(wrapper):
        mha = sized(wrapper)
        mha.register_forward_hook(lambda module, args, output: wrapper(args[0]))
        return mha
    fails(ex.check_mha_from_wrapper, borrowed_by_hook, "outputs differ")

    class Borrowing(MultiHeadAttention):
        def forward(self, x):
            return self.wrapper(x)

    def subclass(wrapper):
        mha = sized(wrapper)
        mha.__class__ = Borrowing
        mha.wrapper = wrapper
        return mha
    fails(ex.check_mha_from_wrapper, subclass, "do not fit .* Unexpected key.*wrapper.heads.0")

    def wrong_context(wrapper):
        mha = mha_from_wrapper(wrapper)
        big = MultiHeadAttention(mha.W_query.in_features, mha.d_out, 9, 0.0, mha.num_heads)
        big.load_state_dict({k: v for k, v in mha.state_dict().items() if k != "mask"}, strict=False)
        return big
    fails(ex.check_mha_from_wrapper, wrong_context, "do not fit MultiHeadAttention")
    fails(ex.check_mha_from_wrapper, lambda w: MultiHeadAttention(6, 6, 7, 0.0, 1), "has num_heads=1")


# --- 03 ---

def test_counts_and_positions():
    dummy = lambda c: 2 * c["vocab_size"] * c["emb_dim"] + c["context_length"] * c["emb_dim"]
    assert ex.check_dummy_param_count(dummy).endswith("correct")
    fails(ex.check_dummy_param_count, lambda c: c["vocab_size"] * c["emb_dim"], "token embedding \\+ position")
    # Loophole: building the model (the text says not to) and counting its parameters passed.
    fails(ex.check_dummy_param_count, lambda c: sum(p.numel() for p in DummyGPTModel(c).parameters()),
          "calls nn.Module.__init__")

    def on_meta(c):
        with torch.device("meta"):
            return sum(p.numel() for p in DummyGPTModel(c).parameters())
    fails(ex.check_dummy_param_count, on_meta, "calls nn.Module.__init__")
    fails(ex.check_dummy_param_count, lambda c: 2 * nn.Embedding(c["vocab_size"], c["emb_dim"]).weight.numel()
          + c["context_length"] * c["emb_dim"], "calls nn.Module.__init__")
    assert ex.check_dummy_param_count(dummy).endswith("correct")

    def top(model, ids):
        return model(torch.tensor([ids]))[0].argmax(-1).tolist()
    assert ex.check_top_choices(top).endswith("correct")
    fails(ex.check_top_choices, lambda m, ids: m(torch.tensor([ids]))[0].argmax(0).tolist(), "return a list|expected")
    # "Run the model once": one pass per prefix gives the same ids and is now refused.
    fails(ex.check_top_choices, lambda m, ids: [m(torch.tensor([ids[:i + 1]]))[0, -1].argmax().item()
                                               for i in range(len(ids))], "your function ran it 7 times")

    def unchanged(model, ids, t):
        changed = ids.clone()
        changed[0, t] = (ids[0, t] + 1) % model.cfg["vocab_size"]
        return [torch.allclose(a, b) for a, b in zip(model(ids)[0], model(changed)[0])]
    assert ex.check_positions_unchanged(unchanged).endswith("correct")
    fails(ex.check_positions_unchanged, lambda m, ids, t: [True] * 6, "never runs the model")
    fails(ex.check_positions_unchanged, lambda m, ids, t: (m(ids), [True] * 6)[1], "should change only row")
    # Loophole: the placeholder's answer does not depend on the model; a GPTModel's does.
    fails(ex.check_positions_unchanged, lambda m, ids, t: [i != t for i in range(ids.shape[1])],
          "never runs the model")

    def by_forward(model, ids, t):  # model.forward(...) runs the model as well as model(...)
        changed = ids.clone()
        changed[0, t] = (ids[0, t] + 1) % model.cfg["vocab_size"]
        both = model.forward(torch.cat((ids, changed)))
        return [torch.allclose(both[0, i], both[1, i]) for i in range(ids.shape[1])]
    assert ex.check_positions_unchanged(by_forward).endswith("correct")

    # Loophole: dispatching on the model's class gave the answer without running the model.
    def by_name(model, ids, t):
        placeholder = type(model).__name__ == "DummyGPTModel"
        return [i != t if placeholder else i < t for i in range(ids.shape[1])]
    fails(ex.check_positions_unchanged, by_name, "never runs the model")

    def by_class_after_running(model, ids, t):
        model(ids)
        return by_name(model, ids, t)
    fails(ex.check_positions_unchanged, by_class_after_running, "GPTModel with no transformer blocks should change only row 0")


# --- 04 ---

def make_layernorm(unbiased=False, scale_shift=True):
    class MyLayerNorm(nn.Module):
        def __init__(self, emb_dim, eps=1e-5, unbiased=False):
            super().__init__()
            self.eps, self.unbiased = eps, unbiased
            self.scale = nn.Parameter(torch.ones(emb_dim))
            self.shift = nn.Parameter(torch.zeros(emb_dim))

        def forward(self, x):
            var = x.var(-1, keepdim=True, unbiased=unbiased or self.unbiased)  # make_layernorm(unbiased=True): always n - 1
            norm = (x - x.mean(-1, keepdim=True)) / torch.sqrt(var + self.eps)
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


def test_layer_norm_loophole_the_unbiased_variant_and_f_layer_norm():
    """The checker never built MyLayerNorm(..., unbiased=True): a class that returned x there passed, and
    so did one that called F.layer_norm for the biased case."""
    class IgnoresUnbiased(make_layernorm()):
        def __init__(self, emb_dim, eps=1e-5, unbiased=False):
            super().__init__(emb_dim, eps)
            self.unbiased = unbiased

        def forward(self, x):
            return x if self.unbiased else super().forward(x)
    fails(ex.check_layer_norm, IgnoresUnbiased, "unbiased=True the output differs .* returns its input unchanged")

    class BiasedOnly(IgnoresUnbiased):  # stores unbiased but never uses it
        def forward(self, x):
            var = x.var(-1, keepdim=True, unbiased=False)
            return self.scale * (x - x.mean(-1, keepdim=True)) / torch.sqrt(var + self.eps) + self.shift
    fails(ex.check_layer_norm, BiasedOnly, "still uses the biased variance")

    class ViaFunctional(IgnoresUnbiased):
        def forward(self, x):
            return x if self.unbiased else nn.functional.layer_norm(x, x.shape[-1:], self.scale, self.shift, self.eps)
    fails(ex.check_layer_norm, ViaFunctional, "calls F.layer_norm")

    class ViaModule(IgnoresUnbiased):
        def forward(self, x):
            return x if self.unbiased else self.scale * nn.functional.layer_norm(x, x.shape[-1:]) + self.shift
    fails(ex.check_layer_norm, ViaModule, "calls F.layer_norm")

    class Right(IgnoresUnbiased):
        def forward(self, x):
            var = x.var(-1, keepdim=True, unbiased=self.unbiased)
            return self.scale * (x - x.mean(-1, keepdim=True)) / torch.sqrt(var + self.eps) + self.shift
    assert ex.check_layer_norm(Right).endswith("correct")


def count(cfg, tie_weights=False):
    V, C, d, L = cfg["vocab_size"], cfg["context_length"], cfg["emb_dim"], cfg["n_layers"]
    att = 4 * d * d + d + (3 * d if cfg["qkv_bias"] else 0)
    ff = 8 * d * d + 5 * d
    return V * d + C * d + L * (att + ff + 4 * d) + 2 * d + (0 if tie_weights else V * d)


def test_count_gpt_params():
    assert ex.check_count_gpt_params(count).endswith("correct")
    fails(ex.check_count_gpt_params, lambda c, t=False: count({**c, "qkv_bias": False}, t), "qkv_bias=True")

    # Loophole: counting a model built on the meta device (no memory, no time) passed.
    def on_meta(cfg, tie_weights=False):
        with torch.device("meta"):
            return sum(p.numel() for p in GPTModel(cfg, tie_weights=tie_weights).parameters())
    fails(ex.check_count_gpt_params, on_meta, "calls nn.Module.__init__")


# --- 05 ---

def greedy_step(model, idx, context_size):
    return model(idx[:, -context_size:])[:, -1, :].argmax(-1, keepdim=True)


def test_greedy_step():
    assert ex.check_greedy_step(greedy_step).endswith("correct")
    fails(ex.check_greedy_step, lambda m, i, c: greedy_step(m, i, c).squeeze(1), "use keepdim=True")
    fails(ex.check_greedy_step, lambda m, i, c: m(i[:, -c:])[:, 0, :].argmax(-1, keepdim=True), "first position")
    fails(ex.check_greedy_step, lambda m, i, c: m(i)[:, -1, :].argmax(-1, keepdim=True), "longer than context_length=10; crop it")
    fails(ex.check_greedy_step, lambda m, i, c: greedy_step(m, i[:, :c], c), "expected next ids")  # cropped the front
    # Loophole: one step of the package's generator passed.
    fails(ex.check_greedy_step, lambda m, i, c: generate_text_simple(m, i, 1, c)[:, -1:], "calls generate_text_simple")
    fails(ex.check_greedy_step, lambda m, i, c: generate(m, i, 1, c)[:, -1:], "calls the package's generate")


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
    # A correct answer that calls model.forward(...) was rejected as never running the model.
    assert ex.check_replay_choices(lambda m, ids, p: m.forward(ids)[0, p - 1:-1].argmax(-1).tolist()).endswith("correct")
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
    # Loophole: the same functions under torch.special's names passed.
    fails(ex.check_cross_entropy,
          lambda lg, t: -torch.special.log_softmax(lg, -1).gather(-1, t.unsqueeze(-1)).mean(), "calls log_softmax")
    fails(ex.check_cross_entropy,
          lambda lg, t: -torch.special.softmax(lg, -1).gather(-1, t.unsqueeze(-1)).log().mean(), "calls softmax")


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


def test_cached_positions_loopholes():
    # The checker's former three fixed cases, answered from a table: the cases are now drawn afresh.
    table = {(0, 4): [0, 1, 2, 3], (4, 1): [4], (9, 3): [9, 10, 11]}
    fails(ex.check_cached_positions, lambda past, n: torch.tensor(table[past, n]), "raised KeyError")
    # Narrow integer types pass a range check on small positions and then wrap or break pos_emb.
    for dtype in (torch.int16, torch.uint8, torch.int32):
        fails(ex.check_cached_positions, lambda past, n, dtype=dtype: torch.arange(past, past + n).to(dtype),
              "should be torch.long")
    # Hand-built lists work too, as long as they end as a LongTensor.
    assert ex.check_cached_positions(lambda past, n: torch.tensor([past + i for i in range(n)])).endswith("correct")


def kv_bytes(cfg, num_tokens, batch_size=1, dtype=torch.float32, num_kv_heads=None):
    heads = cfg["n_heads"] if num_kv_heads is None else num_kv_heads
    return 2 * cfg["n_layers"] * batch_size * num_tokens * heads * (cfg["emb_dim"] // cfg["n_heads"]) * dtype.itemsize


def test_kv_cache_bytes():
    assert ex.check_kv_cache_bytes(kv_bytes).endswith("correct")
    bits = lambda cfg, n, b=1, dt=torch.float32, kv=None: (
        2 * cfg["n_layers"] * b * n * (kv or cfg["n_heads"]) * cfg["emb_dim"] // cfg["n_heads"] * torch.finfo(dt).bits // 8)
    assert ex.check_kv_cache_bytes(bits).endswith("correct")
    assert kv_bytes({"n_layers": 12, "emb_dim": 768, "n_heads": 12}, 1024) == 75_497_472  # GPT-2 124M: 72 MiB
    # SmolLM2-135M: 30 layers, 3 key/value heads of 64: 46,080 bytes per token in float32
    assert kv_bytes({"n_layers": 30, "emb_dim": 576, "n_heads": 9}, 1, num_kv_heads=3) == 46_080
    fails(ex.check_kv_cache_bytes, lambda cfg, n, *a: kv_bytes(cfg, n, *a) // 2, "keys and values")
    fails(ex.check_kv_cache_bytes, lambda cfg, n, *a: kv_bytes(cfg, n, *a) // cfg["n_layers"], "multiply by n_layers")
    fails(ex.check_kv_cache_bytes, lambda cfg, n, *a: kv_bytes(cfg, n, *a) // 4, "not bytes")
    fails(ex.check_kv_cache_bytes, lambda cfg, n, *a: kv_bytes(cfg, cfg["context_length"], *a), "not context_length")
    fails(ex.check_kv_cache_bytes, lambda cfg, n, *a: kv_bytes(cfg, n, *a) + 1, "expected")
    # batch, precision and key/value heads, each forgotten in turn
    fails(ex.check_kv_cache_bytes, lambda cfg, n, b=1, dt=torch.float32, kv=None: kv_bytes(cfg, n, 1, dt, kv),
          "multiply by batch_size")
    fails(ex.check_kv_cache_bytes, lambda cfg, n, b=1, dt=torch.float32, kv=None: kv_bytes(cfg, n, b, torch.float32, kv),
          "depend on dtype")
    fails(ex.check_kv_cache_bytes, lambda cfg, n, b=1, dt=torch.float32, kv=None: kv_bytes(cfg, n, b, dt),
          "only the num_kv_heads")


def test_kv_cache_bytes_loophole_asking_the_package():
    from gpt_from_scratch.attention import KVCache

    def allocate(cfg, n, batch_size=1, dtype=torch.float32, num_kv_heads=None):
        heads = num_kv_heads or cfg["n_heads"]
        one = KVCache(batch_size, heads, n, cfg["emb_dim"] // cfg["n_heads"], dtype=dtype, device="meta")
        return one.nbytes() * cfg["n_layers"]

    def model_cache(cfg, n, *args):
        with torch.device("meta"):
            return sum(layer.nbytes() for layer in GPTModel(cfg).new_kv_cache(1, n))

    fails(ex.check_kv_cache_bytes, allocate, "calls the package's KVCache")
    fails(ex.check_kv_cache_bytes, ex._kv_cache_bytes, "calls the checker's own answer")
    fails(ex.check_kv_cache_bytes, model_cache, "calls the package's KVCache")
    # The tripwires are gone afterwards: the package's cache still works.
    assert KVCache(1, 2, 3, 4).nbytes() == 2 * 24 * 4


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


def test_config_from_shapes_loophole_package_helper():
    # The package's private helper reads a config off the shapes too, but only for GPT-2's four widths:
    # the checker also asks about widths such as 256, where it raises.
    from gpt_from_scratch import pretrained

    class Shapes(dict):
        def shape(self, key):
            return self[key]

    fails(ex.check_config_from_shapes, lambda s: pretrained._config_from_shapes(Shapes(s), "file", hub_layout=True),
          "raised ValueError")


def to_hub(model):
    out = {"wte.weight": model.tok_emb.weight, "wpe.weight": model.pos_emb.weight}
    for i, blk in enumerate(model.trf_blocks):
        p, att = f"h.{i}.", blk.att
        out[p + "ln_1.weight"], out[p + "ln_1.bias"] = blk.norm1.scale, blk.norm1.shift
        out[p + "attn.c_attn.weight"] = torch.cat([att.W_query.weight.T, att.W_key.weight.T, att.W_value.weight.T], 1)
        out[p + "attn.c_attn.bias"] = torch.cat([att.W_query.bias, att.W_key.bias, att.W_value.bias])
        out[p + "attn.c_proj.weight"], out[p + "attn.c_proj.bias"] = att.out_proj.weight.T, att.out_proj.bias
        out[p + "ln_2.weight"], out[p + "ln_2.bias"] = blk.norm2.scale, blk.norm2.shift
        out[p + "mlp.c_fc.weight"], out[p + "mlp.c_fc.bias"] = blk.ff.layers[0].weight.T, blk.ff.layers[0].bias
        out[p + "mlp.c_proj.weight"], out[p + "mlp.c_proj.bias"] = blk.ff.layers[2].weight.T, blk.ff.layers[2].bias
    out["ln_f.weight"], out["ln_f.bias"] = model.final_norm.scale, model.final_norm.shift
    return out


def test_to_hub_layout():
    assert ex.check_to_hub_layout(to_hub).endswith("correct")
    with_masks = lambda m: {**to_hub(m), **{f"h.{i}.attn.bias": torch.ones(1) for i in range(len(m.trf_blocks))}}
    assert ex.check_to_hub_layout(with_masks).endswith("correct")
    # the silent mistake: the square attn.c_proj left untransposed passes every shape check
    fails(ex.check_to_hub_layout, lambda m: {**to_hub(m), **{f"h.{i}.attn.c_proj.weight": b.att.out_proj.weight
                                                             for i, b in enumerate(m.trf_blocks)}},
          "h.0.attn.c_proj.weight is not transposed: it is square")
    fails(ex.check_to_hub_layout, lambda m: {**to_hub(m), **{f"h.{i}.mlp.c_fc.weight": b.ff.layers[0].weight
                                                             for i, b in enumerate(m.trf_blocks)}},
          "Conv1D stores \\(in, out\\)")
    def kqv(m):
        out = to_hub(m)
        for i, b in enumerate(m.trf_blocks):
            out[f"h.{i}.attn.c_attn.weight"] = torch.cat([b.att.W_key.weight.T, b.att.W_query.weight.T,
                                                          b.att.W_value.weight.T], 1)
        return out
    fails(ex.check_to_hub_layout, kqv, "block 0 holds the key part")
    fails(ex.check_to_hub_layout, lambda m: {**to_hub(m), "lm_head.weight": m.out_head.weight}, "no lm_head.weight")
    fails(ex.check_to_hub_layout, lambda m: {"transformer." + k: v for k, v in to_hub(m).items()}, "prefix")
    fails(ex.check_to_hub_layout, lambda m: {k: v for k, v in to_hub(m).items() if k != "ln_f.bias"}, "no 'ln_f.bias'")
    fails(ex.check_to_hub_layout, lambda m: {**to_hub(m), "h.0.ln_1.weight": m.trf_blocks[0].norm1.shift},
          "LayerNorm's scale")
    fails(ex.check_to_hub_layout, lambda m: m.state_dict(), "not in GPT-2's file")

    def in_place(m):
        for b in m.trf_blocks:
            b.att.out_proj.weight.data = b.att.out_proj.weight.data.T.contiguous()
        return to_hub(m)
    fails(ex.check_to_hub_layout, in_place, "changed the model's weights")
    fails(ex.check_to_hub_layout, ex._hub_layout_of, "calls the checker's own answer")
    assert ex.check_to_hub_layout(to_hub).endswith("correct")  # the checker's reference works again afterwards
# --- 09 ---

def rope_halves(x, position, base):
    d = x.shape[-1]
    angles = position * base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # (d/2,): pair i's angle
    cos, sin = torch.cos(angles).float(), torch.sin(angles).float()
    a, b = x[: d // 2], x[d // 2:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos])


def test_rope_one_position():
    from gpt_from_scratch.llama import apply_rope, rope_angles

    assert ex.check_rope_one_position(rope_halves) == "RoPE at one position: correct"

    def complex_numbers(x, position, base):  # another correct way: pairs as complex numbers times e^(i angle)
        d = x.shape[-1]
        z = torch.complex(x[: d // 2].double(), x[d // 2:].double())
        angles = position * base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
        z = z * torch.polar(torch.ones_like(angles), angles)
        return torch.cat([z.real, z.imag]).float()
    assert ex.check_rope_one_position(complex_numbers).endswith("correct")

    def interleaved(x, position, base):
        d = x.shape[-1]
        perm = torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)])  # neighbours (2i, 2i + 1) -> (i, i + d/2)
        out = torch.empty_like(x)
        out[perm] = rope_halves(x[perm], position, base)
        return out
    fails(ex.check_rope_one_position, interleaved, "paired neighbours")
    fails(ex.check_rope_one_position, lambda x, p, b: rope_halves(x, -p, b), "rotated the wrong way")
    fails(ex.check_rope_one_position, lambda x, p, b: rope_halves(x, p, 10000.0), "use the base you are given")
    fails(ex.check_rope_one_position, lambda x, p, b: rope_halves(x, p, b ** 0.5), "the exponent has a 2")
    fails(ex.check_rope_one_position, lambda x, p, b: x, "came back unchanged")
    fails(ex.check_rope_one_position, lambda x, p, b: rope_halves(x, p + 1, b), "off by one")
    fails(ex.check_rope_one_position, lambda x, p, b: 2 * rope_halves(x, p, b), "keeps the length")
    fails(ex.check_rope_one_position, lambda x, p, b: rope_halves(x, p, b)[None], "wrong shape")
    # Loopholes: the package's (or transformers') RoPE gives the right numbers without the formula.
    def packaged(x, position, base):
        cos, sin = rope_angles(x.shape[-1], position + 1, base)
        return apply_rope(x[None, None, None], cos[position:], sin[position:])[0, 0, 0]
    fails(ex.check_rope_one_position, packaged, "calls the package's RoPE")
    from transformers.models.llama import modeling_llama

    def with_transformers(x, position, base):
        cos, sin = rope_angles(x.shape[-1], position + 1, base)  # noqa: F841 - the check trips on this first
        return x * torch.cos(torch.zeros(())) + modeling_llama.rotate_half(x) * 0
    fails(ex.check_rope_one_position, with_transformers, "calls the package's RoPE")

    def transformers_only(x, position, base):
        d = x.shape[-1]
        angles = position * base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
        angles = torch.cat([angles, angles]).float()
        return x * torch.cos(angles) + modeling_llama.rotate_half(x) * torch.sin(angles)
    fails(ex.check_rope_one_position, transformers_only, "calls transformers' RoPE")

    import transformers

    def rotary_module(x, position, base):  # transformers' LlamaRotaryEmbedding computes cos and sin itself
        d = x.shape[-1]
        config = transformers.LlamaConfig(hidden_size=d, num_attention_heads=1, rope_theta=base)
        cos, sin = modeling_llama.LlamaRotaryEmbedding(config)(x[None, None], torch.tensor([[position]]))
        return x * cos[0, 0] + torch.cat([-x[d // 2:], x[: d // 2]]) * sin[0, 0]
    assert torch.allclose(rotary_module(torch.arange(8.0), 3, 100.0), rope_halves(torch.arange(8.0), 3, 100.0),
                          atol=1e-5)  # the loophole gives the right numbers
    fails(ex.check_rope_one_position, rotary_module, "calls transformers' RoPE")


def test_repeat_kv():
    from gpt_from_scratch.llama import repeat_kv

    def expand_reshape(x, n):  # the notebook's answer
        b, n_kv, t, d = x.shape
        return x[:, :, None].expand(b, n_kv, n, t, d).reshape(b, n_kv * n, t, d)
    assert ex.check_repeat_kv(expand_reshape) == "repeat_kv: correct"
    assert ex.check_repeat_kv(lambda x, n: torch.stack([x] * n, dim=2).flatten(1, 2)).endswith("correct")
    fails(ex.check_repeat_kv, lambda x, n: x.repeat(1, n, 1, 1), "repeats the whole set")
    fails(ex.check_repeat_kv, lambda x, n: torch.stack([x] * n, dim=3).flatten(2, 3), "along the head axis, dim 1")
    fails(ex.check_repeat_kv, lambda x, n: expand_reshape(x, n).flip(1), "h // n_rep")
    # Loophole: repeat_interleave does the whole exercise in one call (method or function).
    fails(ex.check_repeat_kv, lambda x, n: x.repeat_interleave(n, dim=1), "calls repeat_interleave")
    fails(ex.check_repeat_kv, lambda x, n: torch.repeat_interleave(x, n, dim=1), "calls repeat_interleave")
    fails(ex.check_repeat_kv, lambda x, n: x, "wrong shape")
    # Loopholes: the package's or transformers' repeat_kv do it in one call.
    fails(ex.check_repeat_kv, repeat_kv, "calls the package's repeat_kv")
    fails(ex.check_repeat_kv, lambda x, n: repeat_kv(x, n) + 0, "calls the package's repeat_kv")
    from transformers.models.llama import modeling_llama
    fails(ex.check_repeat_kv, lambda x, n: modeling_llama.repeat_kv(x, n), "calls transformers' repeat_kv")


def count_params_of(model_class, cfg):
    with torch.device("meta"):
        return sum(p.numel() for p in model_class(cfg).parameters())


def test_gqa_cache_bytes():
    def right(cfg, n, batch_size=1, bytes_per_number=4):
        head_dim = cfg["emb_dim"] // cfg["n_heads"]
        return 2 * cfg["n_layers"] * batch_size * n * cfg["n_kv_groups"] * head_dim * bytes_per_number
    assert ex.check_gqa_cache_bytes(right) == "GQA cache size: correct"
    from gpt_from_scratch.llama import SMOLLM2_CONFIG_135M
    assert right(SMOLLM2_CONFIG_135M, 1) == 46_080  # 30 x 2 x 3 x 64 x 4: 45 KiB per token
    fails(ex.check_gqa_cache_bytes, lambda cfg, n, b, nb: 2 * cfg["n_layers"] * b * n * cfg["emb_dim"] * nb,
          "without grouped-query")
    # head_dim taken as emb_dim / n_kv_groups gives the same number: n_kv_groups x emb_dim / n_kv_groups
    fails(ex.check_gqa_cache_bytes, lambda cfg, n, b, nb: 2 * cfg["n_layers"] * b * n * cfg["n_kv_groups"]
          * (cfg["emb_dim"] // cfg["n_kv_groups"]) * nb, "without grouped-query")
    fails(ex.check_gqa_cache_bytes, lambda cfg, n, b, nb: right(cfg, n, b, nb) // 2, "keys and values")
    fails(ex.check_gqa_cache_bytes, lambda cfg, n, b, nb: right(cfg, n, b, nb) // cfg["n_layers"], "multiply by n_layers")
    fails(ex.check_gqa_cache_bytes, lambda cfg, n, b, nb: right(cfg, n, b, nb) // nb, "not bytes")
    fails(ex.check_gqa_cache_bytes, lambda cfg, n, b, nb: right(cfg, n, b, 4), "not 4")
    fails(ex.check_gqa_cache_bytes, lambda cfg, n, b, nb: right(cfg, n, 1, nb), "multiply by batch_size")
    fails(ex.check_gqa_cache_bytes, lambda cfg, n, b, nb: right(cfg, cfg["context_length"], b, nb), "not context_length")
    fails(ex.check_gqa_cache_bytes, lambda cfg, n, b, nb: right(cfg, n, b, nb) + 1,
          "expected 47,185,920 bytes .SmolLM2-135M")
    # Loopholes: the right number for SmolLM2 only (the notebook's model), hard-coded or from its ratio.
    fails(ex.check_gqa_cache_bytes, lambda cfg, n, b, nb: 46_080 * n * b * nb // 4, "SmolLM2-360M")
    fails(ex.check_gqa_cache_bytes, lambda cfg, n, b, nb: 2 * cfg["n_layers"] * b * n * cfg["emb_dim"] * nb // 3,
          "Llama-3.2-1B")
    # Loopholes: the package allocates the cache (a model built on the meta device costs no memory) ...
    from gpt_from_scratch import LlamaModel

    def allocated(cfg, n, b, nb):
        with torch.device("meta"):
            model = LlamaModel({**cfg, "context_length": max(n, 1)})
        return sum(layer.nbytes() for layer in model.new_kv_cache(b, n)) * nb // 4
    assert allocated(SMOLLM2_CONFIG_135M, 7, 2, 2) == right(SMOLLM2_CONFIG_135M, 7, 2, 2)  # the right numbers
    fails(ex.check_gqa_cache_bytes, allocated, "calls (nn.Module.__init__|KVCache)")  # both are called
    # building alone (the caches of an existing model are not at hand for other configs) fails too
    fails(ex.check_gqa_cache_bytes, lambda cfg, n, b, nb: count_params_of(LlamaModel, cfg) * 0 + right(cfg, n, b, nb),
          "nn.Module.__init__")
    from gpt_from_scratch.attention import KVCache

    def one_cache(cfg, n, b, nb):  # a KVCache of the right shape, without a model
        head_dim = cfg["emb_dim"] // cfg["n_heads"]
        return KVCache(b, cfg["n_kv_groups"], n, head_dim, device="meta").nbytes() * cfg["n_layers"] * nb // 4
    assert one_cache(SMOLLM2_CONFIG_135M, 7, 2, 2) == right(SMOLLM2_CONFIG_135M, 7, 2, 2)
    fails(ex.check_gqa_cache_bytes, one_cache, "KVCache")
    # ... or the notebook's own helper of section 5 (found by name in the learner's globals) does the work.
    notebook = {}
    exec("def cache_bytes_per_token(n_layers, n_kv_heads, head_dim):\n"
         "    return 2 * n_layers * n_kv_heads * head_dim * 4\n"
         "def gqa_cache_bytes(cfg, n, b, nb):\n"
         "    return cache_bytes_per_token(cfg['n_layers'], cfg['n_kv_groups'], cfg['emb_dim'] // cfg['n_heads'])"
         " * n * b * nb // 4\n", notebook)
    fails(ex.check_gqa_cache_bytes, notebook["gqa_cache_bytes"], "cache_bytes_per_token")


# --- 10 ---

def test_lora_forward():
    def right(x, w, b, A, B, alpha, rank):
        return x @ w.T + b + (x @ A.T @ B.T) * (alpha / rank)
    assert ex.check_lora_forward(right).endswith("correct")
    fails(ex.check_lora_forward, lambda x, w, b, A, B, alpha, rank: x @ w.T + b, "frozen layer's alone")
    fails(ex.check_lora_forward, lambda x, w, b, A, B, alpha, rank: x @ w.T + b + x @ A.T @ B.T, "not scaled")
    fails(ex.check_lora_forward, lambda x, w, b, A, B, alpha, rank: x @ w.T + b + x @ A.T @ B.T * alpha,
          "scaled by alpha \\(10\\)")
    fails(ex.check_lora_forward, lambda x, w, b, A, B, alpha, rank: x @ w.T + b + x @ A.T @ B.T * rank / alpha,
          "upside down")
    fails(ex.check_lora_forward, lambda x, w, b, A, B, alpha, rank: x @ w.T + x @ A.T @ B.T * alpha / rank,
          "bias is missing")
    fails(ex.check_lora_forward, lambda x, w, b, A, B, alpha, rank: x @ w.T + b + (x @ B @ A).T, "wrong shape|raised")
    fails(ex.check_lora_forward, lambda x, w, b, A, B, alpha, rank: x @ w.T + b + x @ A.T @ B.T * (alpha // rank),
          "rounded down")

    def through_the_package(x, w, b, A, B, alpha, rank):  # the shortcut: let LoRALinear compute it
        from gpt_from_scratch.lora import LoRALinear
        layer = LoRALinear(torch.nn.Linear(w.shape[1], w.shape[0]), rank, alpha)
        with torch.no_grad():
            for p, v in ((layer.linear.weight, w), (layer.linear.bias, b), (layer.A, A), (layer.B, B)):
                p.copy_(v)
            return layer(x)
    fails(ex.check_lora_forward, through_the_package, "LoRALinear.forward")
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

    def through_the_package(ids, n):  # the shortcut: let the collate function compute it
        from gpt_from_scratch.instruct import InstructionCollator
        return InstructionCollator(pad_id=0)([(torch.tensor(ids), n)])[1][0].tolist()
    fails(ex.check_answer_targets, through_the_package, "InstructionCollator")


def test_lora_param_count_reference_equals_apply_lora():
    from gpt_from_scratch.llama import LlamaModel
    from gpt_from_scratch.lora import apply_lora, count_parameters
    cfg = {"vocab_size": 50, "context_length": 8, "emb_dim": 48, "n_heads": 6, "n_kv_groups": 2, "n_layers": 3,
           "hidden_dim": 80, "rope_base": 10000.0, "rms_norm_eps": 1e-5, "tie_weights": True}
    for targets, rank, blocks in [(("W_query", "W_value"), 8, None), (("W_key", "fc1", "fc3", "out_proj"), 3, [1, 2])]:
        model = LlamaModel(cfg)
        apply_lora(model, targets, rank, alpha=1, blocks=blocks)
        assert count_parameters(model)[0] == ex._lora_trainable_count(cfg, targets, rank, blocks)
    # the notebook's numbers: rank 8 on the query and value projections of SmolLM2's 30 blocks
    smol = {"emb_dim": 576, "n_heads": 9, "n_kv_groups": 3, "hidden_dim": 1536, "n_layers": 30}
    assert ex._lora_trainable_count(smol, ("W_query", "W_value"), 8) == 30 * 8 * (576 + 576 + 576 + 192)


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
    fails(ex.check_lora_param_count, ex._lora_trainable_count, "checker's own answer")

    def by_building(cfg, targets, rank, blocks):  # the shortcut: build the model and count
        from gpt_from_scratch.llama import LlamaModel
        from gpt_from_scratch.lora import apply_lora, count_parameters
        full = {"vocab_size": 10, "context_length": 8, "rope_base": 10000.0, "rms_norm_eps": 1e-5,
                "tie_weights": True, **cfg}
        with torch.device("meta"):
            model = LlamaModel(full)
        apply_lora(model, targets, rank, alpha=1, blocks=blocks)
        return count_parameters(model)[0]
    fails(ex.check_lora_param_count, by_building, "nn.Module.__init__")
