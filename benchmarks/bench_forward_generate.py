"""Benchmark: ``GPTModel`` against Hugging Face's ``GPT2LMHeadModel``, same config, same weights, CPU.

What it measures (all in eval mode under ``torch.no_grad()``, in one process):

1. **Forward pass** on random token ids (default 256 tokens) at batch 1 and batch 8: seconds per call
   for ``GPTModel`` and for ``GPT2LMHeadModel`` with eager attention (the main peer: it computes
   attention explicitly, as we do) and, if available, with PyTorch's fused ``sdpa`` attention. Hugging
   Face is called with ``use_cache=False`` so it does not build a key/value cache it would throw away.
2. **Greedy generation** of ``--new-tokens`` tokens from a short random prompt (batch 1), as tokens per
   second: ``generate_text_simple`` (re-runs the whole sequence at every step, no KV cache) against
   ``hf.generate(..., do_sample=False)`` with its KV cache, and with ``use_cache=False`` so the reader
   can see how much of the gap is the cache and how much is the model. Without a cache ``generate``
   still computes the output head for the last position only (``logits_to_keep=1``); with
   ``--all-variants`` a row "no cache, all logits" passes ``logits_to_keep=0`` so that Hugging Face does
   exactly the work we do (and sdpa is timed without cache too).

The script checks, and prints, that both models compute the same function: the maximum absolute
difference of the logits (on the warm-up call, before any timing), and that every greedy continuation
is token for token identical to ours (on the first timed round: the generation warm-up makes only 2
tokens; the table is not printed if they differ). The Hugging Face model is built from
``GPT2Config(..., activation_function="gelu_new", dropouts 0, layer_norm_epsilon=1e-5)`` with its
default initialisation plus a little noise (so that biases and norms are not trivially 0 and 1), and its
state dict is copied into ``GPTModel(cfg, tie_weights=True)`` with ``load_hf_gpt2_weights``. Generation
never stops early: ``eos_token_id`` is unset in Hugging Face's generation config, so every call makes
exactly ``--new-tokens`` tokens.

Timing: warm-up calls first, then timed rounds in which every contender runs once, in a rotating order,
so that load from other processes hits all of them alike; the median per case is reported.
``ours/HF`` is always a ratio of *times* (for generation: HF tok/s divided by our tok/s), so > 1 means we
are slower. This is a benchmark, not a test: it asserts that the outputs agree, never anything about
speed. Peak memory is the process's ``ru_maxrss`` at a few points: approximate, and cumulative.

On a machine shared with other jobs, torch's default of one thread per core can be much slower than
``--threads 1`` (threads wait for each other while the OS runs someone else), and the figures vary.

Run from the repository root (needs ``transformers``, which is in the ``dev`` extra)::

    python benchmarks/bench_forward_generate.py                  # GPT-2 124M sizes, a few minutes on 2 cores
    python benchmarks/bench_forward_generate.py --config tiny    # a small model: a smoke run in seconds
    python benchmarks/bench_forward_generate.py --threads 1 --repeats 5 --new-tokens 20
    python benchmarks/bench_forward_generate.py --profile        # also: where the forward pass spends its time
"""

import argparse
import os
import platform
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmark this checkout

from gpt_from_scratch import GPT_CONFIG_124M, GPTModel, generate_text_simple, load_hf_gpt2_weights  # noqa: E402

try:
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel
except ImportError:  # pragma: no cover
    sys.exit("this benchmark needs transformers: pip install -e '.[dev]'")

