"""Export a checkpoint to ONNX: `pixelwise export --checkpoint best.pt --onnx best.onnx [--int8]`.

The file holds the network with a dynamic batch, height and width, and metadata (ONNX
metadata_props, one JSON value a key; see `metadata.checkpoint_metadata`): class names, palette,
ignore index, normalisation, inference scale, architecture, precision and the pixelwise version.
So the .onnx file alone is enough to predict with it:

- the graph takes `images`, float32 (N, 3, H, W) RGB in 0..1 (8-bit pixel / 255), any N, H and W;
  the backbone's mean/std normalisation and the pad to a multiple of 32 are inside the graph;
- it gives `logits`, float32 (N, C, H, W) at the input's size; argmax over C is the class index;
- the inference-scale resize (image x infer_scale before, logits back to the image size after) is
  NOT in the graph: the engines do it with the same torch code as eager prediction, so they differ
  from eager PyTorch only inside the network; a caller outside pixelwise reads `infer_scale` and
  `resize` from the metadata. Kept outside because int8 calibration then sees what the network
  sees, and because a graph of the network alone is what tiling and other runtimes want.

Exporter: `torch.onnx.export(dynamo=True)` (torch.export + onnxscript). On FCN-8s /
EfficientNet-Lite0 it writes a far smaller graph than the TorchScript exporter (which also warns
that it is deprecated and will be removed); after ONNX Runtime's optimisations both run alike. Both
need the static padding below to give symbolic sizes cheaply: with timm's dynamic "same" padding the
dynamo export of EfficientNet-Lite0 takes many times longer (shape arithmetic through `ceil`); the
figures are in docs/deploy.md. torch.export can specialise a size silently (a Python
`if` on a size takes the example's branch), so every export is checked against the eager model at
sizes that are and are not multiples of 32 before it is written.

int8: ONNX Runtime static quantisation (QDQ format, per-channel int8 weights, uint8 activations with
min/max ranges) calibrated on ~32 training images. It needs nothing beyond onnxruntime, and the
same QDQ file runs int8 in OpenVINO too, whereas NNCF would add a large dependency for OpenVINO alone.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pixelwise.checkpoint import load_checkpoint, model_from_checkpoint
from pixelwise.data.formats import load_spec
from pixelwise.data.io import gather_images, read_image, write_atomic
from pixelwise.errors import PixelwiseError, import_optional
from pixelwise.inference.metadata import checkpoint_metadata, encode_metadata, read_metadata
from pixelwise.runtime import physical_cores

__all__ = ["export_onnx", "read_metadata", "static_same_padding"]

# Sizes at which every export is compared with the eager model: odd ones, whose pad to a multiple
# of 32 is not zero, and a multiple of 32, where it is; batches of 1 and 2.
CHECK_SHAPES = ((2, 45, 61), (1, 64, 96), (1, 37, 70))
CALIBRATION_IMAGES = 32
CALIBRATION_SIZE = (352, 480)  # the trainer's default crop, for a checkpoint without its run's record


# ---------------------------------------------------------------- static "same" padding

def same_padding(kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow "same" padding (before, after) of a convolution whose input length is a multiple of its stride.

    TF pads a length-L input to total = max((ceil(L/s) - 1)·s + (k - 1)·d + 1 - L, 0), the extra pixel
    after. When s divides L, ceil(L/s)·s = L, so total = max((k - 1)·d + 1 - s, 0): the size drops out.
    pixelwise pads every input to a multiple of 32 (models.base), and each strided conv sees that
    size divided by the strides before it, all of which divide 32: so it holds at every conv, at
    every input size, and a constant pad is exact."""
    total = max((kernel - 1) * dilation + 1 - stride, 0)
    return total // 2, total - total // 2


def static_conv(conv: nn.Conv2d) -> nn.Sequential:
    """A timm Conv2dSame -> constant zero pad + plain conv on the same weights (ORT fuses the two)."""
    (top, bottom), (left, right) = (same_padding(k, s, d) for k, s, d in zip(conv.kernel_size, conv.stride,
                                                                               conv.dilation))
    plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0, conv.dilation,
                      conv.groups, bias=conv.bias is not None)
    plain.weight, plain.bias = conv.weight, conv.bias
    return nn.Sequential(nn.ZeroPad2d((left, right, top, bottom)), plain)


def static_same_padding(model: nn.Module) -> nn.Module:
    """A copy of `model` in which every dynamic TF-"same" conv (timm Conv2dSame) pads by a constant.

    Exact for inputs whose size is a multiple of `model.size_multiple`, which is all the encoder
    ever sees (see `same_padding`). Checked here on one probe of that size: the size each
    replaced conv receives there must be a multiple of its stride, and then so it is at every
    multiple (each size along the way scales with the input)."""
    from timm.layers import Conv2dSame

    model = copy.deepcopy(model).eval()
    replaced = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv2dSame):
                setattr(parent, name, static_conv(child))
                replaced.append(getattr(parent, name))
    if replaced:
        _check_strides_divide(model, replaced)
    return model


