/* Guidance on the 2-D Gaussian mixture whose components are the classes: the exact conditional predictor
 * samples its component, classifier-free guidance above 1 sharpens toward it, classifier guidance with the
 * exact classifier equals classifier-free guidance with the exact conditional predictor. */
#define _POSIX_C_SOURCE 200809L
#include "mixture.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>

enum { PER = 50 };   /* independent 2-D vectors per sample: labels are per sample */

/* The one-component mixture of component k of g. */
static void component_of(const df_gmm *g, int k, df_gmm *c) {
    df_gmm_init(c, 1, g->D);
    c->weight[0] = 1;
    memcpy(c->mean, g->mean + (size_t)k * g->D, sizeof(double) * g->D);
    memcpy(c->cov, g->cov + (size_t)k * g->D * g->D, sizeof(double) * g->D * g->D);
}

/* Sample n samples of class y with classifier-free guidance at scale w (p: sampler). */
static void sample_cfg(const df_gmm *g, const df_schedule *s, const df_sampler_params *p, int y, double w, int n,
                       uint64_t seed, float *x) {
    const size_t dim = (size_t)g->D * PER;
    df_gmm_denoiser dn = {g, s, dim, p->prediction};
    df_classifier_free_guidance cfg;
    CHECK_OK(df_classifier_free_guidance_init(&cfg, df_gmm_class_denoise, &dn, dim, g->K));
    int *labels = malloc(sizeof(int) * n);
    for (int i = 0; i < n; i++) labels[i] = y;
    cfg.labels = labels, cfg.scale = w;
    df_rng r;
    df_rng_init(&r, seed);
    CHECK_OK(df_sample(s, p, df_classifier_free_guidance_denoise, &cfg, n, dim, &r, x));
    df_classifier_free_guidance_free(&cfg);
    free(labels);
}

TEST(guidance_conditional_sampling_matches_the_component) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_gmm g;
    mix_make_2d(&g);
    df_sampler_params p;
    df_sampler_params_default(&p);
    p.kind = DF_SAMPLER_DDPM, p.steps = 1000, p.variance_large = 1;
    const int n = test_quick() ? 20 : 80;   /* x 50 vectors */
    const size_t dim = 2 * PER;
    float *x = malloc(sizeof(float) * n * dim);
    const mix_budget budget = {0.006, 0.002, 0.04};   /* DDPM 1000, fixed_large, as in the sampler tests */
    for (int y = 0; y < 3; y++) {
        sample_cfg(&g, &s, &p, y, 1.0, n, 100 + y, x);
        df_gmm c;
        component_of(&g, y, &c);
        mix_stats st;
        mix_stats_samples(&c, n, dim, x, &st);
        char what[64];
        snprintf(what, sizeof what, "class %d (scale 1) vs its component", y);
        CHECK_MIXTURE(what, &c, &st, budget);
        /* nearly all in the requested component: as often as exact draws from it are assigned to it */
        mix_stats_samples(&g, n, dim, x, &st);
        df_rng r;
        df_rng_init(&r, 7 + y);
        size_t m = 20000;
        double *v = malloc(sizeof(double) * m * 2);
        df_gmm_sample_vectors(&c, &r, m, v, NULL);
        int hit = 0;
        for (size_t i = 0; i < m; i++) hit += mix_assign(&g, v + 2 * i) == y;
        double exact = (double)hit / m, got = st.weight[y], se = sqrt(exact * (1 - exact) / st.count + 1e-12);
        printf("    class %d: %.4f of samples in it (exact draws: %.4f)\n", y, got, exact);
        CHECK(got > 0.95 && fabs(got - exact) <= MIX_Z * se + 0.006, "class %d: %.4f in the component, exact %.4f", y,
              got, exact);
        free(v);
        df_gmm_free(&c);
    }
    /* scale 0: the null class alone, the whole mixture */
    sample_cfg(&g, &s, &p, 1, 0.0, n, 200, x);
    mix_stats st;
    mix_stats_samples(&g, n, dim, x, &st);
    CHECK_MIXTURE("scale 0 (unconditional)", &g, &st, budget);
    free(x);
    df_gmm_free(&g);
    df_schedule_free(&s);
}

