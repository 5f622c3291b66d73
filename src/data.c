/* Data sets in memory: MNIST-format IDX files (Fashion-MNIST by default), CIFAR-10 binary batches and
 * folders of PNG/JPEG images (with captions from metadata.jsonl or a .txt beside each image), stored as
 * 8-bit (N, C, H, W) with optional labels, class names and captions, and a report of what loading found
 * (counts, images converted to fit, unreadable images skipped). */
#define _DEFAULT_SOURCE
#include "internal.h"

#include <cjson/cJSON.h>
#include <nettle/sha2.h>

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define MAX_CLASSES 1000

struct df_dataset {
    int      n, c, h, w;
    uint8_t *pixels;        /* n * c * h * w */
    int     *labels;        /* n, or NULL */
    int      num_classes;
    char   **class_names;   /* num_classes entries, each may be NULL */
    char     desc[256];
    df_dataset_report report;   /* what loading found; counts and shape filled in when it ends */
    char   **captions;      /* every caption, image by image */
    int     *cap_first;     /* n + 1: image i's captions are captions[cap_first[i] .. cap_first[i + 1]) */
};

static const char *const fashion_names[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                              "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

void df_dataset_free(df_dataset *d) {
    if (!d) return;
    free(d->pixels);
    free(d->labels);
    if (d->class_names)
        for (int i = 0; i < d->num_classes; i++) free(d->class_names[i]);
    free(d->class_names);
    if (d->cap_first)
        for (int i = 0; i < d->cap_first[d->n]; i++) free(d->captions[i]);
    free(d->captions), free(d->cap_first);
    free(d);
}

int df_dataset_num_captions(const df_dataset *d, int i) {
    return d->cap_first && i >= 0 && i < d->n ? d->cap_first[i + 1] - d->cap_first[i] : 0;
}
const char *df_dataset_caption(const df_dataset *d, int i, int k) {
    return k >= 0 && k < df_dataset_num_captions(d, i) ? d->captions[d->cap_first[i] + k] : NULL;
}

int df_dataset_count(const df_dataset *d) { return d->n; }
void df_dataset_shape(const df_dataset *d, int *c, int *h, int *w) {
    if (c) *c = d->c;
    if (h) *h = d->h;
    if (w) *w = d->w;
}
int df_dataset_num_classes(const df_dataset *d) { return d->num_classes; }
int df_dataset_label(const df_dataset *d, int i) { return d->labels ? d->labels[i] : -1; }
const char *df_dataset_class_name(const df_dataset *d, int k) {
    return d->class_names && k >= 0 && k < d->num_classes ? d->class_names[k] : NULL;
}
const char *df_dataset_description(const df_dataset *d) { return d->desc; }
const df_dataset_report *df_dataset_get_report(const df_dataset *d) { return &d->report; }

void df_dataset_params_default(df_dataset_params *p) { memset(p, 0, sizeof *p); }

void df_dataset_get(const df_dataset *d, int i, int flip, float *x) {
    const size_t hw = (size_t)d->h * d->w;
    const uint8_t *p = d->pixels + (size_t)i * d->c * hw;
    for (int ch = 0; ch < d->c; ch++)
        for (int y = 0; y < d->h; y++)
            for (int xx = 0; xx < d->w; xx++) {
                int sx = flip ? d->w - 1 - xx : xx;
                x[ch * hw + (size_t)y * d->w + xx] = p[ch * hw + (size_t)y * d->w + sx] * (2.0f / 255.0f) - 1.0f;
            }
}

static df_dataset *dataset_new(void) {
    df_dataset *d = calloc(1, sizeof *d);
    if (!d) df_fail(DF_ERR_NOMEM, "out of memory");
    return d;
}

static df_status set_class_names(df_dataset *d, int k, const char *const *names) {
    d->num_classes = k;
    d->class_names = calloc((size_t)k, sizeof(char *));
    if (!d->class_names) return df_fail(DF_ERR_NOMEM, "out of memory");
    for (int i = 0; i < k && names; i++)
        if (names[i] && !(d->class_names[i] = strdup(names[i]))) return df_fail(DF_ERR_NOMEM, "out of memory");
    return DF_OK;
}

/* ---- IDX (MNIST format) --------------------------------------------------------------------------------- */

/* Read a whole (possibly gzipped) file; zlib reads plain files through the same calls. */
static df_status read_gz(const char *path, uint8_t **data, size_t *len) {
    *data = NULL;
    *len = 0;
    gzFile f = gzopen(path, "rb");
    if (!f) return df_fail(DF_ERR_IO, "%s: cannot open: %s", path, strerror(errno ? errno : ENOENT));
    size_t cap = 1 << 20, n = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            gzclose(f);
            return df_fail(DF_ERR_NOMEM, "%s: out of memory", path);
        }
        if (n == cap) {
            if (cap > ((size_t)1 << 34)) {
                free(buf);
                gzclose(f);
                return df_fail(DF_ERR_FORMAT, "%s: larger than 16 GB", path);
            }
            uint8_t *nb = realloc(buf, cap * 2);
            if (!nb) free(buf);
            buf = nb;
            cap *= 2;
            continue;
        }
        int got = gzread(f, buf + n, (unsigned)DF_MIN(cap - n, (size_t)1 << 30));
        if (got < 0) {
            int err;
            const char *msg = gzerror(f, &err);
            df_status st = df_fail(DF_ERR_FORMAT, "%s: corrupt compressed data: %s", path, msg);
            free(buf);
            gzclose(f);
            return st;
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    gzclose(f);
    *data = buf;
    *len = n;
    return DF_OK;
}

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

/* Parse an IDX header of unsigned bytes with `ndim` dimensions; returns the data offset. */
static df_status idx_header(const char *path, const uint8_t *b, size_t len, int ndim, uint32_t *dims) {
    if (len < 4) return df_fail(DF_ERR_FORMAT, "%s: too short for an IDX header", path);
    if (b[0] || b[1]) return df_fail(DF_ERR_FORMAT, "%s: not an IDX file (bad magic)", path);
    if (b[2] != 0x08) return df_fail(DF_ERR_FORMAT, "%s: IDX type 0x%02x is not unsigned bytes", path, b[2]);
    if (b[3] != ndim)
        return df_fail(DF_ERR_FORMAT, "%s: IDX file has %d dimensions, expected %d", path, b[3], ndim);
    if (len < 4 + 4 * (size_t)ndim) return df_fail(DF_ERR_FORMAT, "%s: too short for an IDX header", path);
    uint64_t total = 1;
    for (int i = 0; i < ndim; i++) {
        dims[i] = be32(b + 4 + 4 * i);
        if (dims[i] == 0 || dims[i] > (1u << 28))
            return df_fail(DF_ERR_FORMAT, "%s: dimension %d is %u", path, i, dims[i]);
        total *= dims[i];
        if (total > ((uint64_t)1 << 36)) return df_fail(DF_ERR_FORMAT, "%s: too large", path);
    }
    size_t need = 4 + 4 * (size_t)ndim + (size_t)total;
    if (len < need) return df_fail(DF_ERR_FORMAT, "%s: truncated: %zu bytes, the header says %zu", path, len, need);
    return DF_OK;
}

/* "...images-idx3-ubyte[.gz]" -> "...labels-idx1-ubyte[.gz]" */
static int labels_path_for(const char *images, char *out, size_t cap) {
    const char *at = strstr(images, "images-idx3-ubyte");
    if (!at) return 0;
    snprintf(out, cap, "%.*slabels-idx1-ubyte%s", (int)(at - images), images, at + strlen("images-idx3-ubyte"));
    struct stat st;
    return stat(out, &st) == 0;
}

static df_status open_idx(const char *path, df_dataset **out) {
    uint8_t *b;
    size_t len;
    df_status st = read_gz(path, &b, &len);
    if (st) return st;
    uint32_t dims[3];
    if ((st = idx_header(path, b, len, 3, dims))) {
        free(b);
        return st;
    }
    df_dataset *d = dataset_new();
    if (!d) {
        free(b);
        return DF_ERR_NOMEM;
    }
    d->n = (int)dims[0], d->c = 1, d->h = (int)dims[1], d->w = (int)dims[2];
    size_t total = (size_t)d->n * d->h * d->w;
    d->pixels = malloc(total);
    if (!d->pixels) {
        free(b);
        df_dataset_free(d);
        return df_fail(DF_ERR_NOMEM, "%s: out of memory", path);
    }
    memcpy(d->pixels, b + 16, total);
    free(b);
    char lp[4096];
    if (labels_path_for(path, lp, sizeof lp)) {
        uint32_t ld[1] = {0};
        if ((st = read_gz(lp, &b, &len)) || (st = idx_header(lp, b, len, 1, ld))) {
            free(b);
            df_dataset_free(d);
            return st;
        }
        if ((int)ld[0] != d->n) {
            st = df_fail(DF_ERR_FORMAT, "%s: %u labels for %s's %d images", lp, ld[0], path, d->n);
            free(b);
            df_dataset_free(d);
            return st;
        }
        d->labels = malloc(sizeof(int) * (size_t)d->n);
        int maxl = 0;
        for (int i = 0; d->labels && i < d->n; i++) maxl = DF_MAX(maxl, d->labels[i] = b[8 + i]);
        free(b);
        if (!d->labels) {
            df_dataset_free(d);
            return df_fail(DF_ERR_NOMEM, "out of memory");
        }
        if ((st = set_class_names(d, maxl + 1, NULL))) {
            df_dataset_free(d);
            return st;
        }
    }
    snprintf(d->desc, sizeof d->desc, "%s: %d images of %dx%d%s", path, d->n, d->h, d->w,
             d->labels ? ", labelled" : "");
    *out = d;
    return DF_OK;
}

/* ---- CIFAR-10 binary batches ------------------------------------------------------------------------- */

enum { CIFAR_REC = 1 + 3 * 32 * 32 };

static df_status cifar_append(df_dataset *d, const char *path) {
    uint8_t *b;
    size_t len;
    df_status st = df_read_file(path, (char **)&b, &len);
    if (st) return st;
    if (len == 0 || len % CIFAR_REC) {
        free(b);
        return df_fail(DF_ERR_FORMAT, "%s: %zu bytes is not a whole number of CIFAR-10 records (%d bytes each)",
                       path, len, CIFAR_REC);
    }
    int add = (int)(len / CIFAR_REC);
    uint8_t *np = realloc(d->pixels, (size_t)(d->n + add) * 3 * 32 * 32);
    if (np) d->pixels = np;
    int *nl = np ? realloc(d->labels, sizeof(int) * (size_t)(d->n + add)) : NULL;
    if (nl) d->labels = nl;
    if (!np || !nl) {
        free(b);
        return df_fail(DF_ERR_NOMEM, "%s: out of memory", path);
    }
    for (int i = 0; i < add; i++) {
        const uint8_t *r = b + (size_t)i * CIFAR_REC;
        if (r[0] > 9) {
            st = df_fail(DF_ERR_FORMAT, "%s: record %d has label %d (CIFAR-10 labels are 0..9)", path, i, r[0]);
            free(b);
            return st;
        }
        d->labels[d->n + i] = r[0];
        memcpy(d->pixels + (size_t)(d->n + i) * 3072, r + 1, 3072);
    }
    d->n += add;
    free(b);
    return DF_OK;
}

static void cifar_names(df_dataset *d, const char *dir) {
    static const char *const def[10] = {"airplane", "automobile", "bird", "cat", "deer",
                                        "dog",      "frog",       "horse", "ship", "truck"};
    char path[4200], line[256];
    snprintf(path, sizeof path, "%s/batches.meta.txt", dir);
    if (set_class_names(d, 10, def)) return;
    FILE *f = fopen(path, "r");
    if (!f) return;
    for (int k = 0; k < 10 && fgets(line, sizeof line, f);) {
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0]) continue;
        for (char *c = line; *c; c++)   /* names end up in messages and pictures: printable only */
            if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = '?';
        char *s = strdup(line);
        if (s) {
            free(d->class_names[k]);
            d->class_names[k] = s;
        }
        k++;
    }
    fclose(f);
}

