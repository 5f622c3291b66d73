/* Gaussian mixtures for the sampler and editing tests (tests/test_sampler.c, tests/test_edit.c): the test
 * mixtures, per-component moments of generated vectors, and checks whose tolerances come from the sample
 * size (standard errors) plus a discretisation budget per sampler. Implemented in tests/test_sampler.c. */
#ifndef DF_TEST_MIXTURE_H
#define DF_TEST_MIXTURE_H

#include "test.h"

#define MIX_MAX_K 4
#define MIX_MAX_D 3

/* The 2-D mixture: 3 components, weights 0.5 / 0.3 / 0.2, full covariances, means in [-1, 1]. */
void mix_make_2d(df_gmm *g);
/* The 3-D mixture of the "small image" test (each pixel's colour is a draw). */
void mix_make_3d(df_gmm *g);

/* Moments of vectors grouped by the component of highest responsibility under the mixture. */
typedef struct {
    int    K, D;
    double count;                                      /* vectors */
    double n[MIX_MAX_K];                               /* vectors per component */
    double weight[MIX_MAX_K];                          /* n / count */
    double mean[MIX_MAX_K][MIX_MAX_D];
    double cov[MIX_MAX_K][MIX_MAX_D][MIX_MAX_D];       /* unbiased sample covariance */
    int    nonfinite;                                  /* vectors with NaN or inf (left out) */
} mix_stats;

/* The component of highest responsibility w_k N(v; mu_k, S_k) for one D-vector. */
int  mix_assign(const df_gmm *g, const double *v);
/* Moments of count D-vectors stored vector-major (v0 d0, v0 d1, ...). */
void mix_stats_vectors(const df_gmm *g, const double *v, size_t count, mix_stats *st);
/* The same for n samples of dim values in df_gmm_sample's layout (vector j of a sample has its
 * coordinates at j, j + dim/D, ...). */
void mix_stats_samples(const df_gmm *g, int n, size_t dim, const float *x, mix_stats *st);

/* Discretisation allowances added to the sampling tolerance: absolute, on weights, on mean coordinates
 * and on covariance entries (as a fraction of sqrt(S_dd S_ee)). */
typedef struct {
    double weight, mean, cov;
} mix_budget;

/* Check weights, means and covariances against the mixture: |error| <= Z * standard error + budget for
 * each; on failure prints which statistic, the values and the tolerance. Returns the number of
 * failures. */
int mix_check_at(const char *file, int line, const char *what, const df_gmm *g, const mix_stats *st,
                 mix_budget b);
#define CHECK_MIXTURE(what, g, st, b) mix_check_at(__FILE__, __LINE__, what, g, st, b)

/* How many standard errors a statistic may be off by chance: two-sided p = 5.7e-7 per check. */
#define MIX_Z 5.0

/* df_gmm_denoise over a chunk of samples per call; counts calls. */
typedef struct {
    df_gmm_denoiser dn;
    long            calls;
} mix_counter;
df_status mix_counting_denoise(void *ctx, int n, const float *x, const float *t, float *out);

#endif
