/* transformers' CLIPTextModel on the tape: its config.json, the layer sequence under transformers'
 * parameter names, init, load and save, and encoding token ids (forward and backward). */
#define _POSIX_C_SOURCE 200809L
#define DF_REAL_F64 0
#include "ops_real.h"
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <string.h>

/* ---- config ------------------------------------------------------------------------------------------ */

void df_text_config_default(df_text_config *c) {
    *c = (df_text_config){.vocab_size = 49408, .hidden_size = 512, .intermediate_size = 2048, .num_hidden_layers = 12,
                          .num_attention_heads = 8, .max_position_embeddings = 77, .projection_dim = 512,
                          .hidden_act = DF_ACT_QUICK_GELU, .layer_norm_eps = 1e-5f, .initializer_factor = 1,
                          .initializer_range = 0.02f, .bos_token_id = 49406, .eos_token_id = 49407, .pad_token_id = 1};
}

static const char *const act_names[][2] = {
    {"gelu", NULL}, {"gelu_new", "gelu_pytorch_tanh"}, {"quick_gelu", NULL}};   /* by df_act */

/* The sizes a CPU run can hold; a config past them is refused before anything is allocated. */
#define MAX_VOCAB (1 << 22)
#define MAX_WIDTH 8192
#define MAX_LAYERS 96
#define MAX_POSITIONS 4096

static df_status validate(const df_text_config *c, const char *src) {
    const struct {
        const char *name;
        int v, lo, hi;
    } ints[] = {{"vocab_size", c->vocab_size, 1, MAX_VOCAB},
                {"hidden_size", c->hidden_size, 1, MAX_WIDTH},
                {"intermediate_size", c->intermediate_size, 1, 4 * MAX_WIDTH},
                {"num_hidden_layers", c->num_hidden_layers, 1, MAX_LAYERS},
                {"num_attention_heads", c->num_attention_heads, 1, MAX_WIDTH},
                {"max_position_embeddings", c->max_position_embeddings, 1, MAX_POSITIONS},
                {"projection_dim", c->projection_dim, 1, MAX_WIDTH}};
    for (int i = 0; i < DF_COUNTOF(ints); i++)
        if (ints[i].v < ints[i].lo || ints[i].v > ints[i].hi)
            return df_fail(DF_ERR_CONFIG, "%s: field \"%s\": %d is outside %d..%d", src, ints[i].name, ints[i].v,
                           ints[i].lo, ints[i].hi);
    if (c->hidden_size % c->num_attention_heads)
        return df_fail(DF_ERR_CONFIG, "%s: field \"num_attention_heads\": %d does not divide hidden_size %d", src,
                       c->num_attention_heads, c->hidden_size);
    if (!(c->layer_norm_eps > 0 && c->layer_norm_eps < 1))
        return df_fail(DF_ERR_CONFIG, "%s: field \"layer_norm_eps\": %g is not in (0, 1)", src, c->layer_norm_eps);
    if (!(c->initializer_factor > 0 && c->initializer_factor < 1e3))
        return df_fail(DF_ERR_CONFIG, "%s: field \"initializer_factor\": %g is not in (0, 1000)", src,
                       c->initializer_factor);
    if ((unsigned)c->hidden_act >= DF_ACT_COUNT) return df_fail(DF_ERR_CONFIG, "%s: field \"hidden_act\": unknown", src);
    return DF_OK;
}

