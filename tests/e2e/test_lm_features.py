"""Hidden-state transfer and the teacher schemes on text, end to end from the CLI on pydoc (issue 16, item 3):
FitNet between LM blocks (TinyBERT's per-token hidden-state regression), TAKD with a gpt_2x64 assistant, and
multi-teacher KD (average and CA-MKD) with the bundled gpt_4x128 plus a gpt_1x32 teacher trained for the runs.

A second teacher is trained with the dataset's teacher recipe on the whole training text; at its 4 epochs that
costs minutes, so these runs ask for 1 teacher epoch and load the bundled gpt_4x128 from its file (a changed
teacher_epochs would otherwise change its recipe and train it too). The two multi-teacher runs share that teacher."""
import json
import math
from pathlib import Path

import pytest

from explorer import cli
from explorer.store import Store

BUNDLED = str(Path(__file__).resolve().parents[2] / "data" / "teachers" / "231c2ac54592bda0.pt")
BASE = ["run", "--dataset", "pydoc", "--n-train", "200", "--epochs", "1", "--batch-size", "16", "--optimizer", "adamw",
        "--json"]
TWO_TEACHERS = ["--teacher-ckpt", BUNDLED, "--teacher-epochs", "1"]
# case: (arguments, training terms recorded, test accuracies recorded besides the student's)
CASES = {
    "fitnet": (["--method", "fitnet", "--param", "fitnet.hint_stage=0"], {"ce", "hint"}, set()),
    "takd": (["--scheme", "takd", "--method", "kd", "--param", "kd.temperature=1"], {"ce", "kd"}, {"assistant"}),
    "mtkd_avg": (["--scheme", "mtkd_avg", "--param", "mtkd_avg.teachers=gpt_4x128,gpt_1x32", *TWO_TEACHERS],
                 {"ce", "mtkd"}, {"teacher_gpt_4x128", "teacher_gpt_1x32"}),
    "camkd": (["--scheme", "camkd", "--param", "camkd.teachers=gpt_4x128,gpt_1x32", *TWO_TEACHERS],
              {"ce", "mtkd"}, {"teacher_gpt_4x128", "teacher_gpt_1x32"}),
}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("lm_features_home")


@pytest.mark.parametrize("case", list(CASES))
def test_hidden_state_and_teacher_schemes_complete_on_text(case, home, monkeypatch, capsys):
    args, terms, others = CASES[case]
    monkeypatch.setenv("KD_EXPLORER_HOME", str(home))
    assert cli.main(BASE + args) == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["status"] == "completed"
    assert 1.0 < result["test_ppl"] < 94   # better than uniform over the 94 characters
    df = Store().metrics_df(result["run_id"])
    names = set(df["name"])
    assert terms <= {n[6:] for n in names if n.startswith("train/")}
    ppl = df[df["name"] == "val/ppl"]["value"].iloc[-1]
    assert math.isfinite(ppl) and ppl == pytest.approx(result["val_ppl"])
    for who in others:   # the assistant / every teacher is evaluated on the test text too
        assert 0.0 < result[f"test_acc/{who}"] < 1.0
    if case == "fitnet":   # gpt_1x32's one block learns from gpt_4x128's last block (same relative depth)
        assert result["stage_pairs"] == {"fitnet": [[0, 3]]}
    if case == "camkd":    # the per-token confidence weights of the two teachers, recorded each epoch
        weights = [df[df["name"] == f"teacher_weight/{a}"]["value"].iloc[-1] for a in ("gpt_4x128", "gpt_1x32")]
        assert sum(weights) == pytest.approx(1.0) and all(0 < w < 1 for w in weights)
