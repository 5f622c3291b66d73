/* Noise schedules: the identities between the derived arrays, the posterior against Gaussian
 * conditioning, each kind's defining formula, diffusers' float32 schedule and a PyTorch float64 reference. */
#include "safetensors.h"
#include "test.h"

#include <string.h>

#define NKINDS 4
static const df_beta_kind all_kinds[NKINDS] = {DF_BETA_LINEAR, DF_BETA_SCALED_LINEAR, DF_BETA_COSINE,
                                               DF_BETA_SIGMOID};
_Static_assert(NKINDS == DF_BETA_COUNT, "a test for every schedule kind");

/* diffusers' default betas per kind (scaled_linear: Stable Diffusion's) */
static void default_betas(df_beta_kind k, double *b0, double *b1) {
    *b0 = k == DF_BETA_SCALED_LINEAR ? 0.00085 : 1e-4;
    *b1 = k == DF_BETA_SCALED_LINEAR ? 0.012 : 0.02;
}

static int init_kind(df_schedule *s, df_beta_kind k, int T, int zsnr) {
    double b0, b1;
    default_betas(k, &b0, &b1);
    df_status st = df_schedule_init(s, k, T, b0, b1, zsnr);
    CHECK(st == DF_OK, "schedule %s T=%d zsnr=%d: %s", df_beta_kind_name(k), T, zsnr, df_error());
    return st == DF_OK;
}

/* |a - b| relative to |b|; exact zeros compare absolutely */
static double rel(double a, double b) {
    double d = fabs(a - b);
    return b != 0 ? d / fabs(b) : d;
}

/* The arrays are consistent with the betas: alphas, cumulative products (an independent running
 * product), prev, square roots; SNR falls strictly. */
TEST(schedule_cumprod_and_snr) {
    for (int z = 0; z < 2; z++)
        for (int ki = 0; ki < NKINDS; ki++) {
            df_schedule s;
            if (!init_kind(&s, all_kinds[ki], 1000, z)) continue;
            const char *name = df_beta_kind_name(all_kinds[ki]);
            double worst = 0, worst_sqrt = 0, prod = 1;
            int wt = 0, decreasing = 1, bad_t = -1, bad_range = -1;
            for (int t = 0; t < s.T; t++) {
                prod *= 1 - s.betas[t];
                double r = rel(s.alphas_cumprod[t], prod);
                if (r > worst) worst = r, wt = t;
                if (!(s.betas[t] > 0 && s.betas[t] <= 1) || s.alphas[t] != 1 - s.betas[t]) bad_range = t;
                if (s.alphas_cumprod_prev[t] != (t ? s.alphas_cumprod[t - 1] : 1.0)) bad_range = t;
                worst_sqrt = fmax(worst_sqrt, rel(s.sqrt_alphas_cumprod[t] * s.sqrt_alphas_cumprod[t], s.alphas_cumprod[t]));
                worst_sqrt = fmax(worst_sqrt, fabs(s.sqrt_one_minus_alphas_cumprod[t] * s.sqrt_one_minus_alphas_cumprod[t] -
                                                   (1 - s.alphas_cumprod[t])));
                if (t > 0) {
                    double snr0 = df_schedule_snr(&s, t - 1), snr1 = df_schedule_snr(&s, t);
                    if (!(snr1 < snr0) && decreasing) decreasing = 0, bad_t = t;
                }
            }
            /* T rounding errors of 2^-53 each, relative: about 1e-13 after 1000 steps */
            CHECK(worst <= 1e-12, "%s zsnr=%d: alphas_cumprod vs product of (1 - beta): rel diff %.3g at t=%d", name, z,
                  worst, wt);
            CHECK(worst_sqrt <= 1e-15, "%s zsnr=%d: square roots off by %.3g", name, z, worst_sqrt);
            CHECK(bad_range < 0, "%s zsnr=%d: beta/alpha/prev inconsistent at t=%d", name, z, bad_range);
            CHECK(decreasing, "%s zsnr=%d: SNR not strictly decreasing at t=%d (%.17g then %.17g)", name, z, bad_t,
                  bad_t > 0 ? df_schedule_snr(&s, bad_t - 1) : 0, bad_t > 0 ? df_schedule_snr(&s, bad_t) : 0);
            df_schedule_free(&s);
        }
}

