#!/usr/bin/env bash
# The project's one test command (README "The two commands"; docs/testing.md). From a fresh clone it:
#   1. makes a virtual environment (.venv, or $VENV) and installs the package with its test extras,
#   2. runs the package's own tests,
#   3. fetches the timm sdist matching the installed timm from the package registry and runs timm's own
#      model test battery (tests/test_models.py) on the msanet models, with timm's pretrained-weight
#      tests served from an offline Hugging Face cache (never the network).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
echo "== installing the package with its test extras into $VENV (a minute or two on a new venv; pip's own log follows)"
"$VENV/bin/python" -m pip install --disable-pip-version-check ".[test]" pytest-timeout

echo "== package tests"
# two workers (pytest-xdist), one test file per worker at a time so module fixtures are built once: most of the
# suite's time is CLI subprocesses importing torch and timm, which leaves a core idle in a serial run.
# PYTEST_WORKERS=0 runs it serially.
"$VENV/bin/python" -m pytest tests -q -p no:cacheprovider -n "${PYTEST_WORKERS:-2}" --dist loadfile

echo "== timm's own model test battery on the msanet models"
"$VENV/bin/python" .ci/timm_battery.py
