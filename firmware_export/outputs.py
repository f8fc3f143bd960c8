"""Every output of a model, in the model's own order, from PyTorch to the int8 flatbuffer.

A ``forward`` that returns a tuple, a list or a dict (nested or not) has one output per tensor
leaf, numbered depth-first: ``out0, out1, ...`` in ONNX, in the flatbuffer and in the header.
``--output N`` keeps leaf N only (the model is then exported as a single-output model).

TFLiteConverter does not keep the order: from a SavedModel it names the outputs by the
signature keys that onnx2tf writes (``output_0, output_1, ..., output_10``), sorts the keys as
strings (``output_10`` before ``output_2``) and lays the subgraph's outputs out in that order.
:func:`order_outputs_by_signature` maps the keys back to output numbers and permutes the
subgraph's output vector in place (same bytes, same size and alignment), so that output ``k``
of every runtime is ONNX output ``k``; :func:`check_output_shapes` then checks each shape.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from firmware_export.tflite_model import parse_tflite
from tinyprune.errors import ConfigError, ExportError

_KEY_RE = re.compile(r"^output_(\d+)$")


def output_label(index: int) -> str:
    """ONNX (and report) name of output ``index``: ``out0``, ``out1``, ..."""
    return f"out{index}"


def flatten_outputs(out: Any, where: str = "forward()") -> list[tuple[str, torch.Tensor]]:
    """Tensor leaves of a forward's result, depth-first, each with its place (``forward()[1]``).

    Raises:
        ConfigError: A leaf is not a tensor (e.g. ``None`` or an int), or there is no leaf.
    """
    if isinstance(out, torch.Tensor):
        return [(where, out)]
    if isinstance(out, Mapping):
        items: list[tuple[str, Any]] = [(f"{where}[{k!r}]", v) for k, v in out.items()]
    elif isinstance(out, (tuple, list)):
        items = [(f"{where}[{i}]", v) for i, v in enumerate(out)]
    else:
        msg = (
            f"{where} is a {type(out).__name__}, not a tensor; return tensors (a tuple, list "
            "or dict of tensors is fine) so that every output can be exported"
        )
        raise ConfigError(msg)
    leaves = [leaf for place, value in items for leaf in flatten_outputs(value, place)]
    if not leaves and where == "forward()":
        msg = "the model's forward returned no tensor; it has nothing to export"
        raise ConfigError(msg)
    return leaves


@dataclass(frozen=True)
class OutputInfo:
    """One exported output: its number, ONNX name and where ``forward`` returns it."""

    index: int
    label: str
    origin: str
    shape: tuple[int, ...]  # PyTorch layout, batch 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for ``report.json``."""
        return {
            "index": self.index,
            "label": self.label,
            "origin": self.origin,
            "torch_shape": list(self.shape),
        }


def describe_outputs(out: Any, select: int | None = None) -> list[OutputInfo]:
    """The outputs that will be exported (all, or leaf ``select`` only), numbered from 0.

    Raises:
        ConfigError: ``select`` is not a valid leaf number.
    """
    leaves = flatten_outputs(out)
    check_selection(select, len(leaves))
    chosen = leaves if select is None else [leaves[select]]
    return [
        OutputInfo(i, output_label(i), place, tuple(t.shape)) for i, (place, t) in enumerate(chosen)
    ]


def outputs_of(module: nn.Module, sample: np.ndarray, select: int | None) -> list[OutputInfo]:
    """:func:`describe_outputs` of an eval-mode copy of ``module`` run on one sample."""
    import copy

    model = copy.deepcopy(module).eval()
    with torch.no_grad():
        return describe_outputs(model(torch.from_numpy(sample[None])), select)


def onnx_outputs(proto: Any) -> list[tuple[str, tuple[int, ...]]]:
    """Name and static shape of every graph output of an ONNX model."""
    return [
        (o.name, tuple(int(d.dim_value) for d in o.type.tensor_type.shape.dim))
        for o in proto.graph.output
    ]


def check_selection(select: int | None, count: int) -> None:
    """Raise :class:`ConfigError` unless ``select`` is None or in ``[0, count)``."""
    if select is not None and not 0 <= select < count:
        msg = (
            f"--output {select}: the model has {count} output(s), numbered 0..{count - 1}; "
            "pick one of those or leave --output out to export them all"
        )
        raise ConfigError(msg)


