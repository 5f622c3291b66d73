/* Data loaders on small files the tests write (IDX raw and gzipped with labels, CIFAR-10 batches, image
 * folders with classes), malformed inputs, and the real Fashion-MNIST when Debian's package is there. */
#define _POSIX_C_SOURCE 200809L
#include "test.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <jpeglib.h>
#include <zlib.h>

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16), p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

/* Write bytes, gzipped when gz. */
static void write_bytes(const char *path, const unsigned char *b, size_t n, int gz) {
    if (gz) {
        gzFile f = gzopen(path, "wb");
        gzwrite(f, b, (unsigned)n);
        gzclose(f);
    } else {
        FILE *f = fopen(path, "wb");
        fwrite(b, 1, n, f);
        fclose(f);
    }
}

/* n images of h x w with pixel (i, y, x) = (i * 7 + y * 3 + x) % 256, labels i % 4. */
static void write_idx(const char *dir, const char *prefix, int n, int h, int w, int gz) {
    size_t sz = 16 + (size_t)n * h * w;
    unsigned char *b = malloc(sz), lb[8 + 64];
    put_be32(b, 0x803), put_be32(b + 4, (uint32_t)n), put_be32(b + 8, (uint32_t)h), put_be32(b + 12, (uint32_t)w);
    for (int i = 0; i < n; i++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) b[16 + ((size_t)i * h + y) * w + x] = (unsigned char)((i * 7 + y * 3 + x) % 256);
    char p[700];
    snprintf(p, sizeof p, "%s/%s-images-idx3-ubyte%s", dir, prefix, gz ? ".gz" : "");
    write_bytes(p, b, sz, gz);
    put_be32(lb, 0x801), put_be32(lb + 4, (uint32_t)n);
    for (int i = 0; i < n; i++) lb[8 + i] = (unsigned char)(i % 4);
    snprintf(p, sizeof p, "%s/%s-labels-idx1-ubyte%s", dir, prefix, gz ? ".gz" : "");
    write_bytes(p, lb, 8 + (size_t)n, gz);
    free(b);
}

TEST(data_idx_files) {
    const char *dir = test_tmp_dir();
    for (int gz = 0; gz < 2; gz++) {
        const char *prefix = gz ? "gz" : "raw";
        write_idx(dir, prefix, 10, 5, 6, gz);
        char p[600];
        snprintf(p, sizeof p, "%s/%s-images-idx3-ubyte%s", dir, prefix, gz ? ".gz" : "");
        df_dataset *d = NULL;
        CHECK_OK(df_dataset_open(p, 0, 0, &d));
        if (!d) continue;
        int c, h, w;
        df_dataset_shape(d, &c, &h, &w);
        CHECK(df_dataset_count(d) == 10 && c == 1 && h == 5 && w == 6, "shape %d x %d x %d x %d", df_dataset_count(d), c, h, w);
        CHECK(df_dataset_num_classes(d) == 4, "4 classes from the labels file, got %d", df_dataset_num_classes(d));
        float x[30], xf[30];
        df_dataset_get(d, 7, 0, x);
        df_dataset_get(d, 7, 1, xf);
        for (int y = 0; y < 5; y++)
            for (int xx = 0; xx < 6; xx++) {
                float want = (float)((7 * 7 + y * 3 + xx) % 256) * 2 / 255 - 1;
                CHECK_NEAR(x[y * 6 + xx], want, 1e-6, "pixel scaled to [-1, 1]");
                CHECK(xf[y * 6 + xx] == x[y * 6 + 5 - xx], "flip mirrors left-right");
            }
        CHECK(df_dataset_label(d, 7) == 3, "label 7 %% 4 = 3, got %d", df_dataset_label(d, 7));
        df_dataset_free(d);
        /* resized and converted to RGB */
        CHECK_OK(df_dataset_open(p, 4, 3, &d));
        if (d) {
            df_dataset_shape(d, &c, &h, &w);
            CHECK(c == 3 && h == 4 && w == 4, "converted shape %dx%dx%d", c, h, w);
            df_dataset_free(d);
        }
    }
    /* malformed: bad magic, truncated data, label count mismatch */
    unsigned char bad[16 + 20];
    put_be32(bad, 0x803), put_be32(bad + 4, 2), put_be32(bad + 8, 4), put_be32(bad + 12, 4);
    char p[600];
    snprintf(p, sizeof p, "%s/trunc-images-idx3-ubyte", dir);
    write_bytes(p, bad, sizeof bad, 0);   /* 2 images of 16 bytes need 32, 20 given */
    df_dataset *d = NULL;
    CHECK(df_dataset_open(p, 0, 0, &d) == DF_ERR_FORMAT && strstr(df_error(), "truncated"), "truncated: %s", df_error());
    put_be32(bad, 0x1234);
    snprintf(p, sizeof p, "%s/magic-images-idx3-ubyte", dir);
    write_bytes(p, bad, sizeof bad, 0);
    CHECK(df_dataset_open(p, 0, 0, &d) == DF_ERR_FORMAT && strstr(df_error(), "magic-images"), "bad magic: %s", df_error());
    CHECK(df_dataset_open("/nonexistent/x-images-idx3-ubyte", 0, 0, &d) == DF_ERR_IO, "missing file: %s", df_error());
    CHECK(d == NULL, "nothing returned on failure");
}

