"""Clustering pruning from multidimensional channel information (Sun et al., NPL 2024).

Only the abstract was available; this is the reconstruction of methods.md §4 [R]. Each filter
is described by (mean, variance, cosine distance from the all-ones direction); k-means groups
the filters of a layer; inside a cluster the NSGA-II crowding distance ranks members (diverse
first); a SHADE-style differential evolution picks the number of clusters per layer with a
BN-recalibrated accuracy as fitness. The criterion turns the clustering into per-channel scores
whose top-n is a proportional, at-least-one-per-cluster choice, so the engine's selection
(``uniform`` keep ratio by default, §4.5) applies unchanged.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from tinyprune.criteria.base import CRITERIA, Granularity, ScoreInput
from tinyprune.errors import ConfigError

log = logging.getLogger(__name__)
SOURCES = ("weights", "mixed", "layer_direction")


def descriptors(
    weight: torch.Tensor, source: str = "weights", features: torch.Tensor | None = None
) -> np.ndarray:
    """``(C, 3)`` float64 descriptors ``(mu, var, delta)`` of each output filter (§4.2)."""
    v = weight.reshape(weight.shape[0], -1).double()
    mu, var = v.mean(dim=1), v.var(dim=1, unbiased=False)
    norm = torch.linalg.vector_norm(v, dim=1).clamp(min=1e-12)
    if source == "layer_direction":
        ref = (v / norm[:, None]).mean(dim=0)
        direction = ref / torch.linalg.vector_norm(ref).clamp(min=1e-12)
    else:
        direction = torch.full((v.shape[1],), 1.0 / math.sqrt(v.shape[1]), dtype=torch.float64)
    delta = 1.0 - (v @ direction) / norm
    if source == "mixed":
        if features is None:
            msg = "descriptor source 'mixed' needs output activations (calibration data)"
            raise ConfigError(msg)
        f = features.transpose(0, 1).reshape(features.shape[1], -1).double()
        mu, var = f.mean(dim=1), f.var(dim=1, unbiased=False)
    elif source not in SOURCES:
        msg = f"descriptor source {source!r} is unknown; expected one of: {', '.join(SOURCES)}"
        raise ConfigError(msg)
    return torch.stack([mu, var, delta], dim=1).numpy()


def standardise(d: np.ndarray) -> np.ndarray:
    """z-score per descriptor dimension (constant dimensions become 0)."""
    std = d.std(axis=0)
    return (d - d.mean(axis=0)) / np.where(std > 0, std, 1.0)


_KMEANS_CACHE: dict[tuple[str, int, int], np.ndarray] = {}
_KMEANS_CACHE_SIZE = 4096


def kmeans_labels(points: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """k-means++ labels (``n_init=10``, ``max_iter=300``, fixed seed; §4.3).

    Results are cached per (points, k, seed): a DE search asks for the same clusterings of the
    same filters hundreds of times (§4.3 precomputes them once).
    """
    from sklearn.cluster import KMeans

    k = max(1, min(k, len(points)))
    if k == 1:
        return np.zeros(len(points), dtype=np.int64)
    pts = np.ascontiguousarray(points, dtype=np.float64)
    key = (hashlib.sha1(pts.tobytes() + str(pts.shape).encode()).hexdigest(), k, seed)
    if key not in _KMEANS_CACHE:
        if len(_KMEANS_CACHE) >= _KMEANS_CACHE_SIZE:
            _KMEANS_CACHE.pop(next(iter(_KMEANS_CACHE)))
        km = KMeans(n_clusters=k, init="k-means++", n_init=10, max_iter=300, random_state=seed)
        _KMEANS_CACHE[key] = np.asarray(km.fit_predict(pts), dtype=np.int64)
    return _KMEANS_CACHE[key].copy()


def crowding_distance(points: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each point among ``points`` (``(n, m)``; extremes ``inf``)."""
    n, m = points.shape
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(m):
        order = np.argsort(points[:, j], kind="stable")
        f = points[order, j]
        dist[order[0]] = dist[order[-1]] = np.inf
        span = f[-1] - f[0]
        if span > 0:
            dist[order[1:-1]] += (f[2:] - f[:-2]) / span
    return dist