/* Exact mean log p(y | x_0) of generated vectors under the mixture, and the fraction assigned to y. */
static void class_scores(const df_gmm *g, const df_schedule *s, int n, const float *x, int y, double *mean_logp,
                         double *frac, double *spread) {
    const size_t dim = (size_t)g->D * PER;
    df_gmm_denoiser dn = {g, s, dim, DF_PRED_EPSILON};
    double *lp = malloc(sizeof(double) * n);
    int *labels = calloc((size_t)n, sizeof(int));
    float *t = calloc((size_t)n, sizeof(float));
    for (int i = 0; i < n; i++) labels[i] = y;
    CHECK_OK(df_gmm_classify(&dn, n, x, t, labels, lp, NULL));
    double sum = 0;
    for (int i = 0; i < n; i++) sum += lp[i];
    *mean_logp = sum / ((double)n * PER);
    mix_stats st;
    mix_stats_samples(g, n, dim, x, &st);
    *frac = st.weight[y];
    *spread = st.cov[y][0][0] + st.cov[y][1][1];
    free(lp), free(labels), free(t);
}

TEST(guidance_scale_sharpens_toward_the_class) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_gmm g;
    mix_make_2d(&g);
    /* components 0 and 1 pulled together so that guidance has something to separate */
    g.mean[2] = -0.05, g.mean[3] = -0.35;
    df_sampler_params p;
    df_sampler_params_default(&p);
    p.steps = 50;
    const int n = test_quick() ? 20 : 60;
    const size_t dim = 2 * PER;
    float *x = malloc(sizeof(float) * n * dim);
    static const double scales[] = {1, 2, 3, 5};
    double prev_lp = -INFINITY, prev_frac = 0, prev_spread = INFINITY;
    for (int i = 0; i < 4; i++) {
        sample_cfg(&g, &s, &p, 1, scales[i], n, 300, x);   /* the same noise for every scale */
        double lp, frac, spread;
        class_scores(&g, &s, n, x, 1, &lp, &frac, &spread);
        printf("    scale %.0f: mean log p(y|x) %.4f, %.4f in the class, spread %.5f\n", scales[i], lp, frac, spread);
        CHECK(lp > prev_lp, "scale %g: mean log p(y|x) %.4f did not rise (was %.4f)", scales[i], lp, prev_lp);
        CHECK(frac >= prev_frac, "scale %g: fraction in the class %.4f fell (was %.4f)", scales[i], frac, prev_frac);
        CHECK(spread < prev_spread, "scale %g: spread %.5f did not shrink (was %.5f)", scales[i], spread, prev_spread);
        prev_lp = lp, prev_frac = frac, prev_spread = spread;
    }
    CHECK(prev_frac > 0.995, "scale 5 leaves %.4f in the class", prev_frac);
    free(x);
    df_gmm_free(&g);
    df_schedule_free(&s);
}

