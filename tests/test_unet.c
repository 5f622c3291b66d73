/* The whole U-Net: parity with the PyTorch golden vectors (eps, input and parameter gradients, training
 * loss), finite differences through a small network in double precision, and save/load round trips of
 * randomly drawn configs. */
#include "graph.h"
#include "safetensors.h"
#include "test.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* ---- golden parity --------------------------------------------------------------------------------- */

static float *read_f32(const st_file *f, const char *name, size_t expect) {
    const st_tensor *t = st_find(f, name);
    if (!t) {
        test_fail_at(__FILE__, __LINE__, "%s: no tensor %s", f->path, name);
        return NULL;
    }
    size_t n = (size_t)st_numel(t);
    if (expect && n != expect) {
        test_fail_at(__FILE__, __LINE__, "%s: %s has %zu values, expected %zu", f->path, name, n, expect);
        return NULL;
    }
    float *v = malloc(n * sizeof(float));
    if (st_read_f32(f, t, v, n)) {
        test_fail_at(__FILE__, __LINE__, "%s", df_error());
        free(v);
        return NULL;
    }
    return v;
}

/* Compare the model against one golden io file; `labels` NULL for the unconditional model. */
static void check_golden(df_model *m, const char *io_path) {
    st_file io;
    CHECK_OK(st_open(io_path, &io));
    if (!io.n) return;
    const df_unet_config *cfg = df_model_config(m);
    const int n = 2, h = 28, w = 28;
    size_t nx = (size_t)n * cfg->in_channels * h * w;
    float *x = read_f32(&io, "x", nx), *eps_ref = read_f32(&io, "eps", nx), *gout = read_f32(&io, "grad_out", nx);
    float *gx_ref = read_f32(&io, "grad_x", nx);
    int64_t t64[2], l64[2];
    CHECK_OK(st_read_i64(&io, st_find(&io, "t"), t64, 2));
    float t[2] = {(float)t64[0], (float)t64[1]};
    int labels[2], *lab = NULL;
    if (st_find(&io, "class_labels")) {
        CHECK_OK(st_read_i64(&io, st_find(&io, "class_labels"), l64, 2));
        labels[0] = (int)l64[0], labels[1] = (int)l64[1];
        lab = labels;
    }
    if (!x || !eps_ref || !gout || !gx_ref) goto out;

    float *eps = malloc(nx * sizeof(float)), *gx = malloc(nx * sizeof(float));
    CHECK_OK(df_model_forward(m, n, h, w, x, t, lab, eps));
    size_t at;
    double e = max_rel_diff(eps, eps_ref, nx, &at);
    printf("    %s: eps max relative difference %.2e (at %zu: %.6f vs %.6f)\n", io_path, e, at, eps[at], eps_ref[at]);
    CHECK(e <= 1e-4, "eps differs from the reference: %.3g relative", e);

    df_model_zero_grad(m);
    CHECK_OK(df_model_backward(m, gout, gx));
    e = max_rel_diff(gx, gx_ref, nx, &at);
    printf("    grad_x max relative difference %.2e\n", e);
    CHECK(e <= 1e-3, "grad_x differs: %.3g relative", e);
    double worst = 0;
    const char *wname = "";
    int compared = 0;
    for (int i = 0; i < io.n; i++) {
        const char *name = io.tensors[i].name;
        if (strncmp(name, "grad.", 5) != 0) continue;
        int p = df_model_find_tensor(m, name + 5);
        CHECK(p >= 0, "golden gradient %s names no parameter", name);
        if (p < 0) continue;
        int nd, shape[4];
        size_t off;
        df_model_tensor_info(m, p, &nd, shape, &off);
        size_t cnt = (size_t)st_numel(&io.tensors[i]);
        float *ref = read_f32(&io, name, 0);
        if (!ref) continue;
        double d = max_rel_diff(df_model_grads(m) + off, ref, cnt, NULL);
        if (d > worst) worst = d, wname = name;
        CHECK(d <= 1e-3, "%s differs: %.3g relative", name, d);
        compared++;
        free(ref);
    }
    printf("    %d parameter gradients, worst %s at %.2e\n", compared, wname, worst);
    CHECK(compared >= 10, "only %d parameter gradients compared", compared);

    /* the training loss and its gradients on x_t = sqrt(a) x0 + sqrt(1 - a) noise */
    float *xt = read_f32(&io, "train.x_t", nx), *noise = read_f32(&io, "train.noise", nx),
          *x0 = read_f32(&io, "train.x0", nx), *ac = read_f32(&io, "alphas_cumprod", 1000),
          *lref = read_f32(&io, "train.loss", 1);
    if (xt && noise && x0 && ac && lref) {
        double dmax = 0;
        for (int i = 0; i < n; i++) {
            double a = ac[(int)t[i]];
            for (size_t j = 0; j < nx / n; j++) {
                size_t k = i * (nx / n) + j;
                dmax = fmax(dmax, fabs(sqrt(a) * x0[k] + sqrt(1 - a) * noise[k] - xt[k]));
            }
        }
        CHECK(dmax < 1e-5, "train.x_t is not sqrt(a) x0 + sqrt(1-a) noise: %.3g", dmax);
        float loss;
        df_model_zero_grad(m);
        CHECK_OK(df_model_loss_grad(m, n, h, w, xt, t, lab, noise, NULL, &loss, NULL));
        printf("    training loss %.7f vs %.7f (relative %.2e)\n", loss, lref[0], fabs(loss - lref[0]) / lref[0]);
        CHECK(fabs(loss - lref[0]) <= 1e-4 * fabs(lref[0]), "training loss %.7f vs %.7f", loss, lref[0]);
        int tc = 0;
        for (int i = 0; i < io.n; i++) {
            const char *name = io.tensors[i].name;
            if (strncmp(name, "train.grad.", 11) != 0) continue;
            int p = df_model_find_tensor(m, name + 11);
            CHECK(p >= 0, "%s names no parameter", name);
            if (p < 0) continue;
            size_t off;
            df_model_tensor_info(m, p, NULL, NULL, &off);
            float *ref = read_f32(&io, name, 0);
            if (!ref) continue;
            double d = max_rel_diff(df_model_grads(m) + off, ref, (size_t)st_numel(&io.tensors[i]), NULL);
            CHECK(d <= 1e-3, "%s differs: %.3g relative", name, d);
            tc++;
            free(ref);
        }
        CHECK(tc >= 5, "only %d training gradients compared", tc);
    }
    free(xt), free(noise), free(x0), free(ac), free(lref);
    free(eps), free(gx);
out:
    free(x), free(eps_ref), free(gout), free(gx_ref);
    st_close(&io);
}

