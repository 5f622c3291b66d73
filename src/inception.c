/* The FID Inception-v3's layer table (pytorch-fid's state-dict names and shapes), loading its weights with
 * BatchNorm folded in, and pool3 features of any number of images in chunks of planned memory. */
#include "inception.h"
#include "safetensors.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

/* ---- the layer table --------------------------------------------------------------------------------- */

/* One BasicConv2d of a kind of block. cin IN means the block's input channels; ARG (in cin or cout)
 * means the block's argument: pool_features for InceptionA, channels_7x7 for InceptionC. */
enum { IN = -1, ARG = -2 };
typedef struct {
    const char *name;
    int         cin, cout, kh, kw, stride, ph, pw;
} conv_spec;

static const conv_spec spec_stem[STEM_COUNT] = {
    [STEM_1A] = {"Conv2d_1a_3x3", 3, 32, 3, 3, 2, 0, 0},
    [STEM_2A] = {"Conv2d_2a_3x3", 32, 32, 3, 3, 1, 0, 0},
    [STEM_2B] = {"Conv2d_2b_3x3", 32, 64, 3, 3, 1, 1, 1},
    [STEM_3B] = {"Conv2d_3b_1x1", 64, 80, 1, 1, 1, 0, 0},
    [STEM_4A] = {"Conv2d_4a_3x3", 80, 192, 3, 3, 1, 0, 0},
};
static const conv_spec spec_a[A_COUNT] = {
    [A_1X1] = {"branch1x1", IN, 64, 1, 1, 1, 0, 0},
    [A_5X5_1] = {"branch5x5_1", IN, 48, 1, 1, 1, 0, 0},
    [A_5X5_2] = {"branch5x5_2", 48, 64, 5, 5, 1, 2, 2},
    [A_DBL_1] = {"branch3x3dbl_1", IN, 64, 1, 1, 1, 0, 0},
    [A_DBL_2] = {"branch3x3dbl_2", 64, 96, 3, 3, 1, 1, 1},
    [A_DBL_3] = {"branch3x3dbl_3", 96, 96, 3, 3, 1, 1, 1},
    [A_POOL] = {"branch_pool", IN, ARG, 1, 1, 1, 0, 0},
};
static const conv_spec spec_b[B_COUNT] = {
    [B_3X3] = {"branch3x3", IN, 384, 3, 3, 2, 0, 0},
    [B_DBL_1] = {"branch3x3dbl_1", IN, 64, 1, 1, 1, 0, 0},
    [B_DBL_2] = {"branch3x3dbl_2", 64, 96, 3, 3, 1, 1, 1},
    [B_DBL_3] = {"branch3x3dbl_3", 96, 96, 3, 3, 2, 0, 0},
};
static const conv_spec spec_c[C_COUNT] = {
    [C_1X1] = {"branch1x1", IN, 192, 1, 1, 1, 0, 0},
    [C_7X7_1] = {"branch7x7_1", IN, ARG, 1, 1, 1, 0, 0},
    [C_7X7_2] = {"branch7x7_2", ARG, ARG, 1, 7, 1, 0, 3},
    [C_7X7_3] = {"branch7x7_3", ARG, 192, 7, 1, 1, 3, 0},
    [C_DBL_1] = {"branch7x7dbl_1", IN, ARG, 1, 1, 1, 0, 0},
    [C_DBL_2] = {"branch7x7dbl_2", ARG, ARG, 7, 1, 1, 3, 0},
    [C_DBL_3] = {"branch7x7dbl_3", ARG, ARG, 1, 7, 1, 0, 3},
    [C_DBL_4] = {"branch7x7dbl_4", ARG, ARG, 7, 1, 1, 3, 0},
    [C_DBL_5] = {"branch7x7dbl_5", ARG, 192, 1, 7, 1, 0, 3},
    [C_POOL] = {"branch_pool", IN, 192, 1, 1, 1, 0, 0},
};
static const conv_spec spec_d[D_COUNT] = {
    [D_3X3_1] = {"branch3x3_1", IN, 192, 1, 1, 1, 0, 0},
    [D_3X3_2] = {"branch3x3_2", 192, 320, 3, 3, 2, 0, 0},
    [D_7X7X3_1] = {"branch7x7x3_1", IN, 192, 1, 1, 1, 0, 0},
    [D_7X7X3_2] = {"branch7x7x3_2", 192, 192, 1, 7, 1, 0, 3},
    [D_7X7X3_3] = {"branch7x7x3_3", 192, 192, 7, 1, 1, 3, 0},
    [D_7X7X3_4] = {"branch7x7x3_4", 192, 192, 3, 3, 2, 0, 0},
};
static const conv_spec spec_e[E_COUNT] = {
    [E_1X1] = {"branch1x1", IN, 320, 1, 1, 1, 0, 0},
    [E_3X3_1] = {"branch3x3_1", IN, 384, 1, 1, 1, 0, 0},
    [E_3X3_2A] = {"branch3x3_2a", 384, 384, 1, 3, 1, 0, 1},
    [E_3X3_2B] = {"branch3x3_2b", 384, 384, 3, 1, 1, 1, 0},
    [E_DBL_1] = {"branch3x3dbl_1", IN, 448, 1, 1, 1, 0, 0},
    [E_DBL_2] = {"branch3x3dbl_2", 448, 384, 3, 3, 1, 1, 1},
    [E_DBL_3A] = {"branch3x3dbl_3a", 384, 384, 1, 3, 1, 0, 1},
    [E_DBL_3B] = {"branch3x3dbl_3b", 384, 384, 3, 1, 1, 1, 0},
    [E_POOL] = {"branch_pool", IN, 192, 1, 1, 1, 0, 0},
};

