"""Stage 1: a PyTorch module -> a static-shape ONNX file (batch 1), with exact rewrites."""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from firmware_export.outputs import (
    SelectOutput,
    describe_outputs,
    forward_leaves,
    output_label,
    select_onnx_output,
)
from firmware_export.rewrite import (
    rewrite_adaptive_pool3d_,
    rewrite_graph_pool3d_,
    rewrite_pool3d_,
)
from firmware_export.rewrite_attention import rewrite_attention_
from firmware_export.rewrite_onnx import rewrite_onnx
from firmware_export.rewrite_ops import export_symbolics, functionalize_programs_
from tinyprune.errors import ConfigError, ExportError

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

OPSET = 17


def torch_forward(module: nn.Module, samples: np.ndarray) -> np.ndarray:
    """Float reference output 0 of the model for every sample (batch 1 each, stacked)."""
    return torch_outputs(module, samples)[0]


def torch_outputs(
    module: nn.Module, samples: np.ndarray, select: int | None = None
) -> list[np.ndarray]:
    """Float reference outputs for every sample (batch 1 each): one stacked array per output.

    Every tensor leaf of a tuple/list/dict result is an output (see
    :mod:`firmware_export.outputs`); ``select`` keeps leaf ``select`` only.
    """
    per_sample = []
    with torch.no_grad():
        for s in samples:
            leaves = forward_leaves(module, torch.from_numpy(s[None]))
            if select is not None:
                leaves = [leaves[select]]
            per_sample.append([t.detach().numpy()[0] for t in leaves])
    return [np.stack(outs) for outs in zip(*per_sample, strict=True)]


def prepare_module(
    module: nn.Module, sample: np.ndarray, rewrite_3d: str = "off", target: str = ""
) -> tuple[nn.Module, list[str]]:
    """Copy the module in eval mode, check the sample fits it and apply the torch rewrites.

    ``rewrite_3d`` is :meth:`ExportOptions.rewrite_3d_mode`'s answer (``off``, ``all``,
    ``complete``); see :func:`firmware_export.rewrite_3d.apply_rewrite_3d`.
    """
    model = copy.deepcopy(module).eval()
    x = torch.from_numpy(sample[None])
    try:
        with torch.no_grad():
            model(x)
    except Exception as e:
        msg = (
            f"the model cannot run on calibration samples of shape {tuple(sample.shape)} "
            f"(PyTorch layout, batch 1): {type(e).__name__}: {str(e).splitlines()[0]}"
        )
        raise ConfigError(msg) from e
    done = rewrite_attention_(model)
    if rewrite_3d != "off":  # 3-D -> 2-D, time as batch: replaces the pooling rewrites below
        from firmware_export.rewrite_3d import apply_rewrite_3d

        rewritten = apply_rewrite_3d(model, x, rewrite_3d, target)
        if rewritten is not None:
            return rewritten[0], done + rewritten[1]
    done += functionalize_programs_(model, x)
    done += rewrite_pool3d_(model) + rewrite_adaptive_pool3d_(model, x)
    done += rewrite_graph_pool3d_(model)  # the same in .pt2 programs
    return model, done


def export_onnx(
    module: nn.Module,
    sample: np.ndarray,
    path: Path,
    select: int | None = None,
    rewrite_3d: tuple[str, str] = ("off", ""),
) -> list[str]:
    """Export ``module`` for one sample shape to ``path``; return the rewrites applied.

    Every output is exported (``out0``, ``out1``, ... in ``forward``'s depth-first order), or
    only output ``select`` (then as a single-output model). ``rewrite_3d`` is (mode, target
    name) for :func:`prepare_module`.
    """
    import onnx

    model, rewrites = prepare_module(module, sample, *rewrite_3d)
    x = torch.from_numpy(sample[None])
    with torch.no_grad():
        n_out = len(describe_outputs(model(x), select))
    if select is not None:
        model = SelectOutput(model, select)
    names = [output_label(i) for i in range(n_out)]
    buf = io.BytesIO()
    printed: list[str] = []
    try:
        with export_symbolics(OPSET) as symbolic_rewrites, _native_output(printed):
            torch.onnx.export(
                model,
                (x,),
                # torch types ``f`` as a path; the TorchScript exporter also writes to a file
                buf,  # type: ignore[arg-type]
                opset_version=OPSET,
                dynamo=False,
                input_names=["input"],
                output_names=names,
                do_constant_folding=True,
            )
    except Exception as e:
        from firmware_export.model_checks import clean_message, onnx_export_unsupported

        unsupported = onnx_export_unsupported(model, sample, e, "".join(printed))
        if unsupported is not None:
            raise unsupported from e
        first = clean_message((str(e).strip().splitlines() or [""])[0])
        msg = f"torch.onnx.export failed: {type(e).__name__}: {first}"
        raise ExportError(msg, stage="onnx") from e
    rewrites += sorted(set(symbolic_rewrites))
    proto = simplify(onnx.load_from_string(buf.getvalue()))
    rewrites += rewrite_onnx(proto)
    if len(proto.graph.output) != n_out:
        msg = f"the ONNX graph has {len(proto.graph.output)} outputs, the model returns {n_out}"
        raise ExportError(msg, stage="onnx")
    onnx.checker.check_model(proto)
    path.write_bytes(proto.SerializeToString())
    return rewrites