CONFIGS = {
    "124M": {**GPT_CONFIG_124M, "qkv_bias": True, "drop_rate": 0.0},
    "tiny": {**GPT_CONFIG_124M, "vocab_size": 1000, "context_length": 256, "emb_dim": 64, "n_heads": 4,
             "n_layers": 2, "qkv_bias": True, "drop_rate": 0.0},
}
# 124M: a generation round alone is ~4 x 50 forward passes, so it gets fewer rounds than the forward cases.
DEFAULTS = {"124M": {"repeats": 3, "gen_repeats": 2, "new_tokens": 50},
            "tiny": {"repeats": 5, "gen_repeats": 5, "new_tokens": 20}}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), default="124M",
                   help="model sizes: GPT-2 124M (default) or a tiny model for a smoke run")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed rounds per forward case, median reported (default: 3 for 124M, 5 for tiny)")
    p.add_argument("--gen-repeats", type=int, default=None,
                   help="timed rounds per generation case, median reported (default: 2 for 124M, 5 for tiny)")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed calls per contender first (default 1; for generation they make 2 tokens)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads(N) (default: leave torch's default)")
    p.add_argument("--new-tokens", type=int, default=None,
                   help="tokens to generate (default: 50 for 124M, 20 for tiny)")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per sequence in the forward pass (default 256)")
    p.add_argument("--batch-sizes", default="1,8", help="comma-separated forward batch sizes (default 1,8)")
    p.add_argument("--prompt-len", type=int, default=4, help="tokens in the generation prompt (default 4)")
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--no-sdpa", action="store_true", help="skip Hugging Face's sdpa attention")
    p.add_argument("--all-variants", action="store_true",
                   help="generation: also time HF eager without cache computing all positions' logits "
                        "(logits_to_keep=0, exactly our work) and HF sdpa without cache")
    p.add_argument("--profile", action="store_true",
                   help="also print torch.profiler's top operators for one forward pass of each model")
    args = p.parse_args(argv)
    for key in ("repeats", "gen_repeats", "new_tokens"):
        if getattr(args, key) is None:
            setattr(args, key, DEFAULTS[args.config][key])
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    if min(args.repeats, args.gen_repeats, args.new_tokens, args.prompt_len) < 1 or args.warmup < 0:
        p.error("--repeats, --gen-repeats, --new-tokens and --prompt-len must be >= 1, --warmup >= 0")
    return args


def peak_rss_mb():
    """Peak resident memory of this process so far, in MB (ru_maxrss is KB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


# --- models -----------------------------------------------------------------------------------------

def hf_config(cfg, attn_implementation):
    # GPT-2's <|endoftext|> id (50256) as bos/eos; a vocabulary too small for it gets its last id.
    special = min(50256, cfg["vocab_size"] - 1)
    return GPT2Config(
        vocab_size=cfg["vocab_size"], n_positions=cfg["context_length"], n_embd=cfg["emb_dim"],
        n_layer=cfg["n_layers"], n_head=cfg["n_heads"], activation_function="gelu_new",
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
        bos_token_id=special, eos_token_id=special, attn_implementation=attn_implementation,
    )


def build_models(cfg, seed, want_sdpa):
    """Return (ours, {"eager": hf, "sdpa": hf or missing}, note): three models with the same weights."""
    torch.manual_seed(seed)
    hf_eager = GPT2LMHeadModel(hf_config(cfg, "eager"))
    with torch.no_grad():  # HF initialises biases to 0 and norms to 1: perturb so nothing is trivial
        for p in hf_eager.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    hfs = {"eager": hf_eager}
    note = ""
    if want_sdpa:
        try:
            hf_sdpa = GPT2LMHeadModel(hf_config(cfg, "sdpa"))
            hf_sdpa.load_state_dict(hf_eager.state_dict())
            hfs["sdpa"] = hf_sdpa
        except Exception as exc:  # e.g. an old transformers/torch without sdpa support
            note = f"sdpa attention not available: {type(exc).__name__}: {exc}"
    ours = load_hf_gpt2_weights(GPTModel(cfg, tie_weights=True), hf_eager.state_dict())
    for hf in hfs.values():
        hf.generation_config.eos_token_id = None  # never stop early: every call generates exactly N tokens
        hf.generation_config.pad_token_id = 0
        hf.eval()
    return ours.eval(), hfs, note


# --- timing -----------------------------------------------------------------------------------------

def bench(fns, repeats, warmup, warmup_fns=None):
    """Run every callable ``warmup`` times untimed, then ``repeats`` timed rounds, in rotating order.

    ``warmup_fns`` (same names) can replace the callables for the warm-up, e.g. a shorter generation.
    Returns (first warm-up output per name, first timed output per name, median seconds per name).
    """
    names = list(fns)
    warmup_fns = warmup_fns or fns
    warm_outputs, outputs, times = {}, {}, {name: [] for name in names}
    with torch.no_grad():
        for name in names:
            for i in range(warmup):
                out = warmup_fns[name]()
                if i == 0:
                    warm_outputs[name] = out
                del out
        for r in range(repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                t0 = time.perf_counter()
                out = fns[name]()
                times[name].append(time.perf_counter() - t0)
                if r == 0 and (warmup == 0 or warmup_fns is not fns):
                    outputs[name] = out
                del out
    return warm_outputs, outputs or warm_outputs, {name: statistics.median(ts) for name, ts in times.items()}


def profile_forward(models, idx, top=12):
    from torch.profiler import ProfilerActivity, profile

    for name, fn in models.items():
        with torch.no_grad():
            fn(idx)  # warm
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                fn(idx)
        print(f"\n--- torch.profiler: one forward pass, {name}, input {tuple(idx.shape)} ---")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=40))


# --- main -------------------------------------------------------------------------------------------

def main(argv=None):
    args = parse_args(argv)
    t_start = time.perf_counter()
    transformers.logging.set_verbosity_error()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cfg = CONFIGS[args.config]
    seq_len = min(args.seq_len, cfg["context_length"])

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, python {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} CPUs")
    print(f"torch threads: {torch.get_num_threads()} intra-op, {torch.get_num_interop_threads()} inter-op"
          f"{' (set by --threads)' if args.threads is not None else ' (torch default)'}")
    print(f"config {args.config}: {cfg}")
    rss0 = peak_rss_mb()

    t0 = time.perf_counter()
    ours, hfs, note = build_models(cfg, args.seed, want_sdpa=not args.no_sdpa)
    n_params = sum(p.numel() for p in ours.parameters())
    print(f"built 1 + {len(hfs)} models ({n_params:,} parameters each) in {time.perf_counter() - t0:.1f} s; "
          f"HF attention: {', '.join(hfs)}")
    if note:
        print(note)
    print(f"timing: {args.warmup} warm-up call(s), then the median of {args.repeats} rounds per forward case "
          f"and of {args.gen_repeats} per generation case")
    rss_models = peak_rss_mb()

    rows = []  # (case, peer, ours, hf, unit)
    gen = torch.Generator().manual_seed(args.seed)

    # 1. forward pass ---------------------------------------------------------------------------------
    print("\nchecks (forward: on the warm-up call; generation: on the first timed call, as the warm-up is short):")
    for b in args.batch_sizes:
        idx = torch.randint(0, cfg["vocab_size"], (b, seq_len), generator=gen)
        fns = {"ours": lambda idx=idx: ours(idx)}
        for impl, hf in hfs.items():
            fns[impl] = lambda idx=idx, hf=hf: hf(input_ids=idx, use_cache=False).logits
        _, outputs, med = bench(fns, args.repeats, args.warmup)
        for impl in hfs:
            diff = (outputs["ours"] - outputs[impl]).abs().max().item()
            print(f"  forward b={b} t={seq_len}: max |logits ours - HF {impl}| = {diff:.2e}")
            assert diff < 1e-3, f"the models disagree: max |logit difference| = {diff}"
            rows.append((f"forward b={b} t={seq_len}", impl, med["ours"], med[impl], "s"))
        del outputs
    rss_forward = peak_rss_mb()

    # 2. greedy generation ---------------------------------------------------------------------------
    n = args.new_tokens
    prompt = torch.randint(0, cfg["vocab_size"], (1, args.prompt_len), generator=gen)
    mask = torch.ones_like(prompt)
    context = cfg["context_length"]
    def ours_gen(k):
        return lambda: generate_text_simple(ours, prompt, max_new_tokens=k, context_size=context)

    def hf_gen(hf, k, extra):
        return lambda: hf.generate(prompt, max_new_tokens=k, do_sample=False, attention_mask=mask, pad_token_id=0,
                                   **extra)

    fns, warm = {"ours": ours_gen(n)}, {"ours": ours_gen(2)}
    hf_cases = []
    for impl, hf in hfs.items():
        variants = [("KV cache", {}), ("no cache", {"use_cache": False})]
        if impl == "eager" and args.all_variants:
            variants.append(("no cache, all logits", {"use_cache": False, "logits_to_keep": 0}))
        if impl != "eager" and not args.all_variants:
            variants = variants[:1]
        for label, extra in variants:
            key = f"{impl}, {label}"
            fns[key], warm[key] = hf_gen(hf, n, extra), hf_gen(hf, 2, extra)
            hf_cases.append(key)
    _, outputs, med = bench(fns, args.gen_repeats, args.warmup, warmup_fns=warm)
    expected_shape = (1, args.prompt_len + n)
    assert tuple(outputs["ours"].shape) == expected_shape, outputs["ours"].shape
    for key in hf_cases:
        same = outputs[key].tolist() == outputs["ours"].tolist()
        print(f"  generate {n} tokens: HF {key}: output identical to ours: {same}")
        assert same, f"greedy outputs differ:\n ours {outputs['ours'].tolist()}\n HF   {outputs[key].tolist()}"
        rows.append((f"generate {n} tok, b=1", key, n / med["ours"], n / med[key], "tok/s"))
    rss_generate = peak_rss_mb()

    # table ----------------------------------------------------------------------------------------------
    print(f"\nresults ({args.config}, threads: {torch.get_num_threads()}, median of {args.repeats} (forward) / "
          f"{args.gen_repeats} (generate) rounds; ours/HF is a ratio of times: > 1 means ours is slower)")
    w_case = max(len(r[0]) for r in rows)
    w_peer = max(len(r[1]) for r in rows) + 3
    print(f"{'case':<{w_case}}  {'HF peer':<{w_peer}}  {'ours':>12}  {'HF':>12}  {'ours/HF':>7}")
    print("-" * (w_case + w_peer + 41))
    for case, peer, o, h, unit in rows:
        ratio = o / h if unit == "s" else h / o
        fmt = (lambda v: f"{v:.4f} s") if unit == "s" else (lambda v: f"{v:.1f} tok/s")
        print(f"{case:<{w_case}}  {'HF ' + peer:<{w_peer}}  {fmt(o):>12}  {fmt(h):>12}  {ratio:>7.2f}")

    print("\npeak RSS of the process (approximate: ru_maxrss only grows, so each figure includes what came "
          "before, and all models stay loaded):")
    print(f"  at start {rss0:.0f} MB; after building the models {rss_models:.0f} MB; "
          f"after the forward cases {rss_forward:.0f} MB; after generation {rss_generate:.0f} MB")

    if args.profile:
        idx = torch.randint(0, cfg["vocab_size"], (1, seq_len), generator=gen)
        models = {"ours": ours}
        models.update({f"HF {impl}": (lambda x, hf=hf: hf(input_ids=x, use_cache=False)) for impl, hf in hfs.items()})
        profile_forward(models, idx)

    print(f"\ntotal run time {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
