/* diffuse: denoising diffusion models in plain C.
 * The public API: errors, random numbers, U-Net configs and models (load, create, predict, train, save).
 *
 * Conventions
 * - Images are float32 tensors laid out (N, C, H, W), row-major, values usually in [-1, 1].
 * - Functions that can fail return a df_status; on failure df_error() holds a one-line message that
 *   names the file or field at fault. The library never exits the process and never prints.
 * - Objects returned through an out-pointer belong to the caller and are released with the matching
 *   *_free() function, which accepts NULL.
 * - Nothing here keeps global state: randomness comes from a df_rng the caller passes in.
 */
#ifndef DIFFUSE_H
#define DIFFUSE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DIFFUSE_VERSION "0.2.0"

/* ---- errors ------------------------------------------------------------------------------------ */

typedef enum {
    DF_OK = 0,
    DF_ERR_IO,        /* a file could not be opened, read or written */
    DF_ERR_FORMAT,    /* a file is not what it claims to be (bad header, truncated, bad JSON) */
    DF_ERR_CONFIG,    /* a config value is missing, out of range or not supported */
    DF_ERR_SHAPE,     /* a tensor has the wrong shape or is missing */
    DF_ERR_ARG,       /* a caller passed an invalid argument */
    DF_ERR_NOMEM,     /* an allocation failed */
    DF_STATUS_COUNT
} df_status;

/* The message of the last failure on the calling thread ("" if none). Valid until the next failing
 * call on this thread. */
const char *df_error(void);

/* A short fixed name for a status, e.g. "io error". */
const char *df_status_name(df_status s);

/* ---- random numbers ------------------------------------------------------------------------------ */

/* A seeded counter-based generator (Philox-4x32-10). Streams are reproducible: the same seed gives the
 * same numbers on every machine and thread count. Copy the struct to fork a stream. A seed has 2^64
 * independent streams (the high half of Philox's counter); df_rng_init starts stream 0. */
typedef struct {
    uint64_t seed;
    uint64_t stream;    /* which of the seed's streams */
    uint64_t counter;   /* how many 128-bit blocks were drawn */
    uint32_t buf[4];    /* unused words of the current block */
    int      nbuf;
} df_rng;

void     df_rng_init(df_rng *r, uint64_t seed);
void     df_rng_init_stream(df_rng *r, uint64_t seed, uint64_t stream);
uint32_t df_rng_u32(df_rng *r);
double   df_rng_uniform(df_rng *r);                 /* in [0, 1) with 53 random bits */
double   df_rng_normal(df_rng *r);                  /* standard normal (Box-Muller) */
void     df_rng_fill_normal(df_rng *r, float *x, size_t n);
void     df_rng_fill_uniform(df_rng *r, float *x, size_t n, float lo, float hi);

/* ---- U-Net configuration ---------------------------------------------------------------------------- */

#define DF_MAX_LEVELS 8
/* Limits a config must respect (diffusers' released models stay far below them): they keep a few bytes
 * of JSON from asking for terabytes. */
#define DF_MAX_CHANNELS 8192      /* per level */
#define DF_MAX_CLASSES  1000000   /* num_class_embeds */
#define DF_MAX_SIZE     4096      /* sample_size, and the largest image side a model runs on */
#define DF_MAX_PARAMS   ((size_t)1 << 31)   /* parameter values in one model (8 GiB of float32) */

/* diffusers' UNet2DModel config, the subset of fields that shape the network. Field names follow
 * config.json; 0 stands for JSON null where the comment says so. */
typedef struct {
    int   sample_size;                    /* 0 = null */
    int   in_channels, out_channels;
    int   center_input_sample;            /* bool: x -> 2x - 1 first */
    int   flip_sin_to_cos;                /* bool */
    float freq_shift;
    int   num_levels;                     /* len(block_out_channels) */
    int   block_out_channels[DF_MAX_LEVELS];
    int   down_attn[DF_MAX_LEVELS];       /* 1: AttnDownBlock2D, 0: DownBlock2D (down order) */
    int   up_attn[DF_MAX_LEVELS];         /* 1: AttnUpBlock2D, 0: UpBlock2D (up order, deepest first) */
    int   layers_per_block;
    int   mid_block;                      /* bool: mid_block_type "UNetMidBlock2D" (1) or null (0) */
    int   add_attention;                  /* bool: attention in the mid block */
    float mid_block_scale_factor;
    int   downsample_padding;             /* 1: pad 1 all round; 0: pad right and bottom by 1 */
    int   downsample_resnet;              /* downsample_type: 0 "conv", 1 "resnet" (attention blocks) */
    int   upsample_resnet;                /* upsample_type: 0 "conv", 1 "resnet" (attention blocks) */
    int   norm_num_groups;
    int   attn_norm_num_groups;           /* 0 = null */
    float norm_eps;
    int   attention_head_dim;             /* 0 = null: one head over all channels */
    int   scale_shift;                    /* resnet_time_scale_shift: 0 "default", 1 "scale_shift" */
    int   num_class_embeds;               /* 0 = null: unconditional */
    int   class_embed_timestep;           /* class_embed_type: 0 null (nn.Embedding), 1 "timestep" */
    float dropout;
    /* Not UNet2DModel: > 0 makes the network a noisy-image classifier with this many classes: the U-Net's
     * encoder half (time embedding, down blocks, mid block) and a head (GroupNorm, SiLU, mean over the
     * image, a linear layer named "classifier.*") giving logits (N, classifier_classes). Written as
     * "_classifier_classes", which diffusers ignores. */
    int   classifier_classes;
    /* A classifier trained on noised images (what classifier guidance needs): "_classifier_noise_aware",
     * written only when 1. 0 means clean images, or a classifier from before this was recorded. */
    int   classifier_noise_aware;
    /* UNet2DConditionModel (Stable Diffusion's U-Net, which attends to text states), "_class_name"
     * "UNet2DConditionModel": its attention blocks (down_attn / up_attn 1: CrossAttnDownBlock2D and
     * CrossAttnUpBlock2D; the mid block UNetMidBlock2DCrossAttn) are Transformer2DModels (GroupNorm, proj_in,
     * BasicTransformerBlocks of LayerNorm, self-attention attn1, cross-attention attn2 on the text states,
     * LayerNorm and a GEGLU feed-forward, proj_out, plus the input). 0: UNet2DModel. */
    int   condition;
    int   cross_attention_dim;                  /* the text states' width */
    int   attention_heads[DF_MAX_LEVELS];       /* heads per level, down order: the model's attention_head_dim
                                                   (which it reads as heads), or num_attention_heads */
    int   transformer_layers[DF_MAX_LEVELS];    /* transformer_layers_per_block, per level */
    int   use_linear_projection;                /* proj_in / proj_out as Linear, not 1x1 convolutions */
    int   upcast_attention;                     /* kept for the file: attention runs in float32 anyway */
} df_unet_config;

/* diffusers' UNet2DModel defaults (what a config.json that omits a field means). */
void df_unet_config_default(df_unet_config *cfg);
/* diffusers' UNet2DConditionModel defaults (Stable Diffusion 1.x's U-Net: 4 channels in and out, 320 to 1280
 * wide, cross-attention to 1280-wide states with 8 heads). */
void df_unet_config_default_condition(df_unet_config *cfg);

/* The same network attending to text states cross_attention_dim wide (a UNet2DConditionModel): each attention
 * block becomes its cross-attention block (a Transformer2DModel of one layer, with heads of attention_head_dim
 * channels, or one head where that is null), the mid block UNetMidBlock2DCrossAttn. A config that is one already
 * only takes the new width. Configs UNet2DConditionModel cannot hold (classifiers, class labels, resnet up- and
 * downsampling) are refused. */
df_status df_unet_config_text(df_unet_config *cfg, int cross_attention_dim);

/* The built-in configs, as help and error messages name them. */
#define DF_PRESETS                                                                                         \
    "fmnist-s (28x28 grey, 3.9 M parameters), fmnist-xs (one resnet per level, 2.7 M, for short runs) or " \
    "cifar10 (google/ddpm-cifar10-32's layout, 35.7 M)"

/* A built-in config by name, one of DF_PRESETS. */
df_status df_unet_config_preset(const char *name, df_unet_config *cfg);

/* Parse a diffusers config.json (text or file). A field we do not support is refused with an error
 * naming the field and the value. `source` names the text in messages (e.g. its path). */
df_status df_unet_config_parse(const char *json, size_t len, const char *source, df_unet_config *cfg);
df_status df_unet_config_load(const char *path, df_unet_config *cfg);

/* Check a config for consistency (channels divisible by groups, heads, levels...). */
df_status df_unet_config_validate(const df_unet_config *cfg);

/* Write a config as diffusers' config.json (all fields of its class, "_class_name" "UNet2DModel" or
 * "UNet2DConditionModel"). The file is written to a temporary name and renamed, so a crash never leaves
 * half a file. */
df_status df_unet_config_save(const df_unet_config *cfg, const char *path);

/* ---- models -------------------------------------------------------------------------------------- */

typedef struct df_model df_model;

/* A new model with diffusers' (that is PyTorch's) default initialisation, drawn from `seed`:
 * convolutions and linears uniform in +-1/sqrt(fan_in) (weights and biases), GroupNorm 1 and 0,
 * class embeddings standard normal. */
df_status df_model_create(const df_unet_config *cfg, uint64_t seed, df_model **out);

/* Load a diffusers model directory: config.json plus diffusion_pytorch_model.safetensors (or
 * model.safetensors). Weights may be F32, F16 or BF16; legacy attention names (query, key, value,
 * proj_attn) are accepted. Every parameter must be present with its exact shape. */
df_status df_model_load(const char *dir, df_model **out);

/* Save as a diffusers model directory (created if missing): config.json and
 * diffusion_pytorch_model.safetensors (F32), each written atomically. */
df_status df_model_save(const df_model *m, const char *dir);

void df_model_free(df_model *m);

const df_unet_config *df_model_config(const df_model *m);

/* Parameters: one contiguous float32 block, in the order of the parameter table; gradients use the
 * same layout. The pointers stay valid for the model's life. */
size_t       df_model_num_params(const df_model *m);       /* number of float values */
int          df_model_num_tensors(const df_model *m);      /* number of named tensors */
float       *df_model_params(df_model *m);
float       *df_model_grads(df_model *m);
/* The i-th tensor: its diffusers state-dict name, shape (up to 4 dims) and offset into the block. */
const char  *df_model_tensor_info(const df_model *m, int i, int *ndim, int shape[4], size_t *offset);
int          df_model_find_tensor(const df_model *m, const char *name);   /* -1 if absent */

/* Multiply-adds x2 (FLOPs) of one forward pass for one image at the model's sample size (or h x w). */
double df_model_flops(const df_model *m, int h, int w);

/* OpenMP threads of this model's calls (0, the default: the caller's OpenMP setting, e.g. from
 * omp_set_num_threads or OMP_NUM_THREADS). A call applies it for its duration and restores the caller's
 * setting, so models in one process may differ. df_model_threads gives the number in effect. */
void df_model_set_threads(df_model *m, int n);
int  df_model_threads(const df_model *m);

/* Size the model's memory once for calls of up to max_n images of h x w: the tape, activation and
 * gradient blocks, scratch, the convolution primitives and the buffers of df_model_forward, _backward,
 * _loss_grad, _classifier_loss_grad, _classify (with gradient), _denoise, _class_denoise and _features.
 * Afterwards those calls with n <= max_n at h x w allocate nothing and do not rebuild the tape: a smaller
 * batch runs padded to max_n (the padding adds nothing to outputs or gradients; the compute is max_n
 * images'). A larger n at h x w grows the reservation; another size gets a tape of its own (rebuilt
 * when the sizes alternate). Reserving less than before shrinks the memory. The promise holds while
 * the model's thread count stays the one in effect here. */
df_status df_model_reserve(df_model *m, int max_n, int h, int w);
/* Convolution kernels: DF_KERNELS_FAST (oneDNN's JIT kernels when the library is built with them, the
 * default) or DF_KERNELS_REFERENCE (im2col + BLAS, portable; what the fast path is checked against). */
typedef enum { DF_KERNELS_FAST, DF_KERNELS_REFERENCE } df_kernels;
void df_model_set_kernels(df_model *m, df_kernels k);

/* Predict the noise: eps = model(x, t, labels). x and eps are (n, in_channels, h, w) and
 * (n, out_channels, h, w); t holds n timesteps (may be fractional); labels holds n class indices or is
 * NULL for an unconditional model. The activations of this pass are kept for df_model_backward(). */
df_status df_model_forward(df_model *m, int n, int h, int w, const float *x, const float *t,
                           const int *labels, float *eps);

/* Backpropagate d(loss)/d(eps) through the last forward pass: adds the parameter gradients into
 * df_model_grads() and, if dx is not NULL, writes d(loss)/dx (n, in_channels, h, w). */
df_status df_model_backward(df_model *m, const float *deps, float *dx);

void df_model_zero_grad(df_model *m);

/* A UNet2DConditionModel's text states (diffusers' encoder_hidden_states): (n, L, cross_attention_dim), one
 * text per image of the next forward passes (n must then be their batch, or 1 for one text for all). The
 * model keeps a copy. Refused for a model that does not attend to text. */
