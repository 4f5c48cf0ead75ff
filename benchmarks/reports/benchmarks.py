"""docs/benchmarks.md: CamVid at 45 minutes, the held-out drives, speed, engines, end to end, training, huge images.

Numbers round half up from the files' own digits (0.4125 -> 0.413), so a mean of two runs reads as a
reader would round it; prose writes a minus as U+2212, tables as the hyphen they always had."""
from __future__ import annotations

from decimal import Decimal

from reports import results, rounded, signed, source, table


def _mean(values) -> Decimal:
    values = [Decimal(str(v)) for v in values]
    return sum(values) / len(values)


def _pct(share, places: int = 0) -> str:
    return rounded(Decimal(str(share)) * 100, places) + "%"


# ---------------------------------------------------------------------------------------------- CamVid, 45 minutes

CLASSES = {"pole": "pole", "sign": "sign_symbol", "fence": "fence", "pedestrian": "pedestrian",
           "bicyclist": "bicyclist"}


def camvid() -> str:
    data = results("camvid_auto_45min")
    run = data["pixelwise"]
    label = (f"pixelwise FCN-8s / EfficientNet-Lite0, `--strategy auto` (the default; resolves to "
             f"{run['strategy']})")
    row = [label, run["epochs"], rounded(run["val_mean_iou"], 3),
           *(rounded(run["per_class_iou"][key], 2) for key in CLASSES.values())]
    header = ["model", f"epochs in {data['minutes']:.0f} min", "CamVid val mean IoU", *CLASSES]
    return table(header, [row]) + "\n\n" + source("camvid_auto_45min")


def camvid_fp32() -> str:
    return rounded(results("camvid_auto_45min")["pixelwise"]["val_mean_iou_fp32_inference"], 3)


# The 35-minute runs behind the speed table: pixelwise's checkpoint and the smp peer's, same loop and recipe.
def quality_pixelwise() -> str:
    return rounded(_quality("pixelwise accurate"), 3)


def quality_peer() -> str:
    return rounded(results("camvid_peer_35min")["peer"]["val_mean_iou"], 3)


def quality_lead() -> str:
    lead = (Decimal(str(_quality("pixelwise accurate"))) -
            Decimal(str(results("camvid_peer_35min")["peer"]["val_mean_iou"]))) * 100
    return rounded(lead, 1) + " points"


def _quality(label: str) -> float:
    return next(point["mean_iou"] for point in results("speed")["quality"]["points"] if point["label"] == label)


# ---------------------------------------------------------------------------------------------- held-out drives

SCREEN, LEVERS, LEVERS2 = ("camvid_holdout_screen_240x180_5min", "camvid_holdout_levers_240x180_5min",
                           "camvid_holdout_levers2_240x180_5min")
DRIVES = ("0006R0", "0001TP")
# (file, config, label): the screening table's rows, in the page's order
HELDOUT_ROWS = [
    (SCREEN, "fcn8s", "FCN-8s / Lite0, today's default recipe (infer ×1.75, scale 1–2.25)"),
    (SCREEN, "context_same", "context_fpn / Lite0, the same recipe"),
    (SCREEN, "context_scale1", "context_fpn, infer ×1.0, scale 0.75–1.5 (the lever base)"),
    (LEVERS, "colour", "  + `--colour 0.2`"),
    (LEVERS, "ohem", "  + `--loss ohem`"),
    (LEVERS, "ema", "  + `--ema 0.995`"),
    (LEVERS, "noweights", "  + `--class-weighting none` (instead of sqrt-median)"),
    (LEVERS2, "ce_lovasz", "  + `--loss ce+lovasz`"),
    (LEVERS2, "resolution_schedule", "  + `--resolution-schedule 0.5`"),
    (LEVERS2, "lite2", "  + `--backbone efficientnet_lite2`"),
    (LEVERS2, "full_lr_ratio", "  + `--strategy full --lr-ratio 0.5` (the advisor picks last-k here)"),
]
# Runs that shared the CPU with about a minute of unit tests (the second-round file's note says which).
DISTURBED = {("lite2", "0006R0"), ("resolution_schedule", "0006R0")}
# Its img/s mixes half-resolution epochs into the full-resolution ones, so it is not comparable.
MIXED_SPEED = {"resolution_schedule"}
FLIP_RUN = "{drive}_seed0_model-context_fpn"  # the flip rescoring of the lever base's seed-0 checkpoints


def _config(name: str, key: str) -> dict:
    return results(name)["configs"][key]


def _runs(config: dict) -> dict:
    return {run["sequence"]: run for run in config["runs"]}


def _heldout_mean(config: dict) -> Decimal:
    return _mean(run["heldout_mean_iou"] for run in config["runs"])


def _base() -> Decimal:
    """The lever base's held-out mean (context_fpn at inference scale 1, seed 0): what each lever is set against."""
    return _heldout_mean(_config(SCREEN, "context_scale1"))


