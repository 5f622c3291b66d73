#!/usr/bin/python3
"""The PyTorch run to compare quality per minute against: the same U-Net (tests/ref/unet_ref.py, diffusers'
structure and parameter names) trained with the recipe `diffuse train` uses, on the same data, for a budget
in minutes or steps, on the CPU with Debian's python3-torch. It writes a diffusers DDPMPipeline directory of
the EMA weights, so `diffuse eval OUT` scores it exactly as it scores a diffuse run.

The recipe, as `diffuse train`'s: images scaled to [-1, 1], t uniform in [0, T), linear betas 1e-4..0.02
(T = 1000), epsilon prediction and plain MSE, AdamW (betas 0.95/0.999, weight decay 1e-6, eps 1e-8),
linear warmup then constant (a minutes budget) or cosine decay (a steps budget), gradient norm clipped to 1,
EMA with decay min(max, 1 - (1 + k)^-0.75) after k updates. With --classes: class-conditional with a null
class (num_class_embeds = classes + 1) and labels dropped to it with probability --class-dropout.
With --edm: `diffuse train --edm`'s objective (Karras et al. 2022): noise levels ln(sigma) ~ N(p_mean, p_std^2),
the network F sees c_in (x_0 + sigma n) at timestep c_noise = ln(sigma) / 4 and learns the target
(x_0 - c_skip x) / c_out with unit weight; saved as diffusers' EDMEulerScheduler, as diffuse saves it.

With --eval-every-minutes M: every M minutes of training and at the end, the EMA weights are saved and scored
by `build/diffuse eval` as `diffuse train --eval-every` scores its runs (500 images, DDIM 25 steps), with the
clock stopped, and the row goes into OUT/loss.csv in diffuse's columns, so `diffuse compare` draws both.

usage: scripts/torch_train.py --minutes 20 --out runs/torch-20 [--config CONFIG.json] [--lr 3e-4]
       [--warmup 100] [--batch 64] [--classes] [--edm] [--eval-every-minutes 5] [--threads 2] [--seed 0]
then:  build/diffuse eval runs/torch-20
"""
import argparse
import gzip
import json
import math
import os
import sys
import time

import subprocess

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "ref"))
from unet_ref import UNet2DRef, write_safetensors  # noqa: E402

FMNIST = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def lr_at(step, a, total):
    """The learning rate of 0-based optimizer step `step`: transformers' warmup, then constant or cosine."""
    if step < a.warmup:
        return a.lr * step / a.warmup
    if total <= a.warmup:
        return a.lr
    progress = (step - a.warmup) / (total - a.warmup)
    return a.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def edm_precond(sigma, sigma_data):
    """EDM's c_skip, c_out, c_in and c_noise (Karras et al. 2022, table 1) for a tensor of noise levels."""
    s2, d2 = sigma * sigma, sigma_data * sigma_data
    r = (s2 + d2).sqrt()
    return d2 / (s2 + d2), sigma * sigma_data / r, 1 / r, 0.25 * sigma.log()


def scheduler_config(a, abar):
    if not a.edm:
        return {"_class_name": "DDPMScheduler", "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear",
                "num_train_timesteps": 1000, "prediction_type": "epsilon", "clip_sample": True,
                "variance_type": "fixed_small", "timestep_spacing": "leading", "steps_offset": 0}
    sig = ((1 - abar) / abar).sqrt()   # the VP schedule's sigma range, which diffuse samples an EDM model on
    return {"_class_name": "EDMEulerScheduler", "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear",
            "num_train_timesteps": 1000, "prediction_type": "epsilon", "rescale_betas_zero_snr": False,
            "sigma_data": a.sigma_data, "sigma_min": float(sig[0]), "sigma_max": float(sig[-1]), "rho": 7.0,
            "sigma_schedule": "karras", "final_sigmas_type": "zero"}


def save_pipeline(out, cfg, ema, names, a, abar, step, images, elapsed):
    unet = os.path.join(out, "unet")
    sched = os.path.join(out, "scheduler")
    os.makedirs(unet, exist_ok=True)
    os.makedirs(sched, exist_ok=True)
    with open(os.path.join(unet, "config.json"), "w") as f:
        json.dump(dict(cfg, _class_name="UNet2DModel"), f, indent=2)
    tensors = {n: p.detach().numpy().astype(np.float32) for n, p in zip(names, ema)}
    meta = {"trained_by": "scripts/torch_train.py", "step": step, "images": images, "elapsed_sec": round(elapsed, 1),
            "torch": torch.__version__}
    write_safetensors(os.path.join(unet, "diffusion_pytorch_model.safetensors"), tensors, metadata=meta)
    with open(os.path.join(sched, "scheduler_config.json"), "w") as f:
        json.dump(scheduler_config(a, abar), f, indent=2)
    if a.classes:   # the class names and the null class, as `diffuse train --classes` writes them
        names_ = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                  "Ankle boot", "(none)"]
        with open(os.path.join(out, "classes.json"), "w") as f:
            json.dump({"num_classes": len(names_), "null_class": len(names_) - 1, "names": names_}, f, indent=1)
    with open(os.path.join(out, "model_index.json"), "w") as f:
        json.dump({"_class_name": "DDPMPipeline",
                   "scheduler": ["diffusers", "EDMEulerScheduler" if a.edm else "DDPMScheduler"],
                   "unet": ["diffusers", "UNet2DModel"]}, f, indent=2)


