"""Contact sheets: every image of a dataset with its mask over it, to see the labels at a glance.

The sheet is a legend strip (one swatch and name per class) above a grid of cells. Each cell is
`cell` x `cell` pixels of thumbnail (aspect kept, centred on a dark background) over a label strip
holding the file stem and an optional caption line (an IoU, say). Drawn with PIL alone.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pixelwise.data.formats import Pair, load_spec
from pixelwise.data.io import overlay, read_image, read_mask, save_png_atomic
from pixelwise.errors import DataError

BACKGROUND = (32, 32, 32)
TEXT = (235, 235, 235)
LINE_H = 15  # one line of the 12-pixel default font
LABEL_H = 2 * LINE_H + 4  # the stem, then the caption
LEGEND_ROW_H = 20
LEGEND_ENTRY_W = 170  # swatch + a class name of ~20 characters
SWATCH = 14
MAX_COLUMNS = 10


def _font() -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=12)  # scalable, with accents, where FreeType is built in
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def default_columns(count: int) -> int:
    """A roughly square grid, never wider than MAX_COLUMNS cells."""
    return max(1, min(count, MAX_COLUMNS, math.ceil(math.sqrt(count))))


def thumbnail(image: np.ndarray, mask: np.ndarray, cell: int) -> tuple[np.ndarray, np.ndarray]:
    """Scale HxWx3 image and HxW mask so the longer side is `cell`: smooth for the image, nearest for the mask."""
    h, w = mask.shape
    scale = cell / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return image, mask
    small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))
    # labels are not numbers to average: nearest keeps every pixel a real class
    labels = np.asarray(Image.fromarray(mask.astype(np.int32)).resize(size, Image.Resampling.NEAREST))
    return small, labels.astype(mask.dtype)


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, font) -> str:
    """`text` cut (with '...') to fit `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def _legend_entries(palette: np.ndarray, class_names, ignore_index: int | None) -> list[tuple[str, tuple]]:
    entries = [(name, tuple(int(c) for c in palette[k])) for k, name in enumerate(class_names)]
    if ignore_index is not None and 0 <= ignore_index < 256:
        entries.append(("(ignore)", tuple(int(c) for c in palette[ignore_index])))
    return entries


def legend_height(entries: int, width: int) -> int:
    per_row = max(1, width // LEGEND_ENTRY_W)
    return math.ceil(entries / per_row) * LEGEND_ROW_H


def _draw_legend(draw, entries, width: int, font) -> None:
    per_row = max(1, width // LEGEND_ENTRY_W)
    for i, (name, colour) in enumerate(entries):
        x, y = (i % per_row) * LEGEND_ENTRY_W + 4, (i // per_row) * LEGEND_ROW_H + 3
        # a grey rim keeps a black class visible on the dark sheet
        draw.rectangle([x, y, x + SWATCH - 1, y + SWATCH - 1], fill=colour, outline=(140, 140, 140))
        draw.text((x + SWATCH + 5, y), _fit(draw, name, LEGEND_ENTRY_W - SWATCH - 12, font), fill=TEXT, font=font)


def _draw_cell(sheet: Image.Image, draw, x: int, y: int, image, mask, caption: str, palette, cell: int, font):
    small, labels = thumbnail(image, mask, cell)
    th, tw = labels.shape
    sheet.paste(Image.fromarray(overlay(small, labels, palette)), (x + (cell - tw) // 2, y + (cell - th) // 2))
    for line_no, line in enumerate(caption.splitlines()[:2]):
        draw.text((x + 3, y + cell + 2 + line_no * LINE_H), _fit(draw, line, cell - 6, font), fill=TEXT, font=font)


def contact_sheet(items: list[tuple[np.ndarray, np.ndarray, str]], palette: np.ndarray, class_names,
                  out: Path, columns: int | None = None, cell: int = 256, ignore_index: int | None = None) -> Path:
    """Draw (HxWx3 uint8 image, HxW mask, caption) items as a PNG grid under a class legend -> `out`.

    Sheet size: columns*cell wide; legend rows + ceil(n/columns) * (cell + LABEL_H) high.
    A caption's first line goes under the thumbnail, its second line (if any) under that.
    """
    if not items:
        raise DataError(f"{out}: no images to draw; the dataset or split is empty")
    columns = columns or default_columns(len(items))
    width = columns * cell
    entries = _legend_entries(palette, class_names, ignore_index)
    top = legend_height(len(entries), width)
    rows = math.ceil(len(items) / columns)
    sheet = Image.new("RGB", (width, top + rows * (cell + LABEL_H)), BACKGROUND)
    draw, font = ImageDraw.Draw(sheet), _font()
    _draw_legend(draw, entries, width, font)
    for i, (image, mask, caption) in enumerate(items):
        x, y = (i % columns) * cell, top + (i // columns) * (cell + LABEL_H)
        _draw_cell(sheet, draw, x, y, image, mask, caption, palette, cell, font)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_png_atomic(sheet, out)
    return out


def _ordered(pairs: list[Pair], order: list[str] | None, root: Path) -> list[Pair]:
    """Pairs whose stems are in `order` first, in that order; the rest after, as listed."""
    if not order:
        return pairs
    by_stem = {image.stem: (image, mask) for image, mask in reversed(pairs)}  # first of a repeated stem wins
    unknown = [s for s in order if s not in by_stem]
    if unknown:
        raise DataError(f"{root}: the order names '{unknown[0]}', which is not an image of this dataset (split)")
    first = list(dict.fromkeys(order))
    chosen = set(first)
    return [by_stem[s] for s in first] + [p for p in pairs if p[0].stem not in chosen]


def _load(image_path: Path, mask_path: Path, cell: int) -> tuple[np.ndarray, np.ndarray]:
    image, mask = read_image(image_path), read_mask(mask_path)
    if mask.shape != image.shape[:2]:
        raise DataError(f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image {image_path} is "
                        f"{image.shape[1]}x{image.shape[0]} (width x height); masks must match their image")
    return thumbnail(image, mask, cell)  # shrink now: 64 decoded photos would fill gigabytes


def browse(root: str | Path, out: str | Path, split: str | None = None, order: list[str] | None = None,
           captions: dict[str, str] | None = None, limit: int = 64, format: str = "auto",
           columns: int | None = None, cell: int = 256) -> Path:
    """Contact sheet of a dataset (one split, or all) with masks overlaid in the dataset palette -> `out`.

    order: stems to show first, in that order (e.g. worst IoU first); captions: stem -> text under it.
    """
    if limit < 1:
        raise DataError(f"--limit {limit}: give the number of images to draw, at least 1")
    spec = load_spec(root, format)
    if split is not None:
        pairs = list(spec.split(split))
    else:
        pairs = list(dict.fromkeys(p for name in spec.splits for p in spec.splits[name]))
    pairs = _ordered(pairs, order, spec.root)[:limit]
    captions = captions or {}
    items = []
    for image_path, mask_path in pairs:
        stem = image_path.stem
        text = f"{stem}\n{captions[stem]}" if stem in captions else stem
        items.append((*_load(image_path, mask_path, cell), text))
    return contact_sheet(items, spec.palette, spec.class_names, Path(out), columns, cell, spec.ignore_index)
