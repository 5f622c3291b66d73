/* `diffuse train`: fills df_train_params from the command line, shows progress, and turns Ctrl-C or
 * SIGTERM into a clean stop with a checkpoint. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char cmd_train_usage[] =
    "usage: diffuse train [options]\n"
    "\n"
    "Train a diffusion model (DDPM's L_simple). Defaults train the fmnist-s preset on Fashion-MNIST.\n"
    "\n"
    "data and model:\n"
    "  --data PATH           fashion-mnist (default), an IDX file, a CIFAR-10 .bin or directory, or a\n"
    "                        directory of PNG/JPEG images (one subdirectory per class gives labels)\n"
    "  --size N              resize images to N x N (default: the model's sample_size)\n"
    "  --flip                random horizontal flips\n"
    "  --preset NAME         fmnist-s (default) or cifar10\n"
    "  --config FILE         a diffusers UNet2DModel config.json instead of a preset\n"
    "  --init DIR            start from a model or checkpoint directory\n"
    "  --classes             class-conditional on the data's labels (plus a null class for guidance)\n"
    "  --class-dropout P     probability of training a label as the null class (0.1 with --classes), so\n"
    "                        one model also predicts unconditionally (classifier-free guidance)\n"
    "diffusion:\n"
    "  --schedule NAME       linear (default), scaled_linear, squaredcos_cap_v2, sigmoid\n"
    "  --timesteps T         training timesteps (1000)\n"
    "  --beta-start X --beta-end X   (1e-4, 0.02)\n"
    "  --zero-snr            rescale the schedule to zero terminal SNR\n"
    "  --prediction P        epsilon (default), sample or v_prediction\n"
    "  --min-snr-gamma G     min-SNR-gamma loss weighting (0: off)\n"
    "optimisation:\n"
    "  --batch N (64)  --accum N (1)  --optimizer adamw|sgd  --lr X (1e-4)  --warmup N (500)\n"
    "  --lr-decay cosine|linear|constant  --beta1 X (0.95)  --beta2 X (0.999)  --weight-decay X (1e-6)\n"
    "  --momentum X (0.9, sgd)  --grad-clip X (1.0, 0 = off)  --ema-decay X (0.9999)  --no-ema\n"
    "  --skip-nonfinite N    a step whose loss or gradients hold NaN or Inf never updates the weights; by\n"
    "                        default the run stops there (exit 1) with the last good checkpoint as `latest`;\n"
    "                        with N > 0 such a step is skipped and reported, and the run stops only after\n"
    "                        more than N in a row\n"
    "budget (the first reached ends the run; one is required unless resuming):\n"
    "  --steps N  --epochs N  --minutes M\n"
    "output:\n"
    "  --out DIR             run directory (default runs/<preset>)\n"
    "  --resume              continue the run in --out from its latest checkpoint, bit for bit\n"
    "  --save-every N (1000)  --sample-every N (1000)  --samples N (64)  --sample-steps N (50)\n"
    "  --keep N (2)  --log-every N (10)  --seed S (0)  --threads N\n"
    "evaluation while training (its time is shown apart and not counted in --minutes):\n"
    "  --eval-every N        every N steps and at the end, FD and KID of --eval-n EMA samples (500, DDIM\n"
    "                        --eval-steps 25) go into loss.csv and progress.png\n"
    "  --eval-features PATH  feature network (default models/fmnist-features)\n"
    "  --eval-ref DATA       reference images (default fashion-mnist:test)\n"
    "\n"
    "Ctrl-C or SIGTERM finishes the current step, saves a checkpoint and exits with status 0 (a second one\n"
    "exits at once). Checkpoints are written whole before `latest` names them, so a crash, a kill or a full\n"
    "disk (exit 1, naming the file) leaves the previous checkpoint to --resume from.\n";

static volatile int stop_requested;
static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

static void show(void *ctx, const df_train_progress *p) {
    cli_progress *bar = ctx;
    if (p->event) cli_progress_line(bar, p->event);
    if (!(p->images_per_sec > 0)) return;   /* the closing report carries only its event */
    char extra[160];
    snprintf(extra, sizeof extra, "loss %.4f (avg %.4f) %.1f img/s epoch %d", p->loss, p->loss_avg, p->images_per_sec,
             p->epoch);
    cli_progress_draw(bar, (double)p->step, (double)p->total_steps, p->eta, extra);
}

