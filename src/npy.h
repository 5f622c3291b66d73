/* NumPy .npy arrays of images: a validating reader (uint8, float32, float64; NPY versions 1.0, 2.0, 3.0)
 * and the uint8 writer behind `diffuse sample --npy`: the encoder the fuzzer uses (the rest is in diffuse.h). */
#ifndef DF_NPY_H
#define DF_NPY_H

#include "diffuse.h"

/* The bytes df_npy_save_images writes, in a malloc'd buffer (*buf, *len); `name` names them in messages. */
df_status df_npy_encode_images(const char *name, const float *x, int n, int c, int h, int w, unsigned char **buf,
                               size_t *len);

#endif
