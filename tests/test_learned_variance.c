/* Learned variances (improved DDPM, Nichol & Dhariwal 2021): the hybrid loss's gradient against finite
 * differences in double and against PyTorch's autograd, DDPM sampling and bits/dim with the variance at its
 * ends equal to the fixed variances, learned_range pipelines, and training (the loss falls, importance-sampled
 * timesteps resume bit for bit, the command records and refuses the options). */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"
#include "safetensors.h"
#include "test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

/* A value on the 256-level grid of [-1, 1], as data are. */
static double on_grid(double x) { return fmin(fmax(round((x + 1) * 127.5) / 127.5 - 1, -1), 1); }

/* ---- the hybrid loss's gradient ------------------------------------------------------------------------- */

/* One sample's inputs at t: x_0 on the grid (with both ends, whose decoder bins are open), x_t from the
 * forward process, a prediction near the truth and v spread over [-1, 1]. */
static void make_sample(const df_schedule *s, df_prediction p, int t, int dim, df_rng *r, double *x0, double *xt,
                        double *target, double *out) {
    const double a = sqrt(s->alphas_cumprod[t]), b = sqrt(1 - s->alphas_cumprod[t]);
    for (int j = 0; j < dim; j++) {
        x0[j] = j == 0 ? -1 : j == 1 ? 1 : on_grid(2 * df_rng_uniform(r) - 1);
        const double eps = df_rng_normal(r);
        xt[j] = a * x0[j] + b * eps;
        target[j] = p == DF_PRED_EPSILON ? eps : p == DF_PRED_SAMPLE ? x0[j] : a * eps - b * x0[j];
        out[j] = target[j] + 0.05 * df_rng_normal(r);
        out[dim + j] = 1.8 * df_rng_uniform(r) - 0.9;
    }
}

TEST(hybrid_loss_gradient_finite_differences) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    enum { D = 6 };
    const int ts[] = {0, 1, 2, 40, 500, 999};
    const double scale = 0.001 * s.T;
    df_rng r;
    df_rng_init(&r, 3);
    double worst[2] = {0, 0};   /* the KL terms (t > 0), the decoder (t = 0) */
    for (int pk = 0; pk < DF_PRED_COUNT; pk++)
        for (int k = 0; k < DF_COUNTOF(ts); k++) {
            const int t = ts[k];
            double x0[D], xt[D], target[D], out[2 * D], frozen[D], grad[2 * D], simple, vlb;
            make_sample(&s, (df_prediction)pk, t, D, &r, x0, xt, target, out);
            memcpy(frozen, out, sizeof frozen);
            df_hybrid_sample(&s, (df_prediction)pk, t, D, x0, xt, target, out, frozen, scale, &simple, &vlb, grad);
            CHECK(isfinite(vlb) && vlb > -1e-12, "t %d: L_vlb %g", t, vlb);
            /* central differences of the whole hybrid loss in every output value, the mean's prediction held
             * (the stop-gradient): the prediction half sees L_simple, the v half L_vlb */
            for (int j = 0; j < 2 * D; j++) {
                const double h = 1e-5, keep = out[j];
                out[j] = keep + h;
                double lp = df_hybrid_sample(&s, (df_prediction)pk, t, D, x0, xt, target, out, frozen, scale, NULL,
                                             NULL, NULL);
                out[j] = keep - h;
                double lm = df_hybrid_sample(&s, (df_prediction)pk, t, D, x0, xt, target, out, frozen, scale, NULL,
                                             NULL, NULL);
                out[j] = keep;
                const double fd = (lp - lm) / (2 * h), err = fabs(fd - grad[j]) / fmax(fabs(fd), 1e-3);
                if (j >= D) worst[t == 0] = fmax(worst[t == 0], err);
                CHECK(err < 1e-6, "%s t %d: d loss / d out[%d] %.10g, finite differences %.10g",
                      df_prediction_name((df_prediction)pk), t, j, grad[j], fd);
            }
            /* the v half's gradient is not zero: the check can fail */
            double gv = 0;
            for (int j = D; j < 2 * D; j++) gv = fmax(gv, fabs(grad[j]));
            if (t < 999) CHECK(gv > 1e-12, "t %d: no gradient on v", t);   /* beta_999 ~ beta~_999: hardly any */
        }
    printf("    largest relative error of d L / d v: KL terms %.2e, decoder %.2e\n", worst[0], worst[1]);
    df_schedule_free(&s);
}

