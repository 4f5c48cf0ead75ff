import pytest
import torch

from pixelwise.training.losses import class_weights, segmentation_loss


def test_median_frequency_weights_exact():
    counts = [10, 40, 0, 160]  # class 2 never appears: weight 1, it has no pixels anyway
    assert class_weights(counts, "median").tolist() == pytest.approx([4.0, 1.0, 1.0, 0.25])
    assert class_weights(counts, "sqrt-median").tolist() == pytest.approx([2.0, 1.0, 1.0, 0.5])
    assert class_weights(counts, "none") is None
    with pytest.raises(ValueError, match="unknown class weighting"):
        class_weights(counts, "inverse")


def test_loss_ignores_ignore_pixels_and_uses_weights():
    logits = torch.zeros(1, 2, 1, 3)  # uniform: every pixel costs log 2
    target = torch.tensor([[[0, 1, 255]]])
    assert segmentation_loss(None, 255)(logits, target).item() == pytest.approx(torch.log(torch.tensor(2.0)).item())
    logits[0, 0, 0, 0] = 10.0  # pixel 0 now nearly free; weighted mean leans on pixel 1 (weight 3)
    loss = segmentation_loss(torch.tensor([1.0, 3.0]), 255)(logits, target).item()
    nll0 = torch.nn.functional.cross_entropy(torch.tensor([[10.0, 0.0]]), torch.tensor([0])).item()
    assert loss == pytest.approx((nll0 + 3 * torch.log(torch.tensor(2.0)).item()) / 4)
