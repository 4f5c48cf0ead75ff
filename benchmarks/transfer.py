"""Every transfer strategy in every data setting, equal time budgets, two seeds; and the advisor's pick.

    python benchmarks/transfer.py                       # 6 settings x 5 strategies x 2 seeds, ~70 min
    python benchmarks/transfer.py --settings nuclei --minutes-small 0.3   # a quick look

A setting is a (dataset, training-set size) pair:
  camvid-10, camvid-30, camvid-100   CamVid train subsets (37, 110, 367 images), street scenes: like ImageNet
  nuclei                             the bundled fluorescence-microscopy sample (10 tiles): unlike ImageNet
  textures-16, textures-160          synthetic filtered-noise textures (pixelwise.data.synthetic): unlike ImageNet
CamVid runs at half resolution (240x180) so that 60 runs fit a working session on a 2-core CPU; the
half-size copy is written once to a cache folder outside the repository (CamVid is CC BY-NC).
Validation is CamVid's full val split, or the dataset's own.

Each cell trains FCN-8s/EfficientNet-Lite0 with pixelwise's defaults and the strategy under test,
for the same wall-clock budget, and reports the val mean IoU of the final epoch. The advisor's pick
counts as right when its mean is within the tolerance of the best strategy's mean: the larger of
1 mIoU point and either one's seed spread (max - min). Results are cached in OUT/results.json, so
an interrupted run continues where it stopped. Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
from PIL import Image

from common import CAMVID, run_record
from pixelwise.config import TrainConfig
from pixelwise.data.formats import load_spec
from pixelwise.data.synthetic import write_texture_dataset
from pixelwise.training import engine, strategies
from pixelwise.training.advisor import advise

NUCLEI = Path(__file__).resolve().parents[1] / "src" / "pixelwise" / "data" / "sample" / "nuclei"
CACHE = Path.home() / ".cache" / "pixelwise" / "benchmarks"
STRATEGIES = ("head", "last-k", "full", "scratch", "progressive")
SETTINGS = ("camvid-10", "camvid-30", "camvid-100", "nuclei", "textures-16", "textures-160")
# the FCN paper (VOC 2011 val): last layer only 45.4, full fine-tuning 59.4 mean IoU
PAPER = {"head": 45.4, "full": 59.4}


def half_size_camvid(source: Path, root: Path) -> Path:
    """CamVid at 240x180 (images area-averaged, labels nearest), written once."""
    if (root / "classes.txt").is_file():
        return root
    for split in ("train", "val"):
        for sub, resample in ((split, Image.BOX), (f"{split}annot", Image.NEAREST)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            for path in sorted((source / sub).glob("*.png")):
                image = Image.open(path)
                image.resize((image.width // 2, image.height // 2), resample).save(root / sub / path.name)
    (root / "classes.txt").write_text((source / "classes.txt").read_text())
    return root


def camvid_subset(full: Path, percent: int, seed: int = 0) -> Path:
    """A CamVid-layout folder whose train split is `percent`% of `full`'s (links, no copies)."""
    if percent == 100:
        return full
    root = full.parent / f"{full.name}_{percent}pct"
    if (root / "classes.txt").is_file():
        return root
    images = sorted((full / "train").glob("*.png"))
    keep = np.random.default_rng(seed).choice(len(images), round(len(images) * percent / 100), replace=False)
    for sub in ("train", "trainannot"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for i in sorted(keep):
            (root / sub / images[i].name).symlink_to(full / sub / images[i].name)
    for sub in ("val", "valannot"):
        (root / sub).symlink_to(full / sub)
    (root / "classes.txt").write_text((full / "classes.txt").read_text())
    return root


def setting_data(name: str, camvid: Path) -> tuple[Path, dict]:
    """-> (dataset folder, training options particular to the setting). Only the final epoch is scored, so
    validation keeps to about a tenth of each budget (val_every 0): validating every few epochs at the
    recipe's inference scale would spend most of a 1.5-minute budget on val, and rank strategies by how
    little they train instead of how well."""
    if name.startswith("camvid-"):
        percent = int(name.split("-")[1])
        full = half_size_camvid(camvid, CACHE / "camvid_240x180")
        return camvid_subset(full, percent), {"val_every": 0}
    if name == "nuclei":
        return NUCLEI, {"val_every": 0}
    if name.startswith("textures-"):
        count = int(name.split("-")[1])
        root = CACHE / f"textures_{count}"
        if not (root / "classes.txt").is_file():
            write_texture_dataset(root, train=count, val=40, seed=1)
        return root, {"val_every": 0}
    raise SystemExit(f"unknown setting {name!r}; choose from {', '.join(SETTINGS)}")


def trainable_parameters(data: Path, strategy: str) -> int:
    """Parameters that train under `strategy` (progressive: by the end, when all stages are unfrozen)."""
    cfg = TrainConfig(data=str(data), strategy=strategy, pretrained=False)
    model = engine.build_model(cfg, load_spec(data).num_classes)
    strategies.apply_strategy(model, "full" if strategy == "progressive" else strategy)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def spread(values: list[float]) -> float:
    return max(values) - min(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--minutes-camvid", type=float, default=1.5, help="budget per CamVid run (default: 1.5)")
    parser.add_argument("--minutes-small", type=float, default=0.4,
                        help="budget per nuclei/textures run (default: 0.4)")
    parser.add_argument("--camvid", default=str(CAMVID))
    parser.add_argument("--out", default="runs/transfer")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache_file = out / "results.json"
    cells = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    seeds = [int(s) for s in args.seeds.split(",")]

    report = {}
    for setting in args.settings.split(","):
        data, options = setting_data(setting, Path(args.camvid))
        minutes = args.minutes_camvid if setting.startswith("camvid") else args.minutes_small
        advice = advise(data, log=lambda message: None)
        print(f"{setting}: advisor says {advice.summary()}", flush=True)
        rows = {}
        for strategy in args.strategies.split(","):
            scores = []
            for seed in seeds:
                key = f"{setting}/{strategy}/seed{seed}/{minutes:g}min"
                if key not in cells:
                    cfg = TrainConfig(data=str(data), out=str(out / setting / strategy / f"seed{seed}"),
                                      strategy=strategy, seed=seed, time_budget=minutes, **options)
                    summary = engine.fit(cfg, overwrite=True, log=lambda message: None)
                    history = json.loads((Path(cfg.out) / "history.json").read_text())
                    cells[key] = {"final_val_mean_iou": round(history[-1]["val_mean_iou"], 4),
                                  "best_val_mean_iou": round(summary["best_mean_iou"], 4),
                                  "epochs": summary["epochs"], "minutes": round(summary["minutes"], 2)}
                    cache_file.write_text(json.dumps(cells, indent=1))
                    print(json.dumps({key: cells[key]}), flush=True)
                scores.append(cells[key]["final_val_mean_iou"])
            rows[strategy] = {"mean": round(statistics.mean(scores), 4), "spread": round(spread(scores), 4),
                              "seeds": scores, "trainable_params_m": round(trainable_parameters(data, strategy) / 1e6, 3),
                              "epochs": [cells[f"{setting}/{strategy}/seed{s}/{minutes:g}min"]["epochs"] for s in seeds]}
        best = max(rows, key=lambda s: rows[s]["mean"])
        pick = advice.strategy
        verdict = None
        if pick in rows:
            tolerance = max(0.01, rows[best]["spread"], rows[pick]["spread"])
            verdict = rows[best]["mean"] - rows[pick]["mean"] <= tolerance
        report[setting] = {"images": advice.evidence["images"], "domain_shift": round(advice.evidence["domain_shift"], 3),
                           "quadrant": advice.quadrant, "advisor_pick": pick, "best": best,
                           "pick_within_spread_of_best": verdict, "minutes_each": minutes, "strategies": rows}

    print(f"\n{'setting':<13} {'quadrant':<16} " + " ".join(f"{s:>13}" for s in args.strategies.split(","))
          + "   pick         ok")
    for setting, r in report.items():
        cells_text = " ".join(f"{100 * v['mean']:>6.1f} ±{100 * v['spread'] / 2:>4.1f}{'*' if s == r['best'] else ' '}"
                              for s, v in r["strategies"].items())
        print(f"{setting:<13} {r['quadrant']:<16} {cells_text}   {r['advisor_pick']:<12} "
              f"{ {True: 'yes', False: 'NO', None: '-'}[r['pick_within_spread_of_best']]}")
    hits = sum(bool(r["pick_within_spread_of_best"]) for r in report.values())
    print(json.dumps({"benchmark": "transfer", **run_record(), "model": "fcn8s/efficientnet_lite0",
                      "metric": "val mean IoU of the final epoch", "paper_fcn_voc": PAPER,
                      "advisor_right": f"{hits}/{len(report)}", "settings": report}))


if __name__ == "__main__":
    main()
