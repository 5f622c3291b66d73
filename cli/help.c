/* --help and the usage line, printed from a command's description and its option table: each option's
 * name, value, help and default are written once, in the table. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <string.h>

enum {
    HELP_WIDTH = 106,   /* wrap help text before this column */
    HELP_COLUMN = 25,   /* where an option's help starts */
};
#define NBSP "\x1f"     /* a space that print_wrapped does not break at ("default: 64") */

void cli_print_usage_line(FILE *f, const cli_command *cmd) {
    size_t len = strlen(cmd->usage);
    while (len && cmd->usage[len - 1] == '\n') len--;
    if (cmd->name) {
        fprintf(f, "%.*s  (diffuse %s --help for all options)\n", (int)len, cmd->usage, cmd->name);
        return;
    }
    fprintf(f, "%.*s  (commands:", (int)len, cmd->usage);
    for (int i = 0; cmd->commands && cmd->commands[i]; i++) fprintf(f, "%s %s", i ? "," : "", cmd->commands[i]->name);
    fprintf(f, "; diffuse --help for more)\n");
}

/* The default --help shows for o, into buf; NULL for none. */
static const char *default_text(const cli_opt *o, char *buf, size_t cap) {
    if (o->def) return o->def[0] ? o->def : NULL;
    int k;
    switch (o->kind) {
    case CLI_INT: snprintf(buf, cap, "%d", *(const int *)o->dst); return buf;
    case CLI_LONG: snprintf(buf, cap, "%ld", *(const long *)o->dst); return buf;
    case CLI_DOUBLE: snprintf(buf, cap, "%g", *(const double *)o->dst); return buf;
    case CLI_U64: snprintf(buf, cap, "%llu", (unsigned long long)*(const uint64_t *)o->dst); return buf;
    case CLI_STR: return *(const char *const *)o->dst;
    case CLI_ENUM:
        memcpy(&k, o->dst, sizeof k);
        return k >= 0 && k < o->choices->count ? o->choices->name(k) : NULL;
    default: return NULL;
    }
}

/* text from column `col` (the cursor's), wrapped at spaces before HELP_WIDTH onto lines indented to `indent`. */
static void print_wrapped(FILE *f, int col, int indent, const char *text) {
    const char *s = text;
    while (*s) {
        int room = HELP_WIDTH - col, len = (int)strlen(s);
        if (len > room) {   /* break at the last space that fits, or the first one after */
            int cut = room;
            while (cut > 0 && s[cut] != ' ') cut--;
            if (cut == 0) cut = (int)strcspn(s, " ");
            len = cut;
        }
        for (int i = 0; i < len; i++) fputc(s[i] == NBSP[0] ? ' ' : s[i], f);
        fputc('\n', f);
        s += len;
        while (*s == ' ') s++;
        if (*s) fprintf(f, "%*s", indent, "");
        col = indent;
    }
}

/* "  --name META    help: choices (default: X)", wrapped. */
static void print_option(FILE *f, const cli_opt *o) {
    char left[128], text[2048], def[64];
    /* a short alias comes first ("-o, --out FILE"), a long one after the name ("--guidance, --cfg-scale W") */
    const int lead = o->alias && strncmp(o->alias, "--", 2) != 0, trail = o->alias && !lead;
    snprintf(left, sizeof left, "  %s%s%s%s%s%s%s", lead ? o->alias : "", lead ? ", " : "", o->name,
             trail ? ", " : "", trail ? o->alias : "", o->meta ? " " : "", o->meta ? o->meta : "");
    size_t n = (size_t)snprintf(text, sizeof text, "%s", o->help ? o->help : "");
    if (o->choices)
        for (int i = 0; i < o->choices->count && n < sizeof text; i++)
            n += (size_t)snprintf(text + n, sizeof text - n, "%s%s", i ? ", " : ": ", o->choices->name(i));
    const char *d = default_text(o, def, sizeof def);
    if (d && n < sizeof text) snprintf(text + n, sizeof text - n, " (default:" NBSP "%s)", d);
    int col = (int)strlen(left);
    fputs(left, f);
    if (col + 1 > HELP_COLUMN) {   /* a long name: the help on the next line */
        fputc('\n', f);
        col = 0;
    }
    fprintf(f, "%*s", HELP_COLUMN - col, "");
    print_wrapped(f, HELP_COLUMN, HELP_COLUMN, text);
}

static void print_options(FILE *f, const cli_opt *opts) {
    for (const cli_opt *o = opts; o->name; o++) {
        if (o->kind == CLI_SECTION) fprintf(f, "%s%s\n", o == opts ? "" : "\n", o->help);
        else print_option(f, o);
    }
}

/* A block of text after a blank line, ending with a newline. */
static void paragraph(FILE *f, const char *text) {
    if (!text) return;
    size_t len = strlen(text);
    fprintf(f, "\n%s%s", text, len && text[len - 1] == '\n' ? "" : "\n");
}

void cli_print_help(FILE *f, const cli_command *cmd, const cli_opt *opts) {
    fputs(cmd->usage, f);
    if (cmd->usage[0] && cmd->usage[strlen(cmd->usage) - 1] != '\n') fputc('\n', f);
    paragraph(f, cmd->about);
    if (cmd->commands) {
        fprintf(f, "\ncommands:\n");
        for (int i = 0; cmd->commands[i]; i++) fprintf(f, "  %-17s %s\n", cmd->commands[i]->name, cmd->commands[i]->summary);
    }
    if (opts && opts[0].name) {
        fputc('\n', f);
        print_options(f, opts);
    }
    paragraph(f, cmd->epilog);
}
