/* Error reporting and option parsing shared by the commands: one line "diffuse <cmd>: ..." per error, the
 * usage line after usage errors, and the parser that walks a command's option table (cli.h). */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ---- messages ------------------------------------------------------------------------------------------ */

static const cli_command *cur;   /* the command being run; NULL before one is known */

void cli_set_command(const cli_command *cmd) { cur = cmd; }

/* "diffuse <cmd>: <message>\n" on stderr. A message that already starts with "<cmd>: " (as messages
 * written for a plain "diffuse: " prefix did) does not repeat the command. */
static void vsay(const char *fmt, va_list ap) {
    char msg[1200];
    vsnprintf(msg, sizeof msg, fmt, ap);
    const char *m = msg, *name = cur ? cur->name : NULL;
    size_t n = name ? strlen(name) : 0;
    if (n && strncmp(m, name, n) == 0 && m[n] == ':' && m[n + 1] == ' ') m += n + 2;
    if (name) fprintf(stderr, "diffuse %s: %s\n", name, m);
    else fprintf(stderr, "diffuse: %s\n", m);
}

int cli_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsay(fmt, ap);
    va_end(ap);
    return 1;
}

int cli_fail(df_status st) {
    cli_die("%s", df_error());
    return st ? 1 : 0;
}

int cli_usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsay(fmt, ap);
    va_end(ap);
    if (cur) cli_print_usage_line(stderr, cur);
    return 2;
}

/* ---- finding options ----------------------------------------------------------------------------------- */

static int is_option(const cli_opt *o) { return o->kind != CLI_SECTION; }

static int same(const char *name, const char *text, size_t len) {
    return name && strlen(name) == len && strncmp(name, text, len) == 0;
}

/* "--steps=10" is "--steps"; a short alias ("-h") takes no "=". */
static const cli_opt *find_opt(const cli_opt *opts, const char *arg) {
    const char *eq = strncmp(arg, "--", 2) == 0 ? strchr(arg, '=') : NULL;
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    for (const cli_opt *o = opts; o->name; o++)
        if (is_option(o) && (same(o->name, arg, len) || same(o->alias, arg, len))) return o;
    return NULL;
}

const cli_opt *cli_find(const cli_opt *opts, const char *name) { return find_opt(opts, name); }

int cli_given(const cli_args *a, const char *name) {
    const cli_opt *o = find_opt(a->opts, name);
    if (!o) {   /* a misspelt name would silently read as "not given" */
        fprintf(stderr, "diffuse: bug: cli_given(\"%s\"): no such option in the table\n", name);
        abort();
    }
    return a->given[o - a->opts];
}

/* Optimal string alignment distance (Levenshtein plus swaps of neighbours: "smaple" is one edit from
 * "sample") of two short strings; longer than 32 characters counts as far apart. */
static int distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 32 || lb > 32) return 99;
    int d[33][33];
    for (size_t i = 0; i <= la; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= lb; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            int best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < best) best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[la][lb];
}

static const char *undashed(const char *s) { return s + strspn(s, "-"); }

/* shown into the list out holds (k of them so far) unless already there; the new count. At most 3. */
static int add_suggestion(const char **list, int k, const char *shown) {
    for (int i = 0; i < k; i++)
        if (strcmp(list[i], shown) == 0) return k;
    if (k < 3) list[k++] = shown;
    return k;
}

int cli_suggest(const char *word, const char *const *names, const char *const *shown, int n, char *out, size_t cap) {
    char key[64];
    snprintf(key, sizeof key, "%.*s", (int)strcspn(undashed(word), "="), undashed(word));
    const size_t len = strlen(key);
    const char *list[3];
    int k = 0;
    /* the same name but for its dashes ("-out", "--o" for "-o"): that one alone */
    for (int i = 0; i < n && !k; i++)
        if (names[i] && len && strcmp(key, undashed(names[i])) == 0) k = add_suggestion(list, k, shown[i]);
    /* a short option "-o" the table does not have: the long names starting with its letter */
    if (!k && len == 1 && word[0] == '-' && word[1] != '-')
        for (int i = 0; i < n; i++)
            if (names[i] && strncmp(names[i], "--", 2) == 0 && names[i][2] == key[0]) k = add_suggestion(list, k, shown[i]);
    /* the beginning of a name ("--cfg" for "--cfg-scale") */
    if (!k && len >= 3)
        for (int i = 0; i < n; i++)
            if (names[i] && strncmp(undashed(names[i]), key, len) == 0) k = add_suggestion(list, k, shown[i]);
    /* else the nearest names, when near for the word's length: a typo or two, never a different short word */
    if (!k && len >= 2) {
        const int allowed = len <= 5 ? 1 : len <= 9 ? 2 : 3;
        int best = allowed + 1;
        for (int i = 0; i < n; i++)
            if (names[i]) {
                int d = distance(key, undashed(names[i]));
                if (d < best) best = d, k = 0;
                if (d == best) k = add_suggestion(list, k, shown[i]);
            }
    }
    out[0] = 0;
    for (int i = 0; i < k; i++)
        snprintf(out + strlen(out), cap - strlen(out), "%s%s", i == 0 ? "" : i + 1 < k ? ", " : " or ", list[i]);
    return k;
}