/* PretrainedConfig's own keys, and CLIP's that change nothing here: read and ignored. */
static const char *const ignored_keys[] = {
    "architectures", "transformers_version", "torch_dtype", "return_dict", "output_hidden_states",
    "output_attentions", "torchscript", "use_bfloat16", "tf_legacy_loss", "pruned_heads", "tie_word_embeddings",
    "chunk_size_feed_forward", "is_encoder_decoder", "is_decoder", "cross_attention_hidden_size",
    "add_cross_attention", "tie_encoder_decoder", "max_length", "min_length", "do_sample", "early_stopping",
    "num_beams", "num_beam_groups", "diversity_penalty", "temperature", "top_k", "top_p", "typical_p",
    "repetition_penalty", "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids",
    "num_return_sequences", "output_scores", "return_dict_in_generate", "forced_bos_token_id",
    "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens",
    "begin_suppress_tokens", "finetuning_task", "id2label", "label2id", "tokenizer_class", "prefix",
    "sep_token_id", "decoder_start_token_id", "task_specific_params", "problem_type", "gradient_checkpointing",
    "dropout"};

static int json_int(const cJSON *v, int *out) {
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= INT_MIN && v->valuedouble <= INT_MAX) ||
        (double)(int)v->valuedouble != v->valuedouble)
        return 0;
    *out = (int)v->valuedouble;
    return 1;
}

static df_status bad(const char *src, const char *key, const char *want) {
    return df_fail(DF_ERR_CONFIG, "%s: field \"%s\": unsupported value (expected %s)", src, key, want);
}

static df_status parse(const cJSON *root, const char *src, df_text_config *c) {
    if (!cJSON_IsObject(root)) return df_fail(DF_ERR_CONFIG, "%s: the config is not a JSON object", src);
    df_text_config_default(c);
    int *const ints[] = {&c->vocab_size,    &c->hidden_size,  &c->intermediate_size,       &c->num_hidden_layers,
                         &c->num_attention_heads, &c->max_position_embeddings, &c->projection_dim,
                         &c->bos_token_id,  &c->eos_token_id, &c->pad_token_id};
    static const char *const int_keys[] = {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                           "num_attention_heads", "max_position_embeddings", "projection_dim",
                                           "bos_token_id", "eos_token_id", "pad_token_id"};
    float *const floats[] = {&c->layer_norm_eps, &c->initializer_factor, &c->initializer_range};
    static const char *const float_keys[] = {"layer_norm_eps", "initializer_factor", "initializer_range"};
    for (const cJSON *v = root->child; v; v = v->next) {
        const char *k = v->string;
        int i, done = 0;
        for (i = 0; i < DF_COUNTOF(int_keys) && !done; i++)
            if (!strcmp(k, int_keys[i])) {
                if (!json_int(v, ints[i])) return bad(src, k, "an integer");
                done = 1;
            }
        for (i = 0; i < DF_COUNTOF(float_keys) && !done; i++)
            if (!strcmp(k, float_keys[i])) {
                if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) return bad(src, k, "a number");
                *floats[i] = (float)v->valuedouble, done = 1;
            }
        if (done) continue;
        if (!strcmp(k, "hidden_act")) {
            int a = -1;
            for (i = 0; i < DF_ACT_COUNT && cJSON_IsString(v); i++)
                for (int j = 0; j < 2; j++)
                    if (act_names[i][j] && !strcmp(v->valuestring, act_names[i][j])) a = i;
            if (a < 0) return bad(src, k, "\"quick_gelu\", \"gelu\", \"gelu_new\" or \"gelu_pytorch_tanh\"");
            c->hidden_act = (df_act)a;
        } else if (!strcmp(k, "attention_dropout")) {
            if (!cJSON_IsNumber(v) || v->valuedouble != 0) return bad(src, k, "0 (attention dropout is not supported)");
        } else if (!strcmp(k, "model_type")) {
            if (!cJSON_IsString(v) || strcmp(v->valuestring, "clip_text_model")) return bad(src, k, "\"clip_text_model\"");
        } else if (!strcmp(k, "architectures")) {
            const cJSON *a = cJSON_IsArray(v) ? v->child : NULL;
            if (!a || !cJSON_IsString(a) || strcmp(a->valuestring, "CLIPTextModel") || a->next)
                return bad(src, k, "[\"CLIPTextModel\"]");
        } else {
            int known = k[0] == '_';   /* "_name_or_path" and other bookkeeping */
            for (i = 0; i < DF_COUNTOF(ignored_keys) && !known; i++) known = !strcmp(k, ignored_keys[i]);
            if (!known) return df_fail(DF_ERR_CONFIG, "%s: unknown field \"%s\" (not a CLIPTextModel setting)", src, k);
        }
    }
    return validate(c, src);
}

