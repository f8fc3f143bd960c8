"""Image classifiers: the pruning papers' VGG-16, MobileNetV2, and Cortex-M-sized CNNs.

``vgg16_cifar`` follows the HRank/CHIP layout the channel-pruning literature reports on
(docs/methods.md §3.5). ``mobilenetv2`` is Sandler et al. (2018) with a width multiplier.
``ds_cnn`` (depthwise-separable, after Zhang et al.'s "Hello Edge" DS-CNN) and ``micro_cnn``
are sized for Cortex-M4 class boards. ResNets live in :mod:`tinyprune.models.resnet`.
"""

from __future__ import annotations

import torch
from torch import nn

from tinyprune.errors import ConfigError
from tinyprune.models.registry import register_model

VGG16_CFG: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
)


class VGGCifar(nn.Module):
    """VGG with BN (HRank/CHIP ``vgg_16_bn``): convs, AvgPool2d(2), Linear-BN1d-ReLU-Linear."""

    def __init__(
        self,
        cfg: tuple[int | str, ...] = VGG16_CFG,
        num_classes: int = 10,
        in_channels: int = 3,
        hidden: int = 512,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            cout = int(v)
            layers += [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
            cin = cout
        layers.append(nn.AvgPool2d(2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(cin, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)``."""
        return self.classifier(self.features(x).flatten(1))


def _make_divisible(v: float, divisor: int = 8) -> int:
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _conv_bn_relu6(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> list:
    return [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    ]


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection (+ residual)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers = [] if expand == 1 else _conv_bn_relu6(cin, hidden, 1)
        layers += _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden)
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Block forward."""
        return x + self.body(x) if self.residual else self.body(x)


MBV2_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)  # (expand, channels, repeats, stride)


class MobileNetV2(nn.Module):
    """MobileNetV2 with width multiplier; ``small_input`` keeps 32x32 inputs at 4x4 at the end."""

    def __init__(
        self,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        in_channels: int = 3,
        small_input: bool = False,
        last_channels: int = 1280,
    ) -> None:
        super().__init__()
        cin = _make_divisible(32 * width_mult)
        last = _make_divisible(last_channels * max(1.0, width_mult))
        layers = _conv_bn_relu6(in_channels, cin, 3, 1 if small_input else 2)
        for i, (t, c, n, s) in enumerate(MBV2_SETTINGS):
            cout = _make_divisible(c * width_mult)
            stride = 1 if small_input and i == 1 else s  # CIFAR variant: drop one stride-2
            for j in range(n):
                layers.append(InvertedResidual(cin, cout, stride if j == 0 else 1, t))
                cin = cout
        layers += _conv_bn_relu6(cin, last, 1)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)``."""
        return self.classifier(self.pool(self.features(x)).flatten(1))


class DSCNN(nn.Module):
    """Conv stem (stride 2) + depthwise-separable blocks + global average pool + linear."""

    def __init__(
        self, num_classes: int = 10, in_channels: int = 3, width: int = 64, blocks: int = 4
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, width, 3, 2, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        for _ in range(blocks):
            layers += [
                nn.Conv2d(width, width, 3, 1, 1, groups=width, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)``."""
        return self.fc(self.pool(self.features(x)).flatten(1))


class MicroCNN(nn.Module):
    """Three 3x3 conv-BN-ReLU layers (the last two stride 2), global pool, linear."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 8) -> None:
        super().__init__()
        c = (width, 2 * width, 4 * width)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(c[0]),
            nn.ReLU(),
            nn.Conv2d(c[0], c[1], 3, 2, 1, bias=False),
            nn.BatchNorm2d(c[1]),
            nn.ReLU(),
            nn.Conv2d(c[1], c[2], 3, 2, 1, bias=False),
            nn.BatchNorm2d(c[2]),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c[2], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)``."""
        return self.fc(self.pool(self.features(x)).flatten(1))


def _check_size(input_size: int, minimum: int) -> None:
    if input_size < minimum:
        msg = f"input_size={input_size} is too small for this net; expected >= {minimum}"
        raise ConfigError(msg)


@register_model("vgg16_cifar", task="classification", input_shape=(3, 32, 32), tflm_native=True)
def vgg16_cifar(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """VGG-16-BN for CIFAR-10 in the HRank/CHIP layout (docs/methods.md §3.5); 32x32 input only.

    At defaults: 14,987,722 params incl. BN (14,710,464 conv weights, bias-free convs),
    313.47 M MACs (313.20 M conv + 0.27 M linear).
    """
    model = VGGCifar(VGG16_CFG, num_classes, in_channels)
    model.input_shape = (in_channels, 32, 32)
    return model


@register_model("mobilenetv2", task="classification", input_shape=(3, 224, 224), tflm_native=True)
def mobilenetv2(
    num_classes: int = 1000, width_mult: float = 1.0, in_channels: int = 3, input_size: int = 224
) -> nn.Module:
    """MobileNetV2 (Sandler et al., 2018); inputs <= 64 px use the CIFAR stride pattern.

    At defaults (224x224, width 1.0): 3,504,872 params, 300.77 M MACs.
    """
    _check_size(input_size, 8)
    if width_mult <= 0:
        msg = f"width_mult={width_mult} must be > 0"
        raise ConfigError(msg)
    model = MobileNetV2(num_classes, width_mult, in_channels, small_input=input_size <= 64)
    model.input_shape = (in_channels, input_size, input_size)
    return model


@register_model("ds_cnn", task="classification", input_shape=(3, 32, 32), tflm_native=True)
def ds_cnn(
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    width: int = 64,
    blocks: int = 4,
) -> nn.Module:
    """Depthwise-separable CNN for a Cortex-M4 (CIFAR-10 size by default).

    At defaults (3x32x32, width 64, 4 blocks): 22,218 params, 5.23 M MACs.
    """
    _check_size(input_size, 2)
    model = DSCNN(num_classes, in_channels, width, blocks)
    model.input_shape = (in_channels, input_size, input_size)
    return model


@register_model("micro_cnn", task="classification", input_shape=(1, 8, 8), tflm_native=True)
def micro_cnn(
    num_classes: int = 10, in_channels: int = 1, input_size: int = 8, width: int = 8
) -> nn.Module:
    """Three-conv CNN for 8x8 digits (scikit-learn's load_digits) on a Cortex-M4.

    At defaults (1x8x8, width 8): 6,274 params, 41,792 MACs.
    """
    _check_size(input_size, 4)
    model = MicroCNN(num_classes, in_channels, width)
    model.input_shape = (in_channels, input_size, input_size)
    return model


@register_model("test_vgg", task="classification", input_shape=(3, 16, 16), tflm_native=True)
def test_vgg(num_classes: int = 10) -> nn.Module:
    """Tiny VGG (same layout as vgg16_cifar, 3 pools) for tests; 16x16 input."""
    model = VGGCifar((4, "M", 8, 8, "M", 16, "M", 16), num_classes, 3, hidden=16)
    model.input_shape = (3, 16, 16)
    return model


@register_model(
    "test_mobilenetv2", task="classification", input_shape=(3, 16, 16), tflm_native=True
)
def test_mobilenetv2(num_classes: int = 10) -> nn.Module:
    """Tiny MobileNetV2 (width 0.1, 32 last channels, 16x16 input) for tests."""
    model = MobileNetV2(num_classes, 0.1, 3, small_input=True, last_channels=32)
    model.input_shape = (3, 16, 16)
    return model


@register_model("test_ds_cnn", task="classification", input_shape=(1, 8, 8), tflm_native=True)
def test_ds_cnn(num_classes: int = 10) -> nn.Module:
    """Tiny DS-CNN (width 8, 2 blocks, 1x8x8 input) for tests."""
    return ds_cnn(num_classes=num_classes, in_channels=1, input_size=8, width=8, blocks=2)
