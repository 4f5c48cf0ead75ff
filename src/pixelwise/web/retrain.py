"""Retrain from the app: `python -m pixelwise train` as a child process, on the masks saved so far.

The trainer runs in its own process so the app stays responsive and a crash in training cannot take
unsaved labels with it. Progress comes from the progress file it writes after every epoch; when it ends well, the app predicts with
the run's best.pt. One retrain at a time.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

from pixelwise.checkpoint import load_checkpoint
from pixelwise.web.store import Refused, Store

# Written by the trainer after every epoch, on purpose for watchers (training.engine.write_progress): the app
# follows it, and shows the log only as text. Named here, not imported: the app never loads the trainer.
PROGRESS_FILE = "progress.json"
RETRAIN_DIR = Path(".pixelwise") / "retrain"  # inside the dataset: data view, runs and their logs


def train_command(data: Path, out: Path, minutes: float, checkpoint: Path | None = None,
                  config: dict | None = None) -> list[str]:
    """The `pixelwise train` command line of a retrain: fine-tune `checkpoint` (its own architecture and
    scales) on `data` for `minutes`, or train from ImageNet weights when there is no checkpoint yet."""
    cmd = [sys.executable, "-m", "pixelwise", "train", "--data", str(data), "--out", str(out),
           "--time-budget", f"{minutes:g}", "--overwrite"]
    if checkpoint is None:
        return cmd
    config = config or {}
    # --init-from loads only the weights whose names and shapes match: same model, backbone and upsampling.
    # ImageNet weights would all be replaced, so none are loaded (segnet_basic has none at all).
    cmd += ["--init-from", str(checkpoint), "--no-pretrained"]
    for key in ("model", "backbone", "upsample", "infer_scale"):
        if config.get(key) is not None:
            cmd += [f"--{key.replace('_', '-')}", str(config[key])]
    if config.get("infer_flip"):
        cmd += ["--infer-flip"]
    if config.get("crop_size"):
        cmd += ["--crop-size", "{}x{}".format(*config["crop_size"])]
    # Keep what the checkpoint froze; a from-scratch or advisor run fine-tunes everything.
    strategy = config.get("strategy")
    cmd += ["--strategy", strategy if strategy not in (None, "auto", "scratch") else "full"]
    return cmd


def next_run_dir(base: Path) -> Path:
    """base/run-001, run-002, ...: a retrain never overwrites the run whose best.pt the app may be using."""
    taken = [int(m.group(1)) for p in base.glob("run-*") if (m := re.fullmatch(r"run-(\d+)", p.name))]
    return base / f"run-{max(taken, default=0) + 1:03d}"


class Retrainer:
    """Starts, follows and stops the one retrain of an annotation session."""

    def __init__(self, store: Store, checkpoint: Callable[[], Path | None], on_done: Callable[[Path], None],
                 command: Callable[..., list[str]] = train_command):
        self.store, self.checkpoint, self.on_done, self.command = store, checkpoint, on_done, command
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._status: dict = {"state": "idle"}
        self._progress_stamp: int | None = None

    def status(self) -> dict:
        with self._lock:
            status = dict(self._status)
        if status["state"] == "running":
            status["elapsed_min"] = (time.time() - status["started"]) / 60
        return status

    def start(self, minutes: float) -> dict:
        """Write the labelled-only data view and start training on it. Refused while one runs."""
        if not 0 < minutes <= 24 * 60:
            raise Refused(400, f"retrain minutes must be between 0 and 1440, got {minutes}")
        with self._lock:
            if self._proc is not None:
                raise Refused(409, "a retrain is already running; wait for it or stop it first")
            labelled, _ = self.store.progress()
            if labelled < 2:
                raise Refused(422, f"retraining needs at least 2 saved masks (one to train on, one to validate); "
                                   f"{labelled} saved so far")
            base = self.store.root / RETRAIN_DIR
            self.store.write_training_view(base / "data")
            out = next_run_dir(base)
            ckpt = self.checkpoint()
            config = load_checkpoint(ckpt)["config"] if ckpt is not None else None
            cmd = self.command(base / "data", out, minutes, ckpt, config)
            log_file = open(base / f"{out.name}.log", "w")
            try:  # unbuffered, so epoch lines arrive as printed rather than when the pipe's buffer fills
                self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                              env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=self.store.root)
            except OSError as err:
                log_file.close()
                raise Refused(500, f"cannot start the trainer ({err}): {' '.join(cmd)}") from None
            self._status = {"state": "running", "run": out.name, "out": str(out), "minutes": minutes,
                            "labelled": labelled, "started": time.time(), "epoch": 0, "loss": None,
                            "val_miou": None, "best_miou": None, "lines": [], "log": str(log_file.name)}
            threading.Thread(target=self._follow, args=(self._proc, out, log_file), daemon=True).start()
            return dict(self._status)

    def _follow(self, proc: subprocess.Popen, out: Path, log_file) -> None:
        """Read the trainer's output to its end, then switch the app to the new best.pt if there is one."""
        tail: deque[str] = deque(maxlen=8)
        with log_file:
            for line in proc.stdout:  # text mode: tqdm's \r updates arrive as lines too
                log_file.write(line)
                line = line.strip()
                if not line:
                    continue
                tail.append(line)
                with self._lock:
                    self._status["lines"] = list(tail)
                self._follow_progress(out / PROGRESS_FILE)
        rc = proc.wait()
        self._follow_progress(out / PROGRESS_FILE)
        best = out / "best.pt"
        state, message = "failed", f"the trainer exited with status {rc}: {tail[-1] if tail else 'no output'}"
        with self._lock:
            stopping = self._status["state"] == "stopping"
        if stopping:
            state, message = "stopped", "stopped"
        elif rc == 0 and best.is_file():
            try:
                self.on_done(best)
                state, message = "finished", f"now predicting with {best.relative_to(self.store.root)}"
            except Exception as err:  # a broken checkpoint must not kill the app; say so in the status
                message = f"training finished but {best} cannot be used: {err}"
        with self._lock:
            self._status.update(state=state, message=message, returncode=rc, finished=time.time())
            self._proc = None

    def _follow_progress(self, path: Path) -> None:
        """Take the epoch, loss and scores from the trainer's progress file, when it has a new one."""
        try:
            stamp = path.stat().st_mtime_ns
            if stamp == self._progress_stamp:
                return
            progress = json.loads(path.read_text())
        except (OSError, ValueError):  # not written yet (replaced atomically, so never half-written)
            return
        with self._lock:
            self._progress_stamp = stamp
            self._status.update(epoch=progress["epoch"], loss=progress["loss"])
            if progress["val_miou"] is not None:
                self._status["val_miou"] = progress["val_miou"]
            if progress["best_miou"] is not None:
                self._status["best_miou"] = progress["best_miou"]

    def stop(self) -> None:
        """Stop a running retrain (the trainer keeps its last finished epoch in last.pt)."""
        with self._lock:
            if self._proc is not None:
                self._status["state"] = "stopping"
                self._proc.terminate()

    def wait(self, timeout: float | None = None) -> dict:
        """Block until no retrain runs (tests, shutdown). -> the final status."""
        deadline = None if timeout is None else time.time() + timeout
        while self._proc is not None and (deadline is None or time.time() < deadline):
            time.sleep(0.05)
        return self.status()
