"""`pixelwise annotate`: a local web app to draw and correct segmentation masks, with the model alongside.

A Starlette app under uvicorn. The browser addresses images by their index in the server's own listing,
never by a path. Every request must carry the token printed at launch (in the URL the first time, then
a cookie or a header), a loopback Host (DNS rebinding) and no foreign Origin (cross-site requests):
another web page open in the same browser can neither read nor write masks.
"""
from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import secrets
import socket
import threading
import time
import webbrowser
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import parse_qs

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request, cookie_parser
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from pixelwise.errors import PixelwiseError
from pixelwise.web.assist import Assistant
from pixelwise.web.retrain import Retrainer
from pixelwise.web.store import IGNORE, NO_MASK, Conflict, Refused, Store

TOKEN_HEADER = "x-pixelwise-token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
STATIC_TYPES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
                "app.css": "text/css; charset=utf-8"}
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: "
                               "data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",  # the page URL holds the token
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


# ---------------------------------------------------------------------------------------------------------------
# The session: one dataset, maybe a model, the retrain, and the order in which images come.

class Session:
    """What one `pixelwise annotate` serves. `order` is the "next" order: name order, or with a model the
    unlabelled images in `data suggest`'s order, the most uncertain of each kind of scene first (then
    the labelled ones), once they have been ranked."""

    def __init__(self, store: Store, checkpoint: str | Path | None = None, log: Callable[[str], None] = print):
        self.store, self.log = store, log
        self.assistant = Assistant(checkpoint, store.class_names) if checkpoint else None
        self.retrainer = Retrainer(store, lambda: self.assistant.checkpoint if self.assistant else None,
                                   self.use_checkpoint)
        self.order = [it.id for it in store.items]
        self.order_note, self.order_version = "name", 0
        self.ranked = threading.Event()
        self._rank_generation = 0
        self._lock = threading.Lock()

    def use_checkpoint(self, checkpoint: Path) -> None:
        """Predict with `checkpoint` from now on (a retrain finished) and rank the images again."""
        if self.assistant is None:
            self.assistant = Assistant(checkpoint, self.store.class_names)
        else:
            self.assistant.switch(checkpoint)
        self.log(f"predicting with {checkpoint}")
        self.start_ranking()

    def start_ranking(self) -> None:
        """Rank the unlabelled images by the model's uncertainty in a background thread (a forward pass each)."""
        if self.assistant is None:
            self.ranked.set()
            return
        with self._lock:
            self._rank_generation += 1
            generation = self._rank_generation
            self.order_note = "ranking"
            self.ranked.clear()
        threading.Thread(target=self._rank, args=(generation,), daemon=True).start()

    def _rank(self, generation: int) -> None:
        unlabelled = [it for it in self.store.items if not self.store.labelled(it)]
        by_path = {it.image: it.id for it in unlabelled}
        try:
            ranked = [by_path[p] for p in self.assistant.rank([it.image for it in unlabelled])]
            note = "uncertainty"
        except Exception as err:  # an unreadable image must not leave "next" without an order
            self.log(f"cannot rank the images by uncertainty ({err}); keeping name order")
            ranked, note = [it.id for it in unlabelled], "name"
        rest = [it.id for it in self.store.items if it.id not in set(ranked)]
        with self._lock:
            if generation == self._rank_generation:  # a newer model's ranking supersedes this one
                self.order, self.order_note = ranked + rest, note
                self.order_version += 1
                self.ranked.set()

    def model_info(self) -> dict | None:
        if self.assistant is None:
            return None
        ckpt = self.assistant.checkpoint
        shown = ckpt.relative_to(self.store.root) if ckpt.is_relative_to(self.store.root) else ckpt
        return {"checkpoint": str(shown), "threshold": self.assistant.threshold}

    def status(self) -> dict:
        labelled, total = self.store.progress()
        return {"labelled": labelled, "total": total, "order_version": self.order_version,
                "order_note": self.order_note, "model": self.model_info(), "retrain": self.retrainer.status()}


# ---------------------------------------------------------------------------------------------------------------
# The guard: token, Host and Origin on every request, before any route sees it.