def heldout_screen() -> str:
    reference = Decimal(rounded(_heldout_mean(_config(SCREEN, "fcn8s")), 3))
    rows = [_heldout_row(key, _config(name, key), label, reference) for name, key, label in HELDOUT_ROWS]
    flips = results(LEVERS2)["flip_tta"]["runs"]
    flip = [next(run["flip"] for key, run in flips.items() if key.startswith(FLIP_RUN.format(drive=drive)))
            for drive in DRIVES]
    rows.append(["  + flip TTA at prediction (`--infer-flip`; same weights, scored again)",
                 *(rounded(value, 3) for value in flip), _mean_cell(_mean(flip), reference), "—", "—"])
    lite2 = _runs(_config(LEVERS2, "lite2"))
    schedule = [run["train_images_per_s"] for run in _config(LEVERS2, "resolution_schedule")["runs"]]
    notes = (f"¹ That run shared the CPU with about a minute of unit tests, so it trained fewer steps than it would "
             f"have (Lite2 there: {rounded(lite2['0006R0']['train_images_per_s'], 1)} img/s against "
             f"{rounded(lite2['0001TP']['train_images_per_s'], 1)} on the other drive, undisturbed). ² The file's "
             f"{_span(schedule, 0)} img/s mixes in the half-resolution epochs, which run faster; "
             f"the full-resolution epochs alone are not recorded.")
    header = ["recipe", "held out 0006R0", "held out 0001TP", "held-out mean", "val (in-distribution)",
              "train img/s"]
    return table(header, rows) + "\n\n" + notes + "\n\n" + source(SCREEN, LEVERS, LEVERS2)


def _heldout_row(key: str, config: dict, label: str, reference: Decimal) -> list:
    runs = _runs(config)
    cells = [rounded(runs[drive]["heldout_mean_iou"], 3) + (" ¹" if (key, drive) in DISTURBED else "")
             if drive in runs else "not run" for drive in DRIVES]
    cells.append(_mean_cell(_heldout_mean(config), reference) if len(runs) == len(DRIVES) else "—")
    cells.append(rounded(_mean(run["val_mean_iou"] for run in runs.values()), 3))
    steady = [run["train_images_per_s"] for drive, run in runs.items() if (key, drive) not in DISTURBED]
    cells.append("— ²" if key in MIXED_SPEED else rounded(_mean(steady), 1))
    return [label, *cells]


def _mean_cell(mean: Decimal, reference: Decimal) -> str:
    """**0.437** (+1.9): the mean as shown, and its difference in points from the default's mean as shown."""
    shown = Decimal(rounded(mean, 3))
    delta = rounded((shown - reference) * 100, 1)
    return f"**{shown}** ({delta if delta.startswith('-') else '+' + delta})"


def _seed1(key: str, seed0: Decimal) -> str:
    config = results(SCREEN)["seed1"][key]
    runs = _runs(config)
    mean = Decimal(rounded(_heldout_mean(config), 3))
    return (f"{rounded(runs['0006R0']['heldout_mean_iou'], 3)} and {rounded(runs['0001TP']['heldout_mean_iou'], 3)} "
            f"(mean {mean}, {signed((mean - Decimal(rounded(seed0, 3))) * 100)}")


def seed1_fcn8s() -> str:
    return _seed1("fcn8s", _heldout_mean(_config(SCREEN, "fcn8s"))) + " on seed 0)"


def seed1_context() -> str:
    return _seed1("context_scale1", _base()) + ")"


def both_seeds() -> str:
    data = results(SCREEN)
    means = [_mean(run["heldout_mean_iou"] for seed in ("configs", "seed1") for run in data[seed][key]["runs"])
             for key in ("fcn8s", "context_scale1")]
    return f"{rounded(means[0], 3)} and {rounded(means[1], 3)}"


def val_gap() -> str:
    """How far in-distribution val sits above the held-out mean, over the rows that have both."""
    gaps = [(_mean(run["val_mean_iou"] for run in config["runs"]) - _heldout_mean(config)) * 100
            for name, key, _ in HELDOUT_ROWS for config in [_config(name, key)] if len(config["runs"]) == len(DRIVES)]
    return f"{rounded(min(gaps), 0)}–{rounded(max(gaps), 0)} points"


def _lever(name: str, key: str) -> Decimal:
    return (_heldout_mean(_config(name, key)) - _base()) * 100


def lever_ohem() -> str:
    return signed(_lever(LEVERS, "ohem"))


def lever_ema() -> str:
    return signed(_lever(LEVERS, "ema"))


def lever_colour() -> str:
    return signed(_lever(LEVERS, "colour"))


def lever_lovasz() -> str:
    return signed(_lever(LEVERS2, "ce_lovasz"))


def lever_schedule() -> str:
    return signed(_lever(LEVERS2, "resolution_schedule"))


def lever_lite2() -> str:
    return signed(_lever(LEVERS2, "lite2"))


def lever_full() -> str:
    """Stopped after 0006R0: against the base's own 0006R0 run."""
    full = _runs(_config(LEVERS2, "full_lr_ratio"))["0006R0"]["heldout_mean_iou"]
    base = _runs(_config(SCREEN, "context_scale1"))["0006R0"]["heldout_mean_iou"]
    return signed((Decimal(str(full)) - Decimal(str(base))) * 100)


