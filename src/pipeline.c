/* diffusers pipeline directories: model_index.json, unet/ and scheduler/scheduler_config.json, so a
 * model travels with the noise schedule it was trained under; and finding the model inside a run. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

void df_scheduler_config_default(df_scheduler_config *c) {
    memset(c, 0, sizeof *c);
    c->beta_schedule = DF_BETA_LINEAR;
    c->num_train_timesteps = 1000;
    c->beta_start = 1e-4;
    c->beta_end = 0.02;
    c->prediction = DF_PRED_EPSILON;
}

df_status df_schedule_from_config(const df_scheduler_config *c, df_schedule *s) {
    return df_schedule_init(s, c->beta_schedule, c->num_train_timesteps, c->beta_start, c->beta_end,
                            c->zero_terminal_snr);
}

df_status df_scheduler_config_load(const char *path, df_scheduler_config *c) {
    cJSON *j;
    df_status st = df_read_json_object(path, &j);
    if (st) return st;
    df_scheduler_config_default(c);
    const cJSON *v;
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "num_train_timesteps")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsNumber(v) || !(v->valuedouble >= 2 && v->valuedouble <= 100000) ||
            v->valuedouble != floor(v->valuedouble))
            st = df_fail(DF_ERR_CONFIG, "%s: field \"num_train_timesteps\" must be a whole number from 2 to 100000",
                         path);
        else c->num_train_timesteps = (int)v->valuedouble;
    }
    const char *num_fields[2] = {"beta_start", "beta_end"};
    double *num_dst[2] = {&c->beta_start, &c->beta_end};
    for (int i = 0; i < 2 && !st; i++)
        if ((v = cJSON_GetObjectItemCaseSensitive(j, num_fields[i]))) {
            if (!cJSON_IsNumber(v)) st = df_fail(DF_ERR_CONFIG, "%s: field \"%s\" must be a number", path, num_fields[i]);
            else *num_dst[i] = v->valuedouble;
        }
    if (!st && (v = cJSON_GetObjectItemCaseSensitive(j, "beta_schedule"))) {
        if (!cJSON_IsString(v) || df_beta_kind_parse(v->valuestring, &c->beta_schedule))
            st = df_fail(DF_ERR_CONFIG, "%s: field \"beta_schedule\": unsupported value %s", path,
                         cJSON_IsString(v) ? v->valuestring : "(not a string)");
    }
    const cJSON *cls = cJSON_GetObjectItemCaseSensitive(j, "_class_name");
    const int edm = cJSON_IsString(cls) && strcmp(cls->valuestring, "EDMEulerScheduler") == 0;
    if (!st && edm) {   /* diffusers' EDM preconditioning: "epsilon" there means c_skip x + c_out F */
        c->edm_sigma_data = 0.5;
        v = cJSON_GetObjectItemCaseSensitive(j, "sigma_data");
        if (v && !(cJSON_IsNumber(v) && v->valuedouble > 0 && v->valuedouble < 1e6))
            st = df_fail(DF_ERR_CONFIG, "%s: field \"sigma_data\" must be a positive number", path);
        else if (v) c->edm_sigma_data = v->valuedouble;
        v = cJSON_GetObjectItemCaseSensitive(j, "prediction_type");
        if (!st && v && !(cJSON_IsString(v) && strcmp(v->valuestring, "epsilon") == 0))
            st = df_fail(DF_ERR_CONFIG, "%s: EDMEulerScheduler: only prediction_type \"epsilon\" is supported", path);
        c->prediction = DF_PRED_SAMPLE;   /* what the model gives its samplers through the EDM adapter */
    }
    if (!st && !edm && (v = cJSON_GetObjectItemCaseSensitive(j, "prediction_type"))) {
        if (!cJSON_IsString(v) || df_prediction_parse(v->valuestring, &c->prediction))
            st = df_fail(DF_ERR_CONFIG, "%s: field \"prediction_type\": unsupported value %s", path,
                         cJSON_IsString(v) ? v->valuestring : "(not a string)");
    }
    if (!st && (v = cJSON_GetObjectItemCaseSensitive(j, "rescale_betas_zero_snr")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsBool(v)) st = df_fail(DF_ERR_CONFIG, "%s: field \"rescale_betas_zero_snr\" must be true or false", path);
        else c->zero_terminal_snr = cJSON_IsTrue(v);
    }
    if (!st && (v = cJSON_GetObjectItemCaseSensitive(j, "variance_type")) && !cJSON_IsNull(v)) {
        /* the fixed kinds are the sampler's choice (--large-variance); "learned" (a raw log variance) is not
         * supported, "learned_range" is improved DDPM's */
        static const char *const fixed[] = {"fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log"};
        int ok = cJSON_IsString(v) && !strcmp(v->valuestring, "learned_range");
        c->learned_variance = ok;
        for (int i = 0; i < 4 && !ok; i++) ok = cJSON_IsString(v) && !strcmp(v->valuestring, fixed[i]);
        if (!ok)
            st = df_fail(DF_ERR_CONFIG, "%s: field \"variance_type\": unsupported value %s (fixed_small, fixed_large, "
                         "learned_range)", path, cJSON_IsString(v) ? v->valuestring : "(not a string)");
    }
    if (!st && (v = cJSON_GetObjectItemCaseSensitive(j, "trained_betas")) && !cJSON_IsNull(v))
        st = df_fail(DF_ERR_CONFIG, "%s: field \"trained_betas\" is not supported", path);
    cJSON_Delete(j);
    if (!st) {
        df_schedule probe;   /* ranges are checked where the schedule is built */
        st = df_schedule_from_config(c, &probe);
        df_schedule_free(&probe);
        if (st) {
            char why[400];   /* df_error() is the buffer df_fail writes: copy it first */
            snprintf(why, sizeof why, "%s", df_error());
            st = df_fail(st, "%s: %s", path, why);
        }
    }
    return st;
}

