/* UNet2DModel and UNet2DConditionModel configs: diffusers' defaults, built-in presets, config.json parsing
 * with one-line errors naming the field and value, consistency checks, and writing config.json back in
 * diffusers' layout. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

/* ---- the key table ------------------------------------------------------------------------------- */

/* One accepted spelling of a string-valued field; text NULL stands for JSON null. The first choice
 * with a given value is the one written back. */
typedef struct {
    const char *text;
    int         value;
} choice;

typedef enum {
    K_INT,          /* int field */
    K_NULL_INT,     /* int field, JSON null <-> 0, otherwise >= 1 */
    K_BOOL,         /* int field holding 0 or 1 */
    K_FLOAT,        /* float field written as JSON int when whole (diffusers keeps these as int) */
    K_PYFLOAT,      /* float field Python writes as float: 0.0, not 0 */
    K_CHOICE,       /* string (or null) from a list of choices, stored as the choice's value */
    K_CHANNELS,     /* block_out_channels */
    K_DOWN_TYPES,   /* down_block_types */
    K_UP_TYPES,     /* up_block_types */
    K_CLASS_NAME,   /* "_class_name" */
    K_VERSION,      /* "_diffusers_version": written, ignored when read */
    K_IGNORED,      /* read and ignored, written as null */
    K_CLASSIFIER,   /* "_classifier_*": an int written only when not 0 */
    K_HEADS,        /* the condition model's attention_head_dim / num_attention_heads: an int or one per block */
    K_TLAYERS,      /* transformer_layers_per_block: an int or one per block */
    K_XDIM,         /* cross_attention_dim: an int, or one per block, all the same */
    K_FALSE,        /* a feature we do not have: false only */
    K_NULL,         /* a feature we do not have: null only */
    K_FIXED,        /* a number that must be `nchoices` (written as an int, or with ".0" for a float key) */
} key_kind;

#define NO_FIELD ((size_t)-1)   /* a K_CHOICE key with only one meaning, not stored in the struct */

typedef struct {
    const char   *name;
    key_kind      kind;
    size_t        offset;   /* into df_unet_config */
    const choice *choices;
    int           nchoices;
    int           cls;      /* which model has the key: PLAIN (UNet2DModel), COND (UNet2DConditionModel), BOTH */
} key_info;

enum { PLAIN = 1, COND = 2, BOTH = 3 };

static const choice act_fns[] = {{"silu", 0}, {"swish", 0}};
static const choice class_embed_types[] = {{NULL, 0}, {"timestep", 1}};
static const choice sample_types[] = {{"conv", 0}, {"resnet", 1}};
static const choice mid_block_types[] = {{NULL, 0}, {"UNetMidBlock2D", 1}};
static const choice cond_mid_block_types[] = {{NULL, 0}, {"UNetMidBlock2DCrossAttn", 1}};
static const choice attention_types[] = {{"default", 0}};
static const choice time_shifts[] = {{"default", 0}, {"scale_shift", 1}};
static const choice time_embeddings[] = {{"positional", 0}};

#define FIELD(kind, f) kind, offsetof(df_unet_config, f), NULL, 0
#define CHOICES(f, list) K_CHOICE, f, list, DF_COUNTOF(list)
#define SPECIAL(kind) kind, NO_FIELD, NULL, 0

#define FIXED(v) K_FIXED, NO_FIELD, NULL, v

