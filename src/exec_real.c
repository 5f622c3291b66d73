/* Replays the U-Net tape: forward in order, backward in reverse, each op through its row of the dispatch
 * table below (its forward and backward side by side). Compiled for float (the library) and double (the
 * reference path of the gradient checks). */
#include "ops_real.h"
#include "conv_fast.h"

#include <omp.h>
#include <string.h>

#define VAL(buf, id) ((buf) + (g->infer ? g->vals[id].ioff : g->vals[id].off))
#define GRAD(buf, id) ((buf) + g->vals[id].goff)
/* a value as the backward pass sees it: kept from the forward pass, or rebuilt into the gradient block */
#define AV(id) (g->vals[id].remat ? (const real *)(dact + g->vals[id].roff) : VAL(act, id))
#define NUMEL(id) ((size_t)g->vals[id].n * g->vals[id].c * g->vals[id].h * g->vals[id].w)
#define PARAM(buf, id) ((id) >= 0 ? (buf) + g->params[id].off : NULL)

/* What one node's forward or backward sees: its operands, resolved by the replay loop. In the backward
 * pass the inputs are the values the backward reads (kept or rebuilt), dy the output's gradient, and
 * dx..dx2, dw, db the gradients to add into. */
typedef struct {
    const unet_graph *g;
    const gnode      *d;
    int               node;
    const gvalue     *o;          /* the output value: (n, c, h, w) and layout blk */
    const real       *x[3];       /* in[0..2] (NULL when unused) */
    const real       *w, *b;
    real             *y;          /* forward: the output */
    real             *saved;      /* the node's saved buffer */
    const real       *dy;         /* backward */
    real             *dx[3], *dw, *db;
    unsigned          fresh;      /* backward: bit k: dx[k] holds no gradient yet; the op writes it */
    real             *scratch;    /* scratch_size elements per thread */
    const real       *t;          /* forward: n timesteps */
    const int        *labels;     /* n class indices or NULL */
    uint64_t          seed;       /* dropout: this node's mask seed (0: off) */
} args;

#define IN(k) (&a->g->vals[a->d->in[k]])
#define PER (a->g->scratch_size)
#define HWO (a->o->h * a->o->w)
#define NO ((size_t)a->o->n * a->o->c * a->o->h * a->o->w)

/* ---- each op: forward, then backward ------------------------------------------------------------- */

static void RF(conv_fwd)(const args *a) {
#if !DF_REAL_F64
    if (a->g->use_fast && conv_fast_forward(a->g->fast, a->node, a->y, a->x[0], a->w, a->b)) return;
#endif
    RF(conv_forward)(a->y, a->x[0], a->w, a->b, a->x[1], a->o->n, &a->d->conv, a->scratch, PER);
}
static void RF(conv_bwd)(const args *a) {
#if !DF_REAL_F64
    if (a->g->use_fast && conv_fast_backward(a->g->fast, a->node, a->dx[0], a->dw, a->db, a->dy, a->x[0], a->w)) return;
#endif
    RF(conv_backward)(a->dx[0], a->dw, a->db, a->dx[1], a->dy, a->x[0], a->w, a->o->n, &a->d->conv, a->scratch, PER,
                      a->fresh);
}

static void RF(linear_fwd)(const args *a) { RF(linear_forward)(a->y, a->x[0], a->w, a->b, a->o->n, IN(0)->c, a->o->c); }
static void RF(linear_bwd)(const args *a) {
    RF(linear_backward)(a->dx[0], a->dw, a->db, a->dy, a->x[0], a->w, a->o->n, IN(0)->c, a->o->c);
}

/* saved: mean then 1/std, (n, groups) each */
#define RSTD(a) ((a)->saved + (size_t)(a)->o->n * (a)->d->iarg[0])
static void RF(groupnorm_fwd)(const args *a) {
    RF(groupnorm_forward)(a->y, a->saved, RSTD(a), a->x[0], a->w, a->b, a->o->n, a->o->c, HWO, a->d->iarg[0],
                          a->d->farg[0], a->o->blk, (double *)a->scratch);
}
static void RF(groupnorm_bwd)(const args *a) {
    RF(groupnorm_backward)(a->dx[0], a->dw, a->db, a->dy, a->x[0], a->saved, RSTD(a), a->w, a->o->n, a->o->c, HWO,
                           a->d->iarg[0], a->o->blk, (double *)a->scratch);
}

