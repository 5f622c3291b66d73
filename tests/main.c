/* The test runner: runs every registered test (or those whose name contains argv[1]) and prints
 * "N passed, N failed". Exit status 1 if any test failed. */
#define _XOPEN_SOURCE 700   /* nftw */
#include "test.h"
#include "internal.h"
#include "../cli/restart.h"

#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <ftw.h>
#include <sys/stat.h>
#include <sys/wait.h>

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

static char tmp_dir[256];

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

const char *test_tmp_dir(void) {
    char *dir = tmp_dir;
    if (!dir[0]) {
        snprintf(dir, sizeof tmp_dir, "/tmp/diffuse-test-XXXXXX");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            exit(2);
        }
    }
    return dir;
}

/* The tests' tiny U-Net: 8x8 gray, two levels of 8 and 16 channels, one layer per block, with attention at
 * the second level (down) and the first (up) when attn. Callers adjust classes, dropout and the like. */
void test_tiny_unet(df_unet_config *c, int attn) {
    df_unet_config_default(c);
    c->sample_size = 8, c->in_channels = c->out_channels = 1, c->num_levels = 2;
    c->block_out_channels[0] = 8, c->block_out_channels[1] = 16;
    c->down_attn[0] = 0, c->down_attn[1] = attn, c->up_attn[0] = attn, c->up_attn[1] = 0;
    for (int i = 2; i < DF_MAX_LEVELS; i++) c->block_out_channels[i] = c->down_attn[i] = c->up_attn[i] = 0;
    c->layers_per_block = 1, c->norm_num_groups = 4, c->attention_head_dim = 8;
}

static void write_or_fail(const char *path, const unsigned char *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b, 1, n, f) != n || fclose(f)) {
        perror(path);
        exit(2);
    }
}

int test_learn_tokenizer(const char *tokdir, int context) {
    if (system("/usr/bin/python3 -c 'import regex' >/dev/null 2>&1") != 0) {
        test_fail_at(__FILE__, __LINE__, "the tokenizer reference needs Debian's python3-regex (make deps installs it)");
        return -1;
    }
    char corpus[700], cmd[2000];
    snprintf(corpus, sizeof corpus, "%s.corpus.txt", tokdir);
    FILE *f = fopen(corpus, "wb");
    if (!f) return -1;
    for (int i = 0; i < 50; i++) fputs("a red heart\na blue circle\na green square\n", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/ref/clip_bpe_ref.py learn %s %s --merges 40 --context %d", corpus,
             tokdir, context);
    const int rc = system(cmd);
    if (rc != 0) test_fail_at(__FILE__, __LINE__, "%s failed", cmd);
    return rc;
}

void test_toy_idx(const char *dir, const char *name, int n, int classes, char *images, size_t cap) {
    char p[1100];
    unsigned char *b = malloc(16 + (size_t)n * 64), *l = malloc(8 + (size_t)n);
    const unsigned char hi[16] = {0, 0, 8, 3, 0, 0, (unsigned char)(n >> 8), (unsigned char)n, 0, 0, 0, 8, 0, 0, 0, 8};
    const unsigned char hl[8] = {0, 0, 8, 1, 0, 0, (unsigned char)(n >> 8), (unsigned char)n};
    memcpy(b, hi, 16), memcpy(l, hl, 8);
    for (int i = 0; i < n; i++) {
        int k = i % classes, oy = (k / 2) * 4, ox = (k % 2) * 4;
        l[8 + i] = (unsigned char)k;
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++)
                b[16 + (size_t)i * 64 + y * 8 + x] = y >= oy && y < oy + 3 && x >= ox && x < ox + 3 ? 230 : 20;
    }
    snprintf(images, cap, "%s/%s-images-idx3-ubyte", dir, name);
    snprintf(p, sizeof p, "%s/%s-labels-idx1-ubyte", dir, name);
    write_or_fail(images, b, 16 + (size_t)n * 64);
    write_or_fail(p, l, 8 + (size_t)n);
    free(b), free(l);
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
    cli_prefer_passive_threads(argv);
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
    if (tmp_dir[0] && !failed) nftw(tmp_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);   /* kept on failure */
    else if (tmp_dir[0]) printf("test files kept in %s\n", tmp_dir);
    return failed ? 1 : 0;
}

/* A file's first cap - 1 bytes into buf ("" when unreadable). */
static void read_into(const char *path, char *buf, size_t cap) {
    if (!buf || !cap) return;
    buf[0] = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return;
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = 0;
    fclose(f);
}

int test_run_diffuse(const char *cwd, int timeout_s, const char *args, char *out, size_t outcap, char *err,
                     size_t errcap) {
    char of[512], ef[512], cd[PATH_MAX + 16] = "", lim[32] = "", bin[PATH_MAX];
    if (!realpath(test_bin_dir(), bin)) return -1;   /* absolute, for a run in another directory */
    snprintf(of, sizeof of, "%s/run.stdout", test_tmp_dir());
    snprintf(ef, sizeof ef, "%s/run.stderr", test_tmp_dir());
    if (cwd) snprintf(cd, sizeof cd, "cd '%s' && ", cwd);
    if (timeout_s > 0) snprintf(lim, sizeof lim, "timeout %d ", timeout_s);
    size_t cap = strlen(args) + sizeof cd + sizeof of + sizeof ef + PATH_MAX + 64;
    char *cmd = malloc(cap);
    if (!cmd) return -1;
    snprintf(cmd, cap, "%s%s%s/diffuse %s >%s 2>%s", cd, lim, bin, args, of, ef);
    int st = system(cmd);
    free(cmd);
    read_into(of, out, outcap);
    read_into(ef, err, errcap);
    remove(of), remove(ef);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int test_files_equal(const char *a, const char *b) {
    char *x, *y;
    size_t nx, ny;
    if (df_read_file(a, &x, &nx)) return 0;
    if (df_read_file(b, &y, &ny)) {
        free(x);
        return 0;
    }
    int eq = nx == ny && memcmp(x, y, nx) == 0;
    free(x), free(y);
    return eq;
}

const char *test_checkpoint_differs(const char *a, const char *b, long step, const char *const *files, int n) {
    for (int i = 0; i < n; i++) {
        char fa[4200], fb[4200];
        snprintf(fa, sizeof fa, "%s/checkpoint-%07ld/%s", a, step, files[i]);
        snprintf(fb, sizeof fb, "%s/checkpoint-%07ld/%s", b, step, files[i]);
        if (!test_files_equal(fa, fb)) return files[i];
    }
    return NULL;
}
