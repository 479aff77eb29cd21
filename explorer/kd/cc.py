from __future__ import annotations

from torch import nn

from .base import Batch, HParam, Method, Outputs, Paper
from .functional import cc_loss
from .registry import register_method


@register_method
class CC(Method):
    """Correlation congruence: match the batch's instance-correlation matrix (Taylor-expanded
    Gaussian RBF) computed on learnable linear embeddings of both networks (as in CRD's port)."""
    key = "cc"
    name = "Correlation Congruence"
    category = "relation"
    paper = Paper("Baoyun Peng, Xiao Jin, Jiaheng Liu, Shunfeng Zhou, Yichao Wu, Yu Liu, Dongsheng Li, Zhaoning "
                  "Zhang", "Correlation Congruence for Knowledge Distillation", 2019, "ICCV", "1904.01802")
    equation = (r"\mathcal{L}_{CC} = \tfrac{1}{b^2}\|\psi(f^t) - \psi(f^s)\|_F^2,\ \psi_{ij} = "
                r"\sum_{p=0}^{P} e^{-2\gamma}\tfrac{(2\gamma)^p}{p!}(\hat f_i^\top \hat f_j)^p,\ \hat f = "
                r"\mathrm{norm}(W e)")
    hparams = (
        HParam("gamma", 0.4, 0.05, 2.0, "RBF bandwidth gamma"),
        HParam("order", 2, 1, 4, "Taylor order P"),
        HParam("feat_dim", 128, 16, 512, "width of the linear embeds"),
    )
    needs = frozenset({"embedding"})
    default_weight = 0.02
    default_ce_weight = 1.0
    convention = "paper's Taylor-RBF correlation; CRD's LinearEmbed heads (student and teacher) and weight 0.02"
    notes = ("CRD's Correlation class computes a different surrogate (product of consecutive |f_s - f_t|); "
             "the 0.02 weight was tuned for it, and this kernel loss is of a smaller scale, so consider a "
             "larger weight. Both embeds are trainable (the teacher embedding itself is detached).")

    def __init__(self, ctx, **hp):
        super().__init__(ctx, **hp)
        d = self.hp["feat_dim"]
        self.embed_s = nn.Linear(ctx.student_embedding, d)
        self.embed_t = nn.Linear(ctx.teacher_embedding, d)

    def forward(self, s: Outputs, t: Outputs, batch: Batch):
        f_s = self.embed_s(s.embedding.flatten(1))
        f_t = self.embed_t(t.embedding.detach().flatten(1))
        return {"cc": cc_loss(f_s, f_t, self.hp["gamma"], self.hp["order"])}
