"""Resolve the MODEL argument of every command into a PyTorch module (or an ONNX file).

MODEL is ``zoo:NAME``, ``path/to/file.py:factory``, ``package.module:factory``, a ``.pt2``
exported program or a ``.onnx`` file. Loading never unpickles arbitrary objects: ``.pt2``
archives are read with ``torch.load`` forced to ``weights_only=True``.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

from torch import nn

from firmware_export.source import LoadedModel
from tinyprune.errors import ConfigError, TinypruneError

__all__ = ["ExportedModule", "LoadedModel", "load_exported_program", "load_model"]


def load_model(spec: str, **factory_kwargs: Any) -> LoadedModel:
    """Load MODEL (see module docstring); errors are :class:`ConfigError` with the way out."""
    if spec.startswith("zoo:"):
        return _from_zoo(spec, spec[4:], factory_kwargs)
    path = Path(spec)
    if spec.endswith(".onnx"):
        _require_file(path, "ONNX model")
        return LoadedModel(name=path.stem, source=spec, onnx_path=path)
    if spec.endswith(".pt2"):
        _require_file(path, "exported program")
        module = load_exported_program(path)
        return LoadedModel(
            name=path.stem,
            source=spec,
            module=module,
            input_shape=getattr(module, "input_shape", None),
        )
    if ":" not in spec:
        msg = (
            f"cannot read MODEL {spec!r}; expected zoo:NAME, path/to/file.py:factory, "
            "package.module:factory, a .pt2 exported program or a .onnx file"
        )
        raise ConfigError(msg)
    target, factory = spec.rsplit(":", 1)
    module_obj = _import_file(Path(target)) if target.endswith(".py") else _import_module(target)
    return _call_factory(spec, module_obj, factory, factory_kwargs)


def _from_zoo(spec: str, name: str, kwargs: dict[str, Any]) -> LoadedModel:
    from tinyprune.models import create_model

    model = create_model(name, **kwargs)
    return LoadedModel(
        name=name,
        source=spec,
        module=model,
        input_shape=tuple(getattr(model, "input_shape", ())) or None,
    )


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        msg = f"{what} {str(path)!r} does not exist (or is not a file)"
        raise ConfigError(msg)


def _import_file(path: Path) -> Any:
    _require_file(path, "Python file")
    mod_name = f"_tinyprune_user_{re.sub(r'[^0-9a-zA-Z_]', '_', path.stem)}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        msg = f"cannot import {str(path)!r} as a Python module"
        raise ConfigError(msg)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit, KeyboardInterrupt) as e:  # user code may call sys.exit()
        msg = f"importing {str(path)!r} failed: {_describe(e)}"
        raise ConfigError(msg) from e
    return module


def _import_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as e:
        msg = f"cannot import module {name!r} ({e}); is it installed or on PYTHONPATH?"
        raise ConfigError(msg) from e
    except (Exception, SystemExit, KeyboardInterrupt) as e:
        msg = f"importing module {name!r} failed: {_describe(e)}"
        raise ConfigError(msg) from e


def _describe(e: BaseException) -> str:
    """``TypeError: message``; for ``SystemExit`` say that the code called ``sys.exit``."""
    if isinstance(e, SystemExit):
        return f"SystemExit: sys.exit({e.code!r}) was called (model code must not exit the process)"
    return f"{type(e).__name__}: {e}"


def _call_factory(spec: str, module_obj: Any, factory: str, kwargs: dict[str, Any]) -> LoadedModel:
    fn = getattr(module_obj, factory, None)
    if fn is None or not callable(fn):
        msg = f"{spec!r}: no callable {factory!r} in {getattr(module_obj, '__name__', module_obj)}"
        raise ConfigError(msg)
    try:
        model = fn(**kwargs)
    except TinypruneError:
        raise
    except (Exception, SystemExit, KeyboardInterrupt) as e:
        msg = f"{spec!r}: the factory {factory!r} raised {_describe(e)}"
        raise ConfigError(msg) from e
    if not isinstance(model, nn.Module):
        msg = f"{spec!r}: the factory returned {type(model).__name__}, expected a torch.nn.Module"
        raise ConfigError(msg)
    shape = getattr(model, "input_shape", None)
    return LoadedModel(
        name=factory,
        source=spec,
        module=model,
        input_shape=tuple(shape) if shape is not None else None,
    )


class ExportedModule(nn.Module):
    """Wraps ``ExportedProgram.module()``, whose ``train()``/``eval()`` raise, as a plain module.

    An exported program is already specialised for inference; switching modes is a no-op.
    """

    def __init__(self, graph_module: nn.Module) -> None:
        super().__init__()
        self.graph_module = graph_module

    def train(self, mode: bool = True) -> ExportedModule:
        """Record the mode only (the exported graph has no train/eval switch)."""
        self.training = mode
        return self

    def forward(self, *args: Any) -> Any:
        """Run the exported graph."""
        return self.graph_module(*args)


def load_exported_program(path: Path) -> nn.Module:
    """Load a ``.pt2`` written by ``torch.export.save`` as a runnable module (safely)."""
    from tinyprune.safe_load import load_pt2

    try:
        program = load_pt2(path)  # inspects the archive first: no pickles, no code
    except ConfigError:
        raise
    except Exception as e:
        msg = (
            f"cannot load exported program {str(path)!r}: {type(e).__name__}: {e}. "
            "Expected a file written by torch.export.save (tinyprune writes pruned.pt2)"
        )
        raise ConfigError(msg) from e
    module = ExportedModule(program.module())
    meta = program.example_inputs
    if meta and meta[0]:
        # torch types Module.__setattr__ for tensors and modules only; any value is allowed
        module.input_shape = tuple(meta[0][0].shape[1:])  # type: ignore[assignment]
    return module
