/* Training end to end on a tiny model: the loss falls, checkpoints load as pipelines, a resumed run equals
 * an uninterrupted one bit for bit, and `diffuse sample` gives deterministic images of the right shape;
 * the shared loop's data order is a function of seed and epoch alone. */
#define _POSIX_C_SOURCE 200809L
#include "loop.h"
#include "safetensors.h"
#include "test.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <gif_lib.h>

static void tiny_config(const char *path, int classes) {
    df_unet_config c;
    test_tiny_unet(&c, 1);
    c.num_class_embeds = classes;
    c.dropout = 0.1f;   /* dropout on, so its masks are part of what must resume exactly */
    CHECK_OK(df_unet_config_save(&c, path));
}

typedef struct {
    double first, last;
    int    nfirst, nlast;
    long   steps;
} loss_watch;

static void watch(void *ctx, const df_train_progress *p) {
    loss_watch *w = ctx;
    if (!(p->images_per_sec > 0)) return;
    if (p->step <= 30) w->first += p->loss, w->nfirst++;
    if (p->step > w->steps - 30) w->last += p->loss, w->nlast++;
}

static void base_params(df_train_params *p, const char *data, const char *config, const char *out) {
    df_train_params_default(p);
    p->data = data;
    p->preset = NULL;
    p->config_path = config;
    p->out_dir = out;
    p->batch_size = 16;
    p->optim.lr = 2e-3;
    p->optim.warmup_steps = 10;
    p->sample_count = 4;
    p->sample_steps = 5;
    p->log_every = 1;
    p->seed = 11;
}

TEST(train_tiny_model_loss_falls) {
    const char *dir = test_tmp_dir();
    char data[600], cfg[600], out[600];
    test_toy_idx(dir, "toy", 256, 4, data, sizeof data);
    snprintf(cfg, sizeof cfg, "%s/tiny.json", dir);
    snprintf(out, sizeof out, "%s/new/parent/run-loss", dir);   /* missing parents are created */
    tiny_config(cfg, 0);
    df_train_params p;
    base_params(&p, data, cfg, out);
    long steps = test_quick() ? 120 : 300;
    p.max_steps = steps;
    p.save_every = 0;
    p.sample_every = 0;
    loss_watch w = {.steps = steps};
    p.progress = watch;
    p.progress_ctx = &w;
    CHECK_OK(df_train(&p));
    double a = w.first / w.nfirst, b = w.last / w.nlast;
    printf("    mean loss over the first 30 steps %.4f, over the last 30 %.4f\n", a, b);
    CHECK(w.nfirst == 30 && w.nlast == 30, "progress reported every step (%d, %d)", w.nfirst, w.nlast);
    CHECK(b < 0.6 * a, "the loss fell by less than 40%%: %.4f -> %.4f", a, b);
    /* the run left a loadable pipeline, a loss log and a sample grid */
    df_model *m = NULL;
    df_scheduler_config sc;
    CHECK_OK(df_pipeline_load(out, 0, &m, &sc));
    CHECK(m && sc.num_train_timesteps == 1000 && sc.prediction == DF_PRED_EPSILON, "pipeline with its scheduler");
    df_model_free(m);
    char path[700];
    struct stat sb;
    snprintf(path, sizeof path, "%s/samples/latest.png", out);
    CHECK(stat(path, &sb) == 0 && sb.st_size > 0, "sample grid written");
    snprintf(path, sizeof path, "%s/loss.csv", out);
    FILE *f = fopen(path, "r");
    int lines = 0;
    char line[512];
    while (f && fgets(line, sizeof line, f)) lines++;
    if (f) fclose(f);
    CHECK(lines == steps + 1, "loss.csv has a header and one row per step: %d lines", lines);
}

/* What a run reported: the learning rate of each step, its ETAs and its events. */
typedef struct {
    double lr[64];
    int    reports, eta_bad, eta_positive;
    char   events[2048];
} run_watch;

static void watch_run(void *ctx, const df_train_progress *p) {
    run_watch *w = ctx;
    if (p->event && strlen(w->events) + strlen(p->event) + 2 < sizeof w->events)
        strcat(strcat(w->events, p->event), "\n");
    if (!(p->images_per_sec > 0)) return;   /* notes and the closing report */
    if (p->step >= 0 && p->step < 64) w->lr[p->step] = p->lr;
    w->reports++;
    w->eta_bad += !(isfinite(p->eta) && p->eta >= 0);
    w->eta_positive += p->eta > 0;
}

