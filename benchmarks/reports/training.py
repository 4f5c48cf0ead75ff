"""docs/training.md: the augmentation check, the semi-supervised runs and the 45-minute CamVid run with `auto`."""
from __future__ import annotations

from reports import machine, results, rounded, signed, source, table

SEMI_CAMVID = ("semi_supervised_screen_240x180_5min", "semi_supervised_screen_240x180_20min")  # consistency
SELF_TRAINING_CAMVID = ("semi_supervised_self_training_screen_240x180_5min",
                        "semi_supervised_self_training_balanced_strong_screen_240x180_20min")
# Files of a method's later version, and what changed in it: the table names the version beside the method.
METHOD_VERSIONS = {"semi_supervised_self_training_balanced_strong_screen_240x180_20min":
                   "labelled half of each epoch, pool in another light",
                   "semi_supervised_self_training_balanced_strong_heldout_0006R0_240x180_10min":
                   "labelled half of each epoch, pool in another light",
                   "semi_supervised_self_training_cutmix_heldout_0006R0_240x180_10min":
                   "the same + CutMix between pool images; reverted",
                   "semi_supervised_self_training_rerun_heldout_0006R0_240x180_10min":
                   "labelled half of each epoch, pool in another light; rerun on the Zen 4"}
# Self-training scored on a drive it never saw (the quality issue's protocol), one row per file.
SELF_TRAINING_HELDOUT = ("semi_supervised_self_training_balanced_strong_heldout_0006R0_240x180_10min",
                         "semi_supervised_self_training_cutmix_heldout_0006R0_240x180_10min",
                         "semi_supervised_self_training_rerun_heldout_0006R0_240x180_10min")
SEMI_NUCLEI = "semi_supervised_nuclei_1.5min"


def _fixed(value: float, places: int) -> str:
    """`value` rounded half up as written in its file (0.6395 -> 0.640), with a typographic minus."""
    return rounded(value, places).replace("-", "−")


def _where(name: str) -> str:
    """Machine, date and commit of one results file, for prose that quotes it."""
    data = results(name)
    return f"{machine(data)}; {data['date']}; commit {data['commit']}"


def augment_asymmetry() -> str:
    """CamVid's vertical label asymmetry, the figure `--augment auto` decides on."""
    return _fixed(results("augment")["vertical_asymmetry"]["camvid"], 2)


def augment_nuclei() -> str:
    data = results("augment")
    seeds = {(run["augment"], run["seed"]): run["test_mean_iou"] for run in data["runs"]}

    def both(augment: str) -> str:
        return " and ".join(_fixed(seeds[augment, seed], 4) for seed in (0, 1))
    mean = data["test_mean_iou"]
    return (f"test mean IoU {_fixed(mean['top-down'], 4)} with top-down against {_fixed(mean['upright'], 4)} upright "
            f"(seeds 0 and 1: {both('top-down')} against {both('upright')})")


def augment_where() -> str:
    return _where("augment")


def _arms(name: str) -> dict:
    (run,) = results(name)["results"]  # the CamVid screens are one seed at one fraction
    return run


def semi_supervised_camvid() -> str:
    """Supervised against each semi-supervised method at equal wall time, a row per run and method."""
    names = SEMI_CAMVID + SELF_TRAINING_CAMVID
    labelled, pool = _arms(names[0])["labelled"], _arms(names[0])["pool"]
    rows = []
    for name in names:
        run = _arms(name)
        sup = run["arms"]["supervised"]
        for arm, scores in run["arms"].items():
            if arm == "supervised":
                continue
            gain = run.get(f"val_gain_points_{arm}", run.get("val_gain_points"))  # older files: one arm, "semi"
            method = "consistency" if arm == "semi" else arm
            if name in METHOD_VERSIONS:
                method += f" ({METHOD_VERSIONS[name]})"
            rows.append([f"{results(name)['minutes']:g} min", method,
                         _fixed(sup["val_mean_iou"], 3), _fixed(scores["val_mean_iou"], 3), _fixed(gain, 1),
                         f"{sup['epochs']} / {scores['epochs']}"])
    header = ["budget", "method", f"supervised ({labelled} labelled)", f"+ {pool} unlabelled", "gain",
              "epochs (sup. / semi)"]
    return table(header, rows) + "\n\n" + source(*names)