def cluster_priority(labels: np.ndarray, crowd: np.ndarray, l1: np.ndarray) -> np.ndarray:
    """Per-channel scores whose top-n keeps >= 1 per cluster, then proportional shares.

    Inside a cluster of size ``n_S`` members are ranked by crowding distance, ties by L1 norm
    (§4.5). The best member of every cluster scores in (1, 2]; member of rank ``r`` otherwise
    scores ``1 - (r + 0.5) / n_S`` (Sainte-Lague apportionment: keeping the top n gives each
    cluster about ``n * n_S / C`` channels).
    """
    scores = np.zeros(len(labels))
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        order = np.lexsort((members, -l1[members], -crowd[members]))  # crowd desc, l1 desc, index
        ranks = np.empty(len(members))
        ranks[order] = np.arange(len(members))
        n_s = len(members)
        scores[members] = np.where(ranks == 0, 2.0 - 0.5 / n_s, 1.0 - (ranks + 0.5) / n_s)
    return scores


def select_in_clusters(
    labels: np.ndarray, crowd: np.ndarray, l1: np.ndarray, n_keep: int
) -> np.ndarray:
    """Indices (sorted) of the ``n_keep`` channels kept by the cluster rule."""
    order = np.argsort(-cluster_priority(labels, crowd, l1), kind="stable")
    return np.sort(order[:n_keep])


@CRITERIA.register("cluster_de", help="k-means of filter descriptors + crowding; DE picks k")
@dataclass(frozen=True)
class ClusterDECriterion:
    """Sun et al. 2024 (Neural Processing Letters, doi:10.1007/s11063-024-11684-z).

    Importance = the cluster priority of :func:`cluster_priority` (isolated filters of each
    cluster first). ``k_per_layer`` comes from :func:`search_clusters` (DE); layers not listed
    use ``n_clusters``.
    """

    n_clusters: int = 4
    k_per_layer: tuple[tuple[str, int], ...] = ()
    source: str = "weights"
    seed: int = 0
    name: ClassVar[str] = "cluster_de"
    granularity: ClassVar[Granularity] = Granularity.CHANNEL
    needs_grad: ClassVar[bool] = False
    selection: ClassVar[str] = "uniform"

    def __post_init__(self) -> None:
        if self.source not in SOURCES or self.n_clusters < 1:
            msg = (
                f"cluster_de(source={self.source!r}, n_clusters={self.n_clusters}) invalid; "
                f"expected a source in {SOURCES} and n_clusters >= 1"
            )
            raise ConfigError(msg)

    @property
    def needs_data(self) -> bool:
        """Only the ``mixed`` source reads activations."""
        return self.source == "mixed"

    def clusters_for(self, layer: str, channels: int) -> int:
        """Number of clusters of ``layer``, within ``[1, channels - 1]``."""
        k = dict(self.k_per_layer).get(layer, self.n_clusters)
        return max(1, min(int(k), channels - 1))

    def score(self, inp: ScoreInput) -> torch.Tensor:
        """Cluster priority per output channel."""
        c = inp.weight.shape[0]
        l1 = inp.weight.reshape(c, -1).abs().sum(dim=1).double().numpy()
        d = standardise(descriptors(inp.weight, self.source, inp.features))
        labels = kmeans_labels(d, self.clusters_for(inp.name, c), self.seed)
        crowd = np.zeros(c)
        for lab in np.unique(labels):
            members = np.flatnonzero(labels == lab)
            crowd[members] = crowding_distance(d[members])
        return torch.from_numpy(cluster_priority(labels, crowd, l1))


@dataclass
class DEResult:
    """Best integer vector, its fitness, and the SHADE bookkeeping."""

    best_x: np.ndarray
    best_f: float
    evaluations: int
    memory_updates: int
    memory_f: list[np.ndarray] = field(default_factory=list)  # M_F after each generation


def _init_population(
    rng: np.random.Generator,
    lo: np.ndarray,
    hi: np.ndarray,
    pop: int,
    fit: Callable[[np.ndarray], float],
    opposition: bool,
) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(lo, hi, size=(pop, len(lo)))
    if opposition:
        x = np.concatenate([x, lo + hi - x])
    f = np.array([fit(row) for row in x])
    best = np.argsort(-f, kind="stable")[:pop]
    return x[best], f[best]