TEST(golden_fmnist_s) {
    char dir[512], io[600];
    snprintf(dir, sizeof dir, "%s/fmnist-s", test_golden_dir());
    snprintf(io, sizeof io, "%s/io.safetensors", dir);
    df_model *m = NULL;
    CHECK_OK(df_model_load(dir, &m));
    if (!m) return;
    CHECK(df_model_num_tensors(m) == 270, "270 parameter tensors, got %d", df_model_num_tensors(m));
    CHECK(df_model_num_params(m) == 3939393, "3,939,393 parameters, got %zu", df_model_num_params(m));
    check_golden(m, io);
    df_model_free(m);
}

TEST(golden_fmnist_s_class_conditional) {
    char path[600], io[600];
    snprintf(path, sizeof path, "%s/fmnist-s/cond/config.json", test_golden_dir());
    df_unet_config cfg;
    CHECK_OK(df_unet_config_load(path, &cfg));
    df_model *m = NULL;
    CHECK_OK(df_model_create(&cfg, 0, &m));
    if (!m) return;
    /* weights: the unconditional file plus the class embedding */
    const char *files[2] = {"fmnist-s/model.safetensors", "fmnist-s/cond/class_embedding.safetensors"};
    int filled = 0;
    for (int k = 0; k < 2; k++) {
        st_file f;
        snprintf(path, sizeof path, "%s/%s", test_golden_dir(), files[k]);
        CHECK_OK(st_open(path, &f));
        for (int i = 0; i < f.n; i++) {
            int p = df_model_find_tensor(m, f.tensors[i].name);
            CHECK(p >= 0, "%s: unknown tensor %s", path, f.tensors[i].name);
            if (p < 0) continue;
            size_t off;
            df_model_tensor_info(m, p, NULL, NULL, &off);
            CHECK_OK(st_read_f32(&f, &f.tensors[i], df_model_params(m) + off, (size_t)st_numel(&f.tensors[i])));
            filled++;
        }
        st_close(&f);
    }
    CHECK(filled == df_model_num_tensors(m), "filled %d of %d tensors", filled, df_model_num_tensors(m));
    snprintf(io, sizeof io, "%s/fmnist-s/cond/io_cond.safetensors", test_golden_dir());
    check_golden(m, io);
    df_model_free(m);
}

