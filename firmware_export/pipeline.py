"""The only place that chains the export stages: torch -> ONNX -> SavedModel -> int8 TFLite ->
op check -> verification -> TFLM arena -> C sources -> budget -> reports.

Everything is built in a private folder beside ``out_dir`` and moved into place at the end,
so a failed export leaves nothing half-written. An over-budget model is the one exception
that still writes everything (exit 3), as build scripts want the report of what did not fit.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from firmware_export import calibration as calib_io
from firmware_export import publish as publishing
from firmware_export.budget import DeviceProfile, load_profile
from firmware_export.c_array import with_preprocessing
from firmware_export.checks import precheck_module
from firmware_export.export_onnx import export_onnx, load_onnx
from firmware_export.layer_names import layer_names_of, module_names
from firmware_export.model_checks import (
    check_finite_module,
    check_finite_onnx,
    refuse_crashing_ops,
)
from firmware_export.options import DEFAULT_TARGET, ExportOptions
from firmware_export.outputs import check_output_shapes, onnx_outputs, outputs_of
from firmware_export.report_builder import ReportInputs, analyze_and_report
from firmware_export.report_schema import ExportReport
from firmware_export.source import LoadedModel
from tinyprune.errors import BudgetExceededError, ConfigError

log = logging.getLogger(__name__)

Stage = Callable[[str], None]


#: Every artifact name an export may publish -> whether it is a folder (collision check).
ARTIFACT_KINDS = {
    name: name == "saved_model"
    for name in (
        "model.onnx",
        "saved_model",
        "model_int8.tflite",
        "model_float32.tflite",
        "model_int8_sparse.tflite",
        "model_data.h",
        "model_data.cc",
        "verify.json",
        "report.json",
        "report.md",
        "report.html",
    )
}

#: Below this share of non-zero weights, LiteRT exports also try the sparse TFLite encoding.
SPARSE_DENSITY_MAX = 0.7


@dataclass(frozen=True)
class ExportResult:
    """What an export produced: the run folder, its files and the report dictionary."""

    out_dir: Path
    paths: dict[str, Path]
    report: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def fits(self) -> bool:
        """True when every budget row is within its limit."""
        return self.typed_report.fits

    @property
    def typed_report(self) -> ExportReport:
        """The report as an :class:`~firmware_export.report_schema.ExportReport`."""
        return ExportReport.from_dict(self.report)


def export(
    model: nn.Module | LoadedModel | str | Path,
    calibration: np.ndarray | str | Path,
    *,
    target: str | Path = DEFAULT_TARGET,
    out_dir: str | Path = "run",
    options: ExportOptions | None = None,
    on_stage: Stage | None = None,
    raise_on_budget: bool = True,
) -> ExportResult:
    """Export a PyTorch model (or an ONNX file) to verified int8 TFLite, C sources and a report.

    Args:
        model: A module, a :class:`~firmware_export.source.LoadedModel`, the path of an
            ``.onnx`` file or of a Keras model (MODEL strings: ``tinyprune.app.export_model``).
        calibration: Float32 samples in the model's PyTorch layout, or the path of a ``.npy``.
        target: A built-in device profile name or a TOML profile path.
        out_dir: The run folder (created; existing artifacts of the same names are replaced).
        options: See :class:`ExportOptions`.
        on_stage: Called with the name of each stage as it starts (progress display).
        raise_on_budget: Raise :class:`BudgetExceededError` (after writing) when over budget.

    Raises:
        ConfigError: Bad input (exit 2). UnsupportedOpError: op missing on the target (exit 4).
        VerificationError: runtimes disagree (exit 5). BudgetExceededError: does not fit (exit 3).
    """
    opts = options or ExportOptions()
    profile = load_profile(target)
    loaded = _as_loaded(model)
    samples = _calibration(calibration, loaded)
    created = not Path(out_dir).exists()
    out = _prepare_out_dir(Path(out_dir))
    publishing.remove_stale_staging(out)
    timer = StageTimer(on_stage)
    try:
        publishing.check_collisions(out, ARTIFACT_KINDS)  # before any slow stage
        with publishing.staging(out) as work:
            result = _run_stages(loaded, samples, profile, opts, work, timer)
            paths = _publish(work, out, result)
    except BaseException as e:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # leave no trace of a failed export
        disk = publishing.disk_error(e, out) if isinstance(e, Exception) else None
        if disk is not None:
            raise disk from e
        raise
    log.info("export finished in %.1f s", sum(timer.times.values()))
    res = ExportResult(out, paths, result.report, dict(timer.times))
    if raise_on_budget:
        raise_if_over_budget(res, profile.name)
    return res


def raise_if_over_budget(result: ExportResult, target: str) -> None:
    """Raise :class:`BudgetExceededError` (exit 3) naming the failing resources.

    The files stay written.
    """
    if result.fits:
        return
    failing = [k for k, row in result.report["budget"].items() if not row["ok"]]
    where = result.out_dir / "report.md"
    msg = f"the model does not fit {target}: over budget on {', '.join(failing)} (see {where})"
    raise BudgetExceededError(msg, result=result)


@dataclass
class _StageOutput:
    files: dict[str, str]  # artifact key -> file name inside the staging folder
    report: dict[str, Any]


def _run_stages(
    loaded: LoadedModel,
    samples: np.ndarray,
    profile: DeviceProfile,
    opts: ExportOptions,
    work: Path,
    timer: StageTimer,
) -> _StageOutput:
    if loaded.keras_path is not None:
        inputs, files = _convert_keras(loaded, samples, profile, opts, work, timer)
    else:
        inputs, files = _convert_torch_or_onnx(loaded, samples, profile, opts, work, timer)
    done = analyze_and_report(inputs, opts, timer)
    if done.model_bytes != inputs.model_bytes:  # the offline memory plan was embedded
        (work / "model_int8.tflite").write_bytes(done.model_bytes)
    sources = done.sources
    if opts.preprocessing is not None:
        done.report["preprocessing"] = dict(opts.preprocessing)
        if sources is not None:
            sources = with_preprocessing(sources, inputs.name, opts.preprocessing)
    if sources is not None:
        (work / "model_data.h").write_text(sources.header)
        (work / "model_data.cc").write_text(sources.source)
        files |= {"header": "model_data.h", "source": "model_data.cc"}
    if profile.runtime == "litert" and done.analysis.density < SPARSE_DENSITY_MAX:
        files |= _sparse_variant(work, inputs, samples, opts, timer, done.report)
    _write_json(work / "verify.json", done.report["verify"])
    files["verify"] = "verify.json"
    from firmware_export.report import write_reports

    written = write_reports(work, done.report, done.analysis, done.budget)
    files |= {p.suffix.lstrip(".") + "_report": p.name for p in written}
    return _StageOutput(files, done.report)


def _convert_torch_or_onnx(
    loaded: LoadedModel,
    samples: np.ndarray,
    profile: DeviceProfile,
    opts: ExportOptions,
    work: Path,
    timer: StageTimer,
) -> tuple[ReportInputs, dict[str, str]]:
    from firmware_export.convert import convert_to_saved_model
    from firmware_export.quantize import quantize_int8

    onnx_path = work / "model.onnx"
    rewrites: list[str] = []
    with timer("onnx"):
        if loaded.module is not None:
            check_finite_module(loaded.module, loaded.source)
            mode_3d = opts.rewrite_3d_mode(profile.runtime)
            if mode_3d == "off":  # with the 3-D rewrite, it names the layers it cannot rewrite
                precheck_module(loaded.module, profile)
            info = [o.to_dict() for o in outputs_of(loaded.module, samples[0], opts.output)]
            rewrites = export_onnx(
                loaded.module, samples[0], onnx_path, opts.output, (mode_3d, profile.name)
            )
        else:
            assert loaded.onnx_path is not None  # a LoadedModel holds a module or an ONNX path
            proto, _ = load_onnx(loaded.onnx_path, select=opts.output)
            check_finite_onnx(proto, loaded.source)
            onnx_path.write_bytes(proto.SerializeToString())
            info = [{"origin": f"ONNX output {name!r}"} for name, _ in onnx_outputs(proto)]
    convert_from = onnx_path
    if profile.runtime == "litert":
        blocks = opts.space_to_depth == "auto"
        convert_from, done = _rewrite_for_litert(onnx_path, work / "model_blocks.onnx", blocks)
        rewrites += done
    cl = calib_io.to_channels_last(samples)
    keras_layers: dict[str, str] = {}
    modules = module_names(loaded.module)
    refuse_crashing_ops(load_proto(convert_from), modules)
    with timer("convert"):
        float_tflite = convert_to_saved_model(
            convert_from, work / "saved_model", cl, layer_map=keras_layers, modules=modules
        )
        os.replace(float_tflite, work / "model_float32.tflite")
    names = layer_names_of(loaded.module, keras_layers, load_proto(convert_from))
    with timer("quantize"):
        model_bytes = quantize_int8(
            work / "saved_model",
            cl[: opts.calib_cap],
            per_channel=opts.per_channel,
            describe=names.describe,
        )
    if convert_from != onnx_path:  # block convolutions end in DEPTH_TO_SPACE
        from firmware_export.tflite_depth_to_space import depth_to_space_as_transpose

        model_bytes = depth_to_space_as_transpose(model_bytes)
    check_output_shapes(model_bytes, [shape for _, shape in onnx_outputs(load_proto(onnx_path))])
    (work / "model_int8.tflite").write_bytes(model_bytes)
    inputs = ReportInputs(
        name=opts.name or loaded.name,
        source=loaded.source,
        model_bytes=model_bytes,
        select=opts.output,
        output_info=tuple(info),
        float_tflite=(work / "model_float32.tflite").read_bytes(),
        onnx_bytes=onnx_path.read_bytes(),
        module=loaded.module,
        samples=samples[: opts.verify_samples],
        profile=profile,
        rewrites=tuple(rewrites),
        calib_count=min(len(samples), opts.calib_cap),
        can_embed_plan=True,
        layer_names=names,
    )
    files = {
        "onnx": "model.onnx",
        "saved_model": "saved_model",
        "tflite": "model_int8.tflite",
        "tflite_float": "model_float32.tflite",
    }
    return inputs, files


def _rewrite_for_litert(onnx_path: Path, blocks_path: Path, blocks: bool) -> tuple[Path, list[str]]:
    """The LiteRT-only ONNX rewrites; returns the model to convert and what was rewritten.

    Pools and divisions (:mod:`firmware_export.rewrite_onnx_litert`) are rewritten in
    ``model.onnx`` itself. With ``blocks``, narrow convolutions on 2x2 pixel blocks
    (:mod:`firmware_export.rewrite_onnx_s2d`) go to ``blocks_path`` only: ``model.onnx`` keeps
    them as they are, since ONNX Runtime runs it (block convolutions cost it four times the
    MACs) and the export verifies against it.
    """
    from firmware_export.rewrite_onnx_litert import rewrite_for_litert
    from firmware_export.rewrite_onnx_s2d import rewrite_convs_as_blocks

    proto = load_proto(onnx_path)
    done = rewrite_for_litert(proto)
    if done:
        onnx_path.write_bytes(proto.SerializeToString())
    rewritten = rewrite_convs_as_blocks(proto) if blocks else []
    if not rewritten:
        return onnx_path, done
    blocks_path.write_bytes(proto.SerializeToString())
    return blocks_path, done + [f"conv-space-to-depth:{name}" for name in rewritten]


def _convert_keras(
    loaded: LoadedModel,
    samples: np.ndarray,
    profile: DeviceProfile,
    opts: ExportOptions,
    work: Path,
    timer: StageTimer,
) -> tuple[ReportInputs, dict[str, str]]:
    """A Keras model or SavedModel (e.g. pruned with TF-MOT): straight to TFLiteConverter.

    Its calibration samples are in the Keras model's own (channels-last) layout.
    """
    from firmware_export.keras_source import keras_to_int8

    if opts.output is not None:
        msg = "--output selects an output of a PyTorch or ONNX model; Keras sources keep theirs"
        raise ConfigError(msg)
    assert loaded.keras_path is not None  # _run_stages sends only Keras sources here
    with timer("quantize"):
        model_bytes, reference = keras_to_int8(
            loaded.keras_path,
            samples[: opts.calib_cap],
            per_channel=opts.per_channel,
            trust_model_code=opts.trust_model_code,
        )
    (work / "model_int8.tflite").write_bytes(model_bytes)
    n = min(len(reference), opts.verify_samples)
    inputs = ReportInputs(
        name=opts.name or loaded.name,
        source=loaded.source,
        model_bytes=model_bytes,
        samples=samples[:n],
        profile=profile,
        calib_count=min(len(samples), opts.calib_cap),
        float_reference=reference[:n],
        channels_last=True,
        can_embed_plan=True,
    )
    return inputs, {"tflite": "model_int8.tflite"}


def _sparse_variant(
    work: Path,
    inputs: ReportInputs,
    samples: np.ndarray,
    opts: ExportOptions,
    timer: StageTimer,
    report: dict[str, Any],
) -> dict[str, str]:
    """For LiteRT targets: the sparse TFLite encoding, kept when smaller and output-identical."""
    from firmware_export.sparse import sparse_tflite

    saved = work / "saved_model"
    if not saved.is_dir():
        return {}
    cl = samples if inputs.channels_last else calib_io.to_channels_last(samples)
    with timer("sparse"):
        result = sparse_tflite(
            saved, cl[: opts.calib_cap], inputs.model_bytes, per_channel=opts.per_channel
        )
    if result is None:
        report["sparse"] = None
        return {}
    (work / "model_int8_sparse.tflite").write_bytes(result.model_bytes)
    report["sparse"] = result.to_report("model_int8_sparse.tflite")
    return {"tflite_sparse": "model_int8_sparse.tflite"}


def load_proto(path: Path) -> Any:
    """The ONNX model at ``path`` (written by this export)."""
    import onnx

    return onnx.load(str(path))


def _as_loaded(model: nn.Module | LoadedModel | str | Path) -> LoadedModel:
    from firmware_export.keras_source import is_keras_source

    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, (str, Path)) and is_keras_source(model):
        path = Path(model)
        return LoadedModel(name=path.stem, source=str(model), keras_path=path)
    if isinstance(model, (str, Path)) and str(model).endswith(".onnx"):
        path = Path(model)
        if not path.is_file():
            msg = f"ONNX model {str(path)!r} does not exist (or is not a file)"
            raise ConfigError(msg)
        return LoadedModel(name=path.stem, source=str(model), onnx_path=path)
    if isinstance(model, (str, Path)):
        msg = (
            f"firmware_export.export takes a module, a LoadedModel, an .onnx file or a Keras "
            f"model, not {str(model)!r}; resolve MODEL strings (zoo:NAME, file.py:factory, "
            "a .pt2) with tinyprune.app.load_model, or call tinyprune.app.export_model"
        )
        raise ConfigError(msg)
    if isinstance(model, nn.Module):
        shape = getattr(model, "input_shape", None)
        return LoadedModel(
            name=type(model).__name__.lower(),
            source=f"<{type(model).__name__}>",
            module=model,
            input_shape=tuple(shape) if shape is not None else None,
        )
    msg = f"model must be an nn.Module, a LoadedModel or a MODEL string, got {type(model).__name__}"
    raise ConfigError(msg)


def _calibration(calibration: np.ndarray | str | Path, loaded: LoadedModel) -> np.ndarray:
    if isinstance(calibration, (str, Path)):
        data = calib_io.load_calibration(calibration)
    else:
        data = calib_io.check_calibration(np.asarray(calibration))
    if loaded.keras_path is not None:
        return data  # channels-last, checked against the Keras model when it is loaded
    shape = loaded.input_shape
    if loaded.onnx_path is not None:
        _, shape = load_onnx(loaded.onnx_path)
    calib_io.check_against_model(data, shape, model=loaded.source)
    return data


def _prepare_out_dir(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        msg = f"cannot create the output folder {str(out)!r}: {e.strerror}; choose a writable --out"
        raise ConfigError(msg) from e
    if not out.is_dir() or not os.access(out, os.W_OK | os.X_OK):
        msg = f"the output folder {str(out)!r} is not a writable folder; choose another --out"
        raise ConfigError(msg)
    return out


def _publish(work: Path, out: Path, result: _StageOutput) -> dict[str, Path]:
    """Move the staged artifacts into ``out``, all or nothing; stale C sources of an earlier
    run go too.
    """
    stale = () if "header" in result.files else ("model_data.h", "model_data.cc")
    publishing.publish(work, out, result.files, remove=stale)
    return {key: out / name for key, name in result.files.items()}


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


class StageTimer:
    """Times named stages and reports each start to an optional progress callback."""

    def __init__(self, on_stage: Stage | None) -> None:
        self.on_stage = on_stage
        self.times: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.on_stage is not None:
            self.on_stage(name)
        log.info("stage %s", name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - start


__all__ = ["ExportOptions", "ExportResult", "export", "raise_if_over_budget"]
