"""Reading images and masks from disk, and writing class-index PNGs.

Every reader returns plain numpy arrays and raises `DataError` naming the file, so nothing
deeper in the pipeline ever sees a half-decoded image. Files are untrusted input: a header
that declares more pixels than `max_image_pixels()` is refused before any pixel is allocated,
and a corrupt EXIF block never stops a readable image from being read.
"""
from __future__ import annotations

import os
import re
import struct
import zlib
from io import BytesIO
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from pixelwise.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MAX_PIXELS_ENV = "PIXELWISE_MAX_IMAGE_PIXELS"
ORIENTATION_TAG = 0x0112
# EXIF orientation -> the transpose that shows the photo upright (EXIF 2.3, tag 274). 5-8 swap width and height.
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}
# What PIL raises for a malformed file while it parses the header or decodes the pixels: OSError for
# truncated data (and UnidentifiedImageError), SyntaxError for a broken header, the rest from plugins
# that unpack damaged fields.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)


def max_image_pixels() -> int | None:
    """The most pixels (width x height) pixelwise decodes from one file; None = no limit.

    The environment variable PIXELWISE_MAX_IMAGE_PIXELS sets it (0 = no limit); without it, PIL's own
    `Image.MAX_IMAGE_PIXELS` applies (89,478,485, about 9459 x 9459, unless the program changed it).
    """
    raw = os.environ.get(MAX_PIXELS_ENV)
    if raw is None:
        return Image.MAX_IMAGE_PIXELS
    try:
        value = int(raw.strip().replace("_", ""))
    except ValueError:
        value = -1
    if value < 0:
        raise DataError(f"{MAX_PIXELS_ENV}={raw!r}: give the most pixels (width x height) an image may have, "
                        "as a whole number, or 0 for no limit")
    return value or None


def _name(source, name: str | Path | None) -> str:
    if name is not None:
        return str(name)
    if isinstance(source, (str, Path)):
        return str(source)
    return getattr(source, "name", None) or "image bytes"


def _too_many_pixels(name: str, declared: str, pixels: int | str, limit: int) -> DataError:
    return DataError(f"{name}: image declares {declared}, more than the {limit:,} pixelwise decodes; a header this "
                     f"large is usually a corrupt file or a decompression bomb. If the image is real, allow it with "
                     f"the environment variable {MAX_PIXELS_ENV}={pixels} (or 0 for no limit)")


def _refused_by_pil(name: str, err: Exception, limit: int) -> DataError:
    """PIL refuses more than twice its limit before it returns the image, so the pixel count in its
    message is all there is of the size."""
    found = re.search(r"\((\d+) pixels\)", str(err))
    if found is None:
        return _too_many_pixels(name, f"more pixels than PIL allows ({err})", "N", limit)
    return _too_many_pixels(name, f"{int(found.group(1)):,} pixels", found.group(1), limit)


