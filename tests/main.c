/* The test runner: runs every registered test (or those whose name contains argv[1]) and prints
 * "N passed, N failed". Exit status 1 if any test failed. */
#define _POSIX_C_SOURCE 200809L
#include "test.h"
#include "internal.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_TESTS 1024
static struct { const char *name; test_fn fn; } tests[MAX_TESTS];
static int ntests;
static int cur_failures;

void test_register(const char *name, test_fn fn) {
    if (ntests < MAX_TESTS) {
        tests[ntests].name = name;
        tests[ntests].fn = fn;
        ntests++;
    }
}

void test_fail_at(const char *file, int line, const char *fmt, ...) {
    if (cur_failures < 20) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stdout, "    %s:%d: ", file, line);
        vfprintf(stdout, fmt, ap);
        fprintf(stdout, "\n");
        va_end(ap);
    }
    cur_failures++;
}

static char bin_dir[1024] = ".";

const char *test_bin_dir(void) { return bin_dir; }

int test_quick(void) {
    const char *q = getenv("DIFFUSE_QUICK");
    return q && *q && strcmp(q, "0") != 0;
}

const char *test_golden_dir(void) {
    const char *g = getenv("DIFFUSE_GOLDEN");
    return g && *g ? g : "../shared/golden";
}

const char *test_tmp_dir(void) {
    static char dir[256];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/diffuse-test-XXXXXX");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            exit(2);
        }
    }
    return dir;
}

double max_rel_diff(const float *a, const float *b, size_t n, size_t *where) {
    double amax = 0, dmax = 0;
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= dmax)) { dmax = d; w = i; }   /* NaN counts as the worst */
        if (fabs((double)b[i]) > amax) amax = fabs((double)b[i]);
    }
    if (where) *where = w;
    return dmax / (amax > 0 ? amax : 1.0);
}

static int cmp_tests(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int main(int argc, char **argv) {
    df_prefer_passive_threads(argv);
    const char *slash = strrchr(argv[0], '/');
    if (slash) snprintf(bin_dir, sizeof bin_dir, "%.*s", (int)(slash - argv[0]), argv[0]);
    qsort(tests, (size_t)ntests, sizeof tests[0], cmp_tests);
    int passed = 0, failed = 0;
    for (int i = 0; i < ntests; i++) {
        if (argc > 1 && !strstr(tests[i].name, argv[1])) continue;
        cur_failures = 0;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        tests[i].fn();
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double sec = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        if (cur_failures) {
            printf("FAIL %s (%d failed checks, %.2fs)\n", tests[i].name, cur_failures, sec);
            failed++;
        } else {
            printf("ok   %s (%.2fs)\n", tests[i].name, sec);
            passed++;
        }
        fflush(stdout);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
