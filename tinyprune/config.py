"""Every configuration of tinyprune's jobs, each default defined once; torch-free.

Frozen dataclasses validated at construction, so a bad value fails before any data is read,
with a message naming the field, the value received and what is accepted:

- :class:`TrainConfig`: one training or fine-tuning loop (the training package's input).
- :class:`TrainRunConfig`: ``tinyprune train`` (a run from scratch).
- :class:`PruneConfig` with :class:`FinetuneConfig` and :class:`DESearchConfig`:
  ``tinyprune prune`` (budget, training budget, fine-tuning, ``cluster_de``'s search).

The CLI reads its argparse defaults from these classes; a run's resolved configuration is saved
as ``config.toml`` in the run folder and ``--config FILE`` loads one back (explicit flags win).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tinyprune.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "onecycle", "constant")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training or fine-tuning run.

    Attributes:
        epochs: passes over the training set (>= 1).
        lr: peak learning rate (> 0).
        optimizer: ``"sgd"``, ``"adam"`` or ``"adamw"`` (decoupled weight decay).
        momentum: SGD momentum in [0, 1); ignored by Adam/AdamW.
        weight_decay: L2 penalty (SGD, Adam) or decoupled decay (AdamW), >= 0.
        schedule: ``"cosine"`` (linear warm-up, then cosine to 0 at the last step),
            ``"onecycle"`` (``torch.optim.lr_scheduler.OneCycleLR``; the warm-up share is
            ``warmup / epochs``, 0.3 when ``warmup`` is 0) or ``"constant"`` (after warm-up).
        warmup: warm-up length in epochs (may be fractional), 0 <= warmup < epochs.
        batch_size: samples per batch *per process*; ``fit`` re-batches standard loaders with it.
        seed: seeds Python, NumPy, torch and the data order.
        grad_clip: max global L2 norm of the gradients, or None for no clipping.
        log_every: log the running loss every this many optimizer steps (0 = per epoch only).
        deterministic: ask torch for deterministic kernels (``use_deterministic_algorithms``).
    """

    epochs: int = 1
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup: float = 0.0
    batch_size: int = 32
    seed: int = 0
    grad_clip: float | None = None
    log_every: int = 50
    deterministic: bool = False

    def __post_init__(self) -> None:
        for check in (self._check_counts, self._check_rates, self._check_choices):
            check()

    def _check_counts(self) -> None:
        for name, low in (("epochs", 1), ("batch_size", 1), ("seed", 0), ("log_every", 0)):
            value = getattr(self, name)
            if not _is_int(value) or value < low:
                msg = f"TrainConfig.{name} must be an integer >= {low}, got {value!r}"
                raise ConfigError(msg)
        if not isinstance(self.deterministic, bool):
            msg = f"TrainConfig.deterministic must be True or False, got {self.deterministic!r}"
            raise ConfigError(msg)

    def _check_rates(self) -> None:
        if not _is_number(self.lr) or self.lr <= 0:
            msg = (
                f"TrainConfig.lr must be a finite number > 0, got {self.lr!r} "
                "(try 1e-3 for Adam, 0.1 for SGD)"
            )
            raise ConfigError(msg)
        if not _is_number(self.momentum) or not 0 <= self.momentum < 1:
            msg = f"TrainConfig.momentum must be in [0, 1), got {self.momentum!r} (0.9 is usual)"
            raise ConfigError(msg)
        if not _is_number(self.weight_decay) or self.weight_decay < 0:
            msg = (
                f"TrainConfig.weight_decay must be a finite number >= 0, got {self.weight_decay!r}"
            )
            raise ConfigError(msg)
        if not _is_number(self.warmup) or not 0 <= self.warmup < self.epochs:
            msg = (
                f"TrainConfig.warmup is in epochs and must satisfy 0 <= warmup < epochs "
                f"(epochs={self.epochs}), got {self.warmup!r}"
            )
            raise ConfigError(msg)
        if self.grad_clip is not None and (not _is_number(self.grad_clip) or self.grad_clip <= 0):
            msg = (
                "TrainConfig.grad_clip must be None (no clipping) or a number > 0, "
                f"got {self.grad_clip!r}"
            )
            raise ConfigError(msg)

    def _check_choices(self) -> None:
        for name, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
            value = getattr(self, name)
            if value not in choices:
                msg = f"TrainConfig.{name} must be one of {', '.join(choices)}; got {value!r}"
                raise ConfigError(msg)

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON/YAML-serialisable dict (for the run's resolved config)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build a config from a mapping (e.g. a YAML section); unknown keys are an error.

        Raises:
            ConfigError: a key is not a field, or a value fails validation.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            msg = (
                f"unknown TrainConfig field(s) {unknown}; "
                f"expected some of: {', '.join(sorted(known))}"
            )
            raise ConfigError(msg)
        return cls(**dict(values))


def _check_at_least(owner: str, values: Mapping[str, Any], lows: Mapping[str, int]) -> None:
    for name, low in lows.items():
        value = values[name]
        if not _is_int(value) or value < low:
            flag = "--" + name.replace("_", "-")
            msg = f"{owner}.{name} ({flag}) {value!r} is invalid; expected an integer >= {low}"
            raise ConfigError(msg)


@dataclass(frozen=True)
class TrainRunConfig:
    """``tinyprune train``: train a model from scratch and save a run.

    Attributes:
        epochs: Training epochs.
        lr: Peak learning rate.
        batch_size: Samples per batch (per process).
        seed: Seeds the weights, the data order and the calibration samples.
        calib_samples: Training samples saved as ``calib.npy`` for int8 calibration.
        progress: Show progress bars (on a terminal).
    """

    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0
    calib_samples: int = 128
    progress: bool = True

    def __post_init__(self) -> None:
        lows = {"epochs": 1, "batch_size": 1, "seed": 0, "calib_samples": 1}
        _check_at_least("TrainRunConfig", dataclasses.asdict(self), lows)
        if not _is_number(self.lr) or self.lr <= 0:
            msg = f"--lr {self.lr!r} is invalid; expected a finite number > 0"
            raise ConfigError(msg)


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning after a structured prune.

    Attributes:
        epochs: Fine-tuning epochs (0: none).
        lr: Peak learning rate (None: the training rate). Pruning recipes often fine-tune at a
            tenth of the training rate (CHIP, filter pruning of Li et al.).
    """

    epochs: int = 1
    lr: float | None = None

    def __post_init__(self) -> None:
        _check_at_least("FinetuneConfig", {"finetune_epochs": self.epochs}, {"finetune_epochs": 0})
        if self.lr is not None and not (_is_number(self.lr) and self.lr > 0):
            msg = f"--finetune-lr {self.lr} is invalid; expected a number > 0"
            raise ConfigError(msg)


@dataclass(frozen=True)
class DESearchConfig:
    """``cluster_de``'s differential-evolution search (docs/methods.md, cluster_de).

    Population and generations are the paper's. The image counts are far below the paper's
    2,000 (BN recalibration) + 5,000 (held-out score) so that a search takes minutes on a 2-core
    CPU (``bench/criteria_bench.py --de-timing`` prints the figures); BN statistics settle on
    fewer images than an accuracy estimate needs.

    Attributes:
        pop: DE population (>= 4: mutation needs three distinct members and a best).
        gens: DE generations.
        calib: Training images that recalibrate BN in each fitness evaluation.
        heldout: Held-out training images that score each fitness evaluation.
        workers: Processes evaluating each generation (one torch thread each).
    """

    pop: int = 20
    gens: int = 30
    calib: int = 64
    heldout: int = 128
    workers: int = 2

    def __post_init__(self) -> None:
        values = {f"de_{k}": v for k, v in dataclasses.asdict(self).items()}
        lows = {"de_pop": 4, "de_gens": 0, "de_calib": 1, "de_heldout": 1, "de_workers": 1}
        _check_at_least("DESearchConfig", values, lows)


#: Smallest absolute FLOPs / params count a budget may name; below it a value above 1 is
#: taken for a mistyped fraction (``--target-flops 1.5``) rather than 1.5 FLOPs.
MIN_ABSOLUTE_BUDGET = 1000


def _check_budget_value(name: str, value: float | None) -> None:
    if value is None:
        return
    flag = "--" + name.replace("_", "-")
    if not _is_number(value) or value <= 0 or 1 < value < MIN_ABSOLUTE_BUDGET:
        msg = (
            f"{flag} {value!r} is invalid; expected the fraction kept, in (0, 1] (e.g. {flag} "
            f"0.5 keeps half), or an absolute count >= {MIN_ABSOLUTE_BUDGET}"
        )
        raise ConfigError(msg)


@dataclass(frozen=True)
class PruneConfig:
    """``tinyprune prune``: the budget, the training budget and the search settings of one job.

    Exactly one budget is given: ``target_flops`` and/or ``target_params`` (fractions in
    (0, 1] kept; structured criteria), ``sparsity`` (fraction of weights removed; unstructured
    criteria) or ``target`` (a device profile: the largest network whose int8 export fits).

    Attributes:
        target_flops: FLOPs fraction kept, in (0, 1] (or an absolute FLOPs count).
        target_params: Parameter fraction kept, in (0, 1] (or an absolute count).
        sparsity: Fraction of weights removed, in [0, 1).
        target: Device profile name or TOML path.
        epochs: Training epochs with the criterion's hook.
        lr: Peak learning rate of training.
        batch_size: Samples per batch (per process).
        seed: Seeds weights, data order, calibration and search.
        round_to: Kept channel counts are multiples of this.
        bn_recalib: Training images on which BatchNorm statistics are re-estimated right after
            a structured prune (0: keep the dense network's). The same images on every rank.
        progress: Show progress bars (on a terminal).
        criterion_options: The criterion's hyperparameters (``tinyprune criteria -v``).
        finetune: Fine-tuning after the prune.
        de: ``cluster_de``'s search.
        search_steps: Bisection steps of a ``target`` (device profile) search, each one trial
            export, after the dense, latency-capped and smallest trials.
    """

    target_flops: float | None = None
    target_params: float | None = None
    sparsity: float | None = None
    target: str | None = None
    epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0
    round_to: int = 4
    bn_recalib: int = 256
    progress: bool = True
    criterion_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)
    de: DESearchConfig = dataclasses.field(default_factory=DESearchConfig)
    search_steps: int = 4

    def __post_init__(self) -> None:
        lows = {"epochs": 0, "batch_size": 1, "seed": 0, "round_to": 1, "bn_recalib": 0}
        lows["search_steps"] = 0
        _check_at_least("PruneConfig", dataclasses.asdict(self), lows)
        if not _is_number(self.lr) or self.lr <= 0:
            msg = f"--lr {self.lr!r} is invalid; expected a finite number > 0"
            raise ConfigError(msg)
        for name in ("target_flops", "target_params"):
            _check_budget_value(name, getattr(self, name))
        if self.sparsity is not None and not (_is_number(self.sparsity) and 0 <= self.sparsity < 1):
            msg = f"--sparsity {self.sparsity!r} is invalid; expected a fraction in [0, 1)"
            raise ConfigError(msg)

    @property
    def finetune_lr(self) -> float:
        """The fine-tuning learning rate (the training rate unless set)."""
        return self.lr if self.finetune.lr is None else self.finetune.lr

    def to_dict(self) -> dict[str, Any]:
        """All fields, nested sections as dicts (the run's resolved configuration)."""
        return dataclasses.asdict(self)


def parse_options(items: list[str] | None, what: str) -> dict[str, Any]:
    """``["width=8", "detect=false", "types=A,B"]`` -> ``{"width": 8, "detect": False, ...}``.

    Values are Python literals (numbers, strings, tuples, lists, None); ``true``/``false``
    (any case) are booleans; a bare comma-separated value is a tuple of the parsed items;
    anything else stays a string.

    Raises:
        ConfigError: An item is not ``KEY=VALUE`` or a key repeats.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            msg = f"{what} option {item!r} is not KEY=VALUE (e.g. width=8)"
            raise ConfigError(msg)
        if key in out:
            msg = f"{what} {key} is given twice; give each option once"
            raise ConfigError(msg)
        out[key] = parse_value(value.strip())
    return out


def parse_value(text: str) -> Any:
    """One option value: a literal, a boolean word, a comma-separated tuple, or a string."""
    import ast

    words = {"true": True, "false": False, "none": None}
    if text.lower() in words:
        return words[text.lower()]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    if "," in text:
        return tuple(parse_value(part.strip()) for part in text.split(",") if part.strip())
    return text


@dataclass(frozen=True)
class ModelSpec:
    """The MODEL argument and its factory options (``--model-kw``).

    Attributes:
        source: ``zoo:NAME``, ``path/to/file.py:factory``, ``package.module:factory``, a
            ``.pt2`` exported program or a ``.onnx`` file.
        options: Keyword arguments of the factory.
    """

    source: str
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """``{"source": ..., "options": {...}}``."""
        return {"source": self.source, "options": dict(self.options)}


@dataclass(frozen=True)
class DataSpec:
    """A data set name and its options (``--data-kw``).

    Attributes:
        name: ``digits``, ``synthetic-rppg``, ``pure:/path``, ``ubfc:/path`` or ``cifar10:/path``.
        options: Keyword arguments of the data set's builder.
    """

    name: str
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., "options": {...}}``."""
        return {"name": self.name, "options": dict(self.options)}


def to_toml(sections: Mapping[str, Mapping[str, Any]]) -> str:
    """A resolved configuration as TOML text (tables of scalars, lists and sub-tables).

    ``None`` values are left out (TOML has no null; a missing key means the default).
    """
    lines: list[str] = []
    for name, table in sections.items():
        _toml_table(lines, name, table)
    return "\n".join(lines).strip() + "\n"


def _toml_table(lines: list[str], name: str, table: Mapping[str, Any]) -> None:
    lines.append(f"[{name}]")
    nested = {k: v for k, v in table.items() if isinstance(v, Mapping)}
    for key, value in table.items():
        if value is not None and key not in nested:
            lines.append(f"{key} = {_toml_value(value)}")
    lines.append("")
    for key, value in nested.items():
        _toml_table(lines, f"{name}.{key}", value)


def _toml_value(value: Any) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if math.isfinite(value) else ("nan" if value != value else "inf")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    return json.dumps(str(value))  # a TOML basic string is a JSON string


def load_toml(path: str | Any) -> dict[str, Any]:
    """Read a TOML configuration file (``--config FILE``).

    Raises:
        ConfigError: The file is missing or is not valid TOML.
    """
    import tomllib
    from pathlib import Path

    p = Path(path)
    try:
        return tomllib.loads(p.read_text())
    except (OSError, UnicodeDecodeError) as e:
        msg = f"cannot read config file {str(p)!r}: {e}"
        raise ConfigError(msg) from e
    except tomllib.TOMLDecodeError as e:
        msg = f"config file {str(p)!r} is not valid TOML: {e}"
        raise ConfigError(msg) from e


@dataclass(frozen=True)
class EvalConfig:
    """``tinyprune eval``: the split evaluated and the samples per forward pass."""

    split: str = "test"
    batch_size: int = 32


@dataclass(frozen=True)
class FitConfig:
    """``tinyprune fit``: the most accurate network that fits a board, across criteria.

    Attributes:
        target: Device profile name or TOML path.
        criteria: Structured criteria tried, each with the same training budget.
        latency_ms: Latency limit (estimate: MACs x cycles-per-MAC / clock); None: the
            profile's own, if any.
        metric_drop: Largest accepted loss of the metric against the dense network (accuracy
            points as a fraction, or bpm of HR MAE); None: no limit.
        prune: Training budget, fine-tuning and search settings of every candidate (its own
            budget fields are not read).
    """

    target: str = "cortex-m4"
    criteria: tuple[str, ...] = ("tailored", "cluster_de", "pcc_ci", "l1")
    latency_ms: float | None = None
    metric_drop: float | None = None
    prune: PruneConfig = dataclasses.field(default_factory=PruneConfig)

    def __post_init__(self) -> None:
        if not self.criteria:
            msg = "--criteria is empty; give at least one structured criterion (e.g. l1)"
            raise ConfigError(msg)
        for name, value in (("latency_ms", self.latency_ms), ("metric_drop", self.metric_drop)):
            if value is not None and not (_is_number(value) and value >= 0):
                flag = "--" + name.replace("_", "-")
                msg = f"{flag} {value!r} is invalid; expected a finite number >= 0"
                raise ConfigError(msg)
