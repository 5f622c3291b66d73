/* NumPy .npy image arrays: save -> load round trips, byte-identity with what `diffuse sample --npy` wrote,
 * files written by NumPy itself (every dtype, layout and version the reader takes), and every bad file. */
#define _POSIX_C_SOURCE 200809L
#include "test.h"
#include "internal.h"
#include "npy.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- helpers ---------------------------------------------------------------------------------------- */

/* A .npy file in memory: preamble for version major.minor, `dict` padded with spaces and a newline to a
 * multiple of 64 bytes (pad = 0 leaves it bare), then `data`. Returns its length (buf holds cap bytes). */
static size_t make_npy(unsigned char *buf, size_t cap, int major, int minor, const char *dict, int pad,
                       const void *data, size_t dlen) {
    size_t pre = major == 1 ? 10 : 12, hl = strlen(dict);
    size_t total = pad ? (pre + hl + 1 + 63) / 64 * 64 : pre + hl;
    size_t hlen = total - pre;
    if (total + dlen > cap) {
        fprintf(stderr, "make_npy: %zu bytes do not fit %zu\n", total + dlen, cap);
        abort();
    }
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)major, buf[7] = (unsigned char)minor;
    for (size_t i = 0; i < pre - 8; i++) buf[8 + i] = (unsigned char)(hlen >> (8 * i));
    memcpy(buf + pre, dict, hl);
    if (pad) {
        memset(buf + pre + hl, ' ', total - pre - hl);
        buf[total - 1] = '\n';
    }
    if (dlen) memcpy(buf + total, data, dlen);
    return total + dlen;
}

/* The load must fail with a message naming the file and containing `words`, and return nothing. */
static void expect_refused(const char *what, const unsigned char *buf, size_t len, const char *words) {
    static float sentinel;
    float *x = &sentinel;   /* not NULL, so the check below sees the reset */
    int n = -1, c = -1, h = -1, w = -1;
    df_status st = df_npy_load_images_memory(buf, len, "bad.npy", &x, &n, &c, &h, &w);
    CHECK(st != DF_OK, "%s: accepted (%d images of %d x %d x %d)", what, n, c, h, w);
    if (st == DF_OK) {
        free(x);
        return;
    }
    const char *m = df_error();
    CHECK(strstr(m, words) != NULL, "%s: message \"%s\" lacks \"%s\"", what, m, words);
    CHECK(strstr(m, "bad.npy") != NULL, "%s: message \"%s\" does not name the file", what, m);
    CHECK(!strchr(m, '\n'), "%s: message \"%s\" is more than one line", what, m);
    CHECK(x == NULL && n == 0 && c == 0 && h == 0 && w == 0, "%s: outputs not reset on failure", what);
}

/* Load from memory; fails the test (and returns NULL) unless the sizes are the expected ones. */
static float *load_ok(const char *what, const unsigned char *buf, size_t len, int en, int ec, int eh, int ew) {
    float *x;
    int n, c, h, w;
    df_status st = df_npy_load_images_memory(buf, len, what, &x, &n, &c, &h, &w);
    CHECK(st == DF_OK, "%s: refused: %s", what, df_error());
    if (st) return NULL;
    CHECK(n == en && c == ec && h == eh && w == ew, "%s: %d images of %d x %d x %d, expected %d of %d x %d x %d",
          what, n, c, h, w, en, ec, eh, ew);
    if (n != en || c != ec || h != eh || w != ew) {
        free(x);
        return NULL;
    }
    return x;
}

/* The writer `diffuse sample --npy` had before the library's (cli/cmd_sample.c's write_npy), kept as
 * the reference the library's bytes must equal. */
static unsigned char *reference_npy(const float *x, int n, int c, int h, int w, size_t *len) {
    char header[128];
    int hl = snprintf(header, sizeof header, "{'descr': '|u1', 'fortran_order': False, 'shape': (%d, %d, %d, %d), }", n,
                      h, w, c);
    int total = 10 + hl + 1, padded = (total + 63) / 64 * 64;
    size_t data = (size_t)n * h * w * c;
    unsigned char *buf = malloc((size_t)padded + data);
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (unsigned char)((padded - 10) & 255), buf[9] = (unsigned char)((padded - 10) >> 8);
    memcpy(buf + 10, header, (size_t)hl);
    memset(buf + 10 + hl, ' ', (size_t)(padded - 10 - hl));
    buf[padded - 1] = '\n';
    unsigned char *d = buf + padded;
    for (int i = 0; i < n; i++)
        for (int y = 0; y < h; y++)
            for (int xx = 0; xx < w; xx++)
                for (int ch = 0; ch < c; ch++) {
                    float v = (x[(((size_t)i * c + ch) * h + y) * w + xx] + 1) * 127.5f + 0.5f;
                    *d++ = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
                }
    *len = (size_t)padded + data;
    return buf;
}

