/* Training image classifiers: a noise-aware one (images noised to random timesteps, as classifier
 * guidance needs: Dhariwal & Nichol 2021, section 4) or a noise-free one (clean images, to score what a
 * model generates). The network is a U-Net config's encoder half with a classifier head. */
#include "loop.h"

#include <math.h>
#include <string.h>

void df_classifier_train_params_default(df_classifier_train_params *p) {
    memset(p, 0, sizeof *p);
    p->data = "fashion-mnist";
    p->preset = "fmnist-s";
    p->noise_aware = 1;
    p->batch_size = 64;
    p->max_steps = 0;
    p->lr = 3e-4;
    p->weight_decay = 0.05;
    p->log_every = 20;
    p->out_dir = "runs/classifier";
}

/* Accuracy on clean images of up to `limit` images of d, read 100 at a time. */
static df_status accuracy(df_model *m, const df_dataset *d, int limit, double *acc) {
    int n = DF_MIN(df_dataset_count(d), limit), c, h, w;
    df_dataset_shape(d, &c, &h, &w);
    const size_t dim = (size_t)c * h * w;
    const int B = 100;
    float *x = malloc(sizeof(float) * B * dim);
    int *y = malloc(sizeof(int) * B), hits = 0;
    df_status st = x && y ? DF_OK : df_fail(DF_ERR_NOMEM, "out of memory");
    for (int i0 = 0; i0 < n && !st; i0 += B) {
        int b = DF_MIN(B, n - i0), ok = 0;
        for (int i = 0; i < b; i++) {
            df_dataset_get(d, i0 + i, 0, x + (size_t)i * dim);
            y[i] = df_dataset_label(d, i0 + i);
        }
        st = df_classifier_predict(m, b, h, w, x, NULL, y, &ok);
        hits += ok;
    }
    free(x), free(y);
    *acc = n > 0 ? (double)hits / n : 0;
    return st;
}

/* The network over n images, at most 100 a call (a large n need not have its activations in memory at once):
 * each image's arg max into pred (or, with correct, counted against pred), or its softmax into probs. */
static df_status classify(df_model *m, int n, int h, int w, const float *x, const float *t, int *pred, int *correct,
                          float *probs) {
    const int k = df_model_config(m)->classifier_classes;
    if (k <= 0) return df_fail(DF_ERR_CONFIG, "this model is not a classifier");
    if (correct) *correct = 0;
    if (n <= 0) return DF_OK;
    const int B = DF_MIN(n, 100);
    const size_t dim = (size_t)df_model_config(m)->in_channels * h * w;
    float *z = malloc(sizeof(float) * (size_t)B * k), *clean = t ? NULL : calloc((size_t)B, sizeof(float));
    df_status st = z && (t || clean) ? DF_OK : df_fail(DF_ERR_NOMEM, "out of memory");
    for (int i0 = 0; i0 < n && !st; i0 += B) {
        const int b = DF_MIN(B, n - i0);
        st = df_model_forward(m, b, h, w, x + (size_t)i0 * dim, t ? t + i0 : clean, NULL, z);
        for (int i = 0; i < b && !st; i++) {
            const float *zi = z + (size_t)i * k;
            int best = 0;
            for (int j = 1; j < k; j++) best = zi[j] > zi[best] ? j : best;
            if (probs) {   /* softmax, shifted by the largest logit so exp cannot overflow */
                float *pi = probs + (size_t)(i0 + i) * k;
                double sum = 0;
                for (int j = 0; j < k; j++) sum += exp((double)zi[j] - zi[best]);
                for (int j = 0; j < k; j++) pi[j] = (float)(exp((double)zi[j] - zi[best]) / sum);
            }
            if (correct) *correct += best == pred[i0 + i];   /* pred holds the true labels when counting */
            else if (pred) pred[i0 + i] = best;
        }
    }
    free(z), free(clean);
    return st;
}

df_status df_classifier_predict(df_model *m, int n, int h, int w, const float *x, const float *t, int *pred,
                                int *correct) {
    return classify(m, n, h, w, x, t, pred, correct, NULL);
}

df_status df_classifier_probs(df_model *m, int n, int h, int w, const float *x, const float *t, float *probs) {
    return classify(m, n, h, w, x, t, NULL, NULL, probs);
}

/* ---- training: the classifier task of the shared loop --------------------------------------------------- */

typedef struct {
    const df_classifier_train_params *p;
    df_schedule sched;
    float      *xt, *noise, *t;   /* batch buffers, sized once (xt and noise only when noise-aware) */
    int        *ti;
    int         hits;             /* images of the last batch classified right */
    double      accuracy_avg;
} classifier_task;

