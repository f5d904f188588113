#!/usr/bin/env bash
# Make a packaged FER release (`msanet_r18.fer2013`, `msanet_r18.ferplus`) from the dataset's files, every step a
# recorded command:
#   export -> ImageNet start (examples/convert_tv_in1k.py, or timm/resnet18.tv_in1k from the Hub) -> timm's
#   train.py (examples/recipes/DATASET_in1k.yaml) -> float16 weights (EMA of the checkpoint with the best
#   validation top-1) -> calibrate (temperature fitted on validation) -> eval on test (and validation) ->
#   publish --dry-run (with the face framing measured on the training images: needs the landmarks extra,
#   checked before anything runs).
#
#   examples/release.sh DATASET SOURCE WORKDIR [--in1k-weights DIR] [--timm-repo DIR] [--device cuda]
#                       [--model ARCH] [--recipe YAML] [--repo-id ORG/NAME]
#                       [--face-framing TRAIN_DIR|EYE_Y,EYE_DIST] [--balance] [--train-only]
#                       [--precision auto|recipe|fp32|bf16]
#                       [-- extra train.py arguments]
# The ResNet-18 row, same recipe, start, seed and schedule: the same command with --model resnet18.
#
# DATASET fer2013: SOURCE is anything `timm-msanet export fer2013` reads (fer2013.csv, or train/ [validation/]
#   test/ folders); validation is PublicTest, test PrivateTest.
# DATASET ferplus: SOURCE holds fer2013new.csv and data/ (FER2013Train/ FER2013Valid/ FER2013Test/ of
#   microsoft/FERPlus); 8 classes by majority vote, validation is FER2013Valid, test FER2013Test.
# --in1k-weights DIR: torchvision's ResNet-18 as folded .npy files (see examples/convert_tv_in1k.py); the start's
#   BN statistics are measured on this dataset's training images. Without it train.py downloads
#   timm/resnet18.tv_in1k from the Hub (same conv weights, ImageNet's BN statistics).
# The timm repository checkout (train.py is not in the timm wheel) comes from --timm-repo or $TIMM_REPO. Every
# command run is appended to WORKDIR/commands.txt with its start time.
# Resumable: an existing WORKDIR/data and start file are reused, training resumes from its last.pth.tar, and a
# finished training run (WORKDIR/train/ARCH/.complete) is not repeated. --train-only stops after training (the
# long step); the same command without it later does the rest. --balance: calibrate also fits the class-prior
# correction on validation (`timm-msanet calibrate --balance`) and folds it into the released weights.
# --precision (default auto): the recipes train with bf16 autocast, 1.3x fp32 on a CPU with native bf16 (AVX-512
#   BF16/AMX) but 0.11x of fp32 (about 9x slower) where it is emulated (AVX2 only; docs/speed.md). auto keeps the
#   recipe where bf16 is native (and on a bf16-capable GPU) and trains in fp32 where it is not; fp32/bf16 force
#   one, recipe keeps the recipe as written. A changed precision trains from a copy of the recipe in WORKDIR
#   (recipe_NAME_fp32.yaml), named in commands.txt; a resumed run keeps the precision it started with, as its
#   train.py args.yaml records it (another --precision for it is refused).
# On CUDA, unchanged but for flags:  --device cuda -- --workers 8 (the recipes already use bf16 autocast).
set -euo pipefail
usage() { sed -n '2,36p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 3 ] || usage
DATASET=$1 SRC=$2 WORK=$3
shift 3
TIMM_REPO=${TIMM_REPO:-}
DEVICE=cpu
MODEL=msanet_r18
RECIPE=
IN1K=
REPO_ID=
FRAMING=
TRAIN_ONLY=
BALANCE=()
PRECISION=auto
EXTRA=()
while [ $# -gt 0 ]; do
    case $1 in
        --timm-repo) TIMM_REPO=$2; shift 2 ;;
        --device) DEVICE=$2; shift 2 ;;
        --model) MODEL=$2; shift 2 ;;
        --recipe) RECIPE=$2; shift 2 ;;
        --in1k-weights) IN1K=$2; shift 2 ;;
        --repo-id) REPO_ID=$2; shift 2 ;;
        --face-framing) FRAMING=$2; shift 2 ;;
        --train-only) TRAIN_ONLY=1; shift ;;
        --balance) BALANCE=(--balance); shift ;;
        --precision) PRECISION=$2; shift 2 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) echo "unknown option $1" >&2; usage ;;
    esac
