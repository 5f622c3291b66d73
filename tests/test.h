/* A small test harness: TEST() registers a function, CHECK*() record failures with file:line and keep
 * going, and the runner ends with "N passed, N failed" and a non-zero exit on any failure. */
#ifndef DF_TEST_H
#define DF_TEST_H

#include "diffuse.h"
#include <math.h>
#include <stdio.h>

typedef void (*test_fn)(void);
void test_register(const char *name, test_fn fn);
void test_fail_at(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int  test_quick(void);              /* DIFFUSE_QUICK=1: smaller sizes (sanitizer runs) */
const char *test_golden_dir(void);  /* $DIFFUSE_GOLDEN or ../shared/golden */
const char *test_tmp_dir(void);     /* a fresh directory for this run's files */
const char *test_bin_dir(void);     /* the directory of the test binary (the diffuse command is there) */

#define TEST(name)                                                                     \
    static void name(void);                                                            \
    __attribute__((constructor)) static void name##_register(void) { test_register(#name, name); } \
    static void name(void)

#define CHECK(cond, ...)                                                               \
    do {                                                                               \
        if (!(cond)) test_fail_at(__FILE__, __LINE__, __VA_ARGS__);                    \
    } while (0)

/* Fail unless |a - b| <= tol; prints both values. */
#define CHECK_NEAR(a, b, tol, what)                                                    \
    do {                                                                               \
        double a_ = (a), b_ = (b), t_ = (tol);                                         \
        if (!(fabs(a_ - b_) <= t_))                                                    \
            test_fail_at(__FILE__, __LINE__, "%s: %.9g vs %.9g (diff %.3g > tol %.3g)", what, a_, b_, \
                         fabs(a_ - b_), t_);                                           \
    } while (0)

#define CHECK_OK(expr)                                                                 \
    do {                                                                               \
        df_status s_ = (expr);                                                         \
        if (s_ != DF_OK) test_fail_at(__FILE__, __LINE__, "%s failed: %s", #expr, df_error()); \
    } while (0)

/* The tests' tiny U-Net (8x8 gray, two levels), attention at the inner level when attn. */
void test_tiny_unet(df_unet_config *c, int attn);
/* n 8x8 gray images, a bright 3x3 square on a dark background at one of `classes` (at most 4) places,
 * image i of class i % classes, as DIR/NAME-images-idx3-ubyte (its path in images) with its labels file. */
void test_toy_idx(const char *dir, const char *name, int n, int classes, char *images, size_t cap);
/* A CLIP tokenizer of `context` tokens learned by the reference (tests/ref/clip_bpe_ref.py) from captions of
 * coloured shapes ("a red heart", "a blue circle", "a green square"), into tokdir. 0 on success. */
int test_learn_tokenizer(const char *tokdir, int context);
/* 1 when both files read and hold the same bytes. */
int test_files_equal(const char *a, const char *b);
/* The first of files[0..n) that differs between run directories a and b at checkpoint `step` (a
 * checkpoint-%07d folder), or NULL when all hold the same bytes. */
const char *test_checkpoint_differs(const char *a, const char *b, long step, const char *const *files, int n);
/* Run the built `diffuse ARGS` (in directory cwd unless NULL, killed after timeout_s seconds unless 0);
 * returns its exit code, -1 if a signal ended it. out and err (either may be NULL) receive all it wrote to
 * stdout and stderr, at most cap - 1 bytes each. */
int test_run_diffuse(const char *cwd, int timeout_s, const char *args, char *out, size_t outcap, char *err,
                     size_t errcap);

/* Counting allocations (tests/alloc_count.c; the test binary wraps malloc & co. at link time). Only
 * the library's and the tests' own calls are counted, from every thread; what the shared libraries
 * (oneDNN, OpenMP, OpenBLAS) allocate is not. */
void test_alloc_begin(void);   /* start counting the library's allocations (calls of malloc & co.) */
long test_alloc_end(void);     /* stop; the number of allocations since test_alloc_begin */
long test_alloc_others(void);
/* A training-step watch (df_train_step_watch in test builds) that adds each step's library allocations to
 * test_step_allocations and counts the steps in test_steps_watched (tests/test_train_alloc.c). */
extern long test_step_allocations, test_steps_watched;
void        test_watch_step(int after);  /* bytes the shared libraries' allocators grew by meanwhile (mallinfo2), reported only */

/* Largest |a-b| over n values, divided by max|b| (or 1 if b is all zero). Reports the index too. */
double max_rel_diff(const float *a, const float *b, size_t n, size_t *where);

#endif
