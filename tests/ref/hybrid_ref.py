#!/usr/bin/python3
"""Improved DDPM's learned variances and hybrid loss (Nichol & Dhariwal 2021, sec. 3.1) in float64 PyTorch,
from the paper's formulas (diffusers is not needed), on the inputs a C test wrote, for
tests/test_learned_variance.c:

    /usr/bin/python3 tests/ref/hybrid_ref.py IN OUT

IN holds x0, xt, target (N, D), out (N, 2D): the prediction then v, t (N), weights and simple_weights (N)
and params = [prediction (0 eps, 1 sample, 2 v), T, beta_start, beta_end, vlb_weight] for a linear schedule.
OUT gets logvar (N, D): frac log beta_t + (1 - frac) log beta~_t (clipped), frac = (v + 1) / 2; simple and
vlb (N): mean((pred - target)^2) and the bound's term in bits/dim (KL for t > 0, the discretised decoder's
NLL for t = 0), p's mean from the prediction under a stop-gradient (detach); loss (1): mean_i w_i (ws_i
simple_i + vlb_weight T vlb_i); grad (N, 2D): d loss / d out by autograd."""
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from unet_ref import read_safetensors, write_safetensors  # noqa: E402

torch.set_default_dtype(torch.float64)


def schedule(T, b0, b1):
    betas = torch.linspace(b0, b1, T, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    prev = torch.cat([torch.ones(1), abar[:-1]])
    post_var = betas * (1 - prev) / (1 - abar)
    # DDPM / improved DDPM: the t = 0 entry (0) takes the t = 1 value before the log
    post_logvar = torch.log(torch.cat([post_var[1:2], post_var[1:]]))
    coef1 = betas * torch.sqrt(prev) / (1 - abar)
    coef2 = (1 - prev) * torch.sqrt(1 - betas) / (1 - abar)
    return betas, abar, post_logvar, coef1, coef2


def log_bin_prob(x, mean, logvar):
    """log P(x's 256-level bin) under N(mean, exp(logvar)), end bins open (DDPM eq. 13), exact normal CDF."""
    sd = torch.exp(0.5 * logvar)
    lo = (x - 1.0 / 255 - mean) / sd
    hi = (x + 1.0 / 255 - mean) / sd
    mid = torch.log(torch.clamp(torch.special.ndtr(hi) - torch.special.ndtr(lo), min=1e-300))
    return torch.where(x < -0.999, torch.special.log_ndtr(hi),
                       torch.where(x > 0.999, torch.special.log_ndtr(-lo), mid))


def main():
    t_, _ = read_safetensors(sys.argv[1])
    f = {k: torch.tensor(np.asarray(v, dtype=np.float64)) for k, v in t_.items()}
    pred_kind, T, b0, b1, lam = [float(v) for v in f["params"]]
    T = int(T)
    betas, abar, plv, c1, c2 = schedule(T, b0, b1)
    t = f["t"].long()
    x0, xt, target = f["x0"], f["xt"], f["target"]
    n, D = x0.shape
    out = f["out"].clone().requires_grad_(True)
    pred, v = out[:, :D], out[:, D:]
    a = torch.sqrt(abar[t])[:, None]
    s = torch.sqrt(1 - abar[t])[:, None]
    fz = pred.detach()   # the stop-gradient: L_vlb trains only the variance
    if pred_kind == 0:
        x0hat = (xt - s * fz) / a
    elif pred_kind == 1:
        x0hat = fz
    else:
        x0hat = a * xt - s * fz
    frac = (v + 1) / 2
    logvar = frac * torch.log(betas[t])[:, None] + (1 - frac) * plv[t][:, None]
    mean_q = c1[t][:, None] * x0 + c2[t][:, None] * xt
    mean_p = c1[t][:, None] * x0hat + c2[t][:, None] * xt
    lq = plv[t][:, None]
    kl = 0.5 * (-1 + logvar - lq + torch.exp(lq - logvar) + (mean_q - mean_p) ** 2 * torch.exp(-logvar))
    dec = -log_bin_prob(x0, mean_p, logvar)
    vlb = torch.where((t == 0)[:, None], dec, kl).mean(1) / math.log(2.0)
    simple = ((pred - target) ** 2).mean(1)
    loss = (f["weights"] * (f["simple_weights"] * simple + lam * T * vlb)).mean()
    loss.backward()
    res = {"logvar": logvar.detach(), "simple": simple.detach(), "vlb": vlb.detach(),
           "loss": loss.detach().reshape(1), "grad": out.grad}
    write_safetensors(sys.argv[2], {k: v.numpy().astype(np.float32) for k, v in res.items()})


if __name__ == "__main__":
    main()
