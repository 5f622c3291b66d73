/* The training loop: DDPM's L_simple (or x_0 / v targets, min-SNR weights) with AdamW or SGD, EMA of
 * the weights, periodic sample grids, and checkpoints that resume bit for bit. */
#define _POSIX_C_SOURCE 200809L
#include "plot.h"
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct df_train_fault df_train_fault = {0, 1, 0, NAN};

void df_train_params_default(df_train_params *p) {
    memset(p, 0, sizeof *p);
    p->data = "fashion-mnist";
    p->flip = 0;
    p->preset = "fmnist-s";
    p->beta_schedule = DF_BETA_LINEAR;
    p->num_train_timesteps = 1000;
    p->beta_start = 1e-4;
    p->beta_end = 0.02;
    p->prediction = DF_PRED_EPSILON;
    df_optim_params_default(&p->optim);
    p->batch_size = 64;
    p->grad_accum = 1;
    p->use_ema = 1;
    p->ema_max_decay = 0.9999;
    p->ema_power = 0.75;
    p->ema_inv_gamma = 1.0;
    p->out_dir = "runs/fmnist-s";
    p->save_every = 1000;
    p->sample_every = 1000;
    p->sample_count = 64;
    p->sample_steps = 50;
    p->keep_checkpoints = 2;
    p->log_every = 10;
    p->eval_n = 500;
    p->eval_steps = 25;
    p->eval_ref = "fashion-mnist:test";
}

typedef struct {
    df_train_params     p;
    df_dataset         *data;
    df_model           *model, *ema_model;
    float              *ema;          /* EMA weights, the parameters' layout */
    df_optimizer        opt;
    df_ema              ema_state;
    df_schedule         sched;
    df_scheduler_config sc;
    df_rng              rng;          /* timesteps, noise, flips and dropout */
    long                step;
    int                 epoch, pos;   /* data order: position in this epoch's permutation */
    int                *perm;
    int                 c, h, w, conditional, null_class;
    size_t              dim;
    /* batch buffers, sized once */
    float *x0, *xt, *noise, *target, *weights, *t, *per_sample;
    int   *ti, *labels;
    /* loss bookkeeping between log rows */
    double quarter_sum[4];
    long   quarter_n[4];
    double loss_avg;
    char   data_path[4096];
    long   resume_opt_step, resume_ema_updates;   /* counters read from a checkpoint, applied after init */
    long   saved_step;                            /* the step `latest` names (-1: none yet) */
    long   nonfinite_skipped;                     /* steps skipped for NaN/Inf, the run's total */
    /* evaluation during training */
    df_feature_net     *eval_net;
    df_ref_features     eval_ref;
    double              eval_time;   /* seconds spent evaluating: not counted as training time */
} trainer;

static uint64_t mix64(uint64_t z) {   /* splitmix64's finaliser: decorrelates nearby seeds */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* The data order of an epoch is a function of (seed, epoch) alone, so a resumed run needs only the
 * epoch and the position within it. */
static void make_permutation(trainer *tr) {
    int n = df_dataset_count(tr->data);
    df_rng r;
    df_rng_init(&r, mix64(tr->p.seed ^ mix64((uint64_t)tr->epoch + 0x9E3779B97F4A7C15ULL)));
    df_shuffle(tr->perm, n, &r);
}

static void fill_batch(trainer *tr) {
    const int B = tr->p.batch_size, T = tr->sched.T;
    for (int i = 0; i < B; i++) {
        if (tr->pos >= df_dataset_count(tr->data)) {
            tr->epoch++;
            tr->pos = 0;
            make_permutation(tr);
        }
        int idx = tr->perm[tr->pos++];
        int flip = tr->p.flip && (df_rng_u32(&tr->rng) & 1);
        df_dataset_get(tr->data, idx, flip, tr->x0 + (size_t)i * tr->dim);
        if (tr->conditional) tr->labels[i] = df_dataset_label(tr->data, idx);
        /* label dropout: the null class teaches the unconditional prediction (drawn only when enabled, so
         * runs without it keep their random stream) */
        if (tr->conditional && tr->p.class_dropout > 0 && df_rng_uniform(&tr->rng) < tr->p.class_dropout)
            tr->labels[i] = tr->null_class;
        tr->ti[i] = (int)(df_rng_u32(&tr->rng) % (uint32_t)T);
        tr->t[i] = (float)tr->ti[i];
    }
    df_rng_fill_normal(&tr->rng, tr->noise, (size_t)B * tr->dim);
    df_q_sample(&tr->sched, B, tr->dim, tr->x0, tr->noise, tr->ti, tr->xt);
    df_training_target(&tr->sched, tr->p.prediction, B, tr->dim, tr->x0, tr->noise, tr->ti, tr->target);
    for (int i = 0; i < B; i++)
        tr->weights[i] = (float)(df_loss_weight(&tr->sched, tr->p.prediction, tr->ti[i], tr->p.min_snr_gamma) /
                                 tr->p.grad_accum);
}

/* ---- checkpoints ------------------------------------------------------------------------------------ */

static df_status remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return DF_OK;
    if (S_ISDIR(st.st_mode)) {
        DIR *dp = opendir(path);
        if (!dp) return df_fail(DF_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        struct dirent *e;
        while ((e = readdir(dp))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char p[4400];
            snprintf(p, sizeof p, "%s/%s", path, e->d_name);
            remove_tree(p);
        }
        closedir(dp);
        if (rmdir(path) != 0) return df_fail(DF_ERR_IO, "%s: cannot remove: %s", path, strerror(errno));
    } else if (unlink(path) != 0) {
        return df_fail(DF_ERR_IO, "%s: cannot remove: %s", path, strerror(errno));
    }
    return DF_OK;
}

static void json_add_rng(cJSON *j, const char *name, const df_rng *r) {
    cJSON *o = cJSON_AddObjectToObject(j, name);
    char num[32];
    snprintf(num, sizeof num, "%llu", (unsigned long long)r->seed);   /* 64-bit values as strings: exact */
    cJSON_AddStringToObject(o, "seed", num);
    snprintf(num, sizeof num, "%llu", (unsigned long long)r->counter);
    cJSON_AddStringToObject(o, "counter", num);
    cJSON *b = cJSON_AddArrayToObject(o, "buf");
    for (int i = 0; i < 4; i++) cJSON_AddItemToArray(b, cJSON_CreateNumber(r->buf[i]));
    cJSON_AddNumberToObject(o, "nbuf", r->nbuf);
}

static df_status save_state_json(const trainer *tr, const char *path) {
    const df_train_params *p = &tr->p;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "version", 1);
    cJSON_AddNumberToObject(j, "step", (double)tr->step);
    cJSON_AddNumberToObject(j, "epoch", tr->epoch);
    cJSON_AddNumberToObject(j, "position", tr->pos);
    cJSON_AddNumberToObject(j, "images_seen", (double)tr->step * p->batch_size * p->grad_accum);
    cJSON_AddNumberToObject(j, "ema_updates", (double)tr->ema_state.updates);
    cJSON_AddNumberToObject(j, "optimizer_step", (double)tr->opt.step);
    /* cJSON prints doubles with 15 digits unless they differ by more than an epsilon, which loses the last
     * bits: 17 digits read back exactly, so a resumed run's loss average continues bit for bit */
    char exact[40];
    snprintf(exact, sizeof exact, "%.17g", isfinite(tr->loss_avg) ? tr->loss_avg : 0.0);
    cJSON_AddRawToObject(j, "loss_avg", exact);
    cJSON_AddNumberToObject(j, "nonfinite_skipped", (double)tr->nonfinite_skipped);
    json_add_rng(j, "rng", &tr->rng);
    char num[32];
    snprintf(num, sizeof num, "%llu", (unsigned long long)p->seed);
    cJSON_AddStringToObject(j, "seed", num);
    cJSON_AddStringToObject(j, "data", p->data);
    cJSON_AddStringToObject(j, "data_description", df_dataset_description(tr->data));
    cJSON_AddNumberToObject(j, "image_size", tr->h);
    cJSON_AddBoolToObject(j, "flip", p->flip);
    cJSON_AddNumberToObject(j, "batch_size", p->batch_size);
    cJSON_AddNumberToObject(j, "grad_accum", p->grad_accum);
    cJSON_AddNumberToObject(j, "min_snr_gamma", p->min_snr_gamma);
    cJSON_AddNumberToObject(j, "class_dropout", p->class_dropout);
    cJSON_AddNumberToObject(j, "max_steps", (double)p->max_steps);
    cJSON_AddNumberToObject(j, "max_epochs", p->max_epochs);
    cJSON_AddNumberToObject(j, "max_minutes", p->max_minutes);
    cJSON_AddBoolToObject(j, "use_ema", p->use_ema);
    cJSON_AddNumberToObject(j, "ema_max_decay", p->ema_max_decay);
    cJSON_AddNumberToObject(j, "ema_power", p->ema_power);
    cJSON_AddNumberToObject(j, "ema_inv_gamma", p->ema_inv_gamma);
    cJSON *o = cJSON_AddObjectToObject(j, "optimizer");
    cJSON_AddStringToObject(o, "kind", p->optim.kind == DF_OPT_ADAMW ? "adamw" : "sgd");
    cJSON_AddNumberToObject(o, "lr", p->optim.lr);
    cJSON_AddNumberToObject(o, "beta1", p->optim.beta1);
    cJSON_AddNumberToObject(o, "beta2", p->optim.beta2);
    cJSON_AddNumberToObject(o, "eps", p->optim.eps);
    cJSON_AddNumberToObject(o, "weight_decay", p->optim.weight_decay);
    cJSON_AddNumberToObject(o, "momentum", p->optim.momentum);
    cJSON_AddBoolToObject(o, "nesterov", p->optim.nesterov);
    cJSON_AddNumberToObject(o, "warmup_steps", (double)p->optim.warmup_steps);
    cJSON_AddNumberToObject(o, "decay", p->optim.decay);
    cJSON_AddNumberToObject(o, "total_steps", (double)p->optim.total_steps);
    cJSON_AddNumberToObject(o, "grad_clip", p->optim.grad_clip);
    return df_write_json_atomic(path, j);
}

