"""The configs: every default once, option values parsed as users write them, bad values refused."""

from __future__ import annotations

import dataclasses

import pytest

from tinyprune.config import (
    DESearchConfig,
    FinetuneConfig,
    PruneConfig,
    TrainRunConfig,
    load_toml,
    parse_options,
    to_toml,
)
from tinyprune.errors import ConfigError


@pytest.mark.parametrize(
    ("item", "value"),
    [
        ("width=8", 8),
        ("lr=1e-3", 1e-3),
        ("detect=false", False),
        ("detect=True", True),
        ("chunk=None", None),
        ("data_types=DiffNormalized,Standardized", ("DiffNormalized", "Standardized")),
        ("sizes=(16, 32)", (16, 32)),
        ("sizes=16,32", (16, 32)),
        ("name=pos", "pos"),
        ("path=/data/PURE", "/data/PURE"),
    ],
)
def test_option_values_parse_as_users_write_them(item: str, value: object) -> None:
    assert parse_options([item], "--data-kw") == {item.split("=")[0]: value}


@pytest.mark.parametrize("item", ["width", "=8"])
def test_an_option_without_key_or_value_is_refused(item: str) -> None:
    with pytest.raises(ConfigError, match="is not KEY=VALUE"):
        parse_options([item], "--model-kw")


def test_an_option_given_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="given twice"):
        parse_options(["size=8", "size=16"], "--data-kw")


@pytest.mark.parametrize("value", [1.5, 0.0, -0.5, 999.0, float("nan")])
def test_a_flops_target_that_is_neither_a_fraction_nor_a_count_is_refused(value: float) -> None:
    with pytest.raises(ConfigError, match="--target-flops"):
        PruneConfig(target_flops=value)


def test_fractions_and_absolute_counts_are_budgets() -> None:
    assert PruneConfig(target_flops=1.0).target_flops == 1.0
    assert PruneConfig(target_params=2e5).target_params == 2e5


@pytest.mark.parametrize(
    ("cls", "field", "value", "flag"),
    [
        (DESearchConfig, "pop", 3, "--de-pop"),
        (DESearchConfig, "workers", 0, "--de-workers"),
        (FinetuneConfig, "lr", 0.0, "--finetune-lr"),
        (PruneConfig, "bn_recalib", -1, "--bn-recalib"),
        (PruneConfig, "round_to", 0, "--round-to"),
        (TrainRunConfig, "epochs", 0, "--epochs"),
    ],
)
def test_bad_settings_name_their_flag(cls: type, field: str, value: object, flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        cls(**{field: value})


def test_a_resolved_config_round_trips_through_toml(tmp_path) -> None:
    cfg = PruneConfig(
        target_flops=0.5,
        criterion_options={"source": "mixed", "k": (2, 3)},
        finetune=FinetuneConfig(epochs=3, lr=1e-4),
        de=DESearchConfig(pop=8),
    )
    path = tmp_path / "config.toml"
    path.write_text(to_toml({"prune": cfg.to_dict()}))
    back = load_toml(path)["prune"]
    assert back["target_flops"] == 0.5 and "target" not in back  # None is left out
    assert back["finetune"] == {"epochs": 3, "lr": 1e-4}
    assert back["de"] == dataclasses.asdict(DESearchConfig(pop=8))
    assert back["criterion_options"] == {"source": "mixed", "k": [2, 3]}


def test_a_broken_toml_file_is_a_config_error(tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[prune\nepochs = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(path)
