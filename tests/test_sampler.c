/* Samplers on closed forms: with the exact noise predictor of a Gaussian mixture every sampler must give
 * back the mixture; on a Gaussian the ODE samplers must converge at their order; diffusers' timesteps. */
#include "mixture.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- the mixtures and their statistics (shared with tests/test_edit.c through mixture.h) ------------ */

/* S = diag(sd) R diag(sd) with correlations r = (r01, r02, r12): the pair a < b is r[a + b - 1]. */
static void set_cov(df_gmm *g, int k, const double *sd, const double *r) {
    const int D = g->D;
    double *S = g->cov + (size_t)k * D * D;
    for (int a = 0; a < D; a++)
        for (int b = 0; b < D; b++) S[a * D + b] = (a == b ? 1 : r[a + b - 1]) * sd[a] * sd[b];
}

void mix_make_2d(df_gmm *g) {
    static const double w[3] = {0.5, 0.3, 0.2};
    static const double mu[3][2] = {{-0.5, -0.4}, {0.5, -0.3}, {0.0, 0.55}};
    static const double sd[3][2] = {{0.15, 0.10}, {0.10, 0.18}, {0.20, 0.08}}, rho[3][3] = {{0.5}, {-0.6}, {0.3}};
    df_gmm_init(g, 3, 2);
    for (int k = 0; k < 3; k++) {
        g->weight[k] = w[k];
        g->mean[2 * k] = mu[k][0], g->mean[2 * k + 1] = mu[k][1];
        set_cov(g, k, sd[k], rho[k]);
    }
}

void mix_make_3d(df_gmm *g) {
    static const double w[3] = {0.4, 0.35, 0.25};
    static const double mu[3][3] = {{-0.5, -0.3, 0.4}, {0.5, -0.4, -0.3}, {0.0, 0.6, 0.0}};
    static const double sd[3][3] = {{0.15, 0.10, 0.12}, {0.10, 0.14, 0.10}, {0.12, 0.10, 0.15}};
    static const double r[3][3] = {{0.4, -0.3, 0.2}, {-0.5, 0.3, 0.1}, {0.2, 0.0, 0.5}};   /* r01, r02, r12 */
    df_gmm_init(g, 3, 3);
    for (int k = 0; k < 3; k++) {
        g->weight[k] = w[k];
        for (int d = 0; d < 3; d++) g->mean[3 * k + d] = mu[k][d];
        set_cov(g, k, sd[k], r[k]);
    }
}

/* Cholesky of a D x D (D <= 3) SPD matrix; returns log det. */
static double chol(const double *A, int D, double *L) {
    double logdet = 0;
    memset(L, 0, sizeof(double) * D * D);
    for (int i = 0; i < D; i++)
        for (int j = 0; j <= i; j++) {
            double s = A[i * D + j];
            for (int k = 0; k < j; k++) s -= L[i * D + k] * L[j * D + k];
            if (i == j) L[i * D + i] = sqrt(s), logdet += log(s);
            else L[i * D + j] = s / L[j * D + j];
        }
    return logdet;
}

int mix_assign(const df_gmm *g, const double *v) {
    const int D = g->D;
    double best = -INFINITY, L[MIX_MAX_D * MIX_MAX_D], z[MIX_MAX_D];
    int bk = 0;
    for (int k = 0; k < g->K; k++) {
        double logdet = chol(g->cov + (size_t)k * D * D, D, L), q = 0;
        for (int i = 0; i < D; i++) {   /* z = L^-1 (v - mu), q = |z|^2 */
            double s = v[i] - g->mean[k * D + i];
            for (int j = 0; j < i; j++) s -= L[i * D + j] * z[j];
            z[i] = s / L[i * D + i];
            q += z[i] * z[i];
        }
        double lp = log(g->weight[k]) - 0.5 * (q + logdet);
        if (lp > best) best = lp, bk = k;
    }
    return bk;
}

void mix_stats_vectors(const df_gmm *g, const double *v, size_t count, mix_stats *st) {
    const int D = g->D, K = g->K;
    DF_ASSERT(K <= MIX_MAX_K && D <= MIX_MAX_D);
    memset(st, 0, sizeof *st);
    st->K = K, st->D = D;
    double sum[MIX_MAX_K][MIX_MAX_D] = {{0}}, sq[MIX_MAX_K][MIX_MAX_D][MIX_MAX_D] = {{{0}}};
    /* two passes (means, then centred products) keep the covariances accurate */
    int *who = malloc(sizeof(int) * (count ? count : 1));
    for (size_t i = 0; i < count; i++) {
        const double *x = v + i * D;
        int finite = 1;
        for (int d = 0; d < D; d++) finite &= isfinite(x[d]);
        if (!finite) {
            st->nonfinite++, who[i] = -1;
            continue;
        }
        int k = who[i] = mix_assign(g, x);
        st->n[k]++;
        for (int d = 0; d < D; d++) sum[k][d] += x[d];
    }
    for (int k = 0; k < K; k++)
        for (int d = 0; d < D; d++) st->mean[k][d] = st->n[k] > 0 ? sum[k][d] / st->n[k] : NAN;
    for (size_t i = 0; i < count; i++) {
        const int k = who[i];
        if (k < 0) continue;
        for (int a = 0; a < D; a++)
            for (int b = 0; b < D; b++)
                sq[k][a][b] += (v[i * D + a] - st->mean[k][a]) * (v[i * D + b] - st->mean[k][b]);
    }
    free(who);
    st->count = (double)count - st->nonfinite;
    for (int k = 0; k < K; k++) {
        st->weight[k] = st->n[k] / (st->count > 0 ? st->count : 1);
        for (int a = 0; a < D; a++)
            for (int b = 0; b < D; b++) st->cov[k][a][b] = st->n[k] > 1 ? sq[k][a][b] / (st->n[k] - 1) : NAN;
    }
}

void mix_stats_samples(const df_gmm *g, int n, size_t dim, const float *x, mix_stats *st) {
    const int D = g->D;
    const size_t per = dim / (size_t)D, count = (size_t)n * per;
    double *v = malloc(sizeof(double) * count * D);
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < per; j++)
            for (int d = 0; d < D; d++) v[((size_t)i * per + j) * D + d] = x[(size_t)i * dim + j + d * per];
    mix_stats_vectors(g, v, count, st);
    free(v);
}

/* Tolerances. For N vectors and a component of weight w, covariance S and N_k ~ w N vectors:
 *   weight:      N_k / N is binomial, SE = sqrt(w (1 - w) / N);
 *   mean:        SE of coordinate d = sqrt(S_dd / N_k);
 *   covariance:  for Gaussian vectors Var(S^_de) = (S_dd S_ee + S_de^2) / N_k (Isserlis), SE its root.
 * Assigning each vector to its most responsible component misclassifies the tails beyond the
 * boundaries; the means of our mixtures are at least 3.5 standard deviations (along the line joining
 * them) from every boundary, so that affects under 2e-4 of the vectors, well inside one SE. A statistic
 * fails when |error| > MIX_Z SE + budget, where the budget is the sampler's discretisation error, measured
 * once with 10^5 vectors (see the tables at each test) and rounded up by about half. */
