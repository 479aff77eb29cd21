"""Where the models look: activation attention (Zagoruyko & Komodakis 2017), Grad-CAM,
saliency and integrated gradients, and teacher-vs-student map gaps.

Normalisation (documented contract, tested): every map function takes normalize=
  "max" (default)  each sample's map divided by its own maximum -> values in [0, 1], max exactly 1
                   (an all-zero map stays all zero). Applied AFTER upsampling, so the property
                   holds for the returned maps. Makes teacher and student maps directly comparable.
  "l2"             each sample's flattened map has unit L2 norm (the AT loss's normalisation)
  None             raw values
at_map returns a torch tensor (it is a tensor transform); every other function returns float32
numpy arrays (B, H, W). Models are run in eval mode and each module's train/eval flag is restored
afterwards; parameters' .grad are left exactly as they were; inputs are never modified.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.taps import tap
from ._util import as_numpy, as_tensor, eval_mode, labels_numpy, model_device, no_grad_leak, no_inplace_relu
from .cka import stage_features

__all__ = ["at_map", "normalize_maps", "activation_attention", "stage_attention", "gradcam", "stage_maps",
           "saliency", "integrated_gradients", "black_baseline", "class_mean_maps", "map_gap"]

_NORMS = ("max", "l2", None)


def normalize_maps(maps: torch.Tensor, normalize: str | None = "max") -> torch.Tensor:
    """Per-sample normalisation of (B, H, W) maps; see the module docstring."""
    if normalize not in _NORMS:
        raise ValueError(f"normalize must be 'max', 'l2' or None, got {normalize!r}")
    if normalize is None:
        return maps
    flat = maps.reshape(maps.shape[0], -1)
    if normalize == "max":
        den = flat.max(1).values.clamp_min(0)
    else:
        den = torch.linalg.vector_norm(flat, dim=1)
    den = torch.where(den > 0, den, torch.ones_like(den))
    return maps / den.view(-1, *([1] * (maps.dim() - 1)))


def at_map(feat, p: float = 2, normalize: str | None = "max") -> torch.Tensor:
    """Activation-based attention: mean over channels of |A|^p -> (B, H, W) float32 tensor,
    then per-sample normalisation (default "max": values in [0, 1], max 1)."""
    f = as_tensor(feat).float()
    if f.dim() != 4:
        raise ValueError(f"at_map needs (B, C, H, W) features; got shape {tuple(f.shape)}")
    return normalize_maps(f.abs().pow(p).mean(1), normalize)


def _resize(maps: torch.Tensor, size) -> torch.Tensor:
    if size is None or tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def _size_of(x, size):
    if size is not None:
        return (size, size) if isinstance(size, int) else tuple(size)
    return tuple(as_tensor(x).shape[-2:])


@torch.no_grad()
def activation_attention(model: nn.Module, x, specs, size=None, p: float = 2,
                         normalize: str | None = "max") -> dict[str, np.ndarray]:
    """{spec: (B, H, W) attention map}, each upsampled bilinearly to `size` (default: x's H, W)
    and normalised after upsampling."""
    specs = list(specs)
    size = _size_of(x, size)
    with eval_mode(model), tap(model, specs) as feats:
        model(as_tensor(x).to(model_device(model)))
        out = {}
        for s in specs:
            m = at_map(feats[s].detach().cpu(), p=p, normalize=None)
            out[s] = normalize_maps(_resize(m, size), normalize).numpy()
    return out


def stage_attention(stages, size=None, p: float = 2, normalize: str | None = "max") -> dict[str, np.ndarray]:
    """Attention maps from already-captured stage features: {name: tensor} or a probe side dict
    ({"stages", "stage_names", ...}). No model needed. size: (H, W) to upsample to, or None."""
    out = {}
    for name, f in stage_features(stages).items():
        m = at_map(f, p=p, normalize=None)
        out[name] = normalize_maps(_resize(m, None if size is None else _size_of(None, size)), normalize).numpy()
    return out


def _targets(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    if target is None:
        with torch.no_grad():
            return model(x).argmax(1)
    if isinstance(target, int):
        return torch.full((x.shape[0],), target, dtype=torch.long, device=x.device)
    t = torch.as_tensor(target, dtype=torch.long, device=x.device).reshape(-1)
    if t.numel() == 1:
        t = t.expand(x.shape[0])
    if t.numel() != x.shape[0]:
        raise ValueError(f"target must be an int or have one entry per sample; got {t.numel()} for {x.shape[0]}")
    return t


def _prepare(model, x):
    dev = model_device(model)
    return as_tensor(x).float().to(dev).clone()


def gradcam(model: nn.Module, x, layer_name: str, target=None, size=None,
            normalize: str | None = "max") -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017) via captum LayerGradCam on model.get_submodule(layer_name)
    ("name:in" attributes to the module's input), bilinearly interpolated to the input size
    (LayerAttribution.interpolate), ReLU'd, normalised. target: class index / per-sample indices;
    default: each sample's predicted class."""
    from captum.attr import LayerAttribution, LayerGradCam
    name, _, where = layer_name.partition(":")
    try:
        layer = model.get_submodule(name)
    except AttributeError as e:
        raise ValueError(f"gradcam: {type(model).__name__} has no module named {name!r}") from e
    xin = _prepare(model, x)
    size = _size_of(xin, size)
    with eval_mode(model), no_grad_leak(model), no_inplace_relu(model):
        tgt = _targets(model, xin, target)
        attr = LayerGradCam(model, layer).attribute(xin, target=tgt, relu_attributions=True,
                                                    attribute_to_layer_input=(where == "in"))
        attr = LayerAttribution.interpolate(attr.detach(), size, interpolate_mode="bilinear")
    m = F.relu(attr[:, 0].float().cpu())
    return normalize_maps(m, normalize).numpy()


def stage_maps(model: nn.Module, x, specs, target=None, size=None, p: float = 2,
               normalize: str | None = "max") -> dict:
    """AT maps and Grad-CAM maps for several stages from ONE forward and ONE backward pass.

    Grad-CAM here is computed directly (the same formula as captum's LayerGradCam: spatial mean
    of d score / d A as channel weights, weighted channel sum, ReLU), for all `specs` at once via
    taps; gradcam() (captum, one layer per call) gives the same maps at 2 forwards + 1 backward per
    layer. Returns {"at": {spec: (B,H,W)}, "gradcam": {spec: (B,H,W)}, "target": (B,) classes
    explained, "logits": (B, K)}; maps upsampled (bilinear) to `size` (default: x's) and normalised.
    """
    specs = list(dict.fromkeys(specs))
    xin = _prepare(model, x)
    size = _size_of(xin, size)
    at, cam = {}, {}
    with eval_mode(model), no_grad_leak(model), no_inplace_relu(model), torch.enable_grad(), \
            tap(model, specs) as feats:
        logits = model(xin)
        tgt = logits.detach().argmax(1) if target is None else _targets(model, xin, target)
        acts = [feats[s] for s in specs]                  # TapError names a hook that never fired
        for s, a in zip(specs, acts):
            if a.dim() != 4:
                raise ValueError(f"stage_maps: {s!r} gives shape {tuple(a.shape)}, not (B, C, H, W)")
        score = logits.gather(1, tgt.view(-1, 1)).sum()
        grads = torch.autograd.grad(score, acts, allow_unused=True)
    for s, a, g in zip(specs, acts, grads):
        a = a.detach()
        m = at_map(a.cpu(), p=p, normalize=None)
        at[s] = normalize_maps(_resize(m, size), normalize).numpy()
        if g is None:                                     # the score does not depend on this stage
            c = torch.zeros(a.shape[0], *a.shape[-2:])
        else:
            c = F.relu((g.mean((2, 3), keepdim=True) * a).sum(1)).float().cpu()
        cam[s] = normalize_maps(F.relu(_resize(c, size)), normalize).numpy()
    return {"at": at, "gradcam": cam, "target": tgt.cpu().numpy(), "logits": logits.detach().cpu().numpy()}


def saliency(model: nn.Module, x, target=None, normalize: str | None = "max") -> np.ndarray:
    """Vanilla gradient saliency (captum Saliency, abs=True), max over channels -> (B, H, W)."""
    from captum.attr import Saliency
    xin = _prepare(model, x)
    with eval_mode(model), no_grad_leak(model), no_inplace_relu(model):
        tgt = _targets(model, xin, target)
        attr = Saliency(model).attribute(xin.requires_grad_(True), target=tgt, abs=True)
    m = attr.detach().float().cpu().amax(1)
    return normalize_maps(m, normalize).numpy()


def black_baseline(x, mean, std) -> torch.Tensor:
    """The all-black image in normalised input space: (0 - mean_c) / std_c per channel."""
    xin = as_tensor(x).float()
    m = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return ((0.0 - m) / s).expand_as(xin).clone()


def integrated_gradients(model: nn.Module, x, target=None, baseline=None, n_steps: int = 32,
                         internal_batch_size: int | None = 64, mean=None, std=None,
                         normalize: str | None = "max", return_delta: bool = False):
    """Integrated gradients (Sundararajan et al. 2017, captum) reduced to a map: sum over channels
    of |attribution| -> (B, H, W).

    Baseline: a tensor (broadcastable to x), "black", or "zero". Default: "black" when the dataset's
    normalisation mean/std are given -- the all-black image, (0 - mean)/std per channel, i.e. "no
    signal" for inputs normalised that way -- otherwise "zero" (all-zero input, which for
    normalised inputs is the dataset-mean grey image). internal_batch_size bounds memory: captum
    evaluates n_steps x B scaled inputs in chunks of that many.
    With return_delta=True also returns captum's per-sample convergence delta (completeness error).
    """
    from captum.attr import IntegratedGradients
    xin = _prepare(model, x)
    if baseline is None:
        baseline = "black" if mean is not None and std is not None else "zero"
    if isinstance(baseline, str):
        if baseline == "black":
            if mean is None or std is None:
                raise ValueError("baseline='black' needs the dataset normalisation mean and std")
            base = black_baseline(xin, mean, std).to(xin.device)
        elif baseline == "zero":
            base = torch.zeros_like(xin)
        else:
            raise ValueError(f"baseline must be a tensor, 'black' or 'zero'; got {baseline!r}")
    else:
        base = as_tensor(baseline).float().to(xin.device).expand_as(xin).clone()
    with eval_mode(model), no_grad_leak(model), no_inplace_relu(model):
        tgt = _targets(model, xin, target)
        res = IntegratedGradients(model).attribute(xin, baselines=base, target=tgt, n_steps=n_steps,
                                                   internal_batch_size=internal_batch_size,
                                                   return_convergence_delta=return_delta)
    attr, delta = (res if return_delta else (res, None))
    m = normalize_maps(attr.detach().float().cpu().abs().sum(1), normalize).numpy()
    return (m, delta.detach().cpu().numpy()) if return_delta else m


def class_mean_maps(maps, y, num_classes: int | None = None) -> np.ndarray:
    """(C, H, W) per-class average of (B, H, W) maps; NaN for a class without samples."""
    m = as_numpy(maps, np.float64)
    y = labels_numpy(y)
    if m.ndim != 3 or m.shape[0] != y.size:
        raise ValueError(f"class_mean_maps: need (B, H, W) maps and B labels; got {m.shape} and {y.size}")
    c = num_classes if num_classes is not None else (int(y.max()) + 1 if y.size else 0)
    out = np.full((c,) + m.shape[1:], np.nan)
    for k in range(c):
        sel = y == k
        if sel.any():
            out[k] = m[sel].mean(0)
    return out


def map_gap(t_map, s_map) -> tuple[np.ndarray, np.ndarray]:
    """Teacher-vs-student map difference and a per-sample scalar gap.

    Accepts (H, W) or (B, H, W) maps; if the spatial sizes differ the student map is resized
    bilinearly to the teacher's. Returns (diff = student - teacher, same shape as the teacher map;
    gap = 1 - cosine similarity of the flattened maps, per sample: 0 = same pattern up to scale,
    1 = orthogonal; NaN when a map is all zero)."""
    t = as_tensor(t_map).to(torch.float64)
    s = as_tensor(s_map).to(torch.float64)
    single = t.dim() == 2
    if single:
        t, s = t[None], s[None] if s.dim() == 2 else s
    if t.dim() != 3 or s.dim() != 3 or t.shape[0] != s.shape[0]:
        raise ValueError(f"map_gap: need matching (B, H, W) maps; got {tuple(t.shape)} and {tuple(s.shape)}")
    if t.shape[-2:] != s.shape[-2:]:
        s = _resize(s, t.shape[-2:])
    diff = s - t
    tf, sf = t.reshape(t.shape[0], -1), s.reshape(s.shape[0], -1)
    den = torch.linalg.vector_norm(tf, dim=1) * torch.linalg.vector_norm(sf, dim=1)
    cos = (tf * sf).sum(1) / den
    gap = torch.where(den > 0, 1.0 - cos, torch.full_like(cos, float("nan")))
    diff, gap = diff.numpy(), gap.numpy()
    return (diff[0], gap) if single else (diff, gap)
