/* Error reporting and option parsing shared by the commands: one line "diffuse <cmd>: ..." per error, the
 * usage line after usage errors, a table of --name, kind, destination and range per command, and the checks
 * on input and output paths made before any work starts. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- messages ------------------------------------------------------------------------------------------ */

static const char *cur_cmd;     /* NULL: the top level */
static const char *cur_usage;   /* NULL: no usage line to print */

void cli_set_command(const char *cmd, const char *usage) {
    cur_cmd = cmd;
    cur_usage = usage;
}

/* "diffuse <cmd>: <message>\n" on stderr. A message that already starts with "<cmd>: " (as messages
 * written for a plain "diffuse: " prefix did) does not repeat the command. */
static void vsay(const char *fmt, va_list ap) {
    char msg[1200];
    vsnprintf(msg, sizeof msg, fmt, ap);
    const char *m = msg;
    size_t n = cur_cmd ? strlen(cur_cmd) : 0;
    if (n && strncmp(m, cur_cmd, n) == 0 && m[n] == ':' && m[n + 1] == ' ') m += n + 2;
    if (cur_cmd) fprintf(stderr, "diffuse %s: %s\n", cur_cmd, m);
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

void cli_print_usage_line(FILE *f, const char *cmd, const char *usage) {
    const char *end = strstr(usage, "\n\n");
    int len = end ? (int)(end - usage) : (int)strcspn(usage, "\n");
    if (cmd) fprintf(f, "%.*s  (diffuse %s --help for all options)\n", len, usage, cmd);
    else fprintf(f, "%.*s\n", len, usage);
}

int cli_usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsay(fmt, ap);
    va_end(ap);
    if (cur_usage) cli_print_usage_line(stderr, cur_cmd, cur_usage);
    return 2;
}

int cli_int(const char *opt, const char *text, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (!*text || *end || errno || v < lo || v > hi)
        return cli_usage_error("%s: expected a whole number from %ld to %ld, got \"%s\"", opt, lo, hi, text);
    *out = v;
    return 0;
}

/* ---- options ------------------------------------------------------------------------------------------- */

static const cli_opt *find_opt(const cli_opt *opts, const char *name, size_t len) {
    for (const cli_opt *q = opts; q->name; q++)
        if (strlen(q->name) == len && strncmp(q->name, name, len) == 0) return q;
    return NULL;
}

/* Edit distance of two short strings (0..32 characters; longer ones count as far apart). */
static int distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 32 || lb > 32) return 99;
    int row[33];
    for (size_t j = 0; j <= lb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            diag = up;
            row[j] = best;
        }
    }
    return row[lb];
}

static int unknown_option(const char *a, const cli_opt *opts) {
    char name[64];
    snprintf(name, sizeof name, "%.*s", (int)strcspn(a, "="), a);
    const cli_opt *near = NULL;
    int best = 3;   /* suggest only names at most two edits away */
    for (const cli_opt *q = opts; q->name; q++) {
        int d = distance(name, q->name);
        if (d < best) best = d, near = q;
    }
    if (near) return cli_usage_error("unknown option %s (did you mean %s?)", name, near->name);
    return cli_usage_error("unknown option %s", name);
}

static int bad_value(const cli_opt *o, const char *v) {
    switch (o->kind) {
    case OPT_STR: return cli_usage_error("%s: needs a non-empty value", o->name);
    case OPT_U64:
        return cli_usage_error("%s: expected a whole number from 0 to %llu, got \"%s\"", o->name, ULLONG_MAX, v);
    case OPT_INT:
    case OPT_LONG:
        return cli_usage_error("%s: expected a whole number from %.0f to %.0f, got \"%s\"", o->name, o->lo, o->hi, v);
    default:
        if (o->lo > 0 && o->lo <= 1e-6)   /* a tiny lower bound stands for "positive" */
            return cli_usage_error("%s: expected a number above 0 and at most %g, got \"%s\"", o->name, o->hi, v);
        return cli_usage_error("%s: expected a number from %g to %g, got \"%s\"", o->name, o->lo, o->hi, v);
    }
}