static int unknown_option(const char *arg, const cli_opt *opts) {
    char name[64], near[200];
    snprintf(name, sizeof name, "%.*s", (int)strcspn(arg, "="), arg);
    const char *names[2 * CLI_MAX_OPTS], *shown[2 * CLI_MAX_OPTS];
    int n = 0;
    for (const cli_opt *o = opts; o->name && n + 2 <= 2 * CLI_MAX_OPTS; o++)
        if (is_option(o)) {
            names[n] = o->name, shown[n++] = o->name;
            if (o->alias) names[n] = o->alias, shown[n++] = o->name;
        }
    if (cli_suggest(name, names, shown, n, near, sizeof near))
        return cli_usage_error("unknown option %s (did you mean %s?)", name, near);
    return cli_usage_error("unknown option %s", name);
}

/* ---- values -------------------------------------------------------------------------------------------- */

static int bad_value(const cli_opt *o, const char *v) {
    switch (o->kind) {
    case CLI_STR: return cli_usage_error("%s: needs a non-empty value", o->name);
    case CLI_U64:
        return cli_usage_error("%s: expected a whole number from 0 to %llu, got \"%s\"", o->name, ULLONG_MAX, v);
    case CLI_INT:
    case CLI_LONG:
        return cli_usage_error("%s: expected a whole number from %.0f to %.0f, got \"%s\"", o->name, o->lo, o->hi, v);
    default:
        if (o->lo > 0 && o->lo <= 1e-6)   /* a tiny lower bound stands for "positive" */
            return cli_usage_error("%s: expected a number above 0 and at most %g, got \"%s\"", o->name, o->hi, v);
        return cli_usage_error("%s: expected a number from %g to %g, got \"%s\"", o->name, o->lo, o->hi, v);
    }
}

/* "expected adamw or sgd, got ..." for a table of names without a parse function. */
static int bad_choice(const cli_opt *o, const char *v) {
    char list[512];
    size_t n = 0;
    for (int i = 0; i < o->choices->count && n < sizeof list; i++)
        n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", i == 0 ? "" : i + 1 < o->choices->count ? ", " : " or ",
                              o->choices->name(i));
    return cli_usage_error("%s: expected %s, got \"%s\"", o->name, list, v);
}

static int set_enum(const cli_opt *o, const char *v) {
    const cli_choices *ch = o->choices;
    int k = -1;
    if (ch->parse) {
        if (ch->parse(v, &k)) return cli_usage_error("%s: %s", o->name, df_error());
    } else {
        for (int i = 0; i < ch->count && k < 0; i++)
            if (strcmp(v, ch->name(i)) == 0) k = i;
        if (k < 0) return bad_choice(o, v);
    }
    memcpy(o->dst, &k, sizeof k);   /* an int-sized enum (OPT_ENUM checks the size) */
    return 0;
}

/* A whole number: no leading space, nothing after it, no overflow. */
static int whole(const char *v, long long *x) {
    char *end;
    errno = 0;
    *x = strtoll(v, &end, 10);
    return *v && !isspace((unsigned char)*v) && !*end && !errno;
}

