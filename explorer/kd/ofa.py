"""OFA-KD: branches project intermediate student stages into the logit space, each trained with the OFA loss."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import Batch, HParam, Method, Outputs, Paper
from .pairing import pair_stages
from .registry import register_method


def ofa_loss(zs: torch.Tensor, zt: torch.Tensor, y: torch.Tensor, eps: float, temperature: float = 1.0) -> torch.Tensor:
    """The official ofa_loss: -sum_c ((p^t_c + 1[c=y])^eps - 1[c=y]) log p^s_c, batch mean; p = softmax(z / T).
    eps = 1 is KD's cross-entropy with the teacher; eps > 1 enlarges the target class's weight by more the more
    confident the teacher is (the 'adaptive target information enhancement'). No T^2 factor, as the official code."""
    mask = F.one_hot(y, zs.shape[1]).to(zs.dtype)
    p_t = F.softmax(zt / temperature, dim=1)
    weight = (p_t + mask) ** eps - mask
    return -(weight * F.log_softmax(zs / temperature, dim=1)).sum(1).mean()


class SepConv(nn.Module):
    """Depthwise-separable downsampling (stride 2) twice over, conv-BN-ReLU: the official branch block (DARTS')."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.op = nn.Sequential(
            nn.Conv2d(c_in, c_in, 3, 2, 1, groups=c_in, bias=False), nn.Conv2d(c_in, c_in, 1, bias=False),
            nn.BatchNorm2d(c_in), nn.ReLU(),
            nn.Conv2d(c_in, c_in, 3, 1, 1, groups=c_in, bias=False), nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out), nn.ReLU())

    def forward(self, x):
        return self.op(x)


class PatchMerging(nn.Module):
    """Swin's 2x2 patch merging on a (B, C, h, w) token grid: concat the 4 neighbours, LayerNorm, linear."""

    def __init__(self, c_in: int, c_out: int, act: bool):
        super().__init__()
        self.norm = nn.LayerNorm(4 * c_in)
        self.reduction = nn.Linear(4 * c_in, c_out, bias=False)
        self.act = nn.GELU() if act else nn.Identity()

    def forward(self, x):
        x = torch.cat([x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]], 1)
        return self.act(self.reduction(self.norm(x.permute(0, 2, 3, 1)))).permute(0, 3, 1, 2)


class TokenBranch(nn.Module):
    """The official branch of a transformer student: patch merging down to a 7 x 7 grid (none on small grids),
    `depth` pre-norm transformer blocks (4 heads, MLP ratio 4), mean over the patch tokens, linear head."""

    def __init__(self, c_in: int, width: int, grid: int, depth: int, num_classes: int):
        super().__init__()
        merges = max(int(math.log2(grid / 7)), 0) if grid >= 7 else 0
        layers: list[nn.Module] = [PatchMerging(c_in if k == 0 else width, width, act=k == 0 or k != merges - 1)
                                   for k in range(merges)]   # the official acts: GELU, ..., GELU, Identity
        self.merge = nn.Sequential(*layers)
        self.proj = nn.Linear(c_in, width) if merges == 0 and c_in != width else nn.Identity()
        heads = 4 if width % 4 == 0 else 1
        self.blocks = nn.Sequential(*[nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0,
                                                                 activation="gelu", batch_first=True, norm_first=True)
                                      for _ in range(depth)])
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        tokens = self.proj(self.merge(x).flatten(2).transpose(1, 2))
        return self.head(self.blocks(tokens).mean(1))


def conv_branch(c_in: int, width: int, downsamples: int, num_classes: int) -> nn.Sequential:
    """The official branch of a CNN student: `downsamples` SepConvs doubling the channels (the last to `width`),
    or a 1x1 conv to `width` for the last stage; global average pool; linear head."""
    if downsamples > 0:
        blocks, c = [], c_in
        for k in range(downsamples):
            blocks.append(SepConv(c, width if k == downsamples - 1 else 2 * c))
            c *= 2
    else:
        blocks = [nn.Conv2d(c_in, width, 1)]
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(width, num_classes))


