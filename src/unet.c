/* diffusers' UNet2DModel and UNet2DConditionModel as a sequence of layers: a config becomes the parameter
 * table (diffusers' state-dict names, shapes, init) and the tape of ops (tape.c) for a given batch and
 * image size (and text length). */
#include "graph.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

typedef struct {
    unet_graph *g;
    const df_unet_config *cfg;
    int temb;          /* the time embedding value (N, temb_dim) */
    int temb_act;      /* SiLU of it, shared by every resnet's time_emb_proj */
    int ctx;           /* the text states a condition model attends to (N, cross_attention_dim, 1, L) */
} builder;

#define V(id) (B->g->vals[id])
#define ERR (B->g->err)

/* ---- layers ------------------------------------------------------------------------------------ */

typedef struct {
    int cout, kernel;
    int stride;          /* 0 means 1 */
    int pad[4];          /* top, left, bottom, right */
    int linear_weight;   /* a 2-D (cout, cin) weight: diffusers' Linear used as a 1x1 projection */
} conv_args;

static int conv(builder *B, int x, const char *prefix, conv_args a) {
    if (ERR) return -1;
    const gvalue in = V(x);
    const int k = a.kernel, stride = a.stride ? a.stride : 1, fan = in.c * k * k;
    param_spec ws = {.init = INIT_FANIN_UNIFORM, .fan_in = fan, .shape = {a.cout, in.c, k, k}};
    if (a.linear_weight) ws.shape[2] = ws.shape[3] = 0;
    int w = tape_param(B->g, ws, "%s.weight", prefix);
    int b = tape_param(B->g, (param_spec){.init = INIT_FANIN_UNIFORM, .fan_in = fan, .shape = {a.cout}}, "%s.bias", prefix);
    return tape_conv(B->g, x, w, b, a.cout, k, stride, a.pad);
}

/* The 3x3, stride 1, pad 1 convolution of most of the network. */
static int conv3x3(builder *B, int x, const char *prefix, int cout) {
    return conv(B, x, prefix, (conv_args){.cout = cout, .kernel = 3, .pad = {1, 1, 1, 1}});
}

static int linear(builder *B, int x, const char *prefix, int out) {
    if (ERR) return -1;
    const gvalue in = V(x);
    int w = tape_param(B->g, (param_spec){.init = INIT_FANIN_UNIFORM, .fan_in = in.c, .shape = {out, in.c}}, "%s.weight",
                       prefix);
    int b = tape_param(B->g, (param_spec){.init = INIT_FANIN_UNIFORM, .fan_in = in.c, .shape = {out}}, "%s.bias", prefix);
    gnode *d = tape_node(B->g, OP_LINEAR, x, -1, -1, tape_value(B->g, in.n, out, 1, 1));
    if (!d) return -1;
    d->w = w, d->b = b;
    return d->out;
}

/* GroupNorm (OP_GROUPNORM), or silu(GroupNorm(x + v)) in one op (OP_NORM_SILU; v: a per-image,
 * per-channel vector, or -1) that keeps only its output and the statistics and recomputes the
 * normalised values in its backward pass. Both have GroupNorm's parameters. */
static int norm_op(builder *B, op_kind op, int x, int v, const char *prefix, int groups, float eps) {
    if (ERR) return -1;
    const gvalue in = V(x);
    int w = tape_param(B->g, (param_spec){.init = INIT_ONE, .fan_in = 0, .shape = {in.c}}, "%s.weight", prefix);
    int b = tape_param(B->g, (param_spec){.init = INIT_ZERO, .fan_in = 0, .shape = {in.c}}, "%s.bias", prefix);
    gnode *d = tape_node(B->g, op, x, v, -1, tape_value(B->g, in.n, in.c, in.h, in.w));
    if (!d) return -1;
    d->w = w, d->b = b;
    d->iarg[0] = groups;
    d->farg[0] = eps;
    return d->out;
}

static int groupnorm(builder *B, int x, const char *prefix, int groups) {
    return norm_op(B, OP_GROUPNORM, x, -1, prefix, groups, B->cfg->norm_eps);
}

static int norm_silu(builder *B, int x, int v, const char *prefix, int groups) {
    return norm_op(B, OP_NORM_SILU, x, v, prefix, groups, B->cfg->norm_eps);
}

