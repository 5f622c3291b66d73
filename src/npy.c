/* NumPy .npy image arrays: a validating reader (uint8 0..255, float32/float64 in [0, 1]; NPY 1.0, 2.0, 3.0)
 * that parses the header's Python dict by hand, and the uint8 (N, H, W, C) writer `diffuse sample` uses. */
#define _POSIX_C_SOURCE 200809L
#include "npy.h"
#include "internal.h"

#include <stdint.h>
#include <string.h>

/* Format (numpy/lib/format.py): "\x93NUMPY", major, minor, the header length (2 bytes little-endian in
 * 1.0, 4 bytes in 2.0 and 3.0), then the header: a Python dict literal
 *     {'descr': '<f4', 'fortran_order': False, 'shape': (2, 28, 28), }
 * padded with spaces and ended by a newline (latin-1 in 1.0/2.0, UTF-8 in 3.0), then the raw data. */
static const char npy_magic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

#define NPY_MAX_DIMS 64   /* NumPy's own limit (NPY_MAXDIMS in NumPy 2) */
#define EXPECTED "expected uint8 images or float32/float64 in [0, 1]"

/* ---- writing --------------------------------------------------------------------------------------- */

df_status df_npy_encode_images(const char *name, const float *x, int n, int c, int h, int w, unsigned char **buf,
                               size_t *len) {
    *buf = NULL, *len = 0;
    if (!x || n < 1 || n > DF_NPY_MAX_IMAGES || c < 1 || c > DF_MAX_CHANNELS || h < 1 || h > DF_MAX_SIZE || w < 1 ||
        w > DF_MAX_SIZE)
        return df_fail(DF_ERR_ARG, "%s: cannot write %d images of %d x %d x %d as .npy", name, n, c, h, w);
    char header[160];
    int hl = snprintf(header, sizeof header, "{'descr': '|u1', 'fortran_order': False, 'shape': (%d, %d, %d, %d), }",
                      n, h, w, c);
    /* NPY 1.0; the preamble, header and its newline padded to a multiple of 64 bytes, as NumPy does so
     * the data is aligned for memory mapping */
    int total = 10 + hl + 1, padded = (total + 63) / 64 * 64;
    size_t data = (size_t)n * h * w * c;   /* at most 10^7 * 4096^2 * 8192: fits 64 bits */
    unsigned char *b = malloc((size_t)padded + data);
    if (!b) return df_fail(DF_ERR_NOMEM, "%s: out of memory for %d images", name, n);
    memcpy(b, npy_magic, 6);
    b[6] = 1, b[7] = 0;
    b[8] = (unsigned char)((padded - 10) & 255), b[9] = (unsigned char)((padded - 10) >> 8);
    memcpy(b + 10, header, (size_t)hl);
    memset(b + 10 + hl, ' ', (size_t)(padded - 10 - hl));
    b[padded - 1] = '\n';
    unsigned char *d = b + padded;
    for (int i = 0; i < n; i++)   /* (N, C, H, W) -> (N, H, W, C) */
        for (int y = 0; y < h; y++)
            for (int xx = 0; xx < w; xx++)
                for (int ch = 0; ch < c; ch++) {
                    float v = (x[(((size_t)i * c + ch) * h + y) * w + xx] + 1) * 127.5f + 0.5f;
                    /* !(v >= 0) also sends NaN to 0: converting NaN to an integer is undefined */
                    *d++ = (unsigned char)(!(v >= 0) ? 0 : v > 255 ? 255 : v);
                }
    *buf = b, *len = (size_t)padded + data;
    return DF_OK;
}

df_status df_npy_save_images(const char *path, const float *x, int n, int c, int h, int w) {
    unsigned char *b;
    size_t len;
    df_status st = df_npy_encode_images(path, x, n, c, h, w, &b, &len);
    if (st) return st;
    st = df_write_file_atomic(path, b, len);
    free(b);
    return st;
}

/* ---- the header dict --------------------------------------------------------------------------------- */

typedef struct {
    const char *descr;   /* points into the header; not NUL-terminated */
    int         descr_len;
    int         fortran;
    int         ndim;
    uint64_t    dims[NPY_MAX_DIMS];   /* saturated at UINT64_MAX */
    int         have_descr, have_fortran, have_shape;
} npy_header;

