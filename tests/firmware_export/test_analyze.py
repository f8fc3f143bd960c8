"""Tests of firmware_export.analyze on hand-built flatbuffers whose figures are counted by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

from firmware_export.analyze import analyze_tflite, lint_int8  # noqa: E402
from firmware_export.tflite_model import parse_tflite  # noqa: E402
from tinyprune.errors import ConfigError  # noqa: E402

pytestmark = pytest.mark.tf

_DTYPES = {"FLOAT32": (0, np.float32), "INT32": (2, np.int32), "INT8": (9, np.int8)}


def build_tflite(tensors, ops, inputs, outputs) -> bytes:
    """Pack a one-subgraph model.

    tensors: list of (name, shape, dtype, data or None, (scale, zero_point) or None);
    ops: list of (builtin name, inputs, outputs, options type name or None, options or None).
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    model = s.ModelT()
    model.version = 3
    model.buffers = [s.BufferT()]
    sg = s.SubGraphT()
    sg.tensors = []
    for name, shape, dtype, data, quant in tensors:
        t = s.TensorT()
        t.name, t.shape, t.type = name, list(shape), _DTYPES[dtype][0]
        t.buffer = 0
        if data is not None:
            b = s.BufferT()
            b.data = list(np.asarray(data, dtype=_DTYPES[dtype][1]).tobytes())
            model.buffers.append(b)
            t.buffer = len(model.buffers) - 1
        if quant is not None:
            q = s.QuantizationParametersT()
            q.scale, q.zeroPoint = [quant[0]], [quant[1]]
            t.quantization = q
        sg.tensors.append(t)
    codes: list[str] = []
    sg.operators = []
    for name, ins, outs, opt_type, opt in ops:
        if name not in codes:
            codes.append(name)
        o = s.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = codes.index(name), list(ins), list(outs)
        if opt_type is not None:
            o.builtinOptionsType = getattr(s.BuiltinOptions, opt_type)
            o.builtinOptions = opt
        sg.operators.append(o)
    sg.inputs, sg.outputs = list(inputs), list(outputs)
    model.subgraphs = [sg]
    model.operatorCodes = []
    for name in codes:
        c = s.OperatorCodeT()
        code = getattr(s.BuiltinOperator, name)
        c.builtinCode, c.deprecatedBuiltinCode, c.version = code, min(code, 127), 1
        model.operatorCodes.append(c)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def conv_dw_fc_model(zero_conv: int = 0) -> bytes:
    """Input (1,8,8,3) -> CONV 3x3 VALID 3->4 -> DW 3x3 VALID -> RESHAPE (1,64) -> FC 64->5.

    ``zero_conv`` conv weights (in flat order) are set to zero to test non-zero counts.
    """
    from ai_edge_litert import schema_py_generated as s

    rng = np.random.default_rng(0)
    wc = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    wc.reshape(-1)[:zero_conv] = 0.0
    wd = rng.normal(size=(1, 3, 3, 4)).astype(np.float32)
    wf = rng.normal(size=(5, 64)).astype(np.float32) * 0.1
    conv = s.Conv2DOptionsT()
    conv.padding, conv.strideW, conv.strideH = s.Padding.VALID, 1, 1
    conv.dilationWFactor = conv.dilationHFactor = 1
    dw = s.DepthwiseConv2DOptionsT()
    dw.padding, dw.strideW, dw.strideH, dw.depthMultiplier = s.Padding.VALID, 1, 1, 1
    dw.dilationWFactor = dw.dilationHFactor = 1
    fc = s.FullyConnectedOptionsT()
    tensors = [
        ("input", (1, 8, 8, 3), "FLOAT32", None, None),  # 0
        ("conv_w", (4, 3, 3, 3), "FLOAT32", wc, None),  # 1
        ("conv_b", (4,), "FLOAT32", np.zeros(4), None),  # 2
        ("conv_out", (1, 6, 6, 4), "FLOAT32", None, None),  # 3
        ("dw_w", (1, 3, 3, 4), "FLOAT32", wd, None),  # 4
        ("dw_b", (4,), "FLOAT32", np.ones(4), None),  # 5
        ("dw_out", (1, 4, 4, 4), "FLOAT32", None, None),  # 6
        ("shape", (2,), "INT32", np.array([1, 64]), None),  # 7
        ("flat", (1, 64), "FLOAT32", None, None),  # 8
        ("fc_w", (5, 64), "FLOAT32", wf, None),  # 9
        ("fc_b", (5,), "FLOAT32", np.zeros(5), None),  # 10
        ("logits", (1, 5), "FLOAT32", None, None),  # 11
    ]
    ops = [
        ("CONV_2D", (0, 1, 2), (3,), "Conv2DOptions", conv),
        ("DEPTHWISE_CONV_2D", (3, 4, 5), (6,), "DepthwiseConv2DOptions", dw),
        ("RESHAPE", (6, 7), (8,), None, None),
        ("FULLY_CONNECTED", (8, 9, 10), (11,), "FullyConnectedOptions", fc),
    ]
    return build_tflite(tensors, ops, [0], [11])


def test_macs_match_hand_counts() -> None:
    a = analyze_tflite(conv_dw_fc_model())
    macs = {r.op: r.macs for r in a.layers}
    assert macs["CONV_2D"] == 6 * 6 * 4 * (3 * 3 * 3)  # out elems x kh*kw*cin
    assert macs["DEPTHWISE_CONV_2D"] == 4 * 4 * 4 * (3 * 3)  # out elems x kh*kw
    assert macs["FULLY_CONNECTED"] == 1 * 64 * 5
    assert macs["RESHAPE"] == 0
    assert a.macs == 3888 + 576 + 320
    assert a.ops == {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "RESHAPE": 1, "FULLY_CONNECTED": 1}


