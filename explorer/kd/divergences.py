"""Divergences between a teacher's and a student's next-token (or class) distributions, over the last
dimension of logits of any leading shape ((B, K) for images, (B, T, V) for language models), averaged over
every leading position. They are the language-model distillation family's criteria:

    forward KL  KL(p_t || p_s)   word-level KD: the student must cover every mode of the teacher
    reverse KL  KL(p_s || p_t)   MiniLLM's token-level form: the student may pick one mode
    JSD(beta)   beta KL(p_t || m) + (1 - beta) KL(p_s || m),  m = beta p_t + (1 - beta) p_s   (GKD)

GKD's convention (Agarwal et al. 2024, Eq. 1, and TRL's GKDTrainer.generalized_jsd_loss, which produced the
paper's open re-implementations): beta = 0 is taken to mean forward KL and beta = 1 reverse KL -- the limits of
the gradient of JSD(beta) / beta (resp. / (1 - beta)); the interpolated JSD itself vanishes at both ends, so the
ends are special-cased rather than computed from the mixture.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.log_softmax(logits.float() / temperature, dim=-1)


def _mean_over_positions(per_position: torch.Tensor) -> torch.Tensor:
    return per_position.mean() if per_position.dim() else per_position


def kl_of_log_probs(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per position, from log-probabilities (exact where p has zeros: 0 log 0 = 0)."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(p_t || p_s), mean over positions (no T^2 factor: the LM convention of TRL and MiniLLM)."""
    return _mean_over_positions(kl_of_log_probs(_log_probs(teacher_logits, temperature),
                                                _log_probs(student_logits, temperature)))


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(p_s || p_t), mean over positions; its gradient reaches the student through p_s as well."""
    return _mean_over_positions(kl_of_log_probs(_log_probs(student_logits, temperature),
                                                _log_probs(teacher_logits, temperature)))


def generalized_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float = 0.5,
                    temperature: float = 1.0) -> torch.Tensor:
    """GKD's generalised Jensen-Shannon divergence with weight beta on the teacher (see the module docstring)."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    log_s, log_t = _log_probs(student_logits, temperature), _log_probs(teacher_logits, temperature)
    if beta == 0.0:
        return _mean_over_positions(kl_of_log_probs(log_t, log_s))
    if beta == 1.0:
        return _mean_over_positions(kl_of_log_probs(log_s, log_t))
    log_m = torch.logaddexp(log_t + math.log(beta), log_s + math.log1p(-beta))
    per_position = beta * kl_of_log_probs(log_t, log_m) + (1 - beta) * kl_of_log_probs(log_s, log_m)
    return _mean_over_positions(per_position)
