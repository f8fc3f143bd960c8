"""The DE search of ``cluster_de``: k-means clusters per layer (docs/methods.md §4.6).

The fitness of a clusters-per-layer vector is the network pruned with those clusterings
(torch-pruning surgery on a copy, the same code path as the final prune), its BatchNorm
statistics recalibrated on training images, scored on held-out training images. Pruned copies
run channels-last: the same values up to float rounding, about 1.3-2x faster on CPU convs.
Default settings: :class:`tinyprune.config.DESearchConfig`.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from tinyprune.config import DESearchConfig
from tinyprune.criteria.base import CRITERIA
from tinyprune.criteria.shade import SHADEConfig, shade_de
from tinyprune.errors import ConfigError, PruningError
from tinyprune.pruning.bn_recal import recalibrate_bn_

if TYPE_CHECKING:  # cluster_de imports this module for its search
    from tinyprune.criteria.cluster_de import ClusterDECriterion

log = logging.getLogger(__name__)


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


def _filters(model: nn.Module, layer: str) -> int:
    """Output channels of conv/linear ``layer`` (dim 1 of a transposed conv's weight)."""
    from tinyprune.pruning.channel_graph import out_first_weight

    return int(out_first_weight(model.get_submodule(layer)).shape[0])


def _memory_format(example: Any, model: nn.Module) -> torch.memory_format | None:
    """Channels-last for the input's rank, when every 4-D/5-D weight has that rank too.

    A frame-stacked 2-D rPPG net takes 5-D clips but has 4-D conv weights: no format then
    (``Module.to(memory_format=channels_last_3d)`` refuses 4-D weights).
    """
    if not (isinstance(example, torch.Tensor) and example.is_floating_point()):
        return None
    ranks = {p.dim() for p in model.parameters() if p.dim() in (4, 5)}
    if ranks and ranks != {example.dim()}:
        return None
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(example.dim())


def _to_format(batches: Sequence[Any], fmt: torch.memory_format | None) -> list[Any]:
    rank = 4 if fmt == torch.channels_last else 5

    def conv(t: Any) -> Any:
        if fmt is None or not isinstance(t, torch.Tensor) or t.dim() != rank:
            return t
        return t.contiguous(memory_format=fmt) if t.is_floating_point() else t

    return [tuple(conv(t) for t in b) if isinstance(b, (tuple, list)) else conv(b) for b in batches]


class PrunedEvaluator:
    """Builds the physically pruned network of a criterion at the budget's uniform widths.

    Kept widths come from the budget alone (``uniform`` keep ratio, §4.5), so they are computed
    once; the criterion only decides which channels of each group stay.
    """

    def __init__(
        self,
        model: nn.Module,
        example_input: Any,
        budget: Any,
        round_to: int,
        *,
        features_data: Sequence[Any] = (),
        sync_ranks: bool = False,
    ) -> None:
        from tinyprune.pruning import select as sel
        from tinyprune.pruning.channel_graph import ChannelGraph
        from tinyprune.pruning.scoring import capture_features

        self.model, self.example, self.sync_ranks = model, example_input, sync_ranks
        self.graph = ChannelGraph(copy.deepcopy(model).eval(), example_input)
        self.features = None  # activations, for the 'mixed' descriptor source
        if features_data:
            layers = [s.name for g in self.graph.groups for s in g.members]
            self.features = capture_features(self.graph.model, layers, features_data)
        self.cost = self.graph.cost_model()
        limits = budget.limits(*self.cost.dense)
        widths = [sel.allowed_widths(g.size, round_to, 1) for g in self.graph.groups]
        zeros = [np.zeros(g.size) for g in self.graph.groups]
        self.counts = np.array(sel.select_uniform(zeros, self.cost, limits, widths).counts)
        self.memory_format = _memory_format(example_input, model)
        self._memo: dict[tuple[Any, ...], Any] = {}

    def keep(self, crit: ClusterDECriterion) -> list[np.ndarray]:
        """Kept channel indices of every group under ``crit`` (scores memoised per layer and k)."""
        from tinyprune.pruning.scoring import reduce_group, reduce_scores_across_ranks
        from tinyprune.pruning.select import make_selection

        if crit.needs_data and self.features is None:
            msg = "descriptor source 'mixed' needs calibration data for the DE fitness"
            raise ConfigError(msg)
        scores = []
        for group in self.graph.groups:
            parts = [self.member_scores(crit, slot) for slot in group.members]
            scores.append(reduce_group(group.size, [p for p in parts if p is not None], "mean"))
        if self.sync_ranks:  # data-dependent descriptors differ between replicas
            scores = reduce_scores_across_ranks(scores)
        return list(make_selection(scores, self.counts, self.cost).keep)

    def member_scores(self, crit: ClusterDECriterion, slot: Any) -> Any:
        """A member layer's cluster priorities; they depend on its own ``k`` only (§4.3)."""
        from tinyprune.pruning.scoring import member_scores

        channels = _filters(self.graph.model, slot.name)
        key = (slot.name, crit.clusters_for(slot.name, channels), crit.source, crit.seed)
        if key not in self._memo:
            self._memo[key] = member_scores(self.graph, crit, slot, self.features)
        return self._memo[key]

    def precompute(self, base: ClusterDECriterion, k_max: int) -> None:
        """Cluster every member layer for every admissible ``k`` once (§4.3)."""
        for group in self.graph.groups:
            for slot in group.members:
                channels = _filters(self.graph.model, slot.name)
                for k in range(2, max(2, min(k_max, channels - 1)) + 1):
                    crit = dataclasses.replace(base, k_per_layer=((slot.name, k),))
                    self.member_scores(crit, slot)

    def pruned(self, crit: ClusterDECriterion) -> nn.Module:
        """A pruned copy of the model (eval mode, channels-last when the input is an image)."""
        from tinyprune.pruning.channel_graph import ChannelGraph

        keep = self.keep(crit)
        work = copy.deepcopy(self.model).eval()
        graph = ChannelGraph(work, self.example)
        if [g.name for g in graph.groups] != [g.name for g in self.graph.groups]:
            msg = "the model's channel groups changed between traces; cannot evaluate the search"
            raise PruningError(msg)
        graph.remove_channels_(keep)
        if self.memory_format is not None:
            work = work.to(memory_format=self.memory_format)  # type: ignore[call-overload]
        return work

    def __call__(
        self,
        crit: ClusterDECriterion,
        calib: Sequence[Any],
        heldout: Sequence[Any],
        metric: Callable[..., float],
    ) -> float:
        """Prune a copy with ``crit``, recalibrate its BN on ``calib``, score it on ``heldout``."""
        work = self.pruned(crit)
        recalibrate_bn_(work, calib)
        return float(metric(work, heldout))


class ClusterFitness:
    """Fitness of clusters-per-layer vectors: prune a copy, recalibrate BN, score (§4.6).

    ``fit(k)`` scores one vector, ``fit.many(ks)`` a batch (one DE generation). Inside
    ``with fit:`` a batch is spread over ``workers`` forked processes with one torch thread
    each: small networks barely speed up with more threads per forward, while processes also
    overlap the per-trial copy and surgery. Values agree with in-process ones to float rounding.
    Under DDP (``sync_ranks``) each value is averaged over replicas (one collective per batch)
    and evaluation stays in-process.
    """

    def __init__(
        self,
        evaluator: PrunedEvaluator,
        layers: Sequence[str],
        calib: Sequence[Any],
        heldout: Sequence[Any],
        score: Callable[..., float],
        base: ClusterDECriterion,
        *,
        sync_ranks: bool,
        workers: int,
    ) -> None:
        self.evaluator, self.layers, self.base, self.score = evaluator, list(layers), base, score
        self.calib = _to_format(calib, evaluator.memory_format)
        self.heldout = _to_format(heldout, evaluator.memory_format)
        self.sync_ranks = sync_ranks
        self.workers = _usable_workers(workers, sync_ranks)
        self._pool: Any = None

    def criterion(self, k: Sequence[int] | np.ndarray) -> ClusterDECriterion:
        """The criterion that vector ``k`` encodes."""
        ks = tuple(zip(self.layers, (int(v) for v in k), strict=True))
        return dataclasses.replace(self.base, k_per_layer=ks)

    def local(self, k: Sequence[int] | np.ndarray) -> float:
        """This process's fitness of ``k`` (no collective)."""
        return self.evaluator(self.criterion(k), self.calib, self.heldout, self.score)

    def many(self, ks: Sequence[Sequence[int] | np.ndarray]) -> list[float]:
        """Fitness of each vector (averaged over DDP replicas with ``sync_ranks``)."""
        if self._pool is not None and len(ks) > 1:
            results = self._pool.map(_evaluate_in_worker, [list(map(int, k)) for k in ks], 1)
            failed = [err for _, err in results if err is not None]
            if failed:
                msg = f"a DE fitness evaluation failed in a worker: {failed[0]}"
                raise PruningError(msg)
            values = [v for v, _ in results]
        else:
            values = [self.local(k) for k in ks]
        if self.sync_ranks:
            from tinyprune.training.distributed import consensus_mean

            values = [float(v) for v in consensus_mean(np.array(values, dtype=np.float64))]
        return values

    def __call__(self, k: Sequence[int] | np.ndarray) -> float:
        """The fitness of one vector of clusters per layer."""
        return self.many([k])[0]

    def __enter__(self) -> ClusterFitness:
        global _ACTIVE
        if self.workers > 1:
            import multiprocessing

            _ACTIVE = self  # forked workers inherit it (nothing is pickled)
            self._pool = multiprocessing.get_context("fork").Pool(
                self.workers, initializer=torch.set_num_threads, initargs=(1,)
            )
        return self

    def __exit__(self, *exc: object) -> None:
        global _ACTIVE
        if self._pool is not None:
            self._pool.terminate() if exc[0] is not None else self._pool.close()
            self._pool.join()
            self._pool, _ACTIVE = None, None


_ACTIVE: ClusterFitness | None = None


def _evaluate_in_worker(k: list[int]) -> tuple[float, str | None]:
    try:
        assert _ACTIVE is not None
        return _ACTIVE.local(k), None
    except Exception as e:  # noqa: BLE001 - reported (as text: errors may not pickle)
        return float("nan"), f"{type(e).__name__}: {e}"


def _usable_workers(workers: int, sync_ranks: bool) -> int:
    import multiprocessing

    from tinyprune.training import distributed

    if workers < 1:
        msg = f"DE workers={workers} is invalid; expected an integer >= 1"
        raise ConfigError(msg)
    if workers > 1 and sync_ranks and distributed.get_world_size() > 1:
        log.info("DE fitness runs in-process under DDP (workers=%d ignored)", workers)
        return 1
    if workers > 1 and "fork" not in multiprocessing.get_all_start_methods():
        log.info("no 'fork' start method on this platform: DE fitness runs in-process")
        return 1
    return workers


def default_criterion(seed: int = 0) -> ClusterDECriterion:
    """``cluster_de`` with its default options (looked up in the registry, not imported)."""
    crit: ClusterDECriterion = CRITERIA.get("cluster_de")(seed=seed)
    return crit


@dataclass(frozen=True)
class FitnessOptions:
    """How :func:`cluster_fitness` scores a clusters-per-layer vector.

    Attributes:
        round_to: Kept widths are multiples of this.
        base: The criterion whose ``k_per_layer`` the vector sets (descriptor source, k-means
            seed); default ``ClusterDECriterion()``.
        metric: ``"accuracy"`` (held-out top-1, §4.6) or ``"neg_ce"`` (minus the mean
            cross-entropy: smooth when few held-out images are used), or a callable
            ``metric(model, heldout) -> float`` (higher = better, e.g. minus an rPPG loss).
        sync_ranks: Under DDP, average each fitness value over replicas (each scores its own
            calibration/held-out shard), so every replica follows the same DE trajectory.
            Every replica must then evaluate the same vectors in the same order.
        workers: Processes that evaluate a batch inside ``with fitness:``.
    """

    round_to: int = 4
    base: ClusterDECriterion | None = None
    metric: str | Callable[..., float] = "accuracy"
    sync_ranks: bool = True
    workers: int = 1


def cluster_fitness(
    model: nn.Module,
    example_input: Any,
    budget: Any,
    layers: Sequence[str],
    calib: Sequence[Any],
    heldout: Sequence[tuple[torch.Tensor, torch.Tensor]],
    options: FitnessOptions | None = None,
) -> ClusterFitness:
    """The :class:`ClusterFitness` of ``model`` at ``budget`` (§4.6).

    Args:
        model: The trained network (not changed; each evaluation prunes a copy).
        example_input: A batch for tracing.
        budget: The :class:`~tinyprune.pruning.select.Budget` every candidate meets.
        layers: The prunable layers, in the order of the DE vector.
        calib: Batches that recalibrate BatchNorm in each evaluation.
        heldout: ``(x, y)`` batches that score each evaluation.
        options: Widths rounding, base criterion, metric, DDP and worker settings
            (default :class:`FitnessOptions`).
    """
    opts = options or FitnessOptions()
    metric = opts.metric
    if not callable(metric) and metric not in METRICS:
        msg = f"fitness metric {metric!r} is unknown; expected one of: {', '.join(METRICS)}"
        raise ConfigError(msg)
    base = opts.base or default_criterion()
    evaluator = PrunedEvaluator(
        model,
        example_input,
        budget,
        opts.round_to,
        features_data=calib if base.needs_data else (),
        sync_ranks=opts.sync_ranks,
    )
    score = metric if callable(metric) else METRICS[metric]
    return ClusterFitness(
        evaluator,
        layers,
        calib,
        heldout,
        score,
        base,
        sync_ranks=opts.sync_ranks,
        workers=opts.workers,
    )


@dataclass(frozen=True)
class SearchReport:
    """What a DE cluster search did (for logs and benchmark tables)."""

    pop: int
    gens: int
    evaluations: int
    calib_images: int
    heldout_images: int
    workers: int
    best_fitness: float
    seconds: float
    metric: str


@dataclass(frozen=True)
class SearchOptions:
    """Settings of :func:`search_clusters_report` (defaults: :class:`DESearchConfig`'s).

    Attributes:
        k_max: Largest number of clusters per layer the DE may choose.
        pop: DE population.
        gens: DE generations.
        round_to: Kept widths are multiples of this.
        seed: Seeds the DE (and the default base criterion's k-means).
        base: The criterion carrying the descriptor options; default
            ``ClusterDECriterion(seed=seed)``.
        metric: The fitness metric (see :class:`FitnessOptions`).
        sync_ranks: Average fitness values over DDP replicas (see :class:`FitnessOptions`).
        workers: Processes evaluating each generation.
        progress: Show a bar of fitness evaluations (rank 0, on a terminal).
    """

    k_max: int = 16
    pop: int = DESearchConfig.pop
    gens: int = DESearchConfig.gens
    round_to: int = 4
    seed: int = 0
    base: ClusterDECriterion | None = None
    metric: str | Callable[..., float] = "accuracy"
    sync_ranks: bool = True
    workers: int = DESearchConfig.workers
    progress: bool = False

    def base_criterion(self) -> ClusterDECriterion:
        """The criterion the search configures (``base`` or the default one for ``seed``)."""
        return self.base or default_criterion(self.seed)

    def fitness(self) -> FitnessOptions:
        """The fitness settings these search settings imply."""
        return FitnessOptions(
            self.round_to, self.base_criterion(), self.metric, self.sync_ranks, self.workers
        )


def search_clusters_report(
    model: nn.Module,
    example_input: Any,
    budget: Any,
    calib: Sequence[Any],
    heldout: Sequence[tuple[torch.Tensor, torch.Tensor]],
    options: SearchOptions | None = None,
) -> tuple[ClusterDECriterion, SearchReport]:
    """Run the DE of §4.6; return the configured criterion and a :class:`SearchReport`.

    Under DDP with ``sync_ranks`` every replica must call this (fitness values are averaged
    over replicas, each on its own data shard); all replicas return rank 0's best vector.
    With ``sync_ranks=False`` the search is local (e.g. run on rank 0 only). ``options``
    default to :class:`SearchOptions`.
    """
    from tinyprune.pruning.channel_graph import ChannelGraph
    from tinyprune.training import distributed

    opts = options or SearchOptions()
    start = time.perf_counter()
    graph = ChannelGraph(copy.deepcopy(model).eval(), example_input)
    layers = [s.name for g in graph.groups for s in g.members]
    sizes = [_filters(model, n) for n in layers]
    lo = [2] * len(layers)
    hi = [max(2, min(opts.k_max, c - 1)) for c in sizes]
    fit = cluster_fitness(model, example_input, budget, layers, calib, heldout, opts.fitness())
    fit.evaluator.precompute(fit.base, opts.k_max)  # before forking: workers inherit them
    from tinyprune.training.loop import progress_bar

    # repeats are cached
    bar = progress_bar(opts.pop * (opts.gens + 2), opts.progress, desc="DE", unit="eval")

    best = [-np.inf]

    def evaluate_many(ks: Sequence[np.ndarray]) -> list[float]:
        values = fit.many(ks)
        best[0] = max(best[0], *values)
        bar.update(len(ks))
        bar.set_postfix(best_fitness=f"{best[0]:.4g}", refresh=False)
        return values

    shade = SHADEConfig(pop=opts.pop, gens=opts.gens, seed=opts.seed)
    with fit, bar:
        result = shade_de(None, lo, hi, shade, evaluate_many=evaluate_many)
    best_k = result.best_x.tolist()
    if opts.sync_ranks:
        best_k = distributed.broadcast_object(best_k, src=0)
    ks = tuple(zip(layers, best_k, strict=True))
    metric = opts.metric
    report = SearchReport(
        opts.pop,
        opts.gens,
        result.evaluations,
        count_images(calib),
        count_images(heldout),
        fit.workers,
        result.best_f,
        time.perf_counter() - start,
        metric if isinstance(metric, str) else getattr(metric, "__name__", "?"),
    )
    log.info("cluster DE search: %s", report)
    return dataclasses.replace(opts.base_criterion(), k_per_layer=ks), report


def count_images(batches: Sequence[Any]) -> int:
    """Number of samples in ``batches`` (tensors or ``(x, y)`` tuples)."""
    return sum(int((b[0] if isinstance(b, (tuple, list)) else b).shape[0]) for b in batches)


def search_clusters(
    model: nn.Module,
    example_input: Any,
    budget: Any,
    calib: Sequence[Any],
    heldout: Sequence[tuple[torch.Tensor, torch.Tensor]],
    **options: Any,
) -> ClusterDECriterion:
    """Run the DE of §4.6 and return the criterion configured with the best ``k`` per layer.

    ``options`` are the fields of :class:`SearchOptions`.
    """
    opts = SearchOptions(**options)
    crit, _ = search_clusters_report(model, example_input, budget, calib, heldout, opts)
    return crit
