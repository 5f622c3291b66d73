/* Every op's backward against central finite differences, in double precision on small shapes and
 * several seeds; and the float32 forward against the float64 one. */
#define DF_REAL_F64 1
#include "ops_real.h"
#include "test.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* Declarations of the float32 variants used for the precision comparison. */
void conv_forward_f32(float *y, const float *x, const float *w, const float *b, const float *residual, int n,
                      const conv_geom *g, float *scratch, size_t per);
size_t conv_scratch_f32(const conv_geom *g);
void   conv_backward_f32(float *dx, float *dw, float *db, float *dres, const float *dy, const float *x, const float *w,
                         int n, const conv_geom *g, float *scratch, size_t per, unsigned fresh);
void   layernorm_forward_f32(float *y, float *mean, float *rstd, const float *x, const float *gamma, const float *beta,
                             int n, int c, int L, float eps, double *work);
void   layernorm_backward_f32(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                              const float *mean, const float *rstd, const float *gamma, int n, int c, int L,
                              double *work, int dx_fresh);
void   geglu_forward_f32(float *y, const float *x, int n, int c, int L);
void   attention_forward_f32(float *y, float *p, const float *q, const float *k, const float *v, int n, int heads, int d,
                             int Lq, int Lk, float scale, int causal);
void   attention_backward_f32(float *dq, float *dk, float *dv, const float *dy, const float *p, const float *q,
                              const float *k, const float *v, int n, int heads, int d, int Lq, int Lk, float scale,
                              float *scratch, size_t per, unsigned fresh);
void   geglu_backward_f32(float *dx, const float *dy, const float *x, int n, int c, int L, int dx_fresh);

#define MAXIN 5

/* One op under test: inputs (all differentiable), an output size, and forward/backward callbacks. */
typedef struct op_case op_case;
struct op_case {
    const char *name;
    int nin;
    double *in[MAXIN];
    size_t in_n[MAXIN];
    const char *in_name[MAXIN];
    size_t out_n;
    void (*fwd)(op_case *c, double *y);
    void (*bwd)(op_case *c, const double *dy, double **din);
    int iarg[8];
    double farg[2];
    double *saved, *scratch;
    size_t per;
    int *idx;
};

static double *rand_vec(df_rng *r, size_t n, double scale) {
    double *v = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) v[i] = scale * df_rng_normal(r);
    return v;
}

static double loss_of(op_case *c, const double *rr, double *y) {
    c->fwd(c, y);
    double s = 0;
    for (size_t i = 0; i < c->out_n; i++) s += rr[i] * y[i];
    return s;
}

/* L = sum(r * op(inputs)); compare dL/d(input) from backward with central differences. */
static void fd_check(op_case *c, uint64_t seed, double tol) {
    df_rng r;
    df_rng_init(&r, seed ^ 0xABCDEF);
    double *rr = rand_vec(&r, c->out_n, 1.0), *y = malloc(c->out_n * sizeof(double));
    double *din[MAXIN];
    for (int k = 0; k < c->nin; k++) din[k] = calloc(c->in_n[k], sizeof(double));
    c->fwd(c, y);
    c->bwd(c, rr, din);
    const double h = 1e-5;
    for (int k = 0; k < c->nin; k++) {
        double worst = 0, gmax = 1e-3;
        size_t wi = 0;
        for (size_t i = 0; i < c->in_n[k]; i++) gmax = fmax(gmax, fabs(din[k][i]));
        size_t step = c->in_n[k] > 300 ? c->in_n[k] / 150 : 1;
        for (size_t i = 0; i < c->in_n[k]; i += step) {
            double v = c->in[k][i];
            c->in[k][i] = v + h;
            double lp = loss_of(c, rr, y);
            c->in[k][i] = v - h;
            double lm = loss_of(c, rr, y);
            c->in[k][i] = v;
            double num = (lp - lm) / (2 * h), err = fabs(num - din[k][i]) / gmax;
            if (err > worst) worst = err, wi = i;
        }
        CHECK(worst <= tol, "%s seed %llu: d/d%s[%zu] relative error %.3g > %.3g", c->name,
              (unsigned long long)seed, c->in_name[k], wi, worst, tol);
        free(din[k]);
    }
    free(rr);
    free(y);
}

/* ---- conv ------------------------------------------------------------------------------------------ */

typedef struct {
    op_case base;
    conv_geom g;
    int n;
} conv_case;

static void conv_case_fwd(op_case *c, double *y) {
    conv_case *k = (conv_case *)c;
    conv_forward_f64(y, c->in[0], c->in[1], c->in[2], c->nin > 3 ? c->in[3] : NULL, k->n, &k->g, c->scratch, c->per);
}

static void conv_case_bwd(op_case *c, const double *dy, double **din) {
    conv_case *k = (conv_case *)c;
    conv_backward_f64(din[0], din[1], din[2], c->nin > 3 ? din[3] : NULL, dy, c->in[0], c->in[1], k->n, &k->g,
                      c->scratch, c->per, 0);
}

/* residual: a fourth input added to the output (the transformer's folded additions) */
static void run_conv(int n, int cin, int h, int w, int cout, int ks, int stride, int pt, int pl, int pb, int pr,
                     uint64_t seed, int residual) {
    df_rng r;
    df_rng_init(&r, seed);
    conv_case k = {0};
    k.n = n;
    int ho = (h + pt + pb - ks) / stride + 1, wo = (w + pl + pr - ks) / stride + 1;
    k.g = (conv_geom){cin, h, w, cout, ks, stride, pt, pl, ho, wo};
    op_case *c = &k.base;
    c->name = residual ? "conv + residual" : "conv";
    c->nin = residual ? 4 : 3;
    c->in_n[0] = (size_t)n * cin * h * w, c->in_name[0] = "x";
    c->in_n[1] = (size_t)cout * cin * ks * ks, c->in_name[1] = "w";
    c->in_n[2] = (size_t)cout, c->in_name[2] = "b";
    c->out_n = (size_t)n * cout * ho * wo;
    c->in_n[3] = c->out_n, c->in_name[3] = "residual";
    for (int i = 0; i < c->nin; i++) c->in[i] = rand_vec(&r, c->in_n[i], 1.0);
    c->per = conv_scratch_f64(&k.g);
    c->scratch = malloc(c->per * (size_t)omp_get_max_threads() * sizeof(double));
    c->fwd = conv_case_fwd;
    c->bwd = conv_case_bwd;
    fd_check(c, seed, 1e-6);

    /* Independent forward: the direct definition of a cross-correlation with zero padding. */
    double *y = malloc(c->out_n * sizeof(double)), worst = 0;
    c->fwd(c, y);
    for (int i = 0; i < n; i++)
        for (int o = 0; o < cout; o++)
            for (int oy = 0; oy < ho; oy++)
                for (int ox = 0; ox < wo; ox++) {
                    double s = c->in[2][o] + (residual ? c->in[3][(((size_t)i * cout + o) * ho + oy) * wo + ox] : 0);
                    for (int ci = 0; ci < cin; ci++)
                        for (int a = 0; a < ks; a++)
                            for (int b = 0; b < ks; b++) {
                                int iy = oy * stride - pt + a, ix = ox * stride - pl + b;
                                if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                                s += c->in[0][(((size_t)i * cin + ci) * h + iy) * w + ix] *
                                     c->in[1][(((size_t)o * cin + ci) * ks + a) * ks + b];
                            }
                    worst = fmax(worst, fabs(s - y[(((size_t)i * cout + o) * ho + oy) * wo + ox]));
                }
    CHECK(worst < 1e-10, "conv forward vs direct sum: max diff %.3g", worst);

    /* float32 forward against the float64 one */
    float *xf = malloc(c->in_n[0] * 4), *wf = malloc(c->in_n[1] * 4), *bf = malloc(c->in_n[2] * 4),
          *yf = malloc(c->out_n * 4), *rf = malloc(c->out_n * 4);
    for (size_t i = 0; i < c->out_n; i++) rf[i] = residual ? (float)c->in[3][i] : 0;
    for (size_t i = 0; i < c->in_n[0]; i++) xf[i] = (float)c->in[0][i];
    for (size_t i = 0; i < c->in_n[1]; i++) wf[i] = (float)c->in[1][i];
    for (size_t i = 0; i < c->in_n[2]; i++) bf[i] = (float)c->in[2][i];
    size_t perf = conv_scratch_f32(&k.g);
    float *sf = malloc(perf * (size_t)omp_get_max_threads() * 4);
    conv_forward_f32(yf, xf, wf, bf, residual ? rf : NULL, n, &k.g, sf, perf);
    double d32 = 0, ymax = 0;
    for (size_t i = 0; i < c->out_n; i++) d32 = fmax(d32, fabs(yf[i] - y[i])), ymax = fmax(ymax, fabs(y[i]));
    CHECK(d32 / ymax < 1e-5, "conv float32 vs float64: relative %.3g", d32 / ymax);
    free(xf), free(wf), free(bf), free(yf), free(rf), free(sf), free(y);
    for (int i = 0; i < c->nin; i++) free(c->in[i]);
    free(c->scratch);
}

