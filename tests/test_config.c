/* Config tests: the golden config.json files field by field, presets, save/load round trips compared
 * with memcmp, google/ddpm-cifar10-32's config, and bad configs that must name the field at fault. */
#define _POSIX_C_SOURCE 200809L
#include "test.h"
#include "internal.h"

#include <float.h>
#include <stdlib.h>
#include <string.h>

static const char *golden_path(const char *name) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", test_golden_dir(), name);
    return path;
}

static const char *tmp_path(const char *name) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", test_tmp_dir(), name);
    return path;
}

/* A whole file as a NUL-terminated string (NULL if unreadable). */
static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = malloc(1 << 16);
    size_t n = buf ? fread(buf, 1, (1 << 16) - 1, f) : 0;
    fclose(f);
    if (buf) buf[n] = 0;
    return buf;
}

static int levels_are(const df_unet_config *c, int n, const int *ch, const int *down, const int *up) {
    if (c->num_levels != n) return 0;
    for (int i = 0; i < n; i++)
        if (c->block_out_channels[i] != ch[i] || c->down_attn[i] != down[i] || c->up_attn[i] != up[i]) return 0;
    return 1;
}

/* Every field of the golden fmnist-s config.json (README: 28x28x1, [32, 64, 128], attention at the
 * deepest level, 8 groups, head dim 32). */
static void check_fmnist_fields(const df_unet_config *c, int num_class_embeds, const char *what) {
    CHECK(c->sample_size == 28, "%s: sample_size %d", what, c->sample_size);
    CHECK(c->in_channels == 1 && c->out_channels == 1, "%s: channels %d -> %d", what, c->in_channels,
          c->out_channels);
    CHECK(c->center_input_sample == 0, "%s: center_input_sample %d", what, c->center_input_sample);
    CHECK(c->flip_sin_to_cos == 1, "%s: flip_sin_to_cos %d", what, c->flip_sin_to_cos);
    CHECK(c->freq_shift == 0, "%s: freq_shift %g", what, (double)c->freq_shift);
    CHECK(levels_are(c, 3, (const int[]){32, 64, 128}, (const int[]){0, 0, 1}, (const int[]){1, 0, 0}),
          "%s: levels differ (%d levels)", what, c->num_levels);
    CHECK(c->layers_per_block == 2, "%s: layers_per_block %d", what, c->layers_per_block);
    CHECK(c->mid_block == 1 && c->add_attention == 1, "%s: mid_block %d add_attention %d", what, c->mid_block,
          c->add_attention);
    CHECK(c->mid_block_scale_factor == 1, "%s: mid_block_scale_factor %g", what, (double)c->mid_block_scale_factor);
    CHECK(c->downsample_padding == 1, "%s: downsample_padding %d", what, c->downsample_padding);
    CHECK(c->downsample_resnet == 0 && c->upsample_resnet == 0, "%s: resnet sampling %d %d", what,
          c->downsample_resnet, c->upsample_resnet);
    CHECK(c->norm_num_groups == 8, "%s: norm_num_groups %d", what, c->norm_num_groups);
    CHECK(c->attn_norm_num_groups == 0, "%s: attn_norm_num_groups %d", what, c->attn_norm_num_groups);
    CHECK(c->norm_eps == 1e-5f, "%s: norm_eps %.9g", what, (double)c->norm_eps);
    CHECK(c->attention_head_dim == 32, "%s: attention_head_dim %d", what, c->attention_head_dim);
    CHECK(c->scale_shift == 0, "%s: scale_shift %d", what, c->scale_shift);
    CHECK(c->num_class_embeds == num_class_embeds, "%s: num_class_embeds %d", what, c->num_class_embeds);
    CHECK(c->class_embed_timestep == 0, "%s: class_embed_timestep %d", what, c->class_embed_timestep);
    CHECK(c->dropout == 0, "%s: dropout %g", what, (double)c->dropout);
}

TEST(config_golden_files) {
    df_unet_config c, cond, preset;
    CHECK_OK(df_unet_config_load(golden_path("fmnist-s/config.json"), &c));
    check_fmnist_fields(&c, 0, "fmnist-s/config.json");
    CHECK_OK(df_unet_config_load(golden_path("fmnist-s/cond/config.json"), &cond));
    check_fmnist_fields(&cond, 10, "fmnist-s/cond/config.json");

    CHECK_OK(df_unet_config_preset("fmnist-s", &preset));
    CHECK(memcmp(&preset, &c, sizeof c) == 0, "preset fmnist-s differs from the golden config.json");
    cond.num_class_embeds = 0;
    CHECK(memcmp(&cond, &c, sizeof c) == 0, "cond config differs from the plain one beyond num_class_embeds");
}

