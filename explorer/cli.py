"""kd-explorer: the command line over the engine (same as `python -m explorer`).

The `run` subcommand's flags are generated from RunConfig's field declarations (FIELD_SPECS), so a new
field is a new flag with its range in `--help`; checking them is recipes.resolve's job, done once.
Only the declarations are imported up front: the registries and the engine load when a command needs them.
"""
from __future__ import annotations

import argparse
import json
import sys

from .cli_config import FieldHelpFormatter, add_custom_code_flag, add_run_args, config_from_args, registry
from .errors import ConfigError

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
            lm = "".join(f"  val_{k}={v[f'val/{k}']:.3f}" for k in ("ppl", "agree") if f"val/{k}" in v)   # text runs
            print(f"  {who}epoch {e.epoch:>3}  {terms}  train_acc={v['train/acc']:.3f}  val_acc={v['val/acc']:.3f}{lm}  "
                  f"{v['images_per_s']:.0f} {'tokens' if lm else 'img'}/s", file=sys.stderr, flush=True)
        elif e.kind == "start":
            t = f"teacher {v['teacher']} (test acc {v['teacher_acc']:.3f}) -> " if v.get("teacher_acc") is not None else ""
            print(f"[{e.run_id}] {t}student {v['student']} on {v['n_train']} images, {v['epochs']} epochs, "
                  f"device {v['device']}", file=sys.stderr, flush=True)
    return on_event


def cmd_run(args) -> int:
    from .distributed import is_main
    from .engine import Trainer
    from .errors import RunFailed, RunInterrupted
    cfg = config_from_args(args)
    try:
        result = Trainer(cfg, on_event=_progress_printer(args.json)).run()
    except RunFailed as e:
        status = "interrupted" if isinstance(e, RunInterrupted) else "failed"   # e.g. a torchrun rank stopped
        print(f"run {status}: {e}", file=sys.stderr)
        if args.json and is_main():
            from .store import Store
            runs = Store().list_runs(status=status)
            print(json.dumps({"run_id": runs[-1]["id"] if runs else None, "status": status, "message": str(e)}))
        return EXIT_FAILED
    return _print_result(result, args.json)


def _print_result(result: dict, as_json: bool) -> int:
    from .distributed import is_main
    if not is_main():   # under torchrun, rank 0 prints the run's result; the other ranks stay quiet
        return 0 if result["status"] == "completed" else EXIT_FAILED
    if as_json:
        print(json.dumps(result))
    else:
        acc, t = result.get("test_acc"), result.get("teacher_acc")
        print(f"run {result['run_id']}: {result['status']}"
              + (f"  test_acc={acc:.4f}" if acc is not None else "")
              + (f"  teacher_acc={t:.4f}" if t is not None else "") + f"  ({result['seconds']:.1f} s)")
    return 0 if result["status"] == "completed" else EXIT_FAILED


def cmd_resume(args) -> int:
    from .engine import Trainer
    from .recipes import resolve
    from .store import Store
    store = Store()
    run = store.get_run(args.run)
    if run["status"] not in ("interrupted", "failed", "cancelled"):
        print(f"run {run['id']} is {run['status']}; only interrupted, failed or cancelled runs resume", file=sys.stderr)
        return EXIT_USAGE
    store.update_run(run["id"], cancel_requested=0)
    cfg = resolve(run["config"], allow_custom_code=args.allow_custom_code)
    result = Trainer(cfg, store, on_event=_progress_printer(args.json)).run(run["id"], resume=True)
    return _print_result(result, args.json)


def cmd_runs(args) -> int:
    """The newest runs (filtered, limited in SQL: no pandas, no torch), oldest of them first."""
    from .store import RunQuery, Store
    from .store_queries import records, text_table
    store = Store()
    limit = args.limit if args.limit is not None else 0 if args.json else 50   # 0: every run
    query = RunQuery(statuses=tuple(args.status), datasets=tuple(args.dataset), search=args.search, limit=limit or None)
    rows = records(store.query_runs(query)[::-1])
    if args.json:
        print(json.dumps(rows))
    elif not rows:
        print("no runs match" if store.count_runs() else "no runs yet: try `kd-explorer run`")
    else:
        print(text_table(rows, ["id", "role", "status", "dataset", "teacher", "student", "scheme", "methods",
                                "test_acc", "teacher_acc", "seconds"]))
        total = store.count_runs(query)
        if total > len(rows):
            print(f"(the newest {len(rows)} of {total} runs; --limit N shows more, --limit 0 all)")
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


def cmd_doctor(args) -> int:
    from .doctor import command_line
    return command_line(args.repair, args.json)


def _paper_line(d: dict) -> str:   # methods and schemes
    return f"{d['key']:<14} {d['category']:<10} {d['name']:<36} {d['authors'].split(',')[0]} {d['year'] or ''}"


def _model_rows() -> list[dict]:
    from .models import model_info
    return [{**d, **model_info(d["name"], 10, 3, 32)} for d in registry("models").describe_all()]


def _model_line(r: dict) -> str:
    return (f"{r['name']:<12} {r['family']:<10} {r['params'] / 1e6:7.3f} M params {r['flops'] / 1e6:9.1f} MFLOPs "
            "(3x32x32)")


def _dataset_line(r: dict) -> str:
    return f"{r['name']:<14} {r['default_teacher']:>10} -> {r['default_student']:<10} {r['description']}"


