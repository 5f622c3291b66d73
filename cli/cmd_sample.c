/* `diffuse sample`: generate images from a trained model with any sampler, as a PNG grid, single PNGs or
 * a NumPy array; optionally the denoising process as an animation; image-to-image and inpainting. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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
    int             random_seed;      /* --seed random (or -1): one from the system */
    int             index;            /* --index K: image K of the run alone; -1: all */
    df_sampler_kind sampler;
    df_spacing      spacing;
    double          eta;
    int             karras, large_variance, no_clip, threshold, clipped_eps, model_eps;
    const char     *labels;           /* --labels as given: numbers or class names */
    const char     *prompt, *prompts_file, *negative_prompt;   /* a text-to-image model's prompts */
    double          guidance, guidance_rescale, classifier_scale;
    double          guidance_interval[2];   /* sigma's (lo, hi] */
    const char     *classifier_dir, *score_dir;
    const char     *out, *out_dir, *npy, *animate;
    int             frames;
    const char     *init_image, *inpaint, *mask;
    double          strength;
    int             jump_length, jump_n;
    const char     *format;           /* --out-dir's images: png, jpg or jpeg */
    int             quality;          /* JPEG quality (0: the library's default) */
    const char     *invert, *noise_out;   /* DDIM inversion of an image, and where its noise goes */
    int             no_reconstruct;
    const char     *size;             /* --size N or WxH, read into size_w, size_h (0: the model's) */
    int             size_w, size_h;
    int             list_samplers;
} sample_settings;

static void sample_settings_default(sample_settings *s) {
    df_sampler_params sp;
    df_sampler_params_default(&sp);
    *s = (sample_settings){.n = 64, .batch = 64, .index = -1, .sampler = sp.kind, .spacing = sp.spacing, .eta = sp.eta,
                           .guidance = 1, .classifier_scale = 1, .frames = 12, .jump_length = 1, .jump_n = 1,
                           .guidance_interval = {0, INFINITY}};
}

/* The sampler the run uses, and whether its options fit it. Returns 0 or 2 (a usage error). */
static int check_sampler(const cli_args *a, const sample_settings *s) {
    /* inpainting always takes DDPM's ancestral step (RePaint alg. 1) */
    if (s->inpaint && cli_given(a, "--sampler") && s->sampler != DF_SAMPLER_DDPM)
        return cli_usage_error("--sampler %s: --inpaint uses DDPM's step (RePaint); leave out --sampler or give ddpm",
                               df_sampler_name(s->sampler));
    const df_sampler_kind kind = s->inpaint ? DF_SAMPLER_DDPM : s->sampler;
    if (cli_check_sampler_options(a, kind, s->karras)) return 2;
    const char *kname = df_sampler_name(kind);
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
    if (cli_check_guidance_interval(a, s->guidance)) return 2;
    if ((cli_given(a, "--jump-length") || cli_given(a, "--jump-n")) && !s->inpaint)
        return cli_usage_error("%s goes with --inpaint (RePaint's resampling)",
                               cli_given(a, "--jump-length") ? "--jump-length" : "--jump-n");
    if (cli_given(a, "--frames") && !s->animate) return cli_usage_error("--frames goes with --animate FILE");
    if (cli_given(a, "--classifier-scale") && !s->classifier_dir)
        return cli_usage_error("--classifier-scale goes with --classifier");
    if (s->index >= s->n)
        return cli_usage_error("--index %d: the run has %d images (0 to %d); give the run's -n too", s->index, s->n,
                               s->n - 1);
    if (s->index >= 0 && s->animate)
        return cli_usage_error("--animate shows a whole batch: it does not go with --index");
    return 0;
}

/* mkdir -p: --out-dir for --index K's one file (df_image_save_each makes it for a whole run). Returns 0 or 1. */
static int make_dir(const char *dir) {
    char p[4200];
    snprintf(p, sizeof p, "%s", dir);
    for (char *c = p + 1;; c++)
        if (*c == '/' || !*c) {
            const char end = *c;
            *c = 0;
            if (mkdir(p, 0777) != 0 && errno != EEXIST)
                return cli_die("--out-dir %s: cannot make %s: %s", dir, p, strerror(errno));
            if (!end) return 0;
            *c = end;
        }
}

/* JPEG output: --format names a format --out-dir writes; --quality needs a JPEG to apply to. Returns 0 or 2. */
static int check_formats(const sample_settings *s) {
    static const char *const formats[] = {"png", "jpg", "jpeg"};
    int f = -1;
    for (int i = 0; s->format && i < CLI_COUNTOF(formats); i++)
        if (cli_has_suffix(s->format, formats[i]) && strlen(s->format) == strlen(formats[i])) f = i;
    if (s->format && f < 0) return cli_usage_error("--format %s: give png or jpg", s->format);
    if (s->format && !s->out_dir) return cli_usage_error("--format sets --out-dir's images; --out takes its name's");
    const int jpeg_out = s->out && !cli_has_suffix(s->out, ".png");   /* .jpg or .jpeg, checked with the names */
    if (s->quality && !jpeg_out && f < 1)
        return cli_usage_error("--quality goes with a JPEG: --out FILE.jpg or --out-dir DIR --format jpg");
    return 0;
}

/* --size N or WxH into size_w, size_h. Returns 0 or 2. */
static int parse_size(sample_settings *s) {
    if (!s->size) return 0;
    char *end;
    long w = strtol(s->size, &end, 10), h = w;
    if (end != s->size && (*end == 'x' || *end == 'X')) {
        const char *p = end + 1;
        h = strtol(p, &end, 10);
        if (end == p) h = 0;
    }
    if (end == s->size || *end || w < 1 || h < 1 || w > DF_MAX_SIZE || h > DF_MAX_SIZE)
        return cli_usage_error("--size %s: give N or WxH, 1 to %d pixels a side", s->size, DF_MAX_SIZE);
    s->size_w = (int)w, s->size_h = (int)h;
    return 0;
}

