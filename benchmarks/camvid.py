"""CamVid quality benchmark: `pixelwise train` defaults against a peer, equal wall-clock budgets.

    python benchmarks/camvid.py --minutes 45 --peer
    python benchmarks/camvid.py --minutes 45 --holdout-sequence 0006R0 0001TP --seeds 0 1

With --holdout-sequence, each named drive is held out whole: the model trains on every frame of
the other drives (train and val together, 10% of them kept by name hash to pick the best epoch)
and is scored on the held-out drive, which it never saw: a new street, as in CamVid's test split
and in every user's data. Val rewards memory of the drive that 305 of its 468 frames come from,
so quality decisions are made on these figures. --size 240x180 screens ideas on downscaled copies.
--rescore-flip RUN... scores such runs' best.pt again, with and without flip test-time augmentation:
a paired comparison on the same weights; --scales 0.75 1 1.25 adds multi-scale flip TTA.

Trains pixelwise's default model (FCN-8s / EfficientNet-Lite0) with `pixelwise train`'s
defaults on ../shared/data/camvid train, scores it on val, and with --peer trains
segmentation_models_pytorch's Unet/MobileNetV2 (offline torchvision ImageNet weights)
through the very same loop: same budget, data, augmentation, loss and class weighting,
optimizer, schedule and precision. Only the model differs. Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common import parse_overrides, place, run_record, screening_crop, sequence_of
from PIL import Image

from pixelwise.api import evaluate
from pixelwise.config import TrainConfig
from pixelwise.data.dataset import SegmentationDataset
from pixelwise.data.formats import hash_split, load_spec
from pixelwise.models import weights
from pixelwise.training import engine
from pixelwise.runtime import inference_setup
from pixelwise.checkpoint import load_checkpoint
from pixelwise.evaluation import ConfusionMatrix, evaluate_engine
from pixelwise.inference.selection import create_engine

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
    parser.add_argument("--holdout-sequence", nargs="+", metavar="SEQ",
                        help="hold out these drives (0001TP, 0006R0, 0016E5), one run each, and score them")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="with --holdout-sequence (default: 0)")
    parser.add_argument("--size", help="WxH: train and score on copies downscaled to this size (screening)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="TrainConfig fields to change, e.g. model=context_fpn infer_scale=1.0")
    parser.add_argument("--rescore-flip", nargs="+", metavar="RUN",
                        help="score held-out runs' best.pt again, without and with flip TTA (no training)")
    parser.add_argument("--scales", type=float, nargs="+", metavar="S",
                        help="with --rescore-flip: also score multi-scale flip TTA over these inference scales")
    args = parser.parse_args()
    if args.rescore_flip:
        return rescore_flip(args)
    if args.holdout_sequence:
        return holdout(args)
    args.peer = args.peer or args.peer_only
    torch.set_num_threads(torch.get_num_threads())
    out = Path(args.out)
    result = {"benchmark": "camvid", **run_record(), "minutes": args.minutes}
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


# ---------------------------------------------------------------- held-out sequences

def holdout_view(data: str, sequence: str, root: Path, size: tuple[int, int] | None) -> Path:
    """A CamVid-layout dataset at `root`: test = every frame of `sequence`; train and val = the other
    drives' frames of data's train and val, val 10% of them by name hash. Links to the files, or copies
    resized to `size` (images bilinear, masks nearest)."""
    spec = load_spec(data)
    frames = [pair for split in ("train", "val") for pair in spec.splits.get(split, [])]
    if not any(sequence_of(image) == sequence for image, _ in frames):
        raise SystemExit(f"no frame of sequence {sequence} in {data}")
    if (root / "done").is_file():
        return root
    for image, mask in frames:
        split = "test" if sequence_of(image) == sequence else hash_split(image.stem)
        place(image, root / split / image.name, size, Image.BILINEAR)
        place(mask, root / f"{split}annot" / mask.name, size, Image.NEAREST)
    if (Path(data) / "classes.txt").is_file():
        (root / "classes.txt").write_text((Path(data) / "classes.txt").read_text())
    (root / "done").write_text("")
    return root


def rounded(values: dict) -> dict:
    return {k: (None if v is None else round(v, 4)) for k, v in values.items()}


def holdout_run(args, sequence: str, seed: int, overrides: dict) -> dict:
    size = tuple(int(v) for v in args.size.split("x")) if args.size else None
    view = holdout_view(args.data, sequence, Path(args.out) / (f"data_{sequence}" + (f"_{args.size}" if size else "")),
                        size)
    name = re.sub(r"[^\w.,-]+", "", "_".join([sequence, f"seed{seed}", *(f"{k}-{v}" for k, v in overrides.items())]))
    recipe = TrainConfig(data=str(view), out=str(Path(args.out) / name), time_budget=args.minutes, seed=seed)
    cfg = TrainConfig.from_dict({**recipe.to_dict(), **screening_crop(size), **overrides})
    summary = engine.fit(cfg, overwrite=True)
    best = Path(cfg.out) / "best.pt"
    held_out = evaluate(best, view, split="test")
    val = evaluate(best, view, split="val")
    history = json.loads((Path(cfg.out) / "history.json").read_text()) if (Path(cfg.out) / "history.json").is_file() \
        else []
    rates = [e["images_per_s"] for e in history if isinstance(e, dict) and "images_per_s" in e]
    result = {"sequence": sequence, "seed": seed, "model": f"{cfg.model}/{cfg.backbone}", "overrides": overrides,
              "heldout_mean_iou": round(held_out["mean_iou"], 4), "heldout_images": held_out["images"],
              "val_mean_iou": round(val["mean_iou"], 4), "val_images": val["images"],
              "epochs": summary["epochs"], "train_minutes": round(summary["minutes"], 2),
              "train_images_per_s": round(statistics.median(rates), 2) if rates else None,
              "heldout_per_class_iou": rounded(held_out["per_class_iou"]),
              "heldout_per_class_precision": rounded(held_out["per_class_precision"]),
              "heldout_per_class_recall": rounded(held_out["per_class_recall"])}
    print(json.dumps(result), flush=True)
    return result


class MultiScale:
    """An engine whose logits are its mean class probabilities over several inference scales (each with the
    engine's flip setting): multi-scale test-time augmentation, for scoring only."""

    def __init__(self, engine, scales: list[float]):
        self.engine, self.scales = engine, scales

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        total, own = 0, self.engine.scale
        try:
            for scale in self.scales:
                self.engine.scale = scale
                total = total + self.engine.logits(images).softmax(1)
        finally:
            self.engine.scale = own
        return total  # argmax is all the scoring reads


def flip_scores(best: Path, view: Path, scales: list[float] | None = None) -> dict:
    """Held-out mean IoU of `best` at --profile accurate, without and with flip test-time augmentation, and
    with `scales` also over those inference scales, flipped."""
    spec = load_spec(view)
    dataset = SegmentationDataset(spec.split("test"), spec.num_classes, spec.ignore_index)
    engine = create_engine("torch", best, profile="accurate")
    variants = {"plain": (engine, False), "flip": (engine, True)}
    if scales:
        variants["scales_flip"] = (MultiScale(engine, scales), True)
    scores = {}
    for key, (runner, flip) in variants.items():
        engine.flip = flip
        matrix = evaluate_engine(runner, dataset, ConfusionMatrix(spec.num_classes, spec.ignore_index))
        scores[key] = round(matrix.compute(spec.class_names)["mean_iou"], 4)
    return scores


def rescore_flip(args) -> None:
    """--rescore-flip: runs of --holdout-sequence (folders named SEQ_seedN...), scored again with flip TTA
    (and with --scales, multi-scale flip TTA)."""
    runs = {}
    for run in map(Path, args.rescore_flip):
        sequence = run.name.split("_")[0]
        view = Path(args.out) / (f"data_{sequence}" + (f"_{args.size}" if args.size else ""))
        runs[run.name] = flip_scores(run / "best.pt", view, args.scales)
        print(run.name, runs[run.name], flush=True)
    gains = [100 * (r["flip"] - r["plain"]) for r in runs.values()]
    summary = {"mean_gain_points": round(statistics.mean(gains), 2), "every_run_gains": all(g > 0 for g in gains)}
    if args.scales:
        over_flip = [100 * (r["scales_flip"] - r["flip"]) for r in runs.values()]
        summary |= {"scales": args.scales, "scales_over_flip_mean_gain_points": round(statistics.mean(over_flip), 2)}
    print(json.dumps({"benchmark": "camvid_holdout_flip", **run_record(), "runs": runs, **summary}))


def holdout(args) -> None:
    overrides = parse_overrides(args.set)
    runs = [holdout_run(args, sequence, seed, overrides) for sequence in args.holdout_sequence for seed in args.seeds]
    per_sequence = {seq: round(statistics.mean(r["heldout_mean_iou"] for r in runs if r["sequence"] == seq), 4)
                    for seq in args.holdout_sequence}
    print(json.dumps({"benchmark": "camvid_holdout", **run_record(), "minutes": args.minutes, "size": args.size,
                      "overrides": overrides, "runs": runs, "heldout_mean_iou_per_sequence": per_sequence,
                      "heldout_mean_iou": round(statistics.mean(r["heldout_mean_iou"] for r in runs), 4),
                      "val_mean_iou": round(statistics.mean(r["val_mean_iou"] for r in runs), 4)}))


if __name__ == "__main__":
    main()
