"""CamVid quality benchmark: `pixelwise train` defaults against a peer, equal wall-clock budgets.

    python benchmarks/camvid.py --minutes 45 --peer

Trains pixelwise's default model (FCN-8s / EfficientNet-Lite0) with `pixelwise train`'s
defaults on ../shared/data/camvid train, scores it on val, and with --peer trains
segmentation_models_pytorch's Unet/MobileNetV2 (offline torchvision ImageNet weights)
through the very same loop: same budget, data, augmentation, loss and class weighting,
optimizer, schedule and precision. Only the model differs. Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cpu import cpu_model

from pixelwise.api import evaluate
from pixelwise.config import TrainConfig
from pixelwise.data.dataset import SegmentationDataset
from pixelwise.data.formats import load_spec
from pixelwise.models import weights
from pixelwise.training import engine
from pixelwise.runtime import inference_setup
from pixelwise.checkpoint import load_checkpoint

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"


class PeerUnet(nn.Module):
    """smp Unet/MobileNetV2 with ImageNet normalisation, padded to a multiple of 32 (smp refuses other sizes)."""

    def __init__(self, num_classes: int):
        super().__init__()
        import segmentation_models_pytorch as smp

        self.net = smp.Unet("mobilenet_v2", encoder_weights=None, classes=num_classes)
        path = weights.offline_weight_file("mobilenet_v2")
        weights.load_by_name(self.net.encoder, weights.read_state_dict(path), str(path))
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):
        h, w = x.shape[-2:]
        x = F.pad((x - self.mean) / self.std, (0, -w % 32, 0, -h % 32))
        return self.net(x)[..., :h, :w]


def score_peer(model, cfg: TrainConfig, checkpoint: Path, scale: float | None = None) -> dict:
    """Val metrics of the peer at `scale` (default: the recipe's inference scale, as pixelwise is scored)."""
    spec = load_spec(cfg.data)
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    model, device, dtype = inference_setup(model, cfg.device, cfg.precision)
    val = SegmentationDataset(spec.split("val"), spec.num_classes, spec.ignore_index)
    scale = cfg.infer_scale if scale is None else scale
    return engine.evaluate(model, val, device, dtype, scale=scale).compute(spec.class_names)


def summarise(metrics: dict, summary: dict) -> dict:
    return {"val_mean_iou": round(metrics["mean_iou"], 4), "val_pixel_accuracy": round(metrics["pixel_accuracy"], 4),
            "epochs": summary["epochs"], "train_minutes": round(summary["minutes"], 2),
            "per_class_iou": {k: (None if v is None else round(v, 4)) for k, v in metrics["per_class_iou"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=45, help="training budget per model (default: 45)")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--out", default="runs/bench_camvid")
    parser.add_argument("--peer", action="store_true", help="also train the smp Unet/MobileNetV2 peer")
    parser.add_argument("--peer-only", action="store_true", help="train the peer alone (pixelwise run elsewhere)")
    args = parser.parse_args()
    args.peer = args.peer or args.peer_only
    torch.set_num_threads(torch.get_num_threads())
    out = Path(args.out)
    result = {"benchmark": "camvid", "machine": f"{cpu_model()}, {torch.get_num_threads()} threads, no GPU"
              if not torch.cuda.is_available() else torch.cuda.get_device_name(), "minutes": args.minutes}
    if not args.peer_only:
        result["pixelwise"] = train_pixelwise(args, out)
    if args.peer:
        result["peer"] = train_peer(args, out)
        if "pixelwise" in result:
            result["margin_points"] = round(100 * (result["pixelwise"]["val_mean_iou"]
                                                   - result["peer"]["val_mean_iou"]), 2)
    print(json.dumps(result))


def train_pixelwise(args, out: Path) -> dict:
    cfg = TrainConfig(data=args.data, out=str(out / "pixelwise"), time_budget=args.minutes)
    t = time.time()
    summary = engine.fit(cfg, overwrite=True)  # benchmark runs replace their own earlier output
    metrics = evaluate(out / "pixelwise" / "best.pt", args.data, split="val")
    strategy = load_checkpoint(out / "pixelwise" / "best.pt")["config"]["strategy"]  # what --strategy auto chose
    result = {"model": f"{cfg.model}/{cfg.backbone}", "strategy": strategy, **summarise(metrics, summary)}
    fp32 = evaluate(out / "pixelwise" / "best.pt", args.data, split="val", precision="fp32",
                    plot_path=out / "pixelwise" / "confusion_val_fp32.png")
    result["val_mean_iou_fp32_inference"] = round(fp32["mean_iou"], 4)
    result["wall_minutes"] = round((time.time() - t) / 60, 2)
    print(json.dumps(result), flush=True)
    return result


def train_peer(args, out: Path) -> dict:
    """smp Unet/MobileNetV2 through pixelwise's loop and recipe, scored at the recipe's inference scale
    (as pixelwise is) and at scale 1 (the fast profile's)."""
    peer_cfg = TrainConfig(data=args.data, out=str(out / "peer"), time_budget=args.minutes,
                           model="peer:smp.Unet", backbone="mobilenet_v2")
    spec = load_spec(args.data)
    peer_summary = engine.fit(peer_cfg, model=PeerUnet(spec.num_classes), overwrite=True)
    metrics = score_peer(PeerUnet(spec.num_classes), peer_cfg, out / "peer" / "best.pt")
    at_one = score_peer(PeerUnet(spec.num_classes), peer_cfg, out / "peer" / "best.pt", scale=1.0)
    return {"model": "smp.Unet/mobilenet_v2 (torchvision ImageNet weights)", **summarise(metrics, peer_summary),
            "infer_scale": peer_cfg.infer_scale, "val_mean_iou_at_scale_1": round(at_one["mean_iou"], 4)}


if __name__ == "__main__":
    main()
