#!/usr/bin/env bash
# Build what a cluster's executors need, into OUT_DIR (default dist/):
#   shopsense-<version>-py3-none-any.whl   the shopsense wheel (conf/ included)
#   shopsense-env.tar.gz                   a packed virtual environment: Python's site-packages
#                                          with shopsense and its dependencies (pandas, pyarrow,
#                                          statsmodels, numpy, pyyaml, pyspark's Python part)
# Pass the archive to spark-submit with --archives (README, "Run on a cluster").
#
#   bash scripts/pack.sh [OUT_DIR]
#
# The environment pins every dependency to the version in .venv (the driver's), so driver and
# executors exchange pandas/Arrow data between the same versions. Like any venv-pack archive it
# links `python` to the interpreter this .venv was made from: every node needs that interpreter
# at the same path, or set PYTHON_PREFIX to the prefix it has on the nodes (e.g. /usr).
# Left out of the archive: Spark's jars (executors take them from the workers' Spark) and the
# libraries' own test suites; compression level 1 packs ~3x faster than the default for ~10% more.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

if [ ! -x .venv/bin/venv-pack ]; then
  bash scripts/setup.sh cluster
fi
base_python="$(.venv/bin/python -c 'import sys; print(sys._base_executable)')"
version="$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("shopsense"))')"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

started=$SECONDS
rm -f "$out"/shopsense-*.whl
.venv/bin/python -m pip wheel --quiet --no-deps --wheel-dir "$out" .
wheel="$out/shopsense-$version-py3-none-any.whl"

.venv/bin/python -m pip freeze --exclude-editable > "$work/constraints.txt"
"$base_python" -m venv "$work/env"
"$work/env/bin/python" -m pip install --quiet --disable-pip-version-check \
  --constraint "$work/constraints.txt" "$wheel"

pack_args=(--prefix "$work/env" --output "$out/shopsense-env.tar.gz" --force --quiet --compress-level 1
           --exclude 'lib/python*/site-packages/*/tests/*'
           --exclude 'lib/python*/site-packages/pyspark/jars/*'
           --exclude 'lib/python*/site-packages/pyspark/examples/*')
[ -n "${PYTHON_PREFIX:-}" ] && pack_args+=(--python-prefix "$PYTHON_PREFIX")
.venv/bin/venv-pack "${pack_args[@]}"

echo "[shopsense] packed in $((SECONDS - started))s:"
ls -l "$wheel" "$out/shopsense-env.tar.gz" | awk '{printf "  %s  %d MB\n", $NF, $5 / 1048576}'
