"""Bad input at every entry point answers with a ConfigError naming the field -- never a traceback.

A hypothesis property throws random and malformed configs at recipes.resolve, the one pass of checks
every entry point makes, directly and through RunConfig.load (YAML and JSON files); the CLI is driven
with bad flags and must exit 2 naming the field.
"""
import json
import math
import string
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from explorer import cli
from explorer.config import ConfigError, RunConfig
from explorer.recipes import resolve

FIELDS = list(RunConfig.__dataclass_fields__)
KNOWN = {"dataset": ["digits", "shapes", "folder", "nosuch"], "teacher": ["resnet20", "cnn_large", "nosuch"],
         "student": ["cnn_tiny", "resnet8", "import:os:system", "import:nosuch.mod:f"],
         "scheme": ["offline", "dml", "takd", "nosuch"], "optimizer": ["sgd", "adamw", "rmsprop"],
         "schedule": ["cosine", "step", "constant", "linear"], "device": ["auto", "cpu", "cuda:0", "cuda:x", "tpu"],
         "role": ["distill", "teacher", "judge"]}
METHOD_KEYS = ["kd", "at", "fitnet", "crd", "dkd", "none", "nosuch", "", "kd+at"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-10**400, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from([0, 1, -1, 2**31, 2**63, 1e308, -0.0, float("nan"), float("inf"), "", "\x00", "1e3", "..", "../x"]))
junk = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), inner, max_size=4)),
    max_leaves=12)


@st.composite
def method_terms(draw):
    """Lists of method terms in all their accepted forms, some broken."""
    def term():
        return st.one_of(
            st.sampled_from(METHOD_KEYS),
            st.fixed_dictionaries({"key": st.one_of(st.sampled_from(METHOD_KEYS), junk)},
                                  optional={"weight": st.one_of(st.floats(), st.integers(), junk),
                                            "params": st.one_of(st.dictionaries(
                                                st.sampled_from(["temperature", "beta", "nosuch", "p"]),
                                                st.one_of(st.floats(), st.integers(), st.booleans(), junk),
                                                max_size=3), junk),
                                            "extra": junk}),
            junk)
    return draw(st.one_of(st.sampled_from(METHOD_KEYS), st.lists(term(), max_size=4), junk))


@st.composite
def configs(draw):
    """A dict of known fields with plausible, wrong-typed or absurd values, sometimes with unknown keys."""
    data = {}
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=8, unique=True)):
        plausible = st.sampled_from(KNOWN[name]) if name in KNOWN else st.one_of(
            st.integers(-5, 300), st.floats(-1, 2), st.booleans())
        if name == "methods":
            plausible = method_terms()
        elif name == "scheme_params":
            plausible = st.dictionaries(st.sampled_from(["peers", "temperature", "nosuch", "variant"]),
                                        st.one_of(st.integers(-3, 10), st.floats(), st.text(max_size=5)), max_size=3)
        elif name in ("teacher_stages", "student_stages", "stage_pairs", "probe_epochs"):
            plausible = st.lists(st.one_of(st.text(max_size=6), st.integers(-2, 5),
                                           st.lists(st.integers(-1, 4), max_size=3)), max_size=3)
        data[name] = draw(st.one_of(plausible, junk))
    if draw(st.booleans()):
        data.update(draw(st.dictionaries(st.one_of(st.text(max_size=10), st.integers(), st.none()), junk, max_size=2)))
    return data


def _accepts_or_config_error(build):
    """Either a valid config (which then round-trips) or ConfigError -- anything else is a bug."""
    try:
        cfg = build()
    except ConfigError as e:
        assert e.field and str(e).startswith(f"config field '{e.field}'")
        return None
    assert isinstance(cfg, RunConfig)
    again = resolve(cfg.to_dict())
    assert again == cfg
    return cfg


@settings(max_examples=400, deadline=None)
@given(configs())
def test_resolve_only_ever_raises_config_error(data):
    _accepts_or_config_error(lambda: resolve(data))


