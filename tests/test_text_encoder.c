/* CLIP's text encoder: against an independent float64 PyTorch model (tests/ref/clip_text_ref.py) on folders
 * it writes in transformers' layout with random weights (hidden states, pooled output, every parameter's
 * gradient), save and load, and bad configs. */
#define _POSIX_C_SOURCE 200809L
#include "test.h"
#include "internal.h"
#include "safetensors.h"

#include <stdlib.h>
#include <string.h>

/* Configs: a Stable Diffusion 1.5-shaped encoder at reduced width (quick GELU, 77 tokens, the legacy end
 * token 2), and others with each activation and the newer end-token rule. */
static const char *const cases_json =
    "[{\"vocab_size\": 1000, \"hidden_size\": 64, \"intermediate_size\": 256, \"num_hidden_layers\": 2,"
    "  \"num_attention_heads\": 4, \"max_position_embeddings\": 77, \"hidden_act\": \"quick_gelu\","
    "  \"layer_norm_eps\": 1e-5, \"bos_token_id\": 0, \"eos_token_id\": 2, \"pad_token_id\": 1,"
    "  \"projection_dim\": 64, \"attention_dropout\": 0.0, \"dropout\": 0.0, \"initializer_factor\": 1.0,"
    "  \"initializer_range\": 0.02, \"seed\": 1, \"n\": 2, \"L\": 77},"
    " {\"vocab_size\": 300, \"hidden_size\": 48, \"intermediate_size\": 96, \"num_hidden_layers\": 3,"
    "  \"num_attention_heads\": 3, \"max_position_embeddings\": 20, \"hidden_act\": \"gelu\","
    "  \"layer_norm_eps\": 1e-5, \"bos_token_id\": 298, \"eos_token_id\": 299, \"pad_token_id\": 299,"
    "  \"projection_dim\": 48, \"seed\": 2, \"n\": 3, \"L\": 13},"
    " {\"vocab_size\": 50, \"hidden_size\": 32, \"intermediate_size\": 64, \"num_hidden_layers\": 1,"
    "  \"num_attention_heads\": 2, \"max_position_embeddings\": 8, \"hidden_act\": \"gelu_new\","
    "  \"layer_norm_eps\": 1e-6, \"bos_token_id\": 48, \"eos_token_id\": 49, \"pad_token_id\": 0,"
    "  \"projection_dim\": 32, \"seed\": 3, \"n\": 2, \"L\": 8},"
    " {\"vocab_size\": 64, \"hidden_size\": 16, \"intermediate_size\": 40, \"num_hidden_layers\": 2,"
    "  \"num_attention_heads\": 1, \"max_position_embeddings\": 12, \"hidden_act\": \"gelu_pytorch_tanh\","
    "  \"layer_norm_eps\": 1e-5, \"bos_token_id\": 62, \"eos_token_id\": 63, \"pad_token_id\": 63,"
    "  \"projection_dim\": 16, \"seed\": 4, \"n\": 4, \"L\": 5}]";

/* tensor `name` of f as floats (malloc'd), its count in *count */
static float *read_tensor(const st_file *f, const char *name, size_t *count) {
    const st_tensor *t = st_find(f, name);
    if (!t) return NULL;
    *count = (size_t)st_numel(t);
    float *v = malloc(*count * sizeof *v);
    if (v && st_read_f32(f, t, v, *count)) {
        free(v);
        return NULL;
    }
    return v;
}

/* Largest |a - b| over the largest |b|. */
static double rel(const float *a, const float *b, size_t n) {
    double d = 0, m = 1e-30;
    for (size_t i = 0; i < n; i++) d = fmax(d, fabs((double)a[i] - b[i])), m = fmax(m, fabs((double)b[i]));
    return d / m;
}

