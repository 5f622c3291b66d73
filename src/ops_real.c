/* The U-Net's ops, forward and backward side by side, written once for `real` (float and double).
 * Convolutions and projections go through BLAS (im2col + GEMM); loops split over images with OpenMP. */
#include "ops_real.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#define THREAD_SCRATCH(s, per) ((s) + (size_t)omp_get_thread_num() * (per))

/* ---- convolution --------------------------------------------------------------------------------- */

static int conv_is_pointwise(const conv_geom *g) {
    return g->k == 1 && g->stride == 1 && g->pad_t == 0 && g->pad_l == 0 && g->ho == g->h && g->wo == g->w;
}

size_t RF(conv_scratch)(const conv_geom *g) {
    size_t K = (size_t)g->cin * g->k * g->k, P = (size_t)g->ho * g->wo;
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

void RF(conv_forward)(real *y, const real *x, const real *w, const real *b, int n, const conv_geom *g,
                      real *scratch, size_t per) {
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
        GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->cout, P, K, 1, w, K, col, P, 0, yi, P);
        if (b)
            for (int o = 0; o < g->cout; o++)
                for (int p = 0; p < P; p++) yi[(size_t)o * P + p] += b[o];
    }
}

void RF(conv_backward)(real *dx, real *dw, real *db, const real *dy, const real *x, const real *w, int n,
                       const conv_geom *g, real *scratch, size_t per) {
    const int K = g->cin * g->k * g->k, P = g->ho * g->wo;
    const size_t xs = (size_t)g->cin * g->h * g->w, ys = (size_t)g->cout * P;
    const size_t KP = (size_t)K * P, WK = (size_t)g->cout * K;
    const int pointwise = conv_is_pointwise(g);
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
            const real *c = xi;
            if (!pointwise) {
                im2col(col, xi, g);
                c = col;
            }
            if (dw) GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, g->cout, K, P, 1, dyi, P, c, P, 1, pw, K);
            if (db)
                for (int o = 0; o < g->cout; o++) {
                    real acc = 0;
                    for (int p = 0; p < P; p++) acc += dyi[(size_t)o * P + p];
                    pb[o] += acc;
                }
            if (dx) {
                if (pointwise) {
                    GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, K, P, g->cout, 1, w, K, dyi, P, 1,
                         dx + i * xs, P);
                } else {
                    GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, K, P, g->cout, 1, w, K, dyi, P, 0, dcol, P);
                    col2im_add(dx + i * xs, dcol, g);
                }
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

/* ---- group norm ---------------------------------------------------------------------------------- */

void RF(groupnorm_forward)(real *y, real *mean, real *rstd, const real *x, const real *gamma,
                           const real *beta, int n, int c, int hw, int groups, real eps) {
    const int cg = c / groups;
    const size_t gsize = (size_t)cg * hw;
#pragma omp parallel for schedule(static)
    for (int ng = 0; ng < n * groups; ng++) {
        const real *xg = x + (size_t)ng * gsize;
        double s = 0;
        for (size_t j = 0; j < gsize; j++) s += xg[j];
        double mu = s / (double)gsize, v = 0;
        for (size_t j = 0; j < gsize; j++) {
            double d = xg[j] - mu;
            v += d * d;
        }
        v /= (double)gsize;   /* biased variance, as torch.nn.GroupNorm */
        real r = (real)(1.0 / sqrt(v + (double)eps));
        mean[ng] = (real)mu;
        rstd[ng] = r;
        int g = ng % groups;
        real *yg = y + (size_t)ng * gsize;
        for (int ci = 0; ci < cg; ci++) {
            int ch = g * cg + ci;
            real a = r * gamma[ch], bb = beta[ch] - (real)mu * a;
            const real *xc = xg + (size_t)ci * hw;
            real *yc = yg + (size_t)ci * hw;
            for (int j = 0; j < hw; j++) yc[j] = xc[j] * a + bb;
        }
    }
}