static void RF(norm_silu_fwd)(const args *a) {
    RF(norm_silu_forward)(a->y, a->saved, RSTD(a), a->x[0], a->x[1], a->w, a->b, a->o->n, a->o->c, HWO, a->d->iarg[0],
                          a->d->farg[0], a->o->blk, (double *)a->scratch);
}
static void RF(norm_silu_bwd)(const args *a) {
    RF(norm_silu_backward)(a->dx[0], a->dx[1], a->dw, a->db, a->dy, a->x[0], a->x[1], a->saved, RSTD(a), a->w, a->b,
                           a->o->n, a->o->c, HWO, a->d->iarg[0], a->o->blk, (double *)a->scratch);
}

static void RF(silu_fwd)(const args *a) { RF(silu_forward)(a->y, a->x[0], NO); }
static void RF(silu_bwd)(const args *a) { RF(silu_backward)(a->dx[0], a->dy, a->x[0], NO); }

static void RF(timestep_fwd)(const args *a) {
    if (a->d->iarg[2] == 0) {
        RF(timestep_forward)(a->y, a->t, a->o->n, a->o->c, a->d->iarg[0], a->d->farg[0]);
    } else {
        real lab[a->o->n];
        for (int j = 0; j < a->o->n; j++) lab[j] = (real)a->labels[j];
        RF(timestep_forward)(a->y, lab, a->o->n, a->o->c, a->d->iarg[0], a->d->farg[0]);
    }
}
static void RF(timestep_bwd)(const args *a) { (void)a; }   /* timesteps and labels are data, not parameters */

static void RF(embed_fwd)(const args *a) { RF(embed_forward)(a->y, a->w, a->labels, a->o->n, a->o->c); }
static void RF(embed_bwd)(const args *a) { RF(embed_backward)(a->dw, a->dy, a->labels, a->o->n, a->o->c); }

static void RF(upsample_fwd)(const args *a) {
    RF(upsample_forward)(a->y, a->x[0], a->o->n * a->o->c, a->o->h / 2, a->o->w / 2, a->o->blk);
}
static void RF(upsample_bwd)(const args *a) {
    RF(upsample_backward)(a->dx[0], a->dy, a->o->n * a->o->c, a->o->h / 2, a->o->w / 2, a->o->blk);
}

static void RF(avgpool_fwd)(const args *a) {
    RF(avgpool_forward)(a->y, a->x[0], a->o->n * a->o->c, a->o->h * 2, a->o->w * 2, a->o->blk);
}
static void RF(avgpool_bwd)(const args *a) {
    RF(avgpool_backward)(a->dx[0], a->dy, a->o->n * a->o->c, a->o->h * 2, a->o->w * 2, a->o->blk);
}

static void RF(mean_hw_fwd)(const args *a) { RF(mean_hw_forward)(a->y, a->x[0], a->o->n * a->o->c, IN(0)->h * IN(0)->w); }
static void RF(mean_hw_bwd)(const args *a) {
    RF(mean_hw_backward)(a->dx[0], a->dy, a->o->n * a->o->c, IN(0)->h * IN(0)->w);
}

static void RF(concat_fwd)(const args *a) {
    RF(concat_forward)(a->y, a->x[0], a->x[1], a->o->n, IN(0)->c, IN(1)->c, HWO);
}
static void RF(concat_bwd)(const args *a) {
    RF(concat_backward)(a->dx[0], a->dx[1], a->dy, a->o->n, IN(0)->c, IN(1)->c, HWO);
}

static void RF(add_fwd)(const args *a) { RF(add_forward)(a->y, a->x[0], a->x[1], a->d->farg[0], NO); }
static void RF(add_bwd)(const args *a) { RF(add_backward)(a->dx[0], a->dx[1], a->dy, a->d->farg[0], NO, a->fresh); }

