/* Image I/O and resampling: PNG (libpng) and JPEG (libjpeg) decoding into (C, H, W) floats in [-1, 1],
 * resizing (centre crop, exact area averaging down, bilinear up), and 8-bit PNG and JPEG output of images and
 * grids. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <math.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include <jerror.h>
#include <jpeglib.h>
#include <png.h>

#define MAX_SIDE 16384   /* larger images are refused: a few bytes of header must not buy gigabytes */
#define MAX_PIXELS (1 << 26)   /* and at most 64 megapixels in all */
#define MSG_CAP 200      /* libpng's messages, kept for ours */

/* a * b into *r; 0 on overflow */
static int mul_size(size_t a, size_t b, size_t *r) {
    if (b && a > SIZE_MAX / b) return 0;
    *r = a * b;
    return 1;
}

/* ---- decoded pixels before conversion ------------------------------------------------------------ */

/* Interleaved samples as a decoder hands them over: rows of w * nc samples of `bytes` (1 or 2, 16-bit
 * big-endian) each. nc is 1 (gray), 2 (gray, alpha), 3 (RGB), 4 (RGBA, or CMYK when cmyk is set). */
typedef struct {
    int            w, h, nc, bytes;
    int            cmyk;   /* 0: not CMYK, 1: CMYK as ink amounts, 2: Adobe's inverted CMYK */
    unsigned char *data;
} decoded;

static double sample_at(const unsigned char *p, int bytes) {
    return bytes == 2 ? ((p[0] << 8) | p[1]) / 65535.0 : p[0] / 255.0;
}

/* decoded -> (C, H, W) in [-1, 1]: alpha composited on black (v * a), CMYK turned into RGB (naively, no
 * colour profile), then gray -> RGB by repetition or RGB -> gray by ITU-R 601 luma (as PIL's "L").
 * Samples are taken as stored: gamma, ICC profiles and EXIF orientation are ignored, as PIL does. */
static void decoded_to_float(const decoded *d, int out_c, float *out) {
    int colour = d->nc >= 3;
    int alpha = d->nc == 2 || (d->nc == 4 && !d->cmyk);
    size_t plane = (size_t)d->h * d->w;
    size_t px = (size_t)d->nc * d->bytes;
    for (int y = 0; y < d->h; y++) {
        const unsigned char *row = d->data + (size_t)y * d->w * px;
        for (int x = 0; x < d->w; x++) {
            const unsigned char *p = row + (size_t)x * px;
            double v[4];
            for (int k = 0; k < d->nc; k++) v[k] = sample_at(p + (size_t)k * d->bytes, d->bytes);
            double rgb[3];
            if (d->cmyk) {
                for (int k = 0; k < 3; k++)
                    rgb[k] = d->cmyk == 2 ? v[k] * v[3] : (1 - v[k]) * (1 - v[3]);
            } else if (colour) {
                double a = alpha ? v[3] : 1;
                for (int k = 0; k < 3; k++) rgb[k] = v[k] * a;
            } else {
                double a = alpha ? v[1] : 1;
                rgb[0] = rgb[1] = rgb[2] = v[0] * a;
            }
            size_t i = (size_t)y * d->w + x;
            if (out_c == 1) {
                double g = colour ? 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] : rgb[0];
                out[i] = (float)(2 * g - 1);
            } else {
                for (int k = 0; k < 3; k++) out[k * plane + i] = (float)(2 * rgb[k] - 1);
            }
        }
    }
}

/* Room for h rows of w * nc samples of `bytes` each, checked for overflow. */
static unsigned char *alloc_decoded(int w, int h, int nc, int bytes) {
    size_t n;
    if (!mul_size((size_t)w * nc * bytes, (size_t)h, &n)) return NULL;
    return malloc(n ? n : 1);
}

/* ---- PNG ------------------------------------------------------------------------------------------- */

typedef struct {
    const unsigned char *data;
    size_t               len, pos;
    char                 msg[MSG_CAP];
    int                  nomem;
    unsigned char       *pixels;
    png_bytep           *rows;
} png_reader;

/* libpng reports errors here: keep the message and jump back to png_decode's setjmp. */
static void png_on_error(png_structp png, png_const_charp msg) {
    char *dst = png_get_error_ptr(png);   /* a msg[MSG_CAP] */
    snprintf(dst, MSG_CAP, "%s", msg);
    png_longjmp(png, 1);
}

