#!/usr/bin/env bash
# Set up (idempotent) and run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
[ -z "${VIRTUAL_ENV:-}" ] && source .venv/bin/activate
python -m pytest "$@"
