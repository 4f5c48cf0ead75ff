"""Configuration as frozen dataclasses, saved inside every checkpoint as plain types: the network's own
(`ModelConfig`, all that inference needs besides the class names) apart from the run's (`TrainConfig`)."""
from __future__ import annotations

import difflib
import types
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

from pixelwise.errors import PixelwiseError


@dataclass(frozen=True)
class ModelConfig:
    """The network alone: with the number of classes, enough to rebuild it from the registry."""
    model: str = "fcn8s"
    backbone: str = "efficientnet_lite0"
    upsample: str | None = None  # None: the architecture's own (transposed for FCNs, unpool for SegNet)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class TrainConfig:
    data: str
    out: str = "runs/train"
    format: str = "auto"
    model: str = "fcn8s"
    backbone: str = "efficientnet_lite0"
    upsample: str | None = None  # None: the architecture's own (transposed for FCNs, unpool for SegNet)
    freeze_upsample: bool = False  # transposed kernels stay bilinear
    pretrained: bool = True
    backbone_weights: str | None = None
    strategy: str = "auto"  # auto (measured by the advisor) | head | last-k | full | scratch | progressive
    trainable_stages: int = 2  # encoder stages that train under last-k
    lr_ratio: float = 1.0  # under full, each earlier encoder stage learns at this fraction of the next one's rate
    epochs: int = 80  # ignored when time_budget is set: then the budget alone ends training
    time_budget: float | None = None  # minutes, validation included
    val_every: int = 1  # epochs between validations, 0: keep validation to ~10% of the time (first and last always)
    batch_size: int = 8
    lr: float = 1e-3  # AdamW; peak after warm-up, then poly decay to 0 at the end of the budget
    weight_decay: float = 1e-4
    warmup: float = 0.03  # fraction of training spent ramping the learning rate up
    crop_size: tuple[int, int] = (352, 480)  # clamped to the image size, so small images are not padded
    scale_range: tuple[float, float] = (1.0, 2.25)  # upscaled training: thin objects (poles, signs) get pixels
    infer_scale: float = 1.75  # evaluate and predict on upscaled inputs, inside the training scale range
    infer_flip: bool = False  # --profile accurate averages the mirror image's logits too (flip TTA)
    jitter: float = 0.2  # brightness/contrast jitter strength
    # share of training at LOW_RESOLUTION (scales and crop shrunk together: ~4x cheaper steps) before full
    # resolution; 0: full resolution throughout
    resolution_schedule: float = 0.0
    colour: float = 0.0  # per-channel gain and saturation jitter strength (another day's light); 0: none
    # upright (horizontal flips) | top-down (+ vertical flips, 90° turns) | auto (decided from the labels). Not auto
    # by default: on the nuclei sample top-down did not pay (benchmarks/results/augment.json)
    augment: str = "upright"
    class_weighting: str = "sqrt-median"  # rare classes matter for mean IoU; full median weighting overshoots
    loss: str = "ce"  # ce (every labelled pixel) | ohem (the pixels still predicted wrong)
    unlabelled: tuple[str, ...] = ()  # folders of images without masks, learnt through pseudo-labels
    semi_method: str = "consistency"  # how: consistency (each step) | self-training (label the pool once, mid-run)
    pseudo_threshold: float | None = None  # confidence a pseudo-label needs; None: the method's own
    ema: float = 0.0  # decay of an exponential moving average of the weights, evaluated and saved; 0: none
    precision: str = "auto"  # auto: bf16 autocast where the CPU/GPU has native bf16, else fp32
    skip_bad: bool = False  # leave out (and list) images whose image or mask is broken, instead of stopping
    workers: int = 0  # decoded images are cached; worker processes would only take cores from the model
    device: str = "auto"
    seed: int = 0
    sync_bn: bool = False  # BatchNorm statistics across processes (CUDA only)
    deterministic: bool = False  # deterministic kernels: a killed and resumed run ends bit-identical
    init_from: str | None = None
    log_to: tuple[str, ...] = ()  # experiment trackers besides history.json: tensorboard, mlflow

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig(self.model, self.backbone, self.upsample)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        for key in ("crop_size", "scale_range", "unlabelled", "log_to"):
            if key in kwargs and kwargs[key] is not None:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


# ---------------------------------------------------------------- config.yaml

CONFIG_FILE = "config.yaml"  # every run writes its resolved TrainConfig here; `train --config` reads it back


def write_config_file(cfg: TrainConfig, path, resolved: dict | None = None) -> dict:
    """`cfg` as YAML, in field order, with `resolved` (what each `auto` became in this run) written over it:
    a rerun from the file makes the same decisions without measuring again. -> the values written"""
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in {**cfg.to_dict(), **(resolved or {})}.items()}
    header = "# pixelwise train's resolved configuration; rerun with: pixelwise train --config THIS_FILE --out NEW\n"
    Path(path).write_text(header + yaml.safe_dump(values, sort_keys=False))
    return values


def read_config_file(path) -> dict:
    """A config.yaml -> TrainConfig fields (lists for tuples), every key known and every value of its type;
    anything else is refused naming the key."""
    try:
        with open(path) as f:
            values = yaml.safe_load(f)
    except OSError as err:
        raise PixelwiseError(f"--config {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise PixelwiseError(f"--config {path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise PixelwiseError(f"--config {path}: expected key: value lines, got {type(values).__name__}")
    hints = typing.get_type_hints(TrainConfig)
    for key, value in values.items():
        if key not in hints:
            close = difflib.get_close_matches(str(key), hints, n=1)
            raise PixelwiseError(f"--config {path}: unknown key {key!r}"
                                 + (f"; did you mean {close[0]!r}?" if close else ""))
        if not _fits(value, hints[key]):
            raise PixelwiseError(f"--config {path}: {key} must be {_describe(hints[key])}, got {value!r}")
    return values


def _fits(value, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if hint is type(None):
        return "null"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}"
        return f"a list of {len(args)} ({', '.join(_describe(a) for a in args)})"
    return {float: "a number", int: "a whole number", bool: "true or false", str: "text"}.get(hint, hint.__name__)
