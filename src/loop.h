/* The training loop both trainers share (diffusion in train.c, classifiers in classifier.c): budgets, the
 * data order, batches, the optimizer step and its non-finite check, EMA, checkpoints and progress. What
 * differs between them (the loss of a batch, work between steps, what a checkpoint holds besides the
 * common state) is a train_task: a table of callbacks the loop calls. Internal: not part of the API. */
#ifndef DF_LOOP_H
#define DF_LOOP_H

#include "internal.h"

struct cJSON;
typedef struct train_loop train_loop;

/* Settings every trainer has. Budgets: stop at the first limit reached (0 = none). A resumed run's budget
 * is its total, counted from its start (minutes: training time of all its sessions); with none given it
 * is the budget the run recorded. */
typedef struct {
    int             batch_size, grad_accum;
    int             flip;            /* random horizontal flips of the training images */
    uint64_t        seed;            /* the data order, the training stream (timesteps, noise, flips, dropout) */
    long            max_steps;
    int             max_epochs;
    double          max_minutes;
    df_optim_params optim;
    int             use_ema;
    double          ema_max_decay, ema_power, ema_inv_gamma;
    int             nonfinite_skip;  /* non-finite steps in a row that are skipped before the run stops */
    const char     *skip_hint;       /* the option that sets nonfinite_skip, named in the stop message (or NULL) */
    long            log_every;       /* a report every N steps (and at the first, the last, and any event) */
    const char     *out_dir;         /* checkpoints go here when the task saves them (NULL: none) */
    long            save_every;      /* a checkpoint every N steps (0: only at the end) */
    int             keep_checkpoints;
    volatile int   *stop;            /* non-zero: stop after this step (a checkpoint is saved) */
} train_loop_params;

/* The per-task parts. ctx is the task's own state; every callback but batch_loss may be NULL. */
typedef struct {
    /* The loss of one batch: the loop's x0 (B, C, H, W) and labels (B) hold the next images in the data
     * order (flipped when flip is on); forward and backward with the gradients added into the model's,
     * which were zeroed at the start of the step. Draws (timesteps, noise) come from L->rng. part counts
     * the step's batches (0 .. grad_accum - 1). */
    df_status (*batch_loss)(void *ctx, train_loop *L, int part, double *loss);
    /* The step's update was applied (its loss and gradients were finite): running statistics take it. */
    void (*step_applied)(void *ctx, train_loop *L);
    /* Work after a step and before its report that is not training time (evaluation): its seconds are
     * not counted against max_minutes. *report = 1 forces a report of this step. last: the budget's
     * last step. */
    df_status (*evaluate)(void *ctx, train_loop *L, int last, int *report);
    /* A report: complete pr with the task's numbers and log it (before any checkpoint of the step, so a
     * checkpoint is never ahead of the log). */
    df_status (*log)(void *ctx, train_loop *L, df_train_progress *pr);
    /* Work after the report and before a checkpoint (sample grids). */
    df_status (*after_log)(void *ctx, train_loop *L, int last);
    /* The end of a run (budget or stop request), before its final checkpoint. */
    df_status (*finish)(void *ctx, train_loop *L);
    /* Checkpoints: the task's files into dir, synced (the loop adds the training state); NULL: no
     * checkpoints. save_state adds the task's fields to training_state.json. */
    df_status (*save)(void *ctx, train_loop *L, const char *dir);
    void (*save_state)(void *ctx, const train_loop *L, struct cJSON *state);
    /* The report, with the step's events (checkpoints included), to the caller. */
    void (*progress)(void *ctx, const df_train_progress *pr);
} train_task;

