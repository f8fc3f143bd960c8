"""Dynamic sparse training engine shared by every unstructured criterion (wgj, gmp, set, rigl).

Why it exists: the criteria differ only in how they rank weights (trim / drop / regrow scores,
drop fraction, gradient EMA); everything else is the same for all of them so that they compare
at equal training budgets (docs/methods.md §2.6, §2.9): the layer statistics, the schedule placed
from the loop's step counts, and :class:`DynamicSparseHook`, the training hook that owns the
masks (gradient EMA after backward; re-mask, trim, drop and regrow after optimizer steps).
A criterion config (:class:`tinyprune.criteria.wgj.DynamicSparsityConfig`) supplies the scores.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from tinyprune.errors import ConfigError, PruningError
from tinyprune.pruning import masks as mk
from tinyprune.training.hooks import TrainContext, TrainHook

if TYPE_CHECKING:
    from tinyprune.criteria.unstructured import DynamicSparsityConfig

logger = logging.getLogger(__name__)

_TYPES = ("w_lo_g_lo", "w_hi_g_lo", "w_lo_g_hi", "w_hi_g_hi")  # code = w_hi + 2 * g_hi
_SURVIVAL_AGES = (1, 2, 5)

__all__ = ["DynamicSparseHook", "LayerStats", "ResolvedSchedule", "layer_stats", "resolve_schedule"]


@dataclass(frozen=True)
class LayerStats:
    """Flat per-connection statistics of one prunable tensor at an update (docs/methods.md §2.4)."""

    weight: torch.Tensor  # |W|
    active: torch.Tensor  # bool
    gbar: torch.Tensor  # gradient-magnitude EMA
    wn: torch.Tensor  # |W| / mean(|W| over active entries)
    gn: torch.Tensor  # gbar / mean(gbar over all entries)
    wn_regen: torch.Tensor  # wn of the value a regenerated weight would get (0, or the shadow)


def layer_stats(
    weight: torch.Tensor,
    active: torch.Tensor,
    gbar: torch.Tensor,
    shadow: torch.Tensor | None = None,
    eps: float = 1e-12,
) -> LayerStats:
    """Layer-normalise weight and gradient EMA so scores compare across layers (§2.4)."""
    w = weight.detach().abs().flatten().float()
    act = active.flatten()
    g = gbar.flatten().float()
    w_mean = w[act].mean() if bool(act.any()) else w.new_tensor(0.0)
    wn = w / (w_mean + eps)
    gn = g / (g.mean() + eps)
    wn_regen = torch.zeros_like(wn) if shadow is None else shadow.abs().flatten() / (w_mean + eps)
    return LayerStats(w, act, g, wn, gn, torch.where(act, wn, wn_regen))


@dataclass(frozen=True)
class ResolvedSchedule:
    """Update steps and densities once the number of training steps is known."""

    t_start: int
    t_f: int
    t_end: int
    delta_t: int
    d_init: float
    d_final: float

    def is_update(self, t: int) -> bool:
        """Every ``delta_t`` from ``t_start`` to ``t_end``, plus ``t_f`` so d_final is reached."""
        in_range = self.t_start <= t <= self.t_end
        return in_range and ((t - self.t_start) % self.delta_t == 0 or t == self.t_f)

    def density(self, t: int) -> float:
        """Cubic schedule density at step ``t``."""
        return mk.cubic_density(t, self.t_start, self.t_f, self.d_init, self.d_final)


def resolve_schedule(cfg: DynamicSparsityConfig, ctx: TrainContext) -> ResolvedSchedule:
    """Fill in the defaults from the loop's step counts and check the schedule fits training."""
    total = int(ctx.total_steps)
    if total <= 0:
        msg = (
            f"total_steps is {total}; the training loop must set TrainContext.total_steps "
            "before on_train_begin so the pruning schedule can be placed"
        )
        raise ConfigError(msg)
    t_start = cfg.t_start
    if t_start is None:
        t_start = ctx.steps_per_epoch if ctx.steps_per_epoch > 0 else cfg.delta_t
    t_f = cfg.t_f if cfg.t_f is not None else mk.round_count(cfg.t_f_frac * total)
    t_end = cfg.t_end if cfg.t_end is not None else mk.round_count(cfg.t_end_frac * total)
    t_f = max(t_f, t_start) if cfg.t_f is None else t_f
    t_end = max(t_end, t_f) if cfg.t_end is None else t_end
    if not (t_start <= t_f <= t_end <= total):
        msg = (
            f"pruning schedule t_start={t_start}, t_f={t_f}, t_end={t_end} does not fit "
            f"{total} training steps; expected t_start <= t_f <= t_end <= total_steps. "
            "Train longer or move t_f/t_end earlier"
        )
        raise ConfigError(msg)
    return ResolvedSchedule(
        t_start, t_f, t_end, cfg.delta_t, 1.0 - cfg.init_sparsity, 1.0 - cfg.sparsity
    )


