/* The fuzz targets: one per parser (safetensors, config.json, scheduler_config.json, IDX, CIFAR-10,
 * PNG, JPEG, whole checkpoints, NumPy .npy images, reference features, bits/dim state files, tokenizer
 * folders, text encoder configs, captioned folders' metadata.jsonl). Each checks the library's promise about bad input: a status with one printable line naming
 * the file, or a result that is consistent. */
#define _POSIX_C_SOURCE 200809L
#include "fuzz.h"
#include "graph.h"
#include "internal.h"
#include "npy.h"
#include "safetensors.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers ---------------------------------------------------------------------------------------- */

static char broken_msg[1024];

/* NULL if st is DF_OK or a proper failure: a non-empty single line that names `name`. */
static const char *check_failure(df_status st, const char *name) {
    if (st == DF_OK) return NULL;
    const char *m = df_error();
    if (!m[0]) return "a failure without a message";
    for (const char *c = m; *c; c++)
        if ((unsigned char)*c < 0x20) {
            snprintf(broken_msg, sizeof broken_msg, "a message with a control character: %s", m);
            return broken_msg;
        }
    if (st != DF_ERR_NOMEM && !strstr(m, name)) {
        snprintf(broken_msg, sizeof broken_msg, "the message does not name %.300s: %.600s", name, m);
        return broken_msg;
    }
    return NULL;
}

static const char *broken(const char *fmt, const char *arg) {
    snprintf(broken_msg, sizeof broken_msg, fmt, arg);
    return broken_msg;
}

/* This process's scratch directory (files are overwritten on every input, removed at exit). */
static char scratch[256];

static void remove_tree(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
}

static void scratch_cleanup(void) {
    if (scratch[0]) remove_tree(scratch);
}

static const char *scratch_dir(void) {
    if (!scratch[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(scratch, sizeof scratch, "%s/diffuse-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(scratch)) {
            perror("mkdtemp");
            abort();
        }
        atexit(scratch_cleanup);
    }
    return scratch;
}

/* Write bytes to scratch/rel (creating its directory); the full path goes to out. */
static void put_file(const char *rel, const uint8_t *data, size_t n, char *out, size_t cap) {
    snprintf(out, cap, "%s/%s", scratch_dir(), rel);
    char *slash = strrchr(out, '/');
    *slash = 0;
    df_mkdir_p(out);   /* the directory and its parents: the first file may be in a subdirectory */
    *slash = '/';
    FILE *f = fopen(out, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) {
        perror(out);
        abort();
    }
}

static void drop_file(const char *rel) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", scratch_dir(), rel);
    unlink(p);
}

/* Two files from one input: a 2-byte little-endian length of the first, then the first, then the second. */
static void split2(const uint8_t *d, size_t n, const uint8_t **a, size_t *na, const uint8_t **b, size_t *nb) {
    size_t la = n >= 2 ? (size_t)d[0] | (size_t)d[1] << 8 : 0;
    d += DF_MIN(n, 2), n -= DF_MIN(n, 2);
    la = DF_MIN(la, n);
    *a = d, *na = la, *b = d + la, *nb = n - la;
}

static const char *check_pixels(const float *x, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (!(x[i] >= -1 && x[i] <= 1)) return broken("%s: a pixel outside [-1, 1]", what);
    return NULL;
}

/* ---- safetensors ----------------------------------------------------------------------------------- */

static const char *fuzz_safetensors(const uint8_t *data, size_t size) {
    const char *name = "fuzz.safetensors";
    st_file f;
    df_status st = st_open_memory(data, size, name, &f);
    if (st) return check_failure(st, name);
    const char *bad = NULL;
    for (int i = 0; i < f.n && !bad; i++) {
        const st_tensor *t = &f.tensors[i];
        if (i > 0 && strcmp(f.tensors[i - 1].name, t->name) >= 0) bad = "tensor names not sorted and unique";
        int64_t numel = st_numel(t);
        if (numel < 0 || t->begin > t->end || t->end > f.data_len ||
            (uint64_t)(t->end - t->begin) != (uint64_t)numel * st_dtype_size(t->dtype))
            bad = "a tensor whose byte range does not match its shape";
        if (bad || st_find(&f, t->name) != t) {
            if (!bad) bad = "st_find does not find a listed tensor";
            break;
        }
        int is_float = t->dtype == ST_F32 || t->dtype == ST_F16 || t->dtype == ST_BF16 || t->dtype == ST_F64;
        void *buf = malloc((size_t)numel * 8 + 8);
        if (!buf) break;
        st = is_float ? st_read_f32(&f, t, buf, (size_t)numel) : st_read_i64(&f, t, buf, (size_t)numel);
        if (st && t->dtype != ST_BOOL) bad = broken("reading a valid tensor failed: %s", df_error());
        else if ((bad = check_failure(st, name))) {
        }
        /* the wrong count must be refused, never read past the tensor */
        if (!bad && numel > 0) {
            st = is_float ? st_read_f32(&f, t, buf, (size_t)numel - 1) : st_read_i64(&f, t, buf, (size_t)numel - 1);
            if (!st) bad = "a read with the wrong element count succeeded";
        }
        free(buf);
    }
    st_close(&f);
    return bad;
}

