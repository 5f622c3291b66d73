/* A model's prediction (and its gradients) between safetensors files: what checks against another
 * implementation need, with the tensor names diffusers' UNet2DModel.forward uses. */
#include "safetensors.h"

#include <string.h>

typedef struct {
    float   *x, *t, *eps, *gout, *gx, *ctx, *gctx;
    int      ctx_len;
    int     *labels;
    int64_t *tmp;
    st_entry *out;
    char   **names;
    int      nnames;
} predict_bufs;

static void bufs_free(predict_bufs *b) {
    for (int i = 0; b->names && i < b->nnames; i++) free(b->names[i]);
    free(b->names), free(b->out), free(b->x), free(b->t), free(b->eps), free(b->gout), free(b->gx);
    free(b->ctx), free(b->gctx);
    free(b->labels), free(b->tmp);
}

/* x (N, C, H, W), t (N, any number type), class_labels (N, optional) and, for a condition model,
 * encoder_hidden_states (N, L, cross_attention_dim) from the file. */
static df_status read_inputs(df_model *m, const char *path, const st_file *in, predict_bufs *b, int *n, int *h,
                             int *w) {
    const df_unet_config *cfg = df_model_config(m);
    const st_tensor *tx = st_find(in, "x"), *tt = st_find(in, "t"), *tl = st_find(in, "class_labels");
    if (!tx || tx->ndim != 4 || tx->shape[1] != cfg->in_channels)
        return df_fail(DF_ERR_SHAPE, "%s: needs a tensor x of shape (N, %d, H, W)", path, cfg->in_channels);
    *n = (int)tx->shape[0], *h = (int)tx->shape[2], *w = (int)tx->shape[3];
    const size_t nx = (size_t)*n * cfg->in_channels * *h * *w, ne = (size_t)*n * cfg->out_channels * *h * *w;
    if (!tt || st_numel(tt) != *n) return df_fail(DF_ERR_SHAPE, "%s: needs a tensor t with %d timesteps", path, *n);
    if (tl && st_numel(tl) != *n) return df_fail(DF_ERR_SHAPE, "%s: class_labels must hold %d labels", path, *n);
    b->x = malloc(nx * sizeof(float));
    b->t = malloc((size_t)*n * sizeof(float));
    b->eps = malloc(ne * sizeof(float));
    b->tmp = malloc((size_t)*n * sizeof(int64_t));
    if (tl) b->labels = malloc((size_t)*n * sizeof(int));
    if (!b->x || !b->t || !b->eps || !b->tmp || (tl && !b->labels)) return df_fail(DF_ERR_NOMEM, "out of memory");
    df_status st = st_read_f32(in, tx, b->x, nx);
    if (st) return st;
    if (tt->dtype == ST_F32 || tt->dtype == ST_F64 || tt->dtype == ST_F16 || tt->dtype == ST_BF16) {
        if ((st = st_read_f32(in, tt, b->t, (size_t)*n))) return st;
    } else {
        if ((st = st_read_i64(in, tt, b->tmp, (size_t)*n))) return st;
        for (int i = 0; i < *n; i++) b->t[i] = (float)b->tmp[i];
    }
    if (tl) {
        if ((st = st_read_i64(in, tl, b->tmp, (size_t)*n))) return st;
        for (int i = 0; i < *n; i++) b->labels[i] = (int)b->tmp[i];
    }
    const st_tensor *tc = st_find(in, "encoder_hidden_states");
    if (cfg->condition) {
        if (!tc || tc->ndim != 3 || tc->shape[0] != *n || tc->shape[2] != cfg->cross_attention_dim || tc->shape[1] < 1)
            return df_fail(DF_ERR_SHAPE, "%s: needs a tensor encoder_hidden_states of shape (%d, L, %d)", path, *n,
                           cfg->cross_attention_dim);
        b->ctx_len = (int)tc->shape[1];
        const size_t nc = (size_t)st_numel(tc);
        if (!(b->ctx = malloc(nc * sizeof(float)))) return df_fail(DF_ERR_NOMEM, "out of memory");
        if ((st = st_read_f32(in, tc, b->ctx, nc))) return st;
        return df_model_set_context(m, *n, b->ctx_len, b->ctx);
    }
    if (tc) return df_fail(DF_ERR_SHAPE, "%s: encoder_hidden_states given to a model that does not attend to text", path);
    return DF_OK;
}

