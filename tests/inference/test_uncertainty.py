"""Uncertainty per pixel and per image, and `pixelwise data suggest`, which ranks images by it."""
import math
from pathlib import Path

import numpy as np
from PIL import Image
import pytest

from pixelwise.checkpoint import save_checkpoint
from pixelwise.cli import build_parser, main
from pixelwise.config import TrainConfig
from pixelwise.inference.predict import load
from pixelwise.inference.uncertainty import (DEFAULT_MEASURE, balanced_order, class_layout, class_uncertainty, diverse_order,
                                             image_uncertainty, kmeans, pixel_entropy, pixel_margin, rank_by_uncertainty,
                                             rarity_weights, spread_out, typical_order, typicality)
from pixelwise.models.registry import create_model


def test_entropy_and_margin_exact_values():
    proba = np.zeros((4, 1, 3))
    proba[:, 0, 0] = 0.25  # uniform over 4 classes: entropy log 4, margin 0
    proba[2, 0, 1] = 1.0  # certain: entropy 0, margin 1
    proba[:, 0, 2] = (0.5, 0.3, 0.2, 0.0)  # margin 0.2
    np.testing.assert_allclose(pixel_entropy(proba)[0], [math.log(4), 0.0,
                               -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2))], rtol=1e-6)
    np.testing.assert_allclose(pixel_margin(proba)[0], [0.0, 1.0, 0.2], atol=1e-7)
    scores = image_uncertainty(proba)
    assert scores["margin"] == pytest.approx(0.4, abs=1e-7)


def test_rank_orders_most_uncertain_first_by_either_measure():
    confident, torn, middling = np.array([[[0.9]], [[0.1]]]), np.array([[[0.5]], [[0.5]]]), np.array([[[0.7]], [[0.3]]])
    table = {"a": confident, "b": torn, "c": middling}
    for measure in ("entropy", "margin"):
        assert [p for p, _ in rank_by_uncertainty(table.__getitem__, ["a", "b", "c"], measure)] == ["b", "c", "a"]
    with pytest.raises(ValueError, match="unknown uncertainty measure"):
        rank_by_uncertainty(table.__getitem__, ["a"], "variance")


def test_predict_proba_sums_to_one_and_agrees_with_predict(folder_dataset, tmp_path):
    model = create_model("fcn32s", backbone="segnet_basic", num_classes=3, upsample="bilinear", pretrained=False)
    cfg = TrainConfig(data="x", model="fcn32s", backbone="segnet_basic", upsample="bilinear", infer_scale=1.0)
    save_checkpoint(tmp_path / "m.pt", model=model.state_dict(), config=cfg.to_dict(),
                    class_names=["background", "cat", "dog"], ignore_index=255, palette=[[0, 0, 0]] * 256)
    predictor = load(tmp_path / "m.pt", precision="fp32")
    image = folder_dataset / "images" / "img00.png"
    proba = predictor.predict_proba(image)
    assert proba.shape == (3, 20, 24) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(0), 1.0, atol=1e-5)
    assert (proba.argmax(0) == predictor.predict(image)).all()

    # `data suggest` ranks exactly the images without a mask, most uncertain first
    for i in (2, 5, 7):
        (folder_dataset / "masks" / f"img{i:02d}.png").unlink()
    assert main(["data", "suggest", str(folder_dataset), "--checkpoint", str(tmp_path / "m.pt"), "--measure",
                 "entropy", "--precision", "fp32", "--out", str(tmp_path / "next.txt")]) == 0
    listed = (tmp_path / "next.txt").read_text().split()
    entropy = {f"images/img{i:02d}.png": pixel_entropy(predictor.predict_proba(
        folder_dataset / "images" / f"img{i:02d}.png")).mean() for i in (2, 5, 7)}
    assert listed == sorted(entropy, key=lambda name: -entropy[name])

    # --measure balanced weighs each class by how little of it the 9 masks hold
    assert main(["data", "suggest", str(folder_dataset), "--checkpoint", str(tmp_path / "m.pt"), "--measure",
                 "balanced", "--precision", "fp32", "--out", str(tmp_path / "balanced.txt")]) == 0
    masks = [np.asarray(Image.open(m)) for m in sorted((folder_dataset / "masks").glob("*.png"))]
    labelled = sum(np.bincount(m.ravel(), minlength=256)[:3] for m in masks)
    profiles = {f"images/img{i:02d}.png": class_uncertainty(predictor.predict_proba(
        folder_dataset / "images" / f"img{i:02d}.png")) for i in (2, 5, 7)}
    assert (tmp_path / "balanced.txt").read_text().split() == balanced_order(profiles, labelled)

    # diverse, the default, with --groups 2: the most uncertain of each of two kinds of scene, then the third
    assert build_parser().parse_args(["data", "suggest", "d", "--checkpoint", "c"]).measure == DEFAULT_MEASURE
    assert main(["data", "suggest", str(folder_dataset), "--checkpoint", str(tmp_path / "m.pt"), "--groups", "2",
                 "--precision", "fp32", "--out", str(tmp_path / "diverse.txt")]) == 0
    layouts = {name: class_layout(predictor.predict_proba(folder_dataset / name)) for name in entropy}
    assert (tmp_path / "diverse.txt").read_text().split() == diverse_order(entropy, layouts, groups=2)

    # --measure typical: the kinds of scene the 9 masked images cover go last
    assert main(["data", "suggest", str(folder_dataset), "--checkpoint", str(tmp_path / "m.pt"), "--measure",
                 "typical", "--groups", "2", "--precision", "fp32", "--out", str(tmp_path / "typical.txt")]) == 0
    covered = [class_layout(predictor.predict_proba(folder_dataset / "images" / f"{m.stem}.png"))
               for m in sorted((folder_dataset / "masks").glob("*.png"))]
    assert len(covered) == 9
    assert (tmp_path / "typical.txt").read_text().split() == typical_order(layouts, groups=2, labelled=covered)


