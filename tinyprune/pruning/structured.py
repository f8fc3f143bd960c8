"""Channel surgery: find coupled channel groups, score them, remove the unselected channels.

Physically removing channels is what really shrinks MACs, flash and arena on a microcontroller,
but it is only correct if every coupled slot goes together (methods.md §1.2): BN after a conv,
consumer convs' input channels, Linear columns after ``flatten``, both sides of a residual add,
depthwise convs and concatenation offsets. ``torch_pruning.DependencyGraph`` traces those
couplings; this module wraps it, names the groups, builds the exact :class:`CostModel`, reduces
per-layer criterion scores to one score per group and performs the surgery.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from tinyprune.criteria.base import Granularity, ScoreInput, needs_data
from tinyprune.errors import ConfigError, PruningError
from tinyprune.pruning.complexity import (
    BN_TYPES,
    CONV_TYPES,
    CONVT_TYPES,
    ModelComplexity,
    _run_forward,
    measure_complexity,
)
from tinyprune.pruning.select import CostModel
from tinyprune.training import distributed

log = logging.getLogger(__name__)
PRUNABLE_TYPES = CONV_TYPES + CONVT_TYPES + (nn.Linear,)
ACT_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardtanh,
    nn.Sigmoid, nn.Tanh, nn.PReLU,
)  # fmt: skip


@dataclass(frozen=True)
class Slot:
    """Channels of one module in a group: its channel ``idxs[i]`` is group channel ``root[i]``."""

    name: str
    idxs: tuple[int, ...]
    root: tuple[int, ...]


@dataclass
class ChannelGroup:
    """Output channels that must be removed together (methods.md §1.2)."""

    name: str  # the first producing layer in ``named_modules`` order
    size: int
    members: list[Slot] = field(default_factory=list)  # producing conv/linear layers (scored)
    bns: list[Slot] = field(default_factory=list)
    consumers: list[Slot] = field(default_factory=list)  # input channels / columns of consumers
    _root: Any = None
    _root_fn: Any = None


def _layer_trace(model: nn.Module) -> tuple[list[str], list[Any]]:
    """Pre-hooks recording the last layer entered, to name the layer where something failed."""
    entered: list[str] = []
    handles = [
        m.register_forward_pre_hook(lambda _m, _i, n=n: entered.append(n))
        for n, m in model.named_modules()
        if n and not list(m.children())
    ]
    return entered, handles


def _traced(model: nn.Module, what: str, fn: Any) -> Any:
    entered, handles = _layer_trace(model)
    try:
        return fn()
    except (PruningError, ConfigError):
        raise
    except Exception as e:
        where = entered[-1] if entered else "<before the first layer>"
        layer = type(model.get_submodule(entered[-1])).__name__ if entered else "?"
        msg = (
            f"{what} failed at or after layer {where!r} ({layer}): {type(e).__name__}: {e}. "
            "Pass this layer (or its block) in ignored_layers, or rewrite the op as standard "
            "torch layers that torch-pruning can trace."
        )
        raise PruningError(msg) from e
    finally:
        for h in handles:
            h.remove()


def output_layers(model: nn.Module, example_input: Any) -> list[nn.Module]:
    """Conv/linear layers whose output channels reach a model output without another layer."""
    produced: dict[Any, nn.Module] = {}

    def hook(m: nn.Module, _i: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor) and out.grad_fn is not None:
            produced[out.grad_fn] = m

    prunable = [m for m in model.modules() if isinstance(m, PRUNABLE_TYPES)]
    handles = [m.register_forward_hook(hook) for m in prunable]
    x = example_input
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        x = x.detach().requires_grad_(True)  # grad_fns exist even when parameters are frozen
    try:
        with torch.enable_grad():
            out = _run_forward(model, x)
    finally:
        for h in handles:
            h.remove()
    if isinstance(out, dict):
        leaves = list(out.values())
    else:
        leaves = list(out) if isinstance(out, (tuple, list)) else [out]
    stack = [t.grad_fn for t in leaves if isinstance(t, torch.Tensor) and t.grad_fn is not None]
    seen: set[Any] = set()
    found: list[nn.Module] = []
    while stack:
        fn = stack.pop()
        if fn in seen:
            continue
        seen.add(fn)
        if fn in produced:
            found.append(produced[fn])
            continue
        stack.extend(nxt for nxt, _ in fn.next_functions if nxt is not None)
    return found


class ChannelGraph:
    """Named channel groups of a model, built once from a torch-pruning trace."""

    def __init__(
        self, model: nn.Module, example_input: Any, ignored_layers: Sequence[nn.Module] = ()
    ) -> None:
        self.model = model
        self.example_input = example_input
        self.names = {m: n for n, m in model.named_modules()}
        order = {n: i for i, n in enumerate(self.names.values())}
        outputs = _traced(
            model, "tracing the model outputs", lambda: output_layers(model, example_input)
        )
        ignored = list(ignored_layers) + outputs
        self.ignored = [self.names[m] for m in ignored]

        def build() -> tp.DependencyGraph:
            with torch.enable_grad():
                return tp.DependencyGraph().build_dependency(
                    model, example_inputs=example_input, verbose=False
                )

        self.dg = _traced(model, "torch-pruning dependency tracing", build)
        groups = [self._convert(g) for g in self.dg.get_all_groups(ignored_layers=list(ignored))]
        self.groups = sorted((g for g in groups if g.members), key=lambda g: order[g.name])

    def _convert(self, tgroup: Any) -> ChannelGroup:
        is_in = self.dg.is_in_channel_pruning_fn
        root_dep = tgroup[0].dep
        root, root_fn = root_dep.target.module, root_dep.handler
        group = ChannelGroup(name="", size=len(tgroup[0].idxs), _root=root, _root_fn=root_fn)
        for item in tgroup:
            module = item.dep.target.module
            name = self.names.get(module) if isinstance(module, nn.Module) else None
            if name is None:
                continue
            idxs, root = tuple(int(i) for i in item.idxs), tuple(int(i) for i in item.root_idxs)
            slot = Slot(name, idxs, root)
            handler = item.dep.handler
            if isinstance(module, BN_TYPES):
                group.bns.append(slot)
            elif isinstance(module, PRUNABLE_TYPES) and _is_depthwise(module):
                group.members.append(slot)
            elif self.dg.is_out_channel_pruning_fn(handler) and not is_in(handler):
                group.members.append(slot)
            elif is_in(handler):
                group.consumers.append(slot)
        order = list(self.names.values())
        group.members.sort(key=lambda s: order.index(s.name))
        if group.members:
            group.name = group.members[0].name
        return group

    def group_of(self, layer: str) -> ChannelGroup:
        """The group in which ``layer`` produces output channels."""
        for g in self.groups:
            if any(s.name == layer for s in g.members):
                return g
        msg = f"layer {layer!r} produces no prunable group; groups: {[g.name for g in self.groups]}"
        raise ConfigError(msg)

    def bn_after(self, layer: str) -> nn.Module | None:
        """The batch-norm that directly consumes ``layer``'s output, if any."""
        node = self.dg.module2node.get(self.model.get_submodule(layer))
        for out in node.outputs if node is not None else []:
            if isinstance(out.module, BN_TYPES):
                return out.module
        return None

    def cost_model(
        self, comp: ModelComplexity | None = None, *, count_bn: bool = True
    ) -> CostModel:
        """The exact :class:`CostModel` of the counted layers (see :mod:`complexity`)."""
        if comp is None:
            comp = measure_complexity(self.model, self.example_input, count_bn=count_bn)
        layer_idx = {layer.name: i for i, layer in enumerate(comp.layers)}
        n_layers, n_groups = len(comp.layers), len(self.groups)
        in_coef = np.zeros((n_layers, n_groups))
        out_coef = np.zeros((n_layers, n_groups))
        for g, group in enumerate(self.groups):
            for slot in group.members + group.bns:
                if slot.name in layer_idx:
                    out_coef[layer_idx[slot.name], g] += len(slot.idxs) / group.size
            for slot in group.consumers:
                if slot.name in layer_idx:
                    in_coef[layer_idx[slot.name], g] += len(slot.idxs) / group.size
        rows = [
            _layer_row(self.model.get_submodule(layer.name), layer.positions, count_bn)
            for layer in comp.layers
        ]
        arr = np.array(rows, dtype=np.float64).reshape(n_layers, 7)
        sizes = np.array([g.size for g in self.groups], dtype=np.float64)
        return CostModel(
            group_sizes=sizes,
            in_fixed=arr[:, 0] - in_coef @ sizes,
            in_coef=in_coef,
            out_fixed=arr[:, 1] - out_coef @ sizes,
            out_coef=out_coef,
            mac_coef=arr[:, 2],
            param_coef=arr[:, 3],
            param_lin=arr[:, 4],
            groups=arr[:, 5],
            depthwise=arr[:, 6].astype(bool),
        )

    def remove_channels_(self, keep: Sequence[Iterable[int]]) -> None:
        """Remove, in place, every channel of group ``g`` not listed in ``keep[g]``."""
        if len(keep) != len(self.groups):
            msg = f"got keep sets for {len(keep)} groups, the graph has {len(self.groups)}"
            raise PruningError(msg)
        for group, kept in zip(self.groups, keep, strict=True):
            kept_set = {int(i) for i in kept}
            if not kept_set:
                msg = f"group {group.name!r} would lose all {group.size} channels; keep >= 1"
                raise PruningError(msg)
            drop = [i for i in range(group.size) if i not in kept_set]
            if drop:
                self.dg.get_pruning_group(group._root, group._root_fn, drop).prune()
        model, x = self.model, self.example_input
        _traced(model, "forward after surgery", lambda: _run_forward(model, x))