@settings(max_examples=100, deadline=None)
@given(junk)
def test_resolve_refuses_non_mappings_and_junk(data):
    _accepts_or_config_error(lambda: resolve(data))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(configs(), junk), st.sampled_from([".yaml", ".json"]))
def test_load_yaml_and_json_files(data, suffix):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"run{suffix}"
        try:
            text = json.dumps(data) if suffix == ".json" else yaml.safe_dump(data)
        except (TypeError, ValueError, OverflowError, RecursionError):
            text = repr(data)   # not serialisable: the file is junk text, which must be refused cleanly
        path.write_text(text)
        _accepts_or_config_error(lambda: resolve(RunConfig.load(path)))


@settings(max_examples=80, deadline=None)
@given(st.one_of(st.text(alphabet=string.printable + "\x00\u2028:-[]{}!&*", max_size=60),
                 st.binary(max_size=40).map(lambda b: b.decode("latin-1"))),
       st.sampled_from([".yaml", ".json"]))
def test_load_malformed_text(text, suffix):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"run{suffix}"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        _accepts_or_config_error(lambda: resolve(RunConfig.load(path)))


@pytest.mark.parametrize("text,field", [
    (b"\xff\xfe\x00binary", "config"),                  # not UTF-8
    (b"- just\n- a list\n", "config"),                  # a YAML list, not a mapping
    (b"epochs: [1, 2\n", "config"),                     # broken YAML
    (b"[" * 5000 + b"]" * 5000, "config"),              # nested deeper than the parser's recursion limit
    (b"lr: .nan\n", "lr"), (b"lr: .inf\n", "lr"), (b"epochs: 1e400\n", "epochs"),
    (b"weight_decay: 1" + b"0" * 400 + b"\n", "weight_decay"),   # an integer too large for a float
    (b"methods: {kd: 1}\n", "methods"), (b"methods: [{key: kd, weight: x}]\n", "methods[0].weight"),
    (b"methods: [{key: kd, params: {nosuch: 1}}]\n", "methods[0].params.nosuch"),
    (b"scheme: dml\nscheme_params: {peers: 100}\n", "scheme_params.peers"),
    (b"scheme_params: {nosuch: 1}\n", "scheme_params.nosuch"),
    (b"? [a, b]\n: 1\n", "config"),                     # an unhashable key
    (b"student: import:os:system\n", "student"),        # custom code needs the CLI's explicit opt-in
])
def test_named_bad_files(tmp_path, text, field):
    path = tmp_path / "bad.yaml"
    path.write_bytes(text)
    with pytest.raises(ConfigError) as err:
        resolve(RunConfig.load(path))
    assert err.value.field == field


def test_errors_list_the_allowed_values():
    with pytest.raises(ConfigError, match="choose one of: .*digits") as e:
        resolve({"dataset": "digitz"})
    assert "did you mean 'digits'" in str(e.value)
    with pytest.raises(ConfigError, match="allowed: temperature"):
        resolve({"methods": [{"key": "kd", "params": {"temp": 4}}]})
    with pytest.raises(ConfigError, match="from 2 to 8"):
        resolve({"scheme": "dml", "scheme_params": {"peers": 1}})
    assert resolve({"lr": 10**3}).lr == 1000   # a big-but-allowed integer is fine


@pytest.mark.parametrize("value,ok", [("auto", True), (2, True), (0.5, True), ("2", True), (0, False),
                                      (-1, False), ("abc", False), (True, False), (math.inf, False), ("", False)])
def test_takd_assistant_temperature_is_auto_or_a_positive_number_when_resolved(value, ok):
    """A number from --param or YAML is accepted (it was refused as 'not a string'); a word that is not
    auto is refused before launch (it failed inside the run's first step)."""
    config = {"scheme": "takd", "methods": ["kd"], "scheme_params": {"assistant_temperature": value}}
    if ok:
        assert resolve(config).scheme_params["assistant_temperature"] == value
    else:
        with pytest.raises(ConfigError, match="auto or a number greater than 0") as e:
            resolve(config)
        assert e.value.field == "scheme_params.assistant_temperature"


