/* `diffuse train-classifier`: a classifier on the data's labels, noise-aware (for classifier guidance) or
 * noise-free (to score generated images). */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <signal.h>
#include <string.h>
#include <sys/stat.h>

static int train_classifier_main(int argc, char **argv);

const cli_command cmd_train_classifier = {
    .name = "train-classifier",
    .usage = "usage: diffuse train-classifier --out DIR (--steps N | --minutes M) [options]",
    .summary = "train a classifier (noise-aware, for guidance, or noise-free, to score samples)",
    .about = "Train an image classifier: the encoder half of a U-Net (time embedding, down blocks, mid block) with a\n"
             "pooling head. By default on images noised to random timesteps, as classifier guidance needs (sample\n"
             "--classifier DIR); --noise-free trains on clean images, to score generated ones (sample --score DIR).",
    .run = train_classifier_main,
};

static volatile int stop_requested;
static void on_stop(int sig) {
    (void)sig;
    stop_requested = 1;
}

static void show(void *ctx, const df_classifier_progress *p) {
    if (p->event) cli_progress_line(ctx, p->event);
    if (!(p->images_per_sec > 0)) return;   /* a note before training: nothing to draw yet */
    char extra[160];
    snprintf(extra, sizeof extra, "loss %.4f (avg %.4f) accuracy %.3f %.0f img/s epoch %d", p->loss, p->loss_avg,
             p->accuracy_avg, p->images_per_sec, p->epoch);
    cli_progress_draw(ctx, (double)p->step, (double)p->total_steps, p->eta, extra);
}

/* The options into p (and the flag and output directory beside it). Returns 0, CLI_HELP, or the exit code. */
static int parse(int argc, char **argv, df_classifier_train_params *p, int *noise_free, const char **out) {
    const cli_opt opts[] = {
        OPT_STR("--data", &p->data, .meta = "PATH", .help = "labelled data, as for train"),
        OPT_FLAG("--strict", &p->strict_data, .help = "refuse a folder holding an unreadable image, naming it (without it, "
                 "such images are skipped and counted)"),
        OPT_STR("--eval", &p->eval_data, .meta = "PATH",
                .help = "report the accuracy on these clean images at the end (e.g. fashion-mnist:test)"),
        OPT_STR("--preset", &p->preset, .meta = "NAME", .help = "the U-Net whose encoder is used: " DF_PRESETS),
        OPT_STR("--config", &p->config_path, .meta = "FILE", .help = "or a diffusers UNet2DModel config.json"),
        OPT_STR("--init", &p->init_dir, .meta = "DIR", .help = "continue training this classifier (a fresh optimizer)"),
        OPT_FLAG("--noise-free", noise_free, .help = "train on clean images (t = 0)"),
        OPT_LONG("--steps", &p->max_steps, .lo = 1, .hi = 1e12, .meta = "N", .def = "", .help = "budget: optimizer steps"),
        OPT_DOUBLE("--minutes", &p->max_minutes, .lo = 1e-3, .hi = 1e7, .meta = "M", .def = "",
                   .help = "budget: minutes (one budget is required)"),
        OPT_INT("--batch", &p->batch_size, .lo = 1, .hi = 4096, .meta = "N", .help = "images per step"),
        OPT_DOUBLE("--lr", &p->lr, .lo = 1e-12, .hi = 10, .meta = "X", .help = "AdamW learning rate"),
        OPT_DOUBLE("--weight-decay", &p->weight_decay, .lo = 0, .hi = 10, .meta = "X", .help = "AdamW weight decay"),
        OPT_U64("--seed", &p->seed, .meta = "S", .help = "seed of the weights, the data order and the noise"),
        OPT_STR("--out", out, .meta = "DIR", .help = "the classifier's model directory (required)"),
        CLI_END,
    };
    cli_args a;
    int rc = cli_parse(&cmd_train_classifier, opts, argc, argv, &a);
    if (rc) return rc;
    int given_preset = cli_given(&a, "--preset");
    if (given_preset + !!p->config_path + !!p->init_dir > 1)
        return cli_usage_error("--preset, --config and --init each choose the network: give one");
    if (p->init_dir && cli_check_input("--init", p->init_dir, 1)) return 1;
    if ((p->data && cli_check_data("--data", p->data)) ||
        (p->eval_data && cli_check_data("--eval", p->eval_data)))
        return 1;
    if (p->init_dir && *out && cli_same_file(p->init_dir, *out))
        return cli_usage_error("--out %s is the --init classifier: write the new one elsewhere", *out);
    if (!*out) return cli_usage_error("--out: where should the classifier go?");
    if (p->max_steps <= 0 && p->max_minutes <= 0) return cli_usage_error("give a budget: --steps N or --minutes M");
    df_unet_config c;
    if (given_preset && df_unet_config_preset(p->preset, &c)) return cli_usage_error("--preset: %s", df_error());
    if (p->config_path && cli_check_input("--config", p->config_path, 0)) return 1;
    return 0;
}

static int train_classifier_main(int argc, char **argv) {
    df_classifier_train_params p;
    df_classifier_train_params_default(&p);
    const char *out = NULL;
    int noise_free = 0;
    double acc = -1;
    int rc = parse(argc, argv, &p, &noise_free, &out);
    if (rc) return cli_exit(rc);
    if (cli_check_output("--out", out, 1)) return 1;
    struct stat sb;
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/config.json", out);
    if (stat(probe, &sb) == 0) return cli_die("--out: %s already holds a model: choose another directory", out);
    p.out_dir = out;
    p.noise_aware = !noise_free;
    p.eval_accuracy = &acc;
    cli_progress bar;
    cli_progress_init(&bar, "train-classifier");
    p.progress = show;
    p.progress_ctx = &bar;
    p.stop = &stop_requested;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    fprintf(stderr, "diffuse train-classifier: %s classifier on %s, output in %s\n",
            noise_free ? "a noise-free" : "a noise-aware", p.data, out);
    df_status st = df_classifier_train(&p);
    cli_progress_done(&bar);
    if (st) return cli_fail(st);
    if (acc >= 0) printf("accuracy on %s (clean images): %.4f\n", p.eval_data, acc);
    fprintf(stderr, "diffuse train-classifier: wrote %s\n", out);
    return 0;
}