TEST(conv_gradcheck) {
    for (uint64_t s = 1; s <= 3; s++) {
        run_conv(2, 3, 6, 5, 4, 3, 1, 1, 1, 1, 1, s, 0);   /* 3x3, pad 1 */
        run_conv(2, 3, 6, 6, 2, 3, 2, 1, 1, 1, 1, s, 0);   /* 3x3 stride 2, pad 1 */
        run_conv(2, 2, 6, 6, 3, 3, 2, 0, 0, 1, 1, s, 0);   /* diffusers' downsample_padding 0 */
        run_conv(3, 5, 4, 4, 3, 1, 1, 0, 0, 0, 0, s, 0);   /* 1x1 */
        run_conv(3, 5, 4, 4, 3, 1, 1, 0, 0, 0, 0, s, 1);   /* 1x1 with a residual (a transformer's addition) */
        run_conv(1, 2, 5, 7, 2, 3, 1, 0, 0, 0, 0, s, 0);   /* valid 3x3 */
    }
}

/* ---- the rest, with a generic case ------------------------------------------------------------------ */

static op_case *new_case(const char *name, int nin, size_t out_n) {
    op_case *c = calloc(1, sizeof *c);
    c->name = name;
    c->nin = nin;
    c->out_n = out_n;
    return c;
}

static void case_inputs(op_case *c, df_rng *r, const size_t *sizes, const char *const *names, const double *scale) {
    for (int i = 0; i < c->nin; i++) {
        c->in_n[i] = sizes[i];
        c->in_name[i] = names[i];
        c->in[i] = rand_vec(r, sizes[i], scale ? scale[i] : 1.0);
    }
}

static void free_case(op_case *c) {
    for (int i = 0; i < c->nin; i++) free(c->in[i]);
    free(c->saved);
    free(c->scratch);
    free(c->idx);
    free(c);
}

/* linear: iarg n, in, out */
static void lin_f(op_case *c, double *y) { linear_forward_f64(y, c->in[0], c->in[1], c->in[2], c->iarg[0], c->iarg[1], c->iarg[2]); }
static void lin_b(op_case *c, const double *dy, double **d) {
    linear_backward_f64(d[0], d[1], d[2], dy, c->in[0], c->in[1], c->iarg[0], c->iarg[1], c->iarg[2]);
}

TEST(linear_gradcheck) {
    for (uint64_t s = 1; s <= 3; s++) {
        df_rng r;
        df_rng_init(&r, s);
        int n = 3, in = 5, out = 4;
        op_case *c = new_case("linear", 3, (size_t)n * out);
        c->iarg[0] = n, c->iarg[1] = in, c->iarg[2] = out;
        case_inputs(c, &r, (size_t[]){(size_t)n * in, (size_t)out * in, (size_t)out}, (const char *[]){"x", "w", "b"}, NULL);
        c->fwd = lin_f, c->bwd = lin_b;
        fd_check(c, s, 1e-6);
        free_case(c);
    }
}

/* The channel block of the layout the layout-aware ops below run in (1: plain). */
static int case_blk = 1;
static double gn_work[4096];

/* groupnorm: iarg n, c, hw, groups; farg eps */
static void gn_f(op_case *c, double *y) {
    int n = c->iarg[0], g = c->iarg[3];
    groupnorm_forward_f64(y, c->saved, c->saved + n * g, c->in[0], c->in[1], c->in[2], n, c->iarg[1], c->iarg[2], g,
                          c->farg[0], case_blk, gn_work);
}
static void gn_b(op_case *c, const double *dy, double **d) {
    int n = c->iarg[0], g = c->iarg[3];
    groupnorm_backward_f64(d[0], d[1], d[2], dy, c->in[0], c->saved, c->saved + n * g, c->in[1], n, c->iarg[1],
                           c->iarg[2], g, case_blk, gn_work);
}

TEST(groupnorm_gradcheck) {
    for (uint64_t s = 1; s <= 6; s++) {
        case_blk = s > 3 ? 3 : 1;   /* seeds 4-6: the blocked layout (a block spans groups when g = 6) */
        df_rng r;
        df_rng_init(&r, s);
        int n = 2, ch = 6, hw = 5, g = s % 3 == 2 ? 1 : (s % 3 == 0 ? 6 : 3);
        op_case *c = new_case("groupnorm", 3, (size_t)n * ch * hw);
        c->iarg[0] = n, c->iarg[1] = ch, c->iarg[2] = hw, c->iarg[3] = g;
        c->farg[0] = 1e-5;
        case_inputs(c, &r, (size_t[]){(size_t)n * ch * hw, (size_t)ch, (size_t)ch}, (const char *[]){"x", "gamma", "beta"}, NULL);
        c->saved = malloc(sizeof(double) * 2 * n * g);
        c->fwd = gn_f, c->bwd = gn_b;
        fd_check(c, s, 1e-5);
        /* the forward against the definition: per group zero mean and unit (biased) variance */
        if (case_blk > 1) {
            free_case(c);
            continue;
        }
        double *y = malloc(c->out_n * sizeof(double));
        for (int i = 0; i < ch; i++) c->in[1][i] = 1, c->in[2][i] = 0;
        gn_f(c, y);
        int cg = ch / g;
        for (int i = 0; i < n * g; i++) {
            double m = 0, v = 0;
            for (int j = 0; j < cg * hw; j++) m += y[(size_t)i * cg * hw + j];
            m /= cg * hw;
            for (int j = 0; j < cg * hw; j++) v += pow(y[(size_t)i * cg * hw + j] - m, 2);
            v /= cg * hw;
            CHECK(fabs(m) < 1e-12 && fabs(v - 1) < 1e-3, "groupnorm group %d: mean %.3g var %.6g", i, m, v);
        }
        free(y);
        free_case(c);
    }
    case_blk = 1;
}

