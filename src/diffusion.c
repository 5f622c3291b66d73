/* The forward process q (closed-form marginals, single steps, the Gaussian posterior), conversions
 * between what a network predicts (eps, x_0, v), training targets and weights, and the variational bound. */
#include "internal.h"

#include <math.h>
#include <string.h>

/* not in strict C11's math.h */
#define LN2 0.69314718055994530942
#define SQRT2 1.41421356237309504880
#define LOG_SQRT_2PI 0.91893853320467274178

/* ---- the forward process ------------------------------------------------------------------------- */

static void check_t(const df_schedule *s, int t) { DF_ASSERT(t >= 0 && t < s->T); }

void df_q_sample(const df_schedule *s, int n, size_t dim, const float *x0, const float *noise, const int *t,
                 float *xt) {
    for (int i = 0; i < n; i++) {
        check_t(s, t[i]);
        /* DDPM eq. 4: q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) */
        double a = s->sqrt_alphas_cumprod[t[i]], b = s->sqrt_one_minus_alphas_cumprod[t[i]];
        const size_t o = (size_t)i * dim;
        for (size_t j = 0; j < dim; j++) xt[o + j] = (float)(a * x0[o + j] + b * noise[o + j]);
    }
}

void df_q_step(const df_schedule *s, int n, size_t dim, const float *x_prev, const float *noise, const int *t,
               float *xt) {
    for (int i = 0; i < n; i++) {
        check_t(s, t[i]);
        /* DDPM eq. 2: q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I) */
        double a = sqrt(s->alphas[t[i]]), b = sqrt(s->betas[t[i]]);
        const size_t o = (size_t)i * dim;
        for (size_t j = 0; j < dim; j++) xt[o + j] = (float)(a * x_prev[o + j] + b * noise[o + j]);
    }
}

void df_q_posterior(const df_schedule *s, int n, size_t dim, const float *x0, const float *xt, const int *t,
                    float *mean, double *var, double *logvar) {
    for (int i = 0; i < n; i++) {
        check_t(s, t[i]);
        /* DDPM eqs. 6-7: mu~_t = coef1 x_0 + coef2 x_t, beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t) */
        double c1 = s->posterior_mean_coef1[t[i]], c2 = s->posterior_mean_coef2[t[i]];
        const size_t o = (size_t)i * dim;
        if (mean)
            for (size_t j = 0; j < dim; j++) mean[o + j] = (float)(c1 * x0[o + j] + c2 * xt[o + j]);
        if (var) var[i] = s->posterior_variance[t[i]];
        if (logvar) logvar[i] = s->posterior_log_variance_clipped[t[i]];
    }
}

/* ---- parameterisations --------------------------------------------------------------------------- */

static const char *const prediction_names[] = {"epsilon", "sample", "v_prediction"};
_Static_assert(sizeof(prediction_names) / sizeof(prediction_names[0]) == DF_PRED_COUNT, "prediction name table");

const char *df_prediction_name(df_prediction p) {
    return (unsigned)p < DF_PRED_COUNT ? prediction_names[p] : "unknown";
}

df_status df_prediction_parse(const char *name, df_prediction *p) {
    for (int i = 0; i < DF_PRED_COUNT; i++)
        if (name && strcmp(name, prediction_names[i]) == 0) {
            *p = (df_prediction)i;
            return DF_OK;
        }
    return df_fail(DF_ERR_ARG, "unknown prediction type \"%s\" (epsilon, sample, v_prediction)",
                   name ? name : "(null)");
}

/* With a = sqrt(abar), s = sqrt(1 - abar) and x_t = a x_0 + s eps (so a^2 + s^2 = 1):
 *   eps:    x_0 = (x_t - s eps) / a
 *   sample: eps = (x_t - a x_0) / s
 *   v:      v = a eps - s x_0 gives x_0 = a x_t - s v and eps = s x_t + a v (Salimans & Ho 2022, sec. 4)
 * abar = 0 (the last step of a zero-terminal-SNR schedule) leaves x_0 undetermined by an eps
 * prediction; we return x_0 = 0 there rather than inf or NaN (v or sample prediction is what such
 * schedules are meant for). abar = 1 never occurs (beta > 0), so s > 0. */
