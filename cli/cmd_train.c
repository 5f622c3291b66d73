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

static int train_main(int argc, char **argv);

const cli_command cmd_train = {
    .name = "train",
    .usage = "usage: diffuse train (--steps N | --epochs N | --minutes M | --resume) [options]",
    .summary = "train a model (default: fmnist-s on Fashion-MNIST)",
    .about = "Train a diffusion model (DDPM's L_simple, or with --learn-variance improved DDPM's hybrid loss). Defaults train the fmnist-s preset on Fashion-MNIST.",
    .epilog = "--resume continues the run in --out bit for bit (with as many threads). A budget given with it is the\n"
              "run's new total, counted from the start of the run (--minutes: training time of all its sessions); one\n"
              "the run has already reached is refused. Without a budget the run finishes the one it has; a run that\n"
              "already finished says so, writes nothing and exits with status 0. Options that change the model, the\n"
              "data, the diffusion or the optimisation (and --seed) are refused by name; the output, sampling,\n"
              "evaluation and logging options and --skip-nonfinite apply as given; left out, they stay as the run's\n"
              "last session had them (--threads is each session's own). The learning-rate schedule stays the one\n"
              "the run started with: when a larger budget outgrows a decaying one, the steps past its end use its\n"
              "final rate, 0, and the run says so.\n\n"
              "Ctrl-C or SIGTERM finishes the current step, saves a checkpoint and exits with status 0 (a second one\n"
              "exits at once). Checkpoints are written whole before `latest` names them, so a crash, a kill or a full\n"
              "disk (exit 1, naming the file) leaves the previous checkpoint to --resume from.",
    .run = train_main,
};

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
    if (p->total_steps > 0 || !(p->eta >= 0)) {
        cli_progress_draw(bar, (double)p->step, (double)p->total_steps, p->eta, extra);
        return;
    }
    /* a budget in minutes: the bar is the training time used of it (the library's eta is the time left) */
    char used[16], budget[16], count[64];
    cli_format_duration(p->elapsed, used, sizeof used);
    cli_format_duration(p->elapsed + p->eta, budget, sizeof budget);
    snprintf(count, sizeof count, "step %ld, %s of %s", p->step, used, budget);
    cli_progress_draw_part(bar, count, p->elapsed / CLI_MAX(p->elapsed + p->eta, 1e-9), p->eta, extra);
}

/* What a resumed run takes from its checkpoint: these options cannot change it. */
static const char *const fixed_on_resume[] = {
    "--data",     "--size",      "--flip",          "--schedule", "--timesteps", "--beta-start", "--beta-end",
    "--zero-snr", "--prediction", "--min-snr-gamma", "--batch",    "--accum",     "--optimizer",  "--lr",
    "--warmup",   "--lr-decay",  "--beta1",         "--beta2",    "--weight-decay", "--momentum", "--grad-clip",
    "--ema-decay", "--no-ema",   "--seed",      "--classes",       "--class-dropout", "--edm",
    "--sigma-data", "--p-mean",  "--p-std",     "--learn-variance", "--vlb-weight",   "--timestep-sampling",
    "--captions",  "--tokenizer", "--text-encoder", "--text-config", "--cross-attention-dim", "--freeze-text-encoder",
    "--caption-dropout",
};

