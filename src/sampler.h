/* What the samplers (sampler.c) share with the editing methods (edit.c): a run's plan of timesteps and
 * noise levels, output conversions, x_0 clipping, and running the reverse chain from any level. */
#ifndef DF_SAMPLER_H
#define DF_SAMPLER_H

#include "internal.h"

/* The noise levels of one run, fixed before the first model call. Level i < steps is where the model
 * is called, at timestep t[i]; level `steps` is the clean end (abar 1, sigma 0). abar[i] is what the
 * output conversions use: the schedule's abar for DDPM and DDIM, 1 / (1 + sigma^2) for the samplers
 * that work in sigma space (DPM-Solver++, Euler, Heun), where a zero terminal abar counts as 2^-24. */
typedef struct {
    int     steps;
    float  *t;       /* steps */
    double *abar;    /* steps + 1 */
    double *sigma;   /* steps + 1: sqrt((1 - abar) / abar), inf where abar is 0 */
} df_plan;

/* Check the parameters against the schedule (steps, spacing, ranges), with a message on failure. */
df_status df_plan_check(const df_schedule *s, const df_sampler_params *p);
/* Fill a plan whose arrays the caller sized for p->steps (after df_plan_check). Fails if the spacing
 * gives repeated noise levels (too many steps for it). */
df_status df_plan_fill(const df_schedule *s, const df_sampler_params *p, df_plan *pl);
/* Bytes df_plan_bind needs for `steps`; df_plan_bind carves the arrays out of mem (8-byte aligned). */
size_t df_plan_bytes(int steps);
void   df_plan_bind(df_plan *pl, int steps, void *mem);

/* A network output at noise level abar turned into x_0 and eps (either may be NULL) for len values:
 * DDPM eq. 15 for eps, its inverse for sample, Salimans & Ho 2022 sec. 4 for v. x is x_t (VP scale).
 * Where abar is 0 an eps prediction leaves x_0 undetermined: x_0 = 0 there. */
void df_pred_convert(df_prediction p, double abar, size_t len, const float *x, const float *out, float *x0,
                     float *eps);

/* Clamp (clip_x0) or dynamically threshold (Imagen; diffusers' _threshold_sample) n predictions of dim
 * values in place. scratch holds dim floats. Does nothing if neither option is on. */
void df_x0_process(const df_sampler_params *p, int n, size_t dim, float *x0, float *scratch);

/* One generator per sample: sample i of a call draws all its noise (its start and every stochastic step)
 * from stream base->stream + i of base->seed, so a sample does not depend on the batch it is in.
 * Fills rngs[0 .. n-1] and advances base->stream by n. */
void df_sample_streams(df_rng *base, int n, df_rng *rngs);
/* The same into a malloc'd array (*rngs; NULL when key is NULL or n <= 0), for the public calls. */
df_status df_sample_streams_new(df_rng *key, int n, df_rng **rngs);

/* Workspace pieces start on 64-byte boundaries. */
static inline size_t df_round64(size_t bytes) { return (bytes + 63) / 64 * 64; }

/* Fill n samples of dim values with N(0, I), sample i from rngs[i]. */
void df_fill_normal_each(df_rng *rngs, int n, size_t dim, float *x);

/* Bytes of workspace df_sampler_run needs for p's sampler and steps and n samples of dim values (64-byte
 * multiples), and the same for df_inpaint_run with its resampling walk. */
size_t df_sampler_run_bytes(const df_sampler_params *p, int n, size_t dim);
size_t df_inpaint_run_bytes(const df_sampler_params *p, int n, size_t dim, int jump_length, int jump_n_sample);

/* Run the sampler p->kind from level `start` of its plan: x (n * dim) holds x_t at that level in the
 * usual VP scale on entry and the samples on return. rngs: one generator per sample (see df_sample_streams;
 * unused by deterministic samplers, may then be NULL). ws: df_sampler_run_bytes of workspace, 64-byte
 * aligned, or NULL to allocate it for this call. */
df_status df_sampler_run(const df_schedule *s, const df_sampler_params *p, df_denoise_fn fn, void *ctx, int n,
                         size_t dim, df_rng *rngs, float *x, int start, void *ws);

/* df_img2img and df_inpaint with one generator per sample and a caller's workspace (NULL: allocate);
 * img2img's workspace is df_sampler_run's. x_in / known hold n samples. */
df_status df_img2img_run(const df_schedule *s, const df_sampler_params *p, df_denoise_fn fn, void *ctx, int n,
                         size_t dim, const float *x_in, double strength, df_rng *rngs, float *out, void *ws);
df_status df_inpaint_run(const df_schedule *s, const df_sampler_params *p, df_denoise_fn fn, void *ctx, int n,
                         size_t dim, const float *known, const float *mask, int jump_length, int jump_n_sample,
                         df_rng *rngs, float *out, void *ws);

#endif
