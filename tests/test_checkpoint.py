"""The checkpoint format: integrity, refusals that say what is wrong, and an inference side that stands alone."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.checkpoint import (class_differences, config_differences, content_digest, infer_scale, load_checkpoint,
                                  model_config, save_checkpoint)
from pixelwise.config import ModelConfig, TrainConfig
from pixelwise.errors import PixelwiseError
from pixelwise.models.registry import create_model

from tolerances import assert_same_classes_where_decided, network_atol

FIXTURES = Path(__file__).parent / "fixtures"


def tiny_checkpoint(path, **extra):
    cfg = TrainConfig(data="x", model="fcn32s", backbone="segnet_basic", upsample="bilinear")
    model = create_model("fcn32s", backbone="segnet_basic", num_classes=2, upsample="bilinear", pretrained=False)
    save_checkpoint(path, model=model.state_dict(), config=cfg.to_dict(), class_names=["background", "cell"],
                    ignore_index=255, palette=[[0, 0, 0], [255, 0, 0]] + [[0, 0, 0]] * 254, **extra)
    return model


def test_digest_is_stable_across_save_and_load_and_sees_one_changed_value(tmp_path):
    tiny_checkpoint(tmp_path / "a.pt", marker=torch.arange(16, dtype=torch.float32))
    ckpt = load_checkpoint(tmp_path / "a.pt")
    assert content_digest(ckpt) == ckpt["sha256"]
    ckpt["marker"][3] += 1
    assert content_digest(ckpt) != ckpt["sha256"]


def test_a_flipped_byte_inside_the_weights_is_refused_as_damaged(tmp_path):
    # a recognisable tensor so the test flips a byte of weight data, not of the zip's bookkeeping
    marker = torch.full((4096,), 1.2345, dtype=torch.float32)
    tiny_checkpoint(tmp_path / "a.pt", marker=marker)
    data = bytearray((tmp_path / "a.pt").read_bytes())
    offset = data.find(marker.numpy().tobytes()) + 2048 * 4
    assert offset > 2048 * 4
    data[offset] ^= 0x01
    (tmp_path / "a.pt").write_bytes(bytes(data))
    assert torch.load(tmp_path / "a.pt", weights_only=True)["marker"][2048] != 1.2345  # torch alone does not notice
    with pytest.raises(PixelwiseError, match=r"checkpoint .*a\.pt is damaged \(checksum mismatch\): re-copy it or retrain"):
        load_checkpoint(tmp_path / "a.pt")


def test_a_truncated_checkpoint_is_refused_as_damaged(tmp_path):
    tiny_checkpoint(tmp_path / "a.pt")
    data = (tmp_path / "a.pt").read_bytes()
    (tmp_path / "a.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(PixelwiseError, match="is damaged"):
        load_checkpoint(tmp_path / "a.pt")


def test_loading_never_unpickles_objects(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"model": {}, "config": {}, "evil": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(PixelwiseError, match="damaged or not a pixelwise checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")


def test_save_leaves_no_temporary_file_and_replaces_atomically(tmp_path):
    tiny_checkpoint(tmp_path / "a.pt")
    tiny_checkpoint(tmp_path / "a.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]


def test_differences_are_listed_one_by_one():
    assert class_differences(["bg", "cat", "dog"], ["bg", "cat", "dog"]) == []
    assert class_differences(["bg", "cat", "dog"], ["bg", "cow"]) == [
        "3 classes in the checkpoint, 2 in the data", "class 1 is 'cat' in the checkpoint but 'cow' in the data",
        "only in the checkpoint: 2='dog'"]
    saved = TrainConfig(data="x").to_dict()
    assert config_differences(saved, TrainConfig(data="x", model="unet", backbone="resnet18")) == [
        "--model: 'fcn8s' in the checkpoint, 'unet' now", "--backbone: 'efficientnet_lite0' in the checkpoint, 'resnet18' now"]


def test_import_and_predict_load_neither_the_trainer_nor_matplotlib(tmp_path):
    """In a fresh interpreter: `import pixelwise` and `pixelwise.load(...).predict(...)` import no trainer,
    no advisor, no matplotlib, and leave global state (matplotlib backend, torch threads, RNG) as it was."""
    tiny_checkpoint(tmp_path / "a.pt")
    np.save(tmp_path / "image.npy", np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8))
    script = f"""