/* ---- config.json ----------------------------------------------------------------------------------- */

static const char *fuzz_unet_config(const uint8_t *data, size_t size) {
    const char *name = "fuzz/config.json";
    df_unet_config cfg;
    df_status st = df_unet_config_parse((const char *)data, size, name, &cfg);
    if (st) return check_failure(st, name);
    if (df_unet_config_validate(&cfg)) return broken("a parsed config fails validation: %s", df_error());
    /* the network it describes can be laid out, at the smallest size it takes */
    int f = 1 << (cfg.num_levels - 1);
    unet_graph g;
    st = unet_build(&cfg, 1, f, f, 1, &g);
    if (st) return broken("a valid config does not build: %s", df_error());
    unet_graph_free(&g);
    /* and what we write reads back as the same config */
    char path[600];
    put_file("config.json", NULL, 0, path, sizeof path);
    df_unet_config back;
    if (df_unet_config_save(&cfg, path) || df_unet_config_load(path, &back))
        return broken("save/load of a valid config failed: %s", df_error());
    if (memcmp(&cfg, &back, sizeof cfg) != 0) return "a config does not survive save and load";
    return NULL;
}

/* ---- scheduler_config.json ------------------------------------------------------------------------- */

static const char *fuzz_scheduler_config(const uint8_t *data, size_t size) {
    char path[600];
    put_file("scheduler_config.json", data, size, path, sizeof path);
    df_scheduler_config c;
    df_status st = df_scheduler_config_load(path, &c);
    if (st) return check_failure(st, path);
    df_schedule s;
    if (df_schedule_from_config(&c, &s)) return broken("a loaded scheduler config builds no schedule: %s", df_error());
    df_schedule_free(&s);
    return NULL;
}

/* ---- data sets ------------------------------------------------------------------------------------- */

/* Every image of a data set reads as pixels in [-1, 1], every label is a class. */
static const char *check_dataset(const df_dataset *d) {
    int n = df_dataset_count(d), c, h, w;
    df_dataset_shape(d, &c, &h, &w);
    if (n < 1 || c < 1 || h < 1 || w < 1) return "an empty data set opened";
    size_t px = (size_t)c * h * w;
    float *x = malloc(px * sizeof(float));
    if (!x) return NULL;
    const char *bad = NULL;
    int k = df_dataset_num_classes(d);
    for (int i = 0; i < n && i < 4 && !bad; i++) {
        int idx = i < 2 ? i : n - 1 - (i - 2);
        df_dataset_get(d, idx, i & 1, x);
        bad = check_pixels(x, px, "data set");
        int l = df_dataset_label(d, idx);
        if (!bad && k > 0 && (l < 0 || l >= k)) bad = "a label outside the classes";
        if (!bad && k == 0 && l != -1) bad = "a label without classes";
    }
    free(x);
    return bad;
}

static const char *fuzz_idx(const uint8_t *data, size_t size) {
    const uint8_t *a, *b;
    size_t na, nb;
    split2(data, size, &a, &na, &b, &nb);
    char images[600], labels[600];
    put_file("idx/x-images-idx3-ubyte", a, na, images, sizeof images);
    if (nb) put_file("idx/x-labels-idx1-ubyte", b, nb, labels, sizeof labels);
    else drop_file("idx/x-labels-idx1-ubyte");
    df_dataset *d;
    df_status st = df_dataset_open(images, 0, 0, &d);
    if (st) {
        /* the message names whichever of the two files is wrong */
        const char *m = df_error();
        return check_failure(st, nb && strstr(m, "labels-idx1") ? "x-labels-idx1-ubyte" : images);
    }
    const char *bad = check_dataset(d);
    df_dataset_free(d);
    return bad;
}

