/* The benchmark: diffuse against PyTorch (bench/torch_unet.py, the same UNet2DModel on Debian's
 * python3-torch) on this machine, in one run, for the fmnist-s and CIFAR-10 (google/ddpm-cifar10-32)
 * models: training, DDIM sampling, forward time, peak memory, FLOPs and the fraction of the measured
 * arithmetic peak. Every measurement runs in its own process, so peak memory belongs to it alone.
 * Before timing, the fast kernels are checked against the reference path on each model.
 *
 * usage: bench_unet [--models fmnist-s,cifar10] [--threads T] [--iters K] [--steps S] [--no-torch]
 *                   [--scaling] [--svg FILE] [--profile]
 */
#define _POSIX_C_SOURCE 200809L
#include "diffuse.h"
#include "internal.h"
#include "../cli/restart.h"
#include "bench.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int threads = 2, iters = 3, steps = 50, with_torch = 1, profile = 0;
static char torch_env[32] = "";   /* "env -u OMP_WAIT_POLICY" when we set it, not the user */

/* ---- the machine's arithmetic peak: independent FMA chains on every thread ----------------------- */

typedef float v8 __attribute__((vector_size(32)));
typedef float v16 __attribute__((vector_size(64)));
#define FMA_CHAINS(V)                                                                              \
    const V b = (V){0} + 0.9999f, c = (V){0} + 1e-4f;                                              \
    V a0 = b, a1 = c, a2 = b, a3 = c, a4 = b, a5 = c, a6 = b, a7 = c, a8 = b, a9 = c, a10 = b, a11 = c; \
    for (long i = 0; i < reps; i++) {                                                              \
        a0 = a0 * b + c, a1 = a1 * b + c, a2 = a2 * b + c, a3 = a3 * b + c, a4 = a4 * b + c;        \
        a5 = a5 * b + c, a6 = a6 * b + c, a7 = a7 * b + c, a8 = a8 * b + c, a9 = a9 * b + c;        \
        a10 = a10 * b + c, a11 = a11 * b + c;                                                      \
        __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3), "+x"(a4), "+x"(a5), "+x"(a6), \
                         "+x"(a7), "+x"(a8), "+x"(a9), "+x"(a10), "+x"(a11));                     \
    }                                                                                              \
    V t = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;                             \
    return t[0];

__attribute__((target("avx2,fma"))) static float fma_avx2(long reps) { FMA_CHAINS(v8) }
__attribute__((target("avx512f"))) static float fma_avx512(long reps) { FMA_CHAINS(v16) }

static result peak_job(const void *arg) {
    (void)arg;
    result r = {0};
    int wide = __builtin_cpu_supports("avx512f");
    if (!wide && !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) return r;
    const long reps = 20000000;
    const double flops_per_rep = 12.0 * 2 * (wide ? 16 : 8);
    double best = 0;
    for (int k = 0; k < 3; k++) {
        double t0 = now(), sink = 0;
#pragma omp parallel num_threads(threads) reduction(+ : sink)
        sink += wide ? fma_avx512(reps) : fma_avx2(reps);
        double rate = threads * reps * flops_per_rep / (now() - t0) / 1e9;
        best = fmax(best, rate + 0 * sink);
    }
    r.value = best;
    r.ok = 1;
    return r;
}

/* ---- our measurements ------------------------------------------------------------------------------ */

typedef struct {
    const char *preset;
    int batch, size, mode;   /* mode: 0 train, 1 sample, 2 forward, 3 check */
} job;

static df_model *make_model(const job *j, df_unet_config *cfg) {
    df_model *m = NULL;
    omp_set_num_threads(threads);
    if (df_unet_config_preset(j->preset, cfg) || df_model_create(cfg, 1, &m)) {
        fprintf(stderr, "bench: %s\n", df_error());
        return NULL;
    }
    df_model_set_threads(m, threads);
    return m;
}