TEST(config_defaults_and_presets) {
    df_unet_config d, e;
    df_unet_config_default(&d);
    /* diffusers' UNet2DModel.__init__ defaults. */
    CHECK(d.sample_size == 0 && d.in_channels == 3 && d.out_channels == 3, "default sizes");
    CHECK(d.center_input_sample == 0 && d.flip_sin_to_cos == 1 && d.freq_shift == 0, "default time embedding");
    CHECK(levels_are(&d, 4, (const int[]){224, 448, 672, 896}, (const int[]){0, 1, 1, 1}, (const int[]){1, 1, 1, 0}),
          "default levels");
    CHECK(d.layers_per_block == 2 && d.mid_block == 1 && d.add_attention == 1 && d.mid_block_scale_factor == 1,
          "default blocks");
    CHECK(d.downsample_padding == 1 && d.downsample_resnet == 0 && d.upsample_resnet == 0, "default sampling");
    CHECK(d.norm_num_groups == 32 && d.attn_norm_num_groups == 0 && d.norm_eps == 1e-5f, "default norms");
    CHECK(d.attention_head_dim == 8 && d.scale_shift == 0 && d.num_class_embeds == 0 && d.class_embed_timestep == 0 &&
              d.dropout == 0,
          "default attention/classes/dropout");
    CHECK_OK(df_unet_config_validate(&d));
    /* An empty config.json means the defaults. */
    memset(&e, 0x77, sizeof e);
    CHECK_OK(df_unet_config_parse("{}", 2, "empty.json", &e));
    CHECK(memcmp(&d, &e, sizeof d) == 0, "\"{}\" does not give the defaults");

    df_unet_config c;
    CHECK_OK(df_unet_config_preset("cifar10", &c));
    CHECK(c.sample_size == 32 && c.in_channels == 3 && c.out_channels == 3, "cifar10 sizes");
    CHECK(levels_are(&c, 4, (const int[]){128, 256, 256, 256}, (const int[]){0, 1, 0, 0}, (const int[]){0, 0, 1, 0}),
          "cifar10 levels");
    CHECK(c.layers_per_block == 2 && c.norm_num_groups == 32 && c.norm_eps == 1e-6f && c.attention_head_dim == 0,
          "cifar10 blocks");
    CHECK(c.downsample_padding == 0 && c.flip_sin_to_cos == 0 && c.freq_shift == 1 && c.dropout == 0.1f,
          "cifar10 time embedding / padding / dropout");
    CHECK_OK(df_unet_config_validate(&c));

    /* fmnist-xs: fmnist-s with one resnet per level; 2,734,945 parameters as tests/ref/unet_ref.py (diffusers'
     * structure in PyTorch) counts them for that layout, against fmnist-s's 3,939,393 */
    df_unet_config fs, xs;
    CHECK_OK(df_unet_config_preset("fmnist-s", &fs));
    CHECK_OK(df_unet_config_preset("fmnist-xs", &xs));
    CHECK(fs.layers_per_block == 2 && xs.layers_per_block == 1, "layers per block: %d, %d", fs.layers_per_block,
          xs.layers_per_block);
    xs.layers_per_block = 2;
    CHECK(memcmp(&fs, &xs, sizeof fs) == 0, "fmnist-xs differs from fmnist-s in more than layers_per_block");
    xs.layers_per_block = 1;
    df_model *mxs = NULL;
    CHECK_OK(df_model_create(&xs, 0, &mxs));
    if (mxs) CHECK(df_model_num_params(mxs) == 2734945, "fmnist-xs: %zu parameters", (size_t)df_model_num_params(mxs));
    df_model_free(mxs);

    memcpy(&e, &c, sizeof e);
    df_status s = df_unet_config_preset("cifar100", &e);
    CHECK(s == DF_ERR_ARG, "unknown preset gives %s", df_status_name(s));
    CHECK(strstr(df_error(), "cifar100") && strstr(df_error(), DF_PRESETS),
          "message does not name the preset and list the choices: %s", df_error());
    /* every name DF_PRESETS lists (each word before a parenthesis at depth 0) is a preset */
    int named = 0, depth = 0;
    for (const char *p = DF_PRESETS, *word = p; *p; p++) {
        if (*p == '(' && depth++ == 0) {
            char name[32];
            int n = (int)(p - word) - 1;
            CHECK(n > 0 && n < (int)sizeof name, "DF_PRESETS: bad entry at \"%s\"", word);
            if (n <= 0 || n >= (int)sizeof name) break;
            memcpy(name, word, (size_t)n), name[n] = 0;
            df_unet_config q;
            CHECK_OK(df_unet_config_preset(name, &q));
            named++;
        } else if (*p == ')' && --depth == 0) {
            word = p + 1 + strspn(p + 1, ", ");
            if (!strncmp(word, "or ", 3)) word += 3;
        }
    }
    CHECK(named == 3, "DF_PRESETS names %d presets, expected fmnist-s, fmnist-xs, cifar10", named);
    CHECK(memcmp(&e, &c, sizeof e) == 0, "a failed preset call changed the config");
    CHECK(df_unet_config_preset(NULL, &e) == DF_ERR_ARG, "NULL preset name accepted");
}