# command: (what it lists, its rows, one printed line per row); the rows are the registry's describe_all
LISTINGS = {
    "methods": ("the knowledge-distillation methods", lambda: registry("methods").describe_all(), _paper_line),
    "schemes": ("the schemes and algorithms", lambda: registry("schemes").describe_all(), _paper_line),
    "models": ("the model zoo with parameters and FLOPs", _model_rows, _model_line),
    "datasets": ("the datasets", lambda: registry("datasets").describe_all(), _dataset_line),
}


def cmd_list(args) -> int:
    _, rows, line = LISTINGS[args.command]
    if getattr(args, "timm", None) is not None:   # models --timm [FILTER]: timm's names (each usable as timm:NAME)
        from .models.timm_models import list_names
        try:
            rows, line = list_names(args.timm).copy, str
        except ValueError as e:   # timm not installed: how to install it
            print(f"error: {e}", file=sys.stderr)
            return EXIT_USAGE
    items = rows()
    print(json.dumps(items) if args.json else "\n".join(map(line, items)))
    return 0


def cmd_app(args) -> int:
    from .app_launcher import launch
    return launch(args.host, args.port, data_roots=args.data_root)


def cmd_download(args) -> int:
    from .data.cifar import download_cifar
    try:
        folder = download_cifar(args.folder, 10 if args.dataset == "cifar10" else 100)
    except OSError as e:   # no network, a proxy, a full disk: say which, keep the traceback out
        print(f"error: could not download {args.dataset}: {e}. Download and extract the python version "
              f"by hand into {args.folder} and pass --data-root {args.folder}.", file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.dataset} is in {folder}; use --dataset {args.dataset} --data-root {args.folder}")
    return 0


def cmd_tune(args) -> int:
    from .tune import main
    return main(args)


def cmd_bench(args) -> int:
    from . import bench
    return bench.main(args.bench_args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kd-explorer", description="Explore knowledge distillation: train, distill, compare.")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name, func, help, json=True, **kw):
        r = sub.add_parser(name, help=help, **kw)
        if json:
            r.add_argument("--json", action="store_true")
        r.set_defaults(func=func)
        return r

    add_run_args(command("run", cmd_run, "train a student (and its teacher if needed) and record the run",
                          json=False, formatter_class=FieldHelpFormatter))   # its --json has help of its own
    r = command("resume", cmd_resume, "resume an interrupted run from its last checkpoint")
    r.add_argument("run")
    add_custom_code_flag(r)
    from .store import STATUSES   # (sqlite only)
    r = command("runs", cmd_runs, "list recorded runs (the newest 50; --json: all)")
    r.add_argument("--limit", type=int, default=None, help="at most this many, the newest (0: all)")
    r.add_argument("--status", action="append", default=[], choices=STATUSES, help="only these (repeatable)")
    r.add_argument("--dataset", action="append", default=[], help="only these (repeatable)")
    r.add_argument("--search", default="", help="text in the name, id, dataset, models, methods or message")
    command("show", cmd_show, "one run: config, summary, per-epoch metrics").add_argument("run")
    command("cancel", cmd_cancel, "ask a running run to stop (it keeps its partial record)", json=False).add_argument("run")
    command("doctor", cmd_doctor, "check the store and every run's files; --repair moves a damaged store aside "
            "(kept as runs.sqlite.broken-<time>) and starts a fresh one").add_argument("--repair", action="store_true")
    listings = {name: command(name, cmd_list, f"list {what}") for name, (what, _, _) in LISTINGS.items()}
    listings["models"].add_argument("--timm", nargs="?", const="", metavar="FILTER", help="list timm's models "
                                    "instead, as timm:NAME (timm.list_models(FILTER): 'resnet*', or a word in the name)")
    r = command("app", cmd_app, "start the Streamlit app (localhost)", json=False)
    r.add_argument("--host", default=None, help="the address to listen on (default: STREAMLIT_SERVER_ADDRESS, "
                   "else the app's .streamlit/config.toml: 127.0.0.1, this machine only)")
    r.add_argument("--port", type=int, default=None,
                   help="the port (default: STREAMLIT_SERVER_PORT, else Streamlit's config, else 8501)")
    r.add_argument("--data-root", action="append", default=[], metavar="DIR",
                   help="a folder the app's Data-folder box may read datasets from (repeatable); always allowed: "
                        "<KD_EXPLORER_HOME>/data and the dataset's default folder")
    r = command("download", cmd_download, "fetch the CIFAR python batches once (checksum-verified)", json=False)
    r.add_argument("dataset", choices=["cifar10", "cifar100"])
    r.add_argument("folder")
    from .tune import add_args as add_tune_args   # argparse and the tune module's constants only
    add_tune_args(command("tune", cmd_tune, "choose a method's or scheme's weight and main hyperparameter on a "
                          "validation split of the training data; writes data/tuned/<dataset>.yaml"))
    command("bench", cmd_bench, "benchmarks: methods | schemes | throughput | protocol (see `kd-explorer bench methods -h`; "
            "--executor ray runs a grid on a Ray cluster, docs/ray.md)",
            json=False).add_argument("bench_args", nargs=argparse.REMAINDER)
    return p


def _checkpoint_error() -> type:
    """explorer.checkpoints' CheckpointError, where the command loaded it (it imports torch; `runs` does not)."""
    loaded = sys.modules.get(f"{__package__}.checkpoints")
    return loaded.CheckpointError if loaded else ConfigError


def main(argv: list[str] | None = None) -> int:
    from .errors import RunFailed, StoreError, scrub   # a damaged store, a full disk; resume from a bad checkpoint
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, _checkpoint_error(), KeyError, FileNotFoundError, StoreError, RunFailed) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"error: {scrub(msg)}", file=sys.stderr)
        return EXIT_FAILED if isinstance(e, (StoreError, RunFailed)) else EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
