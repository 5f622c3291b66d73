/* float32 elementwise kernels written for the vectoriser: no libm calls, no branches (the Makefile
 * builds this file with -fno-trapping-math so the clamps become selects, and lets it fuse multiply-adds).
 * The default build stays portable: the AVX2 versions run only where the CPU has AVX2 and FMA. */
#include "vec.h"

#include <stdint.h>
#include <string.h>

/* Each kernel's body is written once and compiled three times: for AVX-512, for AVX2 + FMA and for baseline
 * x86-64; the CPU is asked once which to run. The bodies name every lane and order every sum, so the two
 * vector builds (both fusing multiply-adds) compute the same bits. */
#if defined(__x86_64__) && defined(__GNUC__)
#define FAST_TARGET __attribute__((target("avx2,fma")))
#define WIDE_TARGET __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")))
/* 2: AVX-512, 1: AVX2 + FMA, 0: neither */
static int simd_level(void) {
    static int known = -1;
    if (known < 0)
        known = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw")
                    ? 2
                    : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return known;
}
#else
#define FAST_TARGET
#define WIDE_TARGET
static int simd_level(void) { return 0; }
#endif

#define BODY static inline __attribute__((always_inline))

/* Defines name(params): the dispatcher, with name##_avx512, name##_avx2 and name##_base around body_fn(args). */
#define DISPATCH(name, params, args)                                      \
    WIDE_TARGET static void name##_avx512 params { name##_body args; }   \
    FAST_TARGET static void name##_avx2 params { name##_body args; }     \
    static void name##_base params { name##_body args; }                 \
    void name params {                                                    \
        const int level = simd_level();                                   \
        if (level == 2)                                                   \
            name##_avx512 args;                                           \
        else if (level == 1)                                              \
            name##_avx2 args;                                             \
        else                                                              \
            name##_base args;                                             \
    }

/* e^x to about 2 ulp on [-87, 88] (clamped outside): x = n ln2 + r with |r| <= ln2/2, e^r by its
 * degree-6 Taylor polynomial, 2^n written straight into the exponent bits. */
BODY float exp_f32(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    const float shifter = 12582912.0f;   /* 1.5 * 2^23: adding it rounds to an integer */
    float n = (x * 1.44269504f + shifter) - shifter;
    float r = x - n * 0.693145751953125f;   /* ln2 split in two for an exact product */
    r = r - n * 1.428606765330187e-06f;
    float p = 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    n = n == n ? n : 0.0f;   /* NaN in, NaN out (through p), without converting NaN to an integer */
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

BODY void vec_silu_body(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = x[i] / (1.0f + exp_f32(-x[i]));
}
DISPATCH(vec_silu, (float *y, const float *x, size_t n), (y, x, n))

BODY void vec_silu_backward_body(float *dx, const float *dy, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + exp_f32(-x[i]));
        dx[i] += dy[i] * s * (1.0f + x[i] * (1.0f - s));
    }
}
DISPATCH(vec_silu_backward, (float *dx, const float *dy, const float *x, size_t n), (dx, dy, x, n))


/* A softmax row's exponentials: x[i] = e^(x[i] - mx); the sum in float partials of 64, then double. */
/* The sum of x[s..e) (at most 64) in 8 interleaved float lanes, so that it vectorises; a fixed order. */
BODY float lanes_sum(const float *x, size_t s, size_t e) {
    float lane[8] = {0}, t = 0;
    size_t i = s;
    for (; i + 8 <= e; i += 8)
        for (int k = 0; k < 8; k++) lane[k] += x[i + k];
    for (; i < e; i++) t += x[i];
    for (int k = 0; k < 8; k++) t += lane[k];
    return t;
}

BODY double vec_exp_shift_sum_body(float *x, size_t n, float mx) {
    double sum = 0;
    for (size_t s = 0; s < n; s += 64) {
        const size_t e = s + 64 < n ? s + 64 : n;
        for (size_t i = s; i < e; i++) x[i] = exp_f32(x[i] - mx);
        sum += lanes_sum(x, s, e);
    }
    return sum;
}
WIDE_TARGET static double vec_exp_shift_sum_avx512(float *x, size_t n, float mx) { return vec_exp_shift_sum_body(x, n, mx); }
FAST_TARGET static double vec_exp_shift_sum_avx2(float *x, size_t n, float mx) { return vec_exp_shift_sum_body(x, n, mx); }
static double vec_exp_shift_sum_base(float *x, size_t n, float mx) { return vec_exp_shift_sum_body(x, n, mx); }
double vec_exp_shift_sum(float *x, size_t n, float mx) {
    const int level = simd_level();
    return level == 2 ? vec_exp_shift_sum_avx512(x, n, mx)
           : level    ? vec_exp_shift_sum_avx2(x, n, mx)
                      : vec_exp_shift_sum_base(x, n, mx);
}

