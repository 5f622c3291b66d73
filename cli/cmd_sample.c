/* `diffuse sample`: generate images from a trained model with any sampler, as a PNG grid, single PNGs or
 * a NumPy array; optionally the denoising process as an animation; image-to-image and inpainting. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "internal.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int sample_main(int argc, char **argv);

const cli_command cmd_sample = {
    .name = "sample",
    .usage = "usage: diffuse sample MODEL [options]",
    .summary = "generate images; image-to-image, inpainting, animations",
    .about = "Generate images. MODEL is a run directory (its latest checkpoint), a checkpoint or diffusers pipeline\n"
             "directory (unet/ + scheduler/), or a bare diffusers model directory.",
    .max_args = 1,
    .run = sample_main,
};

/* Everything `diffuse sample` was asked for, as parsed and checked before a model is loaded. */
typedef struct {
    const char     *model;
    int             n, batch, steps, cols, raw;
    uint64_t        seed;
    df_sampler_kind sampler;
    df_spacing      spacing;
    double          eta;
    int             karras, large_variance, no_clip, threshold, clipped_eps, model_eps;
    cli_ints        labels;
    double          guidance, guidance_rescale, classifier_scale;
    const char     *classifier_dir, *score_dir;
    const char     *out, *out_dir, *npy, *animate;
    int             frames;
    const char     *init_image, *inpaint, *mask;
    double          strength;
    int             jump_length, jump_n;
} sample_settings;

static void sample_settings_default(sample_settings *s) {
    df_sampler_params sp;
    df_sampler_params_default(&sp);
    *s = (sample_settings){.n = 64, .batch = 64, .sampler = sp.kind, .spacing = sp.spacing, .eta = sp.eta,
                           .guidance = 1, .classifier_scale = 1, .frames = 12, .jump_length = 1, .jump_n = 1};
}

/* The sampler the run uses, and whether its options fit it. Returns 0 or 2 (a usage error). */
static int check_sampler(const cli_args *a, const sample_settings *s) {
    /* inpainting always takes DDPM's ancestral step (RePaint alg. 1) */
    if (s->inpaint && cli_given(a, "--sampler") && s->sampler != DF_SAMPLER_DDPM)
        return cli_usage_error("--sampler %s: --inpaint uses DDPM's step (RePaint); leave out --sampler or give ddpm",
                               df_sampler_name(s->sampler));
    df_sampler_kind kind = s->inpaint ? DF_SAMPLER_DDPM : s->sampler;
    const char *kname = df_sampler_name(kind);
    if (cli_given(a, "--eta") && kind != DF_SAMPLER_DDIM)
        return cli_usage_error("--eta is DDIM's noise; the %s sampler has none", kname);
    if (s->karras && !(kind == DF_SAMPLER_EULER || kind == DF_SAMPLER_HEUN || kind == DF_SAMPLER_DPMPP_1S ||
                       kind == DF_SAMPLER_DPMPP_2M || kind == DF_SAMPLER_DPMPP_3M))
        return cli_usage_error("--karras needs a sigma-space sampler (euler, heun, dpmpp-*), not %s", kname);
    if (s->large_variance && kind != DF_SAMPLER_DDPM)
        return cli_usage_error("--large-variance goes with --sampler ddpm, not %s", kname);
    if (s->clipped_eps && s->model_eps) return cli_usage_error("--clipped-eps and --model-eps exclude each other");
    return 0;
}

/* Options that need another: editing, animation, guidance. Returns 0 or 2 (a usage error). */
static int check_pairs(const cli_args *a, const sample_settings *s) {
    if (s->init_image && s->inpaint) return cli_usage_error("--init-image and --inpaint do not go together: give one");
    if (s->inpaint && !s->mask) return cli_usage_error("--inpaint needs --mask MASK (white: regenerate, black: keep)");
    if (s->mask && !s->inpaint) return cli_usage_error("--mask goes with --inpaint IMG");
    if (s->init_image && !cli_given(a, "--strength"))
        return cli_usage_error("--init-image needs --strength S with 0 < S <= 1");
    if (cli_given(a, "--strength") && !s->init_image) return cli_usage_error("--strength goes with --init-image IMG");
    if ((cli_given(a, "--jump-length") || cli_given(a, "--jump-n")) && !s->inpaint)
        return cli_usage_error("%s goes with --inpaint (RePaint's resampling)",
                               cli_given(a, "--jump-length") ? "--jump-length" : "--jump-n");
    if (cli_given(a, "--frames") && !s->animate) return cli_usage_error("--frames goes with --animate FILE");
    if (cli_given(a, "--classifier-scale") && !s->classifier_dir)
        return cli_usage_error("--classifier-scale goes with --classifier");
    return 0;
}

/* Outputs of the kinds their names say, none written over another or over an input; every input there and
 * every output writable. Returns 0, 1 (a file problem) or 2 (a usage error). */
