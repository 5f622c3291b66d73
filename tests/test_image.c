/* Image I/O and resampling: PNG round trips, every PNG pixel layout libpng can write, JPEG (RGB, gray,
 * CMYK), corrupt and oversized files, area/bilinear resizing with centre crops, and grid layout. */
#define _POSIX_C_SOURCE 200809L
#include "test.h"

#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <png.h>

static const double Q = 1.0 / 127.5;   /* one 8-bit level in [-1, 1] units */

static void tmp_path(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", test_tmp_dir(), name); }

/* An 8-bit value of x as df_image_save_png writes it, read back as a float. */
static double quantise(double x) {
    double v = x < -1 ? -1 : x > 1 ? 1 : x;
    return floor((v + 1) * 127.5 + 0.5) / 127.5 - 1;
}

static int file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

static unsigned char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    *len = fread(b, 1, (size_t)n, f);
    fclose(f);
    return b;
}

static void write_all(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(data, 1, len, f);
    fclose(f);
}

/* ---- writing test files with libpng and libjpeg directly -------------------------------------------- */

typedef struct {
    int                  color_type, depth, interlace;
    const png_color     *palette;
    int                  npalette;
    const unsigned char *trans;   /* palette alpha values, or NULL */
    int                  ntrans;
    int                  trans_gray;   /* >= 0: the gray value tRNS marks transparent */
} png_layout;

/* Write rows of packed samples (as PNG stores them: 16-bit big-endian, sub-byte depths packed). */
static int write_png_file(const char *path, int w, int h, const png_layout *L, const unsigned char *data) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        fclose(f);
        return 0;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, L->depth, L->color_type, L->interlace,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (L->palette) png_set_PLTE(png, info, L->palette, L->npalette);
    if (L->trans) png_set_tRNS(png, info, L->trans, L->ntrans, NULL);
    if (L->trans_gray >= 0) {
        png_color_16 tc = {.gray = (png_uint_16)L->trans_gray};
        png_set_tRNS(png, info, NULL, 0, &tc);
    }
    png_write_info(png, info);
    size_t stride = png_get_rowbytes(png, info);
    png_bytep *rows = malloc((size_t)h * sizeof *rows);
    for (int y = 0; y < h; y++) rows[y] = (png_bytep)data + (size_t)y * stride;
    png_write_image(png, rows);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    free(rows);
    fclose(f);
    return 1;
}