typedef struct {
    const char *name;
    const char *s, *p, *end;   /* header text, cursor, its end */
} cursor;

static void skip_ws(cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

/* A syntax error: what was expected, where, and what was there instead. */
static df_status syntax(cursor *c, const char *what) {
    char found[32];
    if (c->p >= c->end) snprintf(found, sizeof found, "the end of the header");
    else if (*c->p >= 0x20 && *c->p < 0x7f) snprintf(found, sizeof found, "'%c'", *c->p);
    else snprintf(found, sizeof found, "byte 0x%02x", (unsigned char)*c->p);
    return df_fail(DF_ERR_FORMAT, "%s: bad .npy header: expected %s at byte %d of the header, found %s", c->name,
                   what, (int)(c->p - c->s), found);
}

/* A Python string literal in single or double quotes, without escapes (NumPy never writes any). */
static df_status parse_string(cursor *c, const char **str, int *len) {
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return syntax(c, "a quoted string");
    char q = *c->p++;
    const char *start = c->p;
    while (c->p < c->end && *c->p != q) {
        if (*c->p == '\\' || *c->p == '\n') return syntax(c, "a string without escapes or newlines");
        c->p++;
    }
    if (c->p >= c->end) return syntax(c, "the string's closing quote");
    *str = start, *len = (int)(c->p - start);
    c->p++;
    return DF_OK;
}

static int take_word(cursor *c, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0) return 0;
    c->p += n;
    return 1;
}

/* Text from the file for a message: at most 40 characters, anything but printable ASCII as '?'. */
static const char *shown(const char *s, int len, char out[48]) {
    int k = 0;
    for (; k < len && k < 40; k++) out[k] = s[k] >= 0x20 && s[k] < 0x7f ? s[k] : '?';
    if (k < len) memcpy(out + k, "...", 3), k += 3;
    out[k] = 0;
    return out;
}

/* A tuple of sizes: (), (5,), (2, 28, 28) or (2, 28, 28,); Python 2's longs (5L) too. */
static df_status parse_shape(cursor *c, npy_header *hd) {
    if (c->p >= c->end || *c->p != '(') return syntax(c, "a tuple '(' for the shape");
    c->p++;
    hd->ndim = 0;
    for (;;) {
        skip_ws(c);
        if (c->p < c->end && *c->p == ')') break;
        if (c->p >= c->end || *c->p < '0' || *c->p > '9') return syntax(c, "a size (a non-negative integer) or ')'");
        if (hd->ndim == NPY_MAX_DIMS)
            return df_fail(DF_ERR_FORMAT, "%s: the shape has more than %d dimensions", c->name, NPY_MAX_DIMS);
        uint64_t v = 0;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            unsigned digit = (unsigned)(*c->p++ - '0');
            v = v > (UINT64_MAX - digit) / 10 ? UINT64_MAX : v * 10 + digit;
        }
        if (c->p < c->end && (*c->p == 'L' || *c->p == 'l')) c->p++;
        hd->dims[hd->ndim++] = v;
        skip_ws(c);
        if (c->p < c->end && *c->p == ',') c->p++;
        else if (c->p < c->end && *c->p == ')') break;
        else return syntax(c, "',' or ')' in the shape");
    }
    c->p++;
    return DF_OK;
}

