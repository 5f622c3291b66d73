/* The training loop both trainers share: budgets, the data order (a function of seed and epoch), batches,
 * the optimizer step behind a non-finite check, EMA, progress, and checkpoints that resume bit for bit. */
#define _POSIX_C_SOURCE 200809L
#include "loop.h"
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

#ifdef DF_TEST_HOOKS
struct df_train_fault df_train_fault = {0, 1, 0, NAN};
void (*df_train_step_watch)(int after);
#define WATCH_STEP(after) (df_train_step_watch ? df_train_step_watch(after) : (void)0)

/* Test builds: the fault the tests asked for, at the step about to be applied. */
static void inject_fault(long this_step, double *loss, float *grads, size_t np) {
    const struct df_train_fault *f = &df_train_fault;
    if (f->step > 0 && this_step >= f->step && this_step < f->step + f->count) {
        if (f->on_loss) *loss = f->value;
        else grads[np / 2] = f->value;
    }
}
#else
#define inject_fault(this_step, loss, grads, np) ((void)0)
#define WATCH_STEP(after) ((void)0)
#endif

uint64_t train_seed_mix(uint64_t z) {   /* splitmix64's finaliser */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void train_loop_init(train_loop *L, const train_loop_params *p, const train_task *task, void *ctx) {
    memset(L, 0, sizeof *L);
    L->p = *p;
    L->task = task;
    L->ctx = ctx;
    L->saved_step = -1;
    df_rng_init(&L->rng, train_seed_mix(p->seed));
}

void train_loop_free(train_loop *L) {
    df_optimizer_free(&L->opt);
    df_free_aligned(L->ema);
    free(L->perm);
    free(L->x0);
    free(L->labels);
    free(L->index), free(L->index_epoch);
    L->ema = NULL, L->perm = NULL, L->x0 = NULL, L->labels = NULL, L->index = NULL, L->index_epoch = NULL;
}

void train_loop_add_params(train_loop *L, float *params, float *grads, size_t n) {
    L->xparams = params, L->xgrads = grads, L->nx = n;
}

/* Every trained parameter: the model's, then the extra part's. */
static size_t num_trained(const train_loop *L) { return df_model_num_params(L->model) + L->nx; }

double train_loop_elapsed(const train_loop *L) { return L->elapsed_before + df_now_sec() - L->t0 - L->untimed; }

void train_loop_event(train_loop *L, const char *fmt, ...) {
    size_t n = strlen(L->event), cap = sizeof L->event;
    if (n && n + 3 < cap) {
        memcpy(L->event + n, "; ", 3);
        n += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(L->event + n, cap - n, fmt, ap);
    va_end(ap);
}

/* ---- data order and batches ------------------------------------------------------------------------- */

/* The order of epoch e is a Fisher-Yates shuffle driven by a Philox stream keyed by (seed, e) alone: a
 * resumed run needs only the epoch and the position within it, and every trainer reads the same order. */
static void epoch_order(train_loop *L) {
    df_rng r;
    df_rng_init(&r, train_seed_mix(L->p.seed ^ train_seed_mix((uint64_t)L->epoch + 0x9E3779B97F4A7C15ULL)));
    df_shuffle(L->perm, L->n, &r);
}

/* The next batch_size images in the data order into x0 and labels, turning over epochs as needed. */
static void next_batch(train_loop *L) {
    for (int i = 0; i < L->p.batch_size; i++) {
        if (L->pos >= L->n) {
            L->epoch++;
            L->pos = 0;
            epoch_order(L);
        }
        int idx = L->perm[L->pos++];
        int flip = L->p.flip && (df_rng_u32(&L->rng) & 1);
        df_dataset_get(L->data, idx, flip, L->x0 + (size_t)i * L->dim);
        L->labels[i] = df_dataset_label(L->data, idx);
        L->index[i] = idx, L->index_epoch[i] = L->epoch;
    }
}

/* ---- setup --------------------------------------------------------------------------------------------- */

/* The optimizer's moments and counters from a checkpoint's training state. */
static df_status restore_moments(train_loop *L, const char *ck, long opt_step, long ema_updates) {
    const size_t np = num_trained(L);
    char path[4400];
    L->opt.step = opt_step;
    L->ema_state.updates = ema_updates;
    st_file f;
    snprintf(path, sizeof path, "%s/training_state.safetensors", ck);
    df_status st = st_open(path, &f);
    if (st) return st;
    const char *names[2] = {"optimizer.m", "optimizer.v"};
    float *dst[2] = {L->opt.m, L->opt.v};
    for (int i = 0; i < 2 && !st; i++) {
        if (!dst[i]) continue;
        const st_tensor *t = st_find(&f, names[i]);
        if (!t || st_numel(t) != (int64_t)np)
            st = df_fail(DF_ERR_SHAPE, "%s: %s %s (%zu parameters are trained)", path, t ? "wrong-sized" : "missing",
                         names[i], np);
        else st = st_read_f32(&f, t, dst[i], np);
        for (size_t k = 0; !st && k < np; k++)
            if (!isfinite(dst[i][k]) || (i == 1 && dst[i][k] < 0))
                st = df_fail(DF_ERR_FORMAT, "%s: %s holds %g at index %zu", path, names[i], (double)dst[i][k], k);
    }
    st_close(&f);
    return st;
}

static long steps_per_epoch(const train_loop *L) {
    const long per_step = (long)L->p.batch_size * L->p.grad_accum;
    return (L->n + per_step - 1) / per_step;
}

/* The budget in words ("300 steps", "2 epochs (60 steps)", "5 minutes", joined by " or "). */
static void describe_budget(const train_loop *L, long per_epoch, char *buf, size_t cap) {
    const train_loop_params *p = &L->p;
    size_t n = 0;
    buf[0] = 0;
    if (p->max_steps > 0) n += (size_t)snprintf(buf + n, cap - n, "%ld steps", p->max_steps);
    if (p->max_epochs > 0 && n < cap)
        n += (size_t)snprintf(buf + n, cap - n, "%s%d epoch%s (%ld steps)", n ? " or " : "", p->max_epochs,
                              p->max_epochs == 1 ? "" : "s", (long)p->max_epochs * per_epoch);
    if (p->max_minutes > 0 && n < cap) snprintf(buf + n, cap - n, "%s%g minutes", n ? " or " : "", p->max_minutes);
}

/* A resumed run's budget against where the run stands. A budget the caller gave is the run's total, so
 * one already reached is refused; the run's own budget already used up leaves nothing to do (done_before). */
static df_status check_resumed_budget(train_loop *L, long per_epoch) {
    const train_loop_params *p = &L->p;
    char reached[96] = "", where[96];
    if (p->max_steps > 0 && L->step >= p->max_steps) snprintf(reached, sizeof reached, "%ld steps", p->max_steps);
    else if (p->max_epochs > 0 && L->step >= (long)p->max_epochs * per_epoch)
        snprintf(reached, sizeof reached, "%d epoch%s (%ld steps)", p->max_epochs, p->max_epochs == 1 ? "" : "s",
                 (long)p->max_epochs * per_epoch);
    else if (p->max_minutes > 0 && L->elapsed_before >= p->max_minutes * 60)
        snprintf(reached, sizeof reached, "%g minutes", p->max_minutes);
    if (!reached[0]) return DF_OK;
    /* states written before the training time was recorded say 0: no time is claimed for them */
    int n = snprintf(where, sizeof where, "step %ld", L->step);
    if (L->elapsed_before > 0)
        snprintf(where + n, sizeof where - (size_t)n, " after %.1f minutes of training", L->elapsed_before / 60);
    if (L->budget_given)
        return df_fail(DF_ERR_ARG, "the run is at %s: a budget of %s is already reached (a resumed run's budget is "
                       "its total, counted from its start)", where, reached);
    L->done_before = 1;
    char all[200];
    describe_budget(L, per_epoch, all, sizeof all);
    snprintf(L->event, sizeof L->event, "the run already finished its budget of %s, at %s: nothing to do (a larger "
             "budget trains on)", all, where);
    return DF_OK;
}

/* An unset warmup: a tenth of the budget, at most diffusers' 500 steps, so a short run spends most of its
 * steps at the learning rate it asked for. */
static long auto_warmup(long budget_steps) { return DF_MIN(500, budget_steps / 10); }

df_status train_loop_setup(train_loop *L, df_model *model, const df_dataset *data, const char *resume_dir) {
    train_loop_params *p = &L->p;
    L->model = model;
    L->data = data;
    L->n = df_dataset_count(data);
    df_dataset_shape(data, &L->c, &L->h, &L->w);
    L->dim = (size_t)L->c * L->h * L->w;
    if (p->batch_size < 1 || p->batch_size > 4096 || p->grad_accum < 1)
        return df_fail(DF_ERR_ARG, "batch size %d and gradient accumulation %d must be positive", p->batch_size, p->grad_accum);
    if (p->max_steps <= 0 && p->max_epochs <= 0 && p->max_minutes <= 0)
        return df_fail(DF_ERR_ARG, "no budget: give a number of steps, epochs or minutes");
    if (p->nonfinite_skip < 0) return df_fail(DF_ERR_ARG, "nonfinite_skip %d must not be negative", p->nonfinite_skip);
    if (L->n < 1) return df_fail(DF_ERR_ARG, "no images to train on");
    /* the budget as steps when it can be known; the learning-rate schedule spans it unless given */
    const long per_epoch = steps_per_epoch(L);
    L->total = p->max_steps;
    if (p->max_epochs > 0 && (L->total <= 0 || (long)p->max_epochs * per_epoch < L->total))
        L->total = (long)p->max_epochs * per_epoch;
    /* a resumed run keeps the schedule it started with (read from its state), whatever its budget now */
    if (!resume_dir && p->optim.total_steps <= 0 && L->total > 0) p->optim.total_steps = L->total;
    /* with minutes only, a decaying schedule ends where the budget will at the speed of the first steps */
    L->decay_by_speed = !resume_dir && p->optim.total_steps <= 0 && p->max_minutes > 0 && p->optim.decay != DF_LR_CONSTANT;
    /* an unset warmup (negative) is scaled to the budget: step 1 of a minutes budget takes lr 0 under any
     * warmup of 1 or more, so its length can wait for the first step's speed */
    if (p->optim.warmup_steps < 0 && p->max_minutes > 0) p->optim.warmup_steps = 1, L->warmup_auto = 2;
    else if (p->optim.warmup_steps < 0) p->optim.warmup_steps = auto_warmup(L->total), L->warmup_auto = 1;
    /* read before the optimizer starts afresh: a resume restores them below */
    const long opt_step = L->opt.step, ema_updates = L->ema_state.updates;
    const size_t nm = df_model_num_params(model), np = nm + L->nx;
    df_status st = df_optimizer_init(&L->opt, &p->optim, np);
    if (st) return st;
    df_ema_init(&L->ema_state, p->ema_inv_gamma, p->ema_power, p->ema_max_decay);
    if (p->use_ema) {
        L->ema = df_alloc_aligned(np * sizeof(float));
        if (!L->ema) return df_fail(DF_ERR_NOMEM, "out of memory for the EMA weights");
        memcpy(L->ema, df_model_params(model), nm * sizeof(float));
        if (L->nx) memcpy(L->ema + nm, L->xparams, L->nx * sizeof(float));
    }
    if (resume_dir) {
        if ((st = check_resumed_budget(L, per_epoch))) return st;
        if ((st = restore_moments(L, resume_dir, opt_step, ema_updates))) return st;
        L->saved_step = L->step;   /* `latest` holds this very state */
    }
    /* every buffer a step needs is allocated here, once */
    L->perm = malloc(sizeof(int) * (size_t)L->n);
    L->x0 = malloc(sizeof(float) * (size_t)p->batch_size * L->dim);
    L->labels = malloc(sizeof(int) * (size_t)p->batch_size);
    L->index = malloc(sizeof(int) * (size_t)p->batch_size);
    L->index_epoch = malloc(sizeof(int) * (size_t)p->batch_size);
    if (!L->perm || !L->x0 || !L->labels || !L->index || !L->index_epoch) return df_fail(DF_ERR_NOMEM, "out of memory for a batch of %d", p->batch_size);
    if (L->pos > L->n)
        return df_fail(DF_ERR_FORMAT, "%s/latest/training_state.json: position %d is past the data's %d images",
                       p->out_dir ? p->out_dir : ".", L->pos, L->n);
    epoch_order(L);
    return DF_OK;
}

/* ---- checkpoints ---------------------------------------------------------------------------------------- */

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

/* File systems that cannot sync directories say EINVAL: nothing to do there. */
df_status train_sync_dir(const char *path) {
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
void train_remove_leftovers(const char *out_dir) {
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

static df_status save_state_json(const train_loop *L, const char *path) {
    const train_loop_params *p = &L->p;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "version", 1);
    cJSON_AddNumberToObject(j, "step", (double)L->step);
    cJSON_AddNumberToObject(j, "epoch", L->epoch);
    cJSON_AddNumberToObject(j, "position", L->pos);
    cJSON_AddNumberToObject(j, "images_seen", (double)L->step * p->batch_size * p->grad_accum);
    cJSON_AddNumberToObject(j, "ema_updates", (double)L->ema_state.updates);
    cJSON_AddNumberToObject(j, "optimizer_step", (double)L->opt.step);
    /* cJSON prints doubles with 15 digits unless they differ by more than an epsilon, which loses the last
     * bits: 17 digits read back exactly, so a resumed run's loss average continues bit for bit */
    char exact[40];
    snprintf(exact, sizeof exact, "%.17g", isfinite(L->loss_avg) ? L->loss_avg : 0.0);
    cJSON_AddRawToObject(j, "loss_avg", exact);
    cJSON_AddNumberToObject(j, "nonfinite_skipped", (double)L->nonfinite_skipped);
    /* training seconds of all sessions so far: a resumed run's minutes budget counts them */
    snprintf(exact, sizeof exact, "%.17g", train_loop_elapsed(L));
    cJSON_AddRawToObject(j, "elapsed", exact);
    json_add_rng(j, "rng", &L->rng);
    char num[32];
    snprintf(num, sizeof num, "%llu", (unsigned long long)p->seed);
    cJSON_AddStringToObject(j, "seed", num);
    cJSON_AddBoolToObject(j, "flip", p->flip);
    cJSON_AddNumberToObject(j, "batch_size", p->batch_size);
    cJSON_AddNumberToObject(j, "grad_accum", p->grad_accum);
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
    if (L->task->save_state) L->task->save_state(L->ctx, L, j);
    return df_write_json_atomic(path, j);
}

/* The whole checkpoint into tmp: the task's files, then the optimizer's moments and the training state. */
static df_status write_checkpoint_files(train_loop *L, const char *tmp) {
    char p[4400];
    const size_t np = num_trained(L);
    df_status st = df_mkdir_p(tmp);
    if (!st) st = L->task->save(L->ctx, L, tmp);
    if (!st) {
        st_entry e[2] = {{.name = "optimizer.m", .ndim = 1, .shape = {(int64_t)np}, .f32 = L->opt.m},
                         {.name = "optimizer.v", .ndim = 1, .shape = {(int64_t)np}, .f32 = L->opt.v}};
        snprintf(p, sizeof p, "%s/training_state.safetensors", tmp);
        st = st_write(p, e, L->opt.v ? 2 : 1, NULL, 0);
    }
    snprintf(p, sizeof p, "%s/training_state.json", tmp);
    if (!st) st = save_state_json(L, p);
    /* every file was synced as it was written; now the directory that names them */
    if (!st) st = train_sync_dir(tmp);
    return st;
}

/* Keep the newest keep_checkpoints checkpoints (and always the one just written). */
static void prune_checkpoints(const train_loop *L) {
    DIR *dp = opendir(L->p.out_dir);
    if (!dp) return;
    long steps[4096];
    int ns = 0;
    struct dirent *e;
    while ((e = readdir(dp)) && ns < 4096) {
        long s;
        char extra;
        if (sscanf(e->d_name, "checkpoint-%ld%c", &s, &extra) == 1) steps[ns++] = s;
    }
    closedir(dp);
    int keep = L->p.keep_checkpoints > 0 ? L->p.keep_checkpoints : 1;
    for (int i = 0; i < ns; i++) {
        int newer = 0;
        for (int k = 0; k < ns; k++) newer += steps[k] > steps[i];
        if (newer >= keep && steps[i] != L->step) {
            char p[4400];
            snprintf(p, sizeof p, "%s/checkpoint-%07ld", L->p.out_dir, steps[i]);
            discard_tree(p);
        }
    }
}

static df_status save_checkpoint(train_loop *L) {
    if (L->step == L->saved_step) return DF_OK;   /* `latest` holds this very state: never replace it */
    const char *out = L->p.out_dir;
    char dir[4200], tmp[4300];
    snprintf(dir, sizeof dir, "%s/checkpoint-%07ld", out, L->step);
    snprintf(tmp, sizeof tmp, "%s.tmp", dir);
    remove_tree(tmp);
    df_status st = write_checkpoint_files(L, tmp);
    /* publish: the finished directory gets its final name, then `latest` is switched by a rename, which
     * is atomic: a crash at any point leaves the previous checkpoint whole and `latest` naming one. A
     * directory already under the final name was left by a run that died before switching `latest`. */
    if (!st) st = discard_tree(dir);
    if (!st && rename(tmp, dir) != 0) st = df_fail(DF_ERR_IO, "%s: cannot rename: %s", tmp, strerror(errno));
    char link_tmp[4300], link[4300], target[64];
    snprintf(target, sizeof target, "checkpoint-%07ld", L->step);
    snprintf(link, sizeof link, "%s/latest", out);
    snprintf(link_tmp, sizeof link_tmp, "%s/latest.tmp", out);
    if (!st) {
        unlink(link_tmp);
        if (symlink(target, link_tmp) != 0 || rename(link_tmp, link) != 0)
            st = df_fail(DF_ERR_IO, "%s: cannot update: %s", link, strerror(errno));
    }
    if (!st) st = train_sync_dir(out);
    if (st) {
        /* say which step was lost and what is still there; the detail names the file that failed */
        char why[1024];
        snprintf(why, sizeof why, "%s", df_error());
        remove_tree(tmp);
        unlink(link_tmp);
        if (L->saved_step >= 0)
            return df_fail(st, "step %ld: checkpoint not saved, checkpoint-%07ld is kept: %s", L->step, L->saved_step,
                           why);
        return df_fail(st, "step %ld: checkpoint not saved (there is no earlier one): %s", L->step, why);
    }
    L->saved_step = L->step;
    prune_checkpoints(L);
    return DF_OK;
}

/* ---- reading a training state ------------------------------------------------------------------------------ */

static int json_u64(const cJSON *j, const char *k, uint64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    if (!cJSON_IsString(v)) return 0;
    char *end;
    errno = 0;
    *out = strtoull(v->valuestring, &end, 10);
    return *end == 0 && v->valuestring[0] >= '0' && v->valuestring[0] <= '9' && errno == 0;
}

int state_num(state_reader *r, const cJSON *obj, const char *key, double lo, double hi, int whole, int optional,
              double *out) {
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

static void read_optimizer(state_reader *r, const cJSON *o, df_optim_params *op) {
    double v;
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(o, "kind");
    if (!r->bad && !(cJSON_IsString(kind) && (!strcmp(kind->valuestring, "sgd") || !strcmp(kind->valuestring, "adamw"))))
        r->bad = "optimizer.kind", snprintf(r->why, sizeof r->why, "expected \"adamw\" or \"sgd\"");
    if (!r->bad) op->kind = !strcmp(kind->valuestring, "sgd") ? DF_OPT_SGD : DF_OPT_ADAMW;
    if (state_num(r, o, "lr", 0, 100, 0, 1, &v)) op->lr = v;
    if (state_num(r, o, "beta1", 0, 1, 0, 1, &v)) op->beta1 = v;
    if (state_num(r, o, "beta2", 0, 1, 0, 1, &v)) op->beta2 = v;
    if (state_num(r, o, "eps", 0, 1, 0, 1, &v)) op->eps = v;
    if (state_num(r, o, "weight_decay", 0, 100, 0, 1, &v)) op->weight_decay = v;
    if (state_num(r, o, "momentum", 0, 1, 0, 1, &v)) op->momentum = v;
    if (state_num(r, o, "warmup_steps", 0, 1e15, 1, 1, &v)) op->warmup_steps = (long)v;
    if (state_num(r, o, "decay", 0, DF_LR_COUNT - 1, 1, 1, &v)) op->decay = (df_lr_decay)(int)v;
    if (state_num(r, o, "total_steps", 0, 1e15, 1, 1, &v)) op->total_steps = (long)v;
    if (state_num(r, o, "grad_clip", 0, 1e9, 0, 1, &v)) op->grad_clip = v;
    if (!r->bad) op->nesterov = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "nesterov"));
}

/* The training stream's state: seed and counter as decimal strings, the 4 buffered words and their count. */
static void read_rng(state_reader *r, const cJSON *rng, df_rng *out) {
    const cJSON *buf = cJSON_GetObjectItemCaseSensitive(rng, "buf");
    uint64_t seed = 0, counter = 0;
    double v;
    if (!r->bad && !(cJSON_IsArray(buf) && cJSON_GetArraySize(buf) == 4))
        r->bad = "rng.buf", snprintf(r->why, sizeof r->why, "expected 4 numbers");
    if (!r->bad && !json_u64(rng, "seed", &seed))
        r->bad = "rng.seed", snprintf(r->why, sizeof r->why, "expected a decimal string");
    if (!r->bad && !json_u64(rng, "counter", &counter))
        r->bad = "rng.counter", snprintf(r->why, sizeof r->why, "expected a decimal string");
    if (state_num(r, rng, "nbuf", 0, 4, 1, 0, &v)) out->nbuf = (int)v;
    for (int i = 0; i < 4 && !r->bad; i++) {
        const cJSON *b = cJSON_GetArrayItem(buf, i);
        double x = cJSON_IsNumber(b) ? b->valuedouble : -1;
        if (!(x >= 0 && x <= 4294967295.0 && x == floor(x)))
            r->bad = "rng.buf", snprintf(r->why, sizeof r->why, "expected whole numbers from 0 to 2^32 - 1");
        else out->buf[i] = (uint32_t)x;
    }
    if (!r->bad) out->seed = seed, out->counter = counter;
}

/* The settings and counters of the loop (every value range-checked first: a damaged or hand-edited state
 * is refused with the field it got wrong). */
static void read_loop_fields(train_loop *L, state_reader *r, const cJSON *j) {
    train_loop_params *p = &L->p;
    const double BIG = 1e15, IMAX = 2147483647.0;
    double v;
    const cJSON *rng = cJSON_GetObjectItemCaseSensitive(j, "rng"), *o = cJSON_GetObjectItemCaseSensitive(j, "optimizer");
    if (!r->bad && !cJSON_IsObject(rng)) r->bad = "rng", snprintf(r->why, sizeof r->why, "missing or not an object");
    if (!r->bad && !cJSON_IsObject(o)) r->bad = "optimizer", snprintf(r->why, sizeof r->why, "missing or not an object");
    uint64_t seed = 0;
    if (!r->bad && !json_u64(j, "seed", &seed)) r->bad = "seed", snprintf(r->why, sizeof r->why, "expected a decimal string");
    read_rng(r, rng, &L->rng);
    if (state_num(r, j, "step", 0, BIG, 1, 0, &v)) L->step = (long)v;
    if (state_num(r, j, "epoch", 0, IMAX, 1, 0, &v)) L->epoch = (int)v;
    if (state_num(r, j, "position", 0, IMAX, 1, 0, &v)) L->pos = (int)v;
    /* counters kept in the optimizer and EMA until train_loop_setup restores them */
    if (state_num(r, j, "ema_updates", 0, BIG, 1, 0, &v)) L->ema_state.updates = (long)v;
    if (state_num(r, j, "optimizer_step", 0, BIG, 1, 0, &v)) L->opt.step = (long)v;
    if (state_num(r, j, "batch_size", 1, 4096, 1, 0, &v)) p->batch_size = (int)v;
    if (state_num(r, j, "grad_accum", 1, 65536, 1, 0, &v)) p->grad_accum = (int)v;
    if (state_num(r, j, "loss_avg", -1e300, 1e300, 0, 0, &v)) L->loss_avg = v;
    if (state_num(r, j, "nonfinite_skipped", 0, BIG, 1, 1, &v)) L->nonfinite_skipped = (long)v;   /* absent before */
    read_optimizer(r, o, &p->optim);
    /* a budget given on resume replaces the run's as its new total; without one the run finishes its own */
    double ms = 0, me = 0, mm = 0;
    L->budget_given = p->max_steps > 0 || p->max_epochs > 0 || p->max_minutes > 0;
    state_num(r, j, "max_steps", 0, BIG, 1, 1, &ms);
    state_num(r, j, "max_epochs", 0, IMAX, 1, 1, &me);
    state_num(r, j, "max_minutes", 0, 1e9, 0, 1, &mm);
    if (!L->budget_given) p->max_steps = (long)ms, p->max_epochs = (int)me, p->max_minutes = mm;
    if (state_num(r, j, "elapsed", 0, 1e12, 0, 1, &v)) L->elapsed_before = v;   /* absent before: 0 */
    if (state_num(r, j, "ema_max_decay", 0, 1, 0, 1, &v)) p->ema_max_decay = v;
    if (state_num(r, j, "ema_power", 0, 100, 0, 1, &v)) p->ema_power = v;
    if (state_num(r, j, "ema_inv_gamma", 1e-12, 1e12, 0, 1, &v)) p->ema_inv_gamma = v;
    if (!r->bad) {
        p->seed = seed;
        p->flip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "flip"));
        p->use_ema = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "use_ema"));
    }
}

