#!/usr/bin/python3
"""The PyTorch side of the benchmark: the same UNet2DModel (tests/ref/unet_ref.py, diffusers' structure and
parameter names) in float32 on the CPU with Debian's python3-torch, doing the same work as bench/unet.c.
One measurement per run (so peak memory belongs to it); prints one JSON object.

  train    forward, MSE against the noise, backward, gradient clipping at 1, AdamW step
  sample   DDIM (eta 0, leading spacing) over --steps steps from pure noise, linear betas, 1000 steps
  forward  one forward pass without gradients

usage: bench/torch_unet.py CONFIG.json --mode train|sample|forward --batch B --threads T [--iters K] [--steps S]
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref"))
from unet_ref import UNet2DRef  # noqa: E402


def times(fn, iters):
    fn()  # warm up: oneDNN picks and caches its kernels on the first call
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def ddim(eps_fn, y, steps):
    """DDIM (eta 0, leading spacing) from y over `steps` of the 1000-step linear schedule; eps_fn(y, k)."""
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    ks = list(range(0, 1000, 1000 // steps))[::-1]
    for i, k in enumerate(ks):
        eps = eps_fn(y, k)
        prev = ks[i + 1] if i + 1 < len(ks) else -1
        ab, abp = abar[k].item(), (abar[prev].item() if prev >= 0 else 1.0)
        x0 = (y - (1 - ab) ** 0.5 * eps) / ab ** 0.5
        y = abp ** 0.5 * x0 + (1 - abp) ** 0.5 * eps
    return y


def report(a, size, ts):
    """The measurement as one JSON line: best and median seconds, images/s, peak memory."""
    print(json.dumps({
        "torch": torch.__version__, "mode": a.mode, "threads": a.threads, "batch": a.batch, "size": size,
        "best_sec": min(ts), "median_sec": statistics.median(ts), "img_per_sec": a.batch / min(ts),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--mode", choices=["train", "sample", "forward"], required=True)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--size", type=int, default=0, help="image size (default: the config's sample_size)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    with open(a.config) as f:
        cfg = json.load(f)
    model = UNet2DRef(cfg).float()
    s, c = a.size or cfg["sample_size"], cfg["in_channels"]
    x = torch.randn(a.batch, c, s, s)
    t = torch.randint(0, 1000, (a.batch,))
    noise = torch.randn_like(x)

    if a.mode == "forward":
        model.eval()
        with torch.no_grad():
            ts = times(lambda: model(x, t), a.iters)
    elif a.mode == "train":
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.mse_loss(model(x, t), noise)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

        ts = times(step, a.iters)
    else:
        model.eval()
        with torch.no_grad():
            model(x, t)  # warm up the kernels; the timed run is one whole sampling run
            t0 = time.perf_counter()
            ddim(lambda y, k: model(y, torch.full((a.batch,), k)), torch.randn_like(x), a.steps)
            ts = [time.perf_counter() - t0]
    report(a, s, ts)


if __name__ == "__main__":
    main()
