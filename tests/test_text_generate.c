/* Generation with a text-conditioned U-Net (UNet2DConditionModel) through df_generate: each image attends to
 * its text's states, the texts pick the images, and guidance's unconditional branch is the empty text's; text
 * pipeline folders, and `diffuse sample --prompt`. */
#define _GNU_SOURCE   /* memmem */
#include "test.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* A tiny UNet2DConditionModel: 8x8 grey, two levels, cross-attention to 4 tokens of width 6. */
static df_model *tiny_text_unet(void) {
    df_unet_config c;
    df_unet_config_default_condition(&c);
    c.in_channels = c.out_channels = 1, c.sample_size = 8, c.num_levels = 2, c.layers_per_block = 1;
    c.block_out_channels[0] = 8, c.block_out_channels[1] = 16, c.norm_num_groups = 4, c.cross_attention_dim = 6;
    c.down_attn[0] = 1, c.down_attn[1] = 0, c.up_attn[0] = 0, c.up_attn[1] = 1;
    for (int i = 2; i < DF_MAX_LEVELS; i++) c.block_out_channels[i] = c.down_attn[i] = c.up_attn[i] = 0;
    c.attention_heads[0] = c.attention_heads[1] = 2;
    df_model *m = NULL;
    CHECK_OK(df_model_create(&c, 3, &m));
    return m;
}

static void touch_weights(void *ctx, const df_generate_step *st) {
    (void)st;
    df_model_params(ctx);
}

TEST(generate_with_text_states) {
    df_model *m = tiny_text_unet();
    if (!m) return;
    df_schedule sched, *s = &sched;
    memset(s, 0, sizeof sched);
    df_scheduler_config sc;
    df_scheduler_config_default(&sc);
    CHECK_OK(df_schedule_from_config(&sc, s));
    enum { L = 4, D = 6, N = 4, DIM = 64 };
    float texts[3 * L * D];   /* two texts and the empty one (row 2) */
    df_rng r;
    df_rng_init(&r, 9);
    df_rng_fill_normal(&r, texts, 3 * L * D);
    df_generate_params p;
    df_generate_params_for(&p, m, &sc, s);
    p.n = N, p.seed = 4, p.sampler.kind = DF_SAMPLER_DDIM, p.sampler.steps = 5;
    p.texts = texts, p.n_texts = 3, p.text_len = L;
    int text0[N] = {0, 0, 0, 0}, text1[N] = {1, 1, 1, 1};
    float a[N * DIM], b[N * DIM], c[N * DIM], u[N * DIM];
    p.labels = text0;
    CHECK_OK(df_generate(&p, a));
    CHECK_OK(df_generate(&p, c));
    p.labels = text1;
    CHECK_OK(df_generate(&p, b));
    CHECK(!memcmp(a, c, sizeof a), "the same texts and seed give other images");
    double diff = 0;
    for (int i = 0; i < N * DIM; i++) diff = fmax(diff, fabs(a[i] - b[i]));
    CHECK(diff > 1e-3, "the text changes nothing (largest difference %g)", diff);
    /* the keys and values of the text states are computed once per run: the steps after the first reuse them,
     * and give the same bits as passes that compute them again (the weights touched before every step) */
    const long reused = df_model_context_reuses(m);
    p.labels = text0;
    CHECK_OK(df_generate(&p, c));
    CHECK(df_model_context_reuses(m) - reused == 4, "%ld of 5 steps reused the text's keys and values, want 4",
          df_model_context_reuses(m) - reused);
    p.on_step = touch_weights, p.ctx = m;
    df_model_params(m);
    CHECK_OK(df_generate(&p, u));
    p.on_step = NULL;
    CHECK(!memcmp(c, u, sizeof c), "reused keys and values change the images");
    CHECK(df_model_context_reuses(m) - reused == 4, "keys and values reused after the weights were touched (%ld)",
          df_model_context_reuses(m) - reused);
    /* guidance 0 is the unconditional prediction alone: the empty text's images (stepping with the network's
     * eps, as an unguided run does) */
    p.labels = text0, p.guidance = 0, p.null_class = 2, p.model_eps = 1;
    CHECK_OK(df_generate(&p, c));
    int empty[N] = {2, 2, 2, 2};
    p.labels = empty, p.guidance = 1, p.null_class = -1;
    CHECK_OK(df_generate(&p, u));
    size_t where;
    const double e = max_rel_diff(c, u, N * DIM, &where);
    printf("    texts 0 and 1: images differ by up to %.3g; guidance 0 against the empty text: %.2g relative\n", diff, e);
    CHECK(e < 1e-4, "guidance 0 does not give the empty text's images (%.3g at %zu)", e, where);
    /* refusals: no texts for a text model; a row past the table; guidance without the empty text */
    p.texts = NULL;
    CHECK(df_generate(&p, u) == DF_ERR_ARG && strstr(df_error(), "text states"), "%s", df_error());
    p.texts = texts;
    int bad[N] = {0, 3, 0, 0};
    p.labels = bad;
    CHECK(df_generate(&p, u) != DF_OK && strstr(df_error(), "3"), "%s", df_error());
    p.labels = text0, p.guidance = 3;
    CHECK(df_generate(&p, u) == DF_ERR_ARG && strstr(df_error(), "empty text"), "%s", df_error());
    df_schedule_free(s);
    df_model_free(m);
}

