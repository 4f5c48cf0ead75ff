"""The unlabelled pool: listed, screened for leakage into val and test, and streamed with its padding marked."""
import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.data.transforms import train_transform
from pixelwise.data.unlabelled import (UnlabelledDataset, collate_unlabelled, list_unlabelled, screen_pool)
from pixelwise.errors import DataError


def photo(path, seed, size=(64, 48)):
    """A smooth random photo: a perceptual hash needs structure, not noise."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(small).resize(size, Image.BILINEAR).save(path)
    return path


def test_copies_of_val_and_test_images_are_left_out_and_unreadable_ones_listed(tmp_path):
    val = [photo(tmp_path / "val" / f"v{i}.png", seed=i) for i in range(3)]
    pool = tmp_path / "pool"
    kept = [photo(pool / f"new{i}.png", seed=10 + i) for i in range(3)]
    (pool / "exact.png").write_bytes(val[0].read_bytes())  # a byte copy
    near = np.asarray(Image.open(val[1])).astype(np.int16) + 6  # re-exposed and re-saved as JPEG
    Image.fromarray(near.clip(0, 255).astype(np.uint8)).save(pool / "near.jpg", quality=90)
    (pool / "broken.png").write_bytes(b"not a png")
    result = screen_pool(list_unlabelled([pool]), val)
    assert result.paths == kept
    assert sorted((a.name, b.name) for a, b in result.leaked) == [("exact.png", "v0.png"), ("near.jpg", "v1.png")]
    assert [p.name for p, _ in result.unreadable] == ["broken.png"]
    assert result.summary() == "3 unlabelled images (left out: 2 copies of val/test images (leakage), 1 unreadable)"


def test_a_missing_or_empty_folder_is_named(tmp_path):
    with pytest.raises(DataError, match="--unlabelled .*nowhere: no such folder"):
        list_unlabelled([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="--unlabelled .*empty: no images in this folder"):
        list_unlabelled([tmp_path / "empty"])
    photo(tmp_path / "a" / "x.png", seed=0)
    assert list_unlabelled([tmp_path / "a", tmp_path / "a"]) == [tmp_path / "a" / "x.png"]  # once, not twice


def test_views_mark_padding_and_a_file_that_breaks_later_becomes_a_blank_with_nothing_to_learn(tmp_path):
    small = photo(tmp_path / "small.png", seed=0, size=(20, 12))  # smaller than the crop: padded
    big = photo(tmp_path / "big.png", seed=1, size=(40, 30))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"gone bad after screening")
    dataset = UnlabelledDataset([small, big, broken], train_transform((16, 24), (1.0, 1.0), 255), ignore_index=255)
    images, pixels, indices = collate_unlabelled([dataset[i] for i in range(3)])
    assert images.shape == (3, 3, 16, 24) and pixels.shape == (3, 16, 24)
    assert pixels[0].sum() == 12 * 20  # the small image's own pixels, padding excluded
    assert pixels[1].all() and not pixels[2].any() and not images[2].any()
    assert indices.tolist() == [0, 1, 2]
    again = dataset[1][0]
    assert torch.equal(again, images[1])  # a view is a function of (seed, epoch, index)
    dataset.epoch = 1
    assert not torch.equal(dataset[1][0], images[1])