/* google/ddpm-cifar10-32's config.json (written by diffusers 0.1.x: no dropout key, so dropout 0). */
static const char ddpm_cifar10_json[] =
    "{\n"
    "  \"_class_name\": \"UNet2DModel\",\n"
    "  \"_diffusers_version\": \"0.1.1\",\n"
    "  \"act_fn\": \"silu\",\n"
    "  \"attention_head_dim\": null,\n"
    "  \"block_out_channels\": [128, 256, 256, 256],\n"
    "  \"center_input_sample\": false,\n"
    "  \"down_block_types\": [\"DownBlock2D\", \"AttnDownBlock2D\", \"DownBlock2D\", \"DownBlock2D\"],\n"
    "  \"downsample_padding\": 0,\n"
    "  \"flip_sin_to_cos\": false,\n"
    "  \"freq_shift\": 1,\n"
    "  \"in_channels\": 3,\n"
    "  \"layers_per_block\": 2,\n"
    "  \"mid_block_scale_factor\": 1,\n"
    "  \"norm_eps\": 1e-06,\n"
    "  \"norm_num_groups\": 32,\n"
    "  \"out_channels\": 3,\n"
    "  \"sample_size\": 32,\n"
    "  \"time_embedding_type\": \"positional\",\n"
    "  \"up_block_types\": [\"UpBlock2D\", \"UpBlock2D\", \"AttnUpBlock2D\", \"UpBlock2D\"]\n"
    "}\n";

TEST(config_other_sources) {
    df_unet_config c, p;
    CHECK_OK(df_unet_config_parse(ddpm_cifar10_json, sizeof ddpm_cifar10_json - 1, "ddpm-cifar10-32.json", &c));
    CHECK_OK(df_unet_config_preset("cifar10", &p));
    CHECK(c.dropout == 0, "missing dropout key gave %g", (double)c.dropout);
    p.dropout = 0;
    CHECK(memcmp(&c, &p, sizeof c) == 0, "ddpm-cifar10-32 config differs from the cifar10 preset (dropout aside)");

    /* Bookkeeping keys are ignored; "swish" and the "UNetRes" block prefix mean what diffusers makes of them. */
    const char *aliases = "{\"_name_or_path\": \"x/y\", \"_diffusers_version\": \"0.1.1\", \"_use_default_values\": "
                          "[\"dropout\"], \"num_train_timesteps\": 1000, \"act_fn\": \"swish\", "
                          "\"down_block_types\": [\"UNetResDownBlock2D\", \"UNetResAttnDownBlock2D\", "
                          "\"AttnDownBlock2D\", \"AttnDownBlock2D\"], \"mid_block_type\": \"UNetMidBlock2D\"}";
    df_unet_config d;
    df_unet_config_default(&d);
    CHECK_OK(df_unet_config_parse(aliases, strlen(aliases), "aliases.json", &c));
    CHECK(memcmp(&c, &d, sizeof c) == 0, "aliases and ignored keys changed the config");

    /* The text need not be NUL-terminated: only `len` bytes are read. */
    const char *prefix = "{\"in_channels\": 1} and then not JSON";
    CHECK_OK(df_unet_config_parse(prefix, 18, "prefix.json", &c));
    CHECK(c.in_channels == 1, "in_channels %d", c.in_channels);

    const char *mid_none = "{\"mid_block_type\": null, \"add_attention\": false, \"class_embed_type\": \"timestep\", "
                           "\"resnet_time_scale_shift\": \"scale_shift\", \"downsample_type\": \"resnet\", "
                           "\"upsample_type\": \"resnet\", \"attn_norm_num_groups\": 4, \"num_class_embeds\": 7}";
    CHECK_OK(df_unet_config_parse(mid_none, strlen(mid_none), "variants.json", &c));
    CHECK(c.mid_block == 0 && c.add_attention == 0 && c.class_embed_timestep == 1 && c.scale_shift == 1 &&
              c.downsample_resnet == 1 && c.upsample_resnet == 1 && c.attn_norm_num_groups == 4 &&
              c.num_class_embeds == 7,
          "variant fields not all read");

    df_status s = df_unet_config_load(tmp_path("no-such-config.json"), &c);
    CHECK(s == DF_ERR_IO, "missing file gives %s", df_status_name(s));
}

