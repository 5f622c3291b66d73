/* Editing on closed forms: image-to-image at strength 0 and 1 and in between, inpainting against the exact
 * conditional of a Gaussian mixture (with and without RePaint's jumps), DDIM inversion round trips. */
#include "mixture.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#define PER 50   /* 2-D vectors per sample (see tests/test_sampler.c) */

static int calibrate(void) {
    const char *c = getenv("DIFFUSE_CALIBRATE");
    return c ? atoi(c) : 0;
}
static int vectors(void) { return calibrate() > 0 ? calibrate() : test_quick() ? 1000 : 4000; }

static df_sampler_params params(df_sampler_kind kind, int steps) {
    df_sampler_params p;
    df_sampler_params_default(&p);
    p.kind = kind, p.steps = steps;
    return p;
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - (double)b[i]));
    return m;
}

/* ---- image-to-image ------------------------------------------------------------------------------------ */

typedef struct {
    int first, calls, total;
} step_log;

static void log_step(void *ctx, int step, int total, const float *x, const float *x0) {
    step_log *l = ctx;
    if (!l->calls) l->first = step;
    l->calls++, l->total = total;
}

TEST(edit_img2img_strength_zero_and_start) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_gmm g;
    mix_make_2d(&g);
    const int n = 4;
    const size_t dim = 2 * PER, len = (size_t)n * dim;
    float in[4 * 2 * PER], out[4 * 2 * PER];
    df_rng r;
    df_rng_init(&r, 1);
    df_gmm_sample(&g, &r, n, dim, in);
    df_gmm_denoiser dn = {&g, &s, dim, DF_PRED_EPSILON};
    for (int k = 0; k < DF_SAMPLER_COUNT; k++) {
        df_sampler_params p = params((df_sampler_kind)k, 20);
        /* strength 0 (and anything below 1 / steps): int(steps * strength) = 0 steps, the input comes back */
        CHECK_OK(df_img2img(&s, &p, df_gmm_denoise, &dn, n, dim, in, 0.0, &r, out));
        CHECK(memcmp(in, out, sizeof(float) * len) == 0, "%s: strength 0 returns the input", df_sampler_name(p.kind));
        CHECK_OK(df_img2img(&s, &p, df_gmm_denoise, &dn, n, dim, in, 0.049, &r, out));
        CHECK(memcmp(in, out, sizeof(float) * len) == 0, "%s: strength 0.049 of 20 steps returns the input",
              df_sampler_name(p.kind));
        /* diffusers' get_timesteps: strength 0.55 of 20 steps runs int(11) = 11 steps, from timesteps[9] */
        step_log log = {0};
        p.progress = log_step, p.progress_ctx = &log;
        CHECK_OK(df_img2img(&s, &p, df_gmm_denoise, &dn, n, dim, in, 0.55, &r, out));
        CHECK(log.calls == 11 && log.first == 10 && log.total == 20, "%s: strength 0.55 ran %d steps from %d of %d",
              df_sampler_name(p.kind), log.calls, log.first, log.total);
    }
    CHECK(df_img2img(&s, &(df_sampler_params){0}, df_gmm_denoise, &dn, n, dim, in, 0.5, &r, out) == DF_ERR_ARG,
          "zeroed parameters (0 steps) are refused");
    df_sampler_params p = params(DF_SAMPLER_DDIM, 20);
    CHECK(df_img2img(&s, &p, df_gmm_denoise, &dn, n, dim, in, 1.5, &r, out) == DF_ERR_ARG, "strength above 1");
    df_gmm_free(&g);
    df_schedule_free(&s);
}

/* Strength 1 starts from the noisiest level with the input weighted by sqrt(abar) (0.0066 at t = 980): it is
 * sampling. The input here is a point far from the data, (0.9, 0.9). Measured with 10^5 vectors (weight,
 * mean, covariance errors as in tests/test_sampler.c): DDIM 50 0.005 0.018 0.22, Heun Karras 30 0.004
 * 0.006 0.044, the samplers' own errors. */
