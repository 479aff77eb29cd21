"""Sequence-level KD (Kim & Rush, EMNLP 2016): the student is trained on the text its teacher generates.

Each training window keeps its first `prompt` tokens of real text; the frozen teacher writes the rest (greedy
decoding by default, the beam-1 case of the paper's beam search; or sampled), once, before the student's first
step -- as the paper decodes the training set once with the teacher and trains on that. The student then learns
the teacher's text with cross-entropy (Seq-KD); the config's knowledge terms (kd, rkl, gkd ...) are added on the
same generated windows (the paper's Seq-KD + Word-KD combination). Text datasets and sequence models only.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError
from ..kd.base import Batch, HParam, Paper
from .base import register_scheme
from .offline import Offline

DECODE_BATCH = 256   # windows decoded at once


def text_prompts_hparam(default: int) -> HParam:
    return HParam("prompt", default, 1, 4096, "tokens of real text each generated window starts from")


def check_text_config(cfg, key: str) -> None:
    """The checks the text schemes share: a text dataset and a prompt shorter than its windows."""
    from ..data import get_dataset_spec
    spec = get_dataset_spec(cfg.dataset)
    if spec.modality != "text":
        raise ConfigError("scheme", f"{key} generates text: it needs a text dataset (pydoc, text-folder), "
                          f"not {cfg.dataset}")
    prompt = cfg.scheme_params.get("prompt")
    if prompt is not None and spec.shape is not None and prompt >= spec.shape[0]:
        raise ConfigError("scheme_params.prompt", f"must be below the window length {spec.shape[0]}, got {prompt}")


@register_scheme
class SequenceKD(Offline):
    key = "seqkd"
    name = "Sequence-level KD"
    category = "offline"
    paper = Paper("Yoon Kim, Alexander M. Rush", "Sequence-Level Knowledge Distillation", 2016, "EMNLP",
                  "1606.07947")
    equation = (r"\mathcal{L} = -\sum_t \log p_s(\hat y_t \mid \hat y_{<t}),\quad \hat y = "
                r"\mathrm{decode}_{teacher}(\text{prompt}) \;(+\ \textstyle\sum_m w_m \mathcal{L}_m \text{ on } \hat y)")
    hparams = (
        text_prompts_hparam(8),
        HParam("decode", "greedy", choices=("greedy", "sample"),
               help="greedy = the teacher's argmax at each position (beam search of width 1; the paper uses beam "
                    "width 5); sample = draw from the teacher's softmax at `temperature`"),
        HParam("temperature", 1.0, 0.05, 5.0, "sampling temperature (decode = sample only)"),
    )
    needs_teacher = True
    uses_methods = True
    notes = ("Generates the distillation data once, before the first step (about one teacher forward pass over the "
             "training windows, with cached keys and values). The training accuracy is measured against the "
             "teacher's text. Greedy decoding, not the paper's beam search (width 5): the convention here.")

    @classmethod
    def check_config(cls, cfg) -> None:
        check_text_config(cfg, cls.key)

    def __init__(self, ctx, **hp):
        super().__init__(ctx, **hp)
        self.generated: torch.Tensor | None = None   # (N, T + 1) the teacher's text per training window

    @torch.no_grad()
    def _generate(self) -> torch.Tensor:
        data, ctx = self.ctx.dataset, self.ctx
        x = data.train.x
        n, t = x.shape
        p = self.hp["prompt"]
        temp = 0.0 if self.hp["decode"] == "greedy" else self.hp["temperature"]
        gen = torch.Generator().manual_seed(int(ctx.config.seed))
        ctx.log(f"seqkd: the teacher writes {t + 1 - p} tokens after each of {n} prompts of {p} tokens "
                f"({self.hp['decode']})")
        out = []
        for start in range(0, n, DECODE_BATCH):
            ctx.check_cancel()
            out.append(self.teacher.generate(x[start:start + DECODE_BATCH, :p], t + 1 - p, temp, gen))
            ctx.progress("teacher decoding", min(start + DECODE_BATCH, n), n)
        return torch.cat(out)

    def train_step(self, batch: Batch):
        if self.generated is None:
            self.generated = self._generate()
        seq = self.generated[batch.index]
        batch.x, batch.y = seq[:, :-1], seq[:, 1:].reshape(-1)   # the loop scores the student on these targets
        return super().train_step(batch)
