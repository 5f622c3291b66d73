/* The FID Inception-v3 forward, written once for `real` (float32: the features; float64: the reference
 * the tests compare with): bilinear resizing, convolutions (im2col + GEMM), pools and the block wiring. */
#include "inception.h"
#include "real.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#if !DF_REAL_F64 && defined(HAVE_DNNL)
#include <dnnl.h>
#endif

/* C (M, N) = A (M, K) B (K, N), row-major, on the calling thread. In float32 with oneDNN built in, its
 * sgemm: JIT kernels for the CPU's widest vectors (AVX-512 where there is), 1.8 to 3 times OpenBLAS's on
 * the development machine; called inside our parallel region it stays on the calling thread. */
static void gemm(int M, int N, int K, const real *A, int lda, const real *B, int ldb, real *C, int ldc) {
#if !DF_REAL_F64 && defined(HAVE_DNNL)
    dnnl_status_t s = dnnl_sgemm('N', 'N', M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, ldc);
    DF_ASSERT(s == dnnl_success);
#else
    GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1, A, lda, B, ldb, 0, C, ldc);
#endif
}

/* ---- resizing -------------------------------------------------------------------------------------- */

/* PyTorch's source index for align_corners=False: scale (dst + 0.5) - 0.5 with scale = in / out, clamped
 * at 0 (aten's area_pixel_compute_source_index), then the left neighbour, the right one (the same at
 * the last index) and the weight of the right one. */
static void source_index(int dst, int in, int out, int *i0, int *i1, double *lambda) {
    double s = ((double)dst + 0.5) * ((double)in / (double)out) - 0.5;
    if (s < 0) s = 0;
    int i = (int)s;
    if (i > in - 1) i = in - 1;
    *i0 = i;
    *i1 = i < in - 1 ? i + 1 : i;
    *lambda = s - i;
}

void RF(inc_resize)(real *y, int oh, int ow, const real *x, int h, int w) {
    if (oh == h && ow == w) {   /* every weight is 0: PyTorch returns the input as it is */
        memcpy(y, x, sizeof(real) * (size_t)h * w);
        return;
    }
    for (int oy = 0; oy < oh; oy++) {
        int y0, y1;
        double ly;
        source_index(oy, h, oh, &y0, &y1, &ly);
        const real *r0 = x + (size_t)y0 * w, *r1 = x + (size_t)y1 * w;
        for (int ox = 0; ox < ow; ox++) {
            int x0, x1;
            double lx;
            source_index(ox, w, ow, &x0, &x1, &lx);
            double top = (1 - lx) * r0[x0] + lx * r0[x1], bot = (1 - lx) * r1[x0] + lx * r1[x1];
            y[(size_t)oy * ow + ox] = (real)((1 - ly) * top + ly * bot);
        }
    }
}

/* ---- the forward's context ------------------------------------------------------------------------- */

/* Within a chunk of n images a value is (C, n, H, W): channel c of image i is the plane c * n + i. */
typedef struct {
    const df_inception *net;
    const real         *w;
    int                 n, nthreads;
    real               *act[4];
    real               *cols;
    inc_plan           *plan;   /* non-NULL: a dry run that records the sizes each step needs */
} ctx;

enum { BUF_0, BUF_1, TMP_1, TMP_2 };   /* the two values between blocks, the two branch temporaries */

/* Channels c0.. of an activation buffer. */
typedef struct {
    int buf, c0;
} tref;

static tref at(int buf, int c0) { return (tref){buf, c0}; }

/* Record (dry run) or check (real run) that `buf` holds `per_image` elements per image. */
static void need(ctx *X, int buf, size_t per_image) {
    if (X->plan) {
        if (per_image > X->plan->act[buf]) X->plan->act[buf] = per_image;
    } else {
        DF_ASSERT(per_image <= X->net->plan.act[buf]);
    }
}

static real *ptr(ctx *X, tref t, int hw) { return X->act[t.buf] + (size_t)t.c0 * X->n * hw; }

static int out_size(int in, int k, int stride, int pad) { return (in + 2 * pad - k) / stride + 1; }

/* ---- convolution + folded BatchNorm + ReLU --------------------------------------------------------- */

