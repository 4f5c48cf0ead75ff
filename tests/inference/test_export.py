"""ONNX export: the graph equals the eager model at any size, the file describes itself, same-padding is static."""
import collections
import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from timm.layers import Conv2dSame, get_same_padding
from torch import nn

import pixelwise
from pixelwise.checkpoint import load_checkpoint, save_checkpoint
from pixelwise.config import TrainConfig
from pixelwise.errors import PixelwiseError
from pixelwise.inference.metadata import GRAPH_INPUT, GRAPH_OUTPUT, RESIZE
from pixelwise.inference.export import (calibration_paths, check_against_eager, export_network, export_onnx,
                                        quantize_onnx, read_metadata, same_padding, static_same_padding)
from pixelwise.models.base import SegmentationModel
from pixelwise.models.fcn import FCNDecoder
from pixelwise.models.registry import create_model
from pixelwise.models.upsample import Upsample

from tolerances import network_atol

CLASSES = ["background", "cat", "dog"]
PALETTE = [[0, 0, 0], [200, 10, 10], [10, 200, 10]] + [[7, 7, 7]] * 253


def randomise_head(model: nn.Module) -> nn.Module:
    """Score layers start at zero (FCN paper): random ones make every logit depend on the weights."""
    torch.manual_seed(0)
    for parameter in model.decoder.parameters():
        nn.init.normal_(parameter, std=0.5)
    return model


def write_checkpoint(path, data="/nonexistent/data"):
    """A small fcn32s on SegNet-Basic (stride 16, so sizes pad to multiples of 16) with inference scale 1.5."""
    cfg = TrainConfig(data=str(data), model="fcn32s", backbone="segnet_basic", upsample="bilinear",
                      crop_size=(48, 64), infer_scale=1.5)
    model = randomise_head(create_model("fcn32s", backbone="segnet_basic", num_classes=3, upsample="bilinear",
                                        pretrained=False))
    save_checkpoint(path, model=model.state_dict(), config=cfg.to_dict(), class_names=CLASSES, ignore_index=255,
                    palette=PALETTE)
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    model = write_checkpoint(folder / "model.pt")
    logs = []
    export_onnx(folder / "model.pt", folder / "model.onnx", log=logs.append)
    return folder, model, logs


@pytest.mark.parametrize("height, width", [(37, 53), (45, 61), (50, 97), (64, 96), (96, 32)])
def test_the_graph_equals_the_eager_model_at_odd_sizes_and_multiples_of_32(exported, height, width):
    folder, model, _ = exported
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    images = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(height))
    with torch.no_grad():
        expected = model(images).numpy()
    got = session.run(None, {"images": images.numpy()})[0]
    assert got.shape == (2, 3, height, width)
    np.testing.assert_allclose(got, expected, atol=network_atol(torch.from_numpy(expected)), rtol=0)
    assert np.abs(expected).max() > 0.1  # the comparison would be empty with an all-zero head


def test_batch_height_and_width_are_symbolic_in_the_file(exported):
    folder, _, logs = exported
    graph = onnx.load(str(folder / "model.onnx")).graph
    for value in (graph.input[0], graph.output[0]):
        dims = value.type.tensor_type.shape.dim
        assert [d.dim_param != "" for d in dims] == [True, False, True, True], value.name
        assert dims[1].dim_value == (3 if value.name == "images" else len(CLASSES))
    assert logs == [f"wrote {folder / 'model.onnx'}: fp32, {(folder / 'model.onnx').stat().st_size / 1e6:.1f} MB, "
                    f"dynamic batch/height/width, {len(graph.node)} nodes, matches the checkpoint at 3 sizes"]


