"""Inference speed on this CPU, everything side by side in one process.

    python benchmarks/speed.py --checkpoint ~/runs/camvid/best.pt --quality benchmarks/results/camvid_peer_35min.json quality.json
    python benchmarks/speed.py --quick          # smoke run: one size, batch 1, a few models

Timed at 360x480 and 720x960 (height x width), batch 1 and 8:
- pixelwise's default (FCN-8s / EfficientNet-Lite0) at both profiles (accurate: the checkpoint's
  inference scale; fast: 1.0) on every engine: torch fp32, and bf16 and fp16 + channels_last where
  the CPU has them natively; with --checkpoint its exported .onnx in ONNX Runtime (fp32, int8) and
  OpenVINO (fp32, bf16 where native, int8). Targets and the quality plot place each profile at what
  `pixelwise predict` runs by default (`default_setting`);
- every other model and backbone of the zoo, at torch bf16;
- torchvision and segmentation_models_pytorch peers at their default (fp32) and at their best CPU
  settings (channels_last + bf16; ONNX Runtime).
Each cell reports the median latency, images/s, GFLOPs, and achieved GFLOP/s against this machine's
peak and against its roofline (both measured in the same run: see roofline.py). Then latency against
input size (256^2 to 2048^2) and batch size for three models, and two plots next to --json:
speed_quality.png (latency against CamVid val mean IoU, Pareto front marked) and speed_scaling.png.
Weights are random (timing does not depend on them): no download. The last line printed is one JSON
object, also written to --json.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import io
import json
import statistics
import subprocess
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from matplotlib.ticker import FuncFormatter
from torch import nn

from cpu import cpu_model, run_record
from roofline import bandwidth_gbs, compute_ceilings, forward_traffic, measure_peaks, place

import pixelwise
from pixelwise.checkpoint import load_checkpoint, model_from_checkpoint
from pixelwise.config import TrainConfig
from pixelwise.errors import PixelwiseError
from pixelwise.inference.engines import OnnxRuntimeEngine, OpenVinoEngine, TorchEngine, network_input
from pixelwise.runtime import physical_cores
from pixelwise.models.registry import create_model, list_backbones, list_models
from pixelwise.models.summary import measure
from pixelwise.runtime import cpu_has_bf16, cpu_has_fp16, predict_logits
from pixelwise.training.plots import new_figure, save_figure

log = partial(print, flush=True)

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULTS = TrainConfig(data="")  # what `pixelwise train` builds when told nothing
DEFAULT_MODEL = f"pixelwise {DEFAULTS.model} {DEFAULTS.backbone}"
NUM_CLASSES = 11  # CamVid's

SIZES = ((360, 480), (720, 960))  # CamVid's own size, and twice it each way
BATCHES = (1, 8)
SCALING_SIDES = (256, 512, 768, 1024, 1536, 2048)
SCALING_BATCHES = (1, 2, 4, 8, 16)
FLAT_FROM_MEGAPIXELS = 0.26  # 512^2: below it a call's fixed costs show in the cost per megapixel
WARMUP_CALLS = 2  # oneDNN picks its kernels on the first calls at a new shape
MIN_RUNS = 2

# benchmarks/camvid.py scores the peer at TrainConfig's infer_scale, so that figure belongs to the peer
# run at that scale, which is timed as its own row; its figure at scale 1 to the plain row.
PEER_AT_INFER_SCALE = "smp Unet mobilenet_v2"

BF16_SETTING = "bf16-cl"  # torch: bf16 autocast + channels_last
FP16_SETTING = "fp16-cl"  # torch: fp16 autocast + channels_last (CPUs with AVX512-FP16)


# ---------------------------------------------------------------- peers

class Peer(nn.Module):
    """A peer network as pixelwise's models are: (N, 3, H, W) in 0..1 -> (N, 11, H, W) logits at any size.
    Normalises with ImageNet statistics (pixelwise does it inside its models too), pads to the size
    multiple the network needs (smp refuses others) and takes torchvision's dict output apart."""

    def __init__(self, net: nn.Module, multiple: int = 1):
        super().__init__()
        self.net, self.multiple = net, multiple
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = (x - self.mean) / self.std
        if self.multiple > 1:
            x = F.pad(x, (0, -w % self.multiple, 0, -h % self.multiple))
        out = self.net(x)
        out = out["out"] if isinstance(out, dict) else out
        return out[..., :h, :w]


def torchvision_peer(name: str) -> Peer:
    from torchvision.models import segmentation

    builder = getattr(segmentation, name)
    return Peer(builder(weights=None, weights_backbone=None, num_classes=NUM_CLASSES))


def smp_peer(architecture: str, encoder: str) -> Peer:
    import segmentation_models_pytorch as smp

    return Peer(getattr(smp, architecture)(encoder, encoder_weights=None, classes=NUM_CLASSES), multiple=32)


PEERS: dict[str, Callable[[], Peer]] = {
    "torchvision lraspp_mobilenet_v3_large": partial(torchvision_peer, "lraspp_mobilenet_v3_large"),
    "torchvision deeplabv3_mobilenet_v3_large": partial(torchvision_peer, "deeplabv3_mobilenet_v3_large"),
    "torchvision fcn_resnet50": partial(torchvision_peer, "fcn_resnet50"),
    "smp Unet mobilenet_v2": partial(smp_peer, "Unet", "mobilenet_v2"),
    "smp Unet resnet18": partial(smp_peer, "Unet", "resnet18"),
    "smp FPN mobilenet_v2": partial(smp_peer, "FPN", "mobilenet_v2"),
    "smp FPN resnet18": partial(smp_peer, "FPN", "resnet18"),
}
PEER_SETTINGS = ("fp32", BF16_SETTING, "onnxruntime-fp32")


