"""Engines: what turns a batch of images into logits. Every engine has the same one method,

    engine.logits(images)   (N, 3, H, W) float in 0..1  ->  (N, C, H, W) float32 logits on the CPU,

at the input's size, with the checkpoint's inference scale applied inside. Predictor, tiling and the
folder pipeline work on that contract alone, so an exported model runs wherever eager PyTorch does.

`engine.streams` says how many threads may call `logits` at once, each getting a share of the cores:
1 (the default) gives one call all the cores, the lowest latency for one image. Exported graphs
made with `streams=N` run N calls side by side on a core or so each, which on a small CPU gets more
images through than one call spread over every core (see `inference.pipeline`).

- `TorchEngine`: the checkpoint's model in eager PyTorch.
- `OnnxRuntimeEngine`, `OpenVinoEngine`: an .onnx file written by `pixelwise export` (see
  inference.export). The graph is the network alone; the inference-scale resize before it and the
  resize of the logits back after it run here, through the same `runtime.predict_logits` as eager
  PyTorch, so engines differ from eager only inside the network.

An engine made from a model file carries `meta`: class names, palette, ignore index, inference scale
(see `checkpoint_metadata`), which is all a Predictor needs. onnxruntime, onnx and openvino are
imported only when an engine that needs them is made: `import pixelwise` stays light.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path

import torch
from tqdm import tqdm

import pixelwise
from pixelwise.checkpoint import load_checkpoint, model_from_checkpoint
from pixelwise.config import TrainConfig
from pixelwise.data.transforms import to_tensors
from pixelwise.errors import PixelwiseError
from pixelwise import runtime
from pixelwise.runtime import PRECISIONS, inference_setup, predict_logits, resolve_device

ENGINES = ("torch", "onnxruntime", "openvino")
STATIC_SHAPES = 4  # OpenVINO graphs compiled for one input shape, kept at a time
STATIC_COMPILES = 16  # ... and compiled in an engine's life, at most

# What the exported graph takes and gives, written into every .onnx so the file explains itself.
GRAPH_INPUT = "images: float32 (N, 3, H, W), RGB in 0..1 (8-bit pixel / 255), any N, H and W"
GRAPH_OUTPUT = "logits: float32 (N, C, H, W) at the input's H and W; argmax over C is the class index"
RESIZE = ("outside the graph: resize the image by infer_scale (bilinear, half-pixel centres, antialiased when "
          "infer_scale < 1), run the graph, resize its logits back to the image size (bilinear, half-pixel); "
          "pixelwise engines do both")


def checkpoint_metadata(ckpt: dict, model: torch.nn.Module) -> dict:
    """Everything needed to predict with a model besides its weights, as plain JSON types.
    Written into exported .onnx files (metadata_props, one JSON value a key) and held by engines."""
    cfg = TrainConfig.from_dict(ckpt["config"])
    encoder = model.encoder
    return {
        "pixelwise_version": pixelwise.__version__,
        "class_names": list(ckpt["class_names"]),
        "palette": [[int(v) for v in rgb] for rgb in ckpt["palette"]],
        "ignore_index": int(ckpt["ignore_index"]),
        "infer_scale": float(cfg.infer_scale),
        "input": GRAPH_INPUT,
        # The graph normalises itself: callers feed 0..1 RGB and never apply these.
        "normalisation": {"inside_graph": True, "formula": "(images - mean) / std, per RGB channel",
                          "mean": [round(float(v), 7) for v in encoder.mean.flatten()],
                          "std": [round(float(v), 7) for v in encoder.std.flatten()]},
        "output": GRAPH_OUTPUT,
        "resize": RESIZE,
        "architecture": {"model": cfg.model, "backbone": cfg.backbone, "upsample": cfg.upsample},
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


def import_optional(module: str, extra: str, purpose: str):
    """Import an optional dependency, or say which pip extra brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise PixelwiseError(f"{purpose} needs the {module.split('.')[0]} package, which is not installed: "
                             f"pip install 'pixelwise[{extra}]'") from None