/* Cross-entropy on the loop's batch: clean images, or x_t ~ q(x_t | x_0) at a uniform timestep each. */
static df_status classifier_loss(void *ctx, train_loop *L, int part, double *loss) {
    classifier_task *ct = ctx;
    const int B = L->p.batch_size;
    const float *x = L->x0;
    for (int i = 0; i < B; i++) {
        ct->ti[i] = ct->p->noise_aware ? (int)(df_rng_u32(&L->rng) % (uint32_t)ct->sched.T) : 0;
        ct->t[i] = (float)ct->ti[i];
    }
    if (ct->p->noise_aware) {
        df_rng_fill_normal(&L->rng, ct->noise, (size_t)B * L->dim);
        df_q_sample(&ct->sched, B, L->dim, L->x0, ct->noise, ct->ti, ct->xt);
        x = ct->xt;
    }
    float l = 0;
    df_status st = df_model_classifier_loss_grad(L->model, B, L->h, L->w, x, ct->t, L->labels, &l, &ct->hits);
    *loss = l;
    return st;
}

static void classifier_step_applied(void *ctx, train_loop *L) {
    classifier_task *ct = ctx;
    double acc = (double)ct->hits / L->p.batch_size;
    ct->accuracy_avg = L->opt.step == 1 ? acc : 0.98 * ct->accuracy_avg + 0.02 * acc;
}

static void classifier_progress(void *ctx, const df_train_progress *pr) {
    classifier_task *ct = ctx;
    if (!ct->p->progress) return;
    df_classifier_progress cp = {pr->step,     pr->total_steps,    pr->epoch,   pr->loss, pr->loss_avg,
                                 ct->accuracy_avg, pr->images_per_sec, pr->elapsed, pr->eta, NULL, NULL};
    ct->p->progress(ct->p->progress_ctx, &cp);
}

static const train_task classifier_train_task = {
    .batch_loss = classifier_loss,
    .step_applied = classifier_step_applied,
    .progress = classifier_progress,
};

/* The network's config, or the classifier to go on training (init, with its config). */
static df_status classifier_config(const df_classifier_train_params *p, df_unet_config *cfg, df_model **init) {
    *init = NULL;
    if (p->config) {
        *cfg = *p->config;
        return DF_OK;
    }
    df_status st = p->init_dir      ? df_model_load(p->init_dir, init)
                   : p->config_path ? df_unet_config_load(p->config_path, cfg)
                                    : df_unet_config_preset(p->preset, cfg);
    if (st || !*init) return st;
    *cfg = *df_model_config(*init);
    if (cfg->classifier_classes > 0) return DF_OK;
    df_model_free(*init);
    *init = NULL;
    return df_fail(DF_ERR_CONFIG, "%s: not a classifier", p->init_dir);
}

/* The network for the data's K classes: cfg's encoder with a fresh head, or init (which must have K). */
static df_status classifier_model(const df_classifier_train_params *p, const df_dataset *data, df_unet_config cfg,
                                  df_model **init, df_model **m) {
    int K = df_dataset_num_classes(data), c, h, w;
    df_dataset_shape(data, &c, &h, &w);
    if (K < 2) return df_fail(DF_ERR_ARG, "%s: a classifier needs labels of at least 2 classes", p->data);
    if (*init && K != cfg.classifier_classes)
        return df_fail(DF_ERR_SHAPE, "%s has %d classes, the classifier %s has %d", p->data, K, p->init_dir,
                       cfg.classifier_classes);
    if (c != cfg.in_channels || (cfg.sample_size > 0 && (h != cfg.sample_size || w != cfg.sample_size)))
        return df_fail(DF_ERR_SHAPE, "the images are %dx%d with %d channels; the classifier takes %dx%d with %d", h, w,
                       c, cfg.sample_size, cfg.sample_size, cfg.in_channels);
    if (*init) {
        *m = *init, *init = NULL;
        return DF_OK;
    }
    cfg.classifier_classes = K, cfg.num_class_embeds = 0, cfg.class_embed_timestep = 0, cfg.dropout = 0;
    return df_model_create(&cfg, p->seed ^ 0xC1A55, m);
}

/* The loop's settings: AdamW with warmup and a cosine decay over max_steps (constant when the budget is
 * time), random flips, no EMA and no checkpoints. */