typedef struct {
    const char *file, *what;
    int         line, fails;
    double      worst;   /* largest |error| / tolerance, for DIFFUSE_VERBOSE */
    char        worst_name[48];
} mix_checker;

static void check_stat(mix_checker *c, const char *name, double err, double tol) {
    if (!(fabs(err) <= tol)) {
        test_fail_at(c->file, c->line, "%s: %s off by %.4g (tolerance %.4g)", c->what, name, err, tol);
        c->fails++;
    }
    if (!(fabs(err) / tol <= c->worst)) {
        c->worst = fabs(err) / tol;
        snprintf(c->worst_name, sizeof c->worst_name, "%s", name);
    }
}

int mix_check_at(const char *file, int line, const char *what, const df_gmm *g, const mix_stats *st, mix_budget b) {
    const int D = g->D;
    mix_checker c = {file, what, line, 0, 0, ""};
    if (st->nonfinite) {
        test_fail_at(file, line, "%s: %d vectors are not finite", what, st->nonfinite);
        c.fails++;
    }
    char name[48];
    for (int k = 0; k < g->K; k++) {
        const double w = g->weight[k], nk = fmax(st->n[k], 2);
        const double *S = g->cov + (size_t)k * D * D;
        snprintf(name, sizeof name, "weight[%d]", k);
        check_stat(&c, name, st->weight[k] - w, MIX_Z * sqrt(w * (1 - w) / st->count) + b.weight);
        for (int a = 0; a < D; a++) {
            snprintf(name, sizeof name, "mean[%d][%d]", k, a);
            check_stat(&c, name, st->mean[k][a] - g->mean[k * D + a], MIX_Z * sqrt(S[a * D + a] / nk) + b.mean);
            for (int e = 0; e <= a; e++) {
                const double scale = sqrt(S[a * D + a] * S[e * D + e]), se = S[a * D + e];
                snprintf(name, sizeof name, "cov[%d][%d][%d]", k, a, e);
                check_stat(&c, name, st->cov[k][a][e] - se,
                           MIX_Z * sqrt((scale * scale + se * se) / nk) + b.cov * scale);
            }
        }
    }
    if (getenv("DIFFUSE_VERBOSE")) {
        /* the largest errors in the units of the budgets (with DIFFUSE_CALIBRATE=100000, the measurement
         * behind each test's budgets) */
        double ew = 0, em = 0, ec = 0;
        for (int k = 0; k < g->K; k++) {
            const double *S = g->cov + (size_t)k * D * D;
            ew = fmax(ew, fabs(st->weight[k] - g->weight[k]));
            for (int a = 0; a < D; a++) {
                em = fmax(em, fabs(st->mean[k][a] - g->mean[k * D + a]));
                for (int e = 0; e <= a; e++)
                    ec = fmax(ec, fabs(st->cov[k][a][e] - S[a * D + e]) / sqrt(S[a * D + a] * S[e * D + e]));
            }
        }
        printf("    %-40s %6.0f vectors: errors %.3f %.3f %.3f, worst %s at %.2f of its tolerance\n", what, st->count,
               ew, em, ec, c.worst_name, c.worst);
    }
    return c.fails;
}

df_status mix_counting_denoise(void *ctx, int n, const float *x, const float *t, float *out) {
    mix_counter *c = ctx;
    c->calls++;
    return df_gmm_denoise(&c->dn, n, x, t, out);
}

/* ---- helpers ---------------------------------------------------------------------------------------- */

#define PER 50   /* 2-D vectors per sample: the exact predictor's per-sample set-up is shared by them */

/* DIFFUSE_CALIBRATE=N runs the mixture tests with N vectors (and N / 16 images) instead. */
static int calibrate(void) {
    const char *c = getenv("DIFFUSE_CALIBRATE");
    return c ? atoi(c) : 0;
}

static int vectors_2d(void) { return calibrate() > 0 ? calibrate() : test_quick() ? 1000 : 4000; }

static int is_dpm(df_sampler_kind k) {
    return k == DF_SAMPLER_DPMPP_1S || k == DF_SAMPLER_DPMPP_2M || k == DF_SAMPLER_DPMPP_3M;
}

static df_sampler_params params(df_sampler_kind kind, int steps) {
    df_sampler_params p;
    df_sampler_params_default(&p);
    p.kind = kind, p.steps = steps;
    return p;
}

/* Sample the mixture g (D-vectors, PER to a sample) with p and the exact predictor of p->prediction. */
static void run_mixture(const df_gmm *g, const df_schedule *s, const df_sampler_params *p, int vectors,
                        uint64_t seed, mix_stats *st) {
    const size_t dim = (size_t)g->D * PER;
    const int n = (vectors + PER - 1) / PER;
    float *x = malloc(sizeof(float) * (size_t)n * dim);
    df_gmm_denoiser dn = {g, s, dim, p->prediction};
    df_rng r;
    df_rng_init(&r, seed);
    CHECK_OK(df_sample(s, p, df_gmm_denoise, &dn, n, dim, &r, x));
    mix_stats_samples(g, n, dim, x, st);
    free(x);
}

static void check_sampler(const char *what, const df_gmm *g, const df_schedule *s, const df_sampler_params *p,
                          mix_budget b) {
    mix_stats st;
    run_mixture(g, s, p, vectors_2d(), 11, &st);
    CHECK_MIXTURE(what, g, &st, b);
}

/* The tolerances assume that assigning exact samples to their most responsible component is nearly always
 * right, and that exact samples pass the checks with no budget at all. */
TEST(sampler_mixture_statistics_on_exact_samples) {
    df_gmm g[2];
    mix_make_2d(&g[0]);
    mix_make_3d(&g[1]);
    const size_t count = test_quick() ? 20000 : 200000;
    double *v = malloc(sizeof(double) * count * 3);
    int *comp = malloc(sizeof(int) * count);
    for (int m = 0; m < 2; m++) {
        df_rng r;
        df_rng_init(&r, 31 + (uint64_t)m);
        df_gmm_sample_vectors(&g[m], &r, count, v, comp);
        size_t wrong = 0;
        for (size_t i = 0; i < count; i++) wrong += mix_assign(&g[m], v + i * g[m].D) != comp[i];
        CHECK((double)wrong / count < 2e-4, "%d-D mixture: %zu of %zu exact vectors assigned to another component",
              g[m].D, wrong, count);
        mix_stats st;
        mix_stats_vectors(&g[m], v, count, &st);
        CHECK_MIXTURE(m ? "exact samples, 3-D" : "exact samples, 2-D", &g[m], &st, ((mix_budget){0, 0, 0}));
    }
    free(v), free(comp);
    df_gmm_free(&g[0]), df_gmm_free(&g[1]);
}

