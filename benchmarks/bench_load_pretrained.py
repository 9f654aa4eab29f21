"""Benchmark: peak memory of ``load_pretrained_gpt2`` on a GPT-2 124M-shaped file, against peers.

GPT-2's real weights cannot be downloaded here, so the script writes a file with the same layout,
names, shapes and dtype as the Hub's ``openai-community/gpt2/model.safetensors`` (random values,
float32, the ``h.N.attn.bias`` mask buffers included, no ``lm_head.weight``; about 548 MB) and the
Hub's ``config.json`` into a temporary directory, then loads it in a fresh subprocess per contender:

- ``baseline``: imports torch and gpt_from_scratch, loads nothing (the interpreter's own share);
- ``ours``: ``load_pretrained_gpt2(directory)``;
- ``load_file``: ``safetensors.torch.load_file`` (every tensor of the file at once) into a ``GPTModel``
  with ``load_hf_gpt2_weights``: what one would write without care;
- ``transformers``: ``GPT2LMHeadModel.from_pretrained(directory)`` (if transformers is installed).

After loading, each child reads every parameter once (a sum), so that a loader whose tensors stay
lazily mapped to the file (transformers 5 does that) is charged for the pages it needs to run.

Each child reports its peak resident set size (``VmHWM`` in ``/proc/self/status``, Linux only) and the
peaks of its anonymous memory (``RssAnon``: the process's own allocations) and of its file-backed pages
(``RssFile``: pages of the memory-mapped file, which the kernel can drop at any time), sampled every
5 ms by a thread. Peaks minus the baseline's are given as multiples of the file's size: the model's own
tensors are 1.0x less the masks (0.91x), so "ours" should stay near 1x in anonymous memory.

Run from the repository root; it takes a minute and needs about 2 GB free in the temporary folder's
file system and in memory::

    python benchmarks/bench_load_pretrained.py
    python benchmarks/bench_load_pretrained.py --keep DIR   # write the file into DIR and keep it
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r'''
import json, sys, threading, time
peaks = {"RssAnon": 0, "RssFile": 0}

def status():
    out = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) * 1024
    return out

def sample():
    while True:
        s = status()
        for key in peaks:
            peaks[key] = max(peaks[key], s[key])
        time.sleep(0.005)

threading.Thread(target=sample, daemon=True).start()
import torch
import gpt_from_scratch
which, directory = sys.argv[1], sys.argv[2]
start = time.perf_counter()
if which == "ours":
    model = gpt_from_scratch.load_pretrained_gpt2(directory)
elif which == "load_file":
    from safetensors.torch import load_file
    sd = load_file(directory + "/model.safetensors")
    cfg = {**gpt_from_scratch.GPT_CONFIG_124M, "qkv_bias": True, "drop_rate": 0.0}
    model = gpt_from_scratch.load_hf_gpt2_weights(gpt_from_scratch.GPTModel(cfg, tie_weights=True), sd)
elif which == "transformers":
    import transformers
    model = transformers.GPT2LMHeadModel.from_pretrained(directory)
seconds = time.perf_counter() - start
if which != "baseline":  # read every weight once: a loader that maps the file lazily pays for it here
    with torch.no_grad():
        checksum = sum(float(p.sum()) for p in model.parameters())
time.sleep(0.05)
s = status()
print(json.dumps({"VmHWM": s["VmHWM"], "peak_anon": max(peaks["RssAnon"], s["RssAnon"]),
                  "peak_file": max(peaks["RssFile"], s["RssFile"]), "seconds": seconds}))
'''

HUB_CONFIG = {  # the fields of openai-community/gpt2's config.json that matter
    "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "layer_norm_epsilon": 1e-05,
    "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768, "n_head": 12, "n_layer": 12, "n_positions": 1024,
    "vocab_size": 50257, "bos_token_id": 50256, "eos_token_id": 50256,
}


def write_hub_file(directory):
    import torch
    from safetensors.torch import save_file

    from gpt_from_scratch import GPT_CONFIG_124M
    from gpt_from_scratch.weights import hub_layout_shapes

    g = torch.Generator().manual_seed(0)
    context = GPT_CONFIG_124M["context_length"]
    tensors = {key: torch.randn(shape, generator=g) * 0.02 for key, shape in hub_layout_shapes(GPT_CONFIG_124M).items()}
    mask = torch.tril(torch.ones(context, context)).view(1, 1, context, context)
    for i in range(GPT_CONFIG_124M["n_layers"]):
        tensors[f"h.{i}.attn.bias"] = mask.clone()
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(HUB_CONFIG, indent=2))
    return (directory / "model.safetensors").stat().st_size


def measure(which, directory):
    proc = subprocess.run([sys.executable, "-c", CHILD, which, str(directory)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{which} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", metavar="DIR", help="write the file into DIR and keep it")
    args = parser.parse_args()
    if not Path("/proc/self/status").exists():
        sys.exit("this benchmark reads /proc/self/status: Linux only")
    directory = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="gpt2-124M-hub-layout-"))
    directory.mkdir(parents=True, exist_ok=True)
    try:
        size = write_hub_file(directory)
        print(f"file: {size / 2**20:.0f} MiB ({size:,} bytes), GPT-2 124M's layout and shapes")
        contenders = ["baseline", "ours", "load_file"]
        try:
            import transformers  # noqa: F401
            contenders.append("transformers")
        except ImportError:
            pass
        results = {which: measure(which, directory) for which in contenders}
        base = results["baseline"]
        print("| loader | peak RSS | peak RSS - baseline | peak anonymous - baseline | peak file-backed | time |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for which, r in results.items():
            extra = (r["VmHWM"] - base["VmHWM"]) / size
            anon = (r["peak_anon"] - base["peak_anon"]) / size
            print(f"| {which} | {r['VmHWM'] / 2**20:.0f} MiB | {extra:.2f}x file | {anon:.2f}x file | "
                  f"{r['peak_file'] / 2**20:.0f} MiB | {r['seconds']:.1f} s |")
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