static const char *fuzz_cifar(const uint8_t *data, size_t size) {
    const uint8_t *a, *b;
    size_t na, nb;
    split2(data, size, &a, &na, &b, &nb);
    char batch[600], meta[600];
    put_file("cifar/data_batch_1.bin", a, na, batch, sizeof batch);
    if (nb) put_file("cifar/batches.meta.txt", b, nb, meta, sizeof meta);
    else drop_file("cifar/batches.meta.txt");
    df_dataset *d;
    df_status st = df_dataset_open(batch, 0, 0, &d);
    if (st) return check_failure(st, batch);
    const char *bad = check_dataset(d);
    for (int k = 0; k < df_dataset_num_classes(d) && !bad; k++) {
        const char *cn = df_dataset_class_name(d, k);
        if (cn && strchr(cn, '\n')) bad = "a class name with a newline";
    }
    df_dataset_free(d);
    return bad;
}

/* ---- images ---------------------------------------------------------------------------------------- */

static const char *fuzz_image(const uint8_t *data, size_t size) {
    const char *name = "fuzz-image";
    int channels = (int)(size % 3) == 2 ? 3 : (int)(size % 3);   /* 0, 1 or 3, varied by the input */
    int c, h, w;
    float *px;
    df_status st = df_image_decode(name, data, size, channels, &c, &h, &w, &px);
    if (st) return check_failure(st, name);
    const char *bad = NULL;
    if ((channels && c != channels) || (c != 1 && c != 3) || h < 1 || w < 1) bad = "a decoded image with a bad shape";
    if (!bad) bad = check_pixels(px, (size_t)c * h * w, name);
    free(px);
    return bad;
}

/* ---- checkpoints ----------------------------------------------------------------------------------- */

/* A checkpoint directory from records of (1-byte file id, 2-byte little-endian length, bytes). */
static const char *const ckpt_files[] = {
    "model_index.json",     "unet/config.json",     "unet/diffusion_pytorch_model.safetensors",
    "scheduler/scheduler_config.json", "unet_raw/config.json", "unet_raw/diffusion_pytorch_model.safetensors",
    "classes.json",
};

static const char *fuzz_checkpoint(const uint8_t *data, size_t size) {
    char dir[600], p[700];
    snprintf(dir, sizeof dir, "%s/ckpt", scratch_dir());
    for (int i = 0; i < DF_COUNTOF(ckpt_files); i++) {
        snprintf(p, sizeof p, "ckpt/%s", ckpt_files[i]);
        drop_file(p);
    }
    int raw = size > 0 && (data[0] & 1);
    size_t pos = size > 0 ? 1 : 0;
    while (pos + 3 <= size) {
        int id = data[pos] % DF_COUNTOF(ckpt_files);
        size_t n = DF_MIN((size_t)data[pos + 1] | (size_t)data[pos + 2] << 8, size - pos - 3);
        snprintf(p, sizeof p, "ckpt/%s", ckpt_files[id]);
        char full[700];
        put_file(p, data + pos + 3, n, full, sizeof full);
        pos += 3 + n;
    }
    df_model *m;
    df_scheduler_config sc;
    df_status st = df_pipeline_load(dir, raw, &m, &sc);
    if (st) return check_failure(st, dir);
    const char *bad_msg_check;
    /* its class list is refused or consistent */
    df_class_info ci;
    st = df_class_info_load(dir, m, &ci);
    if (st && (bad_msg_check = check_failure(st, "classes.json"))) {
        df_model_free(m);
        return bad_msg_check;
    }
    if (!st && (ci.count != df_model_config(m)->num_class_embeds || ci.null_class >= ci.count)) {
        df_class_info_free(&ci);
        df_model_free(m);
        return "a class list that does not fit the model";
    }
    df_class_info_free(&ci);
    /* a loaded model runs: one image at the smallest size, reference kernels (no JIT per input) */
    const df_unet_config *cfg = df_model_config(m);
    int f = 1 << (cfg->num_levels - 1);
    size_t px = (size_t)cfg->in_channels * f * f, po = (size_t)cfg->out_channels * f * f;
    if ((size_t)cfg->classifier_classes > po) po = (size_t)cfg->classifier_classes;   /* a classifier's logits */
    float *x = calloc(px + po, sizeof(float));
    const char *bad = NULL;
    if (x) {
        float t = 10;
        int label = 0;
        df_model_set_kernels(m, DF_KERNELS_REFERENCE);
        st = df_model_forward(m, 1, f, f, x, &t, cfg->num_class_embeds > 0 ? &label : NULL, x + px);
        if (st) bad = broken("a loaded model does not run: %s", df_error());
        free(x);
    }
    df_model_free(m);
    return bad;
}

/* ---- training state -------------------------------------------------------------------------------- */