TEST(data_cifar10_batches) {
    char dir[600], p[700];
    snprintf(dir, sizeof dir, "%s/cifar", test_tmp_dir());
    mkdir(dir, 0755);
    const int per = 1 + 3072;
    for (int b = 1; b <= 2; b++) {
        int n = b == 1 ? 3 : 2;
        unsigned char *buf = malloc((size_t)n * per);
        for (int i = 0; i < n; i++) {
            buf[(size_t)i * per] = (unsigned char)((b * 10 + i) % 10);
            for (int j = 0; j < 3072; j++) buf[(size_t)i * per + 1 + j] = (unsigned char)((j + i + b) % 251);
        }
        snprintf(p, sizeof p, "%s/data_batch_%d.bin", dir, b);
        write_bytes(p, buf, (size_t)n * per, 0);
        free(buf);
    }
    df_dataset *d = NULL;
    CHECK_OK(df_dataset_open(dir, 0, 0, &d));
    if (d) {
        int c, h, w;
        df_dataset_shape(d, &c, &h, &w);
        CHECK(df_dataset_count(d) == 5 && c == 3 && h == 32 && w == 32, "5 images of 32x32x3, got %d", df_dataset_count(d));
        CHECK(df_dataset_label(d, 4) == (20 + 1) % 10, "label of the last image: %d", df_dataset_label(d, 4));
        CHECK(df_dataset_class_name(d, 3) && !strcmp(df_dataset_class_name(d, 3), "cat"), "CIFAR-10 class names");
        const df_dataset_report *r = df_dataset_get_report(d);
        CHECK(r->images == 5 && r->classes == 10 && !strcmp(r->source, dir) && !r->converted && !r->skipped,
              "the report: %d images, %d classes from %s", r->images, r->classes, r->source);
        float x[3072];
        df_dataset_get(d, 3, 0, x);   /* batch 2, record 0: byte (j + 0 + 2) % 251, channel-major as stored */
        CHECK_NEAR(x[1024 + 5], (float)((1024 + 5 + 2) % 251) * 2 / 255 - 1, 1e-6, "green channel pixel");
        df_dataset_free(d);
    }
    snprintf(p, sizeof p, "%s/odd.bin", dir);
    unsigned char junk[100] = {0};
    write_bytes(p, junk, sizeof junk, 0);
    CHECK(df_dataset_open(p, 0, 0, &d) == DF_ERR_FORMAT && strstr(df_error(), "odd.bin"), "not whole records: %s", df_error());
}

