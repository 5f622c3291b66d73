/* The tape: the op table (every fact about an op in one row), building a tape of nodes over values,
 * and planning its memory (three placements of the values, their layouts). Kernels: ops_real.c. */
#include "graph.h"
#include "conv_fast.h"
#define DF_REAL_F64 1
#include "ops_real.h"

#include <stdarg.h>
#include <string.h>

/* ---- the op table ------------------------------------------------------------------------------------ */

static size_t numel(const gvalue *v) { return (size_t)v->n * v->c * v->h * v->w; }
#define IN(k) (&g->vals[d->in[k]])
#define OUT (&g->vals[d->out])

static double conv_flops(const unet_graph *g, const gnode *d) {
    const conv_geom *c = &d->conv;
    size_t K = (size_t)c->cin * c->k * c->k, P = (size_t)c->ho * c->wo;
    return 2.0 * OUT->n * (double)c->cout * (double)K * (double)P;
}
/* the reference convolution's own count (ops_real.c): im2col panels and private weight gradients */
static size_t conv_scratch(const unet_graph *g, const gnode *d) { return conv_scratch_f64(&d->conv); }
static double linear_flops(const unet_graph *g, const gnode *d) { return 2.0 * OUT->n * (double)IN(0)->c * OUT->c; }
/* mean and 1/std per image and group */
static size_t norm_saved(const unet_graph *g, const gnode *d) { return 2 * (size_t)OUT->n * d->iarg[0]; }
static size_t norm_scratch(const unet_graph *g, const gnode *d) {
    return 2 * 8 * (size_t)OUT->n * OUT->c;   /* 8 n c doubles, counted in reals */
}
/* queries at the output's positions, keys and values at in[1]'s */
static double attention_flops(const unet_graph *g, const gnode *d) {
    int heads = d->iarg[0], Lq = OUT->h * OUT->w, Lk = IN(1)->h * IN(1)->w, dh = OUT->c / heads;
    return 4.0 * OUT->n * heads * (double)Lq * Lk * dh;
}
/* the softmax probabilities (N, heads, Lq, Lk) */
static size_t attention_saved(const unet_graph *g, const gnode *d) {
    return (size_t)OUT->n * d->iarg[0] * OUT->h * OUT->w * IN(1)->h * IN(1)->w;
}
static size_t attention_scratch(const unet_graph *g, const gnode *d) { return (size_t)OUT->h * OUT->w * IN(1)->h * IN(1)->w; }
/* mean and 1/std per image and position; two positions' sums in double per thread */
static size_t ln_saved(const unet_graph *g, const gnode *d) { return 2 * (size_t)OUT->n * OUT->h * OUT->w; }
static size_t ln_scratch(const unet_graph *g, const gnode *d) { return 2 * 2 * (size_t)OUT->h * OUT->w; }
#undef IN
#undef OUT

