from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Batch, HParam, Method, Outputs, Paper
from .pairing import match_spatial, pair_stages
from .registry import register_method


def _conv_bn_relu(c_in, c_out, k):
    return [nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


@register_method
class SimKD(Method):
    """Reuse the teacher's classifier: a projector maps the student's final stage onto the
    teacher's, trained by MSE; the reused (frozen) teacher head then classifies it.

    Trainer hook: the trainer calls `method.attach_teacher(teacher)` after construction when the
    method defines it. We copy the teacher classifier's weights into buffers (frozen, saved with
    the method, never optimised). The classifier is the module named by `teacher.kd_classifier`
    if declared, else the last nn.Linear(teacher_embedding -> num_classes).

    Limitation: SimKD's student predicts with the reused head (`reused_logits`), but our trainer
    evaluates the student's own head; so CE keeps training that head (default CE weight 1, the
    paper uses 0), and a CE term on the reused-head logits ("ce_reused") trains the projector
    towards the SimKD prediction path too.
    """
    key = "simkd"
    name = "SimKD (reused teacher classifier)"
    category = "feature"
    paper = Paper("Defang Chen, Jian-Ping Mei, Hailin Zhang, Can Wang, Yan Feng, Chun Chen",
                  "Knowledge Distillation with the Reused Teacher Classifier", 2022, "CVPR", "2203.14001")
    equation = (r"\mathcal{L} = \tfrac{1}{BCHW}\|P(F^s_L) - F^t_L\|_2^2 + \lambda\,"
                r"\mathrm{CE}\big(W_t\,\mathrm{GAP}(P(F^s_L)) + b_t,\ y\big)")
    hparams = (
        HParam("factor", 2, 1, 4, "projector bottleneck: teacher channels / factor"),
        HParam("reused_ce", 1.0, 0.0, 2.0, "weight lambda of CE on the reused-teacher-head logits (paper: 0)"),
    )
    needs = frozenset({"stages"})
    default_weight = 1.0
    default_ce_weight = 1.0
    convention = "official SimKD CIFAR code: element-mean MSE on the last stage, 1x1-3x3-1x1 conv-BN-ReLU projector"
    notes = ("Needs attach_teacher(teacher) before the first forward. The teacher's last stage must have as "
             "many channels as its classifier's inputs (global-average-pool + linear head). Uses the "
             "deepest stage pair (explicit pairs: the last one). Evaluation uses the student's own head.")

    def __init__(self, ctx, **hp):
        super().__init__(ctx, **hp)
        pairs = pair_stages(ctx.student_stages, ctx.teacher_stages, explicit=ctx.pairs)
        self.pair = pairs[-1]
        cs, ct = ctx.student_stages[self.pair[0]][0], ctx.teacher_stages[self.pair[1]][0]
        if ct != ctx.teacher_embedding:
            raise ValueError(f"simkd: the teacher's final stage has {ct} channels but its embedding has "
                             f"{ctx.teacher_embedding}; SimKD feeds GAP(projected stage) to the teacher classifier, "
                             "so they must match (pick the teacher's last conv stage as its last stage)")
        mid = max(ct // self.hp["factor"], 1)
        self.projector = nn.Sequential(*_conv_bn_relu(cs, mid, 1), *_conv_bn_relu(mid, mid, 3),
                                       *_conv_bn_relu(mid, ct, 1))
        self.register_buffer("cls_weight", torch.zeros(ctx.num_classes, ct))
        self.register_buffer("cls_bias", torch.zeros(ctx.num_classes))
        self.attached = False

    @torch.no_grad()
    def attach_teacher(self, teacher: nn.Module):
        modules = dict(teacher.named_modules())
        name = getattr(teacher, "kd_classifier", None)
        if name is not None:
            head = modules[name]
        else:
            fits = [m for m in modules.values() if isinstance(m, nn.Linear)
                    and m.in_features == self.cls_weight.shape[1] and m.out_features == self.cls_weight.shape[0]]
            if not fits:
                raise ValueError(f"simkd: found no nn.Linear({self.cls_weight.shape[1]} -> {self.cls_weight.shape[0]}) "
                                 f"in {type(teacher).__name__}; declare teacher.kd_classifier = '<module name>'")
            head = fits[-1]
        self.cls_weight.copy_(head.weight)
        self.cls_bias.copy_(head.bias if head.bias is not None else torch.zeros_like(self.cls_bias))
        self.attached = True

    def project(self, s: Outputs, t_map: torch.Tensor):
        fs, ft = match_spatial(s.stages[self.pair[0]], t_map)
        return self.projector(fs), ft

    def reused_logits(self, projected: torch.Tensor) -> torch.Tensor:
        return F.linear(projected.mean((2, 3)), self.cls_weight, self.cls_bias)

    def forward(self, s: Outputs, t: Outputs, batch: Batch):
        if not self.attached:
            raise RuntimeError("simkd: call method.attach_teacher(teacher) before training (the trainer does "
                               "this automatically when the method defines it)")
        ps, ft = self.project(s, t.stages[self.pair[1]].detach())
        out = {"simkd": F.mse_loss(ps, ft)}
        if self.hp["reused_ce"] > 0:
            out["ce_reused"] = self.hp["reused_ce"] * F.cross_entropy(self.reused_logits(ps), batch.y)
        return out
