"""The `pixelwise` command: train | advise | data | annotate | evaluate | predict | serve | export | models | explain |
demo."""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import fields
from pathlib import Path

from pixelwise.config import TrainConfig
from pixelwise.errors import PixelwiseError

DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}


def size_pair(text: str) -> tuple[int, int]:
    """'384' -> (384, 384); '360x480' -> (360, 480), height first."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 8:
        raise argparse.ArgumentTypeError(f"expected N or HxW with sides of at least 8, got {text!r}")
    return parts[0], parts[1]


def whole_number(text: str, least: int = 1) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"expected {least} or more, got {value}")
    return value


def positive_int(text: str) -> int:
    return whole_number(text, 1)


def non_negative_int(text: str) -> int:
    return whole_number(text, 0)


def share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share from 0 to 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a share from 0 to 1, got {value:g}")
    return value


def float_pair(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH such as 0.75,1.75, got {text!r}") from None
    if not 0 < lo <= hi:
        raise argparse.ArgumentTypeError(f"expected 0 < LOW <= HIGH, got {text!r}")
    return lo, hi


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    from pixelwise.data.formats import FORMATS
    from pixelwise.models.registry import list_backbones, list_models
    from pixelwise.models.upsample import MODES
    from pixelwise.training.losses import LOSSES, WEIGHTINGS
    from pixelwise.training.semi import SELF_TRAINING_THRESHOLD, SEMI_METHODS, THRESHOLD
    from pixelwise.training.tracking import TRACKERS
    from pixelwise.training.strategies import STRATEGIES

    d = DEFAULTS
    p.add_argument("--config", metavar="FILE", help="start from this config.yaml (every run writes one, with each "
                   "auto decision resolved); options given here override it")
    p.add_argument("--data", help="dataset root folder (required unless --config gives it)")
    p.add_argument("--out", default=d["out"], help="run folder for checkpoints, curves and history (default: %(default)s)")
    p.add_argument("--format", default=d["format"], choices=FORMATS, help="dataset layout (default: detect)")
    p.add_argument("--model", default=d["model"], choices=list_models(), help="architecture (default: %(default)s)")
    p.add_argument("--backbone", default=d["backbone"], choices=list_backbones(),
                   help="ImageNet-pretrained encoder (default: %(default)s)")
    p.add_argument("--upsample", default=d["upsample"], choices=MODES,
                   help="upsampling operator (default: the model's own: transposed for FCNs, unpool for segnet)")
    p.add_argument("--freeze-upsample", action="store_true",
                   help="keep transposed-convolution kernels at their bilinear initialisation")
    p.add_argument("--no-pretrained", dest="pretrained", action="store_false",
                   help="start from random weights instead of ImageNet")
    p.add_argument("--backbone-weights", metavar="PATH", help="load the backbone's ImageNet weights from this file")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int, default=d["epochs"],
                        help="total epochs, also when resuming (default: %(default)s)")
    budget.add_argument("--time-budget", type=float, metavar="MINUTES",
                        help="train for this many minutes, validation included; the schedule fits the budget")
    p.add_argument("--val-every", type=non_negative_int, default=d["val_every"], metavar="N",
                   help="validate every N epochs, or with 0 as often as keeps validation to about a tenth of the "
                   "time; the first and last epochs always are (default: %(default)s)")
    p.add_argument("--resume", nargs="?", const=True, default=False, choices=("auto", True), metavar="auto",
                   help="continue OUT/last.pt exactly where it stopped (epoch, optimizer, schedule, random "
                   "streams); `--resume auto` continues a run if OUT holds one and starts one if not, so a "
                   "scheduler can rerun the same command")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic kernels and no clock in the schedule (needs --epochs): a run killed and "
                   "resumed ends with bit-identical weights to an uninterrupted one")
    p.add_argument("--overwrite", action="store_true", help="replace a previous run in OUT instead of refusing")
    p.add_argument("--init-from", metavar="CKPT", help="initialise matching weights from a checkpoint")
    p.add_argument("--strategy", default=d["strategy"], choices=("auto",) + STRATEGIES,
                   help="how much of the pretrained encoder retrains; auto measures the data as `pixelwise advise` "
                   "does and logs its pick (default: %(default)s)")
    p.add_argument("--trainable-stages", type=int, default=d["trainable_stages"], metavar="K",
                   help="encoder stages that train under --strategy last-k (default: %(default)s)")
    p.add_argument("--lr-ratio", type=float, default=d["lr_ratio"],
                   help="under --strategy full, each earlier encoder stage's learning rate relative to the next "
                   "(default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=d["batch_size"], help="default: %(default)s")
    p.add_argument("--lr", type=float, default=d["lr"], help="peak AdamW learning rate (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"], help="default: %(default)s")
    p.add_argument("--crop-size", type=size_pair, default=d["crop_size"], metavar="N|HxW",
                   help="training crop, clamped to the image size (default: {}x{})".format(*d["crop_size"]))
    p.add_argument("--scale-range", type=float_pair, default=d["scale_range"], metavar="LOW,HIGH",
                   help="random rescaling before the crop (default: {:g},{:g})".format(*d["scale_range"]))
    p.add_argument("--infer-scale", type=float, default=d["infer_scale"],
                   help="validate and predict on inputs resized by this factor; saved in the checkpoint "
                   "(default: %(default)s)")
    p.add_argument("--infer-flip", action="store_true",
                   help="--profile accurate also predicts the mirror image and averages the two (flip test-time "
                   "augmentation): twice the compute; saved in the checkpoint (validation does not flip)")
    p.add_argument("--resolution-schedule", type=share, default=d["resolution_schedule"], metavar="SHARE",
                   help="train this share of the run (0..1) at half resolution, scales and crop shrunk together "
                   "for ~4x cheaper steps, then at full resolution; 0: full throughout (default: %(default)s)")
    p.add_argument("--jitter", type=float, default=d["jitter"], help="brightness/contrast jitter (default: %(default)s)")
    p.add_argument("--colour", type=float, default=d["colour"], metavar="STRENGTH",
                   help="per-channel gain and saturation jitter, e.g. 0.2, for a new day's light or camera; "
                   "0: none (default: %(default)s)")
    p.add_argument("--augment", default=d["augment"], choices=("auto", "upright", "top-down"),
                   help="geometric augmentation: upright (horizontal flips, for photos), top-down (also vertical "
                   "flips and 90-degree turns, for microscopy and aerial tiles), or auto: top-down when the "
                   "training labels sit as often at the bottom of an image as at the top, logged with the "
                   "measured figure (default: %(default)s)")
    p.add_argument("--class-weighting", default=d["class_weighting"], choices=WEIGHTINGS,
                   help="loss weights from training pixel counts (default: %(default)s)")
    p.add_argument("--loss", default=d["loss"], choices=LOSSES,
                   help="ce: cross-entropy over every labelled pixel; ohem: over the pixels still predicted "
                   "wrong (true class below 0.7), at least a sixteenth of them; ce+lovasz: cross-entropy plus the "
                   "Lovász-softmax surrogate of each class's IoU (default: %(default)s)")
    p.add_argument("--unlabelled", action="append", default=list(d["unlabelled"]), metavar="DIR",
                   help="a folder of images nobody labelled, learnt from through the model's own confident "
                   "predictions (weak-to-strong consistency); repeat for several folders. Copies of val or test "
                   "images are left out, unreadable images skipped and listed")
    p.add_argument("--semi", dest="semi_method", default=d["semi_method"], choices=SEMI_METHODS,
                   help="how --unlabelled images teach: consistency (each step, a confident prediction on one view "
                   "is learnt on a strongly changed view) or self-training (the first half of the run trains on "
                   "the labels alone, the model then labels the pool once, as --profile accurate predicts, and "
                   "the rest trains on both, each step as cheap as a supervised one) (default: %(default)s)")
    p.add_argument("--pseudo-threshold", type=share, default=d["pseudo_threshold"], metavar="P",
                   help="confidence a pseudo-label needs; less confident pixels of --unlabelled images are "
                   f"ignored (default: {THRESHOLD:g} for consistency, {SELF_TRAINING_THRESHOLD:g} for self-training, "
                   "which keeps every pixel)")
    p.add_argument("--ema", type=float, default=d["ema"], metavar="DECAY",
                   help="validate and save a moving average of the weights, updated each step with this "
                   "decay, e.g. 0.999; 0 saves the weights themselves (default: %(default)s)")
    p.add_argument("--log", dest="log_to", action="append", default=list(d["log_to"]), choices=TRACKERS,
                   metavar="TRACKER", help="also send each validated epoch to tensorboard (event files in "
                   "OUT/tensorboard: losses, learning rate, per-class IoU, prediction-vs-truth images) or mlflow "
                   "(MLFLOW_TRACKING_URI, else MLflow's default store here: params, metrics, best.pt and plots as "
                   "artifacts); repeat for both. Optional extras: pip install 'pixelwise[tensorboard]' or 'pixelwise[mlflow]'")
    p.add_argument("--precision", default=d["precision"], choices=("auto", "bf16", "fp32"),
                   help="auto: bf16 autocast where the hardware has native bf16, with depthwise convolutions "
                   "kept in fp32 on the CPU, where they are faster (default: %(default)s)")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out images whose image or mask is unreadable, mis-sized or mislabelled, log each, "
                   "and list them all again at the end (default: stop on the first run of problems)")
    p.add_argument("--workers", type=int, default=d["workers"], help="data loader processes (default: %(default)s)")
    p.add_argument("--device", default=d["device"], choices=("auto", "cpu", "cuda"), help="default: %(default)s")
    p.add_argument("--seed", type=int, default=d["seed"], help="default: %(default)s")
    p.add_argument("--nproc", type=positive_int, metavar="N",
                   help="train on N processes of this machine (torchrun + DDP; gloo on CPU, nccl on CUDA); "
                   "--batch-size stays the global batch. For several machines start `torchrun -m pixelwise "
                   "train ...` on each (see the README)")
    p.add_argument("--sync-bn", action="store_true",
                   help="with several processes on CUDA, BatchNorm statistics over the global batch")


def config_file_defaults(argv: list[str]) -> dict:
    """The values of `train --config FILE`, as defaults that options on the command line override.
    An --epochs given here ends the file's time budget, which would otherwise take precedence."""
    from pixelwise.config import read_config_file

    path = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"), None) or next(
        (a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if path is None:
        return {}
    values = read_config_file(path)
    if any(a == "--epochs" or a.startswith("--epochs=") for a in argv):
        values["time_budget"] = None
    return values  # lists stay lists here: config_from_args makes tuples of every list


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items() if k in known})


