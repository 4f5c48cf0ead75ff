"""Decoder upsampling ablation on CamVid, after the SegNet paper's decoder-variant table.

    python benchmarks/ablation_upsampling.py --minutes 15

One encoder (SegNet-Basic by default, trained from scratch like the paper's variants) with each
upsampling mode in its decoder, equal wall-clock budgets, everything else pixelwise's defaults.
Prints val mean IoU, parameters and CPU latency per mode; last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import CAMVID, run_record, train_and_score
from pixelwise.config import TrainConfig

# Badrinarayanan et al. 2017, Table 1 (CamVid, mean IoU %)
PAPER = {"bilinear": 43.3, "unpool": 47.7, "transposed": 47.3, "nearest": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=15, help="training budget per mode (default: 15)")
    parser.add_argument("--model", default="segnet")
    parser.add_argument("--backbone", default="segnet_basic")
    parser.add_argument("--pretrained", action="store_true", help="use ImageNet weights (not for segnet_basic)")
    parser.add_argument("--modes", default="bilinear,nearest,transposed,unpool")
    parser.add_argument("--infer-scale", type=float, default=1.0,
                        help="validation scale (default 1: the paper's native 360x480; pixelwise's 1.75 triples "
                             "SegNet-Basic's validation cost)")
    parser.add_argument("--scale-range", default="0.75,1.25", help="training scale jitter (default 0.75,1.25)")
    parser.add_argument("--data", default=str(CAMVID))
    parser.add_argument("--out", default="runs/ablation_upsampling")
    args = parser.parse_args()

    scale_range = tuple(float(v) for v in args.scale_range.split(","))
    results = {}
    for mode in args.modes.split(","):
        cfg = TrainConfig(data=args.data, out=str(Path(args.out) / mode), model=args.model, backbone=args.backbone,
                          upsample=mode, pretrained=args.pretrained, time_budget=args.minutes, strategy="full",
                          infer_scale=args.infer_scale, scale_range=scale_range)
        results[mode] = {**train_and_score(cfg), "paper_segnet_mean_iou": PAPER.get(mode)}
        print(json.dumps({mode: results[mode]}), flush=True)
    print(f"\n{'mode':<11} {'val mIoU':>9} {'paper':>6} {'params (M)':>11} {'latency (ms)':>13}")
    for mode, r in results.items():
        paper = "-" if r["paper_segnet_mean_iou"] is None else f"{r['paper_segnet_mean_iou']:.1f}"
        print(f"{mode:<11} {100 * r['val_mean_iou']:>9.1f} {paper:>6} {r['params_m']:>11.2f} {r['latency_ms_360x480']:>13.1f}")
    print(json.dumps({"benchmark": "ablation_upsampling", **run_record(), "minutes_each": args.minutes,
                      "model": f"{args.model}/{args.backbone}", "pretrained": args.pretrained,
                      "infer_scale": args.infer_scale, "scale_range": scale_range, "results": results}))


if __name__ == "__main__":
    main()