static void print_profile(df_model *m, int k, double *tab) {
    df_model_set_profile(m, NULL);
    for (int i = 0; i < k; i++)
        if (tab[i] + tab[k + i] > 0)
            fprintf(stderr, "    %-12s forward %8.1f ms  backward %8.1f ms\n", df_op_name(i), 1e3 * tab[i], 1e3 * tab[k + i]);
}

static result ours_job(const void *arg) {
    const job *j = arg;
    result r = {0};
    df_unet_config cfg;
    df_model *m = make_model(j, &cfg);
    if (!m) return r;
    int s = j->size ? j->size : cfg.sample_size, n = j->batch;
    size_t nx = (size_t)n * cfg.in_channels * s * s;
    float *x = malloc(nx * 4), *noise = malloc(nx * 4), *eps = malloc(nx * 4), *t = malloc((size_t)n * 4);
    df_rng rng;
    df_rng_init(&rng, 3);
    df_rng_fill_normal(&rng, x, nx);
    df_rng_fill_normal(&rng, noise, nx);
    for (int i = 0; i < n; i++) t[i] = (float)(df_rng_u32(&rng) % 1000);
    int k = df_op_count();
    double *tab = profile ? calloc(2 * (size_t)k, sizeof(double)) : NULL;
    r.sec = 1e30;
    r.ok = 1;
    if (j->mode == 0) {   /* training step: forward, loss, backward, clipping, AdamW */
        df_optim_params op;
        df_optim_params_default(&op);
        df_optimizer opt;
        if (df_optimizer_init(&opt, &op, df_model_num_params(m))) r.ok = 0;
        df_model_set_train(m, 1, &rng);
        for (int it = 0; it <= iters && r.ok; it++) {
            if (it == iters && tab) df_model_set_profile(m, tab);
            double t0 = now();
            float loss;
            df_model_zero_grad(m);
            if (df_model_loss_grad(m, n, s, s, x, t, NULL, noise, NULL, &loss, NULL)) r.ok = 0;
            df_optimizer_step(&opt, df_model_params(m), df_model_grads(m), NULL);
            if (it > 0 && it < iters + !tab) r.sec = fmin(r.sec, now() - t0);   /* 0 warms up */
        }
        if (r.ok) df_optimizer_free(&opt);
    } else if (j->mode == 1) {   /* DDIM sampling from noise */
        df_schedule sch;
        df_schedule_init_default(&sch);
        df_sampler_params sp;
        df_sampler_params_default(&sp);
        sp.steps = steps;
        df_model_denoiser dn = {.model = m, .h = s, .w = s, .labels = NULL};
        df_model_denoise(&dn, n, x, t, eps);   /* warm up: plans memory and kernels */
        if (tab) df_model_set_profile(m, tab);
        double t0 = now();
        if (df_sample(&sch, &sp, df_model_denoise, &dn, n, (size_t)cfg.in_channels * s * s, &rng, x)) r.ok = 0;
        r.sec = now() - t0;
        df_schedule_free(&sch);
    } else if (j->mode == 2) {   /* forward */
        for (int it = 0; it <= iters; it++) {
            if (it == iters && tab) df_model_set_profile(m, tab);
            double t0 = now();
            if (df_model_forward(m, n, s, s, x, t, NULL, eps)) r.ok = 0;
            if (it > 0 && it < iters + !tab) r.sec = fmin(r.sec, now() - t0);
        }
    } else {   /* check: the fast kernels against the reference path */
        r.value = kernels_disagree(m, n, s, x, t, noise, &r.ok);
        r.sec = 0;
    }
    if (tab) {
        fprintf(stderr, "  %s %s batch %d, last pass by op:\n", j->preset, (const char *[]){"train", "sample", "forward", "check"}[j->mode], n);
        print_profile(m, k, tab);
        free(tab);
    }
    free(x), free(noise), free(eps), free(t);
    df_model_free(m);
    return r;
}

