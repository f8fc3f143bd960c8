"""One loading layer for the files a user hands tinyprune: no file runs code.

- ``.pt2`` exported programs: the archive is inspected first (:mod:`tinyprune.pt2_check`
  refuses pickled constants, custom objects, compiled code, non-aten operators and code-like
  strings), then loaded from the checked bytes with every unpickling path of torch's loader
  closed: ``torch.load`` forced to ``weights_only=True``; ``pickle.loads``, the TorchScript
  object unpickler and the AOTInductor loader replaced by refusals.
- checkpoints and masks: ``torch.load(weights_only=True)`` (:func:`torch_load_weights_only`).
- ``.npy``: ``numpy.load(allow_pickle=False)`` (:func:`load_npy`).
- ``.onnx``: external data must be plain files inside the model's folder
  (:func:`check_onnx_external_data`); nothing else in an ONNX file is executable.
- CIFAR-10 pickles: :class:`tinyprune.data.cifar.RestrictedUnpickler` (numpy arrays only).

torch, numpy and onnx are imported lazily, inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tinyprune.errors import ConfigError
from tinyprune.pt2_check import check_pt2_bytes


def load_pt2(path: str | os.PathLike[str]) -> Any:
    """Return the ``torch.export.ExportedProgram`` in ``path``, loaded without running its code.

    Raises:
        ConfigError: the file is missing, not a ``.pt2``, or holds anything that could run
            code (the message names the file and the member or entry).
    """
    src = Path(path)
    if not src.is_file():
        msg = f"exported program {str(src)!r} does not exist (or is not a file)"
        raise ConfigError(msg)
    try:
        data = src.read_bytes()
    except OSError as e:
        msg = f"cannot read exported program {str(src)!r}: {e.strerror}"
        raise ConfigError(msg) from e
    check_pt2_bytes(data, str(src))  # torch only ever sees these checked bytes
    import torch

    try:
        with _closed_unpickling():
            return torch.export.load(io.BytesIO(data))
    except ConfigError:
        raise
    except Exception as e:  # torch raises assorted errors on a corrupt archive
        first = (str(e).strip().splitlines() or [""])[0][:300]
        msg = (
            f"cannot load exported program {str(src)!r}: {type(e).__name__}: {first}. "
            "Expected a file written by torch.export.save (tinyprune writes pruned.pt2)"
        )
        raise ConfigError(msg) from e


class _Refuse:
    """Stand-in for an unpickling entry point: raises instead of running the payload."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        msg = f"refusing to unpickle {self.what} from an exported program; it could run code"
        raise ConfigError(msg)

    def loads(self, *args: Any, **kwargs: Any) -> Any:  # for the ``pickle`` module stand-in
        return self(*args, **kwargs)


@contextlib.contextmanager
def _closed_unpickling() -> Iterator[None]:
    """Close every code-running path of torch 2.13's ``.pt2`` loader for the block.

    The static check already refuses archives that would reach these; this is the second
    line, in case a torch update adds a path the check does not know.
    """
    import torch
    from torch.export.pt2_archive import _package

    patches = [
        (torch, "load", _weights_only(torch.load)),
        (_package, "pickle", _Refuse("a pickled object")),
        (_package, "_load_aoti", _Refuse("an AOTInductor package")),
        (torch._C, "_pickle_load_obj", _Refuse("a TorchScript custom object")),
    ]
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    try:
        for obj, name, value in patches:
            setattr(obj, name, value)
        yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)


def _weights_only(original: Any) -> Any:
    @functools.wraps(original)
    def load(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return original(*args, **kwargs)

    return load


def torch_load_weights_only(path: str | os.PathLike[str], *, what: str = "torch file") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with a clear error.

    Raises:
        ConfigError: missing, corrupt, or holding objects outside torch's weights-only allowlist.
    """
    import torch

    src = Path(path)
    if not src.is_file():
        msg = f"{what} {str(src)!r} does not exist or is not a file"
        raise ConfigError(msg)
    try:
        return torch.load(src, map_location="cpu", weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        OSError,
        ValueError,
    ) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        msg = (
            f"cannot load {what} {str(src)!r} with weights_only=True: {first}. The file is "
            "corrupt, not a torch file, or holds objects other than tensors and plain data"
        )
        raise ConfigError(msg) from e


def load_npy(path: str | os.PathLike[str], *, what: str = "array") -> Any:
    """``numpy.load(path, allow_pickle=False)``; any failure is a :class:`ConfigError`."""
    import numpy as np

    src = Path(path)
    if not src.is_file():
        msg = f"{what} file {str(src)!r} does not exist"
        raise ConfigError(msg)
    try:
        data = np.load(src, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - numpy raises many types on corrupt headers
        msg = f"cannot read {what} file {str(src)!r} as a .npy array ({e}); save it with numpy.save"
        raise ConfigError(msg) from e
    if not isinstance(data, np.ndarray):  # .npz archives
        msg = f"{what} file {str(src)!r} is an .npz archive; save one array with numpy.save"
        raise ConfigError(msg)
    return data


def check_onnx_external_data(proto: Any, model_path: str | os.PathLike[str]) -> None:
    """Refuse external-data references that leave the model's folder or exceed their file.

    ``proto`` must have been loaded with ``load_external_data=False``.

    Raises:
        ConfigError: naming the tensor and its ``location``.
    """
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

    base = Path(model_path).resolve().parent
    for tensor in _get_all_tensors(proto):
        if not uses_external_data(tensor):
            continue
        info = ExternalDataInfo(tensor)
        where = f"ONNX model {str(model_path)!r}: tensor {tensor.name!r}"
        loc = str(info.location or "")
        target = (base / loc).resolve()
        if (
            not loc
            or os.path.isabs(loc)
            or ".." in Path(loc).parts
            or not target.is_relative_to(base)
        ):
            msg = (
                f"{where} keeps its data at {loc!r}, outside the model's folder {str(base)!r}; "
                "external data must be a file beside the .onnx (no absolute paths, no '..')"
            )
            raise ConfigError(msg)
        if not target.is_file():
            msg = f"{where} keeps its data in {loc!r}, which does not exist beside the model"
            raise ConfigError(msg)
        size = target.stat().st_size
        offset, length = int(info.offset or 0), info.length
        if offset < 0 or offset > size or (length is not None and offset + int(length) > size):
            msg = f"{where}: offset {offset} / length {length} lie outside {loc!r} ({size} bytes)"
            raise ConfigError(msg)


def load_onnx_file(path: str | os.PathLike[str]) -> Any:
    """Read a user's ``.onnx`` (and its checked external data) into a ``ModelProto``.

    Raises:
        ConfigError: unreadable, not ONNX, or external data outside the model's folder.
    """
    import onnx
    from onnx.external_data_helper import load_external_data_for_model

    src = Path(path)
    try:
        proto = onnx.load(str(src), load_external_data=False)
    except Exception as e:  # protobuf DecodeError, OSError, ...
        msg = f"cannot read ONNX model {str(src)!r}: {type(e).__name__}: {_first_line(e)}"
        raise ConfigError(msg) from e
    check_onnx_external_data(proto, src)
    try:
        load_external_data_for_model(proto, str(src.resolve().parent))
    except Exception as e:
        msg = f"cannot read the external data of ONNX model {str(src)!r}: {_first_line(e)}"
        raise ConfigError(msg) from e
    return proto


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


__all__ = [
    "check_onnx_external_data",
    "load_npy",
    "load_onnx_file",
    "load_pt2",
    "torch_load_weights_only",
]