/* Every key of both classes, in the sorted order diffusers writes them. */
static const key_info keys[] = {
    {"_class_name", SPECIAL(K_CLASS_NAME), BOTH},
    {"_classifier_classes", FIELD(K_CLASSIFIER, classifier_classes), PLAIN},
    {"_classifier_noise_aware", FIELD(K_CLASSIFIER, classifier_noise_aware), PLAIN},
    {"_diffusers_version", SPECIAL(K_VERSION), BOTH},
    {"act_fn", CHOICES(NO_FIELD, act_fns), BOTH},
    {"add_attention", FIELD(K_BOOL, add_attention), PLAIN},
    {"addition_embed_type", SPECIAL(K_NULL), COND},
    {"addition_embed_type_num_heads", SPECIAL(K_IGNORED), COND},
    {"addition_time_embed_dim", SPECIAL(K_NULL), COND},
    {"attention_head_dim", FIELD(K_NULL_INT, attention_head_dim), PLAIN},
    {"attention_head_dim", SPECIAL(K_HEADS), COND},
    {"attention_type", CHOICES(NO_FIELD, attention_types), COND},
    {"attn_norm_num_groups", FIELD(K_NULL_INT, attn_norm_num_groups), PLAIN},
    {"block_out_channels", SPECIAL(K_CHANNELS), BOTH},
    {"center_input_sample", FIELD(K_BOOL, center_input_sample), BOTH},
    {"class_embed_type", CHOICES(offsetof(df_unet_config, class_embed_timestep), class_embed_types), BOTH},
    {"class_embeddings_concat", SPECIAL(K_FALSE), COND},
    {"conv_in_kernel", FIXED(3), COND},
    {"conv_out_kernel", FIXED(3), COND},
    {"cross_attention_dim", SPECIAL(K_XDIM), COND},
    {"cross_attention_norm", SPECIAL(K_NULL), COND},
    {"down_block_types", SPECIAL(K_DOWN_TYPES), BOTH},
    {"downsample_padding", FIELD(K_INT, downsample_padding), BOTH},
    {"downsample_type", CHOICES(offsetof(df_unet_config, downsample_resnet), sample_types), PLAIN},
    {"dropout", FIELD(K_PYFLOAT, dropout), BOTH},
    {"dual_cross_attention", SPECIAL(K_FALSE), COND},
    {"encoder_hid_dim", SPECIAL(K_NULL), COND},
    {"encoder_hid_dim_type", SPECIAL(K_NULL), COND},
    {"flip_sin_to_cos", FIELD(K_BOOL, flip_sin_to_cos), BOTH},
    {"freq_shift", FIELD(K_FLOAT, freq_shift), BOTH},
    {"in_channels", FIELD(K_INT, in_channels), BOTH},
    {"layers_per_block", FIELD(K_INT, layers_per_block), BOTH},
    {"mid_block_only_cross_attention", SPECIAL(K_NULL), COND},
    {"mid_block_scale_factor", FIELD(K_FLOAT, mid_block_scale_factor), BOTH},
    {"mid_block_type", CHOICES(offsetof(df_unet_config, mid_block), mid_block_types), PLAIN},
    {"mid_block_type", CHOICES(offsetof(df_unet_config, mid_block), cond_mid_block_types), COND},
    {"norm_eps", FIELD(K_PYFLOAT, norm_eps), BOTH},
    {"norm_num_groups", FIELD(K_INT, norm_num_groups), BOTH},
    {"num_attention_heads", SPECIAL(K_HEADS), COND},
    {"num_class_embeds", FIELD(K_NULL_INT, num_class_embeds), BOTH},
    {"num_train_timesteps", SPECIAL(K_IGNORED), PLAIN},
    {"only_cross_attention", SPECIAL(K_FALSE), COND},
    {"out_channels", FIELD(K_INT, out_channels), BOTH},
    {"projection_class_embeddings_input_dim", SPECIAL(K_NULL), COND},
    {"resnet_out_scale_factor", FIXED(1), COND},
    {"resnet_skip_time_act", SPECIAL(K_FALSE), COND},
    {"resnet_time_scale_shift", CHOICES(offsetof(df_unet_config, scale_shift), time_shifts), BOTH},
    {"reverse_transformer_layers_per_block", SPECIAL(K_NULL), COND},
    {"sample_size", FIELD(K_NULL_INT, sample_size), BOTH},
    {"time_cond_proj_dim", SPECIAL(K_NULL), COND},
    {"time_embedding_act_fn", SPECIAL(K_NULL), COND},
    {"time_embedding_dim", SPECIAL(K_NULL), COND},
    {"time_embedding_type", CHOICES(NO_FIELD, time_embeddings), BOTH},
    {"timestep_post_act", SPECIAL(K_NULL), COND},
    {"transformer_layers_per_block", SPECIAL(K_TLAYERS), COND},
    {"up_block_types", SPECIAL(K_UP_TYPES), BOTH},
    {"upcast_attention", FIELD(K_BOOL, upcast_attention), COND},
    {"upsample_type", CHOICES(offsetof(df_unet_config, upsample_resnet), sample_types), PLAIN},
    {"use_linear_projection", FIELD(K_BOOL, use_linear_projection), COND},
};

static int *int_field(df_unet_config *c, const key_info *k) { return (int *)((char *)c + k->offset); }
static float *float_field(df_unet_config *c, const key_info *k) { return (float *)((char *)c + k->offset); }
static int int_value(const df_unet_config *c, const key_info *k) {
    return *(const int *)((const char *)c + k->offset);
}
static float float_value(const df_unet_config *c, const key_info *k) {
    return *(const float *)((const char *)c + k->offset);
}

/* ---- defaults and presets ------------------------------------------------------------------------ */

static void set_levels(df_unet_config *c, int n, const int *channels, const int *down_attn, const int *up_attn) {
    memset(c->block_out_channels, 0, sizeof c->block_out_channels);
    memset(c->down_attn, 0, sizeof c->down_attn);
    memset(c->up_attn, 0, sizeof c->up_attn);
    c->num_levels = n;
    for (int i = 0; i < n; i++) {
        c->block_out_channels[i] = channels[i];
        c->down_attn[i] = down_attn[i];
        c->up_attn[i] = up_attn[i];
    }
}

void df_unet_config_default(df_unet_config *cfg) {
    memset(cfg, 0, sizeof *cfg);   /* also zeroes padding, so configs compare with memcmp */
    cfg->sample_size = 0;
    cfg->in_channels = 3;
    cfg->out_channels = 3;
    cfg->center_input_sample = 0;
    cfg->flip_sin_to_cos = 1;
    cfg->freq_shift = 0;
    set_levels(cfg, 4, (const int[]){224, 448, 672, 896}, (const int[]){0, 1, 1, 1}, (const int[]){1, 1, 1, 0});
    cfg->layers_per_block = 2;
    cfg->mid_block = 1;
    cfg->add_attention = 1;
    cfg->mid_block_scale_factor = 1;
    cfg->downsample_padding = 1;
    cfg->downsample_resnet = 0;
    cfg->upsample_resnet = 0;
    cfg->norm_num_groups = 32;
    cfg->attn_norm_num_groups = 0;
    cfg->norm_eps = 1e-5f;
    cfg->attention_head_dim = 8;
    cfg->scale_shift = 0;
    cfg->num_class_embeds = 0;
    cfg->class_embed_timestep = 0;
    cfg->dropout = 0;
}