/* The parts of a tiny text-to-image pipeline: the reference's tokenizer learned into tokdir, the tiny U-Net, and a
 * one-layer text encoder 6 wide (its end token the legacy 2). 0 when all three are there. */
static int tiny_text_parts(const char *tokdir, df_tokenizer **tok, df_model **m, df_text_encoder **enc) {
    *tok = NULL, *m = NULL, *enc = NULL;
    if (test_learn_tokenizer(tokdir, 16)) return -1;
    CHECK_OK(df_tokenizer_load(tokdir, tok));
    *m = tiny_text_unet();
    df_text_config tc;
    df_text_config_default(&tc);
    tc.vocab_size = 600, tc.hidden_size = 6, tc.intermediate_size = 12, tc.num_hidden_layers = 1;
    tc.num_attention_heads = 2, tc.max_position_embeddings = 16, tc.eos_token_id = 2;
    CHECK_OK(df_text_encoder_create(&tc, 8, enc));
    return *tok && *m && *enc ? 0 : -1;
}

/* A whole text-to-image pipeline folder: saved, loaded back in parts, prompts encoded and images generated the
 * same as before saving; an encoder of the wrong width refused. */
TEST(text_pipeline_save_load_generate) {
    char dir[512], tokdir[600];
    snprintf(dir, sizeof dir, "%s/t2i-pipeline", test_tmp_dir());
    snprintf(tokdir, sizeof tokdir, "%s/t2i-tokenizer", test_tmp_dir());
    df_tokenizer *tok;
    df_model *m;
    df_text_encoder *enc;
    if (tiny_text_parts(tokdir, &tok, &m, &enc)) return;
    df_scheduler_config sc;
    df_scheduler_config_default(&sc);
    CHECK_OK(df_text_pipeline_save(dir, m, &sc, enc, tok));
    const char *prompts[] = {"a red heart", "a blue circle", ""};
    float before[3 * 16 * 6], after[3 * 16 * 6];
    int cut = -1;
    CHECK_OK(df_encode_prompts(enc, tok, 3, prompts, before, &cut));
    CHECK(cut == 0, "%d prompts cut", cut);
    /* back in parts, as a program would load them */
    df_model *m2 = NULL;
    df_scheduler_config sc2;
    df_text_encoder *enc2 = NULL;
    df_tokenizer *tok2 = NULL;
    CHECK_OK(df_pipeline_load(dir, 0, &m2, &sc2));
    if (m2) CHECK_OK(df_text_pipeline_load(dir, m2, &enc2, &tok2));
    if (enc2 && tok2) {
        CHECK_OK(df_encode_prompts(enc2, tok2, 3, prompts, after, NULL));
        CHECK(!memcmp(before, after, sizeof before), "a loaded pipeline encodes prompts differently");
        df_schedule sched;
        memset(&sched, 0, sizeof sched);
        CHECK_OK(df_schedule_from_config(&sc2, &sched));
        df_generate_params p;
        df_generate_params_for(&p, m2, &sc2, &sched);
        p.n = 2, p.seed = 1, p.sampler.kind = DF_SAMPLER_DDIM, p.sampler.steps = 4;
        p.texts = after, p.n_texts = 3, p.text_len = 16, p.null_class = 2, p.guidance = 3;
        float x[2 * 64], y[2 * 64];
        CHECK_OK(df_generate(&p, x));
        p.model = m;
        CHECK_OK(df_generate(&p, y));
        CHECK(!memcmp(x, y, sizeof x), "a loaded pipeline generates other images");
        df_schedule_free(&sched);
    }
    char *index;
    size_t len;
    char path[700];
    snprintf(path, sizeof path, "%s/model_index.json", dir);
    if (!df_read_file(path, &index, &len)) {
        CHECK(strstr(index, "DiffuseTextToImagePipeline") && strstr(index, "CLIPTextModel") &&
                  strstr(index, "CLIPTokenizer") && strstr(index, "UNet2DConditionModel"),
              "model_index.json: %s", index);
        free(index);
    }
    /* an encoder whose width is not the U-Net's cross_attention_dim */
    df_text_config tc = *df_text_encoder_config(enc);
    tc.hidden_size = 8;
    df_text_encoder *wide = NULL;
    CHECK_OK(df_text_encoder_create(&tc, 8, &wide));
    snprintf(path, sizeof path, "%s/text_encoder", dir);
    if (wide) CHECK_OK(df_text_encoder_save(wide, path));
    df_text_encoder *e3 = NULL;
    df_tokenizer *t3 = NULL;
    CHECK(m2 && df_text_pipeline_load(dir, m2, &e3, &t3) == DF_ERR_CONFIG && !e3 && !t3 &&
              strstr(df_error(), "hidden_size 8") && strstr(df_error(), "cross_attention_dim 6"),
          "%s", df_error());
    df_text_encoder_free(wide), df_text_encoder_free(enc), df_text_encoder_free(enc2);
    df_tokenizer_free(tok), df_tokenizer_free(tok2);
    df_model_free(m), df_model_free(m2);
}