/* JPEG with libjpeg: nc = 1 (gray), 3 (RGB, 4:4:4 sampling) or 4 (CMYK, with an Adobe marker). */
static void write_jpeg_file(const char *path, const unsigned char *px, int w, int h, int nc, int quality) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr err;
    ci.err = jpeg_std_error(&err);
    jpeg_create_compress(&ci);
    jpeg_stdio_dest(&ci, f);
    ci.image_width = (JDIMENSION)w, ci.image_height = (JDIMENSION)h, ci.input_components = nc;
    ci.in_color_space = nc == 1 ? JCS_GRAYSCALE : nc == 3 ? JCS_RGB : JCS_CMYK;
    jpeg_set_defaults(&ci);
    if (nc == 4) jpeg_set_colorspace(&ci, JCS_CMYK);
    for (int k = 0; k < ci.num_components; k++) ci.comp_info[k].h_samp_factor = ci.comp_info[k].v_samp_factor = 1;
    jpeg_set_quality(&ci, quality, TRUE);
    jpeg_start_compress(&ci, TRUE);
    while (ci.next_scanline < ci.image_height) {
        JSAMPROW row = (JSAMPROW)px + (size_t)ci.next_scanline * w * nc;
        jpeg_write_scanlines(&ci, &row, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    fclose(f);
}

/* A smooth colourful test pattern, 0..255 per sample, interleaved (h, w, nc). */
static unsigned char pattern(int x, int y, int k) {
    return (unsigned char)(127.5 + 110 * sin(0.21 * x + 0.13 * y + 1.7 * k) * cos(0.09 * y - 0.4 * k));
}

/* ---- PNG round trips ------------------------------------------------------------------------------------ */

TEST(image_png_round_trip_gray_rgb) {
    const int h = 7, w = 9;
    df_rng r;
    df_rng_init(&r, 5);
    for (int c = 1; c <= 3; c += 2) {
        size_t n = (size_t)c * h * w;
        float *x = malloc(n * sizeof(float));
        df_rng_fill_uniform(&r, x, n, -1.2f, 1.2f);   /* some values outside [-1, 1] to be clamped */
        x[0] = -1, x[1] = 1, x[2] = 0;
        char path[600];
        tmp_path(path, sizeof path, c == 1 ? "rt-gray.png" : "rt-rgb.png");
        CHECK_OK(df_image_save_png(path, x, c, h, w));
        int lc, lh, lw;
        float *y = NULL;
        CHECK_OK(df_image_load(path, 0, &lc, &lh, &lw, &y));
        CHECK(lc == c && lh == h && lw == w, "shape %dx%dx%d, wrote %dx%dx%d", lc, lh, lw, c, h, w);
        if (y && lc == c && lh == h && lw == w) {
            double worst = 0, worst_q = 0;
            for (size_t i = 0; i < n; i++) {
                double clamped = fmin(fmax(x[i], -1), 1);
                worst = fmax(worst, fabs(y[i] - clamped));
                worst_q = fmax(worst_q, fabs(y[i] - quantise(x[i])));
            }
            CHECK(worst <= 0.5 * Q + 1e-6, "c=%d: round trip off by %.3g (> half a level)", c, worst);
            CHECK(worst_q <= 1e-6, "c=%d: not the rounded 8-bit value (off by %.3g)", c, worst_q);
            CHECK_NEAR(y[0], -1, 1e-7, "-1 -> 0");
            CHECK_NEAR(y[1], 1, 1e-7, "1 -> 255");
            CHECK_NEAR(y[2], 128 * Q - 1, 1e-7, "0 -> 128 ((0 + 1) * 127.5 rounds up)");
        }
        /* converting on load: gray -> 3 equal planes, RGB -> ITU-R 601 luma */
        float *z = NULL;
        int zc, zh, zw;
        CHECK_OK(df_image_load(path, c == 1 ? 3 : 1, &zc, &zh, &zw, &z));
        if (z && y && zc == 4 - c) {
            size_t plane = (size_t)h * w;
            double worst = 0;
            for (size_t i = 0; i < plane; i++) {
                if (c == 1) {
                    for (int k = 0; k < 3; k++) worst = fmax(worst, fabs(z[k * plane + i] - y[i]));
                } else {
                    double luma = 0.299 * y[i] + 0.587 * y[plane + i] + 0.114 * y[2 * plane + i];
                    worst = fmax(worst, fabs(z[i] - luma));
                }
            }
            CHECK(worst <= 1e-5, "c=%d converted on load: off by %.3g", c, worst);
        }
        free(x), free(y), free(z);
    }
}

/* One libpng-written layout: the decoded (C, H, W) must equal `expect` (values in [0, 1], 3 channels
 * for colour files, 1 for gray). */
static void check_png_layout(const char *name, int w, int h, const png_layout *L, const unsigned char *data,
                             int expect_c, const double *expect) {
    char path[600];
    tmp_path(path, sizeof path, name);
    CHECK(write_png_file(path, w, h, L, data), "%s: libpng could not write the test file", name);
    int c, lh, lw;
    float *x = NULL;
    df_status st = df_image_load(path, 0, &c, &lh, &lw, &x);
    CHECK(st == DF_OK, "%s: %s", name, df_error());
    if (st) return;
    CHECK(c == expect_c && lh == h && lw == w, "%s: decoded %dx%dx%d, expected %dx%dx%d", name, c, lh, lw, expect_c,
          h, w);
    if (c == expect_c && lh == h && lw == w) {
        double worst = 0;
        size_t where = 0, n = (size_t)c * h * w;
        for (size_t i = 0; i < n; i++) {
            double d = fabs(x[i] - (2 * expect[i] - 1));
            if (d > worst) worst = d, where = i;
        }
        CHECK(worst <= 1e-6, "%s: value %zu is %.7f, expected %.7f", name, where, x[where], 2 * expect[where] - 1);
    }
    free(x);
}

TEST(image_png_layouts_decode_exactly) {
    enum { W = 5, H = 3 };
    unsigned char d[H * W * 8];
    double e[3 * H * W];
    const int P = H * W;

    /* palette, 8 bits, with tRNS: colours composited on black by their alpha */
    png_color pal[4] = {{255, 0, 0}, {0, 255, 0}, {10, 20, 30}, {200, 100, 50}};
    unsigned char alpha[4] = {255, 128, 0, 64};
    png_layout L = {.color_type = PNG_COLOR_TYPE_PALETTE, .depth = 8, .palette = pal, .npalette = 4, .trans = alpha,
                    .ntrans = 4, .trans_gray = -1};
    for (int i = 0; i < P; i++) {
        int k = (i * 7) % 4;
        d[i] = (unsigned char)k;
        double a = alpha[k] / 255.0;
        e[i] = pal[k].red / 255.0 * a, e[P + i] = pal[k].green / 255.0 * a, e[2 * P + i] = pal[k].blue / 255.0 * a;
    }
    check_png_layout("palette8-trns.png", W, H, &L, d, 3, e);

    /* palette, 2 bits per index, no transparency (indices packed 4 to a byte, first in the high bits) */
    L.depth = 2, L.trans = NULL, L.ntrans = 0;
    memset(d, 0, sizeof d);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            int k = (x + 2 * y) % 4, i = y * W + x;
            d[y * 2 + x / 4] |= (unsigned char)(k << (6 - 2 * (x % 4)));   /* 2 bytes per row */
            e[i] = pal[k].red / 255.0, e[P + i] = pal[k].green / 255.0, e[2 * P + i] = pal[k].blue / 255.0;
        }
    check_png_layout("palette2.png", W, H, &L, d, 3, e);

    /* gray, 16 bits */
    static const unsigned v16[] = {0, 1, 257, 1000, 32767, 32768, 40000, 65534, 65535};
    L = (png_layout){.color_type = PNG_COLOR_TYPE_GRAY, .depth = 16, .trans_gray = -1};
    for (int i = 0; i < P; i++) {
        unsigned v = v16[i % 9];
        d[2 * i] = (unsigned char)(v >> 8), d[2 * i + 1] = (unsigned char)v;
        e[i] = v / 65535.0;
    }
    check_png_layout("gray16.png", W, H, &L, d, 1, e);

    /* RGB, 16 bits */
    L.color_type = PNG_COLOR_TYPE_RGB;
    for (int i = 0; i < P; i++)
        for (int k = 0; k < 3; k++) {
            unsigned v = v16[(i + 4 * k) % 9];
            d[6 * i + 2 * k] = (unsigned char)(v >> 8), d[6 * i + 2 * k + 1] = (unsigned char)v;
            e[k * P + i] = v / 65535.0;
        }
    check_png_layout("rgb16.png", W, H, &L, d, 3, e);

    /* RGBA, 16 bits */
    L.color_type = PNG_COLOR_TYPE_RGBA;
    for (int i = 0; i < P; i++) {
        unsigned a = v16[(i * 5) % 9];
        for (int k = 0; k < 4; k++) {
            unsigned v = k == 3 ? a : v16[(i + 2 * k) % 9];
            d[8 * i + 2 * k] = (unsigned char)(v >> 8), d[8 * i + 2 * k + 1] = (unsigned char)v;
            if (k < 3) e[k * P + i] = v / 65535.0 * (a / 65535.0);
        }
    }
    check_png_layout("rgba16.png", W, H, &L, d, 3, e);

    /* gray + alpha, 8 bits */
    L = (png_layout){.color_type = PNG_COLOR_TYPE_GRAY_ALPHA, .depth = 8, .trans_gray = -1};
    for (int i = 0; i < P; i++) {
        d[2 * i] = (unsigned char)(17 * i), d[2 * i + 1] = (unsigned char)(255 - 16 * i);
        e[i] = d[2 * i] / 255.0 * (d[2 * i + 1] / 255.0);
    }
    check_png_layout("gray-alpha8.png", W, H, &L, d, 1, e);

    /* RGBA, 8 bits */
    L.color_type = PNG_COLOR_TYPE_RGBA;
    for (int i = 0; i < P; i++) {
        unsigned char a = (unsigned char)(i * 18);
        for (int k = 0; k < 3; k++) {
            d[4 * i + k] = (unsigned char)(40 * k + 13 * i);
            e[k * P + i] = d[4 * i + k] / 255.0 * (a / 255.0);
        }
        d[4 * i + 3] = a;
    }
    check_png_layout("rgba8.png", W, H, &L, d, 3, e);

    /* gray, 1 and 4 bits (packed, first pixel in the high bits) */
    L = (png_layout){.color_type = PNG_COLOR_TYPE_GRAY, .depth = 1, .trans_gray = -1};
    memset(d, 0, sizeof d);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            int b = (x * y + x) & 1;
            d[y] |= (unsigned char)(b << (7 - x));
            e[y * W + x] = b;
        }
    check_png_layout("gray1.png", W, H, &L, d, 1, e);
    L.depth = 4;
    memset(d, 0, sizeof d);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            int v = (3 * x + 5 * y) % 16;
            d[y * 3 + x / 2] |= (unsigned char)(v << (x % 2 ? 0 : 4));
            e[y * W + x] = v / 15.0;
        }
    check_png_layout("gray4.png", W, H, &L, d, 1, e);

    /* gray, 8 bits, with a transparent gray value (tRNS): that value becomes black */
    L = (png_layout){.color_type = PNG_COLOR_TYPE_GRAY, .depth = 8, .trans_gray = 50};
    for (int i = 0; i < P; i++) {
        d[i] = i % 3 ? (unsigned char)(100 + i) : 50;
        e[i] = d[i] == 50 ? 0 : d[i] / 255.0;
    }
    check_png_layout("gray8-trns.png", W, H, &L, d, 1, e);

    /* RGB, 8 bits, Adam7 interlaced, a larger image so every pass has pixels */
    enum { IW = 19, IH = 13 };
    unsigned char *id = malloc(IW * IH * 3);
    double *ie = malloc(sizeof(double) * 3 * IW * IH);
    for (int y = 0; y < IH; y++)
        for (int x = 0; x < IW; x++)
            for (int k = 0; k < 3; k++) {
                id[(y * IW + x) * 3 + k] = pattern(x, y, k);
                ie[k * IW * IH + y * IW + x] = pattern(x, y, k) / 255.0;
            }
    L = (png_layout){.color_type = PNG_COLOR_TYPE_RGB, .depth = 8, .interlace = PNG_INTERLACE_ADAM7, .trans_gray = -1};
    check_png_layout("rgb8-interlaced.png", IW, IH, &L, id, 3, ie);
    free(id), free(ie);
}