TEST(text_encoder_matches_pytorch) {
    if (system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0) {
        printf("    python3-torch is missing: skipped\n");
        return;
    }
    char dir[512], path[700], cmd[1600];
    snprintf(dir, sizeof dir, "%s/clip-text", test_tmp_dir());
    snprintf(path, sizeof path, "%s.cases.json", dir);
    FILE *f = fopen(path, "wb");
    CHECK(f, "cannot write %s", path);
    if (!f) return;
    fputs(cases_json, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/ref/clip_text_ref.py %s %s", dir, path);
    CHECK(system(cmd) == 0, "%s failed", cmd);
    for (int k = 0; k < 4; k++) {
        char cdir[600];
        snprintf(cdir, sizeof cdir, "%s/case-%d", dir, k);
        df_text_encoder *e = NULL;
        CHECK_OK(df_text_encoder_load(cdir, &e));
        snprintf(path, sizeof path, "%s/io.safetensors", cdir);
        st_file io;
        if (!e || st_open(path, &io)) {
            CHECK(0, "case %d: %s", k, df_error());
            df_text_encoder_free(e);
            continue;
        }
        size_t nid = 0, nh = 0, np = 0, nd = 0;
        float *idf = read_tensor(&io, "ids", &nid), *want = read_tensor(&io, "hidden", &nh);
        float *want_pooled = read_tensor(&io, "pooled", &np), *dh = read_tensor(&io, "dhidden", &nd);
        const int D = df_text_encoder_config(e)->hidden_size;
        const st_tensor *ti = st_find(&io, "ids");
        const int n = (int)ti->shape[0], Lt = (int)ti->shape[1];
        int32_t *ids = malloc(sizeof *ids * nid);
        float *hidden = malloc(sizeof(float) * nh), *pooled = malloc(sizeof(float) * np);
        for (size_t i = 0; i < nid; i++) ids[i] = (int32_t)idf[i];
        CHECK_OK(df_text_encode(e, n, Lt, ids, hidden, pooled));
        const double eh = rel(hidden, want, nh), ep = rel(pooled, want_pooled, np);
        /* gradients of sum(hidden * dhidden) */
        memset(df_text_encoder_grads(e), 0, df_text_encoder_num_params(e) * sizeof(float));
        CHECK_OK(df_text_encoder_backward(e, dh));
        double eg = 0;
        char worst[160] = "";
        int checked = 0;
        for (int t = 0; t < io.n; t++) {
            const char *name = io.tensors[t].name;
            if (strncmp(name, "grad.", 5)) continue;
            size_t cnt = 0;
            float *g = read_tensor(&io, name, &cnt);
            size_t off;
            const int id = df_text_encoder_find_tensor(e, name + 5);
            const float *mine = id >= 0 && df_text_encoder_tensor_info(e, id, NULL, NULL, &off)
                                    ? df_text_encoder_grads(e) + off : NULL;
            CHECK(mine, "case %d: the encoder has no parameter %s", k, name + 5);
            if (g && mine) {
                /* a key bias's gradient is zero in exact arithmetic (it shifts a query's scores all alike):
                 * measured against its weight's gradient, as in the U-Net's parity test */
                double r = rel(mine, g, cnt);
                const size_t len = strlen(name);
                if (len > 11 && !strcmp(name + len - 11, "k_proj.bias")) {
                    char wname[160];
                    snprintf(wname, sizeof wname, "%.*sweight", (int)(len - 4), name);
                    size_t wc = 0;
                    float *wg = read_tensor(&io, wname, &wc);
                    double m = 1e-30, d = 0;
                    for (size_t i = 0; wg && i < wc; i++) m = fmax(m, fabs(wg[i]));
                    for (size_t i = 0; i < cnt; i++) d = fmax(d, fabs((double)mine[i] - g[i]));
                    r = d / m;
                    free(wg);
                }
                if (r > eg) eg = r, snprintf(worst, sizeof worst, "%s", name + 5);
                checked++;
            }
            free(g);
        }
        printf("    case %d (%d texts of %d tokens, width %d): hidden %.2g, pooled %.2g, %d parameter gradients, worst "
               "%.2g (%s)\n", k, n, Lt, D, eh, ep, checked, eg, worst);
        CHECK(eh < 1e-5 && ep < 1e-5, "case %d: hidden states differ by %.3g, pooled by %.3g", k, eh, ep);
        CHECK(checked >= 4 + 12 && eg < 2e-5, "case %d: %d gradients checked, worst %.3g (%s)", k, checked, eg, worst);
        free(idf), free(want), free(want_pooled), free(dh), free(ids), free(hidden), free(pooled);
        st_close(&io);
        df_text_encoder_free(e);
    }
}

/* A tiny encoder: create, encode, save, load back: the same weights and the same bits out. */
TEST(text_encoder_save_load_round_trip) {
    df_text_config c;
    df_text_config_default(&c);
    c.vocab_size = 40, c.hidden_size = 16, c.intermediate_size = 32, c.num_hidden_layers = 2;
    c.num_attention_heads = 2, c.max_position_embeddings = 9, c.hidden_act = DF_ACT_GELU, c.eos_token_id = 39;
    df_text_encoder *e = NULL, *back = NULL;
    CHECK_OK(df_text_encoder_create(&c, 5, &e));
    if (!e) return;
    /* transformers' init: embeddings N(0, 0.02^2), LayerNorm 1 and 0, biases 0 */
    size_t off;
    int ndim, shape[4];
    const int tok = df_text_encoder_find_tensor(e, "text_model.embeddings.token_embedding.weight");
    CHECK(tok >= 0 && df_text_encoder_tensor_info(e, tok, &ndim, shape, &off) && ndim == 2 && shape[0] == 40 &&
              shape[1] == 16, "token embedding table");
    double ss = 0;
    for (int i = 0; i < 40 * 16; i++) ss += pow(df_text_encoder_params(e)[off + i], 2);
    CHECK(fabs(sqrt(ss / 640) - 0.02) < 0.003, "token embeddings' std %.4f, want 0.02", sqrt(ss / 640));
    CHECK(df_text_encoder_num_tensors(e) == 2 + 2 * 16 + 2, "%d tensors", df_text_encoder_num_tensors(e));
    int32_t ids[2 * 9];
    for (int i = 0; i < 18; i++) ids[i] = (i * 7 + 3) % 40;
    ids[5] = 39;
    float h1[2 * 9 * 16], h2[2 * 9 * 16], p1[32], p2[32];
    CHECK_OK(df_text_encode(e, 2, 9, ids, h1, p1));
    CHECK(!memcmp(p1, h1 + 5 * 16, sizeof(float) * 16), "pooled: the state at the first end token");
    char dir[600];
    snprintf(dir, sizeof dir, "%s/text-encoder-rt", test_tmp_dir());
    CHECK_OK(df_text_encoder_save(e, dir));
    CHECK_OK(df_text_encoder_load(dir, &back));
    if (back) {
        CHECK(!memcmp(df_text_encoder_params(e), df_text_encoder_params(back), df_text_encoder_num_params(e) * 4),
              "weights change through save and load");
        CHECK(df_text_encoder_config(back)->hidden_act == DF_ACT_GELU && df_text_encoder_config(back)->eos_token_id == 39,
              "config through save and load");
        CHECK_OK(df_text_encode(back, 2, 9, ids, h2, p2));
        CHECK(!memcmp(h1, h2, sizeof h1), "a loaded encoder gives other states");
    }
    /* bad calls: too many tokens, an id past the vocabulary, backward before forward */
    CHECK(df_text_encode(e, 2, 10, ids, h1, NULL) == DF_ERR_ARG && strstr(df_error(), "at most 9"), "%s", df_error());
    ids[3] = 40;
    CHECK(df_text_encode(e, 1, 9, ids, h1, NULL) == DF_ERR_ARG && strstr(df_error(), "token id 40"), "%s", df_error());
    df_text_encoder *fresh = NULL;
    CHECK_OK(df_text_encoder_create(&c, 5, &fresh));
    CHECK(fresh && df_text_encoder_backward(fresh, h1) == DF_ERR_ARG, "backward before a forward pass");
    df_text_encoder_free(fresh);
    df_text_encoder_free(e);
    df_text_encoder_free(back);
}

TEST(text_encoder_bad_configs) {
    static const struct {
        const char *json, *want;
    } cases[] = {
        {"{\"hidden_act\": \"relu\"}", "\"hidden_act\""},
        {"{\"attention_dropout\": 0.1}", "\"attention_dropout\""},
        {"{\"hidden_size\": 50, \"num_attention_heads\": 8}", "does not divide"},
        {"{\"model_type\": \"bert\"}", "\"model_type\""},
        {"{\"architectures\": [\"CLIPTextModelWithProjection\"]}", "\"architectures\""},
        {"{\"vocab_size\": 0}", "\"vocab_size\""},
        {"{\"num_hidden_layers\": 2.5}", "\"num_hidden_layers\""},
        {"{\"layer_norm_eps\": -1}", "\"layer_norm_eps\""},
        {"{\"use_cache\": true}", "unknown field \"use_cache\""},
        {"[1]", "not a JSON object"},
        {"{\"vocab_size\": ", "not a JSON object"},
    };
    char path[600];
    snprintf(path, sizeof path, "%s/bad-text-config.json", test_tmp_dir());
    for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) {
        FILE *f = fopen(path, "wb");
        if (!f) return;
        fputs(cases[i].json, f);
        fclose(f);
        df_text_config c;
        const df_status st = df_text_config_load(path, &c);
        CHECK(st != DF_OK && strstr(df_error(), cases[i].want) && strstr(df_error(), "bad-text-config.json"),
              "case %d: status %d, \"%s\", want \"%s\"", i, st, df_error(), cases[i].want);
    }
    /* a folder whose weights lack a tensor, or hold one the config does not */
    df_text_config c;
    df_text_config_default(&c);
    c.vocab_size = 10, c.hidden_size = 8, c.intermediate_size = 8, c.num_hidden_layers = 1, c.num_attention_heads = 1;
    c.max_position_embeddings = 4;
    df_text_encoder *e = NULL, *back = (df_text_encoder *)1;
    CHECK_OK(df_text_encoder_create(&c, 1, &e));
    char dir[500];
    snprintf(dir, sizeof dir, "%s/text-encoder-bad", test_tmp_dir());
    CHECK_OK(df_text_encoder_save(e, dir));
    c.num_hidden_layers = 2;
    snprintf(path, sizeof path, "%s/config.json", dir);
    CHECK_OK(df_text_config_save(&c, path));
    CHECK(df_text_encoder_load(dir, &back) == DF_ERR_SHAPE && !back && strstr(df_error(), "missing tensor"), "%s",
          df_error());
    c.num_hidden_layers = 1, c.intermediate_size = 12;
    CHECK_OK(df_text_config_save(&c, path));
    CHECK(df_text_encoder_load(dir, &back) == DF_ERR_SHAPE && strstr(df_error(), "mlp.fc1.weight has shape [8, 8]"), "%s",
          df_error());
    df_text_encoder_free(e);
}
