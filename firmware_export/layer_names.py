"""Which PyTorch layer each TFLite op comes from, so reports and errors name module paths.

torch.onnx names every ONNX node after the module scope it ran in (``/body/body.0/conv/Conv``).
onnx2tf then builds Keras layers with names of its own (``tf.nn.convolution_3``), and the
TFLite tensor names keep only those (``model_2/tf.nn.relu/Relu;model_2/tf.nn.convolution/...``:
one ``;``-separated part per fused TensorFlow op). :func:`record_onnx2tf_layers` watches the
conversion and maps every Keras layer onnx2tf creates to the ONNX node it was converting, and
:class:`LayerNames` turns a TFLite tensor name back into ONNX nodes and module paths.

Module paths are resolved against the model's own ``named_modules()``, because torch.onnx's
scope components are not always the full path (a ``ModuleDict`` entry ``md['x']`` shows as
``/x/...``, a ``Sequential`` child as ``/seq/seq.0/...``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from firmware_export.analyze import ModelAnalysis
    from firmware_export.tflite_model import TfliteModel

#: The label of nodes that ran in the model's own ``forward`` (no submodule).
TOP_LEVEL = "forward"

_WA_PREFIX = re.compile(r"^wa/")


@contextlib.contextmanager
def record_onnx2tf_layers(op_types: Iterable[str]) -> Iterator[dict[str, str]]:
    """While onnx2tf converts, record ``{Keras layer name: ONNX node name}``.

    onnx2tf converts node by node through ``onnx2tf.ops.<OpType>.make_node(graph_node=...,
    tf_layers_dict=...)``; each call is wrapped, and afterwards the Keras graph is walked back
    from the node's outputs to the layers an earlier node already owns: everything in between
    was created for this node.

    Args:
        op_types: The ONNX op types of the graph (their converter modules get wrapped).

    Yields:
        The dictionary, filled as the conversion runs.
    """
    found: dict[str, str] = {}
    patched: list[tuple[Any, Callable[..., Any]]] = []
    for op_type in sorted(set(op_types)):
        try:
            module = importlib.import_module(f"onnx2tf.ops.{op_type}")
        except ImportError:  # onnx2tf reports the unimplemented op itself
            continue
        original = getattr(module, "make_node", None)
        if original is None:
            continue
        module.make_node = _recording(original, found)  # type: ignore[attr-defined]
        patched.append((module, original))
    try:
        yield found
    finally:
        for module, original in patched:
            module.make_node = original


def _recording(original: Callable[..., Any], found: dict[str, str]) -> Callable[..., Any]:
    @functools.wraps(original)
    def make_node(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        node, layers = kwargs.get("graph_node"), kwargs.get("tf_layers_dict")
        if node is not None and isinstance(layers, dict):
            owner = _WA_PREFIX.sub("/", str(node.name))
            for out in node.outputs:
                entry = layers.get(out.name)
                if isinstance(entry, dict):
                    _claim(entry.get("tf_node"), owner, found)
        return result

    return make_node


def _claim(tensor: Any, owner: str, found: dict[str, str]) -> None:
    """Give ``owner`` every Keras layer behind ``tensor`` that no earlier node owns."""
    stack = [tensor]
    while stack:
        history = getattr(stack.pop(), "_keras_history", None)
        layer = getattr(history, "layer", None)
        name = getattr(layer, "name", None)
        if name is None or name in found:
            continue
        found[name] = owner
        for inbound in getattr(layer, "_inbound_nodes", []):
            stack.extend(getattr(inbound, "keras_inputs", []))


def module_path(node_name: str, modules: frozenset[str] | None) -> str:
    """The path of the innermost module of ``modules`` an ONNX node ran in ("" = top level).

    Args:
        node_name: A torch.onnx node name such as ``/seq/seq.0/conv/Conv``.
        modules: The model's ``named_modules()`` names; None when unknown (the scope
            components are then joined, a component that already holds the path replacing it).
    """
    if modules is None:
        return _scope_path(node_name)
    path = ""
    for part in [p for p in node_name.split("/") if p][:-1]:
        nxt = _child(path, part, modules)
        if nxt is not None:  # else a wrapper's scope or a rewrite's sub-name: skip it
            path = nxt
    return path


def _scope_path(node_name: str) -> str:
    path = ""
    for part in [p for p in node_name.split("/") if p][:-1]:
        path = part if path and part.startswith(path + ".") else f"{path}.{part}".lstrip(".")
    return path


def _child(path: str, part: str, modules: frozenset[str]) -> str | None:
    prefix = f"{path}." if path else ""
    for candidate in (prefix + part, part):
        if candidate in modules and candidate.startswith(prefix):
            return candidate
    hits = sorted(m for m in modules if m.startswith(prefix) and m.endswith("." + part))
    return hits[0] if len(hits) == 1 else None


@dataclass(frozen=True)
class LayerNames:
    """From TFLite tensor names to ONNX nodes and PyTorch module paths.

    Attributes:
        keras_to_onnx: What :func:`record_onnx2tf_layers` recorded.
        modules: The model's module names, or None for an ONNX source (labels are then the
            ONNX node names themselves).
        output_nodes: ONNX node producing each graph output, in output order (the converter
            renames output tensors, so they are matched by position).
    """

    keras_to_onnx: dict[str, str] = field(hash=False)
    modules: frozenset[str] | None = None
    output_nodes: tuple[str, ...] = ()

    def onnx_nodes(self, tensor_name: str, output_index: int | None = None) -> list[str]:
        """ONNX nodes fused into the op that writes ``tensor_name``, in graph order."""
        nodes: list[str] = []
        for part in tensor_name.split(";"):
            pieces = part.split("/")
            layer = pieces[1] if len(pieces) > 2 else None
            node = self.keras_to_onnx.get(layer) if layer is not None else None
            if node is not None and node not in nodes:
                nodes.append(node)
        if not nodes and output_index is not None and output_index < len(self.output_nodes):
            nodes.append(self.output_nodes[output_index])
        rank = self._rank()
        return sorted(nodes, key=lambda n: rank.get(n, len(rank)))

    def _rank(self) -> dict[str, int]:
        rank: dict[str, int] = {}
        for node in self.keras_to_onnx.values():  # insertion order = conversion order
            rank.setdefault(node, len(rank))
        return rank

    def label(self, node_name: str) -> str:
        """The module path of a node (``forward`` at top level), or its name for ONNX sources."""
        if self.modules is None:
            return node_name.lstrip("/") or node_name
        return module_path(node_name, self.modules) or TOP_LEVEL

    def torch_layers(self, tensor_name: str, output_index: int | None = None) -> list[str]:
        """Unique labels of the nodes behind ``tensor_name`` (empty when none is known)."""
        labels: list[str] = []
        for node in self.onnx_nodes(tensor_name, output_index):
            lab = self.label(node)
            if lab not in labels:
                labels.append(lab)
        return labels

    def describe(self, tensor_name: str, output_index: int | None = None) -> str | None:
        """``'body.0.conv'`` (or ``'stem + forward'`` for fused ops); None when unknown."""
        labels = self.torch_layers(tensor_name, output_index)
        return " + ".join(labels) if labels else None


def module_names(module: Any) -> frozenset[str] | None:
    """The ``named_modules()`` names of a module (None for no module)."""
    return None if module is None else frozenset(n for n, _ in module.named_modules())


def layer_names_of(module: Any, keras_to_onnx: dict[str, str], proto: Any) -> LayerNames:
    """The :class:`LayerNames` of one conversion (``module`` None for an ONNX source)."""
    return LayerNames(dict(keras_to_onnx), module_names(module), onnx_output_nodes(proto))


def onnx_output_nodes(proto: Any) -> tuple[str, ...]:
    """Name of the node producing each graph output of an ONNX model (in output order)."""
    producers = {o: n.name or o for n in proto.graph.node for o in n.output}
    return tuple(producers.get(o.name, o.name) for o in proto.graph.output)


def op_labels(model: TfliteModel, names: LayerNames | None) -> dict[int, str]:
    """``{op index: module path(s)}`` for every op of a parsed model whose origin is known."""
    if names is None:
        return {}
    outputs = list(model.outputs)
    labels = {}
    for op in model.ops:
        outs = [t for t in op.outputs if t >= 0]
        if not outs:
            continue
        index = outputs.index(outs[0]) if outs[0] in outputs else None
        label = names.describe(model.tensors[outs[0]].name, index)
        if label is not None:
            labels[op.index] = label
    return labels


def tensor_labels(model: TfliteModel, names: LayerNames | None) -> dict[str, str]:
    """``{TFLite tensor name: module path(s)}`` for the outputs of the ops in :func:`op_labels`."""
    by_op = op_labels(model, names)
    return {
        model.tensors[t].name: by_op[op.index]
        for op in model.ops
        if op.index in by_op
        for t in op.outputs
        if t >= 0
    }


def annotate(
    analysis: ModelAnalysis, model: TfliteModel, names: LayerNames | None
) -> ModelAnalysis:
    """The analysis with each layer row's ``torch_layer`` filled where the origin is known."""
    by_op = op_labels(model, names)
    if not by_op:
        return analysis
    rows = tuple(replace(r, torch_layer=by_op.get(r.index, "")) for r in analysis.layers)
    return replace(analysis, layers=rows)
