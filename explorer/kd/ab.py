from __future__ import annotations

from torch import nn

from .base import INIT_FRACTION, Batch, HParam, Method, Outputs, Paper, feature_parameters
from .functional_extra import ab_loss
from .pairing import Connector, ctx_pairs, match_spatial
from .registry import register_method


@register_method
class AB(Method):
    """Activation boundaries: the student learns *where each teacher neuron switches on*, not its value:
    a hinge-like loss on the pre-activations pushes the (connected) student neuron above +m where the
    teacher's is on and below -m where it is off. As in the official code, this is an initialisation:
    the init stage trains the student's feature layers and the connectors on it, then the main training is
    CE alone (the main-stage term, recorded as `ab`, has weight 0 unless you give it one)."""
    key = "ab"
    name = "Activation Boundaries"
    category = "feature"
    paper = Paper("Byeongho Heo, Minsik Lee, Sangdoo Yun, Jin Young Choi", "Knowledge Transfer via Distillation of "
                  "Activation Boundaries Formed by Hidden Neurons", 2019, "AAAI", "1811.03233")
    equation = (r"\mathcal{L}_{AB} = \sum_{l=1}^{n} 2^{\,l-n}\,\tfrac{3}{1000B}\sum\Big[(r(s_l)+m)^2\,"
                r"\mathbb{1}[r(s_l)>-m,\ t_l\le0] + (r(s_l)-m)^2\,\mathbb{1}[r(s_l)\le m,\ t_l>0]\Big]")
    hparams = (
        HParam("margin", 1.0, 0.0, 4.0, "margin m (RepDistiller 1.0; Knowledge-Distillation-Zoo 2.0)"),
        INIT_FRACTION,
    )
    needs = frozenset({"preact"})
    default_weight = 0.0
    default_ce_weight = 1.0
    init_stage = True
    convention = ("RepDistiller (distiller_zoo/AB.py `ABLoss`, models/util.py `Connector`, helper/pretrain.py `init`, "
                  "scripts/run_cifar_distill.sh `--distill abound -a 0 -b 1`): pre-activations of the stages after "
                  "the stem (feat[1:-1]); per stage the alternative-L2 sum / batch x 3/1000, weights 2^(i-n+1); init "
                  "stage (init_epochs 30 of 240) training the connectors and the student's feature layers at the "
                  "run's lr, then CE only: the official main stage adds no AB term (weight 0 here)")
    notes = ("Init stage: ceil(init_fraction x epochs) epochs before the first step (init_fraction=0: none; then give "
             "the `ab` term a weight to train it with the main loss instead). Connector = pairing.Connector (1x1 conv "
             "+ BN, identity for equal channels) after pooling the larger map to the smaller; RepDistiller's ConvReg "
             "(3x3 stride-2 / transposed conv + BN for a spatial mismatch) is not used.")

    def __init__(self, ctx, **hp):
        super().__init__(ctx, **hp)
        self.pairs = ctx_pairs(ctx)
        self.connectors = nn.ModuleList(Connector(ctx.student_stages[i][0], ctx.teacher_stages[j][0])
                                        for i, j in self.pairs)

    def boundary_loss(self, s: Outputs, t: Outputs):
        src, tgt = [], []
        for (i, j), connect in zip(self.pairs, self.connectors):
            fs, ft = match_spatial(s.preact[i], t.preact[j].detach())
            src.append(connect(fs))
            tgt.append(ft)
        return ab_loss(src, tgt, self.hp["margin"])

    def init_parameters(self, student):
        return list(self.connectors.parameters()) + feature_parameters(student)

    def init_loss(self, s, t, batch):
        return {"ab_init": self.boundary_loss(s, t)}

    def forward(self, s: Outputs, t: Outputs, batch: Batch):
        return {"ab": self.boundary_loss(s, t)}
