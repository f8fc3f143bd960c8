"""The TF-MOT route, measured: what embedded engineers get today from TF Model Optimization.

A Keras twin of a tinyprune zoo network (same layers and widths, channels-last: ``micro_cnn``
here, ``physnet_2p1d`` in bench/tfmot_twins.py) is trained on the same data, pruned with
``prune_low_magnitude`` to the sparsity that leaves a given number of non-zero parameters,
stripped, fine-tuned with prune-preserving QAT (PQAT, ``Default8BitPrunePreserveQuantizeScheme``),
saved as a SavedModel and exported through tinyprune's own pipeline
(:func:`firmware_export.export`) to a board profile. The row holds flash, arena, latency
estimate and the int8 model's test metric (LiteRT builtin kernels). Unstructured zeros do not
shrink a TFLM model: flash, arena and the latency estimate stay those of the dense twin.

Usage (one digits row)::

    python bench/tfmot_route.py --task digits --target cortex-m4 --nonzero 3000 --seed 0

Library use: ``tfmot_route(task, target, nonzero_params, seed) -> dict``; bench/fit_bench.py
uses the parts (``train_pqat``, ``for_export``, ``export_twin``) for both twins.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TASKS = ("digits",)
#: Epochs: dense training, pruning (polynomial ramp to the target sparsity), PQAT fine-tuning.
EPOCHS = {"digits": (30, 10, 3)}
BATCH = 32


def micro_cnn_twin(width: int = 16, num_classes: int = 10, input_size: int = 8) -> Any:
    """``tinyprune.models.vision.micro_cnn`` in tf_keras, channels-last.

    Three 3x3 conv-BN-ReLU layers (stride 1, 2, 2; widths w, 2w, 4w; bias-free convs),
    global average pool, linear. Same parameter count as the PyTorch net (TF's "same" padding
    pads stride-2 convs bottom/right, PyTorch's ``padding=1`` both sides: same MACs).
    """
    import tf_keras as keras

    layers = keras.layers
    model = keras.Sequential([layers.Input((input_size, input_size, 1))], name="micro_cnn_twin")
    for channels, stride in ((width, 1), (2 * width, 2), (4 * width, 2)):
        model.add(layers.Conv2D(channels, 3, stride, padding="same", use_bias=False))
        model.add(layers.BatchNormalization())
        model.add(layers.ReLU())
    model.add(layers.GlobalAveragePooling2D())
    model.add(layers.Dense(num_classes))
    return model


@dataclass(frozen=True)
class TwinSpec:
    """A Keras twin: its factory (batch -> model), loss, epochs and TF-MOT route."""

    build: Callable[[int | None], Any]
    loss: Any
    metrics: tuple[str, ...]
    epochs: tuple[int, int, int]  # dense training, pruning ramp, PQAT fine-tuning
    per_layer: bool  # TF-MOT's per-layer route (a layer it does not know is in the net)
    lr: float = 3e-3

    def compile(self, model: Any) -> None:
        """Adam at ``lr`` with the twin's loss."""
        import tf_keras as keras

        model.compile(keras.optimizers.Adam(self.lr), self.loss, metrics=list(self.metrics))


def digits_twin(width: int = 16, epochs: tuple[int, int, int] = EPOCHS["digits"]) -> TwinSpec:
    """The micro_cnn twin for digits (whole-model TF-MOT calls)."""
    import tf_keras as keras

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return TwinSpec(lambda _b: micro_cnn_twin(width), loss, ("accuracy",), epochs, False)


def rppg_twin(
    frames: int, img_size: int, width: int, epochs: tuple[int, int, int], lr: float = 3e-3
) -> TwinSpec:
    """The physnet_2p1d twin (per-layer TF-MOT route; negative-Pearson loss)."""
    from tfmot_twins import neg_pearson, physnet_2p1d_twin

    def build(batch: int | None) -> Any:
        return physnet_2p1d_twin(frames, img_size, width, batch=batch)

    return TwinSpec(build, neg_pearson, (), epochs, True, lr)


def _digits(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """tinyprune's digits split (same seed, same samples), channels-last."""
    from tinyprune.data.digits import load_digits

    (x_tr, y_tr), (x_te, y_te) = load_digits(size=8, seed=seed)
    return x_tr.transpose(0, 2, 3, 1), y_tr, x_te.transpose(0, 2, 3, 1), y_te


def exported_counts(model: Any) -> tuple[int, int]:
    """``(prunable kernel weights, other exported params)`` once BN folds into conv biases."""
    kernels = [w for w in model.weights if "kernel" in w.name]
    biases = sum(int(w.shape[-1]) for w in kernels)  # conv: folded BN bias; dense: its bias
    return sum(int(np.prod(w.shape)) for w in kernels), biases


def sparsity_for(model: Any, nonzero_params: int) -> float:
    """Kernel sparsity that leaves ``nonzero_params`` non-zero exported params (biases kept)."""
    kernels, other = exported_counts(model)
    return float(np.clip(1.0 - (nonzero_params - other) / kernels, 0.0, 0.98))


def _fit_kw(x: np.ndarray, epochs: int, callbacks: list[Any] | None = None) -> dict[str, Any]:
    return {
        "epochs": epochs,
        "batch_size": min(BATCH, len(x)),
        "verbose": 0,
        "callbacks": callbacks or [],
    }


def train_pqat(twin: TwinSpec, sparsity: float, x: np.ndarray, y: np.ndarray, seed: int) -> Any:
    """Dense training -> prune_low_magnitude to ``sparsity`` -> strip -> PQAT; the PQAT model.

    The digits twin (all of its layers known to TF-MOT) goes through the whole-model calls;
    the rPPG twin through TF-MOT's per-layer route (bench/tfmot_twins.py says why).
    """
    import tf_keras as keras

    from firmware_export.tfmot_compat import import_tfmot

    tfmot = import_tfmot()
    sp = tfmot.sparsity.keras
    dense_ep, prune_ep, qat_ep = twin.epochs
    keras.utils.set_random_seed(seed)
    model = twin.build(None)
    twin.compile(model)
    model.fit(x, y, **_fit_kw(x, dense_ep))
    steps = prune_ep * int(np.ceil(len(x) / min(BATCH, len(x))))
    schedule = sp.PolynomialDecay(0.0, sparsity, 0, max(1, int(0.7 * steps)), frequency=8)
    if twin.per_layer:
        from tfmot_twins import prune_supported

        pruned = prune_supported(model, tfmot, schedule)
    else:
        pruned = sp.prune_low_magnitude(model, pruning_schedule=schedule)
    twin.compile(pruned)
    pruned.fit(x, y, **_fit_kw(x, prune_ep, [sp.UpdatePruningStep()]))
    stripped = sp.strip_pruning(pruned)
    pqat = _quantize(twin, stripped, tfmot)
    twin.compile(pqat)
    pqat.fit(x, y, **_fit_kw(x, qat_ep))
    return pqat


def _quantize(twin: TwinSpec, model: Any, tfmot: Any) -> Any:
    if twin.per_layer:
        from tfmot_twins import quantize_supported

        return quantize_supported(model, tfmot)
    annotated = tfmot.quantization.keras.quantize_annotate_model(model)
    scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    return tfmot.quantization.keras.quantize_apply(annotated, scheme)


def for_export(twin: TwinSpec, pqat: Any) -> Any:
    """The model to export: ``pqat``, or its batch-1 copy when frames sit in the batch axis."""
    if not twin.per_layer:
        return pqat
    from firmware_export.tfmot_compat import import_tfmot

    one = _quantize(twin, twin.build(1), import_tfmot())
    one.set_weights(pqat.get_weights())
    return one


def int8_outputs(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """Dequantized output 0 of the int8 TFLite model on NHWC samples (LiteRT builtin kernels)."""
    from firmware_export.tflite_model import parse_tflite
    from firmware_export.verify import dequantize, quantize_input, run_litert

    parsed = parse_tflite(model_bytes)
    inp, out = parsed.tensors[parsed.inputs[0]], parsed.tensors[parsed.outputs[0]]
    q = run_litert(model_bytes, quantize_input(x, inp.scale[0], inp.zero_point[0]), "builtin")
    return dequantize(q.reshape(len(x), -1), out.scale[0], out.zero_point[0])


def int8_accuracy(model_bytes: bytes, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the int8 TFLite model."""
    return float(np.mean(int8_outputs(model_bytes, x).argmax(axis=1) == y))


def export_twin(model: Any, calib: np.ndarray, target: str, name: str) -> tuple[dict, bytes]:
    """Export a Keras model through tinyprune's pipeline; (row figures, int8 model bytes)."""
    import tensorflow as tf

    from firmware_export import ExportOptions, export

    with tempfile.TemporaryDirectory(prefix="tfmot_route_") as tmp:
        tf.saved_model.save(model, f"{tmp}/pqat_sm")
        # the int8 metric is measured on the test split below; the cosine gate is recorded,
        # not enforced, so a TF-MOT model whose int8 drifts from its float twin still gets a row
        opts = ExportOptions(calib_cap=len(calib), verify_samples=16, name=name, min_cosine=0.0)
        res = export(
            Path(tmp) / "pqat_sm",
            calib,
            target=target,
            out_dir=Path(tmp) / "run",
            options=opts,
            raise_on_budget=False,
        )
        model_bytes = (res.out_dir / "model_int8.tflite").read_bytes()
    rep, budget = res.report, res.report["budget"]
    row = {
        "params": rep["params"],
        "nonzero_params": rep["nonzero_params"],
        "flash_bytes": rep["flash_bytes"],
        "flash_used_bytes": budget["flash"]["used"],
        "arena_bytes": rep["arena_bytes"],
        "arena_header_bytes": rep["arena"]["header_bytes"],
        "latency_ms": (rep.get("latency_estimate") or {}).get("ms"),
        "fits": res.fits,
        "budget": {k: v["ok"] for k, v in budget.items()},
        "int8_vs_float_cos": rep["verify"]["int8_vs_float"].get("cos"),
    }
    return row, model_bytes


def tfmot_route(task: str, target: str, nonzero_params: int, seed: int) -> dict[str, Any]:
    """Train, prune (TF-MOT) to ``nonzero_params``, PQAT, export to ``target``; the bench row.

    Args:
        task: ``"digits"`` (micro_cnn twin, width 16, as bench/criteria_bench.py).
        target: A device profile name or TOML path.
        nonzero_params: Non-zero exported parameters to aim for (tinyprune's candidate's).
        seed: Seeds the data split, initialisation and training.

    Returns:
        ``{route, task, target, seed, sparsity, params, nonzero_params, flash_bytes,
        arena_bytes, latency_ms, metric, metric_name, fits, seconds, ...}``.
    """
    if task != "digits":
        msg = f"the command line runs the digits twin; got {task!r} (rPPG: bench/fit_bench.py)"
        raise ValueError(msg)
    start = time.perf_counter()
    x_tr, y_tr, x_te, y_te = _digits(seed)
    twin = digits_twin()
    sparsity = sparsity_for(twin.build(None), nonzero_params)
    pqat = train_pqat(twin, sparsity, x_tr, y_tr, seed)
    row, model_bytes = export_twin(pqat, x_tr[:256], target, "tfmot_micro_cnn")
    return {
        "route": "tfmot (prune_low_magnitude + PQAT)",
        "task": task,
        "target": target,
        "seed": seed,
        "sparsity": round(sparsity, 4),
        **row,
        "metric": int8_accuracy(model_bytes, x_te, y_te),
        "metric_name": "int8 test accuracy",
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Print one TF-MOT row as JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="digits", choices=TASKS)
    p.add_argument("--target", default="cortex-m4")
    p.add_argument("--nonzero", type=int, nargs="+", default=[3000], help="non-zero params")
    p.add_argument("--seed", type=int, nargs="+", default=[0])
    args = p.parse_args(argv)
    for nz in args.nonzero:
        for seed in args.seed:
            print(json.dumps(tfmot_route(args.task, args.target, nz, seed)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
