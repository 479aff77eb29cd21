"""From what a user asked for to the run that will happen: `resolve` is the one pass every entry point
(CLI, job queue, trainer, app) calls, once.

    cfg = resolve({"dataset": "digits", "methods": "kd+at"})   # a dict, a YAML's contents or a RunConfig

It checks every field (its own spec), then what needs the registries (the dataset, models, scheme and
methods exist; their hyperparameters are in range; the fast teacher paths fit the methods), and fills
every default from the dataset's recipe, so the stored config reproduces the run. The teacher's own
recipe and its hash (how a trained teacher is found again) live here too.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .config import FIELD_SPECS, RunConfig
from .custom_code import custom_model_factory, is_custom
from .data import DATASETS, get_dataset_spec
from .errors import ConfigError
from .kd import METHODS, get_method
from .models import MODELS, timm_models
from .schemes import SCHEMES, get_scheme
from .spec import not_allowed
from .speed import auto_teacher_dtype
from .tuned import apply_defaults

REGISTRIES = {"datasets": DATASETS, "models": MODELS, "schemes": SCHEMES, "methods": METHODS}
# a dataset recipe may fix these for its teachers (the text datasets' recipes name their optimiser: AdamW)
TEACHER_RECIPE_OPTIONS = ("schedule", "momentum", "weight_decay", "optimizer")
RECIPE_KEYS = ("dataset", "data_root", "image_size", "augment", "student", "epochs", "batch_size", "optimizer", "lr",
               "momentum", "weight_decay", "schedule", "seed")


def resolve(config: RunConfig | dict, allow_custom_code: bool = False) -> RunConfig:
    """A checked RunConfig with every default filled. A RunConfig is completed in place; one already
    resolved is returned as it is. Raises ConfigError naming the field."""
    if isinstance(config, RunConfig):
        if config.resolved:
            return config
        cfg = config.validate()
    else:
        cfg = RunConfig.from_dict(config, allow_custom_code)
    check_registries(cfg)
    _fill_defaults(cfg)
    _check_scheme_config(cfg)
    _check_modality(cfg)
    _check_data_root(cfg)
    check_pairing(cfg)
    cfg.resolved = True
    return cfg


def check_registries(cfg: RunConfig) -> None:
    """What a field's own spec cannot know: names that must be registered, hyperparameters of the
    chosen scheme and methods, and options that only some methods allow."""
    for name, spec in FIELD_SPECS.items():
        value = getattr(cfg, name)
        if spec.registry is None or value is None:
            continue
        if is_custom(value):
            try:
                custom_model_factory(value)
            except ValueError as e:
                raise ConfigError(name, str(e)) from None
        elif spec.registry == "models" and timm_models.is_timm(value):   # any timm model: timm_models says why not
            try:
                timm_models.check(value)
            except ValueError as e:
                raise ConfigError(name, str(e)) from None
        elif value not in REGISTRIES[spec.registry]:
            raise ConfigError(name, not_allowed(value, REGISTRIES[spec.registry].list()))
    _check_dataset_fields(cfg)
    scheme = get_scheme(cfg.scheme)
    for name, value in cfg.scheme_params.items():   # one at a time, so the error names the field
        try:
            scheme.check_params({name: value})
        except ValueError as e:
            raise ConfigError(f"scheme_params.{name}", str(e)) from None
    for i, term in enumerate(cfg.methods):
        if term.key not in METHODS:
            raise ConfigError(f"methods[{i}].key", not_allowed(term.key, METHODS.list()))
        specs = {h.name: h for h in get_method(term.key).hparams}
        for name, value in term.params.items():
            if name not in specs:
                raise ConfigError(f"methods[{i}].params.{name}",
                                  f"unknown for {term.key!r}; allowed: {', '.join(specs) or 'none'}")
            specs[name].check(value, f"methods[{i}].params.{name}")
    _check_teacher_fast_path(cfg)
    _check_dot(cfg)


def _check_scheme_config(cfg: RunConfig) -> None:
    """A scheme's own check of the filled config, where it declares one (`check_config`, e.g. DeiT's student
    must have a distillation token); it raises ConfigError naming the field."""
    check = getattr(get_scheme(cfg.scheme), "check_config", None)
    if check is not None and cfg.role == "distill":
        check(cfg)


# schemes that cannot run on token windows: they make or transform images (dafl, deepinversion, crossmodal), use an
# image model's class token or pooled classifier (deit, one, byot) or keep one prediction per image (cskd, pskd).
# Every other scheme runs on text (each tried on pydoc); the refusal lists them from the registry.
IMAGE_ONLY_SCHEMES = ("dafl", "deepinversion", "crossmodal", "deit", "one", "byot", "cskd", "pskd")
MAP_NEEDS = frozenset({"stages", "preact"})   # image feature maps (B, C, H, W); text stages are (B, T, C) tokens


def _check_modality(cfg: RunConfig) -> None:
    """A text dataset needs sequence models, and methods and schemes that do not need images; an image dataset
    refuses sequence models. Said before the run, naming the field."""
    from .models.sequence import is_sequence_arch
    text = get_dataset_spec(cfg.dataset).modality == "text"
    for field in ("student", "teacher"):
        arch = getattr(cfg, field)
        if arch is None or is_custom(arch) or timm_models.is_timm(arch):
            if text and arch is not None and timm_models.is_timm(arch):
                raise ConfigError(field, f"{arch} is an image model; {cfg.dataset} is text: use a gpt_* model")
            continue
        if field == "teacher" and cfg.role == "teacher":
            continue
        seq = is_sequence_arch(arch)
        if seq != text:
            raise ConfigError(field, f"{arch} is {'a language' if seq else 'an image'} model and {cfg.dataset} is "
                              f"{'text' if text else 'images'}: choose "
                              + (f"a gpt_* model (e.g. {get_dataset_spec(cfg.dataset).default_student})" if text
                                 else "an image model"))
    if text and cfg.probe_epochs and cfg.probe_size:
        raise ConfigError("probe_epochs", "text runs record no probes (a probe holds image samples); the Language "
                          "models page computes its views from the run's final models: leave probe_epochs empty")
    if not text or cfg.role != "distill":
        return
    if cfg.scheme in IMAGE_ONLY_SCHEMES:
        text_schemes = [s for s in SCHEMES.list() if s not in IMAGE_ONLY_SCHEMES]
        raise ConfigError("scheme", f"{cfg.scheme} is for images (it makes or transforms them, splits an image model "
                          f"or keeps one prediction per image) and {cfg.dataset} is text; choose "
                          f"{', '.join(text_schemes[:-1])} or {text_schemes[-1]}")
    from .models.sequence import TOKEN_ROW_REFUSED, TOKEN_STATE_METHODS
    for i, term in enumerate(cfg.methods):
        if term.key in TOKEN_ROW_REFUSED:
            raise ConfigError(f"methods[{i}]", f"{term.key} does not run on text: {TOKEN_ROW_REFUSED[term.key]}; "
                              "use pkt, sp, irg or a logit method (kd, rkl, gkd, ...)")
        needs = get_method(term.key).needs & MAP_NEEDS
        if needs and term.key not in TOKEN_STATE_METHODS:
            raise ConfigError(f"methods[{i}]", f"{term.key} reads image feature maps ({', '.join(sorted(needs))}); "
                              f"{cfg.dataset} is text, whose blocks give (B, T, C) token states. Of the stage "
                              f"methods, {', '.join(TOKEN_STATE_METHODS)} read those states (seen as (B, C, T, 1): "
                              "explorer/models/sequence.py); else use a logit method (kd, rkl, gkd, dkd, ...), an "
                              "embedding one (pkt, irg, ...) or minilm")


def _check_dataset_fields(cfg: RunConfig) -> None:
    """data_root / image_size for a dataset whose reader ignores them would change the recipe hash and
    nothing else (the bundled teacher skipped, another trained silently): refused, naming them."""
    spec = get_dataset_spec(cfg.dataset)
    unused = [f for f, takes in (("data_root", spec.takes_root), ("image_size", spec.takes_image_size))
              if getattr(cfg, f) is not None and not takes]
    if unused:
        users = {f: [d for d in DATASETS.list() if getattr(get_dataset_spec(d), t)]
                 for f, t in (("data_root", "takes_root"), ("image_size", "takes_image_size"))}
        raise ConfigError(unused[0], f"{cfg.dataset!r} does not use {' or '.join(unused)}: its reader would ignore "
                          f"{'them' if len(unused) > 1 else 'it'}; leave {'them' if len(unused) > 1 else 'it'} empty. "
                          + "; ".join(f"{f} is read by {', '.join(users[f])}" for f in unused))


def _check_data_root(cfg: RunConfig) -> None:
    """A dataset read from a folder needs that folder to exist: said before the run starts, not by it."""
    spec = get_dataset_spec(cfg.dataset)
    if cfg.data_root is None or not spec.takes_root:
        return
    try:
        exists = Path(cfg.data_root).expanduser().is_dir()
    except (OSError, ValueError):   # a name the OS refuses
        exists = False
    if not exists:
        default = " (its default folder)" if cfg.data_root == spec.default_root else ""
        raise ConfigError("data_root", f"the folder {cfg.data_root!r}{default} does not exist; {cfg.dataset} reads "
                          "its files from a folder on this machine: name the folder that holds them")


def check_pairing(cfg: RunConfig, shape: tuple[int, int, int] | None = None, num_classes: int | None = None) -> None:
    """The knowledge terms' own checks of the student/teacher pair (FSP's equal channel counts, FitNet's hint
    stage: Method.check_pair, which their constructors call too), before the run: on the stage shapes of one
    dry forward pass of the two zoo models (schemes.offline.dry_pair, from the dataset's shape and classes;
    a folder dataset's are known once it is read: pass them, else the run's own build checks). Raises
    ConfigError naming the method."""
    from .kd.base import Method
    from .schemes.offline import dry_pair
    checked = [(i, t) for i, t in enumerate(cfg.methods)
               if get_method(t.key).check_pair.__func__ is not Method.check_pair.__func__]
    if not checked or cfg.role != "distill":
        return
    spec = get_dataset_spec(cfg.dataset)
    shape = shape or spec.shape
    num_classes = num_classes or spec.num_classes
    if shape is not None and cfg.image_size and spec.takes_image_size:
        shape = (shape[0], cfg.image_size, cfg.image_size)
    if shape is None or num_classes is None or is_custom(cfg.student) or is_custom(cfg.teacher):
        return
    try:
        teacher = get_scheme(cfg.scheme).methods_teacher(cfg, tuple(shape), num_classes)
    except ValueError as e:
        raise ConfigError("scheme", str(e)) from None
    if teacher is None or is_custom(teacher):
        return
    keys = ", ".join(t.key for _, t in checked)
    try:
        pair = dry_pair(cfg, cfg.student, teacher, tuple(shape), num_classes)
    except Exception as e:   # a stage name the model lacks, a model that does not fit the images
        field = "student_stages" if cfg.student_stages else "teacher_stages" if cfg.teacher_stages else "methods"
        raise ConfigError(field, f"{keys} read the stages of {cfg.student} and {teacher}, which could not be "
                          f"measured on {tuple(shape)} images: {e}") from None
    for i, term in checked:
        try:
            get_method(term.key).check_pair(pair, **term.params)
        except ValueError as e:
            raise ConfigError(f"methods[{i}]", f"{e} (student {cfg.student}, teacher {teacher})") from None


def _check_teacher_fast_path(cfg: RunConfig) -> None:
    """teacher_cache and a bf16 teacher stand in for the offline teacher's logits only: features and
    other schemes' teachers are untouched by them, so asking for them there is an error, not a no-op."""
    for fname, on in (("teacher_cache", cfg.teacher_cache), ("teacher_dtype", cfg.teacher_dtype == "bfloat16")):
        if not on or cfg.role == "teacher":
            continue
        if cfg.scheme not in ("offline", "deit"):   # deit's loss reads only its frozen teacher's logits too
            raise ConfigError(fname, f"applies to the offline scheme's frozen teacher only, not {cfg.scheme!r}; "
                              "turn it off for this scheme")
        feature = [t.key for t in cfg.methods if not get_method(t.key).needs <= {"logits"}] \
            if cfg.scheme == "offline" else []
        if feature:
            raise ConfigError(fname, f"works with methods that read only the teacher's logits; {', '.join(feature)} "
                              "read its features. Turn it off, or use response methods (kd, dkd, ...)")


