import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pairs import write_pair
from pixelwise.data import checks
from pixelwise.data.checks import (BAD_LABEL, DUPLICATE, EXIF_ORIENTATION, LEAKAGE, MISSING_IMAGE, MISSING_MASK,
                                   NEAR_DUPLICATE, RGB_MASK, SIZE_MISMATCH, STRAY_MASK, UNREADABLE, CheckReport,
                                   DatasetStats, Problem, check_dataset, raise_for_problems, write_stats)
from pixelwise.data.formats import CAMVID_COLOURS
from pixelwise.data.io import default_palette, read_image, read_mask
from pixelwise.errors import DataError

PHOTOS = Path(__file__).parent / "photos"
PALETTE = default_palette(3)


def quiet(_line):
    pass


def photo(name, size=64):
    """A natural photo, small: distinct photos differ in ~32 of 64 phash bits, so none is a near copy of another."""
    return np.asarray(Image.fromarray(read_image(PHOTOS / f"{name}.jpg")).resize((size, size)))


def random_mask(h, w, labels=(0, 1, 2), seed=0):
    rng = np.random.default_rng(seed)
    return np.array(labels, dtype=np.uint8)[rng.integers(0, len(labels), (h, w))]


def save_with_orientation(path, rgb, orientation):
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(path, exif=exif, quality=95)


def corner_photo():
    """Raw 32x24 pixels, white only in the top-right 16x8 block (8-aligned, so JPEG keeps it exact),
    and the mask drawn on those raw pixels: 1 on the white block. No rotation maps the block onto itself."""
    raw = np.zeros((24, 32, 3), np.uint8)
    raw[:8, 16:] = 255
    return raw, (raw[:, :, 0] > 127).astype(np.uint8)


def digests(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file()}


def found(report):
    return sorted((p.kind, Path(p.path).relative_to(report.root).as_posix()) for p in report.problems)


def write_splits(root, **splits):
    (root / "splits").mkdir(parents=True, exist_ok=True)
    for split, stems in splits.items():
        (root / "splits" / f"{split}.txt").write_text("\n".join(stems) + "\n")