static int check_files(const cli_args *a, sample_settings *s) {
    if (!s->out && !s->out_dir && !s->npy) s->out = "samples.png";
    if (s->out && !cli_has_suffix(s->out, ".png"))
        return cli_usage_error("--out %s: the grid is a PNG: name it .png", s->out);
    if (s->npy && !cli_has_suffix(s->npy, ".npy")) return cli_usage_error("--npy %s: name it .npy", s->npy);
    if (s->animate && !cli_has_suffix(s->animate, ".gif") && !cli_has_suffix(s->animate, ".png"))
        return cli_usage_error("--animate %s: name it .gif (an animation) or .png (a strip)", s->animate);
    if (cli_given(a, "--cols") && !s->out && !s->animate)
        return cli_usage_error("--cols sets the grid's columns: it goes with --out or --animate");
    typedef struct {
        const char *opt, *path;
    } named_path;
    const named_path outs[] = {{"--out", s->out}, {"--npy", s->npy}, {"--animate", s->animate}, {"--out-dir", s->out_dir}};
    const named_path ins[] = {
        {"MODEL", s->model}, {"--init-image", s->init_image}, {"--inpaint", s->inpaint}, {"--mask", s->mask}};
    for (int i = 0; i < CLI_COUNTOF(outs); i++) {
        if (!outs[i].path) continue;
        for (int j = 0; j < i; j++)
            if (outs[j].path && cli_same_file(outs[i].path, outs[j].path))
                return cli_usage_error("%s and %s are both %s: give each output its own name", outs[j].opt, outs[i].opt,
                                       outs[i].path);
        for (int j = 0; j < CLI_COUNTOF(ins); j++)
            if (ins[j].path && cli_same_file(outs[i].path, ins[j].path))
                return cli_usage_error("%s %s would overwrite %s", outs[i].opt, outs[i].path, ins[j].opt);
    }
    if (cli_check_input("", s->model, 1)) return 1;
    for (int j = 1; j < CLI_COUNTOF(ins); j++)
        if (ins[j].path && cli_check_input(ins[j].opt, ins[j].path, 0)) return 1;
    for (int i = 0; i < CLI_COUNTOF(outs); i++)
        if (outs[i].path && cli_check_output(outs[i].opt, outs[i].path, i == 3)) return 1;
    return 0;
}

/* The command line into s, checked as far as it can be without the model. Returns 0, CLI_HELP, or the exit
 * code after reporting. */
