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

# One closing line that counts each test once: every result of the test run, and of the
# benchmark run only the perf gates that actually ran (`--benchmark-only` reports the whole
# suite again as skipped; those skips are not counted a second time).
python - "$REPORTS/tests.xml" "$REPORTS/benchmarks.xml" <<'PY'
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

NOT_A_BENCHMARK = "--benchmark-only"  # pytest-benchmark's skip message for the rest of the suite


def count(path: str, benchmark_run: bool) -> list[int]:
    """[passed, failed, skipped] over the test cases of one junit file (a case with a failure or
    an error child counts once, as failed)."""
    passed = failed = skipped = 0
    if not Path(path).is_file():
        return [0, 0, 0]
    for case in ET.parse(path).getroot().iter("testcase"):
        if benchmark_run and not case.get("classname", "").startswith("benchmarks."):
            continue  # a test outside benchmarks/ is no perf gate (skipif skips say otherwise)
        tags = {child.tag: child for child in case}
        if "failure" in tags or "error" in tags:
            failed += 1
        elif "skipped" in tags:
            if benchmark_run and NOT_A_BENCHMARK in tags["skipped"].get("message", ""):
                continue
            skipped += 1
        else:
            passed += 1
    return [passed, failed, skipped]


tests, gates = count(sys.argv[1], False), count(sys.argv[2], True)
total = [a + b for a, b in zip(tests, gates)]
print("ci: {} passed, {} failed, {} skipped "
      "(tests: {} passed, {} failed, {} skipped; perf gates: {} passed, {} failed, {} skipped)"
      .format(*total, *tests, *gates))
PY
exit "$rc"
