/* Evaluation as one call: sample a model (or read images already generated), and score them against a
 * reference set with FD, KID, precision/recall, class accuracy, CAS and bits/dim; plus the sampler sweep. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"
#include "npy.h"
#include "plot.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const metric_names[DF_METRIC_COUNT] = {"fd", "kid", "pr", "cas", "bpd", "acc", "classes"};
_Static_assert(sizeof metric_names / sizeof metric_names[0] == DF_METRIC_COUNT, "a name per metric");

const char *df_metric_name(df_metric m) { return (unsigned)m < DF_METRIC_COUNT ? metric_names[m] : "?"; }

df_status df_metrics_parse(const char *text, unsigned *mask) {
    *mask = 0;
    const char *p = text;
    while (p && *p) {
        size_t len = strcspn(p, ",");
        int found = -1;
        for (int m = 0; m < DF_METRIC_COUNT; m++)
            if (strlen(metric_names[m]) == len && strncmp(p, metric_names[m], len) == 0) found = m;
        if (found < 0)
            return df_fail(DF_ERR_ARG, "unknown metric \"%.*s\" (known: fd, kid, pr, cas, bpd, acc)", (int)len, p);
        *mask |= 1u << found;
        p += len;
        if (*p == ',') p++;
    }
    if (!*mask) return df_fail(DF_ERR_ARG, "no metric named");
    return DF_OK;
}

void df_eval_params_default(df_eval_params *p) {
    memset(p, 0, sizeof *p);
    p->ref = "fashion-mnist:test";
    p->metrics = 1u << DF_METRIC_FD | 1u << DF_METRIC_KID | 1u << DF_METRIC_PR;
    p->n = 1000;
    p->batch = 100;
    df_sampler_params_default(&p->sampler);
    p->sampler.steps = 0;   /* 50, or the training timesteps for DDPM */
    p->sampler.clip_x0 = 1, p->sampler.clip_range = 1;
    p->guidance = 1;
    p->guidance_sigma_hi = INFINITY;
    p->bootstrap = 100;
    p->kid_subsets = 100, p->kid_subset_size = 1000;
    p->pr_k = 3;
    p->confidence = 0.5;
    p->cas_per_class = 500, p->cas_epochs = 10;
    p->cas_train = "fashion-mnist";
    p->bpd_n = 1000;
}

static void report(const df_eval_params *p, const char *stage, double done, double total) {
    if (p->progress) p->progress(p->progress_ctx, stage, done, total);
}

static int stopped(const df_eval_params *p) { return p->stop && *p->stop; }

/* ---- everything one evaluation needs, opened once (a sweep reuses it) ------------------------------------------ */

typedef struct {
    const df_eval_params *p;
    df_model         *model;
    df_schedule       sched;
    df_scheduler_config sc;
    df_class_info     classes;
    int               k;            /* real classes of a conditional model (0: unconditional) */
    df_feature_net   *fnet;
    df_ref_features   ref;
    df_dataset       *ref_data;     /* when the reference is a data set */
    int               c, h, w;      /* the images scored */
    size_t            dim;
    char              stage[96];    /* what the sampling progress is called */
} eval_ctx;

static void ctx_close(eval_ctx *e) {
    df_model_free(e->model);
    df_schedule_free(&e->sched);
    df_class_info_free(&e->classes);
    df_feature_net_free(e->fnet);
    df_ref_features_free(&e->ref);
    df_dataset_free(e->ref_data);
    memset(e, 0, sizeof *e);
}

static int wants(const df_eval_params *p, df_metric m) { return (p->metrics >> m) & 1; }
static int wants_features(const df_eval_params *p) {
    return wants(p, DF_METRIC_FD) || wants(p, DF_METRIC_KID) || wants(p, DF_METRIC_PR);
}

static int has_suffix(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcasecmp(s + a - b, suf) == 0;
}

