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

/* The commands: name, entry point, --help text, one line for the overview. */
static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *usage, *summary;
} commands[] = {
    {"train", cmd_train, cmd_train_usage, "train a model (default: fmnist-s on Fashion-MNIST)"},
    {"sample", cmd_sample, cmd_sample_usage, "generate images; image-to-image, inpainting, animations"},
    {"noise", cmd_noise, cmd_noise_usage, "show the forward process on a picture"},
    {"info", cmd_info, cmd_info_usage, "what a model, checkpoint or run holds"},
    {"init", cmd_init, cmd_init_usage, "write a freshly initialised model"},
    {"predict", cmd_predict, cmd_predict_usage, "run the noise predictor on tensors from a safetensors file"},
};
enum { NCOMMANDS = sizeof commands / sizeof commands[0] };

static void usage(FILE *f) {
    fprintf(f, "usage: diffuse <command> [options]     (diffuse <command> --help for its options)\n\ncommands:\n");
    for (int i = 0; i < NCOMMANDS; i++) fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nglobal options: --threads N (default: all cores), -h/--help, --version\n"
               "example: diffuse train --minutes 20 && diffuse sample runs/fmnist-s --out samples.png\n");
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
    for (int i = 0; i < NCOMMANDS; i++) {
        if (strcmp(cmd, commands[i].name) != 0) continue;
        for (int j = 2; j < argc; j++)
            if (strcmp(argv[j], "-h") == 0 || strcmp(argv[j], "--help") == 0) {
                fputs(commands[i].usage, stdout);
                return 0;
            }
        return commands[i].run(argc - 2, argv + 2);
    }
    fprintf(stderr, "%s: unknown command '%s'\n", prog, cmd);
    usage(stderr);
    return 2;
}
