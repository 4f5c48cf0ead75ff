"""Training as plain functions: one epoch, one evaluation, and `fit`, which loops them.

Data flows: DatasetSpec -> datasets and joint transforms -> model -> loss -> optimizer step,
then per epoch: evaluate -> confusion matrix -> checkpoint -> curves.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from pixelwise.checkpoint import class_differences, config_differences, load_checkpoint, save_checkpoint
from pixelwise.config import CONFIG_FILE, TrainConfig, write_config_file
from pixelwise.data.checks import check_before_use
from pixelwise.data.dataset import SegmentationDataset, fits_in_memory
from pixelwise.data.formats import DatasetSpec, split_pairs
from pixelwise.data.io import write_atomic
from pixelwise.data.transforms import resolve_augment, to_tensors, train_transform
from pixelwise.data.unlabelled import UnlabelledDataset, collate_unlabelled, list_unlabelled, screen_pool
from pixelwise.errors import DataError, PixelwiseError
from pixelwise.evaluation import ConfusionMatrix, evaluate_engine
from pixelwise.models.registry import create_model
from pixelwise.runtime import (TorchEngine, autocast, depthwise_fp32_in_training, prepare_model, resolve_precision,
                               to_device)
from pixelwise.training import advisor, distributed, semi, strategies, tracking
from pixelwise.training.distributed import Dist
from pixelwise.training.losses import class_weights, segmentation_loss
from pixelwise.training.plots import plot_curves


# ---------------------------------------------------------------- data

def clamp_crop(crop_size, dataset: SegmentationDataset) -> tuple[int, int]:
    """Never crop larger than the smallest image: padding small images up wastes compute."""
    heights, widths = zip(*(dataset.load(i)[0].shape[:2] for i in range(len(dataset))))
    return min(crop_size[0], min(heights)), min(crop_size[1], min(widths))


# ---------------------------------------------------------------- schedule

def lr_factor(progress: float, warmup: float) -> float:
    """Linear warm-up, then poly(0.9) decay to 0 at progress 1 (as in DeepLab)."""
    if progress < warmup:
        return (progress + 1e-3) / (warmup + 1e-3)
    return max(0.0, 1 - (progress - warmup) / (1 - warmup)) ** 0.9


# ---------------------------------------------------------------- one epoch, one evaluation

LOW_RESOLUTION = 0.5  # --resolution-schedule's early phase: half the side, a quarter of the pixels
VAL_SHARE_INVERSE = 9  # --val-every 0: train 9x as long as a validation takes between validations
AUX_WEIGHT = 0.4  # each auxiliary head's share of the loss, as in PSPNet's deep supervision


class Diverged(PixelwiseError):
    """The loss became NaN or infinite: the weights of this step are not worth saving."""


def train_one_epoch(model, loader, loss_fn, optimizer, device, dtype, control: Callable[[int], tuple[float, bool]],
                    base_lrs: list[float], warmup: float, desc: str = "train", epoch: int = 0,
                    ctx: Dist = Dist(), after_step: Callable[[], None] | None = None,
                    consistency: semi.Consistency | None = None) -> dict:
    """One pass over `loader`. `control(step)` -> (schedule position in 0..1, stop now): the same on every
    rank, so all take the same steps at the same learning rate. `after_step()` runs after each optimizer step.
    With `consistency` each step also learns an unlabelled batch's confident pseudo-labels, in the same
    forward pass as the labelled batch; `loss` stays the supervised loss."""
    model.train()
    total_loss, images, steps = 0.0, 0, 0
    start = time.time()
    # Time spent waiting for the next batch: the share of the epoch the model sat idle for data.
    data_wait, asked = 0.0, time.perf_counter()
    bar = tqdm(loader, desc=desc, unit="batch", leave=False, dynamic_ncols=True, disable=not ctx.main)
    for step, (image, target) in enumerate(bar):
        data_wait += time.perf_counter() - asked
        progress, stop = control(step)
        if stop and steps:
            break
        factor = lr_factor(min(progress, 1.0), warmup)
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base * factor
        image, target = to_device(image, device, dtype), target.to(device, non_blocking=True)
        labelled = image.shape[0]
        loss, supervised = step_loss(model, image, target, loss_fn, device, dtype, consistency, step)
        if distributed.any_rank(not torch.isfinite(loss), ctx):
            bar.close()
            raise Diverged(f"training diverged in epoch {epoch}, step {step + 1} (loss {loss.item()}); "
                           f"lower --lr (now {base_lrs[0]:g}), e.g. --lr {base_lrs[0] / 10:g}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step()
        total_loss += supervised.item() * labelled
        images += labelled
        steps += 1
        rate = images / max(time.time() - start, 1e-9)
        bar.set_postfix(loss=f"{total_loss / images:.3f}", img_s=f"{rate:.1f}")
        asked = time.perf_counter()
    bar.close()
    seconds = time.time() - start
    # images/s of the whole job: every rank trained as many images as this one
    return {"loss": total_loss / max(images, 1), "images": images * ctx.world, "steps": steps, "seconds": seconds,
            "images_per_s": images * ctx.world / max(seconds, 1e-9), "data_wait_share": data_wait / max(seconds, 1e-9),
            **(consistency.epoch_stats() if consistency is not None else {})}


def step_loss(model, image, target, loss_fn, device, dtype, consistency: semi.Consistency | None = None,
              step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The labelled batch's loss, its auxiliary heads' included, and with `consistency` the unlabelled
    batch's beside it, both from one forward pass (BatchNorm sees the two halves together).
    -> (the loss to step on, the supervised part of it)"""
    labelled = image.shape[0]
    if consistency is not None:
        strong, pseudo, confident = consistency.views(step, device, dtype)
        image = torch.cat([image, strong])
    with autocast(device, dtype):
        logits = model(image)
    loss = loss_fn(logits[:labelled].float(), target)
    for aux in getattr(getattr(model, "module", model), "aux_logits", []):  # DDP wraps the model
        loss = loss + AUX_WEIGHT * loss_fn(aux[:labelled].float(), target)
    if consistency is None:
        return loss, loss
    return loss + consistency.loss(logits[labelled:], pseudo, confident), loss


