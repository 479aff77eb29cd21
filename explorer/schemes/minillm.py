"""MiniLLM (Gu, Dong, Wei, Huang, ICLR 2024): the student minimises the reverse KL KL(p_s || p_t) over whole
sequences by policy gradient on the text it samples, the teacher's log-probabilities as its reward.

Follows microsoft/LMOps minillm/ (minillm/sampler.py, losses.py, utils.py; script scripts/gpt2/minillm/train_*.sh):
  - sampling: each window keeps its first `prompt` tokens of real text and the rest is drawn from the mixture
    (1 - alpha) p_s + alpha p_t (teacher-mixed sampling, --teacher-mixed-alpha 0.2; GPT.generate's mix_in);
  - per-token reward r_t = log p_t(y_t) - log p_s(y_t) (reward.py's teacher log-softmax plus the sampler's
    "ent_rewards" = -log p_s), divided by --reward-scaling 0.5, clipped to +-100 (--cliprange-reward);
  - return R_t = sum_{k >= t} gamma^(k-t) r_k with gamma 0.95 (their default), divided by the tokens left, n - t
    (--length-norm), then whitened over the batch (mean 0, variance 1): the advantage A_t;
  - importance weight w_t = p_s(y_t) / ((1 - alpha) p_s(y_t) + alpha p_t(y_t)) per token, inside PPO's ratio
    rho_t = w_t p_s(y_t) / p_s^old(y_t), clipped to 1 +- 0.2 in max(-A rho, -A clip(rho)) (their _pg_loss);
  - the single-step term: the exact reverse KL over the vocabulary at each generated position (--single-step-reg,
    their _reg_loss: cross-entropy minus the student's entropy), weight 1;
  - the pt term on the training windows: (1 - kd_ratio) CE + kd_ratio * word-level KD (--kd-ratio 0.5), added at
    --lm-coef 1. Their word-level KD is the soft cross-entropy -sum p_t log p_s; here the forward KL, which differs
    by the teacher's entropy (a constant: same gradient), so the logged pt_kd reads 0 at a perfect fit.
Where the code and the paper (Sec. 2.2: R^Norm_{t+1} = mean of log p_t/p_s over y_{t+1..T}, w_t on both terms) differ,
the code's form is followed, as behind the published numbers: the return is discounted and starts at t (the single-step
term counts r_t again), it is whitened, and the single-step term is not weighted by w_t.
Simplified for the budget (said in `notes`): one policy step per batch of rollouts (their --ppo-epochs 4 over a store
of 256 rollouts), so the old policy is the current one and rho_t = w_t in value; the rollouts' prompts are the batch's
own windows, which are also the pt batch (theirs: Dolly prompts and an OpenWebText pt batch); the student starts from
scratch (theirs: a supervised fine-tuned checkpoint), at the run's learning rate; no EOS (fixed-length windows).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..kd.base import Batch, HParam
from ..kd.divergences import forward_kl, reverse_kl
from ..kd.rkl import ReverseKL
from ..models.gpt import GPT
from .base import RunContext, Scheme, register_scheme
from .common import KeepsFrozen
from .seqkd import check_text_config, text_prompts_hparam

REWARD_CLIP = 100.0   # their --cliprange-reward 100 (train_*.sh): the scaled reward is clipped to +-100


def length_normalised_returns(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """(B, n) per-token rewards -> R_t / (n - t): the discounted return from t on, divided by the tokens left."""
    n = rewards.shape[1]
    returns, running = torch.empty_like(rewards), torch.zeros_like(rewards[:, 0])
    for t in reversed(range(n)):
        running = rewards[:, t] + gamma * running
        returns[:, t] = running
    return returns / torch.arange(n, 0, -1, device=rewards.device, dtype=rewards.dtype)


def whiten(x: torch.Tensor) -> torch.Tensor:
    """Mean 0, variance 1 over every element (unbiased variance, as their utils.whiten)."""
    var, mean = torch.var_mean(x)
    return (x - mean) * torch.rsqrt(var + 1e-8)


def minillm_terms(s_logits: torch.Tensor, t_logits: torch.Tensor, tokens: torch.Tensor, alpha: float, gamma: float,
                  reward_scaling: float, cliprange: float) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """MiniLLM's loss on sampled continuations. s_logits (with gradient) and t_logits: (B, n, V), the next-token
    logits at the n positions that predict `tokens` (B, n), the sampled ones. Returns the terms {"pg", "single_step"}
    and detached stats {"reward": mean r_t before scaling, "rev_kl", "weight": mean w_t}."""
    log_s, log_t = F.log_softmax(s_logits.float(), -1), F.log_softmax(t_logits.float(), -1)
    logp = log_s.gather(-1, tokens[..., None]).squeeze(-1)       # log p_s(y_t), with gradient
    old = logp.detach()                                           # the policy that sampled (one step per rollout)
    logq = log_t.gather(-1, tokens[..., None]).squeeze(-1)       # log p_t(y_t)
    reward = logq - old
    weight = torch.exp(old - torch.log((1 - alpha) * old.exp() + alpha * logq.exp()))
    scaled = (reward / reward_scaling).clamp(-REWARD_CLIP, REWARD_CLIP)
    advantage = whiten(length_normalised_returns(scaled, gamma))
    ratio = torch.exp(logp - old) * weight
    pg = torch.max(-advantage * ratio, -advantage * ratio.clamp(1 - cliprange, 1 + cliprange)).mean()
    single_step = reverse_kl(s_logits, t_logits)
    stats = {"reward": reward.mean(), "rev_kl": single_step.detach(), "weight": weight.mean()}
    return {"pg": pg, "single_step": single_step}, stats


@register_scheme
class MiniLLM(KeepsFrozen, Scheme):
    key = "minillm"
    name = "MiniLLM (reverse KL, policy gradient)"
    category = "offline"
    paper = ReverseKL.paper   # MiniLLM: one paper for its token-level form (explorer/kd/rkl.py) and this one
    equation = (r"\mathcal{L} = \frac{1}{n}\sum_t \Big[\max\big(-A_t\rho_t,\,-A_t\,\mathrm{clip}(\rho_t, 1 \pm "
                r"\epsilon)\big) + \mathrm{KL}\big(p_s \| p_t\big)(y_{<t})\Big] + c\,\big[(1-\kappa)\,\mathrm{CE} + "
                r"\kappa\,\mathrm{KL}(p_t \| p_s)\big](x),\quad y \sim (1-\alpha)\,p_s + \alpha\,p_t,\quad \rho_t = "
                r"\frac{p_s(y_t)}{(1-\alpha)\,p_s(y_t) + \alpha\,p_t(y_t)},\quad A = \mathrm{whiten}\Big(\frac{1}{n-t}"
                r"\sum_{k \ge t}\gamma^{k-t}\,\frac{\log p_t(y_k) - \log p_s(y_k)}{s}\Big)")
    hparams = (
        text_prompts_hparam(32),
        HParam("alpha", 0.2, 0.0, 1.0, "teacher-mixed sampling: the teacher's share of the sampling distribution "
                                       "(official --teacher-mixed-alpha 0.2); 0 = the student's own samples"),
        HParam("gamma", 0.95, 0.0, 1.0, "discount of the long-term return (official default 0.95)"),
        HParam("reward_scaling", 0.5, 0.01, 100.0, "the reward r_t is divided by this (official --reward-scaling 0.5)"),
        HParam("cliprange", 0.2, 0.0, 1.0, "PPO clip of the importance ratio, 1 +- this (official default 0.2)"),
        HParam("kd_ratio", 0.5, 0.0, 1.0, "pt term: the word-level KD's share, CE gets 1 - this (official 0.5)"),
        HParam("lm_coef", 1.0, 0.0, 10.0, "weight of the pt term on the training windows (official --lm-coef 1); "
                                          "0 = the policy-gradient terms alone"),
    )
    needs_teacher = True
    uses_methods = False
    notes = ("The teacher and student must be gpt_* models (mixed sampling reads both step by step). The official "
             "code's form where it differs from the paper: discounted return from t on, whitened; single-step term "
             "not weighted by w_t. Simplified for the budget: one policy step per batch of rollouts (official: 4 PPO "
             "epochs over 256 stored rollouts), so the ratio equals the importance weight; the prompts are the batch's "
             "windows, also the pt batch; the student starts from scratch at the run's lr (official: from an SFT "
             "checkpoint at 5e-6). The pt term's word-level KD is the forward KL (official: the soft cross-entropy, "
             "the same gradient). Epoch metrics: minillm/reward (mean log p_t - log p_s of the sampled tokens), "
             "minillm/rev_kl (the exact reverse KL at the sampled positions), minillm/weight (mean importance "
             "weight). Training accuracy: on the windows.")
    frozen = ("teacher",)

    @classmethod
    def check_config(cls, cfg) -> None:
        check_text_config(cfg, cls.key)

    def __init__(self, ctx: RunContext, **hp):
        super().__init__(ctx, **hp)
        self.student, self.teacher = ctx.student, ctx.teacher
        for role, model in (("student", self.student), ("teacher", self.teacher)):
            if not isinstance(model, GPT):
                raise ValueError(f"minillm samples from the student and the teacher token by token: the {role} must "
                                 f"be a gpt_* model, got {type(model).__name__}")
        self.sampler = torch.Generator().manual_seed(int(ctx.config.seed) + 104729)
        self._sums: dict[str, torch.Tensor] = {}
        self._batches = 0

    def train_step(self, batch: Batch):
        hp, b, t = self.hp, len(batch.x), batch.x.shape[1]
        p = hp["prompt"]
        seq = self.student.generate(batch.x[:, :p], t + 1 - p, 1.0, self.sampler, mix_in=self.teacher,
                                    mix_in_alpha=hp["alpha"])
        both = torch.cat([seq[:, :-1], batch.x])   # the sampled text, then the windows: one forward per model
        with torch.no_grad():
            t_logits = self.teacher(both).reshape(2 * b, t, -1)
        s_logits = self.student(both).reshape(2 * b, t, -1)
        terms, stats = minillm_terms(s_logits[:b, p - 1:], t_logits[:b, p - 1:], seq[:, p:], hp["alpha"],
                                     hp["gamma"], hp["reward_scaling"], hp["cliprange"])
        s_text, t_text = s_logits[b:].reshape(b * t, -1), t_logits[b:].reshape(b * t, -1)
        coef, kappa = hp["lm_coef"], hp["kd_ratio"]
        losses = terms | {"ce": coef * (1 - kappa) * F.cross_entropy(s_text, batch.y),
                          "pt_kd": coef * kappa * forward_kl(s_text, t_text)}
        for k, v in stats.items():   # summed on the device, read once per epoch
            self._sums[k] = self._sums[k] + v if k in self._sums else v
        self._batches += 1
        return s_text, losses

    def epoch_metrics(self) -> dict[str, float]:
        values = {f"minillm/{k}": v.item() / max(self._batches, 1) for k, v in self._sums.items()}
        self._sums, self._batches = {}, 0
        return values

    def eval_models(self):
        return {"student": self.student}