/* fsync a directory, so the entries renamed into it survive a power cut, not only a crash (file systems
 * that cannot sync directories say EINVAL: nothing to do there). */
static df_status sync_dir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return df_fail(DF_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    int rc = fsync(fd), e = errno;
    close(fd);
    if (rc != 0 && e != EINVAL) return df_fail(DF_ERR_IO, "%s: cannot sync: %s", path, strerror(e));
    return DF_OK;
}

/* Remove a directory tree without ever leaving a half-removed directory under its real name: it is
 * renamed to `<path>.old.tmp` first (which a later run cleans up if this one dies halfway). */
static df_status discard_tree(const char *path) {
    char trash[4410];
    snprintf(trash, sizeof trash, "%s.old.tmp", path);
    remove_tree(trash);
    if (rename(path, trash) != 0)
        return errno == ENOENT ? DF_OK : df_fail(DF_ERR_IO, "%s: cannot remove: %s", path, strerror(errno));
    return remove_tree(trash);
}

/* What an interrupted run leaves behind: checkpoint directories being written or removed
 * (checkpoint-*.tmp), the `latest.tmp` symlink, and df_write_file_atomic's "<file>.tmp.<pid>" files of the
 * loss log and the sample grids. None is ever named by `latest`, so all can go. */
static void remove_leftovers(const char *out_dir) {
    char sub[4300];
    snprintf(sub, sizeof sub, "%s/samples", out_dir);
    const char *dirs[2] = {out_dir, sub};
    for (int d = 0; d < 2; d++) {
        DIR *dp = opendir(dirs[d]);
        if (!dp) continue;
        struct dirent *e;
        while ((e = readdir(dp))) {
            const char *n = e->d_name, *t = strstr(n, ".tmp.");
            size_t len = strlen(n);
            int junk = d == 0 && ((!strncmp(n, "checkpoint-", 11) && len > 15 && !strcmp(n + len - 4, ".tmp")) ||
                                  !strcmp(n, "latest.tmp"));
            if (t && t[5] && strspn(t + 5, "0123456789") == strlen(t + 5))   /* "<file>.tmp.<pid>" */
                junk |= d == 0 ? t == n + 8 && !strncmp(n, "loss.csv", 8) : t > n + 4 && !strncmp(t - 4, ".png", 4);
            if (!junk) continue;
            char p[4600];
            snprintf(p, sizeof p, "%s/%s", dirs[d], n);
            remove_tree(p);
        }
        closedir(dp);
    }
}

static df_status write_checkpoint_files(trainer *tr, const char *tmp) {
    char p[4400];
    df_status st = df_mkdir_p(tmp);
    size_t np = df_model_num_params(tr->model);
    /* unet/ holds the weights to sample with (the EMA when kept), as diffusers' training script saves */
    if (!st && tr->ema) {
        memcpy(df_model_params(tr->ema_model), tr->ema, np * sizeof(float));
        st = df_pipeline_save(tmp, tr->ema_model, &tr->sc);
    } else if (!st) {
        st = df_pipeline_save(tmp, tr->model, &tr->sc);
    }
    snprintf(p, sizeof p, "%s/unet_raw", tmp);
    if (!st) st = df_model_save(tr->model, p);
    if (!st) {
        st_entry e[2] = {{.name = "optimizer.m", .ndim = 1, .shape = {(int64_t)np}, .f32 = tr->opt.m},
                         {.name = "optimizer.v", .ndim = 1, .shape = {(int64_t)np}, .f32 = tr->opt.v}};
        snprintf(p, sizeof p, "%s/training_state.safetensors", tmp);
        st = st_write(p, e, tr->opt.v ? 2 : 1, NULL, 0);
    }
    snprintf(p, sizeof p, "%s/training_state.json", tmp);
    if (!st) st = save_state_json(tr, p);
    if (!st && tr->conditional)   /* the classes' names and the null class, for sampling and `info` */
        st = df_class_info_save_data(tmp, tr->data, df_model_config(tr->model)->num_class_embeds, tr->null_class);
    /* every file was synced as it was written; now the directories that name them */
    const char *subdirs[] = {"unet", "unet_raw", "scheduler", ""};
    for (int i = 0; i < DF_COUNTOF(subdirs) && !st; i++) {
        snprintf(p, sizeof p, "%s/%s", tmp, subdirs[i]);
        st = sync_dir(p);
    }
    return st;
}

