"""Digits bundle and the common DataBundle API (build_dataset, loaders, calibration)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinyprune.data import build_dataset, dataset_names
from tinyprune.data.digits import load_digits
from tinyprune.errors import ConfigError, UnknownNameError


@pytest.mark.parametrize("size", [8, 16, 28])
def test_digits_shapes_and_stratified_split(size: int) -> None:
    (xtr, ytr), (xte, yte) = load_digits(size=size, test_fraction=0.25, seed=1)
    assert xtr.shape[1:] == (1, size, size) and xtr.dtype == np.float32
    assert len(xtr) + len(xte) == 1797 and len(xte) == 450
    assert xtr.min() >= 0.0 and xtr.max() <= 1.0
    assert set(np.unique(yte)) == set(range(10))
    per_class = np.bincount(np.concatenate([ytr, yte]))
    assert np.all(np.abs(np.bincount(yte) - 0.25 * per_class) <= 1)  # stratified


def test_digits_split_depends_on_seed_only() -> None:
    a = load_digits(seed=3)[1][1]
    assert np.array_equal(a, load_digits(seed=3)[1][1])
    assert not np.array_equal(a, load_digits(seed=4)[1][1])


def test_digits_bad_options() -> None:
    with pytest.raises(ConfigError, match="size must be one of"):
        load_digits(size=12)
    with pytest.raises(ConfigError, match="test_fraction"):
        load_digits(test_fraction=1.5)


def test_bundle_loaders_are_seeded() -> None:
    bundle = build_dataset("digits")
    assert dataset_names() == ["cifar10", "digits", "pure", "synthetic-rppg", "ubfc"]
    assert bundle.task == "classification" and bundle.num_classes == 10
    first = next(iter(bundle.loaders(batch_size=16, seed=7).train))[1]
    again = next(iter(bundle.loaders(batch_size=16, seed=7).train))[1]
    other = next(iter(bundle.loaders(batch_size=16, seed=8).train))[1]
    assert torch.equal(first, again) and not torch.equal(first, other)
    xb, yb = next(iter(bundle.loaders(batch_size=5).test))
    assert xb.shape == (5, 1, 8, 8) and yb.dtype == torch.int64


def test_calibration_batches_deterministic() -> None:
    bundle = build_dataset("digits", size=16)
    cal = bundle.calibration_batches(20)
    assert cal.shape == (20, 1, 16, 16) and cal.dtype == np.float32
    assert np.array_equal(cal, bundle.calibration_batches(20))
    with pytest.raises(ConfigError, match="calibration needs"):
        bundle.calibration_batches(10_000)


def test_unknown_and_malformed_specs() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'digits'"):
        build_dataset("digit")
    with pytest.raises(ConfigError, match="needs a folder"):
        build_dataset("pure")
    with pytest.raises(ConfigError, match="takes no path"):
        build_dataset("digits:/tmp")
