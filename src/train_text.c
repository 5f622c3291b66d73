/* Text-conditioned training: the text parts of a run, its captions tokenized once, each batch's texts through the
 * text encoder into the U-Net's context and, when the encoder trains with the U-Net, its gradient back through
 * the encoder; the prompts' states for grids and evaluations; a checkpoint's text folders. */
#define _POSIX_C_SOURCE 200809L
#include "train_text.h"

#include <string.h>

/* A new encoder for a tokenizer: as wide as the U-Net's text states, two layers of 32-wide heads, an MLP four
 * times as wide, positions for the tokenizer's context, its special ids (what the empty text tokenizes to: the
 * start, end and padding tokens). */
static df_status default_text_config(const df_tokenizer *tok, int width, df_text_config *c) {
    const int L = df_tokenizer_context(tok);
    int32_t *ids = malloc(sizeof *ids * (size_t)L);
    if (!ids) return df_fail(DF_ERR_NOMEM, "out of memory");
    df_status st = df_tokenize(tok, "", ids, NULL, NULL);
    df_text_config_default(c);
    c->vocab_size = df_tokenizer_vocab_size(tok);
    c->hidden_size = width;
    c->intermediate_size = 4 * width;
    c->num_hidden_layers = 2;
    c->num_attention_heads = DF_MAX(1, width / 32);
    while (width % c->num_attention_heads) c->num_attention_heads--;
    c->max_position_embeddings = L;
    c->projection_dim = width;
    if (!st) c->bos_token_id = ids[0], c->eos_token_id = ids[1 % L], c->pad_token_id = ids[L > 2 ? 2 : 1 % L];
    free(ids);
    return st;
}

df_status text_train_new_parts(const df_train_params *p, df_unet_config *cfg, const char *init, df_tokenizer **tok,
                               df_text_encoder **enc) {
    *tok = NULL, *enc = NULL;
    df_tokenizer *itok = NULL;
    df_text_encoder *ienc = NULL;
    df_status st = DF_OK;
    if (init && (!p->tokenizer || !p->text_encoder)) {   /* the starting pipeline's own text half */
        char dir[4200], path[4300];
        snprintf(dir, sizeof dir, "%s/latest", init);
        if (!df_is_dir(dir)) snprintf(dir, sizeof dir, "%s", init);
        snprintf(path, sizeof path, "%s/text_encoder", dir);
        if (!p->text_encoder && !p->text_config && df_is_dir(path)) st = df_text_encoder_load(path, &ienc);
        snprintf(path, sizeof path, "%s/tokenizer", dir);
        if (!st && !p->tokenizer && df_is_dir(path)) st = df_tokenizer_load(path, &itok);
    }
    if (!st && p->tokenizer) st = df_tokenizer_load(p->tokenizer, tok);
    else if (!st) *tok = itok, itok = NULL;
    if (!st && !*tok)
        st = df_fail(DF_ERR_ARG, "text-to-image training needs a tokenizer: a CLIPTokenizer folder (vocab.json, merges.txt)");
    if (!st && p->text_encoder) {
        st = df_text_encoder_load(p->text_encoder, enc);
    } else if (!st && ienc) {
        *enc = ienc, ienc = NULL;
    } else if (!st && p->freeze_text_encoder) {
        st = df_fail(DF_ERR_ARG, "a frozen text encoder must come trained: give one (a CLIPTextModel folder) or let it train");
    } else if (!st) {
        df_text_config tc;
        int width = cfg && cfg->condition ? cfg->cross_attention_dim : p->cross_attention_dim > 0 ? p->cross_attention_dim : 128;
        st = p->text_config ? df_text_config_load(p->text_config, &tc) : default_text_config(*tok, width, &tc);
        if (!st) st = df_text_encoder_create(&tc, train_seed_mix(p->seed ^ 0x7E47), enc);
    }
    /* a preset's or config's U-Net attends to the encoder's states */
    if (!st && cfg && !cfg->condition) st = df_unet_config_text(cfg, df_text_encoder_config(*enc)->hidden_size);
    df_text_encoder_free(ienc), df_tokenizer_free(itok);
    if (st) {
        df_tokenizer_free(*tok), df_text_encoder_free(*enc);
        *tok = NULL, *enc = NULL;
    }
    return st;
}

