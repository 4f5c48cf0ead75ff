"""Prediction from a checkpoint: class-index PNGs with the dataset palette, and colour overlays."""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pixelwise.data.io import FAST_PNG, read_image, save_png_atomic, to_rgb_array, write_label_png
from pixelwise.data.io import overlay as blend_overlay
from pixelwise.errors import PixelwiseError
from pixelwise.inference.selection import create_engine
from pixelwise.inference.tiling import class_argmax, predict_tiled, to_batch


class Predictor:
    """A trained model with its class names and palette. `predict(image)` -> HxW class indices.

    The model runs through an engine (see inference.engines): anything with `logits(images)`."""

    def __init__(self, engine, class_names, palette, ignore_index: int):
        self.engine = engine
        self.class_names = list(class_names)
        self.palette = np.asarray(palette, dtype=np.uint8)
        self.ignore_index = ignore_index

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", precision: str = "auto") -> "Predictor":
        """The checkpoint in eager PyTorch at the accurate profile: `load(path)`."""
        return load(path, device=device, precision=precision)

    @staticmethod
    def as_rgb(image) -> np.ndarray:
        if isinstance(image, (str, Path)):
            return read_image(image)
        if isinstance(image, Image.Image):
            return to_rgb_array(image)
        array = np.asarray(image)
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            raise PixelwiseError(f"expected an HxWx3 uint8 array, got shape {array.shape} dtype {array.dtype}")
        return array

    def logits(self, image) -> torch.Tensor:
        """image: a path, a PIL image or an HxWx3 uint8 array -> (C, H, W) float logits on the CPU."""
        return self.engine.logits(to_batch([self.as_rgb(image)]))[0]

    def batch_logits(self, images: list[np.ndarray]) -> torch.Tensor:
        """Equal-size HxWx3 uint8 arrays -> (N, C, H, W) logits, in one engine call."""
        return self.engine.logits(to_batch(images))

    def predict_tiled(self, image, tile: int = 1024, overlap: int = 128) -> np.ndarray:
        """`predict` for an image too large to predict whole: `tile`-pixel tiles, blended over `overlap`."""
        return predict_tiled(self.engine, self.as_rgb(image), tile, overlap)

    def predict(self, image) -> np.ndarray:
        """image: a path, a PIL image or an HxWx3 uint8 array -> HxW uint8 class indices."""
        return class_argmax(self.logits(image))

    def predict_proba(self, image) -> np.ndarray:
        """image as for `predict` -> (C, H, W) float32 class probabilities (softmax over classes, summing to 1).
        `probabilities.argmax(0)` equals `predict(image)`."""
        return self.logits(image).softmax(0).numpy()

    def predict_to_files(self, image_path: Path, out_dir: Path) -> tuple[Path, Path]:
        """Write out_dir/<stem>.png (class indices, palette) and out_dir/<stem>_overlay.png."""
        rgb = read_image(image_path)
        self.write(out_dir, image_path, rgb, self.predict(rgb))
        return out_dir / f"{image_path.stem}.png", out_dir / f"{image_path.stem}_overlay.png"

    def write(self, out_dir: Path, image_path: Path, rgb: np.ndarray, labels: np.ndarray,
              overlay: bool = True) -> None:
        """`write_outputs` in this model's palette; `rgb` becomes the overlay."""
        write_outputs(out_dir, image_path, rgb, labels, self.palette, overlay)


PROBABILITY_FORMATS = ("uint8", "float16")


def write_probabilities(out: Path, path: Path, logits: torch.Tensor, kind: str) -> Path:
    """<stem>_probs.npy: the (C, H, W) softmax of `logits`, as float16, or as uint8 where q = round(255 p)
    (read back as q / 255: within 1/510 of p, at half float16's size). Written atomically."""
    if kind not in PROBABILITY_FORMATS:
        raise PixelwiseError(f"unknown probability format {kind!r}; choose {' or '.join(PROBABILITY_FORMATS)}")
    probabilities = logits.float().softmax(0)
    array = (probabilities * 255).round_().to(torch.uint8) if kind == "uint8" else probabilities.half()
    target = out / f"{path.stem}_probs.npy"
    tmp = target.with_name(f".{target.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array.numpy())
    tmp.replace(target)
    return target


def write_outputs(out: Path, path: Path, rgb: np.ndarray, labels: np.ndarray, palette: np.ndarray,
                  overlay: bool = True) -> None:
    """What a prediction leaves in `out`: <stem>.png (class indices, palette) and, with `overlay`,
    <stem>_overlay.png, each written atomically and compressed for speed (FAST_PNG; the overlay, a
    photo, Huffman-only). `rgb` becomes the overlay in place: callers are done with the photo by
    then, and an 8000x6000 one is 144 MB not held twice. Used by `predict_to_files` and the folder
    pipeline alike, so both write the same bytes."""
    write_label_png(out / f"{path.stem}.png", labels, palette, FAST_PNG)
    if overlay:
        save_png_atomic(Image.fromarray(_blend_in_place(rgb, labels, palette)), out / f"{path.stem}_overlay.png",
                        FAST_PNG, zlib.Z_HUFFMAN_ONLY)


def _blend_in_place(rgb: np.ndarray, labels: np.ndarray, palette: np.ndarray, rows: int = 512) -> np.ndarray:
    """`data.io.overlay` written over `rgb`, a block of rows at a time: the same pixels, without a
    second copy or wide temporaries of a whole 8000x6000 photo. -> rgb"""
    for r in range(0, rgb.shape[0], rows):
        rgb[r:r + rows] = blend_overlay(rgb[r:r + rows], labels[r:r + rows], palette)
    return rgb


def predictor_from(model_file: str | Path, engine: str = "torch", device: str = "auto", precision: str = "auto",
                   log=print, profile: str = "accurate", streams: int = 1):
    """A Predictor from a checkpoint or an exported .onnx, running on the named engine at a speed
    profile: the class names, palette and ignore index come from the checkpoint or from the .onnx
    file's metadata."""
    runner = create_engine(engine, model_file, device=device, precision=precision, log=log, profile=profile,
                           streams=streams)
    meta = runner.meta
    return Predictor(runner, meta["class_names"], meta["palette"], meta["ignore_index"])


def load(checkpoint: str | Path, device: str = "auto", precision: str = "auto", engine: str = "torch",
         profile: str = "accurate") -> Predictor:
    """Load a checkpoint, or an .onnx from `pixelwise export`, for prediction on `engine` (auto, torch, onnxruntime
    or openvino) at a speed `profile` (accurate or fast): `pixelwise.load("runs/x/best.pt").predict("photo.jpg")`."""
    return predictor_from(checkpoint, engine=engine, device=device, precision=precision, profile=profile)
