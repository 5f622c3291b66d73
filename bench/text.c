/* The text-to-image benchmark: a small text-conditioned U-Net (UNet2DConditionModel, 32x32 RGB) with its CLIP
 * text encoder, diffuse against PyTorch (bench/torch_text_unet.py, the same networks on Debian's python3-torch)
 * on this machine, in one run: a training step of both together, DDIM sampling with the texts encoded once, a
 * forward pass, peak memory; and what the text costs: the transformer blocks' share of a U-Net training step
 * (the step against the same U-Net without them) and the encoder's share of a whole step. Every measurement
 * runs in its own process. Before timing, the fast kernels are checked against the reference path.
 *
 * usage: bench_text [--threads T] [--iters K] [--steps S] [--batch B] [--no-torch] [--profile]
 */
#define _POSIX_C_SOURCE 200809L
#include "diffuse.h"
#include "internal.h"
#include "../cli/restart.h"
#include "bench.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

static int threads = 2, iters = 3, steps = 50, batch = 64, with_torch = 1, profile = 0;
static char torch_env[32] = "", bench_dir[4096] = "bench";

/* The U-Net: 32x32 RGB, 64, 128 and 128 channels, two resnets per level, cross-attention (heads of 64 channels)
 * at 16x16, 8x8 and in the mid block (Stable Diffusion's layout: every level but the outer one), to 128-wide text
 * states. Variants: 1, plain, the same without the transformer blocks (a UNet2DModel); 2, low, transformer blocks
 * at 8x8 and in the mid block only. The encoder: 2 layers 128 wide, 4 heads, texts of 32 tokens, 4096 ids. */
enum { FULL, PLAIN, LOW };
static void configs(df_unet_config *u, df_text_config *t, int variant) {
    const int plain = variant == PLAIN;
    df_unet_config_default(u);
    u->sample_size = 32, u->in_channels = u->out_channels = 3, u->num_levels = 3, u->layers_per_block = 2;
    const int ch[3] = {64, 128, 128};
    for (int i = 0; i < DF_MAX_LEVELS; i++) {
        u->block_out_channels[i] = i < 3 ? ch[i] : 0;
        u->down_attn[i] = !plain && (i == 2 || (i == 1 && variant == FULL));
        u->up_attn[i] = !plain && (i == 0 || (i == 1 && variant == FULL));   /* up order: deepest first */
    }
    u->attention_head_dim = 64, u->norm_num_groups = 32, u->add_attention = !plain;
    if (!plain && df_unet_config_text(u, 128)) fprintf(stderr, "bench: %s\n", df_error());
    df_text_config_default(t);
    t->vocab_size = 4096, t->hidden_size = 128, t->intermediate_size = 512, t->num_hidden_layers = 2;
    t->num_attention_heads = 4, t->max_position_embeddings = 32, t->bos_token_id = 0, t->eos_token_id = 1;
    t->pad_token_id = 1;
}

/* mode: 0 joint training step, 1 sampling, 2 forward, 3 check, 4 U-Net training step on fixed text states,
 * 5 the plain U-Net's training step, 6 the low variant's U-Net step */
typedef struct {
    int mode;
} job;