@torch.no_grad()
def evaluate(model, dataset: SegmentationDataset, device, dtype, batch_size: int = 8, scale: float = 1.0,
             desc: str = "evaluate", ctx: Dist = Dist()) -> ConfusionMatrix:
    """Confusion matrix over `dataset` at full resolution, the way `pixelwise evaluate` scores it. With
    several ranks each scores every world-th image and the matrices are summed: the metrics are exact."""
    model.eval()
    distributed.broadcast_buffers(model, ctx)
    matrix = ConfusionMatrix(dataset.num_classes, dataset.ignore_index)
    evaluate_engine(TorchEngine.prepared(model, device, dtype, scale), dataset, matrix, batch_size, desc,
                    indices=range(ctx.rank, len(dataset), ctx.world), progress=ctx.main)
    distributed.all_reduce_sum(matrix.matrix, ctx)
    return matrix


# ---------------------------------------------------------------- the loop

def build_model(cfg: TrainConfig, num_classes: int) -> torch.nn.Module:
    model = create_model(cfg.model, backbone=cfg.backbone, num_classes=num_classes, upsample=cfg.upsample,
                         pretrained=cfg.pretrained and cfg.strategy != "scratch",
                         backbone_weights=cfg.backbone_weights, freeze_upsample=cfg.freeze_upsample)
    if cfg.init_from:
        source = load_checkpoint(cfg.init_from)["model"]
        own = model.state_dict()
        usable = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(usable, strict=False)
    return model


def prepare_data(cfg: TrainConfig, spec: DatasetSpec, device: torch.device, log: Callable[[str], None] = print,
                 ctx: Dist = Dist()):
    """Checked dataset -> (spec, train set with joint transforms, val set, train loader, weighted loss, the
    augmentation `--augment` resolved to). Every image and mask is read here, before any training."""
    train_pairs, val_pairs = split_pairs(spec, log)
    cache = fits_in_memory(train_pairs + val_pairs)
    if not cache:
        log("the dataset is too large to keep decoded in memory: images are decoded every epoch "
            "(consider --workers 2 or more)")
    train_set = SegmentationDataset(train_pairs, spec.num_classes, spec.ignore_index, cache=cache, seed=cfg.seed,
                                    decoded=spec.decoded)
    val_set = SegmentationDataset(val_pairs, spec.num_classes, spec.ignore_index, cache=cache, decoded=spec.decoded)
    train_set.preload("reading train")
    val_set.preload("reading val")
    crop = clamp_crop(cfg.crop_size, train_set)
    masks = (train_set.load(i)[1] for i in range(len(train_set.pairs)))
    augment = resolve_augment(cfg.augment, masks, spec.num_classes, log)
    train_set.transform = train_transform(crop, cfg.scale_range, spec.ignore_index, cfg.jitter,
                                          top_down=augment == "top-down", colour=cfg.colour)
    weights = class_weights(train_set.class_pixel_counts(), cfg.class_weighting)
    log(f"augmentation: scale {cfg.scale_range[0]:g}-{cfg.scale_range[1]:g}, crop {crop[0]}x{crop[1]}, "
        f"{'flips both ways and 90-degree turns' if augment == 'top-down' else 'horizontal flips'}; "
        f"class weights ({cfg.class_weighting}): "
        + ("none" if weights is None else " ".join(f"{w:.2f}" for w in weights.tolist())))
    loss_fn = segmentation_loss(weights.to(device) if weights is not None else None, spec.ignore_index, cfg.loss)

    # The order of an epoch is a function of (seed, epoch), as is each sample's augmentation: one process
    # and N processes, fresh or resumed, see the same global batches.
    batch = min(cfg.batch_size, len(train_set))
    if batch % ctx.world:
        raise PixelwiseError(f"--batch-size {batch} does not split over {ctx.world} processes; "
                             f"use a multiple of {ctx.world}")
    return spec, train_set, val_set, train_loader(train_set, cfg, ctx), loss_fn, augment