void df_unet_config_default_condition(df_unet_config *cfg) {
    df_unet_config_default(cfg);
    cfg->condition = 1;
    cfg->in_channels = cfg->out_channels = 4;
    set_levels(cfg, 4, (const int[]){320, 640, 1280, 1280}, (const int[]){1, 1, 1, 0}, (const int[]){0, 1, 1, 1});
    cfg->attention_head_dim = 0;
    cfg->cross_attention_dim = 1280;
    for (int i = 0; i < DF_MAX_LEVELS; i++) cfg->attention_heads[i] = 8, cfg->transformer_layers[i] = 1;
}

static df_status validate(const df_unet_config *c, const char *src);

df_status df_unet_config_text(df_unet_config *cfg, int cross_attention_dim) {
    df_unet_config c = *cfg;
    if (!c.condition) {
        if (c.classifier_classes || c.downsample_resnet || c.upsample_resnet || c.num_class_embeds ||
            c.class_embed_timestep)
            return df_fail(DF_ERR_CONFIG, "a text-conditioned U-Net: the config is a classifier, class-conditional or "
                                          "has resnet up/downsampling, which UNet2DConditionModel has not");
        /* heads of attention_head_dim channels where it gives them, one head over all channels where it is null */
        for (int i = 0; i < DF_MAX_LEVELS; i++) {
            const int ch = i < c.num_levels ? c.block_out_channels[i] : 0;
            c.attention_heads[i] = c.attention_head_dim > 0 && ch ? DF_MAX(1, ch / c.attention_head_dim) : 1;
            c.transformer_layers[i] = 1;
        }
        c.condition = 1, c.attention_head_dim = 0, c.attn_norm_num_groups = 0, c.add_attention = 1;
    }
    c.cross_attention_dim = cross_attention_dim;
    df_status st = validate(&c, "text-conditioned config");
    if (!st) *cfg = c;
    return st;
}

df_status df_unet_config_preset(const char *name, df_unet_config *cfg) {
    df_unet_config c;
    df_unet_config_default(&c);
    if (name && (!strcmp(name, "fmnist-s") || !strcmp(name, "fmnist-xs"))) {
        /* The golden model: 28x28 grey images, attention only at the 7x7 level. fmnist-xs has one resnet per
         * level instead of two: it learns less per step but makes 1.5x the steps, and wins at 20 minutes. */
        c.sample_size = 28;
        c.in_channels = c.out_channels = 1;
        set_levels(&c, 3, (const int[]){32, 64, 128}, (const int[]){0, 0, 1}, (const int[]){1, 0, 0});
        c.norm_num_groups = 8;
        c.norm_eps = 1e-5f;
        c.attention_head_dim = 32;
        c.flip_sin_to_cos = 1;
        c.freq_shift = 0;
        c.downsample_padding = 1;
        c.layers_per_block = strcmp(name, "fmnist-xs") ? 2 : 1;
    } else if (name && !strcmp(name, "cifar10")) {
        /* google/ddpm-cifar10-32 (Ho et al. 2020's CIFAR-10 model): attention at 16x16, dropout 0.1. */
        c.sample_size = 32;
        c.in_channels = c.out_channels = 3;
        set_levels(&c, 4, (const int[]){128, 256, 256, 256}, (const int[]){0, 1, 0, 0}, (const int[]){0, 0, 1, 0});
        c.norm_num_groups = 32;
        c.norm_eps = 1e-6f;
        c.attention_head_dim = 0;
        c.downsample_padding = 0;
        c.flip_sin_to_cos = 0;
        c.freq_shift = 1;
        c.dropout = 0.1f;
    } else {
        return df_fail(DF_ERR_ARG, "unknown preset \"%s\" (expected " DF_PRESETS ")",
                       name ? name : "(null)");
    }
    *cfg = c;
    return DF_OK;
}

/* ---- validation ---------------------------------------------------------------------------------- */