/* ---- finite differences through a whole small U-Net, in double ------------------------------------- */

static void small_config(df_unet_config *c, int variant) {
    df_unet_config_default(c);
    c->sample_size = 8;
    c->in_channels = 2, c->out_channels = 2;
    c->num_levels = 2;
    c->block_out_channels[0] = 8, c->block_out_channels[1] = 12;
    c->down_attn[0] = 0, c->down_attn[1] = 1;
    c->up_attn[0] = 1, c->up_attn[1] = 0;
    c->layers_per_block = 1;
    c->norm_num_groups = 4;
    c->attention_head_dim = 4;
    c->num_class_embeds = 3;
    if (variant == 1) {
        c->scale_shift = 1;
        c->downsample_padding = 0;
        c->attention_head_dim = 0;
        c->center_input_sample = 1;
        c->mid_block_scale_factor = 1.414f;
        c->flip_sin_to_cos = 0;
        c->freq_shift = 1;
    } else if (variant == 2) {
        c->down_attn[0] = 1, c->up_attn[1] = 1;
        c->downsample_resnet = 1, c->upsample_resnet = 1;
        c->attn_norm_num_groups = 2;
        c->num_class_embeds = 0;
        c->class_embed_timestep = 1;
    }
}

static void unet_fd(int variant, uint64_t seed) {
    df_unet_config cfg;
    small_config(&cfg, variant % 3);
    /* variant 3: dropout on with a fixed mask seed (the loss is then a fixed function to differentiate);
     * its outputs are rebuilt in the backward pass from the fused norm before them */
    const uint64_t dseed = variant == 3 ? 12345 : 0;
    if (variant == 3) cfg.dropout = 0.3f;
    if (variant == 4) cfg.classifier_classes = 5, cfg.num_class_embeds = 0;   /* encoder + classifier head */
    if (variant >= 5) {   /* UNet2DConditionModel: transformer blocks attending to 3 text tokens of width 6 */
        cfg.condition = 1, cfg.cross_attention_dim = 6, cfg.attention_head_dim = 0, cfg.add_attention = 1;
        cfg.attn_norm_num_groups = 0, cfg.downsample_resnet = cfg.upsample_resnet = 0, cfg.class_embed_timestep = 0;
        cfg.down_attn[0] = 1, cfg.up_attn[1] = 1;
        for (int i = 0; i < 2; i++) cfg.attention_heads[i] = 2, cfg.transformer_layers[i] = variant == 6 ? 2 : 1;
        cfg.use_linear_projection = variant == 6;
    }
    df_model *m = NULL;
    CHECK_OK(df_model_create(&cfg, seed, &m));
    if (!m) return;
    unet_graph g;
    const int n = 2, hw = 8;
    CHECK_OK(unet_build(&cfg, n, hw, hw, 3, &g));
    size_t np = g.nparam_values;
    double *p = malloc(np * sizeof(double)), *dp = calloc(np, sizeof(double));
    df_rng r;
    df_rng_init(&r, seed + 100);
    /* perturb the default init so GroupNorm affine and biases are not at 1/0 */
    for (size_t i = 0; i < np; i++) p[i] = df_model_params(m)[i] + 0.1 * df_rng_normal(&r);
    double *act = calloc(g.act_size, sizeof(double)), *dact = calloc(g.grad_size, sizeof(double));
    double *scr = malloc(g.scratch_size * omp_get_max_threads() * sizeof(double));
    const gvalue *xo = &g.vals[g.x], *yo = &g.vals[g.out];
    size_t nx = (size_t)xo->n * xo->c * xo->h * xo->w, ny = (size_t)yo->n * yo->c * yo->h * yo->w;
    double x[nx], rr[ny], t[2] = {3, 700};
    int labels[2] = {2, 0};
    for (size_t i = 0; i < nx; i++) x[i] = df_rng_normal(&r);
    for (size_t i = 0; i < ny; i++) rr[i] = df_rng_normal(&r);
    const int *lab = (cfg.num_class_embeds || cfg.class_embed_timestep) ? labels : NULL;
    const size_t nc = g.ctx >= 0 ? (size_t)n * cfg.cross_attention_dim * 3 : 1;
    double ctx[nc], dctx[nc];
    for (size_t i = 0; i < nc; i++) ctx[i] = df_rng_normal(&r);
#define LOSS(out)                                                                                   \
    do {                                                                                            \
        memcpy(act + xo->off, x, sizeof x);                                                         \
        if (g.ctx >= 0) memcpy(act + g.vals[g.ctx].off, ctx, sizeof ctx);                           \
        unet_forward_f64(&g, p, act, scr, t, lab, dseed);                                           \
        out = 0;                                                                                    \
        for (size_t i_ = 0; i_ < ny; i_++) out += rr[i_] * act[yo->off + i_];                       \
    } while (0)
    double l0;
    LOSS(l0);
    {   /* the inference placement (space reused between values) computes the same output */
        double *iact = malloc(g.infer_size * sizeof(double));
        memcpy(iact + xo->ioff, x, sizeof x);
        if (g.ctx >= 0) memcpy(iact + g.vals[g.ctx].ioff, ctx, sizeof ctx);
        g.infer = 1;
        unet_forward_f64(&g, p, iact, scr, t, lab, dseed);
        g.infer = 0;
        CHECK(memcmp(iact + yo->ioff, act + yo->off, sizeof rr) == 0, "variant %d: inference placement changes the output", variant);
        CHECK(g.infer_size < g.act_size / 2 && g.grad_size < g.act_size,
              "variant %d: reuse saves little (inference %zu, gradients %zu, training %zu elements)", variant, g.infer_size,
              g.grad_size, g.act_size);
        free(iact);
    }
    memcpy(dact + yo->goff, rr, sizeof rr);
    unet_backward_f64(&g, p, dp, act, dact, scr, lab, dseed);
    double dx[nx];
    memcpy(dx, dact + xo->goff, sizeof dx);
    if (g.ctx >= 0) memcpy(dctx, dact + g.vals[g.ctx].goff, sizeof dctx);
    double gmax = 0;
    for (size_t i = 0; i < np; i++) gmax = fmax(gmax, fabs(dp[i]));
    const double h = 1e-5;
    double worst = 0;
    const char *wname = "";
    int checked = 0;
    for (int k = 0; k < g.nparams; k++) {
        const gparam *gp = &g.params[k];
        for (int rep = 0; rep < 2; rep++) {
            size_t i = gp->off + df_rng_u32(&r) % gp->numel;
            double v = p[i], lp, lm;
            p[i] = v + h;
            LOSS(lp);
            p[i] = v - h;
            LOSS(lm);
            p[i] = v;
            double num = (lp - lm) / (2 * h), err = fabs(num - dp[i]) / gmax;
            if (err > worst) worst = err, wname = gp->name;
            checked++;
        }
    }
    for (int rep = 0; rep < 20; rep++) {
        size_t i = df_rng_u32(&r) % nx;
        double v = x[i], lp, lm;
        x[i] = v + h;
        LOSS(lp);
        x[i] = v - h;
        LOSS(lm);
        x[i] = v;
        double err = fabs((lp - lm) / (2 * h) - dx[i]) / gmax;
        if (err > worst) worst = err, wname = "x";
    }
    for (int rep = 0; g.ctx >= 0 && rep < 20; rep++) {   /* the text states */
        size_t i = df_rng_u32(&r) % nc;
        double v = ctx[i], lp, lm;
        ctx[i] = v + h;
        LOSS(lp);
        ctx[i] = v - h;
        LOSS(lm);
        ctx[i] = v;
        double err = fabs((lp - lm) / (2 * h) - dctx[i]) / gmax;
        if (err > worst) worst = err, wname = "text states";
    }
#undef LOSS
    printf("    variant %d: %d parameter entries + 20 inputs%s, worst relative error %.2e (%s)\n", variant, checked,
           g.ctx >= 0 ? " + 20 text states" : "", worst, wname);
    CHECK(worst < 1e-6, "variant %d: finite differences disagree at %s: %.3g", variant, wname, worst);
    free(p), free(dp), free(act), free(dact), free(scr);
    unet_graph_free(&g);
    df_model_free(m);
}