/* ---- names, defaults, timesteps --------------------------------------------------------------------- */

TEST(sampler_names_and_defaults) {
    for (int k = 0; k < DF_SAMPLER_COUNT; k++) {
        df_sampler_kind back;
        CHECK_OK(df_sampler_parse(df_sampler_name((df_sampler_kind)k), &back));
        CHECK(back == (df_sampler_kind)k, "sampler %d parses back as %d", k, (int)back);
    }
    /* every alias in the table is its own sampler's, and the spellings of other tools are accepted */
    for (int k = 0; k < DF_SAMPLER_COUNT; k++) {
        const char *al = df_sampler_info_get((df_sampler_kind)k)->aliases;
        for (size_t at = 0; al[at];) {
            const size_t len = strcspn(al + at, ",");
            char one[40];
            snprintf(one, sizeof one, "%.*s", (int)len, al + at + (al[at] == ' '));
            df_sampler_kind back = DF_SAMPLER_COUNT;
            CHECK_OK(df_sampler_parse(one, &back));
            CHECK(back == (df_sampler_kind)k, "alias \"%s\" of %s parses as %d", one, df_sampler_name((df_sampler_kind)k),
                  (int)back);
            at += len + (al[at + len] == ',');
        }
    }
    static const struct {
        const char     *text;
        df_sampler_kind kind;
    } spellings[] = {{"dpm++2m", DF_SAMPLER_DPMPP_2M},   {"dpm++_2m", DF_SAMPLER_DPMPP_2M},
                     {"dpmpp_2m", DF_SAMPLER_DPMPP_2M},  {"DPM++ 2M", DF_SAMPLER_DPMPP_2M},
                     {"euler_a", DF_SAMPLER_EULER_A},    {"euler-a", DF_SAMPLER_EULER_A},
                     {"Euler a", DF_SAMPLER_EULER_A},    {"euler_ancestral", DF_SAMPLER_EULER_A},
                     {"k_euler", DF_SAMPLER_EULER},      {"EULER", DF_SAMPLER_EULER},
                     {"k_dpmpp_3m", DF_SAMPLER_DPMPP_3M}, {"DDIM", DF_SAMPLER_DDIM}};
    for (int i = 0; i < DF_COUNTOF(spellings); i++) {
        df_sampler_kind back = DF_SAMPLER_COUNT;
        CHECK(df_sampler_parse(spellings[i].text, &back) == DF_OK && back == spellings[i].kind,
              "\"%s\" parses as %d, want %s", spellings[i].text, (int)back, df_sampler_name(spellings[i].kind));
    }
    df_sampler_kind kind;
    CHECK(df_sampler_parse("dpm++", &kind) == DF_ERR_ARG, "an unknown sampler is refused");
    CHECK(strstr(df_error(), "dpm++") != NULL, "the message names it: %s", df_error());
    CHECK(df_sampler_parse("euler_b", &kind) == DF_ERR_ARG && df_sampler_parse("", &kind) == DF_ERR_ARG &&
              df_sampler_parse(NULL, &kind) == DF_ERR_ARG,
          "near misses, empty and NULL names are refused");
    static const char *const sp[] = {"leading", "linspace", "trailing"};
    for (int i = 0; i < 3; i++) {
        df_spacing back;
        CHECK_OK(df_spacing_parse(sp[i], &back));
        CHECK(back == (df_spacing)i, "spacing %s", sp[i]);
    }
    df_spacing back;
    CHECK(df_spacing_parse("uniform", &back) == DF_ERR_ARG, "an unknown spacing is refused");
    df_sampler_params p;
    df_sampler_params_default(&p);
    CHECK(p.kind == DF_SAMPLER_DDIM && p.steps == 50 && p.spacing == DF_SPACING_LEADING && p.eta == 0 &&
              p.prediction == DF_PRED_EPSILON && !p.clip_x0 && !p.dynamic_threshold && !p.clipped_eps &&
              !p.progress,
          "defaults: DDIM, 50 steps, leading, eta 0, epsilon, no clipping");
    CHECK(p.clip_range == 1 && p.dt_ratio == 0.995 && p.dt_max == 1, "diffusers' clipping defaults");
}

static void expect_timesteps(const df_schedule *s, df_sampler_kind kind, df_spacing sp, int karras, int steps,
                             const double *want, double tol) {
    df_sampler_params p = params(kind, steps);
    p.spacing = sp, p.karras_sigmas = karras;
    float t[64];
    CHECK_OK(df_sampler_timesteps(s, &p, t));
    for (int i = 0; i < steps; i++)
        if (!(fabs(t[i] - want[i]) <= tol)) {
            test_fail_at(__FILE__, __LINE__, "%s %s%s %d steps: t[%d] = %.4f, diffusers %.4f",
                         df_sampler_name(kind), sp == 0 ? "leading" : sp == 1 ? "linspace" : "trailing",
                         karras ? " karras" : "", steps, i, t[i], want[i]);
            return;
        }
}

/* Reference lists from numpy with diffusers' set_timesteps formulas (steps_offset 0). */
TEST(sampler_timesteps_match_diffusers) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    const double ddim_leading[10] = {900, 800, 700, 600, 500, 400, 300, 200, 100, 0};
    const double ddim_linspace[10] = {999, 888, 777, 666, 555, 444, 333, 222, 111, 0};
    const double trailing7[7] = {999, 856, 713, 570, 428, 285, 142};
    const double dpm_linspace[10] = {999, 899, 799, 699, 599, 500, 400, 300, 200, 100};
    const double dpm_leading[10] = {900, 810, 720, 630, 540, 450, 360, 270, 180, 90};
    const double euler_linspace[7] = {999, 832.5, 666, 499.5, 333, 166.5, 0};
    /* Karras: sigmas from sigma(999) = 157.41 to sigma(0) = 0.0100005, t by log-sigma interpolation */
    const double karras5[5] = {999, 843.3554, 592.9947, 141.8173, 0};
    expect_timesteps(&s, DF_SAMPLER_DDIM, DF_SPACING_LEADING, 0, 10, ddim_leading, 0);
    expect_timesteps(&s, DF_SAMPLER_DDPM, DF_SPACING_LEADING, 0, 10, ddim_leading, 0);
    expect_timesteps(&s, DF_SAMPLER_DDIM, DF_SPACING_LINSPACE, 0, 10, ddim_linspace, 0);
    expect_timesteps(&s, DF_SAMPLER_DDIM, DF_SPACING_TRAILING, 0, 7, trailing7, 0);
    expect_timesteps(&s, DF_SAMPLER_DPMPP_2M, DF_SPACING_LINSPACE, 0, 10, dpm_linspace, 0);
    expect_timesteps(&s, DF_SAMPLER_DPMPP_3M, DF_SPACING_LEADING, 0, 10, dpm_leading, 0);
    expect_timesteps(&s, DF_SAMPLER_DPMPP_1S, DF_SPACING_TRAILING, 0, 7, trailing7, 0);
    expect_timesteps(&s, DF_SAMPLER_EULER, DF_SPACING_LINSPACE, 0, 7, euler_linspace, 1e-4);
    expect_timesteps(&s, DF_SAMPLER_EULER_A, DF_SPACING_LINSPACE, 0, 7, euler_linspace, 1e-4);   /* as Euler */
    expect_timesteps(&s, DF_SAMPLER_HEUN, DF_SPACING_TRAILING, 0, 7, trailing7, 0);
    expect_timesteps(&s, DF_SAMPLER_EULER, DF_SPACING_LINSPACE, 1, 5, karras5, 2e-3);
    expect_timesteps(&s, DF_SAMPLER_DPMPP_2M, DF_SPACING_LINSPACE, 1, 5, karras5, 2e-3);
    /* 1000 steps visit every timestep */
    df_sampler_params p = params(DF_SAMPLER_DDPM, 1000);
    float *t = malloc(sizeof(float) * 1000);
    CHECK_OK(df_sampler_timesteps(&s, &p, t));
    int all = 1;
    for (int i = 0; i < 1000; i++) all &= t[i] == 999 - i;
    CHECK(all, "DDPM with 1000 steps visits 999..0");
    free(t);
    df_schedule_free(&s);
}