TEST(train_warmup_scales_to_the_budget) {
    const char *dir = test_tmp_dir();
    char data[600], cfg[600], out[600];
    test_toy_idx(dir, "toy", 64, 4, data, sizeof data);
    snprintf(cfg, sizeof cfg, "%s/tiny-warmup.json", dir);
    tiny_config(cfg, 0);
    df_train_params p;
    df_train_params_default(&p);
    CHECK(p.optim.warmup_steps < 0, "the default warmup is unset (%ld)", p.optim.warmup_steps);
    /* unset, with 20 steps: at most 2 steps of warmup, then the full rate */
    snprintf(out, sizeof out, "%s/run-warmup-auto", dir);
    base_params(&p, data, cfg, out);
    p.optim.warmup_steps = -1;
    p.max_steps = 20, p.save_every = 0, p.sample_every = 0, p.sample_count = 0;
    run_watch w = {0};
    p.progress = watch_run, p.progress_ctx = &w;
    CHECK_OK(df_train(&p));
    printf("    20 steps, warmup unset: lr %.3g at step 2, %.3g at step 3; events: %s", w.lr[2], w.lr[3], w.events);
    CHECK(strstr(w.events, "warmup 2 steps (10% of the 20-step budget"), "the chosen warmup is reported: %s", w.events);
    CHECK(!strstr(w.events, "warning"), "no warning for a warmup inside the budget: %s", w.events);
    CHECK(fabs(w.lr[3] - p.optim.lr) < 1e-9 * p.optim.lr, "step 3 runs at the full rate %g: %g", p.optim.lr, w.lr[3]);
    CHECK(w.lr[2] >= 0.5 * p.optim.lr, "step 2 is at least half the rate: %g", w.lr[2]);
    /* given explicitly and longer than the budget: kept, with a warning */
    snprintf(out, sizeof out, "%s/run-warmup-long", dir);
    base_params(&p, data, cfg, out);
    p.optim.warmup_steps = 500;
    p.max_steps = 20, p.save_every = 0, p.sample_every = 0, p.sample_count = 0;
    memset(&w, 0, sizeof w);
    p.progress = watch_run, p.progress_ctx = &w;
    CHECK_OK(df_train(&p));
    CHECK(strstr(w.events, "warning: the 20-step budget ends inside the 500-step warmup"), "warned: %s", w.events);
    CHECK(fabs(w.lr[20] - p.optim.lr * 19 / 500) < 1e-9, "the explicit warmup is kept: lr %g at step 20", w.lr[20]);
}

/* A budget in minutes: the unset warmup is chosen at the first step's speed, and every report has an ETA. */
TEST(train_minutes_budget_warmup_and_eta) {
    const char *dir = test_tmp_dir();
    char data[600], cfg[600], out[600];
    test_toy_idx(dir, "toy", 64, 4, data, sizeof data);
    snprintf(cfg, sizeof cfg, "%s/tiny-minutes.json", dir);
    tiny_config(cfg, 0);
    df_train_params p;
    snprintf(out, sizeof out, "%s/run-minutes", dir);
    base_params(&p, data, cfg, out);
    p.optim.warmup_steps = -1;
    p.max_minutes = 0.05, p.save_every = 0, p.sample_every = 0, p.sample_count = 0, p.log_every = 1;
    run_watch w = {0};
    p.progress = watch_run, p.progress_ctx = &w;
    CHECK_OK(df_train(&p));
    printf("    3 s budget: %d reports, %d with a positive ETA; events: %s", w.reports, w.eta_positive, w.events);
    CHECK(strstr(w.events, "warmup ") && strstr(w.events, "steps the budget allows at the first step's speed"),
          "the warmup chosen from the first step is reported: %s", w.events);
    CHECK(w.reports >= 2 && w.eta_bad == 0, "%d of %d reports without a finite ETA", w.eta_bad, w.reports);
    CHECK(w.eta_positive >= 1, "no report had a positive ETA (%d reports)", w.reports);
}