/* Options that contradict each other. Returns 0 or 2 (a usage error). */
static int check_options(const cli_args *a, const df_train_params *p) {
    int preset = cli_given(a, "--preset"), config = cli_given(a, "--config"), init = cli_given(a, "--init");
    if (preset + config + init > 1) return cli_usage_error("--preset, --config and --init each choose the model: give one");
    if (p->resume && (preset || config || init))
        return cli_usage_error("--resume continues the model in --out: %s does not apply",
                               preset ? "--preset" : config ? "--config" : "--init");
    for (int i = 0; p->resume && i < CLI_COUNTOF(fixed_on_resume); i++)
        if (cli_given(a, fixed_on_resume[i]))
            return cli_usage_error("%s: a resumed run keeps the settings it started with (--resume takes a budget "
                                   "and the output, sampling, evaluation and logging options)", fixed_on_resume[i]);
    if (!p->resume && p->max_steps <= 0 && p->max_epochs <= 0 && p->max_minutes <= 0)
        return cli_usage_error("give a budget: --steps N, --epochs N or --minutes M");
    if (cli_given(a, "--class-dropout") && !cli_given(a, "--classes") && !config && !init)
        return cli_usage_error("--class-dropout drops class labels: it needs --classes (or a class-conditional "
                               "--config or --init model)");
    if (!p->resume && !p->learn_variance && (cli_given(a, "--vlb-weight") || cli_given(a, "--timestep-sampling")))
        return cli_usage_error("%s goes with --learn-variance (the L_vlb term trains the learned variances)",
                               cli_given(a, "--vlb-weight") ? "--vlb-weight" : "--timestep-sampling");
    static const char *const text_only[] = {"--tokenizer", "--text-encoder", "--text-config", "--cross-attention-dim",
                                            "--freeze-text-encoder", "--caption-dropout", "--sample-prompts"};
    for (int i = 0; i < CLI_COUNTOF(text_only) && !p->text_conditional && !p->resume && !init; i++)
        if (cli_given(a, text_only[i])) return cli_usage_error("%s goes with --captions (text-to-image training)", text_only[i]);
    if (p->text_conditional && cli_given(a, "--classes"))
        return cli_usage_error("--captions and --classes: a model conditions on text or on classes, not both");
    if (cli_given(a, "--text-encoder") && (cli_given(a, "--text-config") || cli_given(a, "--cross-attention-dim")))
        return cli_usage_error("--text-encoder brings its own config and width: %s does not apply",
                               cli_given(a, "--text-config") ? "--text-config" : "--cross-attention-dim");
    if (cli_given(a, "--freeze-text-encoder") && !cli_given(a, "--text-encoder") && !init)
        return cli_usage_error("--freeze-text-encoder keeps a trained encoder as it is: give it with --text-encoder DIR");
    if (cli_given(a, "--classes") && init)
        return cli_usage_error("--classes builds a new class-conditional model: --init's model keeps its own classes");
    if (cli_given(a, "--ema-decay") && cli_given(a, "--no-ema"))
        return cli_usage_error("--ema-decay sets the moving average that --no-ema turns off: give one");
    static const char *const edm_only[] = {"--sigma-data", "--p-mean", "--p-std"};
    for (int i = 0; i < CLI_COUNTOF(edm_only) && !p->edm && !p->resume; i++)
        if (cli_given(a, edm_only[i])) return cli_usage_error("%s goes with --edm", edm_only[i]);
    if (p->edm && p->prediction != DF_PRED_EPSILON)
        return cli_usage_error("--edm preconditions the network its own way: --prediction %s does not apply",
                               df_prediction_name(p->prediction));
    if (p->edm && p->min_snr_gamma > 0)
        return cli_usage_error("--edm weights the loss its own way: --min-snr-gamma does not apply");
    if (p->edm && p->learn_variance)
        return cli_usage_error("--edm's denoiser has no variance output: --learn-variance does not apply");
    static const char *const eval_only[] = {"--eval-n", "--eval-steps", "--eval-features", "--eval-ref"};
    for (int i = 0; i < CLI_COUNTOF(eval_only) && !p->eval_every; i++)
        if (cli_given(a, eval_only[i])) return cli_usage_error("%s goes with --eval-every N", eval_only[i]);
    return 0;
}