def evaluate(out, threads):
    """FD and KID of 500 EMA samples, DDIM 25 steps, as `diffuse train --eval-every` measures its own runs."""
    r = subprocess.run([os.path.join(HERE, "..", "build", "diffuse"), "eval", out, "--n", "500", "--steps", "25",
                        "--metrics", "fd,kid", "--json", "--threads", str(threads)],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True)
    m = {x["metric"]: x["value"] for x in json.loads(r.stdout)["metrics"]}
    return m["fd"], m["kid"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", default=os.path.join(HERE, "..", "models", "fmnist-s", "unet", "config.json"),
                    help="a UNet2DModel config.json (default: the fmnist-s preset's)")
    ap.add_argument("--minutes", type=float, default=0)
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=-1, help="default: 10%% of the steps budget, at most 500; "
                    "for --minutes, 100")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--ema-decay", type=float, default=0.9999)
    ap.add_argument("--classes", action="store_true")
    ap.add_argument("--class-dropout", type=float, default=0.1)
    ap.add_argument("--edm", action="store_true", help="EDM preconditioning and noise levels (Karras et al. 2022)")
    ap.add_argument("--sigma-data", type=float, default=0.5)
    ap.add_argument("--p-mean", type=float, default=-1.2)
    ap.add_argument("--p-std", type=float, default=1.2)
    ap.add_argument("--eval-every-minutes", type=float, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if (a.minutes > 0) == (a.steps > 0):
        ap.error("give one budget: --minutes M or --steps N")
    if a.warmup < 0:
        a.warmup = min(500, a.steps // 10) if a.steps else 100
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)

    images = read_idx(os.path.join(FMNIST, "train-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(FMNIST, "train-labels-idx1-ubyte.gz")).astype(np.int64)
    x_all = torch.from_numpy(images.astype(np.float32) / 127.5 - 1).unsqueeze(1)
    y_all = torch.from_numpy(labels)
    with open(a.config) as f:
        cfg = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    classes = int(labels.max()) + 1
    if a.classes:
        cfg["num_class_embeds"] = classes + 1
    model = UNet2DRef(cfg).float().train()
    names = [n for n, _ in model.named_parameters()]
    params = list(model.parameters())
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    abar64 = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    abar = abar64.float()

    n = len(x_all)
    order, pos, step, t0 = rng.permutation(n), 0, 0, time.perf_counter()
    budget_sec = a.minutes * 60
    log = None
    if a.eval_every_minutes > 0:
        os.makedirs(a.out, exist_ok=True)
        log = open(os.path.join(a.out, "loss.csv"), "w")
        log.write("step,elapsed_sec,images,fd,kid,eval_sec\n")
    next_eval = a.eval_every_minutes * 60

    def eval_row(train_sec):
        e0 = time.perf_counter()
        save_pipeline(a.out, cfg, ema, names, a, abar64, step, step * a.batch, train_sec)
        fd, kid = evaluate(a.out, a.threads)
        log.write(f"{step},{train_sec:.1f},{step * a.batch},{fd:.6g},{kid:.6g},{time.perf_counter() - e0:.1f}\n")
        log.flush()
        print(f"eval: step {step}, {train_sec / 60:.1f} min: FD {fd:.3f}, KID {kid:.5f}", file=sys.stderr)
        return time.perf_counter() - e0
    print(f"torch_train: {n} images, {sum(p.numel() for p in params)} parameters, batch {a.batch}, lr {a.lr}, "
          f"warmup {a.warmup}, {'EDM' if a.edm else 'epsilon'} objective, {a.threads} threads, torch {torch.__version__}", file=sys.stderr)
    while (a.steps and step < a.steps) or (budget_sec and time.perf_counter() - t0 < budget_sec):
        if pos + a.batch > n:
            order, pos = rng.permutation(n), 0
        idx = torch.from_numpy(order[pos:pos + a.batch])
        pos += a.batch
        x0, y = x_all[idx], y_all[idx].clone()
        noise = torch.randn_like(x0)
        if a.edm:
            sigma = (a.p_mean + a.p_std * torch.randn(a.batch, dtype=torch.float64)).exp()
            c_skip, c_out, c_in, t = edm_precond(sigma, a.sigma_data)
            c_skip, c_out, c_in = (c.float().view(-1, 1, 1, 1) for c in (c_skip, c_out, c_in))
            x = x0 + sigma.float().view(-1, 1, 1, 1) * noise
            xt, target, t = c_in * x, (x0 - c_skip * x) / c_out, t.float()
        else:
            t = torch.randint(0, 1000, (a.batch,))
            ab = abar[t].view(-1, 1, 1, 1)
            xt, target = ab.sqrt() * x0 + (1 - ab).sqrt() * noise, noise
        if a.classes:
            y[torch.rand(a.batch) < a.class_dropout] = classes
        for g in opt.param_groups:
            g["lr"] = lr_at(step, a, a.steps)
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(xt, t, y) if a.classes else model(xt, t), target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        d = min(a.ema_decay, max(0.0, 1 - (1 + step) ** -0.75))
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.mul_(d).add_(p.detach(), alpha=1 - d)
        step += 1
        more = step < a.steps if a.steps else time.perf_counter() - t0 < budget_sec   # the end has its own row
        if log and more and time.perf_counter() - t0 >= next_eval:
            t0 += eval_row(time.perf_counter() - t0)   # the clock stops while scoring
            next_eval += a.eval_every_minutes * 60
        if step % 50 == 0:
            el = time.perf_counter() - t0
            print(f"step {step}  loss {loss.item():.4f}  {step * a.batch / el:.1f} img/s  {el / 60:.1f} min",
                  file=sys.stderr)
    elapsed = time.perf_counter() - t0
    if log:
        eval_row(elapsed)
        log.close()
    save_pipeline(a.out, cfg, ema, names, a, abar64, step, step * a.batch, elapsed)
    print(json.dumps({"out": a.out, "steps": step, "images": step * a.batch, "minutes": elapsed / 60,
                      "img_per_sec": step * a.batch / elapsed, "torch": torch.__version__, "threads": a.threads}))


if __name__ == "__main__":
    main()