def without_option(argv: list[str], option: str) -> list[str]:
    """argv less `--option VALUE` / `--option=VALUE`."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            kept.append(arg)
    return kept


def cmd_train(args) -> None:
    import os

    from pixelwise.training.engine import fit

    if not args.data:
        raise PixelwiseError("train needs --data (or a --config file that gives it)")
    if args.nproc and args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        from pixelwise.training.distributed import launch

        code = launch(args.nproc, without_option(args.argv, "--nproc"))
        if code:
            raise PixelwiseError(f"distributed training stopped (exit code {code}); the last completed epoch is in "
                                 f"{args.out}/last.pt: rerun with --resume auto to continue")
        return
    summary = fit(config_from_args(args), resume=args.resume, overwrite=args.overwrite)
    if "RANK" in os.environ and os.environ["RANK"] != "0":
        return
    print(f"best val mean IoU {summary['best_mean_iou']:.4f} after {summary['epochs']} epochs "
          f"({summary['minutes']:.1f} min); checkpoint: {summary['best_checkpoint']}")


def cmd_advise(args) -> None:
    from pixelwise.training.advisor import advise, format_advice, write_advice

    advice = advise(args.data, backbone=args.backbone, format=args.format, backbone_weights=args.backbone_weights)
    print(format_advice(advice))
    if args.json:
        write_advice(advice, args.json)
        print(f"\nwrote {args.json}")


def cmd_evaluate(args) -> None:
    from pixelwise.api import evaluate, format_metrics

    metrics = evaluate(args.checkpoint, args.data, split=args.split, format=args.format, json_path=args.json,
                       plot_path=args.plot, device=args.device, precision=args.precision, engine=args.engine,
                       profile=args.profile, per_image_csv=args.per_image)
    print(format_metrics(metrics))
    print(f"\nconfusion matrix: {metrics['confusion_plot']}" + (f"\nmetrics JSON: {args.json}" if args.json else "")
          + (f"\nper image, worst first: {args.per_image}" if args.per_image else ""))


def check_outputs(images: list[Path], out: Path) -> None:
    """Refuse before writing anything if two inputs would share an output name, or an output
    would land on an input: predictions must never destroy the user's images."""
    seen: dict[str, Path] = {}
    inputs = {p.resolve() for p in images}
    for image in images:
        if image.stem in seen:
            raise PixelwiseError(f"{seen[image.stem]} and {image} would both be written to {out / image.stem}.png; "
                                 "predict them into different --out folders")
        seen[image.stem] = image
        for name in (f"{image.stem}.png", f"{image.stem}_overlay.png"):
            if (out / name).resolve() in inputs:
                raise PixelwiseError(f"writing {out / name} would overwrite the input image {out / name}; "
                                     "choose another --out folder")


