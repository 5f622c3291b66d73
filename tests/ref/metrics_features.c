/* The metrics of diffuse on feature vectors given in a safetensors file ("real" and "gen", (n, d) F32),
 * printed as JSON, for tests/ref/metrics_ref.py to compare with an independent NumPy/PyTorch computation. */
#include "diffuse.h"
#include "safetensors.h"

#include <stdio.h>
#include <stdlib.h>

static float *read_rows(const st_file *f, const char *name, long *n, int *d) {
    const st_tensor *t = st_find(f, name);
    if (!t || t->ndim != 2) return NULL;
    *n = (long)t->shape[0], *d = (int)t->shape[1];
    float *x = malloc(sizeof(float) * (size_t)(*n) * (*d));
    if (x && st_read_f32(f, t, x, (size_t)(*n) * (*d))) {
        free(x);
        return NULL;
    }
    return x;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: metrics_features FEATURES.safetensors\n");
        return 2;
    }
    st_file f;
    if (st_open(argv[1], &f)) {
        fprintf(stderr, "%s\n", df_error());
        return 1;
    }
    long nr, ng;
    int d, d2;
    float *real = read_rows(&f, "real", &nr, &d), *gen = read_rows(&f, "gen", &ng, &d2);
    st_close(&f);
    if (!real || !gen || d != d2) {
        fprintf(stderr, "%s: need real and gen of the same width\n", argv[1]);
        return 1;
    }
    df_fstats sr, sg;
    double fd, kid, kid_sd, kid_se, p3, r3, p5, r5;
    df_rng rng;
    df_rng_init(&rng, 1);
    /* KID: one subset of all of the first m vectors of each set (deterministic); its standard error on the
     * whole sets */
    const long m = ng < nr ? ng : nr;
    if (df_fstats_compute(real, nr, d, &sr) || df_fstats_compute(gen, ng, d, &sg) || df_frechet_distance(&sr, &sg, &fd) ||
        df_kid(gen, m, real, m, d, 1, (int)m, &rng, &kid, &kid_sd, NULL) ||
        df_kid(gen, ng, real, nr, d, 1, 2, &rng, &kid_sd, NULL, &kid_se) ||
        df_precision_recall(real, nr, gen, ng, d, 3, &p3, &r3) || df_precision_recall(real, nr, gen, ng, d, 5, &p5, &r5)) {
        fprintf(stderr, "%s\n", df_error());
        return 1;
    }
    printf("{\"fd\": %.17g, \"kid\": %.17g, \"kid_se\": %.17g, \"precision3\": %.17g, \"recall3\": %.17g, "
           "\"precision5\": %.17g, \"recall5\": %.17g}\n", fd, kid, kid_se, p3, r3, p5, r5);
    df_fstats_free(&sr), df_fstats_free(&sg);
    free(real), free(gen);
    return 0;
}
