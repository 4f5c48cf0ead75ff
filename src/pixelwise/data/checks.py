"""`pixelwise data check`: find what is wrong with a dataset before training does, and measure it.

The checker reads every layout pixelwise reads, decodes each image and mask once, and
reports every problem it finds instead of stopping at the first: unreadable files, images
without masks and masks without images, size mismatches, labels outside the classes, colour
masks, EXIF-rotated photos whose mask was drawn on the raw pixels, and duplicates (across
splits they leak training images into validation). `fix=True` repairs only what can be
repaired without guessing, and keeps a backup of every file it touches.
"""
from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from pixelwise.data.dataset import fits_in_memory
from pixelwise.data.duplicates import file_digest, group_hashes, perceptual_hash, popcount
from pixelwise.data.formats import (LISTERS, DatasetSpec, Listing, Sample, detect_format, hash_split, images_in,
                                    read_header, resolve_format)
from pixelwise.data.io import (IMAGE_SUFFIXES, exif_orientation, load_image, to_rgb_array, upright, write_atomic,
                               write_label_png)
from pixelwise.errors import DataError

# Problem kinds, one per thing a user does differently to fix it.
UNREADABLE = "unreadable"
MISSING_MASK = "missing_mask"
MISSING_IMAGE = "missing_image"
STRAY_MASK = "stray_mask"
SIZE_MISMATCH = "size_mismatch"
BAD_LABEL = "bad_label"
RGB_MASK = "rgb_mask"
EXIF_ORIENTATION = "exif_orientation"
DUPLICATE = "duplicate"
NEAR_DUPLICATE = "near_duplicate"
LEAKAGE = "leakage"
# The kinds that make training crash or learn from wrong labels; duplicates and stray masks do not.
BLOCKING_KINDS = frozenset({UNREADABLE, MISSING_MASK, MISSING_IMAGE, SIZE_MISMATCH, BAD_LABEL, RGB_MASK,
                            EXIF_ORIENTATION})

STATS_DIRNAME = ".pixelwise"  # default --out for stats.json and stats.png, inside the dataset root
BACKUP_DIRNAME = ".pixelwise-backup"  # originals of every file --fix changed or moved
NEAR_DISTANCE = 4  # phash bits: re-encodes and light edits differ by 0-4, different photos by ~32

# EXIF orientation -> the transpose that shows the photo upright (EXIF 2.3, tag 274).
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}
_SWAPS_SIDES = (5, 6, 7, 8)
_INDEX_MODES = ("P", "L", "I", "I;16", "I;16B", "I;16L")


@dataclass(frozen=True)
class Problem:
    """One problem with one file. `related`: the other file involved (the image of a mask, the original of a copy)."""
    path: Path
    kind: str
    message: str
    fix: str
    auto_fix: bool = False  # `--fix` repairs it
    related: Path | None = None

    def line(self) -> str:
        return f"{self.path}: {self.message} — {self.fix}"


@dataclass(frozen=True)
class Fixed:
    """A change `--fix` made; the original bytes are at `backup`."""
    path: Path
    action: str
    backup: Path

    def line(self) -> str:
        return f"{self.path}: {self.action} (original kept at {self.backup})"


@dataclass
class DatasetStats:
    """Label and size statistics over every decodable mask and image (each file once)."""
    class_names: tuple[str, ...]
    ignore_index: int
    class_pixels: np.ndarray  # (C,) int64, pixels of each class
    class_images: np.ndarray  # (C,) int64, masks holding at least one pixel of the class
    ignore_pixels: int = 0
    ignore_images: int = 0  # masks holding at least one ignore pixel
    invalid_pixels: int = 0  # labels that are neither a class nor ignore
    masks: int = 0
    image_sizes: dict[str, int] = field(default_factory=dict)  # "WxH" (as pixelwise sees it) -> images
    images_per_split: dict[str, int] = field(default_factory=dict)

    @property
    def total_pixels(self) -> int:
        return int(self.class_pixels.sum()) + self.ignore_pixels + self.invalid_pixels

    def share(self, pixels: int) -> float:
        """Fraction of all mask pixels; class shares + ignore share + invalid share = 1."""
        return pixels / self.total_pixels if self.total_pixels else 0.0

    def to_dict(self) -> dict:
        classes = [{"label": i, "name": name, "pixels": int(self.class_pixels[i]),
                    "pixel_share": self.share(int(self.class_pixels[i])), "images": int(self.class_images[i])}
                   for i, name in enumerate(self.class_names)]
        return {"masks": self.masks, "images_per_split": self.images_per_split, "image_sizes": self.image_sizes,
                "total_pixels": self.total_pixels, "classes": classes, "ignore_index": self.ignore_index,
                "ignore_pixels": self.ignore_pixels, "ignore_share": self.share(self.ignore_pixels),
                "ignore_images": self.ignore_images,
                "invalid_pixels": self.invalid_pixels, "invalid_share": self.share(self.invalid_pixels)}


