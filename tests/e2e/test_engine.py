"""The engine end to end: config, datasets, trainer, teacher reuse, store, CLI."""
import json
import threading

import pytest
import torch

from explorer import cli, teachers
from explorer.config import ConfigError, RunConfig
from explorer.data import augment_batch, list_datasets, load_dataset
from explorer.engine import Trainer, run
from explorer.errors import RunFailed
from explorer.models import list_models
from explorer.models.sequence import is_sequence_arch
from explorer.recipes import resolve
from explorer.store import Store
from support.runs import stored_student_test_acc
from support.writers import write_cifar, write_idx

TINY = dict(dataset="digits", n_train=60, epochs=1, teacher_epochs=1, student="cnn_tiny", teacher="cnn_tiny",
            probe_size=0, batch_size=32)


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="epochs"):
        RunConfig.from_dict({"epochs": 0})
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        RunConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match=r"methods\[0\].key.*choose one of"):
        resolve({"methods": ["nosuch"]})
    with pytest.raises(ConfigError, match="lr"):
        RunConfig.from_dict({"lr": float("nan")})
    with pytest.raises(ConfigError, match="temperature"):
        resolve({"methods": [{"key": "kd", "params": {"temperature": -1.0}}]})


def test_config_round_trip(tmp_path):
    cfg = RunConfig.from_dict({"dataset": "digits", "methods": "kd", "n_train": 300, "seed": 2})
    for suffix in (".yaml", ".json"):
        cfg.save(tmp_path / f"c{suffix}")
        assert RunConfig.load(tmp_path / f"c{suffix}") == cfg


def test_every_dataset_registered_with_defaults():
    assert {"digits", "fashion-mnist", "mnist", "cifar10", "cifar100", "shapes", "folder"} <= set(list_datasets())
    from explorer.data import get_dataset_spec
    for name in list_datasets():
        spec = get_dataset_spec(name)
        assert spec.default_teacher in list_models() and spec.default_student in list_models()


def test_digits_splits_and_subset():
    data = load_dataset("digits", n_train=300)
    assert data.shape == (1, 8, 8) and data.num_classes == 10
    assert len(data.train) == 300 and len(data.test) == 360
    counts = torch.bincount(data.train.y, minlength=10)
    assert counts.min() >= 28 and counts.max() <= 32          # stratified
    again = load_dataset("digits", n_train=300)
    assert torch.equal(data.train.y, again.train.y)            # the subset never moves with the run seed
    with pytest.raises(ValueError, match="n_train"):
        load_dataset("digits", n_train=100_000)


def test_augmentation_pad_crop_and_flip_on_device():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4) + 1
    g = torch.Generator().manual_seed(0)
    out = augment_batch(x, pad=1, flip=True, generator=g)
    assert out.shape == x.shape
    # every output row is a shifted/flipped window of the zero-padded input
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for b in range(2):
        windows = [padded[b, 0, i:i + 4, j:j + 4] for i in range(3) for j in range(3)]
        assert any(torch.equal(out[b, 0], w) or torch.equal(out[b, 0], w.flip(1)) for w in windows)
    assert torch.equal(augment_batch(x, 0, False), x)


def test_cifar_and_idx_through_the_registry(tmp_path):
    g = torch.Generator().manual_seed(0)
    tx = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=g)
    ty = torch.arange(40) % 10
    write_cifar(tmp_path / "c10", 10, tx.numpy(), ty.numpy(), tx[:20].numpy(), ty[:20].numpy())
    data = load_dataset("cifar10", root=str(tmp_path / "c10"))
    assert data.shape == (3, 32, 32) and len(data.test) == 20 and len(data.train) + len(data.val) == 40
    ix = torch.randint(0, 256, (30, 28, 28), dtype=torch.uint8, generator=g).numpy()
    iy = (torch.arange(30) % 10).to(torch.uint8).numpy()
    for name, arr in (("train-images-idx3-ubyte", ix), ("train-labels-idx1-ubyte", iy),
                      ("t10k-images-idx3-ubyte", ix[:10]), ("t10k-labels-idx1-ubyte", iy[:10])):
        write_idx(tmp_path / "mn" / name, arr)
    data = load_dataset("mnist", root=str(tmp_path / "mn"))
    assert data.shape == (1, 28, 28) and len(data.test) == 10


