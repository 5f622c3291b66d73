/* Training under faults: NaN/Inf steps stop the run (or are skipped) without touching the weights,
 * SIGINT/SIGTERM save and exit cleanly, SIGKILL at any moment leaves a whole `latest` and resumes bit for
 * bit, and a full disk is one clear error with the previous checkpoint kept. */
#define _POSIX_C_SOURCE 200809L
#include "safetensors.h"
#include "test.h"
#include "loop.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>


static void fault_off(void) {
    df_train_fault.step = 0;
    df_train_fault.count = 1;
    df_train_fault.on_loss = 0;
    df_train_fault.value = NAN;
}

/* ---- a tiny model and data set (as in test_train.c) --------------------------------------------------- */

static void toy_config(const char *dir, char *out, size_t cap) {
    snprintf(out, cap, "%s/faults-tiny.json", dir);
    df_unet_config c;
    test_tiny_unet(&c, 1);
    c.dropout = 0.1f;   /* dropout masks draw from the training stream: part of what must resume exactly */
    CHECK_OK(df_unet_config_save(&c, out));
}

typedef struct {
    char dir[600], data[700], cfg[700];
} toy;

static void toy_init(toy *t) {
    snprintf(t->dir, sizeof t->dir, "%s", test_tmp_dir());
    test_toy_idx(t->dir, "faults", 40, 4, t->data, sizeof t->data);
    toy_config(t->dir, t->cfg, sizeof t->cfg);
}

static void toy_params(df_train_params *p, const toy *t, const char *out) {
    df_train_params_default(p);
    p->data = t->data;
    p->preset = NULL;
    p->config_path = t->cfg;
    p->out_dir = out;
    p->batch_size = 8;
    p->optim.lr = 2e-3;
    p->optim.warmup_steps = 2;
    p->optim.total_steps = 10;   /* one learning-rate schedule for runs of different lengths */
    p->sample_count = 0;
    p->sample_every = 0;
    p->log_every = 1;
    p->keep_checkpoints = 100;
    p->seed = 5;
}

/* ---- files ------------------------------------------------------------------------------------------- */

/* 1 if the two files hold the same bytes; otherwise prints where they differ. */
static int same_bytes(const char *a, const char *b) {
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    if (df_read_file(a, &x, &nx) || df_read_file(b, &y, &ny)) {
        printf("    cannot compare %s and %s: %s\n", a, b, df_error());
        free(x), free(y);
        return 0;
    }
    size_t i = 0;
    while (i < nx && i < ny && x[i] == y[i]) i++;
    int eq = nx == ny && i == nx;
    if (!eq) printf("    %s (%zu bytes) and %s (%zu bytes) differ from byte %zu\n", a, nx, b, ny, i);
    free(x), free(y);
    return eq;
}

/* 1 if two training_state.json files agree in every field but "elapsed" (the training time, which is the
 * clock's); otherwise prints the two texts' first difference. */
static int same_state(const char *a, const char *b) {
    char *x = NULL, *y = NULL, *px = NULL, *py = NULL;
    size_t nx = 0, ny = 0;
    cJSON *jx = NULL, *jy = NULL;
    if (!df_read_file(a, &x, &nx) && !df_read_file(b, &y, &ny)) {
        jx = cJSON_ParseWithLength(x, nx), jy = cJSON_ParseWithLength(y, ny);
        cJSON_DeleteItemFromObjectCaseSensitive(jx, "elapsed");
        cJSON_DeleteItemFromObjectCaseSensitive(jy, "elapsed");
        px = cJSON_PrintUnformatted(jx), py = cJSON_PrintUnformatted(jy);
    }
    int eq = px && py && strcmp(px, py) == 0;
    if (!eq) {
        size_t i = 0;
        while (px && py && px[i] && px[i] == py[i]) i++;
        printf("    %s and %s differ (elapsed aside) from character %zu\n", a, b, i);
    }
    cJSON_Delete(jx), cJSON_Delete(jy);
    free(x), free(y), free(px), free(py);
    return eq;
}

static int exists(const char *path) {
    struct stat sb;
    return lstat(path, &sb) == 0;
}

/* The step `out`/latest names (from the link's target), or -1. */
static long latest_step(const char *out) {
    char link[1100], target[256];
    snprintf(link, sizeof link, "%s/latest", out);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0) return -1;
    target[n] = 0;
    long s;
    char extra;
    return sscanf(target, "checkpoint-%ld%c", &s, &extra) == 1 ? s : -2;
}

/* A number from a checkpoint's training_state.json ("step", "optimizer_step", ...), or -1. */
static double state_number(const char *ckpt, const char *key) {
    char path[1100], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/training_state.json", ckpt);
    if (df_read_file(path, &text, &len)) return -1;
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *at = strstr(text, pat);
    double v = at ? strtod(at + strlen(pat), NULL) : -1;
    free(text);
    return v;
}

/* `latest` names a whole checkpoint: both models and the scheduler load, the training state opens and
 * its step is the one in the name. Returns that step, or -1 (with failures recorded). */