static result ours_job(const void *arg) {
    const job *j = arg;
    result r = {0};
    omp_set_num_threads(threads);
    df_unet_config uc;
    df_text_config tc;
    configs(&uc, &tc, j->mode == 5 ? PLAIN : j->mode == 6 ? LOW : FULL);
    df_model *m = NULL;
    df_text_encoder *e = NULL;
    if (df_model_create(&uc, 1, &m) || df_text_encoder_create(&tc, 2, &e)) {
        fprintf(stderr, "bench: %s\n", df_error());
        df_model_free(m);
        return r;
    }
    df_model_set_threads(m, threads);
    df_text_encoder_set_threads(e, threads);
    const int n = batch, s = uc.sample_size, L = tc.max_position_embeddings, D = tc.hidden_size;
    const size_t nx = (size_t)n * uc.in_channels * s * s, nc = (size_t)n * L * D;
    float *x = malloc(nx * 4), *noise = malloc(nx * 4), *eps = malloc(nx * 4), *t = malloc((size_t)n * 4);
    float *states = malloc(nc * 4), *dstates = malloc(nc * 4);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n * L);
    df_rng rng;
    df_rng_init(&rng, 3);
    df_rng_fill_normal(&rng, x, nx);
    df_rng_fill_normal(&rng, noise, nx);
    for (int i = 0; i < n; i++) t[i] = (float)(df_rng_u32(&rng) % 1000);
    for (int i = 0; i < n * L; i++) ids[i] = (int32_t)(df_rng_u32(&rng) % (uint32_t)tc.vocab_size);
    r.ok = j->mode == 5 || !df_text_encode(e, n, L, ids, states, NULL);
    if (r.ok && j->mode != 5) r.ok = !df_model_reserve_context(m, n, L) && !df_model_set_context(m, n, L, states);
    const int k = df_op_count();
    double *tab = profile ? calloc(2 * (size_t)k, sizeof(double)) : NULL;
    r.sec = 1e30;
    if (r.ok && (j->mode == 0 || j->mode >= 4)) {   /* training steps, AdamW over what trains */
        const int joint = j->mode == 0;
        const size_t nu = df_model_num_params(m), ne = joint ? df_text_encoder_num_params(e) : 0;
        df_optim_params op;
        df_optim_params_default(&op);
        df_optimizer opt;
        if (df_optimizer_init(&opt, &op, nu + ne)) r.ok = 0;
        df_model_set_train(m, 1, &rng);
        float *pp[2] = {df_model_params(m), df_text_encoder_params(e)}, *gg[2] = {df_model_grads(m), df_text_encoder_grads(e)};
        const size_t np[2] = {nu, ne};
        for (int it = 0; it <= iters && r.ok; it++) {
            if (it == iters && tab) df_model_set_profile(m, tab);
            double t0 = now();
            float loss;
            df_model_zero_grad(m);
            if (joint) memset(gg[1], 0, ne * sizeof(float));
            if (joint && (df_text_encode(e, n, L, ids, states, NULL) || df_model_set_context(m, n, L, states))) r.ok = 0;
            if (df_model_loss_grad(m, n, s, s, x, t, NULL, noise, NULL, &loss, NULL)) r.ok = 0;
            if (joint && (df_model_context_grad(m, dstates) || df_text_encoder_backward(e, dstates))) r.ok = 0;
            df_optimizer_step_parts(&opt, joint ? 2 : 1, pp, gg, np, NULL);
            if (it > 0 && it < iters + !tab) r.sec = fmin(r.sec, now() - t0);   /* 0 warms up */
        }
        if (r.ok) df_optimizer_free(&opt);
    } else if (r.ok && j->mode == 1) {   /* DDIM from noise, each image its own text, encoded once */
        df_schedule sch;
        df_schedule_init_default(&sch);
        df_sampler_params sp;
        df_sampler_params_default(&sp);
        sp.steps = steps;
        int *labels = malloc(sizeof(int) * (size_t)n);
        for (int i = 0; i < n; i++) labels[i] = i;
        df_model_denoiser dn = {.model = m, .h = s, .w = s, .labels = labels, .texts = states, .ntexts = n, .text_len = L};
        df_model_denoise(&dn, n, x, t, eps);   /* warm up: plans memory and kernels */
        if (tab) df_model_set_profile(m, tab);
        double t0 = now();
        if (df_text_encode(e, n, L, ids, states, NULL) ||
            df_sample(&sch, &sp, df_model_denoise, &dn, n, (size_t)uc.in_channels * s * s, &rng, x))
            r.ok = 0;
        r.sec = now() - t0;
        df_schedule_free(&sch);
        free(labels);
    } else if (r.ok && j->mode == 2) {
        for (int it = 0; it <= iters; it++) {
            if (it == iters && tab) df_model_set_profile(m, tab);
            double t0 = now();
            if (df_model_forward(m, n, s, s, x, t, NULL, eps)) r.ok = 0;
            if (it > 0 && it < iters + !tab) r.sec = fmin(r.sec, now() - t0);
        }
    } else if (r.ok) {   /* check: the fast kernels against the reference path */
        r.value = kernels_disagree(m, n, s, x, t, noise, &r.ok);
        r.sec = 0;
    }
    if (tab) {
        static const char *const what[] = {"joint training step", "sampling", "forward", "check", "U-Net step", "plain step",
                                           "U-Net step, blocks at 8x8 only"};
        fprintf(stderr, "  %s, batch %d, last pass by op:\n", what[j->mode], n);
        df_model_set_profile(m, NULL);
        for (int i = 0; i < k; i++)
            if (tab[i] + tab[k + i] > 0)
                fprintf(stderr, "    %-12s forward %8.1f ms  backward %8.1f ms\n", df_op_name(i), 1e3 * tab[i], 1e3 * tab[k + i]);
        free(tab);
    }
    free(x), free(noise), free(eps), free(t), free(states), free(dstates), free(ids);
    df_text_encoder_free(e);
    df_model_free(m);
    return r;
}

