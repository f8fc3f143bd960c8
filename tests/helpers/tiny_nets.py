"""Tiny hand-written models and the masked-vs-pruned equivalence helper (docs/methods.md §1.4).

Each model names, in ``ZERO_POINTS``, the activation modules whose outputs carry each prunable
group's channels, so the masked original can zero exactly the removed channels.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from tinyprune.pruning.channel_graph import ChannelGraph


def _bn_init_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine so pruning mistakes show up."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=gen) + 0.5
            m.bias.data = torch.randn(n, generator=gen) * 0.2
            m.running_mean = torch.randn(n, generator=gen) * 0.1
            m.running_var = torch.rand(n, generator=gen) + 0.5
    return model.eval()


class PlainCNN(nn.Module):
    """conv-bn-relu x3 -> global pool -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1, self.r1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()
        self.c2, self.b2, self.r2 = nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()
        self.c3, self.b3, self.r3 = nn.Conv2d(16, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU()
        self.fc = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.r1(self.b1(self.c1(x)))
        x = self.r2(self.b2(self.c2(x)))
        x = self.r3(self.b3(self.c3(x)))
        return self.fc(x.mean(dim=(2, 3)))


class ResNetTiny(nn.Module):
    """Stem + two residual blocks sharing the stem width + a widening block with a 1x1 shortcut."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bs, self.rs = nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU()
        self.a1, self.ab1, self.ar1 = nn.Conv2d(12, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()
        self.a2, self.ab2, self.ar2 = nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU()
        self.w1, self.wb1, self.wr1 = nn.Conv2d(12, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()
        self.w2, self.wb2 = nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.sc, self.scb, self.wr2 = nn.Conv2d(12, 16, 1), nn.BatchNorm2d(16), nn.ReLU()
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.rs(self.bs(self.stem(x)))
        x = self.ar2(self.ab2(self.a2(self.ar1(self.ab1(self.a1(x))))) + x)
        h = self.wr1(self.wb1(self.w1(x)))
        x = self.wr2(self.wb2(self.w2(h)) + self.scb(self.sc(x)))
        return self.fc(x.mean(dim=(2, 3)))


class DepthwiseNet(nn.Module):
    """conv -> depthwise -> pointwise -> depthwise -> pointwise -> pool -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1, self.r1 = nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU()
        self.d1, self.db1, self.dr1 = (
            nn.Conv2d(12, 12, 3, padding=1, groups=12),
            nn.BatchNorm2d(12),
            nn.ReLU(),
        )
        self.p1, self.pb1, self.pr1 = nn.Conv2d(12, 16, 1), nn.BatchNorm2d(16), nn.ReLU()
        self.d2, self.db2, self.dr2 = (
            nn.Conv2d(16, 16, 3, padding=1, groups=16),
            nn.BatchNorm2d(16),
            nn.ReLU(),
        )
        self.p2, self.pb2, self.pr2 = nn.Conv2d(16, 8, 1), nn.BatchNorm2d(8), nn.ReLU()
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dr1(self.db1(self.d1(self.r1(self.b1(self.c1(x))))))
        x = self.dr2(self.db2(self.d2(self.pr1(self.pb1(self.p1(x))))))
        x = self.pr2(self.pb2(self.p2(x)))
        return self.fc(x.mean(dim=(2, 3)))


class FlattenNet(nn.Module):
    """Conv -> ReLU -> Conv -> ReLU -> flatten -> Linear -> ReLU -> Linear (no BN)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.r1 = nn.Conv2d(2, 8, 3, padding=1), nn.ReLU()
        self.c2, self.r2 = nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU()
        self.l1, self.r3 = nn.Linear(8 * 4 * 4, 12), nn.ReLU()
        self.l2 = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.r2(self.c2(self.r1(self.c1(x))))
        return self.l2(self.r3(self.l1(x.flatten(1))))


class TransposeNet(nn.Module):
    """Conv -> BN -> ReLU -> ConvTranspose (x2 upsampling) -> BN -> ReLU -> 1x1 conv head."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1, self.r1 = nn.Conv2d(2, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()
        self.t1, self.tb1, self.tr1 = (
            nn.ConvTranspose2d(8, 8, (4, 1), stride=(2, 1), padding=(1, 0)),
            nn.BatchNorm2d(8),
            nn.ReLU(),
        )
        self.head = nn.Conv2d(8, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.tr1(self.tb1(self.t1(self.r1(self.b1(self.c1(x)))))))


class ConcatNet(nn.Module):
    """Two branches concatenated on channels, then a 3x3 conv (index offsets must shift)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.ab, self.ra = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU()
        self.b, self.bb, self.rb = nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.ReLU()
        self.c, self.cb, self.rc = nn.Conv2d(14, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.cat([self.ra(self.ab(self.a(x))), self.rb(self.bb(self.b(x)))], dim=1)
        return self.fc(self.rc(self.cb(self.c(h))).mean(dim=(2, 3)))


# activation module -> a layer whose group's removed channels are zeroed at that activation
ZERO_POINTS: dict[type[nn.Module], dict[str, str]] = {
    PlainCNN: {"r1": "c1", "r2": "c2", "r3": "c3"},
    ResNetTiny: {"rs": "stem", "ar2": "stem", "ar1": "a1", "wr1": "w1", "wr2": "w2"},
    DepthwiseNet: {"r1": "c1", "dr1": "c1", "pr1": "p1", "dr2": "p1", "pr2": "p2"},
    FlattenNet: {"r1": "c1", "r2": "c2", "r3": "l1"},
    TransposeNet: {"r1": "c1", "tr1": "t1"},
    ConcatNet: {"ra": "a", "rb": "b", "rc": "c"},
}
INPUTS: dict[type[nn.Module], tuple[int, ...]] = {
    PlainCNN: (2, 3, 8, 8),
    ResNetTiny: (2, 3, 8, 8),
    DepthwiseNet: (2, 3, 8, 8),
    FlattenNet: (2, 2, 8, 8),
    TransposeNet: (2, 2, 6, 4),
    ConcatNet: (2, 3, 6, 6),
}
ALL_NETS: tuple[type[nn.Module], ...] = (
    PlainCNN,
    ResNetTiny,
    DepthwiseNet,
    FlattenNet,
    TransposeNet,
    ConcatNet,
)


def make(cls: type[nn.Module], seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """A seeded instance in eval mode and a seeded input batch."""
    torch.manual_seed(seed)
    model = _bn_init_(cls(), seed)
    return model, torch.randn(*INPUTS[cls], generator=torch.Generator().manual_seed(seed + 1))


def masked_forward(
    original: nn.Module, keep_by_layer: Callable[[str], list[int] | None], x: torch.Tensor
) -> torch.Tensor:
    """Output of ``original`` with the removed channels' post-activation outputs zeroed (§1.4)."""
    handles = []
    for act, layer in ZERO_POINTS[type(original)].items():
        kept = keep_by_layer(layer)
        if kept is None:
            continue

        def hook(
            _m: nn.Module, _i: object, out: torch.Tensor, kept: list[int] = kept
        ) -> torch.Tensor:
            mask = torch.zeros(out.shape[1], dtype=out.dtype)
            mask[kept] = 1.0
            return out * mask.view(1, -1, *([1] * (out.dim() - 2)))

        handles.append(original.get_submodule(act).register_forward_hook(hook))
    try:
        with torch.no_grad():
            return original(x)
    finally:
        for h in handles:
            h.remove()


def keep_lookup(
    original: nn.Module, x: torch.Tensor, keep: dict[str, list[int]]
) -> Callable[[str], list[int] | None]:
    """Map a layer name to the kept channels of its group (None when the layer is not pruned)."""
    graph = ChannelGraph(copy.deepcopy(original), x)

    def lookup(layer: str) -> list[int] | None:
        try:
            return keep[graph.group_of(layer).name]
        except Exception:
            return None

    return lookup


def mlp() -> nn.Module:
    """A seeded 4-layer MLP (8 -> 4) for the mask-engine tests."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(8, 32),
        nn.ReLU(),
        nn.Linear(32, 32),
        nn.ReLU(),
        nn.Linear(32, 16),
        nn.ReLU(),
        nn.Linear(16, 4),
    )
