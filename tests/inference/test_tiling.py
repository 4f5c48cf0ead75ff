"""Tiled prediction: blend weights that sum to one, labels equal to whole-image prediction, no seams,
and memory that does not grow with full-image float logits."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pixelwise.errors import PixelwiseError
from pixelwise.inference.engines import TorchEngine
from pixelwise.inference.tiling import (axis_weights, blend_window, class_argmax, image_tiling, predict_tiled, ramp,
                                        tile_starts, to_batch)
from pixelwise.models.registry import create_model


class BoxEngine:
    """Logits with a receptive field of radius r: an integer colour map, summed over a (2r+1)^2
    window with zero padding. Integer-valued in float32, so the arithmetic is exact."""

    def __init__(self, num_classes: int = 5, radius: int = 2, seed: int = 1):
        rng = np.random.default_rng(seed)
        self.colour = torch.tensor(rng.integers(-3, 4, (num_classes, 3, 1, 1)), dtype=torch.float32)
        self.bias = torch.tensor(rng.integers(-200, 200, num_classes), dtype=torch.float32)
        self.num_classes, self.radius = num_classes, radius

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        scores = F.conv2d((images * 255).round(), self.colour, self.bias)
        k = 2 * self.radius + 1
        return F.conv2d(scores, torch.ones(self.num_classes, 1, k, k), padding=self.radius, groups=self.num_classes)


def whole(engine, image: np.ndarray) -> np.ndarray:
    return engine.logits(to_batch([image]))[0].argmax(0).to(torch.uint8).numpy()


def test_ramp_exact_values_and_symmetry():
    # overlap 8: weight 0 over the first quarter (2 px), sin^2 rise over the middle 4, 1 over the last 2
    expected = [0, 0] + [math.sin(math.pi / 2 * (k + 0.5) / 4) ** 2 for k in range(4)] + [1, 1]
    np.testing.assert_allclose(ramp(8), expected, atol=1e-15)
    for overlap in (1, 2, 7, 64, 128):
        np.testing.assert_allclose(ramp(overlap) + ramp(overlap)[::-1], 1.0, atol=1e-15)


def test_blend_window_sums_to_one_over_a_regular_grid():
    tile_h, tile_w, overlap = 40, 56, 16
    window = blend_window(tile_h, tile_w, overlap)
    assert window.shape == (tile_h, tile_w) and window.dtype == np.float32
    np.testing.assert_array_equal(window, window[::-1, :])
    np.testing.assert_array_equal(window, window[:, ::-1])
    assert (window[overlap:tile_h - overlap, overlap:tile_w - overlap] == 1).all()  # flat 1 inside
    assert (window[:overlap // 4] == 0).all() and (window[:, :overlap // 4] == 0).all()  # tile border discarded
    rows, cols = 4, 3
    total = np.zeros((overlap + rows * (tile_h - overlap), overlap + cols * (tile_w - overlap)))
    for i in range(rows):
        for j in range(cols):
            y, x = i * (tile_h - overlap), j * (tile_w - overlap)
            total[y:y + tile_h, x:x + tile_w] += window
    # everywhere but the grid's outer ramps, which no neighbour completes
    np.testing.assert_allclose(total[overlap:-overlap, overlap:-overlap], 1.0, atol=1e-6)
    square = blend_window(32, 32, 8)
    np.testing.assert_array_equal(square, square.T)


def test_tile_starts_cover_the_image_with_full_tiles():
    assert tile_starts(1000, 1024, 128) == [0]
    assert tile_starts(1024, 1024, 128) == [0]
    assert tile_starts(1920, 1024, 128) == [0, 896]  # exactly a regular grid
    assert tile_starts(2000, 1024, 128) == [0, 488, 976]  # evenly spread, the last one ends at the edge
    for length in (1025, 1921, 6000, 8000):
        starts = tile_starts(length, 1024, 128)
        assert starts[0] == 0 and starts[-1] == length - 1024
        assert all(128 <= a + 1024 - b for a, b in zip(starts, starts[1:]))  # neighbours overlap >= 128


@pytest.mark.parametrize("length", [40, 64, 65, 100, 201])
def test_axis_weights_sum_to_one_and_keep_image_edges(length):
    starts, weights = axis_weights(length, 48, 16)
    total = np.zeros(length)
    for start, w in zip(starts, weights):
        total[start:start + weights.shape[1]] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-12)
    assert weights[0][0] == 1 and weights[-1][-1] == 1  # no ramp where there is no neighbour
    if len(starts) > 1:
        assert (weights[1][:4] == 0).all() and (weights[0][-4:] == 0).all()  # inner tile borders discarded


def test_axis_weights_on_a_regular_grid_are_the_blend_window():
    starts, weights = axis_weights(16 + 3 * 32, 48, 16)
    assert starts == [0, 32, 64]
    np.testing.assert_allclose(weights[1], blend_window(48, 48, 16)[24], atol=1e-7)


def test_bad_tiling_is_refused_with_the_fix():
    with pytest.raises(PixelwiseError, match=r"--overlap 600 must be between 0 and half of --tile 1024 \(512\)"):
        predict_tiled(BoxEngine(), np.zeros((8, 8, 3), np.uint8), 1024, 600)
    with pytest.raises(PixelwiseError, match="--tile 0"):
        predict_tiled(BoxEngine(), np.zeros((8, 8, 3), np.uint8), 0, 0)
    with pytest.raises(PixelwiseError, match=r"HxWx3 uint8 image, got shape \(8, 8\) dtype float32"):
        predict_tiled(BoxEngine(), np.zeros((8, 8), np.float32), 64, 16)


@pytest.mark.parametrize("size,tile,overlap,batch", [
    ((100, 130), 64, 16, 1), ((64, 200), 48, 24, 3), ((257, 97), 40, 8, 2), ((31, 500), 48, 16, 2),
    ((20, 30), 64, 16, 1),  # smaller than a tile: one whole-image pass
])
def test_tiled_equals_whole_image_for_a_small_receptive_field(size, tile, overlap, batch):
    """A receptive field no wider than the discarded quarter of the overlap: every weighted logit
    equals the whole-image one, so the labels are identical, pixel for pixel."""
    image = np.random.default_rng(sum(size)).integers(0, 256, (*size, 3), dtype=np.uint8)
    engine = BoxEngine(radius=overlap // 4)
    labels = predict_tiled(engine, image, tile, overlap, batch=batch)
    assert labels.shape == size and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, whole(engine, image))


def test_no_seam_along_tile_borders():
    # a smooth colour gradient with straight class boundaries crossing the tile borders
    yy, xx = np.mgrid[0:150, 0:190]
    image = np.stack([xx * 255 // 189, yy * 255 // 149, (xx + yy) * 255 // 338], axis=-1).astype(np.uint8)
    engine = BoxEngine(num_classes=4, radius=3, seed=1)
    reference = whole(engine, image)
    assert (np.bincount(reference.ravel()) > 0.1 * reference.size).sum() == 3  # three classes, two boundaries
    starts_y, starts_x = tile_starts(150, 64, 24), tile_starts(190, 64, 24)
    borders_y = sorted({s for s in starts_y[1:]} | {s + 63 for s in starts_y[:-1]})
    borders_x = sorted({s for s in starts_x[1:]} | {s + 63 for s in starts_x[:-1]})

    def near_borders(labels):
        return np.concatenate([labels[borders_y].ravel(), labels[:, borders_x].ravel()])

    tiled = predict_tiled(engine, image, 64, 24)
    np.testing.assert_array_equal(near_borders(tiled), near_borders(reference))
    np.testing.assert_array_equal(tiled, reference)
    # the check can fail: hard-cut tiles (no overlap) see zero padding at their borders and show seams
    hard = predict_tiled(engine, image, 64, 0)
    assert (hard != reference).any()


def test_class_argmax_matches_torch_argmax_first_on_ties():
    logits = torch.randn(2, 7, 5, 6)
    logits[0, 2, 0, 0] = logits[0, 5, 0, 0] = 10.0  # a tie: the first index wins, as in torch.argmax
    np.testing.assert_array_equal(class_argmax(logits, dim=1), logits.argmax(1).numpy())
    assert class_argmax(logits, dim=1)[0, 0, 0] == 2
    assert class_argmax(logits[1]).dtype == np.uint8


def test_tiled_agrees_with_whole_image_for_a_registry_model():
    torch.manual_seed(0)
    model = create_model("fcn_vanilla", num_classes=4, upsample="bilinear", pretrained=False)
    for module in model.modules():  # the FCN score layer starts at zero: give every class a say
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
    engine = TorchEngine(model, device="cpu", precision="fp32")
    yy, xx = np.mgrid[0:96, 0:120]
    image = np.stack([(xx * 2) % 256, (yy * 3) % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
    reference = whole(engine, image)
    shares = np.bincount(reference.ravel(), minlength=4) / reference.size
    assert np.sort(shares)[-2] > 0.1  # not a one-class prediction that any tiling would match
    tiled = predict_tiled(engine, image, 64, 32, batch=2)
    assert (tiled == reference).mean() >= 0.995


MEMORY_SCRIPT = """
import json, sys
import numpy as np, torch
from pixelwise.inference.tiling import predict_tiled