/* The float batch call equals the double per-sample one, and its prediction half holds L_simple's gradient
 * alone. */
TEST(hybrid_loss_batch_matches_sample) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    enum { N = 4, D = 5 };
    const int t[N] = {0, 3, 250, 999};
    float x0[N * D], xt[N * D], target[N * D], out[N * 2 * D], dout[N * 2 * D], w[N] = {1, 0.5f, 2, 1},
          ws[N] = {1, 1, 0.25f, 3}, simple[N], vlb[N];
    double total = 0, loss;
    df_rng r;
    df_rng_init(&r, 5);
    for (int i = 0; i < N; i++) {
        double a[D], b[D], c[D], o[2 * D];
        make_sample(&s, DF_PRED_V, t[i], D, &r, a, b, c, o);
        for (int j = 0; j < D; j++) x0[i * D + j] = (float)a[j], xt[i * D + j] = (float)b[j], target[i * D + j] = (float)c[j];
        for (int j = 0; j < 2 * D; j++) out[i * 2 * D + j] = (float)o[j];
    }
    CHECK_OK(df_hybrid_loss(&s, DF_PRED_V, N, D, x0, xt, t, target, out, w, ws, 0.002, &loss, simple, vlb, dout));
    for (int i = 0; i < N; i++) {
        double a[D], b[D], c[D], o[2 * D], g[2 * D], ls, lv;
        for (int j = 0; j < D; j++) a[j] = x0[i * D + j], b[j] = xt[i * D + j], c[j] = target[i * D + j];
        for (int j = 0; j < 2 * D; j++) o[j] = out[i * 2 * D + j];
        df_hybrid_sample(&s, DF_PRED_V, t[i], D, a, b, c, o, o, 0.002 * s.T, &ls, &lv, g);
        total += w[i] * (ws[i] * ls + 0.002 * s.T * lv);
        CHECK_NEAR(simple[i], ls, 1e-6 * fabs(ls), "L_simple");
        CHECK_NEAR(vlb[i], lv, 1e-6 * fabs(lv), "L_vlb");
        for (int j = 0; j < D; j++) {
            CHECK_NEAR(dout[i * 2 * D + j], w[i] * ws[i] * 2 * (out[i * 2 * D + j] - target[i * D + j]) / D / N, 1e-7,
                       "the prediction's gradient is L_simple's alone");
            CHECK_NEAR(dout[i * 2 * D + D + j], w[i] * g[D + j] / N, 1e-6 * fabs(g[D + j]) + 1e-9, "v's gradient");
        }
    }
    CHECK_NEAR(loss, total / N, 1e-9 * total, "the batch's loss");
    int bad[1] = {1000};
    CHECK(df_hybrid_loss(&s, DF_PRED_V, 1, D, x0, xt, bad, target, out, NULL, NULL, 0.001, &loss, NULL, NULL, NULL) ==
              DF_ERR_ARG,
          "a timestep past T is refused");
    df_schedule_free(&s);
}

/* ---- PyTorch parity ------------------------------------------------------------------------------------- */

static int have_torch(void) {
    int rc = system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1");
    return WIFEXITED(rc) && WEXITSTATUS(rc) == 0;
}

static double max_abs(const float *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(x[i]));
    return m;
}

