#!/usr/bin/python3
"""Parity of the C UNet2DConditionModel with the float64 reference (unet_cond_ref.py), through
`diffuse predict --grads MODEL in.safetensors out.safetensors` with encoder_hidden_states in the input file.

Cases: diffusers' own tiny test config (block_out_channels (32, 64), layers_per_block 2, cross_attention_dim 32,
attention_head_dim 8); a Stable-Diffusion-1.5-shaped config at reduced width (four levels, three of them
cross-attention, 77 text tokens); a Stable-Diffusion-2-shaped one (linear projections, heads and transformer
layers per block, class labels). Compares eps (1e-4 of its largest value), grad_x, grad_encoder_hidden_states
and every parameter gradient (1e-3 of that tensor's largest value; a gradient that is zero in exact arithmetic,
as a time projection's before a GroupNorm of one channel per group, against its weight's or the model's largest).
Ends with "N passed, N failed".

usage: cond_parity.py [--bin build/diffuse] [--keep DIR]
"""
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import unet_ref as R  # noqa: E402
from unet_cond_ref import UNet2DConditionRef  # noqa: E402

EPS_TOL, GRAD_TOL = 1e-4, 1e-3

CASES = [
    ("diffusers tiny", {"block_out_channels": [32, 64], "layers_per_block": 2, "sample_size": 32, "in_channels": 4,
                        "out_channels": 4, "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
                        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "cross_attention_dim": 32,
                        "attention_head_dim": 8}, dict(N=2, H=16, W=16, L=7)),
    ("SD-1.5 shape", {"block_out_channels": [32, 64, 96, 96], "norm_num_groups": 8, "cross_attention_dim": 48,
                      "attention_head_dim": 8, "in_channels": 4, "out_channels": 4}, dict(N=1, H=16, W=16, L=77)),
    ("SD-2 shape", {"block_out_channels": [16, 32, 32], "norm_num_groups": 8, "cross_attention_dim": 24,
                    "attention_head_dim": [2, 4, 4], "transformer_layers_per_block": [1, 2, 1],
                    "use_linear_projection": True, "upcast_attention": True, "num_class_embeds": 3,
                    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
                    "in_channels": 3, "out_channels": 3}, dict(N=3, H=8, W=12, L=5)),
]


def rel_err(got, ref, scale=None):
    scale = float(np.max(np.abs(ref))) if scale is None else scale
    return float(np.max(np.abs(np.asarray(got, np.float64) - ref))) / max(scale, 1e-30)


