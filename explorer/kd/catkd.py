from __future__ import annotations

import torch
from torch import nn

from .base import Batch, HParam, Method, Outputs, Paper
from .functional_extra import cat_loss, class_activation_maps
from .pairing import pair_stages
from .registry import register_method


def find_classifier(model: nn.Module, in_features: int, num_classes: int, who: str) -> nn.Linear:
    """The model's classifier: the module named by `model.kd_classifier` when declared, else its last
    nn.Linear(in_features -> num_classes)."""
    modules = dict(model.named_modules())
    name = getattr(model, "kd_classifier", None)
    head = modules.get(name) if name else None
    if head is None:
        fits = [m for m in modules.values() if isinstance(m, nn.Linear)
                and m.in_features == in_features and m.out_features == num_classes]
        head = fits[-1] if fits else None
    if not isinstance(head, nn.Linear) or tuple(head.weight.shape) != (num_classes, in_features):
        raise ValueError(f"catkd: found no nn.Linear({in_features} -> {num_classes}) classifier in the {who} "
                         f"({type(model).__name__}); declare {who}.kd_classifier = '<module name>'")
    return head


@register_method
class CATKD(Method):
    """Class attention transfer: the class activation maps (the classifier applied at every position of the
    final feature map, before global pooling) of the student are pooled to a coarse grid and matched to the
    teacher's. The student's CAMs use the student's own classifier, so the transfer trains its prediction
    path (CAT-KD's student is rebuilt with a 1x1-conv classifier before the pooling, which computes the same
    logits as pool-then-linear).

    Trainer hooks: attach_teacher copies the teacher classifier's weights into a buffer (frozen, saved with
    the method); attach_student keeps a reference to the student's classifier (not registered: its weights
    stay the student's parameters, trained by the run's optimiser)."""
    key = "catkd"
    name = "Class Attention Transfer KD"
    category = "feature"
    paper = Paper("Ziyao Guo, Haonan Yan, Hui Li, Xiaodong Lin", "Class Attention Transfer Based Knowledge "
                  "Distillation", 2023, "CVPR", "2304.12777")
    equation = (r"\mathrm{CAM}_k = \sum_c W_{kc}F_c,\ \mathcal{L}_{CAT} = \tfrac{1}{BKr^2}\big\|"
                r"\mathrm{AvgPool}_{r\times r}(\mathrm{CAM}^s)"
                r" - \mathrm{AvgPool}_{r\times r}(\mathrm{CAM}^t)\big\|_2^2")
    hparams = (
        HParam("resolution", 2, 1, 8, "side r of the grid the CAMs are average-pooled to (official CIFAR configs: 2; "
                                      "4 for the ShuffleNet students and ImageNet)"),
        HParam("normalize", False, help="L2-normalise each pooled CAM over its positions (IF_NORMALIZE; official: off "
                                        "for same-family pairs, on for heterogeneous ones)"),
    )
    needs = frozenset({"stages"})
    default_weight = 15.0
    default_ce_weight = 1.0
    convention = ("official CAT-KD (GzyAftermath/CAT-KD, mdistiller/distillers/CAT_KD.py `CAT_loss`; "
                  "configs/cifar100/CAT_KD/res32x4_res8x4.yaml: beta 15, CAM_RESOLUTION 2, IF_NORMALIZE False, CE 1): "
                  "CAMs without the classifier bias, adaptive average pooling, element-mean MSE. The official beta is "
                  "tuned per pair (0.7 for resnet56 -> resnet20 up to 600 for resnet32x4 -> ShuffleNet); its README "
                  "advises keeping the loss around 1-50 after the first epoch")
    notes = ("Uses the deepest stage pair (explicit pairs: the last one); each network's last stage must have as "
             "many channels as its classifier's inputs (global-average-pool + linear head). Needs "
             "attach_teacher(teacher) and attach_student(student) before the first forward (the offline scheme "
             "calls both). The student keeps its own head, bias included, for its logits.")

    def __init__(self, ctx, **hp):
        super().__init__(ctx, **hp)
        self.pair = self.check_pair(ctx, **hp)
        self.register_buffer("teacher_weight", torch.zeros(ctx.num_classes, ctx.teacher_stages[self.pair[1]][0]))
        self._student_head: tuple[nn.Linear, ...] = ()   # a tuple, so the head is not registered here
        self.teacher_attached = False

    @classmethod
    def check_pair(cls, ctx, **hp) -> tuple[int, int]:
        """The deepest pair; raises ValueError unless its stages feed the two classifiers directly."""
        i, j = pair_stages(ctx.student_stages, ctx.teacher_stages, explicit=ctx.pairs)[-1]
        for who, c, emb, idx in (("student", ctx.student_stages[i][0], ctx.student_embedding, i),
                                 ("teacher", ctx.teacher_stages[j][0], ctx.teacher_embedding, j)):
            if c != emb:
                raise ValueError(f"catkd: the {who}'s stage {idx} has {c} channels but its classifier reads {emb}; "
                                 "class activation maps apply the classifier at every position of the stage that "
                                 f"is pooled into it, so pair the {who}'s last conv stage")
        return i, j

    @torch.no_grad()
    def attach_teacher(self, teacher: nn.Module):
        k, c = self.teacher_weight.shape
        self.teacher_weight.copy_(find_classifier(teacher, c, k, "teacher").weight)
        self.teacher_attached = True

    def attach_student(self, student: nn.Module):
        self._student_head = (find_classifier(student, self.ctx.student_stages[self.pair[0]][0],
                                              self.ctx.num_classes, "student"),)

    def forward(self, s: Outputs, t: Outputs, batch: Batch):
        if not (self.teacher_attached and self._student_head):
            raise RuntimeError("catkd: call method.attach_teacher(teacher) and method.attach_student(student) "
                               "before training (the offline scheme does this)")
        cam_s = class_activation_maps(s.stages[self.pair[0]], self._student_head[0].weight)
        cam_t = class_activation_maps(t.stages[self.pair[1]].detach(), self.teacher_weight)
        return {"cat": cat_loss(cam_s, cam_t, self.hp["resolution"], self.hp["normalize"])}
