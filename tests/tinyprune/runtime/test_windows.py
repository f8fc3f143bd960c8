"""Model input layout and the overlap-add stream."""

from __future__ import annotations

import numpy as np
import pytest

from tinyprune.data.preprocess import normalise_inputs
from tinyprune.errors import ConfigError
from tinyprune.runtime.contract import PreprocessingContract
from tinyprune.runtime.windows import OverlapAdd, WindowBuffer, model_input


def _crops(t=4, s=6, seed=0):
    return np.random.default_rng(seed).integers(1, 255, (t, s, s, 3), dtype=np.uint8)


def test_stacked_input_is_the_training_layout_channels_last():
    """NHWC (T*H, W, C) must equal the NCHW (C, T*H, W) the torch net trains on, transposed."""
    crops = _crops()
    c = PreprocessingContract(frames=4, height=6, width=6)
    x = model_input(crops, c)[0]
    clip = normalise_inputs(crops, c.data_types).transpose(3, 0, 1, 2)  # (C, T, H, W) as training
    nchw = clip.reshape(6, 4 * 6, 6)  # tinyprune.models.rppg_2d.stack_frames
    np.testing.assert_array_equal(x, nchw.transpose(1, 2, 0))
    # frame 1, row 2 of the stack is row 6 + 2
    np.testing.assert_array_equal(x[8], normalise_inputs(crops, c.data_types)[1, 2])


def test_clip_input_keeps_time_axis():
    crops = _crops()
    c = PreprocessingContract(
        frames=4, height=6, width=6, channels=3, data_types=("Standardized",), layout="clip"
    )
    assert model_input(crops, c).shape == (1, 4, 6, 6, 3)
    with pytest.raises(ConfigError, match="face crops"):
        model_input(crops[:3], c)


def test_overlap_add_averages_overlaps():
    ola = OverlapAdd()
    ola.add(0, np.array([1.0, 1.0, 1.0, 1.0]))
    ola.add(2, np.array([3.0, 3.0, 3.0, 3.0]))
    np.testing.assert_allclose(ola.stream(), [1, 1, 2, 2, 3, 3])


def test_window_buffer_emits_every_stride():
    buf = WindowBuffer(frames=4, stride=2)
    starts = [r[0] for i in range(10) if (r := buf.push(np.full((1,), i))) is not None]
    assert starts == [0, 2, 4, 6]
    out = WindowBuffer(4, 2)
    got = [out.push(np.full((1,), i)) for i in range(6)][-1]
    assert got is not None and got[1].ravel().tolist() == [2, 3, 4, 5]
    with pytest.raises(ConfigError, match="stride"):
        WindowBuffer(4, 5)
