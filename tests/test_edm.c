/* EDM preconditioning (Karras et al. 2022): coefficients and training target against an independent
 * computation, the log-normal noise levels, the sampler adapter against the Gaussian mixture's exact
 * denoiser, a model's EDM denoise against its plain forward, and --edm training end to end. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"
#include "mixture.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

/* ---- coefficients, target and weighting --------------------------------------------------------------- */

TEST(edm_coefficients_and_target) {
    const double sd = 0.5, sigmas[] = {0.002, 0.05, 0.3, 1, 4.5, 80};
    for (int k = 0; k < 6; k++) {
        const double s = sigmas[k];
        df_edm_coefs c = df_edm_precond(sd, s);
        /* EDM table 1, written out apart from the library's form */
        const double skip = 0.25 / (s * s + 0.25), out = s * 0.5 / hypot(s, 0.5), in = 1 / hypot(s, 0.5),
                     noise = log(s) / 4;
        CHECK_NEAR(c.skip, skip, 1e-15, "c_skip");
        CHECK_NEAR(c.out, out, 1e-15 * fmax(1, out), "c_out");
        CHECK_NEAR(c.in, in, 1e-14, "c_in");
        CHECK_NEAR(c.noise, noise, 1e-15, "c_noise");
    }
    /* a batch: x_in = c_in (x_0 + sigma n), c_noise, and c_skip x + c_out target = x_0 */
    enum { N = 5, DIM = 37 };
    float x0[N * DIM], noise[N * DIM], xin[N * DIM], tgt[N * DIM], cn[N];
    double sig[N] = {0.003, 0.2, 1.1, 9, 150};
    df_rng r;
    df_rng_init(&r, 3);
    df_rng_fill_uniform(&r, x0, N * DIM, -1, 1);
    df_rng_fill_normal(&r, noise, N * DIM);
    df_edm_training_inputs(sd, N, DIM, x0, noise, sig, xin, cn, tgt);
    double worst_in = 0, worst_back = 0, worst_w = 0;
    for (int i = 0; i < N; i++) {
        const double s = sig[i], r2 = s * s + sd * sd;
        CHECK_NEAR(cn[i], log(s) / 4, 1e-6, "c_noise of the batch");
        const double skip = sd * sd / r2, out = s * sd / sqrt(r2);
        double dd = 0, ff = 0;
        for (int j = 0; j < DIM; j++) {
            const size_t o = (size_t)i * DIM + j;
            const double x = (double)x0[o] + s * noise[o];
            worst_in = fmax(worst_in, fabs(xin[o] - x / sqrt(r2)));
            /* the target undoes the preconditioning back to x_0 (float rounding of the target, scaled by c_out) */
            worst_back = fmax(worst_back, fabs(skip * x + out * tgt[o] - x0[o]) / (1 + fabs(x)));
            /* EDM's weight lambda |D - x_0|^2 equals |F - target|^2 for any F, up to
             * the float target's rounding: the unit-weight loss is EDM's */
            const double F = tgt[o] + 0.3 * sin(j + i);
            const double D = skip * x + out * F;
            dd += (s * s + sd * sd) / (s * sd * s * sd) * (D - x0[o]) * (D - x0[o]);
            ff += (F - tgt[o]) * (F - tgt[o]);
        }
        worst_w = fmax(worst_w, fabs(dd - ff) / ff);
    }
    printf("    largest errors: x_in %.3g, c_skip x + c_out target - x_0 %.3g, weighting %.3g\n", worst_in, worst_back,
           worst_w);
    CHECK(worst_in < 1e-6, "x_in differs from c_in (x_0 + sigma n) by %g", worst_in);
    CHECK(worst_back < 1e-6, "c_skip x + c_out target differs from x_0 by %g", worst_back);
    CHECK(worst_w < 1e-6, "lambda |D - x_0|^2 and |F - target|^2 differ by %g (relative)", worst_w);
}