def run_case(name, cfg, shape, seed, work, binary):
    rng = np.random.default_rng(seed)
    full = dict(cfg, _class_name="UNet2DConditionModel", _diffusers_version="0.25.1")
    model = UNet2DConditionRef(full).double()
    mdir = os.path.join(work, "model")
    os.makedirs(mdir, exist_ok=True)
    with open(os.path.join(mdir, "config.json"), "w") as f:
        json.dump(full, f, indent=2)
    weights = {}
    for pname, p in model.named_parameters():
        z = rng.standard_normal(tuple(p.shape))
        if p.dim() >= 2:
            v = z / math.sqrt(int(np.prod(p.shape[1:])))
        elif "norm" in pname and pname.endswith(".weight"):
            v = 1.0 + 0.1 * z
        else:
            v = 0.1 * z
        weights[pname] = v.astype(np.float32)
    wpath = os.path.join(mdir, "diffusion_pytorch_model.safetensors")
    R.write_safetensors(wpath, weights, metadata={"format": "pt"})
    R.load_weights(model, R.read_safetensors(wpath)[0])
    N, H, W, L = shape["N"], shape["H"], shape["W"], shape["L"]
    c = model.cfg
    x = rng.standard_normal((N, c["in_channels"], H, W)).astype(np.float32)
    t = rng.integers(0, 1000, size=N).astype(np.int64)
    ctx = rng.standard_normal((N, L, c["cross_attention_dim"])).astype(np.float32)
    labels = rng.integers(0, c["num_class_embeds"], size=N).astype(np.int64) if c["num_class_embeds"] else None
    grad_out = rng.standard_normal((N, c["out_channels"], H, W)).astype(np.float32)
    inputs = {"x": x, "t": t, "encoder_hidden_states": ctx, "grad_out": grad_out}
    if labels is not None:
        inputs["class_labels"] = labels
    in_path, out_path = os.path.join(work, "in.safetensors"), os.path.join(work, "out.safetensors")
    R.write_safetensors(in_path, inputs)

    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    ct = torch.tensor(ctx, dtype=torch.float64, requires_grad=True)
    eps = model(xt, torch.as_tensor(t), ct, None if labels is None else torch.as_tensor(labels))
    (eps * torch.tensor(grad_out, dtype=torch.float64)).sum().backward()
    proc = subprocess.run([binary, "predict", "--grads", mdir, in_path, out_path], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        return False, "diffuse exited %d: %s" % (proc.returncode, (proc.stderr.strip().splitlines() or ["?"])[-1])
    got = R.read_safetensors(out_path)[0]
    problems = []
    e_eps = rel_err(got["eps"], eps.detach().numpy())
    e_gx = rel_err(got["grad_x"], xt.grad.numpy())
    e_gc = rel_err(got["grad_encoder_hidden_states"], ct.grad.numpy()) if "grad_encoder_hidden_states" in got else 1e9
    if not e_eps <= EPS_TOL:
        problems.append("eps %.2e" % e_eps)
    if not (e_gx <= GRAD_TOL and e_gc <= GRAD_TOL):
        problems.append("grad_x %.2e, grad_encoder_hidden_states %.2e" % (e_gx, e_gc))
    grads = {n: p.grad.numpy() for n, p in model.named_parameters()}
    gmax = max(float(np.max(np.abs(v))) for v in grads.values())
    worst, worst_name, missing = 0.0, "", []
    for pname, ref in grads.items():
        key = "grad." + pname
        if key not in got:
            missing.append(pname)
            continue
        scale = float(np.max(np.abs(ref)))
        if scale <= 1e-6 * gmax:   # zero in exact arithmetic: measure against the module's weight, or the largest
            sib = grads.get(pname.rsplit(".", 1)[0] + ".weight")
            sscale = float(np.max(np.abs(sib))) if sib is not None else 0.0
            scale = sscale if sscale > 1e-6 * gmax else gmax
        e = rel_err(got[key], ref, scale)
        if e > worst:
            worst, worst_name = e, pname
    extra = sorted(k for k in got if k.startswith("grad.") and k[5:] not in grads)
    if missing or extra:
        problems.append("%d gradients missing (%s), %d unexpected (%s)" % (len(missing), missing[:2], len(extra),
                                                                          extra[:2]))
    if not worst <= GRAD_TOL:
        problems.append("param grad %s %.2e" % (worst_name, worst))
    summary = "%s: eps %.2e, grad_x %.2e, grad_encoder_hidden_states %.2e, %d parameter gradients, worst %.2e (%s)" % (
        name, e_eps, e_gx, e_gc, len(grads), worst, worst_name)
    return not problems, summary + (" | " + "; ".join(problems) if problems else "")


def main():
    args = sys.argv[1:]
    opts = dict(zip(args[::2], args[1::2]))
    binary = opts.get("--bin", "build/diffuse")
    keep = opts.get("--keep")
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, cfg, shape) in enumerate(CASES):
            work = os.path.join(keep or tmp, "case-%d" % k)
            os.makedirs(work, exist_ok=True)
            ok, msg = run_case(name, cfg, shape, 100 + k, work, binary)
            print(("ok   " if ok else "FAIL ") + msg, flush=True)
            passed, failed = passed + ok, failed + (not ok)
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