/* ---- JPEG ------------------------------------------------------------------------------------------------ */

TEST(image_jpeg_rgb_gray_cmyk) {
    enum { W = 40, H = 24 };
    unsigned char px[W * H * 4];
    char path[600];
    for (int nc = 1; nc <= 4; nc++) {
        if (nc == 2) continue;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                for (int k = 0; k < nc; k++) px[(y * W + x) * nc + k] = pattern(x, y, k);
        tmp_path(path, sizeof path, nc == 1 ? "q100-gray.jpg" : nc == 3 ? "q100-rgb.jpg" : "q100-cmyk.jpg");
        write_jpeg_file(path, px, W, H, nc, 100);
        int c, h, w;
        float *x = NULL;
        df_status st = df_image_load(path, 0, &c, &h, &w, &x);
        CHECK(st == DF_OK, "nc=%d: %s", nc, df_error());
        if (st) continue;
        int ec = nc == 1 ? 1 : 3;
        CHECK(c == ec && h == H && w == W, "nc=%d: decoded %dx%dx%d", nc, c, h, w);
        if (c != ec || h != H || w != W) {
            free(x);
            continue;
        }
        /* CMYK files with an Adobe marker hold inverted inks: RGB = stored C (M, Y) x stored K */
        double worst = 0, mean = 0;
        for (int y = 0; y < H; y++)
            for (int xx = 0; xx < W; xx++)
                for (int k = 0; k < c; k++) {
                    const unsigned char *p = px + (y * W + xx) * nc;
                    double want = nc == 4 ? p[k] / 255.0 * (p[3] / 255.0) : p[k] / 255.0;
                    double d = fabs(x[(k * H + y) * W + xx] - (2 * want - 1));
                    worst = fmax(worst, d);
                    mean += d / (c * H * W);
                }
        /* quality 100 still quantises, and RGB goes through YCbCr: a few levels at worst */
        CHECK(worst <= 6 * Q, "nc=%d: quality-100 JPEG off by %.3g (%.1f levels)", nc, worst, worst / Q);
        CHECK(mean <= 1 * Q, "nc=%d: quality-100 JPEG off by %.2f levels on average", nc, mean / Q);
        free(x);
    }
}