TEST(guidance_classifier_equals_classifier_free_with_exact_models) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_gmm g;
    mix_make_2d(&g);
    const int n = test_quick() ? 16 : 64;
    const size_t dim = 2 * PER;
    float *x = malloc(sizeof(float) * n * dim), *a = malloc(sizeof(float) * n * dim), *b = malloc(sizeof(float) * n * dim);
    float t[64];
    int labels[64];
    df_rng r;
    df_rng_init(&r, 42);
    df_rng_fill_normal(&r, x, n * dim);
    for (int i = 0; i < n; i++) t[i] = (float)(1 + (i * 997) % 999), labels[i] = i % 3;
    /* pointwise, in every parameterisation, at several scales: grad log p(y|x_t) = (eps_u - eps_c) / sqrt(1-abar) */
    for (int pr = 0; pr < 3; pr++) {
        df_prediction pred = pr == 0 ? DF_PRED_EPSILON : pr == 1 ? DF_PRED_SAMPLE : DF_PRED_V;
        df_gmm_denoiser dn = {&g, &s, dim, pred};
        df_classifier_free_guidance cfg;
        df_classifier_guidance cg;
        CHECK_OK(df_classifier_free_guidance_init(&cfg, df_gmm_class_denoise, &dn, dim, 3));
        CHECK_OK(df_classifier_guidance_init(&cg, df_gmm_denoise, &dn, df_gmm_classify, &dn, &s, pred, dim));
        cfg.labels = cg.labels = labels;
        static const double scales[] = {0, 1, 2.5, 7};
        for (int k = 0; k < 4; k++) {
            cfg.scale = cg.scale = scales[k];
            CHECK_OK(df_classifier_free_guidance_denoise(&cfg, n, x, t, a));
            CHECK_OK(df_classifier_guidance_denoise(&cg, n, x, t, b));
            double d = max_rel_diff(b, a, (size_t)n * dim, NULL);
            CHECK(d < 2e-5, "prediction %s, scale %g: classifier guidance differs from CFG by %.3g",
                  df_prediction_name(pred), scales[k], d);
        }
        df_classifier_free_guidance_free(&cfg);
        df_classifier_guidance_free(&cg);
    }
    /* and the samplers agree: DDIM 50 from the same noise, class 2, scale 3 */
    df_sampler_params p;
    df_sampler_params_default(&p);
    df_gmm_denoiser dn = {&g, &s, dim, DF_PRED_EPSILON};
    df_classifier_free_guidance cfg;
    df_classifier_guidance cg;
    CHECK_OK(df_classifier_free_guidance_init(&cfg, df_gmm_class_denoise, &dn, dim, 3));
    CHECK_OK(df_classifier_guidance_init(&cg, df_gmm_denoise, &dn, df_gmm_classify, &dn, &s, DF_PRED_EPSILON, dim));
    for (int i = 0; i < n; i++) labels[i] = 2;
    cfg.labels = cg.labels = labels, cfg.scale = cg.scale = 3;
    df_rng_init(&r, 5);
    CHECK_OK(df_sample(&s, &p, df_classifier_free_guidance_denoise, &cfg, n, dim, &r, a));
    df_rng_init(&r, 5);
    CHECK_OK(df_sample(&s, &p, df_classifier_guidance_denoise, &cg, n, dim, &r, b));
    double d = max_rel_diff(b, a, (size_t)n * dim, NULL);
    printf("    DDIM 50, scale 3: classifier vs classifier-free samples differ by %.3g (relative)\n", d);
    CHECK(d < 1e-4, "DDIM samples differ by %.3g", d);
    /* DDPM with Algorithm 1 (mean shift by s Sigma grad): the same class, the same sharpening (on
     * overlapping components, where guidance matters) */
    g.mean[2] = -0.05, g.mean[3] = -0.35;
    cfg.scale = cg.scale = 1.5;
    p.kind = DF_SAMPLER_DDPM, p.steps = 1000;
    float *ts = malloc(sizeof(float) * 1000);
    CHECK_OK(df_sampler_timesteps(&s, &p, ts));
    cg.ddpm_mean = 1, cg.timesteps = ts, cg.nsteps = 1000;
    for (int i = 0; i < n; i++) labels[i] = 1;
    double frac[2], lp[2], spread[2];
    df_rng_init(&r, 6);
    CHECK_OK(df_sample(&s, &p, df_classifier_guidance_denoise, &cg, n, dim, &r, a));
    class_scores(&g, &s, n, a, 1, &lp[0], &frac[0], &spread[0]);
    df_rng_init(&r, 6);
    CHECK_OK(df_sample(&s, &p, df_classifier_free_guidance_denoise, &cfg, n, dim, &r, b));
    class_scores(&g, &s, n, b, 1, &lp[1], &frac[1], &spread[1]);
    printf("    DDPM 1000, scale 1.5: Algorithm 1 %.4f in the class (log p %.4f), CFG %.4f (log p %.4f)\n", frac[0], lp[0],
           frac[1], lp[1]);
    CHECK(frac[0] > 0.98 && frac[1] > 0.98, "DDPM guided samples outside the class: %.4f, %.4f", frac[0], frac[1]);
    /* Algorithm 1 shifts less than Algorithm 2 near t = 0 (Sigma < 1 - abar there), so it sharpens a little
     * less than CFG, and more than no guidance */
    cg.scale = 0;
    df_rng_init(&r, 6);
    CHECK_OK(df_sample(&s, &p, df_classifier_guidance_denoise, &cg, n, dim, &r, a));
    double lp0, frac0, spread0;
    class_scores(&g, &s, n, a, 1, &lp0, &frac0, &spread0);
    CHECK(lp0 < 0 && frac0 < frac[0], "DDPM scale 0 (unconditional): %.4f in the class, guided %.4f", frac0, frac[0]);
    CHECK(lp[0] <= lp[1] + 0.002 && lp[0] > 0.5 * lp[1] + 0.5 * lp0,
          "DDPM: Algorithm 1 log p %.4f not between unguided %.4f and CFG %.4f", lp[0], lp0, lp[1]);
    /* pointwise: the guided DDPM mean is the unguided one moved by s Sigma grad log p(y | x_t) */
    {
        cg.scale = 1.5;
        const int m = 8;
        float tt[8], *eg = malloc(sizeof(float) * m * dim), *eu = malloc(sizeof(float) * m * dim),
              *gr = malloc(sizeof(float) * m * dim);
        for (int i = 0; i < m; i++) tt[i] = ts[100 * i + 50];
        df_rng_fill_normal(&r, x, m * dim);
        CHECK_OK(df_classifier_guidance_denoise(&cg, m, x, tt, eg));
        CHECK_OK(df_gmm_denoise(&dn, m, x, tt, eu));
        CHECK_OK(df_gmm_classify(&dn, m, x, tt, labels, NULL, gr));
        double worst = 0;
        for (int i = 0; i < m; i++) {
            double ab = df_schedule_alpha_bar(&s, tt[i]), abp = df_schedule_alpha_bar(&s, tt[i] - 1);
            double alpha = ab / abp, beta = 1 - alpha, var = beta * (1 - abp) / (1 - ab);
            for (size_t k = 0; k < dim; k++) {
                double dmu = -beta / sqrt(1 - ab) * ((double)eg[i * dim + k] - eu[i * dim + k]) / sqrt(alpha);
                double want = 1.5 * var * gr[i * dim + k];
                worst = fmax(worst, fabs(dmu - want) / (fabs(want) + 1e-6));
            }
        }
        CHECK(worst < 1e-3, "DDPM mean shift differs from s Sigma grad by %.3g (relative)", worst);
        free(eg), free(eu), free(gr);
    }
    /* without the sampler's timesteps the DDPM form refuses to guess */
    cg.timesteps = NULL;
    CHECK(df_classifier_guidance_denoise(&cg, n, a, ts, b) == DF_ERR_ARG, "DDPM form without timesteps accepted");
    free(ts);
    df_classifier_free_guidance_free(&cfg);
    df_classifier_guidance_free(&cg);
    free(x), free(a), free(b);
    df_gmm_free(&g);
    df_schedule_free(&s);
}