/* What a resumed run takes from its checkpoint: these options cannot change it. */
static const char *const fixed_on_resume[] = {
    "--data",     "--size",      "--flip",          "--schedule", "--timesteps", "--beta-start", "--beta-end",
    "--zero-snr", "--prediction", "--min-snr-gamma", "--batch",    "--accum",     "--optimizer",  "--lr",
    "--warmup",   "--lr-decay",  "--beta1",         "--beta2",    "--weight-decay", "--momentum", "--grad-clip",
    "--ema-decay", "--no-ema",   "--seed",      "--classes",       "--class-dropout",
};

/* Options that contradict each other, before their values are used. Returns 0 or 2 (a usage error). */
static int check_options(int argc, char **argv, const df_train_params *p, const char *preset, const char *config,
                         const char *init, int resume) {
    if (!!preset + !!config + !!init > 1)
        return cli_usage_error("--preset, --config and --init each choose the model: give one");
    if (resume && (preset || config || init))
        return cli_usage_error("--resume continues the model in --out: %s does not apply",
                               preset ? "--preset" : config ? "--config" : "--init");
    for (int i = 0; resume && i < (int)(sizeof fixed_on_resume / sizeof *fixed_on_resume); i++)
        if (cli_given(argc, argv, fixed_on_resume[i]))
            return cli_usage_error("%s: a resumed run keeps the settings it started with (--resume takes only "
                                   "the budget and the output options)", fixed_on_resume[i]);
    if (!resume && p->max_steps <= 0 && p->max_epochs <= 0 && p->max_minutes <= 0)
        return cli_usage_error("give a budget: --steps N, --epochs N or --minutes M");
    if (cli_given(argc, argv, "--class-dropout") && !cli_given(argc, argv, "--classes") && !config && !init)
        return cli_usage_error("--class-dropout drops class labels: it needs --classes (or a class-conditional "
                               "--config or --init model)");
    if (cli_given(argc, argv, "--classes") && init)
        return cli_usage_error("--classes builds a new class-conditional model: --init's model keeps its own classes");
    if (cli_given(argc, argv, "--ema-decay") && cli_given(argc, argv, "--no-ema"))
        return cli_usage_error("--ema-decay sets the moving average that --no-ema turns off: give one");
    return 0;
}

/* Settings that contradict each other, once parsed. Returns 0 or 2 (a usage error). */
static int check_settings(int argc, char **argv, const df_train_params *p) {
    if (p->resume) return 0;   /* the checkpoint's settings, and check_options refused any others */
    if (p->optim.kind == DF_OPT_SGD && (cli_given(argc, argv, "--beta1") || cli_given(argc, argv, "--beta2")))
        return cli_usage_error("%s is AdamW's; the sgd optimizer has --momentum",
                               cli_given(argc, argv, "--beta1") ? "--beta1" : "--beta2");
    if (p->optim.kind != DF_OPT_SGD && cli_given(argc, argv, "--momentum"))
        return cli_usage_error("--momentum is SGD's: it goes with --optimizer sgd");
    if (p->beta_end < p->beta_start)
        return cli_usage_error("--beta-end %g is below --beta-start %g", p->beta_end, p->beta_start);
    int betas_given = cli_given(argc, argv, "--beta-start") || cli_given(argc, argv, "--beta-end");
    if (p->beta_schedule == DF_BETA_COSINE && betas_given)
        return cli_usage_error("%s: the squaredcos_cap_v2 schedule has no beta range",
                               cli_given(argc, argv, "--beta-start") ? "--beta-start" : "--beta-end");
    if (p->sample_count > 0 && p->sample_every > 0 && p->sample_steps > p->num_train_timesteps)
        return cli_usage_error("--sample-steps %d%s is more than the %d training timesteps", p->sample_steps,
                               cli_given(argc, argv, "--sample-steps") ? "" : " (the default)", p->num_train_timesteps);
    if (p->preset) {
        df_unet_config cfg;
        if (df_unet_config_preset(p->preset, &cfg)) return cli_usage_error("--preset: %s", df_error());
        int factor = 1 << (cfg.num_levels - 1);
        if (p->image_size > 0 && p->image_size % factor)
            return cli_usage_error("--size %d: the %s model halves images %d times: give a multiple of %d",
                                   p->image_size, p->preset, cfg.num_levels - 1, factor);
    }
    if (p->init_dir && cli_same_file(p->out_dir, p->init_dir))
        return cli_usage_error("--out %s is the --init model: write the run elsewhere", p->out_dir);
    if (p->data && cli_same_file(p->out_dir, p->data))
        return cli_usage_error("--out %s is the --data directory: write the run elsewhere", p->out_dir);
    return 0;
}

