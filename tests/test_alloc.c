/* Memory sized once: after df_model_reserve, the model's calls allocate nothing (counted through the
 * link-time wrappers of tests/alloc_count.c), and a padded partial batch computes what an exact-size
 * batch does. */
#include "test.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int    n;              /* the reserved batch is 2n; buffers hold 6n images */
    size_t per, nx, np;
    float *x, *y, *noise, *dx, *t, *w, *loss_each, *feats;
    double *logp;
    int   *lab;
} batch;

static void batch_make(batch *b, df_model *m, int n) {
    const df_unet_config *c = df_model_config(m);
    b->n = n;
    b->per = (size_t)c->in_channels * c->sample_size * c->sample_size;
    b->nx = 6 * n * b->per;
    b->np = df_model_num_params(m);
    b->x = malloc(b->nx * 4), b->y = malloc(b->nx * 4), b->noise = malloc(b->nx * 4), b->dx = malloc(b->nx * 4);
    b->t = malloc(sizeof(float) * 2 * n), b->w = malloc(sizeof(float) * 2 * n), b->loss_each = malloc(sizeof(float) * 2 * n);
    b->lab = malloc(sizeof(int) * 2 * n), b->logp = malloc(sizeof(double) * 2 * n);
    b->feats = malloc(sizeof(float) * 6 * n * (size_t)(df_model_feature_dim(m) + 1));
    df_rng r;
    df_rng_init(&r, 5);
    df_rng_fill_normal(&r, b->x, b->nx);
    df_rng_fill_normal(&r, b->noise, b->nx);
    for (int i = 0; i < 2 * n; i++) b->t[i] = (float)(37 * i % 1000), b->w[i] = 0.5f + 0.1f * i, b->lab[i] = i % 3;
}

static void batch_free(batch *b) {
    free(b->x), free(b->y), free(b->noise), free(b->dx), free(b->t), free(b->w), free(b->loss_each);
    free(b->lab), free(b->logp), free(b->feats);
}

/* A diffusion model (class-conditional, attention, dropout in training mode) and a classifier. */
static df_model *make(int classifier, uint64_t seed) {
    df_unet_config c;
    test_tiny_unet(&c, 1);
    if (classifier) c.classifier_classes = 3;
    else c.num_class_embeds = 3, c.dropout = 0.1f;
    df_model *m = NULL;
    CHECK_OK(df_model_create(&c, seed, &m));
    return m;
}

TEST(alloc_none_after_reserve) {
    const int n = 3, s = 8;
    df_rng rng;
    df_rng_init(&rng, 9);
    df_model *m = make(0, 1), *k = make(1, 2);
    if (!m || !k) return;
    batch b, bk;
    batch_make(&b, m, n);
    batch_make(&bk, k, n);
    df_model_set_train(m, 1, &rng);
    df_model_set_threads(m, 1);   /* one model on its own thread count, the classifier on OpenMP's */
    CHECK_OK(df_model_reserve(m, 2 * n, s, s));
    CHECK_OK(df_model_reserve(k, 2 * n, s, s));
    df_model_denoiser dm = {.model = m, .h = s, .w = s, .labels = b.lab}, dk = {.model = k, .h = s, .w = s, .labels = NULL};
    float loss;
    int correct;
    long count[2] = {0, 0}, others[2] = {0, 0};
    for (int pass = 0; pass < 2; pass++) {   /* 1: after a larger call grew the reservation */
        test_alloc_begin();
        for (int rep = 0; rep < 2; rep++)
            for (int nn = rep ? 2 * n : n; nn <= 2 * n; nn += n) {   /* a partial batch and the full (guidance's doubled) one */
                CHECK_OK(df_model_forward(m, nn, s, s, b.x, b.t, b.lab, b.y));
                CHECK_OK(df_model_backward(m, b.noise, b.dx));
                CHECK_OK(df_model_loss_grad(m, nn, s, s, b.x, b.t, b.lab, b.noise, b.w, &loss, b.loss_each));
                CHECK_OK(df_model_denoise(&dm, nn, b.x, b.t, b.y));
                CHECK_OK(df_model_class_denoise(&dm, nn, b.x, b.t, b.lab, b.y));
                CHECK_OK(df_model_classifier_loss_grad(k, nn, s, s, bk.x, bk.t, bk.lab, &loss, &correct));
                CHECK_OK(df_model_classify(&dk, nn, bk.x, bk.t, bk.lab, bk.logp, bk.dx));
                CHECK_OK(df_model_features(k, 3 * nn, s, s, bk.x, bk.feats));   /* more than reserved: in chunks */
            }
        count[pass] = test_alloc_end();
        others[pass] = test_alloc_others();
        if (pass == 0) {   /* a larger batch at the reserved size grows the reservation (allocating once) */
            float *x = calloc((size_t)3 * n * s * s, 4), *y = malloc((size_t)3 * n * s * s * 4), t[9] = {0};
            int lab[9] = {0};
            CHECK_OK(df_model_forward(m, 3 * n, s, s, x, t, lab, y));
            free(x), free(y);
        }
    }
    printf("    library allocations in the steps: %ld, then %ld after growing; shared libraries' heap grew by %ld and %ld "
           "bytes (not counted)\n", count[0], count[1], others[0], others[1]);
    CHECK(count[0] == 0 && count[1] == 0, "the steps allocated %ld and %ld times", count[0], count[1]);

    /* the counter counts: an allocation between begin and end is seen, from any thread */
    test_alloc_begin();
#pragma omp parallel num_threads(2)
    {
        void *volatile p = malloc(16);   /* volatile: the pair must not be optimised away */
        free(p);
    }
    long seen = test_alloc_end();
    CHECK(seen == 2, "two mallocs counted as %ld", seen);
    batch_free(&b), batch_free(&bk);
    df_model_free(m), df_model_free(k);
}

