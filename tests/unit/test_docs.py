"""Docs generated from the declarations stay true: README.md's registry tables and `kd-explorer run --help`."""
import re
from pathlib import Path

import pytest

from explorer import cli, docs
from explorer.config import FIELD_SPECS
from explorer.recipes import REGISTRIES

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_tables_match_the_registries():
    text = README.read_text()
    assert docs.sync(text) == text, "README.md's registry tables are stale: run scripts/registry_tables.py --write"


def test_a_stale_table_is_found_and_rewritten():
    text = README.read_text()
    stale = text.replace("| `kd` |", "| `kd-old` |", 1)
    assert stale != text and docs.sync(stale) == text
    with pytest.raises(ValueError, match="registry:models"):
        docs.sync(text.replace("<!-- /registry:models -->", ""))


def test_every_registry_entry_has_a_row():
    tables = {kind: render() for kind, render in docs.TABLES.items()}
    for kind, table in tables.items():
        assert [f"`{key}`" for key in REGISTRIES[kind]] == re.findall(r"^\| (`[^`]+`) \|", table, re.M)


def test_run_help_lists_every_config_field_with_its_range(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["run", "--help"])
    assert e.value.code == 0
    text = re.sub(r"\s+", "", capsys.readouterr().out)   # argparse wraps lines, even inside words
    own_flags = {"methods": "--method", "scheme_params": "--param"}   # their CLI forms: KEY, KEY=W, KEY.NAME=V
    for name, spec in FIELD_SPECS.items():
        assert own_flags.get(name, "--" + name.replace("_", "-")) in text, name
        if spec.registry:
            assert ",".join(REGISTRIES[spec.registry].list()) in text, name
        elif spec.kind != "bool" and name not in own_flags:
            assert re.sub(r"\s+", "", spec.range_text()) in text, name
    assert ",".join(REGISTRIES["methods"].list()) in text and "scheme_params" in text
    assert "--no-augment" in text and "--no-channels-last" in text
