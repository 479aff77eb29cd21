from __future__ import annotations

from .base import Batch, HParam, Method, Outputs, Paper
from .functional_extra import kdsvd_loss
from .pairing import ctx_pairs, match_spatial
from .registry import register_method


@register_method
class KDSVD(Method):
    """Self-supervised KD with SVD: each stage's feature map is compressed to its leading singular vectors,
    and the student learns the teacher's *relations between consecutive stages* of those vectors (Gaussian
    RBF of every pair of their components), not the features themselves."""
    key = "kdsvd"
    name = "KD-SVD (singular value decomposition)"
    category = "feature"
    paper = Paper("Seung Hyun Lee, Dae Ha Kim, Byung Cheol Song", "Self-supervised Knowledge Distillation Using "
                  "Singular Value Decomposition", 2018, "ECCV", "1807.06819")
    equation = (r"F_l = U_l\Sigma_lV_l^\top,\ \tilde v_l = \hat\sigma^t_l\,v_l,\ G_l[a,b] = e^{-(\tilde v_l[a]-"
                r"\tilde v_{l-1}[b])^2/8},\ \mathcal{L} = \tfrac1B\sum_{l\geq2}\|G^s_l - G^t_l\|_F^2")
    hparams = (
        HParam("k", 1, 1, 8, "singular vectors kept from the teacher (the student decomposes k + 3 and aligns them)"),
        HParam("layout", "mdistiller", help="how a map becomes a matrix: mdistiller (C*H x W, its feat.view, vectors "
               "along the width: any widths) or original (H*W x C, the authors' TensorFlow code: needs equal channel "
               "counts)", choices=("mdistiller", "original")),
    )
    needs = frozenset({"stages"})
    default_weight = 1.0
    default_ce_weight = 1.0
    convention = ("mdistiller (megvii-research/mdistiller, mdistiller/distillers/KDSVD.py `kdsvd_loss`, CFG.KDSVD: "
                  "K 1, feature weight 1, CE 1; neither torchdistill nor Knowledge-Distillation-Zoo has KD-SVD): the "
                  "stages after the stem (feats[1:]), map viewed as (C*H) x W, RBF gamma 1/8, squared differences "
                  "summed (non-finite entries dropped) / batch. The original TensorFlow code (sseung0703/SSKD_SVD) "
                  "decomposes the (H*W) x C matrix: layout=original")
    notes = ("Needs two or more stages after the stem. A student map larger than the teacher's is average-pooled to "
             "its size (mdistiller assumes equal sizes). torch.linalg.svd replaces the deprecated torch.svd; its "
             "gradient is infinite where singular values repeat, so non-finite gradient entries are dropped too.")

    def __init__(self, ctx, **hp):
        super().__init__(ctx, **hp)
        self.pairs = self.check_pair(ctx, **hp)

    @classmethod
    def check_pair(cls, ctx, **hp) -> list[tuple[int, int]]:
        """The paired stages after the stem; raises ValueError for fewer than two, or unequal channel counts
        under layout=original."""
        pairs = ctx_pairs(ctx)
        if len(pairs) < 2:
            raise ValueError(f"kdsvd: relates consecutive stages, so it needs at least two paired stages after the "
                             f"stem, got {pairs}")
        if hp.get("layout", "mdistiller") == "original":
            bad = [(i, j) for i, j in pairs if ctx.student_stages[i][0] != ctx.teacher_stages[j][0]]
            if bad:
                raise ValueError(f"kdsvd: layout=original decomposes H*W x C matrices, so paired stages need equal "
                                 f"channel counts; these differ: {bad}. Use layout=mdistiller.")
        return pairs

    def forward(self, s: Outputs, t: Outputs, batch: Batch):
        fs, ft = zip(*(match_spatial(s.stages[i], t.stages[j].detach()) for i, j in self.pairs))
        return {"kdsvd": kdsvd_loss(list(fs), list(ft), self.hp["k"], self.hp["layout"])}
