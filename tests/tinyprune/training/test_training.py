"""Tests of the training loop, its config, schedules, hooks contract and checkpoints."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tinyprune.errors import ConfigError
from tinyprune.training import (
    TrainConfig,
    TrainContext,
    TrainHook,
    build_optimizer,
    build_scheduler,
    evaluate,
    fit,
    load_checkpoint,
    prepare_loader,
    save_checkpoint,
)
from tinyprune.training import distributed as tdist

pytestmark = pytest.mark.timeout(60)


def _data(n: int = 48, seed: int = 0) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=gen)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]]) + 0.05 * torch.randn(n, 1, generator=gen)
    return TensorDataset(x, y)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))


def _loader(batch_size: int = 8, shuffle: bool = True) -> DataLoader:
    return DataLoader(_data(), batch_size=batch_size, shuffle=shuffle)


def _cfg(**kw: Any) -> TrainConfig:
    base = {
        "epochs": 2,
        "lr": 0.01,
        "optimizer": "adam",
        "batch_size": 8,
        "seed": 3,
        "log_every": 0,
    }
    return TrainConfig(**{**base, **kw})


def _train(cfg: TrainConfig, hooks: tuple[TrainHook, ...] = (), **kw: Any) -> nn.Module:
    model = _model()
    fit(model, _loader(), cfg, loss_fn=nn.functional.mse_loss, hooks=hooks, progress=False, **kw)
    return model


def _params_equal(a: nn.Module, b: nn.Module) -> bool:
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return all(torch.equal(p, q) for p, q in pairs)


# --- determinism -------------------------------------------------------------------------------


def test_same_seed_gives_identical_weights_and_other_seed_differs() -> None:
    torch.manual_seed(999)  # the global RNG state before fit must not matter
    first = _train(_cfg())
    torch.manual_seed(12345)
    second = _train(_cfg())
    other = _train(_cfg(seed=4))
    assert _params_equal(first, second)
    assert not _params_equal(first, other)
    assert not _params_equal(first, _model())  # training moved the weights


def test_deterministic_flag_trains_and_restores_global_state() -> None:
    before = torch.are_deterministic_algorithms_enabled()
    a = _train(_cfg(deterministic=True))
    assert torch.are_deterministic_algorithms_enabled() == before
    assert _params_equal(a, _train(_cfg()))


def test_training_reduces_loss_and_reports_history() -> None:
    model = _model()
    val = DataLoader(_data(seed=1), batch_size=16)
    cfg = _cfg(epochs=4, optimizer="sgd", lr=0.05)
    res = fit(model, _loader(), cfg, loss_fn=nn.functional.mse_loss, val_loader=val, progress=False)
    assert [h["epoch"] for h in res.history] == [0, 1, 2, 3]
    assert res.steps == 4 * 6 and res.seconds > 0
    assert res.history[-1]["train_loss"] < 0.5 * res.history[0]["train_loss"]
    assert res.final == res.history[-1] and "val_loss" in res.final
    again = evaluate(model, val, nn.functional.mse_loss)
    assert res.final["val_loss"] == pytest.approx(again["mse_loss"])


# --- hooks ---------------------------------------------------------------------------------------


class _Recorder(TrainHook):
    def __init__(self, tag: str, log: list[tuple[str, str, int]]) -> None:
        self.tag, self.log = tag, log
        self.snapshot: torch.Tensor | None = None
        self.grads_ready: list[bool] = []
        self.unchanged_at_backward: list[bool] = []
        self.changed_at_step: list[bool] = []
        self.ctx_models: list[nn.Module] = []

    def _w(self, ctx: TrainContext) -> torch.Tensor:
        return next(ctx.model.parameters())

    def on_train_begin(self, ctx: TrainContext) -> None:
        self.log.append((self.tag, "begin", ctx.step))
        self.ctx_models.append(ctx.model)

    def extra_loss(self, ctx: TrainContext, inputs: torch.Tensor, outputs: torch.Tensor) -> None:
        self.log.append((self.tag, "extra", ctx.step))
        self.snapshot = self._w(ctx).detach().clone()

    def after_backward(self, ctx: TrainContext) -> None:
        self.log.append((self.tag, "backward", ctx.step))
        self.grads_ready.append(self._w(ctx).grad is not None)
        self.unchanged_at_backward.append(torch.equal(self._w(ctx), self.snapshot))

    def after_step(self, ctx: TrainContext) -> None:
        self.log.append((self.tag, "step", ctx.step))
        self.changed_at_step.append(not torch.equal(self._w(ctx), self.snapshot))

    def on_epoch_end(self, ctx: TrainContext) -> None:
        self.log.append((self.tag, "epoch_end", ctx.step))

    def on_train_end(self, ctx: TrainContext) -> None:
        self.log.append((self.tag, "end", ctx.step))

    def summary(self) -> dict[str, Any]:
        return {"events": len([e for e in self.log if e[0] == self.tag])}


def test_hooks_are_called_in_the_documented_order() -> None:
    log: list[tuple[str, str, int]] = []
    a, b = _Recorder("a", log), _Recorder("b", log)
    model = _model()
    res = fit(
        model,
        _loader(batch_size=16),
        _cfg(batch_size=16),
        loss_fn=nn.functional.mse_loss,
        hooks=(a, b),
        progress=False,
    )
    one_step = [
        ("a", "extra", 0),
        ("b", "extra", 0),
        ("a", "backward", 0),
        ("b", "backward", 0),
        ("a", "step", 1),
        ("b", "step", 1),
    ]
    assert log[:2] == [("a", "begin", 0), ("b", "begin", 0)]
    assert log[2:8] == one_step
    # 48 samples / 16 = 3 steps per epoch, 2 epochs; epoch ends after step 3 and 6.
    assert log[2 + 3 * 6 :][:2] == [("a", "epoch_end", 3), ("b", "epoch_end", 3)]
    assert log[-2:] == [("a", "end", 6), ("b", "end", 6)]
    assert all(a.grads_ready) and all(a.unchanged_at_backward) and all(a.changed_at_step)
    assert a.ctx_models == [model]
    assert res.hooks == {"_Recorder": {"events": 1 + 3 * 6 + 2 + 1}, "_Recorder#2": {"events": 22}}


class _L1Penalty(TrainHook):
    """Adds a large L1 penalty and counts steps as the loop reports them."""

    def __init__(self, weight: float) -> None:
        self.weight = weight
        self.steps: list[int] = []
        self.lrs: list[float] = []

    def extra_loss(
        self, ctx: TrainContext, inputs: torch.Tensor, outputs: torch.Tensor
    ) -> torch.Tensor:
        return self.weight * sum(p.abs().sum() for p in ctx.model.parameters())

    def after_step(self, ctx: TrainContext) -> None:
        self.steps.append(ctx.step)
        self.lrs.append(ctx.lr)


def test_extra_loss_changes_result_and_after_step_counts_steps() -> None:
    cfg = _cfg(epochs=3)
    plain = _train(cfg)
    hook = _L1Penalty(1.0)
    model = _model()
    res = fit(model, _loader(), cfg, loss_fn=nn.functional.mse_loss, hooks=[hook], progress=False)
    assert hook.steps == list(range(1, 3 * 6 + 1))
    assert res.history[0]["extra_loss"] > 0
    first = res.history[0]
    assert first["train_loss"] == pytest.approx(first["task_loss"] + first["extra_loss"])
    l1 = lambda m: sum(float(p.detach().abs().sum()) for p in m.parameters())  # noqa: E731
    assert l1(model) < 0.7 * l1(plain)
    assert hook.lrs[0] == pytest.approx(cfg.lr)  # cosine starts at the peak without warm-up
    assert hook.lrs == sorted(hook.lrs, reverse=True)


class _BlowUpGrads(TrainHook):
    def after_backward(self, ctx: TrainContext) -> None:
        for p in ctx.model.parameters():
            p.grad.mul_(1e6)


def test_grad_clip_applies_after_after_backward() -> None:
    model = _model()
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    cfg = _cfg(
        epochs=1,
        optimizer="sgd",
        momentum=0.0,
        lr=1.0,
        schedule="constant",
        grad_clip=1e-3,
        batch_size=48,
    )
    fit(
        model,
        _loader(batch_size=48),
        cfg,
        loss_fn=nn.functional.mse_loss,
        hooks=[_BlowUpGrads()],
        progress=False,
    )
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert float((after - before).norm()) <= 1e-3 * (1 + 1e-4)
    assert float((after - before).norm()) > 0


def test_bad_hook_and_bad_loss_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="TrainHook"):
        fit(_model(), _loader(), _cfg(), loss_fn=nn.functional.mse_loss, hooks=[object()])
    with pytest.raises(ConfigError, match="scalar"):
        fit(_model(), _loader(), _cfg(), loss_fn=lambda o, t: (o - t) ** 2, progress=False)
    with pytest.raises(ConfigError, match="diverged"):
        fit(
            _model(),
            _loader(),
            _cfg(),
            loss_fn=lambda o, t: (o - t).mean() * float("nan"),
            progress=False,
        )


# --- evaluation and data order -------------------------------------------------------------------


def test_evaluate_scores_the_whole_set_and_restores_mode() -> None:
    model = nn.Identity()
    x = torch.arange(10.0)
    loader = DataLoader(TensorDataset(x, 2 * x + 1), batch_size=3)

    def corr(out: torch.Tensor, tgt: torch.Tensor) -> dict[str, Any]:
        return {"n": out.numel(), "r": torch.corrcoef(torch.stack([out, tgt]))[0, 1]}

    model.train()
    metrics = evaluate(model, loader, corr)
    assert metrics["n"] == 10 and metrics["r"] == pytest.approx(1.0)
    assert model.training
    with pytest.raises(ConfigError, match="no batches"):
        evaluate(model, [], corr)


def test_prepare_loader_rebatches_with_seeded_order() -> None:
    cfg = _cfg(batch_size=5)
    first = [b[0] for b in prepare_loader(_loader(batch_size=7), cfg)[0]]
    torch.manual_seed(77)
    second = [b[0] for b in prepare_loader(_loader(batch_size=7), cfg)[0]]
    ordered = [b[0] for b in prepare_loader(_loader(shuffle=False), cfg)[0]]
    assert [len(b) for b in first] == [5] * 9 + [3]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert torch.equal(torch.cat(ordered), _data().tensors[0])
    assert not torch.equal(torch.cat(first), _data().tensors[0])


# --- config --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"epochs": 0}, r"epochs must be an integer >= 1, got 0"),
        ({"epochs": 2.5}, r"epochs must be an integer"),
        ({"lr": 0}, r"lr must be a finite number > 0, got 0"),
        ({"lr": float("nan")}, r"lr must be a finite number"),
        ({"optimizer": "sgdd"}, r"optimizer must be one of sgd, adam, adamw; got 'sgdd'"),
        ({"schedule": "step"}, r"schedule must be one of cosine, onecycle, constant; got 'step'"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\), got 1.0"),
        ({"weight_decay": -1e-4}, r"weight_decay must be a finite number >= 0"),
        ({"epochs": 3, "warmup": 3}, r"warmup .* 0 <= warmup < epochs \(epochs=3\), got 3"),
        ({"grad_clip": 0.0}, r"grad_clip must be None .* got 0.0"),
        ({"batch_size": 0}, r"batch_size must be an integer >= 1"),
        ({"seed": -1}, r"seed must be an integer >= 0"),
        ({"log_every": True}, r"log_every must be an integer"),
        ({"deterministic": "yes"}, r"deterministic must be True or False"),
    ],
)
def test_train_config_validation_messages(kwargs: dict[str, Any], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        TrainConfig(**kwargs)


def test_train_config_round_trip_and_unknown_key() -> None:
    cfg = TrainConfig(epochs=3, lr=0.1, optimizer="sgd", warmup=0.5, grad_clip=1.0)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=r"unknown TrainConfig field\(s\) \['lr_max'\]"):
        TrainConfig.from_dict({"lr_max": 1})
    with pytest.raises(ConfigError):
        bad: Any = {"epochs": 1}
        fit(_model(), _loader(), bad, loss_fn=nn.functional.mse_loss)


# --- schedules and optimizers --------------------------------------------------------------------


def _lrs(cfg: TrainConfig, steps_per_epoch: int = 10) -> list[float]:
    opt = build_optimizer(nn.Linear(2, 1), cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch)
    out = []
    for _ in range(cfg.epochs * steps_per_epoch):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    out.append(opt.param_groups[0]["lr"])  # after the last step
    return out


def test_cosine_schedule_warms_up_then_decays_to_zero() -> None:
    lrs = _lrs(TrainConfig(epochs=4, lr=0.2, schedule="cosine", warmup=1))
    warm, decay = lrs[:10], lrs[10:]
    assert warm == sorted(warm) and warm[0] == pytest.approx(0.2 / 11)
    assert decay[0] == pytest.approx(0.2)
    assert decay == sorted(decay, reverse=True)
    assert decay[15] == pytest.approx(0.1)  # half way through the cosine
    assert lrs[-2] < 0.01 * 0.2 and lrs[-1] == pytest.approx(0.0, abs=1e-12)


def test_constant_and_onecycle_schedules() -> None:
    const = _lrs(TrainConfig(epochs=2, lr=0.3, schedule="constant"))
    assert const == [pytest.approx(0.3)] * len(const)
    one = _lrs(TrainConfig(epochs=4, lr=0.3, schedule="onecycle", warmup=1, optimizer="adamw"))
    peak = max(range(len(one)), key=one.__getitem__)
    assert one[peak] == pytest.approx(0.3) and abs(peak - 10) <= 1
    assert one[0] == pytest.approx(0.3 / 25)  # OneCycleLR: max_lr / div_factor
    assert one[-2] == pytest.approx(0.3 / 25 / 1e4)  # the last step: / final_div_factor
    sgd = _lrs(TrainConfig(epochs=1, lr=0.3, schedule="onecycle", optimizer="sgd", momentum=0.0))
    assert max(sgd) == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("name", "cls"),
    [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)],
)
def test_build_optimizer_uses_config(name: str, cls: type) -> None:
    model = nn.Linear(3, 2)
    model.bias.requires_grad_(False)
    cfg = TrainConfig(optimizer=name, lr=0.5, weight_decay=0.01, momentum=0.8)
    opt = build_optimizer(model, cfg)
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["lr"] == 0.5 and group["weight_decay"] == 0.01 and len(group["params"]) == 1
    if name == "sgd":
        assert group["momentum"] == 0.8
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ConfigError, match="no parameter with requires_grad"):
        build_optimizer(frozen, TrainConfig())


# --- checkpoints ---------------------------------------------------------------------------------


def test_checkpoint_round_trip_with_weights_only(tmp_path: Any) -> None:
    model = _model(seed=5)
    spec = {"name": "mlp_test", "kwargs": {"hidden": 16, "dims": [4, 1]}}
    extra = {"epoch": 3, "metrics": {"mae": 1.25}, "mask": torch.ones(3, dtype=torch.bool)}
    path = save_checkpoint(tmp_path / "sub" / "ckpt.pt", model, spec, extra)
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt.pt"]  # no temp file left
    state, spec2, extra2 = load_checkpoint(path)
    assert spec2 == spec and extra2["epoch"] == 3 and extra2["metrics"] == {"mae": 1.25}
    assert torch.equal(extra2["mask"], extra["mask"])
    fresh = _model(seed=6)
    assert not _params_equal(fresh, model)
    fresh.load_state_dict(state)
    assert _params_equal(fresh, model)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "tinyprune-checkpoint"


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("this must never run",))


def test_checkpoint_with_non_allowlisted_object_is_rejected(tmp_path: Any, capsys: Any) -> None:
    path = tmp_path / "evil.pt"
    torch.save(
        {
            "format": "tinyprune-checkpoint",
            "version": 1,
            "state_dict": {},
            "spec": {"name": "x"},
            "extra": {"payload": _Evil()},
        },
        path,
    )
    with pytest.raises(ConfigError, match="weights_only=True"):
        load_checkpoint(path)
    assert "must never run" not in capsys.readouterr().out


def test_checkpoint_missing_corrupt_or_foreign_files(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    good = save_checkpoint(tmp_path / "good.pt", nn.Linear(2, 2), {"name": "lin"})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(ConfigError, match="corrupt"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save(nn.Linear(2, 2).state_dict(), foreign)
    with pytest.raises(ConfigError, match="not a tinyprune checkpoint"):
        load_checkpoint(foreign)


def test_save_checkpoint_refuses_what_loading_would_refuse(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="'name'.*'factory'"):
        save_checkpoint(tmp_path / "a.pt", nn.Linear(2, 2), {"kwargs": {}})
    with pytest.raises(ConfigError, match=r"extra\['obj'\] holds a _Evil"):
        save_checkpoint(tmp_path / "b.pt", nn.Linear(2, 2), {"name": "lin"}, {"obj": _Evil()})
    assert not list(tmp_path.iterdir())


# --- distributed helpers in a single process -----------------------------------------------------


def test_distributed_helpers_are_no_ops_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert tdist.init_from_env() == tdist.DistInfo()
    t = torch.tensor([1.0, 3.0])
    assert tdist.all_reduce_mean_(t) is t and t.tolist() == [1.0, 3.0]
    assert tdist.broadcast_object({"a": 1}) == {"a": 1}
    assert tdist.is_main() and tdist.get_world_size() == 1
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ConfigError, match="MASTER_ADDR.*torchrun"):
        tdist.init_from_env()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE must be an integer, got 'two'"):
        tdist.init_from_env()