TEST(sampler_rejects_bad_parameters) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    float t[1001], x[4] = {0};
    df_sampler_params p = params(DF_SAMPLER_DDIM, 0);
    CHECK(df_sampler_timesteps(&s, &p, t) == DF_ERR_ARG, "0 steps");
    p.steps = 1001;
    CHECK(df_sampler_timesteps(&s, &p, t) == DF_ERR_ARG, "more steps than T");
    p = params(DF_SAMPLER_DPMPP_2M, 1000);   /* linspace over 1001 points repeats timesteps */
    CHECK(df_sampler_timesteps(&s, &p, t) == DF_ERR_ARG, "repeated noise levels");
    CHECK(strstr(df_error(), "repeat") != NULL, "message: %s", df_error());
    p = params(DF_SAMPLER_DDIM, 10);
    p.eta = -1;
    CHECK(df_sampler_timesteps(&s, &p, t) == DF_ERR_ARG, "negative eta");
    p = params(DF_SAMPLER_DDIM, 10);
    p.dynamic_threshold = 1, p.dt_ratio = 1.5;
    CHECK(df_sampler_timesteps(&s, &p, t) == DF_ERR_ARG, "threshold ratio above 1");
    p = params((df_sampler_kind)DF_SAMPLER_COUNT, 10);
    CHECK(df_sampler_timesteps(&s, &p, t) == DF_ERR_ARG, "unknown kind");
    df_rng r;
    df_rng_init(&r, 1);
    p = params(DF_SAMPLER_DDIM, 10);
    CHECK(df_sample(&s, &p, NULL, NULL, 1, 4, &r, x) == DF_ERR_ARG, "no denoise function");
    df_gmm g;
    mix_make_2d(&g);
    df_gmm_denoiser dn = {&g, &s, 2, DF_PRED_EPSILON};
    CHECK_OK(df_sample(&s, &p, df_gmm_denoise, &dn, 0, 2, &r, x));   /* n = 0 is fine */
    df_gmm_free(&g);
    df_schedule_free(&s);
}

/* ---- exact relations between samplers ------------------------------------------------------------------ */

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - (double)b[i]));
    return m;
}

static void sample_from(const df_schedule *s, const df_sampler_params *p, const df_gmm *g, int n, size_t dim,
                        const float *xT, uint64_t seed, float *x) {
    df_gmm_denoiser dn = {g, s, dim, p->prediction};
    df_rng r;
    df_rng_init(&r, seed);
    memcpy(x, xT, sizeof(float) * (size_t)n * dim);
    CHECK_OK(df_sample_from(s, p, df_gmm_denoise, &dn, n, dim, &r, x));
}

/* DDIM with eta 1 is DDPM's posterior step (Song et al. 2021 sec. 4.1); DDIM with eta 0, Euler in sigma
 * space and first-order DPM-Solver++ are the same update on the same noise levels (trailing spacing
 * gives all three the same integer timesteps); every prediction type gives the same samples with the
 * exact predictor. Differences are float rounding only. */
TEST(sampler_equivalent_forms) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_gmm g;
    mix_make_2d(&g);
    const int n = 20;
    const size_t dim = 2 * PER, len = (size_t)n * dim;
    float *xT = malloc(sizeof(float) * len), *a = malloc(sizeof(float) * len), *b = malloc(sizeof(float) * len);
    df_rng r;
    df_rng_init(&r, 5);
    df_rng_fill_normal(&r, xT, len);

    df_sampler_params p = params(DF_SAMPLER_DDPM, 50), q = params(DF_SAMPLER_DDIM, 50);
    q.eta = 1;
    sample_from(&s, &p, &g, n, dim, xT, 9, a);
    sample_from(&s, &q, &g, n, dim, xT, 9, b);
    double d = max_abs_diff(a, b, len);
    CHECK(d < 1e-4, "DDIM eta 1 vs DDPM fixed_small, 50 steps: max difference %.3g", d);

    const df_sampler_kind same[3] = {DF_SAMPLER_DDIM, DF_SAMPLER_EULER, DF_SAMPLER_DPMPP_1S};
    p = params(DF_SAMPLER_DDIM, 25);
    p.spacing = DF_SPACING_TRAILING;
    sample_from(&s, &p, &g, n, dim, xT, 9, a);
    for (int k = 1; k < 3; k++) {
        q = params(same[k], 25);
        q.spacing = DF_SPACING_TRAILING;
        sample_from(&s, &q, &g, n, dim, xT, 9, b);
        d = max_abs_diff(a, b, len);
        CHECK(d < 2e-4, "%s vs DDIM eta 0, trailing, 25 steps: max difference %.3g", df_sampler_name(same[k]), d);
    }

    const df_sampler_kind kinds[4] = {DF_SAMPLER_DDPM, DF_SAMPLER_DDIM, DF_SAMPLER_DPMPP_2M, DF_SAMPLER_HEUN};
    for (int k = 0; k < 4; k++) {
        p = params(kinds[k], 20);
        p.karras_sigmas = 1;
        sample_from(&s, &p, &g, n, dim, xT, 9, a);
        for (int pr = 1; pr < DF_PRED_COUNT; pr++) {
            q = p;
            q.prediction = (df_prediction)pr;
            sample_from(&s, &q, &g, n, dim, xT, 9, b);
            d = max_abs_diff(a, b, len);
            CHECK(d < 1e-3, "%s with %s vs epsilon prediction: max difference %.3g", df_sampler_name(kinds[k]),
                  df_prediction_name((df_prediction)pr), d);
        }
    }
    free(xT), free(a), free(b);
    df_gmm_free(&g);
    df_schedule_free(&s);
}

