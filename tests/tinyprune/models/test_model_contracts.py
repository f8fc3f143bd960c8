"""Every zoo rPPG net declares the input contract its layout really takes."""

from __future__ import annotations

import pytest

from tinyprune.models import create_model, get_model_spec, list_models
from tinyprune.runtime.contract import PreprocessingContract

RPPG = [n for n in list_models() if get_model_spec(n).task == "rppg"]
#: rPPG-Toolbox's inputs per family (DeepPhys/TS-CAN two branches, EfficientPhys diffs inside)
TYPES = {
    "deepphys": ("DiffNormalized", "Standardized"),
    "tscan": ("DiffNormalized", "Standardized"),
    "efficientphys": ("Standardized",),
    "physnet": ("DiffNormalized",),
    "physnet_2p1d": ("DiffNormalized",),
    "deeprppg": ("DiffNormalized",),
}


def _nhwc(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (*shape[1:], shape[0])


@pytest.mark.parametrize("name", RPPG)
def test_contract_matches_the_input_the_net_takes(name: str) -> None:
    kw = {"frames": 8, "img_size": 16} if name.startswith("test_") else {}
    model = create_model(name, **kw)
    c = model.preprocessing
    assert isinstance(c, PreprocessingContract)
    assert c.input_shape_nhwc() == _nhwc(model.input_shape)
    assert c.data_types == TYPES[name.removeprefix("test_")]
    assert (c.label_type, c.fs, c.task) == ("DiffNormalized", 30.0, "rppg")


def test_factory_options_move_the_contract() -> None:
    c = create_model("tscan", frames=20, img_size=72).preprocessing
    assert (c.frames, c.height, c.width, c.layout) == (20, 72, 72, "stacked")
    assert create_model("physnet", frames=32, img_size=32).preprocessing.layout == "clip"


def test_vision_nets_declare_no_rppg_contract() -> None:
    assert getattr(create_model("micro_cnn"), "preprocessing", None) is None