static df_status ctx_open(eval_ctx *e, const df_eval_params *p, df_eval_result *r) {
    memset(e, 0, sizeof *e);
    e->p = p;
    if (!p->model == !(p->images || p->image_data))
        return df_fail(DF_ERR_ARG, "evaluate a model or images: give exactly one");
    if (!p->metrics) return df_fail(DF_ERR_ARG, "no metric asked for");
    if (!p->model && (wants(p, DF_METRIC_CAS) || wants(p, DF_METRIC_BPD)))
        return df_fail(DF_ERR_ARG, "%s needs a model, not images", wants(p, DF_METRIC_CAS) ? "cas" : "bpd");
    df_status st = DF_OK;
    if (p->model) {
        if ((st = df_pipeline_load(p->model, p->raw, &e->model, &e->sc))) return st;
        if ((st = df_schedule_from_config(&e->sc, &e->sched))) return st;
        if ((st = df_class_info_load(p->model, e->model, &e->classes))) return st;
        const df_unet_config *cfg = df_model_config(e->model);
        if (cfg->classifier_classes > 0) return df_fail(DF_ERR_ARG, "%s is a classifier, not a diffusion model", p->model);
        if (cfg->condition)   /* prompts for its images are not drawn here yet */
            return df_fail(DF_ERR_ARG, "%s is a text-to-image model: diffuse eval does not give it prompts yet (its training "
                           "scores it from captions: train --eval-every N)", p->model);
        e->k = cfg->num_class_embeds - (e->classes.null_class >= 0);
        e->c = cfg->in_channels, e->h = e->w = cfg->sample_size > 0 ? cfg->sample_size : 32;
        e->dim = (size_t)e->c * e->h * e->w;
        if (p->guidance != 1 && e->classes.null_class < 0)
            return df_fail(DF_ERR_ARG, "guidance %g: %s has no null class (train with --classes to learn one)", p->guidance,
                           p->model);
        if (p->sampler.steps > e->sched.T)
            return df_fail(DF_ERR_ARG, "%d steps: the model has only %d timesteps", p->sampler.steps, e->sched.T);
        for (int i = 0; i < p->nlabels; i++)
            if (p->labels[i] < 0 || p->labels[i] >= e->k)
                return df_fail(DF_ERR_ARG, "label %d: the model has %d classes (0 .. %d)", p->labels[i], e->k, e->k - 1);
        if (wants(p, DF_METRIC_CAS) && e->k < 2) return df_fail(DF_ERR_ARG, "cas needs a class-conditional model");
    }
    if (wants_features(p)) {
        if (!p->features) return df_fail(DF_ERR_ARG, "no feature network given");
        if ((st = df_feature_net_load(p->features, &e->fnet))) return st;
        snprintf(r->feature_net, sizeof r->feature_net, "%s", df_feature_net_name(e->fnet));
        snprintf(r->feature_path, sizeof r->feature_path, "%s", p->features);
        snprintf(r->feature_sha256, sizeof r->feature_sha256, "%s", df_feature_net_sha256(e->fnet));
        if (p->model && (st = df_feature_net_check_input(e->fnet, e->c, e->h, e->w))) return st;
        if (p->model && wants(p, DF_METRIC_FD) && p->n <= df_feature_net_dim(e->fnet))
            return df_fail(DF_ERR_ARG, "%d images give a singular covariance of %d-d features: the Fréchet distance needs "
                           "more images than feature dimensions (--n %d or more; 1000 or more for a stable value)", p->n,
                           df_feature_net_dim(e->fnet), df_feature_net_dim(e->fnet) + 1);
    }
    return DF_OK;
}

/* The reference features (read, or computed through the cache), once per context. */
static df_status ctx_reference(eval_ctx *e, df_eval_result *r) {
    const df_eval_params *p = e->p;
    df_status st = DF_OK;
    if (!e->fnet || e->ref.feats) {
        if (e->ref.feats) snprintf(r->ref_desc, sizeof r->ref_desc, "%s", e->ref.desc), r->n_ref = e->ref.n;
        return DF_OK;
    }
    if (has_suffix(p->ref, ".safetensors")) {   /* features computed before, for this network only */
        if ((st = df_ref_features_load(p->ref, &e->ref))) return st;
        if ((st = df_ref_features_check(&e->ref, e->fnet, p->ref))) return st;
    } else {
        int c, h, w, cached;
        if ((st = df_dataset_open(p->ref, 0, 0, &e->ref_data))) return st;
        df_dataset_shape(e->ref_data, &c, &h, &w);
        if ((st = df_feature_net_check_input(e->fnet, c, h, w))) {
            char why[600];
            snprintf(why, sizeof why, "%s", df_error());
            return df_fail(st, "reference %s: %s", p->ref, why);
        }
        st = df_ref_features_get(e->fnet, e->ref_data, p->ref_limit, &e->ref, &cached, p->progress, p->progress_ctx);
        if (st) return st;
        r->ref_cached = cached;
    }
    snprintf(r->ref_desc, sizeof r->ref_desc, "%s", e->ref.desc);
    r->n_ref = e->ref.n;
    return DF_OK;
}

/* ---- sampling ------------------------------------------------------------------------------------------------ */

typedef struct {
    const df_eval_params *p;
    const char *stage;
} sample_watch;

static void on_step(void *ctx, const df_generate_step *s) {
    const sample_watch *w = ctx;
    report(w->p, w->stage, (double)s->done, (double)s->total);
}

/* n images from the model with the evaluation's sampler settings (df_generate, as `diffuse sample` makes
 * them): image i of class labels[i] when the model is conditional, classifier-free guidance when the scale
 * is not 1. */
static df_status generate(eval_ctx *e, const df_sampler_params *sp, int n, const int *labels, uint64_t seed,
                          const char *stage, float *x) {
    const df_eval_params *p = e->p;
    sample_watch watch = {p, stage};
    df_generate_params g;
    df_generate_params_for(&g, e->model, &e->sc, &e->sched);
    g.sampler = *sp;
    g.sampler.prediction = e->sc.prediction;
    g.n = n, g.batch = p->batch > 0 ? p->batch : 100, g.h = e->h, g.w = e->w, g.seed = seed;
    g.labels = e->k > 0 ? labels : NULL;
    g.null_class = e->classes.null_class;
    g.guidance = e->k > 0 ? p->guidance : 1;
    g.guidance_sigma_lo = p->guidance_sigma_lo, g.guidance_sigma_hi = p->guidance_sigma_hi;
    g.on_step = on_step, g.ctx = &watch, g.stop = p->stop;
    df_status st = df_generate(&g, x);
    if (!st && stopped(p)) st = df_fail(DF_ERR_ARG, "stopped");
    return st;
}

/* Labels of n images: the classes asked for (all real ones by default), each for a run of images, as
 * `diffuse sample` lays them out (image i gets lab[i * nlab / n]). */
static void spread_labels(const eval_ctx *e, int n, int *labels) {
    const df_eval_params *p = e->p;
    for (int i = 0; i < n; i++) {
        if (p->nlabels > 0) labels[i] = p->labels[(int)((long)i * p->nlabels / n)];
        else labels[i] = (int)((long)i * e->k / n);
    }
}