TEST(unet_gradcheck_f64) {
    for (int v = 0; v < 7; v++) unet_fd(v, 7 + (uint64_t)v);
}

/* ---- random configs: build, save, load, same output --------------------------------------------------- */

static void random_config(df_rng *r, df_unet_config *c) {
    df_unet_config_default(c);
    int groups = 1 + (int)(df_rng_u32(r) % 4);
    c->norm_num_groups = groups;
    c->num_levels = 1 + (int)(df_rng_u32(r) % 3);
    for (int i = 0; i < c->num_levels; i++) {
        c->block_out_channels[i] = groups * (2 + (int)(df_rng_u32(r) % 4)) * 2;
        c->down_attn[i] = df_rng_u32(r) % 2;
        c->up_attn[i] = df_rng_u32(r) % 2;
    }
    for (int i = c->num_levels; i < DF_MAX_LEVELS; i++)   /* unused entries do not survive a save */
        c->block_out_channels[i] = c->down_attn[i] = c->up_attn[i] = 0;
    c->layers_per_block = 1 + (int)(df_rng_u32(r) % 2);
    c->in_channels = df_rng_u32(r) % 2 ? 3 : 1;
    c->out_channels = c->in_channels;
    c->attention_head_dim = 0;
    c->add_attention = df_rng_u32(r) % 2;
    c->scale_shift = df_rng_u32(r) % 2;
    c->downsample_padding = df_rng_u32(r) % 2;
    c->downsample_resnet = df_rng_u32(r) % 2;
    c->upsample_resnet = df_rng_u32(r) % 2;
    c->num_class_embeds = df_rng_u32(r) % 2 ? 4 : 0;
    c->center_input_sample = df_rng_u32(r) % 2;
    c->flip_sin_to_cos = df_rng_u32(r) % 2;
    c->freq_shift = (float)(df_rng_u32(r) % 2);
    c->norm_eps = df_rng_u32(r) % 2 ? 1e-5f : 1e-6f;
    c->sample_size = 4 << (c->num_levels - 1);
}

