"""Checks of a model before and around conversion that turn failures into documented exits.

- NaN/Inf weights are a :class:`ConfigError` (exit 2) naming the tensor, before conversion
  (otherwise verification fails later with an empty message).
- An op that ``torch.onnx`` or onnx2tf cannot convert is an :class:`UnsupportedOpError`
  (exit 4) naming the PyTorch layer (module path) and the op, in one clean line: ANSI colour
  codes are stripped from onnx2tf's messages and paths of the (deleted) staging folder removed.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from tinyprune.errors import ConfigError, UnsupportedOpError

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")
_ATEN_OP = re.compile(r"operator '?(aten::[A-Za-z0-9_.]+)'?")
_PY_OP = re.compile(r"(?:Python operator|PythonOp)\s*'?([A-Za-z_][A-Za-z0-9_]*)")
_SCOPE = re.compile(r"scope: (\S+)")
_ONNX2TF_OP = re.compile(r"onnx_op_type:\s*([A-Za-z0-9_]+)")
_ONNX2TF_NAME = re.compile(r"onnx_op_name:\s*(\S+)")
_WAY_OUT = {
    "LSTM": " (e.g. an nn.LSTM by convolutions or an unrolled nn.LSTMCell loop)",
    "TopK": " (sorting and top-k have no int8 TFLite form; take a max or a mean instead)",
}


def check_finite_module(module: nn.Module, source: str) -> None:
    """Raise :class:`ConfigError` naming the first parameter/buffer holding NaN or Inf."""
    import torch

    tensors = [*module.named_parameters(), *module.named_buffers()]
    for name, t in tensors:
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            _raise_non_finite(source, name, t.detach().cpu().numpy())


def check_finite_onnx(proto: Any, source: str) -> None:
    """Raise :class:`ConfigError` naming the first ONNX initializer holding NaN or Inf."""
    from onnx import numpy_helper

    for init in proto.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            _raise_non_finite(source, init.name, arr)


def _raise_non_finite(source: str, name: str, arr: np.ndarray) -> None:
    bad = ~np.isfinite(arr)
    first = tuple(int(i) for i in np.argwhere(bad)[0]) if arr.ndim else ()
    msg = (
        f"{source}: weight tensor {name!r} holds {int(bad.sum())} NaN/Inf value(s) (first at "
        f"index {first}); the model is broken (diverged training?) and cannot be quantized. "
        "Load a good checkpoint or re-train"
    )
    raise ConfigError(msg)


def clean_message(text: str, *paths: Path) -> str:
    """One line: ANSI escapes stripped, the given (staging) paths replaced by their names."""
    text = _ANSI.sub("", text)
    for p in sorted({str(p) for p in paths if str(p)}, key=len, reverse=True):
        text = text.replace(p + "/", "").replace(p, Path(p).name)
    return " ".join(text.split())


def onnx_export_unsupported(
    module: nn.Module, sample: Any, error: BaseException, ir_text: str = ""
) -> UnsupportedOpError | None:
    """An :class:`UnsupportedOpError` if ``torch.onnx.export`` failed on an unsupported op.

    ``ir_text`` is what torch.onnx printed (its IR graph names the module scope of each op).
    """
    text = clean_message(str(error))
    aten = _ATEN_OP.search(text)
    py = _PY_OP.search(text)
    if aten is not None:
        op = aten.group(1)
        layer = _layer_in_ir(ir_text, op, module) or _layer_calling_aten(
            module, sample, op.split("::", 1)[1].split(".")[0]
        )
    elif py is not None:
        op = f"autograd.Function {py.group(1)}"
        layer = _layer_using_name(module, py.group(1))
    else:
        return None
    where = f"layer {layer!r}" if layer else "the model's top-level forward"
    msg = (
        f"{where} uses {op}, which torch.onnx (opset 17) cannot export, so no TFLite model can "
        "be built; nothing was emitted. Replace it with supported ops (for FFTs: a matmul "
        "with a DFT matrix; for custom autograd Functions: their forward in plain torch ops)"
    )
    return UnsupportedOpError(msg, ops=(op,), stage="onnx")


def _layer_in_ir(ir_text: str, op: str, module: nn.Module) -> str | None:
    """The module path in the ``scope:`` of the first IR line that calls ``op``."""
    from firmware_export.layer_names import module_names, module_path

    for line in ir_text.splitlines():
        scope = _SCOPE.search(line)
        if f"{op}(" not in line or scope is None:
            continue
        names = [part.split("::")[-1] for part in scope.group(1).split("/")]
        path = module_path("/" + "/".join(n for n in names if n) + "/op", module_names(module))
        return path or None
    return None


def _layer_calling_aten(module: nn.Module, sample: Any, op_name: str) -> str | None:
    """The innermost submodule whose forward runs the aten op ``op_name`` (one traced run)."""
    import torch
    from torch.overrides import TorchFunctionMode

    stack: list[str] = []
    found: list[str] = []

    class Spy(TorchFunctionMode):  # sees torch.fft.rfft before it decomposes
        def __torch_function__(
            self,
            func: Callable[..., Any],
            types: Collection[type],
            args: tuple[Any, ...] = (),
            kwargs: dict[str, Any] | None = None,
        ) -> Any:
            if getattr(func, "__name__", "") == op_name and not found:
                found.append(stack[-1] if stack else "")
            return func(*args, **(kwargs or {}))

    handles = []
    for name, sub in module.named_modules():
        handles.append(sub.register_forward_pre_hook(lambda m, a, n=name: stack.append(n)))
        handles.append(sub.register_forward_hook(_pop_hook(stack)))
    try:
        with torch.no_grad(), Spy():
            module(torch.as_tensor(np.asarray(sample))[None])
    except Exception:  # noqa: BLE001 - naming the layer is best effort
        return None
    finally:
        for h in handles:
            h.remove()
    return (found[0] or None) if found else None


def _pop_hook(stack: list[str]) -> Any:
    def hook(module: nn.Module, args: Any, output: Any) -> None:
        del module, args, output
        stack.pop()

    return hook


def _layer_using_name(module: nn.Module, name: str) -> str | None:
    """The innermost submodule whose ``forward`` source mentions ``name``."""
    hit = None
    for path, sub in module.named_modules():
        try:
            src = inspect.getsource(type(sub).forward)
        except (OSError, TypeError):
            continue
        if re.search(rf"\b{re.escape(name)}\b", src):
            hit = path or type(sub).__name__
    return hit


def onnx2tf_unsupported(
    log_text: str, error: BaseException, onnx_path: Path, modules: frozenset[str] | None = None
) -> UnsupportedOpError | None:
    """An :class:`UnsupportedOpError` if onnx2tf's log names the ONNX node it failed on.

    The node is looked up in ``onnx_path`` for its op type; torch.onnx names nodes after the
    module path (``/features/lstm/LSTM``), which gives the PyTorch layer.
    """
    text = _ANSI.sub("", log_text)
    names = _ONNX2TF_NAME.findall(text)
    if not names:
        return None
    node_name = names[-1]
    op_type = _onnx_op_type(onnx_path, node_name)
    if op_type is None:
        return None
    from firmware_export.layer_names import module_path

    bare = node_name[3:] if node_name.startswith("wa/") else node_name  # onnx2tf's prefix
    layer = module_path(bare, modules) or "forward"
    reason = clean_message(f"{type(error).__name__}: {error}", onnx_path.parent)[:300]
    msg = (
        f"layer {layer!r} exports to the ONNX op {op_type}, which onnx2tf cannot convert to "
        f"TensorFlow ({reason}), so no TFLite model can be built; nothing was emitted. Replace "
        f"the layer with supported ops{_WAY_OUT.get(op_type, '')}"
    )
    return UnsupportedOpError(msg, ops=(op_type,), stage="convert")


#: ONNX ops that onnx2tf converts but TFLiteConverter then crashes on (SIGSEGV, killing the
#: process), measured with onnx2tf 1.28 and TensorFlow 2.21: refused before conversion.
CRASHING_OPS = {
    "GRU": "nn.GRU",
    "RNN": "nn.RNN",
}


def refuse_crashing_ops(proto: Any, modules: frozenset[str] | None) -> None:
    """Raise :class:`UnsupportedOpError` (exit 4) for a node of :data:`CRASHING_OPS`."""
    from firmware_export.layer_names import module_path

    for node in proto.graph.node:
        if node.op_type not in CRASHING_OPS:
            continue
        layer = module_path(node.name, modules) or node.name or "forward"
        kind = CRASHING_OPS[node.op_type]
        msg = (
            f"layer {layer!r} exports to the ONNX op {node.op_type} ({kind}); "
            "TFLiteConverter crashes on what onnx2tf makes of it, so no int8 TFLite model can "
            "be built; nothing was emitted. Replace the recurrent layer with temporal "
            "convolutions or an unrolled loop of its cell (nn.GRUCell / nn.RNNCell)"
        )
        raise UnsupportedOpError(msg, ops=(node.op_type,), stage="convert")


def _onnx_op_type(onnx_path: Path, node_name: str) -> str | None:
    import onnx

    try:
        graph = onnx.load(str(onnx_path), load_external_data=False).graph
    except Exception:  # noqa: BLE001 - best effort: the plain convert error is raised instead
        return None
    bare = node_name[3:] if node_name.startswith("wa/") else node_name
    for node in graph.node:
        if node.name in (node_name, bare, "/" + bare):
            return str(node.op_type)
    return None


__all__ = [
    "check_finite_module",
    "check_finite_onnx",
    "clean_message",
    "onnx2tf_unsupported",
    "onnx_export_unsupported",
    "refuse_crashing_ops",
]
