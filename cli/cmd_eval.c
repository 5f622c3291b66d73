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

const char cmd_eval_usage[] =
    "usage: diffuse eval MODEL_OR_IMAGES [--ref DATA] [--n N] [--metrics fd,kid,pr,cas,bpd,acc] [options]\n"
    "\n"
    "Score a model (it samples --n images) or images already generated (a folder of PNG/JPEG, a subfolder per\n"
    "class giving labels, or a .npy) against a reference set, with the field's metrics (docs/evaluation.md):\n"
    "  fd   Fréchet distance of the features (FID's formula), with a bootstrap standard error\n"
    "  kid  kernel distance (KID): mean and spread over subsets, and a standard error\n"
    "  pr   precision and recall (k-nearest-neighbour manifolds)\n"
    "  acc  how often a classifier sees the class asked for (class-conditional models, labelled folders)\n"
    "  cas  classification accuracy score: a classifier trained on generated images, tested on real ones,\n"
    "       beside the same classifier trained on as many real images\n"
    "  bpd  negative log-likelihood bound in bits/dim on real test images (model only)\n"
    "\n"
    "  --ref DATA            reference images (default fashion-mnist:test), or a reference-features file\n"
    "  --ref-n N             use the first N reference images (default: all)\n"
    "  --features PATH       feature network: a classifier directory (default models/fmnist-features, for\n"
    "                        28x28 gray images) or an Inception-v3 .safetensors (RGB; docs/inception.md)\n"
    "  --metrics LIST        any of fd,kid,pr,cas,bpd,acc (default fd,kid,pr; plus acc for conditional models)\n"
    "  --json                print one JSON object instead of the table\n"
    "sampling (a model):\n"
    "  --n N                 images to generate and score (1000; 500 with --sweep)\n"
    "  --batch N (100)  --seed S (0)  --raw (the trained, not averaged, weights)\n"
    "  --sampler NAME        ddim (default), ddpm, dpmpp-1s, dpmpp-2m, dpmpp-3m, euler, heun\n"
    "  --steps N (50)  --eta X  --karras  --no-clip\n"
    "  --guidance W          classifier-free guidance scale for a class-conditional model (1)\n"
    "  --labels L1,L2,...    classes to draw (default: every class, in equal numbers)\n"
    "  --save-images F.npy   also write the scored images\n"
    "metric settings:\n"
    "  --bootstrap B         FD resamples for its standard error (100; 0: none)\n"
    "  --kid-subsets N (100)  --kid-subset-size N (1000)   --k K   neighbours for pr (3)\n"
    "  --classifier DIR      acc: a noise-free classifier (default: the feature network)\n"
    "  --cas-per-class N (500)  --cas-epochs N (10)  --cas-config FILE  --cas-train DATA (fashion-mnist)\n"
    "  --cas-test DATA (the reference)\n"
    "  --bpd-n N (1000)      test images for bits/dim\n"
    "  --bpd-timesteps K     estimate the bound from K strata of timesteps (K + 1 network calls an image)\n"
    "                        instead of all T; the standard error includes this sampling\n"
    "  --bpd-data DATA       images for bits/dim (default: the reference)\n"
    "  --state FILE          keep bits/dim done so far in FILE; the same command again goes on from there\n"
    "  --save-ref FILE       write the reference features (for --ref FILE later)\n"
    "sweep:\n"
    "  --sweep samplers      FD of DDIM, DPM-Solver++ 2M, Euler and Heun at 5, 10, 20, 50 steps: a table and\n"
    "                        a plot (--plot FILE.png, default fd-sweep.png)\n";

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
    snprintf(out, cap, "%s %d steps", df_sampler_name(sp->kind), sp->steps);
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
        cJSON_AddBoolToObject(s, "karras", r->sampler.karras_sigmas);
        cJSON_AddBoolToObject(s, "clip_x0", r->sampler.clip_x0);
        cJSON_AddNumberToObject(s, "guidance", p->guidance);
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

