/* Editing with a sampler: image-to-image (SDEdit), inpainting (RePaint, with its resampling jumps) and
 * DDIM inversion. They reuse the samplers' plans, conversions and x_0 processing (sampler.h). */
#include "sampler.h"

#include <math.h>
#include <string.h>

df_status df_img2img_run(const df_schedule *s, const df_sampler_params *p, df_denoise_fn fn, void *ctx, int n,
                         size_t dim, const float *x_in, double strength, df_rng *rngs, float *out, void *ws) {
    df_status st = df_plan_check(s, p);
    if (st) return st;
    if (!fn || n < 0 || dim == 0 || (n > 0 && (!x_in || !out || !rngs)))
        return df_fail(DF_ERR_ARG, "img2img: bad arguments");
    if (!(strength >= 0 && strength <= 1))
        return df_fail(DF_ERR_ARG, "img2img: strength %g must be in [0, 1]", strength);
    const size_t len = (size_t)n * dim;
    /* diffusers' img2img get_timesteps: init_timestep = min(int(steps * strength), steps), and the run starts
     * at timesteps[steps - init_timestep] */
    const int N = p->steps, init = DF_MIN((int)(N * strength), N), start = N - init;
    if (out != x_in) memmove(out, x_in, len * sizeof(float));
    if (init == 0 || n == 0) return DF_OK;   /* nothing to denoise: the input comes back unchanged */
    char *mem = ws, *own = NULL;
    if (!mem && !(mem = own = df_alloc_aligned(df_sampler_run_bytes(p, n, dim))))
        return df_fail(DF_ERR_NOMEM, "img2img: out of memory");
    df_plan pl;   /* bound at the start of the workspace, where df_sampler_run fills it again */
    df_plan_bind(&pl, N, mem);
    st = df_plan_fill(s, p, &pl);
    if (!st) {
        /* SDEdit (Meng et al. 2022) eq. 2 / DDPM eq. 4 at the starting level: x_t = sqrt(abar) x_in +
         * sqrt(1 - abar) z (for the sigma-space samplers abar = 1 / (1 + sigma^2), what their add_noise does) */
        const double a = sqrt(pl.abar[start]), b = sqrt(1 - pl.abar[start]);
        for (int r = 0; r < n; r++)
            for (size_t j = (size_t)r * dim; j < (size_t)(r + 1) * dim; j++)
                out[j] = (float)(a * out[j] + b * df_rng_normal(&rngs[r]));
        st = df_sampler_run(s, p, fn, ctx, n, dim, rngs, out, start, mem);
    }
    df_free_aligned(own);
    return st;
}

df_status df_img2img(const df_schedule *s, const df_sampler_params *p, df_denoise_fn fn, void *ctx, int n,
                     size_t dim, const float *x_in, double strength, df_rng *rng, float *out) {
    if (!rng) return df_fail(DF_ERR_ARG, "img2img: bad arguments");
    df_rng *rngs;
    df_status st = df_sample_streams_new(rng, n, &rngs);
    if (!st) st = df_img2img_run(s, p, fn, ctx, n, dim, x_in, strength, rngs, out, NULL);
    free(rngs);
    return st;
}

/* RePaint's resampling schedule (Lugmayr et al. 2022 sec. 4.2; diffusers' RePaintScheduler.set_timesteps):
 * steps are counted 0..steps-1 from the clean end; at every multiple j of jump_length below
 * steps - jump_length the walk climbs back jump_length steps, jump_n_sample - 1 times. Writes the walk
 * into seq (if not NULL) and returns its length. */
static long jump_walk(int steps, int jump_length, int jump_n_sample, int *left, int *seq) {
    for (int j = 0; j < steps; j++) left[j] = 0;
    for (int j = 0; j < steps - jump_length; j += jump_length) left[j] = jump_n_sample - 1;
    long k = 0;
    int t = steps;
    while (t >= 1) {
        t--;
        if (seq) seq[k] = t;
        k++;
        if (left[t] > 0) {
            left[t]--;
            for (int u = 0; u < jump_length; u++) {
                t++;
                if (seq) seq[k] = t;
                k++;
            }
        }
    }
    return k;
}

/* jump_walk's length: every jump climbs jump_length positions and walks them down again. */
static long walk_length(int steps, int jump_length, int jump_n_sample) {
    long jumps = 0;
    for (int j = 0; j < steps - jump_length; j += jump_length) jumps += jump_n_sample - 1;
    return steps + 2 * jumps * jump_length;
}

size_t df_inpaint_run_bytes(const df_sampler_params *p, int n, size_t dim, int jump_length, int jump_n_sample) {
    const int N = p->steps;
    const long walk_len = N > 0 && jump_length >= 1 && jump_n_sample >= 1 ? walk_length(N, jump_length, jump_n_sample) : 0;
    return df_round64(df_plan_bytes(N)) + df_round64((size_t)walk_len * sizeof(int)) + df_round64((size_t)N * sizeof(int)) +
           df_round64((2 * (size_t)n * dim + dim + (size_t)n) * sizeof(float));
}

