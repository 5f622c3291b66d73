#!/usr/bin/python3
# Parity of the C U-Net (`diffuse predict --grads`) with the float64 PyTorch reference in unet_ref.py,
# on randomly drawn UNet2DModel configs; `--selfcheck` first proves the reference on the golden vectors.
"""Usage (from the repo root):
    /usr/bin/python3 tests/ref/parity.py --selfcheck
    /usr/bin/python3 tests/ref/parity.py [--count K] [--seed S] [--bin build/diffuse] [--keep DIR]
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import unet_ref as R  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

GOLDEN = os.environ.get("DIFFUSE_GOLDEN", "/work/shared/golden")

EPS_TOL = 1e-4      # eps: max |diff| / max |eps_ref|
GRAD_TOL = 1e-3     # grad_x and each parameter gradient: max |diff| / max |ref| of that tensor
SELF_TOL = 1e-6     # reference vs golden (golden is float64 rounded to F32: expect below 1e-7)


def rel_err(got, ref, scale=None):
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        return math.inf
    if scale is None:
        scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    d = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    if scale == 0.0:
        return 0.0 if d == 0.0 else math.inf
    return d / scale


# ---------------------------------------------------------------------------------------------------
# self-check against the golden vectors
# ---------------------------------------------------------------------------------------------------

def selfcheck():
    base = os.path.join(GOLDEN, "fmnist-s")
    cases = [
        ("fmnist-s", os.path.join(base, "config.json"), [os.path.join(base, "model.safetensors")],
         os.path.join(base, "io.safetensors")),
        ("fmnist-s/cond", os.path.join(base, "cond", "config.json"),
         [os.path.join(base, "model.safetensors"), os.path.join(base, "cond", "class_embedding.safetensors")],
         os.path.join(base, "cond", "io_cond.safetensors")),
    ]
    ok = True
    for label, cfg_path, wpaths, io_path in cases:
        io, _ = R.read_safetensors(io_path)
        cl = io.get("class_labels")
        for exact in (True, False):
            t0 = time.time()
            model = R.build_from_files(cfg_path, wpaths, diffusers_f32_steps=exact)
            eps, gx, grads = R.eps_and_grads(model, io["x"], io["t"], io["grad_out"], cl)
            e_eps = rel_err(eps, io["eps"])
            e_gx = rel_err(gx, io["grad_x"])
            worst_name, worst = "", 0.0
            n_grads = 0
            for k, v in io.items():
                if k.startswith("grad.") and k != "grad_out":
                    n_grads += 1
                    e = rel_err(grads[k[5:]], v)
                    if e > worst:
                        worst_name, worst = k[5:], e
            # training loss: x_t from the schedule, loss = mean((eps(x_t) - noise)^2), its gradients
            a = io["alphas_cumprod"].astype(np.float64)[io["t"]][:, None, None, None]
            xt = np.sqrt(a) * io["train.x0"] + np.sqrt(1 - a) * io["train.noise"]
            e_xt = rel_err(xt, io["train.x_t"])
            model.zero_grad(set_to_none=True)
            out = model(torch.tensor(io["train.x_t"], dtype=torch.float64), torch.as_tensor(io["t"]),
                        None if cl is None else torch.as_tensor(cl))
            loss = ((out - torch.tensor(io["train.noise"], dtype=torch.float64)) ** 2).mean()
            loss.backward()
            e_loss = abs(loss.item() - float(io["train.loss"][0])) / abs(float(io["train.loss"][0]))
            params = dict(model.named_parameters())
            tworst_name, tworst = "", 0.0
            for k, v in io.items():
                if k.startswith("train.grad."):
                    e = rel_err(params[k[11:]].grad.numpy(), v)
                    if e > tworst:
                        tworst_name, tworst = k[11:], e
            # default: diffusers' float32 timestep embedding and softmax; the all-float64 variant is
            # printed for information only (it differs from the golden by about 1e-6)
            mode = "diffusers f32 steps" if exact else "all float64, info only"
            worst_all = max(e_eps, e_gx, worst, e_xt, e_loss, tworst)
            passed = worst_all <= SELF_TOL
            ok &= passed or not exact
            print(f"selfcheck {label} [{mode}]: eps {e_eps:.2e}, grad_x {e_gx:.2e}, "
                  f"{n_grads} param grads worst {worst:.2e} ({worst_name}); train: x_t {e_xt:.1e}, "
                  f"loss {e_loss:.2e}, grads worst {tworst:.2e} ({tworst_name}) "
                  f"[{time.time() - t0:.1f}s] {('ok' if passed else 'FAIL') if exact else 'info'}")
    print("selfcheck " + ("passed" if ok else "FAILED") + f" (tolerance {SELF_TOL:g} relative to max |ref|)")
    return ok


# ---------------------------------------------------------------------------------------------------
# random configs
# ---------------------------------------------------------------------------------------------------

def divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def draw_case(rng, index):
    """A random UNet2DModel config plus how to store it. Rare features rotate with `index` so that any
    dozen consecutive cases covers each of them."""
    L = int(rng.integers(1, 5))
    g = int(rng.integers(2, 9))
    chans = [c for c in range(8, 49) if c % g == 0]
    boc = [int(rng.choice(chans)) for _ in range(L)]
    down_attn = [bool(rng.random() < 0.5) for _ in range(L)]
    up_attn = [bool(rng.random() < 0.5) for _ in range(L)]
    mid_block = index % 6 != 4
    add_attention = bool(rng.random() < 0.6)
    attn_ch = [c for c, a in zip(boc, down_attn) if a] + [c for c, a in zip(boc[::-1], up_attn) if a]
    if mid_block and add_attention:
        attn_ch.append(boc[-1])
    gcd = 0
    for c in (attn_ch or boc):
        gcd = math.gcd(gcd, c)
    if rng.random() < 0.35:
        head_dim = None
    else:
        ds = [d for d in divisors(gcd) if d >= 2] or [gcd]
        head_dim = int(rng.choice(ds))
    attn_groups = None
    if rng.random() < 0.4:
        attn_groups = int(rng.choice([d for d in divisors(boc[-1]) if d <= 16]))
    conditional = bool(rng.random() < 0.5)
    class_timestep = conditional and index % 6 == 1
    cfg = {
        "_class_name": "UNet2DModel",
        "_diffusers_version": "0.25.1",
        "act_fn": "silu",
        "add_attention": add_attention,
        "attention_head_dim": head_dim,
        "attn_norm_num_groups": attn_groups,
        "block_out_channels": boc,
        "center_input_sample": bool(rng.random() < 0.3),
        "class_embed_type": "timestep" if class_timestep else None,
        "down_block_types": ["AttnDownBlock2D" if a else "DownBlock2D" for a in down_attn],
        "downsample_padding": int(rng.integers(0, 2)),
        "downsample_type": "resnet" if rng.random() < 0.4 else "conv",
        "dropout": 0.0,
        "flip_sin_to_cos": bool(rng.random() < 0.5),
        "freq_shift": int(rng.integers(0, 2)),
        "in_channels": int(rng.choice([1, 3])),
        "layers_per_block": int(rng.integers(1, 3)),
        "mid_block_scale_factor": 1.414 if rng.random() < 0.4 else 1,
        "norm_eps": 1e-5 if rng.random() < 0.5 else 1e-6,
        "norm_num_groups": g,
        "num_class_embeds": int(rng.integers(3, 11)) if conditional and not class_timestep else None,
        "num_train_timesteps": None,
        "out_channels": int(rng.choice([1, 3])),
        "resnet_time_scale_shift": "scale_shift" if rng.random() < 0.5 else "default",
        "sample_size": None,
        "time_embedding_type": "positional",
        "up_block_types": ["AttnUpBlock2D" if a else "UpBlock2D" for a in up_attn],
        "upsample_type": "resnet" if rng.random() < 0.4 else "conv",
    }
    if not mid_block:
        cfg["mid_block_type"] = None
    elif rng.random() < 0.3:
        cfg["mid_block_type"] = "UNetMidBlock2D"
    # sizes: divisible by 2^(L-1), deepest level at least 2x2, at most 16
    step = 2 ** (L - 1)
    sizes = [s for s in range(max(2 * step, 5), 17) if s % step == 0]
    H, W = int(rng.choice(sizes)), int(rng.choice(sizes))
    case = {
        "config": cfg,
        "H": H, "W": W, "N": 2,
        "conditional": conditional,
        "weight_dtype": ["F32", "F16", "F32", "BF16"][index % 4],
        "legacy_names": index % 3 == 1,
    }
    return case


def describe(case):
    c = case["config"]
    L = len(c["block_out_channels"])
    da = "".join("A" if t.startswith("Attn") else "-" for t in c["down_block_types"])
    ua = "".join("A" if t.startswith("Attn") else "-" for t in c["up_block_types"])
    mid = "none" if ("mid_block_type" in c and c["mid_block_type"] is None) else (
        "attn" if c["add_attention"] else "noattn")
    parts = [
        f"L={L} ch={c['block_out_channels']} g={c['norm_num_groups']} lpb={c['layers_per_block']}",
        f"in/out={c['in_channels']}/{c['out_channels']} {case['H']}x{case['W']}",
        f"attn down={da} up={ua} mid={mid} hd={c['attention_head_dim']} attn_g={c['attn_norm_num_groups']}",
        c["resnet_time_scale_shift"],
        f"pad={c['downsample_padding']} ds={c['downsample_type']} us={c['upsample_type']}",
    ]
    flags = []
    if c["center_input_sample"]:
        flags.append("center")
    flags.append("cos" if c["flip_sin_to_cos"] else "sin")
    flags.append(f"shift={c['freq_shift']}")
    flags.append(f"msf={c['mid_block_scale_factor']}")
    flags.append(f"eps={c['norm_eps']:g}")
    if c["class_embed_type"] == "timestep":
        flags.append("class=timestep")
    elif c["num_class_embeds"]:
        flags.append(f"class={c['num_class_embeds']}")
    flags.append(case["weight_dtype"])
    if case["legacy_names"]:
        flags.append("legacy-names")
    parts.append(" ".join(flags))
    return "; ".join(parts)


def random_weights(model, rng):
    """normal/sqrt(fan_in) for conv/linear weights, 0.5*normal for embedding tables, 1+0.1*normal for
    GroupNorm scales, 0.1*normal for biases and GroupNorm shifts."""
    out = {}
    for name, p in model.named_parameters():
        shape = tuple(p.shape)
        z = rng.standard_normal(shape)
        if name == "class_embedding.weight" and isinstance(model.class_embedding, torch.nn.Embedding):
            v = 0.5 * z
        elif len(shape) >= 2:
            v = z / math.sqrt(int(np.prod(shape[1:])))
        elif "norm" in name and name.endswith(".weight"):
            v = 1.0 + 0.1 * z
        else:
            v = 0.1 * z
        out[name] = v
    return out


def run_case(case, seed, workdir, binary, timeout, f32_steps=True):
    rng = np.random.default_rng(seed)
    cfg = case["config"]
    model = R.UNet2DRef(cfg, f32_time_embedding=f32_steps, f32_softmax=f32_steps).double()
    w = random_weights(model, rng)
    mdir = os.path.join(workdir, "model")
    os.makedirs(mdir, exist_ok=True)
    with open(os.path.join(mdir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    stored = {}
    dtypes = {}
    for name, v in w.items():
        sname = R.legacy_name(name) if case["legacy_names"] else name
        stored[sname] = v.astype(np.float32)
        dtypes[sname] = case["weight_dtype"]
    wpath = os.path.join(mdir, "diffusion_pytorch_model.safetensors")
    R.write_safetensors(wpath, stored, dtypes, metadata={"format": "pt"})
    # the reference takes its weights back from the file: exactly the (rounded) stored values
    tensors, _ = R.read_safetensors(wpath)
    R.load_weights(model, tensors)
    model.eval()

    N, C, H, W = case["N"], cfg["in_channels"], case["H"], case["W"]
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    t = rng.integers(0, 1000, size=N).astype(np.int64)
    inputs = {"x": x, "t": t}
    labels = None
    if cfg["class_embed_type"] == "timestep":
        labels = rng.integers(0, 1000, size=N).astype(np.int64)
    elif cfg["num_class_embeds"]:
        labels = rng.integers(0, cfg["num_class_embeds"], size=N).astype(np.int64)
    if labels is not None:
        inputs["class_labels"] = labels
    grad_out = rng.standard_normal((N, cfg["out_channels"], H, W)).astype(np.float32)
    inputs["grad_out"] = grad_out
    in_path = os.path.join(workdir, "in.safetensors")
    out_path = os.path.join(workdir, "out.safetensors")
    R.write_safetensors(in_path, inputs)

    eps, gx, grads = R.eps_and_grads(model, x, t, grad_out, labels)
    np.save(os.path.join(workdir, "ref_eps.npy"), eps)

    if binary is None:     # --dry-run: the reference alone
        return True, f"reference only: eps max {np.max(np.abs(eps)):.3g}, {len(grads)} parameters"
    cmd = [binary, "predict", "--grads", mdir, in_path, out_path]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"timeout after {timeout}s: {' '.join(cmd)}"
    if proc.returncode != 0:
        msg = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["(no output)"])[-1]
        return False, f"diffuse exited {proc.returncode}: {msg}"
    try:
        got, _ = R.read_safetensors(out_path)
    except Exception as e:  # noqa: BLE001
        return False, f"cannot read {out_path}: {e}"

    problems = []
    if "eps" not in got:
        return False, "output has no `eps`"
    e_eps = rel_err(got["eps"], eps)
    if not e_eps <= EPS_TOL:
        problems.append(f"eps {e_eps:.2e}")
    e_gx = rel_err(got["grad_x"], gx) if "grad_x" in got else math.inf
    if not e_gx <= GRAD_TOL:
        problems.append(f"grad_x {e_gx:.2e}" if "grad_x" in got else "grad_x missing")

    # Some gradients are zero in exact arithmetic: attention key biases (they add the same amount to
    # every score of a query, which softmax ignores) and, with one channel per GroupNorm group, terms
    # added per channel just before the norm. Both sides then hold only rounding noise (~1e-7 of the
    # neighbouring gradients in float32), so those are measured against the module's weight gradient
    # (or the model's largest gradient) instead of their own.
    gmax = max(float(np.max(np.abs(v))) for v in grads.values())
    worst_name, worst, missing, fails = "", 0.0, [], []
    for name, ref in grads.items():
        key = "grad." + name
        if key not in got:
            key = "grad." + R.legacy_name(name)
        if key not in got:
            missing.append(name)
            continue
        scale = float(np.max(np.abs(ref)))
        if name.endswith(".to_k.bias") or scale <= 1e-6 * gmax:
            sib = grads.get(name.rsplit(".", 1)[0] + ".weight")
            sscale = float(np.max(np.abs(sib))) if sib is not None else 0.0
            scale = sscale if sscale > 1e-9 * gmax else gmax
        e = rel_err(got[key], ref, scale)
        if e > worst:
            worst_name, worst = name, e
        if not e <= GRAD_TOL:
            fails.append((e, name))
    if missing:
        problems.append(f"{len(missing)} param grads missing (e.g. {missing[0]})")
    known = {"grad." + n for n in grads} | {"grad." + R.legacy_name(n) for n in grads}
    unexpected = sorted(k for k in got if k.startswith("grad.") and k not in known)
    if unexpected:
        problems.append(f"{len(unexpected)} grads for parameters the reference lacks (e.g. {unexpected[0]})")
    if fails:
        fails.sort(reverse=True)
        problems.append(f"{len(fails)} param grads over {GRAD_TOL:g}: " +
                        ", ".join(f"{n} {e:.2e}" for e, n in fails[:4]))
    summary = f"eps {e_eps:.2e}, grad_x {e_gx:.2e}, worst param grad {worst:.2e} ({worst_name})"
    if problems:
        return False, summary + " | " + "; ".join(problems)
    return True, summary


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--selfcheck", action="store_true", help="check the reference on the golden vectors")
    ap.add_argument("--count", type=int, default=12)
    ap.add_argument("--seed", type=int, default=20240)
    ap.add_argument("--bin", default="build/diffuse")
    ap.add_argument("--keep", default=None, help="keep each case's files under DIR/case_<i>")
    ap.add_argument("--only", type=int, default=None, help="run only case number I")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--dry-run", action="store_true", help="draw the cases and run the reference only")
    ap.add_argument("--float64-steps", action="store_true",
                    help="timestep embedding and softmax in float64 too (default: float32 as diffusers)")
    args = ap.parse_args()

    if args.selfcheck:
        return 0 if selfcheck() else 1

    if args.dry_run:
        binary = None
    elif not os.path.exists(args.bin):
        print(f"no binary at {args.bin}")
        print(f"0 passed, {args.count} failed")
        return 1
    else:
        binary = os.path.abspath(args.bin)
    root = args.keep or tempfile.mkdtemp(prefix="diffuse_parity_")
    t_start = time.time()
    passed = failed = 0
    master = np.random.default_rng(args.seed)
    seeds = master.integers(0, 2 ** 63 - 1, size=args.count)
    for i in range(args.count):
        case_rng = np.random.default_rng([args.seed, i])
        case = draw_case(case_rng, i)
        if args.only is not None and i != args.only:
            continue
        wd = os.path.join(root, f"case_{i}")
        os.makedirs(wd, exist_ok=True)
        t0 = time.time()
        try:
            ok, msg = run_case(case, int(seeds[i]), wd, binary, args.timeout, not args.float64_steps)
        except Exception as e:  # noqa: BLE001
            ok, msg = False, f"error: {type(e).__name__}: {e}"
        if ok:
            passed += 1
        else:
            failed += 1
        print(f"case {i:2d} {'PASS' if ok else 'FAIL'} [{time.time() - t0:.1f}s] {msg}\n"
              f"        {describe(case)}", flush=True)
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"files kept in {root}")
    print(f"total {time.time() - t_start:.1f}s")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
