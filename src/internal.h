/* Internal helpers shared by the library's modules: error reporting, assertions, allocation.
 * Not part of the public API. */
#ifndef DF_INTERNAL_H
#define DF_INTERNAL_H

#include "diffuse.h"
#include <stdio.h>
#include <stdlib.h>

/* Record a failure message (printf-style) for df_error() and return `s`, so callers can write
 * `return df_fail(DF_ERR_IO, "%s: cannot open", path);`. */
df_status df_fail(df_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Bugs, not bad input: assertions stay on in release builds and say where they tripped. */
#define DF_ASSERT(c)                                                                     \
    do {                                                                                 \
        if (!(c)) {                                                                      \
            fprintf(stderr, "diffuse: assertion failed at %s:%d: %s\n", __FILE__, __LINE__, #c); \
            abort();                                                                     \
        }                                                                                \
    } while (0)

#define DF_COUNTOF(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define DF_MIN(a, b) ((a) < (b) ? (a) : (b))
#define DF_MAX(a, b) ((a) > (b) ? (a) : (b))

/* 64-byte aligned allocation (for vector loads); free with df_free_aligned. NULL on failure. */
void *df_alloc_aligned(size_t bytes);
void  df_free_aligned(void *p);
/* A buffer of `need` elements of `size` bytes (*cap counts them): reallocated (contents lost) when it holds
 * fewer, or, with exact, any other number. 0, or -1 out of memory (*p NULL, *cap 0). */
int   df_fit_aligned(void **p, size_t *cap, size_t need, size_t size, int exact);

/* Read a whole file into a NUL-terminated malloc'd buffer. */
df_status df_read_file(const char *path, char **data, size_t *len);

/* df_image_load on bytes already in memory; `path` names them in messages. */
df_status df_image_decode(const char *path, const void *data, size_t len, int channels, int *c, int *h, int *w,
                          float **pixels);

/* Write `len` bytes to `path` atomically: into "<path>.tmp.<pid>", fsync, rename over `path`. */
df_status df_write_file_atomic(const char *path, const void *data, size_t len);

/* Print a cJSON tree (which is then deleted) to `path` atomically. */
struct cJSON;
/* Read and parse a JSON file that must hold an object ("PATH: not a JSON object" otherwise); *out is the
 * caller's to cJSON_Delete. */
df_status df_read_json_object(const char *path, struct cJSON **out);
df_status df_write_json_atomic(const char *path, struct cJSON *j);

/* 1 if path is a directory (following links). */
int df_is_dir(const char *path);

/* Create a directory and its missing parents (like mkdir -p). */
df_status df_mkdir_p(const char *dir);

/* Block `counter` of the Philox-4x32-10 stream keyed by seed (df_rng draws these blocks in order). */
void df_philox(uint64_t seed, uint64_t counter, uint32_t out[4]);
/* The same block of another of the seed's streams (the counter's high 64 bits). */
void df_philox_stream(uint64_t seed, uint64_t stream, uint64_t counter, uint32_t out[4]);
/* perm = a uniformly random order of 0 .. n-1 (Fisher-Yates, one df_rng_uniform per position). */
void df_shuffle(int *perm, int n, df_rng *r);

/* The library's own OpenMP threads split work over images; BLAS runs single-threaded inside them, so
 * there is one pool and no nested oversubscription. */
void df_blas_single_thread(void);
/* A call runs with its object's thread count (0: the caller's OpenMP default) and gives the caller's
 * setting back afterwards, so two objects in one process can differ. Returns what df_threads_leave
 * restores. */
int  df_threads_enter(int threads);
void df_threads_leave(int caller);

/* The offset of the first byte of s[0..n) that is not strict UTF-8 (as the tokenizer reads it), or -1. */
long df_utf8_invalid_at(const char *s, size_t n);

/* An optimizer step and an EMA update over parameters held in nparts arrays (params[k], grads[k] of n[k] values,
 * summing to the optimizer's n; the moments and the EMA weights are one array in that order): one global
 * gradient norm and clipping, as one array would have them. */
void df_optimizer_step_parts(df_optimizer *o, int nparts, float *const *params, float *const *grads,
                             const size_t *n, double *grad_norm);
void df_ema_update_parts(df_ema *e, float *ema, int nparts, const float *const *params, const size_t *n);

/* Whether a text encoder and tokenizer fit a U-Net (it attends to text as wide as the encoder's states; the
 * tokenizer's context and ids fit the encoder); where names them in the message. */
df_status df_text_parts_check(const char *where, const df_unet_config *unet, const df_text_encoder *encoder,
                              const df_tokenizer *tokenizer);

/* Seconds on the monotonic clock (for elapsed times and budgets). */
double df_now_sec(void);

/* dir/classes.json for `count` classes named from the data set (unnamed ones by their number; the null
 * class, when >= 0, as "(none)"). */
df_status df_class_info_save_data(const char *dir, const df_dataset *d, int count, int null_class);

/* SHA-256 of a data set's shape, pixels and labels, as 64 hex digits. */
void df_dataset_sha256(const df_dataset *d, char hex[65]);
/* SHA-256 of a file's bytes, as 64 hex digits (what sha256sum prints). */
df_status df_file_sha256(const char *path, char hex[65]);

/* One sample of df_hybrid_loss in double, for finite-difference checks: out holds 2 dim values (the
 * prediction, then v) and frozen the dim prediction values p's mean is made from (the stop-gradient: held
 * fixed, so a check can perturb out alone). Returns simple + vlb_scale vlb (vlb in bits/dim); grad (2 dim
 * values, may be NULL) its gradient with respect to out. */
double df_hybrid_sample(const df_schedule *s, df_prediction p, int t, size_t dim, const double *x0, const double *xt,
                        const double *target, const double *out, const double *frozen, double vlb_scale,
                        double *simple, double *vlb, double *grad);

/* Read a checkpoint's training_state.json as a resume would, without resuming (for the fuzzer). */
df_status df_train_state_check(const char *path);

/* For benchmarks: accumulate seconds per op kind into table (2 * df_op_count() doubles: forward, then
 * backward), or stop with NULL. df_op_name(i) names kind i. */
void        df_model_set_profile(df_model *m, double *table);
/* Record how a classifier was trained (its config's classifier_noise_aware), for the saved config. */
void        df_model_set_noise_aware(df_model *m, int on);
int         df_op_count(void);
const char *df_op_name(int i);

#endif