/* ---- the metrics on images in memory -------------------------------------------------------------------------- */

df_status df_eval_features(df_feature_net *f, const df_ref_features *ref, const float *feats, long n, unsigned metrics,
                           const df_eval_params *p, df_eval_result *r) {
    const int d = ref->d;
    df_rng rng;
    df_rng_init(&rng, p->seed ^ 0xE7A1u);
    df_status st = DF_OK;
    double t0 = df_now_sec();
    (void)f;
    if ((metrics >> DF_METRIC_FD) & 1) {
        report(p, "Fréchet distance", 0, 1);
        st = df_fd_bootstrap(feats, n, d, &ref->stats, p->bootstrap, &rng, &r->fd.value, &r->fd.se);
        if (p->bootstrap < 2) r->fd.se = NAN;
        r->fd.have = !st, r->fd.n = n, r->fd.seconds = df_now_sec() - t0;
    }
    if (!st && ((metrics >> DF_METRIC_KID) & 1)) {
        t0 = df_now_sec();
        report(p, "KID", 0, 1);
        st = df_kid(feats, n, ref->feats, ref->n, d, p->kid_subsets, p->kid_subset_size, &rng, &r->kid.value,
                    &r->kid.spread, &r->kid.se);
        r->kid.have = !st, r->kid.n = n, r->kid.seconds = df_now_sec() - t0;
        r->kid_subset_size = (int)DF_MIN((long)p->kid_subset_size, DF_MIN(n, ref->n));
    }
    if (!st && ((metrics >> DF_METRIC_PR) & 1)) {
        t0 = df_now_sec();
        report(p, "precision/recall", 0, 1);
        /* equal sets, as the paper compares them: n reference vectors drawn at random when there are more */
        const long m = DF_MIN(n, ref->n);
        float *sub = malloc(sizeof(float) * (size_t)m * d);
        int *perm = malloc(sizeof(int) * (size_t)ref->n);
        if (!sub || !perm) st = df_fail(DF_ERR_NOMEM, "out of memory for precision/recall");
        if (!st) {
            df_shuffle(perm, (int)ref->n, &rng);
            for (long i = 0; i < m; i++) memcpy(sub + (size_t)i * d, ref->feats + (size_t)perm[i] * d, sizeof(float) * d);
            st = df_precision_recall(sub, m, feats, n, d, p->pr_k, &r->precision.value, &r->recall.value);
        }
        free(sub), free(perm);
        r->precision.se = r->recall.se = NAN;
        r->precision.have = r->recall.have = !st;
        r->precision.n = r->recall.n = n;
        r->precision.seconds = r->recall.seconds = df_now_sec() - t0;
    }
    return st;
}

static df_status features_of(eval_ctx *e, const float *x, long n, float **out) {
    const df_eval_params *p = e->p;
    const int d = df_feature_net_dim(e->fnet), B = 500;
    float *f = malloc(sizeof(float) * (size_t)n * d);
    if (!f) return df_fail(DF_ERR_NOMEM, "out of memory for the features of %ld images", n);
    df_status st = DF_OK;
    for (long i0 = 0; i0 < n && !st; i0 += B) {
        const int b = (int)DF_MIN((long)B, n - i0);
        st = df_feature_net_features(e->fnet, b, e->c, e->h, e->w, x + (size_t)i0 * e->dim, f + (size_t)i0 * d);
        report(p, "features", (double)(i0 + b), (double)n);
    }
    if (st) free(f);
    else *out = f;
    return st;
}

/* ---- class accuracy and CAS ------------------------------------------------------------------------------------- */

static df_status accuracy_of(df_model *clf, const float *x, int n, int h, int w, const int *labels, double *acc) {
    int *truth = malloc(sizeof(int) * (size_t)n), hits = 0;
    if (!truth) return df_fail(DF_ERR_NOMEM, "out of memory");
    memcpy(truth, labels, sizeof(int) * (size_t)n);
    df_status st = df_classifier_predict(clf, n, h, w, x, NULL, truth, &hits);
    free(truth);
    *acc = n > 0 ? (double)hits / n : 0;
    return st;
}

df_status df_eval_accuracy(df_model *clf, const float *x, int n, int h, int w, const int *labels, double *acc) {
    if (!clf || df_model_config(clf)->classifier_classes <= 0) return df_fail(DF_ERR_ARG, "no classifier to score with");
    return accuracy_of(clf, x, n, h, w, labels, acc);
}

/* A classifier of the given config trained from scratch on data (cas_epochs epochs, batch 64, AdamW with
 * cosine decay), then its accuracy on the test set. */
static df_status train_and_test(const df_eval_params *p, const df_unet_config *cfg, const df_dataset *data,
                                const df_dataset *test, const char *stage, double *acc) {
    df_classifier_train_params tp;
    df_classifier_train_params_default(&tp);
    tp.dataset = data, tp.config = cfg, tp.noise_aware = 0, tp.out_dir = NULL;
    df_model *m = NULL;
    tp.model_out = &m;
    tp.lr = 1e-3, tp.seed = p->seed;
    tp.max_steps = (long)p->cas_epochs * df_dataset_count(data) / tp.batch_size;
    if (tp.max_steps < 1) tp.max_steps = 1;
    tp.stop = p->stop;
    report(p, stage, 0, 1);
    df_status st = df_classifier_train(&tp);
    if (st) return st;
    int c, h, w, n = df_dataset_count(test);
    df_dataset_shape(test, &c, &h, &w);
    float *x = malloc(sizeof(float) * (size_t)n * c * h * w);
    int *y = malloc(sizeof(int) * (size_t)n);
    if (!x || !y) st = df_fail(DF_ERR_NOMEM, "out of memory");
    for (int i = 0; !st && i < n; i++) df_dataset_get(test, i, 0, x + (size_t)i * c * h * w), y[i] = df_dataset_label(test, i);
    if (!st) st = accuracy_of(m, x, n, h, w, y, acc);
    report(p, stage, 1, 1);
    free(x), free(y);
    df_model_free(m);
    return st;
}

