/* df_generate: the one call behind `diffuse sample`. Batches of images run down the reverse chain from
 * noise (or from an image to edit), with classifier-free or classifier guidance; every buffer is sized
 * before the first step. Image k's noise is stream first_index + k of the seed, whatever the batching. Also
 * the way back: DDIM inversion of images to their noise (df_invert). */
#define _DEFAULT_SOURCE   /* getrandom */
#include "safetensors.h"
#include "sampler.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

typedef struct {
    const df_generate_params *p;
    df_sampler_params sp;
    int    c, h, w, B, nb;
    size_t dim;
    int    k;          /* the model's class embeddings (0: unconditional) */
    int    guided;     /* classifier-free guidance: a doubled batch */
    int   *labels;     /* n */
    df_rng *rngs;      /* B: one generator per image of a batch */
    void  *ws;         /* the sampler's workspace for a batch of B */
    float *src;        /* B x dim: the edited image, once per image of a batch */
    float *mask;       /* dim: 1 keep, 0 generate */
    float *guide_ts;   /* classifier guidance with DDPM: the sampler's timesteps */
    df_classifier_free_guidance cfg;
    df_classifier_guidance      cg;
    df_model_denoiser           dn, clf_dn;
    df_denoise_fn fn;  /* what the sampler calls: the model, wrapped by the guidance asked for */
    void         *fn_ctx;
    int  first, bn;    /* the batch being run */
    long done, total;     /* sampler steps of the runs before this one, and of all of them */
    int  phases, phase;   /* runs per batch (inversion and reconstruction: 2) and the one running */
} gen;

void df_generate_params_default(df_generate_params *p) {
    memset(p, 0, sizeof *p);
    df_sampler_params_default(&p->sampler);
    p->sampler.steps = 0;
    p->sampler.clip_x0 = 1;
    p->batch = 64;
    p->null_class = -1;
    p->guidance = 1;
    p->guidance_sigma_hi = INFINITY;
    p->classifier_scale = 1;
    p->jump_length = p->jump_n = 1;
}

void df_generate_params_for(df_generate_params *p, df_model *model, const df_scheduler_config *sc,
                            const df_schedule *schedule) {
    df_generate_params_default(p);
    p->model = model, p->schedule = schedule;
    p->sampler.prediction = sc->prediction;
    p->edm_sigma_data = sc->edm_sigma_data;
}

int df_guidance_interval_limits(double sigma_lo, double sigma_hi) { return sigma_lo > 0 || sigma_hi < INFINITY; }

static int is_conditional(const df_unet_config *c) { return c->num_class_embeds > 0 || c->class_embed_timestep; }

/* The classes labels pick: a text model's texts, or the model's class embeddings (0: unconditional). */
static int label_count(const df_generate_params *p, const df_unet_config *mc) {
    return mc->condition ? p->n_texts : is_conditional(mc) ? mc->num_class_embeds : 0;
}

