"""Schemes and algorithms: registry, loss pieces, where gradients go, and every scheme end to end."""
import json

import pytest
import torch
from PIL import Image

from explorer import cli, teachers
from explorer.analysis.logits import agreement
from explorer.analysis.probes import load_probe
from explorer.config import ConfigError, RunConfig
from explorer.data import load_dataset
from explorer.engine import Trainer
from explorer.kd.base import Batch
from explorer.models import create_model
from explorer.recipes import recipe_hash, resolve, teacher_recipe
from explorer.schemes import RunContext, get_scheme, list_schemes
from explorer.schemes.common import freeze, mid_model
from explorer.schemes.cross_modal import make_view
from explorer.schemes.data_free import load_synthesised
from explorer.store import Store
from support.runs import split_size

ALL = ["dml", "kdcl", "one", "byot", "cskd", "tfkd", "pskd", "takd", "mtkd_avg", "camkd", "dafl", "deepinversion",
       "adversarial", "crossmodal"]
FAST = {"deepinversion": {"n_images": 32, "iterations": 5}}   # the synthesis budget, kept tiny in tests


# ----------------------------------------------------------------------------- helpers

def make_ctx(key: str, dataset="digits", n_train=120, student="cnn_tiny", teacher="cnn_small", **cfg):
    """A RunContext like the trainer's, with untrained frozen teachers (fast; training is not under test)."""
    config = resolve(RunConfig(dataset=dataset, n_train=n_train, student=student, teacher=teacher,
                                     scheme=key, epochs=2, **cfg))
    data = load_dataset(dataset, n_train=n_train)
    c, h, _ = data.shape
    make = lambda arch: create_model(arch, data.num_classes, c, h)  # noqa: E731
    torch.manual_seed(0)
    needs = get_scheme(key).needs_teacher
    return RunContext(config, data, torch.device("cpu"), make(student), freeze(make(teacher)) if needs else None,
                      make, data.steps_per_epoch(config.batch_size), config.epochs,
                      load_teacher=lambda arch: freeze(make(arch)))


def build(key, params=None, **ctx_kw):
    ctx = make_ctx(key, **ctx_kw)
    return get_scheme(key)(ctx, **(FAST.get(key, {}) | (params or {}))), ctx


def first_batch(ctx, epoch=0):
    x, y, idx = next(ctx.dataset.batches("train", 32, shuffle=True, generator=torch.Generator().manual_seed(0)))
    return Batch(x, y, idx, epoch, 0, 0.0)


def grads(loss, params):
    """Per-parameter gradient of `loss`, None where it does not reach."""
    params = list(params)
    return torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)