def lovasz_cost() -> str:
    base = _mean(run["train_images_per_s"] for run in _config(SCREEN, "context_scale1")["runs"])
    lovasz = _mean(run["train_images_per_s"] for run in _config(LEVERS2, "ce_lovasz")["runs"])
    return rounded(base / lovasz, 1) + "×"


def lovasz_epochs() -> str:
    lovasz = _runs(_config(LEVERS2, "ce_lovasz"))["0006R0"]["epochs"]
    base = _runs(_config(SCREEN, "context_scale1"))["0006R0"]["epochs"]
    return f"{lovasz} epochs to the base's {base}"


def flip_gain() -> str:
    flip = results(LEVERS2)["flip_tta"]
    gains = [(Decimal(str(run["flip"])) - Decimal(str(run["plain"]))) * 100 for run in flip["runs"].values()]
    return f"{signed(min(gains), 2)} to {signed(max(gains), 2)} points, {signed(flip['mean_gain_points'], 2)}"


def weights_fall() -> str:
    return rounded(-_lever(LEVERS, "noweights"), 1) + " points"


def _pole(key: str, name: str, measure: str) -> float:
    return _runs(_config(name, key))["0006R0"][f"heldout_per_class_{measure}"]["pole"]


def pole_precision() -> str:
    return (f"{rounded(_pole('context_scale1', SCREEN, 'precision'), 2)} weighted against "
            f"{rounded(_pole('noweights', LEVERS, 'precision'), 2)} unweighted")


def pole_recall() -> str:
    return f"{rounded(_pole('context_scale1', SCREEN, 'recall'), 2)} against {rounded(_pole('noweights', LEVERS, 'recall'), 2)}"


def pole_iou() -> str:
    return f"{rounded(_pole('noweights', LEVERS, 'iou'), 2)} to {rounded(_pole('context_scale1', SCREEN, 'iou'), 2)}"


# ---------------------------------------------------------------------------------------------- accurate_vs_peer

FCN = "pixelwise accurate fcn8s x1.75 (openvino)"
CONTEXT = "pixelwise accurate context_fpn x1 (openvino)"
FLIP = "pixelwise accurate context_fpn x1 + flip (openvino)"
PEER_BF16, PEER_ORT = "smp Unet mobilenet_v2 bf16-cl", "smp Unet mobilenet_v2 onnxruntime-fp32"


def _ms(name: str, key: str, places: int = 1) -> str:
    return rounded(results(name)["median_ms"][key], places) + " ms"


def _ratios(name: str, *keys: str) -> str:
    """Each latency over the best peer's (the file's own ratios are rounded to 3 digits first)."""
    median = {key: Decimal(str(ms)) for key, ms in results(name)["median_ms"].items()}
    peer = median[results(name)["best_peer"]]
    ratios = [rounded(median[key] / peer, 2) for key in keys]
    return ", ".join(ratios[:-1]) + " and " + ratios[-1]


def context_fcn_ms() -> str:
    return _ms("accurate_vs_peer_context", FCN)


def context_ms() -> str:
    return _ms("accurate_vs_peer_context", CONTEXT)


def context_peer_bf16_ms() -> str:
    return _ms("accurate_vs_peer_context", PEER_BF16, 0)


def context_peer_ms() -> str:
    return _ms("accurate_vs_peer_context", PEER_ORT)


def context_ratios() -> str:
    return _ratios("accurate_vs_peer_context", FCN, CONTEXT)


def flip_context_ms() -> str:
    return _ms("accurate_vs_peer_flip", CONTEXT)


def flip_ms() -> str:
    return _ms("accurate_vs_peer_flip", FLIP)


def flip_fcn_ms() -> str:
    return _ms("accurate_vs_peer_flip", FCN)


def flip_peer_ms() -> str:
    return _ms("accurate_vs_peer_flip", PEER_ORT)


def flip_ratios() -> str:
    return _ratios("accurate_vs_peer_flip", CONTEXT, FLIP, FCN)


def flip_fcn_ms_whole() -> str:
    return _ms("accurate_vs_peer_flip", FCN, 0)


# ---------------------------------------------------------------------------------------------- speed

def _cell(label: str, setting: str, size: str = "360x480", batch: int = 1) -> dict:
    return next(row for row in results("speed")["rows"]
                if (row["label"], row["setting"], row["size"], row["batch"]) == (label, setting, size, batch))


def _engine(profile: str, engine: str, precision: str) -> dict:
    return next(row for row in results("engines")["rows"]
                if (row["profile"], row["engine"], row["precision"]) == (profile, engine, precision))


def _span(values, places: int, unit: str = "") -> str:
    low, high = rounded(min(values), places), rounded(max(values), places)
    return (low if low == high else f"{low}–{high}") + unit