df_status train_state_parse(const char *path, cJSON **out) {
    cJSON *j;
    df_status st = df_read_json_object(path, &j);
    if (st) return st;
    *out = j;
    return DF_OK;
}

df_status train_loop_read_state(train_loop *L, const char *path,
                                void (*task_fields)(void *ctx, state_reader *r, const cJSON *state), void *ctx) {
    cJSON *j;
    df_status st = train_state_parse(path, &j);
    if (st) return st;
    state_reader r = {0};
    double version = 0;
    if (state_num(&r, j, "version", 0, 1e15, 1, 0, &version) && version != 1) {
        cJSON_Delete(j);
        return df_fail(DF_ERR_FORMAT, "%s: training state version %g; this version of diffuse resumes version 1",
                       path, version);
    }
    read_loop_fields(L, &r, j);
    if (task_fields) task_fields(ctx, &r, j);
    cJSON_Delete(j);
    if (r.bad) return df_fail(DF_ERR_FORMAT, "%s: field \"%s\": %s", path, r.bad, r.why);
    return DF_OK;
}

/* ---- the loop ---------------------------------------------------------------------------------------------- */

/* Sum of squared gradients in double: NaN or Inf in any gradient makes it non-finite. The optimizer
 * would compute the same norm, but only while it already updates the weights. */
