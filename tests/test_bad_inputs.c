/* Bad files for every loader not covered next to its own tests: IDX and CIFAR-10 data, config and
 * scheduler limits, checkpoints whose weights do not match their config, decompression bombs. Each must
 * be refused with the expected status and one line naming the file, and nothing returned. */
#define _POSIX_C_SOURCE 200809L
#include "test.h"
#include "internal.h"
#include "safetensors.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zlib.h>

static void path_in(char *buf, size_t cap, const char *sub, const char *name) {
    snprintf(buf, cap, "%s/bad-inputs/%s", test_tmp_dir(), sub);
    df_mkdir_p(buf);
    snprintf(buf, cap, "%s/bad-inputs/%s/%s", test_tmp_dir(), sub, name);
}

static void write_all(const char *path, const void *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    if (n) fwrite(b, 1, n, f);
    fclose(f);
}

static void be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16), p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* st must be `want` with one printable line naming `name` (and mentioning `expect` when given). */
static void check_refusal(df_status st, df_status want, const char *name, const char *expect, const char *what) {
    const char *m = df_error();
    CHECK(st == want, "%s: status %s, expected %s (message: %s)", what, df_status_name(st), df_status_name(want), m);
    if (st == DF_OK) return;
    CHECK(strstr(m, name) != NULL, "%s: the message does not name %s: %s", what, name, m);
    CHECK(!expect || strstr(m, expect), "%s: the message does not say \"%s\": %s", what, expect, m);
    int one_line = 1;
    for (const char *c = m; *c; c++) one_line &= (unsigned char)*c >= 0x20;
    CHECK(one_line, "%s: the message is not one printable line", what);
}

/* ---- IDX and CIFAR-10 -------------------------------------------------------------------------------- */

typedef struct {
    const char *label, *expect;
    unsigned char hdr[16];
    size_t hdr_len, data_len;   /* bytes after the header */
    int gz;                     /* 0 plain, 1 gzipped, 2 gzip magic then garbage, 3 gzip cut short */
} idx_case;

static void check_idx(const idx_case *c, const unsigned char *labels, size_t labels_len, const char *labels_expect) {
    char images[700], lab[700];
    path_in(images, sizeof images, c->label, "t-images-idx3-ubyte");
    path_in(lab, sizeof lab, c->label, "t-labels-idx1-ubyte");
    size_t n = c->hdr_len + c->data_len;
    unsigned char *b = calloc(n + 1, 1);
    memcpy(b, c->hdr, c->hdr_len);
    if (c->gz == 0) {
        write_all(images, b, n);
    } else {
        uLongf zn = compressBound(n) + 32;
        unsigned char *z = malloc(zn + 18);
        gzFile g = gzopen(images, "wb");
        gzwrite(g, b, (unsigned)n);
        gzclose(g);
        FILE *f = fopen(images, "rb");
        size_t got = fread(z, 1, zn + 18, f);
        fclose(f);
        if (c->gz == 2) memset(z + 10, 0xA5, got > 20 ? got - 20 : 0);
        if (c->gz == 3) got = got / 2;
        write_all(images, z, got);
        free(z);
    }
    free(b);
    if (labels) write_all(lab, labels, labels_len);
    df_dataset *d = (df_dataset *)1;
    df_status st = df_dataset_open(images, 0, 0, &d);
    if (labels_expect) check_refusal(st, DF_ERR_FORMAT, "t-labels-idx1-ubyte", labels_expect, c->label);
    else check_refusal(st, DF_ERR_FORMAT, images, c->expect, c->label);
    if (st == DF_OK) df_dataset_free(d);
}

