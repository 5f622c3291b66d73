/* Line charts, the training-progress picture and training runs compared by their evaluations, drawn with
 * cairo's image surface and its toy text API (DejaVu Sans), encoded as PNG in memory and written with
 * df_write_file_atomic. */
#define _DEFAULT_SOURCE   /* realpath */
#include "plot.h"
#include "internal.h"

#include <cairo.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define FONT "DejaVu Sans"
static const double PI = 3.14159265358979323846;

/* Tableau 10 (matplotlib's default cycle): ten hues that stay apart for the common kinds of colour
 * blindness and on gray print; the order is the one readers of matplotlib plots already know. */
static const unsigned char palette[DF_PLOT_PALETTE_SIZE][3] = {
    {31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {214, 39, 40},   {148, 103, 189},
    {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207},
};

void df_plot_color(int i, unsigned char rgb[3]) {
    i %= DF_PLOT_PALETTE_SIZE;
    if (i < 0) i += DF_PLOT_PALETTE_SIZE;
    memcpy(rgb, palette[i], 3);
}

/* ---- drawing helpers ----------------------------------------------------------------------------------- */

/* The picture's grays, from the frame to the lightest grid line. */
enum { C_TEXT = 0x222222, C_TICKTEXT = 0x444444, C_FRAME = 0x777777, C_GRID = 0xe3e3e3, C_MINOR = 0xf1f1f1,
       C_NOTE = 0x888888 };

static void set_hex(cairo_t *cr, unsigned hex) {
    cairo_set_source_rgb(cr, ((hex >> 16) & 255) / 255.0, ((hex >> 8) & 255) / 255.0, (hex & 255) / 255.0);
}

static void set_palette(cairo_t *cr, int color, double alpha) {
    unsigned char c[3];
    df_plot_color(color, c);
    cairo_set_source_rgba(cr, c[0] / 255.0, c[1] / 255.0, c[2] / 255.0, alpha);
}

static void set_font(cairo_t *cr, double size, int bold) {
    cairo_select_font_face(cr, FONT, CAIRO_FONT_SLANT_NORMAL, bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, size);
}

static double text_width(cairo_t *cr, const char *s) {
    cairo_text_extents_t te;
    cairo_text_extents(cr, s, &te);
    return te.x_advance;
}

/* The height of a line of text in the current font (ascent + descent, the same for every string, so
 * labels of one axis line up whatever letters they hold). */
static double text_height(cairo_t *cr) {
    cairo_font_extents_t fe;
    cairo_font_extents(cr, &fe);
    return fe.ascent + fe.descent;
}

/* Draw s so that the point (ax, ay) of its box (0 left/top, 0.5 centre, 1 right/bottom) is at (x, y). */
static void text_at(cairo_t *cr, const char *s, double x, double y, double ax, double ay) {
    cairo_font_extents_t fe;
    cairo_font_extents(cr, &fe);
    cairo_move_to(cr, x - ax * text_width(cr, s), y - ay * (fe.ascent + fe.descent) + fe.ascent);
    cairo_show_text(cr, s);
}

/* The same, turned a quarter to the left (vertical axis labels read bottom to top). */
static void text_up(cairo_t *cr, const char *s, double x, double y, double ax, double ay) {
    cairo_save(cr);
    cairo_translate(cr, x, y);
    cairo_rotate(cr, -PI / 2);
    text_at(cr, s, 0, 0, ax, ay);
    cairo_restore(cr);
}

/* A 1-pixel line at x or y = v lands on whole pixels when drawn through pixel centres. */
static double crisp(double v) { return floor(v) + 0.5; }

/* ---- axes and ticks ------------------------------------------------------------------------------------- */

#define MAX_TICKS 48

typedef struct {
    int    log, integer;         /* integer: counts (steps, images), so no fractional ticks */
    double lo, hi;                /* the shown range; log10 of it on a log axis */
    int    nt, nm;
    double tick[MAX_TICKS];       /* labelled ticks and their grid lines (data values) */
    double minor[MAX_TICKS];      /* unlabelled ticks with a lighter grid line (log axes) */
    char   label[MAX_TICKS][20];
} axis;

static int axis_usable(const axis *a, double v) { return isfinite(v) && (!a->log || v > 0); }

static void axis_begin(axis *a, int log) {
    memset(a, 0, sizeof *a);
    a->log = log, a->lo = INFINITY, a->hi = -INFINITY;
}

static void axis_add(axis *a, const double *v, int n) {
    for (int i = 0; i < n; i++)
        if (axis_usable(a, v[i])) {
            double t = a->log ? log10(v[i]) : v[i];
            a->lo = fmin(a->lo, t), a->hi = fmax(a->hi, t);
        }
}

/* Close the range over what was added, with `pad` of it on each side so lines keep off the frame. */
static void axis_end(axis *a, double pad) {
    if (!(a->lo <= a->hi)) {   /* nothing to show */
        a->lo = 0, a->hi = 1;
        return;
    }
    double d = a->hi - a->lo;
    if (d <= 1e-9 * fmax(1.0, fabs(a->lo))) d = a->log ? 0.6 : a->lo != 0 ? 0.2 * fabs(a->lo) : 2, pad = 0.5;
    a->lo -= pad * d, a->hi += pad * d;
}

/* Where v falls on the axis, 0 at the low end and 1 at the high end. */
static double axis_frac(const axis *a, double v) { return ((a->log ? log10(v) : v) - a->lo) / (a->hi - a->lo); }

/* The 1-2-5 step at or above raw. */
static double nice_step(double raw) {
    double p = pow(10, floor(log10(raw))), f = raw / p;
    return (f <= 1.0001 ? 1 : f <= 2.0001 ? 2 : f <= 5.0001 ? 5 : 10) * p;
}

/* A tick value as a short label. Thousands and millions become k and M, so counts of images stay short
 * ("40k", "1.2M"); decimals are as many as the step needs. unit and step are those of the whole axis. */
static void format_tick(char *buf, size_t cap, double v, double unit, double step) {
    if (fabs(v) < 1e-9 * step) {   /* "0", not "-0" or "0k" */
        snprintf(buf, cap, "0");
        return;
    }
    if (fabs(v) / unit >= 1e5) {   /* beyond millions: "3e+09", not ten digits */
        snprintf(buf, cap, "%.2g", v);
        return;
    }
    double s = step / unit;
    int dec = s >= 0.999 ? 0 : (int)ceil(-log10(s) - 1e-6);
    if (dec > 9) dec = 9;
    snprintf(buf, cap, "%.*f%s", dec, v / unit, unit == 1e6 ? "M" : unit == 1e3 ? "k" : "");
}

static double count_unit(double maxabs) { return maxabs >= 1e6 ? 1e6 : maxabs >= 1e4 ? 1e3 : 1; }

/* One tick value on a log axis, a power of ten times m (1 .. 9): very small and very large values as
 * "2e-5" and "1e9". */
static void format_log_tick(char *buf, size_t cap, double v) {
    int k = (int)floor(log10(v) + 1e-9);
    if (k < -4 || k > 8) {
        snprintf(buf, cap, "%.0fe%d", v / pow(10, k), k);
        return;
    }
    double unit = count_unit(v);
    format_tick(buf, cap, v, unit, pow(10, k));
}

/* Linear ticks at multiples of step inside [lo, hi] (values). */
static void ticks_linear(axis *a, double lo, double hi, double step) {
    double unit = count_unit(fmax(fabs(lo), fabs(hi)));
    a->nt = 0;
    for (double k = ceil(lo / step - 1e-9); k * step <= hi + 1e-9 * step && a->nt < MAX_TICKS; k++) {
        a->tick[a->nt] = k * step;
        format_tick(a->label[a->nt], sizeof a->label[0], k * step, unit, step);
        a->nt++;
    }
}

/* Log ticks at m * 10^k for the mantissas in ms (e.g. {1, 2, 5}), every `every` decades. */
static void ticks_log(axis *a, const int *ms, int nms, int every) {
    a->nt = 0;
    for (int k = (int)floor(a->lo) - 1; k <= (int)ceil(a->hi) && a->nt < MAX_TICKS; k++) {
        if (k % every) continue;
        for (int j = 0; j < nms && a->nt < MAX_TICKS; j++) {
            double v = ms[j] * pow(10, k), t = log10(v);
            if (t < a->lo - 1e-9 || t > a->hi + 1e-9) continue;
            a->tick[a->nt] = v;
            format_log_tick(a->label[a->nt], sizeof a->label[0], v);
            a->nt++;
        }
    }
}

/* Do the labels fit along len pixels: on a horizontal axis side by side with a gap, on a vertical one
 * a line and a half apart? (The current font is the tick font.) */
static int ticks_fit(cairo_t *cr, const axis *a, double len, int horizontal) {
    double gap = 0.9 * text_height(cr), prev = 0, prev_w = 0;
    for (int i = 0; i < a->nt; i++) {
        double pos = axis_frac(a, a->tick[i]) * len, w = horizontal ? text_width(cr, a->label[i]) : text_height(cr);
        double need = horizontal ? (w + prev_w) / 2 + gap : 1.5 * w;
        if (i && pos - prev < need) return 0;
        prev = pos, prev_w = w;
    }
    return 1;
}

/* Choose the ticks of an axis len pixels long: as many as fit, at most one per `spacing` pixels. Linear
 * axes step by 1-2-5; log axes take the densest of 1-2-5 times each power of ten, every decade, every
 * 2nd, 3rd, 5th .. decade that fits, and fall back to linear steps when the range is too short for two
 * 1-2-5 ticks (FD from 30 to 60, say). */
static void axis_ticks(cairo_t *cr, axis *a, double len, int horizontal) {
    double spacing = horizontal ? 80 : 34, most = fmax(2, len / spacing);
    a->nm = 0;
    if (a->log) {
        static const int one25[] = {1, 2, 5}, one[] = {1};
        static const int every[] = {1, 2, 3, 5, 10, 20, 50, 100};
        ticks_log(a, one25, 3, 1);
        if (a->nt >= 2) {
            int fits = a->nt <= most && ticks_fit(cr, a, len, horizontal);
            for (int e = 0; !fits && e < DF_COUNTOF(every); e++)
                ticks_log(a, one, 1, every[e]), fits = a->nt <= most && ticks_fit(cr, a, len, horizontal);
            /* light grid lines at 2 .. 9 times each power of ten when only powers of ten are labelled and
             * there are few decades */
            if (a->nt >= 2 && a->tick[1] / a->tick[0] > 9.5 && a->hi - a->lo <= 8) {
                for (int k = (int)floor(a->lo); k <= (int)ceil(a->hi); k++)
                    for (int m = 2; m <= 9 && a->nm < MAX_TICKS; m++) {
                        double t = log10(m * pow(10, k));
                        if (t >= a->lo && t <= a->hi) a->minor[a->nm++] = m * pow(10, k);
                    }
            }
            if (a->nt >= 2) return;
        }
    }
    double lo = a->log ? pow(10, a->lo) : a->lo, hi = a->log ? pow(10, a->hi) : a->hi;
    double step = nice_step((hi - lo) / most);
    if (a->integer && step < 1) step = 1;
    for (int tries = 0; tries < 12; tries++) {
        ticks_linear(a, lo, hi, step);
        if (ticks_fit(cr, a, len, horizontal)) break;
        step = nice_step(step * 1.01);
    }
}

/* The widest tick label (current font). */
static double ticks_width(cairo_t *cr, const axis *a) {
    double w = 0;
    for (int i = 0; i < a->nt; i++) w = fmax(w, text_width(cr, a->label[i]));
    return w;
}

/* ---- panels: one plot area with its axes, lines and legend ---------------------------------------------- */

typedef struct {
    const char   *label;
    const double *x, *y;
    int           n, marker, color;
    double        alpha, width;   /* 0: opaque, 2 px */
} series;

typedef struct {
    double        x0, y0, w, h;   /* the plot area in pixels */
    axis          x, y;
    const series *s;
    int           ns;
    const char   *note;           /* a line of text in the middle (e.g. why there is nothing to show) */
    int           xlabels;        /* tick labels under the plot area */
    int           legend_outside; /* the legend to the right of the plot area, not in a corner */
    double        fs;             /* the tick font's size; other sizes follow from it */
} panel;

static int point_usable(const panel *p, const series *s, int i) {
    return i >= 0 && i < s->n && axis_usable(&p->x, s->x[i]) && axis_usable(&p->y, s->y[i]);
}

static double px_x(const panel *p, double v) { return p->x0 + axis_frac(&p->x, v) * p->w; }
static double px_y(const panel *p, double v) { return p->y0 + p->h - axis_frac(&p->y, v) * p->h; }

static void draw_grid(cairo_t *cr, const panel *p) {
    cairo_set_line_width(cr, 1);
    for (int pass = 0; pass < 2; pass++) {   /* the minor lines first, so major ones cross over them */
        set_hex(cr, pass ? C_GRID : C_MINOR);
        const axis *ax[2] = {&p->x, &p->y};
        for (int d = 0; d < 2; d++) {
            int n = pass ? ax[d]->nt : ax[d]->nm;
            const double *v = pass ? ax[d]->tick : ax[d]->minor;
            for (int i = 0; i < n; i++) {
                double f = axis_frac(ax[d], v[i]);
                if (f < 0 || f > 1) continue;
                if (d == 0) {
                    double x = crisp(p->x0 + f * p->w);
                    cairo_move_to(cr, x, p->y0), cairo_line_to(cr, x, p->y0 + p->h);
                } else {
                    double y = crisp(p->y0 + p->h - f * p->h);
                    cairo_move_to(cr, p->x0, y), cairo_line_to(cr, p->x0 + p->w, y);
                }
            }
        }
        cairo_stroke(cr);
    }
}

static void draw_series(cairo_t *cr, const panel *p, const series *s) {
    double width = s->width > 0 ? s->width : 2, alpha = s->alpha > 0 ? s->alpha : 1;
    cairo_save(cr);
    cairo_rectangle(cr, p->x0, p->y0, p->w, p->h);
    cairo_clip(cr);
    set_palette(cr, s->color, alpha);
    cairo_set_line_width(cr, width);
    cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
    cairo_set_line_cap(cr, CAIRO_LINE_CAP_ROUND);
    /* a point that cannot be drawn (NaN, or not positive on a log axis) ends the line: a gap */
    for (int i = 0; i < s->n; i++) {
        if (!point_usable(p, s, i)) continue;
        if (point_usable(p, s, i - 1)) cairo_line_to(cr, px_x(p, s->x[i]), px_y(p, s->y[i]));
        else cairo_move_to(cr, px_x(p, s->x[i]), px_y(p, s->y[i]));
    }
    cairo_stroke(cr);
    /* markers at every point, or a dot for a point between two gaps, which no line shows */
    for (int i = 0; i < s->n; i++) {
        if (!point_usable(p, s, i)) continue;
        int alone = !point_usable(p, s, i - 1) && !point_usable(p, s, i + 1);
        if (!s->marker && !alone) continue;
        double x = px_x(p, s->x[i]), y = px_y(p, s->y[i]), r = s->marker ? 1.9 * width : 1.7 * width;
        cairo_new_sub_path(cr);
        cairo_arc(cr, x, y, r, 0, 2 * PI);
        if (s->marker) {   /* a thin white ring keeps neighbouring markers apart */
            set_hex(cr, 0xffffff);
            cairo_set_line_width(cr, 1);
            cairo_stroke_preserve(cr);
            set_palette(cr, s->color, alpha);
        }
        cairo_fill(cr);
    }
    cairo_restore(cr);
}

/* How many of the series' drawn points (and points along its lines) fall in the box: the legend goes
 * where this is least. */
static int box_hits(const panel *p, double bx, double by, double bw, double bh) {
    int hits = 0;
    for (int k = 0; k < p->ns; k++) {
        const series *s = &p->s[k];
        for (int i = 0; i < s->n; i++) {
            if (!point_usable(p, s, i)) continue;
            double x1 = px_x(p, s->x[i]), y1 = px_y(p, s->y[i]), x0 = x1, y0 = y1;
            if (point_usable(p, s, i - 1)) x0 = px_x(p, s->x[i - 1]), y0 = px_y(p, s->y[i - 1]);
            for (int j = 0; j < 8; j++) {
                double x = x0 + (x1 - x0) * (j + 1) / 8, y = y0 + (y1 - y0) * (j + 1) / 8;
                hits += x >= bx - 3 && x <= bx + bw + 3 && y >= by - 3 && y <= by + bh + 3;
            }
        }
    }
    return hits;
}

/* The legend's box (0 x 0 when no series has a label and points). */
static void legend_size(cairo_t *cr, const panel *p, double *bw, double *bh) {
    int rows = 0;
    double tw = 0, fs = p->fs;
    set_font(cr, fs, 0);
    for (int k = 0; k < p->ns; k++)   /* a series with no points gets no entry */
        if (p->s[k].label && p->s[k].n > 0) rows++, tw = fmax(tw, text_width(cr, p->s[k].label));
    *bw = rows ? 0.7 * fs + 2.2 * fs + 0.6 * fs + tw + 0.7 * fs : 0;
    *bh = rows ? 0.9 * fs + rows * 1.5 * fs : 0;
}

/* The inside corner for a bw x bh legend that covers the fewest drawn points: top right, top left,
 * bottom right, bottom left, the first on ties. Returns those points' count, -1 if it does not fit. */
static int legend_corner(const panel *p, double bw, double bh, double *bx, double *by) {
    double inset = 0.6 * p->fs;
    if (bw > p->w - 2 * inset || bh > p->h - 2 * inset) return -1;
    int best = -1;
    for (int c = 0; c < 4; c++) {
        double x = c % 2 ? p->x0 + inset : p->x0 + p->w - inset - bw, y = c < 2 ? p->y0 + inset : p->y0 + p->h - inset - bh;
        int h = box_hits(p, x, y, bw, bh);
        if (best < 0 || h < best) best = h, *bx = x, *by = y;
    }
    return best;
}

static void draw_legend(cairo_t *cr, const panel *p) {
    double bw, bh, bx = 0, by = 0, fs = p->fs;
    legend_size(cr, p, &bw, &bh);
    if (bw <= 0) return;
    if (p->legend_outside) bx = p->x0 + p->w + 0.8 * fs, by = p->y0;
    else if (legend_corner(p, bw, bh, &bx, &by) < 0) return;   /* no room: the lines matter more */
    cairo_rectangle(cr, crisp(bx), crisp(by), floor(bw), floor(bh));
    cairo_set_source_rgba(cr, 1, 1, 1, 0.88);
    cairo_fill_preserve(cr);
    set_hex(cr, 0xcccccc);
    cairo_set_line_width(cr, 1);
    cairo_stroke(cr);
    double y = by + 0.45 * fs + 0.75 * fs, sx = bx + 0.7 * fs, sw = 2.2 * fs;
    set_font(cr, fs, 0);
    for (int k = 0; k < p->ns; k++) {
        const series *s = &p->s[k];
        if (!s->label || s->n <= 0) continue;
        set_palette(cr, s->color, 1);
        cairo_set_line_width(cr, s->width > 0 ? fmax(s->width, 2) : 2);
        cairo_move_to(cr, sx, y), cairo_line_to(cr, sx + sw, y);
        cairo_stroke(cr);
        if (s->marker) {
            cairo_arc(cr, sx + sw / 2, y, 3.8, 0, 2 * PI);
            cairo_fill(cr);
        }
        set_hex(cr, C_TEXT);
        text_at(cr, s->label, sx + sw + 0.6 * fs, y, 0, 0.5);
        y += 1.5 * fs;
    }
}

/* The frame, ticks and their labels, the lines, the note and the legend of one panel. */
static void draw_panel(cairo_t *cr, const panel *p) {
    double tick = 0.35 * p->fs;
    draw_grid(cr, p);
    for (int k = 0; k < p->ns; k++) draw_series(cr, p, &p->s[k]);
    set_hex(cr, C_FRAME);
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, crisp(p->x0), crisp(p->y0), floor(p->x0 + p->w) - floor(p->x0), floor(p->y0 + p->h) - floor(p->y0));
    for (int i = 0; i < p->y.nt; i++) {
        double y = crisp(px_y(p, p->y.tick[i]));
        cairo_move_to(cr, p->x0 - tick, y), cairo_line_to(cr, p->x0, y);
    }
    for (int i = 0; i < p->y.nm; i++) {
        double y = crisp(px_y(p, p->y.minor[i]));
        cairo_move_to(cr, p->x0 - tick / 2, y), cairo_line_to(cr, p->x0, y);
    }
    for (int i = 0; i < p->x.nt; i++) {
        double x = crisp(px_x(p, p->x.tick[i]));
        cairo_move_to(cr, x, p->y0 + p->h), cairo_line_to(cr, x, p->y0 + p->h + tick);
    }
    cairo_stroke(cr);
    set_font(cr, p->fs, 0);
    set_hex(cr, C_TICKTEXT);
    for (int i = 0; i < p->y.nt; i++) text_at(cr, p->y.label[i], p->x0 - 1.8 * tick, px_y(p, p->y.tick[i]), 1, 0.5);
    if (p->xlabels)
        for (int i = 0; i < p->x.nt; i++) text_at(cr, p->x.label[i], px_x(p, p->x.tick[i]), p->y0 + p->h + 1.8 * tick, 0.5, 0);
    if (p->note) {
        set_font(cr, 1.1 * p->fs, 0);
        set_hex(cr, C_NOTE);
        text_at(cr, p->note, p->x0 + p->w / 2, p->y0 + p->h / 2, 0.5, 0.5);
    }
    draw_legend(cr, p);
}