/* Ops whose backward needs only the output gradient (or their own saved buffer) read no input. */
const op_info op_table[OP_COUNT] = {
    /*                name           bwd reads  layout            remat */
    [OP_CONV]        = {"conv",        1, LAYOUT_CONVERTS, REMAT_NO, conv_flops, NULL, conv_scratch},
    [OP_LINEAR]      = {"linear",      1, LAYOUT_SAME, REMAT_NO, linear_flops, NULL, NULL},
    [OP_GROUPNORM]   = {"groupnorm",   1, LAYOUT_SAME, REMAT_NO, NULL, norm_saved, norm_scratch},
    [OP_SILU]        = {"silu",        1, LAYOUT_SAME, REMAT_NO, NULL, NULL, NULL},
    [OP_TIMESTEP]    = {"timestep",    0, LAYOUT_SAME, REMAT_NO, NULL, NULL, NULL},
    [OP_EMBED]       = {"embed",       0, LAYOUT_SAME, REMAT_NO, NULL, NULL, NULL},
    [OP_UPSAMPLE]    = {"upsample",    0, LAYOUT_SAME, REMAT_COPY, NULL, NULL, NULL},
    [OP_AVGPOOL]     = {"avgpool",     0, LAYOUT_SAME, REMAT_NO, NULL, NULL, NULL},
    [OP_CONCAT]      = {"concat",      0, LAYOUT_SAME, REMAT_COPY, NULL, NULL, NULL},
    [OP_ADD]         = {"add",         0, LAYOUT_SAME, REMAT_NO, NULL, NULL, NULL},
    [OP_ADD_NC]      = {"add_nc",      0, LAYOUT_SAME, REMAT_NO, NULL, NULL, NULL},
    [OP_SCALE_SHIFT] = {"scale_shift", 3, LAYOUT_SAME, REMAT_NO, NULL, NULL, NULL},
    [OP_ATTENTION]   = {"attention",   7, LAYOUT_PLAIN, REMAT_NO, attention_flops, attention_saved, attention_scratch},
    [OP_DROPOUT]     = {"dropout",     0, LAYOUT_SAME, REMAT_AFTER_NORM, NULL, NULL, NULL},
    [OP_AFFINE]      = {"affine",      0, LAYOUT_SAME, REMAT_NO, NULL, NULL, NULL},
    [OP_NORM_SILU]   = {"norm_silu",   3, LAYOUT_SAME, REMAT_NORM, NULL, norm_saved, norm_scratch},
    [OP_MEAN_HW]     = {"mean_hw",     0, LAYOUT_PLAIN, REMAT_NO, NULL, NULL, NULL},
    [OP_LAYERNORM]   = {"layernorm",   1, LAYOUT_PLAIN, REMAT_NO, NULL, ln_saved, ln_scratch},
    [OP_ACT]         = {"gelu",        1, LAYOUT_SAME, REMAT_NO, NULL, NULL, NULL},
    [OP_GEGLU]       = {"geglu",       1, LAYOUT_PLAIN, REMAT_NO, NULL, NULL, NULL},
    [OP_TOKENS]      = {"tokens",      0, LAYOUT_PLAIN, REMAT_NO, NULL, NULL, NULL},
};
_Static_assert(sizeof(op_table) / sizeof(op_table[0]) == OP_COUNT, "one op_table row per op");

/* ---- building ------------------------------------------------------------------------------------------ */

/* Make room for one more element in the array *pp (count n, capacity *cap); records an error on
 * failure. Returns 0 when there is room. */
static int grow(unet_graph *g, void **pp, int *cap, int n, size_t elem) {
    if (g->err) return -1;
    if (n < *cap) return 0;
    int c = *cap ? *cap * 2 : 64;
    void *q = realloc(*pp, (size_t)c * elem);
    if (!q) {
        g->err = df_fail(DF_ERR_NOMEM, "out of memory building the network");
        return -1;
    }
    *pp = q;
    *cap = c;
    return 0;
}

int tape_param(unet_graph *g, param_spec s, const char *fmt, ...) {
    if (grow(g, (void **)&g->params, &g->cap_params, g->nparams, sizeof(gparam))) return -1;
    gparam *p = &g->params[g->nparams];
    memset(p, 0, sizeof *p);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->name, sizeof p->name, fmt, ap);
    va_end(ap);
    p->numel = 1;
    while (p->ndim < 4 && s.shape[p->ndim] > 0) p->numel *= (size_t)s.shape[p->ndim++];
    for (int i = 0; i < 4; i++) p->shape[i] = i < p->ndim ? s.shape[i] : 1;
    p->off = g->nparam_values;
    p->init = s.init;
    p->fan_in = s.fan_in;
    p->std = s.std;
    g->nparam_values += p->numel;
    return g->nparams++;
}

int tape_value(unet_graph *g, int n, int c, int h, int w) {
    if (grow(g, (void **)&g->vals, &g->cap_vals, g->nvals, sizeof(gvalue))) return -1;
    g->vals[g->nvals] = (gvalue){.n = n, .c = c, .h = h, .w = w, .blk = 1, .producer = -1};
    return g->nvals++;
}

gnode *tape_node(unet_graph *g, op_kind op, int in0, int in1, int in2, int out) {
    if (out < 0 || grow(g, (void **)&g->nodes, &g->cap_nodes, g->nnodes, sizeof(gnode))) return NULL;
    gnode *d = &g->nodes[g->nnodes++];
    *d = (gnode){.op = op, .in = {in0, in1, in2}, .out = out, .w = -1, .b = -1};
    return d;
}

int tape_conv(unet_graph *g, int x, int w, int b, int cout, int k, int stride, const int pad[4]) {
    if (g->err) return -1;
    const gvalue in = g->vals[x];
    const int ho = (in.h + pad[0] + pad[2] - k) / stride + 1, wo = (in.w + pad[1] + pad[3] - k) / stride + 1;
    gnode *d = tape_node(g, OP_CONV, x, -1, -1, tape_value(g, in.n, cout, ho, wo));
    if (!d) return -1;
    d->w = w, d->b = b;
    d->conv = (conv_geom){.cin = in.c, .h = in.h, .w = in.w, .cout = cout, .k = k, .stride = stride, .pad_t = pad[0],
                          .pad_l = pad[1], .ho = ho, .wo = wo};
    return d->out;
}

