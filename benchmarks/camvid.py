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
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

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


def score_peer(model, cfg: TrainConfig, checkpoint: Path) -> dict:
    spec = load_spec(cfg.data)
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    model, device, dtype = inference_setup(model, cfg.device, cfg.precision)
    val = SegmentationDataset(spec.split("val"), spec.num_classes, spec.ignore_index)
    return engine.evaluate(model, val, device, dtype, scale=cfg.infer_scale).compute(spec.class_names)


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
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    out = Path(args.out)
    result = {"benchmark": "camvid", "machine": f"{platform.processor() or platform.machine()}, "
              f"{torch.get_num_threads()} threads, no GPU" if not torch.cuda.is_available()
              else torch.cuda.get_device_name(), "minutes": args.minutes}

    cfg = TrainConfig(data=args.data, out=str(out / "pixelwise"), time_budget=args.minutes)
    t = time.time()
    summary = engine.fit(cfg, overwrite=True)  # benchmark runs replace their own earlier output
    metrics = evaluate(out / "pixelwise" / "best.pt", args.data, split="val")
    strategy = load_checkpoint(out / "pixelwise" / "best.pt")["config"]["strategy"]  # what --strategy auto chose
    result["pixelwise"] = {"model": f"{cfg.model}/{cfg.backbone}", "strategy": strategy, **summarise(metrics, summary)}
    fp32 = evaluate(out / "pixelwise" / "best.pt", args.data, split="val", precision="fp32",
                    plot_path=out / "pixelwise" / "confusion_val_fp32.png")
    result["pixelwise"]["val_mean_iou_fp32_inference"] = round(fp32["mean_iou"], 4)
    result["pixelwise"]["wall_minutes"] = round((time.time() - t) / 60, 2)
    print(json.dumps(result["pixelwise"]), flush=True)

    if args.peer:
        peer_cfg = TrainConfig(data=args.data, out=str(out / "peer"), time_budget=args.minutes,
                               model="peer:smp.Unet", backbone="mobilenet_v2")
        spec = load_spec(args.data)
        peer = PeerUnet(spec.num_classes)
        peer_summary = engine.fit(peer_cfg, model=peer, overwrite=True)
        peer_metrics = score_peer(PeerUnet(spec.num_classes), peer_cfg, out / "peer" / "best.pt")
        result["peer"] = {"model": "smp.Unet/mobilenet_v2 (torchvision ImageNet weights)",
                          **summarise(peer_metrics, peer_summary)}
        result["margin_points"] = round(100 * (metrics["mean_iou"] - peer_metrics["mean_iou"]), 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