def _is_depthwise(m: nn.Module) -> bool:
    if not isinstance(m, CONV_TYPES):
        return False
    return bool(m.groups > 1 and m.groups == m.in_channels == m.out_channels)


def _layer_row(m: nn.Module, positions: int, count_bn: bool) -> list[float]:
    """[in, out, mac_coef, param_coef, param_lin, groups, depthwise] of one counted layer."""
    if isinstance(m, BN_TYPES):
        lin = 2.0 if (count_bn and m.affine) else 0.0
        return [m.num_features, m.num_features, 0.0, 0.0, lin, 1.0, 0.0]
    bias = 1.0 if m.bias is not None else 0.0
    if isinstance(m, nn.Linear):
        return [m.in_features, m.out_features, positions, 1.0, bias, 1.0, 0.0]
    kprod = float(np.prod(m.kernel_size))
    dw = float(_is_depthwise(m))
    return [m.in_channels, m.out_channels, kprod * positions, kprod, bias, m.groups, dw]


def out_first_weight(m: nn.Module) -> torch.Tensor:
    """The weight with output channels on dim 0 (conv-transpose weights are transposed)."""
    w = m.weight.detach()
    return w.transpose(0, 1) if isinstance(m, CONVT_TYPES) else w


_Event = tuple[nn.Module, int, torch.Tensor, torch.Tensor]