/* Random values in [-1, 1] with the ends, zero and the rounding midpoints among them. */
static float *test_images(size_t count, uint64_t seed) {
    float *x = malloc(count * sizeof(float));
    df_rng r;
    df_rng_init(&r, seed);
    df_rng_fill_uniform(&r, x, count, -1, 1);
    const float special[] = {-1, 1, 0, 0.5f / 127.5f - 1, 1 - 0.5f / 127.5f, 3.5f / 127.5f - 1};
    for (int i = 0; i < DF_COUNTOF(special) && (size_t)i < count; i++) x[i * 7 % count] = special[i];
    return x;
}

/* ---- save and load ---------------------------------------------------------------------------------- */

TEST(npy_round_trip_gray_and_rgb) {
    const int shapes[2][4] = {{3, 1, 5, 7}, {2, 3, 4, 6}};   /* n, c, h, w */
    for (int s = 0; s < 2; s++) {
        int n = shapes[s][0], c = shapes[s][1], h = shapes[s][2], w = shapes[s][3];
        size_t count = (size_t)n * c * h * w;
        float *x = test_images(count, 11 + (uint64_t)s);
        char path[1100];
        snprintf(path, sizeof path, "%s/round-trip-%d.npy", test_tmp_dir(), c);
        CHECK_OK(df_npy_save_images(path, x, n, c, h, w));
        float *y;
        int yn, yc, yh, yw;
        CHECK_OK(df_npy_load_images(path, &y, &yn, &yc, &yh, &yw));
        CHECK(yn == n && yc == c && yh == h && yw == w, "%s: read %d x %d x %d x %d, wrote %d x %d x %d x %d", path, yn,
              yc, yh, yw, n, c, h, w);
        if (y && yn == n && yc == c && yh == h && yw == w) {
            size_t at;
            double d = max_rel_diff(y, x, count, &at);   /* max |x| is 1: the absolute difference */
            CHECK(d <= 1.0 / 255 + 1e-6, "%s: largest difference %.3g at %zu (%.7f read, %.7f written), over 1/255",
                  path, d, at, y[at], x[at]);
            CHECK(y[0] == -1 && y[7 % count] == 1, "%s: the ends do not come back exactly: %.9g, %.9g", path, y[0],
                  y[7 % count]);
        }
        free(x), free(y);
    }
}

TEST(npy_save_clamps_out_of_range_and_nan) {
    float x[6] = {-3, 1.5f, NAN, INFINITY, -INFINITY, 0};
    unsigned char *b;
    size_t len;
    CHECK_OK(df_npy_encode_images("clamp.npy", x, 1, 1, 2, 3, &b, &len));
    if (!b) return;
    const unsigned char want[6] = {0, 255, 0, 255, 0, 128};
    CHECK(len == 128 + 6, "clamp.npy: %zu bytes, expected 134", len);
    for (int i = 0; i < 6 && len == 134; i++)
        CHECK(b[128 + i] == want[i], "clamp.npy: value %d (%g) written as %d, expected %d", i, x[i], b[128 + i],
              want[i]);
    free(b);
}

TEST(npy_save_is_byte_identical_to_the_sample_writer) {
    const int shapes[3][4] = {{4, 1, 28, 28}, {3, 3, 5, 7}, {12345, 1, 1, 2}};
    for (int s = 0; s < 3; s++) {
        int n = shapes[s][0], c = shapes[s][1], h = shapes[s][2], w = shapes[s][3];
        size_t count = (size_t)n * c * h * w;
        float *x = test_images(count, 5 + (uint64_t)s);
        x[count / 2] = 1.7f, x[count / 3] = -1.2f;   /* clamped the same way */
        size_t rlen, len;
        unsigned char *ref = reference_npy(x, n, c, h, w, &rlen), *b;
        CHECK_OK(df_npy_encode_images("same.npy", x, n, c, h, w, &b, &len));
        size_t first = 0;
        while (b && first < DF_MIN(len, rlen) && b[first] == ref[first]) first++;
        CHECK(b && len == rlen && first == len, "shape %d x %d x %d x %d: %zu bytes vs %zu, first difference at %zu", n,
              c, h, w, len, rlen, first);
        free(x), free(ref), free(b);
    }
}

