"""Tuned defaults: the validation view never reads the test split, the split's rows, the tuned file's checks, and
resolve()'s tuned | benchmark choice (an explicit value always wins)."""
import argparse
import json

import pytest
import torch

from explorer import tune, tune_space
from explorer.config import RunConfig
from explorer.data import load_dataset
from explorer.data import loader
from explorer.data.raw import RawData
from explorer.errors import ConfigError
from explorer.recipes import resolve
from explorer.tuned import load_tuned, save_entries, tuned_path, validate


class _GuardedRaw(RawData):
    """RawData whose test tensors raise on any read once armed."""
    armed = False

    def __getattribute__(self, name):
        if name in ("test_x", "test_y") and object.__getattribute__(self, "armed"):
            raise AssertionError(f"the test split was read ({name})")
        return object.__getattribute__(self, name)


@pytest.fixture
def guarded_digits(monkeypatch):
    real = loader._read_cached
    raw = real("digits", None, None)
    guarded = _GuardedRaw(raw.train_x, raw.train_y, raw.test_x, raw.test_y, raw.classes, dict(raw.extras))
    guarded.armed = True

    def fake(name, root, image_size):
        return guarded if name == "digits" else real(name, root, image_size)
    fake.cache_clear = lambda: None
    monkeypatch.setattr(loader, "_read_cached", fake)
    return guarded


def test_guard_catches_a_normal_run(guarded_digits):
    """The instrument works: an ordinary dataset load reads the test split and is caught."""
    with pytest.raises(AssertionError, match="test split was read"):
        load_dataset("digits")


def test_tuning_never_reads_the_test_split(guarded_digits, tmp_path):
    args = argparse.Namespace(keys=["kd", "dml"], dataset="digits", budget=2, seeds="0", epochs=1, n_train=40,
                              out_dir=str(tmp_path), home=str(tmp_path / "trials"), json=True)
    assert tune.main(args) == 0
    data = load_tuned("digits", tmp_path)
    for kind, key in (("methods", "kd"), ("schemes", "dml")):
        entry = data[kind][key]
        assert len(entry["trials"]) == 2 and all(0 <= t["val_acc"][0] <= 1 for t in entry["trials"])
        assert entry["protocol"]["runs"] == 2


def test_split_rows():
    """Validation rows: a subset of the official training rows, disjoint from the rows trained on and from test."""
    raw = loader.read_raw("digits")
    data = load_dataset("digits")
    train_idx, val_idx = loader._stratified_split(raw.train_y, loader.VAL_FRACTION)
    assert torch.equal(data.train_index, train_idx)
    tr, va = set(train_idx.tolist()), set(val_idx.tolist())
    assert not tr & va and tr | va == set(range(len(raw.train_y))) and len(va) > 0
    orig_train, orig_test = raw.extras["train_index"], set(raw.extras["test_index"].tolist())
    assert not {int(orig_train[i]) for i in va} & orig_test      # rows of sklearn's set: none is a test row
    with tune.validation_view("digits") as view:
        v = load_dataset(view)
        # the view trains on exactly the rows a run trains on, and its evaluation split is the validation rows
        assert torch.equal(v.train.x, data.train.x) and torch.equal(v.train.y, data.train.y)
        assert torch.equal(v.test.x, data.val.x) and torch.equal(v.val.x, data.val.x)
    from explorer.data import DATASETS
    assert view in DATASETS and view not in DATASETS.list()   # derived on demand (a Ray worker too), never listed


def test_candidates_and_rungs():
    c = tune_space.candidates("at")
    assert c[0] == {"weight": 1000.0, "params": {"p": 2}}                   # the benchmark's values first
    assert {x["weight"] for x in c} >= {100.0, 10000.0, 10.0}               # log-scaled weights
    assert all(1 <= x["params"]["p"] <= 4 for x in c)
    d = tune_space.candidates("dml")
    assert all(x["weight"] is None and "kl_weight" in x["params"] for x in d)   # a scheme's weight is its own param
    assert tune_space.rung_sizes(12, 2, 6) == [4, 2] and tune_space.rung_sizes(12, 3, 6) == [3, 2, 1]
    assert tune_space.rung_sizes(12, 2, 1) == [1, 1]
    with pytest.raises(ConfigError, match="not allowed"):
        tune_space.kind_of("nope")


