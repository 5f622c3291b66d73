/* The model commands: predict (noise prediction and gradients from safetensors files), init (a fresh
 * model directory) and info (what a model directory holds). */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"


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
    .usage = "usage: diffuse info MODEL",
    .summary = "what a model, checkpoint or run holds",
    .about = "Show what a model, checkpoint or run directory holds: config, parameter count, compute per image.",
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
                .help = "fmnist-s (28x28 gray, 3.9 M parameters) or cifar10 (google/ddpm-cifar10-32's layout)"),
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

/* Print the training facts of a checkpoint's training_state.json, if `dir` (or dir/latest) has one. */
static void print_training_state(const char *dir) {
    df_training_summary t;
    if (df_training_summary_load(dir, &t) || !t.found) return;
    if (t.step >= 0) printf("trained      %ld steps", t.step);
    if (t.batch >= 0) printf(" of batch %d", t.batch);
    if (t.images >= 0) printf(", %ld images", t.images);
    if (t.epoch >= 0) printf(" (epoch %d)", t.epoch);
    if (t.loss_avg == t.loss_avg) printf(", loss %.4f", t.loss_avg);
    if (t.step >= 0) printf("\n");
    if (t.data[0]) printf("data         %s\n", t.data);
}

static int info_main(int argc, char **argv) {
    const cli_opt opts[] = {CLI_END};
    cli_args a;
    int rc = cli_parse(&cmd_info, opts, argc, argv, &a);
    if (rc) return cli_exit(rc);
    if (a.npos != 1) return cli_usage_error("which model? give a model, checkpoint or run directory");
    const char *path = a.pos[0];
    if (cli_check_input("", path, 1)) return 1;
    df_model *m;
    df_scheduler_config sc;
    df_status st = df_pipeline_load(path, 0, &m, &sc);
    if (st) return cli_fail(st);
    const df_unet_config *c = df_model_config(m);
    printf("model        %s (%s)\n", path,
           c->classifier_classes ? "a classifier: a UNet2DModel's encoder half" : "diffusers UNet2DModel");
    printf("sample size  %d x %d, %d -> %d channels\n", c->sample_size, c->sample_size, c->in_channels,
           c->out_channels);
    printf("levels       ");
    for (int i = 0; i < c->num_levels; i++)
        printf("%s%d%s", i ? ", " : "", c->block_out_channels[i], c->down_attn[i] ? " (attn)" : "");
    printf("\nlayers       %d per block, groups %d, eps %g, head dim %d%s\n", c->layers_per_block,
           c->norm_num_groups, c->norm_eps, c->attention_head_dim, c->attention_head_dim ? "" : " (one head)");
    if (c->num_class_embeds || c->classifier_classes) {
        df_class_info ci;
        if ((st = df_class_info_load(path, m, &ci))) {
            df_model_free(m);
            return cli_fail(st);
        }
        if (c->classifier_classes)
            printf("classifier   %d classes (logits from the encoder half; %s)", c->classifier_classes,
                   c->classifier_noise_aware ? "trained on noised images: for --classifier"
                                             : "trained on clean images: for --score");
        else printf("classes      %d (class-conditional%s)", c->num_class_embeds,
                    ci.null_class >= 0 ? ", with a null class: classifier-free guidance works" : "");
        for (int i = 0; ci.names && i < ci.count; i++) printf("%s%d %s", i ? ", " : ": ", i, ci.names[i]);
        printf("\n");
        df_class_info_free(&ci);
    }
    printf("parameters   %zu in %d tensors (%.1f MB as float32)\n", df_model_num_params(m),
           df_model_num_tensors(m), df_model_num_params(m) * 4.0 / 1e6);
    printf("compute      %.3f GFLOP per forward pass of one image\n", df_model_flops(m, 0, 0) / 1e9);
    printf("schedule     %s, T = %d, betas %g..%g%s, predicts %s\n", df_beta_kind_name(sc.beta_schedule),
           sc.num_train_timesteps, sc.beta_start, sc.beta_end, sc.zero_terminal_snr ? ", zero terminal SNR" : "",
           df_prediction_name(sc.prediction));
    print_training_state(path);
    df_model_free(m);
    return 0;
}
