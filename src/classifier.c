/* Training image classifiers: a noise-aware one (images noised to random timesteps, as classifier
 * guidance needs: Dhariwal & Nichol 2021, section 4) or a noise-free one (clean images, to score what a
 * model generates). The network is a U-Net config's encoder half with a classifier head. */
#include "internal.h"

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

df_status df_classifier_predict(df_model *m, int n, int h, int w, const float *x, const float *t, int *pred,
                                int *correct) {
    const int k = df_model_config(m)->classifier_classes;
    if (k <= 0) return df_fail(DF_ERR_CONFIG, "this model is not a classifier");
    if (correct) *correct = 0;
    if (n <= 0) return DF_OK;
    /* at most 100 images a network call: a large n need not have its activations in memory at once */
    const int B = DF_MIN(n, 100);
    const size_t dim = (size_t)df_model_config(m)->in_channels * h * w;
    float *z = malloc(sizeof(float) * (size_t)B * k), *clean = t ? NULL : calloc((size_t)B, sizeof(float));
    df_status st = z && (t || clean) ? DF_OK : df_fail(DF_ERR_NOMEM, "out of memory");
    for (int i0 = 0; i0 < n && !st; i0 += B) {
        const int b = DF_MIN(B, n - i0);
        st = df_model_forward(m, b, h, w, x + (size_t)i0 * dim, t ? t + i0 : clean, NULL, z);
        for (int i = 0; i < b && !st; i++) {
            int best = 0;
            for (int j = 1; j < k; j++) best = z[(size_t)i * k + j] > z[(size_t)i * k + best] ? j : best;
            if (correct) *correct += best == pred[i0 + i];   /* pred holds the true labels when counting */
            else pred[i0 + i] = best;
        }
    }
    free(z), free(clean);
    return st;
}