TEST(hybrid_loss_matches_pytorch) {
    if (!have_torch()) {
        printf("    python3-torch is missing: skipped\n");
        return;
    }
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    enum { N = 8, C = 2, HW = 9, D = C * HW };
    const int t[N] = {0, 0, 1, 2, 17, 300, 700, 999};
    float x0[N * D], xt[N * D], target[N * D], out[N * 2 * D], w[N], ws[N], tf[N];
    df_rng r;
    df_rng_init(&r, 8);
    for (int i = 0; i < N; i++) w[i] = (float)(0.5 + df_rng_uniform(&r)), ws[i] = (float)(0.5 + df_rng_uniform(&r)), tf[i] = (float)t[i];
    const char *dir = test_tmp_dir();
    for (int pk = 0; pk < DF_PRED_COUNT; pk += 2) {   /* epsilon and v */
        const df_prediction p = (df_prediction)pk;
        for (int i = 0; i < N; i++) {
            double a[D], b[D], c[D], o[2 * D];
            make_sample(&s, p, t[i], D, &r, a, b, c, o);
            for (int j = 0; j < D; j++) x0[i * D + j] = (float)a[j], xt[i * D + j] = (float)b[j], target[i * D + j] = (float)c[j];
            for (int j = 0; j < 2 * D; j++) out[i * 2 * D + j] = (float)o[j];
        }
        const double lambda = 0.001;
        const float params[5] = {(float)pk, (float)s.T, 1e-4f, 0.02f, (float)lambda};
        char in[600], res[600], cmd[1400];
        snprintf(in, sizeof in, "%s/hybrid_in_%d.safetensors", dir, pk);
        snprintf(res, sizeof res, "%s/hybrid_out_%d.safetensors", dir, pk);
        st_entry e[8] = {{.name = "x0", .ndim = 2, .shape = {N, D}, .f32 = x0},
                         {.name = "xt", .ndim = 2, .shape = {N, D}, .f32 = xt},
                         {.name = "target", .ndim = 2, .shape = {N, D}, .f32 = target},
                         {.name = "out", .ndim = 2, .shape = {N, 2 * D}, .f32 = out},
                         {.name = "t", .ndim = 1, .shape = {N}, .f32 = tf},
                         {.name = "weights", .ndim = 1, .shape = {N}, .f32 = w},
                         {.name = "simple_weights", .ndim = 1, .shape = {N}, .f32 = ws},
                         {.name = "params", .ndim = 1, .shape = {5}, .f32 = params}};
        CHECK_OK(st_write(in, e, 8, NULL, 0));
        snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/ref/hybrid_ref.py %s %s", in, res);
        int rc = system(cmd);
        CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "tests/ref/hybrid_ref.py failed (exit %d)", WEXITSTATUS(rc));
        st_file f;
        if (st_open(res, &f)) {
            CHECK(0, "no reference output: %s", df_error());
            continue;
        }
        float ref_lv[N * D], ref_simple[N], ref_vlb[N], ref_loss[1], ref_grad[N * 2 * D];
        const char *names[] = {"logvar", "simple", "vlb", "loss", "grad"};
        float *dst[] = {ref_lv, ref_simple, ref_vlb, ref_loss, ref_grad};
        const size_t len[] = {N * D, N, N, 1, N * 2 * D};
        for (int k = 0; k < 5; k++) {
            const st_tensor *tt = st_find(&f, names[k]);
            CHECK(tt != NULL, "reference %s missing", names[k]);
            if (tt) CHECK_OK(st_read_f32(&f, tt, dst[k], len[k]));
        }
        st_close(&f);
        float lv[N * D], simple[N], vlb[N], grad[N * 2 * D];
        double loss;
        for (int i = 0; i < N; i++)
            for (int j = 0; j < D; j++) lv[i * D + j] = (float)df_learned_log_variance(&s, t[i], out[i * 2 * D + D + j]);
        CHECK_OK(df_hybrid_loss(&s, p, N, D, x0, xt, t, target, out, w, ws, lambda, &loss, simple, vlb, grad));
        size_t at;
        const double d_lv = max_rel_diff(lv, ref_lv, N * D, &at), d_s = max_rel_diff(simple, ref_simple, N, &at);
        const double d_v = max_rel_diff(vlb, ref_vlb, N, &at), d_g = max_rel_diff(grad, ref_grad, N * 2 * D, &at);
        /* v's half alone too: its gradients are far smaller than the prediction's */
        double d_gv = 0, gv_max = 0;
        for (int i = 0; i < N; i++) gv_max = fmax(gv_max, max_abs(ref_grad + i * 2 * D + D, D));
        for (int i = 0; i < N; i++)
            for (int j = D; j < 2 * D; j++) d_gv = fmax(d_gv, fabs(grad[i * 2 * D + j] - ref_grad[i * 2 * D + j]) / gv_max);
        printf("    %-8s relative differences: log variance %.1e, L_simple %.1e, L_vlb %.1e (t = 0: %.3f, t = 999: %.3g "
               "bits/dim), loss %.1e, gradient %.1e (v half %.1e)\n",
               df_prediction_name(p), d_lv, d_s, d_v, ref_vlb[0], ref_vlb[N - 1], fabs(loss - ref_loss[0]) / ref_loss[0],
               d_g, d_gv);
        CHECK(d_lv < 1e-6 && d_s < 1e-5 && d_v < 1e-5, "%s: the variance or the losses differ from PyTorch's",
              df_prediction_name(p));
        CHECK_NEAR(loss, ref_loss[0], 1e-5 * ref_loss[0], "hybrid loss vs PyTorch");
        CHECK(d_g < 1e-5 && d_gv < 1e-4, "%s: the gradient differs from autograd's (%.2e, v half %.2e)",
              df_prediction_name(p), d_g, d_gv);
    }
    df_schedule_free(&s);
}