def train_loader(train_set: SegmentationDataset, cfg: TrainConfig, ctx: Dist = Dist()) -> DataLoader:
    """Each rank's share of every epoch, in an order that is a function of (seed, epoch)."""
    batch = min(cfg.batch_size, len(train_set))
    sampler = DistributedSampler(train_set, num_replicas=ctx.world, rank=ctx.rank, shuffle=True, seed=cfg.seed,
                                 drop_last=True)
    generator = torch.Generator().manual_seed(cfg.seed)  # worker seeds
    return DataLoader(train_set, batch_size=batch // ctx.world, sampler=sampler, drop_last=True,
                      num_workers=cfg.workers, generator=generator)


def unlabelled_loader(cfg: TrainConfig, spec: DatasetSpec, train_set: SegmentationDataset, log: Callable[[str], None],
                      ctx: Dist = Dist()) -> tuple[DataLoader | None, list[Path]]:
    """The --unlabelled pool, screened for copies of val and test images, as a loader of weak views (the
    labelled set's own transform, so the resolution schedule moves both) -> (loader or None, pool paths).
    Each rank walks its own share of the pool."""
    if not cfg.unlabelled:
        return None, []
    if cfg.semi_method not in semi.SEMI_METHODS:
        raise PixelwiseError(f"--semi {cfg.semi_method}: choose {' or '.join(semi.SEMI_METHODS)}")
    held_out = [image for split in ("val", "test") for image, _ in spec.splits.get(split, [])]
    listed = list_unlabelled(cfg.unlabelled)  # on every rank: a missing folder stops them all alike
    # every image is hashed once, on rank 0 (screen_pool never raises); the others take its verdict
    pool = distributed.broadcast_object(screen_pool(listed, held_out, spec.decoded) if ctx.main else None, ctx)
    for copy, original in pool.leaked:
        log(f"leakage: unlabelled {copy} copies {original}; left out")
    for path, reason in pool.unreadable:
        log(f"unreadable: {path} ({reason}); left out")
    if not pool.paths:
        raise DataError(f"--unlabelled {', '.join(cfg.unlabelled)}: no usable image ({pool.summary()})")
    threshold = semi.threshold_for(cfg.semi_method, cfg.pseudo_threshold)
    if cfg.semi_method == "self-training":
        kept = f"pixels under {threshold:g} confidence left out" if threshold > 0 else "every pixel kept"
        log(f"semi-supervised (self-training): {len(train_set)} labelled and {pool.summary()}; the model labels "
            f"the pool once, {semi.TEACHER_SHARE:.0%} of the way through the run, {kept}")
        return None, pool.paths  # no per-step loader: the pool joins the training set
    log(f"semi-supervised: {len(train_set)} labelled and {pool.summary()}; pseudo-labels need "
        f"{threshold:g} confidence")
    dataset = UnlabelledDataset(pool.paths, train_set.transform, seed=cfg.seed, ignore_index=spec.ignore_index)
    batch = min(cfg.batch_size, len(train_set)) // ctx.world
    sampler = DistributedSampler(dataset, num_replicas=ctx.world, rank=ctx.rank, shuffle=True, seed=cfg.seed)
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=cfg.workers,
                        collate_fn=collate_unlabelled, drop_last=len(sampler) >= batch)
    return loader, pool.paths


def resolve_strategy(cfg: TrainConfig, spec: DatasetSpec, out: Path, log: Callable[[str], None]) -> TrainConfig:
    """`auto` becomes the advisor's pick, written to out/advice.json."""
    if cfg.strategy != "auto":
        return cfg
    if not (cfg.pretrained or cfg.backbone_weights):
        log("strategy auto: no pretrained weights to transfer, so every layer trains from scratch")
        return replace(cfg, strategy="scratch")
    try:
        advice = advisor.advise(spec, cfg.backbone, backbone_weights=cfg.backbone_weights, log=log)
    except DataError:
        raise  # the data's problem, named as such, not the backbone's
    except PixelwiseError as error:
        log(f"strategy auto: the advisor cannot measure this backbone ({error}); training everything (full)")
        return replace(cfg, strategy="full")
    advisor.write_advice(advice, out / "advice.json")
    log(f"strategy auto: {advice.summary()} ({out / 'advice.json'})")
    return replace(cfg, strategy=advice.strategy)


# ---------------------------------------------------------------- the state a checkpoint restores

