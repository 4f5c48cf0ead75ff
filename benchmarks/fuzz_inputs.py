"""Hostile and odd inputs, counted: N fuzz cases through pixelwise's image and mask readers, joint
transforms and importers, outside pytest.

The cases are tests/data/fuzz_cases.py's, the ones test_fuzz.py runs under hypothesis; here numpy draws
their parameters from a seed, so a run is repeatable. A case ends "ok" (the right output), "refused" (a
DataError naming the file), "wrong" (an AssertionError: a wrong output, or a message without the file) or
"crash" (any other exception). `crashes` counts both of the last two and must be 0.

    python benchmarks/fuzz_inputs.py --cases 2000 --seed 0
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "data"))
import fuzz_cases as fc  # noqa: E402  (test helpers, not part of the package)
from cpu import run_record  # noqa: E402


def pick(rng: np.random.Generator, options):
    options = list(options)
    return options[int(rng.integers(len(options)))]


def draw_size(rng: np.random.Generator, most: int = 40) -> tuple[int, int]:
    """(h, w): 1x1, 1xN and Nx1 a third of the time, else anything up to `most`."""
    h, w = (int(v) for v in rng.integers(1, most + 1, 2))
    return pick(rng, [(1, 1), (1, w), (h, 1), (h, w), (h, w), (h, w)])


def draw_image(rng):
    mode = pick(rng, fc.IMAGE_FORMATS)
    h, w = draw_size(rng)
    return dict(mode=mode, fmt=pick(rng, fc.IMAGE_FORMATS[mode]), h=h, w=w, orientation=int(rng.integers(1, 9)),
                seed=int(rng.integers(1 << 31)))


def draw_mask(rng):
    kind = pick(rng, fc.MASK_FORMATS)
    h, w = draw_size(rng)
    return dict(kind=kind, fmt=pick(rng, fc.MASK_FORMATS[kind]), h=h, w=w, orientation=int(rng.integers(1, 9)),
                seed=int(rng.integers(1 << 31)))


def draw_pair(rng):
    h, w = draw_size(rng)
    return dict(image_fmt=pick(rng, ("PNG", "JPEG", "TIFF", "WEBP")), h=h, w=w,
                orientation=int(rng.integers(1, 9)), mask_upright=bool(rng.integers(2)), seed=int(rng.integers(1 << 31)))


TRUNCATABLE = {"PNG": ("RGB", "L", "P", "I;16", "RGBA"), "JPEG": ("RGB", "L", "CMYK"), "TIFF": ("RGB", "I", "F"),
               "WEBP": ("RGB",), "BMP": ("RGB", "P")}


def draw_truncated(rng):
    fmt = pick(rng, TRUNCATABLE)
    h, w = draw_size(rng)
    return dict(fmt=fmt, mode=pick(rng, TRUNCATABLE[fmt]), h=h, w=w, keep=float(rng.random()) * pick(rng, (1, 0.1)),
                seed=int(rng.integers(1 << 31)))


def draw_corrupt(rng):
    fmt = pick(rng, TRUNCATABLE)
    h, w = draw_size(rng)
    edits = [(float(rng.random()), int(rng.integers(256))) for _ in range(int(rng.integers(1, 5)))]
    return dict(fmt=fmt, mode=pick(rng, TRUNCATABLE[fmt]), h=h, w=w, edits=edits, seed=int(rng.integers(1 << 31)))


def draw_bomb(rng):
    fmt = pick(rng, ("PNG", "JPEG", "BMP"))
    top = 65535 if fmt == "JPEG" else 200_000
    w, h = (int(v) for v in rng.integers(9460, top + 1, 2))  # 9460^2 is just over PIL's 89,478,485
    if fmt != "JPEG" and rng.random() < 0.2:
        w, h = 1, int(rng.integers(89_478_486, 1 << 31))  # 1xN: long and thin
    return dict(fmt=fmt, w=w, h=h)


def draw_transform(rng):
    h, w = draw_size(rng, 48)
    labels = sorted({int(v) for v in rng.integers(0, pick(rng, (4, 256, 1 << 16)), int(rng.integers(1, 6)))})
    low = float(rng.uniform(0.25, 2.0))
    scale = pick(rng, [(1.0, 1.0), (low, low + float(rng.uniform(0, 1.5)))])
    crop = tuple(int(v) for v in rng.integers(1, 40, 2))
    return dict(h=h, w=w, crop=crop, scale_range=scale, labels=labels, ignore_index=pick(rng, (255, 65535, -1)),
                jitter=pick(rng, (0.0, float(rng.uniform(0, 0.5)))), seed=int(rng.integers(1 << 31)))


def draw_coco(rng):
    target = pick(rng, fc.COCO_KEYS)
    values = fc.COCO_SEGMENTATIONS if target == "segmentation" else [*fc.HOSTILE, fc.DELETE]
    return dict(target=target, key=pick(rng, fc.COCO_KEYS[target]), value=pick(rng, values))


def draw_labelme(rng):
    target = pick(rng, fc.LABELME_KEYS)
    key = pick(rng, fc.LABELME_KEYS[target])
    values = {"points": fc.LABELME_POINTS, None: [*fc.HOSTILE, *fc.LABELME_SHAPES]}.get(key, [*fc.HOSTILE, fc.DELETE])
    return dict(target=target, key=key, value=pick(rng, values))


# kind -> (case, draw); every case takes a fresh folder first (transforms ignore it)
CASES = {"image": (fc.image_case, draw_image), "mask": (fc.mask_case, draw_mask), "pair": (fc.pair_case, draw_pair),
         "truncated": (fc.truncated_case, draw_truncated), "corrupt": (fc.corrupt_case, draw_corrupt),
         "bomb": (fc.bomb_case, draw_bomb), "transform": (lambda tmp, **p: fc.transform_case(**p), draw_transform),
         "coco": (fc.coco_case, draw_coco), "labelme": (fc.labelme_case, draw_labelme)}


def run_fuzz(n_cases: int, seed: int = 0, kinds: tuple[str, ...] | None = None) -> dict:
    """Run `n_cases` fuzz cases, the kinds in turn, parameters drawn from `seed`.
    -> {cases, ok, refused, crashes (must be 0), errors_by_kind: {kind: {outcome: n}}, crash_types,
    failures (the first 10, with their parameters), seconds, slowest_case_s, peak_rss_mb}."""
    rng = np.random.default_rng(seed)
    kinds = tuple(kinds or CASES)
    outcomes, by_kind, crash_types, failures = Counter(), {k: Counter() for k in kinds}, Counter(), []
    slowest = (0.0, None)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n_cases):
            kind = kinds[i % len(kinds)]
            case, draw = CASES[kind]
            params = draw(rng)
            folder = Path(tmp) / str(i)
            folder.mkdir()
            began = time.perf_counter()
            try:
                outcome = case(folder, **params)
            except Exception as err:  # noqa: BLE001  (counting crashes is the point)
                outcome = "wrong" if isinstance(err, AssertionError) else "crash"
                crash_types[type(err).__name__] += 1
                if len(failures) < 10:
                    failures.append({"kind": kind, "params": _printable(params), "error": f"{type(err).__name__}: "
                                     f"{str(err)[:300]}", "where": traceback.format_exc(limit=-3)[-800:]})
            took = time.perf_counter() - began
            slowest = max(slowest, (took, kind), key=lambda t: t[0])
            outcomes[outcome] += 1
            by_kind[kind][outcome] += 1
            shutil.rmtree(folder, ignore_errors=True)
    return {"cases": n_cases, "ok": outcomes["ok"], "refused": outcomes["refused"],
            "crashes": outcomes["crash"] + outcomes["wrong"], "errors_by_kind": {k: dict(v) for k, v in by_kind.items()},
            "crash_types": dict(crash_types), "failures": failures, "seconds": round(time.perf_counter() - start, 2),
            "slowest_case_s": [round(slowest[0], 3), slowest[1]],
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _printable(params: dict) -> dict:
    """Parameters for the report: long lists cut short, the DELETE marker named."""
    def show(v):
        if v is fc.DELETE:
            return "<delete>"
        text = repr(v)
        return text if len(text) < 120 else text[:117] + "..."
    return {k: show(v) for k, v in params.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=900)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", nargs="*", choices=sorted(CASES), help="only these kinds (default: all)")
    args = parser.parse_args()
    result = {"benchmark": "fuzz_inputs", **run_record(),
              **run_fuzz(args.cases, args.seed, tuple(args.kinds) if args.kinds else None)}
    print(json.dumps(result, indent=2))
    sys.exit(1 if result["crashes"] else 0)


if __name__ == "__main__":
    main()
