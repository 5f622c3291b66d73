/* Guidance: classifier-free guidance (Ho & Salimans 2022) and classifier guidance (Dhariwal & Nichol
 * 2021), both as df_denoise_fn wrappers so every sampler can use them. */
#include "internal.h"

#include <math.h>
#include <string.h>

/* ---- classifier-free guidance -------------------------------------------------------------------------- */

df_status df_classifier_free_guidance_init(df_classifier_free_guidance *g, df_class_denoise_fn fn, void *ctx, size_t dim, int null_label) {
    memset(g, 0, sizeof *g);
    if (!fn || dim == 0) return df_fail(DF_ERR_ARG, "guidance: no predictor or empty samples");
    g->fn = fn, g->ctx = ctx, g->dim = dim, g->null_label = null_label;
    g->scale = 1;
    g->sigma_hi = INFINITY;
    return DF_OK;
}

void df_classifier_free_guidance_free(df_classifier_free_guidance *g) {
    if (!g) return;
    free(g->x2), free(g->t2), free(g->out2), free(g->l2);
    memset(g, 0, sizeof *g);
}

df_status df_classifier_free_guidance_reserve(df_classifier_free_guidance *g, int n) {
    if (n <= g->cap) return DF_OK;
    free(g->x2), free(g->t2), free(g->out2), free(g->l2);
    size_t m = (size_t)2 * n;
    g->x2 = malloc(sizeof(float) * m * g->dim);
    g->out2 = malloc(sizeof(float) * m * g->dim);
    g->t2 = malloc(sizeof(float) * m);
    g->l2 = malloc(sizeof(int) * m);
    g->cap = (g->x2 && g->out2 && g->t2 && g->l2) ? n : 0;
    return g->cap ? DF_OK : df_fail(DF_ERR_NOMEM, "guidance: out of memory for a batch of %d", n);
}

static int in_interval(const df_classifier_free_guidance *g, float t) {
    if (!g->schedule) return 1;
    const double s = df_schedule_sigma(g->schedule, t);
    return s > g->sigma_lo && s <= g->sigma_hi;
}

df_status df_classifier_free_guidance_denoise(void *ctx, int n, const float *x, const float *t, float *out) {
    df_classifier_free_guidance *g = ctx;
    if (!g->labels) return df_fail(DF_ERR_ARG, "guidance: no class labels set");
    if (!(g->scale >= 0) || !(g->rescale >= 0 && g->rescale <= 1))
        return df_fail(DF_ERR_ARG, "guidance: scale %g must be >= 0 and rescale %g in [0, 1]", g->scale, g->rescale);
    if (g->schedule && !(g->sigma_lo >= 0 && g->sigma_hi > g->sigma_lo))
        return df_fail(DF_ERR_ARG, "guidance: the interval (%g, %g] is empty or negative", g->sigma_lo, g->sigma_hi);
    const size_t D = g->dim;
    int guided = 0;
    for (int i = 0; i < n && !guided; i++) guided = in_interval(g, t[i]);
    /* plain conditional: one pass */
    if (g->scale == 1 || !guided) return g->fn(g->ctx, n, x, t, g->labels, out);
    df_status st = df_classifier_free_guidance_reserve(g, n);
    if (st) return st;
    /* one call of twice the batch: [conditional | unconditional] */
    memcpy(g->x2, x, sizeof(float) * n * D);
    memcpy(g->x2 + (size_t)n * D, x, sizeof(float) * n * D);
    memcpy(g->t2, t, sizeof(float) * n);
    memcpy(g->t2 + n, t, sizeof(float) * n);
    memcpy(g->l2, g->labels, sizeof(int) * n);
    for (int i = 0; i < n; i++) g->l2[n + i] = g->null_label;
    if ((st = g->fn(g->ctx, 2 * n, g->x2, g->t2, g->l2, g->out2))) return st;
    const double w = g->scale;
    for (int i = 0; i < n; i++) {
        const float *c = g->out2 + (size_t)i * D, *u = g->out2 + (size_t)(n + i) * D;
        float *o = out + (size_t)i * D;
        if (!in_interval(g, t[i])) {
            memcpy(o, c, sizeof(float) * D);
            continue;
        }
        double sc = 0, sg = 0, mc = 0, mg = 0;
        for (size_t k = 0; k < D; k++) {
            double v = u[k] + w * ((double)c[k] - u[k]);   /* eps_u + w (eps_c - eps_u) */
            o[k] = (float)v;
            mc += c[k], mg += v;
        }
        if (g->rescale == 0) continue;
        /* guidance rescale (Lin et al. 2024, eqs. 15-16): bring the guided output's standard deviation
         * back to the conditional one's, blended by phi */
        mc /= (double)D, mg /= (double)D;
        for (size_t k = 0; k < D; k++) {
            sc += (c[k] - mc) * (c[k] - mc);
            sg += (o[k] - mg) * (o[k] - mg);
        }
        double f = sg > 0 ? sqrt(sc / sg) : 1, phi = g->rescale;
        for (size_t k = 0; k < D; k++) o[k] = (float)(phi * f * o[k] + (1 - phi) * o[k]);
    }
    return DF_OK;
}

