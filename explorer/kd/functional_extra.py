"""Pure criteria of the methods added with issue 14 (MLKD, NKD, WTTM, CAT-KD, KD-SVD, AB, FT): tensors in,
scalar tensor (or a dict of named scalars) out. functional.py holds the earlier ones (and is near the module
line limit); each function names the official code whose form it follows."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .functional import _non_target, _same_spatial, kd_loss

# ----------------------------------------------------------------------------- response-based


def _share_at_or_below_median(x: torch.Tensor) -> torch.Tensor:
    """The share of the entries of a 1-D tensor that are <= its median (the official MLKD code thresholds
    at np.percentile(x, 50), linear interpolation, which torch.quantile(x, 0.5) matches)."""
    x = x.detach().float()
    return (x <= torch.quantile(x, 0.5)).float().mean()


def class_correlation_loss(student_logits, teacher_logits, temperature):
    """MLKD class level: ||P_t^T P_t - P_s^T P_s||_F^2 / K with P = softmax(z / T), (B, K)."""
    p_s = F.softmax(student_logits / temperature, dim=1)
    p_t = F.softmax(teacher_logits / temperature, dim=1)
    return (p_t.t() @ p_t - p_s.t() @ p_s).pow(2).sum() / student_logits.size(1)


def batch_correlation_loss(student_logits, teacher_logits, temperature):
    """MLKD batch level: ||P_t P_t^T - P_s P_s^T||_F^2 / B with P = softmax(z / T), (B, K)."""
    p_s = F.softmax(student_logits / temperature, dim=1)
    p_t = F.softmax(teacher_logits / temperature, dim=1)
    return (p_t @ p_t.t() - p_s @ p_s.t()).pow(2).sum() / student_logits.size(0)


def mlkd_losses(student_logits, teacher_logits, temperatures=(4.0, 3.0, 5.0, 2.0, 6.0)) -> dict:
    """Jin et al. 2023 (Jin-Ying/Multi-Level-Logit-Distillation, mdistiller/distillers/KD_ours.py
    `KD_ours.forward_train`) with its weak and strong views both the given batch.

    Each level sums its criterion over the temperatures. The official code multiplies each batch-mean loss by
    a 0/1 confidence mask and averages, so a mask acts as the share m of samples (classes) whose teacher
    confidence (summed class probability) is at or below the median, about 1/2:
    instance = (1 + m_i) sum_T KD_T (the masked weak-view term plus the unmasked strong-view term),
    class = m_c sum_T CC_T, batch = m_i sum_T BC_T (the official loss keeps the weak view's CC and BC only).
    """
    p_t = F.softmax(teacher_logits.detach().float(), dim=1)
    m_inst = _share_at_or_below_median(p_t.max(dim=1).values)
    m_cls = _share_at_or_below_median(p_t.sum(dim=0))
    inst = sum(kd_loss(student_logits, teacher_logits, T) for T in temperatures)
    cls = sum(class_correlation_loss(student_logits, teacher_logits, T) for T in temperatures)
    bat = sum(batch_correlation_loss(student_logits, teacher_logits, T) for T in temperatures)
    return {"instance": (1 + m_inst) * inst, "class": m_cls * cls, "batch": m_inst * bat}


def nkd_losses(student_logits, teacher_logits, target, temperature=1.0, gamma=1.5) -> dict:
    """Yang et al. 2023 normalised KD (yzd-v/cls_KD, mmcls/models/dis_losses/nkd.py `NKDLoss`):
    target part -mean_i t_i log s_i at T = 1 (t_i, s_i the target-class probabilities), and
    non-target part -gamma T^2 mean_i sum_{j != y_i} q^t_j log q^s_j with q = softmax over the
    non-target logits / T (the renormalised non-target distribution). Both are cross-entropies, so
    neither is 0 when student = teacher; the non-target one is smallest there."""
    y = target.view(-1, 1)
    log_s = F.log_softmax(student_logits, dim=1).gather(1, y)
    t = F.softmax(teacher_logits, dim=1).gather(1, y)
    target_part = -(t * log_s).mean()
    T = temperature
    log_q_s = F.log_softmax(_non_target(student_logits, target) / T, dim=1)
    q_t = F.softmax(_non_target(teacher_logits, target) / T, dim=1)
    non_target = -gamma * T ** 2 * (q_t * log_q_s).sum(1).mean()
    return {"target": target_part, "non_target": non_target}


def wttm_loss(student_logits, teacher_logits, gamma=0.2):
    """Zheng & Yang 2024 weighted transformed teacher matching (zkxufo/TTM, distiller_zoo/wttm.py `WTTM`):
    the teacher's probabilities power-transformed, p_t^gamma / U with U = sum_k p_{t,k}^gamma (= softmax of
    gamma z_t, i.e. temperature 1/gamma), matched by the untempered student; each sample's KL weighted by U:
    mean_i U_i KL(p_t^gamma / U_i || softmax(z_s)). Computed in log space for stability."""
    log_pow = gamma * F.log_softmax(teacher_logits, dim=1)        # log p_t^gamma
    log_u = torch.logsumexp(log_pow, dim=1, keepdim=True)         # log U, the sample-adaptive weight
    log_q = log_pow - log_u
    kl = (log_q.exp() * (log_q - F.log_softmax(student_logits, dim=1))).sum(1)
    return (log_u.squeeze(1).exp() * kl).mean()


# ----------------------------------------------------------------------------- feature-based

def class_activation_maps(feat: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """CAMs: the classifier applied at every position, (B, C, H, W) x (K, C) -> (B, K, H, W) (no bias, as
    CAT-KD's 1x1 `conv_test` holding the fc weights)."""
    return torch.einsum("bchw,kc->bkhw", feat, weight)


def cat_loss(student_cams, teacher_cams, resolution=2, normalize=False):
    """Guo et al. 2023 class attention transfer (GzyAftermath/CAT-KD, mdistiller/distillers/CAT_KD.py
    `CAT_loss`): both CAMs average-pooled to resolution x resolution, optionally L2-normalised per map
    over its positions (IF_NORMALIZE), then the element-mean squared difference."""
    s = F.adaptive_avg_pool2d(student_cams, resolution)
    t = F.adaptive_avg_pool2d(teacher_cams, resolution)
    if normalize:
        s, t = F.normalize(s, dim=(2, 3)), F.normalize(t, dim=(2, 3))
    return F.mse_loss(s, t)


def _finite(x: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def _drop_nonfinite_grad(x: torch.Tensor) -> torch.Tensor:
    if x.requires_grad:   # SVD's backward is infinite at repeated singular values: drop those entries
        x.register_hook(_finite)
    return x


def svd_vectors(feat: torch.Tensor, n: int, layout: str = "mdistiller"):
    """The first n singular values (L2-normalised) and right singular vectors (each L2-normalised) of each
    sample's feature matrix. layout "mdistiller": the map viewed as (C*H) x W, as mdistiller's KDSVD `svd`
    (feat.view(B, C*H, W)), so the vectors live along the width; "original": (H*W) x C, as the authors'
    TensorFlow code (sseung0703/SSKD_SVD), vectors along the channels."""
    b, c, h, w = feat.shape
    if layout == "mdistiller":
        x = feat.reshape(b, c * h, w)
    elif layout == "original":
        x = feat.flatten(2).transpose(1, 2)
    else:
        raise ValueError(f"svd_vectors: layout must be 'mdistiller' or 'original', got {layout!r}")
    _, s, vh = torch.linalg.svd(_drop_nonfinite_grad(x.float()), full_matrices=False)
    s, v = _finite(s), _finite(vh.transpose(-2, -1))
    return F.normalize(s[:, :n], dim=1), F.normalize(v[:, :, :n], dim=1)


def align_singular_vectors(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """For each of b's vectors, a's vector of largest |cosine| with it, sign-flipped to agree (mdistiller's
    `align_rsv`): a (B, D, n_a), b (B, D, n_b) -> (B, D, n_b)."""
    cosine = a.transpose(-2, -1) @ b
    best = cosine.abs().max(dim=1, keepdim=True).values
    pick = torch.where(cosine.abs() == best, torch.sign(cosine), torch.zeros_like(cosine))
    return a @ pick


def kdsvd_loss(student_feats, teacher_feats, k=1, layout="mdistiller"):
    """Lee et al. 2018 (mdistiller/distillers/KDSVD.py `kdsvd_loss`): per stage the teacher's top-k right
    singular vectors and the student's k+3 aligned to them, both scaled by the teacher's normalised singular
    values; between consecutive stages the Gaussian RBF exp(-(v_i - v_j)^2 / 8) of every pair of vector
    components; the squared student-teacher RBF difference summed (non-finite entries dropped) / batch."""
    if len(student_feats) != len(teacher_feats) or len(student_feats) < 2:
        raise ValueError("kdsvd_loss: needs two equally long lists of >= 2 feature maps")
    total, prev = 0.0, None
    for fs, ft in zip(student_feats, teacher_feats):
        s_t, v_t = svd_vectors(ft.detach(), k, layout)
        _, v_s = svd_vectors(fs, k + 3, layout)
        if v_s.shape[1] != v_t.shape[1]:
            need = "widths" if layout == "mdistiller" else "channels"
            raise ValueError(f"kdsvd_loss: singular vectors of length {v_s.shape[1]} (student) vs {v_t.shape[1]} "
                             f"(teacher); layout {layout!r} needs equal {need}")
        v_s = align_singular_vectors(v_s, v_t)
        v_t, v_s = v_t * s_t.unsqueeze(1), v_s * s_t.unsqueeze(1)
        if prev is not None:
            rbf_s = torch.exp(-(v_s.unsqueeze(2) - prev[0].unsqueeze(1)).pow(2) / 8)
            rbf_t = torch.exp(-(v_t.unsqueeze(2) - prev[1].unsqueeze(1)).pow(2) / 8)
            total = total + _finite((rbf_s - rbf_t).pow(2)).sum()
        prev = (v_s, v_t)
    return total / student_feats[0].size(0)


def ab_loss(student_preacts, teacher_preacts, margin=1.0):
    """Heo et al. 2019 activation-boundary loss (RepDistiller distiller_zoo/AB.py `ABLoss`): per stage the
    alternative L2 sum of (s + m)^2 where s > -m but the teacher neuron is off (t <= 0) and (s - m)^2 where
    s <= m but it is on, divided by the batch size and scaled by 3/1000; stage i of n weighted 2^(i-n+1)
    (the deepest 1, each shallower one half the next); the stage terms summed."""
    n, b = len(student_preacts), student_preacts[0].size(0)
    total = 0.0
    for i, (s, t) in enumerate(zip(student_preacts, teacher_preacts)):
        _same_spatial(s, t, "ab_loss")
        off, on = t <= 0, t > 0
        alt = (s + margin).pow(2) * ((s > -margin) & off) + (s - margin).pow(2) * ((s <= margin) & on)
        total = total + 2.0 ** (i - n + 1) * alt.sum() / b / 1000 * 3
    return total


def ft_factor(factor: torch.Tensor, form: str = "repdistiller") -> torch.Tensor:
    """A factor as FT compares it, (B, D) unit rows. "repdistiller" (distiller_zoo/FT.py `factor`, p1 = 2):
    the channel mean of its square, flattened; "paper" (Kim et al. 2018, Knowledge-Distillation-Zoo ft.py):
    the whole factor, flattened."""
    if form == "repdistiller":
        return F.normalize(factor.pow(2).mean(1).flatten(1), dim=1)
    if form == "paper":
        return F.normalize(factor.flatten(1), dim=1)
    raise ValueError(f"ft_factor: form must be 'repdistiller' or 'paper', got {form!r}")


def ft_loss(student_factor, teacher_factor, form: str = "repdistiller"):
    """Kim et al. 2018 factor transfer: mean absolute difference of the normalised factors (p2 = 1)."""
    _same_spatial(student_factor, teacher_factor, "ft_loss")
    return (ft_factor(student_factor, form) - ft_factor(teacher_factor, form)).abs().mean()