void df_pred_to_eps_x0(df_prediction p, int n, size_t dim, const float *xt, const double *abar, const float *out,
                       float *eps, float *x0) {
    DF_ASSERT((unsigned)p < DF_PRED_COUNT);
    for (int i = 0; i < n; i++) {
        DF_ASSERT(abar[i] >= 0 && abar[i] <= 1);
        const double a = sqrt(abar[i]), s = sqrt(1 - abar[i]);
        const size_t o = (size_t)i * dim;
        for (size_t j = 0; j < dim; j++) {
            const double x = xt[o + j], f = out[o + j];
            double e, z;
            switch (p) {
            case DF_PRED_EPSILON: e = f, z = a > 0 ? (x - s * f) / a : 0; break;
            case DF_PRED_SAMPLE: z = f, e = s > 0 ? (x - a * f) / s : 0; break;
            default: z = a * x - s * f, e = s * x + a * f; break;
            }
            if (eps) eps[o + j] = (float)e;
            if (x0) x0[o + j] = (float)z;
        }
    }
}

void df_training_target(const df_schedule *s, df_prediction p, int n, size_t dim, const float *x0,
                        const float *noise, const int *t, float *target) {
    DF_ASSERT((unsigned)p < DF_PRED_COUNT);
    for (int i = 0; i < n; i++) {
        check_t(s, t[i]);
        const double a = s->sqrt_alphas_cumprod[t[i]], b = s->sqrt_one_minus_alphas_cumprod[t[i]];
        const size_t o = (size_t)i * dim;
        for (size_t j = 0; j < dim; j++) {
            switch (p) {
            case DF_PRED_EPSILON: target[o + j] = noise[o + j]; break;
            case DF_PRED_SAMPLE: target[o + j] = x0[o + j]; break;
            default: target[o + j] = (float)(a * noise[o + j] - b * x0[o + j]); break;
            }
        }
    }
}

/* Min-SNR-gamma (Hang et al. 2023, eq. 10) weights the x_0 loss by min(SNR, gamma). The eps loss is SNR
 * times the x_0 loss and the v loss (SNR + 1) times it, hence the divisions. min(SNR, gamma) / SNR is
 * written as 1 or gamma / SNR so that SNR = 0 (zero terminal SNR) gives its limit 1, not 0 / 0. */
double df_loss_weight(const df_schedule *s, df_prediction p, int t, double min_snr_gamma) {
    check_t(s, t);
    if (!(min_snr_gamma > 0)) return 1;
    const double abar = s->alphas_cumprod[t], snr = abar / (1 - abar), m = fmin(snr, min_snr_gamma);
    switch (p) {
    case DF_PRED_EPSILON: return snr <= min_snr_gamma ? 1 : min_snr_gamma / snr;
    case DF_PRED_SAMPLE: return m;
    default: return m / (snr + 1);
    }
}

/* ---- the variational bound ----------------------------------------------------------------------- */

/* log(1 - exp(d)) for d <= 0, accurate near both ends (Maechler 2012). */
static double log1mexp(double d) { return d > -LN2 ? log(-expm1(d)) : log1p(-exp(d)); }

/* log Phi(x), the standard normal log-CDF, finite far into the lower tail where Phi underflows. */
static double log_ndtr(double x) {
    if (x > 0) return log1p(-0.5 * erfc(x / SQRT2));
    if (x > -30) return log(0.5 * erfc(-x / SQRT2));
    /* Mills' ratio: Phi(x) = phi(x) / |x| (1 - 1/x^2 + 3/x^4 - 15/x^6 + 105/x^8 - ...); at x <= -30
     * the next term is below 1e-12 relative */
    double r = 1 / (x * x);
    double series = 1 - r * (1 - r * (3 - r * (15 - 105 * r)));
    return -0.5 * x * x - log(-x) - LOG_SQRT_2PI + log(series);
}

/* log(Phi(b) - Phi(a)) for a < b (either may be infinite), without cancellation in the tails: in the
 * lower tail from the two log-CDFs, in the upper tail by symmetry, across 0 from erf. */
static double log_normal_interval(double a, double b) {
    if (b <= 0) {
        double lb = log_ndtr(b);
        return lb + log1mexp(log_ndtr(a) - lb);
    }
    if (a >= 0) return log_normal_interval(-b, -a);
    return log(0.5 * (erf(b / SQRT2) - erf(a / SQRT2)));
}

/* improved DDPM's decoder: log p(x_0 | x_1) with x_0 on the 256-level grid of [-1, 1]; the bin of a
 * value is +-1/255 around it, and the end bins reach to -inf and +inf (DDPM sec. 3.3, eq. 13). */
