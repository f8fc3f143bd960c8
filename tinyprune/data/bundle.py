"""The one object every data set is returned as: :class:`DataBundle`.

Why: training, pruning criteria (which need calibration batches), int8 export (representative
data) and evaluation (per-clip HR for rPPG) all consume data the same way, whatever its source.
A bundle holds torch Datasets plus what a caller must know to build a model for it (task,
per-sample input shape in PyTorch layout, number of classes, frame rate).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from tinyprune.errors import ConfigError

TASKS = ("classification", "rppg")


class ArrayDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """In-memory samples ``x[i]`` (float32) with labels ``y[i]`` (int64 classes or float32 BVP)."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        if len(x) != len(y):
            msg = f"{len(x)} samples but {len(y)} labels; they must match"
            raise ConfigError(msg)
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        self.y = np.ascontiguousarray(y)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.x[i]), torch.from_numpy(np.asarray(self.y[i]))


class ClipDataset(ArrayDataset):
    """rPPG clips ``float32 (C, T, H, W)`` with BVP labels ``(T,)`` and HR ground truth.

    Attributes:
        hr_bpm: Ground-truth HR of each clip (bpm). For PURE/UBFC this is the label HR of the
            clip's whole video (:func:`tinyprune.data.labels.label_hr`), the same for every clip of
            a video; for synthetic videos the generator's mean HR over the clip.
        video: Index of the source video of each clip (clips of one video are consecutive).
        fs: Frame rate.
        device_hr: The recording device's HR (bpm) of each clip's video, nan where the format
            has none (synthetic videos).
        video_names: Name of each video index (``"01-01"``, ``"subject5"``, ...).
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        hr_bpm: np.ndarray,
        video: np.ndarray,
        fs: float,
        device_hr: np.ndarray | None = None,
        video_names: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__(x, np.asarray(y, np.float32))
        if len(hr_bpm) != len(x) or len(video) != len(x):
            msg = f"need one HR and one video index per clip: {len(x)} clips, {len(hr_bpm)} HR"
            raise ConfigError(msg)
        self.hr_bpm = np.asarray(hr_bpm, np.float64)
        self.video = np.asarray(video, np.int64)
        self.fs = float(fs)
        dev = np.full(len(x), np.nan) if device_hr is None else np.asarray(device_hr, np.float64)
        if dev.shape != (len(x),):
            msg = f"need one device HR per clip: {len(x)} clips, {dev.shape} device HRs"
            raise ConfigError(msg)
        self.device_hr = dev
        n_videos = int(self.video.max()) + 1 if len(x) else 0
        self.video_names = tuple(video_names or (f"video{k}" for k in range(n_videos)))

    def clip_hr(self, i: int) -> float:
        """Ground-truth HR (bpm) of clip ``i``."""
        return float(self.hr_bpm[i])


class Loaders(NamedTuple):
    """Train / validation / test DataLoaders."""

    train: DataLoader
    val: DataLoader
    test: DataLoader


@dataclass(frozen=True)
class DataBundle:
    """A data set ready for training, calibration and evaluation.

    Attributes:
        name: The spec it was built from (e.g. ``"digits"``).
        task: ``"classification"`` or ``"rppg"``.
        train, val, test: torch Datasets yielding ``(input, label)``.
        input_shape: Per-sample input shape in PyTorch layout (``(C, H, W)`` or ``(C, T, H, W)``).
        num_classes: Classes for classification, ``None`` for rPPG.
        fs: Frame rate for rPPG, ``None`` otherwise.
        extras: Further named evaluation sets (e.g. ``"real_ppg"``).
        info: Small JSON-able description (sizes, seeds, options).
    """

    name: str
    task: str
    train: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset
    input_shape: tuple[int, ...]
    num_classes: int | None = None
    fs: float | None = None
    extras: Mapping[str, ArrayDataset] = field(default_factory=dict)
    info: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            msg = f"task must be one of {TASKS}, got {self.task!r}"
            raise ConfigError(msg)
        if len(self.train) and tuple(self.train.x.shape[1:]) != tuple(self.input_shape):
            msg = f"train samples have shape {self.train.x.shape[1:]}, not {self.input_shape}"
            raise ConfigError(msg)

    def loaders(
        self,
        batch_size: int = 32,
        seed: int = 0,
        num_workers: int = 0,
        shuffle_train: bool = True,
        drop_last: bool = False,
    ) -> Loaders:
        """DataLoaders; the training order is fixed by ``seed`` (a seeded torch.Generator)."""
        if batch_size < 1 or num_workers < 0:
            msg = f"need batch_size >= 1 and num_workers >= 0, got {batch_size}, {num_workers}"
            raise ConfigError(msg)
        gen = torch.Generator().manual_seed(seed)

        def make(ds: ArrayDataset, train: bool) -> DataLoader:
            return DataLoader(
                ds,
                batch_size=batch_size,
                shuffle=train and shuffle_train,
                generator=gen if train else None,
                num_workers=num_workers,
                drop_last=drop_last and train,
                worker_init_fn=_seed_worker,
            )

        return Loaders(make(self.train, True), make(self.val, False), make(self.test, False))

    def calibration_batches(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` training inputs as one float32 array ``[n, *input_shape]`` (deterministic).

        The samples are a seeded random subset of the training set in ascending index order,
        meant as the representative data set of int8 calibration.

        Raises:
            ConfigError: ``n`` < 1 or larger than the training set.
        """
        if not 1 <= n <= len(self.train):
            msg = (
                f"calibration needs 1 <= n <= {len(self.train)} (training samples of "
                f"{self.name!r}), got n={n}"
            )
            raise ConfigError(msg)
        idx = np.sort(np.random.default_rng(seed).choice(len(self.train), n, replace=False))
        return np.ascontiguousarray(self.train.x[idx], dtype=np.float32)


def _seed_worker(worker_id: int) -> None:
    np.random.seed((torch.initial_seed() + worker_id) % 2**32)
