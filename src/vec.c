/* float32 elementwise kernels written for the vectoriser: no libm calls, no branches (the Makefile
 * builds this file with -fno-trapping-math so the clamps become selects, and lets it fuse multiply-adds).
 * The default build stays portable: the AVX2 versions run only where the CPU has AVX2 and FMA. */
#include "vec.h"

#include <stdint.h>
#include <string.h>

/* Each kernel's body is written once and compiled twice: for AVX2 + FMA and for baseline x86-64; the
 * CPU is asked once which to run. */
#if defined(__x86_64__) && defined(__GNUC__)
#define FAST_TARGET __attribute__((target("avx2,fma")))
static int have_avx2(void) {
    static int known = -1;
    if (known < 0) known = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return known;
}
#else
#define FAST_TARGET
static int have_avx2(void) { return 0; }
#endif

#define BODY static inline __attribute__((always_inline))

/* Defines name(params): the dispatcher, with name##_avx2 and name##_base around body_fn(args). */
#define DISPATCH(name, params, args)                                      \
    FAST_TARGET static void name##_avx2 params { name##_body args; }     \
    static void name##_base params { name##_body args; }                 \
    void name params {                                                    \
        if (have_avx2())                                                  \
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

BODY void vec_exp_body(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = exp_f32(x[i]);
}
DISPATCH(vec_exp, (float *y, const float *x, size_t n), (y, x, n))
