"""Pure distillation criteria: tensors in, scalar tensor out. Methods in this package wrap them."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Hinton et al. 2015: KL(p_t^T || p_s^T), batch mean, times T^2 (keeps gradient scale T-independent)."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature ** 2


# ----------------------------------------------------------------------------- response-based

def standardize(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Logit standardisation (Sun et al., CVPR 2024): each sample's logits z-scored over the classes,
    (z - mean) / (eps + std) with the unbiased std, as the official `normalize` (eps added to the std)."""
    mean = logits.mean(dim=-1, keepdim=True)
    return (logits - mean) / (eps + logits.std(dim=-1, keepdim=True))


def _non_target(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, K) -> (B, K-1): drop each row's target column (exact, unlike a -1000 logit mask)."""
    keep = torch.ones_like(x, dtype=torch.bool).scatter_(1, target.view(-1, 1), False)
    return x[keep].view(x.size(0), x.size(1) - 1)


def tckd_nckd(student_logits, teacher_logits, target, temperature=4.0):
    """Zhao et al. 2022's two parts of KD, each batch-mean and times T^2, plus the teacher's p_t.

    TCKD: binary KL between (p_target, 1 - p_target); NCKD: KL among the non-target classes,
    renormalised. Identity (per sample): KD = TCKD + (1 - p_t^T) * NCKD.
    """
    T = temperature
    p_s = F.softmax(student_logits / T, dim=1)
    p_t = F.softmax(teacher_logits / T, dim=1)
    pt_s = p_s.gather(1, target.view(-1, 1))
    pt_t = p_t.gather(1, target.view(-1, 1))
    b_s = torch.cat([pt_s, 1 - pt_s], dim=1).clamp_min(1e-12)   # binary (target, rest)
    b_t = torch.cat([pt_t, 1 - pt_t], dim=1).clamp_min(1e-12)
    tckd = (b_t * (b_t.log() - b_s.log())).sum(1).mean() * T ** 2
    log_q_s = F.log_softmax(_non_target(student_logits, target) / T, dim=1)
    log_q_t = F.log_softmax(_non_target(teacher_logits, target) / T, dim=1)
    nckd = F.kl_div(log_q_s, log_q_t, reduction="batchmean", log_target=True) * T ** 2
    return tckd, nckd, pt_t.squeeze(1)


def dkd_loss(student_logits, teacher_logits, target, alpha=1.0, beta=8.0, temperature=4.0):
    """Decoupled KD (Zhao et al. 2022): alpha * TCKD + beta * NCKD (no warm-up factor here)."""
    tckd, nckd, _ = tckd_nckd(student_logits, teacher_logits, target, temperature)
    return alpha * tckd + beta * nckd


