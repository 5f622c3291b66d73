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

#define DIFFUSE_VERSION "0.1.0"

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
 * same numbers on every machine and thread count. Copy the struct to fork a stream. */
typedef struct {
    uint64_t seed;
    uint64_t counter;   /* how many 128-bit blocks were drawn */
    uint32_t buf[4];    /* unused words of the current block */
    int      nbuf;
} df_rng;

void     df_rng_init(df_rng *r, uint64_t seed);
uint32_t df_rng_u32(df_rng *r);
double   df_rng_uniform(df_rng *r);                 /* in [0, 1) with 53 random bits */
double   df_rng_normal(df_rng *r);                  /* standard normal (Box-Muller) */
void     df_rng_fill_normal(df_rng *r, float *x, size_t n);
void     df_rng_fill_uniform(df_rng *r, float *x, size_t n, float lo, float hi);

/* ---- U-Net configuration ---------------------------------------------------------------------------- */

#define DF_MAX_LEVELS 8

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
} df_unet_config;

/* diffusers' UNet2DModel defaults (what a config.json that omits a field means). */
void df_unet_config_default(df_unet_config *cfg);

/* A built-in config by name: "fmnist-s" (28x28x1, 3.9 M parameters) or "cifar10" (the layout of
 * google/ddpm-cifar10-32, 35.7 M parameters). */
df_status df_unet_config_preset(const char *name, df_unet_config *cfg);

/* Parse a diffusers config.json (text or file). A field we do not support is refused with an error
 * naming the field and the value. `source` names the text in messages (e.g. its path). */
df_status df_unet_config_parse(const char *json, size_t len, const char *source, df_unet_config *cfg);
df_status df_unet_config_load(const char *path, df_unet_config *cfg);

/* Check a config for consistency (channels divisible by groups, heads, levels...). */
df_status df_unet_config_validate(const df_unet_config *cfg);

/* Write a config as diffusers' config.json (all fields, "_class_name": "UNet2DModel"). The file is
 * written to a temporary name and renamed, so a crash never leaves half a file. */
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

/* Number of threads used for the model's compute (default: all cores). */
void df_set_num_threads(int n);
int  df_get_num_threads(void);

/* Predict the noise: eps = model(x, t, labels). x and eps are (n, in_channels, h, w) and
 * (n, out_channels, h, w); t holds n timesteps (may be fractional); labels holds n class indices or is
 * NULL for an unconditional model. The activations of this pass are kept for df_model_backward(). */
df_status df_model_forward(df_model *m, int n, int h, int w, const float *x, const float *t,
                           const int *labels, float *eps);

/* Backpropagate d(loss)/d(eps) through the last forward pass: adds the parameter gradients into
 * df_model_grads() and, if dx is not NULL, writes d(loss)/dx (n, in_channels, h, w). */
df_status df_model_backward(df_model *m, const float *deps, float *dx);

void df_model_zero_grad(df_model *m);

/* Training mode turns dropout on, with masks drawn from `rng` (kept by pointer until the next call).
 * Eval mode (the default) turns it off. */
void df_model_set_train(df_model *m, int train, df_rng *rng);

/* DDPM's L_simple on one batch: forward on x_t, loss = mean((eps - noise)^2), backward. Gradients are
 * added into df_model_grads() (call df_model_zero_grad first). */
df_status df_model_loss_grad(df_model *m, int n, int h, int w, const float *x_t, const float *t,
                             const int *labels, const float *noise, float *loss);

#ifdef __cplusplus
}
#endif
#endif