def seeded(build: Callable[[], nn.Module]) -> nn.Module:
    """Random weights, the same every run: a peer's ONNX file in the cache matches its torch model."""
    torch.manual_seed(0)
    return build().eval()


class OrtPeer:
    """A peer's .onnx in ONNX Runtime with the session options of pixelwise's OnnxRuntimeEngine (one
    thread a physical core, all graph optimisations, no spinning): the same runtime on both sides."""

    def __init__(self, path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = physical_cores()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.scale = 1.0

    def run(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"images": network_input(images)})[0])

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return predict_logits(self.run, images, torch.device("cpu"), None, self.scale)


def export_peer(net: nn.Module, name: str, cache: Path) -> Path:
    """`net` as ONNX with dynamic batch, height and width, written once into `cache`. The TorchScript
    exporter: several times faster than dynamo here, and these graphs have no shape arithmetic it
    gets wrong (the example is not a multiple of 32, so smp's pad is traced, not skipped)."""
    path = cache / f"{name.replace(' ', '_')}-torch{torch.__version__.split('+')[0]}.onnx"
    if path.is_file():
        return path
    log(f"exporting {name} to {path} (once; cached)")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial_path = path.with_suffix(".partial.onnx")
    axes = {0: "batch", 2: "height", 3: "width"}
    # The exporter warns about traced shapes and its own deprecation at length; the check below is what counts.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.rand(1, 3, 200, 264),), str(partial_path), dynamo=False,
                          input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": axes, "logits": axes})
    check_peer_graph(net, partial_path)
    partial_path.replace(path)
    return path


def check_peer_graph(net: nn.Module, path: Path) -> None:
    """The graph must follow the eager network at another size and batch, or a size was baked in."""
    images = torch.rand(2, 3, 97, 131)
    with torch.no_grad():
        expected = net(images)
    got = OrtPeer(path).run(images)
    if got.shape != expected.shape or not torch.allclose(got, expected, atol=1e-3, rtol=1e-3):
        raise RuntimeError(f"the ONNX export of {path.name} differs from the eager network at 2x3x97x131")


# ---------------------------------------------------------------- what is timed

@dataclass
class Subject:
    """One model at one setting: the engine that is timed and the fp32 network it runs, for FLOPs and bytes."""
    model: str
    family: str  # pixelwise | zoo | torchvision | smp
    setting: str  # fp32 | bf16-cl | fp16-cl | onnxruntime-fp32 | openvino-fp32 | openvino-bf16 | onnxruntime-int8 ...
    engine: object  # anything with .logits(images) and a .scale, as pixelwise's engines
    network: nn.Module
    precision: str  # fp32 | bf16 | int8: which peak and element size apply
    scale: float = 1.0  # the network sees the image resized by this
    profile: str | None = None
    first_cell_only: bool = False

    @property
    def fused(self) -> bool:
        """Graph runtimes fold BatchNorm and activations into the convolutions: fewer bytes move."""
        return self.setting.startswith(("onnxruntime", "openvino"))

    @property
    def label(self) -> str:
        """The name a quality figure is filed under: `pixelwise accurate`, `smp Unet mobilenet_v2 @1.75x`."""
        if self.profile:
            return f"pixelwise {self.profile}"
        return self.model if self.scale == 1.0 else f"{self.model} @{self.scale:g}x"


def one_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:300] if lines else ''}"


def matches(only: str | None, *words) -> bool:
    return not only or only.lower() in " ".join(w for w in words if w).lower()


def accurate_scale(checkpoint: Path | None) -> float:
    if checkpoint is None:
        return DEFAULTS.infer_scale
    return TrainConfig.from_dict(load_checkpoint(checkpoint)["config"]).infer_scale


def default_network(checkpoint: Path | None) -> nn.Module:
    if checkpoint is not None:
        return model_from_checkpoint(load_checkpoint(checkpoint)).eval()
    return seeded(partial(create_model, DEFAULTS.model, backbone=DEFAULTS.backbone, num_classes=NUM_CLASSES,
                          pretrained=False))


def cached_export(checkpoint: Path, cache: Path, int8: bool) -> Path:
    """The checkpoint's .onnx, exported once (about 40 s) into `cache` under a key of the checkpoint's
    path, size and time: a retrained checkpoint gets a new file."""
    from pixelwise.inference.export import export_onnx

    stat = checkpoint.stat()
    key = f"{checkpoint.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{pixelwise.__version__}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    path = cache / f"{checkpoint.stem}-{digest}{'-int8' if int8 else ''}.onnx"
    if not path.is_file():
        log(f"exporting {checkpoint} to {path} (once; cached)")
        export_onnx(checkpoint, path, int8=int8, log=log)
    return path


def default_engines(args, notes: list[str]) -> list[tuple[str, str, Callable[[], object]]]:
    """(setting, precision, engine factory) for every engine and precision the default runs on. fp16 rows
    use bf16's element size and peak in the roofline (both 2 bytes; the measured peaks have no fp16 figure)."""
    native_bf16, native_fp16 = cpu_has_bf16(), cpu_has_fp16()

    def torch_engine(precision: str) -> TorchEngine:
        return TorchEngine(default_network(args.checkpoint), device="cpu", precision=precision)

    engines = [("fp32", "fp32", partial(torch_engine, "fp32"))]
    if native_bf16:
        engines.append((BF16_SETTING, "bf16", partial(torch_engine, "bf16")))
    if native_fp16:
        engines.append((FP16_SETTING, "bf16", partial(torch_engine, "fp16")))
    if args.checkpoint is None:
        notes.append("no --checkpoint: the pixelwise default ran on torch only (untrained weights); "
                     "ONNX Runtime and OpenVINO need an exported checkpoint")
        return engines
    onnx_file = partial(cached_export, args.checkpoint, args.cache)
    engines += [("onnxruntime-fp32", "fp32", lambda: OnnxRuntimeEngine(onnx_file(False))),
                ("openvino-fp32", "fp32", lambda: OpenVinoEngine(onnx_file(False), precision="fp32"))]
    if native_bf16:
        engines.append(("openvino-bf16", "bf16", lambda: OpenVinoEngine(onnx_file(False), precision="bf16")))
    if args.no_int8:
        notes.append("--no-int8: the int8 export was not timed")
    else:
        engines += [("onnxruntime-int8", "int8", lambda: OnnxRuntimeEngine(onnx_file(True))),
                    ("openvino-int8", "int8", lambda: OpenVinoEngine(onnx_file(True)))]
    return engines


