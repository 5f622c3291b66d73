/* oneDNN convolutions for the float32 tape (see conv_fast.h). Each convolution node owns its forward,
 * backward-data and backward-weights primitives with the layouts oneDNN chose (format_tag_any), the
 * reorders between those layouts and the tape's plain ones, and memory objects whose buffers are set
 * per call. All nodes share one workspace sized for the largest. Gradients are accumulated by reorders
 * with a sum post-op, so the tape's "backward adds" rule holds without extra passes. */
#include "conv_fast.h"

#include <string.h>

#ifndef HAVE_DNNL

df_status conv_fast_plan(const unet_graph *g, conv_fast **out) {
    (void)g;
    *out = NULL;
    return DF_OK;
}
void   conv_fast_free(conv_fast *f) { (void)f; }
size_t conv_fast_bytes(const conv_fast *f) { return 0; }
int    conv_fast_block(void) { return 1; }
int    conv_fast_overwrites(const conv_fast *f, int node) { return 0; }
int    conv_fast_has(const conv_fast *f, int node) { return 0; }
int    conv_fast_forward(conv_fast *f, int node, float *y, const float *x, const float *w, const float *b) { return 0; }
int    conv_fast_backward(conv_fast *f, int node, float *dx, float *dw, float *db, const float *dy, const float *x,
                          const float *w) {
    return 0;
}

#else

#include <dnnl.h>

/* A reorder between two layouts of one tensor; prim is NULL when the layouts are equal and no sum is
 * asked for (the data is then used in place). */
typedef struct {
    dnnl_primitive_t prim;
    dnnl_memory_t    from, to;
} reorder;

/* The slots of the shared workspace, each sized for the largest node. */
enum { WS_SRC, WS_DST, WS_WEI, WS_DSRC, WS_DWEI, WS_DBIAS, WS_SCRATCH, WS_WT, WS_COUNT };

typedef struct {
    int              ok;
    dnnl_primitive_t fwd, bwd_data, bwd_wei;
    /* memory objects in the primitives' own layouts */
    dnnl_memory_t    f_src, f_wei, f_bias, f_dst, f_scr;
    dnnl_memory_t    d_ddst, d_wei, d_dsrc, d_scr;
    dnnl_memory_t    w_src, w_ddst, w_dwei, w_dbias, w_scr;
    /* plain layout <-> primitive layout */
    reorder          r_src, r_wei, r_dst;              /* forward */
    reorder          r_d_ddst, r_d_wei, r_d_dsrc;      /* backward data; r_d_dsrc adds into dx */
    reorder          r_w_src, r_w_ddst, r_w_dwei;      /* backward weights; r_w_dwei adds into dw */
    int              same_ddst;                        /* backward data reuses backward weights' diff_dst */
    int              cout;
    int              overwrite;   /* dx is fresh (zero) when this node runs and in the right layout:
                                     backward data writes it directly, no temporary, no sum */
    /* The forward as the backward-data pass of the dual convolution (channels swapped, kernel
     * flipped): on AVX2, oneDNN's backward-data kernels run stride-1 convolutions faster than its
     * forward kernels. */
    int              dual, cin, k, n, hw, dst_blk;
    dnnl_primitive_t dual_prim;
    dnnl_memory_t    u_ddst, u_wei, u_dsrc, u_scr;
    reorder          r_u_src, r_u_wei, r_u_dst;
} fnode;

struct conv_fast {
    dnnl_engine_t eng;
    dnnl_stream_t stream;
    int           nnodes;
    fnode        *nodes;
    size_t        ws_bytes[WS_COUNT];
    char         *ws[WS_COUNT];
    dnnl_primitive_attr_t attr, attr_sum;
};

#define TRY(call)                                  \
    do {                                           \
        if ((call) != dnnl_success) return -1;     \
    } while (0)

static void grow(conv_fast *f, int slot, const dnnl_memory_desc_t *md) {
    size_t b = dnnl_memory_desc_get_size(md);
    if (b > f->ws_bytes[slot]) f->ws_bytes[slot] = b;
}

static int mem(conv_fast *f, dnnl_memory_t *m, const dnnl_memory_desc_t *md) {
    return dnnl_memory_create(m, md, f->eng, DNNL_MEMORY_NONE) == dnnl_success ? 0 : -1;
}