def capture_rng(loader_generator: torch.Generator) -> dict:
    """Every random stream training draws from, as plain types and tensors (weights_only-loadable)."""
    numpy_state = np.random.get_state(legacy=False)
    state = {"python": random.getstate(), "torch": torch.get_rng_state(), "loader": loader_generator.get_state(),
             "numpy": {"bit_generator": numpy_state["bit_generator"], "key": numpy_state["state"]["key"].tolist(),
                       "pos": numpy_state["state"]["pos"], "has_gauss": numpy_state["has_gauss"],
                       "gauss": numpy_state["gauss"]}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, loader_generator: torch.Generator) -> None:
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    torch.set_rng_state(state["torch"])
    loader_generator.set_state(state["loader"])
    n = state["numpy"]
    np.random.set_state({"bit_generator": n["bit_generator"], "has_gauss": n["has_gauss"], "gauss": n["gauss"],
                         "state": {"key": np.asarray(n["key"], dtype=np.uint32), "pos": n["pos"]}})
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class TrainState:
    """Where training stands after a completed epoch: with the weights and the optimizer, this is all a
    resumed run needs to continue exactly as if it had never stopped."""
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    elapsed_s: float = 0.0  # training time spent, validation included: the time budget counts it
    best_mean_iou: float = -1.0
    last_loss: float | None = None  # the mean training loss of the last epoch
    history: list = field(default_factory=list)  # one entry per validated epoch
    rng: dict = field(default_factory=dict)  # python, numpy, torch and loader-generator states
    pseudo_labelled: bool = False  # --semi self-training: the pool is labelled and trains beside the labels

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "TrainState":
        if "state" in ckpt:
            return cls(**ckpt["state"])
        # checkpoints from before TrainState: no RNG states, so the resume is close but not exact
        return cls(epoch=ckpt["epoch"], elapsed_s=ckpt["elapsed_s"], best_mean_iou=ckpt["best_mean_iou"],
                   history=ckpt["history"])


@dataclass
class Run:
    """A training run, set up: what the epoch loop works on."""
    cfg: TrainConfig
    out: Path
    spec: DatasetSpec
    model: torch.nn.Module  # the network itself: evaluated and saved
    trained: torch.nn.Module  # what the optimizer steps through: DDP around `model` on several ranks
    optimizer: torch.optim.Optimizer
    base_lrs: list[float]
    loader: DataLoader
    loss_fn: Callable
    train_set: SegmentationDataset
    val_set: SegmentationDataset
    device: torch.device
    dtype: torch.dtype | None
    state: TrainState
    ctx: Dist = Dist()
    skipped: list = field(default_factory=list)  # data problems whose pairs --skip-bad left out
    ema: AveragedModel | None = None  # the moving average of the weights (--ema), when there is one
    consistency: semi.Consistency | None = None  # learning from the --unlabelled pool, when there is one
    pool: list[Path] = field(default_factory=list)  # the unlabelled images it draws from
    trackers: tracking.Trackers | None = None  # --log: TensorBoard, MLflow (rank 0 only)

    @property
    def evaluated(self) -> torch.nn.Module:
        """What is validated and saved as the model: the weights' moving average if there is one."""
        return self.model if self.ema is None else self.ema.module


# ---------------------------------------------------------------- setup, loop, saving

def check_resumable(ckpt: dict, cfg: TrainConfig, spec: DatasetSpec, path: Path) -> None:
    """A checkpoint resumes only the run it came from: list every difference rather than crash in load_state_dict."""
    diffs = config_differences(ckpt["config"], cfg) + class_differences(ckpt["class_names"], spec.class_names)
    if diffs:
        raise PixelwiseError(f"cannot resume from {path}: its run differs from this one\n  - " + "\n  - ".join(diffs)
                             + "\nresume with the checkpoint's settings, or start a new run with --overwrite "
                             "or another --out")


def resume_decision(out: Path, resume: bool | str, overwrite: bool, log: Callable[[str], None]) -> bool:
    """Whether this run continues OUT/last.pt; refuses to start over a run it was not told to replace."""
    last = out / "last.pt"
    if resume == "auto":
        resume = last.is_file()
        if resume:
            log(f"--resume auto: continuing the run in {out}")
    elif resume and not last.is_file():
        raise PixelwiseError(f"nothing to resume in {out} (no last.pt); drop --resume, or use --resume auto")
    if last.is_file() and not (resume or overwrite):
        raise PixelwiseError(f"{out} already holds a training run (last.pt); continue it with --resume, "
                             "replace it with --overwrite, or choose another --out")
    return bool(resume)


def seed_everything(cfg: TrainConfig) -> None:
    if cfg.deterministic:
        if cfg.time_budget:
            raise PixelwiseError("--deterministic needs --epochs: a --time-budget ties the schedule to the clock")
        torch.use_deterministic_algorithms(True)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)


def build_trainable(cfg: TrainConfig, num_classes: int, model: torch.nn.Module | None, device, dtype):
    """-> (the model on its device, its optimizer parameter groups, depthwise convolutions kept in fp32)."""
    if model is None:
        model = build_model(cfg, num_classes)
        strategies.apply_strategy(model, cfg.strategy, cfg.trainable_stages)
        groups = strategies.parameter_groups(model, cfg.lr, cfg.strategy, cfg.lr_ratio)
    else:  # a model from outside the registry (a benchmark's peer) trains whole, at one rate
        groups = [{"params": list(model.parameters()), "lr": cfg.lr}]
    if cfg.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = prepare_model(model, device, dtype)
    fp32_depthwise = depthwise_fp32_in_training(model) if device.type == "cpu" and dtype is not None else 0
    return model, groups, fp32_depthwise


