"""What training's setup reads: every file decoded once, by the data checker, and nothing else."""
from collections import Counter

import numpy as np

import pixelwise.data.checks as checks
import pixelwise.data.io as io
from pixelwise.config import TrainConfig
from pixelwise.data.dataset import SegmentationDataset
from pixelwise.data.formats import load_spec
from pixelwise.training.engine import setup


def count_decodes(monkeypatch) -> Counter:
    decoded = Counter()
    real = io.load_image

    def counting(source, name=None):
        decoded[source] += 1
        return real(source, name)

    monkeypatch.setattr(io, "load_image", counting)  # what read_image and read_mask call
    monkeypatch.setattr(checks, "load_image", counting)  # the checker's own
    return decoded


def test_training_setup_decodes_each_image_and_mask_once(folder_dataset, tmp_path, monkeypatch):
    decoded = count_decodes(monkeypatch)
    cfg = TrainConfig(data=str(folder_dataset), out=str(tmp_path / "run"), epochs=1, batch_size=2,
                      crop_size=(32, 32), strategy="full", pretrained=False, precision="fp32")
    run = setup(cfg, log=lambda line: None)
    files = [path for pair in run.train_set.pairs + run.val_set.pairs for path in pair]
    assert len(files) == 24  # 12 images and their masks
    assert decoded == Counter(dict.fromkeys(files, 1))


def test_checked_arrays_equal_what_the_readers_give(folder_dataset, monkeypatch):
    spec, _ = checks.check_before_use(folder_dataset, log=lambda line: None, keep_decoded=True)
    pairs = [pair for split in ("train", "val") for pair in spec.splits[split]]
    assert set(spec.decoded) == {path for pair in pairs for path in pair}
    for image, mask in pairs:
        assert np.array_equal(spec.decoded[image], io.read_image(image))
        assert spec.decoded[mask].dtype == np.uint8  # labels 0-2 and 255 fit: a cache's form
        assert np.array_equal(spec.decoded[mask], io.read_mask(mask))
    fresh = SegmentationDataset(pairs, spec.num_classes, spec.ignore_index)
    reused = SegmentationDataset(pairs, spec.num_classes, spec.ignore_index, decoded=spec.decoded)
    monkeypatch.setattr(io, "load_image", None)  # the reused set must not read a file
    for i in range(len(pairs)):
        assert all(np.array_equal(a, b) for a, b in zip(reused.load(i), (spec.decoded[p] for p in pairs[i])))
    monkeypatch.undo()
    assert all(np.array_equal(a, b) for i in range(len(pairs)) for a, b in zip(reused.load(i), fresh.load(i)))


def test_nothing_is_kept_unless_asked_or_for_a_pair_with_a_problem(folder_dataset):
    assert checks.check_before_use(folder_dataset, log=lambda line: None)[0].decoded == {}
    bad = folder_dataset / "masks" / "img03.png"
    io.write_label_png(bad, np.full_like(io.read_mask(bad), 9, np.uint8), io.default_palette(3))  # 3 classes
    spec, skipped = checks.check_before_use(folder_dataset, log=lambda line: None, skip_bad=True, keep_decoded=True)
    assert [p.path for p in skipped] == [bad]
    assert bad not in spec.decoded and folder_dataset / "images" / "img03.png" not in spec.decoded
    assert len(spec.decoded) == 22
    assert load_spec(folder_dataset).decoded == {}  # listing alone decodes nothing


def test_the_cache_shares_the_checked_arrays_instead_of_copying_them(folder_dataset):
    spec, _ = checks.check_before_use(folder_dataset, log=lambda line: None, keep_decoded=True)
    pairs = spec.splits["train"]
    cached = SegmentationDataset(pairs, spec.num_classes, spec.ignore_index, cache=True, decoded=spec.decoded).preload()
    for i, (image, mask) in enumerate(pairs):
        assert cached.load(i)[0] is spec.decoded[image] and cached.load(i)[1] is spec.decoded[mask]