static double grad_sum_squares(const float *g, size_t n) {
    double ss = 0;
#pragma omp parallel for reduction(+ : ss) schedule(static)
    for (size_t i = 0; i < n; i++) ss += (double)g[i] * g[i];
    return ss;
}

/* A step whose loss or gradients are not finite never reaches the weights, the moments or the EMA: it
 * is skipped (an event) while no more than nonfinite_skip come in a row, and stops the run after. */
static df_status skip_or_stop(train_loop *L, double loss, double gnorm) {
    const long this_step = L->step + 1;
    char what[96];
    if (!isfinite(loss)) snprintf(what, sizeof what, "the loss is %g", loss);
    else snprintf(what, sizeof what, "the gradients hold NaN or Inf (norm %g)", gnorm);
    L->nonfinite_run++;
    if (L->nonfinite_run <= L->p.nonfinite_skip) {
        L->nonfinite_skipped++;
        train_loop_event(L, "step %ld skipped: %s (%d in a row, %ld in this run)", this_step, what, L->nonfinite_run,
                         L->nonfinite_skipped);
        return DF_OK;
    }
    char kept[200] = "", run[96] = "", hint[128] = "";
    if (L->task->save && L->saved_step >= 0)
        snprintf(kept, sizeof kept, ": nothing after step %ld was saved and checkpoint-%07ld is the last checkpoint",
                 L->step, L->saved_step);
    else if (L->task->save)
        snprintf(kept, sizeof kept, ": nothing after step %ld was saved and no checkpoint was written", L->step);
    if (L->p.nonfinite_skip > 0)
        snprintf(run, sizeof run, " (%d non-finite steps in a row, more than the %d allowed)", L->nonfinite_run,
                 L->p.nonfinite_skip);
    else if (L->p.skip_hint)
        snprintf(hint, sizeof hint, ", or skip such steps: %s", L->p.skip_hint);
    return df_fail(DF_ERR_ARG, "step %ld: %s%s; stopped before updating the weights%s (lower the learning rate%s)",
                   this_step, what, run, kept, hint);
}