/* ---- sampling and bits/dim with a learned variance --------------------------------------------------------- */

/* The mixture's exact predictor with a constant v as the learned variance: 2 dim values per sample. */
typedef struct {
    df_gmm_denoiser g;
    float           v;
    float          *tmp;
} var_denoiser;

static df_status var_denoise(void *ctx, int n, const float *x, const float *t, float *out) {
    var_denoiser *d = ctx;
    const size_t dim = d->g.dim;
    df_status st = df_gmm_denoise(&d->g, n, x, t, d->tmp);
    for (int i = 0; !st && i < n; i++) {
        memcpy(out + 2 * i * dim, d->tmp + i * dim, sizeof(float) * dim);
        for (size_t j = 0; j < dim; j++) out[2 * i * dim + dim + j] = d->v;
    }
    return st;
}

static void diag_gmm(df_gmm *g) {
    CHECK_OK(df_gmm_init(g, 2, 1));
    g->weight[0] = 0.6, g->weight[1] = 0.4;
    g->mean[0] = -0.5, g->mean[1] = 0.4;
    g->cov[0] = 0.04, g->cov[1] = 0.09;
}

/* DDPM with the learned variance at frac = 0 is the fixed small variance and at frac = 1 beta_t (the large
 * one), over a subset of the timesteps (each step's own beta, as diffusers does); frac = 1/2 is neither. */
TEST(ddpm_learned_variance_ends_are_the_fixed_variances) {
    df_gmm g;
    diag_gmm(&g);
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    enum { N = 16, DIM = 8 };
    float tmp[N * DIM], ref[N * DIM], x[N * DIM];
    var_denoiser vd = {{&g, &s, DIM, DF_PRED_EPSILON}, 0, tmp};
    df_sampler_params p;
    df_sampler_params_default(&p);
    p.kind = DF_SAMPLER_DDPM, p.steps = 25;
    double diff[3];
    for (int k = 0; k < 3; k++) {
        df_rng r;
        p.learned_variance = 0, p.variance_large = k == 1;
        df_rng_init(&r, 41);
        CHECK_OK(df_sample(&s, &p, df_gmm_denoise, &vd.g, N, DIM, &r, ref));
        p.learned_variance = 1, p.variance_large = 0;
        vd.v = k == 0 ? -1.0f : k == 1 ? 1.0f : 0.0f;
        df_rng_init(&r, 41);
        CHECK_OK(df_sample(&s, &p, var_denoise, &vd, N, DIM, &r, x));
        diff[k] = 0;
        for (int i = 0; i < N * DIM; i++) diff[k] = fmax(diff[k], fabs(x[i] - ref[i]));
    }
    printf("    25 DDPM steps: v = -1 vs fixed small %.1e, v = 1 vs fixed large %.1e, v = 0 vs fixed large %.3f\n",
           diff[0], diff[1], diff[2]);
    CHECK(diff[0] < 1e-5, "v = -1 differs from the fixed small variance by %g", diff[0]);
    CHECK(diff[1] < 1e-5, "v = 1 differs from beta_t by %g", diff[1]);
    CHECK(diff[2] > 1e-3, "v = 0 gave the large variance's samples (%g)", diff[2]);
    /* DDIM takes the prediction alone: the same samples whatever v */
    p.kind = DF_SAMPLER_DDIM, p.steps = 10;
    df_rng r;
    df_rng_init(&r, 2);
    p.learned_variance = 0;
    CHECK_OK(df_sample(&s, &p, df_gmm_denoise, &vd.g, N, DIM, &r, ref));
    df_rng_init(&r, 2);
    p.learned_variance = 1, vd.v = 0.3f;
    CHECK_OK(df_sample(&s, &p, var_denoise, &vd, N, DIM, &r, x));
    CHECK(memcmp(x, ref, sizeof x) == 0, "DDIM with a learned-variance output differs from the prediction's");
    df_gmm_free(&g);
    df_schedule_free(&s);
}

/* Bits/dim with the learned variance at the posterior's (v = -1) is df_vlb_bpd's fixed-small figure, term by
 * term; at v = 1 the KL terms are the fixed-large ones. */