df_status df_text_config_load(const char *path, df_text_config *c) {
    cJSON *j;
    df_status st = df_read_json_object(path, &j);
    if (st) return st;
    st = parse(j, path, c);
    cJSON_Delete(j);
    return st;
}

df_status df_text_config_save(const df_text_config *c, const char *path) {
    df_status st = validate(c, path);
    if (st) return st;
    cJSON *j = cJSON_CreateObject(), *arch = cJSON_AddArrayToObject(j, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString("CLIPTextModel"));
    cJSON_AddNumberToObject(j, "attention_dropout", 0);
    cJSON_AddNumberToObject(j, "bos_token_id", c->bos_token_id);
    cJSON_AddNumberToObject(j, "dropout", 0);
    cJSON_AddNumberToObject(j, "eos_token_id", c->eos_token_id);
    cJSON_AddStringToObject(j, "hidden_act", act_names[c->hidden_act][0] ? act_names[c->hidden_act][0] : "gelu");
    cJSON_AddNumberToObject(j, "hidden_size", c->hidden_size);
    cJSON_AddNumberToObject(j, "initializer_factor", c->initializer_factor);
    cJSON_AddNumberToObject(j, "initializer_range", c->initializer_range);
    cJSON_AddNumberToObject(j, "intermediate_size", c->intermediate_size);
    cJSON_AddNumberToObject(j, "layer_norm_eps", c->layer_norm_eps);
    cJSON_AddNumberToObject(j, "max_position_embeddings", c->max_position_embeddings);
    cJSON_AddStringToObject(j, "model_type", "clip_text_model");
    cJSON_AddNumberToObject(j, "num_attention_heads", c->num_attention_heads);
    cJSON_AddNumberToObject(j, "num_hidden_layers", c->num_hidden_layers);
    cJSON_AddNumberToObject(j, "pad_token_id", c->pad_token_id);
    cJSON_AddNumberToObject(j, "projection_dim", c->projection_dim);
    cJSON_AddStringToObject(j, "torch_dtype", "float32");
    cJSON_AddNumberToObject(j, "vocab_size", c->vocab_size);
    return df_write_json_atomic(path, j);
}

/* ---- the network --------------------------------------------------------------------------------------- */

/* A Linear at every token of the (n, in, 1, L) value, weight N(0, std^2), bias 0 (transformers' init for CLIP);
 * plus `residual` (-1: none), added by the same node. */
static int token_linear_add(unet_graph *g, int x, int cout, float std, const char *pre, const char *what,
                            int residual) {
    char name[112];
    snprintf(name, sizeof name, "%s.%s", pre, what);
    const param_spec zero = {.init = INIT_ZERO};
    return tape_token_linear_add(g, x, cout, (param_spec){.init = INIT_NORMAL, .std = std}, &zero, name, residual);
}
static int token_linear(unet_graph *g, int x, int cout, float std, const char *pre, const char *what) {
    return token_linear_add(g, x, cout, std, pre, what, -1);
}

static int layer_norm(unet_graph *g, int x, float eps, const char *pre, const char *what) {
    char name[112];
    snprintf(name, sizeof name, "%s.%s", pre, what);
    return tape_layernorm(g, x, eps, name);
}

