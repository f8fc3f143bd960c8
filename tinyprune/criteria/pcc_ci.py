"""PCC loss in pre-training + Channel Independence screening (Li et al., EAAI 154:110920, 2025).

Only the abstract of the paper was available (docs/methods.md §3). Channel Independence (CI) is
taken exactly from CHIP (Sui et al., NeurIPS 2021, arXiv:2110.13981): the drop of the nuclear
norm of a layer's post-ReLU feature map when one channel is zeroed. It is computed exactly and
fast here through the Gram matrix or a rank-one downdate in float64 (§3.4). The PCC loss
(pixel-level cross-correlation between channels) is the [R] reconstruction of §3.3, added to
training as a :class:`~tinyprune.training.hooks.TrainHook`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from tinyprune.criteria.base import CRITERIA, Granularity, ScoreInput
from tinyprune.errors import ConfigError
from tinyprune.training.hooks import TrainContext, TrainHook

PCC_MODES = ("decorrelate", "decorrelate_margin", "correlate")
_CHUNK_ELEMENTS = 2**22  # eigen-problem elements per batch of the CI computation (memory cap)


def _nuclear_from_gram(gram: torch.Tensor) -> torch.Tensor:
    """Sum of singular values from a batch of symmetric PSD Gram matrices.

    Eigenvalues below ``dim * eps * max eigenvalue`` are rounding noise of a rank-deficient
    Gram matrix; ``sqrt`` would amplify them (1e-15 -> 3e-8), so they are set to 0.
    """
    eig = torch.linalg.eigvalsh(gram)
    tol = eig.shape[-1] * torch.finfo(eig.dtype).eps * eig.abs().amax(dim=-1, keepdim=True)
    return torch.where(eig > tol, eig, torch.zeros_like(eig)).sqrt().sum(-1)


def channel_independence(a: torch.Tensor) -> torch.Tensor:
    """CI of every channel of every sample: ``||A||_* - ||A with row c zeroed||_*``.

    Args:
        a: Feature maps, shape ``(N, C, P)`` (pixels flattened); converted to float64.

    Returns:
        ``(N, C)`` float64 CI values. Uses ``G = A A^T`` minus row/column ``c`` when ``C <= P``
        and ``K = A^T A - a_c a_c^T`` otherwise (both exact, docs/methods.md §3.4).
    """
    if a.dim() != 3:
        msg = f"expected feature maps of shape (N, C, P), got {tuple(a.shape)}"
        raise ConfigError(msg)
    a = a.double()
    n, c, p = a.shape
    if c == 1:
        norms: torch.Tensor = torch.linalg.vector_norm(a, dim=-1)
        return norms
    m = min(c - 1, p)
    chunk = max(1, _CHUNK_ELEMENTS // (c * m * m))
    return torch.cat([_ci_chunk(a[i : i + chunk]) for i in range(0, n, chunk)])


def _ci_chunk(a: torch.Tensor) -> torch.Tensor:
    _, c, p = a.shape
    if c <= p:
        gram = a @ a.transpose(1, 2)  # (N, C, C)
        full = _nuclear_from_gram(gram)
        idx = torch.stack([torch.cat([torch.arange(i), torch.arange(i + 1, c)]) for i in range(c)])
        sub = gram[:, idx[:, :, None], idx[:, None, :]]  # (N, C, C-1, C-1)
        return full[:, None] - _nuclear_from_gram(sub)
    k = a.transpose(1, 2) @ a  # (N, P, P)
    full = _nuclear_from_gram(k)
    down = k[:, None] - a[:, :, :, None] * a[:, :, None, :]  # (N, C, P, P)
    return full[:, None] - _nuclear_from_gram(down)


def pcc_matrix(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Pearson cross-correlation between channels over pixels: ``(B, C, P) -> (B, C, C)``."""
    xc = x - x.mean(dim=-1, keepdim=True)
    # clamp before sqrt: a dead channel (std 0) would give an infinite gradient, then NaN
    std = xc.pow(2).mean(dim=-1, keepdim=True).clamp(min=1e-12).sqrt()
    xh = xc / (std + eps)
    return xh @ xh.transpose(1, 2) / x.shape[-1]


