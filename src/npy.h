/* NumPy .npy arrays of images: a validating reader (uint8, float32, float64; NPY versions 1.0, 2.0, 3.0)
 * and the uint8 writer behind `diffuse sample --npy`. Not yet part of the public API. */
#ifndef DF_NPY_H
#define DF_NPY_H

#include "diffuse.h"

#define DF_NPY_MAX_IMAGES 10000000   /* N in a file the reader takes; H and W are at most DF_MAX_SIZE */

/* Write n images (N, C, H, W) in [-1, 1] as a NumPy .npy array of uint8 (N, H, W, C), values
   round((x + 1) * 127.5) clamped to 0..255 (NaN as 0), what `diffuse sample --npy` writes. Atomic.
   n is 1..DF_NPY_MAX_IMAGES, h and w 1..DF_MAX_SIZE, c 1..DF_MAX_CHANNELS (the reader takes 1 or 3). */
df_status df_npy_save_images(const char *path, const float *x, int n, int c, int h, int w);

/* Read images from a .npy: dtype uint8 ('|u1', values 0..255) or float32/float64 little-endian
   ('<f4', '<f8', values in [0, 1]), C order, shape (N, H, W) (gray) or (N, H, W, C) with C 1 or 3.
   Returns a malloc'd (N, C, H, W) float array in [-1, 1] (*x, free with free()) and the sizes.
   Anything else is refused with one line naming the file; then *x is NULL and the sizes 0. */
df_status df_npy_load_images(const char *path, float **x, int *n, int *c, int *h, int *w);
/* The same on bytes in memory (the caller keeps them); `name` names them in messages (for the fuzzer). */
df_status df_npy_load_images_memory(const void *buf, size_t len, const char *name, float **x, int *n, int *c, int *h,
                                    int *w);

/* The bytes df_npy_save_images writes, in a malloc'd buffer (*buf, *len); `name` names them in messages. */
df_status df_npy_encode_images(const char *name, const float *x, int n, int c, int h, int w, unsigned char **buf,
                               size_t *len);

#endif
