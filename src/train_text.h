/* What text-conditioned training (text-to-image) adds to diffusion training: the text parts of a new, started-from
 * or resumed run, the captions tokenized once, each batch's texts through the encoder into the U-Net's context
 * (and back into the encoder when it trains with the U-Net), the prompts of grids and evaluations, and the
 * checkpoint's text folders. Internal: not part of the API. */
#ifndef DF_TRAIN_TEXT_H
#define DF_TRAIN_TEXT_H

#include "loop.h"

typedef struct {
    df_tokenizer    *tok;
    df_text_encoder *enc;       /* the trained weights (or the frozen ones) */
    df_text_encoder *ema_enc;   /* a copy for sampling: the EMA weights when the encoder trains */
    int              frozen;
    int              L, D;      /* tokens per text, the states' width */
    double           dropout;   /* the probability of the empty text */
    uint64_t         seed;      /* which caption an image shows in an epoch */
    int32_t         *ids;       /* every caption tokenized, (captions, L), image by image */
    int             *first;     /* image i's captions: ids rows first[i] .. first[i + 1] - 1 */
    int32_t         *empty;     /* the empty text's ids (L) */
    int              truncated; /* captions longer than the context, cut */
    /* a batch, sized once: its ids (B, L), states and their gradient (B, L, D) */
    int32_t         *batch_ids;
    float           *states, *dstates;
} text_train;

/* The text parts of a new run whose U-Net config is *cfg (a preset's or config file's, made text-conditioned
 * when it is not) or whose model is `init` (a text pipeline folder, whose encoder and tokenizer are used unless
 * p names others): tokenizer (p->tokenizer, or init's), encoder (p->text_encoder, init's, or new weights from
 * p->text_config or the default for the tokenizer and p->cross_attention_dim). */
df_status text_train_new_parts(const df_train_params *p, df_unet_config *cfg, const char *init, df_tokenizer **tok,
                               df_text_encoder **enc);
/* A resumed run's: ck/tokenizer, and ck/text_encoder_raw (an encoder trained with the U-Net) or ck/text_encoder
 * (a frozen one). */
df_status text_train_resumed_parts(const char *ck, int frozen, df_tokenizer **tok, df_text_encoder **enc);

/* Take the parts (owned from here on, also on failure), check them against the model, tokenize the data's
 * captions (every image needs one) and size a batch of B; an encoder that trains joins the loop's parameters. */
df_status text_train_open(text_train *t, train_loop *L, df_model *model, const df_dataset *data, df_tokenizer *tok,
                          df_text_encoder *enc, int frozen, double dropout, uint64_t seed, int B);
/* A resumed run's EMA of the encoder: the weights in ck/text_encoder into the loop's EMA. */
df_status text_train_load_ema(text_train *t, train_loop *L, const char *ck);
void      text_train_free(text_train *t);

/* The batch's texts: each image's caption of its epoch, or the empty text (dropout, drawn from L->rng when
 * the dropout is above 0), encoded and set as the model's context. */
df_status text_train_batch(text_train *t, train_loop *L, df_model *model);
/* After the model's backward pass: the states' gradient through the encoder (nothing when frozen). */
df_status text_train_backward(text_train *t, df_model *model);

/* n prompts' states (n, L, D) from the sampling encoder (the EMA weights when the encoder trains, set from the
 * loop's EMA first). */
df_status text_train_encode(text_train *t, const train_loop *L, int n, const char *const *prompts, float *states);

/* A checkpoint's text folders: text_encoder/ (what sampling uses) and tokenizer/ beside the pipeline's U-Net,
 * text_encoder_raw/ (the trained weights, when they differ), and the pipeline's model_index.json; after
 * df_pipeline_save of the U-Net. */
df_status text_train_save(text_train *t, const train_loop *L, const char *dir, const df_model *unet,
                          const df_scheduler_config *sc);

#endif
