/* Samplers: DDPM, DDIM, DPM-Solver++ (1S, 2M, 3M), Euler, Heun and Euler ancestral, with diffusers' timestep spacings and
 * Karras sigmas; every prediction type, x_0 clipping and dynamic thresholding. See docs/samplers.md. */
#include "sampler.h"

#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* The samplers' facts: names, spaces, orders, buffers, noise. Adding a sampler means a row here, its step
 * function below and its case in df_sampler_run. */
static const df_sampler_info sampler_table[DF_SAMPLER_COUNT] = {
    [DF_SAMPLER_DDPM] = {"ddpm", "ancestral sampling (DDPM alg. 2), noise at every step", 0, 0, 1, 0, 1, 2,
                         DF_NOISE_ALWAYS, ""},
    [DF_SAMPLER_DDIM] = {"ddim", "DDIM (Song et al. 2021), deterministic unless --eta > 0", 0, 0, 1, 0, 1, 3,
                         DF_NOISE_ETA, ""},
    [DF_SAMPLER_DPMPP_1S] = {"dpmpp-1s", "DPM-Solver++ first order (DDIM in sigma space)", 1, 0, 1, 0, 1, 2,
                             DF_NOISE_NONE, "dpm++1s, dpmpp_1s"},
    [DF_SAMPLER_DPMPP_2M] = {"dpmpp-2m", "DPM-Solver++(2M), second-order multistep", 1, 0, 2, 1, 1, 3,
                             DF_NOISE_NONE, "dpm++2m, dpmpp_2m, k_dpmpp_2m, DPM++ 2M"},
    [DF_SAMPLER_DPMPP_3M] = {"dpmpp-3m", "DPM-Solver++ third-order multistep", 1, 0, 3, 2, 1, 4, DF_NOISE_NONE,
                             "dpm++3m, dpmpp_3m, k_dpmpp_3m"},
    [DF_SAMPLER_EULER] = {"euler", "Euler steps of the probability-flow ODE (Karras et al. 2022)", 1, 1, 1, 0, 1,
                          3, DF_NOISE_NONE, "k_euler"},
    [DF_SAMPLER_HEUN] = {"heun", "Heun's second-order steps (Karras et al. 2022 alg. 1), two calls a step", 1, 1,
                         2, 0, 2, 4, DF_NOISE_NONE, "k_heun"},
    [DF_SAMPLER_EULER_A] = {"euler_a", "Euler ancestral: Euler steps with fresh noise at every step (k-diffusion)", 1,
                            1, 1, 0, 1, 3, DF_NOISE_ALWAYS,
                            "euler-a, euler_ancestral, k_euler_a, k_euler_ancestral, Euler a"},
};
static const char *const spacing_names[] = {"leading", "linspace", "trailing"};
_Static_assert(sizeof spacing_names / sizeof spacing_names[0] == DF_SPACING_COUNT, "spacing name table");

const df_sampler_info *df_sampler_info_get(df_sampler_kind k) {
    return (unsigned)k < DF_SAMPLER_COUNT ? &sampler_table[k] : NULL;
}

/* Where alphas_cumprod is 0 (zero terminal SNR) the sigma-space samplers use this instead, as diffusers'
 * Euler and DPM-Solver schedulers do, so that the first sigma is large (4096) but finite. */
#define ABAR_FLOOR 0x1p-24
#define KARRAS_RHO 7.0

void df_sampler_params_default(df_sampler_params *p) {
    memset(p, 0, sizeof *p);
    p->kind = DF_SAMPLER_DDIM;
    p->steps = 50;
    p->spacing = DF_SPACING_LEADING;
    p->eta = 0;
    p->prediction = DF_PRED_EPSILON;
    p->clip_range = 1;
    p->dt_ratio = 0.995;   /* diffusers' dynamic_thresholding_ratio and sample_max_value */
    p->dt_max = 1;
}

const char *df_sampler_name(df_sampler_kind k) {
    return (unsigned)k < DF_SAMPLER_COUNT ? sampler_table[k].name : "unknown";
}

const char *df_spacing_name(df_spacing sp) {
    return (unsigned)sp < DF_SPACING_COUNT ? spacing_names[sp] : "unknown";
}

/* The names of a table as "a, b, c" for messages. */
static void name_list(char *out, size_t cap, int count, const char *(*name)(int)) {
    size_t k = 0;
    out[0] = 0;
    for (int i = 0; i < count && k < cap; i++) k += (size_t)snprintf(out + k, cap - k, "%s%s", i ? ", " : "", name(i));
}
static const char *sampler_name_i(int i) { return sampler_table[i].name; }
static const char *spacing_name_i(int i) { return spacing_names[i]; }

