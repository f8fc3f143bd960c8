"""Where LiteRT int8 with XNNPACK spends its time on a small pruned TS-CAN, and what the
LiteRT space-to-depth rewrite (``firmware_export/rewrite_onnx_s2d.py``) buys.

Three measurements, CPU time per call (``time.process_time``, robust to other load), runtimes
interleaved round-robin, XNNPACK on one thread:

1. ``--channels``: two 3x3 conv + tanh layers on a 10x36x36xC batch (Keras -> TFLite, fp32 and
   full int8), C = 4, 8, 12, 16, 32.
2. ``--blocks``: one int8 3x3 convolution at 10x36x36, Cin -> Cout, as it is and in the form the
   rewrite gives it (a stride-2 pick convolution to 2x2 blocks, the convolution with 4x the
   channels at 18x18, depth-to-space as a 4-D reshape / transpose / reshape).
3. ``--export DIR``: the CPU time each op of the export's int8 model adds (the model cut after
   each op, all cuts timed interleaved): the costliest ops and the total per op type, then the
   whole int8 model beside the float TFLite model and ONNX Runtime fp32.

    python bench/xnnpack_int8.py --channels --blocks --export runs/tscan-p/export
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


def _depth_to_space(t: Any) -> Any:
    """Block 2, as the export writes it (firmware_export/tflite_depth_to_space.py)."""
    import tensorflow as tf

    n, h, w, c4 = t.shape
    t = tf.transpose(tf.reshape(t, (n * h, w, 2, c4 // 2)), (0, 2, 1, 3))
    return tf.reshape(t, (n, 2 * h, 2 * w, c4 // 4))


def block_sweep() -> None:
    """Print int8 CPU ms of one 3x3 convolution on pixels and on 2x2 blocks per width."""
    import tensorflow as tf

    widths = ((3, 8), (8, 12), (16, 16), (24, 24), (32, 32))
    runners = {}
    for cin, cout in widths:
        i = tf.keras.Input((36, 36, cin), batch_size=10)
        pixels = tf.keras.Model(i, tf.keras.layers.Conv2D(cout, 3, padding="same")(i))
        picked = tf.keras.layers.Conv2D(4 * cin, 2, strides=2, use_bias=False)(i)
        y = tf.keras.layers.Conv2D(4 * cout, 3, padding="same")(picked)
        blocks = tf.keras.Model(i, tf.keras.layers.Lambda(_depth_to_space)(y))
        runners[f"{cin} {cout} pixels"] = _interpreter(_convert(pixels, True)).invoke
        runners[f"{cin} {cout} blocks"] = _interpreter(_convert(blocks, True)).invoke
    ms = cpu_medians(runners)
    print("| channels | int8 CPU ms on pixels | on 2x2 blocks | ratio |\n|---|---|---|---|")
    for cin, cout in widths:
        a, b = ms[f"{cin} {cout} pixels"], ms[f"{cin} {cout} blocks"]
        print(f"| {cin} -> {cout} | {a:.3f} | {b:.3f} | {a / b:.2f}x |")


def _prefix(model: Any, k: int) -> bytes:
    """The int8 model cut after op ``k`` (op ``k``'s first output is the only output)."""
    from ai_edge_litert.tools import flatbuffer_utils as fu

    m = copy.deepcopy(model)
    g = m.subgraphs[0]
    g.operators = g.operators[: k + 1]
    g.outputs = np.array([g.operators[-1].outputs[0]], dtype=np.int32)
    m.signatureDefs = []
    return bytes(fu.convert_object_to_bytearray(m))


def op_costs(folder: Path, top: int = 12) -> None:
    """Print what each op of the export's int8 model adds to the CPU time under XNNPACK.

    The model cut after each op is timed (all cuts interleaved); an op's cost is its cut's time
    minus the previous cut's, so ops that XNNPACK leaves to the builtin kernels (and the
    partition boundaries they make) show up where they are. Then the whole int8 model beside
    the fp32 TFLite model and ONNX Runtime fp32 on the same export.
    """
    import onnxruntime as ort
    from ai_edge_litert import schema_py_generated as s
    from ai_edge_litert.tools import flatbuffer_utils as fu

    model = fu.read_model(str(folder / "model_int8.tflite"))
    names = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    g = model.subgraphs[0]
    n = len(g.operators)
    cuts = {k: _interpreter(_prefix(model, k)).invoke for k in range(n)}
    ms = cpu_medians(cuts, rounds=40)
    rows = []
    for k, op in enumerate(g.operators):
        code = model.operatorCodes[op.opcodeIndex]
        shape = g.tensors[op.outputs[0]].shape
        added = ms[k] - (ms[k - 1] if k else 0.0)
        rows.append((added, k, names[max(code.builtinCode, code.deprecatedBuiltinCode)], shape))
    print("| op | builtin | output | CPU ms added |\n|---|---|---|---|")
    for added, k, name, shape in sorted(rows, reverse=True)[:top]:
        print(f"| {k} | {name} | {'x'.join(map(str, shape))} | {added:.3f} |")
    by_type: dict[str, float] = {}
    for added, _, name, _ in rows:
        by_type[name] = by_type.get(name, 0.0) + added
    print(
        "\nby op type: "
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(by_type.items(), key=lambda kv: -kv[1]))
    )
    runners = {
        "LiteRT int8 (XNNPACK)": _interpreter((folder / "model_int8.tflite").read_bytes()).invoke,
        "LiteRT fp32 (XNNPACK)": _interpreter(
            (folder / "model_float32.tflite").read_bytes()
        ).invoke,
    }
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(folder / "model.onnx"), opts)
    inp = sess.get_inputs()[0]
    x = np.zeros([d if isinstance(d, int) else 1 for d in inp.shape], np.float32)
    runners["ONNX Runtime fp32"] = lambda: sess.run(None, {inp.name: x})
    print()
    for name, t in cpu_medians(runners).items():
        print(f"{name}: {t:.2f} CPU ms per inference")


def main() -> int:
    """Run the measurements asked for."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--channels", action="store_true", help="the conv channel sweep")
    p.add_argument("--blocks", action="store_true", help="convolutions on pixels vs 2x2 blocks")
    p.add_argument("--export", type=Path, help="an export folder (int8, fp32 TFLite, ONNX)")
    args = p.parse_args()
    if args.channels:
        channel_sweep()
    if args.blocks:
        block_sweep()
    if args.export:
        op_costs(args.export)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
