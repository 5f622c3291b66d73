/* Diffusion training: DDPM's L_simple (or x_0 / v targets, min-SNR weights, improved DDPM's hybrid loss with
 * learned variances and importance-sampled timesteps) on the shared training loop
 * (loop.c), with the EMA sample grids, evaluation during training, the loss log and what a diffusion
 * checkpoint holds (a diffusers pipeline of the EMA weights, the raw weights, the scheduler). */
#define _POSIX_C_SOURCE 200809L
#include "loop.h"
#include "plot.h"
#include "safetensors.h"
#include "train_text.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

void df_train_params_default(df_train_params *p) {
    memset(p, 0, sizeof *p);
    p->data = "fashion-mnist";
    p->flip = 0;
    p->preset = "fmnist-s";
    p->beta_schedule = DF_BETA_LINEAR;
    p->num_train_timesteps = 1000;
    p->beta_start = 1e-4;
    p->beta_end = 0.02;
    p->prediction = DF_PRED_EPSILON;
    df_edm_params_default(&p->edm_params);
    p->vlb_weight = 0.001;   /* improved DDPM's lambda */
    df_optim_params_default(&p->optim);
    p->optim.warmup_steps = -1;   /* scaled to the budget */
    p->batch_size = 64;
    p->grad_accum = 1;
    p->use_ema = 1;
    p->ema_max_decay = 0.9999;
    p->ema_power = 0.75;
    p->ema_inv_gamma = 1.0;
    p->out_dir = "runs/fmnist-s";
    p->save_every = 1000;
    p->sample_every = 1000;
    p->sample_count = 64;
    p->sample_steps = 50;
    p->keep_checkpoints = 2;
    p->log_every = 10;
    p->eval_n = 500;
    p->eval_steps = 25;
    p->eval_ref = "fashion-mnist:test";
    p->caption_dropout = 0.1;
}

typedef struct {
    df_train_params     p;            /* as given; the loop's settings live in L.p */
    train_loop          L;
    df_dataset         *data;
    df_model           *model, *ema_model;
    df_schedule         sched;
    df_scheduler_config sc;
    int                 c, h, w, conditional, null_class;
    size_t              dim;
    /* text-to-image: the text parts until the data is there (new_tok, new_enc), then the batches' texts */
    int                 text;
    df_tokenizer       *new_tok;
    df_text_encoder    *new_enc;
    text_train          tt;
    df_lines            kept_prompts;   /* a resumed run's grid prompts, from its checkpoint */
    /* batch buffers, sized once: (B, C, H, W) tensors and B values */
    float *xt, *noise, *target, *weights, *t, *per_sample;
    int   *ti;
    double *sigma;   /* EDM's noise levels */
    /* learned variances (improved DDPM): the network's output and its gradient (B, 2C, H, W), each sample's
     * L_vlb and importance weight; importance sampling's history of the last HIST L_vlb values per t (T x HIST,
     * oldest first; training state, in the checkpoint), the draws it has not yet taken (B x grad_accum) and
     * the sampling distribution's running sum (T) */
    float  *out, *dout, *vlb, *iw;
    float  *hist;
    int    *hist_n, *pend_t, npend, importance_ready;
    float  *pend_v;
    double *cdf;
    /* loss by timestep quarter: this step's, and the applied steps' since the last log row */
    double step_quarter_sum[4], quarter_sum[4];
    long   step_quarter_n[4], quarter_n[4];
    char   data_path[4096];
    /* the loss log */
    FILE  *log;
    char   log_path[4300], progress_png[4300];
    /* evaluation during training */
    df_feature_net  *eval_net;
    df_ref_features  eval_ref;
    int              eval_now, sample_now;   /* due at this step */
    long             evaluated_step;
    double           fd, kid, eval_sec;      /* this step's evaluation (fd < 0: none) */
} trainer;

/* ---- samples and evaluation ------------------------------------------------------------------------------ */

/* n images from the EMA weights (the trained ones without EMA): DDIM `steps` steps with x_0 clipping, noise
 * from its own stream seeded from `salt` (the same noise every time, so grids and scores compare; the
 * training's draws are untouched); a conditional model's images in equal runs of every real class. */
static df_status ema_samples(trainer *tr, int n, int steps, uint64_t salt, int nprompts, const char *const *prompts,
                             float *x) {
    /* a model of its own for sampling (the moving average, or a copy of the weights), so the training
     * model keeps its reserved batch */
    const float *w = tr->L.ema ? tr->L.ema : df_model_params(tr->model);
    memcpy(df_model_params(tr->ema_model), w, df_model_num_params(tr->model) * sizeof(float));
    df_generate_params g;
    df_generate_params_for(&g, tr->ema_model, &tr->sc, &tr->sched);
    g.n = n, g.h = tr->h, g.w = tr->w;
    g.seed = train_seed_mix(tr->L.p.seed + salt);
    g.sampler.steps = steps;
    g.null_class = tr->null_class;   /* labels: the classes in turn, a row each */
    if (!tr->text) return df_generate(&g, x);
    /* the prompts in turn, a row each, and the empty text last (guidance's unconditional branch) */
    const char **all = malloc(sizeof(char *) * ((size_t)nprompts + 1));
    float *states = malloc(sizeof(float) * ((size_t)nprompts + 1) * tr->tt.L * tr->tt.D);
    df_status st = all && states ? DF_OK : df_fail(DF_ERR_NOMEM, "out of memory for %d prompts", nprompts);
    for (int i = 0; !st && i < nprompts; i++) all[i] = prompts[i];
    if (!st) all[nprompts] = "", st = text_train_encode(&tr->tt, &tr->L, nprompts + 1, all, states);
    g.texts = states, g.n_texts = nprompts + 1, g.text_len = tr->tt.L, g.null_class = nprompts;
    if (!st) st = df_generate(&g, x);
    free(all), free(states);
    return st;
}

/* The grids' prompts: the run's, or the first captions of the data's first images (at most 8). */
static int grid_prompts(const trainer *tr, const char **out, int cap) {
    if (tr->p.sample_prompts && tr->p.n_sample_prompts > 0) {
        for (int i = 0; i < tr->p.n_sample_prompts && i < cap; i++) out[i] = tr->p.sample_prompts[i];
        return DF_MIN(tr->p.n_sample_prompts, cap);
    }
    const int k = DF_MIN(DF_MIN(8, cap), df_dataset_count(tr->data));
    for (int i = 0; i < k; i++) out[i] = df_dataset_caption(tr->data, i, 0);
    return k;
}

static df_status write_samples(trainer *tr) {
    const df_train_params *p = &tr->p;
    int n = p->sample_count;
    if (n <= 0) return DF_OK;
    /* class-conditional: the same number of each class but the null one, a row per class; text: of each prompt */
    int k = tr->conditional ? df_model_config(tr->model)->num_class_embeds - (tr->null_class >= 0) : 0;
    const char *prompts[1024];
    if (tr->text) k = grid_prompts(tr, prompts, DF_MIN(n, DF_COUNTOF(prompts)));
    if (k > 0 && n >= k) n -= n % k;
    float *x = malloc(sizeof(float) * (size_t)n * tr->dim);
    if (!x) return df_fail(DF_ERR_NOMEM, "out of memory for samples");
    df_status st = ema_samples(tr, n, p->sample_steps, 0x5A3D1E, k, prompts, x);
    char path[4300];
    snprintf(path, sizeof path, "%s/samples", p->out_dir);
    if (!st) st = df_mkdir_p(path);
    int cols = (int)ceil(sqrt((double)n));
    if ((tr->conditional || tr->text) && k > 0 && n % k == 0) cols = n / k;
    snprintf(path, sizeof path, "%s/samples/step-%07ld.png", p->out_dir, tr->L.step);
    if (!st) st = df_image_save_grid(path, x, n, tr->c, tr->h, tr->w, cols, 2);
    snprintf(path, sizeof path, "%s/samples/latest.png", p->out_dir);
    if (!st) st = df_image_save_grid(path, x, n, tr->c, tr->h, tr->w, cols, 2);
    if (!st) train_loop_event(&tr->L, "samples written to %s/samples/step-%07ld.png", p->out_dir, tr->L.step);
    free(x);
    return st;
}

