/* `diffuse eval`: how good a model is: FD, KID, precision/recall, class accuracy, CAS and bits/dim against
 * a reference set, as a table or one JSON object; and the FD-against-steps sweep of the samplers. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int eval_main(int argc, char **argv);

const cli_command cmd_eval = {
    .name = "eval",
    .usage = "usage: diffuse eval MODEL_OR_IMAGES [--ref DATA] [--n N] [--metrics fd,kid,pr,acc,classes,cas,bpd] [options]",
    .summary = "score a model or images: FD, KID, precision/recall, CAS, bits/dim",
    .about = "Score a model (it samples --n images) or images already generated (a folder of PNG/JPEG, a subfolder per\n"
             "class giving labels, or a .npy) against a reference set, with the field's metrics (docs/evaluation.md):\n"
             "  fd   Fréchet distance of the features (FID's formula), with a bootstrap standard error\n"
             "  kid  kernel distance (KID): mean and spread over subsets, and a standard error\n"
             "  pr   precision and recall (k-nearest-neighbour manifolds)\n"
             "  acc  how often a classifier sees the class asked for (class-conditional models, labelled folders)\n"
             "  classes  what the classifier sees: the share of images it is sure of (top probability at least\n"
             "       --confidence: garments, not blobs) and each class's share of them (a skewed mix shows)\n"
             "  cas  classification accuracy score: a classifier trained on generated images, tested on real ones,\n"
             "       beside the same classifier trained on as many real images\n"
             "  bpd  negative log-likelihood bound in bits/dim on real test images (model only; with the model's\n"
             "       learned variances when it has them, else the posterior variance)",
    .max_args = 1,
    .run = eval_main,
};

static volatile int stop_requested;
static void on_stop(int sig) {
    (void)sig;
    stop_requested = 1;
}

typedef struct {
    cli_progress bar;
    char stage[96];
    int  bar_shown;
} eval_watch;

static void show(void *ctx, const char *stage, double done, double total) {
    eval_watch *w = ctx;
    if (strcmp(w->stage, stage) != 0) {   /* a new stage: a new bar, or one line for a stage without steps */
        if (w->stage[0] && w->bar_shown) cli_progress_done(&w->bar);
        snprintf(w->stage, sizeof w->stage, "%s", stage);
        cli_progress_init(&w->bar, w->stage);
        w->bar_shown = total > 1;
        if (!w->bar_shown) fprintf(stderr, "%s ...\n", stage);
    }
    if (w->bar_shown) cli_progress_draw(&w->bar, done, total, -1, "");
}

/* A directory that holds a model (pipeline, checkpoint, run or model directory) rather than images. */
static int looks_like_model(const char *path) {
    const char *marks[] = {"model_index.json", "unet", "latest", "config.json"};
    char p[4200];
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/%s", path, marks[i]);
        if (access(p, F_OK) == 0) return 1;
    }
    return 0;
}

static void sampler_text(const df_sampler_params *sp, char *out, size_t cap) {
    df_sampler_params d;
    df_sampler_params_default(&d);
    snprintf(out, cap, "%s %d steps%s%s%s", df_sampler_name(sp->kind), sp->steps, sp->spacing != d.spacing ? ", spacing " : "",
             sp->spacing != d.spacing ? df_spacing_name(sp->spacing) : "", sp->karras_sigmas ? ", Karras sigmas" : "");
}

static void print_value(const char *name, const df_eval_value *v, const char *fmt, const char *note) {
    if (!v->have) return;
    char val[32], se[32] = "";
    snprintf(val, sizeof val, fmt, v->value);
    if (isfinite(v->se)) snprintf(se, sizeof se, fmt, v->se);
    printf("  %-12s %12s  %10s  %7ld  %s\n", name, val, se, v->n, note ? note : "");
}

static void json_value(cJSON *arr, const char *name, const df_eval_value *v, const char *extra_key, double extra) {
    if (!v->have) return;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "metric", name);
    cJSON_AddNumberToObject(o, "value", v->value);
    if (isfinite(v->se)) cJSON_AddNumberToObject(o, "se", v->se);
    else cJSON_AddNullToObject(o, "se");
    cJSON_AddNumberToObject(o, "n", (double)v->n);
    if (extra_key) cJSON_AddNumberToObject(o, extra_key, extra);
    cJSON_AddNumberToObject(o, "seconds", v->seconds);
    cJSON_AddItemToArray(arr, o);
}

