"""`pixelwise serve`: a trained model behind HTTP, for programs that are not batch jobs.

    POST /predict      the image's bytes (or a multipart form with field `file`) -> the palette PNG mask,
                       pixel for pixel what `pixelwise predict` writes; ?format=json (size, classes, pixel
                       counts) or ?format=overlay (the overlay PNG)
    GET  /health       the process answers
    GET  /ready        the model is loaded (503 until then)
    GET  /metadata     classes, palette, model, profile, engine
    GET  /metrics      Prometheus text: requests, errors, latency and batch-size histograms, queue depth

Under load, requests wait in a bounded queue. A batcher thread takes the oldest request and, for up to
`max_wait_ms`, any others of the same image size that arrive, up to `batch_size`, and runs them through
the engine in one call. The server admits at most `queue` requests beyond those in the model; the next
one answers 503 with Retry-After at once, before its body is read, so a backlog never grows without
bound; a request that waits past `timeout_s` gets 504, and one whose body has not arrived within
`upload_s` gets 408, which gives its place back. Every admitted request has its own worker thread,
which decodes and encodes PNGs beside the model.

On the CPU the model runs one image at a time over every core (`batch_size` 1): there a batch costs as
much per image as one image, and every batch size OpenVINO meets compiles a graph of its own that stays
in memory; one call over every core also answers a lone client in the model's own latency, where
`predict`'s side-by-side streams would give it one core. On a GPU, where a batch is cheaper per image,
requests are micro-batched, 8 at most. `benchmarks/serve_load.py --batch-size N` compares the two;
its runs are in docs/deploy.md.
"""
from __future__ import annotations

import asyncio
import hmac
import io
import queue
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path

import numpy as np
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from pixelwise.data.io import FAST_PNG, label_image, overlay as blend_overlay, read_image
from pixelwise.errors import DataError, PixelwiseError
from pixelwise.inference.tiling import class_argmax

LOOPBACK = ("127.0.0.1", "localhost", "::1")
DRAIN_MARGIN_S = 10.0  # on SIGTERM, beyond the upload and answer limits: decoding and encoding
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)  # seconds, Prometheus-style


@dataclass
class Limits:
    batch_size: int | None = None  # images a model call may take; None: 8 on a GPU, 1 on the CPU
    max_wait_ms: float = 5.0  # how long the oldest request waits for others to join its batch
    queue: int = 64  # requests waiting at most; beyond, 503
    timeout_s: float = 30.0  # a request not answered by then gets 504
    upload_s: float = 30.0  # a body not received by then gets 408: a slow uploader gives its place back
    max_body_mb: float = 50.0  # a larger body gets 413


@dataclass(eq=False)  # jobs are told apart by identity, never by their pixels
class Job:
    rgb: np.ndarray
    done: threading.Event = field(default_factory=threading.Event)
    labels: np.ndarray | None = None
    error: Exception | None = None
    abandoned: bool = False  # timed out: no one reads the result