/* One optimizer step: the losses and gradients of grad_accum batches, then the update (AdamW or SGD, then
 * the EMA) unless the loss or a gradient is not finite. */
static df_status take_step(train_loop *L, double *loss, double *gnorm) {
    const size_t np = df_model_num_params(L->model);
    df_model_zero_grad(L->model);
    if (L->nx) memset(L->xgrads, 0, L->nx * sizeof(float));
    *loss = 0;
    for (int a = 0; a < L->p.grad_accum; a++) {
        next_batch(L);
        double l = 0;
        df_status st = L->task->batch_loss(L->ctx, L, a, &l);
        if (st) return st;
        *loss += l;
    }
    float *grads = df_model_grads(L->model), *params = df_model_params(L->model);
    inject_fault(L->step + 1, loss, grads, np);
    *gnorm = sqrt(grad_sum_squares(grads, np) + (L->nx ? grad_sum_squares(L->xgrads, L->nx) : 0));
    if (!isfinite(*loss) || !isfinite(*gnorm)) return skip_or_stop(L, *loss, *gnorm);
    L->nonfinite_run = 0;
    float *pp[2] = {params, L->xparams}, *gg[2] = {grads, L->xgrads};
    const size_t nn[2] = {np, L->nx};
    const int parts = L->nx ? 2 : 1;
    df_optimizer_step_parts(&L->opt, parts, pp, gg, nn, NULL);
    if (L->ema) df_ema_update_parts(&L->ema_state, L->ema, parts, (const float *const *)pp, nn);
    L->loss_avg = L->opt.step == 1 ? *loss : 0.98 * L->loss_avg + 0.02 * *loss;
    if (L->task->step_applied) L->task->step_applied(L->ctx, L);
    return DF_OK;
}

