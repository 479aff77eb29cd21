from __future__ import annotations

from .base import INIT_FRACTION, Batch, Method, Outputs, Paper, feature_parameters
from .functional import fsp_loss
from .pairing import ctx_pairs
from .registry import register_method


@register_method
class FSP(Method):
    """Flow of solution procedure: match the Gram matrices *between* consecutive stages, which only
    makes sense when the student's and teacher's paired stages have the same channel counts. As in the
    official code, this is an initialisation: the init stage trains the student's feature layers on the FSP
    loss, then the main training is CE alone (the main-stage term, recorded as `fsp`, has weight 0 unless you
    give it one)."""
    key = "fsp"
    name = "FSP (flow of solution procedure)"
    category = "feature"
    paper = Paper("Junho Yim, Donggyu Joo, Jihoon Bae, Junmo Kim", "A Gift from Knowledge Distillation: Fast "
                  "Optimization, Network Minimization and Transfer Learning", 2017, "CVPR", "")
    equation = (r"G_{ab}(F_1,F_2) = \tfrac{1}{HW}\sum_{h,w} F_{1,a,h,w}F_{2,b,h,w},\ "
                r"\mathcal{L}_{FSP} = \sum_k \mathrm{mean}\big(G^s_k - G^t_k\big)^2;\ "
                r"\text{init: } \min_{\theta_s \setminus \text{classifier}} \mathcal{L}_{FSP},\ \text{then } \mathcal{L}_{CE}")
    hparams = (INIT_FRACTION,)
    needs = frozenset({"stages"})
    default_weight = 0.0
    default_ce_weight = 1.0
    init_stage = True
    convention = ("RepDistiller (distiller_zoo/FSP.py `FSP`; train_student.py `--distill fsp`: helper/pretrain.py "
                  "`init` on model_s.get_feat_modules(); helper/loops.py: loss_kd = 0 for fsp; "
                  "scripts/run_cifar_distill.sh `--distill fsp -a 0 -b 50`): element-mean squared FSP difference "
                  "summed over consecutive pairs of feat[:-1] (stem included); init stage (init_epochs 30 of 240) "
                  "training the student's feature layers (not the classifier) on the unweighted FSP sum at the "
                  "run's lr, then CE only: the official main stage adds no FSP term (beta = 50 multiplies a zero "
                  "loss), so its weight is 0 here. The paper (Yim et al.) likewise trains on FSP first, then on "
                  "the task")
    notes = ("REQUIRES equal channel counts for every paired stage (raises ValueError otherwise), e.g. "
             "resnet56->resnet20. Within a network the larger of two consecutive maps is avg-pooled to the "
             "smaller. Init stage: ceil(init_fraction x epochs) epochs before the first step (init_fraction=0: "
             "none; then give the `fsp` term a weight, e.g. 50, to train it with the main loss instead).")

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

    def flow_loss(self, s: Outputs, t: Outputs):
        fs = [s.stages[i] for i, _ in self.pairs]
        ft = [t.stages[j].detach() for _, j in self.pairs]
        return fsp_loss(fs, ft)

    def init_parameters(self, student):
        return feature_parameters(student)      # RepDistiller's model_s.get_feat_modules(): all but the classifier

    def init_loss(self, s, t, batch):
        return {"fsp_init": self.flow_loss(s, t)}

    def forward(self, s: Outputs, t: Outputs, batch: Batch):
        return {"fsp": self.flow_loss(s, t)}
