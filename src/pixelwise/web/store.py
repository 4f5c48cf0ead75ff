"""The dataset side of `pixelwise annotate`: which images there are, their masks, and saving masks safely.

The browser never names a file: it asks for item 7, and the store answers from its own listing. Labels
travel in "client space", one uint8 a pixel with 255 = ignore whatever the layout's ignore value is
(CamVid's is the class count), and are written back in the layout's own place and palette.

Layouts: everything `pixelwise` reads (folder, CamVid, VOC; masks may be missing), plus a folder that has
images/ and classes.txt but no masks/ yet, or just images and classes.txt side by side. Those last two get
the folder layout's masks: DIR/masks/<stem>.png, ignore 255.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from pixelwise.data.checks import Sample, backup_path, discover_samples
from pixelwise.data.io import exif_orientation, open_image, read_image, read_mask, upright_size, write_label_png
from pixelwise.errors import DataError, PixelwiseError

IGNORE = 255  # the ignore label in client space
NO_MASK = "absent"  # the version of a mask that does not exist yet
BROWSER_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")  # served as stored; anything else is re-encoded as PNG
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Refused(PixelwiseError):
    """A request the store will not carry out; `status` is the HTTP status that says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Conflict(PixelwiseError):
    """The mask changed since the client read it (another tab saved it): its current version is attached."""

    def __init__(self, version: str):
        super().__init__(f"this mask was saved elsewhere since you opened it (now version {version[:12]})")
        self.version = version


@dataclass(frozen=True)
class Item:
    id: int  # the only way a client addresses an image
    name: str  # path relative to the dataset root, for people
    split: str
    image: Path
    mask: Path  # where the app writes this image's mask: the layout's place, always .png
    found_mask: Path | None = None  # a mask the layout found under another name (a .bmp, say), replaced on save


def mask_target(fmt: str, root: Path, sample: Sample) -> Path:
    """Where a layout keeps the mask of `sample.image` (formats._find_mask finds it there)."""
    stem = sample.image.stem + ".png"
    if fmt == "camvid":
        return root / f"{sample.split}annot" / stem
    if fmt == "voc":
        return root / "SegmentationClass" / stem
    return root / "masks" / stem


def file_version(path: Path | None) -> str:
    """sha256 of the file's bytes, or NO_MASK: a save must name the version it replaces."""
    if path is None or not path.is_file():
        return NO_MASK
    return hashlib.sha256(path.read_bytes()).hexdigest()


def decode_upload(data: bytes, size: tuple[int, int], num_classes: int) -> np.ndarray:
    """A client's PNG of labels -> HxW uint8, or Refused naming what is wrong. size: (width, height)."""
    if not data.startswith(PNG_SIGNATURE):
        raise Refused(415, "the mask upload is not a PNG; send an 8-bit greyscale PNG of class indices")
    try:
        img = Image.open(io.BytesIO(data))
        if img.format != "PNG":
            raise Refused(415, "the mask upload is not a PNG")
        # The header is read, the pixels not yet: a size check here stops a small file that inflates to a huge one.
        if img.size != tuple(size):
            raise Refused(422, f"the mask is {img.size[0]}x{img.size[1]} but its image is {size[0]}x{size[1]}")
        if img.mode not in ("L", "P"):
            raise Refused(422, f"the mask PNG has mode {img.mode}; send 8-bit greyscale (L) or palette (P) "
                               "whose pixel values are the labels")
        img.load()
    except Refused:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise Refused(422, f"cannot decode the mask PNG ({err})") from None
    labels = np.asarray(img, dtype=np.uint8)
    # Every label from num_classes up must be 255. Two counts over the uint8 labels are cheap even on
    # 12 MP; the bincount that names the culprit widens every pixel to int64 and runs only when there
    # is one.
    if np.count_nonzero(labels >= num_classes) != np.count_nonzero(labels == IGNORE):
        counts = np.bincount(labels.reshape(-1), minlength=256)
        bad = int(np.flatnonzero(counts[num_classes:IGNORE])[0]) + num_classes
        raise Refused(422, f"the mask has label {bad} ({counts[bad]} pixels) but the dataset has "
                           f"{num_classes} classes (0-{num_classes - 1}, 255 = ignore)")
    return labels