def cmd_export(args) -> None:
    from pixelwise.inference.export import export_onnx

    if args.calibration and not args.int8:
        raise PixelwiseError("--calibration picks the images int8 quantisation is calibrated on; add --int8")
    export_onnx(Path(args.checkpoint), Path(args.onnx), int8=args.int8,
                calibration=[Path(args.calibration)] if args.calibration else None, opset=args.opset)


def load_predictor(args, streams: int = 1):
    """The model behind `predict`, on the engine asked for; OpenVINO falls back to onnxruntime, saying why."""
    from pixelwise.inference.predict import predictor_from

    try:
        return predictor_from(args.checkpoint, engine=args.engine, device=args.device, precision=args.precision,
                              profile=args.profile, streams=streams)
    except PixelwiseError as err:
        if args.engine != "openvino":
            raise
        print(f"{err}\nfalling back to --engine onnxruntime", file=sys.stderr)
        return predictor_from(args.checkpoint, engine="onnxruntime", device=args.device, precision=args.precision,
                              profile=args.profile, streams=streams)


def cmd_predict(args) -> None:
    from pixelwise.runtime import physical_cores
    from pixelwise.inference.pipeline import predict_folder, runs_side_by_side
    from pixelwise.data.io import gather_images
    from pixelwise.inference.tiling import check_tiling

    images = gather_images(args.inputs)
    out = Path(args.out)
    check_outputs(images, out)
    if args.tile is not None:
        check_tiling(args.tile, args.overlap)  # refused before the model loads
    side_by_side = runs_side_by_side(len(images), args.batch_size, args.tile)
    predictor = load_predictor(args, streams=physical_cores() if side_by_side else 1)
    batch_size = args.batch_size or (8 if getattr(predictor.engine, "gpu", False) else 1)
    summary = predict_folder(predictor, images, out, batch_size=batch_size, overlay=not args.no_overlay,
                             tile=args.tile, overlap=args.overlap, log=lambda m: print(m, file=sys.stderr),
                             probabilities=args.save_probs)
    plural = "" if summary.written == 1 else "s"
    what = f"mask{plural}" if args.no_overlay else f"mask{plural} and overlay{plural}"
    what += f" and {args.save_probs} probabilities" if args.save_probs else ""
    rate = f"{summary.images_per_s:.1f}" if summary.images_per_s >= 1 else f"{summary.images_per_s:.3f}"
    print(f"wrote {summary.written} {what} to {out} in {summary.seconds:.1f} s ({rate} images/s)")
    if summary.failed:  # one bad file never stops a folder of good ones
        raise PixelwiseError(f"{len(summary.failed)} of {len(images)} images could not be predicted (see above)")


