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


def test_pseudo_labelled_pairs_join_the_labelled_repeated_to_half_of_each_epoch_and_only_they_are_altered(tmp_path):
    labelled = [(tmp_path / f"l{i}.png", tmp_path / f"lm{i}.png") for i in range(2)]
    pseudo = [(tmp_path / f"p{i}.png", tmp_path / f"pm{i}.png") for i in range(7)]
    for image, mask in labelled + pseudo:
        write_pair(image, mask, size=(8, 6))
    seen = []
    ds = SegmentationDataset(labelled, num_classes=2, ignore_index=255, cache=True,
                             transform=lambda image, mask, rng: (seen.append(rng.random()) or image, mask))
    assert len(ds) == 2 and [ds.pair_index(i) for i in range(2)] == [0, 1]
    ds.extend(pseudo, cache=False, labelled_share=0.5, strong_view=lambda image, rng: image * 0 - 1)
    # 7 pseudo-labelled against 2 labelled: each labelled pair shown round(3.5) = 4 times, 8 of 15 samples
    assert ds.labelled_repeats == 4 and len(ds) == 8 + 7
    assert [ds.pair_index(i) for i in range(len(ds))] == [0, 1] * 4 + list(range(2, 9))
    images = [ds[i][0] for i in range(len(ds))]
    assert all(float(image.min()) >= 0 for image in images[:8])  # the labelled showings: untouched
    assert all(bool((image == -1).all()) for image in images[8:])
    assert len(set(seen[:8])) == 8  # each showing of a repeated pair is augmented afresh
    assert sorted(ds._cache) == [0, 1]  # extend(cache=False): the pool is read from disk each time
    assert ds.class_pixel_counts().sum() == 9 * 8 * 6  # pairs, not showings


def test_a_pool_smaller_than_the_labelled_set_repeats_nothing(tmp_path):
    pairs = [(tmp_path / f"{i}.png", tmp_path / f"m{i}.png") for i in range(5)]
    for image, mask in pairs:
        write_pair(image, mask, size=(8, 6))
    ds = SegmentationDataset(pairs[:4], num_classes=2, ignore_index=255)
    ds.extend(pairs[4:], cache=False, labelled_share=0.5)
    assert ds.labelled_repeats == 1 and len(ds) == 5 and ds.pair_index(4) == 4