static size_t panel_cols(size_t K) { return DF_MAX((size_t)INC_PANEL_COLS, (size_t)INC_PANEL / K); }

/* col (K, len): the input patches under output pixels j0 .. j0 + len - 1 of the chunk's (n, ho, wo) grid,
 * zeros where the window leaves the image. Rows are (c, ki, kj) as the weights' (cin, kh, kw). */
static void im2col_panel(real *col, size_t len, size_t j0, const real *x, const inc_conv *L, int n, int h, int w,
                         int ho, int wo) {
    const size_t plane = (size_t)n * h * w;
    const int s = L->stride;
    for (int c = 0; c < L->cin; c++)
        for (int ki = 0; ki < L->kh; ki++)
            for (int kj = 0; kj < L->kw; kj++) {
                real *row = col + ((size_t)(c * L->kh + ki) * L->kw + kj) * len;
                const int off = kj - L->pw;
                /* output columns whose input column ox * s + off lies in [0, w) */
                const int lo = off >= 0 ? 0 : (-off + s - 1) / s;
                const int hi = DF_MIN(wo, w - 1 - off >= 0 ? (w - 1 - off) / s + 1 : 0);
                size_t j = j0, pos = 0;
                int img = (int)(j / ((size_t)ho * wo)), oy = (int)(j / wo % ho), ox = (int)(j % wo);
                while (pos < len) {
                    const int seg = (int)DF_MIN((size_t)(wo - ox), len - pos);
                    real *r = row + pos;   /* r[q - ox] is output column q */
                    const int iy = oy * s - L->ph + ki;
                    if (iy < 0 || iy >= h) {
                        for (int q = 0; q < seg; q++) r[q] = 0;
                    } else {
                        const real *xr = x + (size_t)c * plane + ((size_t)img * h + iy) * w;
                        const int a = DF_MAX(ox, lo), b = DF_MIN(ox + seg, hi);   /* inside: [a, b) */
                        for (int q = ox; q < DF_MIN(a, ox + seg); q++) r[q - ox] = 0;
                        if (b > a && s == 1)
                            memcpy(r + (a - ox), xr + a + off, sizeof(real) * (size_t)(b - a));
                        else
                            for (int q = a; q < b; q++) r[q - ox] = xr[q * s + off];
                        for (int q = DF_MAX(a, b); q < ox + seg; q++) r[q - ox] = 0;
                    }
                    pos += (size_t)seg;
                    ox = 0;
                    if (++oy == ho) oy = 0, img++;
                }
            }
}

/* out = relu(conv(in) + b) over the chunk: the output pixels are split evenly over the threads, each
 * filling an im2col panel and running one GEMM per panel: (cout, len) = W (cout, K) x col (K, len). */
static void conv(ctx *X, const inc_conv *L, tref in, int h, int w, tref out) {
    const int ho = out_size(h, L->kh, L->stride, L->ph), wo = out_size(w, L->kw, L->stride, L->pw);
    const size_t K = (size_t)L->cin * L->kh * L->kw, cb = panel_cols(K);
    const int pointwise = L->kh == 1 && L->kw == 1 && L->stride == 1 && L->ph == 0 && L->pw == 0;
    need(X, in.buf, (size_t)(in.c0 + L->cin) * h * w);
    need(X, out.buf, (size_t)(out.c0 + L->cout) * ho * wo);
    if (!pointwise && X->plan && K * cb > X->plan->cols) X->plan->cols = K * cb;
    if (X->plan) return;
    const size_t pin = (size_t)X->n * h * w, pout = (size_t)X->n * ho * wo;
    const real *x = ptr(X, in, h * w), *W = X->w + L->w_off, *bias = X->w + L->b_off;
    real *y = ptr(X, out, ho * wo);
    const int cout = L->cout, n = X->n;
    const size_t per_thread = X->net->plan.cols;
#pragma omp parallel num_threads(X->nthreads)
    {
        const int t = omp_get_thread_num(), T = omp_get_num_threads();
        const size_t share = ((pout + (size_t)T - 1) / (size_t)T + 15) / 16 * 16;   /* whole vectors */
        const size_t j0 = DF_MIN(pout, (size_t)t * share), j1 = DF_MIN(pout, j0 + share);
        real *col = X->cols + (size_t)t * per_thread;
        for (size_t j = j0; j < j1; j += cb) {
            const size_t len = DF_MIN(cb, j1 - j);
            const real *B = x + j;
            size_t ldb = pin;
            if (!pointwise) {
                im2col_panel(col, len, j, x, L, n, h, w, ho, wo);
                B = col, ldb = len;
            }
            gemm(cout, (int)len, (int)K, W, (int)K, B, (int)ldb, y + j, (int)pout);
            for (int o = 0; o < cout; o++) {   /* while the panel is in cache: bias, then ReLU (NaN stays) */
                real *yr = y + (size_t)o * pout + j;
                const real bo = bias[o];
                for (size_t q = 0; q < len; q++) {
                    real v = yr[q] + bo;
                    yr[q] = v < 0 ? 0 : v;
                }
            }
        }
    }
}