/* Check the value of option o and store it. Returns 0, or 2 after a usage error. */
static int set_value(const cli_opt *o, const char *v) {
    char *end;
    long long x;
    errno = 0;
    switch (o->kind) {
    case CLI_STR:
        if (!*v) return bad_value(o, v);
        *(const char **)o->dst = v;
        return 0;
    case CLI_INT:
    case CLI_LONG:
        if (!whole(v, &x) || x < o->lo || x > o->hi) return bad_value(o, v);
        if (o->kind == CLI_INT) *(int *)o->dst = (int)x;
        else *(long *)o->dst = (long)x;
        return 0;
    case CLI_U64: {
        unsigned long long u = strtoull(v, &end, 10);
        if (!isdigit((unsigned char)*v) || *end || errno) return bad_value(o, v);
        *(uint64_t *)o->dst = u;
        return 0;
    }
    case CLI_DOUBLE: {
        double d = strtod(v, &end);
        if (!*v || isspace((unsigned char)*v) || *end || errno || !isfinite(d) || d < o->lo || d > o->hi)
            return bad_value(o, v);
        *(double *)o->dst = d;
        return 0;
    }
    case CLI_ENUM: return set_enum(o, v);
    case CLI_INTS: return cli_parse_ints(o->name, v, (int)o->lo, (int)o->hi, o->dst);
    case CLI_CALL: return o->parse(v, o->dst);
    case CLI_FLAG:
    case CLI_SECTION:
    case CLI_KIND_COUNT: break;
    }
    return 0;
}

int cli_parse_ints(const char *opt, const char *text, int lo, int hi, cli_ints *out) {
    out->text = text;
    out->n = 0;
    const char *s = text;
    for (;;) {
        while (*s == ' ') s++;
        size_t len = strcspn(s, ",");
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        while (*end == ' ') end++;
        if (!isdigit((unsigned char)*s) && *s != '-')
            return cli_usage_error("%s: expected comma-separated whole numbers, got \"%s\"", opt, text);
        if (end != s + len || errno || v < lo || v > hi)
            return cli_usage_error("%s: \"%.*s\" is not a whole number from %d to %d (in \"%s\")", opt, (int)len, s,
                                   lo, hi, text);
        if (out->n >= CLI_MAX_INTS) return cli_usage_error("%s: at most %d numbers, got \"%s\"", opt, CLI_MAX_INTS, text);
        out->v[out->n++] = (int)v;
        if (!s[len]) return 0;
        s += len + 1;
    }
}

int cli_parse_guidance_interval(const char *text, void *dst) {
    double *lohi = dst, v[2];
    const char *s = text;
    for (int i = 0; i < 2; i++) {
        char *end;
        errno = 0;
        v[i] = strtod(s, &end);
        if (end == s || errno || (i == 0 && *end != ',') || (i == 1 && *end) || isnan(v[i]))
            return cli_usage_error("--guidance-interval: expected LO,HI (noise levels sigma, such as 0.3,5), got \"%s\"",
                                   text);
        s = end + 1;
    }
    if (!(v[0] >= 0 && v[1] > v[0]))
        return cli_usage_error("--guidance-interval %s: want 0 <= LO < HI", text);
    lohi[0] = v[0], lohi[1] = v[1];
    return 0;
}

int cli_check_guidance_interval(const cli_args *a, double guidance) {
    if (cli_given(a, "--guidance-interval") && guidance == 1)
        return cli_usage_error("--guidance-interval limits classifier-free guidance: give --guidance W too");
    return 0;
}

int cli_check_sampler_options(const cli_args *a, df_sampler_kind kind, int karras) {
    const df_sampler_info *si = df_sampler_info_get(kind);
    if (cli_given(a, "--eta") && si->noise != DF_NOISE_ETA)
        return cli_usage_error("--eta is DDIM's noise; the %s sampler has none", si->name);
    if (karras && !si->sigma_space) {
        char names[200];
        size_t o = 0;
        for (int k = 0; k < DF_SAMPLER_COUNT; k++)
            if (df_sampler_info_get((df_sampler_kind)k)->sigma_space && o < sizeof names)
                o += (size_t)snprintf(names + o, sizeof names - o, "%s%s", o ? ", " : "", df_sampler_name((df_sampler_kind)k));
        return cli_usage_error("--karras needs a sigma-space sampler (%s), not %s", names, si->name);
    }
    return 0;
}

/* ---- the parser ---------------------------------------------------------------------------------------- */

