/* Shared pieces of the `diffuse` command: the commands, their option tables (which drive both parsing and
 * --help), error reporting, path checks and progress bars. Each command lives in its own cli/cmd_*.c and is
 * listed in cli/diffuse.c. */
#ifndef DF_CLI_H
#define DF_CLI_H

#include "diffuse.h"

#include <stdint.h>
#include <stdio.h>

#define CLI_COUNTOF(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define CLI_MIN(a, b) ((a) < (b) ? (a) : (b))
#define CLI_MAX(a, b) ((a) > (b) ? (a) : (b))

/* ---- commands ------------------------------------------------------------------------------------------- */

/* A command: what --help, the usage line after an error and the overview say about it. The top level is a
 * command too (name NULL) whose `commands` lists the others. */
typedef struct cli_command {
    const char *name;      /* "sample"; NULL for the top level */
    const char *usage;     /* "usage: diffuse sample MODEL [options]"; a second form on a second line */
    const char *summary;   /* one line for the overview (diffuse --help) */
    const char *about;     /* what the command does, printed after the usage (NULL: nothing) */
    const char *epilog;    /* printed after the options (NULL: nothing) */
    int         max_args;  /* positional arguments accepted */
    int (*run)(int argc, char **argv);   /* argv: the arguments after the command's name */
    const struct cli_command *const *commands;   /* the top level's commands, NULL-terminated */
} cli_command;

extern const cli_command cmd_train, cmd_sample, cmd_noise, cmd_info, cmd_init, cmd_predict, cmd_eval, cmd_compare,
    cmd_train_classifier;

/* ---- option tables -------------------------------------------------------------------------------------- */

/* What an option's value is and where it goes. */
typedef enum {
    CLI_FLAG,      /* int, set to 1; takes no value */
    CLI_INT,       /* int in [lo, hi] */
    CLI_LONG,      /* long in [lo, hi] */
    CLI_DOUBLE,    /* a finite double in [lo, hi]; a tiny positive lo (<= 1e-6) reads "above 0" in messages */
    CLI_U64,       /* uint64_t, any whole number from 0 */
    CLI_STR,       /* const char *, non-empty (points into argv) */
    CLI_ENUM,      /* an enum (or int): the index of one of `choices` */
    CLI_INTS,      /* cli_ints: comma-separated whole numbers in [lo, hi] */
    CLI_CALL,      /* anything else: parse(text, dst) */
    CLI_SECTION,   /* not an option: `help` is a heading in --help */
    CLI_KIND_COUNT
} cli_kind;

/* The names an enum option takes: name(i) for i in [0, count). parse may accept more spellings than the
 * names (the library's "cosine" for squaredcos_cap_v2); NULL: exactly the names. */
typedef struct {
    int count;
    const char *(*name)(int i);
    df_status (*parse)(const char *text, int *value);   /* DF_OK, or a df_error() message naming the text */
} cli_choices;
/* The library's names: samplers, timestep spacings, predictions, beta schedules. */
extern const cli_choices cli_samplers, cli_spacings, cli_predictions, cli_beta_schedules;

enum { CLI_MAX_INTS = 1024 };
typedef struct {
    const char *text;   /* as given (NULL: not given) */
    int         n;
    int         v[CLI_MAX_INTS];
} cli_ints;

/* One row of a command's table: its name, value, destination, range, and its line in --help. A table ends
 * with CLI_END. Write rows with the OPT_* macros below: they check the destination's type. */
typedef struct {
    const char *name;     /* "--steps" */
    const char *alias;    /* another spelling ("-h"), or NULL */
    cli_kind    kind;
    void       *dst;
    double      lo, hi;   /* CLI_INT, CLI_LONG, CLI_DOUBLE, CLI_INTS: the accepted range */
    const char *meta;     /* the value in --help: "N", "PATH" */
    const char *help;     /* one sentence; --help wraps it */
    const char *def;      /* the default as --help shows it; NULL: the destination's value before parsing
                           * (so a default is written once, where the destination is set); "": none */
    const cli_choices *choices;                 /* CLI_ENUM */
    int (*parse)(const char *text, void *dst);  /* CLI_CALL: 0, or 2 after cli_usage_error */
    int global;           /* taken from anywhere on the command line by cli_take (--threads) */
} cli_opt;