@pytest.mark.parametrize("argv,field", [
    (["--epochs", "-1"], "epochs"),
    (["--method", "nosuch"], "methods[0].key"),
    (["--dataset", "x"], "dataset"),
    (["--lr", "nan"], "lr"),
    (["--lr", "inf"], "lr"),
    (["--param", "kd.nosuch=1"], "methods[0].params.nosuch"),
    (["--weight", "at=abc"], "--weight at=abc"),
    (["--method", "at", "--weight", "at=abc"], "--weight at=abc"),
    (["--param", "kd.temperature=hot"], "methods[0].params.temperature"),
    (["--batch-size", "100000"], "batch_size"),
    (["--device", "gpu"], "device"),
    (["--config", "/nonexistent/run.yaml"], "config"),
])
def test_cli_bad_flags_exit_2_naming_the_field(argv, field, capsys):
    assert cli.main(["run", *argv]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"'{field}'" in err and "Traceback" not in err


def test_cli_unparseable_number_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:   # argparse's own type check, before any config exists
        cli.main(["run", "--epochs", "ten"])
    assert e.value.code == 2
    assert "--epochs" in capsys.readouterr().err


def test_valid_config_still_accepted():
    """The validator must not refuse good configs (else the properties above are vacuous)."""
    cfg = resolve({"dataset": "digits", "methods": [{"key": "kd", "weight": 0.9, "params": {"temperature": 4}}, "at"],
                   "scheme": "offline", "lr": 0.05, "epochs": 3, "n_train": 300})
    assert [m.key for m in cfg.methods] == ["kd", "at"]
    assert math.isclose(cfg.methods[0].weight, 0.9)


# ---------------------------------------------------------------------- fields a dataset does not use
@pytest.mark.parametrize("dataset,fields", [
    ("digits", {"data_root": "/tmp"}), ("digits", {"image_size": 16}),
    ("digits", {"data_root": "/tmp", "image_size": 16}), ("fashion-mnist", {"image_size": 16}),
    ("shapes", {"data_root": "/tmp"}), ("cifar10", {"data_root": "/tmp", "image_size": 64}),
])
def test_fields_a_dataset_ignores_are_refused_naming_them(dataset, fields, tmp_path):
    """digits' reader ignores image_size and data_root, but both enter the teacher's recipe hash: given,
    they would skip the bundled teacher and train a 40-epoch one silently. Refused, naming each field."""
    from explorer.data import get_dataset_spec
    with pytest.raises(ConfigError) as e:
        resolve({"dataset": dataset, **fields})
    unused = [f for f in ("data_root", "image_size") if f in fields and not
              getattr(get_dataset_spec(dataset), "takes_root" if f == "data_root" else "takes_image_size")]
    assert e.value.field == unused[0] and all(f in str(e.value) for f in unused)
    cfg = tmp_path / "run.yaml"   # the same through a config file and the CLI
    cfg.write_text(yaml.safe_dump({"dataset": dataset, **fields}))
    with pytest.raises(ConfigError, match=unused[0]):
        resolve(RunConfig.load(cfg))


def test_digits_without_the_ignored_fields_finds_its_bundled_teacher(tmp_path):
    from explorer import teachers
    from explorer.recipes import default_teacher_recipe, recipe_hash
    from explorer.store import Store
    assert teachers.bundled_path(recipe_hash(default_teacher_recipe("digits"))) is not None
    assert teachers.locate_default(Store(), "digits").source == "bundled"
    ok = resolve({"dataset": "shapes", "image_size": 16})
    both = resolve({"dataset": "folder", "data_root": str(tmp_path), "image_size": 16})
    assert ok.image_size == 16 and both.data_root == str(tmp_path) and both.image_size == 16


def test_cli_refuses_data_root_for_digits(capsys):
    assert cli.main(["run", "--dataset", "digits", "--data-root", "/tmp", "--epochs", "1"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "'data_root'" in err and "digits" in err and "Traceback" not in err
