/* The README's library example as a program: 16 images from a trained model with DPM-Solver++ (2M),
 * written as one PNG grid. usage: example_sample_grid MODEL OUT.png */
#include "diffuse.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL OUT.png\n", argv[0]);
        return 2;
    }
    df_model *m;
    df_scheduler_config sc;
    if (df_pipeline_load(argv[1], 0, &m, &sc) != DF_OK) {
        fprintf(stderr, "%s\n", df_error());   /* one line naming the file and the problem */
        return 1;
    }
    const df_unet_config *cfg = df_model_config(m);
    const int n = 16, c = cfg->in_channels, s = cfg->sample_size;
    df_schedule sched;
    df_schedule_from_config(&sc, &sched);
    df_generate_params g;
    df_generate_params_for(&g, m, &sc, &sched);   /* DDIM, 50 steps, batches of 64; the model's prediction */
    g.n = n, g.seed = 42;
    g.sampler.kind = DF_SAMPLER_DPMPP_2M, g.sampler.steps = 20;
    float *x = malloc(sizeof(float) * (size_t)n * c * s * s);
    df_status st = x ? df_generate(&g, x) : DF_ERR_NOMEM;   /* 16 images in [-1, 1] */
    if (!st) st = df_image_save_grid(argv[2], x, n, c, s, s, 4, 2);
    if (st) fprintf(stderr, "%s\n", x ? df_error() : "out of memory");
    free(x);
    df_schedule_free(&sched);
    df_model_free(m);
    return st ? 1 : 0;
}