def shade_de(
    fitness: Callable[[np.ndarray], float],
    lo: Sequence[float],
    hi: Sequence[float],
    *,
    pop: int = 20,
    gens: int = 30,
    memory: int = 5,
    p_best: float = 0.1,
    seed: int = 0,
    opposition: bool = True,
) -> DEResult:
    """Maximise ``fitness`` over integer vectors in ``[lo, hi]`` with SHADE (§4.6).

    current-to-pbest/1 mutation with an archive, success-history memories of F (weighted Lehmer
    mean) and CR (weighted mean), binomial crossover, midpoint bound repair, greedy selection.
    Individuals are real and decoded by rounding; fitness values are cached per decoded vector.
    """
    rng = np.random.default_rng(seed)
    lo_a, hi_a = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    cache: dict[tuple[int, ...], float] = {}

    def fit(x: np.ndarray) -> float:
        key = tuple(int(v) for v in np.clip(np.rint(x), lo_a, hi_a))
        if key not in cache:
            cache[key] = float(fitness(np.array(key)))
        return cache[key]

    x, f = _init_population(rng, lo_a, hi_a, pop, fit, opposition)
    m_f, m_cr, k = np.full(memory, 0.5), np.full(memory, 0.5), 0
    archive: list[np.ndarray] = []
    updates, history = 0, []
    for _ in range(gens):
        s_f, s_cr, gains = [], [], []
        order = np.argsort(-f, kind="stable")
        for i in range(pop):
            r = rng.integers(memory)
            cr = float(np.clip(rng.normal(m_cr[r], 0.1), 0, 1))
            fi = 0.0
            while fi <= 0:
                fi = m_f[r] + 0.1 * math.tan(math.pi * (rng.random() - 0.5))
            fi = min(fi, 1.0)
            pb = x[order[rng.integers(max(2, round(p_best * pop)))]]
            r1 = rng.choice([j for j in range(pop) if j != i])
            union = [x[j] for j in range(pop) if j not in (i, r1)] + archive
            xr2 = union[rng.integers(len(union))]
            v = x[i] + fi * (pb - x[i]) + fi * (x[r1] - xr2)
            v = np.where(v < lo_a, (lo_a + x[i]) / 2, np.where(v > hi_a, (hi_a + x[i]) / 2, v))
            mask = rng.random(len(lo_a)) < cr
            mask[rng.integers(len(lo_a))] = True
            u = np.where(mask, v, x[i])
            if np.array_equal(np.rint(u), np.rint(x[i])):  # [R] integer-aware: never waste a trial
                j = rng.integers(len(lo_a))
                u[j] = np.clip(np.rint(x[i][j]) + rng.choice([-1.0, 1.0]), lo_a[j], hi_a[j])
            fu = fit(u)
            if fu >= f[i]:
                if fu > f[i]:
                    s_f.append(fi)
                    s_cr.append(cr)
                    gains.append(fu - f[i])
                    archive.append(x[i].copy())
                    if len(archive) > pop:
                        archive.pop(int(rng.integers(len(archive))))
                x[i], f[i] = u, fu
        if s_f:
            w = np.array(gains) / np.sum(gains)
            sf = np.array(s_f)
            m_f[k] = float(np.sum(w * sf**2) / np.sum(w * sf))
            m_cr[k] = float(np.sum(w * np.array(s_cr)))
            k, updates = (k + 1) % memory, updates + 1
        history.append(m_f.copy())
    best = int(np.argmax(f))
    best_x = np.clip(np.rint(x[best]), lo_a, hi_a).astype(int)
    return DEResult(best_x, float(f[best]), len(cache), updates, history)


def recalibrate_bn_(model: nn.Module, batches: Iterable[Any]) -> None:
    """Re-estimate BN running statistics (cumulative average, train-mode forward, no grad)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        for batch in batches:
            model(batch[0] if isinstance(batch, (tuple, list)) else batch)
    model.eval()


def accuracy(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Top-1 accuracy over ``(x, y)`` batches."""
    correct = total = 0
    with torch.no_grad():
        for xb, yb in batches:
            correct += int((model(xb).argmax(dim=1) == yb).sum())
            total += int(yb.numel())
    return correct / max(total, 1)


