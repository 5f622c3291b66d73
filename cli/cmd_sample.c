/* `diffuse sample`: generate images from a trained model with any sampler, as a PNG grid, single PNGs or
 * a NumPy array; optionally the denoising process as an animation; image-to-image and inpainting. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "internal.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

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
    "  --clipped-eps         DDIM steps with the noise implied by the clipped x_0, not the network's (on\n"
    "                        when guiding: strong guidance otherwise washes out the background)\n"
    "  --model-eps           DDIM steps with the network's noise even when guiding (diffusers' default)\n"
    "  --labels L1,L2,...    class labels for a class-conditional model: image i gets L[i*k/n], so with n a\n"
    "                        multiple of k the grid has one row per label (default: 0..classes-1)\n"
    "  --guidance W          classifier-free guidance scale: eps_null + W (eps_label - eps_null); 1 (default)\n"
    "                        is plain conditional sampling, 0 unconditional, 2..5 sharper (the model needs a\n"
    "                        null class: train with --classes)\n"
    "  --guidance-rescale P  blend P of the guided prediction rescaled to the conditional one's spread (0)\n"
    "  --classifier DIR      classifier guidance with a noise-aware classifier (train-classifier): each step\n"
    "                        moves by --classifier-scale S (1) times grad log p(label | x_t) (Dhariwal &\n"
    "                        Nichol: algorithm 1 for ddpm, 2 for the other samplers)\n"
    "  --score DIR           classify the generated images with a noise-free classifier and print the\n"
    "                        accuracy against the requested labels\n"
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

int cmd_sample(int argc, char **argv) {
    int n = 64, batch = 64, steps = 0, karras = 0, large = 0, no_clip = 0, threshold = 0, clipped_eps = 0, model_eps = 0, raw = 0, cols = 0;
    int frames_wanted = 12, jump_len = 1, jump_n = 1;
    uint64_t seed = 0;
    double eta = 0, strength = 0, guidance = 1, guidance_rescale = 0, classifier_scale = 1;
    const char *classifier_dir = NULL, *score_dir = NULL;
    const char *sampler = NULL, *spacing = NULL, *labels_text = NULL, *out = NULL, *out_dir = NULL, *npy = NULL,
               *animate = NULL, *init_image = NULL, *inpaint = NULL, *mask_path = NULL;
    cli_opt opts[] = {
        {"--n", OPT_INT, &n, 1, 100000},
        {"--batch", OPT_INT, &batch, 1, 4096},
        {"--seed", OPT_U64, &seed, 0, 0},
        {"--sampler", OPT_STR, &sampler, 0, 0},
        {"--steps", OPT_INT, &steps, 1, 100000},
        {"--eta", OPT_DOUBLE, &eta, 0, 1},
        {"--spacing", OPT_STR, &spacing, 0, 0},
        {"--karras", OPT_FLAG, &karras, 0, 0},
        {"--large-variance", OPT_FLAG, &large, 0, 0},
        {"--no-clip", OPT_FLAG, &no_clip, 0, 0},
        {"--threshold", OPT_FLAG, &threshold, 0, 0},
        {"--clipped-eps", OPT_FLAG, &clipped_eps, 0, 0},
        {"--model-eps", OPT_FLAG, &model_eps, 0, 0},
        {"--labels", OPT_STR, &labels_text, 0, 0},
        {"--guidance", OPT_DOUBLE, &guidance, 0, 100},
        {"--guidance-rescale", OPT_DOUBLE, &guidance_rescale, 0, 1},
        {"--classifier", OPT_STR, &classifier_dir, 0, 0},
        {"--classifier-scale", OPT_DOUBLE, &classifier_scale, 0, 1000},
        {"--score", OPT_STR, &score_dir, 0, 0},
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
    int lab[1024], nlab = 0;
    const char *pos[1];
    int npos;
    int rc = cli_parse("sample", argc, argv, opts, pos, 1, &npos, cmd_sample_usage);
    if (rc) return rc;
    if (npos != 1) return cli_usage_error("which model? give a run, checkpoint or model directory");
    const char *model = pos[0];
#define GIVEN(name) cli_given(argc, argv, name)

    /* names, then options that contradict each other or have nothing to act on */
    df_sampler_params sp;
    df_sampler_params_default(&sp);
    if (sampler && df_sampler_parse(sampler, &sp.kind)) return cli_usage_error("--sampler: %s", df_error());
    if (spacing && df_spacing_parse(spacing, &sp.spacing)) return cli_usage_error("--spacing: %s", df_error());
    if (init_image && inpaint) return cli_usage_error("--init-image and --inpaint do not go together: give one");
    if (inpaint && !mask_path) return cli_usage_error("--inpaint needs --mask MASK (white: regenerate, black: keep)");
    if (mask_path && !inpaint) return cli_usage_error("--mask goes with --inpaint IMG");
    if (init_image && !GIVEN("--strength")) return cli_usage_error("--init-image needs --strength S with 0 < S <= 1");
    if (GIVEN("--strength") && !init_image) return cli_usage_error("--strength goes with --init-image IMG");
    if ((GIVEN("--jump-length") || GIVEN("--jump-n")) && !inpaint)
        return cli_usage_error("%s goes with --inpaint (RePaint's resampling)",
                               GIVEN("--jump-length") ? "--jump-length" : "--jump-n");
    /* inpainting always takes DDPM's ancestral step (RePaint alg. 1) */
    if (inpaint && sampler && sp.kind != DF_SAMPLER_DDPM)
        return cli_usage_error("--sampler %s: --inpaint uses DDPM's step (RePaint); leave out --sampler or give ddpm",
                               sampler);
    df_sampler_kind kind = inpaint ? DF_SAMPLER_DDPM : sp.kind;
    const char *kname = df_sampler_name(kind);
    if (GIVEN("--eta") && kind != DF_SAMPLER_DDIM)
        return cli_usage_error("--eta is DDIM's noise; the %s sampler has none", kname);
    if (karras && !(kind == DF_SAMPLER_EULER || kind == DF_SAMPLER_HEUN || kind == DF_SAMPLER_DPMPP_1S ||
                    kind == DF_SAMPLER_DPMPP_2M || kind == DF_SAMPLER_DPMPP_3M))
        return cli_usage_error("--karras needs a sigma-space sampler (euler, heun, dpmpp-*), not %s", kname);
    if (large && kind != DF_SAMPLER_DDPM)
        return cli_usage_error("--large-variance goes with --sampler ddpm, not %s", kname);
    /* the labels' form now, their range once the model tells its classes */
    if (labels_text && cli_parse_list("sample", "--labels", labels_text, INT_MIN, INT_MAX, lab, 1024, &nlab))
        return 2;

    /* outputs: the kinds their names say, none written over another or over an input */
    if (!out && !out_dir && !npy) out = "samples.png";
    if (out && !cli_has_suffix(out, ".png")) return cli_usage_error("--out %s: the grid is a PNG: name it .png", out);
    if (npy && !cli_has_suffix(npy, ".npy")) return cli_usage_error("--npy %s: name it .npy", npy);
    if (animate && !cli_has_suffix(animate, ".gif") && !cli_has_suffix(animate, ".png"))
        return cli_usage_error("--animate %s: name it .gif (an animation) or .png (a strip)", animate);
    if (GIVEN("--frames") && !animate) return cli_usage_error("--frames goes with --animate FILE");
    if (GIVEN("--cols") && !out && !animate)
        return cli_usage_error("--cols sets the grid's columns: it goes with --out or --animate");
    typedef struct {
        const char *opt, *path;
    } named_path;
    const named_path outs[] = {{"--out", out}, {"--npy", npy}, {"--animate", animate}, {"--out-dir", out_dir}};
    const named_path ins[] = {
        {"MODEL", model}, {"--init-image", init_image}, {"--inpaint", inpaint}, {"--mask", mask_path}};
    for (int i = 0; i < DF_COUNTOF(outs); i++) {
        if (!outs[i].path) continue;
        for (int j = 0; j < i; j++)
            if (outs[j].path && cli_same_file(outs[i].path, outs[j].path))
                return cli_usage_error("%s and %s are both %s: give each output its own name", outs[j].opt, outs[i].opt,
                                       outs[i].path);
        for (int j = 0; j < DF_COUNTOF(ins); j++)
            if (ins[j].path && cli_same_file(outs[i].path, ins[j].path))
                return cli_usage_error("%s %s would overwrite %s", outs[i].opt, outs[i].path, ins[j].opt);
    }
    /* every file there and every output writable before the model is loaded */
    if (cli_check_input("", model, 1)) return 1;
    for (int j = 1; j < DF_COUNTOF(ins); j++)
        if (ins[j].path && cli_check_input(ins[j].opt, ins[j].path, 0)) return 1;
    for (int i = 0; i < DF_COUNTOF(outs); i++)
        if (outs[i].path && cli_check_output(outs[i].opt, outs[i].path, i == 3)) return 1;