/* Counts calls and the batch sizes the predictor sees. */
typedef struct {
    df_gmm_denoiser dn;
    int             calls, max_n;
} counting;
static df_status counting_class_denoise(void *ctx, int n, const float *x, const float *t, const int *labels, float *out) {
    counting *c = ctx;
    c->calls++;
    if (n > c->max_n) c->max_n = n;
    return df_gmm_class_denoise(&c->dn, n, x, t, labels, out);
}

TEST(guidance_one_doubled_batch_per_step_and_rescale) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_gmm g;
    mix_make_2d(&g);
    const int n = 8;
    const size_t dim = 2 * PER;
    counting c = {{&g, &s, dim, DF_PRED_EPSILON}, 0, 0};
    df_classifier_free_guidance cfg;
    CHECK_OK(df_classifier_free_guidance_init(&cfg, counting_class_denoise, &c, dim, 3));
    int labels[8] = {0, 1, 2, 0, 1, 2, 0, 1};
    cfg.labels = labels, cfg.scale = 4;
    df_sampler_params p;
    df_sampler_params_default(&p);
    p.steps = 20;
    float *x = malloc(sizeof(float) * n * dim), *o = malloc(sizeof(float) * n * dim), *oc = malloc(sizeof(float) * n * dim);
    df_rng r;
    df_rng_init(&r, 1);
    CHECK_OK(df_sample(&s, &p, df_classifier_free_guidance_denoise, &cfg, n, dim, &r, x));
    CHECK(c.calls == 20 && c.max_n == 2 * n, "20 steps made %d calls of up to %d samples (want 20 of %d)", c.calls,
          c.max_n, 2 * n);
    /* rescale 1: each sample's output has the conditional prediction's standard deviation */
    float t[8];
    for (int i = 0; i < n; i++) t[i] = 400;
    df_rng_fill_normal(&r, x, n * dim);
    cfg.rescale = 1;
    CHECK_OK(df_classifier_free_guidance_denoise(&cfg, n, x, t, o));
    CHECK_OK(df_gmm_class_denoise(&c.dn, n, x, t, labels, oc));
    for (int i = 0; i < n; i++) {
        double m[2] = {0, 0}, v[2] = {0, 0};
        for (int pass = 0; pass < 2; pass++)
            for (size_t k = 0; k < dim; k++) m[pass] += (pass ? oc : o)[i * dim + k] / (double)dim;
        for (int pass = 0; pass < 2; pass++)
            for (size_t k = 0; k < dim; k++) {
                double e = (pass ? oc : o)[i * dim + k] - m[pass];
                v[pass] += e * e;
            }
        CHECK_NEAR(sqrt(v[0]), sqrt(v[1]), 1e-4 * sqrt(v[1]), "rescaled standard deviation");
    }
    cfg.rescale = 1.5;
    CHECK(df_classifier_free_guidance_denoise(&cfg, n, x, t, o) == DF_ERR_ARG, "rescale 1.5 accepted");
    cfg.rescale = 0, cfg.labels = NULL;
    CHECK(df_classifier_free_guidance_denoise(&cfg, n, x, t, o) == DF_ERR_ARG, "no labels accepted");
    df_classifier_free_guidance_free(&cfg);
    free(x), free(o), free(oc);
    df_gmm_free(&g);
    df_schedule_free(&s);
}