/* FD and KID of eval_n EMA samples (DDIM eval_steps steps) against the reference. */
static df_status evaluate_now(trainer *tr, double *fd, double *kid) {
    const df_train_params *p = &tr->p;
    const int n = p->eval_n, d = df_feature_net_dim(tr->eval_net);
    float *x = malloc(sizeof(float) * (size_t)n * tr->dim), *feats = malloc(sizeof(float) * (size_t)n * d);
    /* text: each image from the caption of a training image, spread over the data */
    const char **prompts = tr->text ? malloc(sizeof(char *) * (size_t)n) : NULL;
    df_status st = x && feats && (prompts || !tr->text) ? DF_OK
                                                        : df_fail(DF_ERR_NOMEM, "out of memory for %d evaluation images", n);
    const int count = df_dataset_count(tr->data);
    for (int i = 0; !st && prompts && i < n; i++) prompts[i] = df_dataset_caption(tr->data, (int)((long)i * count / n), 0);
    if (!st) st = ema_samples(tr, n, p->eval_steps, 0xE7A1, tr->text ? n : 0, prompts, x);
    free(prompts);
    if (!st) st = df_feature_net_features(tr->eval_net, n, tr->c, tr->h, tr->w, x, feats);
    df_eval_params ep;
    df_eval_params_default(&ep);
    ep.bootstrap = 0, ep.seed = tr->L.p.seed;
    df_eval_result res;
    memset(&res, 0, sizeof res);
    if (!st) st = df_eval_features(tr->eval_net, &tr->eval_ref, feats, n, 1u << DF_METRIC_FD | 1u << DF_METRIC_KID, &ep, &res);
    if (!st) *fd = res.fd.value, *kid = res.kid.value;
    free(x), free(feats);
    return st;
}

/* ---- the loss log ---------------------------------------------------------------------------------------- */

/* loss.csv's columns. */
static const char log_header[] = "step,epoch,loss,loss_avg,loss_q0,loss_q1,loss_q2,loss_q3,lr,grad_norm,images_per_sec,"
                                 "elapsed_sec,images,fd,kid,eval_sec\n";

/* On resume, drop rows past the resumed step so the log reads as one run (and a last row cut short by a
 * crash). A log from before the evaluation columns gets the new header, and its rows the images seen
 * (step x images_per_step) and empty evaluation fields. */
static df_status trim_log(const char *path, long step, long images_per_step) {
    char *text;
    size_t len;
    if (df_read_file(path, &text, &len)) return DF_OK;   /* no log yet: it is created */
    const int old = strncmp(text, log_header, strlen(log_header)) != 0;
    size_t rows = 0;
    for (size_t i = 0; i < len; i++) rows += text[i] == '\n';
    char *out = malloc(len + strlen(log_header) + (old ? 32 * rows : 0) + 1);
    if (!out) {
        free(text);
        return df_fail(DF_ERR_NOMEM, "out of memory");
    }
    size_t keep = 0;
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        if (!nl) break;
        size_t l = (size_t)(nl - line + 1);
        long s;
        if (line == text && old) {
            memcpy(out + keep, log_header, strlen(log_header));
            keep += strlen(log_header);
        } else if (line == text || (sscanf(line, "%ld,", &s) == 1 && s <= step)) {
            if (old) keep += (size_t)sprintf(out + keep, "%.*s,%ld,,,\n", (int)(l - 1), line, s * images_per_step);
            else memcpy(out + keep, line, l), keep += l;
        }
        line += l;
    }
    df_status st = keep == len && !old ? DF_OK : df_write_file_atomic(path, out, keep);
    free(text), free(out);
    return st;
}

/* A row of loss.csv; fd < 0 leaves the evaluation columns empty. */
static df_status log_row(FILE *f, const char *path, const df_train_progress *pr, long images, double fd, double kid,
                         double eval_sec) {
    fprintf(f, "%ld,%d,%.6f,%.6f", pr->step, pr->epoch, pr->loss, pr->loss_avg);
    for (int q = 0; q < 4; q++) fprintf(f, ",%.6f", pr->loss_quarter[q]);
    fprintf(f, ",%.3e,%.4f,%.2f,%.1f,%ld", pr->lr, pr->grad_norm, pr->images_per_sec, pr->elapsed, images);
    if (fd >= 0) fprintf(f, ",%.5f,%.6f,%.1f\n", fd, kid, eval_sec);
    else fprintf(f, ",,,\n");
    if (fflush(f) != 0 || ferror(f)) return df_fail(DF_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    return DF_OK;
}

/* ---- learned variances and importance-sampled timesteps (improved DDPM, Nichol & Dhariwal 2021) ---------- */

#define HIST 10               /* L_vlb values kept per timestep (sec. 3.3) */
#define UNIFORM_SHARE 0.001   /* mixed into p_t, as the paper's code (LossSecondMomentResampler) does */

/* p_t ~ sqrt(E[L_t^2]) over each t's history, once every t has HIST values (until then t is uniform). */
static void importance_update(trainer *tr) {
    const int T = tr->sched.T;
    tr->importance_ready = 0;
    for (int t = 0; t < T; t++)
        if (tr->hist_n[t] < HIST) return;
    double sum = 0;
    for (int t = 0; t < T; t++) {
        double m2 = 0;
        for (int k = 0; k < HIST; k++) m2 += (double)tr->hist[t * HIST + k] * tr->hist[t * HIST + k];
        tr->cdf[t] = sqrt(m2 / HIST);
        sum += tr->cdf[t];
    }
    if (!(sum > 0) || !isfinite(sum)) return;   /* nothing to go by: stay uniform */
    double run = 0;
    for (int t = 0; t < T; t++) tr->cdf[t] = run += tr->cdf[t] / sum * (1 - UNIFORM_SHARE) + UNIFORM_SHARE / T;
    tr->importance_ready = 1;
}

/* A timestep for one sample and its importance weight 1 / (T p_t): uniform draws (the training stream's
 * usual one) until importance sampling has its history. */
static int draw_timestep(trainer *tr, train_loop *L, float *iw) {
    const int T = tr->sched.T;
    *iw = 1;
    if (!tr->importance_ready) return (int)(df_rng_u32(&L->rng) % (uint32_t)T);
    const double u = df_rng_uniform(&L->rng) * tr->cdf[T - 1];
    int lo = 0, hi = T - 1;   /* the first t with cdf[t] > u */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (tr->cdf[mid] > u) hi = mid;
        else lo = mid + 1;
    }
    *iw = (float)(tr->cdf[T - 1] / (T * (tr->cdf[lo] - (lo ? tr->cdf[lo - 1] : 0))));
    return lo;
}

/* The hybrid loss L_simple + lambda L_vlb of a learned-variance model on the batch: forward, the loss and its
 * gradient on the whole output (df_hybrid_loss), backward. */
