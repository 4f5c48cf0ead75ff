"""docs/reliability.md: kill -9, damaged checkpoints, hostile inputs and memory (resilience.json,
memory.json), and one process against two (resilience.json's distributed part)."""
from __future__ import annotations

from reports import results, source, table


# memory.py's windows: peaks of 5 epochs, since one epoch may land in a dip right after a collection
WINDOWS = ((2, 6), (16, 20), (36, 40))


def _peak(rss_mb: list[float], first: int, last: int) -> str:
    """The peak resident memory of epochs first..last (counted from 1)."""
    return f"{max(rss_mb[first - 1:last]):.0f} MB"


def _damaged(kind: dict, how: str) -> str:
    parts = [f"{kind['refused']} refused"]
    if kind["loaded_intact"]:
        parts.append(f"{kind['loaded_intact']} loaded bit-identical content ({how})")
    if kind["loaded_damaged"]:
        parts.append(f"**{kind['loaded_damaged']} loaded damaged content**")
    return ", ".join(parts)


def resilience() -> str:
    """What each attack did, and resident memory over a long training and a long prediction."""
    data, memory = results("resilience"), results("memory")
    kills, flipped, truncated = data["kills"], data["checkpoints"]["flipped"], data["checkpoints"]["truncated"]
    fuzz, training, predict = data["fuzz"], memory["training"], memory["predict"]
    rss, epochs = training["rss_mb_per_epoch"], training["epochs"]
    resumed = "bit-identical to" if kills["bit_exact"] else "**different from**"
    rows = [
        ["SIGKILL during training, then `--resume`", kills["kills_tried"],
         f"{kills['kills_survived']} survived; the resumed run ended {resumed} an uninterrupted one"],
        ["a checkpoint with one bit flipped", flipped["tried"], _damaged(flipped, "the flip hit the zip container's padding")],
        ["a truncated checkpoint", truncated["tried"], _damaged(truncated, "the cut spared the content")],
        ["hostile inputs: odd sizes and modes, 8 EXIF orientations, truncated files, decompression bombs, "
         "broken COCO and LabelMe JSON", f"{fuzz['cases']:,}",
         f"{fuzz['ok']} correct outputs, {fuzz['refused']} clear refusals naming the file, "
         + (f"**{fuzz['crashes']} crashed**" if fuzz["crashes"] else "no crash")],
        ["resident memory while training", f"{epochs} epochs",
         "peak of " + ", of ".join(f"epochs {first}-{last} {_peak(rss, first, last)}" for first, last in WINDOWS)],
        ["resident memory while predicting", f"{predict['images']:,} images",
         f"{predict['growth_percent']:+.2f}% from the first tenth to the last"],
    ]
    return table(["test", "cases", "outcome"], rows) + "\n\n" + source("resilience", "memory")


def memory_target() -> str:
    return f"{results('memory')['target_growth_percent']}%"


def _distributed(processes: int) -> dict:
    return results("resilience")["distributed"][f"{processes}_process"]


def ddp_two_iou() -> str:
    return f"{_distributed(2)['val_mean_iou']:.3f}"


def ddp_one_iou() -> str:
    return f"{_distributed(1)['val_mean_iou']:.3f}"


def ddp_two_speed() -> str:
    return f"{_distributed(2)['train_images_per_s']:.1f}"


def ddp_one_speed() -> str:
    return f"{_distributed(1)['train_images_per_s']:.1f} images/s"