static df_status eval_cas(eval_ctx *e, df_eval_result *r) {
    const df_eval_params *p = e->p;
    const int K = e->k, per = p->cas_per_class, n = K * per;
    double t0 = df_now_sec();
    df_unet_config cfg;
    df_status st = DF_OK;
    /* the classifier: a given config, else the feature network's architecture (trained afresh) */
    if (p->cas_config) st = df_unet_config_load(p->cas_config, &cfg);
    else if (e->fnet && df_feature_net_classifier(e->fnet)) cfg = *df_model_config(df_feature_net_classifier(e->fnet));
    else if (p->features) {
        df_feature_net *f;
        if (!(st = df_feature_net_load(p->features, &f))) {
            if (df_feature_net_classifier(f)) cfg = *df_model_config(df_feature_net_classifier(f));
            else st = df_fail(DF_ERR_ARG, "cas: give the classifier's config (the feature network is not a classifier)");
            df_feature_net_free(f);
        }
    } else st = df_fail(DF_ERR_ARG, "cas: give the classifier's config");
    if (st) return st;
    df_dataset *test = NULL, *train_real = NULL, *fake = NULL, *real = NULL;
    const char *test_path = p->cas_test ? p->cas_test : p->ref;
    if ((st = df_dataset_open(test_path, e->h, e->c, &test))) return st;
    if (df_dataset_num_classes(test) != K)
        st = df_fail(DF_ERR_ARG, "cas: the test set %s has %d classes, the model %d", test_path, df_dataset_num_classes(test), K);
    float *x = st ? NULL : malloc(sizeof(float) * (size_t)n * e->dim);
    int *labels = st ? NULL : malloc(sizeof(int) * (size_t)n);
    if (!st && (!x || !labels)) st = df_fail(DF_ERR_NOMEM, "out of memory for %d images", n);
    /* per images of each class, in class order; their own seed so they are not the scored images */
    for (int i = 0; !st && i < n; i++) labels[i] = i / per;
    if (!st) st = generate(e, &p->sampler, n, labels, p->seed + 1, "cas: sampling", x);
    if (!st) st = df_dataset_from_images(x, labels, n, e->c, e->h, e->w, K, "generated images", &fake);
    if (!st) st = train_and_test(p, &cfg, fake, test, "cas: training on generated images", &r->cas.value);
    /* the same classifier on as many real training images, the same number of each class */
    if (!st) st = df_dataset_open(p->cas_train, e->h, e->c, &train_real);
    if (!st && df_dataset_num_classes(train_real) != K)
        st = df_fail(DF_ERR_ARG, "cas: the training set %s has %d classes, the model %d", p->cas_train,
                     df_dataset_num_classes(train_real), K);
    if (!st) {
        int *taken = calloc((size_t)K, sizeof(int)), got = 0;
        if (!taken) st = df_fail(DF_ERR_NOMEM, "out of memory");
        for (int i = 0; !st && i < df_dataset_count(train_real) && got < n; i++) {
            int y = df_dataset_label(train_real, i);
            if (taken[y] >= per) continue;
            df_dataset_get(train_real, i, 0, x + (size_t)(y * per + taken[y]) * e->dim);
            taken[y]++, got++;
        }
        if (!st && got < n) st = df_fail(DF_ERR_ARG, "cas: %s has fewer than %d images of some class", p->cas_train, per);
        free(taken);
    }
    if (!st) st = df_dataset_from_images(x, labels, n, e->c, e->h, e->w, K, "real images", &real);
    if (!st) st = train_and_test(p, &cfg, real, test, "cas: training on real images", &r->cas_real.value);
    r->cas.have = r->cas_real.have = !st;
    r->cas.n = r->cas_real.n = n;
    r->cas.se = sqrt(r->cas.value * (1 - r->cas.value) / df_dataset_count(test));   /* binomial, over the test set */
    r->cas_real.se = sqrt(r->cas_real.value * (1 - r->cas_real.value) / df_dataset_count(test));
    r->cas.seconds = df_now_sec() - t0;
    df_dataset_free(test), df_dataset_free(train_real), df_dataset_free(fake), df_dataset_free(real);
    free(x), free(labels);
    return st;
}

/* ---- bits/dim, resumable ------------------------------------------------------------------------------------------ */

/* The state of a long bits/dim run: its settings and the values done so far. */
typedef struct {
    char   model_sha[65], data_sha[65];
    int    n, timesteps, chunk;
    uint64_t seed;
    int    done;
    double *bpd;
} bpd_state;