def restore(ckpt: dict, model, optimizer, loader: DataLoader, ema: AveragedModel | None = None) -> TrainState:
    """Weights, optimizer, progress and every random stream from a checkpoint."""
    model.load_state_dict(ckpt.get("trained_model", ckpt["model"]))  # with --ema, "model" is the average
    if ema is not None:
        ema.load_state_dict(ckpt["ema"])
    optimizer.load_state_dict(ckpt["optimizer"])
    state = TrainState.from_checkpoint(ckpt)
    if state.rng:
        restore_rng(state.rng, loader.generator)
    return state


def setup(cfg: TrainConfig, resume: bool | str = False, model: torch.nn.Module | None = None,
          log: Callable[[str], None] = print, overwrite: bool = False) -> Run:
    """Data, model, optimizer and state, restored from OUT/last.pt when resuming.

    `resume`: False (a new run; an existing one is refused unless `overwrite`), True (continue OUT/last.pt,
    which must exist) or "auto" (continue it if it exists, else start): a scheduler can rerun one command.
    """
    ctx, device = distributed.init(cfg.device)
    if not ctx.main:
        log = _quiet
    distributed.check_sync_bn(cfg.sync_bn, device)
    out = Path(cfg.out)
    resume = resume_decision(out, resume, overwrite, log)
    seed_everything(cfg)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = load_checkpoint(out / "last.pt") if resume else None
    if ckpt is not None and cfg.strategy == "auto":
        cfg = replace(cfg, strategy=ckpt["config"]["strategy"])  # a resumed run keeps the strategy it chose
    # every data problem, named, before any work; with --skip-bad the pairs they touch are left out
    checked, skipped = check_before_use(cfg.data, cfg.format, log, skip_bad=cfg.skip_bad, keep_decoded=True)
    if model is None:
        # the advisor runs once, on rank 0; the others take its decision
        cfg = distributed.broadcast_object(resolve_strategy(cfg, checked, out, log) if ctx.main else None, ctx)
    dtype = resolve_precision(cfg.precision, device)
    spec, train_set, val_set, loader, loss_fn, augment = prepare_data(cfg, checked, device, log, ctx)
    resolved = write_resolved_config(cfg, out, augment, device, dtype) if ctx.main else {}
    if ckpt is not None:
        check_resumable(ckpt, cfg, spec, out / "last.pt")
    model, groups, fp32_depthwise = build_trainable(cfg, spec.num_classes, model, device, dtype)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True) if cfg.ema else None
    pool_loader, pool = unlabelled_loader(cfg, spec, train_set, log, ctx)
    # the teacher that pseudo-labels: the moving average where there is one, steadier than the weights
    consistency = semi.Consistency(pool_loader, model if ema is None else ema.module, cfg.seed, ctx.rank,
                                   semi.threshold_for(cfg.semi_method, cfg.pseudo_threshold)) \
        if pool_loader is not None and cfg.semi_method == "consistency" else None
    if ckpt is not None and ckpt.get("state", {}).get("pseudo_labelled"):
        loader = add_pseudo_labels(cfg, out, pool, train_set, ctx)  # the pool's labels are on disk already
    state = TrainState()
    if ckpt is not None:
        state = restore(ckpt, model, optimizer, loader, ema)
        log(f"resuming from {out / 'last.pt'} after epoch {state.epoch}")
    processes = f" x {ctx.world} processes" if ctx.enabled else ""
    log(f"training {cfg.model}/{cfg.backbone} on {len(train_set.pairs)} images ({spec.format}: {spec.root}), "
        f"validating on {len(val_set)}; batch {loader.batch_size}{processes}, "
        f"{'bf16 autocast' if dtype else 'fp32'}{' (depthwise convolutions fp32)' if fp32_depthwise else ''} "
        f"on {device}; "
        + (f"budget {cfg.time_budget:g} min" if cfg.time_budget else f"{cfg.epochs} epochs"))
    trackers = tracking.Trackers(cfg.log_to, out, resolved, state.epoch if ckpt is not None else None, log) \
        if ctx.main and cfg.log_to else None
    return Run(cfg, out, spec, model, distributed.wrap(model, ctx, device), optimizer, base_lrs, loader, loss_fn,
               train_set, val_set, device, dtype, state, ctx, skipped, ema, consistency, pool, trackers)


def write_resolved_config(cfg: TrainConfig, out: Path, augment: str, device: torch.device, dtype) -> dict:
    """OUT/config.yaml with every auto decision written out: `train --config` reruns the run without
    measuring again (the strategy is already the advisor's pick in `cfg`). -> the values written"""
    precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
    return write_config_file(cfg, out / CONFIG_FILE, resolved={"augment": augment, "device": device.type,
                                                        "precision": precision})


def _quiet(_: str) -> None:
    """The log of ranks other than 0."""


