#!/bin/bash
# The shipped models' training (docs/quality.md, "Retraining the shipped models"), in pieces: each call trains
# runs/ship/NAME on for at most --minutes (default: until the budget's 39,000 steps), resuming where it
# stopped (at the end of the minutes the run is sent SIGTERM, and saves a checkpoint as it stops). A run can move between machines through the repository: --keep copies its latest checkpoint
# and loss.csv into models/retraining/NAME, and a machine without runs/ship/NAME starts from there.
# One thread by default: the two models train side by side, which makes more images per second in all
# than one 2-thread run (and gives the same weights: training does not depend on the threads).
#
# uncond-xs is not shipped: it is the unconditional recipe on the smaller fmnist-xs network, trained for as long
# as the shipped fmnist-s model was (19,008 steps at 121.7 images/s is 167 idle minutes; fmnist-xs makes 1.46x
# the images per second, so 28,000 steps), for FD against minutes of the two sizes.
#
# usage: scripts/retrain_shipped.sh cond|uncond|uncond-xs [--minutes M] [--threads T]   (from the repository root, after make)
#        scripts/retrain_shipped.sh --keep cond|uncond|uncond-xs
set -euo pipefail
usage() { echo "usage: scripts/retrain_shipped.sh cond|uncond|uncond-xs [--minutes M] [--threads T] | --keep cond|uncond|uncond-xs" >&2; exit 2; }
keep=0 name="" minutes="" threads=1
while [ $# -gt 0 ]; do
    case "$1" in
        --keep) keep=1; shift ;;
        --minutes) minutes=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        cond | uncond | uncond-xs) name=$1; shift ;;
        *) usage ;;
    esac
done
[ -n "$name" ] || usage
run=runs/ship/$name kept=models/retraining/$name
bin=${DIFFUSE:-build/diffuse}

if [ "$keep" = 1 ]; then
    [ -L "$run/latest" ] || { echo "scripts/retrain_shipped.sh: $run has no checkpoint to keep" >&2; exit 1; }
    ck=$(readlink "$run/latest")
    rm -rf "$kept.tmp"
    mkdir -p "$kept.tmp"
    cp -r "$run/$ck" "$run/loss.csv" "$kept.tmp/"
    ln -s "$ck" "$kept.tmp/latest"
    rm -rf "$kept"
    mv "$kept.tmp" "$kept"
    echo "kept $run/$ck in $kept"
    exit 0
fi

[ -x "$bin" ] || { echo "scripts/retrain_shipped.sh: $bin not found (run make first)" >&2; exit 1; }
# the recipes the shipped models were trained with, kept as they were (not read from make run's, which may move on)
case "$name" in
    cond) recipe="--preset fmnist-s --classes --edm" ;;
    uncond) recipe="--preset fmnist-s --min-snr-gamma 5" ;;
    uncond-xs) recipe="--preset fmnist-xs --min-snr-gamma 5" ;;
esac
steps=39000
[ "$name" = uncond-xs ] && steps=28000
limit=()
[ -n "$minutes" ] && limit=(timeout --signal=TERM "${minutes}m")
if [ ! -L "$run/latest" ] && [ -L "$kept/latest" ]; then
    mkdir -p runs/ship
    cp -r "$kept" "$run"
    echo "resuming $run from $kept ($(readlink "$kept/latest"))"
fi
if [ -L "$run/latest" ]; then
    "${limit[@]}" "$bin" train --resume --steps $steps --threads "$threads" --out "$run" || [ $? = 124 ]
    exit 0
fi
# shellcheck disable=SC2086
"${limit[@]}" "$bin" train $recipe --lr 3e-4 --warmup 100 --lr-decay constant --steps $steps --eval-every 1000 \
    --save-every 500 --keep 100 --threads "$threads" --seed 0 --out "$run" || [ $? = 124 ]