df_status df_model_set_context(df_model *m, int n, int L, const float *states);
/* Room for the text states of n images of L tokens, so that the calls after it allocate nothing for them. */
df_status df_model_reserve_context(df_model *m, int n, int L);
/* Inference passes (sampling) on the same text states and weights as the pass before keep its cross-attentions'
 * keys and values instead of computing them again: a sampling run computes them once. How many passes did so
 * (a diagnostic; calling df_model_params, or a training pass, makes the next pass compute them). */
long      df_model_context_reuses(const df_model *m);
/* After df_model_backward: d(loss)/d(states) for the images of the last forward pass, (n, L,
 * cross_attention_dim) (to train a text encoder with the U-Net). */
df_status df_model_context_grad(df_model *m, float *dstates);

typedef struct df_schedule df_schedule;   /* see the noise schedules below */

/* A model as a sampler's denoise function (df_denoise_fn): pass a df_model_denoiser as ctx. The images
 * are (n, in_channels, h, w); labels (n values, or NULL) are used for class-conditional models. */
typedef struct {
    df_model  *model;
    int        h, w;
    const int *labels;
    /* An EDM-trained model (df_edm_params): with edm_sigma_data > 0 the network is EDM's F, run through
     * df_edm_sampler_inputs / _x0 under edm_schedule, and out is an x_0 prediction (DF_PRED_SAMPLE). */
    const df_schedule *edm_schedule;
    double             edm_sigma_data;
    /* A UNet2DConditionModel's texts: a table of ntexts text states (ntexts, text_len, cross_attention_dim),
     * df_text_encode's; the labels pick each image's row (and the model then takes no class labels). */
    const float *texts;
    int          ntexts, text_len;
} df_model_denoiser;
/* A model with learned variances (out_channels = 2 x in_channels, df_model_learned_variance) gives the
 * prediction alone here, the first in_channels channels; df_model_denoise_variance gives both halves (2 x
 * in_channels channels per image), as a sampler with learned_variance and df_vlb_bpd's DF_VARIANCE_LEARNED take. */
df_status df_model_denoise(void *ctx, int n, const float *x, const float *t, float *out);
df_status df_model_denoise_variance(void *ctx, int n, const float *x, const float *t, float *out);
int       df_model_learned_variance(const df_model *m);   /* 1: out_channels = 2 x in_channels (not a classifier) */
/* The same with the labels given per call (a df_class_denoise_fn, for guidance); ctx's labels are ignored. */
df_status df_model_class_denoise(void *ctx, int n, const float *x, const float *t, const int *labels, float *out);

/* The model between safetensors files (diffusers' UNet2DModel.forward names), for checks against another
 * implementation: reads x (N, C, H, W), t (N timesteps, any number type) and class_labels (N, when the model
 * is conditional), writes eps; with grads, reads grad_out (shaped like eps) and also writes grad_x and
 * grad.<name> for every parameter. The output is written atomically. */
df_status df_model_predict_file(df_model *m, const char *in_path, const char *out_path, int grads);

/* Classifiers (config classifier_classes > 0): the cross-entropy of the logits against `targets` (n
 * classes), averaged over the batch, with its gradients added into df_model_grads(); correct (may be
 * NULL) counts the images whose largest logit is the target. */
df_status df_model_classifier_loss_grad(df_model *m, int n, int h, int w, const float *x, const float *t,
                                        const int *targets, float *loss, int *correct);
/* A classifier as a df_classifier_fn (ctx: a df_model_denoiser, its labels unused): log p(y | x_t) and its
 * gradient with respect to x_t. */
df_status df_model_classify(void *ctx, int n, const float *x, const float *t, const int *labels, double *logp,
                            float *grad);

/* A classifier's features: the pooled activations its linear head reads, (n, df_model_feature_dim(m)), of
 * clean images (t = 0) x (n, in_channels, h, w); any n (at most 256 images a network call). */
df_status df_model_features(df_model *m, int n, int h, int w, const float *x, float *feats);
int       df_model_feature_dim(const df_model *m);   /* 0 for a model that is not a classifier */

/* Training mode turns dropout on, with masks drawn from `rng` (kept by pointer until the next call).
 * Eval mode (the default) turns it off. */
void df_model_set_train(df_model *m, int train, df_rng *rng);

/* DDPM's L_simple on one batch: forward on x_t, loss = mean over the batch of weight_i * mean((out_i -
 * target_i)^2), backward. target is the noise for epsilon prediction (see df_training_target for the
 * others); weights (n values) may be NULL for all ones. Gradients are added into df_model_grads() (call
 * df_model_zero_grad first); loss and per_sample (n unweighted per-sample losses) may be NULL. */
df_status df_model_loss_grad(df_model *m, int n, int h, int w, const float *x_t, const float *t,
                             const int *labels, const float *target, const float *weights, float *loss,
                             float *per_sample);

/* ---- noise schedules ------------------------------------------------------------------------------ */

typedef enum {
    DF_BETA_LINEAR,          /* DDPM: betas linear from beta_start to beta_end (1e-4 to 0.02) */
    DF_BETA_SCALED_LINEAR,   /* linear in sqrt(beta), then squared */
    DF_BETA_COSINE,          /* improved DDPM, diffusers' "squaredcos_cap_v2" (betas capped at 0.999) */
    DF_BETA_SIGMOID,         /* sigmoid(linspace(-6, 6)) mapped onto [beta_start, beta_end] */
    DF_BETA_COUNT
} df_beta_kind;

/* A fixed forward Markov chain q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I) and everything
 * derived from it, computed once in double precision. Index t runs 0..T-1 as in diffusers. */
struct df_schedule {
    int          T;
    df_beta_kind kind;
    double       beta_start, beta_end;
    int          zero_terminal_snr;   /* rescaled so that alphas_cumprod[T-1] = 0 (Lin et al. 2024, alg. 1) */
    /* arrays of T values, owned by the schedule */
    double *betas, *alphas, *alphas_cumprod, *alphas_cumprod_prev;   /* prev[0] = 1 */
    double *sqrt_alphas_cumprod, *sqrt_one_minus_alphas_cumprod;
    double *posterior_variance;              /* beta_t (1 - abar_{t-1}) / (1 - abar_t), DDPM eq. 7 */
    double *posterior_log_variance_clipped;  /* its log, with the t = 0 entry taking the t = 1 value */
    double *posterior_mean_coef1;            /* on x_0: sqrt(abar_{t-1}) beta_t / (1 - abar_t) */
    double *posterior_mean_coef2;            /* on x_t: sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) */
};

/* Fill a schedule (free it with df_schedule_free, which accepts a zeroed struct). beta_start and
 * beta_end are ignored by the cosine schedule. */
df_status df_schedule_init(df_schedule *s, df_beta_kind kind, int T, double beta_start, double beta_end,
                           int zero_terminal_snr);
/* DDPM's default: linear, T = 1000, 1e-4 to 0.02. */
df_status df_schedule_init_default(df_schedule *s);
void      df_schedule_free(df_schedule *s);
/* Names as in diffusers: "linear", "scaled_linear", "squaredcos_cap_v2" (also "cosine"), "sigmoid". */
df_status   df_beta_kind_parse(const char *name, df_beta_kind *kind);
const char *df_beta_kind_name(df_beta_kind kind);

/* Continuous-time view used by samplers that take fractional timesteps: sigma_t = sqrt((1 - abar_t) /
 * abar_t), with log(sigma) interpolated linearly between integer t (the interpolation diffusers'
 * _sigma_to_t inverts). df_schedule_t_for_sigma is its inverse (clamped to [0, T-1]). A zero last
 * abar (zero terminal SNR) stands in as min(2^-24, abar[T-2] / 2) here, so sigma stays finite. */
double df_schedule_alpha_bar(const df_schedule *s, double t);
double df_schedule_sigma(const df_schedule *s, double t);
double df_schedule_t_for_sigma(const df_schedule *s, double sigma);
double df_schedule_snr(const df_schedule *s, double t);   /* abar / (1 - abar) */

/* ---- the forward process, parameterisations and losses ---------------------------------------------- */

/* Arrays of n samples with `dim` values each; t holds one integer timestep per sample. */

/* q(x_t | x_0): x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise (DDPM eq. 4). */
void df_q_sample(const df_schedule *s, int n, size_t dim, const float *x0, const float *noise, const int *t,
                 float *xt);
/* One step of the chain, q(x_t | x_{t-1}): x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) noise. */
void df_q_step(const df_schedule *s, int n, size_t dim, const float *x_prev, const float *noise, const int *t,
               float *xt);
/* The posterior q(x_{t-1} | x_t, x_0) (DDPM eqs. 6-7): its mean, and per sample its variance and
 * clipped log variance (either may be NULL). */
void df_q_posterior(const df_schedule *s, int n, size_t dim, const float *x0, const float *xt, const int *t,
                    float *mean, double *var, double *logvar);

/* What the network predicts: the noise (diffusers "epsilon"), the clean sample ("sample") or
 * v = sqrt(abar) eps - sqrt(1 - abar) x_0 ("v_prediction", Salimans & Ho 2022). */
typedef enum { DF_PRED_EPSILON, DF_PRED_SAMPLE, DF_PRED_V, DF_PRED_COUNT } df_prediction;
df_status   df_prediction_parse(const char *name, df_prediction *p);
const char *df_prediction_name(df_prediction p);

/* Turn a network output into eps and x_0 (either may be NULL) given x_t and abar per sample. */
void df_pred_to_eps_x0(df_prediction p, int n, size_t dim, const float *xt, const double *abar, const float *out,
                       float *eps, float *x0);
/* The regression target of a parameterisation for x_t made from x0 and noise at t. */
void df_training_target(const df_schedule *s, df_prediction p, int n, size_t dim, const float *x0,
                        const float *noise, const int *t, float *target);
/* Per-sample loss weight: 1 with gamma 0, else min-SNR-gamma (Hang et al. 2023) expressed for the
 * parameterisation: min(SNR, gamma) / SNR (eps), min(SNR, gamma) (x_0), min(SNR, gamma) / (SNR + 1) (v). */
double df_loss_weight(const df_schedule *s, df_prediction p, int t, double min_snr_gamma);

/* EDM preconditioning (Karras et al. 2022, table 1, "EDM" column), with diffusers' EDMEulerScheduler
 * conventions: the network F sees x = x_0 + sigma n as F(c_in x; c_noise) and the denoiser is
 * D(x; sigma) = c_skip x + c_out F, with c_skip = s_d^2 / (sigma^2 + s_d^2), c_out = sigma s_d / sqrt(sigma^2 +
 * s_d^2), c_in = 1 / sqrt(sigma^2 + s_d^2), c_noise = ln(sigma) / 4 (the timestep the U-Net receives). Training
 * draws ln(sigma) ~ N(p_mean, p_std^2); EDM's weight (sigma^2 + s_d^2) / (sigma s_d)^2 on |D - x_0|^2 is unit
 * weight on F's target (x_0 - c_skip x) / c_out, so the loss is df_model_loss_grad's plain one. */
typedef struct {
    double sigma_data;      /* the data's standard deviation s_d (0.5) */
    double p_mean, p_std;   /* the training noise levels' log-normal (-1.2, 1.2) */
} df_edm_params;
void df_edm_params_default(df_edm_params *e);
typedef struct {
    double skip, out, in, noise;
} df_edm_coefs;
df_edm_coefs df_edm_precond(double sigma_data, double sigma);
/* n noise levels sigma = exp(p_mean + p_std z), z standard normal from rng. */
void df_edm_draw_sigmas(const df_edm_params *e, df_rng *rng, int n, double *sigma);
/* What one training batch feeds the network for x = x0 + sigma_i noise: x_in = c_in x, c_noise (n values, the
 * timesteps) and target = (x_0 - c_skip x) / c_out. */
void df_edm_training_inputs(double sigma_data, int n, size_t dim, const float *x0, const float *noise,
                            const double *sigma, float *x_in, float *c_noise, float *target);
/* The adapter between a sampler's VP view (x_t, fractional t of schedule s) and an EDM network: sigma =
 * df_schedule_sigma(s, t), x = x_t / sqrt(abar(t)). df_edm_sampler_inputs gives the network's x_in = c_in x and
 * c_noise (n values); df_edm_sampler_x0 turns its output F into x_0 = c_skip x + c_out F, an x_0
 * (DF_PRED_SAMPLE) prediction (x0 may be F). The default linear schedule of 1000 steps spans sigma 0.01 to
 * 157 (c_noise -1.15 to 1.26). */
void df_edm_sampler_inputs(const df_schedule *s, double sigma_data, int n, size_t dim, const float *xt,
                           const float *t, float *x_in, float *c_noise);
void df_edm_sampler_x0(const df_schedule *s, double sigma_data, int n, size_t dim, const float *xt, const float *t,
                       const float *F, float *x0);
/* ---- learned variances (improved DDPM, Nichol & Dhariwal 2021, sec. 3.1) ----------------------------------- */

/* A model with learned variances has out_channels = 2 x in_channels (diffusers' variance_type "learned_range"):
 * per image the first in_channels channels are the usual prediction, the rest v in [-1, 1], which sets the
 * reverse step's log variance to frac log beta_t + (1 - frac) log beta~_t with frac = (v + 1) / 2 (eq. 15):
 * beta~_t is the clipped posterior variance (posterior_log_variance_clipped) and beta_t the schedule's. */
double df_learned_log_variance(const df_schedule *s, int t, double v);

