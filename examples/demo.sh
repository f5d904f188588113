#!/usr/bin/env bash
# README "The two commands": set up .venv (or $VENV) with the package and its `demo` extra, then
#   1. the packaged FER2013 model (`timm.create_model('msanet_r18', pretrained=True)`) on real photos
#      from installed packages, with face detection (examples/real_photos.py -> runs/demo/photos/);
#   2. the training pipeline end to end (synthetic faces -> timm training components -> eval ->
#      safetensors save -> reload, examples/demo.py -> runs/demo/).
# No downloads beyond the package registry. Extra arguments go to examples/demo.py (e.g. --steps 200).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-$(pwd)/.venv}
[ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
echo "== installing the package with its demo extra into $VENV (about a minute on a new venv; pip's own log follows)" >&2
"$VENV/bin/python" -m pip install --disable-pip-version-check ".[demo]"
DETECTOR=$("$VENV/bin/python" -c 'from timm_msanet.inference.faces import resolve_detector; print(resolve_detector("auto"))' 2>/dev/null || echo none)
echo "== the demo takes about a minute on 2 CPU cores after the install (photos, then 80 training steps)" >&2
echo "== the packaged FER2013 model on real photos (face detector: $DETECTOR; it is dlib, with landmarks and aligned faces, where the landmarks extra is installed, else haar)" >&2
"$VENV/bin/python" examples/real_photos.py --out runs/demo/photos
echo "== the training pipeline on synthetic faces" >&2
exec "$VENV/bin/python" examples/demo.py "$@"