static df_status hybrid_loss_grad(trainer *tr, train_loop *L, float *loss) {
    const df_train_params *p = &tr->p;
    const int B = L->p.batch_size;
    for (int i = 0; i < B; i++) tr->iw[i] /= (float)L->p.grad_accum;
    for (int i = 0; i < B; i++) tr->weights[i] = (float)df_loss_weight(&tr->sched, p->prediction, tr->ti[i], p->min_snr_gamma);
    double l = 0;
    df_status st = df_model_forward(tr->model, B, tr->h, tr->w, tr->xt, tr->t, tr->conditional ? L->labels : NULL, tr->out);
    if (!st) st = df_hybrid_loss(&tr->sched, p->prediction, B, tr->dim, L->x0, tr->xt, tr->ti, tr->target, tr->out,
                                 tr->iw, tr->weights, p->vlb_weight, &l, tr->per_sample, tr->vlb, tr->dout);
    if (!st) st = df_model_backward(tr->model, tr->dout, NULL);
    *loss = (float)l;
    for (int i = 0; !st && tr->hist && i < B; i++) tr->pend_t[tr->npend] = tr->ti[i], tr->pend_v[tr->npend++] = tr->vlb[i];
    return st;
}

/* ---- the diffusion task: what the shared loop calls -------------------------------------------------- */

/* L_simple on the loop's batch: label dropout, a timestep and noise per image, x_t ~ q(x_t | x_0), the
 * target of the parameterisation and min-SNR weights, forward and backward. With EDM, a log-normal noise
 * level per image instead of a timestep, the preconditioned input and F's target, unit weights; its loss
 * quarters are those of the VP timestep of the same sigma. */
static df_status diffusion_loss(void *ctx, train_loop *L, int part, double *loss) {
    trainer *tr = ctx;
    const df_train_params *p = &tr->p;
    const int B = L->p.batch_size, T = tr->sched.T;
    if (part == 0) tr->npend = 0;   /* a new step: what a skipped one drew is dropped */
    if (tr->hist) importance_update(tr);
    for (int i = 0; i < B; i++) {
        /* label dropout: the null class teaches the unconditional prediction (drawn only when enabled, so
         * runs without it keep their random stream) */
        if (tr->conditional && p->class_dropout > 0 && df_rng_uniform(&L->rng) < p->class_dropout)
            L->labels[i] = tr->null_class;
        if (p->edm) {
            df_edm_draw_sigmas(&p->edm_params, &L->rng, 1, &tr->sigma[i]);
            tr->ti[i] = (int)lround(df_schedule_t_for_sigma(&tr->sched, tr->sigma[i]));
            continue;
        }
        tr->ti[i] = draw_timestep(tr, L, &tr->iw[i]);
        tr->t[i] = (float)tr->ti[i];
    }
    df_rng_fill_normal(&L->rng, tr->noise, (size_t)B * tr->dim);
    df_status st = tr->text ? text_train_batch(&tr->tt, L, tr->model) : DF_OK;
    if (st) return st;
    if (p->edm) {
        df_edm_training_inputs(p->edm_params.sigma_data, B, tr->dim, L->x0, tr->noise, tr->sigma, tr->xt, tr->t,
                               tr->target);
        for (int i = 0; i < B; i++) tr->weights[i] = (float)(1.0 / L->p.grad_accum);
    } else {
        df_q_sample(&tr->sched, B, tr->dim, L->x0, tr->noise, tr->ti, tr->xt);
        df_training_target(&tr->sched, p->prediction, B, tr->dim, L->x0, tr->noise, tr->ti, tr->target);
        for (int i = 0; i < B; i++)
            tr->weights[i] =
                (float)(df_loss_weight(&tr->sched, p->prediction, tr->ti[i], p->min_snr_gamma) / L->p.grad_accum);
    }
    float l;
    st = p->learn_variance ? hybrid_loss_grad(tr, L, &l)
                           : df_model_loss_grad(tr->model, B, tr->h, tr->w, tr->xt, tr->t,
                                                tr->conditional ? L->labels : NULL, tr->target, tr->weights, &l,
                                                tr->per_sample);
    if (!st && tr->text) st = text_train_backward(&tr->tt, tr->model);
    *loss = l;
    if (part == 0)   /* a new step: what a skipped one left is dropped */
        for (int q = 0; q < 4; q++) tr->step_quarter_sum[q] = 0, tr->step_quarter_n[q] = 0;
    for (int i = 0; i < B; i++) {
        int q = DF_MIN(3, tr->ti[i] * 4 / T);
        tr->step_quarter_sum[q] += tr->per_sample[i];
        tr->step_quarter_n[q]++;
    }
    return st;
}

static void diffusion_step_applied(void *ctx, train_loop *L) {
    trainer *tr = ctx;
    for (int k = 0; tr->hist && k < tr->npend; k++) {   /* the step's L_vlb values join their t's history */
        float *h = tr->hist + tr->pend_t[k] * HIST;
        int *n = &tr->hist_n[tr->pend_t[k]];
        if (*n == HIST) memmove(h, h + 1, sizeof(float) * (HIST - 1)), h[HIST - 1] = tr->pend_v[k];
        else h[(*n)++] = tr->pend_v[k];
    }
    tr->npend = 0;
    for (int q = 0; q < 4; q++) tr->quarter_sum[q] += tr->step_quarter_sum[q], tr->quarter_n[q] += tr->step_quarter_n[q];
}

/* FD and KID when due (every eval_every steps and at the last); a sample grid due forces a report too. */
static df_status diffusion_evaluate(void *ctx, train_loop *L, int last, int *report) {
    trainer *tr = ctx;
    const df_train_params *p = &tr->p;
    tr->sample_now = p->sample_every > 0 && L->step % p->sample_every == 0 && !last;
    tr->eval_now = p->eval_every > 0 && (L->step % p->eval_every == 0 || last);
    tr->fd = -1, tr->kid = 0, tr->eval_sec = 0;
    *report |= tr->sample_now || tr->eval_now;
    if (!tr->eval_now) return DF_OK;
    tr->evaluated_step = L->step;   /* before the row, which carries its numbers */
    const double e0 = df_now_sec();
    df_status st = evaluate_now(tr, &tr->fd, &tr->kid);
    tr->eval_sec = df_now_sec() - e0;
    if (!st) train_loop_event(L, "eval: FD %.3f, KID %.5f (%d images, %.0f s)", tr->fd, tr->kid, p->eval_n, tr->eval_sec);
    return st;
}

/* A loss.csv row: the loss by timestep quarter since the last row, and this step's evaluation. */
static df_status diffusion_log(void *ctx, train_loop *L, df_train_progress *pr) {
    trainer *tr = ctx;
    for (int q = 0; q < 4; q++) {
        pr->loss_quarter[q] = tr->quarter_n[q] ? tr->quarter_sum[q] / tr->quarter_n[q] : NAN;
        tr->quarter_sum[q] = 0, tr->quarter_n[q] = 0;
    }
    return log_row(tr->log, tr->log_path, pr, L->step * L->p.batch_size * L->p.grad_accum, tr->fd, tr->kid,
                   tr->eval_sec);
}

/* The picture of the run whenever there is something new to see in it, and the sample grid when due. */
static df_status diffusion_after_log(void *ctx, train_loop *L, int last) {
    trainer *tr = ctx;
    df_status st = DF_OK;
    if (tr->eval_now || tr->sample_now) st = df_plot_training_progress(tr->log_path, tr->progress_png);
    if (!st && tr->sample_now) st = write_samples(tr);
    return st;
}

/* The end of a run: a run stopped by its time budget ends with an evaluation too (a row of its own); then
 * the log is closed, and a run that trained leaves a sample grid (unless stopped) and the picture. */
