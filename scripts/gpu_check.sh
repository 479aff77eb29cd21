#!/usr/bin/env bash
# The GPU check of issue 17 §2, in one shot, on a machine with one CUDA GPU and the PyTorch it already has.
# It reaches no package registry: whatever else the project needs comes from wheelhouse/ (made beforehand by
# scripts/make_wheelhouse.sh on a machine that can reach PyPI, and carried with the checkout).
#
#   scripts/gpu_check.sh [--data DIR] [--python PY] [--peer-python PY]     # on the GPU machine, < 8 minutes
#   scripts/gpu_check.sh --dry                                             # the same steps on CPU, tiny budgets
#
# Results go to $OUT if set, else gpu-check-results/ (summary.md and summary.json, plus one file per step):
#   1. the tests marked `cuda` (tests/cuda)                           cuda_tests.txt, cuda_tests.rc, cuda_tests.xml
#   2. kd-explorer bench throughput, resnet56->resnet20 and resnet32x4->resnet8x4, batch 128 and 512,
#      with and without torch.compile                                 throughput_b<B>_<compile|eager>.jsonl
#      and torchdistill's own loop on the same device (the ratio)     torchdistill_b<B>.json
#   3. time to 92 % test accuracy, Fashion-MNIST, resnet20 student,
#      KD from the bundled teacher                                    time_to_accuracy.json
#   4. the app's default preset on the device through the CLI, then
#      every analysis page's figures built from its probes (AppTest)  preset.json, figures.json, figures/*.json
#
# --dry (CI): device cpu; cuda tests are collected and skip; throughput 2 steps at batch 8, no compile; the
# time-to-accuracy run 1 epoch on 300 images with no target; the preset 1 epoch. Every step still runs.
# Python: --python PY (default: $PYTHON, else python3). If it already has the project's dependencies nothing is
# installed; otherwise a venv .gpu-venv is made over it (--system-site-packages: the machine's torch) and filled
# from wheelhouse/ with pip --no-index. torchdistill (step 2) is imported from --peer-python (default: that
# same Python); where it is missing the comparison is recorded as skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DRY=0
DATA=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
PY=${PYTHON:-python3}
PEER_PY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry) DRY=1 ;;
    --data) DATA=$2; shift ;;
    --python) PY=$2; shift ;;
    --peer-python) PEER_PY=$2; shift ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
OUT=${OUT:-gpu-check-results}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG="$OUT/gpu_check.log"
: > "$LOG"
FAILED=()
say() { echo "[gpu_check $(date -u +%H:%M:%S)] $*" | tee -a "$LOG" >&2; }
step() {   # step NAME SECONDS COMMAND...: run (stopped after SECONDS), log, note a failure, go on with the next
  local name=$1 limit=$2; shift 2
  [ "$DRY" = 1 ] && limit=600   # CPU budgets are the caller's (the dry test has its own timeout)
  local t0=$SECONDS rc
  say "$name: $*"
  timeout -k 10 "$limit" "$@" >>"$LOG" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then say "$name: ok ($((SECONDS - t0)) s)"
  elif [ $rc -eq 124 ]; then say "$name: TIMED OUT after $limit s"; FAILED+=("$name (timed out at $limit s)")
  else say "$name: FAILED (exit $rc, $((SECONDS - t0)) s)"; FAILED+=("$name"); fi
}

# ---------------------------------------------------------------- 0. the Python, and its dependencies
DEPS="import torch, numpy, pandas, sklearn, plotly, captum, streamlit, yaml, PIL, pytest, pytest_timeout"
if ! "$PY" -c "$DEPS" >/dev/null 2>&1; then
  if [ ! -x .gpu-venv/bin/python ]; then
    say "making .gpu-venv over $PY (its torch) and installing from wheelhouse/ (no index)"
    "$PY" -c "import torch" || { say "no torch in $PY: the GPU machine's PyTorch is expected there"; exit 1; }
    "$PY" -m venv --system-site-packages .gpu-venv || exit 1
    # and whatever $PY itself sees (its torch may live in a venv of its own, not in the system's site)
    "$PY" -c "import site; print('\n'.join(site.getsitepackages()))" \
      > "$(.gpu-venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/machine-python.pth"
  fi
  if ! .gpu-venv/bin/python -c "$DEPS" >/dev/null 2>&1; then
    [ -d wheelhouse ] || { say "wheelhouse/ is missing: run scripts/make_wheelhouse.sh where PyPI is reachable"; exit 1; }
    .gpu-venv/bin/python -m pip install -q --no-index --find-links wheelhouse --no-deps -r wheelhouse/requirements.txt \
      >>"$LOG" 2>&1 || { say "installing from wheelhouse/ failed (see $LOG)"; exit 1; }
    # the peer, where the wheelhouse has it (torchvision must match this torch: make_wheelhouse.sh --torchvision)
    for pkg in torchvision torchdistill; do
      if ls wheelhouse/$pkg-* >/dev/null 2>&1 && ! .gpu-venv/bin/python -c "import $pkg" >/dev/null 2>&1; then
        .gpu-venv/bin/python -m pip install -q --no-index --find-links wheelhouse --no-deps $pkg >>"$LOG" 2>&1 \
          || say "$pkg not installed from wheelhouse/ (the comparison with torchdistill will be skipped)"
      fi
    done
  fi
  PY=$ROOT/.gpu-venv/bin/python
