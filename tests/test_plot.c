/* Plots (src/plot.c): lines land on the rows their values say, log axes give decades equal room, NaN
 * leaves a gap, text has real glyphs, and progress.png comes from good, odd and broken loss.csv files. */
#define _POSIX_C_SOURCE 200809L
#include "test.h"
#include "plot.h"

#include <cairo.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* fontconfig's process-wide tables, which it never frees, are suppressed for the sanitizer run by
 * tests/lsan.supp (the Makefile's asan target), for this binary and the diffuse commands it starts. */

#define DF_MIN(a, b) ((a) < (b) ? (a) : (b))
#define DF_MAX(a, b) ((a) > (b) ? (a) : (b))

static void tmp_path(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", test_tmp_dir(), name); }

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

/* A PNG read back with cairo as 8-bit RGB. */
typedef struct {
    int            w, h;
    unsigned char *rgb;
} picture;

static int picture_load(const char *path, picture *p) {
    p->w = p->h = 0, p->rgb = NULL;
    cairo_surface_t *s = cairo_image_surface_create_from_png(path);
    if (cairo_surface_status(s)) {
        cairo_surface_destroy(s);
        return 0;
    }
    cairo_surface_flush(s);
    int w = cairo_image_surface_get_width(s), h = cairo_image_surface_get_height(s);
    int stride = cairo_image_surface_get_stride(s);
    const unsigned char *d = cairo_image_surface_get_data(s);
    p->rgb = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint32_t v;   /* RGB24 and ARGB32 both keep a pixel as one native 32-bit word */
            memcpy(&v, d + (size_t)y * stride + 4 * x, 4);
            unsigned char *o = p->rgb + 3 * ((size_t)y * w + x);
            o[0] = (unsigned char)(v >> 16), o[1] = (unsigned char)(v >> 8), o[2] = (unsigned char)v;
        }
    p->w = w, p->h = h;
    cairo_surface_destroy(s);
    return 1;
}

/* Is pixel (x, y) within tol of palette colour `color` in every channel? */
static int is_color(const picture *p, int x, int y, int color, int tol) {
    unsigned char c[3];
    df_plot_color(color, c);
    const unsigned char *o = p->rgb + 3 * ((size_t)y * p->w + x);
    for (int k = 0; k < 3; k++)
        if (abs(o[k] - c[k]) > tol) return 0;
    return 1;
}

/* Where a colour is: how many pixels, their mean row and column, and their bounding box. */
typedef struct {
    int    count, x0, x1, y0, y1;
    double row, col;
} blob;

static blob find_color(const picture *p, int color) {
    blob b = {0, p->w, -1, p->h, -1, 0, 0};
    for (int y = 0; y < p->h; y++)
        for (int x = 0; x < p->w; x++)
            if (is_color(p, x, y, color, 24)) {
                b.count++, b.row += y, b.col += x;
                b.x0 = DF_MIN(b.x0, x), b.x1 = DF_MAX(b.x1, x), b.y0 = DF_MIN(b.y0, y), b.y1 = DF_MAX(b.y1, y);
            }
    if (b.count) b.row /= b.count, b.col /= b.count;
    return b;
}

/* Does column x hold the colour anywhere between rows y0 and y1? */
static int column_has(const picture *p, int x, int y0, int y1, int color) {
    for (int y = DF_MAX(y0, 0); y <= DF_MIN(y1, p->h - 1); y++)
        if (is_color(p, x, y, color, 24)) return 1;
    return 0;
}

/* Four horizontal lines at y = 0, 1, 0.25 and 0.75 (colours 0 .. 3, the last one red): each lands on
 * the row its value says, measured against the first two, and nowhere else. */
TEST(plot_lines_land_on_their_rows) {
    char path[512];
    tmp_path(path, sizeof path, "rows.png");
    double x[11], y[4][11];
    const double level[4] = {0, 1, 0.25, 0.75};
    df_plot_series s[4];
    for (int i = 0; i < 11; i++) x[i] = i;
    for (int k = 0; k < 4; k++) {
        for (int i = 0; i < 11; i++) y[k][i] = level[k];
        s[k] = (df_plot_series){NULL, x, y[k], 11, 0};
    }
    df_plot_opts o = {.title = "four levels", .xlabel = "x", .ylabel = "y", .width = 640, .height = 400};
    CHECK_OK(df_plot_lines(path, &o, s, 4));
    picture p;
    CHECK(picture_load(path, &p), "%s: not a PNG cairo can read", path);
    if (!p.rgb) return;
    CHECK(p.w == 640 && p.h == 400, "size %dx%d, asked for 640x400", p.w, p.h);
    unsigned char red[3];
    df_plot_color(3, red);
    CHECK(red[0] > 150 && red[1] < 80 && red[2] < 80, "palette colour 3 is not red: %d,%d,%d", red[0], red[1], red[2]);
    blob b[4];
    for (int k = 0; k < 4; k++) {
        b[k] = find_color(&p, k);
        CHECK(b[k].count > 300, "series %d: only %d pixels of its colour", k, b[k].count);
    }
    if (b[0].count < 300 || b[1].count < 300) goto done;
    CHECK(b[1].row < b[0].row - 100, "y = 1 (row %.1f) is not well above y = 0 (row %.1f)", b[1].row, b[0].row);
    for (int k = 2; k < 4; k++) {
        double want = b[0].row + level[k] * (b[1].row - b[0].row);
        CHECK_NEAR(b[k].row, want, 1.0, "row of the line at y = level");
        /* a horizontal line 2 px wide, antialiased: its colour stays within a few rows, and spans the
         * same columns as the others */
        CHECK(b[k].y1 - b[k].y0 <= 3, "series %d's colour spans rows %d .. %d", k, b[k].y0, b[k].y1);
        CHECK(abs(b[k].x0 - b[0].x0) <= 2 && abs(b[k].x1 - b[0].x1) <= 2, "series %d spans columns %d .. %d, not %d .. %d",
              k, b[k].x0, b[k].x1, b[0].x0, b[0].x1);
    }
    CHECK(b[3].x1 - b[3].x0 > 400, "the red line is only %d px long in a 640 px chart", b[3].x1 - b[3].x0);
done:
    free(p.rgb);
}

/* A labelled series also shows up in the legend, away from its line; an unlabelled one does not. */
TEST(plot_legend_shows_labels) {
    char path[512];
    double x[2] = {0, 1}, y0[2] = {0, 0}, y1[2] = {1, 1};
    for (int labelled = 0; labelled < 2; labelled++) {
        tmp_path(path, sizeof path, labelled ? "legend.png" : "nolegend.png");
        df_plot_series s[2] = {{labelled ? "low" : NULL, x, y0, 2, 0}, {labelled ? "high" : NULL, x, y1, 2, 0}};
        CHECK_OK(df_plot_lines(path, NULL, s, 2));
        picture p;
        if (!picture_load(path, &p)) {
            CHECK(0, "%s: unreadable", path);
            continue;
        }
        CHECK(p.w == 800 && p.h == 500, "default size %dx%d, not 800x500", p.w, p.h);
        blob b = find_color(&p, 0);
        /* the line at y = 0 is the lowest thing in colour 0; legend swatches are rows away from it */
        int away = 0;
        for (int yy = 0; yy < b.y1 - 6; yy++)
            for (int xx = 0; xx < p.w; xx++) away += is_color(&p, xx, yy, 0, 24);
        if (labelled) CHECK(away > 10, "no legend swatch of series 0 (%d pixels off its line)", away);
        else CHECK(away == 0, "%d pixels of series 0 off its line with no label", away);
        free(p.rgb);
    }
}

/* Rows (columns) of lines at 1, 10 and 100 on a log axis are equally spaced; on a linear one the gaps
 * are in the ratio 9 : 90. */
TEST(plot_log_axes_give_decades_equal_room) {
    char path[512];
    double x[2] = {1, 2}, y[3][2] = {{1, 1}, {10, 10}, {100, 100}};
    for (int log = 0; log < 2; log++) {
        tmp_path(path, sizeof path, log ? "logy.png" : "liny.png");
        df_plot_series s[3] = {{NULL, x, y[0], 2, 0}, {NULL, x, y[1], 2, 0}, {NULL, x, y[2], 2, 0}};
        df_plot_opts o = {.logy = log, .width = 500, .height = 600};
        CHECK_OK(df_plot_lines(path, &o, s, 3));
        picture p;
        if (!picture_load(path, &p)) {
            CHECK(0, "%s: unreadable", path);
            continue;
        }
        blob b[3] = {find_color(&p, 0), find_color(&p, 1), find_color(&p, 2)};
        double g1 = b[0].row - b[1].row, g2 = b[1].row - b[2].row;
        if (log) CHECK_NEAR(g1, g2, 1.0, "log y: pixels from 1 to 10 vs from 10 to 100");
        else CHECK_NEAR(g1 / g2, 0.1, 0.02, "linear y: gap 1..10 over gap 10..100");
        free(p.rgb);
    }
    /* and across: vertical lines at x = 1, 10, 100 on a log x axis */
    tmp_path(path, sizeof path, "logx.png");
    double vx[3][2] = {{1, 1}, {10, 10}, {100, 100}}, vy[2] = {0, 1};
    df_plot_series s[3] = {{NULL, vx[0], vy, 2, 0}, {NULL, vx[1], vy, 2, 0}, {NULL, vx[2], vy, 2, 0}};
    df_plot_opts o = {.logx = 1, .xlabel = "steps", .width = 700, .height = 300};
    CHECK_OK(df_plot_lines(path, &o, s, 3));
    picture p;
    if (!picture_load(path, &p)) {
        CHECK(0, "%s: unreadable", path);
        return;
    }
    blob b[3] = {find_color(&p, 0), find_color(&p, 1), find_color(&p, 2)};
    CHECK(b[0].col < b[1].col && b[1].col < b[2].col, "columns %.1f, %.1f, %.1f not in order", b[0].col, b[1].col, b[2].col);
    CHECK_NEAR(b[1].col - b[0].col, b[2].col - b[1].col, 1.0, "log x: pixels from 1 to 10 vs from 10 to 100");
    free(p.rgb);
}

/* A NaN y breaks the line around its x; a point between two NaNs is still drawn (as a dot). */
TEST(plot_nan_leaves_a_gap) {
    char path[512];
    tmp_path(path, sizeof path, "gap.png");
    double x[21], red[21], blue[21], green[21];
    for (int i = 0; i <= 20; i++) x[i] = i, red[i] = 1, blue[i] = 2, green[i] = NAN;
    red[10] = NAN, green[5] = 3;
    df_plot_series s[4] = {{NULL, x, blue, 21, 0}, {NULL, x, x, 0, 0}, {NULL, x, green, 21, 0}, {NULL, x, red, 21, 0}};
    df_plot_opts o = {.width = 800, .height = 400};
    CHECK_OK(df_plot_lines(path, &o, s, 4));
    picture p;
    if (!picture_load(path, &p)) {
        CHECK(0, "%s: unreadable", path);
        return;
    }
    blob b = find_color(&p, 0), r = find_color(&p, 3), g = find_color(&p, 2);
    CHECK(b.count > 300 && r.count > 300, "lines missing: %d blue, %d red pixels", b.count, r.count);
    if (b.count > 300 && r.count > 300) {
        /* the blue line spans x = 0 .. 20: column of x = c0 + x / 20 * (c1 - c0) */
        double c0 = b.x0, c1 = b.x1;
        for (int i = 0; i <= 8; i++) {
            double xv = 9.2 + 0.2 * i;   /* inside the gap from x = 9 to 11 */
            int col = (int)lround(c0 + xv / 20 * (c1 - c0));
            CHECK(!column_has(&p, col, r.y0, r.y1, 3), "red at x = %.1f (column %d), inside the gap", xv, col);
            CHECK(column_has(&p, col, b.y0, b.y1, 0), "blue missing at x = %.1f (column %d)", xv, col);
        }
        for (int k = 0; k < 4; k++) {
            double xv = (double[]){2, 8.5, 11.5, 18}[k];
            int col = (int)lround(c0 + xv / 20 * (c1 - c0));
            CHECK(column_has(&p, col, r.y0, r.y1, 3), "red missing at x = %.1f (column %d)", xv, col);
        }
        double want = c0 + 5.0 / 20 * (c1 - c0);
        CHECK(g.count > 8, "the lone point between NaNs is not drawn (%d pixels)", g.count);
        if (g.count) CHECK_NEAR(g.col, want, 1.5, "column of the lone point at x = 5");
        CHECK(g.x1 - g.x0 <= 10, "the lone point spreads over columns %d .. %d", g.x0, g.x1);
    }
    free(p.rgb);
}

/* Text is set in real glyphs: "iiiiiiii" is far narrower than "WWWWWWWW" in DejaVu Sans (a missing font
 * would give boxes of one width), and a title puts ink above the plot. */
TEST(plot_text_has_glyphs) {
    cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 64, 64);
    cairo_t *cr = cairo_create(s);
    cairo_select_font_face(cr, "DejaVu Sans", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, 20);
    cairo_text_extents_t ti, tw;
    cairo_text_extents(cr, "iiiiiiii", &ti);
    cairo_text_extents(cr, "WWWWWWWW", &tw);
    CHECK(cairo_status(cr) == CAIRO_STATUS_SUCCESS, "cairo: %s", cairo_status_to_string(cairo_status(cr)));
    CHECK(ti.width > 0 && tw.width > 3 * ti.width, "glyph widths: i x8 %.1f, W x8 %.1f", ti.width, tw.width);
    cairo_destroy(cr);
    cairo_surface_destroy(s);

    char path[512];
    double x[2] = {0, 1}, y[2] = {0, 1};
    df_plot_series ser = {NULL, x, y, 2, 0};
    int ink[2] = {0, 0};
    for (int titled = 0; titled < 2; titled++) {
        tmp_path(path, sizeof path, titled ? "titled.png" : "untitled.png");
        df_plot_opts o = {.title = titled ? "WWWW title" : NULL};
        CHECK_OK(df_plot_lines(path, &o, &ser, 1));
        picture p;
        if (!picture_load(path, &p)) continue;
        for (int yy = 0; yy < 30; yy++)
            for (int xx = 0; xx < p.w; xx++) {
                const unsigned char *c = p.rgb + 3 * ((size_t)yy * p.w + xx);
                ink[titled] += c[0] < 100 && c[1] < 100 && c[2] < 100;
            }
        free(p.rgb);
    }
    CHECK(ink[0] == 0 && ink[1] > 100, "dark pixels in the top 30 rows: %d untitled, %d titled", ink[0], ink[1]);
}

