"""docs/ground-truth.md: the annotation app's speed, what to label next (active learning), the data tools."""
from __future__ import annotations

from decimal import Decimal

from reports import results, rounded, signed, source, table

# The rules of active_learning_current.json, in the table's order, with what each one picks.
ARMS = [
    ("uncertainty", "`entropy`: the most uncertain images"),
    ("stratified", "entropy within each kind of scene, kinds in proportion to their size (benchmark only)"),
    ("disagreement", "disagreement of 3 models trained on the 20 images (BALD; benchmark only)"),
    ("diverse", "**`diverse`** (the default): the most uncertain image of each kind of scene"),
    ("diverse_4rounds", "`diverse` in 4 rounds of 10, retraining between (the app's loop)"),
    ("typical", "`typical`: the most typical image of each kind of scene (TypiClust)"),
]
RANDOM_DRAWS = ("random", "random2", "random3")
DOUBT_ONLY = ("uncertainty", "stratified", "disagreement")  # the rules that rank by the model's doubt alone


def points(iou: float, places: int = 1) -> str:
    """A mean IoU (0-1) in points (0-100), rounded half up as written by hand: 0.5945 -> 59.5."""
    return rounded(Decimal(str(iou)) * 100, places)


def signed_iou(gain: float) -> str:
    """A difference of mean IoU (0-1) in signed points; a second decimal where one would round it to zero."""
    value = Decimal(str(gain)) * 100
    return signed(value, 2 if Decimal(rounded(abs(value), 1)) == 0 else 1)


# --- the annotation app (annotate_speed.json) -------------------------------------------------------

def annotate_paint_median() -> str:
    return f"{results('annotate_speed')['stroke_fit_zoom']['handler']['median_ms']:.1f} ms"


def annotate_paint_p95() -> str:
    return f"{results('annotate_speed')['stroke_fit_zoom']['handler']['p95_ms']:.1f} ms"


def annotate_save() -> str:
    return f"{results('annotate_speed')['save_12mp']['median_ms']:.0f} ms"


# --- what to label next (active_learning*.json) ----------------------------------------------------

def active_learning() -> str:
    """Each rule's CamVid val mean IoU per seed, against the mean of three random draws."""
    data = results("active_learning_current")
    seeds = data["seeds"]
    draws = [[seed[name] for name in RANDOM_DRAWS] for seed in seeds]
    rows = [["random: mean of 3 draws (range)",
             *(f"{points(seed['random_mean'])} ({points(min(d))}–{points(max(d))})" for seed, d in zip(seeds, draws)),
             points(data["mean_random_draws"]), "–", "–"]]
    for arm, label in ARMS:
        rows.append([label, *(points(seed[arm]) for seed in seeds), points(data[f"mean_{arm}"]),
                     signed_iou(data[f"mean_gain_{arm}"]), data[f"wins_{arm}"]])
    header = ["40 added by", *(f"seed {seed['seed']}" for seed in seeds), "mean", "against random", "seeds won"]
    return table(header, rows) + "\n\n" + source("active_learning_current")


def random_swing() -> str:
    """How far apart one seed's random draws land: the smallest and largest range over the seeds."""
    ranges = [max(seed[d] for d in RANDOM_DRAWS) - min(seed[d] for d in RANDOM_DRAWS)
              for seed in results("active_learning_current")["seeds"]]
    return f"{points(min(ranges))} to {points(max(ranges))}"


def doubt_loss() -> str:
    """How much the rules that rank by doubt alone lose against random, in whole points."""
    data = results("active_learning_current")
    losses = [-data[f"mean_gain_{arm}"] * 100 for arm in DOUBT_ONLY]
    return f"{round(min(losses))} to {round(max(losses))}"


def stratified_loss() -> str:
    return points(-results("active_learning_current")["mean_gain_stratified"])


def typical_gain() -> str:
    return signed_iou(results("active_learning_current")["mean_gain_typical"])


def typical_best_seed() -> str:
    return signed_iou(max(seed["gain_typical"] for seed in results("active_learning_current")["seeds"]))


def diverse_over_uncertainty() -> str:
    data = results("active_learning_current")
    return points(data["mean_diverse"] - data["mean_uncertainty"])


def rounds_loss() -> str:
    """What picking `diverse` in 4 rounds, retraining between, did against random, and on how many seeds
    it won."""
    data = results("active_learning_current")
    return f"{signed_iou(data['mean_gain_diverse_4rounds'])} points, winning {data['wins_diverse_4rounds']} of " \
           f"{len(data['seeds'])} seeds"


def rounds_against_one_pick() -> str:
    data = results("active_learning_current")
    return points(data["mean_diverse"] - data["mean_diverse_4rounds"])


def first_draw_best_seeds() -> str:
    """The seeds on which random's first draw beat its other two: one draw alone is no fair yardstick."""
    best = [seed["seed"] for seed in results("active_learning_current")["seeds"]
            if seed["random"] == max(seed[d] for d in RANDOM_DRAWS)]
    if not best:
        return "on no seed"
    return f"on seed {best[0]}" if len(best) == 1 else \
        "on seeds " + ", ".join(map(str, best[:-1])) + f" and {best[-1]}"


def _earlier_shifts(arm: str) -> list[float]:
    """Per seed, how far `arm` moved between the earlier runs and active_learning_current.json."""
    earlier = {"random": results("active_learning")["seeds"],
               "diverse": results("active_learning_diverse_typical")["runs"]["diverse"]["seeds"],
               "typical": results("active_learning_diverse_typical")["runs"]["typical"]["seeds"]}[arm]
    now = results("active_learning_current")["seeds"]
    return [abs(new[arm] - old[arm]) for old, new in zip(earlier, now)]


def earlier_random_shift() -> str:
    return points(max(_earlier_shifts("random")))


def earlier_diverse_shift() -> str:
    return points(max(_earlier_shifts("diverse")))


def earlier_typical_shift() -> str:
    shifts = _earlier_shifts("typical")
    seed = results("active_learning_current")["seeds"][shifts.index(max(shifts))]["seed"]
    return f"{points(max(shifts))} on seed {seed}"


def heldout_diverse() -> str:
    return points(results("active_learning_heldout")["mean_diverse"])


def heldout_random() -> str:
    return points(results("active_learning_heldout")["mean_random"])


def heldout_typical() -> str:
    return points(results("active_learning_heldout_typical")["mean_typical"])


# --- the data tools (data_tools.json) ---------------------------------------------------------------

DATA_TASKS = [
    ("check_camvid", "`data check` on CamVid train+val (480×360 PNGs)"),
    ("split_camvid", "`data split` on CamVid train+val"),
    ("import_coco", "`data import --from coco`, synthetic 480×360 JPEGs with polygons, RLE and crowds"),
]


def data_tools() -> str:
    data = results("data_tools")
    rows = [[label, f"{data[key]['images']:,}", f"{data[key]['seconds']:.1f} s", f"{data[key]['images_per_s']:.0f}"]
            for key, label in DATA_TASKS]
    return table(["task", "images", "time", "images/s"], rows) + "\n\n" + source("data_tools")


def data_tools_target() -> str:
    return f"{results('data_tools')['target_images_per_s']} images/s"


def data_check_findings() -> str:
    """What `data check` reported on CamVid train+val: non-blocking findings, all near-duplicates there."""
    return str(results("data_tools")["check_camvid"]["problems"])
