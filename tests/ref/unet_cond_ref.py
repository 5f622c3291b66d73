# An independent float64 PyTorch model of diffusers' UNet2DConditionModel (Stable Diffusion's U-Net: the
# resnets, samplers and time embedding of unet_ref.py, with Transformer2DModel attention blocks that attend
# to text states), under diffusers' state_dict names, built from a config.json dict.
"""Reference UNet2DConditionModel for parity tests of the C implementation (diffusers not needed).

Transformer2DModel (continuous input): GroupNorm(eps 1e-6) -> proj_in (1x1 conv, or Linear with
use_linear_projection) -> BasicTransformerBlocks -> proj_out -> + input. BasicTransformerBlock: x + attn1(norm1 x),
+ attn2(norm2 x, text), + ff(norm3 x) with ff = GEGLU(dim -> 4 dim, values then gates) and Linear(4 dim -> dim);
attention projections to_q/to_k/to_v without biases, to_out.0 with one. The model reads attention_head_dim as
the number of heads per block (diffusers' naming), num_attention_heads overriding it when given.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from unet_ref import (Downsample2DRef, ResnetBlock2DRef, TimestepEmbeddingRef, TimestepsRef, Upsample2DRef)

COND_DEFAULTS = {
    "sample_size": None, "in_channels": 4, "out_channels": 4, "center_input_sample": False,
    "flip_sin_to_cos": True, "freq_shift": 0,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "downsample_padding": 1,
    "mid_block_scale_factor": 1, "act_fn": "silu", "norm_num_groups": 32, "norm_eps": 1e-5,
    "cross_attention_dim": 1280, "transformer_layers_per_block": 1, "attention_head_dim": 8,
    "num_attention_heads": None, "use_linear_projection": False, "class_embed_type": None,
    "num_class_embeds": None, "resnet_time_scale_shift": "default",
}


def per_block(v, n):
    return list(v) if isinstance(v, (list, tuple)) else [v] * n


class AttentionRef(nn.Module):
    def __init__(self, dim, context_dim, heads):
        super().__init__()
        self.heads, self.dh = heads, dim // heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])

    def forward(self, x, context=None):                 # x (N, L, dim), context (N, Lc, context_dim)
        c = x if context is None else context
        n, L, d = x.shape

        def split(z):
            return z.reshape(n, z.shape[1], self.heads, self.dh).transpose(1, 2)

        q, k, v = split(self.to_q(x)), split(self.to_k(c)), split(self.to_v(c))
        p = torch.softmax(q @ k.transpose(-1, -2) * self.dh ** -0.5, dim=-1)
        return self.to_out[0]((p @ v).transpose(1, 2).reshape(n, L, d))


class GEGLURef(nn.Module):
    def __init__(self, dim, inner):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)

    def forward(self, x):
        h, gate = self.proj(x).chunk(2, dim=-1)
        return h * F.gelu(gate)


class FeedForwardRef(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.net = nn.ModuleList([GEGLURef(dim, 4 * dim), nn.Dropout(0.0), nn.Linear(4 * dim, dim)])

    def forward(self, x):
        for m in self.net:
            x = m(x)
        return x


class BasicTransformerBlockRef(nn.Module):
    def __init__(self, dim, heads, context_dim):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn1 = AttentionRef(dim, dim, heads)
        self.attn2 = AttentionRef(dim, context_dim, heads)
        self.ff = FeedForwardRef(dim)

    def forward(self, x, context):
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class Transformer2DRef(nn.Module):
    def __init__(self, ch, heads, layers, context_dim, groups, linear):
        super().__init__()
        self.linear = linear
        self.norm = nn.GroupNorm(groups, ch, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(ch, ch) if linear else nn.Conv2d(ch, ch, 1)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlockRef(ch, heads, context_dim)
                                                 for _ in range(layers)])
        self.proj_out = nn.Linear(ch, ch) if linear else nn.Conv2d(ch, ch, 1)

    def forward(self, x, context):
        n, c, hh, ww = x.shape
        h = self.norm(x)
        if self.linear:
            h = self.proj_in(h.permute(0, 2, 3, 1).reshape(n, hh * ww, c))
        else:
            h = self.proj_in(h).permute(0, 2, 3, 1).reshape(n, hh * ww, c)
        for blk in self.transformer_blocks:
            h = blk(h, context)
        if self.linear:
            h = self.proj_out(h).reshape(n, hh, ww, c).permute(0, 3, 1, 2)
        else:
            h = self.proj_out(h.reshape(n, hh, ww, c).permute(0, 3, 1, 2))
        return h + x


class DownRef(nn.Module):
    def __init__(self, cin, cout, temb, layers, add_down, attn, heads, tlayers, c):
        super().__init__()
        g, eps, act, tss = c["norm_num_groups"], c["norm_eps"], c["act_fn"], c["resnet_time_scale_shift"]
        self.resnets = nn.ModuleList([ResnetBlock2DRef(cin if i == 0 else cout, cout, temb, g, eps, act, tss)
                                      for i in range(layers)])
        self.attentions = nn.ModuleList([
            Transformer2DRef(cout, heads, tlayers, c["cross_attention_dim"], g, c["use_linear_projection"])
            for _ in range(layers)]) if attn else None
        self.downsamplers = nn.ModuleList([Downsample2DRef(cout, c["downsample_padding"])]) if add_down else None

    def forward(self, h, temb, ctx):
        outs = []
        for i, r in enumerate(self.resnets):
            h = r(h, temb)
            if self.attentions is not None:
                h = self.attentions[i](h, ctx)
            outs.append(h)
        if self.downsamplers is not None:
            h = self.downsamplers[0](h)
            outs.append(h)
        return h, outs


class UpRef(nn.Module):
    def __init__(self, cin, cout, prev, temb, layers, add_up, attn, heads, tlayers, c):
        super().__init__()
        g, eps, act, tss = c["norm_num_groups"], c["norm_eps"], c["act_fn"], c["resnet_time_scale_shift"]
        res = []
        for i in range(layers):
            skip = cin if i == layers - 1 else cout
            res.append(ResnetBlock2DRef((prev if i == 0 else cout) + skip, cout, temb, g, eps, act, tss))
        self.resnets = nn.ModuleList(res)
        self.attentions = nn.ModuleList([
            Transformer2DRef(cout, heads, tlayers, c["cross_attention_dim"], g, c["use_linear_projection"])
            for _ in range(layers)]) if attn else None
        self.upsamplers = nn.ModuleList([Upsample2DRef(cout)]) if add_up else None

    def forward(self, h, skips, temb, ctx):
        skips = list(skips)
        for i, r in enumerate(self.resnets):
            h = r(torch.cat([h, skips.pop()], dim=1), temb)
            if self.attentions is not None:
                h = self.attentions[i](h, ctx)
        if self.upsamplers is not None:
            h = self.upsamplers[0](h)
        return h


class MidRef(nn.Module):
    def __init__(self, ch, temb, heads, tlayers, c):
        super().__init__()
        g, eps, act, tss = c["norm_num_groups"], c["norm_eps"], c["act_fn"], c["resnet_time_scale_shift"]
        osf = c["mid_block_scale_factor"]
        self.resnets = nn.ModuleList([ResnetBlock2DRef(ch, ch, temb, g, eps, act, tss, output_scale_factor=osf)
                                      for _ in range(2)])
        self.attentions = nn.ModuleList([
            Transformer2DRef(ch, heads, tlayers, c["cross_attention_dim"], g, c["use_linear_projection"])])

    def forward(self, h, temb, ctx):
        h = self.resnets[0](h, temb)
        h = self.attentions[0](h, ctx)
        return self.resnets[1](h, temb)


class UNet2DConditionRef(nn.Module):
    def __init__(self, config):
        super().__init__()
        c = dict(COND_DEFAULTS)
        c.update({k: v for k, v in config.items() if not k.startswith("_")})
        self.cfg = c
        boc = list(c["block_out_channels"])
        nlev = len(boc)
        heads = per_block(c["num_attention_heads"] or c["attention_head_dim"], nlev)
        tl = per_block(c["transformer_layers_per_block"], nlev)
        temb = 4 * boc[0]
        self.conv_in = nn.Conv2d(c["in_channels"], boc[0], 3, padding=1)
        self.time_proj = TimestepsRef(boc[0], c["flip_sin_to_cos"], c["freq_shift"], True)
        self.time_embedding = TimestepEmbeddingRef(boc[0], temb)
        self.class_embedding = nn.Embedding(c["num_class_embeds"], temb) if c["num_class_embeds"] else None
        self.down_blocks = nn.ModuleList()
        cout = boc[0]
        for i, bt in enumerate(c["down_block_types"]):
            cin, cout = cout, boc[i]
            self.down_blocks.append(DownRef(cin, cout, temb, c["layers_per_block"], i != nlev - 1,
                                            bt == "CrossAttnDownBlock2D", heads[i], tl[i], c))
        self.mid_block = MidRef(boc[-1], temb, heads[-1], tl[-1], c) if c["mid_block_type"] else None
        self.up_blocks = nn.ModuleList()
        rev, rheads, rtl = boc[::-1], heads[::-1], tl[::-1]
        cout = rev[0]
        for i, bt in enumerate(c["up_block_types"]):
            prev, cout = cout, rev[i]
            cin = rev[min(i + 1, nlev - 1)]
            self.up_blocks.append(UpRef(cin, cout, prev, temb, c["layers_per_block"] + 1, i != nlev - 1,
                                        bt == "CrossAttnUpBlock2D", rheads[i], rtl[i], c))
        self.conv_norm_out = nn.GroupNorm(c["norm_num_groups"], boc[0], eps=c["norm_eps"])
        self.conv_out = nn.Conv2d(boc[0], c["out_channels"], 3, padding=1)

    def forward(self, sample, timesteps, encoder_hidden_states, class_labels=None):
        dtype = self.conv_in.weight.dtype
        t = torch.as_tensor(timesteps).expand(sample.shape[0])
        emb = self.time_embedding(self.time_proj(t, dtype))
        if self.class_embedding is not None:
            emb = emb + self.class_embedding(torch.as_tensor(class_labels).long())
        h = self.conv_in(sample)
        skips = [h]
        for blk in self.down_blocks:
            h, outs = blk(h, emb, encoder_hidden_states)
            skips.extend(outs)
        if self.mid_block is not None:
            h = self.mid_block(h, emb, encoder_hidden_states)
        for blk in self.up_blocks:
            n = len(blk.resnets)
            h = blk(h, skips[-n:], emb, encoder_hidden_states)
            del skips[-n:]
        return self.conv_out(F.silu(self.conv_norm_out(h)))