static df_status bpd_state_save(const char *path, const bpd_state *s) {
    cJSON *j = cJSON_CreateObject(), *a = cJSON_CreateArray();
    cJSON_AddStringToObject(j, "format", "diffuse bits/dim state");
    cJSON_AddStringToObject(j, "model_sha256", s->model_sha);
    cJSON_AddStringToObject(j, "data_sha256", s->data_sha);
    cJSON_AddNumberToObject(j, "n", s->n);
    cJSON_AddNumberToObject(j, "timesteps", s->timesteps);
    cJSON_AddNumberToObject(j, "chunk", s->chunk);
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)s->seed);
    cJSON_AddStringToObject(j, "seed", seed);
    /* 17 significant digits read back to the same double (cJSON's own printing may round the last bit), so
     * a resumed run ends exactly where an uninterrupted one does */
    for (int i = 0; i < s->done; i++) {
        char v[32];
        snprintf(v, sizeof v, "%.17g", s->bpd[i]);
        cJSON_AddItemToArray(a, cJSON_CreateRaw(v));
    }
    cJSON_AddItemToObject(j, "bpd", a);
    return df_write_json_atomic(path, j);
}

df_status df_bpd_state_check_memory(const char *text, size_t len, const char *path, const char *model_sha,
                                    const char *data_sha, int n, int timesteps, int chunk, uint64_t seed, double *bpd,
                                    int *done) {
    *done = 0;
    cJSON *j = cJSON_ParseWithLength(text, len);
    df_status st = DF_OK;
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, "format"), *a = cJSON_GetObjectItemCaseSensitive(j, "bpd");
    if (!cJSON_IsObject(j) || !cJSON_IsString(f) || strcmp(f->valuestring, "diffuse bits/dim state") != 0)
        st = df_fail(DF_ERR_FORMAT, "%s: not a bits/dim state file", path);
    /* the settings must be those of this run: otherwise the values do not belong together */
    const char *skeys[3] = {"model_sha256", "data_sha256", "seed"};
    char seedtxt[32];
    snprintf(seedtxt, sizeof seedtxt, "%llu", (unsigned long long)seed);
    const char *swant[3] = {model_sha, data_sha, seedtxt};
    for (int i = 0; i < 3 && !st; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, skeys[i]);
        if (!cJSON_IsString(v) || strcmp(v->valuestring, swant[i]) != 0)
            st = df_fail(DF_ERR_ARG, "%s: made with another %s (%s): finish it with the same settings, or remove it", path,
                         i == 0 ? "model" : i == 1 ? "data set" : "seed", skeys[i]);
    }
    const char *nkeys[3] = {"n", "timesteps", "chunk"};
    const int nwant[3] = {n, timesteps, chunk};
    for (int i = 0; i < 3 && !st; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, nkeys[i]);
        if (!cJSON_IsNumber(v) || v->valuedouble != nwant[i])
            st = df_fail(DF_ERR_ARG, "%s: made with another \"%s\" (%g, now %d): finish it with the same settings, or "
                         "remove it", path, nkeys[i], cJSON_IsNumber(v) ? v->valuedouble : NAN, nwant[i]);
    }
    if (!st && (!cJSON_IsArray(a) || cJSON_GetArraySize(a) > n))
        st = df_fail(DF_ERR_FORMAT, "%s: \"bpd\" must be a list of at most %d values", path, n);
    int i = 0;
    const cJSON *v;
    if (!st)
        cJSON_ArrayForEach(v, a) {
            if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0 || v->valuedouble > 1e6) {
                st = df_fail(DF_ERR_FORMAT, "%s: bpd value %d is not a number from 0 to 10^6", path, i);
                break;
            }
            bpd[i++] = v->valuedouble;
        }
    if (!st) *done = i - i % chunk;   /* whole chunks only */
    cJSON_Delete(j);
    return st;
}

