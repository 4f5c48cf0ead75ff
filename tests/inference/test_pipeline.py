"""The folder pipeline writes exactly what the one-image-at-a-time path writes, whatever the batching."""
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise.data.io import default_palette, read_image, read_mask
from pixelwise.errors import DataError, PixelwiseError
from pixelwise.inference.pipeline import equal_size_batches, predict_folder
from pixelwise.data.io import gather_images
from pixelwise.inference.predict import Predictor
from pixelwise.inference.tiling import class_argmax, predict_tiled


class ColourEngine:
    """Per-pixel logits from the colour alone: the same for an image however it is batched."""

    def __init__(self):
        self.weights = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [-1, -1, -1]]).view(4, 3, 1, 1)
        self.bias = torch.tensor([0.0, 0.0, 0.0, 1.2])
        self.calls = []

    def logits(self, images):
        self.calls.append(tuple(images.shape))
        return torch.nn.functional.conv2d(images, self.weights, self.bias)


def make_predictor() -> Predictor:
    return Predictor(ColourEngine(), ["red", "green", "blue", "dark"], default_palette(4), ignore_index=255)


@pytest.fixture
def photos(tmp_path):
    """Eight images of three sizes, in an order that interleaves the sizes, plus one broken file."""
    folder = tmp_path / "photos"
    folder.mkdir()
    sizes = [(20, 24), (17, 31), (20, 24), (9, 40), (20, 24), (17, 31), (20, 24), (9, 40)]
    for i, (h, w) in enumerate(sizes):
        pixels = np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.{'png' if i % 2 else 'jpg'}")
    (folder / "broken.png").write_bytes(b"not a png at all")
    return folder


def sequential(predictor: Predictor, images: list[Path], out: Path) -> list[Path]:
    """What `pixelwise predict` did before the pipeline: one image at a time, bad ones skipped."""
    out.mkdir()
    failed = []
    for path in images:
        try:
            predictor.predict_to_files(path, out)
        except DataError:
            failed.append(path)
    return failed


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_pipeline_writes_the_files_of_the_sequential_path(photos, tmp_path):
    images = gather_images([photos])
    assert sequential(make_predictor(), images, tmp_path / "seq") == [photos / "broken.png"]
    messages = []
    predictor = make_predictor()
    summary = predict_folder(predictor, images, tmp_path / "pipe", batch_size=3, log=messages.append)

    expected = outputs(tmp_path / "seq")
    assert len(expected) == 16 and outputs(tmp_path / "pipe") == expected  # byte-identical labels and overlays
    assert summary.written == 8 and summary.images_per_s > 0 and summary.seconds > 0
    assert [p for p, _ in summary.failed] == [photos / "broken.png"]
    assert "broken.png" in summary.failed[0][1] and "cannot read image" in summary.failed[0][1]
    assert messages == [f"skipped: {summary.failed[0][1]}"]
    # equal sizes share a batch: four 20x24 images go as 3 + 1, never mixed with other sizes
    assert sorted(predictor.engine.calls).count((3, 3, 20, 24)) == 1
    assert all(n <= 3 for n, *_ in predictor.engine.calls)
    assert sum(n for n, *_ in predictor.engine.calls) == 8
    # the label PNGs hold the classes, with the palette
    labels = read_mask(tmp_path / "pipe" / "img3.png")
    np.testing.assert_array_equal(labels, make_predictor().predict(photos / "img3.png"))


def test_batch_size_does_not_change_the_outputs(photos, tmp_path):
    images = gather_images([photos])
    for batch_size in (1, 3):
        predict_folder(make_predictor(), images, tmp_path / f"b{batch_size}", batch_size=batch_size,
                       workers=batch_size, log=lambda message: None)
    assert outputs(tmp_path / "b1") == outputs(tmp_path / "b3")
    assert len(outputs(tmp_path / "b1")) == 16


class StreamedColourEngine(ColourEngine):
    """ColourEngine serving two calls at once; it records the most calls that were ever inside it together."""
    streams = 2

    def __init__(self):
        super().__init__()
        self.inside, self.most_inside, self.lock = 0, 0, threading.Lock()

    def logits(self, images):
        with self.lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        time.sleep(0.02)  # long enough for the other stream's call to arrive
        try:
            return super().logits(images)
        finally:
            with self.lock:
                self.inside -= 1


def test_an_engine_with_streams_predicts_whole_images_side_by_side_with_the_same_files(photos, tmp_path):
    images = gather_images([photos])
    sequential(make_predictor(), images, tmp_path / "seq")
    engine = StreamedColourEngine()
    messages = []
    summary = predict_folder(Predictor(engine, ["red", "green", "blue", "dark"], default_palette(4), 255), images,
                             tmp_path / "side", log=messages.append)
    assert outputs(tmp_path / "side") == outputs(tmp_path / "seq")  # byte-identical labels and overlays
    assert summary.written == 8 and [p for p, _ in summary.failed] == [photos / "broken.png"]
    assert messages == [f"skipped: {summary.failed[0][1]}"]
    assert sorted(engine.calls) == sorted((1, 3, *read_image(p).shape[:2])  # one whole image a call
                                          for p in images if p.name != "broken.png")
    assert engine.most_inside == 2  # two streams, two calls at once, never more