/* Settings that contradict each other, once parsed. Returns 0 or 2 (a usage error). */
static int check_settings(const cli_args *a, const df_train_params *p) {
    if (p->resume) return 0;   /* the checkpoint's settings, and check_options refused any others */
    if (p->optim.kind == DF_OPT_SGD && (cli_given(a, "--beta1") || cli_given(a, "--beta2")))
        return cli_usage_error("%s is AdamW's; the sgd optimizer has --momentum",
                               cli_given(a, "--beta1") ? "--beta1" : "--beta2");
    if (p->optim.kind != DF_OPT_SGD && cli_given(a, "--momentum"))
        return cli_usage_error("--momentum is SGD's: it goes with --optimizer sgd");
    if (p->beta_end < p->beta_start)
        return cli_usage_error("--beta-end %g is below --beta-start %g", p->beta_end, p->beta_start);
    int betas_given = cli_given(a, "--beta-start") || cli_given(a, "--beta-end");
    if (p->beta_schedule == DF_BETA_COSINE && betas_given)
        return cli_usage_error("%s: the squaredcos_cap_v2 schedule has no beta range",
                               cli_given(a, "--beta-start") ? "--beta-start" : "--beta-end");
    if (p->sample_count > 0 && p->sample_every > 0 && p->sample_steps > p->num_train_timesteps)
        return cli_usage_error("--sample-steps %d%s is more than the %d training timesteps", p->sample_steps,
                               cli_given(a, "--sample-steps") ? "" : " (the default)", p->num_train_timesteps);
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
    if (p->tokenizer && cli_check_input("--tokenizer", p->tokenizer, 1)) return 1;
    if (p->text_encoder && cli_check_input("--text-encoder", p->text_encoder, 1)) return 1;
    if (p->text_config && cli_check_input("--text-config", p->text_config, 0)) return 1;
    return p->data ? cli_check_data("--data", p->data) : 0;
}

/* The optimizers and learning-rate schedules by name, in the library's enum order. */
static const char *const optimizer_names[] = {[DF_OPT_ADAMW] = "adamw", [DF_OPT_SGD] = "sgd"};
static const char *const decay_names[] = {[DF_LR_CONSTANT] = "constant", [DF_LR_COSINE] = "cosine", [DF_LR_LINEAR] = "linear"};
_Static_assert(CLI_COUNTOF(optimizer_names) == DF_OPT_COUNT && CLI_COUNTOF(decay_names) == DF_LR_COUNT, "names");
static const char *optimizer_name(int i) { return optimizer_names[i]; }
static const char *decay_name(int i) { return decay_names[i]; }
static const cli_choices optimizers = {DF_OPT_COUNT, optimizer_name, NULL};
static const cli_choices decays = {DF_LR_COUNT, decay_name, NULL};
static const char *const sampling_names[] = {[DF_TIMESTEPS_UNIFORM] = "uniform", [DF_TIMESTEPS_IMPORTANCE] = "importance"};
_Static_assert(CLI_COUNTOF(sampling_names) == DF_TIMESTEPS_COUNT, "names");
static const char *sampling_name(int i) { return sampling_names[i]; }
static const cli_choices samplings = {DF_TIMESTEPS_COUNT, sampling_name, NULL};

/* What a new run will do, for its start line: model, data, objective, conditioning, budget and schedule. */
static void describe_run(const df_train_params *p, char *buf, size_t cap) {
    size_t n = 0;
#define ADD(...) (n += (size_t)snprintf(buf + n, n < cap ? cap - n : 0, __VA_ARGS__))
    const char *model = p->init_dir ? p->init_dir : p->config_path ? p->config_path : p->preset ? p->preset : "fmnist-s";
    ADD("starting %s%s on %s", p->init_dir ? "from " : "", model, p->data ? p->data : "fashion-mnist");
    if (p->class_conditional) ADD(", class-conditional");
    if (p->text_conditional)
        ADD(", text-conditional on its captions (%s text encoder)",
            p->freeze_text_encoder ? "a frozen" : p->text_encoder ? "a given" : "a new");
    if (p->edm) ADD(", EDM objective");
    else ADD(", predicting %s%s", df_prediction_name(p->prediction), p->min_snr_gamma > 0 ? " with min-SNR weights" : "");
    if (p->learn_variance)
        ADD(" and learned variances (hybrid loss%s)", p->timestep_sampling == DF_TIMESTEPS_IMPORTANCE ? ", importance-sampled t" : "");
    ADD("; %d images a step for ", p->batch_size * p->grad_accum);
    const char *sep = "";
    if (p->max_minutes > 0) ADD("%g minutes", p->max_minutes), sep = " or ";
    if (p->max_steps > 0) ADD("%s%ld step%s", sep, p->max_steps, p->max_steps == 1 ? "" : "s"), sep = " or ";
    if (p->max_epochs > 0) ADD("%s%d epoch%s", sep, p->max_epochs, p->max_epochs == 1 ? "" : "s");
    ADD(", lr %g (", p->optim.lr);
    if (p->optim.warmup_steps >= 0) ADD("%ld warmup steps", p->optim.warmup_steps);
    else ADD("a warmup of 10%% of the budget");
    if (p->optim.decay != DF_LR_CONSTANT) ADD(", then %s decay to 0", decay_name(p->optim.decay));
    ADD(")");
#undef ADD
}