static df_status save_checkpoint(trainer *tr) {
    if (tr->step == tr->saved_step) return DF_OK;   /* `latest` holds this very state: never replace it */
    char dir[4200], tmp[4300], p[4400];
    snprintf(dir, sizeof dir, "%s/checkpoint-%07ld", tr->p.out_dir, tr->step);
    snprintf(tmp, sizeof tmp, "%s.tmp", dir);
    remove_tree(tmp);
    df_status st = write_checkpoint_files(tr, tmp);
    /* publish: the finished directory gets its final name, then `latest` is switched by a rename, which
     * is atomic: a crash at any point leaves the previous checkpoint whole and `latest` naming one. A
     * directory already under the final name was left by a run that died before switching `latest`. */
    if (!st) st = discard_tree(dir);
    if (!st && rename(tmp, dir) != 0) st = df_fail(DF_ERR_IO, "%s: cannot rename: %s", tmp, strerror(errno));
    char link_tmp[4300], link[4300], target[64];
    snprintf(target, sizeof target, "checkpoint-%07ld", tr->step);
    snprintf(link, sizeof link, "%s/latest", tr->p.out_dir);
    snprintf(link_tmp, sizeof link_tmp, "%s/latest.tmp", tr->p.out_dir);
    if (!st) {
        unlink(link_tmp);
        if (symlink(target, link_tmp) != 0 || rename(link_tmp, link) != 0)
            st = df_fail(DF_ERR_IO, "%s: cannot update: %s", link, strerror(errno));
    }
    if (!st) st = sync_dir(tr->p.out_dir);
    if (st) {
        /* say which step was lost and what is still there; the detail names the file that failed */
        char why[1024];
        snprintf(why, sizeof why, "%s", df_error());
        remove_tree(tmp);
        unlink(link_tmp);
        if (tr->saved_step >= 0)
            return df_fail(st, "step %ld: checkpoint not saved, checkpoint-%07ld is kept: %s", tr->step, tr->saved_step,
                           why);
        return df_fail(st, "step %ld: checkpoint not saved (there is no earlier one): %s", tr->step, why);
    }
    tr->saved_step = tr->step;
    /* keep the newest keep_checkpoints */
    DIR *dp = opendir(tr->p.out_dir);
    if (!dp) return DF_OK;
    long steps[4096];
    int ns = 0;
    struct dirent *e;
    while ((e = readdir(dp)) && ns < 4096) {
        long s;
        char extra;
        if (sscanf(e->d_name, "checkpoint-%ld%c", &s, &extra) == 1) steps[ns++] = s;
    }
    closedir(dp);
    int keep = tr->p.keep_checkpoints > 0 ? tr->p.keep_checkpoints : 1;
    for (int i = 0; i < ns; i++) {
        int newer = 0;
        for (int k = 0; k < ns; k++) newer += steps[k] > steps[i];
        if (newer >= keep && steps[i] != tr->step) {
            snprintf(p, sizeof p, "%s/checkpoint-%07ld", tr->p.out_dir, steps[i]);
            discard_tree(p);
        }
    }
    return DF_OK;
}

static int json_u64(const cJSON *j, const char *k, uint64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    if (!cJSON_IsString(v)) return 0;
    char *end;
    errno = 0;
    *out = strtoull(v->valuestring, &end, 10);
    return *end == 0 && v->valuestring[0] >= '0' && v->valuestring[0] <= '9' && errno == 0;
}

/* A number field of the training state, checked before any conversion: present (unless optional), in
 * [lo, hi], and whole when `whole`. Returns 0 and sets *why on a bad value, so the caller names it. */
typedef struct {
    const char *path;
    const char *bad;   /* the first bad field, NULL while all are good */
    char        why[160];
} state_reader;

static int state_num(state_reader *r, const cJSON *obj, const char *key, double lo, double hi, int whole,
                     int optional, double *out) {
    if (r->bad) return 0;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v && optional) return 0;
    double x = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(x >= lo && x <= hi) || (whole && x != floor(x))) {
        r->bad = key;
        snprintf(r->why, sizeof r->why, "%s%s from %g to %g", v ? "expected " : "missing: expected ",
                 whole ? "a whole number" : "a number", lo, hi);
        return 0;
    }
    *out = x;
    return 1;
}

/* Restore the run's settings and counters from a checkpoint's training_state.json. Every value is
 * range-checked first: a damaged or hand-edited state is refused with the field it got wrong. */
