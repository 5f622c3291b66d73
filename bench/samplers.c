/* How well each sampler reproduces a known distribution as the number of steps grows: samples of a 2-D
 * Gaussian mixture drawn with its exact noise predictor, compared with the mixture; a markdown table.
 * Usage: bench_samplers [--vectors N] [--seed S] */
#define _POSIX_C_SOURCE 200809L
#include "diffuse.h"
#include "internal.h"
#include "../cli/restart.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define K 3
#define PER 100   /* 2-vectors per sample: the predictor's per-sample set-up is shared by this many */

/* The mixture of tests/test_sampler.c: unequal weights, full covariances, means well inside [-1, 1]. */
static void make_gmm(df_gmm *g) {
    static const double w[K] = {0.5, 0.3, 0.2};
    static const double mu[K][2] = {{-0.5, -0.4}, {0.5, -0.3}, {0.0, 0.55}};
    static const double sd[K][2] = {{0.15, 0.10}, {0.10, 0.18}, {0.20, 0.08}}, rho[K] = {0.5, -0.6, 0.3};
    df_gmm_init(g, K, 2);
    for (int k = 0; k < K; k++) {
        g->weight[k] = w[k];
        g->mean[2 * k] = mu[k][0], g->mean[2 * k + 1] = mu[k][1];
        double *S = g->cov + 4 * k;
        S[0] = sd[k][0] * sd[k][0], S[3] = sd[k][1] * sd[k][1];
        S[1] = S[2] = rho[k] * sd[k][0] * sd[k][1];
    }
}

/* Each vector goes to the component with the highest responsibility; err = sum over components of
 * |weight error| + |mean error| + |covariance error|_F (Frobenius). */
static double mixture_error(const df_gmm *g, const double *v, size_t count, double parts[3]) {
    double cnt[K] = {0}, m[K][2] = {{0}}, c[K][3] = {{0}};
    int *who = malloc(sizeof(int) * count);
    for (size_t i = 0; i < count; i++) {
        const double x = v[2 * i], y = v[2 * i + 1];
        double best = -INFINITY;
        int bk = 0;
        for (int k = 0; k < K; k++) {
            const double *S = g->cov + 4 * k, det = S[0] * S[3] - S[1] * S[1];
            const double dx = x - g->mean[2 * k], dy = y - g->mean[2 * k + 1];
            const double q = (S[3] * dx * dx - 2 * S[1] * dx * dy + S[0] * dy * dy) / det;
            const double lp = log(g->weight[k]) - 0.5 * (q + log(det));
            if (lp > best) best = lp, bk = k;
        }
        who[i] = bk;
        cnt[bk]++, m[bk][0] += x, m[bk][1] += y;
    }
    for (int k = 0; k < K; k++)
        if (cnt[k] > 0) m[k][0] /= cnt[k], m[k][1] /= cnt[k];
    for (size_t i = 0; i < count; i++) {
        const int k = who[i];
        const double dx = v[2 * i] - m[k][0], dy = v[2 * i + 1] - m[k][1];
        c[k][0] += dx * dx, c[k][1] += dx * dy, c[k][2] += dy * dy;
    }
    free(who);
    parts[0] = parts[1] = parts[2] = 0;
    for (int k = 0; k < K; k++) {
        const double *S = g->cov + 4 * k, n = cnt[k] > 1 ? cnt[k] - 1 : 1;
        parts[0] += fabs(cnt[k] / (double)count - g->weight[k]);
        parts[1] += hypot(m[k][0] - g->mean[2 * k], m[k][1] - g->mean[2 * k + 1]);
        const double e0 = c[k][0] / n - S[0], e1 = c[k][1] / n - S[1], e2 = c[k][2] / n - S[3];
        parts[2] += sqrt(e0 * e0 + 2 * e1 * e1 + e2 * e2);
    }
    return parts[0] + parts[1] + parts[2];
}

/* The exact predictor over the samples split between threads (each call is independent, so the result
 * does not depend on the thread count). */
typedef struct {
    df_gmm_denoiser dn;
} par_denoiser;

static df_status par_denoise(void *ctx, int n, const float *x, const float *t, float *out) {
    par_denoiser *pd = ctx;
    const size_t dim = pd->dn.dim;
    const int chunks = 8;
    int failed = 0;
#pragma omp parallel for schedule(static) reduction(|| : failed)
    for (int c = 0; c < chunks; c++) {
        int a = n * c / chunks, b = n * (c + 1) / chunks;
        if (b > a && df_gmm_denoise(&pd->dn, b - a, x + (size_t)a * dim, t + a, out + (size_t)a * dim)) failed = 1;
    }
    return failed ? DF_ERR_ARG : DF_OK;
}

typedef struct {
    const char     *label;
    df_sampler_kind kind;
    df_spacing      spacing;
    double          eta;
    int             variance_large, karras;
} config;

