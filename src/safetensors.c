/* safetensors: a reader that validates the whole header before handing out any tensor, converts
 * F16/BF16/F64 to float32 and integers to int64, and a writer with exact little-endian data offsets. */
#define _POSIX_C_SOURCE 200809L
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>

/* A header larger than this is refused before it is parsed (the reference implementation's limit). */
#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)
/* Tensors the writer accepts: byte offsets stay integers that a JSON number (an IEEE double) holds
 * exactly. */
#define ST_MAX_EXACT 9007199254740992.0   /* 2^53 */

static const char *const dtype_names[] = {"F32", "F16", "BF16", "F64", "I64", "I32", "U8", "BOOL"};
static const size_t dtype_sizes[] = {4, 2, 2, 8, 8, 4, 1, 1};
_Static_assert(sizeof dtype_names / sizeof dtype_names[0] == ST_DTYPE_COUNT, "dtype name table");
_Static_assert(sizeof dtype_sizes / sizeof dtype_sizes[0] == ST_DTYPE_COUNT, "dtype size table");

const char *st_dtype_name(st_dtype d) { return (unsigned)d < ST_DTYPE_COUNT ? dtype_names[d] : "?"; }

size_t st_dtype_size(st_dtype d) { return (unsigned)d < ST_DTYPE_COUNT ? dtype_sizes[d] : 0; }

int64_t st_numel(const st_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

/* ---- little-endian words and half-precision floats --------------------------------------------- */

static uint16_t load_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static uint32_t load_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t load_u64(const uint8_t *p) { return (uint64_t)load_u32(p) | (uint64_t)load_u32(p + 4) << 32; }

static void store_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void store_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static float bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static double bits_to_f64(uint64_t u) {
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

/* IEEE binary16 (1 sign, 5 exponent, 10 mantissa bits, bias 15) to binary32 (bias 127), exactly. */
static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);                /* inf, or nan with its payload */
    } else if (exp != 0) {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);    /* normal */
    } else if (mant == 0) {
        bits = sign;                                              /* +-0 */
    } else {
        /* subnormal: mant * 2^-24. Shift the leading 1 up to bit 10; each shift halves the exponent. */
        uint32_t shift = 0;
        while (!(mant & 0x400)) {
            mant <<= 1;
            shift++;
        }
        bits = sign | ((127 - 14 - shift) << 23) | ((mant & 0x3ff) << 13);
    }
    return bits_to_f32(bits);
}

/* bfloat16 is the top half of a binary32. */
static float bf16_to_f32(uint16_t b) { return bits_to_f32((uint32_t)b << 16); }

/* ---- reading -------------------------------------------------------------------------------------- */

static char *dup_string(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

void st_close(st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) free(f->tensors[i].name);
    free(f->tensors);
    free(f->file);
    free(f->path);
    memset(f, 0, sizeof *f);
}

/* A JSON number that is a whole count below 2^64 (shapes past 2^53 are left to the overflow checks). */
static int json_count(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return 0;
    double v = j->valuedouble;
    if (!(v >= 0 && v < 18446744073709551616.0)) return 0;
    uint64_t u = (uint64_t)v;
    if ((double)u != v) return 0;
    *out = u;
    return 1;
}

static df_status parse_metadata(const char *path, const cJSON *meta) {
    if (!cJSON_IsObject(meta))
        return df_fail(DF_ERR_FORMAT, "%s: \"__metadata__\" is not a JSON object", path);
    for (const cJSON *m = meta->child; m; m = m->next)
        if (!cJSON_IsString(m))
            return df_fail(DF_ERR_FORMAT, "%s: \"__metadata__\" entry \"%s\" is not a string", path, m->string);
    return DF_OK;
}