typedef struct {
    double last_t;    /* the previous report: its time (evaluation excluded) and step, for images/s */
    long   last_step, start_step;
} report_clock;

/* The common numbers of a report after a step. */
static void fill_report(train_loop *L, report_clock *rc, double loss, double gnorm, df_train_progress *pr) {
    const double tnow = df_now_sec();
    const long per_step = (long)L->p.batch_size * L->p.grad_accum;
    memset(pr, 0, sizeof *pr);
    pr->step = L->step, pr->total_steps = L->total, pr->epoch = L->epoch;
    pr->loss = loss, pr->loss_avg = L->loss_avg;
    for (int q = 0; q < 4; q++) pr->loss_quarter[q] = NAN;
    pr->lr = df_optimizer_lr(&L->opt.p, L->opt.step - 1);
    pr->grad_norm = gnorm;
    double dt = tnow - rc->last_t;
    pr->images_per_sec = dt > 0 ? (double)(L->step - rc->last_step) * per_step / dt : 0;
    const double session = tnow - L->t0 - L->untimed;   /* this session's training time, for the rate */
    pr->elapsed = L->elapsed_before + session;
    double rate = (double)(L->step - rc->start_step) / session;
    pr->eta = -1;
    if (L->total > 0 && rate > 0) pr->eta = (double)(L->total - L->step) / rate;
    if (L->p.max_minutes > 0) {
        double left = L->p.max_minutes * 60 - pr->elapsed;
        if (pr->eta < 0 || left < pr->eta) pr->eta = DF_MAX(left, 0);
    }
    pr->nonfinite_skipped = L->nonfinite_skipped;
    rc->last_t = tnow, rc->last_step = L->step;
}