TEST(npy_save_refuses_bad_arguments) {
    float x[4] = {0};
    char path[1100];
    snprintf(path, sizeof path, "%s/no-such-dir/x.npy", test_tmp_dir());
    CHECK(df_npy_save_images(path, x, 0, 1, 2, 2) == DF_ERR_ARG, "zero images were written");
    CHECK(strstr(df_error(), path), "message \"%s\" does not name %s", df_error(), path);
    CHECK(df_npy_save_images(path, x, 1, 1, 2, DF_MAX_SIZE + 1) == DF_ERR_ARG, "a too wide image was written");
    CHECK(df_npy_save_images(path, x, 1, 1, 2, 2) == DF_ERR_IO, "a file in a missing directory was written");
    CHECK(strstr(df_error(), "no-such-dir"), "message \"%s\" does not name the file", df_error());
}

/* ---- files NumPy wrote ------------------------------------------------------------------------------ */

/* The values the generator script writes at flat index k of the file: uint8 (k * 37 + 11) % 256, floats
 * (k * 7 % 101) / 100 rounded to the dtype. */
static float numpy_expected(size_t k, int bits) {
    if (bits == 8) return (float)(2 * (((k * 37 + 11) % 256) / 255.0) - 1);
    double v = (double)(k * 7 % 101) / 100.0;
    if (bits == 32) v = (float)v;
    return (float)(2 * v - 1);
}

static const char numpy_script[] =
    "import sys, numpy as np\n"
    "from numpy.lib import format as fmt\n"
    "d = sys.argv[1]\n"
    "def vals(shape, dt):\n"
    "    k = np.arange(int(np.prod(shape)), dtype=np.int64)\n"
    "    if np.dtype(dt) == np.uint8: return ((k * 37 + 11) % 256).astype(np.uint8).reshape(shape)\n"
    "    return ((k * 7 % 101) / 100.0).astype(dt).reshape(shape)\n"
    "np.save(d + '/u8-gray.npy', vals((3, 5, 4), np.uint8))\n"
    "np.save(d + '/u8-c1.npy', vals((2, 4, 6, 1), np.uint8))\n"
    "np.save(d + '/f32-rgb.npy', vals((2, 3, 5, 3), np.float32))\n"
    "np.save(d + '/f64-gray.npy', vals((2, 4, 3), np.float64))\n"
    "np.save(d + '/f64-rgb.npy', vals((1, 2, 2, 3), np.float64))\n"
    "with open(d + '/v2-rgb.npy', 'wb') as f: fmt.write_array(f, vals((2, 3, 4, 3), np.uint8), version=(2, 0))\n"
    "with open(d + '/v3-f32.npy', 'wb') as f: fmt.write_array(f, vals((1, 3, 3, 1), np.float32), version=(3, 0))\n"
    "np.save(d + '/fortran.npy', np.asfortranarray(vals((2, 3, 4, 3), np.uint8)))\n"
    "np.save(d + '/int64.npy', np.zeros((2, 3, 3), np.int64))\n"
    "np.save(d + '/big-endian.npy', vals((2, 3, 3), '>f4'))\n"
    "np.save(d + '/rgba.npy', vals((2, 3, 3, 4), np.uint8))\n"
    "np.save(d + '/above-one.npy', np.full((1, 2, 2), 3.5, np.float32))\n"
    "np.save(d + '/flat.npy', vals((12,), np.uint8))\n"
    "np.save(d + '/empty.npy', np.zeros((0, 4, 4), np.uint8))\n"
    /* and what the library wrote, as NumPy sees it */
    "for name in ('ours-gray', 'ours-rgb'):\n"
    "    a = np.load(d + '/' + name + '.npy')\n"
    "    open(d + '/' + name + '.txt', 'w').write('%s %s' % (a.dtype, a.shape))\n"
    "    open(d + '/' + name + '.raw', 'wb').write(a.tobytes())\n";

