"""Reference noise schedules for tests/test_schedule.c, computed with PyTorch in float64 following the
formulas of diffusers' DDPMScheduler (betas, rescale_zero_terminal_snr, alphas_cumprod) and of its
step() (posterior variance and mean coefficients). Writes tests/ref/schedules.safetensors (F64).

    /usr/bin/python3 tests/ref/schedules.py [OUT]

Each case NAME (see CASES) stores NAME.betas, NAME.alphas_cumprod, NAME.posterior_variance,
NAME.coef1 (on x_0) and NAME.coef2 (on x_t); the file's metadata lists the cases and their parameters.
"""
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from unet_ref import write_safetensors  # noqa: E402

# name, beta_schedule, T, beta_start, beta_end, rescale_betas_zero_snr
CASES = [
    ("linear", "linear", 1000, 1e-4, 0.02, False),
    ("scaled_linear", "scaled_linear", 1000, 0.00085, 0.012, False),
    ("cosine", "squaredcos_cap_v2", 1000, 1e-4, 0.02, False),
    ("sigmoid", "sigmoid", 1000, 1e-4, 0.02, False),
    ("linear_zsnr", "linear", 1000, 1e-4, 0.02, True),
    ("scaled_linear_zsnr", "scaled_linear", 1000, 0.00085, 0.012, True),
    ("cosine_zsnr", "squaredcos_cap_v2", 1000, 1e-4, 0.02, True),
    ("sigmoid_zsnr", "sigmoid", 1000, 1e-4, 0.02, True),
    ("linear_T50", "linear", 50, 1e-3, 0.2, False),
]

F64 = torch.float64


def cosine_betas(T, max_beta=0.999):
    # improved DDPM eq. 17 discretised: beta_i = 1 - abar((i+1)/T) / abar(i/T), capped
    def abar(u):
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    return torch.tensor([min(1 - abar((i + 1) / T) / abar(i / T), max_beta) for i in range(T)], dtype=F64)


def zero_terminal_snr(betas):
    # Lin et al. 2024, alg. 1: shift sqrt(abar) so the last is 0, scale so the first is unchanged
    sq = torch.cumprod(1 - betas, 0).sqrt()
    s0, sT = sq[0].clone(), sq[-1].clone()
    sq = (sq - sT) * (s0 / (s0 - sT))
    ab = sq ** 2
    alphas = torch.cat([ab[0:1], ab[1:] / ab[:-1]])
    return 1 - alphas


def schedule(kind, T, b0, b1, zsnr):
    if kind == "linear":
        betas = torch.linspace(b0, b1, T, dtype=F64)
    elif kind == "scaled_linear":
        betas = torch.linspace(b0 ** 0.5, b1 ** 0.5, T, dtype=F64) ** 2
    elif kind == "squaredcos_cap_v2":
        betas = cosine_betas(T)
    elif kind == "sigmoid":
        betas = torch.sigmoid(torch.linspace(-6, 6, T, dtype=F64)) * (b1 - b0) + b0
    else:
        raise ValueError(kind)
    if zsnr:
        betas = zero_terminal_snr(betas)
    alphas = 1 - betas
    abar = torch.cumprod(alphas, 0)
    prev = torch.cat([torch.ones(1, dtype=F64), abar[:-1]])
    # DDPMScheduler._get_variance (fixed_small, before its 1e-20 clamp) and step()'s coefficients
    var = (1 - prev) / (1 - abar) * betas
    coef1 = prev ** 0.5 * betas / (1 - abar)
    coef2 = alphas ** 0.5 * (1 - prev) / (1 - abar)
    return {"betas": betas, "alphas_cumprod": abar, "posterior_variance": var, "coef1": coef1, "coef2": coef2}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                             "schedules.safetensors")
    tensors, dtypes, meta = {}, {}, {}
    for name, kind, T, b0, b1, zsnr in CASES:
        for key, arr in schedule(kind, T, b0, b1, zsnr).items():
            tensors[name + "." + key] = arr.numpy()
            dtypes[name + "." + key] = "F64"
        meta[name] = "%s %d %.17g %.17g %d" % (kind, T, b0, b1, int(zsnr))
    meta["cases"] = " ".join(c[0] for c in CASES)
    meta["torch"] = torch.__version__
    write_safetensors(out, tensors, dtypes, meta)
    print("wrote", out, len(tensors), "tensors")


if __name__ == "__main__":
    main()
