import pytest
import torch

import pixelwise
from pixelwise.models import weights


def test_fresh_fcn_predicts_zero_logits_because_score_layers_start_at_zero():
    model = pixelwise.create_model("fcn8s", num_classes=4, pretrained=False).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 40, 56)).abs().max() == 0


def test_offline_efficientnet_lite0_weights_land_in_timm_model():
    model = pixelwise.create_model("fcn8s", backbone="efficientnet_lite0", num_classes=3, pretrained=True)
    state = weights.read_state_dict(weights.offline_weight_file("efficientnet_lite0"))
    assert torch.equal(model.encoder.model.conv_stem.weight, state["_conv_stem.weight"])
    assert torch.equal(model.encoder.model.conv_head.weight, state["_conv_head.weight"])
    assert model.encoder.out_channels == [24, 40, 112, 320, 1280]
    assert model.encoder.strides == [4, 8, 16, 32, 32]


def test_unknown_names_are_refused_clearly():
    with pytest.raises(ValueError, match="unknown model 'fcn4s'"):
        pixelwise.create_model("fcn4s", num_classes=2)
    with pytest.raises(pixelwise.PixelwiseError, match="unknown backbone 'resnet999'"):
        pixelwise.create_model("fcn8s", backbone="resnet999", num_classes=2)
