"""``report.json``'s typed form: :class:`ExportReport`, with a schema version.

The export builds the report as one dict (:func:`firmware_export.report.build_report_dict`);
before it is written it is read into an :class:`ExportReport`, so a report missing a figure
of the contract, or with one of the wrong type, fails at export time rather than in a
script that reads it. Code that reads a report (the fit search, the board command) reads
this class, not string keys. Figures beyond the contract stay in ``extra`` under their keys.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import Any

from tinyprune.errors import ExportError

#: Version of report.json's layout; raised when a contract key changes meaning or goes away.
REPORT_SCHEMA_VERSION = 1

_INT_FIELDS = ("flash_bytes", "arena_bytes", "arena_header_bytes", "macs", "params")


@dataclass(frozen=True)
class BudgetRow:
    """One resource of the budget check: ``used`` against ``limit``."""

    used: float
    limit: float | None
    ok: bool
    unit: str = ""
    estimate: bool = False
    note: str = ""


@dataclass(frozen=True)
class ExportReport:
    """The contract figures of ``report.json`` (docs: README, "report.json").

    Attributes:
        schema_version: :data:`REPORT_SCHEMA_VERSION` of the writer.
        target: The device profile's name.
        runtime: ``"tflm"`` or ``"litert"``.
        flash_bytes: Size of the shipped int8 model.
        arena_bytes: Smallest arena TFLM ran the model in on this host (or the bound).
        arena_header_bytes: The arena constant written in the C header.
        macs: Multiply-accumulates per inference (FLOPs = 2 x MACs).
        params: Parameters of the int8 model.
        ops: Op name -> count.
        budget: Resource -> :class:`BudgetRow`.
        budget_ok: Every row within its limit.
        verify: Comparison name -> its figures (see firmware_export.verify).
        extra: Every other key of the report, unchanged.
    """

    schema_version: int
    target: str
    runtime: str
    flash_bytes: int
    arena_bytes: int
    arena_header_bytes: int
    macs: int
    params: int
    ops: dict[str, int]
    budget: dict[str, BudgetRow]
    budget_ok: bool
    verify: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def fits(self) -> bool:
        """True when every budget row is within its limit."""
        return all(row.ok for row in self.budget.values())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExportReport:
        """Read a report dict; a missing or mistyped contract figure is an ExportError.

        A report without ``schema_version`` is read as version 1 (written before the field).
        """
        version = data.get("schema_version", 1)
        if version != REPORT_SCHEMA_VERSION:
            msg = (
                f"report.json schema_version {version!r} is not {REPORT_SCHEMA_VERSION}, the one "
                "this tinyprune reads; export again with this version"
            )
            raise ExportError(msg, stage="report")
        try:
            target = data["target"]
            ints = {k: data[k] for k in _INT_FIELDS}
            bad = [k for k, v in ints.items() if not isinstance(v, Integral) or isinstance(v, bool)]
            if bad:
                msg = f"report figures {bad} must be integers, got {[ints[k] for k in bad]}"
                raise ExportError(msg, stage="report")
            ints = {k: int(v) for k, v in ints.items()}
            budget = {k: BudgetRow(**row) for k, row in data["budget"].items()}
            known = {"schema_version", "ops", "budget", "budget_ok", "verify"}
            report = cls(
                REPORT_SCHEMA_VERSION,
                str(target["name"]),
                str(target["runtime"]),
                **ints,
                ops={str(k): int(v) for k, v in data["ops"].items()},
                budget=budget,
                budget_ok=bool(data["budget_ok"]),
                verify=dict(data["verify"]),
                extra={k: v for k, v in data.items() if k not in known | set(_INT_FIELDS)},
            )
        except (KeyError, TypeError, AttributeError) as e:
            msg = f"report is missing or mistypes a figure of its contract: {type(e).__name__}: {e}"
            raise ExportError(msg, stage="report") from e
        return report

    @classmethod
    def load(cls, path: str | Path) -> ExportReport:
        """Read ``report.json`` (a file, or the export folder holding it)."""
        p = Path(path)
        p = p / "report.json" if p.is_dir() else p
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            msg = f"cannot read {p}: {e}"
            raise ExportError(msg, stage="report") from e
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """The report dict: ``extra`` first, then the contract figures (which win)."""
        target = dict(self.extra.get("target") or {})
        target.update({"name": self.target, "runtime": self.runtime})
        out = {k: v for k, v in self.extra.items() if k != "target"}
        out.update(
            {
                "schema_version": self.schema_version,
                "target": target,
                **{k: getattr(self, k) for k in _INT_FIELDS},
                "ops": dict(self.ops),
                "budget": {k: vars(r).copy() for k, r in self.budget.items()},
                "budget_ok": self.budget_ok,
                "verify": dict(self.verify),
            }
        )
        return out
