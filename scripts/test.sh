#!/usr/bin/env bash
# Install everything and run the whole test suite (extra pytest arguments are passed on).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
exec .venv/bin/python -m pytest "$@"