/* diffuse sample with prompts: a grid, a prompt file (a row per prompt), a negative prompt with guidance, and
 * the refusals: invalid UTF-8, a text model without a prompt, a prompt to a model without text. */
TEST(cli_sample_prompts) {
    char dir[512], tokdir[600];
    snprintf(dir, sizeof dir, "%s/t2i-cli", test_tmp_dir());
    snprintf(tokdir, sizeof tokdir, "%s/t2i-cli-tokenizer", test_tmp_dir());
    df_tokenizer *tok;
    df_model *m;
    df_text_encoder *enc;
    tiny_text_parts(tokdir, &tok, &m, &enc);
    df_scheduler_config sc;
    df_scheduler_config_default(&sc);
    if (tok && m && enc) CHECK_OK(df_text_pipeline_save(dir, m, &sc, enc, tok));
    df_text_encoder_free(enc), df_tokenizer_free(tok), df_model_free(m);
    char args[2048], out[8192], err[8192], file[700];
    snprintf(args, sizeof args, "sample %s --prompt \"a red heart\" --n 4 --steps 3 --sampler ddim --out %s/p1.png", dir,
             test_tmp_dir());
    int rc = test_run_diffuse(NULL, 120, args, out, sizeof out, err, sizeof err);
    CHECK(rc == 0 && strstr(out, "Prompt: a red heart"), "sample --prompt: exit %d, %s %s", rc, out, err);
    snprintf(file, sizeof file, "%s/prompts.txt", test_tmp_dir());
    FILE *f = fopen(file, "wb");
    if (f) fputs("a red heart\r\n\na blue circle\n", f), fclose(f);
    snprintf(args, sizeof args,
             "sample %s --prompts %s --negative-prompt \"a green square\" --guidance 3 --n 4 --steps 3 --sampler ddim "
             "--out-dir %s/p2",
             dir, file, test_tmp_dir());
    rc = test_run_diffuse(NULL, 120, args, out, sizeof out, err, sizeof err);
    CHECK(rc == 0, "sample --prompts: exit %d, %s", rc, err);
    char png[800];
    snprintf(png, sizeof png, "%s/p2/000003.png", test_tmp_dir());   /* the second row: the second prompt */
    char *data;
    size_t len;
    if (!df_read_file(png, &data, &len)) {
        CHECK(memmem(data, len, "a blue circle\nNegative prompt: a green square", 44) != NULL,
              "image 3 does not carry the second prompt and the negative one");
        free(data);
    } else {
        CHECK(0, "no %s", png);
    }
    snprintf(args, sizeof args, "sample %s --prompt \"bad \xff\" --n 1 --steps 2 --out %s/p3.png", dir, test_tmp_dir());
    rc = test_run_diffuse(NULL, 120, args, out, sizeof out, err, sizeof err);
    CHECK(rc != 0 && strstr(err, "UTF-8") && !strchr(strchr(err, '\n') + 1, '\n'), "invalid UTF-8: exit %d, %s", rc, err);
    snprintf(args, sizeof args, "sample %s --n 1 --steps 2 --out %s/p4.png", dir, test_tmp_dir());
    rc = test_run_diffuse(NULL, 120, args, out, sizeof out, err, sizeof err);
    CHECK(rc == 2 && strstr(err, "--prompt"), "no prompt: exit %d, %s", rc, err);
    snprintf(args, sizeof args, "info %s", dir);
    rc = test_run_diffuse(NULL, 60, args, out, sizeof out, err, sizeof err);
    CHECK(rc == 0 && strstr(out, "UNet2DConditionModel") && strstr(out, "cross-attention to 6-wide"), "info: exit %d, %s",
          rc, out);
    /* text-guided editing: image-to-image and inpainting with a prompt */
    snprintf(args, sizeof args,
             "sample %s --prompt \"a red heart\" --init-image %s/p1.png --strength 0.5 --n 2 --steps 4 --sampler ddim "
             "--guidance 2 --out %s/p6.png",
             dir, test_tmp_dir(), test_tmp_dir());
    rc = test_run_diffuse(NULL, 120, args, out, sizeof out, err, sizeof err);
    CHECK(rc == 0, "img2img with a prompt: exit %d, %s", rc, err);
    char mask[700];
    snprintf(mask, sizeof mask, "%s/mask.png", test_tmp_dir());
    float half[64];
    for (int i = 0; i < 64; i++) half[i] = i < 32 ? 1 : -1;
    CHECK_OK(df_image_save(mask, half, 1, 8, 8, 0, NULL, NULL));
    snprintf(args, sizeof args,
             "sample %s --prompt \"a blue circle\" --inpaint %s/p1.png --mask %s --n 1 --steps 10 --out %s/p7.png", dir,
             test_tmp_dir(), mask, test_tmp_dir());
    rc = test_run_diffuse(NULL, 120, args, out, sizeof out, err, sizeof err);
    CHECK(rc == 0, "inpainting with a prompt: exit %d, %s", rc, err);
    snprintf(args, sizeof args, "sample %s/../models/fmnist-s --prompt hi --n 1 --steps 2 --out %s/p5.png", test_bin_dir(),
             test_tmp_dir());
    rc = test_run_diffuse(NULL, 120, args, out, sizeof out, err, sizeof err);
    CHECK(rc == 2 && strstr(err, "does not take text"), "a prompt to a model without text: exit %d, %s", rc, err);
}

