"""Explore a finished KD run in Python: load it from the store and build every figure of explorer.plots.

    .venv/bin/python examples/explore_run.py                    # trains a small KD run on digits first
    .venv/bin/python examples/explore_run.py --run RUN_ID       # an existing (offline, teacher-based) run
    .venv/bin/python examples/explore_run.py --out figures/     # where the .html files go

Each figure is written to <out>/<name>.html (Plotly from a CDN) and gets one printed line with a
key number. The "student alone" run used by the distillation comparison and the training curves is
found in the store (the same config without distillation) or trained once. Cells are marked # %%
so the file opens as a notebook in VS Code / Jupytext.
"""
# %% Setup: a run to look at
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # run from a checkout without installing

from explorer import RunConfig, Store, run, teachers  # noqa: E402
from explorer import analysis as A  # noqa: E402
from explorer.app import analysis as S  # noqa: E402   (the app's logic: no Streamlit)
from explorer.app.datasets import dataset_meta  # noqa: E402
from explorer.app import form as F  # noqa: E402
from explorer.app import runs as R  # noqa: E402
from explorer import plots as P  # noqa: E402
from explorer.models.outputs import TapSpecs  # noqa: E402

ap = argparse.ArgumentParser(description="Build every explorer.plots figure for one finished KD run.")
ap.add_argument("--run", help="run id or name (default: train a KD run on digits now)")
ap.add_argument("--out", help="output folder (default: <run folder>/figures)")
ap.add_argument("--epochs", type=int, default=10, help="epochs of the runs trained here")
ap.add_argument("--n-train", type=int, default=1000, help="training images of the runs trained here")
args = ap.parse_args()

store = Store()                                     # $KD_EXPLORER_HOME, else the default home
run_id = args.run or run(RunConfig(dataset="digits", methods="kd", n_train=args.n_train,
                                   epochs=args.epochs))["run_id"]

# %% Load the finished run: record, metrics, probes, models
kd_run = store.get_run(run_id)
cfg = kd_run["config"]
meta = dataset_meta(cfg["dataset"], cfg.get("data_root"))              # classes, shape, mean/std
classes, C = meta["classes"], len(meta["classes"])
metrics = store.metrics_df(kd_run["id"])                                  # long: epoch, name, value
probes = [A.load_probe(p) for _, p in A.list_probes(kd_run["run_dir"])]  # one per recorded epoch
probe = probes[-1]                                                        # the final epoch
models = S.rebuild_models(store, kd_run)        # {"student", "teacher"}: CPU, eval, weights-only
teacher, student = models["teacher"], models["student"]
if teacher is None:
    sys.exit(f"run {kd_run['id']}: its teacher ({teachers.of_run(kd_run)}) cannot be rebuilt")

# The same recipe without distillation (the app's comparison run): reuse it or train it once.
alone_cfg = F.comparison_config(cfg)
alone_run = F.find_same_run(store, alone_cfg) or store.get_run(run(alone_cfg)["run_id"])
alone = S.rebuild_models(store, alone_run)["student"]

out = Path(args.out) if args.out else Path(kd_run["run_dir"]) / "figures"
out.mkdir(parents=True, exist_ok=True)
y, x = probe["y"], probe["x"]
t_logits, s_logits = probe["teacher"]["logits"], probe["student"]["logits"]
print(f"run {kd_run['id']}: {cfg['dataset']}, {cfg['teacher']} -> {cfg['student']}, methods {kd_run['methods']}, "
      f"test acc {kd_run['summary'].get('test_acc'):.3f} (alone: {alone_run['summary'].get('test_acc'):.3f}); "
      f"{len(probes)} probes (epochs {[p['epoch'] for p in probes]}), {len(y)} samples each; "
      f"{len(metrics)} metric rows")


def save(fig, name: str, **numbers: float) -> None:
    fig.write_html(out / f"{name}.html", include_plotlyjs="cdn")
    print(f"  {name + '.html':<32s} " + "  ".join(f"{k}={v:.3f}" for k, v in numbers.items()))


print(f"figures -> {out}")

# %% Training curves: distilled vs student alone
curves = R.compare_metrics(store, [kd_run["id"], alone_run["id"]])      # adds a run-label column
final = curves[curves["name"] == "val/acc"].sort_values("epoch").groupby("run_id")["value"].last()
save(P.training_curves(curves, names=["val/acc", "train/loss"]), "training_curves",
     val_acc_kd=final[kd_run["id"]], val_acc_alone=final[alone_run["id"]])

# %% Where they look: AT maps and Grad-CAM of the final models (one forward + backward per model)
pairs = S.stage_pairs(probe, kd_run)            # (student stage, teacher stage): the pairs the run distilled
xs, ys = x[:16], y[:16]
tm = A.stage_maps(teacher, xs, [t for _, t in pairs], target=ys)
sm = A.stage_maps(student, xs, [s for s, _ in pairs], target=ys)
labels = [f"S {s} ↔ T {t}" for s, t in pairs]
for kind in ("at", "gradcam"):
    gaps = [float(np.nanmean(A.map_gap(tm[kind][t], sm[kind][s])[1])) for s, t in pairs]   # mean over 16
    fig = P.attention_grid(xs[0], [tm[kind][t][0] for _, t in pairs], [sm[kind][s][0] for s, _ in pairs],
                           labels, gaps=gaps, mean=meta["mean"], std=meta["std"],
                           title=f"{'Activation attention' if kind == 'at' else 'Grad-CAM'}: sample "
                                 f"#{int(probe['index'][0])} (class {classes[int(ys[0])]})")
    save(fig, f"attention_grid_{kind}", gap_deepest_stage=gaps[-1])

