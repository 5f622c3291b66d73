/* Shared pieces of the `diffuse` command: error reporting and the commands' entry points. Each command
 * lives in its own cli/cmd_*.c and is listed in the table in cli/diffuse.c. */
#ifndef DF_CLI_H
#define DF_CLI_H

#include "diffuse.h"

#include <stdio.h>

/* Print "diffuse: <fmt with arg>" on stderr and return 1. */
int cli_die(const char *fmt, const char *arg);
/* Print "diffuse: <df_error()>" on stderr and return 1 (0 if st is DF_OK). */
int cli_fail(df_status st);
/* Parse a whole decimal number in [lo, hi] for option `opt`; prints the error itself. */
int cli_int(const char *opt, const char *text, long lo, long hi, long *out);

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
 * uint64_t or an int set to 1 for flags); numbers are checked against [lo, hi]. Positional arguments go
 * to pos (at most maxpos). Returns 0, or 2 after printing one line and the usage. */
typedef enum { OPT_FLAG, OPT_INT, OPT_LONG, OPT_DOUBLE, OPT_STR, OPT_U64 } cli_opt_kind;
typedef struct {
    const char  *name;
    cli_opt_kind kind;
    void        *dst;
    double       lo, hi;
} cli_opt;
int cli_parse(const char *cmd, int argc, char **argv, const cli_opt *opts, const char **pos, int maxpos, int *npos,
              const char *usage);
/* "3,7,0" -> out[], each in [lo, hi]; prints the error itself and returns 2 on bad input. */
int cli_parse_list(const char *cmd, const char *opt, const char *text, int lo, int hi, int *out, int cap, int *n);

/* Each command: its entry point and its --help text. */
extern const char cmd_train_usage[], cmd_sample_usage[], cmd_noise_usage[], cmd_predict_usage[], cmd_init_usage[],
    cmd_info_usage[];
int cmd_predict(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_noise(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_sample(int argc, char **argv);

#endif
