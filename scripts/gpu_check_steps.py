"""The Python steps of scripts/gpu_check.sh (one subcommand each); every one writes JSON into --out.

    python scripts/gpu_check_steps.py peer --device cuda --batch-size 128 --out DIR   # torchdistill's loop
    python scripts/gpu_check_steps.py tta --data /usr/share/datasets/fashion-mnist --device cuda --out DIR
    python scripts/gpu_check_steps.py preset --device cuda --out DIR     # the app's default preset, via the CLI
    python scripts/gpu_check_steps.py figures --home DIR --out DIR        # the analysis pages under AppTest
    python scripts/gpu_check_steps.py summary --out DIR                   # summary.json + summary.md

Run from the repository root (PYTHONPATH=. so `explorer` imports without an install).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write(out: Path, name: str, obj) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(json.dumps(obj, indent=2, default=str))
    print(f"wrote {path}", file=sys.stderr)
    return path


# ---------------------------------------------------------------- torchdistill's loop on this device
def peer(a) -> int:
    """torchdistill's DistillationBox loop on --device: benchmarks/torchdistill_compare.py's measure_peer, the one
    copy of that loop."""
    import runpy
    try:
        import torchdistill.core.distillation  # noqa: F401
        import torchvision  # noqa: F401
    except Exception as e:   # noqa: BLE001 -- any import failure (a mismatched torchvision raises RuntimeError): no peer
        write(a.out, f"torchdistill_b{a.batch_size}.json", {"skipped": f"torchdistill not importable: {e!r}"[:500]})
        return 0
    import torch
    measure_peer = runpy.run_path(str(ROOT / "benchmarks" / "torchdistill_compare.py"))["measure_peer"]
    result = measure_peer(a.device, a.pair, a.batch_size, a.warmup, a.steps, a.workers)
    write(a.out, f"torchdistill_b{a.batch_size}.json", {
        "pair": a.pair, "batch_size": a.batch_size, "steps": a.steps, "warmup": a.warmup, "workers": a.workers,
        "device": a.device, "images_per_s": round(result["images_per_s"], 2), "torch": torch.__version__})
    return 0


# ---------------------------------------------------------------- time to accuracy (Fashion-MNIST)
def tta(a) -> int:
    """resnet20 -> resnet20 KD from the bundled Fashion-MNIST teacher, DAWNBench-style: a fixed recipe of E
    epochs per attempt (cosine schedule), E from --epochs (first that reaches --target wins). Seconds are the
    run's wall time (data load, teacher check, training, test) and its training epochs alone."""
    from explorer.engine import run
    from explorer.recipes import default_teacher_recipe, recipe_hash
    from explorer.teachers import bundled_path
    ckpt = bundled_path(recipe_hash(default_teacher_recipe("fashion-mnist")))
    if ckpt is None:
        raise SystemExit("the bundled fashion-mnist teacher is missing from data/teachers/")
    target = None if a.target in ("none", "") else float(a.target)
    attempts = []
    for epochs in [int(e) for e in a.epochs.split(",")]:
        t0, events = time.time(), []

        def on_event(e, t0=t0, events=events):
            if e.kind == "epoch":
                events.append({"epoch": e.epoch, "seconds": round(time.time() - t0, 2),
                               "val_acc": round(e.values["val/acc"], 4),
                               "epoch_seconds": round(e.values["epoch_seconds"], 2),
                               "images_per_s": round(e.values["images_per_s"], 1)})
        cfg = dict(dataset="fashion-mnist", data_root=a.data, teacher="resnet20", student="resnet20",
                   teacher_ckpt=str(ckpt), methods=["kd"], epochs=epochs, device=a.device, probe_size=0,
                   checkpoint_every=0, seed=0, **({"n_train": a.n_train} if a.n_train else {}))
        summary = run(cfg, on_event=on_event)
        attempt = {"epochs": epochs, "seconds": summary["seconds"], "test_acc": summary["test_acc"],
                   "teacher_acc": summary["teacher_acc"],
                   "train_seconds": round(sum(e["epoch_seconds"] for e in events), 2), "per_epoch": events,
                   "reached": target is not None and summary["test_acc"] >= target}
        attempts.append(attempt)
        print(f"tta: {epochs} epochs -> test acc {summary['test_acc']:.4f} in {summary['seconds']:.1f} s",
              file=sys.stderr, flush=True)
        if attempt["reached"]:
            break
    hit = next((x for x in attempts if x["reached"]), None)
    write(a.out, "time_to_accuracy.json", {
        "target": target, "device": a.device, "data": a.data, "teacher_ckpt": str(ckpt),
        "seconds_to_target": hit["seconds"] if hit else None, "epochs_to_target": hit["epochs"] if hit else None,
        "seconds_all_attempts": round(sum(x["seconds"] for x in attempts), 2), "attempts": attempts,
        "config": {k: v for k, v in cfg.items() if k != "epochs"}})
    return 0


