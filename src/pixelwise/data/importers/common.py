"""What every importer shares: the options, the samples and items a source yields, and the small
readers of image sizes and colour masks. Each source module (coco, labelme, cvat, colour) builds on
this; the package's `import_dataset` dispatches to them and writes the result."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from pixelwise.data.io import load_image, open_image, upright, upright_size
from pixelwise.errors import DataError

SOURCES = ("coco", "labelme", "cvat", "rgb", "cityscapes")
OVERLAPS = ("ignore", "last")
CROWDS = ("ignore", "class")
IGNORE = 255
LINE_WIDTH = 10  # labelme's shape_to_mask default for line and linestrip shapes
MAX_CLASSES = 255  # 0-254: 255 is the ignore value of a uint8 mask

# What a malformed annotation raises while it is decoded: the item is reported, the import goes on.
CONVERT_ERRORS = (DataError, KeyError, TypeError, ValueError, IndexError, OverflowError)


@dataclass(frozen=True)
class ImportOptions:
    overlap: str = "ignore"
    crowd: str = "ignore"
    palette: Path | None = None
    labels: Path | None = None
    images: Path | None = None
    line_width: int = LINE_WIDTH


@dataclass
class Sample:
    """A converted item: its HxW uint8 class-index mask and its image, a file to copy or encoded bytes."""
    mask: np.ndarray
    image: Path | bytes
    suffix: str  # of the image file to write, with the dot: ".jpg"


@dataclass
class Item:
    key: str  # the item's source-relative name without suffix, '/'-separated: it gives the output stem
    name: str  # what a failure report names: the source file or record
    convert: Callable[[], Sample]
    split: str | None = None


@dataclass
class Source:
    """What a source module hands the writer."""
    class_names: tuple[str, ...]
    items: list[Item]
    reads: list[Path]  # files and folders the items read: the output must stay clear of them
    failed: list[tuple[str, str]] = field(default_factory=list)  # found while listing the source
    close: Callable[[], None] = lambda: None


@dataclass
class ImportSummary:
    source: str
    dst: Path
    images: int
    masks: int
    classes: tuple[str, ...]
    splits: dict[str, int]
    failed: list[tuple[str, str]]  # (item, reason) for each item that could not be converted

    @property
    def ok(self) -> bool:
        return not self.failed

    def format_summary(self) -> str:
        splits = ", ".join(f"{name} {n}" for name, n in self.splits.items()) or "none (split by name hash)"
        lines = [f"imported {self.images} images and {self.masks} masks from {self.source} into {self.dst}",
                 f"{len(self.classes)} classes: {', '.join(self.classes)}",
                 f"splits: {splits}"]
        if self.failed:
            lines.append(f"{len(self.failed)} items could not be converted:")
            # most reasons already start with the item's file: print that once
            lines += [f"  {why if why.startswith(item) else f'{item}: {why}'}" for item, why in self.failed]
        return "\n".join(lines)


def image_size(data: Path | bytes, name: str) -> tuple[int, int]:
    """-> (height, width) as `read_image` will see it."""
    w, h = upright_size(data, name)
    return h, w


def image_suffix(data: bytes, name: str) -> str:
    """The file suffix for encoded image bytes, from their format."""
    fmt = open_image(data, name).format or ""
    return {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}.get(fmt, f".{fmt.lower()}")


def read_colour_mask(data: Path | bytes, name: str) -> np.ndarray:
    """A colour-coded mask -> HxWx3 uint8. Palette PNGs are expanded to their colours."""
    img = upright(load_image(data, name))
    if img.mode == "F" or img.mode.startswith("I"):
        raise DataError(f"{name}: {img.mode} image is not a colour mask; save masks as RGB or palette PNGs")
    return np.asarray(img.convert("RGB"), dtype=np.uint8)