def _entry(**kw):
    return {"weight": 0.5, "params": {"temperature": 2.0}, **kw}


def test_tuned_file_round_trip_and_checks(tmp_path):
    path = save_entries("digits", "methods", {"kd": _entry(trials=[{"val_acc": {0: 0.9}}])}, "p", "2026-12-02",
                        tmp_path)
    assert path == tuned_path("digits", tmp_path)
    data = load_tuned("digits", tmp_path)
    assert data["methods"]["kd"]["weight"] == 0.5 and data["schemes"] == {} and data["schema"] == 1
    assert "&id" not in path.read_text()
    save_entries("digits", "schemes", {"dml": {"params": {"kl_weight": 0.1}}}, "p", "2026-12-02", tmp_path)
    assert set(load_tuned("digits", tmp_path)) >= {"methods", "schemes"}   # merged, kd kept
    assert load_tuned("digits", tmp_path)["methods"]["kd"]["params"] == {"temperature": 2.0}
    good = {"schema": 1, "dataset": "digits", "methods": {"kd": _entry()}}
    for bad, msg in ((dict(good, methods={"kdx": _entry()}), "did you mean 'kd'"),
                     (dict(good, methods={"kd": _entry(params={"temperature": 1000.0})}), "at most 20"),
                     (dict(good, methods={"kd": _entry(params={"tau": 1.0})}), "unknown for 'kd'"),
                     (dict(good, methods={"kd": _entry(weight=-1.0)}), "weight must be"),
                     (dict(good, schemes={"dml": {"weight": 1.0}}), "'weight' is for methods"),
                     (dict(good, schema=99), "schema 99")):
        with pytest.raises(ConfigError, match=msg):
            validate(bad)
    (tmp_path / "shapes.yaml").write_text("schema: 1\ndataset: digits\n")
    with pytest.raises(ConfigError, match="not 'shapes'"):
        load_tuned("shapes", tmp_path)