class DynamicSparseHook(TrainHook):
    """Owns the masks: gradient EMA after backward; re-mask and trim/drop/regrow after steps.

    Attributes:
        cfg: The criterion config.
        masks: The :class:`MaskSet` (None before ``on_train_begin``).
        gbar: Gradient-magnitude EMA per tensor name.
        records: One JSON-serialisable dict of counters per update.
        last_regenerated: Flat indices regenerated at the last update, per tensor.
        last_dropped: Flat indices dropped (before regeneration) at the last update, per tensor.
    """

    def __init__(self, cfg: DynamicSparsityConfig) -> None:
        self.cfg = cfg
        self.masks: mk.MaskSet | None = None
        self.sched: ResolvedSchedule | None = None
        self.gbar: dict[str, torch.Tensor] = {}
        self.shadow: dict[str, torch.Tensor] = {}
        self.records: list[dict[str, Any]] = []
        self.last_regenerated: dict[str, torch.Tensor] = {}
        self.last_dropped: dict[str, torch.Tensor] = {}
        self._floors: dict[str, int] = {}
        self._regen_at: dict[str, torch.Tensor] = {}
        self._cohorts: list[tuple[int, dict[str, torch.Tensor]]] = []
        self._n_updates = 0

    # --- TrainHook -----------------------------------------------------------------------
    def on_train_begin(self, ctx: TrainContext) -> None:
        """Select prunable tensors, place the schedule, check floors, apply ``init_sparsity``."""
        cfg = self.cfg
        tensors = mk.find_prunable(
            ctx.model,
            keep_first_dense=cfg.keep_first_dense,
            keep_last_dense=cfg.keep_last_dense,
            exclude=cfg.exclude,
        )
        self.masks = mk.MaskSet(tensors)
        self.sched = resolve_schedule(cfg, ctx)
        for t in tensors:
            out_dim = mk.out_channel_dim(t.module)
            self._floors[t.name] = mk.layer_floor(
                t.param.shape, out_dim, cfg.min_density_layer, cfg.min_per_channel
            )
            self.gbar[t.name] = torch.zeros_like(t.param, dtype=torch.float32)
            self._regen_at[t.name] = torch.full(
                t.param.shape, -(10**9), dtype=torch.long, device=t.param.device
            )
            if cfg.regrow_init == "restore":
                self.shadow[t.name] = torch.zeros_like(t.param.detach())
        self._check_floors()
        if self.sched.d_init < 1.0:
            self._trim(self._stats(), self.sched.d_init, magnitude=True)
        self.masks.apply_(ctx.optimizer)

    @torch.no_grad()
    def after_backward(self, ctx: TrainContext) -> None:
        """Update the gradient-magnitude EMA from the dense (already all-reduced) gradients."""
        if self.masks is None:
            self.on_train_begin(ctx)
        masks = self._ready()[0]
        beta = self.cfg.grad_beta
        for name, t in masks.tensors.items():
            if t.param.grad is not None:
                self.gbar[name].mul_(beta).add_(t.param.grad.detach().abs().float(), alpha=1 - beta)

    @torch.no_grad()
    def after_step(self, ctx: TrainContext) -> None:
        """Re-apply the masks to weights and optimizer state; update them every ``delta_t``."""
        if self.masks is None or self.sched is None:
            self.on_train_begin(ctx)
        masks, sched = self._ready()
        masks.apply_(ctx.optimizer)
        if sched.is_update(ctx.step):
            self.update(ctx)

    def on_train_end(self, ctx: TrainContext) -> None:
        """Leave the weights exactly masked."""
        if self.masks is not None:
            self.masks.apply_(ctx.optimizer)

    def summary(self) -> dict[str, Any]:
        """Config, schedule, per-update counters, final densities and mean regeneration survival."""
        out: dict[str, Any] = {"config": self.cfg.to_dict(), "updates": self.records}
        if self.sched is not None:
            out["schedule"] = asdict(self.sched)
        if self.masks is not None:
            active = self.masks.active_counts()
            out["final_active"] = active
            out["final_density"] = sum(active.values()) / max(self.masks.numel(), 1)
        surv: dict[str, float] = {}
        for age in _SURVIVAL_AGES:
            vals = [r["survival"][str(age)] for r in self.records if str(age) in r["survival"]]
            if vals:
                surv[str(age)] = sum(vals) / len(vals)
        out["mean_survival"] = surv
        return out

    def load_masks(self, state: dict[str, torch.Tensor], ctx: TrainContext) -> None:
        """Replace the masks (e.g. from :func:`masks.load_masks`) and apply them."""
        if self.masks is None:
            self.on_train_begin(ctx)
        masks = self._ready()[0]
        masks.load_state_dict(state)
        masks.apply_(ctx.optimizer)

    def _ready(self) -> tuple[mk.MaskSet, ResolvedSchedule]:
        if self.masks is None or self.sched is None:
            msg = "the pruning hook is not initialised: call on_train_begin(ctx) first"
            raise PruningError(msg)
        return self.masks, self.sched

    # --- the update ----------------------------------------------------------------------
    @torch.no_grad()
    def update(self, ctx: TrainContext) -> dict[str, Any]:
        """One mask update at ``ctx.step`` (docs/methods.md §2.6); returns and records counters."""
        masks, sched = self._ready()
        t, u = int(ctx.step), self._n_updates
        stats = self._stats()
        codes = self._type_codes(stats)
        rec: dict[str, Any] = {"step": t, "update": u, "n_trim": 0, "n_drop": 0, "n_regen": 0}
        trimmed: dict[str, torch.Tensor] = {}
        if t <= sched.t_f:
            trimmed = self._trim(stats, sched.density(t))
        rec["n_trim"] = sum(int(i.numel()) for i in trimmed.values())
        rec["active_after_trim"] = masks.active_counts()
        r_t = self.cfg.drop_fraction(t, sched.t_start, sched.t_end)
        dropped, regrown, just = self._drop_regen(stats, r_t, u, ctx.optimizer)
        masks.apply_(ctx.optimizer)
        self._sync_masks(ctx)
        rec.update(
            drop_fraction=r_t,
            density_target=sched.density(t),
            n_drop=sum(int(i.numel()) for i in dropped.values()),
            n_regen=sum(int(i.numel()) for i in regrown.values()),
            regen_just_dropped=just,
            drop_per_layer={n: int(i.numel()) for n, i in dropped.items()},
            regen_per_layer={n: int(i.numel()) for n, i in regrown.items()},
            active=masks.active_counts(),
            total_active=masks.total_active(),
            types={
                k: _count_types(codes, v)
                for k, v in (("trim", trimmed), ("drop", dropped), ("regen", regrown))
            },
            survival=self._survival(u, regrown),
        )
        self.last_regenerated, self.last_dropped = regrown, dropped
        self.records.append(rec)
        self._n_updates += 1
        logger.debug(
            "mask update %d at step %d: %s",
            u,
            t,
            {k: rec[k] for k in ("n_trim", "n_drop", "n_regen")},
        )
        return rec

    def _stats(self) -> dict[str, LayerStats]:
        masks = self._ready()[0]
        return {
            n: layer_stats(t.param, masks.masks[n], self.gbar[n], self.shadow.get(n), self.cfg.eps)
            for n, t in masks.tensors.items()
        }

    def _protected(
        self, name: str, score: torch.Tensor, active: torch.Tensor, floor: int | None = None
    ) -> torch.Tensor:
        masks = self._ready()[0]
        t = masks.tensors[name]
        return mk.floor_protected(
            score,
            active,
            t.param.shape,
            mk.out_channel_dim(t.module),
            self._floors[name] if floor is None else floor,
            self.cfg.min_per_channel,
        )

    def _trim(
        self, stats: dict[str, LayerStats], density: float, magnitude: bool = False
    ) -> dict[str, torch.Tensor]:
        """Remove weights permanently down to ``density`` (global or per layer), above floors."""
        masks = self._ready()[0]
        scores = {n: (s.weight if magnitude else self.cfg.trim_scores(s)) for n, s in stats.items()}
        active = {n: masks.masks[n].flatten() for n in stats}
        cands = {n: active[n] & ~self._protected(n, scores[n], active[n]) for n in stats}
        if self.cfg.scope == "layer":
            out = {}
            for n in stats:
                target = max(mk.round_count(density * active[n].numel()), self._floors[n])
                out[n] = mk.smallest_k(scores[n], cands[n], int(active[n].sum()) - target)
        else:
            n_trim = masks.total_active() - mk.round_count(density * masks.numel())
            out = _global_smallest(scores, cands, n_trim)
        for n, idx in out.items():
            masks.masks[n].view(-1)[idx] = False
        return out

    def _drop_regen(
        self,
        stats: dict[str, LayerStats],
        r_t: float,
        u: int,
        optimizer: torch.optim.Optimizer,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], int]:
        """Drop ``ceil(r_t * active)`` per layer by I_keep and regrow as many by I_regen."""
        masks = self._ready()[0]
        dropped: dict[str, torch.Tensor] = {}
        regrown: dict[str, torch.Tensor] = {}
        just = 0
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + u)
        for n, st in stats.items():
            mask = masks.masks[n].view(-1)
            param = masks.tensors[n].param
            n_active = int(mask.sum())
            keep = self.cfg.keep_scores(st)
            cands = mask & (u - self._regen_at[n].view(-1) > self.cfg.protect_k)
            cands &= ~self._protected(n, keep, mask, floor=0)
            k = min(math.ceil(r_t * n_active - 1e-9), int(cands.sum())) if r_t > 0 else 0
            d_idx = mk.smallest_k(keep, cands, k)
            if n in self.shadow:
                self.shadow[n].view(-1)[d_idx] = param.detach().view(-1)[d_idx]
            mask[d_idx] = False
            regen = self.cfg.regen_scores(st, gen)
            g_idx = mk.largest_k(regen, ~mask, int(d_idx.numel()))
            mask[g_idx] = True
            init = self.shadow[n].view(-1)[g_idx] if n in self.shadow else 0.0
            param.view(-1)[g_idx] = init
            mk.zero_state_at_(optimizer, param, g_idx)
            self._regen_at[n].view(-1)[g_idx] = u
            just += int(torch.isin(g_idx, d_idx).sum())
            dropped[n], regrown[n] = d_idx, g_idx
        return dropped, regrown, just

    def _type_codes(self, stats: dict[str, LayerStats]) -> dict[str, torch.Tensor]:
        """Per-connection type by median splits of wn (active entries) and gn (all entries)."""
        codes = {}
        for n, st in stats.items():
            w_med = st.wn[st.active].median() if bool(st.active.any()) else st.wn.new_tensor(0.0)
            # strict '>' so a tie at the (lower) median counts as small
            codes[n] = (st.wn > w_med).long() + 2 * (st.gn > st.gn.median()).long()
        return codes

    def _survival(self, u: int, regrown: dict[str, torch.Tensor]) -> dict[str, float]:
        """Fraction of earlier cohorts of regenerated connections still active now."""
        masks = self._ready()[0]
        out: dict[str, float] = {}
        keep = []
        for born, idx in self._cohorts:
            age = u - born
            total = sum(int(i.numel()) for i in idx.values())
            if age in _SURVIVAL_AGES and total:
                alive = sum(int(masks.masks[n].view(-1)[i].sum()) for n, i in idx.items())
                out[str(age)] = alive / total
            if age < max(_SURVIVAL_AGES):
                keep.append((born, idx))
        self._cohorts = [*keep, (u, regrown)]
        return out

    def _check_floors(self) -> None:
        masks, sched = self._ready()
        if self.cfg.scope != "global":
            return
        need = sum(self._floors.values())
        target = mk.round_count(sched.d_final * masks.numel())
        if need > target:
            msg = (
                f"per-layer floors need {need} active weights but sparsity {self.cfg.sparsity} "
                f"leaves {target} of {masks.numel()}; lower min_density_layer "
                f"({self.cfg.min_density_layer}) / min_per_channel ({self.cfg.min_per_channel}) "
                "or the sparsity"
            )
            raise ConfigError(msg)

    def _sync_masks(self, ctx: TrainContext) -> None:
        """Under DDP make rank 0's masks authoritative (they should already agree bit for bit)."""
        if not (ctx.distributed and dist.is_available() and dist.is_initialized()):
            return
        masks = self._ready()[0]
        for mask in masks.masks.values():
            buf = mask.to(torch.uint8)
            dist.broadcast(buf, src=0)
            mask.copy_(buf.bool())
        masks.apply_(ctx.optimizer)


