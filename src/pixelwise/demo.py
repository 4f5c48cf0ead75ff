"""`pixelwise demo`: the whole flow, train -> evaluate -> predict, on the bundled nuclei sample."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from pixelwise.api import evaluate, format_metrics
from pixelwise.config import TrainConfig
from pixelwise.data.formats import load_spec
from pixelwise.inference.predict import load
from pixelwise.training.engine import fit


def sample_root() -> Path:
    """The bundled sample: 16 tiles of a fluorescence nuclei image, background/nucleus masks, BSD-3."""
    return Path(str(resources.files("pixelwise.data") / "sample" / "nuclei"))


def run_demo(out: str | Path = "runs/demo", epochs: int = 60) -> dict:
    out = Path(out)
    data = sample_root()
    summary = fit(TrainConfig(data=str(data), out=str(out), epochs=epochs), overwrite=True)  # the demo's own folder
    metrics = evaluate(out / "best.pt", data, split="test", json_path=out / "test_metrics.json",
                       plot_path=out / "confusion_test.png")
    print("\n" + format_metrics(metrics))

    predictions = out / "predictions"
    predictions.mkdir(exist_ok=True)
    predictor = load(out / "best.pt")
    for image, _ in load_spec(data).split("test"):
        predictor.predict_to_files(image, predictions)
    print(f"""
done. Everything is in {out}/:
  best.pt, last.pt         checkpoints (best validation mean IoU {summary['best_mean_iou']:.3f})
  curves.png               training loss and validation mean IoU per epoch
  test_metrics.json        held-out scores (mean IoU {metrics['mean_iou']:.3f})
  confusion_test.png       confusion matrix on the held-out tiles
  predictions/             class-index masks (<tile>.png) and overlays (<tile>_overlay.png)""")
    return {"train": summary, "test": {k: metrics[k] for k in ("mean_iou", "pixel_accuracy")}}
