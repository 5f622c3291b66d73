/* Option parsing for the commands: a table of --name, kind, destination and range per command, so every
 * command reports unknown options, missing values and out-of-range numbers the same way. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int bad_value(const char *cmd, const cli_opt *o, const char *v) {
    if (o->kind == OPT_STR)
        fprintf(stderr, "diffuse %s: %s: bad value \"%s\"\n", cmd, o->name, v);
    else
        fprintf(stderr, "diffuse %s: %s: expected a number from %g to %g, got \"%s\"\n", cmd, o->name, o->lo, o->hi, v);
    return 2;
}

int cli_parse(const char *cmd, int argc, char **argv, const cli_opt *opts, const char **pos, int maxpos, int *npos,
              const char *usage) {
    *npos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || !a[1]) {
            if (*npos >= maxpos) {
                fprintf(stderr, "diffuse %s: unexpected argument \"%s\"\n%s", cmd, a, usage);
                return 2;
            }
            pos[(*npos)++] = a;
            continue;
        }
        const cli_opt *o = NULL;
        for (const cli_opt *q = opts; q->name; q++)
            if (strcmp(q->name, a) == 0) o = q;
        if (!o) {
            fprintf(stderr, "diffuse %s: unknown option %s\n%s", cmd, a, usage);
            return 2;
        }
        if (o->kind == OPT_FLAG) {
            *(int *)o->dst = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "diffuse %s: %s needs a value\n%s", cmd, a, usage);
            return 2;
        }
        const char *v = argv[++i];
        char *end;
        errno = 0;
        switch (o->kind) {
        case OPT_STR:
            if (!*v) return bad_value(cmd, o, v);
            *(const char **)o->dst = v;
            break;
        case OPT_INT:
        case OPT_LONG: {
            long long x = strtoll(v, &end, 10);
            if (!*v || *end || errno || x < o->lo || x > o->hi) return bad_value(cmd, o, v);
            if (o->kind == OPT_INT) *(int *)o->dst = (int)x;
            else *(long *)o->dst = (long)x;
            break;
        }
        case OPT_U64: {
            unsigned long long x = strtoull(v, &end, 10);
            if (!*v || *end || errno || v[0] == '-') return bad_value(cmd, o, v);
            *(uint64_t *)o->dst = x;
            break;
        }
        case OPT_DOUBLE: {
            double x = strtod(v, &end);
            if (!*v || *end || errno || !isfinite(x) || x < o->lo || x > o->hi) return bad_value(cmd, o, v);
            *(double *)o->dst = x;
            break;
        }
        case OPT_FLAG:
            break;
        }
    }
    return 0;
}

int cli_parse_list(const char *cmd, const char *opt, const char *text, int lo, int hi, int *out, int cap, int *n) {
    *n = 0;
    const char *s = text;
    while (*s) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < lo || v > hi || (*end && *end != ',') || *n >= cap) {
            fprintf(stderr, "diffuse %s: %s: expected up to %d comma-separated numbers from %d to %d, got \"%s\"\n", cmd,
                    opt, cap, lo, hi, text);
            return 2;
        }
        out[(*n)++] = (int)v;
        s = *end ? end + 1 : end;
    }
    if (*n == 0) {
        fprintf(stderr, "diffuse %s: %s: empty list\n", cmd, opt);
        return 2;
    }
    return 0;
}