def _phi(r: torch.Tensor, mode: str, margin: float) -> torch.Tensor:
    if mode == "decorrelate":
        return r * r
    if mode == "decorrelate_margin":
        return (r.abs() - margin).clamp(min=0).pow(2)
    return 1.0 - r.abs()  # correlate (ablation)


def pcc_layer_loss(
    x: torch.Tensor,
    mode: str = "decorrelate",
    margin: float = 0.1,
    max_pixels: int = 1024,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The layer term ``L_l`` of docs/methods.md §3.3 for one feature map ``(B, C, *spatial)``.

    Off-diagonal ``phi(R_b[i, j])`` averaged over channel pairs whose channels are both alive
    (pixel std >= 1e-6), then over samples.
    """
    if mode not in PCC_MODES:
        msg = f"pcc mode {mode!r} is unknown; expected one of: {', '.join(PCC_MODES)}"
        raise ConfigError(msg)
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    if flat.shape[-1] > max_pixels:
        pick = torch.randperm(flat.shape[-1], generator=generator)[:max_pixels].to(x.device)
        flat = flat[:, :, pick]
    r = pcc_matrix(flat)
    alive = (flat.std(dim=-1, unbiased=False) >= 1e-6).to(r.dtype)  # (B, C)
    pair = alive[:, :, None] * alive[:, None, :]
    pair = pair * (1 - torch.eye(r.shape[-1], dtype=r.dtype, device=r.device))
    n_pairs = pair.sum(dim=(1, 2))
    per_sample = (_phi(r, mode, margin) * pair).sum(dim=(1, 2)) / n_pairs.clamp(min=1)
    return per_sample.mean()


class PCCHook(TrainHook):
    """Adds ``lambda_pcc * mean_l L_l`` to the task loss during training (docs/methods.md §3.3).

    Feature maps are taken from the outputs of the named modules (default: every ReLU-family
    module, i.e. the post-BN-ReLU outputs of the conv layers) during training-mode forwards.
    """

    def __init__(
        self,
        lambda_pcc: float = 0.1,
        mode: str = "decorrelate",
        margin: float = 0.1,
        max_pixels: int = 1024,
        layers: tuple[str, ...] = (),
        seed: int = 0,
    ) -> None:
        if mode not in PCC_MODES or lambda_pcc < 0:
            msg = f"PCCHook(mode={mode!r}, lambda_pcc={lambda_pcc}): modes {PCC_MODES}, lambda >= 0"
            raise ConfigError(msg)
        self.lambda_pcc, self.mode, self.margin = lambda_pcc, mode, margin
        self.max_pixels = max_pixels
        self.layers = layers
        self.generator = torch.Generator().manual_seed(seed)
        self._feats: list[torch.Tensor] = []
        self._handles: list[Any] = []
        self.last = math.nan

    def on_train_begin(self, ctx: TrainContext) -> None:
        """Register forward hooks on the selected activation modules."""
        acts = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.Hardswish)
        names = self.layers or tuple(n for n, m in ctx.model.named_modules() if isinstance(m, acts))
        if not names:  # functional activations (the rPPG nets' tanh): the conv outputs
            convs = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
            names = tuple(
                n
                for n, m in ctx.model.named_modules()
                if isinstance(m, convs) and m.out_channels > 1
            )
        if not names:
            msg = "PCCHook found no layer to regularise; pass layers=('features.2', ...)"
            raise ConfigError(msg)
        for name in names:
            module = ctx.model.get_submodule(name)
            self._handles.append(module.register_forward_hook(self._capture))

    def _capture(self, module: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        if module.training and torch.is_grad_enabled() and out.dim() >= 3:
            self._feats.append(out)

    def extra_loss(
        self, ctx: TrainContext, inputs: torch.Tensor, outputs: torch.Tensor
    ) -> torch.Tensor | None:
        """``lambda_pcc`` times the mean layer term over the feature maps of this batch."""
        feats, self._feats = self._feats, []
        if not feats or self.lambda_pcc == 0:
            return None
        gen = self.generator
        terms = [pcc_layer_loss(f, self.mode, self.margin, self.max_pixels, gen) for f in feats]
        loss = torch.stack(terms).mean()
        self.last = float(loss.detach())
        return self.lambda_pcc * loss

    def on_train_end(self, ctx: TrainContext) -> None:
        """Remove the forward hooks."""
        for h in self._handles:
            h.remove()
        self._handles, self._feats = [], []

    def summary(self) -> dict[str, Any]:
        """Last PCC value and the settings."""
        return {"pcc_last": self.last, "pcc_mode": self.mode, "lambda_pcc": self.lambda_pcc}


_SELECTION_OF_MODE = {
    "adaptive_budget": "global",
    "chip_fixed": "local",
    "uniform_budget": "uniform",
}


@CRITERIA.register("pcc_ci", help="channel independence (CHIP nuclear-norm drop) + PCC loss")
@dataclass(frozen=True)
class PCCCICriterion:
    """Channel Independence of Li et al. 2025 / CHIP (arXiv:2110.13981).

    Importance of channel ``c`` = mean over calibration images of ``||A||_* - ||A^(c)||_*`` on
    the post-activation map ``A`` (C x H*W). ``mode='adaptive_budget'`` selects with one global
    threshold on layer-normalised CI meeting the budget (minimum ``max(8, 0.05 C)`` per
    layer); ``mode='chip_fixed'`` keeps the top ``(1 - s_l) C_l`` per layer given ``sparsity``;
    ``mode='uniform_budget'`` [R] keeps the same fraction of every layer (the largest that meets
    the budget) and CI only ranks channels inside a layer (the adaptive threshold tends to
    prune the last, parameter-heavy layers hardest, which small classifiers feel most).
    """

    mode: str = "adaptive_budget"
    sparsity: tuple[float, ...] = ()
    round_decimals: int | None = None  # CHIP rounds activations to 4 decimals (bit-reproduction)
    min_channels: int = 8
    min_fraction: float = 0.05
    lambda_pcc: float = 0.1
    pcc_mode: str = "decorrelate"
    pcc_margin: float = 0.1
    pcc_max_pixels: int = 1024
    name: ClassVar[str] = "pcc_ci"
    granularity: ClassVar[Granularity] = Granularity.CHANNEL
    needs_grad: ClassVar[bool] = False
    needs_data: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.mode not in _SELECTION_OF_MODE:
            known = ", ".join(repr(m) for m in _SELECTION_OF_MODE)
            msg = f"pcc_ci mode {self.mode!r} unknown; expected one of {known}"
            raise ConfigError(msg)
        if self.pcc_mode not in PCC_MODES:
            msg = f"pcc_mode {self.pcc_mode!r} is unknown; expected one of: {', '.join(PCC_MODES)}"
            raise ConfigError(msg)

    @property
    def selection(self) -> str:
        """Engine selection implied by ``mode``."""
        return _SELECTION_OF_MODE[self.mode]

    def score(self, inp: ScoreInput) -> torch.Tensor:
        """Mean CI per channel over the calibration images."""
        if inp.features is None:
            msg = f"pcc_ci needs feature maps of layer {inp.name!r}; pass calibration data"
            raise ConfigError(msg)
        a = inp.features.reshape(inp.features.shape[0], inp.features.shape[1], -1).double()
        if self.round_decimals is not None:
            a = torch.round(a, decimals=self.round_decimals)
        return channel_independence(a).mean(dim=0)

    def train_hook(self, layers: tuple[str, ...] = (), seed: int = 0) -> PCCHook:
        """The PCC loss term to add to pre-training with this criterion's settings."""
        return PCCHook(
            self.lambda_pcc, self.pcc_mode, self.pcc_margin, self.pcc_max_pixels, layers, seed
        )
