"""Weak-to-strong consistency: pseudo-labels, strong views that keep them on their pixels, the loss."""
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from pixelwise.data.unlabelled import collate_unlabelled
from pixelwise.training import semi


class FixedTeacher(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.modes = []

    def forward(self, x):
        self.modes.append(self.training)
        return self.logits


def test_pseudo_labels_are_the_teachers_classes_where_it_is_sure_enough():
    probabilities = torch.tensor([[0.96, 0.04], [0.5, 0.5], [0.01, 0.99]]).T.reshape(1, 2, 1, 3)
    teacher = FixedTeacher(probabilities.log()).train()
    labels, confident = semi.pseudo_labels(teacher, torch.zeros(1, 3, 1, 3), threshold=0.95)
    assert labels.tolist() == [[[0, 0, 1]]] and confident.tolist() == [[[True, False, True]]]
    assert teacher.modes == [False] and teacher.training  # labelled in eval mode, left in train mode


def test_consistency_loss_sums_confident_pixels_over_all_pixels():
    logits = torch.zeros(1, 2, 1, 4)  # every pixel costs log 2
    labels = torch.zeros(1, 1, 4, dtype=torch.long)
    confident = torch.tensor([[[True, False, True, False]]])
    assert semi.consistency_loss(logits, labels, confident).item() == pytest.approx(2 * 0.6931471805599453 / 4)


def test_cutmix_pastes_the_next_images_box_into_images_and_pseudo_labels_alike():
    images = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 3, 4, 5).clone()
    labels = torch.arange(3).view(3, 1, 1).expand(3, 4, 5).clone()
    boxes = torch.zeros(3, 4, 5, dtype=torch.bool)
    boxes[0, 1:3, 2:4] = True
    boxes[2, 0, 0] = True
    mixed, mixed_labels = semi.paste(images, boxes), semi.paste(labels, boxes)
    assert mixed_labels[0, 1:3, 2:4].eq(1).all() and mixed_labels[0][~boxes[0]].eq(0).all()
    assert mixed_labels[2, 0, 0] == 0 and mixed_labels[1].eq(1).all()  # the last image takes from the first
    assert torch.equal(mixed[:, 0], mixed_labels.float())


def test_strong_views_are_drawn_from_the_generator_alone_and_stay_in_range():
    weak = torch.rand(4, 3, 16, 20, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 3, (4, 16, 20), generator=torch.Generator().manual_seed(1))
    confident = torch.ones(4, 16, 20, dtype=torch.bool)
    a = semi.strong_views(weak, labels, confident, semi.step_generator(0, 2, 5, 0))
    b = semi.strong_views(weak, labels, confident, semi.step_generator(0, 2, 5, 0))
    c = semi.strong_views(weak, labels, confident, semi.step_generator(0, 2, 6, 0))
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[0], c[0])
    assert a[0].min() >= 0 and a[0].max() <= 1 and not torch.equal(a[0], weak)


def test_blur_keeps_a_flat_image_flat_and_softens_an_edge():
    flat = torch.full((1, 3, 8, 8), 0.3)
    assert torch.allclose(semi.blur(flat, torch.Generator().manual_seed(0), chance=1.0), flat)
    edge = torch.zeros(1, 3, 8, 8)
    edge[..., 4:] = 1.0
    blurred = semi.blur(edge, torch.Generator().manual_seed(0), chance=1.0)
    assert 0 < blurred[0, 0, 0, 3] < 0.5 < blurred[0, 0, 0, 4] < 1


class Numbers(torch.utils.data.Dataset):
    epoch = 0

    def __len__(self):
        return 5

    def __getitem__(self, i):
        return torch.full((3, 2, 2), float(i)), torch.ones(2, 2, dtype=torch.bool), i


