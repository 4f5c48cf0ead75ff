"""Hostile and odd inputs for pixelwise's readers, shared by test_fuzz.py (hypothesis draws the parameters)
and benchmarks/fuzz_inputs.py (a counted run outside pytest, numpy draws them).

Each case builds its files from plain parameters with numpy and PIL, runs pixelwise on them and checks
the result. It returns "ok" (the correct output) or "refused" (a DataError naming the file), and raises
AssertionError for a wrong output or a message that does not name the file. Any other exception is a crash.
"""
from __future__ import annotations

import base64
import io
import json
import math
import random
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pixelwise.data.importers import import_dataset
from pixelwise.data.io import read_image, read_mask
from pixelwise.data.transforms import resize_pair, to_tensors, train_transform
from pixelwise.errors import DataError

OK, REFUSED = "ok", "refused"

# Image modes and the formats that store each without loss (JPEG: with loss). The orientation goes in
# EXIF for PNG, JPEG and WebP, in TIFF's own tag 274 for TIFF; BMP has none.
IMAGE_FORMATS = {"L": ("PNG", "JPEG", "TIFF", "WEBP", "BMP"), "LA": ("PNG", "TIFF", "WEBP"), "P": ("PNG", "TIFF", "BMP"),
                 "RGB": ("PNG", "JPEG", "TIFF", "WEBP", "BMP"), "RGBA": ("PNG", "TIFF", "WEBP"),
                 "I;16": ("PNG", "TIFF"), "I": ("TIFF",), "F": ("TIFF",), "CMYK": ("JPEG", "TIFF")}
LOSSY = ("JPEG",)
SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "WEBP": ".webp", "BMP": ".bmp"}
# Mask kinds -> formats. The first group must read back exactly, the second must be refused.
MASK_FORMATS = {"L": ("PNG", "TIFF", "BMP"), "P": ("PNG", "TIFF", "BMP"), "I;16": ("PNG", "TIFF"), "I": ("TIFF",),
                "RGB-grey": ("PNG", "TIFF"), "RGBA-grey": ("PNG",),
                "RGB-colour": ("PNG", "TIFF"), "F-whole": ("TIFF",), "F-fraction": ("TIFF",), "LA": ("PNG",),
                "CMYK": ("TIFF",), "1": ("PNG",)}
MASKS_REFUSED = ("RGB-colour", "F-whole", "F-fraction", "LA", "CMYK", "1")
ORIENTATION_TAG = 0x0112


# --- building files -----------------------------------------------------------------------------------

def random_values(rng: np.random.Generator, mode: str, h: int, w: int) -> np.ndarray:
    """Pixel values for `mode`, HxW or HxWxC, spanning the mode's whole range (F: with NaN and infinities)."""
    if mode in ("L", "P", "1"):
        return rng.integers(0, 256, (h, w), dtype=np.uint8)
    if mode in ("LA", "RGB", "RGBA", "CMYK"):
        return rng.integers(0, 256, (h, w, len(mode)), dtype=np.uint8)
    if mode == "I;16":
        return rng.integers(0, 1 << 16, (h, w), dtype=np.uint16)
    if mode == "I":
        return rng.integers(-(1 << 31), 1 << 31, (h, w), dtype=np.int64).astype(np.int32)
    values = (rng.standard_normal((h, w)) * 10.0 ** rng.integers(-3, 30)).astype(np.float32)
    specials = np.array([np.nan, np.inf, -np.inf, 0.0], dtype=np.float32)
    return np.where(rng.random((h, w)) < 0.1, specials[rng.integers(0, 4, (h, w))], values)


def pil_image(mode: str, values: np.ndarray, palette: np.ndarray | None = None) -> Image.Image:
    """A PIL image of `mode` holding exactly `values` (a palette image gets `palette`, 256x3 uint8)."""
    h, w = values.shape[:2]
    if mode == "1":
        return Image.fromarray(values >= 128)
    img = Image.frombytes(mode, (w, h), np.ascontiguousarray(values).tobytes())
    if mode == "P":
        img.putpalette(palette.reshape(-1).tolist())
    return img