static cJSON *json_result(const df_eval_params *p, const df_eval_result *r, const char *what) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, p->model ? "model" : "images", what);
    cJSON_AddNumberToObject(j, "n", r->n);
    if (p->model) {
        cJSON *s = cJSON_AddObjectToObject(j, "sampler");
        cJSON_AddStringToObject(s, "name", df_sampler_name(r->sampler.kind));
        cJSON_AddNumberToObject(s, "steps", r->sampler.steps);
        cJSON_AddNumberToObject(s, "eta", r->sampler.eta);
        cJSON_AddStringToObject(s, "spacing", df_spacing_name(r->sampler.spacing));
        cJSON_AddBoolToObject(s, "karras", r->sampler.karras_sigmas);
        cJSON_AddBoolToObject(s, "clip_x0", r->sampler.clip_x0);
        cJSON_AddNumberToObject(s, "guidance", p->guidance);
        if (df_guidance_interval_limits(p->guidance_sigma_lo, p->guidance_sigma_hi)) {   /* JSON has no infinity: null */
            cJSON *gi = cJSON_AddArrayToObject(s, "guidance_interval");
            cJSON_AddItemToArray(gi, cJSON_CreateNumber(p->guidance_sigma_lo));
            cJSON_AddItemToArray(gi, p->guidance_sigma_hi < INFINITY ? cJSON_CreateNumber(p->guidance_sigma_hi) : cJSON_CreateNull());
        }
        cJSON_AddNumberToObject(s, "seed", (double)p->seed);
        cJSON_AddNumberToObject(s, "batch", p->batch);
    }
    if (r->feature_sha256[0]) {
        cJSON *f = cJSON_AddObjectToObject(j, "feature_network");
        cJSON_AddStringToObject(f, "path", r->feature_path);
        cJSON_AddStringToObject(f, "name", r->feature_net);
        cJSON_AddStringToObject(f, "sha256", r->feature_sha256);
        cJSON *rf = cJSON_AddObjectToObject(j, "reference");
        cJSON_AddStringToObject(rf, "data", r->ref_desc);
        cJSON_AddNumberToObject(rf, "n", (double)r->n_ref);
    }
    cJSON *m = cJSON_AddArrayToObject(j, "metrics");
    json_value(m, "fd", &r->fd, "bootstrap_resamples", p->bootstrap);
    json_value(m, "kid", &r->kid, "subset_std", r->kid.spread);
    if (r->kid.have) {
        cJSON *last = cJSON_GetArrayItem(m, cJSON_GetArraySize(m) - 1);
        cJSON_AddNumberToObject(last, "subsets", p->kid_subsets);
        cJSON_AddNumberToObject(last, "subset_size", r->kid_subset_size);
    }
    json_value(m, "precision", &r->precision, "k", p->pr_k);
    json_value(m, "recall", &r->recall, "k", p->pr_k);
    json_value(m, "acc", &r->acc, NULL, 0);
    if (r->acc.have) cJSON_AddStringToObject(cJSON_GetArrayItem(m, cJSON_GetArraySize(m) - 1), "classifier", r->classifier);
    json_value(m, "confident", &r->confident, "threshold", p->confidence);
    if (r->confident.have) {
        cJSON *last = cJSON_GetArrayItem(m, cJSON_GetArraySize(m) - 1), *mix = cJSON_AddArrayToObject(last, "class_share");
        cJSON_AddStringToObject(last, "classifier", r->classifier);
        for (int c = 0; c < r->nclasses; c++) cJSON_AddItemToArray(mix, cJSON_CreateNumber(r->class_share[c]));
    }
    json_value(m, "cas", &r->cas, "real_baseline", r->cas_real.value);
    if (r->cas.have) cJSON_AddNumberToObject(cJSON_GetArrayItem(m, cJSON_GetArraySize(m) - 1), "per_class", p->cas_per_class);
    json_value(m, "bpd", &r->bpd, "timesteps", r->bpd_timesteps);
    if (r->bpd.have) cJSON_AddStringToObject(cJSON_GetArrayItem(m, cJSON_GetArraySize(m) - 1), "data", r->bpd_data);
    cJSON *t = cJSON_AddObjectToObject(j, "seconds");
    cJSON_AddNumberToObject(t, "sampling", r->sample_seconds);
    cJSON_AddNumberToObject(t, "features", r->feature_seconds);
    cJSON_AddNumberToObject(t, "total", r->seconds);
    return j;
}