/* Warnings (bad ancillary chunks and the like) do not stop decoding and are not printed. */
static void png_on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

static void png_read_mem(png_structp png, png_bytep out, size_t n) {
    png_reader *r = png_get_io_ptr(png);
    if (n > r->len - r->pos) png_error(png, "file is truncated");
    memcpy(out, r->data + r->pos, n);
    r->pos += n;
}

/* Everything that can longjmp lives here; what must survive the jump is in *r. Returns 0 on success. */
static int png_decode(png_structp png, png_infop info, png_reader *r, decoded *d) {
    if (setjmp(png_jmpbuf(png))) return 1;
    png_set_read_fn(png, r, png_read_mem);
    png_read_info(png, info);
    /* palette -> RGB, gray below 8 bits -> 8 bits, tRNS -> an alpha channel; 16 bits stay 16 bits */
    png_set_expand(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int w = (int)png_get_image_width(png, info), h = (int)png_get_image_height(png, info);
    int nc = png_get_channels(png, info), depth = png_get_bit_depth(png, info);
    if (w > MAX_SIDE || h > MAX_SIDE || (size_t)w * h > MAX_PIXELS)
        png_error(png, "image too large");   /* load_png checked IHDR already */
    if (nc < 1 || nc > 4 || (depth != 8 && depth != 16)) png_error(png, "unsupported pixel layout");
    int bytes = depth / 8;
    /* deflate expands at most ~1032:1, so a file this short cannot hold the pixels it declares: refuse
     * before allocating them */
    if ((double)w * h * nc * bytes > 1040.0 * (double)r->len + 65536) png_error(png, "file is truncated");
    if (png_get_rowbytes(png, info) != (size_t)w * nc * bytes) png_error(png, "unexpected row size");
    r->pixels = alloc_decoded(w, h, nc, bytes);
    r->rows = malloc((size_t)h * sizeof *r->rows);
    if (!r->pixels || !r->rows) {
        r->nomem = 1;
        return 1;
    }
    for (int y = 0; y < h; y++) r->rows[y] = r->pixels + (size_t)y * w * nc * bytes;
    png_read_image(png, r->rows);
    png_read_end(png, NULL);
    *d = (decoded){.w = w, .h = h, .nc = nc, .bytes = bytes, .data = r->pixels};
    return 0;
}

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static df_status load_png(const char *path, const unsigned char *data, size_t len, decoded *d) {
    /* Check the declared size before libpng allocates anything (the IHDR chunk must come first). */
    if (len >= 24 && memcmp(data + 12, "IHDR", 4) == 0) {
        uint32_t w = be32(data + 16), h = be32(data + 20);
        if (w > MAX_SIDE || h > MAX_SIDE || (uint64_t)w * h > MAX_PIXELS)
            return df_fail(DF_ERR_FORMAT, "%s: image is %ux%u; at most %d pixels a side and %d megapixels are "
                           "supported", path, (unsigned)w, (unsigned)h, MAX_SIDE, MAX_PIXELS >> 20);
    }
    png_reader r = {.data = data, .len = len};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, r.msg, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return df_fail(DF_ERR_NOMEM, "%s: out of memory starting the PNG decoder", path);
    }
    int bad = png_decode(png, info, &r, d);
    png_destroy_read_struct(&png, &info, NULL);
    free(r.rows);
    if (!bad) return DF_OK;
    free(r.pixels);
    if (r.nomem) return df_fail(DF_ERR_NOMEM, "%s: out of memory decoding the PNG", path);
    return df_fail(DF_ERR_FORMAT, "%s: corrupt PNG: %s", path, r.msg);
}

/* ---- JPEG ------------------------------------------------------------------------------------------- */

typedef struct {
    struct jpeg_error_mgr mgr;   /* first, so the library's err pointer is ours */
    jmp_buf               jump;
    char                  msg[JMSG_LENGTH_MAX];
    int                   nomem, too_big;
    unsigned char        *pixels;
} jpeg_reader;

static void jpeg_on_error(j_common_ptr cinfo) {
    jpeg_reader *r = (jpeg_reader *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, r->msg);
    longjmp(r->jump, 1);
}