/* name as df_sampler_parse compares it: lower case, '+' as 'p', no '-', '_' or spaces; *len characters of
 * it, stopping at a comma (an alias list's separator). 0 when too long to be a sampler's name. */
static int sampler_key(const char *name, size_t len, char key[32]) {
    size_t k = 0;
    for (size_t i = 0; i < len && name[i] && name[i] != ','; i++) {
        const char c = name[i];
        if (c == '-' || c == '_' || c == ' ') continue;
        if (k + 1 >= 32) return 0;
        key[k++] = c == '+' ? 'p' : (char)tolower((unsigned char)c);
    }
    key[k] = 0;
    return k > 0;
}

df_status df_sampler_parse(const char *name, df_sampler_kind *k) {
    char key[32], other[32];
    if (name && sampler_key(name, strlen(name), key))
        for (int i = 0; i < DF_SAMPLER_COUNT; i++) {
            int hit = sampler_key(sampler_table[i].name, SIZE_MAX, other) && strcmp(key, other) == 0;
            for (const char *a = sampler_table[i].aliases; !hit && *a; a += strcspn(a, ",") + (a[strcspn(a, ",")] != 0))
                hit = sampler_key(a, SIZE_MAX, other) && strcmp(key, other) == 0;
            if (hit) {
                *k = (df_sampler_kind)i;
                return DF_OK;
            }
        }
    char names[200];
    name_list(names, sizeof names, DF_SAMPLER_COUNT, sampler_name_i);
    return df_fail(DF_ERR_ARG, "unknown sampler \"%s\" (%s)", name ? name : "(null)", names);
}

df_status df_spacing_parse(const char *name, df_spacing *sp) {
    for (int i = 0; i < DF_SPACING_COUNT; i++)
        if (name && strcmp(name, spacing_names[i]) == 0) {
            *sp = (df_spacing)i;
            return DF_OK;
        }
    char names[100];
    name_list(names, sizeof names, DF_SPACING_COUNT, spacing_name_i);
    return df_fail(DF_ERR_ARG, "unknown timestep spacing \"%s\" (%s)", name ? name : "(null)", names);
}

/* ---- the plan: timesteps and noise levels ------------------------------------------------------------ */

static int is_dpm(df_sampler_kind k) {
    return k == DF_SAMPLER_DPMPP_1S || k == DF_SAMPLER_DPMPP_2M || k == DF_SAMPLER_DPMPP_3M;
}
static int in_sigma_space(df_sampler_kind k) { return sampler_table[k].sigma_space; }

static double sigma_of_abar(double a) { return a > 0 ? sqrt((1 - a) / a) : INFINITY; }
static double floor_abar(double a) { return a > 0 ? a : ABAR_FLOOR; }

df_status df_plan_check(const df_schedule *s, const df_sampler_params *p) {
    if (!s || !s->alphas_cumprod || s->T < 2) return df_fail(DF_ERR_ARG, "sampler: no schedule");
    if (!p) return df_fail(DF_ERR_ARG, "sampler: no parameters");
    if ((unsigned)p->kind >= DF_SAMPLER_COUNT) return df_fail(DF_ERR_ARG, "sampler: unknown kind %d", (int)p->kind);
    if ((unsigned)p->spacing >= DF_SPACING_COUNT)
        return df_fail(DF_ERR_ARG, "sampler: unknown spacing %d", (int)p->spacing);
    if ((unsigned)p->prediction >= DF_PRED_COUNT)
        return df_fail(DF_ERR_ARG, "sampler: unknown prediction %d", (int)p->prediction);
    if (p->steps < 1 || p->steps > s->T)
        return df_fail(DF_ERR_ARG, "sampler: steps = %d must be in 1..%d (the schedule's T)", p->steps, s->T);
    if (!(p->eta >= 0 && isfinite(p->eta))) return df_fail(DF_ERR_ARG, "sampler: eta = %g must be >= 0", p->eta);
    if (p->clip_x0 && !(p->clip_range > 0))
        return df_fail(DF_ERR_ARG, "sampler: clip_range = %g must be > 0", p->clip_range);
    if (p->dynamic_threshold && !(p->dt_ratio > 0 && p->dt_ratio <= 1 && p->dt_max >= 1))
        return df_fail(DF_ERR_ARG, "sampler: dynamic thresholding needs 0 < ratio <= 1 and max >= 1 (got %g, %g)",
                       p->dt_ratio, p->dt_max);
    return DF_OK;
}

size_t df_plan_bytes(int steps) {
    size_t doubles = 2 * ((size_t)steps + 1), floats = (size_t)steps;
    return doubles * sizeof(double) + (floats + 1) * sizeof(float);
}

