"""The LiteRT space-to-depth rewrite: a narrow convolution on 2x2 pixel blocks computes what
the original computes (float, ONNX Runtime) for every kernel size and padding it takes, leaves
alone the convolutions it does not take, and a wrong block layout would be seen."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest

from firmware_export.export_onnx import onnxruntime_forward
from firmware_export.rewrite_onnx_s2d import MAX_CHANNELS, rewrite_convs_as_blocks

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _convs(x_shape, layers, *, tail=None, seed=0):
    """An ONNX graph: Conv layers (each a dict of Conv attributes plus ``cout``, ``act``) in a
    chain from input ``x``; ``tail`` adds a second reader of the first activation."""
    rng = np.random.default_rng(seed)
    nodes, inits, cin, prev = [], [], x_shape[1], "x"
    for i, spec in enumerate(layers):
        spec = dict(spec)
        cout, act, bias = spec.pop("cout"), spec.pop("act", None), spec.pop("bias", True)
        k = spec.pop("k")
        group = spec.get("group", 1)
        w = rng.standard_normal((cout, cin // group, k, k)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        ins = [prev, f"w{i}"]
        if bias:
            inits.append(
                numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), f"b{i}")
            )
            ins.append(f"b{i}")
        nodes.append(
            helper.make_node("Conv", ins, [f"c{i}"], name=f"conv{i}", kernel_shape=[k, k], **spec)
        )
        prev = f"c{i}"
        if act:
            nodes.append(helper.make_node(act, [prev], [f"a{i}"], name=f"act{i}"))
            prev = f"a{i}"
        cin = cout
    outputs = [helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)]
    if tail:
        nodes.append(helper.make_node("Relu", [tail], ["side"], name="side"))
        outputs.append(helper.make_tensor_value_info("side", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        outputs,
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _same(proto, rewritten, x_shape, seed=1):
    x = np.random.default_rng(seed).standard_normal(x_shape).astype(np.float32)
    for a, b in zip(_run(proto, x), _run(rewritten, x), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def _run(proto, x):
    import onnxruntime as ort

    s = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_every_kernel_and_padding_computes_the_same(k: int) -> None:
    tried = 0
    for begin, end, size in itertools.product(range(3), range(3), (8, 10)):
        if (size + begin + end - k + 1) % 2 or size + begin + end < k:
            continue  # odd output: not taken (below)
        proto = _convs((1, 3, size, size + 2), [
            {"k": k, "cout": 5, "pads": [begin, end, end, begin], "act": "Tanh"},
        ])  # fmt: skip
        rewritten = copy.deepcopy(proto)
        assert rewrite_convs_as_blocks(rewritten) == ["conv0"], (k, begin, end, size)
        ops = [n.op_type for n in rewritten.graph.node]
        assert "SpaceToDepth" not in ops and ops.count("DepthToSpace") == 1, ops
        _same(proto, rewritten, (1, 3, size, size + 2))
        tried += 1
    assert tried >= 6


def test_a_chain_stays_on_blocks_between_convolutions() -> None:
    """conv -> tanh -> conv -> relu: one DepthToSpace at the end, tanh runs on the blocks; a
    second reader of the first activation still gets the pixels."""
    layers = [
        {"k": 3, "cout": 8, "pads": [1, 1, 1, 1], "act": "Tanh"},
        {"k": 3, "cout": 12, "act": "Relu"},  # unpadded: 36 -> 34
        {"k": 1, "cout": 1, "act": "Sigmoid"},
    ]
    for tail in (None, "a0"):
        proto = _convs((10, 3, 36, 36), layers, tail=tail)
        rewritten = copy.deepcopy(proto)
        assert rewrite_convs_as_blocks(rewritten) == ["conv0", "conv1", "conv2"]
        ops = [n.op_type for n in rewritten.graph.node]
        assert ops.count("DepthToSpace") == (1 if tail is None else 2), ops
        assert "SpaceToDepth" not in ops
        if tail is None:  # every original weight was replaced, none left behind
            assert {i.name for i in rewritten.graph.initializer}.isdisjoint({"w0", "w1", "w2"})
        _same(proto, rewritten, (10, 3, 36, 36))


@pytest.mark.parametrize(
    "spec, shape",
    [
        ({"k": 3, "cout": MAX_CHANNELS + 1, "pads": [1, 1, 1, 1]}, (1, 3, 16, 16)),  # wide
        ({"k": 3, "cout": 8, "pads": [1, 1, 1, 1], "strides": [2, 2]}, (1, 3, 16, 16)),
        ({"k": 3, "cout": 8, "pads": [2, 2, 2, 2], "dilations": [2, 2]}, (1, 3, 16, 16)),
        ({"k": 3, "cout": 6, "pads": [1, 1, 1, 1], "group": 3}, (1, 3, 16, 16)),
        ({"k": 2, "cout": 8}, (1, 3, 16, 16)),  # 16 -> 15: odd output
        ({"k": 3, "cout": 8, "pads": [1, 1, 1, 1]}, (1, 3, 15, 16)),  # odd input
    ],
)
def test_convolutions_that_do_not_gain_are_left_alone(spec, shape) -> None:
    proto = _convs(shape, [spec])
    rewritten = copy.deepcopy(proto)
    assert rewrite_convs_as_blocks(rewritten) == []
    assert rewritten == proto


def test_a_wrong_block_layout_would_be_seen() -> None:
    """The float check can fail: reading the blocks channel-first (CRD) changes the output."""
    proto = _convs((1, 3, 12, 12), [{"k": 3, "cout": 4, "pads": [1, 1, 1, 1]}])
    rewritten = copy.deepcopy(proto)
    rewrite_convs_as_blocks(rewritten)
    (d2s,) = [n for n in rewritten.graph.node if n.op_type == "DepthToSpace"]
    for a in d2s.attribute:
        if a.name == "mode":
            a.s = b"CRD"
    x = np.random.default_rng(2).standard_normal((1, 3, 12, 12)).astype(np.float32)
    assert not np.allclose(_run(proto, x)[0], _run(rewritten, x)[0], atol=1e-3)


def test_onnxruntime_forward_matches_on_a_zoo_block(tmp_path) -> None:
    """A torch-exported graph (the shapes come from shape inference, not the test)."""
    torch = pytest.importorskip("torch")
    from torch import nn

    from firmware_export.export_onnx import export_onnx

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 12, 3), nn.Tanh())
    samples = np.random.default_rng(0).standard_normal((4, 3, 36, 36)).astype(np.float32)
    export_onnx(net.eval(), samples[0], tmp_path / "m.onnx")
    proto = onnx.load(tmp_path / "m.onnx")
    rewritten = copy.deepcopy(proto)
    assert len(rewrite_convs_as_blocks(rewritten)) == 2
    want = onnxruntime_forward(proto.SerializeToString(), samples)
    got = onnxruntime_forward(rewritten.SerializeToString(), samples)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _d2s_model() -> bytes:
    """int8 TFLite: conv to 4x8 channels -> DEPTH_TO_SPACE(2) -> conv (TFLiteConverter)."""
    tf = pytest.importorskip("tensorflow")
    tf.keras.utils.set_random_seed(0)
    i = tf.keras.Input((6, 10, 3), batch_size=2)
    y = tf.keras.layers.Conv2D(32, 3, padding="same")(i)
    y = tf.keras.layers.Lambda(lambda t: tf.nn.depth_to_space(t, 2))(y)
    y = tf.keras.layers.Conv2D(4, 1)(y)
    cv = tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(i, y))
    rng = np.random.default_rng(0)
    cv.optimizations = [tf.lite.Optimize.DEFAULT]
    cv.representative_dataset = lambda: (
        [rng.standard_normal((2, 6, 10, 3), np.float32)] for _ in range(8)
    )
    cv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    cv.inference_input_type = cv.inference_output_type = tf.int8
    return cv.convert()


def _litert(model: bytes, resolver: str, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(
        model_content=model, experimental_op_resolver_type=getattr(OpResolverType, resolver)
    )
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]).copy()


@pytest.mark.tf
def test_depth_to_space_as_transpose_is_bit_identical_and_runs_on_every_kernel_set() -> None:
    from firmware_export.tflite_depth_to_space import depth_to_space_as_transpose
    from firmware_export.tflite_model import parse_tflite

    original = _d2s_model()
    moved = depth_to_space_as_transpose(original)
    names = [op.name for op in parse_tflite(moved).ops]
    assert "DEPTH_TO_SPACE" not in names and names.count("TRANSPOSE") == 1, names
    x = np.random.default_rng(3).integers(-128, 128, (2, 6, 10, 3)).astype(np.int8)
    for resolver in ("AUTO", "BUILTIN_WITHOUT_DEFAULT_DELEGATES"):
        np.testing.assert_array_equal(_litert(moved, resolver, x), _litert(original, resolver, x))
    with pytest.raises(ValueError, match="DEPTH_TO_SPACE"):
        _litert(original, "BUILTIN_REF", x)  # why the rewrite exists
    _litert(moved, "BUILTIN_REF", x)
    from tflite_micro.python.tflite_micro import runtime as tflm

    micro = tflm.Interpreter.from_bytes(moved, arena_size=1 << 20)
    micro.set_input(x, 0)
    micro.invoke()
    np.testing.assert_array_equal(micro.get_output(0), _litert(moved, "BUILTIN_REF", x))


@pytest.mark.tf
def test_a_wrong_transpose_would_be_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    from firmware_export import tflite_depth_to_space as t

    original = _d2s_model()
    const = t._const

    def swapped(model, name, values):  # (0, 1, 2, 3) instead of (0, 2, 1, 3): rows misplaced
        return const(model, name, [0, 1, 2, 3] if name.endswith("d2s_perm") else values)

    monkeypatch.setattr(t, "_const", swapped)
    wrong = t.depth_to_space_as_transpose(original)
    x = np.random.default_rng(4).integers(-128, 128, (2, 6, 10, 3)).astype(np.int8)
    assert not np.array_equal(_litert(wrong, "AUTO", x), _litert(original, "AUTO", x))
