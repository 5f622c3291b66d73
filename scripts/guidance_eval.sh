#!/bin/sh
# Accuracy of a noise-free classifier on images a class-conditional model generates, per guidance scale:
# N images per scale (default 1000), labels spread evenly over the classes, DDIM with STEPS steps.
# Usage: scripts/guidance_eval.sh MODEL CLASSIFIER [N] [STEPS] [SCALES...]
set -e
model=$1 clf=$2 n=${3:-1000} steps=${4:-50}
[ -n "$model" ] && [ -n "$clf" ] || { echo "usage: scripts/guidance_eval.sh MODEL CLASSIFIER [N] [STEPS] [SCALES...]" >&2; exit 2; }
shift 2; [ $# -gt 0 ] && shift; [ $# -gt 0 ] && shift
scales=${*:-1 2 3 5}
bin=$(dirname "$0")/../build/diffuse
out=$(mktemp -d /tmp/diffuse-guidance-XXXXXX)
trap 'rm -rf "$out"' EXIT
echo "| guidance scale | accuracy ($n images, DDIM $steps steps) |"
echo "|---|---|"
for w in $scales; do
    acc=$("$bin" sample "$model" --n "$n" --batch 100 --steps "$steps" --guidance "$w" --seed 1 \
          --score "$clf" --out "$out/w$w.png" 2>/dev/null | sed -n 's/^accuracy of .*: \([0-9.]*\) .*/\1/p')
    echo "| $w | $acc |"
done