/* Fill `t` from one header entry {"dtype": ..., "shape": [...], "data_offsets": [begin, end]}. */
static df_status parse_entry(const char *path, const cJSON *e, size_t data_len, st_tensor *t) {
    const char *name = e->string;
    if (!cJSON_IsObject(e)) return df_fail(DF_ERR_FORMAT, "%s: tensor \"%s\": entry is not a JSON object", path, name);
    const cJSON *dtype = NULL, *shape = NULL, *offsets = NULL;
    for (const cJSON *k = e->child; k; k = k->next) {
        const cJSON **slot = !strcmp(k->string, "dtype")          ? &dtype
                             : !strcmp(k->string, "shape")        ? &shape
                             : !strcmp(k->string, "data_offsets") ? &offsets
                                                                  : NULL;
        if (!slot) return df_fail(DF_ERR_FORMAT, "%s: tensor \"%s\": unknown key \"%s\"", path, name, k->string);
        if (*slot) return df_fail(DF_ERR_FORMAT, "%s: tensor \"%s\": key \"%s\" appears twice", path, name, k->string);
        *slot = k;
    }
    if (!dtype || !shape || !offsets)
        return df_fail(DF_ERR_FORMAT, "%s: tensor \"%s\": missing \"%s\"", path, name,
                       !dtype ? "dtype" : !shape ? "shape" : "data_offsets");

    if (!cJSON_IsString(dtype)) return df_fail(DF_ERR_FORMAT, "%s: tensor \"%s\": dtype is not a string", path, name);
    int d = 0;
    while (d < ST_DTYPE_COUNT && strcmp(dtype->valuestring, dtype_names[d])) d++;
    if (d == ST_DTYPE_COUNT)
        return df_fail(DF_ERR_FORMAT, "%s: tensor \"%s\": unsupported dtype \"%.32s\"", path, name, dtype->valuestring);
    t->dtype = (st_dtype)d;

    if (!cJSON_IsArray(shape))
        return df_fail(DF_ERR_FORMAT, "%s: tensor \"%s\": shape is not a list", path, name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > ST_MAX_DIMS)
        return df_fail(DF_ERR_FORMAT, "%s: tensor \"%s\": %d dimensions (at most %d supported)", path, name, ndim,
                       ST_MAX_DIMS);
    t->ndim = ndim;
    int has_zero = 0, i = 0;
    for (const cJSON *s = shape->child; s; s = s->next, i++) {
        uint64_t v;
        if (!json_count(s, &v))
            return df_fail(DF_ERR_FORMAT, "%s: tensor \"%s\": shape entry %d is not a non-negative integer", path,
                           name, i);
        t->shape[i] = (int64_t)v;
        has_zero |= v == 0;
    }

    /* Byte size = numel * dtype size, refusing any product that does not fit in 64 bits. */
    uint64_t numel = 1;
    if (has_zero) {
        numel = 0;
    } else {
        for (i = 0; i < ndim; i++) {
            uint64_t dim = (uint64_t)t->shape[i];
            if (numel > UINT64_MAX / dim)
                return df_fail(DF_ERR_FORMAT, "%s: tensor \"%s\": shape too large (element count overflows)", path,
                               name);
            numel *= dim;
        }
    }
    size_t esize = dtype_sizes[d];
    if (numel > UINT64_MAX / esize)
        return df_fail(DF_ERR_FORMAT, "%s: tensor \"%s\": shape too large (byte size overflows)", path, name);
    uint64_t bytes = numel * esize;

    uint64_t begin, end;
    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2 || !json_count(offsets->child, &begin) ||
        !json_count(offsets->child->next, &end))
        return df_fail(DF_ERR_FORMAT, "%s: tensor \"%s\": data_offsets is not a list of two non-negative integers",
                       path, name);
    if (begin > end)
        return df_fail(DF_ERR_FORMAT,
                       "%s: tensor \"%s\": data_offsets [%" PRIu64 ", %" PRIu64 "] ends before it begins", path,
                       name, begin, end);
    if (end > data_len)
        return df_fail(DF_ERR_FORMAT,
                       "%s: tensor \"%s\": data_offsets end %" PRIu64 " is past the data section (%zu bytes)", path,
                       name, end, data_len);
    if (end - begin != bytes)
        return df_fail(DF_ERR_FORMAT,
                       "%s: tensor \"%s\": data_offsets span %" PRIu64 " bytes but %s with %" PRIu64
                       " values needs %" PRIu64,
                       path, name, end - begin, dtype_names[d], numel, bytes);
    t->begin = (size_t)begin;
    t->end = (size_t)end;
    return DF_OK;
}

