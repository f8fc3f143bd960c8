"""Exact 3-D -> 2-D rewrite of video nets ("time as batch"), for modules and ``.pt2`` programs.

TFLite Micro has no ``CONV_3D``, 3-D pooling or 3-D transposed conv, and LiteRT runs
``CONV_3D`` in float. This rewrite traces the model (``torch.export``, functional ATen graph:
the same for an ``nn.Module`` and for a loaded ``.pt2`` program) and runs that graph with
every clip ``(1, C, T, H, W)`` held as ``(T, C, H, W)``: ``Conv3d`` becomes ``Conv2d`` over
time-shifted frames stacked on channels (BatchNorm folded in), pooling over time the max/mean
of frame slices, ``ConvTranspose3d`` strided in time per-phase ``Conv2d`` + a gather,
``nn.Upsample`` in time a gather, ``InstanceNorm3d`` means over axes; pointwise ops, concat,
slices, pads, means and ``torch.diff`` map their axes (:mod:`firmware_export.rewrite_3d_ops`).

The exported graph keeps the user's I/O: it takes the clip ``(1, C, T, H, W)`` and moves it
to time-as-batch with ``permute -> reshape -> permute``, which onnx2tf turns into one
``RESHAPE`` of the NDHWC input (the bytes of ``(1, T, H, W, C)`` and ``(T, H, W, C)`` are the
same); outputs go back the same way. No other 5-D <-> 4-D reshape is emitted (onnx2tf 1.28
scrambles such chains). Verification and calibration samples need no mapping.

A node whose configuration has no exact 2-D form here is run as it is (on the clip moved back
to 5-D) and listed in :attr:`TimeBatchModule.kept` with the reason.
"""

from __future__ import annotations

import logging
import operator
from typing import Any, cast

import torch
from torch import nn
from torch.utils import _pytree as pytree

from firmware_export import rewrite_3d_ops as ops
from firmware_export.rewrite_3d_axes import pointwise
from firmware_export.rewrite_3d_handlers import HANDLERS
from firmware_export.rewrite_3d_ops import Clip, from_clip, to_clip

log = logging.getLogger(__name__)

aten = torch.ops.aten


def _materialize(v: Any) -> Any:
    return from_clip(v) if isinstance(v, Clip) else v


def _per_frame(target: Any, args: Any) -> bool:
    """A Conv3d whose kernel spans one frame (it reads the input clip without slicing it)."""
    if target not in (aten.conv3d.default, aten.convolution.default) or len(args) < 2:
        return False
    w = args[1]
    return (
        isinstance(w, torch.Tensor)
        and w.dim() == 5
        and w.shape[2] == 1
        and (target is aten.conv3d.default or not args[6])
    )