static void RF(add_nc_fwd)(const args *a) {
    RF(add_nc_forward)(a->y, a->x[0], a->x[1], a->o->n, a->o->c, HWO, a->o->blk);
}
static void RF(add_nc_bwd)(const args *a) {
    RF(add_nc_backward)(a->dx[0], a->dx[1], a->dy, a->o->n, a->o->c, HWO, a->o->blk);
}

static void RF(scale_shift_fwd)(const args *a) {
    RF(scale_shift_forward)(a->y, a->x[0], a->x[1], a->o->n, a->o->c, HWO, a->o->blk);
}
static void RF(scale_shift_bwd)(const args *a) {
    RF(scale_shift_backward)(a->dx[0], a->dx[1], a->dy, a->x[0], a->x[1], a->o->n, a->o->c, HWO, a->o->blk);
}

/* keys and values at in[1]'s positions (the text's tokens in cross-attention) */
#define LK (IN(1)->h * IN(1)->w)
static void RF(attention_fwd)(const args *a) {
    const int heads = a->d->iarg[0];
    RF(attention_forward)(a->y, a->saved, a->x[0], a->x[1], a->x[2], a->o->n, heads, a->o->c / heads, HWO, LK,
                          a->d->farg[0], a->d->iarg[1]);
}
static void RF(attention_bwd)(const args *a) {
    const int heads = a->d->iarg[0];
    RF(attention_backward)(a->dx[0], a->dx[1], a->dx[2], a->dy, a->saved, a->x[0], a->x[1], a->x[2], a->o->n, heads,
                           a->o->c / heads, HWO, LK, a->d->farg[0], a->scratch, PER, a->fresh);
}
#undef LK

static void RF(dropout_fwd)(const args *a) { RF(dropout_forward)(a->y, a->x[0], NO, a->d->farg[0], a->seed); }
static void RF(dropout_bwd)(const args *a) { RF(dropout_backward)(a->dx[0], a->dy, NO, a->d->farg[0], a->seed); }

static void RF(affine_fwd)(const args *a) { RF(affine_forward)(a->y, a->x[0], a->d->farg[0], a->d->farg[1], NO); }
static void RF(affine_bwd)(const args *a) { RF(affine_backward)(a->dx[0], a->dy, a->d->farg[0], NO); }

/* saved: mean then 1/std, (n, positions) each */
static void RF(layernorm_fwd)(const args *a) {
    RF(layernorm_forward)(a->y, a->saved, a->saved + (size_t)a->o->n * HWO, a->x[0], a->w, a->b, a->o->n, a->o->c, HWO,
                          a->d->farg[0], (double *)a->scratch);
}
static void RF(layernorm_bwd)(const args *a) {
    RF(layernorm_backward)(a->dx[0], a->dw, a->db, a->dy, a->x[0], a->saved, a->saved + (size_t)a->o->n * HWO, a->w,
                           a->o->n, a->o->c, HWO, (double *)a->scratch, a->fresh & 1);
}

static void RF(act_fwd)(const args *a) { RF(act_forward)(a->y, a->x[0], NO, a->d->iarg[0]); }
static void RF(act_bwd)(const args *a) { RF(act_backward)(a->dx[0], a->dy, a->x[0], NO, a->d->iarg[0]); }

static void RF(geglu_fwd)(const args *a) { RF(geglu_forward)(a->y, a->x[0], a->o->n, a->o->c, HWO); }
static void RF(geglu_bwd)(const args *a) {
    RF(geglu_backward)(a->dx[0], a->dy, a->x[0], a->o->n, a->o->c, HWO, a->fresh & 1);
}

/* the token ids come in as the labels (n * L of them) */
static void RF(tokens_fwd)(const args *a) { RF(tokens_forward)(a->y, a->w, a->b, a->labels, a->o->n, a->o->c, HWO); }
static void RF(tokens_bwd)(const args *a) { RF(tokens_backward)(a->dw, a->db, a->dy, a->labels, a->o->n, a->o->c, HWO); }

#undef IN
#undef HWO
#undef NO

