/* The ops: each forward next to its backward. Tensors are (N, C, H, W) row-major, vectors (N, C).
 * Backward functions add (+=) into every gradient they produce; a NULL gradient pointer is skipped.
 * `scratch` is per-thread workspace: scratch_per_thread elements for each OpenMP thread. */
#include "graph.h"
#include "real.h"

/* Per-thread scratch (in elements) the conv forward and backward need. */
size_t RF(conv_scratch)(const conv_geom *g);
/* residual (NULL: none): added to the output, shaped like it (plain layout) */
void RF(conv_forward)(real *y, const real *x, const real *w, const real *b, const real *residual, int n,
                      const conv_geom *g, real *scratch, size_t scratch_per_thread);
/* fresh bit 0: dx holds no gradient yet and is written, not added to (pointwise convolutions only; see
 * conv_writes_fresh_dx); bit 1: the same for dresidual, the residual's gradient (NULL: none). */
void RF(conv_backward)(real *dx, real *dw, real *db, real *dresidual, const real *dy, const real *x, const real *w,
                       int n, const conv_geom *g, real *scratch, size_t scratch_per_thread, unsigned fresh);
/* Whether conv_backward writes a fresh dx itself (the caller then skips zeroing it). */
static inline int conv_writes_fresh_dx(const conv_geom *g) { return conv_is_pointwise(g); }

/* y (n, out) = x (n, in) w^T (w is (out, in)) + b */
void RF(linear_forward)(real *y, const real *x, const real *w, const real *b, int n, int in, int out);
void RF(linear_backward)(real *dx, real *dw, real *db, const real *dy, const real *x, const real *w, int n,
                         int in, int out);

/* Layouts: a spatial value is (N, C/blk, H, W, blk): blk = 1 is plain (N, C, H, W); blk = 8 or 16 is
 * the channel-blocked layout oneDNN's kernels use. Elementwise ops do not care; the ones below that
 * treat channels or pixels differently take blk. Vectors (N, C) are the same in both layouts. */

/* GroupNorm over (C/G channels x hw) per image and group; saves mean and 1/std, (n*G) each.
 * work holds 8*n*c doubles. */
void RF(groupnorm_forward)(real *y, real *mean, real *rstd, const real *x, const real *gamma,
                           const real *beta, int n, int c, int hw, int groups, real eps, int blk, double *work);
void RF(groupnorm_backward)(real *dx, real *dgamma, real *dbeta, const real *dy, const real *x,
                            const real *mean, const real *rstd, const real *gamma, int n, int c, int hw,
                            int groups, int blk, double *work);

/* silu(GroupNorm(x + v)) with v (n, c) added per channel (or NULL); saves mean and 1/std like GroupNorm
 * and keeps nothing else: its backward recomputes the normalised values. work as for GroupNorm. */
void RF(norm_silu_forward)(real *y, real *mean, real *rstd, const real *x, const real *v, const real *gamma,
                           const real *beta, int n, int c, int hw, int groups, real eps, int blk, double *work);
/* The forward's output again from its saved statistics: the same bits, without the statistics pass. */
void RF(norm_silu_again)(real *y, const real *x, const real *v, const real *mean, const real *rstd, const real *gamma,
                         const real *beta, int n, int c, int hw, int groups, int blk, double *work);
void RF(norm_silu_backward)(real *dx, real *dv, real *dgamma, real *dbeta, const real *dy, const real *x,
                            const real *v, const real *mean, const real *rstd, const real *gamma, const real *beta,
                            int n, int c, int hw, int groups, int blk, double *work);

void RF(silu_forward)(real *y, const real *x, size_t count);
void RF(silu_backward)(real *dx, const real *dy, const real *x, size_t count);

/* diffusers' Timesteps: dim sinusoids of t with frequencies exp(-ln(1e4) i / (dim/2 - shift));
 * [sin, cos], swapped to [cos, sin] when flip; a zero column pads odd dims. No backward (t is data). */
void RF(timestep_forward)(real *y, const real *t, int n, int dim, int flip, real shift);

void RF(embed_forward)(real *y, const real *table, const int *idx, int n, int dim);
void RF(embed_backward)(real *dtable, const real *dy, const int *idx, int n, int dim);

void RF(upsample_forward)(real *y, const real *x, int nc, int h, int w, int blk);   /* y is (nc, 2h, 2w) */
void RF(upsample_backward)(real *dx, const real *dy, int nc, int h, int w, int blk);
void RF(avgpool_forward)(real *y, const real *x, int nc, int h, int w, int blk);    /* y is (nc, h/2, w/2) */
void RF(avgpool_backward)(real *dx, const real *dy, int nc, int h, int w, int blk);
void RF(mean_hw_forward)(real *y, const real *x, int nc, int hw);      /* y (nc) = mean of each x plane (nc, hw) */
void RF(mean_hw_backward)(real *dx, const real *dy, int nc, int hw);

