"""Where the runtime's time goes: round-robin timing, per-stage profile, cheap face re-detection."""

from __future__ import annotations

import numpy as np
import pytest

from tinyprune.runtime.bench import time_interleaved
from tinyprune.runtime.pipeline import STAGES, RppgPipeline, StageClock


def test_runtimes_are_timed_round_robin() -> None:
    calls: list[str] = []
    runners = [(name, 1, lambda name=name: calls.append(name)) for name in "abc"]
    timed = time_interleaved(runners, min_s=0.0, min_calls=5)
    assert calls[:9] == list("aaabbbccc")  # three warm-up calls each
    assert calls[9:] == list("abc") * 5  # then one call each per round
    assert [t["calls"] for t in timed] == [5, 5, 5]


def test_stage_clock_charges_each_lap_to_its_stage(monkeypatch) -> None:
    ticks = iter([0.0, 1.0, 3.0, 6.0])
    monkeypatch.setattr("tinyprune.runtime.pipeline.time.perf_counter", lambda: next(ticks))
    clock = StageClock()
    clock.lap("decode")
    clock.lap("face")
    clock.lap("decode")
    assert clock.seconds["decode"] == 4.0 and clock.seconds["face"] == 2.0
    assert clock.per_frame_ms(2)["decode"] == 2000.0 and clock.total() == 6.0


def test_profile_accounts_for_the_whole_run(recordings) -> None:
    result = RppgPipeline(method="pos").process_video(recordings.mjpg)
    prof = result["profile_ms_per_frame"]
    assert tuple(prof) == STAGES and all(v >= 0 for v in prof.values())
    assert prof["decode"] > 0 and prof["face"] > 0 and prof["inference"] == 0  # POS: no net
    total_s = sum(prof.values()) * result["frames"] / 1000
    assert total_s == pytest.approx(result["frames"] / result["frames_per_s"], rel=1e-6)


def _first_frame(recordings) -> np.ndarray:
    cv2 = pytest.importorskip("cv2")
    cap = cv2.VideoCapture(str(recordings.mjpg))
    ok, bgr = cap.read()
    cap.release()
    assert ok
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_region_search_finds_the_tracked_face_in_frame_coordinates(recordings) -> None:
    from tinyprune.data.preprocess import enlarged_box
    from tinyprune.runtime.face import detect_faces, load_cascade, search_region

    frame = _first_frame(recordings)
    cascade = load_cascade()
    full = detect_faces(cascade, frame)[0]
    roi = search_region(enlarged_box(full, frame.shape[:2]), frame.shape[:2])
    found = detect_faces(cascade, frame, roi)
    assert found, "the face is inside its own search region"
    (r, c, h, w), (fr, fc, fh, fw) = found[0], full
    assert abs(r + h / 2 - (fr + fh / 2)) < 0.2 * fh and abs(c + w / 2 - (fc + fw / 2)) < 0.2 * fw
    assert 0.7 < h / fh < 1.4
    corner = (0, 0, roi[2] // 2, roi[3] // 2)  # the background corner holds no face
    assert detect_faces(cascade, frame, corner) == []


@pytest.mark.tf
def test_bench_runtime_uses_builtin_kernels_when_the_reference_resolver_lacks_an_op(
    tmp_path,
) -> None:
    """A model with DEPTH_TO_SPACE (no reference kernel): the reference row becomes a builtin
    row named so, instead of the benchmark failing."""
    tf = pytest.importorskip("tensorflow")
    from tinyprune.errors import ConfigError
    from tinyprune.runtime.bench import _any_contract, _litert_runners
    from tinyprune.runtime.model import TfliteModel

    i = tf.keras.Input((4, 4, 8), batch_size=1)
    y = tf.keras.layers.Lambda(lambda t: tf.nn.depth_to_space(t, 2))(i)
    cv = tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(i, y))
    rng = np.random.default_rng(0)
    cv.optimizations = [tf.lite.Optimize.DEFAULT]
    cv.representative_dataset = lambda: ([rng.random((1, 4, 4, 8), np.float32)] for _ in range(4))
    cv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    cv.inference_input_type = cv.inference_output_type = tf.int8
    path = tmp_path / "model_int8.tflite"
    path.write_bytes(cv.convert())
    contract = _any_contract(path)  # none recorded: inferred from the input shape
    with pytest.raises(ConfigError, match="DEPTH_TO_SPACE"):
        TfliteModel(path, kernels="reference", contract=contract)
    runners = _litert_runners(path, np.zeros((1, 4, 4, 8), np.float32), (1,), contract)
    assert [(name, n) for name, n, _ in runners] == [
        ("LiteRT int8 xnnpack", 1),
        ("LiteRT int8 builtin", 1),
    ]
    for _, _, run in runners:
        run()