def test_a_failed_write_stops_the_side_by_side_run(photos, tmp_path, monkeypatch):
    import pixelwise.inference.predict as predict

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(predict, "write_outputs", disk_full)
    with pytest.raises(OSError, match="No space left"):
        predict_folder(Predictor(StreamedColourEngine(), ["r", "g", "b", "d"], default_palette(4), 255),
                       [photos / "img0.jpg", photos / "img1.png"], tmp_path / "out")


def test_no_overlay_writes_labels_only(photos, tmp_path):
    images = [p for p in gather_images([photos]) if p.name != "broken.png"]
    summary = predict_folder(make_predictor(), images, tmp_path / "out", overlay=False)
    assert summary.written == 8 and summary.failed == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f"{p.stem}.png" for p in images)


@pytest.mark.parametrize("streamed", [False, True])
def test_saved_probabilities_are_the_softmax_of_the_logits_and_their_argmax_is_the_mask(photos, tmp_path, streamed):
    images = [p for p in gather_images([photos]) if p.name != "broken.png"]
    engine = StreamedColourEngine() if streamed else ColourEngine()
    predictor = Predictor(engine, ["red", "green", "blue", "dark"], default_palette(4), 255)
    predict_folder(predictor, images, tmp_path / "u8", overlay=False, probabilities="uint8")
    predict_folder(predictor, images, tmp_path / "f16", overlay=False, probabilities="float16")
    for path in images:
        logits = ColourEngine().logits(torch.from_numpy(read_image(path)).permute(2, 0, 1)[None].float() / 255)[0]
        expected = logits.softmax(0).numpy()
        quantised, half = np.load(tmp_path / "u8" / f"{path.stem}_probs.npy"), np.load(tmp_path / "f16" /
                                                                                        f"{path.stem}_probs.npy")
        assert quantised.dtype == np.uint8 and half.dtype == np.float16 and half.shape == (4, *read_image(path).shape[:2])
        np.testing.assert_array_equal(quantised, np.round(expected * 255).astype(np.uint8))
        np.testing.assert_allclose(half, expected, atol=1e-3)
        mask = read_mask(tmp_path / "u8" / f"{path.stem}.png")
        np.testing.assert_array_equal(mask, class_argmax(logits))  # the mask `predict` writes, as before
        top2 = np.sort(expected, axis=0)[-2:]
        clear = top2[1] - top2[0] > 1e-6  # where two classes tie, either is the argmax
        np.testing.assert_array_equal(mask[clear], expected.argmax(0)[clear])
    with pytest.raises(PixelwiseError, match="--save-probs .* --tile"):
        predict_folder(predictor, images, tmp_path / "tiled", tile=256, probabilities="uint8")


def test_tiled_pipeline_writes_predict_tiled_labels(photos, tmp_path):
    images = [photos / "img0.jpg", photos / "img3.png"]
    predictor = make_predictor()
    summary = predict_folder(predictor, images, tmp_path / "out", tile=16, overlap=8)
    assert summary.written == 2
    calls = predictor.engine.calls  # tiles, not whole images: 2 x 2 for 20x24, 1 x 4 for 9x40
    assert sorted(shape[-2:] for shape in calls) == [(9, 16)] * 4 + [(16, 16)] * 4
    for path in images:
        expected = predict_tiled(make_predictor().engine, read_image(path), 16, 8)
        np.testing.assert_array_equal(read_mask(tmp_path / "out" / f"{path.stem}.png"), expected)
        assert (tmp_path / "out" / f"{path.stem}_overlay.png").exists()


def test_bad_tiling_is_refused_before_anything_is_written(photos, tmp_path):
    with pytest.raises(PixelwiseError, match="--overlap 40 must be between 0 and half of --tile 64"):
        predict_folder(make_predictor(), [photos / "img0.jpg"], tmp_path / "out", tile=64, overlap=40)
    assert not (tmp_path / "out").exists()


def test_equal_size_batches_groups_by_size_and_bounds_the_waiting():
    def items(shapes):
        return [(Path(f"{i}"), np.zeros(shape)) for i, shape in enumerate(shapes)]

    a, b, c = (2, 2, 3), (3, 2, 3), (4, 2, 3)
    names = [[p.name for p, _ in batch] for batch in equal_size_batches(items([a, b, a, a, b, c]), 2)]
    assert names == [["0", "2"], ["1", "4"], ["3"], ["5"]]
    # at most 3 images wait: a fourth pushes the oldest group out, part-full (2 of 8)
    names = [[p.name for p, _ in batch] for batch in equal_size_batches(items([a, b, c, a, (5, 2, 3)]), 8, 3)]
    assert names == [["0", "3"], ["1"], ["2"], ["4"]]