static df_status eval_bpd(eval_ctx *e, df_eval_result *r) {
    const df_eval_params *p = e->p;
    double t0 = df_now_sec();
    const char *path = p->bpd_data ? p->bpd_data : p->ref;
    df_dataset *data = NULL;
    df_status st = df_dataset_open(path, 0, 0, &data);
    if (st) return st;
    int c, h, w;
    df_dataset_shape(data, &c, &h, &w);
    if (c != e->c || h != e->h || w != e->w)
        st = df_fail(DF_ERR_SHAPE, "bpd: %s holds %dx%d images with %d channels; the model makes %dx%d with %d", path, h, w,
                     c, e->h, e->w, e->c);
    const int n = DF_MIN(p->bpd_n, df_dataset_count(data)), chunk = 50;
    bpd_state s = {.n = n, .timesteps = p->bpd_timesteps, .chunk = chunk, .seed = p->seed};
    s.bpd = calloc((size_t)n, sizeof(double));
    float *x = malloc(sizeof(float) * chunk * e->dim);
    if (!st && (!s.bpd || !x)) st = df_fail(DF_ERR_NOMEM, "out of memory");
    if (!st) {
        char wpath[4400];
        const char *run = p->model;
        snprintf(wpath, sizeof wpath, "%s/unet/diffusion_pytorch_model.safetensors", run);
        if (access(wpath, R_OK) != 0) snprintf(wpath, sizeof wpath, "%s/latest/unet/diffusion_pytorch_model.safetensors", run);
        if (access(wpath, R_OK) != 0) snprintf(wpath, sizeof wpath, "%s/diffusion_pytorch_model.safetensors", run);
        if (df_file_sha256(wpath, s.model_sha)) snprintf(s.model_sha, sizeof s.model_sha, "unknown");
        df_dataset_sha256(data, s.data_sha);
    }
    if (!st && p->bpd_state && access(p->bpd_state, F_OK) == 0) {
        char *text;
        size_t len;
        if (!(st = df_read_file(p->bpd_state, &text, &len))) {
            st = df_bpd_state_check_memory(text, len, p->bpd_state, s.model_sha, s.data_sha, n, s.timesteps, chunk,
                                           s.seed, s.bpd, &s.done);
            free(text);
        }
        r->bpd_resumed = s.done;
    }
    df_model_denoiser dn = {.model = e->model, .h = h, .w = w, .edm_schedule = &e->sched,
                            .edm_sigma_data = e->sc.edm_sigma_data};
    int *labels = e->k > 0 ? malloc(sizeof(int) * chunk) : NULL;
    if (!st && e->k > 0) {   /* a conditional model's bound is taken unconditionally, through its null class */
        if (e->classes.null_class < 0) st = df_fail(DF_ERR_ARG, "bpd of a conditional model needs its null class");
        for (int i = 0; !st && labels && i < chunk; i++) labels[i] = e->classes.null_class;
        dn.labels = labels;
    }
    for (int i0 = s.done; i0 < n && !st && !stopped(p); i0 += chunk) {
        const int b = DF_MIN(chunk, n - i0);
        for (int i = 0; i < b; i++) df_dataset_get(data, i0 + i, 0, x + (size_t)i * e->dim);
        /* a stream per chunk, so a resumed run draws what an uninterrupted one would */
        df_rng rng;
        df_rng_init(&rng, p->seed * 0x9E3779B97F4A7C15ull + (uint64_t)(i0 / chunk) + 1);
        /* a model with learned variances is scored with them (what makes its bound lower) */
        const int var = df_model_learned_variance(e->model) ? DF_VARIANCE_LEARNED : 0;
        const df_denoise_fn fn = var ? df_model_denoise_variance : df_model_denoise;
        st = p->bpd_timesteps > 0
                 ? df_vlb_bpd_strata(&e->sched, e->sc.prediction, fn, &dn, b, e->dim, x, var, p->bpd_timesteps, &rng,
                                     s.bpd + i0)
                 : df_vlb_bpd(&e->sched, e->sc.prediction, fn, &dn, b, e->dim, x, var, &rng, s.bpd + i0, NULL);
        if (!st) s.done = i0 + b;
        if (!st && p->bpd_state) st = bpd_state_save(p->bpd_state, &s);
        report(p, "bits/dim", s.done, n);
    }
    if (!st && s.done < n) st = df_fail(DF_ERR_ARG, "stopped after %d of %d images%s", s.done, n,
                                        p->bpd_state ? " (the state file keeps them: run again to go on)" : "");
    if (!st) {
        double m = 0, q = 0;
        for (int i = 0; i < n; i++) m += s.bpd[i];
        m /= n;
        for (int i = 0; i < n; i++) q += (s.bpd[i] - m) * (s.bpd[i] - m);
        r->bpd.value = m;
        r->bpd.se = n > 1 ? sqrt(q / (n - 1) / n) : NAN;
        r->bpd.have = 1, r->bpd.n = n;
        r->bpd_timesteps = p->bpd_timesteps > 0 ? DF_MIN(p->bpd_timesteps, e->sched.T - 1) : e->sched.T;
        snprintf(r->bpd_data, sizeof r->bpd_data, "%s", df_dataset_description(data));
    }
    r->bpd.seconds = df_now_sec() - t0;
    df_dataset_free(data);
    free(s.bpd), free(x), free(labels);
    return st;
}

/* ---- one evaluation --------------------------------------------------------------------------------------------- */

/* The images to score: sampled from the model, given in memory, or read from a folder or .npy. labels (may
 * come back NULL) are the classes asked for, or a folder's subfolder classes. */
static df_status scored_images(eval_ctx *e, const df_sampler_params *sp, df_eval_result *r, float **xo, int **lo,
                               int *no) {
    const df_eval_params *p = e->p;
    float *x = NULL;
    int *labels = NULL, n = 0;
    df_status st = DF_OK;
    double t0 = df_now_sec();
    if (p->model) {
        n = p->n;
        x = malloc(sizeof(float) * (size_t)n * e->dim);
        labels = e->k > 0 ? malloc(sizeof(int) * (size_t)n) : NULL;
        if (!x || (e->k > 0 && !labels)) st = df_fail(DF_ERR_NOMEM, "out of memory for %d images", n);
        if (!st && labels) spread_labels(e, n, labels);
        if (!st) st = generate(e, sp, n, labels, p->seed, e->stage[0] ? e->stage : "sampling", x);
        r->sample_seconds = df_now_sec() - t0;
    } else if (p->image_data) {
        n = p->image_count, e->c = p->image_c, e->h = p->image_h, e->w = p->image_w;
        e->dim = (size_t)e->c * e->h * e->w;
        x = malloc(sizeof(float) * (size_t)n * e->dim);
        if (!x) st = df_fail(DF_ERR_NOMEM, "out of memory");
        else memcpy(x, p->image_data, sizeof(float) * (size_t)n * e->dim);
        if (!st && p->image_labels) {
            labels = malloc(sizeof(int) * (size_t)n);
            if (labels) memcpy(labels, p->image_labels, sizeof(int) * (size_t)n);
        }
    } else if (has_suffix(p->images, ".npy")) {
        st = df_npy_load_images(p->images, &x, &n, &e->c, &e->h, &e->w);
        e->dim = (size_t)e->c * e->h * e->w;
    } else {
        df_dataset *d = NULL;
        if (!(st = df_dataset_open(p->images, 0, 0, &d))) {
            n = df_dataset_count(d);
            df_dataset_shape(d, &e->c, &e->h, &e->w);
            e->dim = (size_t)e->c * e->h * e->w;
            x = malloc(sizeof(float) * (size_t)n * e->dim);
            labels = df_dataset_num_classes(d) > 0 ? malloc(sizeof(int) * (size_t)n) : NULL;
            if (!x || (df_dataset_num_classes(d) > 0 && !labels)) st = df_fail(DF_ERR_NOMEM, "out of memory");
            for (int i = 0; !st && i < n; i++) {
                df_dataset_get(d, i, 0, x + (size_t)i * e->dim);
                if (labels) labels[i] = df_dataset_label(d, i);
            }
        }
        df_dataset_free(d);
    }
    if (!st && n < 2) st = df_fail(DF_ERR_ARG, "%d image%s to score: need at least 2", n, n == 1 ? "" : "s");
    if (!st && !p->model && e->fnet) {
        if ((st = df_feature_net_check_input(e->fnet, e->c, e->h, e->w))) {
            char why[600];
            snprintf(why, sizeof why, "%s", df_error());
            st = df_fail(st, "%s: %s", p->images ? p->images : "images", why);
        }
    }
    if (st) {
        free(x), free(labels);
        return st;
    }
    *xo = x, *lo = labels, *no = n;
    return DF_OK;
}

