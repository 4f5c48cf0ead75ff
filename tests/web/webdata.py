"""Helpers for the annotation app's tests: flat-colour images whose fills are exact, a tiny checkpoint, a client."""
import io
from pathlib import Path

import numpy as np
from PIL import Image
from starlette.testclient import TestClient

from pixelwise.checkpoint import save_checkpoint
from pixelwise.config import TrainConfig
from pixelwise.models.registry import create_model

W, H = 64, 48
ORIGIN = "http://127.0.0.1:8765"
CLASSES = ("background", "cell", "debris")


def flat_image(seed: int = 0) -> np.ndarray:
    """HxWx3 uint8: a grey field, a red 20x14 block at x 8-27, y 6-19, and a blue 24x16 block at x 36-59,
    y 26-41. Colours differ by far more than any flood tolerance, so a fill finds exactly one region."""
    img = np.full((H, W, 3), (90, 90, 90), np.uint8)
    img[6:20, 8:28] = (200, 40, 40)
    img[26:42, 36:60] = (40, 60, 210)
    img[0, 0] = (90 + seed, 90, 90)  # each image a different file
    return img


def write_image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(flat_image(seed)).save(path)
    return path


def write_mask(path: Path, labels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels.astype(np.uint8), mode="L").save(path)
    return path


def some_labels(seed: int = 0, classes: int = 3, ignore: int = 255) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([*range(classes), ignore], np.uint8)[rng.integers(0, classes + 1, (H, W))]


def cells_dataset(root: Path) -> Path:
    """images/a.png b.png c.png, classes.txt (3 classes); only c has a mask."""
    for i, stem in enumerate("abc"):
        write_image(root / "images" / f"{stem}.png", seed=i)
    write_mask(root / "masks" / "c.png", some_labels())
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def tiny_checkpoint(path: Path, classes=CLASSES) -> Path:
    """A randomly initialised FCN-32s on SegNet-Basic: enough to check the app predicts what `predict` does."""
    cfg = TrainConfig(data="x", model="fcn32s", backbone="segnet_basic", upsample="bilinear", infer_scale=1.0,
                      crop_size=(32, 32), strategy="full")
    model = create_model("fcn32s", backbone="segnet_basic", num_classes=len(classes), upsample="bilinear",
                         pretrained=False)
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(classes)] = [(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255)][: len(classes)]
    save_checkpoint(path, model=model.state_dict(), config=cfg.to_dict(), class_names=list(classes),
                    ignore_index=255, palette=palette.tolist())
    return path


def client_for(app, token=True) -> TestClient:
    """A TestClient that talks to the app as the page does: loopback Host, token header."""
    headers = {"x-pixelwise-token": app.state.token} if token else {}
    return TestClient(app, base_url=ORIGIN, headers=headers)


def png_bytes(labels: np.ndarray, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(labels.astype(np.uint8), mode="L")
    (img if mode == "L" else img.convert(mode)).save(buf, format="PNG")
    return buf.getvalue()
