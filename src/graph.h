/* The network as data: a parameter table with diffusers' state-dict names, and a linear tape of ops over
 * planned activation buffers. Built once per (config, batch, size); replayed forward and in reverse. */
#ifndef DF_GRAPH_H
#define DF_GRAPH_H

#include "internal.h"

typedef enum {
    OP_CONV,         /* in[0] -> out; w, b; conv shape in iarg */
    OP_LINEAR,       /* (N, in) -> (N, out); w, b */
    OP_GROUPNORM,    /* iarg[0] groups; farg[0] eps; w (gamma), b (beta); saved: mean, rstd (N*G each) */
    OP_SILU,
    OP_TIMESTEP,     /* no value input: sinusoids of t (iarg[2]=0) or class labels (iarg[2]=1);
                        iarg[0] flip_sin_to_cos; farg[0] freq_shift */
    OP_EMBED,        /* class labels -> rows of w */
    OP_UPSAMPLE,     /* nearest 2x */
    OP_AVGPOOL,      /* 2x2 mean, stride 2 */
    OP_CONCAT,       /* channels of in[0] then in[1] */
    OP_ADD,          /* (in[0] + in[1]) * farg[0] */
    OP_ADD_NC,       /* in[0] (N,C,H,W) + in[1] (N,C) broadcast over H, W */
    OP_SCALE_SHIFT,  /* in[0] * (1 + in[1][:, :C]) + in[1][:, C:] */
    OP_ATTENTION,    /* softmax(q^T k * scale) over positions; in q, k, v (N, heads*d, L); iarg[0] heads;
                        saved: probabilities (N, heads, L, L) */
    OP_DROPOUT,      /* farg[0] p; the mask is regenerated from the seed, nothing saved */
    OP_AFFINE,       /* farg[0] * in[0] + farg[1] */
    OP_NORM_SILU,    /* silu(GroupNorm(in[0] + in[1][:, :, None, None])), in[1] optional; as OP_GROUPNORM */
    OP_MEAN_HW,      /* (N, C, H, W) -> (N, C, 1, 1): the mean over the image (plain layout) */
    OP_COUNT
} op_kind;

extern const char *const op_names[OP_COUNT];

typedef struct {
    int n, c, h, w;
    int blk;         /* layout: 1 plain (N, C, H, W); 8 or 16 channel-blocked (N, C/blk, H, W, blk) */
    size_t off;      /* offset into the activation block, in elements (training: every value kept) */
    size_t ioff;     /* offset when only a forward pass runs (space reused after the last reader) */
    size_t goff;     /* offset of its gradient in the gradient block (space reused) */
    int producer;    /* the node that computes it (-1: the tape's input) */
    int remat;       /* training does not keep it: the backward pass rebuilds it into the gradient
                        block at roff from its producer's inputs */
    size_t roff;
} gvalue;

typedef struct {
    int cin, h, w, cout, k, stride, pad_t, pad_l, ho, wo;
} conv_geom;

typedef struct {
    op_kind   op;
    int       in[3];    /* value ids, -1 when unused */
    int       out;
    int       w, b;     /* parameter ids, -1 when unused */
    int       iarg[4];
    float     farg[2];
    conv_geom conv;     /* for OP_CONV */
    size_t    saved;    /* offset of this node's saved buffer in the activation block */
    size_t    saved_len, isaved;   /* its length, and its offset in an inference pass */
    int       gzero;    /* backward: bit k: zero in[k]'s gradient first (this node is its last reader);
                           bit 3: the output has no gradient (nothing reads it) */
    int       rebuild;  /* backward: bit k: rebuild in[k] (a remat value) before this node */
} gnode;

typedef enum { INIT_FANIN_UNIFORM, INIT_ONE, INIT_ZERO, INIT_NORMAL } init_kind;

typedef struct {
    char      name[112];
    int       ndim;
    int       shape[4];
    size_t    numel, off;   /* offset into the parameter block */
    init_kind init;
    int       fan_in;
} gparam;

typedef struct {
    /* parameter table (the same for every batch size) */
    gparam *params;
    int     nparams, cap_params;
    size_t  nparam_values;
    /* the tape */
    gnode  *nodes;
    int     nnodes, cap_nodes;
    gvalue *vals;
    int     nvals, cap_vals;
    size_t  act_size;       /* elements in the activation block (values + saved buffers) */
    size_t  infer_size;     /* the same for an inference pass (ioff, isaved) */
    size_t  grad_size;      /* elements in the gradient block (goff) */
    int     infer;          /* the forward pass uses the inference placement (no backward after it) */
    size_t  scratch_size;   /* elements of per-thread scratch */
    int     x, out;         /* input and output value ids */
    int     n, h, w;
    double  flops;          /* forward FLOPs for the whole batch */
    int     has_dropout;
    /* float32 convolutions through oneDNN (conv_fast.h); NULL or use_fast == 0: the reference path */
    struct conv_fast *fast;
    int     use_fast, fast_tried;
    double *prof;           /* when set: seconds per op kind, forward [0, OP_COUNT), backward after */
} unet_graph;

/* Build the parameter table and tape of UNet2DModel for a batch of n images of h x w. */
df_status unet_build(const df_unet_config *cfg, int n, int h, int w, unet_graph *g);
void      unet_graph_free(unet_graph *g);
/* Choose the layout of every value: channel blocks of blk (8 or 16) where an op chain allows it (channels
 * divisible by blk, more than one pixel, not the tape's input or output, not attention operands), plain
 * elsewhere; blk = 1 makes everything plain. Offsets do not change. */
void      unet_set_layout(unet_graph *g, int blk);
int       unet_find_param(const unet_graph *g, const char *name);

/* Replay the tape (exec_real.c, compiled for float and double). `act` holds act_size elements
 * (infer_size when g->infer: no backward follows), `scratch` scratch_size per thread; t has n timesteps, labels n class indices (or NULL).
 * dropout_seed: 0 turns dropout off (eval), otherwise masks are drawn from it. */
void unet_forward_f32(const unet_graph *g, const float *params, float *act, float *scratch,
                      const float *t, const int *labels, uint64_t dropout_seed);
void unet_forward_f64(const unet_graph *g, const double *params, double *act, double *scratch,
                      const double *t, const int *labels, uint64_t dropout_seed);
/* Reverse replay: dact (grad_size elements) must hold the gradient of the output value at its goff
 * (every other gradient is zeroed by its last reader); adds parameter gradients into dparams and leaves
 * d(input) in dact at g->vals[g->x].goff. */
void unet_backward_f32(const unet_graph *g, const float *params, float *dparams, const float *act,
                       float *dact, float *scratch, const int *labels, uint64_t dropout_seed);
void unet_backward_f64(const unet_graph *g, const double *params, double *dparams, const double *act,
                       double *dact, double *scratch, const int *labels, uint64_t dropout_seed);

#endif