static df_status validate(const df_unet_config *c, const char *src) {
    int L = c->num_levels;
    if (L < 1 || L > DF_MAX_LEVELS)
        return df_fail(DF_ERR_CONFIG, "%s: field \"block_out_channels\": unsupported value of %d levels (expected 1 "
                       "to %d)", src, L, DF_MAX_LEVELS);
    if (c->in_channels < 1 || c->in_channels > 64)
        return df_fail(DF_ERR_CONFIG, "%s: field \"in_channels\": unsupported value %d (expected 1 to 64)", src,
                       c->in_channels);
    if (c->out_channels < 1 || c->out_channels > 64)
        return df_fail(DF_ERR_CONFIG, "%s: field \"out_channels\": unsupported value %d (expected 1 to 64)", src,
                       c->out_channels);
    const struct { const char *name; int v; } bools[] = {
        {"center_input_sample", c->center_input_sample}, {"flip_sin_to_cos", c->flip_sin_to_cos},
        {"mid_block_type", c->mid_block}, {"add_attention", c->add_attention},
        {"downsample_type", c->downsample_resnet}, {"upsample_type", c->upsample_resnet},
        {"resnet_time_scale_shift", c->scale_shift}, {"class_embed_type", c->class_embed_timestep},
    };
    for (int i = 0; i < DF_COUNTOF(bools); i++)
        if (bools[i].v != 0 && bools[i].v != 1)
            return df_fail(DF_ERR_CONFIG, "%s: field \"%s\": unsupported value %d (expected 0 or 1)", src,
                           bools[i].name, bools[i].v);
    for (int i = 0; i < L; i++) {
        if (c->down_attn[i] != 0 && c->down_attn[i] != 1)
            return df_fail(DF_ERR_CONFIG, "%s: field \"down_block_types\": unsupported attention flag %d at %d", src,
                           c->down_attn[i], i);
        if (c->up_attn[i] != 0 && c->up_attn[i] != 1)
            return df_fail(DF_ERR_CONFIG, "%s: field \"up_block_types\": unsupported attention flag %d at %d", src,
                           c->up_attn[i], i);
    }
    int G = c->norm_num_groups;
    if (G < 1)
        return df_fail(DF_ERR_CONFIG, "%s: field \"norm_num_groups\": unsupported value %d (expected >= 1)", src, G);
    for (int i = 0; i < L; i++) {
        int ch = c->block_out_channels[i];
        if (ch < 1 || ch > DF_MAX_CHANNELS || ch % G != 0)
            return df_fail(DF_ERR_CONFIG,
                           "%s: field \"block_out_channels\": unsupported value %d at level %d (expected a multiple "
                           "of norm_num_groups %d from 1 to %d)",
                           src, ch, i, G, DF_MAX_CHANNELS);
    }
    int last = c->block_out_channels[L - 1];
    if (c->attn_norm_num_groups < 0 || (c->attn_norm_num_groups > 0 && last % c->attn_norm_num_groups != 0))
        return df_fail(DF_ERR_CONFIG,
                       "%s: field \"attn_norm_num_groups\": unsupported value %d (expected null or a divisor of the "
                       "last level's %d channels)",
                       src, c->attn_norm_num_groups, last);
    int d = c->attention_head_dim;
    if (d < 0)
        return df_fail(DF_ERR_CONFIG, "%s: field \"attention_head_dim\": unsupported value %d (expected null or >= 1)",
                       src, d);
    if (d > 0) {
        /* heads = channels / attention_head_dim must be at least 1 wherever there is attention.
         * Up block i works at block_out_channels[L - 1 - i]. */
        for (int i = 0; i < L; i++) {
            const char *where = NULL;
            int ch = 0;
            if (c->down_attn[i] && c->block_out_channels[i] < d) {
                where = "down";
                ch = c->block_out_channels[i];
            } else if (c->up_attn[i] && c->block_out_channels[L - 1 - i] < d) {
                where = "up";
                ch = c->block_out_channels[L - 1 - i];
            }
            if (where)
                return df_fail(DF_ERR_CONFIG,
                               "%s: field \"attention_head_dim\": unsupported value %d (larger than the %d channels of "
                               "attention %s block %d)",
                               src, d, ch, where, i);
        }
        if (c->mid_block && c->add_attention && last < d)
            return df_fail(DF_ERR_CONFIG,
                           "%s: field \"attention_head_dim\": unsupported value %d (larger than the mid block's %d "
                           "channels)",
                           src, d, last);
    }
    if (c->condition) {
        if (c->condition != 1 || c->classifier_classes || c->attention_head_dim || c->attn_norm_num_groups ||
            c->downsample_resnet || c->upsample_resnet || !c->add_attention)
            return df_fail(DF_ERR_CONFIG, "%s: UNet2DModel settings in a UNet2DConditionModel config", src);
        if (c->cross_attention_dim < 1 || c->cross_attention_dim > DF_MAX_CHANNELS)
            return df_fail(DF_ERR_CONFIG, "%s: field \"cross_attention_dim\": unsupported value %d (expected 1 to %d)",
                           src, c->cross_attention_dim, DF_MAX_CHANNELS);
        for (int i = 0; i < L; i++) {
            const int heads = c->attention_heads[i], ch = c->block_out_channels[i];
            if (heads < 1 || ch % heads)
                return df_fail(DF_ERR_CONFIG, "%s: field \"attention_head_dim\": unsupported value %d at level %d "
                               "(expected a number of heads dividing its %d channels)", src, heads, i, ch);
            if (c->transformer_layers[i] < 1 || c->transformer_layers[i] > 16)
                return df_fail(DF_ERR_CONFIG, "%s: field \"transformer_layers_per_block\": unsupported value %d at "
                               "level %d (expected 1 to 16)", src, c->transformer_layers[i], i);
        }
    } else if (c->cross_attention_dim || c->use_linear_projection || c->upcast_attention) {
        return df_fail(DF_ERR_CONFIG, "%s: UNet2DConditionModel settings in a UNet2DModel config", src);
    }
    if (c->layers_per_block < 1 || c->layers_per_block > 16)
        return df_fail(DF_ERR_CONFIG, "%s: field \"layers_per_block\": unsupported value %d (expected 1 to 16)", src,
                       c->layers_per_block);
    if (!(c->norm_eps > 0) || !isfinite(c->norm_eps))
        return df_fail(DF_ERR_CONFIG, "%s: field \"norm_eps\": unsupported value %g (expected > 0)", src,
                       (double)c->norm_eps);
    if (!(c->dropout >= 0 && c->dropout < 1))
        return df_fail(DF_ERR_CONFIG, "%s: field \"dropout\": unsupported value %g (expected 0 <= dropout < 1)", src,
                       (double)c->dropout);
    if (c->classifier_classes < 0 || c->classifier_classes == 1 || c->classifier_classes > DF_MAX_CLASSES)
        return df_fail(DF_ERR_CONFIG,
                       "%s: field \"_classifier_classes\": unsupported value %d (expected 0, or 2 to %d classes)", src,
                       c->classifier_classes, DF_MAX_CLASSES);
    if (c->classifier_noise_aware != 0 && (c->classifier_noise_aware != 1 || c->classifier_classes == 0))
        return df_fail(DF_ERR_CONFIG, "%s: field \"_classifier_noise_aware\": unsupported value %d (expected 1, "
                       "in a classifier's config)", src, c->classifier_noise_aware);
    if (c->num_class_embeds < 0 || c->num_class_embeds > DF_MAX_CLASSES)
        return df_fail(DF_ERR_CONFIG,
                       "%s: field \"num_class_embeds\": unsupported value %d (expected null or 1 to %d)", src,
                       c->num_class_embeds, DF_MAX_CLASSES);
    int stride = 1 << (L - 1);   /* the deepest level is sample_size / 2^(L-1) */
    if (c->sample_size < 0 || c->sample_size > DF_MAX_SIZE || c->sample_size % stride != 0)
        return df_fail(DF_ERR_CONFIG,
                       "%s: field \"sample_size\": unsupported value %d (expected null or a multiple of %d for %d "
                       "levels, at most %d)",
                       src, c->sample_size, stride, L, DF_MAX_SIZE);
    if (!(c->mid_block_scale_factor > 0) || !isfinite(c->mid_block_scale_factor))
        return df_fail(DF_ERR_CONFIG, "%s: field \"mid_block_scale_factor\": unsupported value %g (expected > 0)", src,
                       (double)c->mid_block_scale_factor);
    if (c->downsample_padding != 0 && c->downsample_padding != 1)
        return df_fail(DF_ERR_CONFIG, "%s: field \"downsample_padding\": unsupported value %d (expected 0 or 1)", src,
                       c->downsample_padding);
    /* The timestep embedding divides by (half - freq_shift), half = block_out_channels[0] / 2. */
    if (!isfinite(c->freq_shift) || (float)(c->block_out_channels[0] / 2) == c->freq_shift)
        return df_fail(DF_ERR_CONFIG,
                       "%s: field \"freq_shift\": unsupported value %g (must be finite and differ from "
                       "block_out_channels[0] / 2)",
                       src, (double)c->freq_shift);
    return DF_OK;
}