def cmd_data_import(args) -> None:
    from pixelwise.data.importers import import_dataset

    summary = import_dataset(args.source, args.src, args.out, overwrite=args.overwrite, overlap=args.overlap,
                             crowd=args.crowd, palette=args.palette, labels=args.labels, images=args.images,
                             line_width=args.line_width)
    print(summary.format_summary())
    if not summary.ok:
        raise PixelwiseError(f"{len(summary.failed)} items could not be imported (listed above); "
                             f"the other {summary.images} are in {summary.dst}")


def cmd_data_check(args) -> None:
    from pixelwise.data.checks import STATS_DIRNAME, check_dataset, write_stats

    report = check_dataset(args.dir, format=args.format, fix=args.fix)
    for fixed in report.fixed:
        print(f"fixed: {fixed.line()}")
    for line in report.lines():
        print(line)
    stats = report.stats
    print(f"\n{stats.masks} masks, {len(report.class_names)} classes; ignore {stats.share(stats.ignore_pixels):.2%} "
          f"of pixels; sizes: " + ", ".join(f"{size} ({n})" for size, n in sorted(stats.image_sizes.items())))
    print(f"  {'class':<20} {'pixels':>8} {'images':>7}")
    for i, name in enumerate(report.class_names):
        print(f"  {name:<20} {stats.share(int(stats.class_pixels[i])):>8.2%} {int(stats.class_images[i]):>7}")
    json_path, png_path = write_stats(report, args.out or Path(args.dir) / STATS_DIRNAME)
    print(f"statistics: {json_path}, {png_path}")
    if not report.ok:
        kinds = Counter(p.kind.replace("_", " ") for p in report.problems)
        fixable = sum(p.auto_fix for p in report.problems)
        raise PixelwiseError(f"{len(report.problems)} problems in {args.dir} ("
                             + ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) + ")"
                             + (f"; --fix repairs {fixable} of them (originals are backed up)" if fixable else ""))
    print("no problems found")


def cmd_data_split(args) -> None:
    from pixelwise.data.splits import split_dataset

    split_dataset(args.dir, val=args.val, test=args.test, seed=args.seed, overwrite=args.overwrite)


def cmd_data_browse(args) -> None:
    from pixelwise.data.browse import browse

    order = captions = None
    if args.worst:
        from pixelwise.api import per_image_iou

        scores = per_image_iou(args.worst, args.dir, split=args.split, format=args.format)
        order = sorted(scores, key=lambda stem: scores[stem])
        captions = {stem: f"IoU {iou:.2f}" for stem, iou in scores.items()}
    out = browse(args.dir, args.out, split=args.split, order=order, captions=captions, limit=args.limit,
                 format=args.format)
    print(f"contact sheet: {out}" + (" (worst mean IoU first)" if args.worst else ""))


def cmd_data_suggest(args) -> None:
    from pixelwise.data.checks import discover_samples
    from pixelwise.inference.predict import load
    from pixelwise.inference.uncertainty import rank_by_uncertainty

    root = Path(args.dir)
    _, samples = discover_samples(root)
    unlabelled = [s.image for s in samples if s.mask is None]
    if not unlabelled:
        raise PixelwiseError(f"{root}: every image has a mask; nothing to suggest")
    predictor = load(args.checkpoint, device=args.device, precision=args.precision)
    labelled = None
    if args.measure == "balanced":  # the classes the masks already hold pull less
        import numpy as np

        from pixelwise.data.io import read_mask

        classes = len(predictor.class_names)
        labelled = sum((np.bincount(read_mask(s.mask).ravel(), minlength=256)[:classes] for s in samples if s.mask),
                       np.zeros(classes, dtype=np.int64))
    labelled_layouts = []
    if args.measure == "typical":  # the kinds of scene the masks already cover go last
        from pixelwise.inference.uncertainty import class_layout

        labelled_layouts = [class_layout(predictor.predict_proba(s.image)) for s in samples if s.mask]
    ranked = rank_by_uncertainty(predictor.predict_proba, unlabelled, args.measure, labelled, groups=args.groups,
                                 labelled_layouts=labelled_layouts)
    if args.spread:
        from pixelwise.data.duplicates import perceptual_hash
        from pixelwise.data.io import read_image
        from pixelwise.inference.uncertainty import spread_out

        ranked = spread_out(ranked, {path: perceptual_hash(read_image(path)) for path in unlabelled}, args.spread)
    out = Path(args.out) if args.out else root / ".pixelwise" / "suggestions.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"{path.relative_to(root)}\n" for path, _ in ranked))
    print(f"{'rank':>4}  {'entropy':>7}  {'margin':>6}  image (label in this order; --measure {args.measure})")
    for rank, (path, score) in enumerate(ranked[: args.show], 1):
        print(f"{rank:>4}  {score['entropy']:>7.3f}  {score['margin']:>6.3f}  {path.relative_to(root)}")
    if len(ranked) > args.show:
        print(f"   ... {len(ranked) - args.show} more")
    print(f"order of all {len(ranked)} unlabelled images: {out}")


def cmd_annotate(args) -> None:
    from pixelwise.web.server import run_app

    run_app(args.dir, checkpoint=args.checkpoint, host=args.host, port=args.port, open_browser=args.open)


