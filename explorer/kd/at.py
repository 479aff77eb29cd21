from __future__ import annotations

from .base import Batch, HParam, Method, Outputs, Paper
from .functional import at_loss
from .pairing import ctx_pairs, match_spatial
from .registry import register_method


@register_method
class AT(Method):
    """Attention transfer: match where (spatially) each paired stage is active, channel-agnostic."""
    key = "at"
    name = "Attention Transfer"
    category = "feature"
    paper = Paper("Sergey Zagoruyko, Nikos Komodakis", "Paying More Attention to Attention: Improving the "
                  "Performance of Convolutional Neural Networks via Attention Transfer", 2017, "ICLR", "1612.03928")
    equation = (r"\mathcal{L}_{AT} = \sum_{(i,j)} \tfrac{1}{B\,HW}\Big\|\tfrac{Q^s_i}{\|Q^s_i\|_2} - "
                r"\tfrac{Q^t_j}{\|Q^t_j\|_2}\Big\|_2^2,\ Q = \mathrm{vec}\big(\tfrac1C\sum_c |A_c|^p\big)")
    hparams = (HParam("p", 2, 1, 4, "exponent of the attention map"),)
    needs = frozenset({"stages"})
    default_weight = 1000.0
    default_ce_weight = 1.0
    convention = "RepDistiller: element-mean squared difference per pair, summed over pairs; weight 1000"
    notes = ("Pairs stages[1:] (stem skipped) = CRD's feat[1:-1] (their last entry is the pooled vector, "
             "which our stages list does not contain). Larger map avg-pooled to the smaller.")

    def __init__(self, ctx, **hp):
        super().__init__(ctx, **hp)
        self.pairs = ctx_pairs(ctx)

    def forward(self, s: Outputs, t: Outputs, batch: Batch):
        loss = 0.0
        for i, j in self.pairs:
            fs, ft = match_spatial(s.stages[i], t.stages[j].detach())
            loss = loss + at_loss(fs, ft, self.hp["p"])
        return {"at": loss}