def capture_features(
    model: nn.Module, layers: Sequence[str], data: Iterable[Any], max_batches: int = 5
) -> dict[str, torch.Tensor]:
    """Post-activation outputs of ``layers`` (conv -> [BN] -> [activation module]) over ``data``.

    The chain is followed by tensor identity, so only module activations are seen; a functional
    activation (``F.relu``) leaves the BN (or conv) output as the feature.
    """
    wanted = {model.get_submodule(n): n for n in layers}
    followers = [m for m in model.modules() if isinstance(m, BN_TYPES + ACT_TYPES)]
    feats: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    for b, batch in enumerate(data):
        if b >= max_batches:
            break
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        events: list[_Event] = []

        def hook(m: nn.Module, inp: Any, out: Any) -> None:
            events.append((m, id(inp[0]), out, out.detach().clone()))  # noqa: B023

        handles = [m.register_forward_hook(hook) for m in list(wanted) + followers]
        try:
            with torch.no_grad():
                _run_forward(model, x)
        finally:
            for h in handles:
                h.remove()
        for m, name in wanted.items():
            feats[name].append(_follow_chain(events, m))
    if not all(feats.values()):
        msg = "the calibration data yielded no batch; pass data with at least one batch"
        raise ConfigError(msg)
    return {n: torch.cat(v) for n, v in feats.items()}