/* A padded partial batch gives the outputs and gradients of an exact-size batch. */
TEST(alloc_padded_batch_matches_exact) {
    const int n = 3, s = 8;
    for (int classifier = 0; classifier < 2; classifier++) {
        df_model *m[2] = {make(classifier, 4), make(classifier, 4)};   /* 0: exact size, 1: reserved for 2n */
        if (!m[0] || !m[1]) return;
        CHECK_OK(df_model_reserve(m[1], 2 * n, s, s));
        batch b;
        batch_make(&b, m[0], n);
        const size_t nx = n * b.per, np = b.np;
        float *y[2], *dx[2], *g[2], loss[2];
        double logp[2][3];
        df_rng rng[2];
        for (int j = 0; j < 2; j++) {
            y[j] = malloc(nx * 4), dx[j] = malloc(nx * 4), g[j] = malloc(np * 4);
            df_rng_init(&rng[j], 21);   /* the same dropout masks */
            df_model_set_train(m[j], !classifier, &rng[j]);
            df_model_zero_grad(m[j]);
            if (!classifier) {
                CHECK_OK(df_model_forward(m[j], n, s, s, b.x, b.t, b.lab, y[j]));
                CHECK_OK(df_model_backward(m[j], b.noise, dx[j]));
                CHECK_OK(df_model_loss_grad(m[j], n, s, s, b.x, b.t, b.lab, b.noise, b.w, &loss[j], NULL));
            } else {
                df_model_denoiser d = {.model = m[j], .h = s, .w = s, .labels = NULL};
                CHECK_OK(df_model_classifier_loss_grad(m[j], n, s, s, b.x, b.t, b.lab, &loss[j], NULL));
                memcpy(g[j], df_model_grads(m[j]), np * 4);
                CHECK_OK(df_model_features(m[j], n, s, s, b.x, y[j]));
                CHECK_OK(df_model_classify(&d, n, b.x, b.t, b.lab, logp[j], dx[j]));   /* zeroes the gradients */
            }
            if (!classifier) memcpy(g[j], df_model_grads(m[j]), np * 4);
        }
        size_t at;
        const size_t ny = classifier ? (size_t)n * df_model_feature_dim(m[0]) : nx;
        double ey = max_rel_diff(y[1], y[0], ny, &at), ex = max_rel_diff(dx[1], dx[0], nx, &at);
        double eg = max_rel_diff(g[1], g[0], np, &at), el = fabs(loss[1] - loss[0]) / fabs(loss[0]);
        for (int i = 0; classifier && i < n; i++) el = fmax(el, fabs(logp[1][i] - logp[0][i]) / fabs(logp[0][i]));
        printf("    %s: padded %d of %d vs exact: %s %.2g, d(input) %.2g, parameter gradients %.2g, loss %.2g\n",
               classifier ? "classifier" : "diffusion", n, 2 * n, classifier ? "features" : "eps", ey, ex, eg, el);
        CHECK(ey < 1e-5 && ex < 1e-5 && eg < 1e-5 && el < 1e-5,
              "%s: a padded batch differs from an exact one (output %.3g, d(input) %.3g, gradients %.3g, loss %.3g)",
              classifier ? "classifier" : "diffusion", ey, ex, eg, el);
        for (int j = 0; j < 2; j++) free(y[j]), free(dx[j]), free(g[j]), df_model_free(m[j]);
        batch_free(&b);
    }
}

/* Thread counts belong to models: two models in one process differ, and the caller's setting survives. */
TEST(alloc_threads_per_model) {
    const int s = 8, caller = omp_get_max_threads();
    df_model *a = make(1, 3), *b = make(1, 3);
    if (!a || !b) return;
    df_model_set_threads(a, 1);
    CHECK(df_model_threads(a) == 1 && df_model_threads(b) == caller, "threads %d and %d (caller %d)",
          df_model_threads(a), df_model_threads(b), caller);
    float x[2 * 64] = {0}, f[2][2 * 16];
    CHECK_OK(df_model_features(a, 2, s, s, x, f[0]));
    CHECK(omp_get_max_threads() == caller, "the caller's %d threads became %d", caller, omp_get_max_threads());
    CHECK_OK(df_model_features(b, 2, s, s, x, f[1]));
    CHECK(memcmp(f[0], f[1], sizeof f[0]) == 0, "1 thread and %d threads give other features", caller);
    df_model_free(a), df_model_free(b);
}
