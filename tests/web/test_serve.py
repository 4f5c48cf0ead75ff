"""`pixelwise serve`: predict's masks over HTTP, a bounded queue, the token rule, bad bodies, draining."""
import io
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from starlette.testclient import TestClient

from pixelwise.data.io import default_palette, read_mask
from pixelwise.errors import PixelwiseError
from pixelwise.inference.predict import Predictor, predictor_from
from pixelwise.web.serve import Limits, check_binding, create_app

FIXTURE = Path(__file__).parents[1] / "fixtures" / "checkpoint_2026-12-03.pt"  # fcn_vanilla on the nuclei sample


@pytest.fixture(scope="module")
def predictor():
    return predictor_from(FIXTURE, engine="torch", precision="fp32")


def png_bytes(path) -> bytes:
    return Path(path).read_bytes()


def test_the_mask_json_and_overlay_are_what_predict_writes(predictor, nuclei_root, tmp_path):
    image = nuclei_root / "images" / "tile_r0c0.png"
    predictor.predict_to_files(image, tmp_path)
    client = TestClient(create_app(predictor, Limits(max_wait_ms=1)))
    raw = client.post("/predict", content=png_bytes(image))
    form = client.post("/predict", files={"file": ("tile.png", png_bytes(image), "image/png")})
    expected = read_mask(tmp_path / "tile_r0c0.png")
    for response in (raw, form):
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        served = Image.open(io.BytesIO(response.content))
        assert served.mode == "P" and served.getpalette()[:6] == predictor.palette[:2].reshape(-1).tolist()
        np.testing.assert_array_equal(np.asarray(served), expected)
    counts = client.post("/predict?format=json", content=png_bytes(image)).json()
    assert counts["width"] == expected.shape[1] and counts["classes"] == ["background", "nucleus"]
    assert counts["pixels"] == {"background": int((expected == 0).sum()), "nucleus": int((expected == 1).sum())}
    overlay = client.post("/predict?format=overlay", content=png_bytes(image))
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(overlay.content))),
                                  np.asarray(Image.open(tmp_path / "tile_r0c0_overlay.png")))
    metadata = client.get("/metadata").json()
    assert metadata["classes"] == ["background", "nucleus"] and len(metadata["palette"]) == 2
    metrics = client.get("/metrics").text
    assert 'pixelwise_requests_total{code="200"} 4' in metrics and "pixelwise_queue_depth 0" in metrics


