#!/usr/bin/env bash
# Set up (idempotent) and start the app on the embedded default dataset (digits).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
[ -z "${VIRTUAL_ENV:-}" ] && source .venv/bin/activate
exec kd-explorer app "$@"
