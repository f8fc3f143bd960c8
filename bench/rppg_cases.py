"""The rPPG table of ``bench/export_bench.py --rppg`` (issue 11): the field's nets, per target.

Rows: the zoo's 2-D nets (deepphys, tscan, efficientphys at default sizes, 10 frames of
36x36), the field-style test nets of ``tests/firmware_export/rppg_field_nets.py`` (TS-CAN-,
EfficientPhys- and PhysFormer-like, written as the field writes them) and the zoo's 3-D nets at
test size (test_physnet, test_deeprppg: 8 frames of 16x16; their Conv3d rewrite for Cortex-M
is the ``--rewrite-3d`` work of another branch, so these rows show what main gives today).
Every net is trained for seconds on synthetic clips (zoo nets: 3 epochs on 16 clips with the
library loop) so that its output follows the input; 16 synthetic clips of the net's own
preprocessing calibrate and verify.

Per row: the bare chain's conversion time (torch.onnx -> onnxsim -> onnx2tf ->
TFLiteConverter, once: it does not depend on the target) and, per target, tinyprune's
conversion time (its onnx + convert + quantize stages), float ops left in the int8 model,
flash, smallest TFLM arena and the int8-vs-float centred cosine on the target's runtime, or
the exit code and its reason.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

TARGETS = ("rpi4", "cortex-m7")
CONVERSION_STAGES = ("onnx", "convert", "quantize")
N_CALIB = 16


#: Zoo row -> (registry name, input preprocessing, frame-stacked input).
ZOO = {
    "deepphys": ("deepphys", ("DiffNormalized", "Standardized"), True),
    "tscan": ("tscan", ("DiffNormalized", "Standardized"), True),
    "efficientphys": ("efficientphys", ("Standardized",), True),
    "test_physnet (3-D)": ("test_physnet", ("DiffNormalized",), False),
    "test_deeprppg (3-D)": ("test_deeprppg", ("DiffNormalized",), False),
}


def _trained_zoo(name: str, types: tuple[str, ...], stack: bool) -> tuple[Any, np.ndarray]:
    """A zoo net trained for 3 epochs (negative Pearson, the library loop) on 16 clips."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from tinyprune.app.tasks import task_loss
    from tinyprune.data import build_dataset
    from tinyprune.models import create_model, get_model_spec
    from tinyprune.training import TrainConfig, fit

    torch.manual_seed(0)
    model = create_model(name)
    shape = tuple(get_model_spec(name).input_shape)
    frames, size = (shape[1] // shape[2], shape[2]) if stack else (shape[1], shape[2])
    bundle = build_dataset(
        "synthetic-rppg",
        n_train=4,
        n_val=1,
        n_test=1,
        clips_per_video=N_CALIB // 4,
        chunk=frames,
        size=size,
        data_types=types,
        real_ppg=False,
    )
    x = np.asarray(bundle.train.x, dtype=np.float32)
    if stack:
        n, c, t, h, w = x.shape
        x = np.ascontiguousarray(x.reshape(n, c, t * h, w))
    ds = TensorDataset(torch.from_numpy(x), torch.from_numpy(np.asarray(bundle.train.y)))
    loader = DataLoader(ds, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))
    fit(
        model,
        loader,
        TrainConfig(epochs=3, lr=1e-3, batch_size=4, seed=0),
        loss_fn=task_loss("rppg"),
        progress=False,
    )
    return model.eval(), x[:N_CALIB]


def rppg_cases() -> dict[str, Callable[[], tuple[Any, np.ndarray]]]:
    """Row name -> factory of (model, calibration samples)."""

    def zoo(row: str) -> Callable[[], tuple[Any, np.ndarray]]:
        return lambda: _trained_zoo(*ZOO[row])

    def field(name: str) -> Callable[[], tuple[Any, np.ndarray]]:
        def make() -> tuple[Any, np.ndarray]:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests/firmware_export"))
            from rppg_field_nets import trained

            net, clips = trained(name)
            return net, clips[:N_CALIB]

        return make

    rows = {
        f"{n} (field)": field(n) for n in ("tscan_like", "efficientphys_like", "physformer_like")
    }
    rows |= {row: zoo(row) for row in list(ZOO)[3:]}
    rows |= {row: zoo(row) for row in list(ZOO)[:3]}  # the large ones last
    return rows


