"""CIFAR ResNets as benchmarked by CRD (Tian et al., ICLR 2020): resnet8..110, resnet8x4, resnet32x4.

Stem conv3x3 -> three stages of BasicBlocks (n = (depth - 2) / 6 per stage, strides 1/2/2)
-> global average pool -> fc. Plain widths 16/16/32/64; the "x4" variants use 32/64/128/256.
"""
from __future__ import annotations

from torch import nn

from .cnn import init_weights, set_taps
from .registry import register_model


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        self.out_act = nn.ReLU(inplace=False)  # applied once, to the residual sum

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.out_act(out + identity)


class CifarResNet(nn.Module):
    def __init__(self, depth: int, widths=(16, 16, 32, 64), num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError("CIFAR ResNet depth must be 6n + 2")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=False)
        inplanes = widths[0]
        for i, (planes, stride) in enumerate(zip(widths[1:], (1, 2, 2))):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(inplanes, planes, stride if j == 0 else 1))
                inplanes = planes
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(inplanes, num_classes)
        init_weights(self)
        set_taps(self,
                 ["relu", "layer1", "layer2", "layer3"],
                 ["relu:in"] + [f"layer{i}.{n - 1}.out_act:in" for i in (1, 2, 3)],
                 "flatten", "fc")

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))


def _register(name: str, depth: int, widths):
    desc = f"CIFAR ResNet-{depth}, widths {'/'.join(map(str, widths))} (CRD benchmark)"

    @register_model(name, family="resnet", description=desc)
    def builder(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
        return CifarResNet(depth, widths, num_classes=num_classes, in_channels=in_channels)
    builder.__name__ = name
    return builder


for _depth in (8, 14, 20, 32, 44, 56, 110):
    _register(f"resnet{_depth}", _depth, (16, 16, 32, 64))
for _depth in (8, 32):
    _register(f"resnet{_depth}x4", _depth, (32, 64, 128, 256))
