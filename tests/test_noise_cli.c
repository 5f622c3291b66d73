/* `diffuse noise` end to end: the strip's layout, the clean first tile, the signal fading as sqrt(abar_t)
 * with one shared noise sample, and one-line errors with no output file on bad arguments. */
#define _POSIX_C_SOURCE 200809L
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define PAD 4   /* the strip's border for tiles up to 160 pixels */

/* Run `diffuse noise ARGS`; returns the exit code, with all of stderr in err. */
static int run_noise(const char *args, char *err, size_t cap) {
    char full[4096];
    snprintf(full, sizeof full, "noise %s", args);
    return test_run_diffuse(NULL, 0, full, NULL, 0, err, cap);
}

static void tmp_path(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", test_tmp_dir(), name); }

static int file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

/* A smooth RGB picture (3, h, w) in [-0.6, 0.6], written as a PNG; returns its path in buf. */
static void write_input(char *buf, size_t cap, int h, int w) {
    tmp_path(buf, cap, "noise-in.png");
    float *x = malloc(sizeof(float) * 3 * h * w);
    for (int k = 0; k < 3; k++)
        for (int y = 0; y < h; y++)
            for (int i = 0; i < w; i++)
                x[(k * h + y) * w + i] = (float)(0.6 * sin(0.23 * i + 0.31 * y + 2.1 * k) * cos(0.17 * y - 0.11 * i));
    CHECK_OK(df_image_save_png(buf, x, 3, h, w));
    free(x);
}

/* Tile i of a strip (C, H, W) with tiles of h x w at (PAD + i (w + PAD), PAD), as (C, h, w). */
static void get_tile(const float *strip, int c, int H, int W, int i, int h, int w, float *tile) {
    for (int k = 0; k < c; k++)
        for (int y = 0; y < h; y++)
            memcpy(tile + ((size_t)k * h + y) * w, strip + ((size_t)k * H + PAD + y) * W + PAD + i * (w + PAD),
                   (size_t)w * sizeof(float));
}

static double corr(const float *a, const float *b, size_t n) {
    double ma = 0, mb = 0, sab = 0, saa = 0, sbb = 0;
    for (size_t i = 0; i < n; i++) ma += a[i] / (double)n, mb += b[i] / (double)n;
    for (size_t i = 0; i < n; i++) {
        sab += (a[i] - ma) * (b[i] - mb);
        saa += (a[i] - ma) * (a[i] - ma);
        sbb += (b[i] - mb) * (b[i] - mb);
    }
    return sab / sqrt(saa * sbb);
}

/* Least-squares slope of a on b. */
static double slope(const float *a, const float *b, size_t n) {
    double ma = 0, mb = 0, sab = 0, sbb = 0;
    for (size_t i = 0; i < n; i++) ma += a[i] / (double)n, mb += b[i] / (double)n;
    for (size_t i = 0; i < n; i++) sab += (a[i] - ma) * (b[i] - mb), sbb += (b[i] - mb) * (b[i] - mb);
    return sab / sbb;
}

static double quantise(double x) {
    double v = x < -1 ? -1 : x > 1 ? 1 : x;
    return floor((v + 1) * 127.5 + 0.5) / 127.5 - 1;
}

TEST(noise_cli_strip_follows_the_forward_process) {
    enum { S = 48, NS = 7 };
    static const int steps[NS] = {0, 50, 100, 250, 500, 750, 999};
    char in[600], out[600], out2[600], args[2048], err[2048];
    write_input(in, sizeof in, 40, 56);
    tmp_path(out, sizeof out, "noise-strip.png");
    snprintf(args, sizeof args, "%s %s --size %d --steps 0,50,100,250,500,750,999 --seed 7 --no-labels", in, out, S);
    int rc = run_noise(args, err, sizeof err);
    CHECK(rc == 0, "noise exit %d: %s", rc, err);
    if (rc) return;
    int c, H, W;
    float *strip = NULL;
    CHECK_OK(df_image_load(out, 0, &c, &H, &W, &strip));
    CHECK(c == 3 && W == NS * (S + PAD) + PAD && H == S + 2 * PAD, "strip %dx%dx%d, expected 3x%dx%d", c, H, W,
          S + 2 * PAD, NS * (S + PAD) + PAD);
    if (!strip || c != 3 || W != NS * (S + PAD) + PAD || H != S + 2 * PAD) {
        free(strip);
        return;
    }
    /* the reference x_0: the input, centre-cropped and resized as the command does */
    int ic, ih, iw;
    float *img = NULL;
    CHECK_OK(df_image_load(in, 0, &ic, &ih, &iw, &img));
    size_t n = (size_t)3 * S * S;
    float *x0 = malloc(n * sizeof(float)), *tiles = malloc(NS * n * sizeof(float));
    CHECK_OK(df_image_resize(img, 3, ih, iw, S, S, 1, x0));
    for (int i = 0; i < NS; i++) get_tile(strip, 3, H, W, i, S, S, tiles + i * n);
    double worst = 0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(tiles[i] - x0[i]));
    CHECK(worst <= 0.5 / 127.5 + 1e-5, "t=0 tile is the resized input (off by %.3g)", worst);
    int border_bad = 0;
    for (int k = 0; k < 3; k++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                int in_tile = y >= PAD && y < PAD + S && x >= PAD && (x - PAD) % (S + PAD) < S;
                if (!in_tile && strip[((size_t)k * H + y) * W + x] != 1.0f) border_bad++;
            }
    CHECK(border_bad == 0, "%d border pixels are not white", border_bad);

    /* Each tile is clip(sqrt(abar) x_0 + sqrt(1 - abar) eps) in 8 bits. Its correlation with x_0 must match
     * the same construction with noise of our own (standard error ~0.01 with 6912 values), and fall. */
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_rng r;
    df_rng_init(&r, 12345);
    float *eps = malloc(n * sizeof(float)), *sim = malloc(n * sizeof(float));
    df_rng_fill_normal(&r, eps, n);
    double prev = 2;
    for (int i = 1; i < NS; i++) {
        int t = steps[i];
        double a = s.sqrt_alphas_cumprod[t], b = s.sqrt_one_minus_alphas_cumprod[t];
        for (size_t j = 0; j < n; j++) sim[j] = (float)quantise(a * x0[j] + b * eps[j]);
        double got = corr(tiles + i * n, x0, n), want = corr(sim, x0, n);
        CHECK(fabs(got - want) <= 0.05, "t=%d: correlation with x_0 %.4f, expected %.4f", t, got, want);
        if (want > 0.05) CHECK(got < prev, "t=%d: correlation %.4f does not fall (previous %.4f)", t, got, prev);
        prev = got;
        if (t <= 100) {
            /* the signal's scale: sqrt(abar_t), less what clipping takes (as in the simulation) */
            double k = slope(tiles + i * n, x0, n), ks = slope(sim, x0, n);
            CHECK(fabs(k - ks) <= 0.04, "t=%d: signal scale %.4f, simulated %.4f", t, k, ks);
            if (t == 50) CHECK(fabs(k - a) <= 0.02, "t=%d: signal scale %.4f, sqrt(abar_t) = %.4f", t, k, a);
        }
    }
    CHECK(fabs(prev) < 0.06, "t=999: correlation with x_0 %.4f, expected about 0", prev);

    /* one noise sample for all steps: the residuals x_t - sqrt(abar_t) x_0 at t = 50 and 100 are the same
     * pattern; with another seed they are unrelated */
    float *r50 = malloc(n * sizeof(float)), *r100 = malloc(n * sizeof(float));
    for (size_t j = 0; j < n; j++) {
        r50[j] = (float)(tiles[n + j] - s.sqrt_alphas_cumprod[50] * x0[j]);
        r100[j] = (float)(tiles[2 * n + j] - s.sqrt_alphas_cumprod[100] * x0[j]);
    }
    double same = corr(r50, r100, n);
    CHECK(same > 0.95, "residuals at t=50 and t=100 correlate %.4f (same noise expected)", same);
    tmp_path(out2, sizeof out2, "noise-strip-seed8.png");
    snprintf(args, sizeof args, "%s %s --size %d --steps 100 --seed 8 --no-labels", in, out2, S);
    CHECK(run_noise(args, err, sizeof err) == 0, "seed 8: %s", err);
    float *other = NULL;
    int oc, oh, ow;
    if (df_image_load(out2, 0, &oc, &oh, &ow, &other) == DF_OK && oc == 3 && oh == S + 2 * PAD &&
        ow == S + 2 * PAD) {
        float *t100 = malloc(n * sizeof(float));
        get_tile(other, 3, oh, ow, 0, S, S, t100);
        for (size_t j = 0; j < n; j++) t100[j] = (float)(t100[j] - s.sqrt_alphas_cumprod[100] * x0[j]);
        double diff = corr(t100, r100, n);
        CHECK(fabs(diff) < 0.06, "another seed gives other noise (residual correlation %.4f)", diff);
        free(t100);
    } else {
        CHECK(0, "seed-8 strip unreadable or misshapen: %s", df_error());
    }

    /* the same arguments give the same file */
    tmp_path(out2, sizeof out2, "noise-strip-again.png");
    snprintf(args, sizeof args, "%s %s --size %d --steps 0,50,100,250,500,750,999 --seed 7 --no-labels", in, out2, S);
    CHECK(run_noise(args, err, sizeof err) == 0, "rerun: %s", err);
    float *again = NULL;
    CHECK_OK(df_image_load(out2, 0, &oc, &oh, &ow, &again));
    CHECK(again && oh == H && ow == W && memcmp(again, strip, sizeof(float) * 3 * H * W) == 0, "rerun is identical");

    free(again), free(other), free(r50), free(r100), free(eps), free(sim), free(x0), free(tiles), free(img);
    free(strip);
    df_schedule_free(&s);
}

