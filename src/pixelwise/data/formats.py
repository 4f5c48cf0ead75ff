"""Dataset layouts on disk: CamVid/SegNet, PASCAL VOC and a plain images/masks folder.

Each loader turns a root folder into a `DatasetSpec`: class names, the ignore value,
a palette and, per split, the (image, mask) file pairs. Nothing is decoded here.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from pixelwise.data.io import IMAGE_SUFFIXES, default_palette
from pixelwise.errors import DataError

FORMATS = ("auto", "camvid", "voc", "folder")
SPLITS = ("train", "val", "test")

CAMVID_CLASSES = ("sky", "building", "pole", "road", "pavement", "tree",
                  "sign_symbol", "fence", "car", "pedestrian", "bicyclist")
# The colours the SegNet tutorial uses for CamVid, so our overlays look like the papers'.
CAMVID_COLOURS = ((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
                  (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0),
                  (0, 128, 192))
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
               "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")

Pair = tuple[Path, Path]


@dataclass
class DatasetSpec:
    root: Path
    format: str
    class_names: tuple[str, ...]
    ignore_index: int
    splits: dict[str, list[Pair]] = field(default_factory=dict)
    palette: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> list[Pair]:
        if name not in self.splits:
            have = ", ".join(self.splits) or "none"
            raise DataError(f"{self.root}: no '{name}' split in this {self.format} dataset (splits present: {have})")
        return self.splits[name]


def read_class_names(path: Path) -> tuple[str, ...]:
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if not names:
        raise DataError(f"{path}: no class names; write one class name a line, line 0 = label 0")
    return names


def images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def find_mask(mask_dir: Path, image: Path) -> Path:
    for candidate in [mask_dir / image.name, *(mask_dir / (image.stem + s) for s in (".png", ".tif", ".tiff", ".bmp"))]:
        if candidate.is_file():
            return candidate
    raise DataError(f"{image}: no mask for this image; expected {mask_dir / (image.stem + '.png')}")


def detect_format(root: Path) -> str:
    if (root / "JPEGImages").is_dir() and (root / "SegmentationClass").is_dir():
        return "voc"
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "folder"
    if any((root / s).is_dir() and (root / f"{s}annot").is_dir() for s in SPLITS):
        return "camvid"
    raise DataError(
        f"{root}: cannot tell the dataset layout. Expected one of: CamVid (train/ trainannot/ val/ valannot/), "
        "VOC (JPEGImages/ SegmentationClass/ ImageSets/Segmentation/), or a folder (images/ masks/ classes.txt)"
    )


def read_header(root: Path, fmt: str) -> DatasetSpec:
    """A layout's class names, ignore value and palette, with no pairs listed yet."""
    names_file = root / "classes.txt"
    if fmt == "folder" and not names_file.is_file():
        raise DataError(f"{names_file}: missing; a folder dataset needs classes.txt with one class name a line "
                        "(line 0 is label 0)")
    if fmt == "camvid":
        names = read_class_names(names_file) if names_file.is_file() else CAMVID_CLASSES
        palette = default_palette(len(names))
        if names == CAMVID_CLASSES:
            palette[: len(CAMVID_COLOURS)] = CAMVID_COLOURS
        return DatasetSpec(root, fmt, names, ignore_index=len(names), palette=palette)
    names = read_class_names(names_file) if names_file.is_file() else VOC_CLASSES
    return DatasetSpec(root, fmt, names, ignore_index=255, palette=default_palette(len(names)))


def load_camvid(root: Path) -> DatasetSpec:
    spec = read_header(root, "camvid")
    for split in SPLITS:
        images = images_in(root / split)
        if images:
            spec.splits[split] = [(img, find_mask(root / f"{split}annot", img)) for img in images]
    return spec


def load_voc(root: Path) -> DatasetSpec:
    spec = read_header(root, "voc")
    lists = root / "ImageSets" / "Segmentation"
    for split in SPLITS:
        list_file = lists / f"{split}.txt"
        if not list_file.is_file():
            continue
        pairs = []
        for stem in list_file.read_text().split():
            image = root / "JPEGImages" / f"{stem}.jpg"
            if not image.is_file():
                found = [p for p in (root / "JPEGImages").glob(f"{stem}.*") if p.suffix.lower() in IMAGE_SUFFIXES]
                if not found:
                    raise DataError(f"{list_file}: lists '{stem}' but there is no image JPEGImages/{stem}.jpg")
                image = found[0]
            pairs.append((image, find_mask(root / "SegmentationClass", image)))
        if pairs:
            spec.splits[split] = pairs
    return spec


def hash_split(stem: str, val_percent: int = 10) -> str:
    """Deterministic train/val assignment by stem, stable when files are added or removed."""
    return "val" if zlib.crc32(stem.encode()) % 100 < val_percent else "train"


def load_folder(root: Path) -> DatasetSpec:
    spec = read_header(root, "folder")
    images = {p.stem: p for p in images_in(root / "images")}
    split_files = {s: root / "splits" / f"{s}.txt" for s in SPLITS}
    if any(f.is_file() for f in split_files.values()):
        for split, list_file in split_files.items():
            if not list_file.is_file():
                continue
            stems = list_file.read_text().split()
            missing = [s for s in stems if s not in images]
            if missing:
                raise DataError(f"{list_file}: lists '{missing[0]}' but images/ has no such image")
            if stems:
                spec.splits[split] = [(images[s], find_mask(root / "masks", images[s])) for s in stems]
    else:
        for stem, image in images.items():
            spec.splits.setdefault(hash_split(stem), []).append((image, find_mask(root / "masks", image)))
    return spec


LOADERS = {"camvid": load_camvid, "voc": load_voc, "folder": load_folder}


def resolve_format(root: str | Path, format: str = "auto") -> tuple[Path, str]:
    """-> (root, its layout): `format` checked, or detected when "auto". Raises DataError naming the problem."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    if format not in FORMATS:
        raise DataError(f"unknown dataset format {format!r}; choose one of {', '.join(FORMATS)}")
    return root, detect_format(root) if format == "auto" else format


def load_spec(root: str | Path, format: str = "auto") -> DatasetSpec:
    """Find the layout of `root` and list its splits. Raises DataError for an empty or unknown dataset."""
    root, fmt = resolve_format(root, format)
    spec = LOADERS[fmt](root)
    if not any(spec.splits.values()):
        raise DataError(f"{root}: no usable image in this {fmt} dataset (looked for "
                        f"{', '.join(IMAGE_SUFFIXES)} files with masks)")
    return spec


def split_pairs(spec: DatasetSpec, log: Callable[[str], None] = print) -> tuple[list, list]:
    """-> (train pairs, val pairs): the val split if there is one, else ~10% of train held out by name hash."""
    if "train" not in spec.splits:
        raise DataError(f"{spec.root}: no training images (no 'train' split) in this {spec.format} dataset")
    train = spec.splits["train"]
    if "val" in spec.splits:
        return train, spec.splits["val"]
    if len(train) < 2:
        raise DataError(f"{spec.root}: no validation split and only {len(train)} training image; "
                             "add images or a val split")
    val = [p for p in train if hash_split(p[0].stem) == "val"]
    if not val:  # tiny dataset: the hash picked none, so hold out the one with the lowest hash
        val = [min(train, key=lambda p: zlib.crc32(p[0].stem.encode()))]
    train = [p for p in train if p not in val]
    log(f"no val split: holding out {len(val)} of {len(val) + len(train)} training images by name hash")
    return train, val
