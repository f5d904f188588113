#!/usr/bin/env bash
# The prepared GPU calls: what a session with a lent CUDA machine measures, each stage one call under 8 minutes.
#
#   device `run` (repository root on the GPU machine):
#       bash examples/gpu_session.sh bench     # carry .timm_scripts (and .whl if the machine's timm is too old)
#       bash examples/gpu_session.sh table3    # carry .timm_scripts and .gpu_data
#       bash examples/gpu_session.sh ferplus224  # carry .timm_scripts and .gpu_data
#       bash examples/gpu_session.sh fer2013224  # carry .timm_scripts and .gpu_data
#
# Before the calls, here (nothing of it is committed: .timm_scripts/, .gpu_data/ and .whl/ are git-ignored):
#   mkdir -p .timm_scripts && cp TIMM_REPO/train.py .timm_scripts/               # train.py is not in timm's wheel
#   python examples/pack_faces.py pack data/ferplus .gpu_data/ferplus.faces      # 33,709 faces, about 55 MiB
#   python examples/convert_tv_in1k.py CudaResnet18/weights data/ferplus/train \
#       .gpu_data/start_224px.safetensors --img-size 224                        # the study's start at 224 px
#   python examples/pack_faces.py pack data/fer2013 .gpu_data/fer2013.faces      # fer2013224 only: 35,887 faces
#   python examples/convert_tv_in1k.py CudaResnet18/weights data/fer2013/train \
#       .gpu_data/start_224px_fer2013.safetensors --img-size 224                # its start (BN on FER2013 faces)
#
# Stages, figures under $OUT (default runs/gpu; the device tool returns them), each with the command that made it:
#   bench   env.txt; bench.txt/json: `timm-msanet bench` on CUDA, msanet_r18 next to resnet18, train and infer,
#           bf16 autocast + channels_last, eager and torch.compile, batch 256, 224 px, interleaved rounds;
#           train_py.txt: timm's train.py on CUDA for 2 short epochs of drawn faces (examples/demo.py's data)
#   table3  the FERPlus Table 3 study at 224 px (docs/training.md), seeds 0 and 1 run side by side on the one
#           GPU, 7 loader workers each: table3_224/table3.md, table3.json, each run's result.json, summary.csv
#           and log (checkpoints stay on the machine: the figures are what comes back)
#   ferplus224  the FERPlus release at the paper's size: examples/release.sh with the 224 px release recipe
#           (examples/recipes/ferplus_in1k_224px.yaml: 12 epochs, the CPU route's schedule too; R_EPOCHS overrides),
#           ImageNet start at 224 px, for msanet_r18 and the same-recipe resnet18 side by side on the GPU;
#           under $OUT/ferplus224: each run's commands.txt, train summary.csv and args.yaml, calibration and
#           test/validation metrics.json, and msanet_r18's calibrated float16 weights with its release folder
#   fer2013224  the same for FER2013 (examples/recipes/fer2013_in1k_224px.yaml, --balance as the 64 px FER2013
#           release), under $OUT/fer2013224
# DEVICE=cpu and T3_EXTRA='--epochs 1' (R_EXTRA for ferplus224) run a stage on a CPU as a smoke test of the script.
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

# the export and the 224 px start a stage trains from (FERPlus for table3 and ferplus224, FER2013 for fer2013224):
# sets FACES, START, DATA
stage_data() {  # STAGE DATASET
    if [ "$2" = ferplus ]; then
        FACES=${FACES:-.gpu_data/ferplus.faces}
        START=${START:-.gpu_data/start_224px.safetensors}
    else
        FACES=${FACES:-.gpu_data/$2.faces}
        START=${START:-.gpu_data/start_224px_$2.safetensors}
    fi
    for need in .timm_scripts/train.py "$FACES" "$START"; do
        [ -f "$need" ] || { echo "$1: $need not carried (see the top of this script)" >&2; return 2; }
    done
    START=$(realpath "$START")  # release.sh trains from another directory
    DATA=/tmp/gpu_$2
    [ -d "$DATA" ] || "$PY" examples/pack_faces.py unpack "$FACES" "$DATA" || return 1
}

STAGES=${*:-bench}
for STAGE in $STAGES; do
case $STAGE in
bench)
# the bench: about 3 minutes with compilation (budget 300 s)
echo "== bench" | tee "$OUT/bench.txt"
CMD=("$PY" -m timm_msanet.cli bench --device cuda --models msanet_r18 resnet18 --mode train infer --amp bf16
     --channels-last on --batch-size 256 --img-size 224 --compile --steps 10 --repeats 5 --json "$OUT/bench.json"
     --overwrite)
echo "# ${CMD[*]}" >> "$OUT/bench.txt"
timeout 300 "${CMD[@]}" 2>&1 | tee -a "$OUT/bench.txt"

