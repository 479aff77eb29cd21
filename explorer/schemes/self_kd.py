"""Self-distillation: the student teaches itself (deeper layers, other samples, earlier epochs, or
a hand-made distribution). No pretrained teacher is loaded, except by TF-KD's "self" variant."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data import augment_batch
from ..kd.base import Batch, HParam, Paper
from ..kd.functional import kd_loss
from ..models.outputs import TapSpecs, forward_outputs
from ..models.taps import tap
from .base import RunContext, Scheme, register_scheme
from .common import KeepsFrozen, freeze, soft_ce


# ----------------------------------------------------------------------------- BYOT

class _AuxHead(nn.Module):
    """A shallow classifier on one stage: conv3x3 (to the embedding width) - BN - ReLU - GAP - linear.
    The pooled feature is what the hint loss pulls towards the deepest embedding."""

    def __init__(self, cin: int, width: int, num_classes: int, stride: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(cin, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.fc = nn.Linear(width, num_classes)

    def forward(self, feat):
        f = F.adaptive_avg_pool2d(self.conv(feat), 1).flatten(1)
        return self.fc(f), f


class _AuxView(nn.Module):
    """Eval view of one auxiliary classifier: the student runs with a tap on the head's stage."""

    def __init__(self, student: nn.Module, spec: str, head: _AuxHead):
        super().__init__()
        self.student, self.spec, self.head = student, spec, head

    def forward(self, x):
        with tap(self.student, [self.spec]) as feats:
            self.student(x)
        return self.head(feats[self.spec])[0]


@register_scheme
class BYOT(Scheme):
    """Auxiliary heads on every tapped stage but the deepest (ResNets: stem, layer1, layer2;
    cnn_*: stage1, stage2) learn from the labels, from the deepest classifier's softened output
    and from its embedding (feature hint); the deepest classifier learns from the labels only.
    Heads are found by forward hooks, so any zoo model works. All heads are evaluated (aux1, ...)."""
    key = "byot"
    name = "Be Your Own Teacher"
    category = "self"
    paper = Paper("Linfeng Zhang, Jiebo Song, Anni Gao, Jingwei Chen, Chenglong Bao, Kaisheng Ma",
                  "Be Your Own Teacher: Improve the Performance of Convolutional Neural Networks via Self Distillation",
                  2019, "ICCV", "1905.08094")
    equation = (r"\mathcal{L} = \mathrm{CE}(z_C, y) + \sum_{i<C}\Big[(1-\alpha)\,\mathrm{CE}(z_i, y) + "
                r"\alpha T^2\,\mathrm{KL}\big(\sigma(z_C/T)\,\|\,\sigma(z_i/T)\big) + \lambda\,\|F_i - F_C\|_2^2\Big]")
    hparams = (
        HParam("alpha", 0.3, 0.0, 1.0, "weight of the KD-from-deepest term in each shallow head's loss"),
        HParam("temperature", 3.0, 1.0, 20.0, "softening temperature T"),
        HParam("hint_weight", 0.03, 0.0, 10.0, "weight lambda of the feature hint (L2 to the deepest embedding)"),
    )
    notes = "No teacher. The deepest classifier's targets are detached, as in the official code."

    def __init__(self, ctx: RunContext, **hp):
        super().__init__(ctx, **hp)
        self.student = ctx.student
        self.specs = TapSpecs.of(self.student, ctx.config.student_stages)
        if self.specs.embedding is None or len(self.specs.stages) < 2:
            raise ValueError("scheme 'byot' needs a student with >= 2 stage taps and an embedding tap")
        with torch.no_grad():
            was = self.student.training
            self.student.eval()
            out = forward_outputs(self.student, next(ctx.dataset.batches("train", 2))[0],
                                  {"stages", "embedding"}, self.specs)
            self.student.train(was)
        width, last_h = out.embedding.shape[1], out.stages[-1].shape[-1]
        self.heads = nn.ModuleList(
            _AuxHead(f.shape[1], width, ctx.dataset.num_classes, 2 if f.shape[-1] > last_h else 1)
            for f in out.stages[:-1])

    def train_step(self, batch: Batch):
        s = forward_outputs(self.student, batch.x, {"stages", "embedding"}, self.specs)
        a, T = self.hp["alpha"], self.hp["temperature"]
        target, f_deep = s.logits.detach(), s.embedding.detach()
        ce = kd = hint = 0.0
        for head, feat in zip(self.heads, s.stages[:-1]):
            z, f = head(feat)
            ce = ce + (1 - a) * F.cross_entropy(z, batch.y)
            kd = kd + a * kd_loss(z, target, T)
            hint = hint + self.hp["hint_weight"] * (f - f_deep).pow(2).sum(1).mean()
        return s.logits, {"ce": F.cross_entropy(s.logits, batch.y), "aux_ce": ce, "aux_kd": kd, "aux_hint": hint}

    def eval_models(self):
        return {"student": self.student} | {
            f"aux{i + 1}": _AuxView(self.student, spec, head)
            for i, (spec, head) in enumerate(zip(self.specs.stages[:-1], self.heads))}