# ---------------------------------------------------------------- the default app preset, headless
def preset(a) -> int:
    """The app's default preset (and its comparison run), as the Train page's one click queues them, run
    through the CLI (`python -m explorer run --config ...`) on --device into the store at --home."""
    import yaml
    from explorer.presets import DEFAULT_PRESET, preset_configs
    a.home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, KD_EXPLORER_HOME=str(a.home), PYTHONPATH=str(ROOT))
    results = []
    for i, cfg in enumerate(preset_configs(DEFAULT_PRESET)):
        path = a.home / f"preset_{i}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        cmd = [sys.executable, "-m", "explorer", "run", "--config", str(path), "--device", a.device, "--json"] + \
              (["--epochs", str(a.epochs)] if a.epochs else [])
        t0 = time.time()
        p = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        if p.returncode:
            raise SystemExit(f"preset run failed ({' '.join(cmd)}):\n{p.stderr[-3000:]}")
        r = json.loads(p.stdout.strip().splitlines()[-1])
        results.append({"name": cfg.get("name"), "command": " ".join(cmd[1:]), "wall_s": round(time.time() - t0, 2),
                        **{k: r.get(k) for k in ("run_id", "status", "test_acc", "teacher_acc", "seconds")}})
    write(a.out, "preset.json", {"preset": DEFAULT_PRESET, "device": a.device, "home": str(a.home), "runs": results})
    return 0


ANALYSIS = ["3_Attention_maps", "4_Feature_similarity", "5_Relation_matrices", "6_Logits_and_calibration",
            "7_Embeddings"]