def reaches(loss, module) -> bool:
    return any(g is not None and g.abs().sum() > 0 for g in grads(loss, module.parameters()))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One store for the module, so the teachers trained for one run are reused by the others."""
    return Store(tmp_path_factory.mktemp("schemes_home"))


TINY = dict(dataset="digits", n_train=120, epochs=1, teacher_epochs=1, student="cnn_tiny", teacher="cnn_small",
            probe_size=8)


# ----------------------------------------------------------------------------- registry

def test_registry_lists_every_scheme_with_paper_equation_and_hparams(capsys):
    # deit (a ViT student): tests/e2e/test_deit.py; seqkd and onpolicy (language models): tests/e2e/test_lm.py;
    # minillm: tests/e2e/test_minillm.py
    assert set(ALL) | {"offline", "deit", "seqkd", "onpolicy", "minillm"} == set(list_schemes())
    for key in list_schemes():
        d = get_scheme(key).describe()
        assert d["category"] in ("offline", "online", "self", "algorithm"), key
        assert d["paper"] and d["authors"] and d["year"] and d["venue"] and d["equation"], key
        assert all(h["help"] for h in d["hparams"]), key
    assert {k for k in ALL if get_scheme(k).category == "online"} == {"dml", "kdcl", "one"}
    assert {k for k in ALL if get_scheme(k).category == "self"} == {"byot", "cskd", "tfkd", "pskd"}
    assert not any(get_scheme(k).needs_teacher for k in ("dml", "kdcl", "one", "byot", "cskd", "tfkd", "pskd"))
    assert cli.main(["schemes", "--json"]) == 0
    listed = {d["key"]: d for d in json.loads(capsys.readouterr().out)}
    assert listed["dml"]["hparams"][0] == {"name": "peers", "default": 2, "low": 2, "high": 8,
                                           "help": listed["dml"]["hparams"][0]["help"]}


def test_bad_hyperparameters_are_named():
    with pytest.raises(ValueError, match="peers must be a whole number from 2 to 8"):
        build("dml", {"peers": 1})
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        build("dml", {"peer": 3})
    with pytest.raises(ValueError, match="not in the model zoo"):
        build("dml", {"peer_archs": "cnn_tiny,nosuch"})
    with pytest.raises(ValueError, match="first of peer_archs is the run's student"):
        build("dml", {"peer_archs": "cnn_small,cnn_tiny"})
    with pytest.raises(ValueError, match="variant must be one of virtual, self"):
        build("tfkd", {"variant": "virtul"})
    with pytest.raises(ValueError, match="already grey"):
        build("crossmodal", {"student_view": "grayscale"})
    with pytest.raises(ConfigError, match=r"scheme_params.variant.*one of virtual, self"):
        resolve({"scheme": "tfkd", "scheme_params": {"variant": "virtul"}})   # before any run starts
    assert get_scheme("crossmodal").describe()["hparams"][0]["choices"] == ["grayscale", "edges", "lowres"]


# ----------------------------------------------------------------------------- loss pieces

@pytest.mark.parametrize("key", ALL)
def test_train_step_returns_student_logits_and_scalar_terms(key):
    scheme, ctx = build(key, {"assistant": "cnn_tiny", "assistant_epochs": 1} if key == "takd" else None)
    batch = first_batch(ctx)
    scheme.train()
    logits, losses = scheme.train_step(batch)
    assert logits.shape == (32, 10)
    assert losses and all(v.dim() == 0 and torch.isfinite(v) for v in losses.values()), losses
    names = list(scheme.eval_models())
    assert names[0] == "student" and len(set(names)) == len(names)


def test_online_terms_per_peer():
    dml, ctx = build("dml", {"peers": 3})
    _, losses = dml.train_step(first_batch(ctx))
    assert set(losses) == {f"{t}_{p}" for t in ("ce", "kl") for p in ("student", "peer1", "peer2")}
    one, ctx = build("one", {"branches": 3})
    _, losses = one.train_step(first_batch(ctx))
    assert set(losses) == {"ce_branches", "ce_ensemble", "kl"}
    assert set(one.eval_models()) == {"student", "branch2", "branch3", "ensemble"}


def test_kdcl_minlogit_target():
    kdcl, ctx = build("kdcl", {"peers": 3})
    z = [torch.randn(5, 10) for _ in range(3)]
    y = torch.tensor([0, 1, 2, 3, 4])
    t = kdcl.ensemble_target(z, y)
    shifted = torch.stack([zk - zk.gather(1, y[:, None]) for zk in z])
    assert torch.allclose(t, shifted.min(0).values)
    assert torch.all(t.gather(1, y[:, None]) == 0)        # the true class is 0 and every other <= any peer's


def test_camkd_weights_prefer_the_teacher_that_is_right():
    camkd, _ = build("camkd", {"teachers": "cnn_small,cnn_tiny"})
    y = torch.tensor([0, 1])
    right = torch.full((2, 10), -5.0).scatter_(1, y[:, None], 5.0)
    wrong = torch.full((2, 10), -5.0).scatter_(1, (y + 1)[:, None], 5.0)
    w = camkd.teacher_weights(torch.stack([wrong, right]), y)
    assert torch.allclose(w.sum(0), torch.ones(2)) and torch.all(w[1] > 0.99)
    # three teachers, by hand: CE 0, ln 2, ln 4 -> softmax(CE) = (1, 2, 4) / 7 -> weights (6, 5, 3) / 14
    three = torch.log(torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]], [[1.0, 3.0]]]).clamp_min(1e-30))
    torch.testing.assert_close(camkd.teacher_weights(three, torch.tensor([0])),
                               torch.tensor([[6.0], [5.0], [3.0]]) / 14)


def test_cskd_partners_share_the_class_but_are_other_samples():
    cskd, ctx = build("cskd")
    batch = first_batch(ctx)
    for _ in range(5):
        p = cskd.partners(batch.index, batch.y)
        assert torch.equal(ctx.dataset.train.y[p], batch.y)
        assert torch.all(p != batch.index)


def test_pskd_targets_use_last_epochs_predictions():
    pskd, ctx = build("pskd")
    batch = first_batch(ctx)
    z, _ = pskd.train_step(batch)
    assert torch.all(pskd.seen[batch.index]) and pskd.seen.sum() == 32
    assert torch.allclose(pskd.past[batch.index], torch.softmax(z.detach(), 1))
    assert pskd.alpha(0) == pytest.approx(0.4) and pskd.alpha(1) == pytest.approx(0.8)   # 2 epochs, alpha_T 0.8


def test_crossmodal_views():
    data = load_dataset("shapes", n_train=100)
    x = next(data.batches("train", 8))[0]
    for name in ("grayscale", "edges", "lowres"):
        v = make_view(name, data)(x)
        assert v.shape == x.shape and torch.isfinite(v).all() and not torch.allclose(v, x)
    gray = make_view("grayscale", data)(x)
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])   # one channel, repeated
    low = make_view("lowres", data)(x)
    assert torch.equal(low[..., 0:4, 0:4], low[..., 0:1, 0:1].expand(-1, -1, 4, 4))     # constant 4x4 blocks


def test_data_free_students_never_read_the_training_images():
    for key in ("dafl", "deepinversion"):
        scheme, ctx = build(key)
        b = first_batch(ctx)
        b.x = torch.full_like(b.x, float("nan"))        # if any real pixel were used, the loss would be NaN
        real_y = b.y.clone()
        z, losses = scheme.train_step(b)
        assert all(torch.isfinite(v) for v in losses.values()), key
        assert z.shape[0] == len(real_y)


def test_state_made_during_the_run_is_checkpointed():
    """What a scheme builds lazily or accumulates is in its state_dict, so `resume` continues it."""
    assert {"past", "seen"} <= set(build("pskd")[0].state_dict())
    assert {"pool", "pool_ready"} <= set(build("deepinversion")[0].state_dict())
    assert "assistant_ready" in build("takd", {"assistant": "cnn_tiny"})[0].state_dict()
    assert any(k.startswith("generator.") for k in build("dafl")[0].state_dict())


def test_mid_model_picks_an_assistant_between_teacher_and_student():
    assert mid_model("cnn_large", "cnn_tiny", 10, 1, 8) == "cnn_small"
    with pytest.raises(ValueError, match="takd.assistant"):
        mid_model("cnn_small", "cnn_tiny", 10, 1, 8)


# ----------------------------------------------------------------------------- gradients

def assert_frozen_through_a_step(scheme, frozen, batch):
    """One optimiser step over everything trainable: the frozen model's tensors don't move, no grad."""
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    opt = torch.optim.SGD([p for p in scheme.parameters() if p.requires_grad], lr=0.5)
    scheme.train()
    _, losses = scheme.train_step(batch)
    opt.zero_grad()
    sum(losses.values()).backward()
    opt.step()
    assert all(p.grad is None and not p.requires_grad for p in frozen.parameters())
    after = frozen.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a frozen model changed (weights or BN stats)"


@pytest.mark.parametrize("key,attr", [("adversarial", "teacher"), ("crossmodal", "teacher"), ("dafl", "teacher"),
                                      ("mtkd_avg", "teachers"), ("camkd", "teachers"), ("takd", "top_teacher")])
def test_teachers_stay_frozen(key, attr):
    params = {"teachers": "cnn_small,cnn_tiny"} if key in ("mtkd_avg", "camkd") else None
    params = {"assistant": "cnn_tiny", "assistant_epochs": 1} if key == "takd" else params
    scheme, ctx = build(key, params)
    assert_frozen_through_a_step(scheme, getattr(scheme, attr), first_batch(ctx))


def test_takd_assistant_is_distilled_first_then_frozen():
    takd, ctx = build("takd", {"assistant": "cnn_tiny", "assistant_epochs": 1})
    before = {k: v.clone() for k, v in takd.teacher.state_dict().items()}
    assert not takd.assistant_ready
    batch = first_batch(ctx)
    takd.train()
    takd.train_step(batch)                           # the inner loop runs here, once
    assert takd.assistant_ready
    moved = any(not torch.equal(before[k], v) for k, v in takd.teacher.state_dict().items())
    assert moved, "the assistant was not trained"
    assert_frozen_through_a_step(takd, takd.teacher, batch)        # ... and is frozen from then on
    assert set(takd.eval_models()) == {"student", "assistant"}


def test_adversarial_terms_reach_only_their_player():
    adv, ctx = build("adversarial")
    _, losses = adv.train_step(first_batch(ctx))
    assert reaches(losses["disc"], adv.disc) and not reaches(losses["disc"], adv.student)
    assert reaches(losses["adv"], adv.student) and not reaches(losses["adv"], adv.disc)
    assert not reaches(losses["kd"], adv.disc)


@pytest.mark.parametrize("key", ["dml", "kdcl"])
def test_every_peer_learns_and_only_from_its_own_terms(key):
    scheme, ctx = build(key, {"peers": 3})
    _, losses = scheme.train_step(first_batch(ctx))
    term = "kl" if key == "dml" else "kd"
    for i, name in enumerate(["student", "peer1", "peer2"]):
        for j, peer in enumerate(scheme.peers):
            assert reaches(losses[f"{term}_{name}"], peer) == (i == j), (name, j)
            assert reaches(losses[f"ce_{name}"], peer) == (i == j)


def test_one_branches_and_gate_learn():
    one, ctx = build("one")
    _, losses = one.train_step(first_batch(ctx))
    total = sum(losses.values())
    assert reaches(total, one.student) and reaches(total, one.gate)
    assert all(reaches(total, h) for h in one.heads)
    assert not reaches(losses["kl"], one.gate)        # the ensemble target is detached


def test_byot_heads_learn_from_the_deepest_without_moving_it():
    byot, ctx = build("byot")
    _, losses = byot.train_step(first_batch(ctx))
    assert all(reaches(losses["aux_ce"], h) for h in byot.heads)
    assert not reaches(losses["aux_kd"], byot.student.fc)     # the deepest classifier is only a target
    assert reaches(losses["aux_kd"], byot.student.stage1)     # ... while the shared layers learn
    assert set(byot.eval_models()) == {"student", "aux1", "aux2"}


def test_dafl_generator_and_student_are_separate():
    dafl, ctx = build("dafl")
    g0 = [p.clone() for p in dafl.generator.parameters()]
    s0 = [p.clone() for p in dafl.student.parameters()]
    dafl.train()
    _, losses = dafl.train_step(first_batch(ctx))
    # the generator stepped inside (its own Adam) on a loss that never touched the student ...
    assert any(not torch.equal(a, b) for a, b in zip(g0, dafl.generator.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(s0, dafl.student.parameters()))
    assert all(p.grad is None for p in dafl.student.parameters())
    # ... and what it returns (the KD) reaches the student only; its own terms are logged, detached
    assert all(losses[k].grad_fn is None for k in ("g_onehot", "g_act", "g_entropy"))
    assert reaches(losses["kd"], dafl.student) and not reaches(losses["kd"], dafl.generator)
    assert "_extra_state" in dafl.state_dict()                 # the generator's Adam state is checkpointed


# ----------------------------------------------------------------------------- end to end through the trainer

E2E = {   # scheme -> (extra config, scheme params, eval model names)
    "dml": ({}, {"peer_archs": "cnn_tiny,cnn_small"}, {"student", "peer1"}),
    "kdcl": ({}, {}, {"student", "peer1", "ensemble"}),
    "one": ({}, {}, {"student", "branch2", "branch3", "ensemble"}),
    "byot": ({}, {}, {"student", "aux1", "aux2"}),
    "cskd": ({}, {}, {"student"}),
    "tfkd": ({}, {"variant": "self"}, {"student", "teacher_self"}),
    "pskd": ({}, {}, {"student"}),
    "takd": ({"teacher": "cnn_medium"}, {}, {"student", "assistant"}),
    "mtkd_avg": ({}, {}, {"student", "teacher_cnn_small", "teacher_cnn_tiny"}),
    "camkd": ({}, {}, {"student", "teacher_cnn_small", "teacher_cnn_tiny"}),
    "dafl": ({}, {}, {"student"}),
    "deepinversion": ({}, FAST["deepinversion"], {"student"}),
    "adversarial": ({}, {}, {"student"}),
    "crossmodal": ({"dataset": "shapes", "n_train": 200, "student": "resnet8", "teacher": "cnn_tiny"},
                   {"student_view": "grayscale"}, {"student"}),
}


@pytest.mark.parametrize("key", ALL)
def test_every_scheme_runs_end_to_end_and_stores_every_models_accuracy(key, store, tmp_path, monkeypatch, capsys):
    extra, params, names = E2E[key]
    if key == "crossmodal":   # an RGB teacher from a file: training one on all of shapes is not under test here
        torch.save(create_model("cnn_tiny", 10, 3, 32).state_dict(), tmp_path / "rgb_teacher.pt")
        extra = extra | {"teacher_ckpt": str(tmp_path / "rgb_teacher.pt")}
    # from the CLI, as a user runs it: `kd-explorer run --config run.yaml --json`
    RunConfig(**(TINY | extra), scheme=key, scheme_params=params).save(tmp_path / "run.yaml")
    monkeypatch.setenv("KD_EXPLORER_HOME", str(store.home))
    assert cli.main(["run", "--config", str(tmp_path / "run.yaml"), "--json"]) == 0, capsys.readouterr().err
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run = store.get_run(r["run_id"])
    assert run["status"] == "completed" and run["scheme"] == key
    accs = {k[9:]: v for k, v in run["summary"].items() if k.startswith("test_acc/")}
    n_test = split_size(run["config"]["dataset"], run["config"].get("data_root"))   # each a count over the whole split
    assert set(accs) == names and all(v * n_test == pytest.approx(round(v * n_test)) for v in accs.values())
    epoch = {m["name"] for m in store.metrics(r["run_id"], "epoch")}
    assert {f"val/acc/{n}" for n in names} <= epoch
    arts = store.artifacts(r["run_id"])
    assert "model" in arts
    if get_scheme(key).needs_teacher:
        assert run["summary"]["teacher_acc"] is not None
    # probes need a second model to compare with: a teacher, a peer or TF-KD's self-teacher; else the
    # dataset's teacher as a yardstick where one already exists (never trained for it); else none
    cfg = RunConfig.from_dict(run["config"])
    rhash = recipe_hash(teacher_recipe(cfg))
    reference = store.find_completed(rhash) is not None or teachers.bundled_path(rhash) is not None
    probed = get_scheme(key).needs_teacher or key in ("dml", "kdcl", "tfkd") or reference
    assert ("probe_epoch001" in arts) == probed
    if probed:
        assert load_probe(arts["probe_epoch001"])["student"]["logits"].shape == (8, 10)


def test_data_free_runs_save_synthesised_images(store):
    for key in ("dafl", "deepinversion"):
        r = Trainer(RunConfig(**TINY, scheme=key, scheme_params=FAST.get(key, {})), store).run()
        synth = load_synthesised(r["run_id"], store)
        n = 64 if key == "dafl" else 32
        assert synth["images"].dtype == torch.uint8 and synth["images"].shape == (n, 1, 8, 8)
        assert synth["labels"].shape == (n,) and len(synth["classes"]) == 10
        assert synth["images"].float().std() > 0
        assert Image.open(synth["png"]).size[0] > 8


def test_online_peers_agreement_from_the_stored_models_and_probes(store):
    r = Trainer(RunConfig(**(TINY | {"epochs": 2}), scheme="dml"), store).run()
    states = torch.load(store.artifacts(r["run_id"])["model"], weights_only=True)
    data = load_dataset("digits", n_train=120)
    logits = {}
    for name in ("student", "peer1"):
        model = create_model("cnn_tiny", 10, 1, 8)
        model.load_state_dict(states[name])
        model.eval()
        with torch.no_grad():
            logits[name] = model(data.normalize(data.test.x))
    a = agreement(logits["student"], logits["peer1"])
    assert 0 <= a <= 1 and a == pytest.approx((logits["student"].argmax(1) == logits["peer1"].argmax(1)).float().mean())
    assert r["test_acc/student"] == pytest.approx((logits["student"].argmax(1) == data.test.y).float().mean().item())
    probe = load_probe(store.artifacts(r["run_id"])["probe_epoch002"])   # "teacher" side = peer1
    assert torch.allclose(probe["teacher"]["logits"], logits["peer1"][:8], atol=1e-4)


def test_cli_runs_a_scheme_with_its_params(capsys):
    code = cli.main(["run", "--scheme", "dml", "--dataset", "digits", "--n-train", "100", "--epochs", "1",
                     "--param", "dml.peers=3", "--json"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and out["status"] == "completed"
    assert {"test_acc/student", "test_acc/peer1", "test_acc/peer2"} <= set(out)
    assert Store().get_run(out["run_id"])["config"]["scheme_params"] == {"peers": 3}
