"""DeiT end to end (explorer/schemes/deit.py): from the CLI with the bundled CNN digits teacher, its probes
with the transformer's attention, resuming from a checkpoint, and a ViT as the teacher of a CNN."""
import json
import threading

import torch

from explorer import cli
from explorer.analysis.probes import load_probe
from explorer.config import RunConfig
from explorer.engine import Trainer
from explorer.models import create_model
from explorer.store import Store
from support.runs import stored_student_test_acc

TINY = ["--dataset", "digits", "--n-train", "120", "--batch-size", "32", "--optimizer", "adamw", "--probe-size", "8"]


def _run_cli(capsys, *argv) -> dict:
    assert cli.main(["run", *TINY, *argv, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_deit_from_the_cli_with_the_bundled_cnn_teacher(capsys):
    r = _run_cli(capsys, "--student", "deit_tiny_p2", "--scheme", "deit", "--epochs", "1", "--probe-epochs", "0,1")
    store = Store()
    run = store.get_run(r["run_id"])
    assert run["status"] == "completed" and run["summary"]["teacher_source"] == "bundled"
    accs = {k[9:] for k in run["summary"] if k.startswith("test_acc/")}
    assert accs == {"student", "class_head", "dist_head"}
    # the stored student is the two-token model itself: rebuilt from its name, it scores what the run recorded
    assert run["summary"]["test_acc"] == stored_student_test_acc(store, r["run_id"])
    probe = load_probe(store.artifacts(r["run_id"])["probe_epoch001"])
    assert probe["student"]["cls_attention"].shape == (8, 4, 2, 4, 4)     # blocks, heads, 4 x 4 patches
    assert probe["student"]["rollout"].shape == (8, 4, 4) and "rollout" not in probe["teacher"]   # CNN teacher
    before = load_probe(store.artifacts(r["run_id"])["probe_epoch000"])["student"]["rollout"]
    assert not torch.allclose(before, probe["student"]["rollout"])         # training moved the attention


def test_soft_deit_resumes_from_its_checkpoint_to_the_same_weights():
    cfg = dict(dataset="digits", n_train=120, batch_size=32, optimizer="adamw", student="deit_tiny_p2", scheme="deit",
               scheme_params={"distillation_type": "soft", "tau": 3.0, "alpha": 0.1}, methods=[], epochs=2,
               probe_size=0, seed=1)
    store = Store()
    reference = Trainer(RunConfig(**cfg), store).run()
    cancel = threading.Event()
    stopped = Trainer(RunConfig(**cfg), store, on_event=lambda e: e.kind == "epoch" and cancel.set(), cancel=cancel)
    assert stopped.run()["status"] == "cancelled"
    run_id = stopped.run_id
    assert cli.main(["resume", run_id]) == 0
    assert store.get_run(run_id)["status"] == "completed"
    a = torch.load(store.artifacts(run_id)["model"], weights_only=True)["student"]
    b = torch.load(store.artifacts(reference["run_id"])["model"], weights_only=True)["student"]
    assert "dist_token" in a and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_vit_teaches_a_cnn_with_kd(capsys):
    # the ViT teacher is trained for the run (1 epoch, as the run's teacher recipe with teacher_epochs 1)
    r = _run_cli(capsys, "--teacher", "vit_tiny_p2", "--teacher-epochs", "1", "--student", "cnn_tiny",
                 "--method", "kd", "--epochs", "1")
    run = Store().get_run(r["run_id"])
    assert run["status"] == "completed" and run["summary"]["teacher_arch"] == "vit_tiny_p2"
    probe = load_probe(Store().artifacts(r["run_id"])["probe_epoch001"])
    assert probe["teacher"]["rollout"].shape == (8, 4, 4) and "rollout" not in probe["student"]


def test_teacher_cache_gives_deit_the_same_weights(tmp_path):
    # without augmentation the recipe's teacher is not the bundled one: an untrained one from a file (not trained)
    torch.save(create_model("cnn_tiny", 10, 1, 8).state_dict(), tmp_path / "teacher.pt")
    cfg = dict(dataset="digits", n_train=120, batch_size=32, optimizer="adamw", student="deit_tiny_p2", scheme="deit",
               methods=[], epochs=2, probe_size=0, augment=False, teacher="cnn_tiny",
               teacher_ckpt=str(tmp_path / "teacher.pt"))
    store = Store()
    runs = [Trainer(RunConfig(**cfg, teacher_cache=cache), store).run() for cache in (False, True)]
    assert store.get_run(runs[1]["run_id"])["summary"]["teacher_cache_hit_rate"] == 0.5   # epoch 2: all hits
    a, b = (torch.load(store.artifacts(r["run_id"])["model"], weights_only=True)["student"] for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
