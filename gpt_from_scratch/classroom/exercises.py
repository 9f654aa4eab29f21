"""Checkers for the notebooks' exercises.

Each ``check_*`` function takes the learner's function (or class), runs it on fresh inputs, compares it
with the package's reference and either returns a one-line verdict or raises :class:`ExerciseFailure`
whose message says what is wrong in a learner's words: the expected and actual shapes, attention that
leaks future tokens, scores not scaled by sqrt(d_k), softmax over the wrong dimension, a variance that
is not the biased one, targets not shifted, and so on. Where a common mistake can be recognised (by
comparing with the mistaken computation), the message names it.

A check cell in a notebook is one line, e.g. ``check_causal_softmax(causal_softmax)``; the grader
(``gpt-from-scratch grade``) records the message of a failing check.
"""

import math
import sys
import types

import torch
import torch.nn.functional as F

from ..attention import MultiHeadAttention, MultiHeadAttentionWrapper, causal_mask
from ..data import GPTDatasetV1, TokenFileDataset
from ..generate import generate as _package_generate
from ..generate import generate_text_simple, top_k_filter
from ..llama import apply_rope, apply_rope_interleaved, repeat_kv, rope_angles
from ..model import DummyGPTModel, GPTModel, LayerNorm


class ExerciseFailure(Exception):
    """The learner's answer is not right yet; the message says why."""


def _fail(message):
    raise ExerciseFailure(message)


def _call(fn, *args, what="your function"):
    try:
        return fn(*args)
    except NotImplementedError:
        _fail(f"{what} is not written yet: replace `raise NotImplementedError()` with your code")
    except ExerciseFailure:
        raise
    except Exception as err:
        _fail(f"{what} raised {type(err).__name__}: {err}")


class _ForbiddenCall(ExerciseFailure):
    """Raised by a tripwire: the learner's function called something the exercise rules out."""


_TRIPPED = []


def _tripped(label):
    _TRIPPED.append(label)
    raise _ForbiddenCall(label)


def _tripwire(label):
    """Code that, put in place of a function's own, reports a call to it (it only needs builtins)."""
    namespace = {}
    exec(f"def tripwire(*args, **kwargs):\n"  # noqa: S102 - fixed text, no learner input
         f"    __import__('gpt_from_scratch.classroom.exercises', fromlist=['_'])._tripped({label!r})", namespace)
    return namespace["tripwire"].__code__


def _call_without(fn, *args, forbidden, what="your function"):
    """``_call(fn, *args)``, failing if ``fn`` called one of the ``forbidden`` functions on the way.

    ``forbidden`` maps a name a learner recognises to the functions it covers. A Python function gets a
    tripwire in place of its code while ``fn`` runs; a name given as a string is a function of the
    learner's own notebook (looked up in ``fn``'s globals, e.g. ``greedy_step``). C functions and
    tensor methods (``torch.softmax`` also covers ``x.softmax``) are seen by a profile hook
    (``sys.setprofile``), used only when the exercise forbids one, as it slows every call down; so are
    Python functions whose code cannot be swapped (those that use ``super()``, such as a class's
    ``__init__``: ``nn.Module.__init__`` stands for building any layer or model)."""
    swaps, names, codes = [], {}, {}
    for label, targets in forbidden.items():
        for target in targets:
            if isinstance(target, str):
                target = getattr(fn, "__globals__", {}).get(target)
                if not isinstance(target, types.FunctionType):
                    continue
            if isinstance(target, types.FunctionType):
                if not target.__code__.co_freevars:
                    swaps.append((target, target.__code__, _tripwire(label)))
                else:
                    codes[target.__code__] = label
            else:
                names[target.__name__] = label
    seen = []

    def hook(frame, event, arg):
        if event == "c_call":
            label = names.get(getattr(arg, "__name__", None))
        elif event == "call":
            label = codes.get(frame.f_code)
        else:
            return
        if label and label not in seen:
            seen.append(label)

    _TRIPPED.clear()
    previous = sys.getprofile()
    for target, _, tripwire in swaps:
        target.__code__ = tripwire
    if names or codes:
        sys.setprofile(hook)
    try:
        result = _call(fn, *args, what=what)
    except _ForbiddenCall:
        result = None
    finally:
        if names or codes:
            sys.setprofile(previous)
        for target, code, _ in swaps:
            target.__code__ = code
    seen = _TRIPPED[:1] + seen
    _TRIPPED.clear()
    if seen:
        _fail(f"{what} calls {seen[0]}; the exercise asks you to compute this yourself, without it")
    return result


def _tensor(value, what):
    if not isinstance(value, torch.Tensor):
        _fail(f"{what} should return a torch.Tensor, got {type(value).__name__}")
    return value


def _shape(got, expected, what):
    if tuple(got.shape) != tuple(expected):
        _fail(f"{what} has the wrong shape: expected {tuple(expected)}, got {tuple(got.shape)}")


def _close(a, b, atol=1e-5):
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=atol)


def _as_list(value):
    """A learner's answer as a plain list, whether they returned a tensor, a tuple or a list."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return list(value) if isinstance(value, (list, tuple)) else value


def _passed(name):
    return f"{name}: correct"


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# --- 01: tokens and embeddings ---------------------------------------------------------------------

class _ListTokenizer:
    """Token ids that are the text's words, so a dataset can be built from a plain id list."""

    def encode(self, text):
        return [int(w) for w in text.split()]


def _reference_pairs(ids, max_length, stride):
    ds = GPTDatasetV1(" ".join(map(str, ids)), _ListTokenizer(), max_length, stride)
    return [(x.tolist(), y.tolist()) for x, y in ds]


_DATASETS = {"GPTDatasetV1": [GPTDatasetV1.__init__, TokenFileDataset.__init__]}  # create_dataloader builds one


def check_sliding_window_pairs(fn):
    """``fn(token_ids, max_length, stride) -> [(input_ids, target_ids), ...]`` as lists.

    Written by hand: building a ``GPTDatasetV1`` (directly, with a stand-in tokenizer, or through
    ``create_dataloader``) fails."""
    g = _gen(1)
    for n, max_length, stride in [(20, 4, 4), (20, 4, 1), (23, 5, 3), (9, 8, 2), (30, 6, 7)]:
        ids = torch.randint(0, 1000, (n,), generator=g).tolist()
        expected = _reference_pairs(ids, max_length, stride)
        got = _call_without(fn, list(ids), max_length, stride, forbidden=_DATASETS)
        got = [(list(map(int, x)), list(map(int, y))) for x, y in got]
        case = f"(for {n} tokens, max_length={max_length}, stride={stride})"
        if got and any(len(x) != max_length for x, _ in got):
            _fail(f"every input window must have max_length={max_length} tokens {case}; "
                  f"got lengths {sorted({len(x) for x, _ in got})}")
        if got and got[0][1] == got[0][0]:
            _fail(f"the targets are not shifted: a target must be its input moved one token to the right {case}")
        if got and got[0][1] != ids[1:max_length + 1]:
            _fail(f"the first target should be token_ids[1:{max_length + 1}] (the input shifted by one) {case}; "
                  f"got {got[0][1]}")
        if len(got) > 1 and got[1][0] != expected[1][0]:
            _fail(f"the second window should start at token {stride} (one stride after the first) {case}")
        if len(got) != len(expected):
            _fail(f"expected {len(expected)} windows, got {len(got)} {case}: a window may start wherever its "
                  f"target's last token (start + max_length) still exists")
        if got != expected:
            _fail(f"the windows differ from GPTDatasetV1's {case}")
    return _passed("sliding windows")


class _RecordingWeight(torch.Tensor):
    """A weight that records which torch functions are applied to it (``weight[ids]``, ``@``, ...).

    What is computed from it records too (``(weight * 1)[ids]`` and ``(weight @ I)[ids]`` are still
    lookups of its rows) as long as it has a dimension of the vocabulary's size (``rows``): once a
    product has summed the rows away, indexing the result is no lookup."""

    used = None
    rows = None

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if cls.used is not None:
            cls.used.add(getattr(func, "__name__", str(func)).removeprefix("__").removesuffix("__"))
        with torch._C.DisableTorchFunctionSubclass():
            result = func(*args, **(kwargs or {}))
        if isinstance(result, torch.Tensor) and cls.rows in result.shape:
            return result.as_subclass(cls)
        if isinstance(result, (tuple, list)):  # split, chunk, unbind: pieces of the rows
            return type(result)(r.as_subclass(cls) if isinstance(r, torch.Tensor) and cls.rows in r.shape else r
                                for r in result)
        return result


_LOOKUPS = {"getitem", "index_select", "embedding", "take", "take_along_dim", "gather", "unbind", "iter",
            "select", "narrow", "split", "chunk", "tensor_split"}
_PRODUCTS = {"matmul", "rmatmul", "mm", "bmm", "einsum", "tensordot", "linear", "mul", "rmul", "addmm", "inner"}


