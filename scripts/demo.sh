#!/usr/bin/env bash
# The main job on the embedded default: local Spark, ./warehouse, generated sample data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/shopsense demo "$@"