/* The hybrid objective L_simple + lambda L_vlb (sec. 3.1) of a learned-variance network's outputs, without
 * the network: out holds n samples of 2 dim values (the prediction in p's parameterisation, then v), x0, xt
 * and target n samples of dim values, t their timesteps. Per sample, simple_i = mean((pred_i - target_i)^2)
 * and vlb_i the bound's term at t_i in bits/dim (mean over the dims): KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} |
 * x_t)) for t > 0, the discretised decoder's -log p(x_0 | x_1) for t = 0 (as df_vlb_bpd), with p's mean made
 * from the prediction (not clipped) under a stop-gradient, so that L_vlb trains only the variance. The loss is
 * (1/n) sum_i weights_i (simple_weights_i simple_i + vlb_weight T vlb_i): T vlb_i is the one-term estimate of
 * the whole bound, so lambda = 0.001 at T = 1000 weights L_t by 1, as the paper's code does. weights (the
 * importance weights of sampled timesteps) and simple_weights (min-SNR) may be NULL for ones. dout (n samples
 * of 2 dim values, may be NULL) receives d loss / d out: the L_simple gradient on the prediction, the L_vlb
 * gradient (analytic, in double) on v. loss, simple and vlb (n values each) may be NULL. */
df_status df_hybrid_loss(const df_schedule *s, df_prediction p, int n, size_t dim, const float *x0, const float *xt,
                         const int *t, const float *target, const float *out, const float *weights,
                         const float *simple_weights, double vlb_weight, double *loss, float *simple, float *vlb,
                         float *dout);

/* ---- the reverse process ------------------------------------------------------------------------------ */

/* The network as samplers see it: out = f(x, t) for n samples of the caller's shape, t one (possibly
 * fractional) timestep per sample. What `out` means is the sampler's `prediction`. */
typedef df_status (*df_denoise_fn)(void *ctx, int n, const float *x, const float *t, float *out);

/* The variational bound (DDPM eq. 5; improved DDPM sec. 2) in bits per dimension for data in [-1, 1]
 * quantised to 256 levels: L_T (prior KL) + sum of the Gaussian KL terms + L_0 (discretised Gaussian
 * decoder). x0: n samples of dim values. bpd receives one value per sample; terms (T + 1 values, may
 * be NULL) the batch mean of each term in bits/dim: terms[0] = L_0, terms[t] = L_t, terms[T] = L_T.
 * variance_large picks beta_t as the reverse variance instead of the posterior variance; DF_VARIANCE_LEARNED
 * takes it from the network: fn then returns 2 dim values per sample, the prediction and v (see
 * df_learned_log_variance), the output of a model with learned variances. */
#define DF_VARIANCE_LEARNED 2
df_status df_vlb_bpd(const df_schedule *s, df_prediction p, df_denoise_fn fn, void *ctx, int n, size_t dim,
                     const float *x0, int variance_large, df_rng *rng, double *bpd, double *terms);

/* An unbiased estimate of the same bound (per sample, in bits/dim) from strata + 1 network calls instead of T:
 * L_T and L_0 exactly, and the sum of L_1 .. L_{T-1} by stratified sampling: t = 1 .. T-1 split into
 * `strata` equal ranges, each sample drawing its own t in each range, weighted by the range's size. With
 * strata >= T - 1 every term is computed once, as df_vlb_bpd does. */
df_status df_vlb_bpd_strata(const df_schedule *s, df_prediction p, df_denoise_fn fn, void *ctx, int n, size_t dim,
                            const float *x0, int variance_large, int strata, df_rng *rng, double *bpd);

typedef enum {
    DF_SAMPLER_DDPM,      /* ancestral sampling, DDPM alg. 2 (over any subset of timesteps) */
    DF_SAMPLER_DDIM,      /* Song et al. 2021 eq. 12 with eta */
    DF_SAMPLER_DPMPP_1S,  /* DPM-Solver++ first order (equivalent to DDIM eta 0) */
    DF_SAMPLER_DPMPP_2M,  /* DPM-Solver++(2M), Lu et al. 2022 alg. 2 */
    DF_SAMPLER_DPMPP_3M,  /* third-order multistep */
    DF_SAMPLER_EULER,     /* Karras et al. 2022 alg. 1 in sigma space */
    DF_SAMPLER_HEUN,      /* Karras et al. 2022 alg. 1 with the second-order correction */
    DF_SAMPLER_EULER_A,   /* Euler ancestral (diffusers' EulerAncestralDiscreteScheduler): noise every step */
    DF_SAMPLER_COUNT
} df_sampler_kind;

typedef enum { DF_SPACING_LEADING, DF_SPACING_LINSPACE, DF_SPACING_TRAILING, DF_SPACING_COUNT } df_spacing;

typedef struct {
    df_sampler_kind kind;
    int             steps;            /* number of denoising steps */
    df_spacing      spacing;          /* diffusers' timestep_spacing */
    double          eta;              /* DDIM: 0 deterministic, 1 ancestral */
    int             variance_large;   /* DDPM: beta_t ("fixed_large") instead of the posterior variance */
    int             learned_variance; /* the denoise function returns 2 dim values per sample, the prediction and
                                         v (df_learned_log_variance): DDPM steps with that variance (over a subset
                                         of timesteps, with the step's own beta, as diffusers' learned_range); the
                                         other samplers use the prediction alone */
    int             karras_sigmas;    /* Euler, Heun, DPM-Solver++: Karras sigma spacing (rho = 7) */
    df_prediction   prediction;       /* what the denoise function returns */
    int             clip_x0;          /* clamp predicted x_0 to [-clip_range, clip_range] */
    double          clip_range;
    int             dynamic_threshold;   /* Imagen: per sample, clamp x_0 at the dt_ratio quantile of |x_0| */
    double          dt_ratio, dt_max;    /* (at least 1, at most dt_max), then rescale */
    int             clipped_eps;      /* DDIM: step with the eps implied by the clipped or thresholded x_0
                                         (diffusers' use_clipped_model_output); needed for strong guidance */
    /* Called after every step with the new x_t and the current x_0 prediction (may be NULL). */
    void (*progress)(void *ctx, int step, int total, const float *x, const float *x0);
    void *progress_ctx;
} df_sampler_params;

/* DDIM, 50 steps, leading spacing, eta 0, epsilon prediction, no clipping, no progress. */
void        df_sampler_params_default(df_sampler_params *p);

/* What a sampler is, in one table the library and the command read (df_sampler_info). */
typedef enum { DF_NOISE_NONE, DF_NOISE_ALWAYS, DF_NOISE_ETA } df_noise_use;
typedef struct {
    const char  *name;          /* "ddpm", "ddim", "dpmpp-1s", "dpmpp-2m", "dpmpp-3m", "euler", "heun", "euler_a" */
    const char  *summary;       /* one line for --help */
    int          sigma_space;   /* steps in sigma = sqrt((1 - abar) / abar): Karras sigmas apply */
    int          scaled_x;      /* holds x_t / sqrt(abar) between steps (Karras et al.'s VE form) */
    int          order;         /* order of the update (multistep: at most; lower at the ends) */
    int          history;       /* earlier x_0 predictions it keeps (multistep) */
    int          calls;         /* network calls per step (Heun: one fewer on the last) */
    int          buffers;       /* batch-sized float buffers a run holds besides x */
    df_noise_use noise;         /* draws noise at every step, only with eta > 0, or never */
    const char  *aliases;       /* other spellings users know ("dpm++2m, k_dpmpp_2m"), comma-separated; "" none */
} df_sampler_info;
/* The row of kind k, or NULL for a kind out of range. */
const df_sampler_info *df_sampler_info_get(df_sampler_kind k);

/* A sampler by its name or an alias, ignoring case, '+' read as 'p' ("dpm++2m" is "dpmpp-2m") and '-', '_'
 * and spaces ignored ("DPM++ 2M", "Euler a" and "k_euler_a" are accepted). */
df_status   df_sampler_parse(const char *name, df_sampler_kind *k);
const char *df_sampler_name(df_sampler_kind k);
/* Spacings "leading", "linspace", "trailing". */
df_status   df_spacing_parse(const char *name, df_spacing *sp);
const char *df_spacing_name(df_spacing sp);

/* The timesteps a sampler visits, from noisiest to cleanest (steps values, as floats because Karras
 * spacing gives fractional ones). */
df_status df_sampler_timesteps(const df_schedule *s, const df_sampler_params *p, float *t);

/* Generate n samples of dim values: x is filled with N(0, I) and run down the reverse chain. rng is a
 * key, not a sequence: sample i draws all its noise (its start and every stochastic step) from stream
 * rng->stream + i of rng->seed, and rng->stream then advances by n, so a loop over batches with one rng
 * gives every sample the same noise as one call for all of them. The same holds for the calls below. */
df_status df_sample(const df_schedule *s, const df_sampler_params *p, df_denoise_fn fn, void *ctx, int n,
                    size_t dim, df_rng *rng, float *x);
/* The same from a given starting point: x holds x_T (unit variance) on entry. */
df_status df_sample_from(const df_schedule *s, const df_sampler_params *p, df_denoise_fn fn, void *ctx, int n,
                         size_t dim, df_rng *rng, float *x);

/* Image-to-image (SDEdit, Meng et al. 2022): noise x_in to the timestep at `strength` (0..1) of the
 * sampler's schedule, then denoise the remaining steps. */
df_status df_img2img(const df_schedule *s, const df_sampler_params *p, df_denoise_fn fn, void *ctx, int n,
                     size_t dim, const float *x_in, double strength, df_rng *rng, float *out);
/* Inpainting (RePaint, Lugmayr et al. 2022): where mask is 1 the known values are kept (noised to the
 * current step by the forward process), the rest is generated. jump_length and jump_n_sample > 1 turn
 * on resampling (go back jump_length steps, jump_n_sample times); 1 and 1 turn it off. DDPM-style
 * steps are used whatever p->kind says. mask has dim values shared by all samples. */
df_status df_inpaint(const df_schedule *s, const df_sampler_params *p, df_denoise_fn fn, void *ctx, int n,
                     size_t dim, const float *known, const float *mask, int jump_length, int jump_n_sample,
                     df_rng *rng, float *out);
/* DDIM inversion: run the deterministic DDIM ODE from x_0 up to x_T; sampling from it with DDIM (eta 0)
 * and the same steps returns x_0. */
df_status df_ddim_invert(const df_schedule *s, const df_sampler_params *p, df_denoise_fn fn, void *ctx, int n,
                         size_t dim, const float *x0, float *xT);

/* The forward process as a picture: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps of one image (c, h, w) at
 * n timesteps (0: x_0 itself), all with one noise sample eps drawn from seed, side by side on white, with
 * "t=..." under each tile when labels is set and it fits. *strip is malloc'd, (c, *sh, *sw). */
#define DF_NOISE_STRIP_MAX_STEPS 64
#define DF_NOISE_STRIP_MAX_WIDTH 65536
df_status df_noise_strip(const df_schedule *s, const float *x0, int c, int h, int w, const int *steps, int n,
                         uint64_t seed, int labels, float **strip, int *sh, int *sw);
long      df_noise_strip_width(int n, int h, int w);   /* the strip's width in pixels */

/* ---- a data set with an exact noise predictor: Gaussian mixtures ---------------------------------------- */

/* K components in D dimensions. A sample of `dim` values holds dim / D independent D-vectors; vector j
 * has its components at j, j + dim/D, j + 2 dim/D... (so an image (C, H, W) with D = C is a picture
 * whose pixel colours are drawn from the mixture). */
typedef struct {
    int     K, D;
    double *weight;   /* K, summing to 1 */
    double *mean;     /* K x D */
    double *cov;      /* K x D x D, symmetric positive definite */
} df_gmm;

df_status df_gmm_init(df_gmm *g, int K, int D);   /* zeroed weights and means, identity covariances */
void      df_gmm_free(df_gmm *g);
/* count vectors (count * D values, vector-major: v0 d0, v0 d1, ...) and, if comp is not NULL, their
 * components. */
void df_gmm_sample_vectors(const df_gmm *g, df_rng *rng, size_t count, double *v, int *comp);
/* n samples of dim values in the layout above. */
void df_gmm_sample(const df_gmm *g, df_rng *rng, int n, size_t dim, float *x);

/* The exact noise predictor of the mixture under a schedule: for x_t ~ sum_k w_k N(sqrt(abar) mu_k,
 * abar S_k + (1 - abar) I), eps(x_t) = -sqrt(1 - abar) grad log p_t(x_t). Pass a df_gmm_denoiser as
 * the ctx of df_gmm_denoise. `prediction` picks the output (eps, x_0 or v) so every parameterisation
 * can be tested. Fractional t use df_schedule_alpha_bar. */
typedef struct {
    const df_gmm      *gmm;
    const df_schedule *schedule;
    size_t             dim;
    df_prediction      prediction;
} df_gmm_denoiser;
df_status df_gmm_denoise(void *ctx, int n, const float *x, const float *t, float *out);

/* The mixture's components as classes: label k < K predicts as if x_0 came from component k alone, label K
 * (the null class) as the whole mixture (a df_class_denoise_fn; ctx a df_gmm_denoiser). */