def test_the_pool_restarts_with_a_new_order_when_an_epoch_outruns_it_and_repeats_on_resume():
    def walk(epoch, steps):
        loader = DataLoader(Numbers(), batch_size=2, sampler=DistributedSampler(Numbers(), 1, 0, seed=3),
                            collate_fn=collate_unlabelled, drop_last=True)
        consistency = semi.Consistency(loader, teacher=None, seed=3)
        consistency.start_epoch(epoch)
        return [consistency._next()[2].tolist() for _ in range(steps)]

    first = walk(0, 5)  # 2 batches a pass: 5 steps take 3 passes
    seen = [i for batch in first[:2] for i in batch]
    assert len(set(seen)) == 4 and first[2:4] != first[:2]
    assert walk(0, 5) == first and walk(1, 5) != first


# ---------------------------------------------------------------- through the trainer

FAST = dict(batch_size=4, crop_size=(64, 64), strategy="full", pretrained=False, infer_scale=1.0,
            precision="fp32", deterministic=True, seed=3)


def unlabelled_pool(nuclei_root, folder):
    """The sample's training tiles, mirrored (new images), one val tile copied as is (leakage) and one
    tile that a log callback breaks once screening has passed it."""
    from PIL import Image

    folder.mkdir()
    for name in (nuclei_root / "splits" / "train.txt").read_text().split():
        Image.open(nuclei_root / "images" / f"{name}.png").transpose(Image.FLIP_LEFT_RIGHT).save(folder / f"{name}.png")
    val = (nuclei_root / "splits" / "val.txt").read_text().split()[0]
    (folder / "copy_of_val.png").write_bytes((nuclei_root / "images" / f"{val}.png").read_bytes())
    return folder


def test_training_with_an_unlabelled_folder_logs_both_losses_leaves_out_leakage_and_lists_what_broke(
        nuclei_root, tmp_path):
    from pixelwise.api import train

    pool = unlabelled_pool(nuclei_root, tmp_path / "pool")
    breaks = sorted(pool.glob("tile_*.png"))[0]
    lines = []

    def log(line):
        lines.append(line)
        if line.startswith("semi-supervised:"):  # screened and accepted: now it goes bad
            breaks.write_bytes(b"truncated")

    train(nuclei_root, tmp_path / "run", epochs=3, unlabelled=[str(pool)], log=log, **FAST)
    assert any(line.startswith("leakage: unlabelled") and "copy_of_val.png copies" in line for line in lines)
    assert "semi-supervised: 10 labelled and 10 unlabelled images (left out: 1 copy of val/test images " \
           "(leakage)); pseudo-labels need 0.95 confidence" in lines
    epochs = [line for line in lines if line.startswith("epoch")]
    assert len(epochs) == 3 and all("unlabelled loss" in line and "% confident)" in line for line in epochs)
    assert lines[-2:] == ["1 unlabelled image could not be read during training and taught nothing:",
                          f"  {breaks}"]


def test_a_run_with_unlabelled_images_resumes_bit_identical(nuclei_root, tmp_path):
    from pixelwise.api import train
    from test_resume import StopAfter, assert_same_weights, weights

    pool = str(unlabelled_pool(nuclei_root, tmp_path / "pool"))
    train(nuclei_root, tmp_path / "whole", epochs=3, unlabelled=[pool], log=lambda _: None, **FAST)
    with pytest.raises(KeyboardInterrupt):
        train(nuclei_root, tmp_path / "cut", epochs=3, unlabelled=[pool], log=StopAfter(1), **FAST)
    train(nuclei_root, tmp_path / "cut", epochs=3, unlabelled=[pool], resume=True, log=lambda _: None, **FAST)
    assert_same_weights(weights(tmp_path / "whole"), weights(tmp_path / "cut"))


# ---------------------------------------------------------------- offline self-training