@contextlib.contextmanager
def _native_output(printed: list[str]) -> Iterator[None]:
    """Capture file descriptors 1 and 2 (on failure torch.onnx's C++ side prints its whole IR
    graph to the C stdout, where the CLI's one-line error would drown in it).

    On success the text is written back unchanged; on failure it is kept in ``printed`` (the
    IR names the module scope of the op that failed) and not shown: the error says it.
    """
    import ctypes

    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    failed = False
    with tempfile.TemporaryFile() as tmp:
        for fd in saved:
            os.dup2(tmp.fileno(), fd)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            libc.fflush(None)
            for fd, copy_fd in saved.items():
                os.dup2(copy_fd, fd)
                os.close(copy_fd)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            printed.append(text)
            if not failed and text:
                sys.stderr.write(text)


def load_onnx(path: Path, select: int | None = None) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """Read a user's ``.onnx`` file; return the proto with batch fixed to 1 and the sample shape.

    ``select`` keeps graph output ``select`` only (``--output``).
    """
    import onnx

    from tinyprune.safe_load import load_onnx_file

    proto = load_onnx_file(path)  # external data only from inside the model's folder
    try:
        onnx.checker.check_model(proto)
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0]
        msg = f"cannot read ONNX model {str(path)!r}: {type(e).__name__}: {first}"
        raise ConfigError(msg) from e
    try:
        return _static_single_input(proto, path, select)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - a checked but inconsistent graph (bad initializers)
        msg = f"cannot use ONNX model {str(path)!r}: {type(e).__name__}: {e}"[:500]
        raise ConfigError(msg) from e


def _static_single_input(
    proto: Any, path: Path, select: int | None
) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    init_names = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in init_names]
    if len(inputs) != 1:
        msg = f"{str(path)!r} has {len(inputs)} inputs; tinyprune exports single-input models"
        raise ConfigError(msg)
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) < 2:
        msg = f"{str(path)!r}: input {inputs[0].name!r} has rank {len(dims)}; expected (N, C, ...)"
        raise ConfigError(msg)
    dims[0].ClearField("dim_param")
    dims[0].dim_value = 1
    shape = tuple(int(d.dim_value) for d in dims[1:])
    if any(s <= 0 for s in shape):
        msg = (
            f"{str(path)!r}: input {inputs[0].name!r} has dynamic non-batch dimensions "
            f"{shape}; export it with static shapes"
        )
        raise ConfigError(msg)
    if select is not None:
        select_onnx_output(proto, select)
    proto = simplify(proto)
    rewrite_onnx(proto)
    return proto, shape


#: onnx-simplifier fusions into ops that onnx2tf 1.28 cannot convert or TFLM lacks (a softmax
#: attention becomes ``Attention``: "Attention OP is not yet implemented").
SKIPPED_FUSIONS = (
    "fuse_attention",
    "fuse_gqa",
    "fuse_qkv",
    "fuse_rms_norm",
    "fuse_rope",
    "fuse_gelu",
)


def simplify(proto: Any) -> Any:
    """Fold shape arithmetic into constants (onnx-simplifier), as onnx2tf expects.

    PyTorch exports ``chunk``/``split`` and ``view`` with Shape -> Gather -> Div chains; onnx2tf
    only simplifies through an ``onnxsim`` executable it looks up on PATH, so we run the library
    in-process instead (and tell onnx2tf not to), which keeps conversion independent of PATH.
    """
    import onnxsim

    scoped = {o: n.name for n in proto.graph.node if "/" in n.name for o in n.output}
    try:
        simplified, ok = onnxsim.simplify(proto, skipped_optimizers=list(SKIPPED_FUSIONS))
    except Exception as e:  # the simplifier is an optimisation: fall back to the graph as is
        log.warning("onnx-simplifier failed (%s); converting the unsimplified graph", e)
        return proto
    if not ok:
        return proto
    _keep_scoped_names(simplified, scoped)
    return simplified


def _keep_scoped_names(proto: Any, scoped: dict[str, str]) -> None:
    """Give nodes the simplifier re-created (``Gemm_12``) a module-scoped name again, so that
    reports can name their PyTorch layer: the name of the node that wrote the same tensor, else
    the module of a parameter it reads (``blocks.0.attn.proj_q.bias``), else the scope of its
    first scoped input.
    """
    params = {i.name for i in proto.graph.initializer}
    taken = {n.name for n in proto.graph.node}
    for node in proto.graph.node:
        if "/" in node.name or not node.output:
            continue
        name = scoped.get(node.output[0]) or _scope_from_inputs(node, params)
        if name is None:
            continue
        unique, k = name, 1
        while unique in taken:
            unique, k = f"{name}_{k}", k + 1
        taken.add(unique)
        node.name = unique


def _scope_from_inputs(node: Any, params: set[str]) -> str | None:
    for i in node.input:
        head, _, tail = i.rpartition(".")
        if i in params and head and tail in ("weight", "bias"):
            return f"/{head}/{node.op_type}"
    for i in node.input:
        if i.startswith("/") and i.count("/") > 1:
            return f"{i.rsplit('/', 1)[0]}/{node.op_type}"
    return None


def onnxruntime_forward(onnx_bytes: bytes, samples: np.ndarray) -> np.ndarray:
    """Output 0 of ONNX Runtime (CPU) for every sample, batch 1 each."""
    return onnxruntime_outputs(onnx_bytes, samples)[0]


def onnxruntime_outputs(onnx_bytes: bytes, samples: np.ndarray) -> list[np.ndarray]:
    """Outputs of ONNX Runtime (CPU) for every sample, batch 1 each: one array per output."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    runs = [sess.run(None, {name: s[None]}) for s in samples]
    return [np.stack([r[k][0] for r in runs]) for k in range(len(runs[0]))]
