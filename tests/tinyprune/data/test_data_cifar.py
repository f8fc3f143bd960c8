"""CIFAR-10 python-pickle batches: fixture written in the real format, restricted unpickler."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from tinyprune.data import build_dataset, cifar
from tinyprune.errors import ConfigError


def _write_batches(root: Path, n: int = 6) -> dict[str, tuple[np.ndarray, list[int]]]:
    rng = np.random.default_rng(0)
    written = {}
    for name in (*cifar.TRAIN_FILES, cifar.TEST_FILE):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        doc = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"img{i}.png".encode() for i in range(n)],
        }
        (root / name).write_bytes(pickle.dumps(doc, protocol=2))
        written[name] = (data, labels)
    return written


def test_batches_read_back_in_hwc_order(tmp_path: Path) -> None:
    written = _write_batches(tmp_path)
    images, labels = cifar.load_batch(tmp_path / "data_batch_3")
    data, want = written["data_batch_3"]
    assert images.shape == (6, 32, 32, 3) and images.dtype == np.uint8
    assert labels.tolist() == want
    # first 1024 bytes are the red plane, row-major
    assert np.array_equal(images[2, :, :, 0].ravel(), data[2, :1024])
    assert np.array_equal(images[2, 1, 5, 2], data[2, 2048 + 32 + 5])


def test_build_cifar10_bundle(tmp_path: Path) -> None:
    _write_batches(tmp_path)
    bundle = build_dataset(f"cifar10:{tmp_path}", val_fraction=0.2)
    assert bundle.input_shape == (3, 32, 32) and bundle.num_classes == 10
    assert len(bundle.train) + len(bundle.val) == 30 and len(bundle.test) == 6
    x, y = bundle.train[0]
    assert x.dtype.is_floating_point and tuple(x.shape) == (3, 32, 32) and 0 <= int(y) <= 9


class _Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("echo pwned > /dev/null",))


def test_restricted_unpickler_refuses_code_execution(tmp_path: Path) -> None:
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": _Evil()}, protocol=2))
    with pytest.raises(ConfigError, match="refusing to load pickle global"):
        cifar.load_batch(tmp_path / "data_batch_1")


def test_refuses_unexpected_file_names(tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ConfigError, match="not a CIFAR-10 batch name"):
        cifar.load_batch(tmp_path / "model.pkl")


@pytest.mark.parametrize(
    "doc,match",
    [
        ({b"labels": [1]}, "expected a dict with keys"),
        ({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, r"uint8 \(N, 3072\)"),
        ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [12]}, "labels must be in 0..9"),
    ],
)
def test_malformed_batches(tmp_path: Path, doc: dict[bytes, object], match: str) -> None:
    (tmp_path / "test_batch").write_bytes(pickle.dumps(doc, protocol=2))
    with pytest.raises(ConfigError, match=match):
        cifar.load_batch(tmp_path / "test_batch")


def test_missing_folder_and_missing_batch(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        cifar.load_cifar10(tmp_path / "none")
    with pytest.raises(ConfigError, match="data_batch_1 not found"):
        cifar.load_cifar10(tmp_path)