TEST(edit_img2img_strength_one_samples) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_gmm g;
    mix_make_2d(&g);
    const int n = (vectors() + PER - 1) / PER;
    const size_t dim = 2 * PER, len = (size_t)n * dim;
    float *in = malloc(sizeof(float) * len), *out = malloc(sizeof(float) * len);
    for (size_t j = 0; j < len; j++) in[j] = 0.9f;
    df_gmm_denoiser dn = {&g, &s, dim, DF_PRED_EPSILON};
    const struct {
        const char     *what;
        df_sampler_kind kind;
        int             steps, karras;
        mix_budget      b;
    } cases[] = {{"img2img strength 1: DDIM 50", DF_SAMPLER_DDIM, 50, 0, {0.013, 0.027, 0.33}},
                 {"img2img strength 1: Heun Karras 30", DF_SAMPLER_HEUN, 30, 1, {0.006, 0.01, 0.07}}};
    for (int c = 0; c < DF_COUNTOF(cases); c++) {
        df_sampler_params p = params(cases[c].kind, cases[c].steps);
        p.karras_sigmas = cases[c].karras;
        if (cases[c].karras) p.spacing = DF_SPACING_LINSPACE;
        df_rng r;
        df_rng_init(&r, 3);
        CHECK_OK(df_img2img(&s, &p, df_gmm_denoise, &dn, n, dim, in, 1.0, &r, out));
        mix_stats st;
        mix_stats_samples(&g, n, dim, out, &st);
        CHECK_MIXTURE(cases[c].what, &g, &st, cases[c].b);
    }
    free(in), free(out);
    df_gmm_free(&g);
    df_schedule_free(&s);
}

/* With the exact predictor, noising data to any level and denoising it returns the data distribution;
 * at low strength (0.15 of 20 Karras steps starts at sigma 0.07) vectors stay in their component, and the
 * change grows with the strength. Measured with 10^5 vectors: at most 0.007 0.028 0.19 over the three
 * strengths. */
TEST(edit_img2img_keeps_the_distribution) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_gmm g;
    mix_make_2d(&g);
    const int n = (vectors() + PER - 1) / PER;
    const size_t dim = 2 * PER, len = (size_t)n * dim;
    float *in = malloc(sizeof(float) * len), *out = malloc(sizeof(float) * len);
    df_rng r;
    df_rng_init(&r, 4);
    df_gmm_sample(&g, &r, n, dim, in);
    df_gmm_denoiser dn = {&g, &s, dim, DF_PRED_EPSILON};
    df_sampler_params p = params(DF_SAMPLER_DPMPP_2M, 20);
    p.karras_sigmas = 1;
    double prev_change = 0;
    const double strengths[3] = {0.15, 0.5, 0.9};
    for (int i = 0; i < 3; i++) {
        CHECK_OK(df_img2img(&s, &p, df_gmm_denoise, &dn, n, dim, in, strengths[i], &r, out));
        mix_stats st;
        mix_stats_samples(&g, n, dim, out, &st);
        char what[64];
        snprintf(what, sizeof what, "img2img strength %.2f: 2M Karras 20", strengths[i]);
        CHECK_MIXTURE(what, &g, &st, ((mix_budget){0.012, 0.042, 0.28}));
        double change = 0;
        int same = 0;
        for (int k = 0; k < n; k++)
            for (int j = 0; j < PER; j++) {
                const size_t o = (size_t)k * dim + j;
                double a[2] = {in[o], in[o + PER]}, b[2] = {out[o], out[o + PER]};
                same += mix_assign(&g, a) == mix_assign(&g, b);
                change += hypot(a[0] - b[0], a[1] - b[1]);
            }
        change /= (double)n * PER;
        CHECK(change > prev_change, "strength %.1f changes the input more (%.3f) than a lower one (%.3f)", strengths[i],
              change, prev_change);
        if (i == 0)
            CHECK(same > 0.97 * n * PER, "strength 0.15 keeps %.1f%% of vectors in their component",
                  100.0 * same / (n * PER));
        prev_change = change;
    }
    free(in), free(out);
    df_gmm_free(&g);
    df_schedule_free(&s);
}

/* ---- inpainting ------------------------------------------------------------------------------------------ */

/* A mixture whose coordinates depend on each other: knowing x1 = -0.35 rules out component 2 and leaves
 * components 0 and 1, which differ in x2 (means about -0.48 and +0.52). */
static void inpaint_mixture(df_gmm *g) {
    static const double w[3] = {0.45, 0.35, 0.2};
    static const double mu[3][2] = {{-0.4, -0.5}, {-0.3, 0.5}, {0.6, 0.0}};
    static const double sd[3][2] = {{0.2, 0.12}, {0.2, 0.12}, {0.12, 0.2}}, rho[3] = {0.6, -0.5, 0.0};
    df_gmm_init(g, 3, 2);
    for (int k = 0; k < 3; k++) {
        double *S = g->cov + 4 * k;
        g->weight[k] = w[k];
        g->mean[2 * k] = mu[k][0], g->mean[2 * k + 1] = mu[k][1];
        S[0] = sd[k][0] * sd[k][0], S[3] = sd[k][1] * sd[k][1], S[1] = S[2] = rho[k] * sd[k][0] * sd[k][1];
    }
}