def check_one_hot_embedding(fn):
    """``fn(token_ids, weight) -> embeddings``: a one-hot matrix product equal to ``weight[token_ids]``.

    The weight handed to ``fn`` records what is done with it and with what is computed from it:
    looking rows up (``weight[ids]``, ``(weight * 1)[ids]``, ``index_select``, ``F.embedding``,
    iterating over it) fails, a product with it is required; ``F.one_hot`` is ruled out (the one-hot
    tensor is to be built by hand)."""
    g = _gen(2)
    weight = torch.randn(11, 5, generator=g)
    for shape in [(7,), (3, 4)]:
        ids = torch.randint(0, 11, shape, generator=g)
        _RecordingWeight.used, _RecordingWeight.rows = set(), weight.shape[0]  # 11: in neither ids shape nor dim
        try:
            got = _call_without(fn, ids, weight.as_subclass(_RecordingWeight), forbidden={"F.one_hot": [F.one_hot]},
                                what="one_hot_embedding")
        finally:
            used, _RecordingWeight.used = _RecordingWeight.used, None
        if isinstance(got, _RecordingWeight):
            got = got.as_subclass(torch.Tensor)
        lookups = sorted(used & _LOOKUPS)
        if lookups:
            _fail(f"one_hot_embedding looks rows of the weight up ({', '.join(lookups)}); the exercise is to get them "
                  "with a product: one_hot(token_ids) @ weight")
        if not used & _PRODUCTS:
            _fail("one_hot_embedding never multiplies the weight: build the one-hot tensor and compute one_hot @ weight")
        got = _tensor(got, "one_hot_embedding")
        _shape(got, (*shape, 5), f"the embeddings of ids with shape {shape}")
        if not _close(got, weight[ids]):
            _fail("the result differs from the embedding lookup weight[token_ids]: row i of the one-hot matrix "
                  "must be 1 at column token_ids[i] and 0 elsewhere")
    return _passed("one-hot embedding")


def check_num_windows(fn):
    """``fn(n_tokens, max_length, stride) -> int``, the number of windows ``GPTDatasetV1`` makes, without
    building one."""
    for n in (10, 37, 100):
        for max_length in (1, 4, 9):
            for stride in (1, 2, 3, 4, 10):
                expected = len(range(0, n - max_length, stride))
                got = _call_without(fn, n, max_length, stride, forbidden=_DATASETS)
                if not isinstance(got, int) or isinstance(got, bool):
                    _fail(f"return a whole number (int), got {got!r} ({type(got).__name__}): use // for division")
                if got != expected:
                    _fail(f"for {n} tokens, max_length={max_length}, stride={stride}: you say {got}, the dataset "
                          f"has {expected} windows (starts 0, {stride}, ... while start + max_length < {n})")
    return _passed("number of windows")


# --- 02: attention -----------------------------------------------------------------------------------

def _diagnose_weights(w, what):
    n = w.shape[-1]
    future = w.masked_fill(~causal_mask(n), 0)
    if future.abs().max() > 1e-6:
        i, j = [int(v) for v in (future.abs() == future.abs().max()).nonzero()[0][-2:]]
        _fail(f"{what} leaks future tokens: position {i} gives weight {float(w[..., i, j].flatten()[0]):.3f} "
              f"to position {j}, which comes after it. Mask the scores above the diagonal with -inf before softmax")
    rows = w.sum(-1)
    if not torch.allclose(rows, torch.ones_like(rows), atol=1e-5):
        cols = w.sum(-2)
        if torch.allclose(cols, torch.ones_like(cols), atol=1e-5):
            _fail(f"{what}: the columns sum to 1 instead of the rows: take softmax over the last dimension (dim=-1)")
        _fail(f"{what}: each row must sum to 1 (softmax over the last dimension, after masking); "
              f"row sums are {rows.flatten()[:4].tolist()}")


def check_causal_softmax(fn):
    """``fn(scores) -> weights``: causal mask then softmax over the last dimension."""
    g = _gen(3)
    # Several sizes and numbers of leading dimensions: a mask hard-coded to one size fails here.
    for shape in [(2, 6, 6), (5, 5), (2, 3, 4, 4), (1, 9, 9)]:
        scores = torch.randn(*shape, generator=g) * 2
        got = _tensor(_call(fn, scores.clone()), "causal_softmax")
        _shape(got, scores.shape, f"the attention weights for scores of shape {shape}")
        _diagnose_weights(got, "your attention")
        expected = torch.softmax(scores.masked_fill(causal_mask(shape[-1]), -torch.inf), dim=-1)
        if not _close(got, expected):
            _fail(f"for scores of shape {shape} the weights differ from softmax(scores masked with -inf above the "
                  "diagonal); did you zero the future after softmax without renormalising the rows?")
    # Future scores far above the past ones: a softmax over all of them leaves the past about exp(-200), which
    # is 0 in float32, so zeroing the future after softmax and renormalising divides 0 by 0. Masking with
    # -inf first never looks at the future scores.
    scores = torch.randn(2, 5, 5, generator=g).masked_fill(causal_mask(5), 200.0)
    got = _tensor(_call(fn, scores.clone()), "causal_softmax")
    expected = torch.softmax(scores.masked_fill(causal_mask(5), -torch.inf), dim=-1)
    if not _close(got, expected):
        _fail("with future scores of 200 (past ones near 0) your weights are "
              f"{'nan or inf' if not torch.isfinite(got).all() else 'wrong'}: a softmax over every score gives the "
              "past exp(-200), 0 in float32, so renormalising after softmax cannot recover it; set the future "
              "scores to -inf before softmax")
    return _passed("causal softmax")


# Exercise 2 is graded on its own: PyTorch's function and the notebook's exercise-1 answer are ruled out.
_ATTENTION_HELPERS = {"F.scaled_dot_product_attention": [F.scaled_dot_product_attention],
                      "your causal_softmax (write the masking again here)": ["causal_softmax"]}


def check_scaled_dot_product_attention(fn):
    """``fn(q, k, v, is_causal=True) -> context``, equal to PyTorch's scaled_dot_product_attention."""
    g = _gen(4)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g) for _ in range(3))  # (batch, heads, tokens, head_dim)
    for causal in (True, False):
        got = _tensor(_call_without(fn, q, k, v, causal, what="your attention", forbidden=_ATTENTION_HELPERS),
                      "scaled dot-product attention")
        _shape(got, (2, 3, 5, 8), "the context vectors")
        expected = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        if _close(got, expected):
            continue
        mask = causal_mask(5) if causal else torch.zeros(5, 5, dtype=torch.bool)

        def attend(scale, dim=-1, masked=mask):
            s = (q @ k.transpose(-2, -1)) * scale
            return torch.softmax(s.masked_fill(masked, -torch.inf), dim=dim) @ v

        if _close(got, attend(1.0)):
            _fail("the scores are not scaled: divide q @ k^T by sqrt(d_k) = sqrt(head_dim) before softmax")
        if _close(got, attend(1 / 8)):
            _fail("the scores are divided by d_k; divide by sqrt(d_k) instead")
        if causal and _close(got, attend(1 / math.sqrt(8), masked=torch.zeros(5, 5, dtype=torch.bool))):
            _fail("with is_causal=True the attention leaks future tokens: mask the scores above the diagonal")
        if not causal and _close(got, attend(1 / math.sqrt(8), masked=causal_mask(5))):
            _fail("with is_causal=False every token may look at every other: do not mask")
        if _close(got, attend(1 / math.sqrt(8), dim=-2)):
            _fail("softmax is taken over the wrong dimension: use dim=-1 so each query's weights sum to 1")
        _fail(f"the result differs from F.scaled_dot_product_attention (is_causal={causal})")
    return _passed("scaled dot-product attention")


def check_mha_from_wrapper(fn):
    """``fn(wrapper) -> MultiHeadAttention`` computing the same as the ``MultiHeadAttentionWrapper``."""
    torch.manual_seed(5)
    for d_in, head_dim, heads in [(6, 2, 3), (8, 4, 2)]:
        wrapper = MultiHeadAttentionWrapper(d_in, head_dim, context_length=7, dropout=0.0, num_heads=heads).eval()
        with torch.no_grad():
            mha = _call(fn, wrapper, what="mha_from_wrapper")
        if not isinstance(mha, MultiHeadAttention):
            _fail(f"return a MultiHeadAttention, got {type(mha).__name__}")
        if getattr(mha, "num_heads", None) != heads:
            _fail(f"the wrapper has {heads} heads; your MultiHeadAttention has num_heads={getattr(mha, 'num_heads', None)}")
        # Only the weights are the answer: they go into a fresh MultiHeadAttention, so a forward method, a hook
        # or a layer swapped on the returned module (one that calls the wrapper, say) is not what is run.
        fresh = MultiHeadAttention(d_in, head_dim * heads, 7, 0.0, heads)
        try:
            fresh.load_state_dict(torch.nn.Module.state_dict(mha))
        except (RuntimeError, ValueError) as err:
            _fail(f"your MultiHeadAttention's weights do not fit MultiHeadAttention(d_in={d_in}, "
                  f"d_out={head_dim * heads}, context_length=7, num_heads={heads}): {str(err).splitlines()[-1].strip()}")
        x = torch.randn(2, 7, d_in, generator=_gen(d_in))
        with torch.no_grad():
            got, expected = fresh.eval()(x), wrapper(x)
        _shape(got, expected.shape, "the MultiHeadAttention output")
        if not _close(got, expected):
            _fail(f"outputs differ for {heads} heads of size {head_dim}: stack the heads' W_query/W_key/W_value "
                  f"weights along the output dimension (dim 0) and make out_proj the identity with zero bias")
    return _passed("multi-head attention from the wrapper")


# --- 03: the placeholder GPT ------------------------------------------------------------------------

_SMALL = {"vocab_size": 97, "context_length": 10, "emb_dim": 12, "n_heads": 3, "n_layers": 2,
          "drop_rate": 0.0, "qkv_bias": False}


def _count(model):
    return sum(p.numel() for p in model.parameters())


# Building any layer or model runs nn.Module.__init__: a count by formula never does.
_BUILDING = {"nn.Module.__init__ (it builds a layer or a model; count with a formula from the config instead)":
             [torch.nn.Module.__init__]}