void df_plan_bind(df_plan *pl, int steps, void *mem) {
    pl->steps = steps;
    pl->abar = mem;
    pl->sigma = pl->abar + steps + 1;
    pl->t = (float *)(pl->sigma + steps + 1);
}

/* The i-th timestep (noisiest first) of diffusers' DDPMScheduler / DDIMScheduler / EulerDiscreteScheduler
 * set_timesteps, with steps_offset 0: "leading" k * (T // steps), "linspace" np.linspace(0, T - 1, steps)
 * (rounded half to even for DDPM and DDIM, kept fractional for Euler and Heun), "trailing"
 * round(np.arange(T, 0, -T / steps)) - 1. */
static double spaced_timestep(int T, int steps, df_spacing sp, int i, int round_linspace) {
    const int k = steps - 1 - i;
    switch (sp) {
    case DF_SPACING_LEADING: return (double)k * (T / steps);
    case DF_SPACING_LINSPACE: {
        double v = steps == 1 ? 0 : k == steps - 1 ? T - 1 : k * ((double)(T - 1) / (steps - 1));
        return round_linspace ? nearbyint(v) : v;
    }
    default: return nearbyint(T - i * ((double)T / steps)) - 1;
    }
}

/* DPMSolverMultistepScheduler.set_timesteps: steps + 1 points of which the last (t = 0) is dropped, since
 * the final step goes to sigma = 0 ("final_sigmas_type zero"). */
static double dpm_timestep(int T, int steps, df_spacing sp, int i) {
    const int k = steps - i;   /* 1..steps */
    switch (sp) {
    case DF_SPACING_LEADING: return (double)k * (T / (steps + 1));
    case DF_SPACING_LINSPACE: return nearbyint(k == steps ? T - 1 : k * ((double)(T - 1) / steps));
    default: return nearbyint(T - i * ((double)T / steps)) - 1;
    }
}

/* Karras et al. 2022 eq. 5: sigma_i = (max^(1/rho) + i / (N - 1) (min^(1/rho) - max^(1/rho)))^rho. */
static double karras_sigma(double smin, double smax, int steps, int i) {
    double ramp = steps > 1 ? (double)i / (steps - 1) : 0;
    double a = pow(smax, 1 / KARRAS_RHO), b = pow(smin, 1 / KARRAS_RHO);
    return pow(a + ramp * (b - a), KARRAS_RHO);
}

/* sigma at a (possibly fractional) timestep, with a zero abar counted as ABAR_FLOOR. */
static double sigma_at(const df_schedule *s, double t) {
    return sigma_of_abar(floor_abar(df_schedule_alpha_bar(s, t)));
}

df_status df_plan_fill(const df_schedule *s, const df_sampler_params *p, df_plan *pl) {
    const int T = s->T, N = p->steps;
    DF_ASSERT(pl->steps == N);
    if (!in_sigma_space(p->kind)) {
        for (int i = 0; i < N; i++) {
            int t = (int)spaced_timestep(T, N, p->spacing, i, 1);
            DF_ASSERT(t >= 0 && t < T);
            pl->t[i] = (float)t;
            pl->abar[i] = s->alphas_cumprod[t];
            pl->sigma[i] = sigma_of_abar(pl->abar[i]);
        }
    } else {
        double smin = 0, smax = 0;
        if (p->karras_sigmas) {
            /* DPM-Solver spans the whole table; Euler and Heun the sigmas of their spaced timesteps */
            double t_hi = is_dpm(p->kind) ? T - 1 : spaced_timestep(T, N, p->spacing, 0, 0);
            double t_lo = is_dpm(p->kind) ? 0 : spaced_timestep(T, N, p->spacing, N - 1, 0);
            smax = sigma_at(s, t_hi), smin = sigma_at(s, t_lo);
        }
        for (int i = 0; i < N; i++) {
            if (p->karras_sigmas) {
                /* the model gets the fractional timestep of each sigma (diffusers' _sigma_to_t: log-sigma
                 * interpolation; its DPM-Solver rounds it, we keep it consistent with the sigma) */
                pl->sigma[i] = karras_sigma(smin, smax, N, i);
                pl->t[i] = (float)df_schedule_t_for_sigma(s, pl->sigma[i]);
            } else {
                double t = is_dpm(p->kind) ? dpm_timestep(T, N, p->spacing, i)
                                           : spaced_timestep(T, N, p->spacing, i, 0);
                pl->t[i] = (float)t;
                pl->sigma[i] = sigma_at(s, pl->t[i]);
            }
            /* VP alpha_t^2 = 1 / (1 + sigma^2) (DPM-Solver's _sigma_to_alpha_sigma_t) */
            pl->abar[i] = 1 / (1 + pl->sigma[i] * pl->sigma[i]);
        }
    }
    pl->abar[N] = 1;   /* DDIM's set_alpha_to_one; sigma 0 for the others */
    pl->sigma[N] = 0;
    for (int i = 0; i < N; i++)
        if (!(pl->abar[i] < pl->abar[i + 1]))
            return df_fail(DF_ERR_ARG, "sampler: %d steps with %s spacing repeat a noise level (t = %g); use fewer",
                           N, spacing_names[p->spacing], (double)pl->t[i]);
    return DF_OK;
}

