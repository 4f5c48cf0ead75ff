"""Where and how a model runs: the precision each profile picks, and the layers kept in fp32 under CPU autocast."""
import copy

import pytest
import torch
from torch import nn

from pixelwise import runtime
from pixelwise.errors import PixelwiseError
from pixelwise.models.upsample import Upsample
from pixelwise.runtime import depthwise_fp32_in_training, predict_logits, resolve_precision

CPU = torch.device("cpu")


@pytest.mark.parametrize("bf16, fp16, exact, expected", [
    (True, True, True, torch.float16),    # accurate: fp16's 11-bit mantissa keeps fp32's masks, at bf16's speed
    (True, False, True, None),            # accurate without native fp16: fp32, not bf16
    (False, False, True, None),
    (True, True, False, torch.bfloat16),  # fast (and training): bf16 where native
    (True, False, False, torch.bfloat16),
    (False, True, False, None),           # emulated bf16 is slower than fp32
])
def test_auto_precision_follows_the_profile_and_the_hardware(monkeypatch, bf16, fp16, exact, expected):
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: bf16)
    monkeypatch.setattr(runtime, "cpu_has_fp16", lambda: fp16)
    assert resolve_precision("auto", CPU, exact=exact) == expected


@pytest.mark.parametrize("forced, native", [("bf16", {"bf16"}), ("bf16, FP16", {"bf16", "fp16"}), ("none", set())])
def test_the_environment_forces_the_cpus_native_precisions_in_every_process(monkeypatch, forced, native):
    monkeypatch.setenv(runtime.NATIVE_PRECISIONS_ENV, forced)
    assert runtime.native_cpu_precisions() == native
    assert (runtime.cpu_has_bf16(), runtime.cpu_has_fp16()) == ("bf16" in native, "fp16" in native)
    assert resolve_precision("auto", CPU) == (torch.bfloat16 if "bf16" in native else None)


def test_a_misspelt_forced_precision_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv(runtime.NATIVE_PRECISIONS_ENV, "bf16,int8")
    with pytest.raises(PixelwiseError, match="PIXELWISE_NATIVE_PRECISIONS='bf16,int8': use a comma-separated subset"):
        runtime.native_cpu_precisions()


def test_an_explicit_precision_is_kept_and_an_unknown_one_refused():
    assert resolve_precision("fp32", CPU, exact=True) is None
    assert resolve_precision("fp16", CPU) == torch.float16
    with pytest.raises(PixelwiseError, match="unknown precision 'int4'; choose auto, fp32, bf16, fp16"):
        resolve_precision("int4", CPU)


def test_the_score_upsampling_runs_in_fp32_under_cpu_autocast():
    torch.manual_seed(0)
    up = Upsample(5, 8, "transposed")
    scores = torch.randn(2, 5, 6, 7)
    expected = up(scores, (48, 56))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = up(scores, (48, 56))
    assert got.dtype == torch.float32
    assert torch.equal(got, expected)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.dense = nn.Conv2d(4, 8, 1)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)  # grouped but not depthwise: left alone

    def forward(self, x):
        return self.grouped(self.depthwise(self.dense(x)))


def test_depthwise_convolutions_train_in_fp32_under_cpu_autocast_and_infer_in_bf16():
    torch.manual_seed(0)
    model = Block()
    keys = list(model.state_dict())
    assert depthwise_fp32_in_training(model) == 1
    assert list(model.state_dict()) == keys
    x = torch.randn(2, 4, 10, 12)
    seen = {}
    model.grouped.register_forward_hook(lambda module, inputs, output: seen.update(dtype=inputs[0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(x).float().sum().backward()
        assert seen["dtype"] == torch.float32  # the depthwise output
        with torch.no_grad():
            model(x)
            assert seen["dtype"] == torch.bfloat16
    assert model.depthwise.weight.grad is not None and model.depthwise.weight.grad.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the fp32 depthwise output is exactly fp32's
        dense = model.dense(x)
        got = model.depthwise(dense)
    assert dense.dtype == torch.bfloat16
    torch.testing.assert_close(got, model.depthwise(dense.float()), rtol=0, atol=0)
    twin = copy.deepcopy(model)  # a copy's forward runs the copy's weights
    with torch.no_grad():
        twin.depthwise.weight.zero_()
        twin.depthwise.bias.zero_()
        assert not twin.depthwise(torch.randn(1, 8, 4, 4)).any()


def test_fp16_logits_that_overflow_are_computed_again_in_fp32():
    model = nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        model.weight.fill_(3e4)  # 3 channels x 3e4 in 0..1 input: past fp16's 65504
        model.bias.zero_()
    images = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.5
    logits = predict_logits(model, images, CPU, torch.float16)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits, predict_logits(model, images, CPU, None), rtol=0, atol=0)


def test_the_trainer_runs_depthwise_convolutions_in_fp32_on_the_cpu(nuclei_root, tmp_path):
    from pixelwise.config import TrainConfig
    from pixelwise.training.engine import setup

    logs = []
    cfg = TrainConfig(data=str(nuclei_root), out=str(tmp_path / "run"), epochs=1, batch_size=4, crop_size=(64, 64),
                      strategy="full", precision="bf16", pretrained=False, device="cpu")
    run = setup(cfg, log=logs.append)
    assert run.dtype == torch.bfloat16
    assert any("bf16 autocast (depthwise convolutions fp32) on cpu" in line for line in logs)
    depthwise = [m for m in run.model.modules() if isinstance(m, nn.Conv2d) and 1 < m.groups == m.in_channels]
    outputs = []
    for conv in depthwise:
        conv.register_forward_hook(lambda module, inputs, output: outputs.append(output.dtype))
    image, _ = next(iter(run.loader))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        run.model(image.contiguous(memory_format=torch.channels_last))
    assert len(outputs) == len(depthwise) > 0 and set(outputs) == {torch.float32}


@pytest.mark.parametrize("forced, dtype, line", [("bf16", torch.bfloat16, "bf16 autocast (depthwise convolutions fp32) on cpu"),
                                                 ("none", None, "fp32 on cpu")])
def test_the_trainer_takes_each_side_of_the_cpus_precision_choice_when_forced(nuclei_root, tmp_path, monkeypatch,
                                                                              forced, dtype, line):
    from pixelwise.config import TrainConfig
    from pixelwise.training.engine import setup

    monkeypatch.setenv(runtime.NATIVE_PRECISIONS_ENV, forced)
    logs = []
    cfg = TrainConfig(data=str(nuclei_root), out=str(tmp_path / "run"), epochs=1, batch_size=4, crop_size=(64, 64),
                      strategy="full", precision="auto", pretrained=False, device="cpu")
    run = setup(cfg, log=logs.append)
    assert run.dtype == dtype and any(line in entry for entry in logs), logs


def test_flip_tta_averages_the_logits_of_the_image_and_of_its_mirror_mirrored_back():
    torch.manual_seed(0)
    model = nn.Conv2d(3, 4, (1, 3), padding=(0, 1)).eval()  # a lopsided kernel: mirroring changes its output
    images = torch.rand(2, 3, 5, 7)
    with torch.no_grad():
        plain = model(images)
        expected = (plain + model(images.flip(-1)).flip(-1)) / 2
        assert torch.allclose(predict_logits(model, images, torch.device("cpu"), None, flip=True), expected, atol=1e-6)
        assert not torch.allclose(plain, expected, atol=1e-3)  # the mirror did change something
        assert torch.equal(predict_logits(model, images, torch.device("cpu"), None), plain)
