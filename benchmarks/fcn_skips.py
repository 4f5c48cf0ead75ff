"""FCN-32s vs 16s vs 8s on CamVid: do the skips help as they did in the paper?

    python benchmarks/fcn_skips.py --minutes 15 [--staged]

Same backbone and budget for each; everything else pixelwise's defaults. With --staged, 16s
starts from the trained 32s and 8s from the trained 16s (`--init-from`), as in the paper.
Paper (VOC2011 val, mean IoU): 59.4, 62.4, 62.7. Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import CAMVID, run_record, train_and_score
from pixelwise.config import TrainConfig

PAPER = {"fcn32s": 59.4, "fcn16s": 62.4, "fcn8s": 62.7}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=15, help="training budget per model (default: 15)")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--staged", action="store_true", help="initialise 16s from 32s and 8s from 16s")
    parser.add_argument("--data", default=str(CAMVID))
    parser.add_argument("--out", default="runs/fcn_skips")
    args = parser.parse_args()

    results, previous = {}, None
    for name in ("fcn32s", "fcn16s", "fcn8s"):
        cfg = TrainConfig(data=args.data, out=str(Path(args.out) / name), model=name, backbone=args.backbone,
                          time_budget=args.minutes, strategy="full", init_from=previous if args.staged else None)
        results[name] = {**train_and_score(cfg), "paper_voc_mean_iou": PAPER[name]}
        previous = str(Path(cfg.out) / "best.pt")
        print(json.dumps({name: results[name]}), flush=True)
    print(f"\n{'model':<7} {'val mIoU':>9} {'paper (VOC)':>12} {'params (M)':>11} {'latency (ms)':>13}")
    for name, r in results.items():
        print(f"{name:<7} {100 * r['val_mean_iou']:>9.1f} {r['paper_voc_mean_iou']:>12.1f} {r['params_m']:>11.2f} "
              f"{r['latency_ms_360x480']:>13.1f}")
    gains = [results["fcn16s"]["val_mean_iou"] - results["fcn32s"]["val_mean_iou"],
             results["fcn8s"]["val_mean_iou"] - results["fcn16s"]["val_mean_iou"]]
    print(json.dumps({"benchmark": "fcn_skips", **run_record(), "minutes_each": args.minutes,
                      "backbone": args.backbone, "staged": args.staged, "results": results,
                      "skip_gains_points": [round(100 * g, 2) for g in gains]}))


if __name__ == "__main__":
    main()