def test_metadata_round_trips_every_field(exported):
    folder, _, _ = exported
    meta = read_metadata(folder / "model.onnx")
    assert meta == {
        "pixelwise_version": pixelwise.__version__,
        "class_names": CLASSES,
        "palette": PALETTE,
        "ignore_index": 255,
        "infer_scale": 1.5,
        "infer_flip": False,
        "input": GRAPH_INPUT,
        "normalisation": {"inside_graph": True, "formula": "(images - mean) / std, per RGB channel",
                          "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "output": GRAPH_OUTPUT,
        "resize": RESIZE,
        "architecture": {"model": "fcn32s", "backbone": "segnet_basic", "upsample": "bilinear"},
        "precision": "fp32",
        "checkpoint_sha256": load_checkpoint(folder / "model.pt")["sha256"],
    }


def test_an_onnx_file_that_pixelwise_did_not_write_is_refused(tmp_path):
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph([node], "g", [value("x", onnx.TensorProto.FLOAT, [1])],
                                   [value("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph), str(tmp_path / "foreign.onnx"))
    with pytest.raises(PixelwiseError, match=r"foreign\.onnx has no pixelwise metadata \(class_names, palette, "
                                             r"ignore_index, infer_scale missing\): it was not written by "
                                             r"`pixelwise export`"):
        read_metadata(tmp_path / "foreign.onnx")


# ---------------------------------------------------------------- static "same" padding

def test_same_padding_is_tf_same_padding_whenever_the_stride_divides_the_input():
    assert same_padding(3, 2, 1) == (0, 1)  # EfficientNet's strided 3x3: the extra pixel goes after
    assert same_padding(5, 2, 1) == (1, 2)
    assert same_padding(3, 1, 2) == (2, 2)
    assert same_padding(1, 2, 1) == (0, 0)
    for kernel in range(1, 8):
        for stride in (1, 2, 4):
            for dilation in (1, 2):
                for length in range(stride, 40 * stride, stride):
                    total = get_same_padding(length, kernel, stride, dilation)
                    assert same_padding(kernel, stride, dilation) == (total // 2, total - total // 2)
    # ...and only then: at an odd size timm pads 3x3/2 by (1, 1), which is why inputs are padded to 32 first
    assert get_same_padding(33, 3, 2, 1) == 2


def test_static_padding_leaves_efficientnet_outputs_unchanged_at_every_size():
    model = randomise_head(create_model("fcn8s", backbone="efficientnet_lite0", num_classes=4, pretrained=False)).eval()
    static = static_same_padding(model)
    assert not any(isinstance(m, Conv2dSame) for m in static.modules())
    assert sum(isinstance(m, Conv2dSame) for m in model.modules()) == 5  # the original is not touched
    for height, width in [(32, 32), (64, 96), (45, 61)]:
        images = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(width))
        with torch.no_grad():
            expected, got = model(images), static(images)
        # the same padded input, but the kernels may differ with the convolution's own padding
        torch.testing.assert_close(got, expected, atol=network_atol(expected), rtol=0, msg=str((height, width)))
        assert expected.abs().max() > 0.1


class SamePadEncoder(nn.Module):
    """Three TF-"same" convs as timm builds them: 3x3/2, 5x5/2 and an even 2x2/1 (also dynamic in timm)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(Conv2dSame(3, 4, 3, stride=2), nn.ReLU(), Conv2dSame(4, 4, 5, stride=2), nn.ReLU(),
                                  Conv2dSame(4, 4, 2, stride=1))
        self.out_channels, self.strides = [4], [4]

    def forward(self, x):
        return [self.body(x)]


def same_pad_model() -> SegmentationModel:
    torch.manual_seed(0)
    decoder = FCNDecoder([4], [4], 3, skip_strides=(), upsample="bilinear")
    return randomise_head(SegmentationModel(SamePadEncoder(), decoder, Upsample(3, 4, "bilinear"), 3)).eval()


SHAPE_OPS = ("Shape", "Gather", "Ceil", "Div", "Max", "Cast", "Sub", "Unsqueeze", "Concat")


def shape_op_count(model) -> int:
    """Shape arithmetic in the TorchScript exporter's graph, which spells out every pad size (the dynamo
    exporter needs 100 s for this model with dynamic padding: its symbolic ceil reasoning is the cost)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated; only its op counts matter here
        torch.onnx.export(model, (torch.rand(1, 3, 45, 61),), buffer, dynamo=False, input_names=["images"],
                          dynamic_axes={"images": {0: "n", 2: "h", 3: "w"}})
    ops = collections.Counter(n.op_type for n in onnx.load_from_string(buffer.getvalue()).graph.node)
    return sum(ops[op] for op in SHAPE_OPS), ops["Ceil"]


def test_static_padding_removes_the_pad_arithmetic_and_folds_constant_pads_into_the_convs():
    model = same_pad_model()
    (before, ceils_before), (after, ceils_after) = shape_op_count(model), shape_op_count(static_same_padding(model))
    assert ceils_before == 6 and ceils_after == 0  # ceil(L / s) per conv and axis
    assert after < before / 2
    proto = export_network(model, {})
    check_against_eager(model, proto, shapes=((2, 45, 61), (1, 64, 96), (2, 32, 36), (1, 9, 130)))
    ops = collections.Counter(n.op_type for n in proto.graph.node)
    assert ops["Ceil"] == ops["Max"] == 0
    assert ops["Pad"] == 1  # only the model's own replicate pad to a multiple of the stride
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    pads = [next(list(a.ints) for a in n.attribute if a.name == "pads") for n in convs]
    # ONNX order (top, left, bottom, right): TF-same puts the odd pixel after
    assert pads[:3] == [[0, 0, 1, 1], [1, 1, 2, 2], [0, 0, 1, 1]]


# ---------------------------------------------------------------- int8

def test_int8_model_is_quantised_runs_and_mostly_agrees_with_fp32(exported, tmp_path):
    folder, _, _ = exported
    rng = np.random.default_rng(0)
    for i in range(6):  # smooth blobs, not noise: something a segmentation net has an opinion about
        low = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        Image.fromarray(low).resize((80 + 8 * i, 60), Image.BILINEAR).save(tmp_path / f"calib{i}.png")
    same = quantize_onnx(folder / "model.onnx", tmp_path / "int8.onnx", sorted(tmp_path.glob("calib*.png")), (48, 64))
    assert same > 0.9
    graph = onnx.load(str(tmp_path / "int8.onnx")).graph
    ops = collections.Counter(n.op_type for n in graph.node)
    assert ops["QuantizeLinear"] >= 5 and ops["DequantizeLinear"] >= ops["Conv"]
    meta = read_metadata(tmp_path / "int8.onnx")
    assert meta["precision"] == "int8"
    assert meta["calibration"]["images"] == 6 and meta["calibration"]["size"] == [48, 64]
    assert meta["class_names"] == CLASSES and meta["infer_scale"] == 1.5


def test_calibration_images_are_spread_over_the_folder_and_a_missing_dataset_names_the_fix(tmp_path):
    for i in range(10):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{i:02d}.png")
    ckpt = {"config": TrainConfig(data=str(tmp_path / "gone")).to_dict()}
    assert [p.name for p in calibration_paths(ckpt, [tmp_path], count=4)] == ["00.png", "03.png", "06.png", "09.png"]
    with pytest.raises(PixelwiseError, match=r"int8 calibration needs typical images.*pass --calibration DIR"):
        calibration_paths(ckpt, None)
