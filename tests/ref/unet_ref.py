# An independent PyTorch model of diffusers 0.25 UNet2DModel (structure, forward math, state_dict names),
# built from a diffusers config.json dict, plus a small safetensors reader/writer. Runs in float64.
"""Reference UNet2DModel for parity tests of the C implementation.

Only PyTorch and numpy are needed (diffusers is not). The module tree below mirrors diffusers' so that
`state_dict()` names are exactly diffusers' names, e.g.
    down_blocks.1.attentions.0.to_q.weight, mid_block.resnets.1.time_emb_proj.bias, conv_norm_out.weight.

Two places where diffusers computes in float32 whatever the model dtype is:
  * the sinusoidal timestep embedding (built from float32 `arange` and `timesteps.float()`), and
  * the attention softmax (`upcast_softmax=True` casts the scores with `.float()`; torch 1.13 has no
    scaled_dot_product_attention, so diffusers uses that path).
By default this model does the same (`f32_time_embedding=True`, `f32_softmax=True`), so a float64 run
reproduces a float64 diffusers run. The golden vectors were made that way: with the embedding in
float64 instead, eps moves by about 1e-6 relative (t = 900 times a frequency loses ~5e-5 in float32).
The softmax rounding is below 1e-7 either way.
"""
import json
import math
import re
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------------------------------

_NP_OF_ST = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U8": np.uint8, "BOOL": np.bool_,
}


