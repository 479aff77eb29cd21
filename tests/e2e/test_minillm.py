"""MiniLLM's policy-gradient scheme end to end from the CLI on the bundled corpus (pydoc) with the bundled gpt_4x128
teacher: it completes, records its four terms and the epoch metrics that show it work (the mean reward of the
sampled tokens, the reverse KL at the sampled positions, the mean importance weight), and validation perplexity."""
import json
import math

import pytest

from explorer import cli
from explorer.store import Store

# tiny: 64 windows of 64 characters in 4 batches; each continues its first 56 characters by 9 sampled ones
ARGS = ["run", "--dataset", "pydoc", "--n-train", "64", "--epochs", "1", "--batch-size", "16", "--optimizer", "adamw",
        "--scheme", "minillm", "--method", "none", "--param", "minillm.prompt=56", "--json"]


def test_minillm_completes_from_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KD_EXPLORER_HOME", str(tmp_path))
    assert cli.main(ARGS) == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["status"] == "completed" and result["teacher_source"] == "bundled"
    assert 1.0 < result["test_ppl"] < 94   # better than uniform over the 94 characters
    df = Store().metrics_df(result["run_id"])
    last = df.groupby("name")["value"].last()
    assert {"train/pg", "train/single_step", "train/ce", "train/pt_kd", "val/ppl"} <= set(last.index)
    # the reverse KL of a half-trained 1-block student from the teacher is well above 0; rewards are log-ratios
    assert 0.0 < last["minillm/rev_kl"] < 10 and last["train/single_step"] > 0
    assert -20 < last["minillm/reward"] < 20 and math.isfinite(last["minillm/reward"])
    assert 0.0 < last["minillm/weight"] <= 1 / 0.8 + 1e-6   # p_s / (0.8 p_s + 0.2 p_t) < 1 / 0.8
    assert last["val/ppl"] == pytest.approx(result["val_ppl"])
