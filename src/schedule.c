/* Noise schedules: the betas of the forward chain (linear, scaled linear, cosine, sigmoid; optionally
 * rescaled to zero terminal SNR) and the quantities derived from them, all in double precision. */
#include "internal.h"

#include <math.h>
#include <string.h>

static const char *const beta_names[DF_BETA_COUNT] = {"linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"};

const char *df_beta_kind_name(df_beta_kind kind) {
    return (unsigned)kind < DF_BETA_COUNT ? beta_names[kind] : "unknown";
}

df_status df_beta_kind_parse(const char *name, df_beta_kind *kind) {
    for (int i = 0; i < DF_BETA_COUNT; i++)
        if (strcmp(name, beta_names[i]) == 0) {
            *kind = (df_beta_kind)i;
            return DF_OK;
        }
    if (strcmp(name, "cosine") == 0) {
        *kind = DF_BETA_COSINE;
        return DF_OK;
    }
    return df_fail(DF_ERR_ARG, "unknown beta schedule \"%s\" (linear, scaled_linear, squaredcos_cap_v2, sigmoid)",
                   name);
}

void df_schedule_free(df_schedule *s) {
    if (!s) return;
    free(s->betas);   /* every array lives in this one block */
    memset(s, 0, sizeof *s);
}

/* improved DDPM eq. 17: abar(t) = f(t) / f(0), f(t) = cos^2((t/T + s) / (1 + s) * pi / 2), s = 0.008 */
static double cosine_alpha_bar(double u) {
    double c = cos((u + 0.008) / 1.008 * 1.5707963267948966);
    return c * c;
}

df_status df_schedule_init(df_schedule *s, df_beta_kind kind, int T, double beta_start, double beta_end,
                           int zero_terminal_snr) {
    memset(s, 0, sizeof *s);
    if (T < 2 || T > 100000) return df_fail(DF_ERR_ARG, "schedule: T = %d must be in 2..100000", T);
    if ((unsigned)kind >= DF_BETA_COUNT) return df_fail(DF_ERR_ARG, "schedule: unknown kind %d", (int)kind);
    if (kind != DF_BETA_COSINE && !(beta_start > 0 && beta_end >= beta_start && beta_end < 1))
        return df_fail(DF_ERR_ARG, "schedule: betas %g to %g must satisfy 0 < start <= end < 1", beta_start,
                       beta_end);
    const int narrays = 11;
    double *block = calloc((size_t)narrays * T, sizeof(double));
    if (!block) return df_fail(DF_ERR_NOMEM, "schedule: out of memory");
    double **arrays[] = {&s->betas, &s->alphas, &s->alphas_cumprod, &s->alphas_cumprod_prev,
                         &s->sqrt_alphas_cumprod, &s->sqrt_one_minus_alphas_cumprod, &s->posterior_variance,
                         &s->posterior_log_variance_clipped, &s->posterior_mean_coef1, &s->posterior_mean_coef2};
    for (int i = 0; i < DF_COUNTOF(arrays); i++) *arrays[i] = block + (size_t)i * T;
    s->T = T, s->kind = kind, s->beta_start = beta_start, s->beta_end = beta_end;
    s->zero_terminal_snr = zero_terminal_snr;
    double *b = s->betas;
    for (int i = 0; i < T; i++) {
        double u = (double)i / (T - 1);
        switch (kind) {
        case DF_BETA_LINEAR:
            b[i] = beta_start + (beta_end - beta_start) * u;
            break;
        case DF_BETA_SCALED_LINEAR: {
            double r = sqrt(beta_start) + (sqrt(beta_end) - sqrt(beta_start)) * u;
            b[i] = r * r;
            break;
        }
        case DF_BETA_COSINE:
            b[i] = fmin(1 - cosine_alpha_bar((double)(i + 1) / T) / cosine_alpha_bar((double)i / T), 0.999);
            break;
        case DF_BETA_SIGMOID:
            b[i] = beta_start + (beta_end - beta_start) / (1 + exp(-(-6 + 12 * u)));
            break;
        case DF_BETA_COUNT:
            DF_ASSERT(0);
        }
    }
    double *ac = s->alphas_cumprod;
    double prod = 1;
    for (int i = 0; i < T; i++) ac[i] = prod *= 1 - b[i];
    if (zero_terminal_snr) {
        /* Lin et al. 2024, alg. 1: shift and scale sqrt(abar) so the last is 0 and the first unchanged.
         * The two ends are set rather than computed: sqrt-then-square and (x a0) / x round, and the
         * algorithm's point is that abar[0] (hence beta[0]) stays exactly what it was. */
        double a0 = sqrt(ac[0]), aT = sqrt(ac[T - 1]);
        for (int i = 1; i < T - 1; i++) {
            double r = (sqrt(ac[i]) - aT) * a0 / (a0 - aT);
            ac[i] = r * r;
        }
        ac[T - 1] = 0;
        for (int i = 1; i < T; i++) b[i] = 1 - ac[i] / ac[i - 1];
    }
    for (int i = 0; i < T; i++) {
        double prev = i ? ac[i - 1] : 1.0;
        s->alphas[i] = 1 - b[i];
        s->alphas_cumprod_prev[i] = prev;
        s->sqrt_alphas_cumprod[i] = sqrt(ac[i]);
        s->sqrt_one_minus_alphas_cumprod[i] = sqrt(1 - ac[i]);
        s->posterior_variance[i] = b[i] * (1 - prev) / (1 - ac[i]);
        s->posterior_mean_coef1[i] = b[i] * sqrt(prev) / (1 - ac[i]);
        s->posterior_mean_coef2[i] = (1 - prev) * sqrt(s->alphas[i]) / (1 - ac[i]);
    }
    /* the posterior variance is 0 at t = 0; its log is clipped to the t = 1 value (as DDPM's code does) */
    for (int i = 0; i < T; i++) s->posterior_log_variance_clipped[i] = log(s->posterior_variance[i ? i : 1]);
    return DF_OK;
}