/* An EDM model as diffusers' EDMEulerScheduler, with the VP schedule diffuse samples it on (the beta fields,
 * which diffusers ignores) and that schedule's sigma range as sigma_min and sigma_max. */
static df_status edm_config_save(const df_scheduler_config *c, const char *path) {
    df_schedule s;
    df_status st = df_schedule_from_config(c, &s);
    if (st) return st;
    const double lo = df_schedule_sigma(&s, 0), hi = df_schedule_sigma(&s, s.T - 1);
    df_schedule_free(&s);
    char buf[1024];
    int n = snprintf(buf, sizeof buf,
                     "{\n"
                     "  \"_class_name\": \"EDMEulerScheduler\",\n"
                     "  \"_diffusers_version\": \"0.27.0\",\n"
                     "  \"beta_end\": %.17g,\n"
                     "  \"beta_schedule\": \"%s\",\n"
                     "  \"beta_start\": %.17g,\n"
                     "  \"final_sigmas_type\": \"zero\",\n"
                     "  \"num_train_timesteps\": %d,\n"
                     "  \"prediction_type\": \"epsilon\",\n"
                     "  \"rescale_betas_zero_snr\": %s,\n"
                     "  \"rho\": 7.0,\n"
                     "  \"sigma_data\": %.17g,\n"
                     "  \"sigma_max\": %.17g,\n"
                     "  \"sigma_min\": %.17g,\n"
                     "  \"sigma_schedule\": \"karras\"\n"
                     "}\n",
                     c->beta_end, df_beta_kind_name(c->beta_schedule), c->beta_start, c->num_train_timesteps,
                     c->zero_terminal_snr ? "true" : "false", c->edm_sigma_data, hi, lo);
    return df_write_file_atomic(path, buf, (size_t)n);
}

df_status df_scheduler_config_save(const df_scheduler_config *c, const char *path) {
    if (c->edm_sigma_data > 0) return edm_config_save(c, path);
    char buf[1024];
    int n = snprintf(buf, sizeof buf,
                     "{\n"
                     "  \"_class_name\": \"DDPMScheduler\",\n"
                     "  \"_diffusers_version\": \"0.25.1\",\n"
                     "  \"beta_end\": %.17g,\n"
                     "  \"beta_schedule\": \"%s\",\n"
                     "  \"beta_start\": %.17g,\n"
                     "  \"clip_sample\": true,\n"
                     "  \"clip_sample_range\": 1.0,\n"
                     "  \"num_train_timesteps\": %d,\n"
                     "  \"prediction_type\": \"%s\",\n"
                     "  \"rescale_betas_zero_snr\": %s,\n"
                     "  \"steps_offset\": 0,\n"
                     "  \"timestep_spacing\": \"leading\",\n"
                     "  \"trained_betas\": null,\n"
                     "  \"variance_type\": \"%s\"\n"
                     "}\n",
                     c->beta_end, df_beta_kind_name(c->beta_schedule), c->beta_start, c->num_train_timesteps,
                     df_prediction_name(c->prediction), c->zero_terminal_snr ? "true" : "false",
                     c->learned_variance ? "learned_range" : "fixed_small");
    return df_write_file_atomic(path, buf, (size_t)n);
}