df_status df_gmm_class_denoise(void *ctx, int n, const float *x, const float *t, const int *labels, float *out);
/* The exact noisy classifier: log p(y | x_t) for y = labels[i] < K (summed over a sample's vectors) and its
 * gradient with respect to x_t (a df_classifier_fn). */
df_status df_gmm_classify(void *ctx, int n, const float *x, const float *t, const int *labels, double *logp,
                          float *grad);

/* ---- guidance ---------------------------------------------------------------------------------------- */

/* A noise predictor that takes class labels (n values; a model's null class means "no class"). */
typedef df_status (*df_class_denoise_fn)(void *ctx, int n, const float *x, const float *t, const int *labels,
                                         float *out);
/* A noisy classifier: log p(y = labels[i] | x_t) into logp (n values) and its gradient with respect to x_t
 * into grad (n samples); either may be NULL when not wanted. */
typedef df_status (*df_classifier_fn)(void *ctx, int n, const float *x, const float *t, const int *labels,
                                      double *logp, float *grad);

/* Classifier-free guidance (Ho & Salimans 2022): out = u + w (c - u), c the prediction for the requested
 * labels and u for the null label, from one call of twice the batch (w = 1 calls once, conditionally).
 * rescale phi in [0, 1] blends in the output rescaled to the conditional one's standard deviation (Lin et
 * al. 2024). With a schedule set, only samples whose noise level sigma(t) lies in (sigma_lo, sigma_hi] are
 * guided and the others get c (Kynkäänniemi et al. 2024: guidance at high noise levels costs variety, at low
 * ones it does little); a call with no sample in the interval is one conditional call of the normal batch.
 * Use as a sampler's denoise function with ctx = the struct; set labels (n values matching the sampler's
 * batch), scale, rescale and the interval before sampling. */
typedef struct {
    df_class_denoise_fn fn;
    void               *ctx;
    size_t              dim;
    int                 null_label;
    const int          *labels;
    double              scale, rescale;
    const df_schedule  *schedule;            /* NULL (the default): guide at every t */
    double              sigma_lo, sigma_hi;  /* the interval, with a schedule (default 0 and INFINITY) */
    /* owned scratch for the doubled batch */
    int    cap;
    float *x2, *t2, *out2;
    int   *l2;
} df_classifier_free_guidance;
df_status df_classifier_free_guidance_init(df_classifier_free_guidance *g, df_class_denoise_fn fn, void *ctx,
                                           size_t dim, int null_label);   /* scale 1 */
void      df_classifier_free_guidance_free(df_classifier_free_guidance *g);
/* Room for batches of up to n (grown on demand otherwise), so that sampling allocates nothing. */
df_status df_classifier_free_guidance_reserve(df_classifier_free_guidance *g, int n);
df_status df_classifier_free_guidance_denoise(void *ctx, int n, const float *x, const float *t, float *out);

/* Classifier guidance (Dhariwal & Nichol 2021): shift each step by the scaled gradient of log p(y | x_t).
 * The default is their Algorithm 2, eps_hat = eps - sqrt(1 - abar_t) s grad, valid for every sampler.
 * ddpm_mean selects Algorithm 1 for the DDPM sampler: the step's mean moves by s Sigma grad exactly (give
 * the sampler's timesteps, from df_sampler_timesteps, and its variance choice). fn's output is in
 * `prediction`'s parameterisation and is returned in it. */
typedef struct {
    df_denoise_fn      fn;
    void              *ctx;
    df_classifier_fn   classify;
    void              *classify_ctx;
    const df_schedule *schedule;
    df_prediction      prediction;
    size_t             dim;
    const int         *labels;
    double             scale;
    int                ddpm_mean, large_variance;
    const float       *timesteps;
    int                nsteps;
    /* owned scratch */
    int     cap;
    float  *grad;
    double *logp;
} df_classifier_guidance;
df_status df_classifier_guidance_init(df_classifier_guidance *g, df_denoise_fn fn, void *ctx,
                                      df_classifier_fn classify, void *classify_ctx, const df_schedule *s,
                                      df_prediction prediction, size_t dim);   /* scale 1, Algorithm 2 */
void      df_classifier_guidance_free(df_classifier_guidance *g);
df_status df_classifier_guidance_reserve(df_classifier_guidance *g, int n);   /* as for the above */
df_status df_classifier_guidance_denoise(void *ctx, int n, const float *x, const float *t, float *out);

/* ---- images ------------------------------------------------------------------------------------------ */

/* Read a PNG or JPEG (recognised by content) into a malloc'd (C, H, W) float array in [-1, 1].
 * channels 0 keeps the file's colour (gray -> 1, colour -> 3; alpha is composited on black), 1 or 3
 * converts. Corrupt files, and images over 16384 pixels a side, are refused with a message. */
df_status df_image_load(const char *path, int channels, int *c, int *h, int *w, float **pixels);
/* Resize (C, H, W) to (C, oh, ow): an optional centre crop to the target's aspect ratio, then area
 * averaging when shrinking and bilinear interpolation when growing. */
df_status df_image_resize(const float *in, int c, int h, int w, int oh, int ow, int center_crop, float *out);
/* Write (C, H, W) values in [-1, 1] (clamped) as an 8-bit PNG, gray for C = 1, RGB for C = 3;
 * written atomically. */
df_status df_image_save_png(const char *path, const float *x, int c, int h, int w);
/* The same with one uncompressed text chunk: key (1 to 79 Latin-1 characters) and text; NULL key: none.
 * `diffuse sample` writes its settings under "parameters", the key Stable Diffusion tools read. */
df_status df_image_save_png_text(const char *path, const float *x, int c, int h, int w, const char *key,
                                 const char *text);
/* Write (C, H, W) values in [-1, 1] (clamped) as a baseline JPEG (libjpeg) of `quality` 1..100 (0: DF_JPEG_QUALITY),
 * gray for C = 1, colour for C = 3 with full-resolution chroma; comment (may be NULL; at most 65533 bytes) goes
 * in a COM marker. Written atomically. */
#define DF_JPEG_QUALITY 95
df_status df_image_save_jpeg(const char *path, const float *x, int c, int h, int w, int quality, const char *comment);
/* Either format by the path's extension: .jpg or .jpeg (any case) is JPEG of `quality` with the text in its
 * comment (the key is not written), anything else PNG with a text chunk of that key (NULL key: no text). */
df_status df_image_save(const char *path, const float *x, int c, int h, int w, int quality, const char *key,
                        const char *text);
/* Lay n images (N, C, H, W) out as one (C, gh, gw) grid of `cols` columns with `pad` pixels of border;
 * out must hold c * gh * gw values; pass out = NULL to ask for the size only. */
void df_image_grid(const float *x, int n, int c, int h, int w, int cols, int pad, float *out, int *gh, int *gw);
/* An animated GIF of frames (F, C, H, W) in [-1, 1], delay_ms per frame, the last one held hold_ms,
 * looping forever. Gray stays exact; colour is quantised to 256 colours. Written atomically. */
df_status df_image_save_gif(const char *path, const float *frames, int nframes, int c, int h, int w, int delay_ms,
                            int hold_ms);
/* n images (N, C, H, W) as one PNG grid of `cols` columns (at most n) with a white border of `pad` pixels
 * between and around the tiles. */
df_status df_image_save_grid(const char *path, const float *x, int n, int c, int h, int w, int cols, int pad);
df_status df_image_save_grid_text(const char *path, const float *x, int n, int c, int h, int w, int cols, int pad,
                                  const char *key, const char *text);
/* n images as dir/000000.png, dir/000001.png, ... (dir and its parents are created); with key and text,
 * image i carries a text chunk of that key that text(ctx, i, ...) writes (up to 2047 bytes). */
df_status df_image_save_each(const char *dir, const float *x, int n, int c, int h, int w, const char *key,
                             void (*text)(void *ctx, int i, char *buf, size_t cap), void *ctx);
/* The same in a format: ext "png", or "jpg" / "jpeg" (dir/000000.jpg... of `quality`, as df_image_save). */
df_status df_image_save_each_as(const char *dir, const char *ext, int quality, const float *x, int n, int c, int h,
                                int w, const char *key, void (*text)(void *ctx, int i, char *buf, size_t cap),
                                void *ctx);

/* NumPy .npy arrays of images (what `diffuse sample --npy` writes and `diffuse eval` reads). */
#define DF_NPY_MAX_IMAGES 10000000   /* N in a file the reader takes; H and W are at most DF_MAX_SIZE */

/* Write n images (N, C, H, W) in [-1, 1] as a NumPy .npy array of uint8 (N, H, W, C), values
   round((x + 1) * 127.5) clamped to 0..255 (NaN as 0), what `diffuse sample --npy` writes. Atomic.
   n is 1..DF_NPY_MAX_IMAGES, h and w 1..DF_MAX_SIZE, c 1..DF_MAX_CHANNELS (the reader takes 1 or 3). */
df_status df_npy_save_images(const char *path, const float *x, int n, int c, int h, int w);

/* Read images from a .npy: dtype uint8 ('|u1', values 0..255) or float32/float64 little-endian
   ('<f4', '<f8', values in [0, 1]), C order, shape (N, H, W) (gray) or (N, H, W, C) with C 1 or 3.
   Returns a malloc'd (N, C, H, W) float array in [-1, 1] (*x, free with free()) and the sizes.
   Anything else is refused with one line naming the file; then *x is NULL and the sizes 0. */
df_status df_npy_load_images(const char *path, float **x, int *n, int *c, int *h, int *w);
/* The same on bytes in memory (the caller keeps them); `name` names them in messages (for the fuzzer). */
df_status df_npy_load_images_memory(const void *buf, size_t len, const char *name, float **x, int *n, int *c, int *h,
                                    int *w);


/* ---- data sets --------------------------------------------------------------------------------------- */

/* Images held in memory as 8-bit (N, C, H, W), with optional labels and class names. */
typedef struct df_dataset df_dataset;

/* Fashion-MNIST as Debian's dataset-fashion-mnist installs it (the training split). */
#define DF_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

/* Open a data set by what `path` is:
 * - "fashion-mnist" (or "fashion-mnist:test"): Debian's Fashion-MNIST, with its ten class names;
 * - an IDX image file (idx3-ubyte, gzipped or not): MNIST-format, with labels from the matching
 *   "...labels-idx1-ubyte" file beside it when there is one;
 * - a CIFAR-10 binary batch (data_batch_N.bin / test_batch.bin) or the directory holding them (all
 *   data_batch_*.bin), with batches.meta.txt's class names when present;
 * - a directory of PNG/JPEG images, recursively; one subdirectory per class gives labels (classes in name
 *   order, or in numeric order when every class folder is named by a non-negative integer: 0, 1, ..., 10).
 * size > 0 resizes every image to size x size (centre crop, then area/bilinear); channels 1 or 3
 * converts, 0 keeps the data's own. An unreadable image in a folder is refused, naming it (as
 * df_dataset_load with strict set). */
df_status df_dataset_open(const char *path, int size, int channels, df_dataset **out);
void      df_dataset_free(df_dataset *d);

/* How df_dataset_load reads a data set. */
typedef struct {
    int size, channels;   /* as df_dataset_open's: 0 keeps the data's own */
    int strict;           /* 1: an unreadable image in a folder is an error naming it; 0 (the default): it is
                             left out and counted in the load report (a folder with no readable image is
                             still an error) */
} df_dataset_params;
void      df_dataset_params_default(df_dataset_params *p);
/* df_dataset_open with the settings above (p NULL: the defaults); what loading found is in
 * df_dataset_get_report(*out). */
df_status df_dataset_load(const char *path, const df_dataset_params *p, df_dataset **out);

/* What loading a data set found: counts, images converted to fit, unreadable images skipped. */
#define DF_DATASET_NAMED 3   /* skipped images named in a report */
typedef struct {
    char source[256];     /* the path as given ("fashion-mnist"), or a data set from memory's description */
    int  images, classes; /* as loaded: df_dataset_count and df_dataset_num_classes */
    int  c, h, w;         /* each image as loaded (df_dataset_shape) */
    int  converted;       /* images whose size or pixel format changed to fit: resized, gray <-> RGB, alpha
                             composited on black, a palette expanded, 16 bits or CMYK reduced */
    char converted_example[256];   /* the first of them, relative to the data's path ("cats/a.png", "image 0") */
    char converted_from[64];       /* what it was: "64x48 RGB", "28x28 16-bit gray", "32x32 palette" */
    int  skipped;         /* unreadable images left out (folders loaded without strict) */
    char skipped_name[DF_DATASET_NAMED][256];   /* the first min(skipped, DF_DATASET_NAMED), relative to the path */
    char skipped_why[DF_DATASET_NAMED][160];    /* and why: "not a PNG or JPEG file", "corrupt PNG: ..." */
} df_dataset_report;
/* The report of d's loading; valid as long as d is. */
const df_dataset_report *df_dataset_get_report(const df_dataset *d);

/* The report as sentences, one per kind: DF_DATASET_NOTE_COUNTS "data: 60000 images, 10 classes
 * (fashion-mnist)", DF_DATASET_NOTE_CONVERTED "converted 37 of 1200 images to 28x28 gray, e.g. cats/a.png
 * (64x48 RGB)", DF_DATASET_NOTE_SKIPPED "skipped 2 unreadable images: a.png (not a PNG or JPEG file), ...".
 * Writes one into buf (truncated to cap) and returns 1, or writes "" and returns 0 when that kind has
 * nothing to say (nothing converted, nothing skipped). `diffuse train` prints them as the run starts. */
