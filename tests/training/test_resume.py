"""Crash safety: every epoch saved, exact resume, SIGKILL survival, clear refusals, the divergence guard."""
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from pixelwise.api import train
from pixelwise.checkpoint import load_checkpoint
from pixelwise.errors import PixelwiseError

# A small, fast run on the bundled sample: 10 training tiles, 2 steps an epoch.
FAST = dict(batch_size=4, crop_size=(64, 64), strategy="full", pretrained=False, infer_scale=1.0,
            precision="fp32", deterministic=True, seed=3)


def weights(run):
    return load_checkpoint(run / "last.pt")["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, first {different[0]}"


class StopAfter:
    """A log callback that interrupts training right after epoch `n` is logged (its last.pt is written)."""

    def __init__(self, n):
        self.n = n

    def __call__(self, line):
        if line.startswith(f"epoch {self.n:3d}"):
            raise KeyboardInterrupt


def test_interrupted_and_resumed_run_ends_bit_identical(nuclei_root, tmp_path):
    train(nuclei_root, tmp_path / "whole", epochs=4, log=lambda _: None, **FAST)
    with pytest.raises(KeyboardInterrupt):
        train(nuclei_root, tmp_path / "cut", epochs=4, log=StopAfter(2), **FAST)
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["state"]["epoch"] == 2
    train(nuclei_root, tmp_path / "cut", epochs=4, resume=True, log=lambda _: None, **FAST)
    assert_same_weights(weights(tmp_path / "whole"), weights(tmp_path / "cut"))


def test_every_epoch_writes_last_pt_validated_or_not(nuclei_root, tmp_path):
    run = tmp_path / "run"
    saved_epochs = []

    def log(line):
        if line.startswith("epoch"):
            saved_epochs.append(load_checkpoint(run / "last.pt")["state"]["epoch"])

    train(nuclei_root, run, epochs=5, val_every=3, log=log, **FAST)
    assert saved_epochs == [1, 2, 3, 4, 5]
    state = load_checkpoint(run / "last.pt")["state"]
    assert [h["epoch"] for h in state["history"]] == [1, 3, 5] and state["step"] == 10


def test_resume_with_another_model_lists_each_difference(nuclei_root, tmp_path):
    train(nuclei_root, tmp_path / "run", epochs=1, log=lambda _: None, **FAST)
    with pytest.raises(PixelwiseError) as err:
        train(nuclei_root, tmp_path / "run", epochs=2, resume=True, model="fcn16s", upsample="bilinear",
              log=lambda _: None, **FAST)
    message = str(err.value)
    assert "cannot resume from" in message
    assert "--model: 'fcn8s' in the checkpoint, 'fcn16s' now" in message
    assert "--upsample: None in the checkpoint, 'bilinear' now" in message


def test_resume_needs_a_run_but_resume_auto_starts_one(nuclei_root, tmp_path):
    with pytest.raises(PixelwiseError, match="nothing to resume"):
        train(nuclei_root, tmp_path / "run", epochs=1, resume=True, log=lambda _: None, **FAST)
    train(nuclei_root, tmp_path / "run", epochs=1, resume="auto", log=lambda _: None, **FAST)
    train(nuclei_root, tmp_path / "run", epochs=2, resume="auto", log=lambda _: None, **FAST)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["state"]["epoch"] == 2


def test_deterministic_refuses_a_time_budget(nuclei_root, tmp_path):
    with pytest.raises(PixelwiseError, match="--deterministic needs --epochs"):
        train(nuclei_root, tmp_path / "run", time_budget=1, log=lambda _: None, **FAST)


class NaNAfter(torch.nn.Module):
    """A 1x1-conv 'model' whose output turns NaN from its `n`-th training call on."""

    def __init__(self, n):
        super().__init__()
        self.conv, self.calls, self.n = torch.nn.Conv2d(3, 2, 1), 0, n

    def forward(self, x):
        self.calls += self.training
        out = self.conv(x)
        return out * float("nan") if self.training and self.calls >= self.n else out


def test_a_nan_loss_stops_with_epoch_and_step_and_keeps_the_last_good_checkpoint(nuclei_root, tmp_path):
    from pixelwise.config import TrainConfig
    from pixelwise.training.engine import fit

    cfg = TrainConfig(data=str(nuclei_root), out=str(tmp_path / "run"), epochs=3, lr=0.01, **FAST)
    with pytest.raises(PixelwiseError) as err:
        fit(cfg, model=NaNAfter(4), log=lambda _: None)  # step 4 = epoch 2, step 2
    message = str(err.value)
    assert "training diverged in epoch 2, step 2" in message and "lower --lr (now 0.01), e.g. --lr 0.001" in message
    assert "the last good epoch (1) is kept in" in message
    assert load_checkpoint(tmp_path / "run" / "last.pt")["state"]["epoch"] == 1


def test_sigkill_at_random_moments_then_resume_auto_ends_bit_identical(nuclei_root, tmp_path):
    """10 SIGKILLs of a real `pixelwise train` subprocess, each restarted with the same command
    (`--resume auto`), end with the weights of a run never interrupted."""
    args = [sys.executable, "-m", "pixelwise", "train", "--data", str(nuclei_root), "--epochs", "60", "--val-every", "1000",
            "--batch-size", "4", "--crop-size", "64", "--strategy", "full", "--no-pretrained", "--infer-scale", "1",
            "--precision", "fp32", "--deterministic", "--seed", "3", "--resume", "auto"]
    whole = tmp_path / "whole"
    subprocess.run(args + ["--out", str(whole)], check=True, capture_output=True)

    cut, rng, kills = tmp_path / "cut", random.Random(0), 0
    while kills < 10:
        proc = subprocess.Popen(args + ["--out", str(cut)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # most kills land past the ~3 s start-up: in an epoch, a validation or a save
        time.sleep(rng.uniform(1.0, 4.5))
        assert proc.poll() is None, "the run finished before 10 kills: make it longer"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        if (cut / "last.pt").exists():
            load_checkpoint(cut / "last.pt")  # never damaged, whenever the kill came
    subprocess.run(args + ["--out", str(cut)], check=True, capture_output=True)
    assert_same_weights(weights(whole), weights(cut))


def test_skip_bad_trains_on_the_rest_and_lists_every_skipped_file(folder_dataset, tmp_path):
    from PIL import Image

    (folder_dataset / "images" / "img04.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # corrupt, mid-dataset
    Image.new("L", (5, 5)).save(folder_dataset / "masks" / "img07.png")  # wrong size
    (folder_dataset / "masks" / "img09.png").unlink()  # no mask
    with pytest.raises(PixelwiseError) as err:  # without --skip-bad: stop, naming every file
        train(folder_dataset, tmp_path / "run", epochs=1, log=lambda _: None, **FAST)
    assert all(f"img0{i}.png" in str(err.value) for i in (4, 7, 9))
    lines = []
    summary = train(folder_dataset, tmp_path / "run", epochs=1, skip_bad=True, log=lines.append, **FAST)
    assert sorted(summary["skipped"]) == sorted(str(folder_dataset / p) for p in
                                                ("images/img04.png", "masks/img07.png", "images/img09.png"))
    assert lines[-4].startswith("--skip-bad left out 3 problem files")
    assert [name for name in ("img04", "img07", "img09") if any(name in line for line in lines[-3:])] == \
        ["img04", "img07", "img09"]
    assert any("training fcn8s/efficientnet_lite0 on" in line and "validating on" in line for line in lines)


def test_ema_run_saves_the_average_and_resumes_bit_identical(nuclei_root, tmp_path):
    train(nuclei_root, tmp_path / "whole", epochs=3, ema=0.5, log=lambda _: None, **FAST)
    with pytest.raises(KeyboardInterrupt):
        train(nuclei_root, tmp_path / "cut", epochs=3, ema=0.5, log=StopAfter(1), **FAST)
    train(nuclei_root, tmp_path / "cut", epochs=3, ema=0.5, resume=True, log=lambda _: None, **FAST)
    whole, cut = (load_checkpoint(tmp_path / run / "last.pt") for run in ("whole", "cut"))
    assert_same_weights(whole["model"], cut["model"])
    assert_same_weights(whole["trained_model"], cut["trained_model"])
    assert int(whole["ema"]["n_averaged"]) == whole["state"]["step"] == 6  # one update a step
    average = {k.removeprefix("module."): v for k, v in whole["ema"].items() if k.startswith("module.")}
    assert_same_weights(whole["model"], average)  # what is saved as the model is the average...
    moved = [k for k, v in whole["model"].items() if v.is_floating_point()
             and not torch.equal(v, whole["trained_model"][k])]
    assert moved  # ...not the weights the optimizer stepped


class InputSizes(torch.nn.Module):
    """A one-convolution model that records the size of every training batch it sees."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 1)
        self.sizes = []

    def forward(self, x):
        if self.training:
            self.sizes.append(tuple(x.shape[-2:]))
        return self.conv(x)


def test_resolution_schedule_trains_the_first_share_at_half_resolution_then_full(nuclei_root, tmp_path):
    from pixelwise.config import TrainConfig
    from pixelwise.training.engine import fit

    cfg = TrainConfig(data=str(nuclei_root), out=str(tmp_path / "run"), epochs=4, resolution_schedule=0.5, **FAST)
    model = InputSizes()
    fit(cfg, model=model, log=lambda _: None)
    steps = len(model.sizes) // 4
    assert model.sizes == [(32, 32)] * (2 * steps) + [(64, 64)] * (2 * steps)  # epochs 1-2 at 0.5x, 3-4 at 1x
