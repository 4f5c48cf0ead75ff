"""Checkpoints: everything needed to resume training or rebuild the model, in plain types.

They load with `torch.load(..., weights_only=True)`: no pickled classes, so a checkpoint
from a stranger cannot run code.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from pixelwise.config import TrainConfig
from pixelwise.errors import PixelwiseError
from pixelwise.models.registry import create_model


def save_checkpoint(path: str | Path, **content) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(content, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise PixelwiseError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated files and foreign pickles raise many types
        raise PixelwiseError(f"{path}: not a readable pixelwise checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise PixelwiseError(f"{path}: not a pixelwise checkpoint (no model weights and config inside)")
    return ckpt


def model_from_checkpoint(ckpt: dict) -> torch.nn.Module:
    """Rebuild the architecture from the saved config and load its weights; no download needed."""
    cfg = TrainConfig.from_dict(ckpt["config"])
    model = create_model(cfg.model, backbone=cfg.backbone, num_classes=len(ckpt["class_names"]),
                         upsample=cfg.upsample, pretrained=False)
    model.load_state_dict(ckpt["model"])
    return model
