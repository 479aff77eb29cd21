from __future__ import annotations

from .base import Batch, Method, Outputs, Paper
from .functional import sp_loss
from .pairing import ctx_pairs
from .registry import register_method


@register_method
class SP(Method):
    """Similarity-preserving KD: inputs that activate the teacher similarly should activate the
    student similarly; compares batch Gram matrices, so widths and spatial sizes may differ."""
    key = "sp"
    name = "Similarity-Preserving KD"
    category = "relation"
    paper = Paper("Frederick Tung, Greg Mori", "Similarity-Preserving Knowledge Distillation", 2019, "ICCV",
                  "1907.09682")
    equation = (r"\mathcal{L}_{SP} = \tfrac{1}{b^2}\big\|\tilde G^t - \tilde G^s\big\|_F^2,\ "
                r"\tilde G = \mathrm{rownorm}\big(Q Q^\top\big),\ Q = \mathrm{reshape}(A, b \times CHW)")
    needs = frozenset({"stages"})
    default_weight = 3000.0
    default_ce_weight = 1.0
    convention = "RepDistiller Similarity: last stage only (CRD's feat[-2]); summed over explicit pairs if given"

    def __init__(self, ctx, **hp):
        super().__init__(ctx, **hp)
        self.pairs = ctx_pairs(ctx) if ctx.pairs is not None else ctx_pairs(ctx)[-1:]

    def forward(self, s: Outputs, t: Outputs, batch: Batch):
        loss = 0.0
        for i, j in self.pairs:
            loss = loss + sp_loss(s.stages[i], t.stages[j].detach())
        return {"sp": loss}