static df_status parse_header(const char *name, const char *text, size_t len, npy_header *hd) {
    memset(hd, 0, sizeof *hd);
    cursor cur = {name, text, text, text + len}, *c = &cur;
    df_status st;
    skip_ws(c);
    if (c->p >= c->end || *c->p != '{') return syntax(c, "a Python dict '{'");
    c->p++;
    for (;;) {
        skip_ws(c);
        if (c->p < c->end && *c->p == '}') break;
        const char *key;
        int klen;
        if ((st = parse_string(c, &key, &klen))) return st;
        skip_ws(c);
        if (c->p >= c->end || *c->p != ':') return syntax(c, "':' after a key");
        c->p++;
        skip_ws(c);
        int *seen;
        if (klen == 5 && memcmp(key, "descr", 5) == 0) {
            seen = &hd->have_descr;
            if (c->p < c->end && *c->p == '[')
                return df_fail(DF_ERR_FORMAT, "%s: a structured dtype (a list of fields): " EXPECTED, name);
            if ((st = parse_string(c, &hd->descr, &hd->descr_len))) return st;
        } else if (klen == 13 && memcmp(key, "fortran_order", 13) == 0) {
            seen = &hd->have_fortran;
            if (take_word(c, "True")) hd->fortran = 1;
            else if (take_word(c, "False")) hd->fortran = 0;
            else return syntax(c, "True or False for 'fortran_order'");
        } else if (klen == 5 && memcmp(key, "shape", 5) == 0) {
            seen = &hd->have_shape;
            if ((st = parse_shape(c, hd))) return st;
        } else {
            char buf[48];
            return df_fail(DF_ERR_FORMAT, "%s: unexpected key '%s' in the .npy header (NumPy writes 'descr', "
                           "'fortran_order' and 'shape')", name, shown(key, klen, buf));
        }
        if (*seen) return df_fail(DF_ERR_FORMAT, "%s: the .npy header gives '%.*s' twice", name, klen, key);
        *seen = 1;
        skip_ws(c);
        if (c->p < c->end && *c->p == ',') c->p++;
        else if (c->p < c->end && *c->p == '}') break;
        else return syntax(c, "',' or '}' in the dict");
    }
    c->p++;
    skip_ws(c);
    if (c->p != c->end) return syntax(c, "only padding after the dict's '}'");
    const char *missing = !hd->have_descr ? "descr" : !hd->have_fortran ? "fortran_order" : !hd->have_shape ? "shape" : NULL;
    if (missing) return df_fail(DF_ERR_FORMAT, "%s: the .npy header has no '%s'", name, missing);
    return DF_OK;
}

/* ---- dtypes ---------------------------------------------------------------------------------------- */

typedef enum { NPY_U8, NPY_F32, NPY_F64 } npy_dtype;

/* NumPy's name for a descr such as '<i8' (its byte order character aside), or NULL. */
static const char *dtype_name(const char *d, int len) {
    static const struct { const char *code, *name; } names[] = {
        {"b1", "bool"},        {"?", "bool"},          {"i1", "int8"},       {"i2", "int16"},    {"i4", "int32"},
        {"i8", "int64"},       {"u1", "uint8"},        {"u2", "uint16"},     {"u4", "uint32"},   {"u8", "uint64"},
        {"f2", "float16"},     {"f4", "float32"},      {"f8", "float64"},    {"f12", "longdouble"},
        {"f16", "longdouble"}, {"c8", "complex64"},    {"c16", "complex128"}, {"c32", "clongdouble"},
        {"O", "object"},       {"O8", "object"},       {"U", "str"},         {"S", "bytes"},     {"a", "bytes"},
        {"V", "void"},         {"M8", "datetime64"},   {"m8", "timedelta64"},
    };
    if (len > 0 && d[0] && strchr("<>|=", d[0])) d++, len--;
    for (int i = 0; i < DF_COUNTOF(names); i++) {
        int n = (int)strlen(names[i].code);
        if (len == n && memcmp(d, names[i].code, (size_t)n) == 0) return names[i].name;
        /* strings carry a length ('<U12', 'S5'), dates a unit ('<M8[ns]') */
        if (len <= n || memcmp(d, names[i].code, (size_t)n) != 0) continue;
        int digits = n;   /* d is not NUL-terminated: count within len */
        while (digits < len && d[digits] >= '0' && d[digits] <= '9') digits++;
        if (strchr("USaV", names[i].code[0]) && digits == len) return names[i].name;
        if (strchr("Mm", names[i].code[0]) && d[n] == '[' && d[len - 1] == ']') return names[i].name;
    }
    return NULL;
}