def test_params_rows_and_shapes() -> None:
    a = analyze_tflite(conv_dw_fc_model())
    rows = {r.op: r for r in a.layers}
    assert rows["CONV_2D"].params == 108 + 4
    assert rows["DEPTHWISE_CONV_2D"].params == 36 + 4
    assert rows["RESHAPE"].params == 0  # an int32 shape is not a parameter
    assert rows["FULLY_CONNECTED"].params == 320 + 5
    assert a.params == 112 + 40 + 325
    assert rows["CONV_2D"].name == "conv_out"
    assert rows["CONV_2D"].input_shapes == ((1, 8, 8, 3),)
    assert rows["DEPTHWISE_CONV_2D"].output_shapes == ((1, 4, 4, 4),)
    assert rows["CONV_2D"].activation_bytes == 6 * 6 * 4 * 4
    assert [r.index for r in a.layers] == [0, 1, 2, 3]
    assert a.inputs[0].shape == (1, 8, 8, 3) and a.outputs[0].name == "logits"


def test_nonzero_counts_follow_unstructured_sparsity() -> None:
    dense = analyze_tflite(conv_dw_fc_model())
    sparse = analyze_tflite(conv_dw_fc_model(zero_conv=27))
    conv = next(r for r in sparse.layers if r.op == "CONV_2D")
    # zero biases count as zero parameters, too: conv bias and fc bias are zeros
    assert conv.nonzero_params == 108 - 27
    assert conv.nonzero_macs == (108 - 27) * 36  # nnz(W) x output positions (6*6)
    assert conv.macs == 3888
    assert sparse.nonzero_macs == dense.nonzero_macs - 27 * 36
    assert sparse.params == dense.params
    assert sparse.density < dense.density <= 1.0


def test_activation_lower_bound_by_hand() -> None:
    a = analyze_tflite(conv_dw_fc_model())
    # bytes: input 768, conv_out 576, dw_out 256, flat 256 (aliases dw_out), logits 20.
    # step 0: input + conv_out = 1344; step 1: conv_out + dw_out = 832;
    # step 2: dw_out/flat as one buffer = 256; step 3: flat + logits = 276.
    assert a.activation_lower_bound_bytes == 768 + 576


def test_lower_bound_counts_branches_and_outputs() -> None:
    # x -> A -> y1 ; x -> B -> y2 ; ADD(y1, y2) -> z, with y1 also a graph output
    from ai_edge_litert import schema_py_generated as s

    f = "FLOAT32"
    tensors = [
        ("x", (1, 100), f, None, None),
        ("y1", (1, 100), f, None, None),
        ("y2", (1, 50), f, None, None),
        ("z", (1, 100), f, None, None),
    ]
    ops = [
        ("RELU", (0,), (1,), None, None),
        ("LOGISTIC", (0,), (2,), None, None),
        ("ADD", (1, 2), (3,), "AddOptions", s.AddOptionsT()),
    ]
    a = analyze_tflite(build_tflite(tensors, ops, [0], [1, 3]))
    # step 1: x(400) + y1(400) + y2(200) live at once; step 2: y1 + y2 + z = 1000
    assert a.activation_lower_bound_bytes == 1000


def test_lower_bound_is_below_the_tflm_arena() -> None:
    runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime")
    model = conv_dw_fc_model()
    bound = analyze_tflite(model).activation_lower_bound_bytes

    def runs(size: int) -> bool:
        try:
            interp = runtime.Interpreter.from_bytes(model, arena_size=size)
            interp.set_input(np.zeros((1, 8, 8, 3), np.float32), 0)
            interp.invoke()
        except Exception:  # noqa: BLE001 - too small an arena fails in assorted ways
            return False
        return True

    lo, hi = 0, 1 << 16
    assert runs(hi)
    while hi - lo > 16:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if runs(mid) else (mid, hi)
    assert bound <= hi


def _int8_model(act_scale: float, act_zp: int, w_zp: int = 0) -> bytes:
    from ai_edge_litert import schema_py_generated as s

    fc = s.FullyConnectedOptionsT()
    tensors = [
        ("in", (1, 4), "INT8", None, (0.05, -128)),
        ("w", (2, 4), "INT8", np.array([[1, -2, 3, 0], [4, 5, -6, 7]]), (0.01, w_zp)),
        ("out", (1, 2), "INT8", None, (act_scale, act_zp)),
    ]
    ops = [("FULLY_CONNECTED", (0, 1, -1), (2,), "FullyConnectedOptions", fc)]
    return build_tflite(tensors, ops, [0], [2])


def test_lint_clean_model_has_no_issue() -> None:
    assert lint_int8(_int8_model(0.1, -3)) == []


@pytest.mark.parametrize("scale", [1e36, math.inf, 0.0, -0.5], ids=["huge", "inf", "zero", "neg"])
def test_lint_flags_absurd_scales(scale: float) -> None:
    issues = lint_int8(parse_tflite(_int8_model(scale, 0)))
    assert [(i.severity, i.tensor, i.op) for i in issues] == [("error", "out", "FULLY_CONNECTED#0")]
    assert "absurd quantization scale" in issues[0].message


def test_lint_flags_edge_zero_point_and_asymmetric_weights() -> None:
    edge = lint_int8(_int8_model(0.1, 127))
    assert [(i.severity, i.tensor) for i in edge] == [("warning", "out")]
    assert "saturated" in edge[0].message
    weights = lint_int8(_int8_model(0.1, 0, w_zp=3))
    assert [(i.severity, i.tensor, i.op) for i in weights] == [("error", "w", "FULLY_CONNECTED#0")]


def test_not_a_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a TFLite flatbuffer"):
        analyze_tflite(b"\x00" * 32)
