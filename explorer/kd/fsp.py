from __future__ import annotations

from .base import Batch, Method, Outputs, Paper
from .functional import fsp_loss
from .pairing import ctx_pairs
from .registry import register_method


@register_method
class FSP(Method):
    """Flow of solution procedure: match the Gram matrices *between* consecutive stages, which only
    makes sense when the student's and teacher's paired stages have the same channel counts."""
    key = "fsp"
    name = "FSP (flow of solution procedure)"
    category = "feature"
    paper = Paper("Junho Yim, Donggyu Joo, Jihoon Bae, Junmo Kim", "A Gift from Knowledge Distillation: Fast "
                  "Optimization, Network Minimization and Transfer Learning", 2017, "CVPR", "")
    equation = (r"G_{ab}(F_1,F_2) = \tfrac{1}{HW}\sum_{h,w} F_{1,a,h,w}F_{2,b,h,w},\ "
                r"\mathcal{L}_{FSP} = \sum_k \mathrm{mean}\big(G^s_k - G^t_k\big)^2")
    needs = frozenset({"stages"})
    default_weight = 50.0
    default_ce_weight = 1.0
    convention = "RepDistiller: element-mean squared FSP difference summed over consecutive pairs, stem included"
    notes = ("REQUIRES equal channel counts for every paired stage (raises ValueError otherwise), e.g. "
             "resnet56->resnet20. Within a network the larger of two consecutive maps is avg-pooled to the "
             "smaller. CRD trains FSP in a separate init stage; here it is an ordinary loss term.")

    def __init__(self, ctx, **hp):
        super().__init__(ctx, **hp)
        self.pairs = self.check_pair(ctx, **hp)

    @classmethod
    def check_pair(cls, ctx, **hp) -> list[tuple[int, int]]:
        """The paired stages (stem included); raises ValueError unless each pair has equal channel counts."""
        pairs = ctx_pairs(ctx, skip_stem=False)   # CRD uses feat[:-1]: stem included
        if len(pairs) < 2:
            raise ValueError(f"fsp: needs at least two paired stages to form a flow matrix, got {pairs}")
        bad = [(i, j, ctx.student_stages[i][0], ctx.teacher_stages[j][0]) for i, j in pairs
               if ctx.student_stages[i][0] != ctx.teacher_stages[j][0]]
        if bad:
            desc = ", ".join(f"student stage {i} has {cs} channels vs teacher stage {j} {ct}" for i, j, cs, ct in bad)
            raise ValueError(f"fsp: FSP matrices are C x C, so paired stages need equal channel counts: {desc}. "
                             "Use a same-width pair (e.g. resnet56 -> resnet20) or another feature method.")
        return pairs

    def forward(self, s: Outputs, t: Outputs, batch: Batch):
        fs = [s.stages[i] for i, _ in self.pairs]
        ft = [t.stages[j].detach() for _, j in self.pairs]
        return {"fsp": fsp_loss(fs, ft)}
