"""Shared pieces of the unstructured-pruning evaluations on synthetic rPPG data.

Why it exists: the wgj bench (``bench/wgj_bench.py``) and the end-to-end faithfulness test T8
(docs/methods.md §2.10, ``tests/tinyprune/criteria/test_wgj_end_to_end.py``) must measure
networks the
same way (HR per test video from concatenated clips) and compare against the same one-shot
magnitude baseline (the engine's global magnitude ranking with the same layers and floors as the
dynamic criteria). Keeping both here stops the bench and the test from drifting apart.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from tinyprune import criteria
from tinyprune.criteria.unstructured import DynamicSparsityConfig
from tinyprune.data import build_dataset
from tinyprune.metrics import hr_errors, neg_pearson_loss, video_hr
from tinyprune.models import create_model
from tinyprune.pruning.bn_recal import recalibrate_bn_
from tinyprune.pruning.dynamic import DynamicSparseHook
from tinyprune.training import TrainConfig, fit
from tinyprune.training.hooks import TrainContext

__all__ = [
    "T8Result",
    "T8Setup",
    "evaluate_rppg",
    "magnitude_config",
    "one_shot_magnitude_",
    "run_t8",
]


def evaluate_rppg(model: nn.Module, bundle: Any) -> tuple[float, float]:
    """(HR MAE in bpm per test video, mean waveform Pearson r per test clip).

    HR is taken per video, rPPG-Toolbox style: the predicted DiffNormalized clips of a video are
    concatenated, integrated and read off the periodogram peak (nfft = next power of two), so
    8 clips x 32 frames give a 7 bpm bin; a single 32-frame clip would give 56 bpm bins. The
    ground truth is the mean true HR of the video. Pearson r of each clip's waveform against
    its label is the finer-grained second figure.

    Args:
        model: A trained rPPG network mapping ``bundle.test.x`` to ``(N, T)`` waveforms.
        bundle: A ``DataBundle`` of an rPPG dataset (``test.x``, ``test.y``, ``test.video``,
            ``test.hr_bpm``, ``fs``).

    Returns:
        ``(hr_mae_bpm, mean_pearson_r)``.
    """
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(bundle.test.x)).numpy()
    test = bundle.test
    hr_pred, hr_true = video_hr(pred, test.video, test.hr_bpm, float(bundle.fs))
    r = [float(np.corrcoef(p, y)[0, 1]) for p, y in zip(pred, test.y, strict=True)]
    return float(hr_errors(hr_pred, hr_true).mae), float(np.nanmean(r))


def magnitude_config(
    density: float,
    *,
    min_per_channel: int = 4,
    min_density_layer: float = 0.01,
    keep_first_dense: bool = True,
    keep_last_dense: bool = True,
    delta_t: int = 1,
) -> DynamicSparsityConfig:
    """One-shot global magnitude pruning to ``density`` as an engine config (a static mask).

    It is the ``gmp`` criterion with ``init_sparsity == sparsity`` and ``scope="global"``: the
    hook's ``on_train_begin`` removes the smallest-|W| weights over all prunable layers at once
    (the engine's global ranking, above the same per-layer floors and with the same first/last
    layers left dense as wgj), and every later update is a no-op (constant density, no drop),
    so training with the hook fine-tunes under a fixed mask.

    Args:
        density: Fraction of the prunable weights kept, in (0, 1].
        min_per_channel: Active weights kept in every output channel.
        min_density_layer: Per-layer density floor.
        keep_first_dense: Leave the first prunable layer dense.
        keep_last_dense: Leave the last prunable layer dense.
        delta_t: Steps between (no-op) updates; only constrains where the schedule fits.

    Returns:
        The config; ``.make_hook()`` gives the training hook.
    """
    sparsity = round(1.0 - density, 6)
    return criteria.get(
        "gmp",
        sparsity=sparsity,
        init_sparsity=sparsity,
        scope="global",
        delta_t=delta_t,
        t_start=0,
        t_f=0,
        t_end=0,
        min_per_channel=min_per_channel,
        min_density_layer=min_density_layer,
        keep_first_dense=keep_first_dense,
        keep_last_dense=keep_last_dense,
    )


def one_shot_magnitude_(model: nn.Module, density: float, **floors: Any) -> DynamicSparseHook:
    """Prune ``model`` in place, once, by global magnitude to ``density`` (no training).

    Args:
        model: A trained network.
        density: Fraction of the prunable weights kept.
        **floors: Forwarded to :func:`magnitude_config` (``min_per_channel`` etc.).

    Returns:
        The hook, whose ``masks`` hold the applied masks.
    """
    hook = magnitude_config(density, **floors).make_hook()
    ctx = TrainContext(
        model=model,
        optimizer=None,
        steps_per_epoch=1,  # type: ignore[arg-type]
        total_steps=1,
    )
    hook.on_train_begin(ctx)
    return hook


@dataclass(frozen=True)
class T8Setup:
    """Sizes of the end-to-end check T8 (docs/methods.md §2.10): small, seeded, static data.

    Attributes:
        model: Zoo name of the PhysNet variant.
        width: Its base width.
        size: Clip height and width.
        frames: Frames per clip.
        n_train: Training videos (each ``clips_per_video`` clips).
        n_test: Test videos; HR is read per video.
        clips_per_video: Clips per video: 16 x 32 frames give 3.5 bpm periodogram bins (8 clips
            give 7 bpm bins, where every good network ties at one-bin MAE).
        epochs: Training epochs of the dense and the wgj network.
        lr: Peak Adam learning rate (cosine schedule).
        batch_size: Clips per batch.
        delta_t: Steps between wgj mask updates.
        min_per_channel: Per-output-channel floor (wgj and the magnitude baseline alike).
        density: Final density of wgj and of the magnitude baseline.
        seed: Data, initialisation and training seed.
    """

    model: str = "physnet_2p1d"
    width: int = 8
    size: int = 16
    frames: int = 32
    n_train: int = 8
    n_test: int = 8
    clips_per_video: int = 16
    epochs: int = 12
    lr: float = 3e-3
    batch_size: int = 8
    delta_t: int = 10
    min_per_channel: int = 1
    density: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class T8Result:
    """HR MAE (bpm) and waveform r of the three networks, and the baseline's fine-tune length."""

    dense_mae: float
    dense_r: float
    wgj_mae: float
    wgj_r: float
    magnitude_mae: float
    magnitude_r: float
    magnitude_no_ft_mae: float
    finetune_epochs: int
    wgj_density: float
    magnitude_density: float


