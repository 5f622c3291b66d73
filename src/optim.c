/* Optimisers over the flat parameter block: AdamW and SGD with momentum, learning-rate warmup and
 * decay, global-norm gradient clipping, and the EMA of the weights. Updates match PyTorch's. */
#include "internal.h"

#include <math.h>
#include <string.h>

void df_optim_params_default(df_optim_params *p) {
    memset(p, 0, sizeof *p);
    p->kind = DF_OPT_ADAMW;
    p->lr = 1e-4;
    p->beta1 = 0.95;
    p->beta2 = 0.999;
    p->eps = 1e-8;
    p->weight_decay = 1e-6;
    p->momentum = 0.9;
    p->warmup_steps = 500;
    p->decay = DF_LR_COSINE;
    p->total_steps = 0;
    p->grad_clip = 1.0;
}

df_status df_optimizer_init(df_optimizer *o, const df_optim_params *p, size_t n) {
    memset(o, 0, sizeof *o);
    if (!(p->lr > 0) || p->beta1 < 0 || p->beta1 >= 1 || p->beta2 < 0 || p->beta2 >= 1 || !(p->eps > 0) ||
        p->weight_decay < 0 || p->momentum < 0 || p->momentum >= 1 || p->warmup_steps < 0 || p->grad_clip < 0)
        return df_fail(DF_ERR_ARG, "optimizer: invalid settings (lr %g, betas %g %g, eps %g, weight decay %g, "
                                   "momentum %g, warmup %ld, clip %g)",
                       p->lr, p->beta1, p->beta2, p->eps, p->weight_decay, p->momentum, p->warmup_steps, p->grad_clip);
    o->p = *p;
    o->n = n;
    o->m = df_alloc_aligned(n * sizeof(float));
    o->v = p->kind == DF_OPT_ADAMW ? df_alloc_aligned(n * sizeof(float)) : NULL;
    if (!o->m || (p->kind == DF_OPT_ADAMW && !o->v)) {
        df_optimizer_free(o);
        return df_fail(DF_ERR_NOMEM, "optimizer: out of memory for %zu moments", n);
    }
    memset(o->m, 0, n * sizeof(float));
    if (o->v) memset(o->v, 0, n * sizeof(float));
    return DF_OK;
}

void df_optimizer_free(df_optimizer *o) {
    if (!o) return;
    df_free_aligned(o->m);
    df_free_aligned(o->v);
    memset(o, 0, sizeof *o);
}

double df_optimizer_lr(const df_optim_params *p, long step) {
    /* as transformers' get_*_schedule_with_warmup, which diffusers uses: step / warmup during warmup */
    if (step < p->warmup_steps) return p->lr * (double)step / (double)p->warmup_steps;
    if (p->decay == DF_LR_CONSTANT || p->total_steps <= p->warmup_steps) return p->lr;
    double progress = (double)(step - p->warmup_steps) / (double)(p->total_steps - p->warmup_steps);
    if (progress > 1) progress = 1;
    if (p->decay == DF_LR_LINEAR) return p->lr * (1 - progress);
    return p->lr * 0.5 * (1 + cos(3.141592653589793 * progress));   /* SGDR's cosine, one half period */
}

void df_optimizer_step(df_optimizer *o, float *params, float *grads, double *grad_norm) {
    float *pp[1] = {params}, *gg[1] = {grads};
    const size_t nn[1] = {o->n};
    df_optimizer_step_parts(o, 1, pp, gg, nn, grad_norm);
}

void df_optimizer_step_parts(df_optimizer *o, int nparts, float *const *params, float *const *grads,
                             const size_t *n, double *grad_norm) {
    const df_optim_params *p = &o->p;
    double ss = 0;
    for (int k = 0; k < nparts; k++) {
        const float *g = grads[k];
        const size_t nk = n[k];
#pragma omp parallel for reduction(+ : ss) schedule(static)
        for (size_t i = 0; i < nk; i++) ss += (double)g[i] * g[i];
    }
    double norm = sqrt(ss);
    if (grad_norm) *grad_norm = norm;
    /* torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1 */
    float gscale = 1;
    if (p->grad_clip > 0 && norm > p->grad_clip) gscale = (float)(p->grad_clip / (norm + 1e-6));
    const double lr = df_optimizer_lr(p, o->step);
    o->step++;
    size_t off = 0;   /* the part's moments */
    for (int k = 0; k < nparts; off += n[k], k++) {
        float *par = params[k], *gr = grads[k];
        const size_t nk = n[k];
        if (p->kind == DF_OPT_ADAMW) {
            /* torch.optim.AdamW: decoupled decay, then p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps) */
            const double bc1 = 1 - pow(p->beta1, (double)o->step), bc2 = 1 - pow(p->beta2, (double)o->step);
            const float b1 = (float)p->beta1, b2 = (float)p->beta2, decay = (float)(1 - lr * p->weight_decay);
            const float step_size = (float)(lr / bc1), inv_sqrt_bc2 = (float)(1 / sqrt(bc2)), eps = (float)p->eps;
            float *m = o->m + off, *v = o->v + off;
#pragma omp parallel for schedule(static)
            for (size_t i = 0; i < nk; i++) {
                float g = gr[i] * gscale;
                gr[i] = g;
                par[i] *= decay;
                m[i] = b1 * m[i] + (1 - b1) * g;
                v[i] = b2 * v[i] + (1 - b2) * g * g;
                par[i] -= step_size * m[i] / (sqrtf(v[i]) * inv_sqrt_bc2 + eps);
            }
        } else {
            /* torch.optim.SGD: g += wd p; buf = mu buf + g (buf = g at the first step); p -= lr (g + mu buf if
             * nesterov, else buf) */
            const float mu = (float)p->momentum, wd = (float)p->weight_decay, lrf = (float)lr;
            const int first = o->step == 1;
            float *buf = o->m + off;
#pragma omp parallel for schedule(static)
            for (size_t i = 0; i < nk; i++) {
                float g = gr[i] * gscale;
                gr[i] = g;
                g += wd * par[i];
                if (mu > 0) {
                    buf[i] = first ? g : mu * buf[i] + g;
                    g = p->nesterov ? g + mu * buf[i] : buf[i];
                }
                par[i] -= lrf * g;
            }
        }
    }
}

void df_ema_init(df_ema *e, double inv_gamma, double power, double max_decay) {
    e->inv_gamma = inv_gamma;
    e->power = power;
    e->max_decay = max_decay;
    e->updates = 0;
}

double df_ema_decay(const df_ema *e) {
    double d = 1 - pow(1 + (double)e->updates / e->inv_gamma, -e->power);
    return d < 0 ? 0 : d > e->max_decay ? e->max_decay : d;
}

void df_ema_update(df_ema *e, float *ema, const float *params, size_t n) {
    const float *pp[1] = {params};
    df_ema_update_parts(e, ema, 1, pp, &n);
}

void df_ema_update_parts(df_ema *e, float *ema, int nparts, const float *const *params, const size_t *n) {
    const float d = (float)df_ema_decay(e);
    e->updates++;
    for (int k = 0; k < nparts; ema += n[k], k++) {
        const float *par = params[k];
        const size_t nk = n[k];
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < nk; i++) ema[i] -= (1 - d) * (ema[i] - par[i]);
    }
}