def physical_cores() -> int:
    """Cores this process may run on, counting hyperthread siblings once: a second thread on the
    same core only competes for the same vector units in convolution kernels."""
    try:
        cpus = os.sched_getaffinity(0)
        return len({Path(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list").read_text().strip()
                    for c in cpus})
    except (AttributeError, OSError):  # not Linux: no topology files
        return os.cpu_count() or 1


# ---------------------------------------------------------------- eager PyTorch

class TorchEngine:
    """Eager PyTorch: the model on a device, in reduced precision + channels_last where the hardware has it
    natively (`exact`: precision that keeps fp32's masks, see `runtime.resolve_precision`).
    One stream: torch's intra-op threads are per process, so concurrent calls would only fight over them."""
    name = "torch"
    streams = 1

    def __init__(self, model: torch.nn.Module, device: str = "auto", precision: str = "auto", scale: float = 1.0,
                 meta: dict | None = None, exact: bool = True):
        self.model, self.device, self.dtype = inference_setup(model, device, precision, exact)
        self.scale = scale
        self.meta = meta

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", precision: str = "auto",
                        exact: bool = True) -> "TorchEngine":
        ckpt = load_checkpoint(path)
        model = model_from_checkpoint(ckpt)
        meta = checkpoint_metadata(ckpt, model)
        return cls(model, device=device, precision=precision, scale=meta["infer_scale"], meta=meta, exact=exact)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return predict_logits(self.model, images, self.device, self.dtype, self.scale).cpu()


# ---------------------------------------------------------------- exported graphs

def network_input(images: torch.Tensor):
    """float32, contiguous NCHW numpy: what both runtimes read without a copy of their own."""
    return images.float().contiguous().numpy()