int cli_parse(const char *cmd, int argc, char **argv, const cli_opt *opts, const char **pos, int maxpos, int *npos,
              const char *usage) {
    cli_set_command(cmd, usage);
    enum { MAX_OPTS = 128 };
    unsigned char seen[MAX_OPTS] = {0};
    int nopts = 0;
    while (opts[nopts].name) nopts++;
    DF_ASSERT(nopts <= MAX_OPTS);
    int rc = 0, only_positional = 0;
    *npos = 0;
    for (int i = 0; i < argc && !rc; i++) {
        const char *a = argv[i];
        if (only_positional || a[0] != '-' || !a[1]) {
            if (*npos >= maxpos) {
                rc = maxpos ? cli_usage_error("unexpected argument \"%s\" (expected %d)", a, maxpos)
                            : cli_usage_error("unexpected argument \"%s\"", a);
                break;
            }
            pos[(*npos)++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_positional = 1;
            continue;
        }
        const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
        const cli_opt *o = find_opt(opts, a, eq ? (size_t)(eq - a) : strlen(a));
        if (!o) {
            rc = unknown_option(a, opts);
            break;
        }
        if (seen[o - opts]++) {
            rc = cli_usage_error("%s given twice", o->name);
            break;
        }
        if (o->kind == OPT_FLAG) {
            if (eq) rc = cli_usage_error("%s takes no value", o->name);
            else *(int *)o->dst = 1;
            continue;
        }
        const char *v;
        if (eq) {
            v = eq + 1;
        } else if (i + 1 >= argc) {
            rc = cli_usage_error("%s needs a value", o->name);
            break;
        } else {
            v = argv[++i];
            /* "--out --n 4": the value is missing, not "--n" */
            if (strncmp(v, "--", 2) == 0 && find_opt(opts, v, strcspn(v, "="))) {
                rc = cli_usage_error("%s needs a value (got the option %s)", o->name, v);
                break;
            }
        }
        char *end;
        errno = 0;
        switch (o->kind) {
        case OPT_STR:
            if (!*v) rc = bad_value(o, v);
            else *(const char **)o->dst = v;
            break;
        case OPT_INT:
        case OPT_LONG: {
            long long x = strtoll(v, &end, 10);
            if (!*v || isspace((unsigned char)*v) || *end || errno || x < o->lo || x > o->hi) rc = bad_value(o, v);
            else if (o->kind == OPT_INT) *(int *)o->dst = (int)x;
            else *(long *)o->dst = (long)x;
            break;
        }
        case OPT_U64: {
            unsigned long long x = strtoull(v, &end, 10);
            if (!isdigit((unsigned char)*v) || *end || errno) rc = bad_value(o, v);
            else *(uint64_t *)o->dst = x;
            break;
        }
        case OPT_DOUBLE: {
            double x = strtod(v, &end);
            if (!*v || isspace((unsigned char)*v) || *end || errno || !isfinite(x) || x < o->lo || x > o->hi)
                rc = bad_value(o, v);
            else *(double *)o->dst = x;
            break;
        }
        case OPT_FLAG:
            break;
        }
    }
    return rc;
}

int cli_given(int argc, char **argv, const char *name) {
    size_t n = strlen(name);
    for (int i = 0; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (strncmp(argv[i], name, n) == 0 && (argv[i][n] == 0 || argv[i][n] == '=')) return 1;
    return 0;
}

int cli_parse_list(const char *cmd, const char *opt, const char *text, int lo, int hi, int *out, int cap, int *n) {
    (void)cmd;
    *n = 0;
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
        if (*n >= cap) return cli_usage_error("%s: at most %d numbers, got \"%s\"", opt, cap, text);
        out[(*n)++] = (int)v;
        if (!s[len]) return 0;
        s += len + 1;
    }
}

/* ---- paths ----------------------------------------------------------------------------------------------- */

/* "what path" for messages: "--mask m.png", or the path alone. */
static const char *sep(const char *what) { return *what ? " " : ""; }

int cli_check_input(const char *what, const char *path, int want_dir) {
    struct stat sb;
    if (stat(path, &sb) != 0) return cli_die("%s%s%s: %s", what, sep(what), path, strerror(errno));
    if (want_dir && !S_ISDIR(sb.st_mode)) return cli_die("%s%s%s: not a directory", what, sep(what), path);
    if (!want_dir && S_ISDIR(sb.st_mode)) return cli_die("%s%s%s: is a directory, not a file", what, sep(what), path);
    if (access(path, R_OK) != 0) return cli_die("%s%s%s: cannot read: %s", what, sep(what), path, strerror(errno));
    return 0;
}

int cli_check_data(const char *what, const char *path) {
    struct stat sb;
    if (strcmp(path, "fashion-mnist") == 0 || strcmp(path, "fashion-mnist:test") == 0) return 0;
    return cli_check_input(what, path, stat(path, &sb) == 0 && S_ISDIR(sb.st_mode));
}

/* The directory `path` goes in, into buf: "a/b/c" -> "a/b", "c" and "c/" -> ".", "/c" -> "/". */
static void parent_of(const char *path, char *buf, size_t cap) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;   /* "dir/" names dir */
    while (n > 0 && path[n - 1] != '/') n--;
    while (n > 1 && path[n - 1] == '/') n--;
    if (n == 0) snprintf(buf, cap, ".");
    else snprintf(buf, cap, "%.*s", (int)n, path);
}

