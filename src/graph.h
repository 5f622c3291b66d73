/* The network as data: a parameter table with diffusers' state-dict names, and a linear tape of ops over
 * planned activation buffers. The ops' facts are one table (op_table, tape.c); the tape, its memory plan
 * and layouts live in tape.c; unet.c builds UNet2DModel on it; exec_real.c replays it. */
#ifndef DF_GRAPH_H
#define DF_GRAPH_H

#include "internal.h"

/* Adding an op: a row in op_table (tape.c), a forward/backward pair of kernels (ops_real.c) and its
 * dispatch row in exec_real.c. */
typedef enum {
    OP_CONV,         /* in[0] -> out; w, b; conv shape in conv; in[1] optional: a residual added to the output
                        (a pointwise one between plain values: the transformer's additions folded in) */
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
    OP_ATTENTION,    /* softmax(q^T k * scale) v; in q (N, heads*d, Lq), k and v (N, heads*d, Lk); iarg[0] heads,
                        iarg[1] causal; saved: probabilities (N, heads, Lq, Lk) */
    OP_DROPOUT,      /* farg[0] p; the mask is regenerated from the seed, nothing saved */
    OP_AFFINE,       /* farg[0] * in[0] + farg[1] */
    OP_NORM_SILU,    /* silu(GroupNorm(in[0] + in[1][:, :, None, None])), in[1] optional; as OP_GROUPNORM */
    OP_MEAN_HW,      /* (N, C, H, W) -> (N, C, 1, 1): the mean over the image (plain layout) */
    OP_LAYERNORM,    /* over channels at each position; farg[0] eps; w (gamma), b (beta); saved: mean, rstd
                        (N*H*W each) */
    OP_ACT,          /* iarg[0] a df_act (diffuse.h): GELU (erf), GELU (tanh), quick GELU */
    OP_GEGLU,        /* (N, 2C, H, W) -> (N, C, H, W): the first half times gelu(the second) */
    OP_TOKENS,       /* no value input: token ids (the labels, N*L) -> (N, D, 1, L): rows of w (token table)
                        plus rows of b (position table) */
    OP_COUNT
} op_kind;


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

/* A 1x1 convolution with stride 1 and no padding: a GEMM per image. */
static inline int conv_is_pointwise(const conv_geom *g) {
    return g->k == 1 && g->stride == 1 && g->pad_t == 0 && g->pad_l == 0 && g->ho == g->h && g->wo == g->w;
}

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
    int       ctx_only; /* its output depends on the text states alone (a cross-attention's keys and values):
                           an inference pass may keep it from the last one (unet_graph.ctx_kept) */
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
    float     std;          /* INIT_NORMAL's standard deviation (0: 1) */
} gparam;

typedef struct unet_graph {
    /* parameter table (the same for every batch size) */
    gparam *params;
    int     nparams, cap_params;
    size_t  nparam_values;
    /* the tape */
    gnode  *nodes;
    int     nnodes, cap_nodes;
    gvalue *vals;
    int     nvals, cap_vals;
    df_status err;          /* the first failure while building (tape_* calls then do nothing) */
    size_t  act_size;       /* elements in the activation block (values + saved buffers) */
    size_t  infer_size;     /* the same for an inference pass (ioff, isaved) */
    size_t  grad_size;      /* elements in the gradient block (goff) */
    int     infer;          /* the forward pass uses the inference placement (no backward after it) */
    size_t  scratch_size;   /* elements of per-thread scratch */
    int     x, out;         /* input and output value ids (x -1: no float input, as a text encoder's tokens) */
    int     ctx;            /* a second input, the text states (N, cross_attention_dim, 1, L) a condition model
                               attends to; -1: none */
    int     ctx_kept;       /* set by the caller: the inference placement still holds the outputs of the ctx_only
                               nodes for the text states and weights in place (their space is never reused), so
                               an inference pass skips them */
    int     n, h, w;
    double  flops;          /* forward FLOPs for the whole batch */
    int     has_dropout;
    /* float32 convolutions through oneDNN (conv_fast.h); NULL or use_fast == 0: the reference path */
    struct conv_fast *fast;
    int     use_fast, fast_tried, fast_threads;   /* fast_threads: the OpenMP threads it was planned for */
    double *prof;           /* when set: seconds per op kind, forward [0, OP_COUNT), backward after */
} unet_graph;

/* ---- the op table ----------------------------------------------------------------------------------- */

/* How an op meets the channel-blocked layout (tape_set_layout). */
typedef enum {
    LAYOUT_SAME,      /* its spatial operands share one layout: one plain operand makes them all plain */
    LAYOUT_CONVERTS,  /* converts between layouts itself (oneDNN's convolution primitives) */
    LAYOUT_PLAIN,     /* every operand plain */
} op_layout;

