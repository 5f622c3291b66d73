/* What the benchmark programs share: a monotonic clock, a measurement run in a child process (so that peak
 * memory belongs to it alone, and OpenMP starts fresh), and a row of the diffuse-against-PyTorch table. */
#ifndef DF_BENCH_H
#define DF_BENCH_H

#include <stdio.h>
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

#endif