/* Runs the script in dir; 0 when python3 is not there (the caller skips). */
static int run_numpy(const char *dir) {
    if (access("/usr/bin/python3", X_OK) != 0) {
        printf("    /usr/bin/python3 is missing: NumPy's own files not tested\n");
        return 0;
    }
    char p[1200], cmd[2600];
    snprintf(p, sizeof p, "%s/make_npy.py", dir);
    FILE *f = fopen(p, "w");
    if (!f || fputs(numpy_script, f) < 0 || fclose(f) != 0) {
        CHECK(0, "%s: cannot write", p);
        return 0;
    }
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' '%s'", p, dir);
    int rc = system(cmd);
    CHECK(rc == 0, "%s failed (status %d): is python3-numpy installed?", cmd, rc);
    return rc == 0;
}

TEST(npy_reads_files_numpy_wrote) {
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/numpy", test_tmp_dir());
    CHECK_OK(df_mkdir_p(dir));
    /* ours first, for NumPy to read back */
    const int ours[2][4] = {{2, 1, 3, 4}, {2, 3, 4, 5}};
    unsigned char *ours_bytes[2] = {NULL, NULL};
    size_t ours_len[2] = {0, 0};
    for (int s = 0; s < 2; s++) {
        const int *sh = ours[s];
        float *x = test_images((size_t)sh[0] * sh[1] * sh[2] * sh[3], 40 + (uint64_t)s);
        char p[1200];
        snprintf(p, sizeof p, "%s/ours-%s.npy", dir, s ? "rgb" : "gray");
        CHECK_OK(df_npy_save_images(p, x, sh[0], sh[1], sh[2], sh[3]));
        CHECK_OK(df_npy_encode_images(p, x, sh[0], sh[1], sh[2], sh[3], &ours_bytes[s], &ours_len[s]));
        free(x);
    }
    if (!run_numpy(dir)) {
        free(ours_bytes[0]), free(ours_bytes[1]);
        return;
    }
    for (int s = 0; s < 2; s++) {
        char p[1200], want[64], *got;
        size_t len;
        const int *sh = ours[s];
        snprintf(want, sizeof want, "uint8 (%d, %d, %d, %d)", sh[0], sh[2], sh[3], sh[1]);
        snprintf(p, sizeof p, "%s/ours-%s.txt", dir, s ? "rgb" : "gray");
        CHECK_OK(df_read_file(p, &got, &len));
        CHECK(got && strcmp(got, want) == 0, "NumPy reads ours as \"%s\", expected \"%s\"", got ? got : "", want);
        free(got);
        snprintf(p, sizeof p, "%s/ours-%s.raw", dir, s ? "rgb" : "gray");
        CHECK_OK(df_read_file(p, &got, &len));
        size_t dlen = (size_t)sh[0] * sh[1] * sh[2] * sh[3];
        CHECK(got && ours_bytes[s] && len == dlen && memcmp(got, ours_bytes[s] + ours_len[s] - dlen, dlen) == 0,
              "NumPy's values of %s differ from what the library wrote (%zu bytes, expected %zu)", p, len, dlen);
        free(got), free(ours_bytes[s]);
    }

    /* NumPy's files: name, bits of the dtype, file shape (N, H, W[, C]) */
    const struct { const char *name; int bits, n, h, w, c; } good[] = {
        {"u8-gray", 8, 3, 5, 4, 0},    {"u8-c1", 8, 2, 4, 6, 1},   {"f32-rgb", 32, 2, 3, 5, 3}, {"f64-gray", 64, 2, 4, 3, 0},
        {"f64-rgb", 64, 1, 2, 2, 3},   {"v2-rgb", 8, 2, 3, 4, 3},  {"v3-f32", 32, 1, 3, 3, 1},
    };
    for (int i = 0; i < DF_COUNTOF(good); i++) {
        char p[1200];
        snprintf(p, sizeof p, "%s/%s.npy", dir, good[i].name);
        float *x;
        int n, c, h, w, ec = good[i].c ? good[i].c : 1;
        df_status st = df_npy_load_images(p, &x, &n, &c, &h, &w);
        CHECK(st == DF_OK, "%s: refused: %s", p, df_error());
        if (st) continue;
        CHECK(n == good[i].n && c == ec && h == good[i].h && w == good[i].w, "%s: %d x %d x %d x %d, expected %d x %d x %d x %d",
              p, n, c, h, w, good[i].n, ec, good[i].h, good[i].w);
        if (n == good[i].n && c == ec && h == good[i].h && w == good[i].w) {
            double worst = 0;
            size_t worst_at = 0;
            for (int k = 0; k < n; k++)   /* file (N, H, W, C) at flat index ((k*H + y)*W + xx)*C + ch */
                for (int ch = 0; ch < c; ch++)
                    for (int y = 0; y < h; y++)
                        for (int xx = 0; xx < w; xx++) {
                            size_t at = (((size_t)k * c + ch) * h + y) * w + xx;
                            float e = numpy_expected((((size_t)k * h + y) * w + xx) * c + ch, good[i].bits);
                            if (fabs((double)x[at] - e) > worst || x[at] != x[at]) worst = fabs((double)x[at] - e), worst_at = at;
                        }
            CHECK(worst <= 1e-7, "%s: largest difference %.3g at %zu (%.9g read)", p, worst, worst_at, x[worst_at]);
        }
        free(x);
    }

    /* and NumPy's files the reader must refuse */
    const struct { const char *name, *words; } bad[] = {
        {"fortran", "fortran_order is True: store it C-ordered (np.ascontiguousarray)"},
        {"int64", "dtype '<i8' (int64): expected uint8 images or float32/float64 in [0, 1]"},
        {"big-endian", "big-endian float32"},
        {"rgba", "4 channels"},
        {"above-one", "values must be in [0, 1]: found 3.5 at index (0, 0, 0)"},
        {"flat", "shape (12,): expected images (N, H, W) or (N, H, W, C)"},
        {"empty", "holds no images"},
    };
    for (int i = 0; i < DF_COUNTOF(bad); i++) {
        char p[1200];
        snprintf(p, sizeof p, "%s/%s.npy", dir, bad[i].name);
        float *x = NULL;
        int n, c, h, w;
        df_status st = df_npy_load_images(p, &x, &n, &c, &h, &w);
        CHECK(st == DF_ERR_FORMAT, "%s: status %d (%s), expected a format error", p, st, df_error());
        CHECK(strstr(df_error(), bad[i].words) && strstr(df_error(), p), "%s: message \"%s\" lacks \"%s\" or the path",
              p, df_error(), bad[i].words);
        CHECK(!x, "%s: pixels returned on failure", p);
        free(x);
    }
}