/* libjpeg reports damaged data as warnings and carries on with gray blocks; we refuse such files. Benign
 * warnings (extra bytes between markers, unknown JFIF revisions) are ignored. Nothing is printed. */
static void jpeg_on_message(j_common_ptr cinfo, int level) {
    if (level >= 0) return;   /* trace messages */
    switch (cinfo->err->msg_code) {
    case JWRN_JPEG_EOF:
    case JWRN_HIT_MARKER:
    case JWRN_HUFF_BAD_CODE:
    case JWRN_MUST_RESYNC:
    case JWRN_NOT_SEQUENTIAL:
        jpeg_on_error(cinfo);
        break;
    default:
        cinfo->err->num_warnings++;
    }
}

static void jpeg_on_output(j_common_ptr cinfo) { (void)cinfo; }

static int jpeg_decode(struct jpeg_decompress_struct *cinfo, jpeg_reader *r, const unsigned char *data,
                       size_t len, decoded *d) {
    if (setjmp(r->jump)) return 1;
    jpeg_create_decompress(cinfo);
    jpeg_mem_src(cinfo, data, (unsigned long)len);
    jpeg_read_header(cinfo, TRUE);
    if (cinfo->image_width > MAX_SIDE || cinfo->image_height > MAX_SIDE ||
        (uint64_t)cinfo->image_width * cinfo->image_height > MAX_PIXELS) {
        r->too_big = 1;
        return 1;
    }
    int nc = 3, cmyk = 0;
    switch (cinfo->jpeg_color_space) {
    case JCS_GRAYSCALE:
        cinfo->out_color_space = JCS_GRAYSCALE, nc = 1;
        break;
    case JCS_CMYK:
    case JCS_YCCK:
        /* Photoshop writes CMYK inverted and says so with an Adobe marker */
        cinfo->out_color_space = JCS_CMYK, nc = 4, cmyk = cinfo->saw_Adobe_marker ? 2 : 1;
        break;
    default:
        cinfo->out_color_space = JCS_RGB;
    }
    jpeg_start_decompress(cinfo);
    if (cinfo->output_components != nc) ERREXIT(cinfo, JERR_BAD_J_COLORSPACE);
    int w = (int)cinfo->output_width, h = (int)cinfo->output_height;
    r->pixels = alloc_decoded(w, h, nc, 1);
    if (!r->pixels) {
        r->nomem = 1;
        return 1;
    }
    while (cinfo->output_scanline < cinfo->output_height) {
        JSAMPROW row = r->pixels + (size_t)cinfo->output_scanline * w * nc;
        jpeg_read_scanlines(cinfo, &row, 1);
    }
    jpeg_finish_decompress(cinfo);
    *d = (decoded){.w = w, .h = h, .nc = nc, .bytes = 1, .cmyk = cmyk, .data = r->pixels};
    return 0;
}

static df_status load_jpeg(const char *path, const unsigned char *data, size_t len, decoded *d) {
    struct jpeg_decompress_struct cinfo;
    jpeg_reader r;
    memset(&cinfo, 0, sizeof cinfo);
    memset(&r, 0, sizeof r);
    cinfo.err = jpeg_std_error(&r.mgr);
    r.mgr.error_exit = jpeg_on_error;
    r.mgr.emit_message = jpeg_on_message;
    r.mgr.output_message = jpeg_on_output;
    int bad = jpeg_decode(&cinfo, &r, data, len, d);
    unsigned iw = cinfo.image_width, ih = cinfo.image_height;
    jpeg_destroy_decompress(&cinfo);
    if (!bad) return DF_OK;
    free(r.pixels);
    if (r.too_big)
        return df_fail(DF_ERR_FORMAT, "%s: image is %ux%u; at most %d pixels a side and %d megapixels are supported",
                       path, iw, ih, MAX_SIDE, MAX_PIXELS >> 20);
    if (r.nomem) return df_fail(DF_ERR_NOMEM, "%s: out of memory decoding the JPEG", path);
    return df_fail(DF_ERR_FORMAT, "%s: corrupt JPEG: %s", path, r.msg);
}

/* ---- loading ------------------------------------------------------------------------------------------- */