/* --invert: one image, through DDIM's ODE alone; its own outputs. Returns 0, 1 (a file problem) or 2. */
static int check_invert(const cli_args *a, sample_settings *s) {
    if (!s->invert) {
        if (s->noise_out || s->no_reconstruct)
            return cli_usage_error("%s goes with --invert IMG", s->noise_out ? "--noise-out" : "--no-reconstruct");
        return 0;
    }
    static const char *const others[] = {"--n", "--sampler", "--eta", "--guidance", "--guidance-rescale", "--classifier",
                                         "--init-image", "--inpaint", "--animate", "--score", "--threshold",
                                         "--clipped-eps", "--karras", "--large-variance", "--index"};
    for (int i = 0; i < CLI_COUNTOF(others); i++)
        if (cli_given(a, others[i]))
            return cli_usage_error("%s does not go with --invert (one image, DDIM without noise, the model alone)",
                                   others[i]);
    if (s->noise_out && !cli_has_suffix(s->noise_out, ".safetensors"))
        return cli_usage_error("--noise-out %s: the noise is a safetensors file: name it .safetensors", s->noise_out);
    if (s->no_reconstruct && !s->noise_out) return cli_usage_error("--no-reconstruct keeps only the noise: give --noise-out");
    if (s->no_reconstruct && (s->out || s->out_dir || s->npy))
        return cli_usage_error("--no-reconstruct writes no images: leave out --out, --out-dir and --npy");
    if (s->noise_out && cli_same_file(s->noise_out, s->invert))
        return cli_usage_error("--noise-out %s would overwrite --invert", s->noise_out);
    s->n = 1;
    return cli_check_input("--invert", s->invert, 0) || (s->noise_out && cli_check_output("--noise-out", s->noise_out, 0));
}

/* Outputs of the kinds their names say, none written over another or over an input; every input there and
 * every output writable. Returns 0, 1 (a file problem) or 2 (a usage error). */
static int check_files(const cli_args *a, sample_settings *s) {
    if (!s->out && !s->out_dir && !s->npy && !s->animate && !s->no_reconstruct) s->out = "samples.png";
    if (s->out && !cli_has_suffix(s->out, ".png") && !cli_has_suffix(s->out, ".jpg") && !cli_has_suffix(s->out, ".jpeg"))
        return cli_usage_error("--out %s: the grid is a PNG or a JPEG: name it .png, .jpg or .jpeg", s->out);
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
    return s->index >= 0 && s->out_dir ? make_dir(s->out_dir) : 0;
}

/* --list-samplers: each sampler's name, summary and the other spellings it accepts, from the library's table.
 * Returns CLI_HELP (exit 0). */
static int list_samplers(void) {
    for (int k = 0; k < DF_SAMPLER_COUNT; k++) {
        const df_sampler_info *si = df_sampler_info_get((df_sampler_kind)k);
        printf("%-10s %s\n", si->name, si->summary);
        if (si->aliases[0]) printf("%-10s also: %s\n", "", si->aliases);
    }
    printf("Names are read ignoring case, '-', '_' and spaces, with '+' as 'p' (\"DPM++ 2M\" is dpmpp-2m).\n");
    return CLI_HELP;
}

/* --seed S, or "random" (sd.cpp users type -1) for one from the system. */
static int parse_seed(const char *text, void *dst) {
    sample_settings *s = dst;
    char *end;
    errno = 0;
    s->random_seed = strcmp(text, "random") == 0 || strcmp(text, "-1") == 0;
    if (!s->random_seed) s->seed = strtoull(text, &end, 10);
    if (!s->random_seed && (!isdigit((unsigned char)text[0]) || *end || errno))
        return cli_usage_error("--seed: expected a whole number from 0 to %llu, or random (or -1), got \"%s\"",
                               ULLONG_MAX, text);
    return 0;
}

/* The command line into s, checked as far as it can be without the model. Returns 0, CLI_HELP, or the exit
 * code after reporting. */