TEST(sampler_deterministic) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_gmm g;
    mix_make_2d(&g);
    const int n = 10;
    const size_t dim = 2 * PER, len = (size_t)n * dim;
    float *a = malloc(sizeof(float) * len), *b = malloc(sizeof(float) * len);
    df_gmm_denoiser dn = {&g, &s, dim, DF_PRED_EPSILON};
    for (int k = 0; k < DF_SAMPLER_COUNT; k++) {
        df_sampler_params p = params((df_sampler_kind)k, 20);
        p.eta = 0.5;
        df_rng r;
        df_rng_init(&r, 77);
        CHECK_OK(df_sample(&s, &p, df_gmm_denoise, &dn, n, dim, &r, a));
        df_rng_init(&r, 77);
        CHECK_OK(df_sample(&s, &p, df_gmm_denoise, &dn, n, dim, &r, b));
        CHECK(memcmp(a, b, sizeof(float) * len) == 0, "%s: the same seed gives the same bits", df_sampler_name(p.kind));
        df_rng_init(&r, 78);
        CHECK_OK(df_sample(&s, &p, df_gmm_denoise, &dn, n, dim, &r, b));
        CHECK(max_abs_diff(a, b, len) > 0.1, "%s: another seed gives other samples", df_sampler_name(p.kind));
    }
    free(a), free(b);
    df_gmm_free(&g);
    df_schedule_free(&s);
}

/* ---- convergence order on a Gaussian --------------------------------------------------------------------- */

/* For data N(mu, v) the probability-flow ODE is linear: in x/sqrt(abar) = x_0 + sigma eps (Karras et al.
 * 2022's form), x(sigma) - mu is proportional to sqrt(v + sigma^2). Every sampler here ends with one
 * step from its last noise level sigma_e to the clean data, which returns D(x) = E[x_0 | x]: so the exact
 * answer of a run from sigma_0 is mu + v / (v + sigma_e^2) sqrt(v + sigma_e^2) / sqrt(v + sigma_0^2) (x_0bar - mu).
 * Karras sigmas keep sigma_0 and sigma_e fixed as the steps grow, so the error measures the solver alone
 * and must fall as steps^-order. */
TEST(sampler_ode_convergence_order) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_gmm g;
    df_gmm_init(&g, 1, 1);
    const double mu = 0.2, v = 0.09;
    g.weight[0] = 1, g.mean[0] = mu, g.cov[0] = v;
    const int n = 64;
    float xT[64], x[64];
    df_rng r;
    df_rng_init(&r, 3);
    df_rng_fill_normal(&r, xT, n);
    /* order: DDIM / Euler / DPM-Solver++ 1S: 1; Heun and 2M: 2; diffusers' 3M also 2 (see sampler.c) */
    const struct {
        df_sampler_kind kind;
        double          order;
    } cases[] = {{DF_SAMPLER_DDIM, 1}, {DF_SAMPLER_EULER, 1}, {DF_SAMPLER_DPMPP_1S, 1}, {DF_SAMPLER_DPMPP_2M, 2},
                 {DF_SAMPLER_DPMPP_3M, 2}, {DF_SAMPLER_HEUN, 2}};
    float t[320];
    for (int c = 0; c < DF_COUNTOF(cases); c++) {
        double err[2];
        for (int h = 0; h < 2; h++) {
            df_sampler_params p = params(cases[c].kind, 160 << h);
            p.karras_sigmas = 1;   /* DDIM ignores it: leading spacing starts at 980 - ... and ends at t = 0 */
            CHECK_OK(df_sampler_timesteps(&s, &p, t));
            const double s0 = df_schedule_sigma(&s, t[0]), se = df_schedule_sigma(&s, t[p.steps - 1]);
            sample_from(&s, &p, &g, n, 1, xT, 1, x);
            double e = 0;
            for (int i = 0; i < n; i++) {
                const double x0bar = xT[i] * sqrt(1 + s0 * s0);
                const double xe = mu + (x0bar - mu) * sqrt(v + se * se) / sqrt(v + s0 * s0);
                e = fmax(e, fabs(x[i] - (mu + v / (v + se * se) * (xe - mu))));
            }
            err[h] = e;
        }
        const double order = log2(err[0] / err[1]);
        CHECK(fabs(order - cases[c].order) < 0.25, "%s: error %.3g at 160 steps, %.3g at 320: order %.2f, want %.0f",
              df_sampler_name(cases[c].kind), err[0], err[1], order, cases[c].order);
        if (getenv("DIFFUSE_VERBOSE"))
            printf("    %-10s error %.3g at 160 steps, %.3g at 320: order %.2f\n", df_sampler_name(cases[c].kind),
                   err[0], err[1], order);
    }
    df_gmm_free(&g);
    df_schedule_free(&s);
}

/* ---- the mixture, sampler by sampler ----------------------------------------------------------------------- */

/* Each test's budgets come from the discretisation errors measured with 10^5 vectors
 * (DIFFUSE_CALIBRATE=100000 DIFFUSE_VERBOSE=1 build/test_diffuse sampler_mixture): the largest over
 * components and coordinates of |weight error|, |mean error| and |covariance error| / sqrt(S_dd S_ee),
 * each times 1.5. At 10^5 vectors one standard error is 0.0016 on a weight, about 0.001 on a mean and
 * 1-2 % on a covariance, so the small measured values are partly noise.
 *
 * DDPM 1000 steps: fixed_small 0.004 0.002 0.084 (beta~ leaves out Var[x_0 | x_t] at every step, which adds
 * up to variances about 5e-4 low); fixed_large 0.004 0.001 0.024. */
TEST(sampler_mixture_ddpm) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_gmm g;
    mix_make_2d(&g);
    df_sampler_params p = params(DF_SAMPLER_DDPM, 1000);
    check_sampler("DDPM 1000 steps, fixed_small", &g, &s, &p, (mix_budget){0.006, 0.003, 0.12});
    p.variance_large = 1;
    check_sampler("DDPM 1000 steps, fixed_large", &g, &s, &p, (mix_budget){0.006, 0.002, 0.04});
    df_gmm_free(&g);
    df_schedule_free(&s);
}

/* Measured: eta 0, 50 steps 0.009 0.017 0.21; 100 steps 0.005 0.009 0.13; eta 1 (ancestral), 50 steps
 * 0.015 0.023 0.39; 100 steps 0.007 0.011 0.34 (variances low: each step leaves out Var[x_0 | x_t]). */