def speed_table() -> str:
    """Each profile as `pixelwise predict` runs it, and the peers at their best setting; latency spans the
    speed run's cell and the interleaved run where both timed it."""
    interleaved = results("accurate_vs_peer")["median_ms"]
    peer = results("camvid_peer_35min")["peer"]
    accurate_ms = [_cell("pixelwise accurate", "openvino-fp32")["median_ms"],
                   interleaved["pixelwise accurate (openvino)"]]
    peer_ms = [_cell("smp Unet mobilenet_v2", "bf16-cl")["median_ms"], interleaved[PEER_BF16]]
    fast, torch = _cell("pixelwise fast", "openvino-bf16"), _cell("pixelwise accurate", "fp16-cl")
    lraspp = _cell("torchvision lraspp_mobilenet_v3_large", "onnxruntime-fp32")
    per_s = [1000 / ms for ms in accurate_ms], [1000 / ms for ms in peer_ms]
    rows = [
        ["`--profile accurate` (default; scale 1.75)", "OpenVINO, fp32", f"**{rounded(_quality('pixelwise accurate'), 3)}**",
         _span(accurate_ms, 0, " ms"), _span(per_s[0], 0)],
        ["`--profile fast` (scale 1)", "OpenVINO, bf16", rounded(_quality("pixelwise fast"), 3),
         f"**{rounded(fast['median_ms'], 1)} ms**", f"**{rounded(fast['images_per_s'], 0)}**"],
        ["`--profile accurate --engine torch` (no ONNX engine installed)", "PyTorch, fp16 + channels_last",
         rounded(_engine("accurate", "torch", "fp16")["mean_iou"], 3), f"{rounded(torch['median_ms'], 1)} ms",
         rounded(torch["images_per_s"], 1)],
        [f"peer: smp Unet/MobileNetV2, same recipe and {results('camvid_peer_35min')['minutes']:.0f} min",
         "PyTorch, bf16 + channels_last",
         f"{rounded(peer['val_mean_iou'], 3)} ({rounded(peer['val_mean_iou_at_scale_1'], 3)} at scale 1)",
         _span(peer_ms, 0, " ms"), _span(per_s[1], 0)],
        ["peer: torchvision LR-ASPP/MobileNetV3 (fastest peer)", "ONNX Runtime fp32", "not trained",
         f"{rounded(lraspp['median_ms'], 1)} ms", rounded(lraspp["images_per_s"], 0)],
    ]
    header = ["", "engine (`auto` here)", "CamVid val mean IoU", "latency", "images/s"]
    return table(header, rows) + "\n\n" + source("speed", "accurate_vs_peer", "engines", "camvid_peer_35min")


def _target(key: str) -> dict:
    return results("speed")["targets"][key]


def fast_vs_lraspp() -> str:
    return rounded(_target("fast_vs_lraspp")["ratio"], 2) + "×"


def lraspp_ms() -> str:
    return rounded(_target("fast_vs_lraspp")["torchvision lraspp_mobilenet_v3_large"]["median_ms"], 1) + " ms"


def fast_lead() -> str:
    lead = (Decimal(str(_quality("pixelwise fast"))) -
            Decimal(str(results("camvid_peer_35min")["peer"]["val_mean_iou"]))) * 100
    return rounded(lead, 1) + " points"


def fast_vs_peer_iou() -> str:
    return f"{rounded(_quality('pixelwise fast'), 3)} against {quality_peer()}"


def accurate_vs_peer_ratio() -> str:
    return rounded(results("accurate_vs_peer")["ratio_to_best_peer"], 2) + "×"


def accurate_vs_peer_ms() -> str:
    median = results("accurate_vs_peer")["median_ms"]
    return f"{rounded(median['pixelwise accurate (openvino)'], 1)} against {rounded(median[PEER_BF16], 1)} ms"


def accurate_vs_peer_cells_ratio() -> str:
    return rounded(_target("accurate_vs_smp_unet_mobilenet_v2")["ratio"], 2) + "×"


def accurate_vs_peer_cells_ms() -> str:
    target = _target("accurate_vs_smp_unet_mobilenet_v2")
    return (f"{rounded(target['pixelwise accurate']['median_ms'], 1)} against "
            f"{rounded(target['smp Unet mobilenet_v2']['median_ms'], 1)} ms")


def accurate_bf16_ms() -> str:
    return rounded(_cell("pixelwise accurate", "openvino-bf16")["median_ms"], 1) + " ms"


def accurate_bf16_vs_peer() -> str:
    bf16 = Decimal(str(_cell("pixelwise accurate", "openvino-bf16")["median_ms"]))
    return rounded(bf16 / Decimal(str(_cell("smp Unet mobilenet_v2", "bf16-cl")["median_ms"])), 2) + "×"


def accurate_bf16_flips() -> str:
    return _pct(1 - Decimal(str(_engine("accurate", "openvino", "bf16")["equal_pixels"])), 1)


# ---------------------------------------------------------------------------------------------- engines and precision

def _speedup(profile: str) -> dict:
    return _target("onnx_fp32_speedup_over_torch_fp32")[profile]


