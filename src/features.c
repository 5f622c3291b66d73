/* Feature networks for evaluation (a classifier's pooled features, or Inception-v3 as FID uses it), their
 * hashes, and reference features of a data set, cached next to the network and keyed by both hashes. */
#define _POSIX_C_SOURCE 200809L
#include "inception.h"
#include "internal.h"
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <nettle/sha2.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct df_feature_net {
    df_model     *model;       /* a classifier, or NULL */
    df_inception *inception;   /* or Inception-v3 */
    int           dim, c, h, w;   /* feature size; the input a classifier takes (c = 0: any, Inception) */
    char          path[4096], sha256[65], name[96];
};

df_status df_file_sha256(const char *path, char hex[65]) {
    FILE *f = fopen(path, "rb");
    if (!f) return df_fail(DF_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct sha256_ctx ctx;
    uint8_t buf[1 << 16], digest[SHA256_DIGEST_SIZE];
    size_t got;
    sha256_init(&ctx);
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) sha256_update(&ctx, got, buf);
    int bad = ferror(f);
    fclose(f);
    if (bad) return df_fail(DF_ERR_IO, "%s: read error", path);
    sha256_digest(&ctx, SHA256_DIGEST_SIZE, digest);
    for (int i = 0; i < SHA256_DIGEST_SIZE; i++) snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    return DF_OK;
}

void df_feature_net_free(df_feature_net *f) {
    if (!f) return;
    df_model_free(f->model);
    df_inception_free(f->inception);
    free(f);
}

df_status df_feature_net_load(const char *path, df_feature_net **out) {
    *out = NULL;
    df_feature_net *f = calloc(1, sizeof *f);
    if (!f) return df_fail(DF_ERR_NOMEM, "out of memory");
    snprintf(f->path, sizeof f->path, "%s", path);
    df_status st;
    char weights[4200];
    if (df_is_dir(path)) {
        /* a model directory: it must be a classifier, whose pooled activations are the features */
        if ((st = df_pipeline_load(path, 0, &f->model, NULL))) {
            df_feature_net_free(f);
            return st;
        }
        const df_unet_config *c = df_model_config(f->model);
        if (c->classifier_classes <= 0) {
            df_feature_net_free(f);
            return df_fail(DF_ERR_CONFIG, "%s: a diffusion model, not a feature network: it has no feature layer (make "
                           "one with diffuse train-classifier --noise-free, or give an Inception-v3 .safetensors)", path);
        }
        f->dim = df_model_feature_dim(f->model);
        f->c = c->in_channels, f->h = f->w = c->sample_size > 0 ? c->sample_size : 0;
        snprintf(weights, sizeof weights, "%s/diffusion_pytorch_model.safetensors", path);
        if (access(weights, R_OK) != 0) snprintf(weights, sizeof weights, "%s/model.safetensors", path);
        snprintf(f->name, sizeof f->name, "classifier (%d classes, %d-d features)", c->classifier_classes, f->dim);
    } else {
        if ((st = df_inception_load(path, &f->inception))) {
            df_feature_net_free(f);
            return st;
        }
        f->dim = DF_INCEPTION_FEATURES;
        snprintf(weights, sizeof weights, "%s", path);
        snprintf(f->name, sizeof f->name, "Inception-v3 (FID, pool3, 2048-d)");
    }
    if ((st = df_file_sha256(weights, f->sha256))) {
        df_feature_net_free(f);
        return st;
    }
    *out = f;
    return DF_OK;
}

int         df_feature_net_dim(const df_feature_net *f) { return f->dim; }
const char *df_feature_net_sha256(const df_feature_net *f) { return f->sha256; }
const char *df_feature_net_name(const df_feature_net *f) { return f->name; }
const char *df_feature_net_path(const df_feature_net *f) { return f->path; }
df_model   *df_feature_net_classifier(df_feature_net *f) { return f->model; }

df_status df_feature_net_check_input(const df_feature_net *f, int c, int h, int w) {
    if (f->inception) {
        if (c != 1 && c != 3) return df_fail(DF_ERR_SHAPE, "Inception-v3 takes gray or RGB images, not %d channels", c);
        return DF_OK;
    }
    if (c != f->c || (f->h && (h != f->h || w != f->w)))
        return df_fail(DF_ERR_SHAPE, "the images are %dx%d with %d channel%s; the feature network %s takes %dx%d with %d",
                       h, w, c, c == 1 ? "" : "s", f->path, f->h, f->w, f->c);
    return DF_OK;
}

df_status df_feature_net_features(df_feature_net *f, int n, int c, int h, int w, const float *x, float *feats) {
    df_status st = df_feature_net_check_input(f, c, h, w);
    if (st) return st;
    if (f->inception) return df_inception_features(f->inception, n, c, h, w, x, feats);
    return df_model_features(f->model, n, h, w, x, feats);
}