static int is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

df_status df_pipeline_save(const char *dir, const df_model *model, const df_scheduler_config *sc) {
    char p[4200];
    snprintf(p, sizeof p, "%s/unet", dir);
    df_status st = df_model_save(model, p);   /* creates dir too */
    if (st) return st;
    snprintf(p, sizeof p, "%s/scheduler", dir);
    if ((st = df_mkdir_p(p))) return st;
    snprintf(p, sizeof p, "%s/scheduler/scheduler_config.json", dir);
    if ((st = df_scheduler_config_save(sc, p))) return st;
    char index[512];
    const char *sched = sc->edm_sigma_data > 0 ? "EDMEulerScheduler" : "DDPMScheduler";
    int n = df_model_config(model)->condition
                ? snprintf(index, sizeof index,
                           "{\n"
                           "  \"_class_name\": \"DiffuseTextToImagePipeline\",\n"
                           "  \"_diffusers_version\": \"0.25.1\",\n"
                           "  \"scheduler\": [\"diffusers\", \"%s\"],\n"
                           "  \"text_encoder\": [\"transformers\", \"CLIPTextModel\"],\n"
                           "  \"tokenizer\": [\"transformers\", \"CLIPTokenizer\"],\n"
                           "  \"unet\": [\"diffusers\", \"UNet2DConditionModel\"]\n"
                           "}\n",
                           sched)
                : snprintf(index, sizeof index,
                           "{\n"
                           "  \"_class_name\": \"DDPMPipeline\",\n"
                           "  \"_diffusers_version\": \"0.25.1\",\n"
                           "  \"scheduler\": [\"diffusers\", \"%s\"],\n"
                           "  \"unet\": [\"diffusers\", \"UNet2DModel\"]\n"
                           "}\n",
                           sched);
    snprintf(p, sizeof p, "%s/model_index.json", dir);
    return df_write_file_atomic(p, index, (size_t)n);
}

df_status df_pipeline_load(const char *path, int raw, df_model **model, df_scheduler_config *sc) {
    char dir[4096], p[4300];
    *model = NULL;
    snprintf(dir, sizeof dir, "%s", path);
    snprintf(p, sizeof p, "%s/latest", path);
    if (df_is_dir(p)) snprintf(dir, sizeof dir, "%s/latest", path);   /* a run directory */
    df_scheduler_config local;
    if (!sc) sc = &local;
    df_scheduler_config_default(sc);
    snprintf(p, sizeof p, "%s/unet/config.json", dir);
    if (!is_file(p)) {
        snprintf(p, sizeof p, "%s/config.json", dir);
        if (!is_file(p))
            return df_fail(DF_ERR_IO, "%s: not a model: no config.json, unet/config.json or latest/ checkpoint", path);
        /* a bare model directory: DDPM's schedule, and learned variances when its output says so */
        df_status st = df_model_load(dir, model);
        if (!st) sc->learned_variance = df_model_learned_variance(*model);
        return st;
    }
    snprintf(p, sizeof p, "%s/scheduler/scheduler_config.json", dir);
    df_status st = is_file(p) ? df_scheduler_config_load(p, sc) : DF_OK;
    if (st) return st;
    snprintf(p, sizeof p, "%s/unet_raw/config.json", dir);
    if (raw && is_file(p)) snprintf(p, sizeof p, "%s/unet_raw", dir);
    else snprintf(p, sizeof p, "%s/unet", dir);
    if ((st = df_model_load(p, model))) return st;
    /* diffusers splits the output only for a learned variance: the two must agree */
    const df_unet_config *mc = df_model_config(*model);
    if (mc->classifier_classes <= 0 && sc->learned_variance != df_model_learned_variance(*model)) {
        st = df_fail(DF_ERR_CONFIG, "%s: the scheduler's variance_type is %s but the model has %d output channels for %d "
                     "input channels (learned_range needs twice as many)", dir,
                     sc->learned_variance ? "learned_range" : "fixed", mc->out_channels, mc->in_channels);
        df_model_free(*model);
        *model = NULL;
    }
    return st;
}

/* ---- the text half of a text-to-image pipeline -------------------------------------------------------- */

