"""Field-style rPPG nets, as the field writes them, export fully int8 (issue 11).

Each net (:mod:`rppg_field_nets`) is trained for seconds on synthetic clips so that its output
follows the input; an int8 model that ignored the input would fail the centred cosine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from rppg_field_nets import NETS, SliceShift, trained

pytestmark = pytest.mark.tf

#: What each net needs from the rewrites (one entry of report["rewrites"] each).
REWRITES = {
    "tscan_like": ("scatternd-slice-concat:", "rank5-unit-axis-as-rank4:"),
    "efficientphys_like": (
        "diff-slice-sub:",
        "scatternd-slice-concat:",
        "rank5-unit-axis-as-rank4:",
    ),
    "physformer_like": ("erf-tanh:", "elu-tanh-div:"),
}


def _export(name: str, target: str, out: Path) -> dict:
    from firmware_export import ExportOptions, export

    net, clips = trained(name)
    opts = ExportOptions(calib_cap=36, verify_samples=16)
    return export(net, clips, target=target, out_dir=out, options=opts).report


def _assert_int8_and_faithful(report: dict, name: str) -> None:
    assert report["float_ops"] == []
    for prefix in REWRITES[name]:
        assert any(r.startswith(prefix) for r in report["rewrites"]), (prefix, report["rewrites"])
    int8 = report["verify"]["int8_vs_float"]
    assert int8["passed"] and int8["centred_gated"]
    assert int8["centred_cos"] >= 0.95, int8


@pytest.mark.parametrize("name", sorted(NETS))
def test_field_net_exports_to_cortex_m7_bit_exact(name: str, tmp_path: Path) -> None:
    report = _export(name, "cortex-m7", tmp_path / "run")
    _assert_int8_and_faithful(report, name)
    parity = report["verify"]["tflm_vs_litert_ref"]
    assert parity["passed"]
    if name != "physformer_like":  # conv nets (their dense heads too): bit-exact
        assert parity["max_abs"] == 0 or (parity["known_difference"] and parity["max_abs"] <= 1)
    else:  # LiteRT's reference FULLY_CONNECTED requantizes in float, TFLM in integers
        assert parity["max_abs"] <= 2 and "FULLY_CONNECTED" in parity["first_divergent_op"]
    assert (tmp_path / "run" / "model_data.cc").is_file()


#: The default run exports the transformer to rpi4; the two conv nets on rpi4 are -m slow.
RPI4_CASES = [
    n if n == "physformer_like" else pytest.param(n, marks=pytest.mark.slow) for n in NETS
]


@pytest.mark.parametrize("name", RPI4_CASES)
def test_field_net_exports_to_rpi4_without_float_ops(name: str, tmp_path: Path) -> None:
    _assert_int8_and_faithful(_export(name, "rpi4", tmp_path / "run"), name)


def test_slice_shift_is_the_published_temporal_shift() -> None:
    """The test nets' shift really is TSM: channel fold 0 from the next frame, 1 from the
    previous, the rest unchanged, zeros at the clip edges."""
    x = torch.arange(2 * 4 * 3 * 1 * 1, dtype=torch.float32).reshape(8, 3, 1, 1)
    y = SliceShift(4)(x).reshape(2, 4, 3)
    v = x.reshape(2, 4, 3)
    assert torch.equal(y[:, :-1, 0], v[:, 1:, 0]) and not y[:, -1, 0].any()
    assert torch.equal(y[:, 1:, 1], v[:, :-1, 1]) and not y[:, 0, 1].any()
    assert torch.equal(y[:, :, 2], v[:, :, 2])


def test_trained_nets_follow_their_input() -> None:
    for name in NETS:
        net, clips = trained(name)
        with torch.no_grad():
            out = np.concatenate([net(torch.from_numpy(c[None])).numpy() for c in clips])
        assert out.std(axis=0).mean() > 0.3, name  # the output varies from clip to clip