static const char *const OLD_HEADER =
    "step,epoch,loss,loss_avg,loss_q0,loss_q1,loss_q2,loss_q3,lr,grad_norm,images_per_sec,elapsed_sec\n";

/* A synthetic loss.csv of `rows` rows, with the evaluation columns when eval is set; odd lines mixed in
 * (an empty-field event row, garbage, a CRLF line, "nan") that the reader must skip or take in stride,
 * and a torn last line when torn is set. */
static void synthetic_log(const char *path, int rows, int eval, int torn) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fprintf(f, "%.*s%s\n", (int)strlen(OLD_HEADER) - 1, OLD_HEADER, eval ? ",images,fd,kid,eval_sec" : "");
    for (int i = 0; i < rows; i++) {
        long step = 1 + 10L * i;
        double base = 0.03 + 0.8 * exp(-step / 50.0), el = 3.0 * step;
        fprintf(f, "%ld,%ld,%.6f,%.6f,%.6f,%.6f,%.6f,%s,3.000e-04,0.5,20.0,%.1f", step, step / 900, base, base,
                3 * base, 1.3 * base, 0.8 * base, i == 3 ? "nan" : "0.010000", el);
        if (eval && i % 20 == 19) fprintf(f, ",%ld,%.3f,%.5f,20.0", 64 * step, 30 + 300 * exp(-i / 40.0), 0.01 + exp(-i / 30.0));
        else if (eval) fprintf(f, ",%ld,,,", 64 * step);
        fputs(i == 7 ? "\r\n" : "\n", f);
        if (i == 5) fputs("1000,2,,,,,,,,,,\n", f);
        if (i == 9) fputs("garbage \x01\x02 line,,,\n", f);
        if (i == 11) fputs("12abc,1,1,1,1,1,1,1,1,1,1,1\n", f);
    }
    if (torn) fputs("1234,1,0.5", f);   /* half a line, as when training is appending */
    fclose(f);
}