def _check_dot(cfg: RunConfig) -> None:
    """DOT splits a step's loss into the cross-entropy and the distillation terms: it needs both."""
    if cfg.optimizer != "dot":
        return
    if cfg.role == "teacher" or cfg.scheme != "offline" or not cfg.methods or cfg.ce_weight == 0:
        raise ConfigError("optimizer", "dot needs the offline scheme with at least one knowledge term and a "
                          "cross-entropy weight above 0 (it gives each loss its own momentum); choose sgd otherwise")
    if not (0 <= cfg.momentum - cfg.dot_delta and cfg.momentum + cfg.dot_delta < 1):
        raise ConfigError("dot_delta", f"momentum ± dot_delta must stay in [0, 1); momentum is {cfg.momentum}")


def _fill_defaults(cfg: RunConfig) -> None:
    """Resolve every None that has a dataset default, so the stored config reproduces the run."""
    spec = get_dataset_spec(cfg.dataset)
    r = spec.recipe
    if cfg.role == "teacher":
        cfg.methods = []   # a teacher learns from labels alone
    apply_defaults(cfg)   # tuned | benchmark: the methods' and scheme's unset weights and hyperparameters
    cfg.teacher = cfg.teacher or spec.default_teacher
    cfg.student = cfg.student or spec.default_student
    cfg.epochs = cfg.epochs or r["epochs"]
    cfg.teacher_epochs = cfg.teacher_epochs or r["teacher_epochs"]
    cfg.batch_size = cfg.batch_size or r["batch_size"]
    if cfg.lr is None:   # the recipe's lr is for SGD, unless the recipe names its own optimiser (text: AdamW)
        cfg.lr = r["lr"] if cfg.optimizer in ("sgd", "dot") or cfg.optimizer == r.get("optimizer") else 1e-3
    if cfg.probe_epochs is None:   # text runs: the language-model page computes its views from the models
        cfg.probe_epochs = [] if spec.modality == "text" else sorted({0, cfg.epochs // 4, cfg.epochs // 2, cfg.epochs})
    if cfg.data_root is None and spec.default_root:
        cfg.data_root = spec.default_root
    if cfg.teacher_dtype == "auto":   # stored resolved, so the run says what it did
        cfg.teacher_dtype = auto_teacher_dtype(cfg)


def teacher_recipe(cfg: RunConfig, arch: str | None = None) -> RunConfig:
    """The resolved recipe a teacher of `cfg` is trained with: a run of its own, reused whenever it matches.

    Only the data and the teacher's epochs come from the student's config; the optimisation is the
    dataset's recipe, so students tried with other learning rates or batch sizes share one teacher."""
    cfg = resolve(cfg)
    tcfg = RunConfig(
        name=None, role="teacher", dataset=cfg.dataset, data_root=cfg.data_root, image_size=cfg.image_size,
        augment=cfg.augment, student=arch or cfg.teacher, teacher=None, methods=[], scheme="offline",
        epochs=cfg.teacher_epochs, teacher_epochs=cfg.teacher_epochs, seed=0, device=cfg.device,
        amp=cfg.amp, probe_epochs=[], probe_size=0,
        # a recipe that names its schedule/momentum/weight decay (CIFAR's: the CRD benchmark's) trains its teachers so
        **{k: v for k, v in get_dataset_spec(cfg.dataset).recipe.items() if k in TEACHER_RECIPE_OPTIONS})
    tcfg.allow_custom_code = cfg.allow_custom_code   # a custom teacher is the same trusted user's code
    return resolve(tcfg)


def default_teacher_recipe(dataset: str, data_root: str | None = None) -> RunConfig:
    """The recipe of the dataset's default teacher (what a bundled teacher file was trained with)."""
    return teacher_recipe(RunConfig(dataset=dataset, data_root=data_root))


def recipe_hash(cfg: RunConfig) -> str:
    """What identifies a trained model's recipe: runs (and bundled files) with the same hash are interchangeable."""
    blob = json.dumps({k: getattr(cfg, k) for k in RECIPE_KEYS}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
