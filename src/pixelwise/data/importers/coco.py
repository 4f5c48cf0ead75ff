"""COCO instance annotations -> class-index masks, decoded by pycocotools.

Classes: class 0 is "background", the pixels no instance covers; the categories follow, sorted by
id. A category already named "background" (any case) is class 0 itself rather than a second one.
Overlaps: with overlap="ignore" pixels where instances of different classes overlap become 255;
with overlap="last" later annotations (file order) paint over earlier ones.
Crowds: with crowd="ignore" iscrowd regions become 255 where no ordinary instance covers them (an
instance is the more precise annotation); with crowd="class" they are ordinary instances.
Images: `file_name` (or its base name) under --images, else under the JSON's folder or an images/
folder beside it (or beside an annotations/ folder holding the JSON).
"""
from __future__ import annotations

import json
from collections import Counter
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np
from pycocotools import mask as mask_utils

from pixelwise.data.importers.common import IGNORE, ImportOptions, Item, Sample, Source, image_size
from pixelwise.errors import DataError

MAX_OUTLINE = 1 << 20  # pixels of one polygon's outline (~50 MB in pycocotools); real outlines are thousands


def read_coco(src: Path, opts: ImportOptions, log: Callable[[str], None] = print) -> Source:
    """A COCO JSON file (or a folder holding exactly one) -> a Source with one item per image record."""
    path = find_json(src)
    data = load_json(path)
    roots = image_roots(path, opts.images)
    try:
        return list_items(data, path, roots, opts)
    except (KeyError, TypeError, AttributeError) as err:
        raise DataError(f"{path}: malformed COCO file ({type(err).__name__}: {err}); every image needs id, "
                        "file_name, height, width; every annotation image_id, category_id, segmentation") from None


def list_items(data: dict, path: Path, roots: list[Path], opts: ImportOptions) -> Source:
    """One item per well-formed image record. A malformed record or annotation fails alone: it is
    listed in `failed`, and the rest of the file is imported."""
    names, class_of = coco_classes(data["categories"], path)
    per_image, failed = group_annotations(data["annotations"], path)
    records = list(data["images"])
    ids = Counter(rec["id"] for rec in records if record_problem(rec) is None)
    items = []
    for i, rec in enumerate(records):
        why = record_problem(rec) or shared_id_problem(rec, ids)
        if why:
            failed.append((f"{path.name}: image record {i}", why))
            continue
        anns = per_image.pop(rec["id"], [])
        convert = partial(convert_image, rec, anns, class_of, roots, opts, path.name)
        key = str(PurePosixPath(rec["file_name"].replace("\\", "/")).with_suffix(""))
        items.append(Item(key, f"{path.name}: {rec['file_name']}", convert))
    # what is left belongs to no record (the annotations of a shared id failed with its records)
    failed += [(f"{path.name}: image id {image_id}", f"{len(anns)} annotations refer to image id {image_id}, "
                "which 'images' does not list") for image_id, anns in per_image.items() if image_id not in ids]
    return Source(names, items, reads=[path, *roots], failed=failed)


def record_problem(rec) -> str | None:
    """Why an image record cannot be imported, or None. Its size is checked against the image later."""
    if not isinstance(rec, dict):
        return f"is {type(rec).__name__}, not an object with id, file_name, height and width"
    if not isinstance(rec.get("id"), (int, str)):
        return f"has id {rec.get('id')!r}; every image record needs an integer id"
    if not isinstance(rec.get("file_name"), str) or not rec["file_name"].strip():
        return f"image id {rec['id']} has file_name {rec.get('file_name')!r}; it needs the image's file name"
    return None


def shared_id_problem(rec: dict, ids: Counter) -> str | None:
    if ids[rec["id"]] == 1:
        return None
    return (f"image id {rec['id']!r} is used by {ids[rec['id']]} image records, so their annotations cannot be "
            "told apart; give each image its own id")


def group_annotations(anns: list, path: Path) -> tuple[dict, list[tuple[str, str]]]:
    """-> (image id -> its annotations in file order, (item, reason) for each annotation no image can own)."""
    per_image: dict = {}
    failed = []
    for i, ann in enumerate(anns):
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        if not isinstance(image_id, (int, str)):
            failed.append((f"{path.name}: annotation {i}", f"has image_id {image_id!r}, so no image owns it; "
                           "every annotation needs the integer id of its image"))
            continue
        per_image.setdefault(image_id, []).append(ann)
    return per_image, failed


def find_json(src: Path) -> Path:
    if src.is_file():
        return src
    found = sorted(src.glob("*.json")) or sorted((src / "annotations").glob("*.json"))
    if len(found) != 1:
        listing = ", ".join(p.name for p in found) or "none"
        raise DataError(f"{src}: expected one COCO .json file here, found {listing}; give the JSON file itself")
    return found[0]


def load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read COCO JSON ({err})") from None
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data, dict) or k not in data]
    if missing:
        raise DataError(f"{path}: not a COCO instance file (no {', '.join(missing)}); "
                        "export 'COCO instances' / 'COCO 1.0' from your tool")
    return data