TEST(vlb_learned_variance_matches_fixed) {
    df_gmm g;
    diag_gmm(&g);
    df_schedule s;
    CHECK_OK(df_schedule_init(&s, DF_BETA_LINEAR, 100, 1e-3, 0.2, 0));
    enum { N = 64, DIM = 4 };
    float x0[N * DIM], tmp[N * DIM];
    df_rng r;
    df_rng_init(&r, 6);
    df_gmm_sample(&g, &r, N, DIM, x0);
    for (int i = 0; i < N * DIM; i++) x0[i] = (float)on_grid(x0[i]);
    var_denoiser vd = {{&g, &s, DIM, DF_PRED_EPSILON}, -1.0f, tmp};
    double fixed[N], learned[N], tf[101], tl[101];
    for (int k = 0; k < 2; k++) {
        vd.v = k ? 1.0f : -1.0f;
        df_rng_init(&r, 9);
        CHECK_OK(df_vlb_bpd(&s, DF_PRED_EPSILON, df_gmm_denoise, &vd.g, N, DIM, x0, k, &r, fixed, tf));
        df_rng_init(&r, 9);
        CHECK_OK(df_vlb_bpd(&s, DF_PRED_EPSILON, var_denoise, &vd, N, DIM, x0, DF_VARIANCE_LEARNED, &r, learned, tl));
        double d = 0, mean = 0;
        for (int t = k; t <= s.T; t++) d = fmax(d, fabs(tl[t] - tf[t]));
        for (int i = 0; i < N; i++) mean += fixed[i] / N;
        printf("    %s: %.4f bits/dim fixed, largest term difference %.1e\n", k ? "v = 1, large" : "v = -1, small",
               mean, d);
        CHECK(d < 1e-9, "%s: the learned variance's terms differ from the fixed ones by %g", k ? "v = 1" : "v = -1", d);
        if (!k)
            for (int i = 0; i < N; i++) CHECK_NEAR(learned[i], fixed[i], 1e-9, "bits/dim per sample");
    }
    /* and the strata estimate takes the same path */
    vd.v = 0;
    df_rng_init(&r, 10);
    CHECK_OK(df_vlb_bpd_strata(&s, DF_PRED_EPSILON, var_denoise, &vd, N, DIM, x0, DF_VARIANCE_LEARNED, 8, &r, learned));
    CHECK(isfinite(learned[0]) && learned[0] > 0, "strata with a learned variance: %g", learned[0]);
    df_gmm_free(&g);
    df_schedule_free(&s);
}

/* ---- models and pipelines ---------------------------------------------------------------------------------- */

TEST(learned_range_pipeline_loads_saves_and_samples) {
    df_unet_config c;
    test_tiny_unet(&c, 0);
    c.out_channels = 2 * c.in_channels;
    df_model *m = NULL, *back = NULL;
    CHECK_OK(df_model_create(&c, 1, &m));
    CHECK(df_model_learned_variance(m), "out_channels 2 x in_channels is a learned variance");
    df_scheduler_config sc, sc2;
    df_scheduler_config_default(&sc);
    sc.learned_variance = 1;
    char dir[600], path[700];
    snprintf(dir, sizeof dir, "%s/learned-pipe", test_tmp_dir());
    CHECK_OK(df_pipeline_save(dir, m, &sc));
    char *text;
    size_t len;
    snprintf(path, sizeof path, "%s/scheduler/scheduler_config.json", dir);
    if (!df_read_file(path, &text, &len)) {
        CHECK(strstr(text, "\"variance_type\": \"learned_range\"") != NULL, "variance_type written: %s", text);
        free(text);
    }
    CHECK_OK(df_pipeline_load(dir, 0, &back, &sc2));
    CHECK(back && sc2.learned_variance == 1, "learned_range read back");
    df_model_free(back);
    back = NULL;
    /* a fixed variance with a doubled output is refused (diffusers would not split it) */
    sc.learned_variance = 0;
    CHECK_OK(df_scheduler_config_save(&sc, path));
    CHECK(df_pipeline_load(dir, 0, &back, &sc2) == DF_ERR_CONFIG && strstr(df_error(), "variance_type"),
          "fixed variance with 2x output channels: %s", df_error());
    CHECK(back == NULL, "no model is handed back on failure");
    CHECK(df_write_file_atomic(path, "{\"variance_type\": \"learned\"}", 28) == DF_OK, "write");
    CHECK(df_pipeline_load(dir, 0, &back, &sc2) == DF_ERR_CONFIG && strstr(df_error(), "learned"),
          "variance_type learned is refused by name: %s", df_error());
    /* DDPM with the learned variance and DDIM with the prediction alone both run on the model */
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_generate_params g;
    df_generate_params_default(&g);
    g.model = m, g.schedule = &s, g.n = 3, g.sampler.kind = DF_SAMPLER_DDPM, g.sampler.steps = 4;
    float x[3 * 64];
    CHECK_OK(df_generate(&g, x));
    int finite = 1;
    for (int i = 0; i < 3 * 64; i++) finite &= isfinite(x[i]);
    CHECK(finite, "DDPM samples of a learned-variance model are finite");
    g.sampler.kind = DF_SAMPLER_DDIM;
    CHECK_OK(df_generate(&g, x));
    /* the denoise function gives the prediction alone, the variance one both halves */
    df_model_denoiser dn = {.model = m, .h = 8, .w = 8};
    float xin[64] = {0}, tt[1] = {10}, both[128], pred[64];
    CHECK_OK(df_model_denoise_variance(&dn, 1, xin, tt, both));
    CHECK_OK(df_model_denoise(&dn, 1, xin, tt, pred));
    CHECK(memcmp(both, pred, sizeof pred) == 0, "the prediction is the first half");
    df_schedule_free(&s);
    df_model_free(m);
}