def init_branch(module: nn.Module) -> None:
    """The official init_weights: Kaiming-normal convs (fan_out), unit/zero BN, truncated-normal(0.02) linears."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@register_method
class OFA(Method):
    """One-for-all KD: every branch maps a student stage to class logits, trained against the teacher's logits
    with the OFA loss, as is the student's own head; the branches are dropped at test time."""
    key = "ofa"
    name = "OFA-KD (one-for-all, heterogeneous pairs)"
    category = "feature"
    paper = Paper("Zhiwei Hao, Jianyuan Guo, Kai Han, Yehui Tang, Han Hu, Yunhe Wang, Chang Xu", "One-for-All: "
                  "Bridge the Gap Between Heterogeneous Architectures in Knowledge Distillation", 2023, "NeurIPS",
                  "2310.19444")
    equation = (r"\mathcal{L}_{OFA}(z^s, z^t) = -\tfrac1B\sum_i\sum_c\big((p^t_{ic} + \mathbb{1}_{c=y_i})^{\epsilon} - "
                r"\mathbb{1}_{c=y_i}\big)\log p^s_{ic},\ \mathcal{L} = \mathcal{L}_{OFA}(z^s, z^t) + "
                r"\lambda\sum_{k}\mathcal{L}_{OFA}\big(b_k(F^s_k), z^t\big)")
    hparams = (
        HParam("eps", 1.0, 1.0, 3.0, "modulating exponent epsilon of the target class's weight (the official CIFAR-100 "
                                     "command: 1.0, = KD's cross-entropy; their ImageNet CNN students: 1.5)"),
        HParam("temperature", 1.0, 0.5, 10.0, "softmax temperature of both sides (official default 1, no T^2)"),
        HParam("branch_weight", 1.0, 0.0, 10.0, "lambda: weight of the branches' summed losses against the final "
                                                "logits' (official ofa_loss_weight 1)"),
        HParam("branch", "auto", choices=("auto", "conv", "transformer"),
               help="branch design: conv = SepConv downsampling + pool + linear (the official CNN-student branch); "
                    "transformer = patch merging + transformer blocks + linear (the official ViT-student branch); "
                    "auto = transformer for a student that declares kd_prefix_tokens (a ViT), else conv"),
    )
    needs = frozenset({"logits", "stages"})
    default_weight = 1.0
    default_ce_weight = 1.0
    convention = ("official OFA-KD (Hao840/OFAKD distillers/ofa.py, train.py defaults): ofa_loss as their code (soft "
                  "teacher + one-hot, to the power eps, minus one-hot, times log p_s (as log_softmax); batch mean; "
                  "temperature 1, no T^2); branches on "
                  "every student stage (their --ofa-stage 1 2 3 4), each with the same eps; gt, kd and ofa weights 1; "
                  "eps 1.0 as their CIFAR-100 command (ImageNet: 1.5)")
    notes = ("Branches on every student stage after the stem (explicit stage pairs: on their student stages); the "
             "teacher gives only logits, so any teacher works (CNN -> ViT, ViT -> CNN, CNN -> CNN). A conv branch has "
             "as many stride-2 SepConvs (doubling the channels, the last to max(student, teacher embedding width)) as "
             "halvings down to the last stage's resolution (official: 4 - stage, the same on a ResNet), else a 1x1 "
             "conv; a transformer branch has max(last stage - i, 1) blocks (3 at most, as the official 4 - stage) of "
             "the student's width and pools the patch tokens (the token-grid taps carry no class token; the official "
             "branch reads it when present). Their recipe's label smoothing 0.1 is the run's choice, not the method's.")

    def __init__(self, ctx, **hp):
        super().__init__(ctx, **hp)
        self.stages = self.check_pair(ctx, **self.hp)
        self.branches = self._build(self.hp["branch"] == "transformer")

    @classmethod
    def check_pair(cls, ctx, **hp) -> list[int]:
        """The student stages that get a branch; raises ValueError when the student's stages are not maps."""
        pairs = pair_stages(ctx.student_stages, ctx.teacher_stages, explicit=ctx.pairs)
        if ctx.pairs is None:   # every student stage after the stem, not only the paired ones
            n = len(ctx.student_stages)
            return list(range(1 if n > 1 else 0, n))
        return sorted({i for i, _ in pairs})

    def _build(self, tokens: bool) -> nn.ModuleList:
        ctx, last = self.ctx, len(self.ctx.student_stages) - 1
        h_last = ctx.student_stages[last][1]
        branches = nn.ModuleList()
        for i in self.stages:
            c, h, _ = ctx.student_stages[i]
            if tokens:   # official: 4 - stage blocks of a 4-stage model, at least 1 (3 at most)
                width = ctx.student_embedding or c
                branches.append(TokenBranch(c, width, h, min(max(last - i, 1), 3), ctx.num_classes))
            else:        # official: 4 - stage SepConvs, i.e. down to the last stage's resolution on a ResNet
                width = max(ctx.student_embedding, ctx.teacher_embedding) or c
                downsamples = max(round(math.log2(h / h_last)), 0) if h_last > 0 else 0
                branches.append(conv_branch(c, width, downsamples, ctx.num_classes))
        init_branch(branches)
        return branches

    def attach_student(self, student: nn.Module) -> None:
        """branch=auto: a token-grid student (kd_prefix_tokens set, e.g. a ViT) gets the transformer branches.
        Called by the offline scheme after construction, before the optimiser and any checkpoint load."""
        if self.hp["branch"] == "auto" and getattr(student, "kd_prefix_tokens", None) is not None:
            self.branches = self._build(True)

    def forward(self, s: Outputs, t: Outputs, batch: Batch):
        zt, eps, temp = t.logits.detach(), self.hp["eps"], self.hp["temperature"]
        out = {"ofa_logits": ofa_loss(s.logits, zt, batch.y, eps, temp)}
        if self.branches:
            out["ofa_branches"] = self.hp["branch_weight"] * sum(
                ofa_loss(branch(s.stages[i]), zt, batch.y, eps, temp) for i, branch in zip(self.stages, self.branches))
        return out
