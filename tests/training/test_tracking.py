"""`train --log tensorboard|mlflow`: what reaches each tracker equals history.json, and tracking never costs a run."""
import json
import re

import numpy as np
import pytest

from pixelwise.config import TrainConfig
from pixelwise.data.io import default_palette, overlay
from pixelwise.errors import PixelwiseError
from pixelwise.training import engine, tracking

TINY = dict(epochs=2, batch_size=2, crop_size=(32, 32), strategy="full", pretrained=False, precision="fp32",
            infer_scale=1.0)


def file_store(monkeypatch, tmp_path) -> str:
    """A tracking store in tmp_path that mlflow-skinny (the dev extra) can write: MLflow 3's default is a
    SQLite database, which needs the full package's SQLAlchemy, and it accepts a file store only when told."""
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


def test_epoch_metrics_flatten_history_and_per_class_iou_and_drop_absent_classes():
    record = {"epoch": 3, "train_loss": 0.5, "val_mean_iou": 0.25, "val_pixel_accuracy": 0.75, "lr": 1e-3,
              "images_per_s": 10.0, "elapsed_min": 2.0, "data_wait_share": 0.1}
    scores = {"per_class_iou": {"road": 0.5, "sign": float("nan"), "sky": 0.0}}
    assert tracking.epoch_metrics(record, scores) == {
        "train/loss": 0.5, "train/lr": 1e-3, "train/images_per_s": 10.0, "val/mean_iou": 0.25,
        "val/pixel_accuracy": 0.75, "val/iou/road": 0.5, "val/iou/sky": 0.0}


def test_class_names_become_metric_names_mlflow_accepts():
    assert tracking.metric_name("car (parked), red") == "car _parked__ red"
    assert tracking.metric_name("sign/symbol") == "sign/symbol"


def test_overlay_grid_puts_prediction_left_of_truth_and_leaves_ignored_pixels_as_the_image():
    palette = default_palette(2)
    image = np.full((tracking.GRID_ROW_HEIGHT, 4, 3), 100, np.uint8)
    prediction = np.zeros(image.shape[:2], np.uint8)
    truth = np.full(image.shape[:2], 255)
    truth[:, :2] = 1
    grid = tracking.overlay_grid([(image, prediction, truth), (image, prediction, truth)], palette, 255)
    assert grid.shape == (2 * tracking.GRID_ROW_HEIGHT, 8, 3)
    left = overlay(image, prediction, palette)
    assert np.array_equal(grid[:tracking.GRID_ROW_HEIGHT, :4], left)
    right = grid[:tracking.GRID_ROW_HEIGHT, 4:]
    assert np.array_equal(right[:, :2], overlay(image[:, :2], truth[:, :2], palette))
    assert np.array_equal(right[:, 2:], image[:, 2:])  # ignored: the image itself


def test_an_unknown_or_missing_tracker_is_refused_with_how_to_install(tmp_path, monkeypatch):
    with pytest.raises(PixelwiseError, match="--log wandb: choose from tensorboard, mlflow"):
        tracking.Trackers(["wandb"], tmp_path, {}, resume_epoch=None)
    import builtins
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.split(".")[0] == "tensorboard":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    monkeypatch.delitem(__import__("sys").modules, "tensorboard", raising=False)
    with pytest.raises(PixelwiseError, match=r"pip install 'pixelwise\[tensorboard\]'"):
        tracking.Trackers(["tensorboard"], tmp_path, {}, resume_epoch=None)


def test_a_tracker_that_fails_is_dropped_with_a_message_and_training_goes_on(folder_dataset, tmp_path, monkeypatch):
    def broken(self, record):
        raise ConnectionError("tracking server went away")

    monkeypatch.setattr(tracking.MLflowTracker, "epoch", broken)
    file_store(monkeypatch, tmp_path)
    lines = []
    summary = engine.fit(TrainConfig(data=str(folder_dataset), out=str(tmp_path / "run"), log_to=("mlflow",),
                                     **TINY), log=lines.append)
    assert summary["epochs"] == 2
    assert sum("--log mlflow stopped (ConnectionError: tracking server went away)" in line for line in lines) == 1


def test_tensorboard_and_mlflow_receive_what_history_json_records(folder_dataset, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason="the dev extra installs it")  # keeps a bare install's suite honest
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    uri = file_store(monkeypatch, tmp_path)
    out = tmp_path / "run"
    lines = []
    engine.fit(TrainConfig(data=str(folder_dataset), out=str(out), log_to=("tensorboard", "mlflow"), **TINY),
               log=lines.append)
    history = json.loads((out / "history.json").read_text())
    assert any(f"tensorboard --logdir {out / 'tensorboard'}" in line for line in lines)

    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0}).Reload()
    miou = [(e.step, e.value) for e in events.Scalars("val/mean_iou")]
    assert miou == [(h["epoch"], pytest.approx(h["val_mean_iou"])) for h in history]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx([h["train_loss"] for h in history])
    tags = events.Tags()
    assert {"val/iou/background", "train/lr"} <= set(tags["scalars"])
    image = events.Images("val/prediction_vs_truth")[-1]
    validated = int(re.search(r"validating on (\d+)", "\n".join(lines)).group(1))
    assert image.height == min(engine.OVERLAY_IMAGES, validated) * tracking.GRID_ROW_HEIGHT  # a row an image

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run((out / tracking.MLFLOW_RUN_FILE).read_text())
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["model"] == "fcn8s" and run.data.params["strategy"] == "full"
    logged = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val/mean_iou")]
    assert logged == [(h["epoch"], pytest.approx(h["val_mean_iou"])) for h in history]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"best.pt", "curves.png", "confusion_val.png"}
