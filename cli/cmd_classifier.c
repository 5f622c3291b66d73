/* `diffuse train-classifier`: a classifier on the data's labels, noise-aware (for classifier guidance) or
 * noise-free (to score generated images). */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <signal.h>
#include <string.h>
#include <sys/stat.h>

const char cmd_train_classifier_usage[] =
    "usage: diffuse train-classifier --out DIR [options]\n"
    "\n"
    "Train an image classifier: the encoder half of a U-Net (time embedding, down blocks, mid block) with a\n"
    "pooling head. By default on images noised to random timesteps, as classifier guidance needs (sample\n"
    "--classifier DIR); --noise-free trains on clean images, to score generated ones (sample --score DIR).\n"
    "\n"
    "  --data PATH           labelled data (default fashion-mnist), as for train\n"
    "  --eval PATH           report the accuracy on these clean images at the end (e.g. fashion-mnist:test)\n"
    "  --preset NAME         the U-Net whose encoder is used: fmnist-s (default) or cifar10\n"
    "  --config FILE         or a diffusers UNet2DModel config.json\n"
    "  --init DIR            continue training this classifier (a fresh optimizer)\n"
    "  --noise-free          train on clean images (t = 0)\n"
    "  --steps N | --minutes M   the budget (one is required)\n"
    "  --batch N (64)  --lr X (3e-4)  --weight-decay X (0.05)  --seed S (0)\n"
    "  --out DIR             the classifier's model directory\n";

static volatile int stop_requested;
static void on_stop(int sig) {
    (void)sig;
    stop_requested = 1;
}

static void show(void *ctx, const df_classifier_progress *p) {
    char extra[160];
    snprintf(extra, sizeof extra, "loss %.4f (avg %.4f) accuracy %.3f %.0f img/s epoch %d", p->loss, p->loss_avg,
             p->accuracy_avg, p->images_per_sec, p->epoch);
    cli_progress_draw(ctx, (double)p->step, (double)p->total_steps, p->eta, extra);
}

int cmd_train_classifier(int argc, char **argv) {
    df_classifier_train_params p;
    df_classifier_train_params_default(&p);
    const char *preset = NULL, *config = NULL, *out = NULL;
    int noise_free = 0;
    double acc = -1;
    cli_opt opts[] = {
        {"--data", OPT_STR, &p.data, 0, 0},
        {"--eval", OPT_STR, &p.eval_data, 0, 0},
        {"--preset", OPT_STR, &preset, 0, 0},
        {"--config", OPT_STR, &config, 0, 0},
        {"--init", OPT_STR, &p.init_dir, 0, 0},
        {"--noise-free", OPT_FLAG, &noise_free, 0, 0},
        {"--steps", OPT_LONG, &p.max_steps, 1, 1e12},
        {"--minutes", OPT_DOUBLE, &p.max_minutes, 1e-3, 1e7},
        {"--batch", OPT_INT, &p.batch_size, 1, 4096},
        {"--lr", OPT_DOUBLE, &p.lr, 1e-12, 10},
        {"--weight-decay", OPT_DOUBLE, &p.weight_decay, 0, 10},
        {"--seed", OPT_U64, &p.seed, 0, 0},
        {"--out", OPT_STR, &out, 0, 0},
        {NULL, OPT_FLAG, NULL, 0, 0},
    };
    const char *pos[1];
    int npos;
    int rc = cli_parse("train-classifier", argc, argv, opts, pos, 0, &npos, cmd_train_classifier_usage);
    if (rc) return rc;
    if (!!preset + !!config + !!p.init_dir > 1)
        return cli_usage_error("--preset, --config and --init each choose the network: give one");
    if (p.init_dir && cli_check_input("--init", p.init_dir, 1)) return 1;
    if ((p.data && cli_check_data("--data", p.data)) || (p.eval_data && cli_check_data("--eval", p.eval_data)))
        return 1;
    if (p.init_dir && out && cli_same_file(p.init_dir, out))
        return cli_usage_error("--out %s is the --init classifier: write the new one elsewhere", out);
    if (!out) return cli_usage_error("--out: where should the classifier go?");
    if (p.max_steps <= 0 && p.max_minutes <= 0) return cli_usage_error("give a budget: --steps N or --minutes M");
    if (preset) {
        df_unet_config c;
        if (df_unet_config_preset(preset, &c)) return cli_usage_error("--preset: %s", df_error());
        p.preset = preset;
    }
    if (config) {
        if (cli_check_input("--config", config, 0)) return 1;
        p.config_path = config;
    }
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