def semi_supervised_heldout() -> str:
    """Supervised against self-training on a held-out drive: held-out and val mean IoU, one row per run."""
    rows = []
    for name in SELF_TRAINING_HELDOUT:
        run = _arms(name)
        sup, semi = run["arms"]["supervised"], run["arms"]["self-training"]
        rows.append([run["holdout"], f"{results(name)['minutes']:g} min",
                     f"self-training ({METHOD_VERSIONS[name]})" if name in METHOD_VERSIONS else "self-training",
                     f"{run['labelled']} / {run['pool']}",
                     _fixed(sup["test_mean_iou"], 3), _fixed(semi["test_mean_iou"], 3),
                     signed(run["gain_points_self-training"]), signed(run["val_gain_points_self-training"]),
                     f"{sup['epochs']} / {semi['epochs']}"])
    header = ["held-out drive", "budget", "method", "labelled / pool", "supervised", "+ pool", "gain",
              "val gain", "epochs (sup. / semi)"]
    return table(header, rows) + "\n\n" + source(*SELF_TRAINING_HELDOUT)


def self_training_gain() -> str:
    """The newest self-training screen's val gain over its supervised arm, in points."""
    (run,) = results(SELF_TRAINING_CAMVID[-1])["results"]
    return signed(run["val_gain_points_self-training"])


def semi_supervised_nuclei() -> str:
    data = results(SEMI_NUCLEI)
    arms = [run["arms"] for run in data["results"]]

    def both(arm: str) -> str:
        return " and ".join(_fixed(run[arm]["test_mean_iou"], 4) for run in arms)
    return f"test mean IoU {both('supervised')} supervised, {both('semi')} with the pool"


def semi_supervised_nuclei_gain() -> str:
    """The pool's mean gain over the seeds, in points of test mean IoU."""
    (summary,) = results(SEMI_NUCLEI)["summary"].values()
    return _fixed(summary["mean_gain_points"], 2)


def semi_supervised_nuclei_where() -> str:
    return _where(SEMI_NUCLEI)


def semi_per_class() -> str:
    """What the pool did per class in the longest CamVid run: the gains above half a point, the three worst losses."""
    arms = _arms(SEMI_CAMVID[-1])["arms"]
    sup, semi = arms["supervised"]["val_per_class_iou"], arms["semi"]["val_per_class_iou"]
    gains = sorted(((semi[name] - sup[name]) * 100, name.replace("_symbol", "")) for name in sup)
    helped = [(gain, name) for gain, name in reversed(gains) if gain >= 0.5]
    cost = gains[:3]

    def listed(pairs, unit: str = "") -> str:
        parts = [f"{name} ({signed(round(gain, 4))}{unit if i == 0 else ''})" for i, (gain, name) in enumerate(pairs)]
        return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
    return f"helped {listed(helped, ' points')} and cost {listed(cost)}"


def semi_confident() -> str:
    """The pool's confident share at the end of each CamVid run."""
    shares = [_arms(name)["arms"]["semi"]["confident_share_last"] for name in SEMI_CAMVID]
    return " and ".join(f"{share:.0%}" for share in shares)


def _speeds() -> tuple[dict, dict]:
    arms = _arms(SEMI_CAMVID[-1])["arms"]
    return arms["supervised"], arms["semi"]


def semi_step_cost() -> str:
    """How much longer a semi-supervised step takes than a supervised one (labelled images/s)."""
    sup, semi = _speeds()
    return f"{sup['train_images_per_s'] / semi['train_images_per_s']:.1f}×"


def semi_step_share() -> str:
    """The labelled epochs the semi-supervised arm fits in the same wall time, as a share of the supervised arm's."""
    sup, semi = _speeds()
    return f"{semi['epochs'] / sup['epochs']:.0%}"


def camvid_auto() -> str:
    run = results("camvid_auto_45min")["pixelwise"]
    return (f"**{_fixed(run['val_mean_iou'], 3)}** val mean IoU (fp32 inference "
            f"{_fixed(run['val_mean_iou_fp32_inference'], 3)}) in {run['epochs']} epochs")


def camvid_auto_where() -> str:
    return _where("camvid_auto_45min")


TRANSFER = "transfer"


def transfer() -> str:
    """Every strategy in every setting: mean val mean IoU over the seeds (± half their range), the best in
    bold, and whether the advisor's pick is within the tolerance of the best."""
    data = results(TRANSFER)
    strategies = list(next(iter(data["settings"].values()))["strategies"])
    rows = []
    for setting, row in data["settings"].items():
        cells = []
        for strategy in strategies:
            scores = row["strategies"][strategy]
            cell = f"{rounded(scores['mean'], 3)} ± {rounded(scores['spread'] / 2, 3)}"
            cells.append(f"**{cell}**" if strategy == row["best"] else cell)
        verdict = {True: "yes", False: "**no**", None: "–"}[row["pick_within_spread_of_best"]]
        rows.append([setting, row["images"], rounded(row["domain_shift"], 2), row["quadrant"], *cells,
                     f"`{row['advisor_pick']}`", verdict])
    return table(["setting", "images", "shift", "quadrant", *[f"`{s}`" for s in strategies], "advisor's pick",
                  "right"], rows) + "\n\n" + source(TRANSFER)


def transfer_right() -> str:
    return results(TRANSFER)["advisor_right"]
