/* FID Inception-v3 tests: weight files that are missing a tensor or have a wrong shape, the resize against
 * PyTorch's bilinear formula worked out independently, float32 against float64, gray against RGB. */
#define _POSIX_C_SOURCE 200809L
#include "inception.h"
#include "safetensors.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>

/* One random weights file per run (writing it takes a moment): its path. */
static const char *weights_path(void) {
    static char path[512];
    if (!path[0]) {
        snprintf(path, sizeof path, "%s/inception-random.safetensors", test_tmp_dir());
        if (df_inception_write_random(path, 7) != DF_OK) {
            test_fail_at(__FILE__, __LINE__, "df_inception_write_random: %s", df_error());
            path[0] = 0;
            return "(none)";
        }
    }
    return path;
}

/* Every tensor of a weights file as float32, read once and written out again with one edit. */
typedef struct {
    st_entry *e;
    float   **v;
    int       n;
} tensors;

static void tensors_free(tensors *t) {
    for (int i = 0; t->v && i < t->n; i++) free(t->v[i]);
    for (int i = 0; t->e && i < t->n; i++) free((char *)t->e[i].name);
    free(t->v), free(t->e);
    memset(t, 0, sizeof *t);
}

static int tensors_read(const char *path, tensors *t) {
    st_file f;
    memset(t, 0, sizeof *t);
    if (st_open(path, &f)) return -1;
    t->e = calloc((size_t)f.n, sizeof *t->e);
    t->v = calloc((size_t)f.n, sizeof *t->v);
    int rc = t->e && t->v ? 0 : -1;
    for (int i = 0; i < f.n && !rc; i++, t->n++) {
        const st_tensor *s = &f.tensors[i];
        size_t count = (size_t)st_numel(s);
        t->v[i] = malloc((count ? count : 1) * sizeof(float));
        t->e[i] = (st_entry){.name = strdup(s->name), .ndim = s->ndim, .f32 = t->v[i]};
        memcpy(t->e[i].shape, s->shape, sizeof s->shape);
        if (!t->v[i] || !t->e[i].name || st_read_f32(&f, s, t->v[i], count)) rc = -1;
    }
    st_close(&f);
    if (rc) tensors_free(t);
    return rc;
}

/* The tensors with one change: `drop` left out, `reshape` given `shape` (same element count), or element 0
 * of `poke` set to `value`. */
typedef struct {
    const char *drop, *reshape, *poke;
    int         ndim;
    int64_t     shape[4];
    float       value;
} edit;

static int write_edited(const tensors *t, const char *dst, const edit *ed) {
    st_entry *e = calloc((size_t)t->n + 1, sizeof *e);
    if (!e) return -1;
    int n = 0, poked = -1;
    float saved = 0;
    for (int i = 0; i < t->n; i++) {
        if (ed->drop && strcmp(t->e[i].name, ed->drop) == 0) continue;
        e[n] = t->e[i];
        if (ed->reshape && strcmp(e[n].name, ed->reshape) == 0) {
            e[n].ndim = ed->ndim;
            memcpy(e[n].shape, ed->shape, sizeof ed->shape);
        }
        if (ed->poke && strcmp(e[n].name, ed->poke) == 0) poked = i, saved = t->v[i][0], t->v[i][0] = ed->value;
        n++;
    }
    int rc = st_write(dst, e, n, NULL, 0) == DF_OK ? 0 : -1;
    if (poked >= 0) t->v[poked][0] = saved;
    free(e);
    return rc;
}

/* Load `path` expecting status `want` and a message holding every one of `parts` (NULL-terminated). */
static void expect_refused(const char *path, df_status want, const char *const *parts) {
    df_inception *net = NULL;
    df_status s = df_inception_load(path, &net);
    CHECK(s == want, "%s: status %s, expected %s (%s)", path, df_status_name(s), df_status_name(want), df_error());
    CHECK(net == NULL, "%s: a net came back with the error", path);
    for (int i = 0; parts[i]; i++)
        CHECK(strstr(df_error(), parts[i]) != NULL, "message \"%s\" does not name \"%s\"", df_error(), parts[i]);
    df_inception_free(net);
}