def check_dummy_param_count(fn):
    """``fn(cfg) -> int``: parameters of ``DummyGPTModel(cfg)``, by formula (building a model, or any
    layer, fails; on the meta device too)."""
    for cfg in (_SMALL, {**_SMALL, "context_length": 31, "emb_dim": 6}, {**_SMALL, "n_layers": 9}):
        expected = _count(DummyGPTModel(cfg))
        got = _call_without(fn, dict(cfg), forbidden=_BUILDING)
        if got != expected:
            _fail(f"for vocab {cfg['vocab_size']}, context {cfg['context_length']}, emb_dim {cfg['emb_dim']}: you "
                  f"say {got}, the model has {expected} (token embedding + position embedding + output head)")
    return _passed("placeholder parameter count")


def check_top_choices(fn):
    """``fn(model, ids) -> list``: the most likely next token at every position, from one forward pass."""
    torch.manual_seed(6)
    model = GPTModel(_SMALL).eval()
    ids = torch.randint(0, 97, (7,), generator=_gen(6)).tolist()
    calls = []
    hook = model.out_head.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        with torch.no_grad():
            got = _call(fn, model, list(ids))
    finally:
        hook.remove()
    if len(calls) != 1:
        _fail(f"run the model once on the whole sequence (as a (1, {len(ids)}) tensor); your function ran it "
              f"{len(calls)} times")
    with torch.no_grad():
        expected = model(torch.tensor([ids]))[0].argmax(-1).tolist()
    got = _as_list(got)
    if not isinstance(got, list) or len(got) != len(ids):
        _fail(f"return a list with one token id per position ({len(ids)}), got {got!r}")
    if got != expected:
        _fail(f"expected {expected}, got {got}: take argmax over the vocabulary (the last dimension) at each position")
    return _passed("top choices")


def check_positions_unchanged(fn):
    """``fn(model, ids, t) -> list of bool``: which positions' logits survive changing token ``t``.

    On the placeholder only position ``t`` changes; on a ``GPTModel`` (causal attention) the positions
    before ``t`` stay and ``t`` and every later one change; on a ``GPTModel`` without blocks (nothing
    mixes the positions) only ``t`` changes again, so the model's class does not tell the answer. The
    check also counts the forward passes (through the output head, however the model is called)."""
    torch.manual_seed(7)
    placeholder = DummyGPTModel(_SMALL).eval()
    gpt = GPTModel(_SMALL).eval()
    no_blocks = GPTModel({**_SMALL, "n_layers": 0}).eval()
    ids = torch.randint(0, 97, (1, 6), generator=_gen(7))
    only_t = "only row {t}"
    cases = ((placeholder, lambda i, t: i != t, "the placeholder model", only_t),
             (gpt, lambda i, t: i < t, "a GPTModel",
              "rows {t} to 5 (attention passes the change on to later positions, never to earlier ones)"),
             (no_blocks, lambda i, t: i != t, "a GPTModel with no transformer blocks",
              only_t + " (without blocks no attention mixes the positions)"))
    for model, rule, name, what in cases:
        calls = []
        hook = model.out_head.register_forward_pre_hook(lambda module, args: calls.append(1))
        try:
            for t in range(6):
                calls.clear()
                with torch.no_grad():
                    got = _as_list(_call(fn, model, ids.clone(), t))
                if not calls:
                    _fail(f"your function never runs the model ({name}, token {t}): run it on both inputs and "
                          "compare each position's logits")
                expected = [rule(i, t) for i in range(6)]
                if got != expected:
                    _fail(f"changing token {t} of the input of {name} should change {what.format(t=t)}: expected "
                          f"{expected}, got {got}; run the model on both inputs and compare each position's logits")
        finally:
            hook.remove()
    return _passed("positions unchanged")


# --- 04: the transformer block -------------------------------------------------------------------------

_LAYER_NORMS = {"F.layer_norm": [F.layer_norm, torch.layer_norm, torch.native_layer_norm]}  # nn.LayerNorm too

def check_layer_norm(cls):
    """``cls(emb_dim)``: a LayerNorm module with ``scale`` and ``shift`` parameters."""
    ref = LayerNorm(16)
    with torch.no_grad():
        ref.scale.copy_(torch.rand(16, generator=_gen(8)) + 0.5)
        ref.shift.copy_(torch.randn(16, generator=_gen(9)))
    mine = _call(cls, 16, what="your LayerNorm class")
    for name, init in (("scale", torch.ones(16)), ("shift", torch.zeros(16))):
        p = getattr(mine, name, None)
        if not isinstance(p, torch.nn.Parameter):
            _fail(f"your LayerNorm needs a trainable parameter `{name}` (nn.Parameter) of shape (16,)")
        if not torch.equal(p.detach(), init):
            _fail(f"`{name}` should start as {'ones' if name == 'scale' else 'zeros'}")
    with torch.no_grad():
        mine.scale.copy_(ref.scale)
        mine.shift.copy_(ref.shift)
    x = torch.randn(3, 5, 16, generator=_gen(10)) * 3 + 1
    x[0, 0] = 2.5  # a constant vector: variance 0, where eps alone keeps the division finite
    x[0, 1] = 2.5 + torch.randn(16, generator=_gen(11)) * 1e-3  # tiny variance: eps matters here too
    with torch.no_grad():
        got = _tensor(_call_without(mine, x, forbidden=_LAYER_NORMS, what="your LayerNorm"), "your LayerNorm")
        expected = ref(x)
    _shape(got, x.shape, "the normalised tensor")
    if _close(got, expected):
        _check_unbiased_variant(cls, ref, x)
        return _passed("LayerNorm")
    if not torch.isfinite(got).all():
        _fail("your LayerNorm returns inf or nan for a constant vector (variance 0): add eps inside the square "
              "root, sqrt(var + eps)")
    if _close(got[:, 2:], expected[:, 2:]):
        _fail("right for ordinary vectors, wrong for vectors with (almost) zero variance: use "
              "(x - mean) / sqrt(var + eps), with eps inside the square root")
    mean = x.mean(-1, keepdim=True)
    unbiased = ref.scale * (x - mean) / torch.sqrt(x.var(-1, keepdim=True, unbiased=True) + 1e-5) + ref.shift
    if _close(got, unbiased):
        _fail("the variance is not the biased one: divide by n, not n - 1 (x.var(dim=-1, unbiased=False))")
    wrong_dim = ref.scale * (x - x.mean(0, keepdim=True)) / torch.sqrt(x.var(0, keepdim=True, unbiased=False) + 1e-5) + ref.shift
    if _close(got, wrong_dim, atol=1e-4):
        _fail("you normalised over the batch dimension: normalise each vector over its last dimension (dim=-1)")
    plain = (x - mean) / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + 1e-5)
    if _close(got, plain):
        _fail("scale and shift are not applied: return scale * normalised + shift")
    _fail("the output differs from LayerNorm's: (x - mean) / sqrt(var + eps), then scale and shift")


def _check_unbiased_variant(cls, ref, x):
    """``cls(16, unbiased=True)`` must normalise with the n - 1 variance (exercise 1's second variant)."""
    try:
        mine = cls(16, unbiased=True)
    except TypeError as err:
        _fail(f"MyLayerNorm(16, unbiased=True) raised TypeError: {err}; __init__ takes (emb_dim, eps=1e-5, unbiased=False)")
    except NotImplementedError:
        _fail("your LayerNorm class is not written yet: replace `raise NotImplementedError()` with your code")
    with torch.no_grad():
        mine.scale.copy_(ref.scale)
        mine.shift.copy_(ref.shift)
        got = _tensor(_call_without(mine, x, forbidden=_LAYER_NORMS, what="your LayerNorm with unbiased=True"),
                      "your LayerNorm")
    mean = x.mean(-1, keepdim=True)
    expected = ref.scale * (x - mean) / torch.sqrt(x.var(-1, keepdim=True, unbiased=True) + 1e-5) + ref.shift
    _shape(got, x.shape, "the normalised tensor (unbiased=True)")
    if not _close(got, expected):
        hint = " (it returns its input unchanged)" if _close(got, x) else ""
        hint = " (it still uses the biased variance)" if _close(got, ref(x)) else hint
        _fail(f"with unbiased=True the output differs from (x - mean) / sqrt(var + eps) with the n - 1 variance"
              f"{hint}: x.var(dim=-1, unbiased=True)")


def check_count_gpt_params(fn):
    """``fn(cfg, tie_weights=False) -> int``: parameters of ``GPTModel(cfg, tie_weights)``, by formula
    (building a model or a layer fails, on the meta device too)."""
    for cfg in (_SMALL, {**_SMALL, "qkv_bias": True}, {**_SMALL, "n_layers": 0}):
        for tie in (False, True):
            expected = _count(GPTModel(cfg, tie_weights=tie))
            got = _call_without(fn, dict(cfg), tie, forbidden=_BUILDING)
            if got != expected:
                _fail(f"for n_layers={cfg['n_layers']}, qkv_bias={cfg['qkv_bias']}, tie_weights={tie}: you say {got}, "
                      f"the model has {expected}")
    return _passed("GPT parameter count")


# --- 05: greedy generation ----------------------------------------------------------------------------

def _small_model(seed=11):
    torch.manual_seed(seed)
    return GPTModel(_SMALL).eval()


def check_greedy_step(fn):
    """``fn(model, idx, context_size) -> (batch, 1)`` ids: the most likely next token.

    The prompt (12 tokens) is longer than the model's context (10): an answer that forgets to crop
    gets the model's own error, which says to crop. Calling ``generate_text_simple`` or the package's
    ``generate`` fails."""
    model = _small_model()
    idx = torch.randint(0, 97, (3, 12), generator=_gen(12))
    with torch.no_grad():
        got = _tensor(_call_without(fn, model, idx.clone(), 5, forbidden=_PACKAGE_GENERATORS, what="greedy_step"),
                      "greedy_step")
        expected = generate_text_simple(model, idx, 1, 5)[:, -1:]
        if got.shape == (3,):
            _fail("expected shape (3, 1) (one id per sequence, ready for torch.cat), got (3,): use keepdim=True")
        _shape(got, (3, 1), "the next ids")
        if torch.equal(got, model(idx[:, -5:])[:, 0, :].argmax(-1, keepdim=True)) and not torch.equal(got, expected):
            _fail("you used the first position's logits; the prediction for the next token is at the last "
                  "position, logits[:, -1, :]")
        if not torch.equal(got, expected):
            _fail(f"expected next ids {expected.flatten().tolist()}, got {got.flatten().tolist()}")
    return _passed("greedy step")