/* from -> to; with sum the result is added to what `to` holds. */
static int reorder_make(conv_fast *f, reorder *r, const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to,
                        int sum) {
    memset(r, 0, sizeof *r);
    if (!sum && dnnl_memory_desc_equal(from, to)) return 0;
    dnnl_primitive_desc_t pd;
    TRY(dnnl_reorder_primitive_desc_create(&pd, from, f->eng, to, f->eng, sum ? f->attr_sum : NULL));
    dnnl_status_t s = dnnl_primitive_create(&r->prim, pd);
    dnnl_primitive_desc_destroy(pd);
    if (s != dnnl_success) return -1;
    return mem(f, &r->from, from) || mem(f, &r->to, to) ? -1 : 0;
}

static void reorder_free(reorder *r) {
    if (r->prim) dnnl_primitive_destroy(r->prim);
    if (r->from) dnnl_memory_destroy(r->from);
    if (r->to) dnnl_memory_destroy(r->to);
}

static const dnnl_memory_desc_t *q(dnnl_primitive_desc_t pd, dnnl_query_t what) {
    return dnnl_primitive_desc_query_md(pd, what, 0);
}

static dnnl_format_tag_t layout_tag(int blk) {
    return blk == 16 ? dnnl_nChw16c : blk == 8 ? dnnl_nChw8c : dnnl_nchw;
}

/* src_blk / dst_blk: the tape's layouts of the input and output. A blocked one is handed to the
 * primitive as it is; for a plain one oneDNN picks (and a reorder converts). */
