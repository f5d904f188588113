#!/usr/bin/env bash
# README "Run the demo": set up .venv (or $VENV) with the package, then run the end-to-end demo
# (synthetic faces -> timm training components -> eval -> safetensors save -> reload). No downloads
# beyond the package registry. Extra arguments go to examples/demo.py (e.g. --steps 200 --img-size 224).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-$(pwd)/.venv}
[ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check .
exec "$VENV/bin/python" examples/demo.py "$@"
