#!/usr/bin/env bash
# Set up (idempotent) and run the test suite. Extra arguments go to pytest.
# With no arguments, the tests marked timm then run again in .venv-timm (scripts/setup.sh --timm: timm with a
# matched torch/torchvision pair), where timm imports; the main venv skips them. KD_EXPLORER_SKIP_TIMM=1: not.
# .venv-timm is set up in the background while the main suite runs: its install (~3 min, 6.4 GB from local disk)
# is disk and one core, so it overlaps the suite instead of adding to it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
timm=$([ $# -eq 0 ] && [ "${KD_EXPLORER_SKIP_TIMM:-}" != 1 ] && echo 1 || true)
timm_log=$(mktemp)
if [ -n "$timm" ]; then
  scripts/setup.sh --timm >"$timm_log" 2>&1 &
  timm_setup=$!
fi
[ -z "${VIRTUAL_ENV:-}" ] && source .venv/bin/activate
# With no arguments the suite runs in KD_EXPLORER_TEST_WORKERS processes (default 2; 0 = one process), a test file
# to a process (--dist loadfile: a module's fixtures are built once). Tests use one torch thread each, so one
# process leaves a core idle: on 2 AMD EPYC cores the suite took 1,239 s in one process and 697 s in two.
workers=()
if [ $# -eq 0 ] && [ "${KD_EXPLORER_TEST_WORKERS:-2}" != 0 ]; then
  workers=(-n "${KD_EXPLORER_TEST_WORKERS:-2}" --dist loadfile)
fi
rc=0
python -m pytest ${workers[@]+"${workers[@]}"} "$@" || rc=$?
if [ -n "$timm" ]; then
  if wait "$timm_setup"; then
    .venv-timm/bin/python -m pytest -m timm tests/unit/test_timm_models.py tests/e2e/test_timm_runs.py || rc=$?
  else
    echo "scripts/setup.sh --timm failed; its output:" >&2
    cat "$timm_log" >&2
    rc=1
  fi
fi
rm -f "$timm_log"
exit $rc
