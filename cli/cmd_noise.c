/* `diffuse noise`: the forward process on one image. Writes a PNG strip of x_t at chosen timesteps, all
 * made with one noise sample, so the strip shows one picture drowning in one fixed pattern of noise. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STEPS 64
#define MAX_SIZE 4096
#define AUTO_MAX_SIDE 256   /* without --size, larger images are shrunk to this (aspect kept, no crop) */
#define DEMO_SIZE 128
#define MAX_STRIP_WIDTH 65536

static const int default_steps[] = {0, 50, 100, 200, 400, 600, 800, 999};   /* for T = 1000 */

static int noise_main(int argc, char **argv);

const cli_command cmd_noise = {
    .name = "noise",
    .usage = "usage: diffuse noise [options] IMAGE OUT.png\n"
             "       diffuse noise [options] --demo OUT.png",
    .summary = "show the forward process on a picture",
    .about = "The forward process on a picture: one PNG strip of x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps at\n"
             "each step, all with the same noise eps ~ N(0, I), clipped to [-1, 1]. IMAGE is a PNG or JPEG; --demo\n"
             "draws a built-in landscape instead.",
    .max_args = 2,
    .run = noise_main,
};

typedef struct {
    const char  *image, *out;
    long         steps[MAX_STEPS];
    int          nsteps;          /* 0: the defaults */
    df_beta_kind kind;
    long         T, size;
    uint64_t     seed;
    int          gray, demo, no_labels;
} noise_opts;

/* --steps "0, 50,100": whole numbers separated by commas, into o->steps. Returns 0, or 2 after a usage error. */
static int parse_steps(const char *text, void *dst) {
    noise_opts *o = dst;
    long *steps = o->steps;
    int n = 0;
    const char *p = text;
    for (;;) {
        while (*p == ' ') p++;
        if (!isdigit((unsigned char)*p)) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno) break;
        if (n == MAX_STEPS) return cli_usage_error("--steps: at most %d steps", MAX_STEPS);
        steps[n++] = v;
        for (p = end; *p == ' '; p++) {}
        if (*p == 0) {
            o->nsteps = n;
            return 0;
        }
        if (*p != ',') break;
        p++;
    }
    return cli_usage_error("--steps: expected timesteps separated by commas (e.g. 0,100,500,999), got \"%s\"", text);
}

/* ---- the demo picture ------------------------------------------------------------------------------------ */

static void mix(double *rgb, double r, double g, double b) { rgb[0] = r, rgb[1] = g, rgb[2] = b; }

/* A small landscape at (u, v) in [0, 1)^2, v downwards: sky, sun, hills, a house. */
static void demo_scene(double u, double v, double *rgb) {
    const double tau = 6.283185307179586;
    double s = fmin(v / 0.65, 1);
    mix(rgb, 0.30 + 0.55 * s, 0.52 + 0.38 * s, 0.92 + 0.06 * s);
    if ((u - 0.74) * (u - 0.74) + (v - 0.24) * (v - 0.24) < 0.12 * 0.12) mix(rgb, 1.0, 0.82, 0.22);
    if (v > 0.60 + 0.07 * sin(tau * (0.8 * u + 0.15))) mix(rgb, 0.40, 0.68, 0.34);
    if (u > 0.17 && u < 0.43 && v > 0.50 && v < 0.76) {
        mix(rgb, 0.88, 0.86, 0.78);
        if (u > 0.27 && u < 0.33 && v > 0.62) mix(rgb, 0.42, 0.24, 0.14);                  /* door */
        if (u > 0.205 && u < 0.255 && v > 0.55 && v < 0.60) mix(rgb, 0.30, 0.45, 0.70);    /* windows */
        if (u > 0.345 && u < 0.395 && v > 0.55 && v < 0.60) mix(rgb, 0.30, 0.45, 0.70);
    }
    if (v > 0.33 && v <= 0.50 && fabs(u - 0.30) < (v - 0.33) / 0.17 * 0.16) mix(rgb, 0.78, 0.22, 0.18); /* roof */
    if (v > 0.80 + 0.04 * cos(tau * 1.1 * u)) mix(rgb, 0.20, 0.48, 0.22);
}

