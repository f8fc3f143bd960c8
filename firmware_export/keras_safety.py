"""Refuse Keras files and SavedModels that would run code, before anything is deserialised.

A Keras model file is a JSON config plus weights. Some layers carry code: ``Lambda`` holds
marshalled Python bytecode (tf_keras's legacy ``.h5`` loader runs it with no safe mode), the
new-format deserialisers import any module a config names, and a SavedModel graph may call
Python (``PyFunc``) or touch files (``WriteFile``, ``SaveV2`` outside the saver). This module
reads the configs as plain JSON (h5py for ``.h5``, the zip for ``.keras``, the protobufs for a
SavedModel) and raises :class:`ConfigError` naming the layer and ``--trust-model-code``.

It also tells which TF-MOT layers a config holds, so the loader can pick TF-MOT's scope.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinyprune.errors import ConfigError

TRUST_FLAG = "--trust-model-code"
#: Layers / serialised objects whose config is (or loads) executable Python.
CODE_CLASSES = frozenset({"Lambda", "__lambda__", "TorchModuleWrapper", "JaxLayer", "FlaxLayer"})
#: TF-MOT quantization-aware-training layers (load inside ``quantize_scope``).
TFMOT_QAT_CLASSES = frozenset({"QuantizeLayer", "QuantizeWrapper", "QuantizeWrapperV2"})
TFMOT_PRUNE_CLASSES = frozenset({"PruneLowMagnitude"})
#: Modules a config may name: the Keras packages, JSON built-ins and TF-MOT (its QAT layers
#: serialise their activations with the module path).
SAFE_MODULE_ROOTS = ("keras", "tf_keras", "builtins", "tensorflow_model_optimization")
#: Graph ops that run Python or read/write files: no model needs them on a microcontroller.
UNSAFE_OPS = frozenset(
    {
        "PyFunc",
        "PyFuncStateless",
        "EagerPyFunc",
        "WriteFile",
        "ReadFile",
        "MatchingFiles",
        "ImmutableConst",
        "Save",
        "SaveSlices",
    }
)
#: Checkpoint writers: allowed only in the SavedModel's own saver functions.
SAVER_OPS = frozenset({"SaveV2", "MergeV2Checkpoints"})


@dataclass
class ConfigScan:
    """What a Keras config holds: code-carrying objects, foreign modules, TF-MOT layers."""

    code: list[str] = field(default_factory=list)  # "Lambda layer 'lambda'"
    modules: list[str] = field(default_factory=list)  # "module 'os' (class 'system')"
    tfmot_qat: bool = False
    tfmot_prune: bool = False


def _objects(obj: Any) -> Iterator[dict[str, Any]]:
    """Every dict with a ``class_name`` (a serialised Keras object) inside ``obj``."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("class_name"), str):
                yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def scan_config(config: Any) -> ConfigScan:
    """Walk a Keras JSON config (already parsed) without deserialising anything."""
    scan = ConfigScan()
    for obj in _objects(config):
        cls = obj["class_name"]
        inner = obj.get("config")
        name = inner.get("name") if isinstance(inner, dict) else None
        label = f"{cls} layer {name!r}" if name else f"{cls} object"
        if cls in CODE_CLASSES:
            scan.code.append(label)
        scan.tfmot_qat |= cls in TFMOT_QAT_CLASSES
        scan.tfmot_prune |= cls in TFMOT_PRUNE_CLASSES
        module = obj.get("module")
        if isinstance(module, str) and module.split(".")[0] not in SAFE_MODULE_ROOTS:
            scan.modules.append(f"module {module!r} ({label})")
    return scan


def _parse_json(text: bytes | str, what: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        msg = f"{what} is not valid JSON ({e}); re-save the model with Keras"
        raise ConfigError(msg) from e


def read_h5_config(path: Path) -> Any:
    """The ``model_config`` attribute of a Keras ``.h5`` file (h5py; nothing deserialised)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
    except OSError as e:
        msg = f"{str(path)!r} is not a readable HDF5 file ({e}); save it with model.save('m.h5')"
        raise ConfigError(msg) from e
    if raw is None:
        msg = (
            f"{str(path)!r} holds no model_config (a weights-only .h5?); "
            "save the whole model with model.save('model.h5')"
        )
        raise ConfigError(msg)
    return _parse_json(raw, f"the model_config of {str(path)!r}")


def read_keras_zip_config(path: Path) -> Any:
    """``config.json`` of a ``.keras`` zip."""
    try:
        with zipfile.ZipFile(path) as zf:
            raw = zf.read("config.json")
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        msg = (
            f"{str(path)!r} is not a readable .keras file ({type(e).__name__}: {e}); "
            "save it with model.save('model.keras')"
        )
        raise ConfigError(msg) from e
    return _parse_json(raw, f"config.json of {str(path)!r}")


def refuse_code(scan: ConfigScan, source: str, trust: bool) -> None:
    """Raise :class:`ConfigError` if ``scan`` found code and the user did not trust it."""
    found = scan.code + scan.modules
    if not found or trust:
        return
    msg = (
        f"{source} holds code that would run when it is loaded: {', '.join(found[:5])}"
        f"{' ...' if len(found) > 5 else ''}. Rebuild the model without it (plain layers), "
        f"or pass {TRUST_FLAG} if you trust the file's author"
    )
    raise ConfigError(msg)


__all__ = [
    "TRUST_FLAG",
    "ConfigScan",
    "read_h5_config",
    "read_keras_zip_config",
    "refuse_code",
    "scan_config",
]
