"""CKA of a student's stages over its run's probe epochs: against the teacher, or against its own final state."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from ._util import as_tensor
from .cka import minibatch_cka, stage_features
from .cka_stages import stage_grams

__all__ = ["cka_over_epochs"]


def _match_stages(n_s: int, n_t: int) -> list[tuple[int, int]]:
    """Pair student stage i with the teacher stage at the same relative depth."""
    if n_s == n_t:
        return [(i, i) for i in range(n_s)]
    if n_s == 1:
        return [(0, n_t - 1)]
    return [(i, round(i * (n_t - 1) / (n_s - 1))) for i in range(n_s)]


def _load_probes(probes) -> list[dict]:
    from .probes import list_probes, load_probe
    if isinstance(probes, (str, Path)):
        found = list_probes(probes)
        if not found:
            raise ValueError(f"no probe_epoch*.pt files under {probes}")
        return [load_probe(p) for _, p in found]
    return [load_probe(p) if isinstance(p, (str, Path)) else p for p in probes]


def cka_over_epochs(probes, kind: str = "linear", pairs=None, against: str = "teacher",
                    errors: str = "raise") -> pd.DataFrame:
    """CKA of matched stages at every probe epoch -> long DataFrame.

    probes: a run directory, probe file paths, or loaded probe dicts (see probes.py).
    against="teacher": student stage vs its matched teacher stage (pairs: list of
      (student_stage_name_or_index, teacher_stage_name_or_index); default: same index when both
      have the same number of stages, otherwise the teacher stage at the same relative depth).
    against="final": each student stage vs the same stage at the last probe epoch (convergence).
    errors="nan" records NaN for undefined values (a constant stage) instead of raising.
    Columns: epoch, student_stage, other_stage, pair, against, cka.
    """
    if against not in ("teacher", "final"):
        raise ValueError("against must be 'teacher' or 'final'")
    if errors not in ("raise", "nan"):
        raise ValueError("errors must be 'raise' or 'nan'")
    if kind not in ("linear", "rbf", "minibatch"):
        raise ValueError(f"kind must be 'linear', 'rbf' or 'minibatch', got {kind!r}")
    loaded = sorted(_load_probes(probes), key=lambda p: int(p["epoch"]))
    if not loaded:
        raise ValueError("cka_over_epochs: no probes")
    final = loaded[-1]
    cache: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor | None, str]] = {}

    def gram(side: str, name: str, feats) -> torch.Tensor | None:
        """One stage's unit Gram, reused while its features are unchanged (a frozen teacher's are
        the same at every epoch); None (with errors="nan") when CKA is undefined for it."""
        t = as_tensor(feats)
        hit = cache.get((side, name))
        if hit is not None and hit[0].shape == t.shape and torch.equal(hit[0], t):
            g, msg = hit[1], hit[2]
        else:
            try:
                g, msg = stage_grams({name: t}, kind).grams[0], ""
            except ValueError as e:
                g, msg = None, str(e)
            cache[(side, name)] = (t, g, msg)
        if g is None and errors == "raise":
            raise ValueError(msg)
        return g

    rows = []
    for pr in loaded:
        s = stage_features(pr["student"])
        if against == "teacher":
            o, o_side = stage_features(pr["teacher"]), "teacher"
        else:
            if not torch.equal(as_tensor(pr["index"]), as_tensor(final["index"])):
                raise ValueError(f"epoch {pr['epoch']}: probe samples differ from the final epoch's")
            o, o_side = stage_features(final["student"]), "final"
        s_names, o_names = list(s), list(o)
        if pairs is None:
            use = [(s_names[i], o_names[j]) for i, j in _match_stages(len(s_names), len(o_names))] \
                if against == "teacher" else [(n, n) for n in s_names]
        else:
            use = [(a if isinstance(a, str) else s_names[a], b if isinstance(b, str) else o_names[b])
                   for a, b in pairs]
        for a, b in use:
            if kind == "minibatch":
                try:
                    v = minibatch_cka(s[a], o[b])
                except ValueError:
                    if errors == "raise":
                        raise
                    v = float("nan")
            else:
                ga, gb = gram("student", a, s[a]), gram(o_side, b, o[b])
                if ga is not None and gb is not None and ga.shape != gb.shape:
                    raise ValueError(f"epoch {pr['epoch']}: {a!r} and {b!r} hold different numbers of samples")
                v = float("nan") if ga is None or gb is None else float((ga @ gb).clamp(-1.0, 1.0))
            rows.append({"epoch": int(pr["epoch"]), "student_stage": a, "other_stage": b,
                         "pair": f"{a} ↔ {b}", "against": against, "cka": v})
    return pd.DataFrame(rows, columns=["epoch", "student_stage", "other_stage", "pair", "against", "cka"])
