#!/usr/bin/python3
"""The PyTorch side of the benchmark: the same UNet2DModel (tests/ref/unet_ref.py, diffusers' structure)
in float32 on the CPU with Debian's python3-torch, timed like bench/unet.c. Prints one JSON object.

usage: bench/torch_unet.py CONFIG.json --batch B --threads T [--iters K] [--sample-batch S] [--sample-steps N]
"""
import argparse
import json
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref"))
from unet_ref import UNet2DRef  # noqa: E402


def timed(fn, iters):
    fn()  # warm up: oneDNN picks and caches its primitives on the first call
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--sample-batch", type=int, default=0)
    ap.add_argument("--sample-steps", type=int, default=50)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    with open(a.config) as f:
        cfg = json.load(f)
    model = UNet2DRef(cfg).float()
    s, c = cfg["sample_size"], cfg["in_channels"]
    x = torch.randn(a.batch, c, s, s)
    t = torch.randint(0, 1000, (a.batch,))
    noise = torch.randn_like(x)
    out = {"torch": torch.__version__, "threads": a.threads, "batch": a.batch}

    model.eval()
    with torch.no_grad():
        out["forward_sec"] = timed(lambda: model(x, t), a.iters)
    out["forward_img_per_sec"] = a.batch / out["forward_sec"]

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x, t), noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    out["train_sec"] = timed(step, a.iters)
    out["train_img_per_sec"] = a.batch / out["train_sec"]

    if a.sample_batch > 0:
        model.eval()
        xs = torch.randn(a.sample_batch, c, s, s)

        def sample():
            y = xs
            for k in range(a.sample_steps):  # the network calls of a DDIM run; the update is negligible
                y = model(y, torch.full((a.sample_batch,), 999 - 20 * k)) * 0.0 + y
            return y

        with torch.no_grad():
            out["sample_sec"] = timed(sample, 1)
        out["sample_img_per_sec"] = a.sample_batch / out["sample_sec"]
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps(out))


if __name__ == "__main__":
    main()