df_status df_sampler_timesteps(const df_schedule *s, const df_sampler_params *p, float *t) {
    df_status st = df_plan_check(s, p);
    if (st) return st;
    void *mem = malloc(df_plan_bytes(p->steps));
    if (!mem) return df_fail(DF_ERR_NOMEM, "sampler: out of memory");
    df_plan pl;
    df_plan_bind(&pl, p->steps, mem);
    st = df_plan_fill(s, p, &pl);
    if (!st) memcpy(t, pl.t, sizeof(float) * (size_t)p->steps);
    free(mem);
    return st;
}

/* ---- conversions and x_0 processing ------------------------------------------------------------------ */

void df_pred_convert(df_prediction p, double abar, size_t len, const float *x, const float *out, float *x0,
                     float *eps) {
    const double a = sqrt(abar), s = sqrt(1 - abar);
    for (size_t j = 0; j < len; j++) {
        const double xt = x[j], f = out[j];
        double z, e;
        switch (p) {
        case DF_PRED_EPSILON:   /* DDPM eq. 15: x_0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) */
            e = f, z = a > 0 ? (xt - s * f) / a : 0;
            break;
        case DF_PRED_SAMPLE:   /* eps = (x_t - sqrt(abar) x_0) / sqrt(1 - abar) */
            z = f, e = s > 0 ? (xt - a * f) / s : 0;
            break;
        default:   /* v = a eps - s x_0 (Salimans & Ho 2022 sec. 4): x_0 = a x_t - s v, eps = s x_t + a v */
            z = a * xt - s * f, e = s * xt + a * f;
            break;
        }
        if (x0) x0[j] = (float)z;
        if (eps) eps[j] = (float)e;
    }
}

/* The k-th smallest of a[0..n-1] (0-based). Reorders a so that everything after position k is >= it
 * (Wirth's selection). */
static float select_kth(float *a, long n, long k) {
    long l = 0, m = n - 1;
    while (l < m) {
        const float x = a[k];
        long i = l, j = m;
        do {
            while (a[i] < x) i++;
            while (x < a[j]) j--;
            if (i <= j) {
                float tmp = a[i];
                a[i] = a[j], a[j] = tmp;
                i++, j--;
            }
        } while (i <= j);
        if (j < k) l = i;
        if (k < i) m = j;
    }
    return a[k];
}

void df_x0_process(const df_sampler_params *p, int n, size_t dim, float *x0, float *scratch) {
    if (p->dynamic_threshold) {
        /* Imagen (Saharia et al. 2022) sec. 2.3 as diffusers' _threshold_sample: s = the dt_ratio quantile
         * of |x_0| over each sample (torch.quantile's linear interpolation), clamped to [1, dt_max];
         * x_0 <- clamp(x_0, -s, s) / s */
        const double pos = p->dt_ratio * (double)(dim - 1);
        const long lo = (long)floor(pos);
        const double frac = pos - (double)lo;
        for (int i = 0; i < n; i++) {
            float *x = x0 + (size_t)i * dim;
            for (size_t j = 0; j < dim; j++) scratch[j] = fabsf(x[j]);
            double q = select_kth(scratch, (long)dim, lo);
            if (frac > 0) {
                float next = scratch[lo + 1];   /* the next order statistic: the least of what follows */
                for (size_t j = (size_t)lo + 2; j < dim; j++) next = fminf(next, scratch[j]);
                q += frac * (next - q);
            }
            const double sc = fmin(fmax(q, 1), p->dt_max);
            for (size_t j = 0; j < dim; j++) x[j] = (float)(fmin(fmax(x[j], -sc), sc) / sc);
        }
    } else if (p->clip_x0) {
        const float r = (float)p->clip_range;
        const size_t len = (size_t)n * dim;
        for (size_t j = 0; j < len; j++) x0[j] = fminf(fmaxf(x0[j], -r), r);
    }
}

/* ---- the steps ----------------------------------------------------------------------------------------- */