/* ---- pools ------------------------------------------------------------------------------------------- */


/* The larger of a and b, NaN if either is (PyTorch's max pools let NaN through). */
static inline real max_nan(real a, real b) { return b > a || b != b ? b : a; }

/* Each pool runs an output row at a time: first over the three input rows under it (contiguous, so it
 * vectorises) into v, then over three neighbours in v. Feature maps are at most 147 wide. */
#define POOL_MAX_W 160

/* 3x3 stride 2 without padding: (h, w) -> ((h - 3) / 2 + 1, (w - 3) / 2 + 1). */
static void maxpool_s2_plane(real *y, const real *x, int h, int w) {
    const int ho = out_size(h, 3, 2, 0), wo = out_size(w, 3, 2, 0);
    real v[POOL_MAX_W];
    for (int oy = 0; oy < ho; oy++) {
        const real *r0 = x + (size_t)2 * oy * w, *r1 = r0 + w, *r2 = r1 + w;
        for (int i = 0; i < w; i++) v[i] = max_nan(max_nan(r0[i], r1[i]), r2[i]);
        real *yr = y + (size_t)oy * wo;
        for (int ox = 0; ox < wo; ox++) yr[ox] = max_nan(max_nan(v[2 * ox], v[2 * ox + 1]), v[2 * ox + 2]);
    }
}

/* 3x3 stride 1 padding 1, the size kept. Max: the padding never wins. Average: over the pixels inside the
 * image only (count_include_pad=False): 9 inside, 6 along an edge, 4 in a corner. */
static void pool_s1_plane(real *y, const real *x, int h, int w, int is_max) {
    real v[POOL_MAX_W];
    for (int oy = 0; oy < h; oy++) {
        const real *rm = x + (size_t)(oy > 0 ? oy - 1 : oy) * w, *r0 = x + (size_t)oy * w;
        const real *rp = x + (size_t)(oy < h - 1 ? oy + 1 : oy) * w;
        const int ny = 1 + (oy > 0) + (oy < h - 1);
        if (is_max) {
            for (int i = 0; i < w; i++) v[i] = max_nan(max_nan(rm[i], r0[i]), rp[i]);
        } else {
            for (int i = 0; i < w; i++) v[i] = r0[i];
            if (oy > 0)
                for (int i = 0; i < w; i++) v[i] += rm[i];
            if (oy < h - 1)
                for (int i = 0; i < w; i++) v[i] += rp[i];
        }
        real *yr = y + (size_t)oy * w;
        for (int ox = 0; ox < w; ox++) {
            const int a = ox > 0 ? ox - 1 : ox, b = ox < w - 1 ? ox + 1 : ox;
            if (is_max) {
                yr[ox] = max_nan(max_nan(v[a], v[ox]), v[b]);
            } else {
                real sum = v[ox];
                if (a < ox) sum += v[a];
                if (b > ox) sum += v[b];
                yr[ox] = sum / (real)(ny * (1 + (a < ox) + (b > ox)));
            }
        }
    }
}

typedef enum {
    POOL_MAX_S2,        /* 3x3, stride 2, no padding: the stem, InceptionB and InceptionD */
    POOL_MAX_S1,        /* 3x3, stride 1, padding 1: FIDInceptionE_2's pool branch */
    POOL_AVG_S1,        /* 3x3, stride 1, padding 1, count_include_pad=False: the other FID blocks */
} pool_kind;

