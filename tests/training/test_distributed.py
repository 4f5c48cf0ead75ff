"""Training on 2 CPU processes through torchrun and DDP (gloo), as `pixelwise train --nproc 2` runs it."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pixelwise.checkpoint import load_checkpoint

# One global batch of 8 = the whole epoch on the 10 training tiles; fcn8s's FCN head has no BatchNorm and
# --strategy head keeps the encoder's BatchNorm in eval mode, so 2 x 4 images must equal 1 x 8.
ONE_STEP = ["--strategy", "head", "--class-weighting", "none", "--precision", "fp32", "--epochs", "1",
            "--batch-size", "8", "--crop-size", "64", "--infer-scale", "1", "--seed", "5"]


def train(nuclei_root, out, *extra, nproc=1, stderr=None):
    """Run `pixelwise train`; with `stderr` (an open file) start it and return the Popen."""
    args = [sys.executable, "-m", "pixelwise", "train", "--data", str(nuclei_root), "--out", str(out), *map(str, extra)]
    if nproc > 1:
        args += ["--nproc", str(nproc)]
    if stderr is not None:
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=stderr)
    return subprocess.run(args, capture_output=True, text=True, check=True)


def test_one_step_on_two_processes_equals_one_process_on_the_same_global_batch(nuclei_root, tmp_path):
    train(nuclei_root, tmp_path / "one", *ONE_STEP)
    result = train(nuclei_root, tmp_path / "two", *ONE_STEP, nproc=2)
    assert "batch 4 x 2 processes" in result.stdout + result.stderr
    one, two = (load_checkpoint(tmp_path / run / "last.pt") for run in ("one", "two"))
    assert one["state"]["step"] == two["state"]["step"] == 1
    for name, weight in one["model"].items():
        torch.testing.assert_close(two["model"][name], weight, rtol=1e-5, atol=1e-6, msg=name)
    # the step did train: FCN's score layers start at zero
    score = [k for k in one["model"] if k.startswith("decoder") and k.endswith("weight")]
    assert score and max(one["model"][k].abs().max().item() for k in score) > 1e-4


def test_two_processes_end_within_one_point_of_one_process(nuclei_root, tmp_path):
    # the demo's recipe; each process's BatchNorm sees 4 images instead of 8 (SyncBatchNorm has no CPU
    # kernel), which is the one difference left between the runs
    recipe = ["--epochs", "60", "--batch-size", "8", "--crop-size", "128", "--strategy", "full", "--seed", "2",
              "--val-every", "60"]
    train(nuclei_root, tmp_path / "one", *recipe)
    train(nuclei_root, tmp_path / "two", *recipe, nproc=2)
    one, two = (load_checkpoint(tmp_path / run / "last.pt")["state"]["history"][-1]["val_mean_iou"]
                for run in ("one", "two"))
    assert one > 0.8 and abs(one - two) <= 0.01, (one, two)


def worker_pid(out: Path, rank: int) -> int | None:
    """The pid of the torchrun worker of `rank` training into `out`, from /proc."""
    for proc in Path("/proc").iterdir():
        try:
            if str(out) not in (proc / "cmdline").read_bytes().decode(errors="replace"):
                continue
            if f"RANK={rank}\0".encode() in (proc / "environ").read_bytes() and \
                    b"LOCAL_RANK=" in (proc / "environ").read_bytes():
                return int(proc.name)
        except (OSError, ValueError):
            continue
    return None


def test_killing_one_rank_stops_the_job_and_resume_auto_continues_it(nuclei_root, tmp_path):
    out = tmp_path / "run"
    recipe = ["--epochs", "40", "--batch-size", "4", "--crop-size", "64", "--strategy", "full", "--val-every", "1000",
              "--resume", "auto"]
    log = open(tmp_path / "stderr.txt", "w")
    job = train(nuclei_root, out, *recipe, nproc=2, stderr=log)
    deadline = time.time() + 120
    while not (out / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    victim = worker_pid(out, 1)
    assert victim is not None and (out / "last.pt").exists()
    os.kill(victim, signal.SIGKILL)
    try:
        job.wait(timeout=90)  # the others are stopped, nobody waits forever
    except subprocess.TimeoutExpired:
        job.kill()
        pytest.fail("the job hung after one rank was killed")
    log.close()
    assert job.returncode == 2 and "--resume auto" in (tmp_path / "stderr.txt").read_text()
    stopped_at = load_checkpoint(out / "last.pt")["state"]["epoch"]
    assert 1 <= stopped_at < 40
    train(nuclei_root, out, *recipe, nproc=2)
    assert load_checkpoint(out / "last.pt")["state"]["epoch"] == 40


def test_progressive_unfreezing_trains_under_ddp(nuclei_root, tmp_path):
    # DDP registers the trainable parameters when it is built, so each unfreezing rebuilds it; this checks
    # that a progressive run completes on 2 processes and its unfrozen stages train (rank 0's weights)
    before = load_checkpoint_after(nuclei_root, tmp_path / "start", epochs=1)
    after = load_checkpoint_after(nuclei_root, tmp_path / "run", epochs=8)
    early = [k for k in before if k.startswith("encoder") and k.endswith("weight") and before[k].dim() == 4][0]
    assert not torch.equal(before[early], after[early])  # the first encoder stage was unfrozen and trained


def load_checkpoint_after(nuclei_root, out, epochs):
    train(nuclei_root, out, "--epochs", epochs, "--strategy", "progressive", "--batch-size", "8", "--crop-size", "64",
          "--infer-scale", "1", "--val-every", "100", "--seed", "4", nproc=2)
    return load_checkpoint(out / "last.pt")["model"]