TEST(data_image_folders) {
    char dir[600], p[800];
    snprintf(dir, sizeof dir, "%s/folder", test_tmp_dir());
    mkdir(dir, 0755);
    const char *classes[2] = {"cats", "dogs"};
    float img[3 * 8 * 12];
    for (int k = 0; k < 2; k++) {
        snprintf(p, sizeof p, "%s/%s", dir, classes[k]);
        mkdir(p, 0755);
        for (int i = 0; i < 3; i++) {
            for (int j = 0; j < 3 * 8 * 12; j++) img[j] = (float)((j + 10 * i + 40 * k) % 200) / 100 - 1;
            snprintf(p, sizeof p, "%s/%s/img%d.png", dir, classes[k], i);
            CHECK_OK(df_image_save_png(p, img, 3, 8, 12));
        }
    }
    df_dataset *d = NULL;
    CHECK_OK(df_dataset_open(dir, 8, 0, &d));
    if (d) {
        int c, h, w;
        df_dataset_shape(d, &c, &h, &w);
        CHECK(df_dataset_count(d) == 6 && c == 3 && h == 8 && w == 8, "6 RGB images cropped to 8x8: %d %dx%dx%d",
              df_dataset_count(d), c, h, w);
        CHECK(df_dataset_num_classes(d) == 2 && !strcmp(df_dataset_class_name(d, 1), "dogs"), "classes from folders");
        CHECK(df_dataset_label(d, 4) == 1, "sorted order: the 5th image is a dog");
        df_dataset_free(d);
    }
    CHECK_OK(df_dataset_open(dir, 4, 1, &d));   /* gray, resized */
    if (d) {
        int c, h, w;
        df_dataset_shape(d, &c, &h, &w);
        CHECK(c == 1 && h == 4 && w == 4, "gray 4x4: %dx%dx%d", c, h, w);
        df_dataset_free(d);
    }
    snprintf(p, sizeof p, "%s/empty", test_tmp_dir());
    mkdir(p, 0755);
    CHECK(df_dataset_open(p, 0, 0, &d) != DF_OK && strstr(df_error(), "no .png"), "empty folder: %s", df_error());
}

/* ---- what loading a folder reports ---------------------------------------------------------------------- */

/* A PNG of w x h with colour type `type` (0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA) and `depth` bits,
 * written by hand so that the formats df_image_save_png does not write can be tested. */
static void write_png_raw(const char *path, int w, int h, int type, int depth) {
    int ch = type == 2 ? 3 : type == 4 ? 2 : type == 6 ? 4 : 1, row = 1 + w * ch * depth / 8;
    unsigned char *raw = calloc((size_t)row * h, 1), out[8192], ihdr[13], plte[3 * 4];
    for (int y = 0; y < h; y++)
        for (int i = 1; i < row; i++) raw[(size_t)y * row + i] = (unsigned char)(type == 3 ? (i + y) % 4 : (i * 9 + y * 5));
    uLongf zn = sizeof out;
    compress(out, &zn, raw, (uLong)row * h);
    put_be32(ihdr, (uint32_t)w), put_be32(ihdr + 4, (uint32_t)h);
    ihdr[8] = (unsigned char)depth, ihdr[9] = (unsigned char)type, ihdr[10] = ihdr[11] = ihdr[12] = 0;
    for (int i = 0; i < 12; i++) plte[i] = (unsigned char)(i * 20);
    FILE *f = fopen(path, "wb");
    fwrite("\x89PNG\r\n\x1a\n", 1, 8, f);
    const char *types[3] = {"IHDR", type == 3 ? "PLTE" : NULL, "IDAT"};
    const unsigned char *data[3] = {ihdr, plte, out};
    size_t lens[3] = {13, sizeof plte, zn};
    for (int k = 0; k < 4; k++) {
        const char *t = k < 3 ? types[k] : "IEND";
        if (!t) continue;
        size_t n = k < 3 ? lens[k] : 0;
        unsigned char hd[8];
        put_be32(hd, (uint32_t)n), memcpy(hd + 4, t, 4);
        uLong crc = crc32(crc32(0, hd + 4, 4), n ? data[k] : hd, (uInt)n);
        unsigned char cb[4];
        put_be32(cb, (uint32_t)crc);
        fwrite(hd, 1, 8, f), fwrite(n ? data[k] : hd, 1, n, f), fwrite(cb, 1, 4, f);
    }
    fclose(f);
    free(raw);
}