import json, sys, numpy as np, torch
threads, rng = torch.get_num_threads(), torch.get_rng_state()
import pixelwise
mask = pixelwise.load({str(tmp_path / 'a.pt')!r}, precision="fp32").predict(np.load({str(tmp_path / 'image.npy')!r}))
print(json.dumps({{"shape": list(mask.shape), "dtype": str(mask.dtype),
    "loaded": sorted(m for m in sys.modules if m.startswith(("matplotlib", "pixelwise.training", "pixelwise.api"))),
    "threads_same": torch.get_num_threads() == threads, "rng_same": bool(torch.equal(torch.get_rng_state(), rng))}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"shape": [40, 56], "dtype": "uint8", "loaded": [], "threads_same": True, "rng_same": True}


@pytest.mark.parametrize("command", [["predict", "--help"], ["predict", "--checkpoint", "{ckpt}", "{image}", "--out",
                                                                 "{out}", "--engine", "torch", "--no-overlay"]])
def test_the_predict_command_and_its_help_load_neither_the_trainer_nor_matplotlib(tmp_path, command):
    tiny_checkpoint(tmp_path / "a.pt")
    Image.fromarray(np.zeros((40, 56, 3), np.uint8)).save(tmp_path / "image.png")
    argv = [a.format(ckpt=tmp_path / "a.pt", image=tmp_path / "image.png", out=tmp_path / "out") for a in command]
    script = f"""
import contextlib, io, json, sys
from pixelwise.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        code = main({argv!r})
    except SystemExit as done:
        code = done.code
print(json.dumps([code, sorted(m for m in sys.modules if m.startswith(("matplotlib", "pixelwise.training")))]))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [0, []]


def test_inference_package_never_imports_training():
    import pathlib

    import pixelwise.inference

    for source in pathlib.Path(pixelwise.inference.__file__).parent.rglob("*.py"):
        assert "pixelwise.training" not in source.read_text(), source


def test_a_checkpoint_written_on_2026_12_03_still_loads_and_predicts_its_masks(nuclei_root):
    """Written by that day's `pixelwise train` (fcn_vanilla, 8 epochs on the bundled sample, --infer-scale 1.5),
    before the network's config had an entry of its own; the mask is what that day's code predicted."""
    import pixelwise

    path = FIXTURES / "checkpoint_2026-12-03.pt"
    ckpt = load_checkpoint(path)
    assert "model_config" not in ckpt and "infer_scale" not in ckpt  # the old layout
    assert model_config(ckpt) == ModelConfig("fcn_vanilla", "efficientnet_lite0", "bilinear")
    assert infer_scale(ckpt) == 1.5
    predictor = pixelwise.load(path, engine="torch", precision="fp32")
    logits = predictor.logits(nuclei_root / "images" / "tile_r0c0.png")
    expected = np.asarray(Image.open(FIXTURES / "checkpoint_2026-12-03_tile_r0c0.png"))
    assert set(np.unique(expected)) == {0, 1}
    assert_same_classes_where_decided(expected, logits, network_atol(logits))


def test_the_network_config_is_saved_apart_from_the_runs_and_read_first():
    ckpt = {"model_config": {"model": "unet", "backbone": "resnet18", "upsample": "bilinear"}, "infer_scale": 1.25,
            "config": {"model": "fcn8s", "backbone": "vgg16", "upsample": None, "infer_scale": 1.75, "data": "x"}}
    assert model_config(ckpt) == ModelConfig("unet", "resnet18", "bilinear") and infer_scale(ckpt) == 1.25
    assert TrainConfig(data="x", model="segnet", upsample="unpool").model_config == ModelConfig("segnet",
                                                                                             "efficientnet_lite0",
                                                                                             "unpool")
