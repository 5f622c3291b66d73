/* The public model API: create with diffusers' default init, load and save diffusers model directories,
 * forward and backward through the float32 tape. One block each for parameters, gradients, activations. */
#define _POSIX_C_SOURCE 200809L
#define DF_REAL_F64 0
#include "ops_real.h"
#include "safetensors.h"
#include "conv_fast.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <string.h>
#include <sys/stat.h>

struct df_model {
    df_unet_config cfg;
    unet_graph     g;            /* parameter table + tape for (g.n, g.h, g.w) */
    int            max_n, max_h, max_w;   /* df_model_reserve's size (max_n 0: none reserved) */
    float         *params, *grads;
    float         *act, *dact, *scratch;
    size_t         act_cap, dact_cap, scratch_cap;
    float         *out, *dout;   /* the tape's output and a gradient for it, g.n images */
    size_t         out_cap, dout_cap;
    double        *prob;         /* a classifier's softmax row (classifier_classes values) */
    float         *t;            /* timesteps of the last forward, padded to g.n */
    int           *labels;       /* labels of the last forward (padded to g.n) */
    int            t_cap;
    int            fwd_n;        /* images of the last forward; the rest of the tape's batch is padding */
    int            have_forward; /* the activations hold a forward pass that backward can use */
    int            train;
    df_kernels     kernels;
    double        *prof;
    df_rng        *rng;
    uint64_t       dropout_seed;
    int            threads;      /* OpenMP threads of its calls; 0: the caller's OpenMP default */
    float         *ctx;          /* a condition model's text states (ctx_n, ctx_len, cross_attention_dim) */
    size_t         ctx_cap;
    int            ctx_n, ctx_len;
    int            ctx_cache;    /* the last pass was an inference pass whose text-only outputs are still in act */
    long           ctx_reused;   /* inference passes that kept them */
};

void df_model_set_threads(df_model *m, int n) { m->threads = n > 0 ? n : 0; }
int  df_model_threads(const df_model *m) { return m->threads ? m->threads : omp_get_max_threads(); }
#define threads_enter(m) df_threads_enter((m)->threads)
#define threads_leave df_threads_leave

/* Memory, sized once (df_model_reserve): a call of n images of h x w runs on the reserved tape when
 * h x w is the reserved size and n <= max_n. The batch is then padded to the tape's: the tail images get
 * zero pixels, t = 0 and label 0, and in a backward pass a zero output gradient, so they add exactly
 * nothing to the parameter gradients (every op is per image and its backward linear in the output
 * gradient); outputs are kept for the first n images only. Any other call gets a tape for exactly its
 * n as before (at the reserved size a larger n grows the reservation). Buffers only grow, except when
 * df_model_reserve sizes them anew. */
static df_status ensure_graph(df_model *m, int n, int h, int w) {
    const int at_reserved = m->max_n > 0 && h == m->max_h && w == m->max_w;
    const int want = at_reserved ? DF_MAX(n, m->max_n) : n, L = m->ctx_len > 0 ? m->ctx_len : 1;
    if (m->g.nodes && m->g.n == want && m->g.h == h && m->g.w == w && (m->g.ctx < 0 || m->g.vals[m->g.ctx].w == L))
        return DF_OK;
    unet_graph g;
    df_status st = unet_build(&m->cfg, want, h, w, L, &g);
    if (st) return st;
    DF_ASSERT(!m->params || g.nparam_values == m->g.nparam_values);
    if (at_reserved) m->max_n = want;
    /* oneDNN primitives are planned for this tape only on the first pass that needs them */
    unet_graph_free(&m->g);
    m->g = g;
    m->have_forward = 0;
    m->ctx_cache = 0;
    return DF_OK;
}


/* Buffers for a pass on the current tape: activations for the training placement (keep) or the
 * inference one, the gradient block (grads), scratch for the threads in effect, inputs and outputs. */
