/* Generation with a text-conditioned U-Net (UNet2DConditionModel) through df_generate: each image attends to
 * its text's states, the texts pick the images, and guidance's unconditional branch is the empty text's. */
#include "test.h"

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
