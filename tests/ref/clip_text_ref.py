#!/usr/bin/python3
"""An independent float64 PyTorch model of transformers' CLIPTextModel (from the architecture: token and
position embeddings, pre-LayerNorm layers of causal multi-head self-attention and an MLP, a final LayerNorm),
under transformers' parameter names, for parity tests of the C text encoder. transformers is not needed.

  clip_text_ref.py DIR CASES.json
      For each case in CASES.json (a list of CLIPTextConfig dicts with "seed", "n" and "L"), writes
      DIR/case-K/ as transformers writes a CLIPTextModel (config.json, model.safetensors with random
      weights, once with the legacy position_ids buffer) and DIR/case-K/io.safetensors: "ids" (n, L) as floats,
      "hidden" (n, L, D) last_hidden_state, "pooled" (n, D), "dhidden" (n, L, D) a random output gradient and
      "grad.<param>" the gradient of sum(hidden * dhidden) for every parameter. Float64 throughout.
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from unet_ref import write_safetensors  # noqa: E402

ACTS = {
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "gelu": F.gelu,
    "gelu_new": lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.v_proj, self.out_proj = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x):
        n, L, d = x.shape
        hd = d // self.heads

        def split(t):
            return t.view(n, L, self.heads, hd).transpose(1, 2)   # (n, heads, L, hd)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
        mask = torch.triu(torch.ones(L, L, dtype=torch.bool), diagonal=1)   # a token sees itself and before
        scores = scores.masked_fill(mask, float("-inf"))
        out = torch.softmax(scores, dim=-1) @ v
        return self.out_proj(out.transpose(1, 2).reshape(n, L, d))


class MLP(nn.Module):
    def __init__(self, d, inner, act):
        super().__init__()
        self.fc1, self.fc2, self.act = nn.Linear(d, inner), nn.Linear(inner, d), ACTS[act]

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, eps = c["hidden_size"], c.get("layer_norm_eps", 1e-5)
        self.layer_norm1 = nn.LayerNorm(d, eps=eps)
        self.self_attn = Attention(d, c["num_attention_heads"])
        self.layer_norm2 = nn.LayerNorm(d, eps=eps)
        self.mlp = MLP(d, c["intermediate_size"], c.get("hidden_act", "quick_gelu"))

    def forward(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class Embeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.token_embedding = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.position_embedding = nn.Embedding(c["max_position_embeddings"], c["hidden_size"])

    def forward(self, ids):
        return self.token_embedding(ids) + self.position_embedding(torch.arange(ids.shape[1]))[None]


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layers = nn.ModuleList([Layer(c) for _ in range(c["num_hidden_layers"])])


class TextTransformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embeddings = Embeddings(c)
        self.encoder = Encoder(c)
        self.final_layer_norm = nn.LayerNorm(c["hidden_size"], eps=c.get("layer_norm_eps", 1e-5))
        self.eos = c.get("eos_token_id", 2)

    def forward(self, ids):
        x = self.embeddings(ids)
        for layer in self.encoder.layers:
            x = layer(x)
        x = self.final_layer_norm(x)
        if self.eos == 2:   # the legacy rule: the end token has the largest id
            at = ids.argmax(dim=-1)
        else:
            at = (ids == self.eos).int().argmax(dim=-1)
        return x, x[torch.arange(x.shape[0]), at]


class CLIPTextModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.text_model = TextTransformer(c)


def run_case(out, c, k):
    torch.manual_seed(c["seed"])
    model = CLIPTextModel(c).double()
    with torch.no_grad():   # weights large enough that every layer matters
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.copy_((1 if name.endswith("weight") else 0) + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p) / math.sqrt(max(p.shape[-1], 1)) if p.dim() > 1 else 0.1 * torch.randn_like(p))
            if "embedding" in name:
                p.mul_(3)
    n, L = c["n"], c["L"]
    ids = torch.randint(0, c["vocab_size"], (n, L))
    ids[:, 0] = c.get("bos_token_id", 0) % c["vocab_size"]
    eos = c.get("eos_token_id", 2) % c["vocab_size"]
    for b in range(n):   # an end token somewhere in each row (the pooled state's position)
        ids[b, 1 + (b * 3) % (L - 1)] = eos
    hidden, pooled = model.text_model(ids)
    dhidden = torch.randn_like(hidden)
    (hidden * dhidden).sum().backward()
    d = os.path.join(out, "case-%d" % k)
    os.makedirs(d, exist_ok=True)
    cfg = {key: v for key, v in c.items() if key not in ("seed", "n", "L")}
    cfg.update({"architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "torch_dtype": "float32",
                "transformers_version": "4.30.0", "_name_or_path": "random"})
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    weights = {name: p.detach().numpy() for name, p in model.named_parameters()}
    if k == 0:   # older transformers saved the position ids buffer
        weights["text_model.embeddings.position_ids"] = np.arange(c["max_position_embeddings"])[None]
    write_safetensors(os.path.join(d, "model.safetensors"), weights, metadata={"format": "pt"})
    io = {"ids": ids.double().numpy(), "hidden": hidden.detach().numpy(), "pooled": pooled.detach().numpy(),
          "dhidden": dhidden.numpy()}
    for name, p in model.named_parameters():
        io["grad." + name] = p.grad.numpy()
    write_safetensors(os.path.join(d, "io.safetensors"), io, dtypes={k2: "F64" for k2 in io})


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[2]) as f:
        cases = json.load(f)
    for k, c in enumerate(cases):
        run_case(sys.argv[1], c, k)


if __name__ == "__main__":
    main()