/* The dispatch: one row per op (its facts are in op_table, tape.c). */
static const struct {
    void (*forward)(const args *a);
    void (*backward)(const args *a);
} RF(dispatch)[OP_COUNT] = {
    [OP_CONV] = {RF(conv_fwd), RF(conv_bwd)},
    [OP_LINEAR] = {RF(linear_fwd), RF(linear_bwd)},
    [OP_GROUPNORM] = {RF(groupnorm_fwd), RF(groupnorm_bwd)},
    [OP_SILU] = {RF(silu_fwd), RF(silu_bwd)},
    [OP_TIMESTEP] = {RF(timestep_fwd), RF(timestep_bwd)},
    [OP_EMBED] = {RF(embed_fwd), RF(embed_bwd)},
    [OP_UPSAMPLE] = {RF(upsample_fwd), RF(upsample_bwd)},
    [OP_AVGPOOL] = {RF(avgpool_fwd), RF(avgpool_bwd)},
    [OP_CONCAT] = {RF(concat_fwd), RF(concat_bwd)},
    [OP_ADD] = {RF(add_fwd), RF(add_bwd)},
    [OP_ADD_NC] = {RF(add_nc_fwd), RF(add_nc_bwd)},
    [OP_SCALE_SHIFT] = {RF(scale_shift_fwd), RF(scale_shift_bwd)},
    [OP_ATTENTION] = {RF(attention_fwd), RF(attention_bwd)},
    [OP_DROPOUT] = {RF(dropout_fwd), RF(dropout_bwd)},
    [OP_AFFINE] = {RF(affine_fwd), RF(affine_bwd)},
    [OP_NORM_SILU] = {RF(norm_silu_fwd), RF(norm_silu_bwd)},
    [OP_MEAN_HW] = {RF(mean_hw_fwd), RF(mean_hw_bwd)},
    [OP_LAYERNORM] = {RF(layernorm_fwd), RF(layernorm_bwd)},
    [OP_ACT] = {RF(act_fwd), RF(act_bwd)},
    [OP_GEGLU] = {RF(geglu_fwd), RF(geglu_bwd)},
    [OP_TOKENS] = {RF(tokens_fwd), RF(tokens_bwd)},
};

/* ---- the replay ---------------------------------------------------------------------------------- */

static uint64_t node_seed(uint64_t dropout_seed, int node) { return dropout_seed ? dropout_seed + (uint64_t)node : 0; }

void RF(unet_forward)(const unet_graph *g, const real *params, real *act, real *scratch, const real *t,
                      const int *labels, uint64_t dropout_seed) {
    for (int i = 0; i < g->nnodes; i++) {
        const gnode *d = &g->nodes[i];
        if (g->infer && g->ctx_kept && d->ctx_only) continue;   /* kept from the last pass: same text, same weights */
        double t0 = g->prof ? omp_get_wtime() : 0;
        args a = {.g = g, .d = d, .node = i, .o = &g->vals[d->out], .w = PARAM(params, d->w), .b = PARAM(params, d->b),
                  .y = VAL(act, d->out), .saved = act + (g->infer ? d->isaved : d->saved), .scratch = scratch,
                  .t = t, .labels = labels, .seed = node_seed(dropout_seed, i)};
        for (int k = 0; k < 3; k++) a.x[k] = d->in[k] >= 0 ? VAL(act, d->in[k]) : NULL;
        DF_ASSERT(RF(dispatch)[d->op].forward);
        RF(dispatch)[d->op].forward(&a);
        if (g->prof) g->prof[d->op] += omp_get_wtime() - t0;
    }
}