static int cmp_by_name(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

static int cmp_by_offset(const void *a, const void *b) {
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return (x->end > y->end) - (x->end < y->end);
}

/* Tensors are sorted by name: equal neighbours are duplicates. Then, in offset order, every non-empty
 * tensor must start at or after the end of all earlier ones. */
static df_status check_names_and_overlap(st_file *f) {
    qsort(f->tensors, (size_t)f->n, sizeof *f->tensors, cmp_by_name);
    for (int i = 1; i < f->n; i++)
        if (!strcmp(f->tensors[i - 1].name, f->tensors[i].name))
            return df_fail(DF_ERR_FORMAT, "%s: duplicate tensor name \"%s\"", f->path, f->tensors[i].name);
    if (f->n < 2) return DF_OK;
    const st_tensor **order = malloc((size_t)f->n * sizeof *order);
    if (!order) return df_fail(DF_ERR_NOMEM, "%s: out of memory", f->path);
    for (int i = 0; i < f->n; i++) order[i] = &f->tensors[i];
    qsort(order, (size_t)f->n, sizeof *order, cmp_by_offset);
    df_status s = DF_OK;
    const st_tensor *last = NULL;   /* the non-empty tensor reaching furthest so far */
    for (int i = 0; i < f->n && s == DF_OK; i++) {
        const st_tensor *t = order[i];
        if (t->begin == t->end) continue;
        if (last && t->begin < last->end)
            s = df_fail(DF_ERR_FORMAT, "%s: tensors \"%s\" [%zu, %zu) and \"%s\" [%zu, %zu) overlap", f->path,
                        last->name, last->begin, last->end, t->name, t->begin, t->end);
        if (!last || t->end > last->end) last = t;
    }
    free(order);
    return s;
}

/* Parse and check the header of f->file (f->path set); fills everything else in f. */
static df_status parse_file(st_file *f) {
    const char *path = f->path;
    if (f->file_len < 8)
        return df_fail(DF_ERR_FORMAT, "%s: too short for a safetensors file (%zu bytes, need at least 8)", path,
                       f->file_len);
    uint64_t hlen = load_u64(f->file);
    if (hlen > ST_MAX_HEADER)
        return df_fail(DF_ERR_FORMAT, "%s: header length %" PRIu64 " is over the %" PRIu64 "-byte limit", path, hlen,
                       ST_MAX_HEADER);
    if (hlen > f->file_len - 8)
        return df_fail(DF_ERR_FORMAT, "%s: header length %" PRIu64 " runs past the end of the file (%zu bytes)",
                       path, hlen, f->file_len);
    f->data = f->file + 8 + hlen;
    f->data_len = f->file_len - 8 - (size_t)hlen;

    /* JSON forbids raw control bytes inside strings and cJSON would cut a name at a NUL: refuse them. */
    const char *text = (const char *)f->file + 8;
    for (size_t i = 0; i < hlen; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
            return df_fail(DF_ERR_FORMAT, "%s: header holds control byte 0x%02x at offset %zu", path, c, i);
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, (size_t)hlen, &end, 0);
    if (!root)
        return df_fail(DF_ERR_FORMAT, "%s: header is not valid JSON (error near byte %td)", path,
                       end ? end - text : (ptrdiff_t)0);
    df_status s = DF_OK;
    for (const char *p = end; p < text + hlen && s == DF_OK; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            s = df_fail(DF_ERR_FORMAT, "%s: header has data after the JSON object (byte %td)", path, p - text);
    if (s == DF_OK && !cJSON_IsObject(root)) s = df_fail(DF_ERR_FORMAT, "%s: header is not a JSON object", path);
    if (s != DF_OK) {
        cJSON_Delete(root);
        return s;
    }

    int count = 0, seen_meta = 0;
    for (const cJSON *e = root->child; e; e = e->next) count++;
    f->tensors = calloc((size_t)(count ? count : 1), sizeof *f->tensors);
    if (!f->tensors) s = df_fail(DF_ERR_NOMEM, "%s: out of memory for %d tensors", path, count);
    for (const cJSON *e = root->child; e && s == DF_OK; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) {
            s = seen_meta++ ? df_fail(DF_ERR_FORMAT, "%s: \"__metadata__\" appears twice", path)
                            : parse_metadata(path, e);
            continue;
        }
        st_tensor *t = &f->tensors[f->n];
        s = parse_entry(path, e, f->data_len, t);
        if (s == DF_OK) {
            t->name = dup_string(e->string);
            if (!t->name) s = df_fail(DF_ERR_NOMEM, "%s: out of memory", path);
            else f->n++;
        }
    }
    cJSON_Delete(root);
    if (s == DF_OK) s = check_names_and_overlap(f);
    return s;
}

/* Takes ownership of `buf` (freed on failure too). */
static df_status open_buffer(uint8_t *buf, size_t len, const char *name, st_file *f) {
    st_file g;
    memset(&g, 0, sizeof g);
    g.file = buf;
    g.file_len = len;
    g.path = dup_string(name);
    if (!g.path) {
        free(buf);
        return df_fail(DF_ERR_NOMEM, "%s: out of memory", name);
    }
    df_status s = parse_file(&g);
    if (s != DF_OK) {
        st_close(&g);
        return s;
    }
    *f = g;
    return DF_OK;
}

df_status st_open(const char *path, st_file *f) {
    memset(f, 0, sizeof *f);
    char *buf;
    size_t len;
    df_status s = df_read_file(path, &buf, &len);
    if (s != DF_OK) return s;
    return open_buffer((uint8_t *)buf, len, path, f);
}

df_status st_open_memory(const void *buf, size_t len, const char *name, st_file *f) {
    memset(f, 0, sizeof *f);
    if (!buf && len) return df_fail(DF_ERR_ARG, "%s: NULL buffer", name);
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy) return df_fail(DF_ERR_NOMEM, "%s: out of memory copying %zu bytes", name, len);
    if (len) memcpy(copy, buf, len);
    return open_buffer(copy, len, name, f);
}