# %% Mean attention per class (deepest stage, all probe samples, from the probe: no model needed)
hw = tuple(x.shape[-2:])
s_last, t_last = pairs[-1]
tmean = A.class_mean_maps(A.stage_attention(probe["teacher"], size=hw)[t_last], y, C)
smean = A.class_mean_maps(A.stage_attention(probe["student"], size=hw)[s_last], y, C)
save(P.class_mean_maps_figure(tmean, smean, classes), "class_mean_maps",
     mean_abs_diff=float(np.nanmean(np.abs(smean - tmean))))

# %% Does distillation move the student's attention? teacher vs student alone vs distilled (Grad-CAM)
deep = TapSpecs.of(alone).stages[-1]
am = A.stage_maps(alone, xs, [deep], target=ys)["gradcam"][deep]
g_alone = float(np.nanmean(A.map_gap(tm["gradcam"][t_last], am)[1]))
g_kd = float(np.nanmean(A.map_gap(tm["gradcam"][t_last], sm["gradcam"][s_last])[1]))
save(P.distillation_comparison(xs[0], tm["gradcam"][t_last][0], am[0], sm["gradcam"][s_last][0],
                               gaps=(g_alone, g_kd), mean=meta["mean"], std=meta["std"]),
     "distillation_comparison", gap_alone=g_alone, gap_distilled=g_kd)

# %% Feature similarity: CKA of every stage pair (final probe) and of matched stages over training
cka = A.cka_matrix(probe["teacher"], probe["student"])                  # rows teacher, cols student
save(P.cka_heatmap(cka), "cka_heatmap", cka_last_matched=float(cka.loc[t_last, s_last]))
over = A.cka_over_epochs(kd_run["run_dir"], pairs=pairs, errors="nan")           # the distilled pairs
last = over[over["pair"] == over["pair"].iloc[-1]].sort_values("epoch")
save(P.cka_over_epochs_figure(over), "cka_over_epochs",
     cka_last_pair_first_epoch=float(last["cka"].iloc[0]), cka_last_pair_final=float(last["cka"].iloc[-1]))

# %% Relations between samples: cosine relation matrices, RKD angles, the teacher's dark knowledge
et, es = probe["teacher"]["embedding"], probe["student"]["embedding"]
mt, ms = A.cosine_gram(et), A.cosine_gram(es)
gap = A.relation_gap(mt, ms)
save(P.relation_matrices(mt, ms, y, classes, gap=gap), "relation_matrices",
     pearson=gap["pearson"], mean_abs_diff=gap["mean_abs_diff"])
at_, as_ = A.rkd_angle_stats(et), A.rkd_angle_stats(es)
save(P.rkd_angle_histogram(at_, as_), "rkd_angle_histogram", mean_cos_teacher=at_["mean"],
     mean_cos_student=as_["mean"])
dk = A.dark_knowledge(t_logits, y, 4.0, C)
save(P.dark_knowledge_heatmap(dk, classes, 4.0, hide_diagonal=True), "dark_knowledge",
     off_diagonal_mass=float(1.0 - np.nanmean(np.diag(dk))))

# %% Outputs: softened distributions, confusion, calibration, per-class accuracy, disagreements
p_t4 = A.soften(t_logits[0], 4.0)
save(P.softened_bars(t_logits[0], s_logits[0], (1.0, 4.0), classes, label=int(y[0])), "softened_bars",
     teacher_p_true_T4=float(p_t4[int(y[0])]))
cm_t, cm_s = A.confusion(t_logits, y, C, normalize="true"), A.confusion(s_logits, y, C, normalize="true")
save(P.confusion_heatmaps({"teacher": cm_t, "student": cm_s}, classes, show_difference=True),
     "confusion_heatmaps", teacher_acc=float((t_logits.argmax(1) == y).float().mean()),
     student_acc=float((s_logits.argmax(1) == y).float().mean()))
cal_t, cal_s = A.calibration(t_logits, y, 10), A.calibration(s_logits, y, 10)
save(P.reliability_diagram({"teacher": cal_t, "student": cal_s}), "reliability_diagram",
     ece_teacher=cal_t[0], ece_student=cal_s[0])
pc_t, pc_s = A.per_class_accuracy(t_logits, y, classes), A.per_class_accuracy(s_logits, y, classes)
save(P.per_class_accuracy_bars({"teacher": pc_t, "student": pc_s}), "per_class_accuracy",
     student_worst_class=float(pc_s["accuracy"].min()))
dis = A.disagreements(t_logits, s_logits, y, k=8, index=probe["index"])
save(P.disagreement_gallery(x, dis, classes, mean=meta["mean"], std=meta["std"]), "disagreement_gallery",
     agreement=A.agreement(t_logits, s_logits), top_kl=float(dis["kl"].max()))

# %% Embeddings in 2-D (the student's projection rotated onto the teacher's)
from sklearn.metrics import silhouette_score  # noqa: E402

for method, label in (("pca", "PCA"), ("tsne", "t-SNE")):
    df = A.project(et, es, y, method=method, index=probe["index"])
    sil = {m: float(silhouette_score(g[["x", "y"]], g["label"])) for m, g in df.groupby("model")}
    save(P.embedding_scatter(df, classes, method=label), f"embedding_{method}",
         silhouette_teacher=sil["teacher"], silhouette_student=sil["student"])