/* DDPM alg. 2 over a subsequence: x_{t'} ~ q(x_{t'} | x_t, x_0) with the posterior mean of DDPM eq. 7 written
 * for abar_t and abar_{t'} (diffusers' DDPMScheduler.step: "current" alpha = abar_t / abar_{t'}), variance
 * beta~ (fixed_small, clamped at 1e-20) or beta (fixed_large). With a learned variance (v: the network's second
 * half, sample r's at v + 2 r dim + dim) the log variance is frac log beta + (1 - frac) log beta~ with
 * frac = (v + 1) / 2, beta and beta~ those of this step (diffusers' _get_variance for "learned_range"; improved
 * DDPM eq. 15 on the respaced chain). No noise on the final step. */
static void ddpm_step(const df_sampler_params *p, double a, double ap, int last, int n, size_t dim, float *x,
                      const float *x0, const float *v, df_rng *rngs) {
    const double ca = a / ap, cb = 1 - ca, b = 1 - a;
    const double c0 = sqrt(ap) * cb / b, ct = sqrt(ca) * (1 - ap) / b;
    const double small = fmax((1 - ap) / b * cb, 1e-20), var = p->variance_large ? cb : small;
    const double sd = last ? 0 : sqrt(var), max_log = log(cb), min_log = log(small);
    for (int r = 0; r < n; r++) {
        const float *vr = v ? v + 2 * (size_t)r * dim + dim : NULL;
        for (size_t k = 0, j = (size_t)r * dim; k < dim; k++, j++) {
            double y = c0 * x0[j] + ct * x[j];
            if (sd > 0 && vr) {
                const double frac = (vr[k] + 1.0) / 2;
                y += exp(0.5 * (frac * max_log + (1 - frac) * min_log)) * df_rng_normal(&rngs[r]);
            } else if (sd > 0) {
                y += sd * df_rng_normal(&rngs[r]);
            }
            x[j] = (float)y;
        }
    }
}

/* DDIM eq. 12: x_{t'} = sqrt(abar_{t'}) x_0 + sqrt(1 - abar_{t'} - sigma^2) eps + sigma z, with
 * sigma = eta sqrt((1 - abar_{t'}) / (1 - abar_t)) sqrt(1 - abar_t / abar_{t'}) (eq. 16). eps is the model's
 * (re-derived from a clipped x_0 only with clipped_eps: diffusers' use_clipped_model_output). */
static void ddim_step(double eta, double a, double ap, int n, size_t dim, float *x, const float *x0,
                      const float *eps, df_rng *rngs) {
    const double sig = eta * sqrt((1 - ap) / (1 - a) * (1 - a / ap));
    const double c0 = sqrt(ap), ce = sqrt(fmax(1 - ap - sig * sig, 0));
    for (int r = 0; r < n; r++)
        for (size_t j = (size_t)r * dim; j < (size_t)(r + 1) * dim; j++) {
            double v = c0 * x0[j] + ce * eps[j];
            if (sig > 0) v += sig * df_rng_normal(&rngs[r]);
            x[j] = (float)v;
        }
}

/* Euler ancestral (k-diffusion's sample_euler_ancestral, diffusers' EulerAncestralDiscreteScheduler) on the
 * VE form x = x_0 + sigma eps: split the move to sigma' into a deterministic Euler step down to sigma_down and
 * fresh noise of sd sigma_up, with sigma_up^2 = sigma'^2 (sigma^2 - sigma'^2) / sigma^2 and
 * sigma_down^2 + sigma_up^2 = sigma'^2, so the noise level lands on sigma'. No noise on the step to 0. Each
 * image draws from its own generator, in order, as ddpm_step does. */
static void euler_a_step(double sig, double sig_to, int n, size_t dim, float *x, const float *x0, df_rng *rngs) {
    const double up = sig_to > 0 ? sqrt(sig_to * sig_to * (sig * sig - sig_to * sig_to) / (sig * sig)) : 0;
    const double down = sqrt(fmax(sig_to * sig_to - up * up, 0)), dt = down - sig;
    for (int r = 0; r < n; r++)
        for (size_t j = (size_t)r * dim; j < (size_t)(r + 1) * dim; j++) {
            double v = x[j] + (x[j] - x0[j]) / sig * dt;
            if (up > 0) v += up * df_rng_normal(&rngs[r]);
            x[j] = (float)v;
        }
}

/* DPM-Solver++ (Lu et al. 2022b) with the data prediction x_0, in the VP scale: alpha = 1 / sqrt(1 + sigma^2),
 * noise level sigma alpha, lambda = log(alpha / (sigma alpha)) = -log sigma, h = lambda' - lambda. m[0] is
 * x_0 at this level, m[1] and m[2] at the two before. Order 1 is DPM-Solver++'s first-order update
 * x' = (sigma' alpha' / sigma alpha) x - alpha' (e^-h - 1) x_0, which is DDIM; order 2 is alg. 2
 * (DPM-Solver++(2M), diffusers' "midpoint" form); order 3 diffusers' "third-order" multistep update with
 * the divided differences D1 ~ h x_0' and D2 ~ h^2 x_0'' / 2 (derivatives in lambda). */