/* progress.png from a log with and without the evaluation columns: the right size, the four loss
 * colours drawn, the FD colour only when there are FD values; the torn last line is not a row (the
 * subtitle's step would read 1,234). */
TEST(plot_progress_from_loss_csv) {
    char csv[512], png[512];
    for (int eval = 0; eval < 2; eval++) {
        tmp_path(csv, sizeof csv, eval ? "loss-eval.csv" : "loss-old.csv");
        tmp_path(png, sizeof png, eval ? "progress-eval.png" : "progress-old.png");
        synthetic_log(csv, 200, eval, 0);
        CHECK_OK(df_plot_training_progress(csv, png));
        picture p, whole;
        if (!picture_load(png, &whole)) {
            CHECK(0, "%s: unreadable", png);
            continue;
        }
        synthetic_log(csv, 200, eval, 1);
        CHECK_OK(df_plot_training_progress(csv, png));
        if (!picture_load(png, &p)) {
            CHECK(0, "%s: unreadable", png);
            free(whole.rgb);
            continue;
        }
        size_t diff = 0;
        for (size_t i = 0; p.w == whole.w && p.h == whole.h && i < (size_t)p.w * p.h * 3; i++) diff += p.rgb[i] != whole.rgb[i];
        CHECK(diff == 0, "%s: a torn last line changes %zu bytes of the picture", png, diff);
        free(whole.rgb);
        CHECK(p.w == DF_PROGRESS_WIDTH && p.h == DF_PROGRESS_HEIGHT, "%s: %dx%d", png, p.w, p.h);
        for (int q = 0; q < 4; q++) {
            blob b = find_color(&p, q);
            CHECK(b.count > 200, "%s: loss quarter %d has %d pixels", png, q, b.count);
        }
        blob fd = find_color(&p, 4), kid = find_color(&p, 5);
        if (eval) CHECK(fd.count > 100 && kid.count > 100, "%s: FD %d and KID %d pixels", png, fd.count, kid.count);
        else CHECK(fd.count == 0 && kid.count == 0, "%s: FD %d and KID %d pixels with no evaluations", png, fd.count, kid.count);
        free(p.rgb);
    }
}

