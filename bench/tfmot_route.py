"""The TF-MOT route, measured: what embedded engineers get today from TF Model Optimization.

The Keras twin of the zoo's ``micro_cnn`` (same layers and widths, channels-last) is trained on
the same digits split, pruned with ``prune_low_magnitude`` to the sparsity that leaves a given
number of non-zero parameters, stripped, fine-tuned with prune-preserving QAT (PQAT,
``Default8BitPrunePreserveQuantizeScheme``), saved as a SavedModel and exported through
tinyprune's own pipeline (:func:`firmware_export.export`) to a board profile. The row holds
flash, arena, latency estimate and the int8 model's test accuracy (LiteRT reference kernels,
bit-exact with TFLM). Unstructured zeros do not shrink a TFLM model: flash, arena and the
latency estimate stay those of the dense twin.

Usage (one row)::

    python bench/tfmot_route.py --task digits --target cortex-m4 --nonzero 3000 --seed 0

Library use: ``tfmot_route(task, target, nonzero_params, seed) -> dict`` (bench/fit_bench.py).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
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


def _compile(model: Any) -> None:
    import tf_keras as keras

    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def _train_pqat(task: str, sparsity: float, data: tuple[np.ndarray, ...], seed: int) -> Any:
    """Dense training -> prune_low_magnitude to ``sparsity`` -> strip -> PQAT; the PQAT model."""
    import tf_keras as keras

    from firmware_export.tfmot_compat import import_tfmot

    tfmot = import_tfmot()
    x, y = data[0], data[1]
    dense_ep, prune_ep, qat_ep = EPOCHS[task]
    keras.utils.set_random_seed(seed)
    model = micro_cnn_twin()
    _compile(model)
    model.fit(x, y, epochs=dense_ep, batch_size=BATCH, verbose=0)
    steps = prune_ep * int(np.ceil(len(x) / BATCH))
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, sparsity, 0, int(0.7 * steps), frequency=8)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    _compile(pruned)
    cb = [tfmot.sparsity.keras.UpdatePruningStep()]
    pruned.fit(x, y, epochs=prune_ep, batch_size=BATCH, verbose=0, callbacks=cb)
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    annotated = tfmot.quantization.keras.quantize_annotate_model(stripped)
    scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    pqat = tfmot.quantization.keras.quantize_apply(annotated, scheme)
    _compile(pqat)
    pqat.fit(x, y, epochs=qat_ep, batch_size=BATCH, verbose=0)
    return pqat


def int8_accuracy(model_bytes: bytes, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the int8 TFLite model (LiteRT reference kernels = TFLM's arithmetic)."""
    from firmware_export.tflite_model import parse_tflite
    from firmware_export.verify import quantize_input, run_litert

    parsed = parse_tflite(model_bytes)
    inp = parsed.tensors[parsed.inputs[0]]
    q = run_litert(model_bytes, quantize_input(x, inp.scale[0], inp.zero_point[0]), "ref")
    return float(np.mean(q.reshape(len(x), -1).argmax(axis=1) == y))


def tfmot_route(task: str, target: str, nonzero_params: int, seed: int) -> dict[str, Any]:
    """Train, prune (TF-MOT) to ``nonzero_params``, PQAT, export to ``target``; the bench row.

    Args:
        task: ``"digits"`` (micro_cnn twin, width 16, as bench/criteria_bench.py).
        target: A device profile name or TOML path.
        nonzero_params: Non-zero exported parameters to aim for (tinyprune's candidate's).
        seed: Seeds the data split, initialisation and training.

    Returns:
        ``{route, task, target, seed, sparsity, params, nonzero_params, flash_bytes,
        model_bytes, arena_bytes, latency_ms, metric, metric_name, fits, seconds}``.
    """
    from firmware_export import ExportOptions, export

    if task not in TASKS:
        msg = f"tfmot_route supports tasks {TASKS}, got {task!r}"
        raise ValueError(msg)
    start = time.perf_counter()
    x_tr, y_tr, x_te, y_te = _digits(seed)
    sparsity = sparsity_for(micro_cnn_twin(), nonzero_params)
    pqat = _train_pqat(task, sparsity, (x_tr, y_tr), seed)
    with tempfile.TemporaryDirectory(prefix="tfmot_route_") as tmp:
        import tensorflow as tf

        tf.saved_model.save(pqat, f"{tmp}/pqat_sm")
        opts = ExportOptions(calib_cap=256, verify_samples=16, name="tfmot_micro_cnn")
        res = export(
            Path(tmp) / "pqat_sm",
            x_tr[:256],
            target=target,
            out_dir=Path(tmp) / "run",
            options=opts,
            raise_on_budget=False,
        )
        model_bytes = (res.out_dir / "model_int8.tflite").read_bytes()
    rep, budget = res.report, res.report["budget"]
    return {
        "route": "tfmot (prune_low_magnitude + PQAT)",
        "task": task,
        "target": target,
        "seed": seed,
        "sparsity": round(sparsity, 4),
        "params": rep["params"],
        "nonzero_params": rep["nonzero_params"],
        "flash_bytes": budget["flash"]["used"],
        "model_bytes": len(model_bytes),
        "arena_bytes": rep["arena"]["header_bytes"],
        "latency_ms": (rep.get("latency_estimate") or {}).get("ms"),
        "metric": int8_accuracy(model_bytes, x_te, y_te),
        "metric_name": "int8 test accuracy",
        "fits": res.fits,
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
