"""Reading images and masks from disk, and writing class-index PNGs.

Every reader returns plain numpy arrays and raises `DataError` naming the file,
so nothing deeper in the pipeline ever sees a half-decoded image.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pixelwise.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _open(path: Path) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DataError(f"{path}: cannot read image ({err}); is it a valid image file?") from None
    return img


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> HxWx3 uint8.

    High-bit-depth images (16-bit or float microscopy, say) are stretched from their
    own min..max to 0..255: dividing by 65535 would turn a 12-bit scan black.
    """
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        gray = np.round(arr).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on black rather than dropping alpha blindly: transparent pixels of a
        # palette image would otherwise show whatever colour the palette happens to hold.
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as HxWx3 uint8 RGB, honouring EXIF orientation."""
    path = Path(path)
    img = _open(path)
    # Phones store portrait photos as rotated landscape pixels plus an EXIF flag;
    # annotation tools show the rotated image, so masks are drawn on that.
    img = ImageOps.exif_transpose(img)
    return to_rgb_array(img)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a class-index mask as HxW int64.

    Palette PNGs (VOC) carry the index directly; grey PNGs carry it as the value.
    A colour mask is refused: its colours are not class indices.
    """
    path = Path(path)
    img = _open(path)
    img = ImageOps.exif_transpose(img)
    if img.mode in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
        return np.asarray(img).astype(np.int64)
    if img.mode in ("RGB", "RGBA"):
        arr = np.asarray(img)[:, :, :3]
        if (arr[:, :, 0] == arr[:, :, 1]).all() and (arr[:, :, 0] == arr[:, :, 2]).all():
            return arr[:, :, 0].astype(np.int64)
        raise DataError(
            f"{path}: mask is a colour (RGB) image, but masks must hold class indices; "
            "save it as a greyscale or palette PNG whose pixel values are the labels"
        )
    raise DataError(f"{path}: unsupported mask mode {img.mode!r}; save masks as greyscale or palette PNGs")


def default_palette(num_classes: int) -> np.ndarray:
    """The PASCAL VOC colour map: distinct, familiar colours for any class count. -> (256, 3) uint8."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for label in range(256):
        c, r, g, b = label, 0, 0, 0
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette[label] = (r, g, b)
    if num_classes > 255:
        raise ValueError(f"at most 255 classes fit a palette PNG, got {num_classes}")
    return palette


def write_label_png(path: str | Path, labels: np.ndarray, palette: np.ndarray) -> None:
    """Save HxW class indices as a palette PNG: the pixel values are the labels, the colours are for people.

    Written to a temporary file and renamed over `path`, so a crash or a full disk never
    leaves a half-written mask where a good one was.
    """
    path = Path(path)
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    img.putpalette(palette.astype(np.uint8).reshape(-1).tolist())
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        img.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend class colours over an RGB image. image: HxWx3 uint8, labels: HxW -> HxWx3 uint8."""
    colours = palette[labels.astype(np.int64).clip(0, 255)].astype(np.float32)
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours
    return blended.round().clip(0, 255).astype(np.uint8)