/* Columns are found by name: the same log with its columns in another order draws the same picture
 * (below the title, which names the directory). */
TEST(plot_progress_reads_columns_by_name) {
    char dir[2][512], csv[2][1100], png[2][1100];
    const char *order[2] = {"step,loss_q0,loss_q1,loss_q2,loss_q3,elapsed_sec,images,fd\n",
                            "fd,elapsed_sec,loss_q3,junk,loss_q1,images,loss_q0,step,loss_q2\n"};
    for (int k = 0; k < 2; k++) {
        tmp_path(dir[k], sizeof dir[k], k ? "ordb" : "orda");
        mkdir(dir[k], 0755);
        snprintf(csv[k], sizeof csv[k], "%s/loss.csv", dir[k]);
        snprintf(png[k], sizeof png[k], "%s/progress.png", dir[k]);
        FILE *f = fopen(csv[k], "wb");
        if (!f) continue;
        fputs(order[k], f);
        for (int i = 0; i < 60; i++) {
            double q[4] = {0.3 + 1.0 / (i + 1), 0.1 + 0.5 / (i + 1), 0.05 + 0.2 / (i + 1), 0.02 + 0.1 / (i + 1)};
            double sec = 5.0 * (i + 1), img = 640.0 * (i + 1);
            char fd[32] = "";
            if (i % 10 == 9) snprintf(fd, sizeof fd, "%.2f", 200.0 / (i + 1));
            if (k == 0) fprintf(f, "%d,%g,%g,%g,%g,%g,%g,%s\n", 10 * (i + 1), q[0], q[1], q[2], q[3], sec, img, fd);
            else fprintf(f, "%s,%g,%g,x,%g,%g,%g,%d,%g\n", fd, sec, q[3], q[1], img, q[0], 10 * (i + 1), q[2]);
        }
        fclose(f);
        CHECK_OK(df_plot_training_progress(csv[k], png[k]));
    }
    picture a, b;
    if (!picture_load(png[0], &a) || !picture_load(png[1], &b)) {
        CHECK(0, "pictures unreadable");
        return;
    }
    size_t from = (size_t)60 * a.w * 3, n = (size_t)a.w * a.h * 3, diff = 0;
    for (size_t i = from; i < n; i++) diff += a.rgb[i] != b.rgb[i];
    CHECK(diff == 0, "%zu bytes differ below the title between the two column orders", diff);
    CHECK(find_color(&a, 4).count > 50, "no FD line");
    free(a.rgb), free(b.rgb);
}

