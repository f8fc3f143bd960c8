"""Unstructured baselines run by the same mask engine and schedule as ``wgj``: gmp, set, rigl.

They exist so that the weight-gradient joint criterion is compared at equal training budgets
(same ``delta_t``, ``t_start``, ``t_f``, ``t_end``, floors and cubic density schedule;
docs/methods.md
§2.9). Each one only says how it ranks weights for the trim, drop and regrowth steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from tinyprune.criteria.base import CRITERIA
from tinyprune.criteria.unstructured import DynamicSparsityConfig
from tinyprune.errors import ConfigError
from tinyprune.pruning import masks as mk
from tinyprune.pruning.dynamic import LayerStats

__all__ = ["GMPCriterion", "RigLCriterion", "SETCriterion"]


def _check_fraction(field: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        msg = f"{field} must lie in [0, 1), got {value!r}"
        raise ConfigError(msg)


@CRITERIA.register("gmp")
@dataclass(frozen=True)
class GMPCriterion(DynamicSparsityConfig):
    """Gradual magnitude pruning (Zhu & Gupta 2017, arXiv:1710.01878).

    Importance is |w|. Weights are removed along the cubic density schedule and never come back,
    as TF-MOT's ``PolynomialDecay(power=3)`` does; ``scope='layer'`` (the default) gives every
    layer the same density like TF-MOT, ``scope='global'`` ranks all layers together (GraNet).
    """

    name: ClassVar[str] = "gmp"
    needs_grad: ClassVar[bool] = False

    scope: str = "layer"


@CRITERIA.register("set")
@dataclass(frozen=True)
class SETCriterion(DynamicSparsityConfig):
    """Sparse Evolutionary Training (Mocanu et al. 2018, arXiv:1707.04780).

    Importance is |w|: each update drops the fraction ``zeta`` of the smallest-magnitude active
    weights per layer and regrows as many at random inactive positions (seeded by ``seed`` and
    the update index, so every rank and every rerun picks the same ones).

    Attributes:
        zeta: Constant drop fraction per update.
    """

    name: ClassVar[str] = "set"
    needs_grad: ClassVar[bool] = False

    zeta: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_fraction("zeta", self.zeta)

    def regen_scores(self, st: LayerStats, generator: torch.Generator) -> torch.Tensor:
        """Uniform random scores: random regrowth."""
        return torch.rand(st.weight.shape, generator=generator).to(st.weight.device)

    def drop_fraction(self, t: int, t_start: int, t_end: int) -> float:
        """``zeta`` at every update."""
        return self.zeta


@CRITERIA.register("rigl")
@dataclass(frozen=True)
class RigLCriterion(DynamicSparsityConfig):
    """Rigged Lottery (Evci et al. 2020, arXiv:1911.11134).

    Drops the smallest |w| and regrows where the dense gradient of the last batch is largest,
    with drop fraction ``alpha/2 (1 + cos(pi (t - t_start)/(t_end - t_start)))``.

    Attributes:
        alpha: Initial drop fraction.
    """

    name: ClassVar[str] = "rigl"

    alpha: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_fraction("alpha", self.alpha)

    def drop_fraction(self, t: int, t_start: int, t_end: int) -> float:
        """Cosine-decayed ``alpha``."""
        return mk.cosine_fraction(t, t_start, t_end, self.alpha)
