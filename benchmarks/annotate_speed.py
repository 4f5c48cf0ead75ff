"""How fast `pixelwise annotate` paints and saves on a 12-megapixel (4000x3000) image, in headless chromium.

Stroke: synthetic pointer events are dispatched into the page one segment at a time; for each, the time
from the event to the end of its handler (labels updated, the dirty rectangle put into the mask canvas)
and to the next animation frame. Target: under 16 ms a segment (one frame at 60 Hz).
Save: Ctrl+S to the server's answer (PNG encoding in the browser, upload, checks, backup, atomic write),
as the app measures it. Target: under 300 ms for the 12 MP mask.

Prints `lscpu`'s model name and ends with one JSON object on the last line.
Usage: python benchmarks/annotate_speed.py [--segments 300] [--saves 5]
       python benchmarks/annotate_speed.py --screenshot docs/annotate.png   (the README's picture instead)
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from cpu import cpu_model, run_record

from pixelwise.web.server import serving

CHROMIUM = "/usr/bin/chromium"
W, H = 4000, 3000

# Runs in the page: a stroke of `segments` pointer moves across the image, timed one by one.
STROKE_JS = """
async ([segments, spacing]) => {
  const viewport = document.getElementById('viewport'), box = viewport.getBoundingClientRect();
  const event = (type, x, y) => new PointerEvent(type, {clientX: x, clientY: y, button: 0, buttons: 1,
    pointerId: 1, bubbles: true, pointerType: 'mouse'});
  const frame = () => new Promise((resolve) => requestAnimationFrame(resolve));
  let x = box.left + 40, y = box.top + 40, dx = spacing;
  viewport.dispatchEvent(event('pointerdown', x, y));
  const handler = [], toFrame = [];
  for (let k = 0; k < segments; k++) {
    x += dx;
    if (x > box.right - 40 || x < box.left + 40) { dx = -dx; x += 2 * dx; y += 3 * Math.abs(dx); }
    const t0 = performance.now();
    viewport.dispatchEvent(event('pointermove', x, y));
    handler.push(performance.now() - t0);
    await frame();
    toFrame.push(performance.now() - t0);
  }
  viewport.dispatchEvent(event('pointerup', x, y));
  return {handler, toFrame};
}
"""


def make_dataset(root: Path) -> Path:
    """One 4000x3000 photo-like image (smooth shading, shapes, noise) with a mask of a few blobs."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    shade = (np.sin(xx / 310) + np.cos(yy / 230)) * 40 + 120
    image = np.stack([shade, shade * 0.9 + 10, shade * 0.8 + 30], axis=2)
    labels = np.zeros((H, W), np.uint8)
    for k in range(25):
        cx, cy, r = rng.integers(200, W - 200), rng.integers(200, H - 200), rng.integers(60, 300)
        blob = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        labels[blob] = 1 + k % 3
        image[blob] = rng.integers(0, 255, 3)
    image += rng.normal(0, 6, image.shape)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(root / "images" / "big.jpg", quality=90)
    Image.fromarray(labels).save(root / "masks" / "big.png")
    (root / "classes.txt").write_text("background\nroad\ncar\ntree\n")
    return root


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def time_strokes(page, segments: int, spacing: int) -> dict:
    result = page.evaluate(STROKE_JS, [segments, spacing])
    return {name: {"median_ms": statistics.median(v), "p95_ms": percentile(v, 95), "max_ms": max(v)}
            for name, v in (("handler", result["handler"]), ("to_next_frame", result["toFrame"]))}


def time_saves(page, saves: int) -> dict:
    client_ms, encode_ms = [], []
    for n in range(1, saves + 1):
        page.keyboard.press("Control+s")
        page.wait_for_selector(f'body[data-saves="{n}"]', timeout=60_000)
        client_ms.append(float(page.get_attribute("body", "data-save-ms")))
        encode_ms.append(page.evaluate("""async () => { const t0 = performance.now();
            await encodePNG(app.labels, app.W, app.H); return performance.now() - t0; }"""))
    return {"median_ms": statistics.median(client_ms), "max_ms": max(client_ms),
            "png_encode_median_ms": statistics.median(encode_ms)}


def benchmark(segments: int, saves: int) -> dict:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        root = make_dataset(Path(tmp) / "big")
        with serving(root, log=lambda _: None) as (_, url), sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{url}#item=0")
            page.wait_for_selector('body[data-ready="1"]', timeout=120_000)
            page.keyboard.press("q")
            fit = time_strokes(page, segments, spacing=6)  # whole image in view: ~19 image px a segment
            page.keyboard.press("0")
            actual = time_strokes(page, segments, spacing=6)  # 100% zoom
            save = time_saves(page, saves)
            browser.close()
    return {"image": f"{W}x{H}", "segments": segments, "brush_px": 15, "stroke_fit_zoom": fit,
            "stroke_actual_size": actual, "save_12mp": save}


def screenshot(out: Path) -> None:
    """The app on a tile of the bundled nuclei sample, its mask shown, for the README."""
    from playwright.sync_api import sync_playwright

    from pixelwise.demo import sample_root

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "nuclei"
        shutil.copytree(sample_root(), root)
        with serving(root, log=lambda _: None) as (_, url), sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{url}#item=0")
            page.wait_for_selector('body[data-ready="1"]')
            page.keyboard.press("2")
            page.mouse.move(930, 330)  # the brush outline under the cursor
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out))
            browser.close()
    # 256 colours are plenty for a screenshot of a dark UI and a fluorescence image, at a third of the bytes
    Image.open(out).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=300, help="pointer moves per stroke (default: %(default)s)")
    parser.add_argument("--saves", type=int, default=5, help="saves to time (default: %(default)s)")
    parser.add_argument("--screenshot", type=Path, metavar="PNG", help="only save a screenshot of the app here")
    args = parser.parse_args()
    if args.screenshot:
        screenshot(args.screenshot)
        return
    cpu = cpu_model()
    print(f"CPU: {cpu}")
    result = {"benchmark": "annotate_speed", **run_record(), "cpu": cpu, **benchmark(args.segments, args.saves)}
    for name in ("stroke_fit_zoom", "stroke_actual_size"):
        h, f = result[name]["handler"], result[name]["to_next_frame"]
        print(f"{name}: event -> painted {h['median_ms']:.2f} ms median, {h['p95_ms']:.2f} ms p95 "
              f"(to next frame {f['median_ms']:.1f} / {f['p95_ms']:.1f} ms); target < 16 ms")
    s = result["save_12mp"]
    print(f"save 12 MP mask: {s['median_ms']:.0f} ms median, {s['max_ms']:.0f} ms max "
          f"(PNG encode in the browser {s['png_encode_median_ms']:.0f} ms); target < 300 ms")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