/* p(x2 | x1 = c) = sum_k pi_k N(m_k, v_k): pi_k ~ w_k N(c; mu_k1, S_k11), m_k = mu_k2 + S_k12 / S_k11 (c - mu_k1),
 * v_k = S_k22 - S_k12^2 / S_k11 (Gaussian conditioning per component). Components with pi_k < 1e-9 are
 * dropped. */
static void conditional(const df_gmm *g, double c, df_gmm *cond) {
    double pi[8], z = 0;
    int K = 0;
    for (int k = 0; k < g->K; k++) {
        const double *S = g->cov + 4 * k, d = c - g->mean[2 * k];
        z += pi[k] = g->weight[k] * exp(-0.5 * d * d / S[0]) / sqrt(S[0]);
    }
    for (int k = 0; k < g->K; k++) K += pi[k] / z >= 1e-9;
    df_gmm_init(cond, K, 1);
    double kept = 0;
    for (int k = 0, j = 0; k < g->K; k++) {
        if (pi[k] / z < 1e-9) continue;
        const double *S = g->cov + 4 * k;
        cond->weight[j] = pi[k] / z, kept += pi[k] / z;
        cond->mean[j] = g->mean[2 * k + 1] + S[1] / S[0] * (c - g->mean[2 * k]);
        cond->cov[j] = S[3] - S[1] * S[1] / S[0];
        j++;
    }
    for (int j = 0; j < K; j++) cond->weight[j] /= kept;
}

static int inpaint_vectors(void) { return (vectors() + PER - 1) / PER * PER; }

/* Inpaint x2 given x1 = c for inpaint_vectors() vectors: the generated x2 values go to x2; returns whether
 * every known value came back exactly. */
static int run_inpaint(const df_gmm *g, const df_schedule *s, const df_sampler_params *p, double c, int jump_length,
                       int jump_n, double *x2) {
    const int n = inpaint_vectors() / PER;
    const size_t dim = 2 * PER, len = (size_t)n * dim;
    float *known = malloc(sizeof(float) * len), *out = malloc(sizeof(float) * len), mask[2 * PER];
    for (int j = 0; j < PER; j++) mask[j] = 1, mask[PER + j] = 0;   /* coordinate 1 known, 2 generated */
    df_rng r;
    df_rng_init(&r, 6);
    for (size_t j = 0; j < len; j++) known[j] = (j % dim) < PER ? (float)c : 0.7f;   /* x2's value is ignored */
    df_gmm_denoiser dn = {g, s, dim, p->prediction};
    CHECK_OK(df_inpaint(s, p, df_gmm_denoise, &dn, n, dim, known, mask, jump_length, jump_n, &r, out));
    int exact = 1;
    for (int k = 0; k < n; k++)
        for (int j = 0; j < PER; j++) {
            exact &= out[(size_t)k * dim + j] == known[(size_t)k * dim + j];
            x2[(size_t)k * PER + j] = out[(size_t)k * dim + PER + j];
        }
    free(known), free(out);
    return exact;
}

/* RePaint with the exact predictor against the exact conditional p(x2 | x1 = -0.35), a two-component
 * mixture. Here x1 hardly tells components 0 and 1 apart, so even without jumps the weights come out
 * right; the variances carry DDPM's own error at 100 steps (about -25 % with fixed_small, +45 % with
 * fixed_large: see tests/test_sampler.c). Measured with 10^5 vectors (weight, mean, variance errors):
 * no jumps 0.003 0.014 0.23; jumps 10 x 5 0.001 0.009 0.23; fixed_large 0.005 0.008 0.47; zero SNR with
 * v prediction 0.004 0.011 0.24. */