class Metrics:
    """Counters and histograms in Prometheus' text format; one lock, updated from any thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: dict[str, int] = {}
        self.latency = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.batches: dict[int, int] = {}

    def request(self, code: int, seconds: float) -> None:
        with self.lock:
            self.requests[str(code)] = self.requests.get(str(code), 0) + 1
            self.latency[next((i for i, b in enumerate(LATENCY_BUCKETS) if seconds <= b), len(LATENCY_BUCKETS))] += 1
            self.latency_sum += seconds

    def batch(self, size: int) -> None:
        with self.lock:
            self.batches[size] = self.batches.get(size, 0) + 1

    def text(self, queue_depth: int) -> str:
        with self.lock:
            lines = ["# TYPE pixelwise_requests_total counter"]
            lines += [f'pixelwise_requests_total{{code="{c}"}} {n}' for c, n in sorted(self.requests.items())]
            errors = sum(n for c, n in self.requests.items() if not c.startswith("2"))
            lines += ["# TYPE pixelwise_errors_total counter", f"pixelwise_errors_total {errors}",
                      "# TYPE pixelwise_request_seconds histogram"]
            cumulative = 0
            for bound, count in zip((*LATENCY_BUCKETS, "+Inf"), self.latency):
                cumulative += count
                lines.append(f'pixelwise_request_seconds_bucket{{le="{bound}"}} {cumulative}')
            lines += [f"pixelwise_request_seconds_sum {self.latency_sum:.6f}",
                      f"pixelwise_request_seconds_count {cumulative}", "# TYPE pixelwise_batch_size histogram"]
            cumulative = 0
            for size in sorted(self.batches):
                cumulative += self.batches[size]
                lines.append(f'pixelwise_batch_size_bucket{{le="{size}"}} {cumulative}')
            lines += [f'pixelwise_batch_size_bucket{{le="+Inf"}} {cumulative}',
                      f"pixelwise_batch_size_count {cumulative}",
                      "# TYPE pixelwise_queue_depth gauge", f"pixelwise_queue_depth {queue_depth}"]
        return "\n".join(lines) + "\n"


class Batcher:
    """The bounded queue and the threads that empty it into the engine, a batch of equal-size images at a
    time. `submit` refuses at once when the queue is full."""

    def __init__(self, predictor, limits: Limits, metrics: Metrics):
        self.predictor, self.limits, self.metrics = predictor, limits, metrics
        self.jobs: queue.Queue[Job] = queue.Queue(maxsize=limits.queue)
        self.held: list[Job] = []  # taken from the queue, of another size than the batch being filled
        self.lock = threading.Lock()
        streams = getattr(predictor.engine, "streams", 1)
        self.threads = [threading.Thread(target=self._run, daemon=True, name=f"pixelwise-serve-{i}")
                        for i in range(streams)]
        for thread in self.threads:
            thread.start()

    def depth(self) -> int:
        return self.jobs.qsize() + len(self.held)

    def submit(self, job: Job) -> bool:
        try:
            self.jobs.put_nowait(job)
            return True
        except queue.Full:
            return False

    def _first(self) -> Job:
        """The oldest job: one held back from an earlier batch, else the next in the queue (waiting for it)."""
        with self.lock:
            if self.held:
                return self.held.pop(0)
        return self.jobs.get()

    def _batch(self) -> list[Job]:
        first = self._first()
        shape = first.rgb.shape
        with self.lock:  # held jobs of this size join first; the others keep their place
            batch = [first] + [job for job in self.held if job.rgb.shape == shape][: self.limits.batch_size - 1]
            self.held = [job for job in self.held if job not in batch]
        deadline = time.perf_counter() + self.limits.max_wait_ms / 1000
        while len(batch) < self.limits.batch_size:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            try:
                job = self.jobs.get(timeout=left)
            except queue.Empty:
                break
            if job.rgb.shape == shape:
                batch.append(job)
            else:
                with self.lock:
                    self.held.append(job)  # first in line for a later batch
        return batch

    def _run(self) -> None:
        while True:
            batch = [job for job in self._batch() if not job.abandoned]
            if not batch:
                continue
            self.metrics.batch(len(batch))
            try:
                logits = self.predictor.batch_logits([job.rgb for job in batch])
                for job, one in zip(batch, logits):
                    job.labels = class_argmax(one)
            except Exception as err:  # the model failed on this batch: its requests say so, the server goes on
                for job in batch:
                    job.error = err
            for job in batch:
                job.done.set()


def busy() -> Response:
    return PlainTextResponse("busy: the request queue is full; retry shortly\n", status_code=503,
                             headers={"Retry-After": "1"})


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=FAST_PNG)
    return buffer.getvalue()


class Service:
    """What the routes share: the predictor, its batcher, the limits, the token and the metrics."""

    def __init__(self, predictor, limits: Limits, token: str | None, description: dict):
        self.predictor, self.limits, self.token, self.description = predictor, limits, token, description
        self.metrics = Metrics()
        self.batcher = Batcher(predictor, limits, self.metrics)
        # Room for a full queue plus a batch in the model for each batcher: no one waits unseen for a thread.
        self.capacity = limits.queue + len(self.batcher.threads) * limits.batch_size
        self.executor = ThreadPoolExecutor(self.capacity, thread_name_prefix="pixelwise-request")
        self.admitted = 0
        self.admission = threading.Lock()

    def admit(self) -> bool:
        """Take a place for one request, or refuse at once when every place is taken."""
        with self.admission:
            if self.admitted >= self.capacity:
                return False
            self.admitted += 1
            return True

    def leave(self) -> None:
        with self.admission:
            self.admitted -= 1

    def authorised(self, request: Request) -> bool:
        if self.token is None:
            return True
        given = request.headers.get("authorization", "")
        given = given[len("Bearer "):] if given.startswith("Bearer ") else request.headers.get("x-token", "")
        return hmac.compare_digest(given.encode(), self.token.encode())  # constant time

    def predict(self, body: bytes, name: str, kind: str) -> Response:
        """Decode, queue, wait, encode: run in a worker thread."""
        try:
            rgb = read_image(body, name)
        except DataError as err:
            return PlainTextResponse(f"cannot read the image: {err}\n", status_code=415)
        job = Job(rgb)
        if not self.batcher.submit(job):
            return busy()
        if not job.done.wait(self.limits.timeout_s):
            job.abandoned = True
            return PlainTextResponse(f"no answer within {self.limits.timeout_s:g} s\n", status_code=504)
        if job.error is not None:
            return PlainTextResponse(f"the model failed on this image: {job.error}\n", status_code=500)
        labels, palette = job.labels, self.predictor.palette
        if kind == "json":
            counts = np.bincount(labels.ravel(), minlength=len(self.predictor.class_names))
            return JSONResponse({"width": int(labels.shape[1]), "height": int(labels.shape[0]),
                                 "classes": self.predictor.class_names,
                                 "pixels": {n: int(c) for n, c in zip(self.predictor.class_names, counts)}})
        if kind == "overlay":
            return Response(encode_png(Image.fromarray(blend_overlay(rgb, labels, palette))), media_type="image/png")
        return Response(encode_png(label_image(labels, palette)), media_type="image/png")


async def read_body(request: Request, limit: int, seconds: float) -> bytes | Response:
    """The body, or a 413 as soon as it passes `limit` bytes (never read whole first), or a 408 when it has
    not all arrived within `seconds`: an admitted request holds a place, and a client that trickles its
    body must not hold it for ever."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return PlainTextResponse(f"body over the {limit // 2**20} MB limit\n", status_code=413)
    chunks, size = [], 0

    async def receive() -> Response | None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return PlainTextResponse(f"body over the {limit // 2**20} MB limit\n", status_code=413)
            chunks.append(chunk)
        return None

    try:
        refused = await asyncio.wait_for(receive(), seconds)
    except asyncio.TimeoutError:
        return PlainTextResponse(f"the body did not arrive within {seconds:g} s ({size:,} bytes came)\n",
                                 status_code=408, headers={"Connection": "close"})
    return refused or b"".join(chunks)


def image_from(content_type: str, body: bytes) -> tuple[bytes, str] | Response:
    """The image's bytes from a raw body or from a multipart form's `file` field (parsed by the standard
    library's MIME parser: no form-parsing dependency for one field)."""
    if not content_type.startswith("multipart/form-data"):
        return body, "request body"
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    for part in message.iter_parts() if message.is_multipart() else ():
        if part.get_param("name", header="content-disposition") == "file":
            return part.get_payload(decode=True) or b"", part.get_filename() or "upload"
    return PlainTextResponse("multipart body without a `file` field\n", status_code=400)


def create_app(predictor, limits: Limits = Limits(), token: str | None = None, description: dict | None = None
               ) -> Starlette:
    if limits.batch_size is None:
        limits = replace(limits, batch_size=8 if getattr(predictor.engine, "gpu", False) else 1)
    service = Service(predictor, limits, token, description or {})

    async def predict(request: Request) -> Response:
        start = time.perf_counter()
        response = await _predict(request)
        service.metrics.request(response.status_code, time.perf_counter() - start)
        return response

    async def _predict(request: Request) -> Response:
        if not service.authorised(request):
            return PlainTextResponse("missing or wrong token\n", status_code=401)
        kind = request.query_params.get("format", "png")
        if kind not in ("png", "json", "overlay"):
            return PlainTextResponse(f"unknown format {kind!r}; use png, json or overlay\n", status_code=400)
        if not service.admit():
            return busy()
        handed_over = False  # once a worker thread has the request, its place is given back when it finishes
        try:
            try:
                body = await read_body(request, int(limits.max_body_mb * 2**20), limits.upload_s)
            except ClientDisconnect:
                return PlainTextResponse("client went away\n", status_code=400)
            if isinstance(body, Response):
                return body
            image = image_from(request.headers.get("content-type", ""), body)
            if isinstance(image, Response):
                return image
            if not image[0]:
                return PlainTextResponse("empty body: send the image's bytes\n", status_code=400)
            work = asyncio.get_running_loop().run_in_executor(service.executor, service.predict, image[0], image[1],
                                                              kind)
            work.add_done_callback(lambda _: service.leave())  # not when a cancelled coroutine stops waiting
            handed_over = True
            return await work
        finally:
            if not handed_over:
                service.leave()

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def metadata(request: Request) -> Response:
        if not service.authorised(request):
            return PlainTextResponse("missing or wrong token\n", status_code=401)
        return JSONResponse({"classes": predictor.class_names,
                             "palette": predictor.palette[:len(predictor.class_names)].tolist(),
                             **service.description})

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(service.metrics.text(service.batcher.depth()), media_type="text/plain; version=0.0.4")

    app = Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/health", health),
                            Route("/ready", health), Route("/metadata", metadata), Route("/metrics", metrics)])
    app.state.service = service
    return app