# ----------------------------------------------------------------------------- CS-KD

@register_scheme
class CSKD(Scheme):
    """Class-wise self-KD: for each sample, another *training* sample of the same class is drawn
    (from the whole training set, not only the batch, so a class seen once per batch still has a
    partner); both go through the model in one pass, and the sample's prediction is pulled towards
    the partner's (detached) softened prediction. CE is on the original samples only (official code)."""
    key = "cskd"
    name = "Class-wise Self-KD"
    category = "self"
    paper = Paper("Sukmin Yun, Jongjin Park, Kimin Lee, Jinwoo Shin",
                  "Regularizing Class-wise Predictions via Self-knowledge Distillation", 2020, "CVPR", "2003.13964")
    equation = (r"\mathcal{L} = \mathrm{CE}(z(x), y) + \lambda T^2\,\mathrm{KL}\big(\sigma(z(x')/T)\,\|\,"
                r"\sigma(z(x)/T)\big),\ y(x') = y(x),\ x' \neq x")
    hparams = (
        HParam("temperature", 4.0, 1.0, 20.0, "softening temperature T"),
        HParam("lam", 1.0, 0.0, 100.0, "weight lambda of the class-wise consistency term"),
    )
    notes = "No teacher. A step costs two forward passes' worth of images (the batch and its partners)."

    def __init__(self, ctx: RunContext, **hp):
        super().__init__(ctx, **hp)
        self.student = ctx.student
        y = ctx.dataset.train.y
        self.register_buffer("by_class", torch.argsort(y, stable=True), persistent=False)
        counts = torch.bincount(y, minlength=ctx.dataset.num_classes)
        self.register_buffer("counts", counts, persistent=False)
        self.register_buffer("starts", torch.cumsum(counts, 0) - counts, persistent=False)
        self.gen = torch.Generator().manual_seed(ctx.config.seed + 1)

    def partners(self, index: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Training-set rows of a random other sample of each sample's class (itself only if alone)."""
        n = self.counts[y]
        r = (torch.rand(len(y), generator=self.gen).to(y.device) * n).long()
        pick = self.by_class[self.starts[y] + r]
        again = (pick == index) & (n > 1)          # drew itself: take the next one of its class
        r2 = torch.where(again, (r + 1) % n, r)
        return self.by_class[self.starts[y] + r2]

    def train_step(self, batch: Batch):
        data, cfg = self.ctx.dataset, self.ctx.config
        x2 = data.normalize(data.train.x[self.partners(batch.index, batch.y)])
        if cfg.augment and data.spec.augment != "none":
            x2 = augment_batch(x2, data.spec.pad, flip=data.spec.augment == "crop_flip", generator=self.gen)
        z = self.student(torch.cat([batch.x, x2]))
        z1, z2 = z[:len(batch.y)], z[len(batch.y):]
        return z1, {"ce": F.cross_entropy(z1, batch.y),
                    "cls": self.hp["lam"] * kd_loss(z1, z2.detach(), self.hp["temperature"])}

    def eval_models(self):
        return {"student": self.student}


# ----------------------------------------------------------------------------- TF-KD

@register_scheme
class TFKD(KeepsFrozen, Scheme):
    """Teacher-free KD. "virtual": the teacher is a hand-designed distribution p^d -- probability a on
    the correct class, (1-a)/(K-1) elsewhere -- passed through softmax(p^d / T) (Tf-KD_reg). By default
    (form "official") it follows the official `loss_kd_regularization` (yuanli2333/Teacher-free-Knowledge-
    Distillation, my_loss_function.py): the student's output is *not* softened (log_softmax of the raw
    logits; only the virtual teacher is divided by T), the KL is nn.KLDivLoss()'s element mean over
    batch x classes, times `multiplier`, no T^2, and a = 0.99. Form "paper" softens the student at T too
    and takes the batch mean, KL(p^d_T || p_T) as the paper writes Tf-KD_reg (this scheme's earlier form;
    with a = 0.9 it is exactly what earlier versions computed). "self": the teacher is a pretrained copy
    of the student's own architecture (Tf-KD_self), trained once by plain CE with the teacher recipe and
    reused; official `loss_kd_self` also takes the element mean (x T^2 x a per-model multiplier, 1 to 100
    in its configs), while ours keeps Hinton's batch mean x T^2."""
    key = "tfkd"
    name = "Teacher-free KD"
    category = "self"
    paper = Paper("Li Yuan, Francis E. H. Tay, Guilin Li, Tao Wang, Jiashi Feng",
                  "Revisiting Knowledge Distillation via Label Smoothing Regularization", 2020, "CVPR", "1909.11723")
    equation = (r"\mathcal{L} = (1-\alpha)\,\mathrm{CE}(z, y) + \alpha\, \tfrac{m}{K}\,"
                r"\mathrm{KL}\big(\sigma(p^d/T)\,\|\,\sigma(z)\big),\ "
                r"p^d_c = a\ \text{if}\ c=y\ \text{else}\ \tfrac{1-a}{K-1}\ "
                r"(\text{KL batch mean; paper form: } m\,\mathrm{KL}(\sigma(p^d/T)\,\|\,\sigma(z/T)))")
    hparams = (
        HParam("variant", "virtual", help="virtual (hand-designed teacher) | self (pretrained copy of the student)",
               choices=("virtual", "self")),
        HParam("alpha", 0.0, 0.0, 1.0, "weight of the KD term; 0 = the variant's default (virtual 0.1, self 0.95)"),
        HParam("temperature", 0.0, 0.0, 100.0, "softening temperature; 0 = the variant's default (virtual 20, self 6)"),
        HParam("correct_prob", 0.99, 0.0, 1.0, "virtual teacher's probability a on the correct class (official 0.99)"),
        HParam("multiplier", 100.0, 0.0, 1e4, "virtual: scale of the KL term (official: 100); self uses T^2"),
        HParam("form", "official", help="virtual: official (raw student log-softmax, element-mean KL, as the "
                                        "authors' code) | paper (student softened at T, batch-mean KL)",
               choices=("official", "paper")),
    )
    notes = ("virtual needs no teacher at all; self trains (or reuses) a teacher of the student's architecture. "
             "Paper and code differ for virtual: the paper softens the student at T, the official code does not "
             "and averages the KL over classes as well as samples (so it is K times smaller); form=official "
             "(default) follows the code, form=paper with correct_prob=0.9 gives this scheme's earlier behaviour.")

    frozen = ("teacher",)
    _DEFAULTS = {"virtual": (0.1, 20.0), "self": (0.95, 6.0)}

    def __init__(self, ctx: RunContext, **hp):
        super().__init__(ctx, **hp)
        alpha, T = self._DEFAULTS[self.hp["variant"]]
        self.alpha = self.hp["alpha"] or alpha
        self.T = self.hp["temperature"] or T
        self.student = ctx.student
        self.teacher = freeze(ctx.load_teacher(ctx.config.student)) if self.hp["variant"] == "self" else None

    def train_step(self, batch: Batch):
        z = self.student(batch.x)
        T, a = self.T, self.alpha
        if self.teacher is None:
            k, p = z.shape[1], self.hp["correct_prob"]
            virtual = torch.full_like(z, (1 - p) / (k - 1)).scatter_(1, batch.y.view(-1, 1), p)
            official = self.hp["form"] == "official"
            log_q = F.log_softmax(z if official else z / T, 1)       # official: the student is not softened
            kd = self.hp["multiplier"] * F.kl_div(log_q, F.softmax(virtual / T, 1), reduction="batchmean")
            if official:
                kd = kd / k                                          # nn.KLDivLoss(): the mean over B x K
        else:
            with torch.no_grad():
                t = self.teacher(batch.x)
            kd = kd_loss(z, t, T)
        return z, {"ce": (1 - a) * F.cross_entropy(z, batch.y), "tfkd": a * kd}

    def eval_models(self):
        return {"student": self.student} | ({"teacher_self": self.teacher} if self.teacher is not None else {})

    def probe_reference(self):
        return self.teacher


# ----------------------------------------------------------------------------- PS-KD

@register_scheme
class PSKD(Scheme):
    """Progressive self-KD: the target of sample i at epoch t is (1 - a_t) onehot(y_i) + a_t p_{t-1}(x_i),
    where p_{t-1} is the model's own softmax on that sample the last time it was seen (a buffer
    over training indices, filled as each batch passes; one-hot until a sample has been seen), and
    a_t = a_T (t+1)/T grows linearly. The buffer is part of the checkpoint, so a resumed run continues."""
    key = "pskd"
    name = "Progressive Self-KD"
    category = "self"
    paper = Paper("Kyungyul Kim, ByeongMoon Ji, Doyoung Yoon, Sangheum Hwang",
                  "Self-Knowledge Distillation with Progressive Refinement of Targets", 2021, "ICCV", "2006.12000")
    equation = (r"\mathcal{L} = \mathrm{CE}\big((1-\alpha_t)\,y + \alpha_t\,p_{t-1}(x),\ \sigma(z)\big),\ "
                r"\alpha_t = \alpha_T\,\tfrac{t+1}{T}")
    hparams = (HParam("alpha_T", 0.8, 0.0, 1.0, "the final weight of the model's own past predictions"),)
    notes = "No teacher. Costs one (n_train x classes) buffer."

    def __init__(self, ctx: RunContext, **hp):
        super().__init__(ctx, **hp)
        self.student = ctx.student
        n, k = len(ctx.dataset.train), ctx.dataset.num_classes
        self.register_buffer("past", torch.zeros(n, k, device=ctx.device))
        self.register_buffer("seen", torch.zeros(n, dtype=torch.bool, device=ctx.device))

    def alpha(self, epoch: int) -> float:
        return self.hp["alpha_T"] * (epoch + 1) / self.ctx.epochs

    def train_step(self, batch: Batch):
        z = self.student(batch.x)
        onehot = F.one_hot(batch.y, z.shape[1]).float()
        prior = torch.where(self.seen[batch.index, None], self.past[batch.index], onehot)
        a = self.alpha(batch.epoch)
        target = (1 - a) * onehot + a * prior
        with torch.no_grad():
            self.past[batch.index] = F.softmax(z.detach().float(), 1)
            self.seen[batch.index] = True
        return z, {"pskd_ce": soft_ce(z, target)}

    def eval_models(self):
        return {"student": self.student}
