"""No message of ours passes on torch's advice to reload a refused file with weights_only=False (or to
allow-list its globals): every path that reports a hostile or damaged .pt file is grepped here, and
torch's own text is checked to really carry that advice, so the grep means something."""
import errno
import io
import os
import pickle
import re
import sqlite3

import pytest
import torch

from explorer import doctor
from explorer.checkpoints import CheckpointError, load_checkpoint_into, load_weights_only, read_state_dict
from explorer.errors import explain, is_disk_full, scrub
from explorer.models import create_model
from explorer.uploads import UploadError, save_upload

UNSAFE_ADVICE = re.compile(r"weights_only\W*(=|set to|to)\W*false|safe_globals|trusted source", re.I)


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def hostile(kind: str, marker) -> bytes:
    if kind == "raw pickle":
        return pickle.dumps(Payload(marker), protocol=4)
    if kind == "truncated zip":
        buf = io.BytesIO()
        torch.save({"w": torch.zeros(64)}, buf)
        return buf.getvalue()[:300]
    buf = io.BytesIO()
    obj = {"fc.weight": torch.zeros(2, 2), "x": Payload(marker)} if kind == "nested" else Payload(marker)
    torch.save(obj, buf, _use_new_zipfile_serialization=kind != "legacy pickle")
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["zip pickle", "legacy pickle", "raw pickle", "nested", "truncated zip"])
def test_no_message_suggests_loading_a_hostile_file_unsafely(tmp_path, kind):
    marker = tmp_path / "pwned"
    data = hostile(kind, marker)
    path = tmp_path / "evil.pt"
    path.write_bytes(data)
    messages = []
    if kind != "truncated zip":   # torch's own text carries the advice we must not repeat
        with pytest.raises(pickle.UnpicklingError) as raw:
            torch.load(path, weights_only=True)
        assert UNSAFE_ADVICE.search(str(raw.value))
        assert not UNSAFE_ADVICE.search(explain(raw.value))   # a raw error reaching a run's message
    for load in (load_weights_only, read_state_dict,
                 lambda p: load_checkpoint_into(create_model("cnn_tiny", 10, 1, 8), p)):
        with pytest.raises(CheckpointError) as e:
            load(path)
        messages.append(str(e.value))
    with pytest.raises(UploadError) as e:
        save_upload("evil.pt", data, "checkpoint", tmp_path / "home")
    assert not UNSAFE_ADVICE.search(str(e.value))           # (an upload is "the upload": its name is untrusted)
    run_dir = tmp_path / "home" / "runs" / "20260101-000000-abcdef"
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoint.pt").write_bytes(data)
    report = doctor.check(tmp_path / "home")
    assert not report.ok and len(report.file_problems) == 1
    messages.append("\n".join(report.lines()))
    for m in messages:
        assert "evil.pt" in m or "checkpoint.pt" in m, m
        assert not UNSAFE_ADVICE.search(m), m
    assert not marker.exists(), "the pickle's code ran"


def test_scrub_drops_only_the_unsafe_sentences():
    text = ("Weights only load failed. Re-running `torch.load` with `weights_only` set to `False` will likely "
            "succeed, but it can result in arbitrary code execution. Do it only if you got the file from a trusted "
            "source.\n\nWeightsUnpickler error: Unsupported global: GLOBAL os.system was not an allowed global by "
            "default. Please use `torch.serialization.add_safe_globals([system])` to allowlist this global if you "
            "trust this class/function.")
    out = scrub(text)
    assert not UNSAFE_ADVICE.search(out) and "add_safe_globals" not in out
    assert "Weights only load failed." in out and "Unsupported global: GLOBAL os.system" in out


def test_full_disk_is_recognised_without_an_errno(tmp_path):
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(sqlite3.OperationalError("database or disk is full"))
    assert is_disk_full(RuntimeError("PytorchStreamWriter failed writing file data/0: [Errno 28] No space left"))
    # a bare write failure counts only where the disk really is (nearly) full; tmp_path is not
    assert not is_disk_full(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 16 vs 8"),
                            tmp_path)
    assert not is_disk_full(sqlite3.OperationalError("disk I/O error"), tmp_path)
    assert not is_disk_full(ValueError("bad value"))
    msg = explain(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.pt")))
    assert msg.startswith(f"disk full at {tmp_path / 'x.pt'}, free ") and " MB of " in msg