static long check_latest_whole(const char *out, const char *when) {
    long step = latest_step(out);
    CHECK(step >= 0, "%s: %s/latest names no checkpoint (%ld)", when, out, step);
    if (step < 0) return -1;
    df_model *m = NULL;
    df_scheduler_config sc;
    df_status s1 = df_pipeline_load(out, 1, &m, &sc);
    CHECK(s1 == DF_OK, "%s: the raw weights of checkpoint %ld do not load: %s", when, step, df_error());
    df_model_free(m);
    m = NULL;
    df_status s2 = df_pipeline_load(out, 0, &m, NULL);
    CHECK(s2 == DF_OK, "%s: the EMA weights of checkpoint %ld do not load: %s", when, step, df_error());
    df_model_free(m);
    char ck[1100], p[1200];
    snprintf(ck, sizeof ck, "%s/latest", out);
    snprintf(p, sizeof p, "%s/training_state.safetensors", ck);
    st_file f;
    df_status s3 = st_open(p, &f);
    CHECK(s3 == DF_OK, "%s: %s: %s", when, p, df_error());
    if (!s3) st_close(&f);
    double js = state_number(ck, "step");
    CHECK(js == (double)step, "%s: training_state.json says step %g, the link says %ld", when, js, step);
    return s1 || s2 || s3 || js != (double)step ? -1 : step;
}

/* Names in dir (and one level below) that end in ".tmp" or hold ".tmp.": leftovers of a write. */
static int count_tmp(const char *dir, char *first, size_t cap) {
    DIR *dp = opendir(dir);
    if (!dp) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dp))) {
        if (e->d_name[0] == '.') continue;
        size_t len = strlen(e->d_name);
        char p[1400];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if ((len > 4 && !strcmp(e->d_name + len - 4, ".tmp")) || strstr(e->d_name, ".tmp.")) {
            if (!n && first) {
                size_t l = strlen(p) < cap ? strlen(p) : cap - 1;
                memcpy(first, p, l);
                first[l] = 0;
            }
            n++;
        } else if (!strcmp(e->d_name, "samples")) {
            n += count_tmp(p, n ? NULL : first, cap);
        }
    }
    closedir(dp);
    return n;
}

/* Lines of loss.csv, and the step of its last row (through *last, -1 if none). Counts only whole lines. */
static int log_lines(const char *out, long *last) {
    char path[1100], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/loss.csv", out);
    *last = -1;
    if (df_read_file(path, &text, &len)) return 0;
    int n = 0;
    for (char *l = text; *l;) {
        char *nl = strchr(l, '\n');
        if (!nl) break;
        long s;
        if (n > 0 && sscanf(l, "%ld,", &s) == 1) *last = s;
        n++;
        l = nl + 1;
    }
    free(text);
    return n;
}

/* ---- NaN and Inf ------------------------------------------------------------------------------------- */

typedef struct {
    int  skip_events, skip_steps[8];
    long last_skipped;
} skip_watch;

static void on_progress(void *ctx, const df_train_progress *pr) {
    skip_watch *w = ctx;
    if (pr->event && strstr(pr->event, "skipped")) {
        if (w->skip_events < 8) w->skip_steps[w->skip_events] = (int)pr->step;
        w->skip_events++;
    }
    w->last_skipped = pr->nonfinite_skipped;
}

TEST(train_fault_nonfinite_stops_and_keeps_checkpoint) {
    toy t;
    toy_init(&t);
    char out[700], ref[700], ck[1100];
    snprintf(out, sizeof out, "%s/nan-stop", t.dir);
    snprintf(ref, sizeof ref, "%s/nan-stop-ref", t.dir);
    df_train_params p;
    toy_params(&p, &t, out);
    p.max_steps = 10;
    p.save_every = 2;
    /* NaN in one gradient at step 5: the loss is finite, only the gradient check can see it */
    fault_off();
    df_train_fault.step = 5;
    df_status st = df_train(&p);
    fault_off();
    const char *msg = df_error();
    printf("    stop mode: %s\n", msg);
    CHECK(st == DF_ERR_ARG, "a NaN gradient stops the run with an error (status %d)", (int)st);
    CHECK(strstr(msg, "step 5:") && strstr(msg, "NaN or Inf") && strstr(msg, "checkpoint-0000004"),
          "the message names the step, the fault and the checkpoint kept: %s", msg);
    CHECK(latest_step(out) == 4, "latest names checkpoint 4, not %ld", latest_step(out));
    check_latest_whole(out, "after the NaN step");
    snprintf(ck, sizeof ck, "%s/checkpoint-0000005", out);
    CHECK(!exists(ck), "no checkpoint for the bad step");
    snprintf(ck, sizeof ck, "%s/checkpoint-0000006", out);
    CHECK(!exists(ck), "nothing saved after the bad step");
    char tmpname[900] = "";
    CHECK(count_tmp(out, tmpname, sizeof tmpname) == 0, "no temporary files left: %s", tmpname);
    long last;
    int lines = log_lines(out, &last);
    CHECK(lines == 5 && last == 4, "loss.csv ends at step 4 (%d lines, last row %ld)", lines, last);
    /* the kept checkpoint is exactly the state after step 4: a clean 4-step run gives the same bytes */
    toy_params(&p, &t, ref);
    p.max_steps = 4;
    p.save_every = 2;
    CHECK_OK(df_train(&p));
    const char *files[] = {"unet_raw/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.safetensors",
                           "training_state.safetensors"};
    const char *differs = test_checkpoint_differs(out, ref, 4, files, 3);
    CHECK(!differs, "the kept checkpoint's %s is the state after step 4", differs);
    /* and the stopped run resumes from it */
    df_train_params q;
    df_train_params_default(&q);
    q.out_dir = out, q.resume = 1, q.sample_count = 0, q.sample_every = 0, q.save_every = 0;
    CHECK_OK(df_train(&q));
    CHECK(latest_step(out) == 10, "the resumed run finishes at step 10 (latest %ld)", latest_step(out));

    /* an infinite loss before any checkpoint: the same stop, and the message says there is none */
    snprintf(out, sizeof out, "%s/inf-loss", t.dir);
    toy_params(&p, &t, out);
    p.max_steps = 6;
    p.save_every = 0;
    df_train_fault.step = 3, df_train_fault.on_loss = 1, df_train_fault.value = INFINITY;
    st = df_train(&p);
    fault_off();
    msg = df_error();
    CHECK(st == DF_ERR_ARG && strstr(msg, "step 3:") && strstr(msg, "the loss is inf") && strstr(msg, "no checkpoint"),
          "an infinite loss at step 3: status %d, %s", (int)st, msg);
    snprintf(ck, sizeof ck, "%s/latest", out);
    CHECK(!exists(ck), "nothing was published");
}

