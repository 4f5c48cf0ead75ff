"""Engines: every runtime gives eager PyTorch's logits, from a checkpoint or an exported .onnx alone."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

from pixelwise.errors import PixelwiseError
from pixelwise.evaluation import evaluate_engine
from pixelwise.inference import selection
from pixelwise.inference.engines import STATIC_COMPILES, OnnxRuntimeEngine, OpenVinoEngine, TorchEngine
from pixelwise.inference.metadata import read_metadata
from pixelwise.inference.predict import predictor_from
from pixelwise.inference.selection import create_engine, fastest_engine, profile_scale
from pixelwise.runtime import physical_cores
from pixelwise.runtime import predict_logits

from tolerances import assert_same_classes_where_decided, network_atol

from test_export import CLASSES, PALETTE, write_checkpoint


@pytest.fixture(scope="module")
def beside(tmp_path_factory):
    """A checkpoint with a stale model.onnx beside it (older, and not even ONNX): the onnxruntime
    engine must export a fresh one in its place."""
    folder = tmp_path_factory.mktemp("engines")
    model = write_checkpoint(folder / "model.pt")
    (folder / "model.onnx").write_bytes(b"an older export")
    old = (folder / "model.pt").stat().st_mtime_ns - 10**10
    os.utime(folder / "model.onnx", ns=(old, old))
    logs = []
    engine = create_engine("onnxruntime", folder / "model.pt", log=logs.append)
    return folder, model, engine, logs


def images(n=2, height=45, width=61, seed=0):
    return torch.rand(n, 3, height, width, generator=torch.Generator().manual_seed(seed))


def test_an_onnx_older_than_the_checkpoint_is_exported_again(beside):
    folder, _, engine, logs = beside
    assert logs == [f"exporting {folder / 'model.pt'} to {folder / 'model.onnx'} "
                    "(once; reused while newer than the checkpoint)"]
    assert read_metadata(folder / "model.onnx")["class_names"] == CLASSES
    assert (folder / "model.onnx").stat().st_mtime_ns > (folder / "model.pt").stat().st_mtime_ns
    assert engine.path == folder / "model.onnx"


def test_an_onnx_newer_than_the_checkpoint_is_reused_untouched(beside):
    folder, _, _, _ = beside
    before = (folder / "model.onnx").stat().st_mtime_ns
    logs = []
    create_engine("onnxruntime", folder / "model.pt", log=logs.append)
    assert (folder / "model.onnx").stat().st_mtime_ns == before
    assert logs == [f"using {folder / 'model.onnx'} (newer than model.pt)"]


def test_onnxruntime_gives_the_eager_fp32_logits_with_the_inference_scale_applied(beside):
    folder, model, engine, _ = beside
    batch = images()
    expected = predict_logits(model, batch, torch.device("cpu"), None, scale=1.5)
    got = engine.logits(batch)
    assert got.shape == (2, 3, 45, 61) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=network_atol(expected), rtol=0)
    for labels, reference in zip(got.argmax(1), expected):
        assert_same_classes_where_decided(labels, reference, network_atol(expected))
    # without the 1.5x resize the logits would differ: the scale really is applied
    assert (predict_logits(model, batch, torch.device("cpu"), None, scale=1.0) - got).abs().max() > 1e-2


def test_the_torch_engine_and_the_onnx_file_alone_make_the_same_predictor(beside):
    folder, _, _, _ = beside
    from_checkpoint = predictor_from(folder / "model.pt", engine="torch", precision="fp32")
    from_onnx = predictor_from(folder / "model.onnx", engine="onnxruntime")
    for predictor in (from_checkpoint, from_onnx):
        assert predictor.class_names == CLASSES and predictor.ignore_index == 255
        np.testing.assert_array_equal(predictor.palette, np.array(PALETTE, dtype=np.uint8))
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    a, b = from_checkpoint.predict(image), from_onnx.predict(image)
    assert a.shape == (37, 53) and (a == b).mean() >= 0.999


def test_onnxruntime_session_is_set_up_to_share_the_cpu_with_torch(beside):
    folder, _, engine, _ = beside
    options = engine.session.get_session_options()
    assert options.intra_op_num_threads == physical_cores()
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert OnnxRuntimeEngine(folder / "model.onnx", threads=1).session.get_session_options().intra_op_num_threads == 1
    assert 1 <= physical_cores() <= os.cpu_count()
    assert engine.gpu is False  # CPU only here: serve and predict batch one image at a time


def test_engine_misuse_names_the_fix(beside):
    folder, _, _, _ = beside
    with pytest.raises(PixelwiseError, match="unknown engine 'tensorrt'; choose auto or one of torch, onnxruntime, openvino"):
        create_engine("tensorrt", folder / "model.pt")
    with pytest.raises(PixelwiseError, match=r"the torch engine runs checkpoints \(\.pt\); run an \.onnx file with "
                                             "--engine onnxruntime or --engine openvino"):
        create_engine("torch", folder / "model.onnx")
    with pytest.raises(PixelwiseError, match="use --precision auto or fp32"):
        create_engine("onnxruntime", folder / "model.onnx", precision="bf16")


def test_openvino_gives_onnxruntimes_logits(beside):
    pytest.importorskip("openvino", reason="openvino is an optional extra: pip install 'pixelwise[openvino]'")
    folder, _, engine, _ = beside
    openvino = create_engine("openvino", folder / "model.onnx", precision="fp32")
    assert isinstance(openvino, OpenVinoEngine) and openvino.meta == engine.meta
    for batch in (images(), images(1, 64, 96, seed=1)):
        expected = engine.logits(batch)
        torch.testing.assert_close(openvino.logits(batch), expected, atol=network_atol(expected), rtol=0)


def test_openvino_compiles_a_shape_seen_twice_keeps_four_and_stops_after_sixteen(beside, monkeypatch):
    pytest.importorskip("openvino", reason="openvino is an optional extra: pip install 'pixelwise[openvino]'")
    folder, _, engine, _ = beside
    openvino = create_engine("openvino", folder / "model.onnx", precision="fp32")
    batch = images(1, 40, 56)
    first = openvino.run(batch)  # seen once: the dynamic graph
    assert list(openvino._static) == []
    second = openvino.run(batch)  # seen twice: its own graph, the same logits
    assert list(openvino._static) == [(1, 3, 40, 56)] and openvino.compiled_for((1, 3, 40, 56)) is not openvino.compiled
    torch.testing.assert_close(second, first, atol=network_atol(first), rtol=0)
    expected = engine.run(images(1, 40, 56, seed=3))
    torch.testing.assert_close(openvino.run(images(1, 40, 56, seed=3)), expected, atol=network_atol(expected), rtol=0)
    for height in range(41, 46):  # five more shapes, each run twice: the four most recent stay
        openvino.run(images(1, height, 56)), openvino.run(images(1, height, 56))
    assert list(openvino._static) == [(1, 3, h, 56) for h in range(42, 46)] and openvino._compiles == 6
    assert set(openvino._requests.by_graph) == set(openvino._static)  # no request keeps an evicted graph alive
    monkeypatch.setattr(openvino, "_compiles", STATIC_COMPILES)  # sizes that keep changing: no more compiles
    for _ in range(2):
        expected = engine.run(images(1, 47, 56))
        torch.testing.assert_close(openvino.run(images(1, 47, 56)), expected, atol=network_atol(expected), rtol=0)
    assert (1, 3, 47, 56) not in openvino._static and openvino.compiled_for((1, 3, 47, 56)) is openvino.compiled


def test_openvino_compiles_a_huge_images_tile_shape_at_first_sight_and_never_runs_the_dynamic_graph(beside):
    pytest.importorskip("openvino", reason="openvino is an optional extra: pip install 'pixelwise[openvino]'")
    from pixelwise.inference.tiling import predict_tiled

    folder, _, engine, _ = beside
    openvino = create_engine("openvino", folder / "model.onnx", precision="fp32")
    image = (np.random.default_rng(0).random((100, 150, 3)) * 255).astype(np.uint8)
    labels = predict_tiled(openvino, image, tile=64, overlap=16)
    assert len(openvino._static) == 1 and openvino._compiles == 1  # the tiles' one shape, compiled once
    assert set(openvino._requests.by_graph) == set(openvino._static)  # no request of the dynamic graph was made
    assert openvino._repeating.depth == 0  # outside the tiles, a shape seen once runs on the dynamic graph again
    assert np.mean(labels == predict_tiled(engine, image, tile=64, overlap=16)) >= 0.999


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_an_engine_with_two_streams_serves_two_threads_at_once_with_the_same_logits(beside, name):
    from concurrent.futures import ThreadPoolExecutor

    folder, _, _, _ = beside
    one = create_engine(name, folder / "model.onnx", precision="fp32")
    two = create_engine(name, folder / "model.onnx", precision="fp32", streams=2)
    assert (one.streams, two.streams) == (1, 2)
    batches = [images(1, 45 + i, 61, seed=i) for i in range(6)]
    with ThreadPoolExecutor(2) as pool:  # each thread has its own request; results never cross
        side_by_side = list(pool.map(two.logits, batches))
    for batch, logits in zip(batches, side_by_side):
        expected = one.logits(batch)  # one stream has all the cores: its kernels may split the sums otherwise
        torch.testing.assert_close(logits, expected, atol=network_atol(expected), rtol=0)
    with pytest.raises(PixelwiseError, match="streams must be a whole number of at least 1, got 0"):
        create_engine(name, folder / "model.onnx", streams=0)


def test_without_openvino_the_engine_says_how_to_install_it(beside, monkeypatch):
    folder, _, _, _ = beside
    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` raise ImportError
    with pytest.raises(PixelwiseError, match=r"--engine openvino needs the openvino package, which is not installed: "
                                             r"pip install 'pixelwise\[openvino\]'"):
        OpenVinoEngine(folder / "model.onnx")


def test_importing_pixelwise_loads_no_onnx_runtime():
    script = ("import sys, json, pixelwise, pixelwise.inference.engines; print(json.dumps(sorted("
              "m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnxruntime', 'onnxscript', 'openvino'))))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_predicting_with_an_exported_model_never_loads_the_model_zoo(beside):
    """timm and torchvision take about 2 s to import; a predict from an .onnx file needs neither."""
    folder, _, _, _ = beside
    script = (f"import sys, json, numpy as np, pixelwise; p = pixelwise.load({str(folder / 'model.onnx')!r}, "
              "engine='onnxruntime'); mask = p.predict(np.zeros((45, 61, 3), np.uint8)); print(json.dumps(["
              "list(mask.shape), sorted(m for m in sys.modules if m.split('.')[0] in ('timm', 'torchvision') "
              "or m.startswith('pixelwise.models'))]))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [[45, 61], []]


def test_evaluate_engine_fills_the_confusion_matrix_that_eager_evaluation_does(beside, folder_dataset):
    from pixelwise.data.dataset import SegmentationDataset
    from pixelwise.data.formats import load_spec
    from pixelwise.training.engine import evaluate
    from pixelwise.evaluation import ConfusionMatrix

    _, model, engine, _ = beside
    spec = load_spec(folder_dataset)
    dataset = SegmentationDataset([p for pairs in spec.splits.values() for p in pairs], 3, 255)
    got = evaluate_engine(engine, dataset, ConfusionMatrix(3, 255), batch_size=5).matrix
    expected = evaluate(model, dataset, torch.device("cpu"), None, batch_size=5, scale=1.5).matrix
    labelled = int(sum((dataset.load(i)[1] != 255).sum() for i in range(len(dataset))))
    assert int(got.sum()) == int(expected.sum()) == labelled
    assert int((got - expected).abs().sum()) <= 2 * 0.001 * labelled  # each flipped pixel moves two cells


def test_profiles_set_the_inference_scale():
    assert profile_scale("accurate", 1.75) == 1.75 and profile_scale("fast", 1.75) == 1.0
    with pytest.raises(PixelwiseError, match="unknown profile 'fastest'; choose accurate or fast"):
        profile_scale("fastest", 1.75)


def test_the_fast_profile_runs_the_network_at_scale_one_on_every_engine(beside):
    folder, model, _, _ = beside
    batch = images()
    at_one = predict_logits(model, batch, torch.device("cpu"), None, scale=1.0)
    for name, source in (("torch", "model.pt"), ("onnxruntime", "model.onnx")):
        fast = create_engine(name, folder / source, precision="fp32", profile="fast")
        accurate = create_engine(name, folder / source, precision="fp32")
        assert (fast.scale, accurate.scale) == (1.0, 1.5)  # the checkpoint was trained with infer_scale 1.5
        torch.testing.assert_close(fast.logits(batch), at_one, atol=network_atol(at_one), rtol=0)


def test_auto_precision_keeps_fp32_masks_when_accurate_and_takes_bf16_when_fast(beside, monkeypatch):
    from pixelwise import runtime

    folder, _, _, _ = beside
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    for fp16, accurate_dtype in ((True, torch.float16), (False, None)):
        monkeypatch.setattr(runtime, "cpu_has_fp16", lambda: fp16)
        assert create_engine("torch", folder / "model.pt").dtype == accurate_dtype
        assert create_engine("torch", folder / "model.pt", profile="fast").dtype == torch.bfloat16
    if importlib.util.find_spec("openvino"):
        hint = create_engine("openvino", folder / "model.onnx").compiled.get_property("INFERENCE_PRECISION_HINT")
        assert str(hint) in ("<Type: 'float32'>", "f32")
        # fast asks OpenVINO for bf16 exactly where torch would take it (a CPU without it runs f32 anyway)
        for bf16, fast_precision, hint in ((True, "bf16", "bf16"), (False, "fp32", "f32")):
            monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: bf16)
            fast = create_engine("openvino", folder / "model.onnx", profile="fast")
            assert (fast.precision, fast._config["INFERENCE_PRECISION_HINT"]) == (fast_precision, hint)
    with pytest.raises(PixelwiseError, match="use --precision auto or fp32, or --engine torch or openvino for fp16"):
        create_engine("onnxruntime", folder / "model.onnx", precision="fp16")


def test_auto_picks_openvino_then_onnxruntime_then_torch_on_the_cpu(monkeypatch):
    found = {"openvino", "onnxruntime", "onnx", "onnxscript"}
    monkeypatch.setattr(selection.importlib.util, "find_spec", lambda name: name in found or None)
    assert fastest_engine("cpu") == "openvino"
    found.discard("openvino")
    assert fastest_engine("cpu") == "onnxruntime"
    found.discard("onnxscript")  # no exporter: a checkpoint cannot become a graph
    assert fastest_engine("cpu") == "torch"


def test_auto_falls_back_to_torch_saying_why_when_the_fast_engine_cannot_run(beside, monkeypatch):
    folder, _, _, _ = beside
    monkeypatch.setattr(selection, "fastest_engine", lambda device: "openvino")
    monkeypatch.setitem(sys.modules, "openvino", None)
    logs = []
    engine = create_engine("auto", folder / "model.pt", log=logs.append, profile="fast")
    assert isinstance(engine, TorchEngine) and engine.scale == 1.0
    assert logs[-1].startswith("--engine openvino needs the openvino package") and \
        logs[-1].endswith("--engine auto: running model.pt in PyTorch instead")


def test_context_fpn_masks_at_accurate_equal_eager_fp32_on_every_engine(tmp_path):
    """The issue's bar for the context decoder: ONNX Runtime's and OpenVINO's masks at --profile accurate equal
    eager fp32's on at least 99.9% of the pixels, with and without flip test-time augmentation."""
    from pixelwise import create_model
    from pixelwise.checkpoint import save_checkpoint
    from pixelwise.config import TrainConfig

    torch.manual_seed(0)
    model = create_model("context_fpn", backbone="efficientnet_lite0", num_classes=3, pretrained=False)
    for parameter in model.decoder.parameters():  # a random head that still makes every logit count
        torch.nn.init.normal_(parameter, std=0.5)
    cfg = TrainConfig(data="/nonexistent/data", model="context_fpn", infer_scale=1.0)
    save_checkpoint(tmp_path / "model.pt", model=model.state_dict(), config=cfg.to_dict(), class_names=CLASSES,
                    ignore_index=255, palette=PALETTE)
    batch = torch.nn.functional.interpolate(images(n=2, height=6, width=8), size=(90, 120), mode="bilinear")
    names = ["torch", "onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
    engines = {name: create_engine(name, tmp_path / "model.pt", precision="fp32" if name == "torch" else "auto",
                                   profile="accurate", log=lambda _: None) for name in names}
    for flip in (False, True):
        masks = {}
        for name, engine in engines.items():
            engine.flip = flip
            masks[name] = engine.logits(batch).argmax(1)
        shares = masks["torch"].flatten().bincount(minlength=3) / masks["torch"].numel()
        assert (shares > 0.1).sum() >= 2  # two classes split the image: agreement is not trivial
        for name in names[1:]:
            assert (masks[name] == masks["torch"]).float().mean() >= 0.999, (name, flip)


def test_accurate_flips_only_for_a_checkpoint_trained_with_infer_flip_and_fast_never(tmp_path):
    from pixelwise.checkpoint import load_checkpoint, save_checkpoint

    write_checkpoint(tmp_path / "plain.pt")
    ckpt = load_checkpoint(tmp_path / "plain.pt")
    ckpt.pop("sha256")
    save_checkpoint(tmp_path / "flip.pt", **{**ckpt, "infer_flip": True})
    flips = {(name, profile): create_engine("torch", tmp_path / f"{name}.pt", profile=profile).flip
             for name in ("plain", "flip") for profile in ("accurate", "fast")}
    assert flips == {("plain", "accurate"): False, ("plain", "fast"): False,
                     ("flip", "accurate"): True, ("flip", "fast"): False}
    exported = create_engine("onnxruntime", tmp_path / "flip.pt", log=lambda _: None)
    assert exported.flip and read_metadata(tmp_path / "flip.onnx")["infer_flip"] is True