def test_spread_out_defers_near_copies_of_chosen_images():
    ranked = [(name, {"entropy": e}) for name, e in (("a", 3.0), ("b", 2.0), ("c", 1.0), ("d", 0.5))]
    # b is 3 bits from a, d is 1 bit from a, c is 40 bits from a: c moves ahead of b and d, which keep their order
    hashes = {"a": 0, "b": 0b111, "c": (1 << 40) - 1, "d": 0b1}
    assert [n for n, _ in spread_out(ranked, hashes, min_distance=16)] == ["a", "c", "b", "d"]
    assert [n for n, _ in spread_out(ranked, hashes, min_distance=3)] == ["a", "b", "c", "d"]
    assert [n for n, _ in spread_out(ranked, hashes, min_distance=0)] == ["a", "b", "c", "d"]


def test_class_uncertainty_splits_each_pixels_entropy_over_its_classes():
    # pixel 0 sure of class 0; pixel 1 torn between classes 1 and 2
    proba = np.array([[[1.0, 0.0]], [[0.0, 0.5]], [[0.0, 0.5]]])
    mass, unsure = class_uncertainty(proba)
    np.testing.assert_allclose(mass, [1.0, 0.5, 0.5])
    np.testing.assert_allclose(unsure, [0.0, 0.5 * math.log(2), 0.5 * math.log(2)], atol=1e-6)


def test_rarity_weights_are_one_over_the_root_of_the_share():
    np.testing.assert_allclose(rarity_weights(np.array([75.0, 25.0])), [1 / math.sqrt(0.75), 2.0])
    np.testing.assert_allclose(rarity_weights(np.array([100.0, 0.0])), [1.0, 1 / math.sqrt(1e-3)])


def test_balanced_order_takes_rare_class_doubt_first_and_moves_on_once_a_class_is_chosen():
    def profile(cls, entropy=1.0, pixels=100.0):
        mass = np.zeros(3)
        mass[cls] = pixels
        return mass, mass * entropy

    labelled = np.array([900.0, 50.0, 50.0])  # class 0 common, classes 1 and 2 rare
    profiles = {Path("common_unsure.png"): profile(0, entropy=2.0), Path("rare1_a.png"): profile(1),
                Path("rare1_b.png"): profile(1), Path("rare2.png"): profile(2, entropy=0.9)}
    order = balanced_order(profiles, labelled)
    # rare doubt beats twice the entropy on a common class; once rare1_a is in, class 2 pulls harder
    # than a second image of class 1, although rare2's model is less unsure
    assert [p.name for p in order] == ["rare1_a.png", "rare2.png", "rare1_b.png", "common_unsure.png"]