/* ---- training ---------------------------------------------------------------------------------------------- */

static void tiny_config(const char *path) {
    df_unet_config c;
    test_tiny_unet(&c, 0);
    CHECK_OK(df_unet_config_save(&c, path));
}

static void base(df_train_params *p, const char *data, const char *cfg, const char *out) {
    df_train_params_default(p);
    p->data = data, p->preset = NULL, p->config_path = cfg, p->out_dir = out;
    p->batch_size = 8, p->optim.lr = 2e-3, p->optim.warmup_steps = 5;
    p->sample_count = 0, p->sample_every = 0, p->save_every = 0, p->log_every = 1, p->seed = 4;
    p->learn_variance = 1;
}

typedef struct {
    double first, last;
    long   steps;
} loss_watch;

static void watch(void *ctx, const df_train_progress *p) {
    loss_watch *w = ctx;
    if (!(p->images_per_sec > 0)) return;
    if (p->step <= 20) w->first += p->loss / 20;
    if (p->step > w->steps - 20) w->last += p->loss / 20;
}

TEST(train_learned_variance_loss_falls) {
    const char *dir = test_tmp_dir();
    char data[600], cfg[600], out[600];
    test_toy_idx(dir, "lv", 128, 2, data, sizeof data);
    snprintf(cfg, sizeof cfg, "%s/lv-tiny.json", dir);
    snprintf(out, sizeof out, "%s/lv-run", dir);
    tiny_config(cfg);
    df_train_params p;
    base(&p, data, cfg, out);
    const long steps = test_quick() ? 60 : 80;
    p.max_steps = steps;
    loss_watch w = {.steps = steps};
    p.progress = watch, p.progress_ctx = &w;
    CHECK_OK(df_train(&p));
    printf("    hybrid loss: first 20 steps %.4f, last 20 %.4f\n", w.first, w.last);
    CHECK(w.last < 0.7 * w.first, "the hybrid loss fell by less than 30%%: %.4f -> %.4f", w.first, w.last);
    df_model *m = NULL;
    df_scheduler_config sc;
    CHECK_OK(df_pipeline_load(out, 0, &m, &sc));
    CHECK(m && sc.learned_variance && df_model_config(m)->out_channels == 2, "a learned_range pipeline with 2 outputs");
    df_model_free(m);
    /* a fixed-variance model given to --learn-variance is refused */
    char out2[600];
    snprintf(out2, sizeof out2, "%s/lv-run-init", dir);
    df_train_params q;
    base(&q, data, NULL, out2);
    q.config_path = NULL, q.init_dir = out, q.learn_variance = 0, q.max_steps = 1;
    CHECK(df_train(&q) == DF_ERR_CONFIG && strstr(df_error(), "output channels"), "--init with another variance: %s",
          df_error());
    q.learn_variance = 1, q.timestep_sampling = DF_TIMESTEPS_IMPORTANCE, q.config_path = cfg, q.init_dir = NULL;
    q.learn_variance = 0;
    CHECK(df_train(&q) == DF_ERR_ARG && strstr(df_error(), "learned variances"), "importance without learned variances: %s",
          df_error());
}

