"""benchmarks/camvid.py's multi-scale rescoring: the mean of the class probabilities over the scales."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from camvid import MultiScale  # noqa: E402


class ScaleEngine:
    """Logits that say which scale made them: class 0 wins at scale 1, class 1 at scale 2."""
    scale = 1.0

    def logits(self, images):
        n, _, h, w = images.shape
        logits = torch.zeros(n, 2, h, w)
        logits[:, 0] = 2.0 if self.scale == 1.0 else 0.0
        logits[:, 1] = 3.0 if self.scale == 2.0 else 0.0
        return logits


def test_multi_scale_averages_each_scales_probabilities():
    images = torch.zeros(1, 3, 2, 3)
    engine = ScaleEngine()
    probabilities = MultiScale(engine, [1.0, 2.0]).logits(images)
    # scale 1: softmax(2, 0); scale 2: softmax(0, 3); their sum
    first, second = torch.tensor([2.0, 0.0]).softmax(0), torch.tensor([0.0, 3.0]).softmax(0)
    assert torch.allclose(probabilities[0, :, 0, 0], first + second)
    assert probabilities.argmax(1).eq(1).all()  # 0.12 + 0.95 for class 1 against 0.88 + 0.05
    assert engine.scale == 1.0  # the engine's own scale is restored