static int node_plan(conv_fast *f, fnode *fn, const conv_geom *c, int n, int has_bias, int src_blk, int dst_blk,
                     int dx_fresh) {
    dnnl_dims_t src_d = {n, c->cin, c->h, c->w}, dst_d = {n, c->cout, c->ho, c->wo};
    dnnl_dims_t wei_d = {c->cout, c->cin, c->k, c->k}, bias_d = {c->cout};
    dnnl_dims_t strides = {c->stride, c->stride}, pad_l = {c->pad_t, c->pad_l};
    dnnl_dims_t pad_r = {(c->ho - 1) * c->stride + c->k - c->h - c->pad_t,
                         (c->wo - 1) * c->stride + c->k - c->w - c->pad_l};
    if (pad_r[0] < 0 || pad_r[1] < 0) return -1;
    dnnl_memory_desc_t any_src, any_dst, any_wei, bias, plain_src, plain_dst, plain_wei;
    TRY(dnnl_memory_desc_init_by_tag(&any_src, 4, src_d, dnnl_f32, src_blk > 1 ? layout_tag(src_blk) : dnnl_format_tag_any));
    TRY(dnnl_memory_desc_init_by_tag(&any_dst, 4, dst_d, dnnl_f32, dst_blk > 1 ? layout_tag(dst_blk) : dnnl_format_tag_any));
    TRY(dnnl_memory_desc_init_by_tag(&any_wei, 4, wei_d, dnnl_f32, dnnl_format_tag_any));
    TRY(dnnl_memory_desc_init_by_tag(&bias, 1, bias_d, dnnl_f32, dnnl_x));
    TRY(dnnl_memory_desc_init_by_tag(&plain_src, 4, src_d, dnnl_f32, layout_tag(src_blk)));
    TRY(dnnl_memory_desc_init_by_tag(&plain_dst, 4, dst_d, dnnl_f32, layout_tag(dst_blk)));
    TRY(dnnl_memory_desc_init_by_tag(&plain_wei, 4, wei_d, dnnl_f32, dnnl_oihw));
    const dnnl_memory_desc_t *bmd = has_bias ? &bias : NULL;

    dnnl_convolution_desc_t cd;
    dnnl_primitive_desc_t fpd = NULL, dpd = NULL, wpd = NULL;
    int rc = -1;
    if (dnnl_convolution_forward_desc_init(&cd, dnnl_forward_training, dnnl_convolution_direct, &any_src, &any_wei,
                                           bmd, &any_dst, strides, pad_l, pad_r) != dnnl_success ||
        dnnl_primitive_desc_create(&fpd, &cd, f->attr, f->eng, NULL) != dnnl_success)
        goto done;
    if (dnnl_convolution_backward_data_desc_init(&cd, dnnl_convolution_direct, &any_src, &any_wei, &any_dst, strides,
                                                 pad_l, pad_r) != dnnl_success ||
        dnnl_primitive_desc_create(&dpd, &cd, f->attr, f->eng, fpd) != dnnl_success)
        goto done;
    /* diff_bias is always asked for: it costs one reduction the kernel fuses, and the tape may need it */
    if (dnnl_convolution_backward_weights_desc_init(&cd, dnnl_convolution_direct, &any_src, &any_wei, &bias,
                                                    &any_dst, strides, pad_l, pad_r) != dnnl_success ||
        dnnl_primitive_desc_create(&wpd, &cd, f->attr, f->eng, fpd) != dnnl_success)
        goto done;
    if (dnnl_primitive_create(&fn->fwd, fpd) || dnnl_primitive_create(&fn->bwd_data, dpd) ||
        dnnl_primitive_create(&fn->bwd_wei, wpd))
        goto done;

    const dnnl_memory_desc_t *fs = q(fpd, dnnl_query_src_md), *fw = q(fpd, dnnl_query_weights_md),
                             *fd = q(fpd, dnnl_query_dst_md), *fsc = q(fpd, dnnl_query_scratchpad_md);
    const dnnl_memory_desc_t *dd = q(dpd, dnnl_query_diff_dst_md), *dw = q(dpd, dnnl_query_weights_md),
                             *ds = q(dpd, dnnl_query_diff_src_md), *dsc = q(dpd, dnnl_query_scratchpad_md);
    const dnnl_memory_desc_t *ws = q(wpd, dnnl_query_src_md), *wd = q(wpd, dnnl_query_diff_dst_md),
                             *ww = q(wpd, dnnl_query_diff_weights_md), *wsc = q(wpd, dnnl_query_scratchpad_md);
    if (mem(f, &fn->f_src, fs) || mem(f, &fn->f_wei, fw) || mem(f, &fn->f_bias, &bias) || mem(f, &fn->f_dst, fd) ||
        mem(f, &fn->f_scr, fsc) || mem(f, &fn->d_ddst, dd) || mem(f, &fn->d_wei, dw) || mem(f, &fn->d_dsrc, ds) ||
        mem(f, &fn->d_scr, dsc) || mem(f, &fn->w_src, ws) || mem(f, &fn->w_ddst, wd) || mem(f, &fn->w_dwei, ww) ||
        mem(f, &fn->w_dbias, &bias) || mem(f, &fn->w_scr, wsc))
        goto done;
    if (reorder_make(f, &fn->r_src, &plain_src, fs, 0) || reorder_make(f, &fn->r_wei, &plain_wei, fw, 0) ||
        reorder_make(f, &fn->r_dst, fd, &plain_dst, 0) || reorder_make(f, &fn->r_d_ddst, &plain_dst, dd, 0) ||
        reorder_make(f, &fn->r_d_wei, &plain_wei, dw, 0) || reorder_make(f, &fn->r_d_dsrc, ds, &plain_src, 1) ||
        reorder_make(f, &fn->r_w_src, &plain_src, ws, 0) || reorder_make(f, &fn->r_w_ddst, &plain_dst, wd, 0) ||
        reorder_make(f, &fn->r_w_dwei, ww, &plain_wei, 1))
        goto done;
    fn->same_ddst = dnnl_memory_desc_equal(dd, wd);
    /* forward: src, dst, wei slots; backward weights: src, dst (diff_dst), dwei; backward data: dst
     * (when it shares diff_dst) or wei for its own diff_dst copy, wei, dsrc */
    /* activation-sized copies only where a layout differs from the tape's */
    if (fn->r_src.prim) grow(f, WS_SRC, fs);
    if (fn->r_dst.prim) grow(f, WS_DST, fd);
    if (fn->r_w_src.prim) grow(f, WS_SRC, ws);
    if (fn->r_w_ddst.prim) grow(f, WS_DST, wd);
    if (fn->r_d_ddst.prim) grow(f, WS_SRC, dd);
    fn->overwrite = dx_fresh && dnnl_memory_desc_equal(ds, &plain_src);
    if (!fn->overwrite) grow(f, WS_DSRC, ds);
    grow(f, WS_WEI, fw), grow(f, WS_DWEI, ww), grow(f, WS_DBIAS, &bias), grow(f, WS_WEI, dw);
    grow(f, WS_SCRATCH, fsc), grow(f, WS_SCRATCH, dsc), grow(f, WS_SCRATCH, wsc);
    rc = 0;
done:
    if (fpd) dnnl_primitive_desc_destroy(fpd);
    if (dpd) dnnl_primitive_desc_destroy(dpd);
    if (wpd) dnnl_primitive_desc_destroy(wpd);
    return rc;
}

