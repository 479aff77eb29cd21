"""Any timm model by name, as teacher or student: `timm:NAME`, where NAME is one of `timm.list_models()`.

    timm:resnet18                          random init, built for the dataset's classes, channels and size
    timm:resnet18?pretrained               timm's pretrained weights, read from the local cache only
    timm:resnet18.a1_in1k?pretrained       a named pretrained tag
    timm:vit_tiny_patch16_224?patch_size=4&depth=6   other keyword arguments of timm.create_model

This module holds the one rule for the `timm:` prefix; the zoo registry (models/registry.py) and the config
check (recipes.py) ask it. timm is imported only when a timm: name is used, so the project works without it.
The model is adapted to the data: num_classes and in_chans always, img_size where the model takes one.

Taps come from timm's own metadata: kd_stages = kd_preact = the modules of `model.feature_info` (CNNs: stem and
stages; ViTs: every block, with kd_prefix_tokens = model.num_prefix_tokens so token taps become (B, C, h, w)
maps), kd_embedding = the input of the classifier (the pooled pre-logits feature), kd_classifier = the
classifier. In ViT-style models whose blocks use timm's `Attention`, fused attention is switched off so that
the softmax probabilities pass through `attn_drop`, which is then the attention tap (kd_attention). The values are
no module's output there, so each Attention's `qkv` gets a child `kd_values` (an nn.Identity, no parameters: the
state dict is timm's) that a forward hook on `qkv` passes the value slice through (kd_values), and MiniLM reads
timm ViTs as it reads the zoo's.

Pretrained weights are never downloaded: they are loaded only from the Hugging Face cache (HF_HUB_CACHE, else
HF_HOME/hub, else ~/.cache/huggingface/hub) or torch.hub's checkpoints folder (TORCH_HOME/hub/checkpoints).
"""
from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from torch import nn

PREFIX = "timm:"
INSTALL = ("timm models need timm and a torchvision built for the installed torch: `scripts/setup.sh --timm` "
           "makes the venv .venv-timm with both, or `pip install 'kd-explorer[timm]'` beside a matching "
           "torch/torchvision pair")
# set from the dataset or by this module itself: not accepted after '?'
RESERVED = {"num_classes", "in_chans", "img_size", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay",
            "checkpoint_path", "cache_dir", "features_only", "out_indices", "device", "dtype"}
_NAME = re.compile(r"timm:([a-z0-9_]+(?:\.[a-z0-9_]+)?)(?:\?(.*))?")
_OPTION = re.compile(r"([a-z_][a-z0-9_]*)(?:=([\w.+-]+))?")


def is_timm(name: object) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def parse(name: str) -> tuple[str, bool, dict[str, Any]]:
    """'timm:arch[.tag][?pretrained][&key=value...]' -> (timm name, pretrained, create_model kwargs)."""
    m = _NAME.fullmatch(name)
    if not m:
        raise ValueError(f"{name!r} must look like 'timm:NAME' (e.g. timm:resnet18, timm:resnet18?pretrained, "
                         "timm:vit_tiny_patch16_224?patch_size=4); list the names with `kd-explorer models --timm`")
    pretrained, kwargs = False, {}
    for opt in filter(None, (m[2] or "").split("&")):
        o = _OPTION.fullmatch(opt)
        if not o:
            raise ValueError(f"{name!r}: option {opt!r} must be 'pretrained' or key=value")
        if o[1] == "pretrained" and o[2] is None:
            pretrained = True
        elif o[1] in RESERVED or o[2] is None:
            why = "is set from the dataset" if o[1] in ("num_classes", "in_chans", "img_size") else "is not allowed"
            raise ValueError(f"{name!r}: option {opt!r} {why}; write 'pretrained' alone or key=value "
                             "keyword arguments of timm.create_model")
        else:
            kwargs[o[1]] = _value(o[2])
    return m[1], pretrained, kwargs