TEST(random_configs_round_trip) {
    df_rng r;
    df_rng_init(&r, 2024);
    int count = test_quick() ? 4 : 12;
    for (int k = 0; k < count; k++) {
        df_unet_config cfg;
        random_config(&r, &cfg);
        df_model *a = NULL, *b = NULL;
        CHECK_OK(df_model_create(&cfg, (uint64_t)k, &a));
        if (!a) continue;
        char dir[512];
        snprintf(dir, sizeof dir, "%s/rt%d", test_tmp_dir(), k);
        CHECK_OK(df_model_save(a, dir));
        CHECK_OK(df_model_load(dir, &b));
        if (!b) {
            df_model_free(a);
            continue;
        }
        CHECK(memcmp(df_model_config(a), df_model_config(b), sizeof cfg) == 0, "config %d changed in a round trip", k);
        CHECK(memcmp(df_model_params(a), df_model_params(b), df_model_num_params(a) * 4) == 0,
              "weights of config %d changed in a round trip", k);
        int n = 2, s = cfg.sample_size;
        size_t nx = (size_t)n * cfg.in_channels * s * s;
        float *x = malloc(nx * 4), *ya = malloc(nx * 4), *yb = malloc(nx * 4), t[2] = {1, 500};
        int lab[2] = {3, 1};
        df_rng_fill_normal(&r, x, nx);
        CHECK_OK(df_model_forward(a, n, s, s, x, t, cfg.num_class_embeds ? lab : NULL, ya));
        CHECK_OK(df_model_forward(b, n, s, s, x, t, cfg.num_class_embeds ? lab : NULL, yb));
        CHECK(memcmp(ya, yb, nx * 4) == 0, "config %d: outputs differ after a round trip", k);
        double mx = 0;
        for (size_t i = 0; i < nx; i++) mx = fmax(mx, fabs(ya[i]));
        CHECK(mx > 0 && isfinite(mx), "config %d: output is zero or not finite", k);
        free(x), free(ya), free(yb);
        df_model_free(a);
        df_model_free(b);
    }
}

