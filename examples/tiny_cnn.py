"""A zoo-independent example model for `tinyprune export` (used by the README and the tests).

tinyprune export examples/tiny_cnn.py:build --calib calib.npy --target cortex-m4 --out run
"""

import torch
from torch import nn


class TinyCNN(nn.Module):
    """Conv-BN-ReLU x3 with a padded max-pool after ReLU (the ResNet stem pattern), GAP, Linear."""

    input_shape = (1, 16, 16)

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
            nn.Conv2d(8, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build(num_classes: int = 10) -> TinyCNN:
    """Seeded factory: the same weights on every call."""
    torch.manual_seed(0)
    model = TinyCNN(num_classes)
    with torch.no_grad():  # non-trivial BN statistics so that folding is exercised
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()