static int parse(int argc, char **argv, sample_settings *s) {
    const cli_opt opts[] = {
        OPT_INT("--n", &s->n, .lo = 1, .hi = 100000, .meta = "N", .help = "number of images"),
        OPT_INT("--batch", &s->batch, .lo = 1, .hi = 4096, .meta = "N", .help = "images per network call"),
        OPT_U64("--seed", &s->seed, .meta = "S", .help = "noise seed; the same seed gives the same images"),
        OPT_ENUM("--sampler", &s->sampler, &cli_samplers, .meta = "NAME", .help = "the sampler"),
        OPT_INT("--steps", &s->steps, .lo = 1, .hi = 100000, .meta = "N", .def = "50; ddpm: the training timesteps",
                .help = "denoising steps"),
        OPT_DOUBLE("--eta", &s->eta, .lo = 0, .hi = 1, .meta = "X", .help = "DDIM noise, 0 for deterministic steps"),
        OPT_ENUM("--spacing", &s->spacing, &cli_spacings, .meta = "NAME", .help = "timestep spacing"),
        OPT_FLAG("--karras", &s->karras, .help = "Karras sigmas (euler, heun, dpmpp-*)"),
        OPT_FLAG("--large-variance", &s->large_variance, .help = "DDPM with beta_t as the reverse variance"),
        OPT_FLAG("--no-clip", &s->no_clip, .help = "do not clip predicted x_0 to [-1, 1]"),
        OPT_FLAG("--threshold", &s->threshold, .help = "dynamic thresholding (Imagen)"),
        OPT_FLAG("--clipped-eps", &s->clipped_eps,
                 .help = "DDIM steps with the noise implied by the clipped x_0, not the network's (on when guiding: "
                         "strong guidance otherwise washes out the background)"),
        OPT_FLAG("--model-eps", &s->model_eps, .help = "DDIM steps with the network's noise even when guiding "
                                                       "(diffusers' default)"),
        OPT_FLAG("--raw", &s->raw, .help = "use the trained weights instead of their moving average"),
        OPT_SECTION("classes and guidance:"),
        OPT_INTS("--labels", &s->labels, .lo = INT_MIN, .hi = INT_MAX, .meta = "L1,L2,...", .def = "0..classes-1",
                 .help = "class labels for a class-conditional model: image i gets L[i*k/n], so with n a multiple of k "
                         "the grid has one row per label"),
        OPT_DOUBLE("--guidance", &s->guidance, .lo = 0, .hi = 100, .meta = "W",
                   .help = "classifier-free guidance scale: eps_null + W (eps_label - eps_null); 1 is plain conditional "
                           "sampling, 0 unconditional, 2..5 sharper (the model needs a null class: train with --classes)"),
        OPT_DOUBLE("--guidance-rescale", &s->guidance_rescale, .lo = 0, .hi = 1, .meta = "P",
                   .help = "blend P of the guided prediction rescaled to the conditional one's spread"),
        OPT_STR("--classifier", &s->classifier_dir, .meta = "DIR",
                .help = "classifier guidance with a noise-aware classifier (train-classifier): each step moves by "
                        "--classifier-scale times grad log p(label | x_t) (Dhariwal & Nichol: algorithm 1 for ddpm, 2 "
                        "for the other samplers)"),
        OPT_DOUBLE("--classifier-scale", &s->classifier_scale, .lo = 0, .hi = 1000, .meta = "S",
                   .help = "classifier guidance's scale"),
        OPT_STR("--score", &s->score_dir, .meta = "DIR", .help = "classify the generated images with a noise-free "
                                                                 "classifier and print the accuracy against the "
                                                                 "requested labels"),
        OPT_SECTION("output (one or more; default --out samples.png):"),
        OPT_STR("--out", &s->out, .meta = "FILE.png", .help = "a grid"),
        OPT_INT("--cols", &s->cols, .lo = 1, .hi = 10000, .meta = "N", .def = "square, or one row per label",
                .help = "grid columns"),
        OPT_STR("--out-dir", &s->out_dir, .meta = "DIR", .help = "one PNG per image"),
        OPT_STR("--npy", &s->npy, .meta = "FILE.npy", .help = "uint8 array (N, H, W, C)"),
        OPT_STR("--animate", &s->animate, .meta = "FILE",
                .help = "the denoising process: an animated GIF (.gif) or a strip (.png) of the grid's predicted x_0 "
                        "from noise to image"),
        OPT_INT("--frames", &s->frames, .lo = 2, .hi = 1000, .meta = "N", .help = "the animation's frames"),
        OPT_SECTION("editing:"),
        OPT_STR("--init-image", &s->init_image, .meta = "IMG", .help = "image-to-image (SDEdit): start from IMG noised "
                                                                       "to --strength"),
        OPT_DOUBLE("--strength", &s->strength, .lo = 1e-6, .hi = 1, .meta = "S", .def = "",
                   .help = "how far to noise --init-image, in (0, 1]"),
        OPT_STR("--inpaint", &s->inpaint, .meta = "IMG",
                .help = "regenerate the white part of --mask, keep the rest of IMG (RePaint)"),
        OPT_STR("--mask", &s->mask, .meta = "MASK", .help = "the inpainting mask"),
        OPT_INT("--jump-length", &s->jump_length, .lo = 1, .hi = 1000, .meta = "N",
                .help = "RePaint resampling: jump back N steps; 1 is off"),
        OPT_INT("--jump-n", &s->jump_n, .lo = 1, .hi = 1000, .meta = "N", .help = "RePaint resampling: N times; 1 is off"),
        CLI_END,
    };
    cli_args a;
    int rc = cli_parse(&cmd_sample, opts, argc, argv, &a);
    if (rc) return rc;
    if (a.npos != 1) return cli_usage_error("which model? give a run, checkpoint or model directory");
    s->model = a.pos[0];
    if ((rc = check_pairs(&a, s)) || (rc = check_sampler(&a, s))) return rc;
    return check_files(&a, s);
}

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

/* Generate the images s asks for and write them. Returns 0, or the exit code after reporting. */
static int generate(const sample_settings *s) {
    /* the settings under the names the generation below uses */
    const char *model = s->model, *classifier_dir = s->classifier_dir, *score_dir = s->score_dir, *out = s->out,
               *out_dir = s->out_dir, *npy = s->npy, *animate = s->animate, *init_image = s->init_image,
               *inpaint = s->inpaint, *mask_path = s->mask, *labels_text = s->labels.text;
    int n = s->n, batch = s->batch, steps = s->steps, karras = s->karras, large = s->large_variance,
        no_clip = s->no_clip, threshold = s->threshold, clipped_eps = s->clipped_eps, model_eps = s->model_eps,
        raw = s->raw, cols = s->cols, frames_wanted = s->frames, jump_len = s->jump_length, jump_n = s->jump_n;
    uint64_t seed = s->seed;
    double eta = s->eta, strength = s->strength, guidance = s->guidance, guidance_rescale = s->guidance_rescale,
           classifier_scale = s->classifier_scale;
    int lab[CLI_MAX_INTS], nlab = s->labels.n, rc = 0;
    memcpy(lab, s->labels.v, sizeof(int) * (size_t)nlab);
    df_sampler_params sp;
    df_sampler_params_default(&sp);
    sp.kind = s->sampler, sp.spacing = s->spacing;
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
        cli_ints in_range;   /* the same numbers, now checked against the model's classes */
        rc = cli_parse_ints("--labels", labels_text, 0, nlabels - 1, &in_range);
    }
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

static int sample_main(int argc, char **argv) {
    sample_settings s;
    sample_settings_default(&s);
    int rc = parse(argc, argv, &s);
    return rc ? cli_exit(rc) : generate(&s);
}