def bf16_bits_to_f32(bits):
    """uint16 bfloat16 bit patterns -> float32 array (exact)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(a):
    """float32 -> uint16 bfloat16 bits, round to nearest even (NaN kept quiet)."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounding = ((u >> 16) & 1) + np.uint32(0x7FFF)
    out = ((u + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(a)
    if nan.any():
        out[nan] = 0x7FC0
    return out


def round_to_dtype(a, dtype):
    """The float64 values a tensor has after being stored as `dtype` ("F32", "F16", "BF16", "F64")."""
    a = np.asarray(a, dtype=np.float64)
    if dtype == "F64":
        return a.copy()
    if dtype == "F32":
        return a.astype(np.float32).astype(np.float64)
    if dtype == "F16":
        return a.astype(np.float16).astype(np.float64)
    if dtype == "BF16":
        # through float32, exactly as write_safetensors stores a BF16 tensor
        return bf16_bits_to_f32(f32_to_bf16_bits(a.astype(np.float32))).astype(np.float64)
    raise ValueError("unknown dtype " + dtype)


def read_safetensors(path):
    """Returns (tensors, metadata): tensors maps name -> numpy array (BF16 is widened to float32)."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (hlen,) = struct.unpack("<Q", blob[:8])
    if 8 + hlen > len(blob):
        raise ValueError(f"{path}: header length {hlen} runs past the end of the file")
    header = json.loads(blob[8:8 + hlen].decode("utf-8"))
    data = memoryview(blob)[8 + hlen:]
    meta = header.pop("__metadata__", None) or {}
    out = {}
    for name, info in header.items():
        dt = info["dtype"]
        shape = tuple(int(s) for s in info["shape"])
        b, e = info["data_offsets"]
        raw = data[b:e]
        if dt == "BF16":
            arr = bf16_bits_to_f32(np.frombuffer(raw, dtype="<u2")).reshape(shape)
        elif dt in _NP_OF_ST:
            npdt = np.dtype(_NP_OF_ST[dt]).newbyteorder("<")
            arr = np.frombuffer(raw, dtype=npdt).reshape(shape).copy()
        else:
            raise ValueError(f"{path}: tensor {name}: unsupported dtype {dt}")
        out[name] = arr
    return out, meta


def write_safetensors(path, tensors, dtypes=None, metadata=None):
    """Write name -> array. `dtypes` maps a name to "F32"/"F16"/"BF16"/"F64"/"I64"; by default
    floating arrays are written as F32 and integer arrays as I64."""
    dtypes = dtypes or {}
    header = {}
    if metadata is not None:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    chunks = []
    off = 0
    for name, arr in tensors.items():
        arr = np.asarray(arr)
        dt = dtypes.get(name)
        if dt is None:
            dt = "I64" if np.issubdtype(arr.dtype, np.integer) else "F32"
        if dt == "BF16":
            raw = f32_to_bf16_bits(arr.astype(np.float32)).astype("<u2").tobytes()
        elif dt in ("F64", "F32", "F16", "I64", "I32", "U8"):
            raw = arr.astype(np.dtype(_NP_OF_ST[dt]).newbyteorder("<")).tobytes()
        else:
            raise ValueError("cannot write dtype " + dt)
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((-len(hjson)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for c in chunks:
            f.write(c)


# ---------------------------------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------------------------------

# diffusers' UNet2DModel.__init__ defaults: what a config.json that omits a key means.
CONFIG_DEFAULTS = {
    "sample_size": None,
    "in_channels": 3,
    "out_channels": 3,
    "center_input_sample": False,
    "time_embedding_type": "positional",
    "freq_shift": 0,
    "flip_sin_to_cos": True,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [224, 448, 672, 896],
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "downsample_padding": 1,
    "downsample_type": "conv",
    "upsample_type": "conv",
    "dropout": 0.0,
    "act_fn": "silu",
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "attn_norm_num_groups": None,
    "norm_eps": 1e-5,
    "resnet_time_scale_shift": "default",
    "add_attention": True,
    "class_embed_type": None,
    "num_class_embeds": None,
    "num_train_timesteps": None,
    "mid_block_type": "UNetMidBlock2D",   # newer diffusers; null there means no mid block
}


def full_config(cfg):
    c = dict(CONFIG_DEFAULTS)
    c.update({k: v for k, v in cfg.items() if not k.startswith("_")})
    return c


def activation(name):
    if name in ("silu", "swish"):
        return nn.SiLU()
    if name == "mish":
        return nn.Mish()
    if name == "gelu":
        return nn.GELU()
    if name == "relu":
        return nn.ReLU()
    raise ValueError("unsupported act_fn " + repr(name))


# ---------------------------------------------------------------------------------------------------
# layers (attribute names are diffusers' so state_dict names match)
# ---------------------------------------------------------------------------------------------------

def sinusoidal_embedding(t, dim, flip_sin_to_cos, freq_shift, dtype, max_period=10000.0):
    """diffusers' get_timestep_embedding: (N,) -> (N, dim)."""
    half = dim // 2
    i = torch.arange(half, dtype=dtype)
    freqs = torch.exp(-math.log(max_period) * i / (half - freq_shift))
    args = t.to(dtype)[:, None] * freqs[None, :]
    sin, cos = torch.sin(args), torch.cos(args)
    emb = torch.cat([cos, sin] if flip_sin_to_cos else [sin, cos], dim=1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepsRef(nn.Module):
    """Parameter-free sinusoidal projection (diffusers' `Timesteps`)."""

    def __init__(self, dim, flip_sin_to_cos, freq_shift, f32):
        super().__init__()
        self.dim, self.flip, self.shift, self.f32 = dim, flip_sin_to_cos, freq_shift, f32

    def forward(self, t, dtype):
        if self.f32:
            return sinusoidal_embedding(t, self.dim, self.flip, self.shift, torch.float32).to(dtype)
        return sinusoidal_embedding(t, self.dim, self.flip, self.shift, dtype)


class TimestepEmbeddingRef(nn.Module):
    def __init__(self, in_dim, dim):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x):
        return self.linear_2(self.act(self.linear_1(x)))


def upsample_nearest2x(x):
    # (N, C, H, W) -> (N, C, 2H, 2W), each pixel copied to a 2x2 block
    return x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


def avgpool2x(x):
    return F.avg_pool2d(x, kernel_size=2, stride=2)


class ResnetBlock2DRef(nn.Module):
    def __init__(self, cin, cout, temb_dim, groups, eps, act_fn, time_scale_shift,
                 output_scale_factor=1.0, up=False, down=False):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps, affine=True)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=1, padding=1)
        if time_scale_shift == "default":
            self.time_emb_proj = nn.Linear(temb_dim, cout)
        elif time_scale_shift == "scale_shift":
            self.time_emb_proj = nn.Linear(temb_dim, 2 * cout)
        else:
            raise ValueError("unsupported resnet_time_scale_shift " + repr(time_scale_shift))
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps, affine=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1, stride=1, padding=0) if cin != cout else None
        self.act = activation(act_fn)
        self.scale_shift = time_scale_shift == "scale_shift"
        self.output_scale_factor = output_scale_factor
        self.up, self.down = up, down
        self.dropout = nn.Identity()

    def forward(self, x, temb):
        h = self.act(self.norm1(x))
        if self.up:
            x, h = upsample_nearest2x(x), upsample_nearest2x(h)
        elif self.down:
            x, h = avgpool2x(x), avgpool2x(h)
        h = self.conv1(h)
        t = self.time_emb_proj(self.act(temb))[:, :, None, None]
        if self.scale_shift:
            scale, shift = t.chunk(2, dim=1)
            h = self.norm2(h) * (1.0 + scale) + shift
        else:
            h = self.norm2(h + t)
        h = self.conv2(self.dropout(self.act(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return (x + h) / self.output_scale_factor


class AttentionRef(nn.Module):
    """diffusers' Attention as built for the old attention blocks: spatial self-attention over H*W
    positions, optional GroupNorm first, biased q/k/v/out projections, residual, then division."""

    def __init__(self, channels, head_dim, norm_groups, eps, rescale_output_factor, f32_softmax):
        super().__init__()
        heads = channels // head_dim
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.scale = head_dim ** -0.5
        self.group_norm = (nn.GroupNorm(norm_groups, channels, eps=eps, affine=True)
                           if norm_groups is not None else None)
        self.to_q = nn.Linear(channels, inner, bias=True)
        self.to_k = nn.Linear(channels, inner, bias=True)
        self.to_v = nn.Linear(channels, inner, bias=True)
        self.to_out = nn.ModuleList([nn.Linear(inner, channels, bias=True), nn.Dropout(0.0)])
        self.rescale_output_factor = rescale_output_factor
        self.f32_softmax = f32_softmax

    def forward(self, x):
        n, c, hh, ww = x.shape
        s = x if self.group_norm is None else self.group_norm(x)
        s = s.reshape(n, c, hh * ww).transpose(1, 2)                       # (N, L, C)

        def split(z):                                                      # (N, L, h*d) -> (N, h, L, d)
            return z.reshape(n, hh * ww, self.heads, self.head_dim).permute(0, 2, 1, 3)

        q, k, v = split(self.to_q(s)), split(self.to_k(s)), split(self.to_v(s))
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale          # (N, h, L, L)
        if self.f32_softmax and scores.dtype != torch.float32:
            p = torch.softmax(scores.float(), dim=-1).to(scores.dtype)
        else:
            p = torch.softmax(scores, dim=-1)
        o = torch.matmul(p, v).permute(0, 2, 1, 3).reshape(n, hh * ww, self.heads * self.head_dim)
        o = self.to_out[0](o)
        o = o.transpose(1, 2).reshape(n, c, hh, ww)
        return (o + x) / self.rescale_output_factor


class Downsample2DRef(nn.Module):
    def __init__(self, channels, padding):
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x):
        if self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1))   # right and bottom
        return self.conv(x)


