/* The forward process as a picture: x_t of one image at chosen timesteps, side by side, all made with one
 * noise sample, so the strip shows one picture drowning in one fixed pattern of noise. */
#include "internal.h"

#include <ctype.h>
#include <string.h>

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

/* The white border around tiles of h x w. */
static int strip_pad(int h, int w) { return DF_MAX(4, DF_MIN(h, w) / 32); }

long df_noise_strip_width(int n, int h, int w) { return (long)n * (w + strip_pad(h, w)) + strip_pad(h, w); }

df_status df_noise_strip(const df_schedule *s, const float *x0, int c, int h, int w, const int *steps, int n,
                         uint64_t seed, int labels, float **strip, int *sh, int *sw) {
    *strip = NULL;
    if (!s || !x0 || !steps || n < 1 || n > DF_NOISE_STRIP_MAX_STEPS || c < 1 || h < 1 || w < 1)
        return df_fail(DF_ERR_ARG, "noise strip: an image and 1..%d timesteps are needed", DF_NOISE_STRIP_MAX_STEPS);
    for (int i = 0; i < n; i++)
        if (steps[i] < 0 || steps[i] >= s->T)
            return df_fail(DF_ERR_ARG, "noise strip: timestep %d is out of range: timesteps run from 0 to %d (T = %d)",
                           steps[i], s->T - 1, s->T);
    if (df_noise_strip_width(n, h, w) > DF_NOISE_STRIP_MAX_WIDTH)
        return df_fail(DF_ERR_ARG, "noise strip: %d steps %d pixels wide would be over %d pixels", n, w,
                       DF_NOISE_STRIP_MAX_WIDTH);
    /* Layout: the tiles side by side with `pad` pixels of white around each; below them a caption band with
     * "t=..." (or just the number, if that is all that fits) centred under each tile. */
    const int pad = strip_pad(h, w), scale = DF_MAX(1, w / 96);
    char label[DF_NOISE_STRIP_MAX_STEPS][24];
    int widest = 0;   /* of the numbers alone */
    for (int i = 0; i < n; i++) {
        snprintf(label[i], sizeof label[i], "%d", steps[i]);
        widest = DF_MAX(widest, text_width(label[i], scale));
    }
    const int with_t = widest + 12 * scale <= w + pad;   /* "t=" adds two 6-pixel glyphs */
    const int captions = labels && widest <= w + pad;
    for (int i = 0; i < n && with_t; i++) snprintf(label[i], sizeof label[i], "t=%d", steps[i]);
    const int W = (int)df_noise_strip_width(n, h, w), H = h + 2 * pad + (captions ? 7 * scale + pad : 0);
    const size_t plane = (size_t)H * W, dim = (size_t)c * h * w;
    float *eps = malloc(dim * sizeof(float)), *xt = malloc(dim * sizeof(float)), *canvas = malloc(plane * c * sizeof(float));
    if (!eps || !xt || !canvas) {
        free(eps), free(xt), free(canvas);
        return df_fail(DF_ERR_NOMEM, "noise strip: out of memory for %dx%d", W, H);
    }
    df_rng rng;   /* one noise sample for every step */
    df_rng_init(&rng, seed);
    df_rng_fill_normal(&rng, eps, dim);
    for (size_t i = 0; i < plane * c; i++) canvas[i] = 1.0f;
    for (int i = 0; i < n; i++) {
        int t = steps[i];
        /* 0 is the clean image itself; otherwise DDPM eq. 4 with diffusers' alphas_cumprod[t] */
        if (t == 0) memcpy(xt, x0, dim * sizeof(float));
        else df_q_sample(s, 1, dim, x0, eps, &t, xt);
        const int gx = pad + i * (w + pad);
        for (int k = 0; k < c; k++)
            for (int y = 0; y < h; y++)
                memcpy(canvas + k * plane + (size_t)(pad + y) * W + gx, xt + ((size_t)k * h + y) * w,
                       (size_t)w * sizeof(float));
        if (captions)
            draw_text(canvas, c, H, W, gx + (w - text_width(label[i], scale)) / 2, h + 2 * pad, label[i], scale, -0.75f);
    }
    free(eps), free(xt);
    *strip = canvas, *sh = H, *sw = W;
    return DF_OK;
}
