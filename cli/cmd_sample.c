/* `diffuse sample`: generate images from a trained model with any sampler, as a PNG grid, single PNGs or
 * a NumPy array; optionally the denoising process as an animation; image-to-image and inpainting. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char cmd_sample_usage[] =
    "usage: diffuse sample MODEL [options]\n"
    "\n"
    "Generate images. MODEL is a run directory (its latest checkpoint), a checkpoint or diffusers pipeline\n"
    "directory (unet/ + scheduler/), or a bare diffusers model directory.\n"
    "\n"
    "  --n N                 number of images (64)\n"
    "  --batch N             images per network call (64)\n"
    "  --seed S              noise seed (0); the same seed gives the same images\n"
    "  --sampler NAME        ddim (default), ddpm, dpmpp-1s, dpmpp-2m, dpmpp-3m, euler, heun\n"
    "  --steps N             denoising steps (50; ddpm defaults to the training timesteps)\n"
    "  --eta X               DDIM noise (0 = deterministic)\n"
    "  --spacing NAME        leading (default), linspace, trailing\n"
    "  --karras              Karras sigmas (euler, heun, dpmpp-*)\n"
    "  --large-variance      DDPM with beta_t as the reverse variance\n"
    "  --no-clip             do not clip predicted x_0 to [-1, 1]\n"
    "  --threshold           dynamic thresholding (Imagen)\n"
    "  --labels L1,L2,...    class labels for a class-conditional model: image i gets L[i*k/n], so with n a\n"
    "                        multiple of k the grid has one row per label (default: 0..classes-1)\n"
    "  --raw                 use the trained weights instead of their moving average\n"
    "output (one or more; default --out samples.png):\n"
    "  --out FILE.png        a grid\n"
    "  --cols N              grid columns (default: square, or one row per label)\n"
    "  --out-dir DIR         one PNG per image\n"
    "  --npy FILE.npy        uint8 array (N, H, W, C)\n"
    "  --animate FILE        the denoising process: an animated GIF (.gif) or a strip (.png) of the grid's\n"
    "                        predicted x_0 at --frames points (12) from noise to image\n"
    "editing:\n"
    "  --init-image IMG --strength S   image-to-image (SDEdit): start from IMG noised to S in (0, 1]\n"
    "  --inpaint IMG --mask MASK       regenerate the white part of MASK, keep the rest of IMG (RePaint)\n"
    "  --jump-length N --jump-n N      RePaint resampling (default 1 1: off)\n";

typedef struct {
    float *frames;   /* captured x_0 predictions of the first batch, one frame per capture */
    int    nframes, max_frames;
    size_t frame_size;
    cli_progress *bar;
    int    done_before, all_steps;
} sample_watch;

static void on_step(void *ctx, int step, int total, const float *x, const float *x0) {
    sample_watch *w = ctx;
    /* frame k at step 1 + round(k (total - 1) / (frames - 1)): the first step's guess to the final image */
    int k = w->nframes, f = w->max_frames;
    int target = f > 1 ? 1 + (int)(((long)k * (total - 1) + (f - 1) / 2) / (f - 1)) : total;
    if (w->frames && k < f && step >= target) {
        const float *src = x0 ? x0 : x;
        memcpy(w->frames + (size_t)w->nframes * w->frame_size, src, w->frame_size * sizeof(float));
        w->nframes++;
    }
    cli_progress_draw(w->bar, w->done_before + step, w->all_steps, -1, "steps");
}

static df_status load_image_as(const char *path, int c, int h, int w, float *out) {
    int ic, ih, iw;
    float *px;
    df_status st = df_image_load(path, c, &ic, &ih, &iw, &px);
    if (st) return st;
    if (ih == h && iw == w) memcpy(out, px, sizeof(float) * (size_t)c * h * w);
    else st = df_image_resize(px, c, ih, iw, h, w, 1, out);
    free(px);
    return st;
}

