"""MiniLM: deep self-attention distillation of a transformer's last block (attention and value relations)."""
from __future__ import annotations

import math

import torch

from .base import Batch, HParam, Method, Outputs, Paper
from .pairing import pair_stages
from .registry import register_method


def _log(p: torch.Tensor) -> torch.Tensor:
    """log of probabilities (an exact 0 stays finite: its KL term has a zero teacher weight or is truly large)."""
    return p.clamp_min(torch.finfo(p.dtype).tiny).log()


def relation_kl(log_t: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
    """MiniLM's KL of row distributions (B, heads, N, N): KL(teacher row || student row) summed over the last
    axis (the keys), averaged over heads and query tokens (the paper's 1 / (A_h |x|)) and over the batch."""
    return (log_t.exp() * (log_t - log_s)).sum(-1).mean()


def attention_kl(att_s: torch.Tensor, att_t: torch.Tensor) -> torch.Tensor:
    """Eq. 6: the self-attention distributions softmax(Q K^T / sqrt(d_k)), as tapped (B, heads, N, N)."""
    return relation_kl(_log(att_t), _log(att_s))


def value_relation(v: torch.Tensor) -> torch.Tensor:
    """Eq. 7: log softmax(V V^T / sqrt(d_k)) per head of values (B, heads, N, d_k), d_k the model's own head width."""
    return torch.log_softmax(v @ v.transpose(-1, -2) / math.sqrt(v.shape[-1]), dim=-1)


def value_relation_kl(v_s: torch.Tensor, v_t: torch.Tensor) -> torch.Tensor:
    """Eq. 8: KL of the teacher's and the student's value relations."""
    return relation_kl(value_relation(v_t), value_relation(v_s))


def check_blocks(s_shape, t_shape, where: str) -> None:
    """Raise ValueError unless a student block and a teacher block can be compared: equal head counts (MiniLM
    compares head a with head a) and equal token counts (the relations are N x N over the same tokens)."""
    (hs, ns), (ht, nt) = tuple(s_shape[:2]), tuple(t_shape[:2])
    if hs != ht:
        raise ValueError(f"minilm: {where}: the student has {hs} attention heads and the teacher {ht}; MiniLM "
                         "transfers each head's attention to the same head of the student, so the head counts must "
                         "be equal. Choose a student with as many heads as the teacher (MiniLMv2's relation heads, "
                         "which lift this restriction, are not implemented)")
    if ns != nt:
        raise ValueError(f"minilm: {where}: the student's attention covers {ns} tokens and the teacher's {nt} "
                         "(different patch sizes, image sizes or prefix tokens); MiniLM compares the N x N "
                         "relations over the same tokens, so it refuses unequal token counts. Use models with the "
                         "same patch grid and the same class/distillation tokens")


@register_method
class MiniLM(Method):
    """Deep self-attention distillation: the student's last block mimics the teacher's last block -- its
    per-head attention distributions and its per-head value relations -- so hidden widths and depths may differ."""
    key = "minilm"
    name = "MiniLM (self-attention distillation)"
    category = "relation"
    paper = Paper("Wenhui Wang, Furu Wei, Li Dong, Hangbo Bao, Nan Yang, Ming Zhou", "MiniLM: Deep Self-Attention "
                  "Distillation for Task-Agnostic Compression of Pre-Trained Transformers", 2020, "NeurIPS",
                  "2002.10957")
    equation = (r"\mathcal{L} = \tfrac{1}{A_h|x|}\sum_{a,t}\mathrm{KL}\big(A^T_{L,a,t}\,\|\,A^S_{M,a,t}\big) + "
                r"\tfrac{1}{A_h|x|}\sum_{a,t}\mathrm{KL}\big(VR^T_{L,a,t}\,\|\,VR^S_{M,a,t}\big),\ "
                r"VR_{a} = \mathrm{softmax}\big(V_a V_a^\top/\sqrt{d_k}\big)")
    hparams = (
        HParam("value_relation", True, help="add the value-relation transfer L_VR (Eq. 8) to the attention transfer "
                                            "L_AT (Eq. 6); the paper's loss is their sum (Eq. 9)"),
        HParam("blocks", "last", choices=("last", "paired"),
               help="last = the teacher's last block teaches the student's last block (the paper); paired = every "
                    "block of the shallower model is paired with a block of the other by relative depth (the "
                    "project's one pairing rule, explorer/kd/pairing.py), the KLs summed over the pairs"),
    )
    needs = frozenset({"attention", "values"})
    default_weight = 1.0
    default_ce_weight = 1.0
    convention = ("paper Eq. 6-9 (the official repository, microsoft/unilm/minilm, releases the distilled models and "
                  "fine-tuning code, not the distillation code): KL(teacher || student) of each query token's "
                  "distribution over the keys, summed over the keys and averaged over heads and query tokens "
                  "(1 / (A_h |x|)) and over the batch; the value relations use each model's own head width d_k; "
                  "L_AT + L_VR unweighted, last block to last block")
    notes = ("Needs transformers that declare kd_attention and kd_values (the zoo's vit_* models, timm ViTs), with the same "
             "number of heads and the same number of tokens (patch grid and class/distillation tokens): other pairs "
             "are refused with a message saying which differs, at the first step. Hidden widths and depths may differ. "
             "The paper distils task-agnostically during pre-training; here the loss is added to the student's CE.")

    def __init__(self, ctx, **hp):
        super().__init__(ctx, **hp)
        self.check_pair(ctx, **self.hp)
        self.pairs: list[tuple[int, int]] | None = None   # (student block, teacher block), known at the first step

    @classmethod
    def block_pairs(cls, student_shapes, teacher_shapes, blocks: str = "last") -> list[tuple[int, int]]:
        """The (student block, teacher block) pairs for attention shapes (heads, N, N) per block, checked."""
        if not student_shapes or not teacher_shapes:
            who = "student" if not student_shapes else "teacher"
            raise ValueError(f"minilm: the {who} has no attention taps: MiniLM distils self-attention, so both models "
                             "must be transformers that declare kd_attention and kd_values (e.g. the zoo's vit_*)")
        if blocks == "last":
            pairs = [(len(student_shapes) - 1, len(teacher_shapes) - 1)]
        else:
            pairs = pair_stages(student_shapes, teacher_shapes, skip_stem=False, need_maps=False)
        for i, j in pairs:
            check_blocks(student_shapes[i], teacher_shapes[j], f"student block {i} / teacher block {j}")
        return pairs

    @classmethod
    def check_pair(cls, ctx, **hp) -> None:
        """Checks the heads and tokens when the PairContext carries the attention shapes (student_attention /
        teacher_attention: (heads, N, N) per block); otherwise the first step checks them on the tapped tensors."""
        s_att, t_att = getattr(ctx, "student_attention", None), getattr(ctx, "teacher_attention", None)
        if s_att is not None and t_att is not None:
            cls.block_pairs(s_att, t_att, hp.get("blocks", "last"))

    def forward(self, s: Outputs, t: Outputs, batch: Batch):
        if self.pairs is None:
            self.pairs = self.block_pairs([a.shape[1:] for a in s.attentions], [a.shape[1:] for a in t.attentions],
                                          self.hp["blocks"])
            if self.hp["value_relation"]:
                if len(s.values) != len(s.attentions) or len(t.values) != len(t.attentions):
                    raise ValueError("minilm: kd_values must name one module per block, as kd_attention does")
                for i, j in self.pairs:
                    check_blocks(s.values[i].shape[1:], t.values[j].shape[1:], f"values of blocks {i} / {j}")
        att = sum(attention_kl(s.attentions[i], t.attentions[j].detach()) for i, j in self.pairs)
        out = {"minilm_at": att}
        if self.hp["value_relation"]:
            out["minilm_vr"] = sum(value_relation_kl(s.values[i], t.values[j].detach()) for i, j in self.pairs)
        return out