def test_bad_bodies_get_a_4xx_naming_the_reason_and_the_next_good_request_is_answered(predictor, nuclei_root):
    client = TestClient(create_app(predictor, Limits(max_wait_ms=1, max_body_mb=0.5)))
    image = png_bytes(nuclei_root / "images" / "tile_r0c0.png")
    truncated = client.post("/predict", content=image[: len(image) // 2])
    assert truncated.status_code == 415 and "cannot read the image" in truncated.text
    assert client.post("/predict", content=b"").status_code == 400
    assert client.post("/predict", content=b"GIF89a not really").status_code == 415
    huge = client.post("/predict", content=b"\0" * (2**20))
    assert huge.status_code == 413 and "0 MB limit" in huge.text
    assert client.post("/predict", files={"other": ("x", b"y")}).status_code == 400
    assert client.post("/predict?format=tiff", content=image).status_code == 400
    assert client.post("/predict", content=image).status_code == 200
    assert 'pixelwise_requests_total{code="415"} 2' in client.get("/metrics").text


class GatedEngine:
    """Logits of two classes that wait for `gate`: requests pile up behind the first."""
    streams = 1

    def __init__(self):
        self.gate, self.inside = threading.Event(), threading.Event()

    def logits(self, images):
        self.inside.set()
        self.gate.wait(30)
        return torch.zeros(images.shape[0], 2, *images.shape[-2:])


def test_a_full_queue_answers_503_with_retry_after_at_once(nuclei_root):
    engine = GatedEngine()
    predictor = Predictor(engine, ["a", "b"], default_palette(2), 255)
    client = TestClient(create_app(predictor, Limits(batch_size=1, max_wait_ms=0, queue=1)))
    image = png_bytes(nuclei_root / "images" / "tile_r0c0.png")
    answers = []

    def send():
        answers.append(client.post("/predict", content=image).status_code)

    first = threading.Thread(target=send)
    first.start()
    assert engine.inside.wait(10)  # the first is in the model; the next one waits in the queue of 1
    second = threading.Thread(target=send)
    second.start()
    deadline = time.time() + 10
    while client.app.state.service.batcher.depth() < 1 and time.time() < deadline:
        time.sleep(0.01)
    refused = client.post("/predict", content=image)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    engine.gate.set()
    first.join(10)
    second.join(10)
    assert sorted(answers) == [200, 200]


def test_many_more_clients_than_places_get_exactly_the_surplus_as_503s(nuclei_root):
    """More places than asyncio's default pool has threads (at most 32): every request is admitted to a
    place or refused, never left waiting unseen for a thread. Places: the queue of 40 plus the 1 image
    in the model."""
    engine = GatedEngine()
    predictor = Predictor(engine, ["a", "b"], default_palette(2), 255)
    image = png_bytes(nuclei_root / "images" / "tile_r0c0.png")
    answers, lock = [], threading.Lock()
    # One event loop for every request, as under uvicorn (without `with`, each request gets a loop of its own)
    with TestClient(create_app(predictor, Limits(batch_size=1, max_wait_ms=0, queue=40))) as client:
        def send():
            status = client.post("/predict", content=image).status_code
            with lock:
                answers.append(status)

        threads = [threading.Thread(target=send) for _ in range(60)]
        for thread in threads:
            thread.start()
        deadline = time.time() + 20
        while answers.count(503) < 19 and time.time() < deadline:
            time.sleep(0.01)
        refused_while_held = sorted(answers)
        engine.gate.set()
        assert refused_while_held == [503] * 19  # the 41 admitted were held by the model
        for thread in threads:
            thread.join(20)
        assert sorted(answers) == [200] * 41 + [503] * 19
        assert client.app.state.service.admitted == 0  # every place is given back


def test_the_token_is_required_off_loopback_and_checked_on_every_request(predictor, nuclei_root):
    with pytest.raises(PixelwiseError, match="give --token"):
        check_binding("0.0.0.0", token=None, insecure=False)
    check_binding("0.0.0.0", token="t", insecure=False)
    check_binding("0.0.0.0", token=None, insecure=True)
    check_binding("127.0.0.1", token=None, insecure=False)
    client = TestClient(create_app(predictor, Limits(max_wait_ms=1), token="s3cret"))
    image = png_bytes(nuclei_root / "images" / "tile_r0c0.png")
    assert client.post("/predict", content=image).status_code == 401
    assert client.post("/predict", content=image, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/predict", content=image, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/metadata").status_code == 401 and client.get("/health").status_code == 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_finishes_the_request_in_flight_and_exits_0(nuclei_root, tmp_path):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "pixelwise", "serve", "--checkpoint", str(FIXTURE),
                               "--engine", "torch", "--port", str(port)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        big = io.BytesIO()  # large enough that the model is still busy when SIGTERM arrives
        Image.open(nuclei_root / "images" / "tile_r0c0.png").resize((512, 512)).save(big, format="PNG")
        answer = {}

        def send():
            request = urllib.request.Request(f"http://127.0.0.1:{port}/predict?format=json", data=big.getvalue())
            with urllib.request.urlopen(request, timeout=60) as response:
                answer["status"], answer["body"] = response.status, response.read()

        client = threading.Thread(target=send)
        client.start()
        time.sleep(0.5)
        server.send_signal(signal.SIGTERM)
        client.join(60)
        assert answer["status"] == 200 and b'"width":512' in answer["body"]
        assert server.wait(60) == 0
    finally:
        if server.poll() is None:
            server.kill()
    assert "serving" in server.stdout.read()


def test_a_slow_upload_gets_408_and_gives_its_place_back(predictor, nuclei_root):
    """Two clients that trickle their bodies hold both places (a queue of 1 and the model's one): a third
    is refused with 503; once the upload limit passes they get 408, and the next request is answered."""
    import uvicorn

    port = free_port()
    app = create_app(predictor, Limits(batch_size=1, max_wait_ms=0, queue=1, upload_s=1.0))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    image = png_bytes(nuclei_root / "images" / "tile_r0c0.png")

    def post() -> int:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/predict?format=json", data=image)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as err:
            return err.code

    try:
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        for s in slow:  # headers and a tenth of the body, then nothing
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(image)
                      + image[: len(image) // 10])
        deadline = time.time() + 10  # a loaded machine may take a while to admit both
        while app.state.service.admitted < 2 and time.time() < deadline:
            time.sleep(0.05)
        assert app.state.service.admitted == 2
        assert post() == 503
        for s in slow:
            s.settimeout(10)
            assert s.recv(100).split(b" ")[1] == b"408"
            s.close()
        assert app.state.service.admitted == 0
        assert post() == 200
    finally:
        server.should_exit = True
        thread.join(10)


class RecordingEngine:
    streams = 1

    def __init__(self):
        self.calls = []

    def logits(self, images):
        self.calls.append(tuple(images.shape))
        return torch.zeros(images.shape[0], 2, *images.shape[-2:])


def test_equal_size_requests_share_a_call_and_another_size_waits_for_the_next():
    from pixelwise.web.serve import Batcher, Job, Metrics

    engine = RecordingEngine()
    batcher = Batcher(Predictor(engine, ["a", "b"], default_palette(2), 255),
                      Limits(batch_size=4, max_wait_ms=300, queue=8), Metrics())
    first = Job(np.zeros((8, 8, 3), np.uint8))
    batcher.submit(first)
    assert first.done.wait(10)  # alone in the queue: it goes after max_wait_ms on its own
    jobs = [Job(np.zeros(shape, np.uint8)) for shape in ((8, 8, 3), (4, 6, 3), (8, 8, 3), (8, 8, 3))]
    for job in jobs:
        batcher.submit(job)
    assert all(job.done.wait(10) for job in jobs)
    assert engine.calls == [(1, 3, 8, 8), (3, 3, 8, 8), (1, 3, 4, 6)]
    assert [job.labels.shape for job in jobs] == [(8, 8), (4, 6), (8, 8), (8, 8)]


@pytest.mark.parametrize("gpu, batch", [(False, 1), (True, 8)])
def test_the_default_batch_is_one_image_on_the_cpu_and_eight_on_a_gpu(gpu, batch):
    engine = RecordingEngine()
    engine.gpu = gpu
    app = create_app(Predictor(engine, ["a", "b"], default_palette(2), 255))
    assert app.state.service.limits.batch_size == batch
    assert app.state.service.capacity == 64 + batch  # the queue, and one batch in the model

