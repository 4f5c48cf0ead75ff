"""Tiled prediction of images too large for one forward pass: overlapping tiles, blended logits.

The image is cut into a grid of full-size tiles. Where tiles overlap, their logits are mixed
with weights that ramp smoothly from one tile to the next and sum to one at every pixel, so
no seam shows along tile borders. The outer quarter of each overlap gets weight zero: a
network's logits near a tile border saw zero padding instead of the neighbouring pixels.

Work goes band by band (one row of tiles), left to right within a band: float logits are kept
only for the pixels a later tile still adds to (the overlaps), and finished pixels become uint8
labels at once, so an 8000x6000 photo never holds full-image float logits (nor the image itself
as float; tiles are converted one batch at a time).
"""
from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import torch

from pixelwise.errors import PixelwiseError


def check_tiling(tile: int, overlap: int) -> None:
    if tile < 1:
        raise PixelwiseError(f"--tile {tile} must be a positive tile size in pixels, e.g. --tile 1024")
    if not 0 <= overlap <= tile // 2:
        raise PixelwiseError(f"--overlap {overlap} must be between 0 and half of --tile {tile} ({tile // 2}), "
                             "e.g. --overlap 128")


def ramp(overlap: int) -> np.ndarray:
    """(overlap,) float64 rising weights across an overlap: 0 over the first quarter, a Hann (sin^2)
    rise, 1 over the last quarter. `ramp + ramp[::-1] == 1`, so a rising and a falling ramp sum to one."""
    margin = overlap // 4
    width = overlap - 2 * margin
    k = np.arange(overlap, dtype=np.float64)
    t = np.clip((k + 0.5 - margin) / max(width, 1), 0.0, 1.0)
    return np.sin(0.5 * math.pi * t) ** 2


def axis_window(size: int, overlap: int, rise: bool = True, fall: bool = True) -> np.ndarray:
    """(size,) float64 weights of one tile along one axis: ramps over `overlap` on the sides that
    have a neighbour (`rise` before, `fall` after), flat 1 in between."""
    window = np.ones(size, dtype=np.float64)
    if overlap:
        up = ramp(overlap)
        if rise:
            window[:overlap] *= up
        if fall:
            window[size - overlap:] *= up[::-1]
    return window


