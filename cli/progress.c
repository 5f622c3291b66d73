/* Progress display for long commands: a bar with rate and ETA redrawn in place on a terminal, or a plain
 * line every few seconds when stderr is a file or pipe. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <math.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cli_format_duration(double sec, char *out, size_t cap) {
    if (!(sec >= 0) || isinf(sec)) {
        snprintf(out, cap, "--:--");
        return;
    }
    long s = (long)(sec + 0.5);
    if (s >= 3600) snprintf(out, cap, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    else snprintf(out, cap, "%02ld:%02ld", s / 60, s % 60);
}

void cli_progress_init(cli_progress *p, const char *label) {
    memset(p, 0, sizeof *p);
    p->label = label;
    p->tty = isatty(2);
    p->start = mono();
}

/* The bar: count ("3/10"), then a bar and the ETA when fraction (0..1) is known (>= 0). */
static void draw(cli_progress *p, const char *count, double fraction, int final, double eta, const char *fmt_extra) {
    double now = mono();
    if (!p->tty && !final && now - p->last < 5.0 && p->last > 0) return;   /* files: a line every 5 s */
    if (p->tty && !final && now - p->last < 0.1) return;
    p->last = now;
    char bar[41], el[32], et[32];
    int width = 24, fill = fraction >= 0 ? (int)(width * fmin(fraction, 1.0)) : 0;
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    cli_format_duration(now - p->start, el, sizeof el);
    cli_format_duration(eta, et, sizeof et);
    if (fraction >= 0)
        fprintf(stderr, "%s%s %s [%s] %3.0f%% %s elapsed %s ETA %s%s", p->tty ? "\r\033[K" : "", p->label, count, bar,
                100 * fmin(fraction, 1.0), fmt_extra ? fmt_extra : "", el, et, p->tty ? "" : "\n");
    else
        fprintf(stderr, "%s%s %s %s elapsed %s%s", p->tty ? "\r\033[K" : "", p->label, count, fmt_extra ? fmt_extra : "",
                el, p->tty ? "" : "\n");
    fflush(stderr);
}

void cli_progress_draw(cli_progress *p, double done, double total, double eta, const char *fmt_extra) {
    char count[64];
    if (eta < 0 && total > 0 && done > 0) eta = (mono() - p->start) * (total - done) / done;
    if (total > 0) snprintf(count, sizeof count, "%.0f/%.0f", done, total);
    else snprintf(count, sizeof count, "%.0f", done);
    draw(p, count, total > 0 ? done / total : -1, total > 0 && done >= total, eta, fmt_extra);
}

void cli_progress_draw_part(cli_progress *p, const char *count, double fraction, double eta, const char *extra) {
    draw(p, count, fraction, fraction >= 1, eta, extra);
}

void cli_progress_line(cli_progress *p, const char *text) {
    fprintf(stderr, "%s%s\n", p->tty ? "\r\033[K" : "", text);
    p->last = 0;
}

void cli_progress_done(cli_progress *p) {
    if (p->tty) fputc('\n', stderr);
}
