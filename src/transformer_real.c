/* The transformer's ops, each forward next to its backward: LayerNorm over channels, the GELU family
 * (erf, tanh, CLIP's quick GELU), diffusers' GEGLU, and CLIP's token plus position embeddings. Tokens
 * are positions of a channel-major value (N, C, L), like an image's pixels. */
#include "ops_real.h"
#include "vec.h"

#include <math.h>
#include <omp.h>

/* ---- LayerNorm --------------------------------------------------------------------------------------- */

/* Statistics in `real` (float32 sums of one position's channels lose nothing that matters; float64 for the
 * reference), two passes (mean, then the squared deviations) per image over channels at each position,
 * running along positions so that they vectorise; work holds 2 L reals per thread. */
void RF(layernorm_forward)(real *y, real *mean, real *rstd, const real *x, const real *gamma, const real *beta,
                           int n, int c, int L, real eps, double *work) {
#pragma omp parallel for schedule(static)
    for (int b = 0; b < n; b++) {
        real *m = (real *)(work + (size_t)omp_get_thread_num() * 2 * L), *v = m + L;
        const real *X = x + (size_t)b * c * L;
        real *Y = y + (size_t)b * c * L;
#if !DF_REAL_F64
        vec_layernorm(Y, mean + (size_t)b * L, rstd + (size_t)b * L, X, gamma, beta, c, (size_t)L, eps, m, v);
#else
        for (int l = 0; l < L; l++) m[l] = v[l] = 0;
        for (int ci = 0; ci < c; ci++)
            for (int l = 0; l < L; l++) m[l] += X[(size_t)ci * L + l];
        for (int l = 0; l < L; l++) m[l] /= (real)c;
        for (int ci = 0; ci < c; ci++)
            for (int l = 0; l < L; l++) {
                const real dd = X[(size_t)ci * L + l] - m[l];
                v[l] += dd * dd;
            }
        for (int l = 0; l < L; l++) {
            v[l] = (real)(1 / sqrt((double)v[l] / c + eps));
            mean[(size_t)b * L + l] = m[l], rstd[(size_t)b * L + l] = v[l];
        }
        for (int ci = 0; ci < c; ci++) {
            const real g = gamma[ci], be = beta[ci];
            for (int l = 0; l < L; l++) {
                const size_t i = (size_t)ci * L + l;
                Y[i] = (X[i] - m[l]) * v[l] * g + be;
            }
        }
#endif
    }
}

/* dx = rstd (g dy - mean_c(g dy) - xhat mean_c(g dy xhat)); dgamma = sum dy xhat, dbeta = sum dy, each
 * channel summed over images and positions in a fixed order (the same bits for any thread count). */
void RF(layernorm_backward)(real *dx, real *dgamma, real *dbeta, const real *dy, const real *x, const real *mean,
                            const real *rstd, const real *gamma, int n, int c, int L, double *work, int dx_fresh) {
    if (dgamma || dbeta) {
#pragma omp parallel for schedule(static)
        for (int ci = 0; ci < c; ci++) {
            /* per-position sums over the images first (independent lanes, so they vectorise), then over the
             * positions */
            double *ag = work + (size_t)omp_get_thread_num() * 2 * L, *ab = ag + L, sg = 0, sb = 0;
            for (int l = 0; l < L; l++) ag[l] = ab[l] = 0;
            for (int b = 0; b < n; b++) {
                const size_t o = ((size_t)b * c + ci) * L;
                const real *M = mean + (size_t)b * L, *R = rstd + (size_t)b * L;
#if !DF_REAL_F64
                vec_layernorm_dgamma(ag, ab, dy + o, x + o, M, R, (size_t)L);
#else
                for (int l = 0; l < L; l++) {
                    const double xh = (x[o + l] - M[l]) * R[l];
                    ag[l] += dy[o + l] * xh, ab[l] += dy[o + l];
                }
#endif
            }
            for (int l = 0; l < L; l++) sg += ag[l], sb += ab[l];
            if (dgamma) dgamma[ci] += (real)sg;
            if (dbeta) dbeta[ci] += (real)sb;
        }
    }
    if (!dx) return;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < n; b++) {
        real *s1 = (real *)(work + (size_t)omp_get_thread_num() * 2 * L), *s2 = s1 + L;
        const real *X = x + (size_t)b * c * L, *DY = dy + (size_t)b * c * L, *M = mean + (size_t)b * L,
                   *R = rstd + (size_t)b * L;
#if !DF_REAL_F64
        vec_layernorm_dx(dx + (size_t)b * c * L, DY, X, M, R, gamma, c, (size_t)L, s1, s2, dx_fresh);
#else
        for (int l = 0; l < L; l++) s1[l] = s2[l] = 0;
        for (int ci = 0; ci < c; ci++)
            for (int l = 0; l < L; l++) {
                const size_t i = (size_t)ci * L + l;
                const real gd = gamma[ci] * DY[i];
                s1[l] += gd, s2[l] += gd * (X[i] - M[l]) * R[l];
            }
        for (int l = 0; l < L; l++) s1[l] /= (real)c, s2[l] /= (real)c;
        real *DX = dx + (size_t)b * c * L;
        for (int ci = 0; ci < c; ci++)
            for (int l = 0; l < L; l++) {
                const size_t i = (size_t)ci * L + l;
                const real xh = (X[i] - M[l]) * R[l], g = R[l] * (gamma[ci] * DY[i] - s1[l] - xh * s2[l]);
                DX[i] = dx_fresh ? g : DX[i] + g;
            }
#endif
    }
}

