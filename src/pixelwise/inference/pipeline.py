"""Predicting a folder at model speed. Two plans, by what the engine offers:

Side by side, for an engine with several streams (an exported graph on the CPU, see
`inference.engines`): `engine.streams` threads each take one image from file to files,

    read -> engine.logits -> argmax -> PNGs        (x streams, each on about one core)

On a small CPU this beats any overlap of stages around one model call spread over all cores: that
call's threads meet at a barrier after every layer, so a decode or a PNG write taking one core for
a moment stalls them all. Here nothing waits on anything else, so the whole loop, reading and writing
included, comes close to the model's own images/s (benchmarks/predict_folder.py; figures in
docs/deploy.md).

Overlapped, for one stream (eager PyTorch, a GPU, tiles, batches):

    decode pool  ->  batches of equal-size images  ->  engine.logits  ->  writer pool
    (threads)        (main thread)                     (main thread)      (threads: argmax, PNGs)

PIL and numpy release the GIL while they decode, take the argmax, blend and compress, so the helper
threads run beside the model's own intra-op threads; they are given a lower CPU priority so that the
model, the slowest stage, is kept busy first.

Either way every queue is bounded, so memory stays flat however many images there are, and every
step (read, predict, write) is the `Predictor`'s own: the output files are exactly those of
`Predictor.predict_to_files`, <stem>.png (class indices, palette) and <stem>_overlay.png.
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from tqdm import tqdm

from pixelwise.errors import PixelwiseError
from pixelwise.inference.predict import Predictor, write_probabilities
from pixelwise.inference.tiling import check_tiling, class_argmax


@dataclass
class PredictSummary:
    written: int = 0  # images whose outputs were written
    failed: list[tuple[Path, str]] = field(default_factory=list)  # (image, why it was skipped)
    seconds: float = 0.0
    images_per_s: float = 0.0


def runs_side_by_side(images: int, batch_size: int | None, tile: int | None) -> bool:
    """Whether a folder is predicted side by side, given an engine with several streams: whole images of
    a folder, one a stream. One image, tiles or batches run as one call over every core instead."""
    return images > 1 and tile is None and batch_size in (None, 1)


def predict_folder(predictor: Predictor, images: list[Path], out: Path, *, batch_size: int = 1, overlay: bool = True,
                   tile: int | None = None, overlap: int = 128, workers: int = 2,
                   log: Callable[[str], None] = print, probabilities: str | None = None) -> PredictSummary:
    """Predict `images` into `out`: <stem>.png and, with `overlay`, <stem>_overlay.png per image.

    An engine with several `streams` predicts images side by side, one a stream (`runs_side_by_side`).
    Otherwise images of equal size go through the engine `batch_size` at a time, or with `tile` tile
    by tile (`predict_tiled`), while `workers` threads decode and as many write. An image that cannot
    be read is logged, listed in `failed` and skipped; it never stops the run. With `probabilities`
    (uint8 or float16) each image's class probabilities go to <stem>_probs.npy as well (`write_probabilities`)."""
    if probabilities is not None and tile is not None:
        raise PixelwiseError("--save-probs keeps a probability for every class at every pixel, which a tiled "
                             "huge image would not fit in memory; predict it without one of --tile and --save-probs")
    if batch_size < 1 or workers < 1:
        raise PixelwiseError(f"--batch-size {batch_size} and workers {workers} must be at least 1")
    if tile is not None:
        check_tiling(tile, overlap)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = PredictSummary()
    start = time.perf_counter()
    with tqdm(total=len(images), unit="img", desc="predict", disable=None) as bar:
        def skip(path: Path, err: PixelwiseError) -> None:
            summary.failed.append((path, str(err)))
            with tqdm.external_write_mode():
                log(f"skipped: {err}")
            bar.update(1)

        streams = getattr(predictor.engine, "streams", 1)  # an engine of the user's own may not say
        if streams > 1 and runs_side_by_side(len(images), batch_size, tile):
            summary.written = _side_by_side(predictor, images, out, overlay, streams, skip, bar, probabilities)
        else:
            summary.written = _overlapped(predictor, images, out, batch_size, overlay, tile, overlap, workers,
                                          skip, bar, probabilities)
    summary.seconds = time.perf_counter() - start
    summary.images_per_s = summary.written / summary.seconds if summary.seconds > 0 else 0.0
    return summary


def _side_by_side(predictor: Predictor, images: list[Path], out: Path, overlay: bool, streams: int, skip,
                  bar, probabilities: str | None = None) -> int:
    """`streams` threads, each taking one image from file to files. -> images written"""
    def one(path: Path) -> tuple[Path, PixelwiseError | None]:
        try:
            rgb = predictor.as_rgb(path)
        except PixelwiseError as err:  # one bad file must not stop a folder of good ones
            return path, err
        _write(predictor, out, path, rgb, predictor.predict(rgb) if probabilities is None else predictor.logits(rgb),
               overlay, probabilities)
        return path, None

    written = 0

    def finished(outcome: tuple[Path, PixelwiseError | None]) -> None:
        nonlocal written
        path, err = outcome
        if err is None:
            written += 1
            bar.update(1)
        else:
            skip(path, err)

    with ThreadPoolExecutor(streams, "pixelwise-predict") as pool:
        jobs = _InFlight(pool, limit=2 * streams, finished=finished)  # 2 images a stream: memory stays flat
        for path in images:
            jobs.submit(one, path)
        jobs.drain()
    return written


