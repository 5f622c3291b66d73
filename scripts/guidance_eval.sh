#!/bin/sh
# Accuracy of a noise-free classifier on images a model generates, per guidance scale: N images per
# scale (default 1000), labels spread evenly over the classes, DDIM with STEPS steps (default 50).
# Classifier-free guidance of a class-conditional MODEL by default; with GUIDE=DIR in the environment,
# classifier guidance by the noise-aware classifier DIR (MODEL may then be unconditional) and the
# scales are classifier scales. THREADS=N limits the threads.
# Usage: [GUIDE=DIR] [THREADS=N] scripts/guidance_eval.sh MODEL SCORER [N] [STEPS] [SCALES...]
set -e
model=$1 clf=$2 n=${3:-1000} steps=${4:-50}
[ -n "$model" ] && [ -n "$clf" ] || {
    echo "usage: [GUIDE=DIR] scripts/guidance_eval.sh MODEL SCORER [N] [STEPS] [SCALES...]" >&2; exit 2; }
shift 2; [ $# -gt 0 ] && shift; [ $# -gt 0 ] && shift
scales=${*:-1 2 3 5}
bin=$(dirname "$0")/../build/diffuse
out=$(mktemp -d /tmp/diffuse-guidance-XXXXXX)
trap 'rm -rf "$out"' EXIT
if [ -n "$GUIDE" ]; then what="classifier scale"; else what="guidance scale"; fi
echo "| $what | accuracy ($n images, DDIM $steps steps) |"
echo "|---|---|"
for w in $scales; do
    if [ -n "$GUIDE" ]; then set -- --classifier "$GUIDE" --classifier-scale "$w"; else set -- --guidance "$w"; fi
    acc=$("$bin" ${THREADS:+--threads "$THREADS"} sample "$model" --n "$n" --batch 100 --steps "$steps" "$@" --seed 1 \
          --score "$clf" --out "$out/w$w.png" 2>"$out/err" | sed -n 's/^accuracy of .*: \([0-9.]*\) .*/\1/p')
    [ -n "$acc" ] || { cat "$out/err" >&2; exit 1; }
    echo "| $w | $acc |"
done
