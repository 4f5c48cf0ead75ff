"""End to end: the real `pixelwise` command on the bundled nuclei sample."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from pairs import write_pair
from pixelwise.cli import main
from tolerances import assert_same_classes_where_decided, network_atol


def run_cli(*args):
    done = subprocess.run([sys.executable, "-m", "pixelwise.cli", *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory, nuclei_root):
    out = tmp_path_factory.mktemp("run")
    stdout = run_cli("train", "--data", nuclei_root, "--out", out, "--epochs", 2, "--batch-size", 4,
                     "--crop-size", 64, "--seed", 1)
    assert "best val mean IoU" in stdout
    return out


def test_train_writes_checkpoints_history_and_curves(trained):
    for name in ("last.pt", "best.pt", "history.json", "curves.png"):
        assert (trained / name).is_file(), name
    history = json.loads((trained / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(0 <= h["data_wait_share"] < 1 for h in history)  # measured each epoch: time waiting for batches
    ckpt = torch.load(trained / "last.pt", weights_only=True)  # plain types only
    assert ckpt["class_names"] == ["background", "nucleus"] and ckpt["state"]["epoch"] == 2
    # the progress file watchers follow (the app's retrain) holds the last epoch as the checkpoint does
    progress = json.loads((trained / "progress.json").read_text())
    assert progress == {"epoch": 2, "step": ckpt["state"]["step"], "loss": ckpt["state"]["last_loss"],
                        "val_miou": history[-1]["val_mean_iou"], "best_miou": ckpt["state"]["best_mean_iou"],
                        "elapsed_min": ckpt["state"]["elapsed_s"] / 60}
    assert ckpt["config"]["model"] == "fcn8s" and ckpt["config"]["crop_size"] == (64, 64)
    # the network's own config, apart from the run's: all inference reads besides the classes
    assert ckpt["model_config"] == {"model": "fcn8s", "backbone": "efficientnet_lite0", "upsample": None}
    assert ckpt["infer_scale"] == ckpt["config"]["infer_scale"]
    # --strategy auto (the default) measured the nuclei as small and unlike ImageNet, and recorded why
    assert ckpt["config"]["strategy"] == "full"
    advice = json.loads((trained / "advice.json").read_text())
    assert advice["quadrant"] == "small-different" and advice["evidence"]["images"] == 10


def test_val_every_validates_on_schedule_and_always_the_last_epoch(nuclei_root, tmp_path):
    from pixelwise.api import train

    logs = []
    train(nuclei_root, tmp_path / "run", epochs=5, val_every=2, batch_size=4, crop_size=(64, 64),
          strategy="head", log=logs.append)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 4, 5]  # the first to learn its cost, then every 2nd, and the last
    assert not any("strategy auto" in line for line in logs)  # an explicit strategy is used as given


def test_resume_continues_to_the_total_epoch_count(trained, nuclei_root, tmp_path):
    import shutil

    run = tmp_path / "resumed"
    shutil.copytree(trained, run)
    stdout = run_cli("train", "--data", nuclei_root, "--out", run, "--epochs", 3, "--resume",
                     "--batch-size", 4, "--crop-size", 64)
    assert "resuming from" in stdout and "after epoch 2" in stdout
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]


def test_evaluate_prints_metrics_and_writes_json_and_plot(trained, nuclei_root, tmp_path):
    stdout = run_cli("evaluate", "--checkpoint", trained / "best.pt", "--data", nuclei_root,
                     "--json", tmp_path / "m.json", "--plot", tmp_path / "cm.png")
    from pixelwise.inference.selection import fastest_engine

    # test when present, on the fastest engine here, at the checkpoint's inference scale
    assert f"test split, 3 images, {fastest_engine()} engine at inference scale 1.75" in stdout
    assert "mean IoU" in stdout and "nucleus" in stdout
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert set(metrics) >= {"pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou", "per_class_iou"}
    assert set(metrics["per_class_iou"]) == {"background", "nucleus"}
    assert all(0 <= metrics[k] <= 1 for k in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou"))
    assert sum(map(sum, metrics["confusion_matrix"])) == 3 * 128 * 128
    assert Image.open(tmp_path / "cm.png").size[0] > 100


def test_predict_writes_palette_masks_and_overlays_for_any_size(trained, nuclei_root, tmp_path):
    odd = tmp_path / "in" / "odd.jpg"
    odd.parent.mkdir()
    Image.open(nuclei_root / "images" / "tile_r0c0.png").convert("RGB").resize((97, 131)).save(odd)
    stdout = run_cli("predict", "--checkpoint", trained / "best.pt", odd.parent,
                     nuclei_root / "images" / "tile_r1c1.png", "--out", tmp_path / "pred")
    assert f"wrote 2 masks and overlays to {tmp_path / 'pred'} in " in stdout
    # two images on a CPU: one a core, side by side, on the engine `auto` picks; the masks are those the
    # same engine gives one image at a time with all the cores, wherever rounding cannot decide the class
    import pixelwise

    one_at_a_time = pixelwise.load(trained / "best.pt", engine="auto")
    for stem, size in (("odd", (97, 131)), ("tile_r1c1", (128, 128))):
        mask = Image.open(tmp_path / "pred" / f"{stem}.png")
        assert mask.mode == "P" and mask.size == size
        assert set(np.unique(np.asarray(mask))) <= {0, 1}
        source = odd if stem == "odd" else nuclei_root / "images" / "tile_r1c1.png"
        logits = one_at_a_time.logits(source)
        assert_same_classes_where_decided(np.asarray(mask), logits, network_atol(logits))
        assert Image.open(tmp_path / "pred" / f"{stem}_overlay.png").size == size


def test_python_api_predicts_from_path_pil_and_array(trained, nuclei_root):
    import pixelwise

    predictor = pixelwise.load(trained / "best.pt")
    path = nuclei_root / "images" / "tile_r0c0.png"
    from_path = predictor.predict(path)
    assert from_path.shape == (128, 128)
    assert (predictor.predict(Image.open(path)) == from_path).all()
    assert (predictor.predict(np.asarray(Image.open(path).convert("RGB"))) == from_path).all()


@pytest.mark.parametrize("case", ["unreadable", "wrong_size", "bad_label", "missing_mask", "empty"])
def test_bad_input_gives_one_line_error_naming_the_file(case, tmp_path, capsys):
    root = tmp_path / "data"
    for i in range(4):
        write_pair(root / "images" / f"s{i}.png", root / "masks" / f"s{i}.png", labels=(0, 1), seed=i)
    (root / "classes.txt").write_text("a\nb\n")
    expected = {
        "unreadable": "{root}/images/s1.png: cannot read",
        "wrong_size": "{root}/masks/s1.png: mask is 10x10 but its image {root}/images/s1.png is 24x20",
        "bad_label": "{root}/masks/s1.png: mask has label 7 (480 px) but the dataset has 2 classes (0-1, 255 = ignore)",
        "missing_mask": "{root}/images/s1.png: image has no mask",
        "empty": "no usable image",
    }[case].format(root=root)
    if case == "unreadable":
        (root / "images" / "s1.png").write_bytes(b"garbage")
    elif case == "wrong_size":
        Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(root / "masks" / "s1.png")
    elif case == "bad_label":
        Image.fromarray(np.full((20, 24), 7, dtype=np.uint8)).save(root / "masks" / "s1.png")
    elif case == "missing_mask":
        (root / "masks" / "s1.png").unlink()
    else:
        for p in (root / "images").iterdir():
            p.unlink()
    code = main(["train", "--data", str(root), "--out", str(tmp_path / "run"), "--epochs", "1", "--no-pretrained"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("pixelwise: error: ") and err.count("\n") == 1, err
    assert expected in err
    assert "Traceback" not in err


def test_predict_refuses_to_overwrite_inputs_or_collide(trained, tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (20, 20)).save(folder / "a.png")
    Image.new("RGB", (20, 20)).save(folder / "a.jpg")
    code = main(["predict", "--checkpoint", str(trained / "best.pt"), str(folder / "a.png"), "--out", str(folder)])
    assert code == 2 and "would overwrite the input image" in capsys.readouterr().err
    code = main(["predict", "--checkpoint", str(trained / "best.pt"), str(folder), "--out", str(tmp_path / "p")])
    assert code == 2 and "would both be written to" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["a.jpg", "a.png"]


def test_train_refuses_to_replace_a_previous_run(trained, nuclei_root, capsys):
    before = (trained / "last.pt").stat().st_mtime_ns
    code = main(["train", "--data", str(nuclei_root), "--out", str(trained), "--epochs", "1"])
    assert code == 2 and "already holds a training run" in capsys.readouterr().err
    assert (trained / "last.pt").stat().st_mtime_ns == before


def test_models_lists_every_model_and_explain_writes_figures(tmp_path, capsys):
    assert main(["models", "--size", "64x96", "--classes", "3"]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:]]
    import pixelwise

    # every model appears: fcn_vanilla once, the others once per backbone
    assert sorted(set(rows)) == pixelwise.list_models()
    assert len(rows) == (len(pixelwise.list_models()) - 1) * len(pixelwise.list_backbones()) + 1
    assert main(["explain", "upsampling", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bilinear.png", "max_unpooling.png", "nearest.png",
                                                           "transposed_bilinear_init.png", "transposed_convolution.png"]
    assert main(["explain", "decoders", "--out", str(tmp_path / "d")]) == 0
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["decoders.png"]


def test_predict_tiled_without_overlays(trained, nuclei_root, tmp_path):
    out = tmp_path / "tiled"
    stdout = run_cli("predict", "--checkpoint", trained / "best.pt", nuclei_root / "images" / "tile_r0c0.png",
                     "--out", out, "--tile", 64, "--overlap", 16, "--no-overlay")
    assert "wrote 1 mask to" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["tile_r0c0.png"]
    labels = np.asarray(Image.open(out / "tile_r0c0.png"))
    assert labels.shape == (128, 128) and set(np.unique(labels)) <= {0, 1}


def test_the_fast_profile_scores_and_predicts_at_scale_one(trained, nuclei_root, tmp_path):
    stdout = run_cli("evaluate", "--checkpoint", trained / "best.pt", "--data", nuclei_root, "--profile", "fast",
                     "--engine", "torch", "--json", tmp_path / "m.json", "--plot", tmp_path / "cm.png")
    assert "test split, 3 images, torch engine at inference scale 1" in stdout
    assert json.loads((tmp_path / "m.json").read_text())["infer_scale"] == 1.0
    image = nuclei_root / "images" / "tile_r0c0.png"
    run_cli("predict", "--checkpoint", trained / "best.pt", image, "--out", tmp_path / "fast", "--profile", "fast",
            "--engine", "torch", "--no-overlay")
    import pixelwise

    expected = pixelwise.load(trained / "best.pt", profile="fast").predict(image)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "fast" / "tile_r0c0.png")), expected)