df_status text_train_resumed_parts(const char *ck, int frozen, df_tokenizer **tok, df_text_encoder **enc) {
    char path[4400];
    *tok = NULL, *enc = NULL;
    snprintf(path, sizeof path, "%s/tokenizer", ck);
    df_status st = df_tokenizer_load(path, tok);
    snprintf(path, sizeof path, "%s/%s", ck, frozen ? "text_encoder" : "text_encoder_raw");
    if (!st) st = df_text_encoder_load(path, enc);
    if (st) df_tokenizer_free(*tok), *tok = NULL;
    return st;
}

void text_train_free(text_train *t) {
    df_tokenizer_free(t->tok);
    df_text_encoder_free(t->enc);
    df_text_encoder_free(t->ema_enc);
    free(t->ids), free(t->first), free(t->empty), free(t->batch_ids);
    free(t->states), free(t->dstates);
    memset(t, 0, sizeof *t);
}

/* Every caption of the data tokenized, image by image (a caption that is not valid UTF-8 was refused when
 * the data loaded; the tokenizer's message names the image otherwise). */
static df_status tokenize_captions(text_train *t, const df_dataset *data) {
    const int n = df_dataset_count(data), L = t->L;
    long total = 0;
    for (int i = 0; i < n; i++) total += df_dataset_num_captions(data, i);
    if (total == 0)
        return df_fail(DF_ERR_ARG, "%s: no captions to train on (metadata.jsonl, or a .txt beside each image)",
                       df_dataset_description(data));
    for (int i = 0; i < n; i++)
        if (df_dataset_num_captions(data, i) == 0)
            return df_fail(DF_ERR_FORMAT, "%s: image %d has no caption", df_dataset_description(data), i);
    t->first = malloc(sizeof(int) * ((size_t)n + 1));
    t->ids = malloc(sizeof(int32_t) * (size_t)total * L);
    t->empty = malloc(sizeof(int32_t) * (size_t)L);
    if (!t->first || !t->ids || !t->empty) return df_fail(DF_ERR_NOMEM, "out of memory for %ld captions", total);
    df_status st = df_tokenize(t->tok, "", t->empty, NULL, NULL);
    int row = 0;
    for (int i = 0; i < n && !st; i++) {
        t->first[i] = row;
        for (int k = 0; k < df_dataset_num_captions(data, i) && !st; k++, row++) {
            int dropped = 0;
            st = df_tokenize(t->tok, df_dataset_caption(data, i, k), t->ids + (size_t)row * L, NULL, &dropped);
            if (st) {
                char why[300];
                snprintf(why, sizeof why, "%s", df_error());
                return df_fail(st, "image %d, caption %d: %s", i, k + 1, why);
            }
            t->truncated += dropped > 0;
        }
    }
    t->first[n] = row;
    return st;
}

df_status text_train_open(text_train *t, train_loop *L, df_model *model, const df_dataset *data, df_tokenizer *tok,
                          df_text_encoder *enc, int frozen, double dropout, uint64_t seed, int B) {
    memset(t, 0, sizeof *t);
    t->tok = tok, t->enc = enc, t->frozen = frozen, t->dropout = dropout, t->seed = seed;
    if (!(dropout >= 0 && dropout < 1)) return df_fail(DF_ERR_ARG, "caption dropout %g must be in [0, 1)", dropout);
    df_status st = df_text_parts_check("text-to-image training", df_model_config(model), enc, tok);
    if (st) return st;
    t->L = df_tokenizer_context(tok);
    t->D = df_text_encoder_config(enc)->hidden_size;
    if ((st = tokenize_captions(t, data))) return st;
    const size_t per = (size_t)t->L * t->D;
    t->batch_ids = malloc(sizeof(int32_t) * (size_t)B * t->L);
    t->states = malloc(sizeof(float) * (size_t)B * per);
    t->dstates = malloc(sizeof(float) * (size_t)B * per);
    if (!t->batch_ids || !t->states || !t->dstates) return df_fail(DF_ERR_NOMEM, "out of memory for a batch of %d texts", B);
    if ((st = df_model_reserve_context(model, B, t->L)) || (st = df_text_encoder_reserve(enc, B, t->L))) return st;
    /* the sampling copy: the same weights until the EMA moves them */
    if ((st = df_text_encoder_create(df_text_encoder_config(enc), 0, &t->ema_enc))) return st;
    memcpy(df_text_encoder_params(t->ema_enc), df_text_encoder_params(enc),
           df_text_encoder_num_params(enc) * sizeof(float));
    if (!frozen) train_loop_add_params(L, df_text_encoder_params(enc), df_text_encoder_grads(enc), df_text_encoder_num_params(enc));
    return DF_OK;
}

