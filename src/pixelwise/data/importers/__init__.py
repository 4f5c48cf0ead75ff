"""Annotation exports from other tools -> the pixelwise folder layout.

`import_dataset(source, src, dst)` reads a COCO instance JSON, a folder of LabelMe JSON files,
a CVAT "Segmentation mask 1.1" export, colour-coded RGB masks or Cityscapes, and writes

    dst/images/<stem>.<ext>    the images, copied byte for byte
    dst/masks/<stem>.png       palette PNGs of class indices, 255 = ignore
    dst/classes.txt            one class name a line, line n = label n
    dst/splits/<split>.txt     stems, where the source has splits

Each source module turns its input into a `Source`: the class names and one `Item` per image,
whose `convert()` does the decoding. This module writes every source the same way: an item that
fails is reported and skipped, the output is built in a temporary sibling folder and swapped in
only at the end, and the source is only ever read.
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np
from tqdm import tqdm

from pixelwise.data.formats import SPLITS, load_spec
from pixelwise.data.importers.common import (CONVERT_ERRORS, CROWDS, IGNORE, LINE_WIDTH, MAX_CLASSES, OVERLAPS, SOURCES,
                                             ImportOptions, ImportSummary, Sample, Source, image_size)
from pixelwise.data.io import IMAGE_SUFFIXES, default_palette, write_label_png
from pixelwise.errors import DataError


def import_dataset(source: str, src: str | Path, dst: str | Path, *, overwrite: bool = False,
                   overlap: str = "ignore", crowd: str = "ignore", palette: str | Path | None = None,
                   labels: str | Path | None = None, images: str | Path | None = None,
                   line_width: int = LINE_WIDTH, log: Callable[[str], None] = print) -> ImportSummary:
    """Convert `src` (a `source` export) into the pixelwise folder layout at `dst`.

    Items that cannot be converted are listed in the summary; the rest are imported. Raises
    DataError when nothing can be imported, for bad arguments, or for a non-empty `dst` without
    `overwrite` (with it, `dst` is replaced only once the new copy is complete).
    """
    opts = ImportOptions(overlap, crowd, _path(palette), _path(labels), _path(images), line_width)
    check_arguments(source, opts)
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise DataError(f"{src}: not found; give the {source} export to import")
    check_destination(dst, overwrite)
    found = _reader(source)(src, opts, log)
    try:
        check_clear_of_source(dst, [src, *found.reads])
        log(f"importing {len(found.items)} {source} items, {len(found.class_names)} classes -> {dst}")
        return write_dataset(source, found, dst, log)
    finally:
        found.close()


def _path(value: str | Path | None) -> Path | None:
    return None if value is None else Path(value)


def _reader(source: str) -> Callable[[Path, ImportOptions, Callable], Source]:
    # Imported on demand: cityscapes needs an optional package, and none of them is needed until used.
    if source == "coco":
        from pixelwise.data.importers.coco import read_coco
        return read_coco
    if source == "labelme":
        from pixelwise.data.importers.labelme import read_labelme
        return read_labelme
    if source == "cvat":
        from pixelwise.data.importers.cvat import read_cvat
        return read_cvat
    from pixelwise.data.importers.colour import read_cityscapes, read_rgb
    return read_rgb if source == "rgb" else read_cityscapes


def check_arguments(source: str, opts: ImportOptions) -> None:
    if source not in SOURCES:
        raise DataError(f"unknown import source {source!r}; choose one of {', '.join(SOURCES)}")
    if opts.overlap not in OVERLAPS:
        raise DataError(f"overlap={opts.overlap!r}: choose 'ignore' (overlaps become 255) or 'last' (later wins)")
    if opts.crowd not in CROWDS:
        raise DataError(f"crowd={opts.crowd!r}: choose 'ignore' (crowd regions become 255) or 'class'")
    if opts.line_width < 1:
        raise DataError(f"line width {opts.line_width}: lines need a width of at least 1 pixel")
    applies = {"palette": ("rgb",), "labels": ("labelme",), "images": ("coco", "cvat", "rgb")}
    for name, sources in applies.items():
        if getattr(opts, name) is not None and source not in sources:
            raise DataError(f"--{name} applies to --from {' or '.join(sources)}, not to --from {source}")


def check_destination(dst: Path, overwrite: bool) -> None:
    if dst.exists() and not dst.is_dir():
        raise DataError(f"{dst}: exists and is a file; give a folder for the imported dataset")
    if dst.is_dir() and any(dst.iterdir()) and not overwrite:
        raise DataError(f"{dst}: folder exists and is not empty; choose a new folder or pass --overwrite "
                        "to replace it")


def check_clear_of_source(dst: Path, reads: list[Path]) -> None:
    """Refuse a `dst` that is, holds or sits inside anything the import reads: replacing it would
    delete the source, and writing into it would change the source."""
    out = dst.resolve()
    for path in reads:
        path = path.resolve()
        if out == path or out in path.parents or (path.is_dir() and path in out.parents):
            raise DataError(f"{dst}: the output overlaps the source {path}; write the import to a separate folder")


def write_dataset(source: str, found: Source, dst: Path, log: Callable[[str], None]) -> ImportSummary:
    """Convert and write every item into a temporary sibling of `dst`, then swap it in."""
    names = found.class_names
    if not 0 < len(names) <= MAX_CLASSES:
        raise DataError(f"{source}: {len(names)} classes; a class-index PNG holds 1 to {MAX_CLASSES} "
                        f"(255 is the ignore value)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.importing-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()  # not mkdtemp: its 0700 mode would stay on the dataset after the swap
    try:
        written, splits, failed = write_items(source, found, tmp)
        if not written:
            first = "; ".join(f"{item}: {why}" for item, why in failed[:3])
            raise DataError(f"{source}: no item could be imported ({len(failed)} failed). First: {first}")
        (tmp / "classes.txt").write_text("".join(f"{name}\n" for name in names))
        counts = write_splits(tmp, splits, log)
        load_spec(tmp, "folder")  # the result must load as a dataset before it replaces anything
        swap_into_place(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ImportSummary(source, dst, written, written, names, counts, failed)


def write_items(source: str, found: Source, root: Path) -> tuple[int, dict[str | None, list[str]], list]:
    """Convert each item and write its image and mask under `root`. -> (items written, split -> stems,
    (item, reason) for each item that failed)."""
    (root / "images").mkdir()
    (root / "masks").mkdir()
    num_classes, palette = len(found.class_names), default_palette(len(found.class_names))
    failed, splits, used = list(found.failed), {}, {}
    stems = assign_stems([item.key for item in found.items])
    bar = tqdm(list(zip(found.items, stems)), desc=f"import {source}", unit="img", leave=False,
               disable=len(found.items) < 50)
    for item, stem in bar:
        if stem in used:
            failed.append((item.name, f"its output name '{stem}' is already taken by {used[stem]}; rename one"))
            continue
        try:
            sample = item.convert()
            check_sample(sample, num_classes, item.name)
        except CONVERT_ERRORS as err:
            failed.append((item.name, reason(err)))
            continue
        used[stem] = item.name
        write_sample(sample, root, stem, palette)
        splits.setdefault(item.split, []).append(stem)
    return len(used), splits, failed


def reason(err: Exception) -> str:
    if isinstance(err, DataError):
        return str(err)
    return f"malformed annotation ({type(err).__name__}: {err})"


def assign_stems(keys: list[str]) -> list[str]:
    """Output stems: the base name where it is unique in the source, else the whole key with '/' -> '_'
    (two `0001` images in folders cam1/ and cam2/ become cam1_0001 and cam2_0001)."""
    base = [PurePosixPath(key).name for key in keys]
    seen: dict[str, int] = {}
    for name in base:
        seen[name] = seen.get(name, 0) + 1
    return [name if seen[name] == 1 else key.strip("/").replace("/", "_") for name, key in zip(base, keys)]


def check_sample(sample: Sample, num_classes: int, name: str) -> None:
    if sample.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(f"{name}: image format {sample.suffix!r} is not one pixelwise reads "
                        f"({', '.join(IMAGE_SUFFIXES)}); convert the image first")
    mask = sample.mask
    bad = (mask >= num_classes) & (mask != IGNORE)
    if bad.any():  # a reader bug, not a user error, but never write a mask the dataset would refuse
        raise DataError(f"{name}: converted mask holds label {int(mask[bad][0])} but there are {num_classes} classes")
    h, w = image_size(sample.image, name)
    if mask.shape != (h, w):
        raise DataError(f"{name}: the annotation is {mask.shape[1]}x{mask.shape[0]} but its image is {w}x{h} "
                        "(width x height); the annotation must be drawn on this image")


def write_sample(sample: Sample, root: Path, stem: str, palette: np.ndarray) -> None:
    image = root / "images" / f"{stem}{sample.suffix}"
    if isinstance(sample.image, Path):
        shutil.copyfile(sample.image, image)
    else:
        image.write_bytes(sample.image)
    write_label_png(root / "masks" / f"{stem}.png", sample.mask, palette)


def write_splits(root: Path, splits: dict[str | None, list[str]], log: Callable[[str], None]) -> dict[str, int]:
    """splits/<name>.txt for each split that has items. Items of a split source that belong to no
    split go to train: the folder layout only sees listed images."""
    unsplit = splits.pop(None, [])
    if splits and unsplit:
        log(f"{len(unsplit)} items are in no train/val/test split; adding them to train")
        splits["train"] = splits.get("train", []) + unsplit
    if not splits:
        return {}
    (root / "splits").mkdir()
    for name in SPLITS:
        if splits.get(name):
            (root / "splits" / f"{name}.txt").write_text("".join(f"{stem}\n" for stem in splits[name]))
    return {name: len(splits[name]) for name in SPLITS if splits.get(name)}


def swap_into_place(tmp: Path, dst: Path) -> None:
    """Rename the finished `tmp` to `dst`; an existing `dst` moves aside first and is deleted last."""
    if not dst.exists():
        os.replace(tmp, dst)
        return
    old = dst.with_name(f".{dst.name}.replaced-{uuid.uuid4().hex[:8]}")
    os.replace(dst, old)
    try:
        os.replace(tmp, dst)
    except OSError:
        os.replace(old, dst)
        raise
    shutil.rmtree(old)


# --- helpers the source modules share -------------------------------------------------------------