/* Each class's share of the images, by the classifier's names when it has them. */
static void print_class_mix(const df_eval_result *r) {
    df_class_info ci = {0};
    df_model *m = NULL;
    if (df_model_load(r->classifier, &m) || df_class_info_load(r->classifier, m, &ci)) ci.names = NULL;
    printf("  classes seen:");
    for (int j = 0; j < r->nclasses; j++) {
        char num[16];
        snprintf(num, sizeof num, "%d", j);
        printf("%s %s %.3f", j ? "," : "", ci.names && ci.names[j] ? ci.names[j] : num, r->class_share[j]);
    }
    printf("\n");
    df_class_info_free(&ci);
    df_model_free(m);
}

static void print_table(const df_eval_params *p, const df_eval_result *r, const char *what) {
    char s[96] = "";
    if (p->model) {
        sampler_text(&r->sampler, s, sizeof s);
        printf("%s: %d images (%s, seed %llu%s)\n", what, r->n, s, (unsigned long long)p->seed,
               p->guidance != 1 ? ", guided" : "");
        if (p->guidance != 1) printf("  classifier-free guidance %g\n", p->guidance);
        if (p->guidance != 1 && df_guidance_interval_limits(p->guidance_sigma_lo, p->guidance_sigma_hi))
            printf("  guided only at sigma in (%g, %g]\n", p->guidance_sigma_lo, p->guidance_sigma_hi);
    } else {
        printf("%s: %d images\n", what, r->n);
    }
    if (r->feature_sha256[0]) {
        printf("reference: %s (%ld feature vectors%s)\n", r->ref_desc, r->n_ref,
               r->ref_cached == 1 ? ", cached" : r->ref_cached == 2 ? ", computed and cached" : "");
        printf("features: %s, %s, sha256 %.16s...\n", r->feature_path, r->feature_net, r->feature_sha256);
    }
    printf("  %-12s %12s  %10s  %7s\n", "metric", "value", "std. error", "n");
    print_value("FD", &r->fd, "%.4f", p->bootstrap > 1 ? "bootstrap over the generated images" : NULL);
    char note[4400];
    snprintf(note, sizeof note, "subsets: mean, std %.2g (%d of %d)", r->kid.spread, p->kid_subsets, r->kid_subset_size);
    print_value("KID", &r->kid, "%.5f", note);
    snprintf(note, sizeof note, "k = %d", p->pr_k);
    print_value("precision", &r->precision, "%.4f", note);
    print_value("recall", &r->recall, "%.4f", note);
    snprintf(note, sizeof note, "classifier %s", r->classifier);
    print_value("acc", &r->acc, "%.4f", note);
    snprintf(note, sizeof note, "top probability >= %g, classifier %s", p->confidence, r->classifier);
    print_value("confident", &r->confident, "%.4f", note);
    if (r->confident.have) print_class_mix(r);
    snprintf(note, sizeof note, "real-data baseline %.4f (%d per class)", r->cas_real.value, p->cas_per_class);
    print_value("CAS", &r->cas, "%.4f", note);
    snprintf(note, sizeof note, "%d timesteps%s, %s", r->bpd_timesteps, p->bpd_timesteps > 0 ? " (strata)" : "", r->bpd_data);
    print_value("bits/dim", &r->bpd, "%.4f", note);
    printf("time: sampling %.1f s, features %.1f s, total %.1f s\n", r->sample_seconds, r->feature_seconds, r->seconds);
}

/* What one `diffuse eval` does: the library's parameters and what the command adds around them. */
typedef struct {
    df_eval_params p;
    const char    *what;   /* the positional argument: a model or images */
    const char    *sweep, *plot, *save_ref;
    int            json, is_model, default_features, metrics_given;
    cli_ints       labels;
    double         guidance_interval[2];
    char           feat_buf[PATH_MAX + 64];
} eval_args;