/* The largest of x[0..n), n >= 1, in 8 lanes. */
BODY float vec_max_body(const float *x, size_t n) {
    float lane[8], m = x[0];
    for (int k = 0; k < 8; k++) lane[k] = x[0];
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) lane[k] = x[i + k] > lane[k] ? x[i + k] : lane[k];
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    for (int k = 0; k < 8; k++) m = lane[k] > m ? lane[k] : m;
    return m;
}
WIDE_TARGET static float vec_max_avx512(const float *x, size_t n) { return vec_max_body(x, n); }
FAST_TARGET static float vec_max_avx2(const float *x, size_t n) { return vec_max_body(x, n); }
static float vec_max_base(const float *x, size_t n) { return vec_max_body(x, n); }
float vec_max(const float *x, size_t n) {
    const int level = simd_level();
    return level == 2 ? vec_max_avx512(x, n) : level ? vec_max_avx2(x, n) : vec_max_base(x, n);
}

BODY void vec_scale_body(float *x, size_t n, float a) {
    for (size_t i = 0; i < n; i++) x[i] *= a;
}
DISPATCH(vec_scale, (float *x, size_t n, float a), (x, n, a))

/* A softmax row's backward in place: g[i] = p[i] (g[i] - sum_j g[j] p[j]), the sum in float partials of 64,
 * then double. */
BODY void vec_softmax_backward_body(float *g, const float *p, size_t n) {
    double dot = 0;
    for (size_t s = 0; s < n; s += 64) {
        const size_t e = s + 64 < n ? s + 64 : n;
        float lane[8] = {0}, part = 0;
        size_t i = s;
        for (; i + 8 <= e; i += 8)
            for (int k = 0; k < 8; k++) lane[k] += g[i + k] * p[i + k];
        for (; i < e; i++) part += g[i] * p[i];
        for (int k = 0; k < 8; k++) part += lane[k];
        dot += part;
    }
    const float d = (float)dot;
    for (size_t i = 0; i < n; i++) g[i] = p[i] * (g[i] - d);
}
DISPATCH(vec_softmax_backward, (float *g, const float *p, size_t n), (g, p, n))

/* Phi(x) and phi(x), the normal distribution's CDF and density, for GELU: erf by Abramowitz and Stegun's
 * 7.1.26 (absolute error below 1.5e-7, about float's rounding at 1), from one exponential shared with the
 * density; the tail below 0 taken as 0.5 (1 - erf(|z|)) so that it keeps its relative accuracy. */
BODY void normal_cdf_pdf(float x, float *cdf, float *pdf) {
    const float z = x * 0.70710678f, az = z < 0 ? -z : z;
    const float t = 1.0f / (1.0f + 0.3275911f * az), e = exp_f32(-z * z);
    const float q = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f)))) * e;
    *cdf = z < 0 ? 0.5f * q : 1.0f - 0.5f * q;
    *pdf = e * 0.39894228f;
}

BODY void vec_geglu_body(float *y, const float *v, const float *g, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float cdf, pdf;
        normal_cdf_pdf(g[i], &cdf, &pdf);
        y[i] = v[i] * g[i] * cdf;
    }
}
DISPATCH(vec_geglu, (float *y, const float *v, const float *g, size_t n), (y, v, g, n))

BODY void vec_geglu_backward_body(float *dv, float *dg, const float *dy, const float *v, const float *g, size_t n,
                                  int fresh) {
    for (size_t i = 0; i < n; i++) {
        float cdf, pdf;
        normal_cdf_pdf(g[i], &cdf, &pdf);
        const float a = dy[i] * g[i] * cdf, b = dy[i] * v[i] * (cdf + g[i] * pdf);
        dv[i] = fresh ? a : dv[i] + a;
        dg[i] = fresh ? b : dg[i] + b;
    }
}
DISPATCH(vec_geglu_backward,
         (float *dv, float *dg, const float *dy, const float *v, const float *g, size_t n, int fresh),
         (dv, dg, dy, v, g, n, fresh))