def save_epoch(run: Run, improved: bool, validated: bool) -> None:
    """Every epoch writes last.pt (validated or not), so a crash loses at most one epoch; best.pt, the
    history and the curves change only when there is a new validation score. Rank 0 alone writes."""
    if not run.ctx.main:
        return
    run.state.rng = capture_rng(run.loader.generator)
    ckpt = {"model": run.evaluated.state_dict(), "optimizer": run.optimizer.state_dict(), "state": run.state.to_dict(),
            "config": run.cfg.to_dict(), "model_config": run.cfg.model_config.to_dict(),
            "infer_scale": run.cfg.infer_scale, "infer_flip": run.cfg.infer_flip,
            "class_names": list(run.spec.class_names),
            "ignore_index": run.spec.ignore_index, "palette": run.spec.palette.tolist()}
    if run.ema is not None:  # the weights the optimizer steps, and the average's own count, to resume
        ckpt |= {"trained_model": run.model.state_dict(), "ema": run.ema.state_dict()}
    save_checkpoint(run.out / "last.pt", **ckpt)
    if improved:
        save_checkpoint(run.out / "best.pt", **ckpt)
    if validated:
        plot_curves(run.state.history, run.out / "curves.png")
        (run.out / "history.json").write_text(json.dumps(run.state.history, indent=1))
    write_progress(run, validated)


PROGRESS_FILE = "progress.json"  # what a watcher (the annotation app's retrain) follows; never the log's text


def write_progress(run: Run, validated: bool) -> None:
    """OUT/progress.json after every epoch, replaced atomically: the epoch, its loss and the scores so far."""
    last = run.state.history[-1] if run.state.history else {}
    progress = {"epoch": run.state.epoch, "step": run.state.step, "loss": run.state.last_loss,
                "val_miou": last.get("val_mean_iou") if validated else None,
                "best_miou": run.state.best_mean_iou if run.state.history else None,
                "elapsed_min": run.state.elapsed_s / 60}
    write_atomic(run.out / PROGRESS_FILE, lambda tmp: tmp.write_text(json.dumps(progress)))


@dataclass
class Clock:
    """The time budget as rank 0 sees it: what is spent, and where each step sits in the schedule."""
    budget_s: float | None  # None: an epoch count ends training instead
    t0: float  # when training started, moved back by the time a resumed run had already spent
    epoch_s: float = 0.0  # the last epoch's training time
    val_s: float = 0.0  # the last validation's time (0 until the first)
    trained_since_val_s: float = 0.0  # training time since the last validation

    def due(self, epoch: int, val_every: int, ctx: Dist = Dist()) -> bool:
        """Whether epoch (0-based) is validated: every `val_every` epochs, or with 0 whenever the training since
        the last validation took VAL_SHARE_INVERSE times as long as a validation (so validating takes at most
        about a tenth of the time); always the first of a run, to learn what a validation costs. The clock
        is rank 0's, so every rank validates together."""
        if not self.val_s:
            return True
        if val_every:
            return (epoch + 1) % val_every == 0
        due = self.trained_since_val_s >= VAL_SHARE_INVERSE * self.val_s
        return bool(distributed.broadcast_floats([float(due)], ctx)[0])

    def spent(self, ctx: Dist) -> bool:
        """Too little left for a useful (partial) epoch and its validation; rank 0 decides for all."""
        spent = bool(self.budget_s) and self.budget_s - (time.time() - self.t0) < self.val_s + 0.25 * self.epoch_s
        return bool(distributed.broadcast_floats([float(spent)], ctx)[0])

    def control(self, epoch: int, steps_per_epoch: int, epochs: int, ctx: Dist) -> Callable[[int], tuple[float, bool]]:
        """`control(step)` for `train_one_epoch`: schedule position and whether the budget ran out."""
        deadline = self.t0 + self.budget_s - self.val_s if self.budget_s else None

        def control(step: int) -> tuple[float, bool]:
            if not self.budget_s:
                return (epoch + step / steps_per_epoch) / epochs, False
            progress, stop = distributed.broadcast_floats(
                [(time.time() - self.t0) / self.budget_s, float(time.time() > deadline)], ctx)
            return progress, bool(stop)

        return control


def add_pseudo_labels(cfg: TrainConfig, out: Path, pool: list[Path], train_set: SegmentationDataset,
                      ctx: Dist) -> DataLoader:
    """The pool images with a mask in OUT/pseudo_labels join the training set. -> the loader over both"""
    folder = out / semi.PSEUDO_LABELS
    semi.check_manifest(folder, pool)  # a resumed run's pool must be the one its masks were made for
    pairs = [(image, semi.pseudo_label_file(folder, i)) for i, image in enumerate(pool)
             if semi.pseudo_label_file(folder, i).is_file()]
    train_set.extend(pairs, cache=fits_in_memory(train_set.pairs + pairs), labelled_share=semi.LABELLED_SHARE,
                     strong_view=semi.strong_view)
    return train_loader(train_set, cfg, ctx)


def self_training_due(run: Run, progress: float) -> bool:
    return bool(run.pool) and run.cfg.semi_method == "self-training" and not run.state.pseudo_labelled \
        and progress >= semi.TEACHER_SHARE