df_status df_inpaint_run(const df_schedule *s, const df_sampler_params *p_in, df_denoise_fn fn, void *ctx, int n,
                         size_t dim, const float *known, const float *mask, int jump_length, int jump_n_sample,
                         df_rng *rngs, float *out, void *ws) {
    df_status st = df_plan_check(s, p_in);
    if (st) return st;
    if (!fn || n < 0 || dim == 0 || (n > 0 && (!known || !mask || !out || !rngs)))
        return df_fail(DF_ERR_ARG, "inpaint: bad arguments");
    if (out == known) return df_fail(DF_ERR_ARG, "inpaint: out must not be the known array (it is read every step)");
    if (p_in->learned_variance)
        return df_fail(DF_ERR_ARG, "inpaint: steps with the fixed variance: give the model's prediction alone");
    if (jump_length < 1 || jump_n_sample < 1)
        return df_fail(DF_ERR_ARG, "inpaint: jump_length %d and jump_n_sample %d must be at least 1", jump_length,
                       jump_n_sample);
    if (n == 0) return DF_OK;
    df_sampler_params p = *p_in;
    p.kind = DF_SAMPLER_DDPM;   /* RePaint alg. 1 uses DDPM's ancestral step */
    const int N = p.steps;
    const size_t len = (size_t)n * dim;
    char *mem = ws, *own = NULL;
    if (!mem && !(mem = own = df_alloc_aligned(df_inpaint_run_bytes(&p, n, dim, jump_length, jump_n_sample))))
        return df_fail(DF_ERR_NOMEM, "inpaint: out of memory");
    df_plan pl;
    df_plan_bind(&pl, N, mem);
    char *rest = mem + df_round64(df_plan_bytes(N));
    int *left = (int *)rest;
    const long walk_len = jump_walk(N, jump_length, jump_n_sample, left, NULL);
    DF_ASSERT(walk_len == walk_length(N, jump_length, jump_n_sample));
    int *walk = (int *)(rest + df_round64((size_t)N * sizeof(int)));
    jump_walk(N, jump_length, jump_n_sample, left, walk);
    float *res = (float *)((char *)walk + df_round64((size_t)walk_len * sizeof(int)));
    float *x0 = res + len, *scratch = x0 + len, *tb = scratch + dim;
    float *x = out;
    if ((st = df_plan_fill(s, &p, &pl))) goto done;

    /* Positions of the walk count from the clean end (diffusers' units); level i of the plan is position
     * N - 1 - i and the clean end is position -1. After visiting position e the image is at position e - 1:
     * a reverse step from e when the walk descends, a forward jump from e - 2 to e - 1 when it climbs. */
    df_fill_normal_each(rngs, n, dim, x);   /* x_T ~ N(0, I) */
    int last = N, deepest = 0;
    for (long k = 0; k < walk_len; k++) {
        const int e = walk[k];
        if (e < last) {
            const int i = N - 1 - e;   /* model level; the step goes to level i + 1 */
            const double a = pl.abar[i], ap = pl.abar[i + 1];
            for (int r = 0; r < n; r++) tb[r] = pl.t[i];
            st = fn(ctx, n, x, tb, res);
            if (st) break;
            df_pred_convert(p.prediction, a, len, x, res, x0, NULL);
            df_x0_process(&p, n, dim, x0, scratch);
            /* RePaint alg. 1 line 7: x_{t-1}^unknown from DDPM's reverse step (DDPM eq. 7 over the subsequence,
             * variance beta~ or beta), no noise into the clean end */
            const double ca = a / ap, cb = 1 - ca, b = 1 - a;
            const double c0 = sqrt(ap) * cb / b, ct = sqrt(ca) * (1 - ap) / b;
            const double sd = e == 0 ? 0 : sqrt(p.variance_large ? cb : fmax((1 - ap) / b * cb, 1e-20));
            /* line 5: x_{t-1}^known ~ q(x_{t-1} | x_0) at the level the step lands on (exactly the known values at
             * the clean end); line 8: x_{t-1} = m x^known + (1 - m) x^unknown */
            const double ka = sqrt(ap), kb = sqrt(1 - ap);
            for (int r = 0; r < n; r++) {
                const size_t o = (size_t)r * dim;
                for (size_t j = 0; j < dim; j++) {
                    double unk = c0 * x0[o + j] + ct * x[o + j];
                    if (sd > 0) unk += sd * df_rng_normal(&rngs[r]);
                    double kv = known[o + j];
                    if (kb > 0) kv = ka * kv + kb * df_rng_normal(&rngs[r]);
                    x[o + j] = (float)(mask[j] * kv + (1 - mask[j]) * unk);
                }
            }
            if (i + 1 > deepest) {
                /* progress counts the levels reached, 1..steps, so a walk with jumps still reports steps calls */
                deepest = i + 1;
                if (p.progress) p.progress(p.progress_ctx, deepest, N, x, x0);
            }
        } else {
            /* line 10 (resampling): back up one step of the subsequence with the forward process,
             * q(x_t | x_{t'}) = N(sqrt(abar_t / abar_{t'}) x_{t'}, (1 - abar_t / abar_{t'}) I), the composition of the
             * single steps q(x_s | x_{s-1}) between the two levels */
            const int from = N + 1 - e, to = N - e;   /* plan levels: position e - 2 -> e - 1 */
            const double ratio = pl.abar[to] / pl.abar[from], ca = sqrt(ratio), cb = sqrt(1 - ratio);
            for (int r = 0; r < n; r++)
                for (size_t j = (size_t)r * dim; j < (size_t)(r + 1) * dim; j++)
                    x[j] = (float)(ca * x[j] + cb * df_rng_normal(&rngs[r]));
        }
        last = e;
    }
done:
    df_free_aligned(own);
    return st;
}

