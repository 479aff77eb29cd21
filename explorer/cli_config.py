"""`kd-explorer run`'s flags and the config they describe: one flag per RunConfig field, generated from its
declaration (FIELD_SPECS), so a new field is a new flag with its range in `--help`. Checking the values is
recipes.resolve's job, done once in `config_from_args`."""
from __future__ import annotations

import argparse

from .config import FIELD_SPECS, RunConfig, parse_methods
from .errors import ConfigError


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
    allowed = (", ".join(registry(spec.registry).list()) if spec.registry
               else "" if spec.kind == "bool" else spec.range_text())
    default = "" if spec.default in (None, [], {}) else f" (default: {spec.default})"
    return (spec.help + (f". Allowed: {allowed}" if allowed else "") + default).replace("%", "%%")


class FieldHelpFormatter(argparse.HelpFormatter):
    """Writes a field flag's help from its spec only when help is shown: a registry's keys import every
    method, scheme and model (~2 s), which parsing a command must not pay."""

    def _get_help_string(self, action):
        if action.dest in FIELD_SPECS:
            return _field_help(FIELD_SPECS[action.dest])
        if action.dest == "method":   # --method is not a field's flag, but names methods
            return f"{action.help}. Allowed: {', '.join(registry('methods').list())}"
        return super()._get_help_string(action)


def registry(kind: str):
    from .recipes import REGISTRIES
    return REGISTRIES[kind]


def add_run_args(p: argparse.ArgumentParser):
    p.add_argument("--config", help="YAML or JSON run config; flags override its fields")
    p.add_argument("--method", action="append", dest="method",
                   help="knowledge term(s), the `methods` field: kd, at, kd+at ... or none; repeatable")
    p.add_argument("--weight", action="append", default=[], metavar="KEY=W",
                   help="a method's weight (methods[].weight), e.g. at=1000")
    p.add_argument("--param", action="append", default=[], metavar="KEY.NAME=V",
                   help="a method or scheme hyperparameter (methods[].params, scheme_params), e.g. kd.temperature=8 "
                        "or dml.peers=3; `kd-explorer methods` / `kd-explorer schemes` list each one's range")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    add_custom_code_flag(p)
    fields = p.add_argument_group("run config fields (a flag overrides that field of --config; "
                                  "speed options: docs/performance.md)")
    for name, spec in FIELD_SPECS.items():
        if spec.kind in ("methods", "mapping"):   # methods and scheme_params: --method, --weight, --param
            continue
        parse = (dict(action=argparse.BooleanOptionalAction) if spec.kind == "bool"   # --augment / --no-augment
                 else dict(zip(("type", "metavar"), FLAG_TYPES[spec.kind])))
        # default None: only the flags given override the --config file; the help shown is FieldHelpFormatter's
        fields.add_argument("--" + name.replace("_", "-"), dest=name, default=None, help=spec.help, **parse)


def add_custom_code_flag(p: argparse.ArgumentParser):
    p.add_argument("--allow-custom-code", dest="allow_custom_code", action="store_true",
                   help="let --teacher/--student (or the config) name your own model factory as "
                        "import:package.module:factory; this runs that Python code, so only for code you trust")


def config_from_args(args) -> RunConfig:
    """The --config file's fields, overridden by the flags given, resolved once (recipes.resolve)."""
    from .recipes import resolve   # the registries load only when a run is configured
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