static df_status diffusion_finish(void *ctx, train_loop *L) {
    trainer *tr = ctx;
    const df_train_params *p = &tr->p;
    df_status st = DF_OK;
    if (p->eval_every > 0 && !L->stopped && L->step > 0 && tr->evaluated_step != L->step) {
        double fd, kid, e0 = df_now_sec();
        st = evaluate_now(tr, &fd, &kid);
        double eval_sec = df_now_sec() - e0;
        L->untimed += eval_sec;
        if (!st) {
            fprintf(tr->log, "%ld,%d,,,,,,,,,,%.1f,%ld,%.5f,%.6f,%.1f\n", L->step, L->epoch, train_loop_elapsed(L),
                    L->step * L->p.batch_size * L->p.grad_accum, fd, kid, eval_sec);
            if (fflush(tr->log) != 0) st = df_fail(DF_ERR_IO, "%s: write failed: %s", tr->log_path, strerror(errno));
        }
        if (!st && p->progress) {
            df_train_progress pr = {.step = L->step, .total_steps = L->total, .epoch = L->epoch, .loss_avg = L->loss_avg};
            snprintf(L->event, sizeof L->event, "eval: FD %.3f, KID %.5f (%d images, %.0f s)", fd, kid, p->eval_n,
                     eval_sec);
            pr.event = L->event;
            pr.elapsed = train_loop_elapsed(L);
            for (int q = 0; q < 4; q++) pr.loss_quarter[q] = NAN;
            p->progress(p->progress_ctx, &pr);
            L->event[0] = 0;
        }
    }
    int closed = fclose(tr->log);
    tr->log = NULL;
    if (closed != 0 && !st) st = df_fail(DF_ERR_IO, "%s: write failed: %s", tr->log_path, strerror(errno));
    if (st || L->step == 0) return st;
    if (!L->stopped) st = write_samples(tr);
    /* the picture goes with the run's other pictures: a run that asked for no samples and no evaluation
     * (a script's, a test's) does not pay for loading fonts */
    if (!st && (p->sample_count > 0 || p->eval_every > 0)) st = df_plot_training_progress(tr->log_path, tr->progress_png);
    return st;
}

/* Importance sampling's history: float values as they are kept, so a resume draws the same timesteps. */
static df_status save_history(const trainer *tr, const char *dir) {
    const int T = tr->sched.T;
    int64_t *n = malloc(sizeof(int64_t) * (size_t)T);
    if (!n) return df_fail(DF_ERR_NOMEM, "out of memory");
    for (int t = 0; t < T; t++) n[t] = tr->hist_n[t];
    st_entry e[2] = {{.name = "vlb_history", .ndim = 2, .shape = {T, HIST}, .f32 = tr->hist},
                     {.name = "vlb_history_count", .ndim = 1, .shape = {T}, .i64 = n}};
    char p[4400];
    snprintf(p, sizeof p, "%s/timestep_history.safetensors", dir);
    df_status st = st_write(p, e, 2, NULL, 0);
    free(n);
    return st;
}

static df_status load_history(trainer *tr, const char *ck) {
    const int T = tr->sched.T;
    char p[4400];
    snprintf(p, sizeof p, "%s/timestep_history.safetensors", ck);
    st_file f;
    df_status st = st_open(p, &f);
    if (st) return st;
    const st_tensor *h = st_find(&f, "vlb_history"), *c = st_find(&f, "vlb_history_count");
    int64_t *n = malloc(sizeof(int64_t) * (size_t)T);
    if (!h || !c || st_numel(h) != (int64_t)T * HIST || st_numel(c) != T)
        st = df_fail(DF_ERR_SHAPE, "%s: expected vlb_history (%d, %d) and vlb_history_count (%d)", p, T, HIST, T);
    else if (!n) st = df_fail(DF_ERR_NOMEM, "out of memory");
    if (!st) st = st_read_f32(&f, h, tr->hist, (size_t)T * HIST);
    if (!st) st = st_read_i64(&f, c, n, (size_t)T);
    for (int t = 0; !st && t < T; t++) {
        if (n[t] < 0 || n[t] > HIST) st = df_fail(DF_ERR_FORMAT, "%s: vlb_history_count[%d] = %lld", p, t, (long long)n[t]);
        else tr->hist_n[t] = (int)n[t];
    }
    free(n);
    st_close(&f);
    return st;
}

/* The grids' prompts, a line each, so that a resumed run goes on with them. */
static df_status save_prompts(const trainer *tr, const char *dir) {
    size_t len = 0;
    for (int i = 0; i < tr->p.n_sample_prompts; i++) len += strlen(tr->p.sample_prompts[i]) + 1;
    char *text = malloc(len + 1), *q = text;
    if (!text) return df_fail(DF_ERR_NOMEM, "out of memory");
    for (int i = 0; i < tr->p.n_sample_prompts; i++) {
        for (const char *c = tr->p.sample_prompts[i]; *c; c++) *q++ = *c == '\n' || *c == '\r' ? ' ' : *c;
        *q++ = '\n';
    }
    char p[4400];
    snprintf(p, sizeof p, "%s/sample_prompts.txt", dir);
    df_status st = df_write_file_atomic(p, text, (size_t)(q - text));
    free(text);
    return st;
}

/* A checkpoint's diffusion files: unet/ holds the weights to sample with (the EMA when kept), as diffusers'
 * training script saves, unet_raw/ the trained ones, with scheduler/ and a conditional model's classes. */
static df_status diffusion_save(void *ctx, train_loop *L, const char *dir) {
    trainer *tr = ctx;
    char p[4400];
    df_status st;
    const df_model *sampling = tr->model;
    if (L->ema) {
        memcpy(df_model_params(tr->ema_model), L->ema, df_model_num_params(tr->model) * sizeof(float));
        sampling = tr->ema_model;
    }
    st = tr->text ? text_train_save(&tr->tt, L, dir, sampling, &tr->sc) : df_pipeline_save(dir, sampling, &tr->sc);
    snprintf(p, sizeof p, "%s/unet_raw", dir);
    if (!st) st = df_model_save(tr->model, p);
    if (!st && tr->hist) st = save_history(tr, dir);
    if (!st && tr->text && tr->p.sample_prompts && tr->p.n_sample_prompts > 0) st = save_prompts(tr, dir);
    if (!st && tr->conditional)   /* the classes' names and the null class, for sampling and `info` */
        st = df_class_info_save_data(dir, tr->data, df_model_config(tr->model)->num_class_embeds, tr->null_class);
    /* every file was synced as it was written; now the directories that name them */
    const char *subdirs[] = {"unet", "unet_raw", "scheduler", "text_encoder", "tokenizer", "text_encoder_raw"};
    const int nsub = !tr->text ? 3 : tr->tt.frozen ? 5 : 6;
    for (int i = 0; i < nsub && !st; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, subdirs[i]);
        st = train_sync_dir(p);
    }
    return st;
}

