"""Engines: what turns a batch of images into logits. Every engine has the same one method,

    engine.logits(images)   (N, 3, H, W) float in 0..1  ->  (N, C, H, W) float32 logits on the CPU,

at the input's size, with the checkpoint's inference scale applied inside. Predictor, tiling and the
folder pipeline work on that contract alone, so an exported model runs wherever eager PyTorch does.

`engine.streams` says how many threads may call `logits` at once, each getting a share of the cores:
1 (the default) gives one call all the cores, the lowest latency for one image. Exported graphs
made with `streams=N` run N calls side by side on a core or so each, which on a small CPU gets more
images through than one call spread over every core (see `inference.pipeline`).

- `TorchEngine` (from `runtime`, shared with training's validation): the model in eager PyTorch.
- `OnnxRuntimeEngine`, `OpenVinoEngine`: an .onnx file written by `pixelwise export` (see
  inference.export). The graph is the network alone; the inference-scale resize before it and the
  resize of the logits back after it run here, through the same `runtime.predict_logits` as eager
  PyTorch, so engines differ from eager only inside the network.

An engine made from a model file carries `meta`: class names, palette, ignore index, inference scale
(see `inference.metadata`), which is all a Predictor needs. `inference.selection` picks and builds
an engine from a model file. onnxruntime, onnx and openvino are
imported only when an engine that needs them is made: `import pixelwise` stays light.
"""
from __future__ import annotations

from contextlib import contextmanager

import threading
from collections import OrderedDict
from pathlib import Path

import torch

from pixelwise import runtime
from pixelwise.errors import PixelwiseError, import_optional
from pixelwise.inference.metadata import decode_metadata, read_metadata
from pixelwise.runtime import PRECISIONS, TorchEngine, physical_cores, predict_logits

__all__ = ["ENGINES", "TorchEngine", "OnnxRuntimeEngine", "OpenVinoEngine", "check_streams"]

ENGINES = ("torch", "onnxruntime", "openvino")
STATIC_SHAPES = 4  # OpenVINO graphs compiled for one input shape, kept at a time
STATIC_COMPILES = 16  # ... and compiled in an engine's life, at most

# ---------------------------------------------------------------- exported graphs

def network_input(images: torch.Tensor):
    """float32, contiguous NCHW numpy: what both runtimes read without a copy of their own."""
    return images.float().contiguous().numpy()


class ExportedGraph:
    """What both runtimes share: `run` is the graph alone, (N, 3, h, w) -> (N, C, h, w) logits, and the
    inference-scale resizes around it are eager PyTorch's (`runtime.predict_logits`)."""
    scale: float
    streams: int = 1
    flip: bool = False  # flip test-time augmentation (see runtime.predict_logits)
    gpu: bool = False  # the graph runs on a GPU (ONNX Runtime's CUDA provider), where batches pay

    def run(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return predict_logits(self.run, images, torch.device("cpu"), None, self.scale, self.flip)

    @contextmanager
    def repeating_shapes(self):
        """Inside, every input shape will come again (a huge image's tiles): see OpenVinoEngine."""
        yield


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
        self.gpu = self.session.get_providers()[0] == "CUDAExecutionProvider"

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
    `exact` (`--profile accurate`), which runs fp32: bf16 flips some pixels, those whose top two classes
    are almost tied, and OpenVINO's fp16 ran slower than its fp32 on a CPU with AMX (benchmarks/precision.py;
    figures in docs/deploy.md). int8 .onnx files (QDQ) run in int8 either way."""
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
        self._repeating = threading.local()  # depth of repeating_shapes in each thread: compile at first sight
        self._lock = threading.Lock()
        self._requests = threading.local()  # an infer request serves one call at a time: one per calling thread

    def compiled_for(self, shape: tuple[int, ...]):
        """The graph to run an input of `shape` on. With every size fixed, OpenVINO plans its memory and
        picks its kernels once, which runs faster than the dynamic graph (docs/deploy.md). A shape seen
        a second time gets its own compiled graph (a folder of one size, tiles); the STATIC_SHAPES most
        recent are kept, and after STATIC_COMPILES compiles (sizes that keep changing) everything runs on
        the dynamic graph rather than wait for another compile."""
        with self._lock:
            if shape in self._static:
                self._static.move_to_end(shape)
                return self._static[shape]
            if self._compiles >= STATIC_COMPILES:
                return self.compiled
            if shape not in self._seen and not getattr(self._repeating, "depth", 0):
                self._seen.add(shape)
                return self.compiled
            model = self._core.read_model(str(self.path))
            model.reshape(list(shape))
            compiled = self._static[shape] = self._core.compile_model(model, "CPU", self._config)
            self._compiles += 1
            if len(self._static) > STATIC_SHAPES:
                self._static.popitem(last=False)
            return compiled

    @contextmanager
    def repeating_shapes(self):
        """Inside, a shape gets its static graph at first sight. A huge image's tiles all share one shape,
        known to repeat: running the first tile on the dynamic graph would only allocate that graph's
        buffers at tile size, held beside the static graph's until the image is done."""
        self._repeating.depth = getattr(self._repeating, "depth", 0) + 1  # this thread's calls only
        try:
            yield
        finally:
            self._repeating.depth -= 1

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