def _value(text: str) -> Any:
    if text in ("true", "false", "True", "False"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _timm():
    try:
        import timm
    except Exception as e:   # not installed, or a torchvision that does not match torch ("torchvision::nms ...")
        raise ValueError(f"timm cannot be imported here ({type(e).__name__}: {e}); {INSTALL}") from None
    return timm


def check(name: str) -> None:
    """Raise ValueError saying what is wrong with a timm: name (syntax, timm missing, unknown name, or
    pretrained weights not in the local cache); cheap: nothing is built."""
    arch, pretrained, _ = parse(name)
    timm = _timm()
    base, tag = timm.models.split_model_name_tag(arch)
    if not timm.is_model(base):
        hint = difflib.get_close_matches(base, timm.list_models(), n=3)
        raise ValueError(f"timm has no model {base!r}" + (f" (did you mean {', '.join(map(repr, hint))}?)" if hint
                         else "") + f"; list them with `kd-explorer models --timm {base[:4]}`")
    if pretrained:
        cached_weights(arch)
    elif tag:
        _pretrained_cfg(timm, arch)


def _hf_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface") / "hub"


def _pretrained_cfg(timm, arch: str):
    try:
        return timm.models.get_pretrained_cfg(arch)
    except RuntimeError as e:   # an unknown tag
        tags = timm.list_pretrained(timm.models.split_model_name_tag(arch)[0] + ".*")
        raise ValueError(f"{e} Tags with weights: {', '.join(tags) or 'none'}") from None


def cached_weights(arch: str) -> tuple[str, bool]:
    """(path of arch's pretrained weights in the local cache, whether timm must read it with the model's own
    loader). Raises ValueError saying where timm looks and how to put the weights there."""
    cfg = _pretrained_cfg(_timm(), arch)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise ValueError(f"timm has no pretrained weights for {arch!r}; drop '?pretrained'")
    looked = []
    if cfg.hf_hub_id:
        repo, _, revision = cfg.hf_hub_id.partition("@")
        folder = _hf_cache() / f"models--{repo.replace('/', '--')}"
        ref = folder / "refs" / (revision or "main")
        snapshot = ref.read_text().strip() if ref.is_file() else (revision or "")
        for filename in ([cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]):
            path = folder / "snapshots" / snapshot / filename if snapshot else None
            looked.append(str(folder / "snapshots" / (snapshot or "<revision>") / filename))
            if path is not None and path.is_file():
                return str(path), False
    if cfg.url:
        import torch.hub
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name
        looked.append(str(path))
        if path.is_file():
            return str(path), bool(cfg.custom_load)
    tag = f"{cfg.architecture}.{cfg.tag}" if cfg.tag else cfg.architecture
    raise ValueError(
        f"the pretrained weights of timm {tag!r} are not in the local cache, and KD Explorer never downloads. "
        f"Looked for {' or '.join(looked)}. Put them there, e.g. on a machine with internet run "
        f"`python -c \"import timm; timm.create_model('{tag}', pretrained=True)\"` and copy its "
        f"{_hf_cache()} (or TORCH_HOME) folder here, or `hf download {cfg.hf_hub_id or ''}` into HF_HUB_CACHE; "
        "or drop '?pretrained' for random init")


def build(name: str, num_classes: int = 10, in_channels: int = 3, image_size: int = 32):
    """The timm model `name`, adapted to the data and with its taps declared (see the module doc)."""
    arch, pretrained, kwargs = parse(name)
    timm = _timm()
    check(name)
    kwargs.update(num_classes=num_classes, in_chans=in_channels)
    if pretrained:
        path, custom = cached_weights(arch)
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": path, "custom_load": custom})
    try:
        try:
            model = timm.create_model(arch, img_size=image_size, **kwargs)
        except TypeError as e:   # a model without an img_size argument (CNNs): any size goes
            if "img_size" not in str(e):
                raise
            model = timm.create_model(arch, **kwargs)
    except Exception as e:   # an unknown keyword argument, a patch larger than the image, a damaged weight file
        raise ValueError(f"timm could not build {name!r} for {num_classes} classes of {in_channels}x{image_size}x"
                         f"{image_size} images: {type(e).__name__}: {e}") from None
    return declare_taps(model)


def declare_taps(model):
    """Set kd_stages / kd_preact / kd_embedding / kd_classifier (/ kd_prefix_tokens / kd_attention) of a timm
    model from its own metadata."""
    from timm.layers import Attention
    modules = dict(model.named_modules())
    stages = [f["module"] for f in getattr(model, "feature_info", None) or [] if f.get("module") in modules]
    if stages:   # else: no feature metadata, the config names the stages (student_stages / teacher_stages)
        model.kd_stages = stages
        model.kd_preact = list(stages)   # timm has no pre-activation taps: the post-activation stages stand in
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    head_name = next((n for n, m in modules.items() if n and m is head), None)
    if head_name is not None:
        model.kd_embedding = f"{head_name}:in"
        model.kd_classifier = head_name
    if hasattr(model, "num_prefix_tokens") and hasattr(model, "blocks"):   # ViT-style: tokens (B, N, C)
        model.kd_prefix_tokens = int(model.num_prefix_tokens)
        attention = [n for n, m in modules.items() if type(m) is Attention]
        for n in attention:
            attn = modules[n]
            attn.fused_attn = False   # probabilities are then computed and pass through attn_drop
            if not hasattr(attn.qkv, "kd_values"):
                attn.qkv.kd_values, attn.qkv.kd_heads = nn.Identity(), attn.num_heads
                attn.qkv.register_forward_hook(_emit_values)
        model.kd_attention = [f"{n}.attn_drop" for n in attention]
        model.kd_values = [f"{n}.qkv.kd_values" for n in attention]
    return model


def _emit_values(qkv, inputs, out):
    """timm's Attention splits qkv's output (B, N, 3C) into q, k, v per head; v, (B, heads, N, d_head), passes
    through qkv.kd_values so a tap sees it. A module-level function reading only `qkv`: a deep copy's hook serves
    the copy. Returns None: qkv's output is unchanged."""
    b, n, _ = out.shape
    qkv.kd_values(out.reshape(b, n, 3, qkv.kd_heads, -1).permute(2, 0, 3, 1, 4)[2])


def describe(name: str) -> str:
    arch, pretrained, kwargs = parse(name)
    extra = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    return (f"timm {arch}" + (f" ({extra})" if extra else "")
            + (", pretrained weights from the local cache" if pretrained else ", random init"))


def list_names(pattern: str = "") -> list[str]:
    """timm's model names matching a filter (fnmatch-style, e.g. 'resnet*'; a bare word matches anywhere)."""
    timm = _timm()
    if pattern and not any(c in pattern for c in "*?["):
        pattern = f"*{pattern}*"
    return [PREFIX + n for n in timm.list_models(pattern or "")]