def _follow_chain(events: list[_Event], m: nn.Module) -> torch.Tensor:
    start = next(e for e in events if e[0] is m)
    current_id, value = id(start[2]), start[3]
    for kinds in (BN_TYPES, ACT_TYPES):
        nxt = next((e for e in events if e[1] == current_id and isinstance(e[0], kinds)), None)
        if nxt is not None:
            current_id, value = id(nxt[2]), nxt[3]
    return value


def score_groups(
    graph: ChannelGraph,
    criterion: Any,
    *,
    reduce: str = "mean",
    features: dict[str, torch.Tensor] | None = None,
) -> list[np.ndarray]:
    """One score per channel of every group: member scores reduced by ``mean|sum|max|l2``."""
    if getattr(criterion, "granularity", None) is not Granularity.CHANNEL:
        msg = f"criterion {getattr(criterion, 'name', criterion)!r} is not a channel criterion"
        raise ConfigError(msg)
    out = []
    for group in graph.groups:
        parts = [member_scores(graph, criterion, slot, features) for slot in group.members]
        parts = [p for p in parts if p is not None]
        if not parts:
            msg = f"criterion {criterion.name!r} applies to no layer of group {group.name!r}"
            raise PruningError(msg)
        out.append(reduce_group(group.size, parts, reduce))
    return out


