from __future__ import annotations

from .base import Batch, Method, Outputs, Paper
from .functional import pkt_loss
from .registry import register_method


@register_method
class PKT(Method):
    """Probabilistic knowledge transfer: match the conditional distributions of neighbours in
    embedding space (cosine-similarity kernel), not the embeddings themselves."""
    key = "pkt"
    name = "Probabilistic Knowledge Transfer"
    category = "relation"
    paper = Paper("Nikolaos Passalis, Anastasios Tefas", "Learning Deep Representations with Probabilistic "
                  "Knowledge Transfer", 2018, "ECCV", "1803.10837")
    equation = (r"p_{i|j} = \frac{K(x_i,x_j)}{\sum_k K(x_k,x_j)},\ K = \tfrac12(\cos+1),\ "
                r"\mathcal{L}_{PKT} = \tfrac{1}{B^2}\sum_{i,j} p^t_{i|j}\log\frac{p^t_{i|j}}{p^s_{i|j}}")
    needs = frozenset({"embedding"})
    default_weight = 30000.0
    default_ce_weight = 1.0
    convention = "RepDistiller PKT: eps 1e-7, KL averaged over all B^2 entries (hence the large weight)"

    def forward(self, s: Outputs, t: Outputs, batch: Batch):
        return {"pkt": pkt_loss(s.embedding, t.embedding.detach())}
