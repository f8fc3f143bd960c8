"""CIFAR-10 from a local folder in its original "python version" pickle format.

Why: CIFAR-10 is a standard pruning benchmark, but nothing may be downloaded, so users point
tinyprune at their own copy of ``cifar-10-batches-py/``: ``data_batch_1`` .. ``data_batch_5`` and
``test_batch``, each a pickled dict with ``b"data"`` (a numpy ``uint8`` array ``(N, 3072)``:
1024 red, 1024 green, 1024 blue values, row-major 32x32) and ``b"labels"`` (list of ints 0-9).

Pickles can run arbitrary code when loaded, so these files are read with a restricted unpickler
that resolves only the few globals a numpy array needs (``_reconstruct``, ``ndarray``, ``dtype``
and ``_codecs.encode`` used by protocol-2 byte strings) and only for files with the expected names.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from numpy._core import multiarray

from tinyprune.errors import ConfigError

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32)
STD = np.array([0.2470, 0.2435, 0.2616], np.float32)
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): __import__("_codecs").encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global except those needed to rebuild numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        """Resolve ``module.name`` only if it is on the allow-list."""
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            msg = (
                f"refusing to load pickle global {module}.{name}: CIFAR-10 batches only need "
                "numpy array reconstruction; this file is not a CIFAR-10 batch"
            )
            raise ConfigError(msg) from None


def restricted_loads(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (``encoding="bytes"``)."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except ConfigError:
        raise
    except Exception as e:
        msg = f"cannot unpickle CIFAR-10 batch ({type(e).__name__}: {e})"
        raise ConfigError(msg) from e


def load_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch file into images ``uint8 [N, 32, 32, 3]`` and labels ``int64 [N]``.

    Raises:
        ConfigError: an unexpected file name, a missing file, or contents that are not a
            CIFAR-10 batch.
    """
    p = Path(path)
    if p.name not in (*TRAIN_FILES, TEST_FILE):
        msg = (
            f"{p.name!r} is not a CIFAR-10 batch name; expected one of "
            f"{', '.join((*TRAIN_FILES, TEST_FILE))}"
        )
        raise ConfigError(msg)
    if not p.is_file():
        msg = f"CIFAR-10 batch {p} not found; the folder must hold data_batch_1..5 and test_batch"
        raise ConfigError(msg)
    batch = restricted_loads(p.read_bytes())
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        msg = f"{p} is not a CIFAR-10 batch: expected a dict with keys b'data' and b'labels'"
        raise ConfigError(msg)
    data, labels = batch[b"data"], np.asarray(batch[b"labels"], np.int64)
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3072
        or data.shape[0] != labels.shape[0]
    ):
        shape = getattr(data, "shape", None)
        msg = (
            f"{p}: b'data' must be uint8 (N, 3072) with one label each; got "
            f"{getattr(data, 'dtype', type(data).__name__)} {shape} and "
            f"{labels.shape[0]} labels"
        )
        raise ConfigError(msg)
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        msg = f"{p}: labels must be in 0..9, found {labels.min()}..{labels.max()}"
        raise ConfigError(msg)
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def load_cifar10(
    root: str | Path, train_files: tuple[str, ...] = TRAIN_FILES
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load ``(train_images, train_labels), (test_images, test_labels)`` from ``root``."""
    base = Path(root)
    if not base.is_dir():
        msg = (
            f"CIFAR-10 folder {base} does not exist; point to 'cifar-10-batches-py' holding "
            "data_batch_1..5 and test_batch"
        )
        raise ConfigError(msg)
    parts = [load_batch(base / name) for name in train_files]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return train, load_batch(base / TEST_FILE)


def to_tensor_layout(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW normalised with the CIFAR-10 channel mean and std."""
    x = (images.astype(np.float32) / 255.0 - MEAN) / STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
