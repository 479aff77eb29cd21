"""The CIFAR-100 benchmark protocol: the CRD recipe (RepDistiller) for the three classic pairs, with each
method's official hyperparameters, so a user with a GPU and the data gets a table that lines up with the
published one (explorer/published.py; the app's Benchmark page).

    kd-explorer bench protocol --pair resnet32x4:resnet8x4 --method kd --data-root DIR --print-config
    kd-explorer bench protocol --pair all --method kd,dkd,none --data-root DIR --out bench-protocol/   # then run

The recipe's numbers (240 epochs, batch 64, lr 0.05, x0.1 at 150/180/210, weight decay 5e-4) are the cifar100
dataset recipe (explorer/data/catalog.py), declared there once: the teachers are trained with it too
(recipes.teacher_recipe). The methods' benchmark weights are their registry defaults; OFFICIAL holds the
per-pair departures of their official configs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DATASET = "cifar100"
PAIRS = ("resnet32x4:resnet8x4", "wrn_40_2:wrn_16_2", "resnet56:resnet20")
SMALL_LR_ARCHS = ("mobilenetv2", "shufflenetv1", "shufflenetv2")   # the recipe's lr 0.01 for these students
SMALL_LR = 0.01
# method key -> the official configs' hyperparameters where they differ from our defaults, per pair ("*": all)
OFFICIAL: dict[str, dict[str, dict]] = {
    # mdistiller's DKD configs: beta 8 for resnet32x4 (our default), 6 for the wrn pairs, 2 for resnet56/110
    "dkd": {"wrn_40_2:wrn_16_2": {"params": {"beta": 6.0}}, "resnet56:resnet20": {"params": {"beta": 2.0}}},
}
# variants that are one switch on a registered method: name -> (method key, term overrides)
VARIANTS: dict[str, tuple[str, dict]] = {
    # logit standardisation's configs: base temperature 2, KD weight 9 (sunshangquan/logit-standardization-KD)
    "kd+ls": ("kd", {"weight": 9.0, "params": {"standardize": True, "temperature": 2.0}}),
}
BASELINES = ("none", "teacher")   # the student alone, and the pair's teacher itself


def recipe() -> dict:
    """The protocol's optimisation (the cifar100 recipe): epochs, batch_size, lr, schedule, momentum, weight_decay."""
    from ..data import get_dataset_spec
    r = get_dataset_spec(DATASET).recipe
    return {k: r[k] for k in ("epochs", "batch_size", "lr", "schedule", "momentum", "weight_decay")}


def methods() -> list[str]:
    """What the protocol can run: the student alone, the teacher, every registered method and the variants."""
    from ..kd import list_methods
    return list(BASELINES) + list_methods() + list(VARIANTS)


def _split(pair: str) -> tuple[str, str]:
    if pair not in PAIRS:
        raise ValueError(f"unknown pair {pair!r}; the protocol's pairs are {', '.join(PAIRS)}")
    teacher, student = pair.split(":")
    return teacher, student


def term(method: str, pair: str) -> dict:
    """The method's knowledge term under the protocol: its official hyperparameters for this pair."""
    key, extra = VARIANTS.get(method, (method, {}))
    out: dict = {"key": key}
    for part in (extra, OFFICIAL.get(key, {}).get("*", {}), OFFICIAL.get(key, {}).get(pair, {})):
        if "weight" in part:
            out["weight"] = part["weight"]
        if part.get("params"):
            out["params"] = {**out.get("params", {}), **part["params"]}
    return out


def config(pair: str, method: str, data_root: str | None = None, seed: int = 0) -> dict:
    """The run config (a dict for recipes.resolve) of one method on one pair under the protocol.
    method 'none': the student alone; 'teacher': the pair's teacher trained from labels by the same recipe."""
    teacher, student = _split(pair)
    r = recipe()
    if method not in methods():
        raise ValueError(f"unknown method {method!r} for the protocol; choose from {', '.join(methods())}")
    lr = SMALL_LR if student.lower().startswith(SMALL_LR_ARCHS) else r["lr"]
    cfg = dict(dataset=DATASET, data_root=data_root, teacher=teacher, student=student, teacher_epochs=r["epochs"],
               epochs=r["epochs"], batch_size=r["batch_size"], optimizer="sgd", lr=lr, schedule=r["schedule"],
               momentum=r["momentum"], weight_decay=r["weight_decay"], seed=seed,
               name=f"protocol {method} {teacher}→{student} s{seed}")
    if method == "teacher":
        cfg.update(role="teacher", student=teacher, teacher=None, methods=[], lr=r["lr"])
    else:
        cfg["methods"] = [] if method == "none" else [term(method, pair)]
    if data_root is None:
        cfg.pop("data_root")
    return cfg


def main(argv: list[str]) -> int:
    import yaml
    p = argparse.ArgumentParser(prog="kd-explorer bench protocol",
                                description="The CIFAR-100 benchmark protocol (CRD recipe): write its run configs.")
    p.add_argument("--pair", default="resnet32x4:resnet8x4", help=f"teacher:student, comma-separated, or all: "
                   f"{', '.join(PAIRS)}")
    p.add_argument("--method", default="kd", help="comma-separated method keys, none (student alone), teacher, "
                   f"{', '.join(VARIANTS)}; or all")
    p.add_argument("--data-root", dest="data_root", required=True, help="the CIFAR-100 folder "
                   "(`kd-explorer download cifar100 FOLDER`)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--out", default="bench-protocol", help="folder the configs are written to")
    p.add_argument("--print-config", dest="print_config", action="store_true", help="also print each config")
    a = p.parse_args(argv)
    from ..errors import ConfigError
    from ..recipes import resolve
    pairs = list(PAIRS) if a.pair == "all" else a.pair.split(",")
    keys = methods() if a.method == "all" else a.method.split(",")
    out = Path(a.out)
    written, refused = [], 0
    for pair in pairs:
        for method in keys:
            for seed in (int(s) for s in a.seeds.split(",")):
                try:
                    cfg = resolve(config(pair, method, a.data_root, seed)).to_dict()
                except (ValueError, ConfigError) as e:   # an unknown key, a folder missing, FSP on unequal channels
                    print(f"{pair} {method}: refused: {e}", file=sys.stderr)
                    refused += 1
                    continue
                path = out / f"{pair.replace(':', '-')}_{method}_s{seed}.yaml"
                out.mkdir(parents=True, exist_ok=True)
                path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
                written.append(path)
                if a.print_config:
                    print(f"# {path}\n{yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)}")
    for path in written:
        print(f"kd-explorer run --config {path}")
    print(f"{len(written)} configs in {out}/; run each command above (a GPU: about an hour or more per 240-epoch "
          "run); the teachers are trained once by the same recipe and reused", file=sys.stderr)
    return 2 if refused else 0
