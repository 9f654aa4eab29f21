"""Benchmark: one training step (forward, backward, AdamW) of ``GPTModel`` against Hugging Face's GPT-2.

Both models start from the same weights (``build_models`` of bench_forward_generate.py), use the same
AdamW settings and train on the same random batch, so they should follow the same trajectory: the
script checks that their losses agree at every step before printing any timing. It reports tokens per
second (batch x sequence length / median step time) and the ratio of step times, ours / HF (> 1 means
ours is slower). Dropout is 0 so that both compute exactly the same function.

    python benchmarks/bench_train_step.py                    # GPT-2 124M sizes, batch 4 x 256: a few minutes
    python benchmarks/bench_train_step.py --config tiny      # smoke run in seconds
    python benchmarks/bench_train_step.py --threads 1 --steps 5
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_forward_generate import CONFIGS, build_models, peak_rss_mb  # noqa: E402

from gpt_from_scratch import calc_loss_batch  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="124M")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--steps", type=int, default=4, help="timed steps per model (default 4), after 1 warm-up")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(N)")
    p.add_argument("--seed", type=int, default=123)
    return p.parse_args(argv)


def step_fns(ours, hf, x, y):
    opts = {name: torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=0.1) for name, m in
            (("ours", ours), ("HF", hf))}

    def ours_step():
        opts["ours"].zero_grad()
        loss = calc_loss_batch(x, y, ours)
        loss.backward()
        opts["ours"].step()
        return loss.item()

    def hf_step():
        opts["HF"].zero_grad()
        logits = hf(x, use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
        loss.backward()
        opts["HF"].step()
        return loss.item()

    return {"ours": ours_step, "HF": hf_step}


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = CONFIGS[args.config]
    ours, hfs, _ = build_models(cfg, args.seed, want_sdpa=False)
    hf = hfs["eager"]
    ours.train()
    hf.train()
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randint(0, cfg["vocab_size"], (args.batch_size, args.seq_len), generator=g)
    y = torch.randint(0, cfg["vocab_size"], (args.batch_size, args.seq_len), generator=g)
    fns = step_fns(ours, hf, x, y)

    losses = {name: [] for name in fns}
    times = {name: [] for name in fns}
    for step in range(args.steps + 1):  # step 0 is the warm-up
        for name in (list(fns) if step % 2 == 0 else list(fns)[::-1]):
            t0 = time.perf_counter()
            losses[name].append(fns[name]())
            if step > 0:
                times[name].append(time.perf_counter() - t0)
    worst = max(abs(a - b) for a, b in zip(losses["ours"], losses["HF"]))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, config {args.config}, "
          f"batch {args.batch_size} x {args.seq_len} tokens, AdamW(lr=1e-4, weight_decay=0.1)")
    print(f"losses per step, ours: {[round(v, 4) for v in losses['ours']]}")
    print(f"losses per step, HF:   {[round(v, 4) for v in losses['HF']]}  (max difference {worst:.2e})")
    if worst > 1e-3:
        sys.exit("the two models did not follow the same training trajectory: not timing a different computation")
    tokens = args.batch_size * args.seq_len
    med = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"{'model':<8}{'s/step':>10}{'tokens/s':>12}")
    for name in fns:
        print(f"{name:<8}{med[name]:>10.3f}{tokens / med[name]:>12.0f}")
    print(f"ours/HF step time: {med['ours'] / med['HF']:.2f}   (median of {args.steps} steps; peak RSS "
          f"{peak_rss_mb():.0f} MB)")


if __name__ == "__main__":
    main()