def check_binding(host: str, token: str | None, insecure: bool) -> None:
    """Anything but loopback needs a token, or an explicit --insecure."""
    if host not in LOOPBACK and token is None and not insecure:
        raise PixelwiseError(f"serving on {host} lets other machines use the model: give --token (clients send "
                             "'Authorization: Bearer TOKEN'), or --insecure to serve without one")


def serve(checkpoint: str | Path, host: str = "127.0.0.1", port: int = 8000, profile: str = "accurate",
          engine: str = "auto", token: str | None = None, insecure: bool = False, limits: Limits = Limits(),
          log=print) -> None:
    """Load the model, print the URL, and serve until SIGTERM or Ctrl+C, which finish the requests in flight."""
    import uvicorn

    from pixelwise.inference.predict import predictor_from

    check_binding(host, token, insecure)
    predictor = predictor_from(checkpoint, engine=engine, profile=profile)  # one stream over every core
    description = {"model": str(checkpoint), "profile": profile, "engine": predictor.engine.name}
    app = create_app(predictor, limits, token, description)
    log(f"serving {checkpoint} ({description['engine']}, {profile}) on http://{host}:{port}  "
        f"(POST /predict with an image; GET /metadata, /metrics)")
    # uvicorn drains on SIGTERM, then raises it again for the handler it replaced: this one ends with status 0
    signal.signal(signal.SIGTERM, lambda *_: None)
    # a request in flight may still be uploading, then waits up to timeout_s for the model, then is encoded
    drain_s = limits.upload_s + limits.timeout_s + DRAIN_MARGIN_S
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                  timeout_graceful_shutdown=drain_s)).run()
    log("stopped: every request in flight was answered")

