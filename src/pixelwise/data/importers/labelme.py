"""LabelMe JSON files -> class-index masks, rasterised with PIL the way labelme draws its shapes.

Shapes paint in file order, later over earlier, as labelme composes them:
  polygon              the filled outline (3 points or more)
  rectangle            two opposite corners, filled, both corners included
  circle               centre and a point on the circle: a filled disk of that radius
  line, linestrip      `line_width` pixels wide (labelme's default is 10)
  point                a filled disk of radius 5
  mask                 a base64 PNG patch whose top-left and bottom-right pixels are the two points
Labels: `__ignore__` -> 255; `_background_` (or `background`) -> class 0, written to classes.txt as
"background". Classes come from `labels` (labelme's labels.txt: one label a line, the
`__ignore__` and `_background_` lines optional) or else background plus the sorted labels found.
The image is `imagePath` beside the JSON, or the embedded `imageData` when that file is missing.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from pixelwise.data.importers.common import IGNORE, ImportOptions, Item, Sample, Source, image_size, image_suffix
from pixelwise.data.io import load_image
from pixelwise.errors import DataError

IGNORE_LABEL = "__ignore__"
BACKGROUND_LABELS = ("_background_", "background")
POINT_RADIUS = 5  # labelme's point_size
MAX_RADIUS = 1 << 16  # PIL's ellipse draws up to here reliably; a circle this big on a real image covers it


def read_labelme(src: Path, opts: ImportOptions, log: Callable[[str], None] = print) -> Source:
    """A folder of LabelMe .json files (searched recursively) -> a Source with one item per file."""
    if not src.is_dir():
        raise DataError(f"{src}: not a folder; --from labelme takes the folder holding the .json files")
    files = sorted(p for p in src.rglob("*.json") if not any(part.startswith(".") for part in p.relative_to(src).parts))
    if not files:
        raise DataError(f"{src}: no .json files; save LabelMe annotations here first")
    found, failed, readable = set(), [], []
    for path in files:
        try:
            found |= {shape_label(s, path) for s in load_labelme(path)["shapes"]}
            readable.append(path)
        except DataError as err:
            failed.append((str(path), str(err)))
    if opts.labels:
        names = read_labels(opts.labels)
    else:
        names = ("background", *sorted(found - {IGNORE_LABEL, *BACKGROUND_LABELS}))
    class_of = {name: i for i, name in enumerate(names)} | {IGNORE_LABEL: IGNORE, **dict.fromkeys(BACKGROUND_LABELS, 0)}
    labels_file = opts.labels.name if opts.labels else None
    items = [Item(str(PurePosixPath(path.relative_to(src).as_posix()).with_suffix("")), str(path),
                  partial(convert_file, path, class_of, labels_file, opts.line_width)) for path in readable]
    return Source(names, items, reads=[src], failed=failed)


def load_labelme(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise DataError(f"{path}: not a LabelMe file (no 'shapes' list)")
    return data


def shape_label(shape: dict, path: Path) -> str:
    label = shape.get("label") if isinstance(shape, dict) else None
    if not isinstance(label, str) or not label:
        raise DataError(f"{path}: a shape has no label; label every shape in labelme")
    return label


def read_labels(path: Path) -> tuple[str, ...]:
    """labelme's labels.txt -> class names with "background" first. `__ignore__` is not a class."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as err:
        raise DataError(f"--labels {path}: cannot read ({err})") from None
    names = [line for line in lines if line != IGNORE_LABEL]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise DataError(f"--labels {path}: {', '.join(twice)} listed twice; list each label once")
    backgrounds = [n for n in names if n in BACKGROUND_LABELS]
    if backgrounds and names[0] not in BACKGROUND_LABELS:
        raise DataError(f"--labels {path}: {backgrounds[0]} must be the first label (class 0)")
    if len(backgrounds) > 1:
        raise DataError(f"--labels {path}: lists both _background_ and background; keep one")
    return ("background", *[n for n in names if n not in BACKGROUND_LABELS])


def convert_file(path: Path, class_of: dict[str, int], labels_file: str | None, line_width: int) -> Sample:
    data = load_labelme(path)
    image, suffix = find_image(data, path)
    h, w = image_size(image, str(path))
    declared = data.get("imageHeight"), data.get("imageWidth")
    # the shapes were drawn on the image as shown; a JSON that says otherwise belongs to another image
    if all(declared) and declared != (h, w):
        raise DataError(f"{path}: the annotation is {declared[1]!r}x{declared[0]!r} but its image is {w}x{h} "
                        "(width x height); the annotation must be drawn on this image")
    labels = np.zeros((h, w), dtype=np.uint8)
    for shape in data["shapes"]:
        region = shape_to_region(shape, labels.shape, line_width, path)
        label = shape_label(shape, path)
        if label not in class_of:
            raise DataError(f"{path}: label '{label}' ({int(region.sum())} pixels) is not in --labels "
                            f"{labels_file}; add it there or fix the label")
        labels[region] = class_of[label]
    return Sample(labels, image, suffix)


