"""Wide ResNets (Zagoruyko & Komodakis) as benchmarked by CRD: wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2.

Pre-activation blocks (BN-ReLU-conv x2), widths 16 / 16k / 32k / 64k, n = (depth - 4) / 6 blocks per
stage, no dropout, final BN-ReLU -> global average pool -> fc.

Stage taps: in a pre-activation net a stage's raw output is a residual sum with no ReLU, so the
post-activation stage feature is the BN-ReLU that the next consumer applies to it: the `relu1` of the
next stage's first block (and the final `relu` for the last stage). Its ":in" is BN(stage output),
which is the pre-activation feature CRD uses for WRNs.
"""
from __future__ import annotations

from torch import nn

from .cnn import init_weights, set_taps
from .registry import register_model


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.equal_in_out = cin == cout and stride == 1
        self.shortcut = None if self.equal_in_out else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        a = self.relu1(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(a)
        out = self.conv2(self.relu2(self.bn2(self.conv1(a))))
        return out + shortcut


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen: int, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError("WRN depth must be 6n + 4")
        n = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        cin = widths[0]
        for i, (cout, stride) in enumerate(zip(widths[1:], (1, 2, 2))):
            self.add_module(f"block{i + 1}", nn.Sequential(
                *[PreActBlock(cin if j == 0 else cout, cout, stride if j == 0 else 1) for j in range(n)]))
            cin = cout
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=False)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(cin, num_classes)
        init_weights(self)
        stages = ["block1.0.relu1", "block2.0.relu1", "block3.0.relu1", "relu"]
        set_taps(self, stages, [s + ":in" for s in stages], "flatten", "fc")

    def forward(self, x):
        x = self.conv1(x)
        x = self.block3(self.block2(self.block1(x)))
        x = self.relu(self.bn1(x))
        return self.fc(self.flatten(self.avgpool(x)))


def _register(depth: int, widen: int):
    name = f"wrn_{depth}_{widen}"

    @register_model(name, family="wrn", description=f"Wide ResNet-{depth}-{widen} (CRD benchmark)")
    def builder(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
        return WideResNet(depth, widen, num_classes=num_classes, in_channels=in_channels)
    builder.__name__ = name
    return builder


for _d, _k in ((16, 1), (16, 2), (40, 1), (40, 2)):
    _register(_d, _k)