TEST(bad_idx_files_refused) {
    const uint32_t big = 0x80000000u;
    idx_case cases[] = {
        {"empty", "too short", {0}, 0, 0, 0},
        {"short-header", "too short", {0, 0, 8, 3, 0, 0, 0, 1}, 8, 0, 0},
        {"bad-magic", "bad magic", {1, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2}, 16, 4, 0},
        {"float-type", "0x0d", {0, 0, 0x0d, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2}, 16, 16, 0},
        {"two-dims", "2 dimensions", {0, 0, 8, 2, 0, 0, 0, 1, 0, 0, 0, 2}, 12, 2, 0},
        {"zero-dim", "dimension 1 is 0", {0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2}, 16, 0, 0},
        {"huge-dim", "dimension 0", {0, 0, 8, 3}, 16, 0, 0},
        {"overflow", "too large", {0, 0, 8, 3}, 16, 0, 0},
        {"truncated", "truncated", {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 4}, 16, 47, 0},
        {"gz-truncated", "truncated", {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 4}, 16, 40, 1},
        {"gz-garbage", NULL, {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 4}, 16, 48, 2},
        {"gz-cut", NULL, {0, 0, 8, 3, 0, 0, 0, 30, 0, 0, 0, 40, 0, 0, 0, 40}, 16, 48000, 3},
    };
    be32(cases[6].hdr + 4, big), be32(cases[6].hdr + 8, 2), be32(cases[6].hdr + 12, 2);
    be32(cases[7].hdr + 4, 1u << 28), be32(cases[7].hdr + 8, 1u << 28), be32(cases[7].hdr + 12, 1u << 28);
    for (int i = 0; i < DF_COUNTOF(cases); i++) check_idx(&cases[i], NULL, 0, NULL);

    /* good images, bad labels beside them */
    idx_case good = {"labels", NULL, {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2}, 16, 12, 0};
    unsigned char lab[12] = {0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3, 0};
    good.label = "labels-count";
    lab[7] = 4;
    check_idx(&good, lab, 12, "4 labels");
    good.label = "labels-truncated";
    lab[7] = 3;
    check_idx(&good, lab, 10, "truncated");
    good.label = "labels-magic";
    lab[2] = 9;
    check_idx(&good, lab, 11, "not unsigned bytes");
    good.label = "labels-dims";
    lab[2] = 8, lab[3] = 3;
    check_idx(&good, lab, 11, "dimensions");
}

TEST(bad_cifar_batches_refused) {
    char p[700];
    static unsigned char rec[3 * 3073];
    df_dataset *d;
    path_in(p, sizeof p, "cifar", "data_batch_1.bin");
    write_all(p, rec, 0);
    check_refusal(df_dataset_open(p, 0, 0, &d), DF_ERR_FORMAT, p, "not a whole number", "empty batch");
    write_all(p, rec, 3073 * 2 + 100);
    check_refusal(df_dataset_open(p, 0, 0, &d), DF_ERR_FORMAT, p, "not a whole number", "partial record");
    rec[3073] = 10;
    write_all(p, rec, 3073 * 3);
    check_refusal(df_dataset_open(p, 0, 0, &d), DF_ERR_FORMAT, p, "label 10", "label out of range");
    rec[3073] = 0;
    path_in(p, sizeof p, "cifar-empty-dir", "x");
    *strrchr(p, '/') = 0;
    check_refusal(df_dataset_open(p, 0, 0, &d), DF_ERR_IO, p, NULL, "a directory without batches");
    /* a good batch whose batches.meta.txt is binary junk still opens; the names stay printable */
    path_in(p, sizeof p, "cifar-meta", "batches.meta.txt");
    unsigned char junk[300];
    for (int i = 0; i < 300; i++) junk[i] = (unsigned char)(i * 91 + 7);
    write_all(p, junk, sizeof junk);
    path_in(p, sizeof p, "cifar-meta", "data_batch_1.bin");
    write_all(p, rec, 3073);
    df_status st = df_dataset_open(p, 0, 0, &d);
    CHECK(st == DF_OK, "junk class names refused: %s", df_error());
    if (st == DF_OK) {
        for (int k = 0; k < df_dataset_num_classes(d); k++) {
            const char *n = df_dataset_class_name(d, k);
            for (const char *c = n; c && *c; c++)
                CHECK((unsigned char)*c >= 0x20, "class %d's name holds a control character", k);
        }
        df_dataset_free(d);
    }
}

/* ---- configs ---------------------------------------------------------------------------------------- */

