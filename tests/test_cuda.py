"""The CUDA path: fp16 (accurate) or bf16 (fast) autocast and channels_last on a GPU, for inference and training. CI has no GPU,
so these skip there; they ran on a lent GPU when one was available (see docs/benchmarks.md)."""
import json

import pytest
import torch

from pixelwise.inference.engines import TorchEngine
from pixelwise.models.registry import create_model
from pixelwise.runtime import predict_logits

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("exact", [True, False])
def test_cuda_inference_runs_reduced_precision_channels_last_and_matches_cpu_fp32(exact):
    torch.manual_seed(0)
    model = create_model("fcn8s", backbone="efficientnet_lite0", num_classes=5, pretrained=False).eval()
    for module in model.modules():  # FCN score layers start at zero: give the classes different logits
        if isinstance(module, torch.nn.Conv2d) and not module.weight.any():
            torch.nn.init.normal_(module.weight, std=0.1)
    images = torch.rand(2, 3, 75, 101, generator=torch.Generator().manual_seed(1))
    expected = predict_logits(model, images, torch.device("cpu"), None)
    engine = TorchEngine(model, device="cuda", exact=exact)
    fast = torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    assert engine.device.type == "cuda" and engine.dtype == (torch.float16 if exact else fast)
    if engine.dtype is not None:  # autocast pays off with channels_last kernels
        conv = next(m for m in engine.model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    got = engine.logits(images)
    assert got.device.type == "cpu" and got.dtype == torch.float32 and got.shape == (2, 5, 75, 101)
    assert (got.argmax(1) == expected.argmax(1)).float().mean() >= 0.98


def test_cuda_training_completes_an_epoch(nuclei_root, tmp_path):
    from pixelwise.api import train

    train(nuclei_root, tmp_path / "run", epochs=1, batch_size=4, crop_size=(64, 64), strategy="head",
          device="cuda", log=lambda message: None)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history) == 1 and 0 <= history[0]["val_mean_iou"] <= 1
    ckpt = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert all(t.device.type == "cpu" for t in ckpt["model"].values())  # checkpoints load anywhere