def default_setting(profile: str, settings: set[str]) -> str | None:
    """What `pixelwise predict --profile P` runs here (engine auto, precision auto): OpenVINO where it is
    installed, else ONNX Runtime, else torch; accurate at a precision that keeps fp32's masks, fast in
    bf16 where native."""
    exact = {"openvino-fp32", "onnxruntime-fp32", FP16_SETTING, "fp32"}
    quick = {"openvino-bf16", "openvino-fp32", "onnxruntime-fp32", BF16_SETTING, "fp32"}
    order = ("openvino-bf16", "openvino-fp32", "onnxruntime-fp32", FP16_SETTING, BF16_SETTING, "fp32")
    allowed = exact if profile == "accurate" else quick
    return next((s for s in order if s in settings and s in allowed), None)


def default_subjects(args, notes: list[str]) -> Iterator[Subject]:
    """The default model on every engine; each engine is made once and serves both profiles."""
    profiles = (("accurate", accurate_scale(args.checkpoint)), ("fast", 1.0))
    network = None
    for setting, precision, make_engine in default_engines(args, notes):
        chosen = [(p, s) for p, s in profiles if matches(args.only, "pixelwise", DEFAULT_MODEL, setting, p)]
        if not chosen:
            continue
        try:
            engine = make_engine()
        except Exception as err:  # an export or a runtime refusing the graph costs this row, not the run
            notes.append(f"{DEFAULT_MODEL} {setting} not timed: {one_line(err)}")
            log(f"skipping {setting}: {notes[-1]}")
            continue
        network = network or default_network(args.checkpoint)
        for profile, scale in chosen:
            yield Subject(DEFAULT_MODEL, "pixelwise", setting, engine, network, precision, scale, profile)


def zoo_members(only: str | None, notes: list[str]) -> Iterator[tuple[str, nn.Module]]:
    """Each other model on the default backbone, then each other backbone under the default model. A
    model that refuses the default backbone (SegNet unpools, so it needs max-pooling indices) takes the
    first backbone it accepts; a backbone the default model refuses is left out, with a note."""
    wanted = [(m, DEFAULTS.backbone, list_backbones()) for m in list_models() if m != DEFAULTS.model]
    wanted += [(DEFAULTS.model, b, []) for b in list_backbones() if b != DEFAULTS.backbone]
    for model, backbone, fallbacks in wanted:
        if not matches(only, "zoo pixelwise", model, backbone):
            continue
        for candidate in dict.fromkeys([backbone, *fallbacks]):
            try:
                built = seeded(partial(create_model, model, backbone=candidate, num_classes=NUM_CLASSES,
                                       pretrained=False))
            except (ValueError, PixelwiseError) as err:
                if candidate == backbone:
                    then = "; timed on the first backbone it accepts" if fallbacks else ""
                    notes.append(f"zoo: {model} refuses {backbone} ({one_line(err)}){then}")
                continue
            backbone_name = "(no backbone)" if model == "fcn_vanilla" else candidate  # it never uses one
            yield f"pixelwise {model} {backbone_name}", built
            break


def zoo_subjects(args, notes: list[str]) -> Iterator[Subject]:
    """The zoo at torch auto (bf16 + channels_last where the CPU has native bf16): its best CPU setting."""
    setting, precision = (BF16_SETTING, "bf16") if cpu_has_bf16() else ("auto-fp32", "fp32")
    for name, model in zoo_members(args.only, notes):
        # The engine turns the model channels_last in place, which changes neither its FLOPs nor its bytes.
        engine = TorchEngine(model, device="cpu", precision="auto", exact=False)  # bf16 where native
        yield Subject(name, "zoo", setting, engine, model, precision)


def peer_engine(name: str, setting: str, cache: Path):
    net = seeded(PEERS[name])
    if setting == "fp32":
        return TorchEngine(net, device="cpu", precision="fp32")
    if setting == BF16_SETTING:
        return TorchEngine(net, device="cpu", precision="bf16")
    return OrtPeer(export_peer(net, name, cache))


def peer_subjects(args, notes: list[str], names=None) -> Iterator[Subject]:
    """Each peer at fp32, bf16 + channels_last and ONNX Runtime. The peer whose quality figure was
    measured at pixelwise's inference scale is also timed at that scale, at the first size and batch 1."""
    for name in names or PEERS:
        family = name.split()[0]
        network = None
        for setting in PEER_SETTINGS:
            if not matches(args.only, family, name, setting):
                continue
            try:
                engine = peer_engine(name, setting, args.cache)
            except Exception as err:  # an exporter failure costs this row, not the whole run
                notes.append(f"{name} {setting} not timed: {one_line(err)}")
                log(f"skipping {name} {setting}: {notes[-1]}")
                continue
            network = network or seeded(PEERS[name])
            precision = "bf16" if setting == BF16_SETTING else "fp32"
            yield Subject(name, family, setting, engine, network, precision)
            if name == PEER_AT_INFER_SCALE and setting != "fp32":
                yield Subject(name, family, setting, engine, network, precision, scale=DEFAULTS.infer_scale,
                              first_cell_only=True)