/* An op of one input whose output has its shape (but for resampling); farg as given. */
static int unary(builder *B, op_kind op, int x, float a0, float a1) {
    if (ERR) return -1;
    const gvalue in = V(x);
    int ho = in.h, wo = in.w;
    if (op == OP_UPSAMPLE) ho *= 2, wo *= 2;
    if (op == OP_AVGPOOL) ho /= 2, wo /= 2;
    if (op == OP_MEAN_HW) ho = wo = 1;
    gnode *d = tape_node(B->g, op, x, -1, -1, tape_value(B->g, in.n, in.c, ho, wo));
    if (!d) return -1;
    d->farg[0] = a0, d->farg[1] = a1;
    return d->out;
}

static int silu(builder *B, int x) { return unary(B, OP_SILU, x, 0, 0); }

static int dropout(builder *B, int x) {
    float p = B->cfg->dropout;
    if (p <= 0 || ERR) return x;
    B->g->has_dropout = 1;   /* its mask is regenerated in the backward pass: nothing saved */
    return unary(B, OP_DROPOUT, x, p, 0);
}

static int binary(builder *B, op_kind op, int a, int b, float scale) {
    if (ERR) return -1;
    const gvalue va = V(a), vb = V(b);
    int c = op == OP_CONCAT ? va.c + vb.c : va.c;
    gnode *d = tape_node(B->g, op, a, b, -1, tape_value(B->g, va.n, c, va.h, va.w));
    if (!d) return -1;
    d->farg[0] = scale;
    return d->out;
}

/* ---- blocks ------------------------------------------------------------------------------------ */

typedef struct {
    int   cout;
    float out_scale;                                         /* the sum is divided by it; 0 means 1 */
    enum { RESAMPLE_NONE, RESAMPLE_UP, RESAMPLE_DOWN } resample;
} resnet_args;

/* ResnetBlock2D: norm1, SiLU, [resample], conv1, + time_emb_proj(SiLU(temb)) (or scale-shift after
 * norm2), norm2, SiLU, dropout, conv2, 1x1 shortcut when channels change, (x + h) / out_scale. */
