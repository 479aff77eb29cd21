"""Online distillation: no pretrained teacher; peers (or branches) teach each other while they learn.

Every learner is in eval_models(), so the trainer stores each one's val accuracy per epoch and
test accuracy at the end (the first, "student", is the run's student).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..kd.base import Batch, HParam, Paper
from ..kd.functional import kd_loss
from ..models.outputs import TapSpecs
from ..models.taps import tap
from .base import RunContext, Scheme, register_scheme
from .common import parse_archs

_PEER_HPARAMS = (
    HParam("peers", 2, 2, 8, "number of peer networks K (the first is the run's student)"),
    HParam("peer_archs", "", None, None, "comma-separated architectures of all K peers, the run's student first; "
                                         "empty = the student's architecture for every peer"),
)


def build_peers(scheme: Scheme, ctx: RunContext) -> nn.ModuleList:
    """The run's student plus K-1 freshly initialised peers (architectures from peer_archs)."""
    k, archs = scheme.hp["peers"], scheme.hp["peer_archs"]
    if archs:
        archs = parse_archs(scheme.key, "peer_archs", archs)
        if "peers" in ctx.config.scheme_params and len(archs) != k:
            raise ValueError(f"scheme {scheme.key!r}: peers={k} but peer_archs lists {len(archs)} architectures; "
                             "give one of the two, or make them agree")
        if archs[0] != ctx.config.student:
            raise ValueError(f"scheme {scheme.key!r}: the first of peer_archs is the run's student, but it is "
                             f"{archs[0]!r} and the config's student is {ctx.config.student!r}; list the student "
                             "first or set --student")
        if len(archs) < 2:
            raise ValueError(f"scheme {scheme.key!r}: peer_archs must name at least 2 peers")
    else:
        archs = [ctx.config.student] * k
    scheme.hp["peers"] = len(archs)
    scheme.peer_archs = archs
    return nn.ModuleList([ctx.student] + [ctx.make_model(a) for a in archs[1:]])


def peer_names(n: int) -> list[str]:
    return ["student"] + [f"peer{i}" for i in range(1, n)]


class MeanLogits(nn.Module):
    """Evaluation-time ensemble: the mean of the members' logits."""

    def __init__(self, members):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x):
        return torch.stack([m(x) for m in self.members]).mean(0)


@register_scheme
class DML(Scheme):
    """Each peer: CE on the labels + the mean KL towards each other peer's (detached) softened
    output. Targets are detached, so summing all peers' losses into one backward gives each peer
    exactly its own gradient -- the same as the paper's alternating updates within a step."""
    key = "dml"
    name = "Deep Mutual Learning"
    category = "online"
    paper = Paper("Ying Zhang, Tao Xiang, Timothy M. Hospedales, Huchuan Lu", "Deep Mutual Learning", 2018, "CVPR",
                  "1706.00384")
    equation = (r"\mathcal{L}_k = \mathrm{CE}(z_k, y) + \frac{\lambda}{K-1}\sum_{j\neq k} "
                r"T^2\,\mathrm{KL}\big(\sigma(z_j/T)\,\|\,\sigma(z_k/T)\big)")
    hparams = _PEER_HPARAMS + (
        HParam("temperature", 1.0, 1.0, 20.0, "softening temperature T (DML uses 1)"),
        HParam("kl_weight", 1.0, 0.0, 100.0, "weight lambda of the mutual KL term"),
    )
    notes = ("No pretrained teacher. Peers may differ in architecture (peer_archs). All peers are stored and "
             "evaluated (student, peer1, ...); their agreement is a measure of what they taught each other.")

    def __init__(self, ctx: RunContext, **hp):
        super().__init__(ctx, **hp)
        self.peers = build_peers(self, ctx)

    def train_step(self, batch: Batch):
        logits = [p(batch.x) for p in self.peers]
        T, k = self.hp["temperature"], len(logits)
        losses = {}
        for i, (name, z) in enumerate(zip(peer_names(k), logits)):
            losses[f"ce_{name}"] = F.cross_entropy(z, batch.y)
            kl = sum(kd_loss(z, logits[j].detach(), T) for j in range(k) if j != i) / (k - 1)
            losses[f"kl_{name}"] = self.hp["kl_weight"] * kl
        return logits[0], losses

    def eval_models(self):
        return dict(zip(peer_names(len(self.peers)), self.peers))

    def probe_reference(self):
        return self.peers[1]     # probes compare the student with peer1


