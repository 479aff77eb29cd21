from __future__ import annotations

from torch import nn

from .base import Batch, HParam, Method, Outputs, Paper
from .functional import cc_correlation_loss, cc_loss
from .registry import register_method


@register_method
class CC(Method):
    """Correlation congruence on learnable linear embeddings of both networks (as in CRD's port).
    form "crd" (default): the surrogate of RepDistiller's distiller_zoo/CC.py `Correlation` -- the code the
    CC authors shared with CRD, which CRD's CC numbers and weight 0.02 were measured with; form "paper":
    the paper's loss, matching the batch's instance-correlation matrices (Taylor-expanded Gaussian RBF)."""
    key = "cc"
    name = "Correlation Congruence"
    category = "relation"
    paper = Paper("Baoyun Peng, Xiao Jin, Jiaheng Liu, Shunfeng Zhou, Yichao Wu, Yu Liu, Dongsheng Li, Zhaoning "
                  "Zhang", "Correlation Congruence for Knowledge Distillation", 2019, "ICCV", "1904.01802")
    equation = (r"\text{crd: }\mathcal{L} = \tfrac{1}{b-1}\sum_{i<b} \langle |f^s_i - f^t_i|, |f^s_{i+1} - "
                r"f^t_{i+1}|\rangle;\quad \text{paper: }\mathcal{L}_{CC} = \tfrac{1}{b^2}\|\psi(f^t) - "
                r"\psi(f^s)\|_F^2,\ \psi_{ij} = "
                r"\sum_{p=0}^{P} e^{-2\gamma}\tfrac{(2\gamma)^p}{p!}(\hat f_i^\top \hat f_j)^p,\ \hat f = "
                r"\mathrm{norm}(f),\ f = W e")
    hparams = (
        HParam("form", "crd", help="crd: RepDistiller's Correlation surrogate (what weight 0.02 was tuned for) | "
                                   "paper: the paper's Taylor-RBF correlation-matrix loss", choices=("crd", "paper")),
        HParam("gamma", 0.4, 0.05, 2.0, "RBF bandwidth gamma (form paper)"),
        HParam("order", 2, 1, 4, "Taylor order P (form paper)"),
        HParam("feat_dim", 128, 16, 512, "width of the linear embeds"),
    )
    needs = frozenset({"embedding"})
    default_weight = 0.02
    default_ce_weight = 1.0
    convention = ("default form crd = RepDistiller distiller_zoo/CC.py `Correlation` (mean over consecutive "
                  "sample pairs of <|f_s - f_t|_i, |f_s - f_t|_i+1>), CRD's LinearEmbed heads (student and teacher, "
                  "no normalisation) and weight 0.02, as CRD's CC row; form paper = the paper's Taylor-RBF kernel "
                  "(element-mean MSE of the b x b matrices, as Knowledge-Distillation-Zoo kd_losses/cc.py)")
    notes = ("Paper and code differ: the CRD benchmark's CC numbers and its 0.02 weight belong to the crd "
             "surrogate, not to the paper's kernel; the kernel loss is of a smaller scale, so with form=paper "
             "consider a larger weight. The crd surrogate is unbounded (quadratic in |f_s - f_t|): with a barely "
             "trained teacher whose pooled features are large it can diverge, where the paper form (normalised) "
             "cannot. Both embeds are trainable (the teacher embedding itself is detached).")

    def __init__(self, ctx, **hp):
        super().__init__(ctx, **hp)
        if self.hp["form"] not in ("crd", "paper"):
            raise ValueError(f"cc: form must be crd or paper, got {self.hp['form']!r}")
        d = self.hp["feat_dim"]
        self.embed_s = nn.Linear(ctx.student_embedding, d)
        self.embed_t = nn.Linear(ctx.teacher_embedding, d)

    def forward(self, s: Outputs, t: Outputs, batch: Batch):
        f_s = self.embed_s(s.embedding.flatten(1))
        f_t = self.embed_t(t.embedding.detach().flatten(1))
        if self.hp["form"] == "crd":
            return {"cc": cc_correlation_loss(f_s, f_t)}
        return {"cc": cc_loss(f_s, f_t, self.hp["gamma"], self.hp["order"])}
