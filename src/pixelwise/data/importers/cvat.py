"""CVAT "Segmentation mask 1.1" exports (the zip, or its unpacked folder) -> class-index masks.

  labelmap.txt                      `name:R,G,B:parts:actions` a line; the 0,0,0 label (CVAT's
                                    `background`) is class 0, the others follow in file order, and
                                    a label named ignore/void becomes 255 (see colour.parse_labelmap)
  SegmentationClass/<name>.png      the colour masks, one item each
  ImageSets/Segmentation/<set>.txt  subsets: train/val/test (or training/validation/testing) are
                                    splits; other subsets, such as CVAT's `default`, are not (their
                                    items join train when others are split)
  JPEGImages/<name>.<ext>           the images, when exported with images; else give --images DIR
The zip is read in place, never unpacked.
"""
from __future__ import annotations

import zipfile
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Callable

from pixelwise.data.importers.common import ImportOptions, Item, Sample, Source
from pixelwise.data.importers.colour import ColourTable, convert_colour_mask, parse_labelmap
from pixelwise.data.io import IMAGE_SUFFIXES
from pixelwise.errors import DataError

SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "validation": "val",
               "test": "test", "testing": "test"}


class Tree:
    """The files of an export, as '/'-separated names relative to the folder holding labelmap.txt."""

    def __init__(self, src: Path):
        self.src, self.zip = src, None
        if src.is_dir():
            names = [p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()]
        else:
            try:
                self.zip = zipfile.ZipFile(src)
            except (OSError, zipfile.BadZipFile) as err:
                raise DataError(f"{src}: not a CVAT export zip ({err}); give the zip or its unpacked folder") from None
            names = [n for n in self.zip.namelist() if not n.endswith("/")]
        maps = sorted((n for n in names if PurePosixPath(n).name == "labelmap.txt"), key=lambda n: n.count("/"))
        if not maps:
            self.close()
            raise DataError(f"{src}: no labelmap.txt; export the task as 'Segmentation mask 1.1' in CVAT")
        self.prefix = maps[0][: -len("labelmap.txt")]  # a zip of the folder puts everything under one name
        self.names = {n[len(self.prefix):] for n in names if n.startswith(self.prefix)}

    def read(self, name: str) -> bytes:
        if self.zip is not None:
            return self.zip.read(self.prefix + name)
        return (self.src / self.prefix / name).read_bytes()

    def file(self, name: str) -> Path | bytes:
        """A path to copy from a folder; the bytes from a zip."""
        return self.read(name) if self.zip is not None else self.src / self.prefix / name

    def text(self, name: str) -> str:
        return self.read(name).decode("utf-8")

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()


def read_cvat(src: Path, opts: ImportOptions, log: Callable[[str], None] = print) -> Source:
    tree = Tree(src)
    try:
        return list_items(tree, src, opts)
    except BaseException:
        tree.close()
        raise


def list_items(tree: Tree, src: Path, opts: ImportOptions) -> Source:
    table = parse_labelmap(tree.text("labelmap.txt"), f"{src.name}/labelmap.txt")
    masks = sorted(n for n in tree.names if n.startswith("SegmentationClass/") and n.endswith(".png"))
    if not masks:
        raise DataError(f"{src}: no SegmentationClass/*.png masks in this CVAT export")
    split_of = read_subsets(tree)
    exported = {str(PurePosixPath(n[len("JPEGImages/"):]).with_suffix("")): n for n in sorted(tree.names)
                if n.startswith("JPEGImages/") and PurePosixPath(n).suffix.lower() in IMAGE_SUFFIXES}
    given = images_by_key(opts.images) if opts.images else {}
    items, failed = [], []
    for mask in masks:
        key = str(PurePosixPath(mask[len("SegmentationClass/"):]).with_suffix(""))
        where = f"{src.name}/{mask}"
        image = given.get(key) or exported.get(key)  # --images wins when given
        if image is None:
            where_to = f"--images {opts.images}" if opts.images else "JPEGImages/"
            failed.append((where, f"no image {key}.* in {where_to}; export with images or pass --images DIR"))
            continue
        convert = partial(load_and_convert, tree, mask, image, table, where)
        items.append(Item(key, where, convert, split_of.get(key)))
    reads = [src] + ([opts.images] if opts.images else [])
    return Source(table.class_names, items, reads=reads, failed=failed, close=tree.close)


def read_subsets(tree: Tree) -> dict[str, str]:
    """ImageSets/Segmentation/<subset>.txt -> item name -> split, for the subsets that are splits."""
    split_of = {}
    for name in sorted(tree.names):
        path = PurePosixPath(name)
        if str(path.parent) == "ImageSets/Segmentation" and path.suffix == ".txt":
            split = SPLIT_NAMES.get(path.stem.lower())
            if split:
                lines = (line.strip() for line in tree.text(name).splitlines())  # names may hold spaces
                split_of |= dict.fromkeys((line for line in lines if line), split)
    return split_of


def images_by_key(folder: Path) -> dict[str, Path]:
    """Images under --images by their relative name without suffix (the key CVAT's lists use)."""
    if not folder.is_dir():
        raise DataError(f"--images {folder}: folder not found")
    return {p.relative_to(folder).with_suffix("").as_posix(): p for p in sorted(folder.rglob("*"))
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}


def load_and_convert(tree: Tree, mask: str, image: str | Path, table: ColourTable, where: str) -> Sample:
    """Read one colour mask (and, from a zip, its image) and map its colours to classes."""
    data = image if isinstance(image, Path) else tree.file(image)
    return convert_colour_mask(tree.file(mask), data, PurePosixPath(str(image)).suffix, table, where)
