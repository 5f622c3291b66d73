/* Data loaders on small files the tests write (IDX raw and gzipped with labels, CIFAR-10 batches, image
 * folders with classes), malformed inputs, and the real Fashion-MNIST when Debian's package is there. */
#define _POSIX_C_SOURCE 200809L
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
    char p[600];
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
