"""Tests of firmware_export.budget: shipped profiles, TOML validation and the budget rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_export.budget import check_budget, list_profiles, load_profile
from tinyprune.errors import ConfigError, UnknownNameError

KIB, MIB = 1024, 1024 * 1024
EXPECTED = {  # name: (runtime, flash, ram, clock MHz), from the boards' datasheets
    "cortex-m0plus": ("tflm", 2 * MIB, 264 * KIB, 133),
    "cortex-m4": ("tflm", 512 * KIB, 128 * KIB, 180),
    "cortex-m7": ("tflm", 2 * MIB, 1 * MIB, 480),
    "nrf52840": ("tflm", 1 * MIB, 256 * KIB, 64),
    "rpi-zero2w": ("litert", 8_000_000_000, 512 * MIB, 1000),
    "rpi4": ("litert", 8_000_000_000, 1024 * MIB, 1500),
    "rpi5": ("litert", 8_000_000_000, 2048 * MIB, 2400),
}

GOOD = """
name = "myboard"
runtime = "tflm"
flash_bytes = 100000
ram_bytes = 20000
clock_mhz = 100
cycles_per_mac = 2.5
cycles_per_mac_source = "measured on my board"
runtime_flash_bytes = 30000
latency_ms = 10
"""


def test_list_profiles() -> None:
    assert list_profiles() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_profile_limits(name: str) -> None:
    p = load_profile(name)
    assert (p.runtime, p.flash_bytes, p.ram_bytes, p.clock_mhz) == EXPECTED[name]
    assert p.name == name and p.description
    assert p.cycles_per_mac is not None and "estimate" in p.cycles_per_mac_source
    assert p.runtime_flash_bytes > 0


def test_unknown_name_lists_known_and_closest() -> None:
    with pytest.raises(
        UnknownNameError,
        match=r"unknown device profile 'cortex_m4'.*"
        r"cortex-m0plus, cortex-m4.*did you mean 'cortex-m4'",
    ):
        load_profile("cortex_m4")


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "board.toml"
    path.write_text(text)
    return path


def test_profile_from_path(tmp_path: Path) -> None:
    p = load_profile(_toml(tmp_path, GOOD))
    assert (p.name, p.latency_ms, p.clock_mhz, p.source) == (
        "myboard",
        10.0,
        100.0,
        str(tmp_path / "board.toml"),
    )


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda t: t + "\nname = [", r"board\.toml' is not valid TOML"),
        (lambda t: t.replace("ram_bytes = 20000\n", ""), r"board\.toml' lacks the key 'ram_bytes'"),
        (
            lambda t: t.replace("ram_bytes = 20000", 'ram_bytes = "20k"'),
            r"board\.toml': key 'ram_bytes' must be int, got str '20k'",
        ),
        (
            lambda t: t.replace("flash_bytes = 100000", "flash_bytes = true"),
            r"key 'flash_bytes' must be int, got bool",
        ),
        (
            lambda t: t.replace('runtime = "tflm"', 'runtime = "tvm"'),
            r"key 'runtime' must be one of tflm, litert, got 'tvm'",
        ),
        (lambda t: t.replace("clock_mhz = 100", "clock_mhz = 0"), r"key 'clock_mhz' must be > 0"),
        (
            lambda t: t.replace("latency_ms", "latency"),
            r"unknown key 'latency' \(did you mean 'latency_ms'\?\)",
        ),
        (lambda t: t.replace("cycles_per_mac = 2.5\n", ""), r"'latency_ms' needs 'cycles_per_mac'"),
    ],
    ids=[
        "syntax",
        "missing",
        "type",
        "bool",
        "runtime",
        "nonpositive",
        "unknown-key",
        "latency-needs-cpm",
    ],
)
def test_bad_profile_files(tmp_path: Path, edit, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_profile(_toml(tmp_path, edit(GOOD)))


def test_missing_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_profile(tmp_path / "nope.toml")


def test_budget_rows_fit(tmp_path: Path) -> None:
    p = load_profile(_toml(tmp_path, GOOD))
    rep = check_budget(p, model_bytes=70000, arena_bytes=15000, io_bytes=5000, macs=40000)
    rows = {r.resource: r for r in rep.rows}
    assert (rows["flash"].used, rows["flash"].limit, rows["flash"].ok) == (100000, 100000, True)
    assert rows["flash"].estimate  # the runtime allowance is an estimate
    assert (rows["ram"].used, rows["ram"].ok, rows["ram"].estimate) == (20000, True, False)
    assert rows["latency"].used == pytest.approx(40000 * 2.5 / 100e3)  # = 1.0 ms
    assert rows["latency"].estimate and "measured on my board" in rows["latency"].note
    assert rep.ok and rep.failing() == []
    d = rep.to_dict()
    assert set(d) == {"flash", "ram", "latency"}
    assert d["ram"] == {**d["ram"], "used": 20000, "limit": 20000, "ok": True}


def test_budget_rows_fail_one_byte_over(tmp_path: Path) -> None:
    p = load_profile(_toml(tmp_path, GOOD))
    rep = check_budget(p, model_bytes=70001, arena_bytes=15000, io_bytes=5001, macs=4_000_001)
    assert [r.resource for r in rep.failing()] == ["flash", "ram", "latency"]
    assert not rep.ok and rep.to_dict()["flash"]["ok"] is False


def test_no_latency_row_without_budget() -> None:
    rep = check_budget(load_profile("cortex-m4"), model_bytes=1, arena_bytes=1, io_bytes=0, macs=1)
    assert [r.resource for r in rep.rows] == ["flash", "ram"]
    with pytest.raises(ConfigError, match="macs must be >= 0"):
        check_budget(load_profile("cortex-m4"), model_bytes=1, arena_bytes=1, io_bytes=0, macs=-1)