_PACKAGE_GENERATORS = {"generate_text_simple": [generate_text_simple], "the package's generate": [_package_generate]}
_GENERATORS = {**_PACKAGE_GENERATORS, "greedy_step": ["greedy_step"]}


def check_generate(fn):
    """``fn(model, idx, max_new_tokens, context_size) -> ids``, equal to ``generate_text_simple``.

    Written from scratch: calling ``generate_text_simple``, the package's ``generate`` or the
    notebook's ``greedy_step`` fails."""
    model = _small_model(13)
    idx = torch.randint(0, 97, (2, 3), generator=_gen(13))
    for context_size in (10, 4):
        with torch.no_grad():
            expected = generate_text_simple(model, idx, 9, context_size)
            try:
                got = _tensor(_call_without(fn, model, idx.clone(), 9, context_size, forbidden=_GENERATORS,
                                            what="your generator"), "your generator")
            except ExerciseFailure as err:
                if "longer than context_length" in str(err):
                    _fail("the sequence grew longer than the model's context: crop it to idx[:, -context_size:] "
                          "before each forward pass")
                raise
        _shape(got, expected.shape, f"the generated ids (context_size={context_size})")
        if not torch.equal(got[:, :3], idx):
            _fail("the result must start with the prompt, then the new tokens")
        if not torch.equal(got, expected):
            _fail(f"with context_size={context_size}: expected {expected[0].tolist()}, got {got[0].tolist()}")
    return _passed("greedy generation")


def check_replay_choices(fn):
    """``fn(model, ids, prompt_len) -> list``: the greedy choices recovered from one forward pass.

    On ids that greedy generation produced the answer equals the generated tokens, so the check also
    uses random ids, where only running the model gives the argmax; and it counts the forward passes
    (at the output head, so ``model(ids)`` and ``model.forward(ids)`` both count)."""
    model = _small_model(14)
    prompt = torch.randint(0, 97, (1, 3), generator=_gen(14))
    calls = []
    hook = model.out_head.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        with torch.no_grad():
            generated = generate_text_simple(model, prompt, 6, 10)
            random_ids = torch.randint(0, 97, (1, 9), generator=_gen(15))
            for ids, prompt_len in ((generated, 3), (random_ids, 4)):
                calls.clear()
                got = _as_list(_call(fn, model, ids.clone(), prompt_len))
                expected = model(ids)[0, prompt_len - 1:-1].argmax(-1).tolist()
                if len(calls) == 1:  # only our own pass
                    _fail("your function never runs the model: the choices are the argmax of the model's logits")
                if len(calls) != 2:  # the learner's passes, then ours
                    _fail(f"use a single forward pass over all of ids; your function ran the model {len(calls) - 1} times")
                if got != expected:
                    hint = (" (returning the ids after the prompt only works when they were chosen greedily by "
                            "this model)" if got == ids[0, prompt_len:].tolist() else "")
                    _fail(f"for ids {ids[0].tolist()} and prompt_len={prompt_len}: expected the argmax ids {expected}, "
                          f"got {got}{hint}: position i predicts token i + 1, so take the argmax at positions "
                          f"prompt_len - 1 ... n - 2")
    finally:
        hook.remove()
    return _passed("replayed choices")


# --- 06: pretraining and sampling --------------------------------------------------------------------

_CROSS_ENTROPY_HELPERS = {"F.cross_entropy": [F.cross_entropy, torch._C._nn.cross_entropy_loss],
                          "nll_loss": [F.nll_loss, torch._C._nn.nll_loss],
                          "softmax": [F.softmax, torch.softmax, torch.special.softmax, torch._softmax],
                          "log_softmax": [F.log_softmax, torch.log_softmax, torch.special.log_softmax,
                                          torch._log_softmax]}


def check_cross_entropy(fn):
    """``fn(logits, targets) -> scalar``: mean cross-entropy; logits (b, t, v), targets (b, t).

    Computed with logsumexp: calling ``F.cross_entropy``, ``nll_loss``, ``softmax`` or ``log_softmax``
    fails."""
    g = _gen(15)
    logits = torch.randn(2, 5, 13, generator=g) * 2
    targets = torch.randint(0, 13, (2, 5), generator=g)
    got = _tensor(_call_without(fn, logits, targets, forbidden=_CROSS_ENTROPY_HELPERS, what="your loss"), "your loss")
    expected = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    if got.numel() != 1:
        _fail(f"the loss must be one number (the mean over all positions), got shape {tuple(got.shape)}")
    if _close(got.reshape(()), expected):
        return _passed("cross-entropy")
    if _close(got.reshape(()), -expected):
        _fail("the sign is wrong: the loss is minus the log-probability of the targets")
    if _close(got.reshape(()), expected * 10):
        _fail("you summed over the positions; take the mean")
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    if _close(got.reshape(()), -picked.mean()):
        _fail("apply log_softmax to the logits first: the loss uses log-probabilities, not raw logits")
    _fail(f"expected {expected.item():.4f}, got {got.item():.4f}")


def check_top_k_filter(fn):
    """``fn(logits, k) -> logits`` with all but the k largest per row set to -inf."""
    g = _gen(16)
    logits = torch.randn(3, 20, generator=g)
    for k in (1, 4, 20):
        got = _tensor(_call_without(fn, logits.clone(), k, forbidden={"the package's top_k_filter": [top_k_filter]},
                                    what="your top-k filter"), "your top-k filter")
        _shape(got, logits.shape, "the filtered logits")
        kept = torch.isfinite(got)
        if not torch.equal(kept.sum(-1), torch.full((3,), k)):
            _fail(f"with k={k} each row must keep exactly {k} finite logits; yours keep {kept.sum(-1).tolist()}")
        top = torch.topk(logits, k).indices
        if not all(set(top[r].tolist()) == set(kept[r].nonzero().flatten().tolist()) for r in range(3)):
            _fail(f"with k={k} the kept logits must be the {k} largest of each row")
        if not torch.equal(got[kept], logits[kept]):
            _fail("keep the k largest logits unchanged; only the others become -inf")
    return _passed("top-k filter")


def check_temperature_sampling(fn):
    """``fn(logits, temperature, generator) -> (batch, 1)`` ids drawn from softmax(logits / temperature).

    Any correct way of drawing passes (``torch.multinomial``, the Gumbel-max trick, inverse CDF): the
    check compares frequencies, not exact draws. It also checks that the draws come from
    ``generator``: the same generator state gives the same draws, another seed other draws, and the
    global random state is left alone."""
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0], [-1.0, 0.0, 1.0, 2.0]])  # two rows, two distributions
    n = 4000
    for t in (0.5, 2.0):
        batch = logits.repeat_interleave(n, dim=0)  # (2n, 4): n copies of each row
        global_state = torch.get_rng_state()
        got = _tensor(_call(fn, batch.clone(), t, _gen(17)), "your sampler")
        if not torch.equal(torch.get_rng_state(), global_state):
            _fail("your sampler used the global random generator; draw with the `generator` you are given "
                  "(e.g. torch.multinomial(..., generator=generator) or torch.rand(..., generator=generator))")
        _shape(got, (2 * n, 1), f"the sampled ids for {2 * n} rows")
        again = _tensor(_call(fn, batch.clone(), t, _gen(17)), "your sampler")
        if not torch.equal(again, got):
            _fail("the same generator state gave different draws: take every random number from `generator`")
        if torch.equal(_call(fn, batch.clone(), t, _gen(18)), got):
            _fail("two different seeds gave the same draws: the draws must depend on `generator`")
        for row in range(2):
            draws = got[row * n:(row + 1) * n, 0].long()
            freq = torch.bincount(draws, minlength=4)[:4].float() / n
            expected = torch.softmax(logits[row] / t, dim=-1)
            if not torch.allclose(freq, expected, atol=0.03):
                if torch.allclose(freq, torch.softmax(logits[row], dim=-1), atol=0.03):
                    _fail("the temperature has no effect: divide the logits by it before softmax")
                if torch.allclose(freq, torch.softmax(logits[row] * t, dim=-1), atol=0.03):
                    _fail("you multiplied by the temperature; divide the logits by it")
                _fail(f"at temperature {t}, for logits {logits[row].tolist()}, the frequencies "
                      f"{[round(v, 3) for v in freq.tolist()]} differ from softmax(logits / T) = "
                      f"{[round(v, 3) for v in expected.tolist()]}")
    return _passed("temperature sampling")



# --- 07: the key/value cache --------------------------------------------------------------------------