/* ---- silu(x * a + b) with per-lane coefficients, for the fused GroupNorm + SiLU ------------------------
 * A channel block holds npix pixels of blk lanes (blk 1: one channel, coefficients constant; blk 8 or
 * 16: the blocked layout, lane ci has coefficients a[ci], b[ci]). The lane loops have constant trip
 * counts so they vectorise. Sums go to float partials over at most 64 pixels, then to double. */

BODY float sigm(float z) { return 1.0f / (1.0f + exp_f32(-z)); }
BODY float silu_grad(float z) {   /* d silu / dz */
    float s = sigm(z);
    return s * (1.0f + z * (1.0f - s));
}

#define LANES_LOOP(L, stmt)                                       \
    for (size_t p = 0; p < npix; p++)                             \
        for (int ci = 0; ci < L; ci++) {                          \
            const size_t i = p * L + ci;                          \
            stmt;                                                 \
        }

BODY void vec_norm_silu_body(float *y, const float *x, size_t npix, int blk, const float *a, const float *b) {
    if (blk == 16) {
        LANES_LOOP(16, { float z = x[i] * a[ci] + b[ci]; y[i] = z * sigm(z); })
    } else if (blk == 8) {
        LANES_LOOP(8, { float z = x[i] * a[ci] + b[ci]; y[i] = z * sigm(z); })
    } else {
        for (int ci = 0; ci < blk; ci++)   /* plain layout: blk is 1 */
            for (size_t p = 0; p < npix; p++) {
                float z = x[p * blk + ci] * a[ci] + b[ci];
                y[p * blk + ci] = z * sigm(z);
            }
    }
}
DISPATCH(vec_norm_silu, (float *y, const float *x, size_t npix, int blk, const float *a, const float *b),
         (y, x, npix, blk, a, b))

/* dz = dy silu'(x a + b); A[ci] += sum dz, D[ci] += sum dz x */
#define GRAD_SUMS(L)                                                                        \
    for (size_t p0 = 0; p0 < npix; p0 += 64) {                                              \
        float sa[L], sd[L];                                                                 \
        for (int ci = 0; ci < L; ci++) sa[ci] = sd[ci] = 0;                                 \
        size_t p1 = p0 + 64 < npix ? p0 + 64 : npix;                                        \
        for (size_t p = p0; p < p1; p++)                                                    \
            for (int ci = 0; ci < L; ci++) {                                                \
                size_t i = p * L + ci;                                                      \
                float dz = dy[i] * silu_grad(x[i] * a[ci] + b[ci]);                         \
                sa[ci] += dz, sd[ci] += dz * x[i];                                          \
            }                                                                               \
        for (int ci = 0; ci < L; ci++) A[ci] += sa[ci], D[ci] += sd[ci];                    \
    }

BODY void vec_norm_silu_sums_body(const float *dy, const float *x, size_t npix, int blk, const float *a,
                                  const float *b, double *A, double *D) {
    if (blk == 16) {
        GRAD_SUMS(16)
    } else if (blk == 8) {
        GRAD_SUMS(8)
    } else {
        for (int ci = 0; ci < blk; ci++)
            for (size_t p = 0; p < npix; p++) {
                size_t i = p * blk + ci;
                float dz = dy[i] * silu_grad(x[i] * a[ci] + b[ci]);
                A[ci] += dz, D[ci] += (double)dz * x[i];
            }
    }
}
DISPATCH(vec_norm_silu_sums,
         (const float *dy, const float *x, size_t npix, int blk, const float *a, const float *b, double *A, double *D),
         (dy, x, npix, blk, a, b, A, D))

