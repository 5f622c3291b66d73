/* The C side of tests/ref/inception_ref.py: FID Inception-v3 features of the images in a safetensors file,
 * through the float32 path and the float64 reference path, written as raw little-endian arrays.
 *
 * usage: inception_features WEIGHTS.safetensors IMAGES.safetensors OUT
 *   IMAGES holds tensors (n, c, h, w) with values in [-1, 1]; for each, in name order, OUT.f32 gets its
 *   (n, 2048) float32 features and OUT.f64 its (n, 2048) float64 features. */
#include "inception.h"
#include "safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(void) {
    fprintf(stderr, "inception_features: %s\n", df_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: inception_features WEIGHTS.safetensors IMAGES.safetensors OUT\n");
        return 2;
    }
    df_inception *n32, *n64;
    if (df_inception_load(argv[1], &n32) || df_inception_load_f64(argv[1], &n64)) return fail();
    st_file f;
    if (st_open(argv[2], &f)) return fail();
    char p32[4096], p64[4096];
    snprintf(p32, sizeof p32, "%s.f32", argv[3]);
    snprintf(p64, sizeof p64, "%s.f64", argv[3]);
    FILE *o32 = fopen(p32, "wb"), *o64 = fopen(p64, "wb");
    if (!o32 || !o64) {
        perror(argv[3]);
        return 1;
    }
    int status = 0;
    for (int t = 0; t < f.n && !status; t++) {   /* st_file keeps its tensors sorted by name */
        const st_tensor *T = &f.tensors[t];
        if (T->ndim != 4) {
            fprintf(stderr, "inception_features: %s is not (n, c, h, w)\n", T->name);
            return 1;
        }
        const int n = (int)T->shape[0], c = (int)T->shape[1], h = (int)T->shape[2], w = (int)T->shape[3];
        const size_t count = (size_t)st_numel(T), nf = (size_t)n * DF_INCEPTION_FEATURES;
        float *x = malloc(count * sizeof *x), *y = malloc(nf * sizeof *y);
        double *xd = malloc(count * sizeof *xd), *yd = malloc(nf * sizeof *yd);
        if (!x || !y || !xd || !yd) return 1;
        if (st_read_f32(&f, T, x, count)) return fail();
        for (size_t i = 0; i < count; i++) xd[i] = x[i];   /* the images are float32 values: exact */
        if (df_inception_features(n32, n, c, h, w, x, y) || df_inception_features_f64(n64, n, c, h, w, xd, yd))
            return fail();
        if (fwrite(y, sizeof *y, nf, o32) != nf || fwrite(yd, sizeof *yd, nf, o64) != nf) status = 1;
        free(x), free(y), free(xd), free(yd);
    }
    if (fclose(o32) || fclose(o64)) status = 1;
    if (status) perror(argv[3]);
    st_close(&f);
    df_inception_free(n32);
    df_inception_free(n64);
    return status;
}