/* Everything that can be refused before memory is touched. */
static df_status check(const df_generate_params *p, gen *g) {
    if (!p->model || !p->schedule) return df_fail(DF_ERR_ARG, "generate: a model and its schedule are required");
    if (p->n < 1 || p->batch < 0) return df_fail(DF_ERR_ARG, "generate: n = %d must be >= 1 and batch >= 0", p->n);
    const df_unet_config *mc = df_model_config(p->model);
    if (mc->classifier_classes > 0) return df_fail(DF_ERR_CONFIG, "generate: the model is a classifier");
    g->c = mc->in_channels;
    g->h = p->h > 0 ? p->h : mc->sample_size > 0 ? mc->sample_size : 32;
    g->w = p->w > 0 ? p->w : g->h;
    /* the U-Net is convolutional and its attention has no positions: any size its downsamplings halve evenly */
    const int f = 1 << (mc->num_levels - 1);
    if (g->h % f || g->w % f || g->h > DF_MAX_SIZE || g->w > DF_MAX_SIZE)
        return df_fail(DF_ERR_ARG, "generate: size %dx%d: the model halves images %d times: give multiples of %d up "
                       "to %d", g->w, g->h, mc->num_levels - 1, f, DF_MAX_SIZE);
    g->dim = (size_t)g->c * g->h * g->w;
    g->B = DF_MIN(p->batch > 0 ? p->batch : 64, p->n);
    g->nb = (p->n + g->B - 1) / g->B;
    if (mc->condition && (is_conditional(mc) || !p->texts || p->n_texts < 1 || p->text_len < 1))
        return df_fail(DF_ERR_ARG, is_conditional(mc) ? "generate: a text model with class embeddings is not supported"
                                                       : "generate: this model attends to text: give it text states");
    if (!mc->condition && p->texts) return df_fail(DF_ERR_ARG, "generate: this model does not attend to text");
    g->k = label_count(p, mc);
    g->guided = p->guidance != 1 || p->guidance_rescale > 0;
    g->sp = p->sampler;
    df_sampler_params *sp = &g->sp;
    if (p->edm_sigma_data > 0) sp->prediction = DF_PRED_SAMPLE;   /* the EDM adapter gives x_0 */
    if (p->inpaint_image) sp->kind = DF_SAMPLER_DDPM;   /* RePaint alg. 1 takes DDPM's step */
    /* a learned variance (improved DDPM) is DDPM's to use; guidance, editing and the other samplers take the
     * prediction alone */
    sp->learned_variance = df_model_learned_variance(p->model) && sp->kind == DF_SAMPLER_DDPM && !g->guided &&
                           !p->classifier && !p->inpaint_image;
    if (sp->steps <= 0) sp->steps = sp->kind == DF_SAMPLER_DDPM ? p->schedule->T : 50;
    sp->progress = NULL;
    if (sp->steps > p->schedule->T)
        return df_fail(DF_ERR_ARG, "generate: %d steps, the model has only %d timesteps", sp->steps, p->schedule->T);
    df_status st = df_plan_check(p->schedule, sp);
    if (st) return st;
    if (p->init_image && p->inpaint_image) return df_fail(DF_ERR_ARG, "generate: img2img or inpainting, not both");
    if (p->init_image && !(p->strength > 0 && p->strength <= 1))
        return df_fail(DF_ERR_ARG, "generate: strength %g must be in (0, 1]", p->strength);
    if (p->init_image && (int)(sp->steps * p->strength) < 1)
        return df_fail(DF_ERR_ARG, "generate: strength %g of %d steps runs no step (at least %g)", p->strength,
                       sp->steps, 1.0 / sp->steps);
    if (p->inpaint_image && (!p->mask || p->jump_length < 1 || p->jump_n < 1))
        return df_fail(DF_ERR_ARG, "generate: inpainting needs a mask, and jump length and count >= 1");
    if (g->guided && !g->k) return df_fail(DF_ERR_ARG, "guidance: this model is unconditional (it has no classes)");
    if (g->guided && p->null_class < 0)
        return df_fail(DF_ERR_ARG, mc->condition ? "guidance: give the empty text's row (null_class) for the "
                                                   "unconditional branch"
                                                 : "guidance: this model has no null class (train with classes to "
                                                   "learn one)");
    if (!(p->guidance >= 0) || !(p->guidance_rescale >= 0 && p->guidance_rescale <= 1))
        return df_fail(DF_ERR_ARG, "guidance: scale %g must be >= 0 and rescale %g in [0, 1]", p->guidance,
                       p->guidance_rescale);
    if (!(p->guidance_sigma_lo >= 0 && p->guidance_sigma_hi > p->guidance_sigma_lo))
        return df_fail(DF_ERR_ARG, "guidance: the interval (%g, %g] is empty or negative", p->guidance_sigma_lo,
                       p->guidance_sigma_hi);
    if (p->classifier) {
        const int kc = df_model_config(p->classifier)->classifier_classes;
        if (kc <= 0) return df_fail(DF_ERR_CONFIG, "classifier guidance: the classifier is not a classifier");
        if (g->k && kc != g->k - (g->k > kc))
            return df_fail(DF_ERR_CONFIG, "classifier guidance: %d classes, the model has %d", kc, g->k);
        if (!(p->classifier_scale >= 0)) return df_fail(DF_ERR_ARG, "classifier guidance: scale must be >= 0");
    }
    return DF_OK;
}

/* The labels of the n images: the caller's, checked, or the classes in turn. */
static df_status fill_labels(const df_generate_params *p, gen *g) {
    const int kc = p->classifier ? df_model_config(p->classifier)->classifier_classes : 0;
    const int count = g->k ? g->k : kc;   /* the classes labels may name */
    if (!count) {
        if (p->labels) return df_fail(DF_ERR_ARG, "labels: this model is unconditional (it has no classes)");
        return DF_OK;
    }
    const int null = g->k ? p->null_class : -1;
    for (int i = 0; p->labels && i < p->n; i++) {
        if (p->labels[i] < 0 || p->labels[i] >= count)
            return df_fail(DF_ERR_ARG, "labels: class %d out of range 0..%d", p->labels[i], count - 1);
        if (p->labels[i] == null)
            return df_fail(DF_ERR_ARG, "labels: %d is the null class (\"no class\"); guidance 0 gives unconditional "
                           "images", p->labels[i]);
    }
    if (p->labels) memcpy(g->labels, p->labels, sizeof(int) * (size_t)p->n);
    else df_default_labels(count, null, p->n, g->labels);
    return DF_OK;
}

