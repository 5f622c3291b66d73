/* Gaussian mixtures: a data set whose ideal noise predictor is known in closed form, so samplers,
 * losses and likelihood bounds can be checked against exact answers. */
#include "internal.h"

#include <math.h>
#include <string.h>

df_status df_gmm_init(df_gmm *g, int K, int D) {
    memset(g, 0, sizeof *g);
    if (K < 1 || D < 1 || K > 4096 || D > 64) return df_fail(DF_ERR_ARG, "gmm: K = %d, D = %d out of range", K, D);
    g->K = K, g->D = D;
    g->weight = calloc((size_t)K, sizeof(double));
    g->mean = calloc((size_t)K * D, sizeof(double));
    g->cov = calloc((size_t)K * D * D, sizeof(double));
    if (!g->weight || !g->mean || !g->cov) {
        df_gmm_free(g);
        return df_fail(DF_ERR_NOMEM, "gmm: out of memory");
    }
    for (int k = 0; k < K; k++)
        for (int d = 0; d < D; d++) g->cov[((size_t)k * D + d) * D + d] = 1;
    return DF_OK;
}

void df_gmm_free(df_gmm *g) {
    if (!g) return;
    free(g->weight);
    free(g->mean);
    free(g->cov);
    memset(g, 0, sizeof *g);
}

/* Cholesky factor L (lower, D x D) of a symmetric positive definite A; returns log det A. */
static double cholesky(const double *A, int D, double *L) {
    double logdet = 0;
    memset(L, 0, sizeof(double) * D * D);
    for (int i = 0; i < D; i++)
        for (int j = 0; j <= i; j++) {
            double s = A[i * D + j];
            for (int k = 0; k < j; k++) s -= L[i * D + k] * L[j * D + k];
            if (i == j) {
                DF_ASSERT(s > 0);   /* covariances are positive definite by contract */
                L[i * D + i] = sqrt(s);
                logdet += log(s);
            } else {
                L[i * D + j] = s / L[j * D + j];
            }
        }
    return logdet;
}

/* Solve (L L^T) r = b in place. */
static void chol_solve(const double *L, int D, double *r) {
    for (int i = 0; i < D; i++) {
        for (int k = 0; k < i; k++) r[i] -= L[i * D + k] * r[k];
        r[i] /= L[i * D + i];
    }
    for (int i = D - 1; i >= 0; i--) {
        for (int k = i + 1; k < D; k++) r[i] -= L[k * D + i] * r[k];
        r[i] /= L[i * D + i];
    }
}

void df_gmm_sample_vectors(const df_gmm *g, df_rng *rng, size_t count, double *v, int *comp) {
    const int D = g->D;
    double L[64 * 64], z[64];
    for (size_t i = 0; i < count; i++) {
        double u = df_rng_uniform(rng), acc = 0;
        int k = 0;
        for (; k < g->K - 1; k++) {
            acc += g->weight[k];
            if (u < acc) break;
        }
        cholesky(g->cov + (size_t)k * D * D, D, L);
        for (int d = 0; d < D; d++) z[d] = df_rng_normal(rng);
        for (int d = 0; d < D; d++) {
            double s = g->mean[(size_t)k * D + d];
            for (int e = 0; e <= d; e++) s += L[d * D + e] * z[e];
            v[i * D + d] = s;
        }
        if (comp) comp[i] = k;
    }
}

void df_gmm_sample(const df_gmm *g, df_rng *rng, int n, size_t dim, float *x) {
    const int D = g->D;
    const size_t per = dim / (size_t)D;
    double v[64];
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < per; j++) {
            df_gmm_sample_vectors(g, rng, 1, v, NULL);
            for (int d = 0; d < D; d++) x[(size_t)i * dim + j + d * per] = (float)v[d];
        }
}

/* The exact predictor and classifier at once. labels (n values, or NULL for all K) restrict sample i to
 * component labels[i] (K: the whole mixture) for `out`; `logp` and `grad` (either may be NULL) get the
 * noisy classifier log p(y = labels[i] | x_t) summed over the sample's independent vectors, and its
 * gradient with respect to x_t: -Sigma_y^-1 (x - a mu_y) + sum_k gamma_k Sigma_k^-1 (x - a mu_k). */