/* ---- refusing bad files ----------------------------------------------------------------------------------- */

/* The file at `path` must be refused with `want` and a message naming it, and nothing returned. */
static void check_refused(const char *path, df_status want, const char *what) {
    int c = -1, h = -1, w = -1;
    float *x = (float *)1;
    df_status st = df_image_load(path, 0, &c, &h, &w, &x);
    CHECK(st == want, "%s: status %s (%s), expected %s", what, df_status_name(st), df_error(), df_status_name(want));
    CHECK(strstr(df_error(), path) != NULL, "%s: message names the file: \"%s\"", what, df_error());
    CHECK(x == NULL, "%s: no pixels returned", what);
    if (st == DF_OK) free(x);
}

/* Write data[0..len) with one byte at `flip` xor-ed (flip < 0: none). */
static void write_variant(const char *path, const unsigned char *data, size_t len, long flip) {
    unsigned char *b = malloc(len ? len : 1);
    memcpy(b, data, len);
    if (flip >= 0 && (size_t)flip < len) b[flip] ^= 0x5a;
    write_all(path, b, len);
    free(b);
}

static long find_bytes(const unsigned char *d, size_t len, const char *needle, size_t n) {
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(d + i, needle, n) == 0) return (long)i;
    return -1;
}

TEST(image_corrupt_files_refused) {
    enum { W = 64, H = 48 };
    df_rng r;
    df_rng_init(&r, 9);
    float *x = malloc(sizeof(float) * 3 * W * H);
    df_rng_fill_uniform(&r, x, (size_t)3 * W * H, -1, 1);   /* noise: large, incompressible data */
    char png[600], jpg[600], bad[600];
    tmp_path(png, sizeof png, "good.png");
    tmp_path(jpg, sizeof jpg, "good.jpg");
    CHECK_OK(df_image_save_png(png, x, 3, H, W));
    unsigned char px[W * H * 3];
    for (int i = 0; i < W * H * 3; i++) px[i] = (unsigned char)((x[i] + 1) * 127.5);
    write_jpeg_file(jpg, px, W, H, 3, 90);
    free(x);
    size_t plen = 0, jlen = 0;
    unsigned char *p = read_all(png, &plen), *j = read_all(jpg, &jlen);
    CHECK(p && j && plen > 1000 && jlen > 1000, "test files written (%zu and %zu bytes)", plen, jlen);
    if (!p || !j) return;

    tmp_path(bad, sizeof bad, "bad.png");
    write_variant(bad, p, plen / 2, -1);
    check_refused(bad, DF_ERR_FORMAT, "PNG cut in half");
    write_variant(bad, p, plen - 12, -1);
    check_refused(bad, DF_ERR_FORMAT, "PNG without IEND");
    write_variant(bad, p, 8, -1);
    check_refused(bad, DF_ERR_FORMAT, "PNG signature only");
    long idat = find_bytes(p, plen, "IDAT", 4);
    write_variant(bad, p, plen, idat + 500);
    check_refused(bad, DF_ERR_FORMAT, "PNG with a damaged IDAT byte (CRC)");
    write_variant(bad, p, plen, 24);   /* the bit depth: the IHDR CRC no longer matches */
    check_refused(bad, DF_ERR_FORMAT, "PNG with a damaged IHDR");

    tmp_path(bad, sizeof bad, "bad.jpg");
    write_variant(bad, j, jlen / 2, -1);
    check_refused(bad, DF_ERR_FORMAT, "JPEG cut in half");
    write_variant(bad, j, 40, -1);
    check_refused(bad, DF_ERR_FORMAT, "JPEG header only");
    long sof = find_bytes(j, jlen, "\xff\xc0", 2);
    unsigned char *z = malloc(jlen);
    memcpy(z, j, jlen);
    z[sof + 5] = z[sof + 6] = 0;   /* height 0 */
    write_all(bad, z, jlen);
    check_refused(bad, DF_ERR_FORMAT, "JPEG with height 0");
    free(z);

    tmp_path(bad, sizeof bad, "text.png");
    write_all(bad, "hello, I am not a picture\n", 26);
    check_refused(bad, DF_ERR_FORMAT, "a text file named .png");
    tmp_path(bad, sizeof bad, "empty.jpg");
    write_all(bad, "", 0);
    check_refused(bad, DF_ERR_FORMAT, "an empty file");
    tmp_path(bad, sizeof bad, "anim.gif");
    write_all(bad, "GIF89a\x01\x00\x01\x00\x00\x00\x00;", 14);
    check_refused(bad, DF_ERR_FORMAT, "a GIF");
    CHECK(strstr(df_error(), "GIF") != NULL, "the GIF is named as such: %s", df_error());
    tmp_path(bad, sizeof bad, "no-such-file.png");
    check_refused(bad, DF_ERR_IO, "a missing file");

    int c, h, w;
    float *y = NULL;
    CHECK(df_image_load(png, 2, &c, &h, &w, &y) == DF_ERR_ARG, "2 channels refused");
    free(p), free(j);
}