/* The tape of CLIPTextModel for n texts of L tokens: values (n, hidden, 1, L). */
static df_status clip_build(const df_text_config *c, int n, int L, unet_graph *g) {
    memset(g, 0, sizeof *g);
    g->n = n, g->h = 1, g->w = L, g->x = -1, g->ctx = -1;
    const int D = c->hidden_size, heads = c->num_attention_heads, layers = c->num_hidden_layers;
    const float f = c->initializer_factor;
    /* transformers' CLIP init: embeddings N(0, 0.02 f); attention in-projections D^-1/2 (2 layers)^-1/2 f,
     * out-projection D^-1/2 f; fc1 (2D)^-1/2 f, fc2 as the in-projections */
    const float emb_std = 0.02f * f, in_std = (float)(pow(D, -0.5) * pow(2.0 * layers, -0.5) * f),
                out_std = (float)(pow(D, -0.5) * f), fc_std = (float)(pow(2.0 * D, -0.5) * f);
    int tok = tape_param(g, (param_spec){.init = INIT_NORMAL, .shape = {c->vocab_size, D}, .std = emb_std},
                         "text_model.embeddings.token_embedding.weight");
    int pos = tape_param(g, (param_spec){.init = INIT_NORMAL, .shape = {c->max_position_embeddings, D}, .std = emb_std},
                         "text_model.embeddings.position_embedding.weight");
    gnode *d = tape_node(g, OP_TOKENS, -1, -1, -1, tape_value(g, n, D, 1, L));
    if (!d) return g->err ? g->err : df_fail(DF_ERR_NOMEM, "out of memory building the text encoder");
    d->w = tok, d->b = pos;
    int h = d->out;
    for (int i = 0; i < layers; i++) {
        char pre[64];
        snprintf(pre, sizeof pre, "text_model.encoder.layers.%d", i);
        int x = layer_norm(g, h, c->layer_norm_eps, pre, "layer_norm1");
        int q = token_linear(g, x, D, in_std, pre, "self_attn.q_proj");
        int k = token_linear(g, x, D, in_std, pre, "self_attn.k_proj");
        int v = token_linear(g, x, D, in_std, pre, "self_attn.v_proj");
        gnode *a = g->err ? NULL : tape_node(g, OP_ATTENTION, q, k, v, tape_value(g, n, D, 1, L));
        if (!a) break;
        a->iarg[0] = heads, a->iarg[1] = 1;   /* causal */
        a->farg[0] = (float)(1.0 / sqrt((double)(D / heads)));
        h = token_linear_add(g, a->out, D, out_std, pre, "self_attn.out_proj", h);
        x = layer_norm(g, h, c->layer_norm_eps, pre, "layer_norm2");
        x = token_linear(g, x, c->intermediate_size, fc_std, pre, "mlp.fc1");
        gnode *act = g->err ? NULL : tape_node(g, OP_ACT, x, -1, -1, tape_value(g, n, c->intermediate_size, 1, L));
        if (!act) break;
        act->iarg[0] = (int)c->hidden_act;
        h = token_linear_add(g, act->out, D, in_std, pre, "mlp.fc2", h);
    }
    g->out = layer_norm(g, h, c->layer_norm_eps, "text_model", "final_layer_norm");
    if (g->err) {
        df_status st = g->err;
        unet_graph_free(g);
        return st;
    }
    return tape_plan(g);
}

/* ---- the encoder --------------------------------------------------------------------------------------- */

struct df_text_encoder {
    df_text_config cfg;
    unet_graph     g;               /* the table, and the tape for (g.n, g.w) texts and tokens */
    float         *params, *grads;
    float         *act, *dact, *scratch;
    size_t         act_cap, dact_cap, scratch_cap;
    int           *ids;             /* the last forward's tokens (n * L) */
    size_t         ids_cap;
    int            have_forward, threads;
};