class FixedEngine:
    """Logits that say class 1 with confidence sigmoid(2) on the left half, class 0 barely on the right."""
    def logits(self, images):
        n, _, h, w = images.shape
        logits = torch.zeros(n, 2, h, w)
        logits[:, 1, :, : w // 2] = 2.0
        logits[:, 0, :, w // 2:] = 0.1
        return logits


@pytest.mark.parametrize("method, chosen, threshold", [("consistency", None, semi.THRESHOLD),
                                                       ("self-training", None, semi.SELF_TRAINING_THRESHOLD),
                                                       ("self-training", 0.8, 0.8), ("consistency", 0.0, 0.0)])
def test_pseudo_labels_need_the_chosen_confidence_or_the_methods_own(method, chosen, threshold):
    assert semi.threshold_for(method, chosen) == threshold


def test_the_pool_is_labelled_once_each_image_by_its_place_unsure_pixels_ignored_broken_files_listed(tmp_path):
    import numpy as np
    from PIL import Image
    from pixelwise.data.io import default_palette, read_mask

    pool = []
    for i in range(3):
        pool.append(tmp_path / f"p{i}.png")
        Image.fromarray(np.full((4, 6, 3), 40 * i, np.uint8)).save(pool[-1])
    pool[1].write_bytes(b"not a png")
    written, confident, unreadable = semi.pseudo_label_pool(FixedEngine(), pool, tmp_path / "labels",
                                                            default_palette(2), 255, range(3), threshold=0.6,
                                                            progress=False)
    assert (written, unreadable) == (2, [pool[1]])
    assert confident == pytest.approx(0.5)  # sigmoid(2) = 0.88 passes 0.6, sigmoid(0.1) = 0.52 does not
    expected = np.array([[1, 1, 1, 255, 255, 255]] * 4)
    assert np.array_equal(read_mask(semi.pseudo_label_file(tmp_path / "labels", 0)), expected)
    assert np.array_equal(read_mask(semi.pseudo_label_file(tmp_path / "labels", 2)), expected)
    assert not semi.pseudo_label_file(tmp_path / "labels", 1).exists()


def test_self_trainings_strong_view_is_another_light_drawn_from_the_samples_own_generator():
    import random

    image = torch.rand(3, 16, 20)
    views = [semi.strong_view(image, random.Random(seed)) for seed in ("s:1:4", "s:1:4", "s:1:5")]
    assert torch.equal(views[0], views[1]) and not torch.equal(views[0], views[2])
    assert all(v.shape == image.shape and not torch.equal(v, image) for v in views)
    assert all(0 <= float(v.min()) and float(v.max()) <= 1 for v in views)


def test_self_training_labels_the_pool_half_way_then_trains_on_both_and_resumes_bit_identical(nuclei_root, tmp_path):
    from pixelwise.api import train
    from test_resume import StopAfter, assert_same_weights, weights

    pool = str(unlabelled_pool(nuclei_root, tmp_path / "pool"))
    lines = []
    train(nuclei_root, tmp_path / "whole", epochs=4, unlabelled=[pool], semi_method="self-training", log=lines.append,
          **FAST)
    assert any(line.startswith("semi-supervised (self-training): 10 labelled and 10 unlabelled images")
               and line.endswith("every pixel kept") for line in lines)
    switch = [i for i, line in enumerate(lines) if line.startswith("self-training: the model labelled 10 pool images")]
    epochs = [i for i, line in enumerate(lines) if line.startswith("epoch")]
    assert len(switch) == 1 and epochs[1] < switch[0] < epochs[2]  # after 2 of 4 epochs
    assert lines[switch[0]].endswith("training goes on with 20 images, each epoch the 10 labelled once each and "
                                     "the 10 pseudo-labelled strongly augmented")
    assert len(list((tmp_path / "whole" / semi.PSEUDO_LABELS).glob("*.png"))) == 10
    assert not any("unlabelled loss" in line for line in lines)  # no per-step consistency
    with pytest.raises(KeyboardInterrupt):  # stopped after the switch: the resumed run reads the labels back
        train(nuclei_root, tmp_path / "cut", epochs=4, unlabelled=[pool], semi_method="self-training",
              log=StopAfter(3), **FAST)
    train(nuclei_root, tmp_path / "cut", epochs=4, unlabelled=[pool], semi_method="self-training", resume=True,
          log=lambda _: None, **FAST)
    assert_same_weights(weights(tmp_path / "whole"), weights(tmp_path / "cut"))