class Upsample2DRef(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=1, padding=1)

    def forward(self, x):
        return self.conv(upsample_nearest2x(x))


class DownBlockRef(nn.Module):
    """DownBlock2D (with_attn False) or AttnDownBlock2D (with_attn True)."""

    def __init__(self, cin, cout, temb_dim, num_layers, add_downsample, with_attn, c):
        super().__init__()
        g, eps, act, tss = c["norm_num_groups"], c["norm_eps"], c["act_fn"], c["resnet_time_scale_shift"]
        self.resnets = nn.ModuleList([
            ResnetBlock2DRef(cin if i == 0 else cout, cout, temb_dim, g, eps, act, tss)
            for i in range(num_layers)])
        if with_attn:
            hd = c["attention_head_dim"] if c["attention_head_dim"] is not None else cout
            self.attentions = nn.ModuleList([
                AttentionRef(cout, hd, g, eps, 1.0, c["_f32_softmax"]) for _ in range(num_layers)])
        else:
            self.attentions = None
        # DownBlock2D always uses the conv sampler; downsample_type applies to AttnDownBlock2D only.
        self.sampler_is_resnet = with_attn and add_downsample and (c["downsample_type"] or "conv") == "resnet"
        if not add_downsample:
            self.downsamplers = None
        elif self.sampler_is_resnet:
            self.downsamplers = nn.ModuleList([
                ResnetBlock2DRef(cout, cout, temb_dim, g, eps, act, tss, down=True)])
        else:
            self.downsamplers = nn.ModuleList([Downsample2DRef(cout, c["downsample_padding"])])

    def forward(self, h, temb):
        outs = []
        for i, res in enumerate(self.resnets):
            h = res(h, temb)
            if self.attentions is not None:
                h = self.attentions[i](h)
            outs.append(h)
        if self.downsamplers is not None:
            d = self.downsamplers[0]
            h = d(h, temb) if self.sampler_is_resnet else d(h)
            outs.append(h)
        return h, outs


