"""``summary.json`` of a prune run as a typed record, with a schema version.

The job phases (:mod:`tinyprune.app.jobs`) each contribute their part; :class:`PruneSummary`
is the one place that says which parts exist, so a misspelt key fails here instead of silently
landing in the file, and readers (``tinyprune fit``, the demo, benchmarks) use attributes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tinyprune.errors import PruningError

#: Bumped when a field changes meaning or is removed (adding one keeps the version).
SCHEMA_VERSION = 1

Metrics = dict[str, float]


@dataclass(frozen=True)
class PruneSummary:
    """What a prune run did (``summary.json``; README "Run folders" gives the schema).

    Attributes:
        model: The MODEL argument. data: The data set. criterion: The criterion's name.
        criterion_options: Its resolved hyperparameters.
        metric_before: Task metrics of the network as given (before training).
        metric_trained: After training with the criterion's hook (structured criteria).
        metric_pruned: Right after the prune (BatchNorm recalibrated).
        metric_finetuned: After fine-tuning.
        train, finetune, pretrain: The training loops' records (history, final, seconds).
        prune: The structured prune (kept channels per group, MACs/params before and after).
        search: A criterion's own search report (``cluster_de``'s DE).
        sparsity: Dense and non-zero params/MACs per layer (unstructured criteria).
        target: The board fit of ``--target`` (fraction, trial exports, final flash/arena).
        hook: The pruning hook's record of a criterion that prunes while training.
        bn_recalibrated_on: Training images BatchNorm statistics were re-estimated on.
        seconds: Wall time per phase.
        preprocessing: The input contract of the data the net was trained on (rPPG runs;
            :class:`tinyprune.runtime.contract.PreprocessingContract` as a dict).
    """

    model: str
    data: str
    criterion: str
    criterion_options: dict[str, Any] = field(default_factory=dict)
    metric_before: Metrics | None = None
    metric_trained: Metrics | None = None
    metric_pruned: Metrics | None = None
    metric_finetuned: Metrics | None = None
    train: dict[str, Any] | None = None
    finetune: dict[str, Any] | None = None
    pretrain: dict[str, Any] | None = None
    prune: dict[str, Any] | None = None
    search: dict[str, Any] | None = None
    sparsity: dict[str, Any] | None = None
    target: dict[str, Any] | None = None
    hook: dict[str, Any] | None = None
    bn_recalibrated_on: int | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    preprocessing: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_parts(cls, parts: Mapping[str, Any]) -> PruneSummary:
        """Build from the merged phase outputs; an unknown part is a bug in a phase.

        Raises:
            PruningError: A phase produced a part this record does not know.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(parts) - known)
        if unknown:
            msg = f"prune summary: unknown part(s) {unknown}; add them to PruneSummary"
            raise PruningError(msg)
        return cls(**dict(parts))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PruneSummary:
        """Read ``summary.json`` (newer files may carry fields this version ignores)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: every part that was produced (``None`` parts are left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @property
    def final_metric(self) -> Metrics:
        """The last metric measured: fine-tuned, else pruned, else trained."""
        return self.metric_finetuned or self.metric_pruned or self.metric_trained or {}