/* After a step: evaluation (not training time), the report's log row, sample grids, a checkpoint when
 * due, then the report with its events to the caller. */
static df_status after_step(train_loop *L, report_clock *rc, double loss, double gnorm) {
    const train_task *t = L->task;
    const int last = L->total > 0 && L->step >= L->total;
    const int save_now = t->save && L->p.save_every > 0 && L->step % L->p.save_every == 0 && !last;
    int report = (L->p.log_every > 0 && L->step % L->p.log_every == 0) || L->step == 1 || L->event[0] || last || save_now;
    df_status st = DF_OK;
    if (t->evaluate) {
        const double e0 = df_now_sec();
        st = t->evaluate(L->ctx, L, last, &report);
        const double sec = df_now_sec() - e0;
        L->untimed += sec, rc->last_t += sec;
    }
    df_train_progress pr = {0};
    if (!st && report) {
        fill_report(L, rc, loss, gnorm, &pr);
        if (t->log) st = t->log(L->ctx, L, &pr);
    }
    if (!st && t->after_log) st = t->after_log(L->ctx, L, last);
    if (!st && save_now && !(st = save_checkpoint(L)))
        train_loop_event(L, "checkpoint %s/checkpoint-%07ld", L->p.out_dir, L->step);
    if (!st && report && t->progress) {
        pr.event = L->event[0] ? L->event : NULL;
        t->progress(L->ctx, &pr);
    }
    return st;
}