@dataclass
class CheckReport:
    root: Path
    format: str
    class_names: tuple[str, ...]
    ignore_index: int
    palette: np.ndarray  # (256, 3) uint8, the colours an RGB mask must use to be convertible
    problems: list[Problem]
    stats: DatasetStats
    fixed: list[Fixed] = field(default_factory=list)  # what `fix=True` changed before this (re-)check
    decoded: dict[Path, np.ndarray] = field(default_factory=dict, repr=False)  # arrays check_samples was asked to keep

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        """One line a problem, `path: what — fix`, as the CLI prints them."""
        return [p.line() for p in self.problems]


# ---------------------------------------------------------------------------------------------------------------
# Listing: formats' one lister per layout; every gap it finds is a Problem here, where load_spec raises.

def _pairing_problems(listing: Listing) -> list[Problem]:
    problems = [Problem(list_file, MISSING_IMAGE, f"lists '{stem}' but {folder}/ has no such image",
                        f"add {folder}/{stem}.jpg (or .png), or delete the line")
                for list_file, stem, folder in listing.missing_images]
    for s in listing.samples:
        if s.mask is None:
            expected = listing.mask_dirs[s.split] / f"{s.image.stem}.png"
            problems.append(Problem(s.image, MISSING_MASK, "image has no mask",
                                    f"draw its mask as {expected}, or remove the image from the dataset"))
    for m in listing.stray_masks:
        problems.append(Problem(m, STRAY_MASK, f"mask has no image (no {m.stem}.* beside the other images)",
                                "restore the image, rename the mask to match it, or --fix moves the mask aside",
                                auto_fix=True))
    return problems


def list_samples(root: str | Path, format: str = "auto") -> tuple[DatasetSpec, list[Sample], list[Problem]]:
    """-> (header spec with no pairs, every sample the layout uses, pairing problems). Never raises for a missing
    mask or image: those are problems. Raises DataError only when there is no dataset to check."""
    root, fmt = resolve_format(root, format)
    header, listing = read_header(root, fmt), LISTERS[fmt](root)
    samples, problems = listing.samples, _pairing_problems(listing)
    if not samples and not problems:
        raise DataError(f"{root}: no image in this {fmt} dataset (looked for {', '.join(IMAGE_SUFFIXES)} files)")
    return header, samples, problems



def discover_samples(root: str | Path) -> tuple[DatasetSpec, list[Sample]]:
    """Every image of a dataset, labelled or not: what annotating and suggesting work on.
    -> (header: layout, classes, ignore value, palette; samples, `mask` None where there is none yet).

    Beyond the layouts pixelwise trains on, it accepts images/ with a classes.txt and no masks/ yet (the
    folder layout before its first mask), and a folder of images beside a classes.txt."""
    root = Path(root)
    try:
        fmt = detect_format(root)
    except DataError:
        fmt = "folder" if (root / "images").is_dir() else None
    if fmt is not None:
        header, samples, _ = list_samples(root, fmt)
        return header, samples
    if (root / "classes.txt").is_file() and images_in(root):
        return read_header(root, "folder"), [Sample(hash_split(p.stem), p, None) for p in images_in(root)]
    raise DataError(f"{root}: no images to work on. Expected a layout pixelwise reads (folder: images/ masks/ "
                    "classes.txt; CamVid: train/ trainannot/ ...; VOC: JPEGImages/ SegmentationClass/ ...), "
                    "images/ with classes.txt and no masks yet, or a folder of images with a classes.txt "
                    "(one class name a line, line 0 = label 0)")