/* An 8x8 JPEG of nc = 1 (gray), 3 (RGB) or 4 (CMYK) components. */
static void write_jpeg8(const char *path, int nc) {
    unsigned char px[8 * 8 * 4];
    for (int i = 0; i < 8 * 8 * nc; i++) px[i] = (unsigned char)(i * 13);
    FILE *f = fopen(path, "wb");
    if (!f) return;
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr err;
    ci.err = jpeg_std_error(&err);
    jpeg_create_compress(&ci);
    jpeg_stdio_dest(&ci, f);
    ci.image_width = ci.image_height = 8, ci.input_components = nc;
    ci.in_color_space = nc == 1 ? JCS_GRAYSCALE : nc == 3 ? JCS_RGB : JCS_CMYK;
    jpeg_set_defaults(&ci);
    if (nc == 4) jpeg_set_colorspace(&ci, JCS_CMYK);
    jpeg_start_compress(&ci, TRUE);
    while (ci.next_scanline < ci.image_height) {
        JSAMPROW row = px + (size_t)ci.next_scanline * 8 * nc;
        jpeg_write_scanlines(&ci, &row, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    fclose(f);
}

/* Class folders named 0 .. 11 are classes 0 .. 11, not the name order "0", "1", "10", "11", "2" ...;
 * names that are not all numbers keep the name order. */
TEST(data_folder_numbered_classes_in_numeric_order) {
    char dir[600], p[800];
    snprintf(dir, sizeof dir, "%s/numbered", test_tmp_dir());
    mkdir(dir, 0755);
    float img[16];
    for (int k = 0; k < 12; k++) {
        snprintf(p, sizeof p, "%s/%d", dir, k);
        mkdir(p, 0755);
        for (int j = 0; j < 16; j++) img[j] = (float)k / 11 * 2 - 1;   /* class k's gray level */
        snprintf(p, sizeof p, "%s/%d/x.png", dir, k);
        CHECK_OK(df_image_save_png(p, img, 1, 4, 4));
    }
    df_dataset *d = NULL;
    CHECK_OK(df_dataset_open(dir, 0, 0, &d));
    if (!d) return;
    CHECK(df_dataset_num_classes(d) == 12, "12 classes, got %d", df_dataset_num_classes(d));
    for (int k = 0; k < 12; k++) {
        char want[16];
        snprintf(want, sizeof want, "%d", k);
        const char *name = df_dataset_class_name(d, k);
        CHECK(name && !strcmp(name, want), "class %d is named \"%s\", want \"%s\"", k, name ? name : "(null)", want);
        float x[16];
        df_dataset_get(d, k, 0, x);
        CHECK(df_dataset_label(d, k) == k && fabsf(x[0] - ((float)k / 11 * 2 - 1)) < 0.01f,
              "image %d: label %d, gray %.3f (folder %d's)", k, df_dataset_label(d, k), x[0], k);
    }
    df_dataset_free(d);
    /* one name that is not a number: name order, as before */
    snprintf(p, sizeof p, "%s/x", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/x/x.png", dir);
    CHECK_OK(df_image_save_png(p, img, 1, 4, 4));
    CHECK_OK(df_dataset_open(dir, 0, 0, &d));
    if (!d) return;
    const char *c2 = df_dataset_class_name(d, 2), *c12 = df_dataset_class_name(d, 12);
    CHECK(c2 && !strcmp(c2, "10") && c12 && !strcmp(c12, "x"), "name order with a non-number: class 2 \"%s\", 12 \"%s\"",
          c2 ? c2 : "(null)", c12 ? c12 : "(null)");
    df_dataset_free(d);
}

/* An unreadable image is skipped and counted (named in the report), or refused with strict; a folder
 * with no readable image is an error either way. */
TEST(data_folder_skips_unreadable_images) {
    char dir[600], p[800];
    snprintf(dir, sizeof dir, "%s/skips", test_tmp_dir());
    mkdir(dir, 0755);
    const char *classes[2] = {"a", "b"};
    float img[3 * 6 * 6];
    for (int j = 0; j < 3 * 6 * 6; j++) img[j] = (float)(j % 7) / 3 - 1;
    for (int k = 0; k < 2; k++) {
        snprintf(p, sizeof p, "%s/%s", dir, classes[k]);
        mkdir(p, 0755);
        for (int i = 0; i < 3; i++) {
            snprintf(p, sizeof p, "%s/%s/%d.png", dir, classes[k], i);
            CHECK_OK(df_image_save_png(p, img, 1, 6, 6));
        }
    }
    snprintf(p, sizeof p, "%s/a/bad.png", dir);
    write_bytes(p, (const unsigned char *)"not an image", 12, 0);
    snprintf(p, sizeof p, "%s/b/0.png", dir);   /* a.png's first 40 bytes: a cut-off PNG */
    char cut[800];
    snprintf(cut, sizeof cut, "%s/b/cut.jpg", dir);
    char *whole = NULL;
    size_t n = 0;
    CHECK_OK(df_read_file(p, &whole, &n));
    if (whole) write_bytes(cut, (const unsigned char *)whole, 40, 0);
    free(whole);

    df_dataset_params prm;
    df_dataset_params_default(&prm);
    CHECK(prm.strict == 0 && prm.size == 0 && prm.channels == 0, "defaults: not strict, the data's own size");
    df_dataset *d = NULL;
    CHECK_OK(df_dataset_load(dir, &prm, &d));
    if (d) {
        const df_dataset_report *r = df_dataset_get_report(d);
        printf("    skipped %d: %s (%s), %s (%s)\n", r->skipped, r->skipped_name[0], r->skipped_why[0],
               r->skipped_name[1], r->skipped_why[1]);
        CHECK(df_dataset_count(d) == 6 && r->images == 6 && r->classes == 2, "6 images in 2 classes kept: %d",
              df_dataset_count(d));
        CHECK(r->skipped == 2 && !strcmp(r->skipped_name[0], "a/bad.png") && !strcmp(r->skipped_name[1], "b/cut.jpg"),
              "2 skipped, named relative to the folder: %d, %s, %s", r->skipped, r->skipped_name[0], r->skipped_name[1]);
        CHECK(strstr(r->skipped_why[0], "not a PNG") && !strstr(r->skipped_why[0], dir), "why, without the path: %s",
              r->skipped_why[0]);
        CHECK(df_dataset_label(d, 3) == 1, "labels follow the images kept: image 3 is b's, label %d",
              df_dataset_label(d, 3));
        char note[1024];
        CHECK(df_dataset_report_note(r, DF_DATASET_NOTE_SKIPPED, note, sizeof note) == 1 &&
                  strstr(note, "skipped 2 unreadable images: a/bad.png (not a PNG") == note && strstr(note, ", b/cut.jpg ("),
              "the note: %s", note);
        CHECK(df_dataset_report_note(r, DF_DATASET_NOTE_CONVERTED, note, sizeof note) == 0 && !note[0],
              "nothing converted, nothing said: \"%s\"", note);
        df_dataset_free(d);
    }
    /* strict, and df_dataset_open, refuse naming the first bad file */
    prm.strict = 1;
    CHECK(df_dataset_load(dir, &prm, &d) == DF_ERR_FORMAT && strstr(df_error(), "a/bad.png") && !d,
          "strict refuses: %s", df_error());
    CHECK(df_dataset_open(dir, 0, 0, &d) == DF_ERR_FORMAT && strstr(df_error(), "a/bad.png"), "open refuses: %s",
          df_error());
    /* more bad files than the report names */
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/b/junk%d.png", dir, i);
        write_bytes(p, (const unsigned char *)"", 0, 0);
    }
    prm.strict = 0;
    CHECK_OK(df_dataset_load(dir, &prm, &d));
    if (d) {
        char note[1024];
        df_dataset_report_note(df_dataset_get_report(d), DF_DATASET_NOTE_SKIPPED, note, sizeof note);
        CHECK(strstr(note, "skipped 5 unreadable images: ") && strstr(note, ", and 2 more"), "5 skipped: %s", note);
        df_dataset_free(d);
    }
    /* nothing readable at all */
    snprintf(dir, sizeof dir, "%s/all-bad", test_tmp_dir());
    mkdir(dir, 0755);
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/%d.png", dir, i);
        write_bytes(p, (const unsigned char *)"GIF89a......", 12, 0);
    }
    CHECK(df_dataset_load(dir, &prm, &d) == DF_ERR_FORMAT && strstr(df_error(), "none of its 2 images") &&
              strstr(df_error(), "0.png") && !d,
          "a folder of unreadable images: %s", df_error());
}

/* Images changed to fit (resized, colour, alpha, palette, 16 bits) are counted with an example; the counts
 * note names the source. */
TEST(data_report_counts_conversions) {
    char dir[600], p[800];
    snprintf(dir, sizeof dir, "%s/formats", test_tmp_dir());
    mkdir(dir, 0755);
    float img[3 * 8 * 8];
    for (int j = 0; j < 3 * 8 * 8; j++) img[j] = (float)(j % 9) / 4 - 1;
    snprintf(p, sizeof p, "%s/a-gray.png", dir);
    CHECK_OK(df_image_save_png(p, img, 1, 8, 8));   /* already 8x8 gray: not converted */
    snprintf(p, sizeof p, "%s/b-rgb.png", dir);
    CHECK_OK(df_image_save_png(p, img, 3, 8, 8));
    snprintf(p, sizeof p, "%s/c-big.png", dir);
    CHECK_OK(df_image_save_png(p, img, 1, 6, 10));
    const struct { const char *name; int type, depth; } raw[] = {
        {"d-gray16.png", 0, 16}, {"e-rgba.png", 6, 8}, {"f-palette.png", 3, 8}, {"g-gray-alpha.png", 4, 8}};
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, raw[i].name);
        write_png_raw(p, 8, 8, raw[i].type, raw[i].depth);
    }
    df_dataset_params prm;
    df_dataset_params_default(&prm);
    prm.size = 8, prm.channels = 1;
    df_dataset *d = NULL;
    CHECK_OK(df_dataset_load(dir, &prm, &d));
    if (!d) return;
    const df_dataset_report *r = df_dataset_get_report(d);
    char note[1024];
    df_dataset_report_note(r, DF_DATASET_NOTE_CONVERTED, note, sizeof note);
    printf("    %s\n", note);
    CHECK(r->images == 7 && r->converted == 6 && r->skipped == 0, "6 of 7 converted: %d of %d", r->converted, r->images);
    CHECK(!strcmp(note, "converted 6 of 7 images to 8x8 gray, e.g. b-rgb.png (8x8 RGB)"), "the note: %s", note);
    df_dataset_free(d);
    /* each format as the example when alone */
    const char *want[] = {"8x8 16-bit gray", "8x8 RGBA", "8x8 palette", "8x8 gray+alpha"};
    for (int i = 0; i < 4; i++) {
        char one[700];
        snprintf(one, sizeof one, "%s/only-%d", test_tmp_dir(), i);
        mkdir(one, 0755);
        snprintf(p, sizeof p, "%s/%s", one, raw[i].name);
        write_png_raw(p, 8, 8, raw[i].type, raw[i].depth);
        prm.channels = raw[i].type == 0 || raw[i].type == 4 ? 1 : 3;
        CHECK_OK(df_dataset_load(one, &prm, &d));
        if (!d) continue;
        r = df_dataset_get_report(d);
        CHECK(r->converted == 1 && !strcmp(r->converted_from, want[i]), "%s: converted %d from \"%s\", want \"%s\"",
              raw[i].name, r->converted, r->converted_from, want[i]);
        df_dataset_free(d);
    }
    /* JPEG: the frame header says gray, colour or CMYK */
    const struct { int nc, channels, converted; const char *from; } jpegs[] = {
        {1, 1, 0, ""}, {1, 3, 1, "8x8 gray"}, {3, 3, 0, ""}, {3, 1, 1, "8x8 RGB"}, {4, 3, 1, "8x8 CMYK"}};
    for (int i = 0; i < 5; i++) {
        char one[700];
        snprintf(one, sizeof one, "%s/jpeg-%d", test_tmp_dir(), i);
        mkdir(one, 0755);
        snprintf(p, sizeof p, "%s/x.jpg", one);
        write_jpeg8(p, jpegs[i].nc);
        prm.size = 8, prm.channels = jpegs[i].channels;
        CHECK_OK(df_dataset_load(one, &prm, &d));
        if (!d) continue;
        r = df_dataset_get_report(d);
        CHECK(r->converted == jpegs[i].converted && !strcmp(r->converted_from, jpegs[i].from),
              "JPEG of %d components as %d channels: converted %d from \"%s\", want %d from \"%s\"", jpegs[i].nc,
              jpegs[i].channels, r->converted, r->converted_from, jpegs[i].converted, jpegs[i].from);
        df_dataset_free(d);
    }
    /* an IDX file converted as a whole; the counts note */
    write_idx(dir, "conv", 10, 5, 6, 0);
    snprintf(p, sizeof p, "%s/conv-images-idx3-ubyte", dir);
    prm.size = 4, prm.channels = 3;
    CHECK_OK(df_dataset_load(p, &prm, &d));
    if (d) {
        r = df_dataset_get_report(d);
        df_dataset_report_note(r, DF_DATASET_NOTE_CONVERTED, note, sizeof note);
        CHECK(!strcmp(note, "converted 10 of 10 images to 4x4 RGB, e.g. image 0 (6x5 gray)"), "IDX converted: %s", note);
        CHECK(df_dataset_report_note(r, DF_DATASET_NOTE_COUNTS, note, sizeof note) == 1 &&
                  !strncmp(note, "data: 10 images, 4 classes (", 28) && strstr(note, "conv-images-idx3-ubyte)"),
              "IDX counts: %s", note);
        df_dataset_free(d);
    }
    prm.size = 0, prm.channels = 0;
    CHECK_OK(df_dataset_load(p, &prm, &d));
    if (d) {
        CHECK(df_dataset_get_report(d)->converted == 0, "kept as stored: nothing converted");
        df_dataset_free(d);
    }
    float x[2 * 4] = {0};
    CHECK_OK(df_dataset_from_images(x, NULL, 2, 1, 2, 2, 0, NULL, &d));
    if (d) {
        df_dataset_report_note(df_dataset_get_report(d), DF_DATASET_NOTE_COUNTS, note, sizeof note);
        CHECK(!strcmp(note, "data: 2 images, no labels (images in memory)"), "from memory: %s", note);
        df_dataset_free(d);
    }
}