def _overlapped(predictor: Predictor, images: list[Path], out: Path, batch_size: int, overlay: bool, tile: int | None,
                overlap: int, workers: int, skip, bar, probabilities: str | None = None) -> int:
    """Decode and write in helper threads around one model call at a time. -> images written"""
    # a huge image is decoded one ahead only: several would not fit in memory at once
    ahead = 1 if tile else 2 * batch_size
    with ThreadPoolExecutor(workers, "pixelwise-decode", _yield_cpu) as decoders, \
            ThreadPoolExecutor(workers, "pixelwise-write", _yield_cpu) as writer_pool:
        writes = _InFlight(writer_pool, limit=1 if tile else batch_size + 2 * workers)
        decoded = _decode(decoders, images, ahead, skip, predictor.as_rgb)
        for batch in (([item] for item in decoded) if tile else equal_size_batches(decoded, batch_size)):
            rgbs = [rgb for _, rgb in batch]
            if tile:
                results = [predictor.predict_tiled(rgb, tile, overlap) for rgb in rgbs]
            else:  # (N, C, H, W) logits; the writers take the argmax, off the model's thread
                results = predictor.batch_logits(rgbs)
            for (path, rgb), result in zip(batch, results):
                writes.submit(_write, predictor, out, path, rgb, result, overlay, probabilities)
            bar.update(len(batch))
        writes.drain()
    return writes.finished


def _write(predictor: Predictor, out: Path, path: Path, rgb: np.ndarray, result, overlay: bool,
           probabilities: str | None = None) -> None:
    """result: HxW uint8 labels, or (C, H, W) logits to take them (and the probabilities) from."""
    if probabilities is not None:
        write_probabilities(out, path, result, probabilities)
    predictor.write(out, path, rgb, result if isinstance(result, np.ndarray) else class_argmax(result), overlay)


def equal_size_batches(items: Iterable[tuple[Path, np.ndarray]], batch_size: int,
                       max_waiting: int | None = None) -> Iterator[list[tuple[Path, np.ndarray]]]:
    """Group (path, HxWx3 image) pairs into lists of up to `batch_size` images of one size.

    A full group goes at once. Images of a size that is still filling up wait, but never more than
    `max_waiting` (default 2 x batch_size) in all: then the oldest group goes part-full, so a
    folder of many sizes cannot pile up in memory. The rest go at the end, oldest first."""
    max_waiting = max_waiting or 2 * batch_size
    waiting: dict[tuple[int, ...], list] = {}  # insertion order = age
    count = 0
    for path, rgb in items:
        group = waiting.setdefault(rgb.shape, [])
        group.append((path, rgb))
        count += 1
        if len(group) == batch_size:
            count -= len(waiting.pop(rgb.shape))
            yield group
        elif count > max_waiting:
            oldest = waiting.pop(next(iter(waiting)))
            count -= len(oldest)
            yield oldest
    yield from waiting.values()


def _decode(pool: ThreadPoolExecutor, images: list[Path], ahead: int,
            skip: Callable[[Path, PixelwiseError], None], read: Callable[[Path], np.ndarray]
            ) -> Iterator[tuple[Path, np.ndarray]]:
    """(path, HxWx3 uint8) in input order, decoded up to `ahead` images in advance; unreadable
    images go to `skip` instead."""
    pending: deque[tuple[Path, Future]] = deque()
    queue = iter(images)
    for path in queue:
        pending.append((path, pool.submit(read, path)))
        if len(pending) >= ahead:
            break
    while pending:
        path, future = pending.popleft()
        next_path = next(queue, None)
        if next_path is not None:
            pending.append((next_path, pool.submit(read, next_path)))
        try:
            yield path, future.result()
        except PixelwiseError as err:  # one bad file must not stop a folder of good ones
            skip(path, err)


class _InFlight:
    """Jobs in flight on a pool, at most `limit`, finished oldest first: a slow stage (a slow disk)
    holds the submitter back instead of filling memory. Each result goes to `finished`; a job's
    exception (a failed write, a full disk) raises here and stops the run."""

    def __init__(self, pool: ThreadPoolExecutor, limit: int, finished: Callable[[object], None] = lambda result: None):
        self.pool, self.limit, self.on_finished = pool, limit, finished
        self.jobs: deque[Future] = deque()
        self.finished = 0

    def submit(self, fn, *args) -> None:
        while len(self.jobs) >= self.limit:
            self._wait_oldest()
        self.jobs.append(self.pool.submit(fn, *args))

    def drain(self) -> None:
        while self.jobs:
            self._wait_oldest()

    def _wait_oldest(self) -> None:
        self.on_finished(self.jobs.popleft().result())
        self.finished += 1


def _yield_cpu() -> None:
    """Lower this helper thread's CPU priority (Linux nice values are per thread), so decoding and
    PNG compression fill the gaps the model leaves instead of stalling its intra-op threads."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + 10))
    except (AttributeError, OSError):  # not on Linux/Unix, or not permitted: run at normal priority
        pass
