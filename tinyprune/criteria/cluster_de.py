"""Clustering pruning from multidimensional channel information (Sun et al., NPL 2024).

Only the abstract was available; this is the reconstruction of docs/methods.md §4 [R]. Each filter
is described by (mean, variance, cosine distance from the all-ones direction); k-means groups
the filters of a layer; inside a cluster the NSGA-II crowding distance ranks members (diverse
first); a SHADE-style differential evolution picks the number of clusters per layer with a
BN-recalibrated accuracy as fitness. The criterion turns the clustering into per-channel scores
whose top-n is a proportional, at-least-one-per-cluster choice, so the engine's selection
(``uniform`` keep ratio by default, §4.5) applies unchanged.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from tinyprune.criteria.base import CRITERIA, Granularity, ScoreInput, SearchData
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
    z: np.ndarray = (d - d.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return z


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

    def search(
        self, model: torch.nn.Module, budget: object, data: SearchData, settings: Any
    ) -> tuple[ClusterDECriterion, Any]:
        """DE over the clusters per layer (§4.6); the criterion with the best ``k_per_layer``.

        ``data`` is a :class:`~tinyprune.criteria.base.SearchData`; ``settings`` carries ``de``
        (population, generations, workers), ``round_to``, ``seed`` and ``progress``.
        """
        from tinyprune.criteria.cluster_search import SearchOptions, search_clusters_report

        de = settings.de
        options = SearchOptions(
            pop=de.pop,
            gens=de.gens,
            round_to=settings.round_to,
            seed=settings.seed,
            base=self,
            metric=data.metric,
            workers=de.workers,
            progress=settings.progress,
        )
        return search_clusters_report(
            model, data.example_input, budget, data.calib, data.heldout, options
        )

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