def _global_smallest(
    scores: dict[str, torch.Tensor], cands: dict[str, torch.Tensor], n: int
) -> dict[str, torch.Tensor]:
    """The ``n`` smallest candidate scores over all layers; ties by (layer order, index)."""
    names = list(scores)
    idx = [cands[m].nonzero().flatten() for m in names]
    if n <= 0:
        return {m: i[:0] for m, i in zip(names, idx, strict=True)}
    vals = torch.cat([scores[m][i].float().cpu() for m, i in zip(names, idx, strict=True)])
    if n > vals.numel():
        msg = f"cannot trim {n} weights: only {vals.numel()} are above the per-layer floors"
        raise PruningError(msg)
    owner = torch.cat([torch.full((i.numel(),), k) for k, i in enumerate(idx)])
    pos = torch.cat([i.cpu() for i in idx])
    chosen = torch.sort(vals, stable=True).indices[:n]
    return {m: pos[chosen][owner[chosen] == k].to(idx[k].device) for k, m in enumerate(names)}


def _count_types(codes: dict[str, torch.Tensor], idx: dict[str, torch.Tensor]) -> dict[str, int]:
    counts = torch.zeros(4, dtype=torch.long)
    for n, i in idx.items():
        if i.numel():
            counts += torch.bincount(codes[n][i].cpu(), minlength=4)
    return {name: int(c) for name, c in zip(_TYPES, counts, strict=True)}
