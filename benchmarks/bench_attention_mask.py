"""Attention inside the object mask for the "Attention transfer" preset on shapes (a script, not a test).

    .venv/bin/python benchmarks/bench_attention_mask.py                    # the preset as it is, seeds 0,1,2
    .venv/bin/python benchmarks/bench_attention_mask.py --epochs 4 --seeds 0  # a shorter budget (say so)

Runs the preset's two configs (the distilled student and the student trained alone, explorer.presets) for each
seed in a throwaway store, with the bundled shapes teacher (data/teachers/; trained here if it is missing, which
takes minutes), and prints, per stage, the fraction of each model's activation attention that falls inside the
object mask on the probe samples (explorer.analysis.mask_fraction, explorer.app.mask_fractions) at the last
epoch — teacher, student alone, distilled student — as the mean (± std) over the seeds, then the final models'
Grad-CAM (last stage, true class) the same way, the test accuracies and the chance level (the mean mask area).
"""
from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer import presets  # noqa: E402
from explorer.analysis import list_probes, load_probe  # noqa: E402
from explorer.app import mask_fractions as MF  # noqa: E402
from explorer.app.analysis import rebuild_models  # noqa: E402
from explorer.engine import run  # noqa: E402
from explorer.store import Store  # noqa: E402


def one_seed(store: Store, seed: int, epochs: int | None) -> tuple[pd.DataFrame, dict, float]:
    main, alone_cfg = presets.preset_configs("attention")
    extra = dict(seed=seed, **({"epochs": epochs} if epochs else {}))
    t0 = time.perf_counter()
    rk = run(dict(main, **extra), store)
    ra = run(dict(alone_cfg, **extra), store)
    r, a = store.get_run(rk["run_id"]), store.get_run(ra["run_id"])
    classes = [str(i) for i in range(10)]
    df = MF.run_fractions(r, a, classes, load_probe)
    last = load_probe(list_probes(r["run_dir"])[-1][1])
    masks = MF.probe_masks(r["config"], last)
    nets = {"teacher": rebuild_models(store, r)["teacher"], "student alone": rebuild_models(store, a)["student"],
            "distilled student": rebuild_models(store, r)["student"]}
    df = pd.concat([df, MF.gradcam_fractions(nets, last["x"], last["y"], masks, classes)], ignore_index=True)
    acc = {"teacher": rk.get("teacher_acc"), "student alone": ra["test_acc"], "distilled student": rk["test_acc"]}
    print(f"  seed {seed}: {time.perf_counter() - t0:.0f} s  test acc " +
          "  ".join(f"{k} {v:.4f}" for k, v in acc.items() if v is not None), flush=True)
    return df.assign(seed=seed), acc, MF.chance_level(masks)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=None, help="override the preset's epochs (default: the preset's)")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    main_cfg = presets.preset_configs("attention")[0]
    print(f"preset 'attention': {main_cfg['dataset']}, {main_cfg.get('teacher') or 'default teacher'} -> "
          f"{main_cfg.get('student') or 'default student'}, n_train={main_cfg.get('n_train')}, "
          f"epochs={args.epochs or main_cfg.get('epochs')}, methods={[m['key'] for m in main_cfg['methods']]}")
    frames, accs, chance = [], [], []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as home:
        store = Store(home)
        for seed in seeds:
            df, acc, ch = one_seed(store, seed, args.epochs)
            frames.append(df)
            accs.append(acc)
            chance.append(ch)
    df = pd.concat(frames, ignore_index=True)
    per_seed = MF.summary(df, by=("seed", "model", "epoch", "depth", "map"))
    att = per_seed[per_seed["map"] == "attention"]
    att = att[att["epoch"] == att.groupby(["seed", "model"])["epoch"].transform("max")]
    cam = per_seed[(per_seed["map"] == "gradcam")]
    cam = cam[cam["depth"] == cam.groupby(["seed", "model"])["depth"].transform("max")]

    def table(frame, index):
        g = frame.groupby([index, "model"])["fraction"]
        t = (g.mean().map("{:.3f}".format) + " ± " + g.std(ddof=0).map("{:.3f}".format)).unstack("model")
        return t[[m for m in MF.MODELS if m in t.columns]]
    print(f"\nattention inside the object mask, last epoch, mean ± std over seeds {seeds} "
          f"({last_n(df)} probe images; "
          f"chance = mean mask area {np.mean(chance):.3f}):")
    t = table(att.assign(stage=att["depth"].map(lambda d: f"stage {int(d) + 1}")), "stage")
    print(t.to_markdown() if _has_tabulate() else t.to_string())
    print("\nGrad-CAM (final models, last stage, true class):")
    t = table(cam.assign(map="Grad-CAM"), "map")
    print(t.to_markdown() if _has_tabulate() else t.to_string())
    print("\ntest accuracy: " + "  ".join(
        f"{k} {np.mean([a[k] for a in accs if a.get(k) is not None]):.4f}" for k in MF.MODELS
        if any(a.get(k) is not None for a in accs)))
    print(f"\n{time.perf_counter() - t0:.0f} s in all; command: .venv/bin/python benchmarks/bench_attention_mask.py "
          + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])))
    return 0


def last_n(df: pd.DataFrame) -> int:
    d = df[(df["map"] == "attention") & (df["depth"] == 0)]
    one = d[(d["seed"] == d["seed"].iloc[0]) & (d["model"] == d["model"].iloc[0]) & (d["epoch"] == d["epoch"].iloc[0])]
    return int(one["n"].sum())


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
        return True
    except ImportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