void RF(groupnorm_backward)(real *dx, real *dgamma, real *dbeta, const real *dy, const real *x,
                            const real *mean, const real *rstd, const real *gamma, int n, int c, int hw,
                            int groups) {
    const int cg = c / groups;
    const size_t gsize = (size_t)cg * hw;
    if (dgamma || dbeta) {
#pragma omp parallel for schedule(static)
        for (int ch = 0; ch < c; ch++) {
            double sg = 0, sb = 0;
            int g = ch / cg;
            for (int i = 0; i < n; i++) {
                const real *xc = x + ((size_t)i * c + ch) * hw, *dc = dy + ((size_t)i * c + ch) * hw;
                double mu = mean[i * groups + g], r = rstd[i * groups + g];
                for (int j = 0; j < hw; j++) {
                    sg += dc[j] * (xc[j] - mu) * r;
                    sb += dc[j];
                }
            }
            if (dgamma) dgamma[ch] += (real)sg;
            if (dbeta) dbeta[ch] += (real)sb;
        }
    }
    if (!dx) return;
#pragma omp parallel for schedule(static)
    for (int ng = 0; ng < n * groups; ng++) {
        int g = ng % groups;
        const real *xg = x + (size_t)ng * gsize, *dg = dy + (size_t)ng * gsize;
        double mu = mean[ng], r = rstd[ng];
        /* dx = r * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dy * gamma */
        double s1 = 0, s2 = 0;
        for (int ci = 0; ci < cg; ci++) {
            double gm = gamma[g * cg + ci];
            for (int j = 0; j < hw; j++) {
                size_t o = (size_t)ci * hw + j;
                double dh = dg[o] * gm;
                s1 += dh;
                s2 += dh * (xg[o] - mu) * r;
            }
        }
        s1 /= (double)gsize;
        s2 /= (double)gsize;
        real *dxg = dx + (size_t)ng * gsize;
        for (int ci = 0; ci < cg; ci++) {
            double gm = gamma[g * cg + ci];
            for (int j = 0; j < hw; j++) {
                size_t o = (size_t)ci * hw + j;
                double xh = (xg[o] - mu) * r;
                dxg[o] += (real)(r * (dg[o] * gm - s1 - xh * s2));
            }
        }
    }
}

/* ---- SiLU ---------------------------------------------------------------------------------------- */

void RF(silu_forward)(real *y, const real *x, size_t count) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < count; i++) y[i] = x[i] / (1 + REXP(-x[i]));
}

void RF(silu_backward)(real *dx, const real *dy, const real *x, size_t count) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < count; i++) {
        real s = 1 / (1 + REXP(-x[i]));
        dx[i] += dy[i] * s * (1 + x[i] * (1 - s));
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

/* ---- resampling ---------------------------------------------------------------------------------- */

void RF(upsample_forward)(real *y, const real *x, int nc, int h, int w) {
    const int W = 2 * w;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < nc; c++) {
        const real *xc = x + (size_t)c * h * w;
        real *yc = y + (size_t)c * 4 * h * w;
        for (int i = 0; i < h; i++) {
            real *r0 = yc + (size_t)(2 * i) * W, *r1 = r0 + W;
            for (int j = 0; j < w; j++) r0[2 * j] = r0[2 * j + 1] = xc[(size_t)i * w + j];
            memcpy(r1, r0, sizeof(real) * W);
        }
    }
}

void RF(upsample_backward)(real *dx, const real *dy, int nc, int h, int w) {
    const int W = 2 * w;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < nc; c++) {
        const real *dyc = dy + (size_t)c * 4 * h * w;
        real *dxc = dx + (size_t)c * h * w;
        for (int i = 0; i < h; i++)
            for (int j = 0; j < w; j++) {
                const real *p = dyc + (size_t)(2 * i) * W + 2 * j;
                dxc[(size_t)i * w + j] += p[0] + p[1] + p[W] + p[W + 1];
            }
    }
}

void RF(avgpool_forward)(real *y, const real *x, int nc, int h, int w) {
    const int ho = h / 2, wo = w / 2;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < nc; c++)
        for (int i = 0; i < ho; i++)
            for (int j = 0; j < wo; j++) {
                const real *p = x + (size_t)c * h * w + (size_t)(2 * i) * w + 2 * j;
                y[((size_t)c * ho + i) * wo + j] = (p[0] + p[1] + p[w] + p[w + 1]) * (real)0.25;
            }
}

void RF(avgpool_backward)(real *dx, const real *dy, int nc, int h, int w) {
    const int ho = h / 2, wo = w / 2;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < nc; c++)
        for (int i = 0; i < ho; i++)
            for (int j = 0; j < wo; j++) {
                real g = dy[((size_t)c * ho + i) * wo + j] * (real)0.25;
                real *p = dx + (size_t)c * h * w + (size_t)(2 * i) * w + 2 * j;
                p[0] += g;
                p[1] += g;
                p[w] += g;
                p[w + 1] += g;
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

void RF(add_backward)(real *da, real *db, const real *dy, real s, size_t count) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < count; i++) {
        if (da) da[i] += dy[i] * s;
        if (db) db[i] += dy[i] * s;
    }
}

void RF(add_nc_forward)(real *y, const real *x, const real *v, int n, int c, int hw) {
#pragma omp parallel for schedule(static)
    for (int nc = 0; nc < n * c; nc++)
        for (int j = 0; j < hw; j++) y[(size_t)nc * hw + j] = x[(size_t)nc * hw + j] + v[nc];
}

void RF(add_nc_backward)(real *dx, real *dv, const real *dy, int n, int c, int hw) {
#pragma omp parallel for schedule(static)
    for (int nc = 0; nc < n * c; nc++) {
        real acc = 0;
        for (int j = 0; j < hw; j++) {
            real g = dy[(size_t)nc * hw + j];
            if (dx) dx[(size_t)nc * hw + j] += g;
            acc += g;
        }
        if (dv) dv[nc] += acc;
    }
}

