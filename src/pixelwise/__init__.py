"""pixelwise: semantic segmentation for small labelled image sets.

    import pixelwise
    model = pixelwise.create_model("fcn8s", backbone="efficientnet_lite0", num_classes=11)
    advice = pixelwise.advise("data/camvid")        # quadrant, strategy, reasons, evidence
    summary = pixelwise.train("data/camvid", out="runs/camvid", time_budget=45)
    scores = pixelwise.evaluate("runs/camvid/best.pt", "data/camvid", split="val")
    mask = pixelwise.load("runs/camvid/best.pt").predict("street.jpg")   # HxW class indices

Importing pixelwise loads the predictor only: the model zoo (timm, torchvision) loads on first use
of `create_model` or a checkpoint, the trainer, the advisor and matplotlib on first use of `train`,
`evaluate` or `advise`, and nothing global (such as matplotlib's backend) changes. So predicting
with an exported model starts without paying for the zoo's imports.
"""
from pixelwise.errors import DataError, PixelwiseError
from pixelwise.inference.predict import Predictor, load
from pixelwise.version import __version__  # noqa: F401 (the package's version)

__all__ = ["create_model", "list_models", "list_backbones", "advise", "train", "evaluate", "load", "Predictor",
           "PixelwiseError", "DataError"]


def __getattr__(name: str):
    if name in ("train", "evaluate"):
        from pixelwise import api

        return getattr(api, name)
    if name in ("create_model", "list_models", "list_backbones"):
        from pixelwise.models import registry

        return getattr(registry, name)
    if name == "advise":
        from pixelwise.training.advisor import advise

        return advise
    raise AttributeError(f"module 'pixelwise' has no attribute {name!r}")
