"""Every registered model x upsampling mode x two backbones, random init, on odd sizes."""
import onnx
import pytest
import torch

import pixelwise
from pixelwise.models.upsample import MODES

# a timm encoder with strided convs, a torchvision one, and a max-pooling one (unpool indices)
BACKBONES = ("efficientnet_lite0", "mobilenet_v2", "segnet_basic")


def build(name, backbone, upsample):
    return pixelwise.create_model(name, backbone=backbone, num_classes=4, upsample=upsample, pretrained=False)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("upsample", MODES)
@pytest.mark.parametrize("name", pixelwise.list_models())
def test_forward_backward_and_onnx_or_a_clear_refusal(name, upsample, backbone, tmp_path):
    unpool_without_indices = upsample == "unpool" and (name.startswith("fcn") or backbone != "segnet_basic")
    unpool_without_indices |= upsample == "unpool" and name == "context_fpn"
    # segnet_basic stops at stride 16
    too_shallow = name in ("fcn16s", "fcn8s", "context_fpn") and backbone == "segnet_basic"
    if unpool_without_indices or too_shallow:
        with pytest.raises(ValueError, match="unpool|pool|deeper encoder|stride-32"):
            build(name, backbone, upsample)
        return
    model = build(name, backbone, upsample)
    x = torch.rand(1, 3, 45, 61)
    model.train()
    out = model(torch.rand(2, 3, 45, 61))
    assert out.shape == (2, 4, 45, 61)
    # auxiliary heads (training mode only) are part of the loss, as in training
    (out.square().mean() + sum(a.square().mean() for a in model.aux_logits)).backward()
    assert all(p.grad is not None for p in model.decoder.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (1, 4, 45, 61)
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["image"], output_names=["logits"], dynamo=False)
    onnx.checker.check_model(onnx.load(str(path)))