# ---------------------------------------------------------------------------------------------------------------
# Decoding: each file once, in worker threads (PIL and zlib release the GIL while they decode).

@dataclass
class _ImageFacts:
    problems: list[Problem]
    raw_size: tuple[int, int] | None = None  # (W, H) of the stored pixels
    size: tuple[int, int] | None = None  # (W, H) after EXIF orientation, as pixelwise reads it
    orientation: int = 1
    phash: int | None = None
    digest: str | None = None
    pixels: np.ndarray | None = None  # HxWx3 uint8 as io.read_image gives it, when kept


@dataclass
class _MaskFacts:
    problems: list[Problem]
    size: tuple[int, int] | None = None
    values: np.ndarray | None = None  # label values present
    counts: np.ndarray | None = None  # pixels of each value
    labels: np.ndarray | None = None  # HxW as io.read_mask gives it (uint8 when it fits), when kept


def _open(path: Path) -> tuple[Image.Image | None, str]:
    """-> (fully decoded image, "") or (None, why not). A truncated file or a decompression bomb fails
    here, with io's protections and wording, not later."""
    try:
        return load_image(path), ""
    except DataError as err:
        return None, str(err).removeprefix(f"{path}: ")


def _unreadable(path: Path, why: str, what: str) -> Problem:
    return Problem(path, UNREADABLE, why,
                   f"re-export or re-download it, or remove it and its {'mask' if what == 'image' else 'image'}")


def _inspect_image(path: Path, keep: bool = False) -> _ImageFacts:
    img, why = _open(path)
    if img is None:
        return _ImageFacts([_unreadable(path, why, "image")])
    orientation = exif_orientation(img)
    rgb = to_rgb_array(upright(img))
    # The decoded pixels feed the perceptual hash here, so duplicates cost no second decode.
    return _ImageFacts([], raw_size=img.size, size=(rgb.shape[1], rgb.shape[0]), orientation=orientation,
                       phash=perceptual_hash(rgb), digest=file_digest(path), pixels=rgb if keep else None)


