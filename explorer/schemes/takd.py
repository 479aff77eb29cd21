"""Teacher-assistant KD: teacher -> assistant -> student, as one run."""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from ..kd import get_method
from ..kd.base import Batch, HParam, Paper
from ..kd.functional import kd_loss
from ..models.sequence import build_args
from .base import RunContext, register_scheme
from .common import KeepsFrozen, freeze, mid_model, parse_archs
from .offline import Offline


@register_scheme
class TAKD(KeepsFrozen, Offline):
    """Design: the assistant is distilled from the frozen teacher *inside this run*, in an inner
    loop that runs once, at the run's first training step (plain KD: 0.1 CE + 0.9 KD at the run's kd
    temperature, else T=4 -- assistant_temperature --, the run's optimiser -- SGD or AdamW as the run,
    SGD for a DOT run -- and a cosine schedule over `assistant_epochs`), then frozen. The student is then trained exactly like offline KD with the assistant in the teacher's place,
    using the config's knowledge terms. The assistant is evaluated with the student every epoch
    ("assistant" in val/test accuracies) and saved in the checkpoint, so a resumed run skips the
    inner loop. The big teacher's accuracy is the run's teacher_acc. The first epoch's time
    includes the assistant's training. The config's teacher_stages (tap names) are not used: the
    assistant is a zoo model."""
    key = "takd"
    name = "Teacher Assistant KD"
    category = "offline"
    paper = Paper("Seyed Iman Mirzadeh, Mehrdad Farajtabar, Ang Li, Nir Levine, Akihiro Matsukawa, Hassan Ghasemzadeh",
                  "Improved Knowledge Distillation via Teacher Assistant", 2020, "AAAI", "1902.03393")
    equation = r"T \xrightarrow{\ \mathcal{L}_{KD}\ } A \xrightarrow{\ \mathcal{L}_{KD}\ } S"
    hparams = (
        HParam("assistant", "auto", None, None, "the assistant's architecture; auto = the zoo model closest in size "
                                                "to the geometric mean of teacher and student"),
        HParam("assistant_epochs", 0, 0, 10_000, "epochs of the assistant's distillation; 0 = the run's epochs"),
        HParam("assistant_temperature", "auto", None, None,
               "T of the assistant's KD; auto = the run's kd temperature when the run distils with kd (the paper "
               "trains assistant and student with the same KD loss), else 4", kind="auto_number"),
    )
    needs_teacher = True
    uses_methods = True
    notes = "The assistant's distillation is an inner loop at the first step; its accuracy is stored as 'assistant'."
    frozen = ("top_teacher",)

    def __init__(self, ctx: RunContext, **hp):
        cfg, data = ctx.config, ctx.dataset
        arch = hp.get("assistant", "auto")
        if arch == "auto":
            arch = mid_model(cfg.teacher, cfg.student, **build_args(data.shape, data.num_classes))
        else:
            arch = parse_archs(self.key, "assistant", arch)[0]
        assistant = freeze(ctx.make_model(arch))
        super().__init__(dataclasses.replace(ctx, teacher=assistant), **hp)
        self.assistant_arch = arch
        self.top_teacher = ctx.teacher
        self.register_buffer("assistant_ready", torch.zeros((), dtype=torch.bool))

    @classmethod
    def methods_teacher(cls, config, shape, num_classes):
        """The knowledge terms pair the student with the assistant."""
        arch = config.scheme_params.get("assistant", "auto")
        if arch == "auto":
            return mid_model(config.teacher, config.student, **build_args(shape, num_classes))
        return parse_archs(cls.key, "assistant", arch)[0]

    def train_step(self, batch: Batch):
        if not self.assistant_ready:
            self.train_assistant()
        return super().train_step(batch)

    def train_assistant(self):
        """Plain KD from the frozen teacher, in full precision (outside the run's autocast)."""
        cfg, data, a = self.ctx.config, self.ctx.dataset, self.teacher
        epochs = self.hp["assistant_epochs"] or cfg.epochs
        temperature = self.assistant_temperature()
        for p in a.parameters():
            p.requires_grad_(True)
        from ..engine.setup import make_optimizer   # the run's optimiser (AdamW for text); DOT's split step -> SGD
        opt = make_optimizer(dataclasses.replace(cfg, optimizer="sgd") if cfg.optimizer == "dot" else cfg,
                             a.parameters(), self.ctx.device)
        total = epochs * data.steps_per_epoch(cfg.batch_size)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
        gen = torch.Generator().manual_seed(cfg.seed + 7)
        a.train()
        self.ctx.log(f"distilling the assistant {self.assistant_arch} from the teacher ({epochs} epochs) before "
                     "the student's first step")
        phase, done = f"assistant {self.assistant_arch}", 0
        self.ctx.progress(phase, 0, total, epochs)
        with torch.autocast(self.ctx.device.type, enabled=False):
            for _ in range(epochs):
                for x, y, _ in data.batches("train", cfg.batch_size, shuffle=True, augment=cfg.augment, generator=gen):
                    self.ctx.check_cancel()
                    with torch.no_grad():
                        t = self.top_teacher(x)
                    z = a(x)
                    loss = 0.1 * F.cross_entropy(z, y) + 0.9 * kd_loss(z, t, temperature)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    done += 1     # the loss as a tensor: it is read (a device sync) only when recorded
                    self.ctx.progress(phase, done, total, epochs, loss=loss.detach())
        self.ctx.progress(phase, total, total, epochs)
        freeze(a)
        self.assistant_ready.fill_(True)

    def assistant_temperature(self) -> float:
        """The assistant's KD temperature: the hparam, or (auto) the run's kd term's, else 4. On text the run's
        forward KL is kd at T = 1; a character teacher softened at T = 4 is nearly flat, and an assistant taught
        with it ends its budget predicting the most frequent character (measured on pydoc)."""
        t = self.hp["assistant_temperature"]
        if t != "auto":
            return float(t)
        kd = next((term for term in self.ctx.config.methods if term.key == "kd"), None)
        if kd is None:
            return 4.0
        return float(kd.params.get("temperature", next(h.default for h in get_method("kd").hparams
                                                        if h.name == "temperature")))

    def eval_models(self):
        return {"student": self.student, "assistant": self.teacher}