/* No allocation inside the sampling loop with text states and guidance: counted from the end of the first step
 * to the end of the last. */
static long steps_allocs = -1;
static void count_allocs(void *ctx, const df_generate_step *st) {
    (void)ctx;
    if (st->step == 1) test_alloc_begin();
    if (st->step == st->steps) steps_allocs = test_alloc_end();
}

TEST(generate_with_text_allocates_nothing_per_step) {
    df_model *m = tiny_text_unet();
    if (!m) return;
    df_schedule sched;
    memset(&sched, 0, sizeof sched);
    df_scheduler_config sc;
    df_scheduler_config_default(&sc);
    CHECK_OK(df_schedule_from_config(&sc, &sched));
    float texts[2 * 4 * 6], x[3 * 64];
    df_rng r;
    df_rng_init(&r, 2);
    df_rng_fill_normal(&r, texts, 2 * 4 * 6);
    df_generate_params p;
    df_generate_params_for(&p, m, &sc, &sched);
    p.n = 3, p.sampler.kind = DF_SAMPLER_DPMPP_2M, p.sampler.steps = 6;
    p.texts = texts, p.n_texts = 2, p.text_len = 4, p.null_class = 1, p.guidance = 4;
    p.on_step = count_allocs;
    CHECK_OK(df_generate(&p, x));
    printf("    library allocations in steps 2 to 6: %ld\n", steps_allocs);
    CHECK(steps_allocs == 0, "the sampling steps allocated %ld times", steps_allocs);
    df_schedule_free(&sched);
    df_model_free(m);
}