TEST(bad_config_limits_refused) {
    static const struct { const char *json, *expect; } cases[] = {
        {"{\"block_out_channels\": [100000], \"down_block_types\": [\"DownBlock2D\"], \"up_block_types\": "
         "[\"UpBlock2D\"]}", "block_out_channels"},
        {"{\"num_class_embeds\": 50000000}", "num_class_embeds"},
        {"{\"sample_size\": 65536}", "sample_size"},
        {"{\"layers_per_block\": 1000}", "layers_per_block"},
        {"{\"in_channels\": 1e30}", "in_channels"},
        {"{\"norm_num_groups\": -4}", "norm_num_groups"},
        {"{\"down_block_types\": [\"CrossAttnDownBlock2D\", \"DownBlock2D\", \"DownBlock2D\", \"DownBlock2D\"]}",
         "CrossAttnDownBlock2D"},
        {"{\"sample_size\": \"32\"}", "sample_size"},
        {"{\"\\nblock\": 3}", "unknown field"},
        {"[1, 2, 3]", "not a JSON object"},
        {"{\"sample_size\": 32", "invalid JSON"},
    };
    for (int i = 0; i < DF_COUNTOF(cases); i++) {
        df_unet_config c;
        df_status st = df_unet_config_parse(cases[i].json, strlen(cases[i].json), "limits/config.json", &c);
        CHECK(st == DF_ERR_CONFIG || st == DF_ERR_FORMAT, "case %d: status %s", i, df_status_name(st));
        check_refusal(st, st, "limits/config.json", cases[i].expect, cases[i].json);
    }
    /* the largest channels allowed still parse; a model that large is refused before allocation */
    df_unet_config c;
    df_unet_config_default(&c);
    c.num_levels = 8;
    for (int i = 0; i < 8; i++) c.block_out_channels[i] = DF_MAX_CHANNELS, c.down_attn[i] = c.up_attn[i] = 0;
    c.layers_per_block = 16;
    CHECK_OK(df_unet_config_validate(&c));
    df_model *m = NULL;
    clock_t t0 = clock();
    check_refusal(df_model_create(&c, 0, &m), DF_ERR_CONFIG, "config", "parameters", "a 100-billion parameter model");
    CHECK(m == NULL, "no model returned");
    CHECK((double)(clock() - t0) / CLOCKS_PER_SEC < 5, "refused quickly (%.1f s)", (double)(clock() - t0) / CLOCKS_PER_SEC);
}

TEST(bad_scheduler_configs_refused) {
    static const struct { const char *json, *expect; } cases[] = {
        {"{\"num_train_timesteps\": 1e12}", "num_train_timesteps"},
        {"{\"num_train_timesteps\": 2.5}", "num_train_timesteps"},
        {"{\"num_train_timesteps\": -1e300}", "num_train_timesteps"},
        {"{\"num_train_timesteps\": \"1000\"}", "num_train_timesteps"},
        {"{\"beta_end\": 1.5}", "beta"},
        {"{\"beta_start\": \"small\"}", "beta_start"},
        {"{\"beta_schedule\": \"quadratic\"}", "beta_schedule"},
        {"{\"prediction_type\": 7}", "prediction_type"},
        {"{\"trained_betas\": [0.1, 0.2]}", "trained_betas"},
        {"{\"rescale_betas_zero_snr\": \"yes\"}", "rescale_betas_zero_snr"},
        {"not json", "JSON"},
        {"", "JSON"},
    };
    char p[700];
    path_in(p, sizeof p, "sched", "scheduler_config.json");
    for (int i = 0; i < DF_COUNTOF(cases); i++) {
        write_all(p, cases[i].json, strlen(cases[i].json));
        df_scheduler_config c;
        df_status st = df_scheduler_config_load(p, &c);
        CHECK(st == DF_ERR_CONFIG || st == DF_ERR_FORMAT || st == DF_ERR_ARG, "case %d: status %s", i,
              df_status_name(st));
        check_refusal(st, st == DF_OK ? DF_ERR_CONFIG : st, p, cases[i].expect, cases[i].json);
    }
}

/* ---- checkpoints ------------------------------------------------------------------------------------ */

/* A tiny model directory; returns its config. */
static df_unet_config tiny_model(const char *dir, df_model **keep) {
    df_unet_config c;
    test_tiny_unet(&c, 0);
    c.block_out_channels[0] = 4, c.block_out_channels[1] = 8, c.norm_num_groups = 2;   /* tinier still */
    df_model *m = NULL;
    CHECK_OK(df_model_create(&c, 3, &m));
    if (m) CHECK_OK(df_model_save(m, dir));
    *keep = m;
    return c;
}