static int parse(int argc, char **argv, sample_settings *s) {
    const cli_opt opts[] = {
        OPT_INT("--n", &s->n, .alias = "-n", .lo = 1, .hi = 100000, .meta = "N", .help = "number of images"),
        OPT_INT("--batch", &s->batch, .lo = 1, .hi = 4096, .meta = "N", .help = "images per network call"),
        OPT_CALL("--seed", s, parse_seed, .alias = "-s", .meta = "S", .def = "0",
                 .help = "noise seed; the same seed gives the same images; random (or -1): one from the system, "
                         "printed and recorded in the PNGs"),
        OPT_INT("--index", &s->index, .lo = 0, .hi = 99999, .meta = "K", .def = "",
                .help = "only image K of the run (0-based; the other options as the run had them, -n and --batch "
                        "too, which the \"parameters\" chunk of its PNGs records), bit for bit as the run made it: "
                        "--out writes it alone, --out-dir under the run's name for it"),
        OPT_ENUM("--sampler", &s->sampler, &cli_samplers, .meta = "NAME",
                 .help = "the sampler (other tools' spellings too: dpm++2m, k_euler_a...)"),
        OPT_FLAG("--list-samplers", &s->list_samplers, .help = "list the samplers with their other names, and exit"),
        OPT_INT("--steps", &s->steps, .lo = 1, .hi = 100000, .meta = "N", .def = "50; ddpm: the training timesteps",
                .help = "denoising steps"),
        OPT_DOUBLE("--eta", &s->eta, .lo = 0, .hi = 1, .meta = "X", .help = "DDIM noise, 0 for deterministic steps"),
        OPT_ENUM("--spacing", &s->spacing, &cli_spacings, .meta = "NAME", .help = "timestep spacing"),
        OPT_FLAG("--karras", &s->karras, .help = CLI_HELP_KARRAS),
        OPT_FLAG("--large-variance", &s->large_variance, .help = "DDPM with beta_t as the reverse variance (a model with "
                 "learned variances steps with those unless guided)"),
        OPT_FLAG("--no-clip", &s->no_clip, .help = "do not clip predicted x_0 to [-1, 1]"),
        OPT_FLAG("--threshold", &s->threshold, .help = "dynamic thresholding (Imagen)"),
        OPT_FLAG("--clipped-eps", &s->clipped_eps,
                 .help = "DDIM steps with the noise implied by the clipped x_0, not the network's (on when guiding: "
                         "strong guidance otherwise washes out the background)"),
        OPT_FLAG("--model-eps", &s->model_eps, .help = "DDIM steps with the network's noise even when guiding "
                                                       "(diffusers' default)"),
        OPT_FLAG("--raw", &s->raw, .help = "use the trained weights instead of their moving average"),
        OPT_STR("--size", &s->size, .meta = "N|WxH", .def = "the model's",
                .help = "image size: N x N, or W wide and H high, each a multiple of 2^(levels - 1) (4 for fmnist-s); "
                        "the network draws what it learnt at its own size, so at twice that, several garments"),
        OPT_SECTION("text, classes and guidance:"),
        OPT_STR("--prompt", &s->prompt, .meta = "TEXT",
                .help = "a text-to-image model's prompt (UTF-8; longer than the tokenizer's context, it is cut as CLIP "
                        "cuts it)"),
        OPT_STR("--prompts", &s->prompts_file, .meta = "FILE",
                .help = "one prompt per line, each a row of the grid (blank lines skipped)"),
        OPT_STR("--negative-prompt", &s->negative_prompt, .meta = "TEXT", .def = "the empty prompt",
                .help = "what guidance steers away from: the unconditional branch's text"),
        OPT_STR("--labels", &s->labels, .meta = "L1,L2,...", .def = "every class",
                .help = "class labels for a class-conditional model, as numbers or as names from its classes.json "
                        "(any case: Sneaker,bag): image i gets L[i*k/n], so with n a multiple of k the grid has one "
                        "row per label"),
        OPT_DOUBLE("--guidance", &s->guidance, .alias = "--cfg-scale", .lo = 0, .hi = 100, .meta = "W",
                   .help = "classifier-free guidance scale: eps_null + W (eps_label - eps_null); 1 is plain conditional "
                           "sampling, 0 unconditional, 2..5 sharper (the model needs a null class: train with --classes)"),
        OPT_DOUBLE("--guidance-rescale", &s->guidance_rescale, .lo = 0, .hi = 1, .meta = "P",
                   .help = "blend P of the guided prediction rescaled to the conditional one's spread"),
        OPT_CALL("--guidance-interval", s->guidance_interval, cli_parse_guidance_interval, .meta = "LO,HI",
                 .def = "every step", .help = CLI_HELP_GUIDANCE_INTERVAL),
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
        OPT_STR("--out", &s->out, .alias = "-o", .meta = "FILE.png", .help = "a grid; a JPEG when named .jpg or .jpeg"),
        OPT_INT("--cols", &s->cols, .lo = 1, .hi = 10000, .meta = "N", .def = "square, or one row per label",
                .help = "grid columns"),
        OPT_STR("--out-dir", &s->out_dir, .meta = "DIR", .help = "one file per image (NNNNNN.png, or --format jpg)"),
        OPT_STR("--format", &s->format, .meta = "FMT", .def = "png",
                .help = "--out-dir's images: png or jpg (--out takes its format from its name: .png, .jpg, .jpeg)"),
        OPT_INT("--quality", &s->quality, .lo = 1, .hi = 100, .meta = "Q", .def = "95",
                .help = "JPEG quality, with the parameters in the JPEG's comment"),
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
        OPT_SECTION("inversion:"),
        OPT_STR("--invert", &s->invert, .meta = "IMG",
                .help = "DDIM inversion: map IMG to the noise that DDIM (eta 0, --steps) turns into it, then sample "
                        "that noise back and print the reconstruction's error; the reconstruction is written as "
                        "images are (a class-conditional model needs the image's class in --labels)"),
        OPT_STR("--noise-out", &s->noise_out, .meta = "FILE.safetensors",
                .help = "with --invert: the noise, as the tensor \"noise\" (1, C, H, W)"),
        OPT_FLAG("--no-reconstruct", &s->no_reconstruct, .help = "with --invert: stop at the noise (--noise-out)"),
        CLI_END,
    };
    cli_args a;
    int rc = cli_parse(&cmd_sample, opts, argc, argv, &a);
    if (rc) return rc;
    if (s->list_samplers) return list_samplers();
    if (a.npos != 1) return cli_usage_error("which model? give a run, checkpoint or model directory");
    s->model = a.pos[0];
    if ((rc = check_pairs(&a, s)) || (rc = check_sampler(&a, s)) || (rc = check_formats(s)) ||
        (rc = check_invert(&a, s)) ||
        (rc = parse_size(s)))
        return rc;
    return check_files(&a, s);
}

/* What the run loaded: the model and its schedule and classes, the classifiers, the image size. */
typedef struct {
    df_model           *model, *classifier, *scorer;
    df_scheduler_config sc;
    df_schedule         sched;
    df_class_info       classes, guide_classes, score_classes;   /* the model's, --classifier's, --score's */
    int                 c, h, w, k, kc;   /* k: the model's classes; kc: the guiding classifier's */
    int                 steps;            /* the sampler's steps, defaults resolved */
    int                 list[CLI_MAX_INTS], nlist;   /* --labels as class indices */
    /* a text-to-image model's: its text encoder and tokenizer, the prompts, and their states with the negative
     * (or empty) prompt's last (texts x text_len x width) */
    df_text_encoder    *encoder;
    df_tokenizer       *tokenizer;
    df_lines            prompt_lines;     /* --prompts' file */
    const char        **prompts;
    int                 nprompts, ntexts, text_len;
    float              *texts;
} sample_run;

