#!/usr/bin/env bash
# The prepared GPU call: everything a session with a lent CUDA machine measures, in one command under 8 minutes.
#
#   device `run` (repository root on the GPU machine; carry .timm_scripts, and .whl when the machine's timm is
#   older than the package needs):
#       bash examples/gpu_session.sh                  # figures under $OUT (the device tool returns them)
#
# Before the call, here:
#   mkdir -p .timm_scripts && cp TIMM_REPO/train.py .timm_scripts/    # train.py is not in timm's wheel
#   (.timm_scripts/ and .whl/ are git-ignored; see the device tool's README for carrying a newer timm wheel)
#
# What it writes to $OUT (default runs/gpu), each figure with the command that made it:
#   env.txt        nvidia-smi, torch / timm / timm-msanet versions
#   bench.txt/json `timm-msanet bench` on CUDA: msanet_r18 next to resnet18, train and infer, bf16 autocast +
#                  channels_last, eager and torch.compile, batch 256, 224 px, interleaved rounds
#   train_py.txt   timm's train.py on CUDA for 2 short epochs of drawn faces at 224 px (examples/demo.py's data),
#                  msanet_r18 found by name, bf16 AMP, channels_last: that the whole pipeline runs there
# docs/speed.md quotes these files; nothing here downloads anything (HF_HUB_OFFLINE=1).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
T0=$(date +%s)
{ nvidia-smi; "$PY" -c 'import torch, timm, timm_msanet; print("torch", torch.__version__, "cuda", torch.version.cuda,
"timm", timm.__version__, "timm-msanet", timm_msanet.__version__, "gpu", torch.cuda.get_device_name(0))'; } \
    > "$OUT/env.txt" 2>&1
tail -1 "$OUT/env.txt"

# 1. the bench: about 3 minutes with compilation (budget 300 s)
echo "== bench" | tee "$OUT/bench.txt"
CMD=("$PY" -m timm_msanet.cli bench --device cuda --models msanet_r18 resnet18 --mode train infer --amp bf16
     --channels-last on --batch-size 256 --img-size 224 --compile --steps 10 --repeats 5 --json "$OUT/bench.json"
     --overwrite)
echo "# ${CMD[*]}" >> "$OUT/bench.txt"
timeout 300 "${CMD[@]}" 2>&1 | tee -a "$OUT/bench.txt"

# 2. timm's train.py on CUDA (budget 150 s): drawn faces made here, 2 epochs at 224 px
if [ -f .timm_scripts/train.py ]; then
    DATA=/tmp/gpu_faces
    "$PY" -c "from pathlib import Path; import sys; sys.path.insert(0, 'examples'); from demo import make_dataset
make_dataset(Path('$DATA'), 200, 40)"
    CMD=("$PY" -P .timm_scripts/train.py "$DATA" --model msanet_r18 --num-classes 7 --train-split train
         --val-split validation --img-size 224 -b 128 --epochs 2 --warmup-epochs 0 --lr 1e-3 --opt adamw --amp
         --amp-dtype bfloat16 --channels-last -j 8 --device cuda --log-interval 5 --output /tmp/gpu_runs
         --device-modules timm_msanet)
    echo "# ${CMD[*]}" > "$OUT/train_py.txt"
    timeout 150 "${CMD[@]}" >> "$OUT/train_py.txt" 2>&1
    echo "train.py exit status $?" | tee -a "$OUT/train_py.txt"
    grep -E 'Train: 1|Test: \[' "$OUT/train_py.txt" | tail -3
else
    echo "no .timm_scripts/train.py carried: train.py step skipped" | tee "$OUT/train_py.txt"
fi
echo "gpu_session.sh: $(( $(date +%s) - T0 )) s in all; figures in $OUT"