/* The scene as (3, s, s) in [-1, 1], 4x4 supersampled so edges are smooth. */
static void draw_demo(float *x, int s) {
    size_t plane = (size_t)s * s;
    for (int y = 0; y < s; y++)
        for (int xx = 0; xx < s; xx++) {
            double acc[3] = {0, 0, 0}, rgb[3];
            for (int j = 0; j < 4; j++)
                for (int i = 0; i < 4; i++) {
                    demo_scene((xx + (i + 0.5) / 4) / s, (y + (j + 0.5) / 4) / s, rgb);
                    for (int k = 0; k < 3; k++) acc[k] += rgb[k] / 16;
                }
            for (int k = 0; k < 3; k++) x[k * plane + (size_t)y * s + xx] = (float)(2 * acc[k] - 1);
        }
}

/* ---- captions ------------------------------------------------------------------------------------------ */

/* 5x7 glyphs, rows from the top, bit 4 the leftmost pixel: the digits, then 't' and '='. */
static const unsigned char glyphs[12][7] = {
    {0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e}, {0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e},
    {0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f}, {0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e},
    {0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02}, {0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e},
    {0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e}, {0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08},
    {0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e}, {0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c},
    {0x08, 0x08, 0x1c, 0x08, 0x08, 0x09, 0x06}, {0x00, 0x00, 0x1f, 0x00, 0x1f, 0x00, 0x00},
};

static int text_width(const char *s, int scale) { return (int)strlen(s) * 6 * scale - scale; }

/* Draw `s` with its top-left at (x0, y0) into a (c, H, W) canvas, clipped to it. */
static void draw_text(float *canvas, int c, int H, int W, int x0, int y0, const char *s, int scale, float value) {
    for (int n = 0; s[n]; n++) {
        int g = isdigit((unsigned char)s[n]) ? s[n] - '0' : s[n] == 't' ? 10 : 11;
        for (int r = 0; r < 7 * scale; r++)
            for (int q = 0; q < 5 * scale; q++) {
                int x = x0 + n * 6 * scale + q, y = y0 + r;
                if (x < 0 || x >= W || y < 0 || y >= H || !(glyphs[g][r / scale] & (0x10 >> (q / scale)))) continue;
                for (int k = 0; k < c; k++) canvas[((size_t)k * H + y) * W + x] = value;
            }
    }
}

/* ---- the command ------------------------------------------------------------------------------------------ */

/* The border around tiles of h x w. */
static int strip_pad(int h, int w) { return CLI_MAX(4, CLI_MIN(h, w) / 32); }

/* 0, or 2 after a usage error if a strip of n tiles of h x w is too wide. */
static int too_wide(int n, int h, int w) {
    if ((double)n * (w + strip_pad(h, w)) + strip_pad(h, w) <= MAX_STRIP_WIDTH) return 0;
    return cli_usage_error("a strip of %d steps %d pixels wide would be over %d pixels; use fewer --steps or a "
                           "smaller --size", n, w, MAX_STRIP_WIDTH);
}

