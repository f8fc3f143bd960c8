"""SHADE differential evolution over bounded integer vectors (docs/methods.md §4.6).

Tanabe & Fukunaga's success-history adaptation of JADE (CEC 2013): current-to-pbest/1 mutation
with an archive, per-individual F ~ Cauchy and CR ~ Normal drawn from success memories, binomial
crossover, midpoint bound repair, greedy one-to-one selection. Generations are synchronous, as in
the paper: all trial vectors of a generation are built from the same population and evaluated
together, so a caller may evaluate them in parallel (``evaluate_many``). ``cluster_search`` uses
it to pick the number of k-means clusters per layer; it knows nothing about networks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

#: Evaluates a list of integer vectors; returns one fitness per vector (higher = better).
EvaluateMany = Callable[[Sequence[np.ndarray]], Sequence[float]]


@dataclass
class DEResult:
    """Best integer vector, its fitness, and the SHADE bookkeeping."""

    best_x: np.ndarray
    best_f: float
    evaluations: int
    memory_updates: int
    memory_f: list[np.ndarray] = field(default_factory=list)  # M_F after each generation


class _Cache:
    """Fitness per decoded (rounded, clipped) vector; new vectors are evaluated in one batch."""

    def __init__(self, evaluate_many: EvaluateMany, lo: np.ndarray, hi: np.ndarray) -> None:
        self.evaluate_many, self.lo, self.hi = evaluate_many, lo, hi
        self.values: dict[tuple[int, ...], float] = {}

    def key(self, x: np.ndarray) -> tuple[int, ...]:
        return tuple(int(v) for v in np.clip(np.rint(x), self.lo, self.hi))

    def __call__(self, xs: np.ndarray) -> np.ndarray:
        keys = [self.key(x) for x in xs]
        new = list(dict.fromkeys(k for k in keys if k not in self.values))
        if new:
            got = self.evaluate_many([np.array(k) for k in new])
            if len(got) != len(new):
                msg = f"evaluate_many returned {len(got)} values for {len(new)} vectors"
                raise ValueError(msg)
            self.values.update(zip(new, (float(v) for v in got), strict=True))
        return np.array([self.values[k] for k in keys])


class _Memory:
    """SHADE's success-history memories of F and CR (``size`` slots, updated round-robin)."""

    def __init__(self, size: int) -> None:
        self.m_f, self.m_cr = np.full(size, 0.5), np.full(size, 0.5)
        self.slot = self.updates = 0

    def draw(self, rng: np.random.Generator) -> tuple[float, float]:
        """F ~ Cauchy(M_F[r], 0.1) redrawn while <= 0, max 1; CR ~ N(M_CR[r], 0.1) in [0, 1]."""
        r = rng.integers(len(self.m_f))
        cr = float(np.clip(rng.normal(self.m_cr[r], 0.1), 0, 1))
        fi = 0.0
        while fi <= 0:
            fi = self.m_f[r] + 0.1 * math.tan(math.pi * (rng.random() - 0.5))
        return min(fi, 1.0), cr

    def update(self, params: list[tuple[float, float]], gains: list[float]) -> None:
        """Weighted Lehmer mean of successful F, weighted mean of successful CR (if any)."""
        if not params:
            return
        w = np.array(gains) / np.sum(gains)
        sf, scr = np.array([p[0] for p in params]), np.array([p[1] for p in params])
        self.m_f[self.slot] = float(np.sum(w * sf**2) / np.sum(w * sf))
        self.m_cr[self.slot] = float(np.sum(w * scr))
        self.slot, self.updates = (self.slot + 1) % len(self.m_f), self.updates + 1


@dataclass(frozen=True)
class SHADEConfig:
    """SHADE's settings (Tanabe & Fukunaga's defaults, except the population).

    Attributes:
        pop: Population size (>= 4: current-to-pbest/1 needs x_i, x_r1, x_r2 and a best).
        gens: Generations.
        memory: Slots of the F and CR success memories.
        p_best: Share of the population the p-best member is drawn from.
        seed: Seeds the DE's random generator.
        opposition: Also evaluate the opposite of each initial vector, keep the best ``pop``.
    """

    pop: int = 20
    gens: int = 30
    memory: int = 5
    p_best: float = 0.1
    seed: int = 0
    opposition: bool = True


@dataclass(frozen=True)
class _Bounds:
    lo: np.ndarray
    hi: np.ndarray