static void silu_f(op_case *c, double *y) { silu_forward_f64(y, c->in[0], c->in_n[0]); }
static void silu_b(op_case *c, const double *dy, double **d) { silu_backward_f64(d[0], dy, c->in[0], c->in_n[0]); }

TEST(silu_gradcheck) {
    df_rng r;
    df_rng_init(&r, 1);
    op_case *c = new_case("silu", 1, 50);
    case_inputs(c, &r, (size_t[]){50}, (const char *[]){"x"}, (double[]){3.0});
    c->fwd = silu_f, c->bwd = silu_b;
    fd_check(c, 1, 1e-7);
    double y[50];
    silu_f(c, y);
    for (int i = 0; i < 50; i++) CHECK_NEAR(y[i], c->in[0][i] / (1 + exp(-c->in[0][i])), 1e-14, "silu value");
    free_case(c);
}

static void emb_f(op_case *c, double *y) { embed_forward_f64(y, c->in[0], c->idx, c->iarg[0], c->iarg[1]); }
static void emb_b(op_case *c, const double *dy, double **d) { embed_backward_f64(d[0], dy, c->idx, c->iarg[0], c->iarg[1]); }

TEST(embedding_gradcheck) {
    df_rng r;
    df_rng_init(&r, 5);
    op_case *c = new_case("embed", 1, 4 * 6);
    c->iarg[0] = 4, c->iarg[1] = 6;
    c->idx = malloc(4 * sizeof(int));
    int lab[4] = {2, 0, 2, 4};   /* a repeated label accumulates */
    memcpy(c->idx, lab, sizeof lab);
    case_inputs(c, &r, (size_t[]){5 * 6}, (const char *[]){"table"}, NULL);
    c->fwd = emb_f, c->bwd = emb_b;
    fd_check(c, 5, 1e-7);
    free_case(c);
}

static void up_f(op_case *c, double *y) { upsample_forward_f64(y, c->in[0], c->iarg[0], c->iarg[1], c->iarg[2], case_blk); }
static void up_b(op_case *c, const double *dy, double **d) {
    upsample_backward_f64(d[0], dy, c->iarg[0], c->iarg[1], c->iarg[2], case_blk);
}
static void pool_f(op_case *c, double *y) { avgpool_forward_f64(y, c->in[0], c->iarg[0], c->iarg[1], c->iarg[2], case_blk); }
static void pool_b(op_case *c, const double *dy, double **d) {
    avgpool_backward_f64(d[0], dy, c->iarg[0], c->iarg[1], c->iarg[2], case_blk);
}

TEST(resample_gradcheck) {
    df_rng r;
    df_rng_init(&r, 9);
    op_case *c = new_case("upsample", 1, 3 * 4 * 3 * 4);
    c->iarg[0] = 3, c->iarg[1] = 3, c->iarg[2] = 4;
    case_inputs(c, &r, (size_t[]){3 * 3 * 4}, (const char *[]){"x"}, NULL);
    c->fwd = up_f, c->bwd = up_b;
    fd_check(c, 9, 1e-7);
    double y[144];
    up_f(c, y);
    CHECK(y[(1 * 6 + 5) * 8 + 7] == c->in[0][(1 * 3 + 2) * 4 + 3], "nearest upsample picks the source pixel");
    free_case(c);
    c = new_case("avgpool", 1, 3 * 2 * 3);
    c->iarg[0] = 3, c->iarg[1] = 4, c->iarg[2] = 6;
    case_inputs(c, &r, (size_t[]){3 * 4 * 6}, (const char *[]){"x"}, NULL);
    c->fwd = pool_f, c->bwd = pool_b;
    fd_check(c, 9, 1e-7);
    pool_f(c, y);
    const double *x = c->in[0] + 24;   /* channel 1, output (1, 2) */
    CHECK_NEAR(y[6 + 1 * 3 + 2], 0.25 * (x[2 * 6 + 4] + x[2 * 6 + 5] + x[3 * 6 + 4] + x[3 * 6 + 5]), 1e-14, "avgpool value");
    free_case(c);
}

static void cat_f(op_case *c, double *y) { concat_forward_f64(y, c->in[0], c->in[1], c->iarg[0], c->iarg[1], c->iarg[2], c->iarg[3]); }
static void cat_b(op_case *c, const double *dy, double **d) {
    concat_backward_f64(d[0], d[1], dy, c->iarg[0], c->iarg[1], c->iarg[2], c->iarg[3]);
}
static void add_f(op_case *c, double *y) { add_forward_f64(y, c->in[0], c->in[1], c->farg[0], c->in_n[0]); }
static void add_b(op_case *c, const double *dy, double **d) { add_backward_f64(d[0], d[1], dy, c->farg[0], c->in_n[0], 0); }
static void addnc_f(op_case *c, double *y) {
    add_nc_forward_f64(y, c->in[0], c->in[1], c->iarg[0], c->iarg[1], c->iarg[2], case_blk);
}
static void addnc_b(op_case *c, const double *dy, double **d) {
    add_nc_backward_f64(d[0], d[1], dy, c->iarg[0], c->iarg[1], c->iarg[2], case_blk);
}
static void ss_f(op_case *c, double *y) {
    scale_shift_forward_f64(y, c->in[0], c->in[1], c->iarg[0], c->iarg[1], c->iarg[2], case_blk);
}
static void ss_b(op_case *c, const double *dy, double **d) {
    scale_shift_backward_f64(d[0], d[1], dy, c->in[0], c->in[1], c->iarg[0], c->iarg[1], c->iarg[2], case_blk);
}
static void aff_f(op_case *c, double *y) { affine_forward_f64(y, c->in[0], c->farg[0], c->farg[1], c->in_n[0]); }
static void aff_b(op_case *c, const double *dy, double **d) { affine_backward_f64(d[0], dy, c->farg[0], c->in_n[0]); }