static const struct {
    const conv_spec *convs;
    int              count;
} kinds[INC_KIND_COUNT] = {
    [INC_STEM] = {spec_stem, STEM_COUNT}, [INC_A] = {spec_a, A_COUNT},  [INC_B] = {spec_b, B_COUNT},
    [INC_C] = {spec_c, C_COUNT},          [INC_D] = {spec_d, D_COUNT},  [INC_E1] = {spec_e, E_COUNT},
    [INC_E2] = {spec_e, E_COUNT},
};

/* pytorch-fid's fid_inception_v3(): torchvision's Inception3 with the FID blocks swapped in. */
static const struct {
    const char *name;   /* state-dict prefix ("" for the stem, whose convolutions sit at the top level) */
    inc_kind    kind;
    int         cin, arg;
} blocks[INC_BLOCKS] = {
    {"", INC_STEM, 3, 0},
    {"Mixed_5b", INC_A, 192, 32},
    {"Mixed_5c", INC_A, 256, 64},
    {"Mixed_5d", INC_A, 288, 64},
    {"Mixed_6a", INC_B, 288, 0},
    {"Mixed_6b", INC_C, 768, 128},
    {"Mixed_6c", INC_C, 768, 160},
    {"Mixed_6d", INC_C, 768, 160},
    {"Mixed_6e", INC_C, 768, 192},
    {"Mixed_7a", INC_D, 768, 0},
    {"Mixed_7b", INC_E1, 1280, 0},
    {"Mixed_7c", INC_E2, 2048, 0},
};

/* The final classifier: not used for features, but part of the state dict (1008 classes, as in the
 * TensorFlow graph the weights come from). */
#define INC_FC_CLASSES 1008

static const char *const bn_parts[4] = {"bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"};
#define BN_EPS 1e-3   /* torchvision's BasicConv2d: BatchNorm2d(eps=0.001) */

/* Fill the layer table and the weight offsets (each tensor starts on a 64-byte boundary; the gaps are
 * never read). */
static void build_table(df_inception *net) {
    int k = 0;
    size_t off = 0;
    const size_t align = 16;
    for (int b = 0; b < INC_BLOCKS; b++) {
        net->kind[b] = blocks[b].kind;
        net->first[b] = k;
        const conv_spec *s = kinds[blocks[b].kind].convs;
        for (int i = 0; i < kinds[blocks[b].kind].count; i++, k++) {
            DF_ASSERT(k < INC_CONVS);
            inc_conv *L = &net->conv[k];
            if (blocks[b].name[0])
                snprintf(L->name, sizeof L->name, "%s.%s", blocks[b].name, s[i].name);
            else
                snprintf(L->name, sizeof L->name, "%s", s[i].name);
            L->cin = s[i].cin == IN ? blocks[b].cin : s[i].cin == ARG ? blocks[b].arg : s[i].cin;
            L->cout = s[i].cout == ARG ? blocks[b].arg : s[i].cout;
            L->kh = s[i].kh, L->kw = s[i].kw, L->stride = s[i].stride, L->ph = s[i].ph, L->pw = s[i].pw;
            L->w_off = off;
            off += ((size_t)L->cout * L->cin * L->kh * L->kw + align - 1) / align * align;
            L->b_off = off;
            off += ((size_t)L->cout + align - 1) / align * align;
        }
    }
    DF_ASSERT(k == INC_CONVS);
    net->nw = off;
}

