/* Shared pieces of the `diffuse` command: error reporting and the commands' entry points. Each command
 * lives in its own cli/cmd_*.c and is listed in the table in cli/diffuse.c. */
#ifndef DF_CLI_H
#define DF_CLI_H

#include "diffuse.h"

#include <stdio.h>

/* Errors. Every message is one line "diffuse <cmd>: ..." on stderr, <cmd> being the command main() is
 * running (set with cli_set_command; NULL for the top level, giving "diffuse: ..."). Exit codes: 2 for a
 * usage error (a bad or contradictory argument: the message is followed by the command's usage line), 1
 * for anything else (a missing file, a bad model, a failed write). */
void cli_set_command(const char *cmd, const char *usage);
/* Print the message and return 1. A message that starts with "<cmd>: " does not repeat the command. */
int cli_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print df_error() and return 1 (0 if st is DF_OK). */
int cli_fail(df_status st);
/* Print the message, then the usage line, and return 2. */
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The usage line: the lines of `usage` before its first blank line, with a pointer to --help for the rest. */
void cli_print_usage_line(FILE *f, const char *cmd, const char *usage);
/* Parse a whole decimal number in [lo, hi] for option `opt`; a usage error (returns 2) otherwise. */
int cli_int(const char *opt, const char *text, long lo, long hi, long *out);

/* Checks made before any work starts. `what` names the argument ("--mask", "MODEL"; "" for none).
 * cli_check_input: `path` must exist and be readable, a directory if want_dir, a file otherwise.
 * cli_check_output: a file `path` must not be an existing directory, and the directory it goes in must exist
 * and be writable; a directory (want_dir) must not be an existing file (it is made with its parents).
 * Both print one line and return 1 on failure, 0 otherwise. */
int cli_check_input(const char *what, const char *path, int want_dir);
int cli_check_output(const char *what, const char *path, int want_dir);
/* A data set argument: the built-in names (fashion-mnist, fashion-mnist:test), or an existing readable
 * file or directory. */
int cli_check_data(const char *what, const char *path);
/* 1 if a and b name the same file: the same existing file, or the same name in the same directory. */
int cli_same_file(const char *a, const char *b);
/* 1 if s ends with suffix, ignoring case (".png" matches "X.PNG"). */
int cli_has_suffix(const char *s, const char *suffix);

/* A progress bar on stderr (redrawn in place on a terminal, a line every 5 s otherwise). */
typedef struct {
    const char *label;
    int         tty;
    double      start, last;
} cli_progress;
void cli_progress_init(cli_progress *p, const char *label);
/* done of total (total <= 0: unknown); eta < 0 estimates from the rate; extra is printed after the bar. */
void cli_progress_draw(cli_progress *p, double done, double total, double eta, const char *extra);
void cli_progress_line(cli_progress *p, const char *text);   /* a message that stays above the bar */
void cli_progress_done(cli_progress *p);
void cli_format_duration(double sec, char *out, size_t cap);

/* Command options: a table ending with {NULL}. Values land in *dst (int, long, double, const char *,
 * uint64_t or an int set to 1 for flags); numbers are checked against [lo, hi] (not for OPT_U64). Values
 * follow as the next argument or after '=' ("--steps=10"); "--" ends the options. Positional arguments go
 * to pos (at most maxpos). An unknown option, a missing or bad value, an option given twice or one
 * positional too many is a usage error: returns 2 after printing one line and the usage line; else 0.
 * cmd and usage become the command the error functions name (as cli_set_command). */
typedef enum { OPT_FLAG, OPT_INT, OPT_LONG, OPT_DOUBLE, OPT_STR, OPT_U64 } cli_opt_kind;
typedef struct {
    const char  *name;
    cli_opt_kind kind;
    void        *dst;
    double       lo, hi;
} cli_opt;
int cli_parse(const char *cmd, int argc, char **argv, const cli_opt *opts, const char **pos, int maxpos, int *npos,
              const char *usage);
/* 1 if option `name` is among the arguments cli_parse accepted (before any "--"). */
int cli_given(int argc, char **argv, const char *name);
/* "3,7,0" -> out[], each in [lo, hi], at most cap; a usage error (returns 2) on bad input. */
int cli_parse_list(const char *cmd, const char *opt, const char *text, int lo, int hi, int *out, int cap, int *n);

/* The shipped feature network for 28x28 gray images (models/fmnist-features), found from the current
 * directory or beside the program (build/diffuse -> models/); buf holds the second form. */
const char *cli_default_features(char *buf, size_t cap);

/* Each command: its entry point and its --help text. */
extern const char cmd_train_usage[], cmd_sample_usage[], cmd_noise_usage[], cmd_predict_usage[], cmd_init_usage[],
    cmd_info_usage[], cmd_train_classifier_usage[], cmd_eval_usage[];
int cmd_eval(int argc, char **argv);
int cmd_train_classifier(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_noise(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_sample(int argc, char **argv);

#endif
