"""Arena planning: TFLM's greedy plan reproduced to the byte, the optimal plan, the validator,
the embedded offline plan (bit-identical outputs, smaller arena) and the header's constant."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tflite_micro")
pytest.importorskip("ai_edge_litert")

from conftest import _full_int8, cached_model  # noqa: E402

from firmware_export import memory_plan as mp  # noqa: E402
from firmware_export.arena_plan import plan_arena  # noqa: E402
from firmware_export.arena_tail import cmsis_nn_scratch, head_and_tail, tail_items  # noqa: E402
from firmware_export.offline_plan import embed_plan, read_plan  # noqa: E402
from firmware_export.tflite_model import parse_tflite  # noqa: E402
from firmware_export.tflm import _record_child, run_tflm, tflm_runs_in  # noqa: E402
from tinyprune.errors import ExportError  # noqa: E402

pytestmark = pytest.mark.tf


def keras_int8_residual() -> bytes:
    """Two residual blocks at 16x16x8, a pad, a stride-2 conv, one block at 8x8x16: the
    ResNet pattern on which TFLM's largest-first planner is 2,048 B over the optimum."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(2)
    layers = tf.keras.layers
    x = inp = tf.keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    for _ in range(2):
        y = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
        y = layers.Conv2D(8, 3, padding="same")(y)
        x = layers.ReLU()(layers.Add()([x, y]))
    x = layers.ZeroPadding2D(((0, 1), (0, 1)))(x)
    x = layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    y = layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    y = layers.Conv2D(16, 3, padding="same")(y)
    x = layers.ReLU()(layers.Add()([x, y]))
    out = layers.Dense(4)(layers.GlobalAveragePooling2D()(x))
    return _full_int8(tf.keras.Model(inp, out), (1, 16, 16, 3), samples=4, seed=2)


