/* The `diffuse` command end to end: predict on the golden model, init/info, and one-line errors with a
 * non-zero exit on bad input. */
#define _POSIX_C_SOURCE 200809L
#include "safetensors.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

/* Run the diffuse command with `args`; returns its exit code and the first line of stderr in err. */
static int run(const char *args, char *err, size_t cap) {
    char cmd[4096], errf[600];
    snprintf(errf, sizeof errf, "%s/stderr.txt", test_tmp_dir());
    snprintf(cmd, sizeof cmd, "%s/diffuse %s >/dev/null 2>%s", test_bin_dir(), args, errf);
    int st = system(cmd);
    if (err) {
        err[0] = 0;
        FILE *f = fopen(errf, "r");
        if (f) {
            if (!fgets(err, (int)cap, f)) err[0] = 0;
            fclose(f);
        }
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(cli_predict_matches_golden) {
    char args[2048], out[600], err[512];
    snprintf(out, sizeof out, "%s/eps.safetensors", test_tmp_dir());
    snprintf(args, sizeof args, "predict --grads %s/fmnist-s %s/fmnist-s/io.safetensors %s", test_golden_dir(),
             test_golden_dir(), out);
    int rc = run(args, err, sizeof err);
    CHECK(rc == 0, "predict exit %d: %s", rc, err);
    if (rc) return;
    st_file a, b;
    char io[600];
    snprintf(io, sizeof io, "%s/fmnist-s/io.safetensors", test_golden_dir());
    CHECK_OK(st_open(out, &a));
    CHECK_OK(st_open(io, &b));
    const char *names[] = {"eps", "grad_x", "grad.conv_in.weight", "grad.mid_block.attentions.0.to_k.weight"};
    double tol[] = {1e-4, 1e-3, 1e-3, 1e-3};
    for (int k = 0; k < 4 && a.n && b.n; k++) {
        const st_tensor *ta = st_find(&a, names[k]), *tb = st_find(&b, names[k]);
        CHECK(ta && tb && st_numel(ta) == st_numel(tb), "%s present in both", names[k]);
        if (!ta || !tb) continue;
        size_t n = (size_t)st_numel(ta);
        float *va = malloc(n * 4), *vb = malloc(n * 4);
        CHECK_OK(st_read_f32(&a, ta, va, n));
        CHECK_OK(st_read_f32(&b, tb, vb, n));
        double d = max_rel_diff(va, vb, n, NULL);
        CHECK(d <= tol[k], "%s: relative difference %.3g", names[k], d);
        free(va), free(vb);
    }
    CHECK(a.n == 2 + 270, "eps, grad_x and 270 parameter gradients written (%d tensors)", a.n);
    st_close(&a);
    st_close(&b);
}

TEST(cli_init_info_and_errors) {
    char args[2048], err[512], dir[600];
    snprintf(dir, sizeof dir, "%s/cli-init", test_tmp_dir());
    snprintf(args, sizeof args, "init --preset fmnist-s --seed 3 %s", dir);
    CHECK(run(args, err, sizeof err) == 0, "init: %s", err);
    snprintf(args, sizeof args, "info %s", dir);
    CHECK(run(args, err, sizeof err) == 0, "info: %s", err);
    CHECK(run("--help", NULL, 0) == 0, "--help exits 0");
    CHECK(run("", NULL, 0) == 2, "no command: usage and exit 2");
    CHECK(run("frobnicate", err, sizeof err) == 2 && strstr(err, "frobnicate"), "unknown command named: %s", err);
    CHECK(run("predict --bogus a b c", err, sizeof err) != 0 && strstr(err, "--bogus"), "unknown option named: %s", err);
    CHECK(run("info /nonexistent/dir", err, sizeof err) == 1 && strstr(err, "/nonexistent/dir"),
          "missing model named: %s", err);
    CHECK(run("init --preset nosuch /tmp/x", err, sizeof err) == 2 && strstr(err, "nosuch"), "bad preset named: %s", err);
    /* a corrupt weights file gives one line naming it, and no output file */
    char bad[700], out[700];
    snprintf(bad, sizeof bad, "%s/diffusion_pytorch_model.safetensors", dir);
    FILE *f = fopen(bad, "r+b");
    if (f) {
        fputs("garbage!", f);   /* the 8-byte header length becomes absurd */
        fclose(f);
    }
    snprintf(out, sizeof out, "%s/never.safetensors", test_tmp_dir());
    snprintf(args, sizeof args, "predict %s %s/fmnist-s/io.safetensors %s", dir, test_golden_dir(), out);
    CHECK(run(args, err, sizeof err) == 1 && strstr(err, "diffusion_pytorch_model.safetensors"),
          "corrupt weights named: %s", err);
    FILE *o = fopen(out, "rb");
    CHECK(!o, "no output written on failure");
    if (o) fclose(o);
    CHECK(run("--threads 0 info x", err, sizeof err) == 2 && strstr(err, "--threads"), "bad --threads: %s", err);
}

/* A budget in minutes shows a bar of the time used and an ETA, and the unset warmup chosen for it. */
TEST(cli_train_minutes_shows_bar_and_eta) {
    const char *dir = test_tmp_dir();
    char data[600], cfg[600], args[3000], errf[600];
    test_toy_idx(dir, "cli-toy", 32, 4, data, sizeof data);
    df_unet_config c;
    test_tiny_unet(&c, 1);
    snprintf(cfg, sizeof cfg, "%s/cli-tiny.json", dir);
    CHECK_OK(df_unet_config_save(&c, cfg));
    snprintf(errf, sizeof errf, "%s/train-minutes.txt", dir);
    snprintf(args, sizeof args, "%s/diffuse train --config %s --data %s --minutes 0.05 --batch 8 --samples 0 "
             "--out %s/run-minutes >/dev/null 2>%s", test_bin_dir(), cfg, data, dir, errf);
    int st = system(args);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "train --minutes 0.05 exits %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    char *text = NULL;
    size_t n = 0;
    CHECK_OK(df_read_file(errf, &text, &n));
    if (!text) return;
    printf("%s", text);
    const char *bar = strstr(text, "train step ");
    CHECK(bar && strstr(bar, " of 00:03 ["), "a bar of the 3 s budget: %s", text);
    const char *eta = bar ? strstr(bar, "ETA ") : NULL;
    CHECK(eta && eta[4] >= '0' && eta[4] <= '9', "an ETA in the bar: %s", bar ? bar : text);
    CHECK(strstr(text, "warmup 10% of the budget") && strstr(text, "the budget allows at the first step's speed"),
          "the start line and the first step say how the warmup is chosen: %s", text);
    free(text);
}