class ExportedGraph:
    """What both runtimes share: `run` is the graph alone, (N, 3, h, w) -> (N, C, h, w) logits, and the
    inference-scale resizes around it are eager PyTorch's (`runtime.predict_logits`)."""
    scale: float
    streams: int = 1

    def run(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return predict_logits(self.run, images, torch.device("cpu"), None, self.scale)


class OnnxRuntimeEngine(ExportedGraph):
    """An exported .onnx in ONNX Runtime (CPU, or CUDA when onnxruntime-gpu sees a GPU).

    Session options suit a process that shares the CPU with torch: one intra-op thread a physical
    core, all graph optimisations (constant folding, Conv+activation fusion, NCHWc layouts), and no
    spinning, so ORT's idle threads do not busy-wait while torch resizes the images. It runs the file's
    own precision, which keeps fp32's masks, so `exact` changes nothing here."""
    name = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None, device: str = "auto", precision: str = "auto",
                 streams: int = 1, exact: bool = True):
        ort = import_optional("onnxruntime", "onnx", "--engine onnxruntime")
        self.path = Path(path)
        if precision in ("bf16", "fp16"):
            raise PixelwiseError("onnxruntime runs the .onnx file's own precision (fp32, or int8 from "
                                 f"`pixelwise export --int8`); use --precision auto or fp32, or --engine torch or "
                                 f"openvino for {precision}")
        self.streams = check_streams(streams)
        options = ort.SessionOptions()
        # A session runs concurrent calls safely, each on its own intra-op threads: share the cores out.
        options.intra_op_num_threads = max(1, (threads or physical_cores()) // self.streams)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=ort_providers(ort, device))
        except Exception as err:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
            raise PixelwiseError(f"onnxruntime cannot load {self.path} ({type(err).__name__}: "
                                 f"{str(err).splitlines()[0][:300]}); re-export it with `pixelwise export`") from None
        self.meta = decode_metadata(self.session.get_modelmeta().custom_metadata_map, self.path)
        self.scale = float(self.meta["infer_scale"])
        self.input_name = self.session.get_inputs()[0].name

    def run(self, images: torch.Tensor) -> torch.Tensor:
        """The graph alone: (N, 3, h, w) -> (N, C, h, w) logits."""
        return torch.from_numpy(self.session.run(None, {self.input_name: network_input(images)})[0])


def ort_providers(ort, device: str) -> list[str]:
    available = ort.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise PixelwiseError("--device cuda with --engine onnxruntime needs the onnxruntime-gpu package and a "
                             f"CUDA GPU (this onnxruntime offers {', '.join(available)}); use --device cpu")
    if device not in ("auto", "cpu", "cuda"):
        raise PixelwiseError(f"unknown device {device!r}; choose auto, cpu or cuda")
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OpenVinoEngine(ExportedGraph):
    """An exported .onnx compiled by OpenVINO for the CPU (`pip install 'pixelwise[openvino]'`).

    Precision: `auto` is bf16 where the CPU has it natively (AMX, AVX512-BF16, as OpenVINO itself would pick), unless
    `exact` (`--profile accurate`), which runs fp32: bf16 flips 0.4% of the pixels, and OpenVINO's fp16
    was slower than its fp32 on the 2-core Xeon with AMX (benchmarks/precision.py). int8 .onnx files
    (QDQ) run in int8 either way."""
    name = "openvino"

    def __init__(self, path: str | Path, threads: int | None = None, device: str = "auto", precision: str = "auto",
                 streams: int = 1, exact: bool = True):
        ov = import_optional("openvino", "openvino", "--engine openvino")
        self.path = Path(path)
        if device == "cuda":
            raise PixelwiseError("--engine openvino runs on the CPU here; use --device cpu or auto, or --engine "
                                 "onnxruntime/torch for an NVIDIA GPU")
        if precision not in PRECISIONS:
            raise PixelwiseError(f"unknown precision {precision!r}; choose " + ", ".join(PRECISIONS))
        if precision == "auto":  # decided here, as for torch, not left to OpenVINO: tests can force each side
            precision = "bf16" if not exact and runtime.cpu_has_bf16() else "fp32"
        self.precision = precision
        self.meta = read_metadata(self.path)
        self.streams = check_streams(streams)
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads or physical_cores()}
        if self.streams > 1:  # OpenVINO splits the threads into streams; each infer request runs on one
            config.update(PERFORMANCE_HINT="THROUGHPUT", NUM_STREAMS=self.streams)
        config["INFERENCE_PRECISION_HINT"] = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}[precision]
        self._core, self._config = ov.Core(), config
        try:
            self.compiled = self._core.compile_model(self._core.read_model(str(self.path)), "CPU", config)
        except Exception as err:  # OpenVINO raises RuntimeError subclasses for unsupported operators
            raise PixelwiseError(f"OpenVINO cannot run {self.path} ({type(err).__name__}: "
                                 f"{str(err).strip().splitlines()[0][:300]}); use --engine onnxruntime") from None
        self.scale = float(self.meta["infer_scale"])
        self._static: OrderedDict[tuple[int, ...], object] = OrderedDict()  # input shape -> compiled, newest last
        self._seen: set[tuple[int, ...]] = set()
        self._compiles = 0
        self._lock = threading.Lock()
        self._requests = threading.local()  # an infer request serves one call at a time: one per calling thread

    def compiled_for(self, shape: tuple[int, ...]):
        """The graph to run an input of `shape` on. With every size fixed, OpenVINO plans its memory and
        picks its kernels once: 16% faster than the dynamic graph at 630x840 on the 2-core Xeon with
        AMX. A shape seen a second time gets its own compiled graph (a folder of one size, tiles); the
        STATIC_SHAPES most recent are kept, and after STATIC_COMPILES compiles (sizes that keep
        changing) everything runs on the dynamic graph rather than wait for another compile."""
        with self._lock:
            if shape in self._static:
                self._static.move_to_end(shape)
                return self._static[shape]
            if self._compiles >= STATIC_COMPILES:
                return self.compiled
            if shape not in self._seen:
                self._seen.add(shape)
                return self.compiled
            model = self._core.read_model(str(self.path))
            model.reshape(list(shape))
            compiled = self._static[shape] = self._core.compile_model(model, "CPU", self._config)
            self._compiles += 1
            if len(self._static) > STATIC_SHAPES:
                self._static.popitem(last=False)
            return compiled

    def run(self, images: torch.Tensor) -> torch.Tensor:
        """The graph alone: (N, 3, h, w) -> (N, C, h, w) logits."""
        shape = tuple(images.shape)
        compiled = self.compiled_for(shape)
        key = None if compiled is self.compiled else shape  # the dynamic graph: one request for every shape
        requests = self._requests.__dict__.setdefault("by_graph", {})  # key -> (graph, its infer request)
        if key not in requests or requests[key][0] is not compiled:
            # A request holds its graph and buffers for its shape: keep only those of graphs still cached
            # (the dynamic one's buffers go too, until an odd shape needs it again).
            requests = self._requests.by_graph = {k: v for k, v in requests.items() if v[0] is self._static.get(k)}
            requests[key] = (compiled, compiled.create_infer_request())
        # The input is read in place; the result lives in the request's buffer, which the next call
        # overwrites: copy it out, once.
        result = requests[key][1].infer({0: network_input(images)}, share_inputs=True, share_outputs=True)
        return torch.from_numpy(result[0].copy())