def neg_cross_entropy(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> float:
    """Minus the mean cross-entropy over ``(x, y)`` batches (a smooth fitness, higher = better)."""
    total, n = 0.0, 0
    with torch.no_grad():
        for xb, yb in batches:
            total += float(nn.functional.cross_entropy(model(xb), yb, reduction="sum"))
            n += int(yb.numel())
    return -total / max(n, 1)


METRICS: dict[str, Callable[..., float]] = {"accuracy": accuracy, "neg_ce": neg_cross_entropy}


class _MaskedEvaluator:
    """Fitness by zeroing removed channels of one working copy (no copy or surgery per trial).

    The first call checks that the masked copy equals the physically pruned network on the
    example input; if an activation does not map 0 to 0 it falls back to real surgery.
    """

    def __init__(self, model: nn.Module, example_input: Any, budget: Any, round_to: int) -> None:
        from tinyprune.pruning import select as sel
        from tinyprune.pruning.channel_mask import bn_momenta, bn_state
        from tinyprune.pruning.structured import ChannelGraph

        self.model, self.example, self.budget, self.round_to = (
            model,
            example_input,
            budget,
            round_to,
        )
        self.work = copy.deepcopy(model).eval()
        self.graph = ChannelGraph(self.work, example_input)
        self.cost = self.graph.cost_model()
        limits = budget.limits(*self.cost.dense)
        widths = [sel.allowed_widths(g.size, round_to, 1) for g in self.graph.groups]
        zeros = [np.zeros(g.size) for g in self.graph.groups]
        self.counts = np.array(sel.select_uniform(zeros, self.cost, limits, widths).counts)
        self.bn0, self.momenta = bn_state(self.work), bn_momenta(self.work)
        self.exact: bool | None = None

    def __call__(
        self,
        crit: ClusterDECriterion,
        calib: Sequence[Any],
        heldout: Sequence[Any],
        metric: Callable[..., float],
    ) -> float:
        from tinyprune.pruning.channel_mask import masked_channels, restore_bn_state_
        from tinyprune.pruning.select import make_selection
        from tinyprune.pruning.structured import score_groups

        if self.exact is None:
            self.exact = self._check(crit)
        if not self.exact:
            return _pruned_fitness(
                self.model, self.example, crit, self.budget, calib, heldout, self.round_to, metric
            )
        keep = make_selection(score_groups(self.graph, crit), self.counts, self.cost).keep
        try:
            with masked_channels(self.graph, keep):
                recalibrate_bn_(self.work, calib)
                return metric(self.work, heldout)
        finally:
            restore_bn_state_(self.work, self.bn0, self.momenta)
            self.work.eval()

    def _check(self, crit: ClusterDECriterion) -> bool:
        from tinyprune.pruning.channel_mask import masked_channels
        from tinyprune.pruning.select import make_selection
        from tinyprune.pruning.structured import prune_structured, score_groups

        pruned = copy.deepcopy(self.model).eval()
        prune_structured(
            pruned, self.example, crit, self.budget, round_to=self.round_to, sync_ranks=False
        )  # deterministic weights-only scores; no collective
        keep = make_selection(score_groups(self.graph, crit), self.counts, self.cost).keep
        with torch.no_grad(), masked_channels(self.graph, keep):
            a, b = self.work(self.example), pruned(self.example)
        return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-5))


def _pruned_fitness(
    model: nn.Module,
    example_input: Any,
    crit: ClusterDECriterion,
    budget: Any,
    calib: Sequence[Any],
    heldout: Sequence[Any],
    round_to: int,
    metric: Callable[..., float],
) -> float:
    from tinyprune.pruning.structured import prune_structured

    pruned = copy.deepcopy(model)
    prune_structured(pruned, example_input, crit, budget, round_to=round_to, sync_ranks=False)
    recalibrate_bn_(pruned, calib)
    return metric(pruned, heldout)