done
HERE=$(cd "$(dirname "$0")" && pwd)
case $DATASET in
    fer2013) EXPORT=(fer2013 "$SRC") ;;
    ferplus) EXPORT=(ferplus "$SRC/fer2013new.csv" --images-dir "$SRC/data" --classes 8) ;;
    *) echo "error: DATASET must be fer2013 or ferplus, got '$DATASET'" >&2; exit 2 ;;
esac
RECIPE=${RECIPE:-$HERE/recipes/${DATASET}_in1k.yaml}
REPO_ID=${REPO_ID:-timm-msanet/msanet-r18-$DATASET}
[ -f "$RECIPE" ] || { echo "error: recipe $RECIPE not found" >&2; exit 2; }
case $PRECISION in auto|recipe|fp32|bf16) ;;
    *) echo "error: --precision must be auto, recipe, fp32 or bf16, got '$PRECISION'" >&2; exit 2 ;;
esac
# the framing is measured on the training images with dlib
if [[ $MODEL == msanet* && $FRAMING != *,* && -z $TRAIN_ONLY ]]; then
    "${PYTHON:-python}" -c 'from timm_msanet.inference.faces import require_detector; require_detector("dlib")' || {
        echo 'error: the release records its face framing, measured with dlib: pip install "timm-msanet[landmarks]"' >&2
        exit 2; }
fi
[ -f "$TIMM_REPO/train.py" ] || { echo "error: give --timm-repo (or TIMM_REPO): a checkout of the timm repository with train.py" >&2; exit 2; }
[ -z "$IN1K" ] || [ -f "$IN1K/conv1.weight.npy" ] || {
    echo "error: --in1k-weights $IN1K has no conv1.weight.npy (see examples/convert_tv_in1k.py)" >&2; exit 2; }
PY=${PYTHON:-python}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
LOG=$WORK/commands.txt

run() {  # record, then run, one command
    printf '%s  %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(printf '%q ' "$@")" >> "$LOG"
    echo "+ $*" >&2
    "$@"
}

{ echo "# release.sh $DATASET $SRC $WORK (device $DEVICE, model $MODEL, recipe $(basename "$RECIPE"))"
  "$PY" -c 'import torch, timm, timm_msanet, platform; print("# torch", torch.__version__, "timm", timm.__version__, "timm-msanet", timm_msanet.__version__, "python", platform.python_version(), "cpu threads", torch.get_num_threads(), "cuda", torch.cuda.get_device_name() if torch.cuda.is_available() else None)'
} >> "$LOG"

# 0. precision: the recipe's, unless bf16 would be emulated here (auto) or another is asked for. A resumed run
#    trains on as it started, even on another machine: train.py's own RUN/args.yaml says how it started.
RUN=$WORK/train/$MODEL
RESUMED=()
[ -f "$RUN/last.pth.tar" ] && [ -f "$RUN/args.yaml" ] && RESUMED=(--resume "$RUN/args.yaml")
ASKED=$PRECISION
read -r PRECISION TRAIN_RECIPE < <("$PY" -m timm_msanet.utils.precision --recipe "$RECIPE" --precision "$PRECISION" \
    --device "$DEVICE" --out-dir "$WORK" "${RESUMED[@]}" || echo failed)