def check_streams(streams: int) -> int:
    if not isinstance(streams, int) or streams < 1:
        raise PixelwiseError(f"streams must be a whole number of at least 1, got {streams!r}")
    return streams


# ---------------------------------------------------------------- from a model file

def onnx_beside(checkpoint: Path, log=print) -> Path:
    """`<stem>.onnx` next to the checkpoint: reused when newer than the checkpoint, else (re)exported there."""
    onnx_path = checkpoint.with_suffix(".onnx")
    if not checkpoint.is_file():
        raise PixelwiseError(f"{checkpoint}: checkpoint not found")
    if onnx_path.is_file() and onnx_path.stat().st_mtime_ns > checkpoint.stat().st_mtime_ns:
        log(f"using {onnx_path} (newer than {checkpoint.name})")
        return onnx_path
    # Exporting pulls in onnx and the exporter: only needed when no fresh file is there.
    from pixelwise.inference.export import export_onnx

    log(f"exporting {checkpoint} to {onnx_path} (once; reused while newer than the checkpoint)")
    try:
        return export_onnx(checkpoint, onnx_path, log=lambda message: None)
    except OSError as err:  # a read-only model folder, a full disk
        raise PixelwiseError(f"cannot write {onnx_path} ({err.strerror or err}): export it elsewhere with `pixelwise "
                             f"export --checkpoint {checkpoint} --onnx OUT.onnx` and pass OUT.onnx") from None


PROFILES = {
    "accurate": "the checkpoint's inference scale (1.75 unless trained otherwise) at a precision that keeps "
                "fp32's masks: the best mean IoU",
    "fast": "inference scale 1 on the fastest engine, in bf16 where the CPU has it: about 4x the images/s, "
            "a little lower mean IoU",
}


def profile_scale(profile: str, trained_scale: float) -> float:
    """The inference scale a profile runs at: `accurate` keeps the checkpoint's, `fast` uses 1."""
    if profile not in PROFILES:
        raise PixelwiseError(f"unknown profile {profile!r}; choose " + " or ".join(PROFILES))
    return float(trained_scale) if profile == "accurate" else 1.0


def fastest_engine(device: str = "auto") -> str:
    """The engine `--engine auto` picks. Measured by benchmarks/speed.py on a 2-core Xeon with AMX (the
    README's speed table): on the CPU an exported graph beats eager PyTorch at every size and batch,
    OpenVINO most (it fuses the depthwise blocks and runs them in bf16 where the CPU has it), then ONNX
    Runtime; so OpenVINO where it is installed, else ONNX Runtime, else PyTorch. Exporting a checkpoint
    needs onnx and onnxscript as well. On a GPU, PyTorch."""
    if resolve_device(device).type == "cuda":
        return "torch"
    can_export = all(importlib.util.find_spec(module) for module in ("onnx", "onnxscript"))
    for name in ("openvino", "onnxruntime"):
        if can_export and importlib.util.find_spec(name):
            return name
    return "torch"