TEST(data_fashion_mnist) {
    struct stat sb;
    if (stat(DF_FASHION_MNIST_DIR "/train-images-idx3-ubyte.gz", &sb) != 0) {
        printf("    Fashion-MNIST is not installed; skipped\n");
        return;
    }
    df_dataset *d = NULL;
    CHECK_OK(df_dataset_open("fashion-mnist", 0, 0, &d));
    if (!d) return;
    int c, h, w;
    df_dataset_shape(d, &c, &h, &w);
    CHECK(df_dataset_count(d) == 60000 && c == 1 && h == 28 && w == 28, "60000 28x28 images: %d", df_dataset_count(d));
    CHECK(df_dataset_num_classes(d) == 10 && !strcmp(df_dataset_class_name(d, 9), "Ankle boot"), "class names");
    char note[256];
    df_dataset_report_note(df_dataset_get_report(d), DF_DATASET_NOTE_COUNTS, note, sizeof note);
    CHECK(!strcmp(note, "data: 60000 images, 10 classes (fashion-mnist)"), "counts: %s", note);
    int counts[10] = {0};
    for (int i = 0; i < 60000; i++) counts[df_dataset_label(d, i)]++;
    for (int k = 0; k < 10; k++) CHECK(counts[k] == 6000, "class %d has %d images (6000 each)", k, counts[k]);
    /* the mean pixel of Fashion-MNIST's training set is 0.2860 on [0, 1] */
    double s = 0;
    float x[784];
    for (int i = 0; i < 60000; i += 10) {
        df_dataset_get(d, i, 0, x);
        for (int j = 0; j < 784; j++) s += (x[j] + 1) / 2;
    }
    s /= 6000.0 * 784;
    CHECK_NEAR(s, 0.2860, 0.003, "mean pixel");
    df_dataset_free(d);
}