TEST(noise_cli_defaults_labels_gray_demo) {
    char in[600], out[600], args[2048], err[2048];
    write_input(in, sizeof in, 40, 56);   /* small enough to keep its size */
    tmp_path(out, sizeof out, "noise-default.png");
    snprintf(args, sizeof args, "%s %s", in, out);
    CHECK(run_noise(args, err, sizeof err) == 0, "defaults: %s", err);
    int c, H, W;
    float *strip = NULL;
    if (df_image_load(out, 0, &c, &H, &W, &strip) == DF_OK) {
        /* 8 default steps, the image's own 56x40, and a caption band under the tiles */
        CHECK(c == 3 && W == 8 * (56 + PAD) + PAD && H > 40 + 2 * PAD, "default strip %dx%dx%d", c, H, W);
        int ic, ih, iw;
        float *img = NULL, tile[3 * 40 * 56];
        CHECK_OK(df_image_load(in, 0, &ic, &ih, &iw, &img));
        if (img && c == 3 && W == 8 * (56 + PAD) + PAD) {
            get_tile(strip, 3, H, W, 0, 40, 56, tile);
            CHECK(memcmp(tile, img, sizeof tile) == 0, "the first tile is the input, unchanged");
            int dark = 0;   /* the captions: dark pixels in the band */
            for (int y = 40 + 2 * PAD; y < H; y++)
                for (int x = 0; x < W; x++) dark += strip[(size_t)y * W + x] < 0;
            CHECK(dark > 8 * 10, "captions drawn (%d dark pixels)", dark);
        }
        free(img);
    } else {
        CHECK(0, "default strip unreadable: %s", df_error());
    }
    free(strip);
    strip = NULL;

    snprintf(args, sizeof args, "%s %s --gray --timesteps 50 --schedule squaredcos_cap_v2 --no-labels", in, out);
    CHECK(run_noise(args, err, sizeof err) == 0, "gray, T = 50: %s", err);
    if (df_image_load(out, 0, &c, &H, &W, &strip) == DF_OK)
        CHECK(c == 1 && W == 8 * (56 + PAD) + PAD && H == 40 + 2 * PAD, "gray strip (defaults scaled to T) %dx%dx%d",
              c, H, W);
    free(strip);
    strip = NULL;

    snprintf(args, sizeof args, "--demo %s --size 32 --steps=0,999 --no-labels", out);
    CHECK(run_noise(args, err, sizeof err) == 0, "demo: %s", err);
    if (df_image_load(out, 0, &c, &H, &W, &strip) == DF_OK)
        CHECK(c == 3 && W == 2 * (32 + PAD) + PAD && H == 32 + 2 * PAD, "demo strip %dx%dx%d", c, H, W);
    free(strip);
}