static void run_close(sample_run *r) {
    df_model_free(r->model), df_model_free(r->classifier), df_model_free(r->scorer);
    df_text_encoder_free(r->encoder), df_tokenizer_free(r->tokenizer);
    df_lines_free(&r->prompt_lines), free(r->prompts), free(r->texts);
    df_schedule_free(&r->sched);
    df_class_info_free(&r->classes), df_class_info_free(&r->guide_classes), df_class_info_free(&r->score_classes);
}

/* The classes labels name: the model's, or the guiding classifier's for an unconditional model. */
static const df_class_info *label_classes(const sample_run *r) { return r->k ? &r->classes : &r->guide_classes; }

/* A classifier for --classifier or --score, with its classes. Returns 0, or the exit code after reporting. */
static int load_classifier(const char *opt, const char *dir, df_model **out, df_class_info *ci) {
    df_status st = df_pipeline_load(dir, 0, out, NULL);   /* a diffusion pipeline loads too, and is refused */
    if (st) return cli_fail(st);
    if (df_model_config(*out)->classifier_classes <= 0)
        return cli_usage_error("%s: %s is not a classifier (make one with train-classifier)", opt, dir);
    return (st = df_class_info_load(dir, *out, ci)) ? cli_fail(st) : 0;
}

/* A classifier must see the classes the labels name (the model's, or the guiding classifier's): refused when
 * their names differ, said when only one side has names to compare. Returns 0 or the exit code. */
static int check_classes(const char *opt, const char *dir, const df_class_info *labels, const char *whose,
                         const df_class_info *ci) {
    if (df_class_info_match(labels, ci))
        return cli_usage_error("%s %s: its classes are not those of %s: %s", opt, dir, whose, df_error());
    if (labels->count && !labels->names != !ci->names)
        fprintf(stderr, "diffuse sample: note: %s %s: %s has class names and %s not, so they cannot be checked to "
                "be the same classes\n", opt, dir, labels->names ? whose : "it", labels->names ? "it has" : whose);
    return 0;
}

/* --labels: comma-separated class numbers or names, into r->list. Returns 0 or the exit code. */
static int parse_labels(const char *text, const df_class_info *ci, sample_run *r) {
    r->nlist = 0;
    for (const char *p = text;; p++) {
        const size_t len = strcspn(p, ",");
        char word[256];
        snprintf(word, sizeof word, "%.*s", (int)CLI_MIN(len, sizeof word - 1), p);
        char *w = word + strspn(word, " ");
        for (size_t e = strlen(w); e > 0 && w[e - 1] == ' '; e--) w[e - 1] = 0;
        if (!*w) return cli_usage_error("--labels: an empty label in \"%s\"", text);
        if (r->nlist == CLI_MAX_INTS) return cli_usage_error("--labels: at most %d labels", CLI_MAX_INTS);
        if (df_class_info_find(ci, w, &r->list[r->nlist++])) {
            char low[256], names[CLI_MAX_INTS][64], near[300];   /* "did you mean", ignoring case */
            const char *cand[CLI_MAX_INTS];
            int nc = 0;
            for (int i = 0; ci->names && i < ci->count && i < CLI_MAX_INTS; i++) {
                snprintf(names[i], sizeof names[i], "%s", ci->names[i] ? ci->names[i] : "");
                for (char *c = names[i]; *c; c++) *c = (char)tolower((unsigned char)*c);
                cand[nc++] = names[i];
            }
            snprintf(low, sizeof low, "%s", w);
            for (char *c = low; *c; c++) *c = (char)tolower((unsigned char)*c);
            const char *shown[CLI_MAX_INTS];
            for (int i = 0; i < nc; i++) shown[i] = ci->names[i];
            if (nc && cli_suggest(low, cand, shown, nc, near, sizeof near))
                return cli_usage_error("--labels: no class \"%s\" (did you mean %s?)", w, near);
            return cli_usage_error("--labels: %s", df_error());
        }
        p += len;
        if (!*p) return 0;
    }
}

/* A text-to-image model's prompts: --prompt, or --prompts' lines; encoded once, with the negative (or empty)
 * prompt's states last for guidance's unconditional branch. Returns 0 or the exit code after reporting. */
static int load_prompts(const sample_settings *s, sample_run *r) {
    if (!s->prompt && !s->prompts_file)
        return cli_usage_error("%s is a text-to-image model: give --prompt TEXT or --prompts FILE", s->model);
    if (s->prompt && s->prompts_file) return cli_usage_error("--prompt or --prompts, not both");
    if (s->labels) return cli_usage_error("--labels: a text-to-image model takes prompts, not classes");
    df_status st = df_text_pipeline_load(s->model, r->model, &r->encoder, &r->tokenizer);
    if (st) return cli_fail(st);
    if (s->prompts_file && (st = df_lines_read(s->prompts_file, &r->prompt_lines))) {
        char why[600];
        snprintf(why, sizeof why, "%s", df_error());
        return cli_die("--prompts %s", why);
    }
    const int cap = s->prompts_file ? r->prompt_lines.n : 1;
    r->prompts = malloc(sizeof *r->prompts * (size_t)(cap + 1));
    if (!r->prompts) return cli_die("out of memory for %d prompts", cap);
    if (s->prompt) r->prompts[r->nprompts++] = s->prompt;
    for (int i = 0; s->prompts_file && i < r->prompt_lines.n; i++) r->prompts[r->nprompts++] = r->prompt_lines.lines[i];
    if (!r->nprompts) return cli_usage_error("--prompts %s: no prompt in it", s->prompts_file);
    r->prompts[r->nprompts] = s->negative_prompt ? s->negative_prompt : "";
    r->ntexts = r->nprompts + 1;
    r->text_len = df_tokenizer_context(r->tokenizer);
    const size_t per = (size_t)r->text_len * df_text_encoder_config(r->encoder)->hidden_size;
    if (!(r->texts = malloc(sizeof(float) * per * (size_t)r->ntexts)))
        return cli_die("out of memory for %d prompts' states", r->ntexts);
    int cut = 0;
    if ((st = df_encode_prompts(r->encoder, r->tokenizer, r->ntexts, r->prompts, r->texts, &cut))) return cli_fail(st);
    if (cut)
        fprintf(stderr, "diffuse sample: note: %d prompt%s longer than the %d-token context, cut as CLIP cuts them\n",
                cut, cut == 1 ? " is" : "s are", r->text_len);
    return 0;
}

