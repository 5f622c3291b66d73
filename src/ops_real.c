/* The U-Net's ops, forward and backward side by side, written once for `real` (float and double).
 * Convolutions and projections go through BLAS (im2col + GEMM); loops split over images with OpenMP. */
#include "ops_real.h"
#include "vec.h"

#include <math.h>
#include <omp.h>
#include <string.h>
#if !DF_REAL_F64 && defined(HAVE_DNNL)
#include <dnnl.h>
#endif

#define THREAD_SCRATCH(s, per) ((s) + (size_t)omp_get_thread_num() * (per))

/* Row-major C = alpha op(A) op(B) + beta C, for the GEMMs made inside parallel loops (one per image or per
 * head): pointwise convolutions on the plain layout and attention. In float32 they go to oneDNN's sgemm,
 * which picks its kernel for this CPU at run time (AVX-512 where there is one: about 4x OpenBLAS's at these
 * shapes when OpenBLAS is held to its Haswell kernels); inside a parallel region it runs on the calling
 * thread, so each product is the same whatever the threads. ta/tb: transpose A/B. */
static void gemm_rm(int ta, int tb, int M, int N, int K, real alpha, const real *A, int lda, const real *B,
                    int ldb, real beta, real *C, int ldc) {
#if !DF_REAL_F64 && defined(HAVE_DNNL)
    dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
    GEMM(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B,
         ldb, beta, C, ldc);
#endif
}

/* ---- convolution --------------------------------------------------------------------------------- */

/* A pointwise convolution's weight gradient is summed in this many fixed groups of images (see
 * pointwise_backward), whatever the threads. */
enum { POINTWISE_GROUPS = 4 };

size_t RF(conv_scratch)(const conv_geom *g) {
    size_t K = (size_t)g->cin * g->k * g->k, P = (size_t)g->ho * g->wo;
    if (conv_is_pointwise(g)) return POINTWISE_GROUPS * ((size_t)g->cout * K + (size_t)g->cout);
    return 2 * K * P + (size_t)g->cout * K + (size_t)g->cout;
}

/* Output columns [*lo, *hi) whose input column ox*s - pad + kj falls inside [0, w). */
static void valid_cols(const conv_geom *g, int kj, int *lo, int *hi) {
    int off = kj - g->pad_l, s = g->stride;
    int a = off >= 0 ? 0 : (-off + s - 1) / s;
    int b = (g->w - 1 - off) >= 0 ? (g->w - 1 - off) / s + 1 : 0;
    *lo = a;
    *hi = b < g->wo ? b : g->wo;
    if (*hi < *lo) *hi = *lo;
}

/* col (cin*k*k, ho*wo): the input patch under each output position, zeros outside the image. */
static void im2col(real *col, const real *x, const conv_geom *g) {
    const int k = g->k, s = g->stride, P = g->ho * g->wo;
    for (int c = 0; c < g->cin; c++)
        for (int ki = 0; ki < k; ki++)
            for (int kj = 0; kj < k; kj++) {
                real *row = col + (size_t)((c * k + ki) * k + kj) * P;
                const real *xc = x + (size_t)c * g->h * g->w;
                int lo, hi;
                valid_cols(g, kj, &lo, &hi);
                for (int oy = 0; oy < g->ho; oy++) {
                    int iy = oy * s - g->pad_t + ki;
                    real *r = row + oy * g->wo;
                    if (iy < 0 || iy >= g->h) {
                        memset(r, 0, sizeof(real) * (size_t)g->wo);
                        continue;
                    }
                    const real *xr = xc + (size_t)iy * g->w;
                    const int off = kj - g->pad_l;
                    for (int ox = 0; ox < lo; ox++) r[ox] = 0;
                    if (s == 1 && hi > lo)
                        memcpy(r + lo, xr + lo + off, sizeof(real) * (size_t)(hi - lo));
                    else
                        for (int ox = lo; ox < hi; ox++) r[ox] = xr[ox * s + off];
                    for (int ox = hi; ox < g->wo; ox++) r[ox] = 0;
                }
            }
}

/* The adjoint of im2col: scatter-add columns back into the image. */
static void col2im_add(real *dx, const real *col, const conv_geom *g) {
    const int k = g->k, s = g->stride, P = g->ho * g->wo;
    for (int c = 0; c < g->cin; c++)
        for (int ki = 0; ki < k; ki++)
            for (int kj = 0; kj < k; kj++) {
                const real *row = col + (size_t)((c * k + ki) * k + kj) * P;
                real *xc = dx + (size_t)c * g->h * g->w;
                int lo, hi;
                valid_cols(g, kj, &lo, &hi);
                for (int oy = 0; oy < g->ho; oy++) {
                    int iy = oy * s - g->pad_t + ki;
                    if (iy < 0 || iy >= g->h) continue;
                    const real *r = row + oy * g->wo;
                    real *xr = xc + (size_t)iy * g->w;
                    const int off = kj - g->pad_l;
                    for (int ox = lo; ox < hi; ox++) xr[ox * s + off] += r[ox];
                }
            }
}

void RF(conv_forward)(real *y, const real *x, const real *w, const real *b, const real *residual, int n,
                      const conv_geom *g, real *scratch, size_t per) {
    const int K = g->cin * g->k * g->k, P = g->ho * g->wo;
    const size_t xs = (size_t)g->cin * g->h * g->w, ys = (size_t)g->cout * P;
    const int pointwise = conv_is_pointwise(g);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        const real *col = x + i * xs;
        if (!pointwise) {
            real *c = THREAD_SCRATCH(scratch, per);
            im2col(c, x + i * xs, g);
            col = c;
        }
        real *yi = y + i * ys;
        /* (cout, P) = W (cout, K) x col (K, P) */
        if (pointwise)
            gemm_rm(0, 0, g->cout, P, K, 1, w, K, col, P, 0, yi, P);
        else
            GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->cout, P, K, 1, w, K, col, P, 0, yi, P);
        const real *ri = residual ? residual + i * ys : NULL;