/* ---- loading ------------------------------------------------------------------------------------------- */

static void shape_text(char *buf, size_t cap, const int64_t *shape, int ndim) {
    int k = 0;
    buf[0] = 0;
    for (int d = 0; d < ndim && k < (int)cap - 24; d++)
        k += snprintf(buf + k, cap - (size_t)k, d ? ", %lld" : "%lld", (long long)shape[d]);
}

/* The tensor `name` with exactly this shape, read as float32 into dst and checked finite. */
static df_status read_tensor(const st_file *f, const char *name, const int64_t *shape, int ndim, float *dst) {
    const st_tensor *t = st_find(f, name);
    if (!t) return df_fail(DF_ERR_SHAPE, "%s: missing tensor %s (is this pytorch-fid's FID Inception-v3?)", f->path, name);
    int ok = t->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++) ok = t->shape[d] == shape[d];
    if (!ok) {
        char want[96], got[96];
        shape_text(want, sizeof want, shape, ndim);
        shape_text(got, sizeof got, t->shape, t->ndim);
        return df_fail(DF_ERR_SHAPE, "%s: tensor %s has shape [%s], the FID Inception-v3 needs [%s]", f->path, name, got,
                       want);
    }
    if (!dst) return DF_OK;
    size_t count = (size_t)st_numel(t);
    df_status st = st_read_f32(f, t, dst, count);
    for (size_t i = 0; !st && i < count; i++)
        if (!isfinite(dst[i]))
            st = df_fail(DF_ERR_FORMAT, "%s: tensor %s holds %s at index %zu", f->path, name,
                         isnan(dst[i]) ? "NaN" : "an infinity", i);
    return st;
}

static df_status load(const char *path, int f64, df_inception **out) {
    if (!out) return df_fail(DF_ERR_ARG, "df_inception_load: out must not be NULL");
    *out = NULL;
    if (!path) return df_fail(DF_ERR_ARG, "df_inception_load: path must not be NULL");
    /* Our threads split each layer; BLAS runs single-threaded inside them (one pool of threads). */
    openblas_set_num_threads(1);
    df_inception *net = calloc(1, sizeof *net);
    if (!net) return df_fail(DF_ERR_NOMEM, "out of memory");
    net->f64 = f64;
    build_table(net);
    const size_t esz = f64 ? sizeof(double) : sizeof(float);
    size_t biggest = (size_t)INC_FC_CLASSES * DF_INCEPTION_FEATURES;
    for (int k = 0; k < INC_CONVS; k++) {   /* bn below holds 4 vectors of cout <= 2048 */
        const inc_conv *L = &net->conv[k];
        DF_ASSERT(L->cout <= DF_INCEPTION_FEATURES);
        biggest = DF_MAX(biggest, (size_t)L->cout * L->cin * L->kh * L->kw);
    }
    net->w = df_alloc_aligned(net->nw * esz);
    float *tmp = malloc(biggest * sizeof(float)), *bn = malloc(4 * DF_INCEPTION_FEATURES * sizeof(float));
    if (!net->w || !tmp || !bn) {
        const double mb = (double)(net->nw * esz) / 1e6;
        free(tmp), free(bn);
        df_inception_free(net);
        return df_fail(DF_ERR_NOMEM, "out of memory for the Inception-v3 weights (%.0f MB)", mb);
    }
    st_file f;
    df_status st = st_open(path, &f);
    for (int k = 0; !st && k < INC_CONVS; k++) {
        const inc_conv *L = &net->conv[k];
        char name[96];
        for (int p = 0; p < 4 && !st; p++) {
            snprintf(name, sizeof name, "%s.%s", L->name, bn_parts[p]);
            const int64_t shape[1] = {L->cout};
            st = read_tensor(&f, name, shape, 1, bn + (size_t)p * L->cout);
        }
        snprintf(name, sizeof name, "%s.conv.weight", L->name);
        const int64_t shape[4] = {L->cout, L->cin, L->kh, L->kw};
        if (!st) st = read_tensor(&f, name, shape, 4, tmp);
        if (st) break;
        /* BatchNorm in eval mode after a convolution without bias: gamma (conv(x) - mean) / sqrt(var + eps)
         * + beta = conv'(x) + beta - mean * scale, with conv' the convolution's weights times
         * scale = gamma / sqrt(var + eps) (per output channel). Folded in float64, then stored. */
        const float *gamma = bn, *beta = bn + L->cout, *mean = bn + 2 * L->cout, *var = bn + 3 * L->cout;
        const size_t K = (size_t)L->cin * L->kh * L->kw;
        for (int o = 0; o < L->cout && !st; o++) {
            if (var[o] < 0) {
                snprintf(name, sizeof name, "%s.bn.running_var", L->name);
                st = df_fail(DF_ERR_FORMAT, "%s: tensor %s holds a negative variance (%g) at index %d", path, name,
                             (double)var[o], o);
                break;
            }
            const double scale = (double)gamma[o] / sqrt((double)var[o] + BN_EPS);
            const double bias = (double)beta[o] - (double)mean[o] * scale;
            const float *wo = tmp + (size_t)o * K;
            if (f64) {
                double *dw = (double *)net->w + L->w_off + (size_t)o * K;
                for (size_t i = 0; i < K; i++) dw[i] = (double)wo[i] * scale;
                ((double *)net->w)[L->b_off + o] = bias;
            } else {
                float *fw = (float *)net->w + L->w_off + (size_t)o * K;
                for (size_t i = 0; i < K; i++) fw[i] = (float)((double)wo[i] * scale);
                ((float *)net->w)[L->b_off + o] = (float)bias;
            }
        }
    }
    if (!st) {   /* the classifier: checked so that torchvision's ImageNet weights (1000 classes) are refused */
        const int64_t fw[2] = {INC_FC_CLASSES, DF_INCEPTION_FEATURES}, fb[1] = {INC_FC_CLASSES};
        st = read_tensor(&f, "fc.weight", fw, 2, NULL);
        if (!st) st = read_tensor(&f, "fc.bias", fb, 1, NULL);
    }
    st_close(&f);
    free(tmp), free(bn);
    if (st) {
        df_inception_free(net);
        return st;
    }
    inc_plan_f32(net, &net->plan);
    *out = net;
    return DF_OK;
}

