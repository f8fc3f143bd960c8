"""Issue 13: corrupted .tflite, .onnx, .npy, .pt2, AVI and PURE JSON files give a ConfigError
(exit 2) with a message: never another exception (exit 1), never a signal, never a file
written outside the output folder. Seeded; 500 mutants per format by default, 10,000 with
``-m slow``."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

from firmware_export.isolate import run_isolated
from tests.security import fuzz_readers
from tests.security.hostile import save_small_pt2

DEFAULT_N = 500
SLOW_N = 10_000
NATIVE = {"onnx", "pt2_load"}  # readers with native parsers: run in a child process


def _seed_tflite(d: Path) -> tuple[bytes, str]:
    import tflite_micro

    src = Path(tflite_micro.__file__).parent / "python" / "tflite_micro" / "sine_float.tflite"
    if not src.is_file():
        pytest.skip("tflite-micro's sine_float.tflite is not installed")
    return src.read_bytes(), ".tflite"


def _seed_onnx(d: Path) -> tuple[bytes, str]:
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], name="/conv/Conv"),
            helper.make_node("Relu", ["c"], ["y"], name="/relu/Relu"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString(), ".onnx"


def _seed_npy(d: Path) -> tuple[bytes, str]:
    np.save(d / "seed.npy", np.random.default_rng(0).random((3, 1, 4, 4), dtype=np.float32))
    return (d / "seed.npy").read_bytes(), ".npy"


def _seed_pt2(d: Path) -> tuple[bytes, str]:
    return save_small_pt2(d / "seed.pt2").read_bytes(), ".pt2"


def _seed_avi(d: Path) -> tuple[bytes, str]:
    from tinyprune.data.avi import write_avi

    frames = np.random.default_rng(0).integers(0, 255, (2, 4, 4, 3), dtype=np.uint8)
    return write_avi(d / "seed.avi", frames, fps=30).read_bytes(), ".avi"


def _seed_pure(d: Path) -> tuple[bytes, str]:
    from tinyprune.data.pure import write_sequence

    frames = np.zeros((3, 2, 2, 3), np.uint8)
    seq = write_sequence(d / "pure_seed", 1, 1, frames, 30.0, np.zeros(6), np.full(6, 60.0))
    return (seq / "01-01.json").read_bytes(), ".json"


SEEDS = {
    "tflite": _seed_tflite,
    "onnx": _seed_onnx,
    "npy": _seed_npy,
    "pt2": _seed_pt2,
    "avi": _seed_avi,
    "pure": _seed_pure,
}


def _write_mutants(fmt: str, root: Path, n: int, seed: int) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    seed_bytes, suffix = SEEDS[fmt](root)
    rng = random.Random(f"{fmt}-{seed}")
    paths = []
    for i in range(n):
        data = fuzz_readers.mutate(seed_bytes, rng)
        if fmt == "pure":  # a sequence folder per mutant: ss-tt/ss-tt.json + frames/
            seq = root / "pure" / f"m{i}" / "01-01"
            (seq / "01-01").mkdir(parents=True)
            for png in (root / "pure_seed" / "01-01" / "01-01").iterdir():
                os.link(png, seq / "01-01" / png.name)
            path = seq / "01-01.json"
        else:
            path = root / f"m{i}{suffix}"
        path.write_bytes(data)
        paths.append(str(path))
    return paths


def _snapshot(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*")}


def _fuzz(fmt: str, tmp_path: Path, n: int) -> dict[str, int]:
    paths = _write_mutants(fmt, tmp_path, n, seed=0)
    before = _snapshot(tmp_path)
    if fmt in NATIVE:
        results = run_isolated(fuzz_readers.run_batch, fmt, paths, timeout=1800, stage="fuzz")
    else:
        results = fuzz_readers.run_batch(fmt, paths)
    if fmt == "pt2":  # mutants that pass the static check go on to torch's loader
        passed = [p for p, outcome, _ in results if outcome == "ok"]
        if passed:
            results += run_isolated(fuzz_readers.run_batch, "pt2_load", passed, timeout=1800)
    bad = [(p, text) for p, outcome, text in results if outcome == "other"]
    assert not bad, (
        f"{len(bad)} of {n} mutants raised something other than ConfigError; "
        f"first ({bad[0][0]}):\n{bad[0][1]}"
    )
    assert _snapshot(tmp_path) == before, "a reader wrote files"
    counts: dict[str, int] = {}
    for _, outcome, _ in results:
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


@pytest.mark.parametrize("fmt", sorted(SEEDS))
def test_corrupted_files_give_config_errors(fmt: str, tmp_path: Path) -> None:
    counts = _fuzz(fmt, tmp_path, DEFAULT_N)
    assert counts.get("config", 0) > 0, counts  # the mutations really do break files


@pytest.mark.slow
@pytest.mark.parametrize("fmt", sorted(SEEDS))
def test_corrupted_files_give_config_errors_10k(fmt: str, tmp_path: Path) -> None:
    _fuzz(fmt, tmp_path, SLOW_N)


def test_cli_sample_of_corrupted_inputs_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sample through the CLI: export of refused .pt2 / calibration .npy mutants exits 2
    with a message and writes nothing (mutants that still parse are covered in-process)."""
    from tinyprune.cli import main

    def refused(fmt: str, n: int) -> list[str]:
        paths = _write_mutants(fmt, tmp_path / fmt, 40, seed=1)
        results = fuzz_readers.run_batch("pt2" if fmt == "pt2" else fmt, paths)
        return [p for p, outcome, _ in results if outcome == "config"][:n]

    good = tmp_path / "good.npy"
    np.save(good, np.zeros((4, 3, 8, 8), np.float32))
    cases = [(p, str(good)) for p in refused("pt2", 4)]
    cases += [("zoo:test_ds_cnn", n) for n in refused("npy", 4)]
    assert len(cases) == 8
    before = _snapshot(tmp_path)
    for model, calib in cases:
        out = tmp_path / "out"
        code = main(["export", model, "--calib", calib, "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2, (model, calib, err[-2000:])
        assert "tinyprune: error:" in err
        assert not out.exists()
    assert _snapshot(tmp_path) == before