void df_spread_labels(const int *list, int k, int n, int *labels) {
    for (int i = 0; i < n; i++) labels[i] = list[(int)((long)i * k / n)];
}

int df_default_labels(int count, int null_class, int n, int *labels) {
    const int skip = null_class >= 0 && null_class < count, k = count - skip;
    for (int i = 0; labels && k > 0 && i < n; i++) {
        const int j = (int)((long)i * k / n);   /* the j-th class but the null one, as df_spread_labels picks */
        labels[i] = skip && j >= null_class ? j + 1 : j;
    }
    return k;
}

df_status df_random_seed(uint64_t *seed) {
    uint64_t v = 0;
    ssize_t got = getrandom(&v, sizeof v, 0);
    if (got != (ssize_t)sizeof v) {   /* a kernel without getrandom: the device it reads */
        FILE *f = fopen("/dev/urandom", "rb");
        got = f && fread(&v, sizeof v, 1, f) == 1 ? (ssize_t)sizeof v : -1;
        if (f) fclose(f);
        if (got < 0) return df_fail(DF_ERR_IO, "random seed: neither getrandom nor /dev/urandom gave one");
    }
    *seed = v & 0xffffffffu;   /* short to type, and what other tools' random seeds are */
    return DF_OK;
}

static df_status stop_or_denoise(void *ctx, int n, const float *x, const float *t, float *out) {
    gen *g = ctx;
    if (g->p->stop && *g->p->stop) return df_fail(DF_ERR_ARG, "stopped");
    return g->fn(g->fn_ctx, n, x, t, out);
}

static void on_sampler_step(void *ctx, int step, int steps, const float *x, const float *x0) {
    gen *g = ctx;
    if (!g->p->on_step) return;
    df_generate_step s = {g->first, g->bn, step, steps, g->done + (long)g->phase * steps + step, g->total, x, x0};
    g->p->on_step(g->p->ctx, &s);
}