# ---------------------------------------------------------------- timing

class Costs:
    """FLOPs and bytes of a network at an input size, measured once and shared by all its settings."""

    def __init__(self, peak: dict, bandwidth: float):
        self.peak, self.bandwidth = peak, bandwidth
        self.flops: dict = {}
        self.traffic: dict = {}

    def gflops(self, subject: Subject, size: tuple[int, int]) -> float:
        key = (subject.model, size)
        if key not in self.flops:
            self.flops[key] = measure(subject.network, size)["gflops"]
        return self.flops[key]

    def bytes_moved(self, subject: Subject, size: tuple[int, int]):
        key = (subject.model, size, subject.precision, subject.fused)
        if key not in self.traffic:
            self.traffic[key] = forward_traffic(subject.network, size, subject.precision, subject.fused)
        return self.traffic[key]

    def figures(self, subject: Subject, size: tuple[int, int], batch: int, seconds: float) -> dict:
        network_size = scaled(size, subject.scale)
        gflops = self.gflops(subject, network_size)
        traffic = self.bytes_moved(subject, network_size)
        machine_peak, conv_peak = compute_ceilings(self.peak, subject.precision)
        placed = place(gflops * batch * 1e9, traffic.total(batch), seconds, machine_peak, conv_peak, self.bandwidth)
        return {"gflops_per_image": round(gflops, 2), **placed}


def scaled(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """The size the network sees: F.interpolate with scale_factor rounds down."""
    return int(size[0] * scale), int(size[1] * scale)


def time_calls(subject: Subject, images: torch.Tensor, runs: int, max_seconds: float) -> list[float]:
    """Seconds of each timed call, after the warm-up: `runs` calls, or fewer once `max_seconds` have passed."""
    subject.engine.scale = subject.scale
    with torch.inference_mode():
        for _ in range(WARMUP_CALLS):
            subject.engine.logits(images)
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < MIN_RUNS or (len(times) < runs and time.perf_counter() - start < max_seconds):
            call = time.perf_counter()
            subject.engine.logits(images)
            times.append(time.perf_counter() - call)
    return times


def predict_seconds(known: dict, size: tuple[int, int], batch: int) -> float | None:
    """A call's time from a cell already measured (or predicted): a smaller batch at this size, scaled
    by the batch; else this batch at a smaller size, scaled by the pixels. Both overestimate a little."""
    same_size = [(b, s) for (sz, b), s in known.items() if sz == size and b < batch]
    if same_size:
        smaller_batch, seconds = max(same_size)
        return seconds * batch / smaller_batch
    pixels = size[0] * size[1]
    same_batch = [(sz[0] * sz[1], s) for (sz, b), s in known.items() if b == batch and sz[0] * sz[1] < pixels]
    if same_batch:
        smaller_pixels, seconds = max(same_batch)
        return seconds * pixels / smaller_pixels
    return None


def measure_cell(subject: Subject, size, batch, known: dict, args, costs: Costs) -> dict:
    """Time one cell, or say why not. `known`: seconds a call of this subject's earlier cells, for the cap."""
    guess = predict_seconds(known, size, batch)
    if guess is not None and guess > args.cell_cap:
        known[(size, batch)] = guess
        return {"skipped": f"predicted {guess:.1f} s a call, over --cell-cap {args.cell_cap:g} s"}
    images = torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(0))
    try:
        times = time_calls(subject, images, args.runs, args.max_seconds)
    except Exception as err:  # one broken cell (an engine refusing a shape) must not end a 20-minute run
        return {"error": one_line(err)}
    median = statistics.median(times)
    known[(size, batch)] = median
    return {"median_ms": round(1000 * median, 2), "images_per_s": round(batch / median, 2), "runs": len(times),
            **costs.figures(subject, size, batch, median)}


def time_subject(subject: Subject, grid, args, costs: Costs) -> list[dict]:
    known: dict = {}
    rows = []
    for size, batch in grid[:1] if subject.first_cell_only else grid:
        row = {"model": subject.model, "label": subject.label, "family": subject.family, "setting": subject.setting,
               "profile": subject.profile, "scale": subject.scale, "size": f"{size[0]}x{size[1]}", "batch": batch}
        row.update(measure_cell(subject, size, batch, known, args, costs))
        log(format_row(row))
        rows.append(row)
    return rows


TABLE = "{:<44} {:<17} {:>10} {:>3} {:>9} {:>8} {:>7} {:>8} {:>6} {:>6} {:<7}"


def format_row(row: dict) -> str:
    if "median_ms" not in row:
        return f"{row['label']:<44} {row['setting']:<17} {row['size']:>10} {row['batch']:>3}  " \
               f"{row.get('skipped') or row.get('error')}"
    return TABLE.format(row["label"], row["setting"], row["size"], row["batch"], f"{row['median_ms']:.1f}",
                        f"{row['images_per_s']:.2f}", f"{row['gflops_per_image']:.1f}", f"{row['achieved_gflops']:.1f}",
                        f"{row['peak_share']:.0%}", f"{row['roofline_share']:.0%}", row["bound_by"])


TABLE_HEADER = TABLE.format("model", "setting", "HxW", "N", "ms", "img/s", "GFLOPs", "GFLOP/s", "peak",
                            "roof", "bound")


# ---------------------------------------------------------------- scaling with input size and batch

