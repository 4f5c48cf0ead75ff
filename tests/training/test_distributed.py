"""Training on 2 CPU processes through torchrun and DDP (gloo), as `pixelwise train --nproc 2` runs it."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pixelwise.checkpoint import load_checkpoint, model_from_checkpoint
from pixelwise.training import strategies
from pixelwise.evaluation import ConfusionMatrix

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
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]  # the trainer's own words
    return result


def adam_gradients(ckpt: dict) -> dict[str, torch.Tensor]:
    """The gradient of the one step a checkpoint took, by parameter name: after AdamW's first step its first
    moment is exactly (1 - beta1) * gradient, so the saved optimizer state is linear in the gradient."""
    model = model_from_checkpoint(ckpt)
    cfg = ckpt["config"]
    strategies.apply_strategy(model, cfg["strategy"], cfg["trainable_stages"])
    groups = strategies.parameter_groups(model, cfg["lr"], cfg["strategy"], cfg["lr_ratio"])
    names = {id(p): n for n, p in model.named_parameters()}
    ordered = [names[id(p)] for group in groups for p in group["params"]]
    beta1 = ckpt["optimizer"]["param_groups"][0]["betas"][0]
    return {ordered[i]: s["exp_avg"] / (1 - beta1) for i, s in ckpt["optimizer"]["state"].items()}


# The same gradient summed in another order (4 + 4 images all-reduced, or another CPU's kernels) differs by
# rounding alone: fp32's unit roundoff is 6e-8, and a sum over the ~3e4 pixel terms behind each weight drifts
# by about sqrt(n) * 6e-8 ~ 1e-5 of the terms' magnitudes, which the layer's largest gradient stands for.
# Ten times that leaves room for the chained sums of the backward pass; a wrong all-reduce (a sum instead
# of a mean, a rank's batch dropped) is off by 50% or more.
GRADIENT_RTOL = 1e-4


def test_one_step_on_two_processes_has_the_gradient_of_one_process_on_the_same_global_batch(nuclei_root, tmp_path):
    train(nuclei_root, tmp_path / "one", *ONE_STEP)
    result = train(nuclei_root, tmp_path / "two", *ONE_STEP, nproc=2)
    assert "batch 4 x 2 processes" in result.stdout + result.stderr
    one, two = (load_checkpoint(tmp_path / run / "last.pt") for run in ("one", "two"))
    assert one["state"]["step"] == two["state"]["step"] == 1
    g_one, g_two = adam_gradients(one), adam_gradients(two)
    # --strategy head: the FCN head and its upsampling train, the encoder does not
    assert sorted(g_one) == sorted(g_two) and not any(k.startswith("encoder") for k in g_one)
    settled = 0
    for name, gradient in g_one.items():
        scale = gradient.abs().max().item()
        # the upsampling kernels' inputs, the zero-initialised scores, are all zero on the first step
        assert (scale > 0) == name.startswith("decoder.score"), name
        torch.testing.assert_close(g_two[name], gradient, rtol=0, atol=GRADIENT_RTOL * scale, msg=name)
        # Adam's first step is lr * g / (|g| + eps), about lr * sign(g): the weights must agree wherever the
        # gradient is exactly zero on both sides (a channel no image activates) or too far from zero for
        # rounding to flip its sign; near zero they may differ by up to 2 * lr
        far = (gradient.abs() > 10 * GRADIENT_RTOL * scale) | ((gradient == 0) & (g_two[name] == 0))
        settled += int(far.sum())
        torch.testing.assert_close(two["model"][name][far], one["model"][name][far], rtol=1e-5, atol=1e-6, msg=name)
    assert settled > 0.9 * sum(g.numel() for g in g_one.values())  # the weight check covered nearly every weight
    # the step did train: FCN's score layers start at zero
    score = [k for k in one["model"] if k.startswith("decoder") and k.endswith("weight")]
    assert score and max(one["model"][k].abs().max().item() for k in score) > 1e-4


def probe(nuclei_root, out: Path, nproc: int) -> list[dict]:
    """tests/training/ddp_probe.py on `nproc` processes: each rank's weights digest, val matrix and history."""
    script = [str(Path(__file__).with_name("ddp_probe.py")), str(nuclei_root), str(out)]
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []
    subprocess.run([sys.executable, *launcher, *script], capture_output=True, text=True, check=True)
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(nproc)]


def test_two_processes_keep_equal_weights_and_score_every_val_image_once(nuclei_root, tmp_path):
    # Whether 2 processes train as well as 1 is a stochastic outcome: benchmarks/resilience.py measures it.
    # What is deterministic: DDP keeps the ranks' weights and BatchNorm statistics equal, and the val
    # matrix, summed over ranks, counts every labelled val pixel exactly once.
    one, = probe(nuclei_root, tmp_path / "one", nproc=1)
    ranks = probe(nuclei_root, tmp_path / "two", nproc=2)
    assert [r["world"] for r in ranks] == [2, 2] and one["world"] == 1
    assert ranks[0]["parameters"] == ranks[1]["parameters"]
    assert ranks[0]["buffers"] == ranks[1]["buffers"]  # rank 1 evaluates with the statistics rank 0 saves
    assert ranks[0]["matrix"] == ranks[1]["matrix"]
    labelled = one["labelled_val_pixels"]
    assert labelled > 0 and sum(map(sum, one["matrix"])) == sum(map(sum, ranks[0]["matrix"])) == labelled
    # the history's score is this matrix's: validation in the loop scored all of val, not rank 0's share
    matrix = ConfusionMatrix(len(ranks[0]["matrix"]), 255)
    matrix.matrix = torch.tensor(ranks[0]["matrix"])
    assert ranks[0]["history"][-1]["val_mean_iou"] == matrix.compute()["mean_iou"]
    assert [h["epoch"] for h in ranks[0]["history"]] == [h["epoch"] for h in one["history"]] == [1, 2]  # first and last


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