/* Every buffer and the model's largest batch, before the first step. */
static df_status setup(const df_generate_params *p, gen *g) {
    const int B = g->B;
    const size_t dim = g->dim;
    const int edit = p->init_image || p->inpaint_image;
    size_t ws = p->inpaint_image ? df_inpaint_run_bytes(&g->sp, B, dim, p->jump_length, p->jump_n)
                                 : df_sampler_run_bytes(&g->sp, B, dim);
    g->labels = malloc(sizeof(int) * (size_t)p->n);
    g->rngs = malloc(sizeof(df_rng) * (size_t)B);
    g->ws = df_alloc_aligned(ws);
    if (edit) g->src = malloc(sizeof(float) * (size_t)B * dim);
    if (p->inpaint_image) g->mask = malloc(sizeof(float) * dim);
    if (!g->labels || !g->rngs || !g->ws || (edit && !g->src) || (p->inpaint_image && !g->mask))
        return df_fail(DF_ERR_NOMEM, "generate: out of memory for batches of %d images of %dx%d", B, g->h, g->w);
    df_status st = fill_labels(p, g);
    if (st) return st;
    for (int i = 0; edit && i < B; i++) memcpy(g->src + (size_t)i * dim, p->init_image ? p->init_image : p->inpaint_image,
                                               sizeof(float) * dim);
    for (int ch = 0; p->inpaint_image && ch < g->c; ch++)
        memcpy(g->mask + (size_t)ch * g->h * g->w, p->mask, sizeof(float) * (size_t)g->h * g->w);

    g->dn = (df_model_denoiser){.model = p->model, .h = g->h, .w = g->w, .edm_schedule = p->schedule,
                                .edm_sigma_data = p->edm_sigma_data, .texts = p->texts, .ntexts = p->n_texts,
                                .text_len = p->text_len};
    g->fn = g->sp.learned_variance ? df_model_denoise_variance : df_model_denoise, g->fn_ctx = &g->dn;
    if (g->guided) {   /* both predictions from one network call of twice the batch */
        if ((st = df_classifier_free_guidance_init(&g->cfg, df_model_class_denoise, &g->dn, dim, p->null_class)) ||
            (st = df_classifier_free_guidance_reserve(&g->cfg, B)))
            return st;
        g->cfg.scale = p->guidance, g->cfg.rescale = p->guidance_rescale;
        if (df_guidance_interval_limits(p->guidance_sigma_lo, p->guidance_sigma_hi))
            g->cfg.schedule = p->schedule, g->cfg.sigma_lo = p->guidance_sigma_lo, g->cfg.sigma_hi = p->guidance_sigma_hi;
        g->fn = df_classifier_free_guidance_denoise, g->fn_ctx = &g->cfg;
    }
    if (p->classifier) {   /* around whatever predicts the noise */
        g->clf_dn = (df_model_denoiser){.model = p->classifier, .h = g->h, .w = g->w, .labels = NULL};
        if ((st = df_classifier_guidance_init(&g->cg, g->fn, g->fn_ctx, df_model_classify, &g->clf_dn, p->schedule,
                                              g->sp.prediction, dim)) ||
            (st = df_classifier_guidance_reserve(&g->cg, B)))
            return st;
        g->cg.scale = p->classifier_scale;
        if (g->sp.kind == DF_SAMPLER_DDPM) {   /* algorithm 1: the mean shift needs the step list */
            if (!(g->guide_ts = malloc(sizeof(float) * (size_t)g->sp.steps)))
                return df_fail(DF_ERR_NOMEM, "generate: out of memory");
            if ((st = df_sampler_timesteps(p->schedule, &g->sp, g->guide_ts))) return st;
            g->cg.ddpm_mean = 1, g->cg.large_variance = g->sp.variance_large;
            g->cg.timesteps = g->guide_ts, g->cg.nsteps = g->sp.steps;
        }
        g->fn = df_classifier_guidance_denoise, g->fn_ctx = &g->cg;
    }
    /* the network's largest batch (guidance doubles it), planned once: no step allocates */
    if ((st = df_model_reserve(p->model, g->guided ? 2 * B : B, g->h, g->w))) return st;
    if (p->texts && (st = df_model_reserve_context(p->model, g->guided ? 2 * B : B, p->text_len))) return st;
    if (p->classifier && (st = df_model_reserve(p->classifier, B, g->h, g->w))) return st;
    if (g->guided || p->classifier) g->sp.clipped_eps = g->sp.clipped_eps || !p->model_eps;
    g->sp.progress = on_sampler_step, g->sp.progress_ctx = g;
    g->phases = DF_MAX(g->phases, 1);
    g->total = (long)g->nb * g->phases * g->sp.steps;
    return DF_OK;
}

/* Images i0 .. i0 + bn - 1 into x (the batch's first image). */
static df_status run_batch(const df_generate_params *p, gen *g, int i0, int bn, float *x) {
    const int *lab = g->k || p->classifier ? g->labels + i0 : NULL;
    g->first = i0, g->bn = bn;
    g->dn.labels = g->k ? lab : NULL;
    g->cfg.labels = lab;
    g->cg.labels = lab;
    df_rng key;
    df_rng_init_stream(&key, p->seed, p->first_index + (uint64_t)i0);
    df_sample_streams(&key, bn, g->rngs);
    const df_schedule *s = p->schedule;
    if (p->init_image)
        return df_img2img_run(s, &g->sp, stop_or_denoise, g, bn, g->dim, g->src, p->strength, g->rngs, x, g->ws);
    if (p->inpaint_image)
        return df_inpaint_run(s, &g->sp, stop_or_denoise, g, bn, g->dim, g->src, g->mask, p->jump_length, p->jump_n,
                              g->rngs, x, g->ws);
    df_fill_normal_each(g->rngs, bn, g->dim, x);
    return df_sampler_run(s, &g->sp, stop_or_denoise, g, bn, g->dim, g->rngs, x, 0, g->ws);
}

static void gen_free(gen *g) {
    df_classifier_free_guidance_free(&g->cfg);
    df_classifier_guidance_free(&g->cg);
    free(g->labels), free(g->rngs), free(g->src), free(g->mask), free(g->guide_ts);
    df_free_aligned(g->ws);
}