/* A log with the header only, one row, or nothing at all still gives a picture; a file that is not a
 * loss log is refused and no picture is left behind. */
TEST(plot_progress_with_few_rows) {
    char csv[512], png[512];
    const char *texts[3] = {"step,epoch,loss,loss_avg,loss_q0,loss_q1,loss_q2,loss_q3,lr,grad_norm,images_per_sec,"
                            "elapsed_sec,images,fd,kid,eval_sec\n",
                            "step,epoch,loss,loss_avg,loss_q0,loss_q1,loss_q2,loss_q3,lr,grad_norm,images_per_sec,"
                            "elapsed_sec\n1,0,1.2,1.2,2.5,1.1,0.7,0.4,1e-4,1.0,20,3.0\n",
                            ""};
    for (int k = 0; k < 3; k++) {
        char name[32];
        snprintf(name, sizeof name, "few%d.csv", k);
        tmp_path(csv, sizeof csv, name);
        snprintf(name, sizeof name, "few%d.png", k);
        tmp_path(png, sizeof png, name);
        write_text(csv, texts[k]);
        CHECK_OK(df_plot_training_progress(csv, png));
        picture p;
        CHECK(picture_load(png, &p) && p.w == DF_PROGRESS_WIDTH && p.h == DF_PROGRESS_HEIGHT, "%s: %dx%d", png, p.w, p.h);
        if (k == 1) {
            for (int q = 0; q < 4; q++) CHECK(find_color(&p, q).count > 10, "one row: quarter %d's point not drawn", q);
        }
        free(p.rgb);
    }
    tmp_path(csv, sizeof csv, "notalog.csv");
    tmp_path(png, sizeof png, "notalog.png");
    write_text(csv, "1,2,3\n4,5,6\n");
    df_status st = df_plot_training_progress(csv, png);
    CHECK(st == DF_ERR_FORMAT, "a file without a header: %s (%s)", df_status_name(st), df_error());
    CHECK(!file_exists(png), "%s written for a bad log", png);
    tmp_path(csv, sizeof csv, "missing.csv");
    st = df_plot_training_progress(csv, png);
    CHECK(st == DF_ERR_IO && strstr(df_error(), "missing.csv"), "a missing log: %s (%s)", df_status_name(st), df_error());
}