static df_status ensure_buffers(df_model *m, int keep, int grads, int exact) {
    const unet_graph *g = &m->g;
    const float *act_before = m->act;
    const gvalue *o = &g->vals[g->out];
    size_t act = keep ? g->act_size : g->infer_size, scratch = g->scratch_size * (size_t)omp_get_max_threads();
    size_t out = (size_t)o->n * o->c * o->h * o->w;
    if (df_fit_aligned((void **)&m->act, &m->act_cap, act, sizeof(float), exact) ||
        (grads && df_fit_aligned((void **)&m->dact, &m->dact_cap, g->grad_size, sizeof(float), exact)) ||
        df_fit_aligned((void **)&m->scratch, &m->scratch_cap, scratch, sizeof(float), exact) ||
        df_fit_aligned((void **)&m->out, &m->out_cap, out, sizeof(float), exact) ||
        df_fit_aligned((void **)&m->dout, &m->dout_cap, out, sizeof(float), exact))
        return df_fail(DF_ERR_NOMEM, "out of memory for a batch of %d images of %dx%d (%.1f MB of activations)", g->n,
                       g->h, g->w, (double)(act + (grads ? g->grad_size : 0)) * 4.0 / 1e6);
    if (m->act != act_before) m->ctx_cache = 0;   /* a new activation block holds nothing of the last pass */
    if (g->n > m->t_cap || (exact && g->n != m->t_cap)) {
        free(m->t);
        free(m->labels);
        m->t = malloc(sizeof(float) * (size_t)g->n);
        m->labels = malloc(sizeof(int) * (size_t)g->n);
        m->t_cap = (m->t && m->labels) ? g->n : 0;
        if (!m->t_cap) return df_fail(DF_ERR_NOMEM, "out of memory");
    }
    return DF_OK;
}

/* A model with its parameter table but no weights yet. `max_values` (0: no limit) refuses a config that
 * needs more parameters before anything that large is allocated (a checkpoint's file size bounds it). */
static df_status model_new(const df_unet_config *cfg, size_t max_values, const char *what, df_model **out) {
    *out = NULL;
    df_status st = df_unet_config_validate(cfg);
    if (st) return st;
    df_blas_single_thread();
    df_model *m = calloc(1, sizeof *m);
    if (!m) return df_fail(DF_ERR_NOMEM, "out of memory");
    m->cfg = *cfg;
    /* the smallest image the network takes: the parameter table does not depend on the size. The table
     * is checked before ensure_graph allocates anything for it. */
    int f = 1 << (cfg->num_levels - 1);
    unet_graph probe;
    st = unet_build(cfg, 1, f, f, 1, &probe);
    size_t np = st ? 0 : probe.nparam_values;
    if (!st) unet_graph_free(&probe);
    if (!st && (np > DF_MAX_PARAMS || (max_values && np > max_values))) {
        df_model_free(m);
        if (np > DF_MAX_PARAMS)
            return df_fail(DF_ERR_CONFIG, "%s: the config asks for %zu parameters; at most %zu are supported", what,
                           np, (size_t)DF_MAX_PARAMS);
        return df_fail(DF_ERR_SHAPE, "%s: holds at most %zu values, the config needs %zu parameters", what,
                       max_values, np);
    }
    if (!st) st = ensure_graph(m, 1, f, f);
    if (st) {
        df_model_free(m);
        return st;
    }
    m->params = df_alloc_aligned(np * sizeof(float));
    m->grads = df_alloc_aligned(np * sizeof(float));
    m->prob = malloc(sizeof(double) * (size_t)DF_MAX(cfg->classifier_classes, 1));
    if (!m->params || !m->grads || !m->prob) {
        df_model_free(m);
        return df_fail(DF_ERR_NOMEM, "out of memory for %zu parameters", np);
    }
    memset(m->grads, 0, np * sizeof(float));
    *out = m;
    return DF_OK;
}

void df_model_free(df_model *m) {
    if (!m) return;
    unet_graph_free(&m->g);
    df_free_aligned(m->params);
    df_free_aligned(m->grads);
    df_free_aligned(m->act);
    df_free_aligned(m->dact);
    df_free_aligned(m->scratch);
    df_free_aligned(m->out);
    df_free_aligned(m->dout);
    free(m->prob);
    free(m->t);
    free(m->labels);
    free(m->ctx);
    free(m);
}

df_status df_model_create(const df_unet_config *cfg, uint64_t seed, df_model **out) {
    df_status st = model_new(cfg, 0, "config", out);
    if (st) return st;
    df_model *m = *out;
    df_rng rng;
    df_rng_init(&rng, seed);
    /* PyTorch's defaults, which diffusers keeps: kaiming_uniform(a=sqrt(5)) for weights and the same
     * bound for biases, i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)); GroupNorm 1 and 0; Embedding N(0, 1). */
    params_init(&m->g, m->params, &rng);
    return DF_OK;
}