/* Make a rebuilt value again from its producer's kept inputs (the bits of the forward pass). */
static void RF(rebuild)(const unet_graph *g, const real *params, const real *act, real *dact, real *scratch, int v,
                        uint64_t dropout_seed) {
    const gvalue *o = &g->vals[v];
    const gnode *p = &g->nodes[o->producer];
    real *y = dact + o->roff;
    const gnode *q = p->op == OP_DROPOUT ? &g->nodes[g->vals[p->in[0]].producer] : p;   /* the fused norm */
    switch (q->op) {
    case OP_CONCAT:
        RF(concat_forward)(y, VAL(act, q->in[0]), VAL(act, q->in[1]), o->n, g->vals[q->in[0]].c, g->vals[q->in[1]].c,
                           o->h * o->w);
        break;
    case OP_UPSAMPLE:
        RF(upsample_forward)(y, VAL(act, q->in[0]), o->n * o->c, o->h / 2, o->w / 2, o->blk);
        break;
    case OP_NORM_SILU: {
        const real *mean = act + q->saved, *rstd = mean + (size_t)o->n * q->iarg[0];
        RF(norm_silu_again)(y, AV(q->in[0]), q->in[1] >= 0 ? VAL(act, q->in[1]) : NULL, mean, rstd,
                            PARAM(params, q->w), PARAM(params, q->b), o->n, o->c, o->h * o->w, q->iarg[0], o->blk,
                            (double *)scratch);
        break;
    }
    default:
        DF_ASSERT(0);
    }
    if (p->op == OP_DROPOUT)   /* in place, with the forward's mask */
        RF(dropout_forward)(y, y, NUMEL(v), p->farg[0], node_seed(dropout_seed, o->producer));
}

/* Whether node i writes in[k]'s gradient itself when it is the value's last reader (so it need not be
 * zeroed first): a pointwise convolution's dx and residual (or a dx oneDNN overwrites), attention's dq, dk and dv, an
 * addition's, GEGLU's and LayerNorm's; never for an input the node reads twice. */
static int RF(writes_fresh)(const unet_graph *g, const gnode *d, int i, int k) {
    for (int j = 0; j < 3; j++)
        if (j != k && d->in[j] == d->in[k]) return 0;
    switch (d->op) {
    case OP_CONV:
#if !DF_REAL_F64
        if (g->use_fast && conv_fast_has(g->fast, i)) return k == 0 && conv_fast_overwrites(g->fast, i);
#endif
        return k == 1 || conv_writes_fresh_dx(&d->conv);   /* k 1: the residual */
    case OP_ATTENTION:
    case OP_ADD:
        return 1;
    case OP_GEGLU:
    case OP_LAYERNORM:
        return k == 0;
    default:
        return 0;
    }
}

void RF(unet_backward)(const unet_graph *g, const real *params, real *dparams, const real *act, real *dact,
                       real *scratch, const int *labels, uint64_t dropout_seed) {
    for (int i = g->nnodes - 1; i >= 0; i--) {
        const gnode *d = &g->nodes[i];
        double t0 = g->prof ? omp_get_wtime() : 0;
        if (d->gzero & 8) continue;   /* its output reaches nothing: no gradient flows back */
        for (int k = 0; k < 3; k++)
            if (d->rebuild & (1 << k)) RF(rebuild)(g, params, act, dact, scratch, d->in[k], dropout_seed);
        unsigned fresh = 0;
        for (int k = 0; k < 3; k++) {   /* gradient buffers are reused: the last reader starts them at 0 */
            if (!(d->gzero & (1 << k))) continue;
            if (RF(writes_fresh)(g, d, i, k))
                fresh |= 1u << k;
            else
                memset(GRAD(dact, d->in[k]), 0, sizeof(real) * NUMEL(d->in[k]));
        }
        args a = {.g = g, .d = d, .node = i, .o = &g->vals[d->out], .w = PARAM(params, d->w), .b = PARAM(params, d->b),
                  .saved = (real *)act + d->saved, .dy = GRAD(dact, d->out), .dw = PARAM(dparams, d->w),
                  .db = PARAM(dparams, d->b), .scratch = scratch, .labels = labels,
                  .seed = node_seed(dropout_seed, i), .fresh = fresh};
        for (int k = 0; k < 3; k++) {
            a.x[k] = d->in[k] >= 0 ? AV(d->in[k]) : NULL;
            a.dx[k] = d->in[k] >= 0 ? GRAD(dact, d->in[k]) : NULL;
        }
        DF_ASSERT(RF(dispatch)[d->op].backward);
        RF(dispatch)[d->op].backward(&a);
        if (g->prof) g->prof[OP_COUNT + d->op] += omp_get_wtime() - t0;
    }
}