/* PyTorch's measurement of a mode (torch_text_unet.py, or torch_unet.py for the plain U-Net). */
static result torch_run(const char *mode, int plain) {
    result r = {0};
    if (!with_torch) return r;
    df_unet_config uc;
    df_text_config tc;
    configs(&uc, &tc, plain);
    char up[256], tp[256], cmd[8192];
    snprintf(up, sizeof up, "/tmp/diffuse-bench-text-%d-unet.json", (int)getpid());
    snprintf(tp, sizeof tp, "/tmp/diffuse-bench-text-%d-encoder.json", (int)getpid());
    if (df_unet_config_save(&uc, up) || df_text_config_save(&tc, tp)) return r;
    if (plain)
        snprintf(cmd, sizeof cmd, "%s /usr/bin/python3 %s/torch_unet.py %s --mode %s --batch %d --threads %d --iters %d",
                 torch_env, bench_dir, up, mode, batch, threads, iters);
    else
        snprintf(cmd, sizeof cmd, "%s /usr/bin/python3 %s/torch_text_unet.py %s %s --mode %s --batch %d --threads %d "
                 "--iters %d --steps %d", torch_env, bench_dir, up, tp, mode, batch, threads, iters, steps);
    r = torch_measure(cmd);
    remove(up), remove(tp);
    return r;
}