@pytest.fixture(scope="session")
def residual_model(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return cached_model(keras_int8_residual, tmp_path_factory, "residual_int8.tflite")


def _buffers(model_bytes: bytes) -> list[mp.Buffer]:
    return mp.tensor_buffers(parse_tflite(model_bytes), mp.variable_tensors(model_bytes))


def _tflm_head(model_bytes: bytes) -> int:
    found = _record_child(model_bytes, 4 << 20)
    assert found is not None
    return head_and_tail(found[1])[0]


@pytest.mark.parametrize("which", ["int8_model", "residual_model", "wide_elu_model"])
def test_greedy_equals_tflm_head_to_the_byte(which: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(which)
    plan = mp.greedy_plan(_buffers(model))
    mp.validate_plan(plan)
    assert plan.head == _tflm_head(model)


def test_greedy_is_suboptimal_on_the_residual_net_and_optimal_reaches_the_bound(
    residual_model: bytes,
) -> None:
    bufs = _buffers(residual_model)
    bound = mp.lower_bound(bufs)
    greedy, best = mp.greedy_plan(bufs), mp.optimal_plan(bufs)
    assert greedy.head > bound  # the case the offline plan exists for
    mp.validate_plan(best)
    assert best.head == bound and best.proven_optimal


def test_milp_proves_the_lower_bound(residual_model: bytes) -> None:
    bufs = _buffers(residual_model)
    upper = mp.greedy_plan(bufs).head
    plan = mp._milp_plan(bufs, upper, time_limit=30)
    assert plan is not None and plan.method == "milp" and plan.proven_optimal
    mp.validate_plan(plan)
    assert plan.head == mp.lower_bound(bufs)


def test_lifetimes_follow_tflm_rules(int8_model: bytes) -> None:
    model = parse_tflite(int8_model)
    bufs = {b.tensor: b for b in _buffers(int8_model)}
    assert bufs[model.inputs[0]].first == 0
    assert bufs[model.outputs[0]].last == len(model.ops)  # live to the end
    assert all(b.size % mp.ALIGN == 0 for b in bufs.values())
    assert not any(model.tensors[t].is_constant for t in bufs)


def _two_live() -> list[mp.Buffer]:
    return [mp.Buffer(0, 32, 0, 2), mp.Buffer(1, 16, 1, 3), mp.Buffer(2, 48, 4, 5)]


@pytest.mark.parametrize(
    ("offsets", "problem"),
    [
        ({0: 0, 1: 0, 2: 0}, "overlap"),  # all at zero: tensors 0 and 1 are live at once
        ({0: 0, 1: 16, 2: 48}, "overlap"),  # partial overlap
        ({0: 0, 1: 40, 2: 0}, "aligned"),  # misaligned
        ({0: 0, 1: -16, 2: 0}, "aligned"),  # negative
        ({0: 0, 2: 0}, "aligned"),  # missing
    ],
)
def test_validator_rejects_bad_plans(offsets: dict[int, int], problem: str) -> None:
    with pytest.raises(ExportError, match=problem):
        mp.validate_plan(mp.MemoryPlan(tuple(_two_live()), offsets, "hand"))


def test_validator_accepts_reuse_after_a_lifetime_ends() -> None:
    plan = mp.MemoryPlan(tuple(_two_live()), {0: 0, 1: 32, 2: 0}, "hand")
    mp.validate_plan(plan)  # tensor 2 reuses tensor 0's bytes: they are never live together
    assert plan.head == 48


def test_embed_refuses_an_all_zero_plan(residual_model: bytes) -> None:
    bufs = _buffers(residual_model)
    zero = mp.MemoryPlan(tuple(bufs), {b.tensor: 0 for b in bufs}, "zero")
    with pytest.raises(ExportError, match="overlap"):
        embed_plan(residual_model, zero)


def test_planned_model_is_bit_identical_reproducible_and_smaller(residual_model: bytes) -> None:
    bufs = _buffers(residual_model)
    best = mp.optimal_plan(bufs)
    planned = embed_plan(residual_model, best)
    assert planned == embed_plan(residual_model, best)  # byte-reproducible
    meta = read_plan(planned)
    assert meta is not None and list(meta[:3]) == [1, 0, len(parse_tflite(planned).tensors)]
    assert _tflm_head(planned) == best.head < _tflm_head(residual_model)
    x = np.random.default_rng(3).integers(-128, 128, (6, 16, 16, 3)).astype(np.int8)
    np.testing.assert_array_equal(run_tflm(planned, x), run_tflm(residual_model, x))


def test_plan_arena_and_header_constant_run_in_tflm(residual_model: bytes) -> None:
    plan = plan_arena(residual_model, "auto", "cortex-m4")
    assert plan.embedded and plan.offline_head == plan.lower_bound < plan.online_head
    smallest = plan.measured_planned.smallest_bytes
    assert smallest < plan.measured_online.smallest_bytes
    _, tail = head_and_tail(plan.measured_planned.allocations)
    assert smallest <= 1.02 * (plan.lower_bound + tail)
    # the device constant is for 32-bit pointers; on this 64-bit host the tail is larger by
    # exactly the pointer difference, so constant + that difference must run and clearly less not
    host_equiv = plan.device_bytes + (plan.tail_host - plan.tail_32bit)
    assert tflm_runs_in(plan.model_bytes, host_equiv, known_to_run=True)
    assert not tflm_runs_in(plan.model_bytes, int(host_equiv * 0.9), known_to_run=True)
    assert plan.tail_32bit < plan.tail_host and plan.device_head >= plan.offline_head


def test_online_mode_never_embeds(residual_model: bytes) -> None:
    plan = plan_arena(residual_model, "online", "cortex-m0plus")
    assert not plan.embedded and plan.model_bytes == residual_model
    assert plan.measured_planned is None and plan.isa == "none"
    assert plan.online_head == _tflm_head(residual_model)
    assert plan.device_head >= plan.online_head  # the conv im2col scratch is placed online too


def test_tail_items_add_up_and_shrink_for_32_bit(int8_model: bytes) -> None:
    found = _record_child(int8_model, 1 << 20)
    assert found is not None
    items = tail_items(found[1])
    _, tail = head_and_tail(found[1])
    assert sum(i.host_bytes for i in items) == tail
    by = {i.kind: i for i in items}
    ev = by["TfLiteEvalTensor data"]
    assert ev.host_bytes == 24 * ev.count and ev.bytes_32bit == 12 * ev.count
    assert (
        by["NodeAndRegistration struct"].bytes_32bit == 32 * by["NodeAndRegistration struct"].count
    )


def test_cmsis_nn_scratch_formulas(int8_model: bytes) -> None:
    model = parse_tflite(int8_model)
    dsp, none = cmsis_nn_scratch(model, "dsp"), cmsis_nn_scratch(model, "none")
    convs = [op for op in model.ops if op.name == "CONV_2D"]
    first = convs[0]
    w = model.tensors[first.inputs[1]].shape  # (out, kh, kw, in)
    cols = w[1] * w[2] * model.tensors[first.inputs[0]].shape[-1]
    assert dsp[first.index] == mp.align_up(2 * mp.align_up(cols, 4) * 2)  # im2col, int16 x2
    assert none[first.index] == dsp[first.index]  # the im2col size does not depend on DSP
    with pytest.raises(ValueError, match="ISA"):
        cmsis_nn_scratch(model, "neon")


@pytest.mark.slow
def test_export_embeds_plan_and_header_states_the_parts(tmp_path: Path) -> None:
    """The full pipeline on the zoo's resnet20 (width 8): planned, header parts add up."""
    import torch

    from firmware_export.pipeline import ExportOptions, export
    from tinyprune.models import create_model

    torch.manual_seed(0)
    net = create_model("resnet20", width=8, input_size=32).eval()
    calib = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    res = export(
        net,
        calib,
        target="cortex-m4",
        out_dir=tmp_path / "run",
        options=ExportOptions(calib_cap=8, verify_samples=4),
        raise_on_budget=False,
    )
    plan = res.report["arena"]["plan"]
    assert plan["embedded"] and plan["offline_head_bytes"] == plan["lower_bound_bytes"]
    model = (tmp_path / "run" / "model_int8.tflite").read_bytes()
    assert read_plan(model) is not None
    header = (tmp_path / "run" / "model_data.h").read_text()
    parts = dict(re.findall(r"Arena(Head|Scratch|Tail|Margin)Size = (\d+);", header))
    total = int(re.search(r"ArenaSize = (\d+);", header).group(1))
    assert sum(int(v) for v in parts.values()) == total == res.report["arena_header_bytes"]
    assert int(parts["Head"]) == plan["offline_head_bytes"]
    assert int(parts["Tail"]) == plan["tail_32bit_bytes"]
    host = int(re.search(r"ArenaHostSize = (\d+);", header).group(1))
    assert tflm_runs_in(model, host)
    assert not tflm_runs_in(model, int(host * 0.9), known_to_run=True)