[ "$PRECISION" != failed ] || exit 2
if [ "$ASKED" = auto ] && [ ${#RESUMED[@]} -eq 0 ] && [ "$PRECISION" != recipe ]; then
    echo "note: bf16 is emulated on this $DEVICE (no AVX-512 BF16/AMX): training in fp32 (--precision recipe keeps bf16)" >&2
fi

# 1. the dataset -> canonical ImageFolder tree (train/ validation/ test/)
DATA=$WORK/data
FRAMING=${FRAMING:-$DATA/train}
[ -f "$DATA/manifest.json" ] || run timm-msanet export "${EXPORT[@]}" "$DATA"

# 2. the ImageNet start: conv1..layer2 of torchvision's ResNet-18, BN statistics of this dataset's faces at the
#    recipe's resolution (or, without --in1k-weights, timm/resnet18.tv_in1k from the Hub)
START=()
if [ -n "$IN1K" ]; then
    SIZE=$("$PY" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["img_size"])' "$RECIPE")
    START_FILE=$WORK/start_tv_in1k_${DATASET}_${SIZE}px.safetensors
    [ -f "$START_FILE" ] || run "$PY" "$HERE/convert_tv_in1k.py" "$IN1K" "$DATA/train" "$START_FILE" --img-size "$SIZE"
    START=(--pretrained-path "$START_FILE")
fi

# 3. timm's train.py by name; model_best is chosen on validation by the EMA's top-1. Every architecture
#    (msanet_r18, resnet18, msanet_r18_ms, ...) is named with its tv_in1k tag: the same start for all.
TRAIN_MODEL=$MODEL.tv_in1k
if [ ! -f "$RUN/.complete" ]; then
    RESUME=()
    [ -f "$RUN/last.pth.tar" ] && RESUME=(--resume "$RUN/last.pth.tar")
    mkdir -p "$WORK/train"
    [ "$PRECISION" = recipe ] || echo "# precision $PRECISION: $(basename "$RECIPE") but for amp, as $TRAIN_RECIPE" >> "$LOG"
    PYTHONSAFEPATH=1 run "$PY" "$TIMM_REPO/train.py" "$DATA" --config "$TRAIN_RECIPE" --model "$TRAIN_MODEL" "${START[@]}" \
        --output "$WORK/train" --experiment "$MODEL" --device "$DEVICE" "${RESUME[@]}" "${EXTRA[@]}"
    touch "$RUN/.complete"
fi
[ -z "$TRAIN_ONLY" ] || {
    echo "done: trained $RUN (--train-only; run the command without it for the rest)" >&2; exit 0; }

# 4. the release weights: EMA of model_best, float16 safetensors carrying its training settings and its facts
#    (dataset, grey input, the face framing measured on the training images), which travel with the file
WEIGHTS=$WORK/${MODEL}_${DATASET}.safetensors
FRAMING_ARGS=()
[[ $MODEL == msanet* ]] && FRAMING_ARGS=(--face-framing "$FRAMING")
run timm-msanet publish "$RUN/model_best.pth.tar" --weights-only "$WEIGHTS" --dataset "$DATASET" "${FRAMING_ARGS[@]}" \
    --overwrite

# 5. calibrated scores: one temperature fitted on validation (never test), ECE/NLL/Brier before and after on
#    test; the released file carries the temperature in its metadata
CALIBRATED=$WORK/${MODEL}_${DATASET}_calibrated.safetensors
run timm-msanet calibrate --checkpoint "$WEIGHTS" --data-dir "$DATA" --split validation --test-split test \
    --out "$WORK/calibration/$MODEL" --save "$CALIBRATED" --device "$DEVICE" "${BALANCE[@]}" --overwrite

# 6. FER metrics of exactly those weights: test (reported) and validation (selection split)
for SPLIT in test validation; do
    run timm-msanet eval --checkpoint "$CALIBRATED" --data-dir "$DATA" --split $SPLIT --out "$WORK/eval/$MODEL/$SPLIT" \
        --device "$DEVICE" --overwrite
done

# 7. the Hub release, written locally (upload: the same command without --dry-run); a baseline such as
#    --model resnet18 stops after its evaluation
case $MODEL in
    msanet*)
        run timm-msanet publish "$CALIBRATED" --repo-id "$REPO_ID" --dataset "$DATASET" \
            --eval-json "$WORK/eval/$MODEL/test/metrics.json" --dry-run "$WORK/release" --overwrite
        echo "done: weights $CALIBRATED, metrics $WORK/eval/$MODEL/test/metrics.json, release folder $WORK/release, commands $LOG" >&2 ;;
    *)
        echo "done: $MODEL is a baseline, not an msanet release: weights $CALIBRATED, metrics $WORK/eval/$MODEL/, commands $LOG" >&2 ;;
esac