def superpixel_labels(rgb: np.ndarray) -> np.ndarray:
    """SLIC superpixels of an HxWx3 uint8 image -> HxW uint16 segment ids, about 20x20 pixels each.

    Above 4 megapixels SLIC runs on every second pixel and the ids are repeated back up: SLIC's time and
    its float copy of the image grow with the pixels, and 2-pixel steps on a 12 MP photo are invisible.
    """
    from skimage.segmentation import slic

    h, w = rgb.shape[:2]
    step = 2 if h * w > 4_000_000 else 1
    small = rgb[::step, ::step]
    segments = max(4, min(60_000, small.shape[0] * small.shape[1] * step * step // 400))
    ids = slic(small, n_segments=segments, compactness=10, start_label=0, channel_axis=-1)
    if step > 1:
        ids = ids.repeat(step, axis=0).repeat(step, axis=1)[:h, :w]
    return np.ascontiguousarray(ids, dtype=np.uint16)


class Store:
    """The images of one dataset folder and their masks. Thread-safe: the server answers from worker threads."""

    def __init__(self, root: str | Path, log: Callable[[str], None] = print):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise DataError(f"{root}: dataset folder not found")
        header, samples = discover_samples(self.root)
        self.format = header.format
        self.class_names, self.ignore_index, self.palette = header.class_names, header.ignore_index, header.palette
        self.items = self._listing(samples, log)
        if not self.items:
            raise DataError(f"{self.root}: no image to annotate")
        self._lock = threading.Lock()  # a version check and the write it guards happen as one step
        self._superpixels: OrderedDict[int, np.ndarray] = OrderedDict()
        self._sp_lock = threading.Lock()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _listing(self, samples: list[Sample], log) -> list[Item]:
        items, seen, outside = [], set(), 0
        for s in sorted(samples, key=lambda s: s.image):  # name order: what "next" follows without a model
            if s.image in seen:  # VOC lists may name an image twice
                continue
            seen.add(s.image)
            if not self.inside(s.image):
                outside += 1  # a symlink out of the dataset: never served
                continue
            target = mask_target(self.format, self.root, s)
            found = s.mask if s.mask is not None and s.mask != target else None
            items.append(Item(len(items), s.image.relative_to(self.root).as_posix(), s.split, s.image, target, found))
        if outside:
            log(f"skipped {outside} images whose files lie outside {self.root} (symlinks)")
        return items

    def inside(self, path: Path) -> bool:
        """True if `path`, symlinks followed, lies in the dataset folder: nothing outside is read or written."""
        return path.resolve().is_relative_to(self.root)

    def _checked(self, path: Path) -> Path:
        if not self.inside(path):
            raise Refused(403, f"{path.relative_to(self.root)} leads outside the dataset folder; refused")
        return path

    def item(self, item_id: int) -> Item:
        if not 0 <= item_id < len(self.items):
            raise Refused(404, f"no image {item_id}; the dataset has images 0-{len(self.items) - 1}")
        return self.items[item_id]

    def mask_path(self, item: Item) -> Path | None:
        """The mask file to read, if the image has one."""
        for path in (item.mask, item.found_mask):
            if path is not None and path.is_file():
                return path
        return None

    def labelled(self, item: Item) -> bool:
        return self.mask_path(item) is not None

    def progress(self) -> tuple[int, int]:
        """-> (images with a mask, images)."""
        return sum(self.labelled(it) for it in self.items), len(self.items)

    def image_size(self, item: Item) -> tuple[int, int]:
        """(width, height) as read_image shows the image, EXIF rotation applied; reads only the header."""
        return upright_size(self._checked(item.image))

    def image_payload(self, item: Item) -> tuple[bytes, str]:
        """-> (bytes, media type) the browser decodes to exactly the pixels read_image gives.

        A plain 8-bit PNG/JPEG/WebP/BMP goes as stored (no re-encoding of a 12 MP photo); rotated, 16-bit,
        transparent or TIFF images are decoded as pixelwise decodes them and sent as PNG.
        """
        path = self._checked(item.image)
        img = open_image(path)
        as_stored = img.format in BROWSER_FORMATS and img.mode in ("RGB", "L") and exif_orientation(img) == 1
        fmt = img.format
        if as_stored:
            return path.read_bytes(), f"image/{fmt.lower()}"
        buf = io.BytesIO()
        Image.fromarray(read_image(path)).save(buf, format="PNG", compress_level=1)
        return buf.getvalue(), "image/png"

    def read_labels(self, item: Item) -> tuple[np.ndarray | None, str]:
        """-> (HxW uint8 labels in client space, or None when there is no mask yet; its version)."""
        with self._lock:
            path = self.mask_path(item)
            if path is None:
                return None, NO_MASK
            self._checked(path)
            version, labels = file_version(path), read_mask(path)
        w, h = self.image_size(item)
        if labels.shape != (h, w):
            raise DataError(f"{path}: the mask is {labels.shape[1]}x{labels.shape[0]} but its image is {w}x{h}; "
                            "run `pixelwise data check` on the dataset")
        if labels.max(initial=0) > IGNORE:
            raise DataError(f"{path}: label {labels.max()} does not fit 8 bits but the dataset has "
                            f"{self.num_classes} classes; run `pixelwise data check` on the dataset")
        return np.where(labels == self.ignore_index, IGNORE, labels).astype(np.uint8), version

    def save_labels(self, item: Item, png: bytes, expected_version: str) -> str:
        """Write a client's PNG of labels as this image's mask; -> the new version.

        Refused if the mask changed since `expected_version` was read (Conflict) or the PNG is wrong
        (Refused). The mask it replaces is copied to DIR/.pixelwise-backup/ first, under a fresh name.
        """
        w, h = self.image_size(item)
        labels = decode_upload(png, (w, h), self.num_classes)
        if self.ignore_index != IGNORE:
            labels = np.where(labels == IGNORE, np.uint8(self.ignore_index), labels)
        with self._lock:
            current = self.mask_path(item)
            version = file_version(current and self._checked(current))
            if version != expected_version:
                raise Conflict(version)
            self._checked(item.mask.parent)
            self._checked(item.mask)
            if current is not None:
                backup = self._checked(backup_path(self.root, current))
                backup.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(current, backup)
            item.mask.parent.mkdir(parents=True, exist_ok=True)
            write_label_png(item.mask, labels, self.palette)
            if current is not None and current != item.mask:
                current.unlink()  # a .bmp/.tif mask the .png now replaces; its bytes are in the backup
            return file_version(item.mask)

    def superpixels(self, item: Item, keep: int = 4) -> np.ndarray:
        """HxW uint16 SLIC segment ids of an image, computed once and kept for the last `keep` images."""
        with self._sp_lock:  # one SLIC at a time: two at once on a small CPU only share its cores
            if item.id in self._superpixels:
                self._superpixels.move_to_end(item.id)
                return self._superpixels[item.id]
            ids = superpixel_labels(read_image(self._checked(item.image)))
            self._superpixels[item.id] = ids
            while len(self._superpixels) > keep:
                self._superpixels.popitem(last=False)
            return ids

    def write_training_view(self, dest: Path) -> int:
        """Make `dest` a dataset of the labelled images only, in this dataset's own layout, by symlinks.

        `pixelwise train` refuses an image without a mask, and an annotation session is mostly such
        images; the view lets training read the masks saved so far. -> labelled images in the view.
        """
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        names_file = self.root / "classes.txt"
        if names_file.is_file():
            shutil.copyfile(names_file, dest / "classes.txt")
        lists: dict[str, list[str]] = {}
        for item in self.items:
            mask = self.mask_path(item)
            if mask is None:
                continue
            if self.format == "camvid":
                image_dir, mask_dir = dest / item.split, dest / f"{item.split}annot"
            elif self.format == "voc":
                image_dir, mask_dir = dest / "JPEGImages", dest / "SegmentationClass"
            else:
                image_dir, mask_dir = dest / "images", dest / "masks"
            for folder, source, name in ((image_dir, item.image, item.image.name),
                                         (mask_dir, mask, item.image.stem + mask.suffix)):
                folder.mkdir(parents=True, exist_ok=True)
                os.symlink(source.resolve(), folder / name)
            lists.setdefault(item.split, []).append(item.image.stem)
        self._write_split_lists(dest, lists)
        return sum(len(v) for v in lists.values())

    def _write_split_lists(self, dest: Path, lists: dict[str, list[str]]) -> None:
        """VOC needs its lists; a folder dataset keeps its own splits if it has split files."""
        if self.format == "voc":
            folder = dest / "ImageSets" / "Segmentation"
        elif self.format == "folder" and (self.root / "splits").is_dir():
            folder = dest / "splits"
        else:
            return
        folder.mkdir(parents=True, exist_ok=True)
        for split, stems in lists.items():
            (folder / f"{split}.txt").write_text("\n".join(stems) + "\n")