TEST(edm_sigma_draws_are_log_normal) {
    df_edm_params e;
    df_edm_params_default(&e);
    CHECK(e.sigma_data == 0.5 && e.p_mean == -1.2 && e.p_std == 1.2, "defaults 0.5, -1.2, 1.2");
    e.p_mean = -0.7, e.p_std = 1.6;   /* not the defaults, so that a swapped or ignored field shows */
    enum { N = 40000 };
    double *s = malloc(sizeof(double) * N), m = 0, v = 0;
    df_rng r;
    df_rng_init(&r, 9);
    df_edm_draw_sigmas(&e, &r, N, s);
    for (int i = 0; i < N; i++) m += log(s[i]);
    m /= N;
    for (int i = 0; i < N; i++) v += (log(s[i]) - m) * (log(s[i]) - m);
    const double sd = sqrt(v / (N - 1));
    printf("    ln(sigma): mean %.4f (want -0.7), std %.4f (want 1.6) over %d draws\n", m, sd, N);
    /* 5 standard errors: of the mean p_std / sqrt(N), of the std about p_std / sqrt(2N) */
    CHECK_NEAR(m, -0.7, 5 * 1.6 / sqrt(N), "mean of ln(sigma)");
    CHECK_NEAR(sd, 1.6, 5 * 1.6 / sqrt(2.0 * N), "std of ln(sigma)");
    free(s);
}

/* ---- the sampler adapter on the Gaussian mixture -------------------------------------------------------- */

#define PER 50   /* 2-D vectors per sample */

/* EDM's F made from the mixture's exact x_0 predictor: for the network's (c_in x, c_noise), sigma =
 * exp(4 c_noise), x = x_in / c_in, and F = (x0_exact(x) - c_skip x) / c_out. */
typedef struct {
    df_gmm_denoiser dn;   /* x_0 prediction */
    double          sd;
    float          *xt, *t, *x0;
} gmm_F;

static df_status gmm_F_fn(void *ctx, int n, const float *xin, const float *cnoise, float *out) {
    gmm_F *g = ctx;
    const size_t dim = g->dn.dim;
    for (int i = 0; i < n; i++) {
        const double sigma = exp(4.0 * cnoise[i]);
        const df_edm_coefs c = df_edm_precond(g->sd, sigma);
        const double t = df_schedule_t_for_sigma(g->dn.schedule, sigma);
        const double a = sqrt(df_schedule_alpha_bar(g->dn.schedule, t));
        g->t[i] = (float)t;
        for (size_t j = 0; j < dim; j++) g->xt[(size_t)i * dim + j] = (float)(a * xin[(size_t)i * dim + j] / c.in);
    }
    df_status st = df_gmm_denoise(&g->dn, n, g->xt, g->t, g->x0);
    for (int i = 0; i < n && !st; i++) {
        const df_edm_coefs c = df_edm_precond(g->sd, exp(4.0 * cnoise[i]));
        for (size_t j = 0; j < dim; j++) {
            const size_t o = (size_t)i * dim + j;
            out[o] = (float)((g->x0[o] - c.skip * (xin[o] / c.in)) / c.out);
        }
    }
    return st;
}

/* What a sampler calls: the adapter of the library around F. */
typedef struct {
    gmm_F             *F;
    const df_schedule *s;
    float             *xin, *cn, *f;
} edm_adapter;

static df_status adapter_fn(void *ctx, int n, const float *x, const float *t, float *out) {
    edm_adapter *a = ctx;
    const size_t dim = a->F->dn.dim;
    df_edm_sampler_inputs(a->s, a->F->sd, n, dim, x, t, a->xin, a->cn);
    df_status st = gmm_F_fn(a->F, n, a->xin, a->cn, a->f);
    if (!st) df_edm_sampler_x0(a->s, a->F->sd, n, dim, x, t, a->f, out);
    return st;
}

static float max_abs(const float *a, const float *b, size_t n) {
    float m = 0;
    for (size_t i = 0; i < n; i++) m = fmaxf(m, fabsf(a[i] - b[i]));
    return m;
}