static df_status load_state_json(trainer *tr, const char *path) {
    char *text;
    size_t len;
    df_status st = df_read_file(path, &text, &len);
    if (st) return st;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return df_fail(DF_ERR_FORMAT, "%s: not a JSON object", path);
    }
    df_train_params *p = &tr->p;
    state_reader r = {.path = path};
    const double BIG = 1e15, IMAX = 2147483647.0;
    double version = 0, v;
    if (state_num(&r, j, "version", 0, BIG, 1, 0, &version) && version != 1) {
        cJSON_Delete(j);
        return df_fail(DF_ERR_FORMAT, "%s: training state version %g; this version of diffuse resumes version 1",
                       path, version);
    }
    const cJSON *rng = cJSON_GetObjectItemCaseSensitive(j, "rng"), *o = cJSON_GetObjectItemCaseSensitive(j, "optimizer");
    const cJSON *buf = cJSON_GetObjectItemCaseSensitive(rng, "buf"), *data = cJSON_GetObjectItemCaseSensitive(j, "data");
    if (!r.bad && !cJSON_IsObject(rng)) r.bad = "rng", snprintf(r.why, sizeof r.why, "missing or not an object");
    if (!r.bad && !cJSON_IsObject(o)) r.bad = "optimizer", snprintf(r.why, sizeof r.why, "missing or not an object");
    if (!r.bad && !(cJSON_IsString(data) && data->valuestring[0] && strlen(data->valuestring) < sizeof tr->data_path))
        r.bad = "data", snprintf(r.why, sizeof r.why, "missing, empty or too long");
    if (!r.bad && !(cJSON_IsArray(buf) && cJSON_GetArraySize(buf) == 4))
        r.bad = "rng.buf", snprintf(r.why, sizeof r.why, "expected 4 numbers");
    uint64_t seed = 0, rseed = 0, rcount = 0;
    if (!r.bad && !json_u64(j, "seed", &seed)) r.bad = "seed", snprintf(r.why, sizeof r.why, "expected a decimal string");
    if (!r.bad && !json_u64(rng, "seed", &rseed))
        r.bad = "rng.seed", snprintf(r.why, sizeof r.why, "expected a decimal string");
    if (!r.bad && !json_u64(rng, "counter", &rcount))
        r.bad = "rng.counter", snprintf(r.why, sizeof r.why, "expected a decimal string");
    if (state_num(&r, j, "step", 0, BIG, 1, 0, &v)) tr->step = (long)v;
    if (state_num(&r, j, "epoch", 0, IMAX, 1, 0, &v)) tr->epoch = (int)v;
    if (state_num(&r, j, "position", 0, IMAX, 1, 0, &v)) tr->pos = (int)v;
    if (state_num(&r, j, "ema_updates", 0, BIG, 1, 0, &v)) tr->resume_ema_updates = (long)v;
    if (state_num(&r, j, "optimizer_step", 0, BIG, 1, 0, &v)) tr->resume_opt_step = (long)v;
    if (state_num(&r, j, "batch_size", 1, 4096, 1, 0, &v)) p->batch_size = (int)v;
    if (state_num(&r, j, "grad_accum", 1, 65536, 1, 0, &v)) p->grad_accum = (int)v;
    if (state_num(&r, j, "image_size", 0, DF_MAX_SIZE, 1, 0, &v)) p->image_size = (int)v;
    if (state_num(&r, j, "loss_avg", -1e300, 1e300, 0, 0, &v)) tr->loss_avg = v;
    if (state_num(&r, j, "min_snr_gamma", 0, 1e9, 0, 0, &v)) p->min_snr_gamma = v;
    p->class_dropout = 0;   /* absent in states written before label dropout */
    if (state_num(&r, j, "class_dropout", 0, 0.999999, 0, 1, &v)) p->class_dropout = v;
    if (state_num(&r, j, "nonfinite_skipped", 0, BIG, 1, 1, &v)) tr->nonfinite_skipped = (long)v;   /* absent before */
    if (state_num(&r, rng, "nbuf", 0, 4, 1, 0, &v)) tr->rng.nbuf = (int)v;
    for (int i = 0; i < 4 && !r.bad; i++) {
        const cJSON *b = cJSON_GetArrayItem(buf, i);
        double x = cJSON_IsNumber(b) ? b->valuedouble : -1;
        if (!(x >= 0 && x <= 4294967295.0 && x == floor(x)))
            r.bad = "rng.buf", snprintf(r.why, sizeof r.why, "expected whole numbers from 0 to 2^32 - 1");
        else tr->rng.buf[i] = (uint32_t)x;
    }
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(o, "kind");
    if (!r.bad && !(cJSON_IsString(kind) && (!strcmp(kind->valuestring, "sgd") || !strcmp(kind->valuestring, "adamw"))))
        r.bad = "optimizer.kind", snprintf(r.why, sizeof r.why, "expected \"adamw\" or \"sgd\"");
    if (!r.bad) p->optim.kind = !strcmp(kind->valuestring, "sgd") ? DF_OPT_SGD : DF_OPT_ADAMW;
    if (state_num(&r, o, "lr", 0, 100, 0, 1, &v)) p->optim.lr = v;
    if (state_num(&r, o, "beta1", 0, 1, 0, 1, &v)) p->optim.beta1 = v;
    if (state_num(&r, o, "beta2", 0, 1, 0, 1, &v)) p->optim.beta2 = v;
    if (state_num(&r, o, "eps", 0, 1, 0, 1, &v)) p->optim.eps = v;
    if (state_num(&r, o, "weight_decay", 0, 100, 0, 1, &v)) p->optim.weight_decay = v;
    if (state_num(&r, o, "momentum", 0, 1, 0, 1, &v)) p->optim.momentum = v;
    if (state_num(&r, o, "warmup_steps", 0, BIG, 1, 1, &v)) p->optim.warmup_steps = (long)v;
    if (state_num(&r, o, "decay", 0, DF_LR_COUNT - 1, 1, 1, &v)) p->optim.decay = (df_lr_decay)(int)v;
    if (state_num(&r, o, "total_steps", 0, BIG, 1, 1, &v)) p->optim.total_steps = (long)v;
    if (state_num(&r, o, "grad_clip", 0, 1e9, 0, 1, &v)) p->optim.grad_clip = v;
    /* a resumed run without a budget of its own finishes the original one */
    double ms = 0, me = 0, mm = 0;
    int had_budget = p->max_steps > 0 || p->max_epochs > 0 || p->max_minutes > 0;
    state_num(&r, j, "max_steps", 0, BIG, 1, 1, &ms);
    state_num(&r, j, "max_epochs", 0, IMAX, 1, 1, &me);
    state_num(&r, j, "max_minutes", 0, 1e9, 0, 1, &mm);
    if (!had_budget) p->max_steps = (long)ms, p->max_epochs = (int)me, p->max_minutes = mm;
    if (state_num(&r, j, "ema_max_decay", 0, 1, 0, 1, &v)) p->ema_max_decay = v;
    if (state_num(&r, j, "ema_power", 0, 100, 0, 1, &v)) p->ema_power = v;
    if (state_num(&r, j, "ema_inv_gamma", 1e-12, 1e12, 0, 1, &v)) p->ema_inv_gamma = v;
    if (!r.bad) {
        p->seed = seed;
        tr->rng.seed = rseed, tr->rng.counter = rcount;
        p->flip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "flip"));
        p->optim.nesterov = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "nesterov"));
        p->use_ema = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "use_ema"));
        snprintf(tr->data_path, sizeof tr->data_path, "%s", data->valuestring);   /* outlives the JSON */
        p->data = tr->data_path;
    }
    cJSON_Delete(j);
    if (r.bad) return df_fail(DF_ERR_FORMAT, "%s: field \"%s\": %s", path, r.bad, r.why);
    return DF_OK;
}

df_status df_train_state_check(const char *path) {
    trainer tr;
    memset(&tr, 0, sizeof tr);
    df_train_params_default(&tr.p);
    return load_state_json(&tr, path);
}

/* ---- samples ------------------------------------------------------------------------------------------- */

