"""Unstructured mask engine: binary masks per weight tensor, kept exactly zero in storage.

Why it exists (docs/methods.md §1.1): dynamic sparse training (wgj, gmp, set, rigl) needs the
*dense*
gradient at pruned positions to decide what to regenerate. The mask is therefore never applied in
``forward``; instead pruned weights are held at exactly 0 in storage and in the optimizer state
(SGD momentum, Adam moments) by re-applying the mask after every optimizer step, which also stops
weight decay or stale momentum from resurrecting zeros. This module owns the masks, the floors
that stop a layer from being emptied, the cubic / cosine schedules, deterministic selection
(ties broken by index) and :func:`sparsity_report` (non-zero params and effective MACs).
"""

from __future__ import annotations

import math
import os
import pickle
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tinyprune.errors import ConfigError
from tinyprune.pruning.tensors import weight_of

#: Module types whose ``weight`` is prunable. Biases and BN parameters are never pruned.
PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def out_channel_dim(module: nn.Module) -> int:
    """Dimension of ``module.weight`` that indexes output channels (1 for ConvTranspose)."""
    return 1 if isinstance(module, _TRANSPOSED) else 0


@dataclass(frozen=True)
class PrunableTensor:
    """One prunable weight: its parameter name (``features.3.weight``) and owning module."""

    name: str
    module: nn.Module
    param: nn.Parameter


def find_prunable(
    model: nn.Module,
    *,
    keep_first_dense: bool = True,
    keep_last_dense: bool = True,
    exclude: Iterable[str] = (),
) -> list[PrunableTensor]:
    """List the prunable weight tensors of ``model`` in module registration order.

    Args:
        model: The network.
        keep_first_dense: Leave the first prunable layer dense (GraNet ``--rm-first``) [R].
        keep_last_dense: Leave the last prunable layer (e.g. the 1x1 output conv) dense [R].
        exclude: Module names (``features.0``) to leave dense as well.

    Returns:
        The tensors to mask, in registration order.

    Raises:
        ConfigError: No tensor is left to prune.
    """
    excluded = set(exclude)
    found = [
        PrunableTensor(f"{mname}.weight" if mname else "weight", mod, weight)
        for mname, mod in model.named_modules()
        if isinstance(mod, PRUNABLE_TYPES)
        and mname not in excluded
        and isinstance(weight := getattr(mod, "weight", None), nn.Parameter)
    ]
    total = len(found)
    if keep_last_dense and found:
        found = found[:-1]
    if keep_first_dense and found:
        found = found[1:]
    if not found:
        msg = (
            f"model {type(model).__name__} has no prunable weight tensor: found {total} "
            f"Conv/ConvTranspose/Linear layer(s), keep_first_dense={keep_first_dense}, "
            f"keep_last_dense={keep_last_dense}, exclude={sorted(excluded)}; expected at least one "
            "layer left to prune. Set keep_first_dense/keep_last_dense to False or use a larger "
            "model."
        )
        raise ConfigError(msg)
    return found