TEST(train_resume_is_bit_exact) {
    const char *dir = test_tmp_dir();
    char data[600], cfg[600], a[600], b[600];
    test_toy_idx(dir, "toy", 40, 4, data, sizeof data);   /* small: epochs turn over during the run */
    snprintf(cfg, sizeof cfg, "%s/tiny-cond.json", dir);
    tiny_config(cfg, 4);
    snprintf(a, sizeof a, "%s/run-straight", dir);
    snprintf(b, sizeof b, "%s/run-resumed", dir);
    df_train_params p;
    base_params(&p, data, cfg, a);
    p.flip = 1;
    p.max_steps = 24;
    p.save_every = 0;
    p.sample_every = 0;
    p.sample_count = 0;
    CHECK_OK(df_train(&p));
    /* a fresh run into a directory that holds one is refused, and leaves it as it was */
    CHECK(df_train(&p) == DF_ERR_ARG && strstr(df_error(), "--resume"), "a second run into %s: %s", a, df_error());
    /* the same run, stopped at 10 and at 17 and resumed each time */
    base_params(&p, data, cfg, b);
    p.flip = 1;
    p.sample_every = 0;
    p.sample_count = 0;
    p.optim.total_steps = 24;   /* the same learning-rate schedule as the straight run */
    p.max_steps = 10;
    CHECK_OK(df_train(&p));
    df_train_params q;
    df_train_params_default(&q);
    q.out_dir = b;
    q.resume = 1;
    q.max_steps = 17;
    q.sample_count = 0;
    q.sample_every = 0;
    CHECK_OK(df_train(&q));
    q.max_steps = 24;
    CHECK_OK(df_train(&q));
    const char *files[] = {"unet_raw/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.safetensors",
                           "training_state.safetensors"};
    const char *differs = test_checkpoint_differs(a, b, 24, files, (int)(sizeof files / sizeof *files));
    CHECK(!differs, "%s differs between the straight and the resumed run", differs);
    /* and a different seed really gives different weights (the comparison can fail) */
    char c[600];
    snprintf(c, sizeof c, "%s/run-other", dir);
    base_params(&p, data, cfg, c);
    p.flip = 1, p.max_steps = 24, p.save_every = 0, p.sample_every = 0, p.sample_count = 0, p.seed = 12;
    CHECK_OK(df_train(&p));
    CHECK(test_checkpoint_differs(a, c, 24, files, 1), "another seed gives other weights");
    /* the class-conditional run samples by label from the command line; labels out of range are refused */
    char args[2000], npy[700];
    snprintf(npy, sizeof npy, "%s/cond.npy", dir);
    snprintf(args, sizeof args, "%s/diffuse sample %s --labels 0,3 --n 4 --steps 3 --npy %s >/dev/null 2>&1", test_bin_dir(), a, npy);
    int rc = system(args);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "sample --labels 0,3 from a class-conditional run");
    char *text;
    size_t len;
    if (!df_read_file(npy, &text, &len)) {
        CHECK(strstr(text + 10, "'shape': (4, 8, 8, 1)") != NULL, "4 labelled 8x8 samples");
        free(text);
    }
    snprintf(args, sizeof args, "%s/diffuse sample %s --labels 7 --n 2 --steps 3 >/dev/null 2>&1", test_bin_dir(), a);
    rc = system(args);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "label 7 of 4 classes is refused");
    /* resuming where there is nothing to resume is a clear error */
    q.out_dir = "/nonexistent/run";
    CHECK(df_train(&q) == DF_ERR_IO && strstr(df_error(), "/nonexistent/run"), "resume without a run: %s", df_error());
    struct stat nsb;
    CHECK(stat("/nonexistent/run", &nsb) != 0, "a failed resume created its output directory");
}

/* ---- a resumed run's budget ---------------------------------------------------------------------------- */

/* Asks the run to stop once it reports step `at` (as Ctrl-C would), and keeps the events it reported. */
typedef struct {
    long         at;
    volatile int stop;
    char         events[4096];
} stop_watch;

static void stop_at(void *ctx, const df_train_progress *p) {
    stop_watch *w = ctx;
    if (p->event && strlen(w->events) + strlen(p->event) + 2 < sizeof w->events)
        strcat(strcat(w->events, p->event), "\n");
    if (w->at > 0 && p->step >= w->at) w->stop = 1;
}