def test_class_layout_is_each_class_mean_probability_in_each_grid_cell():
    proba = np.zeros((2, 4, 6))
    proba[0, :2] = 1.0  # class 0 fills the top half, class 1 the bottom half
    proba[1, 2:] = 1.0
    proba[:, 0, 0] = 0.5  # one torn pixel in the top-left cell of 2x3 pixels
    layout = class_layout(proba, grid=2).reshape(2, 2, 2)  # (class, row, column)
    np.testing.assert_allclose(layout[0], [[1 - 0.5 / 6, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(layout[1], [[0.5 / 6, 0.0], [1.0, 1.0]])
    # an image smaller than the grid repeats its pixels instead of leaving cells empty
    tiny = class_layout(np.array([[[0.25, 1.0]], [[0.75, 0.0]]]), grid=4).reshape(2, 4, 4)
    np.testing.assert_allclose(tiny[0], [[0.25, 0.25, 1.0, 1.0]] * 4)


def test_kmeans_finds_well_separated_groups_whatever_the_seed():
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(centre, 0.1, (10, 2)) for centre in ([0, 0], [5, 5], [0, 5])])
    truth = np.repeat([0, 1, 2], 10)
    for seed in range(5):
        groups = kmeans(points, 3, seed=seed)
        # the same partition, whatever number each group gets
        assert len({(t, g) for t, g in zip(truth, groups)}) == 3 and len(set(groups)) == 3
    assert kmeans(points[:2], 5).tolist() in ([0, 1], [1, 0])  # k is capped at the number of points


def test_diverse_order_takes_one_of_every_scene_before_a_second_of_any():
    def scene(road_share):  # (2, 8, 8) probabilities: road below, sky above, the split at road_share
        proba = np.zeros((2, 8, 8))
        split = round(8 * (1 - road_share))
        proba[1, :split], proba[0, split:] = 1.0, 1.0
        return proba

    # three frames of a mostly-road shot, most uncertain of all, and two frames of a mostly-sky shot
    layouts = {Path(f"road{i}.png"): class_layout(scene(0.75)) for i in range(3)}
    layouts |= {Path(f"sky{i}.png"): class_layout(scene(0.25)) for i in range(2)}
    entropy = {Path("road0.png"): 0.9, Path("road1.png"): 0.8, Path("road2.png"): 0.7,
               Path("sky0.png"): 0.2, Path("sky1.png"): 0.3}
    order = [p.name for p in diverse_order(entropy, layouts, groups=2)]
    assert order == ["road0.png", "sky1.png", "road1.png", "sky0.png", "road2.png"]
    assert sorted(entropy, key=entropy.get, reverse=True)[:3] == [Path(f"road{i}.png") for i in range(3)]  # unlike plain entropy


def test_typicality_is_one_over_the_mean_distance_to_the_nearest_neighbours():
    points = np.array([[0.0], [1.0], [3.0], [10.0]])
    # nearest two others: 0 -> 1, 3 (mean 2); 1 -> 1, 2 (1.5); 3 -> 2, 3 (2.5); 10 -> 7, 9 (8)
    np.testing.assert_allclose(typicality(points, neighbours=2), [1 / 2, 1 / 1.5, 1 / 2.5, 1 / 8])
    assert typicality(points[:1]).tolist() == [1.0]


def test_typical_order_takes_the_centre_of_each_scene_no_mask_covers_first():
    around = [(0, 0), (0.1, 0), (-0.1, 0), (0, 0.1), (0, -0.1), (0.8, 0)]  # a centre, four close, one outlier
    layouts = {Path(f"road{i}.png"): np.array([x, y]) for i, (x, y) in enumerate(around)}
    layouts |= {Path(f"sky{i}.png"): np.array([5 + x, y]) for i, (x, y) in enumerate(around)}
    layouts |= {Path(f"bus{i}.png"): np.array([10 + x, y]) for i, (x, y) in enumerate(around[:3])}
    labelled = [np.array([5.02, 0.0])]  # a sky image already has a mask
    order = [p.stem for p in typical_order(layouts, groups=2, labelled=labelled)]
    # road (6 images) before bus (3): both uncovered, the larger first; sky, covered, after them.
    # Within each scene by mean distance to the others: the centre (0.1 x 4 + 0.8), then (0.1, 0) nearer the
    # outlier, then (0, +-0.1), then (-0.1, 0); the outlier last.
    assert order == ["road0", "bus0", "sky0", "road1", "bus1", "sky1", "road3", "bus2", "sky3", "road4", "sky4",
                     "road2", "sky2", "road5", "sky5"]