TEST(joins_gradcheck) {
    df_rng r;
    df_rng_init(&r, 11);
    int n = 2, ca = 3, cb = 2, hw = 6;
    op_case *c = new_case("concat", 2, (size_t)n * (ca + cb) * hw);
    c->iarg[0] = n, c->iarg[1] = ca, c->iarg[2] = cb, c->iarg[3] = hw;
    case_inputs(c, &r, (size_t[]){(size_t)n * ca * hw, (size_t)n * cb * hw}, (const char *[]){"a", "b"}, NULL);
    c->fwd = cat_f, c->bwd = cat_b;
    fd_check(c, 11, 1e-7);
    free_case(c);

    c = new_case("add", 2, 40);
    c->farg[0] = 1 / 1.414;
    case_inputs(c, &r, (size_t[]){40, 40}, (const char *[]){"a", "b"}, NULL);
    c->fwd = add_f, c->bwd = add_b;
    fd_check(c, 11, 1e-7);
    free_case(c);

    c = new_case("add_nc", 2, (size_t)n * ca * hw);
    c->iarg[0] = n, c->iarg[1] = ca, c->iarg[2] = hw;
    case_inputs(c, &r, (size_t[]){(size_t)n * ca * hw, (size_t)n * ca}, (const char *[]){"x", "v"}, NULL);
    c->fwd = addnc_f, c->bwd = addnc_b;
    fd_check(c, 11, 1e-7);
    free_case(c);

    c = new_case("scale_shift", 2, (size_t)n * ca * hw);
    c->iarg[0] = n, c->iarg[1] = ca, c->iarg[2] = hw;
    case_inputs(c, &r, (size_t[]){(size_t)n * ca * hw, (size_t)n * 2 * ca}, (const char *[]){"x", "v"}, NULL);
    c->fwd = ss_f, c->bwd = ss_b;
    fd_check(c, 11, 1e-7);
    free_case(c);

    c = new_case("affine", 1, 30);
    c->farg[0] = 2, c->farg[1] = -1;
    case_inputs(c, &r, (size_t[]){30}, (const char *[]){"x"}, NULL);
    c->fwd = aff_f, c->bwd = aff_b;
    fd_check(c, 11, 1e-7);
    free_case(c);
}

/* attention: iarg n, heads, d, Lq, Lk, causal; farg scale */
static void att_f(op_case *c, double *y) {
    attention_forward_f64(y, c->saved, c->in[0], c->in[1], c->in[2], c->iarg[0], c->iarg[1], c->iarg[2], c->iarg[3],
                          c->iarg[4], c->farg[0], c->iarg[5]);
}
static void att_b(op_case *c, const double *dy, double **d) {
    attention_backward_f64(d[0], d[1], d[2], dy, c->saved, c->in[0], c->in[1], c->in[2], c->iarg[0], c->iarg[1],
                           c->iarg[2], c->iarg[3], c->iarg[4], c->farg[0], c->scratch, c->per, 0);
}

/* Self-attention, cross-attention (queries at 6 positions over 4 keys) and causal self-attention: the
 * backward against finite differences, the forward against the definition at one query position. */
TEST(attention_gradcheck) {
    static const struct {
        int heads, Lq, Lk, causal;
    } cases[] = {{1, 5, 5, 0}, {2, 5, 5, 0}, {3, 5, 5, 0}, {2, 6, 4, 0}, {1, 3, 7, 0}, {2, 5, 5, 1}, {1, 4, 4, 1}};
    for (int s = 0; s < (int)(sizeof cases / sizeof cases[0]); s++) {
        df_rng r;
        df_rng_init(&r, (uint64_t)s + 1);
        const int n = 2, heads = cases[s].heads, d = 3, Lq = cases[s].Lq, Lk = cases[s].Lk;
        const size_t qs = (size_t)n * heads * d * Lq, ks = (size_t)n * heads * d * Lk;
        op_case *c = new_case(cases[s].causal ? "causal attention" : Lq == Lk ? "attention" : "cross-attention", 3, qs);
        c->iarg[0] = n, c->iarg[1] = heads, c->iarg[2] = d, c->iarg[3] = Lq, c->iarg[4] = Lk, c->iarg[5] = cases[s].causal;
        c->farg[0] = 1 / sqrt((double)d);
        case_inputs(c, &r, (size_t[]){qs, ks, ks}, (const char *[]){"q", "k", "v"}, NULL);
        c->saved = malloc(sizeof(double) * n * heads * Lq * Lk);
        c->per = (size_t)Lq * Lk;
        c->scratch = malloc(sizeof(double) * c->per * omp_get_max_threads());
        c->fwd = att_f, c->bwd = att_b;
        fd_check(c, (uint64_t)s + 1, 1e-6);
        /* forward against the definition for one query position of the second image's last head */
        double *y = malloc(qs * sizeof(double));
        att_f(c, y);
        const int hh = heads - 1, i = 2, end = cases[s].causal ? i + 1 : Lk;
        const size_t hq = ((size_t)1 * heads + hh) * d, qoff = hq * Lq, koff = hq * Lk;
        const double *Q = c->in[0] + qoff, *K = c->in[1] + koff, *Vv = c->in[2] + koff;
        double sc[8], mx = -1e300, sum = 0;
        for (int j = 0; j < end; j++) {
            sc[j] = 0;
            for (int e = 0; e < d; e++) sc[j] += Q[e * Lq + i] * K[e * Lk + j] * c->farg[0];
            mx = fmax(mx, sc[j]);
        }
        for (int j = 0; j < end; j++) sum += sc[j] = exp(sc[j] - mx);
        for (int e = 0; e < d; e++) {
            double o = 0;
            for (int j = 0; j < end; j++) o += sc[j] / sum * Vv[e * Lk + j];
            CHECK_NEAR(y[qoff + (size_t)e * Lq + i], o, 1e-12, c->name);
        }
        free(y);
        free_case(c);
    }
    /* large logits must not overflow: softmax subtracts the row maximum */
    double q[2] = {1000, 1000}, k[2] = {1000, -1000}, v[2] = {1, 2}, y[2], p[4];
    attention_forward_f64(y, p, q, k, v, 1, 1, 1, 2, 2, 1.0, 0);
    CHECK(isfinite(y[0]) && fabs(y[0] - 1) < 1e-12, "attention with logits 1e6: %g", y[0]);
}

/* ---- transformer ops ---------------------------------------------------------------------------- */

static double ln_work[4096];
/* layernorm: iarg n, c, L; farg eps; inputs x, gamma, beta */
static void ln_f(op_case *c, double *y) {
    layernorm_forward_f64(y, c->saved, c->saved + c->iarg[0] * c->iarg[2], c->in[0], c->in[1], c->in[2], c->iarg[0],
                          c->iarg[1], c->iarg[2], c->farg[0], ln_work);
}
static void ln_b(op_case *c, const double *dy, double **d) {
    layernorm_backward_f64(d[0], d[1], d[2], dy, c->in[0], c->saved, c->saved + c->iarg[0] * c->iarg[2], c->in[1],
                           c->iarg[0], c->iarg[1], c->iarg[2], ln_work, 0);
}
static void act_f(op_case *c, double *y) { act_forward_f64(y, c->in[0], c->in_n[0], c->iarg[0]); }
static void act_b(op_case *c, const double *dy, double **d) { act_backward_f64(d[0], dy, c->in[0], c->in_n[0], c->iarg[0]); }
static void geglu_f(op_case *c, double *y) { geglu_forward_f64(y, c->in[0], c->iarg[0], c->iarg[1], c->iarg[2]); }
static void geglu_b(op_case *c, const double *dy, double **d) {
    geglu_backward_f64(d[0], dy, c->in[0], c->iarg[0], c->iarg[1], c->iarg[2], 0);
}
static void tok_f(op_case *c, double *y) { tokens_forward_f64(y, c->in[0], c->in[1], c->idx, c->iarg[0], c->iarg[1], c->iarg[2]); }
static void tok_b(op_case *c, const double *dy, double **d) {
    tokens_backward_f64(d[0], d[1], dy, c->idx, c->iarg[0], c->iarg[1], c->iarg[2]);
}