TEST(inception_load_refuses_bad_files) {
    const char *good = weights_path();
    df_inception *net = NULL;
    CHECK_OK(df_inception_load(good, &net));
    df_inception_free(net);
    df_inception_free(NULL);

    char bad[600];
    snprintf(bad, sizeof bad, "%s/inception-bad.safetensors", test_tmp_dir());
    struct {
        edit        e;
        df_status   want;
        const char *name;   /* the tensor the message must name */
    } cases[] = {
        {{.drop = "Mixed_7c.branch_pool.bn.running_var"}, DF_ERR_SHAPE, "Mixed_7c.branch_pool.bn.running_var"},
        /* the same element count in another layout: (128, 128, 1, 7) stored as (128, 128, 7, 1) */
        {{.reshape = "Mixed_6b.branch7x7_2.conv.weight", .ndim = 4, .shape = {128, 128, 7, 1}}, DF_ERR_SHAPE,
         "Mixed_6b.branch7x7_2.conv.weight"},
        {{.poke = "Mixed_6e.branch_pool.bn.running_var", .value = -0.5f}, DF_ERR_FORMAT,
         "Mixed_6e.branch_pool.bn.running_var"},
        {{.poke = "Mixed_5b.branch5x5_2.conv.weight", .value = NAN}, DF_ERR_FORMAT, "Mixed_5b.branch5x5_2.conv.weight"},
    };
    tensors all;
    if (tensors_read(good, &all)) {
        test_fail_at(__FILE__, __LINE__, "could not read %s: %s", good, df_error());
        return;
    }
    /* each file is 95 MB: under the sanitizers (DIFFUSE_QUICK) the NaN case is left out */
    for (int i = 0; i < DF_COUNTOF(cases) - test_quick(); i++) {
        if (write_edited(&all, bad, &cases[i].e)) {
            test_fail_at(__FILE__, __LINE__, "could not write %s: %s", bad, df_error());
            continue;
        }
        const char *parts[] = {bad, cases[i].name, NULL};
        expect_refused(bad, cases[i].want, parts);
    }
    /* torchvision's ImageNet classifier has 1000 classes: the FID network's has 1008 */
    edit fc = {.reshape = "fc.weight", .ndim = 2, .shape = {1000, 2048}};   /* its first 1000 rows */
    CHECK(write_edited(&all, bad, &fc) == 0, "could not write %s: %s", bad, df_error());
    {
        const char *parts[] = {"fc.weight", "[1000, 2048]", NULL};
        expect_refused(bad, DF_ERR_SHAPE, parts);
    }
    tensors_free(&all);
    char missing[600];
    snprintf(missing, sizeof missing, "%s/no-such-file.safetensors", test_tmp_dir());
    const char *parts[] = {missing, NULL};
    expect_refused(missing, DF_ERR_IO, parts);
}

TEST(inception_features_refuses_bad_arguments) {
    df_inception *net = NULL, *net64 = NULL;
    CHECK_OK(df_inception_load(weights_path(), &net));
    CHECK_OK(df_inception_load_f64(weights_path(), &net64));
    if (!net || !net64) return;
    float x[3 * 4 * 4] = {0}, f[DF_INCEPTION_FEATURES];
    double xd[3 * 4 * 4] = {0}, fd[DF_INCEPTION_FEATURES];
    CHECK(df_inception_features(net, 1, 2, 4, 4, x, f) == DF_ERR_ARG, "2 channels accepted");
    CHECK(df_inception_features(net, 1, 3, 0, 4, x, f) == DF_ERR_ARG, "height 0 accepted");
    CHECK(df_inception_features(net, 1, 3, 4, DF_MAX_SIZE + 1, x, f) == DF_ERR_ARG, "huge width accepted");
    CHECK(df_inception_features(net, -1, 3, 4, 4, x, f) == DF_ERR_ARG, "-1 images accepted");
    CHECK(df_inception_features(net, 1, 3, 4, 4, NULL, f) == DF_ERR_ARG, "NULL x accepted");
    CHECK(df_inception_features(NULL, 1, 3, 4, 4, x, f) == DF_ERR_ARG, "NULL net accepted");
    CHECK(df_inception_features_f64(net, 1, 3, 4, 4, xd, fd) == DF_ERR_ARG, "float64 call on a float32 net");
    CHECK(df_inception_features(net64, 1, 3, 4, 4, x, f) == DF_ERR_ARG, "float32 call on a float64 net");
    CHECK_OK(df_inception_features(net, 0, 3, 4, 4, NULL, NULL));
    df_inception_free(net);
    df_inception_free(net64);
}

