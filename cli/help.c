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

/* An option's help with its choices and default: "help: a, b (default: X)". */
static void option_text(const cli_opt *o, char *text, size_t cap) {
    char def[64];
    size_t n = (size_t)snprintf(text, cap, "%s", o->help ? o->help : "");
    if (o->choices)
        for (int i = 0; i < o->choices->count && n < cap; i++)
            n += (size_t)snprintf(text + n, cap - n, "%s%s", i ? ", " : ": ", o->choices->name(i));
    const char *d = default_text(o, def, sizeof def);
    if (d && n < cap) snprintf(text + n, cap - n, " (default:" NBSP "%s)", d);
}

/* "  --name META    help: choices (default: X)", wrapped. */
static void print_option(FILE *f, const cli_opt *o) {
    char left[128], text[2048];
    /* a short alias comes first ("-o, --out FILE"), a long one after the name ("--guidance, --cfg-scale W") */
    const int lead = o->alias && strncmp(o->alias, "--", 2) != 0, trail = o->alias && !lead;
    snprintf(left, sizeof left, "  %s%s%s%s%s%s%s", lead ? o->alias : "", lead ? ", " : "", o->name,
             trail ? ", " : "", trail ? o->alias : "", o->meta ? " " : "", o->meta ? o->meta : "");
    option_text(o, text, sizeof text);
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

/* ---- the man page: the same texts as roff ---------------------------------------------------------------- */

/* Set by the command's hidden --man for the whole process: every --help then prints its part of the page. */
static int as_roff;
void cli_help_as_roff(int on) { as_roff = on; }

/* Up to `len` bytes of s as roff text: backslashes and hyphens escaped, a line starting with '.' or '\''
 * (a request to roff) guarded, and UTF-8 ("Fréchet") as \[uXXXX] so that the page is ASCII. */
static void roff_text(FILE *f, const char *s, size_t len) {
    for (size_t i = 0; i < len && s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((i == 0 || s[i - 1] == '\n') && (c == '.' || c == '\'')) fputs("\\&", f);
        if (c >= 0xc0) {   /* a lead byte and its continuation bytes */
            int more = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : 1;
            unsigned long cp = c & (0x3fu >> more);
            while (more-- && i + 1 < len && ((unsigned char)s[i + 1] & 0xc0) == 0x80)
                cp = cp << 6 | ((unsigned char)s[++i] & 0x3f);
            fprintf(f, "\\[u%04lX]", cp);
        } else if (c >= 0x80) fputc('?', f);   /* a stray continuation byte */
        else if (c == '\\') fputs("\\e", f);
        else if (c == '-') fputs("\\-", f);
        else fputc(c == NBSP[0] ? ' ' : c, f);
    }
}
static void roff_line(FILE *f, const char *s) {
    roff_text(f, s, strlen(s));
    fputc('\n', f);
}
/* A text block as a paragraph, its blank lines kept as paragraph breaks and its indented lines as is. */
static void roff_paragraph(FILE *f, const char *text) {
    if (!text) return;
    fputs(".PP\n", f);
    for (const char *s = text; *s;) {
        size_t len = strcspn(s, "\n");
        if (len == 0) fputs(".PP\n", f);
        else {
            if (s[0] == ' ') fputs(".br\n", f);
            roff_text(f, s, len);
            fputc('\n', f);
        }
        s += len + (s[len] == '\n');
    }
}
/* Each line of a usage without its "usage: ". */
static void roff_usage(FILE *f, const char *usage) {
    for (const char *s = usage; *s;) {
        size_t len = strcspn(s, "\n");
        const char *t = s;
        while (*t == ' ' && t < s + len) t++;
        if (strncmp(t, "usage: ", 7) == 0) t += 7;
        if (t < s + len) {
            roff_text(f, t, len - (size_t)(t - s));
            fputs("\n.br\n", f);
        }
        s += len + (s[len] == '\n');
    }
}
static void roff_options(FILE *f, const cli_opt *opts) {
    char text[2048];
    for (const cli_opt *o = opts; o && o->name; o++) {
        if (o->kind == CLI_SECTION) {
            size_t len = strlen(o->help);
            fputs(".SS \"", f);
            roff_text(f, o->help, len && o->help[len - 1] == ':' ? len - 1 : len);
            fputs("\"\n", f);
            continue;
        }
        fputs(".TP\n", f);
        if (o->alias) {
            fputs("\\fB", f);
            roff_text(f, o->alias, strlen(o->alias));
            fputs("\\fR, ", f);
        }
        fputs("\\fB", f);
        roff_text(f, o->name, strlen(o->name));
        fputs("\\fR", f);
        if (o->meta) {
            fputs(" \\fI", f);
            roff_text(f, o->meta, strlen(o->meta));
            fputs("\\fR", f);
        }
        fputc('\n', f);
        option_text(o, text, sizeof text);
        roff_line(f, text);
    }
}

/* The top level opens the page (title, name, synopsis, the overview); each command is a section of it. */
static void roff_help(FILE *f, const cli_command *cmd, const cli_opt *opts) {
    if (!cmd->name) {
        fputs(".TH DIFFUSE 1 \"\" \"diffuse " DIFFUSE_VERSION "\" \"User Commands\"\n.SH NAME\ndiffuse \\- ", f);
        const char *about = cmd->about ? cmd->about : "";
        roff_text(f, about, strcspn(about, "."));
        fputs("\n.SH SYNOPSIS\n", f);
        roff_usage(f, cmd->usage);
        fputs(".SH DESCRIPTION\n", f);
        roff_paragraph(f, cmd->about);
        for (int i = 0; cmd->commands && cmd->commands[i]; i++) {
            fprintf(f, ".TP\n\\fB");
            roff_text(f, cmd->commands[i]->name, strlen(cmd->commands[i]->name));
            fputs("\\fR\n", f);
            roff_line(f, cmd->commands[i]->summary);
        }
        roff_options(f, opts);
        roff_paragraph(f, cmd->epilog);
        return;
    }
    char title[64];
    size_t n = 0;
    for (const char *s = cmd->name; *s && n + 1 < sizeof title; s++) title[n++] = *s >= 'a' && *s <= 'z' ? *s - 'a' + 'A' : *s;
    fputs(".SH \"DIFFUSE ", f);
    roff_text(f, title, n);
    fputs("\"\n.B\n", f);
    roff_usage(f, cmd->usage);
    roff_paragraph(f, cmd->about);
    roff_options(f, opts);
    roff_paragraph(f, cmd->epilog);
}

void cli_print_help(FILE *f, const cli_command *cmd, const cli_opt *opts) {
    if (as_roff) {
        roff_help(f, cmd, opts);
        return;
    }
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