static void dpm_step(int order, const double *sg, int i, size_t len, float *x, float *const m[3]) {
    const double st = sg[i + 1], s0 = sg[i];
    if (st == 0) {   /* lambda = inf: exp(-h) = 0, x_t = alpha_t x_0 = x_0 */
        memcpy(x, m[0], len * sizeof(float));
        return;
    }
    const double at = 1 / sqrt(1 + st * st), vt = st * at, v0 = s0 / sqrt(1 + s0 * s0);
    const double h = log(s0) - log(st), em = expm1(-h);   /* exp(-h) - 1 */
    const double cx = vt / v0;
    if (order == 1) {
        for (size_t j = 0; j < len; j++) x[j] = (float)(cx * x[j] - at * em * m[0][j]);
        return;
    }
    const double s1 = sg[i - 1], r0 = (log(s1) - log(s0)) / h;
    if (order == 2) {
        /* D1 = (m0 - m1) / r0; x_t = cx x - alpha_t (e^-h - 1) (D0 + D1 / 2) */
        for (size_t j = 0; j < len; j++) {
            double d1 = (m[0][j] - m[1][j]) / r0;
            x[j] = (float)(cx * x[j] - at * em * (m[0][j] + 0.5 * d1));
        }
        return;
    }
    const double s2 = sg[i - 2], r1 = (log(s2) - log(s1)) / h;
    /* diffusers' (and the DPM-Solver repository's) weights: k1 = alpha' ((e^-h - 1) / h + 1) is the exact
     * integral of the linear Taylor term, but k2 = alpha' ((e^-h - 1 + h) / h^2 - 1/2) ~ alpha' h / 6 is half
     * the exact weight of D2 ~ h^2 x_0'' / 2, so the update is second order, not third. We keep diffusers'
     * weights for parity: the exact weight measures order 3 on a Gaussian but was worse at 10-20 steps on
     * the mixtures of tests/test_sampler.c (see docs/samplers.md). */
    const double k1 = at * (em / h + 1), k2 = at * ((em + h) / (h * h) - 0.5);
    for (size_t j = 0; j < len; j++) {
        double d10 = (m[0][j] - m[1][j]) / r0, d11 = (m[1][j] - m[2][j]) / r1;
        double d1 = d10 + r0 / (r0 + r1) * (d10 - d11), d2 = (d10 - d11) / (r0 + r1);
        x[j] = (float)(cx * x[j] - at * em * m[0][j] + k1 * d1 - k2 * d2);
    }
}

/* ---- running the chain ----------------------------------------------------------------------------------- */

void df_sample_streams(df_rng *base, int n, df_rng *rngs) {
    for (int i = 0; i < n; i++) df_rng_init_stream(&rngs[i], base->seed, base->stream + (uint64_t)i);
    base->stream += (uint64_t)n;
}

void df_fill_normal_each(df_rng *rngs, int n, size_t dim, float *x) {
    for (int i = 0; i < n; i++) df_rng_fill_normal(&rngs[i], x + (size_t)i * dim, dim);
}

size_t df_sampler_run_bytes(const df_sampler_params *p, int n, size_t dim) {
    const df_sampler_info *si = df_sampler_info_get(p->kind);
    const size_t len = (size_t)n * dim, nbuf = si ? (size_t)si->buffers : 4;
    /* the plan, the batch buffers, dim values for thresholding, n timesteps; with a learned variance the
     * network's whole output (prediction and v) */
    return df_round64(df_plan_bytes(p->steps)) + df_round64((nbuf * len + dim + (size_t)n) * sizeof(float)) +
           (p->learned_variance ? df_round64(2 * len * sizeof(float)) : 0);
}