/* The "elapsed" (training seconds of all sessions) of out/latest's state; set it first when set >= 0. */
static double state_elapsed(const char *out, double set) {
    char path[800], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/latest/training_state.json", out);
    if (df_read_file(path, &text, &len)) return -1;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "elapsed");
    double v = cJSON_IsNumber(e) ? e->valuedouble : -1;
    if (set >= 0 && j) {
        cJSON_ReplaceItemInObjectCaseSensitive(j, "elapsed", cJSON_CreateNumber(set));
        char *out_text = cJSON_Print(j);
        CHECK_OK(df_write_file_atomic(path, out_text, strlen(out_text)));
        free(out_text);
        v = set;
    }
    cJSON_Delete(j);
    return v;
}

static long state_step(const char *out) {
    df_training_summary s;
    return df_training_summary_load(out, &s) == DF_OK && s.found ? s.step : -1;
}

/* A budget given on resume is the run's total (steps from its start, minutes of all its sessions); none
 * finishes the run's own, which continues bit for bit and keeps its elapsed time; one reached is refused. */
TEST(train_resume_budget_is_the_runs_total) {
    const char *dir = test_tmp_dir();
    char data[600], cfg[600], a[600], b[600];
    test_toy_idx(dir, "toy", 40, 4, data, sizeof data);
    snprintf(cfg, sizeof cfg, "%s/tiny-budget.json", dir);
    tiny_config(cfg, 0);
    snprintf(a, sizeof a, "%s/budget-straight", dir);
    snprintf(b, sizeof b, "%s/budget-stopped", dir);
    df_train_params p;
    base_params(&p, data, cfg, a);   /* cosine decay over the budget: the schedule depends on it */
    p.max_steps = 12, p.save_every = 0, p.sample_every = 0, p.sample_count = 0;
    CHECK_OK(df_train(&p));
    /* the same run stopped after step 5, then resumed without a budget: it finishes the 12 steps */
    base_params(&p, data, cfg, b);
    p.max_steps = 12, p.save_every = 0, p.sample_every = 0, p.sample_count = 0;
    stop_watch w = {.at = 5};
    p.stop = &w.stop, p.progress = stop_at, p.progress_ctx = &w;
    CHECK_OK(df_train(&p));
    CHECK(state_step(b) == 5, "stopped at step 5 (latest is at %ld)", state_step(b));
    double before = state_elapsed(b, 1000);   /* as if the first session had trained 1000 s */
    CHECK(before == 1000, "the state records the training time (%g)", before);
    df_train_params q;
    df_train_params_default(&q);
    q.out_dir = b, q.resume = 1, q.sample_every = 0, q.sample_count = 0, q.log_every = 1;
    memset(&w, 0, sizeof w);
    q.progress = stop_at, q.progress_ctx = &w;
    CHECK_OK(df_train(&q));
    CHECK(state_step(b) == 12, "no budget on resume finishes the run's 12 steps (latest at %ld)", state_step(b));
    CHECK(strstr(w.events, "resumed at step 5 after 16.7 minutes of training, to a budget of 12 steps"),
          "the resume says where the run stands: %s", w.events);
    CHECK(!strstr(w.events, "schedule"), "the budget did not outgrow the schedule: %s", w.events);
    double after = state_elapsed(b, -1);
    CHECK(after >= 1000 && after < 1000 + 600, "elapsed continues from the first session's 1000 s: %g", after);
    char fa[800], fb[800];
    snprintf(fa, sizeof fa, "%s/checkpoint-0000012/unet_raw/diffusion_pytorch_model.safetensors", a);
    snprintf(fb, sizeof fb, "%s/checkpoint-0000012/unet_raw/diffusion_pytorch_model.safetensors", b);
    CHECK(test_files_equal(fa, fb), "the stopped and resumed run differs from the straight one");
    /* resumed again without a budget: finished, nothing to do, nothing written */
    memset(&w, 0, sizeof w);
    CHECK_OK(df_train(&q));
    CHECK(strstr(w.events, "already finished its budget of 12 steps, at step 12") && strstr(w.events, "nothing to do"),
          "a finished run says so: %s", w.events);
    CHECK(state_elapsed(b, -1) == after, "a finished run writes nothing (elapsed %g, was %g)", state_elapsed(b, -1), after);
    /* a budget already reached is refused, whatever its unit (were one not, the run stops after a step) */
    memset(&w, 0, sizeof w);
    w.at = 13;
    q.stop = &w.stop;
    q.max_steps = 10;
    CHECK(df_train(&q) == DF_ERR_ARG && strstr(df_error(), "the run is at step 12") &&
              strstr(df_error(), "a budget of 10 steps is already reached"), "--steps 10 at step 12: %s", df_error());
    q.max_steps = 0, q.max_epochs = 1;   /* 40 images in batches of 16: 3 steps an epoch */
    CHECK(df_train(&q) == DF_ERR_ARG && strstr(df_error(), "a budget of 1 epoch (3 steps) is already reached"),
          "--epochs 1 at step 12: %s", df_error());
    /* minutes are the run's training time in all: 1000 s and more recorded, so 16.6 minutes are reached */
    q.max_epochs = 0, q.max_minutes = 1000.0 / 60;
    CHECK(df_train(&q) == DF_ERR_ARG && strstr(df_error(), "minutes is already reached"), "--minutes at %g s: %s",
          after, df_error());
    CHECK(state_step(b) == 12, "a refused resume trains nothing (latest at %ld)", state_step(b));
    /* a minute more than the run has trained: it trains on (a budget of steps no longer ends it) for about
     * a minute; stopped after two steps, the state's time continues from the recorded one */
    q.max_minutes = after / 60 + 1;
    memset(&w, 0, sizeof w);
    w.at = 14;
    CHECK_OK(df_train(&q));
    double later = state_elapsed(b, -1);
    CHECK(state_step(b) == 14, "the resumed run trained past its old budget of 12 steps (latest at %ld)", state_step(b));
    CHECK(later > after && later < after + 60, "elapsed %g continues from %g", later, after);
    CHECK(strstr(w.events, "note: the cosine learning-rate schedule of this run ends at step 12; later steps use its "
                           "final rate, 0"), "the schedule's end is announced: %s", w.events);
    const char *n1 = strstr(w.events, "schedule of this run");
    CHECK(n1 && !strstr(n1 + 1, "schedule of this run"), "the schedule's end is announced once: %s", w.events);
}

