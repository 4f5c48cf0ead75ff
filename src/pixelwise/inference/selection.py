"""Which engine runs a model file, and at which speed profile: `create_engine` builds one by name
(auto | torch | onnxruntime | openvino) from a checkpoint or an exported .onnx."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from pixelwise.checkpoint import load_checkpoint, model_from_checkpoint
from pixelwise.errors import PixelwiseError
from pixelwise.inference.engines import ENGINES, OnnxRuntimeEngine, OpenVinoEngine, TorchEngine
from pixelwise.inference.metadata import checkpoint_metadata
from pixelwise.runtime import resolve_device


def torch_engine(path: str | Path, device: str = "auto", precision: str = "auto", exact: bool = True) -> TorchEngine:
    """The checkpoint's model in eager PyTorch, carrying its metadata."""
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt)
    meta = checkpoint_metadata(ckpt, model)
    return TorchEngine(model, device=device, precision=precision, scale=meta["infer_scale"], meta=meta, exact=exact)


def onnx_beside(checkpoint: Path, log=print) -> Path:
    """`<stem>.onnx` next to the checkpoint: reused when newer than the checkpoint, else (re)exported there."""
    onnx_path = checkpoint.with_suffix(".onnx")
    if not checkpoint.is_file():
        raise PixelwiseError(f"{checkpoint}: checkpoint not found")
    if onnx_path.is_file() and onnx_path.stat().st_mtime_ns > checkpoint.stat().st_mtime_ns:
        log(f"using {onnx_path} (newer than {checkpoint.name})")
        return onnx_path
    log(f"exporting {checkpoint} to {onnx_path} (once; reused while newer than the checkpoint)")
    # In a child process: the exporter's peak memory (the traced graph, onnx's copies of the weights) is
    # returned to the system when it exits, instead of staying in this process's heap next to the engine.
    done = subprocess.run([sys.executable, "-m", "pixelwise", "export", "--checkpoint", str(checkpoint), "--onnx",
                           str(onnx_path)], capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        reason = lines[-1].removeprefix("pixelwise: error: ") if lines else f"exit status {done.returncode}"
        raise PixelwiseError(f"cannot export {checkpoint} to {onnx_path} ({reason}): export it elsewhere with "
                             f"`pixelwise export --checkpoint {checkpoint} --onnx OUT.onnx` and pass OUT.onnx")
    return onnx_path


PROFILES = {
    "accurate": "the checkpoint's inference scale (1.75 unless trained otherwise), and its flip test-time "
                "augmentation if trained with --infer-flip, at a precision that keeps fp32's masks: the best mean IoU",
    "fast": "inference scale 1 on the fastest engine, in bf16 where the CPU has it: fewer pixels at a cheaper "
            "precision, so several times the images/s, for a little lower mean IoU",
}


def profile_scale(profile: str, trained_scale: float) -> float:
    """The inference scale a profile runs at: `accurate` keeps the checkpoint's, `fast` uses 1."""
    if profile not in PROFILES:
        raise PixelwiseError(f"unknown profile {profile!r}; choose " + " or ".join(PROFILES))
    return float(trained_scale) if profile == "accurate" else 1.0


def fastest_engine(device: str = "auto") -> str:
    """The engine `--engine auto` picks. Measured by benchmarks/speed.py (the speed table in
    docs/deploy.md): on the CPU an exported graph beats eager PyTorch at every size and batch,
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
        engine = torch_engine(model_file, device=device, precision=precision, exact=exact)
    else:
        onnx_path = model_file if is_onnx else onnx_beside(model_file, log)
        engine_class = OnnxRuntimeEngine if name == "onnxruntime" else OpenVinoEngine
        engine = engine_class(onnx_path, device=device, precision=precision, streams=streams, exact=exact)
    engine.scale = profile_scale(profile, engine.meta["infer_scale"])
    engine.flip = profile == "accurate" and bool(engine.meta.get("infer_flip", False))  # exports before it: no
    return engine