/* Importance sampling's history is training state: a run stopped and resumed twice equals the straight one,
 * past the point where every t has its 10 values (T = 5 here, so that comes within a few steps). */
TEST(train_importance_sampling_resume_is_bit_exact) {
    const char *dir = test_tmp_dir();
    char data[600], cfg[600], a[600], b[600];
    test_toy_idx(dir, "is", 48, 2, data, sizeof data);
    snprintf(cfg, sizeof cfg, "%s/is-tiny.json", dir);
    tiny_config(cfg);
    snprintf(a, sizeof a, "%s/is-straight", dir);
    snprintf(b, sizeof b, "%s/is-resumed", dir);
    df_train_params p;
    base(&p, data, cfg, a);
    p.num_train_timesteps = 5, p.beta_start = 1e-3, p.beta_end = 0.3;
    p.timestep_sampling = DF_TIMESTEPS_IMPORTANCE, p.vlb_weight = 0.01, p.max_steps = 20;
    CHECK_OK(df_train(&p));
    base(&p, data, cfg, b);
    p.num_train_timesteps = 5, p.beta_start = 1e-3, p.beta_end = 0.3;
    p.timestep_sampling = DF_TIMESTEPS_IMPORTANCE, p.vlb_weight = 0.01, p.max_steps = 6, p.optim.total_steps = 20;
    CHECK_OK(df_train(&p));
    df_train_params q;
    df_train_params_default(&q);
    q.out_dir = b, q.resume = 1, q.max_steps = 13, q.sample_count = 0;
    CHECK_OK(df_train(&q));
    q.max_steps = 20;
    CHECK_OK(df_train(&q));
    const char *files[] = {"unet_raw/diffusion_pytorch_model.safetensors", "training_state.safetensors",
                           "timestep_history.safetensors"};
    const char *differs = test_checkpoint_differs(a, b, 20, files, (int)(sizeof files / sizeof *files));
    CHECK(!differs, "%s differs between the straight and the resumed run", differs);
    /* the history filled (so the resumed steps did sample by importance), and the state records the options */
    char path[800];
    snprintf(path, sizeof path, "%s/checkpoint-0000020/timestep_history.safetensors", a);
    st_file f;
    CHECK_OK(st_open(path, &f));
    const st_tensor *tc = st_find(&f, "vlb_history_count");
    int64_t n[5] = {0};
    if (tc && st_numel(tc) == 5) CHECK_OK(st_read_i64(&f, tc, n, 5));
    int full = 0;
    for (int t = 0; t < 5; t++) full += n[t] == 10;
    CHECK(full == 5, "every t has 10 values after 20 steps of 8 (%d do)", full);
    st_close(&f);
    char *text;
    size_t len;
    snprintf(path, sizeof path, "%s/checkpoint-0000020/training_state.json", b);
    if (!df_read_file(path, &text, &len)) {
        CHECK(strstr(text, "\"timestep_sampling\":\t\"importance\"") || strstr(text, "\"timestep_sampling\":\"importance\""),
              "the state records importance sampling");
        free(text);
    }
    /* the same run sampled uniformly trains other weights: the history did change the draws */
    char c[600];
    snprintf(c, sizeof c, "%s/is-uniform", dir);
    base(&p, data, cfg, c);
    p.num_train_timesteps = 5, p.beta_start = 1e-3, p.beta_end = 0.3, p.vlb_weight = 0.01, p.max_steps = 20;
    CHECK_OK(df_train(&p));
    CHECK(test_checkpoint_differs(a, c, 20, files, 1), "importance and uniform sampling gave the same weights");
    /* the command refuses the options by name on resume and shows the variance in `info` */
    char cmd[2400];
    snprintf(cmd, sizeof cmd, "%s/diffuse train --resume --out %s --steps 40 --learn-variance >/dev/null 2>%s/lv.err",
             test_bin_dir(), b, dir);
    int rc = system(cmd);
    snprintf(path, sizeof path, "%s/lv.err", dir);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "--learn-variance on resume: exit %d", WEXITSTATUS(rc));
    if (!df_read_file(path, &text, &len)) {
        CHECK(strstr(text, "--learn-variance") != NULL, "the refusal names the option: %s", text);
        free(text);
    }
    snprintf(cmd, sizeof cmd, "%s/diffuse train --resume --out %s --steps 40 --timestep-sampling uniform >/dev/null 2>&1",
             test_bin_dir(), b);
    rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "--timestep-sampling on resume: exit %d", WEXITSTATUS(rc));
    snprintf(cmd, sizeof cmd, "%s/diffuse train --steps 1 --out %s/never --vlb-weight 0.1 >/dev/null 2>&1", test_bin_dir(), dir);
    rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "--vlb-weight without --learn-variance: exit %d", WEXITSTATUS(rc));
    snprintf(cmd, sizeof cmd, "%s/diffuse info %s > %s/lv.info 2>&1", test_bin_dir(), b, dir);
    rc = system(cmd);
    snprintf(path, sizeof path, "%s/lv.info", dir);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "diffuse info on the run");
    if (!df_read_file(path, &text, &len)) {
        CHECK(strstr(text, "learned_range") != NULL, "info shows the learned variance: %s", text);
        free(text);
    }
}