/* The command line into p (defaults: df_train_params_default's, shown by --help as they are). Returns 0,
 * CLI_HELP, or the exit code after reporting. */
static int parse(int argc, char **argv, df_train_params *p, const char **prompts_file, char *outbuf, size_t outcap) {
    int no_ema = 0;
    const cli_opt opts[] = {
        OPT_SECTION("data and model:"),
        OPT_STR("--data", &p->data, .meta = "PATH", .help = "fashion-mnist, an IDX file, a CIFAR-10 .bin or directory, "
                "or a directory of PNG/JPEG images, where one subdirectory per class gives labels"),
        OPT_INT("--size", &p->image_size, .lo = 1, .hi = 4096, .meta = "N", .def = "the model's sample_size",
                .help = "resize images to N x N"),
        OPT_FLAG("--flip", &p->flip, .help = "random horizontal flips"),
        OPT_FLAG("--strict", &p->strict_data, .help = "refuse a folder holding an unreadable image, naming it (without it, "
                 "such images are skipped and counted)"),
        OPT_STR("--preset", &p->preset, .meta = "NAME", .help = "the model: " DF_PRESETS),
        OPT_STR("--config", &p->config_path, .meta = "FILE", .help = "a diffusers UNet2DModel config.json instead of a preset"),
        OPT_STR("--init", &p->init_dir, .meta = "DIR", .help = "start from a model or checkpoint directory"),
        OPT_FLAG("--classes", &p->class_conditional,
                 .help = "class-conditional on the data's labels, plus a null class for guidance"),
        OPT_DOUBLE("--class-dropout", &p->class_dropout, .lo = 0, .hi = 0.99, .meta = "P", .def = "0.1 with --classes",
                   .help = "probability of training a label as the null class, so that one model also predicts "
                           "unconditionally, as classifier-free guidance needs"),
        OPT_SECTION("text-to-image (an image folder with metadata.jsonl or a .txt of captions beside each image):"),
        OPT_FLAG("--captions", &p->text_conditional,
                 .help = "train on the data's captions: the model attends to a text encoder's states by cross-attention "
                         "(diffusers' UNet2DConditionModel); an image with several captions shows one per epoch"),
        OPT_STR("--tokenizer", &p->tokenizer, .meta = "DIR", .def = "--init's",
                .help = "a CLIPTokenizer folder (vocab.json, merges.txt): its context is the texts' length"),
        OPT_STR("--text-encoder", &p->text_encoder, .meta = "DIR", .def = "new weights",
                .help = "a CLIPTextModel folder to start from (config.json, model.safetensors)"),
        OPT_STR("--text-config", &p->text_config, .meta = "FILE",
                .def = "2 layers as wide as --cross-attention-dim, 32-wide heads",
                .help = "a CLIPTextConfig config.json for a new text encoder"),
        OPT_INT("--cross-attention-dim", &p->cross_attention_dim, .lo = 1, .hi = 4096, .meta = "N",
                .def = "128, or the text encoder's width", .help = "the width of a new text encoder's states"),
        OPT_FLAG("--freeze-text-encoder", &p->freeze_text_encoder,
                 .help = "keep the given text encoder as it is (it trains with the U-Net otherwise)"),
        OPT_DOUBLE("--caption-dropout", &p->caption_dropout, .lo = 0, .hi = 0.99, .meta = "P",
                   .help = "probability of training an image with the empty text, so that one model also predicts "
                           "unconditionally, as classifier-free guidance needs"),
        OPT_STR("--sample-prompts", prompts_file, .meta = "FILE", .def = "the first images' captions",
                .help = "the grids' prompts, one per line, a row each"),
        OPT_SECTION("diffusion:"),
        OPT_ENUM("--schedule", &p->beta_schedule, &cli_beta_schedules, .meta = "NAME", .help = "beta schedule"),
        OPT_INT("--timesteps", &p->num_train_timesteps, .lo = 2, .hi = 100000, .meta = "T", .help = "training timesteps"),
        OPT_DOUBLE("--beta-start", &p->beta_start, .lo = 1e-12, .hi = 0.999, .meta = "X", .help = "the first beta"),
        OPT_DOUBLE("--beta-end", &p->beta_end, .lo = 1e-12, .hi = 0.999, .meta = "X", .help = "the last beta"),
        OPT_FLAG("--zero-snr", &p->zero_terminal_snr, .help = "rescale the schedule to zero terminal SNR"),
        OPT_ENUM("--prediction", &p->prediction, &cli_predictions, .meta = "P", .help = "what the network predicts"),
        OPT_DOUBLE("--min-snr-gamma", &p->min_snr_gamma, .lo = 0, .hi = 1e6, .meta = "G",
                   .help = "min-SNR-gamma loss weighting (Hang et al. 2023): each noise level's loss weighted by "
                           "min(SNR, G) / SNR when predicting epsilon, min(SNR, G) / (SNR + 1) for v (the paper uses G = 5, "
                           "which wins unconditionally at 20 minutes: docs/quality.md), 0 for none"),
        OPT_FLAG("--edm", &p->edm,
                 .help = "EDM preconditioning, loss weighting and log-normal noise levels (Karras et al. 2022, "
                         "table 1); sampled with every sampler, saved as diffusers' EDMEulerScheduler"),
        OPT_DOUBLE("--sigma-data", &p->edm_params.sigma_data, .lo = 1e-3, .hi = 100, .meta = "X",
                   .help = "EDM: the data's standard deviation"),
        OPT_DOUBLE("--p-mean", &p->edm_params.p_mean, .lo = -10, .hi = 10, .meta = "X",
                   .help = "EDM: mean of ln(sigma) in training"),
        OPT_DOUBLE("--p-std", &p->edm_params.p_std, .lo = 0, .hi = 10, .meta = "X",
                   .help = "EDM: standard deviation of ln(sigma) in training"),
        OPT_FLAG("--learn-variance", &p->learn_variance,
                 .help = "learn the reverse steps' variances (Nichol & Dhariwal 2021, improved DDPM sec. 3.1): the model "
                         "has twice the output channels (diffusers' variance_type learned_range) and trains the hybrid "
                         "loss L_simple + lambda L_vlb; DDPM sampling and bits/dim then use the learned variances, the "
                         "other samplers the prediction alone"),
        OPT_DOUBLE("--vlb-weight", &p->vlb_weight, .lo = 0, .hi = 1e6, .meta = "X",
                   .help = "lambda of the hybrid loss; it weights T L_t, the bound's one-term estimate, so 0.001 at "
                           "T = 1000 weights L_t by 1 as the paper does (L_vlb trains the variances alone: the mean it "
                           "uses is held fixed)"),
        OPT_ENUM("--timestep-sampling", &p->timestep_sampling, &samplings, .meta = "NAME",
                 .help = "how t is drawn with --learn-variance. importance (improved DDPM sec. 3.3): p_t ~ "
                         "sqrt(E[L_t^2]) over each t's last 10 L_vlb values (uniform until every t has 10; mixed with "
                         "0.001 uniform), each sample's whole hybrid loss weighted by 1 / (T p_t) so both terms stay "
                         "unbiased (the paper samples the hybrid loss uniformly and importance-samples L_vlb trained "
                         "alone); checkpoints keep the history"),
        OPT_SECTION("optimisation:"),
        OPT_INT("--batch", &p->batch_size, .lo = 1, .hi = 4096, .meta = "N", .help = "images per step"),
        OPT_INT("--accum", &p->grad_accum, .lo = 1, .hi = 1024, .meta = "N", .help = "batches accumulated per step"),
        OPT_ENUM("--optimizer", &p->optim.kind, &optimizers, .meta = "NAME", .help = "the optimizer"),
        OPT_DOUBLE("--lr", &p->optim.lr, .lo = 1e-12, .hi = 10, .meta = "X", .help = "peak learning rate"),
        OPT_LONG("--warmup", &p->optim.warmup_steps, .lo = 0, .hi = 1e9, .meta = "N",
                 .def = "10% of the budget, at most 500; for --minutes, of the steps the first step's speed allows",
                 .help = "linear warmup steps (a budget that ends inside the warmup is warned of)"),
        OPT_ENUM("--lr-decay", &p->optim.decay, &decays, .meta = "NAME",
                 .help = "learning rate after the warmup, reaching 0 at the budget's end (with --minutes only, at the "
                         "step the speed of the first steps says the budget ends)"),
        OPT_DOUBLE("--beta1", &p->optim.beta1, .lo = 0, .hi = 0.999999, .meta = "X", .help = "AdamW's beta1"),
        OPT_DOUBLE("--beta2", &p->optim.beta2, .lo = 0, .hi = 0.999999, .meta = "X", .help = "AdamW's beta2"),
        OPT_DOUBLE("--weight-decay", &p->optim.weight_decay, .lo = 0, .hi = 10, .meta = "X", .help = "weight decay"),
        OPT_DOUBLE("--momentum", &p->optim.momentum, .lo = 0, .hi = 0.999999, .meta = "X", .help = "SGD's momentum"),
        OPT_DOUBLE("--grad-clip", &p->optim.grad_clip, .lo = 0, .hi = 1e9, .meta = "X",
                   .help = "clip the gradients' global norm to X, 0 for no clipping"),
        OPT_DOUBLE("--ema-decay", &p->ema_max_decay, .lo = 0, .hi = 1, .meta = "X",
                   .help = "the weights' moving average: its largest decay"),
        OPT_FLAG("--no-ema", &no_ema, .help = "no moving average of the weights"),
        OPT_INT("--skip-nonfinite", &p->nonfinite_skip, .lo = 0, .hi = 1e6, .meta = "N",
                .help = "a step whose loss or gradients hold NaN or Inf never updates the weights; with 0 the run stops "
                        "there (exit 1) with the last good checkpoint as `latest`; with N > 0 such a step is skipped and "
                        "reported, and the run stops only after more than N in a row"),
        OPT_SECTION("budget (the first reached ends the run; one is required unless resuming, when it is the run's new total):"),
        OPT_LONG("--steps", &p->max_steps, .lo = 1, .hi = 1e12, .meta = "N", .def = "", .help = "optimizer steps"),
        OPT_INT("--epochs", &p->max_epochs, .lo = 1, .hi = 1e6, .meta = "N", .def = "", .help = "passes over the data"),
        OPT_DOUBLE("--minutes", &p->max_minutes, .lo = 1e-3, .hi = 1e7, .meta = "M", .def = "",
                   .help = "minutes of training"),
        OPT_SECTION("output:"),
        OPT_STR("--out", &p->out_dir, .meta = "DIR", .def = "runs/PRESET; runs/model with --config or --init", .help = "the run directory"),
        OPT_FLAG("--resume", &p->resume, .help = "continue the run in --out from its latest checkpoint, bit for bit (see below)"),
        OPT_LONG("--save-every", &p->save_every, .lo = 0, .hi = 1e12, .meta = "N", .help = "checkpoint every N steps"),
        OPT_LONG("--sample-every", &p->sample_every, .lo = 0, .hi = 1e12, .meta = "N",
                 .help = "a grid of samples every N steps, 0 for only at the end"),
        OPT_INT("--samples", &p->sample_count, .lo = 0, .hi = 1024, .meta = "N", .help = "images in the grid"),
        OPT_INT("--sample-steps", &p->sample_steps, .lo = 1, .hi = 100000, .meta = "N", .help = "DDIM steps for the grid"),
        OPT_INT("--keep", &p->keep_checkpoints, .lo = 1, .hi = 1000, .meta = "N", .help = "checkpoints kept"),
        OPT_LONG("--log-every", &p->log_every, .lo = 1, .hi = 1e9, .meta = "N", .help = "a row of loss.csv every N steps"),
        OPT_U64("--seed", &p->seed, .meta = "S", .help = "seed of the weights, the data order and the noise"),
        OPT_SECTION("evaluation while training (its time is shown apart and not counted in --minutes):"),
        OPT_LONG("--eval-every", &p->eval_every, .lo = 1, .hi = 1e12, .meta = "N", .def = "",
                 .help = "every N steps and at the end, FD and KID of EMA samples go into loss.csv and progress.png"),
        OPT_INT("--eval-n", &p->eval_n, .lo = 2, .hi = 1000000, .meta = "N", .help = "images scored"),
        OPT_INT("--eval-steps", &p->eval_steps, .lo = 1, .hi = 100000, .meta = "N", .help = "their DDIM steps"),
        OPT_STR("--eval-features", &p->eval_features, .meta = "PATH", .def = "models/fmnist-features",
                .help = "feature network"),
        OPT_STR("--eval-ref", &p->eval_ref, .meta = "DATA", .help = "reference images"),
        CLI_END,
    };
    cli_args a;
    int rc = cli_parse(&cmd_train, opts, argc, argv, &a);
    if (rc) return rc;
    if ((rc = check_options(&a, p))) return rc;
    /* the model: --preset, --config or --init, the fmnist-s preset when none is given */
    if (!cli_given(&a, "--preset") && (p->config_path || p->init_dir)) p->preset = NULL;
    if (p->class_conditional && !cli_given(&a, "--class-dropout")) p->class_dropout = 0.1;
    p->use_ema = !no_ema;
    if (!cli_given(&a, "--out")) {
        snprintf(outbuf, outcap, "runs/%s", p->preset ? p->preset : "model");
        p->out_dir = outbuf;
    }
    return check_settings(&a, p);
}

