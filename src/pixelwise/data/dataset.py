"""A map-style dataset over (image, mask) file pairs that checks every mask it reads."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset
from tqdm import tqdm

from pixelwise.data.io import open_image, read_image, read_mask
from pixelwise.data.transforms import to_tensors
from pixelwise.errors import DataError


def check_mask(mask: np.ndarray, image: np.ndarray, mask_path: Path, image_path: Path,
               num_classes: int, ignore_index: int) -> None:
    if mask.shape != image.shape[:2]:
        raise DataError(f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image {image_path} is "
                        f"{image.shape[1]}x{image.shape[0]} (width x height); masks must match their image")
    bad = np.unique(mask[(mask >= num_classes) & (mask != ignore_index)])
    if bad.size or (mask < 0).any():
        label = int(bad[0]) if bad.size else int(mask.min())
        raise DataError(f"mask {mask_path} has label {label} but the dataset has {num_classes} classes "
                        f"(0-{num_classes - 1}, {ignore_index} = ignore)")


def fits_in_memory(pairs, limit_bytes: float = 4e9) -> bool:
    """Estimate decoded size from the first image's header (RGB + uint8 mask = 4 bytes a pixel)."""
    try:
        w, h = open_image(pairs[0][0]).size
    except DataError:
        return True  # unreadable: preload will name the file
    return w * h * 4 * len(pairs) < limit_bytes


class SegmentationDataset(Dataset):
    """Decoded, checked samples. With `cache=True` decoded arrays stay in memory: on a CPU
    box decoding PNGs every epoch would steal the cores the model needs. `decoded`: arrays the data checker
    already decoded and validated, by path (`DatasetSpec.decoded`), read instead of their files."""

    def __init__(self, pairs, num_classes: int, ignore_index: int, transform=None, cache: bool = False,
                 seed: int = 0, decoded: dict[Path, np.ndarray] | None = None):
        self.pairs = list(pairs)
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.transform = transform
        # Augmentation is a function of (seed, epoch, sample): the same whatever process, worker or
        # resume loads the sample, which exact resume and multi-process training both rely on.
        self.seed, self.epoch = seed, 0
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None
        self.labelled = len(self.pairs)  # pairs from this index on were added by `extend`: pseudo-labelled
        self._cache_pseudo = True  # whether the cache keeps those too
        self.labelled_repeats = 1  # each epoch shows every labelled pair this many times
        self.strong_view = None  # (image, rng) -> image, for the pseudo-labelled pairs after the transform
        self._decoded = decoded or {}

    def __len__(self) -> int:
        """Samples an epoch: the labelled pairs `labelled_repeats` times each, then the pseudo-labelled ones."""
        return self.labelled * self.labelled_repeats + len(self.pairs) - self.labelled

    def pair_index(self, index: int) -> int:
        """An epoch's sample index -> the index of its pair."""
        shown = self.labelled * self.labelled_repeats
        return index % self.labelled if index < shown else self.labelled + index - shown

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """-> (HxWx3 uint8 image, HxW int mask), checked."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        image_path, mask_path = self.pairs[index]
        if image_path in self._decoded and mask_path in self._decoded:
            image, mask = self._decoded[image_path], self._decoded[mask_path]
        else:
            image, mask = read_image(image_path), read_mask(mask_path)
            check_mask(mask, image, mask_path, image_path, self.num_classes, self.ignore_index)
        if self._cache is not None and (index < self.labelled or self._cache_pseudo):
            # uint8 masks take an eighth of the memory of int64 ones
            # (no copy of a mask the checker already keeps as uint8: the spec still holds it)
            self._cache[index] = (image, mask.astype(np.uint8, copy=False) if mask.max() < 256 else mask)
        return image, mask

    def extend(self, pairs, cache: bool, labelled_share: float | None = None, strong_view=None) -> None:
        """Add pseudo-labelled pairs (pool images), kept decoded only if `cache` and the set already caches:
        a large pool is read from disk each epoch instead of filling memory. With `labelled_share`, each
        labelled pair is shown as many times an epoch as brings the labelled pairs nearest that share of it
        (at least once): a pool eight times the labelled set would otherwise drown the true masks in guessed
        ones. `strong_view(image, rng)` alters each pseudo-labelled image after the transform."""
        self._cache_pseudo = cache
        self.pairs.extend(pairs)
        if labelled_share is not None:
            pseudo = len(self.pairs) - self.labelled
            self.labelled_repeats = max(1, round(labelled_share / (1 - labelled_share) * pseudo / self.labelled))
        self.strong_view = strong_view

    def preload(self, desc: str = "checking data") -> "SegmentationDataset":
        """Read and check every pair now, so a bad mask fails before training starts, not in epoch 7."""
        for i in tqdm(range(len(self.pairs)), desc=desc, unit="img", leave=False, disable=len(self.pairs) < 50):
            self.load(i)
        return self

    def __getitem__(self, index: int):
        pair = self.pair_index(index)
        image, mask = to_tensors(*self.load(pair))
        rng = random.Random(f"{self.seed}:{self.epoch}:{index}")  # a repeated pair is augmented afresh each time
        if self.transform is not None:
            image, mask = self.transform(image, mask, rng)
        if self.strong_view is not None and pair >= self.labelled:
            image = self.strong_view(image, rng)
        return image, mask

    def class_pixel_counts(self) -> np.ndarray:
        """Labelled pixels per class (ignore excluded), read from the untransformed masks."""
        counts = np.zeros(self.num_classes, dtype=np.int64)
        for i in range(len(self.pairs)):
            mask = self.load(i)[1]
            counts += np.bincount(mask[mask < self.num_classes].ravel(), minlength=self.num_classes)[: self.num_classes]
        return counts