TEST(train_fault_nonfinite_skip_leaves_weights) {
    toy t;
    toy_init(&t);
    char out[700], a[1100], b[1100];
    snprintf(out, sizeof out, "%s/nan-skip", t.dir);
    df_train_params p;
    toy_params(&p, &t, out);
    p.max_steps = 8;
    p.save_every = 1;
    p.nonfinite_skip = 2;
    skip_watch w = {0};
    p.progress = on_progress;
    p.progress_ctx = &w;
    /* steps 5 and 6 have a NaN gradient: two in a row is within the limit */
    fault_off();
    df_train_fault.step = 5, df_train_fault.count = 2;
    df_status st = df_train(&p);
    fault_off();
    CHECK(st == DF_OK, "the run skips the bad steps and finishes: %s", df_error());
    CHECK(w.skip_events == 2 && w.skip_steps[0] == 5 && w.skip_steps[1] == 6,
          "steps 5 and 6 reported as skipped (%d events, at %d and %d)", w.skip_events, w.skip_steps[0], w.skip_steps[1]);
    CHECK(w.last_skipped == 2, "the progress reports 2 skipped steps, not %ld", w.last_skipped);
    CHECK(latest_step(out) == 8, "the run finished at step 8 (latest %ld)", latest_step(out));
    /* weights, EMA and optimizer moments after steps 5 and 6 are those after step 4 */
    const char *files[] = {"unet_raw/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.safetensors",
                           "training_state.safetensors"};
    for (int s = 5; s <= 6; s++)
        for (int i = 0; i < 3; i++) {
            snprintf(a, sizeof a, "%s/checkpoint-0000004/%s", out, files[i]);
            snprintf(b, sizeof b, "%s/checkpoint-%07d/%s", out, s, files[i]);
            CHECK(same_bytes(a, b), "%s after skipped step %d equals that after step 4", files[i], s);
        }
    /* ... and training went on afterwards (the comparison above can fail) */
    snprintf(a, sizeof a, "%s/checkpoint-0000006/%s", out, files[0]);
    snprintf(b, sizeof b, "%s/checkpoint-0000007/%s", out, files[0]);
    printf("    (a difference reported next is expected: step 7 trains)\n");
    CHECK(!same_bytes(a, b), "step 7 changes the weights again");
    snprintf(a, sizeof a, "%s/checkpoint-0000006", out);
    double os = state_number(a, "optimizer_step"), eu = state_number(a, "ema_updates");
    CHECK(os == 4 && eu == 4, "after step 6 the optimizer took 4 steps and the EMA 4 updates (%g, %g)", os, eu);
    snprintf(a, sizeof a, "%s/checkpoint-0000008", out);
    os = state_number(a, "optimizer_step");
    double ns = state_number(a, "nonfinite_skipped");
    CHECK(os == 6 && ns == 2, "after step 8: 6 optimizer steps, 2 skipped (%g, %g)", os, ns);
    /* loss.csv has a row for each step, the skipped ones with their non-finite gradient norm */
    char path[1100], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/loss.csv", out);
    if (!df_read_file(path, &text, &len)) {
        for (int s = 4; s <= 7; s++) {
            char key[16], row[256] = "";
            snprintf(key, sizeof key, "\n%d,", s);
            const char *r = strstr(text, key);
            if (r) sscanf(r + 1, "%255[^\n]", row);
            const char *g = row;   /* the grad_norm column, the tenth */
            for (int i = 0; i < 9 && g; i++) g = strchr(g, ','), g = g ? g + 1 : NULL;
            int bad = g && !strncmp(g, "nan", 3);
            CHECK(r && g && bad == (s == 5 || s == 6), "loss.csv row of step %d %s a nan gradient norm: %s", s,
                  s == 5 || s == 6 ? "shows" : "has no", row);
        }
        free(text);
    }

    /* three in a row with Inf gradients is one more than allowed: the run stops at the third */
    snprintf(out, sizeof out, "%s/inf-skip-limit", t.dir);
    toy_params(&p, &t, out);
    p.max_steps = 8;
    p.save_every = 1;
    p.nonfinite_skip = 2;
    df_train_fault.step = 3, df_train_fault.count = 3, df_train_fault.value = INFINITY;
    st = df_train(&p);
    fault_off();
    const char *msg = df_error();
    printf("    skip limit: %s\n", msg);
    CHECK(st == DF_ERR_ARG && strstr(msg, "step 5:") && strstr(msg, "3 non-finite steps in a row"),
          "the third bad step in a row stops the run: status %d, %s", (int)st, msg);
    CHECK(latest_step(out) == 4, "latest names checkpoint 4 (%ld)", latest_step(out));
    check_latest_whole(out, "after the skip limit");
    snprintf(a, sizeof a, "%s/checkpoint-0000002/%s", out, files[0]);
    snprintf(b, sizeof b, "%s/checkpoint-0000004/%s", out, files[0]);
    CHECK(same_bytes(a, b), "skipped steps 3 and 4 left the weights of step 2");
    p.nonfinite_skip = -1;
    CHECK(df_train(&p) == DF_ERR_ARG, "a negative nonfinite_skip is refused");
}

