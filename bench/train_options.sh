#!/bin/bash
# What each training option costs per step: `diffuse train` on Fashion-MNIST (fmnist-s, batch 64) for a few
# steps with each objective, against the default objective and against scripts/torch_train.py (PyTorch, the
# same U-Net and recipe) in the same run. Per-step time is taken between step 10 and the last step (from
# the run's loss.csv), so start-up and the first steps' allocations are left out; each row is the fastest of
# --repeat runs (PyTorch's: its whole run's images/s). Run it on an idle machine.
#
# usage: bench/train_options.sh [--steps N] [--threads T] [--repeat R] [--no-torch]   (from the repository root,
#        after make)
set -euo pipefail
steps=60 threads=2 repeat=3 torch=1
while [ $# -gt 0 ]; do
    case "$1" in
        --steps) steps=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --repeat) repeat=$2; shift 2 ;;
        --no-torch) torch=0; shift ;;
        *) echo "usage: bench/train_options.sh [--steps N] [--threads T] [--repeat R] [--no-torch]" >&2; exit 2 ;;
    esac
done
[ "$steps" -gt 20 ] || { echo "bench/train_options.sh: --steps must be more than 20" >&2; exit 2; }
[ "$repeat" -ge 1 ] || { echo "bench/train_options.sh: --repeat must be at least 1" >&2; exit 2; }
bin=${DIFFUSE:-build/diffuse}
[ -x "$bin" ] || { echo "bench/train_options.sh: $bin not found (run make first)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

isa=AVX2
grep -q avx512f /proc/cpuinfo && isa=AVX-512
grep -q avx512_bf16 /proc/cpuinfo && isa="AVX-512 with bf16"
echo "# training options, fmnist-s, batch 64, $steps steps (best of $repeat), $threads threads, $isa ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
echo
echo "| options | ms per step | images/s | against the default |"
echo "|---|---|---|---|"

base=""
row() {   # row LABEL MS_PER_STEP
    local r="1.00"
    [ -n "$base" ] && r=$(awk -v a="$2" -v b="$base" 'BEGIN { printf "%.2f", a / b }')
    [ -z "$base" ] && base=$2
    awk -v l="$1" -v ms="$2" -v r="$r" 'BEGIN { printf "| %s | %.0f | %.1f | %sx |\n", l, ms, 64000 / ms, r }'
}

ours() {   # ours LABEL OPTIONS...
    local label=$1 best="" ms i; shift
    for i in $(seq "$repeat"); do
        "$bin" train --steps "$steps" --threads "$threads" --save-every 0 --sample-every 0 --out "$tmp/run" "$@" \
            > "$tmp/log" 2>&1 || { echo "bench: diffuse train $* failed:" >&2; tail -3 "$tmp/log" >&2; exit 1; }
        ms=$(awk -F, 'NR > 1 && $1 == 10 { a = $12 } NR > 1 { s = $1; b = $12 } END { printf "%.3f", 1000 * (b - a) / (s - 10) }' \
            "$tmp/run/loss.csv")
        rm -rf "$tmp/run"
        best=$(awk -v a="$ms" -v b="$best" 'BEGIN { print (b == "" || a < b) ? a : b }')
    done
    row "$label" "$best"
}

theirs() {   # theirs LABEL OPTIONS...: the whole run's images/s as the script reports it
    local label=$1 best="" ips i; shift
    for i in $(seq "$repeat"); do
        ips=$(/usr/bin/python3 scripts/torch_train.py --steps "$steps" --threads "$threads" --out "$tmp/torch" "$@" 2> "$tmp/log" |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["img_per_sec"])') ||
            { echo "bench: torch_train.py $* failed:" >&2; tail -3 "$tmp/log" >&2; exit 1; }
        rm -rf "$tmp/torch"
        best=$(awk -v a="$ips" -v b="$best" 'BEGIN { print (b == "" || a > b) ? a : b }')
    done
    row "$label" "$(awk -v i="$best" 'BEGIN { printf "%.3f", 64000 / i }')"
}

ours "default: epsilon, L_simple"
ours "--edm" --edm
ours "--learn-variance" --learn-variance
ours "--learn-variance --timestep-sampling importance" --learn-variance --timestep-sampling importance
ours "--min-snr-gamma 5" --min-snr-gamma 5
ours "--prediction v_prediction --zero-snr" --prediction v_prediction --zero-snr
ours "--classes" --classes
ours "--classes --edm" --classes --edm
if [ "$torch" = 1 ]; then
    theirs "PyTorch (scripts/torch_train.py), epsilon"
    theirs "PyTorch, --classes --edm" --classes --edm
fi