/* The classifier acc and classes score with: --classifier, else the feature network when it classifies.
 * *own is what the caller frees. */
static df_status scorer(eval_ctx *e, df_eval_result *r, const char *metric, df_model **clf, df_model **own) {
    const df_eval_params *p = e->p;
    df_status st = DF_OK;
    *clf = *own = NULL;
    if (p->classifier) {
        if (!(st = df_model_load(p->classifier, own))) *clf = *own;
    } else if (e->fnet && df_feature_net_classifier(e->fnet)) {
        *clf = df_feature_net_classifier(e->fnet);
        snprintf(r->classifier, sizeof r->classifier, "%s", p->features);
    } else if (p->features) {   /* a scorer not otherwise loaded: the feature network, if it classifies */
        if (!(st = df_model_load(p->features, own))) *clf = *own;
    } else {
        st = df_fail(DF_ERR_ARG, "%s needs a classifier", metric);
    }
    if (!st && *own) snprintf(r->classifier, sizeof r->classifier, "%s", p->classifier ? p->classifier : p->features);
    if (!st && df_model_config(*clf)->classifier_classes <= 0)
        st = df_fail(DF_ERR_ARG, "%s is not a classifier", r->classifier);
    if (st) df_model_free(*own), *own = *clf = NULL;
    return st;
}

/* classes: the share of images whose top class probability reaches p->confidence, and each class's share of
 * the top picks. */
static df_status eval_classes(eval_ctx *e, const float *x, int n, df_eval_result *r) {
    const df_eval_params *p = e->p;
    const double t0 = df_now_sec();
    if (!(p->confidence > 0 && p->confidence <= 1))
        return df_fail(DF_ERR_ARG, "classes: a confidence threshold of %g is not in (0, 1]", p->confidence);
    df_model *clf, *own;
    df_status st = scorer(e, r, "classes", &clf, &own);
    if (st) return st;
    const int k = df_model_config(clf)->classifier_classes;
    float *probs = NULL;
    if (k > DF_EVAL_MAX_CLASSES) st = df_fail(DF_ERR_ARG, "classes: %s has %d classes, more than %d", r->classifier, k,
                                              DF_EVAL_MAX_CLASSES);
    else if (!(probs = malloc(sizeof(float) * (size_t)n * k))) st = df_fail(DF_ERR_NOMEM, "out of memory");
    if (!st) st = df_classifier_probs(clf, n, e->h, e->w, x, NULL, probs);
    if (!st) {
        long sure = 0, count[DF_EVAL_MAX_CLASSES] = {0};
        for (int i = 0; i < n; i++) {
            const float *pi = probs + (size_t)i * k;
            int best = 0;
            for (int j = 1; j < k; j++) best = pi[j] > pi[best] ? j : best;
            count[best]++, sure += pi[best] >= p->confidence;
        }
        r->nclasses = k;
        for (int j = 0; j < k; j++) r->class_share[j] = (double)count[j] / DF_MAX(n, 1);
        r->confident.value = (double)sure / DF_MAX(n, 1);
        r->confident.se = sqrt(r->confident.value * (1 - r->confident.value) / DF_MAX(n, 1));
        r->confident.have = 1, r->confident.n = n;
    }
    r->confident.seconds = df_now_sec() - t0;
    free(probs);
    df_model_free(own);
    return st;
}