def coco_classes(categories: list[dict], path: Path) -> tuple[tuple[str, ...], dict[int, int]]:
    """-> (class names, category id -> class index). Class 0 is background (see the module docstring)."""
    cats = sorted(categories, key=lambda c: c["id"])
    background = [c for c in cats if c["name"].strip().lower() == "background"]
    if len(background) > 1:
        raise DataError(f"{path}: {len(background)} categories are named background; keep one")
    names, class_of = ["background"], {}
    for cat in cats:
        if cat in background:
            names[0], class_of[cat["id"]] = cat["name"], 0
        else:
            class_of[cat["id"]] = len(names)
            names.append(cat["name"])
    return tuple(names), class_of


def image_roots(json_path: Path, images: Path | None) -> list[Path]:
    if images is not None:
        if not images.is_dir():
            raise DataError(f"--images {images}: folder not found")
        return [images]
    here = json_path.parent
    candidates = [here, here / "images"]
    if here.name == "annotations":  # the COCO download layout: annotations/ beside the image folders
        candidates += [here.parent, here.parent / "images"]
    return [p for p in candidates if p.is_dir()]


def find_image(file_name: str, roots: list[Path], where: str) -> Path:
    rel = PurePosixPath(file_name.replace("\\", "/"))
    for root in roots:
        for candidate in (root / rel, root / rel.name):
            if candidate.is_file():
                return candidate
    looked = ", ".join(str(r) for r in roots) or "no folder"
    raise DataError(f"{where}: image not found (looked in {looked}); pass --images DIR, the folder holding it")


def convert_image(rec: dict, anns: list[dict], class_of: dict[int, int], roots: list[Path],
                  opts: ImportOptions, json_name: str) -> Sample:
    where = f"{json_name}: {rec['file_name']}"
    image = find_image(rec["file_name"], roots, where)
    h, w = record_size(rec, image, where)
    instances, crowds = [], []
    for ann in anns:
        region = decode(ann, h, w, where)
        cls = class_of.get(ann["category_id"])
        if cls is None:
            raise DataError(f"{where}: annotation {ann.get('id')} has category_id {ann['category_id']} "
                            f"({int(region.sum())} pixels), which is not among the categories "
                            f"(ids {sorted(class_of)}); add the category or drop the annotation")
        if ann.get("iscrowd") and opts.crowd == "ignore":
            crowds.append(region)
        else:
            instances.append((region, cls))
    return Sample(paint_instances(instances, (h, w), opts.overlap, crowds), image, image.suffix)


def record_size(rec: dict, image: Path, where: str) -> tuple[int, int]:
    """-> (height, width) of an image record, which must be its image's (as read_image shows it): every
    annotation is rasterised at this size, so a hostile 10^6 x 10^6 must not reach the allocation."""
    h, w = image_size(image, where)
    if (rec.get("height"), rec.get("width")) != (h, w):
        raise DataError(f"{where}: the image record says {rec.get('width')!r}x{rec.get('height')!r} but the image "
                        f"is {w}x{h} (width x height); correct its width and height in the JSON")
    return h, w


def check_polygon(polygon, h: int, w: int, where: str, ann_id) -> None:
    """Refuse a polygon pycocotools cannot rasterise safely. It rounds coordinates to C ints and needs ~50 bytes
    a pixel of outline: NaN hangs it, 1e9 crashes the process, and 20,000 points zig-zagging across a 3000-pixel
    image take 3 GB. Drawing tools keep points on the image; we allow an image size of slack around it."""
    xy = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(xy).all():
        raise DataError(f"{where}: annotation {ann_id} has a polygon with a NaN or infinite coordinate")
    outside = (xy < -np.array([w, h])) | (xy > 2 * np.array([w, h]))
    if outside.any():
        x, y = xy[outside.any(axis=1)][0]
        raise DataError(f"{where}: annotation {ann_id} has a polygon point at ({x:g}, {y:g}), more than an image "
                        f"width or height outside the {w}x{h} image")
    outline = float(np.abs(np.diff(xy, axis=0, append=xy[:1])).max(axis=1).sum())
    if outline > MAX_OUTLINE:
        raise DataError(f"{where}: annotation {ann_id} has a polygon whose outline is {outline:,.0f} pixels long "
                        f"(more than {MAX_OUTLINE:,}); that is not an object's outline: check the export")