df_status df_classifier_train(const df_classifier_train_params *p) {
    if ((!p->out_dir || !*p->out_dir) && !p->model_out) return df_fail(DF_ERR_ARG, "no output directory");
    if (p->model_out) *p->model_out = NULL;
    if (p->max_steps <= 0 && p->max_minutes <= 0) return df_fail(DF_ERR_ARG, "no budget: give steps or minutes");
    if (p->batch_size < 1 || p->batch_size > 4096) return df_fail(DF_ERR_ARG, "batch size %d out of range", p->batch_size);
    df_unet_config cfg;
    df_model *init = NULL;
    df_status st = DF_OK;
    if (p->config) cfg = *p->config;
    else st = p->init_dir      ? df_model_load(p->init_dir, &init)
              : p->config_path ? df_unet_config_load(p->config_path, &cfg)
                               : df_unet_config_preset(p->preset, &cfg);
    if (st) return st;
    if (init) {
        cfg = *df_model_config(init);
        if (cfg.classifier_classes <= 0) {
            df_model_free(init);
            return df_fail(DF_ERR_CONFIG, "%s: not a classifier", p->init_dir);
        }
    }
    df_dataset *opened = NULL, *eval = NULL;
    const df_dataset *data = p->dataset;
    df_model *m = NULL;
    df_optimizer opt = {0};
    df_schedule sched = {0};
    float *x0 = NULL, *xt = NULL, *noise = NULL, *t = NULL;
    int *y = NULL, *ti = NULL, *perm = NULL;
    if (!data && (st = df_dataset_open(p->data, cfg.sample_size, cfg.in_channels, &opened))) {
        df_model_free(init);
        return st;
    }
    if (!data) data = opened;
    int K = df_dataset_num_classes(data), c, h, w;
    df_dataset_shape(data, &c, &h, &w);
    if (K < 2 || (init && K != cfg.classifier_classes)) {
        df_dataset_free(opened);
        df_model_free(init);
        return K < 2 ? df_fail(DF_ERR_ARG, "%s: a classifier needs labels of at least 2 classes", p->data)
                     : df_fail(DF_ERR_SHAPE, "%s has %d classes, the classifier %s has %d", p->data, K, p->init_dir,
                               cfg.classifier_classes);
    }
    cfg.classifier_classes = K, cfg.num_class_embeds = 0, cfg.class_embed_timestep = 0, cfg.dropout = 0;
    if (!st && (c != cfg.in_channels || (cfg.sample_size > 0 && (h != cfg.sample_size || w != cfg.sample_size))))
        st = df_fail(DF_ERR_SHAPE, "the images are %dx%d with %d channels; the classifier takes %dx%d with %d", h, w, c,
                     cfg.sample_size, cfg.sample_size, cfg.in_channels);
    if (!st && p->eval_data) st = df_dataset_open(p->eval_data, cfg.sample_size, cfg.in_channels, &eval);
    if (!st && init) m = init, init = NULL;
    else if (!st) st = df_model_create(&cfg, p->seed ^ 0xC1A55, &m);
    df_model_free(init);
    if (!st) st = df_schedule_init_default(&sched);
    df_optim_params op;
    df_optim_params_default(&op);
    op.lr = p->lr, op.weight_decay = p->weight_decay, op.warmup_steps = 100;
    op.total_steps = p->max_steps > 0 ? p->max_steps : 0;
    op.decay = p->max_steps > 0 ? DF_LR_COSINE : DF_LR_CONSTANT;
    if (!st) st = df_optimizer_init(&opt, &op, df_model_num_params(m));
    const int B = p->batch_size, N = df_dataset_count(data);
    const size_t dim = (size_t)c * h * w;
    if (!st) {
        x0 = malloc(sizeof(float) * B * dim), xt = malloc(sizeof(float) * B * dim);
        noise = malloc(sizeof(float) * B * dim), t = malloc(sizeof(float) * B);
        y = malloc(sizeof(int) * B), ti = malloc(sizeof(int) * B), perm = malloc(sizeof(int) * N);
        if (!x0 || !xt || !noise || !t || !y || !ti || !perm) st = df_fail(DF_ERR_NOMEM, "out of memory");
    }
    df_rng rng;
    df_rng_init(&rng, p->seed);
    const double t0 = df_now_sec();
    long step = 0;
    int pos = N, epoch = -1;
    double loss_avg = 0, acc_avg = 0;
    df_model_set_train(m, 1, &rng);
    while (!st) {
        if (p->max_steps > 0 && step >= p->max_steps) break;
        if (p->max_minutes > 0 && df_now_sec() - t0 >= p->max_minutes * 60) break;
        if (p->stop && *p->stop) break;
        for (int i = 0; i < B; i++) {
            if (pos >= N) {   /* a new epoch: a fresh order */
                epoch++, pos = 0;
                df_shuffle(perm, N, &rng);
            }
            int idx = perm[pos++];
            df_dataset_get(data, idx, df_rng_u32(&rng) & 1, x0 + (size_t)i * dim);
            y[i] = df_dataset_label(data, idx);
            ti[i] = p->noise_aware ? (int)(df_rng_u32(&rng) % (uint32_t)sched.T) : 0;
            t[i] = (float)ti[i];
        }
        if (p->noise_aware) {   /* x_t ~ q(x_t | x_0) at each image's timestep */
            df_rng_fill_normal(&rng, noise, (size_t)B * dim);
            df_q_sample(&sched, B, dim, x0, noise, ti, xt);
        } else {
            memcpy(xt, x0, sizeof(float) * B * dim);
        }
        df_model_zero_grad(m);
        float loss;
        int hits = 0;
        st = df_model_classifier_loss_grad(m, B, h, w, xt, t, y, &loss, &hits);
        if (st) break;
        if (!isfinite(loss)) {
            st = df_fail(DF_ERR_ARG, "step %ld: the loss is %g (lower the learning rate?)", step + 1, loss);
            break;
        }
        double gnorm;
        df_optimizer_step(&opt, df_model_params(m), df_model_grads(m), &gnorm);
        step++;
        loss_avg = step == 1 ? loss : 0.98 * loss_avg + 0.02 * loss;
        acc_avg = step == 1 ? (double)hits / B : 0.98 * acc_avg + 0.02 * hits / B;
        if (p->progress && (step % p->log_every == 0 || step == 1)) {
            double el = df_now_sec() - t0;
            df_classifier_progress pr = {step, p->max_steps, epoch, loss, loss_avg, acc_avg, step * B / el, el, -1};
            if (p->max_steps > 0) pr.eta = el / step * (p->max_steps - step);
            if (p->max_minutes > 0 && (pr.eta < 0 || p->max_minutes * 60 - el < pr.eta)) pr.eta = p->max_minutes * 60 - el;
            p->progress(p->progress_ctx, &pr);
        }
    }
    df_model_set_train(m, 0, NULL);
    if (!st && step == 0) st = df_fail(DF_ERR_ARG, "stopped before the first step: nothing to save");
    if (!st) df_model_set_noise_aware(m, p->noise_aware);
    if (!st && p->out_dir && *p->out_dir) st = df_model_save(m, p->out_dir);
    if (!st && p->out_dir && *p->out_dir) st = df_class_info_save_data(p->out_dir, data, K, -1);   /* names, for messages and `info` */
    if (!st && eval && p->eval_accuracy) st = accuracy(m, eval, 10000, p->eval_accuracy);
    df_dataset_free(opened), df_dataset_free(eval);
    if (!st && p->model_out) *p->model_out = m;
    else df_model_free(m);
    df_optimizer_free(&opt);
    df_schedule_free(&sched);
    free(x0), free(xt), free(noise), free(t), free(y), free(ti), free(perm);
    return st;
}