def blend_window(tile_h: int, tile_w: int, overlap: int) -> np.ndarray:
    """(tile_h, tile_w) float32 weights of a tile inside a regular grid of step tile - overlap:
    over such a grid the weights of overlapping tiles sum to one at every pixel."""
    check_tiling(min(tile_h, tile_w), overlap)
    window = np.outer(axis_window(tile_h, overlap), axis_window(tile_w, overlap))
    return window.astype(np.float32)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of full-size tiles covering 0..length (no padding artefacts): as few tiles as a
    step of tile - overlap needs, spread evenly from 0 to length - tile, so neighbours overlap by at
    least `overlap` and all overlaps are equal to a pixel. length <= tile: one tile at 0."""
    if length <= tile:
        return [0]
    steps = -(-(length - tile) // (tile - overlap))  # ceil: every step <= tile - overlap
    return [round(k * (length - tile) / steps) for k in range(steps + 1)]


def axis_weights(length: int, tile: int, overlap: int) -> tuple[list[int], np.ndarray]:
    """-> (tile starts, (n, min(tile, length)) float64 weights) along one axis, summing to one at
    every position. Ramps only where a tile has a neighbour. Evenly spread tiles overlap by a little
    more than `overlap`; dividing by the accumulated weight keeps the sum one there too (on a regular
    grid of step tile - overlap it changes nothing). Neighbours overlap by at least `overlap`, so the
    accumulated weight is >= 1 everywhere and the division is well conditioned."""
    size = min(tile, length)
    starts = tile_starts(length, size, overlap)
    windows = np.stack([axis_window(size, overlap, rise=i > 0, fall=i < len(starts) - 1)
                        for i in range(len(starts))])
    total = np.zeros(length, dtype=np.float64)
    for start, window in zip(starts, windows):
        total[start:start + size] += window
    for i, start in enumerate(starts):
        windows[i] /= total[start:start + size]
    return starts, windows


def to_batch(tiles: list[np.ndarray]) -> torch.Tensor:
    """HxWx3 uint8 arrays of one size -> (N, 3, H, W) float in 0..1, laid out as Predictor.logits lays out one image."""
    return torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2).float().div_(255)


def class_argmax(logits: torch.Tensor, dim: int = 0) -> np.ndarray:
    """Index of the largest logit along `dim` (the first on ties, as torch.argmax) -> uint8 array.

    A running maximum over the classes: several times faster on CPU than torch's argmax over a
    non-innermost dimension, and no int64 intermediate the size of the image."""
    scores = np.moveaxis(logits.numpy(), dim, 0)
    best = scores[0].copy()
    labels = np.zeros(best.shape, dtype=np.uint8)
    better = np.empty(best.shape, dtype=bool)
    for c in range(1, len(scores)):
        np.greater(scores[c], best, out=better)
        np.maximum(best, scores[c], out=best)
        labels[better] = c
    return labels


def image_tiling(tile: int, overlap: int, scale: float) -> tuple[int, int]:
    """(tile, overlap) the network sees -> (tile, overlap) in image pixels, for an engine that resizes
    images by `scale` before the network: 1024 at scale 1.75 is 585."""
    return max(1, round(tile / scale)), round(overlap / scale)


@torch.no_grad()
def predict_tiled(engine, image: np.ndarray, tile: int = 1024, overlap: int = 128, batch: int = 1) -> np.ndarray:
    """Predict an HxWx3 uint8 image of any size tile by tile -> HxW uint8 class indices.

    engine: anything with `logits((N, 3, h, w) in 0..1) -> (N, C, h, w)` (see inference.engines);
    `batch` tiles go through it at once (each costs C x tile x tile floats of logits plus the
    model's activations). `tile` and `overlap` are what the network sees: an engine that resizes
    by its inference scale (`engine.scale`, 1.75 at the accurate profile) gets image tiles that
    much smaller, so memory is bounded by `tile` whatever the profile. An image no larger than a
    tile is one whole-image pass."""
    check_tiling(tile, overlap)
    tile, overlap = image_tiling(tile, overlap, float(getattr(engine, "scale", 1.0)))
    if batch < 1:
        raise PixelwiseError(f"tile batch {batch} must be at least 1")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise PixelwiseError(f"expected an HxWx3 uint8 image, got shape {image.shape} dtype {image.dtype}")
    height, width = image.shape[:2]
    ys, wy = axis_weights(height, tile, overlap)
    xs, wx = axis_weights(width, tile, overlap)
    if len(ys) == len(xs) == 1:
        return class_argmax(engine.logits(to_batch([image]))[0])
    blend = _Blender(height, width, ys, wy, xs, wx)
    th, tw = wy.shape[1], wx.shape[1]
    with getattr(engine, "repeating_shapes", nullcontext)():  # every tile has one shape: tell the engine
        for i, y0 in enumerate(ys):
            blend.start_band(i)
            for j0 in range(0, len(xs), batch):
                cols = range(j0, min(j0 + batch, len(xs)))
                logits = engine.logits(to_batch([image[y0:y0 + th, xs[j]:xs[j] + tw] for j in cols]))
                for n, j in enumerate(cols):
                    blend.add(j, logits[n])
                del logits  # free before the next batch's forward pass
    return blend.labels


class _Blender:
    """Blends tile logits, band by band and left to right, into HxW uint8 labels.

    Float logits are kept only where a later tile still adds to them: `side` (C, tile_h, columns),
    the columns of the current band that its next tile overlaps, and `carry` (C, rows, W), the rows
    of this band that the next band overlaps. Each tile's logits are blended in place; every other
    pixel becomes a label as soon as its last tile is in."""

    def __init__(self, height: int, width: int, ys: list[int], wy: np.ndarray, xs: list[int], wx: np.ndarray):
        self.labels = np.empty((height, width), dtype=np.uint8)
        self.ys, self.xs = ys, xs
        self.wy, self.wx = torch.from_numpy(wy.astype(np.float32)), torch.from_numpy(wx.astype(np.float32))
        self.side = self.carry = None
        self.i, self.keep, self.cols_in = -1, 0, 0

    def start_band(self, i: int) -> None:
        height, th = self.labels.shape[0], self.wy.shape[1]
        self.i, self.rows_in, self.cols_in = i, self.keep, 0  # the carry holds rows ys[i] .. ys[i] + rows_in
        self.y_next = self.ys[i + 1] if i + 1 < len(self.ys) else height  # rows above it are done after this band
        self.keep = self.ys[i] + th - self.y_next  # rows the next band still adds to

    def add(self, j: int, logits: torch.Tensor) -> None:
        """Blend tile (i, j)'s (C, tile_h, tile_w) logits (in place), then finish the columns no later
        tile of this band covers."""
        th, tw, width = self.wy.shape[1], self.wx.shape[1], self.labels.shape[1]
        if self.carry is None:
            # one carry serves every band: its columns are read (rows from the band above) and then
            # written (rows for the band below) strip by strip, left to right
            self.carry = torch.zeros(logits.shape[0], th - min(np.diff(self.ys), default=th), width)
            self.side = torch.zeros(logits.shape[0], th, tw - min(np.diff(self.xs), default=tw))
        logits.mul_(self.wy[self.i][:, None]).mul_(self.wx[j])
        logits[:, :, :self.cols_in] += self.side[:, :, :self.cols_in]
        x0 = self.xs[j]
        done = (self.xs[j + 1] if j + 1 < len(self.xs) else width) - x0
        self.finish(logits[:, :, :done], x0, x0 + done)
        self.cols_in = tw - done
        self.side[:, :, :self.cols_in] = logits[:, :, done:]

    def finish(self, strip: torch.Tensor, a: int, b: int) -> None:
        """strip: (C, tile_h, b - a) logits of columns a..b, complete as far as this band goes."""
        strip[:, :self.rows_in] += self.carry[:, :self.rows_in, a:b]
        y0, rows = self.ys[self.i], self.y_next - self.ys[self.i]
        self.labels[y0:self.y_next, a:b] = class_argmax(strip[:, :rows])
        self.carry[:, :self.keep, a:b] = strip[:, rows:]