def scaling_subjects(args) -> Iterator[Subject]:
    """The default at the fast profile on its best torch setting, and two peers at bf16."""
    network = default_network(args.checkpoint)
    if matches(args.only, "pixelwise fast", DEFAULT_MODEL):
        engine = TorchEngine(copy.deepcopy(network), device="cpu", precision="auto", exact=False)
        yield Subject(DEFAULT_MODEL, "pixelwise", BF16_SETTING if engine.dtype else "auto-fp32", engine, network,
                      "bf16" if engine.dtype else "fp32", profile="fast")
    for name in ("torchvision lraspp_mobilenet_v3_large", "smp Unet mobilenet_v2"):
        if matches(args.only, name):
            yield Subject(name, name.split()[0], BF16_SETTING, peer_engine(name, BF16_SETTING, args.cache),
                          seeded(PEERS[name]), "bf16")


def scaling_point(subject: Subject, size, batch, known: dict, args, costs: Costs) -> dict:
    cell = measure_cell(subject, size, batch, known, args, costs)
    point = {"size": f"{size[0]}x{size[1]}", "batch": batch, "megapixels": round(size[0] * size[1] / 1e6, 3)}
    if "median_ms" not in cell:
        return {**point, **cell}
    traffic = costs.bytes_moved(subject, scaled(size, subject.scale))
    return {**point, "median_ms": cell["median_ms"],
            "ms_per_megapixel": round(cell["median_ms"] / (batch * point["megapixels"]), 2),
            "ms_per_image": round(cell["median_ms"] / batch, 2),
            "largest_feature_map_mb": round(traffic.largest_tensor_bytes / 2**20, 1),
            "roofline_share": cell["roofline_share"], "bound_by": cell["bound_by"]}


def measure_scaling(subjects, sides, batches, base, args, costs: Costs) -> dict:
    by_size, by_batch = {}, {}
    for subject in subjects:
        known: dict = {}
        by_size[subject.label] = [scaling_point(subject, (side, side), 1, known, args, costs) for side in sides]
        known = {}
        by_batch[subject.label] = [scaling_point(subject, base, batch, known, args, costs) for batch in batches]
        for point in (*by_size[subject.label], *by_batch[subject.label]):
            log(f"  scaling {subject.label:<40} {point['size']:>10} x{point['batch']:<3} "
                f"{point.get('median_ms', point.get('skipped') or point.get('error'))}")
    return {"by_size": by_size, "by_batch": by_batch}


def describe_knees(by_size: dict, caches: dict, rise: float = 0.2) -> list[str]:
    """Whether cost per megapixel stays flat (cost linear in pixels), and if not, where it turns up and
    what the working set was doing there. Below 512^2 a call's fixed costs (dispatch, thread wake-up,
    resizes) weigh on few pixels, so flatness is judged from 512^2 on and small inputs get a note of their own."""
    notes = []
    for label, points in by_size.items():
        timed = [p for p in points if "ms_per_megapixel" in p]
        flat = [p for p in timed if p["megapixels"] >= FLAT_FROM_MEGAPIXELS]
        if len(flat) < 2:
            continue
        per_mp = [p["ms_per_megapixel"] for p in flat]
        knee = next((flat[i] for i in range(1, len(flat))
                     if per_mp[i] > (1 + rise) * min(per_mp[:i])), None)
        if max(per_mp) <= (1 + rise) * min(per_mp):
            notes.append(f"{label}: linear in pixels from {flat[0]['size']} to {flat[-1]['size']} "
                         f"({min(per_mp):.0f}-{max(per_mp):.0f} ms per megapixel)")
        elif knee is not None:
            before = min(flat[:flat.index(knee)], key=lambda p: p["ms_per_megapixel"])
            notes.append(f"{label}: knee at {knee['size']}: {knee['ms_per_megapixel']:.0f} ms per megapixel against "
                         f"{before['ms_per_megapixel']:.0f} at {before['size']}, and the share of its roofline falls "
                         f"from {before['roofline_share']:.0%} to {knee['roofline_share']:.0%}. Its largest feature "
                         f"map grows from {before['largest_feature_map_mb']} to {knee['largest_feature_map_mb']} MB "
                         f"(L2 {caches.get('L2', '?')}, L3 {caches.get('L3', '?')}): the likely cause is feature maps "
                         "outgrowing the cache this process really gets, so each layer waits on memory")
        else:
            notes.append(f"{label}: cost per megapixel falls with size, {per_mp[0]:.0f} at {flat[0]['size']} to "
                         f"{per_mp[-1]:.0f} at {flat[-1]['size']}: larger maps keep the cores' vector units busier")
        if timed[0]["megapixels"] < flat[0]["megapixels"]:
            overhead = timed[0]["ms_per_megapixel"] / flat[0]["ms_per_megapixel"] - 1
            if overhead > rise:
                notes.append(f"{label}: {timed[0]['size']} costs {overhead:.0%} more per megapixel than "
                             f"{flat[0]['size']}: fixed per-call costs weigh on small inputs")
    return notes


def describe_batching(by_batch: dict) -> list[str]:
    notes = []
    for label, points in by_batch.items():
        timed = [p for p in points if "ms_per_image" in p]
        if len(timed) < 2:
            continue
        first, last = timed[0], timed[-1]
        best = min(timed, key=lambda p: p["ms_per_image"])
        verdict = ("batching does not pay here: one image a call is cheapest" if best is first else
                   f"cheapest at batch {best['batch']} ({first['ms_per_image'] / best['ms_per_image']:.2f}x "
                   "faster per image than batch 1)")
        notes.append(f"{label}: {first['ms_per_image']:.0f} ms per image at batch {first['batch']}, "
                     f"{last['ms_per_image']:.0f} at batch {last['batch']}; {verdict}")
    return notes


# ---------------------------------------------------------------- summaries

def best_rows(rows: list[dict], size: str, batch: int) -> dict[str, dict]:
    """label -> its fastest timed row at one size and batch."""
    best: dict[str, dict] = {}
    for row in rows:
        if row["size"] == size and row["batch"] == batch and "median_ms" in row:
            if row["label"] not in best or row["median_ms"] < best[row["label"]]["median_ms"]:
                best[row["label"]] = row
    return best


