r"""Static inspection of a ``.pt2`` archive before ``torch.export.load`` may see it.

torch 2.13's loader (``torch/export/pt2_archive/_package.py`` and ``_export/serde``) runs
code from the file on several paths besides ``torch.load``:

- constants whose ``data/constants/*_constants_config.json`` entry names an
  ``opaque_obj_*`` file go through plain ``pickle.loads``; ``custom_obj_*`` files through
  the TorchScript unpickler; ``use_pickle: true`` weights/constants through
  ``torch.load(weights_only=False)``;
- ``data/aotinductor/`` holds compiled shared libraries that the loader ``dlopen``\\ s;
- legacy ``data/weights/<model>.pt`` / ``data/constants/<model>.pt`` files and the sample
  inputs are unpickled (weights-only first, then a full unpickle as a fallback);
- every symbolic shape expression (``expr_str``) goes through ``sympy.sympify``, i.e. ``eval``;
- ``guards_code`` strings are compiled and ``exec``-ed by ``ExportedProgram.module()``;
- graph node targets are looked up by walking attributes of the ``torch`` module.

This module reads the archive with :mod:`zipfile` and :mod:`json` only and refuses every
member, entry and string outside what ``torch.export.save`` writes for a plain
``nn.Module`` with static shapes: tensors, aten operators, identifiers and integer
arithmetic. It imports neither torch nor sympy, so it is cheap enough to fuzz.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterator
from typing import Any

from tinyprune.errors import ConfigError

#: Largest archive member count and expression length accepted (sanity bounds).
MAX_MEMBERS = 100_000
MAX_EXPR_CHARS = 2_000

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FQN = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*")
_MODEL = r"[A-Za-z_][A-Za-z0-9_]*"
_MEMBERS = (
    re.compile(r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"),
    re.compile(rf"models/{_MODEL}\.json"),
    re.compile(rf"data/weights/{_MODEL}_weights_config\.json"),
    re.compile(r"data/weights/weight_\d+"),
    re.compile(rf"data/constants/{_MODEL}_constants_config\.json"),
    re.compile(r"data/constants/tensor_\d+"),
    re.compile(rf"data/sample_inputs/{_MODEL}\.pt"),
    re.compile(r"extra/[A-Za-z0-9_.\-/]+"),  # read by torch as text only
)
#: Members torch would execute or unpickle, with the reason named in the error.
_DANGEROUS = (
    ("data/aotinductor/", "an AOTInductor package (compiled native code the loader would load)"),
    ("data/constants/opaque_obj_", "a pickled opaque object (torch unpickles it with pickle)"),
    ("data/constants/custom_obj_", "a TorchScript custom object (run by its unpickler)"),
    ("data/executorch/", "an ExecuTorch payload"),
    ("data/mtia", "an MTIA payload"),
    ("xl_model_weights/", "externally stored weights"),
)

_OPERATOR_FNS = frozenset(
    [
        "getitem",
        "add",
        "sub",
        "mul",
        "floordiv",
        "truediv",
        "mod",
        "neg",
        "pos",
        "pow",
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
        "and_",
        "or_",
        "not_",
        "abs",
    ]
)
_TORCH_FNS = frozenset(
    ["sym_max", "sym_min", "sym_float", "sym_int", "sym_not", "sym_ite", "sym_sum", "_sym_sqrt"]
)
_MATH_FNS = frozenset(["ceil", "floor", "trunc", "sqrt"])
_ATEN = re.compile(r"torch\.ops\.aten\.([A-Za-z_][A-Za-z0-9_]*)\.[A-Za-z_][A-Za-z0-9_]*")

# Symbolic shapes: symbols (s0, u3, ...), the functions torch's deserializer defines, integers,
# arithmetic and comparisons. No quotes, attributes, subscripts, '**' or dunder names.
_SYM_FUNCS = frozenset(
    [
        "FloorDiv",
        "ModularIndexing",
        "Where",
        "PythonMod",
        "Mod",
        "CleanDiv",
        "CeilToInt",
        "FloorToInt",
        "CeilDiv",
        "LShift",
        "RShift",
        "FloatTrueDiv",
        "IntTrueDiv",
        "IsNonOverlappingAndDenseIndicator",
        "TruncToFloat",
        "TruncToInt",
        "RoundToInt",
        "RoundDecimal",
        "ToFloat",
        "Identity",
        "Max",
        "Min",
        "Eq",
        "Ne",
        "Lt",
        "Le",
        "Gt",
        "Ge",
        "And",
        "Or",
        "Not",
        "Abs",
        "floor",
        "ceiling",
        "oo",
        "True",
        "False",
    ]
)
_SYM_TOKEN = re.compile(
    r"\s+|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<num>\d{1,20}(?:\.\d{1,20})?)"
    r"|(?P<op>==|!=|<=|>=|//|[-+*/%(),<>&|~])"
)
_SYMBOL = re.compile(r"[a-z]\d{1,9}")
# Guards: L['x'].size()[0] == 3 and the like, joined by and/or/not and integer arithmetic.
_GUARD_TOKEN = re.compile(
    r"\s+|L\['[A-Za-z_][A-Za-z0-9_]*'\]|\.(?:size|stride|storage_offset|dim)\(\)|\[\d{1,9}\]"
    r"|\d{1,20}|==|!=|<=|>=|//|[-+*%()<>]|\b(?:and|or|not)\b"
)


def check_pt2_bytes(data: bytes, source: str) -> None:
    """Refuse ``data`` unless it is a plain ``torch.export.save`` archive (see module doc).

    Raises:
        ConfigError: naming ``source`` and why; the file would run code or is not a ``.pt2``.
    """
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except Exception as e:  # noqa: BLE001 - zipfile raises many types on corrupt input
        raise _refuse(source, f"it is not a zip archive ({e})", hostile=False) from e
    with zf:
        names = _check_members(infos, source)
        _check_crc(zf, source)
        files = dict(names)
        for short, full in names:
            if short.startswith("models/"):
                _check_model_json(_read_json(zf, full, source), source, full)
            elif short.endswith("_config.json"):
                kind = "weight" if short.startswith("data/weights/") else "tensor"
                _check_payload(_read_json(zf, full, source), kind, zf, files, source, short)
    if "models/model.json" not in files:
        raise _refuse(source, "it holds no models/model.json (not written by torch.export.save)")


def _refuse(source: str, why: str, *, hostile: bool = True) -> ConfigError:
    if hostile:
        way = (
            "tinyprune loads only archives that torch.export.save writes for a plain nn.Module "
            "(tensors, aten ops, static shapes), because anything else can run code on this "
            "machine; re-export the model, or pass its Python source (file.py:factory) if you "
            "trust it"
        )
    else:
        way = "expected a file written by torch.export.save (tinyprune writes pruned.pt2)"
    return ConfigError(f"refusing to load exported program {source!r}: {why}; {way}")


def _check_members(infos: list[zipfile.ZipInfo], source: str) -> list[tuple[str, str]]:
    if not infos or len(infos) > MAX_MEMBERS:
        raise _refuse(source, f"it has {len(infos)} members", hostile=False)
    roots = {i.filename.split("/", 1)[0] for i in infos}
    if len(roots) != 1 or any("/" not in i.filename for i in infos):
        raise _refuse(source, f"its members do not share one top folder ({sorted(roots)[:3]})")
    out, seen = [], set()
    for info in infos:
        short = info.filename.split("/", 1)[1]
        if short in seen:
            raise _refuse(source, f"member {info.filename!r} appears twice")
        seen.add(short)
        for prefix, what in _DANGEROUS:
            if short.startswith(prefix):
                raise _refuse(source, f"member {info.filename!r} is {what}")
        if ".." in short.split("/") or "\\" in short:
            raise _refuse(source, f"member {info.filename!r} has a path outside the archive")
        if not any(p.fullmatch(short) for p in _MEMBERS):
            raise _refuse(source, f"member {info.filename!r} is not part of a torch.export archive")
        if info.compress_type != zipfile.ZIP_STORED:
            raise _refuse(source, f"member {info.filename!r} is compressed", hostile=False)
        out.append((short, info.filename))
    return out


def _check_crc(zf: zipfile.ZipFile, source: str) -> None:
    try:
        bad = zf.testzip()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError) as e:
        raise _refuse(source, f"the archive is corrupt ({e})", hostile=False) from e
    if bad is not None:
        raise _refuse(source, f"member {bad!r} is corrupt (CRC mismatch)", hostile=False)


def _read_json(zf: zipfile.ZipFile, name: str, source: str) -> Any:
    try:
        return json.loads(zf.read(name).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise _refuse(source, f"{name!r} is not valid JSON ({e})", hostile=False) from e


def _check_payload(
    doc: Any, kind: str, zf: zipfile.ZipFile, files: dict[str, str], source: str, where: str
) -> None:
    """A weights/constants config: tensors stored raw, never pickled, in named records."""
    config = doc.get("config") if isinstance(doc, dict) else None
    if not isinstance(config, dict):
        raise _refuse(source, f"{where!r} has no 'config' table", hostile=False)
    folder = "data/weights/" if kind == "weight" else "data/constants/"
    for fqn, meta in config.items():
        if not isinstance(meta, dict) or not _FQN.fullmatch(str(fqn)):
            raise _refuse(source, f"{where!r}: entry {str(fqn)[:80]!r} is malformed")
        path = meta.get("path_name")
        if meta.get("use_pickle") is not False:
            raise _refuse(source, f"{where!r}: {fqn!r} is stored as a pickle (use_pickle)")
        if not isinstance(path, str) or not re.fullmatch(rf"{kind}_\d+", path):
            raise _refuse(source, f"{where!r}: {fqn!r} points at {str(path)[:80]!r}, not a tensor")
        if folder + path not in files:
            raise _refuse(
                source, f"{where!r}: {fqn!r} names a missing record {path!r}", hostile=False
            )
        _check_tensor_meta(
            meta.get("tensor_meta"),
            zf.getinfo(files[folder + path]).file_size,
            source,
            f"{where}: {fqn}",
        )


def _check_tensor_meta(meta: Any, nbytes: int, source: str, where: str) -> None:
    if not isinstance(meta, dict):
        raise _refuse(source, f"{where!r} has no tensor_meta", hostile=False)
    dims = meta.get("sizes")
    if not isinstance(dims, list) or not all(
        isinstance(d, dict) and isinstance(d.get("as_int"), int) and 0 <= d["as_int"] < 2**40
        for d in dims
    ):
        raise _refuse(source, f"{where!r} has sizes that are not plain non-negative integers")
    numel = 1
    for d in dims:
        numel *= d["as_int"]
    if nbytes == 0 and numel > 0:  # torch would allocate zeros of the declared size
        raise _refuse(source, f"{where!r} declares {numel} elements but stores none", hostile=False)


def _walk(node: Any, depth: int = 0) -> Iterator[tuple[str, Any, Any]]:
    """(key, value, owning dict) for every mapping entry of a JSON document."""
    if depth > 200:
        msg = "JSON nested too deep"
        raise RecursionError(msg)
    if isinstance(node, dict):
        for k, v in node.items():
            yield k, v, node
            yield from _walk(v, depth + 1)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v, depth + 1)


def _check_model_json(doc: Any, source: str, where: str) -> None:
    if not isinstance(doc, dict) or not isinstance(doc.get("graph_module"), dict):
        raise _refuse(source, f"{where!r} is not a serialized ExportedProgram", hostile=False)
    for guard in doc.get("guards_code") or []:
        if not isinstance(guard, str) or not _tokens_ok(_GUARD_TOKEN, guard, None):
            raise _refuse(source, f"{where!r}: guard {str(guard)[:80]!r} is not a shape check")
    try:
        for key, value, owner in _walk(doc):
            _check_entry(key, value, owner, source, where)
    except RecursionError as e:
        raise _refuse(source, f"{where!r} is nested too deeply", hostile=False) from e


def _check_entry(key: str, value: Any, owner: dict[str, Any], source: str, where: str) -> None:
    if key == "expr_str":
        if not isinstance(value, str) or not _sym_expr_ok(value):
            raise _refuse(
                source,
                f"{where!r}: symbolic expression {str(value)[:80]!r} is not "
                "integer arithmetic (torch would eval it)",
            )
    elif key == "target" and "inputs" in owner or key == "as_operator":
        if not isinstance(value, str) or not target_ok(value):
            raise _refuse(source, f"{where!r}: operator {str(value)[:80]!r} is not an aten op")
    elif key in ("as_custom_obj", "custom_obj_name", "as_graph") and value:
        raise _refuse(source, f"{where!r} holds a {key} (custom objects or subgraphs)")
    elif key in ("parameter_name", "buffer_name", "tensor_constant_name"):
        if not isinstance(value, str) or not _FQN.fullmatch(value):
            raise _refuse(source, f"{where!r}: {key} {str(value)[:80]!r} is not a module path")
    elif key == "name" and isinstance(value, str) and not _IDENT.fullmatch(value):
        raise _refuse(source, f"{where!r}: name {value[:80]!r} is not an identifier")


def target_ok(target: str) -> bool:
    """True for the operator names a plain exported ``nn.Module`` uses (aten, _operator, sym)."""
    m = _ATEN.fullmatch(target)
    if m:
        return "file" not in m.group(1) and not m.group(1).startswith("__")
    module, _, name = target.partition(".")
    allowed = {"_operator": _OPERATOR_FNS, "torch": _TORCH_FNS, "math": _MATH_FNS}
    return name in allowed.get(module, ())


def _sym_expr_ok(expr: str) -> bool:
    if len(expr) > MAX_EXPR_CHARS or "**" in expr:
        return False
    return _tokens_ok(_SYM_TOKEN, expr, lambda n: n in _SYM_FUNCS or bool(_SYMBOL.fullmatch(n)))


def _tokens_ok(pattern: re.Pattern[str], text: str, name_ok: Any) -> bool:
    if len(text) > MAX_EXPR_CHARS:
        return False
    pos = 0
    while pos < len(text):
        m = pattern.match(text, pos)
        if m is None or m.end() == pos:
            return False
        name = m.groupdict().get("name")
        if name is not None and not name_ok(name):
            return False
        pos = m.end()
    return True


__all__ = ["check_pt2_bytes", "target_ok"]
