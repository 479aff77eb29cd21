"""kd-explorer: the command line over the engine (same as `python -m explorer`).

The `run` subcommand's flags are generated from RunConfig's field declarations (FIELD_SPECS), so a new
field is a new flag with its range in `--help`; checking them is recipes.resolve's job, done once.
Only the declarations are imported up front: the registries and the engine load when a command needs them.
"""
from __future__ import annotations

import argparse
import json
import sys

from .config import FIELD_SPECS
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
            print(f"  {who}epoch {e.epoch:>3}  {terms}  train_acc={v['train/acc']:.3f}  val_acc={v['val/acc']:.3f}  "
                  f"{v['images_per_s']:.0f} img/s", file=sys.stderr, flush=True)
        elif e.kind == "start":
            t = f"teacher {v['teacher']} (test acc {v['teacher_acc']:.3f}) -> " if v.get("teacher_acc") is not None else ""
            print(f"[{e.run_id}] {t}student {v['student']} on {v['n_train']} images, {v['epochs']} epochs, "
                  f"device {v['device']}", file=sys.stderr, flush=True)
    return on_event


def _list_of(cast, name: str):
    def parse(text: str) -> list:
        return [cast(v) for v in text.split(",") if v]
    parse.__name__ = name   # argparse names the type in its error: "invalid A,B,C value"
    return parse


def _pair(text: str) -> list[int]:
    student, _, teacher = text.partition(":")
    return [int(student), int(teacher)]


# kind -> (argparse type, metavar); lists are comma-separated on the command line
FLAG_TYPES = {"int": (int, "N"), "float": (float, "X"), "str": (str, None), "device": (str, "DEVICE"),
              "names": (_list_of(str, "A,B,C"), "A,B,C"), "ints": (_list_of(int, "N,N"), "N,N"),
              "pairs": (_list_of(_pair, "S:T,S:T"), "S:T,S:T")}


def _field_help(spec) -> str:
    """The field's help, what it allows (a registry's keys, a range or choices) and its default."""
    allowed = (", ".join(_registry(spec.registry).list()) if spec.registry
               else "" if spec.kind == "bool" else spec.range_text())
    default = "" if spec.default in (None, [], {}) else f" (default: {spec.default})"
    return (spec.help + (f". Allowed: {allowed}" if allowed else "") + default).replace("%", "%%")


class _HelpFormatter(argparse.HelpFormatter):
    """Writes a field flag's help from its spec only when help is shown: a registry's keys import every
    method, scheme and model (~2 s), which parsing a command must not pay."""

    def _get_help_string(self, action):
        if action.dest in FIELD_SPECS:
            return _field_help(FIELD_SPECS[action.dest])
        if action.dest == "method":   # --method is not a field's flag, but names methods
            return f"{action.help}. Allowed: {', '.join(_registry('methods').list())}"
        return super()._get_help_string(action)


def _registry(kind: str):
    from .recipes import REGISTRIES
    return REGISTRIES[kind]


def _add_run_args(p: argparse.ArgumentParser):
    p.add_argument("--config", help="YAML or JSON run config; flags override its fields")
    p.add_argument("--method", action="append", dest="method",
                   help="knowledge term(s), the `methods` field: kd, at, kd+at ... or none; repeatable")
    p.add_argument("--weight", action="append", default=[], metavar="KEY=W",
                   help="a method's weight (methods[].weight), e.g. at=1000")
    p.add_argument("--param", action="append", default=[], metavar="KEY.NAME=V",
                   help="a method or scheme hyperparameter (methods[].params, scheme_params), e.g. kd.temperature=8 "
                        "or dml.peers=3; `kd-explorer methods` / `kd-explorer schemes` list each one's range")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    _add_custom_code_flag(p)
    fields = p.add_argument_group("run config fields (a flag overrides that field of --config; "
                                  "speed options: docs/performance.md)")
    for name, spec in FIELD_SPECS.items():
        if spec.kind in ("methods", "mapping"):   # methods and scheme_params: --method, --weight, --param
            continue
        parse = (dict(action=argparse.BooleanOptionalAction) if spec.kind == "bool"   # --augment / --no-augment
                 else dict(zip(("type", "metavar"), FLAG_TYPES[spec.kind])))
        # default None: only the flags given override the --config file; the help shown is _HelpFormatter's
        fields.add_argument("--" + name.replace("_", "-"), dest=name, default=None, help=spec.help, **parse)


