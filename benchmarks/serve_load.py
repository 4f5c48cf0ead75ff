"""`pixelwise serve` under load, on loopback: throughput, latency percentiles, errors, 503s and memory.

    python benchmarks/serve_load.py --checkpoint runs/camvid/best.pt [--requests 10000] [--clients 1 4 16 64]

The server runs as `pixelwise serve` in a child process. For each number of concurrent clients, that
many threads send CamVid images (raw bytes) until --requests answers have come back; each mask is
compared with the one `pixelwise predict` wrote for that image in the same run. Then --faults sends a
body cut off mid-upload, a 1 GB body, and 1,000 fuzzed bodies, and checks that the next good request
still gets the right mask. Resident memory of the server is read from /proc before and after. The
reference throughput is `pixelwise predict` over the same images at the same profile and engine, as it
reports it (start-up excluded), and the reference latency is one image through that model in this
process, after the server has gone. Last line: one JSON object, with the issue's targets checked.
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from common import CAMVID, run_record


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def post(port: int, body: bytes, timeout: float = 120) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/predict", body=body, headers={"Content-Type": "application/octet-stream"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_ready(port: int, seconds: float = 300) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/ready")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit("the server did not become ready")


def load_level(port: int, images: list[tuple[bytes, np.ndarray]], clients: int, requests: int) -> dict:
    """`clients` threads send images round-robin until `requests` answers are in."""
    latencies, codes, wrong = [], {}, 0
    lock, counter = threading.Lock(), iter(range(requests))

    def client():
        nonlocal wrong
        while True:
            with lock:
                n = next(counter, None)
            if n is None:
                return
            body, expected = images[n % len(images)]
            start = time.perf_counter()
            try:
                status, content = post(port, body)
            except OSError:
                status, content = -1, b""
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                codes[status] = codes.get(status, 0) + 1
                if status == 200 and not np.array_equal(np.asarray(Image.open(io.BytesIO(content))), expected):
                    wrong += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    quantiles = statistics.quantiles(latencies, n=100)
    return {"clients": clients, "requests": requests, "seconds": round(seconds, 1),
            "answers_per_s": round(codes.get(200, 0) / seconds, 2), "p50_ms": round(1000 * quantiles[49], 1),
            "p95_ms": round(1000 * quantiles[94], 1), "p99_ms": round(1000 * quantiles[98], 1),
            "status_counts": {str(k): v for k, v in sorted(codes.items())}, "wrong_masks": wrong}


def overload(port: int, images: list[tuple[bytes, np.ndarray]], clients: int = 256) -> dict:
    """`clients` requests at the same moment, four times the queue's bound: the answers beyond it must be
    503s, never time-outs or failures, and every 200 must carry the right mask."""
    barrier, codes, wrong, lock = threading.Barrier(clients), {}, 0, threading.Lock()

    def client(n: int) -> None:
        nonlocal wrong
        body, expected = images[n % len(images)]
        barrier.wait()
        try:
            status, content = post(port, body)
        except OSError:
            status, content = -1, b""
        with lock:
            codes[status] = codes.get(status, 0) + 1
            if status == 200 and not np.array_equal(np.asarray(Image.open(io.BytesIO(content))), expected):
                wrong += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"clients": clients, "status_counts": {str(k): v for k, v in sorted(codes.items())}, "wrong_masks": wrong}


def faults(port: int, good: tuple[bytes, np.ndarray]) -> dict:
    """A body cut off mid-upload, a 1 GB body (refused at its Content-Length), 1,000 fuzzed bodies; then a
    good request must get the right mask."""
    with socket.create_connection(("127.0.0.1", port)) as s:  # disconnect mid-upload
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + good[0][:1000])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n")
        big = s.recv(200).split(b" ")[1].decode()
    rng, codes = random.Random(0), {}
    for _ in range(1000):
        body = bytearray(good[0][: rng.randrange(1, len(good[0]))])
        for _ in range(rng.randrange(0, 20)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        status, _ = post(port, bytes(body))
        codes[status] = codes.get(status, 0) + 1
    status, content = post(port, good[0])
    return {"one_gb_body_status": big, "fuzzed_status_counts": {str(k): v for k, v in sorted(codes.items())},
            "good_request_after": status == 200 and np.array_equal(np.asarray(Image.open(io.BytesIO(content))),
                                                                   good[1])}


def model_latency_ms(args, rgb: np.ndarray, runs: int = 20) -> float:
    """Median time of one image through the served model (one stream, all cores), decode and PNG excluded."""
    from pixelwise.inference.predict import predictor_from

    predictor = predictor_from(args.checkpoint, engine=args.engine, profile=args.profile)
    times = []
    for i in range(runs + 2):
        start = time.perf_counter()
        predictor.predict(rgb)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", default=str(CAMVID))
    parser.add_argument("--images", type=int, default=101, help="distinct CamVid val images sent round-robin")
    parser.add_argument("--requests", type=int, default=10000, help="answers to collect at each client count")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--profile", default="accurate", choices=("accurate", "fast"))
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--batch-size", type=int, help="the server's --batch-size (default: its own)")
    parser.add_argument("--warmup", type=int, help="requests sent at the largest client count before memory is "
                        "first read, so that every thread and compiled graph the load needs exists "
                        "(default: 4 a client, at least 32)")
    parser.add_argument("--no-faults", dest="faults", action="store_false")
    args = parser.parse_args()
    sources = sorted((Path(args.data) / "val").glob("*.png"))[: args.images]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        printed = subprocess.run([sys.executable, "-m", "pixelwise", "predict", "--checkpoint", args.checkpoint,
                                  "--engine", args.engine, "--profile", args.profile, "--no-overlay",
                                  *map(str, sources), "--out", str(tmp / "pred")],
                                 check=True, capture_output=True, text=True).stdout
        reference = float(re.search(r"\(([0-9.]+) images/s\)", printed).group(1))
        images = [(p.read_bytes(), np.asarray(Image.open(tmp / "pred" / f"{p.stem}.png"))) for p in sources]
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "pixelwise", "serve", "--checkpoint", args.checkpoint,
                                   "--engine", args.engine, "--profile", args.profile, "--port", str(port),
                                   *(["--batch-size", str(args.batch_size)] if args.batch_size else [])],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_ready(port)
            # every request thread and compiled graph the load needs, before memory is first read: what grows
            # after that is what the requests leave behind
            load_level(port, images, max(args.clients), args.warmup or max(32, 4 * max(args.clients)))
            before = rss_mb(server.pid)
            levels = []
            for clients in args.clients:
                level_before = rss_mb(server.pid)
                levels.append({**load_level(port, images, clients, args.requests),
                               "server_rss_mb": round(rss_mb(server.pid), 1)})
                levels[-1]["rss_growth_percent"] = round(100 * (levels[-1]["server_rss_mb"] - level_before)
                                                         / level_before, 2)
                print(json.dumps(levels[-1]), flush=True)
            after = rss_mb(server.pid)
            burst = overload(port, images)
            print(json.dumps({"overload": burst}), flush=True)
            fault_result = faults(port, images[0]) if args.faults else None
            server.terminate()
            exit_code = server.wait(60)
        finally:
            if server.poll() is None:
                server.kill()
    model_ms = model_latency_ms(args, np.asarray(Image.open(sources[0]).convert("RGB")))
    saturated = max(level["answers_per_s"] for level in levels)
    one_client = next((level for level in levels if level["clients"] == 1), None)
    targets = {"saturation_share_of_predict": round(saturated / reference, 3),
               "saturation_at_least_85_percent": saturated >= 0.85 * reference,
               "only_200_or_503_and_no_wrong_masks": all(set(level["status_counts"]) <= {"200", "503"}
                                                 and level["wrong_masks"] == 0 for level in levels),
               "overload_only_200_or_503": set(burst["status_counts"]) <= {"200", "503"}
                                           and "503" in burst["status_counts"] and burst["wrong_masks"] == 0,
               "rss_growth_below_5_percent": after < 1.05 * before,
               "one_client_p99_within_1.5x_model_plus_10_ms":
                   None if one_client is None else one_client["p99_ms"] <= 1.5 * model_ms + 10}
    print(json.dumps({"benchmark": "serve_load", **run_record(), "profile": args.profile, "engine": args.engine,
                      "predict_images_per_s": reference, "model_latency_ms": round(model_ms, 1), "targets": targets,
                      "levels": levels, "overload": burst,
                      "server_rss_mb_before": round(before, 1), "server_rss_mb_after": round(after, 1),
                      "rss_growth_percent": round(100 * (after - before) / before, 2), "faults": fault_result,
                      "sigterm_exit_code": exit_code}))


if __name__ == "__main__":
    main()