/* Load what s names and check what only the models can tell: timesteps and classes. Labels are the model's
 * classes, or the classifier's when an unconditional model is guided by one. Returns 0 or the exit code. */
static int load(const sample_settings *s, sample_run *r) {
    df_status st = df_pipeline_load(s->model, s->raw, &r->model, &r->sc);
    if (!st) st = df_schedule_from_config(&r->sc, &r->sched);
    if (!st) st = df_class_info_load(s->model, r->model, &r->classes);
    if (st) return cli_fail(st);
    const df_unet_config *cfg = df_model_config(r->model);
    if (cfg->classifier_classes > 0)
        return cli_usage_error("%s is a classifier, not a diffusion model (give it to --score or --classifier)",
                               s->model);
    r->c = cfg->in_channels, r->h = r->w = cfg->sample_size > 0 ? cfg->sample_size : 32, r->k = cfg->num_class_embeds;
    int rc = 0;
    if (!cfg->condition && (s->prompt || s->prompts_file || s->negative_prompt))
        return cli_usage_error("%s: this model does not take text (it is not a text-to-image model)",
                               s->prompt ? "--prompt" : s->prompts_file ? "--prompts" : "--negative-prompt");
    if (cfg->condition && (rc = load_prompts(s, r))) return rc;
    if (s->classifier_dir &&
        (rc = load_classifier("--classifier", s->classifier_dir, &r->classifier, &r->guide_classes)))
        return rc;
    if (s->score_dir && (rc = load_classifier("--score", s->score_dir, &r->scorer, &r->score_classes))) return rc;
    if (r->classifier && !df_model_config(r->classifier)->classifier_noise_aware)   /* allowed, rarely meant */
        fprintf(stderr, "diffuse sample: note: --classifier %s was not trained on noised images (made with "
                "--noise-free, or not recorded); its gradients at high noise guide poorly\n", s->classifier_dir);
    r->kc = r->classifier ? df_model_config(r->classifier)->classifier_classes : 0;
    const int nlabels = r->k ? r->k : r->kc, null = r->classes.null_class;
    const int steps = s->steps ? s->steps : s->sampler == DF_SAMPLER_DDPM || s->inpaint ? r->sched.T : 50;
    const int guided = s->guidance != 1 || s->guidance_rescale > 0;
    r->steps = steps;
    if (steps > r->sched.T) return cli_usage_error("--steps %d: the model has only %d timesteps", steps, r->sched.T);
    if (s->init_image && (int)(steps * s->strength) < 1)   /* diffusers' img2img: int(steps * strength) steps */
        return cli_usage_error("--strength %g of %d steps runs no step: give at least %g", s->strength, steps,
                               1.0 / steps);
    if ((s->labels || s->score_dir) && !nlabels)
        return cli_usage_error("%s: this model is unconditional (it has no classes; --classifier can guide it)",
                               s->labels ? "--labels" : "--score");
    if (s->labels && (rc = parse_labels(s->labels, label_classes(r), r))) return rc;
    if (r->classifier && (rc = check_classes("--classifier", s->classifier_dir, &r->classes, "the model",
                                             &r->guide_classes)))
        return rc;
    if (r->scorer && (rc = check_classes("--score", s->score_dir, label_classes(r),
                                         r->k ? "the model" : "--classifier", &r->score_classes)))
        return rc;
    if (guided && !r->k && !r->texts)
        return cli_usage_error("--guidance: this model is unconditional (it has no classes)");
    if (guided && null < 0 && !r->texts)
        return cli_usage_error("--guidance: this model has no null class (train with --classes to learn one)");
    for (int i = 0; i < r->nlist; i++)
        if (r->list[i] == null && null >= 0)
            return cli_usage_error("--labels: %d is the null class (\"no class\"); use --guidance 0 for unconditional "
                                   "samples", null);
    return 0;
}

/* An image file as (c, h, w), converted and resized (centre crop) when it differs, which is said once. */
static df_status load_image_as(const char *opt, const char *path, int c, int h, int w, float *out) {
    int ic, ih, iw;
    float *px;
    df_status st = df_image_load(path, 0, &ic, &ih, &iw, &px);   /* its own colour first, to say what changes */
    if (!st && ic != c) {
        free(px);
        fprintf(stderr, "diffuse sample: note: %s %s is %s; it is used as %s\n", opt, path, ic == 1 ? "gray" : "colour",
                c == 1 ? "gray" : "colour");
        st = df_image_load(path, c, &ic, &ih, &iw, &px);
    }
    if (st) return st;
    if (ih == h && iw == w) {
        memcpy(out, px, sizeof(float) * (size_t)c * h * w);
    } else {
        fprintf(stderr, "diffuse sample: note: %s %s is %dx%d; it is resized to the model's %dx%d (centre crop)\n", opt,
                path, iw, ih, w, h);
        st = df_image_resize(px, c, ih, iw, h, w, 1, out);
    }
    free(px);
    return st;
}

/* The edit's inputs: the image, and for inpainting the mask (white, > 0 in [-1, 1], is regenerated). */
static df_status load_edit(const sample_settings *s, const sample_run *r, float *image, float *mask) {
    df_status st = load_image_as(s->init_image ? "--init-image" : "--inpaint", s->init_image ? s->init_image : s->inpaint,
                                 r->c, r->h, r->w, image);
    if (st || !s->mask || (st = load_image_as("--mask", s->mask, 1, r->h, r->w, mask))) return st;
    for (int j = 0; j < r->h * r->w; j++) mask[j] = mask[j] > 0 ? 0.0f : 1.0f;   /* 1: keep */
    return DF_OK;
}