TEST(edm_adapter_reproduces_the_exact_mixture_denoiser) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    printf("    the default schedule's sigma range: %.4f .. %.2f\n", df_schedule_sigma(&s, 0), df_schedule_sigma(&s, 999));
    df_gmm g;
    mix_make_2d(&g);
    const int n = 8;
    const size_t dim = 2 * PER, len = (size_t)n * dim;
    float *buf = malloc(sizeof(float) * (9 * len + 2 * n));
    float *x = buf, *want = x + len, *got = want + len, *t = got + len;
    gmm_F F = {{&g, &s, dim, DF_PRED_SAMPLE}, 0.5, t + n, t + n + len, t + n + 2 * len};
    edm_adapter a = {&F, &s, t + n + 3 * len, t + n + 4 * len, t + n + 4 * len + n};
    df_rng r;
    df_rng_init(&r, 21);
    const float ts[] = {0, 3.5, 40, 250.25, 600, 999};
    for (int k = 0; k < 6; k++) {
        /* x_t from the forward process at t, so x is where the denoiser matters */
        df_gmm_sample(&g, &r, n, dim, x);
        const double ab = df_schedule_alpha_bar(&s, ts[k]);
        for (size_t j = 0; j < len; j++) x[j] = (float)(sqrt(ab) * x[j] + sqrt(1 - ab) * df_rng_normal(&r));
        for (int i = 0; i < n; i++) t[i] = ts[k];
        CHECK_OK(df_gmm_denoise(&F.dn, n, x, t, want));
        CHECK_OK(adapter_fn(&a, n, x, t, got));
        const float d = max_abs(got, want, len);
        CHECK(d < 2e-4, "t = %g: the adapter's x_0 differs from the exact one by %g", ts[k], d);
    }
    /* sampling through the adapter is sampling with the exact x_0 predictor */
    const struct {
        df_sampler_kind kind;
        int             steps, karras;
    } runs[] = {{DF_SAMPLER_DDIM, 50, 0}, {DF_SAMPLER_HEUN, 20, 1}, {DF_SAMPLER_EULER_A, 20, 1}};
    for (int k = 0; k < 3; k++) {
        df_sampler_params p;
        df_sampler_params_default(&p);
        p.kind = runs[k].kind, p.steps = runs[k].steps, p.karras_sigmas = runs[k].karras;
        p.prediction = DF_PRED_SAMPLE;
        df_rng_init(&r, 5);
        CHECK_OK(df_sample(&s, &p, df_gmm_denoise, &F.dn, n, dim, &r, want));
        df_rng_init(&r, 5);
        CHECK_OK(df_sample(&s, &p, adapter_fn, &a, n, dim, &r, got));
        const float d = max_abs(got, want, len);
        printf("    %s %d steps: largest difference to the exact predictor's samples %.3g\n", df_sampler_name(p.kind),
               p.steps, d);
        CHECK(d < 2e-3, "%s: samples through the adapter differ by %g", df_sampler_name(p.kind), d);
    }
    free(buf);
    df_gmm_free(&g);
    df_schedule_free(&s);
}

/* A model's EDM denoise is its plain forward on (c_in x, c_noise), combined into x_0. */
TEST(edm_model_denoise_matches_its_forward) {
    df_unet_config c;
    test_tiny_unet(&c, 1);
    df_model *m;
    CHECK_OK(df_model_create(&c, 4, &m));
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    enum { N = 3, DIM = 64 };
    float x[N * DIM], xin[N * DIM], cn[N], F[N * DIM], want[N * DIM], got[N * DIM], t[N] = {0, 420.5, 999};
    df_rng r;
    df_rng_init(&r, 8);
    df_rng_fill_normal(&r, x, N * DIM);
    df_edm_sampler_inputs(&s, 0.5, N, DIM, x, t, xin, cn);
    CHECK_OK(df_model_forward(m, N, 8, 8, xin, cn, NULL, F));
    df_edm_sampler_x0(&s, 0.5, N, DIM, x, t, F, want);
    df_model_denoiser dn = {.model = m, .h = 8, .w = 8, .edm_schedule = &s, .edm_sigma_data = 0.5};
    CHECK_OK(df_model_denoise(&dn, N, x, t, got));
    size_t at;
    const double d = max_rel_diff(got, want, N * DIM, &at);
    CHECK(d < 1e-5, "EDM denoise against forward + adapter: relative difference %g at %zu", d, at);
    /* and it is not the plain prediction (the comparison can fail) */
    dn.edm_sigma_data = 0;
    CHECK_OK(df_model_denoise(&dn, N, x, t, got));
    CHECK(max_rel_diff(got, want, N * DIM, &at) > 1e-2, "the plain denoise gave EDM's x_0");
    /* the adapter works on the model's own buffers: once reserved, an EDM denoise allocates nothing */
    dn.edm_sigma_data = 0.5;
    CHECK_OK(df_model_reserve(m, N, 8, 8));
    test_alloc_begin();
    for (int rep = 0; rep < 3; rep++) CHECK_OK(df_model_denoise(&dn, rep == 1 ? 2 : N, x, t, got));
    const long allocs = test_alloc_end();
    CHECK(allocs == 0, "EDM denoise calls allocated %ld times", allocs);
    df_schedule_free(&s);
    df_model_free(m);
}

