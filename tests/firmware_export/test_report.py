"""Tests of firmware_export.report on the sine model shipped in the tflite-micro wheel."""

from __future__ import annotations

import base64
import json
import re
from importlib import resources
from pathlib import Path

import pytest

pytest.importorskip("tflite_micro")
pytest.importorskip("ai_edge_litert")

from firmware_export.analyze import analyze_tflite  # noqa: E402
from firmware_export.budget import check_budget, load_profile  # noqa: E402
from firmware_export.report import ReportArena, build_report_dict, summary_lines, write_reports  # noqa: E402

pytestmark = pytest.mark.tf

VERIFY = {
    "tflm_vs_litert_ref": {"max_abs_diff": 0, "tolerance": 0, "ok": True},
    "torch_vs_tflite": {"sqnr_db": 31.5, "tolerance": 20.0, "ok": True},
}


def sine_model() -> bytes:
    files = resources.files("tflite_micro") / "python" / "tflite_micro" / "sine_float.tflite"
    return files.read_bytes()


def make(arena: int = 2000):
    analysis = analyze_tflite(sine_model())
    profile = load_profile("cortex-m4")
    budget = check_budget(
        profile,
        model_bytes=analysis.model_bytes,
        arena_bytes=arena + 512,
        io_bytes=8,
        macs=analysis.macs,
    )
    report = build_report_dict(
        analysis=analysis,
        budget=budget,
        profile=profile,
        arena=ReportArena(arena, 512, "32-bit target"),
        verify=VERIFY,
        extra={"tinyprune_version": "0.1.0", "macs": -1},
    )
    return analysis, budget, report


def test_report_dict_carries_the_contract_keys() -> None:
    analysis, budget, report = make()
    for key in ("flash_bytes", "arena_bytes", "macs", "params", "ops", "budget", "verify"):
        assert key in report
    assert report["macs"] == analysis.macs == sum(r.macs for r in analysis.layers) > 0
    assert report["flash_bytes"] == len(sine_model())
    assert report["arena_header_bytes"] == 2512
    assert report["budget"]["ram"] == {**report["budget"]["ram"], "used": 2520, "ok": True}
    assert report["tinyprune_version"] == "0.1.0" and report["verify"] == VERIFY


def test_write_reports(tmp_path: Path) -> None:
    analysis, budget, report = make()
    paths = write_reports(tmp_path / "run", report, analysis, budget)
    assert [p.name for p in paths] == ["report.json", "report.md", "report.html"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted(
        p.name for p in paths
    )  # no temp files left behind
    data = json.loads(paths[0].read_text())
    assert data["budget"]["flash"]["limit"] == 512 * 1024 and data["budget_ok"] is True
    md = paths[1].read_text()
    assert "| flash |" in md and "| tflm_vs_litert_ref |" in md and "sqnr_db" in md
    assert md.count("| FULLY_CONNECTED |") == analysis.ops["FULLY_CONNECTED"]
    page = paths[2].read_text()
    png = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert png is not None
    assert base64.b64decode(png.group(1)).startswith(b"\x89PNG\r\n\x1a\n")
    assert "<th>activation bytes</th>" in page and "http" not in page.replace(
        "http-equiv", ""
    )  # self-contained


def test_summary_lines_name_each_row_and_the_verdict() -> None:
    _, _, report = make()
    lines = summary_lines(report)
    assert [ln.split()[1] for ln in lines[:-1]] == ["flash", "ram"]
    assert lines[-1] == "verdict: fits cortex-m4"
    _, _, over = make(arena=200_000)
    lines = summary_lines(over)
    assert lines[1].startswith("OVER ram") and lines[-1] == "verdict: OVER BUDGET on cortex-m4: ram"


def test_non_finite_figures_stay_valid_json(tmp_path: Path) -> None:
    analysis, budget, report = make()
    report["verify"] = {"x": {"max_abs_diff": float("inf"), "tolerance": 1.0, "ok": False}}
    path = write_reports(tmp_path, report, analysis, budget)[0]
    assert json.loads(path.read_text())["verify"]["x"]["max_abs_diff"] == "inf"


def test_report_json_reads_back_as_a_typed_export_report(tmp_path: Path) -> None:
    from firmware_export.report_schema import REPORT_SCHEMA_VERSION, BudgetRow, ExportReport

    analysis, budget, report = make()
    path = write_reports(tmp_path, report, analysis, budget)[0]
    data = json.loads(path.read_text())
    assert data["schema_version"] == REPORT_SCHEMA_VERSION == 1
    typed = ExportReport.load(tmp_path)
    assert typed.flash_bytes == len(sine_model()) and typed.macs == analysis.macs > 0
    assert typed.target == "cortex-m4" and typed.runtime == "tflm"
    assert typed.budget["ram"] == BudgetRow(**data["budget"]["ram"]) and typed.fits
    assert typed.extra["tinyprune_version"] == "0.1.0"
    assert typed.to_dict() == data  # nothing lost on the way through the class


def test_a_report_missing_a_contract_figure_or_of_another_schema_is_refused() -> None:
    from firmware_export.report_schema import ExportReport
    from tinyprune.errors import ExportError

    _, _, report = make()
    with pytest.raises(ExportError, match="flash_bytes"):
        ExportReport.from_dict({k: v for k, v in report.items() if k != "flash_bytes"})
    with pytest.raises(ExportError, match="must be integers"):
        ExportReport.from_dict({**report, "macs": 1.5})
    with pytest.raises(ExportError, match="schema_version 2"):
        ExportReport.from_dict({**report, "schema_version": 2})