#if DF_REAL_F64
        for (int o = 0; o < g->cout && (b || ri); o++)
            for (int p = 0; p < P; p++) {
                real *v = yi + (size_t)o * P + p;
                if (b) *v += b[o];
                if (ri) *v += ri[(size_t)o * P + p];
            }
#else
        if (b || ri) vec_add_bias_residual(yi, b, ri, g->cout, (size_t)P);
#endif
    }
}

#if DF_REAL_F64
/* The sum of a row, in 8 interleaved partial sums (a fixed order; float32 has vec_row_sums). */
static real row_sum(const real *r, int count) {
    real lane[8] = {0};
    int p = 0;
    for (; p + 8 <= count; p += 8)
        for (int k = 0; k < 8; k++) lane[k] += r[p + k];
    real s = 0;
    for (; p < count; p++) s += r[p];
    for (int k = 0; k < 8; k++) s += lane[k];
    return s;
}
#endif

/* A pointwise convolution's backward pass: dx per image; the weight and bias gradients as partial sums over
 * POINTWISE_GROUPS fixed groups of images, one GEMM per image, added in group order: the bits do not depend
 * on the threads. scratch: POINTWISE_GROUPS partial gradients (conv_scratch). */
static void RF(pointwise_backward)(real *dx, real *dw, real *db, const real *dy, const real *x, const real *w,
                                   int n, const conv_geom *g, real *scratch, int dx_fresh) {
    const int K = g->cin, P = g->ho * g->wo, cout = g->cout, G = POINTWISE_GROUPS;
    const size_t xs = (size_t)K * P, ys = (size_t)cout * P, WK = (size_t)cout * K, part = WK + (size_t)cout;
    if (dx) {
#pragma omp parallel for schedule(static)
        for (int i = 0; i < n; i++) gemm_rm(1, 0, K, P, cout, 1, w, K, dy + i * ys, P, dx_fresh ? 0 : 1, dx + i * xs, P);
    }
    if (!dw && !db) return;
#pragma omp parallel for schedule(static)
    for (int grp = 0; grp < G; grp++) {
        real *pw = scratch + grp * part, *pb = pw + WK;
        memset(pw, 0, sizeof(real) * part);
        for (int i = (int)((long)n * grp / G); i < (int)((long)n * (grp + 1) / G); i++) {
            const real *dyi = dy + i * ys;
            /* dW (cout, K) += dY (cout, P) x^T (P, K) */
            if (dw) gemm_rm(0, 1, cout, K, P, 1, dyi, P, x + i * xs, P, 1, pw, K);
            if (db) {
#if DF_REAL_F64
                for (int o = 0; o < cout; o++) pb[o] += row_sum(dyi + (size_t)o * P, P);
#else
                vec_row_sums(pb, dyi, cout, (size_t)P);
#endif
            }
        }
    }
#pragma omp parallel for schedule(static)
    for (size_t j = 0; j < part; j++) {
        if (j < WK ? !dw : !db) continue;
        real acc = scratch[j];
        for (int grp = 1; grp < G; grp++) acc += scratch[grp * part + j];
        if (j < WK)
            dw[j] += acc;
        else
            db[j - WK] += acc;
    }
}

void RF(conv_backward)(real *dx, real *dw, real *db, real *dresidual, const real *dy, const real *x, const real *w,
                       int n, const conv_geom *g, real *scratch, size_t per, unsigned fresh) {
    if (dresidual) RF(add_backward)(dresidual, NULL, dy, 1, (size_t)n * g->cout * g->ho * g->wo, fresh >> 1 & 1);
    if (conv_is_pointwise(g)) {
        RF(pointwise_backward)(dx, dw, db, dy, x, w, n, g, scratch, fresh & 1);
        return;
    }
    DF_ASSERT(!(fresh & 1));
    const int K = g->cin * g->k * g->k, P = g->ho * g->wo;
    const size_t xs = (size_t)g->cin * g->h * g->w, ys = (size_t)g->cout * P;
    const size_t KP = (size_t)K * P, WK = (size_t)g->cout * K;
    int nth = omp_get_max_threads();
    if (nth > n) nth = n;
    /* Each thread accumulates its images' weight gradients privately; the partial sums are added in
     * thread order afterwards, so the result does not depend on scheduling. */
#pragma omp parallel num_threads(nth)
    {
        int tid = omp_get_thread_num();
        real *s = scratch + (size_t)tid * per;
        real *col = s, *dcol = s + KP, *pw = s + 2 * KP, *pb = pw + WK;
        memset(pw, 0, sizeof(real) * (WK + (size_t)g->cout));
        int lo = (int)((long)n * tid / nth), hi = (int)((long)n * (tid + 1) / nth);
        for (int i = lo; i < hi; i++) {
            const real *xi = x + i * xs, *dyi = dy + i * ys;
            im2col(col, xi, g);
            const real *c = col;
            if (dw) GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, g->cout, K, P, 1, dyi, P, c, P, 1, pw, K);
            if (db)
                for (int o = 0; o < g->cout; o++) {
                    real acc = 0;
                    for (int p = 0; p < P; p++) acc += dyi[(size_t)o * P + p];
                    pb[o] += acc;
                }
            if (dx) {
                GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, K, P, g->cout, 1, w, K, dyi, P, 0, dcol, P);
                col2im_add(dx + i * xs, dcol, g);
            }
        }
    }
    for (int t = 0; t < nth; t++) {
        const real *pw = scratch + (size_t)t * per + 2 * KP, *pb = pw + WK;
        if (dw)
            for (size_t j = 0; j < WK; j++) dw[j] += pw[j];
        if (db)
            for (int o = 0; o < g->cout; o++) db[o] += pb[o];
    }
}