/* The progress bar, and the frames of the first batch for --animate. */
typedef struct {
    float        *frames;   /* captured x_0 predictions of the first batch, one frame per capture */
    int           nframes, max_frames;
    size_t        frame_size;
    cli_progress *bar;
} sample_watch;

static void on_step(void *ctx, const df_generate_step *s) {
    sample_watch *w = ctx;
    /* frame k at step 1 + round(k (steps - 1) / (frames - 1)): the first step's guess to the final image */
    int k = w->nframes, f = w->max_frames;
    int target = f > 1 ? 1 + (int)(((long)k * (s->steps - 1) + (f - 1) / 2) / (f - 1)) : s->steps;
    if (w->frames && s->first == 0 && k < f && s->step >= target) {
        memcpy(w->frames + (size_t)k * w->frame_size, s->x0 ? s->x0 : s->x, w->frame_size * sizeof(float));
        w->nframes++;
    }
    cli_progress_draw(w->bar, (double)s->done, (double)s->total, -1, "steps");
}

/* --animate: the captured frames as grids, into a GIF or one strip. */
static df_status write_animation(const char *path, const sample_watch *wt, int n, int c, int h, int w, int cols) {
    int gh, gw, fc = cols > n ? n : cols;
    df_image_grid(NULL, n, c, h, w, fc, 2, NULL, &gh, &gw);
    const size_t gsize = (size_t)c * gh * gw;
    float *grids = malloc(sizeof(float) * gsize * (size_t)wt->nframes);
    if (!grids) return cli_die("out of memory for the animation"), DF_ERR_NOMEM;
    for (int f = 0; f < wt->nframes; f++)
        df_image_grid(wt->frames + (size_t)f * wt->frame_size, n, c, h, w, fc, 2, grids + (size_t)f * gsize, &gh, &gw);
    df_status st = cli_has_suffix(path, ".gif") ? df_image_save_gif(path, grids, wt->nframes, c, gh, gw, 150, 1500)
                                                : df_image_save_grid(path, grids, wt->nframes, c, gh, gw, wt->nframes, 4);
    free(grids);
    if (!st) fprintf(stderr, "wrote %s (%d frames)\n", path, wt->nframes);
    return st;
}

/* The settings that make image `index` (or, with index < 0, the whole run) in the "parameters" form Stable
 * Diffusion tools read ("Steps: 50, Sampler: ddim, ..."). */
static void describe(const sample_settings *s, const sample_run *r, int index, const int *labels, char *buf,
                     size_t cap) {
    size_t o = 0;
#define ADD(...) (o += (size_t)snprintf(buf + o, o < cap ? cap - o : 0, __VA_ARGS__), o = o < cap ? o : cap)
    if (r->texts && index >= 0 && labels) {   /* the prompt first, as Stable Diffusion tools write it */
        ADD("%s\n", r->prompts[labels[index]]);
        if (s->negative_prompt) ADD("Negative prompt: %s\n", s->negative_prompt);
    }
    ADD("Steps: %d, Sampler: %s, CFG scale: %g, Seed: %llu, Size: %dx%d, Model: %s", r->steps,
        df_sampler_name(s->inpaint ? DF_SAMPLER_DDPM : s->sampler), s->guidance, (unsigned long long)s->seed, r->w,
        r->h, s->model);
    sample_settings d;   /* the other settings that change the images, where not the defaults: all to make it again */
    sample_settings_default(&d);
    if (s->eta != d.eta) ADD(", Eta: %g", s->eta);
    if (s->spacing != d.spacing) ADD(", Spacing: %s", df_spacing_name(s->spacing));
    if (s->guidance_rescale != d.guidance_rescale) ADD(", Guidance rescale: %g", s->guidance_rescale);
    if (s->guidance_interval[0] != d.guidance_interval[0] || s->guidance_interval[1] != d.guidance_interval[1])
        ADD(", Guidance interval: %g,%g", s->guidance_interval[0], s->guidance_interval[1]);
    if (s->karras || s->large_variance || s->no_clip || s->threshold || s->clipped_eps || s->model_eps || s->raw)
        ADD(", Flags:%s%s%s%s%s%s%s", s->karras ? " --karras" : "", s->large_variance ? " --large-variance" : "",
            s->no_clip ? " --no-clip" : "", s->threshold ? " --threshold" : "", s->clipped_eps ? " --clipped-eps" : "",
            s->model_eps ? " --model-eps" : "", s->raw ? " --raw" : "");
    if (s->classifier_dir) ADD(", Classifier: %s, Classifier scale: %g", s->classifier_dir, s->classifier_scale);
    if (s->init_image) ADD(", Init image: %s, Strength: %g", s->init_image, s->strength);
    if (s->inpaint) ADD(", Inpaint: %s, Mask: %s", s->inpaint, s->mask);
    if (s->invert) ADD(", Inverted: %s", s->invert);
    if (index >= 0) ADD(", Image: %d of %d, Batch: %d", index, s->n, s->batch);
    else ADD(", Images: %d, Batch: %d", s->n, s->batch);
    if (r->texts && index < 0)
        ADD(", %s: %s%s%s", r->nprompts == 1 ? "Prompt" : "Prompts (a row each)", r->prompts[0],
            r->nprompts > 1 ? " | ..." : "", s->negative_prompt ? ", Negative prompt given" : "");
    if (index >= 0 && labels && !r->texts) {
        const int l = labels[index];
        const df_class_info *ci = label_classes(r);
        const char *name = ci->names && l < ci->count ? ci->names[l] : NULL;
        ADD(", Label: %d%s%s%s", l, name ? " (" : "", name ? name : "", name ? ")" : "");
    }
#undef ADD
}

/* Image i's parameters, for df_image_save_each. */
typedef struct {
    const sample_settings *s;
    const sample_run      *r;
    const int             *labels;
} image_text;

static void describe_image(void *ctx, int i, char *buf, size_t cap) {
    const image_text *t = ctx;
    describe(t->s, t->r, i, t->labels, buf, cap);
}