/* Count the files in the test directory whose names contain ".tmp." (half-written pictures). */
static int leftover_tmp_files(void) {
    DIR *d = opendir(test_tmp_dir());
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) n += strstr(e->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    return n;
}

/* A picture that cannot be written is an error naming the path, and leaves no file, whole or half. */
TEST(plot_unwritable_path_fails_cleanly) {
    char path[512], csv[512];
    double x[2] = {0, 1}, y[2] = {0, 1};
    df_plot_series s = {"a", x, y, 2, 1};
    tmp_path(path, sizeof path, "no/such/dir/chart.png");
    df_status st = df_plot_lines(path, NULL, &s, 1);
    CHECK(st == DF_ERR_IO && strstr(df_error(), "chart.png"), "no directory: %s (%s)", df_status_name(st), df_error());
    CHECK(!file_exists(path), "%s exists", path);
    tmp_path(path, sizeof path, "adir");   /* a directory where the picture should go */
    mkdir(path, 0755);
    st = df_plot_lines(path, NULL, &s, 1);
    CHECK(st == DF_ERR_IO, "a directory as the path: %s (%s)", df_status_name(st), df_error());
    tmp_path(csv, sizeof csv, "loss-for-adir.csv");
    synthetic_log(csv, 20, 1, 1);
    st = df_plot_training_progress(csv, path);
    CHECK(st == DF_ERR_IO, "progress into a directory: %s (%s)", df_status_name(st), df_error());
    CHECK(leftover_tmp_files() == 0, "%d temporary files left behind", leftover_tmp_files());

    /* bad arguments are refused before anything is drawn */
    tmp_path(path, sizeof path, "plot-bad-arguments.png");   /* a name no other test uses */
    df_plot_series nox = {"b", NULL, y, 2, 0};
    CHECK(df_plot_lines(path, NULL, &nox, 1) == DF_ERR_ARG, "a series without x accepted");
    CHECK(df_plot_lines(NULL, NULL, &s, 1) == DF_ERR_ARG, "no path accepted");
    CHECK(df_plot_lines(path, NULL, NULL, 1) == DF_ERR_ARG, "no series list accepted");
    df_plot_opts tiny = {.width = 10, .height = 10};
    CHECK(df_plot_lines(path, &tiny, &s, 1) == DF_ERR_ARG, "a 10x10 chart accepted");
    CHECK(!file_exists(path), "%s written for bad arguments", path);
    /* no series at all is a valid, empty chart */
    CHECK_OK(df_plot_lines(path, NULL, NULL, 0));
}

/* Values at the ends of double's range, infinities and a constant series still give a picture (the
 * sanitizer run checks that no conversion overflows on the way). */
TEST(plot_extreme_values_still_draw) {
    char path[512], csv[512], name[32];
    double x[6] = {-1e308, 0, 5e-324, 1e308, INFINITY, NAN}, y[6] = {1e308, -1e308, 0, 5e-324, NAN, -INFINITY};
    double cx[3] = {1, 2, 3}, cy[3] = {7, 7, 7};
    for (int log = 0; log < 4; log++) {
        snprintf(name, sizeof name, "extreme%d.png", log);
        tmp_path(path, sizeof path, name);
        df_plot_series s[2] = {{"huge", x, y, 6, 1}, {"flat", cx, cy, 3, 0}};
        df_plot_opts o = {.title = "extremes", .logx = log & 1, .logy = log >> 1};
        CHECK_OK(df_plot_lines(path, &o, s, 2));
        picture p;
        CHECK(picture_load(path, &p) && p.w == 800, "%s: unreadable", path);
        free(p.rgb);
    }
    tmp_path(csv, sizeof csv, "extreme.csv");
    tmp_path(path, sizeof path, "extreme-progress.png");
    write_text(csv, "step,epoch,loss_q0,loss_q1,loss_q2,loss_q3,elapsed_sec,images,fd,kid\n"
                    "-1e308,1e300,1e308,5e-324,-1,0,1e308,1e308,1e308,-1e308\n"
                    "1e308,-1e300,1e-308,1e308,inf,nan,-1e308,-1e308,5e-324,1e308\n"
                    "5,1,0.5,0.4,0.3,0.2,1e308,1e308,1,1\n"
                    "6,1,0.5,0.4,0.3,0.2,-1e308,-1e308,2,2\n");
    CHECK_OK(df_plot_training_progress(csv, path));
    picture p;
    CHECK(picture_load(path, &p) && p.w == DF_PROGRESS_WIDTH, "%s: unreadable", path);
    free(p.rgb);
}

/* ---- comparing runs (df_run_evals_read, df_compare_runs) ------------------------------------------------ */

/* Run A: the full header, training rows, an event row, garbage, a CRLF evaluation row, an evaluation row
 * without KID, elapsed_sec starting again from zero (an old resume) and a torn evaluation row at the end.
 * Run B: other columns in another order, no kid column. Run C: training rows only. */
