from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .base import Batch, HParam, Method, Outputs, Paper
from .pairing import Connector, match_spatial, pair_stages, teacher_stage_for
from .registry import register_method


@register_method
class FitNet(Method):
    """Hints: regress the student's middle stage (the "guided" layer) onto the teacher's (the hint)."""
    key = "fitnet"
    name = "FitNets (hints)"
    category = "feature"
    paper = Paper("Adriana Romero, Nicolas Ballas, Samira Ebrahimi Kahou, Antoine Chassang, Carlo Gatta, "
                  "Yoshua Bengio", "FitNets: Hints for Thin Deep Nets", 2015, "ICLR", "1412.6550")
    equation = r"\mathcal{L}_{hint} = \tfrac{1}{BCHW}\big\|r(F^s_{g}) - F^t_{h}\big\|_2^2"
    hparams = (HParam("hint_stage", 2, 0, 4, "student stage index used as the guided layer (CRD hint_layer=2)"),)
    needs = frozenset({"stages"})
    default_weight = 100.0
    default_ce_weight = 1.0
    convention = "RepDistiller: element-mean MSE after a conv regressor (single-stage training, no hint pre-stage)"
    notes = ("Teacher stage = the one paired with hint_stage by pairing.py (same relative depth). Regressor "
             "= 1x1 conv + BN (identity when channels match); spatial mismatch pooled to the smaller map. "
             "CRD's ConvReg (3x3/transposed conv + BN + ReLU) and FitNets' two-stage schedule are not used. "
             "Explicit stage pairs, if given, all become hints. Language models (gpt_*): each block's (B, T, C) "
             "state is a (B, C, T, 1) map (explorer/models/sequence.py), and the regressor is a per-token linear "
             "map with a bias and no BN, always applied -- TinyBERT's hidden-state loss MSE(H^S W_h, H^T) (Jiao et "
             "al., Findings of EMNLP 2020, arXiv 1909.10351, Eq. 8; their code's fit_dense = nn.Linear, "
             "nn.MSELoss's element mean); the student's block meets the teacher's block at the same relative "
             "depth, as TinyBERT's g(m) = m N / M (a gpt_1x32 block: gpt_4x128's last). TinyBERT also matches the "
             "embeddings and attention scores and sums the layers: here one hint_stage (or explicit pairs) and "
             "MiniLM for attention.")

    def __init__(self, ctx, **hp):
        super().__init__(ctx, **hp)
        self.pairs = self.check_pair(ctx, **self.hp)
        tokens = ctx.token_states   # TinyBERT's W_h: a per-token linear map, no BN (see notes)
        self.regressors = nn.ModuleList(Connector(ctx.student_stages[i][0], ctx.teacher_stages[j][0],
                                                  force=tokens, norm=not tokens) for i, j in self.pairs)

    @classmethod
    def check_pair(cls, ctx, **hp) -> list[tuple[int, int]]:
        """The hint pairs; raises ValueError when hint_stage is not one of the student's stages."""
        if ctx.pairs is not None:
            return pair_stages(ctx.student_stages, ctx.teacher_stages, explicit=ctx.pairs)
        n = len(ctx.student_stages)
        hint = hp.get("hint_stage", next(h.default for h in cls.hparams if h.name == "hint_stage"))
        if not 0 <= hint < n:
            raise ValueError(f"fitnet: hint_stage={hint} but the student has stages 0..{n - 1}; "
                             "choose a smaller hint_stage")
        return [(hint, teacher_stage_for(hint, ctx))]

    def forward(self, s: Outputs, t: Outputs, batch: Batch):
        loss = 0.0
        for (i, j), reg in zip(self.pairs, self.regressors):
            fs, ft = match_spatial(s.stages[i], t.stages[j].detach())
            loss = loss + F.mse_loss(reg(fs), ft)
        return {"hint": loss}
