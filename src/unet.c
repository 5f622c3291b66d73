/* diffusers' UNet2DModel as a tape: this file turns a config into the parameter table (diffusers'
 * state-dict names, shapes, init) and the sequence of ops for a given batch and image size. */
#include "graph.h"
#include "conv_fast.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

const char *const op_names[OP_COUNT] = {
    "conv", "linear", "groupnorm", "silu", "timestep", "embed", "upsample", "avgpool",
    "concat", "add", "add_nc", "scale_shift", "attention", "dropout", "affine", "norm_silu", "mean_hw",
};
_Static_assert(sizeof(op_names) / sizeof(op_names[0]) == OP_COUNT, "op name table");

typedef struct {
    unet_graph *g;
    const df_unet_config *cfg;
    int temb;          /* the time embedding value (N, temb_dim) */
    int temb_act;      /* SiLU of it, shared by every resnet's time_emb_proj */
    df_status err;
} builder;

/* Make room for one more element in the array *pp (count *n, capacity *cap); records an error on
 * failure. Returns 0 when there is room. */
static int grow(builder *B, void **pp, int *cap, int n, size_t elem) {
    if (B->err) return -1;
    if (n < *cap) return 0;
    int c = *cap ? *cap * 2 : 64;
    void *q = realloc(*pp, (size_t)c * elem);
    if (!q) {
        B->err = df_fail(DF_ERR_NOMEM, "out of memory building the network");
        return -1;
    }
    *pp = q;
    *cap = c;
    return 0;
}

static int add_param(builder *B, init_kind init, int fan_in, int ndim, int s0, int s1, int s2, int s3,
                     const char *fmt, ...) __attribute__((format(printf, 9, 10)));
static int add_param(builder *B, init_kind init, int fan_in, int ndim, int s0, int s1, int s2, int s3,
                     const char *fmt, ...) {
    unet_graph *g = B->g;
    if (grow(B, (void **)&g->params, &g->cap_params, g->nparams, sizeof(gparam))) return -1;
    gparam *p = &g->params[g->nparams];
    memset(p, 0, sizeof *p);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->name, sizeof p->name, fmt, ap);
    va_end(ap);
    int s[4] = {s0, s1, s2, s3};
    p->ndim = ndim;
    p->numel = 1;
    for (int i = 0; i < 4; i++) {
        p->shape[i] = i < ndim ? s[i] : 1;
        if (i < ndim) p->numel *= (size_t)s[i];
    }
    p->off = g->nparam_values;
    p->init = init;
    p->fan_in = fan_in;
    g->nparam_values += p->numel;
    return g->nparams++;
}

static int add_value(builder *B, int n, int c, int h, int w) {
    unet_graph *g = B->g;
    if (grow(B, (void **)&g->vals, &g->cap_vals, g->nvals, sizeof(gvalue))) return -1;
    gvalue *v = &g->vals[g->nvals];
    v->n = n, v->c = c, v->h = h, v->w = w, v->blk = 1, v->remat = 0, v->producer = -1, v->roff = 0;
    v->off = g->act_size;
    g->act_size += ((size_t)n * c * h * w + 15) & ~(size_t)15;   /* 64-byte aligned starts */
    return g->nvals++;
}

static gnode *add_node(builder *B, op_kind op, int in0, int in1, int in2) {
    unet_graph *g = B->g;
    if (grow(B, (void **)&g->nodes, &g->cap_nodes, g->nnodes, sizeof(gnode))) return NULL;
    gnode *d = &g->nodes[g->nnodes++];
    memset(d, 0, sizeof *d);
    d->op = op;
    d->in[0] = in0, d->in[1] = in1, d->in[2] = in2;
    d->out = d->w = d->b = -1;
    return d;
}

static size_t reserve_saved(builder *B, size_t count) {
    size_t off = B->g->act_size;
    B->g->act_size += (count + 15) & ~(size_t)15;
    return off;
}

static void need_scratch(builder *B, size_t count) {
    if (count > B->g->scratch_size) B->g->scratch_size = count;
}

#define V(id) (B->g->vals[id])