/* ---- PyTorch's measurements ----------------------------------------------------------------------- */

static char bench_dir[4096] = "bench";

static result torch_run(const char *preset, const char *mode, int batch, int size, int nthreads) {
    result r = {0};
    if (!with_torch) return r;
    df_unet_config cfg;
    char cfgpath[256], cmd[8192];
    snprintf(cfgpath, sizeof cfgpath, "/tmp/diffuse-bench-%d-%s.json", (int)getpid(), preset);
    if (df_unet_config_preset(preset, &cfg) || df_unet_config_save(&cfg, cfgpath)) return r;
    snprintf(cmd, sizeof cmd, "%s /usr/bin/python3 %s/torch_unet.py %s --mode %s --batch %d --threads %d --iters %d --steps %d --size %d",
             torch_env, bench_dir, cfgpath, mode, batch, nthreads, iters, steps, size);
    r = torch_measure(cmd);
    remove(cfgpath);
    return r;
}

/* ---- the tables ------------------------------------------------------------------------------------ */

static int bench_model(const char *preset, double peak) {
    df_unet_config cfg;
    df_model *probe;
    if (df_unet_config_preset(preset, &cfg) || df_model_create(&cfg, 1, &probe)) return 1;
    double gflop = df_model_flops(probe, 0, 0) / 1e9;
    df_model_free(probe);
    int s = cfg.sample_size;

    job chk = {preset, 2, s, 3};
    result c = in_child(ours_job, &chk);
    if (!c.ok || !(c.value < 1e-4)) {
        printf("\nbench: %s: the fast kernels disagree with the reference path (worst relative difference %.3g)\n",
               preset, c.value);
        return 1;
    }
    fprintf(stderr, "%s: fast kernels vs reference path, forward and gradients: worst relative difference %.2g\n",
            preset, c.value);

    int batches[2] = {64, 128};
    for (int b = 0; b < 2; b++) {
        job jt = {preset, batches[b], s, 0};
        result o = in_child(ours_job, &jt), t = torch_run(preset, "train", batches[b], s, threads);
        char what[64];
        snprintf(what, sizeof what, "training, batch %d (img/s)", batches[b]);
        row(preset, what, batches[b] / o.sec, t.ok ? batches[b] / t.sec : 0, 1, "%.2f");
        snprintf(what, sizeof what, "  fraction of peak (3 x forward FLOPs)");
        row("", what, 100 * 3 * gflop * batches[b] / o.sec / peak, t.ok ? 100 * 3 * gflop * batches[b] / t.sec / peak : 0, 1,
            "%.0f%%");
        snprintf(what, sizeof what, "  peak memory (MB)");
        row("", what, o.peak_mb, t.ok ? t.peak_mb : 0, 0, "%.0f");
    }
    job js = {preset, 64, s, 1};
    result o = in_child(ours_job, &js), t = torch_run(preset, "sample", 64, s, threads);
    char what[64];
    snprintf(what, sizeof what, "sampling, DDIM %d steps, batch 64 (img/s)", steps);
    row(preset, what, 64 / o.sec, t.ok ? 64 / t.sec : 0, 1, "%.3f");
    row("", "  fraction of peak", 100 * gflop * 64 * steps / o.sec / peak, t.ok ? 100 * gflop * 64 * steps / t.sec / peak : 0, 1,
        "%.0f%%");
    row("", "  peak memory (MB)", o.peak_mb, t.ok ? t.peak_mb : 0, 0, "%.0f");
    job jf = {preset, 64, s, 2};
    o = in_child(ours_job, &jf);
    t = torch_run(preset, "forward", 64, s, threads);
    row(preset, "forward, batch 64 (ms/img)", 1e3 * o.sec / 64, t.ok ? 1e3 * t.sec / 64 : 0, 0, "%.2f");
    row("", "  GFLOP per image (forward)", gflop, 0, 1, "%.3f");
    return 0;
}