def cmd_models(args) -> None:
    from pixelwise.models.encoders import ENCODERS
    from pixelwise.models.registry import DEFAULT_UPSAMPLE, create_model, list_backbones, list_models
    from pixelwise.models.summary import measure

    size = args.size
    print(f"input {size[0]}x{size[1]}; GFLOPs count a multiply-add as 2; activations: fp32 outputs of every "
          "layer, roughly what training stores for the backward pass")
    print(f"{'model':<12} {'backbone':<19} {'upsample':<11} {'params (M)':>10} {'GFLOPs':>9} {'activations (MB)':>17}")
    for name in list_models():
        # fcn_vanilla uses no backbone: one row is enough
        for backbone in (["-"] if name == "fcn_vanilla" else list_backbones()):
            upsample = DEFAULT_UPSAMPLE[name]
            if upsample == "unpool" and not (backbone in ENCODERS and ENCODERS[backbone].has_pool_indices):
                upsample = "bilinear"  # unpooling needs an encoder that records max-pool indices
            try:
                model = create_model(name, backbone="vgg16" if backbone == "-" else backbone,
                                     num_classes=args.classes, upsample=upsample, pretrained=False)
            except ValueError:  # e.g. an FCN-8s on an encoder that stops at stride 16
                print(f"{name:<12} {backbone:<19} {'-':<11} {'(this backbone cannot serve this model)':>39}")
                continue
            m = measure(model, size)
            print(f"{name:<12} {backbone:<19} {upsample:<11} {m['params'] / 1e6:>10.2f} {m['gflops']:>9.1f} "
                  f"{m['activation_mb']:>17.0f}", flush=True)


def cmd_explain(args) -> None:
    from pixelwise.explain import explain_decoders, explain_upsampling

    for path in (explain_decoders if args.topic == "decoders" else explain_upsampling)(args.out):
        print(path)


def cmd_demo(args) -> None:
    from pixelwise.demo import run_demo

    run_demo(out=args.out, epochs=args.epochs)


def add_precision_argument(p) -> None:
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="auto: with --profile accurate, masks equal to fp32's (fp16 where the hardware has it "
                   "natively, else fp32); with --profile fast, bf16 where native (default: auto)")


LAYOUTS = ("auto", "camvid", "voc", "folder")


def add_data_import_parser(data) -> None:
    from pixelwise.data.importers import CROWDS, LINE_WIDTH, OVERLAPS, SOURCES

    p = data.add_parser("import", help="convert COCO, LabelMe, CVAT, colour-mask or Cityscapes annotations",
                        description="Write the pixelwise folder layout (images/, masks/ as palette PNGs of class "
                        "indices, classes.txt, splits/) from another tool's export. SRC is never changed; an "
                        "item that cannot be converted is listed with the reason. Example: pixelwise data import "
                        "--from labelme annotations/ --out data/mine")
    p.add_argument("--from", dest="source", required=True, choices=SOURCES, help="the export's format")
    p.add_argument("src", metavar="SRC", help="the export: a COCO JSON, a LabelMe folder, a CVAT zip or folder, "
                   "a folder of images and colour masks, or a Cityscapes root")
    p.add_argument("--out", required=True, metavar="DST", help="new dataset folder (refused if it holds files)")
    p.add_argument("--overwrite", action="store_true", help="replace DST (only once the new copy is complete)")
    p.add_argument("--overlap", default="ignore", choices=OVERLAPS,
                   help="COCO pixels claimed by instances of different classes: ignore (255) or the last one's "
                   "class (default: %(default)s)")
    p.add_argument("--crowd", default="ignore", choices=CROWDS,
                   help="COCO iscrowd regions: ignore (255) or their class (default: %(default)s)")
    p.add_argument("--palette", metavar="FILE", help="rgb: `name R G B` lines or a CVAT labelmap.txt")
    p.add_argument("--labels", metavar="FILE", help="labelme: class names a line (labelme's labels.txt)")
    p.add_argument("--images", metavar="DIR", help="coco/rgb: where the images are, if not beside the annotations")
    p.add_argument("--line-width", type=positive_int, default=LINE_WIDTH,
                   help="labelme: drawn width of line and linestrip shapes in pixels (default: %(default)s)")
    p.set_defaults(func=cmd_data_import)


def add_data_check_parser(data) -> None:
    p = data.add_parser("check", help="report every problem in a dataset, with statistics",
                        description="Read every image and mask; print one line per problem (file, what, fix) and "
                        "exit non-zero if there is any; write stats.json and stats.png. Example: "
                        "pixelwise data check data/mine --fix")
    p.add_argument("dir", metavar="DIR", help="dataset root (folder, CamVid or VOC layout)")
    p.add_argument("--format", default="auto", choices=LAYOUTS, help="dataset layout (default: detect)")
    p.add_argument("--fix", action="store_true", help="apply the safe fixes (a mask drawn on the un-rotated pixels "
                   "of an EXIF-rotated photo turned to match it, colour masks converted to indices, stray masks "
                   "moved aside); originals go to DIR/.pixelwise-backup/")
    p.add_argument("--out", metavar="DIR", help="folder for stats.json and stats.png (default: DIR/.pixelwise)")
    p.set_defaults(func=cmd_data_check)