/* ---- writing the PNG ------------------------------------------------------------------------------------ */

typedef struct {
    unsigned char *data;
    size_t         len, cap;
} membuf;

static cairo_status_t membuf_write(void *ctx, const unsigned char *data, unsigned int len) {
    membuf *b = ctx;
    if (b->len + len > b->cap) {
        size_t cap = DF_MAX(2 * b->cap, b->len + len + 65536);
        unsigned char *p = realloc(b->data, cap);
        if (!p) return CAIRO_STATUS_NO_MEMORY;
        b->data = p, b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return CAIRO_STATUS_SUCCESS;
}

/* A white canvas to draw on. cairo keeps the first error in the context and ignores later calls, so
 * drawing code need not check each call: finish_png checks the context's and the surface's status. */
static df_status canvas_open(const char *path, int w, int h, cairo_surface_t **sf, cairo_t **cr) {
    *sf = cairo_image_surface_create(CAIRO_FORMAT_RGB24, w, h);
    *cr = cairo_create(*sf);   /* on a surface in error this gives a context in error, never NULL */
    cairo_status_t cs = cairo_status(*cr);
    if (cs) {
        cairo_destroy(*cr), cairo_surface_destroy(*sf);
        *cr = NULL, *sf = NULL;
        return df_fail(cs == CAIRO_STATUS_NO_MEMORY ? DF_ERR_NOMEM : DF_ERR_IO, "%s: cannot make a %dx%d canvas: %s",
                       path, w, h, cairo_status_to_string(cs));
    }
    set_hex(*cr, 0xffffff);
    cairo_paint(*cr);
    return DF_OK;
}

/* Encode the canvas as PNG in memory, then write it atomically; frees the canvas either way. */
static df_status finish_png(const char *path, cairo_surface_t *sf, cairo_t *cr) {
    cairo_status_t cs = cairo_status(cr);
    cairo_destroy(cr);
    cairo_surface_flush(sf);
    if (!cs) cs = cairo_surface_status(sf);
    membuf b = {0};
    if (!cs) cs = cairo_surface_write_to_png_stream(sf, membuf_write, &b);
    cairo_surface_destroy(sf);
    df_status st = DF_OK;
    if (cs)
        st = df_fail(cs == CAIRO_STATUS_NO_MEMORY ? DF_ERR_NOMEM : DF_ERR_IO, "%s: cannot draw the plot: %s", path,
                     cairo_status_to_string(cs));
    else st = df_write_file_atomic(path, b.data, b.len);
    free(b.data);
    return st;
}

/* ---- line charts ---------------------------------------------------------------------------------------- */

df_status df_plot_lines(const char *path, const df_plot_opts *o, const df_plot_series *s, int nseries) {
    df_plot_opts def = {0};
    if (!o) o = &def;
    if (!path || !*path) return df_fail(DF_ERR_ARG, "df_plot_lines: no output path");
    if (nseries < 0 || (nseries > 0 && !s)) return df_fail(DF_ERR_ARG, "%s: bad series list (%d series)", path, nseries);
    for (int k = 0; k < nseries; k++)
        if (s[k].n < 0 || (s[k].n > 0 && (!s[k].x || !s[k].y)))
            return df_fail(DF_ERR_ARG, "%s: series %d has %d points but no x or y values", path, k, s[k].n);
    int W = o->width ? o->width : 800, H = o->height ? o->height : 500;
    if (W < 160 || H < 120 || W > 16384 || H > 16384)
        return df_fail(DF_ERR_ARG, "%s: a %dx%d plot is outside 160x120 .. 16384x16384", path, W, H);

    series *ss = calloc((size_t)DF_MAX(nseries, 1), sizeof *ss);
    if (!ss) return df_fail(DF_ERR_NOMEM, "%s: out of memory", path);
    for (int k = 0; k < nseries; k++)
        ss[k] = (series){.label = s[k].label, .x = s[k].x, .y = s[k].y, .n = s[k].n, .marker = s[k].marker, .color = k};

    cairo_surface_t *sf;
    cairo_t *cr;
    df_status st = canvas_open(path, W, H, &sf, &cr);
    if (st) {
        free(ss);
        return st;
    }
    panel p = {.s = ss, .ns = nseries, .xlabels = 1};
    p.fs = 12 * fmin(fmax(fmin(W / 800.0, H / 500.0), 0.75), 3.0);
    double fs = p.fs, pad = 1.1 * fs, tick = 0.35 * fs, lfs = 1.1 * fs, tfs = 1.3 * fs;
    axis_begin(&p.x, o->logx), axis_begin(&p.y, o->logy);
    int drawn = 0;
    for (int k = 0; k < nseries; k++)   /* only points that will be drawn count towards the ranges */
        for (int i = 0; i < s[k].n; i++)
            if (axis_usable(&p.x, s[k].x[i]) && axis_usable(&p.y, s[k].y[i]))
                axis_add(&p.x, &s[k].x[i], 1), axis_add(&p.y, &s[k].y[i], 1), drawn++;
    axis_end(&p.x, 0.04), axis_end(&p.y, 0.06);
    if (!drawn) p.note = "no data";

    set_font(cr, tfs, 1);
    double top = pad + (o->title ? text_height(cr) + 0.6 * fs : 0);
    set_font(cr, fs, 0);
    double th = text_height(cr);
    set_font(cr, lfs, 0);
    double lh = text_height(cr);
    double bottom = 1.8 * tick + th + (o->xlabel ? 0.5 * fs + lh : 0) + pad;
    p.y0 = top, p.h = H - top - bottom;
    set_font(cr, fs, 0);
    if (drawn) axis_ticks(cr, &p.y, p.h, 0);   /* an empty chart gets no made-up scale */
    double left = pad + (o->ylabel ? lh + 0.6 * fs : 0) + ticks_width(cr, &p.y) + 1.8 * tick;
    p.x0 = left, p.w = W - left - 2 * pad;
    if (drawn) axis_ticks(cr, &p.x, p.w, 1);
    /* a legend that would cover data in every corner goes to the right of the plot, if that leaves the
     * plot most of the width */
    double bw, bh, bx, by;
    legend_size(cr, &p, &bw, &bh);
    if (bw > 0 && legend_corner(&p, bw, bh, &bx, &by) != 0 && bw + 0.8 * fs < 0.4 * p.w) {
        p.legend_outside = 1, p.w -= bw + 0.8 * fs;
        set_font(cr, fs, 0);
        if (drawn) axis_ticks(cr, &p.x, p.w, 1);
    }
    draw_panel(cr, &p);
    set_hex(cr, C_TEXT);
    if (o->title) {   /* centred over the plot, unless that would push it off the left edge */
        set_font(cr, tfs, 1);
        text_at(cr, o->title, fmax(p.x0 + p.w / 2, pad + text_width(cr, o->title) / 2), pad, 0.5, 0);
    }
    set_font(cr, lfs, 0);
    if (o->xlabel) text_at(cr, o->xlabel, p.x0 + p.w / 2, H - pad, 0.5, 1);
    if (o->ylabel) text_up(cr, o->ylabel, pad, p.y0 + p.h / 2, 0.5, 0);
    free(ss);
    return finish_png(path, sf, cr);
}

/* ---- the training-progress picture ---------------------------------------------------------------------- */

/* The columns of loss.csv the picture reads, found by the names in its header. */
enum { COL_STEP, COL_EPOCH, COL_IMAGES, COL_Q0, COL_Q1, COL_Q2, COL_Q3, COL_FD, COL_KID, COL_ELAPSED, COL_COUNT };
static const char *const col_name[] = {"step", "epoch", "images", "loss_q0", "loss_q1",
                                       "loss_q2", "loss_q3", "fd", "kid", "elapsed_sec"};
_Static_assert(sizeof col_name / sizeof col_name[0] == COL_COUNT, "a name for every column");

typedef struct {
    int     n, cap;             /* rows read, rows of room */
    int     has[COL_COUNT];     /* the header names the column */
    double *v;                  /* column c of row i at v[c * cap + i]; NaN where empty or not a number */
} loss_log;

static double *log_col(const loss_log *t, int c) { return t->v + (size_t)c * (size_t)t->cap; }

/* Field [s, s + len) without surrounding blanks (and the '\r' of CRLF files). */
static const char *trim(const char *s, size_t *len) {
    while (*len && (*s == ' ' || *s == '\t')) s++, (*len)--;
    while (*len && (s[*len - 1] == ' ' || s[*len - 1] == '\t' || s[*len - 1] == '\r')) (*len)--;
    return s;
}

/* A field as a finite number, or NaN when it is empty, not wholly a number, or not finite. */
static double parse_field(const char *s, size_t len) {
    char buf[64];
    s = trim(s, &len);
    if (!len || len >= sizeof buf) return NAN;
    memcpy(buf, s, len), buf[len] = 0;   /* a NUL inside the field stops strtod early: rejected below */
    char *end;
    double v = strtod(buf, &end);
    return end == buf + len && isfinite(v) ? v : NAN;
}

/* Read loss.csv: the first non-blank line is the header; every later line whose step (or images, in a
 * log without steps) is a number is a row. Anything else (event lines, garbage, a torn last line) is
 * skipped: the picture is drawn while training appends to the file. An empty file has no rows. */
static df_status loss_log_read(const char *path, loss_log *t) {
    char *text;
    size_t len;
    memset(t, 0, sizeof *t);
    df_status st = df_read_file(path, &text, &len);
    if (st) return st;
    size_t lines = 1;
    for (size_t i = 0; i < len; i++) lines += text[i] == '\n';
    if (lines > (size_t)1 << 28) {
        free(text);
        return df_fail(DF_ERR_FORMAT, "%s: too many lines (%zu) for a training log", path, lines);
    }
    t->cap = (int)lines;
    t->v = malloc(sizeof(double) * COL_COUNT * lines);
    if (!t->v) {
        free(text);
        return df_fail(DF_ERR_NOMEM, "%s: out of memory for %zu rows", path, lines);
    }
    int idx[COL_COUNT], header = 0;
    size_t header_fields = 0;
    for (int c = 0; c < COL_COUNT; c++) idx[c] = -1;
    for (size_t pos = 0; pos < len;) {
        size_t end = pos;
        while (end < len && text[end] != '\n') end++;
        const char *line = text + pos;
        size_t ll = end - pos, blank = ll, fields = 0;
        const int torn = end == len;   /* no newline yet: training may be writing this line */
        pos = end + 1;
        trim(line, &blank);
        if (!blank) continue;
        double row[COL_COUNT];
        for (int c = 0; c < COL_COUNT; c++) row[c] = NAN;
        for (size_t a = 0, k = 0;; k++) {   /* fields [a, b) */
            size_t b = a;
            while (b < ll && line[b] != ',') b++;
            for (int c = 0; c < COL_COUNT; c++) {
                if (header && idx[c] == (int)k) row[c] = parse_field(line + a, b - a);
                size_t fl = b - a;
                const char *f = trim(line + a, &fl);
                if (!header && idx[c] < 0 && k < 100000 && fl == strlen(col_name[c]) && !memcmp(f, col_name[c], fl))
                    idx[c] = (int)k;
            }
            fields = k + 1;
            if (b >= ll) break;
            a = b + 1;
        }
        if (!header) {
            header = 1, header_fields = fields;
            if (idx[COL_STEP] < 0 && idx[COL_IMAGES] < 0) {
                free(text);
                return df_fail(DF_ERR_FORMAT, "%s: the first line is not a header naming a step or images column",
                               path);
            }
            continue;
        }
        if (isnan(row[idx[COL_STEP] >= 0 ? COL_STEP : COL_IMAGES])) continue;   /* not a data row */
        if (torn && fields < header_fields) continue;                             /* half a row */
        for (int c = 0; c < COL_COUNT; c++) log_col(t, c)[t->n] = row[c];
        t->n++;
    }
    free(text);   /* an empty file is a log with no rows yet (training writes the header soon) */
    for (int c = 0; c < COL_COUNT; c++) t->has[c] = idx[c] >= 0;
    return DF_OK;
}

/* Copy the points with a finite x and y (a positive y when positive) into ox, oy; returns how many.
 * Rows without a value (evaluation rows have no loss, training rows no FD) are not gaps here. */
static int compact(const double *x, const double *y, int n, int positive, double *ox, double *oy) {
    int m = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(x[i]) && isfinite(y[i]) && (!positive || y[i] > 0)) ox[m] = x[i], oy[m] = y[i], m++;
    return m;
}

