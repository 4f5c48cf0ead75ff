"""Hostile and odd inputs, property-tested: image and mask decoding, the joint transforms and the importers
give the right output or a DataError naming the file, never another exception, a hang or a wrong label.

The cases live in fuzz_cases.py, shared with benchmarks/fuzz_inputs.py; here hypothesis draws their
parameters, derandomized so that every run tries the same examples.
"""
from __future__ import annotations

import math
import tempfile
import time
import zlib
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

import fuzz_cases as fc
from pixelwise.data.checks import UNREADABLE, check_dataset
from pixelwise.data.dataset import SegmentationDataset
from pixelwise.data.importers import import_dataset
from pixelwise.data.io import MAX_PIXELS_ENV, read_image, read_mask, write_label_png
from pixelwise.errors import DataError

# PIL warns before pixelwise refuses a bomb; the warning is expected, the refusal is what is tested
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
FUZZ = settings(max_examples=100, deadline=timedelta(seconds=10), derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SIZES = st.one_of(st.just((1, 1)), st.tuples(st.just(1), st.integers(1, 40)), st.tuples(st.integers(1, 40), st.just(1)),
                  st.tuples(st.integers(1, 40), st.integers(1, 40)))
ORIENTATIONS = st.integers(1, 8)
SEEDS = st.integers(0, 2 ** 32 - 1)


@contextmanager
def fresh_dir():
    """A folder for one example: hypothesis reruns a test body many times within one pytest tmp_path."""
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


def peak_memory_growth(action) -> int:
    """Bytes the process's peak resident memory rose while `action()` ran (Linux: writing 5 to
    /proc/self/clear_refs resets the peak to the current resident size)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pytest.skip("cannot reset the peak resident memory on this system")
    before = _status_kb("VmRSS")
    action()
    return (_status_kb("VmHWM") - before) * 1024


def _status_kb(field: str) -> int:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1])


# --- images: every mode, size, format and orientation -----------------------------------------------

@st.composite
def image_params(draw):
    mode = draw(st.sampled_from(sorted(fc.IMAGE_FORMATS)))
    h, w = draw(SIZES)
    return dict(mode=mode, fmt=draw(st.sampled_from(fc.IMAGE_FORMATS[mode])), h=h, w=w,
                orientation=draw(ORIENTATIONS), seed=draw(SEEDS))


@FUZZ
@given(image_params())
def test_every_image_mode_reads_as_its_upright_rgb_pixels(params):
    with fresh_dir() as tmp:
        assert fc.image_case(tmp, **params) == fc.OK


@pytest.mark.parametrize("mode, fmt", [(mode, fmt) for mode, fmts in fc.IMAGE_FORMATS.items() for fmt in fmts])
def test_each_mode_in_each_format_at_1x1_1xn_and_nx1(tmp_path, mode, fmt):
    for h, w in ((1, 1), (1, 7), (7, 1)):
        assert fc.image_case(tmp_path, mode, fmt, h, w, orientation=6, seed=w) == fc.OK


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "WEBP"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_all_eight_orientations_turn_image_and_mask_alike(tmp_path, fmt, orientation):
    for h, w in ((3, 5), (1, 4), (4, 1)):
        assert fc.image_case(tmp_path, "L" if fmt != "WEBP" else "RGB", fmt, h, w, orientation, seed=h) == fc.OK
        for mask_upright in (False, True):
            assert fc.pair_case(tmp_path, fmt, 9 * h, 7 * w, orientation, mask_upright, seed=w) == fc.OK
    # uncompressed L TIFFs: Pillow 13 memory-maps them at the turned size and scrambles 5-8 unless given a file
    assert fc.mask_case(tmp_path, "L", "TIFF", 3, 5, orientation, seed=1) == fc.OK


def test_float_image_with_nan_and_infinities_stretches_its_finite_range(tmp_path):
    Image.fromarray(np.array([[math.nan, 0, 5, 10, math.inf, -math.inf]], np.float32)).save(tmp_path / "f.tif")
    assert read_image(tmp_path / "f.tif")[0, :, 0].tolist() == [0, 0, 128, 255, 255, 0]


def test_damaged_exif_block_reads_the_stored_pixels(tmp_path):
    """A broken EXIF header (PIL raises SyntaxError, struct.error, TypeError...) tells nothing about the
    orientation: the image is read as stored, as browsers show it."""
    stored = np.arange(6, dtype=np.uint8).reshape(2, 3) * 40
    Image.fromarray(stored).save(tmp_path / "exif.png", exif=b"ExiP\0\0MM\0*\0\0\0\x08")
    assert read_image(tmp_path / "exif.png")[:, :, 0].tolist() == stored.tolist()
    assert read_mask(tmp_path / "exif.png").tolist() == stored.tolist()


# --- masks: labels come back exact, or the mask is refused -------------------------------------------

@st.composite
def mask_params(draw):
    kind = draw(st.sampled_from(sorted(fc.MASK_FORMATS)))
    h, w = draw(SIZES)
    return dict(kind=kind, fmt=draw(st.sampled_from(fc.MASK_FORMATS[kind])), h=h, w=w,
                orientation=draw(ORIENTATIONS), seed=draw(SEEDS))


@FUZZ
@given(mask_params())
def test_masks_keep_every_label_or_are_refused(params):
    with fresh_dir() as tmp:
        outcome = fc.mask_case(tmp, **params)
    assert outcome == (fc.REFUSED if params["kind"] in fc.MASKS_REFUSED else fc.OK)


@pytest.mark.parametrize("kind, fmt", [(kind, fmt) for kind, fmts in fc.MASK_FORMATS.items() for fmt in fmts])
def test_each_mask_kind_in_each_format(tmp_path, kind, fmt):
    for h, w in ((1, 1), (1, 7), (7, 1)):
        outcome = fc.mask_case(tmp_path, kind, fmt, h, w, orientation=8, seed=h)
        assert outcome == (fc.REFUSED if kind in fc.MASKS_REFUSED else fc.OK)


def test_16_bit_label_300_survives_reading_and_the_cache(tmp_path):
    labels = np.array([[0, 300], [255, 300]], dtype=np.uint16)
    Image.fromarray(labels).save(tmp_path / "m.png")
    Image.new("RGB", (2, 2)).save(tmp_path / "i.png")
    assert read_mask(tmp_path / "m.png").tolist() == [[0, 300], [255, 300]]
    dataset = SegmentationDataset([(tmp_path / "i.png", tmp_path / "m.png")], num_classes=301, ignore_index=255,
                                  cache=True)
    assert dataset.load(0)[1].tolist() == dataset.load(0)[1].tolist() == [[0, 300], [255, 300]]  # read, then cached
    with pytest.raises(DataError, match="m.png has label 300 but the dataset has 21 classes"):
        SegmentationDataset([(tmp_path / "i.png", tmp_path / "m.png")], num_classes=21, ignore_index=255).load(0)


def test_float_mask_is_refused_not_truncated(tmp_path):
    Image.fromarray(np.array([[0.0, 1.5]], np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(DataError, match=r"f.tif: mask holds floating-point values"):
        read_mask(tmp_path / "f.tif")


def test_palette_mask_is_its_index_whatever_the_colours(tmp_path):
    img = Image.fromarray(np.array([[0, 1, 2]], np.uint8), mode="P")
    img.putpalette([255, 255, 255, 0, 0, 0, 7, 7, 7] + [0] * 759)  # white 0, black 1, grey 7 at 2
    img.save(tmp_path / "p.png")
    assert read_mask(tmp_path / "p.png").tolist() == [[0, 1, 2]]


@pytest.mark.parametrize("labels", [[[0, 300]], [[-1, 0]], [[0.5, 1.0]], [[math.nan, 1.0]]])
def test_label_png_refuses_labels_it_cannot_hold(tmp_path, labels):
    with pytest.raises(ValueError, match="m.png: label .* does not fit a palette PNG"):
        write_label_png(tmp_path / "m.png", np.array(labels), np.zeros((256, 3), np.uint8))
    assert not (tmp_path / "m.png").exists()


# --- truncated, zero-byte and corrupt files ----------------------------------------------------------

TRUNCATABLE = {"PNG": ("RGB", "L", "P", "I;16", "RGBA"), "JPEG": ("RGB", "L", "CMYK"), "TIFF": ("RGB", "I", "F"),
               "WEBP": ("RGB",), "BMP": ("RGB", "P")}


@st.composite
def damaged_file(draw):
    fmt = draw(st.sampled_from(sorted(TRUNCATABLE)))
    h, w = draw(SIZES)
    return dict(fmt=fmt, mode=draw(st.sampled_from(TRUNCATABLE[fmt])), h=h, w=w, seed=draw(SEEDS))


@FUZZ
@given(damaged_file(), st.floats(0, 1))
@example(dict(fmt="PNG", mode="RGB", h=1, w=1, seed=0), 0.0)
@example(dict(fmt="JPEG", mode="RGB", h=8, w=8, seed=0), 0.0)
def test_cut_files_read_whole_or_are_refused(params, keep):
    with fresh_dir() as tmp:
        fc.truncated_case(tmp, keep=keep, **params)


@FUZZ
@given(damaged_file(), st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=4))
def test_corrupt_bytes_never_crash_the_readers(params, edits):
    with fresh_dir() as tmp:
        fc.corrupt_case(tmp, edits=edits, **params)


@pytest.mark.parametrize("reader", [read_image, read_mask])
def test_zero_byte_and_missing_files_name_the_file(tmp_path, reader):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match="empty.png: cannot read image"):
        reader(tmp_path / "empty.png")
    with pytest.raises(DataError, match="gone.png: file not found"):
        reader(tmp_path / "gone.png")


# --- decompression bombs ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_bomb(tmp_path_factory) -> Path:
    """A genuine bomb: 10000 x 10000 grey pixels of zeros in a ~100 kB PNG. PIL only warns at this size
    (more than 89,478,485 pixels, less than twice that) and would decode all 100 MB."""
    deflate, rows = zlib.compressobj(9), []
    row = b"\0" * 10_001  # filter byte + 10000 pixels
    rows = [deflate.compress(row) for _ in range(10_000)] + [deflate.flush()]
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    path.write_bytes(fc.png_bytes(10_000, 10_000)[:33] + _chunk(b"IDAT", b"".join(rows)) + _chunk(b"IEND", b""))
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


@pytest.mark.parametrize("reader", [read_image, read_mask])
def test_real_bomb_is_refused_before_it_is_decoded(real_bomb, reader):
    start = time.perf_counter()
    with pytest.raises(DataError) as refused:
        reader(real_bomb)
    assert time.perf_counter() - start < 1.0
    message = str(refused.value)
    assert message.startswith(f"{real_bomb}: image declares 10000x10000 = 100,000,000 pixels, more than the "
                              "89,478,485 pixelwise decodes")
    assert f"{MAX_PIXELS_ENV}=100000000" in message


def test_real_bomb_keeps_memory_small(real_bomb):
    def read():
        with pytest.raises(DataError):
            read_image(real_bomb)
    assert peak_memory_growth(read) < 50 * 2 ** 20


@pytest.mark.parametrize("fmt, w, h", [("PNG", 100_000, 100_000), ("PNG", 1, 2 ** 31 - 1), ("JPEG", 65_535, 65_535),
                                       ("BMP", 50_000, 20_000), ("PNG", 9460, 9460)])
def test_declared_bombs_fail_fast_naming_file_and_size(tmp_path, fmt, w, h):
    growth = peak_memory_growth(lambda: fc.bomb_case(tmp_path, fmt, w, h))
    assert growth < 50 * 2 ** 20


def test_limit_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # open_image sets PIL's to match
    Image.new("L", (20, 20)).save(tmp_path / "small.png")
    monkeypatch.setenv(MAX_PIXELS_ENV, "399")
    with pytest.raises(DataError, match=r"small.png: image declares 20x20 = 400 pixels, more than the 399 "):
        read_image(tmp_path / "small.png")
    monkeypatch.setenv(MAX_PIXELS_ENV, "400")
    assert read_image(tmp_path / "small.png").shape == (20, 20, 3)
    monkeypatch.setenv(MAX_PIXELS_ENV, "0")
    assert read_mask(tmp_path / "small.png").shape == (20, 20)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(DataError, match=f"{MAX_PIXELS_ENV}='lots': give the most pixels"):
        read_image(tmp_path / "small.png")


def test_checker_and_importers_get_the_same_protection(tmp_path):
    root = tmp_path / "ds"
    for name in ("bomb", "cut", "fine"):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(exist_ok=True)
        Image.new("L", (4, 3)).save(root / "masks" / f"{name}.png")
    (root / "images" / "bomb.png").write_bytes(fc.png_bytes(100_000, 100_000))
    Image.new("RGB", (4, 3)).save(root / "images" / "cut.png")
    (root / "images" / "cut.png").write_bytes((root / "images" / "cut.png").read_bytes()[:-30])
    Image.new("RGB", (4, 3)).save(root / "images" / "fine.png", exif=b"ExiP\0\0MM\0*")  # damaged EXIF: readable
    Image.fromarray(np.zeros((3, 4), np.float32)).save(root / "masks" / "fine.tif")
    (root / "masks" / "fine.png").unlink()
    (root / "classes.txt").write_text("background\nthing\n")
    report = check_dataset(root, log=lambda _: None)
    unreadable = {p.path.name: p.message for p in report.problems if p.kind == UNREADABLE}
    assert sorted(unreadable) == ["bomb.png", "cut.png", "fine.tif"]
    assert unreadable["bomb.png"].startswith("image declares 10,000,000,000 pixels")
    # COCO: a record whose image is a bomb fails alone
    coco = tmp_path / "coco"
    data = fc.coco_base(coco)
    (coco / "images" / "a.png").write_bytes(fc.png_bytes(100_000, 100_000))
    summary = import_dataset("coco", fc.write_coco(coco, data), tmp_path / "out", log=lambda _: None)
    [(item, why)] = summary.failed
    assert item == "annotations.json: a.png" and "image declares 10,000,000,000 pixels" in why


# --- joint transforms ---------------------------------------------------------------------------------

@st.composite
def transform_params(draw):
    h, w = draw(SIZES)
    labels = draw(st.lists(st.one_of(st.integers(0, 20), st.integers(0, 2 ** 31 - 1)), min_size=1, max_size=5,
                           unique=True))
    scale = draw(st.one_of(st.just((1.0, 1.0)), st.tuples(st.floats(0.25, 2.0), st.floats(0.0, 1.5)).map(
        lambda t: (t[0], t[0] + t[1]))))
    return dict(h=h, w=w, crop=draw(st.tuples(st.integers(1, 40), st.integers(1, 40))), scale_range=scale,
                labels=sorted(labels), ignore_index=draw(st.sampled_from([255, 65535, -1])),
                jitter=draw(st.sampled_from([0.0, 0.3])), seed=draw(SEEDS))


@FUZZ
@given(transform_params())
@example(dict(h=5, w=7, crop=(9, 4), scale_range=(1.3, 1.9), labels=[0, 2 ** 24 + 1, 2 ** 31 - 1], ignore_index=255,
              jitter=0.0, seed=3))  # float32 nearest resizing turned 16777217 into 16777216
def test_transforms_keep_shapes_labels_and_finite_pixels(params):
    assert fc.transform_case(**params) == fc.OK


# --- importers: hostile JSON fails per item ----------------------------------------------------------

@st.composite
def coco_damage(draw):
    target = draw(st.sampled_from(sorted(fc.COCO_KEYS)))
    values = fc.COCO_SEGMENTATIONS if target == "segmentation" else [*fc.HOSTILE, fc.DELETE]
    return dict(target=target, key=draw(st.sampled_from(fc.COCO_KEYS[target])), value=draw(st.sampled_from(values)))


@settings(FUZZ, max_examples=50)
@given(coco_damage())
def test_hostile_coco_json_fails_per_item(params):
    with fresh_dir() as tmp:
        fc.coco_case(tmp, **params)


@pytest.mark.parametrize("segmentation, why", [
    ([[1, 1, math.nan, 1, 6, 5]], "NaN or infinite coordinate"),
    ([[0, 0, 1e9, 0, 1e9, 1e9, 0, 1e9]], "polygon point at (1e+09, 0), more than an image width"),
    ([fc.ZIGZAG], "pixels long (more than 1,048,576)"),
    ({"size": [10, 12], "counts": [0, 10 ** 9]}, "RLE whose runs cover 1e+09 pixels, not the image's 10x12 = 120"),
    ({"size": [10, 12], "counts": ""}, "runs cover 0 pixels"),  # pycocotools decoded uninitialised memory
    ({"size": [10, 12], "counts": "\x00\xff"}, "unreadable segmentation (counts '\\x00ÿ' are not a COCO"),
])
def test_coco_polygons_that_crash_or_hang_pycocotools_are_refused(tmp_path, segmentation, why):
    data = fc.coco_base(tmp_path / "c")
    data["annotations"][0]["segmentation"] = segmentation
    summary = import_dataset("coco", fc.write_coco(tmp_path / "c", data), tmp_path / "out", log=lambda _: None)
    [(item, reason)] = summary.failed
    assert item == "annotations.json: a.png" and why in reason


def test_coco_records_fail_alone(tmp_path):
    data = fc.coco_base(tmp_path / "c")
    data["images"].append({"id": 3, "height": 10, "width": 12})  # no file_name
    data["images"].append(7)
    data["annotations"].append({"category_id": 1, "segmentation": [[0, 0, 3, 0, 3, 3]]})  # no image_id
    data["images"][0]["width"] = -12
    summary = import_dataset("coco", fc.write_coco(tmp_path / "c", data), tmp_path / "out", log=lambda _: None)
    reasons = dict(summary.failed)
    assert summary.images == 1 and sorted(reasons) == ["annotations.json: a.png", "annotations.json: annotation 2",
                                                       "annotations.json: image record 2",
                                                       "annotations.json: image record 3"]
    assert "says -12x10 but the image is 12x10" in reasons["annotations.json: a.png"]
    assert "file_name None" in reasons["annotations.json: image record 2"]


def test_coco_shared_image_id_fails_both_records(tmp_path):
    data = fc.coco_base(tmp_path / "c")
    data["images"][1]["id"] = data["annotations"][1]["image_id"] = 1
    data["images"].append({"id": 3, "file_name": "b.png", "height": 10, "width": 12})
    summary = import_dataset("coco", fc.write_coco(tmp_path / "c", data), tmp_path / "out", log=lambda _: None)
    assert summary.images == 1 and [why for _, why in summary.failed] == [
        "image id 1 is used by 2 image records, so their annotations cannot be told apart; give each image its "
        "own id"] * 2


def test_coco_takes_the_size_of_an_oriented_tiff_as_read_image_shows_it(tmp_path):
    """PIL turns a TIFF by its orientation tag while decoding, and reports the turned size before it decodes
    with the tag still set: the importer turned it a second time and refused this annotation."""
    data = fc.coco_base(tmp_path / "c")
    Image.new("RGB", (fc.W, fc.H)).save(tmp_path / "c" / "images" / "a.tif", tiffinfo={274: 6})
    data["images"][0] |= {"file_name": "a.tif", "height": fc.W, "width": fc.H}
    summary = import_dataset("coco", fc.write_coco(tmp_path / "c", data), tmp_path / "out", log=lambda _: None)
    assert summary.failed == [] and read_image(tmp_path / "out" / "images" / "a.tif").shape == (fc.W, fc.H, 3)
    assert read_mask(tmp_path / "out" / "masks" / "a.png").shape == (fc.W, fc.H)


@st.composite
def labelme_damage(draw):
    target = draw(st.sampled_from(sorted(fc.LABELME_KEYS)))
    key = draw(st.sampled_from(fc.LABELME_KEYS[target]))
    values = {"points": fc.LABELME_POINTS, None: [*fc.HOSTILE, *fc.LABELME_SHAPES]}.get(key, [*fc.HOSTILE, fc.DELETE])
    return dict(target=target, key=key, value=draw(st.sampled_from(values)))


@settings(FUZZ, max_examples=50)
@given(labelme_damage())
def test_hostile_labelme_json_fails_per_item(params):
    with fresh_dir() as tmp:
        fc.labelme_case(tmp, **params)


@pytest.mark.parametrize("shape, why", [
    ({"points": [[math.nan, 1], [5, 5]]}, "has a point at (nan, 1.0); coordinates must be finite"),
    ({"points": [[1e12, 1], [5, 5]]}, "point at (1e+12, 1), more than an image width or height outside the 12x10"),
    ({"points": [[10 ** 400, 1], [5, 5]]}, "malformed annotation (OverflowError: int too large to convert to float)"),
    (fc.LABELME_SHAPES[0], "image declares 10,000,000,000 pixels"),
    (fc.LABELME_SHAPES[1], "cannot read image"),
])
def test_labelme_shapes_pil_would_draw_wrongly_are_refused(tmp_path, shape, why):
    root = tmp_path / "lm" / "lm"
    a, _ = fc.labelme_base(root)
    a["shapes"][0] |= shape
    fc.write_labelme(root, a)
    summary = import_dataset("labelme", root, tmp_path / "out", labels=tmp_path / "lm" / "labels.txt",
                             log=lambda _: None)
    [(item, reason)] = summary.failed
    assert item == str(root / "a.json") and why in reason


def test_labelme_circle_covering_the_image_fills_it(tmp_path):
    root = tmp_path / "lm" / "lm"
    a, _ = fc.labelme_base(root)
    a["shapes"] = [fc.LABELME_SHAPES[4]]  # radius 24.2 around (5, 5): every pixel of the 12x10 image
    fc.write_labelme(root, a)
    import_dataset("labelme", root, tmp_path / "out", labels=tmp_path / "lm" / "labels.txt", log=lambda _: None)
    assert (np.asarray(Image.open(tmp_path / "out" / "masks" / "a.png")) == 1).all()
