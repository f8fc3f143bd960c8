"""VGG-16 pruned by pcc_ci to the paper's operating point exports to int8 and runs in TFLM.

Li et al. (EAAI 2025) report VGG-16/CIFAR-10 with 92.75 % fewer params and 84.61 % fewer
FLOPs; with docs/methods.md §3.5 counting (BN and classifier included) that is <= 7.3 % of the
params and <= 15.4 % of the MACs kept. No CIFAR-10 here: random init and random
CIFAR-shaped calibration images (the sizes, not the accuracy, are under test).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

MACS_KEPT = 0.154
PARAMS_KEPT = 0.073


@pytest.mark.slow
@pytest.mark.tf
def test_vgg16_pcc_ci_operating_point_runs_in_tflm(tmp_path: Path) -> None:
    from firmware_export import export
    from tinyprune import criteria
    from tinyprune.models import create_model
    from tinyprune.pruning import Budget, prune_structured

    torch.manual_seed(0)
    model = create_model("vgg16_cifar").eval()
    g = torch.Generator().manual_seed(0)
    data = [(torch.rand(16, 3, 32, 32, generator=g),) for _ in range(5)]
    result = prune_structured(
        model,
        data[0][0][:2],
        criteria.get("pcc_ci"),
        Budget(target_flops=MACS_KEPT, target_params=PARAMS_KEPT),
        data=data,
    )
    assert result.macs_before == 313_463_808  # conv + linear MACs of VGG-16 (CIFAR) at 32x32
    assert result.macs_after <= MACS_KEPT * result.macs_before
    assert result.params_after <= PARAMS_KEPT * result.params_before
    # the adaptive threshold uses the budget: not far below it on both counts
    assert result.macs_after > 0.5 * MACS_KEPT * result.macs_before
    calib = torch.rand(32, 3, 32, 32, generator=g).numpy()
    res = export(model, calib, target="cortex-m7", out_dir=tmp_path / "vgg", raise_on_budget=False)
    report = res.report
    assert report["macs"] == result.macs_after
    assert report["verify"]["tflm_vs_litert_ref"]["max_abs"] == 0
    assert report["flash_bytes"] < result.params_after * 1.2 + 64 * 1024
