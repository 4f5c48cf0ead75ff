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


def logits_for(true_class_probabilities):
    """Two-class logits, true class 0 everywhere, whose softmax gives class 0 exactly these probabilities."""
    p = torch.tensor(true_class_probabilities, dtype=torch.float64)
    return torch.stack([torch.log(p), torch.log1p(-p)])[None, :, None, :]  # (1, 2, 1, W)


def test_ohem_averages_the_pixels_the_model_still_gets_wrong():
    ohem = segmentation_loss(None, 255, "ohem")
    logits = logits_for([0.9, 0.8, 0.5, 0.2, 0.1])
    target = torch.tensor([[[0, 0, 0, 0, 255]]])  # the last pixel, the worst, is ignore: never counted
    expected = -(torch.log(torch.tensor(0.5)) + torch.log(torch.tensor(0.2))).item() / 2  # below 0.7: hard
    assert ohem(logits, target).item() == pytest.approx(expected)


def test_ohem_keeps_the_hardest_share_when_every_pixel_is_learnt():
    ohem = segmentation_loss(None, 255, "ohem")
    probabilities = [0.99] * 30 + [0.8, 0.75]  # all above 0.7; 32 pixels x 1/16 = the 2 hardest are kept
    loss = ohem(logits_for(probabilities), torch.zeros(1, 1, 32, dtype=torch.long))
    assert loss.item() == pytest.approx(-(torch.log(torch.tensor(0.8)) + torch.log(torch.tensor(0.75))).item() / 2)
    assert ohem(logits_for([0.5]), torch.full((1, 1, 1), 255)).item() == 0.0  # nothing labelled
    with pytest.raises(ValueError, match="unknown loss"):
        segmentation_loss(None, 255, "focal")


def test_lovasz_of_a_one_hot_prediction_is_one_minus_mean_iou_over_present_classes():
    from pixelwise.evaluation import ConfusionMatrix
    from pixelwise.training.losses import lovasz_softmax
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (2, 12, 16), generator=generator)  # class 4 never appears in the labels
    labels[0, :2] = 255
    predicted = torch.randint(0, 5, (2, 12, 16), generator=generator)
    logits = torch.nn.functional.one_hot(predicted, 5).movedim(-1, 1).float() * 100  # softmax: exactly one-hot
    matrix = ConfusionMatrix(5, 255)
    matrix.update(predicted, labels)
    ious = matrix.compute()["per_class_iou"]
    expected = sum(1 - ious[str(c)] for c in range(4)) / 4  # the mean over classes present in the labels
    assert lovasz_softmax(logits, labels, 255).item() == pytest.approx(expected, abs=1e-6)
    perfect = torch.nn.functional.one_hot(labels.clamp(max=3), 5).movedim(-1, 1).float() * 100
    assert lovasz_softmax(perfect, labels, 255).item() == pytest.approx(0.0, abs=1e-6)


def test_ce_plus_lovasz_adds_the_two_and_learns_from_a_crop_with_nothing_labelled():
    from pixelwise.training import losses
    logits = torch.randn(2, 3, 8, 10, requires_grad=True)
    labels = torch.randint(0, 3, (2, 8, 10))
    grid = (..., slice(None, None, losses.LOVASZ_STRIDE), slice(None, None, losses.LOVASZ_STRIDE))
    expected = (torch.nn.functional.cross_entropy(logits, labels)
                + losses.lovasz_softmax(logits[grid], labels[grid], 255))
    assert segmentation_loss(None, 255, "ce+lovasz")(logits, labels).item() == pytest.approx(expected.item())
    nothing = losses.lovasz_softmax(logits, torch.full((2, 8, 10), 255), 255)
    nothing.backward()  # the graph survives an all-ignore crop
    assert nothing.item() == 0.0
