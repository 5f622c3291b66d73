#!/bin/sh
# A short train-and-sample run of the real command under valgrind's memcheck: no invalid read or write,
# no use of uninitialised values, no definite leak. Tiny model and data so it takes a minute or two.
# Usage: tests/valgrind.sh [BUILD_DIR]   (a -O1 build without oneDNN: its JIT code confuses memcheck)
set -e
BIN=${1:-build-valgrind}/diffuse
DIR=$(mktemp -d /tmp/diffuse-valgrind-XXXXXX)
trap 'rm -rf "$DIR"' EXIT
# 16 gray 8x8 images (IDX) with labels, and a two-level model with attention
{ printf '\000\000\010\003\000\000\000\020\000\000\000\010\000\000\000\010'; head -c 1024 /dev/zero | tr '\000' '\177'; } \
    > "$DIR/tiny-images-idx3-ubyte"
{ printf '\000\000\010\001\000\000\000\020'; printf '\000\001\002\003\000\001\002\003\000\001\002\003\000\001\002\003'; } \
    > "$DIR/tiny-labels-idx1-ubyte"
cat > "$DIR/config.json" <<'JSON'
{"_class_name": "UNet2DModel", "sample_size": 8, "in_channels": 1, "out_channels": 1,
 "block_out_channels": [8, 16], "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
 "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "layers_per_block": 1, "norm_num_groups": 4,
 "attention_head_dim": 8}
JSON
VG="valgrind --suppressions=$(dirname "$0")/valgrind.supp --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite -q"
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
$VG "$BIN" train --data "$DIR/tiny-images-idx3-ubyte" --config "$DIR/config.json" --steps 4 --batch 4 \
    --save-every 2 --samples 4 --sample-steps 3 --out "$DIR/run" > "$DIR/train.log" 2>&1 || { cat "$DIR/train.log"; exit 1; }
$VG "$BIN" sample "$DIR/run" --n 4 --steps 3 --out "$DIR/s.png" > "$DIR/sample.log" 2>&1 || { cat "$DIR/sample.log"; exit 1; }
$VG "$BIN" info "$DIR/run" > "$DIR/info.log" 2>&1 || { cat "$DIR/info.log"; exit 1; }
test -s "$DIR/s.png"
echo "valgrind: train, sample and info clean"
