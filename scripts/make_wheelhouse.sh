#!/usr/bin/env bash
# Downloads the wheels scripts/gpu_check.sh installs on a GPU machine that reaches no package registry:
# the project's dependencies except torch (the GPU machine's own PyTorch is used), its test tools, and
# torchdistill for the throughput comparison. Run it here (PyPI reachable); the folder travels with the
# checkout (it is git-ignored: carry it, e.g. the run tool's carry=["wheelhouse"]).
#
#   scripts/make_wheelhouse.sh                                  # -> wheelhouse/, for this machine's Python
#   scripts/make_wheelhouse.sh --python-version 3.12 --torchvision 0.29.1
#
# Options:
#   --dest DIR               where the wheels go (default: wheelhouse)
#   --python-version X.Y     the GPU machine's Python (default: this python3's); wheels only, manylinux x86_64
#   --torchvision VERSION    also torchvision==VERSION (--no-deps), the one built for the GPU machine's torch;
#                            torchdistill needs it, and without it the comparison with torchdistill is skipped
#   --no-torchdistill        leave torchdistill (and its scipy/cython) out
#   --exclude a,b,...        leave these distributions out (what the GPU machine's Python already has)
#   --print-requirements     print the requirement lines and exit (nothing is downloaded)
#   -h, --help               this text
# It writes DIR/requirements.txt (what gpu_check.sh installs with pip --no-index --find-links DIR) and prints
# the folder's size: the run tool carries at most 64 MiB in all, so leave out what the GPU machine already has.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DEST=wheelhouse
PYVER=""
TORCHVISION=""
TORCHDISTILL=1
EXCLUDE=""
PRINT=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dest) DEST=$2; shift ;;
    --python-version) PYVER=$2; shift ;;
    --torchvision) TORCHVISION=$2; shift ;;
    --no-torchdistill) TORCHDISTILL=0 ;;
    --exclude) EXCLUDE=$2; shift ;;
    --print-requirements) PRINT=1 ;;
    -h|--help) sed -n "2,20p" "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "make_wheelhouse.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ -n "$PYVER" ] && ! [[ $PYVER =~ ^3\.[0-9]+$ ]]; then
  echo "make_wheelhouse.sh: --python-version takes X.Y, e.g. 3.11 (got $PYVER)" >&2; exit 2
fi
# the requirement lines: pyproject's dependencies and its test extra, minus torch (the machine's) and
# playwright (browser tests are not part of the GPU check)
REQS=$("$PY" - <<'EOF'
import re, tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
for r in p["dependencies"] + p["optional-dependencies"]["test"]:
    name = re.split(r"[<>=!~ \[;]", r)[0].lower()
    if name not in ("torch", "playwright"):
        print(r)
EOF
)
if [ "$PRINT" = 1 ]; then echo "$REQS"; exit 0; fi
PYVER=${PYVER:-$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')}
mkdir -p "$DEST"
# Every distribution those need, at the versions installed in this Python (a tested set), found by walking
# their metadata; torch is never followed (the GPU machine's own is used, with whatever it brings).
LOCK=$(REQS="$REQS" TORCHDISTILL=$TORCHDISTILL EXCLUDE=$EXCLUDE "$PY" - <<'EOF'
import os, re
from importlib import metadata

def name_of(req):
    return re.split(r"[<>=!~ \[;(]", req.strip())[0].lower().replace("_", "-")

want = [name_of(r) for r in os.environ["REQS"].split("\n") if r.strip()]
if os.environ["TORCHDISTILL"] == "1":
    want += ["scipy", "cython", "pyyaml", "numpy"]   # torchdistill's own needs (it goes in --no-deps)
seen, todo = {}, list(want)
while todo:
    n = todo.pop()
    if n in seen or n == "torch" or n in os.environ["EXCLUDE"].lower().replace("_", "-").split(","):
        continue
    try:
        d = metadata.distribution(n)
    except metadata.PackageNotFoundError:
        seen[n] = None
        continue
    seen[n] = d.version
    for r in d.requires or []:
        if "extra ==" not in r:   # markers other than extras (python_version, sys_platform) are left to pip
            todo.append(name_of(r))
for n, v in sorted(seen.items()):
    print(f"{n}=={v}" if v else n)
EOF
)
echo "$LOCK" > "$DEST/requirements.txt"
TARGET=(--only-binary=:all: --python-version "$PYVER" --implementation cp
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
        --platform manylinux1_x86_64 --platform any --no-deps)
"$PY" -m pip download -q -d "$DEST" "${TARGET[@]}" -r "$DEST/requirements.txt"
if [ "$TORCHDISTILL" = 1 ]; then
  "$PY" -m pip download -q -d "$DEST" "${TARGET[@]}" torchdistill
fi
if [ -n "$TORCHVISION" ]; then
  "$PY" -m pip download -q -d "$DEST" "${TARGET[@]}" "torchvision==$TORCHVISION"
fi
find "$DEST" -name 'torch-*.whl' -delete   # a dependency that pulled torch in: the machine's is used
SIZE=$(du -sm "$DEST" | cut -f1)
[ "$SIZE" -le 64 ] || echo "note: $SIZE MiB is over the run tool's 64 MiB carry limit; the largest:" \
  "$(ls -S "$DEST" | head -5 | tr '\n' ' ')-- leave out what the GPU machine has (--exclude)" >&2
echo "wheelhouse: $(ls "$DEST"/*.whl | wc -l) wheels, $(du -sh "$DEST" | cut -f1) in $DEST (Python $PYVER)"