/* ---- the shared loop's data order ------------------------------------------------------------------------ */

typedef struct {
    int seen[256], n;   /* the images (labelled by their index) the loss saw, in order */
} order_watch;

static df_status record_batch(void *ctx, train_loop *L, int part, double *loss) {
    order_watch *w = ctx;
    for (int i = 0; i < L->p.batch_size && w->n < 256; i++) w->seen[w->n++] = L->labels[i];
    *loss = 0;   /* no gradients: only the order matters here */
    return DF_OK;
}

/* The images a loop over data reads in `steps` steps of `batch`, starting at (epoch, pos). */
static int read_order(const df_dataset *data, uint64_t seed, int batch, long steps, int epoch, int pos, int *out) {
    static const train_task task = {.batch_loss = record_batch};
    df_unet_config c;
    test_tiny_unet(&c, 0);
    df_model *m = NULL;
    order_watch w = {.n = 0};
    train_loop L;
    train_loop_params lp = {.batch_size = batch, .grad_accum = 1, .seed = seed, .max_steps = steps, .flip = 1};
    df_optim_params_default(&lp.optim);
    train_loop_init(&L, &lp, &task, &w);
    L.epoch = epoch, L.pos = pos;   /* as a resume sets them */
    df_status st = df_model_create(&c, 1, &m);
    if (!st) st = train_loop_setup(&L, m, data, NULL);
    if (!st) st = train_loop_run(&L);
    CHECK_OK(st);
    train_loop_free(&L);
    df_model_free(m);
    memcpy(out, w.seen, sizeof(int) * (size_t)w.n);
    return w.n;
}

