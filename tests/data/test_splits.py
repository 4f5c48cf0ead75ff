import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pixelwise.data.formats import load_spec
from pixelwise.data.splits import MIN_SPREAD, class_order, split_dataset, stratified_split
from pixelwise.errors import DataError
from pairs import write_pair

FRACTIONS = [
    {"train": 0.8, "val": 0.1, "test": 0.1},
    {"train": 0.7, "val": 0.15, "test": 0.15},
    {"test": 0.2, "val": 0.2, "train": 0.6},
    {"train": 0.5, "val": 0.5, "test": 0.0},
    {"train": 1.0, "val": 0.0, "test": 0.0},
]


@st.composite
def tables(draw, max_items=40, max_classes=6):
    """N x C presence tables whose classes range from rare (5%) to everywhere."""
    n = draw(st.integers(0, max_items))
    probs = draw(st.lists(st.sampled_from([0.03, 0.08, 0.2, 0.5, 0.9, 1.0]), min_size=1, max_size=max_classes))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng.random((n, len(probs))) < np.array(probs)


@st.composite
def groupings(draw, n):
    """A random partition of 0..n-1 into groups of 1-4 items (as lists, shuffled)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    items, groups = rng.permutation(n).tolist(), []
    while items:
        size = int(rng.integers(1, 5))
        groups.append(items[:size])
        items = items[size:]
    return groups


def _units(presence, groups):
    """The units the guarantee speaks of: groups plus lone items, with their per-class image counts."""
    grouped = {i for g in groups for i in g}
    units = [sorted(g) for g in groups] + [[i] for i in range(len(presence)) if i not in grouped]
    return units, np.array([presence[u].sum(axis=0) for u in units]).reshape(len(units), presence.shape[1])


def guaranteed_classes(presence, groups, splits):
    """Classes the module docstring promises in every split: >= MIN_SPREAD images, and at least
    `splits` units holding the class and no class visited before it."""
    units, unit_images = _units(presence, groups)
    earlier = np.zeros(presence.shape[1], dtype=bool)
    promised = []
    for k in class_order(unit_images):
        free = (unit_images[:, k] > 0) & ~(unit_images[:, earlier] > 0).any(axis=1)
        if presence[:, k].sum() >= MIN_SPREAD and free.sum() >= splits:
            promised.append(k)
        earlier[k] = True
    return promised


def _check_partition(result, n, fractions):
    assert list(result) == list(fractions)
    everything = sorted(i for items in result.values() for i in items)
    assert everything == list(range(n))  # every item exactly once
    for name, items in result.items():
        assert items == sorted(items)
        if fractions[name] == 0:
            assert items == []


# ---------------------------------------------------------------- stratified_split properties


@settings(max_examples=150, deadline=None)
@given(tables(), st.sampled_from(FRACTIONS), st.integers(0, 10**6))
def test_lone_items_stratified_and_partitioned(presence, fractions, seed):
    result = stratified_split(presence, fractions, None, seed)
    _check_partition(result, len(presence), fractions)
    positive = [s for s, f in fractions.items() if f > 0]
    for k in guaranteed_classes(presence, [], len(positive)):
        for s in positive:
            assert presence[result[s], k].any(), f"class {k} missing from {s}"


@settings(max_examples=150, deadline=None)
@given(st.data(), tables(), st.sampled_from(FRACTIONS), st.integers(0, 10**6))
def test_groups_stay_together_and_sizes_stay_close(data, presence, fractions, seed):
    groups = data.draw(groupings(len(presence)))
    result = stratified_split(presence, fractions, groups, seed)
    _check_partition(result, len(presence), fractions)
    split_of = {i: s for s, items in result.items() for i in items}
    for g in groups:
        assert len({split_of[i] for i in g}) == 1, f"group {g} was split"
    positive = [s for s, f in fractions.items() if f > 0]
    for k in guaranteed_classes(presence, groups, len(positive)):
        assert all(presence[result[s], k].any() for s in positive)
    # A split takes a group only while below its target, except once per spread class to cover
    # it: that bounds the drift by the largest group times (1 + spread classes), per other split.
    biggest = max((len(g) for g in groups), default=1)
    spread = int((presence.sum(axis=0) >= MIN_SPREAD).sum())
    bound = max(1, len(positive) - 1) * biggest * (1 + spread)
    for s in positive:
        assert abs(len(result[s]) - fractions[s] * len(presence)) <= bound


@settings(max_examples=60, deadline=None)
@given(st.data(), tables(), st.sampled_from(FRACTIONS), st.integers(0, 10**6))
def test_same_seed_same_split_whatever_the_input_order(data, presence, fractions, seed):
    groups = data.draw(groupings(len(presence)))
    first = stratified_split(presence, fractions, groups, seed)
    assert stratified_split(presence.copy(), fractions, groups, seed) == first
    # neither the order of the groups nor of the fraction dict may matter
    reordered = dict(reversed(list(fractions.items())))
    again = stratified_split(presence, reordered, [sorted(g) for g in reversed(groups)], seed)
    assert {s: again[s] for s in fractions} == first


# ---------------------------------------------------------------- stratified_split exact cases


def test_class_order_is_rarest_first_then_index():
    unit_images = np.array([[1, 0, 2, 0], [1, 1, 0, 0], [1, 1, 1, 0]])
    assert class_order(unit_images) == [1, 2, 0]  # class 3 is held by no unit


def test_classes_of_three_images_land_one_in_each_split():
    presence = np.zeros((40, 5), dtype=bool)
    presence[:, 0] = True  # background everywhere
    for k in range(1, 5):
        presence[3 * k: 3 * k + 3, k] = True  # four classes of three images each
    for seed in range(5):
        result = stratified_split(presence, {"train": 0.8, "val": 0.1, "test": 0.1}, None, seed)
        for k in range(1, 5):
            assert [int(presence[result[s], k].sum()) for s in ("train", "val", "test")] == [1, 1, 1]
        # val and test need 4 images each to hold every rare class; their targets are 4
        assert [len(result[s]) for s in ("train", "val", "test")] == [32, 4, 4]


def test_realistic_table_matches_fractions_per_class():
    rng = np.random.default_rng(0)
    freq = np.array([0.95, 0.6, 0.3, 0.1, 0.03, 0.012, 0.5])
    presence = rng.random((500, len(freq))) < freq
    fractions = {"train": 0.8, "val": 0.1, "test": 0.1}
    result = stratified_split(presence, fractions, None, seed=0)
    assert [len(result[s]) for s in fractions] == [400, 50, 50]
    for s, f in fractions.items():
        held = presence[result[s]].sum(axis=0)
        total = presence.sum(axis=0)
        # the commonest classes take what is left at the end, so they may drift by ~1% of their count
        assert (np.abs(held - f * total) <= 1.5 + 0.02 * total).all(), (s, held)


def test_a_group_holding_every_image_of_a_class_stays_whole():
    presence = np.zeros((20, 2), dtype=bool)
    presence[:, 0] = True
    presence[[2, 5, 9], 1] = True
    result = stratified_split(presence, {"train": 0.8, "val": 0.1, "test": 0.1}, [[9, 2], [5, 2]], seed=3)
    homes = [s for s, items in result.items() if {2, 5, 9} <= set(items)]
    assert len(homes) == 1  # overlapping groups merge; coverage of class 1 is impossible


def test_images_without_any_class_are_placed_by_size():
    presence = np.zeros((10, 3), dtype=bool)  # every mask all-ignore
    result = stratified_split(presence, {"train": 0.6, "val": 0.2, "test": 0.2}, None, seed=0)
    assert [len(result[s]) for s in ("train", "val", "test")] == [6, 2, 2]


def test_seed_changes_the_split():
    presence = np.random.default_rng(1).random((60, 3)) < 0.4
    fractions = {"train": 0.8, "val": 0.1, "test": 0.1}
    assert stratified_split(presence, fractions, None, 0) != stratified_split(presence, fractions, None, 1)


@pytest.mark.parametrize("fractions", [{"train": 0.8, "val": 0.1}, {"train": 1.2, "val": -0.2}, {}])
def test_fractions_must_sum_to_one(fractions):
    with pytest.raises(ValueError, match="sum to 1"):
        stratified_split(np.zeros((4, 2), bool), fractions)


def test_group_index_out_of_range():
    with pytest.raises(ValueError, match="index 7"):
        stratified_split(np.zeros((4, 2), bool), {"train": 1.0}, [[0, 7]])


# ---------------------------------------------------------------- split_dataset on disk


LABELS = {"background": 0, "cat": 1, "dog": 2, "bird": 3}


@pytest.fixture
def pets(tmp_path):
    """30 images: background+cat or background+dog, bird (3 images) rare, plus an exact copy of img00."""
    root = tmp_path / "pets"
    for i in range(30):
        labels = (0, 1 + i % 2, 3) if i in (4, 11, 20) else (0, 1 + i % 2)
        write_pair(root / "images" / f"img{i:02d}.png", root / "masks" / f"img{i:02d}.png", labels=labels, seed=i)
    shutil.copy(root / "images" / "img00.png", root / "images" / "zcopy.png")
    shutil.copy(root / "masks" / "img00.png", root / "masks" / "zcopy.png")
    (root / "classes.txt").write_text("\n".join(LABELS) + "\n")
    return root


def _lists(root):
    return {s: (root / "splits" / f"{s}.txt").read_text() for s in ("train", "val", "test")}


def test_split_dataset_writes_lists_that_load_spec_reads(pets):
    log = []
    stems = split_dataset(pets, val=0.2, test=0.2, seed=0, log=log.append)
    for s in ("train", "val", "test"):
        text = (pets / "splits" / f"{s}.txt").read_text()
        assert text == "".join(f"{stem}\n" for stem in stems[s])
        assert stems[s] == sorted(stems[s])
    everything = sorted(sum(stems.values(), []))
    assert everything == sorted([f"img{i:02d}" for i in range(30)] + ["zcopy"])
    assert [len(stems[s]) for s in ("train", "val", "test")] == [19, 6, 6]
    birds = {"img04", "img11", "img20"}
    assert all(len(birds & set(stems[s])) == 1 for s in stems)  # the rare class is in every split
    home = [s for s in stems if "img00" in stems[s]]
    assert "zcopy" in stems[home[0]]  # the duplicate stays with its original
    spec = load_spec(pets)
    assert {s: [img.stem for img, _ in pairs] for s, pairs in spec.splits.items()} == stems
    assert any("1 duplicate group (2 images)" in line for line in log)
    assert any(line.split()[:3] == ["val", "6", "images"] and "4/4 classes" in line for line in log)


def test_split_is_the_same_under_another_hash_seed(pets):
    code = ("import json, sys; from pixelwise.data.splits import split_dataset; "
            "print(json.dumps(split_dataset(sys.argv[1], seed=5, log=lambda m: None)))")
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code, str(pets)], env=env, capture_output=True, text=True, check=True)
    assert split_dataset(pets, seed=5, overwrite=True, log=lambda m: None) == json.loads(out.stdout.splitlines()[-1])


def test_existing_lists_are_refused_then_backed_up(pets):
    split_dataset(pets, seed=0, log=lambda m: None)
    first = _lists(pets)
    with pytest.raises(DataError, match="--overwrite"):
        split_dataset(pets, seed=1, log=lambda m: None)
    assert _lists(pets) == first  # refused: nothing touched
    split_dataset(pets, seed=1, overwrite=True, log=lambda m: None)
    second = _lists(pets)
    assert second != first
    split_dataset(pets, seed=2, overwrite=True, log=lambda m: None)
    backups = sorted((pets / ".pixelwise-backup" / "splits").iterdir())
    assert len(backups) == 2  # one folder per overwrite: no backup overwrites another
    assert {p.name for p in backups[0].iterdir()} == {"train.txt", "val.txt", "test.txt"}
    saved = [{s: (b / f"{s}.txt").read_text() for s in ("train", "val", "test")} for b in backups]
    assert saved == [first, second]
    assert not list((pets / "splits").glob(".*.tmp"))


def test_zero_test_fraction_removes_the_stale_test_list(pets):
    split_dataset(pets, seed=0, log=lambda m: None)
    stems = split_dataset(pets, val=0.2, test=0.0, overwrite=True, log=lambda m: None)
    assert stems["test"] == [] and not (pets / "splits" / "test.txt").exists()
    assert set(load_spec(pets).splits) == {"train", "val"}


def test_images_missing_from_old_lists_are_included(pets):
    (pets / "splits").mkdir()
    (pets / "splits" / "train.txt").write_text("img00\nimg01\n")
    log = []
    stems = split_dataset(pets, overwrite=True, log=log.append)
    assert sum(len(v) for v in stems.values()) == 31
    assert any("29 images in images/ were in no split list" in line for line in log)


def test_bad_label_names_the_mask(pets):
    Image.fromarray(np.full((20, 24), 7, dtype=np.uint8)).save(pets / "masks" / "img03.png")
    with pytest.raises(DataError, match=r"img03.png has label 7 but the dataset has 4 classes"):
        split_dataset(pets, log=lambda m: None)
    assert not (pets / "splits").exists()


def test_camvid_layout_is_refused(tmp_path):
    root = tmp_path / "camvid"
    write_pair(root / "train" / "a.png", root / "trainannot" / "a.png")
    with pytest.raises(DataError, match=r"camvid dataset.*pixelwise data import"):
        split_dataset(root, log=lambda m: None)


@pytest.mark.parametrize("val,test", [(1.5, 0.1), (0.6, 0.5), (-0.1, 0.1)])
def test_bad_fractions_are_refused(pets, val, test):
    with pytest.raises(DataError, match="--val|--test"):
        split_dataset(pets, val=val, test=test, log=lambda m: None)


def test_report_names_a_class_a_split_misses(tmp_path):
    """Three copies of the only bird image form one group, so two splits cannot hold a bird."""
    root = tmp_path / "ds"
    for i in range(12):
        write_pair(root / "images" / f"img{i:02d}.png", root / "masks" / f"img{i:02d}.png", labels=(0, 1), seed=i)
    write_pair(root / "images" / "bird.png", root / "masks" / "bird.png", labels=(0, 3), seed=99)
    for copy in ("bird2", "bird3"):
        shutil.copy(root / "images" / "bird.png", root / "images" / f"{copy}.png")
        shutil.copy(root / "masks" / "bird.png", root / "masks" / f"{copy}.png")
    (root / "classes.txt").write_text("background\ncat\ndog\nbird\n")
    log = []
    stems = split_dataset(root, val=0.2, test=0.2, log=log.append)
    homes = [s for s in stems if "bird" in stems[s]]
    assert len(homes) == 1 and {"bird2", "bird3"} <= set(stems[homes[0]])
    misses = [line for line in log if "missing: bird (3 images)" in line]
    assert sorted(line.split()[0] for line in misses) == sorted(set(stems) - set(homes))
    assert "  no image holds: dog" in log


def test_repair_pass_covers_what_the_greedy_pass_missed():
    # Found by search: with seed 672 the rarest-first greedy leaves class 4 (in 4 of 5 images) out of
    # one split; the repair pass swaps it in without uncovering anything and without changing sizes.
    presence = np.array([[1, 0, 0, 0, 1, 0], [0, 0, 0, 0, 1, 1], [0, 1, 0, 0, 1, 1], [0, 1, 0, 0, 0, 0],
                         [0, 0, 1, 0, 1, 0]], dtype=bool)
    result = stratified_split(presence, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=672)
    assert sorted(len(items) for items in result.values()) == [1, 1, 3]
    assert all(presence[items, 4].any() for items in result.values())
