/* Fast float32 convolutions through oneDNN: the tape keeps (N, C, H, W); each convolution moves its
 * operands into the blocked layouts oneDNN's JIT kernels want, runs, and moves the result back.
 * Primitives and workspace are made once per tape, so a pass allocates nothing. Built only with
 * HAVE_DNNL; without it (or for a convolution oneDNN refuses) the im2col + BLAS path runs. */
#ifndef DF_CONV_FAST_H
#define DF_CONV_FAST_H

#include "graph.h"

typedef struct conv_fast conv_fast;

/* The channel block the kernels want on this CPU (16 with AVX-512, else 8; 1 without oneDNN). */
int       conv_fast_block(void);

/* Primitives for every OP_CONV node of g, for the layouts its values have now (unet_set_layout); *out stays NULL when oneDNN is not built in. */
df_status conv_fast_plan(const unet_graph *g, conv_fast **out);
void      conv_fast_free(conv_fast *f);
/* Bytes of workspace (blocked copies + oneDNN scratchpad) the plan holds. */
size_t    conv_fast_bytes(const conv_fast *f);

/* Node `node` of the tape: y = conv(x, w) + b. Returns 0 if this node has no fast primitive. */
int conv_fast_forward(conv_fast *f, int node, float *y, const float *x, const float *w, const float *b);
/* Adds the gradients (dx, dw, db; NULL ones skipped). Returns 0 if the node has no fast primitive.
 * When conv_fast_overwrites() says so, dx is written instead of added to: the tape's planner knows
 * the gradient buffer is fresh at this node (it would be zeroed first), so the caller skips that. */
int conv_fast_overwrites(const conv_fast *f, int node);
/* Whether node `node` has a fast primitive. */
int conv_fast_has(const conv_fast *f, int node);
int conv_fast_backward(conv_fast *f, int node, float *dx, float *dw, float *db, const float *dy, const float *x,
                       const float *w);

#endif