def _trial(
    rng: np.random.Generator,
    x: np.ndarray,
    i: int,
    order: np.ndarray,
    archive: list[np.ndarray],
    bounds: _Bounds,
    params: tuple[float, float],
    p_best: float,
) -> np.ndarray:
    """current-to-pbest/1 with archive, midpoint repair, binomial crossover (one forced gene).

    ``params`` is the individual's ``(F, CR)``.
    """
    lo, hi = bounds.lo, bounds.hi
    fi, cr = params
    pop = len(x)
    pb = x[order[rng.integers(max(2, round(p_best * pop)))]]
    r1 = rng.choice([j for j in range(pop) if j != i])
    union = [x[j] for j in range(pop) if j not in (i, r1)] + archive
    xr2 = union[rng.integers(len(union))]
    v = x[i] + fi * (pb - x[i]) + fi * (x[r1] - xr2)
    v = np.where(v < lo, (lo + x[i]) / 2, np.where(v > hi, (hi + x[i]) / 2, v))
    mask = rng.random(len(lo)) < cr
    mask[rng.integers(len(lo))] = True
    u: np.ndarray = np.where(mask, v, x[i])
    if np.array_equal(np.rint(u), np.rint(x[i])):  # [R] integer-aware: never waste a trial
        j = rng.integers(len(lo))
        u[j] = np.clip(np.rint(x[i][j]) + rng.choice([-1.0, 1.0]), lo[j], hi[j])
    return u


def shade_de(
    fitness: Callable[[np.ndarray], float] | None,
    lo: Sequence[float],
    hi: Sequence[float],
    config: SHADEConfig | None = None,
    *,
    evaluate_many: EvaluateMany | None = None,
) -> DEResult:
    """Maximise a fitness over integer vectors in ``[lo, hi]`` with SHADE (§4.6).

    Give either ``fitness`` (one vector -> value) or ``evaluate_many`` (a list of vectors ->
    values, e.g. in parallel processes). Individuals are real and decoded by rounding; each
    distinct decoded vector is evaluated once. Initialisation is uniform plus its opposition
    (``lo + hi - x``), keeping the best ``pop``. Success memories of F (weighted Lehmer mean)
    and CR (weighted mean) are updated only in generations with at least one improvement.
    ``config`` holds population, generations, memory size, p-best share, seed and opposition
    (default :class:`SHADEConfig`).
    """
    cfg = config or SHADEConfig()
    pop = cfg.pop
    if evaluate_many is None:
        if fitness is None:
            msg = "shade_de needs fitness or evaluate_many"
            raise ValueError(msg)
        scalar = fitness

        def evaluate_many(xs: Sequence[np.ndarray]) -> list[float]:
            return [scalar(x) for x in xs]

    if pop < 4:  # current-to-pbest/1 needs x_i, x_r1 and x_r2 distinct (and a best)
        msg = f"SHADE needs a population of at least 4, got {pop}"
        raise ValueError(msg)
    rng = np.random.default_rng(cfg.seed)
    lo_a, hi_a = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    bounds = _Bounds(lo_a, hi_a)
    fit = _Cache(evaluate_many, lo_a, hi_a)
    x = rng.uniform(lo_a, hi_a, size=(pop, len(lo_a)))
    if cfg.opposition:
        x = np.concatenate([x, lo_a + hi_a - x])
    f = fit(x)
    keep = np.argsort(-f, kind="stable")[:pop]
    x, f = x[keep], f[keep]
    mem = _Memory(cfg.memory)
    archive: list[np.ndarray] = []
    history = []
    for _ in range(cfg.gens):
        order = np.argsort(-f, kind="stable")
        params = [mem.draw(rng) for _ in range(pop)]
        trials = [
            _trial(rng, x, i, order, archive, bounds, fc, cfg.p_best) for i, fc in enumerate(params)
        ]
        fu = fit(np.array(trials))
        wins = [i for i in range(pop) if fu[i] > f[i]]
        archive += [x[i].copy() for i in wins]
        mem.update([params[i] for i in wins], [fu[i] - f[i] for i in wins])
        for i in range(pop):
            if fu[i] >= f[i]:  # greedy one-to-one selection (ties move too)
                x[i], f[i] = trials[i], fu[i]
        while len(archive) > pop:
            archive.pop(int(rng.integers(len(archive))))
        history.append(mem.m_f.copy())
    best = int(np.argmax(f))
    best_x = np.clip(np.rint(x[best]), lo_a, hi_a).astype(int)
    return DEResult(best_x, float(f[best]), len(fit.values), mem.updates, history)