/* ---- reference features -------------------------------------------------------------------------------------- */

void df_ref_features_free(df_ref_features *r) {
    if (!r) return;
    free(r->feats);
    df_fstats_free(&r->stats);
    memset(r, 0, sizeof *r);
}

/* Features of up to `limit` images of d (all when limit <= 0), in chunks, reporting progress. */
static df_status data_features(df_feature_net *f, const df_dataset *d, long limit, float **out, long *count,
                               void (*progress)(void *, const char *, double, double), void *ctx) {
    int c, h, w;
    df_dataset_shape(d, &c, &h, &w);
    df_status st = df_feature_net_check_input(f, c, h, w);
    if (st) return st;
    long n = df_dataset_count(d);
    if (limit > 0 && limit < n) n = limit;
    const size_t dim = (size_t)c * h * w;
    const int B = f->inception ? 32 : 500;
    float *x = malloc(sizeof(float) * B * dim), *feats = malloc(sizeof(float) * (size_t)n * f->dim);
    if (!x || !feats) st = df_fail(DF_ERR_NOMEM, "out of memory for the features of %ld images", n);
    for (long i0 = 0; i0 < n && !st; i0 += B) {
        const int b = (int)DF_MIN((long)B, n - i0);
        for (int i = 0; i < b; i++) df_dataset_get(d, (int)(i0 + i), 0, x + (size_t)i * dim);
        st = df_feature_net_features(f, b, c, h, w, x, feats + (size_t)i0 * f->dim);
        if (progress) progress(ctx, "reference features", (double)(i0 + b), (double)n);
    }
    free(x);
    if (st) {
        free(feats);
        return st;
    }
    *out = feats, *count = n;
    return DF_OK;
}

df_status df_ref_features_compute(df_feature_net *f, const df_dataset *d, long limit, df_ref_features *r,
                                  void (*progress)(void *, const char *, double, double), void *ctx) {
    memset(r, 0, sizeof *r);
    df_status st = data_features(f, d, limit, &r->feats, &r->n, progress, ctx);
    if (st) return st;
    r->d = f->dim;
    snprintf(r->net_sha256, sizeof r->net_sha256, "%s", f->sha256);
    df_dataset_sha256(d, r->data_sha256);
    snprintf(r->desc, sizeof r->desc, "%s", df_dataset_description(d));
    if (limit > 0 && limit < df_dataset_count(d))
        snprintf(r->desc + strlen(r->desc), sizeof r->desc - strlen(r->desc), " (first %ld)", r->n);
    if ((st = df_fstats_compute(r->feats, r->n, r->d, &r->stats))) df_ref_features_free(r);
    return st;
}

df_status df_ref_features_save(const df_ref_features *r, const char *path) {
    char count[32], limit[32];
    snprintf(count, sizeof count, "%ld", r->n);
    snprintf(limit, sizeof limit, "%ld", r->limit);
    const char *meta[] = {"format", "diffuse reference features", "network_sha256", r->net_sha256, "data_sha256",
                          r->data_sha256, "data", r->desc, "count", count, "limit", limit};
    st_entry e = {.name = "features", .ndim = 2, .shape = {r->n, r->d}, .f32 = r->feats};
    return st_write(path, &e, 1, meta, DF_COUNTOF(meta) / 2);
}

/* The "__metadata__" object of a safetensors file's header (st_open skips it), parsed with cJSON. */
static cJSON *header_metadata(const st_file *sf) {
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | sf->file[i];   /* already checked against the file's size */
    cJSON *h = cJSON_ParseWithLength((const char *)sf->file + 8, (size_t)hl);
    cJSON *m = h ? cJSON_DetachItemFromObjectCaseSensitive(h, "__metadata__") : NULL;
    cJSON_Delete(h);
    return m;
}

static df_status meta_string(const cJSON *meta, const char *path, const char *key, char *out, size_t cap) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(meta, key);
    if (!cJSON_IsString(v)) return df_fail(DF_ERR_FORMAT, "%s: not reference features: no \"%s\" in its metadata", path, key);
    if (strlen(v->valuestring) >= cap) return df_fail(DF_ERR_FORMAT, "%s: metadata \"%s\" is too long", path, key);
    snprintf(out, cap, "%s", v->valuestring);
    return DF_OK;
}