static void diffusion_save_state(void *ctx, const train_loop *L, cJSON *j) {
    const trainer *tr = ctx;
    const df_train_params *p = &tr->p;
    cJSON_AddStringToObject(j, "data", p->data);
    cJSON_AddStringToObject(j, "data_description", df_dataset_description(tr->data));
    cJSON_AddNumberToObject(j, "image_size", tr->h);
    cJSON_AddNumberToObject(j, "min_snr_gamma", p->min_snr_gamma);
    cJSON_AddNumberToObject(j, "class_dropout", p->class_dropout);
    if (tr->text) {   /* absent: not a text-to-image run */
        cJSON *t = cJSON_AddObjectToObject(j, "text");
        cJSON_AddNumberToObject(t, "caption_dropout", tr->tt.dropout);
        cJSON_AddBoolToObject(t, "freeze_text_encoder", tr->tt.frozen);
    }
    if (p->edm) {   /* sigma_data is also the scheduler's; the noise levels' law only here */
        cJSON *e = cJSON_AddObjectToObject(j, "edm");
        cJSON_AddNumberToObject(e, "sigma_data", p->edm_params.sigma_data);
        cJSON_AddNumberToObject(e, "p_mean", p->edm_params.p_mean);
        cJSON_AddNumberToObject(e, "p_std", p->edm_params.p_std);
    }
    /* for the record: a resume takes it from the scheduler's variance_type, which the model's shape must match */
    cJSON_AddBoolToObject(j, "learn_variance", p->learn_variance);
    cJSON_AddNumberToObject(j, "vlb_weight", p->vlb_weight);
    cJSON_AddStringToObject(j, "timestep_sampling", p->timestep_sampling == DF_TIMESTEPS_IMPORTANCE ? "importance" : "uniform");
    /* the settings a resumed session may change, as this one had them: the next takes them unless told */
    cJSON *s = cJSON_AddObjectToObject(j, "session");
    cJSON_AddNumberToObject(s, "save_every", (double)p->save_every);
    cJSON_AddNumberToObject(s, "sample_every", (double)p->sample_every);
    cJSON_AddNumberToObject(s, "sample_count", p->sample_count);
    cJSON_AddNumberToObject(s, "sample_steps", p->sample_steps);
    cJSON_AddNumberToObject(s, "keep_checkpoints", p->keep_checkpoints);
    cJSON_AddNumberToObject(s, "log_every", (double)p->log_every);
    cJSON_AddNumberToObject(s, "nonfinite_skip", p->nonfinite_skip);
    cJSON_AddNumberToObject(s, "eval_every", (double)p->eval_every);
    cJSON_AddNumberToObject(s, "eval_n", p->eval_n);
    cJSON_AddNumberToObject(s, "eval_steps", p->eval_steps);
    if (p->eval_features) cJSON_AddStringToObject(s, "eval_features", p->eval_features);
    if (p->eval_ref) cJSON_AddStringToObject(s, "eval_ref", p->eval_ref);
}

/* A path of a state's session into buf (outliving the JSON), or an error naming the field. */
static void session_path(state_reader *r, const cJSON *s, const char *key, char *buf, size_t cap, const char **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, key);
    if (r->bad || !v) return;
    if (!cJSON_IsString(v) || !v->valuestring[0] || strlen(v->valuestring) >= cap) {
        r->bad = key, snprintf(r->why, sizeof r->why, "expected a path of 1 to %zu characters", cap - 1);
        return;
    }
    snprintf(buf, cap, "%s", v->valuestring);
    *out = buf;
}

df_status df_train_params_resume(df_train_params *p, const char *out_dir, df_train_paths *paths) {
    if (!p || !out_dir || !paths) return df_fail(DF_ERR_ARG, "train: no parameters, run directory or paths");
    char path[4200];
    snprintf(path, sizeof path, "%s/latest/training_state.json", out_dir);
    cJSON *j;
    df_status st = train_state_parse(path, &j);
    if (st) return st;
    df_train_params q = *p;   /* p changes only when every field reads */
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "session");   /* absent in states of version 0.2.0 */
    state_reader r = {0};
    double v;
    if (s && !cJSON_IsObject(s)) r.bad = "session", snprintf(r.why, sizeof r.why, "expected an object");
    if (s && state_num(&r, s, "save_every", 0, 1e12, 1, 1, &v)) q.save_every = (long)v;
    if (s && state_num(&r, s, "sample_every", 0, 1e12, 1, 1, &v)) q.sample_every = (long)v;
    if (s && state_num(&r, s, "sample_count", 0, 1 << 20, 1, 1, &v)) q.sample_count = (int)v;
    if (s && state_num(&r, s, "sample_steps", 1, 1e6, 1, 1, &v)) q.sample_steps = (int)v;
    if (s && state_num(&r, s, "keep_checkpoints", 1, 1e6, 1, 1, &v)) q.keep_checkpoints = (int)v;
    if (s && state_num(&r, s, "log_every", 1, 1e12, 1, 1, &v)) q.log_every = (long)v;
    if (s && state_num(&r, s, "nonfinite_skip", 0, 1e9, 1, 1, &v)) q.nonfinite_skip = (int)v;
    if (s && state_num(&r, s, "eval_every", 0, 1e12, 1, 1, &v)) q.eval_every = (long)v;
    if (s && state_num(&r, s, "eval_n", 2, 1e9, 1, 1, &v)) q.eval_n = (int)v;
    if (s && state_num(&r, s, "eval_steps", 1, 1e6, 1, 1, &v)) q.eval_steps = (int)v;
    if (s) session_path(&r, s, "eval_features", paths->eval_features, sizeof paths->eval_features, &q.eval_features);
    if (s) session_path(&r, s, "eval_ref", paths->eval_ref, sizeof paths->eval_ref, &q.eval_ref);
    cJSON_Delete(j);
    if (r.bad) return df_fail(DF_ERR_FORMAT, "%s: session.%s: %s", path, r.bad, r.why);
    *p = q;
    p->out_dir = out_dir;
    p->resume = 1;
    return DF_OK;
}

/* The diffusion settings of a training state (the loop reads its own). */
static void diffusion_state_fields(void *ctx, state_reader *r, const cJSON *j) {
    trainer *tr = ctx;
    df_train_params *p = &tr->p;
    double v;
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(j, "data");
    if (!r->bad && !(cJSON_IsString(data) && data->valuestring[0] && strlen(data->valuestring) < sizeof tr->data_path))
        r->bad = "data", snprintf(r->why, sizeof r->why, "missing, empty or too long");
    if (state_num(r, j, "image_size", 0, DF_MAX_SIZE, 1, 0, &v)) p->image_size = (int)v;
    if (state_num(r, j, "min_snr_gamma", 0, 1e9, 0, 0, &v)) p->min_snr_gamma = v;
    p->class_dropout = 0;   /* absent in states written before label dropout */
    if (state_num(r, j, "class_dropout", 0, 0.999999, 0, 1, &v)) p->class_dropout = v;
    const cJSON *tx = cJSON_GetObjectItemCaseSensitive(j, "text");   /* absent: not a text-to-image run */
    p->text_conditional = tx != NULL;
    if (tx && !cJSON_IsObject(tx) && !r->bad) r->bad = "text", snprintf(r->why, sizeof r->why, "expected an object");
    if (tx && state_num(r, tx, "caption_dropout", 0, 0.999999, 0, 0, &v)) p->caption_dropout = v;
    const cJSON *fz = tx ? cJSON_GetObjectItemCaseSensitive(tx, "freeze_text_encoder") : NULL;
    if (tx && !r->bad && !cJSON_IsBool(fz))
        r->bad = "text.freeze_text_encoder", snprintf(r->why, sizeof r->why, "expected true or false");
    if (tx && !r->bad) p->freeze_text_encoder = cJSON_IsTrue(fz);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "edm");   /* absent: not an EDM run */
    p->edm = e != NULL;
    if (e && !cJSON_IsObject(e) && !r->bad) r->bad = "edm", snprintf(r->why, sizeof r->why, "expected an object");
    if (e && state_num(r, e, "sigma_data", 1e-6, 1e6, 0, 0, &v)) p->edm_params.sigma_data = v;
    if (e && state_num(r, e, "p_mean", -100, 100, 0, 0, &v)) p->edm_params.p_mean = v;
    if (e && state_num(r, e, "p_std", 0, 100, 0, 0, &v)) p->edm_params.p_std = v;
    /* absent in states written before learned variances: the defaults */
    p->vlb_weight = 0.001, p->timestep_sampling = DF_TIMESTEPS_UNIFORM;
    if (state_num(r, j, "vlb_weight", 0, 1e9, 0, 1, &v)) p->vlb_weight = v;
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(j, "timestep_sampling");
    if (!r->bad && ts && !(cJSON_IsString(ts) && (!strcmp(ts->valuestring, "uniform") || !strcmp(ts->valuestring, "importance"))))
        r->bad = "timestep_sampling", snprintf(r->why, sizeof r->why, "expected \"uniform\" or \"importance\"");
    if (!r->bad && ts && !strcmp(ts->valuestring, "importance")) p->timestep_sampling = DF_TIMESTEPS_IMPORTANCE;
    if (!r->bad) {
        snprintf(tr->data_path, sizeof tr->data_path, "%s", data->valuestring);   /* outlives the JSON */
        p->data = tr->data_path;
    }
}

