"""Benchmark: our ``LlamaModel`` against transformers' ``LlamaForCausalLM``, SmolLM2-135M, same fp32 weights, CPU.

Both models read the same GGUF file (SmolLM2-135M-Instruct, Q4_1, dequantized to float32: the weights
are bit for bit the same) in one process, in eval mode under ``torch.no_grad()``:

1. **Forward pass**, batch 1 x ``--tokens`` (default 256) random ids: tokens per second of
   ``model(idx)`` against ``hf(idx, use_cache=False)`` (transformers' default attention, ``sdpa``;
   ``--eager`` adds its eager attention).
2. **Greedy generation with the cache**, batch 1: the chat prompt "What is the capital of France?
   Answer in one sentence." through the chat template, ``--new-tokens`` (default 200) new tokens, no
   stop at the end token: tokens per second of our ``generate`` against ``hf.generate(do_sample=False)``.
3. **Peak memory** of each case: how far the resident memory rose during one call (Linux: the kernel's
   peak counter is reset before every timed call).

for each ``--threads`` count (default 1 and 2). Before timing, it prints the largest logit difference and
checks that both greedy continuations are identical. Timed rounds run every contender once, in rotating
order, so that load from other processes hits them alike; the median is reported. ``ours/HF`` is a
ratio of times (> 1: ours is slower).

Run from the repository root (needs the ``dev`` extra: transformers, accelerate, gguf)::

    python benchmarks/bench_llama.py                                   # the full run: a few minutes on 2 cores
    python benchmarks/bench_llama.py --threads 1 --tokens 32 --new-tokens 10 --repeats 1   # a smoke run
    python benchmarks/bench_llama.py --profile                          # also: where our generation spends its time
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmark this checkout
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_forward_generate import reset_peak_rss, rss_mb  # noqa: E402

from gpt_from_scratch import generate, load_smollm2, load_smollm2_tokenizer, smollm2_path  # noqa: E402

QUESTION = "What is the capital of France? Answer in one sentence."


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", help="a Llama GGUF file (default: SmolLM2-135M-Instruct, fetched once)")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--tokens", type=int, default=256, help="forward pass length (default 256)")
    p.add_argument("--new-tokens", type=int, default=200, help="tokens generated (default 200)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (default 3)")
    p.add_argument("--eager", action="store_true", help="also transformers with eager attention")
    p.add_argument("--profile", action="store_true", help="profile our generation with torch.profiler")
    return p.parse_args(argv)


def bench(fns, repeats):
    """Warm up each fn once, then ``repeats`` rounds in rotating order. -> (outputs, median s, peak MB)."""
    names = list(fns)
    outputs = {name: fns[name]() for name in names}  # warm-up; its output is what is compared
    times = {name: [] for name in names}
    peaks = {name: None for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            can_reset = reset_peak_rss()
            before = rss_mb("VmRSS")
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
            if can_reset:
                peaks[name] = max(peaks[name] or 0.0, rss_mb("VmHWM") - before)
    return outputs, {n: statistics.median(t) for n, t in times.items()}, peaks


def main(argv=None):
    args = parse_args(argv)
    from transformers import AutoModelForCausalLM

    path = smollm2_path() if args.weights is None else args.weights
    path = os.path.abspath(path)
    ours = load_smollm2(path)
    tokenizer = load_smollm2_tokenizer(path)
    hf = {"HF sdpa": AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                          dtype=torch.float32).eval()}
    if args.eager:
        hf["HF eager"] = AutoModelForCausalLM.from_pretrained(
            os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32,
            attn_implementation="eager").eval()

    torch.manual_seed(0)
    idx = torch.randint(0, ours.cfg["vocab_size"], (1, args.tokens))
    prompt = torch.tensor([tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}])])
    mask = torch.ones_like(prompt)
    n = args.new_tokens

    forward = {"ours": lambda: ours(idx)}
    gen = {"ours": lambda: generate(ours, prompt, n, ours.cfg["context_length"])}
    for name, model in hf.items():
        forward[name] = lambda m=model: m(idx, use_cache=False).logits
        # the attention mask: without it transformers takes the prompt's <|im_end|> (id 2 = padding) for padding
        gen[name] = lambda m=model: m.generate(prompt, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                               do_sample=False, eos_token_id=None, pad_token_id=2)

    rows = []
    with torch.no_grad():
        for threads in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(threads)
            out, med, peak = bench(forward, args.repeats)
            for name in hf:
                diff = (out["ours"] - out[name]).abs().max().item()
                print(f"threads {threads}: forward max |logits ours - {name}| = {diff:.2e}")
                rows.append((f"forward 1x{args.tokens}", threads, name, args.tokens / med["ours"],
                             args.tokens / med[name], peak["ours"], peak[name]))
            out, med, peak = bench(gen, args.repeats)
            for name in hf:
                same = torch.equal(out["ours"], out[name])
                print(f"threads {threads}: greedy {n} tokens identical to {name}: {same}")
                if not same:
                    sys.exit("the greedy continuations differ: no timings reported")
                rows.append((f"generate {prompt.shape[1]}+{n}", threads, name, n / med["ours"], n / med[name],
                             peak["ours"], peak[name]))

    print(f"\n{'case':<18} {'thr':>3}  {'peer':<9} {'ours tok/s':>10} {'HF tok/s':>9} {'ours/HF':>8} "
          f"{'peak MB ours':>12} {'HF':>6}")

    def mb(v):
        return "-" if v is None else f"{v:.0f}"

    for case, threads, peer, mine, theirs, pm, ph in rows:
        print(f"{case:<18} {threads:>3}  {peer:<9} {mine:>10.1f} {theirs:>9.1f} {theirs / mine:>8.2f} "
              f"{mb(pm):>12} {mb(ph):>6}")
    print("(ours/HF: ratio of times, > 1 means ours is slower)")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
            generate(ours, prompt, min(n, 50), ours.cfg["context_length"])
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