/* dx += dz kd + x kx + k0, and S[ci] += the same summed over pixels */
#define GRAD_DX(L)                                                                          \
    for (size_t p0 = 0; p0 < npix; p0 += 64) {                                              \
        float ss[L];                                                                        \
        for (int ci = 0; ci < L; ci++) ss[ci] = 0;                                          \
        size_t p1 = p0 + 64 < npix ? p0 + 64 : npix;                                        \
        for (size_t p = p0; p < p1; p++)                                                    \
            for (int ci = 0; ci < L; ci++) {                                                \
                size_t i = p * L + ci;                                                      \
                float dz = dy[i] * silu_grad(x[i] * a[ci] + b[ci]);                         \
                float g = dz * kd[ci] + x[i] * kx[ci] + k0[ci];                             \
                dx[i] += g, ss[ci] += g;                                                    \
            }                                                                               \
        for (int ci = 0; ci < L; ci++) S[ci] += ss[ci];                                     \
    }

BODY void vec_norm_silu_dx_body(float *dx, const float *dy, const float *x, size_t npix, int blk, const float *a,
                                const float *b, const float *kd, const float *kx, const float *k0, double *S) {
    if (blk == 16) {
        GRAD_DX(16)
    } else if (blk == 8) {
        GRAD_DX(8)
    } else {
        for (int ci = 0; ci < blk; ci++)
            for (size_t p = 0; p < npix; p++) {
                size_t i = p * blk + ci;
                float dz = dy[i] * silu_grad(x[i] * a[ci] + b[ci]);
                float g = dz * kd[ci] + x[i] * kx[ci] + k0[ci];
                dx[i] += g, S[ci] += g;
            }
    }
}
DISPATCH(vec_norm_silu_dx,
         (float *dx, const float *dy, const float *x, size_t npix, int blk, const float *a, const float *b,
          const float *kd, const float *kx, const float *k0, double *S),
         (dx, dy, x, npix, blk, a, b, kd, kx, k0, S))

/* ---- per-lane statistics over a channel block (GroupNorm) --------------------------------------------
 * S[ci] += sum x (and Q[ci] += sum (x - mu[ci])^2 when Q is given), float partials over 64 pixels. */
#define LANE_STATS(L)                                                                       \
    for (size_t p0 = 0; p0 < npix; p0 += 64) {                                              \
        float ss[L], sq[L];                                                                 \
        for (int ci = 0; ci < L; ci++) ss[ci] = sq[ci] = 0;                                 \
        size_t p1 = p0 + 64 < npix ? p0 + 64 : npix;                                        \
        for (size_t p = p0; p < p1; p++)                                                    \
            for (int ci = 0; ci < L; ci++) {                                                \
                float d = x[p * L + ci] - m[ci];                                            \
                ss[ci] += x[p * L + ci], sq[ci] += d * d;                                   \
            }                                                                               \
        for (int ci = 0; ci < L; ci++) S[ci] += ss[ci], Q[ci] += sq[ci];                    \
    }

BODY void vec_lane_stats_body(const float *x, size_t npix, int blk, const float *mu, double *S, double *Q) {
    float zero[16] = {0};
    double dq[16];
    const float *m = mu ? mu : zero;
    if (!Q) Q = dq;
    if (blk == 16) {
        LANE_STATS(16)
    } else if (blk == 8) {
        LANE_STATS(8)
    } else {
        for (int ci = 0; ci < blk; ci++) {
            double s = 0, q = 0;
            for (size_t p = 0; p < npix; p++) {
                double d = (double)x[p * blk + ci] - m[ci];
                s += x[p * blk + ci], q += d * d;
            }
            S[ci] += s, Q[ci] += q;
        }
    }
}
DISPATCH(vec_lane_stats, (const float *x, size_t npix, int blk, const float *mu, double *S, double *Q),
         (x, npix, blk, mu, S, Q))

/* ---- rows and LayerNorm (channel-major: each channel a row of L positions, the positions in lanes) ----- */

/* s[r] += the sum of row r, in 16 interleaved lanes (a fixed order). */
BODY void vec_row_sums_body(float *s, const float *x, int rows, size_t cols) {
    for (int r = 0; r < rows; r++) {
        const float *p = x + (size_t)r * cols;
        float lane[16] = {0}, t = 0;
        size_t j = 0;
        for (; j + 16 <= cols; j += 16)
            for (int k = 0; k < 16; k++) lane[k] += p[j + k];
        for (; j < cols; j++) t += p[j];
        for (int k = 0; k < 16; k++) t += lane[k];
        s[r] += t;
    }
}
DISPATCH(vec_row_sums, (float *s, const float *x, int rows, size_t cols), (s, x, rows, cols))

