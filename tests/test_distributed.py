"""Several processes with DDP under torchrun, on this CPU: gloo, 2 processes, a tiny model, a few steps.

The reference is independent of DDP: with dropout 0, 2 processes x batch b see together the windows
one process x batch 2b sees, and DDP's gradient average equals the gradient of the larger batch's mean
loss, so both runs must record the same losses and end with the same weights. Every run is a real
`torchrun` (or `python -m gpt_from_scratch`) subprocess in its own process group, killed whole if it
overruns its timeout, so no process outlives the test.
"""

import os
import signal
import subprocess
import sys

import pytest
import torch

from gpt_from_scratch import read_checkpoint

COMMON = ["--model", "tiny", "--context-length", "16", "--dropout", "0", "--eval-every", "2",
          "--eval-batches", "2", "--lr", "1e-3", "--seed", "7", "--device", "cpu", "--no-progress"]
TIMEOUT = 240


def run(args, processes=1):
    """Run ``gpt-from-scratch train ARGS`` in ``processes`` processes; returns its stdout."""
    if processes == 1:
        cmd = [sys.executable, "-m", "gpt_from_scratch", "train", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "gpt_from_scratch", "train", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # its own process group: torchrun and its workers
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{' '.join(cmd)} ran over {TIMEOUT} s")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # nothing of it may survive, even a stray worker
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, stderr[-3000:]
    return stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp")
    out = {}
    # 2 processes x batch 2, 4 steps; then 1 process x batch 4 for 4 and 6 steps.
    out["ddp"] = run(COMMON + ["--batch-size", "2", "--max-steps", "4", "--out", str(d / "ddp" / "model.pt")], 2)
    out["one"] = run(COMMON + ["--batch-size", "4", "--max-steps", "4", "--out", str(d / "one.pt")])
    out["one6"] = run(COMMON + ["--batch-size", "4", "--max-steps", "6", "--out", str(d / "one6.pt")])
    # The 2-process checkpoint resumed in 1 process, and the 1-process one resumed in 2 processes with
    # batch 1 and 2 accumulation steps (the same 4 sequences per optimizer step; 4 evaluation batches
    # of 1 x 2 processes cover the same 8 windows as 2 batches of 4).
    out["resumed1"] = run(COMMON + ["--batch-size", "4", "--max-steps", "6", "--resume", str(d / "ddp" / "model.pt"),
                                    "--out", str(d / "resumed1.pt")])
    out["resumed2"] = run(COMMON + ["--batch-size", "1", "--grad-accum", "2", "--max-steps", "6", "--eval-batches", "4",
                                    "--resume", str(d / "one.pt"), "--out", str(d / "resumed2.pt")], 2)
    return d, out


def _assert_same_run(a, b, tol=1e-5):
    assert a["step"] == b["step"]
    ha, hb = a["history"], b["history"]
    assert ha["steps"] == hb["steps"] and ha["tokens_seen"] == hb["tokens_seen"]
    for key in ("train_losses", "val_losses"):
        assert len(ha[key]) == len(hb[key]) > 0
        assert max(abs(x - y) for x, y in zip(ha[key], hb[key])) <= tol, (key, ha[key], hb[key])
    for name, weight in a["model"].items():
        assert torch.allclose(weight, b["model"][name], atol=tol, rtol=0), name


def test_two_processes_match_one_process_with_twice_the_batch(runs):
    d, _ = runs
    ddp, one = read_checkpoint(d / "ddp" / "model.pt"), read_checkpoint(d / "one.pt")
    _assert_same_run(ddp, one)
    # The steps did change the weights (else "the same weights" would prove nothing).
    assert ddp["history"]["train_losses"][0] != ddp["history"]["train_losses"][-1]
    assert ddp["history"]["tokens_seen"] == [2 * 4 * 16, 4 * 4 * 16]  # both processes' tokens counted
    assert ddp["extra"]["processes"] == 2


def test_only_rank_0_prints_and_writes_the_checkpoint(runs):
    d, out = runs
    stdout = out["ddp"]
    assert stdout.count("step 2: train loss") == 1 and stdout.count("saved ") == 1
    assert "processes: 2, gradient accumulation: 1: 2 x 2 x 1 = 4 sequences of 16 tokens" in stdout
    assert sorted(p.name for p in (d / "ddp").iterdir()) == ["model.pt"]  # no second file, no .tmp left


def test_resuming_in_one_process_continues_the_two_process_run(runs):
    d, out = runs
    assert "at step 4" in out["resumed1"]
    _assert_same_run(read_checkpoint(d / "resumed1.pt"), read_checkpoint(d / "one6.pt"))


def test_resuming_in_two_processes_with_accumulation_continues_the_one_process_run(runs):
    d, out = runs
    assert "gradient accumulation: 2" in out["resumed2"]
    _assert_same_run(read_checkpoint(d / "resumed2.pt"), read_checkpoint(d / "one6.pt"))


def test_a_validation_split_smaller_than_the_processes_batches_is_evaluated(tmp_path):
    """Issue 17, bug 3: 28 validation tokens give one window of 16; with 2 processes rank 1 stopped
    ("no window to evaluate") and rank 0 died inside all_reduce. The padded sampler gives each process
    a batch, and the run finishes."""
    from gpt_from_scratch import load_sample_text

    corpus = tmp_path / "small.txt"
    corpus.write_text(load_sample_text()[:6000], encoding="utf-8")
    prepared = subprocess.run([sys.executable, "-m", "gpt_from_scratch", "prepare", str(corpus), "--out",
                               str(tmp_path / "data"), "--val-fraction", "0.02", "--no-progress"],
                              capture_output=True, text=True, timeout=TIMEOUT)
    assert prepared.returncode == 0, prepared.stderr
    assert "val.bin 28 tokens" in prepared.stdout
    stdout = run(["--data", str(tmp_path / "data"), "--model", "tiny", "--context-length", "16", "--batch-size", "2",
                  "--max-steps", "3", "--eval-every", "1", "--device", "cpu", "--no-progress",
                  "--out", str(tmp_path / "model.pt")], processes=2)
    assert "validation 2 batches" in stdout
    assert stdout.count("val loss") == 4  # steps 1, 2, 3 and the final line
    assert read_checkpoint(tmp_path / "model.pt")["step"] == 3


def test_with_dropout_the_ranks_draw_other_masks_and_a_resumed_run_continues_exactly(tmp_path):
    """Issue 17, bug 5: every rank seeded with --seed and so drew the same dropout masks. Each rank now
    seeds with seed + rank (as nanoGPT does), every rank's random state goes into the checkpoint, and a
    2-process run with dropout resumed at step 2 ends where an uninterrupted one does."""
    args = [a for a in COMMON if a not in ("--dropout", "0")] + ["--dropout", "0.2", "--batch-size", "2"]
    run(args + ["--max-steps", "4", "--out", str(tmp_path / "full.pt")], 2)
    run(args + ["--max-steps", "2", "--out", str(tmp_path / "half.pt")], 2)
    run(args + ["--max-steps", "4", "--resume", str(tmp_path / "half.pt"), "--out", str(tmp_path / "resumed.pt")], 2)
    full = read_checkpoint(tmp_path / "full.pt")
    states = full["rng_states"]
    assert len(states) == 2 and not torch.equal(states[0]["cpu"], states[1]["cpu"])  # the ranks differ
    _assert_same_run(read_checkpoint(tmp_path / "resumed.pt"), full, tol=0)