static const char *fuzz_training_state(const uint8_t *data, size_t size) {
    char path[600];
    put_file("training_state.json", data, size, path, sizeof path);
    return check_failure(df_train_state_check(path), path);
}

/* ---- NumPy .npy images ---------------------------------------------------------------------------- */

static const char *fuzz_npy(const uint8_t *data, size_t size) {
    const char *name = "fuzz.npy";
    float *x;
    int n, c, h, w;
    df_status st = df_npy_load_images_memory(data, size, name, &x, &n, &c, &h, &w);
    if (st) return check_failure(st, name);
    const char *bad = NULL;
    size_t count = (size_t)n * c * h * w;
    if (n < 1 || n > DF_NPY_MAX_IMAGES || (c != 1 && c != 3) || h < 1 || h > DF_MAX_SIZE || w < 1 || w > DF_MAX_SIZE)
        bad = "loaded images with a bad shape";
    else if (count > size) bad = "more values loaded than the file has bytes";
    else bad = check_pixels(x, count, name);
    /* what the writer makes of them loads back the same to 1/255 */
    unsigned char *b = NULL;
    size_t len;
    float *y = NULL;
    int n2, c2, h2, w2;
    if (!bad && (st = df_npy_encode_images(name, x, n, c, h, w, &b, &len)))
        bad = st == DF_ERR_NOMEM ? NULL : broken("loaded images do not encode: %s", df_error());
    else if (!bad && (st = df_npy_load_images_memory(b, len, name, &y, &n2, &c2, &h2, &w2)))
        bad = st == DF_ERR_NOMEM ? NULL : broken("what the writer wrote does not load: %s", df_error());
    else if (!bad && (n2 != n || c2 != c || h2 != h || w2 != w))
        bad = "what the writer wrote loads with other sizes";
    for (size_t i = 0; !bad && y && i < count; i++)
        if (!(fabsf(y[i] - x[i]) <= 1.0f / 255 + 1e-6f)) bad = "a value changes by more than 1/255 through save and load";
    free(y), free(b), free(x);
    return bad;
}

/* ---- reference features and the bits/dim state ------------------------------------------------------------ */

static const char *fuzz_ref_features(const uint8_t *data, size_t size) {
    const char *name = "fuzz-reference.safetensors";
    df_ref_features r;
    df_status st = df_ref_features_load_memory(data, size, name, &r);
    if (st) return check_failure(st, name);
    const char *bad = NULL;
    if (r.n < 2 || r.d < 1 || !r.feats || !r.stats.mu || r.stats.d != r.d || r.stats.n != r.n)
        bad = "loaded features with inconsistent sizes";
    else if (strlen(r.net_sha256) != 64 || strlen(r.data_sha256) != 64) bad = "loaded hashes that are not 64 digits";
    for (long i = 0; !bad && i < (long)r.d * r.d; i++)
        if (!isfinite(r.stats.sigma[i])) bad = "a covariance that is not finite";
    df_ref_features_free(&r);
    return bad;
}

static const char *fuzz_bpd_state(const uint8_t *data, size_t size) {
    const char *name = "fuzz-bpd.json";
    const char *sha = "0000000000000000000000000000000000000000000000000000000000000000";
    double bpd[64];
    int done;
    df_status st = df_bpd_state_check_memory((const char *)data, size, name, sha, sha, 64, 10, 8, 0, bpd, &done);
    if (st) return check_failure(st, name);
    if (done < 0 || done > 64 || done % 8) return "a number of values done outside 0..n or not whole chunks";
    for (int i = 0; i < done; i++)
        if (!(bpd[i] >= 0 && bpd[i] <= 1e6)) return "a bits/dim value outside 0..10^6";
    return NULL;
}

/* ---- tokenizer folders ------------------------------------------------------------------------------ */

/* vocab.json, then merges.txt, then a text (split2 twice). A loaded tokenizer must turn the text into ids
 * inside its vocabulary: the start token, at most context - 2 tokens, the end token, padding; or refuse it as
 * invalid UTF-8. */
