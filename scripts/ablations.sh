#!/bin/bash
# The recipe's knobs at `make run`'s budget (docs/quality.md, "The recipe's knobs"): each run is `make run`'s
# training (fmnist-xs, class-conditional, EDM, constant lr 3e-4 after 100 warmup steps, read from the
# Makefile) with one thing changed, then scored with `make run`'s sampler. The budget is 20 minutes' worth of work: `make run`'s own
# 20 minutes (--base-steps, 2,733 steps of 64 images on the AVX-512 machine in docs/quality.md), scaled by
# the setting's speed against the base's, each measured once on the idle machine (60 steps, 2 threads, the
# fastest of two) and kept in OUT/speed.tsv (or --speeds FILE). So a faster setting gets more steps, as it
# would in 20 minutes; settings that do the same arithmetic (Adam's beta1, the EMA, learned variances) get
# the base's. Training runs one thread per run, so two can go side by side with the same result (training
# gives the same weights whatever the threads). Every run resumes if stopped; a finished evaluation is not
# run again.
#
# usage: scripts/ablations.sh [--out DIR] [--speeds FILE] [--base-steps N] [--speed-only] NAME...
#        (from the repository root, after make)
#   names: base b32 b128 beta1-0.9 beta2-0.99 warmup-0 warmup-500 ema-0.999 no-ema narrow wide;
#          uncond-eps uncond-lv (bits/dim, learned variances)
#          uncond-snr5 (bits/dim with min-SNR-5 weights, against uncond-eps)
set -euo pipefail
out=runs/abl speed_only=0 speeds="" base_steps=2733
names=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --speed-only) speed_only=1; shift ;;
        --speeds) speeds=$2; shift 2 ;;
        --base-steps) base_steps=$2; shift 2 ;;
        -*) echo "usage: scripts/ablations.sh [--out DIR] [--speeds FILE] [--base-steps N] [--speed-only] NAME..." >&2
            exit 2 ;;
        *) names+=("$1"); shift ;;
    esac
done
[ ${#names[@]} -gt 0 ] || { echo "scripts/ablations.sh: name at least one run" >&2; exit 2; }
bin=${DIFFUSE:-build/diffuse}
[ -x "$bin" ] || { echo "scripts/ablations.sh: $bin not found (run make first)" >&2; exit 1; }
mkdir -p "$out/configs"
speeds=${speeds:-$out/speed.tsv}

# the network's configs: fmnist-xs and two widths of it
rm -rf "$out/xs-init"
"$bin" init --preset fmnist-xs "$out/xs-init" > /dev/null
for w in "narrow 24 48 96" "wide 48 96 192" "xs 32 64 128"; do
    read -r -a f <<< "$w"
    set -- "${f[@]}"
    /usr/bin/python3 -c 'import json, sys
c = json.load(open(sys.argv[1])); c["block_out_channels"] = [int(v) for v in sys.argv[3:6]]
json.dump(c, open(sys.argv[2], "w"), indent=2)' "$out/xs-init/config.json" "$out/configs/$1.json" "$2" "$3" "$4"
done

# make run's recipe and sampler, from the Makefile
optim=$(make -s print-RUN_OPTIM)
recipe="$(make -s print-RUN_COND) $optim"
sampler="$(make -s print-RUN_SAMPLER) --metrics fd,kid,pr,classes"
args_of() {   # the training options of a run, less the budget
    case "$1" in
        base) echo "--config $out/configs/xs.json $recipe" ;;
        b32) echo "--config $out/configs/xs.json $recipe --batch 32" ;;
        b128) echo "--config $out/configs/xs.json $recipe --batch 128" ;;
        beta1-0.9) echo "--config $out/configs/xs.json $recipe --beta1 0.9" ;;
        beta2-0.99) echo "--config $out/configs/xs.json $recipe --beta2 0.99" ;;
        warmup-0) echo "--config $out/configs/xs.json $(sed 's/--warmup [0-9]*/--warmup 0/' <<< "$recipe")" ;;
        warmup-500) echo "--config $out/configs/xs.json $(sed 's/--warmup [0-9]*/--warmup 500/' <<< "$recipe")" ;;
        ema-0.999) echo "--config $out/configs/xs.json $recipe --ema-decay 0.999" ;;
        no-ema) echo "--config $out/configs/xs.json $recipe --no-ema" ;;
        narrow) echo "--config $out/configs/narrow.json $recipe" ;;
        wide) echo "--config $out/configs/wide.json $recipe" ;;
        uncond-eps) echo "--config $out/configs/xs.json $optim" ;;
        uncond-lv) echo "--config $out/configs/xs.json $optim --learn-variance" ;;
        uncond-snr5) echo "--config $out/configs/xs.json $optim --min-snr-gamma 5" ;;
        *) echo "scripts/ablations.sh: unknown run $1" >&2; return 2 ;;
    esac
}
eval_of() {   # what a run is scored on
    case "$1" in
        uncond-*) echo "--sampler dpmpp-2m --steps 20 --metrics fd,kid,pr,classes,bpd --bpd-timesteps 100" ;;
        *) echo "$sampler" ;;
    esac
}
batch_of() { case "$1" in b32) echo 32 ;; b128) echo 128 ;; *) echo 64 ;; esac; }
speed_as() {   # whose speed a run's budget takes: its own if its arithmetic differs from the base's
    case "$1" in b32 | b128 | narrow | wide) echo "$1" ;; *) echo base ;; esac
}