df_status df_unet_config_validate(const df_unet_config *cfg) {
    if (!cfg) return df_fail(DF_ERR_ARG, "config: NULL");
    return validate(cfg, "config");
}

/* ---- parsing ------------------------------------------------------------------------------------- */

/* A JSON value as short text for messages. */
static void value_text(const cJSON *v, char *out, size_t cap) {
    if (cJSON_IsNumber(v) && !isfinite(v->valuedouble)) {   /* cJSON would print null */
        snprintf(out, cap, "%s", v->valuedouble > 0 ? "(overflows to inf)" : "(overflows to -inf)");
        return;
    }
    char *s = cJSON_PrintUnformatted(v);
    if (!s) {
        snprintf(out, cap, "?");
        return;
    }
    if (strlen(s) >= cap && cap > 4) snprintf(out, cap, "%.*s...", (int)(cap - 4), s);
    else snprintf(out, cap, "%s", s);
    cJSON_free(s);
}

static df_status bad_value(const char *src, const char *field, const cJSON *v, const char *expected) {
    char text[64];
    value_text(v, text, sizeof text);
    return df_fail(DF_ERR_CONFIG, "%s: field \"%s\": unsupported value %s (expected %s)", src, field, text, expected);
}

static int json_int(const cJSON *v, int *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= INT_MIN && d <= INT_MAX) || (double)(int)d != d) return 0;
    *out = (int)d;
    return 1;
}

static df_status parse_choice(const char *src, const key_info *k, const cJSON *v, int *out) {
    for (int i = 0; i < k->nchoices; i++) {
        const char *t = k->choices[i].text;
        if (t ? cJSON_IsString(v) && !strcmp(v->valuestring, t) : cJSON_IsNull(v)) {
            *out = k->choices[i].value;
            return DF_OK;
        }
    }
    char expected[160] = "";
    size_t n = 0;
    for (int i = 0; i < k->nchoices && n < sizeof expected; i++) {
        const char *t = k->choices[i].text;
        const char *sep = i == 0 ? "" : i == k->nchoices - 1 ? " or " : ", ";
        int w = t ? snprintf(expected + n, sizeof expected - n, "%s\"%s\"", sep, t)
                  : snprintf(expected + n, sizeof expected - n, "%snull", sep);
        n += w > 0 ? (size_t)w : 0;
    }
    return bad_value(src, k->name, v, expected);
}

/* A block type name; diffusers strips a leading "UNetRes" before matching. 1 attention, 0 plain. */
static df_status parse_block_type(const char *src, const char *field, const cJSON *v, const char *plain,
                                  const char *attn, int *out) {
    if (cJSON_IsString(v)) {
        const char *s = v->valuestring;
        if (!strncmp(s, "UNetRes", 7)) s += 7;
        if (!strcmp(s, plain) || !strcmp(s, attn)) {
            *out = !strcmp(s, attn);
            return DF_OK;
        }
    }
    char expected[96];
    snprintf(expected, sizeof expected, "\"%s\" or \"%s\"", plain, attn);
    return bad_value(src, field, v, expected);
}

/* Block type names by class: [class][down 0, up 1][plain 0, attention 1]. */
static const char *const block_names[2][2][2] = {{{"DownBlock2D", "AttnDownBlock2D"}, {"UpBlock2D", "AttnUpBlock2D"}},
                                                 {{"DownBlock2D", "CrossAttnDownBlock2D"},
                                                  {"UpBlock2D", "CrossAttnUpBlock2D"}}};

/* A JSON list of 1..DF_MAX_LEVELS entries: block channels, block types (of the class `cond`), or numbers
 * of heads or layers, into dst; its length in *n. */
