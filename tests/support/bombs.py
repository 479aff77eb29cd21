"""Real decompression bombs, for tests only: small files that expand to hundreds of MB when read naively.

    checkpoint_bomb(path)          # a torch.save zip whose 400 MiB tensor is re-compressed with DEFLATE (~400 KB)
    gzip_of_zeros(1 << 30)         # gzip member holding 1 GiB of zeros (~1 MB), gzip-concatenable
    zip_of_zeros(members)          # a zip of members of zeros, DEFLATE-compressed
    png_bomb(9000, 9000)           # a valid 1-bit PNG of 9000 x 9000 pixels (~10 KB)
    measure_in_child(code, ...)    # run `code` in a fresh interpreter: its baseline and peak RSS

The memory a refusal costs is measured in a child process, so the test process's own history (other tests,
these builders) cannot hide or inflate it.
"""
from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MiB = 1 << 20


def gzip_of_zeros(n: int, prefix: bytes = b"", level: int = 9) -> bytes:
    """A gzip member of `prefix` then `n` zero bytes, compressed in 1 MiB steps (never n bytes in memory)."""
    c = zlib.compressobj(level, zlib.DEFLATED, 31)   # wbits 31: a gzip header and trailer
    out = [c.compress(prefix)]
    chunk = bytes(MiB)
    for _ in range(n // MiB):
        out.append(c.compress(chunk))
    out.append(c.compress(bytes(n % MiB)))
    out.append(c.flush())
    return b"".join(out)


def recompress_zip(src: Path, dest: Path) -> None:
    """Copy a zip with every member re-compressed with DEFLATE (level 9), streamed member by member."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
        for info in zin.infolist():
            with zin.open(info) as r, zout.open(info.filename, "w") as w:
                while chunk := r.read(8 * MiB):
                    w.write(chunk)


def checkpoint_bomb(path: Path, mib: int = 400) -> Path:
    """torch.save({"weight": zeros(mib MiB of float32)}) re-compressed with DEFLATE: what torch.load reads."""
    import torch
    plain = path.with_suffix(".stored")
    torch.save({"weight": torch.zeros(mib * MiB // 4)}, plain)
    recompress_zip(plain, path)
    plain.unlink()
    return path


def zip_of_zeros(members: dict[str, int], extra: dict[str, bytes] | None = None) -> bytes:
    """A zip (DEFLATE, level 9) of members of zeros {name: size}, plus `extra` members {name: bytes}."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for name, size in members.items():
            with z.open(name, "w") as w:
                for start in range(0, size, 4 * MiB):
                    w.write(bytes(min(4 * MiB, size - start)))
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 9000, height: int = 9000) -> bytes:
    """A valid PNG (1-bit greyscale, all black) of width x height pixels: ~10 KB for 9000 x 9000."""
    row = b"\x00" + bytes((width + 7) // 8)   # filter type 0, then the packed bits
    c = zlib.compressobj(9)
    idat = b"".join(c.compress(row) for _ in range(height)) + c.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)   # depth 1, greyscale
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


CHILD = '''
import json, resource, sys, time
import torch
torch.set_num_threads(1)
{setup}
def _peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux: KiB
def _hwm():   # the kernel's high-water mark of this process image, a cross-check of ru_maxrss
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
baseline, hwm0, t0 = _peak(), _hwm(), time.process_time()
try:
{call}
    outcome = None
except Exception as e:
    outcome = type(e).__name__ + ": " + str(e)
print("RESULT " + json.dumps({{"baseline": baseline, "peak": _peak(), "hwm_before": hwm0, "hwm_after": _hwm(),
                              "cpu_s": time.process_time() - t0,
                              "outcome": outcome, "value": globals().get("value")}}))
'''


def measure_in_child(call: str, setup: str = "", home: Path | None = None, timeout: float = 300) -> dict:
    """Run `setup` (imports: part of the baseline) then `call` in a fresh Python; returns baseline and peak
    RSS in bytes (ru_maxrss before and after the call), the CPU seconds the call took, and its outcome
    (None if it raised nothing, else 'ExcType: message'). `call` may set `value` (JSON-able)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]), OMP_NUM_THREADS="1")
    if home is not None:
        env["KD_EXPLORER_HOME"] = str(home)
    body = "\n".join("    " + line for line in call.strip().splitlines())
    script = CHILD.format(setup=setup.strip(), call=body)
    # Through a shell that forks it: Linux carries ru_maxrss across execve (the forked copy of this, maybe
    # large, process would be the child's "peak"); a process forked from the small shell starts afresh.
    p = subprocess.run(["/bin/sh", "-c", '"$0" "$@"; exit $?', sys.executable, "-c", script], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=timeout)
    lines = [line for line in p.stdout.splitlines() if line.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        raise AssertionError(f"child failed (rc {p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    out = json.loads(lines[-1][len("RESULT "):])
    out["above_mb"] = (out["peak"] - out["baseline"]) / 1e6
    return out