/* The tape for n texts of L tokens (built again only when they change) and its buffers. */
static df_status ensure(df_text_encoder *e, int n, int L, int grads) {
    if (!e->g.nodes || e->g.n != n || e->g.w != L) {
        unet_graph g;
        df_status st = clip_build(&e->cfg, n, L, &g);
        if (st) return st;
        unet_graph_free(&e->g);
        e->g = g;
        e->have_forward = 0;
    }
    const unet_graph *g = &e->g;
    if (df_fit_aligned((void **)&e->act, &e->act_cap, g->act_size, sizeof(float), 0) ||
        (grads && df_fit_aligned((void **)&e->dact, &e->dact_cap, g->grad_size, sizeof(float), 0)) ||
        df_fit_aligned((void **)&e->scratch, &e->scratch_cap, g->scratch_size * (size_t)omp_get_max_threads(), sizeof(float),
                       0) ||
        df_fit_aligned((void **)&e->ids, &e->ids_cap, (size_t)n * L, sizeof(int), 0))
        return df_fail(DF_ERR_NOMEM, "out of memory for %d texts of %d tokens (%.1f MB of activations)", n, L,
                       (double)g->act_size * 4 / 1e6);
    return DF_OK;
}

static df_status encoder_new(const df_text_config *c, const char *src, df_text_encoder **out) {
    *out = NULL;
    df_status st = validate(c, src);
    if (st) return st;
    df_blas_single_thread();
    df_text_encoder *e = calloc(1, sizeof *e);
    if (!e) return df_fail(DF_ERR_NOMEM, "out of memory");
    e->cfg = *c;
    st = clip_build(c, 1, 1, &e->g);
    if (!st) {
        e->params = df_alloc_aligned(e->g.nparam_values * sizeof(float));
        e->grads = df_alloc_aligned(e->g.nparam_values * sizeof(float));
        if (!e->params || !e->grads) st = df_fail(DF_ERR_NOMEM, "out of memory for %zu parameters", e->g.nparam_values);
        else memset(e->grads, 0, e->g.nparam_values * sizeof(float));
    }
    if (st) {
        df_text_encoder_free(e);
        return st;
    }
    *out = e;
    return DF_OK;
}

df_status df_text_encoder_create(const df_text_config *c, uint64_t seed, df_text_encoder **out) {
    df_status st = encoder_new(c, "text encoder config", out);
    if (st) return st;
    df_rng rng;
    df_rng_init(&rng, seed);
    params_init(&(*out)->g, (*out)->params, &rng);
    return DF_OK;
}

df_status df_text_encoder_load(const char *dir, df_text_encoder **out) {
    *out = NULL;
    char path[4096];
    df_text_config c;
    snprintf(path, sizeof path, "%s/config.json", dir);
    df_status st = df_text_config_load(path, &c);
    if (st) return st;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    st_file f;
    st = st_open(path, &f);
    if (st) return st;
    df_text_encoder *e;
    st = encoder_new(&c, path, &e);
    static const char *const ignore[] = {"text_model.embeddings.position_ids", NULL};
    if (!st) st = params_read(&e->g, e->params, &f, path, NULL, ignore);
    st_close(&f);
    if (st) {
        df_text_encoder_free(e);
        return st;
    }
    *out = e;
    return DF_OK;
}

df_status df_text_encoder_save(const df_text_encoder *e, const char *dir) {
    df_status st = df_mkdir_p(dir);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (!st) st = params_write(&e->g, e->params, path);
    snprintf(path, sizeof path, "%s/config.json", dir);
    return st ? st : df_text_config_save(&e->cfg, path);
}

void df_text_encoder_free(df_text_encoder *e) {
    if (!e) return;
    unet_graph_free(&e->g);
    df_free_aligned(e->params), df_free_aligned(e->grads);
    df_free_aligned(e->act), df_free_aligned(e->dact), df_free_aligned(e->scratch), df_free_aligned(e->ids);
    free(e);
}

