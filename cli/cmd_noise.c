/* `diffuse noise`: the forward process on one image. Writes a PNG strip of x_t at chosen timesteps, all
 * made with one noise sample, so the strip shows one picture drowning in one fixed pattern of noise. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STEPS DF_NOISE_STRIP_MAX_STEPS
#define MAX_SIZE 4096
#define AUTO_MAX_SIDE 256   /* without --size, larger images are shrunk to this (aspect kept, no crop) */
#define DEMO_SIZE 128

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

/* ---- the command ------------------------------------------------------------------------------------------ */

/* 0, or 2 after a usage error if a strip of n tiles of h x w is too wide. */
static int too_wide(int n, int h, int w) {
    if (df_noise_strip_width(n, h, w) <= DF_NOISE_STRIP_MAX_WIDTH) return 0;
    return cli_usage_error("a strip of %d steps %d pixels wide would be over %d pixels; use fewer --steps or a "
                           "smaller --size", n, w, DF_NOISE_STRIP_MAX_WIDTH);
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
    int c = 0, h = 0, w = 0, H, W, steps[MAX_STEPS];
    float *x0 = NULL, *strip = NULL;
    for (int i = 0; i < o.nsteps; i++) steps[i] = (int)o.steps[i];
    rc = make_x0(&o, &c, &h, &w, &x0);
    if (!rc) rc = too_wide(o.nsteps, h, w);
    if (!rc && (st = df_noise_strip(&s, x0, c, h, w, steps, o.nsteps, o.seed, !o.no_labels, &strip, &H, &W)))
        rc = cli_fail(st);
    if (!rc && (st = df_image_save_png(o.out, strip, c, H, W))) rc = cli_fail(st);
    if (!rc) print_report(&o, &s, c, h, w);
    free(x0), free(strip);
    df_schedule_free(&s);
    return rc;
}