def check_cache_update(fn):
    """``fn(past_keys, past_values, new_keys, new_values) -> (keys, values)``: one layer's cache update.

    All tensors are ``(batch, num_heads, tokens, head_dim)``; the result holds the past tokens followed
    by the new ones, ``(batch, num_heads, past + new, head_dim)`` each."""
    g = _gen(18)
    for past, new in ((2, 2), (3, 1), (0, 3)):  # equal sizes first: a concatenation on the wrong dim still runs
        pk, pv = torch.randn(2, 3, past, 4, generator=g), torch.randn(2, 3, past, 4, generator=g)
        nk, nv = torch.randn(2, 3, new, 4, generator=g), torch.randn(2, 3, new, 4, generator=g)
        got = _call(fn, pk.clone(), pv.clone(), nk.clone(), nv.clone(), what="cache_update")
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            _fail("return two tensors, (keys, values)")
        keys, values = (_tensor(t, "cache_update") for t in got)
        expected_k, expected_v = torch.cat((pk, nk), dim=2), torch.cat((pv, nv), dim=2)
        case = f"(past={past} tokens, {new} new)"
        if keys.shape != expected_k.shape:
            hint = ("; the tokens are on dim 2 of (batch, num_heads, tokens, head_dim)"
                    if keys.numel() == expected_k.numel() else "")
            _fail(f"the keys have the wrong shape {case}: expected {tuple(expected_k.shape)}, "
                  f"got {tuple(keys.shape)}{hint}")
        if past and _close(keys, torch.cat((nk, pk), dim=2)):
            _fail(f"the new tokens go after the past ones: torch.cat((past, new), dim=2) {case}")
        if _close(keys, expected_v) and _close(values, expected_k):
            _fail(f"keys and values are swapped {case}")
        if not _close(keys, expected_k):
            _fail(f"the keys differ from the past keys followed by the new keys {case}")
        _shape(values, expected_v.shape, f"the values {case}")
        if not _close(values, expected_v):
            _fail(f"the values differ from the past values followed by the new values {case}")
    return _passed("cache update")


def _fresh_random():
    """A random source seeded differently at every call: cases a learner cannot list in advance."""
    import random

    return random.Random()


def check_cached_positions(fn):
    """``fn(past, num_new) -> (num_new,)`` LongTensor: the position ids of ``num_new`` tokens fed after
    ``past`` cached ones, ready for ``pos_emb``.

    The cases are drawn afresh at every call (a table of known answers does not pass), and the ids must
    be ``torch.long``: a narrower integer type (uint8, int16) wraps around past its range."""
    rng = _fresh_random()
    cases = [(0, rng.randint(2, 8)), (rng.randint(1, 20), 1), (rng.randint(300, 1000), 1),
             (rng.randint(256, 1000), rng.randint(2, 24)), (rng.randint(1, 100), rng.randint(2, 12))]
    for past, new in cases:
        got = _tensor(_call(fn, past, new, what="cached_positions"), "cached_positions")
        expected = torch.arange(past, past + new)
        _shape(got, expected.shape, f"the positions for {new} new token(s) after {past} cached")
        if got.dtype.is_floating_point:
            _fail("position ids index the embedding table: use an integer tensor (torch.arange gives one)")
        if got.dtype != torch.long:
            _fail(f"position ids should be torch.long (64-bit), got {got.dtype}: a narrower type wraps around "
                  f"(uint8 after 255, int16 after 32,767); torch.arange with integer arguments gives torch.long")
        if torch.equal(got, expected):
            continue
        if past and torch.equal(got, torch.arange(new)):
            _fail(f"after {past} cached tokens the new ones are at positions {expected.tolist()}, not from 0: "
                  f"start counting at past")
        if torch.equal(got, expected + 1):
            _fail(f"off by one: positions start at 0, so after {past} cached tokens the next one is at "
                  f"position {past}")
        _fail(f"after {past} cached tokens, {new} new: expected {expected.tolist()}, got {got.tolist()}")
    return _passed("cached positions")


def _kv_cache_bytes(cfg, num_tokens, batch_size=1, dtype=torch.float32, num_kv_heads=None):
    head_dim = cfg["emb_dim"] // cfg["n_heads"]
    heads = cfg["n_heads"] if num_kv_heads is None else num_kv_heads
    return 2 * cfg["n_layers"] * batch_size * num_tokens * heads * head_dim * dtype.itemsize


def check_kv_cache_bytes(fn):
    """``fn(cfg, num_tokens, batch_size=1, dtype=torch.float32, num_kv_heads=None) -> int``: the bytes
    of the keys and values a cache holds for ``batch_size`` sequences of ``num_tokens`` tokens, stored in
    ``dtype``, with ``num_kv_heads`` key/value heads per layer (default: ``n_heads``, one per query head).

    Computed, not allocated: building the package's ``KVCache`` (or a model's ``new_kv_cache``) and
    asking it fails. The GPT-2 sizes are checked with the defaults, then configs, batch sizes, dtypes and
    key/value head counts drawn afresh at every call."""
    from ..attention import KVCache
    from ..config import GPT_CONFIG_TINY, GPT_CONFIGS

    forbidden = {"the package's KVCache": [KVCache.__init__, KVCache.nbytes, MultiHeadAttention.new_kv_cache,
                                           GPTModel.new_kv_cache],
                 "the checker's own answer": [_kv_cache_bytes]}
    rng = _fresh_random()
    cases = [(dict(cfg), n, None) for cfg in [*GPT_CONFIGS.values(), GPT_CONFIG_TINY] for n in (1024, 7)]
    # Drawn so that each mistake gives its own ratio to the right answer: batch sizes are primes from 5,
    # layer counts composite, 3, 4 or 6 query heads share each key/value head, 2- or 4-byte numbers.
    dtypes = [torch.bfloat16, torch.float16, torch.float32] * 2
    rng.shuffle(dtypes)  # every precision comes up, in another order each time
    for dtype in dtypes:
        kv_heads, group = rng.choice([1, 2, 3]), rng.choice([3, 4, 6])
        n_heads, head_dim = kv_heads * group, rng.choice([16, 32, 64, 128])
        cfg = {"vocab_size": 1000, "context_length": 4096, "emb_dim": n_heads * head_dim, "n_heads": n_heads,
               "n_layers": rng.choice([6, 10, 12, 24, 30, 36]), "drop_rate": 0.0, "qkv_bias": False}
        batch = rng.choice([5, 7, 11, 13, 17, 19, 23, 29, 31])
        cases.append((cfg, rng.randint(3, 4096), (batch, dtype, kv_heads)))
    for cfg, num_tokens, extra in cases:
        args = (cfg, num_tokens) if extra is None else (cfg, num_tokens, *extra)
        batch, dtype, kv_heads = extra or (1, torch.float32, None)
        expected = _kv_cache_bytes(cfg, num_tokens, batch, dtype, kv_heads)
        got = _call_without(fn, *args, forbidden=forbidden, what="kv_cache_bytes")
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            _fail(f"return a number of bytes, got {got!r}")
        case = (f"(emb_dim={cfg['emb_dim']}, n_heads={cfg['n_heads']}, n_layers={cfg['n_layers']}, "
                f"{num_tokens} tokens" + ("" if extra is None else
                                          f", batch_size={batch}, {dtype}, num_kv_heads={kv_heads}") + ")")
        if got == expected:
            continue
        if got * 2 == expected:
            _fail(f"the cache holds keys and values: twice what you counted {case}")
        if got * cfg["n_layers"] == expected:
            _fail(f"every layer has its own cache: multiply by n_layers {case}")
        if got * dtype.itemsize == expected:
            _fail(f"you counted numbers, not bytes: a {dtype} number takes {dtype.itemsize} bytes {case}")
        if extra is not None:
            if got * batch == expected:
                _fail(f"each of the batch_size sequences has its own keys and values: multiply by batch_size {case}")
            if got * dtype.itemsize == expected * 4:
                _fail(f"the bytes per number depend on dtype: {dtype} takes {dtype.itemsize} "
                      f"(dtype.itemsize), not 4 {case}")
            if got * kv_heads == expected * cfg["n_heads"]:
                _fail(f"only the num_kv_heads key/value heads are cached (the query heads share them), each "
                      f"head_dim = emb_dim // n_heads wide {case}")
        if num_tokens != cfg["context_length"] and got == expected // num_tokens * cfg["context_length"]:
            _fail(f"count the tokens held (num_tokens), not context_length {case}")
        _fail(f"expected {expected:,} bytes {case}, got {got:,}: 2 x n_layers x batch_size x tokens x "
              f"num_kv_heads x head_dim x bytes per number")
    return _passed("KV cache size")


# --- notebook 08: loading OpenAI's GPT-2 ---------------------------------------------------------------

def check_split_qkv(fn):
    """``fn(c_attn_weight, c_attn_bias) -> (W_query, W_key, W_value, b_query, b_key, b_value)``.

    ``c_attn_weight`` is Conv1D's ``(d, 3d)``, ``c_attn_bias`` ``(3d,)``; the weights must come out in
    ``nn.Linear``'s orientation ``(d, d)`` (out, in), the biases ``(d,)``.
    """
    d = 6
    g = _gen(18)
    weight, bias = torch.randn(d, 3 * d, generator=g), torch.randn(3 * d, generator=g)
    got = _call(fn, weight.clone(), bias.clone(), what="your split")
    if not isinstance(got, (tuple, list)) or len(got) != 6:
        _fail("return six tensors: W_query, W_key, W_value, b_query, b_key, b_value")
    for t, name in zip(got, ("W_query", "W_key", "W_value", "b_query", "b_key", "b_value")):
        _tensor(t, f"{name} from your split")
    names = ("query", "key", "value")
    parts_w, parts_b = weight.chunk(3, dim=-1), bias.chunk(3)
    for i, (w, b) in enumerate(zip(got[:3], got[3:])):
        _shape(b, (d,), f"b_{names[i]}")
        _shape(w, (d, d), f"W_{names[i]}")
        if _close(w, parts_w[i]):
            _fail(f"W_{names[i]} is Conv1D's (in, out) block; nn.Linear stores (out, in): transpose it")
        if not _close(w, parts_w[i].T):
            for j in range(3):
                if j != i and (_close(w, parts_w[j].T) or _close(w, parts_w[j])):
                    _fail(f"W_{names[i]} holds the {names[j]} block: c_attn's columns are query, key, value in "
                          f"that order, {d} each")
            if _close(w, weight[:, i::3].T) or _close(w, weight[:, i::3]):
                _fail("query, key and value are three consecutive blocks of columns, not every third column")
            _fail(f"W_{names[i]} should be columns {i * d} to {(i + 1) * d - 1} of c_attn's weight, transposed")
        if not _close(b, parts_b[i]):
            _fail(f"b_{names[i]} should be entries {i * d} to {(i + 1) * d - 1} of c_attn's bias")
    x = torch.randn(2, d, generator=g)
    fused = x @ weight + bias  # what GPT-2's c_attn computes, (2, 3d)
    ours = torch.cat([F.linear(x, w, b) for w, b in zip(got[:3], got[3:])], dim=-1)
    if not _close(ours, fused):
        _fail("three nn.Linear layers with your weights do not compute what c_attn computes")
    return _passed("query/key/value split")


