"""How fast the ground-truth tools are: `data check` and `data split` on CamVid train+val, and an import
of a 2,000-image synthetic COCO file. Target: each at least ~100 images/s on 2 cores, so that the
checker is never the reason a user skips it.

    python benchmarks/data_tools.py [--coco-images 2000]

CamVid is read from ../shared/data/camvid (never copied). The split needs the folder layout, so the
benchmark links CamVid's train and val files into a temporary folder dataset. The last line printed
is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from common import CAMVID, run_record

from pixelwise.data.checks import check_dataset
from pixelwise.data.formats import load_spec
from pixelwise.data.importers import import_dataset
from pixelwise.data.importers.coco import write_synthetic_coco
from pixelwise.data.splits import split_dataset


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def camvid_as_folder(root: Path, spec) -> int:
    """Link CamVid train+val into images/ masks/ classes.txt (no copy of the CC BY-NC files)."""
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    n = 0
    for split in ("train", "val"):
        for image, mask in spec.split(split):
            (root / "images" / image.name).symlink_to(image.resolve())
            (root / "masks" / f"{image.stem}.png").symlink_to(mask.resolve())
            n += 1
    # CamVid's void (11) is the folder layout's ignore (255) only after relabelling, so the split is
    # measured on the 11 classes plus void as a 12th class name: the work done is the same.
    (root / "classes.txt").write_text("\n".join(spec.class_names + ("void",)) + "\n")
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco-images", type=int, default=2000)
    args = parser.parse_args()
    results = run_record()
    print(f"machine: {results['machine']}")
    quiet = lambda _: None  # noqa: E731

    spec = load_spec(CAMVID)
    n_camvid = len(spec.split("train")) + len(spec.split("val"))
    report, seconds = timed(lambda: check_dataset(CAMVID, log=quiet))
    checked = sum(len(pairs) for pairs in spec.splits.values())
    results["check_camvid"] = {"images": checked, "seconds": round(seconds, 2),
                               "images_per_s": round(checked / seconds, 1), "problems": len(report.problems)}
    print(f"data check, CamVid ({checked} images): {seconds:.1f} s, {checked / seconds:.0f} images/s, "
          f"{len(report.problems)} problems")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "camvid_folder"
        camvid_as_folder(folder, spec)
        _, seconds = timed(lambda: split_dataset(folder, val=0.1, test=0.1, log=quiet))
        results["split_camvid"] = {"images": n_camvid, "seconds": round(seconds, 2),
                                   "images_per_s": round(n_camvid / seconds, 1)}
        print(f"data split, CamVid train+val ({n_camvid} images): {seconds:.1f} s, {n_camvid / seconds:.0f} images/s")

        coco_dir = Path(tmp) / "coco"
        json_path, seconds_gen = timed(lambda: write_synthetic_coco(args.coco_images, coco_dir))
        summary, seconds = timed(lambda: import_dataset("coco", json_path, Path(tmp) / "imported", log=quiet))
        results["import_coco"] = {"images": summary.images, "seconds": round(seconds, 2),
                                  "images_per_s": round(summary.images / seconds, 1), "failed": len(summary.failed)}
        print(f"data import --from coco ({summary.images} synthetic 480x360 images): {seconds:.1f} s, "
              f"{summary.images / seconds:.0f} images/s (generating the file took {seconds_gen:.0f} s)")
        shutil.rmtree(coco_dir)
    results["target_images_per_s"] = 100
    print(json.dumps(results))


if __name__ == "__main__":
    main()