/* The guidance interval: samples whose sigma(t) is in (lo, hi] get the guided prediction, the others the
 * conditional one, byte for byte; a call with none inside is one conditional call of the normal batch. */
TEST(guidance_interval_guides_only_inside_it) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_gmm g;
    mix_make_2d(&g);
    enum { n = 6 };
    const size_t dim = 2 * PER;
    counting c = {{&g, &s, dim, DF_PRED_EPSILON}, 0, 0};
    df_classifier_free_guidance all, in;
    CHECK_OK(df_classifier_free_guidance_init(&all, counting_class_denoise, &c, dim, 3));
    CHECK_OK(df_classifier_free_guidance_init(&in, counting_class_denoise, &c, dim, 3));
    int labels[n] = {0, 1, 2, 0, 1, 2};
    const float t[n] = {100, 500, 900, 499, 501, 20};   /* below, at hi, above, inside, above, below */
    all.labels = in.labels = labels, all.scale = in.scale = 3;
    in.schedule = &s, in.sigma_lo = df_schedule_sigma(&s, 300), in.sigma_hi = df_schedule_sigma(&s, 500);
    float *x = malloc(sizeof(float) * n * dim), *o = malloc(sizeof(float) * n * dim),
          *og = malloc(sizeof(float) * n * dim), *oc = malloc(sizeof(float) * n * dim);
    df_rng r;
    df_rng_init(&r, 5);
    df_rng_fill_normal(&r, x, n * dim);
    CHECK_OK(df_classifier_free_guidance_denoise(&all, n, x, t, og));
    CHECK_OK(df_gmm_class_denoise(&c.dn, n, x, t, labels, oc));
    c.calls = c.max_n = 0;
    CHECK_OK(df_classifier_free_guidance_denoise(&in, n, x, t, o));
    CHECK(c.calls == 1 && c.max_n == 2 * n, "a batch with samples inside: %d calls of up to %d (want 1 of %d)", c.calls,
          c.max_n, 2 * n);
    const int inside[n] = {0, 1, 0, 1, 0, 0};
    for (int i = 0; i < n; i++) {
        const float *want = (inside[i] ? og : oc) + (size_t)i * dim;
        CHECK(!memcmp(o + (size_t)i * dim, want, sizeof(float) * dim), "t = %g: not the %s prediction", t[i],
              inside[i] ? "guided" : "conditional");
    }
    CHECK(memcmp(og, oc, sizeof(float) * dim) != 0, "guidance 3 changed nothing: the test cannot tell");
    /* none inside: one call of n, the conditional prediction */
    const float low[n] = {10, 20, 30, 40, 50, 299};
    CHECK_OK(df_gmm_class_denoise(&c.dn, n, x, low, labels, oc));
    c.calls = c.max_n = 0;
    CHECK_OK(df_classifier_free_guidance_denoise(&in, n, x, low, o));
    CHECK(c.calls == 1 && c.max_n == n, "no sample inside: %d calls of up to %d (want 1 of %d)", c.calls, c.max_n, n);
    CHECK(!memcmp(o, oc, sizeof(float) * n * dim), "no sample inside: not the conditional prediction");
    /* an empty or negative interval is refused */
    in.sigma_lo = in.sigma_hi;
    CHECK(df_classifier_free_guidance_denoise(&in, n, x, t, o) == DF_ERR_ARG, "the empty interval (s, s] accepted");
    in.sigma_lo = -1;
    CHECK(df_classifier_free_guidance_denoise(&in, n, x, t, o) == DF_ERR_ARG, "a negative sigma_lo accepted");
    /* what df_generate and eval's report take for "an interval was given" */
    CHECK(!df_guidance_interval_limits(0, INFINITY) && df_guidance_interval_limits(0, 3) &&
              df_guidance_interval_limits(0.3, INFINITY),
          "df_guidance_interval_limits: (0, inf] is every step, (0, 3] and (0.3, inf] are not");
    df_classifier_free_guidance_free(&all);
    df_classifier_free_guidance_free(&in);
    free(x), free(o), free(og), free(oc);
    df_gmm_free(&g);
    df_schedule_free(&s);
}