/* The dual of a stride-1 convolution with padding p: its backward-data pass, with channels swapped,
 * weights W'[ci][co] = W[co][ci] flipped in space and padding k-1-p, computes the same output. */
static int dual_plan(conv_fast *f, fnode *fn, const conv_geom *c, int n, int src_blk, int dst_blk) {
    int pb = (c->ho - 1) + c->k - c->h - c->pad_t, pr = (c->wo - 1) + c->k - c->w - c->pad_l;
    if (c->stride != 1 || c->k == 1 || pb != c->pad_t || pr != c->pad_l || c->pad_t >= c->k || c->pad_l >= c->k)
        return -1;
    dnnl_dims_t x_d = {n, c->cin, c->h, c->w}, y_d = {n, c->cout, c->ho, c->wo};
    dnnl_dims_t wei_d = {c->cin, c->cout, c->k, c->k}, strides = {1, 1};
    dnnl_dims_t pad = {c->k - 1 - c->pad_t, c->k - 1 - c->pad_l};
    dnnl_memory_desc_t ysrc, xdst, wany, yplain, xplain, wplain;
    /* the dual's source is our output y, its destination our input x */
    TRY(dnnl_memory_desc_init_by_tag(&ysrc, 4, y_d, dnnl_f32, dst_blk > 1 ? layout_tag(dst_blk) : dnnl_format_tag_any));
    TRY(dnnl_memory_desc_init_by_tag(&xdst, 4, x_d, dnnl_f32, src_blk > 1 ? layout_tag(src_blk) : dnnl_format_tag_any));
    TRY(dnnl_memory_desc_init_by_tag(&wany, 4, wei_d, dnnl_f32, dnnl_format_tag_any));
    TRY(dnnl_memory_desc_init_by_tag(&yplain, 4, y_d, dnnl_f32, layout_tag(dst_blk)));
    TRY(dnnl_memory_desc_init_by_tag(&xplain, 4, x_d, dnnl_f32, layout_tag(src_blk)));
    TRY(dnnl_memory_desc_init_by_tag(&wplain, 4, wei_d, dnnl_f32, dnnl_oihw));
    dnnl_convolution_desc_t cd;
    dnnl_primitive_desc_t hint = NULL, pd = NULL;
    int rc = -1;
    if (dnnl_convolution_forward_desc_init(&cd, dnnl_forward_training, dnnl_convolution_direct, &ysrc, &wany, NULL,
                                           &xdst, strides, pad, pad) != dnnl_success ||
        dnnl_primitive_desc_create(&hint, &cd, f->attr, f->eng, NULL) != dnnl_success ||
        dnnl_convolution_backward_data_desc_init(&cd, dnnl_convolution_direct, &ysrc, &wany, &xdst, strides, pad,
                                                 pad) != dnnl_success ||
        dnnl_primitive_desc_create(&pd, &cd, f->attr, f->eng, hint) != dnnl_success ||
        dnnl_primitive_create(&fn->dual_prim, pd) != dnnl_success)
        goto done;
    const dnnl_memory_desc_t *dd = q(pd, dnnl_query_diff_dst_md), *dw = q(pd, dnnl_query_weights_md),
                             *ds = q(pd, dnnl_query_diff_src_md), *sc = q(pd, dnnl_query_scratchpad_md);
    if (mem(f, &fn->u_ddst, dd) || mem(f, &fn->u_wei, dw) || mem(f, &fn->u_dsrc, ds) || mem(f, &fn->u_scr, sc) ||
        reorder_make(f, &fn->r_u_src, &xplain, dd, 0) || reorder_make(f, &fn->r_u_wei, &wplain, dw, 0) ||
        reorder_make(f, &fn->r_u_dst, ds, &yplain, 0))
        goto done;
    if (fn->r_u_src.prim) grow(f, WS_SRC, dd);
    if (fn->r_u_dst.prim) grow(f, WS_DST, ds);
    grow(f, WS_WEI, dw), grow(f, WS_SCRATCH, sc), grow(f, WS_WT, &wplain);
    fn->dual = 1, fn->cin = c->cin, fn->k = c->k, fn->n = n, fn->hw = c->ho * c->wo, fn->dst_blk = dst_blk;
    rc = 0;
done:
    if (hint) dnnl_primitive_desc_destroy(hint);
    if (pd) dnnl_primitive_desc_destroy(pd);
    return rc;
}