typedef enum {
    DF_DATASET_NOTE_COUNTS,
    DF_DATASET_NOTE_CONVERTED,
    DF_DATASET_NOTE_SKIPPED,
    DF_DATASET_NOTE_COUNT
} df_dataset_note;
int df_dataset_report_note(const df_dataset_report *r, df_dataset_note which, char *buf, size_t cap);

int         df_dataset_count(const df_dataset *d);
void        df_dataset_shape(const df_dataset *d, int *c, int *h, int *w);
/* A data set of n images (N, C, H, W) in [-1, 1] held in memory (stored as 8 bits, like every loaded image),
 * with labels 0 .. num_classes - 1 (num_classes 0: none, labels may be NULL). desc may be NULL. */
df_status df_dataset_from_images(const float *x, const int *labels, int n, int c, int h, int w, int num_classes,
                                 const char *desc, df_dataset **out);

int         df_dataset_num_classes(const df_dataset *d);   /* 0: no labels */
int         df_dataset_label(const df_dataset *d, int i);
const char *df_dataset_class_name(const df_dataset *d, int k);   /* NULL if unnamed */
/* Captions of image i (an image folder's: metadata.jsonl, one JSON object per line with "file_name" and "text",
 * a caption or a list of them, as diffusers' train_text_to_image reads it; or a .txt beside each image, a caption
 * per line): how many (0: none), and caption k (NULL past them). Captions are checked to be UTF-8 text. */
int         df_dataset_num_captions(const df_dataset *d, int i);
const char *df_dataset_caption(const df_dataset *d, int i, int k);
const char *df_dataset_description(const df_dataset *d);        /* e.g. "Fashion-MNIST train, 60000 ..." */
/* Image i as floats in [-1, 1], mirrored left-right if flip. */
void        df_dataset_get(const df_dataset *d, int i, int flip, float *x);

/* ---- optimisation ------------------------------------------------------------------------------------- */

typedef enum { DF_OPT_ADAMW, DF_OPT_SGD, DF_OPT_COUNT } df_optimizer_kind;
typedef enum { DF_LR_CONSTANT, DF_LR_COSINE, DF_LR_LINEAR, DF_LR_COUNT } df_lr_decay;

typedef struct {
    df_optimizer_kind kind;
    double      lr;              /* peak learning rate */
    double      beta1, beta2;    /* AdamW moment decays */
    double      eps;             /* AdamW denominator term */
    double      weight_decay;    /* decoupled (AdamW) or L2 added to the gradient (SGD) */
    double      momentum;        /* SGD (heavy ball, PyTorch's form) */
    int         nesterov;        /* SGD */
    long        warmup_steps;    /* linear warmup from 0; negative: unset (df_train chooses it from the
                                    budget; df_optimizer_init refuses it) */
    df_lr_decay decay;           /* after warmup: constant, cosine or linear to 0 at total_steps */
    long        total_steps;     /* 0: training's budget in steps; for a budget in minutes only, the step
                                    where the budget ends at the speed of the steps after the warmup */
    double      grad_clip;       /* max global gradient norm; 0 turns clipping off */
} df_optim_params;

/* diffusers' train_unconditional defaults: AdamW, lr 1e-4, betas 0.95 / 0.999, eps 1e-8, weight decay
 * 1e-6, 500 warmup steps, cosine decay, gradient clipping at norm 1. */
void df_optim_params_default(df_optim_params *p);

/* Optimizer state for n parameters: moments in blocks with the parameters' layout. */
typedef struct {
    df_optim_params p;
    size_t n;
    long   step;      /* optimizer steps taken */
    float *m, *v;     /* AdamW: first and second moments; SGD: m is the momentum buffer, v unused */
} df_optimizer;

df_status df_optimizer_init(df_optimizer *o, const df_optim_params *p, size_t n);
void      df_optimizer_free(df_optimizer *o);
double    df_optimizer_lr(const df_optim_params *p, long step);   /* learning rate at a step (0-based) */
/* One update of params from grads (grads are clipped in place first when grad_clip > 0). Returns the
 * gradient's global norm before clipping through *grad_norm (may be NULL). */
void      df_optimizer_step(df_optimizer *o, float *params, float *grads, double *grad_norm);

/* Exponential moving average of the weights with diffusers' EMAModel warmup: decay at update k is
 * 1 - (1 + k / inv_gamma)^-power, clamped to [0, max_decay] (k counts from 0, so the first update copies). */
typedef struct {
    double inv_gamma, power, max_decay;
    long   updates;
} df_ema;
void   df_ema_init(df_ema *e, double inv_gamma, double power, double max_decay);   /* 1, 0.75, 0.9999 */
double df_ema_decay(const df_ema *e);   /* the decay the next update will use */
void   df_ema_update(df_ema *e, float *ema, const float *params, size_t n);

/* ---- pipelines: a model with its noise schedule ------------------------------------------------------------ */

/* diffusers' DDPMScheduler config (scheduler/scheduler_config.json), the fields that matter here. */
typedef struct {
    df_beta_kind  beta_schedule;
    int           num_train_timesteps;
    double        beta_start, beta_end;
    int           zero_terminal_snr;   /* rescale_betas_zero_snr */
    df_prediction prediction;          /* prediction_type; DF_PRED_SAMPLE for an EDM model (what its denoiser gives) */
    double        edm_sigma_data;      /* > 0: an EDM model (EDMEulerScheduler, saved with prediction_type
                                          "epsilon" as diffusers means it there); the beta fields above stay
                                          the VP schedule its samplers run on */
    int           learned_variance;    /* variance_type "learned_range" (else "fixed_small"): the model's
                                          out_channels are 2 x in_channels (Nichol & Dhariwal 2021) */
} df_scheduler_config;

void      df_scheduler_config_default(df_scheduler_config *c);   /* linear, 1000, 1e-4, 0.02, epsilon */
df_status df_scheduler_config_load(const char *path, df_scheduler_config *c);
df_status df_scheduler_config_save(const df_scheduler_config *c, const char *path);   /* atomic */
df_status df_schedule_from_config(const df_scheduler_config *c, df_schedule *s);

typedef struct df_text_encoder df_text_encoder;   /* see the text encoder below */
typedef struct df_tokenizer df_tokenizer;         /* see the tokenizer below */

/* Load what `path` names: a run directory (its latest checkpoint), a checkpoint or diffusers pipeline
 * directory (unet/ and scheduler/scheduler_config.json), or a bare model directory (config.json +
 * weights; the schedule then defaults to DDPM's). raw = 1 picks unet_raw/ (the trained, not averaged,
 * weights) when present. sc may be NULL. */
df_status df_pipeline_load(const char *path, int raw, df_model **model, df_scheduler_config *sc);
/* Write model_index.json, unet/ and scheduler/ into dir (created if needed). */
df_status df_pipeline_save(const char *dir, const df_model *model, const df_scheduler_config *sc);

/* A text-to-image pipeline folder: unet/ (UNet2DConditionModel) and scheduler/ as above, text_encoder/
 * (CLIPTextModel) and tokenizer/ (CLIPTokenizer), each loadable on its own as its diffusers or transformers
 * class; model_index.json names the pipeline "DiffuseTextToImagePipeline" (pixel space, no VAE, as Imagen's
 * and DeepFloyd IF's; diffusers has no class for it). This loads the text half, checked against the U-Net
 * (the encoder's width is its cross_attention_dim, the tokenizer's context fits the encoder's positions and
 * its ids the encoder's vocabulary); path as df_pipeline_load takes it. */
df_status df_text_pipeline_load(const char *path, const df_model *unet, df_text_encoder **encoder,
                                df_tokenizer **tokenizer);
/* df_pipeline_save, then text_encoder/ and tokenizer/, and the text pipeline's model_index.json. */
df_status df_text_pipeline_save(const char *dir, const df_model *unet, const df_scheduler_config *sc,
                                const df_text_encoder *encoder, const df_tokenizer *tokenizer);
/* n prompts -> states (n, context, hidden_size) for df_generate's texts: tokenized (padded to the context;
 * longer prompts cut as CLIP cuts them, *truncated counting those, may be NULL) and encoded in one batch. */
df_status df_encode_prompts(df_text_encoder *encoder, const df_tokenizer *tokenizer, int n, const char *const *prompts,
                            float *states, int *truncated);

/* What a run directory's latest checkpoint (or a checkpoint directory) says about its training; found = 0
 * and nothing else set when path holds no training state. Numbers not recorded are -1 (loss: NAN). */
typedef struct {
    int    found;
    long   step, images;
    int    epoch, batch;
    double loss_avg;
    char   data[512];   /* the training data's description */
} df_training_summary;
df_status df_training_summary_load(const char *path, df_training_summary *s);

/* What a class-conditional model's classes are: count (its num_class_embeds, 0 if unconditional; a
 * classifier's classifier_classes), the null class used for unconditional predictions (-1 if it has
 * none) and names (NULL, or count entries, the null class's being "(none)"), from the pipeline's
 * classes.json when there is one. */
typedef struct {
    int    count, null_class;
    char **names;
} df_class_info;
df_status df_class_info_load(const char *path, const df_model *model, df_class_info *ci);
/* Write dir/classes.json (atomic). names may be NULL. */
df_status df_class_info_save(const char *dir, const df_class_info *ci);
void      df_class_info_free(df_class_info *ci);
/* A class by number or name: a whole number is the class's index (0 .. count - 1); anything else one of the
 * names, ignoring case and with '_' for ' ' ("ankle_boot" finds "Ankle boot"). DF_ERR_ARG when it is
 * neither, the message listing the names, or saying that ci has none. */
df_status df_class_info_find(const df_class_info *ci, const char *text, int *index);
/* Whether a classifier (for guidance or scoring) sees a model's classes: its count must be the model's, or
 * the model's but the null class, and where both have names they must agree class by class (the null class
 * aside). DF_OK also when either side has no names (nothing to compare); else DF_ERR_CONFIG with the counts,
 * or the classes that differ: "class names differ: 3 \"Dress\" against \"Frock\"" (the model's name first).
 * A model with no classes (count 0) matches any classifier. */
df_status df_class_info_match(const df_class_info *model, const df_class_info *classifier);

/* ---- text files of lines (prompt files, caption files) ---------------------------------------------------- */

/* The non-blank lines of a UTF-8 text file: split at '\n', trailing '\r', spaces and tabs dropped, blank lines
 * skipped. A file holding a NUL byte or invalid UTF-8 is DF_ERR_FORMAT naming it. lines[0 .. n) point into
 * text; free both with df_lines_free. */
typedef struct {
    char  *text;
    char **lines;
    int    n;
} df_lines;
df_status df_lines_read(const char *path, df_lines *out);
void      df_lines_free(df_lines *l);

/* ---- text: CLIP's tokenizer ------------------------------------------------------------------------------ */

/* CLIP's byte-level BPE tokenizer, read from a folder in transformers' CLIPTokenizer layout: vocab.json
 * (token -> id) and merges.txt (a "#version" line, then one merge "a b" per line, the most frequent first;
 * transformers reads at most 48,894), and when present tokenizer_config.json then special_tokens_map.json
 * for the special tokens (bos, eos, unk, pad: default <|startoftext|>, <|endoftext|> for the other three) and
 * "model_max_length" (the context, default 77). Text is cleaned as transformers' CLIPTokenizer does without
 * ftfy: NUL, U+FFFD and control characters dropped, whitespace runs to one space, spaces around CJK
 * ideographs, NFC, lower case (Python's str.lower); then CLIP's pre-tokenizer pattern, bytes to GPT-2's
 * byte symbols, merges by rank. The special tokens' exact text in a prompt stays one token each. */

df_status   df_tokenizer_load(const char *dir, df_tokenizer **out);
/* The four files back, as transformers writes them (vocab.json, merges.txt with its "#version" line,
 * tokenizer_config.json, special_tokens_map.json); a saved tokenizer loads as the same one. */
df_status   df_tokenizer_save(const df_tokenizer *t, const char *dir);
void        df_tokenizer_free(df_tokenizer *t);
int         df_tokenizer_context(const df_tokenizer *t);      /* tokens per text, start and end included */
int         df_tokenizer_vocab_size(const df_tokenizer *t);   /* the largest id + 1 */
const char *df_tokenizer_token(const df_tokenizer *t, int id);   /* an id's token, NULL if none */

/* text (UTF-8) -> ids[0 .. df_tokenizer_context(t)): the start token, the text's tokens, the end token, then
 * the padding token, as CLIPTokenizer(text, padding="max_length", truncation=True) gives them (a text of
 * more than context - 2 tokens loses the rest). *length: the tokens before the padding; *dropped: the
 * tokens cut off (either may be NULL). Invalid UTF-8 fails (DF_ERR_ARG) naming the first bad byte. */
df_status df_tokenize(const df_tokenizer *t, const char *text, int32_t *ids, int *length, int *dropped);

/* ---- text: CLIP's text encoder --------------------------------------------------------------------------- */

/* Activations by the names configs give them. */
typedef enum {
    DF_ACT_GELU,         /* "gelu": x Phi(x) */
    DF_ACT_GELU_TANH,    /* "gelu_new", "gelu_pytorch_tanh": its tanh approximation */
    DF_ACT_QUICK_GELU,   /* "quick_gelu" (OpenAI's CLIP): x sigmoid(1.702 x) */
    DF_ACT_COUNT
} df_act;

