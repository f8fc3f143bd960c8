"""Inserted channel gates: ``tailored`` on nets without BatchNorm (issue 17), exit 2 floors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import tinyprune.criteria as C
from tinyprune.criteria.tailored import TailoredHook
from tinyprune.errors import ConfigError, PruningError
from tinyprune.models.registry import create_model
from tinyprune.pruning import Budget, prune_structured
from tinyprune.pruning.gates import GATE, fold_gates_, gate_of, insert_gates_
from tinyprune.training.hooks import TrainContext


def _net(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = create_model(name).eval()
    return model, torch.randn(2, *model.input_shape, generator=torch.Generator().manual_seed(1))


def test_gates_start_as_identity_and_fold_exactly() -> None:
    model, x = _net("test_tscan")
    with torch.no_grad():
        dense = model(x)
    layers = ["motion.conv1", "dense1"]
    gates = insert_gates_(model, layers)
    assert len(gates) == 2 and not insert_gates_(model, layers)  # idempotent
    assert any(p is gates[0] for p in model.parameters())  # trained with the model
    with torch.no_grad():
        torch.testing.assert_close(model(x), dense, rtol=0, atol=0)
        for g in gates:
            g.uniform_(0.0, 2.0)
        gated = model(x)
    assert fold_gates_(model) == 2
    assert all(gate_of(model.get_submodule(n)) is None for n in layers)
    assert not any(GATE in k for k in model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model(x), gated, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["test_tscan", "test_efficientphys", "test_deepphys"])
def test_tailored_gates_every_group_and_hard_prune_equals_the_zero_gated_net(name: str) -> None:
    model, x = _net(name)
    hook = TailoredHook(x, Budget(target_flops=0.5), C.get("tailored"), round_to=1)
    hook.prepare(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hook.on_train_begin(TrainContext(model=model, optimizer=opt, lr=0.1, total_steps=10))
    members = [s.name for g in hook.graph.groups for s in g.members]
    assert all(gate_of(model.get_submodule(n)) is not None for n in members)
    with torch.no_grad():  # what the proximal steps converge to: Pset gates at exact zero
        for gates, pset in zip(hook._gates, hook.pset, strict=True):
            for gate, slot in gates:
                for unit, root in zip(slot.idxs, slot.root, strict=True):
                    if root in set(pset.tolist()):
                        gate[unit] = 0.0
        gated = model(x)
    result = hook.freeze_(model)
    assert result.macs_after <= 0.5 * result.macs_before
    with torch.no_grad():
        torch.testing.assert_close(model(x), gated, rtol=1e-5, atol=1e-5 * gated.abs().max().item())


def test_gates_inserted_after_the_optimizer_join_it() -> None:
    model, x = _net("test_efficientphys")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n_before = sum(len(g["params"]) for g in opt.param_groups)
    hook = TailoredHook(x, Budget(target_flops=0.5), C.get("tailored"), round_to=1)
    hook.on_train_begin(TrainContext(model=model, optimizer=opt, lr=1e-3, total_steps=10))
    gates = [p for n, p in model.named_parameters() if n.endswith(GATE)]
    assert gates and sum(len(g["params"]) for g in opt.param_groups) == n_before + len(gates)


def test_tailored_floor_is_the_engines_and_unreachable_budget_is_exit_2() -> None:
    model, x = _net("test_physnet")
    l1 = copy.deepcopy(model)
    with pytest.raises(ConfigError, match="smallest reachable budget is --target-flops") as err:
        prune_structured(l1, x, C.get("l1"), Budget(target_flops=0.01), round_to=1)
    assert isinstance(err.value, PruningError) and err.value.exit_code == 2
    floor = float(str(err.value).split("--target-flops ")[1].split()[0])
    hook = TailoredHook(x, Budget(target_flops=0.01), C.get("tailored"), round_to=1)
    with pytest.raises(ConfigError, match=f"--target-flops {floor:.4f}"):
        hook.on_train_begin(
            TrainContext(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
        )


def test_a_gate_lands_on_its_layers_device_as_a_parameter() -> None:
    """The gate is built on the weight's device (``Parameter.to(device)`` would return a plain
    tensor, which ``register_parameter`` rejects); the meta device stands in for a GPU."""
    layer = nn.Conv2d(3, 4, 1, device="meta")
    (gate,) = insert_gates_(nn.Sequential(layer), ["0"])
    assert isinstance(gate, nn.Parameter) and gate.device.type == "meta"
    assert gate_of(layer) is gate and gate.shape == (4,)


def test_only_conv_and_linear_layers_take_a_gate() -> None:
    with pytest.raises(PruningError, match="BatchNorm2d"):
        insert_gates_(nn.Sequential(nn.BatchNorm2d(4)), ["0"])
