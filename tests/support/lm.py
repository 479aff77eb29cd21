"""The language-model runs the LM page tests look at: a forward-KL and a reverse-KL student of one teacher."""
from explorer.config import RunConfig
from explorer.engine import run

STUDENTS = (("fkl", [{"key": "kd", "params": {"temperature": 1.0}}]), ("rkl", [{"key": "rkl"}]))


def run_forward_and_reverse_kl(base: dict) -> None:
    """Both runs of `base` (dataset, budget) in the current KD_EXPLORER_HOME, each completed."""
    for name, methods in STUDENTS:
        r = run(RunConfig.from_dict(dict(base, name=name, methods=methods)))
        assert r["status"] == "completed", r.get("message")