int main(int argc, char **argv) {
    cli_prefer_passive_threads(argv);
    size_t vectors = 50000;
    uint64_t seed = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--vectors") && i + 1 < argc) vectors = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: bench_samplers [--vectors N] [--seed S]\n");
            return 2;
        }
    }
    const int n = (int)((vectors + PER - 1) / PER);
    vectors = (size_t)n * PER;
    const size_t dim = 2 * PER;
    df_gmm g;
    make_gmm(&g);
    df_schedule s;
    df_schedule_init_default(&s);
    par_denoiser dn = {{&g, &s, dim, DF_PRED_EPSILON}};
    float *x = malloc(sizeof(float) * vectors * 2);
    double *v = malloc(sizeof(double) * vectors * 2), parts[3];
    if (!x || !v) {
        fprintf(stderr, "bench_samplers: out of memory\n");
        return 1;
    }

    static const config configs[] = {
        {"DDPM fixed_small", DF_SAMPLER_DDPM, DF_SPACING_LEADING, 0, 0, 0},
        {"DDPM fixed_large", DF_SAMPLER_DDPM, DF_SPACING_LEADING, 0, 1, 0},
        {"DDIM eta 0", DF_SAMPLER_DDIM, DF_SPACING_LEADING, 0, 0, 0},
        {"DDIM eta 0, trailing", DF_SAMPLER_DDIM, DF_SPACING_TRAILING, 0, 0, 0},
        {"DDIM eta 1", DF_SAMPLER_DDIM, DF_SPACING_LEADING, 1, 0, 0},
        {"DPM-Solver++ 1S", DF_SAMPLER_DPMPP_1S, DF_SPACING_LINSPACE, 0, 0, 0},
        {"DPM-Solver++ 2M", DF_SAMPLER_DPMPP_2M, DF_SPACING_LINSPACE, 0, 0, 0},
        {"DPM-Solver++ 2M Karras", DF_SAMPLER_DPMPP_2M, DF_SPACING_LINSPACE, 0, 0, 1},
        {"DPM-Solver++ 3M", DF_SAMPLER_DPMPP_3M, DF_SPACING_LINSPACE, 0, 0, 0},
        {"Euler", DF_SAMPLER_EULER, DF_SPACING_LINSPACE, 0, 0, 0},
        {"Euler Karras", DF_SAMPLER_EULER, DF_SPACING_LINSPACE, 0, 0, 1},
        {"Heun (2N-1 evaluations)", DF_SAMPLER_HEUN, DF_SPACING_LINSPACE, 0, 0, 0},
        {"Heun Karras (2N-1 evaluations)", DF_SAMPLER_HEUN, DF_SPACING_LINSPACE, 0, 0, 1},
    };
    static const int steps[] = {5, 10, 20, 50, 100, 250, 1000};
    const int nsteps = DF_COUNTOF(steps);

    /* the floor: the same error for exact samples of the mixture, as many as the samplers make (the mean
     * over 8 draws) */
    df_rng r;
    double floor_err = 0;
    for (int k = 0; k < 8; k++) {
        df_rng_init(&r, seed + 1000 + (uint64_t)k);
        df_gmm_sample_vectors(&g, &r, vectors, v, NULL);
        floor_err += mixture_error(&g, v, vectors, parts) / 8;
    }

    printf("Error of %zu generated 2-D vectors against the exact 3-component mixture: sum over components of\n"
           "|weight error| + |mean error| + |covariance error|_F (linear schedule, T = 1000, epsilon prediction,\n"
           "exact predictor; the same seed, so the same starting noise, in every cell). Exact samples of the\n"
           "mixture, as many, score %.4f on average: the floor. \"-\": the spacing repeats a timestep.\n\n",
           vectors, floor_err);
    printf("| sampler | spacing |");
    for (int j = 0; j < nsteps; j++) printf(" %d |", steps[j]);
    printf("\n|---|---|");
    for (int j = 0; j < nsteps; j++) printf("---|");
    printf("\n");
    for (int c = 0; c < DF_COUNTOF(configs); c++) {
        const config *cf = &configs[c];
        df_sampler_params p;
        df_sampler_params_default(&p);
        p.kind = cf->kind, p.spacing = cf->spacing, p.eta = cf->eta;
        p.variance_large = cf->variance_large, p.karras_sigmas = cf->karras;
        static const char *const spacing[3] = {"leading", "linspace", "trailing"};
        printf("| %s | %s |", cf->label, spacing[cf->spacing]);
        fflush(stdout);
        for (int j = 0; j < nsteps; j++) {
            p.steps = steps[j];
            df_rng_init(&r, seed);
            df_status st = df_sample(&s, &p, par_denoise, &dn, n, dim, &r, x);
            if (st) {
                printf(" - |");
                continue;
            }
            for (int i = 0; i < n; i++)
                for (int k = 0; k < PER; k++) {
                    v[2 * ((size_t)i * PER + k)] = x[(size_t)i * dim + k];
                    v[2 * ((size_t)i * PER + k) + 1] = x[(size_t)i * dim + PER + k];
                }
            printf(" %.4f |", mixture_error(&g, v, vectors, parts));
            fflush(stdout);
        }
        printf("\n");
    }
    free(x), free(v);
    df_gmm_free(&g);
    df_schedule_free(&s);
    return 0;
}