/* transformers' CLIPTextConfig (config.json of a CLIPTextModel folder). */
typedef struct {
    int    vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads;
    int    max_position_embeddings;   /* the longest text */
    int    projection_dim;            /* kept for the file; CLIPTextModel has no projection */
    df_act hidden_act;
    float  layer_norm_eps, initializer_factor, initializer_range;
    int    bos_token_id, eos_token_id, pad_token_id;
} df_text_config;

/* transformers' defaults: 49408 tokens, 512 wide, 2048 in the MLP, 12 layers of 8 heads, 77 positions,
 * quick GELU, LayerNorm eps 1e-5; bos/eos/pad 49406/49407/1. */
void      df_text_config_default(df_text_config *c);
/* Reads config.json; values the encoder does not support (another activation, attention dropout, a model
 * type other than clip_text_model) are refused by name. */
df_status df_text_config_load(const char *path, df_text_config *c);
df_status df_text_config_save(const df_text_config *c, const char *path);   /* atomically */

/* transformers' CLIPTextModel: token and position embeddings, pre-LayerNorm encoder layers of causal
 * self-attention (q_proj, k_proj, v_proj, out_proj) and an MLP (fc1, activation, fc2), a final LayerNorm;
 * parameters under transformers' names (text_model.embeddings.token_embedding.weight, ...). */

/* New weights as transformers initialises them (normal, standard deviations from the sizes; biases 0). */
df_status df_text_encoder_create(const df_text_config *c, uint64_t seed, df_text_encoder **out);
/* A folder as transformers writes it: config.json and model.safetensors (its position_ids buffer, which
 * older versions save, is ignored). */
df_status df_text_encoder_load(const char *dir, df_text_encoder **out);
df_status df_text_encoder_save(const df_text_encoder *e, const char *dir);
void      df_text_encoder_free(df_text_encoder *e);
const df_text_config *df_text_encoder_config(const df_text_encoder *e);
size_t    df_text_encoder_num_params(const df_text_encoder *e);
float    *df_text_encoder_params(df_text_encoder *e);   /* the weights, in table order */
float    *df_text_encoder_grads(df_text_encoder *e);    /* their gradients, added to by backward */
void      df_text_encoder_set_threads(df_text_encoder *e, int n);   /* 0: the caller's OpenMP default */
/* The parameter table, as df_model_tensor_info: tensor i's name, shape and offset into params and grads. */
int         df_text_encoder_num_tensors(const df_text_encoder *e);
const char *df_text_encoder_tensor_info(const df_text_encoder *e, int i, int *ndim, int shape[4], size_t *offset);
int         df_text_encoder_find_tensor(const df_text_encoder *e, const char *name);   /* -1 if absent */

/* ids (n, L) with 1 <= L <= max_position_embeddings, each below vocab_size -> hidden (n, L, hidden_size), the
 * model's last_hidden_state; pooled (n, hidden_size) or NULL: the state at each text's end token (the
 * first eos_token_id, or the largest id when eos_token_id is 2, as transformers picks it). */
df_status df_text_encode(df_text_encoder *e, int n, int L, const int32_t *ids, float *hidden, float *pooled);
/* Room for n texts of L tokens, forward and backward, so that the calls after it allocate nothing. */
df_status df_text_encoder_reserve(df_text_encoder *e, int n, int L);
/* After df_text_encode: adds d(loss)/d(weights) into the gradients, given dhidden = d(loss)/d(hidden),
 * (n, L, hidden_size). */
df_status df_text_encoder_backward(df_text_encoder *e, const float *dhidden);

/* ---- generation ---------------------------------------------------------------------------------------- */

/* What df_generate reports after every sampler step. */
typedef struct {
    int          first, n;      /* the batch: images first .. first + n - 1 of the call */
    int          step, steps;   /* the batch's step (1-based) and its number of steps */
    long         done, total;   /* steps over the whole call (batches x steps) */
    const float *x;             /* the batch's x_t after the step */
    const float *x0;            /* its current prediction of x_0 (may be NULL) */
} df_generate_step;

/* Everything one generation needs. Start from df_generate_params_default and set model, schedule and n. */
typedef struct {
    df_model          *model;      /* the noise predictor */
    const df_schedule *schedule;   /* the schedule it was trained with (df_schedule_from_config) */
    double             edm_sigma_data;   /* an EDM model's (df_scheduler_config), 0 otherwise; the sampler then
                                            sees x_0 predictions whatever sampler.prediction says */
    df_sampler_params  sampler;    /* kind, spacing, eta, clipping...; steps 0: 50 (DDPM: T); prediction: the
                                      model's; its progress callback is not used (on_step is) */
    int      n, batch;             /* images, and images per network call (0: 64) */
    int      h, w;                 /* image size (0: the model's sample_size, or 32); any multiple of 2^(levels -
                                      1) up to DF_MAX_SIZE, not only the size the model was trained at */
    uint64_t seed;                 /* image k draws all its noise from stream first_index + k of seed, so it */
    uint64_t first_index;          /* is the same whatever n, batch, guidance or how a run is split, up to the
                                      network's float rounding, which changes with the batch's size (to
                                      regenerate image k bit for bit, see df_generate_images) */
    /* conditioning */
    const int *labels;             /* n class labels for a class-conditional model, or NULL: its classes (or the
                                      classifier's) but the null one, image k getting class k * K / n */
    int        null_class;         /* the model's null class (df_class_info), -1 if none */
    const float *texts;            /* a text-conditioned model (UNet2DConditionModel): n_texts text states
                                      (n_texts, text_len, cross_attention_dim), df_text_encode's. They take the
                                      place of classes: labels pick each image's text (NULL: text k * K / n,
                                      K the texts but the null one), and null_class is the row of the empty
                                      text, the unconditional branch of guidance */
    int          n_texts, text_len;
    double     guidance;           /* classifier-free guidance scale (1: plain conditional, 0: unconditional) */
    double     guidance_rescale;   /* in [0, 1] (Lin et al. 2024) */
    double     guidance_sigma_lo;  /* guide only where sigma(t) is in (lo, hi] (Kynkäänniemi et al. 2024), */
    double     guidance_sigma_hi;  /* on the model's schedule; default 0 and INFINITY: every step */
    df_model  *classifier;         /* classifier guidance (Dhariwal & Nichol) with a noise-aware classifier */
    double     classifier_scale;
    int        model_eps;          /* DDIM steps with the network's eps even when guiding; by default a guided
                                      run steps with the eps implied by the clipped x_0 (sampler.clipped_eps) */
    /* editing: one image of the output's shape, used for every output image */
    const float *init_image;       /* image-to-image (SDEdit) from this image noised to `strength` in (0, 1] */
    double       strength;
    const float *inpaint_image;    /* inpainting (RePaint): keep this image where mask (h x w, shared by the */
    const float *mask;             /* channels) is 1, generate where it is 0; DDPM's step */
    int          jump_length, jump_n;   /* RePaint's resampling (1 1: off) */
    /* reporting */
    void (*on_step)(void *ctx, const df_generate_step *s);
    void         *ctx;
    volatile int *stop;            /* set non-zero to stop at the next network call (an error is returned) */
} df_generate_params;

void df_generate_params_default(df_generate_params *p);
/* The defaults, then what a loaded pipeline says about sampling it (df_pipeline_load, df_schedule_from_config):
 * model, schedule, the sampler's prediction type and an EDM model's sigma_data. Forgetting the last two draws
 * noise from a v-prediction or EDM model; this sets them together. schedule must outlive p. */
void df_generate_params_for(df_generate_params *p, df_model *model, const df_scheduler_config *sc,
                            const df_schedule *schedule);
/* 1 if guiding only at sigma in (sigma_lo, sigma_hi] leaves some noise level unguided (not 0, INFINITY). */
int df_guidance_interval_limits(double sigma_lo, double sigma_hi);
/* Labels for n images from a list of k: image i gets list[i * k / n], so with n a multiple of k each entry
 * has a run of n / k images (a row of a grid). What df_generate does with the classes when labels is NULL. */
void df_spread_labels(const int *list, int k, int n, int *labels);
/* The labels df_generate gives n images when p->labels is NULL: the classes 0 .. count - 1 but null_class
 * (-1: none), spread with df_spread_labels. Returns how many classes that is; labels (n values) may be NULL
 * to ask only that. count is the model's classes (num_class_embeds), or the classifier's when an
 * unconditional model is guided by one (whose null_class is then -1). */
int df_default_labels(int count, int null_class, int n, int *labels);
/* A seed from the operating system (getrandom, or /dev/urandom), below 2^32 as other tools' random seeds
 * are. For a caller that wants different images each run; record it to make them again. */
df_status df_random_seed(uint64_t *seed);
/* Generate p->n images into x (n x in_channels x h x w, values in about [-1, 1]). Batches, guides, edits and
 * reports; every buffer is sized before the first step, and the model reserves its largest batch once. */
df_status df_generate(const df_generate_params *p, float *x);
/* Images first .. first + count - 1 of the run p describes into x (count images), each bit for bit what
 * df_generate(p) writes for it (same thread count). The batches holding them run whole, as df_generate runs
 * them, because the network's float rounding depends on the batch's size; only the images asked for are
 * kept. So image k alone costs its batch. Labels (p->labels, or the default ones) are the run's: p->n of them.
 * on_step reports the batches run (done and total count only those). df_generate(p, x) is
 * df_generate_images(p, 0, p->n, x). */
df_status df_generate_images(const df_generate_params *p, int first, int count, float *x);
/* DDIM inversion (Song et al. 2021, eq. 14 run upwards; see df_ddim_invert) of p->n images x0 (n x in_channels x
 * h x w, in [-1, 1]) into the noise that DDIM turns back into them: noise (same shape). With recon not NULL, that
 * noise is then sampled back down into recon, the reconstruction (off from x0 by the ODE's discretisation error:
 * more steps, less error: about 0.05 RMSE at 50 steps, 0.025 at 100 on Fashion-MNIST). p's model, schedule, n,
 * batch, h, w, labels (a class-conditional model should get the images' classes), sampler steps and spacing are
 * used; the sampler is DDIM with eta 0 whatever its kind says, and x_0 is neither clipped nor thresholded (the
 * way up could not undo it). Guidance, a classifier and edits are refused. on_step reports the inversion's steps,
 * then the reconstruction's (total counts both). */
df_status df_invert(const df_generate_params *p, const float *x0, float *noise, float *recon);
/* Noise (N, C, H, W) as a safetensors file: the F32 tensor "noise", with `parameters` (may be NULL) under that
 * key in its metadata. Written atomically. */
df_status df_noise_save(const char *path, const float *noise, int n, int c, int h, int w, const char *parameters);

/* ---- training ------------------------------------------------------------------------------------------ */

enum { DF_TIMESTEPS_UNIFORM, DF_TIMESTEPS_IMPORTANCE, DF_TIMESTEPS_COUNT };

/* What a training run reports to its progress callback. */
typedef struct {
    long        step, total_steps;    /* optimizer steps done, and the budget (0 if set by time) */
    int         epoch;
    double      loss;                 /* this step's loss, and an exponential average */
    double      loss_avg;
    double      loss_quarter[4];      /* average loss per quarter of the timestep range, since the last log */
    double      lr, grad_norm;
    double      images_per_sec, elapsed, eta;   /* seconds; eta < 0 if unknown */
    const char *event;                /* NULL, or what just happened ("checkpoint ...", "samples ...",
                                         "step N skipped: ...") */
    long        nonfinite_skipped;    /* steps skipped so far for a non-finite loss or gradient (the run's total) */
    /* Once the data has loaded, before training: what loading found, with the counts line as the event
     * (df_dataset_report_note), then one report per further note (converted or skipped images) with data
     * NULL. Valid during the call only. */
    const df_dataset_report *data;
} df_train_progress;

