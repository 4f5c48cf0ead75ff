"""The transfer-learning advisor: its distance, its decision table, and constructed datasets in each quadrant."""
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pixelwise.cli import main
from pixelwise.data.synthetic import TEXTURE_CLASSES, write_texture_dataset
from pixelwise.training import advisor

PHOTOS = sorted((Path(__file__).parents[1] / "data" / "photos").glob("*.jpg"))


def test_moment_shift_is_zero_at_imagenet_statistics_and_one_per_standard_deviation():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 16, 16) * torch.tensor([1.0, 2.0, 0.5]).view(1, 3, 1, 1) + torch.tensor([0.0, 3.0, -1.0]).view(1, 3, 1, 1)
    bn = nn.BatchNorm2d(3, eps=0.0).eval()
    flat = x.transpose(0, 1).reshape(3, -1).double()
    mean, std = flat.mean(1), flat.std(1, unbiased=False)

    def shift():
        recorder = advisor.MomentRecorder(nn.Sequential(bn))
        bn(x)
        recorder.close()
        return recorder.layer_shifts()["0"]

    bn.running_mean.copy_(mean.float())
    bn.running_var.copy_((std ** 2).float())
    assert shift() == pytest.approx(0.0, abs=1e-5)
    bn.running_mean.copy_((mean - std).float())  # every channel one ImageNet standard deviation off
    assert shift() == pytest.approx(1.0, abs=1e-5)
    bn.running_mean.copy_(mean.float())
    bn.running_var.copy_((std / 3) ** 2)  # the data spread three times as wide: |3r - r| / r
    assert shift() == pytest.approx(2.0, abs=1e-5)


@pytest.mark.parametrize("images, shift, quadrant, strategy", [
    (10, 0.2, "small-similar", "last-k"),  # the textbook's head-only training measured 4.5 points worse
    (advisor.RICH_IMAGES - 1, advisor.SHIFT_THRESHOLD, "small-similar", "last-k"),
    (advisor.RICH_IMAGES, 0.2, "rich-similar", "last-k"),
    (10, advisor.SHIFT_THRESHOLD + 0.01, "small-different", "full"),
    (5000, 0.9, "rich-different", "full"),
])
def test_decision_table(images, shift, quadrant, strategy):
    assert advisor.decide(images, shift)[:2] == (quadrant, strategy)


def write_photo_dataset(root: Path, count: int, seed: int = 0) -> Path:
    """`count` 128x128 crops of the bundled CC0/public-domain photos, labelled dark/bright."""
    rng = np.random.default_rng(seed)
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in PHOTOS]
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(count):
        photo = photos[i % len(photos)]
        y, x = rng.integers(0, photo.shape[0] - 127), rng.integers(0, photo.shape[1] - 127)
        crop = photo[y:y + 128, x:x + 128]
        Image.fromarray(crop).save(root / "images" / f"p{i:03d}.png")
        Image.fromarray((crop.mean(-1) > 128).astype(np.uint8)).save(root / "masks" / f"p{i:03d}.png")
    (root / "classes.txt").write_text("dark\nbright\n")
    return root


@pytest.mark.parametrize("kind, count, quadrant", [
    ("photos", 6, "small-similar"),
    ("photos", 120, "rich-similar"),
    ("textures", 6, "small-different"),
    ("textures", 120, "rich-different"),
])
def test_constructed_datasets_land_in_their_quadrants(tmp_path, kind, count, quadrant):
    if kind == "photos":
        root = write_photo_dataset(tmp_path / kind, count)
    else:
        root = write_texture_dataset(tmp_path / kind, train=count, val=2, size=(96, 96))
    advice = advisor.advise(root)
    assert advice.quadrant == quadrant, advice.evidence["domain_shift"]
    assert advice.strategy == advisor.RECOMMENDATION[quadrant][0]
    # with no split files the folder format holds out ~10% by name hash; the advisor sees the rest
    assert 0.8 * count <= advice.evidence["images"] <= count


def test_size_evidence_counts_pixels_per_class_and_imbalance(tmp_path):
    root = write_texture_dataset(tmp_path / "t", train=3, val=1, size=(32, 32), seed=3)
    advice = advisor.advise(root)
    e = advice.evidence
    masks = [np.asarray(Image.open(root / "masks" / f"train_{i:04d}.png")) for i in range(3)]
    counts = np.bincount(np.concatenate([m.ravel() for m in masks]), minlength=4)
    assert e["pixels_per_class"] == dict(zip(TEXTURE_CLASSES, counts.tolist()))
    assert e["labelled_pixels"] == 3 * 32 * 32
    assert e["imbalance"] == pytest.approx(counts[counts > 0].max() / counts[counts > 0].min())
    assert set(advice.to_dict()) == {"quadrant", "strategy", "reasons", "evidence"}
    import pixelwise

    assert pixelwise.advise is advisor.advise  # part of the public API


def test_advise_command_prints_the_quadrant_and_writes_json(tmp_path, nuclei_root, capsys):
    import json

    assert main(["advise", "--data", str(nuclei_root), "--json", str(tmp_path / "a.json")]) == 0
    printed = capsys.readouterr().out
    assert "quadrant   small-different" in printed and "strategy   full" in printed
    saved = json.loads((tmp_path / "a.json").read_text())
    assert saved["quadrant"] == "small-different" and saved["strategy"] == "full"
    assert saved["evidence"]["images"] == 10 and saved["evidence"]["domain_shift"] > advisor.SHIFT_THRESHOLD


def test_advisor_needs_pretrained_batchnorm_statistics_and_says_so(nuclei_root):
    from pixelwise.errors import PixelwiseError

    with pytest.raises(PixelwiseError, match="BatchNorm"):
        advisor.MomentRecorder(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()))
    with pytest.raises(PixelwiseError, match="no ImageNet weights"):
        advisor.advise(nuclei_root, backbone="segnet_basic")


def test_a_data_problem_is_named_as_such_by_advise_and_by_train_auto(folder_dataset, tmp_path):
    from pixelwise.api import train
    from pixelwise.errors import DataError

    Image.fromarray(np.full((20, 24), 9, dtype=np.uint8)).save(folder_dataset / "masks" / "img03.png")
    expected = f"{folder_dataset}/masks/img03.png: mask has label 9 (480 px) but the dataset has 3 classes"
    with pytest.raises(DataError, match=re.escape(expected)):
        advisor.advise(folder_dataset, log=lambda _: None)
    with pytest.raises(DataError, match=re.escape(expected)):
        train(folder_dataset, out=tmp_path / "run", epochs=1, log=lambda _: None)  # strategy auto
