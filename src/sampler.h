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

/* Run the sampler p->kind from level `start` of its plan: x (n * dim) holds x_t at that level in the
 * usual VP scale on entry and the samples on return. */
df_status df_sampler_run(const df_schedule *s, const df_sampler_params *p, df_denoise_fn fn, void *ctx, int n,
                         size_t dim, df_rng *rng, float *x, int start);

#endif
