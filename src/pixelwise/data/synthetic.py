"""A synthetic dataset far from ImageNet: regions of filtered-noise textures, labelled by texture.

No photograph looks like this, which makes it the advisor's "different" control and a
transfer-learning benchmark setting that needs no download. Four classes, told apart only by
the frequency and orientation of their grey-level noise, laid out as random Voronoi regions.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

TEXTURE_CLASSES = ("coarse", "fine", "horizontal", "vertical")
# (centre frequency in cycles per pixel, orientation in degrees or None for isotropic)
# Neighbouring bands overlap and every region gets its own contrast, so that no single grey-level
# statistic gives the class away: telling them apart takes features that see a neighbourhood.
_BANDS = {"coarse": (0.07, None), "fine": (0.14, None), "horizontal": (0.10, 90.0), "vertical": (0.10, 0.0)}


def texture(kind: str, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise band-passed around the kind's frequency (and orientation), at a random
    contrast and brightness, in 0..1."""
    h, w = size
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    radius = np.hypot(fy, fx)
    centre, angle = _BANDS[kind]
    gain = np.exp(-((radius - centre) / (0.35 * centre)) ** 2)
    if angle is not None:  # keep frequencies pointing along the orientation
        theta = np.deg2rad(angle)
        along = np.abs(fx * np.cos(theta) + fy * np.sin(theta)) / np.maximum(radius, 1e-9)
        gain *= along ** 2
    field = np.fft.ifft2(np.fft.fft2(rng.standard_normal((h, w))) * gain).real
    field = (field - field.mean()) / (field.std() + 1e-9)
    return np.clip(rng.uniform(0.35, 0.65) + rng.uniform(0.06, 0.2) * field, 0, 1)


def texture_sample(size: tuple[int, int], rng: np.random.Generator, regions: int = 6):
    """-> (HxWx3 uint8 image, HxW uint8 mask) with `regions` Voronoi cells of random textures."""
    h, w = size
    seeds = rng.uniform([0, 0], [h, w], size=(regions, 2))
    yy, xx = np.mgrid[:h, :w]
    cell = np.argmin((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2, axis=-1)
    labels = rng.integers(0, len(TEXTURE_CLASSES), size=regions)
    labels[: len(TEXTURE_CLASSES)] = rng.permutation(len(TEXTURE_CLASSES))[: min(regions, len(TEXTURE_CLASSES))]
    mask = labels[cell].astype(np.uint8)
    image = np.zeros((h, w))
    for k, kind in enumerate(TEXTURE_CLASSES):
        if (mask == k).any():
            image[mask == k] = texture(kind, size, rng)[mask == k]
    grey = (255 * image).round().astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1), mask


def write_texture_dataset(root: str | Path, train: int, val: int, size: tuple[int, int] = (128, 128),
                          seed: int = 0) -> Path:
    """Write a folder-format dataset (images/, masks/, classes.txt, splits/train.txt and val.txt)."""
    root = Path(root)
    for sub in ("images", "masks", "splits"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        stems = [f"{split}_{i:04d}" for i in range(count)]
        for stem in stems:
            image, mask = texture_sample(size, rng)
            Image.fromarray(image).save(root / "images" / f"{stem}.png")
            Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
        (root / "splits" / f"{split}.txt").write_text("\n".join(stems) + "\n")
    (root / "classes.txt").write_text("\n".join(TEXTURE_CLASSES) + "\n")
    return root