static int train_main(int argc, char **argv) {
    df_train_params p;
    df_train_params_default(&p);
    char outbuf[512], feat_buf[4200];
    const char *prompts_file = NULL;
    int rc = parse(argc, argv, &p, &prompts_file, outbuf, sizeof outbuf);
    if (rc) return cli_exit(rc);
    if ((rc = check_files(&p)) != 0) return rc;
    df_train_paths paths;
    if (p.resume) {   /* the run's last settings, then the options given over them */
        const char *run = p.out_dir;
        df_train_params_default(&p);
        df_status st = df_train_params_resume(&p, run, &paths);
        if (st) return cli_fail(st);
        if ((rc = parse(argc, argv, &p, &prompts_file, outbuf, sizeof outbuf))) return cli_exit(rc);
    }
    if (p.eval_every && !p.eval_features) p.eval_features = cli_default_features(feat_buf, sizeof feat_buf);
    if (p.eval_every && cli_check_data("--eval-ref", p.eval_ref)) return 1;
    if (p.eval_every && access(p.eval_features, R_OK) != 0)
        return cli_die("--eval-features %s: no such feature network", p.eval_features);

    df_lines prompts = {0};
    if (prompts_file) {
        if (df_lines_read(prompts_file, &prompts)) return cli_die("--sample-prompts %s", df_error());
        if (prompts.n == 0) {
            df_lines_free(&prompts);
            return cli_usage_error("--sample-prompts %s: no prompt in it", prompts_file);
        }
        p.sample_prompts = (const char *const *)prompts.lines, p.n_sample_prompts = prompts.n;
    }

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
    const char *out = p.out_dir;
    if (p.resume) {
        fprintf(stderr, "diffuse train: resuming, %d threads, output in %s\n", omp_get_max_threads(), out);
    } else {
        char plan[1024];
        describe_run(&p, plan, sizeof plan);
        fprintf(stderr, "diffuse train: %s; %d threads, output in %s\n", plan, omp_get_max_threads(), out);
    }
    df_status st = df_train(&p);
    df_lines_free(&prompts);
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