TEST(image_huge_dimensions_refused) {
    char path[600];
    /* a real 20000 x 1 PNG: small on disk, over the limit */
    enum { N = 20000 };
    unsigned char *row = calloc(N, 1);
    png_layout L = {.color_type = PNG_COLOR_TYPE_GRAY, .depth = 8, .trans_gray = -1};
    tmp_path(path, sizeof path, "wide.png");
    CHECK(write_png_file(path, N, 1, &L, row), "wrote a 20000x1 PNG");
    check_refused(path, DF_ERR_FORMAT, "20000x1 PNG");
    CHECK(strstr(df_error(), "16384") != NULL, "message gives the limit: %s", df_error());
    tmp_path(path, sizeof path, "tall.png");
    CHECK(write_png_file(path, 1, 16385, &L, row), "wrote a 1x16385 PNG");
    check_refused(path, DF_ERR_FORMAT, "1x16385 PNG");
    /* exactly at the limit is fine */
    tmp_path(path, sizeof path, "limit.png");
    CHECK(write_png_file(path, 16384, 1, &L, row), "wrote a 16384x1 PNG");
    int c, h, w;
    float *x = NULL;
    CHECK_OK(df_image_load(path, 0, &c, &h, &w, &x));
    CHECK(x && c == 1 && h == 1 && w == 16384, "16384x1 loads");
    free(x);
    free(row);

    /* a JPEG whose frame header claims 20000 x 30000 */
    unsigned char px[16 * 16];
    memset(px, 100, sizeof px);
    tmp_path(path, sizeof path, "huge.jpg");
    write_jpeg_file(path, px, 16, 16, 1, 90);
    size_t len = 0;
    unsigned char *j = read_all(path, &len);
    long sof = j ? find_bytes(j, len, "\xff\xc0", 2) : -1;
    CHECK(sof > 0, "SOF0 found");
    if (sof > 0) {
        j[sof + 5] = 30000 >> 8, j[sof + 6] = 30000 & 255, j[sof + 7] = N >> 8, j[sof + 8] = N & 255;
        write_all(path, j, len);
        check_refused(path, DF_ERR_FORMAT, "JPEG claiming 20000x30000");
        CHECK(strstr(df_error(), "20000x30000") != NULL, "message gives the size: %s", df_error());
    }
    free(j);
}

/* ---- resizing ------------------------------------------------------------------------------------------- */