/* Option argv[*i] (and its value, the next argument unless after '='), found in opts. Returns 0 or 2. */
static int take_option(const cli_opt *opts, cli_args *a, int argc, char **argv, int *i) {
    const char *arg = argv[*i];
    const cli_opt *o = find_opt(opts, arg);
    if (!o) return unknown_option(arg, opts);
    const char *eq = strncmp(arg, "--", 2) == 0 ? strchr(arg, '=') : NULL;
    if (a->given[o - opts]++) return cli_usage_error("%s given twice", o->name);
    if (o->kind == CLI_FLAG) {
        if (eq) return cli_usage_error("%s takes no value", o->name);
        *(int *)o->dst = 1;
        return 0;
    }
    if (eq) return set_value(o, eq + 1);
    if (*i + 1 >= argc) return cli_usage_error("%s needs a value", o->name);
    const char *v = argv[++*i];
    /* "--out --n 4" or "-o -n 4": the value is missing, not "--n" ("-s -1" is a value: no option "-1") */
    if (v[0] == '-' && find_opt(opts, v))
        return cli_usage_error("%s needs a value (got the option %s)", o->name, v);
    return set_value(o, v);
}

static int wants_help(int argc, char **argv) {
    for (int i = 0; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) return 1;
    return 0;
}

int cli_parse(const cli_command *cmd, const cli_opt *opts, int argc, char **argv, cli_args *a) {
    cli_set_command(cmd);
    memset(a, 0, sizeof *a);
    a->opts = opts;
    int nopts = 0;
    while (opts[nopts].name) nopts++;
    if (nopts > CLI_MAX_OPTS || cmd->max_args > CLI_MAX_ARGS) {
        fprintf(stderr, "diffuse: bug: %s: more options or arguments than cli_args holds\n", cmd->name);
        abort();
    }
    if (wants_help(argc, argv)) {
        cli_print_help(stdout, cmd, opts);
        return CLI_HELP;
    }
    int only_positional = 0;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        int rc = 0;
        if (only_positional || arg[0] != '-' || !arg[1]) {
            if (a->npos < cmd->max_args) a->pos[a->npos++] = arg;
            else if (cmd->max_args) rc = cli_usage_error("unexpected argument \"%s\" (expected %d)", arg, cmd->max_args);
            else rc = cli_usage_error("unexpected argument \"%s\"", arg);
        } else if (strcmp(arg, "--") == 0) {
            only_positional = 1;
        } else {
            rc = take_option(opts, a, argc, argv, &i);
        }
        if (rc) return rc;
    }
    return 0;
}

int cli_take(const cli_opt *opts, int *argc, char **argv) {
    for (int i = 1; i < *argc && strcmp(argv[i], "--") != 0;) {
        const cli_opt *o = find_opt(opts, argv[i]);
        if (!o || !o->global) {
            i++;
            continue;
        }
        const char *eq = strchr(argv[i], '=');
        int drop = eq || o->kind == CLI_FLAG ? 1 : 2;
        if (drop == 2 && i + 1 >= *argc) return cli_usage_error("%s needs a value", o->name);
        int rc = o->kind == CLI_FLAG ? (*(int *)o->dst = 1, 0) : set_value(o, eq ? eq + 1 : argv[i + 1]);
        if (rc) return rc;
        for (int j = i; j + drop <= *argc; j++) argv[j] = argv[j + drop];
        *argc -= drop;
    }
    return 0;
}

/* ---- the library's names ------------------------------------------------------------------------------- */

static const char *sampler_name(int i) { return df_sampler_name((df_sampler_kind)i); }
static df_status sampler_parse(const char *text, int *k) {
    df_sampler_kind v;
    df_status st = df_sampler_parse(text, &v);
    if (!st) *k = (int)v;
    return st;
}
const cli_choices cli_samplers = {DF_SAMPLER_COUNT, sampler_name, sampler_parse};

static const char *spacing_name(int i) { return df_spacing_name((df_spacing)i); }
static df_status spacing_parse(const char *text, int *k) {
    df_spacing v;
    df_status st = df_spacing_parse(text, &v);
    if (!st) *k = (int)v;
    return st;
}
const cli_choices cli_spacings = {DF_SPACING_COUNT, spacing_name, spacing_parse};

static const char *prediction_name(int i) { return df_prediction_name((df_prediction)i); }
static df_status prediction_parse(const char *text, int *k) {
    df_prediction v;
    df_status st = df_prediction_parse(text, &v);
    if (!st) *k = (int)v;
    return st;
}
const cli_choices cli_predictions = {DF_PRED_COUNT, prediction_name, prediction_parse};

static const char *beta_name(int i) { return df_beta_kind_name((df_beta_kind)i); }
static df_status beta_parse(const char *text, int *k) {
    df_beta_kind v;
    df_status st = df_beta_kind_parse(text, &v);
    if (!st) *k = (int)v;
    return st;
}
const cli_choices cli_beta_schedules = {DF_BETA_COUNT, beta_name, beta_parse};