static int is_hex64(const char *s) {
    if (strlen(s) != 64) return 0;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

df_status df_ref_features_load_memory(const void *buf, size_t len, const char *path, df_ref_features *r) {
    memset(r, 0, sizeof *r);
    st_file sf;
    df_status st = st_open_memory(buf, len, path, &sf);
    if (st) return st;
    char fmt[64], lim[32];
    cJSON *meta = header_metadata(&sf);
    if (!meta) st = df_fail(DF_ERR_FORMAT, "%s: not reference features: no metadata", path);
    if (!st) st = meta_string(meta, path, "format", fmt, sizeof fmt);
    if (!st && strcmp(fmt, "diffuse reference features") != 0)
        st = df_fail(DF_ERR_FORMAT, "%s: not reference features (format \"%s\")", path, fmt);
    if (!st) st = meta_string(meta, path, "network_sha256", r->net_sha256, sizeof r->net_sha256);
    if (!st) st = meta_string(meta, path, "data_sha256", r->data_sha256, sizeof r->data_sha256);
    if (!st && (!is_hex64(r->net_sha256) || !is_hex64(r->data_sha256)))
        st = df_fail(DF_ERR_FORMAT, "%s: the network and data hashes must be 64 hex digits", path);
    if (!st) st = meta_string(meta, path, "data", r->desc, sizeof r->desc);
    if (!st && meta_string(meta, path, "limit", lim, sizeof lim) == DF_OK) r->limit = strtol(lim, NULL, 10);
    cJSON_Delete(meta);
    const st_tensor *t = st ? NULL : st_find(&sf, "features");
    if (!st && !t) st = df_fail(DF_ERR_FORMAT, "%s: no \"features\" tensor", path);
    if (!st && (t->ndim != 2 || t->shape[0] < 2 || t->shape[0] > 10000000 || t->shape[1] < 1 || t->shape[1] > 65536))
        st = df_fail(DF_ERR_SHAPE, "%s: features must be (n >= 2, d) with n up to 10^7 and d up to 65536", path);
    if (!st) {
        r->n = (long)t->shape[0], r->d = (int)t->shape[1];
        r->feats = malloc(sizeof(float) * (size_t)r->n * r->d);
        st = r->feats ? st_read_f32(&sf, t, r->feats, (size_t)r->n * r->d)
                      : df_fail(DF_ERR_NOMEM, "%s: out of memory for %ld features", path, r->n);
    }
    for (size_t i = 0; !st && i < (size_t)r->n * r->d; i++)
        if (!isfinite(r->feats[i])) st = df_fail(DF_ERR_FORMAT, "%s: feature %zu is not finite", path, i);
    st_close(&sf);
    if (!st) st = df_fstats_compute(r->feats, r->n, r->d, &r->stats);
    if (st) {
        free(r->feats);
        df_fstats_free(&r->stats);
        memset(r, 0, sizeof *r);
    }
    return st;
}

df_status df_ref_features_load(const char *path, df_ref_features *r) {
    char *buf;
    size_t len;
    df_status st = df_read_file(path, &buf, &len);
    if (st) return st;
    st = df_ref_features_load_memory(buf, len, path, r);
    free(buf);
    return st;
}

df_status df_ref_features_check(const df_ref_features *r, const df_feature_net *f, const char *path) {
    if (strcmp(r->net_sha256, f->sha256) != 0 || r->d != f->dim)
        return df_fail(DF_ERR_ARG, "%s: reference features of another network (sha256 %.12s..., %d-d); the feature "
                       "network %s is sha256 %.12s... (%d-d): compute them again from the data (--ref DATA)", path,
                       r->net_sha256, r->d, f->path, f->sha256, f->dim);
    return DF_OK;
}

/* Where reference features of data with this hash are cached: next to the network (inside a classifier's
 * directory; beside an Inception file). */
static void cache_path(const df_feature_net *f, const char *data_sha256, long limit, char *out, size_t cap) {
    char lim[32] = "";
    if (limit > 0) snprintf(lim, sizeof lim, "-first%ld", limit);
    if (f->model) snprintf(out, cap, "%s/reference-%.16s%s.safetensors", f->path, data_sha256, lim);
    else snprintf(out, cap, "%s.reference-%.16s%s.safetensors", f->path, data_sha256, lim);
}

df_status df_ref_features_get(df_feature_net *f, const df_dataset *d, long limit, df_ref_features *r, int *cached,
                              void (*progress)(void *, const char *, double, double), void *ctx) {
    char sha[65], path[4400];
    df_dataset_sha256(d, sha);
    if (limit >= df_dataset_count(d)) limit = 0;
    cache_path(f, sha, limit, path, sizeof path);
    *cached = 0;
    /* a cache is used only when both hashes match: a retrained network or changed data recomputes it */
    if (access(path, R_OK) == 0 && df_ref_features_load(path, r) == DF_OK) {
        if (strcmp(r->net_sha256, f->sha256) == 0 && strcmp(r->data_sha256, sha) == 0 && r->d == f->dim) {
            *cached = 1;
            return DF_OK;
        }
        df_ref_features_free(r);
    }
    df_status st = df_ref_features_compute(f, d, limit, r, progress, ctx);
    if (st) return st;
    r->limit = limit;
    /* best effort: a read-only network directory only costs the recomputation next time */
    if (df_ref_features_save(r, path) == DF_OK) *cached = 2;
    return DF_OK;
}
