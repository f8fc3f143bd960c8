"""Refuse SavedModel folders that would run code or touch files, read from the protobufs only.

Two places can carry code: the Keras metadata (``keras_metadata.pb``, or the object graph's
``user_object.metadata``) holds each layer's config, ``Lambda`` bytecode included, which
``tf_keras.models.load_model`` would run; and the graph itself may call Python (``PyFunc``) or
read/write files. Checkpoint writers (``SaveV2``) are allowed only in the functions that the
SavedModel's ``saver_def`` calls and that nothing else reaches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from firmware_export.keras_safety import (
    SAVER_OPS,
    UNSAFE_OPS,
    ConfigScan,
    _parse_json,
    refuse_code,
    scan_config,
)
from tinyprune.errors import ConfigError


def _read_proto(path: Path, proto: Any) -> Any:
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception as e:  # protobuf's DecodeError has no stable import path
        msg = f"{str(path)!r} is not a readable protobuf ({type(e).__name__}); re-save the model"
        raise ConfigError(msg) from e
    return proto


def _metadata_configs(folder: Path, meta_graph: Any) -> list[Any]:
    configs = []
    for node in meta_graph.object_graph_def.nodes:
        if node.WhichOneof("kind") == "user_object" and node.user_object.metadata:
            configs.append(_parse_json(node.user_object.metadata, "SavedModel metadata"))
    keras_meta = folder / "keras_metadata.pb"
    if keras_meta.is_file():
        from tf_keras.protobuf import saved_metadata_pb2

        meta = _read_proto(keras_meta, saved_metadata_pb2.SavedMetadata())
        configs += [_parse_json(n.metadata, str(keras_meta)) for n in meta.nodes if n.metadata]
    return configs


def _called(node: Any) -> list[str]:
    """Function names a NodeDef calls (``f``, branches, loop bodies...)."""
    names = []
    for value in node.attr.values():
        if value.HasField("func"):
            names.append(value.func.name)
        names += [f.name for f in value.list.func]
    return names


def _unsafe_op(node: Any) -> str | None:
    if node.op in UNSAFE_OPS:
        return str(node.op)
    if node.op == "PrintV2" and node.attr["output_stream"].s.startswith(b"file://"):
        return "PrintV2 to a file"
    return None


def _closure(roots: list[str], library: dict[str, Any]) -> set[str]:
    seen: set[str] = set()
    todo = [r for r in roots if r in library]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += [c for n in library[name].node_def for c in _called(n) if c in library]
    return seen


def graph_findings(meta_graph: Any) -> list[str]:
    """Ops of the graph that run Python or touch files (saver functions excepted for SaveV2)."""
    library = {f.signature.name: f for f in meta_graph.graph_def.library.function}
    saver_nodes = {
        meta_graph.saver_def.save_tensor_name.split(":")[0],
        meta_graph.saver_def.restore_op_name.split(":")[0],
    } - {""}
    main = list(meta_graph.graph_def.node)
    saver_roots = [c for n in main if n.name in saver_nodes for c in _called(n)]
    other_roots = [c for n in main if n.name not in saver_nodes for c in _called(n)]
    other_roots += list(meta_graph.object_graph_def.concrete_functions)
    reachable = _closure(other_roots, library)
    saver_only = _closure(saver_roots, library) - reachable
    found = []
    for where, nodes in [("the main graph", main)] + [(n, library[n].node_def) for n in library]:
        for node in nodes:
            op = _unsafe_op(node)
            if op is None and node.op in SAVER_OPS and where not in saver_only:
                op = f"{node.op} outside the saver"
            if op is not None:
                found.append(f"{op} op {node.name!r} in {where}")
    return found


def check_saved_model(folder: Path, trust: bool) -> ConfigScan:
    """Refuse a SavedModel with code-carrying Keras layers or unsafe graph ops (unless trusted).

    Returns:
        The scan of its Keras metadata (TF-MOT layers etc.).
    """
    from tensorflow.core.protobuf import saved_model_pb2

    sm = _read_proto(folder / "saved_model.pb", saved_model_pb2.SavedModel())
    scan = ConfigScan()
    for meta_graph in sm.meta_graphs:
        for config in _metadata_configs(folder, meta_graph):
            part = scan_config(config)
            scan.code += [c for c in part.code if c not in scan.code]
            scan.modules += [m for m in part.modules if m not in scan.modules]
            scan.tfmot_qat |= part.tfmot_qat
            scan.tfmot_prune |= part.tfmot_prune
        scan.code += graph_findings(meta_graph)
    refuse_code(scan, f"the SavedModel {str(folder)!r}", trust)
    return scan


__all__ = ["check_saved_model", "graph_findings"]