static df_status parse_dtype(const char *name, const npy_header *hd, npy_dtype *dt, size_t *size) {
    const char *d = hd->descr;
    int len = hd->descr_len;
    char order = len > 0 && d[0] && strchr("<>|=", d[0]) ? d[0] : 0;
    const char *code = order ? d + 1 : d;
    int clen = order ? len - 1 : len;
    if (clen == 2 && memcmp(code, "u1", 2) == 0) {   /* one byte: any byte order means the same */
        *dt = NPY_U8, *size = 1;
        return DF_OK;
    }
    if (clen == 2 && (memcmp(code, "f4", 2) == 0 || memcmp(code, "f8", 2) == 0)) {
        const char *what = code[1] == '4' ? "float32" : "float64";
        if (order == '>')
            return df_fail(DF_ERR_FORMAT, "%s: dtype '%.*s' is big-endian %s: store it little-endian (a.astype('<%.2s'))",
                           name, len, d, what, code);
        if (order != '<')
            return df_fail(DF_ERR_FORMAT, "%s: dtype '%.*s' (%s) does not say its byte order: expected '<%.2s'", name,
                           len, d, what, code);
        *dt = code[1] == '4' ? NPY_F32 : NPY_F64, *size = code[1] == '4' ? 4 : 8;
        return DF_OK;
    }
    const char *dn = dtype_name(d, len);
    char text[48];
    if (dn) return df_fail(DF_ERR_FORMAT, "%s: dtype '%s' (%s): " EXPECTED, name, shown(d, len, text), dn);
    return df_fail(DF_ERR_FORMAT, "%s: dtype '%s': " EXPECTED, name, shown(d, len, text));
}

/* "(2, 28, 28)" for messages, at most the first 8 sizes. */
static void shape_text(const npy_header *hd, char *out, size_t cap) {
    size_t k = (size_t)snprintf(out, cap, "(");
    for (int i = 0; i < hd->ndim && i < 8 && k < cap; i++)
        k += (size_t)snprintf(out + k, cap - k, "%s%llu", i ? ", " : "", (unsigned long long)hd->dims[i]);
    if (k < cap) k += (size_t)snprintf(out + k, cap - k, "%s%s)", hd->ndim > 8 ? ", ..." : "", hd->ndim == 1 ? "," : "");
}

/* ---- reading --------------------------------------------------------------------------------------- */

