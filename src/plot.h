/* Plots drawn with cairo as PNG files: a general line chart (evaluation sweeps such as FD against sampler
 * steps) and the training-progress picture read from a run's loss.csv. Internal to the library. */
#ifndef DF_PLOT_H
#define DF_PLOT_H

#include "diffuse.h"

/* One line of a chart: n points (x[i], y[i]). A point whose x or y is NaN or infinite (or not positive on
 * a log axis) is left out and breaks the line there, so NaN marks a gap; a point with no drawn neighbour
 * is shown as a dot. label NULL: no legend entry (nor for a series of no points). marker: also draw a
 * dot at every point. */
typedef struct {
    const char   *label;
    const double *x, *y;
    int           n;
    int           marker;
} df_plot_series;

/* A chart's text and axes. NULL strings are left out; logx / logy put that axis on a log scale (ticks
 * at powers of ten, or 1-2-5 within a short range); width, height in pixels, 0 for 800 x 500. */
typedef struct {
    const char *title, *xlabel, *ylabel;
    int         logx, logy;
    int         width, height;
} df_plot_opts;

/* Series i is drawn in palette colour i (modulo the palette's size), as 8-bit RGB. */
#define DF_PLOT_PALETTE_SIZE 10
void df_plot_color(int i, unsigned char rgb[3]);

/* Draw the series as a line chart (white background, light grid, "nice" 1-2-5 ticks, a legend placed in
 * the corner that hides the least data) into the PNG file at path, written to a temporary name in the
 * same directory and renamed into place: never half a file. o may be NULL (defaults). */
df_status df_plot_lines(const char *path, const df_plot_opts *o, const df_plot_series *s, int nseries);

/* The size of the training-progress picture. */
#define DF_PROGRESS_WIDTH  1000
#define DF_PROGRESS_HEIGHT 800

/* Draw the training-progress picture of a run from its loss.csv into png_path (atomically, as above).
 * Columns are found by the names in the header line: the loss per quarter of the timestep range
 * (loss_q0 .. loss_q3, lightly smoothed, log scale) against `images` seen (or `step` when the file has
 * no images column); below it `fd` and, when present, `kid` at the rows where an evaluation ran; the
 * elapsed time (elapsed_sec) as a second axis along the top. Lines that do not parse are skipped, so
 * a file with event rows, empty fields or no data rows at all (even an empty file) still gives a
 * picture; a file whose first line names neither step nor images is refused (DF_ERR_FORMAT). */
df_status df_plot_training_progress(const char *loss_csv, const char *png_path);

#endif
