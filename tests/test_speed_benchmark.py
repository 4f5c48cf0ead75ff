"""benchmarks/speed.py's quality figures come from files it names, none built in."""
import json
import sys
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
sys.path.insert(0, str(RESULTS.parent))
from speed import load_quality  # noqa: E402


def test_quality_is_read_from_a_camvid_results_file_and_from_plain_label_files(tmp_path):
    plain = tmp_path / "quality.json"
    plain.write_text(json.dumps({"pixelwise accurate": 0.75, "date": "2026-12-07", "machine": "AMD EPYC"}))
    peer = json.loads((RESULTS / "camvid_peer_35min.json").read_text())["peer"]
    assert load_quality([str(RESULTS / "camvid_peer_35min.json"), str(plain)]) == {
        f"smp Unet mobilenet_v2 @{peer['infer_scale']:g}x": peer["val_mean_iou"],
        "smp Unet mobilenet_v2": peer["val_mean_iou_at_scale_1"], "pixelwise accurate": 0.75}
    assert load_quality([]) == {}


def test_a_bad_quality_file_is_refused_naming_it(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"pixelwise fast": "high"}')
    with pytest.raises(SystemExit, match="bad.json"):
        load_quality([str(bad)])
