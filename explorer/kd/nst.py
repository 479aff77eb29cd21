from __future__ import annotations

from .base import Batch, Method, Outputs, Paper
from .functional import nst_loss
from .pairing import ctx_pairs, match_spatial
from .registry import register_method


@register_method
class NST(Method):
    """Neuron selectivity transfer: match the *distribution* of channel activation patterns by MMD,
    so channel counts may differ and no connector is needed."""
    key = "nst"
    name = "Neuron Selectivity Transfer"
    category = "feature"
    paper = Paper("Zehao Huang, Naiyan Wang", "Like What You Like: Knowledge Distill via Neuron Selectivity "
                  "Transfer", 2017, "arXiv", "1707.01219")
    equation = (r"\mathcal{L}_{NST} = \sum_{(i,j)} \overline{k(f^t,f^t)} + \overline{k(f^s,f^s)} - "
                r"2\,\overline{k(f^s,f^t)},\ k(x,y) = (x^\top y)^2,\ f = \mathrm{vec}(A_c)/\|\mathrm{vec}(A_c)\|")
    needs = frozenset({"stages"})
    default_weight = 50.0
    default_ce_weight = 1.0
    convention = "RepDistiller: full squared MMD, kernel means over (B, C, C), summed over stages[1:] pairs"
    notes = "Polynomial kernel d=2, c=0. Larger map avg-pooled to the smaller."

    def __init__(self, ctx, **hp):
        super().__init__(ctx, **hp)
        self.pairs = ctx_pairs(ctx)

    def forward(self, s: Outputs, t: Outputs, batch: Batch):
        loss = 0.0
        for i, j in self.pairs:
            fs, ft = match_spatial(s.stages[i], t.stages[j].detach())
            loss = loss + nst_loss(fs, ft)
        return {"nst": loss}
