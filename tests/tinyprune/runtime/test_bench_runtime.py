"""``tinyprune bench-runtime`` on a real int8 net (slow: the net is trained and exported first)."""

from __future__ import annotations

import json

import pytest

from tinyprune.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.tf, pytest.mark.timeout(1800)]


def test_bench_runtime_lists_every_runtime(int8_net, recordings, capsys):
    assert (
        main(
            [
                "bench-runtime",
                str(int8_net),
                "--video",
                str(recordings.mjpg),
                "--seconds",
                "0.2",
                "--json",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    got = {(r["runtime"], r["threads"]) for r in result["rows"]}
    assert {("LiteRT int8 xnnpack", n) for n in (1, 2, 4)} <= got
    assert ("LiteRT int8 reference", 1) in got  # the block rewrite's moves have reference kernels
    assert {("ONNX Runtime fp32", n) for n in (1, 2, 4)} <= got  # compared at equal threads
    assert all(r["latency_ms"] > 0 and r["per_s"] > 0 for r in result["rows"])
    assert result["end_to_end"]["frames"] == 360 and result["end_to_end"]["frames_per_s"] > 0
    prof = result["end_to_end"]["profile_ms_per_frame"]
    assert prof["inference"] > 0 and prof["decode"] > 0
    assert sum(prof.values()) == pytest.approx(1000 / result["end_to_end"]["frames_per_s"])
    ratios = result["ratios"]
    assert ratios["xnnpack_over_ONNX Runtime fp32"] > 0
    assert ratios["xnnpack_over_ONNX Runtime fp32_4_threads"] > 0
    assert result["peak_rss_mb"] > 10


def test_int8_net_reads_the_true_heart_rate(int8_net, recordings, capsys):
    assert main(["infer", str(int8_net), "--video", str(recordings.mjpg)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["summary"]
    assert summary["method"] == "net"
    assert abs(summary["hr"] - recordings.hr) <= 3.0