typedef struct {
    /* data */
    const char *data;             /* df_dataset_open path (default "fashion-mnist") */
    int         image_size;       /* 0: the model's sample_size (or the data's size) */
    int         flip;             /* random horizontal flips */
    int         strict_data;      /* refuse a folder with an unreadable image instead of skipping it (df_dataset_params) */
    /* model: exactly one of preset / config_path / init_dir, unless resuming */
    const char *preset, *config_path, *init_dir;
    /* diffusion */
    df_beta_kind  beta_schedule;
    int           num_train_timesteps;
    double        beta_start, beta_end;
    int           zero_terminal_snr;
    df_prediction prediction;
    double        min_snr_gamma;  /* 0: plain L_simple */
    int           edm;            /* EDM preconditioning and noise levels (Karras et al. 2022) instead of the
                                     DDPM objective; prediction must be epsilon and min_snr_gamma 0; the model
                                     saves as an EDMEulerScheduler pipeline (df_scheduler_config) */
    df_edm_params edm_params;
    /* improved DDPM (Nichol & Dhariwal 2021): learn_variance doubles the model's out_channels and trains the
     * hybrid loss L_simple + vlb_weight L_vlb (df_hybrid_loss; default weight 0.001); timestep_sampling
     * DF_TIMESTEPS_IMPORTANCE (needs learn_variance) draws t with p_t ~ sqrt(E[L_vlb,t^2]) over the last 10
     * values of each t (uniformly until every t has 10; mixed with 0.001 uniform), weighting each sample's
     * loss by 1 / (T p_t) (sec. 3.3). The history is training state: a checkpoint keeps it. */
    int           learn_variance;
    double        vlb_weight;
    int           timestep_sampling;   /* DF_TIMESTEPS_UNIFORM or DF_TIMESTEPS_IMPORTANCE */
    /* classes: class_conditional makes a preset or config model class-conditional on the data's labels,
     * with num_class_embeds = classes + 1, the last being the null class ("no class"). class_dropout is
     * the probability that a training label is replaced by the null class, so one model learns both the
     * conditional and the unconditional prediction (what classifier-free guidance needs); it requires a
     * null class (num_class_embeds above the data's classes). Defaults: 0 and 0. */
    int           class_conditional;
    double        class_dropout;
    /* text (text-to-image): text_conditional trains a UNet2DConditionModel on the data's captions
     * (df_dataset_caption; every image needs one, and an image with several shows one per epoch, drawn from
     * (seed, epoch, image) alone). A preset or config becomes one (df_unet_config_text, cross_attention_dim
     * wide: 0 is the text encoder's width, 128 for a new one); an init_dir model must be one, and its pipeline
     * folder's text_encoder/ and tokenizer/ are used unless these name others. tokenizer: a CLIPTokenizer
     * folder (required unless init_dir has one). text_encoder: a CLIPTextModel folder to start from; else new
     * weights from text_config (a CLIPTextConfig config.json) or, NULL, 2 layers as wide as cross_attention_dim
     * with 32-wide heads and positions for the tokenizer's context. The encoder trains with the U-Net (the same
     * optimizer, gradient norm and EMA) unless freeze_text_encoder. caption_dropout: the probability that an
     * image trains with the empty text, the unconditional prediction classifier-free guidance needs (default
     * 0.1). Grids show sample_prompts (NULL: the first captions of the data's first images), a row each; the
 * checkpoints keep them (sample_prompts.txt) and a resumed run given none goes on with them. Evaluation during
 * training draws each image from the first caption of a training image, spread evenly over the data.
     * Checkpoints are DiffuseTextToImagePipeline folders (df_text_pipeline_save) with text_encoder_raw/. */
    int           text_conditional;
    const char   *tokenizer, *text_encoder, *text_config;
    int           cross_attention_dim;
    int           freeze_text_encoder;
    double        caption_dropout;
    const char *const *sample_prompts;
    int           n_sample_prompts;
    /* optimisation */
    df_optim_params optim;
    int         batch_size, grad_accum;
    int         use_ema;
    double      ema_max_decay, ema_power, ema_inv_gamma;
    /* budget: stop at the first limit reached (0 = none; at least one must be set unless resuming). On
     * resume a budget is the run's new total, counted from its start (max_minutes: the training time of
     * all its sessions, which the training state records); one already reached fails with DF_ERR_ARG. With
     * none, the run finishes the budget it recorded, and one that already finished reports so in a progress
     * event and returns DF_OK, writing nothing. */
    long        max_steps;
    int         max_epochs;
    double      max_minutes;
    /* output */
    const char *out_dir;
    int         resume;           /* continue from out_dir/latest: the model, data, diffusion, optimizer
                                     (learning-rate schedule included), EMA, batch and seed settings are the
                                     run's and these fields are ignored; the budget, output, sampling,
                                     evaluation and logging fields are taken as given
                                     (df_train_params_resume sets them to the run's last ones) */
    long        save_every;       /* checkpoint every N steps (and at the end) */
    long        sample_every;     /* sample grid every N steps (0: only at the end) */
    int         sample_count, sample_steps;
    int         keep_checkpoints; /* how many to keep (the newest) */
    long        log_every;        /* CSV row and progress callback every N steps */
    uint64_t    seed;
    /* A step whose loss or gradients hold NaN or Inf never reaches the weights. With nonfinite_skip 0 (the
     * default) the run stops there with DF_ERR_ARG and a message naming the step, and nothing is written
     * after the last good step: out_dir/latest still names the last checkpoint. With nonfinite_skip N > 0
     * such a step is skipped instead (its batch is used up, but the weights, optimizer moments and EMA are
     * left as they were; the step still counts towards the budget), reported as a progress event and a
     * loss.csv row, and the run stops with an error only after more than N such steps in a row. */
    int         nonfinite_skip;
    /* Evaluation during training: every eval_every steps (0: never) and at the end, eval_n images from the
     * EMA weights (DDIM, eval_steps steps, the same noise each time) are scored with the feature network
     * eval_features against eval_ref (a data set): FD and KID go into loss.csv (columns fd, kid, eval_sec)
     * and out_dir/progress.png. Its time is reported apart (eval_sec) and not counted against max_minutes
     * or in elapsed_sec. Defaults: 500 images, 25 steps, "fashion-mnist:test". */
    long        eval_every;
    int         eval_n, eval_steps;
    const char *eval_features, *eval_ref;
    void (*progress)(void *ctx, const df_train_progress *p);
    void *progress_ctx;
    /* Set to non-zero (from a signal handler, say) to save a checkpoint and return DF_OK after this step. */
    volatile int *stop;
} df_train_params;

/* Defaults: fashion-mnist, preset fmnist-s, linear schedule T 1000, epsilon, no EDM (df_edm_params_default's
 * settings ready for it), batch 64, AdamW defaults
 * with the warmup unset (-1: 10% of the budget, at most 500 steps; for a budget in minutes, of the steps
 * the first step's speed allows; the chosen length is reported as a progress event before training, and a
 * budget that ends inside a warmup given explicitly as a "warning: ..." event), EMA (0.9999, power 0.75), checkpoint every 1000 steps, samples every 1000, 64 samples with 50 DDIM
 * steps, keep 2 checkpoints, log every 10 steps, seed 0, out_dir "runs/fmnist-s". */
void df_train_params_default(df_train_params *p);

/* Train. Writes out_dir/checkpoint-NNNNNNN/ directories (a diffusers DDPMPipeline directory: unet/ with
 * the EMA weights, unet_raw/ with the trained weights, scheduler/, model_index.json, and
 * training_state.safetensors + training_state.json for --resume), a symlink out_dir/latest switched
 * atomically, out_dir/loss.csv (a row every log_every steps: step, epoch, loss, loss_avg, loss_q0..q3, lr, grad_norm,
 * images_per_sec, elapsed_sec, images, fd, kid, eval_sec), out_dir/progress.png (the loss by timestep quarter
 * and FD against images seen) and out_dir/samples/. A resumed run continues bit for bit as if never
 * stopped (same thread count). Epoch e reads the images in an order that is a function of (seed, e)
 * alone (the same order df_classifier_train reads).
 * Faults: a checkpoint is written whole into checkpoint-NNNNNNN.tmp/ (every write, flush and close
 * checked, files and directories synced) and only then renamed into place and named by `latest`, so a
 * crash, a kill or a full disk at any moment leaves `latest` naming a whole checkpoint; a failed write
 * returns DF_ERR_IO naming the file and the checkpoint kept. Leftover *.tmp entries of an interrupted
 * run are removed when a run starts in out_dir. */
df_status df_train(const df_train_params *p);

/* What df_train_params_resume copies a run's paths into; it must outlive the df_train call. */
typedef struct {
    char eval_features[4096], eval_ref[4096];
} df_train_paths;
/* Make p resume the run in out_dir (resume = 1, out_dir kept as given, so it must outlive p's use): the
 * settings a resumed run may change (checkpoints, sample grids, logging, nonfinite_skip, evaluation) become
 * those of the run's last session, so a caller sets only what it wants changed before df_train. The budget
 * and the rest of p are left alone (df_train reads the settings a run keeps from its checkpoint). A state
 * written before sessions were recorded leaves p as it is. DF_ERR_IO when out_dir holds no run. */
df_status df_train_params_resume(df_train_params *p, const char *out_dir, df_train_paths *paths);

/* ---- comparing training runs by their evaluations ------------------------------------------------------ */

/* One evaluation row of a run's loss.csv (a row whose fd is filled: train --eval-every N). */
typedef struct {
    long   step;       /* -1 when the log has no step column */
    double images;     /* images seen (NaN when the log has no images column or the field is empty) */
    double minutes;    /* training minutes: elapsed_sec / 60, which leaves evaluation time out; a log whose
                          elapsed_sec starts again from zero (a resume before the time was carried over)
                          counts on from where it was. NaN without elapsed_sec */
    double fd, kid;    /* kid NaN when empty */
} df_run_eval;

/* A run's evaluation rows in the order of its log. rows belongs to the struct (df_run_evals_free). */
typedef struct {
    char         label[256];   /* what the run is called in tables and legends */
    char         path[4096];   /* the loss.csv read */
    df_run_eval *rows;
    int          n;
} df_run_evals;
void df_run_evals_free(df_run_evals *r);   /* frees rows and zeroes *r; accepts NULL */

/* Read the evaluation rows of one run: `run` is a run directory (its loss.csv is read) or a loss.csv path.
 * The log is read as progress.png reads it: columns by the header's names, event rows, empty fields and a
 * torn last line skipped. label NULL: the run directory's last path component. A log with no evaluation
 * row is DF_ERR_FORMAT "RUN: no evaluation rows in loss.csv: train with --eval-every N". */
df_status df_run_evals_read(const char *run, const char *label, df_run_evals *out);

/* The x axis runs are compared along. */
typedef enum {
    DF_COMPARE_MINUTES,   /* training minutes: runs of different speeds compare at equal cost */
    DF_COMPARE_IMAGES,    /* images seen: the same at equal data, whatever the machine */
    DF_COMPARE_AXIS_COUNT
} df_compare_axis;
const char *df_compare_axis_name(df_compare_axis a);   /* "minutes", "images" */

typedef struct {
    df_compare_axis    by;
    const char *const *labels;   /* one per run, or NULL: each run's directory's last path component */
    int                kid;      /* a KID panel under the FD panel, when some run has KID values */
    int                width, height;   /* pixels; 0: 900 wide, 560 high (820 with the KID panel) */
    const char        *title;    /* NULL: "FD against training minutes" (or "images seen") */
} df_compare_params;
void df_compare_params_default(df_compare_params *p);   /* minutes, the KID panel, default size and title */

/* Compare nruns training runs (each as df_run_evals_read takes it) by their evaluations: with png_path not
 * NULL, draw FD (log scale) against p->by, a line with markers per run in legend order, and under it KID
 * when p->kid, into a PNG written to a temporary name and renamed into place (never half a file). With evals
 * not NULL (nruns entries) the rows of each run are handed back, to be freed with df_run_evals_free. Every
 * run is read before anything is drawn: on any error nothing is written and evals are left empty. p may be
 * NULL (defaults). Comparing by images needs the images column in every log (DF_ERR_FORMAT naming the run
 * otherwise), by minutes the elapsed_sec column. */
df_status df_compare_runs(const char *const *runs, int nruns, const df_compare_params *p, const char *png_path,
                          df_run_evals *evals);

/* ---- classifiers ----------------------------------------------------------------------------------- */

/* Predicted classes (pred, n values) of images at timesteps t (NULL: clean images, t = 0); with correct
 * not NULL, pred holds the true classes instead and *correct counts the images classified right. Any n:
 * the network sees at most 100 images at a time. */
df_status df_classifier_predict(df_model *m, int n, int h, int w, const float *x, const float *t, int *pred,
                                int *correct);
/* The classes' probabilities (softmax of the logits; n x classifier_classes values) of images at timesteps t
 * (NULL: clean images). */
df_status df_classifier_probs(df_model *m, int n, int h, int w, const float *x, const float *t, float *probs);

typedef struct {
    long   step, total_steps;
    int    epoch;
    double loss, loss_avg, accuracy_avg;   /* training batches, moving averages */
    double images_per_sec, elapsed, eta;
    /* NULL, or a note before training (then images_per_sec is 0): what loading the data found, as
     * df_train_progress's data and event are */
    const char              *event;
    const df_dataset_report *data;
} df_classifier_progress;

typedef struct {
    const char *data;          /* df_dataset_open path, with labels (default "fashion-mnist") */
    int         strict_data;   /* refuse a folder with an unreadable image instead of skipping it (df_dataset_params) */
    const char *eval_data;     /* optional: accuracy on clean images of this set at the end */
    double     *eval_accuracy; /* where that accuracy goes */
    const char *preset, *config_path;   /* the U-Net whose encoder half is used (default preset fmnist-s) */
    const char *init_dir;      /* or continue training this classifier (same classes); the optimizer starts afresh */
    int         noise_aware;   /* 1: images noised to uniform random timesteps (for guidance); 0: clean */
    int         batch_size;
    long        max_steps;
    double      max_minutes;
    double      lr, weight_decay;
    uint64_t    seed;
    long        log_every;
    const char *out_dir;       /* a model directory: config.json (with _classifier_classes), weights, classes.json */
    /* For programs: train on images in memory (dataset, overriding data), on a config given as a struct
     * (config, overriding preset and config_path), and hand the model back (model_out: the caller frees
     * it; out_dir may then be NULL to write nothing). */
    const df_dataset     *dataset;
    const df_unet_config *config;
    df_model            **model_out;
    void (*progress)(void *ctx, const df_classifier_progress *p);
    void *progress_ctx;
    volatile int *stop;
} df_classifier_train_params;

