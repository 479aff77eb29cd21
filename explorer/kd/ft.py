from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import INIT_FRACTION, Batch, HParam, Method, Outputs, Paper
from .functional_extra import ft_loss
from .pairing import match_spatial, pair_stages
from .registry import register_method


def _convs(channels, transposed: bool, bn: bool) -> nn.Sequential:
    conv = nn.ConvTranspose2d if transposed else nn.Conv2d
    layers = []
    for c_in, c_out in zip(channels, channels[1:]):
        layers += [conv(c_in, c_out, 3, 1, 1)] + ([nn.BatchNorm2d(c_out)] if bn else []) + [nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers)


class Paraphraser(nn.Module):
    """RepDistiller models/util.py `Paraphraser` (no BN): a convolutional autoencoder of the teacher's map,
    C -> C -> m -> m (the factor) -> m -> C -> C, 3x3 convs with LeakyReLU(0.1)."""

    def __init__(self, c: int, m: int):
        super().__init__()
        self.encoder = _convs((c, c, m, m), transposed=False, bn=False)
        self.decoder = _convs((m, m, c, c), transposed=True, bn=False)

    def forward(self, f):
        factor = self.encoder(f)
        return factor, self.decoder(factor)


@register_method
class FT(Method):
    """Factor transfer: a paraphraser (an autoencoder trained, in the init stage, to reconstruct the
    teacher's last feature map) turns that map into a compact "factor"; a translator on the student learns
    to produce the same factor (normalised, L1). The paraphraser is frozen in the main training."""
    key = "ft"
    name = "Factor Transfer"
    category = "feature"
    paper = Paper("Jangho Kim, SeongUk Park, Nojun Kwak", "Paraphrasing Complex Network: Network Compression via "
                  "Factor Transfer", 2018, "NeurIPS", "1802.04977")
    equation = (r"F_t = P_{enc}(f_t),\ F_s = T(f_s),\ "
                r"\phi(F) = \frac{\mathrm{mean}_c F_c^2}{\|\mathrm{mean}_c F_c^2\|_2},"
                r"\ \mathcal{L}_{FT} = \tfrac{1}{BHW}\|\phi(F_s) - \phi(F_t)\|_1;\ \text{init: } \min_P "
                r"\tfrac{1}{BCHW}\|P(f_t) - f_t\|_2^2")
    hparams = (
        HParam("rate", 0.5, 0.1, 1.0, "paraphrase rate k: the factor has k x the teacher's channels"),
        HParam("form", "repdistiller", help="what is compared: repdistiller (the channel mean of the squared factor, "
               "as distiller_zoo/FT.py) or paper (the whole factor, as Kim et al. and Knowledge-Distillation-Zoo)",
               choices=("repdistiller", "paper")),
        INIT_FRACTION,
        HParam("init_lr", 0.01, 0.0, 1.0, "learning rate of the paraphraser's init stage (RepDistiller: 0.01 for its "
                                          "ResNet/WRN students, else the run's lr); 0 = the run's lr"),
    )
    needs = frozenset({"stages"})
    default_weight = 200.0
    default_ce_weight = 1.0
    init_stage = True
    convention = ("RepDistiller (distiller_zoo/FT.py `FactorTransfer` p1 = 2, p2 = 1; models/util.py `Paraphraser` "
                  "k = 0.5 without BN and `Translator` with BN; helper/pretrain.py `init`: the paraphraser trained by "
                  "MSE reconstruction, init_epochs 30 of 240 at lr 0.01; scripts/run_cifar_distill.sh "
                  "`--distill factor -a 0 -b 200`): the last stage of each network (feat[-2]), the larger factor "
                  "pooled to the smaller, element-mean |difference| of the normalised channel-mean squared factors; "
                  "translator trained in the main stage, paraphraser frozen there")
    notes = ("Init stage: ceil(init_fraction x epochs) epochs of the paraphraser alone before the first step (the "
             "student is untouched); with init_fraction=0 the paraphraser stays at its random initialisation. Uses "
             "the deepest stage pair (explicit pairs: the last one).")

    def __init__(self, ctx, **hp):
        super().__init__(ctx, **hp)
        self.pair = pair_stages(ctx.student_stages, ctx.teacher_stages, explicit=ctx.pairs)[-1]
        cs, ct = ctx.student_stages[self.pair[0]][0], ctx.teacher_stages[self.pair[1]][0]
        m = max(int(ct * self.hp["rate"]), 1)
        self.paraphraser = Paraphraser(ct, m)
        self.translator = _convs((cs, cs, m, m), transposed=False, bn=True)
        self.paraphraser.requires_grad_(False)   # trained by the init stage only

    def init_parameters(self, student):
        return list(self.paraphraser.parameters())

    def init_loss(self, s, t, batch):
        ft = t.stages[self.pair[1]].detach()
        return {"ft_init": F.mse_loss(self.paraphraser(ft)[1], ft)}

    def forward(self, s: Outputs, t: Outputs, batch: Batch):
        with torch.no_grad():
            factor_t = self.paraphraser.encoder(t.stages[self.pair[1]].detach())
        factor_s, factor_t = match_spatial(self.translator(s.stages[self.pair[0]]), factor_t)
        return {"ft": ft_loss(factor_s, factor_t, self.hp["form"])}