df_status df_inception_load(const char *path, df_inception **out) { return load(path, 0, out); }
df_status df_inception_load_f64(const char *path, df_inception **out) { return load(path, 1, out); }

void df_inception_set_threads(df_inception *net, int n) { net->threads = n > 0 ? n : 0; }
int  df_inception_threads(const df_inception *net) { return net->threads ? net->threads : omp_get_max_threads(); }

void df_inception_free(df_inception *net) {
    if (!net) return;
    df_free_aligned(net->w);
    free(net);
}

/* ---- features -------------------------------------------------------------------------------------------- */

/* Images per chunk: 16 give the 8x8 blocks GEMMs 1024 pixels wide, and keep the activations (2.8 M values
 * per image, most of them in the stem) under 192 MB in float32. */
#define INC_CHUNK        16
#define INC_CHUNK_BYTES  ((size_t)192 << 20)

static df_status features(df_inception *net, int f64, int n, int c, int h, int w, const void *x, void *feats) {
    const char *fn = f64 ? "df_inception_features_f64" : "df_inception_features";
    if (!net) return df_fail(DF_ERR_ARG, "%s: net must not be NULL", fn);
    if (net->f64 != f64)
        return df_fail(DF_ERR_ARG, "%s: this net was loaded in %s", fn, net->f64 ? "float64" : "float32");
    if (n < 0) return df_fail(DF_ERR_ARG, "%s: %d images", fn, n);
    if (c != 1 && c != 3) return df_fail(DF_ERR_ARG, "%s: %d channels (1 or 3 are supported)", fn, c);
    if (h < 1 || w < 1 || h > DF_MAX_SIZE || w > DF_MAX_SIZE)
        return df_fail(DF_ERR_ARG, "%s: image size %dx%d out of range 1..%d", fn, h, w, DF_MAX_SIZE);
    if (n == 0) return DF_OK;
    if (!x || !feats) return df_fail(DF_ERR_ARG, "%s: x and feats must not be NULL", fn);

    const size_t esz = f64 ? sizeof(double) : sizeof(float);
    const inc_plan *p = &net->plan;
    const size_t per_image = (p->act[0] + p->act[1] + p->act[2] + p->act[3]) * esz;
    const int chunk = DF_MIN(n, (int)DF_MAX(1, DF_MIN((size_t)INC_CHUNK, INC_CHUNK_BYTES / per_image)));
    const int nthreads = df_inception_threads(net);
    void *act[4], *cols = df_alloc_aligned(p->cols * (size_t)nthreads * esz);
    int ok = cols != NULL;
    for (int k = 0; k < 4; k++) {
        act[k] = df_alloc_aligned(p->act[k] * (size_t)chunk * esz);
        ok &= act[k] != NULL;
    }
    df_status st = DF_OK;
    if (!ok) {
        st = df_fail(DF_ERR_NOMEM, "out of memory for Inception-v3 activations of %d images (%.0f MB)", chunk,
                     (per_image * chunk + p->cols * nthreads * esz) / 1e6);
    } else {
        const size_t in = (size_t)c * h * w;
        for (int i = 0; i < n; i += chunk) {
            const int m = DF_MIN(chunk, n - i);
            if (f64) {
                double *a[4] = {act[0], act[1], act[2], act[3]};
                inc_forward_f64(net, m, c, h, w, (const double *)x + i * in,
                                (double *)feats + (size_t)i * DF_INCEPTION_FEATURES, a, cols, nthreads);
            } else {
                float *a[4] = {act[0], act[1], act[2], act[3]};
                inc_forward_f32(net, m, c, h, w, (const float *)x + i * in,
                                (float *)feats + (size_t)i * DF_INCEPTION_FEATURES, a, cols, nthreads);
            }
        }
    }
    for (int k = 0; k < 4; k++) df_free_aligned(act[k]);
    df_free_aligned(cols);
    return st;
}

