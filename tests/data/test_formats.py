import pytest

from pairs import write_pair
from pixelwise.data.formats import detect_format, hash_split, load_spec
from pixelwise.errors import DataError


def make_camvid(root, splits=("train", "val")):
    for split in splits:
        for i in range(3):
            write_pair(root / split / f"{split}{i}.png", root / f"{split}annot" / f"{split}{i}.png",
                       labels=(0, 3, 11), seed=i)
    return root


def test_camvid_layout_with_default_classes(tmp_path):
    spec = load_spec(make_camvid(tmp_path / "camvid"))
    assert spec.format == "camvid"
    assert set(spec.splits) == {"train", "val"}
    assert spec.num_classes == 11 and spec.ignore_index == 11
    assert spec.class_names[0] == "sky" and spec.class_names[10] == "bicyclist"
    image, mask = spec.splits["train"][0]
    assert image.name == "train0.png" and mask.parent.name == "trainannot"


def test_camvid_classes_txt_and_a_root_with_only_test(tmp_path):
    root = make_camvid(tmp_path / "c", splits=("test",))
    (root / "classes.txt").write_text("a\nb\nc\nd\n")
    (root / "train").mkdir()  # empty split folder: simply absent
    spec = load_spec(root)
    assert list(spec.splits) == ["test"]
    assert spec.class_names == ("a", "b", "c", "d") and spec.ignore_index == 4


def test_voc_layout(tmp_path):
    root = tmp_path / "VOC2012"
    for stem in ("2007_000001", "2007_000002", "2007_000003"):
        write_pair(root / "JPEGImages" / f"{stem}.jpg", root / "SegmentationClass" / f"{stem}.png", labels=(0, 15, 255))
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000001\n2007_000002\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000003\n")
    spec = load_spec(root)
    assert spec.format == "voc" and spec.num_classes == 21 and spec.ignore_index == 255
    assert [p[0].stem for p in spec.splits["train"]] == ["2007_000001", "2007_000002"]
    assert spec.class_names[15] == "person"


def test_folder_layout_hash_split_is_deterministic(folder_dataset):
    spec = load_spec(folder_dataset)
    assert spec.format == "folder" and spec.class_names == ("background", "cat", "dog")
    stems = {s: [p[0].stem for p in pairs] for s, pairs in spec.splits.items()}
    for split, names in stems.items():
        assert all(hash_split(n) == split for n in names)
    assert sum(len(v) for v in stems.values()) == 12
    assert load_spec(folder_dataset).splits.keys() == spec.splits.keys()


def test_folder_layout_split_files(folder_dataset):
    (folder_dataset / "splits").mkdir()
    (folder_dataset / "splits" / "train.txt").write_text("img00\nimg01\nimg02\n")
    (folder_dataset / "splits" / "test.txt").write_text("img03\n")
    spec = load_spec(folder_dataset)
    assert {s: [p[0].stem for p in v] for s, v in spec.splits.items()} == {
        "train": ["img00", "img01", "img02"], "test": ["img03"]}


def test_format_can_be_forced_and_unknown_layout_is_explained(tmp_path, folder_dataset):
    assert load_spec(folder_dataset, format="folder").format == "folder"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cannot tell the dataset layout"):
        detect_format(tmp_path / "empty")


def test_missing_mask_names_the_image(folder_dataset):
    (folder_dataset / "masks" / "img05.png").unlink()
    with pytest.raises(DataError, match=r"img05.png: no mask for this image; expected .*masks/img05.png"):
        load_spec(folder_dataset)


def test_empty_dataset_is_an_error(tmp_path):
    root = tmp_path / "empty"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("a\nb\n")
    with pytest.raises(DataError, match="no usable image"):
        load_spec(root)


def test_folder_without_classes_txt_says_how_to_fix(tmp_path):
    write_pair(tmp_path / "d" / "images" / "a.png", tmp_path / "d" / "masks" / "a.png")
    with pytest.raises(DataError, match="classes.txt: missing"):
        load_spec(tmp_path / "d")


def test_training_and_the_checker_read_a_layout_the_same_way(tmp_path):
    from pixelwise.data.checks import MISSING_IMAGE, MISSING_MASK, list_samples

    root = tmp_path / "VOC"
    for stem in ("a", "b"):
        write_pair(root / "JPEGImages" / f"{stem}.jpg", root / "SegmentationClass" / f"{stem}.png", labels=(0, 1))
    write_pair(root / "JPEGImages" / "c.jpg", tmp_path / "elsewhere.png")  # c has no mask
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\nb\n")
    spec = load_spec(root)
    _, samples, problems = list_samples(root)
    assert [(s.split, s.image, s.mask) for s in samples] == [("train", i, m) for i, m in spec.splits["train"]]
    assert problems == []
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("c\nd\n")
    with pytest.raises(DataError, match=r"val.txt: lists 'd' but JPEGImages/ has no such image"):
        load_spec(root)
    _, _, problems = list_samples(root)
    assert [(p.kind, p.path.name) for p in problems] == [(MISSING_IMAGE, "val.txt"), (MISSING_MASK, "c.jpg")]
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("c\n")
    with pytest.raises(DataError, match=r"c.jpg: no mask for this image; expected .*SegmentationClass/c.png"):
        load_spec(root)