/* out (c channels) = pool(in (c channels)), plane by plane. */
static void pool(ctx *X, pool_kind kind, tref in, int c, int h, int w, tref out) {
    const int s = kind == POOL_MAX_S2 ? 2 : 1, pad = kind == POOL_MAX_S2 ? 0 : 1;
    const int ho = out_size(h, 3, s, pad), wo = out_size(w, 3, s, pad);
    need(X, in.buf, (size_t)(in.c0 + c) * h * w);
    need(X, out.buf, (size_t)(out.c0 + c) * ho * wo);
    DF_ASSERT(w <= POOL_MAX_W);
    if (X->plan) return;
    const real *x = ptr(X, in, h * w);
    real *y = ptr(X, out, ho * wo);
    const int planes = c * X->n;
#pragma omp parallel for schedule(static) num_threads(X->nthreads)
    for (int p = 0; p < planes; p++) {
        const real *xp = x + (size_t)p * h * w;
        real *yp = y + (size_t)p * ho * wo;
        if (kind == POOL_MAX_S2)
            maxpool_s2_plane(yp, xp, h, w);
        else
            pool_s1_plane(yp, xp, h, w, kind == POOL_MAX_S1);
    }
}

/* ---- blocks ------------------------------------------------------------------------------------------ */
/* Each block reads `cin` channels of size h x w from buffer bi and writes its concatenated branches, in
 * the order torch.cat gets them, to buffer bo; it returns the output's channel count. */

static int block_a(ctx *X, const inc_conv *L, int bi, int h, int w, int bo) {   /* FIDInceptionA */
    int o = 0;
    conv(X, &L[A_1X1], at(bi, 0), h, w, at(bo, o));
    o += L[A_1X1].cout;
    conv(X, &L[A_5X5_1], at(bi, 0), h, w, at(TMP_1, 0));
    conv(X, &L[A_5X5_2], at(TMP_1, 0), h, w, at(bo, o));
    o += L[A_5X5_2].cout;
    conv(X, &L[A_DBL_1], at(bi, 0), h, w, at(TMP_1, 0));
    conv(X, &L[A_DBL_2], at(TMP_1, 0), h, w, at(TMP_2, 0));
    conv(X, &L[A_DBL_3], at(TMP_2, 0), h, w, at(bo, o));
    o += L[A_DBL_3].cout;
    pool(X, POOL_AVG_S1, at(bi, 0), L[A_POOL].cin, h, w, at(TMP_1, 0));
    conv(X, &L[A_POOL], at(TMP_1, 0), h, w, at(bo, o));
    return o + L[A_POOL].cout;
}

static int block_b(ctx *X, const inc_conv *L, int bi, int h, int w, int bo) {   /* InceptionB: 35 -> 17 */
    int o = 0;
    conv(X, &L[B_3X3], at(bi, 0), h, w, at(bo, o));
    o += L[B_3X3].cout;
    conv(X, &L[B_DBL_1], at(bi, 0), h, w, at(TMP_1, 0));
    conv(X, &L[B_DBL_2], at(TMP_1, 0), h, w, at(TMP_2, 0));
    conv(X, &L[B_DBL_3], at(TMP_2, 0), h, w, at(bo, o));
    o += L[B_DBL_3].cout;
    pool(X, POOL_MAX_S2, at(bi, 0), L[B_3X3].cin, h, w, at(bo, o));
    return o + L[B_3X3].cin;
}