static void compare_fixture(char dir[3][512]) {
    const char *names[3] = {"runa", "runb", "runc"};
    for (int k = 0; k < 3; k++) tmp_path(dir[k], sizeof dir[k], names[k]), mkdir(dir[k], 0755);
    char csv[600];
    snprintf(csv, sizeof csv, "%s/loss.csv", dir[0]);
    write_text(csv, "step,epoch,loss,loss_avg,loss_q0,loss_q1,loss_q2,loss_q3,lr,grad_norm,images_per_sec,"
                    "elapsed_sec,images,fd,kid,eval_sec\n"
                    "10,0,0.5,0.5,0.1,0.2,0.3,0.4,1e-4,1,100,30.0,640,,,\n"
                    "100,0,0.3,0.3,0.1,0.2,0.3,0.4,1e-4,1,100,90.0,6400,150.5,0.125,20.0\n"
                    "150,0,,,,,,,,,,,,,,\n"
                    "garbage \x01 line,,,\n"
                    "200,0,0.2,0.2,0.1,0.2,0.3,0.4,1e-4,1,100,180.0,12800,80.25,0.0625,20.0\r\n"
                    "210,0,0.2,0.2,0.1,0.2,0.3,0.4,1e-4,1,100,30.0,13440,,,\n"
                    "300,1,,,,,,,,,,120.0,19200,40.125,,20.0\n"
                    "400,1,,,,,,,,,,150.0,25600,12");
    snprintf(csv, sizeof csv, "%s/loss.csv", dir[1]);
    write_text(csv, "fd,images,step,elapsed_sec,loss_q0\n"
                    ",1000,10,6.0,0.5\n"
                    "300,3200,50,120.0,0.4\n"
                    ",6000,90,270.0,0.3\n"
                    "100,9600,150,300.0,0.3\n");
    snprintf(csv, sizeof csv, "%s/loss.csv", dir[2]);
    write_text(csv, "step,elapsed_sec,images,fd,kid\n10,6.0,640,,\n20,12.0,1280,,\n");
}

/* The evaluation rows come back exactly, in order, whatever else the log holds; a log without any is
 * refused by name; labels default to the directory's name and a loss.csv path names its directory. */
TEST(compare_reads_evaluation_rows) {
    char dir[3][512], csv[600];
    compare_fixture(dir);
    df_run_evals a, b, c;
    CHECK_OK(df_run_evals_read(dir[0], NULL, &a));
    const df_run_eval want_a[3] = {{100, 6400, 1.5, 150.5, 0.125}, {200, 12800, 3, 80.25, 0.0625},
                                   {300, 19200, 5, 40.125, NAN}};   /* 5 = (180 + 120) / 60 after the reset */
    CHECK(a.n == 3, "run a: %d evaluation rows, want 3", a.n);
    for (int i = 0; i < DF_MIN(a.n, 3); i++) {
        const df_run_eval *g = &a.rows[i], *w = &want_a[i];
        CHECK(g->step == w->step && g->images == w->images && g->minutes == w->minutes && g->fd == w->fd &&
                  (g->kid == w->kid || (isnan(g->kid) && isnan(w->kid))),
              "run a row %d: step %ld images %g minutes %g fd %g kid %g; want %ld %g %g %g %g", i, g->step, g->images,
              g->minutes, g->fd, g->kid, w->step, w->images, w->minutes, w->fd, w->kid);
    }
    CHECK(!strcmp(a.label, "runa"), "run a's label: \"%s\"", a.label);
    snprintf(csv, sizeof csv, "%s/loss.csv", dir[1]);
    CHECK_OK(df_run_evals_read(csv, NULL, &b));
    CHECK(b.n == 2 && b.rows[0].step == 50 && b.rows[0].images == 3200 && b.rows[0].minutes == 2 &&
              b.rows[0].fd == 300 && isnan(b.rows[0].kid) && b.rows[1].step == 150 && b.rows[1].minutes == 5 &&
              b.rows[1].fd == 100,
          "run b: %d rows", b.n);
    CHECK(!strcmp(b.label, "runb") && !strcmp(b.path, csv), "run b from its loss.csv: label \"%s\", path %s", b.label,
          b.path);
    df_run_evals_free(&b);
    CHECK_OK(df_run_evals_read(dir[1], "new recipe", &b));
    CHECK(!strcmp(b.label, "new recipe") && b.n == 2, "run b's given label: \"%s\"", b.label);
    df_status st = df_run_evals_read(dir[2], NULL, &c);
    char want[700];
    snprintf(want, sizeof want, "%s: no evaluation rows in loss.csv: train with --eval-every N", dir[2]);
    CHECK(st == DF_ERR_FORMAT && !strcmp(df_error(), want) && c.n == 0 && !c.rows, "run c: %s (%s)",
          df_status_name(st), df_error());
    snprintf(csv, sizeof csv, "%s/nothing", dir[2]);
    st = df_run_evals_read(csv, NULL, &c);
    CHECK(st == DF_ERR_IO, "a missing run: %s (%s)", df_status_name(st), df_error());
    df_run_evals_free(&a), df_run_evals_free(&b), df_run_evals_free(NULL);
}

