"""Language-model distillation end to end from the CLI on the bundled corpus (pydoc) with the bundled gpt_4x128
teacher: every LM method (forward KL = kd at T = 1, reverse KL, GKD's JSD at beta 0.5, MiniLM) and the text
schemes (seqkd, onpolicy) complete, record their terms, and log validation perplexity and the teacher's
agreement per epoch."""
import json
import math

import pytest

from explorer import cli
from explorer.store import Store

BASE = ["run", "--dataset", "pydoc", "--n-train", "48", "--epochs", "1", "--batch-size", "16", "--optimizer", "adamw",
        "--json"]
# the three token-level divergences share one run (each term is recorded on its own; a run costs mostly the
# frozen teacher's pass over the validation and test text): forward KL = kd at T = 1, reverse KL, JSD(0.5)
CASES = {
    "divergences": (["--method", "kd+rkl+gkd", "--param", "kd.temperature=1", "--param", "gkd.beta=0.5"],
                    {"kd", "rkl", "gkd"}),
    "minilm": (["--method", "minilm"], {"minilm_at", "minilm_vr"}),
    "seqkd": (["--scheme", "seqkd", "--method", "none"], set()),
    "onpolicy": (["--scheme", "onpolicy", "--method", "gkd", "--param", "onpolicy.lmbda=1"], {"gkd"}),
}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("lm_home")


@pytest.mark.parametrize("case", list(CASES))
def test_lm_method_completes_from_the_cli(case, home, monkeypatch, capsys):
    args, terms = CASES[case]
    monkeypatch.setenv("KD_EXPLORER_HOME", str(home))
    assert cli.main(BASE + args) == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["status"] == "completed" and result["teacher_source"] == "bundled"
    assert 1.0 < result["test_ppl"] < 94   # better than uniform over the 94 characters: a few steps learnt something
    assert 0.0 <= result["test_agree"] <= 1.0
    df = Store().metrics_df(result["run_id"])
    names = set(df["name"])
    assert {"val/ppl", "val/agree", "val/acc"} <= names
    assert terms <= {n[6:] for n in names if n.startswith("train/")}
    ppl = df[df["name"] == "val/ppl"]["value"].iloc[-1]
    assert math.isfinite(ppl) and ppl == pytest.approx(result["val_ppl"])
