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
workers="${SHOPSENSE_TEST_WORKERS:-2}"
if [ "$workers" != 0 ]; then
  # Resolve the Delta jars (spark.jars.packages, into ~/.ivy2.5.2) once, before two test
  # processes start their Spark sessions and would resolve them at the same time.
  .venv/bin/python - <<'PY'
import tempfile

from shopsense.core.config import conf_dir, load_conf
from shopsense.core.session import build_session

with tempfile.TemporaryDirectory() as tmp:
    build_session(load_conf([conf_dir() / "local.yaml"], [f"warehouse={tmp}/warehouse"])).stop()
PY
fi
# Two test processes, each with its own Spark session, a test file each at a time (--dist
# loadfile: a file's module fixtures are built once; tests/conftest.py orders the files and
# keeps the quick pipeline's readers together): small Spark jobs wait on scheduling more than
# they use the two cores, so two at once finish the suite sooner. SHOPSENSE_TEST_WORKERS=0 runs
# it in this one process.
exec .venv/bin/python -m pytest -n "$workers" --dist loadfile --no-loadscope-reorder "$@"