def openvino_speedup_accurate() -> str:
    return rounded(_speedup("accurate")["speedup"], 1) + "×"


def openvino_ms_accurate() -> str:
    speedup = _speedup("accurate")
    return f"{rounded(speedup['engine_ms'], 0)} against {rounded(speedup['torch_fp32_ms'], 0)} ms"


def openvino_speedup_fast() -> str:
    return rounded(_speedup("fast")["speedup"], 1) + "×"


def openvino_ms_fast() -> str:
    speedup = _speedup("fast")
    return f"{rounded(speedup['engine_ms'], 1)} against {rounded(speedup['torch_fp32_ms'], 1)} ms"


def onnxruntime_speedups() -> str:
    ratios = [Decimal(str(_cell(f"pixelwise {p}", "fp32")["median_ms"])) /
              Decimal(str(_cell(f"pixelwise {p}", "onnxruntime-fp32")["median_ms"])) for p in ("accurate", "fast")]
    return f"{rounded(ratios[0], 1)}× and {rounded(ratios[1], 1)}×"


def _defaults(profile: str) -> list[dict]:
    return [row for row in results("engines")["rows"] if row["profile"] == profile and row.get("default")]


def accurate_agreement() -> str:
    return _pct(min(row["equal_pixels"] for row in _defaults("accurate")), 3)


def exported_fp32_agreement() -> str:
    return _pct(min(_engine("accurate", engine, "fp32")["equal_pixels"] for engine in ("onnxruntime", "openvino")), 3)


def torch_fp16_agreement() -> str:
    return _pct(_engine("accurate", "torch", "fp16")["equal_pixels"], 3)


def torch_fp16_delta() -> str:
    return signed(_engine("accurate", "torch", "fp16")["delta_points"], 2) + " points"


def torch_fp16_speed() -> str:
    fp16, fp32 = _engine("accurate", "torch", "fp16"), _engine("accurate", "torch", "fp32")
    return f"{rounded(fp16['images_per_s'], 2)} against {rounded(fp32['images_per_s'], 2)} images/s"


def openvino_fp32_agreement() -> str:
    return _pct(_engine("accurate", "openvino", "fp32")["equal_pixels"], 3)


def _bf16_rows() -> list[dict]:
    return [row for row in results("engines")["rows"] if row["precision"] == "bf16"]


def bf16_flips() -> str:
    return _pct(1 - _mean(row["equal_pixels"] for row in _bf16_rows()), 1)


def bf16_agreement() -> str:
    return _span([Decimal(str(row["equal_pixels"])) * 100 for row in _bf16_rows()], 2, "%")


def bf16_delta() -> str:
    deltas = [row["delta_points"] for row in _bf16_rows()]
    return f"{signed(min(deltas), 2)} to {signed(max(deltas), 2)} points"


def one_part_fp32_agreement() -> str:
    shares = results("precision")["equal_pixels_bf16_with_one_part_fp32"].values()
    return f"{_pct(min(shares), 2)} and {_pct(max(shares), 2)}"


def fast_bf16_speedup() -> str:
    """bf16 against fp32 at `fast`, in the engines run: OpenVINO's, then PyTorch's."""
    ratios = [Decimal(str(_engine("fast", engine, "bf16")["images_per_s"])) /
              Decimal(str(_engine("fast", engine, "fp32")["images_per_s"])) for engine in ("openvino", "torch")]
    return f"{rounded(ratios[0], 1)}× (OpenVINO) to {rounded(ratios[1], 1)}× (PyTorch)"


def fast_bf16_delta() -> str:
    return rounded(max(abs(row["delta_points"]) for row in _bf16_rows() if row["profile"] == "fast"), 2) + " points"


def _int8(profile: str) -> list[dict]:
    return [row for row in results("engines")["rows"] if row["profile"] == profile and row["precision"] == "int8"]


def int8_agreement() -> str:
    return _pct(min(row["equal_pixels"] for profile in ("accurate", "fast") for row in _int8(profile)), 1)


def int8_cost_accurate() -> str:
    return _span([-row["delta_points"] for row in _int8("accurate")], 2)


def int8_cost_fast() -> str:
    return _span([-row["delta_points"] for row in _int8("fast")], 2)


# ---------------------------------------------------------------------------------------------- memory-bound

def _roofline(name: str) -> dict:
    return results("speed")["roofline"]["models"][name]


def bf16_intensity() -> str:
    """FLOPs per byte of the default model's bf16 rows at 360x480, batch 1 (eager and OpenVINO)."""
    rows = [row for row in results("speed")["rows"] if row["label"] in ("pixelwise accurate", "pixelwise fast")
            and "bf16" in row["setting"] and (row["size"], row["batch"]) == ("360x480", 1)]
    return _span([row["intensity_flop_per_byte"] for row in rows], 0)


def fast_peak_share() -> str:
    return _pct(_roofline("pixelwise fast (bf16-cl)")["peak_share"])


def fast_roofline_share() -> str:
    return _pct(_roofline("pixelwise fast (bf16-cl)")["roofline_share"])


