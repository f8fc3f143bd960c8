"""Stage 1: a PyTorch module -> a static-shape ONNX file (batch 1), with exact rewrites."""

from __future__ import annotations

import copy
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from firmware_export.rewrite import rewrite_adaptive_pool3d_, rewrite_pool3d_
from firmware_export.rewrite_onnx import rewrite_onnx
from tinyprune.errors import ConfigError, ExportError

log = logging.getLogger(__name__)

OPSET = 17


def torch_forward(module: nn.Module, samples: np.ndarray) -> np.ndarray:
    """Float reference outputs of the model for every sample (batch 1 each, stacked)."""
    outs = []
    with torch.no_grad():
        for s in samples:
            out = module(torch.from_numpy(s[None]))
            if isinstance(out, (tuple, list)):
                out = out[0]
            outs.append(out.detach().numpy()[0])
    return np.stack(outs)


def prepare_module(module: nn.Module, sample: np.ndarray) -> tuple[nn.Module, list[str]]:
    """Copy the module in eval mode, check the sample fits it and apply the torch rewrites."""
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
    done = rewrite_pool3d_(model) + rewrite_adaptive_pool3d_(model, x)
    return model, done


def export_onnx(module: nn.Module, sample: np.ndarray, path: Path) -> list[str]:
    """Export ``module`` for one sample shape to ``path``; return the rewrites applied."""
    import onnx

    model, rewrites = prepare_module(module, sample)
    x = torch.from_numpy(sample[None])
    with torch.no_grad():
        out = model(x)
    n_out = len(out) if isinstance(out, (tuple, list)) else 1
    names = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
    buf = io.BytesIO()
    try:
        torch.onnx.export(
            model,
            (x,),
            buf,
            opset_version=OPSET,
            dynamo=False,
            input_names=["input"],
            output_names=names,
            do_constant_folding=True,
        )
    except Exception as e:
        from firmware_export.model_checks import clean_message, onnx_export_unsupported

        unsupported = onnx_export_unsupported(model, sample, e)
        if unsupported is not None:
            raise unsupported from e
        first = clean_message((str(e).strip().splitlines() or [""])[0])
        msg = f"torch.onnx.export failed: {type(e).__name__}: {first}"
        raise ExportError(msg, stage="onnx") from e
    proto = simplify(onnx.load_from_string(buf.getvalue()))
    rewrites += rewrite_onnx(proto)
    if n_out > 1:  # firmware models have one output; keep the first (e.g. PhysNet's BVP)
        keep = proto.graph.output[0]
        del proto.graph.output[:]
        proto.graph.output.append(keep)
        log.warning("the model returns %d outputs; exporting the first only", n_out)
    onnx.checker.check_model(proto)
    path.write_bytes(proto.SerializeToString())
    return rewrites


def load_onnx(path: Path) -> tuple[object, tuple[int, ...]]:
    """Read a user's ``.onnx`` file; return the proto with batch fixed to 1 and the sample shape."""
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
        return _static_single_input(proto, path)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - a checked but inconsistent graph (bad initializers)
        msg = f"cannot use ONNX model {str(path)!r}: {type(e).__name__}: {e}"[:500]
        raise ConfigError(msg) from e


def _static_single_input(proto: Any, path: Path) -> tuple[object, tuple[int, ...]]:
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
    proto = simplify(proto)
    rewrite_onnx(proto)
    return proto, shape


def simplify(proto: Any) -> Any:
    """Fold shape arithmetic into constants (onnx-simplifier), as onnx2tf expects.

    PyTorch exports ``chunk``/``split`` and ``view`` with Shape -> Gather -> Div chains; onnx2tf
    only simplifies through an ``onnxsim`` executable it looks up on PATH, so we run the library
    in-process instead (and tell onnx2tf not to), which keeps conversion independent of PATH.
    """
    import onnxsim

    try:
        simplified, ok = onnxsim.simplify(proto)
    except Exception as e:  # the simplifier is an optimisation: fall back to the graph as is
        log.warning("onnx-simplifier failed (%s); converting the unsimplified graph", e)
        return proto
    return simplified if ok else proto


def onnxruntime_forward(onnx_bytes: bytes, samples: np.ndarray) -> np.ndarray:
    """Outputs of ONNX Runtime (CPU) for every sample, batch 1 each."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.stack([sess.run(None, {name: s[None]})[0][0] for s in samples])
