"""The board-fit search's next try and its "what dominates RAM" note (issue 17, TS-CAN on an M4)."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest

from tinyprune.app.fit_search import EDGE, TARGET_USE, budget_use, next_fraction, ram_floor_note


def _use(f: float) -> float:
    """RAM over its limit as a pruned net's arena behaves: a floor plus a part linear in width."""
    return 0.6 + 9.0 * math.sqrt(f)  # fits (<= 1) below f = (0.4 / 9)^2 ~ 0.00198


def _search(lo: float, steps: int, pick: Any) -> float:
    hi, seen = 1.0, {lo: _use(lo), 1.0: _use(1.0)}
    for _ in range(steps):
        mid = pick(lo, hi, seen)
        seen[mid] = _use(mid)
        lo, hi = (mid, hi) if _use(mid) <= 1.0 else (lo, mid)
    return lo


def test_search_lands_near_the_largest_fitting_fraction_bisection_stays_at_the_floor() -> None:
    floor, best = 0.0008, (0.4 / 9.0) ** 2
    found = _search(floor, 4, next_fraction)
    assert best * 0.9 <= found <= best  # within 10 % of the largest fitting fraction
    assert _search(floor, 4, lambda lo, hi, _: (lo + hi) / 2) == floor  # the old bisection


def test_next_fraction_interpolates_in_sqrt_space_and_stays_inside_the_bracket() -> None:
    lo, hi = 0.01, 0.64  # sqrt: 0.1 .. 0.8
    mid = next_fraction(lo, hi, {lo: 0.5, hi: 1.5})
    t = (TARGET_USE - 0.5) / 1.0
    assert mid == pytest.approx((0.1 + t * 0.7) ** 2)
    near_hi = next_fraction(lo, hi, {lo: 0.5, hi: 0.98})  # crossing right at hi: kept inside
    assert near_hi == pytest.approx((0.1 + (1 - EDGE) * 0.7) ** 2)
    near_lo = next_fraction(lo, hi, {lo: 0.999, hi: 50.0})
    assert near_lo == pytest.approx((0.1 + EDGE * 0.7) ** 2)
    assert next_fraction(lo, hi, {lo: None, hi: 2.0}) == pytest.approx(0.45**2)  # no information


def test_budget_use_is_the_tightest_row() -> None:
    res = SimpleNamespace(report={"budget": {"flash": {"used": 50, "limit": 100},
                                             "ram": {"used": 300, "limit": 200}}})  # fmt: skip
    assert budget_use(res) == 1.5
    assert budget_use(None) is None


def _report(peak_sizes: list[int], in_shape: list[int], ram_used: int, limit: int) -> dict:
    buffers = [{"tensor": i, "size": s, "first": 0, "last": 1} for i, s in enumerate(peak_sizes)]
    return {
        "inputs": [{"shape": in_shape, "dtype": "INT8"}],
        "budget": {"ram": {"used": ram_used, "limit": limit, "ok": ram_used <= limit, "note": "x"}},
        "arena": {"plan": {"live_bytes_per_step": [sum(peak_sizes), 10], "buffers": buffers}},
    }


def test_ram_note_names_the_input_when_it_and_its_copies_fill_the_ram() -> None:
    # TS-CAN's smallest net at 36x36, 10 frames: the input and its transposed copy at the peak
    rep = _report([77760, 77760, 2000], [1, 360, 36, 6], 250_000, 131_072)
    note = ram_floor_note(rep)
    assert "The input (1x360x36x6 int8, 77,760 B) dominates" in note
    assert "2 copies" in note and "233,280 B" in note
    assert "--model-kw img_size=N with --data-kw size=N" in note and "frames" in note


def test_ram_note_names_activations_when_the_input_is_small() -> None:
    rep = _report([90000, 60000, 4000], [1, 16, 16, 1], 160_000, 131_072)
    note = ram_floor_note(rep)
    assert "dominates" not in note and "90,000, 60,000, 4,000 B" in note
    assert "Even at minimum widths those activations exceed the RAM" in note


def test_ram_note_is_empty_when_ram_fits() -> None:
    assert ram_floor_note(_report([100], [1, 4, 4, 1], 100, 1000)) == ""