df_status df_sampler_run(const df_schedule *s, const df_sampler_params *p, df_denoise_fn fn, void *ctx, int n,
                         size_t dim, df_rng *rngs, float *x, int start, void *ws) {
    df_status st = df_plan_check(s, p);
    if (st) return st;
    if (!fn || n < 0 || dim == 0 || (n > 0 && !x)) return df_fail(DF_ERR_ARG, "sampler: bad arguments");
    const df_sampler_info *si = df_sampler_info_get(p->kind);
    if (!rngs && (si->noise == DF_NOISE_ALWAYS || (si->noise == DF_NOISE_ETA && p->eta > 0)))
        return df_fail(DF_ERR_ARG, "sampler: %s%s draws noise and needs a generator", si->name,
                       si->noise == DF_NOISE_ETA ? " with eta > 0" : "");
    const int N = p->steps;
    DF_ASSERT(start >= 0 && start <= N);
    if (n == 0 || start == N) return DF_OK;
    const df_sampler_kind kind = p->kind;
    const size_t len = (size_t)n * dim;
    const int ve = si->scaled_x, nhist = si->history;
    char *mem = ws, *own = NULL;
    if (!mem && !(mem = own = df_alloc_aligned(df_sampler_run_bytes(p, n, dim))))
        return df_fail(DF_ERR_NOMEM, "sampler: out of memory for %d x %zu values", n, dim);
    df_plan pl;
    df_plan_bind(&pl, N, mem);
    /* batch buffers: out, x0, then eps (DDIM), the model input (Euler, Heun), DPM history, Heun's d */
    float *next = (float *)(mem + df_round64(df_plan_bytes(N)));
    float *out = next, *x0 = next + len, *eps = NULL, *xin = NULL, *hist[2] = {NULL, NULL}, *dbuf = NULL;
    next += 2 * len;
    if (kind == DF_SAMPLER_DDIM) eps = next, next += len;
    if (ve) xin = next, next += len;
    for (int h = 0; h < nhist; h++) hist[h] = next, next += len;
    if (kind == DF_SAMPLER_HEUN) dbuf = next, next += len;
    DF_ASSERT(next == (float *)(mem + df_round64(df_plan_bytes(N))) + (size_t)si->buffers * len);
    float *scratch = next, *tb = next + dim;   /* dim values for thresholding, n timesteps */
    /* a learned variance: the network writes both halves here, its predictions are copied to out */
    float *both = p->learned_variance ? (float *)(mem + df_sampler_run_bytes(p, n, dim) - df_round64(2 * len * sizeof(float)))
                                      : NULL;

    st = df_plan_fill(s, p, &pl);
    if (st) goto done;
    const double *ab = pl.abar, *sg = pl.sigma;
    if (ve) {
        /* Euler and Heun work on x_t / sqrt(abar) = x_0 + sigma eps (Karras et al. 2022's VE form); diffusers
         * feeds the network x / sqrt(sigma^2 + 1), which is x_t again */
        const double c = sqrt(1 + sg[start] * sg[start]);
        for (size_t j = 0; j < len; j++) x[j] = (float)(x[j] * c);
    }
    const int order_max = si->order;
    int nlower = 0;   /* DPM-Solver: steps taken so far, capped at the order (diffusers' lower_order_nums) */
    for (int i = start; i < N; i++) {
        for (int k = 0; k < n; k++) tb[k] = pl.t[i];
        const float *in = x;
        if (ve) {
            const double c = 1 / sqrt(1 + sg[i] * sg[i]);
            for (size_t j = 0; j < len; j++) xin[j] = (float)(x[j] * c);
            in = xin;
        }
        st = fn(ctx, n, in, tb, both ? both : out);
        if (st) goto done;
        for (int r = 0; both && r < n; r++) memcpy(out + (size_t)r * dim, both + 2 * (size_t)r * dim, sizeof(float) * dim);
        df_pred_convert(p->prediction, ab[i], len, in, out, x0, eps);
        df_x0_process(p, n, dim, x0, scratch);
        switch (kind) {
        case DF_SAMPLER_DDPM: ddpm_step(p, ab[i], ab[i + 1], i == N - 1, n, dim, x, x0, both, rngs); break;
        case DF_SAMPLER_DDIM:
            if (p->clipped_eps && (p->clip_x0 || p->dynamic_threshold)) {
                /* eps consistent with the clipped x_0 (diffusers' use_clipped_model_output): without it a
                 * guided eps far from the model's range carries the clipped-away part of x_0 into x_t' */
                const double ca = sqrt(ab[i]), cs = 1 / sqrt(1 - ab[i]);
                for (size_t j = 0; j < len; j++) eps[j] = (float)((x[j] - ca * x0[j]) * cs);
            }
            ddim_step(p->eta, ab[i], ab[i + 1], n, dim, x, x0, eps, rngs);
            break;
        case DF_SAMPLER_DPMPP_1S:
        case DF_SAMPLER_DPMPP_2M:
        case DF_SAMPLER_DPMPP_3M: {
            /* diffusers' order choice: first order at the start and on the last step (final sigma 0), and with
             * fewer than 15 steps (lower_order_final) at most second order on the one before */
            const int fewer = N < 15;
            int order = order_max;
            if (nlower < 1 || i == N - 1) order = 1;
            else if (order > 2 && (nlower < 2 || (i == N - 2 && fewer))) order = 2;
            float *m[3] = {x0, hist[0], hist[1]};
            dpm_step(order, sg, i, len, x, m);
            if (nlower < order_max) nlower++;
            break;
        }
        case DF_SAMPLER_EULER: {
            /* Karras et al. 2022 alg. 1 lines 4-5 (no correction): d = (x - D(x)) / sigma, x += d (sigma' - sigma) */
            const double dt = sg[i + 1] - sg[i];
            for (size_t j = 0; j < len; j++) x[j] = (float)(x[j] + (x[j] - x0[j]) / sg[i] * dt);
            break;
        }
        case DF_SAMPLER_HEUN: {
            /* Karras et al. 2022 alg. 1: the Euler step to sigma', then if sigma' > 0 (lines 6-8) the trapezoidal
             * rule with d' = (x' - D(x')) / sigma' at the Euler point */
            const double dt = sg[i + 1] - sg[i];
            if (sg[i + 1] == 0) {
                for (size_t j = 0; j < len; j++) x[j] = (float)(x[j] + (x[j] - x0[j]) / sg[i] * dt);
                break;
            }
            const double c = 1 / sqrt(1 + sg[i + 1] * sg[i + 1]);
            for (size_t j = 0; j < len; j++) {
                dbuf[j] = (float)((x[j] - x0[j]) / sg[i]);
                xin[j] = (float)((x[j] + dbuf[j] * dt) * c);
            }
            for (int k = 0; k < n; k++) tb[k] = pl.t[i + 1];
            st = fn(ctx, n, xin, tb, both ? both : out);
            if (st) goto done;
            for (int r = 0; both && r < n; r++)
                memcpy(out + (size_t)r * dim, both + 2 * (size_t)r * dim, sizeof(float) * dim);
            df_pred_convert(p->prediction, ab[i + 1], len, xin, out, x0, NULL);
            df_x0_process(p, n, dim, x0, scratch);
            for (size_t j = 0; j < len; j++) {
                double xe = xin[j] / c, d2 = (xe - x0[j]) / sg[i + 1];
                x[j] = (float)(x[j] + 0.5 * (dbuf[j] + d2) * dt);
            }
            break;
        }
        case DF_SAMPLER_EULER_A: euler_a_step(sg[i], sg[i + 1], n, dim, x, x0, rngs); break;
        case DF_SAMPLER_COUNT: DF_ASSERT(0);
        }
        if (p->progress) {
            const float *xv = x;
            if (ve) {   /* report x_t in the VP scale like every other sampler */
                const double c = 1 / sqrt(1 + sg[i + 1] * sg[i + 1]);
                for (size_t j = 0; j < len; j++) xin[j] = (float)(x[j] * c);
                xv = xin;
            }
            p->progress(p->progress_ctx, i + 1, N, xv, x0);
        }
        if (nhist) {   /* the x_0 just used becomes the history; the oldest buffer is reused */
            float *oldest = hist[nhist - 1];
            if (nhist == 2) hist[1] = hist[0];
            hist[0] = x0;
            x0 = oldest;
        }
    }
done:
    df_free_aligned(own);
    return st;
}