/* Captioned image folders: metadata.jsonl (a caption or a list), or a .txt beside each image; and the bad ones,
 * each refused in one line naming the file (and line). */
static void write_file(const char *path, const char *text, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(text, 1, n, f);
    fclose(f);
}

static void captioned_folder(const char *dir, int n) {
    char cmd[1200], p[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dir, dir);
    if (system(cmd) != 0) return;
    float px[4 * 4 * 3];
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < 48; k++) px[k] = (float)((i * 7 + k) % 5) / 2 - 1;
        snprintf(p, sizeof p, "%s/img%d.png", dir, i);
        CHECK_OK(df_image_save(p, px, 3, 4, 4, 0, NULL, NULL));
    }
}

TEST(dataset_captions) {
    char dir[512], p[700];
    snprintf(dir, sizeof dir, "%s/captioned", test_tmp_dir());
    captioned_folder(dir, 3);
    snprintf(p, sizeof p, "%s/metadata.jsonl", dir);
    const char *meta = "{\"file_name\": \"img0.png\", \"text\": \"a red heart\"}\n\n"
                       "{\"file_name\": \"./img2.png\", \"text\": [\"a blue circle\", \"a round blue shape\"], \"x\": 1}\n"
                       "{\"file_name\": \"img1.png\", \"text\": \"caf\\u00e9 \\ud83d\\ude42\"}\r\n";
    write_file(p, meta, strlen(meta));
    df_dataset *d = NULL;
    CHECK_OK(df_dataset_open(dir, 0, 0, &d));
    if (d) {
        CHECK(df_dataset_num_captions(d, 0) == 1 && !strcmp(df_dataset_caption(d, 0, 0), "a red heart") &&
                  df_dataset_num_captions(d, 2) == 2 && !strcmp(df_dataset_caption(d, 2, 1), "a round blue shape") &&
                  !strcmp(df_dataset_caption(d, 1, 0), "caf\xc3\xa9 \xf0\x9f\x99\x82") && !df_dataset_caption(d, 1, 1),
              "captions from metadata.jsonl read wrong");
        CHECK(strstr(df_dataset_description(d), "captioned") != NULL, "%s", df_dataset_description(d));
        df_dataset_free(d);
    }
    /* bad metadata: each refused naming the file and line, or the image */
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"{\"file_name\": \"img0.png\", \"text\": \"a\"}\n{\"file_name\": \"img1.png\"\n", "metadata.jsonl:2: not a JSON"},
        {"{\"file_name\": \"img0.png\", \"text\": \"a\"}\n{\"file_name\": \"img1.png\", \"text\": \"b\"}\n",
         "no row for the image img2.png"},
        {"{\"file_name\": \"nope.png\", \"text\": \"a\"}\n", "metadata.jsonl:1: no image nope.png"},
        {"{\"file_name\": \"img0.png\", \"text\": 5}\n", "metadata.jsonl:1: no \"text\""},
        {"{\"file_name\": \"img0.png\", \"text\": [\"a\", 3]}\n", "not a string"},
        {"{\"text\": \"a\"}\n", "no \"file_name\""},
        {"{\"file_name\": \"img0.png\", \"text\": \"a\"}\n{\"file_name\": \"img0.png\", \"text\": \"b\"}\n", "a second row"},
        {"{\"file_name\": \"img0.png\", \"text\": \"bad \xff\"}\n", "not UTF-8"},
    };
    for (int i = 0; i < (int)(sizeof bad / sizeof bad[0]); i++) {
        write_file(p, bad[i].text, strlen(bad[i].text));
        d = NULL;
        const df_status st = df_dataset_open(dir, 0, 0, &d);
        CHECK(st != DF_OK && !d && strstr(df_error(), bad[i].want) && !strchr(df_error(), '\n'),
              "bad metadata %d: \"%s\", want \"%s\"", i, df_error(), bad[i].want);
        df_dataset_free(d);
    }
    /* a caption file beside each image */
    remove(p);
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/img%d.txt", dir, i);
        const char *t = i == 1 ? "first caption\r\n\nsecond caption  \n" : "only one";
        write_file(p, t, strlen(t));
    }
    CHECK_OK(df_dataset_open(dir, 0, 0, &d));
    if (d) {
        CHECK(df_dataset_num_captions(d, 1) == 2 && !strcmp(df_dataset_caption(d, 1, 1), "second caption") &&
                  !strcmp(df_dataset_caption(d, 0, 0), "only one"),
              "captions from .txt files read wrong");
        df_dataset_free(d);
    }
    snprintf(p, sizeof p, "%s/img2.txt", dir);
    write_file(p, "bin\0ary", 7);
    CHECK(df_dataset_open(dir, 0, 0, &d) == DF_ERR_FORMAT && strstr(df_error(), "img2.txt") &&
              strstr(df_error(), "not text"),
          "a binary caption file: %s", df_error());
    remove(p);
    CHECK(df_dataset_open(dir, 0, 0, &d) == DF_ERR_FORMAT && strstr(df_error(), "img2.png has none"),
          "an image without a caption file: %s", df_error());
}