int tape_token_linear(unet_graph *g, int x, int cout, param_spec winit, const param_spec *binit, const char *name) {
    return tape_token_linear_add(g, x, cout, winit, binit, name, -1);
}

int tape_token_linear_add(unet_graph *g, int x, int cout, param_spec winit, const param_spec *binit, const char *name,
                          int residual) {
    if (g->err) return -1;
    const int cin = g->vals[x].c;
    winit.shape[0] = cout, winit.shape[1] = cin, winit.shape[2] = winit.shape[3] = 0;
    if (winit.init == INIT_FANIN_UNIFORM) winit.fan_in = cin;
    const int w = tape_param(g, winit, "%s.weight", name);
    int b = -1;
    if (binit) {
        param_spec bs = *binit;
        bs.shape[0] = cout, bs.shape[1] = bs.shape[2] = bs.shape[3] = 0;
        if (bs.init == INIT_FANIN_UNIFORM) bs.fan_in = cin;
        b = tape_param(g, bs, "%s.bias", name);
    }
    static const int no_pad[4] = {0};
    const int y = tape_conv(g, x, w, b, cout, 1, 1, no_pad);
    if (y >= 0 && residual >= 0) g->nodes[g->nnodes - 1].in[1] = residual;
    return y;
}

int tape_layernorm(unet_graph *g, int x, float eps, const char *name) {
    if (g->err) return -1;
    const gvalue in = g->vals[x];
    const int w = tape_param(g, (param_spec){.init = INIT_ONE, .shape = {in.c}}, "%s.weight", name);
    const int b = tape_param(g, (param_spec){.init = INIT_ZERO, .shape = {in.c}}, "%s.bias", name);
    gnode *d = tape_node(g, OP_LAYERNORM, x, -1, -1, tape_value(g, in.n, in.c, in.h, in.w));
    if (!d) return -1;
    d->w = w, d->b = b, d->farg[0] = eps;
    return d->out;
}

void unet_graph_free(unet_graph *g) {
    if (!g) return;
    conv_fast_free(g->fast);
    free(g->params);
    free(g->nodes);
    free(g->vals);
    memset(g, 0, sizeof *g);
}

int unet_find_param(const unet_graph *g, const char *name) {
    for (int i = 0; i < g->nparams; i++)
        if (strcmp(g->params[i].name, name) == 0) return i;
    return -1;
}

/* ---- planning: memory reuse -------------------------------------------------------------------------------
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

/* Which values training keeps for the backward pass (keep[v]) and which it rebuilds there (vals[v].remat).
 * Kept: the inputs of ops whose backward reads them, and the output. Values a backward pass reads that are
 * cheap to make again are rebuilt instead: copies (concat, upsample) from their inputs, which are kept
 * instead when that keeps less (an upsample's input is a quarter of it, a concat saves the part of its
 * inputs not kept anyway); the fused norm's output from its input and statistics (kept for its own
 * backward anyway); a dropout right after the fused norm from the same, with its mask regenerated. */