TEST(sampler_mixture_ddim) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_gmm g;
    mix_make_2d(&g);
    const mix_budget budget[2][2] = {{{0.013, 0.025, 0.32}, {0.008, 0.014, 0.20}},    /* eta 0: 50, 100 steps */
                                     {{0.022, 0.034, 0.58}, {0.011, 0.017, 0.51}}};   /* eta 1 */
    for (int e = 0; e < 2; e++)
        for (int k = 0; k < 2; k++) {
            df_sampler_params p = params(DF_SAMPLER_DDIM, k ? 100 : 50);
            p.eta = e;
            char what[64];
            snprintf(what, sizeof what, "DDIM %d steps, eta %d", p.steps, e);
            check_sampler(what, &g, &s, &p, budget[e][k]);
        }
    df_gmm_free(&g);
    df_schedule_free(&s);
}

/* Measured at 100 steps, eta 0: leading 0.005 0.009 0.13; linspace 0.005 0.009 0.13; trailing 0.005 0.009
 * 0.20 (trailing ends at t = 9 and jumps to x_0 from there, which narrows the components). */
TEST(sampler_mixture_ddim_spacings) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_gmm g;
    mix_make_2d(&g);
    static const char *const names[3] = {"leading", "linspace", "trailing"};
    for (int sp = 0; sp < DF_SPACING_COUNT; sp++) {
        df_sampler_params p = params(DF_SAMPLER_DDIM, 100);
        p.spacing = (df_spacing)sp;
        char what[64];
        snprintf(what, sizeof what, "DDIM 100 steps, %s", names[sp]);
        check_sampler(what, &g, &s, &p, (mix_budget){0.008, 0.014, sp == 2 ? 0.30 : 0.20});
    }
    df_gmm_free(&g);
    df_schedule_free(&s);
}

/* Measured at 20 steps (Karras sigmas unless said): 2M 0.008 0.028 0.17; 2M linspace 0.009 0.017 0.39;
 * 3M 0.003 0.031 0.19; 1S (first order) 0.029 0.055 0.27. */
TEST(sampler_mixture_dpmpp) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_gmm g;
    mix_make_2d(&g);
    df_sampler_params p = params(DF_SAMPLER_DPMPP_2M, 20);
    p.spacing = DF_SPACING_LINSPACE;
    check_sampler("DPM-Solver++ 2M, 20 steps, linspace", &g, &s, &p, (mix_budget){0.013, 0.025, 0.58});
    p.karras_sigmas = 1;
    check_sampler("DPM-Solver++ 2M, 20 steps, Karras", &g, &s, &p, (mix_budget){0.012, 0.042, 0.25});
    p.kind = DF_SAMPLER_DPMPP_3M;
    check_sampler("DPM-Solver++ 3M, 20 steps, Karras", &g, &s, &p, (mix_budget){0.005, 0.046, 0.28});
    p.kind = DF_SAMPLER_DPMPP_1S;
    check_sampler("DPM-Solver++ 1S, 20 steps, Karras", &g, &s, &p, (mix_budget){0.043, 0.082, 0.40});
    df_gmm_free(&g);
    df_schedule_free(&s);
}

/* Measured with Karras sigmas: Euler 50 steps 0.011 0.021 0.083; Heun 30 steps (59 evaluations) 0.002 0.006
 * 0.048; Heun 20 steps 0.002 0.016 0.11. */
TEST(sampler_mixture_euler_heun) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_gmm g;
    mix_make_2d(&g);
    df_sampler_params p = params(DF_SAMPLER_EULER, 50);
    p.spacing = DF_SPACING_LINSPACE, p.karras_sigmas = 1;
    check_sampler("Euler 50 steps, Karras", &g, &s, &p, (mix_budget){0.016, 0.032, 0.13});
    p.kind = DF_SAMPLER_HEUN, p.steps = 30;
    check_sampler("Heun 30 steps, Karras", &g, &s, &p, (mix_budget){0.004, 0.009, 0.08});
    p.steps = 20;
    check_sampler("Heun 20 steps, Karras", &g, &s, &p, (mix_budget){0.004, 0.024, 0.16});
    df_gmm_free(&g);
    df_schedule_free(&s);
}

/* Euler ancestral holds the stochastic samplers' budgets (DDIM eta 1's, whose steps are ancestral too).
 * Measured: 50 steps Karras 0.018 0.025 0.20; 100 steps linspace 0.007 0.011 0.34. */
TEST(sampler_mixture_euler_ancestral) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_gmm g;
    mix_make_2d(&g);
    df_sampler_params p = params(DF_SAMPLER_EULER_A, 50);
    p.spacing = DF_SPACING_LINSPACE, p.karras_sigmas = 1;
    check_sampler("Euler ancestral 50 steps, Karras", &g, &s, &p, (mix_budget){0.022, 0.034, 0.58});
    p.steps = 100, p.karras_sigmas = 0;
    check_sampler("Euler ancestral 100 steps, linspace", &g, &s, &p, (mix_budget){0.011, 0.017, 0.51});
    df_gmm_free(&g);
    df_schedule_free(&s);
}

/* Each prediction type through a stochastic, a deterministic first-order and a multistep sampler (the
 * predictor returns the exact eps, x_0 or v; the budgets are those of the epsilon runs). */
TEST(sampler_mixture_predictions) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_gmm g;
    mix_make_2d(&g);
    for (int pr = 1; pr < DF_PRED_COUNT; pr++) {
        char what[80];
        df_sampler_params p = params(DF_SAMPLER_DDPM, 1000);
        p.prediction = (df_prediction)pr;
        snprintf(what, sizeof what, "DDPM 1000 steps, %s", df_prediction_name(p.prediction));
        check_sampler(what, &g, &s, &p, (mix_budget){0.006, 0.003, 0.12});
        p.kind = DF_SAMPLER_DDIM, p.steps = 100;
        snprintf(what, sizeof what, "DDIM 100 steps, %s", df_prediction_name(p.prediction));
        check_sampler(what, &g, &s, &p, (mix_budget){0.008, 0.014, 0.20});
        p.kind = DF_SAMPLER_DPMPP_2M, p.steps = 20, p.karras_sigmas = 1;
        snprintf(what, sizeof what, "DPM-Solver++ 2M Karras 20, %s", df_prediction_name(p.prediction));
        check_sampler(what, &g, &s, &p, (mix_budget){0.012, 0.042, 0.25});
    }
    df_gmm_free(&g);
    df_schedule_free(&s);
}

/* Zero terminal SNR (Lin et al. 2024): abar[T-1] = 0, so x_T carries no signal and eps prediction cannot
 * give x_0 there; v prediction is the natural pairing. Nothing may turn into NaN or inf, and the samples
 * must still be the mixture. Measured (v prediction): DDIM 50 trailing 0.010 0.017 0.29; DDPM 250 trailing
 * 0.001 0.004 0.20; Euler Karras 50 0.020 0.038 0.18; 2M 20 linspace 0.007 0.018 0.39; Heun Karras 30 0.003
 * 0.025 0.16. */
