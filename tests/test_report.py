"""Every measured figure in README.md and docs/ is rendered from its results file (benchmarks/report.py)."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import report  # noqa: E402
import reports  # noqa: E402


def test_every_marked_table_and_figure_equals_what_its_results_file_renders_now():
    stale = {path.relative_to(ROOT): report.rendered(path.read_text()) != path.read_text()
             for path in report.documents()}
    assert not any(stale.values()), f"stale (run python benchmarks/report.py): {[str(p) for p, s in stale.items() if s]}"


def test_no_measured_figure_is_typed_by_hand_outside_the_markers():
    found = [f"{path.relative_to(ROOT)}:{line}: {figure}" for path in report.documents()
             for line, figure in report.unmarked_figures(path.read_text())]
    assert found == []


def test_markers_are_replaced_by_their_renderers_output_and_nothing_else_changes():
    text = ("# t\nbefore <!-- fig: m.speed -->old<!-- /fig --> after\n"
            "<!-- report: m.table -->\n| old |\n<!-- /report -->\ntail 12 ms\n")
    outputs = {"m.speed": "1.25×", "m.table": "| new |\n|---|\n"}
    assert report.rendered(text, outputs.__getitem__) == (
        "# t\nbefore <!-- fig: m.speed -->1.25×<!-- /fig --> after\n"
        "<!-- report: m.table -->\n| new |\n|---|\n<!-- /report -->\ntail 12 ms\n")
    assert report.unmarked_figures(text) == [(6, "12 ms")]  # the unmarked figure, on its line


@pytest.mark.parametrize("prose, figures", [
    ("it took 72 s and 1.43 GB, 3.9× the peer, +0.6 points, mean IoU 0.735", ["72 s", "1.43 GB", "3.9×", "+0.6 points",
                                                                             "0.735"]),
    ("a 480×360 frame, `--tile 1024`, 367 images, 11 classes, [link](x/0.5.md)", []),
    ("```\nepoch 1 loss 0.6931 4.9 img/s\n```\n", []),
])
def test_the_scan_finds_measured_figures_in_prose_only(prose, figures):
    assert [figure for _, figure in report.unmarked_figures(prose)] == figures


def test_a_results_file_that_does_not_name_its_machine_date_and_commit_backs_no_figure(tmp_path, monkeypatch):
    monkeypatch.setattr(reports, "RESULTS", tmp_path)
    (tmp_path / "bare.json").write_text(json.dumps({"machine": "x86_64, 2 threads, no GPU", "figure": 1}))
    with pytest.raises(reports.Unbacked, match="bare.json records no machine .*, date, commit: rerun its benchmark"):
        reports.results("bare")
    (tmp_path / "full.json").write_text(json.dumps({"machine": "AMD EPYC", "date": "2026-12-03", "commit": "abc1234"}))
    assert reports.source("full") == ("<sub>From `benchmarks/results/full.json` (AMD EPYC; 2026-12-03; commit "
                                      "abc1234).</sub>")