def cluster_fitness(
    model: nn.Module,
    example_input: Any,
    budget: Any,
    layers: Sequence[str],
    calib: Sequence[Any],
    heldout: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    round_to: int = 4,
    seed: int = 0,
    metric: str | Callable[..., float] = "accuracy",
    masked: bool = True,
    sync_ranks: bool = True,
) -> Callable[[np.ndarray], float]:
    """Fitness of a clusters-per-layer vector: prune (or mask) a copy, recalibrate BN, score.

    Args:
        metric: ``"accuracy"`` (held-out top-1, §4.6) or ``"neg_ce"`` (minus the mean
            cross-entropy: smooth when few held-out images are used), or a callable
            ``metric(model, heldout) -> float`` (higher = better, e.g. minus an rPPG loss).
        masked: Evaluate by zeroing channels of one working copy (exact, much faster) instead
            of a deep copy and surgery per call.
        sync_ranks: Under DDP, average each fitness value over replicas (each scores its own
            calibration/held-out shard), so every replica follows the same DE trajectory.
            Every replica must then evaluate the same vectors in the same order.
    """
    if not callable(metric) and metric not in METRICS:
        msg = f"fitness metric {metric!r} is unknown; expected one of: {', '.join(METRICS)}"
        raise ConfigError(msg)
    score = metric if callable(metric) else METRICS[metric]
    evaluator = _MaskedEvaluator(model, example_input, budget, round_to) if masked else None

    def local(k: np.ndarray) -> float:
        ks = tuple(zip(layers, (int(v) for v in k), strict=True))
        crit = ClusterDECriterion(k_per_layer=ks, seed=seed)
        if evaluator is not None:
            return evaluator(crit, calib, heldout, score)
        return _pruned_fitness(model, example_input, crit, budget, calib, heldout, round_to, score)

    def fitness(k: np.ndarray) -> float:
        value = local(k)
        if sync_ranks:
            from tinyprune.training.distributed import consensus_mean

            value = float(consensus_mean(np.array([value]))[0])
        return value

    return fitness


@dataclass(frozen=True)
class SearchReport:
    """What a DE cluster search did (for logs and benchmark tables)."""

    pop: int
    gens: int
    evaluations: int
    calib_images: int
    heldout_images: int
    best_fitness: float
    seconds: float
    metric: str


def search_clusters_report(
    model: nn.Module,
    example_input: Any,
    budget: Any,
    calib: Sequence[Any],
    heldout: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    k_max: int = 16,
    pop: int = 20,
    gens: int = 30,
    round_to: int = 4,
    seed: int = 0,
    metric: str | Callable[..., float] = "accuracy",
    sync_ranks: bool = True,
) -> tuple[ClusterDECriterion, SearchReport]:
    """Run the DE of §4.6; return the configured criterion and a :class:`SearchReport`.

    Under DDP with ``sync_ranks`` every replica must call this (fitness values are averaged
    over replicas, each on its own data shard); all replicas return rank 0's best vector.
    With ``sync_ranks=False`` the search is local (e.g. run on rank 0 only).
    """
    from tinyprune.pruning.structured import ChannelGraph
    from tinyprune.training import distributed

    start = time.perf_counter()
    graph = ChannelGraph(copy.deepcopy(model).eval(), example_input)
    layers = [s.name for g in graph.groups for s in g.members]
    sizes = [model.get_submodule(n).weight.shape[0] for n in layers]
    lo = [2] * len(layers)
    hi = [max(2, min(k_max, c - 1)) for c in sizes]
    fit = cluster_fitness(
        model,
        example_input,
        budget,
        layers,
        calib,
        heldout,
        round_to=round_to,
        seed=seed,
        metric=metric,
        sync_ranks=sync_ranks,
    )
    result = shade_de(fit, lo, hi, pop=pop, gens=gens, seed=seed)
    best = result.best_x.tolist()
    if sync_ranks:
        best = distributed.broadcast_object(best, src=0)
    ks = tuple(zip(layers, best, strict=True))
    report = SearchReport(
        pop,
        gens,
        result.evaluations,
        _count(calib),
        _count(heldout),
        result.best_f,
        time.perf_counter() - start,
        metric if isinstance(metric, str) else getattr(metric, "__name__", "?"),
    )
    log.info("cluster DE search: %s", report)
    return ClusterDECriterion(k_per_layer=ks, seed=seed), report


def _count(batches: Sequence[Any]) -> int:
    return sum(int((b[0] if isinstance(b, (tuple, list)) else b).shape[0]) for b in batches)


def search_clusters(
    model: nn.Module,
    example_input: Any,
    budget: Any,
    calib: Sequence[Any],
    heldout: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    k_max: int = 16,
    pop: int = 20,
    gens: int = 30,
    round_to: int = 4,
    seed: int = 0,
    metric: str | Callable[..., float] = "accuracy",
    sync_ranks: bool = True,
) -> ClusterDECriterion:
    """Run the DE of §4.6 and return the criterion configured with the best ``k`` per layer."""
    crit, _ = search_clusters_report(
        model,
        example_input,
        budget,
        calib,
        heldout,
        k_max=k_max,
        pop=pop,
        gens=gens,
        round_to=round_to,
        seed=seed,
        metric=metric,
        sync_ranks=sync_ranks,
    )
    return crit