def _fit(model: nn.Module, bundle: Any, s: T8Setup, epochs: int, hooks: list[Any]) -> None:
    cfg = TrainConfig(epochs=epochs, lr=s.lr, batch_size=s.batch_size, seed=s.seed, log_every=0)
    fit(
        model,
        bundle.loaders(batch_size=s.batch_size, seed=s.seed).train,
        cfg,
        loss_fn=neg_pearson_loss,
        hooks=hooks,
        progress=False,
    )


def _density(hook: DynamicSparseHook) -> float:
    masks = hook.masks
    return masks.total_active() / masks.numel() if masks is not None else 1.0


def run_t8(s: T8Setup = T8Setup()) -> T8Result:  # noqa: B008 - frozen default
    """Dense, wgj and one-shot magnitude PhysNets on static synthetic data (docs/methods.md T8).

    Protocol: the dense net and the wgj net train ``epochs`` from the same seeded
    initialisation (wgj dense-to-sparse to ``density`` on its default schedule: cubic to
    ``t_f = 0.6 E``, drop/regrow until ``t_end = 0.75 E``). The magnitude baseline starts from
    the trained dense net, zeroes the smallest-|W| weights globally down to ``density`` (same
    prunable layers and floors as wgj) and fine-tunes under that fixed mask for
    ``round(0.25 E)`` epochs, as long as wgj trains after its last mask update.

    Args:
        s: Sizes and seed.

    Returns:
        The figures; ``magnitude_no_ft_mae`` is the baseline before fine-tuning.
    """
    bundle = build_dataset(
        "synthetic-rppg",
        size=s.size,
        chunk=s.frames,
        n_train=s.n_train,
        n_val=1,
        n_test=s.n_test,
        clips_per_video=s.clips_per_video,
        nuisances=("static",),
        real_ppg=False,
        seed=s.seed,
    )
    torch.manual_seed(s.seed)
    dense = create_model(s.model, frames=s.frames, img_size=s.size, width=s.width)
    init = copy.deepcopy(dense.state_dict())
    _fit(dense, bundle, s, s.epochs, [])
    dense_mae, dense_r = evaluate_rppg(dense, bundle)
    wgj_cfg = criteria.get(
        "wgj",
        sparsity=round(1.0 - s.density, 6),
        delta_t=s.delta_t,
        min_per_channel=s.min_per_channel,
        seed=s.seed,
    )
    wgj_net = create_model(s.model, frames=s.frames, img_size=s.size, width=s.width)
    wgj_net.load_state_dict(init)
    wgj_hook = wgj_cfg.make_hook()
    _fit(wgj_net, bundle, s, s.epochs, [wgj_hook])
    wgj_mae, wgj_r = evaluate_rppg(wgj_net, bundle)
    ft_epochs = max(1, round((1.0 - wgj_cfg.t_end_frac) * s.epochs))
    floors = {"min_per_channel": s.min_per_channel, "min_density_layer": wgj_cfg.min_density_layer}
    mag = copy.deepcopy(dense)
    one_shot_magnitude_(mag, s.density, **floors)
    recalibrate_bn_(mag, torch.split(torch.from_numpy(bundle.train.x), s.batch_size))
    no_ft_mae, _ = evaluate_rppg(mag, bundle)
    mag_hook = magnitude_config(s.density, **floors).make_hook()
    _fit(mag, bundle, s, ft_epochs, [mag_hook])
    recalibrate_bn_(mag, torch.split(torch.from_numpy(bundle.train.x), s.batch_size))
    mag_mae, mag_r = evaluate_rppg(mag, bundle)
    return T8Result(
        dense_mae,
        dense_r,
        wgj_mae,
        wgj_r,
        mag_mae,
        mag_r,
        no_ft_mae,
        ft_epochs,
        _density(wgj_hook),
        _density(mag_hook),
    )