def _path(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path = list(stack.values())[-1][0]
        if path:
            return str(path)
    return node.name


#: Ops whose fallback keeps an op TFLM lacks (CONV_3D, 3-D pooling, ...).
THREE_D_OPS = {
    aten.conv3d.default: "CONV_3D",
    aten.conv3d.padding: "CONV_3D",  # padding="same"/"valid": no handler, named when kept
    aten.conv_transpose3d.input: "CONV_3D_TRANSPOSE",
    aten.max_pool3d.default: "MaxPool3D",
    aten.max_pool3d_with_indices.default: "MaxPool3D",
    aten.avg_pool3d.default: "AvgPool3D",
    aten.adaptive_avg_pool3d.default: "AvgPool3D",
    aten.adaptive_max_pool3d.default: "MaxPool3D",
    aten.convolution.default: "CONV_3D",
    aten.upsample_nearest3d.vec: "5-D resize",
    aten.upsample_trilinear3d.vec: "5-D resize",
}


class _Runner(torch.fx.Interpreter):
    """Runs the functional graph with clips time-as-batch, recording what it rewrote."""

    def __init__(self, owner: TimeBatchModule, record: bool) -> None:
        super().__init__(owner.graph_module)
        self.owner = owner
        self.record = record
        self.node: torch.fx.Node | None = None
        self.folded: set[str] = set()
        self.first_input = True
        self.settled: Clip | None = None

    def run_node(self, n: torch.fx.Node) -> Any:
        self.node = n
        return super().run_node(n)

    def note(self, kind: str, node: torch.fx.Node | None = None) -> None:
        """Record a rewrite of ``node`` (default: the current node) by its module path."""
        node = node or self.node
        if self.record and node is not None:
            self.owner.done.setdefault(f"3d-to-2d:{kind}:{_path(node)}", None)
            if node.target in THREE_D_OPS:
                self.owner.converted += 1

    def derived(self, key: str, make: Any) -> torch.Tensor:
        """A weight derived from parameters (conv2d form, BN folded), computed once."""
        store = self.owner.derived
        name = f"{self.node.name}_{key}" if self.node is not None else key
        if not hasattr(store, name):
            with torch.no_grad():
                store.register_buffer(name, make().detach().contiguous())
        return getattr(store, name)  # type: ignore[no-any-return]

    def value(self, arg: Any) -> Any:
        """The runtime value of a node argument (parameters via their attribute)."""
        if isinstance(arg, torch.fx.Node):
            if arg.op == "get_attr":
                return self.fetch_attr(arg.target)  # type: ignore[arg-type]
            return self.env[arg]
        return arg

    def placeholder(self, target: Any, args: Any, kwargs: Any) -> Any:
        x = super().placeholder(target, args, kwargs)
        if self.first_input and isinstance(x, torch.Tensor) and x.dim() == 5:
            self.first_input = False
            self.note("input-time-as-batch")
            return to_clip(x)
        return x

    def call_function(self, target: Any, args: Any, kwargs: Any) -> Any:
        if target is operator.getitem:
            return args[0][args[1]]
        flat = pytree.tree_leaves((args, kwargs))
        if not any(isinstance(a, Clip) for a in flat):
            return target(*args, **kwargs)
        if any(isinstance(a, Clip) and a.from_input for a in flat) and not _per_frame(target, args):
            args, kwargs = pytree.tree_map(self._settle, (args, kwargs))
        handler = HANDLERS.get(target)
        if handler is None and torch.Tag.pointwise in getattr(target, "tags", ()):
            handler = pointwise(target)
        reason = "no time-as-batch form for this op"
        if handler is not None:
            try:
                return handler(self, *args, **kwargs)
            except ops.NotExact as e:
                reason = str(e)
        if target in THREE_D_OPS and self.record and self.node is not None:
            self.owner.kept.append((_path(self.node), THREE_D_OPS[target], reason))
        args, kwargs = pytree.tree_map(_materialize, (args, kwargs))
        return target(*args, **kwargs)

    def _settle(self, v: Any) -> Any:
        """The input clip behind a 1x1 max pool (an exact copy), once.

        onnx2tf lays out a tensor that comes straight from the input reshape channels-first
        when its first consumers are pads/slices/concats (then transposes twice around them),
        but channels-last after any spatial op: the copy keeps the whole graph NHWC. Ops that
        work per frame (a Conv3d with one frame per tap) read the input directly.
        """
        if not isinstance(v, Clip) or not v.from_input:
            return v
        if self.settled is None:
            self.settled = Clip(torch.nn.functional.max_pool2d(v.t, 1), v.rank)
        return self.settled

    def call_module(self, target: Any, args: Any, kwargs: Any) -> Any:
        if target == "_guards_fn":  # torch.export's input-shape guards: the trace's shapes hold
            return None
        args, kwargs = pytree.tree_map(_materialize, (args, kwargs))
        return super().call_module(target, args, kwargs)

    def output(self, target: Any, args: Any, kwargs: Any) -> Any:
        return pytree.tree_map(_materialize, super().output(target, args, kwargs))


class TimeBatchModule(nn.Module):
    """The traced graph run time-as-batch (see the module docstring); batch-1 clips.

    Attributes:
        done: The rewrites applied, ``3d-to-2d:<kind>:<module path>``.
        kept: ``(module path, op, reason)`` of 3-D ops left as they are.
    """

    def __init__(self, graph_module: torch.fx.GraphModule, sample: torch.Tensor, form: str) -> None:
        super().__init__()
        self.graph_module = graph_module
        self.derived = nn.Module()
        self.form = form
        self.done: dict[str, None] = {}
        self.converted = 0  # 3-D ops (conv, pooling, resize) given a 2-D form
        self.kept: list[tuple[str, str, str]] = []
        with torch.no_grad():
            _Runner(self, record=True).run(sample)

    def train(self, mode: bool = True) -> TimeBatchModule:
        """Record the mode only (the traced graph is an eval-mode graph without a switch)."""
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> Any:
        """The original model's outputs, computed with 2-D ops."""
        if x.shape[0] == 1:
            return _Runner(self, record=False).run(x)
        outs = [_Runner(self, record=False).run(x[i : i + 1]) for i in range(x.shape[0])]
        leaves = [pytree.tree_flatten(o) for o in outs]
        merged = [torch.cat(parts, 0) for parts in zip(*(f for f, _ in leaves), strict=True)]
        return pytree.tree_unflatten(merged, leaves[0][1])


def trace_functional(model: nn.Module, x: torch.Tensor) -> torch.fx.GraphModule | None:
    """The model as a functional ATen graph (``torch.export``), or None if it cannot be traced."""
    inner = getattr(model, "graph_module", None)  # a loaded .pt2 (tinyprune's ExportedModule)
    if isinstance(inner, torch.fx.GraphModule):
        model = inner  # traced directly, its nodes keep their module paths (no eval() switch)
    else:
        model.eval()
    try:
        program = torch.export.export(model, (x,)).run_decompositions({})
    except Exception as e:  # noqa: BLE001 - untraceable Python: the export keeps the module
        log.warning("3-D rewrite skipped: torch.export cannot trace the model (%s)", e)
        return None
    return cast(torch.fx.GraphModule, program.module())


def rewrite_time_as_batch(
    model: nn.Module, x: torch.Tensor, form: str = "concat"
) -> TimeBatchModule | None:
    """The time-as-batch form of ``model`` for the clip ``x`` (batch 1), or None when the input
    is not a clip or the model cannot be traced. Check :attr:`TimeBatchModule.kept`.
    """
    if x.dim() != 5 or x.shape[0] != 1:
        return None
    gm = trace_functional(model, x)
    if gm is None:
        return None
    rewritten = TimeBatchModule(gm, x, form)
    log.info(
        "3-D -> 2-D rewrite: %d 3-D ops rewritten, %d kept",
        rewritten.converted,
        len(rewritten.kept),
    )
    return rewritten


def apply_rewrite_3d(
    model: nn.Module, x: torch.Tensor, mode: str, target: str = ""
) -> tuple[nn.Module, list[str]] | None:
    """The export's hook: the rewritten model and its rewrites, or None to export as before.

    ``mode`` is ``"all"`` (TFLM targets: a 3-D op left over raises
    :class:`~tinyprune.errors.UnsupportedOpError` naming its layer and why) or ``"complete"``
    (LiteRT: use the rewrite only when no 3-D op is left, so the model can be fully int8).
    A model without 3-D ops is left alone.
    """
    rewritten = rewrite_time_as_batch(model, x)
    if rewritten is None or rewritten.converted == 0:
        return None
    if rewritten.kept and mode == "all":
        from tinyprune.errors import UnsupportedOpError

        lines = "\n".join(f"  - {op} (layer {path!r}): {why}" for path, op, why in rewritten.kept)
        msg = (
            f"the 3-D -> 2-D rewrite found no exact 2-D form for these layers, and target "
            f"{target!r} (TFLite Micro) has no 3-D ops; nothing was emitted:\n{lines}\n"
            "Change those layers (e.g. padding/stride in time, ceil_mode) or use a Raspberry "
            "Pi target (--target rpi4)"
        )
        raise UnsupportedOpError(
            msg, ops=tuple(sorted({op for _, op, _ in rewritten.kept})), target=target
        )
    if rewritten.kept:
        log.info("3-D rewrite not used: it leaves %s", ", ".join(p for p, _, _ in rewritten.kept))
        return None
    return rewritten, list(rewritten.done)