/* Append a note to the event text of this step ("a; b"). */
static void add_event(char *event, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void add_event(char *event, size_t cap, const char *fmt, ...) {
    size_t n = strlen(event);
    if (n && n + 3 < cap) {
        memcpy(event + n, "; ", 3);
        n += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(event + n, cap - n, fmt, ap);
    va_end(ap);
}

/* n images from the EMA weights (the trained ones without EMA): DDIM `steps` steps with x_0 clipping, noise
 * from its own stream seeded from `salt` (the same noise every time, so grids and scores compare; the
 * training's draws are untouched); a conditional model's images in equal runs of every real class. */
static df_status ema_samples(trainer *tr, int n, int steps, uint64_t salt, float *x) {
    const df_train_params *p = &tr->p;
    int k = tr->conditional ? df_model_config(tr->model)->num_class_embeds - (tr->null_class >= 0) : 0;
    df_model *m = tr->model;
    if (tr->ema) {
        memcpy(df_model_params(tr->ema_model), tr->ema, df_model_num_params(tr->model) * sizeof(float));
        m = tr->ema_model;
    }
    int *labels = malloc(sizeof(int) * (size_t)n);
    if (!labels) return df_fail(DF_ERR_NOMEM, "out of memory for samples");
    for (int i = 0; i < n; i++) labels[i] = k > 0 ? (int)((long)i * k / n) : 0;   /* rows of classes */
    df_sampler_params sp;
    df_sampler_params_default(&sp);
    sp.steps = steps;
    sp.prediction = p->prediction;
    sp.clip_x0 = 1;
    sp.clip_range = 1;
    df_rng r;
    df_rng_init(&r, mix64(p->seed + salt));
    df_status st = DF_OK;
    df_model_set_train(m, 0, NULL);
    const int chunk = 64;
    for (int i0 = 0; i0 < n && !st; i0 += chunk) {
        int b = DF_MIN(chunk, n - i0);
        df_model_denoiser dn = {m, tr->h, tr->w, tr->conditional ? labels + i0 : NULL};
        st = df_sample(&tr->sched, &sp, df_model_denoise, &dn, b, tr->dim, &r, x + (size_t)i0 * tr->dim);
    }
    df_model_set_train(tr->model, 1, &tr->rng);
    free(labels);
    return st;
}

static df_status write_samples(trainer *tr, char *event, size_t cap) {
    const df_train_params *p = &tr->p;
    int n = p->sample_count;
    if (n <= 0) return DF_OK;
    /* class-conditional: the same number of each class but the null one, a row per class */
    int k = tr->conditional ? df_model_config(tr->model)->num_class_embeds - (tr->null_class >= 0) : 0;
    if (k > 0 && n >= k) n -= n % k;
    float *x = malloc(sizeof(float) * (size_t)n * tr->dim);
    if (!x) return df_fail(DF_ERR_NOMEM, "out of memory for samples");
    df_status st = ema_samples(tr, n, p->sample_steps, 0x5A3D1E, x);
    char path[4300];
    snprintf(path, sizeof path, "%s/samples", p->out_dir);
    if (!st) st = df_mkdir_p(path);
    int cols = (int)ceil(sqrt((double)n));
    if (tr->conditional && k > 0 && n % k == 0) cols = n / k;
    snprintf(path, sizeof path, "%s/samples/step-%07ld.png", p->out_dir, tr->step);
    if (!st) st = df_image_save_grid(path, x, n, tr->c, tr->h, tr->w, cols, 2);
    snprintf(path, sizeof path, "%s/samples/latest.png", p->out_dir);
    if (!st) st = df_image_save_grid(path, x, n, tr->c, tr->h, tr->w, cols, 2);
    if (!st) add_event(event, cap, "samples written to %s/samples/step-%07ld.png", p->out_dir, tr->step);
    free(x);
    return st;
}

/* FD and KID of eval_n EMA samples (DDIM eval_steps steps) against the reference. */
static df_status evaluate_now(trainer *tr, double *fd, double *kid) {
    const df_train_params *p = &tr->p;
    const int n = p->eval_n, d = df_feature_net_dim(tr->eval_net);
    float *x = malloc(sizeof(float) * (size_t)n * tr->dim), *feats = malloc(sizeof(float) * (size_t)n * d);
    df_status st = x && feats ? DF_OK : df_fail(DF_ERR_NOMEM, "out of memory for %d evaluation images", n);
    if (!st) st = ema_samples(tr, n, p->eval_steps, 0xE7A1, x);
    if (!st) st = df_feature_net_features(tr->eval_net, n, tr->c, tr->h, tr->w, x, feats);
    df_eval_params ep;
    df_eval_params_default(&ep);
    ep.bootstrap = 0, ep.seed = p->seed;
    df_eval_result res;
    memset(&res, 0, sizeof res);
    if (!st) st = df_eval_features(tr->eval_net, &tr->eval_ref, feats, n, 1u << DF_METRIC_FD | 1u << DF_METRIC_KID, &ep, &res);
    if (!st) *fd = res.fd.value, *kid = res.kid.value;
    free(x), free(feats);
    return st;
}

/* ---- the loss log ---------------------------------------------------------------------------------------- */

/* loss.csv's columns. */
static const char log_header[] = "step,epoch,loss,loss_avg,loss_q0,loss_q1,loss_q2,loss_q3,lr,grad_norm,images_per_sec,"
                                 "elapsed_sec,images,fd,kid,eval_sec\n";

/* On resume, drop rows past the resumed step so the log reads as one run (and a last row cut short by a
 * crash). A log from before the evaluation columns gets the new header, and its rows the images seen
 * (step x images_per_step) and empty evaluation fields. */
static df_status trim_log(const char *path, long step, long images_per_step) {
    char *text;
    size_t len;
    if (df_read_file(path, &text, &len)) return DF_OK;   /* no log yet: it is created */
    const int old = strncmp(text, log_header, strlen(log_header)) != 0;
    size_t rows = 0;
    for (size_t i = 0; i < len; i++) rows += text[i] == '\n';
    char *out = malloc(len + strlen(log_header) + (old ? 32 * rows : 0) + 1);
    if (!out) {
        free(text);
        return df_fail(DF_ERR_NOMEM, "out of memory");
    }
    size_t keep = 0;
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        if (!nl) break;
        size_t l = (size_t)(nl - line + 1);
        long s;
        if (line == text && old) {
            memcpy(out + keep, log_header, strlen(log_header));
            keep += strlen(log_header);
        } else if (line == text || (sscanf(line, "%ld,", &s) == 1 && s <= step)) {
            if (old) keep += (size_t)sprintf(out + keep, "%.*s,%ld,,,\n", (int)(l - 1), line, s * images_per_step);
            else memcpy(out + keep, line, l), keep += l;
        }
        line += l;
    }
    df_status st = keep == len && !old ? DF_OK : df_write_file_atomic(path, out, keep);
    free(text), free(out);
    return st;
}

/* A row of loss.csv; fd < 0 leaves the evaluation columns empty. */
static df_status log_row(FILE *f, const char *path, const df_train_progress *pr, long images, double fd, double kid,
                         double eval_sec) {
    fprintf(f, "%ld,%d,%.6f,%.6f", pr->step, pr->epoch, pr->loss, pr->loss_avg);
    for (int q = 0; q < 4; q++) fprintf(f, ",%.6f", pr->loss_quarter[q]);
    fprintf(f, ",%.3e,%.4f,%.2f,%.1f,%ld", pr->lr, pr->grad_norm, pr->images_per_sec, pr->elapsed, images);
    if (fd >= 0) fprintf(f, ",%.5f,%.6f,%.1f\n", fd, kid, eval_sec);
    else fprintf(f, ",,,\n");
    if (fflush(f) != 0 || ferror(f)) return df_fail(DF_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    return DF_OK;
}

/* ---- the run ------------------------------------------------------------------------------------------- */

static void trainer_free(trainer *tr) {
    df_feature_net_free(tr->eval_net);
    df_ref_features_free(&tr->eval_ref);
    df_dataset_free(tr->data);
    df_model_free(tr->model);
    df_model_free(tr->ema_model);
    df_free_aligned(tr->ema);
    df_optimizer_free(&tr->opt);
    df_schedule_free(&tr->sched);
    free(tr->perm);
    float *fb[] = {tr->x0, tr->xt, tr->noise, tr->target, tr->weights, tr->t, tr->per_sample};
    for (int i = 0; i < DF_COUNTOF(fb); i++) free(fb[i]);
    free(tr->ti);
    free(tr->labels);
}

static df_status open_run(trainer *tr) {
    df_train_params *p = &tr->p;
    char path[4400];
    df_status st;
    df_rng_init(&tr->rng, mix64(p->seed));
    if (p->resume) {
        char ck[4300];
        snprintf(ck, sizeof ck, "%s/latest", p->out_dir);
        struct stat sb;
        if (stat(ck, &sb) != 0) return df_fail(DF_ERR_IO, "%s: no checkpoint to resume from", ck);
        snprintf(path, sizeof path, "%s/unet_raw", ck);
        if ((st = df_model_load(path, &tr->model))) return st;
        snprintf(path, sizeof path, "%s/scheduler/scheduler_config.json", ck);
        if ((st = df_scheduler_config_load(path, &tr->sc))) return st;
        p->prediction = tr->sc.prediction;
        snprintf(path, sizeof path, "%s/training_state.json", ck);
        if ((st = load_state_json(tr, path))) return st;
    } else {
        int sources = !!p->preset + !!p->config_path + !!p->init_dir;
        if (sources != 1) return df_fail(DF_ERR_ARG, "give exactly one of a preset, a config.json or a model to start from");
        df_unet_config cfg;
        if (p->init_dir) {
            if ((st = df_pipeline_load(p->init_dir, 1, &tr->model, NULL))) return st;
        } else {
            st = p->preset ? df_unet_config_preset(p->preset, &cfg) : df_unet_config_load(p->config_path, &cfg);
            if (!st && p->class_conditional) {
                /* the classes come from the data: open it now, at the size the model will see */
                int size = p->image_size > 0 ? p->image_size : cfg.sample_size;
                st = df_dataset_open(p->data, size, cfg.in_channels, &tr->data);
                int k = st ? 0 : df_dataset_num_classes(tr->data);
                if (!st && k == 0)
                    st = df_fail(DF_ERR_ARG, "%s: no labels to condition on (class-conditional training)", p->data);
                if (!st) cfg.num_class_embeds = k + 1, cfg.class_embed_timestep = 0;
            }
            if (!st) st = df_model_create(&cfg, mix64(p->seed ^ 0xC0FFEE), &tr->model);
            if (st) return st;
        }
        tr->sc.beta_schedule = p->beta_schedule;
        tr->sc.num_train_timesteps = p->num_train_timesteps;
        tr->sc.beta_start = p->beta_start;
        tr->sc.beta_end = p->beta_end;
        tr->sc.zero_terminal_snr = p->zero_terminal_snr;
        tr->sc.prediction = p->prediction;
    }
    if ((st = df_schedule_from_config(&tr->sc, &tr->sched))) return st;
    const df_unet_config *cfg = df_model_config(tr->model);
    int size = p->image_size > 0 ? p->image_size : cfg->sample_size;
    if (!tr->data && (st = df_dataset_open(p->data, size, cfg->in_channels, &tr->data))) return st;
    df_dataset_shape(tr->data, &tr->c, &tr->h, &tr->w);
    int factor = 1 << (cfg->num_levels - 1);
    if (tr->h % factor || tr->w % factor)
        return df_fail(DF_ERR_SHAPE, "%s: images are %dx%d, which the model's %d levels cannot halve %d times (use --size)",
                       p->data, tr->w, tr->h, cfg->num_levels, cfg->num_levels - 1);
    tr->dim = (size_t)tr->c * tr->h * tr->w;
    tr->conditional = cfg->num_class_embeds > 0;
    if (tr->conditional) {
        int k = df_dataset_num_classes(tr->data);
        if (k == 0) return df_fail(DF_ERR_ARG, "%s: the model is class-conditional but the data has no labels", p->data);
        if (k > cfg->num_class_embeds)
            return df_fail(DF_ERR_CONFIG, "%s has %d classes but the model's num_class_embeds is %d", p->data, k,
                           cfg->num_class_embeds);
        /* the last embedding is the null class when the data does not use it */
        tr->null_class = k < cfg->num_class_embeds ? cfg->num_class_embeds - 1 : -1;
    }
    if (!(p->class_dropout >= 0 && p->class_dropout < 1))
        return df_fail(DF_ERR_ARG, "class dropout %g must be in [0, 1)", p->class_dropout);
    if (p->class_dropout > 0 && (!tr->conditional || tr->null_class < 0))
        return df_fail(DF_ERR_ARG, "class dropout needs a class-conditional model with a null class (num_class_embeds "
                                   "above the data's classes)");
    if (p->batch_size < 1 || p->batch_size > 4096 || p->grad_accum < 1)
        return df_fail(DF_ERR_ARG, "batch size %d and gradient accumulation %d must be positive", p->batch_size, p->grad_accum);
    size_t np = df_model_num_params(tr->model);
    if ((st = df_optimizer_init(&tr->opt, &p->optim, np))) return st;
    df_ema_init(&tr->ema_state, p->ema_inv_gamma, p->ema_power, p->ema_max_decay);
    if (p->use_ema) {
        tr->ema = df_alloc_aligned(np * sizeof(float));
        if (!tr->ema) return df_fail(DF_ERR_NOMEM, "out of memory for the EMA weights");
        memcpy(tr->ema, df_model_params(tr->model), np * sizeof(float));
    }
    if ((st = df_model_create(cfg, 0, &tr->ema_model))) return st;
    if (p->resume) {
        /* counters were set by load_state_json; now the tensors */
        char ck[4300];
        snprintf(ck, sizeof ck, "%s/latest", p->out_dir);
        tr->opt.step = tr->resume_opt_step;
        tr->ema_state.updates = tr->resume_ema_updates;
        st_file f;
        snprintf(path, sizeof path, "%s/training_state.safetensors", ck);
        if ((st = st_open(path, &f))) return st;
        const char *names[2] = {"optimizer.m", "optimizer.v"};
        float *dst[2] = {tr->opt.m, tr->opt.v};
        for (int i = 0; i < 2 && !st; i++) {
            if (!dst[i]) continue;
            const st_tensor *t = st_find(&f, names[i]);
            if (!t || st_numel(t) != (int64_t)np)
                st = df_fail(DF_ERR_SHAPE, "%s: %s %s (the model has %zu parameters)", path,
                             t ? "wrong-sized" : "missing", names[i], np);
            else st = st_read_f32(&f, t, dst[i], np);
            for (size_t k = 0; !st && k < np; k++)
                if (!isfinite(dst[i][k]) || (i == 1 && dst[i][k] < 0))
                    st = df_fail(DF_ERR_FORMAT, "%s: %s holds %g at index %zu", path, names[i], (double)dst[i][k], k);
        }
        st_close(&f);
        if (st) return st;
        if (tr->ema) {
            df_model *em;
            snprintf(path, sizeof path, "%s/unet", ck);
            if ((st = df_model_load(path, &em))) return st;
            if (memcmp(df_model_config(em), cfg, sizeof *cfg) != 0) {
                df_model_free(em);
                return df_fail(DF_ERR_SHAPE, "%s: the EMA model's config differs from unet_raw's", path);
            }
            memcpy(tr->ema, df_model_params(em), np * sizeof(float));
            df_model_free(em);
        }
    }
    const size_t B = (size_t)p->batch_size;
    tr->perm = malloc(sizeof(int) * (size_t)df_dataset_count(tr->data));
    tr->x0 = malloc(sizeof(float) * B * tr->dim);
    tr->xt = malloc(sizeof(float) * B * tr->dim);
    tr->noise = malloc(sizeof(float) * B * tr->dim);
    tr->target = malloc(sizeof(float) * B * tr->dim);
    tr->weights = malloc(sizeof(float) * B);
    tr->t = malloc(sizeof(float) * B);
    tr->per_sample = malloc(sizeof(float) * B);
    tr->ti = malloc(sizeof(int) * B);
    tr->labels = malloc(sizeof(int) * B);
    if (!tr->perm || !tr->x0 || !tr->xt || !tr->noise || !tr->target || !tr->weights || !tr->t || !tr->per_sample ||
        !tr->ti || !tr->labels)
        return df_fail(DF_ERR_NOMEM, "out of memory for a batch of %d", p->batch_size);
    make_permutation(tr);
    if (tr->pos > df_dataset_count(tr->data))
        return df_fail(DF_ERR_FORMAT, "%s/latest/training_state.json: position %d is past the data's %d images",
                       p->out_dir, tr->pos, df_dataset_count(tr->data));
    return DF_OK;
}

/* Sum of squared gradients in double: NaN or Inf in any gradient makes it non-finite. The optimizer
 * would compute the same norm, but only while it already updates the weights. */
static double grad_sum_squares(const float *g, size_t n) {
    double ss = 0;
#pragma omp parallel for reduction(+ : ss) schedule(static)
    for (size_t i = 0; i < n; i++) ss += (double)g[i] * g[i];
    return ss;
}

df_status df_train(const df_train_params *params) {
    trainer tr;
    memset(&tr, 0, sizeof tr);
    tr.p = *params;
    tr.saved_step = -1;
    df_train_params *p = &tr.p;
    if (!p->out_dir || !*p->out_dir) return df_fail(DF_ERR_ARG, "no output directory");
    if (!p->resume && p->max_steps <= 0 && p->max_epochs <= 0 && p->max_minutes <= 0)
        return df_fail(DF_ERR_ARG, "no budget: give a number of steps, epochs or minutes");
    if (p->nonfinite_skip < 0) return df_fail(DF_ERR_ARG, "nonfinite_skip %d must not be negative", p->nonfinite_skip);
    df_status st = DF_OK;
    char latest[4300];
    struct stat lsb;
    snprintf(latest, sizeof latest, "%s/latest", p->out_dir);
    if (!p->resume && lstat(latest, &lsb) == 0)
        st = df_fail(DF_ERR_ARG, "%s already holds a run: resume it (--resume) or choose another output directory",
                     p->out_dir);
    /* the output directory is made only once the model and data have loaded: a run that cannot start
     * leaves nothing behind */
    if (!st) st = open_run(&tr);
    if (!st && !p->resume) st = df_mkdir_p(p->out_dir);
    if (!st) remove_leftovers(p->out_dir);
    if (st) {
        trainer_free(&tr);
        return st;
    }
    if (p->resume) tr.saved_step = tr.step;
    /* the budget as steps when it can be known */
    long per_epoch = (df_dataset_count(tr.data) + (long)p->batch_size * p->grad_accum - 1) /
                     ((long)p->batch_size * p->grad_accum);
    long total = p->max_steps;
    if (p->max_epochs > 0 && (total <= 0 || (long)p->max_epochs * per_epoch < total)) total = (long)p->max_epochs * per_epoch;
    if (p->optim.total_steps <= 0 && total > 0) {
        p->optim.total_steps = total;
        tr.opt.p.total_steps = total;
    }
    if (p->eval_every > 0 && (!p->eval_features || !p->eval_ref || p->eval_n < 2 || p->eval_steps < 1 ||
                              p->eval_steps > tr.sched.T)) {
        trainer_free(&tr);
        return df_fail(DF_ERR_ARG, "evaluation during training needs a feature network, a reference, at least 2 images "
                       "and 1 to %d steps", tr.sched.T);
    }
    if (p->max_steps <= 0 && p->max_epochs <= 0 && p->max_minutes <= 0) {
        trainer_free(&tr);
        return df_fail(DF_ERR_ARG, "no budget: give a number of steps, epochs or minutes");
    }
    char path[4300];
    if (p->resume && total > tr.opt.p.total_steps && tr.opt.p.decay != DF_LR_CONSTANT && p->progress) {
        df_train_progress note = {.step = tr.step, .total_steps = total, .eta = -1};
        snprintf(path, sizeof path, "note: the learning-rate schedule of this run ends at step %ld; later steps use "
                                    "its final rate", tr.opt.p.total_steps);
        note.event = path;
        p->progress(p->progress_ctx, &note);
    }
    snprintf(path, sizeof path, "%s/loss.csv", p->out_dir);
    if (p->resume && (st = trim_log(path, tr.step, (long)p->batch_size * p->grad_accum))) {
        trainer_free(&tr);
        return st;
    }
    FILE *log = fopen(path, p->resume ? "a" : "w");
    if (!log) {
        st = df_fail(DF_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        trainer_free(&tr);
        return st;
    }
    if (!p->resume)
        fprintf(log, "%s", log_header);
    char progress_png[4300];
    snprintf(progress_png, sizeof progress_png, "%s/progress.png", p->out_dir);
    /* evaluation during training: the feature network and the reference features, once */
    if (p->eval_every > 0) {
        df_dataset *ref = NULL;
        if (!(st = df_feature_net_load(p->eval_features, &tr.eval_net)))
            st = df_feature_net_check_input(tr.eval_net, tr.c, tr.h, tr.w);
        if (!st) st = df_dataset_open(p->eval_ref, 0, 0, &ref);
        int cached;
        if (!st) st = df_ref_features_get(tr.eval_net, ref, 0, &tr.eval_ref, &cached, NULL, NULL);
        if (!st && p->eval_n <= df_feature_net_dim(tr.eval_net))
            st = df_fail(DF_ERR_ARG, "evaluation with %d images: the Fréchet distance of %d-d features needs more than %d",
                         p->eval_n, df_feature_net_dim(tr.eval_net), df_feature_net_dim(tr.eval_net));
        df_dataset_free(ref);
        if (st) {
            fclose(log);
            trainer_free(&tr);
            return st;
        }
    }

    df_model_set_train(tr.model, 1, &tr.rng);
    const size_t np = df_model_num_params(tr.model);
    const double t0 = df_now_sec();
    double last_log_t = t0;
    long last_log_step = tr.step, start_step = tr.step;
    char event[4400];
    int stop_reason = 0, nonfinite_run = 0;   /* non-finite steps in a row */
    long evaluated_step = -1;
    while (!st) {
        if (total > 0 && tr.step >= total) break;
        if (p->max_minutes > 0 && df_now_sec() - t0 - tr.eval_time >= p->max_minutes * 60) break;
        if (p->stop && *p->stop) {
            stop_reason = 1;
            break;
        }
        df_model_zero_grad(tr.model);
        double loss = 0, qsum[4] = {0};
        long qn[4] = {0};
        for (int a = 0; a < p->grad_accum && !st; a++) {
            fill_batch(&tr);
            float l;
            st = df_model_loss_grad(tr.model, p->batch_size, tr.h, tr.w, tr.xt, tr.t, tr.conditional ? tr.labels : NULL,
                                    tr.target, tr.weights, &l, tr.per_sample);
            loss += l;
            for (int i = 0; i < p->batch_size; i++) {
                int q = DF_MIN(3, tr.ti[i] * 4 / tr.sched.T);
                qsum[q] += tr.per_sample[i];
                qn[q]++;
            }
        }
        if (st) break;
        const long this_step = tr.step + 1;
        float *grads = df_model_grads(tr.model);
        const struct df_train_fault *f = &df_train_fault;
        if (f->step > 0 && this_step >= f->step && this_step < f->step + f->count) {
            if (f->on_loss) loss = f->value;
            else grads[np / 2] = f->value;
        }
        /* a NaN or Inf must never reach the weights, the moments or the EMA: look before the update */
        double gnorm = sqrt(grad_sum_squares(grads, np));
        if (!isfinite(loss) || !isfinite(gnorm)) {
            char what[96];
            if (!isfinite(loss)) snprintf(what, sizeof what, "the loss is %g", loss);
            else snprintf(what, sizeof what, "the gradients hold NaN or Inf (norm %g)", gnorm);
            nonfinite_run++;
            if (nonfinite_run > p->nonfinite_skip) {
                char kept[160], run[96] = "";
                if (tr.saved_step >= 0) snprintf(kept, sizeof kept, "checkpoint-%07ld is the last checkpoint", tr.saved_step);
                else snprintf(kept, sizeof kept, "no checkpoint was written");
                if (p->nonfinite_skip > 0)
                    snprintf(run, sizeof run, " (%d non-finite steps in a row, more than the %d allowed)", nonfinite_run,
                             p->nonfinite_skip);
                st = df_fail(DF_ERR_ARG, "step %ld: %s%s; stopped before updating the weights: nothing after step %ld was "
                             "saved and %s (lower the learning rate%s)", this_step, what, run, tr.step, kept,
                             p->nonfinite_skip > 0 ? "" : ", or skip such steps: --skip-nonfinite N");
                break;
            }
            tr.nonfinite_skipped++;
            event[0] = 0;
            add_event(event, sizeof event, "step %ld skipped: %s (%d in a row, %ld in this run)", this_step, what,
                      nonfinite_run, tr.nonfinite_skipped);
        } else {
            nonfinite_run = 0;
            event[0] = 0;
            df_optimizer_step(&tr.opt, df_model_params(tr.model), grads, NULL);
            if (tr.ema) df_ema_update(&tr.ema_state, tr.ema, df_model_params(tr.model), np);
            tr.loss_avg = tr.opt.step == 1 ? loss : 0.98 * tr.loss_avg + 0.02 * loss;
            for (int q = 0; q < 4; q++) tr.quarter_sum[q] += qsum[q], tr.quarter_n[q] += qn[q];
        }
        tr.step++;
        const int last = (total > 0 && tr.step >= total);
        const int sample_now = p->sample_every > 0 && tr.step % p->sample_every == 0 && !last;
        const int save_now = p->save_every > 0 && tr.step % p->save_every == 0 && !last;
        const int eval_now = p->eval_every > 0 && (tr.step % p->eval_every == 0 || last);
        const int report = tr.step % p->log_every == 0 || tr.step == 1 || event[0] || last || sample_now || save_now ||
                           eval_now;
        df_train_progress pr = {0};
        double fd = -1, kid = 0, eval_sec = 0;
        if (eval_now) {
            evaluated_step = tr.step;   /* before the row, which carries its numbers; its time is not training time */
            const double e0 = df_now_sec();
            st = evaluate_now(&tr, &fd, &kid);
            eval_sec = df_now_sec() - e0;
            tr.eval_time += eval_sec, last_log_t += eval_sec;
            if (st) break;
            add_event(event, sizeof event, "eval: FD %.3f, KID %.5f (%d images, %.0f s)", fd, kid, p->eval_n, eval_sec);
        }
        if (report) {
            double tnow = df_now_sec();
            pr.step = tr.step, pr.total_steps = total, pr.epoch = tr.epoch;
            pr.loss = loss, pr.loss_avg = tr.loss_avg;
            for (int q = 0; q < 4; q++) {
                pr.loss_quarter[q] = tr.quarter_n[q] ? tr.quarter_sum[q] / tr.quarter_n[q] : NAN;
                tr.quarter_sum[q] = 0, tr.quarter_n[q] = 0;
            }
            pr.lr = df_optimizer_lr(&tr.opt.p, tr.opt.step - 1);
            pr.grad_norm = gnorm;
            double dt = tnow - last_log_t;
            pr.images_per_sec = dt > 0 ? (double)(tr.step - last_log_step) * p->batch_size * p->grad_accum / dt : 0;
            pr.elapsed = tnow - t0 - tr.eval_time;
            double rate = (double)(tr.step - start_step) / pr.elapsed;
            pr.eta = -1;
            if (total > 0 && rate > 0) pr.eta = (double)(total - tr.step) / rate;
            if (p->max_minutes > 0) {
                double left = p->max_minutes * 60 - pr.elapsed;
                if (pr.eta < 0 || left < pr.eta) pr.eta = DF_MAX(left, 0);
            }
            pr.nonfinite_skipped = tr.nonfinite_skipped;
            last_log_t = tnow, last_log_step = tr.step;
            /* the row goes out before this step's checkpoint, so no checkpoint is ever ahead of the log (a
             * resume drops rows past its checkpoint) */
            st = log_row(log, path, &pr, tr.step * p->batch_size * p->grad_accum, fd, kid, eval_sec);
        }
        /* the picture of the run whenever there is something new to see in it */
        if (!st && (eval_now || sample_now)) st = df_plot_training_progress(path, progress_png);
        if (!st && sample_now) st = write_samples(&tr, event, sizeof event);
        if (!st && save_now) {
            st = save_checkpoint(&tr);
            if (!st) add_event(event, sizeof event, "checkpoint %s/checkpoint-%07ld", p->out_dir, tr.step);
        }
        if (st) break;
        if (report && p->progress) {
            pr.event = event[0] ? event : NULL;
            p->progress(p->progress_ctx, &pr);
        }
    }
    /* a run stopped by its time budget ends with an evaluation too: a row of its own */
    if (!st && p->eval_every > 0 && !stop_reason && tr.step > 0 && evaluated_step != tr.step) {
        double fd, kid, e0 = df_now_sec();
        st = evaluate_now(&tr, &fd, &kid);
        double eval_sec = df_now_sec() - e0;
        tr.eval_time += eval_sec;
        if (!st) {
            fprintf(log, "%ld,%d,,,,,,,,,,%.1f,%ld,%.5f,%.6f,%.1f\n", tr.step, tr.epoch, df_now_sec() - t0 - tr.eval_time,
                    tr.step * p->batch_size * p->grad_accum, fd, kid, eval_sec);
            if (fflush(log) != 0) st = df_fail(DF_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        }
        if (!st && p->progress) {
            df_train_progress pr = {.step = tr.step, .total_steps = total, .epoch = tr.epoch, .loss_avg = tr.loss_avg, .eta = 0};
            snprintf(event, sizeof event, "eval: FD %.3f, KID %.5f (%d images, %.0f s)", fd, kid, p->eval_n, eval_sec);
            pr.event = event;
            pr.elapsed = df_now_sec() - t0 - tr.eval_time;
            for (int q = 0; q < 4; q++) pr.loss_quarter[q] = NAN;
            p->progress(p->progress_ctx, &pr);
        }
    }
    if (fclose(log) != 0 && !st) st = df_fail(DF_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    /* the end of a run (budget, stop request) always leaves a checkpoint, a sample grid and the picture */
    if (!st && tr.step > 0) {
        event[0] = 0;
        if (!stop_reason) st = write_samples(&tr, event, sizeof event);
        /* the picture goes with the run's other pictures: a run that asked for no samples and no evaluation
         * (a script's, a test's) does not pay for loading fonts */
        if (!st && (p->sample_count > 0 || p->eval_every > 0)) st = df_plot_training_progress(path, progress_png);
        if (!st) st = save_checkpoint(&tr);
        if (!st && p->progress) {
            df_train_progress pr = {0};
            pr.step = tr.step, pr.total_steps = total, pr.epoch = tr.epoch, pr.loss_avg = tr.loss_avg;
            pr.elapsed = df_now_sec() - t0 - tr.eval_time;
            pr.eta = 0;
            pr.nonfinite_skipped = tr.nonfinite_skipped;
            snprintf(event, sizeof event, "%s: checkpoint %s/checkpoint-%07ld",
                     stop_reason ? "stopped" : "finished", p->out_dir, tr.step);
            pr.event = event;
            for (int q = 0; q < 4; q++) pr.loss_quarter[q] = NAN;
            p->progress(p->progress_ctx, &pr);
        }
    }
    trainer_free(&tr);
    return st;
}
