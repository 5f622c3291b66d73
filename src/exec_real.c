/* Replays the U-Net tape: forward in order, backward in reverse through one switch. Compiled for
 * float (the library) and double (the reference path of the gradient checks). */
#include "ops_real.h"
#include "conv_fast.h"

#include <omp.h>
#include <string.h>

#define VAL(buf, id) ((buf) + (g->infer ? g->vals[id].ioff : g->vals[id].off))
#define GRAD(buf, id) ((buf) + g->vals[id].goff)
#define SAVED(d) (act + (g->infer ? (d)->isaved : (d)->saved))
/* a value as the backward pass sees it: kept from the forward pass, or rebuilt into the gradient block */
#define AV(id) (g->vals[id].remat ? (const real *)(dact + g->vals[id].roff) : VAL(act, id))
#define NUMEL(id) ((size_t)g->vals[id].n * g->vals[id].c * g->vals[id].h * g->vals[id].w)
#define HW(id) (g->vals[id].h * g->vals[id].w)
#define PARAM(buf, id) ((id) >= 0 ? (buf) + g->params[id].off : NULL)

void RF(unet_forward)(const unet_graph *g, const real *params, real *act, real *scratch, const real *t,
                      const int *labels, uint64_t dropout_seed) {
    const size_t per = g->scratch_size;
    for (int i = 0; i < g->nnodes; i++) {
        const gnode *d = &g->nodes[i];
        double t0 = g->prof ? omp_get_wtime() : 0;
        real *y = VAL(act, d->out);
        const gvalue *o = &g->vals[d->out];
        const real *x = d->in[0] >= 0 ? VAL(act, d->in[0]) : NULL;
        const real *x1 = d->in[1] >= 0 ? VAL(act, d->in[1]) : NULL;
        const real *w = PARAM(params, d->w), *b = PARAM(params, d->b);
        switch (d->op) {
        case OP_CONV:
#if !DF_REAL_F64
            if (g->use_fast && conv_fast_forward(g->fast, i, y, x, w, b)) break;
#endif
            RF(conv_forward)(y, x, w, b, o->n, &d->conv, scratch, per);
            break;
        case OP_LINEAR:
            RF(linear_forward)(y, x, w, b, o->n, g->vals[d->in[0]].c, o->c);
            break;
        case OP_GROUPNORM: {
            real *mean = SAVED(d), *rstd = mean + (size_t)o->n * d->iarg[0];
            RF(groupnorm_forward)(y, mean, rstd, x, w, b, o->n, o->c, o->h * o->w, d->iarg[0], d->farg[0], o->blk,
                                  (double *)scratch);
            break;
        }
        case OP_SILU:
            RF(silu_forward)(y, x, NUMEL(d->out));
            break;
        case OP_NORM_SILU: {
            real *mean = SAVED(d), *rstd = mean + (size_t)o->n * d->iarg[0];
            RF(norm_silu_forward)(y, mean, rstd, x, x1, w, b, o->n, o->c, o->h * o->w, d->iarg[0], d->farg[0], o->blk,
                                  (double *)scratch);
            break;
        }
        case OP_TIMESTEP:
            if (d->iarg[2] == 0) {
                RF(timestep_forward)(y, t, o->n, o->c, d->iarg[0], d->farg[0]);
            } else {
                real lab[o->n];
                for (int j = 0; j < o->n; j++) lab[j] = (real)labels[j];
                RF(timestep_forward)(y, lab, o->n, o->c, d->iarg[0], d->farg[0]);
            }
            break;
        case OP_EMBED:
            RF(embed_forward)(y, w, labels, o->n, o->c);
            break;
        case OP_UPSAMPLE:
            RF(upsample_forward)(y, x, o->n * o->c, o->h / 2, o->w / 2, o->blk);
            break;
        case OP_AVGPOOL:
            RF(avgpool_forward)(y, x, o->n * o->c, o->h * 2, o->w * 2, o->blk);
            break;
        case OP_MEAN_HW:
            RF(mean_hw_forward)(y, x, o->n * o->c, g->vals[d->in[0]].h * g->vals[d->in[0]].w);
            break;
        case OP_CONCAT:
            RF(concat_forward)(y, x, x1, o->n, g->vals[d->in[0]].c, g->vals[d->in[1]].c, o->h * o->w);
            break;
        case OP_ADD:
            RF(add_forward)(y, x, x1, d->farg[0], NUMEL(d->out));
            break;
        case OP_ADD_NC:
            RF(add_nc_forward)(y, x, x1, o->n, o->c, o->h * o->w, o->blk);
            break;
        case OP_SCALE_SHIFT:
            RF(scale_shift_forward)(y, x, x1, o->n, o->c, o->h * o->w, o->blk);
            break;
        case OP_ATTENTION: {
            int heads = d->iarg[0];
            RF(attention_forward)(y, SAVED(d), x, x1, VAL(act, d->in[2]), o->n, heads, o->c / heads,
                                  o->h * o->w, d->farg[0]);
            break;
        }
        case OP_DROPOUT:
            RF(dropout_forward)(y, x, NUMEL(d->out), d->farg[0], dropout_seed ? dropout_seed + (uint64_t)i : 0);
            break;
        case OP_AFFINE:
            RF(affine_forward)(y, x, d->farg[0], d->farg[1], NUMEL(d->out));
            break;
        case OP_COUNT:
            DF_ASSERT(0);
        }
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
        RF(dropout_forward)(y, y, NUMEL(v), p->farg[0], dropout_seed ? dropout_seed + (uint64_t)o->producer : 0);
}

void RF(unet_backward)(const unet_graph *g, const real *params, real *dparams, const real *act, real *dact,
                       real *scratch, const int *labels, uint64_t dropout_seed) {
    const size_t per = g->scratch_size;
    for (int i = g->nnodes - 1; i >= 0; i--) {
        const gnode *d = &g->nodes[i];
        double t0 = g->prof ? omp_get_wtime() : 0;
        const gvalue *o = &g->vals[d->out];
        if (d->gzero & 8) continue;   /* its output reaches nothing: no gradient flows back */
        const real *dy = GRAD(dact, d->out);
        for (int k = 0; k < 3; k++)
            if (d->rebuild & (1 << k)) RF(rebuild)(g, params, act, dact, scratch, d->in[k], dropout_seed);
        const real *x = d->in[0] >= 0 ? AV(d->in[0]) : NULL;
        const real *x1 = d->in[1] >= 0 ? AV(d->in[1]) : NULL;
        real *dx = d->in[0] >= 0 ? GRAD(dact, d->in[0]) : NULL;
        real *dx1 = d->in[1] >= 0 ? GRAD(dact, d->in[1]) : NULL;
        for (int k = 0; k < 3; k++) {   /* gradient buffers are reused: the last reader starts them at 0 */
            if (!(d->gzero & (1 << k))) continue;
#if !DF_REAL_F64
            if (k == 0 && d->op == OP_CONV && g->use_fast && conv_fast_overwrites(g->fast, i)) continue;
#endif
            memset(GRAD(dact, d->in[k]), 0, sizeof(real) * NUMEL(d->in[k]));
        }
        const real *w = PARAM(params, d->w);
        real *dw = PARAM(dparams, d->w), *db = PARAM(dparams, d->b);
        switch (d->op) {
        case OP_CONV:
#if !DF_REAL_F64
            if (g->use_fast && conv_fast_backward(g->fast, i, dx, dw, db, dy, x, w)) break;
#endif
            RF(conv_backward)(dx, dw, db, dy, x, w, o->n, &d->conv, scratch, per);
            break;
        case OP_LINEAR:
            RF(linear_backward)(dx, dw, db, dy, x, w, o->n, g->vals[d->in[0]].c, o->c);
            break;
        case OP_GROUPNORM: {
            const real *mean = act + d->saved, *rstd = mean + (size_t)o->n * d->iarg[0];
            RF(groupnorm_backward)(dx, dw, db, dy, x, mean, rstd, w, o->n, o->c, o->h * o->w, d->iarg[0], o->blk,
                                   (double *)scratch);
            break;
        }
        case OP_SILU:
            RF(silu_backward)(dx, dy, x, NUMEL(d->out));
            break;
        case OP_NORM_SILU: {
            const real *mean = act + d->saved, *rstd = mean + (size_t)o->n * d->iarg[0];
            RF(norm_silu_backward)(dx, dx1, dw, db, dy, x, x1, mean, rstd, w, PARAM(params, d->b), o->n, o->c,
                                   o->h * o->w, d->iarg[0], o->blk, (double *)scratch);
            break;
        }
        case OP_TIMESTEP:
            break;   /* timesteps and labels are data, not parameters */
        case OP_EMBED:
            RF(embed_backward)(dw, dy, labels, o->n, o->c);
            break;
        case OP_UPSAMPLE:
            RF(upsample_backward)(dx, dy, o->n * o->c, o->h / 2, o->w / 2, o->blk);
            break;
        case OP_AVGPOOL:
            RF(avgpool_backward)(dx, dy, o->n * o->c, o->h * 2, o->w * 2, o->blk);
            break;
        case OP_MEAN_HW:
            RF(mean_hw_backward)(dx, dy, o->n * o->c, g->vals[d->in[0]].h * g->vals[d->in[0]].w);
            break;
        case OP_CONCAT:
            RF(concat_backward)(dx, dx1, dy, o->n, g->vals[d->in[0]].c, g->vals[d->in[1]].c, o->h * o->w);
            break;
        case OP_ADD:
            RF(add_backward)(dx, dx1, dy, d->farg[0], NUMEL(d->out));
            break;
        case OP_ADD_NC:
            RF(add_nc_backward)(dx, dx1, dy, o->n, o->c, o->h * o->w, o->blk);
            break;
        case OP_SCALE_SHIFT:
            RF(scale_shift_backward)(dx, dx1, dy, x, x1, o->n, o->c, o->h * o->w, o->blk);
            break;
        case OP_ATTENTION: {
            int heads = d->iarg[0];
            RF(attention_backward)(dx, dx1, GRAD(dact, d->in[2]), dy, act + d->saved, x, x1, AV(d->in[2]),
                                   o->n, heads, o->c / heads, o->h * o->w, d->farg[0], scratch, per);
            break;
        }
        case OP_DROPOUT:
            RF(dropout_backward)(dx, dy, NUMEL(d->out), d->farg[0], dropout_seed ? dropout_seed + (uint64_t)i : 0);
            break;
        case OP_AFFINE:
            RF(affine_backward)(dx, dy, d->farg[0], NUMEL(d->out));
            break;
        case OP_COUNT:
            DF_ASSERT(0);
        }
        if (g->prof) g->prof[OP_COUNT + d->op] += omp_get_wtime() - t0;
    }
}
