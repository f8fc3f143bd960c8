"""ResNets: the CIFAR family (He et al., 2016, §4.2) and ImageNet ResNet-50.

ResNet-20/56 are the CIFAR-10 baselines of the channel-pruning literature (HRank, CHIP).
Shortcuts: option "B" (default) projects with a 1x1 conv + BN when the shape changes, which
keeps every tensor a conv output that channel surgery can follow; option "A" is He et al.'s
parameter-free shortcut (stride-2 subsampling + zero channel padding), as HRank/CHIP use;
its params/MACs are slightly lower. ResNet-50 is the torchvision layout (stride in the 3x3
conv, "v1.5"), here for complexity checks only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tinyprune.errors import ConfigError
from tinyprune.models.registry import register_model


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
    ]


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by ``stride`` and zero-pad the channels to ``cout``."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride, self.extra = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Subsample and pad channels symmetrically."""
        x = x[:, :, :: self.stride, :: self.stride]
        half = self.extra // 2
        return F.pad(x, (0, 0, 0, 0, half, self.extra - half))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection."""

    def __init__(self, cin: int, cout: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, cout, 3, stride)
        self.conv2, self.bn2 = _conv_bn(cout, cout, 3)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            if shortcut == "A":
                self.shortcut = PadShortcut(cin, cout, stride)
            else:
                self.shortcut = nn.Sequential(*_conv_bn(cin, cout, 1, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block forward."""
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs: 3 stages of ``n`` basic blocks, widths w, 2w, 4w."""

    def __init__(
        self,
        depth: int,
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 16,
        shortcut: str = "B",
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            msg = f"CIFAR ResNet depth={depth} must be 6n+2 (8, 14, 20, 32, 44, 56, 110, ...)"
            raise ConfigError(msg)
        if shortcut not in ("A", "B"):
            msg = f"shortcut={shortcut!r} must be 'A' (zero-pad) or 'B' (1x1 conv)"
            raise ConfigError(msg)
        n = (depth - 2) // 6
        self.stem = nn.Sequential(*_conv_bn(in_channels, width, 3), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        cin = width
        for stage, cout in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(BasicBlock(cin, cout, stride, shortcut))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)``."""
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand x4, with a projection shortcut when needed."""

    def __init__(self, cin: int, mid: int, stride: int) -> None:
        super().__init__()
        cout = 4 * mid
        self.body = nn.Sequential(
            *_conv_bn(cin, mid, 1),
            nn.ReLU(inplace=True),
            *_conv_bn(mid, mid, 3, stride),
            nn.ReLU(inplace=True),
            *_conv_bn(mid, cout, 1),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(*_conv_bn(cin, cout, 1, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual bottleneck forward."""
        return F.relu(self.body(x) + self.shortcut(x))


class ResNet50(nn.Module):
    """ResNet-50 (torchvision layout): 7x7 stem, max-pool, [3, 4, 6, 3] bottlenecks."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        blocks: list[nn.Module] = []
        cin = 64
        for stage, (mid, n) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3))):
            for i in range(n):
                blocks.append(Bottleneck(cin, mid, 2 if stage > 0 and i == 0 else 1))
                cin = 4 * mid
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)``."""
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


def _cifar(
    depth: int, num_classes: int, in_channels: int, input_size: int, width: int, shortcut: str
) -> nn.Module:
    if input_size < 4:
        msg = f"input_size={input_size} must be >= 4 (two stride-2 stages)"
        raise ConfigError(msg)
    model = CifarResNet(depth, num_classes, in_channels, width, shortcut)
    model.input_shape = (in_channels, input_size, input_size)
    return model


@register_model("resnet20", task="classification", input_shape=(3, 32, 32), tflm_native=True)
def resnet20(
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    width: int = 16,
    shortcut: str = "B",
) -> nn.Module:
    """ResNet-20 for CIFAR-10 (option-B shortcuts by default).

    At defaults: 272,474 params, 40.81 M MACs; option A: 269,722 params, 40.55 M MACs.
    """
    return _cifar(20, num_classes, in_channels, input_size, width, shortcut)


@register_model("resnet56", task="classification", input_shape=(3, 32, 32), tflm_native=True)
def resnet56(
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    width: int = 16,
    shortcut: str = "B",
) -> nn.Module:
    """ResNet-56 for CIFAR-10 (option-B shortcuts by default; HRank/CHIP use option A).

    At defaults: 855,770 params, 125.75 M MACs; option A: 853,018 params, 125.49 M MACs.
    """
    return _cifar(56, num_classes, in_channels, input_size, width, shortcut)


@register_model("resnet50", task="classification", input_shape=(3, 224, 224), tflm_native=True)
def resnet50(num_classes: int = 1000, in_channels: int = 3, input_size: int = 224) -> nn.Module:
    """ResNet-50 for ImageNet (torchvision layout), for complexity checks only.

    At defaults: 25,557,032 params, 4.09 G MACs (4,089,184,256).
    """
    if input_size < 32:
        msg = f"input_size={input_size} must be >= 32 (five stride-2 stages)"
        raise ConfigError(msg)
    model = ResNet50(num_classes, in_channels)
    model.input_shape = (in_channels, input_size, input_size)
    return model


@register_model("test_resnet", task="classification", input_shape=(3, 16, 16), tflm_native=True)
def test_resnet(num_classes: int = 10, input_size: int = 16, shortcut: str = "B") -> nn.Module:
    """Tiny ResNet-8 (width 4) for tests."""
    model = CifarResNet(8, num_classes, 3, width=4, shortcut=shortcut)
    model.input_shape = (3, input_size, input_size)
    return model