def _add_custom_code_flag(p: argparse.ArgumentParser):
    p.add_argument("--allow-custom-code", dest="allow_custom_code", action="store_true",
                   help="let --teacher/--student (or the config) name your own model factory as "
                        "import:package.module:factory; this runs that Python code, so only for code you trust")


def config_from_args(args) -> "RunConfig":
    """The --config file's fields, overridden by the flags given, resolved once (recipes.resolve)."""
    from .config import RunConfig, parse_methods
    from .recipes import resolve
    data = RunConfig.load(args.config, args.allow_custom_code).to_dict() if args.config else {}
    data.update({name: v for name in FIELD_SPECS if (v := getattr(args, name, None)) is not None})
    if args.method:
        data["methods"] = [vars(t) for m in args.method for t in parse_methods(m)]
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
    return resolve(data, allow_custom_code=args.allow_custom_code)


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
    from .engine import Trainer
    from .errors import RunFailed
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


def _paper_line(d: dict) -> str:   # methods and schemes
    return f"{d['key']:<14} {d['category']:<10} {d['name']:<36} {d['authors'].split(',')[0]} {d['year'] or ''}"


def _model_rows() -> list[dict]:
    from .models import model_info
    return [{**d, **model_info(d["name"], 10, 3, 32)} for d in _registry("models").describe_all()]


def _model_line(r: dict) -> str:
    return (f"{r['name']:<12} {r['family']:<10} {r['params'] / 1e6:7.3f} M params {r['flops'] / 1e6:9.1f} MFLOPs "
            "(3x32x32)")


def _dataset_line(r: dict) -> str:
    return f"{r['name']:<14} {r['default_teacher']:>10} -> {r['default_student']:<10} {r['description']}"


# command: (what it lists, its rows, one printed line per row); the rows are the registry's describe_all
LISTINGS = {
    "methods": ("the knowledge-distillation methods", lambda: _registry("methods").describe_all(), _paper_line),
    "schemes": ("the schemes and algorithms", lambda: _registry("schemes").describe_all(), _paper_line),
    "models": ("the model zoo with parameters and FLOPs", _model_rows, _model_line),
    "datasets": ("the datasets", lambda: _registry("datasets").describe_all(), _dataset_line),
}


def cmd_list(args) -> int:
    _, rows, line = LISTINGS[args.command]
    items = rows()
    print(json.dumps(items) if args.json else "\n".join(map(line, items)))
    return 0


def cmd_app(args) -> int:
    from .app_launcher import launch
    return launch(args.host, args.port)


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

    _add_run_args(command("run", cmd_run, "train a student (and its teacher if needed) and record the run",
                          json=False, formatter_class=_HelpFormatter))   # its --json has help of its own
    r = command("resume", cmd_resume, "resume an interrupted run from its last checkpoint")
    r.add_argument("run")
    _add_custom_code_flag(r)
    command("runs", cmd_runs, "list recorded runs")
    command("show", cmd_show, "one run: config, summary, per-epoch metrics").add_argument("run")
    command("cancel", cmd_cancel, "ask a running run to stop (it keeps its partial record)", json=False).add_argument("run")
    for name, (what, _, _) in LISTINGS.items():
        command(name, cmd_list, f"list {what}")
    r = command("app", cmd_app, "start the Streamlit app (localhost)", json=False)
    r.add_argument("--host", default="127.0.0.1")
    r.add_argument("--port", type=int, default=8501)
    r = command("download", cmd_download, "fetch the CIFAR python batches once (checksum-verified)", json=False)
    r.add_argument("dataset", choices=["cifar10", "cifar100"])
    r.add_argument("folder")
    command("bench", cmd_bench, "benchmarks: methods | schemes | throughput (see `kd-explorer bench methods -h`)",
            json=False).add_argument("bench_args", nargs=argparse.REMAINDER)
    return p


def main(argv: list[str] | None = None) -> int:
    from .checkpoints import CheckpointError
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, CheckpointError, KeyError, FileNotFoundError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