df_status df_generate_images(const df_generate_params *p, int first, int count, float *x) {
    if (!p || !x) return df_fail(DF_ERR_ARG, "generate: no parameters or output");
    gen g;
    memset(&g, 0, sizeof g);
    g.p = p;
    df_status st = check(p, &g);
    if (!st && (first < 0 || count < 1 || first > p->n - count))
        st = df_fail(DF_ERR_ARG, "generate: images %d..%d are not among the run's %d", first, first + count - 1, p->n);
    if (!st) st = setup(p, &g);
    const int b0 = st ? 0 : first / g.B, b1 = st ? -1 : (first + count - 1) / g.B;
    g.total = (long)(b1 - b0 + 1) * g.sp.steps;
    /* a batch only partly asked for runs whole, as df_generate runs it (its size changes the
     * network's float rounding), into scratch; the others in place */
    float *scratch = NULL;
    if (!st && (first || count < p->n) && !(scratch = malloc(sizeof(float) * (size_t)g.B * g.dim)))
        st = df_fail(DF_ERR_NOMEM, "generate: out of memory for a batch of %d images", g.B);
    for (int b = b0; b <= b1 && !st; b++, g.done += g.sp.steps) {
        const int i0 = b * g.B, bn = DF_MIN(g.B, p->n - i0);
        const int lo = DF_MAX(i0, first), hi = DF_MIN(i0 + bn, first + count);
        float *out = lo == i0 && hi == i0 + bn ? x + (size_t)(i0 - first) * g.dim : scratch;
        st = run_batch(p, &g, i0, bn, out);
        if (!st && out == scratch)
            memcpy(x + (size_t)(lo - first) * g.dim, scratch + (size_t)(lo - i0) * g.dim,
                   sizeof(float) * (size_t)(hi - lo) * g.dim);
    }
    free(scratch);
    gen_free(&g);
    return st;
}

df_status df_generate(const df_generate_params *p, float *x) {
    return df_generate_images(p, 0, p ? p->n : 0, x);
}

df_status df_invert(const df_generate_params *p_in, const float *x0, float *noise, float *recon) {
    if (!p_in || !x0 || !noise) return df_fail(DF_ERR_ARG, "invert: no parameters, images or noise");
    if (p_in->guidance != 1 || p_in->guidance_rescale > 0 || p_in->classifier || p_in->init_image ||
        p_in->inpaint_image)
        return df_fail(DF_ERR_ARG, "invert: DDIM inversion runs the model alone: no guidance, classifier or edit");
    /* the ODE: DDIM without noise, whatever the caller's sampler; and no clipping or thresholding of x_0, which
     * the way up cannot undo (with clipping, a Fashion-MNIST image comes back as another garment) */
    df_generate_params p = *p_in;
    p.sampler.kind = DF_SAMPLER_DDIM, p.sampler.eta = 0;
    p.sampler.clip_x0 = p.sampler.dynamic_threshold = p.sampler.clipped_eps = 0;
    gen g;
    memset(&g, 0, sizeof g);
    g.p = &p;
    g.phases = recon ? 2 : 1;
    df_status st = check(&p, &g);
    if (!st) st = setup(&p, &g);
    for (int b = 0; b < g.nb && !st; b++) {
        const int i0 = b * g.B, bn = DF_MIN(g.B, p.n - i0);
        const size_t off = (size_t)i0 * g.dim;
        g.first = i0, g.bn = bn, g.phase = 0, g.done = (long)b * g.phases * g.sp.steps;
        g.dn.labels = g.k ? g.labels + i0 : NULL;
        st = df_ddim_invert(p.schedule, &g.sp, stop_or_denoise, &g, bn, g.dim, x0 + off, noise + off);
        if (st || !recon) continue;
        /* back down from that noise: what sampling with DDIM from it makes */
        memcpy(recon + off, noise + off, sizeof(float) * (size_t)bn * g.dim);
        g.phase = 1;
        st = df_sampler_run(p.schedule, &g.sp, stop_or_denoise, &g, bn, g.dim, NULL, recon + off, 0, g.ws);
    }
    gen_free(&g);
    return st;
}

df_status df_noise_save(const char *path, const float *noise, int n, int c, int h, int w, const char *parameters) {
    if (!path || !noise || n < 1 || c < 1 || h < 1 || w < 1)
        return df_fail(DF_ERR_ARG, "%s: no noise to write", path ? path : "noise");
    const st_entry e = {.name = "noise", .ndim = 4, .shape = {n, c, h, w}, .f32 = noise};
    const char *const meta[] = {"parameters", parameters};
    return st_write(path, &e, 1, meta, parameters ? 1 : 0);
}
