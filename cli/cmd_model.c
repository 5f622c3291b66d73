/* The model commands: predict (noise prediction and gradients from safetensors files), init (a fresh
 * model directory) and info (what a model directory holds). */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"


#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int predict_main(int argc, char **argv);
static int init_main(int argc, char **argv);
static int info_main(int argc, char **argv);

const cli_command cmd_predict = {
    .name = "predict",
    .usage = "usage: diffuse predict [--grads] MODEL_DIR IN.safetensors OUT.safetensors",
    .summary = "run the noise predictor on tensors from a safetensors file",
    .about = "Run the noise predictor on the tensors x (N, C, H, W), t (N) and optionally class_labels (N) read from\n"
             "IN, and write eps to OUT. With --grads, also read grad_out (shaped like eps) and write grad_x and\n"
             "grad.<name> for every parameter: the gradients of sum(grad_out * eps). MODEL_DIR holds config.json and\n"
             "diffusion_pytorch_model.safetensors (or model.safetensors).",
    .max_args = 3,
    .run = predict_main,
};
const cli_command cmd_init = {
    .name = "init",
    .usage = "usage: diffuse init [--seed S] (--preset NAME | --config config.json) OUT_DIR",
    .summary = "write a freshly initialised model",
    .about = "Write a freshly initialised model directory (PyTorch's default initialisation, drawn from the seed).",
    .max_args = 1,
    .run = init_main,
};
const cli_command cmd_info = {
    .name = "info",
    .usage = "usage: diffuse info [--quiet | --json] MODEL",
    .summary = "what a model, checkpoint or run holds",
    .about = "Show what a model, checkpoint or run directory holds: config, classes, parameter count, compute per\n"
             "image, schedule and training.",
    .max_args = 1,
    .run = info_main,
};

/* 1 if `out` would overwrite the input or one of the model's own files. */
static int overwrites_input(const char *out, const char *model_dir, const char *in) {
    if (cli_same_file(out, in)) return 1;
    static const char *const own[] = {"config.json", "diffusion_pytorch_model.safetensors", "model.safetensors"};
    char p[4200];
    for (int i = 0; i < CLI_COUNTOF(own); i++) {
        snprintf(p, sizeof p, "%s/%s", model_dir, own[i]);
        if (cli_same_file(out, p)) return 1;
    }
    return 0;
}

/* predict MODEL_DIR IN OUT: the noise prediction (and with grads its gradients). Returns 0 or 1. */
static int predict(const char *model_dir, const char *in_path, const char *out_path, int grads) {
    df_model *m = NULL;
    df_status st = df_model_load(model_dir, &m);
    if (!st) st = df_model_predict_file(m, in_path, out_path, grads);
    df_model_free(m);
    return st ? cli_fail(st) : 0;
}

static int predict_main(int argc, char **argv) {
    int grads = 0;
    const cli_opt opts[] = {
        OPT_FLAG("--grads", &grads, .help = "also the gradients of sum(grad_out * eps) for x and every parameter"),
        CLI_END,
    };
    cli_args a;
    int rc = cli_parse(&cmd_predict, opts, argc, argv, &a);
    if (rc) return cli_exit(rc);
    static const char *const wanted[] = {"MODEL_DIR", "IN.safetensors", "OUT.safetensors"};
    if (a.npos != 3) return cli_usage_error("missing %s", wanted[a.npos]);
    const char *model_dir = a.pos[0], *in = a.pos[1], *out = a.pos[2];
    if (overwrites_input(out, model_dir, in))
        return cli_usage_error("OUT %s would overwrite an input; write the result elsewhere", out);
    if (cli_check_input("MODEL_DIR", model_dir, 1) || cli_check_input("IN", in, 0) || cli_check_output("OUT", out, 0))
        return 1;
    return predict(model_dir, in, out, grads);
}

