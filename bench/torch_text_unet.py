#!/usr/bin/python3
"""The PyTorch side of the text-to-image benchmark: the same UNet2DConditionModel (tests/ref/unet_cond_ref.py)
and CLIPTextModel (tests/ref/clip_text_ref.py), diffusers' and transformers' structures and parameter names, in
float32 on the CPU with Debian's python3-torch, doing the same work as bench/text.c. One measurement per run
(so peak memory belongs to it); prints one JSON object.

  train    the text encoder and the U-Net together: encode the batch's texts, forward, MSE against the noise,
           backward through both, gradient clipping at 1, one AdamW step over both
  sample   DDIM (eta 0, leading spacing) over --steps steps from pure noise, the texts encoded once
  forward  one U-Net forward pass without gradients, on text states computed before

usage: bench/torch_text_unet.py UNET.json TEXT.json --mode train|sample|forward --batch B --threads T
                                [--iters K] [--steps S]
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref"))
from clip_text_ref import CLIPTextModel  # noqa: E402
from unet_cond_ref import UNet2DConditionRef  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_unet import ddim, report, times  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("unet")
    ap.add_argument("text")
    ap.add_argument("--mode", choices=["train", "sample", "forward"], required=True)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--steps", type=int, default=50)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    with open(a.unet) as f:
        ucfg = json.load(f)
    with open(a.text) as f:
        tcfg = json.load(f)
    unet = UNet2DConditionRef(ucfg).float()
    enc = CLIPTextModel(tcfg).float()
    s, c = ucfg["sample_size"], ucfg["in_channels"]
    L = tcfg["max_position_embeddings"]
    x = torch.randn(a.batch, c, s, s)
    t = torch.randint(0, 1000, (a.batch,))
    noise = torch.randn_like(x)
    ids = torch.randint(0, tcfg["vocab_size"], (a.batch, L))

    if a.mode == "forward":
        unet.eval()
        with torch.no_grad():
            states = enc.text_model(ids)[0]
            ts = times(lambda: unet(x, t, states), a.iters)
    elif a.mode == "train":
        unet.train()
        params = list(unet.parameters()) + list(enc.parameters())
        opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)

        def step():
            opt.zero_grad(set_to_none=True)
            states = enc.text_model(ids)[0]
            loss = torch.nn.functional.mse_loss(unet(x, t, states), noise)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()

        ts = times(step, a.iters)
    else:
        unet.eval()
        with torch.no_grad():
            unet(x, t, enc.text_model(ids)[0])  # warm up the kernels; the timed run is one whole sampling run
            t0 = time.perf_counter()
            states = enc.text_model(ids)[0]
            ddim(lambda y, k: unet(y, torch.full((a.batch,), k), states), torch.randn_like(x), a.steps)
            ts = [time.perf_counter() - t0]
    report(a, s, ts)


if __name__ == "__main__":
    main()