def save_image(img: Image.Image, path: Path, fmt: str, orientation: int = 1) -> Path:
    """Save `img` as `fmt` with an EXIF (TIFF: tag) orientation; lossless where the format allows."""
    options: dict = {"WEBP": {"lossless": True}, "JPEG": {"quality": 95}}.get(fmt, {})
    if orientation != 1 and fmt == "TIFF":
        options["tiffinfo"] = {274: orientation}
    elif orientation != 1:
        exif = Image.Exif()
        exif[ORIENTATION_TAG] = orientation
        options["exif"] = exif
    img.save(path, format=fmt, **options)
    return path


def orient(values: np.ndarray, orientation: int) -> np.ndarray:
    """Stored pixels -> what a viewer shows for EXIF orientation 1-8 (EXIF 2.3, tag 274), in plain numpy."""
    upright = {1: lambda a: a, 2: np.fliplr, 3: lambda a: np.rot90(a, 2), 4: np.flipud,
               5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1),
               7: lambda a: np.rot90(a, 2).swapaxes(0, 1), 8: lambda a: np.rot90(a, 1)}
    return upright[orientation](values)


def png_bytes(w: int, h: int, idat: bytes = b"\0" * 64) -> bytes:
    """A grey 8-bit PNG whose header declares w x h, followed by a tiny IDAT: what a decompression bomb looks
    like to a reader before it decodes (a real one inflates to w*h bytes; this one is merely truncated)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(idat)) + chunk(b"IEND", b"")


def jpeg_declaring(w: int, h: int) -> bytes:
    """A real 8x8 JPEG whose frame header (SOF0) is patched to declare w x h (each at most 65535)."""
    buf = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", h, w)
    return bytes(data)


def bmp_declaring(w: int, h: int) -> bytes:
    """A real 4x4 BMP whose info header is patched to declare w x h."""
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (9, 9, 9)).save(buf, format="BMP")
    data = bytearray(buf.getvalue())
    data[18:26] = struct.pack("<ii", w, h)
    return bytes(data)


def expected_rgb(mode: str, values: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """What read_image must return for stored `values` of `mode`, before orientation: HxWx3 uint8.
    Alpha composites onto black; 16-bit, 32-bit and float stretch their finite min..max to 0..255."""
    if mode == "L":
        return np.repeat(values[:, :, None], 3, axis=2)
    if mode == "RGB":
        return values
    if mode == "P":
        return palette[values]
    if mode in ("LA", "RGBA"):
        colour = values[:, :, :-1].astype(np.float64) * values[:, :, -1:] / 255
        return np.broadcast_to(np.round(colour), values.shape[:2] + (3,)).astype(np.uint8)
    if mode == "CMYK":  # PIL's own conversion, the one every viewer built on it shows
        return np.asarray(pil_image(mode, values).convert("RGB"))
    v = values.astype(np.float64)
    finite = np.isfinite(v)
    lo, hi = (v[finite].min(), v[finite].max()) if finite.any() else (0.0, 0.0)
    v = np.where(np.isnan(v), lo, np.clip(v, lo, hi))
    grey = np.zeros(v.shape) if hi == lo else np.round((v - lo) * (255.0 / (hi - lo)))
    return np.repeat(grey.astype(np.uint8)[:, :, None], 3, axis=2)


def refused(err: DataError, path: Path | str) -> str:
    """Check a refusal names the file; -> REFUSED."""
    assert str(path) in str(err), f"the error does not name {path}: {err}"
    return REFUSED


# --- images and masks ---------------------------------------------------------------------------------

def image_case(tmp: Path, mode: str, fmt: str, h: int, w: int, orientation: int, seed: int) -> str:
    """read_image on an image of `mode` stored as `fmt` with an EXIF orientation: exactly the upright pixels
    (lossy formats: PIL's decode of the file, upright), never a refusal."""
    rng = np.random.default_rng(seed)
    values = random_values(rng, mode, h, w)
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    orientation = orientation if fmt != "BMP" else 1
    path = save_image(pil_image(mode, values, palette), tmp / f"img{SUFFIX[fmt]}", fmt, orientation)
    if fmt in LOSSY:
        with Image.open(path) as stored:
            want = expected_rgb(stored.mode, np.asarray(stored))
    else:
        want = expected_rgb(mode, values, palette)
    got = read_image(path)
    want = orient(want, orientation)
    assert got.dtype == np.uint8 and got.shape == want.shape, (got.shape, want.shape)
    tolerance = 1 if mode in ("LA", "RGBA") else 0  # PIL's alpha compositing rounds in integers
    assert np.abs(got.astype(int) - want).max(initial=0) <= tolerance, "wrong pixels"
    return OK


def mask_values(rng: np.random.Generator, kind: str, h: int, w: int) -> tuple[str, np.ndarray]:
    """-> (PIL mode, stored values) for a mask kind of MASK_FORMATS."""
    if kind.startswith("RGB"):
        mode = kind.split("-")[0]
        grey = rng.integers(0, 256, (h, w), dtype=np.uint8)
        values = np.repeat(grey[:, :, None], len(mode), axis=2)
        if kind == "RGB-colour":
            values[0, 0] = (grey[0, 0], grey[0, 0] ^ 1, grey[0, 0])  # one pixel with colour is enough
        if mode == "RGBA":
            values[:, :, 3] = rng.integers(0, 256, (h, w))  # alpha is not part of the label
        return mode, values
    if kind.startswith("F"):
        values = rng.integers(0, 300, (h, w)).astype(np.float32)
        if kind == "F-fraction":
            values[-1, -1] += 0.5
        return "F", values
    return kind, random_values(rng, kind, h, w)


def mask_case(tmp: Path, kind: str, fmt: str, h: int, w: int, orientation: int, seed: int) -> str:
    """read_mask: class indices come back exact and upright (16-bit labels above 255 included, a palette
    mask's index whatever its colours), and colour, float, grey+alpha and CMYK masks are refused."""
    rng = np.random.default_rng(seed)
    mode, values = mask_values(rng, kind, h, w)
    shuffled = rng.permutation(256).astype(np.uint8)
    palette = np.stack([shuffled, shuffled[::-1], shuffled], axis=1)  # a palette that is not the index
    orientation = orientation if fmt != "BMP" else 1
    path = save_image(pil_image(mode, values, palette), tmp / f"mask{SUFFIX[fmt]}", fmt, orientation)
    try:
        got = read_mask(path)
    except DataError as err:
        assert kind in MASKS_REFUSED, f"{kind} mask refused: {err}"
        return refused(err, path)
    assert kind not in MASKS_REFUSED, f"{kind} mask read as labels {np.unique(got)[:5]}"
    labels = values[:, :, 0] if values.ndim == 3 else values
    want = orient(labels.astype(np.int64), orientation)
    assert got.dtype == np.int64 and got.shape == want.shape and np.array_equal(got, want), "wrong labels"
    return OK


def pair_case(tmp: Path, image_fmt: str, h: int, w: int, orientation: int, mask_upright: bool, seed: int) -> str:
    """An image and its mask read by pixelwise stay aligned, pixel for pixel: the image is stored with an
    EXIF orientation, the mask either with the same one or already upright (drawn on the turned image).
    The image's grey level encodes the label, in 8x8 blocks so that JPEG keeps it within a few levels."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 4, (-(-h // 8), -(-w // 8)))
    labels = np.kron(blocks, np.ones((8, 8), dtype=np.int64))[:h, :w].astype(np.uint8)
    image = save_image(Image.fromarray(labels * 80), tmp / f"pair{SUFFIX[image_fmt]}", image_fmt, orientation)
    mask_pixels = orient(labels, orientation) if mask_upright else labels
    mask = save_image(Image.fromarray(np.ascontiguousarray(mask_pixels)), tmp / "pair_mask.png", "PNG",
                      1 if mask_upright else orientation)
    got_image, got_mask = read_image(image), read_mask(mask)
    assert got_image.shape[:2] == got_mask.shape == orient(labels, orientation).shape
    tolerance = 12 if image_fmt in LOSSY else 0
    assert np.abs(got_image[:, :, 0].astype(int) - got_mask * 80).max() <= tolerance, "image and mask misaligned"
    return OK


def truncated_case(tmp: Path, fmt: str, mode: str, h: int, w: int, keep: float, seed: int) -> str:
    """A file cut anywhere (zero bytes included) reads as the whole file does or is refused naming the file:
    never a partial image."""
    rng = np.random.default_rng(seed)
    full = save_image(pil_image(mode, random_values(rng, mode, h, w), rng.integers(0, 256, (256, 3), np.uint8)),
                      tmp / f"full{SUFFIX[fmt]}", fmt, orientation=int(rng.integers(1, 9)) if fmt != "BMP" else 1)
    data = full.read_bytes()
    cut = tmp / f"cut{SUFFIX[fmt]}"
    cut.write_bytes(data[:int(keep * len(data))])
    outcome = OK
    for reader in (read_image, read_mask):
        try:
            whole = reader(full)
        except DataError:
            whole = None  # read_mask refuses colour images; the cut file must then be refused too
        try:
            got = reader(cut)
        except DataError as err:
            outcome = refused(err, cut)
            continue
        assert whole is not None and np.array_equal(got, whole), f"{reader.__name__} read a cut file differently"
    return outcome


def corrupt_case(tmp: Path, fmt: str, mode: str, h: int, w: int, edits: list[tuple[float, int]], seed: int) -> str:
    """Bytes overwritten at random places: read_image gives an HxWx3 uint8 image or refuses naming the file,
    read_mask an HxW int64 mask or refuses. Whether the pixels are right cannot be known."""
    rng = np.random.default_rng(seed)
    path = save_image(pil_image(mode, random_values(rng, mode, h, w), rng.integers(0, 256, (256, 3), np.uint8)),
                      tmp / f"bad{SUFFIX[fmt]}", fmt, orientation=int(rng.integers(1, 9)) if fmt != "BMP" else 1)
    data = bytearray(path.read_bytes())
    for where, byte in edits:
        data[min(int(where * len(data)), len(data) - 1)] = byte
    path.write_bytes(bytes(data))
    outcome = OK
    for reader, ndim, dtype in ((read_image, 3, np.uint8), (read_mask, 2, np.int64)):
        try:
            got = reader(path)
        except DataError as err:
            outcome = refused(err, path)
            continue
        assert got.ndim == ndim and got.dtype == dtype and min(got.shape[:2]) >= 1, (got.shape, got.dtype)
    return outcome


def bomb_case(tmp: Path, fmt: str, w: int, h: int) -> str:
    """A header declaring more pixels than pixelwise decodes is refused, fast, naming the file, the declared
    size and how to allow it; the caller checks that memory stays small."""
    data = {"PNG": png_bytes, "JPEG": jpeg_declaring, "BMP": bmp_declaring}[fmt](w, h)
    path = tmp / f"bomb{SUFFIX[fmt]}"
    path.write_bytes(data)
    for reader in (read_image, read_mask):
        start = time.perf_counter()
        try:
            reader(path)
        except DataError as err:
            assert time.perf_counter() - start < 1.0, "a bomb must fail before decoding"
            message = str(err)
            assert f"{w * h:,} pixels" in message and "PIXELWISE_MAX_IMAGE_PIXELS" in message, message
            refused(err, path)
            continue
        raise AssertionError(f"{reader.__name__} decoded a {w}x{h} header")
    return REFUSED


# --- transforms ---------------------------------------------------------------------------------------

def transform_case(h: int, w: int, crop: tuple[int, int], scale_range: tuple[float, float], labels: list[int],
                   ignore_index: int, jitter: float, seed: int) -> str:
    """train_transform and resize_pair on a random pair: shapes as asked, image finite in 0..1, and every mask
    value one of the input's or the ignore index. At scale 1 without jitter the image still encodes the mask
    (crop and flip moved both alike), and padding is 0 under ignore."""
    rng = np.random.default_rng(seed)
    mask = np.asarray(labels, dtype=np.int64)[rng.integers(0, len(labels), (h, w))]
    code = rng.integers(0, 256, (max(labels) + 1,), dtype=np.uint8) if max(labels) < 256 else None
    image = (np.repeat(code[mask][:, :, None], 3, axis=2) if code is not None
             else rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    allowed = set(labels) | {ignore_index}
    img_t, mask_t = to_tensors(image, mask)
    out_image, out_mask = train_transform(crop, scale_range, ignore_index, jitter)(img_t, mask_t, random.Random(seed))
    assert tuple(out_image.shape) == (3, *crop) and tuple(out_mask.shape) == crop, (out_image.shape, out_mask.shape)
    check_pair(out_image, out_mask, allowed)
    if scale_range == (1.0, 1.0) and jitter == 0 and code is not None:
        labelled = out_mask != ignore_index
        pixels = (out_image[0] * 255).round().long()
        assert (pixels[labelled] == torch.from_numpy(code.astype(np.int64))[out_mask[labelled]]).all(), "image and mask misaligned"
        if ignore_index not in labels:
            assert (out_image[:, ~labelled] == 0).all(), "padding is not black"
    size = (int(rng.integers(1, 3 * h + 1)), int(rng.integers(1, 3 * w + 1)))
    resized_image, resized_mask = resize_pair(img_t, mask_t, size)
    assert tuple(resized_image.shape) == (3, *size) and tuple(resized_mask.shape) == size
    check_pair(resized_image, resized_mask, set(labels))
    return OK


def check_pair(image, mask, allowed: set[int]) -> None:
    assert image.dtype.is_floating_point and bool(image.isfinite().all()), "NaN or inf in the image"
    assert float(image.min()) >= 0 and float(image.max()) <= 1, "image outside 0..1"
    assert str(mask.dtype) == "torch.int64", mask.dtype
    found = set(mask.unique().tolist())
    assert found <= allowed, f"mask values {sorted(found - allowed)[:5]} were not in the input"


# --- importers ----------------------------------------------------------------------------------------

# JSON values no field expects: each is written with json.dumps (NaN and Infinity included) and read back.
HOSTILE = [None, True, -1, 0, -5.5, 10 ** 30, 10 ** 400, 1e308, math.nan, math.inf, -math.inf, "", "x", "NaN", [], {},
           [[]], [1, 2], {"a": 1}, 2 ** 63, [[math.nan, 1], [2, 3]]]  # 10 ** 400: an int no float can hold
# Segmentations and point lists built to break rasterisers: NaN hangs pycocotools, 1e9 segfaults it, a
# long zig-zag eats memory (20,000 points across 3000 pixels: 3 GB); huge radii hang PIL's ellipse.
ZIGZAG = [v for i in range(30000) for v in ((-12.0 if i % 2 else 24.0), i * 9 / 30000)]  # 1,080,000 px of outline
COCO_SEGMENTATIONS = [[[1, 1, math.nan, 1, 6, 5]], [[1, 1, math.inf, 1, 6, 5]], [[0, 0, 1e9, 0, 1e9, 1e9, 0, 1e9]],
                      [[1, 1, -1e300, 1, 6, 5]], [ZIGZAG], [[1, 1, 6, 1, 6]], [[1, "a", 6, 1, 6, 5]], [[]], [],
                      {"size": [10, 12], "counts": [0, 10 ** 9]}, {"size": [10, 12], "counts": [-5, 3]},
                      {"size": [-1, 5], "counts": "abc"}, {"size": [10 ** 12, 10 ** 12], "counts": [1]},
                      {"size": [10, 12], "counts": "\x00\xff"}, {"size": [10, 12], "counts": ""},
                      {"size": [10, 12], "counts": "0"}, {"size": [10, 12], "counts": "0h3"},  # the last is all 1
                      {"size": [10, 12], "counts": [0, 120]}, {"counts": [1]}, {"size": [10, 12]}]
LABELME_POINTS = [[[math.nan, 1], [5, 5]], [[math.inf, 1], [5, 5]], [[1e12, 1], [5, 5]], [[5, 5], [7e5, 5]],
                  [[10 ** 400, 1], [5, 5]],
                  [[2, 2], [1e300, 3], [4, 4]], [[1, 1]], [], [[1, 2, 3]], [["a", 1], [2, 2]], [[None, 1], [2, 2]],
                  [[x % 12, (x * 7) % 10] for x in range(50000)], [[-30, -30], [50, 50]]]
W, H = 12, 10  # every importer fixture image: 12 wide, 10 high


def png_file(path: Path, colour: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (W, H), (colour, 40, 80)).save(path)
    return path


def coco_base(root: Path) -> dict:
    """Images a.png and b.png with one polygon each, cat on a and dog on b."""
    png_file(root / "images" / "a.png", 10)
    png_file(root / "images" / "b.png", 200)
    return {"categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
            "images": [{"id": 1, "file_name": "a.png", "height": H, "width": W},
                       {"id": 2, "file_name": "b.png", "height": H, "width": W}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[1, 1, 6, 1, 6, 5, 1, 5]],
                             "iscrowd": 0},
                            {"id": 2, "image_id": 2, "category_id": 2, "segmentation": [[2, 2, 9, 2, 9, 8, 2, 8]],
                             "iscrowd": 0}]}


DELETE = object()  # as a damage value: remove the key instead of setting it
COCO_KEYS = {"record": ("id", "file_name", "height", "width", None), "annotation": ("image_id", "category_id",
             "segmentation", "iscrowd", None), "category": ("id", "name", None), "segmentation": ("segmentation",),
             "top": ("images", "annotations", "categories")}


def damage(container: dict | list, key, value) -> None:
    """Set `container[key]` to `value`, or remove the key when `value` is DELETE."""
    if value is DELETE:
        container.pop(key) if isinstance(container, list) else container.pop(key, None)
    else:
        container[key] = value


def damage_coco(data: dict, target: str, key: str | None, value) -> None:
    """Damage a top-level list, or the first image record, annotation, segmentation or category (all a's);
    `key` None replaces the whole record."""
    if target == "top":
        damage(data, key, value)
        return
    if target == "segmentation":
        target, key = "annotation", "segmentation"
    records = data[{"record": "images", "annotation": "annotations", "category": "categories"}[target]]
    damage(records, 0, value) if key is None else damage(records[0], key, value)


def import_outcome(source: str, src: Path, dst: Path, reference: np.ndarray | None, **options) -> str:
    """Import; the damaged item a must be imported or reported among the failures, each with a reason, and
    the intact item b must come out exactly as `reference`. With `reference` None the damage is to the file
    as a whole (a category, a top-level list, a shared id): then b may change, and a DataError for the
    whole import is a refusal."""
    try:
        summary = import_dataset(source, src, dst, log=lambda _: None, **options)
    except DataError as err:
        assert reference is None, f"damage to item a failed the whole import: {err}"
        return REFUSED
    imported = {p.stem for p in (dst / "masks").glob("*.png")}
    assert "a" in imported or summary.failed, "item a was neither imported nor reported"
    assert all(isinstance(why, str) and why for _, why in summary.failed), "a failure without a reason"
    if reference is not None:
        assert "b" in imported, f"b not imported: {summary.failed}"
        assert np.array_equal(np.asarray(Image.open(dst / "masks" / "b.png")), reference), "b changed"
    return REFUSED if summary.failed else OK


_REFERENCE: dict[str, np.ndarray] = {}


def clean_import(source: str, tmp: Path, build, **options) -> np.ndarray:
    """b's mask from an undamaged import: the oracle a damaged a must not change."""
    if source not in _REFERENCE:
        src = build(tmp / f"clean-{source}")
        import_dataset(source, src, tmp / f"clean-{source}-out", log=lambda _: None, **options)
        _REFERENCE[source] = np.asarray(Image.open(tmp / f"clean-{source}-out" / "masks" / "b.png"))
    return _REFERENCE[source]


def write_coco(root: Path, data: dict | None = None) -> Path:
    data = coco_base(root) if data is None else data
    (root / "annotations.json").write_text(json.dumps(data))
    return root / "annotations.json"


def coco_case(tmp: Path, target: str, key: str | None, value) -> str:
    """COCO JSON with one damaged record, annotation, segmentation, category or top-level list."""
    reference = clean_import("coco", tmp, write_coco)
    root = tmp / "coco"
    data = coco_base(root)
    damage_coco(data, target, key, value)
    # a shared image id fails b too; a damaged category or list may change b's classes
    keeps_b = target in ("record", "annotation", "segmentation") and not (target == "record" and key in ("id", None))
    return import_outcome("coco", write_coco(root, data), tmp / "coco-out", reference if keeps_b else None)


def labelme_json(image: str, shapes: list) -> dict:
    return {"version": "5.0.1", "flags": {}, "shapes": shapes, "imagePath": image, "imageData": None,
            "imageHeight": H, "imageWidth": W}


def labelme_base(root: Path) -> tuple[dict, dict]:
    png_file(root / "a.png", 10)
    png_file(root / "b.png", 200)
    a = labelme_json("a.png", [{"label": "cat", "points": [[1, 1], [5, 4]], "shape_type": "rectangle"}])
    b = labelme_json("b.png", [{"label": "dog", "points": [[2, 2], [9, 2], [9, 8], [2, 8]], "shape_type": "polygon"}])
    return a, b


def write_labelme(root: Path, a: dict | None = None) -> Path:
    base_a, b = labelme_base(root)
    (root / "a.json").write_text(json.dumps(base_a if a is None else a))
    (root / "b.json").write_text(json.dumps(b))
    (root.parent / "labels.txt").write_text("__ignore__\n_background_\ncat\ndog\n")
    return root


LABELME_KEYS = {"file": ("shapes", "imagePath", "imageData", "imageHeight", "imageWidth"),
                "shape": ("label", "points", "shape_type", "mask", None)}
BOMB_PATCH = base64.b64encode(png_bytes(100_000, 100_000)).decode()
CUT_PATCH = base64.b64encode(png_bytes(4, 4)[:40]).decode()
# whole shapes that replace a's first one: mask patches that are a bomb or cut short, circles from one
# that covers the image to one whose radius PIL's ellipse never finishes, labels and kinds that do not exist
LABELME_SHAPES = [{"label": "cat", "shape_type": "mask", "points": [[0, 0], [3, 3]], "mask": BOMB_PATCH},
                  {"label": "cat", "shape_type": "mask", "points": [[0, 0], [3, 3]], "mask": CUT_PATCH},
                  {"label": "cat", "shape_type": "mask", "points": [[0, 0], [3, 3]], "mask": "@@not base64"},
                  {"label": "cat", "shape_type": "circle", "points": [[5, 5], [5, 7e5]]},
                  {"label": "cat", "shape_type": "circle", "points": [[5, 5], [24, 20]]},
                  {"label": 5, "shape_type": "polygon", "points": [[0, 0], [3, 0], [3, 3]]},
                  {"label": "cat", "shape_type": "spline", "points": [[0, 0], [3, 0], [3, 3]]},
                  {"label": "cat", "shape_type": ["polygon"], "points": [[0, 0], [3, 0], [3, 3]]}]


def labelme_case(tmp: Path, target: str, key: str | None, value) -> str:
    """LabelMe folder where a.json has one damaged top-level field, shape or point list; b.json is intact."""
    reference = clean_import("labelme", tmp, lambda root: write_labelme(root / "lm"),
                             labels=tmp / "clean-labelme" / "labels.txt")
    root = tmp / "lm" / "lm"
    a, _ = labelme_base(root)
    if target == "file":
        damage(a, key, value)
    elif key is None:
        damage(a["shapes"], 0, value)
    else:
        damage(a["shapes"][0], key, value)
    src = write_labelme(root, a)
    return import_outcome("labelme", src, tmp / "lm-out", reference, labels=tmp / "lm" / "labels.txt")