/* Save, load, compare every byte. */
static void check_roundtrip(const df_unet_config *c, const char *name) {
    const char *path = tmp_path(name);
    df_unet_config back;
    CHECK_OK(df_unet_config_validate(c));
    CHECK_OK(df_unet_config_save(c, path));
    memset(&back, 0x33, sizeof back);
    CHECK_OK(df_unet_config_load(path, &back));
    CHECK(memcmp(c, &back, sizeof back) == 0, "%s: config changed in a save/load round trip", name);
}

TEST(config_save_load_roundtrip) {
    df_unet_config c;
    df_unet_config_default(&c);
    check_roundtrip(&c, "default.json");
    CHECK_OK(df_unet_config_preset("fmnist-s", &c));
    check_roundtrip(&c, "fmnist-s.json");
    CHECK_OK(df_unet_config_preset("cifar10", &c));
    check_roundtrip(&c, "cifar10.json");

    /* Every switch flipped, and floats that need several digits. */
    CHECK_OK(df_unet_config_preset("fmnist-s", &c));
    c.scale_shift = 1;
    c.downsample_resnet = c.upsample_resnet = 1;
    c.attn_norm_num_groups = 4;
    c.class_embed_timestep = 1;
    c.center_input_sample = 1;
    c.dropout = 0.3f;
    c.norm_eps = 1e-6f;
    c.freq_shift = 1;
    c.mid_block_scale_factor = 1.41421354f;
    c.sample_size = 0;
    c.attention_head_dim = 0;
    check_roundtrip(&c, "variant1.json");

    /* One level, no mid block, classes, odd sizes. */
    df_unet_config_default(&c);
    c.num_levels = 1;
    for (int i = 1; i < DF_MAX_LEVELS; i++) c.block_out_channels[i] = c.down_attn[i] = c.up_attn[i] = 0;
    c.block_out_channels[0] = 64;
    c.down_attn[0] = 1;
    c.up_attn[0] = 0;
    c.layers_per_block = 1;
    c.mid_block = 0;
    c.add_attention = 0;
    c.downsample_padding = 0;
    c.num_class_embeds = 10;
    c.in_channels = 4;
    c.out_channels = 8;
    c.sample_size = 17;
    c.freq_shift = 0.1f;
    check_roundtrip(&c, "variant2.json");

    /* Eight levels and extreme floats. */
    df_unet_config_default(&c);
    c.num_levels = DF_MAX_LEVELS;
    for (int i = 0; i < DF_MAX_LEVELS; i++) {
        c.block_out_channels[i] = 32 * (i + 1);
        c.down_attn[i] = i % 2;
        c.up_attn[i] = (i + 1) % 2;
    }
    c.sample_size = 256;
    c.norm_eps = FLT_MIN;
    c.dropout = 0.999f;
    c.mid_block_scale_factor = FLT_MAX;
    c.freq_shift = -0.0f;
    c.layers_per_block = 16;
    check_roundtrip(&c, "variant3.json");

    /* An invalid config is not written. */
    c.layers_per_block = 0;
    const char *path = tmp_path("invalid.json");
    CHECK(df_unet_config_save(&c, path) == DF_ERR_CONFIG, "invalid config saved");
    CHECK(strstr(df_error(), "layers_per_block") != NULL, "message does not name the field: %s", df_error());
    FILE *f = fopen(path, "rb");
    CHECK(f == NULL, "an invalid config left %s behind", path);
    if (f) fclose(f);
}

/* The saved fmnist-s preset is the golden config.json (written by diffusers 0.25.1) plus the one key that
 * diffusers version did not have yet. */
TEST(config_save_matches_diffusers_text) {
    df_unet_config c;
    CHECK_OK(df_unet_config_preset("fmnist-s", &c));
    const char *path = tmp_path("fmnist-s-text.json");
    CHECK_OK(df_unet_config_save(&c, path));
    char *ours = slurp(path), *golden = slurp(golden_path("fmnist-s/config.json"));
    CHECK(ours && golden, "cannot read the saved or the golden config");
    if (ours && golden) {
        const char *extra = "  \"mid_block_type\": \"UNetMidBlock2D\",\n";
        char *at = strstr(ours, extra);
        CHECK(at != NULL, "saved config has no mid_block_type line");
        if (at) memmove(at, at + strlen(extra), strlen(at + strlen(extra)) + 1);
        size_t n = strlen(ours);
        if (n && ours[n - 1] == '\n') ours[n - 1] = 0;
        size_t i = 0;
        while (ours[i] && ours[i] == golden[i]) i++;
        CHECK(strcmp(ours, golden) == 0, "saved text differs from diffusers' at byte %zu: ...%.40s... vs ...%.40s...",
              i, ours + i, golden + i);
    }
    free(ours);
    free(golden);
}

