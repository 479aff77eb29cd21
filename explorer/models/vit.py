"""Small vision transformers (ViT, Dosovitskiy et al. ICLR 2021; DeiT, Touvron et al. ICML 2021) for the bundled data.

Pre-norm blocks (x + attn(LN(x)), x + MLP(LN(x))), a class token and learnt positional embeddings, attention
computed explicitly -- softmax(QK^T / sqrt(d_head)) -- so every block's probabilities pass through an
`nn.Identity` (`blocks.i.attn.probs`, (B, heads, N, N)) and its values through another (`blocks.i.attn.values`,
(B, heads, N, d_head)), where forward hooks read them (models/taps.py). The block outputs are the stages: token
tensors (B, N, C), which the taps lay out as (B, C, h, w) maps of the patch tokens (`kd_prefix_tokens`).

A distillation token (DeiT): the `deit_*` models (or `model.enable_distillation_token()`) add a second prefix
token and its own head `head_dist`. In train mode forward returns the class head's logits and the distillation
head's output is read through a tap on `head_dist` (the `deit` scheme does); in eval mode forward returns the
average of the two heads, as DeiT predicts at test time. Inputs of another size than the model was built for
are padded to a multiple of the patch and the patch positional embeddings interpolated (bicubic, as timm does).
Each model's positional grid is fixed by its name, like timm's `_224` models (patch 2: a 4x4 grid, native to 8x8
digits; patch 4: 8x8, native to 32x32 images), so its parameter count does not depend on the dataset.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .cnn import set_taps
from .registry import register_model


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not a multiple of {heads} heads")
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.probs = nn.Identity()    # tap: softmax attention (B, heads, N, N)
        self.values = nn.Identity()   # tap: values (B, heads, N, d_head)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = self.probs(((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1))
        v = self.values(v)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _trunc_normal(t: torch.Tensor) -> torch.Tensor:
    return nn.init.trunc_normal_(t, std=0.02)


class VisionTransformer(nn.Module):
    """patch embedding -> [class (+ distillation) token, patches] + positions -> blocks -> LN -> head(s)."""

    def __init__(self, dim: int, depth: int, heads: int, patch: int, mlp_ratio: float = 2.0, num_classes: int = 10,
                 in_channels: int = 3, grid: int = 4, distilled: bool = False):
        super().__init__()
        self.patch, self.dim = patch, dim
        self.grid = grid   # the native grid the positional embeddings are learnt on (other sizes: interpolated)
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(_trunc_normal(torch.zeros(1, 1, dim)))
        self.pos_embed = nn.Parameter(_trunc_normal(torch.zeros(1, 1 + self.grid ** 2, dim)))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pre_logits = nn.Identity()   # tap: the final-norm class token (B, D), the embedding
        self.head = nn.Linear(dim, num_classes)
        self.dist_token = self.head_dist = None
        self.kd_prefix_tokens = 1
        # linears keep PyTorch's default init (uniform, 1/sqrt(fan_in)): with timm's std-0.02 truncated normal
        # the class token gathers almost nothing from the patches at first and a few hundred steps on the
        # bundled data (the budget here) get nowhere (measured: chance accuracy after 10 digits epochs)
        for m in self.modules():
            if isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        set_taps(self, [f"blocks.{i}" for i in range(depth)], [f"blocks.{i}" for i in range(depth)],
                 "pre_logits", "head")
        self.kd_attention = [f"blocks.{i}.attn.probs" for i in range(depth)]
        self.kd_values = [f"blocks.{i}.attn.values" for i in range(depth)]
        if distilled:
            self.enable_distillation_token()

    @property
    def distilled(self) -> bool:
        return self.dist_token is not None

    def enable_distillation_token(self) -> "VisionTransformer":
        """Add DeiT's distillation token (after the class token, with its own position) and its head `head_dist`;
        the model's other weights are kept. Idempotent."""
        if self.distilled:
            return self
        ref = self.pos_embed
        self.dist_token = nn.Parameter(_trunc_normal(torch.zeros(1, 1, self.dim, device=ref.device, dtype=ref.dtype)))
        new_pos = _trunc_normal(torch.zeros(1, 1, self.dim, device=ref.device, dtype=ref.dtype))
        self.pos_embed = nn.Parameter(torch.cat([ref.data[:, :1], new_pos, ref.data[:, 1:]], dim=1))
        self.head_dist = nn.Linear(self.dim, self.head.out_features).to(ref.device, ref.dtype)
        _trunc_normal(self.head_dist.weight)
        nn.init.zeros_(self.head_dist.bias)
        self.kd_prefix_tokens = 2
        self.kd_distillation_head = "head_dist"
        return self

    def _positions(self, side: int) -> torch.Tensor:
        """The positional embeddings for a side x side grid: the patch part interpolated if the grid differs."""
        p = self.kd_prefix_tokens
        if side == self.grid:
            return self.pos_embed
        grid = self.pos_embed[:, p:].reshape(1, self.grid, self.grid, self.dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(side, side), mode="bicubic", align_corners=False)
        return torch.cat([self.pos_embed[:, :p], grid.flatten(2).transpose(1, 2)], dim=1)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> the final-norm tokens (B, prefix + h*w, D)."""
        h, w = x.shape[-2:]
        side = max(math.ceil(h / self.patch), math.ceil(w / self.patch))
        x = F.pad(x, (0, side * self.patch - w, 0, side * self.patch - h))
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        prefix = [self.cls_token.expand(x.shape[0], -1, -1)]
        if self.distilled:
            prefix.append(self.dist_token.expand(x.shape[0], -1, -1))
        x = torch.cat(prefix + [x], dim=1) + self._positions(side)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, x):
        tokens = self.forward_tokens(x)
        logits = self.head(self.pre_logits(tokens[:, 0]))
        if not self.distilled:
            return logits
        dist = self.head_dist(tokens[:, 1])   # read through a tap on head_dist while training
        return logits if self.training else (logits + dist) / 2


# name: (width, depth, heads, patch, mlp ratio, distilled, description); every one has 4 blocks (4 stages)
_VIT_CONFIGS = {
    "vit_tiny_p2": (32, 4, 2, 2, 2.0, False, "ViT, patch 2 (8x8 digits: 16 tokens), width 32, 4 blocks x 2 heads"),
    "vit_small_p2": (64, 4, 4, 2, 4.0, False, "ViT, patch 2, width 64, 4 blocks x 4 heads (teacher size)"),
    "vit_tiny_p4": (32, 4, 2, 4, 2.0, False, "ViT, patch 4 (32x32 shapes/CIFAR: 64 tokens), width 32, 4 blocks"),
    "vit_small_p4": (64, 4, 4, 4, 4.0, False, "ViT, patch 4, width 64, 4 blocks x 4 heads (teacher size)"),
    "deit_tiny_p2": (32, 4, 2, 2, 2.0, True, "vit_tiny_p2 with DeiT's distillation token and head (scheme deit)"),
    "deit_tiny_p4": (32, 4, 2, 4, 2.0, True, "vit_tiny_p4 with DeiT's distillation token and head (scheme deit)"),
}


_NATIVE = {2: 4, 4: 8}   # patch -> the positional grid: 8x8 digits at patch 2, 32x32 images at patch 4


def _make_vit_builder(dim, depth, heads, patch, ratio, distilled):
    def builder(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
        return VisionTransformer(dim, depth, heads, patch, ratio, num_classes, in_channels, _NATIVE[patch], distilled)
    return builder


for _name, (*_cfg, _desc) in _VIT_CONFIGS.items():
    register_model(_name, family="vit", description=_desc)(_make_vit_builder(*_cfg))