TEST(transformer_ops_gradcheck) {
    df_rng r;
    df_rng_init(&r, 21);
    /* LayerNorm over 6 channels at 5 positions of 3 images, against finite differences and the definition */
    const int n = 3, ch = 6, L = 5;
    op_case *c = new_case("layernorm", 3, (size_t)n * ch * L);
    c->iarg[0] = n, c->iarg[1] = ch, c->iarg[2] = L, c->farg[0] = 1e-5;
    case_inputs(c, &r, (size_t[]){(size_t)n * ch * L, ch, ch}, (const char *[]){"x", "gamma", "beta"}, NULL);
    c->saved = malloc(sizeof(double) * 2 * n * L);
    c->fwd = ln_f, c->bwd = ln_b;
    fd_check(c, 21, 1e-6);
    double y[256];
    ln_f(c, y);
    const int b = 2, l = 3;
    double m = 0, v = 0;
    for (int k = 0; k < ch; k++) m += c->in[0][((size_t)b * ch + k) * L + l] / ch;
    for (int k = 0; k < ch; k++) v += pow(c->in[0][((size_t)b * ch + k) * L + l] - m, 2) / ch;
    for (int k = 0; k < ch; k++) {
        const size_t i = ((size_t)b * ch + k) * L + l;
        CHECK_NEAR(y[i], (c->in[0][i] - m) / sqrt(v + 1e-5) * c->in[1][k] + c->in[2][k], 1e-12, "layernorm output");
    }
    free_case(c);

    /* the GELU family: values at 1 (PyTorch's gelu, gelu(approximate="tanh"), CLIP's quick_gelu) and gradients */
    static const double at_one[DF_ACT_COUNT] = {0.8413447460685429, 0.8411919906082768, 0.8457957659328212};
    static const char *const act_names[DF_ACT_COUNT] = {"gelu", "gelu (tanh)", "quick gelu"};
    for (int k = 0; k < DF_ACT_COUNT; k++) {
        c = new_case(act_names[k], 1, 40);
        c->iarg[0] = k;
        case_inputs(c, &r, (size_t[]){40}, (const char *[]){"x"}, (const double[]){2.0});
        c->fwd = act_f, c->bwd = act_b;
        fd_check(c, 21, 1e-7);
        double one = 1, out;
        act_forward_f64(&out, &one, 1, k);
        CHECK_NEAR(out, at_one[k], 1e-12, act_names[k]);
        free_case(c);
    }

    /* GEGLU: values in the first half of the channels, gates in the second */
    c = new_case("geglu", 1, (size_t)n * ch * L);
    c->iarg[0] = n, c->iarg[1] = ch, c->iarg[2] = L;
    case_inputs(c, &r, (size_t[]){(size_t)n * 2 * ch * L}, (const char *[]){"x"}, NULL);
    c->fwd = geglu_f, c->bwd = geglu_b;
    fd_check(c, 21, 1e-7);
    geglu_f(c, y);
    {
        const size_t i = ((size_t)1 * ch + 4) * L + 2, xi = ((size_t)1 * 2 * ch + 4) * L + 2, gi = xi + (size_t)ch * L;
        const double gate = c->in[0][gi];
        CHECK_NEAR(y[i], c->in[0][xi] * 0.5 * gate * (1 + erf(gate / sqrt(2.0))), 1e-12, "geglu output");
    }
    free_case(c);

    /* token and position embeddings: repeated ids must sum their gradients */
    const int vocab = 7, d = 4;
    c = new_case("tokens", 2, (size_t)n * d * L);
    c->iarg[0] = n, c->iarg[1] = d, c->iarg[2] = L;
    case_inputs(c, &r, (size_t[]){(size_t)vocab * d, (size_t)L * d}, (const char *[]){"token table", "positions"}, NULL);
    c->idx = malloc(sizeof(int) * n * L);
    for (int i = 0; i < n * L; i++) c->idx[i] = (i * 3) % vocab;
    c->fwd = tok_f, c->bwd = tok_b;
    fd_check(c, 21, 1e-7);
    tok_f(c, y);
    CHECK_NEAR(y[((size_t)2 * d + 3) * L + 4], c->in[0][(size_t)c->idx[2 * L + 4] * d + 3] + c->in[1][4 * d + 3], 1e-15,
               "tokens output");
    free_case(c);
}

/* Equal values (0 and -0 alike: a gradient written can be -0 where one added into zeros is 0). */
static int same_f(const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!(a[i] == b[i])) return 0;
    return 1;
}
static int same_d(const double *a, const double *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!(a[i] == b[i])) return 0;
    return 1;
}

/* The float32 GEGLU (a vectorised erf and exponential) against the float64 one (libm's erf), gates from -9 to 9:
 * values and both gradients within 4e-7 of their scale. */
TEST(geglu_f32_matches_f64) {
    enum { N = 2, C = 3, L = 600, H = C * L };
    static float xf[N * 2 * H], yf[N * H], dyf[N * H], dxf[N * 2 * H];
    static double xd[N * 2 * H], yd[N * H], dyd[N * H], dxd[N * 2 * H];
    df_rng r;
    df_rng_init(&r, 41);
    for (int i = 0; i < N * 2 * H; i++) {
        const int gate = i % (2 * H) >= H;
        xf[i] = gate ? (float)(-9 + 18.0 * (i % H) / (H - 1)) : (float)(2 * df_rng_uniform(&r) - 1);
        xd[i] = xf[i], dxf[i] = 0, dxd[i] = 0;
    }
    for (int i = 0; i < N * H; i++) dyf[i] = (float)(2 * df_rng_uniform(&r) - 1), dyd[i] = dyf[i];
    geglu_forward_f32(yf, xf, N, C, L), geglu_forward_f64(yd, xd, N, C, L);
    geglu_backward_f32(dxf, dyf, xf, N, C, L, 0), geglu_backward_f64(dxd, dyd, xd, N, C, L, 0);
    double ey = 0, sy = 0, ex = 0, sx = 0;
    for (int i = 0; i < N * H; i++) ey = fmax(ey, fabs(yf[i] - yd[i])), sy = fmax(sy, fabs(yd[i]));
    for (int i = 0; i < N * 2 * H; i++) ex = fmax(ex, fabs(dxf[i] - dxd[i])), sx = fmax(sx, fabs(dxd[i]));
    printf("    geglu float32 against float64: values %.2g, gradients %.2g of their scale\n", ey / sy, ex / sx);
    CHECK(ey <= 4e-7 * sy, "geglu values: %g off at scale %g", ey, sy);
    CHECK(ex <= 4e-7 * sx, "geglu gradients: %g off at scale %g", ex, sx);
    /* told that dx is fresh, the backward pass writes it (over garbage): the bits of adding into zeros, for
     * both precisions; and the same for an addition's two gradients */
    static float fx[N * 2 * H];
    static double fd[N * 2 * H];
    for (int i = 0; i < N * 2 * H; i++) fx[i] = NAN, fd[i] = NAN;
    geglu_backward_f32(fx, dyf, xf, N, C, L, 1), geglu_backward_f64(fd, dyd, xd, N, C, L, 1);
    CHECK(same_f(fx, dxf, N * 2 * H) && same_d(fd, dxd, N * 2 * H), "a fresh geglu dx differs from one added into zeros");
    static double a0[N * H], a1[N * H], f0[N * H], f1[N * H];
    for (int i = 0; i < N * H; i++) a0[i] = a1[i] = 0, f0[i] = f1[i] = NAN;
    add_backward_f64(a0, a1, dyd, 0.5, N * H, 0), add_backward_f64(f0, f1, dyd, 0.5, N * H, 3);
    CHECK(same_d(a0, f0, N * H) && same_d(a1, f1, N * H), "fresh addition gradients differ");
}

