"""The shared base of every unstructured criterion: schedule, floors and regrowth options.

The engine (:class:`tinyprune.pruning.dynamic.DynamicSparseHook`) owns the masks and runs
every unstructured criterion (``wgj``, and the baselines ``gmp``, ``set``, ``rigl``): a criterion
(a :class:`DynamicSparsityConfig` subclass) only supplies its scores, its gradient EMA factor
and its drop fraction (docs/methods.md, wgj).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Protocol

import torch

from tinyprune.criteria.base import Granularity
from tinyprune.errors import ConfigError
from tinyprune.pruning.dynamic import DynamicSparseHook, LayerStats, layer_stats

__all__ = ["DynamicSparsityConfig", "ScoreInputLike"]


class ScoreInputLike(Protocol):
    """What :meth:`DynamicSparsityConfig.score` reads from the registry's ``ScoreInput``."""

    weight: torch.Tensor
    grad: torch.Tensor | None


@dataclass(frozen=True)
class DynamicSparsityConfig:
    """Schedule, floors and regrowth options shared by every unstructured criterion.

    Attributes:
        sparsity: Final sparsity ``1 - d_final`` over the prunable tensors, in [0, 1).
        init_sparsity: Sparsity at ``t_start`` (0 = dense-to-sparse; 0.5 = GraNet S2S), <= sparsity.
        delta_t: Optimizer steps between mask updates (dT).
        t_start: First update step; None = one epoch (``ctx.steps_per_epoch``), else ``delta_t``.
        t_f: Step at which the cubic schedule reaches the final density; None = ``t_f_frac``
            x total.
        t_end: Last drop/regenerate update; None = ``t_end_frac`` x total. Static mask afterwards.
        t_f_frac: Default ``t_f`` as a fraction of the total steps (0.6 E [R]).
        t_end_frac: Default ``t_end`` as a fraction of the total steps (0.75 E [R]).
        min_density_layer: Per-layer density floor in the global ranking [R].
        min_per_channel: Active weights kept in every output channel (dim 1 for ConvTranspose) [R].
        keep_first_dense: Leave the first prunable layer dense [R].
        keep_last_dense: Leave the last prunable layer (output conv) dense [R].
        exclude: Module names left dense as well.
        scope: ``global`` top-k over layers, or ``layer`` (same density in every layer, TF-MOT).
        protect_k: Updates during which a regenerated connection cannot be dropped [R].
        regrow_init: ``zero`` (RigL) or ``restore`` (the value it had when dropped) [R].
        seed: Seed of any random choice (SET regrowth); identical on every rank.
        eps: Numerical floor of the normalisations.
    """

    name: ClassVar[str] = ""
    granularity: ClassVar[Granularity] = Granularity.ELEMENT
    needs_grad: ClassVar[bool] = True

    sparsity: float = 0.9
    init_sparsity: float = 0.0
    delta_t: int = 100
    t_start: int | None = None
    t_f: int | None = None
    t_end: int | None = None
    t_f_frac: float = 0.6
    t_end_frac: float = 0.75
    min_density_layer: float = 0.01
    min_per_channel: int = 4
    keep_first_dense: bool = True
    keep_last_dense: bool = True
    exclude: tuple[str, ...] = ()
    scope: str = "global"
    protect_k: int = 1
    regrow_init: str = "zero"
    seed: int = 0
    eps: float = 1e-12

    def __post_init__(self) -> None:
        for field, value in (("sparsity", self.sparsity), ("init_sparsity", self.init_sparsity)):
            if not 0.0 <= value < 1.0:
                msg = f"{field} {value!r} is outside [0, 1); expected e.g. 0.9 for 10 % density"
                raise ConfigError(msg)
        if self.init_sparsity > self.sparsity:
            msg = (
                f"init_sparsity {self.init_sparsity} exceeds sparsity {self.sparsity}; "
                "the schedule only removes weights, so set init_sparsity <= sparsity"
            )
            raise ConfigError(msg)
        self._check_ints()
        self._check_choices()

    def _check_ints(self) -> None:
        checks = [
            ("delta_t", self.delta_t, 1),
            ("protect_k", self.protect_k, 0),
            ("min_per_channel", self.min_per_channel, 0),
        ]
        checks += [
            (f, v, 0)
            for f, v in (("t_start", self.t_start), ("t_f", self.t_f), ("t_end", self.t_end))
            if v is not None
        ]
        for field, value, low in checks:
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                msg = f"{field} must be an integer >= {low}, got {value!r}"
                raise ConfigError(msg)
        for frac_field, frac in (
            ("t_f_frac", self.t_f_frac),
            ("t_end_frac", self.t_end_frac),
            ("min_density_layer", self.min_density_layer),
        ):
            if not 0.0 <= frac <= 1.0:
                msg = f"{frac_field} must lie in [0, 1], got {frac!r}"
                raise ConfigError(msg)

    def _check_choices(self) -> None:
        for field, value, allowed in (
            ("scope", self.scope, ("global", "layer")),
            ("regrow_init", self.regrow_init, ("zero", "restore")),
        ):
            if value not in allowed:
                msg = f"{field} {value!r} is not one of {allowed}"
                raise ConfigError(msg)

    # --- what a criterion supplies -------------------------------------------------------
    @property
    def grad_beta(self) -> float:
        """EMA factor of the gradient magnitude (0 = the last gradient only)."""
        return 0.0

    def trim_scores(self, st: LayerStats) -> torch.Tensor:
        """Higher = keep, for the permanent trim along the density schedule."""
        return st.weight

    def keep_scores(self, st: LayerStats) -> torch.Tensor:
        """Higher = keep, for the drop step (the lowest active ones are dropped)."""
        return st.weight

    def regen_scores(self, st: LayerStats, generator: torch.Generator) -> torch.Tensor:
        """Higher = regenerate first, over inactive entries."""
        return st.gbar

    def drop_fraction(self, t: int, t_start: int, t_end: int) -> float:
        """Fraction of each layer's active weights dropped (and regrown) at step ``t``."""
        return 0.0

    # --- registry contract ---------------------------------------------------------------
    def score(self, inp: ScoreInputLike) -> torch.Tensor:
        """One-shot element scores (higher = keep) shaped like ``inp.weight``: the trim score."""
        weight = inp.weight.detach()
        grad = inp.grad.detach().abs() if inp.grad is not None else torch.zeros_like(weight)
        st = layer_stats(weight, weight != 0, grad, eps=self.eps)
        return self.trim_scores(st).reshape(weight.shape)

    def make_hook(self) -> DynamicSparseHook:
        """The training hook that owns the masks and applies this criterion during training."""
        return DynamicSparseHook(self)

    def to_dict(self) -> dict[str, Any]:
        """Fields plus the criterion name (JSON-serialisable)."""
        return {"criterion": self.name, **asdict(self)}