/* PyTorch's bilinear interpolation with align_corners=False, written as one weight matrix per axis:
 * R (out, in) with row o holding 1 - l at floor(s) and l at floor(s) + 1 (both at in - 1 past the end),
 * s = max(0, (o + 0.5) in / out - 0.5), l = s - floor(s). The image is then R_h X R_w^T. */
static void interp_matrix(double *R, int out, int in) {
    memset(R, 0, sizeof(double) * (size_t)out * in);
    for (int o = 0; o < out; o++) {
        double s = (double)in / out * (o + 0.5) - 0.5;
        if (s < 0) s = 0;
        int i0 = (int)floor(s), i1 = i0 + 1;
        double l = s - i0;
        if (i0 > in - 1) i0 = in - 1;
        if (i1 > in - 1) i1 = in - 1;
        R[(size_t)o * in + i0] += 1 - l;
        R[(size_t)o * in + i1] += l;
    }
}

TEST(inception_resize_matches_pytorch_formula) {
    const int sizes[][4] = {{28, 28, 299, 299}, {32, 32, 299, 299}, {5, 7, 11, 13}, {320, 300, 299, 299},
                            {1, 1, 4, 3},       {3, 10, 7, 4},      {299, 299, 299, 299}, {2, 9, 9, 2}};
    df_rng r;
    df_rng_init(&r, 3);
    for (int k = 0; k < DF_COUNTOF(sizes); k++) {
        const int h = sizes[k][0], w = sizes[k][1], oh = sizes[k][2], ow = sizes[k][3];
        float *x = malloc(sizeof(float) * h * w), *y = malloc(sizeof(float) * oh * ow);
        double *xd = malloc(sizeof(double) * h * w), *yd = malloc(sizeof(double) * oh * ow);
        double *Rh = malloc(sizeof(double) * oh * h), *Rw = malloc(sizeof(double) * ow * w);
        double *tmp = malloc(sizeof(double) * h * ow);
        df_rng_fill_uniform(&r, x, (size_t)h * w, -1, 1);
        for (int i = 0; i < h * w; i++) xd[i] = x[i];
        inc_resize_f32(y, oh, ow, x, h, w);
        inc_resize_f64(yd, oh, ow, xd, h, w);
        interp_matrix(Rh, oh, h);
        interp_matrix(Rw, ow, w);
        for (int i = 0; i < h; i++)   /* tmp (h, ow) = X Rw^T */
            for (int o = 0; o < ow; o++) {
                double s = 0;
                for (int j = 0; j < w; j++) s += xd[(size_t)i * w + j] * Rw[(size_t)o * w + j];
                tmp[(size_t)i * ow + o] = s;
            }
        double e32 = 0, e64 = 0;
        for (int o = 0; o < oh; o++)   /* ref (oh, ow) = Rh tmp */
            for (int q = 0; q < ow; q++) {
                double ref = 0;
                for (int i = 0; i < h; i++) ref += Rh[(size_t)o * h + i] * tmp[(size_t)i * ow + q];
                e32 = fmax(e32, fabs(y[(size_t)o * ow + q] - ref));
                e64 = fmax(e64, fabs(yd[(size_t)o * ow + q] - ref));
            }
        /* values in [-1, 1]: float32 rounding of the result is at most 6e-8; in float64 only the order of
         * the sums differs from ours (a few 1e-16) */
        CHECK(e64 <= 1e-14, "%dx%d -> %dx%d float64: max |diff| %.3g", h, w, oh, ow, e64);
        CHECK(e32 <= 2e-7, "%dx%d -> %dx%d float32: max |diff| %.3g", h, w, oh, ow, e32);
        free(x), free(y), free(xd), free(yd), free(Rh), free(Rw), free(tmp);
    }
    /* halving: each output is the mean of a 2x2 block (source index 2o + 0.5) */
    const float x4[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    float y2[4];
    inc_resize_f32(y2, 2, 2, x4, 4, 4);
    const float want[4] = {3.5f, 5.5f, 11.5f, 13.5f};
    for (int i = 0; i < 4; i++) CHECK_NEAR(y2[i], want[i], 1e-6, "4x4 -> 2x2");
}

/* Features of n images through both paths; the float32 ones must be within tol of the float64 ones. */
TEST(inception_float32_matches_float64) {
    df_inception *n32 = NULL, *n64 = NULL;
    CHECK_OK(df_inception_load(weights_path(), &n32));
    CHECK_OK(df_inception_load_f64(weights_path(), &n64));
    if (!n32 || !n64) {
        df_inception_free(n32), df_inception_free(n64);
        return;
    }
    const int n = test_quick() ? 2 : 3, c = 3, h = 32, w = 24;
    const size_t in = (size_t)c * h * w, nf = (size_t)n * DF_INCEPTION_FEATURES;
    float *x = malloc(sizeof(float) * n * in), *f = malloc(sizeof(float) * nf), *one = malloc(sizeof(float) * nf);
    double *xd = malloc(sizeof(double) * n * in), *fd = malloc(sizeof(double) * nf);
    float *fdf = malloc(sizeof(float) * nf);
    df_rng r;
    df_rng_init(&r, 11);
    df_rng_fill_uniform(&r, x, n * in, -1, 1);
    for (size_t i = 0; i < n * in; i++) xd[i] = x[i];
    CHECK_OK(df_inception_features(n32, n, c, h, w, x, f));
    CHECK_OK(df_inception_features_f64(n64, n, c, h, w, xd, fd));
    double fmax = 0;
    int negative = 0;
    for (size_t i = 0; i < nf; i++) {
        fdf[i] = (float)fd[i];
        fmax = fmax > fd[i] ? fmax : fd[i];
        negative += fd[i] < 0;
    }
    CHECK(fmax > 0 && negative == 0, "pool3 features are means of ReLUs: max %g, %d negative", fmax, negative);
    /* Measured about 2e-7 (tests/ref/inception_ref.py sees the same against PyTorch in float64): 20 layers
     * of float32 sums of up to 4032 products. 1e-5 still catches any error in indexing or weights. */
    size_t where;
    double d = max_rel_diff(f, fdf, nf, &where);
    CHECK(d <= 1e-5, "float32 vs float64 features of %d images: max |diff| / max |ref| = %.3g at %zu (%g vs %g)", n,
          d, where, (double)f[where], fd[where]);
    /* Images do not mix inside a chunk: each image alone gives the same features. */
    for (int i = 0; i < n; i++)
        CHECK_OK(df_inception_features(n32, 1, c, h, w, x + i * in, one + (size_t)i * DF_INCEPTION_FEATURES));
    d = max_rel_diff(one, f, nf, &where);
    CHECK(d <= 1e-6, "one image at a time vs %d together: max rel diff %.3g at %zu", n, d, where);
    free(x), free(f), free(one), free(xd), free(fd), free(fdf);
    df_inception_free(n32), df_inception_free(n64);
}

TEST(inception_gray_equals_rgb_repeated) {
    df_inception *net = NULL;
    CHECK_OK(df_inception_load(weights_path(), &net));
    if (!net) return;
    const int n = 2, h = 28, w = 28, hw = h * w;
    float *g = malloc(sizeof(float) * n * hw), *rgb = malloc(sizeof(float) * n * 3 * hw);
    float *fg = malloc(sizeof(float) * n * DF_INCEPTION_FEATURES), *fr = malloc(sizeof(float) * n * DF_INCEPTION_FEATURES);
    df_rng r;
    df_rng_init(&r, 5);
    df_rng_fill_uniform(&r, g, (size_t)n * hw, -1, 1);
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < 3; ch++) memcpy(rgb + ((size_t)i * 3 + ch) * hw, g + (size_t)i * hw, sizeof(float) * hw);
    CHECK_OK(df_inception_features(net, n, 1, h, w, g, fg));
    CHECK_OK(df_inception_features(net, n, 3, h, w, rgb, fr));
    /* the same planes go through the same code: the features are equal bit for bit */
    size_t where;
    double d = max_rel_diff(fg, fr, (size_t)n * DF_INCEPTION_FEATURES, &where);
    CHECK(d == 0, "gray vs RGB repeated: max rel diff %.3g at %zu", d, where);
    /* and a different colour image does not give the same features */
    for (int i = 0; i < hw; i++) rgb[i] = -rgb[i];
    CHECK_OK(df_inception_features(net, n, 3, h, w, rgb, fr));
    d = max_rel_diff(fg, fr, DF_INCEPTION_FEATURES, &where);
    CHECK(d > 1e-3, "changing one channel left the features as they were (%.3g)", d);
    free(g), free(rgb), free(fg), free(fr);
    df_inception_free(net);
}