def create_engine(name: str, model_file: str | Path, device: str = "auto", precision: str = "auto", log=print,
                  profile: str = "accurate", streams: int = 1):
    """An engine by name (auto | torch | onnxruntime | openvino) from a checkpoint (.pt) or an exported
    .onnx, at a speed profile (accurate | fast, see PROFILES). ONNX engines given a checkpoint use
    `<stem>.onnx` beside it (see `onnx_beside`). `auto` is `fastest_engine()`, and falls back to
    torch, saying why, where that engine cannot run. `streams`: how many concurrent calls an exported
    graph serves side by side (see the module's docstring); the torch engine always has one."""
    model_file = Path(model_file)
    if name not in ("auto", *ENGINES):
        raise PixelwiseError(f"unknown engine {name!r}; choose auto or one of {', '.join(ENGINES)}")
    profile_scale(profile, 1.0)  # an unknown profile is refused before any model loads
    exact = profile == "accurate"  # `auto` precision keeps fp32's masks; `fast` takes bf16's speed
    is_onnx = model_file.suffix.lower() == ".onnx"
    if name == "auto":
        name = fastest_engine(device)
        if is_onnx and name == "torch":  # no exporter is needed for a file already exported
            name = "openvino" if importlib.util.find_spec("openvino") else "onnxruntime"
        if name != "torch":
            try:
                return create_engine(name, model_file, device, precision, log, profile, streams)
            except PixelwiseError as err:
                if is_onnx:
                    raise
                log(f"{err}\n--engine auto: running {model_file.name} in PyTorch instead")
                name = "torch"
    if name == "torch":
        if is_onnx:
            raise PixelwiseError(f"{model_file}: the torch engine runs checkpoints (.pt); run an .onnx file with "
                                 "--engine onnxruntime or --engine openvino")
        engine = TorchEngine.from_checkpoint(model_file, device=device, precision=precision, exact=exact)
    else:
        onnx_path = model_file if is_onnx else onnx_beside(model_file, log)
        engine_class = OnnxRuntimeEngine if name == "onnxruntime" else OpenVinoEngine
        engine = engine_class(onnx_path, device=device, precision=precision, streams=streams, exact=exact)
    engine.scale = profile_scale(profile, engine.meta["infer_scale"])
    return engine


def predictor_from(model_file: str | Path, engine: str = "torch", device: str = "auto", precision: str = "auto",
                   log=print, profile: str = "accurate", streams: int = 1):
    """A Predictor from a checkpoint or an exported .onnx, running on the named engine at a speed
    profile: the class names, palette and ignore index come from the checkpoint or from the .onnx
    file's metadata."""
    # predict.py imports this module for TorchEngine, so Predictor is imported at call time.
    from pixelwise.inference.predict import Predictor

    runner = create_engine(engine, model_file, device=device, precision=precision, log=log, profile=profile,
                           streams=streams)
    meta = runner.meta
    return Predictor(runner, meta["class_names"], meta["palette"], meta["ignore_index"])


def evaluate_engine(engine, dataset, matrix, batch_size: int = 8, desc: str = "evaluate", indices=None,
                    progress: bool = True):
    """Fill `matrix` (anything with `update(prediction, target)`, e.g. a ConfusionMatrix) with the
    engine's predictions over `dataset` (a SegmentationDataset; `indices`: a part of it) at full
    resolution. Images of equal size are batched. The caller brings the matrix, so inference needs
    nothing from training. -> matrix"""
    batch_images, batch_masks = [], []

    def flush():
        matrix.update(engine.logits(torch.stack(batch_images)).argmax(1), torch.stack(batch_masks))
        batch_images.clear()
        batch_masks.clear()

    indices = range(len(dataset)) if indices is None else indices
    for i in tqdm(indices, desc=desc, unit="img", leave=False, dynamic_ncols=True, disable=not progress):
        image, mask = to_tensors(*dataset.load(i))
        if batch_images and (image.shape != batch_images[0].shape or len(batch_images) == batch_size):
            flush()
        batch_images.append(image)
        batch_masks.append(mask)
    if batch_images:
        flush()
    return matrix