# timm's train.py on CUDA (budget 150 s): drawn faces made here, 2 epochs at 224 px
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
;;
table3)
stage_data table3 ferplus || exit $?
RUNS=/tmp/gpu_table3_224  # checkpoints stay here; the figures are copied to $OUT
STUDY=("$PY" examples/table3_study.py --timm-repo .timm_scripts --data-dir "$DATA"
       --recipe examples/recipes/ferplus_table3_short.yaml --device "${DEVICE:-cuda}" --out "$RUNS")
TRAIN_ARGS=(-- --pretrained-path "$START" --img-size 224 --workers 7 --device-modules timm_msanet ${T3_EXTRA:-})
mkdir -p "$OUT/table3_224"
echo "# ${STUDY[*]} --seeds 0|1 ${TRAIN_ARGS[*]}" | tee "$OUT/table3_224/commands.txt"
for SEED in 0 1; do  # the two seeds side by side: one GPU has room for both
    "${STUDY[@]}" --seeds "$SEED" "${TRAIN_ARGS[@]}" > "$OUT/table3_224/study_seed$SEED.log" 2>&1 &
done
wait
"${STUDY[@]}" --seeds 0 1 "${TRAIN_ARGS[@]}" > "$OUT/table3_224/study.log" 2>&1  # both done: the whole table
tail -12 "$OUT/table3_224/study.log"
cp "$RUNS"/table3.md "$RUNS"/table3.json "$RUNS"/*.log "$OUT/table3_224/" 2>/dev/null
for RUN in "$RUNS"/*/; do
    mkdir -p "$OUT/table3_224/$(basename "$RUN")"
    cp "$RUN"result.json "$RUN"summary.csv "$RUN"args.yaml "$OUT/table3_224/$(basename "$RUN")/" 2>/dev/null
done
;;
ferplus224|fer2013224)
DATASET=${STAGE%224}
stage_data "$STAGE" "$DATASET" || exit $?
if [ "$DATASET" = ferplus ]; then RELEASE_ARGS=(--face-framing 0.395,0.361)
else RELEASE_ARGS=(--face-framing 0.396,0.362 --balance); fi  # as each dataset's 64 px release
if ! command -v timm-msanet > /dev/null; then  # release.sh calls the command; the package runs from this tree
    mkdir -p /tmp/gpu_bin
    printf '#!/bin/sh\nexec "%s" -m timm_msanet.cli "$@"\n' "$(command -v "$PY")" > /tmp/gpu_bin/timm-msanet
    chmod +x /tmp/gpu_bin/timm-msanet
    export PATH=/tmp/gpu_bin:$PATH
fi
R_OUT=$OUT/$STAGE
mkdir -p "$R_OUT"
for MODEL in msanet_r18 resnet18; do  # side by side: one GPU has room for both
    WORK=/tmp/gpu_$STAGE/$MODEL
    mkdir -p "$WORK"
    ln -sfn "$DATA" "$WORK/data"  # an existing export: release.sh reuses it
    CMD=(bash examples/release.sh "$DATASET" "$DATA" "$WORK" --timm-repo .timm_scripts --device "${DEVICE:-cuda}"
         --model "$MODEL" --recipe "examples/recipes/${DATASET}_in1k_224px.yaml" "${RELEASE_ARGS[@]}"
         -- --pretrained-path "$START" ${R_EPOCHS:+--epochs $R_EPOCHS} --workers 7 --device-modules timm_msanet
         ${R_EXTRA:-})
    echo "# ${CMD[*]}" > "$R_OUT/$MODEL.log"
    PYTHON=$PY "${CMD[@]}" >> "$R_OUT/$MODEL.log" 2>&1 &
done
wait
for MODEL in msanet_r18 resnet18; do
    WORK=/tmp/gpu_$STAGE/$MODEL
    mkdir -p "$R_OUT/$MODEL"
    cp "$WORK/commands.txt" "$WORK/train/$MODEL/summary.csv" "$WORK/train/$MODEL/args.yaml" "$R_OUT/$MODEL/" 2>/dev/null
    for SPLIT in test validation; do
        cp "$WORK/eval/$MODEL/$SPLIT/metrics.json" "$R_OUT/$MODEL/metrics_$SPLIT.json" 2>/dev/null
    done
    cp "$WORK/calibration/$MODEL/calibration.json" "$R_OUT/$MODEL/" 2>/dev/null
    grep -E '^done|error' "$R_OUT/$MODEL.log" | tail -2
done
cp "/tmp/gpu_$STAGE/msanet_r18/msanet_r18_${DATASET}_calibrated.safetensors" "$R_OUT/" 2>/dev/null
cp -r "/tmp/gpu_$STAGE/msanet_r18/release" "$R_OUT/release" 2>/dev/null
rm -f "$R_OUT/release/model.safetensors"  # the same weights as the calibrated file: one copy comes back
;;
*) echo "unknown stage $STAGE: bench, table3, ferplus224 or fer2013224" >&2; exit 2 ;;
esac
done
echo "gpu_session.sh: $(( $(date +%s) - T0 )) s in all; figures in $OUT"
