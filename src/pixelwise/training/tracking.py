"""Experiment tracking (`train --log tensorboard|mlflow`): each validated epoch sent where people watch runs,
beside OUT/history.json and curves.png, which every run writes anyway.

    TensorBoard   OUT/tensorboard/: loss, learning rate, images/s, val mean IoU and pixel accuracy,
                  per-class IoU, and at each validation a grid of validation images, the prediction's
                  overlay beside the ground truth's
    MLflow        MLFLOW_TRACKING_URI, or MLflow's own default store in the working folder (where `mlflow ui`
                  looks): the resolved config as params, the same metrics per epoch, and at the end
                  best.pt, curves.png and the best epoch's confusion plot as artifacts

Both are optional extras. Tracking never stops training: a tracker that fails mid-run says why once and is
dropped, and the run goes on (history.json keeps everything).
"""
from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from pixelwise.data.io import overlay
from pixelwise.errors import PixelwiseError, import_optional

TRACKERS = ("tensorboard", "mlflow")
MLFLOW_EXPERIMENT = "pixelwise"
MLFLOW_RUN_FILE = "mlflow_run_id"  # in OUT: a resumed run goes on logging to the same MLflow run
GRID_ROW_HEIGHT = 180  # pixels of each row of the overlay grid


@dataclass
class EpochRecord:
    """What one validated epoch reports. `overlays` draws the grid only if a tracker asks for it."""
    epoch: int
    metrics: dict[str, float]  # flat: train/loss, train/lr, val/mean_iou, val/iou/<class>, ...
    confusion: np.ndarray  # the val confusion matrix, true x predicted
    improved: bool
    overlays: Callable[[], np.ndarray] | None = None


def epoch_metrics(record: dict, scores: dict) -> dict[str, float]:
    """history.json's entry and the val scores -> the flat names trackers plot, grouped by prefix."""
    names = {"train_loss": "train/loss", "lr": "train/lr", "images_per_s": "train/images_per_s",
             "unlabelled_loss": "train/unlabelled_loss", "confident_share": "train/confident_share",
             "val_mean_iou": "val/mean_iou", "val_pixel_accuracy": "val/pixel_accuracy"}
    metrics = {names[k]: float(v) for k, v in record.items() if k in names and v is not None}
    metrics |= {f"val/iou/{metric_name(name)}": float(v) for name, v in scores.get("per_class_iou", {}).items()
                if v is not None and np.isfinite(v)}  # a class absent from val has no IoU: no point at all
    return metrics


def metric_name(class_name: str) -> str:
    """A class name as a metric name MLflow accepts (letters, digits, _ - . / : and spaces)."""
    return re.sub(r"[^\w.\- :/]", "_", class_name)


def overlay_grid(pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]], palette: np.ndarray,
                 ignore_index: int) -> np.ndarray:
    """(image, prediction, ground truth) triples -> one HxWx3 uint8 picture, a row each: the prediction's
    overlay on the left, the ground truth's on the right (its ignored pixels left as the image)."""
    rows = []
    for image, prediction, truth in pairs:
        labelled = truth != ignore_index
        truth_overlay = np.where(labelled[..., None], overlay(image, np.where(labelled, truth, 0), palette), image)
        row = np.concatenate([overlay(image, prediction, palette), truth_overlay], axis=1)
        width = round(row.shape[1] * GRID_ROW_HEIGHT / row.shape[0])
        rows.append(np.asarray(Image.fromarray(row).resize((width, GRID_ROW_HEIGHT), Image.BILINEAR)))
    widest = max(row.shape[1] for row in rows)
    return np.concatenate([np.pad(row, ((0, 0), (0, widest - row.shape[1]), (0, 0))) for row in rows])


class TensorBoardTracker:
    def __init__(self, out: Path, config: dict, resume_epoch: int | None):
        import_optional("tensorboard", "tensorboard", "--log tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        folder = out / "tensorboard"
        if resume_epoch is None:  # a new run in OUT: an older run's curves would mix with its own
            shutil.rmtree(folder, ignore_errors=True)
        # resumed: points after the last saved epoch were logged by the killed run and come again
        self.writer = SummaryWriter(str(folder), purge_step=None if resume_epoch is None else resume_epoch + 1)
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in config.items()), 0)

    def epoch(self, record: EpochRecord) -> None:
        for name, value in record.metrics.items():
            self.writer.add_scalar(name, value, record.epoch)
        if record.overlays is not None:
            self.writer.add_image("val/prediction_vs_truth", record.overlays(), record.epoch, dataformats="HWC")
        self.writer.flush()

    def finish(self, out: Path, class_names, finished: bool) -> None:
        self.writer.close()