static void diffusion_progress(void *ctx, const df_train_progress *pr) {
    const trainer *tr = ctx;
    if (tr->p.progress) tr->p.progress(tr->p.progress_ctx, pr);
}

static const train_task diffusion_task = {
    .batch_loss = diffusion_loss,
    .step_applied = diffusion_step_applied,
    .evaluate = diffusion_evaluate,
    .log = diffusion_log,
    .after_log = diffusion_after_log,
    .finish = diffusion_finish,
    .save = diffusion_save,
    .save_state = diffusion_save_state,
    .progress = diffusion_progress,
};

df_status df_train_state_check(const char *path) {
    trainer tr;
    memset(&tr, 0, sizeof tr);
    df_train_params_default(&tr.p);
    train_loop_params lp = {0};
    train_loop_init(&tr.L, &lp, &diffusion_task, &tr);
    return train_loop_read_state(&tr.L, path, diffusion_state_fields, &tr);
}

/* ---- the run ------------------------------------------------------------------------------------------- */

static void trainer_free(trainer *tr) {
    if (tr->log) fclose(tr->log);
    df_feature_net_free(tr->eval_net);
    df_ref_features_free(&tr->eval_ref);
    train_loop_free(&tr->L);
    text_train_free(&tr->tt);
    df_lines_free(&tr->kept_prompts);
    df_tokenizer_free(tr->new_tok);
    df_text_encoder_free(tr->new_enc);
    df_dataset_free(tr->data);
    df_model_free(tr->model);
    df_model_free(tr->ema_model);
    df_schedule_free(&tr->sched);
    float *fb[] = {tr->xt, tr->noise, tr->target, tr->weights, tr->t, tr->per_sample, tr->out, tr->dout, tr->vlb,
                   tr->iw, tr->hist, tr->pend_v};
    for (int i = 0; i < DF_COUNTOF(fb); i++) free(fb[i]);
    free(tr->sigma);
    free(tr->ti), free(tr->hist_n), free(tr->pend_t), free(tr->cdf);
}

/* The loop's settings from the run's. */
static train_loop_params loop_params(const df_train_params *p) {
    train_loop_params lp = {
        .batch_size = p->batch_size, .grad_accum = p->grad_accum, .flip = p->flip, .seed = p->seed,
        .max_steps = p->max_steps, .max_epochs = p->max_epochs, .max_minutes = p->max_minutes, .optim = p->optim,
        .use_ema = p->use_ema, .ema_max_decay = p->ema_max_decay, .ema_power = p->ema_power,
        .ema_inv_gamma = p->ema_inv_gamma, .nonfinite_skip = p->nonfinite_skip, .skip_hint = "--skip-nonfinite N",
        .log_every = p->log_every, .out_dir = p->out_dir, .save_every = p->save_every,
        .keep_checkpoints = p->keep_checkpoints, .stop = p->stop,
    };
    return lp;
}

/* The training data at the model's size and channels (unreadable images skipped unless strict_data). */
static df_status load_data(const df_train_params *p, int size, int channels, df_dataset **d) {
    df_dataset_params dp;
    df_dataset_params_default(&dp);
    dp.size = size, dp.channels = channels, dp.strict = p->strict_data;
    return df_dataset_load(p->data, &dp, d);
}

/* What loading the data found, to the caller before training: the counts, then any converted or skipped
 * images, one report each. */
static void report_data(const trainer *tr) {
    if (!tr->p.progress) return;
    const df_dataset_report *r = df_dataset_get_report(tr->data);
    for (int k = 0; k < DF_DATASET_NOTE_COUNT; k++) {
        char note[1200];
        df_train_progress pr = {.step = tr->L.step, .eta = -1, .event = note, .data = k == 0 ? r : NULL};
        if (df_dataset_report_note(r, (df_dataset_note)k, note, sizeof note)) tr->p.progress(tr->p.progress_ctx, &pr);
    }
}

/* What a text run trains on, to the caller before training: the captions, their context, any cut short. */
static void report_text(const trainer *tr) {
    if (!tr->p.progress) return;
    const text_train *t = &tr->tt;
    const int n = df_dataset_count(tr->data), total = t->first[n];
    char note[400];
    int k = snprintf(note, sizeof note, "text: %d captions of %d images, %d tokens each; the text encoder (%zu "
                     "parameters) %s", total, n, t->L, df_text_encoder_num_params(t->enc),
                     t->frozen ? "is frozen" : "trains with the U-Net");
    if (t->truncated && k > 0 && (size_t)k < sizeof note)
        snprintf(note + k, sizeof note - (size_t)k, "; %d caption%s longer than the context were cut", t->truncated,
                 t->truncated == 1 ? "" : "s");
    df_train_progress pr = {.step = tr->L.step, .eta = -1, .event = note};
    tr->p.progress(tr->p.progress_ctx, &pr);
}

