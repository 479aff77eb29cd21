"""CIFAR VGGs with BN as benchmarked by CRD: vgg8, vgg11, vgg13.

Five conv blocks; 2x2 max-pool after blocks 0, 1, 2 (and after block 3 only for inputs >= 64 px,
as in CRD), global average pool, single linear classifier on 512 features. Pools use ceil_mode so
that tiny inputs (8x8) shrink to 1x1 and stay there instead of failing.
"""
from __future__ import annotations

from torch import nn

from .cnn import ConvBNReLU, init_weights, set_taps
from .registry import register_model

_CFGS = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
}


class VGG(nn.Module):
    def __init__(self, cfg, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        cin = in_channels
        for i, block in enumerate(cfg):
            layers = []
            for w in block:
                layers.append(ConvBNReLU(cin, w))
                cin = w
            self.add_module(f"block{i}", nn.Sequential(*layers))
        for i in range(4):
            self.add_module(f"pool{i}", nn.MaxPool2d(2, 2, ceil_mode=True))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(cin, num_classes)
        init_weights(self)
        n = len(cfg)
        set_taps(self,
                 [f"block{i}" for i in range(n)],
                 [f"block{i}.{len(cfg[i]) - 1}.act:in" for i in range(n)],
                 "flatten", "classifier")

    def forward(self, x):
        big = x.shape[-2] >= 64
        x = self.pool0(self.block0(x))
        x = self.pool1(self.block1(x))
        x = self.pool2(self.block2(x))
        x = self.block3(x)
        if big:
            x = self.pool3(x)
        x = self.block4(x)
        return self.classifier(self.flatten(self.avgpool(x)))


def _register(name: str):
    cfg = _CFGS[name]
    n_conv = sum(map(len, cfg))

    @register_model(name, family="vgg", description=f"CIFAR VGG with BN, {n_conv} convs + 1 linear (CRD benchmark)")
    def builder(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
        return VGG(cfg, num_classes=num_classes, in_channels=in_channels)
    builder.__name__ = name
    return builder


for _name in _CFGS:
    _register(_name)
