#!/usr/bin/env bash
# Install everything and run the whole test suite (extra pytest arguments are passed on).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
# The report test renders the HTML report in headless Chromium (Debian's chromium package).
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium for the report test (apt-get)" >&2
    apt-get install -y -q chromium >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null; }
  else
    echo "warning: chromium is not installed; the report test will fail (apt-get install chromium)" >&2
  fi
fi
exec .venv/bin/python -m pytest "$@"
