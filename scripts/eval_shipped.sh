#!/bin/sh
# The README's quality numbers: every evaluation of the shipped models, each writing one JSON file into
# OUT (default runs/eval-shipped). Run from the repository root after `make`. About 90 minutes on 2 cores.
set -eu
OUT=${1:-runs/eval-shipped}
D=build/diffuse
mkdir -p "$OUT"
run() {   # name, then the eval arguments
    name=$1
    shift
    if [ -s "$OUT/$name.json" ]; then echo "== $name: done before"; return; fi
    echo "== $name: diffuse eval $*"
    $D eval "$@" --json > "$OUT/$name.json.tmp" && mv "$OUT/$name.json.tmp" "$OUT/$name.json"
}
# the unconditional model: FD, KID, precision/recall of 1,000 samples (DDIM 50), the sampler sweep, bits/dim
run fmnist-s models/fmnist-s
run fmnist-s-sweep models/fmnist-s --sweep samplers --plot docs/images/fmnist-s-sweep.png
run fmnist-s-bpd models/fmnist-s --metrics bpd --bpd-timesteps 100 --state "$OUT/fmnist-s-bpd-state.json"
# the class-conditional model per guidance scale (DDIM 25), with class accuracy; CAS at 1 and 3
for w in 1 2 3 5; do
    run fmnist-s-cond-w$w models/fmnist-s-cond --guidance $w --steps 25 --metrics fd,kid,pr,acc
done
run fmnist-s-cond-cas-w3 models/fmnist-s-cond --guidance 3 --steps 25 --metrics cas
run fmnist-s-cond-cas-w1 models/fmnist-s-cond --guidance 1 --steps 25 --metrics cas
echo "results in $OUT"