/* A name for content we recognise but do not read, for a helpful message. */
static const char *sniff_other(const unsigned char *p, size_t n) {
    if (n >= 6 && (memcmp(p, "GIF87a", 6) == 0 || memcmp(p, "GIF89a", 6) == 0)) return "a GIF image";
    if (n >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0) return "a WebP image";
    if (n >= 4 && (memcmp(p, "II*\0", 4) == 0 || memcmp(p, "MM\0*", 4) == 0)) return "a TIFF image";
    if (n >= 2 && p[0] == 'B' && p[1] == 'M') return "a BMP image";
    if (n >= 2 && p[0] == 'P' && p[1] >= '1' && p[1] <= '7') return "a PNM image";
    return NULL;
}

df_status df_image_load(const char *path, int channels, int *c, int *h, int *w, float **pixels) {
    *pixels = NULL;
    *c = *h = *w = 0;
    if (channels != 0 && channels != 1 && channels != 3)
        return df_fail(DF_ERR_ARG, "%s: cannot load with %d channels (0, 1 or 3)", path, channels);
    char *file;
    size_t len;
    df_status st = df_read_file(path, &file, &len);
    if (st) return st;
    st = df_image_decode(path, file, len, channels, c, h, w, pixels);
    free(file);
    return st;
}

df_status df_image_decode(const char *path, const void *file, size_t len, int channels, int *c, int *h, int *w,
                          float **pixels) {
    *pixels = NULL;
    *c = *h = *w = 0;
    if (channels != 0 && channels != 1 && channels != 3)
        return df_fail(DF_ERR_ARG, "%s: cannot load with %d channels (0, 1 or 3)", path, channels);
    df_status st;
    const unsigned char *p = (const unsigned char *)file;
    static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    decoded d = {0};
    if (len >= 8 && memcmp(p, png_sig, 8) == 0) {
        st = load_png(path, p, len, &d);
    } else if (len >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff) {
        st = load_jpeg(path, p, len, &d);
    } else {
        const char *other = sniff_other(p, len);
        st = len == 0  ? df_fail(DF_ERR_FORMAT, "%s: empty file, not a PNG or JPEG image", path)
             : other ? df_fail(DF_ERR_FORMAT, "%s: not a PNG or JPEG file (it looks like %s)", path, other)
                     : df_fail(DF_ERR_FORMAT, "%s: not a PNG or JPEG file", path);
    }
    if (st) return st;
    int out_c = channels ? channels : d.nc >= 3 ? 3 : 1;
    size_t n;
    float *out = NULL;
    if (mul_size((size_t)d.w * d.h, (size_t)out_c * sizeof(float), &n)) out = malloc(n ? n : 1);
    if (!out) {
        free(d.data);
        return df_fail(DF_ERR_NOMEM, "%s: out of memory for %dx%d pixels", path, d.w, d.h);
    }
    decoded_to_float(&d, out_c, out);
    free(d.data);
    *c = out_c, *h = d.h, *w = d.w;
    *pixels = out;
    return DF_OK;
}

/* ---- resizing ------------------------------------------------------------------------------------------- */

/* How one axis is resampled: output o is the sum over k < count[o] of w[o * taps + k] * in[first[o] + k]. */
typedef struct {
    int     taps;
    int    *first, *count;
    double *w;
} axis_map;

static void axis_map_free(axis_map *m) {
    free(m->first);
    free(m->count);
    free(m->w);
}

/* Map the source window [lo, lo + len) of an axis with n_in pixels (pixel i covers [i, i + 1)) onto n_out
 * pixels. Shrinking: each output averages the source over its footprint of len / n_out pixels, every
 * source pixel weighted by the length it overlaps (an exact box filter, as PIL's BOX and reduce()).
 * Growing (or keeping the size): bilinear with half-pixel centres (PIL, torchvision, align_corners=False):
 * output o samples x = lo + (o + 0.5) len / n_out - 0.5, clamped to the edge pixels. */
