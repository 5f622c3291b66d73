/* The `diffuse` command: a thin layer that parses arguments, calls libdiffuse and turns any error into
 * one line on stderr and a non-zero exit. This file holds the list of commands and the global options. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "restart.h"

#include <omp.h>

#include <stdio.h>
#include <string.h>

static const cli_command *const commands[] = {
    &cmd_train, &cmd_sample, &cmd_eval, &cmd_compare, &cmd_noise, &cmd_info, &cmd_init, &cmd_predict,
    &cmd_train_classifier, NULL,
};

static const cli_command top = {
    .name = NULL,
    .usage = "usage: diffuse <command> [options]",
    .about = "Denoising diffusion models: train, sample, evaluate. diffuse <command> --help lists a command's options.",
    .epilog = "example: diffuse train --minutes 20 && diffuse sample runs/fmnist-s --out samples.png",
    .max_args = 0,
    .commands = commands,
};

static int threads, show_version, show_help;
/* --threads applies to every command and may come before or after it (`global`); --help and --version only
 * in the command's place (after a command, --help is that command's). */
static const cli_opt top_opts[] = {
    OPT_SECTION("global options:"),
    OPT_INT("--threads", &threads, .lo = 1, .hi = 1024, .meta = "N", .global = 1, .def = "all cores",
            .help = "worker threads, before or after the command"),
    OPT_FLAG("--help", &show_help, .alias = "-h", .help = "this overview (after a command: that command's options)"),
    OPT_FLAG("--version", &show_version, .help = "the version"),
    CLI_END,
};

static const cli_command *find_command(const char *name) {
    for (int i = 0; name && commands[i]; i++)
        if (strcmp(name, commands[i]->name) == 0) return commands[i];
    return NULL;
}

/* "unknown command" with the nearest commands' names ("smaple": sample). Returns 2. */
static int unknown_command(const char *what, const char *word) {
    const char *names[CLI_COUNTOF(commands)];
    int n = 0;
    for (; commands[n]; n++) names[n] = commands[n]->name;
    char near[200];
    if (cli_suggest(word, names, names, n, near, sizeof near))
        return cli_usage_error("%sunknown command \"%s\" (did you mean %s?)", what, word, near);
    return cli_usage_error("%sunknown command \"%s\"", what, word);
}

/* argv[i] once the global options before it are skipped: where the command's name should be. */
static const char *command_word(int argc, char **argv) {
    int i = 1;
    for (const cli_opt *o; i < argc && (o = cli_find(top_opts, argv[i])) && o->global;)
        i += strchr(argv[i], '=') || o->kind == CLI_FLAG ? 1 : 2;
    return i < argc ? argv[i] : NULL;
}

/* diffuse help [COMMAND] */
static int help(int argc, char **argv) {
    if (argc <= 2) {
        cli_print_help(stdout, &top, top_opts);
        return 0;
    }
    const cli_command *cmd = find_command(argv[2]);
    if (!cmd) return unknown_command("help: ", argv[2]);
    char arg[] = "--help";
    char *args[] = {arg, NULL};
    return cmd->run(1, args);
}

/* diffuse --man: the man page, roff made from the overview and every command's --help (not listed in --help:
 * the build runs it). */
static int man_page(void) {
    cli_help_as_roff(1);
    cli_print_help(stdout, &top, top_opts);
    for (int i = 0; commands[i]; i++) {
        char arg[] = "--help";
        char *args[] = {arg, NULL};
        int rc = commands[i]->run(1, args);
        if (rc) return rc;
    }
    return fflush(stdout) ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--man") == 0) return man_page();
    cli_prefer_passive_threads(argv);
    const cli_command *cmd = find_command(command_word(argc, argv));
    cli_set_command(cmd ? cmd : &top);   /* so that an error in --threads names the command */
    int rc = cli_take(top_opts, &argc, argv);
    if (rc) return rc;
    if (threads) omp_set_num_threads(threads);   /* the default of every OpenMP team: the models follow it */
    if (argc < 2) return cli_usage_error("no command given");
    const char *word = argv[1];
    if (strcmp(word, "help") == 0) return help(argc, argv);
    if ((cmd = find_command(word))) return cmd->run(argc - 2, argv + 2);
    cli_set_command(&top);
    if (word[0] != '-') return unknown_command("", word);
    if (!cli_find(top_opts, word)) return cli_usage_error("unknown option %s (options go after the command)", word);
    cli_args a;
    if ((rc = cli_parse(&top, top_opts, argc - 1, argv + 1, &a))) return cli_exit(rc);
    if (show_version) printf("diffuse %s\n", DIFFUSE_VERSION);
    return 0;
}
