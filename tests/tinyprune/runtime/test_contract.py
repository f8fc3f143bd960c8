"""The preprocessing contract: round trip, clear errors, inference from the tflite shape."""

from __future__ import annotations

import json

import pytest

from tinyprune.errors import ConfigError
from tinyprune.runtime.contract import (
    PreprocessingContract,
    infer_contract,
    load_contract,
    read_recorded,
)


def test_round_trip_through_json():
    c = PreprocessingContract(frames=8, height=12, width=12, layout="clip", fs=25.0)
    assert PreprocessingContract.from_dict(json.loads(json.dumps(c.to_dict()))) == c


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"frames": 10, "flavour": 1}, "unknown preprocessing contract key"),
        ({"layout": "rows"}, "layout 'rows'"),
        ({"data_types": ["Diff"]}, "not in"),
        ({"channels": 3}, "make 6 channels, not 3"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_invalid_contract_names_the_problem(doc, match):
    with pytest.raises(ConfigError, match=match):
        PreprocessingContract.from_dict(doc)


@pytest.mark.parametrize(
    ("shape", "want"),
    [
        ((1, 360, 36, 6), dict(layout="stacked", frames=10, height=36, channels=6)),
        ((1, 8, 16, 16, 3), dict(layout="clip", frames=8, height=16, channels=3)),
        ((1, 32, 32, 3), dict(layout="image", task="classification", frames=1)),
    ],
)
def test_inferred_from_the_input_shape(shape, want):
    c = infer_contract(shape)
    assert {k: getattr(c, k) for k in want} == want
    assert c.input_shape_nhwc() == shape[1:]


def test_recorded_contract_wins_and_must_match_the_model(tmp_path):
    tflite = tmp_path / "model_int8.tflite"
    c = PreprocessingContract(frames=4, height=12, width=12, fs=30.0)
    (tmp_path / "report.json").write_text(json.dumps({"preprocessing": c.to_dict()}))
    assert read_recorded(tmp_path) == c
    assert load_contract(tflite, (1, 48, 12, 6)) == c
    with pytest.raises(ConfigError, match="re-export"):
        load_contract(tflite, (1, 40, 10, 6))


def test_missing_contract_warns_with_what_was_assumed(tmp_path):
    with pytest.warns(UserWarning, match="assumed from the input shape"):
        c = load_contract(tmp_path / "m.tflite", (1, 40, 10, 6))
    assert (c.frames, c.data_types) == (4, ("DiffNormalized", "Standardized"))


def test_bad_json_is_a_config_error(tmp_path):
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_recorded(tmp_path)