/* The posterior q(x_{t-1} | x_t, x_0) from Gaussian conditioning of the joint of (x_{t-1}, x_t) given
 * x_0, built only from the chain's definition: x_{t-1} = sqrt(abar_{t-1}) x_0 + sqrt(1 - abar_{t-1}) z,
 * x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) z'. With P = Var x_{t-1}, C = Cov = sqrt(alpha_t) P and
 * Q = Var x_t = alpha_t P + beta_t: E[x_{t-1} | x_t] = m1 + C/Q (x_t - m2), Var = P - C^2 / Q. */
TEST(schedule_posterior_vs_gaussian_conditioning) {
    for (int z = 0; z < 2; z++)
        for (int ki = 0; ki < NKINDS; ki++) {
            df_schedule s;
            if (!init_kind(&s, all_kinds[ki], 1000, z)) continue;
            const char *name = df_beta_kind_name(all_kinds[ki]);
            double wv = 0, w1 = 0, w2 = 0, wl = 0, wm = 0;
            int tv = 0, t1 = 0, t2 = 0;
            for (int t = 0; t < s.T; t++) {
                double abar_prev = 1;
                for (int i = 0; i < t; i++) abar_prev *= 1 - s.betas[i];
                double P = 1 - abar_prev, C = sqrt(1 - s.betas[t]) * P, Q = (1 - s.betas[t]) * P + s.betas[t];
                double var = P - C * C / Q;
                double coef2 = C / Q;                                          /* on x_t */
                double coef1 = sqrt(abar_prev) * (1 - coef2 * sqrt(1 - s.betas[t]));   /* on x_0 */
                /* P - C^2/Q cancels by up to a factor 1/beta_t (about 50): tolerances in units of that */
                double dv = fabs(s.posterior_variance[t] - var) / fmax(var, 1e-300);
                if (t == 0) dv = fabs(s.posterior_variance[t]);   /* exactly 0 */
                if (dv > wv) wv = dv, tv = t;
                if (rel(s.posterior_mean_coef1[t], coef1) > w1) w1 = rel(s.posterior_mean_coef1[t], coef1), t1 = t;
                if (rel(s.posterior_mean_coef2[t], coef2) > w2) w2 = rel(s.posterior_mean_coef2[t], coef2), t2 = t;
                double lv = log(s.posterior_variance[t ? t : 1]);
                wl = fmax(wl, fabs(s.posterior_log_variance_clipped[t] - lv));
                /* df_q_posterior's mean is the conditional mean at a few points */
                float x0 = 0.7f, xt[1] = {-0.3f}, mean;
                int ti = t;
                double v, logv;
                df_q_posterior(&s, 1, 1, &x0, xt, &ti, &mean, &v, &logv);
                double want = coef1 * x0 + coef2 * xt[0];
                wm = fmax(wm, fabs(mean - want) / (fabs(coef1 * x0) + fabs(coef2 * xt[0])));
                CHECK(v == s.posterior_variance[t] && logv == s.posterior_log_variance_clipped[t],
                      "%s: df_q_posterior variance at t=%d", name, t);
            }
            CHECK(wv <= 1e-12, "%s zsnr=%d: posterior variance vs Var(x_{t-1}|x_t,x_0): rel diff %.3g at t=%d", name, z, wv,
                  tv);
            CHECK(w1 <= 1e-12, "%s zsnr=%d: posterior_mean_coef1 vs conditioning: rel diff %.3g at t=%d", name, z, w1, t1);
            CHECK(w2 <= 1e-12, "%s zsnr=%d: posterior_mean_coef2 vs conditioning: rel diff %.3g at t=%d", name, z, w2, t2);
            CHECK(wl <= 1e-15, "%s zsnr=%d: clipped log variance off by %.3g", name, z, wl);
            CHECK(wm <= 2e-7, "%s zsnr=%d: df_q_posterior mean vs conditional mean: rel diff %.3g (float32)", name, z, wm);
            df_schedule_free(&s);
        }
}

/* Lin et al. 2024, alg. 1: abar[T-1] is exactly 0 and abar[0] exactly what it was; in between
 * sqrt(abar) is the same affine function of the original sqrt(abar). */
