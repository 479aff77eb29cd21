"""Train the default teachers that ship in data/teachers/, so a first KD run trains no teacher.

    .venv/bin/python scripts/train_default_teachers.py                 # digits
    .venv/bin/python scripts/train_default_teachers.py digits fashion-mnist
    .venv/bin/python scripts/train_default_teachers.py pydoc          # the language-model teacher (gpt_4x128)

Each teacher is trained with exactly the recipe the trainer would use for that dataset's default
teacher (explorer.recipes.default_teacher_recipe), in a throwaway run store, and saved as
data/teachers/<recipe_hash>.pt ({"student": state_dict}, the trainer's model.pt layout) with a
<recipe_hash>.json beside it saying what it is. The trainer finds it by that hash; change the
recipe and the hash changes, so a stale file is simply never used (re-run this script).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from explorer.engine import Trainer  # noqa: E402
from explorer.recipes import RECIPE_KEYS, default_teacher_recipe, recipe_hash  # noqa: E402
from explorer.store import Store  # noqa: E402
from explorer.teachers import BUNDLED as OUT  # noqa: E402


def train_teacher(dataset: str, out: Path = OUT) -> dict:
    tcfg = default_teacher_recipe(dataset)
    rhash = recipe_hash(tcfg)
    with tempfile.TemporaryDirectory() as home:
        store = Store(home)

        def show(e):
            if e.kind == "epoch":
                print(f"  {dataset} teacher epoch {e.epoch:>3}  loss={e.values['train/loss']:.4f}  "
                      f"val_acc={e.values['val/acc']:.4f}"
                      + (f"  val_ppl={e.values['val/ppl']:.3f}" if "val/ppl" in e.values else ""), flush=True)

        result = Trainer(tcfg, store, on_event=show).run()
        state = torch.load(store.artifacts(result["run_id"])["model"], map_location="cpu", weights_only=True)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"student": state["student"]}, out / f"{rhash}.pt")
    info = {
        "recipe_hash": rhash, "dataset": dataset, "arch": tcfg.student,
        "recipe": {k: getattr(tcfg, k) for k in RECIPE_KEYS},
        "test_acc": result["test_acc"], "val_acc": result["val_acc"], "train_seconds": result["seconds"],
        **{k: result[k] for k in ("val_ppl", "test_ppl") if result.get(k) is not None},   # text datasets
        "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
        "command": "python scripts/train_default_teachers.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    }
    (out / f"{rhash}.json").write_text(json.dumps(info, indent=2) + "\n")
    size = (out / f"{rhash}.pt").stat().st_size
    print(f"{dataset}: {tcfg.student} test_acc={result['test_acc']:.4f} in {result['seconds']:.0f} s -> "
          f"{out / f'{rhash}.pt'} ({size / 2**20:.1f} MiB)")
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("datasets", nargs="*", default=["digits"])
    args = p.parse_args(argv)
    for name in args.datasets:
        train_teacher(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