/* A fresh model (preset, config or another model's weights) and its noise schedule. */
static df_status new_model(trainer *tr) {
    df_train_params *p = &tr->p;
    int sources = !!p->preset + !!p->config_path + !!p->init_dir;
    if (sources != 1) return df_fail(DF_ERR_ARG, "give exactly one of a preset, a config.json or a model to start from");
    df_status st = DF_OK;
    df_unet_config cfg;
    if (p->init_dir) {
        if ((st = df_pipeline_load(p->init_dir, 1, &tr->model, NULL))) return st;
        if (df_model_config(tr->model)->condition) {   /* a text model goes on with its text half */
            df_unet_config mc = *df_model_config(tr->model);
            if ((st = text_train_new_parts(p, &mc, p->init_dir, &tr->new_tok, &tr->new_enc))) return st;
        } else if (p->text_conditional) {
            return df_fail(DF_ERR_CONFIG, "%s: the model does not attend to text (not a UNet2DConditionModel): "
                           "text-to-image training starts from a preset, a config or a text-to-image model", p->init_dir);
        }
    } else {
        st = p->preset ? df_unet_config_preset(p->preset, &cfg) : df_unet_config_load(p->config_path, &cfg);
        if (!st && p->text_conditional && p->class_conditional)
            st = df_fail(DF_ERR_ARG, "a model conditions on classes or on text, not both");
        if (!st && p->class_conditional) {
            /* the classes come from the data: open it now, at the size the model will see */
            int size = p->image_size > 0 ? p->image_size : cfg.sample_size;
            st = load_data(p, size, cfg.in_channels, &tr->data);
            int k = st ? 0 : df_dataset_num_classes(tr->data);
            if (!st && k == 0) st = df_fail(DF_ERR_ARG, "%s: no labels to condition on (class-conditional training)", p->data);
            if (!st) cfg.num_class_embeds = k + 1, cfg.class_embed_timestep = 0;
        }
        if (!st && (p->text_conditional || cfg.condition))
            st = text_train_new_parts(p, &cfg, NULL, &tr->new_tok, &tr->new_enc);
        if (p->learn_variance) cfg.out_channels = 2 * cfg.in_channels;   /* the prediction, then v */
        if (!st) st = df_model_create(&cfg, train_seed_mix(p->seed ^ 0xC0FFEE), &tr->model);
        if (st) return st;
    }
    if (p->learn_variance != df_model_learned_variance(tr->model))
        return df_fail(DF_ERR_CONFIG, "%s: the model has %d output channels for %d input channels: learned variances "
                       "need twice as many, a fixed variance as many", p->init_dir ? p->init_dir : p->config_path,
                       df_model_config(tr->model)->out_channels, df_model_config(tr->model)->in_channels);
    tr->sc.beta_schedule = p->beta_schedule;
    tr->sc.num_train_timesteps = p->num_train_timesteps;
    tr->sc.beta_start = p->beta_start;
    tr->sc.beta_end = p->beta_end;
    tr->sc.zero_terminal_snr = p->zero_terminal_snr;
    tr->sc.prediction = p->prediction;
    if (p->edm) {
        if (p->prediction != DF_PRED_EPSILON || p->min_snr_gamma > 0 || p->learn_variance)
            return df_fail(DF_ERR_ARG, "EDM training has its own parameterisation and weighting: it takes neither "
                                       "another prediction, min-SNR-gamma nor learned variances");
        const df_edm_params *e = &p->edm_params;   /* within these, exp() of a drawn ln(sigma) stays finite and positive */
        if (!(e->sigma_data > 0 && e->sigma_data <= 100) || !(e->p_std >= 0 && e->p_std <= 10) ||
            !(fabs(e->p_mean) <= 10))
            return df_fail(DF_ERR_ARG, "EDM: sigma_data %g must be in (0, 100], p_std %g in [0, 10] and p_mean %g in "
                           "[-10, 10]", e->sigma_data, e->p_std, e->p_mean);
        if (df_model_config(tr->model)->out_channels != df_model_config(tr->model)->in_channels)
            return df_fail(DF_ERR_CONFIG, "EDM training needs a model with as many outputs as inputs");
        tr->sc.prediction = DF_PRED_SAMPLE;   /* what the model gives its samplers through the EDM adapter */
        tr->sc.edm_sigma_data = p->edm_params.sigma_data;
    }
    tr->sc.learned_variance = p->learn_variance;
    return DF_OK;
}

/* The model, scheduler and settings of the checkpoint `ck` names. */
static df_status resumed_model(trainer *tr, const char *ck) {
    char path[4400];
    df_status st;
    struct stat sb;
    if (stat(ck, &sb) != 0) return df_fail(DF_ERR_IO, "%s: no checkpoint to resume from", ck);
    snprintf(path, sizeof path, "%s/unet_raw", ck);
    if ((st = df_model_load(path, &tr->model))) return st;
    snprintf(path, sizeof path, "%s/scheduler/scheduler_config.json", ck);
    if ((st = df_scheduler_config_load(path, &tr->sc))) return st;
    tr->p.prediction = tr->sc.prediction;
    tr->p.learn_variance = tr->sc.learned_variance;
    snprintf(path, sizeof path, "%s/training_state.json", ck);
    if ((st = train_loop_read_state(&tr->L, path, diffusion_state_fields, tr))) return st;
    if (tr->p.text_conditional != df_model_config(tr->model)->condition)
        return df_fail(DF_ERR_FORMAT, "%s: the training state's text settings and the U-Net disagree", ck);
    if (tr->p.text_conditional &&
        (st = text_train_resumed_parts(ck, tr->p.freeze_text_encoder, &tr->new_tok, &tr->new_enc)))
        return st;
    if (tr->p.edm != (tr->sc.edm_sigma_data > 0) || (tr->p.edm && tr->p.edm_params.sigma_data != tr->sc.edm_sigma_data))
        return df_fail(DF_ERR_FORMAT, "%s: the training state's EDM settings and the scheduler's disagree", ck);
    if (tr->p.edm) tr->p.prediction = DF_PRED_EPSILON;
    return DF_OK;
}

/* The data at the model's size, and what conditioning on its classes needs. */
static df_status open_data(trainer *tr) {
    const df_train_params *p = &tr->p;
    const df_unet_config *cfg = df_model_config(tr->model);
    df_status st;
    int size = p->image_size > 0 ? p->image_size : cfg->sample_size;
    if (!tr->data && (st = load_data(p, size, cfg->in_channels, &tr->data))) return st;
    report_data(tr);
    df_dataset_shape(tr->data, &tr->c, &tr->h, &tr->w);
    int factor = 1 << (cfg->num_levels - 1);
    if (tr->h % factor || tr->w % factor)
        return df_fail(DF_ERR_SHAPE, "%s: images are %dx%d, which the model's %d levels cannot halve %d times (use --size)",
                       p->data, tr->w, tr->h, cfg->num_levels, cfg->num_levels - 1);
    tr->dim = (size_t)tr->c * tr->h * tr->w;
    tr->conditional = cfg->num_class_embeds > 0;
    if (tr->conditional) {
        int k = df_dataset_num_classes(tr->data);
        if (k == 0) return df_fail(DF_ERR_ARG, "%s: the model is class-conditional but the data has no labels", p->data);
        if (k > cfg->num_class_embeds)
            return df_fail(DF_ERR_CONFIG, "%s has %d classes but the model's num_class_embeds is %d", p->data, k,
                           cfg->num_class_embeds);
        /* the last embedding is the null class when the data does not use it */
        tr->null_class = k < cfg->num_class_embeds ? cfg->num_class_embeds - 1 : -1;
    }
    if (!(p->class_dropout >= 0 && p->class_dropout < 1))
        return df_fail(DF_ERR_ARG, "class dropout %g must be in [0, 1)", p->class_dropout);
    if (p->class_dropout > 0 && (!tr->conditional || tr->null_class < 0))
        return df_fail(DF_ERR_ARG, "class dropout needs a class-conditional model with a null class (num_class_embeds "
                                   "above the data's classes)");
    return DF_OK;
}

/* What learned variances and importance sampling need: checked settings, buffers, a resumed run's history. */
static df_status open_learned(trainer *tr, const char *ck) {
    const df_train_params *p = &tr->p;
    const size_t B = (size_t)tr->L.p.batch_size, T = (size_t)tr->sched.T;
    if (!(p->vlb_weight >= 0 && p->vlb_weight <= 1e9)) return df_fail(DF_ERR_ARG, "vlb weight %g must be >= 0", p->vlb_weight);
    if ((unsigned)p->timestep_sampling >= DF_TIMESTEPS_COUNT)
        return df_fail(DF_ERR_ARG, "timestep sampling %d unknown", p->timestep_sampling);
    if (p->timestep_sampling == DF_TIMESTEPS_IMPORTANCE && !p->learn_variance)
        return df_fail(DF_ERR_ARG, "importance-sampled timesteps go by L_vlb: they need learned variances");
    if (!p->learn_variance) return DF_OK;
    tr->out = malloc(sizeof(float) * 2 * B * tr->dim);
    tr->dout = malloc(sizeof(float) * 2 * B * tr->dim);
    tr->vlb = malloc(sizeof(float) * B);
    if (!tr->out || !tr->dout || !tr->vlb) return df_fail(DF_ERR_NOMEM, "out of memory for a batch of %zu", B);
    if (p->timestep_sampling != DF_TIMESTEPS_IMPORTANCE) return DF_OK;
    const size_t np = B * (size_t)tr->L.p.grad_accum;
    tr->hist = calloc(T * HIST, sizeof(float));
    tr->hist_n = calloc(T, sizeof(int));
    tr->cdf = malloc(sizeof(double) * T);
    tr->pend_t = malloc(sizeof(int) * np);
    tr->pend_v = malloc(sizeof(float) * np);
    if (!tr->hist || !tr->hist_n || !tr->cdf || !tr->pend_t || !tr->pend_v)
        return df_fail(DF_ERR_NOMEM, "out of memory for the timesteps' history");
    return ck ? load_history(tr, ck) : DF_OK;
}

