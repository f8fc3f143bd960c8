"""Builders of hostile input files for the security tests (written under a test's tmp_path)."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn


class SmallCnn(nn.Module):
    """Conv -> BN -> ReLU -> global mean -> Linear on (3, 8, 8)."""

    input_shape = (3, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def save_small_pt2(path: Path) -> Path:
    """``torch.export.save`` a seeded :class:`SmallCnn` to ``path``."""
    torch.manual_seed(0)
    model = SmallCnn().eval()
    torch.export.save(torch.export.export(model, (torch.randn(1, 3, 8, 8),)), str(path))
    return path


class Payload:
    """Unpickling this runs ``cmd`` through ``os.system`` (and yields a tensor)."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        code = f"__import__('os').system({self.cmd!r}) or __import__('torch').zeros(1)"
        return (eval, (code,))


def rewrite(
    src: Path,
    dest: Path,
    edit: Callable[[str, bytes], bytes | None],
    extra: dict[str, bytes] | None = None,
) -> Path:
    """Copy the archive ``src`` to ``dest``; ``edit(short_name, data)`` may replace a member."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        root = zin.namelist()[0].split("/", 1)[0]
        for info in zin.infolist():
            data = zin.read(info.filename)
            new = edit(info.filename.split("/", 1)[1], data)
            zout.writestr(info, data if new is None else new)
        for short, data in (extra or {}).items():
            zout.writestr(f"{root}/{short}", data)
    return dest


def _json_edit(member: str, fn: Callable[[dict[str, Any]], None]) -> Callable[[str, bytes], Any]:
    def edit(short: str, data: bytes) -> bytes | None:
        if short != member:
            return None
        doc = json.loads(data)
        fn(doc)
        return json.dumps(doc).encode()

    return edit


def opaque_obj_pt2(src: Path, dest: Path, marker: Path) -> Path:
    """The archive of issue 13: a constant ``opaque_obj_0`` holding a pickle that touches marker."""

    def add(doc: dict[str, Any]) -> None:
        doc["config"]["evil"] = {
            "path_name": "opaque_obj_0",
            "is_param": False,
            "use_pickle": True,
            "tensor_meta": None,
        }

    blob = pickle.dumps(Payload(f"touch {marker}"))
    return rewrite(
        src,
        dest,
        _json_edit("data/constants/model_constants_config.json", add),
        {"data/constants/opaque_obj_0": blob},
    )


def pickled_weight_pt2(src: Path, dest: Path, marker: Path) -> Path:
    """A weight marked ``use_pickle`` whose record is a full (code-running) torch pickle."""
    buf = io.BytesIO()
    torch.save(Payload(f"touch {marker}"), buf)

    def flag(doc: dict[str, Any]) -> None:
        doc["config"]["conv.weight"]["use_pickle"] = True

    def edit(short: str, data: bytes) -> bytes | None:
        if short == "data/weights/weight_0":
            return buf.getvalue()
        return _json_edit("data/weights/model_weights_config.json", flag)(short, data)

    return rewrite(src, dest, edit)


def guards_pt2(src: Path, dest: Path, marker: Path) -> Path:
    """``guards_code`` that ``ExportedProgram.module()`` would exec."""

    def add(doc: dict[str, Any]) -> None:
        doc["guards_code"] = [f"__import__('os').system('touch {marker}') == 0"]

    return rewrite(src, dest, _json_edit("models/model.json", add))


def sympy_pt2(src: Path, dest: Path, marker: Path) -> Path:
    """A tensor size whose symbolic expression ``sympy.sympify`` (``eval``) would run."""

    def add(doc: dict[str, Any]) -> None:
        values = doc["graph_module"]["graph"]["tensor_values"]
        first = next(iter(values.values()))
        expr = f"__import__('os').system('touch {marker}')"
        first["sizes"][0] = {"as_expr": {"expr_str": expr, "hint": {"as_int": 1}}}

    return rewrite(src, dest, _json_edit("models/model.json", add))


def target_pt2(src: Path, dest: Path, marker: Path) -> Path:
    """A graph node whose target resolves to ``torch.os.system`` (torch imports os)."""

    def add(doc: dict[str, Any]) -> None:
        node = doc["graph_module"]["graph"]["nodes"][0]
        node["target"] = "torch.os.system"
        node["inputs"] = [{"name": "command", "arg": {"as_string": f"touch {marker}"}, "kind": 1}]

    return rewrite(src, dest, _json_edit("models/model.json", add))


def aoti_pt2(src: Path, dest: Path, marker: Path) -> Path:
    """An archive carrying an AOTInductor folder (a shared library the loader would dlopen)."""
    del marker
    return rewrite(src, dest, lambda s, d: None, {"data/aotinductor/model/model.so": b"\x7fELF"})


HOSTILE = {
    "opaque_obj": opaque_obj_pt2,
    "pickled_weight": pickled_weight_pt2,
    "guards_code": guards_pt2,
    "sympy_expr": sympy_pt2,
    "torch_target": target_pt2,
    "aotinductor": aoti_pt2,
}