TEST(model_rejects_bad_calls) {
    df_unet_config cfg;
    CHECK_OK(df_unet_config_preset("fmnist-s", &cfg));
    df_model *m = NULL;
    CHECK_OK(df_model_create(&cfg, 1, &m));
    if (!m) return;
    float x[2 * 28 * 28] = {0}, y[2 * 28 * 28], t[2] = {1, 2};
    int lab[2] = {0, 1};
    CHECK(df_model_forward(m, 1, 28, 28, x, t, lab, y) == DF_ERR_ARG, "labels to an unconditional model");
    CHECK(df_model_forward(m, 1, 30, 30, x, t, NULL, y) == DF_ERR_SHAPE, "size not divisible by 4");
    CHECK(strstr(df_error(), "multiple of 4") != NULL, "message names the constraint: %s", df_error());
    df_model *m2 = NULL;
    CHECK(df_model_load("/nonexistent/model", &m2) != DF_OK, "loading a missing directory fails");
    CHECK(strstr(df_error(), "/nonexistent/model") != NULL, "message names the path: %s", df_error());
    df_model_free(m);
    df_model_free(NULL);
}

/* Older diffusers checkpoints (google/ddpm-cifar10-32) name the attention projections query, key, value
 * and proj_attn; the same weights under those names must load to the same model. */