speed() {   # images/s of a run's settings on the idle machine, measured once
    local name=$1 ips
    ips=$(awk -v n="$name" '$1 == n { print $2 }' "$speeds" 2> /dev/null || true)
    if [ -z "$ips" ]; then
        local best=0
        for _ in 1 2; do
            rm -rf "$out/speed-run"
            # shellcheck disable=SC2046
            "$bin" train $(args_of "$name") --steps 60 --threads 2 --save-every 0 --sample-every 0 \
                --out "$out/speed-run" > "$out/speed.log" 2>&1
            ips=$(awk -F, -v b="$(batch_of "$name")" 'NR > 1 && $1 == 10 { a = $12 } NR > 1 { s = $1; t = $12 }
                END { printf "%.1f", b * (s - 10) / (t - a) }' "$out/speed-run/loss.csv")
            best=$(awk -v a="$ips" -v b="$best" 'BEGIN { print (a > b) ? a : b }')
        done
        rm -rf "$out/speed-run"
        ips=$best
        echo "$name $ips" >> "$speeds"
    fi
    echo "$ips"
}

isa=AVX2
grep -q avx512f /proc/cpuinfo && isa=AVX-512
grep -q avx512_bf16 /proc/cpuinfo && isa="AVX-512 with bf16"
echo "# machine: $isa, $(nproc) cores"
for name in "${names[@]}"; do
    args_of "$name" > /dev/null
    ips=$(speed "$(speed_as "$name")")
    steps=$(awk -v s="$ips" -v s0="$(speed base)" -v n="$base_steps" -v b="$(batch_of "$name")" \
        'BEGIN { printf "%d", n * s / s0 * 64 / b + 0.5 }')
    echo "== $name: $ips images/s idle (base $(speed base)), $steps steps of $(batch_of "$name")"
    [ "$speed_only" = 1 ] && continue
    run=$out/$name
    if ! grep -q "^$steps," "$run/loss.csv" 2> /dev/null; then
        if [ -e "$run/latest" ]; then
            "$bin" train --resume --steps "$steps" --threads 1 --out "$run" >> "$run.log" 2>&1
        else
            rm -rf "$run"
            # shellcheck disable=SC2046
            "$bin" train $(args_of "$name") --steps "$steps" --threads 1 --seed 0 --eval-every 500 --save-every 500 \
                --sample-every 0 --out "$run" > "$run.log" 2>&1
        fi
    fi
    if [ ! -s "$run.eval.json" ]; then
        # shellcheck disable=SC2046
        "$bin" eval "$run" $(eval_of "$name") --threads 1 --json > "$run.eval.json.tmp"
        mv "$run.eval.json.tmp" "$run.eval.json"
    fi
    echo "== $name: $run.eval.json"
done