BODY void vec_add_bias_residual_body(float *y, const float *b, const float *res, int rows, size_t cols) {
    for (int r = 0; r < rows; r++) {
        float *p = y + (size_t)r * cols;
        const float v = b ? b[r] : 0;
        if (!res) {
            for (size_t j = 0; j < cols; j++) p[j] += v;
            continue;
        }
        const float *q = res + (size_t)r * cols;
        if (b)
            for (size_t j = 0; j < cols; j++) p[j] = (p[j] + v) + q[j];
        else
            for (size_t j = 0; j < cols; j++) p[j] += q[j];
    }
}
DISPATCH(vec_add_bias_residual, (float *y, const float *b, const float *res, int rows, size_t cols),
         (y, b, res, rows, cols))

BODY void vec_layernorm_body(float *Y, float *mean, float *rstd, const float *X, const float *gamma, const float *beta,
                             int c, size_t L, float eps, float *m, float *v) {
    for (size_t l = 0; l < L; l++) m[l] = v[l] = 0;
    for (int ci = 0; ci < c; ci++) {
        const float *x = X + (size_t)ci * L;
        for (size_t l = 0; l < L; l++) m[l] += x[l];
    }
    for (size_t l = 0; l < L; l++) m[l] /= (float)c;
    for (int ci = 0; ci < c; ci++) {
        const float *x = X + (size_t)ci * L;
        for (size_t l = 0; l < L; l++) {
            const float d = x[l] - m[l];
            v[l] += d * d;
        }
    }
    for (size_t l = 0; l < L; l++) {
        v[l] = (float)(1 / __builtin_sqrt((double)v[l] / c + eps));
        mean[l] = m[l], rstd[l] = v[l];
    }
    for (int ci = 0; ci < c; ci++) {
        const float g = gamma[ci], be = beta[ci], *x = X + (size_t)ci * L;
        float *y = Y + (size_t)ci * L;
        for (size_t l = 0; l < L; l++) y[l] = (x[l] - m[l]) * v[l] * g + be;
    }
}
DISPATCH(vec_layernorm,
         (float *Y, float *mean, float *rstd, const float *X, const float *gamma, const float *beta, int c, size_t L,
          float eps, float *m, float *v),
         (Y, mean, rstd, X, gamma, beta, c, L, eps, m, v))

BODY void vec_layernorm_dx_body(float *DX, const float *DY, const float *X, const float *M, const float *R,
                                const float *gamma, int c, size_t L, float *s1, float *s2, int fresh) {
    for (size_t l = 0; l < L; l++) s1[l] = s2[l] = 0;
    for (int ci = 0; ci < c; ci++) {
        const float g = gamma[ci], *x = X + (size_t)ci * L, *dy = DY + (size_t)ci * L;
        for (size_t l = 0; l < L; l++) {
            const float gd = g * dy[l];
            s1[l] += gd, s2[l] += gd * (x[l] - M[l]) * R[l];
        }
    }
    for (size_t l = 0; l < L; l++) s1[l] /= (float)c, s2[l] /= (float)c;
    for (int ci = 0; ci < c; ci++) {
        const float g = gamma[ci], *x = X + (size_t)ci * L, *dy = DY + (size_t)ci * L;
        float *dx = DX + (size_t)ci * L;
        for (size_t l = 0; l < L; l++) {
            const float xh = (x[l] - M[l]) * R[l], d = R[l] * (g * dy[l] - s1[l] - xh * s2[l]);
            dx[l] = fresh ? d : dx[l] + d;
        }
    }
}
DISPATCH(vec_layernorm_dx,
         (float *DX, const float *DY, const float *X, const float *M, const float *R, const float *gamma, int c,
          size_t L, float *s1, float *s2, int fresh),
         (DX, DY, X, M, R, gamma, c, L, s1, s2, fresh))

BODY void vec_layernorm_dgamma_body(double *ag, double *ab, const float *dy, const float *x, const float *M,
                                    const float *R, size_t L) {
    for (size_t l = 0; l < L; l++) {
        const float xh = (x[l] - M[l]) * R[l];
        ag[l] += (double)(dy[l] * xh), ab[l] += dy[l];
    }
}
DISPATCH(vec_layernorm_dgamma,
         (double *ag, double *ab, const float *dy, const float *x, const float *M, const float *R, size_t L),
         (ag, ab, dy, x, M, R, L))