def bf16_peak() -> str:
    peak = results("speed")["peak"]
    return _span([peak["matmul_bf16_gflops"] / 1000, peak["conv_bf16_gflops"] / 1000], 1, " TFLOP/s")


def bandwidth() -> str:
    return rounded(results("speed")["bandwidth_gbs"], 1) + " GB/s"


def _by_batch() -> list[dict]:
    return results("speed")["scaling"]["by_batch"]["pixelwise fast"]


def cheapest_batch() -> str:
    return str(min(_by_batch(), key=lambda row: row["ms_per_image"])["batch"])


def cheapest_batch_gain() -> str:
    rows = _by_batch()
    one = next(row for row in rows if row["batch"] == 1)["ms_per_image"]
    best = min(row["ms_per_image"] for row in rows)
    return rounded(Decimal(str(one)) / Decimal(str(best)), 2) + "×"


def _per_megapixel(size: str) -> Decimal:
    return Decimal(str(next(row["ms_per_megapixel"] for row in results("speed")["scaling"]["by_size"]["pixelwise fast"]
                            if row["size"] == size)))


def knee() -> str:
    return _pct(_per_megapixel("1536x1536") / _per_megapixel("1024x1024") - 1)


def small_input_cost() -> str:
    return _pct(_per_megapixel("256x256") / _per_megapixel("512x512") - 1)


# ---------------------------------------------------------------------------------------------- end to end

def _folder(key: str):
    return results("predict_folder")[key]


def folder_fast() -> str:
    return rounded(_folder("pixelwise_fast_no_overlay_images_per_s"), 1) + " images/s"


def folder_fast_vs_loop() -> str:
    return rounded(_folder("targets")["fast_no_overlay_vs_smp_loop"], 1) + "×"


def folder_loop() -> str:
    return rounded(_folder("smp_loop_images_per_s"), 1) + " images/s"


def folder_model() -> str:
    return rounded(_folder("pure_model_latency_images_per_s"), 1) + " images/s"


def folder_model_streams() -> str:
    return rounded(_folder("pure_model_streams_images_per_s"), 1)


def folder_share() -> str:
    return _pct(_folder("targets")["fast_no_overlay_share_of_pure_model"], 1)


def folder_command() -> str:
    return rounded(_folder("pixelwise_fast_no_overlay_command_images_per_s"), 1) + " images/s"


def fast_iou() -> str:
    return rounded(_quality("pixelwise fast"), 3)


def folder_overlay() -> str:
    return rounded(_folder("pixelwise_fast_images_per_s"), 1) + " images/s"


def folder_overlay_vs_loop() -> str:
    return rounded(_folder("targets")["fast_vs_smp_loop"], 1) + "×"


def overlay_cost() -> str:
    """CPU time an overlay adds to an image: every core's time per image, with overlays against without."""
    cores = Decimal(_folder("threads"))
    with_, without = (Decimal(str(_folder(key))) for key in ("pixelwise_fast_images_per_s",
                                                             "pixelwise_fast_no_overlay_images_per_s"))
    return rounded(cores * 1000 * (1 / with_ - 1 / without), 0) + " ms"


def folder_accurate() -> str:
    return rounded(_folder("pixelwise_accurate_images_per_s"), 1) + " images/s"


def folder_accurate_vs_loop() -> str:
    return rounded(_folder("targets")["accurate_vs_smp_loop"], 2) + "×"


# ---------------------------------------------------------------------------------------------- training

def train_pixelwise() -> str:
    return rounded(results("train_speed")["pixelwise_images_per_s"], 2) + " images/s"


def train_loop() -> str:
    return rounded(results("train_speed")["plain_loop_images_per_s"], 2)


def train_loop_runs() -> str:
    runs = results("train_speed")["plain_loop_runs_images_per_s"]
    return " and ".join(rounded(value, 2) for value in runs)


def train_ratio() -> str:
    return rounded(results("train_speed")["targets"]["pixelwise_vs_plain_loop"], 2) + "×"


def train_data_wait() -> str:
    return _pct(results("train_speed")["pixelwise_data_wait_share"], 1)


def _precision(key: str, places: int, unit: str) -> str:
    return rounded(results("precision")[key], places) + unit


def depthwise_bf16_ms() -> str:
    return _precision("depthwise_5x5_fwd_bwd_ms_bf16", 0, " ms")


def depthwise_fp32_ms() -> str:
    return _precision("depthwise_5x5_fwd_bwd_ms_fp32", 0, " ms")


def step_mixed_s() -> str:
    return _precision("train_step_s_bf16_depthwise_fp32", 2, " s")


def step_bf16_s() -> str:
    return _precision("train_step_s_bf16", 2, " s")


def step_fp32_s() -> str:
    return _precision("train_step_s_fp32", 2, " s")


def upsample_bf16_ms() -> str:
    return _precision("score_upsample_8x_fwd_ms_bf16", 1, " ms")


def upsample_fp32_ms() -> str:
    return _precision("score_upsample_8x_fwd_ms_fp32", 1, " ms")