@register_scheme
class KDCL(Scheme):
    """Every peer learns CE + KD towards one ensemble target built from all peers (detached).
    Default "minlogit" is KDCL-MinLogit: each peer's logits are shifted so the true class is 0,
    and the target takes the class-wise minimum (the most confident-in-y combination); "mean"
    is KDCL-Naive, the averaged logits. The paper's per-peer augmentations are not applied
    (all peers see the same batch). At test time, with no label, the "ensemble" model averages logits."""
    key = "kdcl"
    name = "KD via Collaborative Learning"
    category = "online"
    paper = Paper("Qiushan Guo, Xinjiang Wang, Yichao Wu, Zhipeng Yu, Ding Liang, Xiaolin Hu, Ping Luo",
                  "Online Knowledge Distillation via Collaborative Learning", 2020, "CVPR", "")
    equation = (r"z^{e}_c = \min_k\big(z_{k,c} - z_{k,y}\big),\quad \mathcal{L}_k = \mathrm{CE}(z_k, y) + "
                r"\lambda T^2\,\mathrm{KL}\big(\sigma(z^{e}/T)\,\|\,\sigma(z_k/T)\big)")
    hparams = _PEER_HPARAMS + (
        HParam("ensemble", "minlogit", help="how the peers' logits make the target: minlogit | mean",
               choices=("minlogit", "mean")),
        HParam("temperature", 4.0, 1.0, 20.0, "softening temperature T"),
        HParam("kd_weight", 1.0, 0.0, 100.0, "weight lambda of the KD-to-ensemble term"),
    )
    notes = "No pretrained teacher. Peers, and their mean-logit ensemble, are all evaluated and stored."

    def __init__(self, ctx: RunContext, **hp):
        super().__init__(ctx, **hp)
        self.peers = build_peers(self, ctx)

    def ensemble_target(self, logits: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        z = torch.stack([l.detach() for l in logits])            # (K, B, C)
        if self.hp["ensemble"] == "mean":
            return z.mean(0)
        z = z - z.gather(2, y.view(1, -1, 1).expand(z.shape[0], -1, 1))
        return z.min(0).values

    def train_step(self, batch: Batch):
        logits = [p(batch.x) for p in self.peers]
        target = self.ensemble_target(logits, batch.y)
        losses = {}
        for name, z in zip(peer_names(len(logits)), logits):
            losses[f"ce_{name}"] = F.cross_entropy(z, batch.y)
            losses[f"kd_{name}"] = self.hp["kd_weight"] * kd_loss(z, target, self.hp["temperature"])
        return logits[0], losses

    def eval_models(self):
        return dict(zip(peer_names(len(self.peers)), self.peers)) | {"ensemble": MeanLogits(self.peers)}

    def probe_reference(self):
        return self.peers[1]


class _Branch(nn.Module):
    """Eval view of one ONE branch (or the gated ensemble, branch=None): the shared trunk runs
    inside the base model and its last stage's input is handed to the branch's head."""

    def __init__(self, one: "ONE", branch: int | None):
        super().__init__()
        self.one, self.branch = one, branch

    def forward(self, x):
        logits, h = self.one.all_logits(x)
        return logits[self.branch] if self.branch is not None else self.one.ensemble(logits, h)

    def state_dict(self, *args, **kwargs):   # the saved model is the whole multi-branch net, once
        return self.one.state_dict(*args, **kwargs)


class _Gate(nn.Module):
    """ONE's gate before its softmax: Linear -> BatchNorm1d -> ReLU (official control_v1, bn_v1). A training
    batch of one sample (a last partial batch) is normalised with the running statistics instead."""

    def __init__(self, c_in: int, branches: int):
        super().__init__()
        self.fc, self.bn = nn.Linear(c_in, branches), nn.BatchNorm1d(branches)

    def forward(self, x):
        x = self.fc(x)
        if self.training and len(x) == 1:
            bn = self.bn
            x = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        else:
            x = self.bn(x)
        return F.relu(x)


@register_scheme
class ONE(Scheme):
    """On-the-fly Native Ensemble, generic over the zoo: the shared low-level layers are the
    student up to its last stage; each extra branch is a freshly initialised copy of the last
    stage + classifier (taken from a new instance of the student's architecture), with global
    average pooling between them. Branch 1 *is* the student. A gate on the pooled trunk feature --
    Linear -> BatchNorm1d -> ReLU -> softmax over branches, as the official model (Lan1991Xu/ONE_NeurIPS2018,
    models/cifar/resnet.py: control_v1, bn_v1) -- weights the branches' logits into the ensemble teacher.
    The KL term is ramped up as the official cifar_one.py does (utils/ramps.py `sigmoid_rampup`, per epoch):
    w(e) = exp(-5 (1 - min(e / R, 1))^2) for the 0-based epoch e, R = 80 of its 300 epochs by default.
    Works for models whose last stage feeds GAP + classifier directly (cnn_*, resnet*, ShuffleV1):
    this is checked at build time."""
    key = "one"
    name = "On-the-fly Native Ensemble"
    category = "online"
    paper = Paper("Xu Lan, Xiatian Zhu, Shaogang Gong", "Knowledge Distillation by On-the-Fly Native Ensemble",
                  2018, "NeurIPS", "1806.04606")
    equation = (r"z^{e} = \sum_k g_k(x)\, z_k,\ g = \mathrm{softmax}(\mathrm{ReLU}(\mathrm{BN}(W h))),\quad "
                r"\mathcal{L} = \sum_k \mathrm{CE}(z_k, y) + \mathrm{CE}(z^e, y) + "
                r"w(e)\,T^2 \sum_k \mathrm{KL}\big(\sigma(z^e/T)\,\|\,\sigma(z_k/T)\big),\ "
                r"w(e) = e^{-5(1 - \min(e/R, 1))^2}")
    hparams = (
        HParam("branches", 3, 2, 8, "number of branches K (the first is the run's student)"),
        HParam("temperature", 3.0, 1.0, 20.0, "softening temperature T (ONE uses 3)"),
        HParam("rampup", 80 / 300, 0.0, 1.0, "fraction of the run (in whole epochs) over which the KL weight ramps "
                                             "up by exp(-5 (1 - e/R)^2); official 80 of 300 epochs; 0 = no ramp"),
    )
    notes = ("No pretrained teacher. Evaluated: student (= branch 1), branch2..K and the gated ensemble. "
             "The ensemble's KL target is detached, as in the paper. The gate (with BatchNorm1d and ReLU "
             "before the softmax) and the KL ramp-up follow the official code, not only the paper's equations; "
             "earlier versions used softmax(FC) and no ramp-up (rampup=0 turns the ramp off).")

    def __init__(self, ctx: RunContext, **hp):
        super().__init__(ctx, **hp)
        self.student = ctx.student
        specs = TapSpecs.of(self.student, ctx.config.student_stages)
        self.last = specs.stages[-1]
        self.classifier = getattr(self.student, "kd_classifier", None)
        modules = dict(self.student.named_modules())
        if self.classifier is None or self.last not in modules:
            raise ValueError(f"scheme 'one': {ctx.config.student} must declare its last stage and classifier "
                             "(kd_stages / kd_classifier) to be split into branches")
        heads = []
        for _ in range(self.hp["branches"] - 1):
            fresh = dict(ctx.make_model(ctx.config.student).named_modules())
            heads.append(nn.ModuleDict({"stage": fresh[self.last], "fc": fresh[self.classifier]}))
        self.heads = nn.ModuleList(heads)
        self._check_split(ctx)
        self.gate = _Gate(self._h_channels, self.hp["branches"]).to(ctx.device)

    def _head(self, i: int, h: torch.Tensor) -> torch.Tensor:
        """Branch i's logits from the trunk output h (branch 0: the student's own last stage and fc)."""
        if i == 0:
            stage, fc = self.student.get_submodule(self.last), self.student.get_submodule(self.classifier)
        else:
            stage, fc = self.heads[i - 1]["stage"], self.heads[i - 1]["fc"]
        return fc(F.adaptive_avg_pool2d(stage(h), 1).flatten(1))

    @torch.no_grad()
    def _check_split(self, ctx):
        x, _, _ = next(ctx.dataset.batches("train", 2))
        was = self.student.training
        self.student.eval()
        (z,), h = self.all_logits(x, branches=False)
        ok = h.dim() == 4 and torch.allclose(self._head(0, h), z, atol=1e-4, rtol=1e-3)
        self.student.train(was)
        self._h_channels = h.shape[1]
        if not ok:
            raise ValueError(f"scheme 'one': {ctx.config.student}'s last stage ({self.last}) does not feed global "
                             "average pooling + classifier directly, so it cannot be split into branches; use a "
                             "cnn_* or resnet* student")

    def all_logits(self, x, branches: bool = True) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Every branch's logits (the student's first) and h, the shared trunk's output."""
        with tap(self.student, [self.last + ":in"]) as feats:
            z0 = self.student(x)
        h = feats[self.last + ":in"]
        return [z0] + ([self._head(i, h) for i in range(1, len(self.heads) + 1)] if branches else []), h

    def ensemble(self, logits, h):
        g = F.softmax(self.gate(F.adaptive_avg_pool2d(h, 1).flatten(1)), dim=1)     # (B, K)
        return (torch.stack(logits, 2) * g.unsqueeze(1)).sum(2)

    def kl_ramp(self, epoch: int) -> float:
        """The official sigmoid_rampup: exp(-5 (1 - e/R)^2) for the 0-based epoch e, R = rampup x epochs."""
        length = self.hp["rampup"] * self.ctx.epochs
        if length <= 0:
            return 1.0
        phase = 1.0 - min(max(epoch, 0), length) / length
        return math.exp(-5.0 * phase * phase)

    def train_step(self, batch: Batch):
        logits, h = self.all_logits(batch.x)
        z_e = self.ensemble(logits, h)
        T = self.hp["temperature"]
        losses = {"ce_branches": sum(F.cross_entropy(z, batch.y) for z in logits),
                  "ce_ensemble": F.cross_entropy(z_e, batch.y),
                  "kl": self.kl_ramp(batch.epoch) * sum(kd_loss(z, z_e.detach(), T) for z in logits)}
        return logits[0], losses

    def eval_models(self):
        names = ["student"] + [f"branch{i + 1}" for i in range(1, self.hp["branches"])]
        models = {n: (self.student if i == 0 else _Branch(self, i)) for i, n in enumerate(names)}
        return models | {"ensemble": _Branch(self, None)}