def _check_strides_divide(model: nn.Module, replaced: list[nn.Sequential]) -> None:
    multiple = getattr(model, "size_multiple", 32)
    seen = []
    hooks = [module.register_forward_pre_hook(lambda m, args: seen.append((m[1].stride, args[0].shape[-2:])))
             for module in replaced]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, multiple, multiple))
    finally:
        for hook in hooks:
            hook.remove()
    for stride, size in seen:
        if any(length % s for length, s in zip(size, stride)):
            raise PixelwiseError(f"cannot export with static padding: a stride-{tuple(stride)} convolution sees "
                                 f"{tuple(size)} on a {multiple}x{multiple} input, not a multiple of its stride")


# ---------------------------------------------------------------- the graph

def export_network(model: nn.Module, meta: dict, opset: int | None = None):
    """Eager model -> onnx.ModelProto with dynamic batch, height and width, carrying `meta`.
    The example input is odd-sized, so the model's pad-to-32 branch is the one exported."""
    import_optional("onnxscript", "onnx", "ONNX export")
    model = static_same_padding(model)
    multiple = getattr(model, "size_multiple", 32)
    example = torch.rand(2, 3, 2 * multiple + 3, 3 * multiple + 5)
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
    # The exporter narrates every step on stdout; the CLI prints one line of its own instead.
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        program = torch.onnx.export(model, (example,), dynamo=True, input_names=["images"], output_names=["logits"],
                                    dynamic_shapes=(dims,), opset_version=opset, verbose=False)
    proto = program.model_proto
    set_metadata(proto, meta)
    return proto


def set_metadata(proto, meta: dict) -> None:
    del proto.metadata_props[:]
    for key, value in encode_metadata(meta).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def ort_session(model):
    """A CPU session for checks, on an onnx.ModelProto or a path."""
    ort = import_optional("onnxruntime", "onnx", "checking an ONNX export")
    options = ort.SessionOptions()
    options.intra_op_num_threads = physical_cores()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = str(model) if isinstance(model, (str, Path)) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def check_against_eager(model: nn.Module, proto, shapes=CHECK_SHAPES) -> float:
    """Run the graph and the eager fp32 model on random images of `shapes`; -> the largest logit
    difference. Raises when a size was baked into the graph or the outputs disagree."""
    session = ort_session(proto)
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for n, h, w in shapes:
        images = torch.rand(n, 3, h, w, generator=generator)
        with torch.no_grad():
            expected = model.eval()(images).numpy()
        try:
            got = session.run(None, {"images": images.numpy()})[0]
        except Exception as err:  # a size the exporter specialised is refused by ORT
            reason = str(err).splitlines()[0][:200]
            raise PixelwiseError(f"the exported graph does not run at {n}x3x{h}x{w} ({reason}); this is a "
                                 "pixelwise bug: please report it with the model's architecture") from None
        error = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
        if error > 1e-3 * (1 + float(np.abs(expected).max())):
            raise PixelwiseError(f"the exported graph differs from the model at {n}x3x{h}x{w} (largest logit "
                                 f"difference {error:.3g}); this is a pixelwise bug: please report it")
        worst = max(worst, error)
    return worst


def write_onnx(proto, out: Path) -> None:
    """Atomically: a crash leaves the previous file or the new one, never half of one."""
    import onnx

    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, lambda tmp: onnx.save(proto, str(tmp)))


# ---------------------------------------------------------------- int8

def calibration_paths(ckpt: dict, calibration: list[Path] | None, count: int = CALIBRATION_IMAGES) -> list[Path]:
    """`count` images spread evenly over `calibration` (files or folders), or else over the training
    split of the dataset the checkpoint was trained on."""
    if calibration:
        paths = gather_images(calibration)
    else:
        run = ckpt.get("config", {})  # the training run's record: where its data was
        try:
            spec = load_spec(run.get("data", ""), run.get("format", "auto"))
        except PixelwiseError as err:
            raise PixelwiseError(f"int8 calibration needs typical images, and the checkpoint's dataset is not "
                                 f"readable here ({err}); pass --calibration DIR with ~{count} of them") from None
        split = spec.splits.get("train") or next(pairs for pairs in spec.splits.values() if pairs)
        paths = [image for image, _ in split]
    # even spacing, not the first N: consecutive video frames would all look alike
    picks = np.unique(np.linspace(0, len(paths) - 1, min(count, len(paths))).round().astype(int))
    return [paths[i] for i in picks]