TEST(image_resize_constant_and_area_mean) {
    /* a constant stays constant whatever the factors, with or without a crop */
    enum { C = 2, H = 23, W = 37 };
    float *in = malloc(sizeof(float) * C * H * W), *out = malloc(sizeof(float) * C * 64 * 80);
    for (int i = 0; i < C * H * W; i++) in[i] = 0.3f;
    const int sizes[][2] = {{7, 10}, {1, 1}, {23, 37}, {40, 64}, {5, 60}, {64, 3}};
    for (int s = 0; s < (int)(sizeof sizes / sizeof sizes[0]); s++)
        for (int crop = 0; crop < 2; crop++) {
            int oh = sizes[s][0], ow = sizes[s][1];
            CHECK_OK(df_image_resize(in, C, H, W, oh, ow, crop, out));
            double worst = 0;
            for (int i = 0; i < C * oh * ow; i++) worst = fmax(worst, fabs(out[i] - 0.3));
            CHECK(worst <= 1e-6, "constant -> %dx%d (crop %d) off by %.3g", oh, ow, crop, worst);
        }
    free(in), free(out);

    /* 2x shrink: each output is the mean of its 2x2 block */
    enum { C2 = 3, H2 = 8, W2 = 10 };
    df_rng r;
    df_rng_init(&r, 2);
    float a[C2 * H2 * W2], b[C2 * (H2 / 2) * (W2 / 2)];
    df_rng_fill_uniform(&r, a, C2 * H2 * W2, -1, 1);
    CHECK_OK(df_image_resize(a, C2, H2, W2, H2 / 2, W2 / 2, 0, b));
    double worst = 0;
    for (int k = 0; k < C2; k++)
        for (int y = 0; y < H2 / 2; y++)
            for (int x = 0; x < W2 / 2; x++) {
                const float *p = a + (k * H2 + 2 * y) * W2 + 2 * x;
                double mean = (p[0] + p[1] + p[W2] + p[W2 + 1]) / 4.0;
                worst = fmax(worst, fabs(b[(k * (H2 / 2) + y) * (W2 / 2) + x] - mean));
            }
    CHECK(worst <= 1e-6, "2x area shrink vs 2x2 means: off by %.3g", worst);

    /* 3 -> 2: fractional coverage, out0 = (p0 + p1 / 2) / 1.5, out1 = (p1 / 2 + p2) / 1.5 */
    float row[3] = {0.9f, -0.3f, 0.6f}, o2[2];
    CHECK_OK(df_image_resize(row, 1, 1, 3, 1, 2, 0, o2));
    CHECK_NEAR(o2[0], (0.9 - 0.15) / 1.5, 1e-6, "3 -> 2, first output");
    CHECK_NEAR(o2[1], (-0.15 + 0.6) / 1.5, 1e-6, "3 -> 2, second output");
}

TEST(image_resize_bilinear_ramp_and_crop) {
    /* growing a linear ramp gives the ramp at the sampled positions (half-pixel centres), clamped at the edges */
    enum { H = 6, W = 8, OH = 15, OW = 20 };
    float in[H * W], out[OH * OW];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) in[y * W + x] = (float)(0.1 * x - 0.05 * y + 0.2);
    CHECK_OK(df_image_resize(in, 1, H, W, OH, OW, 0, out));
    double worst = 0;
    for (int oy = 0; oy < OH; oy++)
        for (int ox = 0; ox < OW; ox++) {
            double sx = (ox + 0.5) * W / OW - 0.5, sy = (oy + 0.5) * H / OH - 0.5;
            sx = fmin(fmax(sx, 0), W - 1), sy = fmin(fmax(sy, 0), H - 1);
            worst = fmax(worst, fabs(out[oy * OW + ox] - (0.1 * sx - 0.05 * sy + 0.2)));
        }
    CHECK(worst <= 1e-6, "bilinear 6x8 -> 15x20 of a ramp: off by %.3g", worst);
    CHECK_NEAR(out[0], in[0], 1e-6, "the corner clamps to the corner pixel");

    /* same size: unchanged */
    float same[H * W];
    CHECK_OK(df_image_resize(in, 1, H, W, H, W, 1, same));
    CHECK(max_rel_diff(same, in, H * W, NULL) <= 1e-7, "same size is the identity");

    /* centre crop to a square: the middle columns (or rows) */
    float wide[4 * 8], sq[4 * 4];
    for (int i = 0; i < 32; i++) wide[i] = (float)i / 32;
    CHECK_OK(df_image_resize(wide, 1, 4, 8, 4, 4, 1, sq));
    worst = 0;
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 4; x++) worst = fmax(worst, fabs(sq[y * 4 + x] - wide[y * 8 + x + 2]));
    CHECK(worst <= 1e-7, "4x8 -> 4x4 crop takes columns 2..5 (off by %.3g)", worst);
    CHECK_OK(df_image_resize(wide, 1, 8, 4, 4, 4, 1, sq));   /* the same data seen as 8 rows of 4 */
    worst = 0;
    for (int i = 0; i < 16; i++) worst = fmax(worst, fabs(sq[i] - wide[8 + i]));
    CHECK(worst <= 1e-7, "8x4 -> 4x4 crop takes rows 2..5 (off by %.3g)", worst);

    /* crop then shrink: 8x16 -> 4x4 is columns 4..11, then 2x2 means */
    float big[8 * 16], small[16];
    for (int i = 0; i < 128; i++) big[i] = (float)sin(i * 0.37);
    CHECK_OK(df_image_resize(big, 1, 8, 16, 4, 4, 1, small));
    worst = 0;
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 4; x++) {
            const float *p = big + 2 * y * 16 + 4 + 2 * x;
            worst = fmax(worst, fabs(small[y * 4 + x] - (p[0] + p[1] + p[16] + p[17]) / 4.0));
        }
    CHECK(worst <= 1e-6, "8x16 -> 4x4 crop + shrink (off by %.3g)", worst);
    /* without the crop the whole width is squeezed in: 4x shrink across, 2x down */
    CHECK_OK(df_image_resize(big, 1, 8, 16, 4, 4, 0, small));
    double mean = 0;
    for (int y = 0; y < 2; y++)
        for (int x = 0; x < 4; x++) mean += big[y * 16 + x] / 8.0;
    CHECK_NEAR(small[0], mean, 1e-6, "8x16 -> 4x4 without crop: first output is the 2x4 mean");

    CHECK(df_image_resize(in, 1, H, W, 0, 4, 0, out) == DF_ERR_ARG, "zero height refused");
}

