import random

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
