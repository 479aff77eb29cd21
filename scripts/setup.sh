#!/usr/bin/env bash
# Sets up KD Explorer: a virtualenv if none is active, the CPU build of torch where no torch is
# present (never a multi-GB CUDA download by accident), then the package with its test extras.
# Already set up from this checkout with the current pyproject.toml (scripts/setup_stamp.py): nothing to do;
# KD_EXPLORER_REINSTALL=1 installs again anyway.
#
# scripts/setup.sh --timm sets up the second venv .venv-timm instead, for timm models (timm:NAME): timm needs a
# torchvision built for its torch, and PyPI has no CPU torchvision for the main venv's torch, so it gets the
# matched pair torch 2.14.1 + torchvision 0.29.1 (CUDA builds that run on CPU; ~6.4 GB, ~3 min from local
# disk), then the package with its test and timm extras. scripts/test.sh runs the tests marked timm in it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--timm" ]; then
  [ -x .venv-timm/bin/python ] || python3 -m venv .venv-timm
  py=.venv-timm/bin/python
  if [ "${KD_EXPLORER_REINSTALL:-}" != 1 ] && "$py" scripts/setup_stamp.py check test,timm; then
    exit 0
  fi
  "$py" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  "$py" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  "$py" -m pip install -q -e ".[test,timm]"
  "$py" scripts/setup_stamp.py write test,timm
  exit 0
fi
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  # shellcheck disable=SC1091
  source .venv/bin/activate
fi
if [ "${KD_EXPLORER_REINSTALL:-}" != 1 ] && python scripts/setup_stamp.py check; then
  exit 0
fi
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! python -c "import torch" >/dev/null 2>&1; then
  # this pinned CPU build installs from local disk where it is cached, else from the CPU index
  python -m pip install -q "torch==2.13.0" 2>/dev/null \
    || python -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
fi
python -m pip install -q -e ".[test,png,ray]"   # png: figures as PNG (kaleido drives the system Chromium); ray: the Ray executor and its tests
python scripts/setup_stamp.py write