#define CLI_TYPED(T, p) _Generic((p), T: (p))   /* a compile error unless p has type T */
/* An enum destination: written as an int, so it must be int-sized (GCC's enums are) */
#define CLI_INT_SIZED(p) ((void *)((char *)(p) + 0 * sizeof(char[sizeof *(p) == sizeof(int) ? 1 : -1])))
#define OPT_FLAG(nm, d, ...) {.name = (nm), .kind = CLI_FLAG, .dst = CLI_TYPED(int *, d), __VA_ARGS__}
#define OPT_INT(nm, d, ...) {.name = (nm), .kind = CLI_INT, .dst = CLI_TYPED(int *, d), __VA_ARGS__}
#define OPT_LONG(nm, d, ...) {.name = (nm), .kind = CLI_LONG, .dst = CLI_TYPED(long *, d), __VA_ARGS__}
#define OPT_DOUBLE(nm, d, ...) {.name = (nm), .kind = CLI_DOUBLE, .dst = CLI_TYPED(double *, d), __VA_ARGS__}
#define OPT_U64(nm, d, ...) {.name = (nm), .kind = CLI_U64, .dst = CLI_TYPED(uint64_t *, d), __VA_ARGS__}
#define OPT_STR(nm, d, ...) {.name = (nm), .kind = CLI_STR, .dst = CLI_TYPED(const char **, d), __VA_ARGS__}
#define OPT_ENUM(nm, d, ch, ...) {.name = (nm), .kind = CLI_ENUM, .dst = CLI_INT_SIZED(d), .choices = (ch), __VA_ARGS__}
#define OPT_INTS(nm, d, ...) {.name = (nm), .kind = CLI_INTS, .dst = CLI_TYPED(cli_ints *, d), __VA_ARGS__}
#define OPT_CALL(nm, d, fn, ...) {.name = (nm), .kind = CLI_CALL, .dst = (d), .parse = (fn), __VA_ARGS__}
#define OPT_SECTION(text) {.name = "", .kind = CLI_SECTION, .help = (text)}
#define CLI_END {.name = NULL}

/* What cli_parse found: the positional arguments and which options were given. */
enum { CLI_MAX_ARGS = 32, CLI_MAX_OPTS = 128 };   /* compare takes up to 32 runs */
typedef struct {
    const cli_opt *opts;
    const char    *pos[CLI_MAX_ARGS];
    int            npos;
    unsigned char  given[CLI_MAX_OPTS];   /* by row of opts */
} cli_args;

/* cli_parse's answer when -h or --help was among the arguments: the help is on stdout, exit with 0. */
#define CLI_HELP (-1)
/* The exit code for what cli_parse returned: `if (rc) return cli_exit(rc);` */
static inline int cli_exit(int rc) { return rc == CLI_HELP ? 0 : rc; }

/* Parse a command's arguments (those after its name) with its table; makes cmd the command that errors
 * name. Values follow as the next argument or after '=' ("--steps=10"); "--" ends the options; -h or
 * --help anywhere before it prints the help and returns CLI_HELP. Every value is checked and stored as it
 * is read. Returns 0; or 2 after one line and the usage line on stderr, for an unknown option, a missing or
 * bad value, an option given twice, or more than cmd->max_args positional arguments. */
int cli_parse(const cli_command *cmd, const cli_opt *opts, int argc, char **argv, cli_args *out);
/* 1 if option `name` (a row of the parsed table: anything else is a bug) was given. */
int cli_given(const cli_args *a, const char *name);
/* Take the table's `global` options out of argv[1..argc) wherever they are (before any "--"), storing their
 * values as cli_parse does. Returns 0, or 2 after a usage error. */
int cli_take(const cli_opt *opts, int *argc, char **argv);
/* The row named `name` (or its alias; "--x=1" matches "--x"), or NULL. */
const cli_opt *cli_find(const cli_opt *opts, const char *name);
/* The names close to a mistyped word, into out as "a", "a or b" or "a, b or c" (at most 3); how many (0: none
 * close). names[i] is a candidate spelling, shown[i] what to suggest for it (an option's name for its alias);
 * NULL names are skipped. Dashes are ignored; "-x" suggests the long names starting with x, a word of 3 or
 * more the names it begins; otherwise the nearest by edit distance (swaps count one), if within 1 edit for
 * words of 2 to 5 characters, 2 up to 9, else 3. */