class MLflowTracker:
    def __init__(self, out: Path, config: dict, resume: bool):
        import_optional("mlflow", "mlflow", "--log mlflow")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        # Unset, MLflow picks its default store, the one `mlflow ui` opens in the same folder (./mlruns up to
        # MLflow 2, ./mlflow.db since MLflow 3, which refuses a ./mlruns file store unless told to allow it)
        self.client = client = MlflowClient(tracking_uri=os.environ.get("MLFLOW_TRACKING_URI") or None)
        saved = out / MLFLOW_RUN_FILE
        if resume and saved.is_file():
            self.run_id = saved.read_text().strip()
            client.update_run(self.run_id, status="RUNNING")
            return
        experiment = client.get_experiment_by_name(MLFLOW_EXPERIMENT)
        if experiment is not None and experiment.lifecycle_stage == "deleted":  # runs cannot start in the bin
            client.restore_experiment(experiment.experiment_id)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(MLFLOW_EXPERIMENT)
        self.run_id = client.create_run(experiment_id, run_name=out.name).info.run_id
        saved.write_text(self.run_id)
        client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in config.items()])

    def epoch(self, record: EpochRecord) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(name, value, now, record.epoch)
                                                    for name, value in record.metrics.items()])
        if record.improved:
            self.best_confusion = record.confusion

    def finish(self, out: Path, class_names, finished: bool) -> None:
        from pixelwise.training.plots import plot_confusion

        artifacts = [out / "best.pt", out / "curves.png"]
        if getattr(self, "best_confusion", None) is not None:
            plot_confusion(self.best_confusion, class_names, out / "confusion_val.png")
            artifacts.append(out / "confusion_val.png")
        for path in artifacts:
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, status="FINISHED" if finished else "FAILED")


class Trackers:
    """The trackers a run asked for, on rank 0; each is dropped, with a message, the first time it fails."""

    def __init__(self, names, out: Path, config: dict, resume_epoch: int | None, log: Callable[[str], None] = print):
        """`resume_epoch`: the epoch a resumed run continues after, None for a new run."""
        unknown = [name for name in names if name not in TRACKERS]
        if unknown:
            raise PixelwiseError(f"--log {unknown[0]}: choose from {', '.join(TRACKERS)}")
        self.log = log
        self.active = {}
        for name in dict.fromkeys(names):  # --log given twice with one name logs once
            try:
                self.active[name] = (TensorBoardTracker(out, config, resume_epoch) if name == "tensorboard"
                                     else MLflowTracker(out, config, resume_epoch is not None))
            except PixelwiseError:
                raise
            except Exception as err:  # a store that cannot be opened: said before any training, not mid-run
                raise PixelwiseError(f"--log {name} cannot start: {type(err).__name__}: "
                                     f"{str(err).strip().splitlines()[0][:300]}") from None
        where = {"tensorboard": f"tensorboard --logdir {out / 'tensorboard'}",
                 "mlflow": "mlflow ui" + (f" --backend-store-uri {os.environ['MLFLOW_TRACKING_URI']}"
                                          if os.environ.get("MLFLOW_TRACKING_URI") else "")}
        for name in self.active:
            log(f"logging to {name}: watch with `{where[name]}`")

    @property
    def wants_overlays(self) -> bool:
        return "tensorboard" in self.active

    def _each(self, call: Callable) -> None:
        for name, tracker in list(self.active.items()):
            try:
                call(tracker)
            except Exception as err:  # a tracking server gone away must not cost the run
                del self.active[name]
                self.log(f"--log {name} stopped ({type(err).__name__}: {err}); training goes on, history.json "
                         "keeps every epoch")

    def epoch(self, record: EpochRecord) -> None:
        self._each(lambda tracker: tracker.epoch(record))

    def finish(self, out: Path, class_names, finished: bool = True) -> None:
        """Close every tracker; `finished` False marks a run that stopped on an error as failed."""
        self._each(lambda tracker: tracker.finish(out, class_names, finished))
