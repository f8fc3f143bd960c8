"""capture_features follows conv -> [BN] -> [activation] by tensor identity, never by a stale id."""

from __future__ import annotations

import torch
from torch import nn

from tinyprune.pruning.scoring import capture_features


class _NormFirst(nn.Module):
    """A BatchNorm on a temporary that is freed before the conv runs (EfficientPhys's input
    normalisation): the temporary's id() is free for the conv's output to take."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(3)
        self.conv = nn.Conv2d(3, 8, 3)
        self.act = nn.ReLU()
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x - 0.5)
        return self.head(self.act(self.conv(x)))


def test_features_are_the_layers_own_chain_even_when_an_input_id_is_reused() -> None:
    torch.manual_seed(0)
    model = _NormFirst().eval()
    data = [torch.randn(2, 3, 8, 8) for _ in range(3)]
    feats = capture_features(model, ["conv", "head"], data)
    assert feats["conv"].shape == (6, 8, 6, 6)  # not the 3-channel BatchNorm output
    with torch.no_grad():
        want = torch.cat([model.act(model.conv(model.norm(x - 0.5))) for x in data])
    torch.testing.assert_close(feats["conv"], want)
    assert feats["head"].shape == (6, 4, 6, 6)