def add_data_split_parser(data) -> None:
    p = data.add_parser("split", help="write train/val/test lists stratified by class presence",
                        description="Write DIR/splits/{train,val,test}.txt: every class in at least 3 images "
                        "appears in each split, rare classes placed first, near-duplicates kept in one split; "
                        "the same seed gives the same split. Example: pixelwise data split data/mine --val 0.1 "
                        "--test 0.1")
    p.add_argument("dir", metavar="DIR", help="folder-layout dataset root")
    p.add_argument("--val", type=float, default=0.1, help="fraction for validation (default: %(default)s)")
    p.add_argument("--test", type=float, default=0.1, help="fraction for test (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    p.add_argument("--overwrite", action="store_true", help="replace existing split lists (old ones are backed up)")
    p.set_defaults(func=cmd_data_split)


def add_data_browse_parser(data) -> None:
    p = data.add_parser("browse", help="a contact sheet of images with their mask overlays",
                        description="Draw thumbnails with mask overlays and a class legend into one PNG. With "
                        "--worst, order them by a model's mean IoU per image, lowest first: the labels or "
                        "predictions that most need a look. Example: pixelwise data browse data/mine --worst "
                        "runs/mine/best.pt --out worst.png")
    p.add_argument("dir", metavar="DIR", help="dataset root")
    p.add_argument("--out", required=True, metavar="PNG", help="the contact sheet to write")
    p.add_argument("--split", help="only this split (default: all; with --worst: test, else val)")
    p.add_argument("--worst", metavar="CKPT", help="order by this checkpoint's per-image mean IoU, lowest first")
    p.add_argument("--limit", type=positive_int, default=64, help="most images on the sheet (default: %(default)s)")
    p.add_argument("--format", default="auto", choices=LAYOUTS, help="dataset layout (default: detect)")
    p.set_defaults(func=cmd_data_browse)


def add_data_suggest_parser(data) -> None:
    p = data.add_parser("suggest", help="rank unlabelled images by the model's uncertainty: label these next",
                        description="Score every image without a mask by the model's mean per-pixel entropy "
                        "and top-2 margin, and write them in the order to label them, one path a line. The "
                        "default (diverse) takes the most uncertain image of each kind of scene before a second "
                        "of any. Measured on CamVid it beat plain uncertainty and came level with random picks "
                        "(benchmarks/active_learning.py; see docs/ground-truth.md). Example: pixelwise data "
                        "suggest --checkpoint runs/mine/best.pt data/mine")
    p.add_argument("dir", metavar="DIR", help="dataset root; images without a mask are ranked")
    p.add_argument("--checkpoint", required=True, help="a .pt file written by pixelwise train")
    # the default is uncertainty.DEFAULT_MEASURE, spelled out so building the parser imports nothing
    p.add_argument("--measure", default="diverse", choices=("entropy", "margin", "balanced", "diverse", "typical"),
                   help="mean pixel entropy (high first), top-2 margin (low first), balanced: entropy weighted "
                   "towards the classes the masks so far hold least, each pick counted as labelled, diverse: "
                   "the most uncertain image of each of --groups kinds of scene, then the second of each, or "
                   "typical: the most typical image of each kind of scene no mask covers yet (default: %(default)s)")
    p.add_argument("--groups", type=positive_int, default=20, metavar="N",
                   help="with --measure diverse or typical: kinds of scene (k-means on where the model sees each "
                   "class); set it to how many images you label before retraining (default: %(default)s)")
    p.add_argument("--spread", type=int, default=0, metavar="BITS",
                   help="keep images this many perceptual-hash bits apart at the top of the list (e.g. 16 for "
                   "video frames: near-identical frames wait their turn); 0: pure uncertainty order (default)")
    p.add_argument("--out", metavar="TXT", help="the ranked list (default: DIR/.pixelwise/suggestions.txt)")
    p.add_argument("--show", type=positive_int, default=10, help="rows to print (default: %(default)s)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    add_precision_argument(p)
    p.set_defaults(func=cmd_data_suggest)


def add_data_parsers(data) -> None:
    add_data_import_parser(data)
    add_data_check_parser(data)
    add_data_split_parser(data)
    add_data_browse_parser(data)
    add_data_suggest_parser(data)


def add_speed_arguments(p: argparse.ArgumentParser) -> None:
    """--engine and --profile, shared by evaluate and predict."""
    p.add_argument("--engine", default="auto", choices=("auto", "torch", "onnxruntime", "openvino"),
                   help="auto (the fastest here: OpenVINO where installed, else onnxruntime, on a GPU torch), "
                   "torch (eager), onnxruntime or openvino; the ONNX engines export CKPT to <stem>.onnx beside it "
                   "once (reused while newer than CKPT), or take an .onnx from pixelwise export as --checkpoint "
                   "(default: %(default)s)")
    p.add_argument("--profile", default="accurate", choices=("accurate", "fast"),
                   help="accurate: the checkpoint's inference scale (1.75 by default), masks equal to fp32's, best "
                   "mean IoU; fast: scale 1, bf16 where native, several times the images/s for a little less mean "
                   "IoU; speeds in docs/deploy.md (default: %(default)s)")


def add_train_parser(sub, full: bool, defaults: dict | None = None) -> None:
    p = sub.add_parser("train", help="train a model on a dataset folder",
                       description="Train a segmentation model. Writes OUT/last.pt every epoch and OUT/best.pt "
                       "(best validation mean IoU), history.json and curves.png. Example: "
                       "pixelwise train --data data/camvid --out runs/camvid --time-budget 45")
    if full:
        add_train_arguments(p)
    p.set_defaults(func=cmd_train, **(defaults or {}))


def add_advise_parser(sub) -> None:
    p = sub.add_parser("advise", help="measure a dataset and recommend how much of the backbone to retrain",
                       description="Place the training split in the transfer-learning table (small or rich data, "
                       "similar to or different from ImageNet) and recommend a --strategy. Size: images, labelled "
                       "pixels per class, imbalance. Similarity: how far the dataset's activations sit from the "
                       "ImageNet statistics held in the pretrained backbone's BatchNorm layers. "
                       "Example: pixelwise advise --data data/camvid --json advice.json")
    p.add_argument("--data", required=True, help="dataset root folder")
    p.add_argument("--format", default="auto", choices=("auto", "camvid", "voc", "folder"), help="dataset layout")
    p.add_argument("--backbone", default=DEFAULTS["backbone"],
                   help="pretrained backbone whose statistics are compared (default: %(default)s)")
    p.add_argument("--backbone-weights", metavar="PATH", help="load the backbone's ImageNet weights from this file")
    p.add_argument("--json", metavar="OUT", help="also write {quadrant, strategy, reasons, evidence} here")
    p.set_defaults(func=cmd_advise)


def add_data_parser(sub, full: bool) -> None:
    p = sub.add_parser("data", help="ground truth: import annotations, check, fix, split and look at a dataset",
                       description="The ground-truth toolchain. Example: pixelwise data import --from coco "
                       "annotations.json --out data/mine && pixelwise data check data/mine && "
                       "pixelwise data split data/mine --val 0.1 --test 0.1")
    if full:
        data = p.add_subparsers(dest="data_command", required=True, metavar="{import,check,split,browse,suggest}")
        add_data_parsers(data)


def add_annotate_parser(sub) -> None:
    p = sub.add_parser("annotate", help="a local browser app to draw and correct masks, with the model's help",
                       description="Serve DIR (any layout pixelwise reads, or images/ with a classes.txt and no masks "
                       "yet) to your browser: brush, eraser, polygon, flood and superpixel fill, ignore brush, undo. "
                       "With --checkpoint, unlabelled images open pre-filled with the model's prediction, unsure "
                       "pixels are outlined, 'next' follows the model's uncertainty, and 'retrain' fine-tunes on "
                       "the masks saved so far. Prints a URL with a per-launch token; binds 127.0.0.1. "
                       "Example: pixelwise annotate data/mine --checkpoint runs/mine/best.pt")
    p.add_argument("dir", metavar="DIR", help="dataset root")
    p.add_argument("--checkpoint", metavar="CKPT", help="pre-fill and rank images with this model")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s; anything else "
                   "exposes your data to the network)")
    p.add_argument("--port", type=int, default=8765, help="default: %(default)s (a free one if taken)")
    p.add_argument("--open", action="store_true", help="open the app in the default browser")
    p.set_defaults(func=cmd_annotate)


def cmd_serve(args) -> None:
    from pixelwise.web.serve import Limits, serve

    serve(args.checkpoint, host=args.host, port=args.port, profile=args.profile, engine=args.engine, token=args.token,
          insecure=args.insecure, limits=Limits(batch_size=args.batch_size, max_wait_ms=args.max_wait_ms,
                                                queue=args.queue, timeout_s=args.timeout, max_body_mb=args.max_body_mb,
                                                upload_s=args.upload_timeout))


def add_serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="answer prediction requests over HTTP",
                       description="Serve a model: POST an image's bytes (or a multipart form with field `file`) "
                       "to /predict and get the palette PNG mask `pixelwise predict` would write "
                       "(?format=json: class pixel counts; ?format=overlay: the overlay). GET /health, /ready, "
                       "/metadata, /metrics (Prometheus). Example: pixelwise serve --checkpoint runs/mine/best.pt")
    p.add_argument("--checkpoint", required=True, help="a .pt file written by pixelwise train, or an exported .onnx")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; anything but loopback needs --token or "
                   "--insecure (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="default: %(default)s")
    p.add_argument("--token", help="clients must send 'Authorization: Bearer TOKEN'")
    p.add_argument("--insecure", action="store_true", help="serve a non-loopback address without a token")
    p.add_argument("--batch-size", type=positive_int, help="images a model call may take (default: 8 on a GPU; 1 on "
                   "the CPU, where a batch costs as much per image and holds more memory)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long a request waits for others of its size to share its batch (default: 5)")
    p.add_argument("--queue", type=positive_int, default=64,
                   help="requests waiting at most beside those in the model; more get 503 with Retry-After "
                   "(default: 64)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds before a request gets 504 (default: 30)")
    p.add_argument("--max-body-mb", type=float, default=50.0, help="larger bodies get 413 (default: 50)")
    p.add_argument("--upload-timeout", type=float, default=30.0, help="seconds a body may take to arrive; a slower "
                   "upload gets 408 and gives its place back (default: 30)")
    add_speed_arguments(p)
    p.set_defaults(func=cmd_serve)