def open_image(source: str | Path | bytes | BinaryIO, name: str | Path | None = None) -> Image.Image:
    """Open an image file (a path, encoded bytes or an open binary file) and read its header only: no pixel
    is decoded or allocated.

    Raises DataError naming `name` (default: the path) when the file is missing, is not an image, has
    no pixels, or declares more than `max_image_pixels()`: a 100000 x 100000 PNG of a few hundred bytes
    would otherwise take 30 GB the moment it is decoded.
    """
    name, limit = _name(source, name), max_image_pixels()
    if os.environ.get(MAX_PIXELS_ENV) is not None:
        Image.MAX_IMAGE_PIXELS = limit  # the user chose a limit: PIL must not refuse first at twice its own
    try:
        img = Image.open(BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
    except FileNotFoundError:
        raise DataError(f"{name}: file not found") from None
    except Image.DecompressionBombError as err:
        raise _refused_by_pil(name, err, limit) from None
    except (UnidentifiedImageError, *_DECODE_ERRORS) as err:
        raise DataError(f"{name}: cannot read image ({err}); is it a valid image file?") from None
    w, h = img.size
    if limit is not None and w * h > limit:
        img.close()
        raise _too_many_pixels(name, f"{w}x{h} = {w * h:,} pixels", w * h, limit)
    if w < 1 or h < 1:
        img.close()
        raise DataError(f"{name}: image is {w}x{h}: it has no pixels")
    return img


def load_image(source: str | Path | bytes, name: str | Path | None = None) -> Image.Image:
    """`open_image`, then decode every pixel now, so a truncated file fails here rather than halfway
    through an epoch. -> the pixels as stored: EXIF orientation not applied (see `upright`)."""
    name = _name(source, name)
    if isinstance(source, (bytes, bytearray)):
        return _decode(open_image(source, name), name)
    try:
        file = open(source, "rb")
    except FileNotFoundError:
        raise DataError(f"{name}: file not found") from None
    except OSError as err:
        raise DataError(f"{name}: cannot read image ({err})") from None
    # From a file object PIL never memory-maps the pixels: Pillow 13 maps an uncompressed TIFF with
    # orientation 5-8 at its turned size and returns scrambled pixels. The file closes once decoded.
    with file:
        return _decode(open_image(file, name), name)


def _decode(img: Image.Image, name: str) -> Image.Image:
    try:
        img.load()
    except _DECODE_ERRORS as err:
        img.close()
        raise DataError(f"{name}: cannot read image ({err}); is it a valid image file?") from None
    return img


def exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation 1-8 of an opened image; 1 when there is none. A corrupt EXIF block or an
    orientation outside 1-8 counts as none, which is how browsers and annotation tools show the image,
    so a mask drawn on what they show lines up with what pixelwise reads."""
    try:
        value = img.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # PIL's EXIF parser raises SyntaxError, struct.error, TypeError, ... on a damaged block
        return 1
    return value if isinstance(value, int) and value in _UPRIGHT else 1


def upright(img: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says: phones store portrait photos as rotated landscape
    pixels plus that flag, and annotation tools show (and masks are drawn on) the turned image."""
    method = _UPRIGHT.get(exif_orientation(img))
    return img if method is None else img.transpose(method)


def upright_size(source: str | Path | bytes, name: str | Path | None = None) -> tuple[int, int]:
    """(width, height) as `read_image` will see it: EXIF-rotated photos swap their sides. Only the header
    is read, except of a TIFF: PIL turns those itself as it decodes them, and reports the turned size
    (with the orientation tag still set) before it does."""
    img = open_image(source, name)
    if img.format == "TIFF":
        img = upright(load_image(source, name))
        return img.width, img.height
    w, h = img.size
    # EXIF orientations 5-8 are the transposing ones (90 or 270 degrees)
    return (h, w) if exif_orientation(img) in (5, 6, 7, 8) else (w, h)


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> HxWx3 uint8.

    High-bit-depth images (16-bit or float microscopy, say) are stretched from their
    own min..max to 0..255: dividing by 65535 would turn a 12-bit scan black. NaN pixels
    of a float image show as its minimum and +-inf as its extremes, so they cannot spoil the stretch.
    """
    if img.mode == "F" or img.mode.startswith("I"):
        return np.repeat(_stretch(np.asarray(img, dtype=np.float64))[:, :, None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on black rather than dropping alpha blindly: transparent pixels of a
        # palette image would otherwise show whatever colour the palette happens to hold.
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def _stretch(values: np.ndarray) -> np.ndarray:
    """HxW numbers -> HxW uint8, their finite min..max mapped to 0..255."""
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.uint8)
    lo, hi = float(values[finite].min()), float(values[finite].max())
    values = np.clip(np.nan_to_num(values, nan=lo, posinf=hi, neginf=lo), lo, hi)
    if hi == lo:
        return np.zeros(values.shape, dtype=np.uint8)
    # float64 holds the whole float32 and int32 ranges, so hi - lo cannot overflow
    return np.round((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def read_image(path: str | Path | bytes, name: str | None = None) -> np.ndarray:
    """Read an image (a file, or its bytes named `name` in messages) as HxWx3 uint8 RGB, honouring EXIF
    orientation."""
    source = path if isinstance(path, (bytes, bytearray)) else Path(path)
    img = upright(load_image(source, name))
    try:
        return to_rgb_array(img)
    except (ValueError, OSError) as err:  # a mode PIL decodes but cannot convert
        raise DataError(f"{_name(source, name)}: cannot show image mode {img.mode!r} as RGB ({err}); save it as an "
                        "RGB PNG or JPEG") from None


def read_mask(path: str | Path) -> np.ndarray:
    """Read a class-index mask as HxW int64, turned by its EXIF orientation like its image.

    Palette PNGs (VOC) carry the index directly, whatever colours the palette gives it; grey
    and 16-bit PNGs carry it as the value. Colour masks and float masks are refused: their
    values are not class indices, and rounding a float would invent labels.
    """
    path = Path(path)
    img = upright(load_image(path))
    if img.mode in ("P", "L") or img.mode.startswith("I"):
        return np.asarray(img).astype(np.int64)
    if img.mode in ("RGB", "RGBA"):
        arr = np.asarray(img)[:, :, :3]
        if (arr[:, :, 0] == arr[:, :, 1]).all() and (arr[:, :, 0] == arr[:, :, 2]).all():
            return arr[:, :, 0].astype(np.int64)
        raise DataError(
            f"{path}: mask is a colour (RGB) image, but masks must hold class indices; "
            "save it as a greyscale or palette PNG whose pixel values are the labels"
        )
    if img.mode == "F":
        raise DataError(f"{path}: mask holds floating-point values (mode 'F'), but masks must hold whole class "
                        "indices; save it as a greyscale, 16-bit or palette PNG whose pixel values are the labels")
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


def _check_fits_png(labels: np.ndarray, path: Path) -> None:
    """Refuse labels a palette PNG cannot hold: casting 300 to uint8 would silently write label 44."""
    values = np.asarray(labels)
    bad = (values < 0) | (values > 255)
    if values.dtype.kind == "f":
        bad |= values != np.round(values)  # NaN included: it equals nothing
    if bad.any():
        raise ValueError(f"{path}: label {values[bad][0]} does not fit a palette PNG, which holds whole labels 0-255")


# zlib level for PNGs written in bulk (predictions, overlays): level 1 compresses several times faster
# than PIL's default 6 for slightly larger files, for photos and masks alike (figures in docs/deploy.md).
FAST_PNG = 1
DEFAULT_PNG = 6


def write_label_png(path: str | Path, labels: np.ndarray, palette: np.ndarray,
                    compress_level: int = DEFAULT_PNG) -> None:
    """Save HxW class indices as a palette PNG: the pixel values are the labels, the colours are for people.

    Written to a temporary file and renamed over `path`, so a crash or a full disk never
    leaves a half-written mask where a good one was.
    """
    path = Path(path)
    _check_fits_png(labels, path)
    save_png_atomic(label_image(labels, palette), path, compress_level)


def label_image(labels: np.ndarray, palette: np.ndarray) -> Image.Image:
    """HxW class indices (0-255) as a palette image: the values are the labels, the colours are for people."""
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    img.putpalette(palette.astype(np.uint8).reshape(-1).tolist())
    return img


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` a temporary file beside `path`, then rename it over `path`: readers see the old file or
    the new one, and a crash or a full disk leaves no half-written file behind."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_png_atomic(img: Image.Image, path: str | Path, compress_level: int = DEFAULT_PNG,
                    strategy: int = zlib.Z_DEFAULT_STRATEGY) -> None:
    """`strategy`: zlib's. A photo (an overlay) has few repeats for LZ77 to find: Z_HUFFMAN_ONLY writes
    one faster than level 1 does, and smaller (docs/deploy.md); masks, long runs of one value, need the
    default."""
    write_atomic(path, lambda tmp: img.save(tmp, format="PNG", compress_level=compress_level, compress_type=strategy))


def overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend class colours over an RGB image. image: HxWx3 uint8, labels: HxW -> HxWx3 uint8,
    (1 - alpha) x image + alpha x colour, rounded half to even."""
    colours = palette[labels if labels.dtype == np.uint8 else labels.astype(np.int64).clip(0, 255)]
    if alpha == 0.5:  # the same rounding in integers, faster than floats: a folder predicts an overlay per image
        total = image.astype(np.uint16) + colours
        half = total >> 1
        return (half + (total & half & 1)).astype(np.uint8)  # an odd total's .5 goes to the even neighbour
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours.astype(np.float32)
    return blended.round().clip(0, 255).astype(np.uint8)


def gather_images(inputs) -> list[Path]:
    """Files as given, folders expanded to the images inside them (not recursive), in name order."""
    found = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.is_file():
            found.append(item)
        else:
            raise DataError(f"{item}: no such file or folder")
    if not found:
        raise DataError(f"no images found in {', '.join(map(str, inputs))} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return found
