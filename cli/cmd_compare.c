/* `diffuse compare`: training runs side by side by the evaluations in their loss.csv (train --eval-every):
 * a table or JSON of FD and KID against steps, images and minutes, and a plot of FD against minutes or images. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int compare_main(int argc, char **argv);

const cli_command cmd_compare = {
    .name = "compare",
    .usage = "usage: diffuse compare RUN [RUN ...] [--out PNG] [--by minutes|images] [--labels a,b,...] [--json]",
    .summary = "compare training runs: FD and KID against training minutes or images seen",
    .about = "Compare training runs by the evaluations in their loss.csv (diffuse train --eval-every N): for each\n"
             "run, a block of its evaluation rows (step, images seen, training minutes, FD, KID) and a line with its\n"
             "final FD. FD is the Fréchet distance of features (Heusel et al. 2017, \"GANs trained by a two time-scale\n"
             "update rule\"), KID the kernel distance (Bińkowski et al. 2018, \"Demystifying MMD GANs\"). A RUN is a\n"
             "run directory or a loss.csv. Training minutes leave evaluation time out, so runs compare at equal cost;\n"
             "--by images compares them at equal data instead. At most 32 runs; colours repeat after 10.",
    .epilog = "example: diffuse compare runs/old runs/new --out compare.png",
    .max_args = CLI_MAX_ARGS,
    .run = compare_main,
};

static const char *axis_name(int i) { return df_compare_axis_name((df_compare_axis)i); }
static const cli_choices axes = {DF_COMPARE_AXIS_COUNT, axis_name, NULL};

/* --labels "a,b,c" into the pieces of buf (a copy of text); returns how many, or -1 for an empty label. */
static int split_labels(char *buf, const char **labels, int cap) {
    int n = 0;
    for (char *s = buf;; n++) {
        char *comma = strchr(s, ',');
        if (comma) *comma = 0;
        if (!*s) return -1;
        if (n < cap) labels[n] = s;
        if (!comma) return n + 1;
        s = comma + 1;
    }
}

/* A number for the table: "-" where there is none. */
static void cell(char *buf, size_t cap, const char *fmt, double v) {
    if (isfinite(v)) snprintf(buf, cap, fmt, v);
    else snprintf(buf, cap, "-");
}

static void print_table(const df_run_evals *ev, int nruns) {
    for (int k = 0; k < nruns; k++) {
        const df_run_evals *r = &ev[k];
        printf("%s%s (%s)\n", k ? "\n" : "", r->label, r->path);
        printf("  %10s %12s %9s %10s %10s\n", "step", "images", "minutes", "FD", "KID");
        for (int i = 0; i < r->n; i++) {
            const df_run_eval *e = &r->rows[i];
            char img[32], min[32], fd[32], kid[32];
            cell(img, sizeof img, "%.0f", e->images), cell(min, sizeof min, "%.2f", e->minutes);
            cell(fd, sizeof fd, "%.4g", e->fd), cell(kid, sizeof kid, "%.5f", e->kid);
            printf("  %10ld %12s %9s %10s %10s\n", e->step, img, min, fd, kid);
        }
        const df_run_eval *last = &r->rows[r->n - 1];
        char min[32];
        cell(min, sizeof min, "%.2f", last->minutes);
        printf("%s: final FD %.4g at step %ld (%s minutes)\n", r->label, last->fd, last->step, min);
    }
}

static void json_num(cJSON *o, const char *key, double v) {
    if (isfinite(v)) cJSON_AddNumberToObject(o, key, v);
    else cJSON_AddNullToObject(o, key);
}

static int print_json(const df_run_evals *ev, int nruns, df_compare_axis by, const char *out) {
    cJSON *j = cJSON_CreateObject(), *runs = cJSON_AddArrayToObject(j, "runs");
    cJSON_AddStringToObject(j, "by", df_compare_axis_name(by));
    if (out) cJSON_AddStringToObject(j, "plot", out);
    else cJSON_AddNullToObject(j, "plot");
    for (int k = 0; k < nruns; k++) {
        cJSON *r = cJSON_CreateObject(), *rows = cJSON_CreateArray();
        cJSON_AddStringToObject(r, "label", ev[k].label);
        cJSON_AddStringToObject(r, "path", ev[k].path);
        for (int i = 0; i < ev[k].n; i++) {
            const df_run_eval *e = &ev[k].rows[i];
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "step", (double)e->step);
            json_num(o, "images", e->images), json_num(o, "minutes", e->minutes);
            json_num(o, "fd", e->fd), json_num(o, "kid", e->kid);
            cJSON_AddItemToArray(rows, o);
        }
        cJSON_AddItemToObject(r, "evals", rows);
        json_num(r, "final_fd", ev[k].rows[ev[k].n - 1].fd);
        cJSON_AddItemToArray(runs, r);
    }
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    if (!text) return cli_die("out of memory");
    printf("%s\n", text);
    free(text);
    return 0;
}

static int compare_main(int argc, char **argv) {
    df_compare_params p;
    df_compare_params_default(&p);
    const char *out = NULL, *labels_text = NULL;
    int json = 0, no_kid = 0;
    const cli_opt opts[] = {
        OPT_STR("--out", &out, .meta = "PNG", .def = "none: no picture",
                .help = "write the plot: FD (log scale) against --by, a line per run, KID in a panel below"),
        OPT_ENUM("--by", &p.by, &axes, .meta = "AXIS", .help = "the x axis: training minutes or images seen"),
        OPT_STR("--labels", &labels_text, .meta = "a,b,...", .def = "each run directory's last path component",
                .help = "the runs' names in the table and the legend, one per run"),
        OPT_FLAG("--no-kid", &no_kid, .help = "leave the KID panel out of the plot"),
        OPT_FLAG("--json", &json, .help = "print one JSON object instead of the table"),
        CLI_END,
    };
    cli_args a;
    int rc = cli_parse(&cmd_compare, opts, argc, argv, &a);
    if (rc) return cli_exit(rc);
    if (a.npos < 1) return cli_usage_error("which runs? give one or more run directories or loss.csv files");
    const char *labels[CLI_MAX_ARGS];
    char labels_buf[4096];
    if (labels_text) {
        if (strlen(labels_text) >= sizeof labels_buf) return cli_usage_error("--labels: too long");
        strcpy(labels_buf, labels_text);
        int n = split_labels(labels_buf, labels, CLI_MAX_ARGS);
        if (n < 0) return cli_usage_error("--labels %s: an empty label", labels_text);
        if (n != a.npos) return cli_usage_error("--labels gives %d label%s for %d run%s", n, n == 1 ? "" : "s", a.npos,
                                                a.npos == 1 ? "" : "s");
        p.labels = labels;
    }
    if (out && !cli_has_suffix(out, ".png")) return cli_usage_error("--out %s: name it .png", out);
    if (out && cli_check_output("--out", out, 0)) return 1;
    p.kid = !no_kid;
    df_run_evals ev[CLI_MAX_ARGS];
    df_status st = df_compare_runs(a.pos, a.npos, &p, out, ev);
    if (st) return cli_fail(st);
    rc = json ? print_json(ev, a.npos, p.by, out) : (print_table(ev, a.npos), 0);
    for (int k = 0; k < a.npos; k++) df_run_evals_free(&ev[k]);
    if (!rc && out) fprintf(stderr, "diffuse compare: wrote %s\n", out);
    return rc;
}