def split_host(host: str) -> tuple[str, str]:
    """'127.0.0.1:8765' -> ('127.0.0.1', '8765'); '[::1]:8765' -> ('[::1]', '8765')."""
    if host.startswith("["):
        name, _, rest = host.partition("]")
        return name + "]", rest[1:] if rest.startswith(":") else ""
    name, _, port = host.partition(":")
    return name, port


class Guard:
    """ASGI middleware: refuses a request without the launch token, with a Host that is not this server's
    own loopback name and port (DNS rebinding), or from another origin (CSRF); adds security headers."""

    def __init__(self, app, state):
        self.app, self.state = app, state  # state: the Starlette app's state (token, port, hosts)

    def refusal(self, scope) -> tuple[int, str] | None:
        headers = Headers(scope=scope)
        host = headers.get("host", "").lower()
        name, port = split_host(host)
        names = self.state.hosts
        if (names is not None and name not in names) or (self.state.port and port != str(self.state.port)):
            return 403, f"Host {host!r} refused: open the app at the address `pixelwise annotate` printed"
        origin = headers.get("origin")
        if origin is not None and origin != f"http://{host}":
            return 403, f"cross-origin request from {origin!r} refused"
        offered = [headers.get(TOKEN_HEADER), *parse_qs(scope.get("query_string", b"").decode("latin-1"))
                   .get("token", []), cookie_parser(headers.get("cookie", "")).get(cookie_name(self.state))]
        if not any(t and secrets.compare_digest(t.encode(), self.state.token.encode()) for t in offered):
            return 403, "missing or wrong token: open the URL `pixelwise annotate` printed (it ends in ?token=...)"
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        if scope["type"] != "http":  # no websockets here
            return await send({"type": "websocket.close", "code": 1008})
        refused = self.refusal(scope)

        async def send_secured(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in SECURITY_HEADERS.items():
                    headers.setdefault(key, value)
            await send(message)

        if refused is not None:
            return await PlainTextResponse(refused[1], status_code=refused[0])(scope, receive, send_secured)
        await self.app(scope, receive, send_secured)


def cookie_name(state) -> str:
    # Cookies ignore ports: two apps on one host need two names, or each would log the other out.
    return f"pixelwise-token-{state.port or 0}"


# ---------------------------------------------------------------------------------------------------------------
# Routes.

def binary(request: Request, array: np.ndarray, headers: dict) -> Response:
    """Raw little-endian array bytes, gzipped (the browser inflates them natively): label maps are runs."""
    body = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    headers = {**headers, "vary": "accept-encoding"}
    if "gzip" in request.headers.get("accept-encoding", ""):
        body, headers["content-encoding"] = gzip.compress(body, compresslevel=1), "gzip"
    return Response(body, media_type="application/octet-stream", headers=headers)


def item_of(request: Request):
    return request.app.state.session.store.item(request.path_params["id"])


def page(request: Request) -> Response:
    response = Response(request.app.state.static["index.html"], media_type=STATIC_TYPES["index.html"])
    # The token came in the URL (or a cookie): keep it for the page's own requests.
    response.set_cookie(cookie_name(request.app.state), request.app.state.token, httponly=True, samesite="strict")
    return response


def static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in STATIC_TYPES:  # a fixed list: no file-system path ever comes from the URL
        raise Refused(404, "no such file")
    return Response(request.app.state.static[name], media_type=STATIC_TYPES[name])


def listing(request: Request) -> JSONResponse:
    session: Session = request.app.state.session
    store = session.store
    classes = [{"label": i, "name": n, "colour": "#%02x%02x%02x" % tuple(store.palette[i])}
               for i, n in enumerate(store.class_names)]
    items = [{"id": it.id, "name": it.name, "split": it.split, "labelled": store.labelled(it)} for it in store.items]
    return JSONResponse({
        "dataset": {"name": store.root.name, "root": str(store.root), "format": store.format,
                    "key": hashlib.sha256(str(store.root).encode()).hexdigest()[:16]},
        "classes": classes, "palette": store.palette.reshape(-1).tolist(), "ignore": IGNORE,
        "items": items, "order": session.order, **session.status()})


def status(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.session.status())


def meta(request: Request) -> JSONResponse:
    session: Session = request.app.state.session
    item = item_of(request)
    width, height = session.store.image_size(item)
    info = {"id": item.id, "name": item.name, "width": width, "height": height,
            "labelled": session.store.labelled(item), "regions": None}
    if session.assistant is not None and not info["labelled"]:
        info["regions"] = session.assistant.predict(item.image).regions
    return JSONResponse(info)


def image(request: Request) -> Response:
    body, media_type = request.app.state.session.store.image_payload(item_of(request))
    return Response(body, media_type=media_type)


def labels(request: Request) -> Response:
    """The mask to start from: the saved one, else the model's prediction, else all ignore."""
    session: Session = request.app.state.session
    item = item_of(request)
    saved, version = session.store.read_labels(item)
    width, height = session.store.image_size(item)
    if saved is not None:
        array, source = saved, "saved"
    elif session.assistant is not None:
        array, source = session.assistant.predict(item.image).labels, "model"
    else:
        array, source = np.full((height, width), IGNORE, np.uint8), "empty"
    return binary(request, array, {"x-width": str(width), "x-height": str(height), "x-mask-version": version,
                                   "x-source": source})


def unsure(request: Request) -> Response:
    session: Session = request.app.state.session
    if session.assistant is None:
        raise Refused(404, "no model loaded: start the app with --checkpoint to see where it is unsure")
    return binary(request, session.assistant.predict(item_of(request).image).unsure, {})


def superpixels(request: Request) -> Response:
    ids = request.app.state.session.store.superpixels(item_of(request))
    return binary(request, ids, {"x-width": str(ids.shape[1]), "x-height": str(ids.shape[0])})


async def save(request: Request) -> JSONResponse:
    """PUT a PNG of labels; `If-Match` names the version it was drawn on (409 if the mask changed since)."""
    store: Store = request.app.state.session.store
    item = item_of(request)
    expected = request.headers.get("if-match", "").strip('"')
    if not expected:
        raise Refused(428, f"a save must say which version of the mask it replaces (If-Match; '{NO_MASK}' "
                           "for a new mask)")
    width, height = await run_in_threadpool(store.image_size, item)
    limit = 2 * width * height + (1 << 20)  # an incompressible 8-bit PNG is barely larger than its pixels
    too_big = Refused(413, f"the mask upload is larger than {limit} bytes, too large for a {width}x{height} mask")
    if int(request.headers.get("content-length") or 0) > limit:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_big
    version = await run_in_threadpool(store.save_labels, item, bytes(body), expected)
    labelled, total = await run_in_threadpool(store.progress)
    return JSONResponse({"version": version, "labelled": labelled, "total": total})


async def retrain(request: Request) -> JSONResponse:
    try:
        minutes = float((await request.json()).get("minutes", 5))
    except (ValueError, TypeError, AttributeError):
        raise Refused(400, 'send {"minutes": M} with the minutes of training') from None
    started = await run_in_threadpool(request.app.state.session.retrainer.start, minutes)
    return JSONResponse(started, status_code=202)


def stop_retrain(request: Request) -> JSONResponse:
    retrainer = request.app.state.session.retrainer
    retrainer.stop()
    return JSONResponse(retrainer.status())


def refused(request: Request, err: Refused) -> JSONResponse:
    return JSONResponse({"error": str(err)}, status_code=err.status)


def conflict(request: Request, err: Conflict) -> JSONResponse:
    return JSONResponse({"error": str(err), "version": err.version}, status_code=409)


def unusable(request: Request, err: PixelwiseError) -> JSONResponse:
    return JSONResponse({"error": str(err)}, status_code=422)


ROUTES = [
    Route("/", page),
    Route("/static/{name}", static),
    Route("/api/items", listing),
    Route("/api/status", status),
    Route("/api/items/{id:int}", meta),
    Route("/api/items/{id:int}/image", image),
    Route("/api/items/{id:int}/labels", labels, methods=["GET"]),
    Route("/api/items/{id:int}/labels", save, methods=["PUT"]),
    Route("/api/items/{id:int}/unsure", unsure),
    Route("/api/items/{id:int}/superpixels", superpixels),
    Route("/api/retrain", retrain, methods=["POST"]),
    Route("/api/retrain/stop", stop_retrain, methods=["POST"]),
]


def create_app(root: str | Path, checkpoint: str | Path | None = None, token: str | None = None,
               log: Callable[[str], None] = print) -> Starlette:
    """The annotation app for dataset folder `root`, pre-filling from `checkpoint` if given.

    `token`: the secret every request must carry (a fresh one if None; it is `app.state.token`).
    `app.state.port` and `app.state.hosts` (allowed Host names) are set by `run_app` once it listens;
    left at None, any loopback port is accepted (tests).
    """
    session = Session(Store(root, log=log), checkpoint, log=log)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        session.start_ranking()
        yield
        session.retrainer.stop()  # no orphan trainer after the app is gone

    app = Starlette(routes=ROUTES, lifespan=lifespan,
                    exception_handlers={Refused: refused, Conflict: conflict, PixelwiseError: unusable})
    folder = resources.files("pixelwise.web") / "static"
    app.state.static = {name: (folder / name).read_bytes() for name in STATIC_TYPES}
    app.state.session, app.state.token = session, token or secrets.token_urlsafe(32)
    app.state.port, app.state.hosts = None, LOOPBACK_NAMES
    app.add_middleware(Guard, state=app.state)
    return app


# ---------------------------------------------------------------------------------------------------------------
# Running it.

def listen(host: str, port: int, log: Callable[[str], None]) -> socket.socket:
    """A listening socket on host:port; a busy default port falls back to a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        if err.errno != errno.EADDRINUSE or port == 0:
            sock.close()
            raise PixelwiseError(f"cannot listen on {host}:{port} ({err.strerror}); choose another --host or --port")
        log(f"port {port} is busy; using a free port instead")
        sock.bind((host, 0))
    sock.listen(128)
    return sock


def prepare(root, checkpoint=None, host="127.0.0.1", port=8765, log=print) -> tuple[Starlette, socket.socket, str]:
    """-> (app, listening socket, URL with the token)."""
    app = create_app(root, checkpoint, log=log)
    sock = listen(host, port, log)
    app.state.port = sock.getsockname()[1]
    if host in ("0.0.0.0", "::", ""):
        app.state.hosts = None
        log("warning: listening on every network interface; anyone who can reach this machine and has the "
            "token can read and write the masks")
    elif host.lower() not in LOOPBACK_NAMES:
        app.state.hosts = (*LOOPBACK_NAMES, f"[{host.lower()}]" if ":" in host else host.lower())
    shown = "127.0.0.1" if app.state.hosts is None else (f"[{host}]" if ":" in host else host)
    return app, sock, f"http://{shown}:{app.state.port}/?token={app.state.token}"


def run_app(root: str | Path, checkpoint: str | Path | None = None, host: str = "127.0.0.1", port: int = 8765,
            open_browser: bool = False, log: Callable[[str], None] = print) -> None:
    """Serve the annotation app until Ctrl+C. Prints the URL (with its token); opens a browser only if asked."""
    import uvicorn

    app, sock, url = prepare(root, checkpoint, host, port, log)
    store = app.state.session.store
    labelled, total = store.progress()
    log(f"annotating {store.root} ({store.format} layout, {len(store.class_names)} classes): "
        f"{labelled} of {total} images labelled" + (f"; pre-filling with {checkpoint}" if checkpoint else ""))
    log(f"open {url}")
    log("press Ctrl+C to stop (saved masks are on disk; unsaved strokes stay in the browser)")
    if open_browser:
        threading.Timer(0.5, webbrowser.open, [url]).start()
    # access_log off: request lines would print the token to the terminal and its scroll-back.
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])


@contextlib.contextmanager
def serving(root, checkpoint=None, port: int = 0, log=print) -> Iterator[tuple[Starlette, str]]:
    """Run the app on 127.0.0.1 in a background thread (tests, benchmarks). -> (app, URL with token)."""
    import uvicorn

    app, sock, url = prepare(root, checkpoint, "127.0.0.1", port, log)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and thread.is_alive() and time.time() < deadline:
        time.sleep(0.01)
    try:
        yield app, url
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