df_status df_inception_features(df_inception *net, int n, int c, int h, int w, const float *x, float *feats) {
    return features(net, 0, n, c, h, w, x, feats);
}

df_status df_inception_features_f64(df_inception *net, int n, int c, int h, int w, const double *x,
                                    double *feats) {
    return features(net, 1, n, c, h, w, x, feats);
}

/* ---- random weights ------------------------------------------------------------------------------------ */

df_status df_inception_write_random(const char *path, uint64_t seed) {
    df_inception net;   /* only its layer table */
    build_table(&net);
    const int ne = INC_CONVS * 5 + 2;
    st_entry *e = calloc((size_t)ne, sizeof *e);
    char(*names)[96] = calloc((size_t)ne, sizeof *names);
    float *vals = malloc((net.nw + (size_t)INC_FC_CLASSES * (DF_INCEPTION_FEATURES + 1) + 4 * (size_t)INC_CONVS * 448) *
                         sizeof(float));
    if (!e || !names || !vals) {
        free(e), free(names), free(vals);
        return df_fail(DF_ERR_NOMEM, "out of memory");
    }
    df_rng r;
    df_rng_init(&r, seed);
    float *v = vals;
    int k = 0;
    for (int i = 0; i < INC_CONVS; i++) {
        const inc_conv *L = &net.conv[i];
        const size_t K = (size_t)L->cin * L->kh * L->kw, nw = (size_t)L->cout * K;
        snprintf(names[k], sizeof names[k], "%s.conv.weight", L->name);
        e[k] = (st_entry){.name = names[k], .ndim = 4, .shape = {L->cout, L->cin, L->kh, L->kw}, .f32 = v};
        const double a = sqrt(6.0 / (double)K);   /* uniform, variance 2 / fan_in (He): keeps the scale */
        for (size_t j = 0; j < nw; j++) v[j] = (float)(a * (2 * df_rng_uniform(&r) - 1));
        v += nw, k++;
        for (int p = 0; p < 4; p++, k++) {
            snprintf(names[k], sizeof names[k], "%s.%s", L->name, bn_parts[p]);
            e[k] = (st_entry){.name = names[k], .ndim = 1, .shape = {L->cout}, .f32 = v};
            for (int o = 0; o < L->cout; o++)
                v[o] = p == 0 || p == 3 ? (float)(0.5 + df_rng_uniform(&r)) : (float)(0.4 * df_rng_uniform(&r) - 0.2);
            v += L->cout;
        }
    }
    const double a = sqrt(3.0 / DF_INCEPTION_FEATURES);
    e[k++] = (st_entry){.name = "fc.weight", .ndim = 2, .shape = {INC_FC_CLASSES, DF_INCEPTION_FEATURES}, .f32 = v};
    for (size_t j = 0; j < (size_t)INC_FC_CLASSES * DF_INCEPTION_FEATURES; j++)
        *v++ = (float)(a * (2 * df_rng_uniform(&r) - 1));
    e[k++] = (st_entry){.name = "fc.bias", .ndim = 1, .shape = {INC_FC_CLASSES}, .f32 = v};
    for (int j = 0; j < INC_FC_CLASSES; j++) *v++ = 0;
    DF_ASSERT(k == ne);
    df_status st = st_write(path, e, ne, NULL, 0);
    free(e), free(names), free(vals);
    return st;
}