TEST(schedule_zero_terminal_snr) {
    for (int ki = 0; ki < NKINDS; ki++) {
        df_schedule a, z;
        if (!init_kind(&a, all_kinds[ki], 1000, 0)) continue;
        if (!init_kind(&z, all_kinds[ki], 1000, 1)) {
            df_schedule_free(&a);
            continue;
        }
        const char *name = df_beta_kind_name(all_kinds[ki]);
        int T = a.T;
        CHECK(z.alphas_cumprod[T - 1] == 0, "%s: zero-SNR abar[T-1] = %.3g, not 0", name, z.alphas_cumprod[T - 1]);
        CHECK(z.alphas_cumprod[0] == a.alphas_cumprod[0] && z.betas[0] == a.betas[0],
              "%s: zero-SNR changed abar[0] (%.17g vs %.17g) or beta[0]", name, z.alphas_cumprod[0], a.alphas_cumprod[0]);
        CHECK(z.betas[T - 1] == 1 && df_schedule_snr(&z, T - 1) == 0, "%s: last beta %.17g, last SNR %g", name,
              z.betas[T - 1], df_schedule_snr(&z, T - 1));
        double s0 = sqrt(a.alphas_cumprod[0]), sT = sqrt(a.alphas_cumprod[T - 1]), worst = 0;
        for (int t = 0; t < T; t++) {
            double want = (sqrt(a.alphas_cumprod[t]) - sT) / (s0 - sT) * s0;
            worst = fmax(worst, fabs(z.sqrt_alphas_cumprod[t] - want) / s0);
        }
        CHECK(worst <= 1e-14, "%s: rescaled sqrt(abar) is not the affine map of the original (diff %.3g)", name, worst);
        df_schedule_free(&a);
        df_schedule_free(&z);
    }
}

/* improved DDPM eq. 17: abar_t = f(t) / f(0) with f(u) = cos^2((u / T + s) / (1 + s) pi / 2) at the end
 * of step t, i.e. u = t + 1; betas capped at 0.999 (only the last one reaches the cap at T = 1000). */
TEST(schedule_cosine_formula) {
    const double pi = 3.14159265358979323846;
    for (int T = 50; T <= 1000; T += 950) {
        df_schedule s;
        if (!init_kind(&s, DF_BETA_COSINE, T, 0)) continue;
        double f0 = cos(0.008 / 1.008 * pi / 2), worst = 0, bmax = 0;
        f0 *= f0;
        int capped = 0, wt = 0;
        for (int t = 0; t < T; t++) {
            bmax = fmax(bmax, s.betas[t]);
            capped += s.betas[t] == 0.999;
            if (t == T - 1) break;   /* the capped step: abar there is the product, not the formula */
            double f = cos(((double)(t + 1) / T + 0.008) / 1.008 * pi / 2);
            double r = rel(s.alphas_cumprod[t], f * f / f0);
            if (r > worst) worst = r, wt = t;
        }
        CHECK(bmax <= 0.999, "cosine T=%d: largest beta %.17g above the cap", T, bmax);
        CHECK(capped == 1 && s.betas[T - 1] == 0.999, "cosine T=%d: %d capped betas (want only the last)", T, capped);
        CHECK(worst <= 1e-11, "cosine T=%d: abar vs cos^2 formula: rel diff %.3g at t=%d", T, worst, wt);
        CHECK_NEAR(s.alphas_cumprod[T - 1], s.alphas_cumprod[T - 2] * 0.001, 1e-15, "cosine: last abar after the cap");
        df_schedule_free(&s);
    }
}