df_status df_schedule_init_default(df_schedule *s) { return df_schedule_init(s, DF_BETA_LINEAR, 1000, 1e-4, 0.02, 0); }

/* log sigma at integer t, for interpolating between integers. A zero terminal abar (zero-terminal-SNR
 * schedules) counts as 2^-24 here, as diffusers' Euler and DPM-Solver schedulers set alphas_cumprod[-1]:
 * with +inf the whole last interval (T-2, T-1) would collapse to abar = 0 and every finite sigma above
 * sigma(T-2) would map back to T-2. The integer t = T-1 itself still has abar = 0 and sigma = inf. */
static double log_sigma_at(const df_schedule *s, int i) {
    double a = s->alphas_cumprod[i];
    /* ... but never above abar[T-2]: a linear or sigmoid zero-SNR schedule has abar[T-2] ~ 4e-9 < 2^-24,
     * and log sigma must keep rising for the interpolation to be monotone and t_for_sigma to invert it */
    if (!(a > 0)) a = fmin(0x1p-24, 0.5 * s->alphas_cumprod[s->T - 2]);
    return 0.5 * log((1 - a) / a);
}

double df_schedule_alpha_bar(const df_schedule *s, double t) {
    if (!(t > 0)) return s->alphas_cumprod[0];
    if (t >= s->T - 1) return s->alphas_cumprod[s->T - 1];
    int i = (int)floor(t);
    double f = t - i;
    if (f == 0) return s->alphas_cumprod[i];
    double l0 = log_sigma_at(s, i), l1 = log_sigma_at(s, i + 1);
    double ls = l0 + f * (l1 - l0);
    return 1 / (1 + exp(2 * ls));
}

double df_schedule_sigma(const df_schedule *s, double t) {
    double a = df_schedule_alpha_bar(s, t);
    return a > 0 ? sqrt((1 - a) / a) : INFINITY;
}

double df_schedule_snr(const df_schedule *s, double t) {
    double a = df_schedule_alpha_bar(s, t);
    return a / (1 - a);
}

double df_schedule_t_for_sigma(const df_schedule *s, double sigma) {
    if (!(sigma > 0)) return 0;
    double ls = log(sigma);
    int T = s->T;
    if (ls <= log_sigma_at(s, 0)) return 0;
    if (ls >= log_sigma_at(s, T - 1)) return T - 1;
    int lo = 0, hi = T - 1;   /* log sigma increases with t: find lo with ls in [l(lo), l(lo+1)) */
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (log_sigma_at(s, mid) <= ls) lo = mid;
        else hi = mid;
    }
    double l0 = log_sigma_at(s, lo), l1 = log_sigma_at(s, lo + 1);
    double w = (ls - l0) / (l1 - l0);
    return lo + fmin(fmax(w, 0), 1);
}