static int block_c(ctx *X, const inc_conv *L, int bi, int h, int w, int bo) {   /* FIDInceptionC */
    int o = 0;
    conv(X, &L[C_1X1], at(bi, 0), h, w, at(bo, o));
    o += L[C_1X1].cout;
    conv(X, &L[C_7X7_1], at(bi, 0), h, w, at(TMP_1, 0));
    conv(X, &L[C_7X7_2], at(TMP_1, 0), h, w, at(TMP_2, 0));
    conv(X, &L[C_7X7_3], at(TMP_2, 0), h, w, at(bo, o));
    o += L[C_7X7_3].cout;
    conv(X, &L[C_DBL_1], at(bi, 0), h, w, at(TMP_1, 0));
    conv(X, &L[C_DBL_2], at(TMP_1, 0), h, w, at(TMP_2, 0));
    conv(X, &L[C_DBL_3], at(TMP_2, 0), h, w, at(TMP_1, 0));
    conv(X, &L[C_DBL_4], at(TMP_1, 0), h, w, at(TMP_2, 0));
    conv(X, &L[C_DBL_5], at(TMP_2, 0), h, w, at(bo, o));
    o += L[C_DBL_5].cout;
    pool(X, POOL_AVG_S1, at(bi, 0), L[C_POOL].cin, h, w, at(TMP_1, 0));
    conv(X, &L[C_POOL], at(TMP_1, 0), h, w, at(bo, o));
    return o + L[C_POOL].cout;
}

static int block_d(ctx *X, const inc_conv *L, int bi, int h, int w, int bo) {   /* InceptionD: 17 -> 8 */
    int o = 0;
    conv(X, &L[D_3X3_1], at(bi, 0), h, w, at(TMP_1, 0));
    conv(X, &L[D_3X3_2], at(TMP_1, 0), h, w, at(bo, o));
    o += L[D_3X3_2].cout;
    conv(X, &L[D_7X7X3_1], at(bi, 0), h, w, at(TMP_1, 0));
    conv(X, &L[D_7X7X3_2], at(TMP_1, 0), h, w, at(TMP_2, 0));
    conv(X, &L[D_7X7X3_3], at(TMP_2, 0), h, w, at(TMP_1, 0));
    conv(X, &L[D_7X7X3_4], at(TMP_1, 0), h, w, at(bo, o));
    o += L[D_7X7X3_4].cout;
    pool(X, POOL_MAX_S2, at(bi, 0), L[D_3X3_1].cin, h, w, at(bo, o));
    return o + L[D_3X3_1].cin;
}

/* FIDInceptionE_1 (average pool without the padding) and FIDInceptionE_2 (max pool). */
static int block_e(ctx *X, const inc_conv *L, int bi, int h, int w, int bo, pool_kind pk) {
    int o = 0;
    conv(X, &L[E_1X1], at(bi, 0), h, w, at(bo, o));
    o += L[E_1X1].cout;
    conv(X, &L[E_3X3_1], at(bi, 0), h, w, at(TMP_1, 0));
    conv(X, &L[E_3X3_2A], at(TMP_1, 0), h, w, at(bo, o));
    o += L[E_3X3_2A].cout;
    conv(X, &L[E_3X3_2B], at(TMP_1, 0), h, w, at(bo, o));
    o += L[E_3X3_2B].cout;
    conv(X, &L[E_DBL_1], at(bi, 0), h, w, at(TMP_1, 0));
    conv(X, &L[E_DBL_2], at(TMP_1, 0), h, w, at(TMP_2, 0));
    conv(X, &L[E_DBL_3A], at(TMP_2, 0), h, w, at(bo, o));
    o += L[E_DBL_3A].cout;
    conv(X, &L[E_DBL_3B], at(TMP_2, 0), h, w, at(bo, o));
    o += L[E_DBL_3B].cout;
    pool(X, pk, at(bi, 0), L[E_POOL].cin, h, w, at(TMP_1, 0));
    conv(X, &L[E_POOL], at(TMP_1, 0), h, w, at(bo, o));
    return o + L[E_POOL].cout;
}

/* The stem: 299 -> 149 -> 147 -> 147 -> pool 73 -> 73 -> 71 -> pool 35, from BUF_0 to BUF_1. */
static int stem(ctx *X, const inc_conv *L, int *h, int *w) {
    int s = *h;
    conv(X, &L[STEM_1A], at(BUF_0, 0), s, s, at(BUF_1, 0));
    s = out_size(s, 3, 2, 0);
    conv(X, &L[STEM_2A], at(BUF_1, 0), s, s, at(BUF_0, 0));
    s = out_size(s, 3, 1, 0);
    conv(X, &L[STEM_2B], at(BUF_0, 0), s, s, at(BUF_1, 0));
    pool(X, POOL_MAX_S2, at(BUF_1, 0), L[STEM_2B].cout, s, s, at(BUF_0, 0));
    s = out_size(s, 3, 2, 0);
    conv(X, &L[STEM_3B], at(BUF_0, 0), s, s, at(BUF_1, 0));
    conv(X, &L[STEM_4A], at(BUF_1, 0), s, s, at(BUF_0, 0));
    s = out_size(s, 3, 1, 0);
    pool(X, POOL_MAX_S2, at(BUF_0, 0), L[STEM_4A].cout, s, s, at(BUF_1, 0));
    *h = *w = out_size(s, 3, 2, 0);
    return L[STEM_4A].cout;
}