TEST(train_loop_data_order_is_seed_and_epoch) {
    enum { N = 10 };
    float x[N * 64] = {0};
    int idx[N];
    for (int i = 0; i < N; i++) idx[i] = i;   /* each image's label is its index */
    df_dataset *d = NULL;
    CHECK_OK(df_dataset_from_images(x, idx, N, 1, 8, 8, N, "indices", &d));
    if (!d) return;
    int a[256], b[256], r[256], o[256];
    int na = read_order(d, 7, 4, 10, 0, 0, a);   /* 40 images: epochs 0 to 3 */
    CHECK(na == 40, "4 x 10 images read, not %d", na);
    /* every epoch reads each image once, in an order of its own */
    int shuffled = 0, differ = 0;
    for (int e = 0; e < 4; e++) {
        int count[N] = {0}, ok = 1;
        for (int i = 0; i < N; i++) count[a[e * N + i]]++, shuffled += a[e * N + i] != i;
        for (int i = 0; i < N; i++) ok &= count[i] == 1;
        CHECK(ok, "epoch %d does not read each image once", e);
        if (e) differ += memcmp(a + e * N, a + (e - 1) * N, sizeof(int) * N) != 0;
    }
    CHECK(shuffled > 0 && differ == 3, "epochs are shuffled (%d moved) and differ from each other (%d of 3)", shuffled,
          differ);
    /* the batch size does not change the order: it is a function of (seed, epoch) */
    int nb = read_order(d, 7, 5, 8, 0, 0, b);
    CHECK(nb == 40 && memcmp(a, b, sizeof(int) * 40) == 0, "batches of 5 read another order than batches of 4");
    /* a run resumed at epoch 2, position 3 (no stored permutation) reads what the straight one did */
    int nr = read_order(d, 7, 1, 17, 2, 3, r);
    CHECK(nr == 17 && memcmp(r, a + 2 * N + 3, sizeof(int) * 17) == 0, "the resumed order differs from the straight one");
    /* and another seed gives another order (the comparisons above can fail) */
    int no = read_order(d, 8, 4, 10, 0, 0, o);
    CHECK(no == 40 && memcmp(a, o, sizeof(int) * 40) != 0, "seeds 7 and 8 read the same order");
    df_dataset_free(d);
}

