/* Optimisers against PyTorch's own torch.optim.AdamW / SGD, clip_grad_norm_ and the warmup + cosine
 * schedule (run through Debian's python3-torch on the same inputs), and the EMA decay formula. */
#define _POSIX_C_SOURCE 200809L
#include "safetensors.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

enum { NP = 257, STEPS = 12 };

/* Run our optimizer for STEPS steps on fixed gradients; returns the final params. */
static void run_ours(const df_optim_params *op, const float *p0, const float *grads, float *p) {
    df_optimizer o;
    CHECK_OK(df_optimizer_init(&o, op, NP));
    memcpy(p, p0, sizeof(float) * NP);
    float g[NP];
    for (int s = 0; s < STEPS; s++) {
        memcpy(g, grads + (size_t)s * NP, sizeof g);
        df_optimizer_step(&o, p, g, NULL);
    }
    df_optimizer_free(&o);
}

TEST(optimizers_match_pytorch) {
    df_rng r;
    df_rng_init(&r, 99);
    float p0[NP], grads[STEPS * NP];
    df_rng_fill_normal(&r, p0, NP);
    df_rng_fill_normal(&r, grads, STEPS * NP);
    for (int s = 0; s < STEPS; s++)   /* every third step has a large gradient, so clipping acts */
        if (s % 3 == 0)
            for (int i = 0; i < NP; i++) grads[s * NP + i] *= 10;
    const char *dir = test_tmp_dir();
    char in[600], out[600], cmd[2000];
    snprintf(in, sizeof in, "%s/optim_in.safetensors", dir);
    snprintf(out, sizeof out, "%s/optim_out.safetensors", dir);
    st_entry e[2] = {{.name = "p0", .ndim = 1, .shape = {NP}, .f32 = p0},
                     {.name = "grads", .ndim = 2, .shape = {STEPS, NP}, .f32 = grads}};
    CHECK_OK(st_write(in, e, 2, NULL, 0));
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/ref/optim_ref.py %s %s", in, out);
    int rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "tests/ref/optim_ref.py failed (exit %d)", WEXITSTATUS(rc));
    st_file f;
    CHECK_OK(st_open(out, &f));
    if (!f.n) return;
    /* the same settings as the script: see tests/ref/optim_ref.py */
    struct {
        const char *name;
        df_optim_params p;
    } cases[4];
    for (int k = 0; k < 4; k++) df_optim_params_default(&cases[k].p);
    cases[0].name = "adamw";
    cases[0].p.lr = 1e-2, cases[0].p.weight_decay = 0.1, cases[0].p.warmup_steps = 4, cases[0].p.total_steps = STEPS;
    cases[0].p.grad_clip = 5.0;
    cases[1].name = "adamw_constant";
    cases[1].p.lr = 3e-3, cases[1].p.decay = DF_LR_CONSTANT, cases[1].p.warmup_steps = 0, cases[1].p.grad_clip = 0;
    cases[2].name = "sgd";
    cases[2].p.kind = DF_OPT_SGD, cases[2].p.lr = 1e-2, cases[2].p.momentum = 0.9, cases[2].p.weight_decay = 1e-3;
    cases[2].p.warmup_steps = 3, cases[2].p.decay = DF_LR_LINEAR, cases[2].p.total_steps = STEPS, cases[2].p.grad_clip = 5.0;
    cases[3].name = "sgd_nesterov";
    cases[3].p.kind = DF_OPT_SGD, cases[3].p.lr = 5e-3, cases[3].p.momentum = 0.8, cases[3].p.nesterov = 1;
    cases[3].p.weight_decay = 0, cases[3].p.warmup_steps = 0, cases[3].p.decay = DF_LR_CONSTANT, cases[3].p.grad_clip = 0;
    for (int k = 0; k < 4; k++) {
        float mine[NP], ref[NP];
        run_ours(&cases[k].p, p0, grads, mine);
        const st_tensor *t = st_find(&f, cases[k].name);
        CHECK(t != NULL, "reference %s missing", cases[k].name);
        if (!t) continue;
        CHECK_OK(st_read_f32(&f, t, ref, NP));
        double moved = 0;
        for (int i = 0; i < NP; i++) moved = fmax(moved, fabs(ref[i] - p0[i]));
        size_t at;
        double d = max_rel_diff(mine, ref, NP, &at);
        printf("    %-15s max difference %.2e relative (parameters moved up to %.3f)\n", cases[k].name, d, moved);
        CHECK(moved > 1e-3, "%s: the reference did not move", cases[k].name);
        CHECK(d < 2e-6, "%s differs from torch.optim at %zu: %.8f vs %.8f", cases[k].name, at, mine[at], ref[at]);
    }
    st_close(&f);
}

TEST(learning_rate_schedule_and_ema) {
    df_optim_params p;
    df_optim_params_default(&p);
    p.lr = 1, p.warmup_steps = 10, p.total_steps = 110, p.decay = DF_LR_COSINE;
    CHECK_NEAR(df_optimizer_lr(&p, 0), 0, 1e-15, "warmup starts at 0");
    CHECK_NEAR(df_optimizer_lr(&p, 5), 0.5, 1e-15, "half way through warmup");
    CHECK_NEAR(df_optimizer_lr(&p, 10), 1, 1e-15, "peak after warmup");
    CHECK_NEAR(df_optimizer_lr(&p, 60), 0.5, 1e-12, "cosine half way");
    CHECK_NEAR(df_optimizer_lr(&p, 110), 0, 1e-12, "cosine end");
    p.decay = DF_LR_LINEAR;
    CHECK_NEAR(df_optimizer_lr(&p, 85), 0.25, 1e-12, "linear decay");
    df_ema e;
    df_ema_init(&e, 1.0, 0.75, 0.9999);
    float ema[3] = {0, 0, 0}, w[3] = {1, 2, 3};
    CHECK_NEAR(df_ema_decay(&e), 0, 1e-15, "the first update copies");
    df_ema_update(&e, ema, w, 3);
    CHECK(ema[2] == 3, "EMA after one update equals the weights");
    /* diffusers EMAModel with warmup: decay at update k (from 0) = 1 - (1 + k)^-3/4 */
    for (int k = 1; k < 5; k++) {
        CHECK_NEAR(df_ema_decay(&e), 1 - pow(1 + k, -0.75), 1e-12, "EMA warmup decay");
        float d = (float)df_ema_decay(&e), before = ema[0];
        w[0] = (float)k;
        df_ema_update(&e, ema, w, 3);
        CHECK_NEAR(ema[0], before - (1 - d) * (before - k), 1e-6, "EMA update");
    }
    e.updates = 100000000;
    CHECK_NEAR(df_ema_decay(&e), 0.9999, 1e-15, "decay capped at max");
}
