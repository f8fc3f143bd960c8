"""Baseline channel criteria: filter L1 norm, seeded random and BN scale.

Every new criterion should beat these; they also exercise the engine without data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from tinyprune.criteria.base import CRITERIA, Granularity, ScoreInput
from tinyprune.errors import PruningError


@CRITERIA.register("l1", help="L1 norm of each output filter (Li et al. 2017)")
@dataclass(frozen=True)
class L1Criterion:
    """Filter magnitude, Li et al., "Pruning Filters for Efficient ConvNets" (arXiv:1608.08710).

    Importance of output channel ``c`` = ``sum |W[c]|`` (``p=1``) or the ``p``-norm of the filter.
    """

    p: float = 1.0
    name: ClassVar[str] = "l1"
    granularity: ClassVar[Granularity] = Granularity.CHANNEL
    needs_grad: ClassVar[bool] = False

    def score(self, inp: ScoreInput) -> torch.Tensor:
        """Per-output-channel ``p``-norm of the weights."""
        w = inp.weight.reshape(inp.weight.shape[0], -1).double()
        norms: torch.Tensor = torch.linalg.vector_norm(w, ord=self.p, dim=1)
        return norms


@CRITERIA.register("random", help="seeded uniform random scores (a sanity baseline)")
@dataclass(frozen=True)
class RandomCriterion:
    """Random channel importance (the baseline of Liu et al., arXiv:1810.05270).

    Scores are uniform in [0, 1), drawn from a generator seeded with ``seed`` and the layer
    name, so repeated calls and layer order do not change them.
    """

    seed: int = 0
    name: ClassVar[str] = "random"
    granularity: ClassVar[Granularity] = Granularity.CHANNEL
    needs_grad: ClassVar[bool] = False

    def score(self, inp: ScoreInput) -> torch.Tensor:
        """Deterministic uniform scores for this layer."""
        layer_hash = sum((i + 1) * ord(ch) for i, ch in enumerate(inp.name)) % (2**31)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + layer_hash)
        return torch.rand(inp.weight.shape[0], generator=gen, dtype=torch.float64)


@CRITERIA.register("bn_scale", help="|gamma| of the following BatchNorm (network slimming)")
@dataclass(frozen=True)
class BNScaleCriterion:
    """Network slimming, Liu et al. 2017 (arXiv:1708.06519): importance = ``|gamma_c|``.

    Layers without a following BatchNorm do not take part (``applies_to`` is False); a group
    with no BatchNorm at all is an error raised by the engine.
    """

    name: ClassVar[str] = "bn_scale"
    granularity: ClassVar[Granularity] = Granularity.CHANNEL
    needs_grad: ClassVar[bool] = False

    def applies_to(self, inp: ScoreInput) -> bool:
        """Only layers followed by an affine BatchNorm."""
        return inp.bn is not None and getattr(inp.bn, "weight", None) is not None

    def score(self, inp: ScoreInput) -> torch.Tensor:
        """``|gamma|`` of the following BatchNorm."""
        gamma = getattr(inp.bn, "weight", None) if inp.bn is not None else None
        if not isinstance(gamma, torch.Tensor):
            msg = f"bn_scale needs an affine BatchNorm after layer {inp.name!r}; use 'l1' there"
            raise PruningError(msg)
        return gamma.detach().abs().double()
