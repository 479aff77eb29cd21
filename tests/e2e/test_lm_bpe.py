"""Issue 16, item 1: a language-model run from the CLI on pydoc in BPE tokens (`pydoc-bpe256`). Its teacher is
keyed apart from the bundled character-level one (trained for it, then reused), a character-level checkpoint is
refused with a message naming the vocabulary, and the saved student decodes after reload through the tokenizer
kept with the dataset's meta."""
import json
import math
from pathlib import Path

import torch

from explorer import cli, teachers
from explorer.checkpoints import load_checkpoint_into
from explorer.config import RunConfig
from explorer.data import load_dataset
from explorer.data.text import tokenizer_of
from explorer.models import create_model
from explorer.store import Store

REPO = Path(__file__).resolve().parents[2]
BASE = ["run", "--dataset", "pydoc-bpe256", "--n-train", "48", "--epochs", "1", "--batch-size", "16",
        "--optimizer", "adamw", "--method", "kd", "--param", "kd.temperature=1", "--json"]
TINY_TEACHER = ["--teacher", "gpt_1x32", "--teacher-epochs", "1"]   # trained by the first run (seconds)


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_a_bpe_run_never_gets_the_character_teacher():
    store = Store()
    assert teachers.locate(store, RunConfig(dataset="pydoc")).source == "bundled"
    ref = teachers.locate(store, RunConfig(dataset="pydoc-bpe256"))
    assert ref.source == "train" and ref.arch == "gpt_4x128"        # its own recipe hash: trained for it


def test_pydoc_bpe_run_from_the_cli_trains_its_teacher_and_decodes_after_reload(capsys):
    assert cli.main(BASE + TINY_TEACHER) == 0, capsys.readouterr().err
    result = _last_json(capsys)
    assert result["status"] == "completed" and result["teacher_source"] in ("train", "run")
    assert 1.0 < result["test_ppl"] < 256 and math.isfinite(result["val_ppl"])   # better than uniform over 256
    store = Store()
    teacher_run = store.get_run(result["teacher_run"])
    assert teacher_run["config"]["dataset"] == "pydoc-bpe256" and teacher_run["config"]["role"] == "teacher"

    cfg = RunConfig(dataset="pydoc-bpe256", teacher="gpt_1x32", teacher_epochs=1)
    reused = teachers.locate(store, cfg)                                  # what the next such run gets
    assert reused.source == "run" and reused.run_id == result["teacher_run"]

    run = store.get_run(result["run_id"])
    data = load_dataset(run["config"]["dataset"])
    tok = tokenizer_of(data)
    student = create_model(run["config"]["student"], data.num_classes, 1, data.shape[0])
    load_checkpoint_into(student, store.artifacts(run["id"])["model"], "student").eval()
    prompt = tok.encode("The if statement").unsqueeze(0)
    out = student.generate(prompt, 12, 0.0, torch.Generator().manual_seed(0))
    text = tok.decode(out[0])
    assert len(out[0]) == prompt.shape[1] + 12 and prompt.shape[1] < len("The if statement")   # subwords
    assert text.startswith("The if statement") and len(text) >= len("The if statement") + 12


def test_a_character_level_checkpoint_is_refused_for_a_bpe_run(capsys):
    bundled = next(p for p in (REPO / "data" / "teachers").glob("*.pt")
                   if '"dataset": "pydoc"' in p.with_suffix(".json").read_text())
    code = cli.main(BASE + ["--teacher-ckpt", str(bundled)])
    said = capsys.readouterr()
    assert code != 0
    assert "vocabulary" in said.err + said.out and "(94, 128) vs model (256, 128)" in said.err + said.out