static const char *metric_name(int i) { return df_metric_name((df_metric)i); }
static const cli_choices metric_names = {DF_METRIC_COUNT, metric_name, NULL};   /* for --help */

static int parse_metrics(const char *text, void *mask) {
    return df_metrics_parse(text, mask) ? cli_usage_error("--metrics: %s", df_error()) : 0;
}

/* "fd,kid,pr" for a mask of metrics. */
static void metrics_text(unsigned mask, char *buf, size_t cap) {
    size_t n = 0;
    buf[0] = 0;
    for (int m = 0; m < DF_METRIC_COUNT && n < cap; m++)
        if (mask >> m & 1) n += (size_t)snprintf(buf + n, cap - n, "%s%s", n ? "," : "", df_metric_name((df_metric)m));
}

/* Options that act on sampling or go with another, checked once the argument's kind is known. */
static int check_options(const cli_args *a, const eval_args *e) {
    static const char *const only_model[] = {"--n",     "--batch",    "--seed",   "--raw",    "--sampler", "--steps",
                                             "--eta",   "--karras",   "--no-clip", "--spacing", "--guidance", "--labels", "--sweep",
                                             "--guidance-interval"};
    for (int i = 0; !e->is_model && i < CLI_COUNTOF(only_model); i++)
        if (cli_given(a, only_model[i]))
            return cli_usage_error("%s: %s is images, not a model: nothing is sampled", only_model[i], e->what);
    if (!e->sweep && cli_check_sampler_options(a, e->p.sampler.kind, e->p.sampler.karras_sigmas)) return 2;
    if (e->sweep && strcmp(e->sweep, "samplers") != 0) return cli_usage_error("--sweep: only \"samplers\" is known");
    if (e->plot && !e->sweep) return cli_usage_error("--plot goes with --sweep samplers");
    if (cli_check_guidance_interval(a, e->p.guidance)) return 2;
    if (e->plot && !cli_has_suffix(e->plot, ".png")) return cli_usage_error("--plot %s: name it .png", e->plot);
    if (e->p.save_images && !cli_has_suffix(e->p.save_images, ".npy"))
        return cli_usage_error("--save-images: name it .npy");
    if (cli_given(a, "--state") && !((e->p.metrics >> DF_METRIC_BPD) & 1))
        return cli_usage_error("--state keeps bits/dim: it goes with --metrics bpd");
    return 0;
}