void RF(concat_forward)(real *y, const real *a, const real *b, int n, int ca, int cb, int hw);
void RF(concat_backward)(real *da, real *db, const real *dy, int n, int ca, int cb, int hw);

/* y = (a + b) * s */
void RF(add_forward)(real *y, const real *a, const real *b, real s, size_t count);
/* fresh bit 0, 1: da, db hold no gradient yet and are written, not added to (so for the ops below that take it) */
void RF(add_backward)(real *da, real *db, const real *dy, real s, size_t count, unsigned fresh);

/* y (n,c,hw) = x + v[:, :, None] */
void RF(add_nc_forward)(real *y, const real *x, const real *v, int n, int c, int hw, int blk);
void RF(add_nc_backward)(real *dx, real *dv, const real *dy, int n, int c, int hw, int blk);

/* y = x * (1 + v[:, :c]) + v[:, c:], v is (n, 2c) */
void RF(scale_shift_forward)(real *y, const real *x, const real *v, int n, int c, int hw, int blk);
void RF(scale_shift_backward)(real *dx, real *dv, const real *dy, const real *x, const real *v, int n, int c,
                              int hw, int blk);

/* Multi-head attention: q, y (n, heads*d, Lq) and k, v (n, heads*d, Lk), channel-major (queries at Lq
 * positions attend over Lk keys: self-attention when they are the same positions, cross-attention over a
 * text's tokens otherwise); p saves the softmax probabilities (n, heads, Lq, Lk). Softmax is
 * max-subtracted; scale is usually d^-1/2. causal (Lq = Lk): query i sees keys 0..i only (CLIP's text
 * encoder). Scratch: Lq*Lk per thread. */
void RF(attention_forward)(real *y, real *p, const real *q, const real *k, const real *v, int n, int heads,
                           int d, int Lq, int Lk, real scale, int causal);
/* fresh bit 0, 1, 2: dq, dk, dv hold no gradient yet and are written, not added to. */
void RF(attention_backward)(real *dq, real *dk, real *dv, const real *dy, const real *p, const real *q,
                            const real *k, const real *v, int n, int heads, int d, int Lq, int Lk, real scale,
                            real *scratch, size_t scratch_per_thread, unsigned fresh);

/* Dropout with the mask drawn from `seed` (0: identity), regenerated by the backward pass. */
void RF(dropout_forward)(real *y, const real *x, size_t count, real p, uint64_t seed);
void RF(dropout_backward)(real *dx, const real *dy, size_t count, real p, uint64_t seed);

/* y = a x + b */
void RF(affine_forward)(real *y, const real *x, real a, real b, size_t count);
void RF(affine_backward)(real *dx, const real *dy, real a, size_t count);

/* mean((a - b)^2) over count values; the gradient with respect to a (written, not added) if da. */
double RF(mse_forward)(const real *a, const real *b, size_t count);
void   RF(mse_backward)(real *da, const real *a, const real *b, size_t count, real scale);

/* ---- transformer ops (transformer_real.c) ---- */

/* LayerNorm over the c channels at each of the L positions of x (n, c, L); saves mean and 1/std (n*L each).
 * work: 2 L doubles per thread. */
void RF(layernorm_forward)(real *y, real *mean, real *rstd, const real *x, const real *gamma, const real *beta,
                           int n, int c, int L, real eps, double *work);
void RF(layernorm_backward)(real *dx, real *dgamma, real *dbeta, const real *dy, const real *x, const real *mean,
                            const real *rstd, const real *gamma, int n, int c, int L, double *work, int dx_fresh);
/* y = act(x) elementwise, kind a df_act */
void RF(act_forward)(real *y, const real *x, size_t count, int kind);
void RF(act_backward)(real *dx, const real *dy, const real *x, size_t count, int kind);
/* y (n, c, L) = x[:, :c] * gelu(x[:, c:]), x (n, 2c, L) */
void RF(geglu_forward)(real *y, const real *x, int n, int c, int L);
void RF(geglu_backward)(real *dx, const real *dy, const real *x, int n, int c, int L, int dx_fresh);
/* y (n, d, L) = tok[ids] + pos[0..L) */
void RF(tokens_forward)(real *y, const real *tok, const real *pos, const int *ids, int n, int d, int L);
void RF(tokens_backward)(real *dtok, real *dpos, const real *dy, const int *ids, int n, int d, int L);