/* ---- linear -------------------------------------------------------------------------------------- */

void RF(linear_forward)(real *y, const real *x, const real *w, const real *b, int n, int in, int out) {
    GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1, x, in, w, in, 0, y, out);
    if (b)
        for (int i = 0; i < n; i++)
            for (int o = 0; o < out; o++) y[(size_t)i * out + o] += b[o];
}

void RF(linear_backward)(real *dx, real *dw, real *db, const real *dy, const real *x, const real *w, int n,
                         int in, int out) {
    if (dw) GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1, dy, out, x, in, 1, dw, in);
    if (dx) GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1, dy, out, w, in, 1, dx, in);
    if (db)
        for (int i = 0; i < n; i++)
            for (int o = 0; o < out; o++) db[o] += dy[(size_t)i * out + o];
}

/* ---- group norm ----------------------------------------------------------------------------------
 * Statistics go per channel first (one pass, each channel block summed by one thread in a fixed
 * order), then per group, so the result is the same for any thread count and any blocking. */

/* Per-channel sums over the pixels: s1[n*c + ch] = sum x, s2 = sum x*y. */
static void channel_sums(double *s1, double *s2, const real *x, const real *y, int n, int c, int hw, int blk) {
    const int cb = c / blk;
#pragma omp parallel for schedule(static)
    for (int nb = 0; nb < n * cb; nb++) {
        double a[16] = {0}, b[16] = {0};
        const real *xb = x + (size_t)nb * hw * blk, *yb = y + (size_t)nb * hw * blk;
        for (int p = 0; p < hw; p++)
            for (int ci = 0; ci < blk; ci++) {
                a[ci] += xb[(size_t)p * blk + ci];
                b[ci] += (double)xb[(size_t)p * blk + ci] * yb[(size_t)p * blk + ci];
            }
        for (int ci = 0; ci < blk; ci++) s1[(size_t)nb * blk + ci] = a[ci], s2[(size_t)nb * blk + ci] = b[ci];
    }
}

/* Per (image, channel): GroupNorm of u = x + v (v may be NULL) written as x a + b, from the statistics. */
static void gn_coeffs(double *a, double *b, const real *v, const real *mean, const real *rstd, const real *gamma,
                      const real *beta, int n, int c, int groups) {
    const int cg = c / groups;
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++) {
            int ng = i * groups + ch / cg;
            size_t o = (size_t)i * c + ch;
            a[o] = (double)rstd[ng] * gamma[ch];
            b[o] = beta[ch] + ((v ? (double)v[o] : 0) - (double)mean[ng]) * a[o];
        }
}

/* Statistics of u = x + v (v: per image and channel, or NULL) per image and group into mean and rstd,
 * and the per-(image, channel) coefficients that normalise it as x a + b (v folded into b). */
static void gn_stats(real *mean, real *rstd, double *a, double *b, const real *x, const real *v, const real *gamma,
                     const real *beta, int n, int c, int hw, int groups, real eps, int blk, double *s) {
    const int cg = c / groups, cb = c / blk;
    const double gsize = (double)cg * hw;
    /* One pass: per channel S = sum x and Q = sum (x - K)^2 around K, the channel's first pixel (close
     * to its mean, so the shifted sums lose little); the group's spread follows exactly from
     * sum (x - m)^2 = Q + 2 (K - m)(S - hw K) + hw (K - m)^2. */
    double *S = s, *Q = s + (size_t)n * c, *K = Q + (size_t)n * c;
#pragma omp parallel for schedule(static)
    for (int nb = 0; nb < n * cb; nb++) {
        const real *xb = x + (size_t)nb * hw * blk;
        double ss[16] = {0}, qq[16] = {0};
#if DF_REAL_F64
        for (int p = 0; p < hw; p++)
            for (int ci = 0; ci < blk; ci++) {
                double d = xb[(size_t)p * blk + ci] - xb[ci];
                ss[ci] += xb[(size_t)p * blk + ci], qq[ci] += d * d;
            }
#else
        vec_lane_stats(xb, (size_t)hw, blk, xb, ss, qq);
#endif
        for (int ci = 0; ci < blk; ci++) {
            size_t o = (size_t)nb * blk + ci;
            S[o] = ss[ci], Q[o] = qq[ci], K[o] = xb[ci];
        }
    }
    for (int ng = 0; ng < n * groups; ng++) {
        double t = 0, var = 0;
        for (int ci = 0; ci < cg; ci++) {
            size_t o = (size_t)ng * cg + ci;
            t += S[o] + (v ? (double)hw * v[o] : 0);
        }
        double mu = t / gsize;
        for (int ci = 0; ci < cg; ci++) {   /* channel values are x + v: around mu - v in x's terms */
            size_t o = (size_t)ng * cg + ci;
            double d = K[o] - (mu - (v ? (double)v[o] : 0));
            var += Q[o] + 2 * d * (S[o] - hw * K[o]) + hw * d * d;
        }
        mean[ng] = (real)mu;
        rstd[ng] = (real)(1.0 / sqrt(fmax(var, 0) / gsize + (double)eps));   /* biased variance, as torch */
    }
    gn_coeffs(a, b, v, mean, rstd, gamma, beta, n, c, groups);
}