TEST(sampler_zero_terminal_snr) {
    df_schedule s;
    CHECK_OK(df_schedule_init(&s, DF_BETA_LINEAR, 1000, 1e-4, 0.02, 1));
    CHECK(s.alphas_cumprod[999] == 0, "the schedule has zero terminal SNR");
    df_gmm g;
    mix_make_2d(&g);
    const struct {
        df_sampler_kind kind;
        int             steps, karras;
        mix_budget      b;
    } cases[] = {{DF_SAMPLER_DDIM, 50, 0, {0.015, 0.025, 0.44}},  {DF_SAMPLER_DDPM, 250, 0, {0.003, 0.006, 0.30}},
                 {DF_SAMPLER_EULER, 50, 1, {0.030, 0.057, 0.27}}, {DF_SAMPLER_DPMPP_2M, 20, 0, {0.011, 0.027, 0.58}},
                 {DF_SAMPLER_HEUN, 30, 1, {0.005, 0.038, 0.23}}};
    for (int c = 0; c < DF_COUNTOF(cases); c++) {
        df_sampler_params p = params(cases[c].kind, cases[c].steps);
        /* DDPM and DDIM need trailing spacing to start at T - 1; DPM-Solver++'s linspace starts there too.
         * Karras sigmas start at sigma = 4096 (abar 2^-24) and need linspace to end at sigma(0) (trailing
         * would end at t = T / steps - 1 and jump to x_0 from there). */
        p.spacing = cases[c].karras || is_dpm(cases[c].kind) ? DF_SPACING_LINSPACE : DF_SPACING_TRAILING;
        p.karras_sigmas = cases[c].karras, p.prediction = DF_PRED_V;
        char what[80];
        snprintf(what, sizeof what, "zero SNR, v, %s %d%s", df_sampler_name(p.kind), p.steps,
                 p.karras_sigmas ? " Karras" : "");
        float t[1000];
        CHECK_OK(df_sampler_timesteps(&s, &p, t));
        CHECK(df_schedule_sigma(&s, t[0]) > 4095, "%s starts at sigma %g (t = %g), at least diffusers' 4096", what,
              df_schedule_sigma(&s, t[0]), t[0]);
        check_sampler(what, &g, &s, &p, cases[c].b);
    }
    /* epsilon prediction: x_0 is undetermined at t = T - 1, but the run must stay finite */
    const int n = 4;
    const size_t dim = 2 * PER;
    float x[4 * 2 * PER];
    df_gmm_denoiser dn = {&g, &s, dim, DF_PRED_EPSILON};
    for (int k = 0; k < DF_SAMPLER_COUNT; k++) {
        df_sampler_params p = params((df_sampler_kind)k, 10);
        p.spacing = DF_SPACING_TRAILING;
        df_rng r;
        df_rng_init(&r, 2);
        CHECK_OK(df_sample(&s, &p, df_gmm_denoise, &dn, n, dim, &r, x));
        int finite = 1;
        for (size_t j = 0; j < n * dim; j++) finite &= isfinite(x[j]);
        CHECK(finite, "zero SNR, epsilon prediction, %s: all values finite", df_sampler_name(p.kind));
    }
    df_gmm_free(&g);
    df_schedule_free(&s);
}

/* The "small image": 3 channels x 4 x 4 pixels, each pixel's colour a draw of a 3-D mixture. Measured
 * with 10^5 pixels: DDIM 100 0.000 0.008 0.21; 2M Karras 20 0.003 0.026 0.16; Heun Karras 30 0.002 0.005
 * 0.053. */
TEST(sampler_mixture_image) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_gmm g;
    mix_make_3d(&g);
    const int c = 3, h = 4, w = 4, n = calibrate() > 0 ? calibrate() / 16 : test_quick() ? 100 : 500;
    const size_t dim = (size_t)c * h * w;
    float *x = malloc(sizeof(float) * n * dim);
    df_gmm_denoiser dn = {&g, &s, dim, DF_PRED_EPSILON};
    const struct {
        const char     *what;
        df_sampler_kind kind;
        int             steps, karras;
        mix_budget      b;
    } cases[] = {{"image: DDIM 100", DF_SAMPLER_DDIM, 100, 0, {0.003, 0.012, 0.31}},
                 {"image: DPM-Solver++ 2M Karras 20", DF_SAMPLER_DPMPP_2M, 20, 1, {0.005, 0.039, 0.24}},
                 {"image: Heun Karras 30", DF_SAMPLER_HEUN, 30, 1, {0.003, 0.008, 0.08}}};
    for (int k = 0; k < DF_COUNTOF(cases); k++) {
        df_sampler_params p = params(cases[k].kind, cases[k].steps);
        p.karras_sigmas = cases[k].karras;
        df_rng r;
        df_rng_init(&r, 21);
        CHECK_OK(df_sample(&s, &p, df_gmm_denoise, &dn, n, dim, &r, x));
        mix_stats st;
        mix_stats_samples(&g, n, dim, x, &st);
        CHECK_MIXTURE(cases[k].what, &g, &st, cases[k].b);
    }
    free(x);
    df_gmm_free(&g);
    df_schedule_free(&s);
}

/* ---- options: clipping, thresholding, progress ------------------------------------------------------------- */

/* A predictor that returns a fixed x_0 whatever it is asked. */
static df_status fixed_x0(void *ctx, int n, const float *x, const float *t, float *out) {
    const float *x0 = ctx;
    memcpy(out, x0, sizeof(float) * (size_t)n * 64);
    return DF_OK;
}

/* One DDIM step from any level to the clean end returns the processed x_0 exactly (sqrt(abar') = 1 and
 * the eps term vanishes), so the options can be checked against a direct computation. */