static df_status parse_list(const char *src, const key_info *k, const cJSON *v, int cond, int *dst, int *n) {
    int len = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : -1;
    if (len < 1 || len > DF_MAX_LEVELS) {
        char expected[64];
        snprintf(expected, sizeof expected, "a list of 1 to %d entries", DF_MAX_LEVELS);
        return bad_value(src, k->name, v, expected);
    }
    int vals[DF_MAX_LEVELS] = {0}, i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        df_status s = DF_OK;
        if (k->kind == K_CHANNELS || k->kind == K_HEADS || k->kind == K_TLAYERS || k->kind == K_XDIM) {
            if (!json_int(e, &vals[i])) s = bad_value(src, k->name, e, "an integer");
        } else {
            const int up = k->kind == K_UP_TYPES;
            s = parse_block_type(src, k->name, e, block_names[cond][up][0], block_names[cond][up][1], &vals[i]);
        }
        if (s != DF_OK) return s;
    }
    memset(dst, 0, DF_MAX_LEVELS * sizeof *dst);
    memcpy(dst, vals, (size_t)len * sizeof *dst);
    *n = len;
    return DF_OK;
}

/* What a parse gathers besides the fields: list lengths, and the per-block lists to check against them. */
typedef struct {
    int counts[3];                            /* channels, down types, up types */
    int heads[DF_MAX_LEVELS], nheads;         /* attention_head_dim: -1 one int, else the list's length (0: absent) */
    int heads2[DF_MAX_LEVELS], nheads2;       /* num_attention_heads, which wins when given */
    int layers[DF_MAX_LEVELS], nlayers;       /* transformer_layers_per_block */
} parse_state;

/* An int, or a list of ints (one per block), into dst and *n (-1 for the int). */
static df_status parse_int_or_list(const char *src, const key_info *k, const cJSON *v, int *dst, int *n) {
    if (cJSON_IsArray(v)) return parse_list(src, k, v, 1, dst, n);
    if (!json_int(v, &dst[0]) || dst[0] < 1) return bad_value(src, k->name, v, "an integer >= 1 or a list of them");
    *n = -1;
    return DF_OK;
}

static df_status parse_key(const char *src, const key_info *k, const cJSON *v, df_unet_config *c, parse_state *P) {
    int iv = 0;
    int *counts = P->counts;
    switch (k->kind) {
    case K_INT:
        if (!json_int(v, &iv)) return bad_value(src, k->name, v, "an integer");
        *int_field(c, k) = iv;
        return DF_OK;
    case K_NULL_INT:
        if (cJSON_IsNull(v)) iv = 0;
        else if (!json_int(v, &iv) || iv < 1) return bad_value(src, k->name, v, "null or an integer >= 1");
        *int_field(c, k) = iv;
        return DF_OK;
    case K_BOOL:
        if (!cJSON_IsBool(v)) return bad_value(src, k->name, v, "true or false");
        *int_field(c, k) = cJSON_IsTrue(v) ? 1 : 0;
        return DF_OK;
    case K_FLOAT:
    case K_PYFLOAT:
        /* Finite after rounding to float: below FLT_MAX + half an ulp (2^128 - 2^103). */
        if (!cJSON_IsNumber(v) || !(fabs(v->valuedouble) < 0x1.ffffffp127))
            return bad_value(src, k->name, v, "a number");
        *float_field(c, k) = (float)v->valuedouble;
        return DF_OK;
    case K_CHOICE: {
        df_status s = parse_choice(src, k, v, &iv);
        if (s == DF_OK && k->offset != NO_FIELD) *int_field(c, k) = iv;
        return s;
    }
    case K_CHANNELS: return parse_list(src, k, v, c->condition, c->block_out_channels, &counts[0]);
    case K_DOWN_TYPES: return parse_list(src, k, v, c->condition, c->down_attn, &counts[1]);
    case K_UP_TYPES: return parse_list(src, k, v, c->condition, c->up_attn, &counts[2]);
    case K_CLASS_NAME:
        if (!cJSON_IsString(v) || (strcmp(v->valuestring, "UNet2DModel") && strcmp(v->valuestring, "UNet2DConditionModel")))
            return bad_value(src, k->name, v, "\"UNet2DModel\" or \"UNet2DConditionModel\"");
        return DF_OK;
    case K_HEADS:
        if (!strcmp(k->name, "num_attention_heads")) {
            if (cJSON_IsNull(v)) return DF_OK;
            return parse_int_or_list(src, k, v, P->heads2, &P->nheads2);
        }
        return parse_int_or_list(src, k, v, P->heads, &P->nheads);
    case K_TLAYERS: return parse_int_or_list(src, k, v, P->layers, &P->nlayers);
    case K_XDIM: {
        int dims[DF_MAX_LEVELS], n;
        df_status s = parse_int_or_list(src, k, v, dims, &n);
        for (int i = 1; s == DF_OK && i < n; i++)
            if (dims[i] != dims[0]) s = bad_value(src, k->name, v, "one width for every block");
        if (s == DF_OK) c->cross_attention_dim = dims[0];
        return s;
    }
    case K_FALSE:
        if (!cJSON_IsFalse(v)) return bad_value(src, k->name, v, "false (not supported)");
        return DF_OK;
    case K_NULL:
        if (!cJSON_IsNull(v)) return bad_value(src, k->name, v, "null (not supported)");
        return DF_OK;
    case K_FIXED:
        if (!cJSON_IsNumber(v) || v->valuedouble != k->nchoices) {
            char want[48];
            snprintf(want, sizeof want, "%d (nothing else is supported)", k->nchoices);
            return bad_value(src, k->name, v, want);
        }
        return DF_OK;
    case K_CLASSIFIER:
        if (!json_int(v, &iv) || iv < 0 || iv > DF_MAX_CLASSES)
            return bad_value(src, k->name, v, "an integer from 0 to 1000000");
        *int_field(c, k) = iv;
        return DF_OK;
    case K_VERSION:
    case K_IGNORED: return DF_OK;
    }
    DF_ASSERT(0);
    return DF_ERR_ARG;
}