void RF(groupnorm_forward)(real *y, real *mean, real *rstd, const real *x, const real *gamma,
                           const real *beta, int n, int c, int hw, int groups, real eps, int blk, double *work) {
    const int cb = c / blk;
    double *a = work + 3 * (size_t)n * c, *b = a + (size_t)n * c;
    gn_stats(mean, rstd, a, b, x, NULL, gamma, beta, n, c, hw, groups, eps, blk, work);
#pragma omp parallel for schedule(static)
    for (int nb = 0; nb < n * cb; nb++) {
        real ka[16], kb[16];
        for (int ci = 0; ci < blk; ci++) ka[ci] = (real)a[(size_t)nb * blk + ci], kb[ci] = (real)b[(size_t)nb * blk + ci];
        const real *xb = x + (size_t)nb * hw * blk;
        real *yb = y + (size_t)nb * hw * blk;
        for (int p = 0; p < hw; p++)
            for (int ci = 0; ci < blk; ci++) yb[(size_t)p * blk + ci] = xb[(size_t)p * blk + ci] * ka[ci] + kb[ci];
    }
}

/* The weight and input gradients of GroupNorm given per-channel sums over pixels of the gradient at
 * its output (A) and of that times u = x + v (D): fills the per-(image, channel) coefficients of
 * du = g kd + x kx + k0 (v folded into k0). */
static void gn_backward_coeffs(real *kd, real *kx, real *k0, real *dgamma, real *dbeta, const double *A,
                               const double *D, const real *v, const real *mean, const real *rstd, const real *gamma,
                               int n, int c, int hw, int groups) {
    const int cg = c / groups;
    const double gsize = (double)cg * hw;
    for (int ch = 0; ch < c; ch++) {
        double sg = 0, sb = 0;
        for (int i = 0; i < n; i++) {
            int ng = i * groups + ch / cg;
            size_t o = (size_t)i * c + ch;
            sg += rstd[ng] * (D[o] - mean[ng] * A[o]);
            sb += A[o];
        }
        if (dgamma) dgamma[ch] += (real)sg;
        if (dbeta) dbeta[ch] += (real)sb;
    }
    /* du = r (g gamma - s1 - uhat s2), s1 = mean(g gamma), s2 = mean(g gamma uhat) over the group */
    for (int ng = 0; ng < n * groups; ng++) {
        int i = ng / groups, g = ng % groups;
        double s1 = 0, s2 = 0, mu = mean[ng], r = rstd[ng];
        for (int ci = 0; ci < cg; ci++) {
            int ch = g * cg + ci;
            size_t o = (size_t)i * c + ch;
            s1 += gamma[ch] * A[o];
            s2 += gamma[ch] * r * (D[o] - mu * A[o]);
        }
        s1 /= gsize, s2 /= gsize;
        const double x_coef = -r * r * s2;
        for (int ci = 0; ci < cg; ci++) {
            int ch = g * cg + ci;
            size_t o = (size_t)i * c + ch;
            kd[o] = (real)(r * gamma[ch]);
            kx[o] = (real)x_coef;
            k0[o] = (real)(r * r * s2 * mu - r * s1 + (v ? x_coef * v[o] : 0));
        }
    }
}

void RF(groupnorm_backward)(real *dx, real *dgamma, real *dbeta, const real *dy, const real *x,
                            const real *mean, const real *rstd, const real *gamma, int n, int c, int hw,
                            int groups, int blk, double *work) {
    const int cb = c / blk;
    double *A = work, *D = work + (size_t)n * c;
    real *kd = (real *)(D + (size_t)n * c), *kx = kd + (size_t)n * c, *k0 = kx + (size_t)n * c;
    channel_sums(A, D, dy, x, n, c, hw, blk);
    gn_backward_coeffs(kd, kx, k0, dgamma, dbeta, A, D, NULL, mean, rstd, gamma, n, c, hw, groups);
    if (!dx) return;
#pragma omp parallel for schedule(static)
    for (int nb = 0; nb < n * cb; nb++) {
        const real *pd = kd + (size_t)nb * blk, *px = kx + (size_t)nb * blk, *p0 = k0 + (size_t)nb * blk;
        const real *xb = x + (size_t)nb * hw * blk, *db = dy + (size_t)nb * hw * blk;
        real *dxb = dx + (size_t)nb * hw * blk;
        for (int p = 0; p < hw; p++)
            for (int ci = 0; ci < blk; ci++) {
                size_t o = (size_t)p * blk + ci;
                dxb[o] += db[o] * pd[ci] + xb[o] * px[ci] + p0[ci];
            }
    }
}

/* ---- GroupNorm + SiLU, fused ----------------------------------------------------------------------
 * y = silu(GroupNorm(x + v)): one pass for the output; the backward pass recomputes z = x a + b twice
 * (once for the sums, once for dx) instead of keeping the normalised values. */

static void norm_silu_out(real *y, const real *x, const double *a, const double *b, int n, int c, int hw, int blk) {
    const int cb = c / blk;
#pragma omp parallel for schedule(static)
    for (int nb = 0; nb < n * cb; nb++) {
        const real *xb = x + (size_t)nb * hw * blk;
        real *yb = y + (size_t)nb * hw * blk;
#if DF_REAL_F64
        for (int p = 0; p < hw; p++)
            for (int ci = 0; ci < blk; ci++) {
                double z = xb[(size_t)p * blk + ci] * a[(size_t)nb * blk + ci] + b[(size_t)nb * blk + ci];
                yb[(size_t)p * blk + ci] = z / (1 + exp(-z));
            }
#else
        float ka[16], kb[16];
        for (int ci = 0; ci < blk; ci++) ka[ci] = (float)a[(size_t)nb * blk + ci], kb[ci] = (float)b[(size_t)nb * blk + ci];
        vec_norm_silu(yb, xb, (size_t)hw, blk, ka, kb);
#endif
    }
}