/* Model, data, the loop's state and every buffer a step needs; nothing is written yet. */
static df_status open_run(trainer *tr) {
    const df_train_params *p = &tr->p;
    char ck[4300];
    snprintf(ck, sizeof ck, "%s/latest", p->out_dir);
    df_status st = p->resume ? resumed_model(tr, ck) : new_model(tr);
    if (!st) st = df_schedule_from_config(&tr->sc, &tr->sched);
    if (!st) st = open_data(tr);
    if (!st && tr->new_enc) {   /* the text parts, now owned by tt */
        tr->text = 1;
        st = text_train_open(&tr->tt, &tr->L, tr->model, tr->data, tr->new_tok, tr->new_enc, p->freeze_text_encoder,
                             p->caption_dropout, tr->L.p.seed, tr->L.p.batch_size);
        tr->new_tok = NULL, tr->new_enc = NULL;
        if (!st) report_text(tr);
    }
    if (!st) st = train_loop_setup(&tr->L, tr->model, tr->data, p->resume ? ck : NULL);
    if (!st && tr->text && p->resume) st = text_train_load_ema(&tr->tt, &tr->L, ck);
    if (!st && tr->text && p->resume && !p->sample_prompts) {   /* the grids go on with the run's prompts */
        char path[4400];
        struct stat sb;
        snprintf(path, sizeof path, "%s/sample_prompts.txt", ck);
        if (stat(path, &sb) == 0 && !(st = df_lines_read(path, &tr->kept_prompts)))
            tr->p.sample_prompts = (const char *const *)tr->kept_prompts.lines, tr->p.n_sample_prompts = tr->kept_prompts.n;
    }
    if (st) return st;
    const df_unet_config *cfg = df_model_config(tr->model);
    if ((st = df_model_create(cfg, 0, &tr->ema_model))) return st;
    if (p->resume && tr->L.ema) {   /* the EMA weights are the pipeline's in unet/ */
        char path[4400];
        df_model *em;
        snprintf(path, sizeof path, "%s/unet", ck);
        if ((st = df_model_load(path, &em))) return st;
        if (memcmp(df_model_config(em), cfg, sizeof *cfg) != 0) {
            df_model_free(em);
            return df_fail(DF_ERR_SHAPE, "%s: the EMA model's config differs from unet_raw's", path);
        }
        memcpy(tr->L.ema, df_model_params(em), df_model_num_params(tr->model) * sizeof(float));
        df_model_free(em);
    }
    const size_t B = (size_t)tr->L.p.batch_size;
    tr->xt = malloc(sizeof(float) * B * tr->dim);
    tr->noise = malloc(sizeof(float) * B * tr->dim);
    tr->target = malloc(sizeof(float) * B * tr->dim);
    tr->weights = malloc(sizeof(float) * B);
    tr->t = malloc(sizeof(float) * B);
    tr->per_sample = malloc(sizeof(float) * B);
    tr->ti = malloc(sizeof(int) * B);
    tr->sigma = malloc(sizeof(double) * B);
    tr->iw = malloc(sizeof(float) * B);
    if (!tr->xt || !tr->noise || !tr->target || !tr->weights || !tr->t || !tr->per_sample || !tr->ti || !tr->sigma ||
        !tr->iw)
        return df_fail(DF_ERR_NOMEM, "out of memory for a batch of %zu", B);
    if ((st = open_learned(tr, p->resume ? ck : NULL))) return st;
    /* the grids' settings may change on resume: checked here, before any step, rather than at the first grid */
    if (p->sample_count > 0 && (p->sample_steps < 1 || p->sample_steps > tr->sched.T))
        return df_fail(DF_ERR_ARG, "sample grids with %d DDIM steps: the model has %d training timesteps", p->sample_steps,
                       tr->sched.T);
    if (p->eval_every > 0 && (!p->eval_features || !p->eval_ref || p->eval_n < 2 || p->eval_steps < 1 ||
                              p->eval_steps > tr->sched.T))
        return df_fail(DF_ERR_ARG, "evaluation during training needs a feature network, a reference, at least 2 images "
                       "and 1 to %d steps", tr->sched.T);
    return DF_OK;
}

/* loss.csv (a resumed run's trimmed to its step), and for evaluation during training the feature network
 * and the reference features, once. */
static df_status open_outputs(trainer *tr) {
    const df_train_params *p = &tr->p;
    df_status st;
    snprintf(tr->log_path, sizeof tr->log_path, "%s/loss.csv", p->out_dir);
    snprintf(tr->progress_png, sizeof tr->progress_png, "%s/progress.png", p->out_dir);
    if (p->resume && (st = trim_log(tr->log_path, tr->L.step, (long)tr->L.p.batch_size * tr->L.p.grad_accum)))
        return st;
    tr->log = fopen(tr->log_path, p->resume ? "a" : "w");
    if (!tr->log) return df_fail(DF_ERR_IO, "%s: cannot open: %s", tr->log_path, strerror(errno));
    if (!p->resume) fprintf(tr->log, "%s", log_header);
    if (p->eval_every <= 0) return DF_OK;
    df_dataset *ref = NULL;
    if (!(st = df_feature_net_load(p->eval_features, &tr->eval_net)))
        st = df_feature_net_check_input(tr->eval_net, tr->c, tr->h, tr->w);
    if (!st) st = df_dataset_open(p->eval_ref, 0, 0, &ref);
    int cached;
    if (!st) st = df_ref_features_get(tr->eval_net, ref, 0, &tr->eval_ref, &cached, NULL, NULL);
    if (!st && p->eval_n <= df_feature_net_dim(tr->eval_net))
        st = df_fail(DF_ERR_ARG, "evaluation with %d images: the Fréchet distance of %d-d features needs more than %d",
                     p->eval_n, df_feature_net_dim(tr->eval_net), df_feature_net_dim(tr->eval_net));
    df_dataset_free(ref);
    return st;
}

df_status df_train(const df_train_params *params) {
    trainer tr;
    memset(&tr, 0, sizeof tr);
    tr.p = *params;
    tr.evaluated_step = -1;
    const df_train_params *p = &tr.p;
    if (!p->out_dir || !*p->out_dir) return df_fail(DF_ERR_ARG, "no output directory");
    char latest[4300];
    struct stat lsb;
    snprintf(latest, sizeof latest, "%s/latest", p->out_dir);
    if (!p->resume && lstat(latest, &lsb) == 0)
        return df_fail(DF_ERR_ARG, "%s already holds a run: resume it (--resume) or choose another output directory",
                       p->out_dir);
    train_loop_params lp = loop_params(p);
    train_loop_init(&tr.L, &lp, &diffusion_task, &tr);
    /* the output directory is made only once the model and data have loaded: a run that cannot start
     * leaves nothing behind */
    df_status st = open_run(&tr);
    if (!st && !p->resume) st = df_mkdir_p(p->out_dir);
    if (!st) train_remove_leftovers(p->out_dir);
    if (!st && !tr.L.done_before) st = open_outputs(&tr);   /* a run with nothing left to do writes nothing */
    if (!st) st = train_loop_run(&tr.L);
    trainer_free(&tr);
    return st;
}