/* The end of a run (its budget used up, or a stop requested): the task's last work, a last checkpoint
 * and a closing report that carries only its event. */
static df_status finish(train_loop *L) {
    const train_task *t = L->task;
    L->event[0] = 0;
    df_status st = t->finish ? t->finish(L->ctx, L) : DF_OK;
    if (st || L->step == 0 || !t->save) return st;
    if ((st = save_checkpoint(L))) return st;
    if (t->progress) {
        df_train_progress pr = {.step = L->step, .total_steps = L->total, .epoch = L->epoch, .loss_avg = L->loss_avg};
        pr.elapsed = train_loop_elapsed(L);
        pr.nonfinite_skipped = L->nonfinite_skipped;
        for (int q = 0; q < 4; q++) pr.loss_quarter[q] = NAN;
        snprintf(L->event, sizeof L->event, "%s: checkpoint %s/checkpoint-%07ld", L->stopped ? "stopped" : "finished",
                 L->p.out_dir, L->step);
        pr.event = L->event;
        t->progress(L->ctx, &pr);
    }
    return DF_OK;
}

/* A resumed run keeps the learning-rate schedule it started with, so that it stays the run it was; it is
 * told (once, before its first step) when its budget outgrows that schedule: the steps past a decaying
 * schedule's end get its final rate, 0, and leave the weights as they are. A budget in minutes may
 * outgrow any schedule. */
static void note_schedule_end(train_loop *L) {
    const df_optim_params *o = &L->opt.p;
    const int decays = o->decay != DF_LR_CONSTANT && o->total_steps > o->warmup_steps;
    const int outgrows = L->total > o->total_steps || (L->total == 0 && L->p.max_minutes > 0);
    if (L->saved_step < 0 || !decays || !outgrows) return;
    train_loop_event(L, "note: the %s learning-rate schedule of this run ends at step %ld; later steps use its final "
                     "rate, %g, and leave the weights as they are (a new run started from these weights has a "
                     "schedule of its own)", o->decay == DF_LR_COSINE ? "cosine" : "linear", o->total_steps,
                     df_optimizer_lr(o, o->total_steps));
}

/* The warmup against the budget, as an event: the length chosen when it was unset, a warning when the
 * budget ends inside it. steps: the budget in steps, estimated from the first step's speed if by_speed. */