static df_status write_npy(const char *path, const float *x, int n, int c, int h, int w) {
    char header[128];
    int hl = snprintf(header, sizeof header, "{'descr': '|u1', 'fortran_order': False, 'shape': (%d, %d, %d, %d), }", n,
                      h, w, c);
    int total = 10 + hl + 1, padded = (total + 63) / 64 * 64;   /* NPY 1.0: header padded to 64 bytes */
    size_t data = (size_t)n * h * w * c;
    unsigned char *buf = malloc((size_t)padded + data);
    if (!buf) return df_fail(DF_ERR_NOMEM, "out of memory");
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
    df_status st = df_write_file_atomic(path, buf, (size_t)padded + data);
    free(buf);
    return st;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

int cmd_sample(int argc, char **argv) {
    int n = 64, batch = 64, steps = 0, karras = 0, large = 0, no_clip = 0, threshold = 0, raw = 0, cols = 0;
    int frames_wanted = 12, jump_len = 1, jump_n = 1;
    uint64_t seed = 0;
    double eta = 0, strength = 0;
    const char *sampler = NULL, *spacing = NULL, *labels_text = NULL, *out = NULL, *out_dir = NULL, *npy = NULL,
               *animate = NULL, *init_image = NULL, *inpaint = NULL, *mask_path = NULL;
    cli_opt opts[] = {
        {"--n", OPT_INT, &n, 1, 100000},
        {"--batch", OPT_INT, &batch, 1, 4096},
        {"--seed", OPT_U64, &seed, 0, 0},
        {"--sampler", OPT_STR, &sampler, 0, 0},
        {"--steps", OPT_INT, &steps, 1, 100000},
        {"--eta", OPT_DOUBLE, &eta, 0, 10},
        {"--spacing", OPT_STR, &spacing, 0, 0},
        {"--karras", OPT_FLAG, &karras, 0, 0},
        {"--large-variance", OPT_FLAG, &large, 0, 0},
        {"--no-clip", OPT_FLAG, &no_clip, 0, 0},
        {"--threshold", OPT_FLAG, &threshold, 0, 0},
        {"--labels", OPT_STR, &labels_text, 0, 0},
        {"--raw", OPT_FLAG, &raw, 0, 0},
        {"--out", OPT_STR, &out, 0, 0},
        {"--cols", OPT_INT, &cols, 1, 10000},
        {"--out-dir", OPT_STR, &out_dir, 0, 0},
        {"--npy", OPT_STR, &npy, 0, 0},
        {"--animate", OPT_STR, &animate, 0, 0},
        {"--frames", OPT_INT, &frames_wanted, 2, 1000},
        {"--init-image", OPT_STR, &init_image, 0, 0},
        {"--strength", OPT_DOUBLE, &strength, 1e-6, 1},
        {"--inpaint", OPT_STR, &inpaint, 0, 0},
        {"--mask", OPT_STR, &mask_path, 0, 0},
        {"--jump-length", OPT_INT, &jump_len, 1, 1000},
        {"--jump-n", OPT_INT, &jump_n, 1, 1000},
        {NULL, OPT_FLAG, NULL, 0, 0},
    };
    const char *pos[1];
    int npos;
    int rc = cli_parse("sample", argc, argv, opts, pos, 1, &npos, cmd_sample_usage);
    if (rc) return rc;
    if (npos != 1) {
        fprintf(stderr, "diffuse sample: which model? give a run, checkpoint or model directory\n%s", cmd_sample_usage);
        return 2;
    }
    if (init_image && inpaint) return cli_die("sample: %s", "--init-image and --inpaint do not go together");
    if (!!inpaint != !!mask_path) return cli_die("sample: %s", "--inpaint needs --mask (and --mask needs --inpaint)");
    if (init_image && strength <= 0) return cli_die("sample: %s", "--init-image needs --strength S with 0 < S <= 1");
    if (!out && !out_dir && !npy) out = "samples.png";
    if (out && !ends_with(out, ".png")) return cli_die("sample: --out %s: the grid is written as PNG (.png)", out);
    if (animate && !ends_with(animate, ".gif") && !ends_with(animate, ".png"))
        return cli_die("sample: --animate %s: use a .gif or .png name", animate);

    df_sampler_params sp;
    df_sampler_params_default(&sp);
    if (sampler && df_sampler_parse(sampler, &sp.kind)) return cli_fail(DF_ERR_ARG);
    if (spacing && df_spacing_parse(spacing, &sp.spacing)) return cli_fail(DF_ERR_ARG);

    df_model *m;
    df_scheduler_config sc;
    df_status st = df_pipeline_load(pos[0], raw, &m, &sc);
    if (st) return cli_fail(st);
    const df_unet_config *cfg = df_model_config(m);
    df_schedule sched;
    if ((st = df_schedule_from_config(&sc, &sched))) {
        df_model_free(m);
        return cli_fail(st);
    }
    sp.steps = steps ? steps : (sp.kind == DF_SAMPLER_DDPM ? sched.T : 50);
    if (sp.steps > sched.T) {
        fprintf(stderr, "diffuse sample: --steps %d is more than the model's %d training timesteps\n", sp.steps, sched.T);
        df_model_free(m);
        df_schedule_free(&sched);
        return 2;
    }
    sp.eta = eta;
    sp.karras_sigmas = karras;
    sp.variance_large = large;
    sp.prediction = sc.prediction;
    sp.clip_x0 = !no_clip;
    sp.clip_range = 1;
    sp.dynamic_threshold = threshold;
    const int c = cfg->in_channels, h = cfg->sample_size > 0 ? cfg->sample_size : 32, w = h;
    const size_t dim = (size_t)c * h * w;

    int k = cfg->num_class_embeds, lab[1024], nlab = 0;
    rc = 1;
    float *x = malloc(sizeof(float) * (size_t)n * dim), *src = NULL, *mask = NULL;
    int *labels = k ? malloc(sizeof(int) * (size_t)n) : NULL;
    sample_watch watch = {0};
    cli_progress bar;
    if (!x || (k && !labels)) {
        st = df_fail(DF_ERR_NOMEM, "out of memory for %d images", n);
        goto fail;
    }
    if (labels_text && !k) {
        fprintf(stderr, "diffuse sample: --labels: this model is unconditional\n");
        rc = 2;
        goto done;
    }
    if (k) {
        if (labels_text) {
            if (cli_parse_list("sample", "--labels", labels_text, 0, k - 1, lab, 1024, &nlab)) {
                rc = 2;
                goto done;
            }
        } else {
            for (nlab = 0; nlab < k && nlab < 1024; nlab++) lab[nlab] = nlab;
        }
        for (int i = 0; i < n; i++) labels[i] = lab[(int)((long)i * nlab / n)];
        if (!cols && n % nlab == 0) cols = n / nlab;
    }
    if (init_image || inpaint) {
        src = malloc(sizeof(float) * dim);
        if (!src || (st = load_image_as(init_image ? init_image : inpaint, c, h, w, src))) goto fail;
    }
    if (mask_path) {
        float *mm = malloc(sizeof(float) * (size_t)h * w);
        mask = malloc(sizeof(float) * dim);
        if (!mm || !mask || (st = load_image_as(mask_path, 1, h, w, mm))) {
            free(mm);
            goto fail;
        }
        /* white (> 0 in [-1, 1]) is regenerated, black is kept: mask = 1 where known */
        for (int ch = 0; ch < c; ch++)
            for (int j = 0; j < h * w; j++) mask[(size_t)ch * h * w + j] = mm[j] > 0 ? 0.0f : 1.0f;
        free(mm);
    }
    cli_progress_init(&bar, "sample");
    int nb = (n + batch - 1) / batch;
    watch.bar = &bar;
    watch.all_steps = nb * sp.steps;
    if (animate) {
        watch.max_frames = DF_MIN(frames_wanted, sp.steps);
        watch.frame_size = (size_t)DF_MIN(n, batch) * dim;
        watch.frames = malloc(sizeof(float) * watch.frame_size * (size_t)frames_wanted);
        if (!watch.frames) {
            st = df_fail(DF_ERR_NOMEM, "out of memory for the animation");
            goto fail;
        }
    }
    sp.progress = on_step;
    sp.progress_ctx = &watch;
    df_rng rng;
    df_rng_init(&rng, seed);
    for (int b = 0; b < nb && !st; b++) {
        int i0 = b * batch, bn = DF_MIN(batch, n - i0);
        float *xb = x + (size_t)i0 * dim;
        df_model_denoiser dn = {m, h, w, labels ? labels + i0 : NULL};
        watch.done_before = b * sp.steps;
        if (b > 0) watch.max_frames = 0;   /* the animation shows the first batch */
        if (init_image || inpaint) {
            float *rep = malloc(sizeof(float) * (size_t)bn * dim);
            if (!rep) {
                st = df_fail(DF_ERR_NOMEM, "out of memory");
                break;
            }
            for (int i = 0; i < bn; i++) memcpy(rep + (size_t)i * dim, src, sizeof(float) * dim);
            st = init_image ? df_img2img(&sched, &sp, df_model_denoise, &dn, bn, dim, rep, strength, &rng, xb)
                            : df_inpaint(&sched, &sp, df_model_denoise, &dn, bn, dim, rep, mask, jump_len, jump_n, &rng, xb);
            free(rep);
        } else {
            st = df_sample(&sched, &sp, df_model_denoise, &dn, bn, dim, &rng, xb);
        }
    }
    cli_progress_done(&bar);
    if (st) goto fail;
    if (!cols) {
        cols = 1;
        while (cols * cols < n) cols++;
    }
    if (out && (st = df_image_save_grid(out, x, n, c, h, w, cols, 2))) goto fail;
    if (out) fprintf(stderr, "wrote %s (%d images)\n", out, n);
    if (out_dir) {
        if (mkdir(out_dir, 0755) != 0 && errno != EEXIST) {
            st = df_fail(DF_ERR_IO, "%s: cannot create directory: %s", out_dir, strerror(errno));
            goto fail;
        }
        for (int i = 0; i < n && !st; i++) {
            char p[4200];
            snprintf(p, sizeof p, "%s/%06d.png", out_dir, i);
            st = df_image_save_png(p, x + (size_t)i * dim, c, h, w);
        }
        if (st) goto fail;
        fprintf(stderr, "wrote %d images to %s/\n", n, out_dir);
    }
    if (npy) {
        if ((st = write_npy(npy, x, n, c, h, w))) goto fail;
        fprintf(stderr, "wrote %s (uint8, %d x %d x %d x %d)\n", npy, n, h, w, c);
    }
    if (animate && watch.nframes > 0) {
        int fn = DF_MIN(n, batch), gh, gw, fc = cols > fn ? fn : cols;
        df_image_grid(NULL, fn, c, h, w, fc, 2, NULL, &gh, &gw);
        size_t gsize = (size_t)c * gh * gw;
        float *grids = malloc(sizeof(float) * gsize * (size_t)watch.nframes);
        if (!grids) {
            st = df_fail(DF_ERR_NOMEM, "out of memory for the animation");
            goto fail;
        }
        for (int f = 0; f < watch.nframes; f++)
            df_image_grid(watch.frames + (size_t)f * watch.frame_size, fn, c, h, w, fc, 2, grids + (size_t)f * gsize, &gh, &gw);
        if (ends_with(animate, ".gif")) st = df_image_save_gif(animate, grids, watch.nframes, c, gh, gw, 150, 1500);
        else st = df_image_save_grid(animate, grids, watch.nframes, c, gh, gw, watch.nframes, 4);
        free(grids);
        if (st) goto fail;
        fprintf(stderr, "wrote %s (%d frames)\n", animate, watch.nframes);
    }
    rc = 0;
    goto done;
fail:
    cli_fail(st);
done:
    free(x), free(src), free(mask), free(labels), free(watch.frames);
    df_schedule_free(&sched);
    df_model_free(m);
    return rc;
}