df_status df_inpaint(const df_schedule *s, const df_sampler_params *p, df_denoise_fn fn, void *ctx, int n,
                     size_t dim, const float *known, const float *mask, int jump_length, int jump_n_sample,
                     df_rng *rng, float *out) {
    if (!rng) return df_fail(DF_ERR_ARG, "inpaint: bad arguments");
    df_rng *rngs;
    df_status st = df_sample_streams_new(rng, n, &rngs);
    if (!st) st = df_inpaint_run(s, p, fn, ctx, n, dim, known, mask, jump_length, jump_n_sample, rngs, out, NULL);
    free(rngs);
    return st;
}

df_status df_ddim_invert(const df_schedule *s, const df_sampler_params *p_in, df_denoise_fn fn, void *ctx, int n,
                         size_t dim, const float *x0_in, float *xT) {
    df_status st = df_plan_check(s, p_in);
    if (st) return st;
    if (!fn || n < 0 || dim == 0 || (n > 0 && (!x0_in || !xT)))
        return df_fail(DF_ERR_ARG, "ddim_invert: bad arguments");
    if (p_in->learned_variance) return df_fail(DF_ERR_ARG, "ddim_invert: DDIM takes the model's prediction alone");
    if (n == 0) return DF_OK;
    df_sampler_params p = *p_in;
    p.kind = DF_SAMPLER_DDIM;
    p.eta = 0;
    const int N = p.steps;
    const size_t len = (size_t)n * dim;
    df_plan pl;
    const size_t plan_bytes = df_round64(df_plan_bytes(N));
    char *mem = malloc(plan_bytes + (3 * len + dim + (size_t)n) * sizeof(float));
    if (!mem) return df_fail(DF_ERR_NOMEM, "ddim_invert: out of memory");
    df_plan_bind(&pl, N, mem);
    if ((st = df_plan_fill(s, &p, &pl))) {
        free(mem);
        return st;
    }
    float *out = (float *)(mem + plan_bytes), *x0 = out + len, *eps = x0 + len, *scratch = eps + len, *tb = scratch + dim;
    float *x = xT;
    if (x != x0_in) memmove(x, x0_in, len * sizeof(float));
    /* The DDIM ODE (Song et al. 2021 eq. 12 with sigma = 0; in x / sqrt(abar) it is d(x / sqrt(abar)) =
     * eps d sigma, eq. 14) run upwards with explicit steps, as diffusers' DDIMInverseScheduler: from level i + 1
     * to level i, the model is asked at x_{i+1} but at the target timestep t_i (the one the sampling step
     * that undoes this one asks at), its eps read at that timestep, x_0 = (x_{i+1} - sqrt(1 - abar_{i+1}) eps)
     * / sqrt(abar_{i+1}), x_i = sqrt(abar_i) x_0 + sqrt(1 - abar_i) eps. The first step starts from the data
     * (abar = 1, x_0 = the data). Working from eps alone makes every prediction type invert alike
     * (diffusers converts sample and v predictions at level i + 1, which mixes two noise levels). */
    for (int i = N - 1; i >= 0; i--) {
        for (int r = 0; r < n; r++) tb[r] = pl.t[i];
        st = fn(ctx, n, x, tb, out);
        if (st) break;
        df_pred_convert(p.prediction, pl.abar[i], len, x, out, NULL, eps);
        const double as = sqrt(pl.abar[i + 1]), bs = sqrt(1 - pl.abar[i + 1]);
        for (size_t j = 0; j < len; j++) x0[j] = (float)((x[j] - bs * eps[j]) / as);
        df_x0_process(&p, n, dim, x0, scratch);
        const double a = sqrt(pl.abar[i]), b = sqrt(1 - pl.abar[i]);
        for (size_t j = 0; j < len; j++) x[j] = (float)(a * x0[j] + b * eps[j]);
        if (p.progress) p.progress(p.progress_ctx, N - i, N, x, x0);
    }
    free(mem);
    return st;
}