const st_tensor *st_find(const st_file *f, const char *name) {
    int lo = 0, hi = f ? f->n : 0;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(f->tensors[mid].name, name);
        if (c == 0) return &f->tensors[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

static df_status check_count(const st_file *f, const st_tensor *t, size_t count) {
    DF_ASSERT(t->begin <= t->end && t->end <= f->data_len);
    int64_t n = st_numel(t);
    if ((uint64_t)n != (uint64_t)count)
        return df_fail(DF_ERR_SHAPE, "%s: tensor \"%s\" has %" PRId64 " values, expected %zu", f->path, t->name, n,
                       count);
    return DF_OK;
}

df_status st_read_f32(const st_file *f, const st_tensor *t, float *dst, size_t count) {
    df_status s = check_count(f, t, count);
    if (s != DF_OK) return s;
    const uint8_t *p = f->data + t->begin;
    switch (t->dtype) {
    case ST_F32:
        for (size_t i = 0; i < count; i++) dst[i] = bits_to_f32(load_u32(p + 4 * i));
        return DF_OK;
    case ST_F16:
        for (size_t i = 0; i < count; i++) dst[i] = f16_to_f32(load_u16(p + 2 * i));
        return DF_OK;
    case ST_BF16:
        for (size_t i = 0; i < count; i++) dst[i] = bf16_to_f32(load_u16(p + 2 * i));
        return DF_OK;
    case ST_F64:
        for (size_t i = 0; i < count; i++) dst[i] = (float)bits_to_f64(load_u64(p + 8 * i));
        return DF_OK;
    default:
        return df_fail(DF_ERR_FORMAT, "%s: tensor \"%s\" is %s and cannot be read as float32", f->path, t->name,
                       st_dtype_name(t->dtype));
    }
}

df_status st_read_i64(const st_file *f, const st_tensor *t, int64_t *dst, size_t count) {
    df_status s = check_count(f, t, count);
    if (s != DF_OK) return s;
    const uint8_t *p = f->data + t->begin;
    switch (t->dtype) {
    case ST_I64:
        for (size_t i = 0; i < count; i++) dst[i] = (int64_t)load_u64(p + 8 * i);
        return DF_OK;
    case ST_I32:
        for (size_t i = 0; i < count; i++) dst[i] = (int32_t)load_u32(p + 4 * i);
        return DF_OK;
    case ST_U8:
        for (size_t i = 0; i < count; i++) dst[i] = p[i];
        return DF_OK;
    case ST_BOOL:
        for (size_t i = 0; i < count; i++) dst[i] = p[i] != 0;
        return DF_OK;
    default:
        break;
    }
    /* Floats: only whole values in int64 range (2^63 is the first double past it). */
    for (size_t i = 0; i < count; i++) {
        double v = t->dtype == ST_F64   ? bits_to_f64(load_u64(p + 8 * i))
                   : t->dtype == ST_F32 ? (double)bits_to_f32(load_u32(p + 4 * i))
                   : t->dtype == ST_F16 ? (double)f16_to_f32(load_u16(p + 2 * i))
                                        : (double)bf16_to_f32(load_u16(p + 2 * i));
        if (!(v >= -9223372036854775808.0 && v < 9223372036854775808.0) || (double)(int64_t)v != v)
            return df_fail(DF_ERR_FORMAT, "%s: tensor \"%s\": value %zu (%g) is not an integer", f->path, t->name, i,
                           v);
        dst[i] = (int64_t)v;
    }
    return DF_OK;
}

/* ---- writing -------------------------------------------------------------------------------------- */

/* A growing text buffer; `oom` sticks once an allocation fails. */
typedef struct {
    char  *p;
    size_t len, cap;
    int    oom;
} text_buf;

static void tb_put(text_buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void tb_puts(text_buf *b, const char *s) { tb_put(b, s, strlen(s)); }

static void tb_printf(text_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tb_printf(text_buf *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    DF_ASSERT(n >= 0 && n < (int)sizeof tmp);
    tb_put(b, tmp, (size_t)n);
}

/* A JSON string literal: quotes, backslashes and control bytes escaped; other bytes (UTF-8) as is. */
static void tb_json_string(text_buf *b, const char *s) {
    tb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            tb_put(b, esc, 2);
        } else if (c < 0x20) {
            tb_printf(b, "\\u%04x", c);
        } else {
            tb_put(b, (const char *)&c, 1);
        }
    }
    tb_put(b, "\"", 1);
}

static int names_cmp(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Check the entries; on success sizes[i] holds each tensor's byte size and *total their sum. */
static df_status check_entries(const char *path, const st_entry *e, int n, const char *const *meta, int nmeta,
                               uint64_t *sizes, uint64_t *total) {
    *total = 0;
    for (int i = 0; i < n; i++) {
        const char *name = e[i].name;
        if (!name || !strcmp(name, "__metadata__"))
            return df_fail(DF_ERR_ARG, "%s: tensor %d has an invalid name \"%s\"", path, i, name ? name : "(null)");
        if ((e[i].f32 != NULL) == (e[i].i64 != NULL))
            return df_fail(DF_ERR_ARG, "%s: tensor \"%s\": give exactly one of f32 and i64 data", path, name);
        if (e[i].ndim < 0 || e[i].ndim > ST_MAX_DIMS)
            return df_fail(DF_ERR_ARG, "%s: tensor \"%s\": %d dimensions (0 to %d supported)", path, name, e[i].ndim,
                           ST_MAX_DIMS);
        uint64_t numel = 1;
        for (int k = 0; k < e[i].ndim; k++) {
            int64_t d = e[i].shape[k];
            if (d < 0 || (double)d > ST_MAX_EXACT)
                return df_fail(DF_ERR_ARG, "%s: tensor \"%s\": invalid dimension %" PRId64, path, name, d);
            if (d && numel > UINT64_MAX / (uint64_t)d)
                return df_fail(DF_ERR_ARG, "%s: tensor \"%s\": shape too large", path, name);
            numel *= (uint64_t)d;
        }
        if (numel > (uint64_t)(ST_MAX_EXACT / 8) || *total + numel * 8 > (uint64_t)ST_MAX_EXACT)
            return df_fail(DF_ERR_ARG, "%s: tensor \"%s\": too large to write", path, name);
        sizes[i] = numel * (e[i].f32 ? 4 : 8);
        *total += sizes[i];
    }
    df_status s = DF_OK;
    if (n > 1) {
        const char **names = malloc((size_t)n * sizeof *names);
        if (!names) return df_fail(DF_ERR_NOMEM, "%s: out of memory", path);
        for (int i = 0; i < n; i++) names[i] = e[i].name;
        qsort(names, (size_t)n, sizeof *names, names_cmp);
        for (int i = 1; i < n && s == DF_OK; i++)
            if (!strcmp(names[i - 1], names[i]))
                s = df_fail(DF_ERR_ARG, "%s: duplicate tensor name \"%s\"", path, names[i]);
        free(names);
    }
    for (int i = 0; i < nmeta && s == DF_OK; i++) {
        if (!meta[2 * i] || !meta[2 * i + 1])
            return df_fail(DF_ERR_ARG, "%s: metadata pair %d has a NULL key or value", path, i);
        for (int k = 0; k < i; k++)
            if (!strcmp(meta[2 * k], meta[2 * i]))
                return df_fail(DF_ERR_ARG, "%s: duplicate metadata key \"%s\"", path, meta[2 * i]);
    }
    return s;
}

df_status st_write(const char *path, const st_entry *e, int n, const char *const *meta, int nmeta) {
    if (n < 0 || (n > 0 && !e) || nmeta < 0 || (nmeta > 0 && !meta))
        return df_fail(DF_ERR_ARG, "%s: invalid tensor or metadata list", path);
    uint64_t *sizes = malloc((size_t)(n ? n : 1) * sizeof *sizes), total;
    if (!sizes) return df_fail(DF_ERR_NOMEM, "%s: out of memory", path);
    df_status s = check_entries(path, e, n, meta, nmeta, sizes, &total);
    if (s != DF_OK) {
        free(sizes);
        return s;
    }

    /* Header: {"__metadata__": {...}, "name": {"dtype", "shape", "data_offsets"}, ...}, data in order. */
    text_buf h = {0};
    tb_puts(&h, "{");
    if (nmeta > 0) {
        tb_puts(&h, "\"__metadata__\":{");
        for (int i = 0; i < nmeta; i++) {
            if (i) tb_puts(&h, ",");
            tb_json_string(&h, meta[2 * i]);
            tb_puts(&h, ":");
            tb_json_string(&h, meta[2 * i + 1]);
        }
        tb_puts(&h, "}");
    }
    uint64_t offset = 0;
    for (int i = 0; i < n; i++) {
        if (i || nmeta > 0) tb_puts(&h, ",");
        tb_json_string(&h, e[i].name);
        tb_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", e[i].f32 ? "F32" : "I64");
        for (int k = 0; k < e[i].ndim; k++) tb_printf(&h, "%s%" PRId64, k ? "," : "", e[i].shape[k]);
        tb_printf(&h, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", offset, offset + sizes[i]);
        offset += sizes[i];
    }
    tb_puts(&h, "}");
    while (!h.oom && h.len % 8) tb_puts(&h, " ");   /* data starts 8-byte aligned */
    if (h.oom) s = df_fail(DF_ERR_NOMEM, "%s: out of memory building the header", path);
    else if (h.len > ST_MAX_HEADER) s = df_fail(DF_ERR_ARG, "%s: header of %zu bytes is too large", path, h.len);

    uint8_t *out = NULL;
    size_t out_len = 8 + h.len + (size_t)total;
    if (s == DF_OK && !(out = malloc(out_len)))
        s = df_fail(DF_ERR_NOMEM, "%s: out of memory for %zu bytes", path, out_len);
    if (s == DF_OK) {
        store_u64(out, (uint64_t)h.len);
        memcpy(out + 8, h.p, h.len);
        uint8_t *p = out + 8 + h.len;
        for (int i = 0; i < n; i++) {
            size_t count = (size_t)sizes[i] / (e[i].f32 ? 4 : 8);
            if (e[i].f32) {
                for (size_t k = 0; k < count; k++, p += 4) {
                    uint32_t u;
                    memcpy(&u, &e[i].f32[k], 4);
                    store_u32(p, u);
                }
            } else {
                for (size_t k = 0; k < count; k++, p += 8) store_u64(p, (uint64_t)e[i].i64[k]);
            }
        }
        DF_ASSERT(p == out + out_len);
        s = df_write_file_atomic(path, out, out_len);
    }
    free(out);
    free(h.p);
    free(sizes);
    return s;
}
