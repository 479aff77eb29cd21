"""The app's Streamlit caches, in one place. `st.cache_resource` holds shared objects (the store, loaded
probes, rebuilt models); `st.cache_data` holds computed results, keyed by the probe file's path and mtime,
the rows taken and the parameters, so a rerun, a second run's column or a page revisit recomputes nothing
and a rewritten probe file is read again. The computations themselves live Streamlit-free elsewhere."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from ..store import Store
from . import analysis as A


# ---------------------------------------------------------------------- shared objects
@st.cache_resource(show_spinner=False)
def store(home: str) -> Store:
    return Store(home)


@st.cache_resource(show_spinner=False)
def recovered(home: str) -> list[str]:
    """Once per app process and store: runs whose worker died become `interrupted`; queued runs get a worker."""
    from ..jobs import recover
    return recover(store(home))


@st.cache_resource(max_entries=32, show_spinner=False)
def _probe(path: str, mtime: float) -> dict:
    from ..analysis.probes import load_probe
    return {**load_probe(path), "path": path, "mtime": mtime}


def probe(path: str | Path) -> dict:
    """A probe file, loaded once while it is unchanged; it carries its path and mtime (cache keys below)."""
    path = str(path)
    return _probe(path, Path(path).stat().st_mtime)


@st.cache_resource(max_entries=4, show_spinner="Loading the models…")
def models(home: str, run_id: str) -> dict:
    """analysis.rebuild_models of a run: {"student", "teacher" or None}."""
    s = store(home)
    return A.rebuild_models(s, s.get_run(run_id))


@st.cache_data(max_entries=8, show_spinner=False)
def dataset_meta(name: str, data_root: str | None = None) -> dict:
    return A.dataset_meta(name, data_root)


# ---------------------------------------------------------------------- computed results
def _key(sub: dict) -> tuple | None:
    """Where a probe subset came from (path, mtime, rows), or None for a probe not read from a file."""
    return None if sub.get("path") is None else (sub["path"], sub["mtime"], tuple(sub["positions"]))


def _rows(path: str, mtime: float, positions: tuple) -> dict:
    return A.subset(_probe(path, mtime), list(positions))


def cka(sub: dict, a: str = "teacher", b: str | None = "student", kind: str = "linear") -> pd.DataFrame:
    """analysis.cka_matrix of side `a` (rows) and side `b` (columns; None = `a` with itself)."""
    key = _key(sub)
    return _cka_of(sub, a, b, kind) if key is None else _cka(*key, a, b, kind)


@st.cache_data(max_entries=64, show_spinner="Computing CKA…")
def _cka(path: str, mtime: float, positions: tuple, a: str, b: str | None, kind: str) -> pd.DataFrame:
    return _cka_of(_rows(path, mtime, positions), a, b, kind)


def _cka_of(sub: dict, a: str, b: str | None, kind: str) -> pd.DataFrame:
    from ..analysis import cka_matrix
    return cka_matrix(sub[a], None if b is None else sub[b], kind=kind)


def cka_over_epochs(run_dir: str, kind: str = "linear", pairs=None) -> pd.DataFrame:
    """analysis.cka_over_epochs of a run's probes (errors as NaN) for the given (student, teacher) pairs;
    recomputed when a probe file is added or rewritten."""
    from ..analysis.probes import list_probes
    stamp = tuple((int(e), str(p), Path(p).stat().st_mtime) for e, p in list_probes(run_dir))
    return _cka_over_epochs(str(run_dir), stamp, kind, tuple(tuple(p) for p in pairs) if pairs else None)


@st.cache_data(max_entries=16, show_spinner="Computing CKA over training…")
def _cka_over_epochs(run_dir: str, stamp: tuple, kind: str, pairs: tuple | None) -> pd.DataFrame:
    from ..analysis import cka_over_epochs
    return cka_over_epochs(run_dir, kind=kind, pairs=list(pairs) if pairs else None, errors="nan")


def projection(sub: dict, method: str = "pca", names: tuple[str, str] = ("teacher", "student")) -> pd.DataFrame:
    """analysis.project of both sides' embeddings (PCA or t-SNE), the student's rotated onto the teacher's."""
    key = _key(sub)
    return _project(sub, method, tuple(names)) if key is None else _projection(*key, method, tuple(names))


@st.cache_data(max_entries=32, show_spinner="Projecting the embeddings…")
def _projection(path: str, mtime: float, positions: tuple, method: str, names: tuple) -> pd.DataFrame:
    return _project(_rows(path, mtime, positions), method, names)


def _project(sub: dict, method: str, names: tuple) -> pd.DataFrame:
    from ..analysis import project
    return project(sub["teacher"]["embedding"], sub["student"]["embedding"], sub["y"], method=method,
                   index=sub["index"], names=names)


# ---------------------------------------------------------------------- the whole test split's logits
@st.cache_resource(max_entries=8, show_spinner=False)
def _test_logits(path: str, mtime: float) -> dict:
    import torch
    raw = torch.load(path, map_location="cpu", weights_only=True)
    return {k: (v.float() if hasattr(v, "is_floating_point") and v.is_floating_point() else v) for k, v in raw.items()}


def test_logits(run: dict) -> dict | None:
    """The final models' logits on the whole test split ({"y", "student", "reference"?, "reference_name"}),
    saved by the engine at the end of a run; None for runs made before it did."""
    path = Path(run.get("run_dir") or "") / "test_logits.pt"
    if not run.get("run_dir") or not path.exists():
        return None
    return _test_logits(str(path), path.stat().st_mtime)


@st.cache_data(max_entries=8, show_spinner="Scoring the maps against the object masks…")
def mask_fractions(home: str, run_id: str, alone_id: str | None, stamp: tuple) -> pd.DataFrame:
    """app.mask_fractions for a run (and its student-alone run): every probe epoch's attention, and the final
    models' Grad-CAM on the first probe's samples. stamp: the probe files' mtimes (a rewritten probe recomputes)."""
    from ..analysis.probes import list_probes
    from . import mask_fractions as MF
    from .runs import is_alone
    s = store(home)
    run, alone = s.get_run(run_id), (s.get_run(alone_id) if alone_id else None)
    classes = A.dataset_meta(run["config"]["dataset"], run["config"].get("data_root"))["classes"]
    distilled = not is_alone(run)
    df = MF.run_fractions(run, alone, classes, probe, distilled=distilled)
    if df.empty:
        return df
    last = probe(list_probes(run["run_dir"])[-1][1])
    masks = MF.probe_masks(run["config"], last)
    mine = models(home, run_id)
    nets = {"teacher": mine["teacher"], ("distilled student" if distilled else "student alone"): mine["student"]}
    if alone is not None:
        nets["student alone"] = models(home, alone_id)["student"]
    cams = MF.gradcam_fractions(nets, last["x"], last["y"], masks, classes)
    return pd.concat([df, cams], ignore_index=True)
