/* What the benchmark programs share: a monotonic clock, a measurement run in a child process (so that peak
 * memory belongs to it alone, and OpenMP starts fresh), and a row of the diffuse-against-PyTorch table. */
#ifndef DF_BENCH_H
#define DF_BENCH_H

#include "diffuse.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static inline double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    double sec;      /* best time of one unit of work (a step, a sampling run, a forward) */
    double peak_mb;  /* peak resident memory of the process that did it */
    double value;    /* a further number (check: worst relative difference; peak: GFLOP/s) */
    int    ok;
} result;

/* Run fn in a child process (OpenMP must not have started in the parent) and collect its result. */
static inline result in_child(result (*fn)(const void *), const void *arg) {
    result r = {0};
    int fd[2];
    if (pipe(fd) != 0) return r;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        result c = fn(arg);
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        c.peak_mb = ru.ru_maxrss / 1024.0;
        ssize_t w = write(fd[1], &c, sizeof c);
        _exit(w == (ssize_t)sizeof c ? 0 : 1);
    }
    close(fd[1]);
    if (pid > 0 && read(fd[0], &r, sizeof r) != (ssize_t)sizeof r) r.ok = 0;
    close(fd[0]);
    if (pid > 0) waitpid(pid, NULL, 0);
    return r;
}

/* Run a PyTorch reference command (bench/torch_*.py) and read the JSON line it prints: best seconds and peak
 * memory. */
static inline result torch_measure(const char *cmd) {
    result r = {0};
    char line[2048];
    FILE *p = popen(cmd, "r");
    while (p && fgets(line, sizeof line, p)) {
        char *a = strstr(line, "\"best_sec\": "), *b = strstr(line, "\"peak_rss_mb\": ");
        if (a && b) r.sec = atof(a + 12), r.peak_mb = atof(b + 15), r.ok = 1;
    }
    if (p) pclose(p);
    return r;
}

static inline void row(const char *model, const char *what, double ours, double theirs, int higher_better, const char *fmt) {
    char a[32], b[32], c[32];
    snprintf(a, sizeof a, fmt, ours);
    if (theirs > 0) {
        snprintf(b, sizeof b, fmt, theirs);
        snprintf(c, sizeof c, "%.2fx", higher_better ? ours / theirs : theirs / ours);
    } else {
        snprintf(b, sizeof b, "-");
        snprintf(c, sizeof c, "-");
    }
    printf("| %-9s | %-42s | %9s | %9s | %7s |\n", model, what, a, b, c);
    fflush(stdout);
}

/* The fast kernels against the reference path on one forward and backward pass of n s x s images x at t
 * (the model's context, if any, already set; noise is the output gradient): the worse of the output's and
 * the parameter gradients' largest difference relative to their largest value. *ok = 0 when a pass fails. */
static inline double kernels_disagree(df_model *m, int n, int s, const float *x, const float *t, const float *noise,
                                      int *ok) {
    const size_t nx = (size_t)n * df_model_config(m)->out_channels * s * s, np = df_model_num_params(m);
    float *g[2], *y[2];
    for (int p = 0; p < 2; p++) {
        df_model_set_kernels(m, p ? DF_KERNELS_REFERENCE : DF_KERNELS_FAST);
        y[p] = malloc(nx * 4), g[p] = malloc(np * 4);
        df_model_zero_grad(m);
        if (!y[p] || !g[p] || df_model_forward(m, n, s, s, x, t, NULL, y[p]) || df_model_backward(m, noise, NULL)) *ok = 0;
        else memcpy(g[p], df_model_grads(m), np * 4);
    }
    double dy = 0, my = 0, dg = 0, mg = 0;
    for (size_t i = 0; *ok && i < nx; i++) dy = fmax(dy, fabs(y[0][i] - y[1][i])), my = fmax(my, fabs(y[1][i]));
    for (size_t i = 0; *ok && i < np; i++) dg = fmax(dg, fabs(g[0][i] - g[1][i])), mg = fmax(mg, fabs(g[1][i]));
    for (int p = 0; p < 2; p++) free(y[p]), free(g[p]);
    return *ok ? fmax(dy / my, dg / mg) : NAN;
}

#endif
