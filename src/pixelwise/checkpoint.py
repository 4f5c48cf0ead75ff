"""The checkpoint format, shared by training and inference: atomic save, checked load, model from checkpoint.

A checkpoint is a dict of plain types and tensors that loads with `torch.load(..., weights_only=True)`:
no pickled classes, so a checkpoint from a stranger cannot run code. It carries a sha256 of its own
content, so a flipped byte or a truncated copy is refused instead of predicting garbage.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from pixelwise.config import ModelConfig, TrainConfig
from pixelwise.errors import PixelwiseError

# What must agree between a checkpoint and the run that resumes it: anything else is a new model.
ARCHITECTURE_KEYS = ("model", "backbone", "upsample")


def content_digest(content: dict) -> str:
    """sha256 over the checkpoint's content in a canonical order (tensors by dtype, shape and bytes),
    so it is the same before saving and after loading, whatever the zip layout."""
    digest = hashlib.sha256()

    def feed(obj) -> None:
        if isinstance(obj, torch.Tensor):
            tensor = obj.detach().cpu().contiguous()
            digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
        elif isinstance(obj, dict):
            digest.update(f"D{len(obj)}".encode())
            for key in sorted(obj, key=repr):
                feed(key)
                feed(obj[key])
        elif isinstance(obj, (list, tuple)):  # tuples come back as tuples, but one rule for both is safer
            digest.update(f"L{len(obj)}".encode())
            for item in obj:
                feed(item)
        else:
            digest.update(f"{type(obj).__name__}:{obj!r};".encode())

    feed({k: v for k, v in content.items() if k != "sha256"})
    return digest.hexdigest()


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems (and Windows) cannot open folders: the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(path: str | Path, **content) -> None:
    """Write atomically and durably: temporary file, fsync, rename, fsync of the folder.
    A crash at any moment leaves either the previous checkpoint or the new one, never half of one."""
    path = Path(path)
    content["sha256"] = content_digest(content)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(content, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_folder(path.parent)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise PixelwiseError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated files and foreign pickles raise many types
        raise PixelwiseError(f"checkpoint {path} is damaged or not a pixelwise checkpoint "
                             f"({type(err).__name__}: {str(err).splitlines()[0][:200]}): re-copy it or retrain") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise PixelwiseError(f"{path}: not a pixelwise checkpoint (no model weights and config inside)")
    # Checkpoints written before the checksum existed carry none; they load as they always did.
    if "sha256" in ckpt and content_digest(ckpt) != ckpt["sha256"]:
        raise PixelwiseError(f"checkpoint {path} is damaged (checksum mismatch): re-copy it or retrain")
    return ckpt


def model_config(ckpt: dict) -> ModelConfig:
    """The network's config: its own entry, or in checkpoints written before it had one (2026-12-03 and
    earlier), the architecture keys of the run's config."""
    return ModelConfig.from_dict(ckpt.get("model_config") or ckpt["config"])


def infer_scale(ckpt: dict) -> float:
    """The scale the network sees images at when predicting (earlier checkpoints: in the run's config)."""
    return float(ckpt["infer_scale"] if "infer_scale" in ckpt else ckpt["config"]["infer_scale"])


def infer_flip(ckpt: dict) -> bool:
    """Whether `--profile accurate` also averages the mirror image's logits (checkpoints before it: no)."""
    return bool(ckpt.get("infer_flip", ckpt.get("config", {}).get("infer_flip", False)))


def model_from_checkpoint(ckpt: dict) -> torch.nn.Module:
    """Rebuild the architecture from the saved config and load its weights; no download needed."""
    from pixelwise.models.registry import create_model  # the zoo's imports (timm) wait until a model is built

    net = model_config(ckpt)
    # The random initialisation is overwritten at once: fork the RNG so that loading a model leaves
    # the caller's random stream exactly where it was.
    with torch.random.fork_rng(devices=[]):
        model = create_model(net.model, backbone=net.backbone, num_classes=len(ckpt["class_names"]),
                             upsample=net.upsample, pretrained=False)
    model.load_state_dict(ckpt["model"])
    return model


def class_differences(saved: list[str], wanted: list[str]) -> list[str]:
    """What differs between a checkpoint's class list and a dataset's, in words, one item a difference."""
    saved, wanted = list(saved), list(wanted)
    if saved == wanted:
        return []
    diffs = []
    if len(saved) != len(wanted):
        diffs.append(f"{len(saved)} classes in the checkpoint, {len(wanted)} in the data")
    for i, (a, b) in enumerate(zip(saved, wanted)):
        if a != b:
            diffs.append(f"class {i} is {a!r} in the checkpoint but {b!r} in the data")
    extra = [f"{i}={n!r}" for i, n in enumerate(saved) if i >= len(wanted)]
    missing = [f"{i}={n!r}" for i, n in enumerate(wanted) if i >= len(saved)]
    if extra:
        diffs.append("only in the checkpoint: " + ", ".join(extra))
    if missing:
        diffs.append("only in the data: " + ", ".join(missing))
    return diffs


def config_differences(saved: dict, cfg: TrainConfig, keys=ARCHITECTURE_KEYS) -> list[str]:
    """Architecture settings in which a run's config differs from a checkpoint's."""
    current = cfg.to_dict()
    return [f"--{k.replace('_', '-')}: {saved.get(k)!r} in the checkpoint, {current[k]!r} now"
            for k in keys if saved.get(k) != current[k]]
