"""Fidelity on the input-dependent part, per-output merging and output bookkeeping (no runtime)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from firmware_export import fidelity, outputs, verify
from tinyprune.errors import ConfigError


def _ignoring_pair(n: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Float output 1 + 0.05 s (s follows the input); the int8 output is a constant."""
    s = np.random.default_rng(0).standard_normal((n, 1))
    return 1.0 + 0.05 * s, np.full((n, 1), 1.0)


def test_plain_cosine_passes_an_output_that_ignores_the_input_but_centred_fails() -> None:
    ref, cand = _ignoring_pair()
    plain = verify.compare_quantized(ref, cand, "x", verify.QuantLimits(min_cos=0.99))
    assert plain.passed and plain.cos > 0.998
    gated = verify.compare_quantized(
        ref,
        cand,
        "x",
        verify.QuantLimits(min_cos=0.99, min_centred_cos=0.9),
        output_scale=0.3 / 255,
    )
    assert not gated.passed and gated.centred_gated
    assert gated.centred_cos == 0.0 and gated.variation_lsb > 30
    assert gated.tolerance == {"cos_min": 0.99, "centred_cos_min": 0.9}


def test_a_faithful_int8_output_passes_the_centred_check() -> None:
    ref, _ = _ignoring_pair()
    scale = 0.3 / 255
    cand = np.round(ref / scale) * scale  # int8 rounding only
    c = verify.compare_quantized(
        ref, cand, "x", verify.QuantLimits(min_centred_cos=0.95), output_scale=scale
    )
    assert c.passed and c.centred_gated and c.centred_cos > 0.999
    assert c.centred_sqnr_db > 30 and c.sqnr_db > c.centred_sqnr_db


def test_centred_gate_needs_variation_of_two_output_steps_and_two_samples() -> None:
    ref, cand = _ignoring_pair()
    rms = float(np.std(ref))  # across-sample RMS variation of the float output
    lsb = fidelity.VARIATION_MIN_LSB
    below = fidelity.centred_figures(ref, cand, scale=rms / (lsb - 0.1))
    assert below["variation_lsb"] == pytest.approx(lsb - 0.1) and not below["centred_gated"]
    assert fidelity.centred_figures(ref, cand, scale=rms / (lsb + 0.1))["centred_gated"]
    assert not fidelity.centred_figures(ref[:1], cand[:1], scale=1e-4)["centred_gated"]
    # without a scale: the share of the energy that varies
    assert fidelity.centred_figures(ref, cand)["centred_gated"]
    flat = np.ones((8, 3)) + 1e-4 * np.random.default_rng(1).standard_normal((8, 3))
    assert not fidelity.centred_figures(flat, np.ones((8, 3)))["centred_gated"]


def test_sqnr_by_hand() -> None:
    ref = np.array([[3.0], [4.0]])
    cand = ref + np.array([[0.5], [0.0]])
    f = fidelity.centred_figures(ref, cand)
    assert f["sqnr_db"] == pytest.approx(10 * math.log10(25 / 0.25))
    # centred: ref_c = (-0.5, 0.5), cand_c = (-0.25, 0.25): error power 0.125 of 0.5
    assert f["centred_sqnr_db"] == pytest.approx(10 * math.log10(0.5 / 0.125))
    assert fidelity.centred_figures(ref, ref)["sqnr_db"] == math.inf


def test_merge_outputs_keeps_every_output_and_reports_the_worst() -> None:
    ref, cand = _ignoring_pair()
    gate = verify.QuantLimits(min_centred_cos=0.9)
    good = verify.compare_quantized(ref, ref, "x", gate, output_scale=1e-3)
    bad = verify.compare_quantized(ref, cand, "x", gate, output_scale=1e-3)
    merged = fidelity.merge_outputs("int8_vs_float", [good, bad])
    assert not merged.passed and merged.name == "int8_vs_float"
    assert merged.centred_cos == bad.centred_cos and merged.max_abs == bad.max_abs
    rows = merged.to_dict()["outputs"]
    assert [r["label"] for r in rows] == ["out0", "out1"] and [r["index"] for r in rows] == [0, 1]
    assert rows[0]["passed"] and not rows[1]["passed"]
    assert "outputs" not in rows[0] and "name" not in rows[0]


def test_flatten_outputs_is_depth_first_with_places() -> None:
    t = torch.zeros(1, 2)
    leaves = outputs.flatten_outputs((t, [t + 1, {"a": t + 2}], t + 3))
    assert [p for p, _ in leaves] == [
        "forward()[0]",
        "forward()[1][0]",
        "forward()[1][1]['a']",
        "forward()[2]",
    ]
    assert [float(x[0, 0]) for _, x in leaves] == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match=r"forward\(\)\[1\] is a NoneType"):
        outputs.flatten_outputs((t, None))


def test_output_selection_is_checked_and_selects_one_leaf() -> None:
    net = outputs.SelectOutput(torch.nn.Identity(), 0)
    assert torch.equal(net(torch.ones(1, 2)), torch.ones(1, 2))
    with pytest.raises(ConfigError, match="has 3 output"):
        outputs.check_selection(3, 3)
    info = outputs.describe_outputs((torch.zeros(1, 2), torch.zeros(1, 5)), select=1)
    assert [(i.label, i.origin, i.shape) for i in info] == [("out0", "forward()[1]", (1, 5))]