static double discretized_gaussian_log_prob(double x, double mean, double sd, double z[2]) {
    double lo = x < -0.999 ? -INFINITY : (x - 1.0 / 255 - mean) / sd;
    double hi = x > 0.999 ? INFINITY : (x + 1.0 / 255 - mean) / sd;
    if (z) z[0] = lo, z[1] = hi;   /* the bin's standardised ends, for a gradient */
    return log_normal_interval(lo, hi);
}

/* KL(N(m1, v1) || N(m2, v2)) in nats for one dimension is 0.5 (v1/v2 - 1 - log(v1/v2) + (m1 - m2)^2 / v2).
 * The variances are the same for every sample at one t, so the caller computes the variance part once;
 * with r = log v1 - log v2 it is expm1(r) - r, which does not cancel when v1 ~ v2. */
static double kl_variance_part(double logv1, double logv2) {
    double r = logv1 - logv2;
    return expm1(r) - r;
}

double df_learned_log_variance(const df_schedule *s, int t, double v) {
    check_t(s, t);
    /* improved DDPM eq. 15: v in [-1, 1] interpolates the log variance between beta~_t and beta_t */
    const double frac = (v + 1) / 2;
    return frac * log(s->betas[t]) + (1 - frac) * s->posterior_log_variance_clipped[t];
}

/* x_0 from one value of a prediction (what df_pred_to_eps_x0 does, in double), a = sqrt(abar), b = sqrt(1 - abar). */
static double x0_of(df_prediction p, double a, double b, double xt, double f) {
    switch (p) {
    case DF_PRED_EPSILON: return a > 0 ? (xt - b * f) / a : 0;
    case DF_PRED_SAMPLE: return f;
    default: return a * xt - b * f;
    }
}

/* One dimension of the bound's term at t in nats, for p(x_{t-1} | x_t) = N(mu~_t(x_t, xh), exp(logv_p)): the
 * KL from the posterior for t > 0, the discretised decoder's -log p(x_0 | x_1) for t = 0 (the same formulas as
 * vlb_terms). *dlogv (may be NULL) receives its derivative with respect to logv_p. */
static double vlb_nats(const df_schedule *s, int t, double x, double y, double xh, double logv_p, double *dlogv) {
    const double c1 = s->posterior_mean_coef1[t], c2 = s->posterior_mean_coef2[t];
    if (t > 0) {
        const double logv_q = s->posterior_log_variance_clipped[t], d = c1 * (x - xh), q = d * d * exp(-logv_p);
        /* 0.5 (expm1(r) - r + d^2 / v_p) with r = logv_q - logv_p; d/dlogv_p = 0.5 (1 - exp(r) - d^2 / v_p) */
        if (dlogv) *dlogv = 0.5 * (-expm1(logv_q - logv_p) - q);
        return 0.5 * (kl_variance_part(logv_q, logv_p) + q);
    }
    double z[2];
    const double lp = discretized_gaussian_log_prob(x, c1 * xh + c2 * y, exp(0.5 * logv_p), z), lo = z[0], hi = z[1];
    if (dlogv) {
        /* the bin's ends z move as -z/2 with logv_p: d(-log P)/dlogv_p = (hi phi(hi) - lo phi(lo)) / (2 P),
         * each ratio phi(z) / P formed in logs (an infinite end contributes 0) */
        double g = 0;
        if (isfinite(hi)) g += hi * exp(-0.5 * hi * hi - LOG_SQRT_2PI - lp);
        if (isfinite(lo)) g -= lo * exp(-0.5 * lo * lo - LOG_SQRT_2PI - lp);
        *dlogv = 0.5 * g;
    }
    return -lp;
}

/* The per-t constants of one sample of the hybrid loss. */
typedef struct {
    double a, b, max_log, min_log, to_bpd, inv_dim;
} hybrid_t;

static hybrid_t hybrid_consts(const df_schedule *s, int t, size_t dim) {
    return (hybrid_t){sqrt(s->alphas_cumprod[t]), sqrt(1 - s->alphas_cumprod[t]), log(s->betas[t]),
                      s->posterior_log_variance_clipped[t], 1 / ((double)dim * LN2), 1 / (double)dim};
}

/* One dimension: adds its L_simple and L_vlb (bits/dim) parts and returns their gradients with respect to the
 * prediction f and v (the mean's prediction fz under the stop-gradient). */