def _pearson_distance(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """1 - mean over rows of the Pearson correlation between matching rows of a and b."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    r = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)
    return 1 - r.mean()


def dist_loss(student_logits, teacher_logits, beta=1.0, gamma=1.0, temperature=1.0):
    """DIST (Huang et al. 2022): beta * inter-class (per-sample rows) + gamma * intra-class
    (per-class columns) Pearson distance of the softened outputs, times T^2."""
    T = temperature
    y_s = F.softmax(student_logits / T, dim=1)
    y_t = F.softmax(teacher_logits / T, dim=1)
    inter = _pearson_distance(y_s, y_t)
    intra = _pearson_distance(y_s.t(), y_t.t())
    return T ** 2 * (beta * inter + gamma * intra)


# ----------------------------------------------------------------------------- feature-based

def _same_spatial(s: torch.Tensor, t: torch.Tensor, fn: str):
    if s.dim() != 4 or t.dim() != 4:
        raise ValueError(f"{fn}: expects (B, C, H, W) feature maps, got {tuple(s.shape)} and {tuple(t.shape)}")
    if s.shape[-2:] != t.shape[-2:]:
        raise ValueError(f"{fn}: spatial sizes differ ({tuple(s.shape[-2:])} vs {tuple(t.shape[-2:])}); "
                         "pool first, e.g. explorer.kd.pairing.match_spatial(s, t)")


def attention_map(feat: torch.Tensor, p: int = 2) -> torch.Tensor:
    """Zagoruyko & Komodakis 2017: L2-normalised mean_c |A|^p, flattened to (B, H*W)."""
    return F.normalize(feat.abs().pow(p).mean(1).flatten(1), dim=1)


def at_loss(student_feat, teacher_feat, p=2):
    """Mean over batch and positions of the squared difference of attention vectors (RepDistiller)."""
    _same_spatial(student_feat, teacher_feat, "at_loss")
    return (attention_map(student_feat, p) - attention_map(teacher_feat, p)).pow(2).mean()


def nst_loss(student_feat, teacher_feat):
    """Huang & Wang 2017: squared MMD, polynomial kernel k(x,y)=(x.y)^2, between the sets of
    L2-normalised channel activation maps (each channel's H*W vector is one sample)."""
    _same_spatial(student_feat, teacher_feat, "nst_loss")
    s = F.normalize(student_feat.flatten(2), dim=2)   # (B, Cs, HW)
    t = F.normalize(teacher_feat.flatten(2), dim=2)   # (B, Ct, HW)
    k = lambda a, b: (a @ b.transpose(1, 2)).pow(2).mean()  # noqa: E731
    return k(t, t) + k(s, s) - 2 * k(s, t)


def fsp_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Yim et al. 2017 "flow" matrix G[i, j] = mean_{h,w} a_i * b_j, (B, Ca, Cb).
    The larger map is average-pooled to the smaller one's size first (RepDistiller)."""
    h, w = min(a.shape[2], b.shape[2]), min(a.shape[3], b.shape[3])
    a = F.adaptive_avg_pool2d(a, (h, w)) if a.shape[-2:] != (h, w) else a
    b = F.adaptive_avg_pool2d(b, (h, w)) if b.shape[-2:] != (h, w) else b
    return a.flatten(2) @ b.flatten(2).transpose(1, 2) / (h * w)


def fsp_loss(student_feats, teacher_feats):
    """Sum over consecutive stage pairs of the mean squared difference of FSP matrices."""
    if len(student_feats) != len(teacher_feats) or len(student_feats) < 2:
        raise ValueError("fsp_loss: needs two equally long lists of >= 2 feature maps")
    loss = 0.0
    for i in range(len(student_feats) - 1):
        g_s = fsp_matrix(student_feats[i], student_feats[i + 1])
        g_t = fsp_matrix(teacher_feats[i], teacher_feats[i + 1])
        if g_s.shape != g_t.shape:
            raise ValueError(f"fsp_loss: FSP matrices {tuple(g_s.shape)} vs {tuple(g_t.shape)}: channel counts differ")
        loss = loss + (g_s - g_t).pow(2).mean()
    return loss


def vid_nll(pred_mean, target, pred_var):
    """Ahn et al. 2019: Gaussian negative log-likelihood (constant dropped), per-channel variance."""
    var = pred_var.view(1, -1, 1, 1)
    return 0.5 * ((pred_mean - target).pow(2) / var + var.log()).mean()


def ofd_loss(student_feat, teacher_feat, margin):
    """Heo et al. 2019 partial L2: target = max(t, margin); positions where the student is below
    a non-positive target are free (ReLU would zero both). Sum over elements / batch size."""
    target = torch.max(teacher_feat, margin.view(1, -1, 1, 1))
    mask = ((student_feat > target) | (target > 0)).float()
    return ((student_feat - target).pow(2) * mask).sum() / student_feat.size(0)


def hcl_loss(student_feats, teacher_feats):
    """Chen et al. 2021 hierarchical context loss: MSE at full size plus pooled 4x4, 2x2, 1x1
    (levels smaller than the map), weights 1, 1/2, 1/4, 1/8, normalised by their sum."""
    total = 0.0
    for fs, ft in zip(student_feats, teacher_feats):
        loss, w, wsum = F.mse_loss(fs, ft), 1.0, 1.0
        for level in (4, 2, 1):
            if level >= fs.shape[2]:
                continue
            w /= 2
            loss = loss + w * F.mse_loss(F.adaptive_avg_pool2d(fs, level), F.adaptive_avg_pool2d(ft, level))
            wsum += w
        total = total + loss / wsum
    return total


# ----------------------------------------------------------------------------- relation-based

def sp_loss(student_feat, teacher_feat):
    """Tung & Mori 2019: ||norm_rows(F_t F_t^T) - norm_rows(F_s F_s^T)||_F^2 / b^2."""
    b = student_feat.size(0)
    s, t = student_feat.reshape(b, -1), teacher_feat.reshape(b, -1)
    g_s = F.normalize(s @ s.t(), dim=1)
    g_t = F.normalize(t @ t.t(), dim=1)
    return (g_t - g_s).pow(2).sum() / b ** 2


def pairwise_distance(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean distances (B, B) with an exact zero diagonal and no NaN gradient at 0."""
    sq = e.pow(2).sum(1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp_min(eps).sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))


def _angles(e: torch.Tensor) -> torch.Tensor:
    """cos of angle e_j - e_i - e_k at vertex i for all triplets, flattened (B^3)."""
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), dim=2)   # diff[i, j] = e_j - e_i
    return (diff @ diff.transpose(1, 2)).flatten()


def rkd_loss(student_emb, teacher_emb, distance_weight=25.0, angle_weight=50.0):
    """Park et al. 2019: Huber on mean-normalised pairwise distances + Huber on triplet angles."""
    s, t = student_emb.flatten(1), teacher_emb.flatten(1)
    d_s, d_t = pairwise_distance(s), pairwise_distance(t)
    d_s = d_s / d_s[d_s > 0].mean()
    d_t = d_t / d_t[d_t > 0].mean()
    loss_d = F.smooth_l1_loss(d_s, d_t)
    loss_a = F.smooth_l1_loss(_angles(s), _angles(t))
    return distance_weight * loss_d + angle_weight * loss_a


def pkt_loss(student_emb, teacher_emb, eps=1e-7):
    """Passalis & Tefas 2018: cosine similarities mapped to [0,1], rows normalised into
    conditional distributions, KL(teacher || student) averaged over all B*B entries."""
    def cond(x):
        x = x.flatten(1)
        x = x / (x.norm(dim=1, keepdim=True) + eps)
        sim = (x @ x.t() + 1) / 2
        return sim / sim.sum(1, keepdim=True)
    p_s, p_t = cond(student_emb), cond(teacher_emb)
    return (p_t * ((p_t + eps) / (p_s + eps)).log()).mean()


def cc_kernel(e: torch.Tensor, gamma: float = 0.4, order: int = 2) -> torch.Tensor:
    """Peng et al. 2019 Gaussian RBF exp(-gamma ||x-y||^2) on L2-normalised rows, via its
    Taylor series in x.y: sum_{p<=P} exp(-2 gamma) (2 gamma)^p / p! (x.y)^p."""
    e = F.normalize(e.flatten(1), dim=1)
    dot = e @ e.t()
    out, coef = torch.zeros_like(dot), math.exp(-2 * gamma)
    for p in range(order + 1):
        out = out + coef * (2 * gamma) ** p / math.factorial(p) * dot.pow(p)
    return out


def cc_loss(student_emb, teacher_emb, gamma=0.4, order=2):
    """Correlation congruence: ||C_t - C_s||_F^2 / b^2 with C the Taylor-RBF correlation matrix."""
    b = student_emb.size(0)
    return (cc_kernel(teacher_emb, gamma, order) - cc_kernel(student_emb, gamma, order)).pow(2).sum() / b ** 2


def cc_correlation_loss(student_emb, teacher_emb):
    """The CC surrogate of the CRD benchmark (RepDistiller, distiller_zoo/CC.py `Correlation`, from the CC
    authors' code): with d_i = |f^s_i - f^t_i| per sample, the mean over consecutive pairs of the batch of
    sum_k d_{i,k} d_{i+1,k}. It is what CRD's CC numbers and their weight 0.02 were measured with."""
    d = (student_emb.flatten(1) - teacher_emb.flatten(1)).abs()
    return (d[:-1] * d[1:]).sum(1).mean()


def irg_edge_loss(student_feat, teacher_feat, form: str = "mean"):
    """Liu et al. 2019 IRG edge term: MSE between the instance-distance matrices of the two networks.
    form "mean": Euclidean distances, each matrix divided by its mean off-diagonal distance (our
    normalisation, as RKD's); "max_sq": squared Euclidean distances (zero diagonal), each matrix divided
    by its maximum, as Knowledge-Distillation-Zoo's kd_losses/irg.py (euclidean_dist_fm/_feat, squared=True)."""
    if form == "mean":
        d_s = pairwise_distance(student_feat.flatten(1))
        d_t = pairwise_distance(teacher_feat.flatten(1))
        return F.mse_loss(d_s / d_s[d_s > 0].mean(), d_t / d_t[d_t > 0].mean())
    if form != "max_sq":
        raise ValueError(f"irg_edge_loss: form must be 'mean' or 'max_sq', got {form!r}")
    d_s = _squared_distance(student_feat.flatten(1))
    d_t = _squared_distance(teacher_feat.flatten(1))
    return F.mse_loss(d_s / d_s.max(), d_t / d_t.max())


def _squared_distance(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Squared Euclidean distances (B, B), clamped at eps off the diagonal, exact zero on it."""
    sq = e.pow(2).sum(1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp_min(eps)
    return d * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))


def irg_transform(shallow: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
    """Liu et al. 2019 IRG-t: how far each instance moves from one layer to the next, ||f^l1_i - f^l2_i||^2,
    divided by the batch maximum. The two maps are made comparable as the reference implementation
    (Knowledge-Distillation-Zoo, irg.py) does: the larger spatial map is average-pooled to the smaller,
    and the wider one's channels are averaged in groups down to the narrower width."""
    h, w = min(shallow.shape[2], deep.shape[2]), min(shallow.shape[3], deep.shape[3])
    a = F.adaptive_avg_pool2d(shallow, (h, w)) if shallow.shape[-2:] != (h, w) else shallow
    b = F.adaptive_avg_pool2d(deep, (h, w)) if deep.shape[-2:] != (h, w) else deep
    ca, cb = a.size(1), b.size(1)
    if ca != cb:   # average adjacent channel groups (pairs when the widths double, as in the reference)
        pool = lambda x, c: F.adaptive_avg_pool1d(x.flatten(2).transpose(1, 2), c).transpose(1, 2)  # noqa: E731
        a, b = (pool(a, cb), b.flatten(2)) if ca > cb else (a.flatten(2), pool(b, ca))
    d = (a.flatten(1) - b.flatten(1)).pow(2).sum(1).clamp_min(1e-12)
    return d / d.max()


def irg_transform_loss(s_shallow, s_deep, t_shallow, t_deep):
    """MSE between the student's and the teacher's instance transformations (irg_transform)."""
    return F.mse_loss(irg_transform(s_shallow, s_deep), irg_transform(t_shallow, t_deep))


def crd_nce_loss(scores: torch.Tensor, n_data: int, eps: float = 1e-7) -> torch.Tensor:
    """Tian et al. 2020 NCE loss. scores (B, 1+K): column 0 the positive, the rest K negatives,
    already exp(s/tau)/Z. Noise distribution uniform, P_n = 1/N:
    -[log h(pos) + sum_k log(1 - h(neg_k))] with h(x) = x / (x + K P_n), batch mean."""
    k = scores.size(1) - 1
    m_pn = k / float(n_data)
    log_d1 = (scores[:, 0] / (scores[:, 0] + m_pn + eps)).log()
    log_d0 = (m_pn / (scores[:, 1:] + m_pn + eps)).log()
    return -(log_d1.sum() + log_d0.sum()) / scores.size(0)