/* Throughput against batch size, image size and threads (fmnist-s): a table, and an SVG if asked. */
static void scaling(const char *svg) {
    struct {
        const char *axis;
        int batch, size, nthreads;
    } pts[] = {{"batch", 16, 28, 2}, {"batch", 32, 28, 2}, {"batch", 64, 28, 2}, {"batch", 128, 28, 2},
               {"size", 32, 28, 2},  {"size", 32, 32, 2},  {"size", 32, 64, 2},  {"threads", 64, 28, 1},
               {"threads", 64, 28, 2}};
    const int np = DF_COUNTOF(pts);
    double v[9][4];   /* ours train, torch train, ours forward, torch forward (img/s) */
    printf("\n| varied  | batch | size | threads | train img/s | PyTorch | ratio | forward img/s | PyTorch | ratio |\n");
    printf("|---------|-------|------|---------|-------------|---------|-------|---------------|---------|-------|\n");
    int saved = threads;
    for (int i = 0; i < np; i++) {
        threads = pts[i].nthreads;
        job jt = {"fmnist-s", pts[i].batch, pts[i].size, 0}, jf = {"fmnist-s", pts[i].batch, pts[i].size, 2};
        result a = in_child(ours_job, &jt), b = torch_run("fmnist-s", "train", pts[i].batch, pts[i].size, threads);
        result c = in_child(ours_job, &jf), d = torch_run("fmnist-s", "forward", pts[i].batch, pts[i].size, threads);
        v[i][0] = pts[i].batch / a.sec, v[i][1] = b.ok ? pts[i].batch / b.sec : 0;
        v[i][2] = pts[i].batch / c.sec, v[i][3] = d.ok ? pts[i].batch / d.sec : 0;
        printf("| %-7s | %5d | %4d | %7d | %11.1f | %7.1f | %5.2f | %13.1f | %7.1f | %5.2f |\n", pts[i].axis, pts[i].batch,
               pts[i].size, threads, v[i][0], v[i][1], v[i][1] > 0 ? v[i][0] / v[i][1] : 0, v[i][2], v[i][3],
               v[i][3] > 0 ? v[i][2] / v[i][3] : 0);
        fflush(stdout);
    }
    threads = saved;
    if (!svg) return;
    FILE *f = fopen(svg, "w");
    if (!f) return;
    /* three panels of grouped bars: training and forward throughput, diffuse and PyTorch */
    const int W = 960, H = 360, pw = 300, top = 50, ph = 240;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    const char *col[4] = {"#1f5fa8", "#9dbbe0", "#c0392b", "#f0aaa0"};
    const char *name[4] = {"diffuse train", "PyTorch train", "diffuse forward", "PyTorch forward"};
    for (int k = 0; k < 4; k++)
        fprintf(f, "<rect x=\"%d\" y=\"8\" width=\"12\" height=\"12\" fill=\"%s\"/><text x=\"%d\" y=\"19\">%s</text>\n",
                20 + k * 170, col[k], 36 + k * 170, name[k]);
    const char *axes[3] = {"batch", "size", "threads"};
    for (int p = 0; p < 3; p++) {
        int x0 = 20 + p * (pw + 10), first = -1, cnt = 0;
        double mx = 0;
        for (int i = 0; i < np; i++)
            if (!strcmp(pts[i].axis, axes[p])) {
                if (first < 0) first = i;
                cnt++;
                for (int k = 0; k < 4; k++) mx = fmax(mx, v[i][k]);
            }
        fprintf(f, "<text x=\"%d\" y=\"%d\" font-weight=\"bold\">img/s against %s (fmnist-s)</text>\n", x0, top - 10,
                axes[p]);
        fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", x0, top + ph, x0 + pw, top + ph);
        double gw = (double)pw / cnt;
        for (int i = first; i < first + cnt; i++) {
            double gx = x0 + (i - first) * gw;
            for (int k = 0; k < 4; k++) {
                double h = mx > 0 ? v[i][k] / mx * (ph - 20) : 0, bx = gx + 8 + k * (gw - 16) / 4;
                fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>\n", bx, top + ph - h,
                        (gw - 16) / 4 - 1, h, col[k]);
                fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"9\" text-anchor=\"middle\">%.0f</text>\n",
                        bx + (gw - 16) / 8, top + ph - h - 3, v[i][k]);
            }
            int label = p == 0 ? pts[i].batch : p == 1 ? pts[i].size : pts[i].nthreads;
            fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%d</text>\n", gx + gw / 2, top + ph + 16, label);
        }
    }
    fprintf(f, "</svg>\n");
    fclose(f);
}

