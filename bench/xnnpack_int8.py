"""Why LiteRT int8 with XNNPACK is not faster than fp32 on a small pruned TS-CAN here.

Two measurements, CPU time per call (``time.process_time``, robust to other load), runtimes
interleaved round-robin:

1. ``--channels``: two 3x3 conv + tanh layers on a 10x36x36xC batch (Keras -> TFLite, fp32 and
   full int8), C = 4, 8, 12, 16, 32, under XNNPACK on one thread.
2. ``--export DIR``: the export's int8 model as is, with its non-delegated ops (AVERAGE_POOL_2D,
   DIV) swapped in the flatbuffer for delegated ones of the same shapes (MAX_POOL_2D, MUL; the
   outputs are then wrong: timing only), beside ONNX Runtime fp32 and the float TFLite model.

    python bench/xnnpack_int8.py --channels --export runs/tscan-p/export
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

import numpy as np


def cpu_medians(runners: dict[str, Any], rounds: int = 80) -> dict[str, float]:
    """Median CPU ms per call of each ``invoke``-able, interleaved."""
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for name, fn in runners.items():
            t = time.process_time()
            fn()
            times[name].append(time.process_time() - t)
    return {k: 1000 * float(np.median(v)) for k, v in times.items()}


def _interpreter(content: bytes) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content, num_threads=1)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    return it


def _convert(model: Any, int8: bool) -> bytes:
    import tensorflow as tf

    cv = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        shape = (10, *model.input_shape[1:])
        rng = np.random.default_rng(0)
        cv.optimizations = [tf.lite.Optimize.DEFAULT]
        cv.representative_dataset = lambda: (
            [rng.random(shape, dtype=np.float32)] for _ in range(8)
        )
        cv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        cv.inference_input_type = cv.inference_output_type = tf.int8
    return cv.convert()


def channel_sweep() -> None:
    """Print fp32 and int8 CPU ms of two conv layers per channel count."""
    import tensorflow as tf

    runners = {}
    for c in (4, 8, 12, 16, 32):
        i = tf.keras.Input((36, 36, c), batch_size=10)
        x = tf.keras.layers.Conv2D(c, 3, activation="tanh")(i)
        m = tf.keras.Model(i, tf.keras.layers.Conv2D(c, 3, activation="tanh")(x))
        for int8 in (False, True):
            runners[f"{c} {'int8' if int8 else 'fp32'}"] = _interpreter(_convert(m, int8)).invoke
    ms = cpu_medians(runners)
    print("| channels | fp32 CPU ms | int8 CPU ms |\n|---|---|---|")
    for c in (4, 8, 12, 16, 32):
        print(f"| {c} | {ms[f'{c} fp32']:.2f} | {ms[f'{c} int8']:.2f} |")


def _swapped(content: bytes, swaps: dict[int, int]) -> bytes:
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as s

    m = copy.deepcopy(s.ModelT.InitFromObj(s.Model.GetRootAsModel(content, 0)))
    for k, oc in enumerate(m.operatorCodes):
        code = max(oc.builtinCode, oc.deprecatedBuiltinCode)
        if code not in swaps:
            continue
        oc.builtinCode = swaps[code]
        oc.deprecatedBuiltinCode = min(swaps[code], 127)
        for op in m.subgraphs[0].operators:
            if op.opcodeIndex == k and swaps[code] == s.BuiltinOperator.MUL:
                op.builtinOptionsType, op.builtinOptions = (
                    s.BuiltinOptions.MulOptions,
                    s.MulOptionsT(),
                )
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def partition_test(folder: Path) -> None:
    """Print CPU ms of the export's int8 model, its op-swapped variants, ORT and fp32 TFLite."""
    import onnxruntime as ort
    from tensorflow.lite.python import schema_py_generated as s

    b = s.BuiltinOperator
    content = (folder / "model_int8.tflite").read_bytes()
    variants = {
        "int8 as exported": {},
        "int8, AVERAGE_POOL_2D -> MAX_POOL_2D": {b.AVERAGE_POOL_2D: b.MAX_POOL_2D},
        "int8, both swapped (one partition)": {b.AVERAGE_POOL_2D: b.MAX_POOL_2D, b.DIV: b.MUL},
    }
    runners = {k: _interpreter(_swapped(content, v)).invoke for k, v in variants.items()}
    runners["fp32 TFLite (XNNPACK)"] = _interpreter(
        (folder / "model_float32.tflite").read_bytes()
    ).invoke
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(folder / "model.onnx"), opts)
    inp = sess.get_inputs()[0]
    x = np.zeros([d if isinstance(d, int) else 1 for d in inp.shape], np.float32)
    runners["ONNX Runtime fp32"] = lambda: sess.run(None, {inp.name: x})
    for name, ms in cpu_medians(runners).items():
        print(f"{name}: {ms:.2f} CPU ms per inference")


def main() -> int:
    """Run the measurements asked for."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channels", action="store_true", help="the conv channel sweep")
    p.add_argument("--export", type=Path, help="an export folder (int8, fp32 TFLite, ONNX)")
    args = p.parse_args()
    if args.channels:
        channel_sweep()
    if args.export:
        partition_test(args.export)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