/* ---- the header grammar ----------------------------------------------------------------------------- */

TEST(npy_header_any_dict_layout) {
    const unsigned char px[12] = {0, 255, 51, 102, 153, 204, 1, 2, 3, 4, 5, 6};   /* (2, 2, 3) */
    const char *dicts[] = {
        "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 2, 3), }",
        "{\"shape\": (2, 2, 3), \"fortran_order\": False, \"descr\": \"|u1\"}",
        "{'fortran_order':False,'descr':'<u1','shape':(2,2,3,)}",
        "  {\t'descr' : 'u1' ,\n 'shape' : ( 2 , 2 , 3 ) , 'fortran_order' : False , }  \n",
        "{'descr': '>u1', 'fortran_order': False, 'shape': (2L, 2L, 3L), }",
    };
    unsigned char buf[512];
    for (int i = 0; i < DF_COUNTOF(dicts); i++)
        for (int pad = 0; pad < 2; pad++) {
            size_t len = make_npy(buf, sizeof buf, 1 + i % 3, 0, dicts[i], pad, px, sizeof px);
            float *x = load_ok(dicts[i], buf, len, 2, 1, 2, 3);
            if (!x) continue;
            for (int k = 0; k < 12; k++)
                CHECK_NEAR(x[k], 2 * (px[k] / 255.0) - 1, 1e-7, dicts[i]);
            free(x);
        }
    /* (N, H, W, 3) comes back as (N, 3, H, W) */
    const unsigned char rgb[12] = {10, 20, 30, 11, 21, 31, 12, 22, 32, 13, 23, 33};   /* (1, 2, 2, 3) */
    size_t len = make_npy(buf, sizeof buf, 1, 0, "{'descr': '|u1', 'fortran_order': False, 'shape': (1, 2, 2, 3), }",
                          1, rgb, sizeof rgb);
    float *x = load_ok("rgb", buf, len, 1, 3, 2, 2);
    for (int ch = 0; x && ch < 3; ch++)
        for (int p = 0; p < 4; p++)
            CHECK_NEAR(x[ch * 4 + p], 2 * ((10 * (ch + 1) + p) / 255.0) - 1, 1e-7, "rgb channel-first");
    free(x);
}