static double read_value(const unsigned char *p, npy_dtype dt) {
    if (dt == NPY_U8) return p[0];
    if (dt == NPY_F32) {   /* little-endian whatever the host */
        uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    uint64_t u = 0;
    for (int i = 7; i >= 0; i--) u = u << 8 | p[i];
    double v;
    memcpy(&v, &u, 8);
    return v;
}

df_status df_npy_load_images_memory(const void *buf, size_t len, const char *name, float **x, int *n, int *c, int *h,
                                    int *w) {
    *x = NULL, *n = *c = *h = *w = 0;
    if (!name) name = "(npy data)";
    const unsigned char *b = buf;
    if (len == 0) return df_fail(DF_ERR_FORMAT, "%s: empty file, not a NumPy .npy array", name);
    if (memcmp(b, npy_magic, DF_MIN(len, sizeof npy_magic)) != 0)
        return df_fail(DF_ERR_FORMAT, "%s: not a NumPy .npy file (bad magic; expected \\x93NUMPY)", name);
    if (len < 8) return df_fail(DF_ERR_FORMAT, "%s: truncated header (%zu bytes)", name, len);
    int major = b[6], minor = b[7];
    if ((major != 1 && major != 2 && major != 3) || minor != 0)
        return df_fail(DF_ERR_FORMAT, "%s: .npy format version %d.%d is not supported (1.0, 2.0 and 3.0 are)", name,
                       major, minor);
    size_t pre = major == 1 ? 10 : 12;   /* magic, version, header length */
    if (len < pre) return df_fail(DF_ERR_FORMAT, "%s: truncated header (%zu bytes)", name, len);
    size_t hlen = (size_t)b[8] | (size_t)b[9] << 8;
    if (major > 1) hlen |= (size_t)b[10] << 16 | (size_t)b[11] << 24;
    if (hlen > len - pre)
        return df_fail(DF_ERR_FORMAT, "%s: truncated header: %zu bytes announced, %zu in the file", name, hlen,
                       len - pre);

    npy_header hd;
    df_status st = parse_header(name, (const char *)b + pre, hlen, &hd);
    if (st) return st;
    npy_dtype dt = NPY_U8;
    size_t isz = 1;
    if ((st = parse_dtype(name, &hd, &dt, &isz))) return st;
    char shape[200];
    shape_text(&hd, shape, sizeof shape);
    if (hd.fortran)
        return df_fail(DF_ERR_FORMAT, "%s: fortran_order is True: store it C-ordered (np.ascontiguousarray)", name);
    if (hd.ndim != 3 && hd.ndim != 4)
        return df_fail(DF_ERR_FORMAT, "%s: shape %s: expected images (N, H, W) or (N, H, W, C)", name, shape);
    uint64_t N = hd.dims[0], H = hd.dims[1], W = hd.dims[2], C = hd.ndim == 4 ? hd.dims[3] : 1;
    if (C != 1 && C != 3)
        return df_fail(DF_ERR_FORMAT, "%s: shape %s has %llu channels: expected 1 (gray) or 3 (RGB) last%s", name,
                       shape, (unsigned long long)C, C == 4 ? " (drop alpha: a[..., :3])" : "");
    if (N == 0) return df_fail(DF_ERR_FORMAT, "%s: shape %s holds no images", name, shape);
    if (H == 0 || W == 0) return df_fail(DF_ERR_FORMAT, "%s: shape %s: empty images", name, shape);
    if (N > DF_NPY_MAX_IMAGES)
        return df_fail(DF_ERR_FORMAT, "%s: shape %s: too many images (at most %d)", name, shape, DF_NPY_MAX_IMAGES);
    if (H > DF_MAX_SIZE || W > DF_MAX_SIZE)
        return df_fail(DF_ERR_FORMAT, "%s: shape %s: images too large (at most %d pixels a side)", name, shape,
                       DF_MAX_SIZE);
    /* within the limits N * H * W * C * 8 < 2^62: no overflow */
    uint64_t count = N * H * W * C, need = count * isz, have = len - pre - hlen;
    if (have < need)
        return df_fail(DF_ERR_FORMAT, "%s: truncated data: shape %s needs %llu bytes, the file has %llu", name, shape,
                       (unsigned long long)need, (unsigned long long)have);
    if (have > need)
        return df_fail(DF_ERR_FORMAT, "%s: %llu bytes after the data of shape %s (%llu bytes): not one array", name,
                       (unsigned long long)(have - need), shape, (unsigned long long)need);
    if (count > SIZE_MAX / sizeof(float)) return df_fail(DF_ERR_NOMEM, "%s: out of memory for shape %s", name, shape);
    float *out = malloc((size_t)count * sizeof(float));
    if (!out) return df_fail(DF_ERR_NOMEM, "%s: out of memory for shape %s", name, shape);

    const unsigned char *d = b + pre + hlen;
    size_t plane = (size_t)H * W;
    for (size_t i = 0, k = 0; i < N; i++)   /* (N, H, W, C) -> (N, C, H, W) */
        for (size_t p = 0; p < plane; p++)
            for (size_t ch = 0; ch < C; ch++, k++) {
                double v = read_value(d + k * isz, dt);
                if (dt != NPY_U8 && !(v >= 0 && v <= 1)) {
                    size_t y = p / W, xx = p % W;
                    char at[96];
                    if (hd.ndim == 4) snprintf(at, sizeof at, "(%zu, %zu, %zu, %zu)", i, y, xx, ch);
                    else snprintf(at, sizeof at, "(%zu, %zu, %zu)", i, y, xx);
                    free(out);
                    return df_fail(DF_ERR_FORMAT, "%s: values must be in [0, 1]: found %.9g at index %s", name, v, at);
                }
                /* u8: 2 * (v / 255) - 1, as the PNG loader maps 8-bit samples */
                out[(i * C + ch) * plane + p] = (float)(dt == NPY_U8 ? 2 * (v / 255.0) - 1 : 2 * v - 1);
            }
    *x = out, *n = (int)N, *c = (int)C, *h = (int)H, *w = (int)W;
    return DF_OK;
}

df_status df_npy_load_images(const char *path, float **x, int *n, int *c, int *h, int *w) {
    *x = NULL, *n = *c = *h = *w = 0;
    char *data;
    size_t len;
    df_status st = df_read_file(path, &data, &len);
    if (st) return st;
    st = df_npy_load_images_memory(data, len, path, x, n, c, h, w);
    free(data);
    return st;
}