/* `diffuse eval --metrics bpd` scores a learned-variance model with its variance: a model whose v channel is
 * the constant -1 (zero weights, bias -1) scores what the same network without that channel scores with the
 * fixed small variance; with the constant +1 it scores otherwise. */
/* `to` (one output channel) gets `from`'s weights, conv_out's prediction channel included; from's v channel
 * becomes the constant v. */
static void copy_weights(df_model *from, df_model *to, float v) {
    for (int i = 0; i < df_model_num_tensors(to); i++) {
        int nd, shape[4], nd2, shape2[4];
        size_t off, off2;
        const char *name = df_model_tensor_info(to, i, &nd, shape, &off);
        size_t len = 1;
        for (int d = 0; d < nd; d++) len *= (size_t)shape[d];
        const int k = df_model_find_tensor(from, name);
        df_model_tensor_info(from, k, &nd2, shape2, &off2);
        /* conv_out: the prediction channel is the first (its weights first along the output axis) */
        memcpy(df_model_params(to) + off, df_model_params(from) + off2, sizeof(float) * len);
        if (!strcmp(name, "conv_out.weight") || !strcmp(name, "conv_out.bias")) {
            float *second = df_model_params(from) + off2 + len;
            for (size_t j = 0; j < len; j++) second[j] = !strcmp(name, "conv_out.bias") ? v : 0;
        }
    }
}

TEST(eval_bpd_uses_the_learned_variance) {
    const char *dir = test_tmp_dir();
    char data[600], fixed_dir[600], learned_dir[600];
    test_toy_idx(dir, "bpd", 24, 2, data, sizeof data);
    df_unet_config c;
    test_tiny_unet(&c, 0);
    df_model *fixed = NULL, *learned = NULL;
    CHECK_OK(df_model_create(&c, 7, &fixed));
    c.out_channels = 2;
    CHECK_OK(df_model_create(&c, 8, &learned));
    df_scheduler_config sc;
    df_scheduler_config_default(&sc);
    sc.num_train_timesteps = 40;
    snprintf(fixed_dir, sizeof fixed_dir, "%s/bpd-fixed", dir);
    snprintf(learned_dir, sizeof learned_dir, "%s/bpd-learned", dir);
    copy_weights(learned, fixed, -1);
    CHECK_OK(df_pipeline_save(fixed_dir, fixed, &sc));
    df_eval_params p;
    df_eval_params_default(&p);
    p.metrics = 1u << DF_METRIC_BPD, p.ref = data, p.bpd_n = 24, p.bpd_timesteps = 0, p.bootstrap = 0;
    p.model = fixed_dir;
    df_eval_result rf, rl, rl2;
    CHECK_OK(df_evaluate(&p, &rf));
    sc.learned_variance = 1;
    CHECK_OK(df_pipeline_save(learned_dir, learned, &sc));
    p.model = learned_dir;
    CHECK_OK(df_evaluate(&p, &rl));
    copy_weights(learned, fixed, 1);
    CHECK_OK(df_pipeline_save(learned_dir, learned, &sc));
    CHECK_OK(df_evaluate(&p, &rl2));
    printf("    bits/dim: fixed small %.5f, learned at v = -1 %.5f, at v = 1 %.5f\n", rf.bpd.value, rl.bpd.value,
           rl2.bpd.value);
    CHECK_NEAR(rl.bpd.value, rf.bpd.value, 1e-5 * rf.bpd.value, "learned variance at v = -1 vs the fixed small one");
    CHECK(fabs(rl2.bpd.value - rf.bpd.value) > 1e-3 * rf.bpd.value, "v = 1 scored as the fixed small variance");
    df_model_free(fixed);
    df_model_free(learned);
}