class UpBlockRef(nn.Module):
    """UpBlock2D or AttnUpBlock2D: num_layers resnets, each fed cat([h, skip]) along channels."""

    def __init__(self, cin, cout, prev_cout, temb_dim, num_layers, add_upsample, with_attn, c):
        super().__init__()
        g, eps, act, tss = c["norm_num_groups"], c["norm_eps"], c["act_fn"], c["resnet_time_scale_shift"]
        res = []
        for i in range(num_layers):
            skip_ch = cin if i == num_layers - 1 else cout
            in_ch = prev_cout if i == 0 else cout
            res.append(ResnetBlock2DRef(in_ch + skip_ch, cout, temb_dim, g, eps, act, tss))
        self.resnets = nn.ModuleList(res)
        if with_attn:
            hd = c["attention_head_dim"] if c["attention_head_dim"] is not None else cout
            self.attentions = nn.ModuleList([
                AttentionRef(cout, hd, g, eps, 1.0, c["_f32_softmax"]) for _ in range(num_layers)])
        else:
            self.attentions = None
        self.sampler_is_resnet = with_attn and add_upsample and (c["upsample_type"] or "conv") == "resnet"
        if not add_upsample:
            self.upsamplers = None
        elif self.sampler_is_resnet:
            self.upsamplers = nn.ModuleList([ResnetBlock2DRef(cout, cout, temb_dim, g, eps, act, tss, up=True)])
        else:
            self.upsamplers = nn.ModuleList([Upsample2DRef(cout)])

    def forward(self, h, skips, temb):
        skips = list(skips)
        for i, res in enumerate(self.resnets):
            h = res(torch.cat([h, skips.pop()], dim=1), temb)
            if self.attentions is not None:
                h = self.attentions[i](h)
        if self.upsamplers is not None:
            u = self.upsamplers[0]
            h = u(h, temb) if self.sampler_is_resnet else u(h)
        return h


class MidBlockRef(nn.Module):
    """UNetMidBlock2D with one layer: resnet, [attention], resnet."""

    def __init__(self, ch, temb_dim, c):
        super().__init__()
        g, eps, act, tss = c["norm_num_groups"], c["norm_eps"], c["act_fn"], c["resnet_time_scale_shift"]
        osf = c["mid_block_scale_factor"]
        self.resnets = nn.ModuleList([
            ResnetBlock2DRef(ch, ch, temb_dim, g, eps, act, tss, output_scale_factor=osf) for _ in range(2)])
        if c["add_attention"]:
            attn_groups = c["attn_norm_num_groups"]
            if attn_groups is None:
                attn_groups = g if tss == "default" else None
            hd = c["attention_head_dim"] if c["attention_head_dim"] is not None else ch
            self.attentions = nn.ModuleList([AttentionRef(ch, hd, attn_groups, eps, osf, c["_f32_softmax"])])
        else:
            self.attentions = None

    def forward(self, h, temb):
        h = self.resnets[0](h, temb)
        if self.attentions is not None:
            h = self.attentions[0](h)
        return self.resnets[1](h, temb)