def rle_string_runs(counts: str | bytes) -> list[int]:
    """COCO's compressed RLE string -> its run lengths. A run is stored in 5-bit groups, least significant
    first, each a character from '0' (48) on; 0x20 marks a group that another follows, 0x10 of the last group
    is the sign. From the fourth run on, a run is stored as its difference from the run two before it."""
    text = counts.decode("ascii") if isinstance(counts, bytes) else counts
    if not isinstance(text, str) or any(not "0" <= ch <= "o" for ch in text):
        raise ValueError(f"counts {str(counts)[:20]!r} are not a COCO compressed RLE string")
    runs, i = [], 0
    while i < len(text):
        value, shift, more = 0, 0, True
        while more:
            if i == len(text):
                raise ValueError("the RLE counts string ends inside a run")
            group = ord(text[i]) - 48
            value |= (group & 0x1F) << shift
            more, i, shift = group & 0x20, i + 1, shift + 5
            if not more and group & 0x10:
                value -= 1 << shift
        runs.append(value + runs[-2] if len(runs) > 2 else value)
    return runs


def check_runs(runs: list, h: int, w: int, where: str, ann_id) -> None:
    """RLE runs must be counts that add up to the image: pycocotools decodes runs that fall short into a
    mask whose remaining pixels are uninitialised memory, and runs past the end out of bounds."""
    if not all(isinstance(r, int) and r >= 0 for r in runs) or sum(runs) != h * w:
        total = sum(r for r in runs if isinstance(r, (int, float)))
        raise DataError(f"{where}: annotation {ann_id} has an RLE whose runs cover {total:g} pixels, not the "
                        f"image's {h}x{w} = {h * w}; re-export the annotation")


def decode(ann: dict, h: int, w: int, where: str) -> np.ndarray:
    """One annotation's segmentation (polygons, or RLE compressed or not) -> HxW bool."""
    seg = ann["segmentation"]
    try:
        if isinstance(seg, list):  # polygons: one RLE each, merged into one region
            if not seg or any(len(polygon) < 6 for polygon in seg):
                raise DataError(f"{where}: annotation {ann.get('id')} has no polygon or one with fewer than 3 "
                                "points; a box-only annotation has no pixels to import")
            for polygon in seg:
                check_polygon(polygon, h, w, where, ann.get("id"))
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
        elif isinstance(seg.get("counts"), list):  # uncompressed RLE
            check_runs(seg["counts"], h, w, where, ann.get("id"))
            rle = mask_utils.frPyObjects(seg, h, w)
        else:
            check_runs(rle_string_runs(seg["counts"]), h, w, where, ann.get("id"))
            rle = seg
        if list(rle["size"]) != [h, w]:
            raise DataError(f"{where}: annotation {ann.get('id')} is an RLE of size {rle['size']} "
                            f"(height, width) but the image record says {[h, w]}")
        return mask_utils.decode(rle).astype(bool)
    except DataError:
        raise
    except Exception as err:  # pycocotools raises bare Exceptions and TypeErrors for bad input
        raise DataError(f"{where}: annotation {ann.get('id')} has an unreadable segmentation ({err}); "
                        "polygons need at least 3 points, RLE needs 'size' and 'counts'") from None


def paint_instances(instances: list[tuple[np.ndarray, int]], shape: tuple[int, int], overlap: str,
                    crowds: list[np.ndarray] = ()) -> np.ndarray:
    """Instance regions (HxW bool, class) in order -> HxW uint8 labels; 0 where nothing paints.

    overlap="ignore": a pixel claimed by two different classes becomes 255 (and stays so);
    overlap="last": the later region wins. Crowd regions become 255 where no instance lies.
    """
    labels = np.zeros(shape, dtype=np.uint8)
    covered = np.zeros(shape, dtype=bool)
    for region, cls in instances:
        if overlap == "last":
            labels[region] = cls
        else:
            clash = region & covered & (labels != cls)
            labels[region & ~covered] = cls
            labels[clash] = IGNORE
        covered |= region
    for region in crowds:
        labels[region & ~covered] = IGNORE
    return labels


def write_synthetic_coco(n_images: int, out_dir: str | Path, size: tuple[int, int] = (360, 480),
                         seed: int = 0) -> Path:
    """A COCO dataset of `n_images` (height, width) = `size` JPEGs with random polygon, RLE and crowd
    annotations over 5 categories, for tests and benchmarks. -> the JSON's path (out_dir/annotations.json)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    h, w = size
    cats = [{"id": i, "name": n} for i, n in zip((1, 2, 3, 5, 8), ("cat", "dog", "car", "tree", "road"))]
    images, anns = [], []
    for i in range(n_images):
        name = f"{i:06d}.jpg"
        img = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(img)
        for j in range(int(rng.integers(1, 5))):
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(10, min(h, w) / 3)
            angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 8))))
            poly = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1).clip(0, [w - 1, h - 1])
            draw.polygon([tuple(p) for p in poly], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
            seg: list | dict = [poly.round(1).ravel().tolist()]
            if j == 1:  # every second shape as compressed RLE, as COCO stores crowds and some exports
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
                seg = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(rng.choice([c["id"] for c in cats])),
                         "segmentation": seg, "iscrowd": int(j == 3), "area": 0.0, "bbox": [0, 0, 0, 0]})
        img.save(out_dir / "images" / name, quality=90)
        images.append({"id": i, "file_name": name, "height": h, "width": w})
    path = out_dir / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path
