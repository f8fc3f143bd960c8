"""Weight-gradient joint criterion (wgj) for dynamic fine-grained pruning.

Zhao et al., "Pruning rPPG networks using weight-gradient joint criterion", ESWA 282:127623
(2025). Only the abstract was available, so the algorithm follows the reconstruction of
docs/methods.md §2 (tags: [S] stated in the abstract, [P] prior work, [R] reconstruction; every [R]
choice is a field). Importance uses the weight *and* a gradient-magnitude EMA of every connection:
``I_keep = wn/(1+gn)`` ranks the drop step, ``I_regen = gn/(1+wn)`` the regeneration among inactive
connections and ``I_trim = wn+gn`` the permanent density reduction along a cubic schedule.

The shared unstructured base (:class:`~tinyprune.criteria.unstructured.DynamicSparsityConfig`)
and the mask engine (:mod:`tinyprune.pruning.dynamic`) run it like the baselines gmp, set, rigl.
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

__all__ = ["WGJCriterion"]


@CRITERIA.register("wgj")
@dataclass(frozen=True)
class WGJCriterion(DynamicSparsityConfig):
    """Weight-gradient joint criterion (Zhao et al. 2025, doi:10.1016/j.eswa.2025.127623).

    Importance: large |w| with small gradient EMA is stable and kept (``I_keep``); small |w|
    with large gradient EMA is dropped first but may regenerate (``I_regen``); small |w| and small
    gradient is trimmed permanently (``I_trim``). See docs/methods.md §2.5.

    Attributes:
        beta_g: EMA factor of |dL/dW| per iteration [R].
        r0: Initial drop fraction, cosine-decayed to 0 at ``t_end`` (0.3 RigL; 0.5 GraNet) [R].
        trim_score: ``joint`` (wn + gn) or ``taylor`` (wn x gn, i.e. normalised |W x gbar|) [R].
        keep_score: ``ratio`` (wn / (1 + gn)) or ``exp`` (wn x exp(-gn)), same ordering idea [R].
    """

    name: ClassVar[str] = "wgj"

    beta_g: float = 0.9
    r0: float = 0.3
    trim_score: str = "joint"
    keep_score: str = "ratio"

    def __post_init__(self) -> None:
        super().__post_init__()
        for field, value in (("beta_g", self.beta_g), ("r0", self.r0)):
            if not 0.0 <= value < 1.0:
                msg = f"{field} must lie in [0, 1), got {value!r}"
                raise ConfigError(msg)
        for option, choice, allowed in (
            ("trim_score", self.trim_score, ("joint", "taylor")),
            ("keep_score", self.keep_score, ("ratio", "exp")),
        ):
            if choice not in allowed:
                msg = f"{option} {choice!r} is not one of {allowed}"
                raise ConfigError(msg)

    @property
    def grad_beta(self) -> float:
        """``beta_g``."""
        return self.beta_g

    def trim_scores(self, st: LayerStats) -> torch.Tensor:
        """``I_trim = wn + gn`` (or ``wn * gn`` with ``trim_score='taylor'``)."""
        return st.wn * st.gn if self.trim_score == "taylor" else st.wn + st.gn

    def keep_scores(self, st: LayerStats) -> torch.Tensor:
        """``I_keep = wn / (1 + gn)`` (or ``wn * exp(-gn)`` with ``keep_score='exp'``)."""
        return st.wn * torch.exp(-st.gn) if self.keep_score == "exp" else st.wn / (1.0 + st.gn)

    def regen_scores(self, st: LayerStats, generator: torch.Generator) -> torch.Tensor:
        """``I_regen = gn / (1 + wn)`` with wn of the regrowth value (0 unless ``restore``)."""
        return st.gn / (1.0 + st.wn_regen)

    def drop_fraction(self, t: int, t_start: int, t_end: int) -> float:
        """``r0/2 (1 + cos(pi (t - t_start)/(t_end - t_start)))``."""
        return mk.cosine_fraction(t, t_start, t_end, self.r0)
