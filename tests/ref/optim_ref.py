#!/usr/bin/python3
"""PyTorch's own optimizers on the inputs a C test wrote: p0 (P,) and grads (STEPS, P) in IN, final
parameters per setting in OUT. The settings mirror tests/test_optim.c: AdamW and SGD (momentum,
Nesterov), torch.nn.utils.clip_grad_norm_, and transformers-style warmup with cosine / linear decay
built from torch.optim.lr_scheduler.LambdaLR, stepped after each optimizer step as diffusers does."""
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from unet_ref import read_safetensors, write_safetensors  # noqa: E402


def lr_lambda(warmup, total, decay):
    def f(step):
        if step < warmup:
            return step / max(1, warmup)
        if decay == "constant" or total <= warmup:
            return 1.0
        progress = min(1.0, (step - warmup) / (total - warmup))
        if decay == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return f


def run(p0, grads, kind, lr, wd, warmup, total, decay, clip, betas=(0.95, 0.999), eps=1e-8, momentum=0.0,
        nesterov=False):
    p = torch.nn.Parameter(torch.tensor(p0, dtype=torch.float32))
    if kind == "adamw":
        opt = torch.optim.AdamW([p], lr=lr, betas=betas, eps=eps, weight_decay=wd)
    else:
        opt = torch.optim.SGD([p], lr=lr, momentum=momentum, weight_decay=wd, nesterov=nesterov)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup, total, decay))
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float32)
        if clip > 0:
            torch.nn.utils.clip_grad_norm_([p], clip)
        opt.step()
        sched.step()
    return p.detach().numpy().copy()


def main():
    t, _ = read_safetensors(sys.argv[1])
    p0, grads = t["p0"], t["grads"]
    steps = grads.shape[0]
    out = {
        "adamw": run(p0, grads, "adamw", 1e-2, 0.1, 4, steps, "cosine", 5.0),
        "adamw_constant": run(p0, grads, "adamw", 3e-3, 1e-6, 0, steps, "constant", 0.0),
        "sgd": run(p0, grads, "sgd", 1e-2, 1e-3, 3, steps, "linear", 5.0, momentum=0.9),
        "sgd_nesterov": run(p0, grads, "sgd", 5e-3, 0.0, 0, steps, "constant", 0.0, momentum=0.8, nesterov=True),
    }
    write_safetensors(sys.argv[2], {k: v.astype(np.float32) for k, v in out.items()})


if __name__ == "__main__":
    main()