static int run_cli(const char *args) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s/diffuse %s >/dev/null 2>&1", test_bin_dir(), args);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(sample_cli_shapes_ranges_and_determinism) {
    const char *dir = test_tmp_dir();
    char model[600], args[3000], npy1[600], npy2[600], npy3[600];
    snprintf(model, sizeof model, "%s/sample-model", dir);
    snprintf(args, sizeof args, "init --preset fmnist-s --seed 2 %s", model);
    CHECK(run_cli(args) == 0, "init");
    snprintf(npy1, sizeof npy1, "%s/s1.npy", dir);
    snprintf(npy2, sizeof npy2, "%s/s2.npy", dir);
    snprintf(npy3, sizeof npy3, "%s/s3.npy", dir);
    const char *fmt = "sample %s --n 3 --batch 2 --steps 4 --seed %d --npy %s --out %s/grid.png";
    snprintf(args, sizeof args, fmt, model, 5, npy1, dir);
    CHECK(run_cli(args) == 0, "sample 1");
    snprintf(args, sizeof args, fmt, model, 5, npy2, dir);
    CHECK(run_cli(args) == 0, "sample 2");
    snprintf(args, sizeof args, fmt, model, 6, npy3, dir);
    CHECK(run_cli(args) == 0, "sample 3");
    char *a, *b, *c;
    size_t na, nb, nc;
    if (df_read_file(npy1, &a, &na) || df_read_file(npy2, &b, &nb) || df_read_file(npy3, &c, &nc)) {
        CHECK(0, "npy files missing: %s", df_error());
        return;
    }
    CHECK(na == nb && memcmp(a, b, na) == 0, "the same seed gives the same bytes");
    CHECK(na == nc && memcmp(a, c, na) != 0, "another seed gives other images");
    CHECK(memcmp(a, "\x93NUMPY", 6) == 0 && strstr(a + 10, "'shape': (3, 28, 28, 1)"), "npy header with shape (3, 28, 28, 1)");
    size_t hl = (size_t)(unsigned char)a[8] | (size_t)(unsigned char)a[9] << 8;
    CHECK(na == 10 + hl + 3 * 28 * 28, "npy size %zu", na);
    free(a), free(b), free(c);
    /* the denoising animation: the requested frames, grid-sized, ending on the final images */
    char gif[600], grid[600];
    snprintf(gif, sizeof gif, "%s/anim.gif", dir);
    snprintf(grid, sizeof grid, "%s/anim-grid.png", dir);
    snprintf(args, sizeof args, "sample %s --n 4 --steps 8 --seed 3 --animate %s --frames 5 --out %s", model, gif, grid);
    CHECK(run_cli(args) == 0, "sample --animate");
    int err = 0;
    GifFileType *g = DGifOpenFileName(gif, &err);
    CHECK(g && DGifSlurp(g) == GIF_OK, "the GIF decodes");
    int gc, gh, gw;
    float *px = NULL;
    CHECK_OK(df_image_load(grid, 1, &gc, &gh, &gw, &px));
    if (g && px && g->ImageCount > 0) {
        CHECK(g->ImageCount == 5, "5 frames, got %d", g->ImageCount);
        CHECK(g->SWidth == gw && g->SHeight == gh, "frames are grid-sized: %dx%d vs %dx%d", g->SWidth, g->SHeight, gw, gh);
        const SavedImage *last = &g->SavedImages[g->ImageCount - 1];
        const ColorMapObject *cm = last->ImageDesc.ColorMap ? last->ImageDesc.ColorMap : g->SColorMap;
        int worst = 0;
        for (int i = 0; i < gh * gw && i < last->ImageDesc.Width * last->ImageDesc.Height; i++) {
            int v = cm->Colors[last->RasterBits[i]].Red, want = (int)lrintf((px[i] + 1) * 127.5f);
            worst = abs(v - want) > worst ? abs(v - want) : worst;
        }
        CHECK(worst <= 1, "the last frame is the final grid (largest difference %d levels)", worst);
    }
    free(px);
    if (g) DGifCloseFile(g, &err);
    /* inpainting from the command line keeps the part of the input the mask marks black */
    char in[600], mask[600], outp[600];
    snprintf(in, sizeof in, "%s/inpaint-in.png", dir);
    snprintf(mask, sizeof mask, "%s/inpaint-mask.png", dir);
    snprintf(outp, sizeof outp, "%s/inpaint-out.png", dir);
    float img[28 * 28], mk[28 * 28];
    for (int i = 0; i < 28 * 28; i++) {
        img[i] = (float)((i * 37) % 255) / 127.5f - 1;
        mk[i] = (i % 28) >= 14 ? 1.0f : -1.0f;   /* right half white: regenerate it */
    }
    CHECK_OK(df_image_save_png(in, img, 1, 28, 28));
    CHECK_OK(df_image_save_png(mask, mk, 1, 28, 28));
    snprintf(args, sizeof args, "sample %s --n 1 --steps 6 --inpaint %s --mask %s --out-dir %s/inpaint", model, in, mask, dir);
    CHECK(run_cli(args) == 0, "sample --inpaint");
    snprintf(outp, sizeof outp, "%s/inpaint/000000.png", dir);
    float *o = NULL, *ref = NULL;
    int oc, oh, ow;
    CHECK_OK(df_image_load(outp, 1, &oc, &oh, &ow, &o));
    CHECK_OK(df_image_load(in, 1, &oc, &oh, &ow, &ref));
    if (o && ref) {
        double kept = 0, changed = 0;
        for (int i = 0; i < 28 * 28; i++) {
            if (i % 28 < 14) kept = fmax(kept, fabs(o[i] - ref[i]));
            else changed = fmax(changed, fabs(o[i] - ref[i]));
        }
        CHECK(kept < 1.5 / 127.5, "the known half is kept (largest change %.4f)", kept);
        CHECK(changed > 0.1, "the masked half is regenerated (largest change %.4f)", changed);
    }
    free(o), free(ref);
    snprintf(args, sizeof args, "sample %s --n 2 --steps 6 --init-image %s --strength 0.5 --out %s", model, in, outp);
    CHECK(run_cli(args) == 0, "sample --init-image");
    snprintf(args, sizeof args, "sample %s --n 2 --init-image %s", model, in);
    CHECK(run_cli(args) == 2 || run_cli(args) == 1, "--init-image without --strength is refused");
    snprintf(args, sizeof args, "sample %s --labels 1 --n 2", model);
    CHECK(run_cli(args) == 2, "labels for an unconditional model are refused");
    snprintf(args, sizeof args, "sample %s --steps 5000", model);
    CHECK(run_cli(args) == 2, "more steps than timesteps is refused");
}