/* ---- grids and writing errors ----------------------------------------------------------------------------- */

TEST(image_grid_layout) {
    enum { N = 5, C = 3, H = 2, W = 3, COLS = 3, PAD = 2 };
    float x[N * C * H * W];
    /* image i, channel k: a constant that survives the 8-bit round trip exactly */
    for (int i = 0; i < N; i++)
        for (int k = 0; k < C; k++)
            for (int p = 0; p < H * W; p++) x[((i * C) + k) * H * W + p] = (float)((20 * i + 60 * k + p) * Q - 1);
    char path[600];
    tmp_path(path, sizeof path, "grid.png");
    CHECK_OK(df_image_save_grid(path, x, N, C, H, W, COLS, PAD));
    int c, gh, gw;
    float *g = NULL;
    CHECK_OK(df_image_load(path, 0, &c, &gh, &gw, &g));
    int ew = COLS * (W + PAD) + PAD, eh = 2 * (H + PAD) + PAD;
    CHECK(c == C && gw == ew && gh == eh, "grid %dx%dx%d, expected %dx%dx%d", c, gh, gw, C, eh, ew);
    if (g && c == C && gw == ew && gh == eh) {
        int bad = 0;
        for (int k = 0; k < C; k++)
            for (int y = 0; y < gh; y++)
                for (int xx = 0; xx < gw; xx++) {
                    int col = (xx - PAD) / (W + PAD), rowi = (y - PAD) / (H + PAD);
                    int tx = (xx - PAD) % (W + PAD), ty = (y - PAD) % (H + PAD);
                    int i = rowi * COLS + col;
                    int inside = xx >= PAD && y >= PAD && tx < W && ty < H && i < N;
                    double want = inside ? x[((i * C) + k) * H * W + ty * W + tx] : 1.0;   /* white border */
                    if (fabs(g[(k * gh + y) * gw + xx] - want) > 1e-6) bad++;
                }
        CHECK(bad == 0, "%d grid pixels not where expected", bad);
    }
    free(g);

    /* in memory; more columns than images are capped at n */
    int mh, mw;
    df_image_grid(NULL, 2, 1, 4, 5, 10, 1, NULL, &mh, &mw);
    CHECK(mh == 4 + 2 && mw == 2 * (5 + 1) + 1, "2 images in 10 columns: %dx%d", mh, mw);
    float two[2 * 20], m[6 * 13];
    for (int i = 0; i < 40; i++) two[i] = (float)i;
    df_image_grid(two, 2, 1, 4, 5, 10, 1, m, &mh, &mw);
    CHECK(m[0] == 1.0f && m[1 * 13 + 1] == 0.0f && m[1 * 13 + 7] == 20.0f && m[4 * 13 + 11] == 39.0f,
          "in-memory grid places the tiles");
}

TEST(image_save_errors) {
    float x[12] = {0};
    char path[600];
    tmp_path(path, sizeof path, "two-channels.png");
    CHECK(df_image_save_png(path, x, 2, 2, 3) == DF_ERR_ARG, "2 channels refused");
    CHECK(!file_exists(path), "nothing written for a refused call");
    tmp_path(path, sizeof path, "no/such/dir/x.png");
    CHECK(df_image_save_png(path, x, 1, 3, 4) == DF_ERR_IO, "missing directory is an I/O error");
    CHECK(strstr(df_error(), "x.png") != NULL, "message names the file: %s", df_error());
    CHECK(df_image_save_grid(path, x, 0, 1, 2, 2, 1, 0) == DF_ERR_ARG, "empty grid refused");
    CHECK(df_image_save_grid(path, x, 1, 1, 2, 2, 1, -1) == DF_ERR_ARG, "negative pad refused");
}