/* ---- training end to end ------------------------------------------------------------------------------------ */

static int run_cli(const char *args) { return test_run_diffuse(NULL, 0, args, NULL, 0, NULL, 0); }

static void edm_params(df_train_params *p, const char *data, const char *cfg, const char *out) {
    df_train_params_default(p);
    p->data = data, p->preset = NULL, p->config_path = cfg, p->out_dir = out;
    p->batch_size = 8, p->optim.lr = 2e-3, p->optim.warmup_steps = 2, p->optim.total_steps = 12;
    p->sample_every = 0, p->sample_count = 0, p->save_every = 0, p->log_every = 1, p->seed = 4;
    p->edm = 1;
    p->edm_params.p_mean = -1.0;   /* recorded and restored on resume */
}

TEST(edm_train_save_load_sample_resume) {
    const char *dir = test_tmp_dir();
    char data[600], cfg[600], a[600], b[600], path[900];
    test_toy_idx(dir, "edm-toy", 32, 4, data, sizeof data);
    snprintf(cfg, sizeof cfg, "%s/edm-tiny.json", dir);
    df_unet_config c;
    test_tiny_unet(&c, 0);
    c.num_class_embeds = 5;   /* 4 classes and the null one: guidance works */
    CHECK_OK(df_unet_config_save(&c, cfg));
    snprintf(a, sizeof a, "%s/edm-straight", dir);
    snprintf(b, sizeof b, "%s/edm-resumed", dir);
    df_train_params p;
    edm_params(&p, data, cfg, a);
    p.class_dropout = 0.2;
    p.max_steps = 12;
    CHECK_OK(df_train(&p));
    /* the same run stopped at 5 and resumed */
    edm_params(&p, data, cfg, b);
    p.class_dropout = 0.2;
    p.max_steps = 5;
    CHECK_OK(df_train(&p));
    df_train_params q;
    df_train_params_default(&q);
    q.out_dir = b, q.resume = 1, q.max_steps = 12, q.sample_count = 0, q.sample_every = 0;
    CHECK_OK(df_train(&q));
    const char *files[] = {"unet_raw/diffusion_pytorch_model.safetensors", "training_state.safetensors",
                           "scheduler/scheduler_config.json"};
    const char *differs = test_checkpoint_differs(a, b, 12, files, 3);
    CHECK(!differs, "EDM: %s differs between the straight and the resumed run", differs);
    /* the pipeline says what it is, as diffusers' EDMEulerScheduler */
    char *text;
    size_t len;
    snprintf(path, sizeof path, "%s/latest/scheduler/scheduler_config.json", a);
    if (!df_read_file(path, &text, &len)) {
        CHECK(strstr(text, "\"_class_name\": \"EDMEulerScheduler\"") && strstr(text, "\"sigma_data\": 0.5") &&
                  strstr(text, "\"prediction_type\": \"epsilon\"") && strstr(text, "\"sigma_schedule\": \"karras\""),
              "scheduler_config.json: %s", text);
        free(text);
    } else CHECK(0, "no scheduler config: %s", df_error());
    snprintf(path, sizeof path, "%s/latest/training_state.json", a);
    if (!df_read_file(path, &text, &len)) {
        CHECK(strstr(text, "\"p_mean\":\t-1") || strstr(text, "\"p_mean\": -1") || strstr(text, "\"p_mean\":-1"),
              "the state records p_mean: %s", text);
        free(text);
    }
    df_model *m = NULL;
    df_scheduler_config sc;
    CHECK_OK(df_pipeline_load(a, 0, &m, &sc));
    CHECK(sc.edm_sigma_data == 0.5 && sc.prediction == DF_PRED_SAMPLE && sc.num_train_timesteps == 1000,
          "loaded as EDM: sigma_data %g, prediction %s", sc.edm_sigma_data, df_prediction_name(sc.prediction));
    /* every sampler, with classifier-free guidance */
    df_schedule s;
    CHECK_OK(df_schedule_from_config(&sc, &s));
    float x[4 * 64];
    for (int k = 0; m && k < DF_SAMPLER_COUNT; k++) {
        df_generate_params g;
        df_generate_params_default(&g);
        g.model = m, g.schedule = &s, g.edm_sigma_data = sc.edm_sigma_data, g.n = 4, g.null_class = 4;
        g.guidance = 2, g.seed = 1;
        g.sampler.kind = (df_sampler_kind)k, g.sampler.steps = k == DF_SAMPLER_DDPM ? 20 : 6;
        g.sampler.prediction = DF_PRED_EPSILON;   /* overridden: an EDM model's denoiser gives x_0 */
        CHECK_OK(df_generate(&g, x));
        int finite = 1;
        for (int i = 0; i < 4 * 64; i++) finite &= isfinite(x[i]) && fabsf(x[i]) <= 1.0001f;
        CHECK(finite, "%s: EDM samples finite and clipped", df_sampler_name((df_sampler_kind)k));
    }
    if (m) {   /* df_generate_params_for takes the preconditioning from the pipeline; without it, other images */
        df_generate_params g, h;
        df_generate_params_for(&g, m, &sc, &s);
        CHECK(g.model == m && g.schedule == &s && g.edm_sigma_data == 0.5 && g.sampler.prediction == DF_PRED_SAMPLE &&
                  g.guidance == 1 && g.batch == 64,
              "df_generate_params_for: sigma_data %g, prediction %s", g.edm_sigma_data,
              df_prediction_name(g.sampler.prediction));
        g.n = 4, g.null_class = 4, g.seed = 1, g.sampler.steps = 6;
        h = g, h.edm_sigma_data = 0;
        float y[4 * 64];
        CHECK_OK(df_generate(&g, x));
        CHECK_OK(df_generate(&h, y));
        CHECK(memcmp(x, y, sizeof x) != 0, "an EDM model sampled without its preconditioning draws other images");
    }
    df_schedule_free(&s);
    df_model_free(m);
    /* the command: sample, info, eval's bits/dim; a changed EDM setting on --resume is refused by name */
    char args[3000];
    snprintf(args, sizeof args, "sample %s --labels 0,1 --n 2 --steps 4 --sampler heun --guidance 2 --npy %s/e.npy", a, dir);
    CHECK(run_cli(args) == 0, "diffuse sample of an EDM run");
    snprintf(args, sizeof args, "info %s", a);
    char out[4096];
    test_run_diffuse(NULL, 0, args, out, sizeof out, NULL, 0);
    CHECK(strstr(out, "EDM") != NULL, "diffuse info names EDM: %s", out);
    snprintf(args, sizeof args, "eval %s --metrics bpd --bpd-data %s --bpd-n 4 --bpd-timesteps 8 --json", a, data);
    CHECK(run_cli(args) == 0, "diffuse eval --metrics bpd of an EDM run");
    snprintf(args, sizeof args, "train --resume --out %s --steps 14 --p-mean 0", b);
    CHECK(run_cli(args) == 2, "--p-mean on --resume is refused");
}

