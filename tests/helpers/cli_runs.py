"""Shared pieces of the CLI tests: a tiny board profile and the usual ``prune`` command line."""

from __future__ import annotations

from pathlib import Path

#: micro_cnn (width 8) on 8x8 digits: the dense int8 model is about 11.5 KB, the smallest
#: reachable one (widths 4/4/4) about 5.9 KB; a 9,000-byte flash sits in between.
BOARD = """name = "tiny-board"
runtime = "tflm"
flash_bytes = {flash}
ram_bytes = 1048576
clock_mhz = 64
runtime_flash_bytes = 0
"""


#: micro_cnn (width 8): the dense latency estimate (about 44,000 MACs x 4 cycles at 64 MHz) is
#: about 2.7 ms, so a 1.5 ms limit binds while flash and RAM are plentiful.
SLOW_BOARD = """name = "slow-board"
runtime = "tflm"
flash_bytes = 1048576
ram_bytes = 1048576
clock_mhz = 64
cycles_per_mac = 4.0
latency_ms = 1.5
runtime_flash_bytes = 0
"""


def write_slow_board(folder: Path) -> Path:
    """``folder/slow.toml``: :data:`SLOW_BOARD`, a board whose 1.5 ms latency limit binds."""
    path = folder / "slow.toml"
    path.write_text(SLOW_BOARD)
    return path


def write_board(folder: Path, flash: int) -> Path:
    """``folder/board.toml``: a TFLM board with ``flash`` bytes of flash and 1 MiB of RAM."""
    path = folder / "board.toml"
    path.write_text(BOARD.format(flash=flash))
    return path


def prune_argv(criterion: str, out: Path, *flags: str) -> list[str]:
    """``tinyprune prune zoo:micro_cnn --data digits --criterion CRITERION FLAGS --out OUT``."""
    head = ["prune", "zoo:micro_cnn", "--data", "digits", "--criterion", criterion]
    return [*head, *flags, "--out", str(out)]


def export_argv(model: str | Path, calib: Path, target: str, out: Path, *flags: str) -> list[str]:
    """``tinyprune export MODEL --calib CALIB --target TARGET --out OUT FLAGS``."""
    head = ["export", str(model), "--calib", str(calib), "--target", target]
    return [*head, "--out", str(out), *flags]