/* Endpoints and shapes of the other kinds. */
TEST(schedule_endpoints) {
    df_schedule s;
    const int T = 1000;
    if (init_kind(&s, DF_BETA_LINEAR, T, 0)) {
        CHECK(s.betas[0] == 1e-4 && rel(s.betas[T - 1], 0.02) <= 1e-15, "linear endpoints %.17g %.17g", s.betas[0],
              s.betas[T - 1]);
        double worst = 0;
        for (int t = 1; t < T; t++) worst = fmax(worst, fabs(s.betas[t] - s.betas[t - 1] - (0.02 - 1e-4) / (T - 1)));
        CHECK(worst <= 1e-17, "linear: steps not constant (%.3g)", worst);
        df_schedule_free(&s);
    }
    if (init_kind(&s, DF_BETA_SCALED_LINEAR, T, 0)) {
        CHECK(rel(s.betas[0], 0.00085) <= 4e-16 && rel(s.betas[T - 1], 0.012) <= 4e-16,
              "scaled_linear endpoints %.17g %.17g", s.betas[0], s.betas[T - 1]);
        double worst = 0, step = (sqrt(0.012) - sqrt(0.00085)) / (T - 1);
        for (int t = 1; t < T; t++) worst = fmax(worst, fabs(sqrt(s.betas[t]) - sqrt(s.betas[t - 1]) - step));
        CHECK(worst <= 1e-15, "scaled_linear: sqrt(beta) not linear (%.3g)", worst);
        df_schedule_free(&s);
    }
    if (init_kind(&s, DF_BETA_SIGMOID, T, 0)) {
        double sig6 = 1 / (1 + exp(-6.0)), sigm6 = 1 / (1 + exp(6.0));
        CHECK(rel(s.betas[0], 1e-4 + (0.02 - 1e-4) * sigm6) <= 1e-14 &&
                  rel(s.betas[T - 1], 1e-4 + (0.02 - 1e-4) * sig6) <= 1e-14,
              "sigmoid endpoints %.17g %.17g", s.betas[0], s.betas[T - 1]);
        /* sigmoid(-x) = 1 - sigmoid(x): the betas are point-symmetric about the middle */
        double worst = 0;
        int increasing = 1;
        for (int t = 0; t < T; t++) {
            worst = fmax(worst, fabs(s.betas[t] + s.betas[T - 1 - t] - (1e-4 + 0.02)));
            if (t && !(s.betas[t] > s.betas[t - 1])) increasing = 0;
        }
        CHECK(worst <= 1e-16, "sigmoid: not symmetric (%.3g)", worst);
        CHECK(increasing, "sigmoid betas not increasing");
        df_schedule_free(&s);
    }
}

/* Read an F64 tensor exactly (st_read_f32 would round it). */
static int read_f64(const st_file *f, const char *name, double *dst, size_t count) {
    const st_tensor *t = st_find(f, name);
    if (!t || t->dtype != ST_F64 || (size_t)st_numel(t) != count) return 0;
    memcpy(dst, f->data + t->begin, count * sizeof(double));
    return 1;
}

/* diffusers' DDPMScheduler in float64 (tests/ref/schedules.py, PyTorch): every kind, with and without
 * zero terminal SNR, and one other T and beta range. */
TEST(schedule_vs_pytorch_reference) {
    static const struct {
        const char  *name;
        df_beta_kind kind;
        int          T;
        double       b0, b1;
        int          zsnr;
    } cases[] = {
        {"linear", DF_BETA_LINEAR, 1000, 1e-4, 0.02, 0},
        {"scaled_linear", DF_BETA_SCALED_LINEAR, 1000, 0.00085, 0.012, 0},
        {"cosine", DF_BETA_COSINE, 1000, 1e-4, 0.02, 0},
        {"sigmoid", DF_BETA_SIGMOID, 1000, 1e-4, 0.02, 0},
        {"linear_zsnr", DF_BETA_LINEAR, 1000, 1e-4, 0.02, 1},
        {"scaled_linear_zsnr", DF_BETA_SCALED_LINEAR, 1000, 0.00085, 0.012, 1},
        {"cosine_zsnr", DF_BETA_COSINE, 1000, 1e-4, 0.02, 1},
        {"sigmoid_zsnr", DF_BETA_SIGMOID, 1000, 1e-4, 0.02, 1},
        {"linear_T50", DF_BETA_LINEAR, 50, 1e-3, 0.2, 0},
    };
    char path[1024];
    snprintf(path, sizeof path, "%s/../tests/ref/schedules.safetensors", test_bin_dir());
    st_file f;
    if (st_open(path, &f) != DF_OK) {
        CHECK(0, "cannot read the reference (make it with tests/ref/schedules.py): %s", df_error());
        return;
    }
    static const char *const fields[] = {"betas", "alphas_cumprod", "posterior_variance", "coef1", "coef2"};
    double ref[1000];
    for (int c = 0; c < DF_COUNTOF(cases); c++) {
        df_schedule s;
        CHECK_OK(df_schedule_init(&s, cases[c].kind, cases[c].T, cases[c].b0, cases[c].b1, cases[c].zsnr));
        if (!s.betas) continue;
        const double *ours[] = {s.betas, s.alphas_cumprod, s.posterior_variance, s.posterior_mean_coef1,
                                s.posterior_mean_coef2};
        double case_worst = 0;
        for (int k = 0; k < DF_COUNTOF(fields); k++) {
            char name[128];
            snprintf(name, sizeof name, "%s.%s", cases[c].name, fields[k]);
            if (!read_f64(&f, name, ref, (size_t)s.T)) {
                CHECK(0, "%s: reference tensor %s missing or not F64[%d]", path, name, s.T);
                continue;
            }
            double worst = 0;
            int wt = 0;
            for (int t = 0; t < s.T; t++)
                if (rel(ours[k][t], ref[t]) > worst) worst = rel(ours[k][t], ref[t]), wt = t;
            /* both float64; evaluation orders differ (linspace, cumprod, the rescale): about T ulps,
             * amplified up to ~1/beta_0 where 1 - abar is formed near abar = 1 */
            CHECK(worst <= 1e-10, "%s: %s vs PyTorch: rel diff %.3g at t=%d (%.17g vs %.17g)", cases[c].name, fields[k],
                  worst, wt, ours[k][wt], ref[wt]);
            case_worst = fmax(case_worst, worst);
        }
        printf("    %-18s max rel diff vs PyTorch float64: %.2g\n", cases[c].name, case_worst);
        df_schedule_free(&s);
    }
    st_close(&f);
}