static void hybrid_elem(const df_schedule *s, df_prediction p, int t, const hybrid_t *c, double x, double y,
                        double target, double f, double fz, double v, double *simple, double *vlb, double *df_,
                        double *dv) {
    const double e = f - target, frac = (v + 1) / 2, logv = frac * c->max_log + (1 - frac) * c->min_log;
    double dlogv;
    *simple += e * e * c->inv_dim;
    *vlb += vlb_nats(s, t, x, y, x0_of(p, c->a, c->b, y, fz), logv, &dlogv) * c->to_bpd;
    *df_ = 2 * e * c->inv_dim;
    *dv = dlogv * c->to_bpd * 0.5 * (c->max_log - c->min_log);
}

double df_hybrid_sample(const df_schedule *s, df_prediction p, int t, size_t dim, const double *x0, const double *xt,
                        const double *target, const double *out, const double *frozen, double vlb_scale,
                        double *simple, double *vlb, double *grad) {
    check_t(s, t);
    const hybrid_t c = hybrid_consts(s, t, dim);
    double ls = 0, lv = 0;
    for (size_t j = 0; j < dim; j++) {
        double gf, gv;
        hybrid_elem(s, p, t, &c, x0[j], xt[j], target[j], out[j], frozen[j], out[dim + j], &ls, &lv, &gf, &gv);
        if (grad) grad[j] = gf, grad[dim + j] = vlb_scale * gv;
    }
    if (simple) *simple = ls;
    if (vlb) *vlb = lv;
    return ls + vlb_scale * lv;
}

df_status df_hybrid_loss(const df_schedule *s, df_prediction p, int n, size_t dim, const float *x0, const float *xt,
                         const int *t, const float *target, const float *out, const float *weights,
                         const float *simple_weights, double vlb_weight, double *loss, float *simple, float *vlb,
                         float *dout) {
    if (!s || !s->betas || !x0 || !xt || !t || !target || !out || n < 1 || dim < 1 || (unsigned)p >= DF_PRED_COUNT ||
        !(vlb_weight >= 0))
        return df_fail(DF_ERR_ARG, "hybrid loss: bad arguments (n = %d, dim = %zu, vlb weight %g)", n, dim, vlb_weight);
    for (int i = 0; i < n; i++)
        if (t[i] < 0 || t[i] >= s->T) return df_fail(DF_ERR_ARG, "hybrid loss: timestep %d out of 0..%d", t[i], s->T - 1);
    double total = 0;
    for (int i = 0; i < n; i++) {
        const hybrid_t c = hybrid_consts(s, t[i], dim);
        const double wi = weights ? weights[i] : 1, ws = simple_weights ? simple_weights[i] : 1;
        const double vs = vlb_weight * s->T;   /* T L_t: the whole bound's one-term estimate */
        const size_t o = (size_t)i * dim, o2 = 2 * o;
        double ls = 0, lv = 0;
        for (size_t j = 0; j < dim; j++) {
            double gf, gv;
            const float f = out[o2 + j];
            hybrid_elem(s, p, t[i], &c, x0[o + j], xt[o + j], target[o + j], f, f, out[o2 + dim + j], &ls, &lv, &gf, &gv);
            if (dout) dout[o2 + j] = (float)(wi * ws * gf / n), dout[o2 + dim + j] = (float)(wi * vs * gv / n);
        }
        if (simple) simple[i] = (float)ls;
        if (vlb) vlb[i] = (float)lv;
        total += wi * (ws * ls + vs * lv);
    }
    if (loss) *loss = total / n;
    return DF_OK;
}

/* Scratch of the bound's terms for n samples of dim values. */
typedef struct {
    float  *noise, *xt, *out, *x0hat, *tf;
    double *abar, *nats;   /* per sample */
    int    *ti;            /* per sample */
} vlb_work;

static void vlb_work_free(vlb_work *w) {
    free(w->noise), free(w->xt), free(w->out), free(w->x0hat), free(w->tf), free(w->abar), free(w->nats), free(w->ti);
}

static df_status vlb_work_init(vlb_work *w, int n, size_t dim) {
    const size_t nd = (size_t)n * dim;
    w->noise = malloc(sizeof(float) * nd), w->xt = malloc(sizeof(float) * nd), w->out = malloc(sizeof(float) * 2 * nd);
    w->x0hat = malloc(sizeof(float) * nd), w->tf = malloc(sizeof(float) * (size_t)n);
    w->abar = malloc(sizeof(double) * (size_t)n), w->nats = malloc(sizeof(double) * (size_t)n);
    w->ti = malloc(sizeof(int) * (size_t)n);
    if (w->noise && w->xt && w->out && w->x0hat && w->tf && w->abar && w->nats && w->ti) return DF_OK;
    vlb_work_free(w);
    memset(w, 0, sizeof *w);   /* the caller frees it again on its way out */
    return df_fail(DF_ERR_NOMEM, "vlb: out of memory for %d samples of %zu values", n, dim);
}