struct train_loop {
    train_loop_params p;
    const train_task *task;
    void             *ctx;
    const df_dataset *data;
    df_model         *model;
    int               n, c, h, w;   /* images in the data set, their shape */
    size_t            dim;
    df_optimizer      opt;
    df_ema            ema_state;
    float            *ema;          /* EMA weights in the parameters' layout, NULL without EMA */
    df_rng            rng;          /* the training stream */
    long              step, total;  /* steps done; the budget in steps (0: by time only) */
    int               epoch, pos;   /* data order: position in this epoch's permutation */
    int              *perm;
    float            *x0;           /* the batch, sized once: (B, C, H, W) and B labels */
    int              *labels;
    int              *index, *index_epoch;   /* each batch image's index in the data, and the epoch it is read in */
    /* an extra part trained with the model (a text encoder): its weights and gradients, nx values, in the
     * same optimizer (after the model's in its moments), gradient norm and EMA (ema + the model's count) */
    float            *xparams, *xgrads;
    size_t            nx;
    double            loss_avg;
    long              nonfinite_skipped, saved_step;   /* saved_step: the step `latest` names, -1: none */
    int               nonfinite_run, stopped;
    int               warmup_auto;   /* 1: the warmup was scaled to the budget; 2: it waits for the first step's speed */
    /* a decaying schedule over a minutes budget: its end waits for the training speed, measured from the
     * end of this session's first step (at elapsed_first seconds) */
    int               decay_by_speed;
    double            elapsed_first;
    double            t0, untimed;  /* start, and seconds spent evaluating (not training time) */
    double            elapsed_before;   /* training seconds of the run's earlier sessions (a resume's) */
    /* A resumed run's budget: budget_given, the caller gave one (the run's new total); done_before, the
     * run's own budget was already used up when it resumed, so this session has nothing to do. */
    int               budget_given, done_before;
    char              event[4400];  /* what happened at this step ("a; b") */
};

/* Before train_loop_setup: settings, and a fresh training stream (a resume overwrites both from its
 * training state). */
void      train_loop_init(train_loop *L, const train_loop_params *p, const train_task *task, void *ctx);
/* The model and data are there: optimizer, EMA, this epoch's order and the batch buffers. resume_dir
 * (a checkpoint, or NULL) restores the optimizer's moments and counters, keeps the learning-rate schedule
 * the run started with, and refuses a budget given that the run has already reached (DF_ERR_ARG). */
df_status train_loop_setup(train_loop *L, df_model *model, const df_dataset *data, const char *resume_dir);
/* Before train_loop_setup: train n more parameters with the model's (the loop zeroes grads before each
 * step; the task's batch_loss adds into them). */
void      train_loop_add_params(train_loop *L, float *params, float *grads, size_t n);
void      train_loop_free(train_loop *L);
/* Train until a budget is used up or a stop is requested, then finish and save a last checkpoint. A
 * resumed run whose budget was already used up (done_before) only says so and writes nothing. */
df_status train_loop_run(train_loop *L);

/* A seed's bits spread out (splitmix64's finaliser): nearby seeds give unrelated streams. */
uint64_t train_seed_mix(uint64_t z);
/* Seconds of training so far, earlier sessions included (evaluation excluded). */
double train_loop_elapsed(const train_loop *L);
/* Append a note to this step's event text. */
void train_loop_event(train_loop *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- checkpoints ---------------------------------------------------------------------------------------- */

/* Remove what an interrupted run in out_dir left: checkpoint-*.tmp, latest.tmp, loss.csv.tmp.<pid>,
 * samples/NAME.png.tmp.<pid>. */
void      train_remove_leftovers(const char *out_dir);
/* fsync a directory, so the entries renamed into it survive a power cut. */
df_status train_sync_dir(const char *path);

/* Reading training_state.json: a number field checked before any conversion: present (unless optional),
 * in [lo, hi], and whole when `whole`. Returns 0 and records the first bad field, so the caller names it. */
typedef struct {
    const char *bad;   /* the first bad field, NULL while all are good */
    char        why[160];
} state_reader;
int state_num(state_reader *r, const struct cJSON *obj, const char *key, double lo, double hi, int whole,
              int optional, double *out);

/* Parse a training_state.json into *out (free with cJSON_Delete); a file that is not a JSON object is an
 * error naming it. */
df_status train_state_parse(const char *path, struct cJSON **out);

/* Read the loop's part of a training state (settings into L->p, counters, the training stream); the
 * task's part is read by task_fields from the same object. */
df_status train_loop_read_state(train_loop *L, const char *path,
                                void (*task_fields)(void *ctx, state_reader *r, const struct cJSON *state), void *ctx);

#ifdef DF_TEST_HOOKS
/* Fault injection, in test builds only: when step > 0, training steps step .. step + count - 1 (1-based)
 * get `value` written into one gradient, or into the loss when on_loss is set, after the backward pass,
 * so the non-finite checks can be shown to work. */
struct df_train_fault {
    long  step;
    int   count, on_loss;
    float value;
};
extern struct df_train_fault df_train_fault;
/* Called with 0 before and 1 after every training step (when set), so a test can watch what a step does. */
extern void (*df_train_step_watch)(int after);
#endif

#endif
