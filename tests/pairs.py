"""Small builders the tests share (a module of its own: `conftest` names clash between test folders)."""
from pathlib import Path

import numpy as np
from PIL import Image


def write_pair(image_path: Path, mask_path: Path, size=(24, 20), labels=(0, 1), seed=0):
    """A random RGB image and a mask using `labels`, both (width, height) = size."""
    rng = np.random.default_rng(seed)
    w, h = size
    image_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(image_path)
    mask = np.array(labels, dtype=np.uint8)[rng.integers(0, len(labels), (h, w))]
    Image.fromarray(mask).save(mask_path)
    return mask