/* The float32 pointwise convolution (a GEMM per image through the fast sgemm) and LayerNorm (float sums)
 * against float64, forward and all gradients; and the pointwise weight gradient the same to the bit with one
 * thread as with all of them. */
static double rel_err_f(const float *f, const double *d, size_t count) {
    double e = 0, sc = 0;
    for (size_t i = 0; i < count; i++) e = fmax(e, fabs(f[i] - d[i])), sc = fmax(sc, fabs(d[i]));
    return e / sc;
}

TEST(pointwise_and_layernorm_f32_match_f64) {
    enum { N = 7, CI = 24, CO = 40, P = 36, XN = N * CI * P, YN = N * CO * P, WN = CO * CI };
    static float xf[XN], wf[WN], bf[CO], yf[YN], dyf[YN], dxf[XN], dwf[WN], dbf[CO], dwf1[WN], dbf1[CO];
    static double xd[XN], wd[WN], bd[CO], yd[YN], dyd[YN], dxd[XN], dwd[WN], dbd[CO];
    df_rng r;
    df_rng_init(&r, 47);
    for (int i = 0; i < XN; i++) xf[i] = (float)(2 * df_rng_uniform(&r) - 1), xd[i] = xf[i], dxf[i] = 0, dxd[i] = 0;
    for (int i = 0; i < WN; i++) wf[i] = (float)(2 * df_rng_uniform(&r) - 1), wd[i] = wf[i];
    for (int i = 0; i < CO; i++) bf[i] = (float)(2 * df_rng_uniform(&r) - 1), bd[i] = bf[i];
    for (int i = 0; i < YN; i++) dyf[i] = (float)(2 * df_rng_uniform(&r) - 1), dyd[i] = dyf[i];
    const conv_geom g = {.cin = CI, .h = 6, .w = 6, .cout = CO, .k = 1, .stride = 1, .ho = 6, .wo = 6};
    const size_t pf = conv_scratch_f32(&g), pd = conv_scratch_f64(&g);
    float *sf = malloc(sizeof(float) * pf * (size_t)omp_get_max_threads());
    double *sd = malloc(sizeof(double) * pd * (size_t)omp_get_max_threads());
    conv_forward_f32(yf, xf, wf, bf, NULL, N, &g, sf, pf), conv_forward_f64(yd, xd, wd, bd, NULL, N, &g, sd, pd);
    memset(dwf, 0, sizeof dwf), memset(dbf, 0, sizeof dbf), memset(dwd, 0, sizeof dwd), memset(dbd, 0, sizeof dbd);
    conv_backward_f32(dxf, dwf, dbf, NULL, dyf, xf, wf, N, &g, sf, pf, 0);
    conv_backward_f64(dxd, dwd, dbd, NULL, dyd, xd, wd, N, &g, sd, pd, 0);
    const double e[4] = {rel_err_f(yf, yd, YN), rel_err_f(dxf, dxd, XN), rel_err_f(dwf, dwd, WN), rel_err_f(dbf, dbd, CO)};
    printf("    pointwise float32 against float64: y %.2g, dx %.2g, dw %.2g, db %.2g of their scale\n", e[0], e[1],
           e[2], e[3]);
    for (int t = 0; t < 4; t++) CHECK(e[t] < 2e-6, "pointwise float32 quantity %d: %.3g of its scale", t, e[t]);
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    memset(dwf1, 0, sizeof dwf1), memset(dbf1, 0, sizeof dbf1);
    conv_backward_f32(NULL, dwf1, dbf1, NULL, dyf, xf, wf, N, &g, sf, pf, 0);
    omp_set_num_threads(threads);
    CHECK(!memcmp(dwf1, dwf, sizeof dwf) && !memcmp(dbf1, dbf, sizeof dbf),
          "pointwise weight gradients differ between 1 and %d threads", threads);
    /* told that dx is fresh, the backward pass writes it: over garbage, the bits of adding into zeros */
    static float dxf1[XN];
    for (int i = 0; i < XN; i++) dxf1[i] = NAN;
    conv_backward_f32(dxf1, NULL, NULL, NULL, dyf, xf, wf, N, &g, sf, pf, 1);
    CHECK(same_f(dxf1, dxf, XN), "a fresh pointwise dx differs from one added into zeros");
    free(sf), free(sd);

    /* LayerNorm over CI channels at P positions, inputs off-centre (mean 3) as a residual stream can be */
    static float gf[CI], bef[CI], lyf[XN], mf[N * P], rf[N * P], ldxf[XN], dgf[CI], dbef[CI];
    static double gd[CI], bed[CI], lyd[XN], md[N * P], rd[N * P], ldxd[XN], dgd[CI], dbed[CI], ldyd[XN];
    static float ldyf[XN];
    for (int i = 0; i < XN; i++) xf[i] = xf[i] + 3, xd[i] = xf[i], ldxf[i] = 0, ldxd[i] = 0;
    for (int i = 0; i < XN; i++) ldyf[i] = (float)(2 * df_rng_uniform(&r) - 1), ldyd[i] = ldyf[i];
    for (int i = 0; i < CI; i++) {
        gf[i] = (float)(0.5 + df_rng_uniform(&r)), gd[i] = gf[i], bef[i] = (float)(df_rng_uniform(&r) - 0.5);
        bed[i] = bef[i], dgf[i] = dbef[i] = 0, dgd[i] = dbed[i] = 0;
    }
    double *work = malloc(sizeof(double) * 2 * P * (size_t)omp_get_max_threads());
    layernorm_forward_f32(lyf, mf, rf, xf, gf, bef, N, CI, P, 1e-5f, work);
    layernorm_forward_f64(lyd, md, rd, xd, gd, bed, N, CI, P, 1e-5, work);
    layernorm_backward_f32(ldxf, dgf, dbef, ldyf, xf, mf, rf, gf, N, CI, P, work, 0);
    layernorm_backward_f64(ldxd, dgd, dbed, ldyd, xd, md, rd, gd, N, CI, P, work, 0);
    static float ldxf1[XN];
    for (int i = 0; i < XN; i++) ldxf1[i] = NAN;
    layernorm_backward_f32(ldxf1, NULL, NULL, ldyf, xf, mf, rf, gf, N, CI, P, work, 1);
    CHECK(same_f(ldxf1, ldxf, XN), "a fresh layernorm dx differs from one added into zeros");
    const double l[4] = {rel_err_f(lyf, lyd, XN), rel_err_f(ldxf, ldxd, XN), rel_err_f(dgf, dgd, CI),
                         rel_err_f(dbef, dbed, CI)};
    printf("    layernorm float32 against float64: y %.2g, dx %.2g, dgamma %.2g, dbeta %.2g of their scale\n", l[0],
           l[1], l[2], l[3]);
    for (int t = 0; t < 4; t++) CHECK(l[t] < 2e-6, "layernorm float32 quantity %d: %.3g of its scale", t, l[t]);
    free(work);
}