def check_config_from_shapes(fn):
    """``fn(shapes) -> cfg``: a GPTModel config read off ``{key: shape}`` of a Hub-layout GPT-2 file.

    Checked on GPT-2 medium, on a 3-block model 256 wide and on one drawn afresh at every call, with
    heads 64 wide whatever the width (the package's loader only knows GPT-2's four widths, so calling
    it does not pass)."""
    from ..config import GPT_CONFIG_124M, GPT_CONFIG_355M
    from ..weights import hub_layout_shapes

    rng = _fresh_random()
    small = {**GPT_CONFIG_124M, "vocab_size": 300, "context_length": 16, "emb_dim": 256, "n_heads": 4, "n_layers": 3}
    heads = rng.choice([2, 3, 5, 6, 7, 9, 10])
    drawn = {**GPT_CONFIG_124M, "vocab_size": rng.randint(50, 999), "context_length": rng.randint(8, 99),
             "emb_dim": 64 * heads, "n_heads": heads, "n_layers": rng.randint(2, 11)}
    for cfg in (GPT_CONFIG_355M, small, drawn):
        shapes = hub_layout_shapes(cfg)
        for i in range(cfg["n_layers"]):  # the Hub's files also hold each block's mask buffer
            shapes[f"h.{i}.attn.bias"] = (1, 1, cfg["context_length"], cfg["context_length"])
        expected = {**cfg, "drop_rate": 0.0, "qkv_bias": True}
        got = _call(fn, dict(shapes), what="your function")
        if not isinstance(got, dict):
            _fail(f"return a config dict like GPT_CONFIG_124M, got {type(got).__name__}")
        for key, value in expected.items():
            if key not in got:
                _fail(f"your config has no {key!r}; it needs all of GPT_CONFIG_124M's keys")
            if got[key] != value:
                hint = ""
                if key == "n_layers" and got[key] == value - 1:
                    hint = ": blocks are numbered from 0, so the count is the largest number + 1"
                elif key == "n_layers" and got[key] == value * 13:
                    hint = ": count the blocks (distinct numbers in 'h.N.'), not the keys"
                elif key in ("vocab_size", "emb_dim") and got[key] == expected["emb_dim" if key == "vocab_size" else "vocab_size"]:
                    hint = ": wte.weight is (vocab_size, emb_dim)"
                elif key == "n_heads":
                    hint = f": GPT-2's heads are 64 wide, so a width of {cfg['emb_dim']} has {cfg['emb_dim'] // 64} heads"
                elif key == "qkv_bias":
                    hint = ": GPT-2's query/key/value projection has a bias (h.N.attn.c_attn.bias)"
                elif key == "drop_rate":
                    hint = ": a model loaded for inference uses drop_rate 0.0"
                _fail(f"for a GPT-2 of width {cfg['emb_dim']} with {cfg['n_layers']} blocks, {key} should be "
                      f"{value!r}, got {got[key]!r}{hint}")
        extra = [k for k in got if k not in expected]
        if extra:
            _fail(f"your config has keys GPTModel does not know: {extra}")
    return _passed("config from shapes")


def _hub_layout_of(model):
    """The reference answer of ``check_to_hub_layout``: ``model``'s weights under the Hub's names,
    Conv1D-style ``(in, out)``, query/key/value fused into ``c_attn``, no output head (tied)."""
    out = {"wte.weight": model.tok_emb.weight, "wpe.weight": model.pos_emb.weight}
    for i, blk in enumerate(model.trf_blocks):
        p, att = f"h.{i}.", blk.att
        qkv = (att.W_query, att.W_key, att.W_value)
        out.update({
            p + "ln_1.weight": blk.norm1.scale, p + "ln_1.bias": blk.norm1.shift,
            p + "attn.c_attn.weight": torch.cat([lin.weight.T for lin in qkv], dim=1),  # (d, 3d)
            p + "attn.c_attn.bias": torch.cat([lin.bias for lin in qkv]),
            p + "attn.c_proj.weight": att.out_proj.weight.T, p + "attn.c_proj.bias": att.out_proj.bias,
            p + "ln_2.weight": blk.norm2.scale, p + "ln_2.bias": blk.norm2.shift,
            p + "mlp.c_fc.weight": blk.ff.layers[0].weight.T, p + "mlp.c_fc.bias": blk.ff.layers[0].bias,
            p + "mlp.c_proj.weight": blk.ff.layers[2].weight.T, p + "mlp.c_proj.bias": blk.ff.layers[2].bias,
        })
    out.update({"ln_f.weight": model.final_norm.scale, "ln_f.bias": model.final_norm.shift})
    return out


def _diagnose_hub_tensor(key, got, expected, d):
    """A learner's words for why the tensor under ``key`` differs from the reference."""
    if got.shape != expected.shape:
        if got.shape == expected.shape[::-1]:
            _fail(f"{key} has shape {tuple(got.shape)}, the Hub's file has {tuple(expected.shape)}: Conv1D stores "
                  f"(in, out), the transpose of nn.Linear's (out, in) weight")
        _fail(f"{key} should have shape {tuple(expected.shape)}, got {tuple(got.shape)}")
    if got.dim() == 2 and got.shape[0] == got.shape[1] and _close(got, expected.T):
        _fail(f"{key} is not transposed: it is square, so its shape is right either way, and only the "
              f"values (or the logits) show the mistake. Conv1D stores (in, out): take nn.Linear's weight .T")
    if key.endswith("c_attn.weight") or key.endswith("c_attn.bias"):
        parts = expected.split(d, dim=-1)
        names = ("query", "key", "value")
        got_parts = got.split(d, dim=-1)
        for i, part in enumerate(got_parts):
            for j in range(3):
                if j != i and _close(part, parts[j]):
                    _fail(f"{key}: block {i} holds the {names[j]} part; c_attn's columns are query, key, value "
                          f"in that order, {d} each")
    for a, b in (("weight", "bias"), ("bias", "weight")):
        if key.endswith(f"ln_1.{a}") or key.endswith(f"ln_2.{a}") or key.endswith(f"ln_f.{a}"):
            hint = "scale" if a == "weight" else "shift"
            _fail(f"{key} should be the LayerNorm's {hint} (a LayerNorm's weight is our scale, its bias our shift)")
    _fail(f"{key} differs from the model's weights in the Hub's layout (check the table of section 2: name, "
          f"transpose, and for c_attn the order query, key, value)")


