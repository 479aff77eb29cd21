#!/usr/bin/env bash
# Set up (idempotent) and run the test suite. Extra arguments go to pytest.
# With no arguments, the tests marked timm then run again in .venv-timm (scripts/setup.sh --timm: timm with a
# matched torch/torchvision pair), where timm imports; the main venv skips them. KD_EXPLORER_SKIP_TIMM=1: not.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
timm=$([ $# -eq 0 ] && [ "${KD_EXPLORER_SKIP_TIMM:-}" != 1 ] && echo 1 || true)
[ -n "$timm" ] && scripts/setup.sh --timm
[ -z "${VIRTUAL_ENV:-}" ] && source .venv/bin/activate
rc=0
python -m pytest "$@" || rc=$?
if [ -n "$timm" ]; then
  .venv-timm/bin/python -m pytest -m timm tests/unit/test_timm_models.py tests/e2e/test_timm_runs.py || rc=$?
fi
exit $rc