# ---------------------------------------------------------------------------------------------- huge images

def _huge(engine: str, profile: str) -> dict:
    return next(run for run in results("huge_image")["runs"] if (run["engine"], run["profile"]) == (engine, profile))


def _gb(mb) -> str:
    return rounded(Decimal(str(mb)) / 1000, 2) + " GB"


def huge_tiles() -> str:
    run = _huge("openvino", "accurate")
    return f"{run['image_tile']}² of the image, {run['tiles']} tiles"


def huge_accurate_s() -> str:
    return rounded(_huge("openvino", "accurate")["seconds"], 0) + " s"


def huge_accurate_rss() -> str:
    return _gb(_huge("openvino", "accurate")["max_rss_mb"])


def huge_torch_s() -> str:
    return rounded(_huge("torch", "accurate")["seconds"], 0) + " s"


def huge_torch_rss() -> str:
    return _gb(_huge("torch", "accurate")["max_rss_mb"])


def huge_fast_s() -> str:
    return rounded(_huge("openvino", "fast")["seconds"], 1) + " s"


def huge_fast_rss() -> str:
    return _gb(_huge("openvino", "fast")["max_rss_mb"])


def huge_before_tiles() -> str:
    return _span([run["rss_before_predict_mb"] / 1000 for run in results("huge_image")["runs"]], 1, " GB")


def _cli(run: str) -> dict:
    return results("huge_image_cli")[run]


def huge_cli_first() -> str:
    return f"{_gb(_cli('first')['peak_rss_mb'])} in {rounded(_cli('first')['seconds'], 1)} s"


def huge_cli_warm() -> str:
    return f"{_gb(_cli('warm')['peak_rss_mb'])} in {rounded(_cli('warm')['seconds'], 1)} s"


def huge_cli_target() -> str:
    """Where both runs stand against the target, in words that follow the figures."""
    data = results("huge_image_cli")
    worst = max(data["first"]["peak_rss_mb"], data["warm"]["peak_rss_mb"])
    side = "under" if worst < data["target_peak_rss_mb"] else "over"
    return f"{side} the benchmark's target of {_gb(data['target_peak_rss_mb'])}"


VAL_EVERY = {1: "camvid_holdout_val_every1_240x180_5min", 0: "camvid_holdout_val_every0_240x180_5min"}


def heldout_val_every() -> str:
    """FCN-8s's default recipe validating every epoch against keeping validation to about a tenth of the
    budget, the two runs back to back in one session."""
    rows = []
    for every, name in VAL_EVERY.items():
        data = results(name)
        runs = {run["sequence"]: run for run in data["runs"]}
        label = "every epoch (`val_every 1`, the default)" if every else "about a tenth of the budget (`val_every 0`)"
        rows.append([label, *(rounded(runs[d]["heldout_mean_iou"], 3) for d in DRIVES),
                     f"**{rounded(data['heldout_mean_iou'], 3)}**", rounded(data["val_mean_iou"], 3),
                     " / ".join(str(runs[d]["epochs"]) for d in DRIVES)])
    header = ["validation", "held out 0006R0", "held out 0001TP", "held-out mean", "val (in-distribution)",
              "epochs (0006R0 / 0001TP)"]
    return table(header, rows) + "\n\n" + source(*VAL_EVERY.values())


def val_every_gain() -> str:
    fewer, every = (Decimal(str(results(VAL_EVERY[k])["heldout_mean_iou"])) for k in (0, 1))
    return signed((fewer - every) * 100) + " points"


# ------------------------------------------------------------------ held-out drives at full size, 45 minutes

# One (drive, seed) pair a row, each arm its own `camvid.py --holdout-sequence` run: today's default, the
# candidate (context_fpn x1 with --infer-flip, so its own file scores it with flip), and `--rescore-flip` of
# both checkpoints (the candidate without flip, the default with it). Later sessions add rows.
FULL_SIZE = [("camvid_holdout_fcn8s_0006R0_seed0_45min", "camvid_holdout_context_fpn_flip_0006R0_seed0_45min",
              "camvid_holdout_flip_0006R0_seed0_45min")]


def _only_run(name: str) -> dict:
    (run,) = results(name)["runs"]
    return run


def _points(new, old) -> Decimal:
    """new - old, two scores from the files, in points."""
    return (Decimal(str(new)) - Decimal(str(old))) * 100


def _rescored(name: str, candidate: bool) -> dict:
    """The flip rescoring of the candidate's run folder (named by its overrides) or the default's (none)."""
    return next(scores for folder, scores in results(name)["runs"].items() if ("model-" in folder) == candidate)


def _full_size_gain(default_name: str, candidate_name: str) -> Decimal:
    return _points(_only_run(candidate_name)["heldout_mean_iou"], _only_run(default_name)["heldout_mean_iou"])