/* --steps' default text: the default steps for T = 1000. */
static void default_steps_text(char *buf, size_t cap) {
    size_t n = 0;
    for (int k = 0; k < CLI_COUNTOF(default_steps) && n < cap; k++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%d", k ? "," : "", default_steps[k]);
    if (n < cap) snprintf(buf + n, cap - n, ", scaled to T");
}

/* Returns 0, CLI_HELP, 1 (a missing or unwritable file, reported) or 2 (a usage error, reported). */
static int parse_args(int argc, char **argv, noise_opts *o) {
    char steps_def[128], size_def[96];
    default_steps_text(steps_def, sizeof steps_def);
    snprintf(size_def, sizeof size_def, "the image's own size, shrunk to %d pixels on the longer side if larger",
             AUTO_MAX_SIDE);
    const cli_opt opts[] = {
        OPT_CALL("--steps", o, parse_steps, .meta = "LIST", .def = steps_def,
                 .help = "comma-separated timesteps t: diffusers' indices 0..T-1, abar_t = alphas_cumprod[t] (what a "
                         "scheduler's add_noise uses); 0 shows x_0 itself"),
        OPT_ENUM("--schedule", &o->kind, &cli_beta_schedules, .meta = "S",
                 .help = "the beta schedule, from 1e-4 to 0.02 as diffusers' DDPMScheduler"),
        OPT_LONG("--timesteps", &o->T, .lo = 2, .hi = 100000, .meta = "T", .help = "length of the chain"),
        OPT_LONG("--size", &o->size, .lo = 1, .hi = MAX_SIZE, .meta = "N", .def = size_def,
                 .help = "centre-crop and resize to N x N first"),
        OPT_U64("--seed", &o->seed, .meta = "S", .help = "seed of the noise"),
        OPT_FLAG("--gray", &o->gray, .help = "one channel"),
        OPT_FLAG("--demo", &o->demo, .help = "draw a built-in landscape instead of reading IMAGE"),
        OPT_FLAG("--no-labels", &o->no_labels, .help = "no \"t=...\" captions under the tiles"),
        CLI_END,
    };
    cli_args a;
    int rc = cli_parse(&cmd_noise, opts, argc, argv, &a);
    if (rc) return rc;
    int npos = a.npos;
    const char *const *pos = a.pos;
    if (o->demo) {
        if (npos == 2) return cli_usage_error("--demo draws its own picture: give only OUT.png, not \"%s\"", pos[0]);
        if (npos == 0) return cli_usage_error("--demo: missing OUT.png");
        o->out = pos[0];
    } else {
        if (npos == 0) return cli_usage_error("missing IMAGE and OUT.png (or --demo OUT.png)");
        if (npos == 1) return cli_usage_error("missing OUT.png");
        o->image = pos[0], o->out = pos[1];
    }
    if (o->nsteps == 0) {
        /* the default steps, stretched onto 0..T-1 */
        for (int k = 0; k < CLI_COUNTOF(default_steps); k++) {
            long t = lround(default_steps[k] * (o->T - 1) / 999.0);
            if (o->nsteps == 0 || t != o->steps[o->nsteps - 1]) o->steps[o->nsteps++] = t;
        }
    }
    for (int k = 0; k < o->nsteps; k++)
        if (o->steps[k] >= o->T)
            return cli_usage_error("--steps: %ld is out of range: timesteps run from 0 to %ld (T = %ld)", o->steps[k],
                                   o->T - 1, o->T);
    int known = o->size ? (int)o->size : o->demo ? DEMO_SIZE : 0;   /* the tile size, if known before loading */
    if (known && (rc = too_wide(o->nsteps, known, known))) return rc;
    if (!cli_has_suffix(o->out, ".png")) return cli_usage_error("%s: the strip is a PNG: name it .png", o->out);
    if (o->image && cli_same_file(o->out, o->image))
        return cli_usage_error("OUT.png %s would overwrite IMAGE; write the strip elsewhere", o->out);
    if ((o->image && cli_check_input("", o->image, 0)) || cli_check_output("", o->out, 0)) return 1;
    return 0;
}

/* The picture x_0 as (c, h, w): the file or the demo, at its final size. Returns 0, or 1 after printing
 * the problem. */
static int make_x0(const noise_opts *o, int *c, int *h, int *w, float **x0) {
    float *img = NULL;
    int ic, ih, iw;
    if (o->demo) {
        ic = 3, ih = iw = o->size ? (int)o->size : DEMO_SIZE;
        if (!(img = malloc((size_t)3 * ih * iw * sizeof(float)))) return cli_die("out of memory");
        draw_demo(img, ih);
        if (o->gray) {
            size_t plane = (size_t)ih * iw;
            for (size_t i = 0; i < plane; i++)
                img[i] = 0.299f * img[i] + 0.587f * img[plane + i] + 0.114f * img[2 * plane + i];
            ic = 1;
        }
    } else {
        df_status st = df_image_load(o->image, o->gray ? 1 : 0, &ic, &ih, &iw, &img);
        if (st) return cli_fail(st);
    }
    int oh = ih, ow = iw, crop = 0;
    if (o->size) {
        oh = ow = (int)o->size, crop = 1;
    } else if (ih > AUTO_MAX_SIDE || iw > AUTO_MAX_SIDE) {
        double f = (double)AUTO_MAX_SIDE / CLI_MAX(ih, iw);
        oh = CLI_MAX(1, (int)lround(ih * f)), ow = CLI_MAX(1, (int)lround(iw * f));
    }
    if (oh != ih || ow != iw) {
        float *r = malloc((size_t)ic * oh * ow * sizeof(float));
        if (!r) {
            free(img);
            return cli_die("out of memory");
        }
        df_status st = df_image_resize(img, ic, ih, iw, oh, ow, crop, r);
        free(img);
        if (st) {
            free(r);
            return cli_fail(st);
        }
        img = r;
    }
    *c = ic, *h = oh, *w = ow, *x0 = img;
    return 0;
}

/* What was written, and each step's signal and noise coefficients. */
static void print_report(const noise_opts *o, const df_schedule *s, int c, int h, int w) {
    printf("wrote %s: %d steps of %dx%d %s, %s schedule, T = %ld, seed %llu\n", o->out, o->nsteps, w, h,
           c == 1 ? "gray" : "RGB", df_beta_kind_name(o->kind), o->T, (unsigned long long)o->seed);
    printf("%8s  %12s  %14s\n", "t", "sqrt(abar_t)", "sqrt(1-abar_t)");
    for (int i = 0; i < o->nsteps; i++) {
        long t = o->steps[i];
        if (t == 0) printf("%8ld  %12.6f  %14.6f  the clean image x_0\n", t, 1.0, 0.0);
        else printf("%8ld  %12.6f  %14.6f\n", t, s->sqrt_alphas_cumprod[t], s->sqrt_one_minus_alphas_cumprod[t]);
    }
}

static int noise_main(int argc, char **argv) {
    noise_opts o = {.kind = DF_BETA_LINEAR, .T = 1000};
    int rc = parse_args(argc, argv, &o);
    if (rc) return cli_exit(rc);
    df_schedule s;
    df_status st = df_schedule_init(&s, o.kind, (int)o.T, 1e-4, 0.02, 0);
    if (st) return cli_fail(st);

    rc = 1;
    int c = 0, h = 0, w = 0, n = o.nsteps;
    float *x0 = NULL, *eps = NULL, *xt = NULL, *canvas = NULL;
    if (make_x0(&o, &c, &h, &w, &x0)) goto done;
    size_t dim = (size_t)c * h * w;

    /* Layout: the tiles side by side with `pad` pixels of white around each; below them a caption band
     * with "t=..." (or just the number, if that is all that fits) centred under each tile. */
    int pad = strip_pad(h, w);
    int scale = CLI_MAX(1, w / 96);
    char label[MAX_STEPS][24];
    int widest = 0;   /* of the numbers alone */
    for (int i = 0; i < n; i++) {
        snprintf(label[i], sizeof label[i], "%ld", o.steps[i]);
        widest = CLI_MAX(widest, text_width(label[i], scale));
    }
    int with_t = widest + 12 * scale <= w + pad;   /* "t=" adds two 6-pixel glyphs */
    int labels = !o.no_labels && widest <= w + pad;
    for (int i = 0; i < n && with_t; i++) snprintf(label[i], sizeof label[i], "t=%ld", o.steps[i]);
    if ((rc = too_wide(n, h, w)) != 0) goto done;
    rc = 1;
    int W = n * (w + pad) + pad, H = h + 2 * pad + (labels ? 7 * scale + pad : 0);
    size_t plane = (size_t)H * W;
    eps = malloc(dim * sizeof(float));
    xt = malloc(dim * sizeof(float));
    canvas = malloc(plane * c * sizeof(float));
    if (!eps || !xt || !canvas) {
        cli_die("out of memory for a %dx%d strip", W, H);
        goto done;
    }
    /* one noise sample for every step */
    df_rng rng;
    df_rng_init(&rng, o.seed);
    df_rng_fill_normal(&rng, eps, dim);
    for (size_t i = 0; i < plane * c; i++) canvas[i] = 1.0f;
    for (int i = 0; i < n; i++) {
        int t = (int)o.steps[i];
        /* 0 is the clean image itself; otherwise DDPM eq. 4 with diffusers' alphas_cumprod[t] */
        if (t == 0) memcpy(xt, x0, dim * sizeof(float));
        else df_q_sample(&s, 1, dim, x0, eps, &t, xt);
        int gx = pad + i * (w + pad);
        for (int k = 0; k < c; k++)
            for (int y = 0; y < h; y++)
                memcpy(canvas + k * plane + (size_t)(pad + y) * W + gx, xt + ((size_t)k * h + y) * w,
                       (size_t)w * sizeof(float));
        if (labels)
            draw_text(canvas, c, H, W, gx + (w - text_width(label[i], scale)) / 2, h + 2 * pad, label[i], scale,
                      -0.75f);
    }
    if ((st = df_image_save_png(o.out, canvas, c, H, W))) {
        cli_fail(st);
        goto done;
    }
    rc = 0;
    print_report(&o, &s, c, h, w);
done:
    free(x0);
    free(eps);
    free(xt);
    free(canvas);
    df_schedule_free(&s);
    return rc;
}