/* The files the run reads and the directory it writes, before any work. Returns 0 or 1 (reported). */
static int check_files(const df_train_params *p) {
    struct stat sb;
    if (cli_check_output("--out", p->out_dir, 1)) return 1;
    char latest[4200];
    snprintf(latest, sizeof latest, "%s/latest", p->out_dir);
    int has_run = lstat(latest, &sb) == 0;
    if (p->resume && !has_run)
        return cli_die("--resume: %s holds no checkpoint to resume from (leave out --resume to start a run)",
                       p->out_dir);
    if (!p->resume && has_run)
        return cli_die("--out %s already holds a run: continue it with --resume or choose another --out", p->out_dir);
    if (p->resume) return 0;
    if (p->config_path) {
        df_unet_config cfg;
        if (cli_check_input("--config", p->config_path, 0)) return 1;
        if (df_unet_config_load(p->config_path, &cfg)) return cli_fail(DF_ERR_CONFIG);
    }
    if (p->init_dir && cli_check_input("--init", p->init_dir, 1)) return 1;
    return p->data ? cli_check_data("--data", p->data) : 0;
}

int cmd_train(int argc, char **argv) {
    df_train_params p;
    df_train_params_default(&p);
    const char *preset = NULL, *config = NULL, *init = NULL, *out = NULL, *schedule = NULL, *prediction = NULL,
               *optimizer = NULL, *decay = NULL;
    int zero_snr = 0, no_ema = 0, flip = 0, resume = 0;
    double ema_decay = p.ema_max_decay;
    cli_opt opts[] = {
        {"--data", OPT_STR, &p.data, 0, 0},
        {"--size", OPT_INT, &p.image_size, 1, 4096},
        {"--flip", OPT_FLAG, &flip, 0, 0},
        {"--classes", OPT_FLAG, &p.class_conditional, 0, 0},
        {"--class-dropout", OPT_DOUBLE, &p.class_dropout, 0, 0.99},
        {"--preset", OPT_STR, &preset, 0, 0},
        {"--config", OPT_STR, &config, 0, 0},
        {"--init", OPT_STR, &init, 0, 0},
        {"--schedule", OPT_STR, &schedule, 0, 0},
        {"--timesteps", OPT_INT, &p.num_train_timesteps, 2, 100000},
        {"--beta-start", OPT_DOUBLE, &p.beta_start, 1e-12, 0.999},
        {"--beta-end", OPT_DOUBLE, &p.beta_end, 1e-12, 0.999},
        {"--zero-snr", OPT_FLAG, &zero_snr, 0, 0},
        {"--prediction", OPT_STR, &prediction, 0, 0},
        {"--min-snr-gamma", OPT_DOUBLE, &p.min_snr_gamma, 0, 1e6},
        {"--batch", OPT_INT, &p.batch_size, 1, 4096},
        {"--accum", OPT_INT, &p.grad_accum, 1, 1024},
        {"--optimizer", OPT_STR, &optimizer, 0, 0},
        {"--lr", OPT_DOUBLE, &p.optim.lr, 1e-12, 10},
        {"--warmup", OPT_LONG, &p.optim.warmup_steps, 0, 1e9},
        {"--lr-decay", OPT_STR, &decay, 0, 0},
        {"--beta1", OPT_DOUBLE, &p.optim.beta1, 0, 0.999999},
        {"--beta2", OPT_DOUBLE, &p.optim.beta2, 0, 0.999999},
        {"--weight-decay", OPT_DOUBLE, &p.optim.weight_decay, 0, 10},
        {"--momentum", OPT_DOUBLE, &p.optim.momentum, 0, 0.999999},
        {"--grad-clip", OPT_DOUBLE, &p.optim.grad_clip, 0, 1e9},
        {"--skip-nonfinite", OPT_INT, &p.nonfinite_skip, 0, 1e6},
        {"--ema-decay", OPT_DOUBLE, &ema_decay, 0, 1},
        {"--no-ema", OPT_FLAG, &no_ema, 0, 0},
        {"--steps", OPT_LONG, &p.max_steps, 1, 1e12},
        {"--epochs", OPT_INT, &p.max_epochs, 1, 1e6},
        {"--minutes", OPT_DOUBLE, &p.max_minutes, 1e-3, 1e7},
        {"--out", OPT_STR, &out, 0, 0},
        {"--resume", OPT_FLAG, &resume, 0, 0},
        {"--save-every", OPT_LONG, &p.save_every, 0, 1e12},
        {"--sample-every", OPT_LONG, &p.sample_every, 0, 1e12},
        {"--samples", OPT_INT, &p.sample_count, 0, 1024},
        {"--sample-steps", OPT_INT, &p.sample_steps, 1, 100000},
        {"--keep", OPT_INT, &p.keep_checkpoints, 1, 1000},
        {"--log-every", OPT_LONG, &p.log_every, 1, 1e9},
        {"--seed", OPT_U64, &p.seed, 0, 0},
        {"--eval-every", OPT_LONG, &p.eval_every, 1, 1e12},
        {"--eval-n", OPT_INT, &p.eval_n, 2, 1000000},
        {"--eval-steps", OPT_INT, &p.eval_steps, 1, 100000},
        {"--eval-features", OPT_STR, &p.eval_features, 0, 0},
        {"--eval-ref", OPT_STR, &p.eval_ref, 0, 0},
        {NULL, OPT_FLAG, NULL, 0, 0},
    };
    const char *pos[1];
    int npos;
    int rc = cli_parse("train", argc, argv, opts, pos, 0, &npos, cmd_train_usage);
    if (rc) return rc;
    rc = check_options(argc, argv, &p, preset, config, init, resume);
    if (rc) return rc;
    p.preset = preset ? preset : (config || init) ? NULL : "fmnist-s";
    p.config_path = config;
    p.init_dir = init;
    p.flip = flip;
    p.resume = resume;
    if (p.class_conditional && !cli_given(argc, argv, "--class-dropout")) p.class_dropout = 0.1;
    p.zero_terminal_snr = zero_snr;
    p.use_ema = !no_ema;
    p.ema_max_decay = ema_decay;
    char outbuf[512];
    if (!out) {
        snprintf(outbuf, sizeof outbuf, "runs/%s", p.preset ? p.preset : "model");
        out = outbuf;
    }
    p.out_dir = out;
    if (schedule && df_beta_kind_parse(schedule, &p.beta_schedule))
        return cli_usage_error("--schedule: %s", df_error());
    if (prediction && df_prediction_parse(prediction, &p.prediction))
        return cli_usage_error("--prediction: %s", df_error());
    if (optimizer) {
        if (!strcmp(optimizer, "adamw")) p.optim.kind = DF_OPT_ADAMW;
        else if (!strcmp(optimizer, "sgd")) p.optim.kind = DF_OPT_SGD;
        else return cli_usage_error("--optimizer: expected adamw or sgd, got \"%s\"", optimizer);
    }
    if (decay) {
        if (!strcmp(decay, "cosine")) p.optim.decay = DF_LR_COSINE;
        else if (!strcmp(decay, "linear")) p.optim.decay = DF_LR_LINEAR;
        else if (!strcmp(decay, "constant")) p.optim.decay = DF_LR_CONSTANT;
        else return cli_usage_error("--lr-decay: expected cosine, linear or constant, got \"%s\"", decay);
    }
    const char *eval_only[] = {"--eval-n", "--eval-steps", "--eval-features", "--eval-ref"};
    for (int i = 0; i < 4 && !p.eval_every; i++)
        if (cli_given(argc, argv, eval_only[i])) return cli_usage_error("%s goes with --eval-every N", eval_only[i]);
    char feat_buf[4200];
    if (p.eval_every && !p.eval_features) p.eval_features = cli_default_features(feat_buf, sizeof feat_buf);
    if (p.eval_every && cli_check_data("--eval-ref", p.eval_ref)) return 1;
    if (p.eval_every && access(p.eval_features, R_OK) != 0)
        return cli_die("--eval-features %s: no such feature network", p.eval_features);
    if ((rc = check_settings(argc, argv, &p)) != 0 || (rc = check_files(&p)) != 0) return rc;

    /* the first Ctrl-C or SIGTERM asks for a checkpoint and a clean exit; the handler then reverts to the
     * default, so a second one ends the process at once (the last published checkpoint stays whole) */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART | SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* past a file-size limit (ulimit -f) write() should fail with EFBIG and be reported, not kill us */
    signal(SIGXFSZ, SIG_IGN);
    p.stop = &stop_requested;
    cli_progress bar;
    cli_progress_init(&bar, "train");
    p.progress = show;
    p.progress_ctx = &bar;
    fprintf(stderr, "diffuse train: %s, %d threads, output in %s\n", resume ? "resuming" : "starting", omp_get_max_threads(),
            out);
    df_status st = df_train(&p);
    cli_progress_done(&bar);
    if (st) return cli_fail(st);
    char latest[4200];
    struct stat lsb;
    snprintf(latest, sizeof latest, "%s/latest", out);
    if (stop_requested && lstat(latest, &lsb) != 0)
        fprintf(stderr, "diffuse train: stopped before the first step; nothing was saved\n");
    else if (stop_requested)
        fprintf(stderr, "diffuse train: stopped; continue with: diffuse train --resume --out %s\n", out);
    else fprintf(stderr, "diffuse train: done; try: diffuse sample %s --out samples.png\n", out);
    return 0;
}