TEST(bad_checkpoints_refused) {
    char dir[700], w[800], cfgp[800];
    path_in(dir, sizeof dir, "ckpt", "model");
    df_model *m0;
    df_unet_config c = tiny_model(dir, &m0);
    if (!m0) return;
    snprintf(w, sizeof w, "%s/diffusion_pytorch_model.safetensors", dir);
    snprintf(cfgp, sizeof cfgp, "%s/config.json", dir);
    df_model *m = NULL;
    CHECK_OK(df_model_load(dir, &m));
    df_model_free(m);
    m = NULL;

    /* weights of a different config: wider channels */
    df_unet_config wide = c;
    wide.block_out_channels[1] = 16;
    CHECK_OK(df_unet_config_save(&wide, cfgp));
    check_refusal(df_model_load(dir, &m), DF_ERR_SHAPE, w, "the config needs", "config wider than the weights");
    /* a config asking for far more parameters than the file can hold: refused before allocating */
    wide.block_out_channels[0] = 256, wide.block_out_channels[1] = 512, wide.norm_num_groups = 32;
    CHECK_OK(df_unet_config_save(&wide, cfgp));
    check_refusal(df_model_load(dir, &m), DF_ERR_SHAPE, w, "holds at most", "config far larger than the file");
    /* a config with one more level */
    df_unet_config deep = c;
    deep.num_levels = 3, deep.block_out_channels[2] = 8, deep.sample_size = 8;
    for (int i = 0; i < 3; i++) deep.down_attn[i] = deep.up_attn[i] = 0;
    CHECK_OK(df_unet_config_save(&deep, cfgp));
    check_refusal(df_model_load(dir, &m), DF_ERR_SHAPE, w, "missing tensor", "config with an extra level");
    CHECK_OK(df_unet_config_save(&c, cfgp));

    /* the weights file rewritten: one tensor missing, one extra, one NaN, one of the wrong shape */
    st_file f;
    CHECK_OK(st_open(w, &f));
    int n = f.n;
    st_entry *e = calloc((size_t)n + 1, sizeof *e);
    float **bufs = calloc((size_t)n + 1, sizeof *bufs);
    for (int i = 0; i < n; i++) {
        const st_tensor *t = &f.tensors[i];
        e[i].name = t->name, e[i].ndim = t->ndim;
        for (int k = 0; k < t->ndim; k++) e[i].shape[k] = t->shape[k];
        bufs[i] = malloc(sizeof(float) * (size_t)(st_numel(t) + 1));
        st_read_f32(&f, t, bufs[i], (size_t)st_numel(t));
        e[i].f32 = bufs[i];
    }
    char bad[800];
    snprintf(bad, sizeof bad, "%s/diffusion_pytorch_model.safetensors", dir);
    /* missing */
    CHECK_OK(st_write(bad, e + 1, n - 1, NULL, 0));
    check_refusal(df_model_load(dir, &m), DF_ERR_SHAPE, w, "missing tensor", "one tensor missing");
    /* extra */
    float extra[2] = {1, 2};
    e[n] = (st_entry){.name = "mid_block.extra.weight", .ndim = 1, .shape = {2}, .f32 = extra};
    CHECK_OK(st_write(bad, e, n + 1, NULL, 0));
    check_refusal(df_model_load(dir, &m), DF_ERR_SHAPE, w, "unexpected tensor", "an extra tensor");
    /* NaN */
    float keep0 = bufs[0][0];
    bufs[0][0] = NAN;
    CHECK_OK(st_write(bad, e, n, NULL, 0));
    check_refusal(df_model_load(dir, &m), DF_ERR_FORMAT, w, "NaN", "a NaN weight");
    bufs[0][0] = INFINITY;
    CHECK_OK(st_write(bad, e, n, NULL, 0));
    check_refusal(df_model_load(dir, &m), DF_ERR_FORMAT, w, "infinity", "an infinite weight");
    bufs[0][0] = keep0;
    /* wrong shape (same count of values arranged differently) */
    int k2 = -1;
    for (int i = 0; i < n && k2 < 0; i++)
        if (e[i].ndim == 4 && e[i].shape[0] > 1) k2 = i;
    if (k2 >= 0) {
        int64_t s0 = e[k2].shape[0];
        e[k2].shape[1] *= s0, e[k2].shape[0] = 1;
        CHECK_OK(st_write(bad, e, n, NULL, 0));
        check_refusal(df_model_load(dir, &m), DF_ERR_SHAPE, w, "has shape", "a reshaped tensor");
        e[k2].shape[0] = s0, e[k2].shape[1] /= s0;
    }
    /* truncated file */
    CHECK_OK(st_write(bad, e, n, NULL, 0));
    char *data;
    size_t len;
    if (df_read_file(w, &data, &len) == DF_OK) {
        write_all(w, data, len - 7);
        check_refusal(df_model_load(dir, &m), DF_ERR_FORMAT, w, NULL, "a truncated weights file");
        write_all(w, data, len);
        free(data);
    }
    CHECK_OK(df_model_load(dir, &m));   /* restored: loads again */
    df_model_free(m);
    m = NULL;
    /* config.json missing, or a directory in its place */
    remove(cfgp);
    check_refusal(df_model_load(dir, &m), DF_ERR_IO, cfgp, NULL, "no config.json");
    mkdir(cfgp, 0755);
    check_refusal(df_model_load(dir, &m), DF_ERR_IO, cfgp, NULL, "config.json is a directory");
    CHECK(m == NULL, "nothing returned on failure");
    for (int i = 0; i < n; i++) free(bufs[i]);
    free(bufs);
    free(e);
    st_close(&f);
    df_model_free(m0);
}