/* The command line into e. Returns 0, CLI_HELP, or the exit code after reporting. */
static int parse(int argc, char **argv, eval_args *e) {
    df_eval_params *p = &e->p;
    int no_clip = 0;
    char metrics_def[256];
    metrics_text(p->metrics, metrics_def, 64);
    strcat(metrics_def, "; classes with a classifying feature network; and acc for class-conditional models and "
                        "labelled folders");
    const cli_opt opts[] = {
        OPT_STR("--ref", &p->ref, .meta = "DATA", .help = "reference images, or a reference-features file"),
        OPT_LONG("--ref-n", &p->ref_limit, .lo = 2, .hi = 1e8, .meta = "N", .def = "all",
                 .help = "use the first N reference images"),
        OPT_STR("--features", &p->features, .meta = "PATH", .def = "models/fmnist-features, for 28x28 gray images",
                .help = "feature network: a classifier directory, or an Inception-v3 .safetensors for RGB images (docs/inception.md)"),
        OPT_CALL("--metrics", &p->metrics, parse_metrics, .choices = &metric_names, .meta = "LIST",
                 .def = metrics_def,
                 .help = "comma-separated, any of"),
        OPT_FLAG("--json", &e->json, .help = "print one JSON object instead of the table"),
        OPT_SECTION("sampling (a model):"),
        OPT_INT("--n", &p->n, .lo = 2, .hi = 1000000, .meta = "N", .help = "images to generate and score; with --sweep, 500 unless given"),
        OPT_INT("--batch", &p->batch, .lo = 1, .hi = 4096, .meta = "N", .help = "images per network call"),
        OPT_U64("--seed", &p->seed, .meta = "S", .help = "noise seed"),
        OPT_FLAG("--raw", &p->raw, .help = "the trained, not averaged, weights"),
        OPT_ENUM("--sampler", &p->sampler.kind, &cli_samplers, .meta = "NAME", .help = "the sampler"),
        OPT_INT("--steps", &p->sampler.steps, .lo = 1, .hi = 100000, .meta = "N", .def = "50; ddpm: the training timesteps",
                .help = "denoising steps"),
        OPT_DOUBLE("--eta", &p->sampler.eta, .lo = 0, .hi = 1, .meta = "X", .help = "DDIM noise, 0 for deterministic steps"),
        OPT_ENUM("--spacing", &p->sampler.spacing, &cli_spacings, .meta = "NAME", .help = "timestep spacing"),
        OPT_FLAG("--karras", &p->sampler.karras_sigmas, .help = CLI_HELP_KARRAS),
        OPT_FLAG("--no-clip", &no_clip, .help = "do not clip predicted x_0 to [-1, 1]"),
        OPT_DOUBLE("--guidance", &p->guidance, .lo = 0, .hi = 100, .meta = "W",
                   .help = "classifier-free guidance scale for a class-conditional model"),
        OPT_CALL("--guidance-interval", e->guidance_interval, cli_parse_guidance_interval, .meta = "LO,HI",
                 .def = "every step", .help = CLI_HELP_GUIDANCE_INTERVAL),
        OPT_INTS("--labels", &e->labels, .lo = 0, .hi = INT_MAX, .meta = "L1,L2,...", .def = "every class, in equal numbers",
                 .help = "classes to draw"),
        OPT_STR("--save-images", &p->save_images, .meta = "F.npy", .help = "also write the scored images"),
        OPT_SECTION("metric settings:"),
        OPT_INT("--bootstrap", &p->bootstrap, .lo = 0, .hi = 100000, .meta = "B",
                .help = "FD resamples for its standard error, 0 for none"),
        OPT_INT("--kid-subsets", &p->kid_subsets, .lo = 1, .hi = 100000, .meta = "N", .help = "KID's subsets"),
        OPT_INT("--kid-subset-size", &p->kid_subset_size, .lo = 2, .hi = 1000000, .meta = "N", .help = "their size"),
        OPT_INT("--k", &p->pr_k, .lo = 1, .hi = 1000, .meta = "K", .help = "neighbours for precision and recall"),
        OPT_STR("--classifier", &p->classifier, .meta = "DIR", .def = "the feature network",
                .help = "acc and classes: a noise-free classifier"),
        OPT_DOUBLE("--confidence", &p->confidence, .lo = 1e-6, .hi = 1, .meta = "P",
                   .help = "classes: the top probability that counts an image as sure"),
        OPT_INT("--cas-per-class", &p->cas_per_class, .lo = 2, .hi = 100000, .meta = "N",
                .help = "CAS: generated images of each class to train on"),
        OPT_INT("--cas-epochs", &p->cas_epochs, .lo = 1, .hi = 10000, .meta = "N", .help = "CAS: training epochs"),
        OPT_STR("--cas-config", &p->cas_config, .meta = "FILE", .def = "the feature network's",
                .help = "CAS: the classifier's UNet2DModel config.json"),
        OPT_STR("--cas-train", &p->cas_train, .meta = "DATA", .help = "CAS: the real-data baseline's training images"),
        OPT_STR("--cas-test", &p->cas_test, .meta = "DATA", .def = "the reference", .help = "CAS: the test images"),
        OPT_INT("--bpd-n", &p->bpd_n, .lo = 1, .hi = 10000000, .meta = "N", .help = "test images for bits/dim"),
        OPT_INT("--bpd-timesteps", &p->bpd_timesteps, .lo = 1, .hi = 100000, .meta = "K", .def = "all T",
                .help = "estimate the bound from K strata of timesteps, K + 1 network calls an image; the standard "
                        "error includes this sampling"),
        OPT_STR("--bpd-data", &p->bpd_data, .meta = "DATA", .def = "the reference", .help = "images for bits/dim"),
        OPT_STR("--state", &p->bpd_state, .meta = "FILE",
                .help = "keep bits/dim done so far in FILE; the same command again goes on from there"),
        OPT_STR("--save-ref", &e->save_ref, .meta = "FILE", .help = "write the reference features (for --ref FILE later)"),
        OPT_SECTION("sweep:"),
        OPT_STR("--sweep", &e->sweep, .meta = "samplers",
                .help = "FD of DDIM, DPM-Solver++ 2M, Euler and Heun at 5, 10, 20, 50 steps: a table and a plot"),
        OPT_STR("--plot", &e->plot, .meta = "FILE.png", .def = "fd-sweep.png", .help = "the sweep's plot"),
        CLI_END,
    };
    cli_args a;
    int rc = cli_parse(&cmd_eval, opts, argc, argv, &a);
    if (rc) return rc;
    if (a.npos != 1) return cli_usage_error("what to score? give a model directory, a folder of images or a .npy");
    e->what = a.pos[0];
    struct stat sb;
    if (stat(e->what, &sb) != 0) return cli_die("%s: no such file or directory", e->what);
    e->is_model = S_ISDIR(sb.st_mode) && looks_like_model(e->what);
    if (e->is_model) p->model = e->what;
    else if (S_ISDIR(sb.st_mode) || cli_has_suffix(e->what, ".npy")) p->images = e->what;
    else return cli_usage_error("%s: give a model directory, a folder of images or a .npy", e->what);
    if ((rc = check_options(&a, e))) return rc;
    p->labels = e->labels.n ? e->labels.v : NULL, p->nlabels = e->labels.n;
    p->guidance_sigma_lo = e->guidance_interval[0], p->guidance_sigma_hi = e->guidance_interval[1];
    p->sampler.clip_x0 = !no_clip;
    e->metrics_given = cli_given(&a, "--metrics");
    if (e->sweep && !cli_given(&a, "--n")) p->n = 500;
    e->default_features = !p->features;
    if (!p->features) p->features = cli_default_features(e->feat_buf, sizeof e->feat_buf);
    /* outputs checked before any work */
    const char *outs[] = {p->save_images, e->save_ref, e->plot ? e->plot : e->sweep ? "fd-sweep.png" : NULL, p->bpd_state};
    const char *out_opts[] = {"--save-images", "--save-ref", "--plot", "--state"};
    for (int i = 0; i < 4; i++)
        if (outs[i] && cli_check_output(out_opts[i], outs[i], 0)) return 1;
    return 0;
}