/* L_T = KL(q(x_T | x_0) || N(0, I)) (DDPM eq. 5) per sample in nats, closed form: q(x_T | x_0) =
 * N(sqrt(abar) x_0, (1 - abar) I). Per dim, 0.5 (v - 1 - log v + m^2) with v = 1 - abar, written so that v
 * near 1 does not cancel. */
static void vlb_prior(const df_schedule *s, int n, size_t dim, const float *x0, double *nats) {
    const double ab = s->alphas_cumprod[s->T - 1], vpart = -(ab + log1p(-ab));
    for (int i = 0; i < n; i++) {
        double kl = 0;
        for (size_t j = 0; j < dim; j++) {
            double m = sqrt(ab) * x0[(size_t)i * dim + j];
            kl += 0.5 * (vpart + m * m);
        }
        nats[i] = kl;
    }
}

/* The bound's term at each sample's own timestep ti[i] in nats (summed over dims): a fresh x_t ~
 * q(x_t | x_0), one network call on all n samples; t = 0 gives L_0, t >= 1 the KL term L_{t-1} in DDPM's
 * numbering. */
static df_status vlb_terms(const df_schedule *s, df_prediction p, df_denoise_fn fn, void *ctx, int n, size_t dim,
                           const float *x0, const int *ti, int variance_large, df_rng *rng, vlb_work *w, double *nats) {
    df_rng_fill_normal(rng, w->noise, (size_t)n * dim);
    for (int i = 0; i < n; i++) w->tf[i] = (float)ti[i], w->abar[i] = s->alphas_cumprod[ti[i]];
    df_q_sample(s, n, dim, x0, w->noise, ti, w->xt);
    df_status st = fn(ctx, n, w->xt, w->tf, w->out);
    if (st != DF_OK) {
        char why[256];
        snprintf(why, sizeof why, "%s", df_error());
        return df_fail(st, "vlb: denoise function failed at t = %d: %s", ti[0], why);
    }
    const int learned = variance_large == DF_VARIANCE_LEARNED;
    if (learned)   /* per sample: the prediction is the first half of its 2 dim values */
        for (int i = 0; i < n; i++)
            df_pred_to_eps_x0(p, 1, dim, w->xt + (size_t)i * dim, &w->abar[i], w->out + 2 * (size_t)i * dim, NULL,
                              w->x0hat + (size_t)i * dim);
    else df_pred_to_eps_x0(p, n, dim, w->xt, w->abar, w->out, NULL, w->x0hat);
    for (int i = 0; i < n; i++) {
        const int t = ti[i];
        const size_t o = (size_t)i * dim;
        if (learned) {   /* the network's variance, per dimension (improved DDPM eq. 15) */
            const float *v = w->out + 2 * o + dim;
            double sum = 0;
            for (size_t j = 0; j < dim; j++)
                sum += vlb_nats(s, t, x0[o + j], w->xt[o + j], fmin(fmax((double)w->x0hat[o + j], -1.0), 1.0),
                                df_learned_log_variance(s, t, v[j]), NULL);
            nats[i] = sum;
            continue;
        }
        /* p(x_{t-1} | x_t) = N(mu~_t(x_t, x0_hat), sigma_t^2): DDPM eq. 11 written through the posterior
         * mean (eqs. 7 and 15), with x0_hat clipped to the data range as improved DDPM does. The variance
         * is beta~_t ("fixed small") or beta_t ("fixed large"); at t = 0 both use beta~_1, as improved
         * DDPM does for its decoder (beta~_0 = 0). */
        const double c1 = s->posterior_mean_coef1[t], c2 = s->posterior_mean_coef2[t];
        const double logv_q = s->posterior_log_variance_clipped[t];
        const double logv_p = t == 0           ? log(s->posterior_variance[1])
                              : variance_large ? log(s->betas[t])
                                               : logv_q;
        const double sd_p = exp(0.5 * logv_p), inv_var_p = exp(-logv_p), kl_var = kl_variance_part(logv_q, logv_p);
        double v = 0;
        for (size_t j = 0; j < dim; j++) {
            double xh = fmin(fmax((double)w->x0hat[o + j], -1.0), 1.0);
            double x = x0[o + j], y = w->xt[o + j];
            if (t == 0) {   /* L_0 = -log p(x_0 | x_1), the discretised decoder (DDPM eq. 13) */
                v -= discretized_gaussian_log_prob(x, c1 * xh + c2 * y, sd_p, NULL);
            } else {        /* L_{t-1} in DDPM's numbering: KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) */
                double d = c1 * (x - xh);   /* the means differ only in x_0: the c2 x_t parts cancel */
                v += 0.5 * (kl_var + d * d * inv_var_p);
            }
        }
        nats[i] = v;
    }
    return DF_OK;
}

