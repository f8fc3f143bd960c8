"""Device profiles and the check of a model against one (flash, RAM, latency).

A profile names what a board offers (flash, RAM, clock) and what the runtime costs (a code
size allowance, an estimated cycles-per-MAC figure). Profiles ship as TOML files in
``firmware_export/profiles/``; users pass a built-in name or a path to their own TOML file.
The check compares measured figures (model bytes, TFLM arena) against the limits and labels
every row that rests on an estimate as such.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinyprune.errors import ConfigError, UnknownNameError, unknown_name_message

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
RUNTIMES = ("tflm", "litert")
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "runtime": str,
    "flash_bytes": int,
    "ram_bytes": int,
    "clock_mhz": (int, float),
}
_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "cycles_per_mac": (int, float),
    "cycles_per_mac_source": str,
    "runtime_flash_bytes": int,
    "latency_ms": (int, float),
    "description": str,
    "cmsis_nn_isa": str,
}


@dataclass(frozen=True)
class DeviceProfile:
    """What one target offers; see ``profiles/*.toml`` for the sources of each figure."""

    name: str
    runtime: str  # "tflm" or "litert"
    flash_bytes: int
    ram_bytes: int
    clock_mhz: float
    cycles_per_mac: float | None = None
    cycles_per_mac_source: str = ""
    runtime_flash_bytes: int = 0
    latency_ms: float | None = None
    description: str = ""
    cmsis_nn_isa: str = ""  # CMSIS-NN code path: none (M0/M3), dsp (M4/M7), mve (M55/M85)
    source: str = ""  # file the profile was read from


@dataclass(frozen=True)
class BudgetRow:
    """One resource: what the model uses against what the target offers."""

    resource: str  # flash, ram, latency
    used: float
    limit: float
    unit: str  # bytes or ms
    ok: bool
    estimate: bool  # True when ``used`` rests on an estimated figure
    note: str


@dataclass(frozen=True)
class BudgetReport:
    """All rows of a budget check for one profile."""

    profile: str
    runtime: str
    rows: tuple[BudgetRow, ...]

    @property
    def ok(self) -> bool:
        """True when every resource fits."""
        return all(r.ok for r in self.rows)

    def failing(self) -> list[BudgetRow]:
        """Rows whose resource does not fit."""
        return [r for r in self.rows if not r.ok]

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """``{resource: {used, limit, ok, unit, estimate, note}}``: report["budget"]."""
        return {
            r.resource: {
                "used": r.used,
                "limit": r.limit,
                "ok": r.ok,
                "unit": r.unit,
                "estimate": r.estimate,
                "note": r.note,
            }
            for r in self.rows
        }


def list_profiles() -> list[str]:
    """Names of the built-in profiles, sorted."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """Load a built-in profile by name, or a profile TOML file by path.

    Args:
        name_or_path: ``cortex-m4`` or ``path/to/board.toml``.

    Returns:
        The validated :class:`DeviceProfile`.

    Raises:
        UnknownNameError: neither a built-in name nor an existing file.
        ConfigError: the file is not valid TOML or a key is missing, unknown or mistyped.
    """
    text = str(name_or_path)
    if text in list_profiles():
        return _load_file(PROFILE_DIR / f"{text}.toml")
    path = Path(text)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            msg = (
                f"device profile file {str(path)!r} does not exist; pass a built-in name "
                f"({', '.join(list_profiles())}) or the path of a TOML file"
            )
            raise ConfigError(msg)
        return _load_file(path)
    raise UnknownNameError(
        unknown_name_message("device profile", text, list_profiles())
        + "; or pass the path of a .toml profile"
    )


def _load_file(path: Path) -> DeviceProfile:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as e:
        msg = f"device profile {str(path)!r} is not valid TOML: {e}"
        raise ConfigError(msg) from e
    _check_keys(path, data)
    floats = {"clock_mhz", "cycles_per_mac", "latency_ms"}
    fields: dict[str, Any] = {k: float(v) if k in floats else v for k, v in data.items()}
    prof = DeviceProfile(**fields, source=str(path))
    _check_values(path, prof)
    return prof


def _check_keys(path: Path, data: dict[str, Any]) -> None:
    for key in _REQUIRED:
        if key not in data:
            msg = (
                f"device profile {str(path)!r} lacks the key {key!r}; required keys: "
                f"{', '.join(_REQUIRED)}"
            )
            raise ConfigError(msg)
    known = {**_REQUIRED, **_OPTIONAL}
    for key, value in data.items():
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            msg = (
                f"device profile {str(path)!r} has an unknown key {key!r}{hint}; "
                f"known keys: {', '.join(known)}"
            )
            raise ConfigError(msg)
        types = known[key]
        if isinstance(value, bool) or not isinstance(value, types):
            options = types if isinstance(types, tuple) else (types,)
            want = " or ".join(t.__name__ for t in options)
            msg = (
                f"device profile {str(path)!r}: key {key!r} must be {want}, got "
                f"{type(value).__name__} {value!r}"
            )
            raise ConfigError(msg)


def _check_values(path: Path, p: DeviceProfile) -> None:
    where = f"device profile {str(path)!r}"
    if p.runtime not in RUNTIMES:
        msg = f"{where}: key 'runtime' must be one of {', '.join(RUNTIMES)}, got {p.runtime!r}"
        raise ConfigError(msg)
    for key in ("flash_bytes", "ram_bytes", "clock_mhz", "cycles_per_mac", "latency_ms"):
        value = getattr(p, key)
        if value is not None and (not math.isfinite(value) or value <= 0):
            msg = f"{where}: key {key!r} must be > 0, got {value!r}"
            raise ConfigError(msg)
    if p.runtime_flash_bytes < 0:
        msg = f"{where}: key 'runtime_flash_bytes' must be >= 0, got {p.runtime_flash_bytes}"
        raise ConfigError(msg)
    if p.cmsis_nn_isa not in ("", "none", "dsp", "mve"):
        msg = f"{where}: key 'cmsis_nn_isa' must be none, dsp or mve, got {p.cmsis_nn_isa!r}"
        raise ConfigError(msg)
    if p.latency_ms is not None and p.cycles_per_mac is None:
        msg = f"{where}: key 'latency_ms' needs 'cycles_per_mac' to estimate the latency"
        raise ConfigError(msg)


def check_budget(
    profile: DeviceProfile, *, model_bytes: int, arena_bytes: int, io_bytes: int, macs: int
) -> BudgetReport:
    """Compare a model's figures with a profile.

    Args:
        profile: the target.
        model_bytes: size of the ``.tflite`` (the C array holds the same bytes).
        arena_bytes: the tensor arena to allocate (measured, plus any margin the caller adds).
        io_bytes: application buffers for inputs/outputs outside the arena (0 if none).
        macs: dense (or non-zero, for sparse kernels) multiply-accumulates per inference.

    Returns:
        A :class:`BudgetReport` with ``flash`` and ``ram`` rows, plus ``latency`` when the
        profile sets ``latency_ms``.
    """
    for key, value in {
        "model_bytes": model_bytes,
        "arena_bytes": arena_bytes,
        "io_bytes": io_bytes,
        "macs": macs,
    }.items():
        if value < 0:
            msg = f"{key} must be >= 0, got {value}"
            raise ConfigError(msg)
    flash_used = model_bytes + profile.runtime_flash_bytes
    rows = [
        BudgetRow(
            "flash",
            flash_used,
            profile.flash_bytes,
            "bytes",
            flash_used <= profile.flash_bytes,
            profile.runtime_flash_bytes > 0,
            f"model {model_bytes} B + {profile.runtime} runtime allowance "
            f"{profile.runtime_flash_bytes} B (allowance is an estimate)",
        ),
        BudgetRow(
            "ram",
            arena_bytes + io_bytes,
            profile.ram_bytes,
            "bytes",
            arena_bytes + io_bytes <= profile.ram_bytes,
            False,
            f"arena {arena_bytes} B + I/O buffers {io_bytes} B",
        ),
    ]
    if profile.latency_ms is not None and profile.cycles_per_mac is not None:
        ms = macs * profile.cycles_per_mac / (profile.clock_mhz * 1e3)
        rows.append(
            BudgetRow(
                "latency",
                ms,
                profile.latency_ms,
                "ms",
                ms <= profile.latency_ms,
                True,
                f"estimate: {macs} MACs x {profile.cycles_per_mac:g} cycles/MAC / "
                f"{profile.clock_mhz:g} MHz; "
                f"source: {profile.cycles_per_mac_source or 'not given'}",
            )
        )
    return BudgetReport(profile.name, profile.runtime, tuple(rows))