void RF(norm_silu_forward)(real *y, real *mean, real *rstd, const real *x, const real *v, const real *gamma,
                           const real *beta, int n, int c, int hw, int groups, real eps, int blk, double *work) {
    double *a = work + 3 * (size_t)n * c, *b = a + (size_t)n * c;
    gn_stats(mean, rstd, a, b, x, v, gamma, beta, n, c, hw, groups, eps, blk, work);
    norm_silu_out(y, x, a, b, n, c, hw, blk);
}

void RF(norm_silu_again)(real *y, const real *x, const real *v, const real *mean, const real *rstd, const real *gamma,
                         const real *beta, int n, int c, int hw, int groups, int blk, double *work) {
    double *a = work, *b = a + (size_t)n * c;
    gn_coeffs(a, b, v, mean, rstd, gamma, beta, n, c, groups);
    norm_silu_out(y, x, a, b, n, c, hw, blk);
}

void RF(norm_silu_backward)(real *dx, real *dv, real *dgamma, real *dbeta, const real *dy, const real *x,
                            const real *v, const real *mean, const real *rstd, const real *gamma, const real *beta,
                            int n, int c, int hw, int groups, int blk, double *work) {
    const int cb = c / blk;
    const size_t nc = (size_t)n * c;
    double *a = work, *b = a + nc, *A = b + nc, *D = A + nc;
    real *kd = (real *)(D + nc), *kx = kd + nc, *k0 = kx + nc;
    gn_coeffs(a, b, v, mean, rstd, gamma, beta, n, c, groups);
    /* pass 1: dz = dy silu'(z); per channel A = sum dz, D = sum dz x (then + v A: the sum of dz u) */
#pragma omp parallel for schedule(static)
    for (int nb = 0; nb < n * cb; nb++) {
        const size_t o = (size_t)nb * blk;
        const real *xb = x + o * hw, *db = dy + o * hw;
        double sa[16] = {0}, sd[16] = {0};
#if DF_REAL_F64
        for (int p = 0; p < hw; p++)
            for (int ci = 0; ci < blk; ci++) {
                double xv = xb[(size_t)p * blk + ci], z = xv * a[o + ci] + b[o + ci], sg = 1 / (1 + exp(-z));
                double dz = db[(size_t)p * blk + ci] * sg * (1 + z * (1 - sg));
                sa[ci] += dz, sd[ci] += dz * xv;
            }
#else
        float ka[16], kb[16];
        for (int ci = 0; ci < blk; ci++) ka[ci] = (float)a[o + ci], kb[ci] = (float)b[o + ci];
        vec_norm_silu_sums(db, xb, (size_t)hw, blk, ka, kb, sa, sd);
#endif
        for (int ci = 0; ci < blk; ci++) A[o + ci] = sa[ci], D[o + ci] = sd[ci] + (v ? v[o + ci] * sa[ci] : 0);
    }
    gn_backward_coeffs(kd, kx, k0, dgamma, dbeta, A, D, v, mean, rstd, gamma, n, c, hw, groups);
    if (!dx && !dv) return;
    /* pass 2: du = dz kd + x kx + k0 into dx; its pixel sums into dv */
#pragma omp parallel for schedule(static)
    for (int nb = 0; nb < n * cb; nb++) {
        const size_t o = (size_t)nb * blk;
        const real *xb = x + o * hw, *db = dy + o * hw;
        real *dxb = dx ? dx + o * hw : NULL;
        double ss[16] = {0};
#if DF_REAL_F64
        for (int p = 0; p < hw; p++)
            for (int ci = 0; ci < blk; ci++) {
                size_t q = (size_t)p * blk + ci;
                double z = xb[q] * a[o + ci] + b[o + ci], sg = 1 / (1 + exp(-z));
                double g = db[q] * sg * (1 + z * (1 - sg)) * kd[o + ci] + xb[q] * kx[o + ci] + k0[o + ci];
                if (dxb) dxb[q] += g;
                ss[ci] += g;
            }
#else
        float ka[16], kb[16], tmp[16];
        for (int ci = 0; ci < blk; ci++) ka[ci] = (float)a[o + ci], kb[ci] = (float)b[o + ci];
        if (dxb) {
            vec_norm_silu_dx(dxb, db, xb, (size_t)hw, blk, ka, kb, kd + o, kx + o, k0 + o, ss);
        } else {   /* only dv wanted: accumulate into a scratch row per pixel */
            for (int p = 0; p < hw; p++) {
                for (int ci = 0; ci < blk; ci++) tmp[ci] = 0;
                vec_norm_silu_dx(tmp, db + (size_t)p * blk, xb + (size_t)p * blk, 1, blk, ka, kb, kd + o, kx + o, k0 + o, ss);
            }
        }
#endif
        if (dv)
            for (int ci = 0; ci < blk; ci++) dv[o + ci] += (real)ss[ci];
    }
}

/* Threads take contiguous spans; float32 uses the vectorised kernels, float64 libm. */
#define SPAN 4096

void RF(silu_forward)(real *y, const real *x, size_t count) {
#pragma omp parallel for schedule(static)
    for (size_t s = 0; s < count; s += SPAN) {
        size_t e = s + SPAN < count ? s + SPAN : count;
#if DF_REAL_F64
        for (size_t i = s; i < e; i++) y[i] = x[i] / (1 + REXP(-x[i]));
#else
        vec_silu(y + s, x + s, e - s);
#endif
    }
}