def layer_floor(shape: torch.Size, out_dim: int, min_density: float, min_per_channel: int) -> int:
    """Fewest active weights a layer may keep: the density floor or ``min_per_channel`` per output.

    Args:
        shape: Weight shape.
        out_dim: Output-channel dimension (1 for ConvTranspose, see docs/methods.md §2.9).
        min_density: Fraction of the layer that always stays active.
        min_per_channel: Active weights kept in every output channel (capped at its size).

    Returns:
        The floor, at most the layer size.
    """
    numel = math.prod(shape)
    n_out = shape[out_dim]
    per_channel = min(min_per_channel, numel // n_out) * n_out
    return min(numel, max(math.ceil(min_density * numel), per_channel))


def smallest_k(score: torch.Tensor, candidates: torch.Tensor, k: int) -> torch.Tensor:
    """Flat indices of the ``k`` smallest ``score`` among ``candidates`` (ties: lower index)."""
    idx = candidates.nonzero().flatten()
    if k <= 0 or idx.numel() == 0:
        return idx[:0]
    order = torch.sort(score[idx], stable=True).indices
    return idx[order[:k]]


def largest_k(score: torch.Tensor, candidates: torch.Tensor, k: int) -> torch.Tensor:
    """Flat indices of the ``k`` largest ``score`` among ``candidates`` (ties: lower index)."""
    idx = candidates.nonzero().flatten()
    if k <= 0 or idx.numel() == 0:
        return idx[:0]
    order = torch.sort(score[idx], descending=True, stable=True).indices
    return idx[order[:k]]


def floor_protected(
    score: torch.Tensor,
    active: torch.Tensor,
    shape: torch.Size,
    out_dim: int,
    floor: int,
    min_per_channel: int,
) -> torch.Tensor:
    """Active entries that removal must spare so the layer keeps its floors.

    The ``min_per_channel`` highest-scoring active entries of every output channel are protected,
    then the highest-scoring remaining active entries until ``floor`` entries are protected.

    Args:
        score: Flat scores (higher = keep).
        active: Flat bool mask of active entries.
        shape: Weight shape.
        out_dim: Output-channel dimension of the weight.
        floor: Layer floor from :func:`layer_floor`.
        min_per_channel: Entries kept per output channel.

    Returns:
        Flat bool tensor, True where the entry must not be removed.
    """
    moved = list(shape)
    moved.insert(0, moved.pop(out_dim))
    per_row = math.prod(moved[1:])
    protected = torch.zeros(moved[0], per_row, dtype=torch.bool, device=active.device)
    k = min(min_per_channel, per_row)
    if k > 0:
        s = score.view(shape).movedim(out_dim, 0).reshape(moved[0], per_row)
        a = active.view(shape).movedim(out_dim, 0).reshape(moved[0], per_row)
        masked = torch.where(a, s, torch.full_like(s, -math.inf))
        top = torch.sort(masked, dim=1, descending=True, stable=True).indices[:, :k]
        protected.scatter_(1, top, a.gather(1, top))
    protected = protected.view(moved).movedim(0, out_dim).reshape(-1)
    missing = floor - int(protected.sum())
    if missing > 0:
        protected[largest_k(score, active & ~protected, missing)] = True
    return protected


def cubic_density(t: int, t_start: int, t_f: int, d_init: float, d_final: float) -> float:
    """Zhu & Gupta (2017) cubic schedule: ``d_init`` at ``t_start``, ``d_final`` from ``t_f`` on."""
    if t >= t_f:
        return d_final
    if t <= t_start:
        return d_init
    frac = (t - t_start) / (t_f - t_start)
    return d_final + (d_init - d_final) * (1.0 - frac) ** 3


def cosine_fraction(t: int, t_start: int, t_end: int, r0: float) -> float:
    """RigL/GraNet drop fraction ``r0/2 (1 + cos(pi (t - t_start)/(t_end - t_start)))``."""
    if t_end <= t_start:
        return r0
    frac = min(max((t - t_start) / (t_end - t_start), 0.0), 1.0)
    return 0.5 * r0 * (1.0 + math.cos(math.pi * frac))


def round_count(x: float) -> int:
    """Round half up (``round()`` rounds half to even, which a reader would not expect)."""
    return int(math.floor(x + 0.5))


def _param_state(
    optimizer: torch.optim.Optimizer | None, param: nn.Parameter
) -> list[torch.Tensor]:
    """Optimizer state tensors shaped like ``param`` (momentum_buffer, exp_avg, exp_avg_sq, ...)."""
    if optimizer is None or param not in optimizer.state:
        return []
    return [
        v
        for v in optimizer.state[param].values()
        if isinstance(v, torch.Tensor) and v.shape == param.shape
    ]


def zero_state_at_(
    optimizer: torch.optim.Optimizer | None, param: nn.Parameter, flat_idx: torch.Tensor
) -> None:
    """Reset the optimizer state of ``param`` at ``flat_idx`` (regenerated connections)."""
    for buf in _param_state(optimizer, param):
        buf.view(-1)[flat_idx] = 0


class MaskSet:
    """Binary masks for a list of prunable tensors, applied to weights and optimizer state."""

    def __init__(self, tensors: list[PrunableTensor]) -> None:
        self.tensors = {t.name: t for t in tensors}
        self.masks: dict[str, torch.Tensor] = {
            t.name: torch.ones_like(t.param, dtype=torch.bool) for t in tensors
        }

    @property
    def names(self) -> list[str]:
        """Tensor names in registration order."""
        return list(self.masks)

    def numel(self) -> int:
        """Total number of prunable weights."""
        return sum(m.numel() for m in self.masks.values())

    def active_counts(self) -> dict[str, int]:
        """Active (unmasked) weights per tensor."""
        return {n: int(m.sum()) for n, m in self.masks.items()}

    def total_active(self) -> int:
        """Active weights over all tensors."""
        return sum(self.active_counts().values())

    @torch.no_grad()
    def apply_(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Zero masked weights and their optimizer state in place."""
        for name, mask in self.masks.items():
            param = self.tensors[name].param
            param.mul_(mask)
            for buf in _param_state(optimizer, param):
                buf.mul_(mask)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Masks as plain bool tensors keyed by parameter name (for ``torch.save``)."""
        return {n: m.detach().clone().cpu() for n, m in self.masks.items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Replace the masks; raise :class:`ConfigError` when they do not match the model."""
        missing = sorted(set(self.masks) - set(state))
        extra = sorted(set(state) - set(self.masks))
        if missing or extra:
            msg = (
                f"masks do not match the model: missing {missing}, unexpected {extra}; expected "
                f"exactly the prunable tensors {self.names}. Load masks saved for this model "
                "with the same keep_first_dense/keep_last_dense/exclude settings."
            )
            raise ConfigError(msg)
        for name, mask in self.masks.items():
            new = state[name]
            if not isinstance(new, torch.Tensor) or tuple(new.shape) != tuple(mask.shape):
                got = tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
                msg = f"mask {name!r} has shape {got}, expected {tuple(mask.shape)} (model weight)"
                raise ConfigError(msg)
            mask.copy_(new.to(device=mask.device) != 0)


def save_masks(state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Write masks atomically (temp file + ``os.replace``) with :func:`torch.save`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save({k: v.detach().cpu().bool() for k, v in state.items()}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_masks(path: str | Path) -> dict[str, torch.Tensor]:
    """Read masks written by :func:`save_masks` (``weights_only=True``)."""
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
        msg = f"cannot read masks from {str(path)!r}: {e}; expected a file written by save_masks"
        raise ConfigError(msg) from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        msg = f"{str(path)!r} does not hold a dict of mask tensors; expected a save_masks file"
        raise ConfigError(msg)
    return state


@dataclass(frozen=True)
class LayerSparsity:
    """Dense vs non-zero figures of one Conv/ConvTranspose/Linear layer (MACs per sample)."""

    name: str
    kind: str
    weight_params: int
    weight_nonzero: int
    bias_params: int
    positions: int  # output positions (input positions for ConvTranspose) per sample
    dense_macs: int
    effective_macs: int  # nnz(W) x positions (docs/methods.md §0)

    @property
    def density(self) -> float:
        """Fraction of non-zero weights."""
        return self.weight_nonzero / self.weight_params if self.weight_params else 1.0


@dataclass(frozen=True)
class SparsityReport:
    """Per-layer and total sparsity of a model; ``params`` count every parameter (incl. BN)."""

    layers: tuple[LayerSparsity, ...]
    dense_params: int
    nonzero_params: int

    @property
    def dense_macs(self) -> int:
        """MACs of the dense network per sample."""
        return sum(layer.dense_macs for layer in self.layers)

    @property
    def effective_macs(self) -> int:
        """MACs that multiply a non-zero weight, per sample."""
        return sum(layer.effective_macs for layer in self.layers)

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable form."""
        return {
            "dense_params": self.dense_params,
            "nonzero_params": self.nonzero_params,
            "dense_macs": self.dense_macs,
            "effective_macs": self.effective_macs,
            "layers": [{**layer.__dict__, "density": layer.density} for layer in self.layers],
        }

    def __str__(self) -> str:
        rows = [f"{'layer':<28}{'params':>10}{'nonzero':>10}{'MACs':>12}{'eff. MACs':>12}"]
        rows += [
            f"{ly.name:<28}{ly.weight_params:>10}{ly.weight_nonzero:>10}"
            f"{ly.dense_macs:>12}{ly.effective_macs:>12}"
            for ly in self.layers
        ]
        rows.append(
            f"{'total (all params)':<28}{self.dense_params:>10}{self.nonzero_params:>10}"
            f"{self.dense_macs:>12}{self.effective_macs:>12}"
        )
        return "\n".join(rows)


@torch.no_grad()
def sparsity_report(model: nn.Module, input_shape: tuple[int, ...]) -> SparsityReport:
    """Count dense vs non-zero params and effective MACs per layer with one forward pass.

    Args:
        model: The (masked) network; it is run once in eval mode and its mode is restored.
        input_shape: Shape of one input batch including the batch dimension, e.g.
            ``(1, 3, 32, 32)``; MACs are reported per sample.

    Returns:
        The report. A layer run several times (shared weights) counts every call.

    Raises:
        ConfigError: ``input_shape`` is not a positive shape.
    """
    if len(input_shape) < 2 or any(int(d) <= 0 for d in input_shape):
        msg = f"input_shape must be (batch, ...) with positive sizes, got {tuple(input_shape)}"
        raise ConfigError(msg)
    batch = int(input_shape[0])
    positions: dict[str, int] = {}
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, PRUNABLE_TYPES):
            handles.append(mod.register_forward_hook(_position_counter(name, positions, batch)))
    was_training = model.training
    param = next(model.parameters(), None)
    x = torch.zeros(input_shape, device=param.device if param is not None else "cpu")
    try:
        model.eval()
        model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    layers = [
        _layer_sparsity(name, mod, positions.get(name, 0))
        for name, mod in model.named_modules()
        if isinstance(mod, PRUNABLE_TYPES)
    ]
    params = list(model.parameters())
    return SparsityReport(
        layers=tuple(layers),
        dense_params=sum(p.numel() for p in params),
        nonzero_params=sum(int(torch.count_nonzero(p)) for p in params),
    )


def _position_counter(
    name: str, positions: dict[str, int], batch: int
) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]:
    """Forward hook adding the per-sample positions each weight element is applied at."""

    def hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if isinstance(mod, _TRANSPOSED):
            n = inputs[0].numel() // (batch * mod.in_channels)
        elif isinstance(mod, nn.Linear):
            n = output.numel() // (batch * mod.out_features)
        else:
            n = output.numel() // (batch * output.shape[1])
        positions[name] = positions.get(name, 0) + n

    return hook


def _layer_sparsity(name: str, mod: nn.Module, positions: int) -> LayerSparsity:
    weight = weight_of(mod)
    bias = getattr(mod, "bias", None)
    nnz = int(torch.count_nonzero(weight))
    return LayerSparsity(
        name=name,
        kind=type(mod).__name__,
        weight_params=weight.numel(),
        weight_nonzero=nnz,
        bias_params=bias.numel() if isinstance(bias, torch.Tensor) else 0,
        positions=positions,
        dense_macs=weight.numel() * positions,
        effective_macs=nnz * positions,
    )
