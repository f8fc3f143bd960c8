"""``tinyprune bench-runtime``: the same model on every runtime at hand, side by side, in one run.

Why: the Pi question is "which runtime, how many threads, and is it real time?". This measures
per-inference latency (median) and throughput of LiteRT int8 with XNNPACK (1, 2, 4 threads) and
with the reference kernels (the builtin ones when the reference resolver lacks an op of the
model), ONNX Runtime fp32 at the same thread counts (``model.onnx`` of the run, when
onnxruntime is installed), PyTorch fp32 (a ``.pt2`` of the run, when torch is installed), the
end-to-end frame rate of the rPPG pipeline (decode, face box, preprocessing, inference, HR) and
the peak RSS.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tinyprune.errors import ConfigError
from tinyprune.runtime.model import TfliteModel, resolve_tflite

PT2_NAMES = ("pruned.pt2", "model.pt2")


Runner = tuple[str, int, Callable[[], object]]  # (runtime, threads, one inference)


def time_calls(
    fn: Callable[[], object], min_s: float = 1.0, min_calls: int = 20
) -> dict[str, float]:
    """Median latency (ms) and throughput (calls/s) of ``fn`` after 3 warm-up calls."""
    return time_interleaved([("", 1, fn)], min_s, min_calls)[0]


def time_interleaved(
    runners: list[Runner], min_s: float = 1.0, min_calls: int = 20
) -> list[dict[str, float]]:
    """Time the runners round-robin (one call each per round) after 3 warm-up calls each.

    On a shared machine the load drifts; interleaving gives every runtime the same share of
    it, so their ratios hold even when the absolute figures move. Each runner gets at least
    ``min_calls`` calls and ``min_s`` seconds in total. Per runner: median wall latency,
    throughput, and the median CPU time of this process per call (``cpu_ms``: what a call
    costs when it has a core to itself; for one thread it does not grow with other load).
    """
    for _, _, fn in runners:
        for _ in range(3):
            fn()
    times: list[list[float]] = [[] for _ in runners]
    cpu: list[list[float]] = [[] for _ in runners]
    while min(len(t) for t in times) < min_calls or min(sum(t) for t in times) < min_s:
        for k, (_, _, fn) in enumerate(runners):
            c, t = time.process_time(), time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c)
    return [
        {
            "latency_ms": 1000 * statistics.median(t),
            "per_s": len(t) / sum(t),
            "cpu_ms": 1000 * statistics.median(c),
            "calls": len(t),
        }
        for t, c in zip(times, cpu, strict=True)
    ]


def _litert_runners(
    path: Path, x: np.ndarray, threads: tuple[int, ...], contract: Any
) -> list[Runner]:
    models = [TfliteModel(path, threads=n, contract=contract) for n in threads]
    try:
        models.append(TfliteModel(path, kernels="reference", contract=contract))
    except ConfigError:  # an op the reference resolver lacks (e.g. DEPTH_TO_SPACE)
        models.append(TfliteModel(path, kernels="builtin", contract=contract))
    runners: list[Runner] = []
    for m in models:
        xq = m.quantize(x.reshape(m.input_shape))
        name = f"LiteRT int8 {m.kernels}"
        runners.append((name, m.threads, lambda m=m, xq=xq: m.invoke_raw(xq)))
    return runners


def _any_contract(path: Path) -> Any:
    """The recorded contract, or the inferred one (speed does not depend on it)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from tinyprune.runtime.contract import load_contract

        return load_contract(path, _input_shape(path))


def _input_shape(path: Path) -> tuple[int, ...]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    return tuple(int(s) for s in interp.get_input_details()[0]["shape"])


def _onnx_runner(folder: Path, threads: int) -> Runner | None:
    onnx = folder / "model.onnx"
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    if not onnx.is_file():
        return None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    # idle worker threads must not spin: the runners take turns, and a spinning pool would
    # take the cores (and the process CPU time) from the runner that is being timed
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(onnx), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return ("ONNX Runtime fp32", threads, lambda: sess.run(None, {inp.name: x}))


def _torch_runner(folder: Path, threads: int) -> Runner | None:
    """PyTorch fp32 on the run's program (in the export folder or the run folder above it)."""
    places = [d / n for d in (folder, folder.parent) for n in PT2_NAMES]
    pt2 = next((p for p in places if p.is_file()), None)
    if pt2 is None:
        return None
    try:
        import torch
    except ImportError:
        return None
    from tinyprune.app.sources import load_model

    module = load_model(str(pt2)).module
    if not hasattr(module, "input_shape"):
        return None
    torch.set_num_threads(threads)
    x = torch.randn(1, *module.input_shape)

    def run() -> object:
        with torch.no_grad():
            return module(x)

    return ("PyTorch fp32", threads, run)