static int resnet(builder *B, int x, resnet_args a, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int resnet(builder *B, int x, resnet_args a, const char *fmt, ...) {
    char pre[96], name[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    if (ERR) return -1;
    const df_unet_config *cfg = B->cfg;
    const int cin = V(x).c, cout = a.cout;
    snprintf(name, sizeof name, "%s.norm1", pre);
    int h = norm_silu(B, x, -1, name, cfg->norm_num_groups);
    int skip = x;
    if (a.resample != RESAMPLE_NONE) {
        op_kind op = a.resample == RESAMPLE_UP ? OP_UPSAMPLE : OP_AVGPOOL;
        skip = unary(B, op, skip, 0, 0);
        h = unary(B, op, h, 0, 0);
    }
    snprintf(name, sizeof name, "%s.conv1", pre);
    h = conv3x3(B, h, name, cout);
    snprintf(name, sizeof name, "%s.time_emb_proj", pre);
    int t = linear(B, B->temb_act, name, cfg->scale_shift ? 2 * cout : cout);
    snprintf(name, sizeof name, "%s.norm2", pre);
    if (cfg->scale_shift) {
        h = groupnorm(B, h, name, cfg->norm_num_groups);
        h = silu(B, binary(B, OP_SCALE_SHIFT, h, t, 1));
    } else {
        h = norm_silu(B, h, t, name, cfg->norm_num_groups);   /* the time embedding is added first */
    }
    h = dropout(B, h);
    snprintf(name, sizeof name, "%s.conv2", pre);
    h = conv3x3(B, h, name, cout);
    if (cin != cout) {
        snprintf(name, sizeof name, "%s.conv_shortcut", pre);
        skip = conv(B, skip, name, (conv_args){.cout = cout, .kernel = 1});
    }
    return binary(B, OP_ADD, skip, h, 1.0f / (a.out_scale ? a.out_scale : 1));
}

typedef struct {
    int   groups;     /* of the group norm first; 0: none */
    int   head_dim;   /* 0: one head over all channels */
    float rescale;    /* the residual sum is divided by it; 0 means 1 */
} attention_args;

/* diffusers' Attention in its spatial self-attention form: [group_norm], to_q/to_k/to_v, softmax over
 * positions per head, to_out.0, + residual, / rescale. */
static int attention(builder *B, int x, attention_args a, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int attention(builder *B, int x, attention_args a, const char *fmt, ...) {
    char pre[96], name[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    if (ERR) return -1;
    const gvalue in = V(x);
    const int c = in.c, d = a.head_dim ? a.head_dim : c;
    const int heads = c / d, inner = heads * d;
    const conv_args proj = {.cout = inner, .kernel = 1, .linear_weight = 1};
    int h = x;
    if (a.groups) {
        snprintf(name, sizeof name, "%s.group_norm", pre);
        h = groupnorm(B, x, name, a.groups);
    }
    snprintf(name, sizeof name, "%s.to_q", pre);
    int q = conv(B, h, name, proj);
    snprintf(name, sizeof name, "%s.to_k", pre);
    int k = conv(B, h, name, proj);
    snprintf(name, sizeof name, "%s.to_v", pre);
    int v = conv(B, h, name, proj);
    if (ERR) return -1;
    gnode *nd = tape_node(B->g, OP_ATTENTION, q, k, v, tape_value(B->g, in.n, inner, in.h, in.w));
    if (!nd) return -1;
    nd->iarg[0] = heads;
    nd->farg[0] = (float)(1.0 / sqrt((double)d));
    snprintf(name, sizeof name, "%s.to_out.0", pre);
    int o = conv(B, nd->out, name, (conv_args){.cout = c, .kernel = 1, .linear_weight = 1});
    return binary(B, OP_ADD, o, x, 1.0f / (a.rescale ? a.rescale : 1));
}

/* ---- the condition model's attention: Transformer2DModel ------------------------------------------------ */

/* A Linear at every position, PyTorch's default init, with or without its bias; plus `residual` (-1: none) by
 * the same node. */
static int token_linear_add(builder *B, int x, const char *pre, const char *what, int cout, int bias, int residual) {
    char name[256];
    snprintf(name, sizeof name, "%s.%s", pre, what);
    const param_spec init = {.init = INIT_FANIN_UNIFORM};
    return tape_token_linear_add(B->g, x, cout, init, bias ? &init : NULL, name, residual);
}
static int token_linear(builder *B, int x, const char *pre, const char *what, int cout, int bias) {
    return token_linear_add(B, x, pre, what, cout, bias, -1);
}

/* diffusers' LayerNorm of a BasicTransformerBlock (eps 1e-5), over the channels at each position. */
static int layernorm(builder *B, int x, const char *pre, const char *what) {
    char name[256];
    snprintf(name, sizeof name, "%s.%s", pre, what);
    return tape_layernorm(B->g, x, 1e-5f, name);
}

/* diffusers' Attention as a BasicTransformerBlock has it: to_q, to_k, to_v without biases (keys and values
 * from kv: the block's own positions, or the text states), softmax(q k^T / sqrt(d)) v, to_out.0; plus the
 * residual, added by to_out.0's node. */
static int transformer_attention(builder *B, int x, int kv, int heads, const char *pre, const char *what,
                                 int residual) {
    char name[200];
    snprintf(name, sizeof name, "%s.%s", pre, what);
    const int c = ERR ? 0 : V(x).c;
    int q = token_linear(B, x, name, "to_q", c, 0), k = token_linear(B, kv, name, "to_k", c, 0);
    int v = token_linear(B, kv, name, "to_v", c, 0);
    if (ERR) return -1;
    gnode *d = tape_node(B->g, OP_ATTENTION, q, k, v, tape_value(B->g, V(x).n, c, V(x).h, V(x).w));
    if (!d) return -1;
    d->iarg[0] = heads;
    d->farg[0] = (float)(1.0 / sqrt((double)(c / heads)));
    return token_linear_add(B, d->out, name, "to_out.0", c, 1, residual);
}

/* BasicTransformerBlock: x + attn1(norm1 x); + attn2(norm2 x, text); + ff(norm3 x), ff a GEGLU to 4x the
 * width (ff.net.0.proj, values then gates) and back (ff.net.2). */
static int transformer_block(builder *B, int x, int heads, const char *pre) {
    if (ERR) return -1;
    const int c = V(x).c;
    int h = layernorm(B, x, pre, "norm1");
    x = transformer_attention(B, h, h, heads, pre, "attn1", x);
    h = layernorm(B, x, pre, "norm2");
    x = transformer_attention(B, h, B->ctx, heads, pre, "attn2", x);
    h = token_linear(B, layernorm(B, x, pre, "norm3"), pre, "ff.net.0.proj", 2 * 4 * c, 1);
    if (ERR) return -1;
    gnode *d = tape_node(B->g, OP_GEGLU, h, -1, -1, tape_value(B->g, V(h).n, 4 * c, V(h).h, V(h).w));
    if (!d) return -1;
    return token_linear_add(B, d->out, pre, "ff.net.2", c, 1, x);
}

/* Transformer2DModel on an image: GroupNorm (eps 1e-6), proj_in (a 1x1 convolution, or a Linear), `layers`
 * BasicTransformerBlocks with heads of channels / heads, proj_out, plus the input. */
static int transformer(builder *B, int x, int heads, int layers, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int transformer(builder *B, int x, int heads, int layers, const char *fmt, ...) {
    char pre[96], name[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    if (ERR) return -1;
    const int c = V(x).c, linear_proj = B->cfg->use_linear_projection;
    snprintf(name, sizeof name, "%s.norm", pre);
    int h = norm_op(B, OP_GROUPNORM, x, -1, name, B->cfg->norm_num_groups, 1e-6f);
    const conv_args proj = {.cout = c, .kernel = 1, .linear_weight = linear_proj};
    snprintf(name, sizeof name, "%s.proj_in", pre);
    h = conv(B, h, name, proj);
    for (int k = 0; k < layers; k++) {
        snprintf(name, sizeof name, "%s.transformer_blocks.%d", pre, k);
        h = transformer_block(B, h, heads, name);
    }
    snprintf(name, sizeof name, "%s.proj_out", pre);
    return binary(B, OP_ADD, conv(B, h, name, proj), x, 1);
}

static int downsample_conv(builder *B, int x, const char *prefix) {
    const int p = B->cfg->downsample_padding;
    conv_args a = {.cout = V(x).c, .kernel = 3, .stride = 2, .pad = {p, p, p, p}};
    if (p == 0)   /* diffusers pads right and bottom by one, then pad 0 */
        a.pad[2] = a.pad[3] = 1;
    return conv(B, x, prefix, a);
}

/* source 0: sinusoids of the timesteps; 1: of the class labels. */
static int timestep_embedding(builder *B, int n, int source, const char *prefix) {
    const df_unet_config *cfg = B->cfg;
    int dim = cfg->block_out_channels[0];
    gnode *d = tape_node(B->g, OP_TIMESTEP, -1, -1, -1, tape_value(B->g, n, dim, 1, 1));
    if (!d) return -1;
    d->iarg[0] = cfg->flip_sin_to_cos;
    d->iarg[2] = source;
    d->farg[0] = cfg->freq_shift;
    int s = d->out;
    char name[128];
    snprintf(name, sizeof name, "%s.linear_1", prefix);
    int h = silu(B, linear(B, s, name, 4 * dim));
    snprintf(name, sizeof name, "%s.linear_2", prefix);
    return linear(B, h, name, 4 * dim);
}

/* ---- the model ------------------------------------------------------------------------------------ */

/* The up blocks (each resnet fed the matching skip connection), then conv_norm_out and conv_out. */
static int decoder(builder *B, const df_unet_config *cfg, int s, const int *skips, int nskips) {
    const int levels = cfg->num_levels, groups = cfg->norm_num_groups;
    const attention_args attn = {.groups = groups, .head_dim = cfg->attention_head_dim};
    for (int i = 0; i < levels; i++) {
        int cout = cfg->block_out_channels[levels - 1 - i], last = i == levels - 1;
        for (int j = 0; j <= cfg->layers_per_block; j++) {
            DF_ASSERT(nskips > 0);
            s = binary(B, OP_CONCAT, s, skips[--nskips], 1);
            s = resnet(B, s, (resnet_args){.cout = cout}, "up_blocks.%d.resnets.%d", i, j);
            if (cfg->up_attn[i] && cfg->condition)   /* up block i works at level levels - 1 - i */
                s = transformer(B, s, cfg->attention_heads[levels - 1 - i], cfg->transformer_layers[levels - 1 - i],
                                "up_blocks.%d.attentions.%d", i, j);
            else if (cfg->up_attn[i])
                s = attention(B, s, attn, "up_blocks.%d.attentions.%d", i, j);
        }
        if (!last) {
            if (cfg->up_attn[i] && cfg->upsample_resnet) {
                s = resnet(B, s, (resnet_args){.cout = cout, .resample = RESAMPLE_UP}, "up_blocks.%d.upsamplers.0", i);
            } else {
                char name[128];
                snprintf(name, sizeof name, "up_blocks.%d.upsamplers.0.conv", i);
                s = conv3x3(B, unary(B, OP_UPSAMPLE, s, 0, 0), name, cout);
            }
        }
    }
    DF_ASSERT(ERR || nskips == 0);

    s = norm_silu(B, s, -1, "conv_norm_out", groups);
    s = conv3x3(B, s, "conv_out", cfg->out_channels);
    return s;
}

df_status unet_build(const df_unet_config *cfg, int n, int h, int w, int ctx_len, unet_graph *g) {
    memset(g, 0, sizeof *g);
    df_status st = df_unet_config_validate(cfg);
    if (st) return st;
    int levels = cfg->num_levels, f = 1 << (levels - 1);
    if (n < 1 || h < 1 || w < 1 || h % f || w % f)
        return df_fail(DF_ERR_SHAPE, "image size %dx%d must be a positive multiple of %d for %d levels", h,
                       w, f, levels);
    builder Bs = {.g = g, .cfg = cfg}, *B = &Bs;
    g->n = n, g->h = h, g->w = w;
    const int temb_dim = 4 * cfg->block_out_channels[0];
    const int groups = cfg->norm_num_groups;

    if (cfg->condition && (ctx_len < 1 || ctx_len > 4096))
        return df_fail(DF_ERR_SHAPE, "text states of %d tokens (expected 1 to 4096)", ctx_len);
    int x = tape_value(g, n, cfg->in_channels, h, w);
    g->x = x;
    g->ctx = B->ctx = cfg->condition ? tape_value(g, n, cfg->cross_attention_dim, 1, ctx_len) : -1;
    int s = x;
    if (cfg->center_input_sample) s = unary(B, OP_AFFINE, x, 2, -1);   /* [0, 1] -> [-1, 1] */

    int emb = timestep_embedding(B, n, 0, "time_embedding");
    if (cfg->num_class_embeds > 0 && !cfg->class_embed_timestep) {
        int table = tape_param(g, (param_spec){.init = INIT_NORMAL, .fan_in = 0, .shape = {cfg->num_class_embeds, temb_dim}},
                               "class_embedding.weight");
        gnode *d = tape_node(g, OP_EMBED, -1, -1, -1, tape_value(g, n, temb_dim, 1, 1));
        if (d) d->w = table;
        emb = binary(B, OP_ADD, emb, d ? d->out : -1, 1);
    } else if (cfg->class_embed_timestep) {
        int ce = timestep_embedding(B, n, 1, "class_embedding");
        emb = binary(B, OP_ADD, emb, ce, 1);
    }
    B->temb = emb;
    B->temb_act = silu(B, emb);

    s = conv3x3(B, s, "conv_in", cfg->block_out_channels[0]);
    int skips[DF_MAX_LEVELS * 20], nskips = 0;
    skips[nskips++] = s;

    const attention_args attn = {.groups = groups, .head_dim = cfg->attention_head_dim};
    for (int i = 0; i < levels; i++) {
        int cout = cfg->block_out_channels[i], last = i == levels - 1;
        for (int j = 0; j < cfg->layers_per_block; j++) {
            s = resnet(B, s, (resnet_args){.cout = cout}, "down_blocks.%d.resnets.%d", i, j);
            if (cfg->down_attn[i] && cfg->condition)
                s = transformer(B, s, cfg->attention_heads[i], cfg->transformer_layers[i], "down_blocks.%d.attentions.%d",
                                i, j);
            else if (cfg->down_attn[i])
                s = attention(B, s, attn, "down_blocks.%d.attentions.%d", i, j);
            skips[nskips++] = s;
        }
        if (!last) {
            char name[128];
            if (cfg->down_attn[i] && cfg->downsample_resnet) {
                s = resnet(B, s, (resnet_args){.cout = cout, .resample = RESAMPLE_DOWN}, "down_blocks.%d.downsamplers.0", i);
            } else {
                snprintf(name, sizeof name, "down_blocks.%d.downsamplers.0.conv", i);
                s = downsample_conv(B, s, name);
            }
            skips[nskips++] = s;
        }
    }

    if (cfg->mid_block) {
        const resnet_args r = {.cout = cfg->block_out_channels[levels - 1], .out_scale = cfg->mid_block_scale_factor};
        s = resnet(B, s, r, "mid_block.resnets.0");
        if (cfg->condition) {
            s = transformer(B, s, cfg->attention_heads[levels - 1], cfg->transformer_layers[levels - 1],
                            "mid_block.attentions.0");
        } else if (cfg->add_attention) {
            int ag = cfg->attn_norm_num_groups ? cfg->attn_norm_num_groups : (cfg->scale_shift ? 0 : groups);
            s = attention(B, s, (attention_args){.groups = ag, .head_dim = cfg->attention_head_dim, .rescale = r.out_scale},
                          "mid_block.attentions.0");
        }
        s = resnet(B, s, r, "mid_block.resnets.1");
    }

    if (cfg->classifier_classes > 0) {
        /* the classifier's head instead of the decoder: GroupNorm, SiLU, the mean over the image, logits */
        s = norm_silu(B, s, -1, "classifier.norm", groups);
        s = unary(B, OP_MEAN_HW, s, 0, 0);
        s = linear(B, s, "classifier.linear", cfg->classifier_classes);
    } else {
        s = decoder(B, cfg, s, skips, nskips);
    }
    g->out = s;
    st = tape_plan(g);
    if (st) unet_graph_free(g);
    return st;
}