TEST(edit_inpaint_matches_the_conditional) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_gmm g, cond;
    inpaint_mixture(&g);
    const double c = -0.35;
    conditional(&g, c, &cond);
    CHECK(cond.K == 2 && fabs(cond.weight[0] - 0.5625) < 1e-3, "the conditional keeps components 0 and 1 (%d, %.4f)",
          cond.K, cond.weight[0]);
    double *x2 = malloc(sizeof(double) * (size_t)inpaint_vectors());
    const struct {
        const char *what;
        int         steps, jump_length, jump_n, large;
        mix_budget  b;
    } cases[] = {{"inpaint, DDPM 100, no jumps", 100, 1, 1, 0, {0.005, 0.021, 0.35}},
                 {"inpaint, DDPM 100, jumps 10 x 5", 100, 10, 5, 0, {0.003, 0.014, 0.35}},
                 {"inpaint, DDPM 100 fixed_large, jumps 10 x 5", 100, 10, 5, 1, {0.008, 0.012, 0.70}}};
    for (int k = 0; k < DF_COUNTOF(cases); k++) {
        df_sampler_params p = params(DF_SAMPLER_DDIM, cases[k].steps);   /* the kind is ignored: DDPM steps */
        p.variance_large = cases[k].large;
        mix_stats st;
        int exact = run_inpaint(&g, &s, &p, c, cases[k].jump_length, cases[k].jump_n, x2);
        CHECK(exact, "%s: the known values come back exactly", cases[k].what);
        mix_stats_vectors(&cond, x2, (size_t)inpaint_vectors(), &st);
        CHECK_MIXTURE(cases[k].what, &cond, &st, cases[k].b);
    }
    /* v prediction, trailing spacing, on a zero-terminal-SNR schedule */
    df_schedule z;
    CHECK_OK(df_schedule_init(&z, DF_BETA_LINEAR, 1000, 1e-4, 0.02, 1));
    df_sampler_params p = params(DF_SAMPLER_DDPM, 100);
    p.prediction = DF_PRED_V, p.spacing = DF_SPACING_TRAILING;
    mix_stats st;
    CHECK(run_inpaint(&g, &z, &p, c, 10, 3, x2), "zero SNR: the known values come back exactly");
    mix_stats_vectors(&cond, x2, (size_t)inpaint_vectors(), &st);
    CHECK_MIXTURE("inpaint, zero SNR, v, trailing, jumps 10 x 3", &cond, &st, ((mix_budget){0.006, 0.017, 0.35}));
    df_schedule_free(&z);
    free(x2);
    df_gmm_free(&cond);
    df_gmm_free(&g);
    df_schedule_free(&s);
}

/* Where the known half decides the unknown one: two components, (-0.5, -0.5) and (0.5, 0.5), sd 0.15. Given
 * x1 = -0.5, x2 ~ N(-0.5, 0.15^2) and P(x2 > 0) = 4.3e-4 (the other component has posterior weight
 * e^-22). Replacing the known half at every step conditions the unknown half only once the noise no
 * longer hides x1: without resampling some samples settle in the wrong component; RePaint's jumps
 * repair that (Lugmayr et al. 2022 sec. 4.2, fig. 3). */
TEST(edit_inpaint_jumps_fix_the_wrong_mode) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_gmm g;
    df_gmm_init(&g, 2, 2);
    for (int k = 0; k < 2; k++) {
        g.weight[k] = 0.5;
        g.mean[2 * k] = g.mean[2 * k + 1] = k ? 0.5 : -0.5;
        g.cov[4 * k] = g.cov[4 * k + 3] = 0.0225;
    }
    const int count = inpaint_vectors();
    double *x2 = malloc(sizeof(double) * (size_t)count);
    const int jumps[2][2] = {{1, 1}, {10, 5}};
    double wrong[2], mean[2];
    for (int c = 0; c < 2; c++) {
        df_sampler_params p = params(DF_SAMPLER_DDPM, 100);
        CHECK(run_inpaint(&g, &s, &p, -0.5, jumps[c][0], jumps[c][1], x2), "known values kept");
        double w = 0, m = 0;
        for (int i = 0; i < count; i++) w += x2[i] > 0, m += x2[i];
        wrong[c] = w / count, mean[c] = m / count;
        if (getenv("DIFFUSE_VERBOSE"))
            printf("    inpaint, jumps %2d x %d: %.3f%% in the wrong mode, mean of x2 %.4f\n", jumps[c][0], jumps[c][1],
                   100 * wrong[c], mean[c]);
    }
    /* tolerances: 5 binomial standard errors around 4.3e-4, 5 standard errors of the mean (sd 0.15), plus
     * budgets of 0.002 and 0.01 for the sampler (measured with 10^5 vectors: 0.12 % and -0.496 with jumps,
     * 4.0 % and -0.416 without) */
    const double p_exact = 4.3e-4, se_w = sqrt(p_exact * (1 - p_exact) / count), se_m = 0.15 / sqrt(count);
    CHECK(wrong[1] <= p_exact + MIX_Z * se_w + 0.002, "jumps 10 x 5: %.3f%% in the wrong mode (exact 0.043%%)",
          100 * wrong[1]);
    CHECK_NEAR(mean[1], -0.5, MIX_Z * se_m + 0.01, "jumps 10 x 5: mean of x2");
    CHECK(wrong[0] > 5 * wrong[1] && wrong[0] > 0.01, "without jumps more samples go wrong (%.3f%% vs %.3f%%)",
          100 * wrong[0], 100 * wrong[1]);
    free(x2);
    df_gmm_free(&g);
    df_schedule_free(&s);
}