/* A per-block list given as one value (n -1) or one per level: into dst, or an error naming the key. */
static df_status per_level(const char *src, const char *name, const int *vals, int n, int levels, int *dst) {
    if (n > 0 && n != levels)
        return df_fail(DF_ERR_CONFIG, "%s: field \"%s\": %d entries but block_out_channels has %d", src, name, n, levels);
    for (int i = 0; i < DF_MAX_LEVELS; i++) dst[i] = i < levels ? vals[n > 0 ? i : 0] : 0;
    return DF_OK;
}

static df_status parse_object(const cJSON *root, const char *src, df_unet_config *c) {
    if (!cJSON_IsObject(root)) return df_fail(DF_ERR_CONFIG, "%s: the config is not a JSON object", src);
    parse_state P = {.counts = {c->num_levels, c->num_levels, c->num_levels}};
    const int cls = c->condition ? COND : PLAIN;
    int seen[DF_COUNTOF(keys)] = {0};
    for (const cJSON *v = root->child; v; v = v->next) {
        const char *name = v->string;
        int i = 0;
        while (i < DF_COUNTOF(keys) && (strcmp(keys[i].name, name) || !(keys[i].cls & cls))) i++;
        if (i == DF_COUNTOF(keys)) {
            if (name[0] == '_') continue;   /* "_name_or_path" and other bookkeeping */
            return df_fail(DF_ERR_CONFIG, "%s: unknown field \"%s\" (not a %s setting)", src, name,
                           c->condition ? "UNet2DConditionModel" : "UNet2DModel");
        }
        if (seen[i]++) return df_fail(DF_ERR_CONFIG, "%s: field \"%s\" appears twice", src, name);
        df_status s = parse_key(src, &keys[i], v, c, &P);
        if (s != DF_OK) return s;
    }
    const int *counts = P.counts;
    if (counts[1] != counts[0])
        return df_fail(DF_ERR_CONFIG, "%s: field \"down_block_types\": %d entries but block_out_channels has %d", src,
                       counts[1], counts[0]);
    if (counts[2] != counts[0])
        return df_fail(DF_ERR_CONFIG, "%s: field \"up_block_types\": %d entries but block_out_channels has %d", src,
                       counts[2], counts[0]);
    c->num_levels = counts[0];
    if (c->condition) {   /* the per-block lists, now that the number of blocks is known */
        df_status s = DF_OK;
        if (P.nheads2) s = per_level(src, "num_attention_heads", P.heads2, P.nheads2, c->num_levels, c->attention_heads);
        else if (P.nheads) s = per_level(src, "attention_head_dim", P.heads, P.nheads, c->num_levels, c->attention_heads);
        else s = per_level(src, "attention_head_dim", c->attention_heads, -1, c->num_levels, c->attention_heads);
        if (!s && P.nlayers)
            s = per_level(src, "transformer_layers_per_block", P.layers, P.nlayers, c->num_levels, c->transformer_layers);
        else if (!s)
            s = per_level(src, "transformer_layers_per_block", c->transformer_layers, -1, c->num_levels,
                          c->transformer_layers);
        if (s) return s;
    }
    return validate(c, src);
}

df_status df_unet_config_parse(const char *json, size_t len, const char *source, df_unet_config *cfg) {
    const char *src = source ? source : "config";
    if (!json && len) return df_fail(DF_ERR_ARG, "%s: NULL text", src);
    /* A NUL-terminated copy: the caller's text need not be terminated. */
    char *text = malloc(len + 1);
    if (!text) return df_fail(DF_ERR_NOMEM, "%s: out of memory", src);
    if (len) memcpy(text, json, len);
    text[len] = 0;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    df_status s = DF_OK;
    if (!root) {
        s = df_fail(DF_ERR_FORMAT, "%s: invalid JSON (error near byte %td)", src, end ? end - text : (ptrdiff_t)0);
    } else {
        for (const char *p = end; p < text + len && s == DF_OK; p++)
            if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
                s = df_fail(DF_ERR_FORMAT, "%s: invalid JSON (text after the object at byte %td)", src, p - text);
    }
    df_unet_config c;
    const cJSON *cls = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "_class_name") : NULL;
    if (cJSON_IsString(cls) && !strcmp(cls->valuestring, "UNet2DConditionModel")) df_unet_config_default_condition(&c);
    else df_unet_config_default(&c);
    if (s == DF_OK) s = parse_object(root, src, &c);
    if (s == DF_OK) *cfg = c;
    cJSON_Delete(root);
    free(text);
    return s;
}

df_status df_unet_config_load(const char *path, df_unet_config *cfg) {
    char *text;
    size_t len;
    df_status s = df_read_file(path, &text, &len);
    if (s != DF_OK) return s;
    s = df_unet_config_parse(text, len, path, cfg);
    free(text);
    return s;
}

/* ---- writing ------------------------------------------------------------------------------------- */

