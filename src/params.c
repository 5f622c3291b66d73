/* A network's parameters by its table (graph.h): initialisation, and reading and writing them as the
 * safetensors files diffusers and transformers use, under the table's names. */
#include "graph.h"
#include "safetensors.h"

#include <math.h>
#include <string.h>

void params_init(const unet_graph *g, float *params, df_rng *rng) {
    for (int i = 0; i < g->nparams; i++) {
        const gparam *p = &g->params[i];
        float *v = params + p->off;
        switch (p->init) {
        case INIT_FANIN_UNIFORM: {
            const float bound = (float)(1.0 / sqrt((double)p->fan_in));
            df_rng_fill_uniform(rng, v, p->numel, -bound, bound);
            break;
        }
        case INIT_ONE:
            for (size_t j = 0; j < p->numel; j++) v[j] = 1;
            break;
        case INIT_ZERO:
            memset(v, 0, p->numel * sizeof(float));
            break;
        case INIT_NORMAL:
            df_rng_fill_normal(rng, v, p->numel);
            if (p->std > 0 && p->std != 1)
                for (size_t j = 0; j < p->numel; j++) v[j] *= p->std;
            break;
        }
    }
}

/* The tensor's shape as the table wants it: equal, or a Linear's (out, in) stored as (out, in, 1, 1). */
static int shape_fits(const gparam *p, const st_tensor *t) {
    if (st_numel(t) != (int64_t)p->numel) return 0;
    if (t->ndim != p->ndim) {
        int64_t tail = 1;
        for (int d = 2; d < t->ndim; d++) tail *= t->shape[d];
        return p->ndim == 2 && t->ndim == 4 && tail == 1 && t->shape[0] == p->shape[0];
    }
    for (int d = 0; d < t->ndim; d++)
        if (t->shape[d] != p->shape[d]) return 0;
    return 1;
}

df_status params_read(const unet_graph *g, float *params, st_file *f, const char *path, param_alias_fn alias,
                      const char *const *ignore) {
    int used = 0;
    for (int i = 0; i < g->nparams; i++) {
        const gparam *p = &g->params[i];
        const st_tensor *t = st_find(f, p->name);
        char alt[160];
        if (!t && alias && alias(p->name, alt, sizeof alt)) t = st_find(f, alt);
        if (!t) return df_fail(DF_ERR_SHAPE, "%s: missing tensor %s", path, p->name);
        used++;
        if (!shape_fits(p, t)) {
            char want[64], got[64];
            int k = 0;
            for (int d = 0; d < p->ndim; d++) k += snprintf(want + k, sizeof want - k, d ? ", %d" : "%d", p->shape[d]);
            k = 0;
            got[0] = 0;
            for (int d = 0; d < t->ndim && k < (int)sizeof got - 24; d++)
                k += snprintf(got + k, sizeof got - k, d ? ", %lld" : "%lld", (long long)t->shape[d]);
            return df_fail(DF_ERR_SHAPE, "%s: tensor %s has shape [%s], the config needs [%s]", path, p->name, got, want);
        }
        df_status st = st_read_f32(f, t, params + p->off, p->numel);
        if (st) return st;
        for (size_t k = 0; k < p->numel; k++)
            if (!isfinite(params[p->off + k]))
                return df_fail(DF_ERR_FORMAT, "%s: tensor %s holds %s at index %zu", path, p->name,
                               isnan(params[p->off + k]) ? "NaN" : "an infinity", k);
    }
    if (used == f->n) return DF_OK;
    for (int i = 0; i < f->n; i++) {   /* a tensor the table does not have */
        const char *name = f->tensors[i].name;
        char alt[160];
        int known = unet_find_param(g, name) >= 0;
        for (int j = 0; j < g->nparams && !known && alias; j++)
            known = alias(g->params[j].name, alt, sizeof alt) && strcmp(alt, name) == 0;
        for (int j = 0; ignore && ignore[j] && !known; j++) known = strcmp(ignore[j], name) == 0;
        if (!known) return df_fail(DF_ERR_SHAPE, "%s: unexpected tensor %s (does config.json match the weights?)", path, name);
    }
    return DF_OK;
}

df_status params_write(const unet_graph *g, const float *params, const char *path) {
    st_entry *e = calloc((size_t)g->nparams, sizeof *e);
    if (!e) return df_fail(DF_ERR_NOMEM, "out of memory");
    for (int i = 0; i < g->nparams; i++) {
        const gparam *p = &g->params[i];
        e[i].name = p->name;
        e[i].ndim = p->ndim;
        for (int d = 0; d < p->ndim; d++) e[i].shape[d] = p->shape[d];
        e[i].f32 = params + p->off;
    }
    static const char *const meta[] = {"format", "pt"};
    df_status st = st_write(path, e, g->nparams, meta, 1);
    free(e);
    return st;
}

const char *graph_param_info(const unet_graph *g, int i, int *ndim, int shape[4], size_t *offset) {
    if (i < 0 || i >= g->nparams) return NULL;
    const gparam *p = &g->params[i];
    if (ndim) *ndim = p->ndim;
    if (shape)
        for (int d = 0; d < 4; d++) shape[d] = p->shape[d];
    if (offset) *offset = p->off;
    return p->name;
}
