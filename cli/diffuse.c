/* The `diffuse` command: a thin layer that parses arguments, calls libdiffuse and turns any error into
 * one line on stderr and a non-zero exit. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *prog = "diffuse";

int cli_die(const char *fmt, const char *arg) {
    fprintf(stderr, "%s: ", prog);
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    return 1;
}

int cli_fail(df_status st) {
    fprintf(stderr, "%s: %s\n", prog, df_error());
    return st ? 1 : 0;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: diffuse <command> [options]\n"
            "\n"
            "commands:\n"
            "  predict [--grads] MODEL_DIR IN.safetensors OUT.safetensors\n"
            "          run the noise predictor on x (N,C,H,W), t (N) and optional class_labels (N) from IN;\n"
            "          write eps. --grads also reads grad_out and writes grad_x and grad.<param> for every\n"
            "          parameter (gradients of sum(grad_out * eps)).\n"
            "  init    [--seed S] (--preset NAME | --config config.json) OUT_DIR\n"
            "          write a freshly initialised model directory (presets: fmnist-s, cifar10)\n"
            "  info    MODEL_DIR\n"
            "          show a model's config, parameter count and size\n"
            "  noise   [options] IMAGE OUT.png   (or: noise [options] --demo OUT.png)\n"
            "          the forward process on a picture: one PNG strip of x_t = sqrt(abar_t) x_0 +\n"
            "          sqrt(1 - abar_t) eps at each step, all with the same noise eps ~ N(0, I), clipped to\n"
            "          [-1, 1]. IMAGE is a PNG or JPEG; --demo draws a built-in landscape instead.\n"
            "          --steps LIST   comma-separated timesteps t: diffusers' indices 0..T-1, abar_t =\n"
            "                         alphas_cumprod[t] (what a scheduler's add_noise uses); 0 shows x_0\n"
            "                         itself. Default 0,50,100,200,400,600,800,999 (scaled to T)\n"
            "          --schedule S   linear (default), scaled_linear, squaredcos_cap_v2, sigmoid; betas\n"
            "                         1e-4..0.02 (diffusers' DDPMScheduler defaults)\n"
            "          --timesteps T  length of the chain (default 1000)\n"
            "          --size N       centre-crop and resize to N x N first (default: the image's own size,\n"
            "                         shrunk to 256 pixels on the longer side if larger)\n"
            "          --seed S       seed of the noise (default 0)   --gray  one channel\n"
            "          --no-labels    no \"t=...\" captions under the tiles\n"
            "\n"
            "global options: --threads N (default: all cores), -h/--help, --version\n");
}

/* Remove "--threads N" from argv (it applies to every command). */
static int take_threads(int *argc, char **argv) {
    for (int i = 1; i < *argc; i++) {
        if (strcmp(argv[i], "--threads") != 0) continue;
        if (i + 1 >= *argc) return cli_die("%s needs a number", "--threads");
        char *end;
        long n = strtol(argv[i + 1], &end, 10);
        if (*end || n < 1 || n > 1024) return cli_die("--threads: not a thread count: %s", argv[i + 1]);
        df_set_num_threads((int)n);
        for (int j = i; j + 2 <= *argc; j++) argv[j] = argv[j + 2];
        *argc -= 2;
        i--;
    }
    return 0;
}

int cli_int(const char *opt, const char *text, long lo, long hi, long *out) {
    char *end;
    long v = strtol(text, &end, 10);
    if (!*text || *end || v < lo || v > hi) {
        fprintf(stderr, "%s: %s: expected a whole number from %ld to %ld, got \"%s\"\n", prog, opt, lo, hi, text);
        return 1;
    }
    *out = v;
    return 0;
}

/* The commands: name, entry point. */
static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
} commands[] = {
    {"train", cmd_train},
    {"sample", cmd_sample},
    {"predict", cmd_predict},
    {"init", cmd_init},
    {"info", cmd_info},
    {"noise", cmd_noise},
};

int main(int argc, char **argv) {
    df_prefer_passive_threads(argv);
    if (take_threads(&argc, argv)) return 2;
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("diffuse %s\n", DIFFUSE_VERSION);
        return 0;
    }
    const char *cmd = argv[1];
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        }
    for (int i = 0; i < (int)(sizeof commands / sizeof commands[0]); i++)
        if (strcmp(cmd, commands[i].name) == 0) return commands[i].run(argc - 2, argv + 2);
    fprintf(stderr, "%s: unknown command '%s'\n", prog, cmd);
    usage(stderr);
    return 2;
}