TEST(legacy_attention_names_load) {
    df_unet_config cfg;
    small_config(&cfg, 0);
    df_model *a = NULL, *b = NULL;
    CHECK_OK(df_model_create(&cfg, 5, &a));
    if (!a) return;
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/legacy", test_tmp_dir());
    CHECK_OK(df_model_save(a, dir));
    int n = df_model_num_tensors(a), renamed = 0;
    st_entry *e = calloc((size_t)n, sizeof *e);
    char (*names)[160] = calloc((size_t)n, 160);
    static const char *const map[][2] = {{".to_q.", ".query."}, {".to_k.", ".key."}, {".to_v.", ".value."},
                                         {".to_out.0.", ".proj_attn."}};
    for (int i = 0; i < n; i++) {
        int nd, shape[4];
        size_t off;
        const char *name = df_model_tensor_info(a, i, &nd, shape, &off);
        snprintf(names[i], 160, "%s", name);
        for (int k = 0; k < 4; k++) {
            const char *at = strstr(name, map[k][0]);
            if (at) {
                snprintf(names[i], 160, "%.*s%s%s", (int)(at - name), name, map[k][1], at + strlen(map[k][0]));
                renamed++;
            }
        }
        e[i].name = names[i];
        e[i].ndim = nd;
        for (int d = 0; d < nd; d++) e[i].shape[d] = shape[d];
        e[i].f32 = df_model_params(a) + off;
    }
    CHECK(renamed >= 8, "renamed %d attention tensors", renamed);
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
    CHECK_OK(st_write(path, e, n, NULL, 0));
    CHECK_OK(df_model_load(dir, &b));
    if (b) CHECK(memcmp(df_model_params(a), df_model_params(b), df_model_num_params(a) * 4) == 0,
                 "legacy-named weights load to the same values");
    /* a missing tensor is named in the error */
    CHECK_OK(st_write(path, e + 1, n - 1, NULL, 0));
    df_model *c = NULL;
    CHECK(df_model_load(dir, &c) == DF_ERR_SHAPE && strstr(df_error(), df_model_tensor_info(a, 0, NULL, NULL, NULL)),
          "missing tensor named: %s", df_error());
    free(e);
    free(names);
    df_model_free(a);
    df_model_free(b);
}

/* The fast kernels (oneDNN, blocked layouts) against the reference path (im2col + BLAS, plain layout),
 * which the golden files, finite differences and PyTorch check: outputs, d(input) and every parameter
 * gradient on random configs, with channel counts that block evenly and ones that do not. */
TEST(fast_kernels_match_reference) {
    df_rng r;
    df_rng_init(&r, 77);
    int count = test_quick() ? 3 : 8;
    for (int k = 0; k < count; k++) {
        df_unet_config cfg;
        random_config(&r, &cfg);
        if (k % 2 == 0)   /* channel counts that are multiples of 8 and 16 */
            for (int i = 0; i < cfg.num_levels; i++) cfg.block_out_channels[i] = 16 * cfg.norm_num_groups * (1 + i % 2);
        if (k == 3) cfg.in_channels = cfg.out_channels = 8;
        cfg.sample_size = 8 << (cfg.num_levels - 1);
        df_model *m = NULL;
        CHECK_OK(df_model_create(&cfg, (uint64_t)k + 5, &m));
        if (!m) continue;
        int n = 3, s = cfg.sample_size;
        size_t nx = (size_t)n * cfg.in_channels * s * s, np = df_model_num_params(m);
        float *x = malloc(nx * 4), *noise = malloc(nx * 4), *y[2], *dx[2], *g[2], t[3] = {3, 400, 999};
        int lab[3] = {3, 1, 0};
        df_rng_fill_normal(&r, x, nx);
        df_rng_fill_normal(&r, noise, nx);
        for (int pass = 0; pass < 2; pass++) {
            df_model_set_kernels(m, pass ? DF_KERNELS_REFERENCE : DF_KERNELS_FAST);
            y[pass] = malloc(nx * 4), dx[pass] = malloc(nx * 4), g[pass] = malloc(np * 4);
            df_model_zero_grad(m);
            CHECK_OK(df_model_forward(m, n, s, s, x, t, cfg.num_class_embeds ? lab : NULL, y[pass]));
            CHECK_OK(df_model_backward(m, noise, dx[pass]));
            memcpy(g[pass], df_model_grads(m), np * 4);
        }
        size_t at;
        double ey = max_rel_diff(y[0], y[1], nx, &at), ex = max_rel_diff(dx[0], dx[1], nx, &at), eg = 0;
        /* relative to each tensor's own scale, floored at 1e-4 of the largest gradient: to_k.bias has
         * an exact gradient of zero (softmax ignores a shift shared by all keys), so both paths hold noise */
        double gmax = 0;
        for (size_t i = 0; i < np; i++) gmax = fmax(gmax, fabs(g[1][i]));
        for (int i = 0; i < df_model_num_tensors(m); i++) {
            int nd, shape[4];
            size_t off, cnt = 1;
            df_model_tensor_info(m, i, &nd, shape, &off);
            for (int d = 0; d < nd; d++) cnt *= (size_t)shape[d];
            double scale = 1e-4 * gmax, diff = 0;
            for (size_t j = 0; j < cnt; j++) {
                scale = fmax(scale, fabs(g[1][off + j]));
                diff = fmax(diff, fabs(g[0][off + j] - g[1][off + j]));
            }
            eg = fmax(eg, diff / scale);
        }
        CHECK(ey < 1e-5 && ex < 1e-4 && eg < 1e-4, "config %d: fast vs reference eps %.2g, d(input) %.2g, worst gradient %.2g",
              k, ey, ex, eg);
        for (int pass = 0; pass < 2; pass++) free(y[pass]), free(dx[pass]), free(g[pass]);
        free(x), free(noise);
        df_model_free(m);
    }
}

