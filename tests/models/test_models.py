import pytest
import torch

import pixelwise
from pixelwise.models import weights

from tolerances import dot_product_bound


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


def test_vgg16_fc6_as_a_convolution_computes_the_dense_layer():
    from pixelwise.models.encoders import VGGEncoder

    torch.manual_seed(0)
    encoder = VGGEncoder(pretrained=False)
    # in float64, so that rounding (the convolution and the matmul sum the 25088 products in different
    # orders) is far below any fault, with a bound that follows from the arithmetic
    fc6 = torch.nn.Linear(25088, 4096).double()
    fc6.weight.data = encoder.fc6.weight.data.flatten(1).double()
    fc6.bias.data = encoder.fc6.bias.data.double()
    pool5 = torch.rand(1, 512, 7, 7, dtype=torch.float64)  # exactly one 7x7 window, as the classifier saw at 224x224
    with torch.no_grad():
        as_conv = torch.nn.functional.conv2d(pool5, fc6.weight.view_as(encoder.fc6.weight), fc6.bias)
        dense = fc6(pool5.flatten(1))
    assert as_conv.shape == (1, 4096, 1, 1)
    bound = dot_product_bound(pool5.flatten(1), fc6.weight)
    assert ((as_conv.flatten(1) - dense).abs() <= bound).all() and bound.max() < 1e-9
    assert dense.abs().max() > 0.1  # not an empty comparison
    assert encoder.strides == [2, 4, 8, 16, 32, 32] and encoder.out_channels[-1] == 4096


def test_vgg16_weights_come_from_torchvision_layout(tmp_path):
    import torchvision

    from pixelwise.models.encoders import VGGEncoder

    reference = torchvision.models.vgg16()
    torch.save(reference.state_dict(), tmp_path / "vgg16.pth")
    encoder = VGGEncoder(weights_path=str(tmp_path / "vgg16.pth"))
    assert torch.equal(encoder.stages[0][0].weight, reference.features[0].weight)
    assert torch.equal(encoder.fc6.weight.flatten(1), reference.classifier[0].weight)
    assert torch.equal(encoder.fc7.weight.flatten(1), reference.classifier[3].weight)


def test_missing_imagenet_weights_explain_the_way_out(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(pixelwise.PixelwiseError, match="--backbone-weights PATH .* --no-pretrained"):
        pixelwise.create_model("fcn8s", backbone="resnet18", num_classes=2)