def planted(root):
    """A folder dataset with 3 classes where each problem is planted once (unreadable: once per file type)."""
    images, masks = root / "images", root / "masks"
    for i in range(4):
        write_pair(images / f"c{i}.png", masks / f"c{i}.png", labels=(0, 1, 2, 255), seed=i)
    for i in range(2):
        write_pair(images / f"v{i}.png", masks / f"v{i}.png", labels=(0, 1, 2), seed=10 + i)
    write_pair(images / "broken_img.png", masks / "broken_img.png", seed=20)
    data = (images / "broken_img.png").read_bytes()
    (images / "broken_img.png").write_bytes(data[: len(data) // 2])
    write_pair(images / "broken_mask.png", masks / "broken_mask.png", seed=21)
    data = (masks / "broken_mask.png").read_bytes()
    (masks / "broken_mask.png").write_bytes(data[: len(data) // 2])
    write_pair(images / "nomask.png", masks / "nomask.png", seed=22)
    (masks / "nomask.png").unlink()
    write_pair(images / "gone.png", masks / "stray.png", seed=23)
    (images / "gone.png").unlink()
    write_pair(images / "wide.png", masks / "wide.png", size=(30, 20), seed=24)
    Image.fromarray(random_mask(20, 24, seed=24)).save(masks / "wide.png")
    write_pair(images / "badlabel.png", masks / "badlabel.png", labels=(0, 1, 7), seed=25)
    write_pair(images / "rgbok.png", masks / "rgbok.png", seed=26)
    Image.fromarray(PALETTE[random_mask(20, 24, seed=26)]).save(masks / "rgbok.png")
    write_pair(images / "rgbbad.png", masks / "rgbbad.png", seed=27)
    rgb = PALETTE[random_mask(20, 24, seed=27)]
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(masks / "rgbbad.png")
    raw, raw_mask = corner_photo()
    save_with_orientation(images / "exif.jpg", raw, 6)
    Image.fromarray(raw_mask).save(masks / "exif.png")
    for stem, pixels in [("astro", photo("astronaut")), ("astro_copy", None), ("coffee", photo("coffee")),
                         ("chelsea", photo("chelsea")), ("chelsea_val", None)]:
        if pixels is not None:
            Image.fromarray(pixels).save(images / f"{stem}.png")
        Image.fromarray(random_mask(64, 64, seed=len(stem))).save(masks / f"{stem}.png")
    (images / "astro_copy.png").write_bytes((images / "astro.png").read_bytes())
    (images / "chelsea_val.png").write_bytes((images / "chelsea.png").read_bytes())
    Image.fromarray(photo("coffee")).save(images / "coffee_jpg.jpg", quality=70)  # re-encoded: a near copy
    Image.fromarray(random_mask(64, 64, seed=3)).save(masks / "coffee_jpg.png")
    (root / "classes.txt").write_text("background\ncat\ndog\n")
    write_splits(root, train=["c0", "c1", "c2", "c3", "broken_img", "broken_mask", "nomask", "wide", "badlabel",
                              "rgbok", "rgbbad", "exif", "astro", "astro_copy", "coffee", "coffee_jpg", "chelsea",
                              "ghost"],
                 val=["v0", "v1", "chelsea_val"])
    return root


PLANTED = [(UNREADABLE, "images/broken_img.png"), (UNREADABLE, "masks/broken_mask.png"),
           (MISSING_MASK, "images/nomask.png"), (STRAY_MASK, "masks/stray.png"),
           (SIZE_MISMATCH, "masks/wide.png"), (BAD_LABEL, "masks/badlabel.png"),
           (RGB_MASK, "masks/rgbok.png"), (RGB_MASK, "masks/rgbbad.png"), (EXIF_ORIENTATION, "images/exif.jpg"),
           (DUPLICATE, "images/astro_copy.png"), (NEAR_DUPLICATE, "images/coffee_jpg.jpg"),
           (LEAKAGE, "images/chelsea_val.png"), (MISSING_IMAGE, "splits/train.txt")]
FIXED = {(STRAY_MASK, "masks/stray.png"), (RGB_MASK, "masks/rgbok.png"), (EXIF_ORIENTATION, "images/exif.jpg")}


def test_clean_dataset_reports_nothing(folder_dataset):
    report = check_dataset(folder_dataset, log=quiet)
    assert report.ok and report.problems == [] and report.format == "folder"
    assert sum(report.stats.images_per_split.values()) == 12 and report.stats.masks == 12
    assert report.stats.image_sizes == {"24x20": 12}


def test_every_planted_problem_is_reported_once_with_its_file(tmp_path):
    report = check_dataset(planted(tmp_path / "d"), log=quiet)
    assert not report.ok
    assert found(report) == sorted(PLANTED)
    assert {(p.kind, p.path.relative_to(report.root).as_posix()) for p in report.problems if p.auto_fix} == FIXED
    by_path = {p.path.name: p for p in report.problems}
    message = {name: p.message for name, p in by_path.items()}
    assert "label 7 (" in message["badlabel.png"] and "3 classes (0-2, 255 = ignore)" in message["badlabel.png"]
    assert "(1, 2, 3)" in message["rgbbad.png"]
    assert by_path["chelsea_val.png"].related.name == "chelsea.png"
    assert "inflates validation" in message["chelsea_val.png"]
    assert "byte-identical" in message["astro_copy.png"] and "near duplicate" in message["coffee_jpg.jpg"]
    assert by_path["exif.jpg"].related.name == "exif.png" and "orientation 6" in by_path["exif.jpg"].message
    assert by_path["wide.png"].line().startswith(f"{report.root / 'masks' / 'wide.png'}: mask is 24x20 but its image ")
    assert " — re-export the mask" in by_path["wide.png"].line()


def test_fix_changes_only_the_fixable_files_and_keeps_backups(tmp_path):
    root = planted(tmp_path / "d")
    before = digests(root)
    log = []
    report = check_dataset(root, fix=True, log=log.append)
    after = digests(root)
    changed = {p for p in before if after.get(p) != before[p]}
    assert changed == {"masks/rgbok.png", "masks/exif.png", "masks/stray.png"}
    assert "masks/stray.png" not in after  # moved aside, not deleted
    backups = {p: d for p, d in after.items() if p not in before}
    assert backups == {".pixelwise-backup/masks/rgbok.png": before["masks/rgbok.png"],
                       ".pixelwise-backup/masks/exif.png": before["masks/exif.png"],
                       ".pixelwise-backup/stray/masks/stray.png": before["masks/stray.png"]}
    assert len(report.fixed) == 3 and sum(line.startswith("fixed ") for line in log) == 3
    # the re-check: the fixed problems are gone and every other one remains
    assert found(report) == sorted(set(PLANTED) - FIXED)
    np.testing.assert_array_equal(read_mask(root / "masks" / "rgbok.png"), random_mask(20, 24, seed=26))
    assert Image.open(root / "masks" / "rgbok.png").mode == "P"


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_exif_fix_aligns_the_mask_with_the_upright_photo(tmp_path, orientation):
    root = tmp_path / "d"
    write_pair(root / "images" / "plain.png", root / "masks" / "plain.png", seed=1)
    raw, raw_mask = corner_photo()
    save_with_orientation(root / "images" / "phone.jpg", raw, orientation)
    Image.fromarray(raw_mask, mode="L").save(root / "masks" / "phone.png")
    (root / "classes.txt").write_text("background\nobject\n")
    assert found(check_dataset(root, log=quiet)) == [(EXIF_ORIENTATION, "images/phone.jpg")]
    report = check_dataset(root, fix=True, log=quiet)
    assert report.ok
    upright = read_image(root / "images" / "phone.jpg")  # the photo itself was not touched
    np.testing.assert_array_equal(read_mask(root / "masks" / "phone.png"), (upright[:, :, 0] > 127).astype(np.int64))


def test_fix_never_overwrites_an_earlier_backup(tmp_path):
    root = tmp_path / "d"
    write_pair(root / "images" / "a.png", root / "masks" / "a.png", seed=1)
    Image.fromarray(PALETTE[random_mask(20, 24, seed=1)]).save(root / "masks" / "a.png")
    (root / "classes.txt").write_text("background\ncat\ndog\n")
    original = (root / "masks" / "a.png").read_bytes()
    (root / ".pixelwise-backup" / "masks").mkdir(parents=True)
    (root / ".pixelwise-backup" / "masks" / "a.png").write_bytes(b"an earlier backup")
    report = check_dataset(root, fix=True, log=quiet)
    assert report.ok and [f.backup.name for f in report.fixed] == ["a.1.png"]
    assert (root / ".pixelwise-backup" / "masks" / "a.png").read_bytes() == b"an earlier backup"
    assert (root / ".pixelwise-backup" / "masks" / "a.1.png").read_bytes() == original


def test_fix_converts_a_non_png_rgb_mask_to_png_and_moves_the_original(tmp_path):
    root = tmp_path / "d"
    write_pair(root / "images" / "a.png", root / "masks" / "a.png", seed=1)
    (root / "masks" / "a.png").unlink()
    Image.fromarray(PALETTE[random_mask(20, 24, seed=2)]).save(root / "masks" / "a.bmp")
    (root / "classes.txt").write_text("background\ncat\ndog\n")
    report = check_dataset(root, fix=True, log=quiet)
    assert report.ok and not (root / "masks" / "a.bmp").exists()
    np.testing.assert_array_equal(read_mask(root / "masks" / "a.png"), random_mask(20, 24, seed=2))
    assert (root / ".pixelwise-backup" / "masks" / "a.bmp").is_file()


def test_stats_exact_values_and_files(tmp_path):
    root = tmp_path / "d"
    masks = {"a": np.array([[0, 0, 1, 1], [0, 255, 1, 1]]), "b": np.array([[2, 2, 0], [255, 255, 2]])}
    for seed, (stem, mask) in enumerate(masks.items()):
        (root / "masks").mkdir(parents=True, exist_ok=True)
        write_pair(root / "images" / f"{stem}.png", root / "masks" / "unused.png", size=mask.shape[::-1], seed=seed)
        Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / f"{stem}.png")
    (root / "masks" / "unused.png").unlink()
    (root / "classes.txt").write_text("background\ncat\ndog\n")
    write_splits(root, train=["a"], val=["b"])
    report = check_dataset(root, log=quiet)
    stats = report.stats
    assert stats.class_pixels.tolist() == [4, 4, 3] and stats.class_images.tolist() == [2, 1, 1]
    assert stats.ignore_pixels == 3 and stats.ignore_images == 2 and stats.total_pixels == 14
    assert stats.invalid_pixels == 0
    assert stats.image_sizes == {"3x2": 1, "4x2": 1} and stats.images_per_split == {"train": 1, "val": 1}

    had_pyplot = "matplotlib.pyplot" in sys.modules
    json_path, png_path = write_stats(report, tmp_path / "out")
    assert had_pyplot or "matplotlib.pyplot" not in sys.modules  # no global matplotlib state touched
    data = json.loads(json_path.read_text())
    assert [c["pixel_share"] for c in data["classes"]] == pytest.approx([4 / 14, 4 / 14, 3 / 14])
    assert [c["images"] for c in data["classes"]] == [2, 1, 1] and data["classes"][1]["name"] == "cat"
    assert data["ignore_share"] == pytest.approx(3 / 14) and data["images_per_split"] == {"train": 1, "val": 1}
    assert data["image_sizes"] == {"3x2": 1, "4x2": 1} and data["problems"] == {}
    with Image.open(png_path) as png:
        assert png.format == "PNG" and png.width > 100


def test_camvid_layout(tmp_path):
    root = tmp_path / "camvid"
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            write_pair(root / split / f"{split}{i}.png", root / f"{split}annot" / f"{split}{i}.png",
                       labels=(0, 3, 11), seed=i + 5 * (split == "val"))
    write_pair(root / "train" / "extra.png", root / "valannot" / "lost.png", seed=9)  # no mask / no image
    colours = np.array(CAMVID_COLOURS, np.uint8)
    Image.fromarray(colours[random_mask(20, 24, labels=(0, 3), seed=1)]).save(root / "trainannot" / "train1.png")
    report = check_dataset(root, log=quiet)
    assert report.format == "camvid" and report.ignore_index == 11
    assert found(report) == [(MISSING_MASK, "train/extra.png"), (RGB_MASK, "trainannot/train1.png"),
                             (STRAY_MASK, "valannot/lost.png")]
    assert [p.auto_fix for p in report.problems if p.kind == RGB_MASK] == [True]  # CamVid colours convert
    assert report.stats.images_per_split == {"train": 4, "val": 2}


def test_voc_layout(tmp_path):
    root = tmp_path / "VOC"
    for i, stem in enumerate("abcd"):
        write_pair(root / "JPEGImages" / f"{stem}.jpg", root / "SegmentationClass" / f"{stem}.png",
                   labels=(0, 15, 255), seed=i)
    (root / "SegmentationClass" / "b.png").unlink()
    (root / "SegmentationClass" / "d.png").unlink()  # d is listed nowhere: a detection-only photo, fine
    write_pair(root / "JPEGImages" / "z.jpg", root / "SegmentationClass" / "z.png", seed=7)
    (root / "JPEGImages" / "z.jpg").unlink()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\nb\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("c\ne\na\n")
    report = check_dataset(root, log=quiet)
    assert report.format == "voc" and report.ignore_index == 255
    assert report.stats.images_per_split == {"train": 2, "val": 2}
    assert found(report) == [(LEAKAGE, "JPEGImages/a.jpg"), (MISSING_IMAGE, "ImageSets/Segmentation/val.txt"),
                             (MISSING_MASK, "JPEGImages/b.jpg"), (STRAY_MASK, "SegmentationClass/z.png")]


def test_each_file_is_decoded_once(folder_dataset, monkeypatch):
    opened = []
    real_open = Image.open
    monkeypatch.setattr(checks.Image, "open",
                        lambda path, *a, **k: opened.append(Path(getattr(path, "name", path))) or real_open(path, *a, **k))
    check_dataset(folder_dataset, log=quiet)
    assert len(opened) == 24 and len(set(opened)) == 24


def test_raise_for_problems_lists_the_first_ten(tmp_path):
    def problem(i, kind=MISSING_MASK):
        return Problem(tmp_path / f"img{i:02d}.png", kind, "image has no mask", "draw one")

    def report(problems):
        empty = DatasetStats(("a",), 255, np.zeros(1, np.int64), np.zeros(1, np.int64))
        return CheckReport(tmp_path, "folder", ("a",), 255, PALETTE, problems, empty)

    with pytest.raises(DataError) as err:
        raise_for_problems(report([problem(i) for i in range(12)]))
    message = str(err.value)
    assert "12 data problems" in message and f"{tmp_path / 'img09.png'}: image has no mask — draw one" in message
    assert "img10.png" not in message and "and 2 more" in message
    near = report([problem(0, NEAR_DUPLICATE)])
    raise_for_problems(near)  # duplicates do not stop training
    with pytest.raises(DataError) as err:
        raise_for_problems(near, kinds=None)
    assert str(err.value) == f"{tmp_path / 'img00.png'}: image has no mask — draw one"  # one problem, one line
    raise_for_problems(report([]), kinds=None)