/* Same inputs and thread count: the same bits, forward and backward, and after a fresh model too.
 * Across thread counts the forward pass is also bit-identical (every output element is summed by
 * one thread in a fixed order); weight gradients are reduced over images in an order that depends
 * on the thread count, so they agree only to rounding. */
TEST(deterministic_bits) {
    df_unet_config cfg;
    df_unet_config_preset("fmnist-s", &cfg);
    const int n = 4, s = cfg.sample_size;
    size_t nx = (size_t)n * s * s;
    float *x = malloc(nx * 4), *noise = malloc(nx * 4), *y[3], *g[3], t[4] = {5, 250, 600, 999};
    df_rng r;
    df_rng_init(&r, 8);
    df_rng_fill_normal(&r, x, nx);
    df_rng_fill_normal(&r, noise, nx);
    const int saved_threads = omp_get_max_threads();
    size_t np = 0;
    for (int k = 0; k < 3; k++) {   /* 0, 1: two models, all threads; 2: one thread (the model's own setting) */
        df_model *m = NULL;
        CHECK_OK(df_model_create(&cfg, 3, &m));
        if (!m) return;
        df_model_set_threads(m, k == 2 ? 1 : 0);
        CHECK(df_model_threads(m) == (k == 2 ? 1 : saved_threads), "model %d: %d threads", k, df_model_threads(m));
        np = df_model_num_params(m);
        y[k] = malloc(nx * 4), g[k] = malloc(np * 4);
        CHECK_OK(df_model_forward(m, n, s, s, x, t, NULL, y[k]));
        CHECK_OK(df_model_backward(m, noise, NULL));
        memcpy(g[k], df_model_grads(m), np * 4);
        CHECK(omp_get_max_threads() == saved_threads, "a model's calls leave OpenMP at %d threads, not the caller's %d",
              omp_get_max_threads(), saved_threads);
        df_model_free(m);
    }
    CHECK(memcmp(y[0], y[1], nx * 4) == 0 && memcmp(g[0], g[1], np * 4) == 0, "two identical runs differ");
    CHECK(memcmp(y[0], y[2], nx * 4) == 0, "the forward pass depends on the thread count");
    size_t at;
    double e = max_rel_diff(g[2], g[0], np, &at);
    printf("    1 vs %d threads: outputs identical, gradients %s (largest difference %.2g of the largest gradient)\n",
           saved_threads, memcmp(g[0], g[2], np * 4) ? "differ" : "identical", e);
    CHECK(e < 1e-4, "gradients with 1 thread differ by %.3g", e);
    for (int k = 0; k < 3; k++) free(y[k]), free(g[k]);
    free(x), free(noise);
}