void RF(silu_backward)(real *dx, const real *dy, const real *x, size_t count) {
#pragma omp parallel for schedule(static)
    for (size_t s = 0; s < count; s += SPAN) {
        size_t e = s + SPAN < count ? s + SPAN : count;
#if DF_REAL_F64
        for (size_t i = s; i < e; i++) {
            real sg = 1 / (1 + REXP(-x[i]));
            dx[i] += dy[i] * sg * (1 + x[i] * (1 - sg));
        }
#else
        vec_silu_backward(dx + s, dy + s, x + s, e - s);
#endif
    }
}

/* ---- embeddings ------------------------------------------------------------------------------------ */

void RF(timestep_forward)(real *y, const real *t, int n, int dim, int flip, real shift) {
    const int half = dim / 2;
    for (int i = 0; i < n; i++) {
        real *yi = y + (size_t)i * dim;
        for (int j = 0; j < half; j++) {
            double freq = exp(-log(10000.0) * j / ((double)half - (double)shift));
            double a = (double)t[i] * freq;
            yi[flip ? half + j : j] = (real)sin(a);
            yi[flip ? j : half + j] = (real)cos(a);
        }
        if (dim % 2) yi[dim - 1] = 0;
    }
}

void RF(embed_forward)(real *y, const real *table, const int *idx, int n, int dim) {
    for (int i = 0; i < n; i++) memcpy(y + (size_t)i * dim, table + (size_t)idx[i] * dim, sizeof(real) * dim);
}

void RF(embed_backward)(real *dtable, const real *dy, const int *idx, int n, int dim) {
    for (int i = 0; i < n; i++)
        for (int j = 0; j < dim; j++) dtable[(size_t)idx[i] * dim + j] += dy[(size_t)i * dim + j];
}

/* ---- resampling ----------------------------------------------------------------------------------
 * nc / blk planes of h x w pixels, each pixel a vector of blk values (1 for the plain layout). */

void RF(upsample_forward)(real *y, const real *x, int nc, int h, int w, int blk) {
    const size_t W = 2 * (size_t)w * blk;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < nc / blk; c++) {
        const real *xc = x + (size_t)c * h * w * blk;
        real *yc = y + (size_t)c * 4 * h * w * blk;
        for (int i = 0; i < h; i++) {
            real *r0 = yc + (size_t)(2 * i) * W, *r1 = r0 + W;
            for (int j = 0; j < w; j++)
                for (int ci = 0; ci < blk; ci++)
                    r0[(2 * j) * blk + ci] = r0[(2 * j + 1) * blk + ci] = xc[((size_t)i * w + j) * blk + ci];
            memcpy(r1, r0, sizeof(real) * W);
        }
    }
}

void RF(upsample_backward)(real *dx, const real *dy, int nc, int h, int w, int blk) {
    const size_t W = 2 * (size_t)w * blk;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < nc / blk; c++) {
        const real *dyc = dy + (size_t)c * 4 * h * w * blk;
        real *dxc = dx + (size_t)c * h * w * blk;
        for (int i = 0; i < h; i++)
            for (int j = 0; j < w; j++)
                for (int ci = 0; ci < blk; ci++) {
                    const real *p = dyc + (size_t)(2 * i) * W + (size_t)2 * j * blk + ci;
                    dxc[((size_t)i * w + j) * blk + ci] += p[0] + p[blk] + p[W] + p[W + blk];
                }
    }
}

void RF(avgpool_forward)(real *y, const real *x, int nc, int h, int w, int blk) {
    const int ho = h / 2, wo = w / 2;
    const size_t W = (size_t)w * blk;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < nc / blk; c++)
        for (int i = 0; i < ho; i++)
            for (int j = 0; j < wo; j++)
                for (int ci = 0; ci < blk; ci++) {
                    const real *p = x + (size_t)c * h * W + (size_t)(2 * i) * W + (size_t)2 * j * blk + ci;
                    y[(((size_t)c * ho + i) * wo + j) * blk + ci] = (p[0] + p[blk] + p[W] + p[W + blk]) * (real)0.25;
                }
}

void RF(avgpool_backward)(real *dx, const real *dy, int nc, int h, int w, int blk) {
    const int ho = h / 2, wo = w / 2;
    const size_t W = (size_t)w * blk;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < nc / blk; c++)
        for (int i = 0; i < ho; i++)
            for (int j = 0; j < wo; j++)
                for (int ci = 0; ci < blk; ci++) {
                    real g = dy[(((size_t)c * ho + i) * wo + j) * blk + ci] * (real)0.25;
                    real *p = dx + (size_t)c * h * W + (size_t)(2 * i) * W + (size_t)2 * j * blk + ci;
                    p[0] += g;
                    p[blk] += g;
                    p[W] += g;
                    p[W + blk] += g;
                }
}

void RF(mean_hw_forward)(real *y, const real *x, int nc, int hw) {
    for (int c = 0; c < nc; c++) {
        double acc = 0;
        for (int i = 0; i < hw; i++) acc += x[(size_t)c * hw + i];
        y[c] = (real)(acc / hw);
    }
}

void RF(mean_hw_backward)(real *dx, const real *dy, int nc, int hw) {
    for (int c = 0; c < nc; c++) {
        real g = dy[c] / (real)hw;
        for (int i = 0; i < hw; i++) dx[(size_t)c * hw + i] += g;
    }
}

/* ---- joins --------------------------------------------------------------------------------------- */

void RF(concat_forward)(real *y, const real *a, const real *b, int n, int ca, int cb, int hw) {
    const size_t sa = (size_t)ca * hw, sb = (size_t)cb * hw;
    for (int i = 0; i < n; i++) {
        memcpy(y + i * (sa + sb), a + i * sa, sizeof(real) * sa);
        memcpy(y + i * (sa + sb) + sa, b + i * sb, sizeof(real) * sb);
    }
}