def member_scores(
    graph: ChannelGraph, criterion: Any, slot: Slot, features: dict[str, torch.Tensor] | None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(scores, group channel of each score)`` of one member layer, or None if not scored."""
    module = graph.model.get_submodule(slot.name)
    weight = out_first_weight(module)
    grad = module.weight.grad
    if grad is not None and isinstance(module, CONVT_TYPES):
        grad = grad.transpose(0, 1)
    inp = ScoreInput(
        name=slot.name,
        weight=weight,
        grad=grad if criterion.needs_grad else None,
        module=module,
        bn=graph.bn_after(slot.name),
        features=None if features is None else features.get(slot.name),
    )
    applies = getattr(criterion, "applies_to", None)
    if applies is not None and not applies(inp):
        return None
    with torch.no_grad():
        s = criterion.score(inp)
    ok = isinstance(s, torch.Tensor) and s.shape == (weight.shape[0],)
    if not ok or not torch.isfinite(s).all():
        got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
        msg = (
            f"criterion {criterion.name!r} returned scores of shape {got} (or non-finite values) "
            f"for layer {slot.name!r}; expected finite values of shape ({weight.shape[0]},)"
        )
        raise PruningError(msg)
    s = s.detach().double()
    return s[list(slot.idxs)], torch.tensor(slot.root, dtype=torch.long)


def reduce_group(size: int, parts: list[Any], reduce: str) -> np.ndarray:
    """One score per group channel from the members' :func:`member_scores`."""
    if reduce not in ("mean", "sum", "max", "l2"):
        msg = f"group reduce {reduce!r} is unknown; expected one of: l2, max, mean, sum"
        raise ConfigError(msg)
    count = torch.zeros(size, dtype=torch.float64)
    init = -torch.inf if reduce == "max" else 0.0
    total = torch.full((size,), init, dtype=torch.float64)
    for vals, root in parts:
        count.index_add_(0, root, torch.ones_like(vals))
        if reduce == "max":
            total.scatter_reduce_(0, root, vals, reduce="amax")
        else:
            total.index_add_(0, root, vals * vals if reduce == "l2" else vals)
    if reduce == "mean":
        total = total / count.clamp(min=1)
    elif reduce == "l2":
        total = total.sqrt()
    total[count == 0] = 0.0
    return total.numpy()


def reduce_scores_across_ranks(scores: list[np.ndarray]) -> list[np.ndarray]:
    """Average per-group scores over DDP replicas so every replica prunes the same channels.

    Data-dependent scores (CI from each replica's features, gradient or Taylor terms) differ
    between replicas fed different shards; the mean over replicas is the score over all
    shards (with equal shard sizes). Identity in a single process.

    Raises:
        PruningError: The replicas' groups differ (not the same model on every replica).
    """
    if distributed.get_world_size() <= 1:
        return scores
    sizes = [len(s) for s in scores]
    ref = distributed.broadcast_object(sizes, src=0)
    mismatch = distributed.consensus_mean(np.array([float(ref != sizes)]))
    if mismatch[0] > 0:
        msg = (
            f"replicas have different channel groups (rank 0: {ref}, rank "
            f"{distributed.get_rank()}: {sizes}); every replica must prune the same model"
        )
        raise PruningError(msg)
    flat = distributed.consensus_mean(np.concatenate(scores)) if scores else np.zeros(0)
    return [part.copy() for part in np.split(flat, np.cumsum(sizes)[:-1])]


@dataclass(frozen=True)
class PruneResult:
    """What :func:`prune_structured` did: kept channels per group and the cost before/after."""

    keep: dict[str, list[int]]
    group_sizes: dict[str, int]
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    criterion: str
    selection: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary for ``summary.json``."""
        return dict(self.__dict__)


def _select(
    criterion: Any,
    selection: str,
    scores: list[np.ndarray],
    cost: CostModel,
    limits: Any,
    widths: list[np.ndarray],
    normalize: str,
    sparsity: Sequence[float] | None,
) -> Any:
    from tinyprune.pruning import select as sel

    if selection == "global":
        return sel.select_global(scores, cost, limits, widths, normalize=normalize)
    if selection == "uniform":
        return sel.select_uniform(scores, cost, limits, widths)
    if selection == "greedy":
        return sel.select_greedy(scores, cost, limits, widths)
    if selection == "local":
        given = sparsity if sparsity is not None else getattr(criterion, "sparsity", None)
        if not given:
            msg = "selection 'local' needs one sparsity per group (sparsity=[...])"
            raise ConfigError(msg)
        return sel.select_local(scores, cost, list(given), widths)
    msg = f"selection {selection!r} is unknown; expected one of: global, greedy, local, uniform"
    raise ConfigError(msg)


def prune_structured(
    model: nn.Module,
    example_input: Any,
    criterion: Any,
    budget: Any = None,
    *,
    data: Iterable[Any] | None = None,
    round_to: int = 4,
    reduce: str | None = None,
    selection: str | None = None,
    normalize: str = "max",
    min_channels: int | None = None,
    min_fraction: float | None = None,
    sparsity: Sequence[float] | None = None,
    ignored_layers: Sequence[nn.Module] = (),
    max_batches: int = 5,
    sync_ranks: bool = True,
) -> PruneResult:
    """Score, select and remove output channels in place so that ``budget`` is met.

    Args:
        model: The network; pruned in place (its train/eval mode is restored).
        example_input: A batch used for tracing and counting (per-sample counts).
        criterion: A CHANNEL criterion (``tinyprune.criteria.get(name)``).
        budget: A :class:`~tinyprune.pruning.select.Budget` (unused by ``selection='local'``).
        data: Calibration batches for criteria with ``needs_data`` (at most ``max_batches``).
        round_to: Kept widths are multiples of this (or the full width).
        reduce: How member scores of a coupled group combine; default the criterion's
            ``group_reduce`` or ``"mean"``.
        selection: ``global`` (threshold on normalised scores), ``greedy``, ``uniform`` or
            ``local``; default the criterion's ``selection`` or ``"global"``.
        normalize: Per-group normalisation for ``global`` (``max`` or ``none``).
        min_channels, min_fraction: Minimum width per group, ``max(min_channels,
            ceil(min_fraction * C))``; defaults from the criterion or 1 / 0.
        sparsity: Per-group sparsity for ``local`` selection.
        ignored_layers: Layers whose output channels must stay.
        max_batches: Calibration batches used by data-driven criteria.
        sync_ranks: Under DDP (``torch.distributed`` initialised), average the group scores
            over replicas and adopt rank 0's selection, so every replica removes the same
            channels; BN running statistics are averaged first (:func:`sync_buffers_`).
            Every replica must then call this function (it is a collective). ``False``
            prunes each replica on its own scores (for diagnostics only).

    Returns:
        A :class:`PruneResult`.

    Raises:
        PruningError: Untraceable graph, bad scores or an unreachable budget.
        ConfigError: Bad options.
    """
    from tinyprune.pruning import select as sel

    selection = selection or getattr(criterion, "selection", None) or "global"
    reduce = reduce or getattr(criterion, "group_reduce", None) or "mean"
    was_training = model.training
    model.eval()
    try:
        if sync_ranks:
            distributed.sync_buffers_(model)
        graph = ChannelGraph(model, example_input, ignored_layers)
        before = measure_complexity(model, example_input)
        cost = graph.cost_model(before)
        limits = (np.inf, np.inf)
        if selection != "local":
            if budget is None:
                msg = f"selection {selection!r} needs a budget (e.g. Budget(target_flops=0.5))"
                raise ConfigError(msg)
            if sel.warn_if_noop(budget):
                return _result(graph, None, before, before, criterion, selection)
            limits = budget.limits(*cost.dense)
        features = None
        if needs_data(criterion):
            if data is None:
                msg = f"criterion {criterion.name!r} needs calibration data (data=loader)"
                raise ConfigError(msg)
            layers = [s.name for g in graph.groups for s in g.members]
            features = capture_features(model, layers, data, max_batches)
        scores = score_groups(graph, criterion, reduce=reduce, features=features)
        if sync_ranks:
            scores = reduce_scores_across_ranks(scores)
        mc = min_channels if min_channels is not None else getattr(criterion, "min_channels", 1)
        mf = min_fraction if min_fraction is not None else getattr(criterion, "min_fraction", 0.0)
        widths = [
            sel.allowed_widths(g.size, round_to, sel.min_keep_for(g.size, mc, mf))
            for g in graph.groups
        ]
        chosen = _select(criterion, selection, scores, cost, limits, widths, normalize, sparsity)
        if sync_ranks:
            chosen = _adopt_rank0(chosen)
        graph.remove_channels_(chosen.keep)
        after = measure_complexity(model, example_input)
        if abs(after.macs - chosen.macs) > 0.5 or abs(after.params - chosen.params) > 0.5:
            log.warning(
                "cost model predicted %.0f MACs / %.0f params, measured %d / %d",
                chosen.macs,
                chosen.params,
                after.macs,
                after.params,
            )
        return _result(graph, chosen.keep, before, after, criterion, selection)
    finally:
        model.train(was_training)


def _adopt_rank0(chosen: Any) -> Any:
    """Rank 0's selection on every replica (a guard: reduced scores already agree)."""
    if distributed.get_world_size() <= 1:
        return chosen
    ref = distributed.broadcast_object(chosen, src=0)
    same = len(ref.keep) == len(chosen.keep) and all(
        np.array_equal(a, b) for a, b in zip(ref.keep, chosen.keep, strict=True)
    )
    if not same:
        log.warning(
            "rank %d selected other channels than rank 0; using rank 0's selection",
            distributed.get_rank(),
        )
    return ref


def _result(
    graph: ChannelGraph,
    keep: Any,
    before: ModelComplexity,
    after: ModelComplexity,
    criterion: Any,
    selection: str,
) -> PruneResult:
    kept = {
        g.name: (list(range(g.size)) if keep is None else [int(i) for i in keep[i]])
        for i, g in enumerate(graph.groups)
    }
    return PruneResult(
        keep=kept,
        group_sizes={g.name: g.size for g in graph.groups},
        macs_before=before.macs,
        macs_after=after.macs,
        params_before=before.params,
        params_after=after.params,
        criterion=getattr(criterion, "name", type(criterion).__name__),
        selection=selection,
    )