/* ---- the command in a child process ----------------------------------------------------------------------- */

typedef struct {
    pid_t pid;
    int   err_fd;   /* the read end of the child's stderr */
} child;

/* Start `diffuse --threads 1 ARGS...` with stdout to /dev/null and stderr to a pipe; a file-size limit
 * (bytes) when fsize > 0. */
static child spawn(const char *const *args, long fsize) {
    child c = {-1, -1};
    char bin[1100];
    snprintf(bin, sizeof bin, "%s/diffuse", test_bin_dir());
    const char *argv[64];
    int n = 0;
    argv[n++] = bin, argv[n++] = "--threads", argv[n++] = "1";
    for (int i = 0; args[i] && n < 63; i++) argv[n++] = args[i];
    argv[n] = NULL;
    int fds[2];
    if (pipe(fds) != 0) return c;
    fflush(stdout);
    c.pid = fork();
    if (c.pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(fds[1], 2);
        close(fds[0]);
        if (fsize > 0) {
            struct rlimit rl = {(rlim_t)fsize, (rlim_t)fsize};
            setrlimit(RLIMIT_FSIZE, &rl);
        }
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    c.err_fd = fds[0];
    return c;
}

static void sleep_ms(double ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(fmod(ms, 1000) * 1e6)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

/* Wait up to timeout_s for the child; then collect its stderr into err. Returns the wait status, or -1 if
 * it had to be killed. */
static int finish(child *c, double timeout_s, char *err, size_t cap) {
    int status = 0;
    double t0 = now_ms();
    pid_t r;
    while ((r = waitpid(c->pid, &status, WNOHANG)) == 0 && now_ms() - t0 < timeout_s * 1e3) sleep_ms(5);
    if (r == 0) {
        kill(c->pid, SIGKILL);
        waitpid(c->pid, &status, 0);
        status = -1;
    }
    size_t n = 0;
    ssize_t k;
    while (n + 1 < cap && (k = read(c->err_fd, err + n, cap - 1 - n)) > 0) n += (size_t)k;
    err[n] = 0;
    close(c->err_fd);
    return status;
}

static int exited_ok(int status) { return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0; }

/* The last non-empty line of text. */
static const char *last_line(const char *text, char *buf, size_t cap) {
    size_t n = strlen(text);
    while (n && text[n - 1] == '\n') n--;
    size_t s = n;
    while (s && text[s - 1] != '\n') s--;
    snprintf(buf, cap, "%.*s", (int)(n - s), text + s);
    return buf;
}

TEST(train_fault_signal_saves_and_resumes) {
    toy t;
    toy_init(&t);
    const int sigs[2] = {SIGINT, SIGTERM};
    const char *names[2] = {"SIGINT", "SIGTERM"};
    for (int k = 0; k < 2; k++) {
        char out[700], err[8192], line[1024];
        snprintf(out, sizeof out, "%s/signal-%s", t.dir, names[k]);
        const char *args[] = {"train", "--config", t.cfg, "--data", t.data, "--batch", "4", "--steps", "1000000",
                              "--save-every", "0", "--sample-every", "0", "--samples", "0", "--log-every", "1",
                              "--skip-nonfinite", "3", "--seed", "3", "--out", out, NULL};
        child c = spawn(args, 0);
        CHECK(c.pid > 0, "fork");
        if (c.pid <= 0) return;
        /* wait until it trains: three rows in loss.csv */
        long last = -1;
        double t0 = now_ms();
        while (log_lines(out, &last) < 4 && now_ms() - t0 < 60e3 && waitpid(c.pid, NULL, WNOHANG) == 0) sleep_ms(10);
        kill(c.pid, sigs[k]);
        int status = finish(&c, 60, err, sizeof err);
        CHECK(exited_ok(status), "%s: the run exits with status 0 (wait status %d): %s", names[k], status,
              last_line(err, line, sizeof line));
        CHECK(strstr(err, "stopped; continue with"), "%s: it says how to continue:\n%s", names[k], err);
        long step = check_latest_whole(out, names[k]);
        int lines = log_lines(out, &last);
        printf("    %s: stopped at step %ld (loss.csv: %d lines, last row %ld)\n", names[k], step, lines, last);
        CHECK(step >= 3 && step < 1000000, "%s: a checkpoint of the step it stopped at (%ld)", names[k], step);
        CHECK(last == step, "%s: the checkpoint is of the last step done (%ld vs loss.csv's %ld)", names[k], step, last);
        if (step < 0) continue;
        /* and --resume continues from there */
        char until[32];
        snprintf(until, sizeof until, "%ld", step + 2);
        const char *resume[] = {"train", "--resume", "--steps", until, "--save-every", "0", "--sample-every", "0",
                                "--samples", "0", "--log-every", "1", "--out", out, NULL};
        c = spawn(resume, 0);
        status = finish(&c, 60, err, sizeof err);
        CHECK(exited_ok(status), "%s: the resumed run finishes: %s", names[k], last_line(err, line, sizeof line));
        CHECK(strstr(err, "resuming"), "%s: it resumed: %s", names[k], err);
        long end = check_latest_whole(out, "after resuming");
        lines = log_lines(out, &last);
        CHECK(end == step + 2 && last == step + 2 && lines == step + 3,
              "%s: resumed from %ld to %ld, loss.csv one row per step (%d lines, last %ld)", names[k], step, end, lines,
              last);
    }
}

/* The argument list of a run of `steps` steps into out, saving after every step. */
static void kill_args(const char **args, const toy *t, const char *out, const char *steps, int resume) {
    int n = 0;
    args[n++] = "train";
    if (resume) {
        args[n++] = "--resume";
    } else {
        args[n++] = "--config", args[n++] = t->cfg, args[n++] = "--data", args[n++] = t->data;
        args[n++] = "--batch", args[n++] = "4", args[n++] = "--seed", args[n++] = "9", args[n++] = "--steps";
        args[n++] = steps;
    }
    const char *common[] = {"--save-every", "1", "--sample-every", "0", "--samples", "0", "--log-every", "1", "--out", out};
    for (int i = 0; i < DF_COUNTOF(common); i++) args[n++] = common[i];
    args[n] = NULL;
}

TEST(train_fault_sigkill_resumes_bit_exact) {
    toy t;
    toy_init(&t);
    const int steps = test_quick() ? 10 : 24, kills = test_quick() ? 4 : 8;
    char ref[700], out[700], nsteps[16], err[8192], line[1024];
    snprintf(ref, sizeof ref, "%s/kill-ref", t.dir);
    snprintf(out, sizeof out, "%s/kill-run", t.dir);
    snprintf(nsteps, sizeof nsteps, "%d", steps);
    const char *args[40];
    /* the uninterrupted run, timed (start-up until the first loss.csv row, then training): kills land mostly
     * in the first third of the training time, some during start-up */
    kill_args(args, &t, ref, nsteps, 0);
    double t0 = now_ms(), start_ms = -1;
    child c = spawn(args, 0);
    long last;
    siginfo_t info = {0};
    while (waitid(P_PID, (id_t)c.pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == 0 &&
           now_ms() - t0 < 120e3) {
        if (start_ms < 0 && log_lines(ref, &last) >= 2) start_ms = now_ms() - t0;
        sleep_ms(2);
    }
    int status = finish(&c, 120, err, sizeof err);
    double run_ms = now_ms() - t0;
    if (start_ms < 0) start_ms = 0.5 * run_ms;
    printf("    uninterrupted run: %.0f ms, the first step done after %.0f ms\n", run_ms, start_ms);
    CHECK(exited_ok(status), "the uninterrupted run: %s", last_line(err, line, sizeof line));
    if (!exited_ok(status)) return;
    /* the same run, killed at moments drawn from a fixed seed, resumed after each kill */
    df_rng rng;
    df_rng_init(&rng, 20240611);
    int mid_write = 0, k = 0;
    /* the planned kills, and more (up to as many again) until one has cut a checkpoint write short */
    for (; k < kills || (mid_write == 0 && k < 2 * kills); k++) {
        if (latest_step(out) >= steps) {   /* resumed runs reached the end: start afresh so kills can land */
            char rm[800];
            snprintf(rm, sizeof rm, "rm -rf '%s'", out);
            CHECK(system(rm) == 0, "cannot remove %s", out);
        }
        int resume = latest_step(out) >= 0;
        kill_args(args, &t, out, nsteps, resume);
        double u1 = df_rng_uniform(&rng), u2 = df_rng_uniform(&rng);
        double delay = (0.7 + 0.4 * u1) * start_ms + 0.3 * u2 * (run_ms - start_ms);
        c = spawn(args, 0);
        sleep_ms(delay);
        int done = waitpid(c.pid, &status, WNOHANG) == c.pid;
        if (!done) kill(c.pid, SIGKILL);
        if (!done) status = finish(&c, 60, err, sizeof err);
        else close(c.err_fd);
        char tmpname[900] = "";
        int tmps = count_tmp(out, tmpname, sizeof tmpname);
        mid_write += tmps > 0;
        char when[64];
        snprintf(when, sizeof when, "after kill %d", k + 1);
        long at = latest_step(out) >= 0 ? check_latest_whole(out, when) : -1;
        printf("    kill %d after %.0f ms (%s): latest = %ld, %d leftover%s%s\n", k + 1, delay,
               done ? "had already finished" : resume ? "resumed run" : "fresh run", at, tmps, tmps ? ", e.g. " : "",
               tmpname);
        if (done) CHECK(exited_ok(status), "a run that was not killed succeeded (wait status %d)", status);
    }
    printf("    %d of %d kills interrupted a write\n", mid_write, k);
    CHECK(mid_write > 0, "none of %d kills landed while a checkpoint was written", k);
    /* the last resume runs to the end */
    int resume = latest_step(out) >= 0;
    kill_args(args, &t, out, nsteps, resume);
    c = spawn(args, 0);
    status = finish(&c, 120, err, sizeof err);
    CHECK(exited_ok(status), "the final %s: %s", resume ? "resume" : "run", last_line(err, line, sizeof line));
    CHECK(check_latest_whole(out, "at the end") == steps, "the run ends at step %d (latest %ld)", steps, latest_step(out));
    char tmpname[900] = "";
    CHECK(count_tmp(out, tmpname, sizeof tmpname) == 0, "leftovers of interrupted writes are cleaned up: %s", tmpname);
    const char *files[] = {"unet_raw/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.safetensors",
                           "training_state.safetensors", "training_state.json"};
    for (int i = 0; i < DF_COUNTOF(files); i++) {
        char a[1100], b[1100];
        snprintf(a, sizeof a, "%s/checkpoint-%07d/%s", ref, steps, files[i]);
        snprintf(b, sizeof b, "%s/checkpoint-%07d/%s", out, steps, files[i]);
        int eq = i == 3 ? same_state(a, b) : same_bytes(a, b);
        if (eq) printf("    %s: identical to the uninterrupted run%s\n", files[i], i == 3 ? " (but its training time)" : "");
        CHECK(eq, "%s after %d kills differs from the uninterrupted run", files[i], k);
    }
    int lines = log_lines(out, &last);
    CHECK(lines == steps + 1 && last == steps, "loss.csv reads as one run: %d lines, last row %ld", lines, last);
}

/* Size of a file, or -1. */
static long file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

/* Lines of text that contain `what`. */
static int lines_with(const char *text, const char *what) {
    int n = 0;
    for (const char *l = text; *l;) {
        const char *nl = strchr(l, '\n');
        size_t len = nl ? (size_t)(nl - l) : strlen(l);
        const char *hit = strstr(l, what);
        if (hit && hit < l + len) n++;
        l += len + (nl ? 1 : 0);
    }
    return n;
}

TEST(train_fault_disk_full_keeps_checkpoint) {
    toy t;
    toy_init(&t);
    char out[700], err[8192], line[1024], path[1100], keep[1100];
    snprintf(out, sizeof out, "%s/disk-full", t.dir);
    const char *args[40];
    kill_args(args, &t, out, "2", 0);
    child c = spawn(args, 0);
    int status = finish(&c, 60, err, sizeof err);
    CHECK(exited_ok(status) && latest_step(out) == 2, "the first run: %s", last_line(err, line, sizeof line));
    if (latest_step(out) != 2) return;
    snprintf(path, sizeof path, "%s/checkpoint-0000002/unet_raw/diffusion_pytorch_model.safetensors", out);
    snprintf(keep, sizeof keep, "%s/kept-weights.safetensors", t.dir);
    char *bytes;
    size_t len;
    CHECK_OK(df_read_file(path, &bytes, &len));
    FILE *f = fopen(keep, "wb");
    if (f) fwrite(bytes, 1, len, f), fclose(f);
    free(bytes);
    /* a disk that takes only half a weights file: the next checkpoint cannot be written */
    long limit = (long)len / 2;
    kill_args(args, &t, out, NULL, 1);
    const char *more[40];
    int n = 0;
    for (; args[n]; n++) more[n] = args[n];
    more[n++] = "--steps", more[n++] = "4", more[n] = NULL;
    c = spawn(more, limit);
    status = finish(&c, 60, err, sizeof err);
    printf("    file-size limit %ld bytes: %s\n", limit, last_line(err, line, sizeof line));
    CHECK(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 1,
          "a failed write ends the run with status 1, not a signal (wait status %d)", status);
    CHECK(lines_with(err, "File too large") == 1 && strstr(line, "File too large"), "one error line, the last:\n%s", err);
    CHECK(strstr(line, "step 3") && strstr(line, "checkpoint-0000002 is kept") && strstr(line, ".safetensors") &&
              strstr(line, "File too large"),
          "the error names the step, the checkpoint kept and the file: %s", line);
    CHECK(latest_step(out) == 2, "latest still names checkpoint 2 (%ld)", latest_step(out));
    check_latest_whole(out, "after the full disk");
    CHECK(same_bytes(keep, path), "checkpoint 2's weights are untouched");
    char ck[1100], tmpname[900] = "";
    snprintf(ck, sizeof ck, "%s/checkpoint-0000003", out);
    CHECK(!exists(ck), "no checkpoint 3 was published");
    CHECK(count_tmp(out, tmpname, sizeof tmpname) == 0, "no half-written checkpoint left: %s", tmpname);
    /* a disk that cannot take another loss.csv row: a clear error too, and the log stays readable */
    snprintf(ck, sizeof ck, "%s/loss.csv", out);
    limit = file_size(ck) + 40;
    more[n - 2] = "--steps", more[n - 1] = "4";
    for (int i = 0; more[i]; i++)
        if (!strcmp(more[i], "--save-every")) more[i + 1] = "0";
    c = spawn(more, limit);
    status = finish(&c, 60, err, sizeof err);
    printf("    file-size limit %ld bytes: %s\n", limit, last_line(err, line, sizeof line));
    CHECK(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 1 && strstr(line, "loss.csv") &&
              strstr(line, "File too large"),
          "a full disk under loss.csv is one error naming it (wait status %d): %s", status, line);
    CHECK(latest_step(out) == 2, "latest still names checkpoint 2 (%ld)", latest_step(out));
    /* with room again the run resumes and finishes; the cut-off row is dropped */
    for (int i = 0; more[i]; i++)
        if (!strcmp(more[i], "--save-every")) more[i + 1] = "1";
    c = spawn(more, 0);
    status = finish(&c, 60, err, sizeof err);
    CHECK(exited_ok(status), "resumed with room: %s", last_line(err, line, sizeof line));
    CHECK(check_latest_whole(out, "after the disk is freed") == 4, "the run reaches step 4");
    long last;
    int lines = log_lines(out, &last);
    CHECK(lines == 5 && last == 4 && file_size(ck) > 0, "loss.csv has whole rows 1..4 (%d lines, last %ld)", lines, last);
    char *text;
    if (!df_read_file(ck, &text, &len)) {
        CHECK(len > 0 && text[len - 1] == '\n', "loss.csv ends with a whole row");
        int fields_ok = 1;
        for (char *l = text; *l;) {
            char *nl = strchr(l, '\n');
            int commas = 0;
            for (char *q = l; q < (nl ? nl : l + strlen(l)); q++) commas += *q == ',';
            fields_ok &= commas == 15;
            l = nl ? nl + 1 : l + strlen(l);
        }
        CHECK(fields_ok, "every loss.csv row has 16 fields:\n%s", text);
        free(text);
    }
}

/* What a run killed at the worst moments leaves behind, made by hand: a half-written checkpoint, one
 * published but not yet named by `latest`, a dangling latest.tmp and a stray loss.csv.tmp.<pid>. */
TEST(train_fault_leftovers_cleaned_on_resume) {
    toy t;
    toy_init(&t);
    char out[700], p[1100];
    snprintf(out, sizeof out, "%s/leftovers", t.dir);
    df_train_params prm;
    toy_params(&prm, &t, out);
    prm.max_steps = 2;
    prm.save_every = 1;
    CHECK_OK(df_train(&prm));
    const char *junk_dirs[] = {"checkpoint-0000003.tmp/unet", "checkpoint-0000004", "checkpoint-0000001.old.tmp"};
    for (int i = 0; i < DF_COUNTOF(junk_dirs); i++) {
        snprintf(p, sizeof p, "%s/%s", out, junk_dirs[i]);
        CHECK_OK(df_mkdir_p(p));
    }
    snprintf(p, sizeof p, "%s/checkpoint-0000004/training_state.json", out);
    FILE *f = fopen(p, "w");
    if (f) fputs("{\"step\": 99}", f), fclose(f);
    snprintf(p, sizeof p, "%s/loss.csv.tmp.12345", out);
    f = fopen(p, "w");
    if (f) fputs("step,epoch\n", f), fclose(f);
    snprintf(p, sizeof p, "%s/latest.tmp", out);
    CHECK(symlink("checkpoint-0000009", p) == 0, "symlink latest.tmp");
    df_train_params q;
    df_train_params_default(&q);
    q.out_dir = out, q.resume = 1, q.max_steps = 5, q.save_every = 1, q.sample_count = 0, q.sample_every = 0;
    q.keep_checkpoints = 100;
    CHECK_OK(df_train(&q));
    CHECK(check_latest_whole(out, "after resuming over leftovers") == 5, "the run reaches step 5");
    snprintf(p, sizeof p, "%s/checkpoint-0000004", out);
    double s4 = state_number(p, "step");
    CHECK(s4 == 4, "the stale checkpoint-0000004 was replaced by the real one (its step: %g)", s4);
    char tmpname[900] = "";
    CHECK(count_tmp(out, tmpname, sizeof tmpname) == 0, "leftovers removed: %s", tmpname);
}

/* ---- damaged training state ---------------------------------------------------------------------------- */

/* Set one field of a JSON object by dotted path ("rng.nbuf") to the JSON text `value` (NULL: remove). */
static char *json_with(const char *text, const char *field, const char *value) {
    cJSON *root = cJSON_Parse(text), *obj = root;
    char key[64];
    snprintf(key, sizeof key, "%s", field);
    char *dot = strchr(key, '.');
    if (dot) {
        *dot = 0;
        obj = cJSON_GetObjectItemCaseSensitive(root, key);
        memmove(key, dot + 1, strlen(dot + 1) + 1);
    }
    char *idx = strchr(key, '[');
    if (idx) {   /* "buf[0]" */
        *idx = 0;
        cJSON *arr = cJSON_GetObjectItemCaseSensitive(obj, key);
        cJSON_ReplaceItemInArray(arr, atoi(idx + 1), cJSON_Parse(value));
    } else if (value) {
        cJSON_DeleteItemFromObjectCaseSensitive(obj, key);
        cJSON_AddItemToObject(obj, key, cJSON_Parse(value));
    } else {
        cJSON_DeleteItemFromObjectCaseSensitive(obj, key);
    }
    char *out = cJSON_Print(root);
    cJSON_Delete(root);
    return out;
}

/* Resuming `out` must fail naming `file_part` and `expect`, and change nothing in the checkpoint. */
static void check_resume_refused(const df_train_params *base, const char *out, const char *file_part,
                                 const char *expect, const char *what) {
    df_train_params p = *base;
    p.resume = 1;
    p.max_steps = 4;
    df_status st = df_train(&p);
    CHECK(st != DF_OK, "%s: resumed anyway", what);
    const char *m = df_error();
    CHECK(strstr(m, file_part) && strstr(m, expect), "%s: message lacks \"%s\" / \"%s\": %s", what, file_part, expect, m);
    CHECK(latest_step(out) == 2, "%s: latest moved to %ld", what, latest_step(out));
    char ck[1100];
    snprintf(ck, sizeof ck, "%s/checkpoint-0000003", out);
    CHECK(!exists(ck), "%s: a checkpoint was written", what);
}

TEST(train_fault_bad_training_state_refused) {
    fault_off();
    toy t;
    toy_init(&t);
    char out[700], js[800], sts[800], unet[800];
    snprintf(out, sizeof out, "%s/bad-state", t.dir);
    df_train_params p;
    toy_params(&p, &t, out);
    p.max_steps = 2;
    CHECK_OK(df_train(&p));
    p.max_steps = 0;
    snprintf(js, sizeof js, "%s/checkpoint-0000002/training_state.json", out);
    snprintf(sts, sizeof sts, "%s/checkpoint-0000002/training_state.safetensors", out);
    snprintf(unet, sizeof unet, "%s/checkpoint-0000002/unet", out);
    char *good = NULL, *good_st = NULL;
    size_t n, n_st;
    if (df_read_file(js, &good, &n) || df_read_file(sts, &good_st, &n_st)) {
        CHECK(0, "no training state written: %s", df_error());
        return;
    }
    static const struct { const char *field, *value, *expect; } cases[] = {
        {"version", "2", "version 2"},          {"version", NULL, "\"version\""},
        {"step", "-1", "\"step\""},             {"step", "1e300", "\"step\""},
        {"step", "2.5", "\"step\""},            {"batch_size", "0", "\"batch_size\""},
        {"batch_size", "1e9", "\"batch_size\""}, {"image_size", "100000", "\"image_size\""},
        {"rng.nbuf", "7", "\"nbuf\""},          {"rng.buf[0]", "-1", "\"rng.buf\""},
        {"rng.buf[1]", "1e20", "\"rng.buf\""},  {"rng.counter", "\"-5\"", "\"rng.counter\""},
        {"seed", "\"abc\"", "\"seed\""},        {"seed", "12", "\"seed\""},
        {"optimizer.decay", "9", "\"decay\""},  {"optimizer.kind", "\"lion\"", "\"optimizer.kind\""},
        {"optimizer.lr", "-1", "\"lr\""},       {"data", "\"\"", "\"data\""},
        {"rng", "[]", "\"rng\""},               {"position", "1000000", "position 1000000"},
    };
    for (int i = 0; i < DF_COUNTOF(cases); i++) {
        char *bad = json_with(good, cases[i].field, cases[i].value);
        FILE *f = fopen(js, "wb");
        fputs(bad, f);
        fclose(f);
        char what[120];
        snprintf(what, sizeof what, "%s = %s", cases[i].field, cases[i].value ? cases[i].value : "(removed)");
        check_resume_refused(&p, out, "training_state.json", cases[i].expect, what);
        free(bad);
    }
    FILE *f = fopen(js, "wb");
    fputs("{\"version\": 1, \"step\": ", f);   /* cut short */
    fclose(f);
    check_resume_refused(&p, out, "training_state.json", "not a JSON object", "truncated JSON");
    f = fopen(js, "wb");
    fwrite(good, 1, n, f);
    fclose(f);

    /* optimizer moments of the wrong size, and a NaN second moment */
    st_file sf;
    if (st_open(sts, &sf) == DF_OK) {
        const st_tensor *tm = st_find(&sf, "optimizer.m"), *tv = st_find(&sf, "optimizer.v");
        size_t np = tm ? (size_t)st_numel(tm) : 0;
        float *m = malloc(sizeof(float) * (np + 1)), *v = malloc(sizeof(float) * (np + 1));
        if (tm && tv && m && v && !st_read_f32(&sf, tm, m, np) && !st_read_f32(&sf, tv, v, np)) {
            st_entry e[2] = {{.name = "optimizer.m", .ndim = 1, .shape = {(int64_t)np - 1}, .f32 = m},
                             {.name = "optimizer.v", .ndim = 1, .shape = {(int64_t)np}, .f32 = v}};
            CHECK_OK(st_write(sts, e, 2, NULL, 0));
            check_resume_refused(&p, out, "training_state.safetensors", "wrong-sized optimizer.m", "short moments");
            e[0].shape[0] = (int64_t)np;
            v[np / 2] = NAN;
            CHECK_OK(st_write(sts, e, 2, NULL, 0));
            check_resume_refused(&p, out, "training_state.safetensors", "optimizer.v holds nan", "a NaN moment");
        } else {
            CHECK(0, "training_state.safetensors lacks the moments");
        }
        free(m), free(v);
        st_close(&sf);
    }
    f = fopen(sts, "wb");
    fwrite(good_st, 1, n_st, f);
    fclose(f);

    /* the EMA weights (unet/) of a different model */
    df_unet_config c;
    df_unet_config_default(&c);
    c.sample_size = 8, c.in_channels = c.out_channels = 1, c.num_levels = 2;
    c.block_out_channels[0] = 8, c.block_out_channels[1] = 8;
    c.down_attn[0] = c.down_attn[1] = c.up_attn[0] = c.up_attn[1] = 0;
    c.layers_per_block = 1, c.norm_num_groups = 4;
    df_model *other = NULL, *keep = NULL;
    char unet_keep[900];
    snprintf(unet_keep, sizeof unet_keep, "%s.keep", unet);
    CHECK(rename(unet, unet_keep) == 0, "moved unet/ aside");
    CHECK_OK(df_model_create(&c, 1, &other));
    if (other) CHECK_OK(df_model_save(other, unet));
    check_resume_refused(&p, out, "unet", "config differs", "EMA weights of another model");
    df_model_free(other);
    df_model_free(keep);
    char cmd[3000];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mv '%s' '%s'", unet, unet_keep, unet);
    CHECK(system(cmd) == 0, "restored unet/");

    /* restored: the run resumes and finishes */
    df_train_params q = p;
    q.resume = 1;
    q.max_steps = 4;
    CHECK_OK(df_train(&q));
    CHECK(latest_step(out) == 4, "resumed to step 4, latest is %ld", latest_step(out));
    free(good), free(good_st);
}