@pytest.mark.skipif(not __import__("os").path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_real_files_one_epoch():
    # role teacher: trains one model alone, so the test does not train a teacher on all 54,000 images
    r = run(RunConfig(dataset="fashion-mnist", role="teacher", n_train=200, epochs=1, student="cnn_tiny",
                      probe_size=0, methods=[]))
    assert r["status"] == "completed" and r["test_acc"] == pytest.approx(stored_student_test_acc(Store(), r["run_id"]))


def test_shapes_and_folder_one_epoch(tmp_path):
    from PIL import Image
    r = run(RunConfig(dataset="shapes", n_train=100, epochs=1, teacher_epochs=1, teacher="cnn_tiny",
                      student="cnn_tiny", probe_size=8))
    assert r["status"] == "completed"
    for c in ("cats", "dogs"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(12):
            Image.new("RGB", (20, 20), (i * 10, 50 if c == "cats" else 200, 0)).save(tmp_path / "imgs" / c / f"{i}.png")
    r = run(RunConfig(dataset="folder", data_root=str(tmp_path / "imgs"), image_size=16, n_train=10, epochs=1,
                      teacher_epochs=1, teacher="cnn_tiny", student="cnn_tiny", probe_size=4))
    assert r["status"] == "completed"


def test_kd_run_records_terms_and_reuses_teacher():
    store = Store()
    events = []
    r1 = Trainer(RunConfig(**TINY, methods=["kd"]), store, on_event=events.append).run()
    teachers = store.list_runs(role="teacher")
    assert len(teachers) == 1 and r1["teacher_run"] == teachers[0]["id"]
    r2 = run(RunConfig(**TINY, methods=[], seed=1), store=store)
    assert len(store.list_runs(role="teacher")) == 1          # never trains its teacher twice
    assert r2["teacher_run"] == teachers[0]["id"]
    names = set(store.metrics_df(r1["run_id"])["name"])
    assert {"train/ce", "train/kd", "train/loss", "val/acc", "lr", "images_per_s"} <= names
    kinds = {e.kind for e in events}
    assert {"start", "epoch", "end", "teacher_epoch"} <= kinds
    runs = store.runs_df()
    assert set(runs["status"]) == {"completed"} and "test_acc" in runs


def test_summary_names_the_teacher_and_the_stage_pairs_each_method_distilled():
    store = Store()
    r = Trainer(RunConfig(**TINY, methods=["kd", "at"]), store).run()
    (teacher,) = store.list_runs(role="teacher")
    assert (r["teacher_source"], r["teacher_run"], r["teacher_arch"]) == ("run", teacher["id"], "cnn_tiny")
    assert teachers.of_run(store.get_run(r["run_id"])).run_id == teacher["id"]   # recorded with the run
    assert list(r["stage_pairs"]) == ["at"] and r["stage_pairs"]["at"]            # kd reads no stages
    assert all(i == j > 0 for i, j in r["stage_pairs"]["at"])                      # same model: 1:1, stem skipped
    assert store.get_run(r["run_id"])["summary"]["stage_pairs"] == r["stage_pairs"]


def test_same_seed_same_accuracy_on_cpu():
    cfg = dict(TINY, epochs=2, methods=["kd"])
    a, b = run(RunConfig(**cfg)), run(RunConfig(**cfg))
    assert a["test_acc"] == b["test_acc"] and a["val_acc"] == b["val_acc"]


def test_non_finite_loss_fails_with_cause():
    store = Store()
    with pytest.raises(RunFailed, match="learning rate"):
        Trainer(RunConfig(**dict(TINY, epochs=3), lr=900.0, methods=[]), store).run()
    failed = store.list_runs(status="failed")
    assert len(failed) == 1 and "lr=900" in failed[0]["message"]


def test_cancel_from_another_thread_keeps_partial_record():
    store = Store()
    stop = threading.Event()
    seen = []

    def on_event(e):
        seen.append(e.kind)
        if e.kind == "epoch":
            stop.set()
    r = Trainer(RunConfig(**dict(TINY, epochs=50)), store, on_event=on_event, cancel=stop).run()
    assert r["status"] == "cancelled"
    assert store.get_run(r["run_id"])["status"] == "cancelled"
    assert not store.metrics_df(r["run_id"]).empty


def test_checkpoints_load_weights_only_and_name_mismatches(tmp_path):
    from explorer.checkpoints import CheckpointError, load_checkpoint_into
    from explorer.models import create_model
    src = create_model("cnn_tiny", 10, 1, 8)
    torch.save(src.state_dict(), tmp_path / "ok.pt")
    dst = load_checkpoint_into(create_model("cnn_tiny", 10, 1, 8), tmp_path / "ok.pt")
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_checkpoint_into(create_model("cnn_small", 10, 1, 8), tmp_path / "ok.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_checkpoint_into(src, tmp_path / "junk.pt")


def test_cli_run_json_last_line_and_listing(capsys):
    code = cli.main(["run", "--dataset", "digits", "--method", "kd", "--n-train", "60", "--epochs", "1",
                     "--teacher-epochs", "1", "--student", "cnn_tiny", "--teacher", "cnn_tiny", "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    result = json.loads(out[-1])
    assert {"run_id", "status", "test_acc", "teacher_acc", "seconds"} <= set(result)
    assert result["status"] == "completed"
    assert result["test_acc"] == pytest.approx(stored_student_test_acc(Store(), result["run_id"]))   # the saved student
    assert cli.main(["runs", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2                                   # the teacher run and the KD run
    assert cli.main(["show", result["run_id"]]) == 0
    assert cli.main(["run", "--epochs", "-3"]) == 2
    assert "epochs" in capsys.readouterr().err


def test_notebook_use():
    from explorer import RunConfig as RC, Store as S, run as r
    result = r(RC(**TINY, methods=["kd"]))
    df = S().metrics_df(result["run_id"])
    wide = df.pivot_table(index="epoch", columns="name", values="value")
    assert "val/acc" in wide and len(wide) == 1


@pytest.mark.parametrize("arch", [a for a in list_models() if not is_sequence_arch(a)])   # gpt_*: tests/e2e/test_lm.py
def test_every_zoo_model_trains_one_epoch(arch):
    # role "teacher": one model trained alone, the path every teacher and baseline takes
    r = run(RunConfig(dataset="digits", role="teacher", student=arch, n_train=20, epochs=1, batch_size=10,
                      probe_size=0, methods=[]))
    assert r["status"] == "completed" and r["test_acc"] == pytest.approx(stored_student_test_acc(Store(), r["run_id"]))


def test_cli_speed_flags_reach_the_config(capsys):
    args = cli.build_parser().parse_args(["run", "--method", "kd", "--no-channels-last", "--teacher-dtype", "bfloat16",
                                          "--teacher-cache", "--compile"])
    cfg = cli.config_from_args(args)
    assert (cfg.channels_last, cfg.teacher_dtype, cfg.teacher_cache, cfg.compile) == (False, "bfloat16", True, True)
    assert cli.main(["run", "--method", "at", "--teacher-cache"]) == 2
    assert "teacher_cache" in capsys.readouterr().err


def test_cifar_download_failure_is_a_message_not_a_traceback(monkeypatch, capsys, tmp_path):
    import urllib.request
    def offline(*a, **k):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setattr(urllib.request, "urlretrieve", offline)
    assert cli.main(["download", "cifar10", str(tmp_path / "c")]) == 1
    assert "could not download cifar10" in capsys.readouterr().err
