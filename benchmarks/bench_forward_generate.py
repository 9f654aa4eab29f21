"""Benchmark: ``GPTModel`` against Hugging Face's ``GPT2LMHeadModel``, same config, same weights, CPU.

What it measures (all in eval mode under ``torch.no_grad()``, in one process):

1. **Forward pass** on random token ids (default 256 tokens) at batch 1 and batch 8: seconds per call
   for ``GPTModel`` (explicit attention, and ``ours sdpa``: the same model with ``use_sdpa`` switched
   on) and for ``GPT2LMHeadModel`` with eager attention (the main peer: it computes attention
   explicitly, as we do) and, if available, with PyTorch's fused ``sdpa`` attention. Hugging Face is
   called with ``use_cache=False`` so it does not build a key/value cache it would throw away.
2. **Greedy generation with a KV cache**, batch 1, for each ``--gen-cases`` PROMPT:NEW pair (default
   a 4-token prompt with 200 new tokens, and a 500-token prompt with 100): tokens per second of
   ``generate`` (our cache; explicit attention against HF eager, ``use_sdpa`` against HF sdpa) against
   ``hf.generate(..., do_sample=False)`` with its cache. ``--all-variants`` adds the loops without a
   cache (``generate_text_simple`` against HF eager with ``use_cache=False``).
3. **Peak memory** of each case: how far the process's resident memory rose above its level before
   one call (Linux: the kernel's peak counter is reset before every timed call), and ``ru_maxrss`` at a
   few points.

The script checks, and prints, that both models compute the same function: the maximum absolute
difference of the logits (on the warm-up call, before any timing), and that every greedy continuation
is token for token identical to ours (on the first timed round: the generation warm-up makes only 2
tokens; the table is not printed if they differ). The Hugging Face model is built from
``GPT2Config(..., activation_function="gelu_new", dropouts 0, layer_norm_epsilon=1e-5)`` with its
default initialisation plus a little noise (so that biases and norms are not trivially 0 and 1), and its
state dict is copied into ``GPTModel(cfg, tie_weights=True)`` with ``load_hf_gpt2_weights``. Generation
never stops early: ``eos_token_id`` is unset in Hugging Face's generation config, so every call makes
exactly the requested number of tokens.

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
    python benchmarks/bench_forward_generate.py --threads 1 --repeats 5 --gen-cases 4:20
    python benchmarks/bench_forward_generate.py --profile        # also: where a forward pass and a generation spend their time
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

from gpt_from_scratch import (GPT_CONFIG_124M, GPTModel, generate, generate_text_simple,  # noqa: E402
                              load_hf_gpt2_weights)

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
DEFAULTS = {"124M": {"repeats": 3, "gen_repeats": 2, "gen_cases": "4:200,500:100"},
            "tiny": {"repeats": 5, "gen_repeats": 5, "gen_cases": "4:20,100:20"}}


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
    p.add_argument("--gen-cases", default=None,
                   help="generation cases as PROMPT:NEW token counts, comma-separated "
                        "(default: 4:200,500:100 for 124M, 4:20,100:20 for tiny)")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per sequence in the forward pass (default 256)")
    p.add_argument("--batch-sizes", default="1,8", help="comma-separated forward batch sizes (default 1,8)")
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--no-sdpa", action="store_true", help="skip Hugging Face's sdpa attention")
    p.add_argument("--all-variants", action="store_true",
                   help="generation: also time the loops without a cache (ours: generate_text_simple; HF eager "
                        "with use_cache=False), slow for long cases")
    p.add_argument("--profile", action="store_true",
                   help="also print torch.profiler's top operators for one forward pass of each model")
    args = p.parse_args(argv)
    for key in ("repeats", "gen_repeats", "gen_cases"):
        if getattr(args, key) is None:
            setattr(args, key, DEFAULTS[args.config][key])
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    try:
        args.gen_cases = [tuple(int(n) for n in case.split(":")) for case in args.gen_cases.split(",") if case.strip()]
    except ValueError:
        p.error(f"--gen-cases must look like 4:200,500:100, got {args.gen_cases!r}")
    if any(len(case) != 2 or min(case) < 1 for case in args.gen_cases):
        p.error(f"--gen-cases: each case is PROMPT:NEW with both >= 1, got {args.gen_cases}")
    if min(args.repeats, args.gen_repeats) < 1 or args.warmup < 0:
        p.error("--repeats and --gen-repeats must be >= 1, --warmup >= 0")
    return args


_PEAK_BEFORE_RESETS = [0.0]  # the largest peak seen before reset_peak_rss() cleared the kernel's counter


def peak_rss_mb():
    """Peak resident memory of this process so far, in MB (ru_maxrss is KB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max(_PEAK_BEFORE_RESETS[0], rss / 2**20 if sys.platform == "darwin" else rss / 2**10)


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

def reset_peak_rss():
    """Reset the kernel's peak-RSS counter of this process (Linux: ``echo 5 > /proc/self/clear_refs``).
    Returns False where that is not possible; then the per-case peaks are left blank."""
    _PEAK_BEFORE_RESETS[0] = peak_rss_mb()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_mb(field):
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process in MB, from /proc."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def bench(fns, repeats, warmup, warmup_fns=None):
    """Run every callable ``warmup`` times untimed, then ``repeats`` timed rounds, in rotating order.

    ``warmup_fns`` (same names) can replace the callables for the warm-up, e.g. a shorter generation.
    Returns (first warm-up output per name, first timed output per name, median seconds per name, peak
    memory per name in MB: the most the process's resident memory rose above its level before a timed
    call, or None where the peak cannot be reset).
    """
    names = list(fns)
    warmup_fns = warmup_fns or fns
    warm_outputs, outputs, times = {}, {}, {name: [] for name in names}
    peaks = {name: None for name in names}
    with torch.no_grad():
        for name in names:
            for i in range(warmup):
                out = warmup_fns[name]()
                if i == 0:
                    warm_outputs[name] = out
                del out
        for r in range(repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                can_reset = reset_peak_rss()
                before = rss_mb("VmRSS")
                t0 = time.perf_counter()
                out = fns[name]()
                times[name].append(time.perf_counter() - t0)
                if can_reset:
                    peaks[name] = max(peaks[name] or 0.0, rss_mb("VmHWM") - before)
                if r == 0 and (warmup == 0 or warmup_fns is not fns):
                    outputs[name] = out
                del out
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    return warm_outputs, outputs or warm_outputs, medians, peaks


def set_sdpa(model, flag):
    """Switch every block of ``model`` between the explicit attention (False) and the fused one (True)."""
    for block in model.trf_blocks:
        block.att.use_sdpa = flag
    return model


def profile_forward(models, idx, top=12, what="one forward pass"):
    from torch.profiler import ProfilerActivity, profile

    for name, fn in models.items():
        with torch.no_grad():
            fn(idx)  # warm
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                fn(idx)
        print(f"\n--- torch.profiler: {what}, {name}, input {tuple(idx.shape)} ---")
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

    rows = []  # (case, our contender, HF peer, ours, hf, unit, our peak MB, HF peak MB)
    gen = torch.Generator().manual_seed(args.seed)

    # 1. forward pass ---------------------------------------------------------------------------------
    print("\nchecks (forward: on the warm-up call; generation: on the first timed call, as the warm-up is short):")
    for b in args.batch_sizes:
        idx = torch.randint(0, cfg["vocab_size"], (b, seq_len), generator=gen)
        fns = {"ours": lambda idx=idx: set_sdpa(ours, False)(idx),
               "ours sdpa": lambda idx=idx: set_sdpa(ours, True)(idx)}
        for impl, hf in hfs.items():
            fns[impl] = lambda idx=idx, hf=hf: hf(input_ids=idx, use_cache=False).logits
        _, outputs, med, peak = bench(fns, args.repeats, args.warmup)
        set_sdpa(ours, False)
        for mine in ("ours", "ours sdpa"):
            for impl in hfs:
                diff = (outputs[mine] - outputs[impl]).abs().max().item()
                print(f"  forward b={b} t={seq_len}: max |logits {mine} - HF {impl}| = {diff:.2e}")
                assert diff < 1e-3, f"the models disagree: max |logit difference| = {diff}"
                if mine == "ours" or impl == "sdpa":
                    rows.append((f"forward b={b} t={seq_len}", mine, impl, med[mine], med[impl], "s",
                                 peak[mine], peak[impl]))
        del outputs
    rss_forward = peak_rss_mb()

    # 2. greedy generation, batch 1 -------------------------------------------------------------------
    context = cfg["context_length"]

    def ours_gen(prompt, k, sdpa, use_cache=True):
        if not use_cache:
            return lambda: generate_text_simple(set_sdpa(ours, sdpa), prompt, max_new_tokens=k, context_size=context)
        return lambda: generate(set_sdpa(ours, sdpa), prompt, max_new_tokens=k, context_size=context)

    def hf_gen(hf, prompt, k, extra):
        return lambda: hf.generate(prompt, max_new_tokens=k, do_sample=False, attention_mask=torch.ones_like(prompt),
                                   pad_token_id=0, **extra)

    for prompt_len, n in args.gen_cases:
        prompt_len = min(prompt_len, context - n)
        prompt = torch.randint(0, cfg["vocab_size"], (1, prompt_len), generator=gen)
        case = f"generate {prompt_len}+{n} tok, b=1"
        fns = {"ours": ours_gen(prompt, n, False), "ours sdpa": ours_gen(prompt, n, True)}
        warm = {"ours": ours_gen(prompt, 2, False), "ours sdpa": ours_gen(prompt, 2, True)}
        pairs = [("ours", "eager"), ("ours sdpa", "sdpa")]  # (our contender, HF peer), each with a KV cache
        for impl, hf in hfs.items():
            fns[impl], warm[impl] = hf_gen(hf, prompt, n, {}), hf_gen(hf, prompt, 2, {})
        if args.all_variants:
            fns["ours, no cache"] = ours_gen(prompt, n, False, use_cache=False)
            warm["ours, no cache"] = ours_gen(prompt, 2, False, use_cache=False)
            fns["eager, no cache"] = hf_gen(hfs["eager"], prompt, n, {"use_cache": False})
            warm["eager, no cache"] = hf_gen(hfs["eager"], prompt, 2, {"use_cache": False})
            pairs.append(("ours, no cache", "eager, no cache"))
        pairs = [(mine, peer) for mine, peer in pairs if peer in fns]
        _, outputs, med, peak = bench(fns, args.gen_repeats, args.warmup, warmup_fns=warm)
        set_sdpa(ours, False)
        assert tuple(outputs["ours"].shape) == (1, prompt_len + n), outputs["ours"].shape
        for key, out in outputs.items():
            same = out.tolist() == outputs["ours"].tolist()
            print(f"  {case}: {key}: output identical to ours (cached, explicit attention): {same}")
            assert same, f"greedy outputs differ:\n ours {outputs['ours'].tolist()}\n {key} {out.tolist()}"
        for mine, peer in pairs:
            rows.append((case, mine, peer, n / med[mine], n / med[peer], "tok/s", peak[mine], peak[peer]))
        del outputs
    rss_generate = peak_rss_mb()

    # table ----------------------------------------------------------------------------------------------
    print(f"\nresults ({args.config}, threads: {torch.get_num_threads()}, median of {args.repeats} (forward) / "
          f"{args.gen_repeats} (generate) rounds; ours/HF is a ratio of times: > 1 means ours is slower; "
          f"peak MB: the most resident memory rose during one call)")
    w_case = max(len(r[0]) for r in rows)
    w_mine = max(len(r[1]) for r in rows)
    w_peer = max(len(r[2]) for r in rows) + 3
    print(f"{'case':<{w_case}}  {'ours':<{w_mine}}  {'HF peer':<{w_peer}}  {'ours':>12}  {'HF':>12}  {'ours/HF':>7}"
          f"  {'peak MB ours':>12}  {'HF':>6}")
    print("-" * (w_case + w_mine + w_peer + 70))

    def mb(v):
        return "" if v is None else f"{v:.0f}"

    for case, mine, peer, o, h, unit, po, ph in rows:
        ratio = o / h if unit == "s" else h / o
        fmt = (lambda v: f"{v:.4f} s") if unit == "s" else (lambda v: f"{v:.1f} tok/s")
        print(f"{case:<{w_case}}  {mine:<{w_mine}}  {'HF ' + peer:<{w_peer}}  {fmt(o):>12}  {fmt(h):>12}  "
              f"{ratio:>7.2f}  {mb(po):>12}  {mb(ph):>6}")

    print("\npeak RSS of the process (approximate: ru_maxrss only grows, so each figure includes what came "
          "before, and all models stay loaded):")
    print(f"  at start {rss0:.0f} MB; after building the models {rss_models:.0f} MB; "
          f"after the forward cases {rss_forward:.0f} MB; after generation {rss_generate:.0f} MB")

    if args.profile:
        idx = torch.randint(0, cfg["vocab_size"], (1, seq_len), generator=gen)
        models = {"ours": ours}
        models.update({f"HF {impl}": (lambda x, hf=hf: hf(input_ids=x, use_cache=False)) for impl, hf in hfs.items()})
        profile_forward(models, idx)
        prompt = idx[:, :4]
        gens = {"ours (cache), 50 tokens": lambda x: generate(ours, x, 50, cfg["context_length"])}
        gens.update({f"HF {impl} (cache), 50 tokens": (
            lambda x, hf=hf: hf.generate(x, max_new_tokens=50, do_sample=False, attention_mask=torch.ones_like(x),
                                         pad_token_id=0)) for impl, hf in hfs.items()})
        profile_forward(gens, prompt, what="greedy generation")

    print(f"\ntotal run time {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
