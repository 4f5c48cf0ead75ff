"""Colour-coded masks (`--from rgb`) and Cityscapes label-id masks -> class-index masks.

rgb: SRC holds images/ and masks/ (or labels/), or SRC is the mask folder and --images names the
image folder. Masks pair with images by stem. The palette is --palette, else SRC/palette.txt or
SRC/labelmap.txt, in one of two forms:
  `name R G B` a line (`#` starts a comment): classes in line order, class 0 first;
  a CVAT labelmap.txt (`name:R,G,B:parts:actions`): the label coloured 0,0,0 is class 0, the
  others follow in file order.
A palette entry named `ignore`, `void` or `__ignore__` (any case) is not a class: its colour
becomes 255; several such colours may be given. SRC/splits/{train,val,test}.txt, when present,
give the splits.

cityscapes: leftImg8bit/<split>/<city>/*_leftImg8bit.png with gtFine/<split>/<city>/
*_gtFine_labelIds.png; ids become trainIds through cityscapesScripts' label table (trainId 255 or
-1 -> 255), the 19 trainId classes are the classes, the split folders the splits.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from pixelwise.data.formats import SPLITS
from pixelwise.data.importers.common import IGNORE, ImportOptions, Item, Sample, Source, read_colour_mask
from pixelwise.data.io import IMAGE_SUFFIXES, load_image
from pixelwise.errors import DataError

IGNORE_NAMES = ("ignore", "void", "__ignore__")
MASK_FOLDERS = ("masks", "labels")

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class ColourTable:
    class_names: tuple[str, ...]
    labels: dict[RGB, int]  # colour -> class index or 255
    source: str  # the file it came from, for messages


def is_ignore(name: str) -> bool:
    return name.strip().lower() in IGNORE_NAMES


def build_table(entries: list[tuple[str, RGB]], source: str) -> ColourTable:
    """(name, colour) in class order -> a ColourTable; ignore-named entries map to 255."""
    labels: dict[RGB, int] = {}
    names: list[str] = []
    for name, colour in entries:
        if colour in labels:
            raise DataError(f"{source}: colour {colour} is given to two entries ({name} and another); "
                            "give every class its own colour")
        if is_ignore(name):
            labels[colour] = IGNORE
        else:
            labels[colour] = len(names)
            names.append(name)
    if not names:
        raise DataError(f"{source}: no classes; list one class a line")
    return ColourTable(tuple(names), labels, source)


def parse_colour(text: str, where: str) -> RGB:
    try:
        values = tuple(int(v) for v in text.replace(",", " ").split())
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0 <= v <= 255 for v in values):
        raise DataError(f"{where}: colour {text.strip()!r} is not three numbers 0-255 (R G B)")
    return values  # type: ignore[return-value]


def parse_labelmap(text: str, source: str) -> ColourTable:
    """CVAT's labelmap.txt (`name:R,G,B:parts:actions`, `#` comments) -> ColourTable, the 0,0,0 label first."""
    entries = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) < 2 or not fields[0].strip():
            raise DataError(f"{source} line {n}: {line.strip()!r} is not name:R,G,B:parts:actions")
        entries.append((fields[0].strip(), parse_colour(fields[1], f"{source} line {n}")))
    black = [e for e in entries if e[1] == (0, 0, 0) and not is_ignore(e[0])]
    return build_table(black + [e for e in entries if e not in black], source)