static void node_free(fnode *fn) {
    dnnl_primitive_t p[] = {fn->fwd, fn->bwd_data, fn->bwd_wei, fn->dual_prim};
    for (int i = 0; i < DF_COUNTOF(p); i++)
        if (p[i]) dnnl_primitive_destroy(p[i]);
    dnnl_memory_t m[] = {fn->f_src, fn->f_wei, fn->f_bias, fn->f_dst,  fn->f_scr, fn->d_ddst, fn->d_wei,
                         fn->d_dsrc, fn->d_scr, fn->w_src, fn->w_ddst, fn->w_dwei, fn->w_dbias, fn->w_scr,
                         fn->u_ddst, fn->u_wei, fn->u_dsrc, fn->u_scr};
    for (int i = 0; i < DF_COUNTOF(m); i++)
        if (m[i]) dnnl_memory_destroy(m[i]);
    reorder *r[] = {&fn->r_src,   &fn->r_wei,    &fn->r_dst,    &fn->r_d_ddst, &fn->r_d_wei, &fn->r_d_dsrc,
                    &fn->r_w_src, &fn->r_w_ddst, &fn->r_w_dwei, &fn->r_u_src,  &fn->r_u_wei, &fn->r_u_dst};
    for (int i = 0; i < DF_COUNTOF(r); i++) reorder_free(r[i]);
    memset(fn, 0, sizeof *fn);
}

void conv_fast_free(conv_fast *f) {
    if (!f) return;
    for (int i = 0; i < f->nnodes; i++) node_free(&f->nodes[i]);
    free(f->nodes);
    for (int i = 0; i < WS_COUNT; i++) df_free_aligned(f->ws[i]);
    if (f->attr) dnnl_primitive_attr_destroy(f->attr);
    if (f->attr_sum) dnnl_primitive_attr_destroy(f->attr_sum);
    if (f->stream) dnnl_stream_destroy(f->stream);
    if (f->eng) dnnl_engine_destroy(f->eng);
    free(f);
}

int conv_fast_block(void) {
    return dnnl_get_effective_cpu_isa() >= dnnl_cpu_isa_avx512_core ? 16 : 8;
}

size_t conv_fast_bytes(const conv_fast *f) {
    size_t b = 0;
    for (int i = 0; f && i < WS_COUNT; i++) b += f->ws_bytes[i];
    return b;
}

df_status conv_fast_plan(const unet_graph *g, conv_fast **out) {
    *out = NULL;
    conv_fast *f = calloc(1, sizeof *f);
    if (!f) return df_fail(DF_ERR_NOMEM, "out of memory");
    f->nnodes = g->nnodes;
    f->nodes = calloc((size_t)g->nnodes, sizeof *f->nodes);
    dnnl_post_ops_t po = NULL;
    int ok = f->nodes && dnnl_engine_create(&f->eng, dnnl_cpu, 0) == dnnl_success &&
             dnnl_stream_create(&f->stream, f->eng, dnnl_stream_default_flags) == dnnl_success &&
             dnnl_primitive_attr_create(&f->attr) == dnnl_success &&
             dnnl_primitive_attr_set_scratchpad_mode(f->attr, dnnl_scratchpad_mode_user) == dnnl_success &&
             dnnl_primitive_attr_create(&f->attr_sum) == dnnl_success &&
             dnnl_post_ops_create(&po) == dnnl_success && dnnl_post_ops_append_sum(po, 1.0f) == dnnl_success &&
             dnnl_primitive_attr_set_post_ops(f->attr_sum, po) == dnnl_success;
    if (po) dnnl_post_ops_destroy(po);
    if (!ok) {   /* no usable oneDNN: the reference path runs */
        conv_fast_free(f);
        return DF_OK;
    }
    int any = 0, dual_wanted = dnnl_get_effective_cpu_isa() < dnnl_cpu_isa_avx512_core;
    const char *env = getenv("DIFFUSE_CONV_DUAL");   /* for benchmarks: 0 or 1 overrides the rule */
    if (env) dual_wanted = atoi(env) != 0;
    for (int i = 0; i < g->nnodes; i++) {
        const gnode *d = &g->nodes[i];
        if (d->op != OP_CONV) continue;
        fnode *fn = &f->nodes[i];
        int n = g->vals[d->out].n, sb = g->vals[d->in[0]].blk, db = g->vals[d->out].blk;
        /* A 1x1 convolution from and to the plain layout (the transformer blocks' projections) is a GEMM
         * per image there: oneDNN's primitive would reorder its operands in and out at every call. */
        if ((conv_is_pointwise(&d->conv) && sb == 1 && db == 1) || d->in[1] >= 0)
            continue;
        if (node_plan(f, fn, &d->conv, n, d->b >= 0, sb, db, d->gzero & 1) == 0) {
            fn->ok = any = 1, fn->cout = d->conv.cout;
            /* a fixed rule, not a timing race, so that a machine always computes the same bits */
            if (dual_wanted && dual_plan(f, fn, &d->conv, n, sb, db) != 0) fn->dual = 0;
        } else {
            node_free(fn);
        }
    }
    for (int i = 0; i < WS_COUNT && any; i++) {
        if (!f->ws_bytes[i]) continue;
        f->ws[i] = df_alloc_aligned(f->ws_bytes[i]);
        if (!f->ws[i]) {
            conv_fast_free(f);
            return df_fail(DF_ERR_NOMEM, "out of memory for convolution workspace");
        }
    }
    if (!any) {
        conv_fast_free(f);
        return DF_OK;
    }
    *out = f;
    return DF_OK;
}