static df_status gmm_eval(const df_gmm_denoiser *dn, int n, const float *x, const float *t, const int *labels,
                          float *out, double *logp, float *grad) {
    const df_gmm *g = dn->gmm;
    const int D = g->D, K = g->K;
    if (dn->dim % (size_t)D) return df_fail(DF_ERR_ARG, "gmm: sample size %zu is not a multiple of D = %d", dn->dim, D);
    for (int i = 0; labels && i < n; i++)
        if (labels[i] < 0 || labels[i] > K || ((logp || grad) && labels[i] == K))
            return df_fail(DF_ERR_ARG, "gmm: label %d out of range 0..%d", labels[i], (logp || grad) ? K - 1 : K);
    const size_t per = dn->dim / (size_t)D;
    double *L = malloc(sizeof(double) * (size_t)K * D * D), *logdet = malloc(sizeof(double) * K),
           *r = malloc(sizeof(double) * (size_t)K * D), *lp = malloc(sizeof(double) * K),
           *C = malloc(sizeof(double) * D * D);
    if (!L || !logdet || !r || !lp || !C) {
        free(L), free(logdet), free(r), free(lp), free(C);
        return df_fail(DF_ERR_NOMEM, "gmm: out of memory");
    }
    for (int i = 0; i < n; i++) {
        double ab = df_schedule_alpha_bar(dn->schedule, t[i]), a = sqrt(ab), s = sqrt(1 - ab);
        /* the marginal at t: component k is N(a mu_k, a^2 S_k + s^2 I); samplers and the VLB pass one t
         * for the whole batch, so the factors are only recomputed when t changes */
        for (int k = 0; k < K && (i == 0 || t[i] != t[i - 1]); k++) {
            memcpy(C, g->cov + (size_t)k * D * D, sizeof(double) * D * D);
            for (int e = 0; e < D * D; e++) C[e] *= ab;
            for (int d = 0; d < D; d++) C[d * D + d] += 1 - ab;
            logdet[k] = cholesky(C, D, L + (size_t)k * D * D);
        }
        int y = labels ? labels[i] : K;
        if (logp) logp[i] = 0;
        for (size_t j = 0; j < per; j++) {
            double xv[64], x0[64], mx = -INFINITY, z = 0;
            for (int d = 0; d < D; d++) xv[d] = x[(size_t)i * dn->dim + j + d * per];
            for (int k = 0; k < K; k++) {
                double *rk = r + (size_t)k * D, q = 0;
                for (int d = 0; d < D; d++) rk[d] = xv[d] - a * g->mean[(size_t)k * D + d];
                double diff[64];
                memcpy(diff, rk, sizeof(double) * D);
                chol_solve(L + (size_t)k * D * D, D, rk);   /* rk = Sigma_t^-1 (x - a mu_k) */
                for (int d = 0; d < D; d++) q += diff[d] * rk[d];
                lp[k] = g->weight[k] > 0 ? log(g->weight[k]) - 0.5 * (q + logdet[k]) : -INFINITY;
                if (lp[k] > mx) mx = lp[k];
            }
            for (int k = 0; k < K; k++) z += lp[k] = exp(lp[k] - mx);   /* posterior responsibilities */
            if (logp || grad) {
                if (logp) logp[i] += log(lp[y] / z);
                for (int d = 0; grad && d < D; d++) {
                    double gd = -r[(size_t)y * D + d];
                    for (int k = 0; k < K; k++) gd += lp[k] / z * r[(size_t)k * D + d];
                    grad[(size_t)i * dn->dim + j + d * per] = (float)gd;
                }
            }
            if (!out) continue;
            /* E[x_0 | x_t] = sum_k gamma_k (mu_k + a S_k Sigma_t^-1 (x - a mu_k)); stable as abar -> 0.
             * Conditioned on a class, gamma is 1 for that component. */
            for (int d = 0; d < D; d++) x0[d] = 0;
            for (int k = 0; k < K; k++) {
                double gk = y < K ? (k == y) : lp[k] / z;
                if (gk == 0) continue;
                const double *S = g->cov + (size_t)k * D * D, *rk = r + (size_t)k * D;
                for (int d = 0; d < D; d++) {
                    double v = g->mean[(size_t)k * D + d];
                    for (int e = 0; e < D; e++) v += a * S[d * D + e] * rk[e];
                    x0[d] += gk * v;
                }
            }
            for (int d = 0; d < D; d++) {
                double eps = s > 0 ? (xv[d] - a * x0[d]) / s : 0, o;
                switch (dn->prediction) {
                case DF_PRED_SAMPLE: o = x0[d]; break;
                case DF_PRED_V: o = a * eps - s * x0[d]; break;
                default: o = eps; break;
                }
                out[(size_t)i * dn->dim + j + d * per] = (float)o;
            }
        }
    }
    free(L), free(logdet), free(r), free(lp), free(C);
    return DF_OK;
}

df_status df_gmm_denoise(void *ctx, int n, const float *x, const float *t, float *out) {
    return gmm_eval(ctx, n, x, t, NULL, out, NULL, NULL);
}

df_status df_gmm_class_denoise(void *ctx, int n, const float *x, const float *t, const int *labels, float *out) {
    return gmm_eval(ctx, n, x, t, labels, out, NULL, NULL);
}

df_status df_gmm_classify(void *ctx, int n, const float *x, const float *t, const int *labels, double *logp,
                          float *grad) {
    if (!labels) return df_fail(DF_ERR_ARG, "gmm: classifying needs labels");
    return gmm_eval(ctx, n, x, t, labels, NULL, logp, grad);
}