def parse_palette(path: Path) -> ColourTable:
    """A `name R G B` palette file or a CVAT labelmap.txt -> ColourTable (see the module docstring)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the palette ({err})") from None
    lines = [(n, line.split("#", 1)[0].strip()) for n, line in enumerate(text.splitlines(), 1)]
    lines = [(n, line) for n, line in lines if line]
    if lines and ":" in lines[0][1]:
        return parse_labelmap(text, str(path))
    entries = []
    for n, line in lines:
        words = line.split()
        if len(words) < 4:
            raise DataError(f"{path} line {n}: {line!r} is not 'name R G B'")
        entries.append((" ".join(words[:-3]), parse_colour(" ".join(words[-3:]), f"{path} line {n}")))
    return build_table(entries, str(path))


def colours_to_labels(rgb: np.ndarray, table: ColourTable, where: str) -> np.ndarray:
    """HxWx3 uint8 colours -> HxW uint8 labels. A colour the table lacks is an error naming the colour
    and its pixel count: mapping it to 0 would silently teach the model that it is background."""
    keys = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    colours, inverse, counts = np.unique(keys.ravel(), return_inverse=True, return_counts=True)
    rgbs = [(int(k) >> 16, (int(k) >> 8) & 255, int(k) & 255) for k in colours]
    values = np.array([table.labels.get(c, -1) for c in rgbs])
    unknown = [f"{rgbs[i]} ({counts[i]} pixels)" for i in np.flatnonzero(values < 0)]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise DataError(f"{where}: colour {shown} is in no class of {table.source}; add the colour to the palette "
                        "(or an ignore entry), or fix the mask")
    return values[inverse].reshape(keys.shape).astype(np.uint8)


def convert_colour_mask(mask: Path | bytes, image: Path | bytes, suffix: str, table: ColourTable,
                        where: str) -> Sample:
    return Sample(colours_to_labels(read_colour_mask(mask, where), table, where), image, suffix)


# --- rgb -------------------------------------------------------------------------------------------

def read_rgb(src: Path, opts: ImportOptions, log: Callable[[str], None] = print) -> Source:
    mask_dir, image_dir = rgb_folders(src, opts.images)
    table = parse_palette(find_palette(src, opts.palette))
    images = files_by_stem(image_dir)
    splits = read_split_lists(src / "splits")
    items, failed = [], []
    for mask in sorted(p for p in mask_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        where = str(mask.relative_to(src) if src in mask.parents else mask)
        image = images.get(mask.stem)
        if image is None:
            failed.append((where, f"no image named {mask.stem}.* in {image_dir}"))
            continue
        items.append(Item(mask.stem, where, partial(convert_colour_mask, mask, image, image.suffix, table, where),
                          splits.get(mask.stem)))
    if not items and not failed:
        raise DataError(f"{mask_dir}: no mask images here")
    return Source(table.class_names, items, reads=[src, mask_dir, image_dir], failed=failed)


def rgb_folders(src: Path, images: Path | None) -> tuple[Path, Path]:
    """-> (mask folder, image folder) for `--from rgb`."""
    if not src.is_dir():
        raise DataError(f"{src}: not a folder; --from rgb takes a folder holding images/ and masks/")
    masks = next((src / m for m in MASK_FOLDERS if (src / m).is_dir()), None)
    if images is not None:
        if not images.is_dir():
            raise DataError(f"--images {images}: folder not found")
        return masks or src, images
    if masks is None or not (src / "images").is_dir():
        raise DataError(f"{src}: expected images/ and masks/ folders here; or give the mask folder as SRC and "
                        "the image folder with --images")
    return masks, src / "images"


def find_palette(src: Path, palette: Path | None) -> Path:
    if palette is not None:
        if not palette.is_file():
            raise DataError(f"--palette {palette}: file not found")
        return palette
    for name in ("palette.txt", "labelmap.txt"):
        if (src / name).is_file():
            return src / name
    raise DataError(f"{src}: no palette; pass --palette FILE with 'name R G B' lines (or a CVAT labelmap.txt)")


def files_by_stem(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES
            and not p.name.startswith(".")}


def read_split_lists(folder: Path) -> dict[str, str]:
    """splits/{train,val,test}.txt -> stem -> split; empty when there are none."""
    return {stem: split for split in SPLITS if (folder / f"{split}.txt").is_file()
            for stem in (folder / f"{split}.txt").read_text().split()}


# --- cityscapes ------------------------------------------------------------------------------------

def trainid_table() -> tuple[tuple[str, ...], np.ndarray]:
    """-> (the 19 trainId class names, a 256-entry id -> trainId table, -1 for ids the table lacks)."""
    try:
        from cityscapesscripts.helpers.labels import labels
    except ImportError:
        raise DataError("--from cityscapes needs cityscapesScripts' label table: pip install pixelwise[cityscapes]") \
            from None
    lut = np.full(256, -1, dtype=np.int16)
    names: dict[int, str] = {}
    for label in labels:
        if 0 <= label.id < 256:
            lut[label.id] = IGNORE if label.trainId in (255, -1) else label.trainId
        if label.trainId not in (255, -1):
            names.setdefault(label.trainId, label.name)
    return tuple(names[i] for i in sorted(names)), lut


def read_cityscapes(src: Path, opts: ImportOptions, log: Callable[[str], None] = print) -> Source:
    names, lut = trainid_table()
    left, gt = src / "leftImg8bit", src / "gtFine"
    if not left.is_dir() or not gt.is_dir():
        raise DataError(f"{src}: expected leftImg8bit/ and gtFine/ (the Cityscapes layout); "
                        "unpack leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip here")
    items, failed = [], []
    for split in SPLITS:
        for image in sorted((left / split).glob("*/*_leftImg8bit.png")):
            prefix = image.name[: -len("_leftImg8bit.png")]
            mask = gt / split / image.parent.name / f"{prefix}_gtFine_labelIds.png"
            if not mask.is_file():
                failed.append((str(image.relative_to(src)), f"no label file {mask.relative_to(src)}"))
                continue
            where = str(mask.relative_to(src))
            items.append(Item(prefix, where, partial(convert_label_ids, mask, image, lut, where), split))
    if not items and not failed:
        raise DataError(f"{left}: no */*_leftImg8bit.png images under train/, val/ or test/")
    return Source(names, items, reads=[src], failed=failed)


def convert_label_ids(mask: Path, image: Path, lut: np.ndarray, where: str) -> Sample:
    img = load_image(mask, where)  # decoded now: a truncated file is a DataError, not an OSError later
    if img.mode not in ("L", "P", "I", "I;16"):
        raise DataError(f"{where}: mode {img.mode}; a *_gtFine_labelIds.png holds one label id per pixel")
    ids = np.asarray(img).astype(np.int64)
    if ids.min() < 0 or ids.max() > 255:
        raise DataError(f"{where}: label ids {ids.min()}..{ids.max()} outside 0-255")
    train = lut[ids]
    unknown, counts = np.unique(ids[train < 0], return_counts=True)
    if unknown.size:
        found = ", ".join(f"{i} ({c} pixels)" for i, c in zip(unknown, counts))
        raise DataError(f"{where}: label id {found} is not in cityscapesScripts' label table; fix the mask")
    return Sample(train.astype(np.uint8), image, image.suffix)