def pseudo_label(run: Run, log: Callable[[str], None]) -> None:
    """Offline self-training's switch: the model as it stands labels the pool (each rank its share, as
    `--profile accurate` predicts: inference scale and flip), then the pool trains beside the labels."""
    start = time.time()
    run.evaluated.eval()
    distributed.broadcast_buffers(run.evaluated, run.ctx)  # every rank labels with rank 0's statistics
    folder = run.out / semi.PSEUDO_LABELS
    if run.ctx.main:
        semi.write_manifest(folder, run.pool)
    distributed.broadcast_object(None, run.ctx)  # no rank writes a mask before the folder is fresh
    engine = TorchEngine.prepared(run.evaluated, run.device, run.dtype, run.cfg.infer_scale)
    engine.flip = run.cfg.infer_flip
    written, confident, unreadable = semi.pseudo_label_pool(
        engine, run.pool, folder, run.spec.palette, run.spec.ignore_index,
        range(run.ctx.rank, len(run.pool), run.ctx.world), semi.threshold_for(run.cfg.semi_method,
                                                                              run.cfg.pseudo_threshold),
        progress=run.ctx.main)
    counts = distributed.all_reduce_sum(torch.tensor([float(written), confident * written]), run.ctx)  # all done
    for path in unreadable:
        log(f"unreadable: {path}; left out")
    run.loader = add_pseudo_labels(run.cfg, run.out, run.pool, run.train_set, run.ctx)
    run.state.pseudo_labelled = True
    train_set = run.train_set
    log(f"self-training: the model labelled {int(counts[0])} pool images in {time.time() - start:.0f} s "
        f"({counts[1] / max(counts[0], 1):.0%} of pixels confident); training goes on with "
        f"{len(train_set.pairs)} images, each epoch the {train_set.labelled} labelled "
        f"{'once' if train_set.labelled_repeats == 1 else f'{train_set.labelled_repeats} times'} each and the "
        f"{len(train_set.pairs) - train_set.labelled} pseudo-labelled strongly augmented")


def validate_epoch(run: Run, epoch: int, stats: dict, clock: Clock) -> tuple[dict, bool]:
    """Score val, record the epoch in the history, tell the trackers. -> (scores, whether they beat the best
    so far)."""
    state = run.state
    v0 = time.time()
    matrix = evaluate(run.evaluated, run.val_set, run.device, run.dtype, run.cfg.batch_size, run.cfg.infer_scale,
                      ctx=run.ctx)
    scores = matrix.compute(run.spec.class_names)
    clock.val_s, clock.trained_since_val_s = time.time() - v0, 0.0
    improved = scores["mean_iou"] > state.best_mean_iou
    state.best_mean_iou = max(state.best_mean_iou, scores["mean_iou"])
    state.history.append({"epoch": epoch + 1, "train_loss": stats["loss"], "val_mean_iou": scores["mean_iou"],
                          "val_pixel_accuracy": scores["pixel_accuracy"],
                          "images_per_s": stats["images_per_s"], "data_wait_share": stats["data_wait_share"],
                          "lr": run.optimizer.param_groups[0]["lr"],
                          "elapsed_min": (time.time() - clock.t0) / 60,
                          **{k: stats[k] for k in ("unlabelled_loss", "confident_share") if k in stats}})
    if run.trackers is not None:
        run.trackers.epoch(tracking.EpochRecord(
            epoch + 1, tracking.epoch_metrics(state.history[-1], scores), matrix.matrix.numpy(), improved,
            (lambda: validation_overlays(run)) if run.trackers.wants_overlays else None))
    return scores, improved


OVERLAY_IMAGES = 4  # validation images in a tracker's picture of the predictions


def validation_overlays(run: Run) -> np.ndarray:
    """The evaluated model's masks on a few validation images, spread over the set and the same each
    epoch, beside their ground truth (`tracking.overlay_grid`)."""
    engine = TorchEngine.prepared(run.evaluated, run.device, run.dtype, run.cfg.infer_scale)
    count = min(OVERLAY_IMAGES, len(run.val_set))
    triples = []
    for index in np.linspace(0, len(run.val_set) - 1, count).round().astype(int):
        image, mask = run.val_set.load(int(index))
        with torch.no_grad():
            prediction = engine.logits(to_tensors(image, mask)[0][None]).argmax(1)[0].cpu().numpy()
        triples.append((image, prediction.astype(np.uint8), np.asarray(mask)))
    return tracking.overlay_grid(triples, run.spec.palette, run.spec.ignore_index)


def epoch_line(epoch: int, stats: dict, scores: dict | None, improved: bool, elapsed_s: float) -> str:
    """The log's line for an epoch: for people to read; watchers follow progress.json."""
    return (f"epoch {epoch + 1:3d}  loss {stats['loss']:.4f}  "
            + (f"unlabelled loss {stats['unlabelled_loss']:.4f} ({stats['confident_share']:.0%} confident)  "
               if "unlabelled_loss" in stats else "")
            + (f"val mIoU {scores['mean_iou']:.4f}{' *' if improved else '  '}  " if scores else "")
            + f"{stats['images_per_s']:.1f} img/s ({stats['data_wait_share']:.0%} waiting for data)  "
            + f"{elapsed_s / 60:.1f} min")