static int has_suffix(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcasecmp(s + a - b, suf) == 0;
}

static df_status open_cifar(const char *path, df_dataset **out) {
    df_dataset *d = dataset_new();
    if (!d) return DF_ERR_NOMEM;
    d->c = 3, d->h = 32, d->w = 32;
    df_status st = DF_OK;
    char dir[4096];
    if (df_is_dir(path)) {
        snprintf(dir, sizeof dir, "%s", path);
        for (int i = 1; i <= 5 && !st; i++) {
            char f[4200];
            snprintf(f, sizeof f, "%s/data_batch_%d.bin", path, i);
            struct stat sb;
            if (stat(f, &sb) == 0) st = cifar_append(d, f);
        }
        if (!st && d->n == 0) st = df_fail(DF_ERR_IO, "%s: no data_batch_*.bin files", path);
    } else {
        const char *slash = strrchr(path, '/');
        snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
        st = cifar_append(d, path);
    }
    if (st) {
        df_dataset_free(d);
        return st;
    }
    cifar_names(d, dir);
    snprintf(d->desc, sizeof d->desc, "CIFAR-10 %s: %d images of 32x32x3, 10 classes", path, d->n);
    *out = d;
    return DF_OK;
}

/* ---- image folders ------------------------------------------------------------------------------------- */