df_status df_sample_streams_new(df_rng *key, int n, df_rng **rngs) {
    *rngs = NULL;
    if (!key || n <= 0) return DF_OK;
    if (!(*rngs = malloc(sizeof(df_rng) * (size_t)n))) return df_fail(DF_ERR_NOMEM, "sampler: out of memory");
    df_sample_streams(key, n, *rngs);
    return DF_OK;
}

df_status df_sample_from(const df_schedule *s, const df_sampler_params *p, df_denoise_fn fn, void *ctx, int n,
                         size_t dim, df_rng *rng, float *x) {
    df_rng *rngs;
    df_status st = df_sample_streams_new(rng, n, &rngs);
    if (!st) st = df_sampler_run(s, p, fn, ctx, n, dim, rngs, x, 0, NULL);
    free(rngs);
    return st;
}

df_status df_sample(const df_schedule *s, const df_sampler_params *p, df_denoise_fn fn, void *ctx, int n,
                    size_t dim, df_rng *rng, float *x) {
    df_status st = df_plan_check(s, p);
    if (st) return st;
    if (!rng || n < 0 || dim == 0 || (n > 0 && !x)) return df_fail(DF_ERR_ARG, "sampler: bad arguments");
    df_rng *rngs;
    if ((st = df_sample_streams_new(rng, n, &rngs))) return st;
    df_fill_normal_each(rngs, n, dim, x);
    st = df_sampler_run(s, p, fn, ctx, n, dim, rngs, x, 0, NULL);
    free(rngs);
    return st;
}