/* fashion-mnist, fmnist-s, noise-aware, batch 64, AdamW lr 3e-4 (warmup 100, cosine over max_steps),
 * weight decay 0.05, log every 20 steps, out_dir "runs/classifier". */
void      df_classifier_train_params_default(df_classifier_train_params *p);
/* Train on df_train's loop: the same data order for a seed, random flips, and a NaN or Inf loss or
 * gradient stops the run with DF_ERR_ARG before it reaches the weights. Progress comes every log_every
 * steps, at the first and at the last. */
df_status df_classifier_train(const df_classifier_train_params *p);

/* ---- evaluation: the field's metrics on feature vectors --------------------------------------------------- */

/* Feature vectors are (n, d) float32 rows, from a df_feature_net or any network of the caller's. */

/* Mean and covariance (divisor n - 1, as numpy.cov) of n vectors of d values, in double. */
typedef struct {
    int     d;
    long    n;
    double *mu;      /* d */
    double *sigma;   /* d x d, row-major, symmetric */
} df_fstats;
df_status df_fstats_compute(const float *f, long n, int d, df_fstats *s);
void      df_fstats_free(df_fstats *s);   /* accepts a zeroed struct */

/* The Fréchet distance between N(mu_a, S_a) and N(mu_b, S_b), FID's formula (Heusel et al. 2017):
 * |mu_a - mu_b|^2 + tr S_a + tr S_b - 2 tr((S_a S_b)^(1/2)), the last trace taken as tr((R S_b R)^(1/2))
 * with R = S_a^(1/2), from symmetric eigendecompositions (LAPACK): real and exact for covariances.
 * Statistics of no more vectors than dimensions (a singular covariance) are refused with a message. */
df_status df_frechet_distance(const df_fstats *a, const df_fstats *b, double *fd);
/* The Fréchet distance of n generated vectors to reference statistics, and its bootstrap standard error
 * over the generated set: the spread of the distance over `resamples` draws of n vectors with
 * replacement (0 resamples: no error, se may be NULL). */
df_status df_fd_bootstrap(const float *gen, long n, int d, const df_fstats *ref, int resamples, df_rng *rng,
                          double *fd, double *se);

/* KID (Bińkowski et al. 2018): the unbiased estimate of the squared MMD between the two sets with the
 * kernel k(x, y) = (x.y / d + 1)^3, on `subsets` random subsets of min(subset_size, ng, nr) vectors drawn
 * without replacement from each set; *mean and *std are over the subsets (as the paper reports). *se (may
 * be NULL) is the standard error over the generated set: the jackknife of the estimate on all vectors. */
df_status df_kid(const float *gen, long ng, const float *ref, long nr, int d, int subsets, int subset_size,
                 df_rng *rng, double *mean, double *std, double *se);

/* Improved precision and recall (Kynkäänniemi et al. 2019): each set's manifold is the union of balls
 * around its vectors reaching their k-th nearest neighbour in the same set; precision is the share of the
 * generated vectors inside the real manifold, recall the share of the real vectors inside the generated
 * one. Distances in double precision. */
df_status df_precision_recall(const float *real, long nr, const float *gen, long ng, int d, int k, double *precision,
                              double *recall);

/* ---- evaluation: feature networks and reference features ------------------------------------------------- */

/* A network mapping images to feature vectors: a classifier made by train-classifier (the pooled activations
 * its linear head reads), or Inception-v3 as FID uses it (2048-d pool3 features of images resized to 299). */
typedef struct df_feature_net df_feature_net;
/* path: a classifier's model directory, or an Inception-v3 .safetensors file with pytorch-fid's tensor
 * names (scripts/fid_inception_to_safetensors.py makes one). A diffusion model (no feature layer) is
 * refused. The network's hash is the SHA-256 of its weights file (what sha256sum prints). */
df_status   df_feature_net_load(const char *path, df_feature_net **out);
void        df_feature_net_free(df_feature_net *f);
int         df_feature_net_dim(const df_feature_net *f);
const char *df_feature_net_sha256(const df_feature_net *f);
const char *df_feature_net_name(const df_feature_net *f);   /* e.g. "classifier (10 classes, 128-d features)" */
const char *df_feature_net_path(const df_feature_net *f);
df_model   *df_feature_net_classifier(df_feature_net *f);   /* the classifier, or NULL for Inception */
/* DF_OK if the network takes images of c channels and h x w pixels (Inception: any size, gray or RGB). */
df_status   df_feature_net_check_input(const df_feature_net *f, int c, int h, int w);
/* Features (n, dim) of n images (N, C, H, W) in [-1, 1]. */
df_status   df_feature_net_features(df_feature_net *f, int n, int c, int h, int w, const float *x, float *feats);

/* A reference set's features with their statistics, and the hashes that say what they belong to. */
typedef struct {
    long      n, limit;        /* vectors; limit > 0: the first `limit` images of the data were used */
    int       d;
    float    *feats;           /* (n, d) */
    df_fstats stats;
    char      net_sha256[65], data_sha256[65];   /* the feature network's weights file; the data (df_dataset) */
    char      desc[256];       /* the data's description */
} df_ref_features;
/* Features of the first `limit` images of d (all if limit <= 0). progress (may be NULL) is called with a
 * stage name, done and total. */
df_status df_ref_features_compute(df_feature_net *f, const df_dataset *d, long limit, df_ref_features *r,
                                  void (*progress)(void *ctx, const char *stage, double done, double total), void *ctx);
/* The same through a cache file next to the network, named by the data's hash: used only when the network
 * and data hashes it records both match (then *cached = 1), else computed and written there when the
 * directory is writable (*cached = 2; 0 if it is not). */
df_status df_ref_features_get(df_feature_net *f, const df_dataset *d, long limit, df_ref_features *r, int *cached,
                              void (*progress)(void *ctx, const char *stage, double done, double total), void *ctx);
/* A safetensors file: "features" (n, d) F32 with the hashes in its metadata. Written atomically. */
df_status df_ref_features_save(const df_ref_features *r, const char *path);
df_status df_ref_features_load(const char *path, df_ref_features *r);
df_status df_ref_features_load_memory(const void *buf, size_t len, const char *name, df_ref_features *r);
/* DF_OK if r was computed with the network f; else a message naming both hashes. */
df_status df_ref_features_check(const df_ref_features *r, const df_feature_net *f, const char *path);
void      df_ref_features_free(df_ref_features *r);   /* accepts a zeroed struct */

/* ---- evaluation as one call --------------------------------------------------------------------------------- */

typedef enum {
    DF_METRIC_FD,    /* Fréchet distance of features to the reference's */
    DF_METRIC_KID,   /* kernel distance (KID) */
    DF_METRIC_PR,    /* precision and recall (k nearest neighbours) */
    DF_METRIC_CAS,   /* classification accuracy score: a classifier trained on generated images, tested on real */
    DF_METRIC_BPD,   /* negative log-likelihood bound in bits/dim on real images */
    DF_METRIC_ACC,   /* how often a classifier sees the class asked for */
    DF_METRIC_CLASSES,   /* what a classifier sees, labels or not: the share of images it is sure of (its top
                            probability at least the confidence threshold: garments, not blobs) and the
                            share of each class among its top picks (a mix unlike the data's shows) */
    DF_METRIC_COUNT
} df_metric;
const char *df_metric_name(df_metric m);                  /* "fd", "kid", "pr", "cas", "bpd", "acc", "classes" */
df_status   df_metrics_parse(const char *text, unsigned *mask);   /* "fd,kid" -> bits (1 << DF_METRIC_*) */

typedef struct {
    /* what is scored: exactly one of a model (n images are sampled), images on disk (a folder of PNG/JPEG,
     * with a subfolder per class giving labels, or a .npy), or images in memory (N, C, H, W) in [-1, 1] */
    const char  *model;
    int          raw;                 /* the model's trained, not averaged, weights */
    const char  *images;
    const float *image_data;
    const int   *image_labels;        /* may be NULL */
    int          image_count, image_c, image_h, image_w;
    /* sampling a model: n images in batches, from noise seeded `seed` (as diffuse sample draws them) */
    int               n, batch;
    uint64_t          seed;
    df_sampler_params sampler;        /* steps 0: 50 (DDPM: the training timesteps); prediction from the model */
    double            guidance;       /* classifier-free guidance scale for a conditional model (1: none) */
    double            guidance_sigma_lo, guidance_sigma_hi;   /* its interval (df_generate_params; 0, INFINITY) */
    const int        *labels;         /* classes to draw, each for an equal run of images (NULL: every class) */
    int               nlabels;
    /* the reference and the networks */
    const char *ref;                  /* a data set (default "fashion-mnist:test") or a reference-features file */
    long        ref_limit;            /* use the first N reference images (0: all) */
    const char *features;             /* the feature network (df_feature_net_load) */
    const char *classifier;           /* acc, classes: a noise-free classifier (default: the feature network) */
    double      confidence;           /* classes: the top probability an image must reach to count as sure (0.5) */
    unsigned    metrics;              /* bits 1 << DF_METRIC_* (default fd, kid, pr) */
    int         bootstrap;            /* FD resamples for its standard error (100; 0 or 1: none) */
    int         kid_subsets, kid_subset_size;   /* 100, 1000 */
    int         pr_k;                 /* 3 */
    /* CAS: cas_per_class generated images of each class train a classifier (cas_config, or the feature
     * network's architecture) for cas_epochs epochs; it is tested on cas_test (default: ref); the same
     * classifier trained on as many images of cas_train (default "fashion-mnist") is the baseline */
    int         cas_per_class, cas_epochs;       /* 500, 10 */
    const char *cas_config, *cas_test, *cas_train;
    /* bits/dim on the first bpd_n images of bpd_data (default: ref), with all T terms or, with
     * bpd_timesteps K > 0, the stratified estimate from K + 1 network calls per image. bpd_state (may be
     * NULL) is a file that keeps the values done: a stopped run given it again goes on from there. */
    const char *bpd_data;
    int         bpd_n, bpd_timesteps;             /* 1000, 0 */
    const char *bpd_state;
    const char *save_images;          /* also write the scored images as a uint8 .npy (may be NULL) */
    /* progress: a stage name, done and total (total may be 1 for a stage without steps) */
    void (*progress)(void *ctx, const char *stage, double done, double total);
    void *progress_ctx;
    volatile int *stop;               /* set non-zero to stop early (an error is returned) */
} df_eval_params;

/* 1000 images, DDIM 50 steps with x_0 clipping, batch 100, seed 0, reference fashion-mnist:test, fd, kid
 * and pr; no feature network (the caller names one). */
void df_eval_params_default(df_eval_params *p);

#define DF_EVAL_MAX_CLASSES 256
typedef struct {
    int    have;          /* computed */
    double value, se;     /* se: the standard error, NaN where there is none */
    double spread;        /* KID: the standard deviation over subsets */
    long   n;             /* images it was computed on */
    double seconds;
} df_eval_value;

typedef struct {
    df_eval_value fd, kid, precision, recall, cas, cas_real, bpd, acc;
    df_eval_value confident;          /* classes: the share of images the classifier is sure of */
    int    nclasses;                  /* classes: the classifier's classes (at most DF_EVAL_MAX_CLASSES) */
    double class_share[DF_EVAL_MAX_CLASSES];   /* and the share of the images it puts in each */
    int   n;                          /* images scored */
    long  n_ref;                      /* reference feature vectors */
    int   kid_subset_size, bpd_timesteps, bpd_resumed;   /* bpd_resumed: images taken from the state file */
    int   ref_cached;                 /* reference features: 1 read from the cache, 2 computed and cached */
    df_sampler_params sampler;        /* the settings sampled with */
    char  feature_net[96], feature_path[4096], feature_sha256[65], ref_desc[300], classifier[4096], bpd_data[256];
    double sample_seconds, feature_seconds, seconds;
} df_eval_result;

/* Evaluate as p says. Every metric asked for is computed or the call fails with a message. */
df_status df_evaluate(const df_eval_params *p, df_eval_result *r);
/* FD (and KID, when asked) of p->n images from each sampler at each number of steps (p's other sampler
 * settings kept): results[k * nsteps + s]; plot_path (may be NULL): a PNG of FD against network
 * evaluations per image, a line per sampler. */
df_status df_eval_sweep(const df_eval_params *p, const df_sampler_kind *kinds, int nkinds, const int *steps, int nsteps,
                        df_eval_result *results, const char *plot_path);
/* The feature metrics of p->metrics (fd, kid, pr) for n feature vectors against a reference, with p's
 * settings (bootstrap, KID subsets, k, seed): what df_evaluate does after sampling. */
df_status df_eval_features(df_feature_net *f, const df_ref_features *ref, const float *feats, long n, unsigned metrics,
                           const df_eval_params *p, df_eval_result *r);
/* The share of n images (N, C, H, W) that a classifier assigns to their labels (what acc is). */
df_status df_eval_accuracy(df_model *classifier, const float *x, int n, int h, int w, const int *labels, double *acc);
/* Check a bits/dim state file's text against a run's settings and read its values (for the fuzzer). */
df_status df_bpd_state_check_memory(const char *text, size_t len, const char *path, const char *model_sha,
                                    const char *data_sha, int n, int timesteps, int chunk, uint64_t seed, double *bpd,
                                    int *done);

#ifdef __cplusplus
}
#endif
#endif
