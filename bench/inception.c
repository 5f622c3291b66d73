/* The Inception benchmark: FID Inception-v3 pool3 features per second, diffuse against PyTorch
 * (bench/torch_inception.py, the same network on Debian's python3-torch), same weights and images, one run.
 *
 * usage: bench_inception [--images N] [--size S] [--threads T] [--iters K] [--no-torch]
 *   N images (64) of S x S RGB (32), resized to 299x299 by both; times are the best of K (3) after a
 *   warm-up. Random weights (the published ones are not needed to time the network). */
#define _POSIX_C_SOURCE 200809L
#include "diffuse.h"
#include "inception.h"
#include "safetensors.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void cpu_info(char *model, size_t cap, const char **isa) {
    snprintf(model, cap, "unknown CPU");
    int avx512 = 0, avx2 = 0;
    FILE *f = fopen("/proc/cpuinfo", "r");
    for (char line[4096]; f && fgets(line, sizeof line, f);) {
        if (!strncmp(line, "model name", 10) && !strcmp(model, "unknown CPU")) {
            char *c = strchr(line, ':');
            snprintf(model, cap, "%.200s", c ? c + 2 : line);
            model[strcspn(model, "\n")] = 0;
        }
        if (!strncmp(line, "flags", 5)) {
            avx512 |= strstr(line, " avx512f") != NULL;
            avx2 |= strstr(line, " avx2") != NULL;
        }
    }
    if (f) fclose(f);
    *isa = avx512 ? "AVX-512 (avx512f)" : avx2 ? "AVX2" : "neither AVX2 nor AVX-512";
}

int main(int argc, char **argv) {
    int n = 64, size = 32, threads = 2, iters = 3, with_torch = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--images") && i + 1 < argc) n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--size") && i + 1 < argc) size = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-torch")) with_torch = 0;
        else {
            fprintf(stderr, "usage: bench_inception [--images N] [--size S] [--threads T] [--iters K] [--no-torch]\n");
            return 2;
        }
    }
    if (n < 1 || size < 1 || size > DF_MAX_SIZE || threads < 1 || iters < 1) {
        fprintf(stderr, "bench_inception: --images, --size, --threads and --iters must be positive\n");
        return 2;
    }
    char bench_dir[4096] = "bench";
    const char *slash = strrchr(argv[0], '/');
    if (slash && access("bench/torch_inception.py", R_OK) != 0)
        snprintf(bench_dir, sizeof bench_dir, "%.*s/../bench", (int)(slash - argv[0]), argv[0]);
    if (with_torch && access("/usr/bin/python3", X_OK) != 0) with_torch = 0;
    omp_set_num_threads(threads);   /* every OpenMP team of this program, the Inception net's included */

    char dir[64] = "/tmp/diffuse-bench-inception-XXXXXX", wpath[128], ipath[128], tpath[128];
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(wpath, sizeof wpath, "%s/weights.safetensors", dir);
    snprintf(ipath, sizeof ipath, "%s/images.safetensors", dir);
    snprintf(tpath, sizeof tpath, "%s/torch.f32", dir);
    const size_t in = (size_t)3 * size * size, nf = (size_t)n * DF_INCEPTION_FEATURES;
    float *x = malloc(sizeof(float) * n * in), *f = malloc(sizeof(float) * nf), *tf = malloc(sizeof(float) * nf);
    if (!x || !f || !tf) return 1;
    df_rng r;
    df_rng_init(&r, 1);
    df_rng_fill_uniform(&r, x, n * in, -1, 1);
    st_entry img = {.name = "images", .ndim = 4, .shape = {n, 3, size, size}, .f32 = x};
    df_inception *net;
    if (df_inception_write_random(wpath, 0) || st_write(ipath, &img, 1, NULL, 0) || df_inception_load(wpath, &net)) {
        fprintf(stderr, "bench_inception: %s\n", df_error());
        return 1;
    }

    char cpu[256];
    const char *isa;
    cpu_info(cpu, sizeof cpu, &isa);
    printf("FID Inception-v3 pool3 features of %d RGB images of %dx%d (resized to 299x299), float32, %d threads\n"
           "%s, %s; best of %d after a warm-up\n",
           n, size, size, threads, cpu, isa, iters);

    /* ours */
    if (df_inception_features(net, DF_MIN(n, 4), 3, size, size, x, f)) {
        fprintf(stderr, "bench_inception: %s\n", df_error());
        return 1;
    }
    double best = 1e30;
    for (int k = 0; k < iters; k++) {
        double t0 = df_now_sec();
        if (df_inception_features(net, n, 3, size, size, x, f)) {
            fprintf(stderr, "bench_inception: %s\n", df_error());
            return 1;
        }
        double t = df_now_sec() - t0;
        best = t < best ? t : best;
    }
    const double ours = n / best;
    printf("diffuse   %8.2f images/s  (%.2f s for %d)\n", ours, best, n);

    /* PyTorch's, on the same files */
    int status = 0;
    if (with_torch) {
        char cmd[8192], line[4096];
        snprintf(cmd, sizeof cmd,
                 "env -u OMP_WAIT_POLICY /usr/bin/python3 %s/torch_inception.py %s %s --threads %d --iters %d --out %s",
                 bench_dir, wpath, ipath, threads, iters, tpath);
        FILE *p = popen(cmd, "r");
        double theirs = 0;
        while (p && fgets(line, sizeof line, p)) {
            char *a = strstr(line, "\"images_per_sec\": ");
            if (a) theirs = atof(a + 18);
        }
        if (p) pclose(p);
        FILE *tfile = fopen(tpath, "rb");
        size_t got = tfile ? fread(tf, sizeof(float), nf, tfile) : 0;
        if (tfile) fclose(tfile);
        if (theirs <= 0 || got != nf) {
            fprintf(stderr, "bench_inception: %s/torch_inception.py gave no result\n", bench_dir);
            status = 1;
        } else {
            double dmax = 0, amax = 0;
            for (size_t i = 0; i < nf; i++) {
                double d = fabs((double)f[i] - tf[i]), a = fabs((double)tf[i]);
                dmax = d > dmax || d != d ? d : dmax;
                amax = a > amax ? a : amax;
            }
            printf("PyTorch   %8.2f images/s  (torch %s, batches of 50 as pytorch-fid)\n", theirs,
                   "1.13 float32");
            printf("ratio     %8.2f  (diffuse / PyTorch; features agree to %.2g of max |feature|)\n", ours / theirs,
                   dmax / (amax > 0 ? amax : 1));
        }
    }
    df_inception_free(net);
    free(x), free(f), free(tf);
    remove(wpath), remove(ipath), remove(tpath), rmdir(dir);
    return status;
}