int main(int argc, char **argv) {
    if (!getenv("OMP_WAIT_POLICY")) setenv("DIFFUSE_BENCH_TORCH_DEFAULT_ENV", "1", 1);
    cli_prefer_passive_threads(argv);
    if (getenv("DIFFUSE_BENCH_TORCH_DEFAULT_ENV")) snprintf(torch_env, sizeof torch_env, "env -u OMP_WAIT_POLICY");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-torch")) with_torch = 0;
        else if (!strcmp(argv[i], "--profile")) profile = 1;
        else {
            fprintf(stderr, "usage: bench_text [--threads T] [--iters K] [--steps S] [--batch B] [--no-torch] [--profile]\n");
            return 2;
        }
    }
    if (threads < 1 || iters < 1 || steps < 1 || batch < 1) {
        fprintf(stderr, "bench_text: --threads, --iters, --steps and --batch must be positive\n");
        return 2;
    }
    const char *slash = strrchr(argv[0], '/');
    if (slash && access("bench/torch_text_unet.py", R_OK) != 0)
        snprintf(bench_dir, sizeof bench_dir, "%.*s/../bench", (int)(slash - argv[0]), argv[0]);
    if (with_torch && access("/usr/bin/python3", X_OK) != 0) with_torch = 0;

    df_unet_config uc;
    df_text_config tc;
    configs(&uc, &tc, FULL);
    df_model *probe;
    if (df_unet_config_text(&uc, 128) || df_model_create(&uc, 1, &probe)) {
        fprintf(stderr, "bench_text: %s\n", df_error());
        return 1;
    }
    const double gflop = df_model_flops(probe, 0, 0) / 1e9;
    const size_t nparams = df_model_num_params(probe);
    df_model_free(probe);
    double variant_gflop[3] = {gflop, 0, 0};
    for (int v = PLAIN; v <= LOW; v++) {
        configs(&uc, &tc, v);
        if (df_model_create(&uc, 1, &probe)) {
            fprintf(stderr, "bench_text: %s\n", df_error());
            return 1;
        }
        variant_gflop[v] = df_model_flops(probe, 0, 0) / 1e9;
        df_model_free(probe);
    }
    const double plain_gflop = variant_gflop[PLAIN];
    printf("diffuse %s against PyTorch, float32, %d threads, %s; a text-conditioned U-Net (32x32 RGB, %zu parameters, "
           "%.3f GFLOP a forward pass) with a 2-layer text encoder (texts of 32 tokens); times are the best of %d "
           "after a warm-up; PyTorch runs %s\n\n",
           DIFFUSE_VERSION, threads, __builtin_cpu_supports("avx512f") ? "AVX-512" : "AVX2", nparams, gflop, iters,
           with_torch ? "bench/torch_text_unet.py (tests/ref's models) on python3-torch" : "(skipped)");
    job chk = {3};
    result c = in_child(ours_job, &chk);
    if (!c.ok || !(c.value < 1e-4)) {
        printf("bench_text: the fast kernels disagree with the reference path (worst relative difference %.3g)\n", c.value);
        return 1;
    }
    printf("| model     | measure                                    |   diffuse |   PyTorch | speedup |\n");
    printf("|-----------|--------------------------------------------|-----------|-----------|---------|\n");
    char what[64];
    job jt = {0}, js = {1}, jf = {2}, ju = {4}, jp = {5};
    result o = in_child(ours_job, &jt), t = torch_run("train", 0);
    snprintf(what, sizeof what, "training, U-Net + encoder, batch %d (img/s)", batch);
    row("text-32", what, batch / o.sec, t.ok ? batch / t.sec : 0, 1, "%.2f");
    row("", "  peak memory (MB)", o.peak_mb, t.ok ? t.peak_mb : 0, 0, "%.0f");
    const double joint = o.sec, tjoint = t.ok ? t.sec : 0;
    o = in_child(ours_job, &js), t = torch_run("sample", 0);
    snprintf(what, sizeof what, "sampling, DDIM %d steps, batch %d (img/s)", steps, batch);
    row("text-32", what, batch / o.sec, t.ok ? batch / t.sec : 0, 1, "%.3f");
    row("", "  peak memory (MB)", o.peak_mb, t.ok ? t.peak_mb : 0, 0, "%.0f");
    o = in_child(ours_job, &jf), t = torch_run("forward", 0);
    snprintf(what, sizeof what, "forward, batch %d (ms/img)", batch);
    row("text-32", what, 1e3 * o.sec / batch, t.ok ? 1e3 * t.sec / batch : 0, 0, "%.2f");
    /* what the text costs: shares of a step, ours and PyTorch's (PyTorch's U-Net-alone step is not measured: its
     * encoder share is left out) */
    job jl = {6};
    result u = in_child(ours_job, &ju), pl = in_child(ours_job, &jp), lo = in_child(ours_job, &jl), tpl = torch_run("train", 1);
    if (!(u.sec < 1e29 && pl.sec < 1e29 && joint < 1e29)) {   /* --profile with one iteration times none */
        printf("\nshares: give --iters 2 or more with --profile\n");
        return 0;
    }
    printf("\nshares of a training step (batch %d); the transformer blocks are %.0f%% of a forward pass's FLOPs:\n", batch,
           100 * (1 - plain_gflop / gflop));
    printf("  transformer blocks (cross- and self-attention, feed-forward, norms, projections) in a U-Net step: "
           "%.0f%% (step %.1f ms against %.1f ms without them)\n",
           100 * (1 - pl.sec / u.sec), 1e3 * u.sec, 1e3 * pl.sec);
    printf("  the same with the blocks at 8x8 and in the mid block only (%.0f%% of the FLOPs): %.0f%% (step %.1f ms)\n",
           100 * (1 - plain_gflop / variant_gflop[LOW]), 100 * (1 - pl.sec / lo.sec), 1e3 * lo.sec);
    printf("  the text encoder (forward and backward) in a joint step: %.0f%%\n", 100 * (1 - u.sec / joint));
    if (tjoint > 0 && tpl.ok)
        printf("  PyTorch: text encoder and transformer blocks together in a joint step: %.0f%% (diffuse: %.0f%%)\n",
               100 * (1 - tpl.sec / tjoint), 100 * (1 - pl.sec / joint));
    return 0;
}
