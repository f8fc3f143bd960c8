"""runtime.hrv on beat series with known intervals."""

from __future__ import annotations

import numpy as np
import pytest

from tinyprune.errors import ConfigError
from tinyprune.runtime.hrv import hrv_from_beats


def test_alternating_intervals_give_exact_time_domain_measures() -> None:
    ibi = np.tile([0.80, 0.86], 20)  # successive differences of +-60 ms
    h = hrv_from_beats(np.concatenate([[0.0], np.cumsum(ibi)]))
    assert h.n_ibi == 40 and h.ibi_ms == pytest.approx(830.0)
    assert h.rmssd_ms == pytest.approx(60.0) and h.pnn50 == 1.0
    assert h.sdnn_ms == pytest.approx(np.std(ibi, ddof=1) * 1000)


def test_sinus_arrhythmia_gives_the_breathing_rate_and_hf_dominance() -> None:
    t = [0.0]
    while t[-1] < 120:
        t.append(t[-1] + 0.85 * (1 + 0.05 * np.sin(2 * np.pi * 0.25 * t[-1])))
    h = hrv_from_beats(t)
    assert abs(h.breathing_rate - 15.0) < 0.6
    assert h.hf > 10 * h.lf and h.lf_hf < 0.1


def test_a_missed_beat_is_dropped_and_short_series_have_no_spectrum() -> None:
    beats = np.arange(12) * 0.8
    h = hrv_from_beats(np.delete(beats, 6))  # one 1.6 s interval
    assert h.n_ibi == 9 and h.sdnn_ms == pytest.approx(0.0, abs=1e-9)
    assert np.isnan(h.lf_hf) and h.to_dict()["lf_hf"] is None


def test_bad_beats_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="increasing"):
        hrv_from_beats([0.0, 1.0, 0.5, 2.0])