def check_to_hub_layout(fn):
    """``fn(model) -> {key: tensor}``: a tied ``GPTModel`` with ``qkv_bias=True`` written in the Hub's
    layout (the inverse of the loader): the keys of ``hub_layout_shapes``, Conv1D weights ``(in, out)``,
    query/key/value fused into ``c_attn``, no ``lm_head.weight``; the ``h.N.attn.bias`` masks may be there.

    Checked tensor by tensor (naming the first wrong one and the usual reason, such as a square
    ``c_proj`` left untransposed) and then by the logits: the result loaded back with the package's
    ``load_hf_gpt2_weights`` must give the model's logits. Sizes and weights are drawn afresh each call."""
    from ..weights import hub_layout_shapes, load_hf_gpt2_weights

    rng = _fresh_random()
    heads = rng.choice([2, 3, 4])
    cfg = {"vocab_size": rng.randint(60, 200), "context_length": rng.randint(10, 24), "emb_dim": 8 * heads,
           "n_heads": heads, "n_layers": rng.randint(2, 3), "drop_rate": 0.0, "qkv_bias": True}
    with torch.random.fork_rng(devices=[]):  # leave the notebook's random stream as it was
        torch.manual_seed(rng.randint(0, 2**31))
        model = GPTModel(cfg, tie_weights=True).eval()
        with torch.no_grad():
            for p in model.parameters():  # biases start at 0 and norms at 1: noise, so that no swap can hide
                p.add_(torch.randn_like(p) * 0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    got = _call_without(fn, model, forbidden={"the checker's own answer": [_hub_layout_of]}, what="to_hub_layout")
    if any(not torch.equal(before[k], v) for k, v in model.state_dict().items()):
        _fail("your function changed the model's weights; read them, transpose copies or views, and leave the model as it was")
    if not isinstance(got, dict):
        _fail(f"return a dict from the Hub's names to tensors, got {type(got).__name__}")
    expected = _hub_layout_of(model)
    if "lm_head.weight" in got:
        _fail("GPT-2's file has no lm_head.weight: the output head is the token embedding (tied), stored once as wte.weight")
    for key in got:
        if key not in expected and not (key.startswith("h.") and key.endswith(".attn.bias")):
            hint = (": the Hub's names have no 'transformer.' prefix" if key.startswith("transformer.")
                    else ": use the Hub's names (wte, wpe, h.N.ln_1, h.N.attn.c_attn, ...), see section 2")
            _fail(f"your dict has {key!r}, which is not in GPT-2's file{hint}")
    for key in hub_layout_shapes(cfg):
        if key not in got:
            _fail(f"your dict has no {key!r}")
        value = _tensor(got[key], key)
        if not torch.equal(value, expected[key]):
            _diagnose_hub_tensor(key, value, expected[key].detach(), cfg["emb_dim"])
    ids = torch.randint(0, cfg["vocab_size"], (2, cfg["context_length"]), generator=_gen(8))
    with torch.no_grad():
        reloaded = load_hf_gpt2_weights(GPTModel(cfg, tie_weights=True).eval(), got)
        if not _close(reloaded(ids), model(ids), atol=1e-5):
            _fail("loaded back into a GPTModel, your dict gives other logits than the model")
    return _passed("export to the Hub's layout")
# --- notebook 09: from GPT-2 to a modern LLM -------------------------------------------------------------

def _reference_helpers(*names):
    """Functions of transformers' Llama code that do an exercise's work, if the notebook imported them
    (only looked up in ``sys.modules``: the checkers never import transformers themselves)."""
    module = sys.modules.get("transformers.models.llama.modeling_llama")
    found = [getattr(module, name) for name in names if module is not None and hasattr(module, name)]
    # a class (such as LlamaRotaryEmbedding) stands for building it and calling it
    methods = ("__init__", "forward", "compute_default_rope_parameters")
    return [f for obj in found
            for f in ([getattr(obj, m) for m in methods if m in vars(obj)] if isinstance(obj, type) else [obj])]


def _rope_pairs(x, position, base, pairs):
    """RoPE of one vector ``x`` (head_dim,) at ``position`` in float64: ``pairs(i)`` gives the two
    features of pair ``i``, rotated by ``position * base ** (-2i / head_dim)``."""
    d = x.shape[-1]
    out = x.double().clone()
    for i in range(d // 2):
        angle = position * base ** (-2 * i / d)
        j, k = pairs(i, d)
        a, b = x[j].double(), x[k].double()
        out[j] = a * math.cos(angle) - b * math.sin(angle)
        out[k] = a * math.sin(angle) + b * math.cos(angle)
    return out


def check_rope_one_position(fn):
    """``fn(x, position, base) -> (head_dim,)``: ``x`` rotated as RoPE rotates a query or key at
    ``position``, in the split-halves layout (pair ``i`` = features ``i`` and ``i + head_dim/2``),
    written from the formula: the package's RoPE functions may not be called."""
    g = _gen(19)
    halves = lambda i, d: (i, i + d // 2)  # noqa: E731
    neighbours = lambda i, d: (2 * i, 2 * i + 1)  # noqa: E731
    forbidden = {"the package's RoPE (apply_rope, rope_angles)": [apply_rope, apply_rope_interleaved, rope_angles],
                 "transformers' RoPE": _reference_helpers("apply_rotary_pos_emb", "rotate_half",
                                                           "LlamaRotaryEmbedding")}
    for head_dim, position, base in ((8, 3, 10000.0), (64, 100, 100000.0), (6, 0, 10000.0), (16, 1, 500.0)):
        x = torch.randn(head_dim, generator=g)
        got = _tensor(_call_without(fn, x.clone(), position, base, forbidden=forbidden, what="rope_one_position"),
                      "rope_one_position")
        case = f"(head_dim={head_dim}, position={position}, base={base:g})"
        _shape(got, (head_dim,), f"the rotated vector {case}")
        if not got.dtype.is_floating_point:
            _fail(f"return floating-point numbers, got dtype {got.dtype}")
        expected = _rope_pairs(x, position, base, halves)
        if torch.allclose(got.double(), expected, atol=1e-4):
            continue
        if position == 0:
            _fail(f"at position 0 every angle is 0: the vector must come back unchanged {case}")
        if _close(got, x):
            _fail(f"the vector came back unchanged {case}: rotate pair i by position * base ** (-2i / head_dim)")
        if torch.allclose(got.double(), _rope_pairs(x, position, base, neighbours), atol=1e-4):
            _fail("you paired neighbours (features 2i and 2i + 1: the interleaved layout); here pair i is "
                  "features i and i + head_dim / 2, the split-halves layout of apply_rope")
        if torch.allclose(got.double(), _rope_pairs(x, -position, base, halves), atol=1e-4):
            _fail(f"you rotated the wrong way {case}: (a, b) turns into (a cos - b sin, a sin + b cos)")
        if any(torch.allclose(got.double(), _rope_pairs(x, position + k, base, halves), atol=1e-4) for k in (-1, 1)):
            _fail(f"off by one: the token at position {position} turns by {position} x its pair's angle step {case}")
        if base != 10000.0 and torch.allclose(got.double(), _rope_pairs(x, position, 10000.0, halves), atol=1e-4):
            _fail(f"use the base you are given ({base:g}), not 10000")
        if torch.allclose(got.double(), _rope_pairs(x, position, base ** 0.5, halves), atol=1e-4):
            _fail(f"the angle of pair i is position * base ** (-2i / head_dim): the exponent has a 2 {case}")
        if abs(got.double().norm() - x.double().norm()) > 1e-3 * x.norm():
            _fail(f"a rotation keeps the length of the vector; yours changed it from {x.norm():.4f} to "
                  f"{got.norm():.4f} {case}")
        _fail(f"the rotated vector differs from RoPE's {case}: pair i (features i and i + head_dim / 2) turns "
              f"by the angle position * base ** (-2i / head_dim)")
    return _passed("RoPE at one position")


def check_repeat_kv(fn):
    """``fn(x, n_rep) -> (batch, n_kv_heads * n_rep, tokens, head_dim)`` from ``x`` ``(batch, n_kv_heads,
    tokens, head_dim)``: each key/value head repeated ``n_rep`` times in a row, so that query head ``h``
    meets key/value head ``h // n_rep``, as grouped-query attention needs. The package's ``repeat_kv``
    (and transformers') may not be called, nor ``repeat_interleave``, which does it in one call: the
    exercise asks for ``expand`` and ``reshape``."""
    g = _gen(20)
    forbidden = {"the package's repeat_kv": [repeat_kv], "transformers' repeat_kv": _reference_helpers("repeat_kv"),
                 "repeat_interleave (use expand and reshape)": [torch.repeat_interleave]}
    for shape, n_rep in (((2, 3, 5, 4), 3), ((1, 2, 3, 6), 4), ((2, 4, 2, 2), 1)):
        x = torch.randn(*shape, generator=g)
        got = _tensor(_call_without(fn, x.clone(), n_rep, forbidden=forbidden, what="repeat_kv"), "repeat_kv")
        b, n_kv, t, d = shape
        case = f"({n_kv} key/value heads, n_rep={n_rep})"
        expected = x.repeat_interleave(n_rep, dim=1)
        if got.shape != expected.shape:
            hint = ""
            if tuple(got.shape) == (b, n_kv, t * n_rep, d) or tuple(got.shape) == (b, n_kv, t, d * n_rep):
                hint = ": repeat along the head axis, dim 1 of (batch, heads, tokens, head_dim)"
            _fail(f"wrong shape {case}: expected {tuple(expected.shape)}, got {tuple(got.shape)}{hint}")
        if _close(got, expected):
            continue
        if _close(got, x.repeat(1, n_rep, 1, 1)):
            _fail(f"query head h must meet key/value head h // n_rep, so each head is repeated n_rep times in a row "
                  f"(0, 0, 0, 1, 1, 1, ...); yours repeats the whole set (0, 1, 2, 0, 1, 2, ...) {case}")
        _fail(f"head h of the result should be key/value head h // n_rep of the input {case}")
    return _passed("repeat_kv")


def check_gqa_cache_bytes(fn):
    """``fn(cfg, num_tokens, batch_size, bytes_per_number) -> int``: bytes of a key/value cache for
    ``batch_size`` sequences of ``num_tokens`` tokens of a Llama model with config ``cfg``
    (``SMOLLM2_CONFIG_135M``'s keys), each number taking ``bytes_per_number`` bytes (4 in float32, 2 in
    bfloat16): ``n_kv_groups`` heads of ``head_dim = emb_dim / n_heads`` numbers per layer, for keys and
    for values. By formula: building a model or a layer (its ``new_kv_cache``) fails, and so does calling
    the notebook's ``cache_bytes_per_token``."""
    from ..llama import SMOLLM2_CONFIG_135M

    configs = [  # (name, changes to SmolLM2-135M's config); the first ones tell the common mistakes apart
        ("SmolLM2-135M", {}),
        ("SmolLM2-360M", {"emb_dim": 960, "n_heads": 15, "n_kv_groups": 5, "n_layers": 32, "hidden_dim": 2560}),
        ("Llama-3.2-1B", {"emb_dim": 2048, "n_heads": 32, "n_kv_groups": 8, "n_layers": 16, "hidden_dim": 8192,
                          "vocab_size": 128256, "context_length": 131072}),
        ("a multi-query model", {"emb_dim": 64, "n_heads": 4, "n_kv_groups": 1, "n_layers": 3, "hidden_dim": 96}),
        ("a multi-head model", {"emb_dim": 96, "n_heads": 6, "n_kv_groups": 6, "n_layers": 2, "hidden_dim": 256}),
    ]
    from ..attention import KVCache

    forbidden = {**_BUILDING, "KVCache (it allocates a cache; count with a formula instead)": [KVCache.__init__],
                 "the notebook's cache_bytes_per_token (write the formula here)": ["cache_bytes_per_token"]}
    for name, changes in configs:
        cfg = {**SMOLLM2_CONFIG_135M, **changes}
        L, d, nh, nkv = cfg["n_layers"], cfg["emb_dim"], cfg["n_heads"], cfg["n_kv_groups"]
        head_dim = d // nh
        # float32 first (the common mistakes are told apart there), then bfloat16 and a batch
        for num_tokens, batch_size, nbytes in ((1024, 1, 4), (7, 1, 4), (1024, 3, 2), (5, 2, 4)):
            expected = 2 * L * batch_size * num_tokens * nkv * head_dim * nbytes
            got = _call_without(fn, dict(cfg), num_tokens, batch_size, nbytes, forbidden=forbidden,
                                what="gqa_cache_bytes")
            if isinstance(got, torch.Tensor) and got.numel() == 1:
                got = got.item()
            if not isinstance(got, (int, float)) or isinstance(got, bool):
                _fail(f"return a number of bytes, got {got!r}")
            case = (f"({name}: {L} layers, {nh} query heads, {nkv} key/value heads of {head_dim}, {num_tokens} "
                    f"tokens, batch_size {batch_size}, {nbytes} bytes per number)")
            if got == expected:
                continue
            if nkv != nh and got == expected // nkv * nh:
                _fail(f"that is the cache without grouped-query attention: only the n_kv_groups key/value heads "
                      f"are cached, each emb_dim / n_heads = {head_dim} wide, not one per query head {case}")
            if got * 2 == expected:
                _fail(f"the cache holds keys and values: twice what you counted {case}")
            if got * L == expected:
                _fail(f"every layer has its own cache: multiply by n_layers {case}")
            if got * nbytes == expected:
                _fail(f"you counted numbers, not bytes: multiply by bytes_per_number {case}")
            if nbytes != 4 and got * nbytes == expected * 4:
                _fail(f"use bytes_per_number ({nbytes}), not 4 {case}")
            if batch_size != 1 and got * batch_size == expected:
                _fail(f"every sequence of the batch has its own cache: multiply by batch_size {case}")
            if got == expected // num_tokens * cfg["context_length"]:
                _fail(f"count the tokens held (num_tokens), not context_length {case}")
            _fail(f"expected {expected:,} bytes {case}, got {got:,}: "
                  f"2 x n_layers x batch_size x tokens x n_kv_groups x (emb_dim / n_heads) x bytes_per_number")
    return _passed("GQA cache size")

# --- 10: finetuning with LoRA -------------------------------------------------------------------------

def check_lora_forward(fn):
    """``fn(x, weight, bias, A, B, alpha, rank) -> y``: a frozen linear layer plus the LoRA path,
    ``x W^T + b + x A^T B^T * alpha / rank``, ``(..., d_in) -> (..., d_out)``."""
    from ..lora import LoRALinear

    g = _gen(10)
    # alpha / rank = 2.5 is not a whole number, so alpha // rank (2) is caught
    d_in, d_out, rank, alpha = 6, 5, 4, 10
    layer = LoRALinear(torch.nn.Linear(d_in, d_out), rank, alpha)
    with torch.no_grad():
        for p in (layer.linear.weight, layer.linear.bias, layer.A, layer.B):
            p.copy_(torch.randn(p.shape, generator=g))
    x = torch.randn(2, 4, d_in, generator=g)
    w, b, A, B = (t.detach().clone() for t in (layer.linear.weight, layer.linear.bias, layer.A, layer.B))
    forbidden = {"LoRALinear.forward (the package's answer)": [LoRALinear.forward]}
    got = _tensor(_call_without(fn, x.clone(), w, b, A, B, alpha, rank, forbidden=forbidden, what="your lora_forward"),
                  "lora_forward")
    _shape(got, (2, 4, d_out), "the output")
    base, path = F.linear(x, w, b), x @ A.T @ B.T
    if _close(got, base):
        _fail("the output is the frozen layer's alone: add the low-rank path x A^T B^T * alpha / rank")
    if _close(got, path * alpha / rank):
        _fail("the output is the low-rank path alone: add the frozen layer x W^T + b")
    if _close(got, base + path):
        _fail("the low-rank path is not scaled: multiply it by alpha / rank")
    if _close(got, base + path * alpha):
        _fail(f"the low-rank path is scaled by alpha ({alpha:g}); LoRA scales by alpha / rank ({alpha / rank:g})")
    if _close(got, base + path * (alpha // rank)):
        _fail(f"the scale is rounded down: alpha // rank is {alpha // rank}, alpha / rank is {alpha / rank:g}; "
              "divide with /")
    if _close(got, base + path * rank / alpha):
        _fail("the scale is upside down: alpha / rank, not rank / alpha")
    if _close(got, x @ w.T + path * alpha / rank):
        _fail("the frozen layer's bias is missing")
    if not _close(got, layer(x).detach()):
        _fail("differs from x W^T + b + (x A^T B^T) * alpha / rank; A is (rank, d_in), B is (d_out, rank)")
    return _passed("LoRA forward")


def check_answer_targets(fn):
    """``fn(ids, prompt_length) -> targets``: the next-token targets of one example (a list of
    ``len(ids) - 1`` ints), ``-100`` wherever the target is still a prompt token."""
    from ..instruct import IGNORE_INDEX, InstructionCollator

    cases = [([11, 12, 13, 21, 22, 2], 3), ([5, 6, 2], 2), ([7, 8, 9, 10, 30, 31, 32, 33, 2], 5), ([4, 2], 1)]
    for ids, n_prompt in cases:
        expected = InstructionCollator(pad_id=0)([(torch.tensor(ids), n_prompt)])[1][0].tolist()
        got = _as_list(_call_without(fn, list(ids), n_prompt, what="your answer_targets",
                                     forbidden={"InstructionCollator (the package's answer)":
                                                [InstructionCollator.__call__]}))
        if not isinstance(got, list) or len(got) != len(ids) - 1:
            _fail(f"for {len(ids)} ids return {len(ids) - 1} targets (position t predicts token t + 1), got "
                  f"{len(got) if isinstance(got, list) else type(got).__name__}")
        if got == expected:
            continue
        where = f"for ids {ids} with a prompt of {n_prompt} tokens: expected {expected}, got {got}"
        if got == ids[1:]:
            _fail(f"nothing is masked {where}; set the targets that are prompt tokens to {IGNORE_INDEX}")
        if got == [IGNORE_INDEX] * n_prompt + ids[n_prompt + 1:]:
            _fail(f"one target too many is masked {where}: the last prompt position predicts the answer's first "
                  "token, keep it")
        if n_prompt >= 2 and got == [IGNORE_INDEX] * (n_prompt - 2) + ids[n_prompt - 1:]:
            _fail(f"one target too few is masked {where}: the target at position t is ids[t + 1]")
        if got == [IGNORE_INDEX if i < n_prompt else t for i, t in enumerate(ids[:-1])]:
            _fail(f"the targets are not shifted {where}: the target at position t is ids[t + 1]")
        _fail(f"wrong targets {where}")
    return _passed("answer targets")


def _lora_trainable_count(cfg, targets, rank, blocks=None):
    """Trainable parameters of LoRA of ``rank`` on ``targets`` (LlamaModel names) of ``blocks`` (None: all):
    ``rank * (d_in + d_out)`` per wrapped layer."""
    head_dim = cfg["emb_dim"] // cfg["n_heads"]
    d, kv, h = cfg["emb_dim"], cfg["n_kv_groups"] * head_dim, cfg["hidden_dim"]
    shapes = {"W_query": (d, d), "W_key": (d, kv), "W_value": (d, kv), "out_proj": (d, d), "fc1": (d, h),
              "fc2": (d, h), "fc3": (h, d)}
    n_blocks = cfg["n_layers"] if blocks is None else len(set(blocks))
    return n_blocks * sum(rank * sum(shapes[t]) for t in targets)


def check_lora_param_count(fn):
    """``fn(cfg, targets, rank, blocks) -> int``: LoRA's trainable parameters for a LlamaModel config."""
    smol = {"emb_dim": 576, "n_heads": 9, "n_kv_groups": 3, "hidden_dim": 1536, "n_layers": 30}
    other = {"emb_dim": 64, "n_heads": 8, "n_kv_groups": 2, "hidden_dim": 160, "n_layers": 4}
    cases = [(smol, ("W_query", "W_value"), 8, None), (smol, ("W_key", "fc3"), 4, range(20, 30)),
             (other, ("W_query", "W_key", "W_value", "out_proj", "fc1", "fc2", "fc3"), 2, [0, 3]),
             (other, ("W_value",), 16, None)]
    for cfg, targets, rank, blocks in cases:
        expected = _lora_trainable_count(cfg, targets, rank, blocks)
        forbidden = {**_BUILDING, "the checker's own answer": [_lora_trainable_count]}
        got = _call_without(fn, dict(cfg), tuple(targets), rank, blocks, forbidden=forbidden,
                            what="your lora_param_count")
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if got != expected:
            where = (f"for rank {rank} on {list(targets)} of {'all' if blocks is None else len(list(blocks))} "
                     f"blocks of a model of width {cfg['emb_dim']}: expected {expected:,}, got {got!r}")
            n_blocks = cfg["n_layers"] if blocks is None else len(list(blocks))
            if "W_key" in targets or "W_value" in targets:
                as_square = dict(cfg, n_kv_groups=cfg["n_heads"])
                if got == _lora_trainable_count(as_square, targets, rank, blocks):
                    _fail(f"{where}; keys and values have n_kv_groups heads, so their projections are "
                          "narrower than emb_dim (grouped-query attention)")
            if isinstance(got, int) and got * n_blocks == expected:
                _fail(f"{where}; count every adapted block")
            _fail(where + "; each wrapped (d_out, d_in) layer adds A (rank, d_in) and B (d_out, rank)")
    return _passed("LoRA parameter count")


CHECKERS = {name: obj for name, obj in globals().items() if name.startswith("check_")}

__all__ = ["ExerciseFailure", *CHECKERS]