/* diffusers' float32 linear schedule (the golden file's alphas_cumprod) against ours in double. Bound
 * of the float32 error at step t (first order, u = 2^-24): each beta from float32 linspace is within
 * 4 u 0.02 of exact (two roundings of about 0.5 ulp plus the step's), 1 - beta rounds by u/2, and
 * each product of the cumprod rounds by u, all relative to 1 - beta >= 0.98:
 *   rel(t) <= (t + 1) (u/2 + 4 u 0.02) / 0.98 + t u. */
TEST(schedule_golden_float32_linear) {
    char path[1024];
    snprintf(path, sizeof path, "%s/fmnist-s/io.safetensors", test_golden_dir());
    st_file f;
    if (st_open(path, &f) != DF_OK) {
        CHECK(0, "golden file: %s", df_error());
        return;
    }
    const st_tensor *t = st_find(&f, "alphas_cumprod");
    float ac[1000];
    df_schedule s;
    if (!t || st_read_f32(&f, t, ac, 1000) != DF_OK || df_schedule_init_default(&s) != DF_OK) {
        CHECK(0, "golden alphas_cumprod [1000] unreadable: %s", df_error());
        st_close(&f);
        return;
    }
    const double u = ldexp(1, -24);
    double worst = 0, worst_ratio = 0;
    int wt = 0, wr = 0;
    for (int i = 0; i < 1000; i++) {
        double r = rel(ac[i], s.alphas_cumprod[i]);
        double bound = (i + 1) * (u / 2 + 4 * u * 0.02) / 0.98 + i * u;
        if (r > worst) worst = r, wt = i;
        if (r / bound > worst_ratio) worst_ratio = r / bound, wr = i;
        CHECK(r <= bound, "alphas_cumprod[%d]: float32 %.9g vs ours %.17g: rel diff %.3g > bound %.3g", i, ac[i],
              s.alphas_cumprod[i], r, bound);
    }
    printf("    golden float32 alphas_cumprod vs ours: max rel diff %.3g at t=%d; closest to the bound: %.0f%% of it at t=%d\n",
           worst, wt, 100 * worst_ratio, wr);
    df_schedule_free(&s);
    st_close(&f);
}