/* Image i as dir/NNNNNN.png with its own parameters; with --index K, image K alone, named as in the run. */
static df_status save_each(const sample_settings *s, const sample_run *r, const float *x, const int *labels) {
    image_text t = {s, r, labels};
    const char *ext = s->format ? s->format : "png";
    size_t len = strlen(s->out_dir);   /* "pngs/" is not written "pngs//" */
    while (len > 1 && s->out_dir[len - 1] == '/') len--;
    if (s->index >= 0) {
        char path[4200], text[2048];
        snprintf(path, sizeof path, "%.*s/%06d.%s", (int)len, s->out_dir, s->index, ext);
        describe(s, r, s->index, labels, text, sizeof text);
        df_status st = df_image_save(path, x, r->c, r->h, r->w, s->quality, "parameters", text);
        if (!st) fprintf(stderr, "wrote %s\n", path);
        return st;
    }
    df_status st = df_image_save_each_as(s->out_dir, ext, s->quality, x, s->n, r->c, r->h, r->w, "parameters",
                                         describe_image, &t);
    if (!st) fprintf(stderr, "wrote %d %s to %.*s/\n", s->n, s->n == 1 ? "image" : "images", (int)len, s->out_dir);
    return st;
}

/* The grid, as a PNG or (by its name) a JPEG of --quality with the parameters in its comment. */
static df_status save_grid(const sample_settings *s, const float *x, int n, int c, int h, int w, int cols,
                           const char *text) {
    if (cli_has_suffix(s->out, ".png")) return df_image_save_grid_text(s->out, x, n, c, h, w, cols, 2, "parameters", text);
    int gh, gw;
    df_image_grid(NULL, n, c, h, w, cols, 2, NULL, &gh, &gw);
    float *g = malloc(sizeof(float) * (size_t)c * gh * gw);
    if (!g) return cli_die("out of memory for a %dx%d grid", gw, gh), DF_ERR_NOMEM;
    df_image_grid(x, n, c, h, w, cols, 2, g, &gh, &gw);
    df_status st = df_image_save(s->out, g, c, gh, gw, s->quality, "parameters", text);
    free(g);
    return st;
}

/* The outputs asked for: of the n images, or of image K alone (x) with --index K. */
static df_status write_outputs(const sample_settings *s, const sample_run *r, const float *x, const int *labels,
                               int cols, const sample_watch *wt) {
    const int one = s->index >= 0, n = one ? 1 : s->n, c = r->c, h = r->h, w = r->w;
    df_status st = DF_OK;
    if (r->scorer) {   /* how often a noise-free classifier sees the requested class (eval --metrics acc) */
        double acc;
        if ((st = df_eval_accuracy(r->scorer, x, n, h, w, labels + (one ? s->index : 0), &acc))) return st;
        printf("accuracy of %s on the %d images: %.4f (%d right)\n", s->score_dir, n, acc, (int)lround(acc * n));
    }
    char text[2048];
    describe(s, r, s->index, labels, text, sizeof text);
    printf("parameters: %s\n", text);
    if (s->out && one && !(st = df_image_save(s->out, x, c, h, w, s->quality, "parameters", text)))
        fprintf(stderr, "wrote %s (image %d of %d)\n", s->out, s->index, s->n);
    if (s->out && !one && !(st = save_grid(s, x, n, c, h, w, cols, text)))
        fprintf(stderr, "wrote %s (%d %s)\n", s->out, n, n == 1 ? "image" : "images");
    if (!st && s->out_dir) st = save_each(s, r, x, labels);
    if (!st && s->npy && !(st = df_npy_save_images(s->npy, x, n, c, h, w)))
        fprintf(stderr, "wrote %s (uint8, %d x %d x %d x %d)\n", s->npy, n, h, w, c);
    if (!st && s->animate && wt->nframes > 0) st = write_animation(s->animate, wt, CLI_MIN(n, s->batch), c, h, w, cols);
    return st;
}

/* The library's parameters for what s asks, with labels (n values, or NULL) and the edit's inputs. */
static void fill_params(const sample_settings *s, const sample_run *r, const int *labels, const float *image,
                        const float *mask, df_generate_params *g) {
    df_generate_params_for(g, r->model, &r->sc, &r->sched);
    g->n = s->n, g->batch = s->batch, g->seed = s->seed;
    g->h = r->h, g->w = r->w;
    df_sampler_params *sp = &g->sampler;
    sp->kind = s->sampler, sp->spacing = s->spacing, sp->steps = s->steps, sp->eta = s->eta;
    sp->karras_sigmas = s->karras, sp->variance_large = s->large_variance;
    sp->clip_x0 = !s->no_clip, sp->dynamic_threshold = s->threshold, sp->clipped_eps = s->clipped_eps;
    g->model_eps = s->model_eps;
    g->labels = labels, g->null_class = r->classes.null_class;
    if (r->texts) g->texts = r->texts, g->n_texts = r->ntexts, g->text_len = r->text_len, g->null_class = r->ntexts - 1;
    g->guidance = s->guidance, g->guidance_rescale = s->guidance_rescale;
    g->guidance_sigma_lo = s->guidance_interval[0], g->guidance_sigma_hi = s->guidance_interval[1];
    g->classifier = r->classifier, g->classifier_scale = s->classifier_scale;
    if (s->init_image) g->init_image = image, g->strength = s->strength;
    if (s->inpaint) g->inpaint_image = image, g->mask = mask, g->jump_length = s->jump_length, g->jump_n = s->jump_n;
}

/* The size asked for, if the network takes it (its downsamplings must halve it evenly). Returns 0 or 2. */
static int apply_size(const sample_settings *s, sample_run *r) {
    if (!s->size) return 0;
    const int levels = df_model_config(r->model)->num_levels, f = 1 << (levels - 1);
    if (s->size_w % f || s->size_h % f)
        return cli_usage_error("--size %s: the model halves images %d times: give %s of %d", s->size, levels - 1,
                               s->size_w == s->size_h ? "a multiple" : "multiples", f);
    r->w = s->size_w, r->h = s->size_h;
    return 0;
}