def headline_rows(rows: list[dict], size: str) -> dict[str, dict]:
    """label -> the row that stands for it at batch 1: a peer's fastest setting, and for pixelwise's
    profiles what `pixelwise predict --profile P` runs by default (`default_setting`), not a faster
    setting a user would have to ask for."""
    best = best_rows(rows, size, 1)
    for profile in ("accurate", "fast"):
        label = f"pixelwise {profile}"
        mine = {r["setting"]: r for r in rows if r["label"] == label and r["size"] == size and r["batch"] == 1
                and "median_ms" in r}
        chosen = default_setting(profile, set(mine))
        if chosen:
            best[label] = mine[chosen]
    return best


def ratio(best: dict, numerator: str, denominator: str) -> dict | None:
    if numerator not in best or denominator not in best:
        return None
    a, b = best[numerator], best[denominator]
    return {numerator: {"setting": a["setting"], "median_ms": a["median_ms"]},
            denominator: {"setting": b["setting"], "median_ms": b["median_ms"]},
            "ratio": round(a["median_ms"] / b["median_ms"], 3)}


def onnx_speedups(rows: list[dict], size: str) -> dict:
    """Per profile: torch fp32 eager against the faster ONNX engine at fp32."""
    speedups = {}
    for profile in ("accurate", "fast"):
        mine = {r["setting"]: r for r in rows if r["profile"] == profile and r["size"] == size and r["batch"] == 1
                and "median_ms" in r}
        onnx = [mine[s] for s in ("onnxruntime-fp32", "openvino-fp32") if s in mine]
        if "fp32" in mine and onnx:
            fastest = min(onnx, key=lambda r: r["median_ms"])
            speedups[profile] = {"torch_fp32_ms": mine["fp32"]["median_ms"], "engine": fastest["setting"],
                                 "engine_ms": fastest["median_ms"],
                                 "speedup": round(mine["fp32"]["median_ms"] / fastest["median_ms"], 3)}
    return speedups


def fastest_engines(rows: list[dict], size: str) -> dict:
    fastest = {}
    for profile in ("accurate", "fast"):
        mine = [r for r in rows if r["profile"] == profile and r["size"] == size and r["batch"] == 1
                and "median_ms" in r]
        if mine:
            row = min(mine, key=lambda r: r["median_ms"])
            fastest[profile] = {"setting": row["setting"], "median_ms": row["median_ms"]}
    return fastest


def targets(rows: list[dict], size: str) -> dict:
    best = headline_rows(rows, size)
    peer_scaled = f"{PEER_AT_INFER_SCALE} @{DEFAULTS.infer_scale:g}x"
    return {"at": f"{size}, batch 1, peers at their fastest setting, pixelwise at its profiles' defaults",
            "fast_vs_lraspp": ratio(best, "pixelwise fast", "torchvision lraspp_mobilenet_v3_large"),
            "accurate_vs_smp_unet_mobilenet_v2": ratio(best, "pixelwise accurate", PEER_AT_INFER_SCALE),
            "accurate_vs_smp_unet_mobilenet_v2_at_same_scale": ratio(best, "pixelwise accurate", peer_scaled),
            "onnx_fp32_speedup_over_torch_fp32": onnx_speedups(rows, size),
            "fastest_engine": fastest_engines(rows, size)}


def roofline_summary(rows: list[dict], size: str) -> dict:
    """Where each model and setting sits at the first size, batch 1: memory- or compute-bound, and how
    close to its roofline."""
    placed = {}
    for row in rows:
        if row["size"] == size and row["batch"] == 1 and "median_ms" in row:
            placed[f"{row['label']} ({row['setting']})"] = {
                "bound_by": row["bound_by"], "intensity_flop_per_byte": row["intensity_flop_per_byte"],
                "roofline_share": row["roofline_share"], "peak_share": row["peak_share"]}
    memory = sorted(k for k, v in placed.items() if v["bound_by"] == "memory")
    return {"at": f"{size}, batch 1", "models": placed, "memory_bound": memory,
            "compute_bound": sorted(k for k, v in placed.items() if v["bound_by"] == "compute")}


def describe_roofline(summary: dict) -> str:
    """One sentence: which models sit under the bandwidth slope and how close to it they run."""
    def listed(keys):
        return "; ".join(f"{k} at {summary['models'][k]['roofline_share']:.0%} of its roofline, "
                         f"{summary['models'][k]['intensity_flop_per_byte']:g} FLOP/B" for k in keys) or "none"
    return (f"memory-bound at {summary['at']} (few FLOPs per byte: depthwise convolutions, wide full-resolution "
            f"maps): {listed(summary['memory_bound'])}. Compute-bound: {listed(summary['compute_bound'])}")


def quality_points(rows: list[dict], quality: dict[str, float], size: str) -> tuple[list[dict], list[str]]:
    """(model at its headline setting + its mean IoU, Pareto flag), and the labels without a figure."""
    best = headline_rows(rows, size)
    known = {k.lower(): v for k, v in quality.items()}
    points = [{"label": label, "setting": row["setting"], "median_ms": row["median_ms"],
               "mean_iou": known[label.lower()]} for label, row in best.items() if label.lower() in known]
    points.sort(key=lambda p: (p["median_ms"], -p["mean_iou"]))
    best_iou = -1.0
    for point in points:  # fastest first: on the front if nothing faster is at least as accurate
        point["pareto"] = point["mean_iou"] > best_iou
        best_iou = max(best_iou, point["mean_iou"])
    return points, sorted(label for label in best if label.lower() not in known)


# ---------------------------------------------------------------- plots