def find_image(data: dict, path: Path) -> tuple[Path | bytes, str]:
    """The image beside the JSON, or the embedded imageData when the file is missing."""
    rel = data.get("imagePath") or ""
    if not isinstance(rel, str):
        raise DataError(f"{path}: imagePath is {rel!r}, not a file name")
    rel = rel.replace("\\", "/")
    if rel:  # as saved, else beside the JSON: Windows and moved folders break the saved relative path
        for image in (path.parent / rel, path.parent / PurePosixPath(rel).name):
            if image.is_file():
                return image, image.suffix
    if data.get("imageData"):
        try:
            raw = base64.b64decode(data["imageData"], validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise DataError(f"{path}: imageData is not valid base64") from None
        return raw, image_suffix(raw, f"{path} (imageData)")
    raise DataError(f"{path}: image '{rel}' not found beside the JSON and no imageData is embedded; "
                    "put the image next to the JSON or save with 'Save With Image Data'")


def shape_to_region(shape: dict, hw: tuple[int, int], line_width: int, path: Path) -> np.ndarray:
    """One labelme shape -> HxW bool, drawn as labelme's shape_to_mask draws it."""
    kind = shape.get("shape_type") or "polygon"  # old files leave shape_type null for polygons
    xy = [(float(x), float(y)) for x, y in shape["points"]]
    check_points(xy, hw, shape, path)
    if kind == "mask":
        return place_patch(shape, xy, hw, path)
    need = {"rectangle": 2, "circle": 2, "line": 2, "point": 1}
    if kind in need and len(xy) != need[kind]:
        raise DataError(f"{path}: {kind} shape '{shape.get('label')}' has {len(xy)} points, expected {need[kind]}")
    if kind in ("polygon", "linestrip") and len(xy) < (3 if kind == "polygon" else 2):
        raise DataError(f"{path}: {kind} shape '{shape.get('label')}' has only {len(xy)} points")
    canvas = Image.new("L", (hw[1], hw[0]), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == "polygon":
        draw.polygon(xy, outline=1, fill=1)
    elif kind == "rectangle":
        (x0, y0), (x1, y1) = xy  # corners may come in any order; PIL wants top-left first
        draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=1, fill=1)
    elif kind == "circle":
        (cx, cy), (px, py) = xy
        r = math.hypot(cx - px, cy - py)
        if r >= max(math.hypot(x - cx, y - cy) for x in (0, hw[1]) for y in (0, hw[0])) + 1:
            return np.ones(hw, dtype=bool)  # covers every pixel; PIL's ellipse hangs on some radii near 10^6
        if r > MAX_RADIUS:
            raise DataError(f"{path}: circle '{shape.get('label')}' has radius {r:g}, more than the {MAX_RADIUS} "
                            "pixels pixelwise can draw")
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=1, fill=1)
    elif kind in ("line", "linestrip"):
        draw.line(xy, fill=1, width=line_width)
    elif kind == "point":
        (cx, cy), r = xy[0], POINT_RADIUS
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=1, fill=1)
    else:
        raise DataError(f"{path}: shape type '{kind}' is not one labelme rasterises (polygon, rectangle, circle, "
                        "line, linestrip, point, mask)")
    return np.asarray(canvas, dtype=bool)


def check_points(xy: list[tuple[float, float]], hw: tuple[int, int], shape: dict, path: Path) -> None:
    """Refuse points PIL would draw wrongly without a word: NaN and infinite coordinates draw stray pixels,
    and beyond about 2^31 they wrap around. Tools keep points on the image; an image size of slack is allowed."""
    h, w = hw
    for x, y in xy:
        if not (math.isfinite(x) and math.isfinite(y)):
            raise DataError(f"{path}: shape '{shape.get('label')}' has a point at ({x}, {y}); coordinates must be "
                            "finite numbers")
        if not (-w <= x <= 2 * w and -h <= y <= 2 * h):
            raise DataError(f"{path}: shape '{shape.get('label')}' has a point at ({x:g}, {y:g}), more than an "
                            f"image width or height outside the {w}x{h} image")


def place_patch(shape: dict, xy: list[tuple[float, float]], hw: tuple[int, int], path: Path) -> np.ndarray:
    """A mask shape: its PNG patch spans the pixels from point 1 to point 2, both included."""
    if len(xy) != 2 or not shape.get("mask"):
        raise DataError(f"{path}: mask shape '{shape.get('label')}' needs two points and a 'mask' PNG")
    try:
        raw = base64.b64decode(shape["mask"], validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise DataError(f"{path}: mask shape '{shape.get('label')}' is not valid base64") from None
    patch = np.asarray(load_image(raw, f"{path} (mask of '{shape.get('label')}')"))
    patch = patch.any(axis=2) if patch.ndim == 3 else patch.astype(bool)
    (x0, y0), (x1, y1) = (tuple(int(v) for v in p) for p in xy)  # labelme truncates to int
    region = np.zeros(hw, dtype=bool)
    window = region[y0:y1 + 1, x0:x1 + 1]
    if min(x0, y0) < 0 or window.shape != patch.shape:
        raise DataError(f"{path}: mask shape '{shape.get('label')}' is {patch.shape[1]}x{patch.shape[0]} but its "
                        f"points ({x0}, {y0})-({x1}, {y1}) span {x1 - x0 + 1}x{y1 - y0 + 1} inside a "
                        f"{hw[1]}x{hw[0]} image")
    window[...] = patch
    return region
