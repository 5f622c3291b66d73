#!/bin/bash
# A text-to-image model trained from scratch in about a minute: 8x8 coloured shapes with captions ("red
# square", "a green circle"...), a tokenizer learned from the captions by tests/ref/clip_bpe_ref.py, then
# `diffuse train --captions` (a new 2-layer text encoder trained with the U-Net) and `diffuse sample --prompts`
# at guidance 3: the picture in docs/text-to-image.md (each image drawn 8 times larger).
#
# usage: scripts/text_shapes_demo.sh [OUT_DIR]   (from the repository root, after make; default runs/shapes)
set -euo pipefail
out=${1:-runs/shapes}
bin=${DIFFUSE:-build/diffuse}
[ -x "$bin" ] || { echo "scripts/text_shapes_demo.sh: $bin not found (run make first)" >&2; exit 1; }
mkdir -p "$out"
/usr/bin/python3 - "$out" <<'EOF'
import json, os, random, sys
import numpy as np
from PIL import Image
out = sys.argv[1]
os.makedirs(f"{out}/data", exist_ok=True)
rng = random.Random(0)
colours = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
yy, xx = np.mgrid[0:8, 0:8]
with open(f"{out}/data/metadata.jsonl", "w") as meta:
    for k in range(240):
        name, rgb = list(colours.items())[k % 3]
        shape = ["square", "circle"][k // 3 % 2]
        cx, cy = rng.randint(2, 5), rng.randint(2, 5)
        m = (abs(xx - cx) <= 2) & (abs(yy - cy) <= 2) if shape == "square" else (xx - cx) ** 2 + (yy - cy) ** 2 <= 4
        a = np.zeros((8, 8, 3), np.uint8)
        a[m] = rgb
        Image.fromarray(a).save(f"{out}/data/{k:04d}.png")
        meta.write(json.dumps({"file_name": f"{k:04d}.png", "text": [f"{name} {shape}", f"a {name} {shape}"]}) + "\n")
with open(f"{out}/corpus.txt", "w") as f:
    f.write("".join(f"a {c} {s}\n" for c in colours for s in ("square", "circle")) * 20)
with open(f"{out}/unet.json", "w") as f:
    json.dump({"_class_name": "UNet2DModel", "sample_size": 8, "in_channels": 3, "out_channels": 3,
               "block_out_channels": [16, 32], "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
               "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "layers_per_block": 1, "norm_num_groups": 8,
               "attention_head_dim": 16}, f)
with open(f"{out}/prompts.txt", "w") as f:
    f.write("red square\ngreen circle\nblue square\na red circle\n")
EOF
rm -rf "$out/tokenizer" "$out/run"
/usr/bin/python3 tests/ref/clip_bpe_ref.py learn "$out/corpus.txt" "$out/tokenizer" --merges 40 --context 8
"$bin" train --data "$out/data" --config "$out/unet.json" --captions --tokenizer "$out/tokenizer" \
    --cross-attention-dim 32 --batch 32 --lr 2e-3 --warmup 20 --ema-decay 0.99 --steps 2000 --log-every 100 \
    --sample-every 500 --samples 16 --sample-prompts "$out/prompts.txt" --out "$out/run"
"$bin" sample "$out/run" --prompts "$out/prompts.txt" --n 32 --guidance 3 --steps 20 --seed 0 --out "$out/grid.png"
/usr/bin/python3 -c "
from PIL import Image; import sys
im = Image.open(sys.argv[1]); im.resize((im.width * 8, im.height * 8), Image.NEAREST).save(sys.argv[2])" \
    "$out/grid.png" "$out/grid-x8.png"
echo "wrote $out/grid-x8.png"