_DOWN_TYPES = {"DownBlock2D": False, "AttnDownBlock2D": True}
_UP_TYPES = {"UpBlock2D": False, "AttnUpBlock2D": True}


class UNet2DRef(nn.Module):
    def __init__(self, config, f32_time_embedding=True, f32_softmax=True):
        super().__init__()
        c = full_config(config)
        c["_f32_softmax"] = f32_softmax
        self.cfg = c
        boc = list(c["block_out_channels"])
        nlev = len(boc)
        if len(c["down_block_types"]) != nlev or len(c["up_block_types"]) != nlev:
            raise ValueError("block_out_channels, down_block_types and up_block_types differ in length")
        if c["time_embedding_type"] != "positional":
            raise ValueError("only time_embedding_type 'positional' is modelled")
        if c["mid_block_type"] not in (None, "UNetMidBlock2D"):
            raise ValueError("unsupported mid_block_type " + repr(c["mid_block_type"]))
        temb_dim = boc[0] * 4

        self.conv_in = nn.Conv2d(c["in_channels"], boc[0], 3, padding=1)
        self.time_proj = TimestepsRef(boc[0], c["flip_sin_to_cos"], c["freq_shift"], f32_time_embedding)
        self.time_embedding = TimestepEmbeddingRef(boc[0], temb_dim)
        if c["class_embed_type"] is None and c["num_class_embeds"] is not None:
            self.class_embedding = nn.Embedding(c["num_class_embeds"], temb_dim)
        elif c["class_embed_type"] == "timestep":
            self.class_embedding = TimestepEmbeddingRef(boc[0], temb_dim)
        elif c["class_embed_type"] is None:
            self.class_embedding = None
        else:
            raise ValueError("unsupported class_embed_type " + repr(c["class_embed_type"]))

        self.down_blocks = nn.ModuleList()
        cout = boc[0]
        for i, bt in enumerate(c["down_block_types"]):
            if bt not in _DOWN_TYPES:
                raise ValueError("unsupported down block " + bt)
            cin, cout = cout, boc[i]
            self.down_blocks.append(DownBlockRef(cin, cout, temb_dim, c["layers_per_block"],
                                                 i != nlev - 1, _DOWN_TYPES[bt], c))

        self.mid_block = MidBlockRef(boc[-1], temb_dim, c) if c["mid_block_type"] is not None else None

        self.up_blocks = nn.ModuleList()
        rev = boc[::-1]
        cout = rev[0]
        for i, bt in enumerate(c["up_block_types"]):
            if bt not in _UP_TYPES:
                raise ValueError("unsupported up block " + bt)
            prev, cout = cout, rev[i]
            cin = rev[min(i + 1, nlev - 1)]
            self.up_blocks.append(UpBlockRef(cin, cout, prev, temb_dim, c["layers_per_block"] + 1,
                                             i != nlev - 1, _UP_TYPES[bt], c))

        self.conv_norm_out = nn.GroupNorm(c["norm_num_groups"], boc[0], eps=c["norm_eps"])
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(boc[0], c["out_channels"], 3, padding=1)
        if c.get("dropout", 0.0) > 0:   # active only in train() mode, as in diffusers
            for m in self.modules():
                if isinstance(m, ResnetBlock2DRef):
                    m.dropout = nn.Dropout(c["dropout"])

    def forward(self, sample, timesteps, class_labels=None):
        c = self.cfg
        dtype = self.conv_in.weight.dtype
        if c["center_input_sample"]:
            sample = 2 * sample - 1.0
        t = torch.as_tensor(timesteps)
        if t.ndim == 0:
            t = t[None]
        t = t.expand(sample.shape[0])
        emb = self.time_embedding(self.time_proj(t, dtype))
        if self.class_embedding is not None:
            if class_labels is None:
                raise ValueError("this model needs class_labels")
            cl = torch.as_tensor(class_labels)
            if c["class_embed_type"] == "timestep":
                emb = emb + self.class_embedding(self.time_proj(cl, dtype))
            else:
                emb = emb + self.class_embedding(cl.long())

        h = self.conv_in(sample)
        skips = [h]
        for blk in self.down_blocks:
            h, outs = blk(h, emb)
            skips.extend(outs)
        if self.mid_block is not None:
            h = self.mid_block(h, emb)
        for blk in self.up_blocks:
            n = len(blk.resnets)
            h = blk(h, skips[-n:], emb)
            del skips[-n:]
        return self.conv_out(self.conv_act(self.conv_norm_out(h)))


