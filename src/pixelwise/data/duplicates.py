"""Exact and near-duplicate images: the same photo twice in a dataset leaks between splits.

Exact copies share a sha256 of their bytes. Near copies (re-encoded, resized, slightly
brightened) share most bits of a 64-bit perceptual hash (DCT hash, imagehash.phash).
Files are grouped transitively: if a~b and b~c, then {a, b, c} is one group.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import imagehash
import numpy as np
from PIL import Image

from pixelwise.data.io import read_image

# Rows of the XOR table per step: 1024 x 5000 uint64 is 40 MB, small enough for any laptop.
_CHUNK = 1024


def file_digest(path: Path) -> str:
    """sha256 hex digest of the file's bytes, read in 1 MiB blocks."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def perceptual_hash(image: np.ndarray) -> int:
    """64-bit DCT perceptual hash of an HxWx3 uint8 image, bits in row-major order (= int(str(phash), 16)).

    Featureless images (one flat colour) all hash to the same value, so they count as near duplicates.
    """
    bits = imagehash.phash(Image.fromarray(image)).hash.reshape(-1)
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per element of a uint64 array."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    return table[x.view(np.uint8)].reshape(*x.shape, 8).sum(axis=-1)


def near_pairs(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """Index pairs (i < j) whose hashes differ in at most `max_distance` bits. hashes: (N,) uint64 -> (P, 2) int64.

    Compares each chunk of rows only with the rows after it (upper triangle), vectorised.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    found = []
    for start in range(0, len(hashes), _CHUNK):
        rows = hashes[start:start + _CHUNK]
        dist = popcount(rows[:, None] ^ hashes[None, start:])
        i, j = np.nonzero(dist <= max_distance)
        keep = j > i  # the block's left square is symmetric and holds the diagonal
        found.append(np.stack([i[keep] + start, j[keep] + start], axis=1))
    return np.concatenate(found).astype(np.int64) if found else np.zeros((0, 2), dtype=np.int64)


class UnionFind:
    """Disjoint sets over 0..n-1; the smallest index of a set is its root."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]  # path halving keeps trees shallow
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # the smaller index becomes the root, so the result never depends on pair order
            self.parent[max(ra, rb)] = min(ra, rb)


def group_hashes(hashes, max_distance: int = 4) -> list[list[int]]:
    """Indices of `hashes` (64-bit perceptual hashes) grouped transitively by Hamming distance <= `max_distance`.
    -> groups of 2 or more, each in index order, ordered by their first index."""
    # Equal hashes collapse to one node, so 1,000 blank frames make no million pairs.
    unique, node_of = np.unique(np.asarray(hashes, dtype=np.uint64), return_inverse=True)
    sets = UnionFind(len(unique))
    for a, b in near_pairs(unique, max_distance).tolist():
        sets.union(a, b)
    members: dict[int, list[int]] = {}
    for i, node in enumerate(node_of.reshape(-1).tolist()):
        members.setdefault(sets.find(node), []).append(i)
    return sorted((g for g in members.values() if len(g) >= 2), key=lambda g: g[0])


def duplicate_groups(paths: list[Path], images: Callable[[Path], np.ndarray] | None = None,
                     max_distance: int = 4) -> list[list[Path]]:
    """Groups (size >= 2) of files that are byte-identical or within `max_distance` phash bits, merged transitively.

    `images`: path -> HxWx3 uint8, for callers that already decode (default: io.read_image).
    Each group lists its paths in input order; groups are ordered by their first path's position.
    """
    load = images or read_image
    paths = [Path(p) for p in paths]
    # Byte-identical files need one decode between them.
    first_of_digest: dict[str, int] = {}
    owner = [first_of_digest.setdefault(file_digest(p), i) for i, p in enumerate(paths)]
    file_hash = {i: perceptual_hash(load(paths[i])) for i in sorted(set(owner))}
    return [[paths[i] for i in group] for group in group_hashes([file_hash[o] for o in owner], max_distance)]
