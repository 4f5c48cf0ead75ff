"""How much of the pretrained encoder to retrain: freezing strategies and optimizer parameter groups.

  head         only the new decoder/score layers train; the encoder is frozen, BatchNorm statistics too
  last-k       the last K encoder stages train as well (rich data similar to ImageNet)
  full         everything trains; earlier stages at lower learning rates (discriminative fine-tuning)
  scratch      random initialisation, everything trains: the control
  progressive  head first, then encoder stages unfreeze deepest-first as training progresses
"""
from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

STRATEGIES = ("head", "last-k", "full", "scratch", "progressive")
PROGRESSIVE_START, PROGRESSIVE_END = 0.2, 0.6  # fraction of training: first unfreeze, last unfreeze


def check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")


def set_stages_trainable(model: nn.Module, trainable: set[int]) -> None:
    """Encoder stages not in `trainable` stop learning, and their BatchNorm layers keep their
    ImageNet statistics even in train mode (see `SegmentationModel.train`)."""
    encoder = model.encoder
    for name, parameter in encoder.named_parameters():
        parameter.requires_grad_(encoder.stage_of(name) in trainable)
    for name, module in encoder.named_modules():
        if isinstance(module, _BatchNorm):
            module.frozen_statistics = encoder.stage_of(name) not in trainable
            if module.frozen_statistics:
                module.eval()
            elif model.training:
                module.train()


def initially_trainable(strategy: str, num_stages: int, trainable_stages: int) -> set[int]:
    check_strategy(strategy)
    if strategy in ("head", "progressive"):
        return set()
    if strategy == "last-k":
        if not 0 <= trainable_stages <= num_stages:
            raise ValueError(f"--trainable-stages must be 0..{num_stages} for this encoder, got {trainable_stages}")
        return set(range(num_stages - trainable_stages, num_stages))
    return set(range(num_stages))


def apply_strategy(model: nn.Module, strategy: str, trainable_stages: int = 2) -> None:
    num_stages = len(model.encoder.stage_prefixes)
    set_stages_trainable(model, initially_trainable(strategy, num_stages, trainable_stages))


def progressive_unfreeze(model: nn.Module, progress: float) -> set[int]:
    """Trainable stages at `progress` (0..1): none before 20%, then deepest first, all from 60%."""
    n = len(model.encoder.stage_prefixes)
    if progress < PROGRESSIVE_START:
        count = 0
    else:
        step = (PROGRESSIVE_END - PROGRESSIVE_START) / max(n - 1, 1)
        count = min(n, 1 + int((progress - PROGRESSIVE_START) / step + 1e-9))
    trainable = set(range(n - count, n))
    set_stages_trainable(model, trainable)
    return trainable


def parameter_groups(model: nn.Module, lr: float, strategy: str = "full", lr_ratio: float = 1.0) -> list[dict]:
    """Optimizer groups: the decoder and upsampler at `lr`, encoder stage i of n at
    lr * lr_ratio ** (n - 1 - i) under `full` (earlier stages learn slower), else at `lr`.
    Frozen parameters stay in their groups so that progressive unfreezing needs no new optimizer;
    AdamW skips parameters without gradients. A parameter outside these parts is an error."""
    check_strategy(strategy)
    encoder = model.encoder
    n = len(encoder.stage_prefixes)
    stage_params: list[list[nn.Parameter]] = [[] for _ in range(n)]
    for name, parameter in encoder.named_parameters():
        stage_params[encoder.stage_of(name)].append(parameter)
    head = []
    for name, parameter in model.named_parameters():
        part = name.split(".", 1)[0]
        if part in ("decoder", "upsample"):
            head.append(parameter)
        elif part != "encoder":
            raise ValueError(f"parameter {name!r} is in no known part of the model (encoder, decoder, upsample)")
    ratio = lr_ratio if strategy == "full" else 1.0
    groups = [{"name": f"encoder stage {i}", "params": params, "lr": lr * ratio ** (n - 1 - i)}
              for i, params in enumerate(stage_params) if params]
    return groups + [{"name": "decoder", "params": head, "lr": lr}]