/* Whether the backward pass may rebuild the op's output instead of keeping it (tape_plan). */
typedef enum {
    REMAT_NO,
    REMAT_COPY,        /* a copy of its inputs (concat, upsample): rebuilt from them when keeping them costs less */
    REMAT_NORM,        /* the fused norm: rebuilt from its input and saved statistics */
    REMAT_AFTER_NORM,  /* dropout right after a fused norm: rebuilt from the same, its mask regenerated */
} op_remat;

typedef struct {
    const char *name;
    unsigned    backward_reads;   /* bit k: its backward reads in[k]'s value (training keeps it) */
    op_layout   layout;
    op_remat    remat;
    /* of node d in g (NULL: 0): forward FLOPs for the batch, elements saved for the backward pass
     * (at d->saved), elements of per-thread scratch */
    double (*flops)(const unet_graph *g, const gnode *d);
    size_t (*saved)(const unet_graph *g, const gnode *d);
    size_t (*scratch)(const unet_graph *g, const gnode *d);
} op_info;

extern const op_info op_table[OP_COUNT];

/* ---- building and planning a tape (tape.c) ---------------------------------------------------------- */

/* A parameter: its shape's trailing zeros are unused dimensions ({cout, cin} is 2-D). */
typedef struct {
    init_kind init;
    int       fan_in;
    int       shape[4];
    float     std;      /* INIT_NORMAL: the standard deviation (0: 1) */
} param_spec;

/* Each returns the new id (-1, or NULL, once g->err is set: out of memory). */
int    tape_param(unet_graph *g, param_spec p, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int    tape_value(unet_graph *g, int n, int c, int h, int w);
gnode *tape_node(unet_graph *g, op_kind op, int in0, int in1, int in2, int out);
/* A convolution of x by parameters w (weight) and b (bias): k x k, stride, padding top/left/bottom/right.
 * Returns its output value. */
int    tape_conv(unet_graph *g, int x, int w, int b, int cout, int k, int stride, const int pad[4]);
/* A Linear at every position (a 1x1 convolution with a 2-D weight): "<name>.weight" (cout, cin) initialised as
 * winit says, and "<name>.bias" (cout) as *binit says, or no bias when binit is NULL (the shapes, and the fan-in
 * of INIT_FANIN_UNIFORM, are set here). */
int    tape_token_linear(unet_graph *g, int x, int cout, param_spec winit, const param_spec *binit, const char *name);
/* The same plus the value `residual` (-1: none), added to the output by the same node. */
int    tape_token_linear_add(unet_graph *g, int x, int cout, param_spec winit, const param_spec *binit, const char *name,
                             int residual);
/* LayerNorm over the channels at each position: "<name>.weight" (ones) and "<name>.bias" (zeros). */
int    tape_layernorm(unet_graph *g, int x, float eps, const char *name);
/* After the last node: saved buffers, scratch and FLOPs from the op table, then the three placements
 * (training, inference, gradients). */
df_status tape_plan(unet_graph *g);
/* Choose the layout of every value: channel blocks of blk (8 or 16) where the ops' layout rules allow it
 * (channels divisible by blk, more than one pixel, not the tape's input or output), plain elsewhere;
 * blk = 1 makes everything plain. Offsets do not change. */
void tape_set_layout(unet_graph *g, int blk);

/* ---- a table's parameters (params.c) ---------------------------------------------------------------- */

/* Fill params (g->nparam_values) by each entry's init: PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
 * ones, zeros, or N(0, std^2). */
void params_init(const unet_graph *g, float *params, df_rng *rng);
/* Another name a file may give the tensor `name` (into out), or 0. */
typedef int (*param_alias_fn)(const char *name, char *out, size_t cap);
struct st_file;
/* Read every entry of g's table from the open safetensors file f (path names it in messages): each must be
 * there (under its name or its alias), with the table's shape (a Linear's 2-D weight may be stored as a 1x1
 * convolution's 4-D one) and finite values; a tensor the table lacks fails unless `ignore` (NULL-ended) lists
 * its name. */
df_status params_read(const unet_graph *g, float *params, struct st_file *f, const char *path, param_alias_fn alias,
                      const char *const *ignore);
/* Entry i's name, dimensions, shape and offset (any may be NULL); NULL when i is out of range. */
const char *graph_param_info(const unet_graph *g, int i, int *ndim, int shape[4], size_t *offset);
/* Write the table's tensors to path as safetensors (float32, metadata format: pt). */
df_status params_write(const unet_graph *g, const float *params, const char *path);

/* Build the parameter table and tape of UNet2DModel, or of UNet2DConditionModel attending to text states of
 * ctx_len tokens, for a batch of n images of h x w (unet.c). */
df_status unet_build(const df_unet_config *cfg, int n, int h, int w, int ctx_len, unet_graph *g);
void      unet_graph_free(unet_graph *g);
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
