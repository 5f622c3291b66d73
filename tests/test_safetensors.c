/* safetensors tests: write/read round trips checked bit for bit and against the raw bytes, F16/BF16
 * decoding against hand-worked values, malformed files, and the golden files written by PyTorch. */
#define _POSIX_C_SOURCE 200809L
#include "safetensors.h"
#include "test.h"

#include <cjson/cJSON.h>
#include <float.h>
#include <stdint.h>
#include <string.h>

static float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static uint64_t le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static void put_le(uint8_t *p, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* A safetensors image: 8-byte length, the header text as given, `data_len` data bytes. */
static size_t make_file(uint8_t *out, size_t cap, const char *header, const uint8_t *data, size_t data_len) {
    size_t h = strlen(header);
    if (8 + h + data_len > cap) return 0;
    put_le(out, h, 8);
    memcpy(out + 8, header, h);
    if (data) memcpy(out + 8 + h, data, data_len);
    else memset(out + 8 + h, 0, data_len);
    return 8 + h + data_len;
}

static const char *tmp_path(const char *name) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", test_tmp_dir(), name);
    return path;
}

static const char *golden_path(const char *name) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", test_golden_dir(), name);
    return path;
}

TEST(safetensors_write_read_roundtrip) {
    const float w[6] = {1.0f, -0.0f, FLT_MIN / 2, INFINITY, f32_from_bits(0x7fc12345u), 3.14159274f};
    const int64_t steps[4] = {INT64_MIN, -1, 0, INT64_MAX};
    const float scalar = 42.5f, dummy = 0, esc = -7.25f;
    const int64_t uni = 123456789012345LL;
    const char *esc_name = "quote\"back\\slash\nnew\x01line";
    const char *uni_name = "\xc3\xbcn\xc3\xaf.weight";
    st_entry e[6] = {
        {"weight", 2, {2, 3}, w, NULL},  {"steps", 1, {4}, NULL, steps}, {"scalar", 0, {0}, &scalar, NULL},
        {"empty", 2, {0, 3}, &dummy, NULL}, {esc_name, 1, {1}, &esc, NULL}, {uni_name, 3, {1, 1, 1}, NULL, &uni},
    };
    const char *meta[4] = {"format", "pt", "note", "tab\there \"q\""};
    const char *path = tmp_path("roundtrip.safetensors");
    CHECK_OK(st_write(path, e, 6, meta, 2));

    /* The raw bytes, read without the library: aligned header, data in the order given, little-endian. */
    char *raw = NULL;
    size_t raw_len = 0;
    FILE *fp = fopen(path, "rb");
    CHECK(fp != NULL, "cannot open %s", path);
    if (fp) {
        raw = malloc(1 << 16);
        raw_len = fread(raw, 1, 1 << 16, fp);
        fclose(fp);
    }
    const size_t data_bytes = 24 + 32 + 4 + 0 + 4 + 8;
    if (raw && raw_len >= 8) {
        uint64_t hlen = le64((const uint8_t *)raw);
        CHECK(hlen % 8 == 0, "header length %llu is not a multiple of 8", (unsigned long long)hlen);
        CHECK(raw_len == 8 + hlen + data_bytes, "file is %zu bytes, expected %llu", raw_len,
              (unsigned long long)(8 + hlen + data_bytes));
        const uint8_t *d = (const uint8_t *)raw + 8 + hlen;
        const uint8_t one[4] = {0x00, 0x00, 0x80, 0x3f};
        const uint8_t i64min[8] = {0, 0, 0, 0, 0, 0, 0, 0x80};
        CHECK(memcmp(d, one, 4) == 0, "first data bytes are not 1.0f little-endian");
        CHECK(memcmp(d + 24, i64min, 8) == 0, "steps[0] is not INT64_MIN little-endian");
        /* The header is JSON that an independent parser reads back with the exact names. */
        cJSON *h = cJSON_ParseWithLength(raw + 8, (size_t)hlen);
        CHECK(h != NULL, "header is not JSON");
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(h, "__metadata__");
        const cJSON *note = cJSON_GetObjectItemCaseSensitive(m, "note");
        CHECK(cJSON_IsString(note) && !strcmp(note->valuestring, meta[3]), "metadata note did not round-trip");
        const cJSON *te = cJSON_GetObjectItemCaseSensitive(h, esc_name);
        const cJSON *off = cJSON_GetObjectItemCaseSensitive(te, "data_offsets");
        CHECK(cJSON_GetArraySize(off) == 2 && cJSON_GetArrayItem(off, 0)->valuedouble == 60 &&
                  cJSON_GetArrayItem(off, 1)->valuedouble == 64,
              "escaped name missing or its offsets are not [60, 64]");
        cJSON_Delete(h);
    }
    free(raw);

    st_file f;
    CHECK_OK(st_open(path, &f));
    CHECK(f.n == 6, "read %d tensors, wrote 6", f.n);
    for (int i = 1; i < f.n; i++)
        CHECK(strcmp(f.tensors[i - 1].name, f.tensors[i].name) < 0, "tensors not sorted at %d", i);
    const size_t begins[6] = {0, 24, 56, 60, 60, 64}, ends[6] = {24, 56, 60, 60, 64, 72};
    for (int i = 0; i < 6; i++) {
        const st_tensor *t = st_find(&f, e[i].name);
        CHECK(t != NULL, "tensor %d (%s) not found", i, e[i].name);
        if (!t) continue;
        CHECK(t->dtype == (e[i].f32 ? ST_F32 : ST_I64), "%s: dtype %s", e[i].name, st_dtype_name(t->dtype));
        CHECK(t->ndim == e[i].ndim, "%s: ndim %d, wrote %d", e[i].name, t->ndim, e[i].ndim);
        for (int k = 0; k < t->ndim; k++)
            CHECK(t->shape[k] == e[i].shape[k], "%s: dim %d is %lld", e[i].name, k, (long long)t->shape[k]);
        CHECK(t->begin == begins[i] && t->end == ends[i], "%s: offsets [%zu, %zu), expected [%zu, %zu)", e[i].name,
              t->begin, t->end, begins[i], ends[i]);
    }
    CHECK(st_find(&f, "__metadata__") == NULL, "metadata listed as a tensor");
    CHECK(st_find(&f, "weigh") == NULL && st_find(&f, "zzz") == NULL, "found a tensor that was never written");

    float wr[6];
    int64_t sr[4], ur = 0;
    float one_value = 0;
    const st_tensor *t = st_find(&f, "weight");
    if (t) {
        CHECK_OK(st_read_f32(&f, t, wr, 6));
        for (int i = 0; i < 6; i++)
            CHECK(bits_of(wr[i]) == bits_of(w[i]), "weight[%d] bits %08x, wrote %08x", i, bits_of(wr[i]),
                  bits_of(w[i]));
    }
    if ((t = st_find(&f, "steps"))) {
        CHECK_OK(st_read_i64(&f, t, sr, 4));
        CHECK(memcmp(sr, steps, sizeof steps) == 0, "steps differ");
    }
    if ((t = st_find(&f, "scalar"))) {
        CHECK(st_numel(t) == 1, "scalar numel %lld", (long long)st_numel(t));
        CHECK_OK(st_read_f32(&f, t, &one_value, 1));
        CHECK(one_value == 42.5f, "scalar read %g", (double)one_value);
    }
    if ((t = st_find(&f, "empty"))) {
        CHECK(st_numel(t) == 0, "empty numel %lld", (long long)st_numel(t));
        CHECK_OK(st_read_f32(&f, t, &one_value, 0));
    }
    if ((t = st_find(&f, esc_name))) {
        CHECK_OK(st_read_f32(&f, t, &one_value, 1));
        CHECK(one_value == esc, "escaped-name tensor read %g", (double)one_value);
    }
    if ((t = st_find(&f, uni_name))) {
        CHECK_OK(st_read_i64(&f, t, &ur, 1));
        CHECK(ur == uni, "unicode-name tensor read %lld", (long long)ur);
    }
    /* Wrong count and wrong dtype are refused. */
    if ((t = st_find(&f, "weight"))) CHECK(st_read_f32(&f, t, wr, 5) == DF_ERR_SHAPE, "count 5 of 6 accepted");
    if ((t = st_find(&f, "steps"))) {
        CHECK(st_read_f32(&f, t, wr, 4) == DF_ERR_FORMAT, "I64 read as float32");
        CHECK(strstr(df_error(), "steps") != NULL, "message does not name the tensor: %s", df_error());
    }
    st_close(&f);
    st_close(&f);   /* closing twice is harmless */

    /* No tensors at all is a valid file. */
    path = tmp_path("empty.safetensors");
    CHECK_OK(st_write(path, NULL, 0, NULL, 0));
    CHECK_OK(st_open(path, &f));
    CHECK(f.n == 0 && f.data_len == 0, "empty file has %d tensors, %zu data bytes", f.n, f.data_len);
    st_close(&f);
}