/* ---- layers ------------------------------------------------------------------------------------ */

/* A convolution; `linear_names` gives 2-D weights (diffusers' Linear used as a 1x1 projection). */
static int conv(builder *B, int x, const char *prefix, int cout, int k, int stride, int pad_t, int pad_l,
                int pad_b, int pad_r, int linear_names) {
    if (B->err) return -1;
    gvalue in = V(x);
    int fan = in.c * k * k;
    int w = linear_names ? add_param(B, INIT_FANIN_UNIFORM, fan, 2, cout, in.c, 1, 1, "%s.weight", prefix)
                         : add_param(B, INIT_FANIN_UNIFORM, fan, 4, cout, in.c, k, k, "%s.weight", prefix);
    int b = add_param(B, INIT_FANIN_UNIFORM, fan, 1, cout, 1, 1, 1, "%s.bias", prefix);
    int ho = (in.h + pad_t + pad_b - k) / stride + 1, wo = (in.w + pad_l + pad_r - k) / stride + 1;
    int y = add_value(B, in.n, cout, ho, wo);
    gnode *d = add_node(B, OP_CONV, x, -1, -1);
    if (!d) return -1;
    d->out = y, d->w = w, d->b = b;
    d->conv = (conv_geom){in.c, in.h, in.w, cout, k, stride, pad_t, pad_l, ho, wo};
    size_t K = (size_t)in.c * k * k, P = (size_t)ho * wo;
    need_scratch(B, 2 * K * P + (size_t)cout * K + cout);
    B->g->flops += 2.0 * in.n * (double)cout * (double)K * (double)P;
    return y;
}

static int linear(builder *B, int x, const char *prefix, int out) {
    if (B->err) return -1;
    gvalue in = V(x);
    int w = add_param(B, INIT_FANIN_UNIFORM, in.c, 2, out, in.c, 1, 1, "%s.weight", prefix);
    int b = add_param(B, INIT_FANIN_UNIFORM, in.c, 1, out, 1, 1, 1, "%s.bias", prefix);
    int y = add_value(B, in.n, out, 1, 1);
    gnode *d = add_node(B, OP_LINEAR, x, -1, -1);
    if (!d) return -1;
    d->out = y, d->w = w, d->b = b;
    B->g->flops += 2.0 * in.n * (double)in.c * out;
    return y;
}

/* GroupNorm (OP_GROUPNORM), or silu(GroupNorm(x + v)) in one op (OP_NORM_SILU; v: a per-image,
 * per-channel vector, or -1) that keeps only its output and the statistics and recomputes the
 * normalised values in its backward pass. Both have GroupNorm's parameters. */
static int norm_op(builder *B, op_kind op, int x, int v, const char *prefix, int groups) {
    if (B->err) return -1;
    gvalue in = V(x);
    int w = add_param(B, INIT_ONE, 0, 1, in.c, 1, 1, 1, "%s.weight", prefix);
    int b = add_param(B, INIT_ZERO, 0, 1, in.c, 1, 1, 1, "%s.bias", prefix);
    int y = add_value(B, in.n, in.c, in.h, in.w);
    gnode *d = add_node(B, op, x, v, -1);
    if (!d) return -1;
    d->out = y, d->w = w, d->b = b;
    d->iarg[0] = groups;
    d->farg[0] = B->cfg->norm_eps;
    d->saved_len = 2 * (size_t)in.n * groups;
    d->saved = reserve_saved(B, d->saved_len);
    need_scratch(B, 2 * 8 * (size_t)in.n * in.c);   /* doubles, counted in reals */
    return y;
}

static int groupnorm(builder *B, int x, const char *prefix, int groups) {
    return norm_op(B, OP_GROUPNORM, x, -1, prefix, groups);
}

static int norm_silu(builder *B, int x, int v, const char *prefix, int groups) {
    return norm_op(B, OP_NORM_SILU, x, v, prefix, groups);
}