df_status text_train_load_ema(text_train *t, train_loop *L, const char *ck) {
    if (t->frozen || !L->ema) return DF_OK;
    char path[4400];
    snprintf(path, sizeof path, "%s/text_encoder", ck);
    df_text_encoder *e;
    df_status st = df_text_encoder_load(path, &e);
    if (st) return st;
    if (df_text_encoder_num_params(e) != L->nx || memcmp(df_text_encoder_config(e), df_text_encoder_config(t->enc),
                                                         sizeof(df_text_config)) != 0)
        st = df_fail(DF_ERR_SHAPE, "%s: the EMA text encoder's config differs from text_encoder_raw's", path);
    else memcpy(L->ema + df_model_num_params(L->model), df_text_encoder_params(e), L->nx * sizeof(float));
    df_text_encoder_free(e);
    return st;
}

/* Which of its captions image i shows in epoch e: a function of (seed, e, i) alone, so a resumed run shows the
 * same, and an image shows one caption for a whole epoch. */
static int caption_of(const text_train *t, int i, int epoch) {
    const int k = t->first[i + 1] - t->first[i];
    if (k == 1) return t->first[i];
    uint64_t h = train_seed_mix(t->seed ^ train_seed_mix(((uint64_t)(uint32_t)epoch << 32 | (uint32_t)i) + 0x7E47));
    return t->first[i] + (int)(h % (uint64_t)k);
}

df_status text_train_batch(text_train *t, train_loop *L, df_model *model) {
    const int B = L->p.batch_size, Lt = t->L;
    for (int i = 0; i < B; i++) {
        const int32_t *src = t->ids + (size_t)caption_of(t, L->index[i], L->index_epoch[i]) * Lt;
        if (t->dropout > 0 && df_rng_uniform(&L->rng) < t->dropout) src = t->empty;
        memcpy(t->batch_ids + (size_t)i * Lt, src, sizeof(int32_t) * Lt);
    }
    df_status st = df_text_encode(t->enc, B, Lt, t->batch_ids, t->states, NULL);
    return st ? st : df_model_set_context(model, B, Lt, t->states);
}

df_status text_train_backward(text_train *t, df_model *model) {
    if (t->frozen) return DF_OK;
    df_status st = df_model_context_grad(model, t->dstates);
    return st ? st : df_text_encoder_backward(t->enc, t->dstates);
}

/* The sampling encoder's weights: the EMA's part for the encoder, or the trained weights. */
static void sync_sampling_encoder(text_train *t, const train_loop *L) {
    const float *w = !t->frozen && L->ema ? L->ema + df_model_num_params(L->model) : df_text_encoder_params(t->enc);
    memcpy(df_text_encoder_params(t->ema_enc), w, df_text_encoder_num_params(t->enc) * sizeof(float));
}

df_status text_train_encode(text_train *t, const train_loop *L, int n, const char *const *prompts, float *states) {
    sync_sampling_encoder(t, L);
    return df_encode_prompts(t->ema_enc, t->tok, n, prompts, states, NULL);
}

df_status text_train_save(text_train *t, const train_loop *L, const char *dir, const df_model *unet,
                          const df_scheduler_config *sc) {
    sync_sampling_encoder(t, L);
    df_status st = df_text_pipeline_save(dir, unet, sc, t->ema_enc, t->tok);
    if (!st && !t->frozen) {   /* the trained weights, for a resume */
        char p[4400];
        snprintf(p, sizeof p, "%s/text_encoder_raw", dir);
        st = df_text_encoder_save(t->enc, p);
    }
    return st;
}
