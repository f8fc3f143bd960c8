"""Checks an export runs around conversion: a fast torch-level op pre-check, the int8 lint
gate, and the cross-runtime verification plan (which comparisons, on which samples).

The primitives (runtimes in child processes, figures, tolerances) live in
``firmware_export.verify`` and ``firmware_export.tflm``; this module decides what to compare.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from firmware_export.analyze import LintIssue
from firmware_export.budget import DeviceProfile
from firmware_export.calibration import to_channels_first, to_channels_last
from tinyprune.errors import MissingKernelError, UnsupportedOpError, VerificationError

log = logging.getLogger(__name__)

_TFLM_MISSING = {
    nn.Conv3d: (
        "CONV_3D",
        "Conv3d: drop --rewrite-3d off (the default rewrites it exactly as 2-D ops), use a "
        "2-D/(2+1)-D variant (e.g. zoo:physnet_2p1d) or a Raspberry Pi target (--target rpi4)",
    ),
    nn.ConvTranspose3d: (
        "CONV_3D_TRANSPOSE",
        "ConvTranspose3d: drop --rewrite-3d off (the default rewrites it as 2-D ops when it is "
        "strided in time only), or use a Raspberry Pi target (--target rpi4)",
    ),
}


def precheck_module(module: nn.Module, profile: DeviceProfile) -> None:
    """Fail fast, naming the PyTorch layers, on layers that always convert to ops TFLM lacks.

    The flatbuffer op check after conversion stays the authority; this check only saves the
    conversion time and names the layer, which the converted graph no longer can.
    """
    if profile.runtime != "tflm":
        return
    found = [
        (name, *_TFLM_MISSING[type(m)])
        for name, m in module.named_modules()
        if type(m) in _TFLM_MISSING
    ]
    if not found:
        return
    lines = "\n".join(f"  - {op} (layer {name!r}): {way}" for name, op, way in found)
    msg = (
        f"the model uses ops that TensorFlow Lite Micro builtins lack, so target {profile.name!r} "
        f"(runtime tflm) cannot run it; nothing was emitted:\n{lines}"
    )
    raise UnsupportedOpError(
        msg, ops=tuple(sorted({op for _, op, _ in found})), target=profile.name
    )


def lint_gate(issues: list[LintIssue]) -> list[str]:
    """Raise on int8 tensors that would crash or mislead the runtimes; return warnings."""
    fatal = [i for i in issues if i.severity == "error"]
    if fatal:
        lines = "\n".join(f"  - {i.tensor} ({i.op}): {i.message}" for i in fatal)
        msg = (
            "the int8 model has broken quantization parameters; the native runtimes would abort "
            f"on it, so nothing was emitted:\n{lines}\nLook at the layer feeding that tensor: a "
            "padded max-pool not preceded by ReLU pads with the float minimum (use padding=0 "
            "with an explicit F.pad, or pool after the activation), and check the calibration data"
        )
        raise VerificationError(msg, stage="lint")
    return [f"{i.severity}: {i.tensor} ({i.op}): {i.message}" for i in issues]


@dataclass(frozen=True)
class VerifyInputs:
    """The model in its three forms plus float samples (PyTorch layout)."""

    model_bytes: bytes
    float_tflite: bytes | None
    onnx_bytes: bytes | None
    module: nn.Module | None
    samples: np.ndarray | None
    tflm_runnable: bool
    float_reference: np.ndarray | None = None  # float outputs when there is no torch/ONNX model
    channels_last: bool = False  # samples already in the converted model's layout
    runtime: str = "tflm"  # the target's runtime: whose int8 outputs gate (tflm or litert)
    select: int | None = None  # --output: the module's output leaf that was exported


#: Output LSB accepted between TFLM and LiteRT's optimized (builtin) kernels.
BUILTIN_TOLERANCE_LSB = 2


def _tflm_parity(v: Any, model_bytes: bytes, int8_in: np.ndarray, tolerance: int) -> dict[str, Any]:
    """TFLM vs LiteRT's reference kernels, bit-exact; where REF lacks an op (e.g. ELU), vs its
    builtin kernels within :data:`BUILTIN_TOLERANCE_LSB` (optimized kernels round some
    requantizations differently: a 1-LSB difference at one op can reach the output as 2).
    """
    from firmware_export.parity import check_runtime_parity

    try:
        return check_runtime_parity(model_bytes, int8_in, tolerance).to_dict()
    except MissingKernelError:
        pass
    result = check_runtime_parity(
        model_bytes, int8_in, max(tolerance, BUILTIN_TOLERANCE_LSB), reference="builtin"
    ).to_dict()
    result["reference"] = (
        "LiteRT builtin kernels (its reference resolver lacks an op of this model; optimized "
        f"kernels may round differently, up to {BUILTIN_TOLERANCE_LSB} LSB accepted)"
    )
    return result


def missing_kernels(e: MissingKernelError) -> str:
    """The reason text for a comparison skipped because a resolver lacks kernels."""
    return f"no kernel for {', '.join(e.ops)} in its {e.resolver!r} resolver"


def _float_chain_outputs(
    inp: VerifyInputs, results: dict[str, Any], v: Any, tol: float
) -> list[np.ndarray] | None:
    """Torch -> ONNX Runtime -> float TFLite on every output; returns the float references
    (None without a torch or ONNX model).
    """
    from firmware_export.export_onnx import onnxruntime_outputs, torch_outputs
    from firmware_export.fidelity import merge_outputs

    samples = np.asarray(inp.samples)
    ort = onnxruntime_outputs(inp.onnx_bytes, samples) if inp.onnx_bytes is not None else None
    reference = ort
    if inp.module is not None:
        reference = torch_outputs(inp.module.eval(), samples, inp.select)
        if ort is not None:
            _count_check(reference, ort, "PyTorch", "ONNX Runtime")
            per = [
                v.compare_float(r, o, "torch_vs_onnxruntime", tol * _scale(r))
                for r, o in zip(reference, ort, strict=True)
            ]
            results["torch_vs_onnxruntime"] = {
                **merge_outputs("torch_vs_onnxruntime", per).to_dict(),
                "gate": True,
            }
            _raise_if_failed(results, "torch_vs_onnxruntime", "report the model to tinyprune")
    if inp.float_tflite is not None and ort is not None:
        lite = v.run_litert_outputs(inp.float_tflite, to_channels_last(samples), "builtin")
        _count_check(ort, lite, "ONNX Runtime", "the float TFLite model")
        per = [
            v.compare_float(o, _match_layout(t, o), "onnx_vs_tflite_float", tol * _scale(o))
            for o, t in zip(ort, lite, strict=True)
        ]
        results["onnx_vs_tflite_float"] = {
            **merge_outputs("onnx_vs_tflite_float", per).to_dict(),
            "gate": True,
        }
        _raise_if_failed(
            results,
            "onnx_vs_tflite_float",
            "onnx2tf changed what the model computes; try an export-friendly "
            "rewrite of the layer or raise --float-tolerance",
        )
    return reference


def _count_check(a: list[np.ndarray], b: list[np.ndarray], name_a: str, name_b: str) -> None:
    if len(a) != len(b):
        from tinyprune.errors import ExportError

        msg = f"{name_a} gives {len(a)} outputs, {name_b} {len(b)}: an output was lost"
        raise ExportError(msg, stage="verify")


def _scale(x: np.ndarray) -> float:
    return max(1.0, float(np.max(np.abs(x)))) if x.size else 1.0


def _raise_if_failed(results: dict[str, Any], key: str, way_out: str) -> None:
    r = results[key]
    if r["passed"]:
        return
    figures = ", ".join(
        f"{k}={r[k]:.4g}" for k in ("max_abs", "cos", "l2r") if r.get(k) is not None
    )
    msg = f"verification {key} failed ({figures}; limits {r['tolerance']}): {way_out}"
    raise VerificationError(msg)


def _int8_inputs(samples: np.ndarray | None, tin: Any, channels_last: bool) -> np.ndarray:
    """Quantized channels-last inputs; seeded random int8 data when no float samples exist."""
    from firmware_export.verify import quantize_input

    if samples is None:
        rng = np.random.default_rng(0)
        return rng.integers(-128, 128, size=(8, *tin.shape[1:]), dtype=np.int64).astype(np.int8)
    x = samples if channels_last else to_channels_last(samples)
    return quantize_input(x, tin.scale[0], tin.zero_point[0])


def _match_layout(channels_last: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Bring a converted model's output (NHWC for image-like outputs) to the reference layout."""
    if channels_last.ndim >= 3 and to_channels_first(channels_last).shape == reference.shape:
        return to_channels_first(channels_last)
    return channels_last.reshape(reference.shape)