/* ---- images: declared sizes that the file cannot hold ----------------------------------------------- */

/* A PNG whose IHDR declares w x h (gray 8-bit) followed by a tiny IDAT and IEND, CRCs right. */
static size_t bomb_png(unsigned char *b, uint32_t w, uint32_t h) {
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    size_t n = 0;
    memcpy(b, sig, 8), n = 8;
    unsigned char ihdr[13];
    be32(ihdr, w), be32(ihdr + 4, h);
    ihdr[8] = 8, ihdr[9] = 0, ihdr[10] = ihdr[11] = ihdr[12] = 0;
    unsigned char row[64] = {0};
    unsigned char z[128];
    uLongf zn = sizeof z;
    compress(z, &zn, row, sizeof row);
    const struct { const char *type; const unsigned char *d; size_t n; } chunks[3] = {
        {"IHDR", ihdr, 13}, {"IDAT", z, zn}, {"IEND", NULL, 0}};
    for (int i = 0; i < 3; i++) {
        be32(b + n, (uint32_t)chunks[i].n);
        memcpy(b + n + 4, chunks[i].type, 4);
        if (chunks[i].n) memcpy(b + n + 8, chunks[i].d, chunks[i].n);
        uLong crc = crc32(0, b + n + 4, (uInt)(4 + chunks[i].n));
        be32(b + n + 8 + chunks[i].n, (uint32_t)crc);
        n += 12 + chunks[i].n;
    }
    return n;
}

TEST(bad_image_sizes_refused_before_decoding) {
    unsigned char b[512];
    char p[700];
    path_in(p, sizeof p, "bombs", "bomb.png");
    static const struct { uint32_t w, h; const char *expect; } cases[] = {
        {10000, 10000, "megapixels"},   /* 100 Mpx: over the pixel budget though each side is allowed */
        {16000, 4000, "truncated"},     /* 64 Mpx declared in a 100-byte file */
        {0x7fffffff, 1, "16384"},
        {1, 0, NULL},
    };
    for (int i = 0; i < DF_COUNTOF(cases); i++) {
        size_t n = bomb_png(b, cases[i].w, cases[i].h);
        write_all(p, b, n);
        int c, h, w;
        float *x = (float *)1;
        clock_t t0 = clock();
        df_status st = df_image_load(p, 0, &c, &h, &w, &x);
        char what[64];
        snprintf(what, sizeof what, "PNG declaring %ux%u", cases[i].w, cases[i].h);
        check_refusal(st, DF_ERR_FORMAT, p, cases[i].expect, what);
        CHECK(x == NULL, "%s: no pixels", what);
        CHECK((double)(clock() - t0) / CLOCKS_PER_SEC < 1, "%s: refused at once", what);
    }
}