TEST(safetensors_half_precision_decoding) {
    /* F16 bit patterns and their exact values (IEEE binary16: bias 15, 10 mantissa bits). */
    const uint16_t h[12] = {0x3C00, 0xC000, 0x7C00, 0xFC00, 0x0001, 0x03FF,
                            0x0400, 0x7BFF, 0x8000, 0x3555, 0x7E00, 0x8001};
    const float hv[12] = {1.0f, -2.0f, INFINITY, -INFINITY, 0x1p-24f, 1023 * 0x1p-24f,
                          0x1p-14f, 65504.0f, -0.0f, 0.333251953125f, NAN, -0x1p-24f};
    /* BF16: the top 16 bits of a float32. */
    const uint16_t b[8] = {0x3F80, 0xC000, 0x7F80, 0x0001, 0x4049, 0x7FC0, 0x8000, 0x0080};
    const float bv[8] = {1.0f, -2.0f, INFINITY, 0x1p-133f, 3.140625f, NAN, -0.0f, 0x1p-126f};
    const uint16_t hint[3] = {0x3C00, 0xC000, 0x7BFF};   /* 1, -2, 65504: whole numbers */
    const double dv[2] = {0.1, -2.5};
    const int32_t iv[3] = {-7, INT32_MAX, 0};
    const uint8_t uv[2] = {0, 255}, bools[2] = {0, 1};

    uint8_t data[128];
    size_t p = 0;
    for (int i = 0; i < 12; i++, p += 2) put_le(data + p, h[i], 2);   /* [0, 24) */
    for (int i = 0; i < 8; i++, p += 2) put_le(data + p, b[i], 2);    /* [24, 40) */
    for (int i = 0; i < 3; i++, p += 2) put_le(data + p, hint[i], 2); /* [40, 46) */
    p += 2;                                                           /* a gap: allowed */
    for (int i = 0; i < 2; i++, p += 8) {                             /* [48, 64) */
        uint64_t u;
        memcpy(&u, &dv[i], 8);
        put_le(data + p, u, 8);
    }
    for (int i = 0; i < 3; i++, p += 4) put_le(data + p, (uint32_t)iv[i], 4);   /* [64, 76) */
    memcpy(data + p, uv, 2);                                                    /* [76, 78) */
    memcpy(data + p + 2, bools, 2);                                             /* [78, 80) */
    p += 4;
    const char *header =
        "{\"h\":{\"dtype\":\"F16\",\"shape\":[3,4],\"data_offsets\":[0,24]},"
        " \"b\":{\"dtype\":\"BF16\",\"shape\":[8],\"data_offsets\":[24,40]},"
        " \"hint\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[40,46]},"
        " \"d\":{\"dtype\":\"F64\",\"shape\":[2,1],\"data_offsets\":[48,64]},"
        " \"i\":{\"dtype\":\"I32\",\"shape\":[3],\"data_offsets\":[64,76]},"
        " \"u\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[76,78]},"
        " \"z\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[78,80]},"
        " \"__metadata__\":{\"format\":\"pt\"}}   ";
    uint8_t file[1024];
    size_t len = make_file(file, sizeof file, header, data, p);
    st_file f;
    CHECK_OK(st_open_memory(file, len, "halves.safetensors", &f));
    CHECK(f.n == 7, "%d tensors, expected 7", f.n);
    const st_tensor *t;
    float out[12];
    int64_t io[3];
    if ((t = st_find(&f, "h"))) {
        CHECK(t->dtype == ST_F16 && st_numel(t) == 12, "h: %s with %lld values", st_dtype_name(t->dtype),
              (long long)st_numel(t));
        CHECK_OK(st_read_f32(&f, t, out, 12));
        for (int i = 0; i < 12; i++) {
            int same = isnan(hv[i]) ? isnan(out[i]) : bits_of(out[i]) == bits_of(hv[i]);
            CHECK(same, "F16 0x%04x read as %.9g (bits %08x), expected %.9g", h[i], (double)out[i], bits_of(out[i]),
                  (double)hv[i]);
        }
        CHECK(st_read_i64(&f, t, io, 3) == DF_ERR_SHAPE, "12 values read as 3");
        int64_t big[12];
        CHECK(st_read_i64(&f, t, big, 12) == DF_ERR_FORMAT, "infinity read as an integer");
    } else {
        CHECK(0, "tensor h missing");
    }
    if ((t = st_find(&f, "b"))) {
        CHECK_OK(st_read_f32(&f, t, out, 8));
        for (int i = 0; i < 8; i++) {
            int same = isnan(bv[i]) ? isnan(out[i]) : bits_of(out[i]) == bits_of(bv[i]);
            CHECK(same, "BF16 0x%04x read as %.9g, expected %.9g", b[i], (double)out[i], (double)bv[i]);
        }
    } else {
        CHECK(0, "tensor b missing");
    }
    if ((t = st_find(&f, "hint"))) {
        CHECK_OK(st_read_i64(&f, t, io, 3));
        CHECK(io[0] == 1 && io[1] == -2 && io[2] == 65504, "F16 integers read as %lld %lld %lld", (long long)io[0],
              (long long)io[1], (long long)io[2]);
    }
    if ((t = st_find(&f, "d"))) {
        CHECK_OK(st_read_f32(&f, t, out, 2));
        CHECK(out[0] == (float)0.1 && out[1] == -2.5f, "F64 read as %.9g %.9g", (double)out[0], (double)out[1]);
        CHECK(st_read_i64(&f, t, io, 2) == DF_ERR_FORMAT, "0.1 read as an integer");
    }
    if ((t = st_find(&f, "i"))) {
        CHECK_OK(st_read_i64(&f, t, io, 3));
        CHECK(io[0] == -7 && io[1] == INT32_MAX && io[2] == 0, "I32 read as %lld %lld %lld", (long long)io[0],
              (long long)io[1], (long long)io[2]);
        CHECK(st_read_f32(&f, t, out, 3) == DF_ERR_FORMAT, "I32 read as float32");
    }
    if ((t = st_find(&f, "u"))) {
        CHECK_OK(st_read_i64(&f, t, io, 2));
        CHECK(io[0] == 0 && io[1] == 255, "U8 read as %lld %lld", (long long)io[0], (long long)io[1]);
    }
    if ((t = st_find(&f, "z"))) {
        CHECK_OK(st_read_i64(&f, t, io, 2));
        CHECK(io[0] == 0 && io[1] == 1, "BOOL read as %lld %lld", (long long)io[0], (long long)io[1]);
    }
    st_close(&f);
}