/* ---- class-conditional training with a null class --------------------------------------------------- */

#include <sys/stat.h>
#include <sys/wait.h>

TEST(guidance_class_conditional_training_and_sampling) {
    char dir[700], images[800], cfgp[800], out[800];
    snprintf(dir, sizeof dir, "%s/cond", test_tmp_dir());
    df_mkdir_p(dir);
    test_toy_idx(dir, "cls", 24, 3, images, sizeof images);
    df_unet_config c;
    test_tiny_unet(&c, 0);
    snprintf(cfgp, sizeof cfgp, "%s/tiny.json", dir);
    CHECK_OK(df_unet_config_save(&c, cfgp));
    df_train_params p;
    df_train_params_default(&p);
    p.data = images, p.preset = NULL, p.config_path = cfgp;
    snprintf(out, sizeof out, "%s/run", dir);
    p.out_dir = out, p.batch_size = 8, p.max_steps = 3, p.sample_count = 6, p.sample_steps = 4;
    p.class_conditional = 1, p.class_dropout = 0.5;
    CHECK_OK(df_train(&p));
    df_model *m = NULL;
    CHECK_OK(df_pipeline_load(out, 0, &m, NULL));
    if (!m) return;
    CHECK(df_model_config(m)->num_class_embeds == 4, "3 classes + the null class: num_class_embeds %d",
          df_model_config(m)->num_class_embeds);
    df_class_info ci;
    CHECK_OK(df_class_info_load(out, m, &ci));
    CHECK(ci.count == 4 && ci.null_class == 3 && ci.names && !strcmp(ci.names[1], "1") && !strcmp(ci.names[3], "(none)"),
          "classes.json: %d classes, null %d", ci.count, ci.null_class);
    df_class_info_free(&ci);
    df_model_free(m);
    /* a null class is needed for label dropout */
    df_train_params q = p;
    snprintf(out, sizeof out, "%s/run2", dir);
    q.out_dir = out, q.class_conditional = 0;
    c.num_class_embeds = 3;
    CHECK_OK(df_unet_config_save(&c, cfgp));
    CHECK(df_train(&q) == DF_ERR_ARG && strstr(df_error(), "null class"), "dropout without a null class: %s", df_error());
    /* the command samples it with guidance, and refuses the null class as a label */
    char cmd[3000], png[800];
    snprintf(png, sizeof png, "%s/g.png", dir);
    snprintf(cmd, sizeof cmd, "'%s/diffuse' sample '%s/run' --n 6 --steps 4 --guidance 3 --out '%s' 2>/dev/null",
             test_bin_dir(), dir, png);
    CHECK(system(cmd) == 0, "sample --guidance 3 failed");
    struct stat sb;
    CHECK(stat(png, &sb) == 0 && sb.st_size > 0, "no guided grid written");
    snprintf(cmd, sizeof cmd, "'%s/diffuse' sample '%s/run' --n 6 --steps 4 --labels 3 --out '%s/n.png' 2>/dev/null",
             test_bin_dir(), dir, dir);
    int rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "the null class as a label: exit %d", WEXITSTATUS(rc));
}

