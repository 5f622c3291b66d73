/* The `diffuse` command: a thin layer that parses arguments, calls libdiffuse and turns any error into
 * one line on stderr and a non-zero exit. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "restart.h"

#include <stdio.h>
#include <string.h>

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
    {"eval", cmd_eval, cmd_eval_usage, "score a model or images: FD, KID, precision/recall, CAS, bits/dim"},
    {"train-classifier", cmd_train_classifier, cmd_train_classifier_usage,
     "train a classifier (noise-aware, for guidance, or noise-free, to score samples)"},
};
enum { NCOMMANDS = sizeof commands / sizeof commands[0] };

static void usage(FILE *f) {
    fprintf(f, "usage: diffuse <command> [options]     (diffuse <command> --help for its options)\n\ncommands:\n");
    for (int i = 0; i < NCOMMANDS; i++) fprintf(f, "  %-17s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nglobal options: --threads N (default: all cores), -h/--help, --version\n"
               "example: diffuse train --minutes 20 && diffuse sample runs/fmnist-s --out samples.png\n");
}

/* The top level's usage line: after an unknown or missing command. */
static const char top_usage[] = "usage: diffuse <command> [options]  "
                                "(commands: train, sample, eval, noise, info, init, predict, train-classifier; diffuse --help for more)\n";

/* Remove "--threads N" or "--threads=N" from argv (it applies to every command). Returns 0 or 2. */
static int take_threads(int *argc, char **argv) {
    for (int i = 1; i < *argc; i++) {
        if (strcmp(argv[i], "--") == 0) break;
        int joined = strncmp(argv[i], "--threads=", 10) == 0;
        if (!joined && strcmp(argv[i], "--threads") != 0) continue;
        if (!joined && i + 1 >= *argc) return cli_usage_error("--threads needs a value");
        long n;
        int rc = cli_int("--threads", joined ? argv[i] + 10 : argv[i + 1], 1, 1024, &n);
        if (rc) return rc;
        df_set_num_threads((int)n);
        int drop = joined ? 1 : 2;
        for (int j = i; j + drop <= *argc; j++) argv[j] = argv[j + drop];
        *argc -= drop;
        i--;
    }
    return 0;
}

/* The entry of `name` in the command table, or -1. */
static int find_command(const char *name) {
    for (int i = 0; i < NCOMMANDS; i++)
        if (strcmp(name, commands[i].name) == 0) return i;
    return -1;
}

int main(int argc, char **argv) {
    cli_prefer_passive_threads(argv);
    /* the command, looked for past any leading --threads, so that errors in --threads name it */
    int first = 1;
    while (first < argc && (strcmp(argv[first], "--threads") == 0 || strncmp(argv[first], "--threads=", 10) == 0))
        first += argv[first][9] ? 1 : 2;
    int ci = first < argc ? find_command(argv[first]) : -1;
    if (ci >= 0) cli_set_command(commands[ci].name, commands[ci].usage);
    else cli_set_command(NULL, top_usage);
    int rc = take_threads(&argc, argv);
    if (rc) return rc;
    if (argc < 2) return cli_usage_error("no command given");
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        int hi = strcmp(cmd, "help") == 0 && argc > 2 ? find_command(argv[2]) : -1;
        if (hi >= 0) fputs(commands[hi].usage, stdout);
        else if (strcmp(cmd, "help") == 0 && argc > 2) return cli_usage_error("help: unknown command \"%s\"", argv[2]);
        else usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("diffuse %s\n", DIFFUSE_VERSION);
        return 0;
    }
    ci = find_command(cmd);
    if (ci < 0) {
        cli_set_command(NULL, top_usage);
        if (cmd[0] == '-') return cli_usage_error("unknown option %s (options go after the command)", cmd);
        return cli_usage_error("unknown command \"%s\"", cmd);
    }
    for (int j = 2; j < argc && strcmp(argv[j], "--") != 0; j++)
        if (strcmp(argv[j], "-h") == 0 || strcmp(argv[j], "--help") == 0) {
            fputs(commands[ci].usage, stdout);
            return 0;
        }
    return commands[ci].run(argc - 2, argv + 2);
}