static int axis_map_init(axis_map *m, int n_in, double lo, double len, int n_out) {
    double scale = len / n_out;
    m->taps = scale > 1 ? (int)ceil(scale) + 1 : 2;
    m->first = malloc((size_t)n_out * sizeof(int));
    m->count = malloc((size_t)n_out * sizeof(int));
    m->w = calloc((size_t)n_out * m->taps, sizeof(double));
    if (!m->first || !m->count || !m->w) return 0;
    for (int o = 0; o < n_out; o++) {
        double *w = m->w + (size_t)o * m->taps;
        if (scale > 1) {
            double a = lo + o * scale, b = a + scale;
            int i0 = DF_MAX((int)floor(a), 0), i1 = DF_MIN((int)ceil(b), n_in);
            i1 = DF_MIN(i1, i0 + m->taps);
            double sum = 0;
            for (int i = i0; i < i1; i++) sum += w[i - i0] = fmax(0.0, fmin(b, i + 1.0) - fmax(a, (double)i));
            for (int i = i0; i < i1; i++) w[i - i0] /= sum;   /* sum = scale up to rounding */
            m->first[o] = i0, m->count[o] = i1 - i0;
        } else {
            double x = fmin(fmax(lo + (o + 0.5) * scale - 0.5, 0.0), n_in - 1.0);
            int i0 = DF_MIN((int)floor(x), n_in - 1);
            double f = x - i0;
            m->first[o] = i0;
            if (i0 + 1 < n_in && f > 0) {
                w[0] = 1 - f, w[1] = f, m->count[o] = 2;
            } else {
                w[0] = 1, m->count[o] = 1;
            }
        }
    }
    return 1;
}

df_status df_image_resize(const float *in, int c, int h, int w, int oh, int ow, int center_crop, float *out) {
    if (c < 1 || h < 1 || w < 1 || oh < 1 || ow < 1)
        return df_fail(DF_ERR_ARG, "image resize: bad sizes (%d, %d, %d) -> %dx%d", c, h, w, oh, ow);
    /* source window: the whole image, or its centre with the target's aspect ratio (fractional edges are
     * fine: the filters weight partly covered pixels by their coverage) */
    double x0 = 0, y0 = 0, cw = w, ch = h;
    if (center_crop) {
        if ((double)w * oh > (double)h * ow) cw = (double)h * ow / oh, x0 = (w - cw) / 2;
        else if ((double)w * oh < (double)h * ow) ch = (double)w * oh / ow, y0 = (h - ch) / 2;
    }
    axis_map mx = {0}, my = {0};
    float *tmp = NULL;
    df_status st = DF_OK;
    if (!axis_map_init(&mx, w, x0, cw, ow) || !axis_map_init(&my, h, y0, ch, oh)) {
        st = df_fail(DF_ERR_NOMEM, "image resize: out of memory");
        goto done;
    }
    /* rows the vertical pass reads */
    int ya = my.first[0], yb = my.first[oh - 1] + my.count[oh - 1];
    int rows = yb - ya;
    tmp = malloc((size_t)c * rows * ow * sizeof(float));   /* (C, rows, ow) */
    if (!tmp) {
        st = df_fail(DF_ERR_NOMEM, "image resize: out of memory");
        goto done;
    }
    for (int k = 0; k < c; k++)
        for (int y = 0; y < rows; y++) {
            const float *src = in + ((size_t)k * h + ya + y) * w;
            float *dst = tmp + ((size_t)k * rows + y) * ow;
            for (int o = 0; o < ow; o++) {
                const double *wt = mx.w + (size_t)o * mx.taps;
                const float *s = src + mx.first[o];
                double acc = 0;
                for (int i = 0; i < mx.count[o]; i++) acc += wt[i] * s[i];
                dst[o] = (float)acc;
            }
        }
    for (int k = 0; k < c; k++)
        for (int o = 0; o < oh; o++) {
            const double *wt = my.w + (size_t)o * my.taps;
            const float *src = tmp + ((size_t)k * rows + my.first[o] - ya) * ow;
            float *dst = out + ((size_t)k * oh + o) * ow;
            for (int x = 0; x < ow; x++) {
                double acc = 0;
                for (int i = 0; i < my.count[o]; i++) acc += wt[i] * src[(size_t)i * ow + x];
                dst[x] = (float)acc;
            }
        }
done:
    free(tmp);
    axis_map_free(&mx);
    axis_map_free(&my);
    return st;
}

/* ---- PNG output ----------------------------------------------------------------------------------------- */

typedef struct {
    unsigned char *data;
    size_t         len, cap;
    char           msg[MSG_CAP];
} png_writer;

