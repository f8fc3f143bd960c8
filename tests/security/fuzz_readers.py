"""Seeded mutation fuzzing of tinyprune's file readers (helpers for test_fuzz_readers.py).

Each reader takes a path and either returns or raises :class:`ConfigError`; anything else
is a finding. Native readers (ONNX protobuf/checker/simplifier, torch's zip reader) run in a
child process through :func:`firmware_export.isolate.run_isolated`, as the pipeline runs
native runtimes, so a crash shows up as a signal instead of killing the test session.
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Callable
from pathlib import Path

from tinyprune.errors import ConfigError


def mutate(seed_bytes: bytes, rng: random.Random) -> bytes:
    """One mutation: byte flips, a truncation, a random span, or a duplicated chunk."""
    data = bytearray(seed_bytes)
    how = rng.randrange(4)
    if how == 0 or len(data) < 4:
        for _ in range(rng.randint(1, 8)):
            if data:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif how == 1:
        del data[rng.randrange(len(data)) :]
    elif how == 2:
        start = rng.randrange(len(data))
        span = rng.randint(1, 16)
        data[start : start + span] = bytes(rng.randrange(256) for _ in range(span))
    else:
        start = rng.randrange(len(data))
        chunk = data[start : start + rng.randint(1, 64)]
        at = rng.randrange(len(data))
        data[at:at] = chunk
    return bytes(data)


def classify(fn: Callable[[Path], object], path: Path) -> tuple[str, str]:
    """("ok", "") / ("config", message) / ("other", traceback) for one reader call."""
    try:
        fn(path)
    except ConfigError as e:
        return ("config", str(e)) if str(e).strip() else ("other", "ConfigError without message")
    except Exception:  # noqa: BLE001 - the finding itself
        return "other", traceback.format_exc(limit=6)
    return "ok", ""


def read_tflite(path: Path) -> object:
    from firmware_export.analyze import analyze_tflite, lint_int8
    from firmware_export.tflite_model import parse_tflite

    data = path.read_bytes()
    model = parse_tflite(data)
    analyze_tflite(data)
    return lint_int8(model)


def read_onnx(path: Path) -> object:
    from firmware_export.export_onnx import load_onnx

    return load_onnx(path)


def read_npy(path: Path) -> object:
    from firmware_export.calibration import load_calibration

    return load_calibration(path)


def check_pt2(path: Path) -> object:
    from tinyprune.pt2_check import check_pt2_bytes

    return check_pt2_bytes(path.read_bytes(), str(path))


def load_pt2(path: Path) -> object:
    from tinyprune.app.sources import load_exported_program

    return load_exported_program(path)


def read_avi(path: Path) -> object:
    from tinyprune.data.avi import read_avi as read

    return read(path)


def read_pure(path: Path) -> object:
    """``path`` is a PURE sequence's JSON; its frames folder sits beside it."""
    from tinyprune.data.pure import read_sequence

    return read_sequence(path.parent.parent, path.stem)


READERS: dict[str, Callable[[Path], object]] = {
    "tflite": read_tflite,
    "onnx": read_onnx,
    "npy": read_npy,
    "pt2": check_pt2,
    "pt2_load": load_pt2,
    "avi": read_avi,
    "pure": read_pure,
}


def run_batch(fmt: str, paths: list[str]) -> list[tuple[str, str, str]]:
    """Classify every file with the ``fmt`` reader; return (path, outcome, text) for each."""
    fn = READERS[fmt]
    return [(p, *classify(fn, Path(p))) for p in paths]
