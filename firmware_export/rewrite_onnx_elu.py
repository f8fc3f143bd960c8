"""``Elu`` written with ops that quantize to int8 on TFLM and LiteRT.

TFLiteConverter leaves ELU in float in a full-int8 model (DEQUANTIZE, ELU, QUANTIZE: the
report's ``float_ops``), and an int8 exp is no way out (TFLM's EXP kernel takes float32 only).
PhysFormer's upsampler and feed-forward use ELU. For ``m = min(x, 0)``,
``exp(m) - 1 = tanh(m / 2) / sigmoid(-m)`` (multiply ``(e^m - 1)/(e^m + 1)`` by ``1 + e^m``),
and for ``alpha <= 1`` ``alpha (e^x - 1) >= x`` when ``x <= 0``, so

    Elu(x) = max(x, alpha * tanh(m / 2) / sigmoid(-m))

is exact in float (for ``x > 0`` the second term is 0), and every op has an int8 kernel on TFLM
(MINIMUM, MUL, TANH, LOGISTIC, DIV, MAXIMUM); the divisor lies in ``[0.5, 1)``, far from zero.
(``relu(x) + ...`` instead of the MAXIMUM is exact too but quantized badly: int8-vs-float
cosine 0.95 on a conv-ELU-conv net against 0.99997 for this form.) ``alpha > 1`` (rare) is
left alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def rewrite_elu(onnx_model: Any) -> list[str]:
    """Replace every ``Elu`` node in place; return the names of the rewritten nodes."""
    from onnx import helper, numpy_helper

    graph = onnx_model.graph
    new_nodes, done = [], []
    for node in graph.node:
        if node.op_type != "Elu":
            new_nodes.append(node)
            continue
        alpha = next((a.f for a in node.attribute if a.name == "alpha"), 1.0)
        if alpha > 1.0:
            new_nodes.append(node)
            continue
        base = node.name or node.output[0]
        consts = {"zero": 0.0, "half": 0.5, "minus_one": -1.0, "alpha": alpha}
        for key, value in consts.items():
            graph.initializer.append(
                numpy_helper.from_array(np.array(value, dtype=np.float32), f"{base}/{key}")
            )
        x = node.input[0]
        t = {k: f"{base}/{k}" for k in ("m", "half_m", "tanh", "neg_m", "sig", "em1", "neg")}

        def op(kind: str, inputs: list[str], out: str) -> Any:
            return helper.make_node(kind, inputs, [out], name=f"{out}_{kind}")

        new_nodes += [
            op("Min", [x, f"{base}/zero"], t["m"]),
            op("Mul", [t["m"], f"{base}/half"], t["half_m"]),
            op("Tanh", [t["half_m"]], t["tanh"]),
            op("Mul", [t["m"], f"{base}/minus_one"], t["neg_m"]),
            op("Sigmoid", [t["neg_m"]], t["sig"]),
            op("Div", [t["tanh"], t["sig"]], t["em1"]),
            op("Mul", [t["em1"], f"{base}/alpha"], t["neg"]),
            helper.make_node("Max", [x, t["neg"]], [node.output[0]], name=f"{base}/Max"),
        ]
        done.append(base)
    if done:
        del graph.node[:]
        graph.node.extend(new_nodes)
    return done
