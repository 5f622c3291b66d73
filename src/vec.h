/* Vectorised float32 elementwise kernels (vec.c). Callers split work across threads; these run on one
 * span. Accuracy: the exponential is within about 2 ulp of the exact value. */
#ifndef DF_VEC_H
#define DF_VEC_H

#include <stddef.h>

void vec_silu(float *y, const float *x, size_t n);                                /* y = x sigmoid(x) */
void vec_silu_backward(float *dx, const float *dy, const float *x, size_t n);    /* dx += dy silu'(x) */
/* The largest of x[0..n), n >= 1. */
float vec_max(const float *x, size_t n);
void  vec_scale(float *x, size_t n, float a);   /* x *= a */
/* A softmax row's exponentials in place, x[i] = e^(x[i] - mx), returning their sum. */
double vec_exp_shift_sum(float *x, size_t n, float mx);
/* A softmax row's backward in place: g = p (g - <g, p>), given the row's probabilities p and their gradient g. */
void vec_softmax_backward(float *g, const float *p, size_t n);
/* GEGLU: y = v gelu(g) (the exact GELU, x Phi(x), with erf to about 1.5e-7); its backward adds into dv and dg
 * (writes them when fresh). */
void vec_geglu(float *y, const float *v, const float *g, size_t n);
void vec_geglu_backward(float *dv, float *dg, const float *dy, const float *v, const float *g, size_t n, int fresh);

/* The fused GroupNorm + SiLU over one channel block of npix pixels x blk lanes (blk 1, 8 or 16), lane ci
 * with z = x a[ci] + b[ci]:
 *   vec_norm_silu       y = silu(z)
 *   vec_norm_silu_sums  dz = dy silu'(z); A[ci] += sum dz, D[ci] += sum dz x
 *   vec_norm_silu_dx    g = dz kd[ci] + x kx[ci] + k0[ci]; dx += g, S[ci] += sum g */
void vec_norm_silu(float *y, const float *x, size_t npix, int blk, const float *a, const float *b);
void vec_norm_silu_sums(const float *dy, const float *x, size_t npix, int blk, const float *a, const float *b,
                        double *A, double *D);
void vec_norm_silu_dx(float *dx, const float *dy, const float *x, size_t npix, int blk, const float *a,
                      const float *b, const float *kd, const float *kx, const float *k0, double *S);

/* Per-lane sums over a channel block: S[ci] += sum x; Q[ci] += sum (x - mu[ci])^2 unless Q is NULL
 * (mu NULL: 0). */
void vec_lane_stats(const float *x, size_t npix, int blk, const float *mu, double *S, double *Q);

/* Rows of a channel-major image (rows x cols): s[r] += the sum of row r (16 interleaved lanes, a fixed order);
 * y[r][j] = (y[r][j] + b[r]) + res[r][j], b or res NULL when absent. */
void vec_row_sums(float *s, const float *x, int rows, size_t cols);
void vec_add_bias_residual(float *y, const float *b, const float *res, int rows, size_t cols);

/* LayerNorm of one image (c channels x L positions) over its channels, the positions in lanes; m, v, s1, s2:
 * L floats of workspace each. vec_layernorm_dx adds the input's gradient (writes it when fresh); vec_layernorm_dgamma adds one
 * channel row's terms of dgamma and dbeta into per-position double sums ag and ab. */
void vec_layernorm(float *Y, float *mean, float *rstd, const float *X, const float *gamma, const float *beta, int c,
                   size_t L, float eps, float *m, float *v);
void vec_layernorm_dx(float *DX, const float *DY, const float *X, const float *M, const float *R, const float *gamma,
                      int c, size_t L, float *s1, float *s2, int fresh);
void vec_layernorm_dgamma(double *ag, double *ab, const float *dy, const float *x, const float *M, const float *R,
                          size_t L);

#endif
