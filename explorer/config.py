"""The typed run config: every field declared once, with its type, range and help (explorer.spec).

Every entry point (CLI, YAML/JSON, app, job queue, Python) builds one; `RunConfig.validate` checks
each field against its own declaration. Checks that need the registries (is the dataset known, do the
method's hyperparameters exist) and the dataset's defaults belong to `explorer.recipes.resolve`, the one
function every entry point calls. Errors are ConfigErrors naming the field -- never a torch traceback.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .custom_code import is_custom
from .errors import ConfigError
from .spec import HParam, field_specs, option

__all__ = ["ConfigError", "MethodTerm", "RunConfig", "FIELD_SPECS", "parse_methods"]


@dataclass
class MethodTerm:
    """One distillation term of the loss: `weight` x (the method's terms). weight None = method default."""
    key: str
    weight: float | None = None
    params: dict[str, Any] = field(default_factory=dict)


WEIGHT = HParam("weight", 1.0, 0.0, 1e6, "multiplies every loss term of this method")


@dataclass
class RunConfig:
    name: str | None = option(optional=True, max_len=120, label="Run name", help="a label for the run")
    role: str = option("distill", choices=("distill", "teacher"),
                       help="distill a student, or train a teacher from labels alone")
    # data
    dataset: str = option("digits", registry="datasets", label="Dataset", help="from the dataset registry")
    data_root: str | None = option(optional=True, label="Data folder",
                                   help="a folder on this machine holding the dataset's files")
    n_train: int | None = option(optional=True, low=10, high=10_000_000, kind="int", label="Training images",
                                 help="a stratified subset of the training split, for short runs (empty = all)")
    image_size: int | None = option(optional=True, low=8, high=512, kind="int",
                                    help="images are resized to this (folder datasets only)")
    augment: bool = option(True, help="pad-crop (and flip where it fits) the training images")
    # models
    teacher: str | None = option(optional=True, registry="models", label="Teacher architecture",
                                 help="empty = the dataset's default teacher")
    teacher_ckpt: str | None = option(optional=True, help="a state_dict file; empty = reuse or train one")
    teacher_epochs: int | None = option(optional=True, low=1, high=10_000, kind="int", label="Teacher epochs",
                                        help="epochs of a teacher trained for this run (empty = the recipe's)")
    student: str | None = option(optional=True, registry="models", label="Student architecture",
                                 help="empty = the dataset's default student")
    teacher_stages: list[str] | None = option(optional=True, kind="names",
                                              help="the teacher's stage modules, shallow to deep (models outside the zoo)")
    student_stages: list[str] | None = option(optional=True, kind="names",
                                              help="the student's stage modules, shallow to deep (models outside the zoo)")
    stage_pairs: list[list[int]] | None = option(optional=True, kind="pairs",
                                                 help="explicit (student stage, teacher stage) pairs; 0 is the stem")
    # knowledge
    scheme: str = option("offline", registry="schemes", label="Scheme", help="how knowledge flows (offline, online, self-KD, ...)")
    scheme_params: dict[str, Any] = option(factory=dict, kind="mapping", help="the scheme's hyperparameters")
    methods: list[MethodTerm] = option(factory=lambda: [MethodTerm("kd")], kind="methods",
                                       label="Knowledge terms", help="knowledge terms, e.g. kd+at")
    ce_weight: float | None = option(optional=True, low=0.0, high=1e3, kind="float", label="CE weight",
                                     help="weight of the cross-entropy (empty = the methods' benchmark default: KD 0.1, else 1)")
    defaults: str | None = option(optional=True, choices=("tuned", "benchmark"), label="Defaults",
                                  help="the unset weights and hyperparameters: tuned = the dataset's data/tuned/ values "
                                       "(`kd-explorer tune`), benchmark = the published ones; empty = tuned where "
                                       "the dataset has them")
    # optimisation
    epochs: int | None = option(optional=True, low=1, high=10_000, kind="int", label="Epochs",
                                help="empty = the dataset's recipe")
    batch_size: int | None = option(optional=True, low=2, high=65_536, kind="int", label="Batch size",
                                    help="empty = the dataset's recipe")
    optimizer: str = option("sgd", choices=("sgd", "adamw", "dot"), label="Optimiser",
                            help="the optimiser; dot: SGD with separate momenta for the cross-entropy and the "
                                 "distillation gradients (DOT, Zhao et al., ICCV 2023)")
    lr: float | None = option(optional=True, low=0.0, high=1e3, open_low=True, kind="float", label="Learning rate",
                              log=True, help="empty = the dataset's recipe (AdamW: 1e-3)")
    momentum: float = option(0.9, low=0.0, high=0.999, label="Momentum", help="SGD momentum (Nesterov)")
    dot_delta: float = option(0.075, low=0.0, high=0.5, label="DOT delta",
                              help="DOT: the task gradient moves with momentum - delta, the distillation gradient "
                                   "with momentum + delta (official CIFAR-100 configs: 0.075)")
    weight_decay: float = option(5e-4, low=0.0, high=1.0, label="Weight decay", help="L2 weight decay")
    schedule: str = option("cosine", choices=("cosine", "step", "constant"), label="Schedule",
                           help="learning-rate schedule (step: x0.1 at 5/8, 6/8, 7/8 of the run)")
    # run
    seed: int = option(0, low=0, high=2**31 - 1, label="Seed", help="seeds the student's init and the batches")
    device: str = option("auto", kind="device", label="Device", help="where to compute")
    amp: bool = option(True, help="mixed precision on CUDA (ignored elsewhere)")
    probe_epochs: list[int] | None = option(optional=True, kind="ints",
                                            help="epochs whose analysis probes are saved (0 = before training)")
    probe_size: int = option(64, low=0, high=4096, help="test images saved in each probe (0 = no probes)")
    checkpoint_every: int = option(1, low=0, high=10_000, help="save a checkpoint every N epochs (0 = only the last)")
    # speed (explorer/speed.py; measured in docs/performance.md): none changes what is learnt beyond rounding
    channels_last: bool = option(True, help="NHWC activations for the student and teacher: faster convolutions")
    teacher_dtype: str = option("float32", choices=("float32", "bfloat16", "auto"),
                                help="bfloat16: the frozen teacher computes in bf16 (logit-only methods); "
                                     "auto: where the hardware has it")
    compile: bool = option(False, help="torch.compile student and teacher (no gain measured on CPU)")
    teacher_cache: bool = option(False, help="reuse the frozen teacher's logits per (sample, augmented view)")
    # Not fields (no annotation): never read from a dict or file, never saved.
    allow_custom_code = False   # teacher/student may name 'import:pkg.module:factory' (the CLI's opt-in only)
    resolved = False            # set by recipes.resolve: defaults filled and registries checked

    def __post_init__(self):
        # accept the short forms in Python too: RunConfig(methods="kd+at") or methods=["kd", {"key": "at"}]
        if isinstance(self.methods, (str, list)) or self.methods is None:
            self.methods = parse_methods(self.methods)

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
        """Parse and check every field against its declaration. allow_custom_code: teacher/student may be
        'import:pkg.module:factory'; only the CLI sets it (its --allow-custom-code flag), never the app or
        the job queue, so a browser cannot run code."""
        if not isinstance(data, dict):
            raise ConfigError("config", f"expected a mapping of field names to values, got {type(data).__name__}")
        for key in data:
            if key not in FIELD_SPECS:
                hint = difflib.get_close_matches(str(key), FIELD_SPECS, n=1)
                raise ConfigError(key if isinstance(key, str) and key.strip() else repr(key), "unknown field" + (
                    f"; did you mean '{hint[0]}'?" if hint else f"; allowed: {', '.join(sorted(FIELD_SPECS))}"))
        data = dict(data)
        if "methods" in data:
            data["methods"] = parse_methods(data["methods"])
        cfg = cls(**data)
        cfg.allow_custom_code = allow_custom_code
        return cfg.validate()

    # ---------------------------------------------------------------- validation (each field's own spec)
    def validate(self) -> "RunConfig":
        for name, spec in FIELD_SPECS.items():
            spec.check(getattr(self, name), name)
        for fname in ("teacher", "student"):
            if is_custom(getattr(self, fname)) and not self.allow_custom_code:
                raise ConfigError(fname, f"{getattr(self, fname)!r} names custom Python code, which only a config "
                                  "you run from the command line may load: `kd-explorer run --allow-custom-code ...`. "
                                  "The app and the job queue never load code; choose a zoo model "
                                  "(`kd-explorer models`) there.")
        if not isinstance(self.methods, list):
            raise ConfigError("methods", "must be a list of methods, e.g. [{key: kd, weight: 0.9}]")
        seen = set()
        for i, term in enumerate(self.methods):
            if not isinstance(term, MethodTerm):
                raise ConfigError(f"methods[{i}]", "must be {key, weight, params}")
            if not isinstance(term.key, str) or not term.key:
                raise ConfigError(f"methods[{i}].key", f"must be a method key, got {term.key!r}")
            if term.key in seen:
                raise ConfigError(f"methods[{i}].key", f"{term.key!r} is listed twice")
            seen.add(term.key)
            if term.weight is not None:
                WEIGHT.check(term.weight, f"methods[{i}].weight")
            if not isinstance(term.params, dict):
                raise ConfigError(f"methods[{i}].params", "must be a mapping of hyperparameter names to values")
        return self


FIELD_SPECS: dict[str, HParam] = field_specs(RunConfig)


def parse_methods(value: Any) -> list[MethodTerm]:
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