typedef struct {
    int calls, last, bad;
} inpaint_log;

static void inpaint_step(void *ctx, int step, int total, const float *x, const float *x0) {
    inpaint_log *l = ctx;
    l->calls++;
    l->bad += step != l->last + 1 || total != 30;
    l->last = step;
}

/* RePaint's jump schedule (diffusers' RePaintScheduler.set_timesteps): 30 steps with jumps of 10 taken
 * 3 times, at steps 0 and 10 (not at 20: j < steps - jump_length), climbs 2 * 2 * 10 = 40 steps back up, so
 * the walk has 30 + 2 * 40 = 110 entries of which 30 + 40 = 70 are reverse steps, one model call each.
 * Progress counts the levels reached, once each. */
TEST(edit_inpaint_jump_schedule_and_arguments) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_gmm g;
    inpaint_mixture(&g);
    const int n = 2;
    const size_t dim = 2;
    float known[4] = {-0.35f, 0, -0.35f, 0}, mask[2] = {1, 0}, out[4];
    mix_counter mc = {{&g, &s, dim, DF_PRED_EPSILON}, 0};
    inpaint_log log = {0};
    df_sampler_params p = params(DF_SAMPLER_DDPM, 30);
    p.progress = inpaint_step, p.progress_ctx = &log;
    df_rng r;
    df_rng_init(&r, 1);
    CHECK_OK(df_inpaint(&s, &p, mix_counting_denoise, &mc, n, dim, known, mask, 10, 3, &r, out));
    CHECK(mc.calls == 70, "%ld model calls, want 70", mc.calls);
    CHECK(log.calls == 30 && log.bad == 0, "progress: %d calls (%d out of order), want 30", log.calls, log.bad);
    CHECK(out[0] == known[0] && out[2] == known[2], "known values kept");
    mc.calls = 0;
    p.progress = NULL;
    CHECK_OK(df_inpaint(&s, &p, mix_counting_denoise, &mc, n, dim, known, mask, 1, 1, &r, out));
    CHECK(mc.calls == 30, "no jumps: %ld model calls, want 30", mc.calls);
    CHECK(df_inpaint(&s, &p, df_gmm_denoise, &mc.dn, n, dim, known, mask, 0, 1, &r, out) == DF_ERR_ARG,
          "jump_length 0 is refused");
    CHECK(df_inpaint(&s, &p, df_gmm_denoise, &mc.dn, n, dim, known, NULL, 1, 1, &r, out) == DF_ERR_ARG,
          "a missing mask is refused");
    CHECK(df_inpaint(&s, &p, df_gmm_denoise, &mc.dn, n, dim, known, mask, 1, 1, &r, known) == DF_ERR_ARG,
          "writing over the known values is refused");
    /* everything known: the result is the known data, whatever the sampler does in between */
    float all[2] = {1, 1}, data[4] = {0.25f, -0.5f, 0.75f, 0.125f};
    CHECK_OK(df_inpaint(&s, &p, df_gmm_denoise, &mc.dn, n, dim, data, all, 5, 2, &r, out));
    CHECK(memcmp(out, data, sizeof data) == 0, "a full mask returns the known data");
    df_gmm_free(&g);
    df_schedule_free(&s);
}

/* ---- DDIM inversion --------------------------------------------------------------------------------------- */

/* Inverting mixture samples and sampling back with DDIM (eta 0) and the same steps returns them; both
 * directions are first-order discretisations of one ODE, so the round-trip error falls like 1 / steps.
 * Measured with the 2-D mixture (mean |error| over 4000 vectors): 25 steps 0.041, 50 steps 0.025, 100 steps
 * 0.013, 200 steps 0.0071; the largest single errors (0.4-0.5) are vectors near the boundary between two
 * components, where the flow splits. The inverted latents approach N(0, I) as the steps grow (the exact
 * ODE carries the data distribution to the prior): variance 0.73 at 25 steps, 0.93 at 100, 0.97 at 200. */