df_status df_text_parts_check(const char *where, const df_unet_config *u, const df_text_encoder *encoder,
                              const df_tokenizer *tokenizer) {
    const df_text_config *c = df_text_encoder_config(encoder);
    if (!u->condition)
        return df_fail(DF_ERR_CONFIG, "%s: the U-Net does not attend to text (not a UNet2DConditionModel)", where);
    if (c->hidden_size != u->cross_attention_dim)
        return df_fail(DF_ERR_CONFIG, "%s: the text encoder's hidden_size %d is not the U-Net's cross_attention_dim %d",
                       where, c->hidden_size, u->cross_attention_dim);
    if (df_tokenizer_context(tokenizer) > c->max_position_embeddings)
        return df_fail(DF_ERR_CONFIG, "%s: the tokenizer's context of %d tokens is longer than the text encoder's %d "
                       "positions", where, df_tokenizer_context(tokenizer), c->max_position_embeddings);
    if (df_tokenizer_vocab_size(tokenizer) > c->vocab_size)
        return df_fail(DF_ERR_CONFIG, "%s: the tokenizer has %d ids, the text encoder %d", where,
                       df_tokenizer_vocab_size(tokenizer), c->vocab_size);
    return DF_OK;
}

df_status df_text_pipeline_load(const char *path, const df_model *unet, df_text_encoder **encoder,
                                df_tokenizer **tokenizer) {
    *encoder = NULL, *tokenizer = NULL;
    char dir[4096], p[4300];
    snprintf(dir, sizeof dir, "%s", path);
    snprintf(p, sizeof p, "%s/latest", path);
    if (df_is_dir(p)) snprintf(dir, sizeof dir, "%s/latest", path);
    snprintf(p, sizeof p, "%s/text_encoder", dir);
    if (!df_is_dir(p)) return df_fail(DF_ERR_IO, "%s: no text_encoder/ (not a text-to-image pipeline)", path);
    df_status st = df_text_encoder_load(p, encoder);
    snprintf(p, sizeof p, "%s/tokenizer", dir);
    if (!st) st = df_tokenizer_load(p, tokenizer);
    if (!st) st = df_text_parts_check(path, df_model_config(unet), *encoder, *tokenizer);
    if (st) {
        df_text_encoder_free(*encoder), df_tokenizer_free(*tokenizer);
        *encoder = NULL, *tokenizer = NULL;
    }
    return st;
}

df_status df_text_pipeline_save(const char *dir, const df_model *unet, const df_scheduler_config *sc,
                                const df_text_encoder *encoder, const df_tokenizer *tokenizer) {
    if (!df_model_config(unet)->condition)
        return df_fail(DF_ERR_CONFIG, "%s: a text-to-image pipeline needs a UNet2DConditionModel", dir);
    char p[4200];
    snprintf(p, sizeof p, "%s/text_encoder", dir);
    df_status st = df_pipeline_save(dir, unet, sc);
    if (!st) st = df_text_encoder_save(encoder, p);
    snprintf(p, sizeof p, "%s/tokenizer", dir);
    return st ? st : df_tokenizer_save(tokenizer, p);
}

df_status df_encode_prompts(df_text_encoder *encoder, const df_tokenizer *tokenizer, int n, const char *const *prompts,
                            float *states, int *truncated) {
    if (truncated) *truncated = 0;
    if (n < 1 || !prompts || !states) return df_fail(DF_ERR_ARG, "encode prompts: no prompts");
    const int L = df_tokenizer_context(tokenizer);
    int32_t *ids = malloc(sizeof *ids * (size_t)n * L);
    if (!ids) return df_fail(DF_ERR_NOMEM, "encode prompts: out of memory");
    df_status st = DF_OK;
    for (int i = 0; i < n && !st; i++) {
        int dropped = 0;
        st = df_tokenize(tokenizer, prompts[i] ? prompts[i] : "", ids + (size_t)i * L, NULL, &dropped);
        if (st) {
            char why[256];
            snprintf(why, sizeof why, "%s", df_error());
            st = df_fail(st, "prompt %d: %s", i + 1, why);
        }
        if (truncated && dropped) ++*truncated;
    }
    if (!st) st = df_text_encode(encoder, n, L, ids, states, NULL);
    free(ids);
    return st;
}

/* ---- classes ---------------------------------------------------------------------------------------- */

void df_class_info_free(df_class_info *ci) {
    if (!ci) return;
    for (int i = 0; ci->names && i < ci->count; i++) free(ci->names[i]);
    free(ci->names);
    memset(ci, 0, sizeof *ci);
}