void RF(concat_backward)(real *da, real *db, const real *dy, int n, int ca, int cb, int hw) {
    const size_t sa = (size_t)ca * hw, sb = (size_t)cb * hw;
    for (int i = 0; i < n; i++) {
        const real *d = dy + i * (sa + sb);
        if (da)
            for (size_t j = 0; j < sa; j++) da[i * sa + j] += d[j];
        if (db)
            for (size_t j = 0; j < sb; j++) db[i * sb + j] += d[sa + j];
    }
}

void RF(add_forward)(real *y, const real *a, const real *b, real s, size_t count) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < count; i++) y[i] = (a[i] + b[i]) * s;
}

void RF(add_backward)(real *da, real *db, const real *dy, real s, size_t count, unsigned fresh) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < count; i++) {
        const real g = dy[i] * s;
        if (da) da[i] = fresh & 1 ? g : da[i] + g;
        if (db) db[i] = fresh & 2 ? g : db[i] + g;
    }
}

/* Per-channel ops walk (image, channel block) pairs; a block holds hw pixels of blk channels. */
void RF(add_nc_forward)(real *y, const real *x, const real *v, int n, int c, int hw, int blk) {
#pragma omp parallel for schedule(static)
    for (int nb = 0; nb < n * (c / blk); nb++) {
        const real *vb = v + (size_t)nb * blk;   /* (n, c) row-major: block nb starts at nb*blk */
        const real *xb = x + (size_t)nb * hw * blk;
        real *yb = y + (size_t)nb * hw * blk;
        for (int p = 0; p < hw; p++)
            for (int ci = 0; ci < blk; ci++) yb[(size_t)p * blk + ci] = xb[(size_t)p * blk + ci] + vb[ci];
    }
}

void RF(add_nc_backward)(real *dx, real *dv, const real *dy, int n, int c, int hw, int blk) {
#pragma omp parallel for schedule(static)
    for (int nb = 0; nb < n * (c / blk); nb++) {
        real acc[16] = {0};
        const real *db = dy + (size_t)nb * hw * blk;
        real *dxb = dx ? dx + (size_t)nb * hw * blk : NULL;
        for (int p = 0; p < hw; p++)
            for (int ci = 0; ci < blk; ci++) {
                real g = db[(size_t)p * blk + ci];
                if (dxb) dxb[(size_t)p * blk + ci] += g;
                acc[ci] += g;
            }
        if (dv)
            for (int ci = 0; ci < blk; ci++) dv[(size_t)nb * blk + ci] += acc[ci];
    }
}

void RF(scale_shift_forward)(real *y, const real *x, const real *v, int n, int c, int hw, int blk) {
    const int cb = c / blk;
#pragma omp parallel for schedule(static)
    for (int nb = 0; nb < n * cb; nb++) {
        int i = nb / cb, c0 = (nb % cb) * blk;
        real sc[16], sh[16];
        for (int ci = 0; ci < blk; ci++)
            sc[ci] = 1 + v[(size_t)i * 2 * c + c0 + ci], sh[ci] = v[(size_t)i * 2 * c + c + c0 + ci];
        const real *xb = x + (size_t)nb * hw * blk;
        real *yb = y + (size_t)nb * hw * blk;
        for (int p = 0; p < hw; p++)
            for (int ci = 0; ci < blk; ci++) yb[(size_t)p * blk + ci] = xb[(size_t)p * blk + ci] * sc[ci] + sh[ci];
    }
}

void RF(scale_shift_backward)(real *dx, real *dv, const real *dy, const real *x, const real *v, int n, int c,
                              int hw, int blk) {
    const int cb = c / blk;
#pragma omp parallel for schedule(static)
    for (int nb = 0; nb < n * cb; nb++) {
        int i = nb / cb, c0 = (nb % cb) * blk;
        real sc[16], gs[16] = {0}, gh[16] = {0};
        for (int ci = 0; ci < blk; ci++) sc[ci] = 1 + v[(size_t)i * 2 * c + c0 + ci];
        const real *xb = x + (size_t)nb * hw * blk, *db = dy + (size_t)nb * hw * blk;
        real *dxb = dx ? dx + (size_t)nb * hw * blk : NULL;
        for (int p = 0; p < hw; p++)
            for (int ci = 0; ci < blk; ci++) {
                real g = db[(size_t)p * blk + ci];
                if (dxb) dxb[(size_t)p * blk + ci] += g * sc[ci];
                gs[ci] += g * xb[(size_t)p * blk + ci];
                gh[ci] += g;
            }
        if (dv)
            for (int ci = 0; ci < blk; ci++) {
                dv[(size_t)i * 2 * c + c0 + ci] += gs[ci];
                dv[(size_t)i * 2 * c + c + c0 + ci] += gh[ci];
            }
    }
}

/* ---- attention ----------------------------------------------------------------------------------- */