/* The continuous-time view: exact at integers, monotone between them, and sigma -> t inverts t -> sigma. */
TEST(schedule_fractional_t) {
    for (int z = 0; z < 2; z++)
        for (int ki = 0; ki < NKINDS; ki++) {
            df_schedule s;
            if (!init_kind(&s, all_kinds[ki], 1000, z)) continue;
            const char *name = df_beta_kind_name(all_kinds[ki]);
            int exact = 1, between = 1, bad = -1;
            double worst = 0, wt = 0;
            for (int i = 0; i < s.T; i++) {
                if (df_schedule_alpha_bar(&s, i) != s.alphas_cumprod[i]) exact = 0, bad = i;
                if (i == s.T - 1) break;
                for (int k = 1; k < 8; k++) {
                    double t = i + k / 8.0 + 1e-3 * (k == 1);
                    double ab = df_schedule_alpha_bar(&s, t);
                    if (!(ab <= s.alphas_cumprod[i] && ab >= s.alphas_cumprod[i + 1])) between = 0, bad = i;
                    double back = df_schedule_t_for_sigma(&s, df_schedule_sigma(&s, t));
                    if (fabs(back - t) > worst) worst = fabs(back - t), wt = t;
                }
            }
            CHECK(exact, "%s zsnr=%d: alpha_bar(%d) is not alphas_cumprod exactly", name, z, bad);
            CHECK(between, "%s zsnr=%d: alpha_bar between %d and %d outside its neighbours", name, z, bad, bad + 1);
            CHECK(worst <= 1e-9, "%s zsnr=%d: t_for_sigma(sigma(t)) off by %.3g at t=%.4f", name, z, worst, wt);
            /* clamping at the ends */
            CHECK(df_schedule_t_for_sigma(&s, 1e-9) == 0 && df_schedule_t_for_sigma(&s, 1e300) == s.T - 1,
                  "%s zsnr=%d: t_for_sigma not clamped to [0, T-1]", name, z);
            df_schedule_free(&s);
        }
}

TEST(schedule_names_and_bad_arguments) {
    for (int k = 0; k < DF_BETA_COUNT; k++) {
        df_beta_kind got = DF_BETA_COUNT;
        CHECK_OK(df_beta_kind_parse(df_beta_kind_name((df_beta_kind)k), &got));
        CHECK(got == (df_beta_kind)k, "parse(name(%d)) = %d", k, (int)got);
    }
    df_beta_kind got = DF_BETA_LINEAR;
    CHECK(df_beta_kind_parse("cosine", &got) == DF_OK && got == DF_BETA_COSINE, "\"cosine\" is squaredcos_cap_v2");
    CHECK(strcmp(df_beta_kind_name(DF_BETA_COUNT), "unknown") == 0, "name of an out-of-range kind");
    CHECK(df_beta_kind_parse("quadratic", &got) == DF_ERR_ARG && strstr(df_error(), "quadratic"),
          "unknown schedule name refused with a message naming it: \"%s\"", df_error());

    df_schedule s;
    CHECK(df_schedule_init(&s, DF_BETA_LINEAR, 1, 1e-4, 0.02, 0) == DF_ERR_ARG && strstr(df_error(), "T = 1"),
          "T = 1 refused with a message: \"%s\"", df_error());
    CHECK(s.betas == NULL, "a refused schedule holds no arrays");
    CHECK(df_schedule_init(&s, DF_BETA_LINEAR, 1000, 0.02, 1e-4, 0) == DF_ERR_ARG && strstr(df_error(), "0.02"),
          "beta_end < beta_start refused with a message: \"%s\"", df_error());
    CHECK(df_schedule_init(&s, DF_BETA_SIGMOID, 1000, 0, 0.02, 0) == DF_ERR_ARG, "beta_start 0 refused");
    CHECK(df_schedule_init(&s, DF_BETA_LINEAR, 1000, 1e-4, 1.0, 0) == DF_ERR_ARG, "beta_end 1 refused");
    CHECK(df_schedule_init(&s, DF_BETA_COUNT, 1000, 1e-4, 0.02, 0) == DF_ERR_ARG, "unknown kind refused");
    /* the cosine schedule ignores the betas it is given */
    CHECK(df_schedule_init(&s, DF_BETA_COSINE, 1000, 0, 0, 0) == DF_OK, "cosine with betas 0: %s", df_error());
    df_schedule_free(&s);
    df_schedule_free(&s);   /* a freed (zeroed) schedule can be freed again */
    df_schedule_free(NULL);
    CHECK_OK(df_schedule_init_default(&s));
    CHECK(s.T == 1000 && s.kind == DF_BETA_LINEAR && s.beta_start == 1e-4 && s.beta_end == 0.02 && !s.zero_terminal_snr,
          "default schedule is DDPM's");
    df_schedule_free(&s);
}
