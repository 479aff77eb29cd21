"""CIFAR ShuffleNet V2 (1x) as benchmarked by CRD ("ShuffleV2").

Stem conv1x1 to 24 channels (no downsampling) -> three stages, each a stride-2 down block followed
by 3/7/3 basic blocks, widths 116/232/464 -> conv1x1 to 1024 -> global average pool -> linear.

A basic block splits channels in half, transforms one half and concatenates. Its ReLU is applied
once, by `out_act`, to the shuffled concatenation: the untouched half is already non-negative
(it comes out of a ReLU), so this equals the usual per-branch ReLU, and `out_act:in` is the
pre-activation stage feature (CRD's preact, in the same channel order as the stage output).
"""
from __future__ import annotations

import torch
from torch import nn

from .cnn import init_weights, set_taps
from .registry import register_model
from .shufflenetv1 import ChannelShuffle


class DownBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        mid = cout // 2
        # left: dw3x3 s2 -> 1x1
        self.conv1 = nn.Conv2d(cin, cin, 3, 2, 1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv2 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        # right: 1x1 -> dw3x3 s2 -> 1x1
        self.conv3 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.relu3 = nn.ReLU(inplace=False)
        self.conv4 = nn.Conv2d(mid, mid, 3, 2, 1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)
        self.shuffle = ChannelShuffle(2)
        self.out_act = nn.ReLU(inplace=False)  # = the ReLUs after bn2 and bn5, applied once

    def forward(self, x):
        left = self.bn2(self.conv2(self.bn1(self.conv1(x))))
        right = self.bn4(self.conv4(self.relu3(self.bn3(self.conv3(x)))))
        right = self.bn5(self.conv5(right))
        return self.out_act(self.shuffle(torch.cat([left, right], 1)))


class BasicBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        c = channels // 2
        self.split = c
        self.conv1 = nn.Conv2d(c, c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)
        self.shuffle = ChannelShuffle(2)
        self.out_act = nn.ReLU(inplace=False)

    def forward(self, x):
        x1, x2 = x[:, :self.split], x[:, self.split:]
        out = self.bn3(self.conv3(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x2)))))))
        return self.out_act(self.shuffle(torch.cat([x1, out], 1)))


class ShuffleNetV2(nn.Module):
    def __init__(self, widths=(116, 232, 464, 1024), num_blocks=(3, 7, 3), num_classes: int = 10,
                 in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.relu = nn.ReLU(inplace=False)
        cin = 24
        for i, (cout, n) in enumerate(zip(widths[:3], num_blocks)):
            self.add_module(f"layer{i + 1}", nn.Sequential(DownBlock(cin, cout), *[BasicBlock(cout) for _ in range(n)]))
            cin = cout
        self.conv2 = nn.Conv2d(cin, widths[3], 1, bias=False)
        self.bn2 = nn.BatchNorm2d(widths[3])
        self.relu2 = nn.ReLU(inplace=False)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(widths[3], num_classes)
        init_weights(self)
        set_taps(self,
                 ["relu", "layer1", "layer2", "layer3"],
                 ["relu:in"] + [f"layer{i + 1}.{num_blocks[i]}.out_act:in" for i in range(3)],
                 "flatten", "fc")

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.fc(self.flatten(self.avgpool(x)))


@register_model("ShuffleV2", family="shufflenet",
                description="CIFAR ShuffleNet V2 1x, 116/232/464/1024 (CRD 'ShuffleV2')")
def shufflev2(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    return ShuffleNetV2(num_classes=num_classes, in_channels=in_channels)