else
  say "using $PY as it is (it has the dependencies: nothing installed)"
fi
PEER_PY=${PEER_PY:-$PY}
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
export KD_EXPLORER_HOME=$OUT/home
STEPS=(scripts/gpu_check_steps.py)

if [ "$DRY" = 1 ]; then
  DEVICE=cpu; BATCHES=(8); COMPILES=(--no-compile); BENCH=(--steps 2 --warmup 0 --peak-seconds 0.05 --threads 1)
  PEER=(--steps 2 --warmup 0 --workers 0 --batch-size 8); TTA=(--epochs 1 --n-train 300 --target none)
  PRESET=(--epochs 1)
  export OMP_NUM_THREADS=1
else
  DEVICE=cuda; BATCHES=(128 512); COMPILES=(--no-compile --compile); BENCH=(--steps 20 --warmup 3)
  PEER=(--steps 20 --warmup 3); TTA=(--epochs 4,8 --target 0.92); PRESET=()
fi
"$PY" - >"$OUT/environment.json" 2>>"$LOG" <<EOF
import json, platform, torch
cuda = torch.cuda.is_available()
print(json.dumps({"dry": $DRY, "device": "$DEVICE", "python": platform.python_version(), "torch": torch.__version__,
                  "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0) if cuda else None,
                  "bf16": cuda and torch.cuda.is_bf16_supported(), "data": "$DATA"}, indent=2))
EOF
if [ "$DRY" = 0 ] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  say "CUDA is not available to $PY: nothing to check here (use --dry for the CPU dry run)"; exit 1
fi

# ---------------------------------------------------------------- 1. the cuda tests
# The time limits of the steps add up to 8 minutes (install aside); a step past its limit is stopped and
# recorded as timed out, and the others still run.
step "cuda tests" 140 bash -c "'$PY' -m pytest -m cuda tests/cuda -p no:cacheprovider -rA \
  --junitxml '$OUT/cuda_tests.xml' > '$OUT/cuda_tests.txt' 2>&1; rc=\$?; echo \$rc > '$OUT/cuda_tests.rc'; exit \$rc"
# without CUDA (--dry) every test is collected and skips: pytest exits 0

# ---------------------------------------------------------------- 2. throughput, and torchdistill's loop
for b in "${BATCHES[@]}"; do
  for c in "${COMPILES[@]}"; do
    tag=${c#--}; tag=${tag/no-compile/eager}
    limit=25; [ "$tag" = compile ] && { [ "$b" = 128 ] && limit=80 || limit=40; }   # the first compile fills the cache
    step "throughput b$b $tag" $limit bash -c "'$PY' -m explorer bench throughput --pairs resnet56:resnet20,resnet32x4:resnet8x4 \
      --batch-size $b --device $DEVICE $c ${BENCH[*]} --json > '$OUT/throughput_b${b}_$tag.jsonl'"
  done
  step "torchdistill b$b" 25 "$PEER_PY" "${STEPS[@]}" peer --device $DEVICE --out "$OUT" "${PEER[@]}" \
    $([ "$DRY" = 1 ] || echo --batch-size "$b")
done

# ---------------------------------------------------------------- 3. time to accuracy
if [ -d "$DATA" ]; then
  step "time to accuracy" 60 "$PY" "${STEPS[@]}" tta --device $DEVICE --data "$DATA" --out "$OUT" "${TTA[@]}"
else
  say "time to accuracy: no Fashion-MNIST at $DATA (--data DIR): skipped"; FAILED+=("time to accuracy (no data)")
fi

# ---------------------------------------------------------------- 4. the default preset, then its figures
step "preset" 30 "$PY" "${STEPS[@]}" preset --device $DEVICE --home "$OUT/preset-home" --out "$OUT" "${PRESET[@]}"
step "figures" 30 "$PY" "${STEPS[@]}" figures --home "$OUT/preset-home" --out "$OUT"

"$PY" "${STEPS[@]}" summary --out "$OUT" $([ "$DRY" = 1 ] && echo --dry) >>"$LOG" 2>&1
printf '%s\n' "${FAILED[@]}" > "$OUT/failed.txt"
if [ ${#FAILED[@]} -gt 0 ]; then say "done in $SECONDS s; failed: ${FAILED[*]} (see $LOG)"; exit 1; fi
say "done in $SECONDS s: $OUT/summary.md"