static int unary(builder *B, op_kind op, int x) {
    if (B->err) return -1;
    gvalue in = V(x);
    int ho = in.h, wo = in.w;
    if (op == OP_UPSAMPLE) ho *= 2, wo *= 2;
    if (op == OP_AVGPOOL) ho /= 2, wo /= 2;
    if (op == OP_MEAN_HW) ho = wo = 1;
    int y = add_value(B, in.n, in.c, ho, wo);
    gnode *d = add_node(B, op, x, -1, -1);
    if (!d) return -1;
    d->out = y;
    return y;
}

static int silu(builder *B, int x) { return unary(B, OP_SILU, x); }

static int dropout(builder *B, int x) {
    float p = B->cfg->dropout;
    if (p <= 0 || B->err) return x;
    int y = unary(B, OP_DROPOUT, x);
    if (B->err) return -1;
    gnode *d = &B->g->nodes[B->g->nnodes - 1];
    d->farg[0] = p;
    B->g->has_dropout = 1;   /* its mask is regenerated in the backward pass: nothing saved */
    return y;
}

static int binary(builder *B, op_kind op, int a, int b, float scale) {
    if (B->err) return -1;
    gvalue va = V(a), vb = V(b);
    int c = op == OP_CONCAT ? va.c + vb.c : va.c;
    int y = add_value(B, va.n, c, va.h, va.w);
    gnode *d = add_node(B, op, a, b, -1);
    if (!d) return -1;
    d->out = y;
    d->farg[0] = scale;
    return y;
}

/* ---- blocks ------------------------------------------------------------------------------------ */

enum { RESAMPLE_NONE, RESAMPLE_UP, RESAMPLE_DOWN };

/* ResnetBlock2D: norm1, SiLU, [resample], conv1, + time_emb_proj(SiLU(temb)) (or scale-shift after
 * norm2), norm2, SiLU, dropout, conv2, 1x1 shortcut when channels change, (x + h) / out_scale. */