void RF(scale_shift_forward)(real *y, const real *x, const real *v, int n, int c, int hw) {
#pragma omp parallel for schedule(static)
    for (int nc = 0; nc < n * c; nc++) {
        int i = nc / c, ch = nc % c;
        real sc = 1 + v[(size_t)i * 2 * c + ch], sh = v[(size_t)i * 2 * c + c + ch];
        for (int j = 0; j < hw; j++) y[(size_t)nc * hw + j] = x[(size_t)nc * hw + j] * sc + sh;
    }
}

void RF(scale_shift_backward)(real *dx, real *dv, const real *dy, const real *x, const real *v, int n, int c,
                              int hw) {
#pragma omp parallel for schedule(static)
    for (int nc = 0; nc < n * c; nc++) {
        int i = nc / c, ch = nc % c;
        real sc = 1 + v[(size_t)i * 2 * c + ch], gs = 0, gh = 0;
        for (int j = 0; j < hw; j++) {
            real g = dy[(size_t)nc * hw + j];
            if (dx) dx[(size_t)nc * hw + j] += g * sc;
            gs += g * x[(size_t)nc * hw + j];
            gh += g;
        }
        if (dv) {
            dv[(size_t)i * 2 * c + ch] += gs;
            dv[(size_t)i * 2 * c + c + ch] += gh;
        }
    }
}

/* ---- attention ----------------------------------------------------------------------------------- */

void RF(attention_forward)(real *y, real *p, const real *q, const real *k, const real *v, int n, int heads,
                           int d, int L, real scale) {
    const size_t hs = (size_t)d * L, LL = (size_t)L * L;
#pragma omp parallel for schedule(static)
    for (int nh = 0; nh < n * heads; nh++) {
        const real *Q = q + nh * hs, *K = k + nh * hs, *V = v + nh * hs;
        real *P = p + nh * LL, *Y = y + nh * hs;
        /* S (L, L) = scale * Q^T K, then a stable softmax over each row */
        GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, L, L, d, scale, Q, L, K, L, 0, P, L);
        for (int i = 0; i < L; i++) {
            real *row = P + (size_t)i * L, mx = row[0];
            for (int j = 1; j < L; j++) mx = row[j] > mx ? row[j] : mx;
            double sum = 0;
            for (int j = 0; j < L; j++) {
                row[j] = REXP(row[j] - mx);
                sum += row[j];
            }
            real inv = (real)(1.0 / sum);
            for (int j = 0; j < L; j++) row[j] *= inv;
        }
        /* Y (d, L) = V (d, L) P^T */
        GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, d, L, L, 1, V, L, P, L, 0, Y, L);
    }
}

void RF(attention_backward)(real *dq, real *dk, real *dv, const real *dy, const real *p, const real *q,
                            const real *k, const real *v, int n, int heads, int d, int L, real scale,
                            real *scratch, size_t per) {
    const size_t hs = (size_t)d * L, LL = (size_t)L * L;
#pragma omp parallel for schedule(static)
    for (int nh = 0; nh < n * heads; nh++) {
        const real *Q = q + nh * hs, *K = k + nh * hs, *V = v + nh * hs, *P = p + nh * LL;
        const real *dY = dy + nh * hs;
        real *dP = THREAD_SCRATCH(scratch, per);
        /* dV = dY P ; dP = dY^T V */
        GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, d, L, L, 1, dY, L, P, L, 1, dv + nh * hs, L);
        GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, L, L, d, 1, dY, L, V, L, 0, dP, L);
        /* softmax backward: dS = P * (dP - sum_j dP P) */
        for (int i = 0; i < L; i++) {
            real *r = dP + (size_t)i * L;
            const real *pr = P + (size_t)i * L;
            double dot = 0;
            for (int j = 0; j < L; j++) dot += (double)r[j] * pr[j];
            for (int j = 0; j < L; j++) r[j] = pr[j] * (r[j] - (real)dot);
        }
        /* dQ = scale K dS^T ; dK = scale Q dS */
        GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, d, L, L, scale, K, L, dP, L, 1, dq + nh * hs, L);
        GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, d, L, L, scale, Q, L, dP, L, 1, dk + nh * hs, L);
    }
}

/* ---- dropout, affine, loss ------------------------------------------------------------------------- */

void RF(dropout_forward)(real *y, real *mask, const real *x, size_t count, real p, uint64_t seed) {
    df_rng r;
    df_rng_init(&r, seed);
    const real keep = 1 / (1 - p);
    for (size_t i = 0; i < count; i++) {
        mask[i] = df_rng_uniform(&r) < (double)p ? 0 : keep;
        y[i] = x[i] * mask[i];
    }
}

void RF(dropout_backward)(real *dx, const real *dy, const real *mask, size_t count) {
    for (size_t i = 0; i < count; i++) dx[i] += dy[i] * mask[i];
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