/* Every block in turn from the resized input in BUF_0; returns the buffer holding Mixed_7c's output. */
static int run_blocks(ctx *X, int *c, int *h, int *w) {
    const df_inception *net = X->net;
    int cur = BUF_0;
    for (int b = 0; b < INC_BLOCKS; b++) {
        const inc_conv *L = net->conv + net->first[b];
        const int nxt = cur == BUF_0 ? BUF_1 : BUF_0;
        switch (net->kind[b]) {
        case INC_STEM: *c = stem(X, L, h, w), cur = BUF_1; continue;
        case INC_A: *c = block_a(X, L, cur, *h, *w, nxt); break;
        case INC_B: *c = block_b(X, L, cur, *h, *w, nxt), *h = *w = out_size(*h, 3, 2, 0); break;
        case INC_C: *c = block_c(X, L, cur, *h, *w, nxt); break;
        case INC_D: *c = block_d(X, L, cur, *h, *w, nxt), *h = *w = out_size(*h, 3, 2, 0); break;
        case INC_E1: *c = block_e(X, L, cur, *h, *w, nxt, POOL_AVG_S1); break;
        case INC_E2: *c = block_e(X, L, cur, *h, *w, nxt, POOL_MAX_S1); break;
        default: DF_ASSERT(0);
        }
        cur = nxt;
    }
    return cur;
}

void RF(inc_plan)(const df_inception *net, inc_plan *p) {
    memset(p, 0, sizeof *p);
    ctx X = {.net = net, .n = 1, .nthreads = 1, .plan = p};
    const int s = DF_INCEPTION_SIZE;
    need(&X, BUF_0, (size_t)3 * s * s);
    int c = 3, h = s, w = s;
    run_blocks(&X, &c, &h, &w);
    DF_ASSERT(c == DF_INCEPTION_FEATURES && h == 8 && w == 8);
}

void RF(inc_forward)(const df_inception *net, int n, int c, int h, int w, const real *x, real *feats,
                     real *const act[4], real *cols, int nthreads) {
    DF_ASSERT(net->f64 == DF_REAL_F64);
    ctx X = {.net = net, .w = net->w, .n = n, .nthreads = nthreads, .cols = cols};
    for (int k = 0; k < 4; k++) X.act[k] = act[k];
    const int s = DF_INCEPTION_SIZE;
    const size_t S = (size_t)s * s, in = (size_t)h * w;

    /* pytorch-fid takes images in [0, 1], resizes them, then maps them to 2x - 1. Each resized pixel is
     * a convex combination (weights summing to 1) of input pixels, so the affine map commutes with the
     * resize: resizing our [-1, 1] images directly gives the same network input. A gray image is
     * repeated to RGB; resizing each copy gives the same three planes. */
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int p = 0; p < 3 * n; p++) {
        const int i = p / 3, ch = p % 3;
        RF(inc_resize)(X.act[BUF_0] + ((size_t)ch * n + i) * S, s, s, x + ((size_t)i * c + (c == 3 ? ch : 0)) * in, h,
                       w);
    }
    int cc = 3, hh = s, ww = s;
    const int out = run_blocks(&X, &cc, &hh, &ww);

    /* adaptive average pooling to 1x1: feats (n, 2048) from (2048, n, 8, 8) */
    const real *y = X.act[out];
    const int hw = hh * ww;
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int p = 0; p < cc * n; p++) {
        const real *yp = y + (size_t)p * hw;
        double sum = 0;
        for (int q = 0; q < hw; q++) sum += yp[q];
        feats[(size_t)(p % n) * cc + p / n] = (real)(sum / hw);
    }
}
