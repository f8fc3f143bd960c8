"""Prune x export matrix (issue 17): every zoo ``test_*`` net and micro_cnn x every criterion.

Two kinds of cell:

* **engine cells** (every net x every structured criterion, all in the default run, ~10 s of
  CPU in all): the pruning engine prunes the seeded net to 50 % of MACs with ``round_to 1``;
  MACs kept within one channel step of the target (``tailored``: within 2 % or one step), and
  the pruned net equals the original with the removed channels zeroed (§1.4). ``bn_scale``
  on a net with a group without BatchNorm must refuse (exit 2) naming the group.
* **CLI cells** (every net x every criterion): the Python entry of ``tinyprune prune``
  (:func:`prune_run`) for 1 epoch, ``round_to 1``, structured criteria at 50 % of MACs and
  unstructured ones at density 0.2, then the export of ``pruned.pt2`` to its runtime (TFLM nets
  to cortex-m7, TFLM == LiteRT reference kernels) with verification passing. A cell costs
  ~7-12 s of CPU, mostly the export (onnx2tf, the int8 converter, the TFLM arena search,
  four runtimes), so the default run holds a covering set: every criterion once and the
  rPPG nets and micro_cnn at least once (:data:`DEFAULT`, ~3 min); the other cells run
  under ``-m slow`` (~11 min of CPU more).

Nets without a data set the CLI can build (3-channel 16x16 classifiers: cifar10 is 32x32
and needs a path) run their CLI cells as engine prune + export with seeded images. Pruned
3-D nets (``.pt2`` programs with 3-D pooling) export to rpi4 only with the rewrites of
branch ``rewrite3d`` (issue 17 item 4): those exports are expected failures until it lands.
``pcc_ci`` runs at the engine's floor (``min_channels=1``): its own floor, ``max(8, 5 % of C)``
channels per layer, is the whole width of most of these tiny layers.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import tinyprune.criteria as C
from tinyprune.app.prune import prune_run
from tinyprune.config import DataSpec, DESearchConfig, FinetuneConfig, PruneConfig
from tinyprune.criteria.tailored import TailoredHook
from tinyprune.errors import ConfigError
from tinyprune.models import create_model, get_model_spec, list_models
from tinyprune.pruning import Budget, prune_structured
from tinyprune.pruning.channel_graph import ChannelGraph
from tinyprune.pruning.equivalence import zeroed_forward
from tinyprune.pruning.masks import find_prunable
from tinyprune.training.hooks import TrainContext

NETS = [*list_models("test_*"), "micro_cnn"]
STRUCTURED = ["tailored", "cluster_de", "pcc_ci", "l1", "random", "bn_scale"]
UNSTRUCTURED = ["wgj", "gmp", "set", "rigl"]
OPTIONS = {"pcc_ci": {"min_channels": 1}, "cluster_de": {"n_clusters": 2}}
# every criterion once; the rPPG nets and micro_cnn at least once
DEFAULT = {
    ("test_tscan", "l1"),
    ("test_tscan", "set"),
    ("test_efficientphys", "tailored"),
    ("test_efficientphys", "rigl"),
    ("test_deepphys", "random"),
    ("test_physnet_2p1d", "cluster_de"),
    ("micro_cnn", "pcc_ci"),
    ("test_physnet_2p1d", "bn_scale"),
    ("micro_cnn", "gmp"),
    ("micro_cnn", "wgj"),
}
RPPG_2D = {"size": 12, "chunk": 4, "data_types": ("DiffNormalized", "Standardized")}
SMALL_RPPG = {"n_train": 2, "n_val": 1, "n_test": 1, "clips_per_video": 1, "real_ppg": False}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One torch thread: these nets are tiny, and a shared machine's cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _data(net: str) -> tuple[str, dict[str, Any]] | None:
    """The data spec and options that feed ``net``'s input shape, or None."""
    shape = get_model_spec(net).input_shape
    if get_model_spec(net).task == "rppg":
        if len(shape) == 4:  # 3-D nets: (3, T, H, W)
            return "synthetic-rppg", SMALL_RPPG | {"size": shape[2], "chunk": shape[1]}
        if shape[0] == 6:
            return "synthetic-rppg", SMALL_RPPG | RPPG_2D
        return "synthetic-rppg", SMALL_RPPG | {"size": shape[2], "chunk": shape[1] // shape[2]}
    return ("digits", {}) if shape[0] == 1 else None


def _params(crits: list[str], default: set[tuple[str, str]] | None) -> list[Any]:
    """(net, criterion) pairs; those not in ``default`` are marked slow (None: none are)."""
    out = []
    for net in NETS:
        for crit in crits:
            slow = default is not None and (net, crit) not in default
            marks = [pytest.mark.slow] if slow else []
            out.append(pytest.param(net, crit, marks=marks, id=f"{net}-{crit}"))
    return out


def _seeded(net: str) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = create_model(net).eval()
    return model, torch.randn(2, *model.input_shape, generator=torch.Generator().manual_seed(1))


def _bn_scale_refuses(net: str) -> bool:
    """True when some channel group of ``net`` has no BatchNorm after any of its layers."""
    model, x = _seeded(net)
    graph = ChannelGraph(model, x)
    return any(all(graph.bn_after(s.name) is None for s in g.members) for g in graph.groups)


def _step(net: str) -> float:
    """The largest MACs fraction one channel of one group carries (the selection's grain)."""
    model, x = _seeded(net)
    cost = ChannelGraph(model, x).cost_model()
    full = cost.group_sizes.copy()
    dense = cost.dense[0]
    steps = []
    for g in range(len(full)):
        k = full.copy()
        k[g] -= 1
        steps.append((dense - cost.cost(k)[0]) / dense)
    return float(max(steps))


def _check_kept(net: str, crit: str, kept: float) -> None:
    """MACs kept: within one channel step below 50 % (``tailored``: within 2 % or a step)."""
    step = _step(net)
    if crit == "tailored":
        tol = max(0.02, step)
        assert 0.5 - tol <= kept <= 0.5 + tol, (kept, step)
    else:
        assert 0.5 - step <= kept <= 0.5, (kept, step)


def _engine_prune(net: str, crit: str) -> tuple[torch.nn.Module, torch.Tensor, float]:
    """Prune the seeded net to 50 % of MACs with the engine; check §1.4 equivalence.

    Returns the pruned net, its example batch and the MACs fraction kept.
    """
    model, x = _seeded(net)
    original = copy.deepcopy(model)
    if crit == "tailored":
        hook = TailoredHook(x, Budget(target_flops=0.5), C.get("tailored"), round_to=1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        hook.on_train_begin(TrainContext(model=model, optimizer=opt, lr=0.1, total_steps=1))
        _zero_pset_gates(hook)
        with torch.no_grad():
            ref = model(x)
        result = hook.freeze_(model)
        with torch.no_grad():
            got = model(x)
    else:
        data = [
            torch.randn(4, *x.shape[1:], generator=torch.Generator().manual_seed(i)) for i in (2, 3)
        ]
        criterion = C.get(crit, **OPTIONS.get(crit, {}))
        budget = Budget(target_flops=0.5)
        result = prune_structured(model, x, criterion, budget, data=data, round_to=1)
        with torch.no_grad():
            got = model(x)
        ref = zeroed_forward(original, x, result.keep, x)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4 * max(ref.abs().max().item(), 1e-6))
    return model, x, result.macs_after / result.macs_before


def _zero_pset_gates(hook: TailoredHook) -> None:
    """Zero the prune set's gates (where the proximal steps drive them) and, for BN gates, their
    shifts too, so that the removed channels output exact zeros (§5.6 beta folding aside)."""
    with torch.no_grad():
        for gates, pset in zip(hook._gates, hook.pset, strict=True):
            for gate, slot in gates:
                bn = hook.graph.bn_after(slot.name)
                gone = set(pset.tolist())
                for unit, root in zip(slot.idxs, slot.root, strict=True):
                    if root in gone:
                        gate[unit] = 0.0
                        if bn is not None and bn.bias is not None:
                            bn.bias[unit] = 0.0


@pytest.mark.parametrize(("net", "crit"), _params(STRUCTURED, None))
def test_engine_cell(net: str, crit: str) -> None:
    """Every net x structured criterion: budget met to one channel, pruned == zeroed original."""
    if crit == "bn_scale" and _bn_scale_refuses(net):
        model, x = _seeded(net)
        with pytest.raises(ConfigError, match="applies to no layer") as err:
            prune_structured(model, x, C.get("bn_scale"), Budget(target_flops=0.5), round_to=1)
        assert err.value.exit_code == 2
        return
    _, _, kept = _engine_prune(net, crit)
    _check_kept(net, crit, kept)


def _export(module: torch.nn.Module, calib: np.ndarray, net: str, out: Path) -> None:
    """Export to cortex-m7 fully int8 (3-D nets through the 3-D -> 2-D rewrite), TFLM bit-exact
    against LiteRT's reference kernels (within 1 LSB where a kernel difference is known)."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("tflite_micro")
    from firmware_export import ExportOptions, export

    result = export(
        module, calib[:16].astype(np.float32), target="cortex-m7", out_dir=out,
        options=ExportOptions(calib_cap=16, verify_samples=4, memory_plan="online"),
    )  # fmt: skip
    verify = result.report["verify"]
    assert result.report["float_ops"] == [], (net, result.report["float_ops"])
    if not get_model_spec(net).tflm_native:
        assert any(r.startswith("3d-to-2d:conv3d:") for r in result.report["rewrites"]), net
    parity = verify["tflm_vs_litert_ref"]
    assert parity["max_abs"] == 0 or (parity["max_abs"] <= 1 and parity["known_difference"])
    assert verify["int8_vs_float"]["cos"] > 0.9


def _cli_config(crit: str, net: str) -> PruneConfig:
    budget = {"target_flops": 0.5} if crit in STRUCTURED else {"sparsity": 0.8}
    options = {k: v for k, v in OPTIONS.get(crit, {}).items() if k != "n_clusters"}
    if crit in UNSTRUCTURED and net == "test_ds_cnn":  # 272-weight layers: 4 per channel is 47 %
        options["min_per_channel"] = 1
    return PruneConfig(
        **budget,
        epochs=1,
        finetune=FinetuneConfig(epochs=0),
        round_to=1,
        progress=False,
        bn_recalib=0,
        batch_size=4,
        criterion_options=options,
        de=DESearchConfig(pop=4, gens=1, calib=8, heldout=8),
    )


def _check_summary(net: str, crit: str, summary: dict[str, Any]) -> None:
    if crit in STRUCTURED:
        _check_kept(net, crit, summary["prune"]["macs_after"] / summary["prune"]["macs_before"])
        return
    # over the masked layers (every prunable layer but the first and the last, kept dense by
    # design); a layer the criterion's ERK allocation leaves at density 1 still counts
    masked = {t.name.removesuffix(".weight") for t in find_prunable(create_model(net))}
    layers = [ly for ly in summary["sparsity"]["layers"] if ly["name"] in masked]
    assert {ly["name"] for ly in layers} == masked
    nnz = sum(ly["weight_nonzero"] for ly in layers)
    density = nnz / sum(ly["weight_params"] for ly in layers)
    # the masks hold 20 % of the weights; a weight regrown at zero may still be zero after a
    # single short epoch, so the non-zero density may fall below the mask's, never above it
    mask_density = _find(summary["train"], "final_density")
    assert abs((density if mask_density is None else mask_density) - 0.2) <= 0.03, mask_density
    assert 0.2 * 0.5 <= density <= 0.2 + 0.03, density


def _find(tree: Any, key: str) -> Any:
    """The first value of ``key`` anywhere in a nested dict/list, or None."""
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        tree = list(tree.values())
    if isinstance(tree, list):
        for item in tree:
            found = _find(item, key)
            if found is not None:
                return found
    return None


@pytest.mark.timeout(900)
@pytest.mark.parametrize(("net", "crit"), _params(STRUCTURED + UNSTRUCTURED, DEFAULT))
def test_cli_cell(net: str, crit: str, tmp_path: Path) -> None:
    """``tinyprune prune`` (1 epoch) then the export of ``pruned.pt2`` with verification."""
    data = _data(net)
    if data is None:  # no data set the CLI can build: engine prune, export with seeded images
        if crit not in STRUCTURED:
            pytest.skip(f"{net}: no built-in data set to train {crit}'s masks (cifar10 is 32x32)")
        if crit == "bn_scale" and _bn_scale_refuses(net):
            pytest.skip(f"bn_scale refuses {net} (tested by test_engine_cell)")
        module, x, _ = _engine_prune(net, crit)
        images = torch.rand(16, *x.shape[1:], generator=torch.Generator().manual_seed(4))
        _export(module.eval(), images.numpy(), net, tmp_path / "export")
        return
    spec, data_kw = data
    cfg, out = _cli_config(crit, net), tmp_path / "run"
    if crit == "bn_scale" and _bn_scale_refuses(net):  # a user-facing refusal (exit 2)
        with pytest.raises(ConfigError, match="applies to no layer"):
            prune_run(f"zoo:{net}", DataSpec(spec, data_kw), crit, cfg, out)
        return
    files = prune_run(f"zoo:{net}", DataSpec(spec, data_kw), crit, cfg, out)
    _check_summary(net, crit, json.loads(files.summary.read_text()))
    from tinyprune.app.sources import load_model

    module = load_model(str(files.program)).module  # as `tinyprune export run/pruned.pt2` does
    _export(module, np.load(files.calibration), net, tmp_path / "export")


FULL_SIZE = ["tscan", "efficientphys", "deepphys", "physnet_2p1d", "micro_cnn"]


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("net", FULL_SIZE)
def test_full_size_zoo_net_prunes_and_equals_the_zeroed_original(net: str) -> None:
    _engine_prune(net, "l1")