static void png_write_mem(png_structp png, png_bytep src, size_t n) {
    png_writer *b = png_get_io_ptr(png);
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2) png_error(png, "out of memory");
            cap *= 2;
        }
        unsigned char *p = realloc(b->data, cap);
        if (!p) png_error(png, "out of memory");
        b->data = p, b->cap = cap;
    }
    memcpy(b->data + b->len, src, n);
    b->len += n;
}

static void png_flush_mem(png_structp png) { (void)png; }

/* Encode interleaved 8-bit rows (h rows of w * nc bytes) into b. Returns 0 on success. */
static int png_encode(png_structp png, png_infop info, png_writer *b, const unsigned char *px, int nc, int h,
                      int w, const char *key, const char *text) {
    if (setjmp(png_jmpbuf(png))) return 1;
    png_set_write_fn(png, b, png_write_mem, png_flush_mem);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, nc == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (key && text) {   /* an uncompressed tEXt chunk, what image viewers and Stable Diffusion tools read */
        png_text t = {.compression = PNG_TEXT_COMPRESSION_NONE, .key = (char *)key, .text = (char *)text,
                      .text_length = strlen(text)};
        png_set_text(png, info, &t, 1);
    }
    png_write_info(png, info);
    for (int y = 0; y < h; y++) png_write_row(png, px + (size_t)y * w * nc);
    png_write_end(png, info);
    return 0;
}

/* [-1, 1] -> 0..255: round((x + 1) * 127.5), clamped first; NaN becomes 0 (black). */
static unsigned char to_byte(float x) {
    double v = x >= -1 ? (x <= 1 ? x : 1) : -1;
    return (unsigned char)floor((v + 1) * 127.5 + 0.5);
}

df_status df_image_save_png(const char *path, const float *x, int c, int h, int w) {
    return df_image_save_png_text(path, x, c, h, w, NULL, NULL);
}

df_status df_image_save_png_text(const char *path, const float *x, int c, int h, int w, const char *key,
                                 const char *text) {
    if (key && (!*key || strlen(key) > 79)) return df_fail(DF_ERR_ARG, "%s: a PNG text key has 1 to 79 characters", path);
    if (c != 1 && c != 3) return df_fail(DF_ERR_ARG, "%s: cannot write %d channels as PNG (1 or 3)", path, c);
    if (h < 1 || w < 1 || h > 0x7fffffff / 4 || w > 0x7fffffff / 4)
        return df_fail(DF_ERR_ARG, "%s: cannot write a %dx%d image", path, w, h);
    size_t n;
    unsigned char *px = NULL;
    if (mul_size((size_t)w * c, (size_t)h, &n)) px = malloc(n);
    if (!px) return df_fail(DF_ERR_NOMEM, "%s: out of memory for a %dx%d image", path, w, h);
    size_t plane = (size_t)h * w;
    for (size_t i = 0; i < plane; i++)
        for (int k = 0; k < c; k++) px[i * c + k] = to_byte(x[k * plane + i]);   /* (C, H, W) -> (H, W, C) */
    png_writer b = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, b.msg, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    df_status st;
    if (!info) {
        st = df_fail(DF_ERR_NOMEM, "%s: out of memory starting the PNG encoder", path);
    } else if (png_encode(png, info, &b, px, c, h, w, key, text)) {
        st = df_fail(DF_ERR_NOMEM, "%s: cannot encode PNG: %s", path, b.msg);
    } else {
        st = df_write_file_atomic(path, b.data, b.len);
    }
    png_destroy_write_struct(&png, &info);
    free(px);
    free(b.data);
    return st;
}

/* ---- JPEG output ---------------------------------------------------------------------------------------- */