const df_text_config *df_text_encoder_config(const df_text_encoder *e) { return &e->cfg; }
size_t df_text_encoder_num_params(const df_text_encoder *e) { return e->g.nparam_values; }
float *df_text_encoder_params(df_text_encoder *e) { return e->params; }
float *df_text_encoder_grads(df_text_encoder *e) { return e->grads; }
void   df_text_encoder_set_threads(df_text_encoder *e, int n) { e->threads = n > 0 ? n : 0; }
int    df_text_encoder_num_tensors(const df_text_encoder *e) { return e->g.nparams; }
int    df_text_encoder_find_tensor(const df_text_encoder *e, const char *name) { return unet_find_param(&e->g, name); }
const char *df_text_encoder_tensor_info(const df_text_encoder *e, int i, int *ndim, int shape[4], size_t *offset) {
    return graph_param_info(&e->g, i, ndim, shape, offset);
}

df_status df_text_encoder_reserve(df_text_encoder *e, int n, int L) {
    if (n < 1 || L < 1 || L > e->cfg.max_position_embeddings)
        return df_fail(DF_ERR_ARG, "text encoder: %d texts of %d tokens (at most %d)", n, L, e->cfg.max_position_embeddings);
    const int caller = df_threads_enter(e->threads);
    df_status st = ensure(e, n, L, 1);
    df_threads_leave(caller);
    return st;
}

df_status df_text_encode(df_text_encoder *e, int n, int L, const int32_t *ids, float *hidden, float *pooled) {
    const df_text_config *c = &e->cfg;
    if (n < 1 || L < 1 || L > c->max_position_embeddings || !ids || !hidden)
        return df_fail(DF_ERR_ARG, "text encoder: %d texts of %d tokens (at most %d)", n, L, c->max_position_embeddings);
    for (size_t i = 0; i < (size_t)n * L; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return df_fail(DF_ERR_ARG, "text encoder: token id %d outside the vocabulary of %d", (int)ids[i],
                           c->vocab_size);
    const int caller = df_threads_enter(e->threads);
    df_status st = ensure(e, n, L, 1);
    if (!st) {
        const unet_graph *g = &e->g;
        for (size_t i = 0; i < (size_t)n * L; i++) e->ids[i] = ids[i];
        unet_forward_f32(g, e->params, e->act, e->scratch, NULL, e->ids, 0);
        /* (n, D, 1, L) on the tape -> (n, L, D) as transformers returns it */
        const int D = c->hidden_size;
        const float *y = e->act + g->vals[g->out].off;
        for (int b = 0; b < n; b++)
            for (int l = 0; l < L; l++)
                for (int k = 0; k < D; k++) hidden[((size_t)b * L + l) * D + k] = y[((size_t)b * D + k) * L + l];
        for (int b = 0; pooled && b < n; b++) {
            const int32_t *row = ids + (size_t)b * L;
            int at = 0;
            for (int l = 0; l < L; l++)
                if (c->eos_token_id == 2 ? row[l] > row[at] : (row[l] == c->eos_token_id)) {
                    at = l;
                    if (c->eos_token_id != 2) break;
                }
            memcpy(pooled + (size_t)b * D, hidden + ((size_t)b * L + at) * D, sizeof(float) * D);
        }
        e->have_forward = 1;
    }
    df_threads_leave(caller);
    return st;
}

df_status df_text_encoder_backward(df_text_encoder *e, const float *dhidden) {
    if (!e->have_forward) return df_fail(DF_ERR_ARG, "text encoder: backward without a forward pass");
    const unet_graph *g = &e->g;
    const int n = g->n, L = g->w, D = e->cfg.hidden_size;
    const int caller = df_threads_enter(e->threads);
    float *dy = e->dact + g->vals[g->out].goff;
    for (int b = 0; b < n; b++)
        for (int l = 0; l < L; l++)
            for (int k = 0; k < D; k++) dy[((size_t)b * D + k) * L + l] = dhidden[((size_t)b * L + l) * D + k];
    unet_backward_f32(g, e->params, e->grads, e->act, e->dact, e->scratch, e->ids, 0);
    df_threads_leave(caller);
    return DF_OK;
}
