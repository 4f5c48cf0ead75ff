import pytest
import torch
import torch.nn.functional as F

from pixelwise.models.upsample import Upsample, bilinear_kernel, transposed_output_size


def test_bilinear_kernel_exact():
    ramp = torch.tensor([0.25, 0.75, 0.75, 0.25])
    assert torch.equal(bilinear_kernel(4), ramp[:, None] * ramp[None, :])
    ramp3 = torch.tensor([0.5, 1.0, 0.5])  # odd size, factor 2
    assert torch.equal(bilinear_kernel(3), ramp3[:, None] * ramp3[None, :])


@pytest.mark.parametrize("size,stride,padding,kernel,out_pad", [(5, 2, 1, 4, 0), (7, 8, 4, 16, 0), (3, 3, 0, 3, 2),
                                                                 (4, 1, 0, 1, 0), (6, 2, 0, 3, 1)])
def test_transposed_output_size_matches_torch(size, stride, padding, kernel, out_pad):
    conv = torch.nn.ConvTranspose2d(1, 1, kernel, stride=stride, padding=padding, output_padding=out_pad)
    assert conv(torch.zeros(1, 1, size, size)).shape[-1] == transposed_output_size(size, stride, padding, kernel, out_pad)


@pytest.mark.parametrize("factor", [2, 8])
def test_bilinear_initialised_transposed_conv_reproduces_bilinear_in_the_interior(factor):
    x = torch.rand(1, 3, 6, 7)
    up = Upsample(3, factor, "transposed")
    size = (6 * factor, 7 * factor)
    ours = up(x, size)
    reference = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    m = factor  # borders differ: the transposed conv pads with zeros, interpolate clamps
    assert torch.allclose(ours[..., m:-m, m:-m], reference[..., m:-m, m:-m], atol=1e-6)


def test_every_mode_hits_the_exact_size_and_freeze_works():
    x = torch.rand(2, 4, 5, 6)
    for mode in ("nearest", "bilinear", "transposed"):
        assert Upsample(4, 8, mode)(x, (37, 45)).shape == (2, 4, 37, 45)
    assert not Upsample(4, 2, "transposed", freeze=True).conv.weight.requires_grad
    with pytest.raises(ValueError, match="unknown upsampling mode"):
        Upsample(4, 2, "cubic")


def test_nearest_2x_worked_example():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    out = Upsample(1, 2, "nearest")(x, (4, 4))
    assert out[0, 0].tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]


def test_freeze_upsample_keeps_every_transposed_kernel_bilinear_through_training():
    import pixelwise

    torch.manual_seed(0)
    model = pixelwise.create_model("fcn8s", backbone="efficientnet_lite0", num_classes=3, upsample="transposed",
                                   pretrained=False, freeze_upsample=True)
    kernels = [m.conv.weight for m in model.modules() if isinstance(m, Upsample) and hasattr(m, "conv")]
    assert len(kernels) == 3  # 32->16, 16->8 and the final 8x
    before = [k.clone() for k in kernels]
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.rand(2, 3, 64, 64)).logsumexp(1).mean().backward()
    optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before, kernels))
    assert torch.equal(kernels[-1][0, 0], bilinear_kernel(16))
    with pytest.raises(ValueError, match="transposed upsampling only"):
        pixelwise.create_model("fcn8s", num_classes=3, upsample="bilinear", pretrained=False, freeze_upsample=True)
