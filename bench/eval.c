/* The cost of evaluation without sampling: features and FD/KID/precision-recall of 10,000 given Fashion-MNIST
 * images (the training split's first 10,000, written as a .npy like generated images) against the cached
 * test-split reference, through df_evaluate as `diffuse eval IMAGES.npy` runs it; the stages timed apart.
 * Usage: bench_eval [--features DIR] [--n N] [--runs R] */
#define _POSIX_C_SOURCE 200809L
#include "diffuse.h"
#include "internal.h"
#include "../cli/restart.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *isa(void) {
    return __builtin_cpu_supports("avx512f") ? "AVX-512" : __builtin_cpu_supports("avx2") ? "AVX2" : "SSE";
}

int main(int argc, char **argv) {
    cli_prefer_passive_threads(argv);
    const char *features = "models/fmnist-features";
    int n = 10000, runs = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--features")) features = argv[i + 1];
        else if (!strcmp(argv[i], "--n")) n = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--runs")) runs = atoi(argv[i + 1]);
    }
    df_dataset *d;
    if (df_dataset_open("fashion-mnist", 0, 0, &d)) {
        fprintf(stderr, "%s\n", df_error());
        return 1;
    }
    const size_t dim = 28 * 28;
    float *x = malloc(sizeof(float) * (size_t)n * dim);
    for (int i = 0; i < n; i++) df_dataset_get(d, i, 0, x + (size_t)i * dim);
    df_dataset_free(d);
    const char *npy = "/tmp/bench-eval-images.npy";
    if (df_npy_save_images(npy, x, n, 1, 28, 28)) {
        fprintf(stderr, "%s\n", df_error());
        return 1;
    }
    printf("evaluation of %d given 28x28 images, %s, %d threads, features %s (best of %d runs)\n", n, isa(),
           omp_get_max_threads(), features, runs);
    printf("| metrics | total (s) | features (s) | FD + 100 bootstraps (s) | KID, 100 subsets (s) | precision/recall (s) |\n");
    printf("|---|---|---|---|---|---|\n");
    const char *sets[2] = {"fd,kid", "fd,kid,pr"};
    for (int s = 0; s < 2; s++) {
        double best[5] = {1e30, 1e30, 1e30, 1e30, 1e30};
        for (int r = 0; r < runs; r++) {
            df_eval_params p;
            df_eval_params_default(&p);
            p.images = npy, p.features = features;
            df_metrics_parse(sets[s], &p.metrics);
            df_eval_result res;
            if (df_evaluate(&p, &res)) {
                fprintf(stderr, "%s\n", df_error());
                return 1;
            }
            double t[5] = {res.seconds, res.feature_seconds, res.fd.seconds, res.kid.seconds,
                           res.precision.have ? res.precision.seconds : 0};
            for (int k = 0; k < 5; k++) best[k] = t[k] < best[k] ? t[k] : best[k];
            if (r == 0 && s == 1)
                printf("(FD %.4f +- %.4f, KID %.6f, precision %.3f, recall %.3f against %s)\n", res.fd.value, res.fd.se,
                       res.kid.value, res.precision.value, res.recall.value, res.ref_desc);
        }
        printf("| %s | %.2f | %.2f | %.2f | %.2f | %.2f |\n", sets[s], best[0], best[1], best[2], best[3], best[4]);
    }
    free(x);
    remove(npy);
    return 0;
}
