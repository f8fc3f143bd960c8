"""``tinyprune prune --target PROFILE``: the largest pruned network whose int8 export fits a board.

This is app-layer wiring (it runs real exports), so it lives here and not in ``tinyprune.pruning``.

Flash (the ``.tflite`` bytes plus the runtime allowance) and the TFLM arena are only known after
an export, and they are monotone in the MACs fraction kept only roughly, so the fraction is
searched by bisection with a few real exports (``firmware_export.export(...,
raise_on_budget=False)`` and ``result.fits``). Each trial prunes a copy of the trained network
with the job's criterion; weights do not change sizes, so the choice holds after fine-tuning
(a final export of the fine-tuned model checks it). firmware_export (and TensorFlow) are
imported only inside these functions. Under torchrun, rank 0 alone runs the exports and every
replica follows its answer (``distributed.on_rank0``); training and the final prune stay
collective.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from tinyprune.app.fit_search import TARGET_USE, budget_use, next_fraction, ram_floor_note
from tinyprune.errors import BudgetExceededError, ConfigError, ExportError, UnsupportedOpError

log = logging.getLogger(__name__)


@dataclass
class FitSearch:
    """The chosen MACs fraction and every export tried (fraction, fits, flash, arena).

    ``final``: when the dense network fits, its export (full calibration and verification) is
    the final check: its figures and its files (:data:`EXPORT_FILES` key of the figures).
    """

    fraction: float
    tried: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    smallest: float = 0.0


#: Key of a final check's figures that holds the export's files (name -> bytes), which
#: ``prune_run`` writes to ``RUN/export`` and ``tinyprune fit`` reuses for its winner.
EXPORT_FILES = "_export_files"


def smallest_fraction(model: nn.Module, example: Any, crit: Any, round_to: int) -> float:
    """MACs fraction of the network with every prunable group at its minimum width."""
    from tinyprune.pruning import select as sel
    from tinyprune.pruning.channel_graph import ChannelGraph

    graph = ChannelGraph(copy.deepcopy(model).eval(), example)
    cost = graph.cost_model()
    mc, mf = getattr(crit, "min_channels", 1), getattr(crit, "min_fraction", 0.0)
    k_min = [
        sel.allowed_widths(g.size, round_to, sel.min_keep_for(g.size, mc, mf))[0]
        for g in graph.groups
    ]
    return float(cost.cost(np.array(k_min))[0] / cost.dense[0])


def _budget_rows(report: dict[str, Any]) -> str:
    return ", ".join(f"{k} {row['used']} of {row['limit']}" for k, row in report["budget"].items())


class _Trial:
    """Prune a copy of the model at a fraction and export it; remember what was tried."""

    def __init__(
        self,
        model: nn.Module,
        example: Any,
        crit: Any,
        calib: np.ndarray,
        profile: str | Path,
        data: Any,
        round_to: int,
    ) -> None:
        self.model, self.example, self.crit, self.calib = model, example, crit, calib
        self.profile, self.data, self.round_to = profile, data, round_to
        self.search = FitSearch(fraction=0.0)
        self.tolerate_errors = True
        self.options: dict[str, Any] = dict(TRIAL_OPTIONS)
        self.files: dict[str, bytes] = {}  # the last export's top-level files

    def __call__(self, fraction: float) -> Any:
        from firmware_export import ExportOptions, export
        from tinyprune.pruning.select import Budget
        from tinyprune.pruning.structured import prune_structured

        pruned = copy.deepcopy(self.model).eval()
        if fraction < 1.0:
            prune_structured(
                pruned,
                self.example,
                self.crit,
                Budget(target_flops=fraction),
                data=self.data,
                round_to=self.round_to,
                sync_ranks=False,  # a trial runs on rank 0 only (see on_rank0)
            )
        # torch types Module.__setattr__ for tensors and modules only; any value is allowed
        pruned.input_shape = getattr(self.model, "input_shape", None)  # type: ignore[assignment]
        with tempfile.TemporaryDirectory(prefix="tinyprune-fit-") as tmp:
            try:
                res = export(
                    pruned,
                    self.calib,
                    target=self.profile,
                    out_dir=Path(tmp) / "trial",
                    options=ExportOptions(**self.options),
                    raise_on_budget=False,
                )
            except ExportError as e:
                if not self.tolerate_errors or isinstance(e, UnsupportedOpError):
                    raise
                # a trial whose export breaks (e.g. a runtime crash while measuring the arena)
                # counts as not fitting; the chosen model is exported again at the end
                log.warning("fit search: export at %.4f of MACs failed (%s)", fraction, e)
                self.search.tried.append({"fraction": fraction, "fits": False, "error": str(e)})
                return None
            self.files = {f.name: f.read_bytes() for f in res.out_dir.iterdir() if f.is_file()}
        rep = res.typed_report
        self.search.tried.append(
            {
                "fraction": fraction,
                "fits": rep.fits,
                "flash_bytes": rep.flash_bytes,
                "arena_bytes": rep.arena_bytes,
                "latency_ms": (res.report.get("latency_estimate") or {}).get("ms"),
            }
        )
        log.info("fit search: %s", self.search.tried[-1])
        return res


def latency_cap(dense: Any, profile: str | Path) -> float:
    """Largest MACs fraction whose latency estimate can meet the profile's limit (1.0: no limit).

    The estimate is MACs x cycles per MAC / clock, linear in the MACs, so the dense export's
    estimate bounds the fraction before any further export; a trial at the cap still checks it.
    """
    from firmware_export.budget import load_profile

    limit = load_profile(profile).latency_ms
    ms = (dense.report.get("latency_estimate") or {}).get("ms")
    if limit is None or not ms:
        return 1.0
    return float(min(1.0, limit / ms))


#: Export settings of a search trial. Flash and arena depend on the graph's shapes, not on the
#: calibration or verification samples, so trials use few of each; the final check uses all.
TRIAL_OPTIONS = {"calib_cap": 64, "verify_samples": 4}


def largest_fitting_fraction(
    model: nn.Module,
    example: Any,
    crit: Any,
    calib: np.ndarray,
    profile: str | Path,
    *,
    data: Any = None,
    round_to: int = 4,
    steps: int = 4,
) -> FitSearch:
    """Search of the MACs fraction kept so that the int8 export fits ``profile``: a bracket
    between the largest fitting and the smallest failing trial, each step interpolated on the
    trials' budget use (:func:`~tinyprune.app.fit_search.next_fraction`).

    Trials: the dense network; with a latency limit, the fraction that just meets it (the
    estimate is linear in MACs), which ends the search when flash and RAM fit there too; the
    smallest reachable network; then ``steps`` bisection steps between the largest fitting and
    the smallest failing fraction.

    Args:
        model: The trained network (not changed).
        example: A batch for tracing.
        crit: The structured criterion that selects the channels of each trial.
        calib: Calibration samples for the trial exports.
        profile: A device profile name or TOML path.
        data: Calibration batches for data-driven criteria.
        round_to: Kept widths are multiples of this.
        steps: Bisection steps after the dense, latency-capped and smallest trials.

    Raises:
        BudgetExceededError: Even the smallest reachable network does not fit; the message
            gives its fraction, flash and arena against the profile's limits.
    """
    trial = _Trial(model, example, crit, calib, profile, data, round_to)
    trial.options = {}  # the dense export is the final check when it fits: all samples
    dense = trial(1.0)
    trial.options = dict(TRIAL_OPTIONS)
    if dense is not None and dense.fits:
        trial.search.fraction = 1.0
        trial.search.final = _final_figures(dense, trial.files)
        return trial.search
    hi = latency_cap(dense, profile) if dense is not None else 1.0
    lo = smallest_fraction(model, example, crit, round_to) * (1 + 1e-9)
    trial.search.smallest = lo
    capped = None
    if lo < hi < 1.0:
        capped = trial(hi)
        if capped is not None and capped.fits:
            trial.search.fraction = hi
            return trial.search
    trial.tolerate_errors = False  # the smallest network must export: its error is the answer
    res = trial(min(lo, 1.0))
    trial.tolerate_errors = True
    seen = {lo: budget_use(res), 1.0: budget_use(dense)}  # fraction -> largest used/limit
    if capped is not None:
        seen[hi] = budget_use(capped)
    if not res.fits:
        msg = (
            f"the model cannot fit {profile}: even the smallest reachable network (every "
            f"layer at its minimum width, {lo:.1%} of the MACs) needs "
            f"{_budget_rows(res.report)}; pick a larger target, a smaller model, or lower "
            "round_to/min_channels." + ram_floor_note(res.report)
        )
        raise BudgetExceededError(msg, result=res)
    for _ in range(steps):
        mid = next_fraction(lo, hi, seen)
        got = trial(mid)
        seen[mid] = budget_use(got)
        if got is not None and got.fits:
            lo = mid
        else:
            hi = mid
    trial.search.fraction = lo
    return trial.search


def fit_profile_job(
    model: nn.Module, bundle: Any, criterion: str, calib: np.ndarray, cfg: Any
) -> dict[str, Any]:
    """Train, find the largest fitting fraction, prune, fine-tune and check the final export.

    ``cfg`` is the job's :class:`~tinyprune.config.PruneConfig`; ``cfg.target`` the profile.
    """
    from firmware_export.budget import load_profile
    from tinyprune import criteria
    from tinyprune.app.jobs import train_for_criterion
    from tinyprune.criteria.base import PrunesWhileTraining
    from tinyprune.training import distributed

    target = cfg.target
    load_profile(target)  # a bad name or file fails before any training
    if len(calib) < 1:
        msg = "--target needs calibration samples from the training set"
        raise ConfigError(msg)
    out: dict[str, Any] = {}
    crit = criteria.get(criterion, **dict(cfg.criterion_options))
    if not isinstance(crit, PrunesWhileTraining) and cfg.epochs > 0:
        out["pretrain"] = train_for_criterion(model, bundle, criterion, cfg)
        cfg = dataclasses.replace(cfg, epochs=0)
    loaders = bundle.loaders(batch_size=cfg.batch_size, seed=cfg.seed)
    example = next(iter(loaders.train))[0][:2]
    search = distributed.on_rank0(
        lambda: largest_fitting_fraction(
            model,
            example,
            crit,
            calib,
            target,
            data=loaders.train,
            round_to=cfg.round_to,
            steps=cfg.search_steps,
        )
    )
    out["target"] = {"profile": str(target), "fraction": search.fraction, "tried": search.tried}
    if search.fraction >= 1.0:  # the dense network fits: nothing to prune, it is the answer
        out |= _dense_answer(model, bundle, crit, cfg, out.get("pretrain"))
        final = search.final
        if final is None or "train" in out:  # trained only now: check its export again
            final = distributed.on_rank0(
                lambda: _final_check(model, example, calib, target, cfg, search)
            )
    else:
        final = _prune_until_fits(model, bundle, criterion, calib, cfg, search, out, example)
    out[EXPORT_FILES] = final.pop(EXPORT_FILES)
    out["target"] |= final
    return out


#: Prune-and-fine-tune runs after the first whose final export missed the budget.
FINAL_RETRIES = 2


def _prune_until_fits(
    model: nn.Module,
    bundle: Any,
    criterion: str,
    calib: np.ndarray,
    cfg: Any,
    search: FitSearch,
    out: dict[str, Any],
    example: Any,
) -> dict[str, Any]:
    """Prune and fine-tune ``model`` at the search's fraction; while the final export misses
    the budget, start again from the unpruned network at a smaller fraction.

    The search's trials prune the network before training; a criterion that prunes while
    training (``tailored``) or a fine-tune that moves the scores can keep another width
    profile, whose export may not fit. Each retry shrinks the MACs fraction by the square of
    how far over budget the export was (flash and RAM grow about linearly with the widths,
    MACs about quadratically) and is recorded in ``out["target"]["retries"]``. After
    :data:`FINAL_RETRIES` retries the last miss is the answer (BudgetExceededError).
    """
    from tinyprune.app.jobs import prune_structured_job
    from tinyprune.pruning.select import Budget
    from tinyprune.training import distributed

    start = copy.deepcopy(model)
    fraction = search.fraction
    retries: list[dict[str, float]] = []
    for attempt in range(FINAL_RETRIES + 1):
        if attempt:
            _restore(model, start)
        out |= prune_structured_job(model, bundle, criterion, Budget(fraction), cfg)
        check = functools.partial(
            _check_or_shrink, model, example, calib, cfg, search, fraction, attempt == FINAL_RETRIES
        )
        checked = distributed.on_rank0(check)
        if "retry_fraction" not in checked:
            if retries:
                out["target"] |= {"fraction": fraction, "retries": retries}
            return checked
        retries.append({"fraction": fraction, "budget_use": checked["budget_use"]})
        log.warning(
            "fit: the fine-tuned network at %.1f%% of MACs uses %.0f%% of the budget; "
            "pruning again at %.1f%%",
            100 * fraction,
            100 * checked["budget_use"],
            100 * checked["retry_fraction"],
        )
        fraction = checked["retry_fraction"]
    msg = "unreachable: the last attempt returns or raises"
    raise AssertionError(msg)


def _check_or_shrink(
    model: nn.Module,
    example: Any,
    calib: np.ndarray,
    cfg: Any,
    search: FitSearch,
    fraction: float,
    last: bool,
) -> dict[str, Any]:
    """The final check's figures, or ``{"retry_fraction", "budget_use"}`` after a miss.

    Raises the miss (BudgetExceededError) on the ``last`` attempt or when the smaller fraction
    would be below the smallest reachable network.
    """
    try:
        return _final_check(model, example, calib, cfg.target, cfg, search, fraction)
    except BudgetExceededError as e:
        use = budget_use(e.result)
        if last or use is None:
            raise
        smaller = fraction * min((TARGET_USE / use) ** 2, 0.95)
        if smaller <= search.smallest:
            raise
        return {"retry_fraction": smaller, "budget_use": use}


def _restore(model: nn.Module, start: nn.Module) -> None:
    """Make ``model`` (the caller's object, pruned in place) a fresh copy of ``start``."""
    fresh = copy.deepcopy(start)
    model.__dict__.clear()
    model.__dict__.update(fresh.__dict__)


def _dense_answer(
    model: nn.Module, bundle: Any, crit: Any, cfg: Any, pretrain: dict[str, Any] | None
) -> dict[str, Any]:
    """The record of a fit whose dense network fits: trained, with its metric.

    A criterion that prunes while training (``tailored``) was not trained before the search;
    with nothing to prune it is trained plainly (its hook only steers pruning).
    """
    from tinyprune.app.jobs import PruneJob
    from tinyprune.criteria.base import PrunesWhileTraining

    if pretrain is not None:
        return {"metric_trained": pretrain["metric_trained"]}
    job = PruneJob(model, bundle, cfg)
    out: dict[str, Any] = {}
    if isinstance(crit, PrunesWhileTraining) and cfg.epochs > 0:
        out["train"] = job.fit("train", cfg.epochs, [])
    out["metric_trained"] = job.evaluate()
    return out


def _final_check(
    model: nn.Module,
    example: Any,
    calib: np.ndarray,
    target: str | Path,
    s: Any,
    search: Any,
    fraction: float | None = None,
) -> dict[str, Any]:
    """Export the fine-tuned model once more; raise BudgetExceededError if it does not fit."""
    checker = _Trial(model, example, None, calib, target, None, s.round_to)
    checker.tolerate_errors, checker.options = False, {}  # the full calibration and verification
    final = checker(1.0)
    if not final.fits:
        msg = (
            f"the pruned and fine-tuned model does not fit {target}: "
            f"{_budget_rows(final.report)} (the search chose {search.fraction:.1%} of MACs"
            + ("" if fraction in (None, search.fraction) else f", pruned at {fraction:.1%}")
            + ")"
        )
        raise BudgetExceededError(msg, result=final)
    return _final_figures(final, checker.files)


def _final_figures(result: Any, files: dict[str, bytes]) -> dict[str, Any]:
    rep = result.report
    return {
        "flash_bytes": rep["flash_bytes"],
        "arena_bytes": rep["arena_bytes"],
        "latency_ms": (rep.get("latency_estimate") or {}).get("ms"),
        "fits": True,
        EXPORT_FILES: dict(files),
    }