def figures(a) -> int:
    """Every analysis page under Streamlit's AppTest against the preset's store: the figures exactly as the
    pages build them from the run's probes, saved as Plotly JSON, one file per page."""
    os.environ["KD_EXPLORER_HOME"] = str(a.home)
    from streamlit.testing.v1 import AppTest
    pages = {}
    for page in ANALYSIS:   # each page on its own, as a fresh browser tab opening it would
        t0 = time.perf_counter()
        at = AppTest.from_file(str(ROOT / "pages" / f"{page}.py"), default_timeout=300).run()
        figs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
        problems = [str(e.value)[:500] for e in at.exception] + [str(e.value)[:500] for e in at.error]
        write(a.out / "figures", f"{page}.json", figs)
        pages[page] = {"figures": len(figs), "traces": sum(len(f.get("data", [])) for f in figs),
                       "titles": [f.get("layout", {}).get("title", {}).get("text") for f in figs],
                       "problems": problems, "seconds": round(time.perf_counter() - t0, 2),
                       "run_shown": at.selectbox[0].value if len(at.selectbox) else None}
    write(a.out, "figures.json", pages)
    bad = {p: v["problems"] for p, v in pages.items() if v["problems"] or not v["figures"]}
    if bad:
        print(f"figures: pages with errors or no figure: {bad}", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------- the one summary
def summary(a) -> int:
    out = a.out

    def load(name):
        p = out / name
        return json.loads(p.read_text()) if p.is_file() else None

    rows = []
    for p in sorted(out.glob("throughput_*.jsonl")):
        rows += [json.loads(ln) for ln in p.read_text().splitlines() if ln.startswith("{")]
    peers = {json.loads(p.read_text()).get("batch_size"): json.loads(p.read_text())
             for p in sorted(out.glob("torchdistill_b*.json"))}
    ratios = []
    for r in rows:
        t = peers.get(r["batch_size"])
        if r["pair"] == "resnet56:resnet20" and t and t.get("images_per_s"):
            ratios.append({"batch_size": r["batch_size"], "compile": r["compile"], "ours": r["images_per_s"],
                           "torchdistill": t["images_per_s"], "ratio": round(r["images_per_s"] / t["images_per_s"], 3)})
    pytest_rc = (out / "cuda_tests.rc").read_text().strip() if (out / "cuda_tests.rc").is_file() else None
    s = {"dry": a.dry, "cuda_tests_rc": pytest_rc, "throughput": rows,
         "torchdistill": list(peers.values()), "ratio_vs_torchdistill": ratios,
         "time_to_accuracy": load("time_to_accuracy.json"), "preset": load("preset.json"),
         "figures": load("figures.json"), "environment": load("environment.json")}
    write(out, "summary.json", s)
    md = [f"# GPU check results{' (dry run on CPU: tiny budgets, no figure is a measurement)' if a.dry else ''}", "",
          f"cuda tests: exit {pytest_rc} (cuda_tests.txt)", "", "## Throughput (kd-explorer bench throughput)", "",
          "| pair | batch | compile | img/s | step ms | teacher ms | student ms | of peak |", "|---|---:|---|---:|---:|---:|---:|---:|"]
    md += [f"| {r['pair']} | {r['batch_size']} | {r['compile']} | {r['images_per_s']} | {r['step_ms']} | {r['teacher_ms']} "
           f"| {r['student_ms']} | {r['peak_fraction']} |" for r in rows]
    md += ["", "## Against torchdistill (same device, same command)", ""]
    md += [f"- batch {x['batch_size']}, compile {x['compile']}: {x['ours']} vs {x['torchdistill']} img/s = "
           f"**{x['ratio']}x**" for x in ratios] or [f"- not measured: {[p.get('skipped') for p in peers.values()]}"]
    t = s["time_to_accuracy"]
    if t:
        md += ["", "## Time to accuracy (Fashion-MNIST, resnet20 <- bundled resnet20 teacher, KD)", "",
               f"target {t['target']}: {t['seconds_to_target']} s ({t['epochs_to_target']} epochs); attempts: " +
               "; ".join(f"{x['epochs']} epochs -> {x['test_acc']:.4f} in {x['seconds']} s" for x in t["attempts"])]
    if s["preset"]:
        md += ["", "## Default preset", ""] + [f"- {r['name']}: {r['status']}, test acc {r['test_acc']}, {r['seconds']} s"
                                                for r in s["preset"]["runs"]]
    if s["figures"]:
        md += [""] + [f"- {p}: {v['figures']} figures, {v['traces']} traces, problems: {v['problems'] or 'none'}"
                      for p, v in s["figures"].items()]
    (out / "summary.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="step", required=True)
    for name in ("peer", "tta", "preset", "figures", "summary"):
        s = sub.add_parser(name)
        s.add_argument("--out", type=Path, required=True)
        s.add_argument("--device", default="cuda")
    s = sub.choices["peer"]
    s.add_argument("--pair", default="resnet56:resnet20")
    s.add_argument("--batch-size", dest="batch_size", type=int, default=128)
    s.add_argument("--steps", type=int, default=50)
    s.add_argument("--warmup", type=int, default=5)
    s.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    s = sub.choices["tta"]
    s.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    s.add_argument("--target", default="0.92", help="test accuracy to reach; 'none': just run the budget")
    s.add_argument("--epochs", default="4,8,15", help="epoch budgets tried in turn until one reaches --target")
    s.add_argument("--n-train", dest="n_train", type=int, default=None)
    for name in ("preset", "figures"):
        sub.choices[name].add_argument("--home", type=Path, required=True)
    sub.choices["preset"].add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    sub.choices["summary"].add_argument("--dry", action="store_true")
    a = p.parse_args(argv)
    return {"peer": peer, "tta": tta, "preset": preset, "figures": figures, "summary": summary}[a.step](a)


if __name__ == "__main__":
    sys.exit(main())
