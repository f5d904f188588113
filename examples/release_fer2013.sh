#!/usr/bin/env bash
# Make the packaged `msanet_r18.fer2013` release from the FER2013 images, every step a recorded command:
#   export -> timm's train.py (examples/recipes/fer2013_scratch.yaml) -> float16 weights (EMA of the
#   checkpoint with the best PublicTest top-1) -> calibrate (temperature fitted on PublicTest) -> eval on
#   PrivateTest (and PublicTest) -> publish --dry-run (with the face framing measured on the training images:
#   needs the landmarks extra, checked before anything runs).
#
#   examples/release_fer2013.sh FER2013_SOURCE WORKDIR [--timm-repo DIR] [--device cuda] [--model ARCH]
#                               [--repo-id ORG/NAME] [--face-framing TRAIN_DIR|EYE_Y,EYE_DIST]
#                               [-- extra train.py arguments]
# The ResNet-18 baseline, same recipe, seed and schedule: the same command with --model resnet18.
#
# FER2013_SOURCE: anything `timm-msanet export fer2013` reads (fer2013.csv, or train/ validation/ test/
# folders). The timm repository checkout (train.py is not in the timm wheel) comes from --timm-repo or
# $TIMM_REPO. Every command run is appended to WORKDIR/commands.txt with its start time.
# Resumable: an existing WORKDIR/data is reused, and training resumes from its last.pth.tar; a finished
# training run (WORKDIR/train/ARCH/.complete) is not repeated.
# On CUDA, unchanged but for flags:  --device cuda -- --amp --amp-dtype bfloat16 --workers 8
# (add --torchcompile for speed, and --img-size 224 for a larger model: then it is a different release).
set -euo pipefail
usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 2 ] || usage
SRC=$1 WORK=$2
shift 2
TIMM_REPO=${TIMM_REPO:-}
DEVICE=cpu
MODEL=msanet_r18
REPO_ID=timm-msanet/msanet-r18-fer2013
FRAMING=
EXTRA=()
while [ $# -gt 0 ]; do
    case $1 in
        --timm-repo) TIMM_REPO=$2; shift 2 ;;
        --device) DEVICE=$2; shift 2 ;;
        --model) MODEL=$2; shift 2 ;;
        --repo-id) REPO_ID=$2; shift 2 ;;
        --face-framing) FRAMING=$2; shift 2 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) echo "unknown option $1" >&2; usage ;;
    esac
done
if [[ $MODEL == msanet* && $FRAMING != *,* ]]; then  # the framing is measured on the training images with dlib
    "${PYTHON:-python}" -c 'from timm_msanet.faces import require_detector; require_detector("dlib")' || {
        echo 'error: the release records its face framing, measured with dlib: pip install "timm-msanet[landmarks]"' >&2
        exit 2; }
fi
[ -f "$TIMM_REPO/train.py" ] || { echo "error: give --timm-repo (or TIMM_REPO): a checkout of the timm repository with train.py" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
RECIPE=$HERE/recipes/fer2013_scratch.yaml
PY=${PYTHON:-python}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
LOG=$WORK/commands.txt

run() {  # record, then run, one command
    printf '%s  %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(printf '%q ' "$@")" >> "$LOG"
    echo "+ $*" >&2
    "$@"
}

{ echo "# release_fer2013.sh $SRC $WORK (device $DEVICE, model $MODEL)"
  "$PY" -c 'import torch, timm, timm_msanet, platform; print("# torch", torch.__version__, "timm", timm.__version__, "timm-msanet", timm_msanet.__version__, "python", platform.python_version(), "cpu threads", torch.get_num_threads(), "cuda", torch.cuda.get_device_name() if torch.cuda.is_available() else None)'
} >> "$LOG"

# 1. FER2013 -> canonical ImageFolder tree (train/ validation/=PublicTest test/=PrivateTest)
DATA=$WORK/data
FRAMING=${FRAMING:-$DATA/train}
[ -f "$DATA/manifest.json" ] || run timm-msanet export fer2013 "$SRC" "$DATA"

# 2. timm's train.py by name; model_best is chosen on validation (PublicTest) by the EMA's top-1
RUN=$WORK/train/$MODEL
if [ ! -f "$RUN/.complete" ]; then
    RESUME=()
    [ -f "$RUN/last.pth.tar" ] && RESUME=(--resume "$RUN/last.pth.tar")
    run "$PY" "$TIMM_REPO/train.py" "$DATA" --config "$RECIPE" --model "$MODEL" --output "$WORK/train" \
        --experiment "$MODEL" --device "$DEVICE" "${RESUME[@]}" "${EXTRA[@]}"
    touch "$RUN/.complete"
fi

# 3. the release weights: EMA of model_best, float16 safetensors carrying its training settings
WEIGHTS=$WORK/${MODEL}_fer2013.safetensors
run timm-msanet publish "$RUN/model_best.pth.tar" --weights-only "$WEIGHTS"

# 4. calibrated scores: one temperature fitted on PublicTest (never PrivateTest), ECE/NLL/Brier before and
#    after on PrivateTest; the released file carries the temperature in its metadata
CALIBRATED=$WORK/${MODEL}_fer2013_calibrated.safetensors
run timm-msanet calibrate --checkpoint "$WEIGHTS" --data-dir "$DATA" --split validation --test-split test \
    --out "$WORK/calibration/$MODEL" --save "$CALIBRATED" --device "$DEVICE"

# 5. FER metrics of exactly those weights: PrivateTest (reported) and PublicTest (selection split)
for SPLIT in test validation; do
    run timm-msanet eval --checkpoint "$CALIBRATED" --data-dir "$DATA" --split $SPLIT --out "$WORK/eval/$MODEL/$SPLIT" \
        --device "$DEVICE"
done

# 6. the Hub release, written locally (upload: the same command without --dry-run); a baseline such as
#    --model resnet18 (same recipe, seed and schedule) stops after its evaluation
case $MODEL in
    msanet*)
        rm -rf "$WORK/release"
        run timm-msanet publish "$CALIBRATED" --repo-id "$REPO_ID" --dataset fer2013 \
            --eval-json "$WORK/eval/$MODEL/test/metrics.json" --face-framing "$FRAMING" --dry-run "$WORK/release"
        echo "done: weights $CALIBRATED, metrics $WORK/eval/$MODEL/test/metrics.json, release folder $WORK/release, commands $LOG" >&2 ;;
    *)
        echo "done: $MODEL is a baseline, not an msanet release: weights $CALIBRATED, metrics $WORK/eval/$MODEL/, commands $LOG" >&2 ;;
esac
