"""Every notebook runs top to bottom (code cells executed in order in one namespace)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


@pytest.mark.tf
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path) -> None:
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, "a notebook without code"
    assert all(not c.get("outputs") for c in code), "commit notebooks with outputs stripped"
    namespace: dict[str, object] = {"__name__": "__notebook__"}
    for i, cell in enumerate(code):
        exec(compile("".join(cell["source"]), f"{path.name}[{i}]", "exec"), namespace)  # noqa: S102
