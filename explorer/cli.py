"""kd-explorer: the command line over the engine (same as `python -m explorer`)."""
from __future__ import annotations

import argparse
import json
import sys
import time

EXIT_USAGE = 2
EXIT_FAILED = 1


def _progress_printer(json_mode: bool):
    """Per-epoch lines on stderr; stdout stays for results (the last line is JSON with --json)."""
    def on_event(e):
        v = e.values
        if e.kind == "log":
            print(f"[{e.run_id}] {e.message}", file=sys.stderr, flush=True)
        elif e.kind in ("epoch", "teacher_epoch"):
            who = "teacher " if e.kind.startswith("teacher") else ""
            terms = " ".join(f"{k[6:]}={val:.4f}" for k, val in v.items() if k.startswith("train/") and k != "train/acc")
            print(f"  {who}epoch {e.epoch:>3}  {terms}  train_acc={v['train/acc']:.3f}  val_acc={v['val/acc']:.3f}  "
                  f"{v['images_per_s']:.0f} img/s", file=sys.stderr, flush=True)
        elif e.kind == "start":
            t = f"teacher {v['teacher']} (test acc {v['teacher_acc']:.3f}) -> " if v.get("teacher_acc") is not None else ""
            print(f"[{e.run_id}] {t}student {v['student']} on {v['n_train']} images, {v['epochs']} epochs, "
                  f"device {v['device']}", file=sys.stderr, flush=True)
    return on_event


