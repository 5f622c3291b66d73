/* Vectorised float32 elementwise kernels (vec.c). Callers split work across threads; these run on one
 * span. Accuracy: the exponential is within about 2 ulp of the exact value. */
#ifndef DF_VEC_H
#define DF_VEC_H

#include <stddef.h>

void vec_silu(float *y, const float *x, size_t n);                                /* y = x sigmoid(x) */
void vec_silu_backward(float *dx, const float *dy, const float *x, size_t n);    /* dx += dy silu'(x) */
void vec_exp(float *y, const float *x, size_t n);

#endif
