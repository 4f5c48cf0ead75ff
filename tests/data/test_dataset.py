import numpy as np
import pytest
from PIL import Image

from pairs import write_pair
from pixelwise.data.dataset import SegmentationDataset
from pixelwise.errors import DataError


def test_mask_of_wrong_size_is_reported_with_both_files(tmp_path):
    write_pair(tmp_path / "a.png", tmp_path / "m.png", size=(24, 20))
    Image.fromarray(np.zeros((10, 24), dtype=np.uint8)).save(tmp_path / "m.png")
    ds = SegmentationDataset([(tmp_path / "a.png", tmp_path / "m.png")], num_classes=2, ignore_index=255)
    with pytest.raises(DataError, match=r"mask .*m.png is 24x10 but its image .*a.png is 24x20"):
        ds[0]


def test_label_outside_classes_is_reported(tmp_path):
    write_pair(tmp_path / "a.png", tmp_path / "m.png", labels=(0, 1, 37, 255))
    ds = SegmentationDataset([(tmp_path / "a.png", tmp_path / "m.png")], num_classes=21, ignore_index=255)
    with pytest.raises(DataError, match=r"m.png has label 37 but the dataset has 21 classes \(0-20, 255 = ignore\)"):
        ds.preload()


def test_ignore_value_is_accepted_and_counts_exclude_it(tmp_path):
    mask = write_pair(tmp_path / "a.png", tmp_path / "m.png", labels=(0, 2, 255))
    ds = SegmentationDataset([(tmp_path / "a.png", tmp_path / "m.png")], num_classes=3, ignore_index=255, cache=True)
    image, target = ds[0]
    assert image.shape == (3, 20, 24) and image.dtype.is_floating_point and float(image.max()) <= 1
    assert target.tolist() == mask.tolist()
    assert ds.class_pixel_counts().tolist() == [int((mask == 0).sum()), 0, int((mask == 2).sum())]
