/* The random generator: reproducible streams, and uniform and normal draws with the right moments. */
#include "test.h"

#include <string.h>

TEST(rng_reproducible_streams) {
    df_rng a, b, c;
    df_rng_init(&a, 42);
    df_rng_init(&b, 42);
    df_rng_init(&c, 43);
    int same = 1, differ = 0;
    for (int i = 0; i < 1000; i++) {
        uint32_t x = df_rng_u32(&a), y = df_rng_u32(&b), z = df_rng_u32(&c);
        same &= x == y;
        differ += x != z;
    }
    CHECK(same, "same seed, same stream");
    CHECK(differ > 990, "another seed gives another stream (%d of 1000 differ)", differ);
    /* a copied state continues identically (how streams are forked and resumed) */
    df_rng d = a;
    for (int i = 0; i < 7; i++) CHECK(df_rng_normal(&a) == df_rng_normal(&d), "copied state diverged at %d", i);
    /* the first block of Philox-4x32-10 with key 0 and counter 0 (Random123's known-answer vector) */
    df_rng z;
    df_rng_init(&z, 0);
    uint32_t kat[4] = {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8};
    for (int i = 0; i < 4; i++) {
        uint32_t v = df_rng_u32(&z);
        CHECK(v == kat[i], "Philox known answer word %d: %08x vs %08x", i, v, kat[i]);
    }
}

TEST(rng_moments) {
    df_rng r;
    df_rng_init(&r, 7);
    const int n = 200000;
    double su = 0, su2 = 0, sn = 0, sn2 = 0, sn3 = 0, sn4 = 0, umin = 1, umax = 0;
    for (int i = 0; i < n; i++) {
        double u = df_rng_uniform(&r), z = df_rng_normal(&r);
        su += u, su2 += u * u;
        umin = fmin(umin, u), umax = fmax(umax, u);
        sn += z, sn2 += z * z, sn3 += z * z * z, sn4 += z * z * z * z;
    }
    /* tolerances: 5 standard errors of each sample moment */
    CHECK(umin >= 0 && umax < 1, "uniform range [%g, %g]", umin, umax);
    CHECK_NEAR(su / n, 0.5, 5 * sqrt(1.0 / 12 / n), "uniform mean");
    CHECK_NEAR(su2 / n, 1.0 / 3, 5 * sqrt(4.0 / 45 / n), "uniform second moment");
    CHECK_NEAR(sn / n, 0, 5 * sqrt(1.0 / n), "normal mean");
    CHECK_NEAR(sn2 / n, 1, 5 * sqrt(2.0 / n), "normal variance");
    CHECK_NEAR(sn3 / n, 0, 5 * sqrt(15.0 / n), "normal third moment");
    CHECK_NEAR(sn4 / n, 3, 5 * sqrt(96.0 / n), "normal fourth moment");
    float buf[1000];
    df_rng_fill_uniform(&r, buf, 1000, -1, 1);
    int in = 1;
    for (int i = 0; i < 1000; i++) in &= buf[i] >= -1 && buf[i] < 1;
    CHECK(in, "fill_uniform stays in [-1, 1)");
}
