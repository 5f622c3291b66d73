/* EDM preconditioning (Karras et al. 2022, table 1): the coefficients, the training noise levels and
 * target, and the adapter that lets the VP samplers (x_t, fractional t) run an EDM network. */
#include "internal.h"

#include <math.h>

void df_edm_params_default(df_edm_params *e) {
    e->sigma_data = 0.5;
    e->p_mean = -1.2;
    e->p_std = 1.2;
}

/* c_noise is a float timestep about -1.2 .. 1.3 (sigma 0.01 .. 157), negative for sigma < 1: the U-Net's
 * sinusoidal embedding (timestep_forward in ops_real.c) is sin and cos of c_noise 10000^(-j / half), defined
 * for any real value; its fastest channels turn by about 2.5 radians over that range and its slowest stay near
 * (0, 1), as in EDM's own networks, which embed the same c_noise the same way. */
df_edm_coefs df_edm_precond(double sigma_data, double sigma) {
    DF_ASSERT(sigma_data > 0 && sigma > 0);
    const double s2 = sigma * sigma, d2 = sigma_data * sigma_data, r = sqrt(s2 + d2);
    df_edm_coefs c = {.skip = d2 / (s2 + d2), .out = sigma * sigma_data / r, .in = 1 / r, .noise = 0.25 * log(sigma)};
    return c;
}

void df_edm_draw_sigmas(const df_edm_params *e, df_rng *rng, int n, double *sigma) {
    for (int i = 0; i < n; i++) sigma[i] = exp(e->p_mean + e->p_std * df_rng_normal(rng));   /* EDM table 1, p_train */
}

void df_edm_training_inputs(double sigma_data, int n, size_t dim, const float *x0, const float *noise,
                            const double *sigma, float *x_in, float *c_noise, float *target) {
    for (int i = 0; i < n; i++) {
        const df_edm_coefs c = df_edm_precond(sigma_data, sigma[i]);
        const size_t o = (size_t)i * dim;
        for (size_t j = 0; j < dim; j++) {
            const double x = (double)x0[o + j] + sigma[i] * noise[o + j];
            x_in[o + j] = (float)(c.in * x);
            /* F's target (EDM eq. 8): its unit-weight loss is lambda(sigma) |D - x_0|^2 */
            target[o + j] = (float)(((double)x0[o + j] - c.skip * x) / c.out);
        }
        c_noise[i] = (float)c.noise;
    }
}

/* The VP point (x_t, t) as EDM's x = x_t / sqrt(abar) at sigma = sqrt((1 - abar) / abar). */
static df_edm_coefs sampler_coefs(const df_schedule *s, double sigma_data, double t, double *inv_sqrt_abar) {
    *inv_sqrt_abar = 1 / sqrt(df_schedule_alpha_bar(s, t));
    return df_edm_precond(sigma_data, df_schedule_sigma(s, t));
}

void df_edm_sampler_inputs(const df_schedule *s, double sigma_data, int n, size_t dim, const float *xt,
                           const float *t, float *x_in, float *c_noise) {
    for (int i = 0; i < n; i++) {
        double k;
        const df_edm_coefs c = sampler_coefs(s, sigma_data, t[i], &k);
        const size_t o = (size_t)i * dim;
        const double scale = c.in * k;
        for (size_t j = 0; j < dim; j++) x_in[o + j] = (float)(scale * xt[o + j]);
        c_noise[i] = (float)c.noise;
    }
}

void df_edm_sampler_x0(const df_schedule *s, double sigma_data, int n, size_t dim, const float *xt, const float *t,
                       const float *F, float *x0) {
    for (int i = 0; i < n; i++) {
        double k;
        const df_edm_coefs c = sampler_coefs(s, sigma_data, t[i], &k);
        const size_t o = (size_t)i * dim;
        const double a = c.skip * k;
        for (size_t j = 0; j < dim; j++) x0[o + j] = (float)(a * xt[o + j] + c.out * F[o + j]);
    }
}