static df_status run_once(eval_ctx *e, const df_sampler_params *sp, unsigned metrics, df_eval_result *r) {
    const df_eval_params *p = e->p;
    float *x = NULL, *feats = NULL;
    int *labels = NULL, n = 0;
    df_status st = DF_OK;
    const int need_images = (metrics & ~(1u << DF_METRIC_CAS | 1u << DF_METRIC_BPD)) != 0;
    /* given images are checked before the reference is computed, and the reference before a model samples:
     * bad input fails at once */
    if (need_images && !p->model) st = scored_images(e, sp, r, &x, &labels, &n);
    if (!st) st = ctx_reference(e, r);
    if (!st && need_images && p->model) st = scored_images(e, sp, r, &x, &labels, &n);
    r->n = n;
    if (!st && p->save_images && x) st = df_npy_save_images(p->save_images, x, n, e->c, e->h, e->w);
    unsigned fm = metrics & (1u << DF_METRIC_FD | 1u << DF_METRIC_KID | 1u << DF_METRIC_PR);
    if (!st && fm) {
        double t0 = df_now_sec();
        st = features_of(e, x, n, &feats);
        r->feature_seconds = df_now_sec() - t0;
        if (!st) st = df_eval_features(e->fnet, &e->ref, feats, n, fm, p, r);
    }
    if (!st && ((metrics >> DF_METRIC_ACC) & 1)) {
        double t0 = df_now_sec();
        df_model *clf = NULL, *own = NULL;
        if (!labels) st = df_fail(DF_ERR_ARG, "acc needs labels: a class-conditional model, or a folder with a subfolder per class");
        if (!st) st = scorer(e, r, "acc", &clf, &own);
        int K = 0;
        for (int i = 0; !st && i < n; i++) K = DF_MAX(K, labels[i] + 1);
        if (!st && df_model_config(clf)->classifier_classes < K)
            st = df_fail(DF_ERR_ARG, "the classifier %s knows %d classes; the images have labels up to %d", r->classifier,
                         df_model_config(clf)->classifier_classes, K - 1);
        if (!st) st = accuracy_of(clf, x, n, e->h, e->w, labels, &r->acc.value);
        r->acc.have = !st, r->acc.n = n;
        r->acc.se = sqrt(r->acc.value * (1 - r->acc.value) / DF_MAX(n, 1));
        r->acc.seconds = df_now_sec() - t0;
        df_model_free(own);
    }
    if (!st && ((metrics >> DF_METRIC_CLASSES) & 1)) st = eval_classes(e, x, n, r);
    if (!st && ((metrics >> DF_METRIC_CAS) & 1)) st = eval_cas(e, r);
    if (!st && ((metrics >> DF_METRIC_BPD) & 1)) st = eval_bpd(e, r);
    free(x), free(labels), free(feats);
    return st;
}

static void result_init(df_eval_result *r) {
    memset(r, 0, sizeof *r);
    df_eval_value *v[] = {&r->fd, &r->kid, &r->precision, &r->recall, &r->cas, &r->cas_real, &r->bpd, &r->acc};
    for (int i = 0; i < DF_COUNTOF(v); i++) v[i]->value = v[i]->se = v[i]->spread = NAN;
}

df_status df_evaluate(const df_eval_params *p, df_eval_result *r) {
    result_init(r);
    const double t0 = df_now_sec();
    eval_ctx e;
    df_status st = ctx_open(&e, p, r);
    if (!st) {
        r->sampler = p->sampler;
        if (r->sampler.steps <= 0 && p->model) r->sampler.steps = r->sampler.kind == DF_SAMPLER_DDPM ? e.sched.T : 50;
        st = run_once(&e, &p->sampler, p->metrics, r);
    }
    ctx_close(&e);
    r->seconds = df_now_sec() - t0;
    return st;
}

df_status df_eval_sweep(const df_eval_params *p, const df_sampler_kind *kinds, int nkinds, const int *steps, int nsteps,
                        df_eval_result *results, const char *plot_path) {
    if (!p->model) return df_fail(DF_ERR_ARG, "a sampler sweep needs a model");
    for (int i = 0; i < nkinds * nsteps; i++) result_init(&results[i]);
    eval_ctx e;
    df_eval_result first;
    result_init(&first);
    df_status st = ctx_open(&e, p, &first);
    for (int a = 0; a < nkinds && !st; a++)
        for (int b = 0; b < nsteps && !st; b++) {
            df_eval_result *r = &results[a * nsteps + b];
            *r = first;
            df_sampler_params sp = p->sampler;
            sp.kind = kinds[a], sp.steps = steps[b];
            if (sp.steps > e.sched.T) st = df_fail(DF_ERR_ARG, "%d steps: the model has %d timesteps", sp.steps, e.sched.T);
            snprintf(e.stage, sizeof e.stage, "sampling: %s, %d steps (%d of %d)", df_sampler_name(sp.kind), sp.steps,
                     a * nsteps + b + 1, nkinds * nsteps);
            const double t0 = df_now_sec();
            r->sampler = sp;
            if (!st) st = run_once(&e, &sp, p->metrics & (1u << DF_METRIC_FD | 1u << DF_METRIC_KID), r);
            r->seconds = df_now_sec() - t0;
        }
    ctx_close(&e);
    if (!st && plot_path) {
        df_plot_series s[DF_SAMPLER_COUNT];
        double xs[DF_SAMPLER_COUNT][16], ys[DF_SAMPLER_COUNT][16];
        const int nk = DF_MIN(nkinds, DF_SAMPLER_COUNT), ns = DF_MIN(nsteps, 16);
        for (int a = 0; a < nk; a++) {
            for (int b = 0; b < ns; b++) {
                /* network evaluations, not steps: Heun calls the network twice a step (once on its last) */
                xs[a][b] = kinds[a] == DF_SAMPLER_HEUN ? 2.0 * steps[b] - 1 : steps[b];
                ys[a][b] = results[a * nsteps + b].fd.value;
            }
            s[a] = (df_plot_series){.label = df_sampler_name(kinds[a]), .x = xs[a], .y = ys[a], .n = ns, .marker = 1};
        }
        char title[200];
        snprintf(title, sizeof title, "FD against network evaluations (%d images, %s)", p->n, p->model);
        df_plot_opts o = {.title = title, .xlabel = "network evaluations per image", .ylabel = "Fréchet distance",
                          .logx = 1, .logy = 1, .width = 900, .height = 600};
        st = df_plot_lines(plot_path, &o, s, nk);
    }
    return st;
}
