/* A seeded counter-based random generator: Philox-4x32-10 (Salmon et al. 2011), keyed by the seed.
 * Uniforms take 53 bits; normals use the Box-Muller transform. No global state. */
#include "internal.h"

#include <math.h>

void df_philox_stream(uint64_t seed, uint64_t stream, uint64_t counter, uint32_t out[4]) {
    uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = (uint32_t)stream, c3 = (uint32_t)(stream >> 32);
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0;
        uint64_t p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

void df_philox(uint64_t seed, uint64_t counter, uint32_t out[4]) { df_philox_stream(seed, 0, counter, out); }

void df_rng_init(df_rng *r, uint64_t seed) { df_rng_init_stream(r, seed, 0); }

void df_rng_init_stream(df_rng *r, uint64_t seed, uint64_t stream) {
    r->seed = seed;
    r->stream = stream;
    r->counter = 0;
    r->nbuf = 0;
    r->buf[0] = r->buf[1] = r->buf[2] = r->buf[3] = 0;
}

uint32_t df_rng_u32(df_rng *r) {
    if (r->nbuf == 0) {
        df_philox_stream(r->seed, r->stream, r->counter++, r->buf);
        r->nbuf = 4;
    }
    return r->buf[4 - r->nbuf--];
}

double df_rng_uniform(df_rng *r) {
    uint64_t a = df_rng_u32(r) >> 5, b = df_rng_u32(r) >> 6;   /* 27 + 26 bits */
    return (double)((a << 26) | b) * (1.0 / 9007199254740992.0);
}

void df_shuffle(int *perm, int n, df_rng *r) {
    for (int i = 0; i < n; i++) perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(df_rng_uniform(r) * (i + 1)), tmp = perm[i];
        perm[i] = perm[j], perm[j] = tmp;
    }
}

double df_rng_normal(df_rng *r) {
    double u1 = 1.0 - df_rng_uniform(r);   /* (0, 1]: log is finite */
    double u2 = df_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void df_rng_fill_normal(df_rng *r, float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = (float)df_rng_normal(r);
}

void df_rng_fill_uniform(df_rng *r, float *x, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * (float)df_rng_uniform(r);
}