df_status df_class_info_save(const char *dir, const df_class_info *ci) {
    cJSON *j = cJSON_CreateObject(), *names = NULL;
    if (!j) return df_fail(DF_ERR_NOMEM, "out of memory");
    cJSON_AddNumberToObject(j, "num_classes", ci->count);
    if (ci->null_class >= 0) cJSON_AddNumberToObject(j, "null_class", ci->null_class);
    else cJSON_AddNullToObject(j, "null_class");
    if (ci->names && (names = cJSON_AddArrayToObject(j, "names")))
        for (int i = 0; i < ci->count; i++) cJSON_AddItemToArray(names, cJSON_CreateString(ci->names[i] ? ci->names[i] : ""));
    char p[4200];
    snprintf(p, sizeof p, "%s/classes.json", dir);
    return df_write_json_atomic(p, j);
}

df_status df_class_info_load(const char *path, const df_model *model, df_class_info *ci) {
    memset(ci, 0, sizeof *ci);
    const df_unet_config *mc = model ? df_model_config(model) : NULL;
    ci->count = !mc ? 0 : mc->classifier_classes > 0 ? mc->classifier_classes : mc->num_class_embeds;
    ci->null_class = -1;
    char p[4400], dir[4200];
    snprintf(dir, sizeof dir, "%s", path);
    snprintf(p, sizeof p, "%s/latest", path);
    if (df_is_dir(p)) snprintf(dir, sizeof dir, "%s/latest", path);
    snprintf(p, sizeof p, "%s/classes.json", dir);
    if (!is_file(p)) return DF_OK;   /* not written by a class-conditional training run: numbers only */
    char *text;
    size_t len;
    df_status st = df_read_file(p, &text, &len);
    if (st) return st;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(j, "num_classes"), *nul = cJSON_GetObjectItemCaseSensitive(j, "null_class"),
                *names = cJSON_GetObjectItemCaseSensitive(j, "names");
    if (!cJSON_IsObject(j) || !cJSON_IsNumber(k) || k->valuedouble != ci->count)
        st = df_fail(DF_ERR_FORMAT, "%s: not a class list for this model's %d classes", p, ci->count);
    else if (nul && !cJSON_IsNull(nul) &&
             !(cJSON_IsNumber(nul) && nul->valuedouble >= 0 && nul->valuedouble < ci->count &&
               nul->valuedouble == floor(nul->valuedouble)))
        st = df_fail(DF_ERR_FORMAT, "%s: field \"null_class\" must be null or a class from 0 to %d", p, ci->count - 1);
    else if (names && !(cJSON_IsArray(names) && cJSON_GetArraySize(names) == ci->count))
        st = df_fail(DF_ERR_FORMAT, "%s: field \"names\" must list %d names", p, ci->count);
    if (!st && cJSON_IsNumber(nul)) ci->null_class = (int)nul->valuedouble;
    if (!st && names) {
        ci->names = calloc((size_t)ci->count, sizeof(char *));
        for (int i = 0; ci->names && i < ci->count && !st; i++) {
            const cJSON *e = cJSON_GetArrayItem(names, i);
            if (!cJSON_IsString(e)) st = df_fail(DF_ERR_FORMAT, "%s: name %d is not a string", p, i);
            else if (!(ci->names[i] = strdup(e->valuestring))) st = df_fail(DF_ERR_NOMEM, "out of memory");
            for (char *c = ci->names && ci->names[i] ? ci->names[i] : NULL; c && *c; c++)
                if ((unsigned char)*c < 0x20) *c = '?';
        }
        if (!ci->names) st = df_fail(DF_ERR_NOMEM, "out of memory");
    }
    cJSON_Delete(j);
    if (st) df_class_info_free(ci);
    if (st) ci->null_class = -1;
    return st;
}

/* a and b equal ignoring ASCII case, with '_' for ' ' (a shell word "ankle_boot" for "Ankle boot") */
static int same_name(const char *a, const char *b) {
    for (;; a++, b++) {
        int x = tolower((unsigned char)(*a == '_' ? ' ' : *a)), y = tolower((unsigned char)(*b == '_' ? ' ' : *b));
        if (x != y) return 0;
        if (!x) return 1;
    }
}