typedef struct {
    const char *label;
    const char *json;
    const char *field;   /* must appear in the message */
    df_status   status;
} bad_config;

static const bad_config bad_configs[] = {
    {"act-fn-gelu", "{\"act_fn\": \"gelu\"}", "act_fn", DF_ERR_CONFIG},
    {"cross-attn-block",
     "{\"down_block_types\": [\"DownBlock2D\", \"CrossAttnDownBlock2D\", \"AttnDownBlock2D\", \"AttnDownBlock2D\"]}",
     "CrossAttnDownBlock2D", DF_ERR_CONFIG},
    {"up-block-in-down-list",
     "{\"down_block_types\": [\"DownBlock2D\", \"AttnUpBlock2D\", \"AttnDownBlock2D\", \"AttnDownBlock2D\"]}",
     "down_block_types", DF_ERR_CONFIG},
    {"short-down-list", "{\"block_out_channels\": [32, 64, 128]}", "down_block_types", DF_ERR_CONFIG},
    {"short-up-list",
     "{\"block_out_channels\": [32, 64, 128], \"down_block_types\": [\"DownBlock2D\", \"DownBlock2D\", "
     "\"DownBlock2D\"]}",
     "up_block_types", DF_ERR_CONFIG},
    {"channels-not-divisible", "{\"block_out_channels\": [30, 60, 90, 120]}", "block_out_channels", DF_ERR_CONFIG},
    {"groups-not-dividing", "{\"norm_num_groups\": 5}", "norm_num_groups", DF_ERR_CONFIG},
    {"unknown-key", "{\"in_channels\": 3, \"foo_bar\": 1}", "foo_bar", DF_ERR_CONFIG},
    {"string-for-int", "{\"in_channels\": \"3\"}", "in_channels", DF_ERR_CONFIG},
    {"float-for-int", "{\"layers_per_block\": 1.5}", "layers_per_block", DF_ERR_CONFIG},
    {"number-for-bool", "{\"flip_sin_to_cos\": 1}", "flip_sin_to_cos", DF_ERR_CONFIG},
    {"null-for-bool", "{\"center_input_sample\": null}", "center_input_sample", DF_ERR_CONFIG},
    {"fourier", "{\"time_embedding_type\": \"fourier\"}", "time_embedding_type", DF_ERR_CONFIG},
    {"spatial", "{\"resnet_time_scale_shift\": \"spatial\"}", "resnet_time_scale_shift", DF_ERR_CONFIG},
    {"negative-layers", "{\"layers_per_block\": -1}", "layers_per_block", DF_ERR_CONFIG},
    {"invalid-json", "{\"in_channels\": 3,", "invalid-json", DF_ERR_FORMAT},
    {"text-after-json", "{} {}", "text-after-json", DF_ERR_FORMAT},
    {"not-an-object", "[1, 2]", "not-an-object", DF_ERR_CONFIG},
    {"class-name", "{\"_class_name\": \"UNet1DModel\"}", "_class_name", DF_ERR_CONFIG},
    {"cond-only-cross", "{\"_class_name\": \"UNet2DConditionModel\", \"only_cross_attention\": true}",
     "only_cross_attention", DF_ERR_CONFIG},
    {"cond-heads", "{\"_class_name\": \"UNet2DConditionModel\", \"attention_head_dim\": [8, 8]}", "attention_head_dim",
     DF_ERR_CONFIG},
    {"cond-heads-divide", "{\"_class_name\": \"UNet2DConditionModel\", \"attention_head_dim\": 7}",
     "attention_head_dim", DF_ERR_CONFIG},
    {"cond-kernel", "{\"_class_name\": \"UNet2DConditionModel\", \"conv_in_kernel\": 1}", "conv_in_kernel",
     DF_ERR_CONFIG},
    {"cond-xdim", "{\"_class_name\": \"UNet2DConditionModel\", \"cross_attention_dim\": [768, 1024, 768, 768]}",
     "cross_attention_dim", DF_ERR_CONFIG},
    {"cond-add-attention", "{\"_class_name\": \"UNet2DConditionModel\", \"add_attention\": true}", "add_attention",
     DF_ERR_CONFIG},
    {"plain-xdim", "{\"cross_attention_dim\": 768}", "cross_attention_dim", DF_ERR_CONFIG},
    {"cond-addition", "{\"_class_name\": \"UNet2DConditionModel\", \"addition_embed_type\": \"text_time\"}",
     "addition_embed_type", DF_ERR_CONFIG},
    {"head-dim-too-big", "{\"attention_head_dim\": 449}", "attention_head_dim", DF_ERR_CONFIG},
    {"head-dim-zero", "{\"attention_head_dim\": 0}", "attention_head_dim", DF_ERR_CONFIG},
    {"dropout-one", "{\"dropout\": 1.0}", "dropout", DF_ERR_CONFIG},
    {"norm-eps-zero", "{\"norm_eps\": 0}", "norm_eps", DF_ERR_CONFIG},
    {"norm-eps-overflow", "{\"norm_eps\": 1e400}", "norm_eps", DF_ERR_CONFIG},
    {"padding-two", "{\"downsample_padding\": 2}", "downsample_padding", DF_ERR_CONFIG},
    {"sample-size-odd", "{\"sample_size\": 30}", "sample_size", DF_ERR_CONFIG},
    {"duplicate-key", "{\"in_channels\": 1, \"in_channels\": 1}", "in_channels", DF_ERR_CONFIG},
    {"nine-levels",
     "{\"block_out_channels\": [32,32,32,32,32,32,32,32,32], \"down_block_types\": [\"DownBlock2D\", "
     "\"DownBlock2D\", \"DownBlock2D\", \"DownBlock2D\", \"DownBlock2D\", \"DownBlock2D\", \"DownBlock2D\", "
     "\"DownBlock2D\", \"DownBlock2D\"]}",
     "block_out_channels", DF_ERR_CONFIG},
    {"empty-channels", "{\"block_out_channels\": []}", "block_out_channels", DF_ERR_CONFIG},
    {"channels-not-list", "{\"block_out_channels\": \"32\"}", "block_out_channels", DF_ERR_CONFIG},
    {"channel-string", "{\"block_out_channels\": [224, \"448\", 672, 896]}", "block_out_channels", DF_ERR_CONFIG},
    {"up-type-number", "{\"up_block_types\": [\"UpBlock2D\", \"UpBlock2D\", \"UpBlock2D\", 3]}", "up_block_types",
     DF_ERR_CONFIG},
    {"class-embed-identity", "{\"class_embed_type\": \"identity\"}", "class_embed_type", DF_ERR_CONFIG},
    {"cross-attn-mid", "{\"mid_block_type\": \"UNetMidBlock2DCrossAttn\"}", "mid_block_type", DF_ERR_CONFIG},
    {"negative-classes", "{\"num_class_embeds\": -3}", "num_class_embeds", DF_ERR_CONFIG},
    {"noise-aware-unet", "{\"_classifier_noise_aware\": 1}", "_classifier_noise_aware", DF_ERR_CONFIG},
    {"noise-aware-two", "{\"_classifier_classes\": 3, \"_classifier_noise_aware\": 2}", "_classifier_noise_aware",
     DF_ERR_CONFIG},
    {"upsample-fir", "{\"upsample_type\": \"fir\"}", "upsample_type", DF_ERR_CONFIG},
    {"in-channels-zero", "{\"in_channels\": 0}", "in_channels", DF_ERR_CONFIG},
    {"out-channels-big", "{\"out_channels\": 65}", "out_channels", DF_ERR_CONFIG},
    {"scale-factor-zero", "{\"mid_block_scale_factor\": 0}", "mid_block_scale_factor", DF_ERR_CONFIG},
    {"attn-groups", "{\"attn_norm_num_groups\": 5}", "attn_norm_num_groups", DF_ERR_CONFIG},
    {"freq-shift-string", "{\"freq_shift\": \"1\"}", "freq_shift", DF_ERR_CONFIG},
};