/* PSNR in dB of a against b (n values in [-1, 1], a peak-to-peak range of 2). */
static double psnr(const float *a, const float *b, size_t n) {
    double se = 0;
    for (size_t i = 0; i < n; i++) se += (double)(a[i] - b[i]) * (a[i] - b[i]);
    return se > 0 ? 10 * log10(4.0 / (se / (double)n)) : INFINITY;
}

/* JPEG output read back by the loader: the size and colour kept, close to the original at the default quality
 * and further at a low one, the comment in a COM marker; df_image_save picks the format by the extension. */
TEST(image_jpeg_save_round_trip) {
    enum { W = 37, H = 23 };
    float x[3 * H * W];
    for (int k = 0; k < 3; k++)   /* smooth gradients with a soft blob, like a generated image */
        for (int y = 0; y < H; y++)
            for (int xx = 0; xx < W; xx++) {
                double r2 = ((xx - 15.0) * (xx - 15.0) + (y - 11.0) * (y - 11.0)) / 40.0;
                x[(k * H + y) * W + xx] = (float)(0.8 * (xx / (W - 1.0) - 0.5) * (k == 1 ? -1 : 1) + 0.6 * exp(-r2) -
                                                  0.3 * (y / (H - 1.0)) * (k == 2));
            }
    const char *comment = "Steps: 50, Sampler: ddim, Seed: 7";
    char path[600];
    double db[2][2];   /* [gray, colour][quality 95, 10] */
    for (int c = 1; c <= 3; c += 2)
        for (int q = 0; q < 2; q++) {
            tmp_path(path, sizeof path, c == 1 ? "save-gray.jpg" : "save-rgb.jpg");
            CHECK_OK(df_image_save_jpeg(path, x, c, H, W, q ? 10 : 0, comment));
            int lc, lh, lw;
            float *y = NULL;
            CHECK_OK(df_image_load(path, 0, &lc, &lh, &lw, &y));
            CHECK(y && lc == c && lh == H && lw == W, "read back %dx%dx%d, wrote %dx%dx%d", lw, lh, lc, W, H, c);
            db[c / 3][q] = y && lc == c && lh == H && lw == W ? psnr(y, x, (size_t)c * H * W) : 0;
            free(y);
            size_t len = 0;
            unsigned char *f = read_all(path, &len);
            /* a COM marker: FF FE, a 16-bit length counting itself, the text */
            int found = 0;
            const size_t n = strlen(comment);
            for (size_t i = 0; f && i + 4 + n <= len && !found; i++)
                found = f[i] == 0xff && f[i + 1] == 0xfe && ((size_t)f[i + 2] << 8 | f[i + 3]) == n + 2 &&
                        memcmp(f + i + 4, comment, n) == 0;
            CHECK(found, "%s: no COM marker holding the comment", path);
            free(f);
        }
    printf("    JPEG PSNR: gray %.1f dB at quality 95, %.1f at 10; colour %.1f and %.1f\n", db[0][0], db[0][1],
           db[1][0], db[1][1]);
    CHECK(db[0][0] > 40 && db[1][0] > 38, "quality 95: PSNR %.1f dB (gray), %.1f (colour)", db[0][0], db[1][0]);
    CHECK(db[0][1] < db[0][0] - 6 && db[1][1] < db[1][0] - 6, "quality 10 is not worse than 95: %.1f, %.1f dB",
          db[0][1], db[1][1]);
    /* by extension, in any case */
    static const unsigned char jpeg_sig[3] = {0xff, 0xd8, 0xff}, png_sig[4] = {0x89, 'P', 'N', 'G'};
    const char *names[] = {"by-ext.JPEG", "by-ext.jpg", "by-ext.png"};
    for (int i = 0; i < 3; i++) {
        tmp_path(path, sizeof path, names[i]);
        CHECK_OK(df_image_save(path, x, 3, H, W, 90, "parameters", comment));
        size_t len = 0;
        unsigned char *f = read_all(path, &len);
        CHECK(f && len > 4 && memcmp(f, i < 2 ? jpeg_sig : png_sig, i < 2 ? 3 : 4) == 0, "%s: not a %s", names[i],
              i < 2 ? "JPEG" : "PNG");
        free(f);
    }
    tmp_path(path, sizeof path, "refused.jpg");
    CHECK(df_image_save_jpeg(path, x, 2, H, W, 0, NULL) == DF_ERR_ARG, "2 channels refused");
    CHECK(df_image_save_jpeg(path, x, 3, H, W, 101, NULL) == DF_ERR_ARG, "quality 101 refused");
    CHECK(!file_exists(path), "nothing written for a refused call");
    /* a directory of JPEGs */
    tmp_path(path, sizeof path, "each-jpg");
    CHECK_OK(df_image_save_each_as(path, "jpg", 0, x, 1, 3, H, W, NULL, NULL, NULL));
    tmp_path(path, sizeof path, "each-jpg/000000.jpg");
    CHECK(file_exists(path), "df_image_save_each_as wrote no %s", path);
}