static train_loop_params classifier_loop_params(const df_classifier_train_params *p) {
    train_loop_params lp = {.batch_size = p->batch_size, .grad_accum = 1, .flip = 1, .seed = p->seed,
                            .max_steps = p->max_steps, .max_minutes = p->max_minutes, .log_every = p->log_every,
                            .stop = p->stop};
    df_optim_params_default(&lp.optim);
    lp.optim.lr = p->lr, lp.optim.weight_decay = p->weight_decay, lp.optim.warmup_steps = 100;
    lp.optim.total_steps = p->max_steps > 0 ? p->max_steps : 0;
    lp.optim.decay = p->max_steps > 0 ? DF_LR_COSINE : DF_LR_CONSTANT;
    return lp;
}

/* The trained classifier: its directory (config, weights, the classes' names) and the accuracy asked for. */
static df_status classifier_outputs(const df_classifier_train_params *p, df_model *m, const df_dataset *data,
                                    const df_dataset *eval) {
    df_status st = DF_OK;
    df_model_set_noise_aware(m, p->noise_aware);
    const int K = df_model_config(m)->classifier_classes;
    if (p->out_dir && *p->out_dir) st = df_model_save(m, p->out_dir);
    if (!st && p->out_dir && *p->out_dir) st = df_class_info_save_data(p->out_dir, data, K, -1);   /* for messages, `info` */
    if (!st && eval && p->eval_accuracy) st = accuracy(m, eval, 10000, p->eval_accuracy);
    return st;
}

/* What loading the data found, to the caller before training (as df_train reports it). */
static void report_data(const df_classifier_train_params *p, const df_dataset *data) {
    if (!p->progress) return;
    const df_dataset_report *r = df_dataset_get_report(data);
    for (int k = 0; k < DF_DATASET_NOTE_COUNT; k++) {
        char note[1200];
        df_classifier_progress cp = {.eta = -1, .event = note, .data = k == 0 ? r : NULL};
        if (df_dataset_report_note(r, (df_dataset_note)k, note, sizeof note)) p->progress(p->progress_ctx, &cp);
    }
}

df_status df_classifier_train(const df_classifier_train_params *p) {
    if ((!p->out_dir || !*p->out_dir) && !p->model_out) return df_fail(DF_ERR_ARG, "no output directory");
    if (p->model_out) *p->model_out = NULL;
    if (p->max_steps <= 0 && p->max_minutes <= 0) return df_fail(DF_ERR_ARG, "no budget: give steps or minutes");
    if (p->batch_size < 1 || p->batch_size > 4096) return df_fail(DF_ERR_ARG, "batch size %d out of range", p->batch_size);
    df_unet_config cfg;
    df_model *init = NULL, *m = NULL;
    df_dataset *opened = NULL, *eval = NULL;
    const df_dataset *data = p->dataset;
    classifier_task ct = {.p = p};
    train_loop L;
    train_loop_params lp = classifier_loop_params(p);
    train_loop_init(&L, &lp, &classifier_train_task, &ct);
    df_status st = classifier_config(p, &cfg, &init);
    if (!st && !data) {
        df_dataset_params dp;
        df_dataset_params_default(&dp);
        dp.size = cfg.sample_size, dp.channels = cfg.in_channels, dp.strict = p->strict_data;
        if (!(st = df_dataset_load(p->data, &dp, &opened))) data = opened;
    }
    if (!st) report_data(p, data);
    if (!st) st = classifier_model(p, data, cfg, &init, &m);
    if (!st && p->eval_data) st = df_dataset_open(p->eval_data, cfg.sample_size, cfg.in_channels, &eval);
    if (!st) st = df_schedule_init_default(&ct.sched);
    if (!st) st = train_loop_setup(&L, m, data, NULL);
    const size_t B = (size_t)p->batch_size;
    if (!st) {
        ct.t = malloc(sizeof(float) * B), ct.ti = malloc(sizeof(int) * B);
        if (p->noise_aware) ct.xt = malloc(sizeof(float) * B * L.dim), ct.noise = malloc(sizeof(float) * B * L.dim);
        if (!ct.t || !ct.ti || (p->noise_aware && (!ct.xt || !ct.noise))) st = df_fail(DF_ERR_NOMEM, "out of memory");
    }
    if (!st) st = train_loop_run(&L);
    if (m) df_model_set_train(m, 0, NULL);
    if (!st && L.step == 0) st = df_fail(DF_ERR_ARG, "stopped before the first step: nothing to save");
    if (!st) st = classifier_outputs(p, m, data, eval);
    train_loop_free(&L);
    df_model_free(init);
    df_dataset_free(opened), df_dataset_free(eval);
    if (!st && p->model_out) *p->model_out = m;
    else df_model_free(m);
    df_schedule_free(&ct.sched);
    free(ct.xt), free(ct.noise), free(ct.t), free(ct.ti);
    return st;
}
