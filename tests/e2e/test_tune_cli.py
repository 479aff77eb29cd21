"""`kd-explorer tune` end to end on a tiny budget, and the `--defaults` flag of `kd-explorer run`."""
import json

from explorer.cli import build_parser, main
from explorer.cli_config import config_from_args
from explorer.tuned import load_tuned


def test_cli_tune_tiny_budget(tmp_path, capsys):
    rc = main(["tune", "at", "--budget", "3", "--seeds", "0,1", "--epochs", "1", "--n-train", "40",
               "--out-dir", str(tmp_path), "--home", str(tmp_path / "trials"), "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    result = json.loads(out.out.strip().splitlines()[-1])["results"]["at"]
    entry = load_tuned("digits", tmp_path)["methods"]["at"]
    assert result["weight"] == entry["weight"] and result["params"] == entry["params"]
    assert entry["protocol"]["rungs"] == [2, 1] and entry["protocol"]["epochs"] == 1
    assert entry["benchmark"]["weight"] == 1000.0                     # AT's published weight, kept beside it
    assert "[tune at 1/3]" in out.err and "val_acc=" in out.err      # progress on stderr
    # the chosen values are the trial with the best mean over the seeds it ran on (both seeds)
    full = [t for t in entry["trials"] if len(t["val_acc"]) == 2]
    assert entry["val_acc"] == max(t["mean"] for t in full)
    # the trials are recorded in their own store, not the user's
    assert (tmp_path / "trials" / "runs.sqlite").is_file()


def test_cli_tune_refuses_unknown_key(tmp_path, capsys):
    assert main(["tune", "atx", "--out-dir", str(tmp_path)]) == 2
    assert "did you mean 'at'" in capsys.readouterr().err


def test_run_defaults_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_EXPLORER_TUNED_DIR", str(tmp_path))   # no tuned file: the benchmark's
    args = build_parser().parse_args(["run", "--method", "kd"])
    assert config_from_args(args).defaults == "benchmark"
    args = build_parser().parse_args(["run", "--method", "kd", "--defaults", "tuned"])
    assert main(["run", "--method", "kd", "--defaults", "tuned"]) == 2   # nothing tuned for digits here
    assert args.defaults == "tuned"