#undef GIVEN
    df_model *m;
    df_scheduler_config sc;
    df_status st = df_pipeline_load(model, raw, &m, &sc);
    if (st) return cli_fail(st);
    const df_unet_config *cfg = df_model_config(m);
    df_schedule sched;
    if ((st = df_schedule_from_config(&sc, &sched))) {
        df_model_free(m);
        return cli_fail(st);
    }
    sp.steps = steps ? steps : (sp.kind == DF_SAMPLER_DDPM ? sched.T : 50);
    sp.eta = eta;
    sp.karras_sigmas = karras;
    sp.variance_large = large;
    sp.prediction = sc.prediction;
    sp.clip_x0 = !no_clip;
    sp.clip_range = 1;
    sp.dynamic_threshold = threshold;
    const int c = cfg->in_channels, h = cfg->sample_size > 0 ? cfg->sample_size : 32, w = h;
    const size_t dim = (size_t)c * h * w;

    /* what only the models can tell: timesteps and classes. Labels are the model's classes, or the
     * classifier's when an unconditional model is guided by one. */
    int k = cfg->num_class_embeds;
    df_model *clf = NULL, *scorer = NULL;
    if (classifier_dir && (st = df_model_load(classifier_dir, &clf))) rc = cli_fail(st);
    if (!rc && score_dir && (st = df_model_load(score_dir, &scorer))) rc = cli_fail(st);
    if (!rc && clf && df_model_config(clf)->classifier_classes <= 0)
        rc = cli_usage_error("--classifier: %s is not a classifier (make one with train-classifier)", classifier_dir);
    if (!rc && scorer && df_model_config(scorer)->classifier_classes <= 0)
        rc = cli_usage_error("--score: %s is not a classifier (make one with train-classifier)", score_dir);
    if (!rc && clf && !df_model_config(clf)->classifier_noise_aware)   /* allowed, but rarely what is meant */
        fprintf(stderr, "diffuse sample: note: --classifier %s was not trained on noised images (made with "
                "--noise-free, or not recorded); its gradients at high noise guide poorly\n", classifier_dir);
    int kc = clf ? df_model_config(clf)->classifier_classes : 0, nlabels = k ? k : kc;
    if (rc) {
    } else if (sp.steps > sched.T) {
        rc = cli_usage_error("--steps %d: the model has only %d timesteps", sp.steps, sched.T);
    } else if ((labels_text || score_dir) && !nlabels) {
        rc = cli_usage_error("%s: this model is unconditional (it has no classes; --classifier can guide it)",
                             labels_text ? "--labels" : "--score");
    } else if (labels_text) {
        rc = cli_parse_list("sample", "--labels", labels_text, 0, nlabels - 1, lab, 1024, &nlab);
    }
    if (!rc && !classifier_dir && cli_given(argc, argv, "--classifier-scale"))
        rc = cli_usage_error("--classifier-scale goes with --classifier");
    if (!rc && clf && k && kc != k - (k > kc))
        rc = cli_usage_error("--classifier: %d classes, the model has %d", kc, k);
    df_class_info classes = {0};
    df_classifier_free_guidance cfg_guide = {0};
    df_classifier_guidance cg = {0};
    float *guide_ts = NULL;
    if (!rc && (st = df_class_info_load(model, m, &classes))) rc = cli_fail(st);
    int guided = !rc && (guidance != 1 || guidance_rescale > 0);
    if (guided && !k) rc = cli_usage_error("--guidance: this model is unconditional (it has no classes)");
    else if (guided && classes.null_class < 0)
        rc = cli_usage_error("--guidance: this model has no null class (train with --classes to learn one)");
    for (int i = 0; !rc && i < nlab; i++)
        if (lab[i] == classes.null_class && classes.null_class >= 0)
            rc = cli_usage_error("--labels: %d is the null class (\"no class\"); use --guidance 0 for unconditional "
                                 "samples", lab[i]);
    if (!rc && clipped_eps && model_eps) rc = cli_usage_error("--clipped-eps and --model-eps exclude each other");
    sp.clipped_eps = clipped_eps || ((guided || clf) && !model_eps);
    if (!rc && guided) {
        st = df_classifier_free_guidance_init(&cfg_guide, df_model_class_denoise, NULL, dim, classes.null_class);
        cfg_guide.scale = guidance, cfg_guide.rescale = guidance_rescale;
        if (st) rc = cli_fail(st);
    }
    df_model_denoiser clf_dn = {clf, h, w, NULL};
    if (!rc && clf) {   /* the base predictor is set per batch below */
        st = df_classifier_guidance_init(&cg, df_model_denoise, NULL, df_model_classify, &clf_dn, &sched, sp.prediction,
                                         dim);
        cg.scale = classifier_scale;
        if (!st && sp.kind == DF_SAMPLER_DDPM) {   /* algorithm 1: the mean shift needs the step list */
            guide_ts = malloc(sizeof(float) * (size_t)sp.steps);
            st = guide_ts ? df_sampler_timesteps(&sched, &sp, guide_ts) : df_fail(DF_ERR_NOMEM, "out of memory");
            cg.ddpm_mean = 1, cg.large_variance = sp.variance_large, cg.timesteps = guide_ts, cg.nsteps = sp.steps;
        }
        if (st) rc = cli_fail(st);
    }
    if (rc) {
        df_class_info_free(&classes);
        df_classifier_free_guidance_free(&cfg_guide);
        df_classifier_guidance_free(&cg);
        free(guide_ts);
        df_model_free(clf), df_model_free(scorer);
        df_model_free(m);
        df_schedule_free(&sched);
        return rc;
    }
    rc = 1;
    float *x = malloc(sizeof(float) * (size_t)n * dim), *src = NULL, *mask = NULL;
    int *labels = nlabels ? malloc(sizeof(int) * (size_t)n) : NULL;
    sample_watch watch = {0};
    cli_progress bar;
    if (!x || (nlabels && !labels)) {
        st = df_fail(DF_ERR_NOMEM, "out of memory for %d images", n);
        goto fail;
    }
    if (nlabels) {
        if (!labels_text)   /* every class but the null one */
            for (int j = 0; j < nlabels && nlab < 1024; j++)
                if (j != classes.null_class || !k) lab[nlab++] = j;
        for (int i = 0; i < n; i++) labels[i] = lab[(int)((long)i * nlab / n)];
        if (!cols && n % nlab == 0) cols = n / nlab;
    }
    if (init_image || inpaint) {
        src = malloc(sizeof(float) * dim);
        if (!src) st = df_fail(DF_ERR_NOMEM, "out of memory");
        if (st || (st = load_image_as(init_image ? init_image : inpaint, c, h, w, src))) goto fail;
    }
    if (mask_path) {
        float *mm = malloc(sizeof(float) * (size_t)h * w);
        mask = malloc(sizeof(float) * dim);
        if (!mm || !mask) st = df_fail(DF_ERR_NOMEM, "out of memory");
        if (st || (st = load_image_as(mask_path, 1, h, w, mm))) {
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
        df_model_denoiser dn = {m, h, w, labels && k ? labels + i0 : NULL};
        df_denoise_fn fn = df_model_denoise;
        void *fn_ctx = &dn;
        if (guided) {   /* both predictions from one network call of twice the batch */
            cfg_guide.ctx = &dn, cfg_guide.labels = dn.labels;
            fn = df_classifier_free_guidance_denoise, fn_ctx = &cfg_guide;
        }
        if (clf) {   /* classifier guidance around whatever predicts the noise */
            cg.fn = fn, cg.ctx = fn_ctx, cg.labels = labels + i0;
            fn = df_classifier_guidance_denoise, fn_ctx = &cg;
        }
        watch.done_before = b * sp.steps;
        if (b > 0) watch.max_frames = 0;   /* the animation shows the first batch */
        if (init_image || inpaint) {
            float *rep = malloc(sizeof(float) * (size_t)bn * dim);
            if (!rep) {
                st = df_fail(DF_ERR_NOMEM, "out of memory");
                break;
            }
            for (int i = 0; i < bn; i++) memcpy(rep + (size_t)i * dim, src, sizeof(float) * dim);
            st = init_image ? df_img2img(&sched, &sp, fn, fn_ctx, bn, dim, rep, strength, &rng, xb)
                            : df_inpaint(&sched, &sp, fn, fn_ctx, bn, dim, rep, mask, jump_len, jump_n, &rng, xb);
            free(rep);
        } else {
            st = df_sample(&sched, &sp, fn, fn_ctx, bn, dim, &rng, xb);
        }
    }
    cli_progress_done(&bar);
    if (st) goto fail;
    if (scorer) {   /* how often a noise-free classifier sees the requested class */
        double acc;   /* what diffuse eval --metrics acc computes */
        if ((st = df_eval_accuracy(scorer, x, n, h, w, labels, &acc))) goto fail;
        printf("accuracy of %s on the %d images: %.4f (%d right)\n", score_dir, n, acc, (int)lround(acc * n));
    }
    if (!cols) {
        cols = 1;
        while (cols * cols < n) cols++;
    }
    if (out && (st = df_image_save_grid(out, x, n, c, h, w, cols, 2))) goto fail;
    if (out) fprintf(stderr, "wrote %s (%d images)\n", out, n);
    if (out_dir) {
        if ((st = df_mkdir_p(out_dir))) goto fail;
        for (int i = 0; i < n && !st; i++) {
            char p[4200];
            snprintf(p, sizeof p, "%s/%06d.png", out_dir, i);
            st = df_image_save_png(p, x + (size_t)i * dim, c, h, w);
        }
        if (st) goto fail;
        fprintf(stderr, "wrote %d images to %s/\n", n, out_dir);
    }
    if (npy) {
        if ((st = df_npy_save_images(npy, x, n, c, h, w))) goto fail;
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
        if (cli_has_suffix(animate, ".gif"))
            st = df_image_save_gif(animate, grids, watch.nframes, c, gh, gw, 150, 1500);
        else
            st = df_image_save_grid(animate, grids, watch.nframes, c, gh, gw, watch.nframes, 4);
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
    df_classifier_free_guidance_free(&cfg_guide);
    df_classifier_guidance_free(&cg);
    free(guide_ts);
    df_model_free(clf), df_model_free(scorer);
    df_class_info_free(&classes);
    df_schedule_free(&sched);
    df_model_free(m);
    return rc;
}