int cli_suggest(const char *word, const char *const *names, const char *const *shown, int n, char *out, size_t cap);

/* Comma-separated whole numbers ("3,7,0") in [lo, hi]; a usage error naming `opt` (returns 2) otherwise. */
int cli_parse_ints(const char *opt, const char *text, int lo, int hi, cli_ints *out);
/* --guidance-interval LO,HI (an OPT_CALL parser; dst is double[2]): noise levels 0 <= LO < HI, HI may be "inf". */
int cli_parse_guidance_interval(const char *text, void *dst);
/* A usage error (returns 2) if --guidance-interval was given without classifier-free guidance; else 0. */
int cli_check_guidance_interval(const cli_args *a, double guidance);
/* --eta and --karras against the sampler they go with (sample and eval). Returns 0 or 2 (a usage error). */
int cli_check_sampler_options(const cli_args *a, df_sampler_kind kind, int karras);

/* Help shared by sample and eval. */
#define CLI_HELP_GUIDANCE_INTERVAL                                                                                   \
    "guide only at noise levels sigma in (LO, HI] (Kynkäänniemi et al. 2024), plain conditional steps elsewhere: " \
    "guidance at high noise levels costs variety; sigma runs from 0.01 (t = 0) to 157 (t = 999) on the default "   \
    "schedule; HI may be inf"
#define CLI_HELP_KARRAS "Karras sigmas (euler, euler_a, heun, dpmpp-*)"

/* The full help: usage, about, the commands (top level), the options with their defaults, the epilog. */
void cli_print_help(FILE *f, const cli_command *cmd, const cli_opt *opts);
/* From now on cli_print_help writes roff, the command's part of the man page (diffuse --man). */
void cli_help_as_roff(int on);
/* The usage line after an error: cmd->usage and where to find more. */
void cli_print_usage_line(FILE *f, const cli_command *cmd);

/* ---- errors --------------------------------------------------------------------------------------------- */

/* Every message is one line "diffuse <cmd>: ..." on stderr, <cmd> being the command being run (set by
 * cli_parse or cli_set_command; the top level gives "diffuse: ..."). Exit codes: 2 for a usage error (a bad
 * or contradictory argument: the message is followed by the command's usage line), 1 for anything else (a
 * missing file, a bad model, a failed write). */
void cli_set_command(const cli_command *cmd);
/* Print the message and return 1. A message that starts with "<cmd>: " does not repeat the command. */
int cli_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print df_error() and return 1 (0 if st is DF_OK). */
int cli_fail(df_status st);
/* Print the message, then the usage line, and return 2. */
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- paths (cli/paths.c) -------------------------------------------------------------------------------- */

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
/* The shipped feature network for 28x28 gray images (models/fmnist-features), found from the current
 * directory or beside the program (build/diffuse -> models/); buf holds the second form. */
const char *cli_default_features(char *buf, size_t cap);

/* ---- progress (cli/progress.c) -------------------------------------------------------------------------- */

/* A progress bar on stderr (redrawn in place on a terminal, a line every 5 s otherwise). */
typedef struct {
    const char *label;
    int         tty;
    double      start, last;
} cli_progress;
void cli_progress_init(cli_progress *p, const char *label);
/* done of total (total <= 0: unknown); eta < 0 estimates from the rate; extra is printed after the bar. */
void cli_progress_draw(cli_progress *p, double done, double total, double eta, const char *extra);
/* A bar for a budget that is not a count (time, say): count is shown as it is, fraction (0..1) fills the bar. */
void cli_progress_draw_part(cli_progress *p, const char *count, double fraction, double eta, const char *extra);
void cli_progress_line(cli_progress *p, const char *text);   /* a message that stays above the bar */
void cli_progress_done(cli_progress *p);
void cli_format_duration(double sec, char *out, size_t cap);

#endif