TEST(config_bad_values) {
    df_unet_config c, before;
    df_unet_config_default(&before);
    for (int i = 0; i < (int)(sizeof bad_configs / sizeof bad_configs[0]); i++) {
        const bad_config *b = &bad_configs[i];
        char source[96];
        snprintf(source, sizeof source, "%s.json", b->label);
        memcpy(&c, &before, sizeof c);
        df_status s = df_unet_config_parse(b->json, strlen(b->json), source, &c);
        CHECK(s == b->status, "%s: status %s, expected %s (%s)", b->label, df_status_name(s),
              df_status_name(b->status), df_error());
        CHECK(strstr(df_error(), source) != NULL, "%s: message does not name the source: %s", b->label, df_error());
        CHECK(strstr(df_error(), b->field) != NULL, "%s: message does not name \"%s\": %s", b->label, b->field,
              df_error());
        CHECK(strchr(df_error(), '\n') == NULL, "%s: message is not one line", b->label);
        CHECK(memcmp(&c, &before, sizeof c) == 0, "%s: a failed parse changed the config", b->label);
    }
}

TEST(config_validate_checks) {
    df_unet_config c;
    struct {
        const char *field;
        int         which;
    } cases[] = {
        {"block_out_channels", 0}, {"block_out_channels", 1}, {"norm_num_groups", 2}, {"in_channels", 3},
        {"out_channels", 4},       {"center_input_sample", 5}, {"down_block_types", 6}, {"dropout", 7},
        {"dropout", 8},            {"norm_eps", 9},            {"sample_size", 10},     {"attention_head_dim", 11},
        {"attention_head_dim", 12}, {"freq_shift", 13},        {"attention_head_dim", 14}, {"num_class_embeds", 15},
    };
    for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) {
        df_unet_config_default(&c);
        switch (cases[i].which) {
        case 0: c.num_levels = 0; break;
        case 1: c.num_levels = DF_MAX_LEVELS + 1; break;
        case 2: c.norm_num_groups = 0; break;
        case 3: c.in_channels = 65; break;
        case 4: c.out_channels = 0; break;
        case 5: c.center_input_sample = 2; break;
        case 6: c.down_attn[0] = 2; break;
        case 7: c.dropout = -0.1f; break;
        case 8: c.dropout = NAN; break;
        case 9: c.norm_eps = -1; break;
        case 10: c.sample_size = -8; break;
        case 11: c.attention_head_dim = -1; break;
        case 12: c.attention_head_dim = 449; break;   /* level 1 (448 channels) has attention */
        case 13: c.freq_shift = 112; break;           /* half of block_out_channels[0] = 224 */
        case 14:                                      /* only the mid block has attention */
            for (int l = 0; l < 4; l++) c.down_attn[l] = c.up_attn[l] = 0;
            c.attention_head_dim = 897;
            break;
        case 15: c.num_class_embeds = -1; break;
        }
        df_status s = df_unet_config_validate(&c);
        CHECK(s == DF_ERR_CONFIG, "case %d: status %s", cases[i].which, df_status_name(s));
        CHECK(strstr(df_error(), cases[i].field) != NULL, "case %d: message does not name \"%s\": %s",
              cases[i].which, cases[i].field, df_error());
    }
    /* Head dims larger than levels without attention are fine. */
    CHECK_OK(df_unet_config_preset("fmnist-s", &c));
    c.attention_head_dim = 128;   /* attention only at 128 channels */
    CHECK_OK(df_unet_config_validate(&c));
    c.attention_head_dim = 129;
    CHECK(df_unet_config_validate(&c) == DF_ERR_CONFIG, "head dim 129 over 128 channels accepted");
    c.down_attn[0] = 1;   /* attention in a down block of 32 channels only */
    c.attention_head_dim = 32;
    CHECK_OK(df_unet_config_validate(&c));
    c.attention_head_dim = 33;
    CHECK(df_unet_config_validate(&c) == DF_ERR_CONFIG, "head dim 33 over a 32-channel down block accepted");
    c.down_attn[0] = 0;
    c.up_attn[2] = 1;     /* the last up block works at 32 channels too */
    CHECK(df_unet_config_validate(&c) == DF_ERR_CONFIG, "head dim 33 over a 32-channel up block accepted");
    c.up_attn[2] = 0;
    CHECK_OK(df_unet_config_validate(&c));   /* attention only at 128 channels again */
    c.attention_head_dim = 1000;
    c.add_attention = 0;
    c.down_attn[2] = c.up_attn[0] = 0;
    CHECK_OK(df_unet_config_validate(&c));   /* no attention anywhere */
    CHECK(df_unet_config_validate(NULL) == DF_ERR_ARG, "NULL config accepted");
}