typedef struct {
    char **paths;
    int   *labels;
    int    n, cap;
} file_list;

static int list_add(file_list *l, const char *path, int label) {
    if (l->n == l->cap) {
        int c = l->cap ? 2 * l->cap : 256;
        char **np = realloc(l->paths, sizeof(char *) * (size_t)c);
        if (!np) return -1;
        l->paths = np;
        int *nl = realloc(l->labels, sizeof(int) * (size_t)c);
        if (!nl) return -1;
        l->labels = nl;
        l->cap = c;
    }
    if (!(l->paths[l->n] = strdup(path))) return -1;
    l->labels[l->n++] = label;
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Sorted names in a directory (skipping dot files). */
static df_status sorted_entries(const char *dir, char ***names, int *count) {
    DIR *dp = opendir(dir);
    *names = NULL;
    *count = 0;
    if (!dp) return df_fail(DF_ERR_IO, "%s: cannot open directory: %s", dir, strerror(errno));
    int cap = 0;
    struct dirent *e;
    df_status st = DF_OK;
    while ((e = readdir(dp))) {
        if (e->d_name[0] == '.') continue;
        if (*count == cap) {
            cap = cap ? 2 * cap : 64;
            char **nn = realloc(*names, sizeof(char *) * (size_t)cap);
            if (!nn) {
                st = df_fail(DF_ERR_NOMEM, "out of memory");
                break;
            }
            *names = nn;
        }
        if (!((*names)[(*count)++] = strdup(e->d_name))) {
            st = df_fail(DF_ERR_NOMEM, "out of memory");
            break;
        }
    }
    closedir(dp);
    if (*names) qsort(*names, (size_t)*count, sizeof(char *), cmp_str);
    return st;
}

static void free_names(char **names, int n) {
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

static df_status collect_images(const char *dir, int label, int depth, file_list *l) {
    if (depth > 16) return df_fail(DF_ERR_FORMAT, "%s: directories nested too deep", dir);
    char **names;
    int n;
    df_status st = sorted_entries(dir, &names, &n);
    for (int i = 0; i < n && !st; i++) {
        char p[4096];
        if (snprintf(p, sizeof p, "%s/%s", dir, names[i]) >= (int)sizeof p) continue;
        if (df_is_dir(p)) st = collect_images(p, label, depth + 1, l);
        else if (has_suffix(p, ".png") || has_suffix(p, ".jpg") || has_suffix(p, ".jpeg"))
            if (list_add(l, p, label)) st = df_fail(DF_ERR_NOMEM, "out of memory");
    }
    free_names(names, n);
    return st;
}

/* A class folder name that is a non-negative integer ("0", "10", "007"). */
static int is_number(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return 0;
    return 1;
}

/* Numbers of any length by value (no overflow: by digit count once leading zeros are gone), then by name. */
static int cmp_number(const void *a, const void *b) {
    const char *x = *(char *const *)a, *y = *(char *const *)b;
    const char *u = x, *v = y;
    while (*u == '0' && u[1]) u++;
    while (*v == '0' && v[1]) v++;
    size_t lu = strlen(u), lv = strlen(v);
    if (lu != lv) return lu < lv ? -1 : 1;
    int c = strcmp(u, v);
    return c ? c : strcmp(x, y);
}

/* What an image file held before it was decoded to the data set's format, from its header. */
typedef struct {
    int colour, alpha, palette, bits16, cmyk;
} file_format;

/* PNG: IHDR's bit depth and colour type; JPEG: the frame header's component count. Unknown stays 0. */
static void sniff_format(const uint8_t *b, size_t len, file_format *f) {
    memset(f, 0, sizeof *f);
    if (len >= 26 && b[0] == 0x89 && memcmp(b + 12, "IHDR", 4) == 0) {
        int type = b[25];
        f->bits16 = b[24] == 16;
        f->palette = type == 3;
        f->colour = (type & 2) != 0;
        f->alpha = (type & 4) != 0;
        return;
    }
    for (size_t pos = 2; len >= 4 && b[0] == 0xff && b[1] == 0xd8 && pos + 4 <= len;) {
        if (b[pos] != 0xff) return;
        int m = b[pos + 1];
        if (m == 0xff || m == 0x01 || (m >= 0xd0 && m <= 0xd8)) {   /* fill bytes and markers without a length */
            pos += m == 0xff ? 1 : 2;
            continue;
        }
        size_t seg = (size_t)b[pos + 2] << 8 | b[pos + 3];
        if (m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc) {   /* SOFn */
            if (pos + 10 <= len) f->colour = b[pos + 9] >= 3, f->cmyk = b[pos + 9] == 4;
            return;
        }
        if (m == 0xda || seg < 2) return;   /* the scan starts: no frame header came */
        pos += 2 + seg;
    }
}

static const char *gray_rgb(int c) { return c == 1 ? "gray" : "RGB"; }

/* "64x48 RGB", "28x28 16-bit gray+alpha", "32x32 palette" */
static void format_name(const file_format *f, int h, int w, char *buf, size_t cap) {
    const char *kind = f->palette ? "palette"
                       : f->cmyk  ? "CMYK"
                       : f->colour ? (f->alpha ? "RGBA" : "RGB")
                                   : (f->alpha ? "gray+alpha" : "gray");
    snprintf(buf, cap, "%dx%d %s%s", w, h, f->bits16 ? "16-bit " : "", kind);
}

/* Count a converted image, keeping the first as the example. */
static void note_converted(df_dataset_report *r, const char *name, const char *from) {
    if (r->converted++ == 0) {
        snprintf(r->converted_example, sizeof r->converted_example, "%s", name);
        snprintf(r->converted_from, sizeof r->converted_from, "%s", from);
    }
}

/* Count a skipped image, naming the first few with why (df_error()'s message without the path). */
static void note_skipped(df_dataset_report *r, const char *path, const char *name) {
    if (r->skipped < DF_DATASET_NAMED) {
        const char *why = df_error();
        size_t n = strlen(path);
        if (strncmp(why, path, n) == 0 && why[n] == ':' && why[n + 1] == ' ') why += n + 2;
        snprintf(r->skipped_name[r->skipped], sizeof r->skipped_name[0], "%s", name);
        snprintf(r->skipped_why[r->skipped], sizeof r->skipped_why[0], "%s", why);
    }
    r->skipped++;
}

/* One image file into slot d->n (allocating room for `cap` at the first), at size x size (0: its own) and
 * `channels` (0: its own). *unreadable is set when the file itself could not be read or decoded (the
 * error's message names it), as opposed to an image that does not fit the others. */
static df_status folder_image(df_dataset *d, const char *path, const char *name, int size, int channels, int cap,
                              int label, int *unreadable) {
    char *file;
    size_t len;
    int c, h, w;
    float *px = NULL;
    df_status st = df_read_file(path, &file, &len);
    file_format ff;
    if (!st) {
        sniff_format((const uint8_t *)file, len, &ff);
        st = df_image_decode(path, file, len, channels, &c, &h, &w, &px);
        free(file);
    }
    *unreadable = st == DF_ERR_FORMAT || st == DF_ERR_IO;
    if (st) return st;
    int oh = size > 0 ? size : h, ow = size > 0 ? size : w;
    if (!d->pixels) {
        d->c = c, d->h = oh, d->w = ow;
        if (!(d->pixels = malloc((size_t)c * oh * ow * (size_t)cap))) st = df_fail(DF_ERR_NOMEM, "%s: out of memory", path);
        if (!st && label >= 0 && !(d->labels = malloc(sizeof(int) * (size_t)cap)))
            st = df_fail(DF_ERR_NOMEM, "out of memory");
    } else if (c != d->c) {
        st = df_fail(DF_ERR_FORMAT, "%s: %d channels where earlier images have %d (use --channels)", path, c, d->c);
    } else if (size <= 0 && (h != d->h || w != d->w)) {
        st = df_fail(DF_ERR_FORMAT, "%s: %dx%d where earlier images are %dx%d (use --size)", path, w, h, d->w, d->h);
    }
    float *rs = NULL;
    if (!st && (h != oh || w != ow)) {
        rs = malloc(sizeof(float) * (size_t)c * oh * ow);
        if (!rs) st = df_fail(DF_ERR_NOMEM, "out of memory");
        else st = df_image_resize(px, c, h, w, oh, ow, 1, rs);
    }
    if (!st) {
        const float *src = rs ? rs : px;
        uint8_t *dst = d->pixels + (size_t)d->n * c * oh * ow;
        for (size_t j = 0; j < (size_t)c * oh * ow; j++) {
            float v = (src[j] + 1) * 127.5f + 0.5f;
            dst[j] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
        if (d->labels) d->labels[d->n] = label;
        d->n++;
        if (h != oh || w != ow || ff.palette || ff.alpha || ff.bits16 || ff.cmyk || (ff.colour ? 3 : 1) != c) {
            char from[64];
            format_name(&ff, h, w, from, sizeof from);
            note_converted(&d->report, name, from);
        }
    }
    free(rs);
    free(px);
    return st;
}

/* ---- captions ------------------------------------------------------------------------------------------ */

/* Captions by file: for each entry of the folder's file list, its captions (malloc'd strings). */
typedef struct {
    char ***caps;   /* l.n lists */
    int    *ncap;
    int     any;    /* some file has captions */
} caption_list;

static void caption_list_free(caption_list *c, int n) {
    for (int i = 0; c->caps && i < n; i++) {
        for (int k = 0; k < c->ncap[i]; k++) free(c->caps[i][k]);
        free(c->caps[i]);
    }
    free(c->caps), free(c->ncap);
}

/* Add text (n bytes, not terminated) as a caption of file i; where names the source in messages. */
static df_status add_caption(caption_list *c, int i, const char *text, size_t n, const char *where) {
    const long bad = df_utf8_invalid_at(text, n);
    if (bad >= 0) return df_fail(DF_ERR_FORMAT, "%s: a caption that is not UTF-8 text (byte %ld)", where, bad);
    if (memchr(text, 0, n)) return df_fail(DF_ERR_FORMAT, "%s: a caption holding a NUL byte: not text", where);
    char **nc = realloc(c->caps[i], sizeof(char *) * (size_t)(c->ncap[i] + 1));
    char *t = malloc(n + 1);
    if (nc) c->caps[i] = nc;
    if (!nc || !t) return free(t), df_fail(DF_ERR_NOMEM, "out of memory for captions");
    memcpy(t, text, n), t[n] = 0;
    c->caps[i][c->ncap[i]++] = t;
    c->any = 1;
    return DF_OK;
}

typedef struct {
    const char *name;   /* relative to the folder */
    int         index;  /* in the file list */
} named_file;

static int cmp_named(const void *a, const void *b) {
    return strcmp(((const named_file *)a)->name, ((const named_file *)b)->name);
}

/* metadata.jsonl as diffusers' train_text_to_image reads an image folder: one JSON object per line with
 * "file_name" (relative to the folder) and "text" (a caption, or a list of them). Every image needs a row. */
static df_status read_metadata(const char *path, const char *meta, const file_list *l, size_t root, caption_list *c) {
    char *text;
    size_t len;
    df_status st = df_read_file(meta, &text, &len);
    if (st) return st;
    named_file *files = malloc(sizeof *files * (size_t)l->n);   /* by name in the folder, for a binary search */
    if (!files) st = df_fail(DF_ERR_NOMEM, "out of memory");
    for (int i = 0; !st && i < l->n; i++) files[i] = (named_file){l->paths[i] + root, i};
    if (!st) qsort(files, (size_t)l->n, sizeof *files, cmp_named);
    int lineno = 0;
    for (char *p = text, *e; !st && p < text + len; p = e + 1) {
        e = memchr(p, '\n', (size_t)(text + len - p));
        if (!e) e = text + len;
        lineno++;
        const char *q = p;
        while (q < e && (*q == ' ' || *q == '\t' || *q == '\r')) q++;
        if (q == e) continue;   /* a blank line */
        char where[4400];
        snprintf(where, sizeof where, "%s:%d", meta, lineno);
        cJSON *j = cJSON_ParseWithLength(p, (size_t)(e - p));
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(j, "file_name"), *tx = cJSON_GetObjectItemCaseSensitive(j, "text");
        if (!cJSON_IsObject(j)) st = df_fail(DF_ERR_FORMAT, "%s: not a JSON object", where);
        else if (!cJSON_IsString(fn)) st = df_fail(DF_ERR_FORMAT, "%s: no \"file_name\" string", where);
        else if (!cJSON_IsString(tx) && !(cJSON_IsArray(tx) && cJSON_GetArraySize(tx) > 0))
            st = df_fail(DF_ERR_FORMAT, "%s: no \"text\" (a caption, or a list of captions)", where);
        int at = -1;
        if (!st) {
            const char *name = fn->valuestring;
            while (name[0] == '.' && name[1] == '/') name += 2;
            int lo = 0, hi = l->n - 1;
            while (lo <= hi && at < 0) {
                const int mid = (lo + hi) / 2, cmp = strcmp(name, files[mid].name);
                if (!cmp) at = files[mid].index;
                else if (cmp < 0) hi = mid - 1;
                else lo = mid + 1;
            }
            if (at < 0) st = df_fail(DF_ERR_IO, "%s: no image %s in %s", where, fn->valuestring, path);
            else if (c->ncap[at]) st = df_fail(DF_ERR_FORMAT, "%s: a second row for %s", where, fn->valuestring);
        }
        if (!st && cJSON_IsString(tx)) st = add_caption(c, at, tx->valuestring, strlen(tx->valuestring), where);
        for (const cJSON *k = cJSON_IsArray(tx) ? tx->child : NULL; !st && k; k = k->next)
            st = cJSON_IsString(k) ? add_caption(c, at, k->valuestring, strlen(k->valuestring), where)
                                   : df_fail(DF_ERR_FORMAT, "%s: a caption that is not a string", where);
        cJSON_Delete(j);
    }
    for (int i = 0; !st && i < l->n; i++)
        if (!c->ncap[i]) st = df_fail(DF_ERR_FORMAT, "%s: no row for the image %s", meta, l->paths[i] + root);
    free(text), free(files);
    return st;
}

/* A caption file beside each image (photo.png, photo.txt): one caption per line, blank lines skipped. Once one
 * image has one, every image must. */
static df_status read_caption_files(const file_list *l, size_t root, caption_list *c) {
    df_status st = DF_OK;
    int first_with = -1, first_without = -1;
    for (int i = 0; i < l->n && !st; i++) {
        char p[4200];
        const char *dot = strrchr(l->paths[i], '.');
        snprintf(p, sizeof p, "%.*s.txt", (int)(dot - l->paths[i]), l->paths[i]);
        struct stat sb;
        if (stat(p, &sb) != 0) {
            if (first_without < 0) first_without = i;
            continue;
        }
        if (first_with < 0) first_with = i;
        df_lines lines;
        if ((st = df_lines_read(p, &lines))) break;
        for (int k = 0; k < lines.n && !st; k++) st = add_caption(c, i, lines.lines[k], strlen(lines.lines[k]), p);
        df_lines_free(&lines);
        if (!st && !c->ncap[i]) st = df_fail(DF_ERR_FORMAT, "%s: an empty caption file", p);
    }
    if (!st && first_with >= 0 && first_without >= 0)
        st = df_fail(DF_ERR_FORMAT, "%s has a caption file but %s has none", l->paths[first_with] + root,
                     l->paths[first_without] + root);
    return st;
}

static df_status open_folder(const char *path, const df_dataset_params *prm, df_dataset **out) {
    file_list l = {0};
    char **names;
    int nn;
    df_status st = sorted_entries(path, &names, &nn);
    if (st) return st;
    /* one subdirectory per class when every entry with images is a directory */
    int ndirs = 0, nfiles = 0, numbered = 1;
    for (int i = 0; i < nn; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", path, names[i]);
        if (df_is_dir(p)) ndirs++;
        else nfiles++;
        numbered &= is_number(names[i]);
    }
    int by_class = ndirs > 0 && nfiles == 0 && ndirs <= MAX_CLASSES;
    /* folders 0, 1, ..., 10 are classes 0 to 10 (name order would put 10 before 2) */
    if (by_class && numbered) qsort(names, (size_t)nn, sizeof(char *), cmp_number);
    char **classes = NULL;
    int nclasses = 0;
    if (by_class) {
        for (int i = 0; i < nn && !st; i++) {
            char p[4096];
            snprintf(p, sizeof p, "%s/%s", path, names[i]);
            st = collect_images(p, nclasses, 1, &l);
            nclasses++;
        }
        classes = names;
    } else {
        st = collect_images(path, -1, 0, &l);
    }
    df_dataset *d = NULL;
    if (!st && l.n == 0) st = df_fail(DF_ERR_IO, "%s: no .png or .jpg images found", path);
    if (!st && !(d = dataset_new())) st = DF_ERR_NOMEM;
    const size_t root = strlen(path) + 1;   /* names in the report are relative to the folder */
    caption_list caps = {0};
    if (!st && (!(caps.caps = calloc((size_t)l.n, sizeof *caps.caps)) || !(caps.ncap = calloc((size_t)l.n, sizeof(int)))))
        st = df_fail(DF_ERR_NOMEM, "out of memory");
    if (!st) {
        char meta[4200];
        snprintf(meta, sizeof meta, "%s/metadata.jsonl", path);
        struct stat sb;
        st = stat(meta, &sb) == 0 ? read_metadata(path, meta, &l, root, &caps) : read_caption_files(&l, root, &caps);
    }
    int *kept = caps.any && !st ? malloc(sizeof(int) * (size_t)l.n) : NULL;   /* the files that loaded */
    if (caps.any && !st && !kept) st = df_fail(DF_ERR_NOMEM, "out of memory");
    char first_bad[4400] = "";
    for (int i = 0; i < l.n && !st; i++) {
        const char *name = l.paths[i] + root;
        int unreadable;
        const int before = d->n;
        st = folder_image(d, l.paths[i], name, prm->size, prm->channels, l.n, by_class ? l.labels[i] : -1,
                          &unreadable);
        if (kept && d->n > before) kept[before] = i;
        if (unreadable && !prm->strict) {
            if (!d->report.skipped) snprintf(first_bad, sizeof first_bad, "%s", df_error());
            note_skipped(&d->report, l.paths[i], name);
            st = DF_OK;
        }
    }
    if (!st && d->n == 0)
        st = df_fail(DF_ERR_FORMAT, "%s: none of its %d image%s could be read (the first: %s)", path, l.n,
                     l.n == 1 ? "" : "s", first_bad);
    if (!st && d->n < l.n) {   /* room was made for every file */
        uint8_t *np = realloc(d->pixels, (size_t)d->n * d->c * d->h * d->w);
        if (np) d->pixels = np;
    }
    if (!st && by_class) st = set_class_names(d, nclasses, (const char *const *)classes);
    if (!st && kept) {   /* the loaded images' captions, moved into the data set */
        int total = 0;
        for (int i = 0; i < d->n; i++) total += caps.ncap[kept[i]];
        d->captions = malloc(sizeof(char *) * (size_t)DF_MAX(total, 1));
        d->cap_first = malloc(sizeof(int) * (size_t)(d->n + 1));
        if (!d->captions || !d->cap_first) {
            free(d->captions), free(d->cap_first), d->captions = NULL, d->cap_first = NULL;
            st = df_fail(DF_ERR_NOMEM, "out of memory for captions");
        }
        for (int i = 0, k = 0; !st && i < d->n; i++) {
            d->cap_first[i] = k;
            for (int j = 0; j < caps.ncap[kept[i]]; j++) d->captions[k++] = caps.caps[kept[i]][j];
            caps.ncap[kept[i]] = 0;   /* moved */
            d->cap_first[i + 1] = k;
        }
    }
    if (!st)
        snprintf(d->desc, sizeof d->desc, "%s: %d images of %dx%dx%d%s%s", path, d->n, d->w, d->h, d->c,
                 by_class ? ", one class per subdirectory" : "", d->cap_first ? ", captioned" : "");
    caption_list_free(&caps, l.n);
    free(kept);
    for (int i = 0; i < l.n; i++) free(l.paths[i]);
    free(l.paths);
    free(l.labels);
    free_names(names, nn);
    if (st) {
        df_dataset_free(d);
        return st;
    }
    *out = d;
    return DF_OK;
}

/* ---- conversions and the entry point --------------------------------------------------------------------- */

/* Bring an 8-bit data set to `channels` and size x size in place. */
static df_status convert(df_dataset *d, int size, int channels) {
    int oc = channels > 0 ? channels : d->c, oh = size > 0 ? size : d->h, ow = size > 0 ? size : d->w;
    if (oc == d->c && oh == d->h && ow == d->w) return DF_OK;
    if (oc != 1 && oc != 3) return df_fail(DF_ERR_ARG, "channels must be 1 or 3, not %d", oc);
    size_t in_per = (size_t)d->c * d->h * d->w, out_per = (size_t)oc * oh * ow;
    uint8_t *np = malloc(out_per * (size_t)d->n);
    float *a = malloc(sizeof(float) * in_per), *b = malloc(sizeof(float) * (size_t)3 * DF_MAX(in_per, out_per)),
          *r = malloc(sizeof(float) * out_per);
    df_status st = (!np || !a || !b || !r) ? df_fail(DF_ERR_NOMEM, "out of memory converting the data set") : DF_OK;
    const size_t hw = (size_t)d->h * d->w;
    for (int i = 0; i < d->n && !st; i++) {
        df_dataset_get(d, i, 0, a);
        const float *src = a;
        if (oc != d->c) {   /* gray -> RGB by copying; RGB -> gray by ITU-R 601 luma */
            for (size_t j = 0; j < hw; j++) {
                if (oc == 3) b[j] = b[hw + j] = b[2 * hw + j] = a[j];
                else b[j] = 0.299f * a[j] + 0.587f * a[hw + j] + 0.114f * a[2 * hw + j];
            }
            src = b;
        }
        if (oh != d->h || ow != d->w) {
            st = df_image_resize(src, oc, d->h, d->w, oh, ow, 1, r);
            src = r;
        }
        for (size_t j = 0; j < out_per; j++) {
            float v = (src[j] + 1) * 127.5f + 0.5f;
            np[(size_t)i * out_per + j] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
    free(a), free(b), free(r);
    if (st) {
        free(np);
        return st;
    }
    free(d->pixels);
    d->pixels = np;
    /* every image changed alike: the first stands for them */
    char from[64];
    snprintf(from, sizeof from, "%dx%d %s", d->w, d->h, gray_rgb(d->c));
    d->report.converted = 0;
    note_converted(&d->report, "image 0", from);
    d->report.converted = d->n;
    d->c = oc, d->h = oh, d->w = ow;
    return DF_OK;
}

/* The report's counts and shape, once the set is final. */
static void report_done(df_dataset *d, const char *source) {
    df_dataset_report *r = &d->report;
    snprintf(r->source, sizeof r->source, "%s", source);
    r->images = d->n, r->classes = d->num_classes;
    r->c = d->c, r->h = d->h, r->w = d->w;
}

int df_dataset_report_note(const df_dataset_report *r, df_dataset_note which, char *buf, size_t cap) {
    if (!cap) return 0;
    buf[0] = 0;
    switch (which) {
    case DF_DATASET_NOTE_COUNTS: {
        char classes[32];
        if (r->classes > 0) snprintf(classes, sizeof classes, "%d class%s", r->classes, r->classes == 1 ? "" : "es");
        else snprintf(classes, sizeof classes, "no labels");
        snprintf(buf, cap, "data: %d image%s, %s (%s)", r->images, r->images == 1 ? "" : "s", classes, r->source);
        return 1;
    }
    case DF_DATASET_NOTE_CONVERTED:
        if (!r->converted) return 0;
        snprintf(buf, cap, "converted %d of %d images to %dx%d %s, e.g. %s (%s)", r->converted, r->images, r->w, r->h,
                 gray_rgb(r->c), r->converted_example, r->converted_from);
        return 1;
    case DF_DATASET_NOTE_SKIPPED: {
        if (!r->skipped) return 0;
        size_t n = (size_t)snprintf(buf, cap, "skipped %d unreadable image%s:", r->skipped, r->skipped == 1 ? "" : "s");
        int named = DF_MIN(r->skipped, DF_DATASET_NAMED);
        for (int i = 0; i < named && n < cap; i++)
            n += (size_t)snprintf(buf + n, cap - n, "%s %s (%s)", i ? "," : "", r->skipped_name[i], r->skipped_why[i]);
        if (r->skipped > named && n < cap) snprintf(buf + n, cap - n, ", and %d more", r->skipped - named);
        return 1;
    }
    default:
        return 0;
    }
}

df_status df_dataset_open(const char *path, int size, int channels, df_dataset **out) {
    df_dataset_params p = {.size = size, .channels = channels, .strict = 1};
    return df_dataset_load(path, &p, out);
}

df_status df_dataset_load(const char *path, const df_dataset_params *prm, df_dataset **out) {
    *out = NULL;
    df_dataset_params defaults;
    if (!prm) df_dataset_params_default(&defaults), prm = &defaults;
    const int size = prm->size, channels = prm->channels;
    if (channels != 0 && channels != 1 && channels != 3)
        return df_fail(DF_ERR_ARG, "channels must be 0 (keep), 1 or 3, not %d", channels);
    if (size < 0 || size > 4096) return df_fail(DF_ERR_ARG, "image size %d out of range 1..4096", size);
    df_dataset *d = NULL;
    df_status st;
    if (strcmp(path, "fashion-mnist") == 0 || strcmp(path, "fashion-mnist:test") == 0) {
        char p[512];
        snprintf(p, sizeof p, "%s/%s-images-idx3-ubyte.gz", DF_FASHION_MNIST_DIR,
                 strcmp(path, "fashion-mnist") == 0 ? "train" : "t10k");
        struct stat sb;
        if (stat(p, &sb) != 0)
            return df_fail(DF_ERR_IO, "%s: not found; install Debian's dataset-fashion-mnist package", p);
        st = open_idx(p, &d);
        if (!st) {
            for (int i = 0; i < 10; i++) free(d->class_names[i]);
            free(d->class_names);
            d->class_names = NULL;
            st = set_class_names(d, 10, fashion_names);
            snprintf(d->desc, sizeof d->desc, "Fashion-MNIST %s split: %d images of 28x28, 10 classes",
                     strcmp(path, "fashion-mnist") == 0 ? "training" : "test", d->n);
        }
    } else if (df_is_dir(path)) {
        char f[4200];
        snprintf(f, sizeof f, "%s/data_batch_1.bin", path);
        struct stat sb;
        st = stat(f, &sb) == 0 ? open_cifar(path, &d) : open_folder(path, prm, &d);
    } else if (has_suffix(path, ".bin")) {
        st = open_cifar(path, &d);
    } else {
        st = open_idx(path, &d);
    }
    if (!st) st = convert(d, size, channels);
    if (st) {
        df_dataset_free(d);
        return st;
    }
    report_done(d, path);
    *out = d;
    return DF_OK;
}

void df_dataset_sha256(const df_dataset *d, char hex[65]) {
    /* shape, pixels and labels: a change to any of them changes what statistics of the set mean */
    struct sha256_ctx ctx;
    uint8_t digest[SHA256_DIGEST_SIZE];
    int32_t head[5] = {d->n, d->c, d->h, d->w, d->labels ? 1 : 0};
    sha256_init(&ctx);
    sha256_update(&ctx, sizeof head, (const uint8_t *)head);
    sha256_update(&ctx, (size_t)d->n * d->c * d->h * d->w, d->pixels);
    if (d->labels) sha256_update(&ctx, sizeof(int) * (size_t)d->n, (const uint8_t *)d->labels);
    sha256_digest(&ctx, SHA256_DIGEST_SIZE, digest);
    for (int i = 0; i < SHA256_DIGEST_SIZE; i++) snprintf(hex + 2 * i, 3, "%02x", digest[i]);
}

df_status df_dataset_from_images(const float *x, const int *labels, int n, int c, int h, int w, int num_classes,
                                 const char *desc, df_dataset **out) {
    *out = NULL;
    if (!x || n < 1 || c < 1 || h < 1 || w < 1 || num_classes < 0 || (num_classes > 0 && !labels))
        return df_fail(DF_ERR_ARG, "a data set from memory needs images (n = %d) and, with classes, labels", n);
    df_dataset *d = dataset_new();
    if (!d) return DF_ERR_NOMEM;
    const size_t count = (size_t)n * c * h * w;
    d->n = n, d->c = c, d->h = h, d->w = w;
    d->pixels = malloc(count);
    d->labels = num_classes > 0 ? malloc(sizeof(int) * (size_t)n) : NULL;
    df_status st = d->pixels && (!num_classes || d->labels) ? DF_OK : df_fail(DF_ERR_NOMEM, "out of memory");
    /* stored as 8 bits like every loaded image: [-1, 1] -> 0..255, rounded */
    for (size_t i = 0; !st && i < count; i++) {
        float v = (x[i] + 1) * 127.5f + 0.5f;
        d->pixels[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
    for (int i = 0; !st && num_classes > 0 && i < n; i++) {
        if (labels[i] < 0 || labels[i] >= num_classes)
            st = df_fail(DF_ERR_ARG, "label %d of image %d out of range 0..%d", labels[i], i, num_classes - 1);
        else d->labels[i] = labels[i];
    }
    if (!st && num_classes > 0) st = set_class_names(d, num_classes, NULL);
    if (st) {
        df_dataset_free(d);
        return st;
    }
    snprintf(d->desc, sizeof d->desc, "%s", desc ? desc : "images in memory");
    report_done(d, d->desc);
    *out = d;
    return DF_OK;
}
