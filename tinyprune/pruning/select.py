"""Selection: decide how many channels each dependency group keeps, and which ones.

Scoring (``criteria/``) and surgery (``channel_graph.py``) stay apart from this module: here only
numbers move. A :class:`CostModel` gives the exact MACs and parameters of any choice of
per-group widths (bilinear in consecutive widths, docs/methods.md §1.3); :class:`Budget` turns
user targets into limits; the ``select_*`` functions choose widths that are multiples of
``round_to`` (CMSIS-NN kernels like multiples of 4 or 8) and meet the limits maximally.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tinyprune.errors import ConfigError, PruningError, UnreachableBudgetError
from tinyprune.registry import Registry

Limits = tuple[float, float]  # (MACs limit, params limit); math.inf when not constrained


@dataclass(frozen=True)
class Budget:
    """What must remain after pruning.

    A value ``0 < f <= 1`` is a fraction kept of the dense model; a value ``> 1`` is absolute:
    ``target_flops`` in FLOPs (``2 x MACs``), ``target_params`` in parameters.
    """

    target_flops: float | None = None
    target_params: float | None = None

    def __post_init__(self) -> None:
        for key in ("target_flops", "target_params"):
            value = getattr(self, key)
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                msg = (
                    f"{key}={value!r} is invalid; expected a fraction kept in (0, 1] "
                    "or an absolute number > 1"
                )
                raise ConfigError(msg)
        if self.target_flops is None and self.target_params is None:
            msg = "empty budget; give target_flops and/or target_params (e.g. target_flops=0.5)"
            raise ConfigError(msg)

    @property
    def is_noop(self) -> bool:
        """True when every target is the fraction 1.0 (keep everything)."""
        return all(v in (None, 1.0) for v in (self.target_flops, self.target_params))

    def limits(self, dense_macs: float, dense_params: float) -> Limits:
        """(MACs limit, params limit) for a dense model of the given size."""
        macs = math.inf
        params = math.inf
        if self.target_flops is not None:
            f = self.target_flops
            macs = f * dense_macs if f <= 1 else f / 2.0
        if self.target_params is not None:
            p = self.target_params
            params = p * dense_params if p <= 1 else p
        return macs, params


@dataclass(frozen=True)
class CostModel:
    """Exact MACs / params of the counted layers as a function of the kept width per group.

    For layer ``l``: ``IN = in_fixed + in_coef @ k``, ``OUT = out_fixed + out_coef @ k``,
    ``MACs = mac_coef * IN * OUT / groups`` (``OUT * mac_coef`` when depthwise) and
    ``params = param_coef * IN * OUT / groups + param_lin * OUT``.
    """

    group_sizes: np.ndarray
    in_fixed: np.ndarray
    in_coef: np.ndarray
    out_fixed: np.ndarray
    out_coef: np.ndarray
    mac_coef: np.ndarray
    param_coef: np.ndarray
    param_lin: np.ndarray
    groups: np.ndarray
    depthwise: np.ndarray

    def cost(self, k: np.ndarray) -> tuple[float, float]:
        """(MACs, params) when group ``g`` keeps ``k[g]`` channels."""
        k = np.asarray(k, dtype=np.float64)
        cin = self.in_fixed + self.in_coef @ k
        cout = self.out_fixed + self.out_coef @ k
        prod = np.where(self.depthwise, cout, cin * cout / self.groups)
        macs = float(np.sum(self.mac_coef * prod))
        params = float(np.sum(self.param_coef * prod + self.param_lin * cout))
        return macs, params

    @property
    def dense(self) -> tuple[float, float]:
        """(MACs, params) with every channel kept."""
        return self.cost(self.group_sizes)


@dataclass(frozen=True)
class Selection:
    """Kept width and kept channel indices (sorted) per group, with the resulting cost."""

    counts: tuple[int, ...]
    keep: tuple[np.ndarray, ...]
    macs: float
    params: float


def allowed_widths(size: int, round_to: int = 4, min_keep: int = 1) -> np.ndarray:
    """Widths a group of ``size`` channels may keep: multiples of ``round_to`` and ``size``."""
    if round_to < 1:
        msg = f"round_to={round_to} is invalid; expected an integer >= 1 (4 or 8 suit CMSIS-NN)"
        raise ConfigError(msg)
    lo = max(1, min_keep)
    widths = [m for m in range(round_to, size, round_to) if m >= lo]
    return np.array([*widths, size], dtype=np.int64)


def min_keep_for(size: int, min_channels: int, min_fraction: float) -> int:
    """The per-group minimum width ``max(min_channels, ceil(min_fraction * size))``."""
    return max(1, min_channels, math.ceil(min_fraction * size))


def _fits(cost: CostModel, k: np.ndarray, limits: Limits) -> bool:
    macs, params = cost.cost(k)
    return macs <= limits[0] + 1e-6 and params <= limits[1] + 1e-6


def _ranks(scores: list[np.ndarray]) -> list[np.ndarray]:
    """Channel order per group, best first; ties broken by lower index (stable sort)."""
    return [np.argsort(-np.asarray(s, dtype=np.float64), kind="stable") for s in scores]


def make_selection(scores: list[np.ndarray], counts: np.ndarray, cost: CostModel) -> Selection:
    """Keep the ``counts[g]`` best channels of each group (indices returned sorted)."""
    ranks = _ranks(scores)
    keep = tuple(np.sort(r[: int(c)]) for r, c in zip(ranks, counts, strict=True))
    macs, params = cost.cost(counts)
    return Selection(tuple(int(c) for c in counts), keep, macs, params)


def check_reachable(cost: CostModel, widths: list[np.ndarray], limits: Limits) -> None:
    """Raise :class:`UnreachableBudgetError` (a ConfigError and a PruningError, exit 2) naming
    the smallest reachable cost if ``limits`` is unmet.
    """
    k_min = np.array([w[0] for w in widths], dtype=np.float64)
    if _fits(cost, k_min, limits):
        return
    macs, params = cost.cost(k_min)
    fixed_macs, fixed_params = cost.cost(np.zeros_like(k_min))
    dense_macs, dense_params = cost.dense
    msg = (
        f"budget unreachable: limits MACs<={limits[0]:.0f}, params<={limits[1]:.0f}, but the "
        f"smallest reachable model has {macs:.0f} MACs ({macs / dense_macs:.1%} of dense) and "
        f"{params:.0f} "
        f"params ({params / dense_params:.1%}) with every group at its minimum width "
        f"{[int(w[0]) for w in widths]} (min channels and round_to); {fixed_macs:.0f} MACs / "
        f"{fixed_params:.0f} params sit in layers that cannot be pruned (coupled to the input or "
        "output, or ignored). Relax the target (the smallest reachable budget is "
        f"--target-flops {macs / dense_macs:.4f} / --target-params {params / dense_params:.4f}), "
        "lower min_channels/round_to, or unignore layers."
    )
    raise UnreachableBudgetError(msg)


def _normalise(scores: list[np.ndarray], normalize: str) -> list[np.ndarray]:
    out = []
    for s in scores:
        s = np.asarray(s, dtype=np.float64)
        if normalize == "max":
            top = np.max(np.abs(s)) if s.size else 0.0
            s = s / top if top > 0 else np.zeros_like(s)
        elif normalize != "none":
            msg = f"normalize={normalize!r} is unknown; expected 'max' or 'none'"
            raise ConfigError(msg)
        out.append(s)
    return out


def _width_for(count: int, widths: np.ndarray) -> int:
    """Smallest allowed width >= count."""
    return int(widths[np.searchsorted(widths, count, side="left").clip(max=len(widths) - 1)])


def fill_pass(
    scores: list[np.ndarray],
    counts: np.ndarray,
    widths: list[np.ndarray],
    cost: CostModel,
    limits: Limits,
) -> np.ndarray:
    """Re-add the best removed channels, one allowed step at a time, while the budget holds."""
    ranks = _ranks(scores)
    counts = counts.copy()
    while True:
        best, best_gain = -1, -np.inf
        for g, w in enumerate(widths):
            idx = np.searchsorted(w, counts[g], side="right")
            if idx >= len(w):
                continue
            trial = counts.copy()
            trial[g] = w[idx]
            gain = float(np.mean(np.asarray(scores[g])[ranks[g][counts[g] : w[idx]]]))
            if gain > best_gain and _fits(cost, trial, limits):
                best, best_gain, best_width = g, gain, w[idx]
        if best < 0:
            return counts
        counts[best] = best_width


def select_global(
    scores: list[np.ndarray],
    cost: CostModel,
    limits: Limits,
    widths: list[np.ndarray],
    *,
    normalize: str = "max",
) -> Selection:
    """One global threshold on layer-normalised scores, then a fill pass (docs/methods.md §3.5).

    The threshold is the smallest one whose kept set meets the limits (found by bisection over
    the distinct score values); rounding to allowed widths always rounds the kept count up.
    """
    check_reachable(cost, widths, limits)
    normed = _normalise(scores, normalize)
    taus = np.unique(np.concatenate([*normed, [np.inf]]))

    def counts_at(tau: float) -> np.ndarray:
        return np.array(
            [_width_for(int(np.sum(s >= tau)), w) for s, w in zip(normed, widths, strict=True)]
        )

    lo, hi = 0, len(taus) - 1  # taus[hi] = inf always fits (checked above)
    while lo < hi:
        mid = (lo + hi) // 2
        if _fits(cost, counts_at(taus[mid]), limits):
            hi = mid
        else:
            lo = mid + 1
    counts = fill_pass(normed, counts_at(taus[lo]), widths, cost, limits)
    return make_selection(scores, counts, cost)


def select_uniform(
    scores: list[np.ndarray], cost: CostModel, limits: Limits, widths: list[np.ndarray]
) -> Selection:
    """One keep ratio for every group, the largest that meets the limits (bisection).

    Rounding to allowed widths leaves part of the budget unused; a fill pass then widens, one
    allowed step at a time, the group with the smallest kept fraction while the limits hold.
    Widths depend on the budget only, never on the scores.
    """
    check_reachable(cost, widths, limits)
    sizes = [int(w[-1]) for w in widths]

    def counts_at(ratio: float) -> np.ndarray:
        pairs = zip(sizes, widths, strict=True)
        return np.array([_width_for(math.ceil(ratio * c), w) for c, w in pairs])

    lo, hi = 0.0, 1.0
    if _fits(cost, counts_at(1.0), limits):
        lo = 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        if _fits(cost, counts_at(mid), limits):
            lo = mid
        else:
            hi = mid
    counts = counts_at(lo)
    while True:
        steps = []
        for g, w in enumerate(widths):
            idx = np.searchsorted(w, counts[g], side="right")
            if idx < len(w):
                trial = counts.copy()
                trial[g] = w[idx]
                if _fits(cost, trial, limits):
                    steps.append((counts[g] / sizes[g], g, trial))
        if not steps:
            return make_selection(scores, counts, cost)
        counts = min(steps, key=lambda t: (t[0], t[1]))[2]


def select_local(
    scores: list[np.ndarray], cost: CostModel, sparsity: list[float], widths: list[np.ndarray]
) -> Selection:
    """Per-group sparsity given by hand (CHIP style): prune ``int(s * C)`` channels, round up."""
    if len(sparsity) != len(scores):
        msg = f"got {len(sparsity)} sparsities for {len(scores)} prunable groups; give one each"
        raise ConfigError(msg)
    counts = []
    for s, w in zip(sparsity, widths, strict=True):
        if not 0.0 <= s < 1.0:
            msg = f"sparsity {s} is invalid; expected 0 <= s < 1"
            raise ConfigError(msg)
        size = int(w[-1])
        counts.append(_width_for(size - int(s * size), w))
    return make_selection(scores, np.array(counts), cost)


def step_cost(cost: CostModel, k: np.ndarray, g: int, width: int, limits: Limits) -> float:
    """Normalised saving of moving group ``g`` to ``width``: max(dMACs/M_B, dParams/P_B)."""
    base = cost.cost(k)
    trial = k.copy()
    trial[g] = width
    new = cost.cost(trial)
    triples = zip(base, new, limits, strict=True)
    parts = [(b - n) / lim for b, n, lim in triples if math.isfinite(lim)]
    return max(parts)


def select_greedy(
    scores: list[np.ndarray], cost: CostModel, limits: Limits, widths: list[np.ndarray]
) -> Selection:
    """Budget-exact greedy SELECT (docs/methods.md §5.3): drop least importance per cost, fill.

    Starting from the dense model, repeatedly remove the lowest-ranked step of the group with
    the smallest ``(score mass of the step) / (normalised cost saved)`` until the limits hold,
    then re-add removed steps in decreasing score order while they still hold.
    """
    check_reachable(cost, widths, limits)
    ranks = _ranks(scores)
    counts = np.array([int(w[-1]) for w in widths])
    while not _fits(cost, counts, limits):
        best, best_ratio, best_width = -1, np.inf, 0
        for g, w in enumerate(widths):
            idx = np.searchsorted(w, counts[g], side="left")
            if idx == 0:
                continue
            saved = step_cost(cost, counts, g, int(w[idx - 1]), limits)
            if saved <= 0:
                continue
            mass = float(np.sum(np.asarray(scores[g])[ranks[g][w[idx - 1] : counts[g]]]))
            if mass / saved < best_ratio:
                best, best_ratio, best_width = g, mass / saved, int(w[idx - 1])
        if best < 0:  # only zero-cost steps left; reachability was checked, so this is a bug
            msg = f"greedy selection stalled at widths {counts.tolist()} above the limits {limits}"
            raise PruningError(msg)
        counts[best] = best_width
    counts = fill_pass(scores, counts, widths, cost, limits)
    counts = _drop_and_refill(scores, counts, widths, cost, limits)
    return make_selection(scores, counts, cost)


def _drop_and_refill(
    scores: list[np.ndarray],
    counts: np.ndarray,
    widths: list[np.ndarray],
    cost: CostModel,
    limits: Limits,
    max_rounds: int = 20,
) -> np.ndarray:
    """Local search: drop a step of one or two groups, refill; keep it when the kept mass grows."""
    sorted_scores = [np.sort(np.asarray(s, dtype=np.float64))[::-1] for s in scores]

    def mass(k: np.ndarray) -> float:
        return sum(float(s[: int(c)].sum()) for s, c in zip(sorted_scores, k, strict=True))

    best = mass(counts)
    pairs = [(a, b) for a in range(len(widths)) for b in range(a, len(widths))]
    for _ in range(max_rounds):
        improved = False
        for a, b in pairs:  # drop one step of a and one of b (a == b: one step only)
            trial = _step_down(counts, a, widths[a])
            if a != b:
                trial = _step_down(trial, b, widths[b])
            if np.array_equal(trial, counts):
                continue
            trial = fill_pass(scores, trial, widths, cost, limits)
            if mass(trial) > best + 1e-12:
                counts, best, improved = trial, mass(trial), True
        if not improved:
            return counts
    return counts


def _step_down(counts: np.ndarray, g: int, w: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(w, counts[g], side="left")
    out = counts.copy()
    if idx > 0:
        out[g] = w[idx - 1]
    return out


#: Bins of the knapsack fill's cost axis (the DP's resolution over the reachable cost range).
KNAPSACK_BINS = 4096
#: DP rounds (re-linearised around the last best candidate) and exact checks per round.
KNAPSACK_ROUNDS, KNAPSACK_TRIES = 6, 64


def knapsack_fill(
    scores: list[np.ndarray],
    counts: np.ndarray,
    widths: list[np.ndarray],
    cost: CostModel,
    limits: Limits,
    band: float = 0.02,
) -> np.ndarray:
    """Widths within ``band`` below the MACs limit when greedy + fill stops short of it.

    ``counts`` (a maximal greedy selection) is returned unchanged when its MACs are already
    within ``band`` of ``limits[0]`` or the MACs are not limited. Otherwise a DP over the groups
    (a multiple-choice knapsack: one allowed width per group, the cost axis in
    :data:`KNAPSACK_BINS` bins) maximises the kept score mass (sum of the best ``k`` scores
    per group) among the assignments whose MACs land in ``[(1 - band) * limit, limit]``.
    Costs are taken per group around a centre (a layer between two changed groups makes that
    approximate), so every candidate is checked with the exact cost model and both limits;
    when none fits, the DP is repeated around its own best candidate (a few rounds). Returns
    the first exact fit, or ``counts`` when none lands in the band.
    """
    limit = limits[0]
    if not math.isfinite(limit) or cost.cost(counts)[0] >= (1 - band) * limit:
        return counts
    top = [np.concatenate([[0.0], np.cumsum(np.sort(np.asarray(s, float))[::-1])]) for s in scores]
    centre = counts.astype(np.int64)
    for _ in range(KNAPSACK_ROUNDS):
        candidates = _knapsack_candidates(top, centre, widths, cost, (1 - band) * limit, limit)
        for k in candidates:
            if _fits(cost, k, limits) and cost.cost(k)[0] >= (1 - band) * limit:
                return k
        if not candidates or np.array_equal(candidates[0], centre):
            break
        centre = candidates[0]
    return counts


def _knapsack_candidates(
    top: list[np.ndarray],
    centre: np.ndarray,
    widths: list[np.ndarray],
    cost: CostModel,
    floor: float,
    limit: float,
) -> list[np.ndarray]:
    """The DP's best assignments (most mass first) with linearised MACs in ``[floor, limit]``."""
    macs_now = cost.cost(centre)[0]
    deltas = [
        np.array([cost.cost(_with(centre, g, int(x)))[0] - macs_now for x in w])
        for g, w in enumerate(widths)
    ]
    shift = macs_now + sum(float(d.min()) for d in deltas)  # linearised MACs at bin 0
    deltas = [d - d.min() for d in deltas]
    span = limit - shift  # the shifted cost axis: [0, span] is within the limit
    if span <= 0:
        return []
    unit = span / KNAPSACK_BINS
    steps = [np.rint(d / unit).astype(np.int64) for d in deltas]
    value = np.full(KNAPSACK_BINS + 1, -np.inf)
    value[0] = 0.0
    choice = np.zeros((len(widths), KNAPSACK_BINS + 1), dtype=np.int64)
    for g, w in enumerate(widths):
        new = np.full_like(value, -np.inf)
        for j, width in enumerate(w):
            b = int(steps[g][j])
            if b > KNAPSACK_BINS:
                continue
            cand = np.full_like(value, -np.inf)
            cand[b:] = value[: KNAPSACK_BINS + 1 - b] + top[g][int(width)]
            better = cand > new
            new[better] = cand[better]
            choice[g, better] = j
        value = new
    first = (floor - shift) / unit
    order = np.argsort(-value, kind="stable")
    bins = [int(b) for b in order if np.isfinite(value[b]) and b >= first][:KNAPSACK_TRIES]
    out = []
    for b in bins:
        k = np.empty(len(widths), dtype=np.int64)
        at = b
        for g in range(len(widths) - 1, -1, -1):
            j = int(choice[g, at])
            k[g] = widths[g][j]
            at -= int(steps[g][j])
        out.append(k)
    return out