/* Without --metrics: class accuracy too for a class-conditional model or a labelled folder. */
static void default_metrics(eval_args *e) {
    if (e->metrics_given || e->sweep) return;
    if (e->p.features && !cli_has_suffix(e->p.features, ".safetensors"))   /* a classifier, not Inception */
        e->p.metrics |= 1u << DF_METRIC_CLASSES;
    if (e->is_model) {
        df_model *m;
        if (!df_pipeline_load(e->what, 0, &m, NULL)) {
            if (df_model_config(m)->num_class_embeds > 0) e->p.metrics |= 1u << DF_METRIC_ACC;
            df_model_free(m);
        }
        return;
    }
    df_dataset *d = NULL;
    if (!cli_has_suffix(e->what, ".npy") && !df_dataset_open(e->what, 0, 0, &d) && df_dataset_num_classes(d) > 0)
        e->p.metrics |= 1u << DF_METRIC_ACC;
    df_dataset_free(d);
}

/* An evaluation's error: with the default feature network, a hint when the images do not suit it. */
static int failed(const eval_args *e, df_status st) {
    if (e->default_features && (st == DF_ERR_SHAPE || st == DF_ERR_IO))
        return cli_die("%s (the default feature network suits 28x28 gray images; give --features: an Inception-v3 "
                       ".safetensors for RGB data, see docs/inception.md, or a classifier from train-classifier)",
                       df_error());
    return cli_fail(st);
}

static void print_json(cJSON *j) {
    char *text = cJSON_Print(j);
    printf("%s\n", text);
    free(text);
    cJSON_Delete(j);
}

