"""What an exported graph carries besides its weights: class names, palette, ignore index, inference
scale (and whether accurate flips) and how to feed it, written into every .onnx (metadata_props, one JSON value a key) and held by
every engine, so that a Predictor needs nothing else."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from pixelwise.checkpoint import infer_flip, infer_scale, model_config
from pixelwise.errors import PixelwiseError, import_optional
from pixelwise.version import __version__

# What the exported graph takes and gives, written into every .onnx so the file explains itself.
GRAPH_INPUT = "images: float32 (N, 3, H, W), RGB in 0..1 (8-bit pixel / 255), any N, H and W"
GRAPH_OUTPUT = "logits: float32 (N, C, H, W) at the input's H and W; argmax over C is the class index"
RESIZE = ("outside the graph: resize the image by infer_scale (bilinear, half-pixel centres, antialiased when "
          "infer_scale < 1), run the graph, resize its logits back to the image size (bilinear, half-pixel); "
          "pixelwise engines do both")


def checkpoint_metadata(ckpt: dict, model: torch.nn.Module) -> dict:
    """Everything needed to predict with a model besides its weights, as plain JSON types.
    Written into exported .onnx files (metadata_props, one JSON value a key) and held by engines."""
    net = model_config(ckpt)
    encoder = model.encoder
    return {
        "pixelwise_version": __version__,
        "class_names": list(ckpt["class_names"]),
        "palette": [[int(v) for v in rgb] for rgb in ckpt["palette"]],
        "ignore_index": int(ckpt["ignore_index"]),
        "infer_scale": infer_scale(ckpt),
        "infer_flip": infer_flip(ckpt),  # --profile accurate averages the mirror image's logits (flip TTA)
        "input": GRAPH_INPUT,
        # The graph normalises itself: callers feed 0..1 RGB and never apply these.
        "normalisation": {"inside_graph": True, "formula": "(images - mean) / std, per RGB channel",
                          "mean": [round(float(v), 7) for v in encoder.mean.flatten()],
                          "std": [round(float(v), 7) for v in encoder.std.flatten()]},
        "output": GRAPH_OUTPUT,
        "resize": RESIZE,
        "architecture": net.to_dict(),
        "precision": "fp32",  # an int8 export overwrites it
        "checkpoint_sha256": ckpt.get("sha256"),
    }


REQUIRED_METADATA = ("class_names", "palette", "ignore_index", "infer_scale")


def encode_metadata(meta: dict) -> dict[str, str]:
    """-> ONNX metadata_props: one JSON string a key, so lists and numbers come back as they went in."""
    return {key: json.dumps(value) for key, value in meta.items()}


def decode_metadata(props: dict[str, str], path: Path) -> dict:
    """ONNX metadata_props -> the metadata dict. Refuses a file that pixelwise did not export."""
    missing = [key for key in REQUIRED_METADATA if key not in props]
    if missing:
        raise PixelwiseError(f"{path} has no pixelwise metadata ({', '.join(missing)} missing): it was not written by "
                             "`pixelwise export`; export the checkpoint with `pixelwise export --checkpoint CKPT "
                             "--onnx OUT.onnx`")
    meta = {}
    for key, value in props.items():
        try:
            meta[key] = json.loads(value)
        except json.JSONDecodeError:  # metadata added by other tools is kept as text
            meta[key] = value
    return meta


def read_metadata(path: str | Path) -> dict:
    """The metadata of an .onnx file written by `pixelwise export` (see `checkpoint_metadata`)."""
    path = Path(path)
    onnx = import_optional("onnx", "onnx", "reading .onnx metadata")
    if not path.is_file():
        raise PixelwiseError(f"{path}: ONNX model not found")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf raises several types for a damaged file
        raise PixelwiseError(f"{path} is not a readable ONNX model ({type(err).__name__}): re-export it") from None
    return decode_metadata({p.key: p.value for p in model.metadata_props}, path)