/* Everything that can longjmp lives here (errors come back through r, as when reading). Returns 0 on success. */
static int jpeg_encode(struct jpeg_compress_struct *cinfo, jpeg_reader *r, const unsigned char *px, int c, int h,
                       int w, int quality, const char *comment, unsigned char **buf, unsigned long *len) {
    if (setjmp(r->jump)) return 1;
    jpeg_create_compress(cinfo);
    jpeg_mem_dest(cinfo, buf, len);
    cinfo->image_width = (JDIMENSION)w, cinfo->image_height = (JDIMENSION)h;
    cinfo->input_components = c;
    cinfo->in_color_space = c == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(cinfo);
    jpeg_set_quality(cinfo, quality, TRUE);
    /* full-resolution colour (4:4:4): images this small lose visibly to halved chroma */
    for (int k = 0; k < cinfo->num_components; k++) cinfo->comp_info[k].h_samp_factor = cinfo->comp_info[k].v_samp_factor = 1;
    jpeg_start_compress(cinfo, TRUE);
    if (comment) jpeg_write_marker(cinfo, JPEG_COM, (const JOCTET *)comment, (unsigned)strlen(comment));
    while (cinfo->next_scanline < cinfo->image_height) {
        JSAMPROW row = (JSAMPROW)(px + (size_t)cinfo->next_scanline * w * c);
        jpeg_write_scanlines(cinfo, &row, 1);
    }
    jpeg_finish_compress(cinfo);
    return 0;
}

df_status df_image_save_jpeg(const char *path, const float *x, int c, int h, int w, int quality, const char *comment) {
    if (c != 1 && c != 3) return df_fail(DF_ERR_ARG, "%s: cannot write %d channels as JPEG (1 or 3)", path, c);
    if (h < 1 || w < 1 || h > 65500 || w > 65500)   /* JPEG's limit on a side */
        return df_fail(DF_ERR_ARG, "%s: cannot write a %dx%d image as JPEG (at most 65500 a side)", path, w, h);
    if (quality == 0) quality = DF_JPEG_QUALITY;
    if (quality < 1 || quality > 100) return df_fail(DF_ERR_ARG, "%s: JPEG quality %d must be 1..100", path, quality);
    if (comment && strlen(comment) > 65533)   /* a marker's length field counts itself in 16 bits */
        return df_fail(DF_ERR_ARG, "%s: a JPEG comment holds at most 65533 bytes", path);
    size_t n;
    unsigned char *px = NULL;
    if (mul_size((size_t)w * c, (size_t)h, &n)) px = malloc(n);
    if (!px) return df_fail(DF_ERR_NOMEM, "%s: out of memory for a %dx%d image", path, w, h);
    const size_t plane = (size_t)h * w;
    for (size_t i = 0; i < plane; i++)
        for (int k = 0; k < c; k++) px[i * c + k] = to_byte(x[k * plane + i]);   /* (C, H, W) -> (H, W, C) */
    struct jpeg_compress_struct cinfo;
    jpeg_reader r;   /* its error manager, jump and message serve the encoder too */
    memset(&cinfo, 0, sizeof cinfo);
    memset(&r, 0, sizeof r);
    cinfo.err = jpeg_std_error(&r.mgr);
    r.mgr.error_exit = jpeg_on_error;
    r.mgr.output_message = jpeg_on_output;
    unsigned char *buf = NULL;
    unsigned long len = 0;
    df_status st = jpeg_encode(&cinfo, &r, px, c, h, w, quality, comment, &buf, &len)
                       ? df_fail(DF_ERR_NOMEM, "%s: cannot encode JPEG: %s", path, r.msg)
                       : df_write_file_atomic(path, buf, len);
    jpeg_destroy_compress(&cinfo);
    free(buf);   /* jpeg_mem_dest's buffer is malloc'd and left to the caller */
    free(px);
    return st;
}

/* .jpg or .jpeg, any case */
static int is_jpeg_name(const char *path) {
    const char *dot = strrchr(path, '.');
    return dot && !strchr(dot, '/') && (strcasecmp(dot, ".jpg") == 0 || strcasecmp(dot, ".jpeg") == 0);
}

df_status df_image_save(const char *path, const float *x, int c, int h, int w, int quality, const char *key,
                        const char *text) {
    if (is_jpeg_name(path)) return df_image_save_jpeg(path, x, c, h, w, quality, key ? text : NULL);
    return df_image_save_png_text(path, x, c, h, w, key, text);
}

/* Grid layout: rows = ceil(n / cols) by cols tiles (cols is capped at n, so no column is empty), with
 * `pad` pixels of white border around every tile: cols * (w + pad) + pad wide and rows * (h + pad) + pad
 * high. Cells past the last image stay white. */