df_status df_class_info_find(const df_class_info *ci, const char *text, int *index) {
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if ((isdigit((unsigned char)text[0]) || (text[0] == '-' && isdigit((unsigned char)text[1]))) && !*end) {
        if (errno || v < 0 || v >= ci->count)   /* a number is the class's index, as it always was */
            return df_fail(DF_ERR_ARG, "class %s out of range 0..%d", text, ci->count - 1);
        *index = (int)v;
        return DF_OK;
    }
    if (!ci->names)
        return df_fail(DF_ERR_ARG, "\"%s\": the classes have no names (no classes.json): give a number from 0 to %d",
                       text, ci->count - 1);
    for (int i = 0; i < ci->count; i++)
        if (ci->names[i] && same_name(ci->names[i], text)) {
            *index = i;
            return DF_OK;
        }
    char list[600];
    size_t o = 0;
    for (int i = 0; i < ci->count && o < sizeof list; i++)
        if (i != ci->null_class)
            o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", o ? ", " : "", ci->names[i] ? ci->names[i] : "");
    return df_fail(DF_ERR_ARG, "no class \"%s\" (the classes: %s)", text, list);
}

df_status df_class_info_match(const df_class_info *model, const df_class_info *classifier) {
    const int k = model->count, kc = classifier->count;
    if (k && kc != k - (k > kc))   /* the model's classes, or those and its null class */
        return df_fail(DF_ERR_CONFIG, "%d classes against %d", k, kc);
    if (!model->names || !classifier->names) return DF_OK;
    char diff[700];
    size_t o = 0;
    int ndiff = 0;
    for (int i = 0; i < kc && i < k; i++) {
        const char *a = model->names[i] ? model->names[i] : "", *b = classifier->names[i] ? classifier->names[i] : "";
        if (i == model->null_class || strcmp(a, b) == 0) continue;
        if (++ndiff <= 3 && o < sizeof diff)
            o += (size_t)snprintf(diff + o, sizeof diff - o, "%s%d \"%s\" against \"%s\"", o ? ", " : "", i, a, b);
    }
    if (ndiff > 3 && o < sizeof diff) snprintf(diff + o, sizeof diff - o, " and %d more", ndiff - 3);
    return ndiff ? df_fail(DF_ERR_CONFIG, "class names differ: %s", diff) : DF_OK;
}

df_status df_class_info_save_data(const char *dir, const df_dataset *d, int count, int null_class) {
    int k = df_dataset_num_classes(d);
    char **names = calloc((size_t)count, sizeof(char *)), (*nums)[16] = calloc((size_t)count, sizeof *nums);
    for (int i = 0; names && nums && i < count; i++) {
        const char *nm = i < k ? df_dataset_class_name(d, i) : NULL;
        snprintf(nums[i], sizeof nums[i], "%d", i);
        names[i] = (char *)(i == null_class ? "(none)" : nm ? nm : i < k ? nums[i] : "(unused)");
    }
    df_class_info ci = {count, null_class, names};
    df_status st = names && nums ? df_class_info_save(dir, &ci) : df_fail(DF_ERR_NOMEM, "out of memory");
    free(names), free(nums);
    return st;
}

/* ---- what a run's checkpoint says about its training ------------------------------------------------------ */

static double json_number(const cJSON *j, const char *key, double fallback) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsNumber(v) ? v->valuedouble : fallback;
}

df_status df_training_summary_load(const char *path, df_training_summary *s) {
    memset(s, 0, sizeof *s);
    s->step = s->images = s->epoch = s->batch = -1;
    s->loss_avg = NAN;
    char p[4200], *text = NULL;
    size_t len;
    snprintf(p, sizeof p, "%s/latest/training_state.json", path);
    if (df_read_file(p, &text, &len)) {
        snprintf(p, sizeof p, "%s/training_state.json", path);
        if (df_read_file(p, &text, &len)) return DF_OK;   /* not a checkpoint: nothing to say */
    }
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    if (!j) return df_fail(DF_ERR_FORMAT, "%s: not JSON", p);
    s->found = 1;
    s->step = (long)json_number(j, "step", -1);
    s->images = (long)json_number(j, "images_seen", -1);
    s->epoch = (int)json_number(j, "epoch", -1);
    s->batch = (int)json_number(j, "batch_size", -1);
    s->loss_avg = json_number(j, "loss_avg", NAN);
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(j, "data_description");
    if (cJSON_IsString(data)) snprintf(s->data, sizeof s->data, "%s", data->valuestring);
    cJSON_Delete(j);
    return DF_OK;
}
