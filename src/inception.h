/* Inception-v3 as pytorch-fid runs it for FID: the network's layer table, weight loading with BatchNorm
 * folded into the convolutions, and the 2048-d pool3 features of images resized to 299x299. */
#ifndef DF_INCEPTION_H
#define DF_INCEPTION_H

#include "internal.h"

/* ---- the interface -------------------------------------------------------------------------------- */

typedef struct df_inception df_inception;

/* Load pytorch-fid's FID Inception-v3 weights from a safetensors file whose names are those of its
 * state dict ("Conv2d_1a_3x3.conv.weight", "Mixed_5b.branch1x1.bn.running_var", ..., "fc.weight").
 * Every tensor must be present with its exact shape and finite values; F32, F16, BF16 and F64 are
 * read. Each BatchNorm (eval mode, eps 0.001) is folded into its convolution here: the net holds
 * float32 weights w * gamma / sqrt(var + eps) and biases beta - mean * gamma / sqrt(var + eps).
 * Tensors the network does not use (num_batches_tracked) are ignored; fc is checked, not kept.
 * Errors name the file and the tensor. */
df_status df_inception_load(const char *path, df_inception **out);
/* The same weights folded in float64 and kept in float64: the reference path the tests compare with.
 * Such a net runs only df_inception_features_f64 (and a float32 net only df_inception_features). */
df_status df_inception_load_f64(const char *path, df_inception **out);
void      df_inception_free(df_inception *net);     /* accepts NULL */
/* OpenMP threads of the net's calls (0, the default: the caller's OpenMP setting, omp_get_max_threads). */
void      df_inception_set_threads(df_inception *net, int n);
int       df_inception_threads(const df_inception *net);

/* pool3 features (n, 2048) of n images x (n, c, h, w) with values in [-1, 1]: c is 1 (gray, repeated to
 * RGB) or 3; any h, w in 1 .. DF_MAX_SIZE (resized to 299x299 bilinearly as pytorch-fid does). Memory is
 * planned once per call for a chunk of images (nothing is allocated per layer); the work is split over
 * df_inception_threads(net) OpenMP threads. n = 0 does nothing. */
df_status df_inception_features(df_inception *net, int n, int c, int h, int w, const float *x, float *feats);
df_status df_inception_features_f64(df_inception *net, int n, int c, int h, int w, const double *x,
                                    double *feats);

#define DF_INCEPTION_SIZE     299    /* the side every image is resized to */
#define DF_INCEPTION_FEATURES 2048   /* pool3 */

/* ---- shared by inception.c and inception_real.c ----------------------------------------------------- */

/* The kinds of block, in the order pytorch-fid's FIDInceptionV3 runs them. A and C and E_1 average-pool
 * with count_include_pad=False (TensorFlow's pooling), E_2 max-pools in its pool branch; B and D are
 * torchvision's InceptionB and InceptionD unchanged. */
typedef enum { INC_STEM, INC_A, INC_B, INC_C, INC_D, INC_E1, INC_E2, INC_KIND_COUNT } inc_kind;

/* The convolutions of each kind of block, by their index inside the block (the order of the layer
 * table in inception.c, which gives their state-dict names and shapes). */
enum { STEM_1A, STEM_2A, STEM_2B, STEM_3B, STEM_4A, STEM_COUNT };
enum { A_1X1, A_5X5_1, A_5X5_2, A_DBL_1, A_DBL_2, A_DBL_3, A_POOL, A_COUNT };
enum { B_3X3, B_DBL_1, B_DBL_2, B_DBL_3, B_COUNT };
enum { C_1X1, C_7X7_1, C_7X7_2, C_7X7_3, C_DBL_1, C_DBL_2, C_DBL_3, C_DBL_4, C_DBL_5, C_POOL, C_COUNT };
enum { D_3X3_1, D_3X3_2, D_7X7X3_1, D_7X7X3_2, D_7X7X3_3, D_7X7X3_4, D_COUNT };
enum { E_1X1, E_3X3_1, E_3X3_2A, E_3X3_2B, E_DBL_1, E_DBL_2, E_DBL_3A, E_DBL_3B, E_POOL, E_COUNT };

#define INC_BLOCKS 12   /* the stem, Mixed_5b .. Mixed_7c */
#define INC_CONVS  94

/* Activation buffers of one chunk, per image, in elements (the forward's plan): two for the values
 * between blocks, two for the branches inside a block; `cols` is the largest im2col panel (per thread).
 * Values are laid out (C, N, H, W) inside a chunk: a 1x1 convolution over the chunk is one GEMM and
 * a branch writes its channels of the concatenated output in place. */
typedef struct {
    size_t act[4];
    size_t cols;
} inc_plan;

/* One convolution + folded BatchNorm + ReLU (torchvision's BasicConv2d). */
typedef struct {
    char   name[40];                       /* state-dict prefix, e.g. "Mixed_6b.branch7x7_2" */
    int    cin, cout, kh, kw, stride, ph, pw;
    size_t w_off, b_off;                   /* in the weight block, in elements */
} inc_conv;

struct df_inception {
    int      f64;                          /* the weight block holds doubles */
    inc_kind kind[INC_BLOCKS];
    int      first[INC_BLOCKS];            /* index of each block's first convolution */
    inc_conv conv[INC_CONVS];
    void    *w;                            /* folded weights (cout, cin, kh, kw) and biases (cout) */
    size_t   nw;                           /* elements in w */
    inc_plan plan;                         /* activation sizes per image, from a planning pass */
    int      threads;                      /* 0: the caller's OpenMP setting */
};

/* An im2col panel holds at least INC_PANEL_COLS output pixels and, past that, about INC_PANEL values
 * (1 MiB of float32): a panel stays in cache between im2col and its GEMM, and the GEMM is wide enough
 * for BLAS to run near its peak. */
#define INC_PANEL      (1 << 18)
#define INC_PANEL_COLS 256

/* Compiled twice from inception_real.c, for float32 and float64. */
/* Per-image buffer sizes of the forward (a dry run of it: nothing is computed). */
void inc_plan_f32(const df_inception *net, inc_plan *p);
void inc_plan_f64(const df_inception *net, inc_plan *p);
/* feats (n, 2048) of x (n, c, h, w): act[k] holds net->plan.act[k] * n elements, cols holds
 * net->plan.cols elements per thread, for nthreads threads. */
void inc_forward_f32(const df_inception *net, int n, int c, int h, int w, const float *x, float *feats,
                     float *const act[4], float *cols, int nthreads);
void inc_forward_f64(const df_inception *net, int n, int c, int h, int w, const double *x, double *feats,
                     double *const act[4], double *cols, int nthreads);
/* One plane resized bilinearly as torch.nn.functional.interpolate(mode="bilinear",
 * align_corners=False) does it: y (oh, ow) from x (h, w). */
void inc_resize_f32(float *y, int oh, int ow, const float *x, int h, int w);
void inc_resize_f64(double *y, int oh, int ow, const double *x, int h, int w);

/* For tests and benchmarks: a weights file with every tensor of the FID Inception-v3 (pytorch-fid's
 * names and shapes, F32) drawn from `seed`: convolutions uniform with variance 2 / fan_in, BatchNorm
 * weights in [0.5, 1.5], biases and means in [-0.2, 0.2], variances in [0.5, 1.5], so activations keep
 * their scale through the 94 layers and the folding is exercised. Written atomically. */
df_status df_inception_write_random(const char *path, uint64_t seed);

#endif