static void set(dnnl_memory_t m, const void *p) { dnnl_memory_set_data_handle(m, (void *)p); }

/* Run a reorder from one buffer into another (adding when it has a sum post-op); nothing when the
 * layouts agree. */
static void send(conv_fast *f, const reorder *r, const void *from, void *to) {
    if (!r->prim) return;
    set(r->from, from);
    set(r->to, to);
    dnnl_exec_arg_t a[2] = {{DNNL_ARG_FROM, r->from}, {DNNL_ARG_TO, r->to}};
    dnnl_primitive_execute(r->prim, f->stream, 2, a);
}

/* Bring a tape tensor into the primitive's layout: returns the buffer the primitive reads (the tensor
 * itself when the layouts agree, else the workspace slot it was converted into). */
static const void *bring(conv_fast *f, const reorder *r, const void *tape, int slot) {
    if (!r->prim) return tape;
    send(f, r, tape, f->ws[slot]);
    return f->ws[slot];
}

static int dual_forward(conv_fast *f, fnode *fn, float *y, const float *x, const float *w, const float *b) {
    /* W' (cin, cout, k, k) = W (cout, cin, k, k) with the channel axes swapped and the kernel flipped */
    float *wt = (float *)f->ws[WS_WT];
    const int cin = fn->cin, cout = fn->cout, kk = fn->k * fn->k;
    for (int o = 0; o < cout; o++)
        for (int i = 0; i < cin; i++)
            for (int j = 0; j < kk; j++) wt[((size_t)i * cout + o) * kk + (kk - 1 - j)] = w[((size_t)o * cin + i) * kk + j];
    set(fn->u_ddst, bring(f, &fn->r_u_src, x, WS_SRC));
    set(fn->u_wei, bring(f, &fn->r_u_wei, wt, WS_WEI));
    void *dst = fn->r_u_dst.prim ? (void *)f->ws[WS_DST] : (void *)y;
    set(fn->u_dsrc, dst);
    set(fn->u_scr, f->ws[WS_SCRATCH]);
    dnnl_exec_arg_t a[4] = {{DNNL_ARG_DIFF_DST, fn->u_ddst},
                            {DNNL_ARG_WEIGHTS, fn->u_wei},
                            {DNNL_ARG_DIFF_SRC, fn->u_dsrc},
                            {DNNL_ARG_SCRATCHPAD, fn->u_scr}};
    dnnl_primitive_execute(fn->dual_prim, f->stream, 4, a);
    send(f, &fn->r_u_dst, dst, y);
    if (b) {   /* backward-data has no bias: add it in the output's layout */
        const int blk = fn->dst_blk, cb = cout / blk, hw = fn->hw;
#pragma omp parallel for schedule(static)
        for (int nb = 0; nb < fn->n * cb; nb++) {
            const float *bb = b + (size_t)(nb % cb) * blk;
            float *yb = y + (size_t)nb * hw * blk;
            for (int p = 0; p < hw; p++)
                for (int ci = 0; ci < blk; ci++) yb[(size_t)p * blk + ci] += bb[ci];
        }
    }
    return 1;
}

