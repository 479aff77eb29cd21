"""Published results (data/published/*.yaml, explorer/published.py) and the CIFAR-100 benchmark protocol
(explorer/bench/protocol.py): every published row names a registered method, its source and its protocol;
the protocol's configs resolve to exactly the CRD recipe, for the students and for their teachers."""
import numpy as np
import pytest
import yaml

from explorer import presets
from explorer.bench import protocol as P
from explorer.kd import METHODS, get_method
from explorer.published import ROW_FIELDS, datasets, published, published_baselines, published_line
from explorer.recipes import recipe_hash, resolve, teacher_recipe
from support.writers import write_cifar

# the CRD recipe, written out here (not read from the code under test)
CRD = dict(epochs=240, teacher_epochs=240, batch_size=64, lr=0.05, schedule="step", momentum=0.9,
           weight_decay=5e-4, optimizer="sgd", dataset="cifar100")


@pytest.fixture
def cifar_root(tmp_path):
    x, y = np.zeros((4, 3, 32, 32), np.uint8), np.arange(4)
    write_cifar(tmp_path, 100, x, y, x, y)
    return str(tmp_path)


def test_every_published_row_names_a_registered_method_a_source_and_its_protocol():
    rows = published()
    assert "cifar100" in datasets() and len(rows) >= 30
    for r in rows + published_baselines():
        assert set(ROW_FIELDS) <= set(r), r["label"]
        for name in ("label", "teacher", "student", "dataset", "top1", "source", "url", "protocol", "epochs",
                     "schedule", "batch_size", "lr", "weight_decay", "seeds", "reported"):
            assert r[name] not in (None, ""), (r["label"], name)
        assert 0 < r["top1"] < 100 and r["epochs"] == 240 and r["batch_size"] == 64
    for r in rows:
        assert r["method"] in METHODS, r["method"]
        hparams = {h.name for h in get_method(r["method"]).hparams}
        assert set(r["params"]) <= hparams, (r["label"], r["params"])
    # the classic methods of the CRD benchmark and the 2023-24 ones the issue names, on both pairs
    keys = {r["method"] for r in rows}
    assert {"kd", "fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp", "nst", "crd", "dkd",
            "reviewkd", "mlkd", "catkd", "ctkd"} <= keys
    assert {(r["teacher"], r["student"]) for r in rows} == {("resnet32x4", "resnet8x4"), ("wrn_40_2", "wrn_16_2")}


def test_the_published_figures_are_the_sources_ones_and_one_line_cites_them():
    kd = published(method="kd", teacher="resnet32x4", student="resnet8x4", params={}, optimizer="sgd")
    assert [r["top1"] for r in kd] == [73.33] and kd[0]["reported"] == "last epoch"
    assert [r["top1"] for r in published(method="kd", optimizer="dot")] == [75.12]      # DOT on KD
    assert published_line(kd[0]) == ("published: 73.33 % (resnet32x4→resnet8x4, CRD protocol, last epoch; "
                                     "CRD (Tian et al., ICLR 2020), RepDistiller README)")
    ls = published(method="kd", teacher="resnet32x4", params={"standardize": True})
    assert [(r["label"], r["top1"]) for r in ls] == [("KD + LS", 76.62)]
    assert "KD + LS" in published_line(ls[0]) and "logit-standardization" in ls[0]["url"]
    assert [r["top1"] for r in published(method="crd", teacher="wrn_40_2")] == [75.48]
    assert [r["top1"] for r in published(method="dkd", params={})] == [76.24, 76.32]
    teacher = [r for r in published_baselines(teacher="resnet32x4") if r["label"] == "teacher"]
    assert [r["top1"] for r in teacher] == [79.42]


def test_the_protocol_configs_resolve_to_exactly_the_crd_recipe(cifar_root):
    for pair in ("resnet32x4:resnet8x4", "wrn_40_2:wrn_16_2", "resnet56:resnet20"):
        t, s = pair.split(":")
        for method in ("kd", "none", "crd", "dkd", "kd+ls"):
            cfg = resolve(P.config(pair, method, cifar_root))
            assert {k: getattr(cfg, k) for k in CRD} == CRD, (pair, method)
            assert (cfg.teacher, cfg.student, cfg.data_root) == (t, s, cifar_root)
            tcfg = teacher_recipe(cfg)   # its teacher: trained by the same recipe, from labels
            assert {k: getattr(tcfg, k) for k in CRD} == dict(CRD), (pair, "teacher")
            assert tcfg.role == "teacher" and tcfg.student == t and tcfg.methods == []
        own = resolve(P.config(pair, "teacher", cifar_root))   # the protocol's teacher run is that teacher
        assert recipe_hash(own) == recipe_hash(teacher_recipe(resolve(P.config(pair, "kd", cifar_root))))
    # each method's official hyperparameters: the registry's benchmark defaults, DKD's beta per pair, LS's switch
    dkd = {pair: resolve(P.config(pair, "dkd", cifar_root)).methods[0].params.get("beta", 8.0) for pair in P.PAIRS}
    assert dkd == {"resnet32x4:resnet8x4": 8.0, "wrn_40_2:wrn_16_2": 6.0, "resnet56:resnet20": 2.0}
    ls = resolve(P.config("resnet32x4:resnet8x4", "kd+ls", cifar_root)).methods[0]
    assert (ls.key, ls.weight, ls.params) == ("kd", 9.0, {"standardize": True, "temperature": 2.0})
    assert get_method("kd").describe()["default_weight"] == 0.9 and get_method("crd").describe()["default_weight"] == 0.8


def test_the_protocol_preset_needs_a_data_folder_and_resolves_with_one(cifar_root):
    assert "cifar100-protocol" not in [p["key"] for p in presets.list_presets()]       # not one click without data
    assert "cifar100-protocol" in [p["key"] for p in presets.list_presets(with_data_root=True)]
    with pytest.raises(ValueError, match="folder"):
        presets.preset_configs("cifar100-protocol")
    main, alone = [resolve(c) for c in presets.preset_configs("cifar100-protocol", cifar_root)]
    for cfg in (main, alone):
        assert {k: getattr(cfg, k) for k in CRD} == CRD and (cfg.teacher, cfg.student) == ("resnet32x4", "resnet8x4")
    assert [m.key for m in main.methods] == ["kd"] and alone.methods == []


def test_the_cli_writes_the_protocol_configs_and_the_run_commands(cifar_root, tmp_path, capsys):
    from explorer import cli
    out = tmp_path / "cfgs"
    assert cli.main(["bench", "protocol", "--pair", "resnet32x4:resnet8x4", "--method", "kd,teacher",
                     "--data-root", cifar_root, "--out", str(out), "--print-config"]) == 0
    text = capsys.readouterr().out
    files = sorted(out.glob("*.yaml"))
    assert [f.name for f in files] == ["resnet32x4-resnet8x4_kd_s0.yaml", "resnet32x4-resnet8x4_teacher_s0.yaml"]
    for f in files:
        assert f"kd-explorer run --config {f}" in text
        cfg = resolve(yaml.safe_load(f.read_text()))
        assert {k: getattr(cfg, k) for k in CRD} == CRD
    assert cli.main(["bench", "protocol", "--pair", "resnet110:resnet32", "--data-root", cifar_root,
                     "--out", str(out)]) == 2