def _with(counts: np.ndarray, g: int, width: int) -> np.ndarray:
    out = counts.copy()
    out[g] = width
    return out


def warn_if_noop(budget: Budget) -> bool:
    """Warn and return True when the budget keeps everything."""
    if budget.is_noop:
        warnings.warn("budget keeps 100% of the model; nothing will be pruned", stacklevel=3)
        return True
    return False


@dataclass(frozen=True)
class SelectionInput:
    """What a selection rule decides from: scores, cost model, limits and allowed widths.

    Attributes:
        scores: Per group, one score per channel (higher = keep).
        cost: The MACs/params cost model of the channel graph.
        limits: (MACs limit, params limit).
        widths: Per group, the allowed kept widths (ascending).
        normalize: Score normalisation of global selection (``max``, ``l2``, ``none``).
        sparsity: Per-group sparsity of local selection.
    """

    scores: list[np.ndarray]
    cost: CostModel
    limits: Limits
    widths: list[np.ndarray]
    normalize: str = "max"
    sparsity: Sequence[float] | None = None


#: Selection rules by name: ``global`` (one threshold over normalised scores), ``uniform`` (one
#: keep ratio), ``greedy`` (cost-aware, budget-exact; tailored's SELECT), ``local`` (given
#: per-group sparsity).
SELECTIONS: Registry[Callable[[SelectionInput], Selection]] = Registry("selection")


@SELECTIONS.register("global", help="one threshold over normalised scores, all groups")
def _global(inp: SelectionInput) -> Selection:
    return select_global(inp.scores, inp.cost, inp.limits, inp.widths, normalize=inp.normalize)


@SELECTIONS.register("uniform", help="one keep ratio for every group")
def _uniform(inp: SelectionInput) -> Selection:
    return select_uniform(inp.scores, inp.cost, inp.limits, inp.widths)


@SELECTIONS.register("greedy", help="cost-aware greedy removal to the budget")
def _greedy(inp: SelectionInput) -> Selection:
    return select_greedy(inp.scores, inp.cost, inp.limits, inp.widths)


@SELECTIONS.register("local", help="a given sparsity per group (CHIP style)")
def _local(inp: SelectionInput) -> Selection:
    if not inp.sparsity:
        msg = "selection 'local' needs one sparsity per group (sparsity=[...])"
        raise ConfigError(msg)
    return select_local(inp.scores, inp.cost, list(inp.sparsity), inp.widths)