TEST(npy_refuses_bad_files) {
    static unsigned char buf[1 << 16];
    unsigned char px[64] = {0};
    const char *ok_dict = "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 2, 3), }";
    size_t len;
#define DICT(d) make_npy(buf, sizeof buf, 1, 0, d, 1, px, 12)

    /* the preamble */
    expect_refused("empty", buf, 0, "empty file");
    len = DICT(ok_dict);
    buf[5] = 'X';
    expect_refused("bad magic", buf, len, "bad magic");
    expect_refused("a PNG", (const unsigned char *)"\x89PNG\r\n\x1a\n", 8, "bad magic");
    len = DICT(ok_dict);
    expect_refused("magic only", buf, 6, "truncated header");
    expect_refused("no header length", buf, 9, "truncated header");
    expect_refused("header cut", buf, 40, "truncated header");
    len = make_npy(buf, sizeof buf, 4, 0, ok_dict, 1, px, 12);
    expect_refused("version 4.0", buf, len, "version 4.0 is not supported");
    len = make_npy(buf, sizeof buf, 1, 1, ok_dict, 1, px, 12);
    expect_refused("version 1.1", buf, len, "version 1.1 is not supported");
    len = make_npy(buf, sizeof buf, 2, 0, ok_dict, 1, px, 12);
    buf[11] = 0x40;   /* a 1 GiB header in a short file */
    expect_refused("v2 header length", buf, len, "truncated header");

    /* the dict */
    const struct { const char *dict, *words; } dicts[] = {
        {"{'descr': '|u1', 'fortran_order': True, 'shape': (2, 2, 3), }", "np.ascontiguousarray"},
        {"{'descr': '<i8', 'fortran_order': False, 'shape': (2, 2, 3), }",
         "dtype '<i8' (int64): expected uint8 images or float32/float64 in [0, 1]"},
        {"{'descr': '|b1', 'fortran_order': False, 'shape': (2, 2, 3), }", "(bool)"},
        {"{'descr': '<f2', 'fortran_order': False, 'shape': (2, 2, 3), }", "(float16)"},
        {"{'descr': '<U5', 'fortran_order': False, 'shape': (2, 2, 3), }", "(str)"},
        {"{'descr': '<c8', 'fortran_order': False, 'shape': (2, 2, 3), }", "(complex64)"},
        {"{'descr': 'zz', 'fortran_order': False, 'shape': (2, 2, 3), }", "dtype 'zz': expected uint8"},
        {"{'descr': '>f4', 'fortran_order': False, 'shape': (2, 2, 3), }", "big-endian float32"},
        {"{'descr': '>f8', 'fortran_order': False, 'shape': (2, 2, 3), }", "big-endian float64"},
        {"{'descr': 'f4', 'fortran_order': False, 'shape': (2, 2, 3), }", "byte order"},
        {"{'descr': [('r', '|u1')], 'fortran_order': False, 'shape': (2, 2, 3), }", "structured dtype"},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (12,), }", "expected images (N, H, W)"},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (), }", "expected images (N, H, W)"},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (1, 1, 2, 3, 2), }", "expected images (N, H, W)"},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (1, 1, 3, 4), }", "4 channels"},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (2, 1, 3, 2), }", "2 channels"},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (0, 2, 3), }", "holds no images"},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (2, 0, 3), }", "empty images"},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (10000001, 1, 1), }", "too many images (at most 10000000)"},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (99999999999999999999999, 1, 1), }", "too many images"},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (1, 4097, 1), }", "at most 4096 pixels a side"},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (1, 1, 4294967296), }", "at most 4096 pixels a side"},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (1, 2, 3), }", "6 bytes after the data"},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (3, 2, 3), }", "truncated data: shape (3, 2, 3) needs 18"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2, 3), }", "truncated data"},
        {"{'descr': '|u1', 'fortran_order': False, }", "has no 'shape'"},
        {"{'shape': (2, 2, 3), 'fortran_order': False}", "has no 'descr'"},
        {"{'descr': '|u1', 'shape': (2, 2, 3)}", "has no 'fortran_order'"},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (2, 2, 3), 'dtype': 'u1'}", "unexpected key 'dtype'"},
        {"{'descr': '|u1', 'descr': '|u1', 'fortran_order': False, 'shape': (2, 2, 3)}", "'descr' twice"},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (2, 2, 3), ", "bad .npy header"},
        {"{'descr': '|u1, 'fortran_order': False, 'shape': (2, 2, 3)}", "bad .npy header"},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (2, 2, 3)} x", "only padding after the dict"},
        {"{'descr': '|u1', 'fortran_order': 0, 'shape': (2, 2, 3)}", "True or False"},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': (-2, 2, 3)}", "a size"},
        {"{'descr': '|u1', 'fortran_order': False, 'shape': [2, 2, 3]}", "a tuple"},
        {"{'descr': '|u1' 'fortran_order': False, 'shape': (2, 2, 3)}", "',' or '}'"},
        {"{'descr': '\\x7cu1', 'fortran_order': False, 'shape': (2, 2, 3)}", "without escapes"},
        {"{'descr' '|u1', 'fortran_order': False, 'shape': (2, 2, 3)}", "':' after a key"},
        {"[('descr', '|u1')]", "a Python dict"},
        {"", "a Python dict"},
        {"{descr: '|u1'}", "a quoted string"},
    };
    for (int i = 0; i < DF_COUNTOF(dicts); i++) {
        len = DICT(dicts[i].dict);
        expect_refused(dicts[i].dict, buf, len, dicts[i].words);
    }
    {   /* 65 sizes */
        char d[400];
        int k = snprintf(d, sizeof d, "{'descr': '|u1', 'fortran_order': False, 'shape': (");
        for (int i = 0; i < 65; i++) k += snprintf(d + k, sizeof d - (size_t)k, "1, ");
        snprintf(d + k, sizeof d - (size_t)k, "), }");
        len = DICT(d);
        expect_refused("65 dimensions", buf, len, "more than 64 dimensions");
    }
    /* a NUL inside the descr is not a byte order mark */
    len = make_npy(buf, sizeof buf, 1, 0, "{'descr': '?u1', 'fortran_order': False, 'shape': (2, 2, 3), }", 1, px, 12);
    buf[10 + 11] = 0;
    expect_refused("NUL in descr", buf, len, "dtype '");

    /* float values */
    const struct { float v; const char *words; } fv[] = {
        {3.5f, "values must be in [0, 1]: found 3.5 at index (0, 1, 0)"},
        {-0.25f, "found -0.25 at index (0, 1, 0)"},
        {NAN, "found nan at index (0, 1, 0)"},
        {INFINITY, "found inf"},
        {1.0000001f, "found 1.00000012"},
    };
    for (int i = 0; i < DF_COUNTOF(fv); i++) {
        float f[4] = {0.5f, 1, fv[i].v, 0};   /* (1, 2, 2): index 2 is (0, 1, 0) */
        len = make_npy(buf, sizeof buf, 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 2), }", 1, f,
                       sizeof f);
        expect_refused(fv[i].words, buf, len, fv[i].words);
    }
    double dv[6] = {0, 0.25, 1, 0.5, 0.75, -1e-300};   /* (1, 1, 2, 3): index 5 is (0, 0, 1, 2) */
    len = make_npy(buf, sizeof buf, 1, 0, "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1, 2, 3), }", 1, dv,
                   sizeof dv);
    expect_refused("float64 below 0", buf, len, "found -1e-300 at index (0, 0, 1, 2)");

    /* through a file: the message names the path; a missing file is an I/O error */
    char p[1100];
    snprintf(p, sizeof p, "%s/int64.npy", test_tmp_dir());
    len = DICT("{'descr': '<i8', 'fortran_order': False, 'shape': (1, 1, 1), }") - 12 + 8;
    FILE *f = fopen(p, "wb");
    CHECK(f && fwrite(buf, 1, len, f) == len && fclose(f) == 0, "%s: cannot write", p);
    float *x = NULL;
    int n, c, h, w;
    CHECK(df_npy_load_images(p, &x, &n, &c, &h, &w) == DF_ERR_FORMAT && strstr(df_error(), p) &&
              strstr(df_error(), "(int64)"),
          "%s: \"%s\"", p, df_error());
    free(x);
    snprintf(p, sizeof p, "%s/missing.npy", test_tmp_dir());
    CHECK(df_npy_load_images(p, &x, &n, &c, &h, &w) == DF_ERR_IO && strstr(df_error(), p) && !x,
          "%s: \"%s\"", p, df_error());
#undef DICT
}
