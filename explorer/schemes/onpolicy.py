"""On-policy distillation (GKD, Agarwal et al., ICLR 2024): a fraction lambda of the batches are continuations the
student samples itself, scored token by token by the teacher with the chosen divergence.

On such a batch each window keeps its first `prompt` tokens of real text and the student (in eval mode, no
gradient) samples the rest at `temperature`; the teacher's and the student's next-token distributions on that
text are compared by the config's knowledge terms (gkd with its beta, rkl, kd at T = 1 ...) on the generated
positions only (TRL's GKDTrainer masks the prompt the same way), with no cross-entropy (the text has no labels).
The other batches are the dataset's own text: the same terms plus the run's cross-entropy weight (TRL's GKDTrainer
has no cross-entropy there: ce_weight = 0 is its form; the methods' default CE weight is kept here so lambda = 0 is
the offline run with the same terms).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..kd import get_method
from ..kd.base import Batch, HParam, Outputs
from ..kd.gkd import GeneralizedJSD
from ..models.outputs import forward_outputs
from .base import register_scheme
from .offline import Offline
from .seqkd import check_text_config, text_prompts_hparam


@register_scheme
class OnPolicy(Offline):
    key = "onpolicy"
    name = "On-policy distillation (GKD)"
    category = "offline"
    paper = GeneralizedJSD.paper   # GKD: one paper for its divergence (explorer/kd/gkd.py) and its lambda
    equation = (r"\mathcal{L} = \mathbb{E}_{u \sim \mathrm{Bernoulli}(\lambda)}\Big[u\,\mathbb{E}_{y \sim p_s(\cdot|x)}"
                r"\textstyle\sum_t D\big(p_t \| p_s\big)(y_{<t}) + (1-u)\big(\mathrm{CE} + \sum_t D(p_t\|p_s)\big)"
                r"(y^{data})\Big]")
    hparams = (
        HParam("lmbda", 0.5, 0.0, 1.0, "the fraction of batches whose continuations the student samples (GKD's "
                                       "lambda; TRL's default 0.5); 0 = supervised KD on the dataset's text"),
        text_prompts_hparam(16),
        HParam("temperature", 1.0, 0.05, 5.0, "the student's sampling temperature (TRL's default: 0.9; GKD: 1)"),
    )
    needs_teacher = True
    uses_methods = True
    notes = ("The knowledge terms are the divergence D: logit methods only (gkd, rkl, kd, ...), at least one. "
             "Off-policy batches add the cross-entropy at the run's ce_weight (0 = TRL's GKDTrainer). "
             "Which batches are on-policy is drawn from the run's seed (one Bernoulli(lambda) per batch). The "
             "training accuracy of an on-policy batch is measured against the student's own samples.")

    @classmethod
    def check_config(cls, cfg) -> None:
        check_text_config(cfg, cls.key)
        if not cfg.methods:
            raise ConfigError("methods", "onpolicy needs a divergence to score the student's text with: add a logit "
                              "method (e.g. gkd with beta 0.5, rkl, or kd at temperature 1)")
        for i, term in enumerate(cfg.methods):
            if not get_method(term.key).needs <= {"logits"}:
                raise ConfigError(f"methods[{i}]", f"onpolicy scores generated text by the next-token distributions "
                                  f"only; {term.key} reads features. Use a logit method (gkd, rkl, kd, ...)")

    def __init__(self, ctx, **hp):
        super().__init__(ctx, **hp)
        self.coin = torch.Generator().manual_seed(int(ctx.config.seed) + 7919)   # which batches are on-policy
        self.sampler = torch.Generator().manual_seed(int(ctx.config.seed) + 104729)
        self.on_policy_batches = 0
        self.batches_seen = 0

    def train_step(self, batch: Batch):
        self.batches_seen += 1
        if torch.rand((), generator=self.coin).item() >= self.hp["lmbda"]:
            return super().train_step(batch)
        self.on_policy_batches += 1
        p, t = self.hp["prompt"], batch.x.shape[1]
        seq = self.student.generate(batch.x[:, :p], t + 1 - p, self.hp["temperature"], self.sampler)
        batch.x, batch.y = seq[:, :-1], seq[:, 1:].reshape(-1)
        keep = (torch.arange(t, device=batch.x.device) >= p - 1).repeat(len(batch.x))   # predicts a sampled token
        with torch.no_grad():
            t_logits = forward_outputs(self.teacher, batch.x, {"logits"}, self.t_specs).logits
        s_logits = self.student(batch.x)
        s, te = Outputs(s_logits[keep]), Outputs(t_logits[keep])
        losses = {}
        for method, weight in zip(self.methods, self.weights):
            for name, value in method(s, te, batch).items():
                losses[name] = weight * value
        # the CE term is logged on every batch (0 here), so the epoch means stay comparable across batches
        losses["ce"] = 0.0 * F.cross_entropy(s_logits[:1], batch.y[:1])
        return s_logits, losses

    def epoch_metrics(self) -> dict[str, float]:
        share = self.on_policy_batches / max(self.batches_seen, 1)
        self.on_policy_batches = self.batches_seen = 0
        return {"onpolicy/share": share}
