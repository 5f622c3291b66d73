/* Benchmarks: forward and forward+backward throughput of the U-Net presets, with the FLOPs counted from
 * the tape, printed as a table. Usage: bench_unet [--batch N] [--iters K] [--preset NAME] [--threads T] */
#define _POSIX_C_SOURCE 200809L
#include "diffuse.h"
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int bench_preset(const char *preset, int batch, int iters) {
    df_unet_config cfg;
    df_model *m;
    if (df_unet_config_preset(preset, &cfg) || df_model_create(&cfg, 1, &m)) {
        fprintf(stderr, "bench: %s\n", df_error());
        return 1;
    }
    int s = cfg.sample_size;
    size_t nx = (size_t)batch * cfg.in_channels * s * s;
    float *x = malloc(nx * 4), *noise = malloc(nx * 4), *eps = malloc(nx * 4), *t = malloc((size_t)batch * 4);
    df_rng r;
    df_rng_init(&r, 3);
    df_rng_fill_normal(&r, x, nx);
    df_rng_fill_normal(&r, noise, nx);
    for (int i = 0; i < batch; i++) t[i] = (float)(df_rng_u32(&r) % 1000);
    double flops = df_model_flops(m, s, s);

    /* warm up (plans memory), then time */
    df_model_forward(m, batch, s, s, x, t, NULL, eps);
    double fwd = 1e30, t0;
    for (int i = 0; i < iters; i++) {   /* the best of iters: least disturbed by other work */
        t0 = now();
        df_model_forward(m, batch, s, s, x, t, NULL, eps);
        fwd = fmin(fwd, now() - t0);
    }
    float loss;
    df_model_loss_grad(m, batch, s, s, x, t, NULL, noise, NULL, &loss, NULL);
    double train = 1e30;
    for (int i = 0; i < iters; i++) {
        t0 = now();
        df_model_loss_grad(m, batch, s, s, x, t, NULL, noise, NULL, &loss, NULL);
        train = fmin(train, now() - t0);
    }
    if (getenv("DIFFUSE_PROFILE")) {   /* where the time goes, per op kind */
        int k = df_op_count();
        double *tab = calloc(2 * (size_t)k, sizeof(double));
        df_model_set_profile(m, tab);
        df_model_forward(m, batch, s, s, x, t, NULL, eps);
        df_model_loss_grad(m, batch, s, s, x, t, NULL, noise, NULL, &loss, NULL);
        df_model_set_profile(m, NULL);
        for (int i = 0; i < k; i++)
            if (tab[i] + tab[k + i] > 0)
                fprintf(stderr, "  %-12s forward %7.1f ms  backward %7.1f ms\n", df_op_name(i), 500 * tab[i], 1e3 * tab[k + i]);
        free(tab);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("| %-9s | %5d | %9.3f | %9.1f | %10.2f | %11.1f | %11.1f | %13.1f | %7.0f |\n", preset, batch, flops / 1e9,
           batch / fwd, 1e3 * fwd / batch, batch * flops / fwd / 1e9, batch / train,
           3 * batch * flops / train / 1e9, ru.ru_maxrss / 1024.0);
    fflush(stdout);
    free(x), free(noise), free(eps), free(t);
    df_model_free(m);
    return 0;
}

int main(int argc, char **argv) {
    df_prefer_passive_threads(argv);
    int batch = 64, iters = 3;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc) batch = atoi(argv[++i]);
        else if (strcmp(argv[i], "--iters") == 0 && i + 1 < argc) iters = atoi(argv[++i]);
        else if (strcmp(argv[i], "--preset") == 0 && i + 1 < argc) only = argv[++i];
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) df_set_num_threads(atoi(argv[++i]));
        else {
            fprintf(stderr, "usage: bench_unet [--batch N] [--iters K] [--preset NAME] [--threads T]\n");
            return 2;
        }
    }
    if (batch < 1 || iters < 1) {
        fprintf(stderr, "bench: --batch and --iters must be positive\n");
        return 2;
    }
    printf("diffuse %s benchmark, %d threads (training = forward + MSE + backward, no optimizer step)\n\n",
           DIFFUSE_VERSION, df_get_num_threads());
    printf("| model     | batch | GFLOP/img | fwd img/s | fwd ms/img | fwd GFLOP/s | train img/s | train GFLOP/s | peak MB |\n");
    printf("|-----------|-------|-----------|-----------|------------|-------------|-------------|---------------|---------|\n");
    const char *presets[] = {"fmnist-s", "cifar10"};
    for (int i = 0; i < 2; i++) {
        if (only && strcmp(only, presets[i]) != 0) continue;
        int b = strcmp(presets[i], "cifar10") == 0 && !only ? (batch > 16 ? 16 : batch) : batch;
        if (bench_preset(presets[i], b, iters)) return 1;
    }
    return 0;
}
