"""The annotation server through its HTTP API: layouts, saving without losing work, refusals, security,
the model's pre-fill and order, and retraining as a child process."""
import hashlib
import http.client
import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from pixelwise.data.formats import load_spec
from pixelwise.data.io import default_palette, read_image, read_mask
from pixelwise.errors import DataError
from pixelwise.inference.predict import load
from pixelwise.inference.uncertainty import DEFAULT_MEASURE, pixel_margin, rank_by_uncertainty
from pixelwise.web.retrain import train_command
from pixelwise.web.server import create_app, serving
from pixelwise.web.store import superpixel_labels
from webdata import CLASSES, H, ORIGIN, W, client_for, png_bytes, some_labels, tiny_checkpoint, write_image, write_mask


def labels_of(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    w, h = int(response.headers["x-width"]), int(response.headers["x-height"])
    return np.frombuffer(response.content, np.uint8).reshape(h, w)


def put(client, item: int, labels_png: bytes, version: str):
    return client.put(f"/api/items/{item}/labels", content=labels_png, headers={"if-match": version})


def tree(root: Path) -> dict:
    """Every file under root with its bytes' digest: to show a refused request touched nothing."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------------------------
# Layouts and saving

def test_an_images_folder_without_masks_is_listed_and_opens_empty(tmp_path):
    root = tmp_path / "new"
    for stem in ("b", "a"):
        write_image(root / "images" / f"{stem}.png")
    (root / "classes.txt").write_text("bg\nfg\n")
    client = client_for(create_app(root))
    listing = client.get("/api/items").json()
    assert [it["name"] for it in listing["items"]] == ["images/a.png", "images/b.png"]  # name order
    assert (listing["labelled"], listing["total"], listing["order"]) == (0, 2, [0, 1])
    assert [c["name"] for c in listing["classes"]] == ["bg", "fg"]
    response = client.get("/api/items/0/labels")
    assert response.headers["x-source"] == "empty" and response.headers["x-mask-version"] == "absent"
    assert (labels_of(response) == 255).all()
    labels = some_labels(classes=2)
    assert put(client, 0, png_bytes(labels), "absent").status_code == 200
    assert (read_mask(root / "masks" / "a.png") == labels).all()


def test_a_plain_folder_of_images_with_classes_txt_gets_folder_layout_masks(tmp_path):
    root = tmp_path / "plain"
    write_image(root / "x.png")
    (root / "classes.txt").write_text("bg\nfg\n")
    client = client_for(create_app(root))
    assert client.get("/api/items").json()["items"][0]["name"] == "x.png"
    labels = some_labels(classes=2)
    assert put(client, 0, png_bytes(labels), "absent").status_code == 200
    assert (read_mask(root / "masks" / "x.png") == labels).all()
    assert client.get("/api/items").json()["labelled"] == 1


def test_a_folder_that_is_no_dataset_is_refused_with_what_is_expected(tmp_path):
    write_image(tmp_path / "x.png")
    with pytest.raises(DataError, match="or a folder of images with a classes.txt"):
        create_app(tmp_path)


def test_save_writes_a_palette_png_in_the_dataset_palette_and_returns_its_version(folder_root):
    client = client_for(create_app(folder_root))
    labels = some_labels(seed=3)
    response = put(client, 0, png_bytes(labels), "absent")
    assert response.status_code == 200, response.text
    path = folder_root / "masks" / "a.png"
    assert response.json() == {"version": hashlib.sha256(path.read_bytes()).hexdigest(), "labelled": 2, "total": 3}
    with Image.open(path) as img:
        assert img.mode == "P"
        assert img.getpalette()[:9] == default_palette(3)[:3].reshape(-1).tolist()
        assert (np.asarray(img) == labels).all()
    again = client.get("/api/items/0/labels")
    assert (labels_of(again) == labels).all() and again.headers["x-source"] == "saved"
    assert again.headers["x-mask-version"] == response.json()["version"]


def test_every_replaced_mask_is_kept_and_no_backup_is_overwritten(folder_root):
    client = client_for(create_app(folder_root))
    path, versions = folder_root / "masks" / "c.png", []
    originals = [path.read_bytes()]
    version = client.get("/api/items/2/labels").headers["x-mask-version"]
    for seed in (1, 2):
        response = put(client, 2, png_bytes(some_labels(seed=seed)), version)
        assert response.status_code == 200
        version = response.json()["version"]
        originals.append(path.read_bytes())
        versions.append(version)
    backups = folder_root / ".pixelwise-backup" / "masks"
    assert sorted(p.name for p in backups.iterdir()) == ["c.1.png", "c.png"]
    assert (backups / "c.png").read_bytes() == originals[0]  # the dataset's own mask
    assert (backups / "c.1.png").read_bytes() == originals[1]  # the first save, replaced by the second


def test_a_save_from_a_stale_tab_is_refused_with_409_and_changes_nothing(folder_root):
    client = client_for(create_app(folder_root))
    stale = client.get("/api/items/2/labels").headers["x-mask-version"]
    first = put(client, 2, png_bytes(some_labels(seed=5)), stale)
    assert first.status_code == 200
    before = tree(folder_root)
    second = put(client, 2, png_bytes(some_labels(seed=6)), stale)
    assert second.status_code == 409
    assert second.json()["version"] == first.json()["version"]
    assert "saved elsewhere" in second.json()["error"]
    assert tree(folder_root) == before
    # a new mask too: a second tab cannot overwrite the mask a first tab has just created
    assert put(client, 0, png_bytes(some_labels()), "absent").status_code == 200
    assert put(client, 0, png_bytes(some_labels(seed=1)), "absent").status_code == 409


def test_a_save_must_name_the_version_it_replaces(folder_root):
    client = client_for(create_app(folder_root))
    response = client.put("/api/items/0/labels", content=png_bytes(some_labels()))
    assert response.status_code == 428 and "If-Match" in response.json()["error"]


@pytest.mark.parametrize("body, status, message", [
    (b"GIF89a not a png", 415, "not a PNG"),
    (png_bytes(np.zeros((H, W + 1))), 422, f"the mask is {W + 1}x{H} but its image is {W}x{H}"),
    (png_bytes(np.full((H, W), 3)), 422, "label 3 (3072 pixels) but the dataset has 3 classes (0-2, 255 = ignore)"),
    (png_bytes(np.zeros((H, W)), mode="RGB"), 422, "mode RGB"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * (2 * W * H + (1 << 20)), 413, "larger than"),
    (b"\x89PNG\r\n\x1a\n garbage", 422, "cannot decode"),
], ids=["not-png", "wrong-size", "unknown-label", "rgb", "oversized", "corrupt"])
def test_bad_uploads_are_refused_with_a_message_and_write_nothing(folder_root, body, status, message):
    client = client_for(create_app(folder_root))
    before = tree(folder_root)
    response = put(client, 0, body, "absent")
    assert response.status_code == status
    assert message in response.json()["error"]
    assert tree(folder_root) == before


def test_camvid_masks_go_to_split_annot_with_camvids_own_ignore_value(tmp_path):
    root = tmp_path / "camvid"
    write_image(root / "train" / "f1.png")
    write_image(root / "train" / "f2.png", seed=1)
    saved = some_labels(classes=11, ignore=11)
    write_mask(root / "trainannot" / "f1.png", saved)
    client = client_for(create_app(root))
    listing = client.get("/api/items").json()
    assert listing["dataset"]["format"] == "camvid" and len(listing["classes"]) == 11
    shown = labels_of(client.get("/api/items/0/labels"))
    assert (shown == np.where(saved == 11, 255, saved)).all()  # the client always sees ignore as 255
    drawn = some_labels(seed=4, classes=11)
    assert put(client, 1, png_bytes(drawn), "absent").status_code == 200
    assert (read_mask(root / "trainannot" / "f2.png") == np.where(drawn == 255, 11, drawn)).all()
    assert load_spec(root).ignore_index == 11


def test_voc_masks_go_to_segmentation_class(tmp_path):
    root = tmp_path / "voc"
    write_image(root / "JPEGImages" / "2007_000001.png")
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000001\n")
    client = client_for(create_app(root))
    labels = some_labels(classes=21)
    assert put(client, 0, png_bytes(labels), "absent").status_code == 200
    with Image.open(root / "SegmentationClass" / "2007_000001.png") as img:
        assert img.mode == "P" and (np.asarray(img) == labels).all()


def test_a_bmp_mask_is_replaced_by_a_png_and_kept_in_the_backup(folder_root):
    old = some_labels(seed=8)
    Image.fromarray(old).save(folder_root / "masks" / "a.bmp")
    client = client_for(create_app(folder_root))
    response = client.get("/api/items/0/labels")
    assert (labels_of(response) == old).all()
    new = some_labels(seed=9)
    assert put(client, 0, png_bytes(new), response.headers["x-mask-version"]).status_code == 200
    assert not (folder_root / "masks" / "a.bmp").exists()
    assert (read_mask(folder_root / "masks" / "a.png") == new).all()
    assert (read_mask(folder_root / ".pixelwise-backup" / "masks" / "a.bmp") == old).all()


def test_superpixels_are_the_servers_slic_of_the_image(folder_root):
    client = client_for(create_app(folder_root))
    response = client.get("/api/items/1/superpixels")
    ids = np.frombuffer(response.content, "<u2").reshape(H, W)
    assert response.headers["content-encoding"] == "gzip"  # httpx inflated it, as the browser does
    expected = superpixel_labels(read_image(folder_root / "images" / "b.png"))
    assert (ids == expected).all() and ids.max() > 0


# ---------------------------------------------------------------------------------------------------------------
# Security

def test_every_request_needs_the_token(folder_root):
    app = create_app(folder_root)
    anonymous = client_for(app, token=False)
    for path in ("/", "/static/app.js", "/static/app.css", "/api/items", "/api/status", "/api/items/0/labels",
                 "/api/items/0/image", "/favicon.ico"):
        response = anonymous.get(path)
        assert response.status_code == 403 and "token" in response.text, path
        assert anonymous.get(path, headers={"x-pixelwise-token": "wrong"}).status_code == 403
    assert put(anonymous, 0, png_bytes(some_labels()), "absent").status_code == 403
    assert not (folder_root / "masks" / "a.png").exists()


def test_the_token_in_the_url_sets_a_cookie_the_page_then_uses(folder_root):
    app = create_app(folder_root)
    browser = client_for(app, token=False)
    first = browser.get(f"/?token={app.state.token}")
    assert first.status_code == 200 and "pixelwise annotate" in first.text
    assert "httponly" in first.headers["set-cookie"].lower() and "samesite=strict" in first.headers["set-cookie"].lower()
    assert browser.get("/static/app.js").status_code == 200  # the cookie alone now
    assert browser.get("/api/items").status_code == 200
    assert client_for(app, token=False).get("/api/items").status_code == 403  # a fresh client has no cookie


def test_host_and_origin_are_checked_against_dns_rebinding_and_cross_site_requests(folder_root):
    app = create_app(folder_root)
    app.state.port = 8765
    client = client_for(app)
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765"):
        assert client.get("/api/items", headers={"host": host}).status_code == 200, host
    for host in ("evil.example:8765", "127.0.0.1:9999", "127.0.0.1", "127.0.0.1.evil.example:8765", ""):
        response = client.get("/api/items", headers={"host": host})
        assert response.status_code == 403 and "Host" in response.text, host
    assert client.get("/api/items", headers={"origin": ORIGIN}).status_code == 200
    for origin in ("http://evil.example", "null", "http://localhost:8765", "https://127.0.0.1:8765"):
        response = put(client.__class__(app, base_url=ORIGIN, headers={**client.headers, "origin": origin}),
                       0, png_bytes(some_labels()), "absent")
        assert response.status_code == 403 and "cross-origin" in response.text, origin
    assert not (folder_root / "masks" / "a.png").exists()


def test_responses_carry_a_strict_content_security_policy(folder_root):
    response = client_for(create_app(folder_root)).get("/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


TRAVERSALS = [
    "/static/../store.py", "/static/..%2fstore.py", "/static/%2e%2e%2fstore.py", "/static/%252e%252e%252fstore.py",
    "/static/..%252fstore.py", "/static//etc/passwd", "/static/%2fetc%2fpasswd", "/../../../etc/passwd",
    "/api/items/../../../../etc/passwd", "/api/items/..%2f..%2f..%2fetc%2fpasswd/image",
    "/api/items/%2e%2e/labels", "/api/items/-1/image", "/api/items/3/image", "/api/items/0x1/image",
    "/api/items/1e0/image", "/api/items//etc/passwd/image", "/api/items/0/../../../etc/passwd",
    "/api/items/images%2fa.png/image", "/api/items/%2Fetc%2Fpasswd/labels",
]


def test_path_traversal_attempts_get_a_4xx_over_real_http_and_touch_nothing(folder_root):
    """Through uvicorn with raw request lines (httpx would normalise the dot segments away)."""
    before = tree(folder_root.parent)
    with serving(folder_root, log=lambda _: None) as (app, url):
        parts = urlsplit(url)
        headers = {"x-pixelwise-token": app.state.token}
        for method in ("GET", "PUT"):
            for path in TRAVERSALS:
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
                body = png_bytes(some_labels()) if method == "PUT" else None
                conn.request(method, path, body=body, headers={**headers, "if-match": "absent"})
                response = conn.getresponse()
                text = response.read()
                assert 400 <= response.status < 500, (method, path, response.status)
                assert b"root:" not in text and b"import " not in text
                conn.close()
    assert tree(folder_root.parent) == before


def test_symlinks_leading_out_of_the_dataset_are_neither_served_nor_written(tmp_path):
    outside = tmp_path / "outside"
    write_image(outside / "secret.png", seed=7)
    write_mask(outside / "secret_mask.png", some_labels())
    root = tmp_path / "data"
    write_image(root / "images" / "a.png")
    write_image(root / "images" / "b.png", seed=1)
    (root / "images" / "evil.png").symlink_to(outside / "secret.png")
    (root / "masks").mkdir()
    (root / "masks" / "b.png").symlink_to(outside / "secret_mask.png")
    (root / "classes.txt").write_text("\n".join(CLASSES))
    logged = []
    client = client_for(create_app(root, log=logged.append))
    assert [it["name"] for it in client.get("/api/items").json()["items"]] == ["images/a.png", "images/b.png"]
    assert "skipped 1 images whose files lie outside" in logged[0]
    before = tree(outside)
    assert client.get("/api/items/1/labels").status_code == 403  # b's mask is a link out
    assert put(client, 1, png_bytes(some_labels()), "absent").status_code == 403
    # a masks/ folder that is a link out: nothing may be written through it
    (root / "masks" / "b.png").unlink()
    (root / "masks").rmdir()
    (root / "masks").symlink_to(outside, target_is_directory=True)
    assert put(client, 0, png_bytes(some_labels()), "absent").status_code == 403
    assert tree(outside) == before


# ---------------------------------------------------------------------------------------------------------------
# The model alongside

def test_an_unlabelled_image_opens_with_the_models_prediction_and_its_unsure_pixels(folder_root, checkpoint):
    app = create_app(folder_root, checkpoint)
    with client_for(app) as client:
        response = client.get("/api/items/0/labels")
        assert response.headers["x-source"] == "model" and response.headers["x-mask-version"] == "absent"
        predictor = load(checkpoint)
        image = folder_root / "images" / "a.png"
        assert (labels_of(response) == predictor.predict(image)).all()
        unsure = np.frombuffer(client.get("/api/items/0/unsure").content, np.uint8).reshape(H, W)
        assert (unsure == (pixel_margin(predictor.predict_proba(image)) < 0.2)).all()
        regions = client.get("/api/items/0").json()["regions"]
        for x0, y0, x1, y1, pixels in regions:
            assert unsure[y0:y1, x0:x1].sum() >= pixels >= 16
        assert [r[4] for r in regions] == sorted((r[4] for r in regions), reverse=True)
        # a labelled image opens with its mask, not the model's guess
        assert client.get("/api/items/2/labels").headers["x-source"] == "saved"
        assert client.get("/api/items/2").json()["regions"] is None


def test_next_follows_uncertainty_over_unlabelled_images_then_the_labelled(folder_root, checkpoint):
    for i in range(3, 6):
        write_image(folder_root / "images" / f"d{i}.png", seed=i * 20)
    app = create_app(folder_root, checkpoint)
    with client_for(app) as client:  # the app ranks in the background from startup
        assert app.state.session.ranked.wait(30)
        listing = client.get("/api/items").json()
    names = {it["id"]: it["name"] for it in listing["items"]}
    predictor = load(checkpoint)
    unlabelled = [folder_root / n for i, n in names.items() if n != "images/c.png"]
    expected = [p.relative_to(folder_root).as_posix()
                for p, _ in rank_by_uncertainty(predictor.predict_proba, unlabelled, DEFAULT_MEASURE)]
    assert [names[i] for i in listing["order"]] == expected + ["images/c.png"]
    assert listing["order_note"] == "uncertainty" and listing["order_version"] == 1


def test_a_checkpoint_for_other_classes_is_refused(folder_root, tmp_path):
    other = tiny_checkpoint(tmp_path / "other.pt", classes=("background", "car"))
    with pytest.raises(DataError, match="2 classes in the checkpoint, 3 in the data"):
        create_app(folder_root, other)


# ---------------------------------------------------------------------------------------------------------------
# Retraining

def test_the_retrain_command_fine_tunes_the_checkpoints_own_architecture(tmp_path, checkpoint):
    from pixelwise.checkpoint import load_checkpoint

    cmd = train_command(tmp_path / "view", tmp_path / "run-001", 5, checkpoint, load_checkpoint(checkpoint)["config"])
    assert cmd == [sys.executable, "-m", "pixelwise", "train", "--data", str(tmp_path / "view"),
                   "--out", str(tmp_path / "run-001"), "--time-budget", "5", "--overwrite",
                   "--init-from", str(checkpoint), "--no-pretrained", "--model", "fcn32s", "--backbone", "segnet_basic",
                   "--upsample", "bilinear", "--infer-scale", "1.0", "--crop-size", "32x32", "--strategy", "full"]
    assert train_command(tmp_path / "v", tmp_path / "r", 2.5)[-3:] == ["--time-budget", "2.5", "--overwrite"]


def test_the_training_view_holds_only_the_labelled_images_in_the_datasets_layout(tmp_path):
    root = tmp_path / "camvid"
    for i in range(4):
        write_image(root / "train" / f"f{i}.png", seed=i)
    for i in (0, 2):
        write_mask(root / "trainannot" / f"f{i}.png", some_labels(seed=i, classes=11, ignore=11))
    app = create_app(root)
    view = tmp_path / "view"
    assert app.state.session.store.write_training_view(view) == 2
    spec = load_spec(view)
    assert spec.format == "camvid" and spec.ignore_index == 11
    assert [(img.name, mask.resolve()) for img, mask in spec.split("train")] == [
        ("f0.png", root / "trainannot" / "f0.png"), ("f2.png", root / "trainannot" / "f2.png")]


def fake_trainer(data, out, minutes, checkpoint, config):
    """Stands in for `pixelwise train`: writes its progress file after each epoch, prints a log whose text
    the app must not parse (its numbers disagree with the file on purpose) and leaves a best.pt."""
    script = (f"import json, pathlib, shutil\nout = pathlib.Path({str(out)!r}); out.mkdir(parents=True)\n"
              "print('training fcn32s/segnet_basic on 2 images', flush=True)\n"
              "for epoch, loss, miou in ((1, 0.9, 0.4), (2, 0.5, 0.61)):\n"
              "    (out / 'progress.json').write_text(json.dumps({'epoch': epoch, 'step': epoch, 'loss': loss,"
              " 'val_miou': miou, 'best_miou': miou, 'elapsed_min': 0.0}))\n"
              "    print(f'epoch   {epoch + 6}  loss 0.0100  val mIoU 0.9900 *  10.0 img/s  0.0 min', flush=True)\n"
              f"shutil.copy({str(checkpoint)!r}, out / 'best.pt')\n")
    return [sys.executable, "-c", script]


def test_retrain_reports_epochs_and_switches_the_prefill_to_the_new_best(folder_root, checkpoint):
    app = create_app(folder_root, checkpoint, log=lambda _: None)
    session = app.state.session
    session.retrainer.command = fake_trainer
    with client_for(app) as client:
        assert put(client, 0, png_bytes(some_labels()), "absent").status_code == 200
        started = client.post("/api/retrain", json={"minutes": 2})
        assert started.status_code == 202 and started.json()["run"] == "run-001"
        status = session.retrainer.wait(30)
        assert status["state"] == "finished", status
        assert (status["epoch"], status["loss"], status["val_miou"], status["best_miou"]) == (2, 0.5, 0.61, 0.61)
        best = folder_root / ".pixelwise" / "retrain" / "run-001" / "best.pt"
        assert session.assistant.checkpoint == best
        assert client.get("/api/status").json()["model"]["checkpoint"] == ".pixelwise/retrain/run-001/best.pt"
        assert "epoch   8" in (folder_root / ".pixelwise" / "retrain" / "run-001.log").read_text()  # the log, kept
        assert client.post("/api/retrain", json={"minutes": 2}).json()["run"] == "run-002"  # never overwrites
        session.retrainer.wait(30)


def test_only_one_retrain_runs_at_a_time_and_it_needs_two_masks(folder_root):
    app = create_app(folder_root, log=lambda _: None)
    retrainer = app.state.session.retrainer
    with client_for(app) as client:
        refused = client.post("/api/retrain", json={"minutes": 1})
        assert refused.status_code == 422 and "at least 2 saved masks" in refused.json()["error"]
        assert put(client, 0, png_bytes(some_labels()), "absent").status_code == 200
        retrainer.command = lambda *args: [sys.executable, "-c", "import time; time.sleep(60)"]
        assert client.post("/api/retrain", json={"minutes": 1}).status_code == 202
        second = client.post("/api/retrain", json={"minutes": 1})
        assert second.status_code == 409 and "already running" in second.json()["error"]
        assert client.post("/api/retrain/stop").status_code == 200
        assert retrainer.wait(10)["state"] == "stopped"
        assert client.post("/api/retrain", json={"minutes": "soon"}).status_code == 400


def test_a_real_retrain_trains_on_the_saved_masks_and_the_app_predicts_with_its_best(folder_root, checkpoint):
    """The command line against the real `pixelwise train`: a few seconds of the tiny model."""
    for i in range(3, 6):
        write_image(folder_root / "images" / f"d{i}.png", seed=i)
        write_mask(folder_root / "masks" / f"d{i}.png", some_labels(seed=i))
    write_image(folder_root / "images" / "e.png", seed=9)  # unlabelled: not in the training view
    app = create_app(folder_root, checkpoint, log=lambda _: None)
    with client_for(app) as client:
        assert client.post("/api/retrain", json={"minutes": 0.05}).status_code == 202
        status = app.state.session.retrainer.wait(120)
        assert status["state"] == "finished", status["lines"]
        assert status["epoch"] >= 1 and 0 <= status["best_miou"] <= 1
        best = folder_root / ".pixelwise" / "retrain" / "run-001" / "best.pt"
        assert app.state.session.assistant.checkpoint == best
        response = client.get(f"/api/items/{len(app.state.session.store.items) - 1}/labels")
        assert (labels_of(response) == load(best).predict(folder_root / "images" / "e.png")).all()
    view = load_spec(folder_root / ".pixelwise" / "retrain" / "data")
    assert sum(len(pairs) for pairs in view.splits.values()) == 4  # c and d3-d5: the labelled ones


# ---------------------------------------------------------------------------------------------------------------
# Running it

def test_run_app_listens_on_loopback_prints_the_url_with_its_token_and_opens_no_browser(folder_root, tmp_path):
    """In a fresh interpreter, which also shows the app never imports the trainer (it runs it as a process)."""
    marker = tmp_path / "browser-opened"
    env = {**os.environ, "BROWSER": f"{sys.executable} -c \"import pathlib; pathlib.Path(r'{marker}').touch()\" %s"}
    code = ("import sys; from pixelwise.web.server import run_app; "
            "print('trainer modules:', [m for m in sys.modules if m.startswith('pixelwise.training')]); "
            f"run_app({str(folder_root)!r}, port=0)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "trainer modules: []"
        lines = []
        while not (lines and lines[-1].startswith("open ")):
            lines.append(proc.stdout.readline().strip())
            assert lines[-1] or proc.poll() is None, lines
        url = urlsplit(lines[-1].removeprefix("open "))
        assert url.hostname == "127.0.0.1" and url.query.startswith("token=") and len(url.query) > 40
        assert "1 of 3 images labelled" in lines[0]
        for path, status in ((f"/?{url.query}", 200), ("/api/items", 403)):  # no token, no cookie: refused
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
            conn.request("GET", path)
            assert conn.getresponse().status == status
            conn.close()
        assert not marker.exists()
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_busy_port_falls_back_to_a_free_one(folder_root):
    from pixelwise.web.server import listen

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    said = []
    sock = listen("127.0.0.1", taken.getsockname()[1], said.append)
    assert sock.getsockname()[1] != taken.getsockname()[1] and "busy" in said[0]
    sock.close()
    taken.close()


def test_stopping_the_app_stops_its_retrain(folder_root):
    app = create_app(folder_root, log=lambda _: None)
    retrainer = app.state.session.retrainer
    retrainer.command = lambda *args: [sys.executable, "-c", "import time; time.sleep(60)"]
    with client_for(app) as client:
        assert put(client, 0, png_bytes(some_labels()), "absent").status_code == 200
        assert client.post("/api/retrain", json={"minutes": 1}).status_code == 202
    assert retrainer.wait(10)["state"] == "stopped"
