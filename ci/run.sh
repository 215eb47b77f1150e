#!/usr/bin/env bash
# What CI does, on a clean clone of a fresh machine:
#   a fresh virtual environment, the README's own Quickstart commands (install + demo,
#   install + tests) run verbatim, the linter, then the perf gates.
# CI pins the local CPU torch wheel through PIP_CONSTRAINT (ci/constraints.txt); users get
# the range in pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

VENV=${MEGACONTEXT_CI_VENV:-$ROOT/.venv-ci}
rm -rf "$VENV"
python3 -m venv "$VENV"
# shellcheck disable=SC1091
source "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip

export PIP_CONSTRAINT=$ROOT/ci/constraints.txt
export CI=true
export MEGACONTEXT_HYPOTHESIS_PROFILE=${MEGACONTEXT_HYPOTHESIS_PROFILE:-ci}

# The Quickstart commands, exactly as the README states them (between the markers).
mapfile -t QUICKSTART < <(
  sed -n '/<!-- quickstart:start -->/,/<!-- quickstart:end -->/p' README.md | grep -v '^<!--' | grep -v '^```'
)
if [ "${#QUICKSTART[@]}" -ne 2 ]; then
  echo "ci/run.sh: expected 2 Quickstart commands in README.md, found ${#QUICKSTART[@]}" >&2
  exit 1
fi

echo "== quickstart 1: ${QUICKSTART[0]}"
bash -euo pipefail -c "${QUICKSTART[0]}"

echo "== lint"
python -m pip install --quiet -e ".[dev]"
ruff check .

REPORTS=$(mktemp -d)
echo "== quickstart 2: ${QUICKSTART[1]}"
start=$(date +%s)
PYTEST_ADDOPTS="--junitxml=$REPORTS/tests.xml" bash -euo pipefail -c "${QUICKSTART[1]}"
echo "pytest -n auto took $(( $(date +%s) - start )) s"

echo "== perf gates: pytest --benchmark-only"
set +e
pytest --benchmark-only -q --junitxml="$REPORTS/benchmarks.xml"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "no benchmarks collected"
  rc=0
fi

# One closing line over both runs (the benchmark run alone shows the spec suite as skipped).
python - "$REPORTS"/*.xml <<'PY'
import sys
import xml.etree.ElementTree as ET

passed = failed = skipped = 0
for path in sys.argv[1:]:
    for suite in ET.parse(path).getroot().iter("testsuite"):
        n, f, e, s = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
        passed += n - f - e - s
        failed += f + e
        skipped += s
print(f"ci: {passed} passed, {failed} failed, {skipped} skipped")
PY
exit "$rc"