/* --invert: the image to its noise and back (df_invert), the error printed, the noise and the reconstruction
 * written. Returns 0, or the exit code after reporting. */
static int invert(const sample_settings *s, const sample_run *r) {
    if (r->k && !r->nlist)
        return cli_usage_error("--invert: this model is class-conditional: give the image's class with --labels");
    const size_t dim = (size_t)r->c * r->h * r->w;
    int label = r->k ? r->list[0] : 0;
    float *x = malloc(sizeof(float) * 3 * dim), *noise = x + dim, *recon = noise + dim;
    if (!x) return cli_die("out of memory for a %dx%d image", r->w, r->h);
    df_status st = load_image_as("--invert", s->invert, r->c, r->h, r->w, x);
    if (!st) {
        df_generate_params g;
        fill_params(s, r, r->k ? &label : NULL, NULL, NULL, &g);
        sample_watch wt = {0};
        cli_progress bar;
        cli_progress_init(&bar, "invert");
        wt.bar = &bar;
        g.on_step = on_step, g.ctx = &wt;
        st = df_invert(&g, x, noise, s->no_reconstruct ? NULL : recon);
        cli_progress_done(&bar);
    }
    char text[2048];
    describe(s, r, 0, r->k ? &label : NULL, text, sizeof text);
    if (!st && !s->no_reconstruct) {   /* the error in [-1, 1] units, and as PSNR over that range of 2 */
        double se = 0, worst = 0;
        for (size_t i = 0; i < dim; i++) {
            const double d = (double)recon[i] - x[i];
            se += d * d, worst = fmax(worst, fabs(d));
        }
        const double rmse = sqrt(se / (double)dim);
        printf("reconstruction error: RMSE %.5f, largest %.4f, PSNR %.2f dB (values in [-1, 1], %d DDIM steps each "
               "way)\n", rmse, worst, rmse > 0 ? 20 * log10(2 / rmse) : INFINITY, r->steps);
    }
    if (!st && s->noise_out && !(st = df_noise_save(s->noise_out, noise, 1, r->c, r->h, r->w, text)))
        fprintf(stderr, "wrote %s (the noise, float32 1 x %d x %d x %d)\n", s->noise_out, r->c, r->h, r->w);
    sample_watch none = {0};
    if (!st && !s->no_reconstruct) st = write_outputs(s, r, recon, r->k ? &label : NULL, 1, &none);
    free(x);
    return st ? cli_fail(st) : 0;
}

/* Generate the images s asks for and write them. Returns 0, or the exit code after reporting. */
static int generate(const sample_settings *s) {
    sample_run r;
    memset(&r, 0, sizeof r);
    int rc = load(s, &r);
    if (!rc) rc = apply_size(s, &r);
    if (rc || s->invert) {
        if (!rc) rc = invert(s, &r);
        run_close(&r);
        return rc;
    }
    const size_t dim = (size_t)r.c * r.h * r.w;
    const int n = s->n, nclasses = r.texts ? r.ntexts : r.k ? r.k : r.kc;
    int nlist = r.nlist, cols = s->cols;
    float *x = malloc(sizeof(float) * (size_t)n * dim), *image = malloc(sizeof(float) * dim);
    float *mask = malloc(sizeof(float) * (size_t)r.h * r.w);
    int *labels = nclasses ? malloc(sizeof(int) * (size_t)n) : NULL;
    sample_watch wt = {0};
    if (s->animate) {
        wt.max_frames = s->frames;
        wt.frame_size = (size_t)CLI_MIN(n, s->batch) * dim;
        wt.frames = malloc(sizeof(float) * wt.frame_size * (size_t)s->frames);
    }
    df_status st = x && image && mask && (labels || !nclasses) && (wt.frames || !s->animate) ? DF_OK : DF_ERR_NOMEM;
    if (st) cli_die("out of memory for %d images", n);
    /* labels: --labels, or every class but the null one, each for a run of images (a row of the grid) */
    if (labels && nlist) df_spread_labels(r.list, nlist, n, labels);
    else if (labels && r.texts) nlist = df_default_labels(nclasses, r.ntexts - 1, n, labels);   /* a row per prompt */
    else if (labels) nlist = df_default_labels(nclasses, r.k ? r.classes.null_class : -1, n, labels);
    if (!cols && nlist && n % nlist == 0) cols = n / nlist;
    for (; !cols || (long)cols * cols < n; cols++) {}   /* square */
    if (!st && (s->init_image || s->inpaint) && (st = load_edit(s, &r, image, mask))) cli_fail(st);
    if (!st) {
        df_generate_params g;
        fill_params(s, &r, labels, image, mask, &g);
        wt.max_frames = CLI_MIN(s->frames, g.sampler.steps > 0 ? g.sampler.steps : s->frames);
        cli_progress bar;
        cli_progress_init(&bar, "sample");
        wt.bar = &bar;
        g.on_step = on_step, g.ctx = &wt;
        st = s->index >= 0 ? df_generate_images(&g, s->index, 1, x) : df_generate(&g, x);
        cli_progress_done(&bar);
        if (st || (st = write_outputs(s, &r, x, labels, cols, &wt))) cli_fail(st);
    }
    free(x), free(image), free(mask), free(labels), free(wt.frames);
    run_close(&r);
    return st ? 1 : 0;
}

static int sample_main(int argc, char **argv) {
    sample_settings s;
    sample_settings_default(&s);
    int rc = parse(argc, argv, &s);
    if (rc) return cli_exit(rc);
    if (s.random_seed) {   /* said now, so that even a stopped run's seed is known */
        df_status st = df_random_seed(&s.seed);
        if (st) return cli_fail(st);
        fprintf(stderr, "seed %llu (random)\n", (unsigned long long)s.seed);
    }
    return generate(&s);
}
