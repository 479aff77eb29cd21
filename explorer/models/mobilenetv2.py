"""CIFAR MobileNetV2 as benchmarked by CRD ("MobileNetV2" there = expansion 6, width 0.5).

Stem conv3x3 stride 2 -> seven inverted-residual groups (t, c, n, s):
(1,16,1,1) (6,24,2,1) (6,32,3,2) (6,64,4,2) (6,96,3,1) (6,160,3,2) (6,320,1,1), channels scaled by
the width multiplier -> 1x1 conv to 1280 -> global average pool -> linear. Every block has a 1x1
expansion conv (also at t=1) and a linear (no ReLU) projection, as in CRD.

Stage taps follow CRD's feature list: stem, after groups 1, 2, 4, 6. Groups end in a linear
bottleneck, so their pre-activation spec equals the stage spec.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .cnn import init_weights, set_taps
from .registry import register_model

_SETTING = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
            (6, 320, 1, 1)]


def _conv_bn_relu(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        bn=nn.BatchNorm2d(cout),
        act=nn.ReLU(inplace=False)))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.conv = nn.Sequential(OrderedDict(
            expand=_conv_bn_relu(cin, hidden, 1),
            dw=_conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
            project=nn.Conv2d(hidden, cout, 1, bias=False),
            bn=nn.BatchNorm2d(cout)))

    def forward(self, x):
        out = self.conv(x)
        return x + out if self.use_res else out


class MobileNetV2(nn.Module):
    def __init__(self, expand: int = 6, width: float = 0.5, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        cin = int(32 * width)
        self.conv1 = _conv_bn_relu(in_channels, cin, 3, stride=2)
        self.blocks = nn.ModuleList()
        for t, c, n, s in _SETTING:
            cout = int(c * width)
            layers = []
            for j in range(n):
                layers.append(InvertedResidual(cin, cout, s if j == 0 else 1, expand if t != 1 else 1))
                cin = cout
            self.blocks.append(nn.Sequential(*layers))
        last = 1280 if width <= 1.0 else int(1280 * width)
        self.conv2 = _conv_bn_relu(cin, last, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(last, num_classes)
        init_weights(self)
        stages = ["conv1", "blocks.1", "blocks.2", "blocks.4", "blocks.6"]
        set_taps(self, stages, ["conv1.act:in"] + stages[1:], "flatten", "classifier")

    def forward(self, x):
        x = self.conv1(x)
        for block in self.blocks:
            x = block(x)
        x = self.conv2(x)
        return self.classifier(self.flatten(self.avgpool(x)))


@register_model("MobileNetV2", family="mobilenet",
                description="CIFAR MobileNetV2, expansion 6, width 0.5 (CRD 'MobileNetV2')")
def mobilenetv2(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    return MobileNetV2(6, 0.5, num_classes=num_classes, in_channels=in_channels)
