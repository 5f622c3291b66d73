#!/bin/sh
# The README's quality numbers: every evaluation of the shipped models, each writing one JSON file into
# OUT (default runs/eval-shipped). Run from the repository root after `make`; THREADS=N sets the threads.
set -eu
OUT=${1:-runs/eval-shipped}
D=build/diffuse
mkdir -p "$OUT"
run() {   # name, then the eval arguments
    name=$1
    shift
    if [ -s "$OUT/$name.json" ]; then echo "== $name: done before"; return; fi
    echo "== $name: diffuse eval $*"
    # shellcheck disable=SC2086
    $D eval "$@" ${THREADS:+--threads $THREADS} --json > "$OUT/$name.json.tmp" && mv "$OUT/$name.json.tmp" "$OUT/$name.json"
}
# the unconditional model: FD, KID, precision/recall of 1,000 samples with the default sampler (DDIM 50) and
# with DPM-Solver++ (2M) 20 steps (the target), the sampler sweep, bits/dim
run fmnist-s models/fmnist-s
run fmnist-s-dpm20 models/fmnist-s --sampler dpmpp-2m --steps 20 --metrics fd,kid,pr,classes
run fmnist-s-sweep models/fmnist-s --sweep samplers --plot docs/images/fmnist-s-sweep.png
run fmnist-s-bpd models/fmnist-s --metrics bpd --bpd-timesteps 100 --state "$OUT/fmnist-s-bpd-state.json"
# the class-conditional model per guidance scale, with `make run`'s sampler (DPM-Solver++ (2M) 20 steps,
# guidance only at sigma <= 3) and class accuracy; bits/dim; CAS at the README's guidance
run fmnist-s-cond-w1 models/fmnist-s-cond --sampler dpmpp-2m --steps 20 --metrics fd,kid,pr,acc,classes
for w in 2 2.5 3; do
    run fmnist-s-cond-w$w models/fmnist-s-cond --sampler dpmpp-2m --steps 20 --guidance $w --guidance-interval 0,3 --metrics fd,kid,pr,acc,classes
done
run fmnist-s-cond-bpd models/fmnist-s-cond --metrics bpd --bpd-timesteps 100 --state "$OUT/fmnist-s-cond-bpd-state.json"
run fmnist-s-cond-cas-w2 models/fmnist-s-cond --sampler dpmpp-2m --steps 20 --guidance 2 --guidance-interval 0,3 --metrics cas
echo "results in $OUT"
