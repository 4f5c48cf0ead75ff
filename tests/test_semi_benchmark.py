"""benchmarks/semi_supervised.py's data views: the pool's masks never reach a run."""
import sys
from pathlib import Path

from pairs import write_pair

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from semi_supervised import build_view, pick_labelled  # noqa: E402


def camvid_like(root: Path) -> Path:
    """SegNet-layout CamVid in miniature: three drives in train, a fourth frame set of one drive in val."""
    frames = {"train": [("0001TP", 8), ("0006R0", 12), ("0016E5", 20)], "val": [("0016E5", 6)]}
    for split, sequences in frames.items():
        for sequence, count in sequences:
            for i in range(count):
                name = f"{sequence}_{split}{i:03d}.png"
                write_pair(root / split / name, root / f"{split}annot" / name, size=(12, 8), labels=(0, 1), seed=i)
    (root / "classes.txt").write_text("a\nb\n")
    return root


def test_labelled_frames_come_from_every_drive_in_proportion():
    images = [Path(f"{s}_{i:03d}.png") for s, n in (("A", 8), ("B", 12), ("C", 20)) for i in range(n)]
    picked = pick_labelled(images, 0.25, seed=0)
    counts = {s: sum(p.name.startswith(s) for p in picked) for s in "ABC"}
    assert counts == {"A": 2, "B": 3, "C": 5}
    assert pick_labelled(images, 0.25, seed=0) == picked and pick_labelled(images, 0.25, seed=1) != picked


def test_the_pool_holds_images_alone_and_no_mask_of_a_pool_frame_is_anywhere_in_the_view(tmp_path):
    data = camvid_like(tmp_path / "camvid")
    view = build_view(str(data), tmp_path / "view", 0.25, seed=0, size=None, holdout=None)
    pool = sorted(p.name for p in (view / "pool").iterdir())
    labelled = sorted(p.name for p in (view / "train").iterdir())
    assert len(labelled) == 10 and len(pool) == 30 and not set(pool) & set(labelled)
    masks = {p.resolve() for p in view.rglob("*") if p.parent.name.endswith("annot")}
    assert not {(data / "trainannot" / name).resolve() for name in pool} & masks
    assert sorted(p.name for p in (view / "trainannot").iterdir()) == labelled
    assert len(list((view / "val").iterdir())) == 6


def test_a_held_out_drive_is_only_scored_and_never_in_train_val_or_pool(tmp_path):
    data = camvid_like(tmp_path / "camvid")
    view = build_view(str(data), tmp_path / "view", 0.25, seed=0, size=(6, 4), holdout="0006R0")
    test = [p.name for p in (view / "test").iterdir()]
    assert len(test) == 12 and all(name.startswith("0006R0") for name in test)
    others = [p.name for split in ("train", "val", "pool") for p in (view / split).iterdir()]
    assert len(others) == 34 and not any(name.startswith("0006R0") for name in others)
    assert not (view / "test").joinpath(test[0]).is_symlink()  # --size writes resized copies