def heldout_full_size() -> str:
    rows = []
    for default_name, candidate_name, flip_name in FULL_SIZE:
        default, candidate = _only_run(default_name), _only_run(candidate_name)
        rows.append([f"{default['sequence']}, seed {default['seed']}",
                     rounded(default["heldout_mean_iou"], 3), rounded(_rescored(flip_name, False)["flip"], 3),
                     rounded(_rescored(flip_name, True)["plain"], 3),
                     f"**{rounded(candidate['heldout_mean_iou'], 3)}**",
                     f"**{signed(_full_size_gain(default_name, candidate_name))}**",
                     f"{rounded(default['val_mean_iou'], 3)} / {rounded(candidate['val_mean_iou'], 3)}",
                     f"{default['epochs']} / {candidate['epochs']}",
                     f"{rounded(default['train_images_per_s'], 1)} / {rounded(candidate['train_images_per_s'], 1)}"])
    header = ["held out", "FCN-8s ×1.75 (default)", "FCN-8s ×1.75 + flip", "context_fpn ×1",
              "context_fpn ×1 + flip", "gain", "val (default / candidate)", "epochs", "train img/s"]
    names = [name for triple in FULL_SIZE for name in triple]
    return table(header, rows) + "\n\n" + source(*names)


def heldout_full_size_per_class() -> str:
    """Per-class held-out IoU of the newest full-size pair (default, candidate, difference in points), with
    precision and recall."""
    default_name, candidate_name, _ = FULL_SIZE[-1]
    default, candidate = _only_run(default_name), _only_run(candidate_name)
    rows = []
    for name, iou in default["heldout_per_class_iou"].items():
        other = candidate["heldout_per_class_iou"][name]
        if iou is None or other is None:
            rows.append([name.replace("_symbol", ""), "—", "—", "—", "—", "—"])
            continue
        both = {measure: " / ".join(rounded(run[f"heldout_per_class_{measure}"][name], 2)
                                    for run in (default, candidate))
                for measure in ("precision", "recall")}
        rows.append([name.replace("_symbol", ""), rounded(iou, 3), rounded(other, 3), signed(_points(other, iou)),
                     both["precision"], both["recall"]])
    header = ["class", "FCN-8s (default)", "context_fpn ×1 + flip", "difference (points)",
              "precision (default / candidate)", "recall (default / candidate)"]
    return f"Held out {default['sequence']}, seed {default['seed']}:\n\n" + table(header, rows)


def full_size_mean_gain() -> str:
    gains = [_full_size_gain(default_name, candidate_name) for default_name, candidate_name, _ in FULL_SIZE]
    return f"{signed(_mean(gains))} points over {len(gains)} pair{'s' if len(gains) > 1 else ''}"


def full_size_flip_gains() -> str:
    """Flip TTA's gain on the full-size checkpoints: the default's and the candidate's, in points."""
    gains = [_points(scores["flip"], scores["plain"])
             for _, _, flip_name in FULL_SIZE for scores in (_rescored(flip_name, False), _rescored(flip_name, True))]
    return " and ".join(signed(g) for g in gains)


def full_size_speed_ratio() -> str:
    """The candidate's training images/s as a share of the default's, over the full-size pairs."""
    default = _mean(_only_run(d)["train_images_per_s"] for d, _, _ in FULL_SIZE)
    candidate = _mean(_only_run(c)["train_images_per_s"] for _, c, _ in FULL_SIZE)
    return f"{rounded(candidate / default, 2)}×"


FULL_SIZE_SCALES = "camvid_holdout_scales_0006R0_seed0_45min"  # the candidate's multi-scale flip rescoring


def full_size_multiscale() -> str:
    """The candidate with multi-scale flip TTA: its score and its gain over flip alone."""
    data = results(FULL_SIZE_SCALES)
    (scores,) = data["runs"].values()
    scales = ", ".join(f"{s:g}" for s in data["scales"])
    return (f"{rounded(scores['scales_flip'], 3)} over scales {scales} with flip, "
            f"{signed(data['scales_over_flip_mean_gain_points'])} over flip alone")


# The default's checkpoint with flip at lower inference scales (`--rescore-flip RUN --scales S`), by scale.
FULL_SIZE_FCN_FLIP = {1.25: "camvid_holdout_fcn8s_flip_x1.25_0006R0_seed0_45min",
                      1.5: "camvid_holdout_fcn8s_flip_x1.5_0006R0_seed0_45min"}


def full_size_fcn_flip_scales() -> str:
    """FCN-8s with flip at each lower inference scale: its held-out score against the same weights at x1.75
    without flip, and the pixels it runs on as a share of those: two passes of scale**2 against one of 1.75**2."""
    parts = []
    for scale, name in FULL_SIZE_FCN_FLIP.items():
        (scores,) = results(name)["runs"].values()
        delta = _points(scores["scales_flip"], scores["plain"])
        pixels = Decimal(2) * Decimal(str(scale)) ** 2 / Decimal("1.75") ** 2
        parts.append(f"×{scale:g} + flip {rounded(scores['scales_flip'], 3)} ({signed(delta)}, "
                     f"{rounded(pixels, 2)}× the pixels)")
    return "; ".join(parts)
