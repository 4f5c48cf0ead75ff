"""Every engine against eager fp32 PyTorch on CamVid val: equal pixels, mean IoU and images/s.

    python benchmarks/engines.py --checkpoint runs/camvid/best.pt

For each speed profile (accurate: the checkpoint's inference scale; fast: scale 1) the reference is
eager PyTorch in fp32. Every other engine predicts the same 101 images: torch and OpenVINO at the
profile's automatic precision (`default: true`; accurate keeps fp32's masks: torch fp16 where the CPU
has it natively, else fp32, OpenVINO fp32; fast takes bf16 where native) and at bf16, ONNX Runtime
fp32, OpenVINO fp32, and both int8 files. The benchmark reports the precision each ran at, the share
of pixels whose class equals the reference's, the mean IoU and its difference in points, and the
evaluation throughput (batches of 8, resizes included, images already decoded).

Targets (issue 10): every engine >= 99.9% equal pixels and within 0.3 points of mean IoU; int8
within 1 point. The .onnx files are exported once into --cache. The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from common import CAMVID
from cpu import cpu_model, run_record

from pixelwise.checkpoint import load_checkpoint
from pixelwise.data.dataset import SegmentationDataset
from pixelwise.data.formats import load_spec
from pixelwise.evaluation import evaluate_engine
from pixelwise.inference.selection import create_engine
from pixelwise.inference.export import export_onnx
from pixelwise.evaluation import ConfusionMatrix

# (engine, model file kind, precision asked for): every runtime and precision pixelwise can predict with
CANDIDATES = (("torch", "checkpoint", "auto"), ("torch", "checkpoint", "bf16"), ("onnxruntime", "fp32", "fp32"),
              ("openvino", "fp32", "auto"), ("openvino", "fp32", "fp32"), ("openvino", "fp32", "bf16"),
              ("onnxruntime", "int8", "fp32"), ("openvino", "int8", "fp32"))
NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", None: "fp32", "float32": "fp32", "bfloat16": "bf16",
         "float16": "fp16"}


def precision_of(engine, kind: str) -> str:
    """The precision an engine actually runs at."""
    if kind == "int8":
        return "int8"
    if engine.name == "torch":
        return NAMES[engine.dtype]
    if engine.name == "openvino":
        return NAMES[str(engine.compiled.get_property("INFERENCE_PRECISION_HINT")).split("'")[1]]
    return "fp32"


class Recorder:
    """A confusion matrix that also keeps every predicted mask, to compare engines pixel by pixel."""

    def __init__(self, num_classes: int, ignore_index: int):
        self.matrix = ConfusionMatrix(num_classes, ignore_index)
        self.predictions: list[torch.Tensor] = []

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        self.matrix.update(prediction, target)
        self.predictions += list(prediction.to(torch.uint8))


def score(engine, val, spec) -> tuple[Recorder, float]:
    """-> (the recorder filled over val, images/s)."""
    evaluate_engine(engine, val, Recorder(spec.num_classes, spec.ignore_index), indices=range(2), progress=False)
    start = time.perf_counter()  # the call above picked the kernels; this one is timed
    recorder = evaluate_engine(engine, val, Recorder(spec.num_classes, spec.ignore_index), desc=engine.name)
    return recorder, len(val) / (time.perf_counter() - start)


def agreement(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    equal = sum(int((x == y).sum()) for x, y in zip(a, b))
    return equal / sum(x.numel() for x in a)


def exported(checkpoint: Path, cache: Path) -> dict[str, Path]:
    """fp32 and int8 .onnx files of the checkpoint, exported once (kept while newer than it)."""
    cache.mkdir(parents=True, exist_ok=True)
    files = {"fp32": cache / f"{checkpoint.parent.name}_fp32.onnx", "int8": cache / f"{checkpoint.parent.name}_int8.onnx"}
    for kind, path in files.items():
        if not path.is_file() or path.stat().st_mtime_ns < checkpoint.stat().st_mtime_ns:
            export_onnx(checkpoint, path, int8=kind == "int8")
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a CamVid checkpoint from pixelwise train")
    parser.add_argument("--data", default=str(CAMVID))
    parser.add_argument("--cache", default=str(Path.home() / ".cache/pixelwise/benchmarks/engines"))
    parser.add_argument("--profiles", default="accurate,fast")
    parser.add_argument("--json", default="benchmarks/results/engines.json")
    args = parser.parse_args()
    checkpoint = Path(args.checkpoint)
    files = exported(checkpoint, Path(args.cache))
    spec = load_spec(args.data)
    val = SegmentationDataset(spec.split("val"), spec.num_classes, spec.ignore_index).preload("reading val")

    rows = []
    for profile in args.profiles.split(","):
        reference = create_engine("torch", checkpoint, device="cpu", precision="fp32", profile=profile)
        ref, ref_speed = score(reference, val, spec)
        ref_iou = ref.matrix.compute(spec.class_names)["mean_iou"]
        rows.append({"profile": profile, "engine": "torch", "precision": "fp32", "infer_scale": reference.scale,
                     "mean_iou": round(ref_iou, 4), "delta_points": 0.0, "equal_pixels": 1.0,
                     "images_per_s": round(ref_speed, 2)})
        print(f"{profile:8s} torch        fp32  mIoU {ref_iou:.4f}  {ref_speed:5.2f} img/s (reference)", flush=True)
        measured = {("torch", "fp32")}
        for name, kind, precision in CANDIDATES:
            source = checkpoint if kind == "checkpoint" else files[kind]
            engine = create_engine(name, source, device="cpu", precision=precision, profile=profile,
                                   log=lambda message: None)
            label = precision_of(engine, kind)
            if (name, label) in measured:  # e.g. accurate's automatic precision is fp32 on OpenVINO
                for row in rows:
                    if row["profile"] == profile and (row["engine"], row["precision"]) == (name, label):
                        row["default"] = row.get("default", False) or precision == "auto"
                continue
            measured.add((name, label))
            got, speed = score(engine, val, spec)
            iou = got.matrix.compute(spec.class_names)["mean_iou"]
            row = {"profile": profile, "engine": name, "precision": label, "default": precision == "auto",
                   "infer_scale": engine.scale,
                   "mean_iou": round(iou, 4), "delta_points": round(100 * (iou - ref_iou), 2),
                   "equal_pixels": round(agreement(got.predictions, ref.predictions), 5),
                   "images_per_s": round(speed, 2)}
            row["meets_target"] = (abs(row["delta_points"]) <= 1.0 if kind == "int8" else
                                   row["equal_pixels"] >= 0.999 and abs(row["delta_points"]) <= 0.3)
            rows.append(row)
            print(f"{profile:8s} {name:12s} {label:5s} mIoU {iou:.4f} ({row['delta_points']:+.2f})  equal "
                  f"{row['equal_pixels']:.4%}  {speed:5.2f} img/s  {'ok' if row['meets_target'] else 'MISSED'}",
                  flush=True)
    ckpt = load_checkpoint(checkpoint)
    result = {"benchmark": "engines", **run_record(), "cpu": cpu_model(), "threads": torch.get_num_threads(),
              "checkpoint": str(checkpoint), "model": f"{ckpt['config']['model']}/{ckpt['config']['backbone']}",
              "images": len(val), "rows": rows, "all_targets_met": all(r.get("meets_target", True) for r in rows),
              "defaults_meet_targets": {profile: all(r.get("meets_target", True) for r in rows
                                                     if r["profile"] == profile and r.get("default"))
                                        for profile in args.profiles.split(",")}}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