def test_resolve_tuned_vs_benchmark(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_EXPLORER_TUNED_DIR", str(tmp_path))
    save_entries("digits", "methods", {"kd": _entry()}, "p", "2026-12-02", tmp_path)
    save_entries("digits", "schemes", {"dml": {"params": {"kl_weight": 0.1}}}, "p", "2026-12-02", tmp_path)
    cfg = resolve({"methods": "kd"})
    assert cfg.defaults == "tuned" and cfg.methods[0].weight == 0.5 and cfg.methods[0].params == {"temperature": 2.0}
    stored = RunConfig.from_dict(cfg.to_dict()).to_dict()           # the stored config names the values used
    assert stored["defaults"] == "tuned" and stored["methods"][0]["params"] == {"temperature": 2.0}
    bench = resolve({"methods": "kd", "defaults": "benchmark"})
    assert bench.methods[0].weight is None and bench.methods[0].params == {}
    mine = resolve({"methods": [{"key": "kd", "weight": 0.7, "params": {"temperature": 6.0}}]})
    assert mine.defaults == "tuned" and mine.methods[0].weight == 0.7 and mine.methods[0].params["temperature"] == 6.0
    assert resolve({"scheme": "dml", "methods": [], "scheme_params": {"kl_weight": 3.0}}).scheme_params == \
        {"kl_weight": 3.0}
    assert resolve({"scheme": "dml", "methods": []}).scheme_params == {"kl_weight": 0.1}
    assert resolve({"methods": "at"}).defaults == "benchmark"        # no tuned entry for at: the benchmark's
    assert resolve({"dataset": "shapes", "methods": "kd"}).defaults == "benchmark"
    with pytest.raises(ConfigError, match="no tuned defaults for 'shapes'"):
        resolve({"dataset": "shapes", "methods": "kd", "defaults": "tuned"})
    with pytest.raises(ConfigError, match="defaults"):
        resolve({"methods": "kd", "defaults": "best"})


def test_defaults_label(tmp_path, monkeypatch):
    from explorer.tuned import defaults_choices, defaults_label
    monkeypatch.setenv("KD_EXPLORER_TUNED_DIR", str(tmp_path))
    assert defaults_choices({"dataset": "digits", "methods": ["kd"]}) == ["benchmark"]
    save_entries("digits", "methods", {"kd": _entry()}, "p", "2026-12-02", tmp_path)
    assert defaults_choices({"dataset": "digits", "methods": ["kd"]}) == ["tuned", "benchmark"]
    label = defaults_label(RunConfig(methods="kd"))
    assert "temperature 2" in label and "weight 0.5" in label
    assert defaults_label({"dataset": "digits", "methods": [{"key": "at"}]}).startswith("benchmark")
    json.dumps(label)


def test_effective_values(tmp_path, monkeypatch):
    from explorer.tuned import effective_values
    monkeypatch.setenv("KD_EXPLORER_TUNED_DIR", str(tmp_path))
    assert effective_values("digits", "methods", "kd") == {"weight": 0.9, "params": {"temperature": 4.0,
                                                                                     "standardize": False}}
    save_entries("digits", "methods", {"kd": _entry()}, "p", "2026-12-02", tmp_path)
    assert effective_values("digits", "methods", "kd")["params"]["temperature"] == 2.0
    assert effective_values("digits", "methods", "kd", "benchmark")["weight"] == 0.9


def test_the_shipped_tuned_files_are_valid_and_consistent(monkeypatch):
    """data/tuned/*.yaml: readable, checked, and each entry is the best of its own trials that ran every seed (mean
    validation accuracy), so never worse than the benchmark's values where those ran every seed too."""
    from explorer.tuned import TUNED_DIR
    monkeypatch.delenv("KD_EXPLORER_TUNED_DIR")
    files = sorted(TUNED_DIR.glob("*.yaml"))
    assert files, "no tuned defaults shipped"
    for path in files:
        data = load_tuned(path.stem)
        for kind in ("methods", "schemes"):
            for key, e in data[kind].items():
                if e.get("not_tuned"):   # why this key has no values here: nothing to check against trials
                    assert e["weight"] is None and e["params"] == {} and "trials" not in e, (path.name, key)
                    continue
                seeds = e["protocol"]["seeds"]
                if e["protocol"].get("score") == "val_ppl":   # a text dataset: scored on perplexity, lower is better
                    full = [t for t in e["trials"] if len(t["val_ppl"]) == len(seeds)]
                    assert full and e["val_ppl"] == min(t["mean"] for t in full), (path.name, key)
                    assert e["val_ppl"] <= e["benchmark"]["val_ppl"] or len(e["trials"][0]["val_ppl"]) < len(seeds)
                    chosen = next(t for t in full if t["mean"] == e["val_ppl"])
                    assert (chosen["weight"], chosen["params"]) == (e["weight"], e["params"]), (path.name, key)
                    continue
                full = [t for t in e["trials"] if len(t["val_acc"]) == len(seeds)]
                assert full and e["val_acc"] == max(t["mean"] for t in full), (path.name, key)
                if len(e["trials"][0]["val_acc"]) == len(seeds):   # the benchmark's values ran every seed too
                    assert e["val_acc"] >= e["benchmark"]["val_acc"], (path.name, key)
                chosen = next(t for t in full if t["mean"] == e["val_acc"])
                assert (chosen["weight"], chosen["params"]) == (e["weight"], e["params"]), (path.name, key)
                assert e["same_as_benchmark"] == ((e["weight"], e["params"]) ==
                                                  (e["benchmark"]["weight"], e["benchmark"]["params"]))


def test_the_digits_file_covers_every_method_and_scheme(monkeypatch):
    """Issue 14: data/tuned/digits.yaml has an entry for every method and scheme -- tuned values, or a `not_tuned`
    note saying why there are none (nothing of its own to tune, a text scheme)."""
    from explorer.kd import list_methods
    from explorer.schemes import list_schemes
    monkeypatch.delenv("KD_EXPLORER_TUNED_DIR")
    data = load_tuned("digits")
    assert set(data["methods"]) == set(list_methods())
    assert set(data["schemes"]) == set(list_schemes()) - {"offline"}