def plot_quality(points: list[dict], size: str, cpu: str, path: Path) -> None:
    fig = new_figure((8, 5.5))
    ax = fig.subplots()
    for point in points:
        ax.scatter(point["median_ms"], point["mean_iou"], color="tab:red" if point["pareto"] else "tab:gray", zorder=3)
        ax.annotate(f"{point['label']} ({point['setting']})", (point["median_ms"], point["mean_iou"]),
                    textcoords="offset points", xytext=(5, 4), fontsize=8)
    front = [p for p in points if p["pareto"]]
    if front:
        xs, ys = [p["median_ms"] for p in front], [p["mean_iou"] for p in front]
        ax.step(xs, ys, where="post", color="tab:red", alpha=0.6, label="Pareto front")
        ax.legend(loc="lower right")
    if not points:
        ax.text(0.5, 0.5, "no row has a quality figure (--quality)", ha="center", transform=ax.transAxes)
    ax.set_xscale("log")
    if points:  # room on the right for the labels
        latencies = [p["median_ms"] for p in points]
        ax.set_xlim(min(latencies) / 1.3, max(latencies) * 2.5)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    # minor ticks: label 2x and 5x only, or the labels run into each other
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}" if f"{value:g}"[0] in "25" else ""))
    ax.set(xlabel=f"latency at {size}, batch 1, fastest setting (ms, log scale)", ylabel="CamVid val mean IoU",
           title=f"Speed against quality\n{cpu}, {torch.get_num_threads()} threads")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    save_figure(fig, path)


def plot_scaling(scaling: dict, base: str, cpu: str, path: Path) -> None:
    fig = new_figure((11, 8))
    (ax_ms, ax_mp), (ax_batch, ax_image) = fig.subplots(2, 2)
    for label, points in scaling["by_size"].items():
        timed = [p for p in points if "median_ms" in p]
        xs = [p["megapixels"] for p in timed]
        ax_ms.plot(xs, [p["median_ms"] for p in timed], marker="o", label=label)
        ax_mp.plot(xs, [p["ms_per_megapixel"] for p in timed], marker="o", label=label)
    for label, points in scaling["by_batch"].items():
        timed = [p for p in points if "median_ms" in p]
        xs = [p["batch"] for p in timed]
        ax_batch.plot(xs, [p["median_ms"] for p in timed], marker="o", label=label)
        ax_image.plot(xs, [p["ms_per_image"] for p in timed], marker="o", label=label)
    sides = [p["size"] for points in scaling["by_size"].values() for p in points]
    ax_ms.set(xlabel=f"megapixels (square, {sides[0]} to {sides[-1]}), batch 1", ylabel="latency (ms)",
              title="Latency against input size")
    ax_mp.set(xlabel="megapixels", ylabel="ms per megapixel", title="Flat = linear in pixels", ylim=(0, None))
    ax_batch.set(xlabel=f"batch size at {base}", ylabel="latency (ms)", title="Latency against batch size")
    ax_image.set(xlabel=f"batch size at {base}", ylabel="ms per image", title="Flat = linear in images", ylim=(0, None))
    for ax in (ax_ms, ax_mp, ax_batch, ax_image):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Scaling, {cpu}, {torch.get_num_threads()} threads")
    fig.tight_layout()
    save_figure(fig, path)


# ---------------------------------------------------------------- the run