TEST(edm_cli_refuses_contradictions) {
    const char *dir = test_tmp_dir();
    char args[1200];
    const char *bad[] = {"--edm --prediction v_prediction", "--edm --prediction sample", "--edm --min-snr-gamma 5",
                         "--sigma-data 0.4", "--p-std 1", "--edm --learn-variance"};
    for (int i = 0; i < DF_COUNTOF(bad); i++) {
        snprintf(args, sizeof args, "train --steps 1 %s --out %s/edm-cli-%d", bad[i], dir, i);
        CHECK(run_cli(args) == 2, "diffuse %s: exit 2", args);
        snprintf(args, sizeof args, "%s/edm-cli-%d", dir, i);
        struct stat sb;
        CHECK(stat(args, &sb) != 0, "a refused run left %s", args);
    }
    snprintf(args, sizeof args, "train --edm --prediction v_prediction --steps 1 --out %s/x", dir);
    char out[2000];
    test_run_diffuse(NULL, 0, args, NULL, 0, out, sizeof out);
    char *nl = strchr(out, '\n');
    if (nl) *nl = 0;   /* the usage line follows */
    CHECK(strstr(out, "--edm") && strstr(out, "v_prediction"), "a line naming --edm and the prediction: %s", out);
}

typedef struct {
    double first, last;
    int    nfirst, nlast;
    long   steps;
} edm_loss_watch;

static void edm_watch(void *ctx, const df_train_progress *p) {
    edm_loss_watch *w = ctx;
    if (!(p->images_per_sec > 0)) return;
    if (p->step <= 20) w->first += p->loss, w->nfirst++;
    if (p->step > w->steps - 20) w->last += p->loss, w->nlast++;
}

