import pytest
import torch

from pixelwise.evaluation import ConfusionMatrix


def test_hand_computed_matrix_with_ignore_and_a_class_absent_everywhere():
    cm = ConfusionMatrix(num_classes=3, ignore_index=255)
    cm.update(torch.tensor([0, 1, 1, 1, 2, 0]), torch.tensor([0, 0, 1, 1, 255, 0]))
    assert cm.matrix.tolist() == [[2, 1, 0], [0, 2, 0], [0, 0, 0]]
    m = cm.compute(["a", "b", "c"])
    assert m["pixel_accuracy"] == pytest.approx(4 / 5)
    assert m["mean_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["per_class_iou"] == {"a": pytest.approx(2 / 3), "b": pytest.approx(2 / 3), "c": None}
    assert m["mean_iou"] == pytest.approx(2 / 3)
    assert m["fw_iou"] == pytest.approx((3 * 2 / 3 + 2 * 2 / 3) / 5)
    # a: 2 of 2 predicted are right, 2 of 3 found; b: 2 of 3 predicted are right, 2 of 2 found; c: nothing either way
    assert m["per_class_precision"] == {"a": 1.0, "b": pytest.approx(2 / 3), "c": None}
    assert m["per_class_recall"] == {"a": pytest.approx(2 / 3), "b": 1.0, "c": None}


def test_class_predicted_but_absent_from_truth_counts_as_zero_iou():
    cm = ConfusionMatrix(num_classes=3, ignore_index=255)
    cm.update(torch.tensor([[0, 2, 1]]), torch.tensor([[0, 0, 1]]))
    m = cm.compute()
    assert m["per_class_iou"] == {"0": 0.5, "1": 1.0, "2": 0.0}
    assert m["mean_iou"] == pytest.approx(0.5)
    assert m["mean_accuracy"] == pytest.approx(0.75)  # class 2 has no truth: left out
    assert m["fw_iou"] == pytest.approx((2 * 0.5 + 1 * 1.0) / 3)
    assert m["pixel_accuracy"] == pytest.approx(2 / 3)


def test_updates_accumulate_and_camvid_style_ignore_inside_label_range():
    cm = ConfusionMatrix(num_classes=2, ignore_index=2)
    cm.update(torch.tensor([0, 1]), torch.tensor([0, 2]))
    cm.update(torch.tensor([1, 1]), torch.tensor([1, 0]))
    assert cm.matrix.tolist() == [[1, 1], [0, 1]]


def test_shape_mismatch_and_bad_label_raise():
    cm = ConfusionMatrix(num_classes=2, ignore_index=255)
    with pytest.raises(ValueError, match="differ in shape"):
        cm.update(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="outside 0..1"):
        cm.update(torch.zeros(2), torch.tensor([0, 7]))
