"""Coupled channel groups of a model, traced once with torch-pruning's dependency graph.

Physically removing channels is only correct if every coupled slot goes together (docs/methods.md
§1.2): BN after a conv, consumer convs' input channels, Linear columns after ``flatten``, both
sides of a residual add, depthwise convs and concatenation offsets. ``torch_pruning.
DependencyGraph`` traces those couplings; :class:`ChannelGraph` names the groups, builds the
exact :class:`~tinyprune.pruning.select.CostModel` and removes channels.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch_pruning as tp
from torch import nn
from torch.nn.modules.conv import _ConvNd

from tinyprune.errors import ConfigError, PruningError
from tinyprune.pruning.channelwise import customized_pruners, role_of, tracing_stubs
from tinyprune.pruning.complexity import (
    BN_TYPES,
    CONV_TYPES,
    CONVT_TYPES,
    ModelComplexity,
    _run_forward,
    measure_complexity,
)
from tinyprune.pruning.select import CostModel
from tinyprune.pruning.tensors import weight_of

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
    """Output channels that must be removed together (docs/methods.md §1.2)."""

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
            with torch.enable_grad(), tracing_stubs(model):
                return tp.DependencyGraph().build_dependency(
                    model,
                    example_inputs=example_input,
                    verbose=False,
                    customized_pruners=customized_pruners(model),
                )

        self.dg = _traced(model, "torch-pruning dependency tracing", build)
        groups = [self._convert(g) for g in self.dg.get_all_groups(ignored_layers=list(ignored))]
        # a 1-channel group (an attention-mask conv) cannot lose a channel: it is no group
        kept = (g for g in groups if g.members and g.size > 1)
        self.groups = sorted(kept, key=lambda g: order[g.name])

    def _convert(self, tgroup: Any) -> ChannelGroup:
        is_in = self.dg.is_in_channel_pruning_fn
        root_dep = tgroup[0].dep
        root, root_fn = root_dep.target.module, root_dep.handler
        group = ChannelGroup(name="", size=len(tgroup[0].idxs), _root=root, _root_fn=root_fn)
        for item in tgroup:
            module = item.dep.target.module
            name = self.names.get(module) if isinstance(module, nn.Module) else None
            if name is None or role_of(module) is not None:
                continue  # channel-wise modules are no slot: torch-pruning rewrites them
            idxs, root = tuple(int(i) for i in item.idxs), tuple(int(i) for i in item.root_idxs)
            slot = Slot(name, idxs, root)
            handler = item.dep.handler
            if isinstance(module, BN_TYPES):
                group.bns.append(slot)
            elif (isinstance(module, PRUNABLE_TYPES) and _is_depthwise(module)) or (
                self.dg.is_out_channel_pruning_fn(handler) and not is_in(handler)
            ):
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
    if not isinstance(m, _ConvNd):
        msg = f"{type(m).__name__} is not a counted layer (conv, linear or BatchNorm)"
        raise PruningError(msg)
    kprod = float(np.prod(m.kernel_size))
    dw = float(_is_depthwise(m))
    return [m.in_channels, m.out_channels, kprod * positions, kprod, bias, m.groups, dw]


def out_first_weight(m: nn.Module) -> torch.Tensor:
    """The weight with output channels on dim 0 (conv-transpose weights are transposed)."""
    w = weight_of(m).detach()
    return w.transpose(0, 1) if isinstance(m, CONVT_TYPES) else w