df_status df_vlb_bpd(const df_schedule *s, df_prediction p, df_denoise_fn fn, void *ctx, int n, size_t dim,
                     const float *x0, int variance_large, df_rng *rng, double *bpd, double *terms) {
    if (!s || !s->betas || !fn || !x0 || !rng || !bpd || n < 1 || dim < 1 || (unsigned)p >= DF_PRED_COUNT)
        return df_fail(DF_ERR_ARG, "vlb: bad arguments (n = %d, dim = %zu, prediction %d)", n, dim, (int)p);
    const int T = s->T;
    /* every term in nats over all dims, divided by this, is in bits/dim */
    const double to_bpd = 1 / ((double)dim * LN2);
    vlb_work w;
    df_status st = vlb_work_init(&w, n, dim);
    int *ti = w.ti;
    double *nats = w.nats;
    if (!st) {
        vlb_prior(s, n, dim, x0, nats);
        double mean_term = 0;
        for (int i = 0; i < n; i++) bpd[i] = nats[i] * to_bpd, mean_term += bpd[i];
        if (terms) terms[T] = mean_term / n;
    }
    /* One term per t, as improved DDPM's calc_bpd_loop: a fresh x_t ~ q(x_t | x_0) per term, the network
     * on all n samples at once, from the noisiest step down. */
    for (int t = T - 1; t >= 0 && st == DF_OK; t--) {
        for (int i = 0; i < n; i++) ti[i] = t;
        st = vlb_terms(s, p, fn, ctx, n, dim, x0, ti, variance_large, rng, &w, nats);
        double mean_term = 0;
        for (int i = 0; i < n && !st; i++) {
            double b = nats[i] * to_bpd;
            bpd[i] += b;
            mean_term += b;
        }
        if (terms && !st) terms[t] = mean_term / n;
    }
    vlb_work_free(&w);
    return st;
}

df_status df_vlb_bpd_strata(const df_schedule *s, df_prediction p, df_denoise_fn fn, void *ctx, int n, size_t dim,
                            const float *x0, int variance_large, int strata, df_rng *rng, double *bpd) {
    if (!s || !s->betas || !fn || !x0 || !rng || !bpd || n < 1 || dim < 1 || (unsigned)p >= DF_PRED_COUNT || strata < 1)
        return df_fail(DF_ERR_ARG, "vlb: bad arguments (n = %d, dim = %zu, strata %d)", n, dim, strata);
    const int T = s->T, K = DF_MIN(strata, T - 1);
    const double to_bpd = 1 / ((double)dim * LN2);
    vlb_work w;
    df_status st = vlb_work_init(&w, n, dim);
    int *ti = w.ti;
    double *nats = w.nats;
    if (!st) {
        vlb_prior(s, n, dim, x0, nats);
        for (int i = 0; i < n; i++) bpd[i] = nats[i] * to_bpd;
    }
    /* L_0 always: it is the largest single term. Then t = 1 .. T-1 in K ranges [lo, hi): each sample draws
     * its own t in each range, and its term stands for the range's hi - lo terms (stratified sampling: an
     * unbiased estimate of their sum, with less variance than uniform t). */
    for (int k = -1; k < K && !st; k++) {
        const int lo = k < 0 ? 0 : 1 + (int)((long)k * (T - 1) / K), hi = k < 0 ? 1 : 1 + (int)((long)(k + 1) * (T - 1) / K);
        for (int i = 0; i < n; i++) ti[i] = lo + (int)(df_rng_uniform(rng) * (hi - lo));
        st = vlb_terms(s, p, fn, ctx, n, dim, x0, ti, variance_large, rng, &w, nats);
        for (int i = 0; i < n && !st; i++) bpd[i] += (hi - lo) * nats[i] * to_bpd;
    }
    vlb_work_free(&w);
    return st;
}