static void print_table(const df_eval_params *p, const df_eval_result *r, const char *what) {
    char s[96] = "";
    if (p->model) {
        sampler_text(&r->sampler, s, sizeof s);
        printf("%s: %d images (%s, seed %llu%s)\n", what, r->n, s, (unsigned long long)p->seed,
               p->guidance != 1 ? ", guided" : "");
        if (p->guidance != 1) printf("  classifier-free guidance %g\n", p->guidance);
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
    snprintf(note, sizeof note, "real-data baseline %.4f (%d per class)", r->cas_real.value, p->cas_per_class);
    print_value("CAS", &r->cas, "%.4f", note);
    snprintf(note, sizeof note, "%d timesteps%s, %s", r->bpd_timesteps, p->bpd_timesteps > 0 ? " (strata)" : "", r->bpd_data);
    print_value("bits/dim", &r->bpd, "%.4f", note);
    printf("time: sampling %.1f s, features %.1f s, total %.1f s\n", r->sample_seconds, r->feature_seconds, r->seconds);
}

int cmd_eval(int argc, char **argv) {
    df_eval_params p;
    df_eval_params_default(&p);
    const char *metrics = NULL, *sampler = NULL, *labels_text = NULL, *sweep = NULL, *plot = NULL, *save_ref = NULL;
    int json = 0, karras = 0, no_clip = 0, steps = 0;
    double eta = 0;
    cli_opt opts[] = {
        {"--ref", OPT_STR, &p.ref, 0, 0},
        {"--ref-n", OPT_LONG, &p.ref_limit, 2, 1e8},
        {"--features", OPT_STR, &p.features, 0, 0},
        {"--metrics", OPT_STR, &metrics, 0, 0},
        {"--json", OPT_FLAG, &json, 0, 0},
        {"--n", OPT_INT, &p.n, 2, 1000000},
        {"--batch", OPT_INT, &p.batch, 1, 4096},
        {"--seed", OPT_U64, &p.seed, 0, 0},
        {"--raw", OPT_FLAG, &p.raw, 0, 0},
        {"--sampler", OPT_STR, &sampler, 0, 0},
        {"--steps", OPT_INT, &steps, 1, 100000},
        {"--eta", OPT_DOUBLE, &eta, 0, 1},
        {"--karras", OPT_FLAG, &karras, 0, 0},
        {"--no-clip", OPT_FLAG, &no_clip, 0, 0},
        {"--guidance", OPT_DOUBLE, &p.guidance, 0, 100},
        {"--labels", OPT_STR, &labels_text, 0, 0},
        {"--save-images", OPT_STR, &p.save_images, 0, 0},
        {"--bootstrap", OPT_INT, &p.bootstrap, 0, 100000},
        {"--kid-subsets", OPT_INT, &p.kid_subsets, 1, 100000},
        {"--kid-subset-size", OPT_INT, &p.kid_subset_size, 2, 1000000},
        {"--k", OPT_INT, &p.pr_k, 1, 1000},
        {"--classifier", OPT_STR, &p.classifier, 0, 0},
        {"--cas-per-class", OPT_INT, &p.cas_per_class, 2, 100000},
        {"--cas-epochs", OPT_INT, &p.cas_epochs, 1, 10000},
        {"--cas-config", OPT_STR, &p.cas_config, 0, 0},
        {"--cas-train", OPT_STR, &p.cas_train, 0, 0},
        {"--cas-test", OPT_STR, &p.cas_test, 0, 0},
        {"--bpd-n", OPT_INT, &p.bpd_n, 1, 10000000},
        {"--bpd-timesteps", OPT_INT, &p.bpd_timesteps, 1, 100000},
        {"--bpd-data", OPT_STR, &p.bpd_data, 0, 0},
        {"--state", OPT_STR, &p.bpd_state, 0, 0},
        {"--save-ref", OPT_STR, &save_ref, 0, 0},
        {"--sweep", OPT_STR, &sweep, 0, 0},
        {"--plot", OPT_STR, &plot, 0, 0},
        {NULL, OPT_FLAG, NULL, 0, 0},
    };
    const char *pos[1];
    int npos;
    int rc = cli_parse("eval", argc, argv, opts, pos, 1, &npos, cmd_eval_usage);
    if (rc) return rc;
    if (npos != 1) return cli_usage_error("what to score? give a model directory, a folder of images or a .npy");
    const char *what = pos[0];
#define GIVEN(name) cli_given(argc, argv, name)
    struct stat sb;
    if (stat(what, &sb) != 0) return cli_die("%s: no such file or directory", what);
    int is_model = S_ISDIR(sb.st_mode) && looks_like_model(what);
    if (is_model) p.model = what;
    else if (S_ISDIR(sb.st_mode) || cli_has_suffix(what, ".npy")) p.images = what;
    else return cli_usage_error("%s: give a model directory, a folder of images or a .npy", what);
    if (metrics && df_metrics_parse(metrics, &p.metrics)) return cli_usage_error("--metrics: %s", df_error());
    if (sampler && df_sampler_parse(sampler, &p.sampler.kind)) return cli_usage_error("--sampler: %s", df_error());
    if (!is_model) {   /* options that act on sampling have nothing to act on */
        const char *only_model[] = {"--n", "--batch", "--seed", "--raw", "--sampler", "--steps", "--eta", "--karras",
                                    "--no-clip", "--guidance", "--labels", "--sweep"};
        for (int i = 0; i < (int)(sizeof only_model / sizeof *only_model); i++)
            if (GIVEN(only_model[i])) return cli_usage_error("%s: %s is images, not a model: nothing is sampled", only_model[i], what);
    }
    if (GIVEN("--eta") && p.sampler.kind != DF_SAMPLER_DDIM) return cli_usage_error("--eta is DDIM's noise");
    if (sweep && strcmp(sweep, "samplers") != 0) return cli_usage_error("--sweep: only \"samplers\" is known");
    if (plot && !sweep) return cli_usage_error("--plot goes with --sweep samplers");
    if (plot && !cli_has_suffix(plot, ".png")) return cli_usage_error("--plot %s: name it .png", plot);
    if (p.save_images && !cli_has_suffix(p.save_images, ".npy")) return cli_usage_error("--save-images: name it .npy");
    if (GIVEN("--state") && !((p.metrics >> DF_METRIC_BPD) & 1)) return cli_usage_error("--state keeps bits/dim: it goes with --metrics bpd");
    if (p.kid_subset_size < 2) return cli_usage_error("--kid-subset-size must be at least 2");
    int lab[1024], nlab = 0;
    if (labels_text && cli_parse_list("eval", "--labels", labels_text, 0, INT_MAX, lab, 1024, &nlab)) return 2;
    p.labels = nlab ? lab : NULL, p.nlabels = nlab;
    p.sampler.steps = steps, p.sampler.eta = eta, p.sampler.karras_sigmas = karras, p.sampler.clip_x0 = !no_clip;
    char feat_buf[PATH_MAX + 64];
    const int default_feats = !p.features;
    if (!p.features) p.features = cli_default_features(feat_buf, sizeof feat_buf);
    /* outputs checked before any work */
    const char *outs[] = {p.save_images, save_ref, plot ? plot : sweep ? "fd-sweep.png" : NULL, p.bpd_state};
    const char *out_opts[] = {"--save-images", "--save-ref", "--plot", "--state"};
    for (int i = 0; i < 4; i++)
        if (outs[i] && cli_check_output(out_opts[i], outs[i], 0)) return 1;
    if (!is_model || sweep) {
    } else if (!metrics) {   /* conditional models: class accuracy by default too */
        df_model *m;
        if (!df_pipeline_load(what, 0, &m, NULL)) {
            if (df_model_config(m)->num_class_embeds > 0) p.metrics |= 1u << DF_METRIC_ACC;
            df_model_free(m);
        }
    }
    if (!metrics && !is_model) {
        df_dataset *d = NULL;   /* a labelled folder: class accuracy too */
        if (!cli_has_suffix(what, ".npy") && !df_dataset_open(what, 0, 0, &d) && df_dataset_num_classes(d) > 0)
            p.metrics |= 1u << DF_METRIC_ACC;
        df_dataset_free(d);
    }
#undef GIVEN
    signal(SIGINT, on_stop);
    signal(SIGTERM, on_stop);
    p.stop = &stop_requested;
    eval_watch watch = {0};
    p.progress = show, p.progress_ctx = &watch;
    df_status st;
    if (sweep) {
        if (!cli_given(argc, argv, "--n")) p.n = 500;
        p.metrics = 1u << DF_METRIC_FD;
        const df_sampler_kind kinds[] = {DF_SAMPLER_DDIM, DF_SAMPLER_DPMPP_2M, DF_SAMPLER_EULER, DF_SAMPLER_HEUN};
        const int nsteps[] = {5, 10, 20, 50};
        df_eval_result res[16];
        const char *png = plot ? plot : "fd-sweep.png";
        st = df_eval_sweep(&p, kinds, 4, nsteps, 4, res, png);
        if (watch.bar_shown) cli_progress_done(&watch.bar);
        if (st) goto fail;
        if (json) {
            cJSON *j = cJSON_CreateObject(), *rows = cJSON_AddArrayToObject(j, "sweep");
            cJSON_AddStringToObject(j, "model", what);
            cJSON_AddNumberToObject(j, "n", p.n);
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
            char *text = cJSON_Print(j);
            printf("%s\n", text);
            free(text);
            cJSON_Delete(j);
        } else {
            printf("FD of %d images against %s (features %s, sha256 %.16s...); +- bootstrap standard error\n", p.n,
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
        }
        return 0;
    }
    df_eval_result r;
    st = df_evaluate(&p, &r);
    if (watch.bar_shown) cli_progress_done(&watch.bar);
    if (st) goto fail;
    if (save_ref) {
        df_feature_net *f;
        df_dataset *d;
        df_ref_features ref;
        int cached;
        if ((st = df_feature_net_load(p.features, &f))) goto fail;
        if ((st = df_dataset_open(p.ref, 0, 0, &d))) {
            df_feature_net_free(f);
            goto fail;
        }
        st = df_ref_features_get(f, d, p.ref_limit, &ref, &cached, NULL, NULL);
        if (!st) st = df_ref_features_save(&ref, save_ref);
        df_ref_features_free(&ref);
        df_dataset_free(d);
        df_feature_net_free(f);
        if (st) goto fail;
        fprintf(stderr, "wrote %s\n", save_ref);
    }
    if (json) {
        cJSON *j = json_result(&p, &r, what);
        char *text = cJSON_Print(j);
        printf("%s\n", text);
        free(text);
        cJSON_Delete(j);
    } else {
        print_table(&p, &r, what);
    }
    return 0;
fail:
    if (default_feats && (st == DF_ERR_SHAPE || st == DF_ERR_IO))
        return cli_die("%s (the default feature network suits 28x28 gray images; give --features: an Inception-v3 "
                       ".safetensors for RGB data, see docs/inception.md, or a classifier from train-classifier)",
                       df_error());
    return cli_fail(st);
}