static int grid_fits(int n, int h, int w, int cols, int pad) {
    cols = DF_MIN(cols, n);
    int rows = (n + cols - 1) / cols;
    return (double)cols * (w + pad) + pad <= 0x7fffffff / 4 && (double)rows * (h + pad) + pad <= 0x7fffffff / 4;
}

void df_image_grid(const float *x, int n, int c, int h, int w, int cols, int pad, float *out, int *gh, int *gw) {
    DF_ASSERT(n >= 1 && c >= 1 && h >= 1 && w >= 1 && cols >= 1 && pad >= 0 && grid_fits(n, h, w, cols, pad));
    cols = DF_MIN(cols, n);
    int rows = (n + cols - 1) / cols;
    int W = cols * (w + pad) + pad, H = rows * (h + pad) + pad;
    *gh = H, *gw = W;
    if (!out) return;
    size_t plane = (size_t)H * W;
    for (size_t i = 0; i < plane * c; i++) out[i] = 1.0f;
    for (int i = 0; i < n; i++) {
        int x0 = pad + (i % cols) * (w + pad), y0 = pad + (i / cols) * (h + pad);
        for (int k = 0; k < c; k++)
            for (int y = 0; y < h; y++)
                memcpy(out + k * plane + (size_t)(y0 + y) * W + x0, x + (((size_t)i * c + k) * h + y) * w,
                       (size_t)w * sizeof(float));
    }
}

df_status df_image_save_grid(const char *path, const float *x, int n, int c, int h, int w, int cols, int pad) {
    return df_image_save_grid_text(path, x, n, c, h, w, cols, pad, NULL, NULL);
}

df_status df_image_save_grid_text(const char *path, const float *x, int n, int c, int h, int w, int cols, int pad,
                                  const char *key, const char *text) {
    if (n < 1 || c < 1 || cols < 1 || pad < 0 || h < 1 || w < 1)
        return df_fail(DF_ERR_ARG, "%s: bad grid (%d images of %dx%d, %d columns, pad %d)", path, n, w, h, cols, pad);
    if (!grid_fits(n, h, w, cols, pad))
        return df_fail(DF_ERR_ARG, "%s: a grid of %d images of %dx%d is too large", path, n, w, h);
    int H, W;
    df_image_grid(x, n, c, h, w, cols, pad, NULL, &H, &W);
    size_t bytes;
    float *g = NULL;
    if (mul_size((size_t)H * W * c, sizeof(float), &bytes)) g = malloc(bytes);
    if (!g) return df_fail(DF_ERR_NOMEM, "%s: out of memory for a %dx%d grid", path, W, H);
    df_image_grid(x, n, c, h, w, cols, pad, g, &H, &W);
    df_status st = df_image_save_png_text(path, g, c, H, W, key, text);
    free(g);
    return st;
}

df_status df_image_save_each(const char *dir, const float *x, int n, int c, int h, int w, const char *key,
                             void (*text)(void *ctx, int i, char *buf, size_t cap), void *ctx) {
    return df_image_save_each_as(dir, "png", 0, x, n, c, h, w, key, text, ctx);
}

df_status df_image_save_each_as(const char *dir, const char *ext, int quality, const float *x, int n, int c, int h,
                                int w, const char *key, void (*text)(void *ctx, int i, char *buf, size_t cap),
                                void *ctx) {
    if (strcasecmp(ext, "png") != 0 && strcasecmp(ext, "jpg") != 0 && strcasecmp(ext, "jpeg") != 0)
        return df_fail(DF_ERR_ARG, "%s: cannot write images as \"%s\" (png, jpg or jpeg)", dir, ext);
    df_status st = df_mkdir_p(dir);
    size_t len = strlen(dir);   /* "pngs/" gives pngs/000000.png, not pngs//000000.png */
    while (len > 1 && dir[len - 1] == '/') len--;
    for (int i = 0; i < n && !st; i++) {
        char p[4200], t[2048] = "";
        if (snprintf(p, sizeof p, "%.*s/%06d.%s", (int)len, dir, i, ext) >= (int)sizeof p)
            return df_fail(DF_ERR_ARG, "%s: path too long", dir);
        if (key && text) text(ctx, i, t, sizeof t);
        st = df_image_save(p, x + (size_t)i * c * h * w, c, h, w, quality, key && text ? key : NULL, t);
    }
    return st;
}
