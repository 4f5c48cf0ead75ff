"""Images nobody labelled: listed, screened for leakage into val and test, and streamed.

A pool can hold tens of thousands of images, so nothing here keeps pixels: the pool is a list of paths
and 64-bit hashes, and each image is decoded when a batch asks for it. An image that cannot be read is
reported by index (the trainer lists it at the end) and never stops training.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from pixelwise.data.duplicates import file_digest, perceptual_hash, popcount
from pixelwise.data.formats import images_in
from pixelwise.data.io import read_image
from pixelwise.data.transforms import to_tensors
from pixelwise.errors import DataError

NEAR_BITS = 4  # the data checker's near-duplicate distance: 4 of 64 perceptual-hash bits


def list_unlabelled(folders) -> list[Path]:
    """The images in each folder (not recursive), in name order; a folder that is missing or holds no image
    is an error that names it."""
    found = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise DataError(f"--unlabelled {folder}: no such folder")
        images = images_in(folder)
        if not images:
            raise DataError(f"--unlabelled {folder}: no images in this folder")
        found += images
    return list(dict.fromkeys(found))  # a folder given twice counts once


@dataclass
class Pool:
    """The unlabelled images a run learns from, and those it left out, each with its reason."""
    paths: list[Path]
    leaked: list[tuple[Path, Path]] = field(default_factory=list)  # (pool image, the val/test image it copies)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)

    def summary(self) -> str:
        n = len(self.leaked)
        left = [f"{n} cop{'y' if n == 1 else 'ies'} of val/test images (leakage)"] if n else []
        left += [f"{len(self.unreadable)} unreadable"] if self.unreadable else []
        return f"{len(self.paths)} unlabelled images" + (f" (left out: {', '.join(left)})" if left else "")


def screen_pool(paths: list[Path], held_out: list[Path], decoded: dict[Path, np.ndarray] | None = None,
                progress: bool = True) -> Pool:
    """Leave out every pool image that is a byte copy or a near copy (perceptual hash within NEAR_BITS) of a
    val or test image, and every one that cannot be read. Labelled training images in the pool are not
    leakage: they only repeat what the model already learns. `decoded`: held-out arrays already in memory."""
    decoded = decoded or {}
    digests = {file_digest(p): p for p in held_out}
    references = list(held_out)
    hashes = np.array([perceptual_hash(decoded[p] if p in decoded else read_image(p)) for p in references],
                      dtype=np.uint64)
    pool = Pool([])
    for path in tqdm(paths, desc="screening unlabelled images", unit="img", leave=False,
                     disable=not progress or len(paths) < 50):
        try:
            digest = file_digest(path)
            if digest in digests:
                pool.leaked.append((path, digests[digest]))
                continue
            phash = np.uint64(perceptual_hash(read_image(path)))
        except (DataError, OSError) as err:
            pool.unreadable.append((path, str(err)))
            continue
        if len(hashes):
            distances = popcount(hashes ^ phash)
            nearest = int(distances.argmin())
            if distances[nearest] <= NEAR_BITS:
                pool.leaked.append((path, references[nearest]))
                continue
        pool.paths.append(path)
    return pool


class UnlabelledDataset(Dataset):
    """The pool, decoded on demand. An item is (image, pixels, index) after `transform`, the labelled set's
    joint transform: `pixels` (bool, H x W) marks the image's own pixels, False where the crop padded it.
    For a file that cannot be read now it is (None, None, index): `collate_unlabelled` still makes a batch,
    the trainer learns nothing from the missing image and names it (`paths[index]`). Augmentation is a
    function of (seed, epoch, index), like the labelled set's, so resumed and multi-process runs see the
    same views."""

    def __init__(self, paths: list[Path], transform: Callable | None = None, seed: int = 0, ignore_index: int = 255):
        self.paths = list(paths)
        self.transform, self.ignore_index = transform, ignore_index
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            image = read_image(self.paths[index])
        except (DataError, OSError):
            return None, None, index
        # the joint transforms pad masks with the ignore index: a blank mask shows which pixels are padding
        image, blank = to_tensors(image, np.zeros(image.shape[:2], dtype=np.uint8))
        if self.transform is not None:
            image, blank = self.transform(image, blank, random.Random(f"{self.seed}:{self.epoch}:{index}:unlabelled"))
        return image, blank != self.ignore_index, index


def collate_unlabelled(items) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[(image or None, pixels or None, index)] -> (images, pixels to learn from, indices). An image that
    could not be read becomes zeros the size of the others, with no pixel to learn from."""
    shape = next((image.shape for image, _, _ in items if image is not None), (3, 8, 8))
    images = torch.stack([image if image is not None else torch.zeros(shape) for image, _, _ in items])
    pixels = torch.stack([p if p is not None else torch.zeros(shape[1:], dtype=torch.bool) for _, p, _ in items])
    return images, pixels, torch.tensor([index for _, _, index in items])