static int resnet(builder *B, int x, int cout, float out_scale, int resample, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static int resnet(builder *B, int x, int cout, float out_scale, int resample, const char *fmt, ...) {
    char pre[96], name[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    if (B->err) return -1;
    const df_unet_config *cfg = B->cfg;
    int cin = V(x).c;
    snprintf(name, sizeof name, "%s.norm1", pre);
    int h = norm_silu(B, x, -1, name, cfg->norm_num_groups);
    int skip = x;
    if (resample == RESAMPLE_UP) {
        skip = unary(B, OP_UPSAMPLE, skip);
        h = unary(B, OP_UPSAMPLE, h);
    } else if (resample == RESAMPLE_DOWN) {
        skip = unary(B, OP_AVGPOOL, skip);
        h = unary(B, OP_AVGPOOL, h);
    }
    snprintf(name, sizeof name, "%s.conv1", pre);
    h = conv(B, h, name, cout, 3, 1, 1, 1, 1, 1, 0);
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
    h = conv(B, h, name, cout, 3, 1, 1, 1, 1, 1, 0);
    if (cin != cout) {
        snprintf(name, sizeof name, "%s.conv_shortcut", pre);
        skip = conv(B, skip, name, cout, 1, 1, 0, 0, 0, 0, 0);
    }
    return binary(B, OP_ADD, skip, h, 1.0f / out_scale);
}

/* diffusers' Attention in its spatial self-attention form: [group_norm], to_q/to_k/to_v, softmax over
 * positions per head, to_out.0, + residual, / rescale. groups 0 means no group norm. */
static int attention(builder *B, int x, int groups, int head_dim, float rescale, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static int attention(builder *B, int x, int groups, int head_dim, float rescale, const char *fmt, ...) {
    char pre[96], name[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    if (B->err) return -1;
    gvalue in = V(x);
    int c = in.c;
    int d = head_dim ? head_dim : c;
    int heads = c / d, inner = heads * d;
    int h = x;
    if (groups) {
        snprintf(name, sizeof name, "%s.group_norm", pre);
        h = groupnorm(B, x, name, groups);
    }
    snprintf(name, sizeof name, "%s.to_q", pre);
    int q = conv(B, h, name, inner, 1, 1, 0, 0, 0, 0, 1);
    snprintf(name, sizeof name, "%s.to_k", pre);
    int k = conv(B, h, name, inner, 1, 1, 0, 0, 0, 0, 1);
    snprintf(name, sizeof name, "%s.to_v", pre);
    int v = conv(B, h, name, inner, 1, 1, 0, 0, 0, 0, 1);
    if (B->err) return -1;
    int L = in.h * in.w;
    int o = add_value(B, in.n, inner, in.h, in.w);
    gnode *nd = add_node(B, OP_ATTENTION, q, k, v);
    if (!nd) return -1;
    nd->out = o;
    nd->iarg[0] = heads;
    nd->farg[0] = (float)(1.0 / sqrt((double)d));
    nd->saved_len = (size_t)in.n * heads * L * L;
    nd->saved = reserve_saved(B, nd->saved_len);
    need_scratch(B, (size_t)L * L);
    B->g->flops += 4.0 * in.n * heads * (double)L * L * d;
    snprintf(name, sizeof name, "%s.to_out.0", pre);
    o = conv(B, o, name, c, 1, 1, 0, 0, 0, 0, 1);
    return binary(B, OP_ADD, o, x, 1.0f / rescale);
}

static int downsample_conv(builder *B, int x, const char *prefix) {
    int c = V(x).c;
    if (B->cfg->downsample_padding == 0)   /* diffusers pads right and bottom by one, then pad 0 */
        return conv(B, x, prefix, c, 3, 2, 0, 0, 1, 1, 0);
    int p = B->cfg->downsample_padding;
    return conv(B, x, prefix, c, 3, 2, p, p, p, p, 0);
}

static int timestep_embedding(builder *B, int n, int source, const char *prefix) {
    const df_unet_config *cfg = B->cfg;
    int dim = cfg->block_out_channels[0];
    int s = add_value(B, n, dim, 1, 1);
    gnode *d = add_node(B, OP_TIMESTEP, -1, -1, -1);
    if (!d) return -1;
    d->out = s;
    d->iarg[0] = cfg->flip_sin_to_cos;
    d->iarg[2] = source;
    d->farg[0] = cfg->freq_shift;
    char name[128];
    snprintf(name, sizeof name, "%s.linear_1", prefix);
    int h = silu(B, linear(B, s, name, 4 * dim));
    snprintf(name, sizeof name, "%s.linear_2", prefix);
    return linear(B, h, name, 4 * dim);
}

/* ---- the model ------------------------------------------------------------------------------------ */

/* ---- memory reuse -------------------------------------------------------------------------------
 * Two more placements of the values, besides the training one where every value keeps its own place:
 * for inference (a value's space is reused once its last reader has run) and for the gradients of a
 * backward pass (a gradient lives from its first writer to its producer's backward). First fit over a
 * list of free spans; sizes are rounded to 16 elements so every start stays 64-byte aligned. */

typedef struct {
    size_t *off, *len;   /* free spans, sorted by offset */
    int     n;
    size_t  top;         /* end of the arena */
} arena;

static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }

static size_t arena_get(arena *a, size_t len) {
    len = round16(len);
    for (int i = 0; i < a->n; i++)
        if (a->len[i] >= len) {
            size_t at = a->off[i];
            a->off[i] += len, a->len[i] -= len;
            if (!a->len[i]) {
                memmove(a->off + i, a->off + i + 1, sizeof(size_t) * (size_t)(a->n - i - 1));
                memmove(a->len + i, a->len + i + 1, sizeof(size_t) * (size_t)(a->n - i - 1));
                a->n--;
            }
            return at;
        }
    /* a free span at the end grows into new space */
    if (a->n && a->off[a->n - 1] + a->len[a->n - 1] == a->top) {
        size_t at = a->off[--a->n];
        a->top = at + len;
        return at;
    }
    a->top += len;
    return a->top - len;
}

static void arena_put(arena *a, size_t off, size_t len) {
    len = round16(len);
    int i = 0;
    while (i < a->n && a->off[i] < off) i++;
    memmove(a->off + i + 1, a->off + i, sizeof(size_t) * (size_t)(a->n - i));
    memmove(a->len + i + 1, a->len + i, sizeof(size_t) * (size_t)(a->n - i));
    a->off[i] = off, a->len[i] = len, a->n++;
    if (i + 1 < a->n && a->off[i] + a->len[i] == a->off[i + 1]) {   /* merge with the next */
        a->len[i] += a->len[i + 1];
        memmove(a->off + i + 1, a->off + i + 2, sizeof(size_t) * (size_t)(a->n - i - 2));
        memmove(a->len + i + 1, a->len + i + 2, sizeof(size_t) * (size_t)(a->n - i - 2));
        a->n--;
    }
    if (i > 0 && a->off[i - 1] + a->len[i - 1] == a->off[i]) {   /* and with the previous */
        a->len[i - 1] += a->len[i];
        memmove(a->off + i, a->off + i + 1, sizeof(size_t) * (size_t)(a->n - i - 1));
        memmove(a->len + i, a->len + i + 1, sizeof(size_t) * (size_t)(a->n - i - 1));
        a->n--;
    }
}

static size_t numel(const gvalue *v) { return (size_t)v->n * v->c * v->h * v->w; }

/* Does the backward of `op` read its k-th input's value? (Otherwise the value may be overwritten once
 * its forward readers are done.) */
static int op_backward_reads(op_kind op, int k) {
    switch (op) {
    case OP_CONV:
    case OP_LINEAR:
    case OP_GROUPNORM:
    case OP_SILU:
        return k == 0;
    case OP_NORM_SILU:
        return k <= 1;
    case OP_SCALE_SHIFT:
        return k <= 1;
    case OP_ATTENTION:
        return 1;
    default:   /* the rest need only the output gradient (or their own saved buffer) */
        return 0;
    }
}

static df_status plan_reuse(unet_graph *g) {
    int cap = 2 * g->nvals + g->nnodes + 4;
    arena a = {malloc(sizeof(size_t) * (size_t)cap), malloc(sizeof(size_t) * (size_t)cap), 0, 0};
    int *last = malloc(sizeof(int) * (size_t)g->nvals), *first = malloc(sizeof(int) * (size_t)g->nvals);
    int *lo = malloc(sizeof(int) * (size_t)g->nvals);
    if (!a.off || !a.len || !last || !first || !lo) {
        free(a.off), free(a.len), free(last), free(first), free(lo);
        return df_fail(DF_ERR_NOMEM, "out of memory planning the network");
    }
    for (int v = 0; v < g->nvals; v++) last[v] = -1, first[v] = -1, lo[v] = -1;
    for (int i = 0; i < g->nnodes; i++) g->vals[g->nodes[i].out].producer = i;
    for (int i = 0; i < g->nnodes; i++)
        for (int k = 0; k < 3; k++) {
            int v = g->nodes[i].in[k];
            if (v < 0) continue;
            last[v] = i;
            if (lo[v] < 0) lo[v] = i;
        }
    last[g->out] = g->nnodes;   /* read by the caller after the pass */

    /* forward placements: outputs take space before the inputs that die at the node give theirs back.
     * Training keeps (never frees) what a backward pass reads: the inputs of ops whose backward needs
     * them, and saved buffers; inference keeps nothing. */
    char *keep = calloc((size_t)g->nvals, 1);
    if (!keep) {
        free(a.off), free(a.len), free(last), free(first), free(lo);
        return df_fail(DF_ERR_NOMEM, "out of memory planning the network");
    }
    for (int i = 0; i < g->nnodes; i++) {
        const gnode *d = &g->nodes[i];
        for (int k = 0; k < 3; k++)
            if (d->in[k] >= 0 && op_backward_reads(d->op, k)) keep[d->in[k]] = 1;
    }
    keep[g->out] = 1;
    /* Values a backward pass reads that are cheap to make again are rebuilt there instead of kept:
     * copies (concat, upsample) from their inputs, which are kept instead when that keeps less (an
     * upsample's input is a quarter of it, a concat saves the part of its inputs not kept anyway); the
     * fused norm's output from its input and statistics (kept for its own backward anyway); a dropout
     * right after the fused norm from the same, with its mask regenerated. */
    for (int i = 0; i < g->nnodes; i++) {
        const gnode *d = &g->nodes[i];
        int v = d->out;
        if (!keep[v] || v == g->out) continue;
        int u = d->in[0], chain = d->op == OP_DROPOUT && u >= 0 && !keep[u] && !g->vals[u].remat &&
                                  g->vals[u].producer >= 0 && g->nodes[g->vals[u].producer].op == OP_NORM_SILU;
        /* the fused norm's input must be kept, or rebuilt before and still there when this is rebuilt
         * (rebuilt at its last reader, freed after its first) */
        int x = d->op == OP_DROPOUT && chain ? g->nodes[g->vals[u].producer].in[0] : u;
        int x_ok = x >= 0 && (!g->vals[x].remat || (last[x] > last[v] && lo[x] < last[v]));
        if (((d->op == OP_NORM_SILU) || chain) && x_ok) {
            keep[v] = 0;
            g->vals[v].remat = 1;
            continue;
        }
        int ok = d->op == OP_CONCAT || d->op == OP_UPSAMPLE;
        size_t extra = 0;
        for (int k = 0; k < 2 && ok; k++) {
            int w = d->in[k];
            if (w < 0) continue;
            ok &= !g->vals[w].remat;
            if (!keep[w]) extra += numel(&g->vals[w]);
        }
        if (!ok || extra >= numel(&g->vals[v])) continue;
        keep[v] = 0;
        g->vals[v].remat = 1;
        for (int k = 0; k < 2; k++)
            if (d->in[k] >= 0) keep[d->in[k]] = 1;
    }
    for (int training = 0; training < 2; training++) {
        a.n = 0, a.top = 0;
#define OFF(v) (*(training ? &g->vals[v].off : &g->vals[v].ioff))
        OFF(g->x) = arena_get(&a, numel(&g->vals[g->x]));
        for (int i = 0; i < g->nnodes; i++) {
            gnode *d = &g->nodes[i];
            gvalue *o = &g->vals[d->out];
            OFF(d->out) = arena_get(&a, numel(o));
            if (d->saved_len) {
                size_t at = arena_get(&a, d->saved_len);
                if (training) d->saved = at;
                else d->isaved = at, arena_put(&a, at, d->saved_len);
            }
            if (last[d->out] < 0 && !(training && keep[d->out])) arena_put(&a, OFF(d->out), numel(o));
            for (int k = 0; k < 3; k++) {
                int v = d->in[k];
                if (v < 0 || last[v] != i || (k > 0 && v == d->in[0]) || (k > 1 && v == d->in[1])) continue;
                if (!(training && keep[v])) arena_put(&a, OFF(v), numel(&g->vals[v]));
            }
        }
#undef OFF
        *(training ? &g->act_size : &g->infer_size) = a.top;
    }
    free(keep);

    /* gradients, in reverse: a value's gradient is born at its last reader (zeroed there: readers add)
     * and freed after its producer's backward has read it; the input's gradient is kept */
    a.n = 0, a.top = 0;
    g->vals[g->out].goff = arena_get(&a, numel(&g->vals[g->out]));
    first[g->out] = g->nnodes;
    for (int i = g->nnodes - 1; i >= 0; i--) {
        gnode *d = &g->nodes[i];
        d->gzero = d->rebuild = 0;
        for (int k = 0; k < 3; k++) {   /* rebuilt values live from their last reader to their first */
            int v = d->in[k];
            if (v < 0 || !g->vals[v].remat || last[v] != i || (k > 0 && v == d->in[k - 1])) continue;
            g->vals[v].roff = arena_get(&a, numel(&g->vals[v]));
            d->rebuild |= 1 << k;
        }
        for (int k = 0; k < 3; k++) {
            int v = d->in[k];
            if (v < 0 || first[v] >= 0) continue;
            first[v] = i;
            g->vals[v].goff = arena_get(&a, numel(&g->vals[v]));
            d->gzero |= 1 << k;
        }
        if (first[d->out] >= 0) arena_put(&a, g->vals[d->out].goff, numel(&g->vals[d->out]));
        else g->vals[d->out].goff = 0, d->gzero |= 8;   /* nobody reads it: no gradient */
        for (int k = 0; k < 3; k++) {
            int v = d->in[k];
            if (v >= 0 && g->vals[v].remat && lo[v] == i && !(k > 0 && v == d->in[k - 1]))
                arena_put(&a, g->vals[v].roff, numel(&g->vals[v]));
        }
    }
    g->grad_size = a.top;
    free(a.off), free(a.len), free(last), free(first), free(lo);
    return DF_OK;
}

/* The up blocks (each resnet fed the matching skip connection), then conv_norm_out and conv_out. */
static int decoder(builder *B, const df_unet_config *cfg, int s, const int *skips, int nskips) {
    const int levels = cfg->num_levels, groups = cfg->norm_num_groups;
    for (int i = 0; i < levels; i++) {
        int cout = cfg->block_out_channels[levels - 1 - i], last = i == levels - 1;
        for (int j = 0; j <= cfg->layers_per_block; j++) {
            DF_ASSERT(nskips > 0);
            s = binary(B, OP_CONCAT, s, skips[--nskips], 1);
            s = resnet(B, s, cout, 1.0f, RESAMPLE_NONE, "up_blocks.%d.resnets.%d", i, j);
            if (cfg->up_attn[i])
                s = attention(B, s, groups, cfg->attention_head_dim, 1.0f, "up_blocks.%d.attentions.%d", i, j);
        }
        if (!last) {
            if (cfg->up_attn[i] && cfg->upsample_resnet) {
                s = resnet(B, s, cout, 1.0f, RESAMPLE_UP, "up_blocks.%d.upsamplers.0", i);
            } else {
                char name[128];
                snprintf(name, sizeof name, "up_blocks.%d.upsamplers.0.conv", i);
                s = conv(B, unary(B, OP_UPSAMPLE, s), name, cout, 3, 1, 1, 1, 1, 1, 0);
            }
        }
    }
    DF_ASSERT(B->err || nskips == 0);

    s = norm_silu(B, s, -1, "conv_norm_out", groups);
    s = conv(B, s, "conv_out", cfg->out_channels, 3, 1, 1, 1, 1, 1, 0);
    return s;
}

df_status unet_build(const df_unet_config *cfg, int n, int h, int w, unet_graph *g) {
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

    int x = add_value(B, n, cfg->in_channels, h, w);
    g->x = x;
    int s = x;
    if (cfg->center_input_sample) {
        s = unary(B, OP_AFFINE, x);
        if (!B->err) B->g->nodes[B->g->nnodes - 1].farg[0] = 2, B->g->nodes[B->g->nnodes - 1].farg[1] = -1;
    }

    int emb = timestep_embedding(B, n, 0, "time_embedding");
    if (cfg->num_class_embeds > 0 && !cfg->class_embed_timestep) {
        int table = add_param(B, INIT_NORMAL, 0, 2, cfg->num_class_embeds, temb_dim, 1, 1,
                              "class_embedding.weight");
        int ce = add_value(B, n, temb_dim, 1, 1);
        gnode *d = add_node(B, OP_EMBED, -1, -1, -1);
        if (d) d->out = ce, d->w = table;
        emb = binary(B, OP_ADD, emb, ce, 1);
    } else if (cfg->class_embed_timestep) {
        int ce = timestep_embedding(B, n, 1, "class_embedding");
        emb = binary(B, OP_ADD, emb, ce, 1);
    }
    B->temb = emb;
    B->temb_act = silu(B, emb);

    s = conv(B, s, "conv_in", cfg->block_out_channels[0], 3, 1, 1, 1, 1, 1, 0);
    int skips[DF_MAX_LEVELS * 20], nskips = 0;
    skips[nskips++] = s;

    for (int i = 0; i < levels; i++) {
        int cout = cfg->block_out_channels[i], last = i == levels - 1;
        for (int j = 0; j < cfg->layers_per_block; j++) {
            s = resnet(B, s, cout, 1.0f, RESAMPLE_NONE, "down_blocks.%d.resnets.%d", i, j);
            if (cfg->down_attn[i])
                s = attention(B, s, groups, cfg->attention_head_dim, 1.0f, "down_blocks.%d.attentions.%d", i, j);
            skips[nskips++] = s;
        }
        if (!last) {
            char name[128];
            if (cfg->down_attn[i] && cfg->downsample_resnet) {
                s = resnet(B, s, cout, 1.0f, RESAMPLE_DOWN, "down_blocks.%d.downsamplers.0", i);
            } else {
                snprintf(name, sizeof name, "down_blocks.%d.downsamplers.0.conv", i);
                s = downsample_conv(B, s, name);
            }
            skips[nskips++] = s;
        }
    }

    if (cfg->mid_block) {
        int c = cfg->block_out_channels[levels - 1];
        float sf = cfg->mid_block_scale_factor;
        s = resnet(B, s, c, sf, RESAMPLE_NONE, "mid_block.resnets.0");
        if (cfg->add_attention) {
            int ag = cfg->attn_norm_num_groups ? cfg->attn_norm_num_groups : (cfg->scale_shift ? 0 : groups);
            s = attention(B, s, ag, cfg->attention_head_dim, sf, "mid_block.attentions.0");
        }
        s = resnet(B, s, c, sf, RESAMPLE_NONE, "mid_block.resnets.1");
    }

    if (cfg->classifier_classes > 0) {
        /* the classifier's head instead of the decoder: GroupNorm, SiLU, the mean over the image, logits */
        s = norm_silu(B, s, -1, "classifier.norm", groups);
        s = unary(B, OP_MEAN_HW, s);
        s = linear(B, s, "classifier.linear", cfg->classifier_classes);
    } else {
        s = decoder(B, cfg, s, skips, nskips);
    }
    g->out = s;
    if (!B->err) B->err = plan_reuse(g);
    if (B->err) {
        unet_graph_free(g);
        return B->err;
    }
    return DF_OK;
}

void unet_graph_free(unet_graph *g) {
    if (!g) return;
    conv_fast_free(g->fast);
    free(g->params);
    free(g->nodes);
    free(g->vals);
    memset(g, 0, sizeof *g);
}

void unet_set_layout(unet_graph *g, int blk) {
    for (int v = 0; v < g->nvals; v++) {
        const gvalue *x = &g->vals[v];
        int ok = blk > 1 && x->c % blk == 0 && x->h * x->w > 1 && v != g->x && v != g->out;
        g->vals[v].blk = ok ? blk : 1;
    }
    for (int i = 0; i < g->nnodes; i++)
        if (g->nodes[i].op == OP_MEAN_HW) g->vals[g->nodes[i].in[0]].blk = 1;
    for (int i = 0; i < g->nnodes; i++)
        if (g->nodes[i].op == OP_ATTENTION) {
            const gnode *d = &g->nodes[i];
            for (int k = 0; k < 3; k++) g->vals[d->in[k]].blk = 1;
            g->vals[d->out].blk = 1;
        }
    /* every op but a convolution (whose primitive converts) needs its spatial operands in one layout:
     * one plain operand makes the whole chain plain; repeat until nothing changes */
    for (int changed = 1; changed;) {
        changed = 0;
        for (int i = 0; i < g->nnodes; i++) {
            const gnode *d = &g->nodes[i];
            if (d->op == OP_CONV) continue;
            int ids[4] = {d->in[0], d->in[1], d->in[2], d->out}, plain = 0;
            for (int k = 0; k < 4; k++)
                if (ids[k] >= 0 && g->vals[ids[k]].h * g->vals[ids[k]].w > 1 && g->vals[ids[k]].blk == 1) plain = 1;
            for (int k = 0; k < 4 && plain; k++)
                if (ids[k] >= 0 && g->vals[ids[k]].blk != 1) g->vals[ids[k]].blk = 1, changed = 1;
        }
    }
}

int unet_find_param(const unet_graph *g, const char *name) {
    for (int i = 0; i < g->nparams; i++)
        if (strcmp(g->params[i].name, name) == 0) return i;
    return -1;
}
