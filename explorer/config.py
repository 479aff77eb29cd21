"""The typed, validated run config. Every entry point (CLI, YAML/JSON, app, Python) builds one.

Validation raises ConfigError naming the field and what is allowed -- never a torch traceback.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    def __init__(self, field_name: str, message: str):
        super().__init__(f"config field '{field_name}': {message}")
        self.field = field_name


@dataclass
class MethodTerm:
    """One distillation term of the loss: `weight` x (the method's terms). weight None = method default."""
    key: str
    weight: float | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunConfig:
    name: str | None = None
    role: str = "distill"                  # "distill" | "teacher" (training a teacher is itself a run)
    # data
    dataset: str = "digits"
    data_root: str | None = None
    n_train: int | None = None             # subset of the training split, for short runs
    image_size: int | None = None          # `folder` only
    augment: bool = True
    # models
    teacher: str | None = None             # None = the dataset's default teacher
    teacher_ckpt: str | None = None        # a state_dict file; None = reuse or train one
    teacher_epochs: int | None = None
    student: str | None = None
    teacher_stages: list[str] | None = None   # explicit tap names, for models outside the zoo
    student_stages: list[str] | None = None
    stage_pairs: list[list[int]] | None = None
    # knowledge
    scheme: str = "offline"
    scheme_params: dict[str, Any] = field(default_factory=dict)
    methods: list[MethodTerm] = field(default_factory=lambda: [MethodTerm("kd")])
    ce_weight: float | None = None         # None = the methods' benchmark default (KD: 0.1, else 1)
    # optimisation
    epochs: int | None = None              # None = the dataset's recipe
    batch_size: int | None = None
    optimizer: str = "sgd"
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    # run
    seed: int = 0
    device: str = "auto"
    amp: bool = True                       # CUDA only; ignored elsewhere
    probe_epochs: list[int] | None = None  # None = a few epochs spread over the run
    probe_size: int = 64
    checkpoint_every: int = 1
    # speed (explorer/speed.py; measured in docs/performance.md): none changes what is learnt beyond rounding
    channels_last: bool = True             # NHWC activations for the student and teacher: faster convolutions
    teacher_dtype: str = "float32"         # "bfloat16": the frozen teacher computes in bf16 (logit-only methods);
                                           # "auto": bf16 where the hardware has it and the methods allow it
    compile: bool = False                  # torch.compile student and teacher: no gain measured on CPU
    teacher_cache: bool = False            # reuse the teacher's logits per (sample, augmented view)
    # Not a field (no annotation): never read from a dict or file, never saved. See from_dict.
    allow_custom_code = False

    def __post_init__(self):
        # accept the short forms in Python too: RunConfig(methods="kd+at") or methods=["kd", {"key": "at"}]
        if isinstance(self.methods, (str, list)) or self.methods is None:
            self.methods = _parse_methods(self.methods)

    # ---------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        text = json.dumps(self.to_dict(), indent=2) if path.suffix == ".json" else self.to_yaml()
        path.write_text(text)

    @classmethod
    def load(cls, path: str | Path, allow_custom_code: bool = False) -> "RunConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError("config", f"file {str(path)!r} does not exist")
        try:
            data = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
        except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError, RecursionError, OSError) as e:
            raise ConfigError("config", f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                              f"{str(e)[:300] or type(e).__name__}") from None
        return cls.from_dict({} if data is None else data, allow_custom_code)

    @classmethod
    def from_dict(cls, data: Any, allow_custom_code: bool = False) -> "RunConfig":
        """allow_custom_code: teacher/student may be 'import:pkg.module:factory'. Only the CLI sets it (on
        its --allow-custom-code flag); the app and the job queue never do, so a browser cannot run code."""
        if not isinstance(data, dict):
            raise ConfigError("config", f"expected a mapping of field names to values, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in names:
                hint = difflib.get_close_matches(str(key), names, n=1)
                raise ConfigError(key if isinstance(key, str) and key.strip() else repr(key), "unknown field" + (
                    f"; did you mean '{hint[0]}'?" if hint else f"; allowed: {', '.join(sorted(names))}"))
        data = dict(data)
        if "methods" in data:
            data["methods"] = _parse_methods(data["methods"])
        cfg = cls(**data)
        cfg.allow_custom_code = allow_custom_code
        cfg.validate()
        return cfg

    # ---------------------------------------------------------------- validation
    def validate(self) -> "RunConfig":
        from .data import list_datasets
        from .kd import list_methods
        from .models import list_models
        from .schemes import get_scheme, list_schemes

        _choice("role", self.role, ["distill", "teacher"])
        _choice("dataset", self.dataset, list_datasets())
        _opt_str("data_root", self.data_root)
        _opt_int("n_train", self.n_train, 10, 10_000_000)
        _opt_int("image_size", self.image_size, 8, 512)
        _bool("augment", self.augment)
        for fname in ("teacher", "student"):
            v = getattr(self, fname)
            if isinstance(v, str) and v.startswith(CUSTOM_PREFIX):
                _custom_model(fname, v, self.allow_custom_code)
            elif v is not None:
                _choice(fname, v, list_models())
        _opt_str("teacher_ckpt", self.teacher_ckpt)
        _opt_int("teacher_epochs", self.teacher_epochs, 1, 10_000)
        for fname in ("teacher_stages", "student_stages"):
            v = getattr(self, fname)
            if v is not None and (not isinstance(v, list) or not v or not all(isinstance(s, str) and s for s in v)):
                raise ConfigError(fname, "must be a non-empty list of module names, e.g. [layer1, layer2, layer3]")
        if self.stage_pairs is not None:
            ok = isinstance(self.stage_pairs, list) and all(
                isinstance(p, (list, tuple)) and len(p) == 2 and all(_is_int(i) and i >= 0 for i in p)
                for p in self.stage_pairs)
            if not ok or not self.stage_pairs:
                raise ConfigError("stage_pairs", "must be a list of [student_stage, teacher_stage] index pairs, "
                                  "e.g. [[1, 1], [2, 3]]")
        _choice("scheme", self.scheme, list_schemes())
        if not isinstance(self.scheme_params, dict):
            raise ConfigError("scheme_params", "must be a mapping of hyperparameter names to values")
        for name, value in self.scheme_params.items():   # one at a time, so the error names the field
            try:
                get_scheme(self.scheme).check_params({name: value})
            except ValueError as e:
                raise ConfigError(f"scheme_params.{name}", str(e)) from None
        if not isinstance(self.methods, list):
            raise ConfigError("methods", "must be a list of methods, e.g. [{key: kd, weight: 0.9}]")
        allowed = list_methods()
        seen = set()
        for i, term in enumerate(self.methods):
            if not isinstance(term, MethodTerm):
                raise ConfigError(f"methods[{i}]", "must be {key, weight, params}")
            _choice(f"methods[{i}].key", term.key, allowed)
            if term.key in seen:
                raise ConfigError(f"methods[{i}].key", f"{term.key!r} is listed twice")
            seen.add(term.key)
            if term.weight is not None:
                _num(f"methods[{i}].weight", term.weight, 0.0, 1e6)
            _validate_hparams(f"methods[{i}].params", term.key, term.params)
        if self.ce_weight is not None:
            _num("ce_weight", self.ce_weight, 0.0, 1e3)
        _opt_int("epochs", self.epochs, 1, 10_000)
        _opt_int("batch_size", self.batch_size, 2, 65_536)
        _choice("optimizer", self.optimizer, ["sgd", "adamw"])
        if self.lr is not None:
            _num("lr", self.lr, 0.0, 1e3, open_low=True)
        _num("momentum", self.momentum, 0.0, 0.999)
        _num("weight_decay", self.weight_decay, 0.0, 1.0)
        _choice("schedule", self.schedule, ["cosine", "step", "constant"])
        _int("seed", self.seed, 0, 2**31 - 1)
        _device("device", self.device)
        _bool("amp", self.amp)
        if self.probe_epochs is not None:
            if not isinstance(self.probe_epochs, list) or not all(_is_int(e) and e >= 0 for e in self.probe_epochs):
                raise ConfigError("probe_epochs", "must be a list of epoch numbers (0 = before training)")
        _int("probe_size", self.probe_size, 0, 4096)
        _int("checkpoint_every", self.checkpoint_every, 0, 10_000)
        _bool("channels_last", self.channels_last)
        _choice("teacher_dtype", self.teacher_dtype, ["float32", "bfloat16", "auto"])
        _bool("compile", self.compile)
        _bool("teacher_cache", self.teacher_cache)
        _teacher_fast_path(self)
        if self.name is not None:
            _opt_str("name", self.name)
            if len(self.name) > 120:
                raise ConfigError("name", "must be at most 120 characters")
        return self


CUSTOM_PREFIX = "import:"


def _custom_model(fname: str, value: str, allowed: bool) -> None:
    """'import:pkg.module:factory' -- a model from the user's own code, only with the CLI's opt-in."""
    if not allowed:
        raise ConfigError(fname, f"{value!r} names custom Python code, which only a config you run from the "
                          "command line may load: `kd-explorer run --allow-custom-code ...`. The app and the job "
                          "queue never load code; choose a zoo model (`kd-explorer models`) there.")
    try:
        custom_model_factory(value)
    except ValueError as e:
        raise ConfigError(fname, str(e)) from None


def custom_model_factory(spec: str):
    """Import the factory named by 'import:pkg.module:factory'; it is called as
    factory(num_classes=, in_channels=, image_size=) and returns an nn.Module giving logits."""
    import importlib
    import re
    m = re.fullmatch(r"import:([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):([A-Za-z_]\w*)", spec)
    if not m:
        raise ValueError(f"{spec!r} must look like 'import:package.module:factory'")
    try:
        module = importlib.import_module(m[1])
    except Exception as e:   # the user's own module: any error it raises on import is reported, not a crash
        raise ValueError(f"cannot import {m[1]!r} ({type(e).__name__}: {e}); is it on PYTHONPATH?") from None
    factory = getattr(module, m[2], None)
    if not callable(factory):
        raise ValueError(f"module {m[1]!r} has no callable {m[2]!r}")
    return factory


def _teacher_fast_path(cfg: RunConfig) -> None:
    """teacher_cache and a bf16 teacher stand in for the offline teacher's logits only: features and
    other schemes' teachers are untouched by them, so asking for them there is an error, not a no-op."""
    from .kd import get_method
    for fname, on in (("teacher_cache", cfg.teacher_cache), ("teacher_dtype", cfg.teacher_dtype == "bfloat16")):
        if not on or cfg.role == "teacher":
            continue
        if cfg.scheme != "offline":
            raise ConfigError(fname, f"applies to the offline scheme's frozen teacher only, not {cfg.scheme!r}; "
                              "turn it off for this scheme")
        feature = [t.key for t in cfg.methods if not get_method(t.key).needs <= {"logits"}]
        if feature:
            raise ConfigError(fname, f"works with methods that read only the teacher's logits; {', '.join(feature)} "
                              "read its features. Turn it off, or use response methods (kd, dkd, ...)")


def _parse_methods(value: Any) -> list[MethodTerm]:
    """Accept 'kd+at', ['kd', 'at'], or [{key, weight, params}] (the form a saved config has)."""
    if value is None or value == "none":
        return []
    if isinstance(value, str):
        value = [v for v in value.split("+") if v and v != "none"]
    if not isinstance(value, list):
        raise ConfigError("methods", "must be a list, e.g. [kd, at] or [{key: kd, weight: 0.9}]")
    terms = []
    for i, item in enumerate(value):
        if isinstance(item, MethodTerm):
            terms.append(item)
        elif isinstance(item, str):
            terms.append(MethodTerm(item))
        elif isinstance(item, dict):
            extra = set(item) - {"key", "weight", "params"}
            if extra or "key" not in item:
                raise ConfigError(f"methods[{i}]", "must have 'key' and optionally 'weight' and 'params'")
            params = item.get("params") or {}
            if not isinstance(params, dict):
                raise ConfigError(f"methods[{i}].params", "must be a mapping of hyperparameter names to values")
            terms.append(MethodTerm(item["key"], item.get("weight"), dict(params)))
        else:
            raise ConfigError(f"methods[{i}]", f"must be a method key or a mapping, got {type(item).__name__}")
    return [t for t in terms if t.key != "none"]


def _validate_hparams(fname: str, key: str, params: Any) -> None:
    from .kd import get_method
    if not isinstance(params, dict):
        raise ConfigError(fname, "must be a mapping of hyperparameter names to values")
    spec = {h.name: h for h in get_method(key).hparams}
    for name, value in params.items():
        if name not in spec:
            raise ConfigError(f"{fname}.{name}", f"unknown for {key!r}; allowed: {', '.join(spec) or 'none'}")
        h = spec[name]
        if isinstance(h.default, bool):
            _bool(f"{fname}.{name}", value)
        elif isinstance(h.default, int):
            _int(f"{fname}.{name}", value, h.low if h.low is not None else -2**31, h.high if h.high is not None else 2**31)
        else:
            _num(f"{fname}.{name}", value, h.low if h.low is not None else -math.inf,
                 h.high if h.high is not None else math.inf)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _choice(fname, value, allowed):
    if not isinstance(value, str) or value not in allowed:
        hint = difflib.get_close_matches(str(value), allowed, n=1) if isinstance(value, str) else []
        raise ConfigError(fname, f"{value!r} is not allowed" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                          + f"; choose one of: {', '.join(allowed)}")


def _int(fname, value, low, high):
    if not _is_int(value) or not (low <= value <= high):
        raise ConfigError(fname, f"must be a whole number from {low} to {high}, got {value!r}")


def _opt_int(fname, value, low, high):
    if value is not None:
        _int(fname, value, low, high)


def _num(fname, value, low, high, open_low=False):
    # an int is exact (math.isfinite would overflow on 10**400); a float must be finite
    ok = _is_int(value) or (isinstance(value, float) and math.isfinite(value))
    if not ok or value > high or value < low or (open_low and value == low):
        lo = f"greater than {low}" if open_low else f"at least {low}"
        raise ConfigError(fname, f"must be a finite number {lo} and at most {high}, got {value!r}")


def _bool(fname, value):
    if not isinstance(value, bool):
        raise ConfigError(fname, f"must be true or false, got {value!r}")


def _opt_str(fname, value):
    if value is not None and (not isinstance(value, str) or not value or "\x00" in value):
        raise ConfigError(fname, f"must be a non-empty string, got {value!r}")


def _device(fname, value):
    if not isinstance(value, str) or not (value in ("auto", "cpu", "cuda", "mps") or
                                          (value.startswith("cuda:") and value[5:].isdigit())):
        raise ConfigError(fname, f"{value!r} is not a device; choose auto, cpu, cuda, cuda:N or mps")