def add_evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="score a checkpoint on a dataset split",
                       description="Print pixel accuracy, mean accuracy, mean IoU, frequency-weighted IoU, "
                       "mean Dice, and per class IoU, Dice (F1), precision and recall, and save a confusion-matrix "
                       "PNG. Example: pixelwise evaluate "
                       "--checkpoint runs/camvid/best.pt --data data/camvid --json runs/camvid/test.json")
    p.add_argument("--checkpoint", required=True, help="a .pt file written by pixelwise train")
    p.add_argument("--data", required=True, help="dataset root folder")
    p.add_argument("--split", help="split to score (default: test if present, else val)")
    p.add_argument("--format", default="auto", choices=("auto", "camvid", "voc", "folder"), help="dataset layout")
    p.add_argument("--json", metavar="OUT", help="also write the metrics as JSON here")
    p.add_argument("--plot", metavar="PNG", help="confusion-matrix image (default: next to the checkpoint)")
    p.add_argument("--per-image", metavar="CSV", help="also write each image's mean IoU, pixel accuracy and IoU "
                   "per class here, worst image first (the order of `data browse --worst`)")
    add_speed_arguments(p)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    add_precision_argument(p)
    p.set_defaults(func=cmd_evaluate)


def add_predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="predict masks for images",
                       description="For each image write DIR/<stem>.png (class indices with the dataset palette) "
                       "and DIR/<stem>_overlay.png. Example: pixelwise predict --checkpoint runs/camvid/best.pt "
                       "photos/ extra.jpg --out predictions")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images, any size")
    p.add_argument("--checkpoint", required=True, help="a .pt file written by pixelwise train")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--batch-size", type=positive_int,
                   help="images of equal size per forward pass (default: 1 on the CPU, where batches only add "
                   "memory traffic, measured in benchmarks/speed.py, and an exported engine predicts one image "
                   "a core side by side; 8 on a GPU)")
    p.add_argument("--tile", type=positive_int, metavar="PIXELS",
                   help="predict in overlapping tiles of this size, blended smoothly, band by band: for images "
                   "too large to predict whole (aerial, slides, scans), e.g. --tile 1024. The size is what the "
                   "network sees, so the image tiles are smaller by the inference scale (1024/1.75 = 585 pixels at "
                   "--profile accurate) and memory stays the same at every profile")
    p.add_argument("--overlap", type=int, default=128, metavar="PIXELS",
                   help="tile overlap, at most half of --tile (default: %(default)s)")
    p.add_argument("--no-overlay", action="store_true", help="write only the class-index PNGs")
    p.add_argument("--save-probs", choices=("uint8", "float16"), metavar="uint8|float16",
                   help="also write each image's class probabilities to <stem>_probs.npy, shape (classes, H, W): "
                   "uint8 holds round(255 p), read back as q / 255; float16 holds p")
    add_speed_arguments(p)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    add_precision_argument(p)
    p.set_defaults(func=cmd_predict)


