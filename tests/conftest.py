from pathlib import Path

import numpy as np
import pytest
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


@pytest.fixture
def folder_dataset(tmp_path):
    """images/ masks/ classes.txt with 3 classes and 12 samples, no split files."""
    root = tmp_path / "folder"
    for i in range(12):
        write_pair(root / "images" / f"img{i:02d}.png", root / "masks" / f"img{i:02d}.png", labels=(0, 1, 2, 255), seed=i)
    (root / "classes.txt").write_text("background\ncat\ndog\n")
    return root


@pytest.fixture(scope="session")
def nuclei_root():
    from pixelwise.demo import sample_root

    return sample_root()