/* ---- classifier guidance ------------------------------------------------------------------------------ */

df_status df_classifier_guidance_init(df_classifier_guidance *g, df_denoise_fn fn, void *ctx,
                                      df_classifier_fn classify, void *classify_ctx, const df_schedule *s,
                                      df_prediction prediction, size_t dim) {
    memset(g, 0, sizeof *g);
    if (!fn || !classify || !s || dim == 0) return df_fail(DF_ERR_ARG, "classifier guidance: missing predictor, classifier or schedule");
    g->fn = fn, g->ctx = ctx, g->classify = classify, g->classify_ctx = classify_ctx;
    g->schedule = s, g->prediction = prediction, g->dim = dim, g->scale = 1;
    return DF_OK;
}

void df_classifier_guidance_free(df_classifier_guidance *g) {
    if (!g) return;
    free(g->grad), free(g->logp);
    memset(g, 0, sizeof *g);
}

df_status df_classifier_guidance_reserve(df_classifier_guidance *g, int n) {
    if (n <= g->cap) return DF_OK;
    free(g->grad), free(g->logp);
    g->grad = malloc(sizeof(float) * (size_t)n * g->dim);
    g->logp = malloc(sizeof(double) * (size_t)n);
    g->cap = g->grad && g->logp ? n : 0;
    return g->cap ? DF_OK : df_fail(DF_ERR_NOMEM, "classifier guidance: out of memory for a batch of %d", n);
}

/* The timestep the DDPM sampler goes to after t: the next entry of the list, or -1 (the last step). */
static double next_timestep(const df_classifier_guidance *g, double t) {
    for (int i = 0; i + 1 < g->nsteps; i++)
        if (g->timesteps[i] == (float)t) return g->timesteps[i + 1];
    return -1;
}

df_status df_classifier_guidance_denoise(void *ctx, int n, const float *x, const float *t, float *out) {
    df_classifier_guidance *g = ctx;
    if (!g->labels) return df_fail(DF_ERR_ARG, "classifier guidance: no class labels set");
    if (!(g->scale >= 0)) return df_fail(DF_ERR_ARG, "classifier guidance: scale %g must be >= 0", g->scale);
    if (g->ddpm_mean && !g->timesteps)
        return df_fail(DF_ERR_ARG, "classifier guidance: the DDPM form needs the sampler's timesteps");
    const size_t D = g->dim;
    df_status st = df_classifier_guidance_reserve(g, n);
    if (!st) st = g->fn(g->ctx, n, x, t, out);
    if (!st) st = g->classify(g->classify_ctx, n, x, t, g->labels, g->logp, g->grad);
    if (st) return st;
    for (int i = 0; i < n; i++) {
        const double ab = df_schedule_alpha_bar(g->schedule, t[i]), a = sqrt(ab), s = sqrt(1 - ab);
        /* Algorithm 2 (DDIM and any other sampler): eps_hat = eps - sqrt(1 - abar) s grad log p(y | x_t).
         * Algorithm 1 (DDPM): the step's mean moves by s Sigma grad; written as the eps shift that moves
         * the DDPM mean (x - beta / sqrt(1 - abar) eps) / sqrt(alpha) by exactly that much. */
        double k = g->scale * s;
        if (g->ddpm_mean) {
            double tp = next_timestep(g, t[i]);
            double abp = tp >= 0 ? df_schedule_alpha_bar(g->schedule, tp) : 1;
            double alpha = ab / abp, beta = 1 - alpha;
            double var = g->large_variance ? beta : beta * (1 - abp) / (1 - ab);
            if (tp < 0) var = 0;   /* the last step adds no noise, and no shift */
            k = beta > 0 ? g->scale * var * sqrt(alpha) * s / beta : 0;
        }
        float *o = out + (size_t)i * D;
        const float *gr = g->grad + (size_t)i * D, *xi = x + (size_t)i * D;
        for (size_t j = 0; j < D; j++) {
            /* the network's output as (eps, x0), eps shifted, back to its own parameterisation */
            double eps, x0;
            switch (g->prediction) {
            case DF_PRED_SAMPLE: x0 = o[j], eps = s > 0 ? (xi[j] - a * x0) / s : 0; break;
            case DF_PRED_V: eps = a * o[j] + s * xi[j], x0 = a * xi[j] - s * o[j]; break;
            default: eps = o[j], x0 = a > 0 ? (xi[j] - s * eps) / a : 0; break;
            }
            eps -= k * gr[j];
            x0 = a > 0 ? (xi[j] - s * eps) / a : x0;
            o[j] = (float)(g->prediction == DF_PRED_SAMPLE ? x0 : g->prediction == DF_PRED_V ? a * eps - s * x0 : eps);
        }
    }
    return DF_OK;
}