def train_epochs(run: Run, log: Callable[[str], None] = print) -> None:
    """The epoch loop: train, validate every `val_every` epochs, save; until the epochs or the budget run out."""
    cfg, state = run.cfg, run.state
    clock = Clock(cfg.time_budget * 60 if cfg.time_budget else None, time.time() - state.elapsed_s)
    # A time budget replaces the epoch count: training runs until the budget is spent.
    total_epochs = 10**6 if clock.budget_s else cfg.epochs
    for epoch in range(state.epoch, total_epochs):
        if clock.spent(run.ctx):
            log(f"time budget reached: stopping after epoch {epoch} ({(time.time() - clock.t0) / 60:.1f} min)")
            break
        if self_training_due(run, clock.control(epoch, len(run.loader), cfg.epochs, run.ctx)(0)[0]):
            pseudo_label(run, log)  # a new loader: the epoch is set on it below
        run.loader.sampler.set_epoch(epoch)
        run.train_set.epoch = epoch
        control = clock.control(epoch, len(run.loader), cfg.epochs, run.ctx)
        if cfg.resolution_schedule:
            resolution = LOW_RESOLUTION if control(0)[0] < cfg.resolution_schedule else 1.0
            run.train_set.transform.at_resolution(resolution)
            log(f"resolution schedule: epoch {epoch + 1} at {resolution:g}x")
        if cfg.strategy == "progressive":
            unfrozen = strategies.progressive_unfreeze(run.model, control(0)[0])
            log(f"progressive: {len(unfrozen)} of {len(run.model.encoder.stage_prefixes)} encoder stages training")
            run.trained = distributed.wrap(run.model, run.ctx, run.device)  # DDP must see the new trainable set
        if run.consistency is not None:
            run.consistency.start_epoch(epoch)
        stats = train_one_epoch(run.trained, run.loader, run.loss_fn, run.optimizer, run.device, run.dtype,
                                control, run.base_lrs, cfg.warmup, epoch=epoch + 1, ctx=run.ctx,
                                after_step=None if run.ema is None else lambda: run.ema.update_parameters(run.model),
                                desc=f"epoch {epoch + 1}" + ("" if clock.budget_s else f"/{cfg.epochs}"),
                                consistency=run.consistency)
        clock.epoch_s = stats["seconds"]
        clock.trained_since_val_s += stats["seconds"]
        state.epoch, state.step, state.last_loss = epoch + 1, state.step + stats["steps"], stats["loss"]
        # validate every val_every epochs, always the first of a run (to learn its cost) and the last
        last = epoch + 1 == total_epochs or clock.spent(run.ctx)
        validate = last or clock.due(epoch, cfg.val_every, run.ctx)
        scores, improved = validate_epoch(run, epoch, stats, clock) if validate else (None, False)
        state.elapsed_s = time.time() - clock.t0
        save_epoch(run, improved, validate)
        log(epoch_line(epoch, stats, scores, improved, state.elapsed_s))


def fit(cfg: TrainConfig, resume: bool | str = False, model: torch.nn.Module | None = None,
        log: Callable[[str], None] = print, overwrite: bool = False) -> dict:
    """Train per `cfg`, writing last.pt, best.pt, history.json and curves.png to cfg.out.

    `model` overrides the registry (benchmarks train peers through the same loop).
    Returns a summary dict with the best validation mean IoU.
    """
    run = setup(cfg, resume, model, log, overwrite)
    if not run.ctx.main:
        log = _quiet
    start_epoch = run.state.epoch
    finished = False
    try:
        train_epochs(run, log)
        finished = True
    except Diverged as err:
        kept = f"the last good epoch ({run.state.epoch}) is kept in {run.out / 'last.pt'}" \
            if (run.out / "last.pt").is_file() else "no epoch completed, so no checkpoint was written"
        raise PixelwiseError(f"{err}; {kept}") from None
    finally:
        if run.trackers is not None:
            run.trackers.finish(run.out, run.spec.class_names, finished)
        distributed.shutdown()
    if run.state.epoch == start_epoch:
        raise PixelwiseError(f"{run.out}: nothing trained (already at epoch {start_epoch} of {cfg.epochs}?)")
    if run.pool and cfg.semi_method == "self-training" and not run.state.pseudo_labelled:
        log(f"self-training: the run ended before the pool was labelled ({semi.TEACHER_SHARE:.0%} of the way "
            "through): give it more epochs or minutes for the pool to teach")
    unreadable = sorted(run.consistency.unreadable) if run.consistency is not None else []
    if unreadable:
        log(f"{len(unreadable)} unlabelled image{'s' if len(unreadable) > 1 else ''} could not be read during "
            "training and taught nothing:")
        for index in unreadable:
            log(f"  {run.pool[index]}")
    if run.skipped:
        log(f"--skip-bad left out {len(run.skipped)} problem file{'s' if len(run.skipped) > 1 else ''}:")
        for problem in run.skipped:
            log(f"  {problem.line()}")
    return {"best_mean_iou": run.state.best_mean_iou, "epochs": run.state.epoch, "minutes": run.state.elapsed_s / 60,
            "out": str(run.out), "best_checkpoint": str(run.out / "best.pt"),
            "skipped": [str(p.path) for p in run.skipped]}