/* Stable Diffusion's U-Nets (UNet2DConditionModel): 1.5's config as diffusers writes it, 2.1's per-block heads
 * with linear projections, diffusers' tiny test config; each saved and read back the same. */
TEST(config_condition_model) {
    static const char *const sd15 =
        "{\"_class_name\": \"UNet2DConditionModel\", \"_diffusers_version\": \"0.6.0\", \"act_fn\": \"silu\","
        " \"attention_head_dim\": 8, \"block_out_channels\": [320, 640, 1280, 1280], \"center_input_sample\": false,"
        " \"cross_attention_dim\": 768, \"down_block_types\": [\"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\","
        " \"CrossAttnDownBlock2D\", \"DownBlock2D\"], \"downsample_padding\": 1, \"flip_sin_to_cos\": true,"
        " \"freq_shift\": 0, \"in_channels\": 4, \"layers_per_block\": 2, \"mid_block_scale_factor\": 1,"
        " \"norm_eps\": 1e-05, \"norm_num_groups\": 32, \"out_channels\": 4, \"sample_size\": 64,"
        " \"up_block_types\": [\"UpBlock2D\", \"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\"]}";
    static const char *const sd21 =
        "{\"_class_name\": \"UNet2DConditionModel\", \"_diffusers_version\": \"0.10.0.dev0\", \"act_fn\": \"silu\","
        " \"attention_head_dim\": [5, 10, 20, 20], \"block_out_channels\": [320, 640, 1280, 1280],"
        " \"center_input_sample\": false, \"class_embed_type\": null, \"cross_attention_dim\": 1024,"
        " \"down_block_types\": [\"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\", \"CrossAttnDownBlock2D\","
        " \"DownBlock2D\"], \"downsample_padding\": 1, \"dual_cross_attention\": false, \"flip_sin_to_cos\": true,"
        " \"freq_shift\": 0, \"in_channels\": 4, \"layers_per_block\": 2, \"mid_block_scale_factor\": 1,"
        " \"mid_block_type\": \"UNetMidBlock2DCrossAttn\", \"norm_eps\": 1e-05, \"norm_num_groups\": 32,"
        " \"num_class_embeds\": null, \"only_cross_attention\": false, \"out_channels\": 4,"
        " \"resnet_time_scale_shift\": \"default\", \"sample_size\": 96, \"up_block_types\": [\"UpBlock2D\","
        " \"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\", \"CrossAttnUpBlock2D\"], \"upcast_attention\": true,"
        " \"use_linear_projection\": true}";
    static const char *const tiny =
        "{\"_class_name\": \"UNet2DConditionModel\", \"block_out_channels\": [32, 64], \"layers_per_block\": 2,"
        " \"sample_size\": 32, \"in_channels\": 4, \"out_channels\": 4, \"down_block_types\": [\"CrossAttnDownBlock2D\","
        " \"DownBlock2D\"], \"up_block_types\": [\"UpBlock2D\", \"CrossAttnUpBlock2D\"], \"cross_attention_dim\": 32,"
        " \"attention_head_dim\": 8, \"transformer_layers_per_block\": [1, 2]}";
    df_unet_config c, back;
    CHECK_OK(df_unet_config_parse(sd15, strlen(sd15), "sd15.json", &c));
    CHECK(c.condition == 1 && c.cross_attention_dim == 768 && c.num_levels == 4 && c.attention_heads[0] == 8 &&
              c.attention_heads[3] == 8 && c.transformer_layers[2] == 1 && c.down_attn[0] == 1 && c.down_attn[3] == 0 &&
              c.up_attn[0] == 0 && c.up_attn[1] == 1 && c.mid_block == 1 && !c.use_linear_projection,
          "Stable Diffusion 1.5's config read wrong");
    CHECK_OK(df_unet_config_parse(sd21, strlen(sd21), "sd21.json", &c));
    CHECK(c.attention_heads[0] == 5 && c.attention_heads[1] == 10 && c.attention_heads[3] == 20 &&
              c.use_linear_projection == 1 && c.upcast_attention == 1 && c.cross_attention_dim == 1024,
          "Stable Diffusion 2.1's per-block heads or projections read wrong");
    const char *texts[] = {sd15, sd21, tiny};
    for (int i = 0; i < 3; i++) {
        CHECK_OK(df_unet_config_parse(texts[i], strlen(texts[i]), "cond.json", &c));
        char path[600];
        snprintf(path, sizeof path, "%s/cond-config-%d.json", test_tmp_dir(), i);
        CHECK_OK(df_unet_config_save(&c, path));
        CHECK_OK(df_unet_config_load(path, &back));
        CHECK(!memcmp(&c, &back, sizeof c), "config %d changes through save and load", i);
        char *text;
        size_t len;
        if (!df_read_file(path, &text, &len)) {
            CHECK(strstr(text, "\"_class_name\": \"UNet2DConditionModel\"") && strstr(text, "\"CrossAttnDownBlock2D\"") &&
                      !strstr(text, "add_attention"),
                  "config %d: saved text is not a UNet2DConditionModel's", i);
            free(text);
        }
    }
    CHECK(c.transformer_layers[0] == 1 && c.transformer_layers[1] == 2 && c.attention_heads[1] == 8,
          "tiny config's per-block transformer layers");
    df_unet_config d;
    df_unet_config_default_condition(&d);
    CHECK(d.in_channels == 4 && d.block_out_channels[3] == 1280 && d.cross_attention_dim == 1280, "condition defaults");
}