TEST(edit_ddim_inversion_round_trip) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_gmm g;
    mix_make_2d(&g);
    const int n = (vectors() + PER - 1) / PER;
    const size_t dim = 2 * PER, len = (size_t)n * dim;
    float *x0 = malloc(sizeof(float) * len), *xT = malloc(sizeof(float) * len), *back = malloc(sizeof(float) * len);
    df_rng r;
    df_rng_init(&r, 8);
    df_gmm_sample(&g, &r, n, dim, x0);
    df_gmm_denoiser dn = {&g, &s, dim, DF_PRED_EPSILON};
    double prev = 0;
    for (int steps = 25; steps <= 200; steps *= 2) {
        df_sampler_params p = params(DF_SAMPLER_DDIM, steps);
        CHECK_OK(df_ddim_invert(&s, &p, df_gmm_denoise, &dn, n, dim, x0, xT));
        memcpy(back, xT, sizeof(float) * len);
        CHECK_OK(df_sample_from(&s, &p, df_gmm_denoise, &dn, n, dim, &r, back));
        double mean_err = 0, m = 0, v = 0;
        for (size_t j = 0; j < len; j++) {
            mean_err += fabs(back[j] - x0[j]);
            m += xT[j], v += (double)xT[j] * xT[j];
        }
        mean_err /= (double)len, m /= (double)len, v = v / (double)len - m * m;
        if (getenv("DIFFUSE_VERBOSE"))
            printf("    DDIM inversion, %3d steps: round trip mean |error| %.4f, max %.4f; latents %.3f, var %.3f\n",
                   steps, mean_err, max_abs_diff(back, x0, len), m, v);
        CHECK(mean_err < 1.8 / steps, "%d steps: round-trip mean |error| %.4f above 1.8 / steps", steps, mean_err);
        if (prev > 0)
            CHECK(mean_err < 0.65 * prev, "%d steps: error %.4f did not halve from %.4f", steps, mean_err, prev);
        prev = mean_err;
        /* latents from 100 steps on: mean 0 and variance 1 within 5 standard errors plus the discretisation */
        if (steps >= 100)
            CHECK(fabs(m) < 5 / sqrt((double)len) + 0.01 && fabs(v - 1) < 5 * sqrt(2.0 / len) + 0.1,
                  "%d steps: latents have mean %.4f and variance %.4f", steps, m, v);
    }
    /* the other prediction types (the inversion reads eps from any of them) and spacings at 100 steps;
     * measured 0.0134 (sample, leading), 0.0141 (v, trailing), 0.0135 (epsilon, linspace) */
    const struct {
        df_prediction pred;
        df_spacing    spacing;
        double        bound;
    } cases[] = {{DF_PRED_SAMPLE, DF_SPACING_LEADING, 0.02}, {DF_PRED_V, DF_SPACING_TRAILING, 0.021},
                 {DF_PRED_EPSILON, DF_SPACING_LINSPACE, 0.02}};
    for (int c = 0; c < DF_COUNTOF(cases); c++) {
        df_sampler_params p = params(DF_SAMPLER_DDIM, 100);
        p.prediction = cases[c].pred, p.spacing = cases[c].spacing;
        dn.prediction = cases[c].pred;
        CHECK_OK(df_ddim_invert(&s, &p, df_gmm_denoise, &dn, n, dim, x0, xT));
        memcpy(back, xT, sizeof(float) * len);
        CHECK_OK(df_sample_from(&s, &p, df_gmm_denoise, &dn, n, dim, &r, back));
        double e = 0;
        for (size_t j = 0; j < len; j++) e += fabs(back[j] - x0[j]);
        e /= (double)len;
        if (getenv("DIFFUSE_VERBOSE"))
            printf("    DDIM inversion, 100 steps, %s, spacing %d: round-trip mean |error| %.4f\n",
                   df_prediction_name(p.prediction), (int)p.spacing, e);
        CHECK(e < cases[c].bound, "%s, spacing %d: round-trip mean |error| %.4f above %.3f",
              df_prediction_name(p.prediction), (int)p.spacing, e, cases[c].bound);
    }
    free(x0), free(xT), free(back);
    df_gmm_free(&g);
    df_schedule_free(&s);
}