void RF(attention_forward)(real *y, real *p, const real *q, const real *k, const real *v, int n, int heads,
                           int d, int Lq, int Lk, real scale, int causal) {
    const size_t qs = (size_t)d * Lq, ks = (size_t)d * Lk, PP = (size_t)Lq * Lk;
#pragma omp parallel for schedule(static)
    for (int nh = 0; nh < n * heads; nh++) {
        const real *Q = q + nh * qs, *K = k + nh * ks, *V = v + nh * ks;
        real *P = p + nh * PP, *Y = y + nh * qs;
        /* S (Lq, Lk) = scale * Q^T K, then a stable softmax over each row (causal: over j <= i only) */
        gemm_rm(1, 0, Lq, Lk, d, scale, Q, Lq, K, Lk, 0, P, Lk);
        for (int i = 0; i < Lq; i++) {
            real *row = P + (size_t)i * Lk;
            const int end = causal ? i + 1 : Lk;
#if DF_REAL_F64
            real mx = row[0];
            for (int j = 1; j < end; j++) mx = row[j] > mx ? row[j] : mx;
            double sum = 0;
            for (int j = 0; j < end; j++) {
                row[j] = REXP(row[j] - mx);
                sum += row[j];
            }
            for (int j = 0; j < end; j++) row[j] /= sum;
#else
            const double sum = vec_exp_shift_sum(row, (size_t)end, vec_max(row, (size_t)end));
            vec_scale(row, (size_t)end, (real)(1.0 / sum));
#endif
            for (int j = end; j < Lk; j++) row[j] = 0;
        }
        /* Y (d, Lq) = V (d, Lk) P^T */
        gemm_rm(0, 1, d, Lq, Lk, 1, V, Lk, P, Lk, 0, Y, Lq);
    }
}

void RF(attention_backward)(real *dq, real *dk, real *dv, const real *dy, const real *p, const real *q,
                            const real *k, const real *v, int n, int heads, int d, int Lq, int Lk, real scale,
                            real *scratch, size_t per, unsigned fresh) {
    const real bq = fresh & 1 ? 0 : 1, bk = fresh & 2 ? 0 : 1, bv = fresh & 4 ? 0 : 1;
    const size_t qs = (size_t)d * Lq, ks = (size_t)d * Lk, PP = (size_t)Lq * Lk;
#pragma omp parallel for schedule(static)
    for (int nh = 0; nh < n * heads; nh++) {
        const real *Q = q + nh * qs, *K = k + nh * ks, *V = v + nh * ks, *P = p + nh * PP;
        const real *dY = dy + nh * qs;
        real *dP = THREAD_SCRATCH(scratch, per);
        /* dV (d, Lk) = dY P ; dP (Lq, Lk) = dY^T V */
        gemm_rm(0, 0, d, Lk, Lq, 1, dY, Lq, P, Lk, bv, dv + nh * ks, Lk);
        gemm_rm(1, 0, Lq, Lk, d, 1, dY, Lq, V, Lk, 0, dP, Lk);
        /* softmax backward: dS = P * (dP - sum_j dP P); masked entries have P = 0, so dS = 0 there */
        for (int i = 0; i < Lq; i++) {
            real *r = dP + (size_t)i * Lk;
            const real *pr = P + (size_t)i * Lk;
#if DF_REAL_F64
            double dot = 0;
            for (int j = 0; j < Lk; j++) dot += (double)r[j] * pr[j];
            for (int j = 0; j < Lk; j++) r[j] = pr[j] * (r[j] - (real)dot);
#else
            vec_softmax_backward(r, pr, (size_t)Lk);
#endif
        }
        /* dQ (d, Lq) = scale K dS^T ; dK (d, Lk) = scale Q dS */
        gemm_rm(0, 1, d, Lq, Lk, scale, K, Lk, dP, Lk, bq, dq + nh * qs, Lq);
        gemm_rm(0, 0, d, Lk, Lq, scale, Q, Lq, dP, Lk, bk, dk + nh * ks, Lk);
    }
}

/* ---- dropout, affine, loss ------------------------------------------------------------------------- */

/* Masks come from the counter-based generator: element i is dropped when word i of the stream keyed by
 * seed falls below p 2^32. Threads draw their parts independently, and the backward pass regenerates
 * the mask instead of keeping it. seed 0: identity (evaluation). */
static uint32_t drop_cut(real p) { return (uint32_t)fmin((double)p * 4294967296.0, 4294967295.0); }

void RF(dropout_forward)(real *y, const real *x, size_t count, real p, uint64_t seed) {
    if (!seed) {
        if (y != x) memcpy(y, x, sizeof(real) * count);
        return;
    }
    const uint32_t cut = drop_cut(p);
    const real keep = 1 / (1 - p);
#pragma omp parallel for schedule(static)
    for (size_t blk = 0; blk < (count + 3) / 4; blk++) {
        uint32_t w[4];
        df_philox(seed, blk, w);
        for (size_t k = 0; k < 4 && 4 * blk + k < count; k++) y[4 * blk + k] = w[k] < cut ? 0 : x[4 * blk + k] * keep;
    }
}

void RF(dropout_backward)(real *dx, const real *dy, size_t count, real p, uint64_t seed) {
    const uint32_t cut = drop_cut(p);
    const real keep = seed ? 1 / (1 - p) : 1;
#pragma omp parallel for schedule(static)
    for (size_t blk = 0; blk < (count + 3) / 4; blk++) {
        uint32_t w[4] = {0};
        if (seed) df_philox(seed, blk, w);
        for (size_t k = 0; k < 4 && 4 * blk + k < count; k++)
            dx[4 * blk + k] += seed && w[k] < cut ? 0 : dy[4 * blk + k] * keep;
    }
}

void RF(affine_forward)(real *y, const real *x, real a, real b, size_t count) {
    for (size_t i = 0; i < count; i++) y[i] = a * x[i] + b;
}

void RF(affine_backward)(real *dx, const real *dy, real a, size_t count) {
    for (size_t i = 0; i < count; i++) dx[i] += a * dy[i];
}

double RF(mse_forward)(const real *a, const real *b, size_t count) {
    double s = 0;
    for (size_t i = 0; i < count; i++) {
        double d = (double)a[i] - (double)b[i];
        s += d * d;
    }
    return s / (double)count;
}

void RF(mse_backward)(real *da, const real *a, const real *b, size_t count, real scale) {
    const real k = 2 * scale / (real)count;
    for (size_t i = 0; i < count; i++) da[i] = k * (a[i] - b[i]);
}