def _end_to_end(path: Path, video: str | None, threads: int) -> dict[str, Any] | None:
    from tinyprune.runtime.pipeline import RppgPipeline

    model = TfliteModel(path, threads=threads)
    if model.contract.task != "rppg" or video is None:
        return None
    result = RppgPipeline(model).process_video(video)
    return {
        "runtime": "end to end (decode, face, preprocess, LiteRT, HR)",
        "threads": threads,
        "frames_per_s": result["frames_per_s"],
        "frames_per_cpu_s": result["frames"] / result["cpu_s"] if result["cpu_s"] else None,
        "frames": result["frames"],
        "profile_ms_per_frame": result["profile_ms_per_frame"],
    }


def bench_runtime(
    model: str | Path,
    *,
    video: str | None = None,
    threads: tuple[int, ...] = (1, 2, 4),
    min_s: float = 1.0,
) -> dict[str, Any]:
    """Benchmark ``model`` (run folder or ``.tflite``); returns rows and the peak RSS.

    Args:
        model: Run/export folder (for ``model.onnx`` and ``.pt2`` beside the ``.tflite``) or a
            ``.tflite``.
        video: Video for the end-to-end figure (skipped without one).
        threads: Thread counts of LiteRT XNNPACK and ONNX Runtime (intra-op threads).
        min_s: Seconds each runtime is timed for (at least 20 calls), round-robin.
    """
    path = resolve_tflite(model)
    folder = path.parent
    probe = TfliteModel(path, contract=_any_contract(path))
    x = np.random.default_rng(0).standard_normal(probe.input_shape).astype(np.float32)
    runners = _litert_runners(path, x, threads, probe.contract)
    runners += [
        r for r in [*(_onnx_runner(folder, n) for n in threads), _torch_runner(folder, 1)] if r
    ]
    timed = time_interleaved(runners, min_s)
    rows = [{"runtime": r, "threads": n, **t} for (r, n, _), t in zip(runners, timed, strict=True)]
    e2e = _end_to_end(path, video, 1)
    return {
        "model": str(path),
        "input_shape": list(probe.input_shape),
        "rows": rows,
        "ratios": _ratios(rows),
        "end_to_end": e2e,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "cpus": os.cpu_count(),
    }


def _ratio_rows(rows: list[dict[str, Any]]) -> list[tuple[str, int, float]]:
    """``(runtime, threads, LiteRT int8 XNNPACK's throughput over it)`` at equal threads."""
    per = {(r["runtime"], r["threads"]): r["per_s"] for r in rows}
    out = []
    for (runtime, n), v in per.items():
        base = per.get(("LiteRT int8 xnnpack", n))
        if base and v and runtime != "LiteRT int8 xnnpack":
            out.append((runtime, n, base / v))
    return out


def _ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    """:func:`_ratio_rows` keyed ``xnnpack_over_<runtime>`` (1 thread) or ``..._<n>_threads``."""
    return {
        f"xnnpack_over_{rt}" + ("" if n == 1 else f"_{n}_threads"): v
        for rt, n, v in _ratio_rows(rows)
    }


def format_table(result: dict[str, Any]) -> str:
    """The benchmark as a Markdown table."""
    lines = [
        f"model {result['model']}  input {tuple(result['input_shape'])}",
        "",
        "| runtime | threads | latency (ms, median) | inferences/s | CPU ms per inference |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['runtime']} | {r['threads']} | {r['latency_ms']:.3f} | {r['per_s']:.0f} "
            f"| {r['cpu_ms']:.3f} |"
        )
    for runtime, n, v in _ratio_rows(result["rows"]):
        lines.append(f"\nxnnpack over {runtime}: {v:.2f}x ({n} thread{'s' * (n > 1)}, same run)")
    e2e = result["end_to_end"]
    if e2e:
        lines.append(
            f"\nend to end, 1 thread: {e2e['frames_per_s']:.0f} frames/s "
            f"({e2e['frames_per_cpu_s']:.0f} frames per CPU second) "
            f"over {e2e['frames']} frames; wall ms per frame: "
            + ", ".join(f"{k} {v:.2f}" for k, v in e2e["profile_ms_per_frame"].items())
        )
    else:
        lines.append("\nend to end: skipped (give --video FILE with an rPPG model)")
    lines.append(f"peak RSS: {result['peak_rss_mb']:.0f} MB")
    load = result.get("load_average")
    if load:
        lines.append(
            f"load average {load[0]:.1f} on {result.get('cpus')} CPUs while measuring (other "
            "processes share them: compare the ratios, measured round-robin in this run)"
        )
    return "\n".join(lines)
