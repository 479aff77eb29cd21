"""Small plain CNNs for 8x8 - 32x32 inputs (the defaults for the 8x8 `digits` dataset).

Three conv-BN-ReLU stages (stride 1, 2, 2), global average pool, linear. Also holds the
helpers every zoo family uses: weight init and the tap-attribute setter.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .registry import register_model


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convs (fan_out, ReLU), unit/zero BN, small-normal linears."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def set_taps(model: nn.Module, stages, preact, embedding: str, classifier: str) -> nn.Module:
    """Attach kd_stages / kd_preact / kd_embedding / kd_classifier, checking the names exist."""
    stages, preact = list(stages), list(preact)
    if len(stages) != len(preact):
        raise ValueError(f"{type(model).__name__}: kd_stages and kd_preact differ in length")
    names = {n for n, _ in model.named_modules()}
    for spec in stages + preact + [embedding, classifier]:
        if spec.partition(":")[0] not in names:
            raise ValueError(f"{type(model).__name__}: tap {spec!r} names no module")
    model.kd_stages = stages
    model.kd_preact = preact
    model.kd_embedding = embedding
    model.kd_classifier = classifier
    return model


class ConvBNReLU(nn.Sequential):
    """conv3x3 - BN - ReLU with named children (conv, bn, act); `act` is the tap point."""

    def __init__(self, cin: int, cout: int, stride: int = 1, kernel_size: int = 3):
        super().__init__(OrderedDict(
            conv=nn.Conv2d(cin, cout, kernel_size, stride, kernel_size // 2, bias=False),
            bn=nn.BatchNorm2d(cout),
            act=nn.ReLU(inplace=False),
        ))


class SmallCNN(nn.Module):
    """stage1 (stride 1) -> stage2 (stride 2) -> stage3 (stride 2) -> GAP -> fc."""

    def __init__(self, widths=(16, 32, 64), depth: int = 1, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        cin = in_channels
        for i, w in enumerate(widths):
            layers = [ConvBNReLU(cin if j == 0 else w, w, stride=(1 if i == 0 else 2) if j == 0 else 1)
                      for j in range(depth)]
            self.add_module(f"stage{i + 1}", nn.Sequential(*layers))
            cin = w
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(cin, num_classes)
        init_weights(self)
        n = len(widths)
        set_taps(self,
                 [f"stage{i + 1}" for i in range(n)],
                 [f"stage{i + 1}.{depth - 1}.act:in" for i in range(n)],
                 "flatten", "fc")

    def forward(self, x):
        x = self.stage1(x)
        x = self.stage2(x)
        x = self.stage3(x)
        return self.fc(self.flatten(self.avgpool(x)))


_CNN_CONFIGS = {
    # name: (widths, convs per stage, description)
    "cnn_tiny": ((10, 20, 40), 1, "plain CNN, 3 stages x1 conv, widths 10/20/40 (~10k params)"),
    "cnn_small": ((24, 48, 96), 1, "plain CNN, 3 stages x1 conv, widths 24/48/96 (~50k params)"),
    "cnn_medium": ((26, 52, 104), 2, "plain CNN, 3 stages x2 conv, widths 26/52/104 (~200k params)"),
    "cnn_large": ((54, 108, 216), 2, "plain CNN, 3 stages x2 conv, widths 54/108/216 (~800k params)"),
}


def _make_cnn_builder(widths, depth):
    def builder(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
        return SmallCNN(widths, depth, num_classes=num_classes, in_channels=in_channels)
    return builder


for _name, (_widths, _depth, _desc) in _CNN_CONFIGS.items():
    register_model(_name, family="cnn", description=_desc)(_make_cnn_builder(_widths, _depth))