def _add_run_args(p: argparse.ArgumentParser):
    p.add_argument("--config", help="YAML or JSON run config; flags override its fields")
    p.add_argument("--dataset")
    p.add_argument("--data-root", dest="data_root")
    p.add_argument("--teacher")
    p.add_argument("--teacher-ckpt", dest="teacher_ckpt")
    p.add_argument("--student")
    for who in ("teacher", "student"):   # models outside the zoo name the modules whose outputs are stages
        p.add_argument(f"--{who}-stages", dest=f"{who}_stages", type=lambda v: [s for s in v.split(",") if s],
                       metavar="A,B,C", help=f"the {who}'s stage modules, shallow to deep, e.g. layer1,layer2,layer3")
    p.add_argument("--method", action="append", dest="method",
                   help="knowledge term(s): kd, at, kd+at ... or none; repeatable")
    p.add_argument("--weight", action="append", default=[], metavar="KEY=W", help="a method's weight, e.g. at=1000")
    p.add_argument("--param", action="append", default=[], metavar="KEY.NAME=V",
                   help="a method or scheme hyperparameter, e.g. kd.temperature=8 or dml.peers=3")
    p.add_argument("--ce-weight", dest="ce_weight", type=float)
    p.add_argument("--scheme")
    p.add_argument("--epochs", type=int)
    p.add_argument("--teacher-epochs", dest="teacher_epochs", type=int)
    p.add_argument("--n-train", dest="n_train", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--optimizer")
    p.add_argument("--schedule")
    p.add_argument("--seed", type=int)
    p.add_argument("--device")
    p.add_argument("--no-augment", dest="augment", action="store_false", default=None)
    p.add_argument("--name")
    speed = p.add_argument_group("speed options (docs/performance.md)")
    speed.add_argument("--channels-last", dest="channels_last", action=argparse.BooleanOptionalAction, default=None)
    speed.add_argument("--teacher-dtype", dest="teacher_dtype", help="float32 | bfloat16 | auto (logit-only methods)")
    speed.add_argument("--teacher-cache", dest="teacher_cache", action=argparse.BooleanOptionalAction, default=None,
                       help="reuse the frozen teacher's logits per (sample, augmented view)")
    speed.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    _add_custom_code_flag(p)


def _add_custom_code_flag(p: argparse.ArgumentParser):
    p.add_argument("--allow-custom-code", dest="allow_custom_code", action="store_true",
                   help="let --teacher/--student (or the config) name your own model factory as "
                        "import:package.module:factory; this runs that Python code, so only for code you trust")


def config_from_args(args) -> "RunConfig":
    from .config import ConfigError, RunConfig, _parse_methods
    data = RunConfig.load(args.config, args.allow_custom_code).to_dict() if args.config else {}
    for field in ("dataset", "data_root", "teacher", "teacher_ckpt", "student", "teacher_stages", "student_stages",
                  "ce_weight", "scheme", "epochs",
                  "teacher_epochs", "n_train", "batch_size", "lr", "optimizer", "schedule", "seed", "device",
                  "augment", "name", "channels_last", "teacher_dtype", "teacher_cache", "compile"):
        value = getattr(args, field, None)
        if value is not None:
            data[field] = value
    if args.method:
        data["methods"] = [t.__dict__ for m in args.method for t in _parse_methods(m)]
    methods = {m["key"] if isinstance(m, dict) else m: m for m in data.get("methods", [{"key": "kd"}])}
    methods = {k: (m if isinstance(m, dict) else {"key": k}) for k, m in methods.items()}
    for item in args.weight:
        key, _, w = item.partition("=")
        if key not in methods:
            raise ConfigError(f"--weight {item}", f"{key!r} is not one of this run's methods ({', '.join(methods)})")
        try:
            methods[key]["weight"] = float(w)
        except ValueError:
            raise ConfigError(f"--weight {item}", "must look like KEY=NUMBER, e.g. at=1000") from None
    scheme_params = dict(data.get("scheme_params") or {})
    for item in args.param:
        target, _, rest = item.partition(".")
        name, eq, raw = rest.partition("=")
        if not eq or not name:
            raise ConfigError(f"--param {item}", "must look like KEY.NAME=VALUE, e.g. kd.temperature=8")
        value = _parse_scalar(raw)
        if target in methods:
            methods[target].setdefault("params", {})[name] = value
        elif target == data.get("scheme"):
            scheme_params[name] = value
        else:
            raise ConfigError(f"--param {item}", f"{target!r} is neither one of this run's methods "
                              f"({', '.join(methods) or 'none'}) nor its scheme ({data.get('scheme', 'offline')})")
    data["methods"] = list(methods.values())
    if scheme_params:
        data["scheme_params"] = scheme_params
    return RunConfig.from_dict(data, allow_custom_code=args.allow_custom_code)


def _parse_scalar(raw: str):
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def cmd_run(args) -> int:
    from .distributed import is_main
    from .train import RunFailed, Trainer
    cfg = config_from_args(args)
    try:
        result = Trainer(cfg, on_event=_progress_printer(args.json)).run()
    except RunFailed as e:
        print(f"run failed: {e}", file=sys.stderr)
        if args.json and is_main():
            from .store import Store
            runs = Store().list_runs(status="failed")
            print(json.dumps({"run_id": runs[-1]["id"] if runs else None, "status": "failed", "message": str(e)}))
        return EXIT_FAILED
    return _print_result(result, args.json)


def _print_result(result: dict, as_json: bool) -> int:
    from .distributed import is_main
    if not is_main():   # under torchrun, rank 0 prints the run's result; the other ranks stay quiet
        return 0 if result["status"] == "completed" else EXIT_FAILED
    if as_json:
        print(json.dumps(result))
    else:
        acc = result.get("test_acc")
        t = result.get("teacher_acc")
        print(f"run {result['run_id']}: {result['status']}"
              + (f"  test_acc={acc:.4f}" if acc is not None else "")
              + (f"  teacher_acc={t:.4f}" if t is not None else "") + f"  ({result['seconds']:.1f} s)")
    return 0 if result["status"] == "completed" else EXIT_FAILED


def cmd_resume(args) -> int:
    from .config import RunConfig
    from .store import Store
    from .train import Trainer
    store = Store()
    run = store.get_run(args.run)
    if run["status"] not in ("interrupted", "failed", "cancelled"):
        print(f"run {run['id']} is {run['status']}; only interrupted, failed or cancelled runs resume", file=sys.stderr)
        return EXIT_USAGE
    store.update_run(run["id"], cancel_requested=0)
    cfg = RunConfig.from_dict(run["config"], allow_custom_code=args.allow_custom_code)
    result = Trainer(cfg, store, on_event=_progress_printer(args.json)).run(run["id"], resume=True)
    return _print_result(result, args.json)


def cmd_runs(args) -> int:
    from .store import Store
    df = Store().runs_df()
    if args.json:
        print(df.to_json(orient="records", date_format="iso"))
    elif df.empty:
        print("no runs yet: try `kd-explorer run`")
    else:
        cols = [c for c in ("id", "role", "status", "dataset", "teacher", "student", "scheme", "methods", "test_acc",
                            "teacher_acc", "seconds") if c in df]
        print(df[cols].to_string(index=False))
    return 0


def cmd_show(args) -> int:
    from .store import Store
    store = Store()
    run = store.get_run(args.run)
    if args.json:
        print(json.dumps({**run, "artifacts": store.artifacts(run["id"])}, default=str))
        return 0
    print(f"run {run['id']}  [{run['status']}]  {run['message']}")
    print(f"  {run['dataset']}: {run['teacher'] or '-'} -> {run['student']}  scheme={run['scheme']} "
          f"methods={run['methods']}")
    for k, v in run["summary"].items():
        print(f"  {k}: {v}")
    df = store.metrics_df(run["id"])
    if not df.empty:
        wide = df.pivot_table(index="epoch", columns="name", values="value")
        keep = [c for c in wide.columns if c.startswith(("train/loss", "train/acc", "val/acc")) or c == "lr"]
        print(wide[keep].round(4).to_string())
    return 0


def cmd_cancel(args) -> int:
    from .jobs import cancel
    from .store import FINAL
    status = cancel(args.run)   # a queued job is cancelled at once; a running run stops within ~0.25 s
    print(f"cancelled {args.run}" if status == "cancelled" else f"run {args.run} is already {status}"
          if status in FINAL else f"cancel requested for {args.run}")
    return 0


def _registry_cmd(describe_all, title):
    def cmd(args) -> int:
        items = describe_all()
        if args.json:
            print(json.dumps(items))
        else:
            for d in items:
                print(f"{d['key']:<14} {d['category']:<10} {d['name']:<36} {d.get('authors', '').split(',')[0]} "
                      f"{d.get('year') or ''}")
        return 0
    return cmd


def _describe_methods():
    from .kd import get_method, list_methods
    return [get_method(k).describe() for k in list_methods()]


def _describe_schemes():
    from .schemes import get_scheme, list_schemes
    return [get_scheme(k).describe() for k in list_schemes()]


def cmd_models(args) -> int:
    from .models import list_models, model_info
    rows = [model_info(n, 10, 3, 32) for n in list_models()]
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            print(f"{r['name']:<12} {r['family']:<10} {r['params'] / 1e6:7.3f} M params {r['flops'] / 1e6:9.1f} MFLOPs (3x32x32)")
    return 0


def cmd_datasets(args) -> int:
    from .data import get_dataset_spec, list_datasets
    rows = [{"name": n, "description": get_dataset_spec(n).description, "default_teacher": get_dataset_spec(n).default_teacher,
             "default_student": get_dataset_spec(n).default_student} for n in list_datasets()]
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            print(f"{r['name']:<14} {r['default_teacher']:>10} -> {r['default_student']:<10} {r['description']}")
    return 0


def cmd_app(args) -> int:
    from .app_launcher import launch
    return launch(args.host, args.port)


def cmd_download(args) -> int:
    from .data.readers import download_cifar
    try:
        folder = download_cifar(args.folder, 10 if args.dataset == "cifar10" else 100)
    except OSError as e:   # no network, a proxy, a full disk: say which, keep the traceback out
        print(f"error: could not download {args.dataset}: {e}. Download and extract the python version "
              f"by hand into {args.folder} and pass --data-root {args.folder}.", file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.dataset} is in {folder}; use --dataset {args.dataset} --data-root {args.folder}")
    return 0


def cmd_bench(args) -> int:
    from . import bench
    return bench.main(args.bench_args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kd-explorer", description="Explore knowledge distillation: train, distill, compare.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train a student (and its teacher if needed) and record the run")
    _add_run_args(r)
    r.set_defaults(func=cmd_run)
    r = sub.add_parser("resume", help="resume an interrupted run from its last checkpoint")
    r.add_argument("run")
    r.add_argument("--json", action="store_true")
    _add_custom_code_flag(r)
    r.set_defaults(func=cmd_resume)
    r = sub.add_parser("runs", help="list recorded runs")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_runs)
    r = sub.add_parser("show", help="one run: config, summary, per-epoch metrics")
    r.add_argument("run")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_show)
    r = sub.add_parser("cancel", help="ask a running run to stop (it keeps its partial record)")
    r.add_argument("run")
    r.set_defaults(func=cmd_cancel)
    for name, fn, helptext in (("methods", _describe_methods, "the knowledge-distillation methods"),
                               ("schemes", _describe_schemes, "the schemes and algorithms")):
        r = sub.add_parser(name, help=f"list {helptext}")
        r.add_argument("--json", action="store_true")
        r.set_defaults(func=_registry_cmd(fn, name))
    r = sub.add_parser("models", help="list the model zoo with parameters and FLOPs")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_models)
    r = sub.add_parser("datasets", help="list the datasets")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_datasets)
    r = sub.add_parser("app", help="start the Streamlit app (localhost)")
    r.add_argument("--host", default="127.0.0.1")
    r.add_argument("--port", type=int, default=8501)
    r.set_defaults(func=cmd_app)
    r = sub.add_parser("download", help="fetch the CIFAR python batches once (checksum-verified)")
    r.add_argument("dataset", choices=["cifar10", "cifar100"])
    r.add_argument("folder")
    r.set_defaults(func=cmd_download)
    r = sub.add_parser("bench", help="benchmarks: methods | schemes | throughput (see `kd-explorer bench methods -h`)")
    r.add_argument("bench_args", nargs=argparse.REMAINDER)
    r.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    from .checkpoints import CheckpointError
    from .config import ConfigError
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, CheckpointError, KeyError, FileNotFoundError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