# ---------------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------------

_LEGACY = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_LEGACY_RE = re.compile(r"^(.*\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$")


def canonical_name(name):
    """Map the old attention-block names (query/key/value/proj_attn) to to_q/to_k/to_v/to_out.0."""
    m = _LEGACY_RE.match(name)
    if m:
        return f"{m.group(1)}.{_LEGACY[m.group(2)]}.{m.group(3)}"
    return name


def legacy_name(name):
    m = re.match(r"^(.*\.attentions\.\d+)\.(to_q|to_k|to_v|to_out\.0)\.(weight|bias)$", name)
    if m:
        inv = {v: k for k, v in _LEGACY.items()}
        return f"{m.group(1)}.{inv[m.group(2)]}.{m.group(3)}"
    return name


def load_weights(model, tensors, strict=True):
    """Copy name -> array into the model (canonical or legacy names). Returns the list of names used."""
    params = dict(model.named_parameters())
    seen = set()
    extra = []
    for name, arr in tensors.items():
        cname = canonical_name(name)
        if cname not in params:
            extra.append(name)
            continue
        p = params[cname]
        a = np.asarray(arr, dtype=np.float64)
        if tuple(a.shape) != tuple(p.shape):
            if a.size == p.numel():        # e.g. (C, C, 1, 1) projections from old checkpoints
                a = a.reshape(tuple(p.shape))
            else:
                raise ValueError(f"{name}: shape {a.shape}, model wants {tuple(p.shape)}")
        if cname in seen:
            raise ValueError(f"{cname} given twice (canonical and legacy name)")
        with torch.no_grad():
            p.copy_(torch.from_numpy(a).to(p.dtype))
        seen.add(cname)
    missing = sorted(set(params) - seen)
    if strict and (missing or extra):
        raise ValueError(f"weights do not match the config: missing {missing[:8]}, unexpected {extra[:8]}")
    return sorted(seen)


def build_from_files(config_path, weight_paths, dtype=torch.float64, diffusers_f32_steps=True):
    with open(config_path) as f:
        cfg = json.load(f)
    model = UNet2DRef(cfg, f32_time_embedding=diffusers_f32_steps, f32_softmax=diffusers_f32_steps).to(dtype)
    tensors = {}
    for p in weight_paths:
        t, _ = read_safetensors(p)
        tensors.update(t)
    load_weights(model, tensors)
    model.eval()
    return model


def eps_and_grads(model, x, t, grad_out, class_labels=None):
    """eps = model(x, t[, class_labels]); gradients of L = sum(grad_out * eps) for x and every
    parameter. All arrays are numpy; returns (eps, grad_x, {param name: grad})."""
    dtype = model.conv_in.weight.dtype
    xt = torch.tensor(np.asarray(x, dtype=np.float64), dtype=dtype, requires_grad=True)
    tt = torch.as_tensor(np.asarray(t, dtype=np.int64))
    cl = None if class_labels is None else torch.as_tensor(np.asarray(class_labels, dtype=np.int64))
    model.zero_grad(set_to_none=True)
    eps = model(xt, tt, cl)
    go = torch.tensor(np.asarray(grad_out, dtype=np.float64), dtype=dtype)
    (eps * go).sum().backward()
    grads = {}
    for name, p in model.named_parameters():
        grads[name] = (p.grad if p.grad is not None else torch.zeros_like(p)).detach().double().numpy()
    return eps.detach().double().numpy(), xt.grad.detach().double().numpy(), grads