/* Remove what df_model_save may have written into dir, and dir itself, after a failure. */
static void remove_model_dir(const char *dir) {
    static const char *const files[] = {"config.json", "diffusion_pytorch_model.safetensors"};
    char p[4200];
    for (int i = 0; i < CLI_COUNTOF(files); i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        remove(p);
    }
    rmdir(dir);
}

/* 1 if dir is missing or holds nothing but . and .. */
static int dir_is_empty(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 1;
    struct dirent *e;
    int empty = 1;
    while (empty && (e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) empty = 0;
    closedir(d);
    return empty;
}

static int init_main(int argc, char **argv) {
    const char *preset = NULL, *config = NULL;
    uint64_t seed = 0;
    const cli_opt opts[] = {
        OPT_STR("--preset", &preset, .meta = "NAME",
                .help = DF_PRESETS),
        OPT_STR("--config", &config, .meta = "FILE", .help = "or a diffusers UNet2DModel config.json"),
        OPT_U64("--seed", &seed, .meta = "S", .help = "seed of the initial weights"),
        CLI_END,
    };
    cli_args a;
    int rc = cli_parse(&cmd_init, opts, argc, argv, &a);
    if (rc) return cli_exit(rc);
    if (preset && config) return cli_usage_error("--preset and --config both choose the model: give one");
    if (!preset && !config) return cli_usage_error("which model? give --preset NAME or --config config.json");
    if (a.npos != 1) return cli_usage_error("missing OUT_DIR");
    const char *dir = a.pos[0];
    df_unet_config cfg;
    if (preset && df_unet_config_preset(preset, &cfg)) return cli_usage_error("--preset: %s", df_error());
    char own[4200];
    snprintf(own, sizeof own, "%s/config.json", dir);
    if (config && cli_same_file(config, own))
        return cli_usage_error("--config %s is OUT_DIR's own config.json; write the model elsewhere", config);
    if ((config && cli_check_input("--config", config, 0)) || cli_check_output("OUT_DIR", dir, 1)) return 1;
    if (!dir_is_empty(dir))   /* as train refuses a used directory: nothing of the user's is written over */
        return cli_die("OUT_DIR %s exists and is not empty: give a new directory", dir);
    df_status st = config ? df_unet_config_load(config, &cfg) : DF_OK;
    if (st) return cli_fail(st);
    struct stat sb;
    int existed = stat(dir, &sb) == 0;
    df_model *m;
    if ((st = df_model_create(&cfg, seed, &m))) return cli_fail(st);
    st = df_model_save(m, dir);
    if (!st) printf("wrote %s (%zu parameters)\n", dir, df_model_num_params(m));
    df_model_free(m);
    if (st && !existed) remove_model_dir(dir);   /* no half-written model directory */
    return st ? cli_fail(st) : 0;
}

/* What `diffuse info` says about a model, loaded once and printed in one of three forms. */
typedef struct {
    const char         *path;
    df_model           *m;
    df_scheduler_config sc;
    df_class_info       ci;   /* zeroed for an unconditional model */
    df_training_summary t;
} model_facts;

static void facts_free(model_facts *f) {
    df_model_free(f->m);
    df_class_info_free(&f->ci);
}

static df_status facts_load(const char *path, model_facts *f) {
    memset(f, 0, sizeof *f);
    f->path = path;
    df_status st = df_pipeline_load(path, 0, &f->m, &f->sc);
    const df_unet_config *c = st ? NULL : df_model_config(f->m);
    if (!st && (c->num_class_embeds || c->classifier_classes)) st = df_class_info_load(path, f->m, &f->ci);
    if (!st) (void)df_training_summary_load(path, &f->t);   /* unreadable training facts are left out */
    return st;
}

/* The full form: a fact a line. */
static void print_facts(const model_facts *f) {
    const df_unet_config *c = df_model_config(f->m);
    const df_scheduler_config *sc = &f->sc;
    const df_class_info *ci = &f->ci;
    printf("model        %s (%s)\n", f->path,
           c->classifier_classes ? "a classifier: a UNet2DModel's encoder half"
           : c->condition        ? "diffusers UNet2DConditionModel: text-to-image"
                                 : "diffusers UNet2DModel");
    printf("sample size  %d x %d, %d -> %d channels\n", c->sample_size, c->sample_size, c->in_channels,
           c->out_channels);
    printf("levels       ");
    for (int i = 0; i < c->num_levels; i++)
        printf("%s%d%s", i ? ", " : "", c->block_out_channels[i], c->down_attn[i] ? " (attn)" : "");
    if (c->condition) {
        printf("\nlayers       %d per block, groups %d, eps %g; attention heads", c->layers_per_block, c->norm_num_groups,
               c->norm_eps);
        for (int i = 0; i < c->num_levels; i++) printf("%s%d", i ? ", " : " ", c->attention_heads[i]);
        printf(", transformer layers");
        for (int i = 0; i < c->num_levels; i++) printf("%s%d", i ? ", " : " ", c->transformer_layers[i]);
        printf("\ntext         cross-attention to %d-wide text states%s\n", c->cross_attention_dim,
               c->use_linear_projection ? "; linear projections" : "");
    } else {
        printf("\nlayers       %d per block, groups %d, eps %g, head dim %d%s\n", c->layers_per_block,
               c->norm_num_groups, c->norm_eps, c->attention_head_dim, c->attention_head_dim ? "" : " (one head)");
    }
    if (c->num_class_embeds || c->classifier_classes) {
        if (c->classifier_classes)
            printf("classifier   %d classes (logits from the encoder half; %s)", c->classifier_classes,
                   c->classifier_noise_aware ? "trained on noised images: for --classifier"
                                             : "trained on clean images: for --score");
        else printf("classes      %d (class-conditional%s)", c->num_class_embeds,
                    ci->null_class >= 0 ? ", with a null class: classifier-free guidance works" : "");
        for (int i = 0; ci->names && i < ci->count; i++) printf("%s%d %s", i ? ", " : ": ", i, ci->names[i]);
        printf("\n");
    }
    printf("parameters   %zu in %d tensors (%.1f MB as float32)\n", df_model_num_params(f->m),
           df_model_num_tensors(f->m), df_model_num_params(f->m) * 4.0 / 1e6);
    printf("compute      %.3f GFLOP per forward pass of one image\n", df_model_flops(f->m, 0, 0) / 1e9);
    printf("schedule     %s, T = %d, betas %g..%g%s, predicts %s\n", df_beta_kind_name(sc->beta_schedule),
           sc->num_train_timesteps, sc->beta_start, sc->beta_end, sc->zero_terminal_snr ? ", zero terminal SNR" : "",
           sc->edm_sigma_data > 0 ? "x_0 through EDM preconditioning" : df_prediction_name(sc->prediction));
    if (sc->edm_sigma_data > 0)
        printf("edm          trained with EDM preconditioning (Karras et al. 2022), sigma_data %g\n", sc->edm_sigma_data);
    if (sc->learned_variance)
        printf("variance     learned (learned_range, improved DDPM): DDPM sampling and bits/dim use it\n");
    const df_training_summary *t = &f->t;
    if (t->step >= 0) printf("trained      %ld steps", t->step);
    if (t->batch >= 0) printf(" of batch %d", t->batch);
    if (t->images >= 0) printf(", %ld images", t->images);
    if (t->epoch >= 0) printf(" (epoch %d)", t->epoch);
    if (t->loss_avg == t->loss_avg) printf(", loss %.4f", t->loss_avg);
    if (t->step >= 0) printf("\n");
    if (t->data[0]) printf("data         %s\n", t->data);
}

/* --quiet: "PATH: KIND, WxHxC, N parameters, CLASSES[, trained N steps]". */
static void print_line(const model_facts *f) {
    const df_unet_config *c = df_model_config(f->m);
    printf("%s: %s, %dx%dx%d, %zu parameters, ", f->path, c->classifier_classes ? "classifier" : "diffusion",
           c->sample_size, c->sample_size, c->in_channels, df_model_num_params(f->m));
    if (c->classifier_classes)
        printf("%d classes (%s)", c->classifier_classes, c->classifier_noise_aware ? "noise-aware" : "clean images");
    else if (c->num_class_embeds)
        printf("%d classes%s", c->num_class_embeds, f->ci.null_class >= 0 ? " with a null class" : "");
    else printf("unconditional");
    if (f->t.step >= 0) printf(", trained %ld steps", f->t.step);
    printf("\n");
}

/* --json: the full form's facts as an object (NULL when out of memory). What is unknown is null. */
static cJSON *facts_json(const model_facts *f) {
    const df_unet_config *c = df_model_config(f->m);
    cJSON *j = cJSON_CreateObject(), *cfg = cJSON_AddObjectToObject(j, "config");
    cJSON_AddStringToObject(j, "path", f->path);
    cJSON_AddStringToObject(j, "kind", c->classifier_classes ? "classifier" : c->condition ? "text-to-image" : "diffusion");
    if (c->sample_size > 0) cJSON_AddNumberToObject(cfg, "sample_size", c->sample_size);
    else cJSON_AddNullToObject(cfg, "sample_size");
    cJSON_AddNumberToObject(cfg, "in_channels", c->in_channels);
    cJSON_AddNumberToObject(cfg, "out_channels", c->out_channels);
    cJSON *levels = cJSON_AddArrayToObject(cfg, "block_out_channels"), *attn = cJSON_AddArrayToObject(cfg, "attention");
    for (int i = 0; i < c->num_levels; i++) {
        cJSON_AddItemToArray(levels, cJSON_CreateNumber(c->block_out_channels[i]));
        cJSON_AddItemToArray(attn, cJSON_CreateBool(c->down_attn[i]));
    }
    cJSON_AddNumberToObject(cfg, "layers_per_block", c->layers_per_block);
    cJSON_AddNumberToObject(cfg, "norm_num_groups", c->norm_num_groups);
    char eps[32];   /* the float as config.json has it (1e-05), not its double expansion */
    snprintf(eps, sizeof eps, "%.7g", c->norm_eps);
    cJSON_AddNumberToObject(cfg, "norm_eps", strtod(eps, NULL));
    if (c->condition) {   /* the condition model reads attention_head_dim as heads per block */
        cJSON *heads = cJSON_AddArrayToObject(cfg, "attention_heads"), *tl = cJSON_AddArrayToObject(cfg, "transformer_layers");
        for (int i = 0; i < c->num_levels; i++) {
            cJSON_AddItemToArray(heads, cJSON_CreateNumber(c->attention_heads[i]));
            cJSON_AddItemToArray(tl, cJSON_CreateNumber(c->transformer_layers[i]));
        }
        cJSON_AddNumberToObject(cfg, "cross_attention_dim", c->cross_attention_dim);
        cJSON_AddBoolToObject(cfg, "use_linear_projection", c->use_linear_projection);
    } else if (c->attention_head_dim) {
        cJSON_AddNumberToObject(cfg, "attention_head_dim", c->attention_head_dim);
    } else {
        cJSON_AddNullToObject(cfg, "attention_head_dim");
    }
    /* classes: the model's (or the classifier's), the null class, the names */
    cJSON_AddNumberToObject(j, "classes", c->classifier_classes ? c->classifier_classes : c->num_class_embeds);
    if (f->ci.null_class >= 0 && !c->classifier_classes) cJSON_AddNumberToObject(j, "null_class", f->ci.null_class);
    else cJSON_AddNullToObject(j, "null_class");
    cJSON *names = f->ci.names ? cJSON_AddArrayToObject(j, "class_names") : cJSON_AddNullToObject(j, "class_names");
    for (int i = 0; f->ci.names && i < f->ci.count; i++) cJSON_AddItemToArray(names, cJSON_CreateString(f->ci.names[i]));
    if (c->classifier_classes) cJSON_AddBoolToObject(j, "noise_aware", c->classifier_noise_aware);
    cJSON_AddNumberToObject(j, "parameters", (double)df_model_num_params(f->m));
    cJSON_AddNumberToObject(j, "tensors", df_model_num_tensors(f->m));
    cJSON_AddNumberToObject(j, "bytes", 4.0 * (double)df_model_num_params(f->m));
    cJSON_AddNumberToObject(j, "gflops", df_model_flops(f->m, 0, 0) / 1e9);
    cJSON *sched = cJSON_AddObjectToObject(j, "schedule");
    cJSON_AddStringToObject(sched, "beta_schedule", df_beta_kind_name(f->sc.beta_schedule));
    cJSON_AddNumberToObject(sched, "num_train_timesteps", f->sc.num_train_timesteps);
    cJSON_AddNumberToObject(sched, "beta_start", f->sc.beta_start);
    cJSON_AddNumberToObject(sched, "beta_end", f->sc.beta_end);
    cJSON_AddBoolToObject(sched, "zero_terminal_snr", f->sc.zero_terminal_snr);
    cJSON_AddStringToObject(sched, "prediction_type", df_prediction_name(f->sc.prediction));
    if (f->sc.edm_sigma_data > 0) cJSON_AddNumberToObject(sched, "edm_sigma_data", f->sc.edm_sigma_data);
    else cJSON_AddNullToObject(sched, "edm_sigma_data");
    cJSON_AddStringToObject(sched, "variance_type", f->sc.learned_variance ? "learned_range" : "fixed_small");
    if (!f->t.found) {
        cJSON_AddNullToObject(j, "training");
        return j;
    }
    const df_training_summary *t = &f->t;
    cJSON *tr = cJSON_AddObjectToObject(j, "training");
    const struct {
        const char *key;
        double      v;
    } nums[] = {{"step", (double)t->step}, {"batch", t->batch}, {"images", (double)t->images}, {"epoch", t->epoch}};
    for (int i = 0; i < CLI_COUNTOF(nums); i++)
        if (nums[i].v >= 0) cJSON_AddNumberToObject(tr, nums[i].key, nums[i].v);
        else cJSON_AddNullToObject(tr, nums[i].key);
    if (t->loss_avg == t->loss_avg) cJSON_AddNumberToObject(tr, "loss", t->loss_avg);
    else cJSON_AddNullToObject(tr, "loss");
    if (t->data[0]) cJSON_AddStringToObject(tr, "data", t->data);
    else cJSON_AddNullToObject(tr, "data");
    return j;
}

static int info_main(int argc, char **argv) {
    int quiet = 0, json = 0;
    const cli_opt opts[] = {
        OPT_FLAG("--quiet", &quiet, .alias = "-q", .help = "one line: kind, size, parameters, classes"),
        OPT_FLAG("--json", &json, .help = "the same facts as a JSON object"),
        CLI_END,
    };
    cli_args a;
    int rc = cli_parse(&cmd_info, opts, argc, argv, &a);
    if (rc) return cli_exit(rc);
    if (a.npos != 1) return cli_usage_error("which model? give a model, checkpoint or run directory");
    if (quiet && json) return cli_usage_error("--quiet and --json are two forms of the output: give one");
    const char *path = a.pos[0];
    if (cli_check_input("", path, 1)) return 1;
    model_facts f;
    df_status st = facts_load(path, &f);
    cJSON *j = NULL;
    char *text = NULL;
    if (!st && json && (j = facts_json(&f)) && (text = cJSON_Print(j))) printf("%s\n", text);
    else if (!st && quiet) print_line(&f);
    else if (!st && !json) print_facts(&f);
    free(text);
    cJSON_Delete(j);
    facts_free(&f);
    if (st) return cli_fail(st);
    return json && !text ? cli_die("out of memory for the JSON") : 0;
}