static void plan_keep(unet_graph *g, char *keep, const int *last, const int *lo) {
    for (int i = 0; i < g->nnodes; i++) {
        const gnode *d = &g->nodes[i];
        for (int k = 0; k < 3; k++)
            if (d->in[k] >= 0 && (op_table[d->op].backward_reads >> k & 1)) keep[d->in[k]] = 1;
    }
    keep[g->out] = 1;
    for (int i = 0; i < g->nnodes; i++) {
        const gnode *d = &g->nodes[i];
        int v = d->out;
        if (!keep[v] || v == g->out) continue;
        const op_remat r = op_table[d->op].remat;
        int u = d->in[0], chain = r == REMAT_AFTER_NORM && u >= 0 && !keep[u] && !g->vals[u].remat &&
                                  g->vals[u].producer >= 0 &&
                                  op_table[g->nodes[g->vals[u].producer].op].remat == REMAT_NORM;
        /* the fused norm's input must be kept, or rebuilt before and still there when this is rebuilt
         * (rebuilt at its last reader, freed after its first) */
        int x = chain ? g->nodes[g->vals[u].producer].in[0] : u;
        int x_ok = x >= 0 && (!g->vals[x].remat || (last[x] > last[v] && lo[x] < last[v]));
        if ((r == REMAT_NORM || chain) && x_ok) {
            keep[v] = 0;
            g->vals[v].remat = 1;
            continue;
        }
        int ok = r == REMAT_COPY;
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
}

/* Forward placements, for training (off, saved: what keep says stays) and inference (ioff, isaved: nothing
 * stays): outputs take space before the inputs that die at the node give theirs back. */
static void place_forward(unet_graph *g, arena *a, const char *keep, const int *last) {
    for (int training = 0; training < 2; training++) {
        a->n = 0, a->top = 0;
#define OFF(v) (*(training ? &g->vals[v].off : &g->vals[v].ioff))
        if (g->x >= 0) OFF(g->x) = arena_get(a, numel(&g->vals[g->x]));   /* a text encoder has none */
        if (g->ctx >= 0) OFF(g->ctx) = arena_get(a, numel(&g->vals[g->ctx]));
        /* inference keeps the text states and what depends on them alone for the next pass: placed first, so that
         * no value of the pass (which runs again next time, before them) shares their space */
        for (int i = 0; !training && i < g->nnodes; i++)
            if (g->nodes[i].ctx_only) OFF(g->nodes[i].out) = arena_get(a, numel(&g->vals[g->nodes[i].out]));
#define KEPT(v) (training ? keep[v] : (v) == g->ctx || (g->vals[v].producer >= 0 && g->nodes[g->vals[v].producer].ctx_only))
        for (int i = 0; i < g->nnodes; i++) {
            gnode *d = &g->nodes[i];
            gvalue *o = &g->vals[d->out];
            if (training || !d->ctx_only) OFF(d->out) = arena_get(a, numel(o));
            if (d->saved_len) {
                size_t at = arena_get(a, d->saved_len);
                if (training) d->saved = at;
                else d->isaved = at, arena_put(a, at, d->saved_len);
            }
            if (last[d->out] < 0 && !KEPT(d->out)) arena_put(a, OFF(d->out), numel(o));
            for (int k = 0; k < 3; k++) {
                int v = d->in[k];
                if (v < 0 || last[v] != i || (k > 0 && v == d->in[0]) || (k > 1 && v == d->in[1])) continue;
                if (!KEPT(v)) arena_put(a, OFF(v), numel(&g->vals[v]));
            }
        }
#undef KEPT
#undef OFF
        *(training ? &g->act_size : &g->infer_size) = a->top;
    }
}

/* Gradients, in reverse: a value's gradient is born at its last reader (zeroed there: readers add) and
 * freed after its producer's backward has read it; the input's gradient is kept. Rebuilt values live in
 * the same block from their last reader to their first. */
static void place_gradients(unet_graph *g, arena *a, int *first, const int *last, const int *lo) {
    a->n = 0, a->top = 0;
    g->vals[g->out].goff = arena_get(a, numel(&g->vals[g->out]));
    first[g->out] = g->nnodes;
    for (int i = g->nnodes - 1; i >= 0; i--) {
        gnode *d = &g->nodes[i];
        d->gzero = d->rebuild = 0;
        for (int k = 0; k < 3; k++) {
            int v = d->in[k];
            if (v < 0 || !g->vals[v].remat || last[v] != i || (k > 0 && v == d->in[k - 1])) continue;
            g->vals[v].roff = arena_get(a, numel(&g->vals[v]));
            d->rebuild |= 1 << k;
        }
        for (int k = 0; k < 3; k++) {
            int v = d->in[k];
            if (v < 0 || first[v] >= 0) continue;
            first[v] = i;
            g->vals[v].goff = arena_get(a, numel(&g->vals[v]));
            d->gzero |= 1 << k;
        }
        if (first[d->out] >= 0) arena_put(a, g->vals[d->out].goff, numel(&g->vals[d->out]));
        else g->vals[d->out].goff = 0, d->gzero |= 8;   /* nobody reads it: no gradient */
        for (int k = 0; k < 3; k++) {
            int v = d->in[k];
            if (v >= 0 && g->vals[v].remat && lo[v] == i && !(k > 0 && v == d->in[k - 1]))
                arena_put(a, g->vals[v].roff, numel(&g->vals[v]));
        }
    }
    g->grad_size = a->top;
}

/* The memory plan: every value's place in the activation block (training and inference) and the
 * gradient block, from each value's first and last reader. */
static df_status place(unet_graph *g) {
    int cap = 2 * g->nvals + g->nnodes + 4;
    arena a = {malloc(sizeof(size_t) * (size_t)cap), malloc(sizeof(size_t) * (size_t)cap), 0, 0};
    int *last = malloc(sizeof(int) * (size_t)g->nvals), *first = malloc(sizeof(int) * (size_t)g->nvals);
    int *lo = malloc(sizeof(int) * (size_t)g->nvals);
    char *keep = calloc((size_t)g->nvals, 1);
    df_status st = DF_OK;
    if (!a.off || !a.len || !last || !first || !lo || !keep) {
        st = df_fail(DF_ERR_NOMEM, "out of memory planning the network");
        goto done;
    }
    for (int v = 0; v < g->nvals; v++) last[v] = -1, first[v] = -1, lo[v] = -1;
    for (int i = 0; i < g->nnodes; i++) g->vals[g->nodes[i].out].producer = i;
    /* the nodes whose inputs are the text states or their own outputs alone */
    for (int i = 0; i < g->nnodes; i++) {
        gnode *d = &g->nodes[i];
        int any = 0, only = g->ctx >= 0;
        for (int k = 0; k < 3; k++) {
            const int v = d->in[k];
            if (v < 0) continue;
            any = 1;
            only &= v == g->ctx || (g->vals[v].producer >= 0 && g->nodes[g->vals[v].producer].ctx_only);
        }
        d->ctx_only = any && only && d->op != OP_DROPOUT;
    }
    for (int i = 0; i < g->nnodes; i++)
        for (int k = 0; k < 3; k++) {
            int v = g->nodes[i].in[k];
            if (v < 0) continue;
            last[v] = i;
            if (lo[v] < 0) lo[v] = i;
        }
    last[g->out] = g->nnodes;   /* read by the caller after the pass */
    plan_keep(g, keep, last, lo);
    place_forward(g, &a, keep, last);
    place_gradients(g, &a, first, last, lo);
done:
    free(a.off), free(a.len), free(last), free(first), free(lo), free(keep);
    return st;
}

df_status tape_plan(unet_graph *g) {
    if (g->err) return g->err;
    g->flops = 0;
    g->scratch_size = 0;
    for (int i = 0; i < g->nnodes; i++) {
        gnode *d = &g->nodes[i];
        const op_info *f = &op_table[d->op];
        if (f->flops) g->flops += f->flops(g, d);
        d->saved_len = f->saved ? f->saved(g, d) : 0;
        if (f->scratch) g->scratch_size = DF_MAX(g->scratch_size, f->scratch(g, d));
    }
    return place(g);
}

void tape_set_layout(unet_graph *g, int blk) {
    for (int v = 0; v < g->nvals; v++) {
        const gvalue *x = &g->vals[v];
        int ok = blk > 1 && x->c % blk == 0 && x->h * x->w > 1 && v != g->x && v != g->ctx && v != g->out;
        g->vals[v].blk = ok ? blk : 1;
    }
    for (int i = 0; i < g->nnodes; i++) {
        const gnode *d = &g->nodes[i];
        /* a convolution with a residual works on plain values only */
        if (op_table[d->op].layout != LAYOUT_PLAIN && !(d->op == OP_CONV && d->in[1] >= 0)) continue;
        for (int k = 0; k < 3; k++)
            if (d->in[k] >= 0) g->vals[d->in[k]].blk = 1;
        g->vals[d->out].blk = 1;
    }
    /* one plain operand of a LAYOUT_SAME op makes the whole chain plain; repeat until nothing changes */
    for (int changed = 1; changed;) {
        changed = 0;
        for (int i = 0; i < g->nnodes; i++) {
            const gnode *d = &g->nodes[i];
            if (op_table[d->op].layout == LAYOUT_CONVERTS) continue;
            int ids[4] = {d->in[0], d->in[1], d->in[2], d->out}, plain = 0;
            for (int k = 0; k < 4; k++)
                if (ids[k] >= 0 && g->vals[ids[k]].h * g->vals[ids[k]].w > 1 && g->vals[ids[k]].blk == 1) plain = 1;
            for (int k = 0; k < 4 && plain; k++)
                if (ids[k] >= 0 && g->vals[ids[k]].blk != 1) g->vals[ids[k]].blk = 1, changed = 1;
        }
    }
}