def add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="write a checkpoint as an ONNX model (onnxruntime, OpenVINO)",
                       description="Dynamic batch, height and width; class names, palette, normalisation and "
                       "inference scale inside, so the .onnx alone predicts. Example: pixelwise export "
                       "--checkpoint runs/camvid/best.pt --onnx runs/camvid/best.onnx")
    p.add_argument("--checkpoint", required=True, help="a .pt file written by pixelwise train")
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the file to write (replaced atomically)")
    p.add_argument("--int8", action="store_true",
                   help="quantise to int8 (ONNX Runtime static QDQ), calibrated on 32 training images")
    p.add_argument("--calibration", metavar="DIR",
                   help="with --int8: calibrate on the images in DIR instead of the checkpoint's training set")
    p.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    p.set_defaults(func=cmd_export)


def add_models_parser(sub) -> None:
    p = sub.add_parser("models", help="list every model x backbone with its size and cost",
                       description="Parameters, GFLOPs and training activation memory of every registered model "
                       "and backbone at one input size. Example: pixelwise models --size 360x480")
    p.add_argument("--size", type=size_pair, default=(360, 480), metavar="HxW", help="input size (default: 360x480)")
    p.add_argument("--classes", type=int, default=11, help="number of classes (default: %(default)s)")
    p.set_defaults(func=cmd_models)


def add_explain_parser(sub) -> None:
    p = sub.add_parser("explain", help="figures that show how the building blocks work",
                       description="Render annotated PNG figures of a concept on small worked examples. "
                       "Example: pixelwise explain upsampling --out figures/")
    p.add_argument("topic", choices=("upsampling", "decoders"),
                   help="upsampling: the four operators; decoders: where fcn8s and context_fpn read the encoder")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the PNG figures")
    p.set_defaults(func=cmd_explain)


def add_demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="train, evaluate and predict on the bundled nuclei sample",
                       description="The whole flow on the bundled sample (16 tiles of a nuclei microscopy image): "
                       "trains FCN-8s/EfficientNet-Lite0, scores the held-out tiles, writes masks and overlays.")
    p.add_argument("--out", default="runs/demo", help="output folder (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=60, help="default: %(default)s")
    p.set_defaults(func=cmd_demo)


def build_parser(command: str | None = None, train_defaults: dict | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with `command` only that command's options in full: declaring train's
    choices imports the model zoo, losses and strategies, and data's the importers, which `pixelwise
    predict` has no use for. The other commands are still listed, with their one-line help.
    `train_defaults`: train's defaults from a --config file."""
    def wants(name: str) -> bool:
        return command is None or command == name

    parser = argparse.ArgumentParser(prog="pixelwise", description="Semantic segmentation for small labelled "
                                     "image sets. Run `pixelwise demo` to see the whole flow on a bundled sample.")
    sub = parser.add_subparsers(dest="command", required=True)

    add_train_parser(sub, wants("train"), train_defaults)
    add_advise_parser(sub)
    add_data_parser(sub, wants("data"))
    add_annotate_parser(sub)
    add_evaluate_parser(sub)
    add_predict_parser(sub)
    add_serve_parser(sub)
    add_export_parser(sub)
    add_models_parser(sub)
    add_explain_parser(sub)
    add_demo_parser(sub)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        args = build_parser(command, config_file_defaults(argv) if command == "train" else None).parse_args(argv)
        args.argv = argv
        args.func(args)
    except PixelwiseError as err:
        print(f"pixelwise: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pixelwise: interrupted; the last completed epoch is in last.pt (use --resume)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
