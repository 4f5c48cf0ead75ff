"""`pixelwise serve` under load (benchmarks/serve_load.py): the docs' deploy page."""
from __future__ import annotations

from reports import results, source, table

RUN = "serve_load"


def load_levels() -> str:
    data = results(RUN)
    reference = data["predict_images_per_s"]
    rows = [[level["clients"], f"{level['requests']:,}", f"{level['answers_per_s']:.2f}",
             f"{level['answers_per_s'] / reference:.2f}×", f"{level['p50_ms']:.0f}", f"{level['p95_ms']:.0f}",
             f"{level['p99_ms']:.0f}", ", ".join(f"{n:,} × {code}" for code, n in level["status_counts"].items()),
             level["wrong_masks"], f"{level['server_rss_mb']:.0f}"]
            for level in data["levels"]]
    burst = data["overload"]
    rows.append([f"{burst['clients']} at once", f"{sum(burst['status_counts'].values()):,}", "–", "–", "–", "–", "–",
                 ", ".join(f"{n:,} × {code}" for code, n in burst["status_counts"].items()), burst["wrong_masks"],
                 "–"])
    return table(["clients", "requests", "answers/s", "vs `predict`", "p50 ms", "p95 ms", "p99 ms", "answers",
                  "masks unlike `predict`'s", "server RSS MB after"], rows) + "\n\n" + source(RUN)


def predict_rate() -> str:
    return f"{results(RUN)['predict_images_per_s']:.1f} images/s"


def model_latency() -> str:
    return f"{results(RUN)['model_latency_ms']:.1f} ms"


def rss_growth() -> str:
    data = results(RUN)
    return f"{data['server_rss_mb_before']:.0f} MB to {data['server_rss_mb_after']:.0f} MB " \
           f"({data['rss_growth_percent']:+.1f}%)"


def faults() -> str:
    data = results(RUN)["faults"]
    fuzzed = ", ".join(f"{n:,} × {code}" for code, n in data["fuzzed_status_counts"].items())
    after = "the right mask" if data["good_request_after"] else "a wrong answer"
    return f"a 1 GB body got {data['one_gb_body_status']}, the fuzzed bodies {fuzzed}, and the next good request {after}"


WARM_RUNS = ("serve_load_1client", "serve_load_warm")  # run alone, memory read after a warm-up


def _p99_target_ms(data: dict) -> float:
    """The issue's bound on a lone client's p99: 1.5 x the model's own latency + 10 ms."""
    return 1.5 * data["model_latency_ms"] + 10


def after_warmup() -> str:
    rows = []
    for name in WARM_RUNS:
        data = results(name)
        target = _p99_target_ms(data)
        for level in data["levels"]:
            warm = level["server_rss_mb"] / (1 + level["rss_growth_percent"] / 100)
            rows.append([f"`{name}`", level["clients"], f"{level['requests']:,}", f"{level['answers_per_s']:.2f}",
                         f"{level['p50_ms']:.0f}", f"{level['p95_ms']:.0f}", f"{level['p99_ms']:.0f}",
                         f"{target:.0f}" if level["clients"] == 1 else "–",
                         f"{warm:.0f} → {level['server_rss_mb']:.0f} ({level['rss_growth_percent']:+.1f}%)",
                         level["wrong_masks"]])
    return table(["run", "clients", "requests", "answers/s", "p50 ms", "p95 ms", "p99 ms",
                  "p99 target (1.5 × model + 10 ms)", "server RSS MB, level's start → end",
                  "masks unlike `predict`'s"], rows) + "\n\n" + source(*WARM_RUNS)


def tail_verdict() -> str:
    """Whether the newest run alone keeps the lone client's tail within the target, in words."""
    data = results(WARM_RUNS[-1])
    one = next(level for level in data["levels"] if level["clients"] == 1)
    target = _p99_target_ms(data)
    kept = "within" if one["p99_ms"] <= target else "over"
    return f"p99 {one['p99_ms']:.0f} ms, {kept} the target of {target:.0f} ms"