static void note_warmup(train_loop *L, long steps, int by_speed) {
    const long w = L->opt.p.warmup_steps;
    char budget[96];
    if (by_speed) snprintf(budget, sizeof budget, "the about %ld steps the budget allows at the first step's speed", steps);
    else snprintf(budget, sizeof budget, "the %ld-step budget", steps);
    if (L->warmup_auto) {
        train_loop_event(L, "warmup %ld step%s (10%% of %s, at most 500)", w, w == 1 ? "" : "s", budget);
    } else if (w > 0 && steps > 0 && steps < w) {
        train_loop_event(L, "warning: %s end%s inside the %ld-step warmup: the learning rate reaches only %.2g%% "
                         "of its peak %g", budget, by_speed ? "" : "s", w,
                         100 * df_optimizer_lr(&L->opt.p, steps - 1) / L->opt.p.lr, L->opt.p.lr);
    }
}

/* After the first step of a minutes budget: the steps it allows at that step's speed (slower than the
 * rest, so the estimate errs short), and from them the unset warmup or the warning. */
static void warmup_by_speed(train_loop *L) {
    const double sec = train_loop_elapsed(L) - L->elapsed_before;   /* this session's first step */
    long steps = L->step + (long)DF_MIN(1e12, (L->p.max_minutes * 60 - L->elapsed_before) / DF_MAX(sec, 1e-9));
    if (L->total > 0) steps = DF_MIN(steps, L->total);
    if (L->warmup_auto == 2) {
        /* the new length from the next step on; step 1 took lr 0 as under any warmup of 1 or more */
        L->opt.p.warmup_steps = L->p.optim.warmup_steps = DF_MAX(1, auto_warmup(steps));
        L->warmup_auto = 1;
    }
    note_warmup(L, steps, 1);
}

/* A decaying schedule over a minutes budget: once the warmup is over (and at least 20 steps after the slow
 * first one), its end is set to the step the budget will end at, at the speed since the first step. It is
 * then the run's schedule, kept on resume like any other; a speed that changes later moves the budget's
 * end away from it (sooner: the rate has not reached 0; later: the last steps take rate 0). */
static void decay_by_speed(train_loop *L, long first) {
    if (!L->decay_by_speed || L->step < DF_MAX(L->opt.p.warmup_steps, first + 20)) return;
    L->decay_by_speed = 0;
    const double now = train_loop_elapsed(L), left = L->p.max_minutes * 60 - now;
    const double rate = (double)(L->step - first) / DF_MAX(now - L->elapsed_first, 1e-9);
    const long end = L->step + (long)DF_MIN(1e12, DF_MAX(0, left) * rate);
    if (end <= DF_MAX(L->step, L->opt.p.warmup_steps)) return;
    L->opt.p.total_steps = L->p.optim.total_steps = end;
    train_loop_event(L, "learning rate: %s decay to 0 at step %ld, where the %g-minute budget ends at %.2f steps/s",
                     L->opt.p.decay == DF_LR_COSINE ? "cosine" : "linear", end, L->p.max_minutes, rate);
}

/* The budget: steps (epochs counted as steps), or minutes of training (evaluation excluded). */
static int budget_used(const train_loop *L) {
    return (L->total > 0 && L->step >= L->total) ||
           (L->p.max_minutes > 0 && train_loop_elapsed(L) >= L->p.max_minutes * 60);
}

df_status train_loop_run(train_loop *L) {
    if (L->done_before) {   /* check_resumed_budget wrote why */
        if (L->task->progress) {
            df_train_progress note = {.step = L->step, .total_steps = L->total, .epoch = L->epoch, .eta = -1,
                                      .elapsed = L->elapsed_before, .event = L->event};
            L->task->progress(L->ctx, &note);
        }
        return DF_OK;
    }
    df_model_set_train(L->model, 1, &L->rng);
    /* the network's memory for the batch, planned once: no step allocates */
    df_status st = df_model_reserve(L->model, L->p.batch_size, L->h, L->w);
    if (st) return st;
    /* before the first step, in one report: where a resumed run stands, its schedule against its budget,
     * and the warmup against a budget in steps (one in minutes is known after the first step) */
    L->event[0] = 0;
    if (L->saved_step >= 0) {
        char budget[200];
        describe_budget(L, steps_per_epoch(L), budget, sizeof budget);
        char after[64] = "";
        if (L->elapsed_before > 0) snprintf(after, sizeof after, " after %.1f minutes of training", L->elapsed_before / 60);
        train_loop_event(L, "resumed at step %ld%s, to a budget of %s", L->step, after, budget);
        note_schedule_end(L);
    }
    if (!(L->p.max_minutes > 0)) note_warmup(L, L->total, 0);
    if (L->event[0] && L->task->progress) {
        df_train_progress note = {.step = L->step, .total_steps = L->total, .epoch = L->epoch, .eta = -1,
                                  .elapsed = L->elapsed_before, .event = L->event};
        L->task->progress(L->ctx, &note);
    }
    L->t0 = df_now_sec();
    report_clock rc = {L->t0, L->step, L->step};
    const long first = L->step + 1;
    while (!st && !budget_used(L)) {
        if (L->p.stop && *L->p.stop) {
            L->stopped = 1;
            break;
        }
        double loss, gnorm;
        L->event[0] = 0;
        WATCH_STEP(0);
        st = take_step(L, &loss, &gnorm);
        WATCH_STEP(1);
        if (st) break;
        L->step++;
        if (L->step == first && L->p.max_minutes > 0) warmup_by_speed(L), L->elapsed_first = train_loop_elapsed(L);
        decay_by_speed(L, first);
        st = after_step(L, &rc, loss, gnorm);
    }
    return st ? st : finish(L);
}