/* EDM's objective trains: the loss on F's target falls on the toy squares. */
TEST(edm_train_loss_falls) {
    const char *dir = test_tmp_dir();
    char data[600], cfg[600], out[600];
    test_toy_idx(dir, "edm-fall", 256, 4, data, sizeof data);
    snprintf(cfg, sizeof cfg, "%s/edm-fall.json", dir);
    df_unet_config c;
    test_tiny_unet(&c, 0);
    CHECK_OK(df_unet_config_save(&c, cfg));
    snprintf(out, sizeof out, "%s/edm-fall", dir);
    df_train_params p;
    edm_params(&p, data, cfg, out);
    p.batch_size = 16, p.optim.total_steps = 0, p.optim.warmup_steps = 10;
    p.max_steps = 80;   /* measured: the loss falls from about 1.4 to 0.7 */
    edm_loss_watch w = {.steps = p.max_steps};
    p.progress = edm_watch, p.progress_ctx = &w;
    CHECK_OK(df_train(&p));
    const double a = w.first / w.nfirst, b = w.last / w.nlast;
    printf("    EDM loss: first 20 steps %.4f, last 20 %.4f\n", a, b);
    CHECK(w.nfirst == 20 && w.nlast == 20, "progress every step (%d, %d)", w.nfirst, w.nlast);
    CHECK(b < 0.75 * a, "the EDM loss fell by less than 25%%: %.4f -> %.4f", a, b);
}

/* scheduler_config.json: an EDM model's round trip keeps its VP schedule; a diffusers EDMEulerScheduler
 * config (no beta fields) loads on the default schedule; only its "epsilon" preconditioning is taken;
 * DDPMScheduler configs stay what they were. */
TEST(edm_scheduler_config_round_trip) {
    const char *dir = test_tmp_dir();
    char path[700];
    snprintf(path, sizeof path, "%s/edm-sched.json", dir);
    df_scheduler_config c, back;
    df_scheduler_config_default(&c);
    c.beta_schedule = DF_BETA_COSINE, c.num_train_timesteps = 500, c.prediction = DF_PRED_SAMPLE;
    c.edm_sigma_data = 0.7;
    CHECK_OK(df_scheduler_config_save(&c, path));
    CHECK_OK(df_scheduler_config_load(path, &back));
    CHECK(back.edm_sigma_data == 0.7 && back.beta_schedule == DF_BETA_COSINE && back.num_train_timesteps == 500 &&
              back.prediction == DF_PRED_SAMPLE,
          "round trip: sigma_data %g, %s, T %d", back.edm_sigma_data, df_beta_kind_name(back.beta_schedule),
          back.num_train_timesteps);
    const char *diffusers = "{\"_class_name\": \"EDMEulerScheduler\", \"sigma_min\": 0.002, \"sigma_max\": 80.0,"
                            " \"sigma_data\": 0.6, \"sigma_schedule\": \"karras\", \"num_train_timesteps\": 1000,"
                            " \"prediction_type\": \"epsilon\", \"rho\": 7.0}";
    FILE *f = fopen(path, "w");
    if (f) fputs(diffusers, f), fclose(f);
    CHECK_OK(df_scheduler_config_load(path, &back));
    CHECK(back.edm_sigma_data == 0.6 && back.beta_schedule == DF_BETA_LINEAR && back.prediction == DF_PRED_SAMPLE,
          "diffusers' EDM config: sigma_data %g", back.edm_sigma_data);
    f = fopen(path, "w");
    if (f) fputs("{\"_class_name\": \"EDMEulerScheduler\", \"prediction_type\": \"v_prediction\"}", f), fclose(f);
    CHECK(df_scheduler_config_load(path, &back) == DF_ERR_CONFIG && strstr(df_error(), "epsilon"),
          "EDM v_prediction refused: %s", df_error());
    f = fopen(path, "w");
    if (f) fputs("{\"_class_name\": \"DDPMScheduler\", \"prediction_type\": \"v_prediction\", \"sigma_data\": 3}", f),
        fclose(f);
    CHECK_OK(df_scheduler_config_load(path, &back));
    CHECK(back.edm_sigma_data == 0 && back.prediction == DF_PRED_V, "a DDPMScheduler is not EDM");
}