/* The picture: a valid PNG of the default size (taller with the KID panel), each run's colour drawn, FD
 * falling to the right for a run whose FD falls; any unreadable run leaves nothing written. */
TEST(compare_draws_runs) {
    char dir[3][512], png[600];
    compare_fixture(dir);
    const char *runs[2] = {dir[0], dir[1]};
    df_run_evals ev[2];
    df_compare_params p;
    df_compare_params_default(&p);
    for (int kid = 1; kid >= 0; kid--) {
        p.kid = kid;
        tmp_path(png, sizeof png, kid ? "compare-kid.png" : "compare.png");
        CHECK_OK(df_compare_runs(runs, 2, &p, png, ev));
        CHECK(ev[0].n == 3 && ev[1].n == 2 && ev[1].rows[1].fd == 100, "the rows handed back: %d and %d", ev[0].n,
              ev[1].n);
        df_run_evals_free(&ev[0]), df_run_evals_free(&ev[1]);
        picture pic;
        if (!picture_load(png, &pic)) {
            CHECK(0, "%s: not a PNG cairo reads", png);
            continue;
        }
        CHECK(pic.w == 900 && pic.h == (kid ? 820 : 560), "%s: %dx%d", png, pic.w, pic.h);
        blob a = find_color(&pic, 0), b = find_color(&pic, 1);
        CHECK(a.count > 100 && b.count > 100, "%s: run a %d, run b %d pixels", png, a.count, b.count);
        /* run a's FD falls: its leftmost pixels of the FD panel sit higher than its rightmost */
        int xl = -1, xr = -1, yl = -1, yr = -1, ybottom = kid ? 480 : pic.h - 40;
        for (int x = 0; x < pic.w && xl < 0; x++)
            for (int y = 0; y < ybottom && xl < 0; y++)
                if (is_color(&pic, x, y, 0, 24) && x > 150) xl = x, yl = y;
        for (int x = pic.w - 1; x >= 0 && xr < 0; x--)
            for (int y = 0; y < ybottom && xr < 0; y++)
                if (is_color(&pic, x, y, 0, 24) && x < pic.w - 150) xr = x, yr = y;
        CHECK(xl >= 0 && xr > xl && yr > yl + 100, "%s: run a's line from (%d, %d) to (%d, %d)", png, xl, yl, xr, yr);
        free(pic.rgb);
    }
    p.by = DF_COMPARE_IMAGES;
    tmp_path(png, sizeof png, "compare-images.png");
    CHECK_OK(df_compare_runs(runs, 2, &p, png, NULL));
    CHECK(file_exists(png), "by images: no picture");
    /* a run with no evaluations, or missing: an error naming it, no picture, nothing handed back */
    const char *bad[2][2] = {{dir[0], dir[2]}, {"/nonexistent/run", dir[1]}};
    for (int k = 0; k < 2; k++) {
        tmp_path(png, sizeof png, k ? "compare-missing.png" : "compare-none.png");
        ev[0].n = ev[1].n = 7;
        df_status st = df_compare_runs(bad[k], 2, NULL, png, ev);
        CHECK(st != DF_OK && strstr(df_error(), k ? "/nonexistent/run" : dir[2]) && !file_exists(png) &&
                  ev[0].n == 0 && !ev[0].rows && ev[1].n == 0,
              "bad run %d: %s (%s), picture %s", k, df_status_name(st), df_error(), file_exists(png) ? "written" : "not written");
    }
    /* comparing by images needs the images column */
    char csv[600];
    snprintf(csv, sizeof csv, "%s/old.csv", dir[2]);
    write_text(csv, "step,elapsed_sec,fd\n100,60,50\n");
    const char *old[1] = {csv};
    tmp_path(png, sizeof png, "compare-old.png");
    df_status st = df_compare_runs(old, 1, &p, png, NULL);
    CHECK(st == DF_ERR_FORMAT && strstr(df_error(), "no images seen") && !file_exists(png), "by images without images: %s",
          df_error());
    p.by = DF_COMPARE_MINUTES;
    CHECK_OK(df_compare_runs(old, 1, &p, png, NULL));
    st = df_compare_runs(old, 0, &p, png, NULL);
    CHECK(st == DF_ERR_ARG, "no runs: %s", df_status_name(st));
}
