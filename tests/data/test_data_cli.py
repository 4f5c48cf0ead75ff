"""`pixelwise data import | check | split | browse` end to end, through the real command line."""
import json

import numpy as np
import pytest
from PIL import Image

from pixelwise.checkpoint import save_checkpoint
from pixelwise.cli import main
from pixelwise.config import TrainConfig
from pixelwise.data.formats import load_spec
from pixelwise.data.importers.coco import write_synthetic_coco
from pixelwise.data.io import read_mask
from pixelwise.models.registry import create_model


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("coco")
    json_path = write_synthetic_coco(12, tmp / "export", size=(72, 96), seed=4)
    assert main(["data", "import", "--from", "coco", str(json_path), "--out", str(tmp / "data")]) == 0
    return tmp / "data"


def test_import_writes_a_dataset_that_loads(imported):
    spec = load_spec(imported)
    assert spec.format == "folder" and spec.class_names == ("background", "cat", "dog", "car", "tree", "road")
    assert sum(len(p) for p in spec.splits.values()) == 12


def test_import_refuses_an_existing_destination(imported, tmp_path, capsys):
    json_path = write_synthetic_coco(2, tmp_path / "export", size=(32, 32))
    assert main(["data", "import", "--from", "coco", str(json_path), "--out", str(imported)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_check_passes_a_clean_dataset_and_writes_statistics(imported, tmp_path, capsys):
    assert main(["data", "check", str(imported), "--out", str(tmp_path / "stats")]) == 0
    out = capsys.readouterr().out
    assert "no problems found" in out and "12 masks, 6 classes" in out
    stats = json.loads((tmp_path / "stats" / "stats.json").read_text())
    assert stats["masks"] == 12 and [c["name"] for c in stats["classes"]][0] == "background"
    assert abs(sum(c["pixel_share"] for c in stats["classes"]) + stats["ignore_share"] - 1) < 1e-9
    assert (tmp_path / "stats" / "stats.png").stat().st_size > 1000


def test_check_names_a_planted_problem_and_fails(imported, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(imported, data)
    mask = sorted((data / "masks").iterdir())[3]
    Image.fromarray(np.full((72, 96), 42, dtype=np.uint8)).save(mask)
    assert main(["data", "check", str(data), "--out", str(tmp_path / "stats")]) == 2
    captured = capsys.readouterr()
    assert f"{mask}: mask has label 42 (6912 px) but the dataset has 6 classes" in captured.out
    assert "1 problems in" in captured.err and "(1 bad label)" in captured.err


def test_split_then_train_lists_load(imported, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(imported, data)
    assert main(["data", "split", str(data), "--val", "0.25", "--test", "0.25", "--seed", "1"]) == 0
    spec = load_spec(data)
    assert sorted(len(spec.split(s)) for s in ("train", "val", "test")) == [3, 3, 6]
    assert main(["data", "split", str(data)]) == 2  # existing lists are not replaced silently
    assert "overwrite" in capsys.readouterr().err


def test_browse_worst_orders_by_a_models_per_image_iou(imported, tmp_path):
    from pixelwise.api import per_image_iou

    torch_model = create_model("fcn32s", backbone="segnet_basic", num_classes=6, upsample="bilinear", pretrained=False)
    cfg = TrainConfig(data=str(imported), model="fcn32s", backbone="segnet_basic", upsample="bilinear", infer_scale=1.0)
    spec = load_spec(imported)
    save_checkpoint(tmp_path / "m.pt", model=torch_model.state_dict(), config=cfg.to_dict(),
                    class_names=list(spec.class_names), ignore_index=255, palette=spec.palette.tolist())
    split = "val" if "val" in spec.splits else "train"
    scores = per_image_iou(tmp_path / "m.pt", imported, split=split, precision="fp32")
    assert sorted(scores) == sorted(p[0].stem for p in spec.split(split))
    # a constant prediction of class c scores IoU(c) = |c in truth| / |pixels|, other present classes 0
    from pixelwise.inference.predict import load

    predictor = load(tmp_path / "m.pt", precision="fp32")
    image, mask_path = spec.split(split)[0]
    prediction, truth = predictor.predict(image), read_mask(mask_path)
    labelled = truth != 255
    ious = [((prediction == c) & (truth == c) & labelled).sum() / (((prediction == c) & labelled) | (truth == c)).sum()
            for c in range(6) if ((prediction == c) & labelled).any() or (truth == c).any()]
    assert scores[image.stem] == pytest.approx(np.mean(ious))
    assert main(["data", "browse", str(imported), "--out", str(tmp_path / "sheet.png"), "--worst", str(tmp_path / "m.pt"),
                 "--split", split]) == 0
    assert Image.open(tmp_path / "sheet.png").size[0] > 200
