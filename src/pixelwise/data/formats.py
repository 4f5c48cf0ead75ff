"""Dataset layouts on disk: CamVid/SegNet, PASCAL VOC and a plain images/masks folder.

One lister per layout reads a root folder's files, gaps included (`Listing`); `load_spec` turns
that into a `DatasetSpec` (class names, the ignore value, a palette and, per split, the
(image, mask) file pairs) and the data checker into problems. Nothing is decoded here.
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
    # Arrays the data checker already decoded and validated, by path, as io.read_image/read_mask give them
    # (masks as uint8 when they fit): a dataset built on this spec reads these instead of the files.
    decoded: dict[Path, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

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


@dataclass(frozen=True)
class Sample:
    """An image the layout uses, its split, and its mask if it has one."""
    split: str
    image: Path
    mask: Path | None


@dataclass
class Listing:
    """What a layout's files say, read once with its gaps: `load_spec` raises at the first gap, the data
    checker reports every one."""
    samples: list[Sample]
    mask_dirs: dict[str, Path]  # split -> the folder its masks live in
    missing_images: list[tuple[Path, str, str]] = field(default_factory=list)  # (list file, stem, image folder)
    stray_masks: list[Path] = field(default_factory=list)  # masks whose name matches no image


def mask_or_none(mask_dir: Path, image: Path) -> Path | None:
    try:
        return find_mask(mask_dir, image)
    except DataError:
        return None


def stray_masks(mask_dir: Path, images: list[Path]) -> list[Path]:
    """Masks whose name matches no image (the matching rule of find_mask)."""
    stems, names = {p.stem for p in images}, {p.name for p in images}
    return [m for m in images_in(mask_dir) if m.stem not in stems and m.name not in names]


def list_camvid(root: Path) -> Listing:
    listing = Listing([], {split: root / f"{split}annot" for split in SPLITS})
    for split in SPLITS:
        images, mask_dir = images_in(root / split), listing.mask_dirs[split]
        listing.samples += [Sample(split, img, mask_or_none(mask_dir, img)) for img in images]
        listing.stray_masks += stray_masks(mask_dir, images)
    return listing


def find_voc_image(root: Path, stem: str) -> Path | None:
    image = root / "JPEGImages" / f"{stem}.jpg"
    if image.is_file():
        return image
    found = [p for p in (root / "JPEGImages").glob(f"{stem}.*") if p.suffix.lower() in IMAGE_SUFFIXES]
    return found[0] if found else None


def list_voc(root: Path) -> Listing:
    mask_dir = root / "SegmentationClass"
    listing = Listing([], dict.fromkeys(SPLITS, mask_dir))
    for split in SPLITS:
        list_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not list_file.is_file():
            continue
        for stem in list_file.read_text().split():
            image = find_voc_image(root, stem)
            if image is None:
                listing.missing_images.append((list_file, stem, "JPEGImages"))
            else:
                listing.samples.append(Sample(split, image, mask_or_none(mask_dir, image)))
    # JPEGImages may hold detection-only photos that no list names: only listed images need masks.
    listing.stray_masks = stray_masks(mask_dir, images_in(root / "JPEGImages"))
    return listing


def hash_split(stem: str, val_percent: int = 10) -> str:
    """Deterministic train/val assignment by stem, stable when files are added or removed."""
    return "val" if zlib.crc32(stem.encode()) % 100 < val_percent else "train"


def list_folder(root: Path) -> Listing:
    all_images = images_in(root / "images")
    images = {p.stem: p for p in all_images}
    mask_dir = root / "masks"
    listing = Listing([], dict.fromkeys(SPLITS, mask_dir), stray_masks=stray_masks(mask_dir, all_images))
    split_files = {s: root / "splits" / f"{s}.txt" for s in SPLITS}
    if not any(f.is_file() for f in split_files.values()):
        listing.samples = [Sample(hash_split(stem), img, mask_or_none(mask_dir, img)) for stem, img in images.items()]
        return listing
    for split, list_file in split_files.items():
        if not list_file.is_file():
            continue
        for stem in list_file.read_text().split():
            if stem in images:
                listing.samples.append(Sample(split, images[stem], mask_or_none(mask_dir, images[stem])))
            else:
                listing.missing_images.append((list_file, stem, "images"))
    return listing


LISTERS = {"camvid": list_camvid, "voc": list_voc, "folder": list_folder}


def resolve_format(root: str | Path, format: str = "auto") -> tuple[Path, str]:
    """-> (root, its layout): `format` checked, or detected when "auto". Raises DataError naming the problem."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    if format not in FORMATS:
        raise DataError(f"unknown dataset format {format!r}; choose one of {', '.join(FORMATS)}")
    return root, detect_format(root) if format == "auto" else format


def load_spec(root: str | Path, format: str = "auto") -> DatasetSpec:
    """Find the layout of `root` and list its splits. Raises DataError for an image without its mask, a listed
    image that is not there, or an empty or unknown dataset."""
    root, fmt = resolve_format(root, format)
    spec, listing = read_header(root, fmt), LISTERS[fmt](root)
    if listing.missing_images:
        list_file, stem, folder = listing.missing_images[0]
        raise DataError(f"{list_file}: lists '{stem}' but {folder}/ has no such image")
    for sample in listing.samples:
        if sample.mask is None:
            expected = listing.mask_dirs[sample.split] / f"{sample.image.stem}.png"
            raise DataError(f"{sample.image}: no mask for this image; expected {expected}")
        spec.splits.setdefault(sample.split, []).append((sample.image, sample.mask))
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