class Cheap:  # 8 classes, a per-pixel colour map: the blending, not the model, is what is measured
    weights = torch.linspace(-1, 1, 24).view(8, 3, 1, 1)
    def logits(self, images):
        return torch.nn.functional.conv2d(images, self.weights)

def peak_kb():
    # this process's own high-water mark: getrusage's ru_maxrss survives exec, so a child forked from a
    # large pytest process would report the parent's peak
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

image = np.empty((2816, 4000, 3), dtype=np.uint8)  # a regular grid of 3 x 5 tiles
image[:] = (np.arange(4000) % 256).astype(np.uint8)[None, :, None]
before = peak_kb()
labels = predict_tiled(Cheap(), image, 1024, 128)
after = peak_kb()
print(json.dumps({"before_kb": before, "after_kb": after, "classes": np.unique(labels).tolist()}))
"""


def test_peak_memory_stays_far_below_full_image_logits():
    run = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    rss = json.loads(run.stdout.strip().splitlines()[-1])
    full_logits_kb = 8 * 2816 * 4000 * 4 // 1024  # 344 MB of float logits for the whole image
    assert len(rss["classes"]) > 1
    assert rss["after_kb"] - rss["before_kb"] < full_logits_kb // 2
    assert rss["after_kb"] < 1.5 * 1024 * 1024


def test_tile_size_is_what_the_network_sees_at_the_engines_inference_scale():
    class Recording:
        scale = 2.0  # the network sees every image twice as large: image tiles must be half as large

        def __init__(self):
            self.shapes = []

        def logits(self, images):
            self.shapes.append(tuple(images.shape))
            return torch.zeros(images.shape[0], 3, *images.shape[-2:])

    engine = Recording()
    predict_tiled(engine, np.zeros((100, 100, 3), dtype=np.uint8), tile=64, overlap=16)
    assert set(engine.shapes) == {(1, 3, 32, 32)}
    assert len(engine.shapes) == len(tile_starts(100, 32, 8)) ** 2 == 16
    assert image_tiling(1024, 128, 1.75) == (585, 73) and image_tiling(64, 16, 2.0) == (32, 8)