/* The float32 attention (a vectorised softmax and its backward) against the float64 one: self-attention with a
 * causal mask and cross-attention to fewer keys, outputs and all three gradients within 1e-5 of their scale. */
TEST(attention_f32_matches_f64) {
    enum { N = 2, HEADS = 2, D = 8, LQ = 70, LKMAX = 70, QN = N * HEADS * D * LQ, KN = N * HEADS * D * LKMAX };
    static float qf[QN], kf[KN], vf[KN], yf[QN], pf[N * HEADS * LQ * LKMAX], dyf[QN], dqf[QN], dkf[KN], dvf[KN];
    static double qd[QN], kd[KN], vd[KN], yd[QN], pd[N * HEADS * LQ * LKMAX], dyd[QN], dqd[QN], dkd[KN], dvd[KN];
    static float sf[LQ * LKMAX * 64];
    static double sd[LQ * LKMAX * 64];
    df_rng r;
    df_rng_init(&r, 43);
    for (int kase = 0; kase < 2; kase++) {
        const int Lk = kase ? 13 : LQ, causal = !kase, kn = N * HEADS * D * Lk;
        for (int i = 0; i < QN; i++) qf[i] = (float)(3 * (2 * df_rng_uniform(&r) - 1)), qd[i] = qf[i];
        for (int i = 0; i < QN; i++) dyf[i] = (float)(2 * df_rng_uniform(&r) - 1), dyd[i] = dyf[i], dqf[i] = 0, dqd[i] = 0;
        for (int i = 0; i < kn; i++) {
            kf[i] = (float)(3 * (2 * df_rng_uniform(&r) - 1)), kd[i] = kf[i];
            vf[i] = (float)(2 * df_rng_uniform(&r) - 1), vd[i] = vf[i], dkf[i] = dvf[i] = 0, dkd[i] = dvd[i] = 0;
        }
        const double scale = 1 / sqrt((double)D);
        attention_forward_f32(yf, pf, qf, kf, vf, N, HEADS, D, LQ, Lk, (float)scale, causal);
        attention_forward_f64(yd, pd, qd, kd, vd, N, HEADS, D, LQ, Lk, scale, causal);
        const size_t per = (size_t)LQ * Lk;
        attention_backward_f32(dqf, dkf, dvf, dyf, pf, qf, kf, vf, N, HEADS, D, LQ, Lk, (float)scale, sf, per, 0);
        attention_backward_f64(dqd, dkd, dvd, dyd, pd, qd, kd, vd, N, HEADS, D, LQ, Lk, scale, sd, per, 0);
        /* told that the gradients are fresh, the backward pass writes them: over garbage, the same bits */
        static float gq[QN], gk[KN], gv[KN];
        for (int i = 0; i < QN; i++) gq[i] = NAN;
        for (int i = 0; i < KN; i++) gk[i] = gv[i] = NAN;
        attention_backward_f32(gq, gk, gv, dyf, pf, qf, kf, vf, N, HEADS, D, LQ, Lk, (float)scale, sf, per, 7);
        CHECK(same_f(gq, dqf, QN) && same_f(gk, dkf, (size_t)kn) && same_f(gv, dvf, (size_t)kn),
              "fresh attention gradients differ from ones added into zeros");
        const float *F[4] = {yf, dqf, dkf, dvf};
        const double *G[4] = {yd, dqd, dkd, dvd};
        const int len[4] = {QN, QN, kn, kn};
        const char *what[4] = {"output", "d q", "d k", "d v"};
        for (int t = 0; t < 4; t++) {
            double e = 0, sc = 0;
            for (int i = 0; i < len[t]; i++) e = fmax(e, fabs(F[t][i] - G[t][i])), sc = fmax(sc, fabs(G[t][i]));
            CHECK(e <= 1e-5 * sc, "%s attention, %s: %g off at scale %g", causal ? "causal self" : "cross", what[t], e, sc);
        }
    }
}

TEST(dropout_and_mse) {
    size_t n = 20000;
    double *x = malloc(n * sizeof(double)), *y = malloc(n * sizeof(double)), *m = malloc(n * sizeof(double)),
           *dx = calloc(n, sizeof(double));
    for (size_t i = 0; i < n; i++) x[i] = 1;
    dropout_forward_f64(y, x, n, 0.25, 42);
    double mean = 0;
    size_t zeros = 0;
    for (size_t i = 0; i < n; i++) mean += y[i], zeros += y[i] == 0;
    mean /= (double)n;
    /* E[y] = x; the fraction dropped is p within 5 standard errors */
    CHECK(fabs((double)zeros / n - 0.25) < 5 * sqrt(0.25 * 0.75 / n), "dropout fraction %g", (double)zeros / n);
    CHECK(fabs(mean - 1) < 0.02, "dropout keeps the mean: %g", mean);
    dropout_backward_f64(dx, x, n, 0.25, 42);   /* x is all ones: dx is the mask the forward used */
    for (size_t i = 0; i < n; i++) CHECK(dx[i] == y[i], "dropout backward regenerates the forward's mask");
    dropout_forward_f64(m, x, n, 0.25, 43);
    size_t same = 0;
    for (size_t i = 0; i < n; i++) same += (m[i] == 0) == (y[i] == 0);
    CHECK(same < n, "another seed gives another mask");
    double a[3] = {1, 2, 3}, b[3] = {0, 2, 5}, da[3];
    CHECK_NEAR(mse_forward_f64(a, b, 3), (1.0 + 0 + 4) / 3, 1e-15, "mse");
    mse_backward_f64(da, a, b, 3, 1);
    CHECK_NEAR(da[2], 2 * (3 - 5) / 3.0, 1e-15, "mse gradient");
    free(x), free(y), free(m), free(dx);
}

TEST(timestep_embedding_values) {
    /* diffusers: exponent = -ln(10000) i / (half - shift); [sin, cos], flipped to [cos, sin] */
    double t[2] = {10, 900}, y[2 * 32];
    timestep_forward_f64(y, t, 2, 32, 1, 0);
    for (int i = 0; i < 16; i++) {
        double f = exp(-log(10000.0) * i / 16.0);
        CHECK_NEAR(y[32 + i], cos(900 * f), 1e-12, "cos half");
        CHECK_NEAR(y[32 + 16 + i], sin(900 * f), 1e-12, "sin half");
    }
    double z[7];
    timestep_forward_f64(z, t, 1, 7, 0, 1);   /* odd dim: zero pad; shift 1 */
    CHECK_NEAR(z[0], sin(10.0), 1e-12, "first sin");
    CHECK_NEAR(z[2], sin(10 * exp(-log(10000.0) * 2 / 2.0)), 1e-12, "shifted frequency");
    CHECK(z[6] == 0, "odd dimension padded with zero");
}

/* (n, c, hw) plain -> (n, c/blk, hw, blk) */
static void to_blocked(double *dst, const double *src, int n, int c, int hw, int blk) {
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++)
            for (int p = 0; p < hw; p++)
                dst[(((size_t)i * (c / blk) + ch / blk) * hw + p) * blk + ch % blk] = src[((size_t)i * c + ch) * hw + p];
}

/* The layout-aware ops in the channel-blocked layout: finite differences, and the forward equals the
 * plain layout's forward with its input and output permuted. */