def _tinyprune(model: Any, calib: np.ndarray, target: str, out: Path) -> dict[str, Any]:
    from firmware_export import ExportOptions, export

    opts = ExportOptions(calib_cap=len(calib), verify_samples=len(calib))
    try:
        res = export(model, calib, target=target, out_dir=out, options=opts, raise_on_budget=False)
    except Exception as e:  # noqa: BLE001 - the table shows the exit code and reason
        first = (str(e).splitlines() or [""])[0]
        return {"error": f"exit {getattr(e, 'exit_code', 1)}: {first[:110]}"}
    rep = res.report
    int8 = rep["verify"].get("int8_vs_float", {})
    return {
        "conv": sum(res.timings.get(s, 0.0) for s in CONVERSION_STAGES),
        "float_ops": len(rep["float_ops"]),
        "flash": rep["flash_bytes"],
        "arena": rep["arena_bytes"] if rep.get("tflm_runnable") else None,
        "ccos": int8.get("centred_cos"),
        "cos": int8.get("cos"),
        "variation": int8.get("variation_lsb"),
        "gated": int8.get("centred_gated"),
    }


def rppg_row(name: str, make: Callable[[], tuple[Any, np.ndarray]], out: Path) -> dict[str, Any]:
    """Bare chain once, then tinyprune for each target."""
    from export_bench import bare_conversion

    model, calib = make()
    slug = name.split()[0]
    row: dict[str, Any] = {}
    try:
        times = bare_conversion(model, calib, out / slug / "bare")
        row["bare"] = sum(times[s] for s in CONVERSION_STAGES)
    except BaseException as e:  # noqa: BLE001 - onnx2tf exits via SystemExit
        first = " ".join(str(e).split())[:70]
        row["bare"] = f"fails: {type(e).__name__}: {first}"
    for target in TARGETS:
        print(f"[bench] rppg: {name} -> {target}", file=sys.stderr, flush=True)
        row[target] = _tinyprune(model, calib, target, out / slug / target)
    return row


def _cell(m: dict[str, Any], bare: Any) -> list[str]:
    if "error" in m:
        return [m["error"], "", "", "", ""]
    ratio = f" ({m['conv'] / bare:.2f}x)" if isinstance(bare, float) else ""
    arena = f"{m['arena']:,}" if m["arena"] is not None else "n/a (TFLM cannot run it)"
    ccos = f"{m['ccos']:.3f}" if m["ccos"] is not None else f"n/a (cos {m['cos']:.4f})"
    if m["ccos"] is not None and not m.get("gated"):  # too little variation to judge (verify.py)
        ccos += f" (not gated: the output varies {m['variation']:.1f} LSB)"
    return [f"{m['conv']:.1f}{ratio}", str(m["float_ops"]), f"{m['flash']:,}", arena, ccos]


RPPG_HEADER = (
    "| model | target | bare conv s | tinyprune conv s (x bare) | float ops | flash B "
    "| TFLM arena B | int8 centred cos |\n|---|---|---|---|---|---|---|---|"
)


def render_row(name: str, row: dict[str, Any]) -> str:
    """Markdown lines of one model (one per target)."""
    bare = row["bare"]
    bare_s = f"{bare:.1f}" if isinstance(bare, float) else str(bare)
    return "\n".join(
        f"| {name} | {target} | {bare_s} | " + " | ".join(_cell(row[target], bare)) + " |"
        for target in TARGETS
    )


def render_rppg(rows: dict[str, dict[str, Any]]) -> str:
    """Markdown: one line per (model, target)."""
    return "\n".join([RPPG_HEADER, *(render_row(n, r) for n, r in rows.items())])