TEST(sampler_clipping_and_thresholding) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    const int n = 2;
    const size_t dim = 64;
    float x0[128], x[128];
    df_rng r;
    df_rng_init(&r, 8);
    for (size_t j = 0; j < 128; j++) x0[j] = (float)(1.2 * df_rng_normal(&r));
    df_sampler_params p = params(DF_SAMPLER_DDIM, 1);
    p.spacing = DF_SPACING_TRAILING, p.prediction = DF_PRED_SAMPLE;
    CHECK_OK(df_sample(&s, &p, fixed_x0, x0, n, dim, &r, x));
    CHECK(max_abs_diff(x, x0, 128) < 1e-5, "no option: x_0 unchanged");
    p.clip_x0 = 1, p.clip_range = 1.5;
    CHECK_OK(df_sample(&s, &p, fixed_x0, x0, n, dim, &r, x));
    double d = 0;
    for (size_t j = 0; j < 128; j++) d = fmax(d, fabs(x[j] - fmin(fmax(x0[j], -1.5), 1.5)));
    CHECK(d < 1e-6, "clip to [-1.5, 1.5]: max difference %.3g", d);
    /* dynamic thresholding, ratio 0.9 and max 2.5: s = the 0.9 quantile of |x_0| per sample (linear
     * interpolation between order statistics, as torch.quantile), clamped to [1, 2.5] */
    p.clip_x0 = 0, p.dynamic_threshold = 1, p.dt_ratio = 0.9, p.dt_max = 2.5;
    CHECK_OK(df_sample(&s, &p, fixed_x0, x0, n, dim, &r, x));
    d = 0;
    for (int i = 0; i < n; i++) {
        double a[64];
        for (int j = 0; j < 64; j++) a[j] = fabs(x0[i * 64 + j]);
        for (int j = 1; j < 64; j++)   /* insertion sort */
            for (int k = j; k > 0 && a[k] < a[k - 1]; k--) {
                double tmp = a[k];
                a[k] = a[k - 1], a[k - 1] = tmp;
            }
        double pos = 0.9 * 63, q = a[(int)pos] + (pos - (int)pos) * (a[(int)pos + 1] - a[(int)pos]);
        double sc = fmin(fmax(q, 1), 2.5);
        CHECK(sc > 1 && sc < 2.5, "the test's threshold %g falls strictly inside [1, 2.5]", sc);
        for (int j = 0; j < 64; j++) d = fmax(d, fabs(x[i * 64 + j] - fmin(fmax(x0[i * 64 + j], -sc), sc) / sc));
    }
    CHECK(d < 1e-6, "dynamic thresholding: max difference %.3g", d);
    df_schedule_free(&s);
}

/* The exact mixture predictor with its noise amplified by `gain`, as strong guidance amplifies it; with
 * `as_x0` it returns the clipped x_0 that noise implies instead (a sample-prediction model). */
typedef struct {
    df_gmm_denoiser dn;
    double          gain;
    int             as_x0;
} amplified;

static df_status amplified_denoise(void *ctx, int n, const float *x, const float *t, float *out) {
    const amplified *a = ctx;
    df_status st = df_gmm_denoise((void *)&a->dn, n, x, t, out);
    for (int i = 0; i < n; i++) {
        const double ab = a->dn.schedule->alphas_cumprod[(int)t[i]];
        for (size_t j = 0; j < a->dn.dim; j++) {
            const size_t k = (size_t)i * a->dn.dim + j;
            out[k] = (float)(a->gain * out[k]);
            if (a->as_x0) out[k] = (float)fmin(fmax((x[k] - sqrt(1 - ab) * out[k]) / sqrt(ab), -1), 1);
        }
    }
    return st;
}

/* clipped_eps: DDIM then steps with the noise implied by the clipped x_0, which is what DDIM does with a
 * model that predicts that clipped x_0 directly (no clipping asked); without clipped_eps the paths differ. */
TEST(sampler_ddim_clipped_eps) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_gmm g;
    mix_make_2d(&g);
    const int n = 8;
    const size_t dim = 2 * PER, len = (size_t)n * dim;
    float *xT = malloc(sizeof(float) * len), *a = malloc(sizeof(float) * len), *b = malloc(sizeof(float) * len);
    df_rng r;
    df_rng_init(&r, 6);
    df_rng_fill_normal(&r, xT, len);
    amplified eps_model = {{&g, &s, dim, DF_PRED_EPSILON}, 3, 0}, x0_model = eps_model;
    x0_model.as_x0 = 1;
    for (int eta = 0; eta <= 1; eta++) {
        df_sampler_params p = params(DF_SAMPLER_DDIM, 20), q = p;
        p.eta = q.eta = eta;
        p.clip_x0 = 1, p.clipped_eps = 1;
        q.prediction = DF_PRED_SAMPLE;
        memcpy(a, xT, sizeof(float) * len), memcpy(b, xT, sizeof(float) * len);
        df_rng_init(&r, 11);
        CHECK_OK(df_sample_from(&s, &p, amplified_denoise, &eps_model, n, dim, &r, a));
        df_rng_init(&r, 11);
        CHECK_OK(df_sample_from(&s, &q, amplified_denoise, &x0_model, n, dim, &r, b));
        double d = max_abs_diff(a, b, len);
        CHECK(d < 1e-4, "eta %d: clipped_eps vs a model predicting the clipped x_0: max difference %.3g", eta, d);
        p.clipped_eps = 0;
        memcpy(a, xT, sizeof(float) * len);
        df_rng_init(&r, 11);
        CHECK_OK(df_sample_from(&s, &p, amplified_denoise, &eps_model, n, dim, &r, a));
        d = max_abs_diff(a, b, len);
        CHECK(d > 0.05, "eta %d: the model's own noise gives other samples (max difference %.3g)", eta, d);
    }
    free(xT), free(a), free(b);
    df_gmm_free(&g);
    df_schedule_free(&s);
}

typedef struct {
    int   calls, last_step, bad, total;
    float last_x[4 * 2 * PER];
    int   had_x0;
} progress_log;

static void on_progress(void *ctx, int step, int total, const float *x, const float *x0) {
    progress_log *l = ctx;
    l->calls++;
    if (step != l->last_step + 1 || total != l->total) l->bad++;
    l->last_step = step;
    l->had_x0 += x0 != NULL;
    memcpy(l->last_x, x, sizeof l->last_x);
}

TEST(sampler_progress_and_model_calls) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_gmm g;
    mix_make_2d(&g);
    const int n = 4, steps = 12;
    const size_t dim = 2 * PER;
    float x[4 * 2 * PER];
    for (int k = 0; k < DF_SAMPLER_COUNT; k++) {
        mix_counter mc = {{&g, &s, dim, DF_PRED_EPSILON}, 0};
        progress_log log = {0};
        log.total = steps;
        df_sampler_params p = params((df_sampler_kind)k, steps);
        p.progress = on_progress, p.progress_ctx = &log;
        df_rng r;
        df_rng_init(&r, 4);
        CHECK_OK(df_sample(&s, &p, mix_counting_denoise, &mc, n, dim, &r, x));
        const char *name = df_sampler_name(p.kind);
        CHECK(log.calls == steps && log.bad == 0 && log.had_x0 == steps, "%s: %d progress calls (bad %d), want %d",
              name, log.calls, log.bad, steps);
        CHECK(memcmp(log.last_x, x, sizeof x) == 0, "%s: the last progress x is the result", name);
        long want = k == DF_SAMPLER_HEUN ? 2 * steps - 1 : steps;
        CHECK(mc.calls == want, "%s: %ld model calls, want %ld", name, mc.calls, want);
    }
    df_gmm_free(&g);
    df_schedule_free(&s);
}
