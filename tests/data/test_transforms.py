import random

import numpy as np
import pytest

import torch

from pixelwise.data.transforms import PadTo, RandomCrop, RandomHorizontalFlip, resize_pair, train_transform


def test_mask_resize_is_nearest_so_labels_never_blend():
    image = torch.rand(3, 4, 4)
    mask = torch.tensor([[0, 0, 5, 5]] * 4)
    _, up = resize_pair(image, mask, (8, 8))
    assert up.dtype == torch.int64
    assert up[0].tolist() == [0, 0, 0, 0, 5, 5, 5, 5]
    _, odd = resize_pair(image, mask, (7, 11))
    assert set(odd.unique().tolist()) == {0, 5}


def test_padding_uses_zero_for_image_and_ignore_for_mask():
    image, mask = torch.ones(3, 2, 2), torch.ones(2, 2, dtype=torch.int64)
    img, msk = PadTo((3, 4), ignore_index=255)(image, mask)
    assert img.shape == (3, 3, 4)
    assert msk.tolist() == [[1, 1, 255, 255], [1, 1, 255, 255], [255, 255, 255, 255]]
    assert img[:, 2].sum() == 0 and img[:, :, 2:].sum() == 0


def test_crop_keeps_image_and_mask_aligned():
    random.seed(3)
    image = torch.arange(30, dtype=torch.float32).reshape(1, 5, 6).repeat(3, 1, 1)
    mask = torch.arange(30).reshape(5, 6)
    img, msk = RandomCrop((3, 4), ignore_index=255)(image, mask)
    assert img.shape == (3, 3, 4) and msk.shape == (3, 4)
    assert img[0].long().tolist() == msk.tolist()


def test_flip_flips_both():
    random.seed(0)
    flip = RandomHorizontalFlip(p=1.0)
    img, msk = flip(torch.tensor([[[1.0, 2.0, 3.0]]]), torch.tensor([[1, 2, 3]]))
    assert img.tolist() == [[[3.0, 2.0, 1.0]]] and msk.tolist() == [[3, 2, 1]]


def test_train_transform_gives_crop_size_for_any_input():
    random.seed(1)
    t = train_transform((16, 20), (0.5, 2.0), ignore_index=11, jitter=0.2)
    for h, w in [(9, 13), (97, 131), (16, 20)]:
        img, msk = t(torch.rand(3, h, w), torch.zeros(h, w, dtype=torch.int64))
        assert img.shape == (3, 16, 20) and msk.shape == (16, 20)
        assert set(msk.unique().tolist()) <= {0, 11}
        assert float(img.min()) >= 0 and float(img.max()) <= 1


def test_at_resolution_shrinks_scale_and_crop_together_so_a_crop_shows_the_same_scene():
    random.seed(2)
    t = train_transform((16, 20), (1.0, 1.0), ignore_index=11)
    mask = torch.arange(16 * 20).reshape(16, 20) % 11
    image = torch.rand(3, 16, 20)
    t.at_resolution(0.5)
    img, msk = t(image, mask)
    assert img.shape == (3, 8, 10)
    half_image, half_mask = resize_pair(image, mask, (8, 10))  # the whole frame, at half the side
    assert torch.equal(msk, half_mask) or torch.equal(msk, half_mask.flip(-1))  # (the flip is random)
    t.at_resolution(1.0)
    img, msk = t(image, mask)
    assert img.shape == (3, 16, 20) and (torch.equal(msk, mask) or torch.equal(msk, mask.flip(-1)))


def test_dihedral_turns_image_and_mask_alike_and_reaches_all_eight_views():
    from pixelwise.data.transforms import RandomDihedral

    mask = torch.arange(12).reshape(3, 4)
    image = (mask.float() / 100).expand(3, 3, 4).clone()
    seen = set()
    for seed in range(64):
        turned_image, turned_mask = RandomDihedral()(image, mask, random.Random(seed))
        assert torch.equal((turned_image[0] * 100).round().long(), turned_mask)  # still aligned
        seen.add(tuple(turned_mask.flatten().tolist()))
    views = {tuple(m.rot90(k, (0, 1)).flatten().tolist()) for m in (mask, mask.flip(0)) for k in range(4)}
    assert seen == views and len(views) == 8


def test_vertical_asymmetry_counts_the_pixels_that_change_halves():
    from pixelwise.data.transforms import vertical_asymmetry

    street = np.zeros((4, 6), np.uint8)
    street[2:] = 1  # sky above, road below
    assert vertical_asymmetry([street], 2) == 1.0
    cells = np.zeros((4, 6), np.uint8)
    cells[0, 1] = cells[3, 4] = 1
    assert vertical_asymmetry([cells], 2) == 0.0
    street[0, 0], street[3, 5] = 1, 9  # one road pixel at the top; one ignore pixel, not counted
    # top: 11 sky + 1 road, bottom: 11 road -> |11 - 0| + |1 - 11| over 23 labelled
    assert vertical_asymmetry([street], 2) == pytest.approx(21 / 23)


def test_augment_auto_keeps_street_scenes_upright_and_turns_the_nuclei_sample(nuclei_root):
    from pixelwise.data.formats import load_spec
    from pixelwise.data.io import read_mask
    from pixelwise.data.transforms import TOP_DOWN_BELOW, resolve_augment

    street = np.zeros((36, 48), np.uint8)
    street[:12], street[12:24], street[24:] = 0, 1, 3  # sky, building, road
    messages = []
    assert resolve_augment("auto", [street], 11, messages.append) == "upright"
    assert "asymmetry is 0.67" in messages[0]
    spec = load_spec(nuclei_root)
    masks = [read_mask(m) for _, m in spec.splits["train"]]
    assert resolve_augment("auto", masks, spec.num_classes, messages.append) == "top-down"
    assert f"below {TOP_DOWN_BELOW}" in messages[1]
    assert resolve_augment("upright", masks, spec.num_classes) == "upright"


def test_colour_cast_scales_each_channel_by_its_own_gain_and_leaves_the_mask():
    from pixelwise.data.transforms import ColourCast

    grey = torch.full((3, 2, 2), 0.5)  # no colour: saturation cannot change it, only the gains can
    mask = torch.tensor([[0, 1], [2, 255]])
    cast, rng = ColourCast(0.2), random.Random(7)
    expected = random.Random(7)
    gains = [1 + expected.uniform(-0.2, 0.2) for _ in range(3)]
    image, same_mask = cast(grey, mask, rng)
    assert torch.equal(same_mask, mask)
    assert torch.allclose(image[:, 0, 0], 0.5 * torch.tensor(gains))
    assert len(set(round(g, 6) for g in gains)) == 3  # three different gains