def calibration_tensor(path: Path, size: tuple[int, int], scale: float) -> np.ndarray:
    """An image as the network sees it at inference (resized by `scale`), centre-cropped to `size`
    (resized up first if it is smaller) -> (1, 3, h, w) float32 in 0..1."""
    image = torch.from_numpy(read_image(path)).permute(2, 0, 1).float().div_(255)[None]
    h, w = image.shape[-2:]
    factor = max(scale, size[0] / h, size[1] / w)
    image = F.interpolate(image, size=(max(size[0], round(h * factor)), max(size[1], round(w * factor))),
                          mode="bilinear", align_corners=False, antialias=factor < 1)
    top, left = (image.shape[-2] - size[0]) // 2, (image.shape[-1] - size[1]) // 2
    return image[..., top:top + size[0], left:left + size[1]].contiguous().numpy()


def quantize_onnx(fp32_path: Path, out: Path, images: list[Path], size: tuple[int, int]) -> float:
    """Write an int8 copy of an exported fp32 .onnx, calibrated on `images` seen at the inference
    scale and centre-cropped to `size`. ONNX Runtime static quantisation, QDQ format:
    - int8 weights per output channel: one range per tensor loses the small filters of depthwise
      convs (on EfficientNet-Lite0 it changed the class of many more pixels);
    - uint8 activations, ranges from the min/max seen in calibration: uint8 x int8 is the pair
      ORT's x86 kernels fuse, so every conv becomes a QLinearConv (with int8 activations many of
      them stayed float and the model ran slower than fp32).
    -> the share of calibration pixels (first 4 images) whose class agrees with fp32."""
    import onnx

    quantization = import_optional("onnxruntime.quantization", "onnx", "int8 export")
    meta = read_metadata(fp32_path)
    batches = [calibration_tensor(p, size, meta["infer_scale"]) for p in images]

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self.batches = iter(batches)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"images": batch}

    advice = NoPreprocessingAdvice()
    logging.getLogger().addFilter(advice)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            int8_path = Path(tmp) / "int8.onnx"
            quantization.quantize_static(str(fp32_path), str(int8_path), Reader(),
                                         quant_format=quantization.QuantFormat.QDQ, per_channel=True,
                                         activation_type=quantization.QuantType.QUInt8,
                                         weight_type=quantization.QuantType.QInt8,
                                         calibrate_method=quantization.CalibrationMethod.MinMax)
            quantized = onnx.load(str(int8_path))
    finally:
        logging.getLogger().removeFilter(advice)
    set_metadata(quantized, {**meta, "precision": "int8",
                             "calibration": {"images": len(batches), "size": list(size),
                                             "method": "onnxruntime static QDQ: per-channel int8 weights, "
                                                       "uint8 activations, min/max ranges"}})
    write_onnx(quantized, out)
    return agreement(fp32_path, out, batches[:4])


class NoPreprocessingAdvice(logging.Filter):
    """quantize_static advises ORT's pre-processing (symbolic shape inference, then fusions). Its shape
    inference cannot follow the pad-to-32 arithmetic, and the exporter has already folded BatchNorm
    into the convs: the advice only adds noise to `pixelwise export`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def agreement(path_a: Path, path_b: Path, batches: list[np.ndarray]) -> float:
    """Share of pixels whose class (argmax) two graphs agree on, over `batches`."""
    a, b = ort_session(path_a), ort_session(path_b)
    same = total = 0
    for batch in batches:
        la, lb = (s.run(None, {"images": batch})[0].argmax(1) for s in (a, b))
        same, total = same + int((la == lb).sum()), total + la.size
    return same / total


# ---------------------------------------------------------------- the command

def export_onnx(checkpoint: Path, out: Path, *, int8: bool = False, calibration: list[Path] | None = None,
                opset: int | None = None, log=print) -> Path:
    """Write `checkpoint`'s model to `out` as ONNX (dynamic batch, height, width; metadata inside).
    `int8=True` writes a statically quantised model calibrated on ~32 images: `calibration`
    (files or folders), else the checkpoint's training images. -> out."""
    onnx = import_optional("onnx", "onnx", "ONNX export")

    checkpoint, out = Path(checkpoint), Path(out)
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt).eval()
    meta = checkpoint_metadata(ckpt, model)
    proto = export_network(model, meta, opset)
    check_against_eager(model, proto)
    if not int8:
        write_onnx(proto, out)
        log(f"wrote {out}: fp32, {out.stat().st_size / 1e6:.1f} MB, dynamic batch/height/width, "
            f"{len(proto.graph.node)} nodes, matches the checkpoint at {len(CHECK_SHAPES)} sizes")
        return out
    crop = tuple(ckpt.get("config", {}).get("crop_size") or CALIBRATION_SIZE)  # the size the network trained at
    images = calibration_paths(ckpt, calibration)
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = Path(tmp) / "fp32.onnx"
        onnx.save(proto, str(fp32_path))
        same = quantize_onnx(fp32_path, out, images, crop)
    log(f"wrote {out}: int8 (QDQ) calibrated on {len(images)} images, {out.stat().st_size / 1e6:.1f} MB; "
        f"same class as fp32 on {same:.2%} of the calibration pixels")
    return out