typedef struct {
    char   buf[8192];
    size_t len;
    int    overflow;
} out_text;

static void out_printf(out_text *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_printf(out_text *o, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->len, sizeof o->buf - o->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof o->buf - o->len) o->overflow = 1;
    else o->len += (size_t)n;
}

/* The shortest %g text that reads back as the same float (1e-05, not 9.99999975e-06). With `pyfloat`,
 * whole values get ".0" as Python's json writes them. */
static void format_float(char *out, size_t cap, float v, int pyfloat) {
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(out, cap, "%.*g", digits, (double)v);
        if ((float)strtod(out, NULL) == v) break;
    }
    if (pyfloat && !strpbrk(out, ".e")) {
        size_t n = strlen(out);
        if (n + 2 < cap) memcpy(out + n, ".0", 3);
    }
}

static void write_list(out_text *o, const df_unet_config *c, key_kind kind) {
    out_printf(o, "[\n");
    for (int i = 0; i < c->num_levels; i++) {
        const char *sep = i + 1 < c->num_levels ? "," : "";
        if (kind == K_CHANNELS) out_printf(o, "    %d%s\n", c->block_out_channels[i], sep);
        else if (kind == K_HEADS) out_printf(o, "    %d%s\n", c->attention_heads[i], sep);
        else if (kind == K_TLAYERS) out_printf(o, "    %d%s\n", c->transformer_layers[i], sep);
        else if (kind == K_DOWN_TYPES) out_printf(o, "    \"%s\"%s\n", block_names[c->condition][0][c->down_attn[i]], sep);
        else out_printf(o, "    \"%s\"%s\n", block_names[c->condition][1][c->up_attn[i]], sep);
    }
    out_printf(o, "  ]");
}

/* A per-block list as one int when every block has the same value, as diffusers' own configs have it. */
static void write_per_level(out_text *o, const df_unet_config *c, key_kind kind) {
    const int *v = kind == K_HEADS ? c->attention_heads : c->transformer_layers;
    int same = 1;
    for (int i = 1; i < c->num_levels; i++) same &= v[i] == v[0];
    if (same) out_printf(o, "%d", v[0]);
    else write_list(o, c, kind);
}

df_status df_unet_config_save(const df_unet_config *cfg, const char *path) {
    if (!cfg || !path) return df_fail(DF_ERR_ARG, "config save: NULL argument");
    df_status s = validate(cfg, path);
    if (s != DF_OK) return s;
    out_text *o = calloc(1, sizeof *o);
    if (!o) return df_fail(DF_ERR_NOMEM, "%s: out of memory", path);
    out_printf(o, "{\n");
    const int cls = cfg->condition ? COND : PLAIN;
    int first = 1;
    for (int i = 0; i < DF_COUNTOF(keys); i++) {
        const key_info *k = &keys[i];
        char num[48];
        if (!(k->cls & cls)) continue;
        if (k->kind == K_CLASSIFIER && !int_value(cfg, k)) continue;   /* a plain UNet2DModel: diffusers' text */
        out_printf(o, "%s  \"%s\": ", first ? "" : ",\n", k->name);
        first = 0;
        switch (k->kind) {
        case K_INT: out_printf(o, "%d", int_value(cfg, k)); break;
        case K_NULL_INT:
            if (int_value(cfg, k)) out_printf(o, "%d", int_value(cfg, k));
            else out_printf(o, "null");
            break;
        case K_BOOL: out_printf(o, "%s", int_value(cfg, k) ? "true" : "false"); break;
        case K_FLOAT:
        case K_PYFLOAT:
            format_float(num, sizeof num, float_value(cfg, k), k->kind == K_PYFLOAT);
            out_printf(o, "%s", num);
            break;
        case K_CHOICE: {
            int v = k->offset == NO_FIELD ? 0 : int_value(cfg, k), j = 0;
            while (j < k->nchoices && k->choices[j].value != v) j++;
            DF_ASSERT(j < k->nchoices);   /* validate() checked the value */
            if (k->choices[j].text) out_printf(o, "\"%s\"", k->choices[j].text);
            else out_printf(o, "null");
            break;
        }
        case K_CHANNELS:
        case K_DOWN_TYPES:
        case K_UP_TYPES: write_list(o, cfg, k->kind); break;
        case K_CLASS_NAME: out_printf(o, "\"%s\"", cfg->condition ? "UNet2DConditionModel" : "UNet2DModel"); break;
        case K_HEADS:
            if (!strcmp(k->name, "num_attention_heads")) out_printf(o, "null");
            else write_per_level(o, cfg, K_HEADS);
            break;
        case K_TLAYERS: write_per_level(o, cfg, K_TLAYERS); break;
        case K_XDIM: out_printf(o, "%d", cfg->cross_attention_dim); break;
        case K_FALSE: out_printf(o, "false"); break;
        case K_NULL: out_printf(o, "null"); break;
        case K_FIXED: out_printf(o, strstr(k->name, "factor") ? "%d.0" : "%d", k->nchoices); break;
        case K_VERSION: out_printf(o, "\"0.25.1\""); break;
        case K_IGNORED: out_printf(o, "null"); break;
        case K_CLASSIFIER: out_printf(o, "%d", int_value(cfg, k)); break;
        }
    }
    out_printf(o, "\n}\n");
    if (o->overflow) s = df_fail(DF_ERR_ARG, "%s: config text too long", path);
    else s = df_write_file_atomic(path, o->buf, o->len);
    free(o);
    return s;
}