/* ---- GELU and its kin -------------------------------------------------------------------------------- */

/* The activation and its derivative at x, in double. */
static inline void act_eval(int kind, double x, double *f, double *df) {
    switch (kind) {
    case DF_ACT_GELU: {   /* x Phi(x) */
        const double cdf = 0.5 * (1 + erf(x * 0.7071067811865476)), pdf = exp(-0.5 * x * x) * 0.3989422804014327;
        *f = x * cdf, *df = cdf + x * pdf;
        break;
    }
    case DF_ACT_GELU_TANH: {   /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
        const double k = 0.7978845608028654, u = k * (x + 0.044715 * x * x * x), t = tanh(u);
        *f = 0.5 * x * (1 + t), *df = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x);
        break;
    }
    default: {   /* quick GELU (CLIP): x sigmoid(1.702 x) */
        const double s = 1 / (1 + exp(-1.702 * x));
        *f = x * s, *df = s + x * 1.702 * s * (1 - s);
        break;
    }
    }
}

void RF(act_forward)(real *y, const real *x, size_t count, int kind) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < count; i++) {
        double f, df;
        act_eval(kind, x[i], &f, &df);
        y[i] = (real)f;
    }
}

void RF(act_backward)(real *dx, const real *dy, const real *x, size_t count, int kind) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < count; i++) {
        double f, df;
        act_eval(kind, x[i], &f, &df);
        dx[i] += (real)(dy[i] * df);
    }
}

/* diffusers' GEGLU after its projection: x (n, 2c, L) holds the values in channels [0, c) and the gates in
 * [c, 2c); y (n, c, L) = value * gelu(gate). */
void RF(geglu_forward)(real *y, const real *x, int n, int c, int L) {
    const size_t half = (size_t)c * L;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < n; b++) {
        const real *X = x + (size_t)b * 2 * half;
        real *Y = y + (size_t)b * half;
#if DF_REAL_F64
        for (size_t i = 0; i < half; i++) {
            double f, df;
            act_eval(DF_ACT_GELU, X[half + i], &f, &df);
            Y[i] = X[i] * f;
        }
#else
        vec_geglu(Y, X, X + half, half);
#endif
    }
}

void RF(geglu_backward)(real *dx, const real *dy, const real *x, int n, int c, int L, int dx_fresh) {
    const size_t half = (size_t)c * L;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < n; b++) {
        const real *X = x + (size_t)b * 2 * half, *DY = dy + (size_t)b * half;
        real *DX = dx + (size_t)b * 2 * half;
#if DF_REAL_F64
        for (size_t i = 0; i < half; i++) {
            double f, df;
            act_eval(DF_ACT_GELU, X[half + i], &f, &df);
            const real gv = DY[i] * f, gg = DY[i] * X[i] * df;
            DX[i] = dx_fresh ? gv : DX[i] + gv, DX[half + i] = dx_fresh ? gg : DX[half + i] + gg;
        }
#else
        vec_geglu_backward(DX, DX + half, DY, X, X + half, half, dx_fresh);
#endif
    }
}

/* ---- token and position embeddings ------------------------------------------------------------------- */

/* y (n, d, L) = tok[ids[b, l]] + pos[l], tok (vocab, d) and pos (>= L, d) row-major as transformers keeps
 * them. */
void RF(tokens_forward)(real *y, const real *tok, const real *pos, const int *ids, int n, int d, int L) {
#pragma omp parallel for schedule(static)
    for (int b = 0; b < n; b++)
        for (int l = 0; l < L; l++) {
            const real *t = tok + (size_t)ids[(size_t)b * L + l] * d, *p = pos + (size_t)l * d;
            real *Y = y + (size_t)b * d * L + l;
            for (int e = 0; e < d; e++) Y[(size_t)e * L] = t[e] + p[e];
        }
}

/* Each thread owns a span of channels, so rows that several tokens share are summed in one fixed order. */
void RF(tokens_backward)(real *dtok, real *dpos, const real *dy, const int *ids, int n, int d, int L) {
#pragma omp parallel for schedule(static)
    for (int e = 0; e < d; e++)
        for (int b = 0; b < n; b++)
            for (int l = 0; l < L; l++) {
                const real g = dy[((size_t)b * d + e) * L + l];
                if (dtok) dtok[(size_t)ids[(size_t)b * L + l] * d + e] += g;
                if (dpos) dpos[(size_t)l * d + e] += g;
            }
}