/* diffusers' older attention blocks named the projections query/key/value/proj_attn. */
static int legacy_name(const char *name, char *out, size_t cap) {
    static const char *const map[][2] = {
        {".to_q.", ".query."}, {".to_k.", ".key."}, {".to_v.", ".value."}, {".to_out.0.", ".proj_attn."}};
    for (int i = 0; i < 4; i++) {
        const char *at = strstr(name, map[i][0]);
        if (!at) continue;
        snprintf(out, cap, "%.*s%s%s", (int)(at - name), name, map[i][1], at + strlen(map[i][0]));
        return 1;
    }
    return 0;
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

df_status df_model_load(const char *dir, df_model **out) {
    *out = NULL;
    char path[4096];
    df_unet_config cfg;
    snprintf(path, sizeof path, "%s/config.json", dir);
    df_status st = df_unet_config_load(path, &cfg);
    if (st) return st;
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
    if (!file_exists(path)) snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (!file_exists(path))
        return df_fail(DF_ERR_IO, "%s: no diffusion_pytorch_model.safetensors or model.safetensors", dir);
    st_file f;
    st = st_open(path, &f);
    if (st) return st;
    df_model *m;
    st = model_new(&cfg, f.data_len / 2, path, &m);   /* 2 bytes: the narrowest float dtype */
    if (st) {
        st_close(&f);
        return st;
    }
    st = params_read(&m->g, m->params, &f, path, legacy_name, NULL);
    st_close(&f);
    if (st) {
        df_model_free(m);
        return st;
    }
    *out = m;
    return DF_OK;
}

df_status df_model_save(const df_model *m, const char *dir) {
    df_status st = df_mkdir_p(dir);
    if (st) return st;
    char path[4096];
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
    st = params_write(&m->g, m->params, path);
    if (st) return st;
    snprintf(path, sizeof path, "%s/config.json", dir);
    return df_unet_config_save(&m->cfg, path);
}

const df_unet_config *df_model_config(const df_model *m) { return &m->cfg; }
size_t df_model_num_params(const df_model *m) { return m->g.nparam_values; }
int df_model_num_tensors(const df_model *m) { return m->g.nparams; }
float *df_model_params(df_model *m) {
    m->ctx_cache = 0;   /* the caller may change the weights the kept keys and values came from */
    return m->params;
}
float *df_model_grads(df_model *m) { return m->grads; }

const char *df_model_tensor_info(const df_model *m, int i, int *ndim, int shape[4], size_t *offset) {
    return graph_param_info(&m->g, i, ndim, shape, offset);
}

int df_model_find_tensor(const df_model *m, const char *name) { return unet_find_param(&m->g, name); }

double df_model_flops(const df_model *m, int h, int w) {
    unet_graph g;
    if (h <= 0 || w <= 0) h = w = m->cfg.sample_size > 0 ? m->cfg.sample_size : (1 << (m->cfg.num_levels - 1));
    if (unet_build(&m->cfg, 1, h, w, 1, &g)) return 0;
    double f = g.flops;
    unet_graph_free(&g);
    return f;
}

void df_model_zero_grad(df_model *m) { memset(m->grads, 0, m->g.nparam_values * sizeof(float)); }

void df_model_set_train(df_model *m, int train, df_rng *rng) {
    m->train = train;
    m->rng = rng;
}

void df_model_set_kernels(df_model *m, df_kernels k) { m->kernels = k; }

void        df_model_set_profile(df_model *m, double *table) { m->prof = table; }
void        df_model_set_noise_aware(df_model *m, int on) { m->cfg.classifier_noise_aware = on ? 1 : 0; }
int         df_op_count(void) { return OP_COUNT; }
const char *df_op_name(int i) { return i >= 0 && i < OP_COUNT ? op_table[i].name : "?"; }

/* Plan the fast convolutions of the current tape when they are wanted and not made yet (or were made for
 * another thread count: oneDNN sizes its work split when it makes a primitive). */
static df_status ensure_fast(df_model *m) {
    int want = m->kernels == DF_KERNELS_FAST, threads = omp_get_max_threads();
    if (want && m->g.fast && m->g.fast_threads != threads) {
        conv_fast_free(m->g.fast);
        m->g.fast = NULL;
        m->g.fast_tried = 0;
    }
    if (want && !m->g.fast && !m->g.fast_tried) {
        m->g.fast_tried = 1;
        m->g.fast_threads = threads;
        tape_set_layout(&m->g, conv_fast_block());   /* primitives are made for the blocked layout */
        df_status st = conv_fast_plan(&m->g, &m->g.fast);
        if (!m->g.fast) tape_set_layout(&m->g, 1);
        if (st) return st;
    }
    int use = want && m->g.fast != NULL;
    if (use != m->g.use_fast) {   /* the other path: its layout, and activations of the old one are no use */
        tape_set_layout(&m->g, use ? conv_fast_block() : 1);
        m->have_forward = 0;
        m->g.use_fast = use;
    }
    m->g.prof = m->prof;
    return DF_OK;
}

df_status df_model_reserve(df_model *m, int max_n, int h, int w) {
    if (!m || max_n < 1) return df_fail(DF_ERR_ARG, "df_model_reserve: a model and max_n >= 1 are required");
    const int caller = threads_enter(m);
    const int old_n = m->max_n, old_h = m->max_h, old_w = m->max_w;
    m->max_n = max_n, m->max_h = h, m->max_w = w;
    df_status st = ensure_graph(m, max_n, h, w);
    if (!st) st = ensure_fast(m);
    if (!st) st = ensure_buffers(m, 1, 1, 1);
    if (st) m->max_n = old_n, m->max_h = old_h, m->max_w = old_w;
    threads_leave(caller);
    return st;
}

/* keep: place every value apart so that a backward pass can follow; otherwise reuse space (sampling).
 * t NULL: every timestep 0; eps NULL: the output stays in m->out. */
/* edm (may be NULL): an EDM model's denoiser: the network sees (c_in x, c_noise) and eps receives x_0. */
static df_status model_forward_edm(df_model *m, int n, int h, int w, const float *x, const float *t, const int *labels,
                                   float *eps, int keep, const df_model_denoiser *edm) {
    if (!x) return df_fail(DF_ERR_ARG, "the images x must not be NULL");
    if (n < 1) return df_fail(DF_ERR_SHAPE, "a batch of %d images", n);
    if (m->cfg.num_class_embeds > 0 || m->cfg.class_embed_timestep) {
        if (!labels) return df_fail(DF_ERR_ARG, "this model is class-conditional: class labels are required");
    } else if (labels) {
        return df_fail(DF_ERR_ARG, "this model is unconditional: it takes no class labels");
    }
    for (int i = 0; labels && m->cfg.num_class_embeds > 0 && i < n; i++)
        if (labels[i] < 0 || labels[i] >= m->cfg.num_class_embeds)
            return df_fail(DF_ERR_ARG, "class label %d out of range 0..%d", labels[i], m->cfg.num_class_embeds - 1);
    if (m->cfg.condition && !(m->ctx && (m->ctx_n == n || m->ctx_n == 1)))
        return df_fail(DF_ERR_ARG, m->ctx ? "the model has text states for %d images, not %d"
                                          : "this model attends to text: give it text states first (%d, %d)",
                       m->ctx_n, n);
    df_status st = ensure_graph(m, n, h, w);
    if (!st) st = ensure_fast(m);
    /* at the reserved size every buffer is there (or grows with the reservation, all at once) */
    const int reserved = m->max_n > 0 && h == m->max_h && w == m->max_w;
    if (!st) st = ensure_buffers(m, keep || reserved, reserved, 0);
    if (st) return st;
    unet_graph *g = &m->g;
    const int N = g->n;   /* >= n: images n .. N-1 are padding */
    const size_t per_x = (size_t)m->cfg.in_channels * h * w;
    g->infer = !keep;
    float *xin = m->act + (keep ? g->vals[g->x].off : g->vals[g->x].ioff);
    memcpy(xin, x, sizeof(float) * (size_t)n * per_x);
    memset(xin + (size_t)n * per_x, 0, sizeof(float) * (size_t)(N - n) * per_x);
    if (g->ctx >= 0) {   /* the text states (n, L, D) -> (N, D, 1, L) on the tape, padding images 0 */
        const int D = m->cfg.cross_attention_dim, L = m->ctx_len;
        float *c = m->act + (keep ? g->vals[g->ctx].off : g->vals[g->ctx].ioff);
        /* an inference pass after one on the same states keeps the cross-attentions' keys and values: a sampling
         * run computes them once, not once per step */
        int same = !keep && m->ctx_cache;
        for (int i = 0; i < N; i++) {
            const float *src = m->ctx + (size_t)(m->ctx_n == 1 ? 0 : i) * L * D;
            for (int l = 0; l < L; l++)
                for (int k = 0; k < D; k++) {
                    const size_t at = ((size_t)i * D + k) * L + l;
                    const float v = i < n ? src[(size_t)l * D + k] : 0;
                    if (same && memcmp(&c[at], &v, sizeof v)) same = 0;
                    c[at] = v;
                }
        }
        g->ctx_kept = same;
        m->ctx_reused += same;
    }
    for (int i = 0; i < N; i++) {
        m->t[i] = t && i < n ? t[i] : 0;
        m->labels[i] = labels && i < n ? labels[i] : 0;
    }
    if (edm)   /* in place on the network's own input: no buffer of its own */
        df_edm_sampler_inputs(edm->edm_schedule, edm->edm_sigma_data, n, per_x, x, t, xin, m->t);
    m->dropout_seed = 0;
    if (m->train && g->has_dropout && m->rng) m->dropout_seed = ((uint64_t)df_rng_u32(m->rng) << 32 | df_rng_u32(m->rng)) | 1;
    unet_forward_f32(g, m->params, m->act, m->scratch, m->t, labels ? m->labels : NULL, m->dropout_seed);
    const gvalue *o = &g->vals[g->out];   /* (N, out_channels, h, w), or a classifier's (N, classes) logits */
    memcpy(eps ? eps : m->out, m->act + (keep ? o->off : o->ioff), sizeof(float) * (size_t)n * o->c * o->h * o->w);
    if (edm) df_edm_sampler_x0(edm->edm_schedule, edm->edm_sigma_data, n, per_x, x, t, eps, eps);
    g->infer = 0;
    g->ctx_kept = 0;
    m->have_forward = keep;
    m->ctx_cache = !keep && g->ctx >= 0;
    m->fwd_n = n;
    return DF_OK;
}

static df_status model_forward(df_model *m, int n, int h, int w, const float *x, const float *t, const int *labels,
                               float *eps, int keep) {
    return model_forward_edm(m, n, h, w, x, t, labels, eps, keep, NULL);
}

df_status df_model_forward(df_model *m, int n, int h, int w, const float *x, const float *t, const int *labels,
                           float *eps) {
    if (!x || !t || !eps) return df_fail(DF_ERR_ARG, "df_model_forward: x, t and eps must not be NULL");
    const int caller = threads_enter(m);
    df_status st = model_forward(m, n, h, w, x, t, labels, eps, 1);
    threads_leave(caller);
    return st;
}

static df_status features(df_model *m, int n, int h, int w, const float *x, float *feats) {
    /* activations of at most 256 images at once, or of the reserved batch */
    const int B = m->max_n > 0 && h == m->max_h && w == m->max_w ? m->max_n : DF_MIN(n, 256);
    const size_t dim = (size_t)m->cfg.in_channels * h * w;
    for (int i0 = 0; i0 < n; i0 += B) {
        const int b = DF_MIN(B, n - i0);
        df_status st = model_forward(m, b, h, w, x + (size_t)i0 * dim, NULL, NULL, NULL, 0);
        if (st) return st;
        /* the head ends GroupNorm, SiLU, mean over the image, linear: the linear's input is the feature
         * vector (N, C, 1, 1), plain layout, still in place after the pass (nothing runs after the linear) */
        const unet_graph *g = &m->g;
        const gnode *last = &g->nodes[g->nnodes - 1];
        DF_ASSERT(last->op == OP_LINEAR);
        const gvalue *f = &g->vals[last->in[0]];
        memcpy(feats + (size_t)i0 * f->c, m->act + f->ioff, sizeof(float) * (size_t)b * f->c);
    }
    return DF_OK;
}

df_status df_model_features(df_model *m, int n, int h, int w, const float *x, float *feats) {
    if (m->cfg.classifier_classes <= 0)
        return df_fail(DF_ERR_CONFIG, "this model is not a classifier: it has no feature layer");
    if (n <= 0) return DF_OK;
    const int caller = threads_enter(m);
    df_status st = features(m, n, h, w, x, feats);
    threads_leave(caller);
    return st;
}

int df_model_feature_dim(const df_model *m) {
    const df_unet_config *c = &m->cfg;
    return c->classifier_classes > 0 ? c->block_out_channels[c->num_levels - 1] : 0;
}

static df_status model_backward(df_model *m, const float *deps, float *dx) {
    if (!m->have_forward) return df_fail(DF_ERR_ARG, "df_model_backward: no forward pass to go back through");
    df_status st = ensure_fast(m);
    if (!st && !m->have_forward) st = df_fail(DF_ERR_ARG, "df_model_backward: the kernels changed after the forward pass");
    if (!st) st = ensure_buffers(m, 1, 1, 0);
    if (st) return st;
    const unet_graph *g = &m->g;
    const gvalue *o = &g->vals[g->out], *xv = &g->vals[g->x];
    const size_t per_o = (size_t)o->c * o->h * o->w, per_x = (size_t)xv->c * xv->h * xv->w;
    const int n = m->fwd_n;   /* the padding images get a zero output gradient */
    memcpy(m->dact + o->goff, deps, sizeof(float) * (size_t)n * per_o);
    memset(m->dact + o->goff + (size_t)n * per_o, 0, sizeof(float) * (size_t)(g->n - n) * per_o);
    int conditional = m->cfg.num_class_embeds > 0 || m->cfg.class_embed_timestep;
    unet_backward_f32(g, m->params, m->grads, m->act, m->dact, m->scratch, conditional ? m->labels : NULL,
                      m->dropout_seed);
    if (dx) memcpy(dx, m->dact + xv->goff, sizeof(float) * (size_t)n * per_x);
    return DF_OK;
}

/* Room for `need` floats of text states (kept: a larger batch's arrive later only in df_generate's first call). */
static df_status ctx_fit(df_model *m, size_t need) {
    if (need <= m->ctx_cap) return DF_OK;
    float *c = realloc(m->ctx, need * sizeof *c);
    if (!c) return df_fail(DF_ERR_NOMEM, "out of memory for text states");
    m->ctx = c, m->ctx_cap = need;
    return DF_OK;
}

df_status df_model_set_context(df_model *m, int n, int L, const float *states) {
    if (!m->cfg.condition) return df_fail(DF_ERR_CONFIG, "this model does not attend to text (not a UNet2DConditionModel)");
    if (n < 1 || L < 1 || L > 4096 || !states)
        return df_fail(DF_ERR_ARG, "text states for %d images of %d tokens (expected 1 to 4096 tokens)", n, L);
    const size_t need = (size_t)n * L * m->cfg.cross_attention_dim;
    df_status st = ctx_fit(m, need);
    if (st) return st;
    memcpy(m->ctx, states, need * sizeof *m->ctx);
    m->ctx_n = n, m->ctx_len = L;
    return DF_OK;
}

long df_model_context_reuses(const df_model *m) { return m->ctx_reused; }

df_status df_model_reserve_context(df_model *m, int n, int L) {
    if (!m->cfg.condition) return df_fail(DF_ERR_CONFIG, "this model does not attend to text (not a UNet2DConditionModel)");
    df_status st = ctx_fit(m, (size_t)DF_MAX(n, 1) * DF_MAX(L, 1) * m->cfg.cross_attention_dim);
    if (st) return st;
    /* before any states: the tape is planned for texts of L tokens (no states are set: ctx_n stays 0), and a
     * reserved batch is planned again for them */
    if (m->ctx_n == 0 && m->ctx_len != L) {
        m->ctx_len = L;
        if (m->max_n > 0) return df_model_reserve(m, m->max_n, m->max_h, m->max_w);
    }
    return DF_OK;
}

df_status df_model_context_grad(df_model *m, float *dstates) {
    if (!m->cfg.condition || !m->have_forward || m->g.ctx < 0)
        return df_fail(DF_ERR_ARG, "df_model_context_grad: no backward pass of a text-conditioned forward pass");
    const unet_graph *g = &m->g;
    const int D = m->cfg.cross_attention_dim, L = g->vals[g->ctx].w;
    const float *d = m->dact + g->vals[g->ctx].goff;
    for (int i = 0; i < m->fwd_n; i++)
        for (int l = 0; l < L; l++)
            for (int k = 0; k < D; k++) dstates[((size_t)i * L + l) * D + k] = d[((size_t)i * D + k) * L + l];
    return DF_OK;
}

df_status df_model_backward(df_model *m, const float *deps, float *dx) {
    const int caller = threads_enter(m);
    df_status st = model_backward(m, deps, dx);
    threads_leave(caller);
    return st;
}

static df_status loss_grad(df_model *m, int n, int h, int w, const float *x_t, const float *t, const int *labels,
                           const float *target, const float *weights, float *loss, float *per_sample) {
    const size_t per = (size_t)m->cfg.out_channels * h * w;
    df_status st = model_forward(m, n, h, w, x_t, t, labels, NULL, 1);
    if (st) return st;
    double total = 0;
    for (int i = 0; i < n; i++) {
        const float *o = m->out + i * per, *y = target + i * per;
        double l = mse_forward_f32(o, y, per), wi = weights ? weights[i] : 1.0;
        if (per_sample) per_sample[i] = (float)l;
        total += wi * l;
        /* d(loss)/d(out_i) = w_i * 2 (out_i - target_i) / (n * per) */
        mse_backward_f32(m->dout + i * per, o, y, per, (float)(wi / n));
    }
    if (loss) *loss = (float)(total / n);
    return model_backward(m, m->dout, NULL);
}

df_status df_model_loss_grad(df_model *m, int n, int h, int w, const float *x_t, const float *t,
                             const int *labels, const float *target, const float *weights, float *loss,
                             float *per_sample) {
    if (m->cfg.classifier_classes > 0) return df_fail(DF_ERR_CONFIG, "L_simple: this model is a classifier");
    if (m->cfg.out_channels != m->cfg.in_channels)
        return df_fail(DF_ERR_CONFIG, "L_simple needs out_channels == in_channels (%d != %d)", m->cfg.out_channels,
                       m->cfg.in_channels);
    if (!x_t || !t || !target) return df_fail(DF_ERR_ARG, "df_model_loss_grad: x_t, t and target must not be NULL");
    const int caller = threads_enter(m);
    df_status st = loss_grad(m, n, h, w, x_t, t, labels, target, weights, loss, per_sample);
    threads_leave(caller);
    return st;
}

int df_model_learned_variance(const df_model *m) {
    return m->cfg.classifier_classes <= 0 && m->cfg.out_channels == 2 * m->cfg.in_channels;
}

/* both: a learned-variance model's whole output; otherwise its prediction half alone */
static df_status denoise(df_model_denoiser *d, int n, const float *x, const float *t, float *out, int both) {
    if (!x || !t || !out) return df_fail(DF_ERR_ARG, "df_model_denoise: x, t and out must not be NULL");
    df_model *m = d->model;
    const int edm = d->edm_sigma_data > 0;
    if (edm && (!d->edm_schedule || m->cfg.out_channels != m->cfg.in_channels))
        return df_fail(DF_ERR_ARG, "df_model_denoise: an EDM model needs its schedule and as many outputs as inputs");
    const int split = df_model_learned_variance(m) && !both;
    const int *labels = d->labels;
    if (m->cfg.condition) {   /* the labels pick text states: each image's row of the table, as the model's context */
        const int D = m->cfg.cross_attention_dim, L = d->text_len;
        if (!d->texts || !d->labels || d->ntexts < 1 || L < 1)
            return df_fail(DF_ERR_ARG, "this model attends to text: the denoiser needs text states and a row per image");
        const size_t row = (size_t)L * D;
        df_status st = ctx_fit(m, (size_t)n * row);   /* once: df_generate's first call is its largest */
        if (st) return st;
        for (int i = 0; i < n; i++) {
            if (d->labels[i] < 0 || d->labels[i] >= d->ntexts)
                return df_fail(DF_ERR_ARG, "text %d out of range 0..%d", d->labels[i], d->ntexts - 1);
            memcpy(m->ctx + i * row, d->texts + (size_t)d->labels[i] * row, sizeof(float) * row);
        }
        m->ctx_n = n, m->ctx_len = L;
        labels = NULL;
    }
    const int caller = threads_enter(m);
    /* no backward: reuse space */
    df_status st = model_forward_edm(m, n, d->h, d->w, x, t, labels, split ? NULL : out, 0, edm ? d : NULL);
    threads_leave(caller);
    const size_t half = (size_t)m->cfg.in_channels * d->h * d->w;
    for (int i = 0; !st && split && i < n; i++) memcpy(out + i * half, m->out + 2 * i * half, sizeof(float) * half);
    return st;
}

df_status df_model_denoise(void *ctx, int n, const float *x, const float *t, float *out) {
    return denoise(ctx, n, x, t, out, 0);
}

df_status df_model_denoise_variance(void *ctx, int n, const float *x, const float *t, float *out) {
    df_model_denoiser *d = ctx;
    if (!df_model_learned_variance(d->model))
        return df_fail(DF_ERR_CONFIG, "this model has no learned variance (out_channels %d, in_channels %d)",
                       d->model->cfg.out_channels, d->model->cfg.in_channels);
    return denoise(d, n, x, t, out, 1);
}

df_status df_model_class_denoise(void *ctx, int n, const float *x, const float *t, const int *labels, float *out) {
    df_model_denoiser d = *(const df_model_denoiser *)ctx;
    d.labels = labels;
    return df_model_denoise(&d, n, x, t, out);
}

/* ---- classifiers ------------------------------------------------------------------------------------ */

/* Softmax of one row of logits into p (k values); returns log-sum-exp. */
static double softmax_row(const float *z, int k, double *p) {
    double mx = z[0], sum = 0;
    for (int j = 1; j < k; j++) mx = z[j] > mx ? z[j] : mx;
    for (int j = 0; j < k; j++) sum += p[j] = exp((double)z[j] - mx);
    for (int j = 0; j < k; j++) p[j] /= sum;
    return mx + log(sum);
}

/* Forward (kept for a backward pass); the logits' cross-entropy gradient into m->dout when wanted. */
static df_status classifier_pass(df_model *m, int n, int h, int w, const float *x, const float *t, const int *targets,
                                 int want_grad, double *logp, int *correct, double *loss) {
    const int k = m->cfg.classifier_classes;
    if (k <= 0) return df_fail(DF_ERR_CONFIG, "this model is not a classifier");
    if (!x || !t || !targets) return df_fail(DF_ERR_ARG, "x, t and the classes must not be NULL");
    for (int i = 0; i < n; i++)
        if (targets[i] < 0 || targets[i] >= k)
            return df_fail(DF_ERR_ARG, "class %d out of range 0..%d", targets[i], k - 1);
    df_status st = model_forward(m, n, h, w, x, t, NULL, NULL, 1);
    if (st) return st;
    double total = 0, *p = m->prob;
    int hits = 0;
    for (int i = 0; i < n; i++) {
        const float *zi = m->out + (size_t)i * k;
        double lse = softmax_row(zi, k, p), lp = zi[targets[i]] - lse;
        total -= lp;
        if (logp) logp[i] = lp;
        int best = 0;
        for (int j = 1; j < k; j++) best = zi[j] > zi[best] ? j : best;
        hits += best == targets[i];
        /* d(-log p_y)/dz = softmax - onehot, averaged over the batch */
        for (int j = 0; want_grad && j < k; j++) m->dout[(size_t)i * k + j] = (float)((p[j] - (j == targets[i])) / n);
    }
    if (correct) *correct = hits;
    if (loss) *loss = total / n;
    return DF_OK;
}

df_status df_model_classifier_loss_grad(df_model *m, int n, int h, int w, const float *x, const float *t,
                                        const int *targets, float *loss, int *correct) {
    const int caller = threads_enter(m);
    double l = 0;
    df_status st = classifier_pass(m, n, h, w, x, t, targets, 1, NULL, correct, &l);
    if (!st) st = model_backward(m, m->dout, NULL);
    if (!st && loss) *loss = (float)l;
    threads_leave(caller);
    return st;
}

df_status df_model_classify(void *ctx, int n, const float *x, const float *t, const int *labels, double *logp,
                            float *grad) {
    const df_model_denoiser *dn = ctx;
    df_model *m = dn->model;
    if (!labels) return df_fail(DF_ERR_ARG, "classifying needs the classes to score");
    const int caller = threads_enter(m);
    df_status st = classifier_pass(m, n, dn->h, dn->w, x, t, labels, grad != NULL, logp, NULL, NULL);
    if (!st && grad) {
        /* grad log p(y | x_t) per image: back through the network from onehot - softmax (the loss gradient
         * times -n) */
        const size_t k = (size_t)m->cfg.classifier_classes;
        for (size_t i = 0; i < (size_t)n * k; i++) m->dout[i] *= -(float)n;
        df_model_zero_grad(m);
        st = model_backward(m, m->dout, grad);
    }
    threads_leave(caller);
    return st;
}
