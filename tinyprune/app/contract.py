"""The preprocessing contract from the model to the data, the run, the export and the runtime.

Why: an rPPG net is right only on the input it was built for. A zoo net declares its contract
(``model.preprocessing``, :mod:`tinyprune.models.contract`); here it becomes the data options of
the data set at hand (``chunk``, ``size``, ``data_types``, ...), so ``tinyprune train zoo:tscan
--data synthetic-rppg`` needs no ``--data-kw``. A ``--data-kw`` that contradicts the net (another
clip length or face size, a channel count the net does not take) is refused naming the option to
change instead. What the data set then really built (``bundle.info["preprocessing"]`` plus the
model's layout) is the contract a run records (``summary.json["preprocessing"]``, the
``[preprocessing]`` table of ``config.toml``) and that ``eval``, ``export`` and ``infer`` reuse.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tinyprune.config import DataSpec
from tinyprune.errors import ConfigError
from tinyprune.runtime.contract import PreprocessingContract

log = logging.getLogger(__name__)
RPPG_DATA = ("synthetic-rppg", "pure", "ubfc")
#: Data options that fix the net's input shape -> (contract field, the model option to change)
SHAPE_OPTIONS = {"chunk": ("frames", "frames"), "size": ("height", "img_size")}


def declared(model: Any) -> PreprocessingContract | None:
    """The contract a model declares (``model.preprocessing``), if it is one."""
    c = getattr(model, "preprocessing", None)
    return c if isinstance(c, PreprocessingContract) else None


def data_options(contract: PreprocessingContract | None, data_name: str) -> dict[str, Any]:
    """Options of data set ``data_name`` that build clips in ``contract`` ({} if none apply)."""
    kind = data_name.partition(":")[0]
    if contract is None or contract.task != "rppg" or kind not in RPPG_DATA:
        return {}
    opts: dict[str, Any] = {
        "chunk": contract.frames,
        "size": contract.height,
        "data_types": tuple(contract.data_types),
        "label_type": contract.label_type,
    }
    if kind == "synthetic-rppg":
        return opts | {"fs": contract.fs}
    return opts | {"enlarge": contract.enlarge, "detect": contract.detect}


def _norm(value: Any) -> Any:
    if isinstance(value, str | list | tuple):
        return tuple([value] if isinstance(value, str) else value)
    return value


def resolve_data(
    data: DataSpec, contract: PreprocessingContract | None, model_name: str
) -> DataSpec:
    """``data`` with the contract's options filled in; the user's options win where allowed.

    Raises:
        ConfigError: an option contradicts the net: another clip length or face size (change
            the model with ``--model-kw`` instead), or data types whose channel count the net
            does not take.
    """
    derived = data_options(contract, data.name)
    for key, value in data.options.items():
        if key in derived and _norm(value) != _norm(derived[key]):
            _check_override(key, value, contract, model_name)  # type: ignore[arg-type]
            log.warning("--data-kw %s=%r overrides %s's contract", key, value, model_name)
    return DataSpec(data.name, {**derived, **data.options})


def _check_override(key: str, value: Any, c: PreprocessingContract, model_name: str) -> None:
    if key in SHAPE_OPTIONS:
        field, model_kw = SHAPE_OPTIONS[key]
        msg = (
            f"--data-kw {key}={value!r} contradicts {model_name}'s input contract "
            f"({field}={getattr(c, field)}); the data follow the net: drop the option, or "
            f"build the net for it with --model-kw {model_kw}={value!r}"
        )
        raise ConfigError(msg)
    if key == "data_types" and 3 * len(_norm(value)) != c.channels:
        msg = (
            f"--data-kw data_types={value!r} gives {3 * len(_norm(value))} input channels but "
            f"{model_name} takes {c.channels} ({', '.join(c.data_types)}); drop the option"
        )
        raise ConfigError(msg)


def built_contract(bundle: Any, model: Any) -> PreprocessingContract | None:
    """The contract of the clips ``bundle`` holds, in ``model``'s layout (None: not rPPG).

    Raises:
        ConfigError: the data set's description is not a valid contract.
    """
    info = dict(getattr(bundle, "info", {}) or {}).get("preprocessing")
    if info is None:
        return None
    shape = tuple(getattr(model, "input_shape", ()) or ())
    layout = "clip" if len(shape) == 4 else "stacked"
    return PreprocessingContract.from_dict({**dict(info), "layout": layout})


def check_same(
    a: PreprocessingContract | None, b: PreprocessingContract | None, what_a: str, what_b: str
) -> None:
    """Raise when two recorded contracts for the same model disagree.

    Raises:
        ConfigError: naming the fields that differ and both values.
    """
    if a is None or b is None or a == b:
        return
    da, db = a.to_dict(), b.to_dict()
    diff = ", ".join(f"{k}: {da[k]!r} vs {db[k]!r}" for k in da if da[k] != db.get(k))
    msg = (
        f"{what_a} and {what_b} record different preprocessing contracts ({diff}); "
        "use the data and model of one run, or re-export"
    )
    raise ConfigError(msg)


def recorded(folder: str | Path) -> PreprocessingContract | None:
    """The contract a run folder records: ``summary.json["preprocessing"]`` (None: not there).

    Raises:
        ConfigError: the summary is not JSON, or its contract is malformed.
    """
    path = Path(folder) / "summary.json"
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        msg = f"{path} is not valid JSON ({e}); re-run the job"
        raise ConfigError(msg) from e
    found = doc.get("preprocessing") if isinstance(doc, dict) else None
    return None if found is None else PreprocessingContract.from_dict(found)


def run_data(run: Path) -> DataSpec | None:
    """The data set a run was made with: its config.toml (with options), else summary.json."""
    from tinyprune.config import load_toml

    if (run / "config.toml").is_file():
        section = load_toml(run / "config.toml").get("data", {})
        if "name" in section:
            return DataSpec(section["name"], dict(section.get("options", {})))
    summary = run / "summary.json"
    if summary.is_file():
        name = json.loads(summary.read_text()).get("data")
        return DataSpec(name) if name else None
    return None


def as_record(contract: PreprocessingContract | None) -> dict[str, Any] | None:
    """The JSON form written into ``summary.json`` / ``config.toml`` / ``report.json``."""
    return None if contract is None else contract.to_dict()