/* A centred running geometric mean over 2h + 1 points (fewer at the ends): the loss is drawn on a log
 * axis, so averaging logs smooths what the eye sees without pulling the line toward spikes. */
static void smooth_log(const double *y, int n, int h, double *out) {
    for (int i = 0; i < n; i++) {
        int a = DF_MAX(0, i - h), b = DF_MIN(n - 1, i + h);
        double s = 0;
        for (int j = a; j <= b; j++) s += log(y[j]);
        out[i] = exp(s / (b - a + 1));
    }
}

/* 1234567 as "1,234,567". */
static void format_count(char *buf, size_t cap, double v) {
    char digits[32];
    snprintf(digits, sizeof digits, "%.0f", fabs(v) < 1e18 ? v : 0.0);
    size_t n = strlen(digits), o = 0, lead = digits[0] == '-';
    for (size_t i = 0; i < n && o + 2 < cap; i++) {
        if (i > lead && (n - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = digits[i];
    }
    buf[o] = 0;
}

/* The elapsed time as a second x axis along the top of p: ticks at round minutes (hours for long runs)
 * placed where the run reached them, interpolated between logged rows, because time is not
 * proportional to images seen (evaluations, resumes, other load on the machine). */
static void draw_time_axis(cairo_t *cr, const panel *p, const double *x, const double *sec, int n, double lfs) {
    double smin = INFINITY, smax = -INFINITY;
    for (int i = 0; i < n; i++) smin = fmin(smin, sec[i]), smax = fmax(smax, sec[i]);
    if (n < 2 || !(smax > smin)) return;
    double unit = smax > 300 * 60 ? 3600 : 60, tick = 0.35 * p->fs, step;
    axis a = {.lo = smin / unit, .hi = smax / unit};
    set_font(cr, p->fs, 0);
    step = nice_step((a.hi - a.lo) / fmax(2, p->w / 90));
    ticks_linear(&a, a.lo, a.hi, step);
    set_hex(cr, C_FRAME);
    cairo_set_line_width(cr, 1);
    double last_right = -INFINITY;
    int shown = 0;
    for (int k = 0; k < a.nt; k++) {
        double v = a.tick[k] * unit, px = NAN;
        for (int i = 0; i + 1 < n && isnan(px); i++)
            if (sec[i] <= v && v <= sec[i + 1] && sec[i + 1] > sec[i])
                px = px_x(p, x[i] + (v - sec[i]) / (sec[i + 1] - sec[i]) * (x[i + 1] - x[i]));
        if (!(px >= p->x0 && px <= p->x0 + p->w)) continue;
        double w = text_width(cr, a.label[k]);
        set_hex(cr, C_FRAME);
        cairo_move_to(cr, crisp(px), p->y0), cairo_line_to(cr, crisp(px), p->y0 - tick);
        cairo_stroke(cr);
        if (px - w / 2 < last_right + 0.9 * p->fs) continue;   /* time bunched up: keep the labels apart */
        set_hex(cr, C_TICKTEXT);
        text_at(cr, a.label[k], px, p->y0 - 1.8 * tick, 0.5, 1);
        last_right = px + w / 2, shown++;
    }
    if (!shown) return;
    set_font(cr, lfs, 0);
    set_hex(cr, C_TEXT);
    double th = p->fs * 1.2;
    text_at(cr, unit == 60 ? "elapsed minutes" : "elapsed hours", p->x0 + p->w / 2, p->y0 - 1.8 * tick - th - 0.3 * p->fs,
            0.5, 1);
}

/* What the progress figure draws, from loss.csv: x (images seen, else steps), the loss per quarter of the
 * timesteps raw (faint) and smoothed (labelled), FD, KID and the elapsed time against x. */
typedef struct {
    loss_log    t;
    const char *xname;
    double     *buf;
    series      loss_s[8], fd_s[1], kid_s[1];
    int         nls, nloss, qn[4], nfd, nkid, nt;
    double     *qx[4], *qs[4], *fx, *fy, *kx, *ky, *tx, *ts;
    char        fd_label[96], kid_label[96];
} progress_data;

static df_status progress_read(const char *loss_csv, const char *png_path, progress_data *d) {
    memset(d, 0, sizeof *d);
    df_status st = loss_log_read(loss_csv, &d->t);
    if (st) return st;
    loss_log *t = &d->t;
    const int n = t->n, nn = DF_MAX(n, 1);
    /* x is images seen when the log counts them (runs of different batch sizes compare), else steps */
    const double *xs = log_col(t, COL_STEP);
    d->xname = "steps";
    for (int i = 0; t->has[COL_IMAGES] && i < n; i++)
        if (isfinite(log_col(t, COL_IMAGES)[i])) xs = log_col(t, COL_IMAGES), d->xname = "images seen", i = n;
    if (!t->has[COL_STEP] && xs == log_col(t, COL_STEP)) xs = log_col(t, COL_IMAGES);
    double *buf = d->buf = malloc(sizeof(double) * 18 * (size_t)nn);
    if (!buf) return df_fail(DF_ERR_NOMEM, "%s: out of memory", png_path);
    static const char *const qlabel[4] = {"timesteps 0\u201325% (least noise)", "timesteps 25\u201350%",
                                          "timesteps 50\u201375%", "timesteps 75\u2013100% (most noise)"};
    for (int q = 0; q < 4; q++) {
        double *qy = buf + (size_t)(3 * q + 1) * nn;
        d->qx[q] = buf + (size_t)(3 * q) * nn, d->qs[q] = buf + (size_t)(3 * q + 2) * nn;
        d->qn[q] = compact(xs, log_col(t, COL_Q0 + q), n, 1, d->qx[q], qy);
        int h = DF_MIN(d->qn[q] / 100, 8);
        smooth_log(qy, d->qn[q], h, d->qs[q]);
        if (h > 0) d->loss_s[d->nls++] = (series){.x = d->qx[q], .y = qy, .n = d->qn[q], .color = q, .alpha = 0.22, .width = 1};
        d->nloss += d->qn[q];
    }
    for (int q = 0; q < 4; q++)
        d->loss_s[d->nls++] = (series){.label = qlabel[q], .x = d->qx[q], .y = d->qs[q], .n = d->qn[q], .color = q};
    d->fx = buf + 12 * (size_t)nn, d->fy = buf + 13 * (size_t)nn, d->kx = buf + 14 * (size_t)nn, d->ky = buf + 15 * (size_t)nn;
    d->tx = buf + 16 * (size_t)nn, d->ts = buf + 17 * (size_t)nn;
    d->nfd = compact(xs, log_col(t, COL_FD), n, 0, d->fx, d->fy);
    d->nkid = compact(xs, log_col(t, COL_KID), n, 0, d->kx, d->ky);
    d->nt = compact(xs, log_col(t, COL_ELAPSED), n, 0, d->tx, d->ts);
    double sec_offset = 0, prev_sec = 0;
    /* elapsed_sec starts again from zero in a resumed run: add up the runs */
    for (int i = 0; i < d->nt; i++) {
        double raw = d->ts[i];
        if (i && raw < prev_sec) sec_offset += prev_sec;
        prev_sec = raw, d->ts[i] = raw + sec_offset;
    }
    snprintf(d->fd_label, sizeof d->fd_label, "FD");
    snprintf(d->kid_label, sizeof d->kid_label, "KID");
    double fd_best = INFINITY;
    for (int i = 0; i < d->nfd; i++) fd_best = fmin(fd_best, d->fy[i]);
    if (d->nfd) snprintf(d->fd_label, sizeof d->fd_label, "FD: last %.4g, best %.4g", d->fy[d->nfd - 1], fd_best);
    if (d->nkid) snprintf(d->kid_label, sizeof d->kid_label, "KID: last %.3g", d->ky[d->nkid - 1]);
    d->fd_s[0] = (series){.label = d->fd_label, .x = d->fx, .y = d->fy, .n = d->nfd, .marker = 1, .color = 4};
    d->kid_s[0] = (series){.label = d->kid_label, .x = d->kx, .y = d->ky, .n = d->nkid, .marker = 1, .color = 5};
    return DF_OK;
}

/* The title (the run's directory) and one line with where the run stands; returns the line's top. */
static double progress_header(cairo_t *cr, const progress_data *d, const char *loss_csv, double fs, double pad, int W) {
    set_font(cr, 1.4 * fs, 1);
    double title_h = text_height(cr);
    char title[4400], dir[4096];
    snprintf(dir, sizeof dir, "%s", loss_csv);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == dir) dir[1] = 0;   /* "/loss.csv": the root */
    else *slash = 0;
    snprintf(title, sizeof title, "Training progress: %s", dir);
    if (text_width(cr, title) > W - 2 * pad && strrchr(dir, '/'))
        snprintf(title, sizeof title, "Training progress: .../%s", strrchr(dir, '/') + 1);
    set_hex(cr, C_TEXT);
    text_at(cr, title, pad, pad, 0, 0);
    char sub[512] = "", num[64];
    size_t o = 0;
    const loss_log *t = &d->t;
    if (t->n) {
        const int last = t->n - 1;
        double v;
#define SUB(...) (o += (size_t)snprintf(sub + o, o < sizeof sub ? sizeof sub - o : 0, __VA_ARGS__), o = DF_MIN(o, sizeof sub))
        if (t->has[COL_STEP] && isfinite(v = log_col(t, COL_STEP)[last])) format_count(num, sizeof num, v), SUB("step %s", num);
        if (isfinite(v = log_col(t, COL_EPOCH)[last])) SUB("%sepoch %.0f", o ? "  \xc2\xb7  " : "", v);
        if (isfinite(v = log_col(t, COL_IMAGES)[last])) format_count(num, sizeof num, v), SUB("%s%s images", o ? "  \xc2\xb7  " : "", num);
        if (d->nt && isfinite(d->ts[d->nt - 1])) SUB("%s%.1f minutes", o ? "  \xc2\xb7  " : "", d->ts[d->nt - 1] / 60);
        if (d->nfd) SUB("%sFD %.4g", o ? "  \xc2\xb7  " : "", d->fy[d->nfd - 1]);
#undef SUB
    } else snprintf(sub, sizeof sub, "no rows yet");
    set_font(cr, fs, 0);
    set_hex(cr, C_NOTE);
    double sub_y = pad + title_h + 0.3 * fs;
    text_at(cr, sub, pad, sub_y, 0, 0);
    return sub_y;
}

/* The panels' places and their y axes: the loss and FD on log scales (when FD spans a factor of 3 or more),
 * KID linear, as it can be at or below zero; the time axis above the first panel, the x axis under the last.
 * Returns the panels' left edge. */
static double progress_layout(cairo_t *cr, progress_data *d, panel *P, int npanels, double sub_y, double fs,
                              double pad, int W, int H) {
    const double tick = 0.35 * fs, lfs = 1.1 * fs, gap = 1.4 * fs;
    set_font(cr, fs, 0);
    double th = text_height(cr);
    set_font(cr, lfs, 0);
    double lh = text_height(cr);
    double top = sub_y + th + 1.0 * fs + (d->nt >= 2 ? lh + 0.3 * fs + th + 1.8 * tick : 0);
    double bottom = 1.8 * tick + th + 0.5 * fs + lh + pad;
    double avail = H - top - bottom - gap * (npanels - 1);
    const double share3[3] = {0.50, 0.28, 0.22}, share2[2] = {0.62, 0.38}, share_none[2] = {0.72, 0.28};
    const double *share = npanels == 3 ? share3 : d->nfd ? share2 : share_none;
    double y = top;
    for (int k = 0; k < npanels; k++) P[k].y0 = y, P[k].h = floor(avail * share[k]), y += P[k].h + gap;
    axis_begin(&P[0].y, 1);
    for (int q = 0; q < 4; q++) axis_add(&P[0].y, d->qs[q], d->qn[q]);
    for (int q = 0; q < 4 && d->nls > 4; q++) axis_add(&P[0].y, d->loss_s[q].y, d->loss_s[q].n);
    double fmin_ = INFINITY, fmax_ = -INFINITY;
    for (int i = 0; i < d->nfd; i++) fmin_ = fmin(fmin_, d->fy[i]), fmax_ = fmax(fmax_, d->fy[i]);
    axis_begin(&P[1].y, d->nfd && fmin_ > 0 && fmax_ >= 3 * fmin_);
    axis_add(&P[1].y, d->fy, d->nfd);
    axis_begin(&P[2].y, 0);
    axis_add(&P[2].y, d->ky, d->nkid);
    double ytw = 0;
    set_font(cr, fs, 0);
    for (int k = 0; k < npanels; k++) {
        axis_end(&P[k].y, 0.06);
        if (!P[k].note) axis_ticks(cr, &P[k].y, P[k].h, 0);   /* an empty panel gets no made-up scale */
        ytw = fmax(ytw, ticks_width(cr, &P[k].y));
    }
    double left = pad + lh + 0.6 * fs + ytw + 1.8 * tick, w = W - left - 2 * pad;
    axis x;
    axis_begin(&x, 0);
    x.integer = 1;
    for (int q = 0; q < 4; q++) axis_add(&x, d->qx[q], d->qn[q]);
    axis_add(&x, d->fx, d->nfd), axis_add(&x, d->kx, d->nkid);
    axis_end(&x, 0.02);
    if (d->nloss + d->nfd) axis_ticks(cr, &x, w, 1);
    for (int k = 0; k < npanels; k++) P[k].x0 = left, P[k].w = w, P[k].x = x;
    return left;
}

df_status df_plot_training_progress(const char *loss_csv, const char *png_path) {
    if (!loss_csv || !png_path || !*png_path) return df_fail(DF_ERR_ARG, "df_plot_training_progress: no path");
    progress_data d;
    df_status st = progress_read(loss_csv, png_path, &d);
    cairo_surface_t *sf;
    cairo_t *cr;
    const int W = DF_PROGRESS_WIDTH, H = DF_PROGRESS_HEIGHT;
    if (st || (st = canvas_open(png_path, W, H, &sf, &cr))) {
        free(d.buf), free(d.t.v);
        return st;
    }
    const double fs = 12.5, pad = 1.2 * fs, lfs = 1.1 * fs;
    const int npanels = d.nkid ? 3 : 2;
    panel P[3];
    memset(P, 0, sizeof P);
    for (int k = 0; k < npanels; k++) P[k].fs = fs;
    P[0].s = d.loss_s, P[0].ns = d.nls, P[0].note = d.nloss ? NULL : "no training rows yet";
    P[1].s = d.fd_s, P[1].ns = 1;
    if (!d.nfd) P[1].note = "no evaluation yet (train --eval-every N)", P[1].ns = 0;
    P[2].s = d.kid_s, P[2].ns = 1;
    P[npanels - 1].xlabels = 1;
    const double sub_y = progress_header(cr, &d, loss_csv, fs, pad, W);
    const double left = progress_layout(cr, &d, P, npanels, sub_y, fs, pad, W, H);
    static const char *const ylabel[3] = {"training loss", "FD", "KID"};
    for (int k = 0; k < npanels; k++) {
        draw_panel(cr, &P[k]);
        set_font(cr, lfs, 0);
        set_hex(cr, C_TEXT);
        text_up(cr, ylabel[k], pad, P[k].y0 + P[k].h / 2, 0.5, 0);
    }
    draw_time_axis(cr, &P[0], d.tx, d.ts, d.nt, lfs);
    set_font(cr, lfs, 0);
    set_hex(cr, C_TEXT);
    text_at(cr, d.xname, left + P[0].w / 2, H - pad, 0.5, 1);
    free(d.buf), free(d.t.v);
    return finish_png(png_path, sf, cr);
}

/* ---- comparing runs by their evaluations ------------------------------------------------------------------ */

void df_run_evals_free(df_run_evals *r) {
    if (!r) return;
    free(r->rows);
    memset(r, 0, sizeof *r);
}

const char *df_compare_axis_name(df_compare_axis a) {
    static const char *const names[] = {"minutes", "images"};
    _Static_assert(sizeof names / sizeof names[0] == DF_COMPARE_AXIS_COUNT, "a name for every axis");
    return (unsigned)a < DF_COMPARE_AXIS_COUNT ? names[a] : "?";
}

void df_compare_params_default(df_compare_params *p) {
    memset(p, 0, sizeof *p);
    p->by = DF_COMPARE_MINUTES, p->kid = 1;
}

/* The name of a run: the last component of its directory ("runs/a/" is "a"); "." and ".." are resolved,
 * so a loss.csv in the current directory is named after that directory. */
static void run_label(const char *dir, char *out, size_t cap) {
    char buf[4096], real[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", *dir ? dir : ".");
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = 0;
    const char *base = strrchr(buf, '/') ? strrchr(buf, '/') + 1 : buf;
    if ((!strcmp(base, ".") || !strcmp(base, "..")) && realpath(buf, real)) {
        snprintf(buf, sizeof buf, "%s", real);
        base = strrchr(buf, '/') && buf[1] ? strrchr(buf, '/') + 1 : buf;
    }
    const char *s = *base ? base : buf;   /* cut to cap - 1 bytes: a label, not a path */
    const size_t len = strnlen(s, cap - 1);
    memcpy(out, s, len);
    out[len] = 0;
}

df_status df_run_evals_read(const char *run, const char *label, df_run_evals *out) {
    if (!out) return df_fail(DF_ERR_ARG, "df_run_evals_read: no result to fill");
    memset(out, 0, sizeof *out);
    if (!run || !*run) return df_fail(DF_ERR_ARG, "df_run_evals_read: no run given");
    struct stat sb;
    char dir[4096];
    if (stat(run, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        snprintf(dir, sizeof dir, "%s", run);
        if ((size_t)snprintf(out->path, sizeof out->path, "%s/loss.csv", run) >= sizeof out->path)
            return df_fail(DF_ERR_ARG, "%s: path too long", run);
    } else {   /* a loss.csv path: the run is its directory */
        snprintf(out->path, sizeof out->path, "%s", run);
        snprintf(dir, sizeof dir, "%s", run);
        char *slash = strrchr(dir, '/');
        if (!slash) snprintf(dir, sizeof dir, ".");
        else if (slash == dir) dir[1] = 0;
        else *slash = 0;
    }
    if (label) snprintf(out->label, sizeof out->label, "%s", label);
    else run_label(dir, out->label, sizeof out->label);
    loss_log t;
    df_status st = loss_log_read(out->path, &t);
    if (st) return st;
    const double *step = log_col(&t, COL_STEP), *img = log_col(&t, COL_IMAGES), *sec = log_col(&t, COL_ELAPSED);
    const double *fd = log_col(&t, COL_FD), *kid = log_col(&t, COL_KID);
    int n = 0;
    for (int i = 0; t.has[COL_FD] && i < t.n; i++) n += isfinite(fd[i]);
    if (!n) {
        free(t.v);
        return df_fail(DF_ERR_FORMAT, "%s: no evaluation rows in loss.csv: train with --eval-every N", run);
    }
    out->rows = malloc(sizeof *out->rows * (size_t)n);
    if (!out->rows) {
        free(t.v);
        return df_fail(DF_ERR_NOMEM, "%s: out of memory", run);
    }
    /* elapsed_sec started again from zero in runs resumed before the time was carried over: add up the
     * sessions, as progress.png does */
    double offset = 0, prev = 0;
    for (int i = 0; i < t.n; i++) {
        double s = t.has[COL_ELAPSED] ? sec[i] : NAN;
        if (isfinite(s)) {
            if (s < prev) offset += prev;
            prev = s;
        }
        if (!t.has[COL_FD] || !isfinite(fd[i])) continue;
        double step_i = t.has[COL_STEP] ? fmin(fmax(step[i], -1), 9e18) : -1;   /* in long's range */
        out->rows[out->n++] = (df_run_eval){.step = (long)step_i, .images = t.has[COL_IMAGES] ? img[i] : NAN,
                                            .minutes = isfinite(s) ? (s + offset) / 60 : NAN, .fd = fd[i],
                                            .kid = t.has[COL_KID] ? kid[i] : NAN};
    }
    free(t.v);
    return DF_OK;
}

/* x of a row on the chosen axis. */
static double compare_x(const df_run_eval *r, df_compare_axis by) {
    return by == DF_COMPARE_IMAGES ? r->images : r->minutes;
}

/* The FD panel (and the KID panel under it) of runs' evaluations: one colour per run, in run order. */
static df_status compare_draw(const char *path, const df_compare_params *p, const df_run_evals *ev, int nruns) {
    size_t total = 0;
    int have_kid = 0;
    for (int k = 0; k < nruns; k++) {
        total += (size_t)ev[k].n;
        for (int i = 0; i < ev[k].n; i++) have_kid |= isfinite(ev[k].rows[i].kid);
    }
    const int npanels = p->kid && have_kid ? 2 : 1;
    const int W = p->width ? p->width : 900, H = p->height ? p->height : npanels == 2 ? 820 : 560;
    if (W < 320 || H < 240 || W > 16384 || H > 16384)
        return df_fail(DF_ERR_ARG, "%s: a %dx%d plot is outside 320x240 .. 16384x16384", path, W, H);
    double *buf = malloc(sizeof(double) * 3 * DF_MAX(total, 1));
    series *ss = calloc(2 * (size_t)nruns, sizeof *ss);
    if (!buf || !ss) {
        free(buf), free(ss);
        return df_fail(DF_ERR_NOMEM, "%s: out of memory", path);
    }
    panel P[2];
    memset(P, 0, sizeof P);
    size_t o = 0;
    for (int k = 0; k < nruns; k++) {
        double *x = buf + o, *fd = buf + total + o, *kid = buf + 2 * total + o;
        for (int i = 0; i < ev[k].n; i++)
            x[i] = compare_x(&ev[k].rows[i], p->by), fd[i] = ev[k].rows[i].fd, kid[i] = ev[k].rows[i].kid;
        ss[k] = (series){.label = ev[k].label, .x = x, .y = fd, .n = ev[k].n, .marker = 1, .color = k};
        ss[nruns + k] = (series){.x = x, .y = kid, .n = ev[k].n, .marker = 1, .color = k};
        o += (size_t)ev[k].n;
    }
    cairo_surface_t *sf;
    cairo_t *cr;
    df_status st = canvas_open(path, W, H, &sf, &cr);
    if (st) {
        free(buf), free(ss);
        return st;
    }
    const double fs = 12 * fmin(fmax(fmin(W / 900.0, H / (npanels == 2 ? 820.0 : 560.0)), 0.75), 3.0);
    const double pad = 1.1 * fs, tick = 0.35 * fs, lfs = 1.1 * fs, tfs = 1.3 * fs, gap = 1.4 * fs;
    const char *xname = p->by == DF_COMPARE_IMAGES ? "images seen" : "training minutes";
    char title[160];
    snprintf(title, sizeof title, "FD against %s", xname);
    /* FD on a log axis (improvements are ratios); KID too unless it reaches zero or below, as its unbiased
     * estimate can */
    double kmin = INFINITY, kmax = -INFINITY;
    for (size_t i = 0; i < total; i++)
        if (isfinite(buf[2 * total + i])) kmin = fmin(kmin, buf[2 * total + i]), kmax = fmax(kmax, buf[2 * total + i]);
    axis_begin(&P[0].y, 1);
    axis_begin(&P[1].y, kmin > 0 && kmax >= 3 * kmin);
    axis x;
    axis_begin(&x, 0);
    x.integer = p->by == DF_COMPARE_IMAGES;
    int drawn = 0;
    for (int k = 0; k < nruns; k++)
        for (int i = 0; i < ss[k].n; i++) {
            if (axis_usable(&x, ss[k].x[i]) && axis_usable(&P[0].y, ss[k].y[i]))
                axis_add(&x, &ss[k].x[i], 1), axis_add(&P[0].y, &ss[k].y[i], 1), drawn++;
            if (npanels == 2 && axis_usable(&x, ss[k].x[i]) && axis_usable(&P[1].y, ss[nruns + k].y[i]))
                axis_add(&x, &ss[k].x[i], 1), axis_add(&P[1].y, &ss[nruns + k].y[i], 1);
        }
    axis_end(&x, 0.04);
    set_font(cr, tfs, 1);
    const double top = pad + text_height(cr) + 0.6 * fs;
    set_font(cr, fs, 0);
    const double th = text_height(cr);
    set_font(cr, lfs, 0);
    const double lh = text_height(cr);
    const double bottom = 1.8 * tick + th + 0.5 * fs + lh + pad;
    const double avail = H - top - bottom - (npanels - 1) * gap;
    double y = top, ytw = 0;
    set_font(cr, fs, 0);
    for (int k = 0; k < npanels; k++) {
        P[k].fs = fs, P[k].y0 = y, P[k].h = floor(avail * (npanels == 2 ? (k ? 0.36 : 0.64) : 1));
        y += P[k].h + gap;
        P[k].s = ss + k * nruns, P[k].ns = nruns;
        axis_end(&P[k].y, 0.06);
        if (drawn) axis_ticks(cr, &P[k].y, P[k].h, 0);
        ytw = fmax(ytw, ticks_width(cr, &P[k].y));
    }
    if (!drawn) P[0].note = "no FD value can be drawn";
    P[npanels - 1].xlabels = 1;
    const double left = pad + lh + 0.6 * fs + ytw + 1.8 * tick;
    double w = W - left - 2 * pad;
    for (int k = 0; k < npanels; k++) P[k].x0 = left, P[k].w = w, P[k].x = x;
    if (drawn) axis_ticks(cr, &P[0].x, w, 1);
    /* the legend (in the FD panel) goes outside when it would cover data in every corner and leaves the
     * plot most of the width; both panels keep one width so their x axes line up */
    double bw, bh, bx, by;
    legend_size(cr, &P[0], &bw, &bh);
    if (bw > 0 && legend_corner(&P[0], bw, bh, &bx, &by) != 0 && bw + 0.8 * fs < 0.4 * w) {
        w -= bw + 0.8 * fs;
        P[0].legend_outside = 1;
        set_font(cr, fs, 0);
        for (int k = 0; k < npanels; k++) P[k].w = w;
        if (drawn) axis_ticks(cr, &P[0].x, w, 1);
    }
    for (int k = 1; k < npanels; k++) P[k].x = P[0].x;
    static const char *const ylabel[2] = {"FD", "KID"};
    for (int k = 0; k < npanels; k++) {
        draw_panel(cr, &P[k]);
        set_font(cr, lfs, 0);
        set_hex(cr, C_TEXT);
        text_up(cr, ylabel[k], pad, P[k].y0 + P[k].h / 2, 0.5, 0);
    }
    const char *t = p->title ? p->title : title;
    set_font(cr, tfs, 1);
    text_at(cr, t, fmax(left + w / 2, pad + text_width(cr, t) / 2), pad, 0.5, 0);
    set_font(cr, lfs, 0);
    text_at(cr, xname, left + w / 2, H - pad, 0.5, 1);
    free(buf), free(ss);
    return finish_png(path, sf, cr);
}

df_status df_compare_runs(const char *const *runs, int nruns, const df_compare_params *p, const char *png_path,
                          df_run_evals *evals) {
    df_compare_params def;
    df_compare_params_default(&def);
    if (!p) p = &def;
    if (evals) memset(evals, 0, sizeof *evals * (size_t)DF_MAX(nruns, 0));
    if (nruns < 1 || !runs) return df_fail(DF_ERR_ARG, "df_compare_runs: no runs to compare");
    if ((unsigned)p->by >= DF_COMPARE_AXIS_COUNT)
        return df_fail(DF_ERR_ARG, "df_compare_runs: unknown axis %d", (int)p->by);
    if (png_path && !*png_path) return df_fail(DF_ERR_ARG, "df_compare_runs: empty output path");
    df_run_evals *ev = calloc((size_t)nruns, sizeof *ev);
    if (!ev) return df_fail(DF_ERR_NOMEM, "df_compare_runs: out of memory for %d runs", nruns);
    df_status st = DF_OK;
    for (int k = 0; k < nruns && !st; k++) {
        st = df_run_evals_read(runs[k], p->labels ? p->labels[k] : NULL, &ev[k]);
        /* the chosen axis must exist in every run, or its line would silently vanish */
        int have = 0;
        for (int i = 0; !st && i < ev[k].n; i++) have |= isfinite(compare_x(&ev[k].rows[i], p->by));
        if (!st && !have)
            st = df_fail(DF_ERR_FORMAT, "%s: its evaluation rows have no %s (%s column): compare by %s instead", runs[k],
                         p->by == DF_COMPARE_IMAGES ? "images seen" : "training time",
                         p->by == DF_COMPARE_IMAGES ? "images" : "elapsed_sec",
                         p->by == DF_COMPARE_IMAGES ? "minutes" : "images");
    }
    if (!st && png_path) st = compare_draw(png_path, p, ev, nruns);
    for (int k = 0; k < nruns; k++) {
        if (!st && evals) evals[k] = ev[k];
        else df_run_evals_free(&ev[k]);
    }
    free(ev);
    return st;
}