int main(int argc, char **argv) {
    if (!getenv("OMP_WAIT_POLICY")) setenv("DIFFUSE_BENCH_TORCH_DEFAULT_ENV", "1", 1);
    cli_prefer_passive_threads(argv);
    if (getenv("DIFFUSE_BENCH_TORCH_DEFAULT_ENV")) snprintf(torch_env, sizeof torch_env, "env -u OMP_WAIT_POLICY");
    const char *models = "fmnist-s,cifar10", *svg = NULL;
    int do_scaling = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--models") && i + 1 < argc) models = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--svg") && i + 1 < argc) svg = argv[++i];
        else if (!strcmp(argv[i], "--no-torch")) with_torch = 0;
        else if (!strcmp(argv[i], "--scaling")) do_scaling = 1;
        else if (!strcmp(argv[i], "--profile")) profile = 1;
        else {
            fprintf(stderr, "usage: bench_unet [--models fmnist-s,cifar10] [--threads T] [--iters K] [--steps S] "
                            "[--no-torch] [--scaling] [--svg FILE] [--profile]\n");
            return 2;
        }
    }
    if (threads < 1 || iters < 1 || steps < 1) {
        fprintf(stderr, "bench: --threads, --iters and --steps must be positive\n");
        return 2;
    }
    const char *slash = strrchr(argv[0], '/');
    if (slash && access("bench/torch_unet.py", R_OK) != 0)
        snprintf(bench_dir, sizeof bench_dir, "%.*s/../bench", (int)(slash - argv[0]), argv[0]);
    if (with_torch && access("/usr/bin/python3", X_OK) != 0) with_torch = 0;

    result pk = in_child(peak_job, NULL);
    double peak = pk.ok ? pk.value : 0;
    char cpu[256] = "unknown CPU";
    FILE *ci = fopen("/proc/cpuinfo", "r");
    for (char line[512]; ci && fgets(line, sizeof line, ci);)
        if (!strncmp(line, "model name", 10)) {
            char *c = strchr(line, ':');
            snprintf(cpu, sizeof cpu, "%.200s", c ? c + 2 : line);
            cpu[strcspn(cpu, "\n")] = 0;
            break;
        }
    if (ci) fclose(ci);
    printf("diffuse %s against PyTorch, float32, %d threads; %s, measured FMA peak %.0f GFLOP/s (%s) on %d threads\n"
           "times are the best of %d after a warm-up; PyTorch runs %s\n\n",
           DIFFUSE_VERSION, threads, cpu, peak, __builtin_cpu_supports("avx512f") ? "AVX-512" : "AVX2", threads, iters,
           with_torch ? "bench/torch_unet.py (tests/ref/unet_ref.py) on python3-torch" : "(skipped)");
    printf("| model     | measure                                    |   diffuse |   PyTorch | speedup |\n");
    printf("|-----------|--------------------------------------------|-----------|-----------|---------|\n");
    char list[256];
    snprintf(list, sizeof list, "%s", models);
    for (char *save, *name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save))
        if (bench_model(name, peak)) return 1;
    if (do_scaling) scaling(svg);
    return 0;
}