/* ---- classifier networks ------------------------------------------------------------------------------ */

TEST(guidance_classifier_network_gradient_and_training) {
    char dir[700], images[800], cfgp[800], out[800];
    snprintf(dir, sizeof dir, "%s/clf", test_tmp_dir());
    df_mkdir_p(dir);
    test_toy_idx(dir, "cls", 24, 3, images, sizeof images);
    df_unet_config c;
    test_tiny_unet(&c, 1);
    /* grad log p(y | x_t) from df_model_classify against central differences along random directions */
    df_unet_config cc = c;
    cc.classifier_classes = 3;
    df_model *m = NULL;
    CHECK_OK(df_model_create(&cc, 4, &m));
    if (!m) return;
    const int n = 3;
    const size_t dim = 64;
    float x[3 * 64], g[3 * 64], v[3 * 64], xp[3 * 64], t[3] = {0, 300, 900};
    int y[3] = {0, 1, 2};
    df_rng r;
    df_rng_init(&r, 8);
    df_rng_fill_normal(&r, x, n * dim);
    df_rng_fill_normal(&r, v, n * dim);
    df_model_denoiser dn = {.model = m, .h = 8, .w = 8, .labels = NULL};
    double lp[3], lpp[3], lpm[3];
    CHECK_OK(df_model_classify(&dn, n, x, t, y, lp, g));
    const float hstep = 1e-2f;
    for (size_t i = 0; i < n * dim; i++) xp[i] = x[i] + hstep * v[i];
    CHECK_OK(df_model_classify(&dn, n, xp, t, y, lpp, NULL));
    for (size_t i = 0; i < n * dim; i++) xp[i] = x[i] - hstep * v[i];
    CHECK_OK(df_model_classify(&dn, n, xp, t, y, lpm, NULL));
    for (int i = 0; i < n; i++) {
        double fd = (lpp[i] - lpm[i]) / (2 * hstep), an = 0;
        for (size_t k = 0; k < dim; k++) an += (double)g[i * dim + k] * v[i * dim + k];
        CHECK(lp[i] < 0, "log p(y|x) = %g is not negative", lp[i]);
        CHECK(fabs(fd - an) <= 2e-3 + 1e-2 * fabs(fd), "image %d: d log p / dx along v: %.6g analytic, %.6g differences",
              i, an, fd);
    }
    df_model_free(m);
    /* a noise-free classifier learns the three squares */
    snprintf(cfgp, sizeof cfgp, "%s/tiny.json", dir);
    CHECK_OK(df_unet_config_save(&c, cfgp));
    df_classifier_train_params p;
    df_classifier_train_params_default(&p);
    double acc = -1;
    snprintf(out, sizeof out, "%s/noise-free", dir);
    p.data = images, p.eval_data = images, p.eval_accuracy = &acc, p.preset = NULL, p.config_path = cfgp;
    p.noise_aware = 0, p.batch_size = 12, p.max_steps = test_quick() ? 30 : 60, p.lr = 3e-3, p.out_dir = out;
    CHECK_OK(df_classifier_train(&p));
    printf("    noise-free classifier on the toy squares: accuracy %.3f after %ld steps\n", acc, p.max_steps);
    CHECK(acc > 0.95, "accuracy %.3f", acc);
    CHECK_OK(df_model_load(out, &m));
    if (m) CHECK(df_model_config(m)->classifier_classes == 3 && !df_model_config(m)->classifier_noise_aware,
                 "reloaded with %d classes, noise-aware %d", df_model_config(m)->classifier_classes,
                 df_model_config(m)->classifier_noise_aware);
    if (m) {   /* 250 images in one call (the network sees 100 at a time) = one image a call */
        enum { NB = 250 };
        float *xs = malloc(sizeof(float) * NB * 64), ts[NB];
        int all[NB], diff = 0, truth[NB], hits = -1, right = 0;
        df_rng rr;
        df_rng_init(&rr, 4);
        df_rng_fill_normal(&rr, xs, NB * 64);
        for (int i = 0; i < NB; i++) ts[i] = (float)(i % 7) * 100, truth[i] = i % 3;
        CHECK_OK(df_classifier_predict(m, NB, 8, 8, xs, ts, all, NULL));
        CHECK_OK(df_classifier_predict(m, NB, 8, 8, xs, ts, truth, &hits));
        for (int i = 0; i < NB; i++) {
            int one = -1;
            CHECK_OK(df_classifier_predict(m, 1, 8, 8, xs + i * 64, ts + i, &one, NULL));
            diff += one != all[i], right += one == i % 3;
        }
        CHECK(diff == 0 && hits == right, "batched prediction: %d differ from one at a time; %d vs %d right", diff,
              hits, right);
        free(xs);
    }
    df_model_free(m);
    /* training continues from it (a few steps keep it right), and not on data with other classes */
    char out2[900];
    snprintf(out2, sizeof out2, "%s-more", out);
    df_classifier_train_params q = p;
    q.init_dir = out, q.out_dir = out2, q.max_steps = 5, q.lr = 1e-4;
    acc = -1;
    CHECK_OK(df_classifier_train(&q));
    CHECK(acc > 0.95, "continued: accuracy %.3f", acc);
    /* continued on noised images, it is recorded as noise-aware (and guides below) */
    char noisy[900];
    snprintf(noisy, sizeof noisy, "%s-noisy", out);
    q.noise_aware = 1, q.out_dir = noisy, q.max_steps = 3, q.eval_data = NULL;
    CHECK_OK(df_classifier_train(&q));
    m = NULL;
    CHECK_OK(df_model_load(noisy, &m));
    if (m) CHECK(df_model_config(m)->classifier_noise_aware == 1, "noise-aware not recorded");
    df_model_free(m);
    q.data = "fashion-mnist", q.out_dir = out;
    CHECK(df_classifier_train(&q) == DF_ERR_SHAPE && strstr(df_error(), "10 classes"), "10-class data accepted: %s",
          df_error());
    /* the command guides an unconditional model with it (DDIM: algorithm 2, DDPM: algorithm 1) and scores
     * the result with the noise-free one */
    char model[900], cmd[4000], line[256];
    snprintf(model, sizeof model, "%s/uncond", dir);
    df_model *u = NULL;
    CHECK_OK(df_model_create(&c, 9, &u));
    if (u) CHECK_OK(df_model_save(u, model));
    df_model_free(u);
    for (int k = 0; k < 2; k++) {
        snprintf(cmd, sizeof cmd,
                 "'%s/diffuse' sample '%s' --n 6 --steps 4 --labels 0,1,2 --classifier '%s' --classifier-scale 2 "
                 "%s --score '%s' --out '%s/cg%d.png' 2>/dev/null",
                 test_bin_dir(), model, noisy, k ? "--sampler ddpm" : "", out, dir, k);
        FILE *pipe = popen(cmd, "r");
        int got = 0;
        while (pipe && fgets(line, sizeof line, pipe)) got |= strstr(line, "accuracy of") != NULL;
        int rc = pipe ? pclose(pipe) : -1;
        CHECK(rc == 0 && got, "%s: exit %d, accuracy line %s", k ? "ddpm" : "ddim", rc, got ? "printed" : "missing");
    }
    /* info tells the two apart */
    for (int k = 0; k < 2; k++) {
        snprintf(cmd, sizeof cmd, "'%s/diffuse' info '%s'", test_bin_dir(), k ? noisy : out);
        FILE *pipe = popen(cmd, "r");
        int got = 0;
        while (pipe && fgets(line, sizeof line, pipe))
            got |= strstr(line, k ? "trained on noised images" : "trained on clean images") != NULL;
        if (pipe) pclose(pipe);
        CHECK(got, "info does not say how the %s classifier was trained", k ? "noise-aware" : "noise-free");
    }
}