int conv_fast_forward(conv_fast *f, int node, float *y, const float *x, const float *w, const float *b) {
    if (!f || !f->nodes[node].ok) return 0;
    fnode *fn = &f->nodes[node];
    if (fn->dual) return dual_forward(f, fn, y, x, w, b);
    set(fn->f_src, bring(f, &fn->r_src, x, WS_SRC));
    set(fn->f_wei, bring(f, &fn->r_wei, w, WS_WEI));
    void *dst = fn->r_dst.prim ? (void *)f->ws[WS_DST] : (void *)y;
    set(fn->f_dst, dst);
    set(fn->f_scr, f->ws[WS_SCRATCH]);
    dnnl_exec_arg_t a[5] = {{DNNL_ARG_SRC, fn->f_src},
                            {DNNL_ARG_WEIGHTS, fn->f_wei},
                            {DNNL_ARG_DST, fn->f_dst},
                            {DNNL_ARG_SCRATCHPAD, fn->f_scr},
                            {DNNL_ARG_BIAS, fn->f_bias}};
    if (b) set(fn->f_bias, b);
    dnnl_primitive_execute(fn->fwd, f->stream, b ? 5 : 4, a);
    send(f, &fn->r_dst, dst, y);
    return 1;
}

int conv_fast_overwrites(const conv_fast *f, int node) { return f && f->nodes[node].ok && f->nodes[node].overwrite; }
int conv_fast_has(const conv_fast *f, int node) { return f && f->nodes[node].ok; }

int conv_fast_backward(conv_fast *f, int node, float *dx, float *dw, float *db, const float *dy, const float *x,
                       const float *w) {
    if (!f || !f->nodes[node].ok) return 0;
    fnode *fn = &f->nodes[node];
    const void *ddst = NULL;
    if (dw || db) {
        set(fn->w_src, bring(f, &fn->r_w_src, x, WS_SRC));
        ddst = bring(f, &fn->r_w_ddst, dy, WS_DST);
        set(fn->w_ddst, ddst);
        set(fn->w_dwei, f->ws[WS_DWEI]);
        set(fn->w_dbias, f->ws[WS_DBIAS]);
        set(fn->w_scr, f->ws[WS_SCRATCH]);
        dnnl_exec_arg_t a[5] = {{DNNL_ARG_SRC, fn->w_src},
                                {DNNL_ARG_DIFF_DST, fn->w_ddst},
                                {DNNL_ARG_DIFF_WEIGHTS, fn->w_dwei},
                                {DNNL_ARG_DIFF_BIAS, fn->w_dbias},
                                {DNNL_ARG_SCRATCHPAD, fn->w_scr}};
        dnnl_primitive_execute(fn->bwd_wei, f->stream, 5, a);
        if (dw) send(f, &fn->r_w_dwei, f->ws[WS_DWEI], dw);
        if (db) {
            const float *g = (const float *)f->ws[WS_DBIAS];
            for (int o = 0; o < fn->cout; o++) db[o] += g[o];
        }
    }
    if (dx) {
        /* the source slot is free again: backward data keeps its own diff_dst copy there if needed */
        if (!ddst || !fn->same_ddst) ddst = bring(f, &fn->r_d_ddst, dy, WS_SRC);
        set(fn->d_ddst, ddst);
        set(fn->d_wei, bring(f, &fn->r_d_wei, w, WS_WEI));
        set(fn->d_dsrc, fn->overwrite ? (void *)dx : (void *)f->ws[WS_DSRC]);
        set(fn->d_scr, f->ws[WS_SCRATCH]);
        dnnl_exec_arg_t a[4] = {{DNNL_ARG_DIFF_DST, fn->d_ddst},
                                {DNNL_ARG_WEIGHTS, fn->d_wei},
                                {DNNL_ARG_DIFF_SRC, fn->d_dsrc},
                                {DNNL_ARG_SCRATCHPAD, fn->d_scr}};
        dnnl_primitive_execute(fn->bwd_data, f->stream, 4, a);
        if (!fn->overwrite) send(f, &fn->r_d_dsrc, f->ws[WS_DSRC], dx);
    }
    return 1;
}

#endif
