"""An int8 ``.tflite`` under LiteRT (XNNPACK or the reference kernels), with its contract.

Why: the runtime's one door to the interpreter: it resolves a run/export folder or a ``.tflite``
path, quantises float inputs with the model's scale and zero point, dequantises the output, and
carries the :class:`PreprocessingContract` that says how to build the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinyprune.errors import ConfigError
from tinyprune.runtime.contract import PreprocessingContract, load_contract

TFLITE_NAME = "model_int8.tflite"


def resolve_tflite(path: str | Path) -> Path:
    """``RUN_or_EXPORT_or_TFLITE`` -> the ``.tflite`` path.

    A folder without ``model_int8.tflite`` (a training run) gives the one export folder
    inside it that holds one.

    Raises:
        ConfigError: nothing there, or a folder with no (or several) exports.
    """
    p = Path(path)
    if p.is_dir():
        inside = sorted(p.glob(f"*/{TFLITE_NAME}"))
        if not (p / TFLITE_NAME).is_file() and len(inside) > 1:
            names = ", ".join(str(i.parent) for i in inside)
            msg = f"{p} holds several exports ({names}); pass the one to run"
            raise ConfigError(msg)
        p = p / TFLITE_NAME if (p / TFLITE_NAME).is_file() or not inside else inside[0]
    if not p.is_file():
        msg = (
            f"no model at {path}: expected a run/export folder holding {TFLITE_NAME} "
            "(tinyprune export ... --out RUN) or a .tflite file"
        )
        raise ConfigError(msg)
    return p


@dataclass(frozen=True)
class Quant:
    """Affine int8 quantisation of one tensor (``real = scale * (q - zero_point)``)."""

    scale: float
    zero_point: int
    dtype: Any


def _quant(detail: dict[str, Any]) -> Quant:
    scale, zp = detail.get("quantization", (0.0, 0))
    return Quant(float(scale), int(zp), detail["dtype"])


class TfliteModel:
    """A LiteRT interpreter for one model.

    Args:
        path: Run/export folder or ``.tflite``.
        threads: CPU threads for XNNPACK.
        kernels: ``xnnpack`` (LiteRT's default delegate), ``reference`` (builtin reference
            kernels, bit-exact with TFLM) or ``builtin`` (the optimized builtin kernels, no
            delegate: they have ops the reference resolver lacks, e.g. ``DEPTH_TO_SPACE``).
        contract: Override the recorded preprocessing contract.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        threads: int = 1,
        kernels: str = "xnnpack",
        contract: PreprocessingContract | None = None,
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolvers = {
            "xnnpack": OpResolverType.AUTO,
            "reference": OpResolverType.BUILTIN_REF,
            "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        }
        if threads < 1 or kernels not in resolvers:
            msg = f"need threads >= 1 and kernels {'|'.join(resolvers)}; got {threads}, {kernels!r}"
            raise ConfigError(msg)
        self.path = resolve_tflite(path)
        self.threads, self.kernels = threads, kernels
        resolver = resolvers[kernels]
        try:
            self.interpreter = Interpreter(
                model_path=str(self.path),
                num_threads=threads,
                experimental_op_resolver_type=resolver,
            )
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            msg = f"LiteRT cannot load {self.path}: {e}"
            raise ConfigError(msg) from e
        self._in = self.interpreter.get_input_details()[0]
        self._out = self.interpreter.get_output_details()[0]
        self.input_shape = tuple(int(s) for s in self._in["shape"])
        self.output_shape = tuple(int(s) for s in self._out["shape"])
        self.in_quant, self.out_quant = _quant(self._in), _quant(self._out)
        self.contract = contract or load_contract(self.path, self.input_shape)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Float input (batch axis included) -> the model's input dtype."""
        q = self.in_quant
        if q.dtype == np.float32 or q.scale == 0:
            return x.astype(q.dtype)
        info = np.iinfo(q.dtype)
        return np.clip(np.round(x / q.scale) + q.zero_point, info.min, info.max).astype(q.dtype)

    def dequantize(self, y: np.ndarray) -> np.ndarray:
        """Raw output -> float32."""
        q = self.out_quant
        if q.scale == 0:
            return y.astype(np.float32)
        return ((y.astype(np.float32) - q.zero_point) * q.scale).astype(np.float32)

    def invoke_raw(self, xq: np.ndarray) -> np.ndarray:
        """Run one already-quantised input; returns the raw output tensor (a copy)."""
        self.interpreter.set_tensor(self._in["index"], xq)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._out["index"]).copy()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Float channels-last sample(s) -> float output, batch axis kept."""
        x = np.asarray(x, np.float32).reshape(self.input_shape)
        return self.dequantize(self.invoke_raw(self.quantize(x)))