/* --sweep samplers: FD against steps for four samplers, as a table or JSON, and a plot. */
static int run_sweep(eval_args *e, eval_watch *watch) {
    df_eval_params *p = &e->p;
    p->metrics = 1u << DF_METRIC_FD;
    const df_sampler_kind kinds[] = {DF_SAMPLER_DDIM, DF_SAMPLER_DPMPP_2M, DF_SAMPLER_EULER, DF_SAMPLER_HEUN};
    const int nsteps[] = {5, 10, 20, 50};
    df_eval_result res[16];
    const char *png = e->plot ? e->plot : "fd-sweep.png";
    df_status st = df_eval_sweep(p, kinds, 4, nsteps, 4, res, png);
    if (watch->bar_shown) cli_progress_done(&watch->bar);
    if (st) return failed(e, st);
    if (e->json) {
        cJSON *j = cJSON_CreateObject(), *rows = cJSON_AddArrayToObject(j, "sweep");
        cJSON_AddStringToObject(j, "model", e->what);
        cJSON_AddNumberToObject(j, "n", p->n);
        cJSON_AddStringToObject(j, "feature_sha256", res[0].feature_sha256);
        for (int a = 0; a < 4; a++)
            for (int b = 0; b < 4; b++) {
                cJSON *o = cJSON_CreateObject();
                cJSON_AddStringToObject(o, "sampler", df_sampler_name(kinds[a]));
                cJSON_AddNumberToObject(o, "steps", nsteps[b]);
                cJSON_AddNumberToObject(o, "fd", res[a * 4 + b].fd.value);
                cJSON_AddNumberToObject(o, "se", res[a * 4 + b].fd.se);
                cJSON_AddNumberToObject(o, "seconds", res[a * 4 + b].seconds);
                cJSON_AddItemToArray(rows, o);
            }
        print_json(j);
        return 0;
    }
    printf("FD of %d images against %s (features %s, sha256 %.16s...); +- bootstrap standard error\n", p->n,
           res[0].ref_desc, res[0].feature_path, res[0].feature_sha256);
    printf("  %-10s", "sampler");
    for (int b = 0; b < 4; b++) printf("  %8d steps   ", nsteps[b]);
    printf("\n");
    for (int a = 0; a < 4; a++) {
        printf("  %-10s", df_sampler_name(kinds[a]));
        for (int b = 0; b < 4; b++) printf("  %7.3f +- %5.3f", res[a * 4 + b].fd.value, res[a * 4 + b].fd.se);
        printf("\n");
    }
    printf("plot: %s\n", png);
    return 0;
}

/* --save-ref FILE: the reference features, for --ref FILE later. */
static df_status save_reference(const df_eval_params *p, const char *path) {
    df_feature_net *f;
    df_dataset *d;
    df_ref_features ref;
    int cached;
    df_status st = df_feature_net_load(p->features, &f);
    if (st) return st;
    if ((st = df_dataset_open(p->ref, 0, 0, &d))) {
        df_feature_net_free(f);
        return st;
    }
    st = df_ref_features_get(f, d, p->ref_limit, &ref, &cached, NULL, NULL);
    if (!st) st = df_ref_features_save(&ref, path);
    df_ref_features_free(&ref);
    df_dataset_free(d);
    df_feature_net_free(f);
    if (!st) fprintf(stderr, "wrote %s\n", path);
    return st;
}

static int eval_main(int argc, char **argv) {
    eval_args e = {0};
    df_eval_params_default(&e.p);
    e.guidance_interval[0] = e.p.guidance_sigma_lo, e.guidance_interval[1] = e.p.guidance_sigma_hi;
    int rc = parse(argc, argv, &e);
    if (rc) return cli_exit(rc);
    default_metrics(&e);
    signal(SIGINT, on_stop);
    signal(SIGTERM, on_stop);
    eval_watch watch = {0};
    e.p.stop = &stop_requested;
    e.p.progress = show, e.p.progress_ctx = &watch;
    if (e.sweep) return run_sweep(&e, &watch);
    df_eval_result r;
    df_status st = df_evaluate(&e.p, &r);
    if (watch.bar_shown) cli_progress_done(&watch.bar);
    if (!st && e.save_ref) st = save_reference(&e.p, e.save_ref);
    if (st) return failed(&e, st);
    if (e.json) print_json(json_result(&e.p, &r, e.what));
    else print_table(&e.p, &r, e.what);
    return 0;
}
