"""What the language-model views compute, from a run's models (not probes): next-token distributions on the same
contexts, the teacher-student KL at every position of a text, samples with their perplexity under the teacher,
and the per-head attention of a context. Plain torch on CPU; the page (pages/9_Language_models.py) lays them out."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..models.outputs import TapSpecs, forward_outputs
from ..models.sequence import batch_logits, token_rows


def encode(tokenizer, text: str, context: int) -> torch.Tensor:
    """(1, <= context) ids of the last `context` tokens of text (characters outside the vocabulary dropped)."""
    text = "".join(ch for ch in text if ch in tokenizer.index) or tokenizer.vocab[0]
    return tokenizer.encode(text)[-context:].unsqueeze(0)


@torch.no_grad()
def next_token_probs(models: dict, ids: torch.Tensor, temperature: float = 1.0) -> dict[str, torch.Tensor]:
    """Each model's distribution of the token after the context `ids` (1, T): softmax(z / temperature), (V,)."""
    return {name: F.softmax(batch_logits(m, ids)[0, -1].float() / temperature, dim=-1) for name, m in models.items()}


def entropy(p: torch.Tensor) -> float:
    """Shannon entropy in nats."""
    return float(-(p * p.clamp_min(1e-12).log()).sum())


@torch.no_grad()
def token_kl(teacher, student, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """At every position of ids (1, T): KL(teacher || student) of the next-token distributions (nats), both
    models' top-1 tokens and whether they differ."""
    zt, zs = batch_logits(teacher, ids)[0].float(), batch_logits(student, ids)[0].float()
    lt, ls = F.log_softmax(zt, -1), F.log_softmax(zs, -1)
    kl = (lt.exp() * (lt - ls)).sum(-1)
    top_t, top_s = zt.argmax(-1), zs.argmax(-1)
    return {"kl": kl, "teacher_top": top_t, "student_top": top_s, "differs": top_t != top_s}


@torch.no_grad()
def perplexity_under(model, ids: torch.Tensor, start: int = 1) -> float:
    """exp(mean NLL) of ids (1, T) under `model`, over the tokens from position `start` on (each read with the
    `context` tokens before it, at most)."""
    context = getattr(model, "context", ids.shape[1])
    nll, n = 0.0, 0
    for pos in range(max(start, 1), ids.shape[1]):
        window = ids[:, max(0, pos - context):pos]
        z = batch_logits(model, window)[0, -1].float()
        nll -= float(F.log_softmax(z, -1)[ids[0, pos]])
        n += 1
    return math.exp(nll / max(n, 1))


@torch.no_grad()
def samples(models: dict, reference, prompt: torch.Tensor, n: int, temperature: float, seed: int = 0) -> dict:
    """{name: (continuation ids (n,), perplexity of the continuation under `reference`)} from the same prompt."""
    out = {}
    for name, m in models.items():
        seq = m.generate(prompt, n, temperature, torch.Generator().manual_seed(seed))
        out[name] = (seq[0, prompt.shape[1]:], perplexity_under(reference, seq, prompt.shape[1]))
    return out


@torch.no_grad()
def attention(model, ids: torch.Tensor, block: int = -1) -> torch.Tensor:
    """The causal attention (heads, T, T) of one block of a sequence model on ids (1, T)."""
    specs = TapSpecs.of(model)
    out = forward_outputs(model, ids, {"attention"}, specs)
    return out.attentions[block][0].float()


@torch.no_grad()
def block_cka(teacher, student, ids: torch.Tensor, student_name: str = "student"):
    """Linear CKA of every teacher block's output with every student block's, tokens as samples: ids (B, T) ->
    DataFrame (teacher blocks x student blocks)."""
    import pandas as pd

    from .cka import linear_cka
    feats = {}
    for who, m in (("teacher", teacher), (student_name, student)):
        specs = TapSpecs.of(m)
        out = forward_outputs(m, ids, {"stages"}, specs)
        feats[who] = (list(specs.stages), [token_rows(s) for s in out.stages])
    (tn, tf), (sn, sf) = feats["teacher"], feats[student_name]
    return pd.DataFrame([[linear_cka(a, b) for b in sf] for a in tf], index=tn, columns=sn)
