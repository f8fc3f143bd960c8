"""The criterion contract: what a pruning criterion receives, returns and declares.

A criterion only scores (STYLE.md §2): it never chooses what to prune and never changes the
model. Selection lives in ``pruning/select.py`` and surgery in ``pruning/channel_graph.py`` /
``pruning/masks.py``. Criteria are frozen dataclasses whose fields are their hyperparameters
and they register in :data:`CRITERIA` under a short name with a :class:`Granularity`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from tinyprune.registry import Registry


class Granularity(enum.Enum):
    """What one score refers to."""

    ELEMENT = "element"  # unstructured: one score per weight
    CHANNEL = "channel"  # structured: one score per output channel


@dataclass(frozen=True)
class ScoreInput:
    """Everything a criterion may read about one prunable layer.

    Attributes:
        name: Module FQN, e.g. ``"features.3.conv"``.
        weight: Read-only weight with the output channel on dim 0 (a conv-transpose weight is
            given transposed, so ``weight.shape[0]`` is always the number of output channels).
        grad: Gradient of ``weight`` (same layout), set only when the criterion needs it.
        module: The layer itself (bias, groups, ...).
        bn: The batch-norm that normalises this layer's output, if any.
        features: Post-activation outputs of this layer over calibration data,
            shape ``(N, C, *spatial)``; set only for criteria with ``needs_data``.
    """

    name: str
    weight: torch.Tensor
    grad: torch.Tensor | None
    module: nn.Module
    bn: nn.Module | None = None
    features: torch.Tensor | None = None


@runtime_checkable
class Criterion(Protocol):
    """One method; a plugin needs no base class."""

    name: ClassVar[str]
    granularity: ClassVar[Granularity]
    needs_grad: ClassVar[bool]

    def score(self, inp: ScoreInput) -> torch.Tensor:
        """Higher = keep; shape ``(out_channels,)`` (CHANNEL) or ``weight.shape`` (ELEMENT)."""
        ...


#: The scoring contract under the name the engine uses for it.
Scores = Criterion


@runtime_checkable
class HasTrainHook(Protocol):
    """A criterion that adds a term to pre-training (e.g. ``pcc_ci``'s PCC loss)."""

    def train_hook(self, *, seed: int = 0) -> Any:
        """A :class:`~tinyprune.training.TrainHook` to train with before scoring."""
        ...


@runtime_checkable
class PrunesWhileTraining(Protocol):
    """A criterion that trains and prunes together (e.g. ``tailored``).

    The job trains with the returned hook, then calls its ``freeze_(model)`` (the hard prune,
    returning a :class:`~tinyprune.pruning.structured.PruneResult`) and ``summary()``.
    """

    def pruning_hook(
        self, model: nn.Module, example_input: Any, budget: Any, *, round_to: int, total_steps: int
    ) -> Any:
        """The hook that prunes ``model`` to ``budget`` during ``total_steps`` optimizer steps."""
        ...


@dataclass(frozen=True)
class SearchData:
    """What a criterion's search may look at: all taken from the training set.

    Attributes:
        example_input: A batch for tracing.
        calib: Batches that recalibrate BatchNorm in each fitness evaluation.
        heldout: ``(x, y)`` batches that score each fitness evaluation.
        metric: ``"accuracy"``, ``"neg_ce"`` or ``metric(model, heldout) -> float``.
    """

    example_input: Any
    calib: Any
    heldout: Any
    metric: Any = "accuracy"


@runtime_checkable
class NeedsSearch(Protocol):
    """A criterion whose own settings are searched before it scores (e.g. ``cluster_de``)."""

    def search(self, model: nn.Module, budget: Any, data: Any, settings: Any) -> tuple[Any, Any]:
        """Return the configured criterion and a report (a dataclass) of the search.

        ``data`` is a :class:`SearchData`; ``settings`` has ``de`` (a
        :class:`~tinyprune.config.DESearchConfig`), ``round_to``, ``seed`` and ``progress``
        (a :class:`~tinyprune.config.PruneConfig` does).
        """
        ...


@runtime_checkable
class Unstructured(Protocol):
    """An element criterion whose masks are owned by a training hook (wgj, gmp, set, rigl)."""

    def make_hook(self) -> Any:
        """The :class:`~tinyprune.training.TrainHook` that owns and updates the masks."""
        ...


CRITERIA: Registry[Any] = Registry("criterion")


def needs_data(criterion: object) -> bool:
    """True when the criterion reads ``ScoreInput.features`` (calibration data required)."""
    return bool(getattr(criterion, "needs_data", False))