TEST(noise_cli_bad_arguments) {
    char in[600], bad[600], out[600], err[2048];
    write_input(in, sizeof in, 16, 16);
    tmp_path(out, sizeof out, "noise-never.png");
    tmp_path(bad, sizeof bad, "noise-corrupt.png");
    FILE *f = fopen(bad, "wb");
    if (f) {
        fputs("\x89PNG\r\n\x1a\n not really", f);
        fclose(f);
    }
    const struct {
        const char *args, *named;
    } cases[] = {
        {"--bogus IN OUT", "--bogus"},
        {"IN OUT --steps 0,abc", "--steps"},
        {"IN OUT --steps 0,,5", "--steps"},
        {"IN OUT --steps -5", "--steps"},
        {"IN OUT --steps 0,1000", "1000"},
        {"IN OUT --timesteps 100 --steps 0,100", "T = 100"},
        {"IN OUT --timesteps 1", "--timesteps"},
        {"IN OUT --schedule nosuch", "nosuch"},
        {"IN OUT --size 0", "--size"},
        {"IN OUT --seed x", "--seed"},
        {"IN OUT --gray=1", "--gray"},
        {"IN OUT --steps", "--steps"},
        {"IN OUT extra", "extra"},
        {"/nonexistent/pic.png OUT", "/nonexistent/pic.png"},
        {"BAD OUT", "noise-corrupt.png"},
        {"--demo IN OUT", "--demo"},
        {"IN", "usage"},
        {"", "usage"},
    };
    for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) {
        /* IN, OUT and BAD stand for the paths */
        char a[1024] = "";
        const char *p = cases[i].args;
        while (*p) {
            if (strncmp(p, "IN", 2) == 0) strcat(a, in), p += 2;
            else if (strncmp(p, "OUT", 3) == 0) strcat(a, out), p += 3;
            else if (strncmp(p, "BAD", 3) == 0) strcat(a, bad), p += 3;
            else strncat(a, p++, 1);
        }
        int rc = run_noise(a, err, sizeof err);
        /* one line, then for a usage error (exit 2) the usage line */
        const char *usage = strstr(err, "\nusage: diffuse noise");
        int lines = 0;
        for (const char *q = err; *q && (!usage || q < usage + 1); q++) lines += *q == '\n';
        CHECK(rc != 0, "\"%s\": exit code 0", cases[i].args);
        CHECK(lines == 1, "\"%s\": %d lines on stderr: %s", cases[i].args, lines, err);
        CHECK((rc == 2) == (usage != NULL), "\"%s\": exit %d %s the usage line: %s", cases[i].args, rc,
              usage ? "with" : "without", err);
        CHECK(strstr(err, cases[i].named) != NULL, "\"%s\": message does not name \"%s\": %s", cases[i].args,
              cases[i].named, err);
        CHECK(!file_exists(out), "\"%s\": an output file was written", cases[i].args);
        remove(out);
    }
}
