"""Benchmark: one training step (forward, backward, AdamW) of ``GPTModel`` against Hugging Face's GPT-2.

Both models start from the same weights (``build_models`` of bench_forward_generate.py), use the same
AdamW settings and train on the same random batch, so they should follow the same trajectory: the
script checks that their losses agree at every step before printing any timing. It reports tokens per
second (batch x sequence length / median step time) and the ratio of step times, ours / HF (> 1 means
ours is slower). Dropout is 0 so that both compute exactly the same function.

    python benchmarks/bench_train_step.py                    # GPT-2 124M sizes, batch 4 x 256: a few minutes
    python benchmarks/bench_train_step.py --config tiny      # smoke run in seconds
    python benchmarks/bench_train_step.py --threads 1 --steps 5

The settings of a real run apply to both models alike: ``--device`` (auto, cpu, cuda, mps),
``--precision`` (fp32, bf16 or fp16 autocast, as ``gpt-from-scratch train --precision``), ``--compile``
(``torch.compile`` on both), and fused AdamW where PyTorch has it. ``--ddp`` measures several processes
under torchrun, each with its own batch, both models wrapped in DistributedDataParallel (gloo on the
CPU, NCCL on GPUs); tokens/s then counts the tokens of all processes:

    torchrun --standalone --nproc_per_node 2 benchmarks/bench_train_step.py --ddp --threads 1
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
from gpt_from_scratch.devices import (autocast, compile_model, grad_scaler, make_adamw, resolve_device,  # noqa: E402
                                      resolve_precision)
from gpt_from_scratch.distributed import World, init_distributed, shutdown_distributed, wrap_ddp  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="124M")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--steps", type=int, default=4, help="timed steps per model (default 4), after 1 warm-up")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(N)")
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N or mps (default cpu)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--ddp", action="store_true", help="several processes: run under torchrun")
    return p.parse_args(argv)


def step_fns(models, x, y, device, precision):
    """One training step per model: forward under autocast, loss, backward (scaled for fp16), AdamW."""
    fns, fused = {}, None
    for name, model in models.items():
        opt = make_adamw(model, 1e-4, 0.1)
        fused = opt.defaults["fused"]
        scaler = grad_scaler(device, precision)

        def step(model=model, opt=opt, scaler=scaler, name=name):
            opt.zero_grad()
            with autocast(device, precision):
                if name == "ours":
                    loss = calc_loss_batch(x, y, model, device)
                else:
                    logits = model(x, use_cache=False).logits
                    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            return loss.item()  # waits for the device to finish the step

        fns[name] = step
    return fns, fused


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    world = World()
    if args.ddp:
        world, device = init_distributed(device)
        if world.size == 1:
            sys.exit("--ddp measures several processes: start it with torchrun --standalone --nproc_per_node 2 ...")
    precision = resolve_precision(args.precision, device)
    cfg = CONFIGS[args.config]
    ours, hfs, _ = build_models(cfg, args.seed, want_sdpa=False)  # the same weights in every process
    models = {"ours": ours.to(device).train(), "HF": hfs["eager"].to(device).train()}
    compiled = False
    for name in models:
        if args.compile:
            compiled_model = compile_model(models[name])
            compiled = compiled_model is not models[name]
            models[name] = compiled_model
        models[name] = wrap_ddp(models[name], device, world)
    g = torch.Generator().manual_seed(args.seed + world.rank)  # each process its own batch
    x = torch.randint(0, cfg["vocab_size"], (args.batch_size, args.seq_len), generator=g).to(device)
    y = torch.randint(0, cfg["vocab_size"], (args.batch_size, args.seq_len), generator=g).to(device)
    fns, fused = step_fns(models, x, y, device, precision)

    losses = {name: [] for name in fns}
    times = {name: [] for name in fns}
    for step in range(args.steps + 1):  # step 0 is the warm-up (and, with --compile, the compilation)
        for name in (list(fns) if step % 2 == 0 else list(fns)[::-1]):
            t0 = time.perf_counter()
            losses[name].append(fns[name]())
            if step > 0:
                times[name].append(time.perf_counter() - t0)
    if world.is_main:
        report(args, device, precision, compiled, fused, world, losses, times)
    shutdown_distributed()


def report(args, device, precision, compiled, fused, world, losses, times):
    worst = max(abs(a - b) for a, b in zip(losses["ours"], losses["HF"]))
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, config {args.config}, "
          f"batch {args.batch_size} x {args.seq_len} tokens x {world.size} process(es), precision {precision}, "
          f"compile {'on' if compiled else 'off'}, AdamW(lr=1e-4, weight_decay=0.1{', fused' if fused else ''})")
    print(f"losses per step, ours: {[round(v, 4) for v in losses['ours']]}")
    print(f"losses per step, HF:   {[round(v, 4) for v in losses['HF']]}  (max difference {worst:.2e})")
    # Low precision rounds differently in the two models (HF fuses the query/key/value projections).
    if worst > (1e-3 if precision == "fp32" else 5e-2):
        sys.exit("the two models did not follow the same training trajectory: not timing a different computation")
    tokens = args.batch_size * args.seq_len * world.size
    med = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"{'model':<8}{'s/step':>10}{'tokens/s':>12}")
    for name in times:
        print(f"{name:<8}{med[name]:>10.3f}{tokens / med[name]:>12.0f}")
    print(f"ours/HF step time: {med['ours'] / med['HF']:.2f}   (median of {args.steps} steps; peak RSS "
          f"{peak_rss_mb():.0f} MB{' in rank 0' if world.size > 1 else ''})")


if __name__ == "__main__":
    main()
