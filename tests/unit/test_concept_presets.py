"""The concept map's buttons (Welcome page, Train page ?method= / ?scheme=) open a config that the run accepts, for
every method and scheme: where the default preset's pair or dataset refuses one, it starts from where it runs."""
import pytest

from explorer.kd import list_methods
from explorer.presets import DEFAULT_PRESET, get_preset, method_preset, scheme_preset
from explorer.recipes import resolve
from explorer.schemes import list_schemes


@pytest.mark.parametrize("method", list_methods())
def test_every_method_button_opens_a_config_that_resolves(method):
    config = method_preset(method)
    cfg = resolve(config)
    assert [t.key for t in cfg.methods] == [method]


@pytest.mark.parametrize("scheme", list_schemes())
def test_every_scheme_button_opens_a_config_that_resolves(scheme):
    config = scheme_preset(scheme)
    assert resolve(config).scheme == scheme


def test_buttons_keep_the_default_preset_where_it_runs():
    base = get_preset(DEFAULT_PRESET)["config"]
    assert {k: v for k, v in method_preset("at").items() if k not in ("methods", "name")} == \
        {k: v for k, v in base.items() if k not in ("methods", "name")}
    assert {k: v for k, v in scheme_preset("dml").items() if k not in ("scheme", "methods", "name")} == \
        {k: v for k, v in base.items() if k not in ("methods", "name")}
    assert scheme_preset("seqkd")["dataset"] == "pydoc"   # text schemes: their own preset
    assert scheme_preset("deit")["student"].startswith("deit_")
