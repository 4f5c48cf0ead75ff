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
    # Dice = 2 n_ii / (t_i + p_i): a 2*2/(3+2), b 2*2/(2+3); the harmonic mean of precision and recall
    assert m["per_class_dice"] == {"a": pytest.approx(0.8), "b": pytest.approx(0.8), "c": None}
    assert m["mean_dice"] == pytest.approx(0.8)


def test_class_predicted_but_absent_from_truth_counts_as_zero_iou():
    cm = ConfusionMatrix(num_classes=3, ignore_index=255)
    cm.update(torch.tensor([[0, 2, 1]]), torch.tensor([[0, 0, 1]]))
    m = cm.compute()
    assert m["per_class_iou"] == {"0": 0.5, "1": 1.0, "2": 0.0}
    assert m["mean_iou"] == pytest.approx(0.5)
    assert m["mean_accuracy"] == pytest.approx(0.75)  # class 2 has no truth: left out
    assert m["fw_iou"] == pytest.approx((2 * 0.5 + 1 * 1.0) / 3)
    assert m["pixel_accuracy"] == pytest.approx(2 / 3)
    assert m["per_class_dice"] == {"0": pytest.approx(2 / 3), "1": 1.0, "2": 0.0}  # 2*1/(2+1), 2/2, 0/1
    assert m["mean_dice"] == pytest.approx((2 / 3 + 1 + 0) / 3)


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


def test_the_report_shows_iou_dice_precision_and_recall_per_class_and_dashes_for_what_is_undefined():
    from pixelwise.api import format_metrics

    cm = ConfusionMatrix(num_classes=4, ignore_index=255)
    cm.update(torch.tensor([0, 1, 1, 1, 2, 0]), torch.tensor([0, 0, 1, 1, 255, 0]))  # d: nowhere; c: only ignored
    cm.update(torch.tensor([2]), torch.tensor([1]))  # c predicted once, never true: precision 0, recall undefined
    report = format_metrics({"split": "val", "images": 2, **cm.compute(["a", "b", "c", "d"])}).splitlines()
    assert report[5] == "  mean Dice (F1)   0.4889"  # (2*2/(3+2) + 2*2/(3+3) + 0) / 3
    assert report[7:] == ["  class                    IoU  Dice/F1  precision  recall",
                          "  a                     0.6667   0.8000     1.0000  0.6667",
                          "  b                     0.5000   0.6667     0.6667  0.6667",
                          "  c                     0.0000   0.0000     0.0000       —",
                          "  d                    —  (absent)"]


def test_per_image_csv_lists_every_image_worst_first_with_the_scores_browse_worst_orders_by(nuclei_root, tmp_path):
    import csv
    from pathlib import Path

    from pixelwise.api import evaluate, per_image_iou

    checkpoint = Path(__file__).parent / "fixtures" / "checkpoint_2026-12-03.pt"  # fcn_vanilla on this sample
    plain = evaluate(checkpoint, nuclei_root, split="train", plot_path=tmp_path / "a.png", precision="fp32")
    scored = evaluate(checkpoint, nuclei_root, split="train", plot_path=tmp_path / "b.png", precision="fp32",
                      per_image_csv=tmp_path / "per_image.csv")
    assert scored["confusion_matrix"] == plain["confusion_matrix"]  # scoring per image changes no total
    rows = list(csv.DictReader(open(tmp_path / "per_image.csv")))
    assert list(rows[0]) == ["image", "mean_iou", "pixel_accuracy", "iou_background", "iou_nucleus"]
    browse = per_image_iou(checkpoint, nuclei_root, split="train", precision="fp32")
    assert [row["image"] for row in rows] == sorted(browse, key=browse.get)  # data browse --worst's order
    for row in rows:
        assert float(row["mean_iou"]) == pytest.approx(browse[row["image"]], abs=1e-6)
        assert float(row["mean_iou"]) == pytest.approx((float(row["iou_background"]) + float(row["iou_nucleus"])) / 2,
                                                       abs=1e-6)