TEST(blocked_layout_ops) {
    df_rng r;
    df_rng_init(&r, 21);
    const int n = 2, c = 6, blk = 3, h = 4, w = 6, hw = h * w;
    double x[2 * 6 * 24], xb[2 * 6 * 24], v[2 * 12], y1[2 * 6 * 96], y2[2 * 6 * 96], yb[2 * 6 * 96];
    double gamma[6], beta[6], st1[8], st2[8];
    for (int i = 0; i < n * c * hw; i++) x[i] = df_rng_normal(&r) * 2 + 0.5;
    for (int i = 0; i < 2 * n * c; i++) v[i] = df_rng_normal(&r);
    for (int i = 0; i < c; i++) gamma[i] = 1 + 0.3 * df_rng_normal(&r), beta[i] = df_rng_normal(&r);
    to_blocked(xb, x, n, c, hw, blk);
    for (int k = 0; k < 5; k++) {
        int ho = h, wo = w;
        const char *what = "";
        switch (k) {
        case 0:
            what = "groupnorm";
            groupnorm_forward_f64(y1, st1, st1 + 4, x, gamma, beta, n, c, hw, 2, 1e-5, 1, gn_work);
            groupnorm_forward_f64(y2, st2, st2 + 4, xb, gamma, beta, n, c, hw, 2, 1e-5, blk, gn_work);
            break;
        case 1:
            what = "add_nc";
            add_nc_forward_f64(y1, x, v, n, c, hw, 1);
            add_nc_forward_f64(y2, xb, v, n, c, hw, blk);
            break;
        case 2:
            what = "scale_shift";
            scale_shift_forward_f64(y1, x, v, n, c, hw, 1);
            scale_shift_forward_f64(y2, xb, v, n, c, hw, blk);
            break;
        case 3:
            what = "upsample";
            upsample_forward_f64(y1, x, n * c, h, w, 1);
            upsample_forward_f64(y2, xb, n * c, h, w, blk);
            ho *= 2, wo *= 2;
            break;
        case 4:
            what = "avgpool";
            avgpool_forward_f64(y1, x, n * c, h, w, 1);
            avgpool_forward_f64(y2, xb, n * c, h, w, blk);
            ho /= 2, wo /= 2;
            break;
        }
        to_blocked(yb, y1, n, c, ho * wo, blk);
        double worst = 0;
        for (int i = 0; i < n * c * ho * wo; i++) worst = fmax(worst, fabs(yb[i] - y2[i]));
        CHECK(worst < 1e-12, "%s: blocked forward differs from plain by %.3g", what, worst);
    }
    /* finite differences of every layout-aware op in the blocked layout */
    case_blk = blk;
    op_case *oc = new_case("upsample (blocked)", 1, (size_t)n * c * 4 * hw);
    oc->iarg[0] = n * c, oc->iarg[1] = h, oc->iarg[2] = w;
    case_inputs(oc, &r, (size_t[]){(size_t)n * c * hw}, (const char *[]){"x"}, NULL);
    oc->fwd = up_f, oc->bwd = up_b;
    fd_check(oc, 21, 1e-7);
    free_case(oc);
    oc = new_case("avgpool (blocked)", 1, (size_t)n * c * hw / 4);
    oc->iarg[0] = n * c, oc->iarg[1] = h, oc->iarg[2] = w;
    case_inputs(oc, &r, (size_t[]){(size_t)n * c * hw}, (const char *[]){"x"}, NULL);
    oc->fwd = pool_f, oc->bwd = pool_b;
    fd_check(oc, 21, 1e-7);
    free_case(oc);
    oc = new_case("add_nc (blocked)", 2, (size_t)n * c * hw);
    oc->iarg[0] = n, oc->iarg[1] = c, oc->iarg[2] = hw;
    case_inputs(oc, &r, (size_t[]){(size_t)n * c * hw, (size_t)n * c}, (const char *[]){"x", "v"}, NULL);
    oc->fwd = addnc_f, oc->bwd = addnc_b;
    fd_check(oc, 21, 1e-7);
    free_case(oc);
    oc = new_case("scale_shift (blocked)", 2, (size_t)n * c * hw);
    oc->iarg[0] = n, oc->iarg[1] = c, oc->iarg[2] = hw;
    case_inputs(oc, &r, (size_t[]){(size_t)n * c * hw, (size_t)n * 2 * c}, (const char *[]){"x", "v"}, NULL);
    oc->fwd = ss_f, oc->bwd = ss_b;
    fd_check(oc, 21, 1e-7);
    free_case(oc);
    case_blk = 1;
}

/* norm_silu: iarg n, c, hw, groups; farg eps; inputs x, v (per image and channel), gamma, beta */
static void ns_f(op_case *c, double *y) {
    int n = c->iarg[0], g = c->iarg[3];
    norm_silu_forward_f64(y, c->saved, c->saved + n * g, c->in[0], c->in[1], c->in[2], c->in[3], n, c->iarg[1],
                          c->iarg[2], g, c->farg[0], case_blk, gn_work);
}
static void ns_b(op_case *c, const double *dy, double **d) {
    int n = c->iarg[0], g = c->iarg[3];
    norm_silu_backward_f64(d[0], d[1], d[2], d[3], dy, c->in[0], c->in[1], c->saved, c->saved + n * g, c->in[2],
                           c->in[3], n, c->iarg[1], c->iarg[2], g, case_blk, gn_work);
}

/* The fused GroupNorm + SiLU: finite differences (plain and blocked, with and without the added
 * vector), and its forward against silu(GroupNorm(x + v)) composed from the separate ops. */
TEST(norm_silu_gradcheck) {
    for (uint64_t s = 1; s <= 4; s++) {
        df_rng r;
        df_rng_init(&r, 40 + s);
        case_blk = s % 2 ? 1 : 3;
        int n = 2, ch = 6, hw = 5, g = s <= 2 ? 3 : 6;
        op_case *c = new_case("norm_silu", 4, (size_t)n * ch * hw);
        c->iarg[0] = n, c->iarg[1] = ch, c->iarg[2] = hw, c->iarg[3] = g;
        c->farg[0] = 1e-5;
        case_inputs(c, &r, (size_t[]){(size_t)n * ch * hw, (size_t)n * ch, (size_t)ch, (size_t)ch},
                    (const char *[]){"x", "v", "gamma", "beta"}, NULL);
        c->saved = malloc(sizeof(double) * 2 * n * g);
        c->fwd = ns_f, c->bwd = ns_b;
        fd_check(c, s, 1e-5);
        if (case_blk == 1) {
            double y[60], u[60], z[60], st[24];
            ns_f(c, y);
            for (int i = 0; i < n * ch * hw; i++) u[i] = c->in[0][i] + c->in[1][i / hw];
            groupnorm_forward_f64(z, st, st + n * g, u, c->in[2], c->in[3], n, ch, hw, g, 1e-5, 1, gn_work);
            double worst = 0;
            for (int i = 0; i < n * ch * hw; i++) worst = fmax(worst, fabs(y[i] - z[i] / (1 + exp(-z[i]))));
            CHECK(worst < 1e-13, "norm_silu differs from silu(groupnorm(x + v)) by %.3g", worst);
        }
        free_case(c);
    }
    case_blk = 1;
}