static const char *fuzz_tokenizer(const uint8_t *data, size_t size) {
    const uint8_t *vocab, *rest, *merges, *text;
    size_t nv, nr, nm, nt;
    split2(data, size, &vocab, &nv, &rest, &nr);
    split2(rest, nr, &merges, &nm, &text, &nt);
    char path[1024], dir[1024];
    put_file("tok/vocab.json", vocab, nv, path, sizeof path);
    put_file("tok/merges.txt", merges, nm, path, sizeof path);
    snprintf(dir, sizeof dir, "%s/tok", scratch_dir());
    df_tokenizer *t;
    df_status st = df_tokenizer_load(dir, &t);
    if (st) return check_failure(st, dir);
    char *s = malloc(nt + 1);
    const int ctx = df_tokenizer_context(t), nid = df_tokenizer_vocab_size(t);
    int32_t *ids = malloc((size_t)ctx * sizeof *ids);
    const char *bad = NULL;
    if (s && ids) {
        memcpy(s, text, nt), s[nt] = 0;
        int length, dropped;
        st = df_tokenize(t, s, ids, &length, &dropped);
        if (st && st != DF_ERR_NOMEM) bad = st == DF_ERR_ARG && strstr(df_error(), "UTF-8") ? NULL : broken("tokenize failed: %s", df_error());
        else if (!st && (length < 2 || length > ctx || dropped < 0)) bad = "a token count outside 2..context";
        for (int i = 0; !st && !bad && i < ctx; i++)
            if (ids[i] < 0 || ids[i] >= nid || !df_tokenizer_token(t, ids[i])) bad = "an id outside the vocabulary";
    }
    free(s), free(ids);
    df_tokenizer_free(t);
    return bad;
}

/* An image folder's metadata.jsonl, beside two small images: refused with a line naming it, or captions for
 * both images that are UTF-8 text. */
static const char *fuzz_metadata(const uint8_t *data, size_t size) {
    char path[1400], dir[1024];
    snprintf(dir, sizeof dir, "%s/captioned", scratch_dir());
    for (int i = 0; i < 2; i++) {   /* the images, once per process */
        snprintf(path, sizeof path, "%s/img%d.png", dir, i);
        if (access(path, F_OK) == 0) continue;
        df_mkdir_p(dir);
        float px[4 * 4] = {0};
        px[i] = 1;
        if (df_image_save(path, px, 1, 4, 4, 0, NULL, NULL)) abort();
    }
    put_file("captioned/metadata.jsonl", data, size, path, sizeof path);
    df_dataset *d;
    df_status st = df_dataset_open(dir, 0, 0, &d);
    if (st) return check_failure(st, dir);
    const char *bad = NULL;
    for (int i = 0; i < 2 && !bad; i++) {
        if (df_dataset_num_captions(d, i) < 1) bad = "an image without a caption loaded";
        for (int k = 0; !bad && k < df_dataset_num_captions(d, i); k++) {
            const char *c = df_dataset_caption(d, i, k);
            if (!c || df_utf8_invalid_at(c, strlen(c)) >= 0) bad = "a caption that is not UTF-8 loaded";
        }
    }
    df_dataset_free(d);
    return bad;
}

/* A text encoder's config.json: refused with a line naming it, or a config that validates, saves and loads
 * back the same. */
static const char *fuzz_text_config(const uint8_t *data, size_t size) {
    char path[1024], again[1024];
    put_file("text_config.json", data, size, path, sizeof path);
    df_text_config c, d;
    df_status st = df_text_config_load(path, &c);
    if (st) return check_failure(st, path);
    if (c.hidden_size % c.num_attention_heads || c.vocab_size < 1 || c.max_position_embeddings < 1)
        return "a config that does not validate loaded";
    snprintf(again, sizeof again, "%s/text_config_again.json", scratch_dir());
    if ((st = df_text_config_save(&c, again))) return broken("a loaded config does not save: %s", df_error());
    if ((st = df_text_config_load(again, &d))) return broken("a saved config does not load: %s", df_error());
    if (memcmp(&c, &d, sizeof c)) return "a config changes through save and load";
    return NULL;
}

/* ---- the table ------------------------------------------------------------------------------------- */

const fuzz_target fuzz_targets[] = {
    {"safetensors", fuzz_safetensors}, {"unet_config", fuzz_unet_config}, {"scheduler_config", fuzz_scheduler_config},
    {"idx", fuzz_idx},                 {"cifar", fuzz_cifar},             {"png", fuzz_image},
    {"jpeg", fuzz_image},              {"checkpoint", fuzz_checkpoint},   {"training_state", fuzz_training_state},
    {"npy", fuzz_npy},                 {"ref_features", fuzz_ref_features}, {"bpd_state", fuzz_bpd_state},
    {"tokenizer", fuzz_tokenizer},     {"text_config", fuzz_text_config},   {"metadata", fuzz_metadata},
    {NULL, NULL},
};

const fuzz_target *fuzz_find(const char *name) {
    for (const fuzz_target *t = fuzz_targets; t->name; t++)
        if (strcmp(t->name, name) == 0) return t;
    return NULL;
}