class SelectOutput(nn.Module):
    """Wraps a module so that its forward returns tensor leaf ``index`` of the original."""

    def __init__(self, module: nn.Module, index: int) -> None:
        super().__init__()
        self.module = module
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The selected leaf of ``module(x)``."""
        return flatten_outputs(self.module(x))[self.index][1]


def forward_leaves(module: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """``module(x)`` as its list of tensor leaves."""
    return [t for _, t in flatten_outputs(module(x))]


def select_onnx_output(proto: Any, select: int) -> None:
    """Keep graph output ``select`` of an ONNX model (in place); dead nodes go at simplify."""
    outs = list(proto.graph.output)
    check_selection(select, len(outs))
    del proto.graph.output[:]
    proto.graph.output.append(outs[select])


def signature_output_keys(model_bytes: bytes) -> dict[str, int]:
    """Output key -> tensor index of the flatbuffer's first signature ({} when it has none)."""
    from firmware_export.tflite_model import _schema

    model = _schema().Model.GetRootAs(bytearray(model_bytes), 0)
    if model.SignatureDefsLength() == 0:
        return {}
    sig = model.SignatureDefs(0)
    keys = {}
    for j in range(sig.OutputsLength()):
        m = sig.Outputs(j)
        keys[m.Name().decode()] = int(m.TensorIndex())
    return keys


def order_outputs_by_signature(model_bytes: bytes) -> bytes:
    """Permute the main subgraph's outputs so that position ``k`` is signature key ``output_k``.

    Models whose signature keys are not all ``output_<k>`` (or that have none) come back as
    they are. The permutation rewrites the int32 output vector in place.

    Raises:
        ExportError: The keys do not name exactly the subgraph's outputs ``0..n-1``.
    """
    keys = signature_output_keys(model_bytes)
    numbered = {int(m.group(1)): t for k, t in keys.items() if (m := _KEY_RE.match(k))}
    if not keys or len(numbered) != len(keys):
        return model_bytes
    current = list(parse_tflite(model_bytes).outputs)
    wanted = [numbered.get(k, -1) for k in range(len(current))]
    if sorted(wanted) != sorted(current):
        msg = (
            f"the int8 model's signature outputs {sorted(keys)} do not match its "
            f"{len(current)} subgraph outputs; cannot tell which output is which"
        )
        raise ExportError(msg, stage="quantize")
    return reorder_outputs(model_bytes, wanted)


def reorder_outputs(model_bytes: bytes, order: Sequence[int]) -> bytes:
    """Copy of the model whose main subgraph lists the output tensors ``order`` (a permutation
    of its current outputs), written over the same bytes.
    """
    from firmware_export.tflite_model import _schema

    data = bytearray(model_bytes)
    sg = _schema().Model.GetRootAs(data, 0).Subgraphs(0)
    field = sg._tab.Offset(8)  # SubGraph.outputs
    start = sg._tab.Vector(field)
    n = sg.OutputsLength()
    if sorted(order) != sorted(int(sg.Outputs(j)) for j in range(n)):
        msg = f"reorder_outputs needs a permutation of the outputs, got {list(order)}"
        raise ConfigError(msg)
    data[start : start + 4 * n] = np.asarray(order, dtype="<i4").tobytes()
    return bytes(data)


def check_output_shapes(model_bytes: bytes, expected: Sequence[tuple[int, ...]]) -> None:
    """Check that output ``k`` of the flatbuffer has ONNX output ``k``'s shape.

    ``expected`` holds PyTorch-layout shapes (batch included); a 3-D or larger output may be
    channels-last in the flatbuffer (NCHW -> NHWC).

    Raises:
        ExportError: Another number of outputs, or a shape that fits neither layout.
    """
    model = parse_tflite(model_bytes)
    got = [tuple(model.tensors[t].shape) for t in model.outputs]
    if len(got) != len(expected):
        msg = f"the int8 model has {len(got)} outputs, the ONNX model {len(expected)}"
        raise ExportError(msg, stage="quantize")
    for k, (g, e) in enumerate(zip(got, expected, strict=True)):
        cl = (e[0], *e[2:], e[1]) if len(e) >= 3 else e
        if g not in (tuple(e), cl) and int(np.prod(g)) != int(np.prod(e)):
            msg = (
                f"output {k} ({output_label(k)}) of the int8 model has shape {g}, the ONNX "
                f"model's has {e}: the outputs were mixed up in conversion"
            )
            raise ExportError(msg, stage="quantize")
