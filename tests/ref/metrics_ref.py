#!/usr/bin/python3
# The metrics of diffuse against an independent NumPy / SciPy / PyTorch computation on the same feature
# vectors: FD as pytorch-fid computes it (scipy.linalg.sqrtm), KID on whole sets with its jackknife, and
# precision/recall (Kynkaanniemi et al. 2019) from torch.cdist in float64.
"""Usage (from the repo root, after `make build/libdiffuse.a`):
    /usr/bin/python3 tests/ref/metrics_ref.py
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import scipy.linalg
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# the library's link line, as the Makefile has it
LDLIBS = subprocess.run(["make", "-s", "-C", ROOT, "print-LIB_DEPS"], capture_output=True, text=True,
                        check=True).stdout.split()


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def features(rng, n, d, k, shift, spread):
    """Clustered vectors: k Gaussian clusters, as class-structured network features are."""
    centres = rng.normal(0, 3, (k, d))
    comp = rng.integers(0, k, n)
    return (centres[comp] + shift + spread * rng.normal(0, 1, (n, d))).astype(np.float32)


def fd_ref(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = scipy.linalg.sqrtm(s1.dot(s2), disp=False)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def kid_ref(gen, real):
    g, r = gen.astype(np.float64), real.astype(np.float64)
    d = g.shape[1]
    kgg = (g @ g.T / d + 1) ** 3
    krr = (r @ r.T / d + 1) ** 3
    kgr = (g @ r.T / d + 1) ** 3
    n, m = len(g), len(r)
    sgg = kgg.sum() - np.trace(kgg)
    srr = krr.sum() - np.trace(krr)
    value = sgg / (n * (n - 1)) + srr / (m * (m - 1)) - 2 * kgr.sum() / (n * m)
    # jackknife over the generated vectors
    rows = kgg.sum(1) - np.diag(kgg)
    cross = kgr.sum(1)
    loo = (sgg - 2 * rows) / ((n - 1) * (n - 2)) + srr / (m * (m - 1)) - 2 * (kgr.sum() - cross) / ((n - 1) * m)
    se = np.sqrt((n - 1) / n * ((loo - loo.mean()) ** 2).sum())
    return float(value), float(se)


def pr_ref(real, gen, k):
    r = torch.from_numpy(real.astype(np.float64))
    g = torch.from_numpy(gen.astype(np.float64))
    drr = torch.cdist(r, r)
    dgg = torch.cdist(g, g)
    # k-th nearest neighbour other than itself: the (k+1)-th smallest including the zero self-distance
    rad_r = drr.kthvalue(k + 1, dim=1).values
    rad_g = dgg.kthvalue(k + 1, dim=1).values
    dgr = torch.cdist(g, r)
    precision = (dgr <= rad_r[None, :]).any(1).double().mean().item()
    recall = (dgr.T <= rad_g[None, :]).any(1).double().mean().item()
    return precision, recall


def main():
    torch.set_num_threads(2)
    tmp = tempfile.mkdtemp(prefix="diffuse-metrics-")
    exe = os.path.join(tmp, "metrics_features")
    subprocess.run(["cc", "-std=c11", "-O2", "-fopenmp", "-I" + os.path.join(ROOT, "include"), "-I" + os.path.join(ROOT, "src"),
                    os.path.join(ROOT, "tests", "ref", "metrics_features.c"), os.path.join(ROOT, "build", "libdiffuse.a")]
                   + LDLIBS + ["-o", exe], check=True)
    rng = np.random.default_rng(7)
    ok = True
    cases = [("same distribution", 0.0, 1.0, 1000, 1200), ("shifted, wider", 0.4, 1.3, 800, 1000),
             ("128-d, far apart", 1.5, 0.7, 1500, 1500)]
    for name, shift, spread, ng, nr in cases:
        d = 128 if "128" in name else 64
        if shift == 0 and spread == 1:   # two draws from the same clusters
            both = features(np.random.default_rng(12), nr + ng, d, 10, 0.0, 1.0)
            real, gen = both[:nr], both[nr:]
        else:                            # the same clusters, the generated set moved and wider
            real = features(np.random.default_rng(11), nr, d, 10, 0.0, 1.0)
            gen = features(np.random.default_rng(11), ng, d, 10, shift, spread)
        path = os.path.join(tmp, "f.safetensors")
        write_safetensors(path, {"real": real, "gen": gen})
        out = subprocess.run([exe, path], capture_output=True, text=True)
        if out.returncode:
            print("FAIL %s: %s" % (name, out.stderr))
            ok = False
            continue
        c = json.loads(out.stdout)
        fd = fd_ref(real, gen)
        m = min(ng, nr)
        kid, _ = kid_ref(gen[:m], real[:m])
        _, kid_se = kid_ref(gen, real)
        checks = [("fd", c["fd"], fd, 1e-6 * max(1.0, abs(fd))), ("kid", c["kid"], kid, 1e-9 + 1e-7 * abs(kid)),
                  ("kid_se", c["kid_se"], kid_se, 1e-6 * kid_se + 1e-12)]
        for k in (3, 5):
            p, r = pr_ref(real, gen, k)
            # ties at the radius are the only possible difference: allow one vector either way
            checks += [("precision%d" % k, c["precision%d" % k], p, 1.0 / ng + 1e-12),
                       ("recall%d" % k, c["recall%d" % k], r, 1.0 / nr + 1e-12)]
        for what, got, ref, tol in checks:
            good = abs(got - ref) <= tol
            ok &= good
            print("%s %-16s %-11s diffuse %.10g reference %.10g (|diff| %.3g, tol %.3g)"
                  % ("ok  " if good else "FAIL", name, what, got, ref, abs(got - ref), tol))
    print("metrics against NumPy/SciPy/PyTorch: %s" % ("passed" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