int cli_check_output(const char *what, const char *path, int want_dir) {
    struct stat sb;
    if (stat(path, &sb) == 0) {
        if (!want_dir && S_ISDIR(sb.st_mode)) return cli_die("%s%s%s: is a directory", what, sep(what), path);
        if (want_dir && !S_ISDIR(sb.st_mode))
            return cli_die("%s%s%s: exists and is not a directory", what, sep(what), path);
    }
    if (want_dir) return 0;   /* made with its parents */
    char dir[4096];
    parent_of(path, dir, sizeof dir);
    if (stat(dir, &sb) != 0)
        return cli_die("%s%s%s: cannot write in %s: %s", what, sep(what), path, dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) return cli_die("%s%s%s: %s is not a directory", what, sep(what), path, dir);
    if (access(dir, W_OK | X_OK) != 0)
        return cli_die("%s%s%s: cannot write in %s: %s", what, sep(what), path, dir, strerror(errno));
    return 0;
}

/* The last component of path: "a/b.png" -> "b.png", "dir/" -> "dir/". */
static const char *base_of(const char *path) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    while (n > 0 && path[n - 1] != '/') n--;
    return path + n;
}

int cli_same_file(const char *a, const char *b) {
    if (strcmp(a, b) == 0) return 1;
    struct stat sa, sb;
    if (stat(a, &sa) == 0 && stat(b, &sb) == 0) return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    /* not both there yet: the same name in the same directory ("./x.png" and "x.png") */
    const char *ba = base_of(a), *bb = base_of(b);
    size_t la = strcspn(ba, "/"), lb = strcspn(bb, "/");
    if (la != lb || strncmp(ba, bb, la) != 0) return 0;
    char da[4096], db[4096];
    parent_of(a, da, sizeof da);
    parent_of(b, db, sizeof db);
    return stat(da, &sa) == 0 && stat(db, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int cli_has_suffix(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcasecmp(s + a - b, suffix) == 0;
}

const char *cli_default_features(char *buf, size_t cap) {
    const char *rel = "models/fmnist-features";
    struct stat sb;
    if (stat(rel, &sb) == 0 && S_ISDIR(sb.st_mode)) return rel;
    char exe[4096];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {   /* beside the program: build/diffuse -> models/ */
        exe[len] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        snprintf(buf, cap, "%s/../%s", exe, rel);
        if (stat(buf, &sb) == 0 && S_ISDIR(sb.st_mode)) return buf;
    }
    return rel;   /* missing: the error names it */
}