/* grad_x and grad.<name> of every parameter, back from grad_out. */
static df_status add_grads(df_model *m, const char *path, const st_file *in, predict_bufs *b, int n, int h, int w,
                           int *nout) {
    const df_unet_config *cfg = df_model_config(m);
    const size_t nx = (size_t)n * cfg->in_channels * h * w, ne = (size_t)n * cfg->out_channels * h * w;
    const st_tensor *tg = st_find(in, "grad_out");
    if (!tg || st_numel(tg) != (int64_t)ne)
        return df_fail(DF_ERR_SHAPE, "%s: gradients need a tensor grad_out shaped like eps", path);
    b->gout = malloc(ne * sizeof(float));
    b->gx = malloc(nx * sizeof(float));
    if (!b->gout || !b->gx) return df_fail(DF_ERR_NOMEM, "out of memory");
    df_status st = st_read_f32(in, tg, b->gout, ne);
    if (st) return st;
    df_model_zero_grad(m);
    if ((st = df_model_backward(m, b->gout, b->gx))) return st;
    b->out[(*nout)++] = (st_entry){.name = "grad_x", .ndim = 4, .shape = {n, cfg->in_channels, h, w}, .f32 = b->gx};
    if (cfg->condition) {
        const size_t nc = (size_t)n * b->ctx_len * cfg->cross_attention_dim;
        if (!(b->gctx = malloc(nc * sizeof(float)))) return df_fail(DF_ERR_NOMEM, "out of memory");
        if ((st = df_model_context_grad(m, b->gctx))) return st;
        b->out[(*nout)++] = (st_entry){.name = "grad_encoder_hidden_states", .ndim = 3,
                                       .shape = {n, b->ctx_len, cfg->cross_attention_dim}, .f32 = b->gctx};
    }
    const float *g = df_model_grads(m);
    for (int i = 0; i < b->nnames; i++) {
        int nd, shape[4];
        size_t off;
        const char *name = df_model_tensor_info(m, i, &nd, shape, &off);
        const size_t len = strlen(name) + 6;
        if (!(b->names[i] = malloc(len))) return df_fail(DF_ERR_NOMEM, "out of memory");
        snprintf(b->names[i], len, "grad.%s", name);
        st_entry *e = &b->out[(*nout)++];
        e->name = b->names[i];
        e->ndim = nd;
        for (int d = 0; d < nd; d++) e->shape[d] = shape[d];
        e->f32 = g + off;
    }
    return DF_OK;
}

df_status df_model_predict_file(df_model *m, const char *in_path, const char *out_path, int grads) {
    st_file in;
    df_status st = st_open(in_path, &in);
    if (st) return st;
    predict_bufs b;
    memset(&b, 0, sizeof b);
    int n = 0, h = 0, w = 0, nout = 0;
    st = read_inputs(m, in_path, &in, &b, &n, &h, &w);
    if (!st) st = df_model_forward(m, n, h, w, b.x, b.t, b.labels, b.eps);
    if (!st) {
        b.nnames = df_model_num_tensors(m);
        b.out = calloc((size_t)b.nnames + 3, sizeof *b.out);
        b.names = calloc((size_t)b.nnames, sizeof *b.names);
        if (!b.out || !b.names) st = df_fail(DF_ERR_NOMEM, "out of memory");
    }
    if (!st) {
        const df_unet_config *cfg = df_model_config(m);
        b.out[nout++] = (st_entry){.name = "eps", .ndim = 4, .shape = {n, cfg->out_channels, h, w}, .f32 = b.eps};
        if (grads) st = add_grads(m, in_path, &in, &b, n, h, w, &nout);
    }
    if (!st) st = st_write(out_path, b.out, nout, NULL, 0);
    bufs_free(&b);
    st_close(&in);
    return st;
}