def label_counts(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HxW integer labels -> (values present, pixels of each), by bincount when the values are small."""
    flat = labels.reshape(-1)
    if flat.dtype in (np.uint8, np.uint16) or (flat.size and flat.min() >= 0 and flat.max() < 1 << 16):
        counts = np.bincount(flat)
        values = np.flatnonzero(counts)
        return values, counts[values]
    return np.unique(flat, return_counts=True)


def palette_lookup(class_names: tuple[str, ...], ignore_index: int, palette: np.ndarray) -> dict[int, int]:
    """0xRRGGBB -> label for every class colour and the ignore colour; a class wins a colour it shares with ignore."""
    labels = list(range(len(class_names))) + ([ignore_index] if ignore_index < len(palette) else [])
    lookup: dict[int, int] = {}
    for label in labels:
        r, g, b = (int(v) for v in palette[label])
        lookup.setdefault((r << 16) | (g << 8) | b, label)
    return lookup


def rgb_to_labels(rgb: np.ndarray, lookup: dict[int, int]) -> tuple[np.ndarray | None, list[tuple[int, int, int]]]:
    """HxWx3 uint8 colour mask -> (HxW int64 labels, []) if every colour is in `lookup`,
    else (None, the unknown colours)."""
    codes = (rgb[:, :, 0].astype(np.uint32) << 16) | (rgb[:, :, 1].astype(np.uint32) << 8) | rgb[:, :, 2]
    colours, inverse = np.unique(codes, return_inverse=True)
    unknown = [int(c) for c in colours if int(c) not in lookup]
    if unknown:
        return None, [(c >> 16, (c >> 8) & 255, c & 255) for c in unknown]
    table = np.array([lookup[int(c)] for c in colours], dtype=np.int64)
    return table[inverse.reshape(codes.shape)], []


def _mask_labels(path: Path, img: Image.Image, lookup: dict[int, int]) -> tuple[np.ndarray | None, list[Problem]]:
    """Decoded mask -> (HxW labels or None, problems), accepting exactly what io.read_mask accepts, and
    reading palette-coloured RGB masks too so their labels still count (they are reported either way)."""
    if img.mode in _INDEX_MODES:
        return np.asarray(img), []
    if img.mode not in ("RGB", "RGBA"):
        return None, [Problem(path, UNREADABLE, f"mask has image mode {img.mode!r}, which holds no class indices",
                              "save it as a greyscale or palette PNG whose pixel values are the labels")]
    rgb = np.asarray(img)[:, :, :3]
    if (rgb[:, :, 0] == rgb[:, :, 1]).all() and (rgb[:, :, 0] == rgb[:, :, 2]).all():
        return rgb[:, :, 0], []  # grey stored as RGB: the value is the label, as io.read_mask reads it
    labels, unknown = rgb_to_labels(rgb, lookup)
    if labels is not None:
        return labels, [Problem(path, RGB_MASK, "mask is a colour (RGB) image, but every colour in it is in the "
                                "dataset palette, so it converts exactly to class indices",
                                "--fix converts it to a class-index palette PNG", auto_fix=True)]
    shown = ", ".join(str(c) for c in unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
    return None, [Problem(path, RGB_MASK, f"mask is a colour (RGB) image and {len(unknown)} of its colours are not "
                          f"in the dataset palette ({shown}), so they cannot be read as classes",
                          "save it as a greyscale or palette PNG whose pixel values are the class indices")]


def _inspect_mask(path: Path, lookup: dict[int, int], keep: bool = False) -> _MaskFacts:
    img, why = _open(path)
    if img is None:
        return _MaskFacts([_unreadable(path, why, "mask")])
    img = upright(img)  # as io.read_mask does
    labels, problems = _mask_labels(path, img, lookup)
    if labels is None:
        return _MaskFacts(problems)
    values, counts = label_counts(labels)
    if keep and not problems:  # a cache's form: uint8 takes an eighth of int64's memory
        kept = labels.astype(np.uint8 if values.size and 0 <= values[0] and values[-1] < 256 else np.int64)
    return _MaskFacts(problems, size=img.size, values=values, counts=counts,
                      labels=kept if keep and not problems else None)


# ---------------------------------------------------------------------------------------------------------------
# Problems found from the decoded facts.

def _bad_label_problem(mask: Path, facts: _MaskFacts, num_classes: int, ignore_index: int) -> Problem | None:
    bad = (facts.values >= num_classes) | (facts.values < 0)
    bad &= facts.values != ignore_index
    if not bad.any():
        return None
    found = [f"{int(v)} ({int(c)} px)" for v, c in zip(facts.values[bad], facts.counts[bad])]
    shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
    return Problem(mask, BAD_LABEL, f"mask has label {shown} but the dataset has {num_classes} classes "
                   f"(0-{num_classes - 1}, {ignore_index} = ignore)",
                   f"relabel those pixels to a class or to {ignore_index} (ignore), or list the missing classes "
                   "in classes.txt")


def _size_problem(sample: Sample, image: _ImageFacts, mask: _MaskFacts) -> Problem | None:
    if image.size is None or mask.size is None or image.size == mask.size:
        return None
    (iw, ih), (mw, mh) = image.size, mask.size
    if image.orientation in _SWAPS_SIDES and mask.size == image.raw_size:
        return Problem(sample.image, EXIF_ORIENTATION,
                       f"photo has EXIF orientation {image.orientation}, so pixelwise reads it rotated to {iw}x{ih}, "
                       f"but its mask {sample.mask} is {mw}x{mh}: it was drawn on the un-rotated pixels",
                       "--fix rotates the mask the same way as the photo (lossless; the photo is not touched)",
                       auto_fix=True, related=sample.mask)
    return Problem(sample.mask, SIZE_MISMATCH, f"mask is {mw}x{mh} but its image {sample.image} is {iw}x{ih} "
                   "(width x height)", "re-export the mask at the image's size", related=sample.image)


def _copy_problem(path: Path, split: str, facts: _ImageFacts, first: Path, first_split: str,
                  first_facts: _ImageFacts) -> Problem:
    exact = facts.digest == first_facts.digest
    how = "byte-identical copy" if exact else \
        f"near duplicate (perceptual hash {int(popcount(np.uint64(facts.phash ^ first_facts.phash)))} of 64 bits apart)"
    if split != first_split:
        return Problem(path, LEAKAGE, f"{how} of {first}, which is in {first_split} while this is in {split}: "
                       "the model is scored on a photo it trained on, which inflates validation scores",
                       "keep the photo in one split only (delete or move one copy and its mask)", related=first)
    return Problem(path, DUPLICATE if exact else NEAR_DUPLICATE, f"{how} of {first} (both in {split})",
                   "delete one copy and its mask unless the repeat is intended; duplicates weigh a photo twice",
                   related=first)


def _listed_twice(samples: list[Sample]) -> tuple[dict[Path, str], list[Problem]]:
    """-> (first split of each image, a problem for each further listing of an image file, e.g. in train.txt
    and val.txt)."""
    split_of, problems = {}, []
    for s in samples:
        if s.image not in split_of:
            split_of[s.image] = s.split
        elif split_of[s.image] == s.split:
            problems.append(Problem(s.image, DUPLICATE, f"image is listed twice in {s.split}",
                                    "list it once"))
        else:
            problems.append(Problem(s.image, LEAKAGE, f"image is listed in {split_of[s.image]} and in {s.split}: "
                                    "the model is scored on a photo it trained on, which inflates validation scores",
                                    "list it in one split only"))
    return split_of, problems


def _duplicate_problems(samples: list[Sample], images: dict[Path, _ImageFacts]) -> list[Problem]:
    """Files listed twice, byte copies and near copies: within a split (duplicates) and across (leakage)."""
    split_of, problems = _listed_twice(samples)
    paths = [p for p in split_of if images[p].phash is not None]
    for group in group_hashes([images[p].phash for p in paths], NEAR_DISTANCE):
        first = paths[group[0]]
        for i in group[1:]:
            problems.append(_copy_problem(paths[i], split_of[paths[i]], images[paths[i]], first, split_of[first],
                                          images[first]))
    return problems


def _stats(header: DatasetSpec, samples: list[Sample], images: dict[Path, _ImageFacts],
           masks: dict[Path, _MaskFacts]) -> DatasetStats:
    n, ignore = header.num_classes, header.ignore_index
    stats = DatasetStats(header.class_names, ignore, np.zeros(n, np.int64), np.zeros(n, np.int64))
    for facts in masks.values():
        if facts.values is None:
            continue
        stats.masks += 1
        is_class = (facts.values >= 0) & (facts.values < n)
        stats.class_pixels[facts.values[is_class]] += facts.counts[is_class]
        stats.class_images[facts.values[is_class]] += 1
        stats.ignore_pixels += int(facts.counts[facts.values == ignore].sum())
        stats.ignore_images += int((facts.values == ignore).any())
        stats.invalid_pixels += int(facts.counts[~is_class & (facts.values != ignore)].sum())
    sizes = Counter(f"{f.size[0]}x{f.size[1]}" for f in images.values() if f.size is not None)
    stats.image_sizes = dict(sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])))
    stats.images_per_split = dict(Counter(s.split for s in samples))
    return stats


# ---------------------------------------------------------------------------------------------------------------
# The checker.

def _decode_all(samples: list[Sample], lookup: dict[int, int], workers: int | None, keep: frozenset[Path] = frozenset()
                ) -> tuple[dict[Path, _ImageFacts], dict[Path, _MaskFacts]]:
    """Decode every distinct image and mask once. -> facts by path, with the pixels of the paths in `keep`."""
    image_paths = list(dict.fromkeys(s.image for s in samples))
    mask_paths = list(dict.fromkeys(s.mask for s in samples if s.mask is not None))
    jobs = [partial(_inspect_image, p, p in keep) for p in image_paths]
    jobs += [partial(_inspect_mask, p, lookup, p in keep) for p in mask_paths]
    with ThreadPoolExecutor(workers or min(4, os.cpu_count() or 1)) as pool:
        results = list(tqdm(pool.map(lambda job: job(), jobs), total=len(jobs), desc="checking data", unit="file",
                            leave=False, disable=len(jobs) < 100))
    return dict(zip(image_paths, results[: len(image_paths)])), dict(zip(mask_paths, results[len(image_paths):]))


def check_samples(header: DatasetSpec, samples: list[Sample], pairing: list[Problem] = (),
                  workers: int | None = None, keep: frozenset[Path] = frozenset()) -> CheckReport:
    """Decode and check `samples` of the dataset described by `header`; `pairing`: problems already found.
    The decoded arrays of the files in `keep` that have no problem of their own are in `report.decoded`."""
    lookup = palette_lookup(header.class_names, header.ignore_index, header.palette)
    images, masks = _decode_all(samples, lookup, workers, keep)
    problems = list(pairing)
    for facts in [*images.values(), *masks.values()]:
        problems += facts.problems
    for s in dict.fromkeys(s for s in samples if s.mask is not None):
        mask = masks[s.mask]
        found = [_size_problem(s, images[s.image], mask)]
        if mask.values is not None:
            found.append(_bad_label_problem(s.mask, mask, header.num_classes, header.ignore_index))
        problems += [p for p in found if p is not None]
    problems += _duplicate_problems(samples, images)
    problems = list(dict.fromkeys(problems))  # an image listed twice is still one bad file
    decoded = {path: facts.pixels for path, facts in images.items() if facts.pixels is not None}
    decoded |= {path: facts.labels for path, facts in masks.items() if facts.labels is not None}
    return CheckReport(header.root, header.format, header.class_names, header.ignore_index, header.palette,
                       problems, _stats(header, samples, images, masks), decoded=decoded)


def check_spec(spec: DatasetSpec, workers: int | None = None) -> CheckReport:
    """Check the pairs of an already loaded DatasetSpec (what `train` and `advise` hold)."""
    samples = [Sample(split, image, mask) for split, pairs in spec.splits.items() for image, mask in pairs]
    return check_samples(spec, samples, workers=workers)


def check_dataset(root: str | Path, format: str = "auto", fix: bool = False,
                  log: Callable[[str], None] = print, workers: int | None = None) -> CheckReport:
    """Check every file of a dataset. With `fix`, apply the safe fixes, then check again and return what remains
    (the changes are in `report.fixed`)."""
    header, samples, pairing = list_samples(root, format)
    log(f"checking {len(samples)} images of the {header.format} dataset {header.root}")
    report = check_samples(header, samples, pairing, workers)
    if not fix or not any(p.auto_fix for p in report.problems):
        return report
    fixed = apply_fixes(report, log)
    header, samples, pairing = list_samples(root, format)
    after = check_samples(header, samples, pairing, workers)
    after.fixed = fixed
    return after


def problems_error(report: CheckReport, kinds: frozenset[str] | None = BLOCKING_KINDS,
                   limit: int = 10) -> DataError | None:
    """One DataError listing the report's problems of `kinds` (None: every kind), the first `limit` of them;
    None when there are none. The default kinds are those that break training; duplicates do not."""
    found = [p for p in report.problems if kinds is None or p.kind in kinds]
    if not found:
        return None
    if len(found) == 1:
        return DataError(found[0].line())
    lines = [p.line() for p in found[:limit]]
    if len(found) > limit:
        lines.append(f"... and {len(found) - limit} more; `pixelwise data check {report.root}` lists them all")
    return DataError(f"{report.root}: {len(found)} data problem{'s' if len(found) > 1 else ''}:\n  "
                     + "\n  ".join(lines))


def check_before_use(root: str | Path, format: str = "auto", log: Callable[[str], None] = print,
                     skip_bad: bool = False, keep_decoded: bool = False) -> tuple[DatasetSpec, list[Problem]]:
    """What `train` and `advise` run first: the whole checker, so one code path judges a dataset.

    Problems that break training stop here, naming every file, unless `skip_bad`: then each image whose
    image or mask has such a problem is left out, named in the log, and returned so that the caller can
    list it again at the end: nothing is dropped silently. Duplicates and leakage are logged and training
    goes on. -> (the spec of the usable pairs, the problems that made pairs skipped).

    With `keep_decoded`, the train and val arrays the checker decoded stay in `spec.decoded` when they fit in
    memory (`fits_in_memory`), so that training decodes no file twice."""
    header, samples, pairing = list_samples(root, format)
    used = [(s.image, s.mask) for s in samples if s.split in ("train", "val") and s.mask is not None]
    keep = frozenset(path for pair in used for path in pair) if keep_decoded and used and fits_in_memory(used) \
        else frozenset()
    report = check_samples(header, samples, pairing, keep=keep)
    if not skip_bad:
        raise_for_problems(report)
    blocking = [p for p in report.problems if p.kind in BLOCKING_KINDS]
    bad = {p.path for p in blocking} | {p.related for p in blocking if p.related is not None}
    spec = DatasetSpec(header.root, header.format, header.class_names, header.ignore_index, palette=header.palette)
    for sample in samples:
        if sample.mask is not None and sample.image not in bad and sample.mask not in bad:
            spec.splits.setdefault(sample.split, []).append((sample.image, sample.mask))
            spec.decoded |= {p: report.decoded[p] for p in (sample.image, sample.mask) if p in report.decoded}
    for problem in blocking:
        log(f"skipped: {problem.line()}")
    kinds = Counter(p.kind for p in report.problems if p.kind not in BLOCKING_KINDS)
    if kinds:
        found = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in sorted(kinds.items()))
        log(f"data check: {found} (`pixelwise data check {root}` lists them)")
    if not any(spec.splits.values()):
        raise DataError(f"{root}: no usable image in this {header.format} dataset"
                        + (f" ({len(blocking)} skipped for problems)" if blocking else ""))
    return spec, blocking


def raise_for_problems(report: CheckReport, kinds: frozenset[str] | None = BLOCKING_KINDS, limit: int = 10) -> None:
    """Raise `problems_error(report, kinds, limit)` if there is one."""
    error = problems_error(report, kinds, limit)
    if error is not None:
        raise error


# ---------------------------------------------------------------------------------------------------------------
# Safe fixes: nothing is guessed, and the original of every changed file is kept.

def backup_path(root: Path, path: Path, under: str = "") -> Path:
    """Where the original of `path` goes: ROOT/.pixelwise-backup/[under/]<path relative to ROOT>, with a
    numbered suffix (name.1.png, name.2.png, ...) rather than overwriting an earlier backup."""
    target = root / BACKUP_DIRNAME / under / path.relative_to(root)
    candidate, n = target, 1
    while candidate.exists():
        candidate, n = target.with_name(f"{target.stem}.{n}{target.suffix}"), n + 1
    return candidate


def _keep_original(root: Path, path: Path, under: str = "", move: bool = False) -> Path:
    backup = backup_path(root, path, under)
    backup.parent.mkdir(parents=True, exist_ok=True)
    if move:
        shutil.move(path, backup)
    else:
        shutil.copy2(path, backup)
    return backup


def _save_like(img: Image.Image, path: Path, format: str) -> None:
    """Save in `format` through a temporary file and a rename, so a crash never leaves half a mask."""
    write_atomic(path, lambda tmp: img.save(tmp, format=format))


def _fix_mask(report: CheckReport, mask: Path, convert: bool, orientation: int, log) -> Fixed | None:
    """Convert a palette-coloured RGB mask to indices and/or rotate it like its EXIF-rotated photo."""
    with Image.open(mask) as opened:
        opened.load()
        img, fmt = opened.copy(), opened.format or "PNG"
    done = []
    if convert:
        lookup = palette_lookup(report.class_names, report.ignore_index, report.palette)
        labels, _ = rgb_to_labels(np.asarray(img.convert("RGB")), lookup)
        img = Image.fromarray(labels.astype(np.uint8), mode="L")
        done.append("converted colours to class indices")
    if orientation in _UPRIGHT:
        img = img.transpose(_UPRIGHT[orientation])  # transpose keeps mode and palette
        done.append(f"rotated like its photo (EXIF orientation {orientation})")
    target = mask.with_suffix(".png") if convert else mask
    if target != mask and target.exists():
        log(f"{mask}: not fixed: converting it would overwrite {target}")
        return None
    backup = _keep_original(report.root, mask)
    if convert:
        write_label_png(target, np.asarray(img), report.palette)
        if target != mask:
            mask.unlink()  # its bytes are in the backup; the .png replaces it
    else:
        _save_like(img, mask, fmt)
    return Fixed(target, ", ".join(done), backup)


def apply_fixes(report: CheckReport, log: Callable[[str], None] = print) -> list[Fixed]:
    """Apply every `auto_fix` problem's fix: rotate masks of EXIF-rotated photos, convert palette-coloured RGB
    masks to index PNGs, move stray masks to .pixelwise-backup/stray/. Nothing else is touched."""
    convert, rotate, fixed = set(), {}, []
    for p in report.problems:
        if not p.auto_fix:
            continue
        if p.kind == RGB_MASK:
            convert.add(p.path)
        elif p.kind == EXIF_ORIENTATION:
            with Image.open(p.path) as photo:
                rotate[p.related] = exif_orientation(photo)
        elif p.kind == STRAY_MASK:
            backup = _keep_original(report.root, p.path, under="stray", move=True)
            fixed.append(Fixed(p.path, "moved aside: it has no image", backup))
    for mask in sorted(convert | set(rotate)):
        done = _fix_mask(report, mask, mask in convert, rotate.get(mask, 1), log)
        fixed += [done] if done else []
    for f in fixed:
        log(f"fixed {f.line()}")
    return fixed


# ---------------------------------------------------------------------------------------------------------------
# Statistics on disk.

def _write_json(path: Path, data: dict) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def stats_figure(report: CheckReport):
    """Bar charts of pixel share and images per class (plus ignore). -> matplotlib Figure, no global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    stats = report.stats
    names = [*stats.class_names, f"ignore ({stats.ignore_index})"]
    shares = [100 * stats.share(int(c)) for c in stats.class_pixels] + [100 * stats.share(stats.ignore_pixels)]
    counts = [int(c) for c in stats.class_images] + [stats.ignore_images]
    colours = [tuple(report.palette[i] / 255) for i in range(len(stats.class_names))] + [(0.6, 0.6, 0.6)]
    fig = Figure(figsize=(10, 1.5 + 0.3 * len(names)), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(names))
    hatches = [""] * len(stats.class_names) + ["//"]
    left.barh(y, shares, color=colours, edgecolor="black", linewidth=0.5, hatch=hatches)
    left.set(yticks=y, yticklabels=names, xlabel="share of all mask pixels (%)")
    left.invert_yaxis()  # label 0 on top, as in classes.txt
    right.barh(y, counts, color=colours, edgecolor="black", linewidth=0.5, hatch=hatches)
    right.set(xlabel=f"masks containing the class (of {stats.masks})")
    splits = ", ".join(f"{k} {v}" for k, v in stats.images_per_split.items())
    fig.suptitle(f"{report.root.name}: {report.format} dataset, images per split: {splits}")
    return fig


def write_stats(report: CheckReport, out_dir: str | Path) -> tuple[Path, Path]:
    """Write stats.json and stats.png into `out_dir` (the CLI's default: DATASET/.pixelwise/). -> (json, png)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out_dir / "stats.json", out_dir / "stats.png"
    problems = Counter(p.kind for p in report.problems)
    _write_json(json_path, {"root": str(report.root), "format": report.format, **report.stats.to_dict(),
                            "problems": dict(sorted(problems.items()))})
    write_atomic(png_path, lambda tmp: stats_figure(report).savefig(tmp, format="png", dpi=100))
    return json_path, png_path
