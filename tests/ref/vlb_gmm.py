"""Reference values for tests/test_diffusion.c's bits/dim test, computed independently of the C code
with PyTorch in float64: the variational bound (DDPM eq. 5, improved DDPM's calc_bpd_loop: prior KL,
Gaussian KL terms, discretised-Gaussian decoder) of the exact continuous-mixture denoiser on a 2-D
Gaussian mixture quantised to 256 levels, as a Monte-Carlo mean over many samples.

    /usr/bin/python3 tests/ref/vlb_gmm.py [N]

Prints, for the fixed-small and fixed-large reverse variances: the expected bound in bits/dim, the
expected gap to the exact entropy (bound minus -log2 P(x_0) / 2 per sample, which has a far smaller
variance than the bound itself), the decoder term L_0, and each one's per-sample standard deviation.
The C test holds these numbers; rerun this if the mixture, the schedule or the bound's definition changes.
"""
import math
import sys

import torch

F64 = torch.float64
T = 1000
# the mixture of make_diag_gmm() in tests/test_diffusion.c
W = torch.tensor([0.45, 0.35, 0.2], dtype=F64)
MU = torch.tensor([[-0.5, -0.4], [0.4, 0.3], [-0.1, 0.55]], dtype=F64)
SD = torch.tensor([[0.15, 0.2], [0.25, 0.12], [0.1, 0.3]], dtype=F64)


def schedule():
    beta = torch.linspace(1e-4, 0.02, T, dtype=F64)
    abar = torch.cumprod(1 - beta, 0)
    prev = torch.cat([torch.ones(1, dtype=F64), abar[:-1]])
    post_var = beta * (1 - prev) / (1 - abar)
    coef1 = prev.sqrt() * beta / (1 - abar)
    coef2 = (1 - beta).sqrt() * (1 - prev) / (1 - abar)
    return beta, abar, post_var, coef1, coef2


def log_bin_mass(lo, hi):
    """log(Phi(hi) - Phi(lo)) through log-CDFs, mirrored into the lower tail when lo > 0."""
    flip = lo > 0
    a = torch.where(flip, -hi, lo)
    b = torch.where(flip, -lo, hi)
    lb, la = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    return lb + torch.log(-torch.expm1(la - lb))


def bin_edges(x):
    lo = torch.where(x < -0.999, torch.full_like(x, -math.inf), x - 1 / 255)
    hi = torch.where(x > 0.999, torch.full_like(x, math.inf), x + 1 / 255)
    return lo, hi


def log2_pmf(x0):
    """log2 P(x_0) of the quantised mixture: per component the coordinates are independent."""
    lo, hi = bin_edges(x0)                                    # (n, 2)
    lp = log_bin_mass((lo[:, None, :] - MU) / SD, (hi[:, None, :] - MU) / SD).sum(-1) + torch.log(W)
    return torch.logsumexp(lp, -1) / math.log(2)


def posterior_mean_x0(xt, abar):
    """E[x_0 | x_t] under the continuous mixture (Gaussian conditioning per component, responsibilities)."""
    a = math.sqrt(abar)
    var = abar * SD ** 2 + (1 - abar)                          # (K, 2)
    diff = xt[:, None, :] - a * MU                             # (n, K, 2)
    logr = torch.log(W) - 0.5 * (diff ** 2 / var + torch.log(var)).sum(-1)
    r = torch.softmax(logr, -1)
    m = MU + a * SD ** 2 / var * diff
    return (r[..., None] * m).sum(1)


def bound(x0, large, gen):
    beta, abar, post_var, coef1, coef2 = schedule()
    to_bpd = 1 / (2 * math.log(2))
    ab = abar[-1]
    total = 0.5 * (-(ab + torch.log1p(-ab)) + ab * x0 ** 2).sum(1) * to_bpd    # L_T
    L0 = None
    for t in range(T - 1, -1, -1):
        noise = torch.randn(x0.shape, dtype=F64, generator=gen)
        xt = abar[t].sqrt() * x0 + (1 - abar[t]).sqrt() * noise
        xh = posterior_mean_x0(xt, abar[t].item()).clamp(-1, 1)
        if t == 0:
            sd = post_var[1].sqrt()
            mean = coef1[0] * xh + coef2[0] * xt
            lo, hi = bin_edges(x0)
            L0 = -log_bin_mass((lo - mean) / sd, (hi - mean) / sd).sum(1) * to_bpd
            total = total + L0
        else:
            vq = post_var[t]
            vp = beta[t] if large else post_var[t]
            mq = coef1[t] * x0 + coef2[t] * xt
            mp = coef1[t] * xh + coef2[t] * xt
            kl = 0.5 * (vq / vp - 1 - torch.log(vq / vp) + (mq - mp) ** 2 / vp)
            total = total + kl.sum(1) * to_bpd
    return total, L0


def entropy_bpd():
    """Exact entropy of the quantised mixture in bits/dim: -sum P log2 P over the 256 x 256 grid, / 2."""
    levels = torch.arange(256, dtype=F64) / 127.5 - 1
    lo, hi = bin_edges(levels)
    # (K, 2, 256) per-coordinate bin masses of each component
    mass = torch.exp(log_bin_mass((lo - MU[..., None]) / SD[..., None], (hi - MU[..., None]) / SD[..., None]))
    P = (W[:, None, None] * mass[:, 0, :, None] * mass[:, 1, None, :]).sum(0)
    P = P[P > 0]
    return float(-(P * torch.log2(P)).sum() / 2), float(P.sum())


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200000
    H, total_mass = entropy_bpd()
    print("exact entropy %.6f bits/dim (total mass %.15f)" % (H, total_mass))
    gen = torch.Generator().manual_seed(1)
    comp = torch.multinomial(W, n, replacement=True, generator=gen)
    x0 = MU[comp] + SD[comp] * torch.randn(n, 2, dtype=F64, generator=gen)
    x0 = torch.clamp(torch.round((x0 + 1) * 127.5), 0, 255) / 127.5 - 1
    nll = -log2_pmf(x0) / 2
    print("n = %d; sample mean of -log2 P(x0) / 2 = %.5f (the entropy is its expectation)" % (n, nll.mean()))
    for large in (False, True):
        total, L0 = bound(x0, large, gen)
        gap = total - nll
        name = "fixed large" if large else "fixed small"
        print("%s: bound %.5f (sd %.4f)  gap %.5f (sd %.4f)  L_0 %.5f (sd %.4f)" % (
            name, total.mean(), total.std(), gap.mean(), gap.std(), L0.mean(), L0.std()))


if __name__ == "__main__":
    main()
