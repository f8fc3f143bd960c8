"""Small models in the styles people bring (ResNet, MobileNetV2, ShuffleNet, SqueezeNet, MnasNet)
and a Conv3d clip net, written here so the export tests depend on no zoo."""

import torch
import torch.nn as nn
import torch.nn.functional as F


def cbr(i, o, k=3, s=1, g=1, act=nn.ReLU):
    return nn.Sequential(
        nn.Conv2d(i, o, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(o), act()
    )


class ResNetStyle(nn.Module):
    input_shape = (3, 32, 32)

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 7, 2, 3, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
        )
        self.b1 = nn.Sequential(cbr(8, 8), nn.Conv2d(8, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8))
        self.down = nn.Sequential(nn.Conv2d(8, 16, 1, 2, bias=False), nn.BatchNorm2d(16))
        self.b2 = nn.Sequential(
            cbr(8, 16, s=2), nn.Conv2d(16, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
        )
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(x + self.b1(x))
        x = F.relu(self.down(x) + self.b2(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class InvRes(nn.Module):
    def __init__(self, i, o, s, e, k=3, act=nn.ReLU6):
        super().__init__()
        h = i * e
        self.use = s == 1 and i == o
        self.b = nn.Sequential(
            cbr(i, h, 1, act=act),
            cbr(h, h, k, s, g=h, act=act),
            nn.Conv2d(h, o, 1, bias=False),
            nn.BatchNorm2d(o),
        )

    def forward(self, x):
        return x + self.b(x) if self.use else self.b(x)


class MobileNetV2Style(nn.Module):
    input_shape = (3, 32, 32)

    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(
            cbr(3, 8, s=2, act=nn.ReLU6),
            InvRes(8, 8, 1, 1),
            InvRes(8, 12, 2, 4),
            InvRes(12, 12, 1, 4),
            cbr(12, 32, 1, act=nn.ReLU6),
        )
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.f(x), 1).flatten(1))


def channel_shuffle(x, g):
    b, c, h, w = x.shape
    return x.view(b, g, c // g, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, c):
        super().__init__()
        h = c // 2
        self.b = nn.Sequential(
            cbr(h, h, 1),
            nn.Conv2d(h, h, 3, 1, 1, groups=h, bias=False),
            nn.BatchNorm2d(h),
            cbr(h, h, 1),
        )

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat([a, self.b(b)], 1), 2)


class ShuffleNetStyle(nn.Module):
    input_shape = (3, 32, 32)

    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 16, s=2)
        self.u1 = ShuffleUnit(16)
        self.u2 = ShuffleUnit(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.u2(self.u1(self.stem(x))), 1).flatten(1))


class Fire(nn.Module):
    def __init__(self, i, s, e):
        super().__init__()
        self.sq = nn.Sequential(nn.Conv2d(i, s, 1), nn.ReLU())
        self.e1 = nn.Sequential(nn.Conv2d(s, e, 1), nn.ReLU())
        self.e3 = nn.Sequential(nn.Conv2d(s, e, 3, padding=1), nn.ReLU())

    def forward(self, x):
        x = self.sq(x)
        return torch.cat([self.e1(x), self.e3(x)], 1)


class SqueezeNetStyle(nn.Module):
    input_shape = (3, 32, 32)

    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(16, 4, 8),
            Fire(16, 4, 8),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(16, 8, 16),
        )
        self.cls = nn.Sequential(
            nn.Dropout(0.5), nn.Conv2d(32, 10, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1)
        )

    def forward(self, x):
        return torch.flatten(self.cls(self.f(x)), 1)


class SE(nn.Module):
    def __init__(self, c, r=4):
        super().__init__()
        self.f = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(c, c // r, 1),
            nn.ReLU(),
            nn.Conv2d(c // r, c, 1),
            nn.Hardsigmoid(),
        )

    def forward(self, x):
        return x * self.f(x)


class MnasNetStyle(nn.Module):
    input_shape = (3, 32, 32)

    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(
            cbr(3, 8, s=2),
            cbr(8, 8, g=8),
            nn.Conv2d(8, 8, 1, bias=False),
            nn.BatchNorm2d(8),
            InvRes(8, 12, 2, 3, k=5, act=nn.ReLU),
            InvRes(12, 12, 1, 3, k=5, act=nn.ReLU),
            SE(12),
            cbr(12, 24, 1),
        )
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.f(x), 1).flatten(1))


class Conv3dNet(nn.Module):
    """A tiny 3-D clip net.

    Conv3d + BN + ReLU, 3-D max-pool, temporal Conv3d, 3-D avg-pool, Linear.
    """

    input_shape = (3, 4, 8, 8)

    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(
            nn.Conv3d(3, 4, 3, padding=1),
            nn.BatchNorm3d(4),
            nn.ReLU(),
            nn.MaxPool3d((1, 2, 2)),
            nn.Conv3d(4, 4, (3, 1, 1), padding=(1, 0, 0)),
            nn.ReLU(),
            nn.AvgPool3d(2),
        )
        self.fc = nn.Linear(4 * 2 * 2 * 2, 4)

    def forward(self, x):
        return self.fc(self.f(x).flatten(1))


STYLES = {
    "resnet": ResNetStyle,
    "mobilenetv2": MobileNetV2Style,
    "shufflenet": ShuffleNetStyle,
    "squeezenet": SqueezeNetStyle,
    "mnasnet": MnasNetStyle,
}


def build(name: str) -> nn.Module:
    """A seeded, eval-mode instance of a style model."""
    torch.manual_seed(0)
    return STYLES[name]().eval()


def build_conv3d() -> nn.Module:
    torch.manual_seed(0)
    return Conv3dNet().eval()