typedef struct {
    const char *label;    /* also the file name given to the reader, which must appear in the message */
    const char *header;   /* NULL: the raw bytes are built by hand below */
    size_t      data_len;
    const char *expect;   /* another text the message must hold (a tensor name), or NULL */
} bad_file;

static const bad_file bad_files[] = {
    {"bad-json", "{\"a\":", 0, NULL},
    {"empty-header", "", 0, NULL},
    {"not-object", "[1,2]", 0, NULL},
    {"text-after-json", "{} x", 0, NULL},
    {"control-byte", "{\"a\x01\":{}}", 0, NULL},
    {"entry-not-object", "{\"w.num\":1}", 0, "w.num"},
    {"missing-dtype", "{\"w.nodtype\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "w.nodtype"},
    {"missing-offsets", "{\"w.nooff\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "w.nooff"},
    {"unknown-key", "{\"w.extra\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4, "w.extra"},
    {"unknown-dtype", "{\"w.f8\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "F8_E4M3"},
    {"dtype-not-string", "{\"w.dt\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "w.dt"},
    {"shape-not-list", "{\"w.sh\":{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,16]}}", 16, "w.sh"},
    {"negative-shape", "{\"w.neg\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 0, "w.neg"},
    {"fractional-shape", "{\"w.frac\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "w.frac"},
    {"string-shape", "{\"w.str\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, "w.str"},
    {"too-many-dims", "{\"w.dims\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
     "w.dims"},
    {"three-offsets", "{\"w.off3\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, "w.off3"},
    {"negative-offset", "{\"w.offneg\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, "w.offneg"},
    {"reversed-offsets", "{\"w.rev\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, "w.rev"},
    {"offsets-past-end", "{\"w.past\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "w.past"},
    {"size-mismatch", "{\"w.size\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 8, "w.size"},
    {"overflow-numel",
     "{\"w.huge\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4611686018427387904],\"data_offsets\":[0,0]}}",
     0, "w.huge\": shape too large"},
    {"overflow-bytes",
     "{\"w.bytes\":{\"dtype\":\"F32\",\"shape\":[2305843009213693952,4],\"data_offsets\":[0,0]}}", 0,
     "w.bytes\": shape too large"},
    {"overlap",
     "{\"w.a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"w.b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
     12, "w.b"},
    {"overlap-inside",
     "{\"w.outer\":{\"dtype\":\"U8\",\"shape\":[16],\"data_offsets\":[0,16]},"
     "\"w.inner\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[8,10]},"
     "\"w.later\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[12,14]}}",
     16, "w.outer"},
    {"duplicate-name",
     "{\"w.dup\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"w.dup\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
     8, "w.dup"},
    {"metadata-not-object", "{\"__metadata__\":\"x\"}", 0, "__metadata__"},
    {"metadata-not-strings", "{\"__metadata__\":{\"epoch\":1}}", 0, "epoch"},
    {"metadata-twice", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, "__metadata__"},
    {"empty", NULL, 0, NULL},
    {"seven-bytes", NULL, 0, NULL},
    {"header-past-end", NULL, 0, NULL},
    {"header-one-past-end", NULL, 0, NULL},
    {"header-over-100mb", NULL, 0, NULL},
    {"header-length-max", NULL, 0, NULL},
    {"truncated-data", NULL, 0, "w.cut"},
};

TEST(safetensors_malformed_files) {
    static uint8_t file[4096];
    for (int i = 0; i < DF_COUNTOF(bad_files); i++) {
        const bad_file *b = &bad_files[i];
        size_t len = 0;
        if (b->header) {
            len = make_file(file, sizeof file, b->header, NULL, b->data_len);
        } else if (!strcmp(b->label, "empty")) {
            len = 0;
        } else if (!strcmp(b->label, "seven-bytes")) {
            len = 7;
            memset(file, 0, 7);
        } else if (!strcmp(b->label, "header-past-end")) {
            len = make_file(file, sizeof file, "{}      ", NULL, 0);
            put_le(file, 100, 8);
        } else if (!strcmp(b->label, "header-one-past-end")) {
            len = make_file(file, sizeof file, "{}      ", NULL, 0);
            put_le(file, len - 8 + 1, 8);
        } else if (!strcmp(b->label, "header-over-100mb")) {
            len = make_file(file, sizeof file, "{}      ", NULL, 0);
            put_le(file, (uint64_t)200 << 20, 8);
        } else if (!strcmp(b->label, "header-length-max")) {
            len = make_file(file, sizeof file, "{}      ", NULL, 0);
            put_le(file, UINT64_MAX, 8);
        } else if (!strcmp(b->label, "truncated-data")) {
            len = make_file(file, sizeof file, "{\"w.cut\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
                            NULL, 16);
            len -= 3;
        }
        char name[96];
        snprintf(name, sizeof name, "%s.safetensors", b->label);
        st_file f;
        memset(&f, 0x5a, sizeof f);   /* must come back empty */
        df_status s = st_open_memory(file, len, name, &f);
        CHECK(s == DF_ERR_FORMAT, "%s: status %s (expected format error), message: %s", b->label, df_status_name(s),
              df_error());
        CHECK(strstr(df_error(), name) != NULL, "%s: message does not name the file: %s", b->label, df_error());
        CHECK(!b->expect || strstr(df_error(), b->expect), "%s: message does not mention \"%s\": %s", b->label,
              b->expect, df_error());
        CHECK(strchr(df_error(), '\n') == NULL, "%s: message is not one line", b->label);
        CHECK(f.n == 0 && f.tensors == NULL && f.file == NULL && f.path == NULL, "%s: st_file not left empty",
              b->label);
        if (s == DF_OK) st_close(&f);
    }
    /* Control cases from the same builder: a good header, and an empty tensor whose offset lies inside
     * another tensor (no bytes overlap), are accepted. */
    size_t len = make_file(file, sizeof file, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", NULL,
                           8);
    st_file f;
    CHECK_OK(st_open_memory(file, len, "good.safetensors", &f));
    st_close(&f);
    len = make_file(file, sizeof file,
                    "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"z\":{\"dtype\":\"U8\",\"shape\":[0,5],\"data_offsets\":[4,4]}}",
                    NULL, 8);
    CHECK_OK(st_open_memory(file, len, "empty-inside.safetensors", &f));
    CHECK(f.n == 2, "empty-inside: %d tensors", f.n);
    st_close(&f);

    df_status s = st_open(tmp_path("does-not-exist.safetensors"), &f);
    CHECK(s == DF_ERR_IO, "missing file gives %s", df_status_name(s));
    CHECK(strstr(df_error(), "does-not-exist.safetensors") != NULL, "message does not name the file: %s", df_error());
}

TEST(safetensors_write_refuses_bad_entries) {
    const float v[2] = {1, 2};
    const int64_t iv[2] = {1, 2};
    const char *path = tmp_path("refused.safetensors");
    st_entry dup[2] = {{"a", 1, {2}, v, NULL}, {"a", 1, {2}, v, NULL}};
    CHECK(st_write(path, dup, 2, NULL, 0) == DF_ERR_ARG, "duplicate names written");
    CHECK(strstr(df_error(), "\"a\"") != NULL, "message does not name the tensor: %s", df_error());
    st_entry both = {"both", 1, {2}, v, iv};
    CHECK(st_write(path, &both, 1, NULL, 0) == DF_ERR_ARG, "tensor with two data pointers written");
    st_entry none = {"none", 1, {2}, NULL, NULL};
    CHECK(st_write(path, &none, 1, NULL, 0) == DF_ERR_ARG, "tensor without data written");
    st_entry neg = {"neg", 1, {-2}, v, NULL};
    CHECK(st_write(path, &neg, 1, NULL, 0) == DF_ERR_ARG, "negative shape written");
    st_entry dims = {"dims", ST_MAX_DIMS + 1, {1}, v, NULL};
    CHECK(st_write(path, &dims, 1, NULL, 0) == DF_ERR_ARG, "too many dimensions written");
    st_entry meta_name = {"__metadata__", 1, {2}, v, NULL};
    CHECK(st_write(path, &meta_name, 1, NULL, 0) == DF_ERR_ARG, "tensor named __metadata__ written");
    const char *meta[4] = {"k", "1", "k", "2"};
    st_entry ok = {"ok", 1, {2}, v, NULL};
    CHECK(st_write(path, &ok, 1, meta, 2) == DF_ERR_ARG, "duplicate metadata keys written");
    FILE *fp = fopen(path, "rb");
    CHECK(fp == NULL, "a refused write left %s behind", path);
    if (fp) fclose(fp);
    CHECK(st_write(tmp_path("no-such-dir/x.safetensors"), &ok, 1, NULL, 0) == DF_ERR_IO,
          "write into a missing directory did not fail with an io error");
}

TEST(safetensors_golden_model) {
    st_file f;
    df_status s = st_open(golden_path("fmnist-s/model.safetensors"), &f);
    CHECK_OK(s);
    if (s != DF_OK) return;
    CHECK(f.n == 270, "%d tensors, expected 270", f.n);
    int64_t total = 0;
    int all_f32 = 1;
    for (int i = 0; i < f.n; i++) {
        total += st_numel(&f.tensors[i]);
        all_f32 &= f.tensors[i].dtype == ST_F32;
    }
    CHECK(total == 3939393, "%lld values, expected 3,939,393", (long long)total);
    CHECK(all_f32, "not every tensor is F32");
    const st_tensor *t = st_find(&f, "conv_in.weight");
    CHECK(t && t->ndim == 4 && t->shape[0] == 32 && t->shape[1] == 1 && t->shape[2] == 3 && t->shape[3] == 3,
          "conv_in.weight missing or not [32, 1, 3, 3]");
    t = st_find(&f, "time_embedding.linear_1.weight");
    CHECK(t && t->ndim == 2 && t->shape[0] == 128 && t->shape[1] == 32,
          "time_embedding.linear_1.weight missing or not [128, 32]");
    CHECK(st_find(&f, "mid_block.attentions.0.to_q.weight") != NULL, "mid-block attention missing");
    CHECK(st_find(&f, "class_embedding.weight") == NULL, "unconditional model has a class embedding");

    /* Every stored weight is a multiple of 2^-8 (how the golden weights were made). */
    float *all = malloc((size_t)total * sizeof *all);
    size_t at = 0, bad = 0;
    for (int i = 0; all && i < f.n; i++) {
        size_t n = (size_t)st_numel(&f.tensors[i]);
        CHECK_OK(st_read_f32(&f, &f.tensors[i], all + at, n));
        at += n;
    }
    for (size_t i = 0; all && i < at; i++) {
        double v = (double)all[i] * 256;
        if (!isfinite(v) || v != nearbyint(v)) bad++;
    }
    CHECK(all && bad == 0, "%zu values are not multiples of 2^-8", bad);

    /* Writing the tensors again in their stored order reproduces the data section byte for byte. */
    const st_tensor **order = malloc((size_t)f.n * sizeof *order);
    st_entry *e = calloc((size_t)f.n, sizeof *e);
    size_t *start = calloc((size_t)f.n, sizeof *start);
    CHECK(all && order && e && start, "out of memory");
    if (all && order && e && start) {
        size_t off = 0;
        for (int i = 0; i < f.n; i++) {
            start[i] = off;
            off += (size_t)st_numel(&f.tensors[i]);
        }
        for (int i = 0; i < f.n; i++) order[i] = &f.tensors[i];
        for (int i = 1; i < f.n; i++)   /* insertion sort by offset: the stored order */
            for (int k = i; k > 0 && order[k - 1]->begin > order[k]->begin; k--) {
                const st_tensor *x = order[k];
                order[k] = order[k - 1];
                order[k - 1] = x;
            }
        for (int i = 0; i < f.n; i++) {
            const st_tensor *x = order[i];
            e[i].name = x->name;
            e[i].ndim = x->ndim;
            for (int k = 0; k < x->ndim; k++) e[i].shape[k] = x->shape[k];
            e[i].f32 = all + start[x - f.tensors];
        }
        const char *meta[2] = {"format", "pt"};
        const char *path = tmp_path("model-rewritten.safetensors");
        CHECK_OK(st_write(path, e, f.n, meta, 1));
        st_file g;
        if (st_open(path, &g) == DF_OK) {
            CHECK(g.n == f.n, "rewritten file has %d tensors", g.n);
            CHECK(g.data_len == f.data_len && memcmp(g.data, f.data, f.data_len) == 0,
                  "rewritten data section differs from the original (%zu vs %zu bytes)", g.data_len, f.data_len);
            for (int i = 0; i < g.n && i < f.n; i++)
                CHECK(!strcmp(g.tensors[i].name, f.tensors[i].name) && g.tensors[i].begin == f.tensors[i].begin &&
                          g.tensors[i].end == f.tensors[i].end,
                      "tensor %d (%s) moved", i, f.tensors[i].name);
            st_close(&g);
        } else {
            CHECK(0, "cannot reopen the rewritten file: %s", df_error());
        }
    }
    free(start);
    free(order);
    free(e);
    free(all);
    st_close(&f);
}

TEST(safetensors_golden_io) {
    st_file f;
    df_status s = st_open(golden_path("fmnist-s/io.safetensors"), &f);
    CHECK_OK(s);
    if (s != DF_OK) return;
    CHECK(f.n == 40, "%d tensors, expected 40", f.n);
    const st_tensor *t = st_find(&f, "t");
    CHECK(t && t->dtype == ST_I64 && t->ndim == 1 && t->shape[0] == 2, "t missing or not I64 [2]");
    int64_t steps[2] = {0, 0};
    if (t) CHECK_OK(st_read_i64(&f, t, steps, 2));
    CHECK(steps[0] == 10 && steps[1] == 900, "t = {%lld, %lld}, expected {10, 900}", (long long)steps[0],
          (long long)steps[1]);
    t = st_find(&f, "alphas_cumprod");
    CHECK(t && t->dtype == ST_F32 && st_numel(t) == 1000, "alphas_cumprod missing or not F32 [1000]");
    if (t) {
        float a[1000];
        CHECK_OK(st_read_f32(&f, t, a, 1000));
        /* alphas_cumprod[0] = 1 - beta_0 in float32, beta_0 = float32(1e-4). */
        CHECK(a[0] == 1.0f - 1e-4f, "alphas_cumprod[0] = %.9g, expected %.9g", (double)a[0], (double)(1.0f - 1e-4f));
        CHECK(a[999] > 0 && a[999] < 1e-4f, "alphas_cumprod[999] = %.9g", (double)a[999]);
    }
    t = st_find(&f, "x");
    CHECK(t && t->ndim == 4 && t->shape[0] == 2 && t->shape[1] == 1 && t->shape[2] == 28 && t->shape[3] == 28,
          "x missing or not [2, 1, 28, 28]");
    if (t) {
        float x[2 * 28 * 28];
        size_t bad = 0;
        CHECK_OK(st_read_f32(&f, t, x, 2 * 28 * 28));
        for (int i = 0; i < 2 * 28 * 28; i++)
            if ((double)x[i] * 1024 != nearbyint((double)x[i] * 1024)) bad++;
        CHECK(bad == 0, "%zu inputs are not multiples of 2^-10", bad);
    }
    st_close(&f);

    s = st_open(golden_path("fmnist-s/cond/class_embedding.safetensors"), &f);
    CHECK_OK(s);
    if (s != DF_OK) return;
    t = st_find(&f, "class_embedding.weight");
    CHECK(f.n == 1 && t && t->ndim == 2 && t->shape[0] == 10 && t->shape[1] == 128,
          "class_embedding.weight missing or not [10, 128]");
    st_close(&f);
}
