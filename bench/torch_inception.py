#!/usr/bin/python3
"""The PyTorch side of bench/inception.c: pytorch-fid's FID Inception-v3 (the model in
tests/ref/inception_ref.py, the same blocks and names) in float32 on the CPU with Debian's python3-torch,
weights from the same safetensors file, images from the same file, preprocessed as pytorch-fid does
(bilinear resize to 299x299, in batches of --batch like its --batch-size). Prints one JSON object.

usage: bench/torch_inception.py WEIGHTS.safetensors IMAGES.safetensors --threads T [--iters K]
                                [--batch B] [--out FEATURES.f32]
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref"))
from inception_ref import FIDInception, pytorch_fid_features  # noqa: E402


def read_safetensors(path):
    """{name: float32 array} of an F32 safetensors file."""
    with open(path, "rb") as f:
        blob = f.read()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    base, out = 8 + n, {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        if e["dtype"] != "F32":
            sys.exit(f"{path}: {name} is {e['dtype']}, expected F32")
        b, end = e["data_offsets"]
        out[name] = np.frombuffer(blob[base + b:base + end], dtype="<f4").reshape(e["shape"])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("weights")
    ap.add_argument("images")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--out", help="write the features (n, 2048) as raw float32 here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = FIDInception().float().eval()
    w = read_safetensors(a.weights)
    sd = model.state_dict()
    for k in sd:
        if not k.endswith("num_batches_tracked"):
            sd[k] = torch.from_numpy(w[k].copy())
    model.load_state_dict(sd)
    x = torch.from_numpy(read_safetensors(a.images)["images"].copy())

    def run():
        return torch.cat([pytorch_fid_features(model, x[i:i + a.batch]) for i in range(0, len(x), a.batch)])

    with torch.no_grad():
        run()  # warm up: oneDNN picks and caches its kernels on the first call
        times = []
        for _ in range(a.iters):
            t0 = time.perf_counter()
            f = run()
            times.append(time.perf_counter() - t0)
    if a.out:
        f.numpy().astype("<f4").tofile(a.out)
    print(json.dumps({"images": len(x), "seconds": times, "images_per_sec": len(x) / min(times),
                      "mkldnn": torch.backends.mkldnn.is_available(), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