def cache_sizes() -> dict:
    """lscpu's L2 and L3 lines: feature maps that outgrow them explain knees in the scaling curves."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {level: line.split(":", 1)[1].strip() for line in out.splitlines()
            for level in ("L2", "L3") if line.startswith(f"{level} cache")}


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    try:
        return tuple(tuple(int(v) for v in item.lower().split("x")) for item in text.split(","))
    except ValueError:
        raise SystemExit(f"--sizes {text!r}: give HEIGHTxWIDTH pairs separated by commas, e.g. 360x480,720x960")


def quality_from_camvid_run(data: dict) -> dict[str, float]:
    """The rows' quality figures in a benchmarks/camvid.py results file: its peer's, at both scales."""
    peer = data.get("peer")
    if not peer:
        return {}
    return {f"{PEER_AT_INFER_SCALE} @{peer['infer_scale']:g}x": peer["val_mean_iou"],
            PEER_AT_INFER_SCALE: peer["val_mean_iou_at_scale_1"]}


def load_quality(paths: list[str]) -> dict[str, float]:
    """--quality's figures, read before timing starts, so a bad file costs no run. Each file is either a
    benchmarks/camvid.py results file or a JSON object of label -> mean IoU; no figure is built in, so each
    point on the quality plot traces to a file the JSON names."""
    quality = {}
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
            if data.get("benchmark") == "camvid":
                quality.update(quality_from_camvid_run(data))
            else:
                quality.update({str(k): float(v) for k, v in data.items()
                                if k not in ("date", "commit", "machine", "provenance", "command")})
        except (OSError, ValueError, AttributeError, KeyError, TypeError) as err:
            raise SystemExit(f"--quality {path}: {err}; give a benchmarks/camvid.py results file or a JSON object "
                             'of label -> mean IoU, e.g. {"pixelwise accurate": 0.74, "pixelwise fast": 0.72}')
    return quality


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="a CamVid .pt from `pixelwise train` (FCN-8s/EfficientNet-"
                        "Lite0); without it the default runs untrained, on torch only")
    parser.add_argument("--quality", nargs="+", default=[], metavar="FILE",
                        help='benchmarks/camvid.py results files, or JSON {"label": CamVid val mean IoU}, e.g. '
                        '{"pixelwise accurate": 0.74, "pixelwise fast": 0.72}; labels as in the rows\' "label"')
    parser.add_argument("--cache", type=Path, default=Path("~/.cache/pixelwise/benchmarks/speed").expanduser(),
                        help="where exported .onnx files are kept between runs")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 export (its calibration reads the "
                        "checkpoint's training images)")
    parser.add_argument("--sizes", type=parse_sizes, help="HEIGHTxWIDTH,... (default: 360x480,720x960)")
    parser.add_argument("--batches", help="comma-separated (default: 1,8)")
    parser.add_argument("--runs", type=int, default=5, help="timed calls a cell (default: 5) ...")
    parser.add_argument("--max-seconds", type=float, default=4.0, help="... or fewer once this many seconds have "
                        f"passed, but at least {MIN_RUNS} (default: 4)")
    parser.add_argument("--cell-cap", type=float, default=15.0, help="skip a cell whose call is predicted to take "
                        "longer than this, in seconds (default: 15)")
    parser.add_argument("--only", help="time only rows whose family, model, setting or profile contains this")
    parser.add_argument("--quick", action="store_true", help="smoke run: first size, batch 1, a short scaling sweep, "
                        "and (unless --only picks rows) the default and two peers only")
    parser.add_argument("--json", type=Path, default=RESULTS / "speed.json",
                        help="where the figures go; the plots are written beside it")
    args = parser.parse_args()
    args.sizes = args.sizes or (SIZES[:1] if args.quick else SIZES)
    args.batches = tuple(int(b) for b in args.batches.split(",")) if args.batches else (1,) if args.quick else BATCHES
    if args.checkpoint is not None:
        args.checkpoint = args.checkpoint.expanduser()
        if not args.checkpoint.is_file():
            raise SystemExit(f"--checkpoint {args.checkpoint}: file not found")
    quality_sources = list(args.quality)
    args.quality = load_quality(args.quality)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    return args


def all_subjects(args, notes: list[str]) -> Iterator[Subject]:
    yield from default_subjects(args, notes)
    if args.quick and not args.only:
        yield from peer_subjects(args, notes, names=("torchvision lraspp_mobilenet_v3_large", PEER_AT_INFER_SCALE))
        return
    yield from zoo_subjects(args, notes)
    yield from peer_subjects(args, notes)


METHOD_NOTE = ("GFLOPs count a multiply-add as 2 FLOPs (torch FlopCounterMode) at the size the network sees (the "
               "accurate profile resizes by its inference scale first); resizes outside the network are not counted. "
               "peak_share: against the larger of the matmul and conv peaks at the row's precision; roofline: "
               "min(conv peak, intensity x copy bandwidth). Bytes are estimated by running the eager network (every "
               "layer's inputs and outputs plus the parameters; for ONNX Runtime and OpenVINO without the "
               "BatchNorm and activation layers they fuse into convolutions; int8 as a quarter of fp32). Feature "
               "maps that stay in cache never reach DRAM, so intensity is a lower bound, and a roofline_share "
               "above 1 means the run moved fewer bytes than estimated")


def measure_machine(args) -> tuple[str, dict, Costs]:
    """The CPU, its caches, and its measured ceilings, printed first: figures from other machines differ."""
    cpu, caches = cpu_model(), cache_sizes()
    log(f"CPU: {cpu} ({', '.join(f'{k} {v}' for k, v in caches.items())}); torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, native bf16: {cpu_has_bf16()}")
    peak, bandwidth = measure_peaks(quick=args.quick), bandwidth_gbs()
    log(f"peak: {json.dumps(peak)}; memory bandwidth {bandwidth} GB/s")
    return cpu, caches, Costs(peak, bandwidth)


def run_scaling(args, costs: Costs, caches: dict) -> dict:
    sides = SCALING_SIDES[:3] if args.quick else SCALING_SIDES
    batches = SCALING_BATCHES[:3] if args.quick else SCALING_BATCHES
    base = args.sizes[0]
    log(f"scaling: {', '.join(f'{s}x{s}' for s in sides)} at batch 1; batches {batches} at {base[0]}x{base[1]}")
    scaling = measure_scaling(scaling_subjects(args), sides, batches, base, args, costs)
    scaling["knees"] = describe_knees(scaling["by_size"], caches)
    scaling["batching"] = describe_batching(scaling["by_batch"])
    return scaling


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    cpu, caches, costs = measure_machine(args)
    grid = [(size, batch) for size in args.sizes for batch in args.batches]
    base = f"{args.sizes[0][0]}x{args.sizes[0][1]}"
    notes: list[str] = []

    log(TABLE_HEADER)
    rows = [row for subject in all_subjects(args, notes) for row in time_subject(subject, grid, args, costs)]
    scaling = run_scaling(args, costs, caches)

    points, unrated = quality_points(rows, args.quality, base)
    plot_quality(points, base, cpu, args.json.parent / "speed_quality.png")
    if scaling["by_size"]:
        plot_scaling(scaling, base, cpu, args.json.parent / "speed_scaling.png")

    roofline = roofline_summary(rows, base)
    notes += [*scaling["knees"], *scaling["batching"], describe_roofline(roofline), METHOD_NOTE]
    result = {"benchmark": "speed", **run_record(), "cpu": cpu, "caches": caches, "threads": torch.get_num_threads(),
              "native_bf16": cpu_has_bf16(), "torch": torch.__version__, "peak": costs.peak,
              "bandwidth_gbs": costs.bandwidth, "checkpoint": str(args.checkpoint) if args.checkpoint else None,
              "runs": args.runs, "max_seconds": args.max_seconds, "cell_cap_s": args.cell_cap, "rows": rows,
              "roofline": roofline, "scaling": scaling, "targets": targets(rows, base),
              "quality": {"points": points, "no_quality_figure": unrated, "sources": quality_sources},
              "notes": notes, "seconds": round(time.perf_counter() - started, 1)}
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    log(json.dumps(result))


if __name__ == "__main__":
    main()
