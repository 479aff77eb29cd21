"""CIFAR ShuffleNet V1 (groups 3) as benchmarked by CRD ("ShuffleV1").

Stem conv1x1 to 24 channels (no downsampling) -> three stages of 4/8/4 bottlenecks with outputs
240/480/960; each stage opens with a stride-2 block whose output concatenates the branch with a
3x3 average-pooled shortcut -> global average pool -> linear. Every block ends in one `out_act`
ReLU applied to the sum (or concatenation), the stage's pre-activation tap point.
"""
from __future__ import annotations

from torch import nn
import torch

from .cnn import init_weights, set_taps
from .registry import register_model


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        if self.groups == 1:
            return x
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleV1Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, groups: int, first_group: bool = False):
        super().__init__()
        self.stride = stride
        branch_out = cout - cin if stride == 2 else cout  # stride-2 blocks concatenate the shortcut
        mid = branch_out // 4
        g1 = 1 if first_group else groups  # the first pointwise conv of the net sees only 24 channels
        self.conv1 = nn.Conv2d(cin, mid, 1, groups=g1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.relu1 = nn.ReLU(inplace=False)
        self.shuffle = ChannelShuffle(g1)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.relu2 = nn.ReLU(inplace=False)
        self.conv3 = nn.Conv2d(mid, branch_out, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(branch_out)
        self.shortcut = nn.AvgPool2d(3, 2, 1) if stride == 2 else None
        self.out_act = nn.ReLU(inplace=False)

    def forward(self, x):
        out = self.shuffle(self.relu1(self.bn1(self.conv1(x))))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.shortcut is not None:
            out = torch.cat([out, self.shortcut(x)], 1)
        else:
            out = out + x
        return self.out_act(out)


class ShuffleNetV1(nn.Module):
    def __init__(self, out_planes=(240, 480, 960), num_blocks=(4, 8, 4), groups: int = 3,
                 num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.relu = nn.ReLU(inplace=False)
        cin = 24
        for i, (cout, n) in enumerate(zip(out_planes, num_blocks)):
            blocks = []
            for j in range(n):
                blocks.append(ShuffleV1Block(cin, cout, 2 if j == 0 else 1, groups,
                                             first_group=(i == 0 and j == 0)))
                cin = cout
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(cin, num_classes)
        init_weights(self)
        set_taps(self,
                 ["relu", "layer1", "layer2", "layer3"],
                 ["relu:in"] + [f"layer{i + 1}.{num_blocks[i] - 1}.out_act:in" for i in range(3)],
                 "flatten", "fc")

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))


@register_model("ShuffleV1", family="shufflenet",
                description="CIFAR ShuffleNet V1, groups 3, 240/480/960 (CRD 'ShuffleV1')")
def shufflev1(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    return ShuffleNetV1(num_classes=num_classes, in_channels=in_channels)
