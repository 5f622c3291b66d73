/* The `diffuse` command end to end: predict on the golden model, init/info, and one-line errors with a
 * non-zero exit on bad input. */
#define _XOPEN_SOURCE 700   /* realpath */
#include "safetensors.h"
#include "test.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

/* Run the diffuse command with `args`; returns its exit code and the first line of stderr in err. */
static int run(const char *args, char *err, size_t cap) {
    int rc = test_run_diffuse(NULL, 0, args, NULL, 0, err, cap);
    char *nl = err ? strchr(err, '\n') : NULL;
    if (nl) nl[1] = 0;
    return rc;
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

/* A new user's rough edges in `sample`: the wrong kind of model, unwritable outputs found before sampling,
 * counts and paths written the way they are meant. */
TEST(cli_sample_edges) {
    char args[2048], err[512];
    const char *t = test_tmp_dir();
    int rc = run("sample models/fmnist-classifier --n 1 --steps 2", err, sizeof err);
    CHECK(rc == 2 && strstr(err, "is a classifier, not a diffusion model"), "sample of a classifier: %d, %s", rc, err);
    rc = run("sample models/fmnist-s --score models/fmnist-s --n 1 --steps 2", err, sizeof err);
    CHECK(rc == 2 && strstr(err, "not a classifier"), "--score with a diffusion pipeline: %d, %s", rc, err);
    snprintf(args, sizeof args, "sample models/fmnist-s --n 1 --steps 2 --out /proc/x.png --npy %s/edge.npy", t);
    rc = run(args, err, sizeof err);
    CHECK(rc == 1 && strstr(err, "/proc"), "an unwritable --out is found before sampling: %d, %s", rc, err);
    float px[28 * 28] = {0};
    snprintf(args, sizeof args, "%s/edge-in.png", t);
    CHECK_OK(df_image_save_png(args, px, 1, 28, 28));
    snprintf(args, sizeof args, "sample models/fmnist-s --init-image %s/edge-in.png --strength 0.01 --out %s/e.png", t, t);
    rc = run(args, err, sizeof err);
    CHECK(rc == 2 && strstr(err, "runs no step"), "a strength that runs no step: %d, %s", rc, err);
    float rgb[3 * 16 * 16];
    for (int i = 0; i < 3 * 16 * 16; i++) rgb[i] = (float)(i % 7) / 3 - 1;
    snprintf(args, sizeof args, "%s/edge-rgb.png", t);
    CHECK_OK(df_image_save_png(args, rgb, 3, 16, 16));
    snprintf(args, sizeof args, "sample models/fmnist-s --n 1 --steps 4 --init-image %s/edge-rgb.png --strength 0.5 "
             "--out %s/e3.png", t, t);
    rc = run(args, err, sizeof err);
    CHECK(rc == 0 && strstr(err, "is colour; it is used as gray"), "a colour --init-image is announced: %d, %s", rc, err);
    /* one image, a directory given with a slash: "wrote 1 image to DIR/", no grid when only --animate */
    char cmd[16384], line[512] = "", bin[PATH_MAX], here[PATH_MAX];
    if (!realpath(test_bin_dir(), bin) || !realpath(".", here)) {
        CHECK(0, "cannot resolve the binary's directory");
        return;
    }
    snprintf(cmd, sizeof cmd, "cd %s && %s/diffuse sample %s/models/fmnist-s --n 1 --steps 2 --out-dir edge-pngs/ "
             "2>&1 >/dev/null | grep wrote", t, bin, here);
    FILE *p = popen(cmd, "r");
    if (p) {
        if (!fgets(line, sizeof line, p)) line[0] = 0;
        pclose(p);
    }
    CHECK(strstr(line, "wrote 1 image to edge-pngs/\n") != NULL, "out-dir message: \"%s\"", line);
    /* the image carries its settings in a "parameters" text chunk */
    snprintf(cmd, sizeof cmd, "%s/edge-pngs/000000.png", t);
    FILE *f = fopen(cmd, "rb");
    char png[65536];
    size_t got = f ? fread(png, 1, sizeof png, f) : 0;
    if (f) fclose(f);
    const char want[] = "tEXtparameters\0Steps: 2, Sampler: ddim, CFG scale: 1, Seed: 0, Size: 28x28";
    int found = 0;
    for (size_t i = 0; i + sizeof want - 1 <= got && !found; i++) found = memcmp(png + i, want, sizeof want - 1) == 0;
    CHECK(found, "000000.png has no parameters chunk with the run's settings");
    snprintf(args, sizeof args, "sample models/fmnist-s --n 1 --steps 2 --animate %s/edge.gif", t);
    rc = run(args, err, sizeof err);
    snprintf(cmd, sizeof cmd, "%s/edge.gif", t);
    FILE *g = fopen(cmd, "rb");
    CHECK(rc == 0 && g, "--animate alone: %d, %s", rc, err);
    if (g) fclose(g);
    /* run from the scratch directory so that a default grid would land there */
    snprintf(cmd, sizeof cmd, "cd %s && %s/diffuse sample %s/models/fmnist-s --n 1 --steps 2 --animate edge2.gif "
             ">/dev/null 2>&1 && test ! -e samples.png", t, bin, here);
    CHECK(system(cmd) == 0, "--animate alone also wrote samples.png");
}

/* init writes into a new or empty directory only, as train does. */
TEST(cli_init_refuses_a_used_directory) {
    char args[2048], err[512], p[1200];
    snprintf(p, sizeof p, "%s/used-dir", test_tmp_dir());
    snprintf(args, sizeof args, "init --preset fmnist-s %s", p);
    int rc = run(args, err, sizeof err);
    CHECK(rc == 0, "init into a new directory: %d, %s", rc, err);
    rc = run(args, err, sizeof err);
    CHECK(rc == 1 && strstr(err, "not empty"), "init into a used directory: %d, %s", rc, err);
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
    snprintf(args, sizeof args, "%s/diffuse train --config %s --data %s --threads 1 --minutes 0.1 --batch 8 --samples 0 "
             "--out %s/cli-run-minutes >/dev/null 2>%s", test_bin_dir(), cfg, data, dir, errf);
    int st = system(args);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "train --minutes 0.1 exits %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    char *text = NULL;
    size_t n = 0;
    CHECK_OK(df_read_file(errf, &text, &n));
    if (!text) return;
    printf("%s", text);
    const char *bar = strstr(text, "train step ");
    CHECK(bar && strstr(bar, " of 00:06 ["), "a bar of the 6 s budget: %s", text);
    const char *eta = bar ? strstr(bar, "ETA ") : NULL;
    CHECK(eta && eta[4] >= '0' && eta[4] <= '9', "an ETA in the bar: %s", bar ? bar : text);
    CHECK(strstr(text, "a warmup of 10% of the budget") && strstr(text, "the budget allows at the first step's speed"),
          "the start line and the first step say how the warmup is chosen: %s", text);
    CHECK(strstr(text, "diffuse train: starting ") && strstr(text, " on ") && strstr(text, "predicting epsilon; 8 images "
          "a step for 0.1 minutes, lr 0.0001 (a warmup of 10% of the budget, then cosine decay to 0); 1 threads"),
          "the start line says what the run will do: %s", text);
    /* the cosine schedule ends where the budget will, at the speed after the warmup; the state keeps it */
    long end = 0;
    const char *dec = strstr(text, "learning rate: cosine decay to 0 at step ");
    CHECK(dec && sscanf(dec, "learning rate: cosine decay to 0 at step %ld", &end) == 1 && end > 20,
          "the schedule's end is said: %s", text);
    free(text), text = NULL;
    snprintf(args, sizeof args, "%s/cli-run-minutes/latest/training_state.json", dir);
    CHECK_OK(df_read_file(args, &text, &n));
    char want[64];
    snprintf(want, sizeof want, "\"total_steps\":\t%ld", end);
    CHECK(text && strstr(text, want), "the state keeps the schedule's end %ld: %.400s", end, text ? text : "");
    free(text);
}

/* Run `diffuse ARGS` with stderr into the whole of err (stdout dropped); returns the exit code. */
static int run_err(const char *args, char *err, size_t cap) { return test_run_diffuse(NULL, 0, args, NULL, 0, err, cap); }

/* A whole file into a malloc'd buffer (NULL if unreadable); *len its size. */
static char *slurp(const char *path, size_t *len) {
    char *text = NULL;
    *len = 0;
    if (df_read_file(path, &text, len) == DF_OK) return text;
    free(text);
    return NULL;
}

/* 1 if the file's bytes hold `want` (a PNG's parameters text, say). */
static int file_contains(const char *path, const char *want) {
    size_t len, n = strlen(want);
    char *data = slurp(path, &len);
    int found = 0;
    for (size_t i = 0; data && i + n <= len && !found; i++) found = !memcmp(data + i, want, n);
    free(data);
    return found;
}

/* --index K regenerates image K of a run alone, the PNG byte for byte the run's: in the first batch, in a later
 * one and in the last partial one, guided (a doubled batch) and with the default labels of a class-conditional
 * model (image K keeps its class); only that image is written. */
TEST(cli_sample_index_regenerates_one_image_bit_for_bit) {
    const char *t = test_tmp_dir(), *run_args = "sample models/fmnist-s-cond -n 7 --batch 3 --steps 3 --guidance 2";
    char args[2048], err[4096], a[700], b[700];
    snprintf(args, sizeof args, "%s --seed 11 --out-dir %s/idx-full", run_args, t);
    int rc = run_err(args, err, sizeof err);
    CHECK(rc == 0, "the whole run: %d, %s", rc, err);
    const int ks[] = {1, 4, 6};
    for (int i = 0; i < 3; i++) {
        snprintf(args, sizeof args, "%s --seed 11 --index %d --out-dir %s/idx-one", run_args, ks[i], t);
        rc = run_err(args, err, sizeof err);
        CHECK(rc == 0, "--index %d: %d, %s", ks[i], rc, err);
        snprintf(a, sizeof a, "%s/idx-full/%06d.png", t, ks[i]);
        snprintf(b, sizeof b, "%s/idx-one/%06d.png", t, ks[i]);
        CHECK(test_files_equal(a, b), "--index %d: %s is not the run's %s", ks[i], b, a);
    }
    snprintf(a, sizeof a, "%s/idx-one/000000.png", t);
    FILE *f = fopen(a, "rb");
    CHECK(!f, "--index wrote other images too (%s)", a);
    if (f) fclose(f);
    /* --out: image K alone, the same file; its parameters say which image of which run, with the run's label */
    snprintf(args, sizeof args, "%s --seed 11 --index 6 --out %s/idx6.png", run_args, t);
    CHECK(run_err(args, err, sizeof err) == 0, "--index 6 --out: %s", err);
    snprintf(a, sizeof a, "%s/idx-full/000006.png", t);
    snprintf(b, sizeof b, "%s/idx6.png", t);
    CHECK(test_files_equal(a, b), "--index 6 --out %s is not the run's %s", b, a);
    const char want[] = "Seed: 11, Size: 28x28, Model: models/fmnist-s-cond, Image: 6 of 7, Batch: 3, Label: 8 (Bag)";
    CHECK(file_contains(b, want), "idx6.png's parameters do not say \"%s\"", want);
    /* another seed is another image: the comparison can tell */
    snprintf(args, sizeof args, "%s --seed 12 --index 6 --out %s/idx6b.png", run_args, t);
    CHECK(run_err(args, err, sizeof err) == 0, "--seed 12 --index 6: %s", err);
    snprintf(b, sizeof b, "%s/idx6b.png", t);
    CHECK(!test_files_equal(a, b), "seed 12's image 6 is seed 11's");
    snprintf(args, sizeof args, "%s --index 7 --out %s/x.png", run_args, t);
    rc = run_err(args, err, sizeof err);
    CHECK(rc == 2 && strstr(err, "--index 7: the run has 7 images"), "--index past the run: %d, %s", rc, err);
    snprintf(args, sizeof args, "%s --index 1 --animate %s/x.gif", run_args, t);
    CHECK(run_err(args, err, sizeof err) == 2 && strstr(err, "--animate"), "--index with --animate: %s", err);
}

/* --guidance-interval: (0, inf) is plain guidance; an interval above every sigma of the schedule (157 at most)
 * is conditional sampling with the guided run's step rule (--clipped-eps), float for float; it is recorded
 * in the parameters, and bad or pointless values are refused. */
TEST(cli_sample_guidance_interval) {
    const char *t = test_tmp_dir(), *common = "sample models/fmnist-s-cond -n 3 --steps 3";
    const char *runs[][2] = {{"--guidance 2 --guidance-interval 0,inf", "gi-all"},
                             {"--guidance 2", "gi-plain"},
                             {"--guidance 2 --guidance-interval 200,inf", "gi-none"},
                             {"--guidance 1 --clipped-eps", "gi-cond"},
                             {"--guidance 2 --guidance-interval 0.5,20", "gi-mid"}};
    char args[2048], err[4096], a[700], b[700];
    for (int i = 0; i < 5; i++) {
        snprintf(args, sizeof args, "%s %s --npy %s/%s.npy --out %s/%s.png", common, runs[i][0], t, runs[i][1], t,
                 runs[i][1]);
        CHECK(run_err(args, err, sizeof err) == 0, "%s: %s", runs[i][0], err);
    }
    const int same[][2] = {{0, 1}, {2, 3}}, differ[][2] = {{4, 1}, {4, 3}, {1, 3}};
    for (int i = 0; i < 2; i++) {
        snprintf(a, sizeof a, "%s/%s.npy", t, runs[same[i][0]][1]);
        snprintf(b, sizeof b, "%s/%s.npy", t, runs[same[i][1]][1]);
        CHECK(test_files_equal(a, b), "\"%s\" is not \"%s\"", runs[same[i][0]][0], runs[same[i][1]][0]);
    }
    for (int i = 0; i < 3; i++) {
        snprintf(a, sizeof a, "%s/%s.npy", t, runs[differ[i][0]][1]);
        snprintf(b, sizeof b, "%s/%s.npy", t, runs[differ[i][1]][1]);
        CHECK(!test_files_equal(a, b), "\"%s\" made \"%s\"'s images", runs[differ[i][0]][0], runs[differ[i][1]][0]);
    }
    snprintf(a, sizeof a, "%s/gi-mid.png", t);
    CHECK(file_contains(a, "Guidance interval: 0.5,20"), "gi-mid.png's parameters do not say \"Guidance interval: 0.5,20\"");
    const char *bad[] = {"--guidance 2 --guidance-interval 5,1", "--guidance 2 --guidance-interval 1",
                         "--guidance 2 --guidance-interval -1,3", "--guidance-interval 0.5,20"};
    for (int i = 0; i < 4; i++) {
        snprintf(args, sizeof args, "%s %s --out %s/gi-bad.png", common, bad[i], t);
        int rc = run_err(args, err, sizeof err);
        CHECK(rc == 2 && strstr(err, "--guidance-interval"), "%s: exit %d, %s", bad[i], rc, err);
    }
    snprintf(a, sizeof a, "%s/gi-bad.png", t);
    FILE *f = fopen(a, "rb");
    CHECK(!f, "a refused run wrote %s", a);
    if (f) fclose(f);
}

/* --seed random (or -1) picks a seed, says it, and records it: that seed given back makes the same image. */
TEST(cli_sample_random_seed_is_said_and_recorded) {
    const char *t = test_tmp_dir();
    char args[2048], err[4096], a[700], b[700];
    unsigned long long seeds[2] = {0, 0};
    const char *spell[2] = {"--seed random", "-s -1"};
    for (int i = 0; i < 2; i++) {
        snprintf(args, sizeof args, "sample models/fmnist-s -n 1 --steps 2 %s --out %s/rand%d.png", spell[i], t, i);
        int rc = run_err(args, err, sizeof err);
        const char *said = strstr(err, "seed ");
        CHECK(rc == 0 && said && sscanf(said, "seed %llu (random)", &seeds[i]) == 1 && strstr(said, "(random)"),
              "%s: %d, %s", spell[i], rc, err);
    }
    CHECK(seeds[0] != seeds[1], "two random seeds are both %llu", seeds[0]);
    snprintf(a, sizeof a, "%s/rand0.png", t);
    char want[100];
    snprintf(want, sizeof want, "Seed: %llu,", seeds[0]);
    CHECK(file_contains(a, want), "rand0.png's parameters do not say \"%s\"", want);
    snprintf(args, sizeof args, "sample models/fmnist-s -n 1 --steps 2 --seed %llu --out %s/again.png", seeds[0], t);
    CHECK(run_err(args, err, sizeof err) == 0, "--seed %llu: %s", seeds[0], err);
    snprintf(b, sizeof b, "%s/again.png", t);
    CHECK(test_files_equal(a, b), "--seed %llu does not make the random run's image again", seeds[0]);
    int rc = run_err("sample models/fmnist-s --seed -2", err, sizeof err);
    CHECK(rc == 2 && strstr(err, "--seed") && strstr(err, "random"), "--seed -2: %d, %s", rc, err);
}

/* A directory beside a shipped model: its files linked, classes.json replaced (text) or left out (NULL). */
static void model_copy(const char *from, const char *to, const char *const *files, const char *classes) {
    char here[PATH_MAX], cmd[8192];
    if (!realpath(from, here)) return;
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s", to, to);
    CHECK(system(cmd) == 0, "%s", cmd);
    for (int i = 0; files[i]; i++) {
        snprintf(cmd, sizeof cmd, "ln -s %s/%s %s/%s", here, files[i], to, files[i]);
        CHECK(system(cmd) == 0, "%s", cmd);
    }
    if (classes) {
        snprintf(cmd, sizeof cmd, "%s/classes.json", to);
        FILE *f = fopen(cmd, "w");
        if (f) fputs(classes, f), fclose(f);
    }
}

/* --labels by name (any case, as numbers), "did you mean", a model without names; --score and --classifier
 * refuse a classifier whose class names differ, and say when there are names on one side only. */
TEST(cli_sample_labels_by_name_and_classifier_classes) {
    const char *t = test_tmp_dir();
    char args[2048], err[4096], a[700], b[700], dir[700];
    snprintf(args, sizeof args, "sample models/fmnist-s-cond -n 4 --steps 2 --labels Sneaker,bag,ANKLE_BOOT,trouser "
             "--npy %s/names.npy", t);
    int rc = run_err(args, err, sizeof err);
    CHECK(rc == 0, "--labels by name: %d, %s", rc, err);
    snprintf(args, sizeof args, "sample models/fmnist-s-cond -n 4 --steps 2 --labels 7,8,9,1 --npy %s/nums.npy", t);
    CHECK(run_err(args, err, sizeof err) == 0, "--labels by number: %s", err);
    snprintf(a, sizeof a, "%s/names.npy", t);
    snprintf(b, sizeof b, "%s/nums.npy", t);
    CHECK(test_files_equal(a, b), "--labels Sneaker,bag,ANKLE_BOOT,trouser is not --labels 7,8,9,1");
    rc = run_err("sample models/fmnist-s-cond -n 2 --labels bag,snaeker", err, sizeof err);
    CHECK(rc == 2 && strstr(err, "no class \"snaeker\" (did you mean Sneaker?)"), "a misspelt name: %d, %s", rc, err);
    rc = run_err("sample models/fmnist-s-cond -n 2 --labels shoe", err, sizeof err);
    CHECK(rc == 2 && strstr(err, "no class \"shoe\"") && strstr(err, "Ankle boot"), "an unknown name: %d, %s", rc, err);
    const char *pipeline[] = {"model_index.json", "unet", "scheduler", NULL};
    snprintf(dir, sizeof dir, "%s/cond-unnamed", t);
    model_copy("models/fmnist-s-cond", dir, pipeline, NULL);
    snprintf(args, sizeof args, "sample %s -n 2 --steps 2 --labels bag", dir);
    rc = run_err(args, err, sizeof err);
    CHECK(rc == 2 && strstr(err, "no names") && strstr(err, "number from 0 to 10"), "names without classes.json: %d, %s",
          rc, err);

    const char *clf[] = {"config.json", "diffusion_pytorch_model.safetensors", NULL};
    char *classes;
    size_t len;
    if (!(classes = slurp("models/fmnist-classifier/classes.json", &len))) {
        CHECK(0, "models/fmnist-classifier/classes.json unreadable");
        return;
    }
    char *dress = strstr(classes, "\"Dress\"");
    if (dress) memcpy(dress, "\"Frock\"", 7);
    snprintf(dir, sizeof dir, "%s/clf-renamed", t);
    model_copy("models/fmnist-classifier", dir, clf, classes);
    free(classes);
    snprintf(args, sizeof args, "sample models/fmnist-s-cond -n 2 --steps 2 --score %s --out %s/s.png", dir, t);
    rc = run_err(args, err, sizeof err);
    CHECK(rc == 2 && strstr(err, "--score") && strstr(err, "3 \"Dress\" against \"Frock\""), "--score, renamed: %d, %s",
          rc, err);
    snprintf(args, sizeof args, "sample models/fmnist-s-cond -n 2 --steps 2 --classifier %s --out %s/s.png", dir, t);
    rc = run_err(args, err, sizeof err);
    CHECK(rc == 2 && strstr(err, "--classifier") && strstr(err, "3 \"Dress\" against \"Frock\""),
          "--classifier, renamed: %d, %s", rc, err);
    snprintf(dir, sizeof dir, "%s/clf-unnamed", t);
    model_copy("models/fmnist-classifier", dir, clf, NULL);
    snprintf(args, sizeof args, "sample models/fmnist-s-cond -n 2 --steps 2 --score %s --out %s/s.png", dir, t);
    rc = run_err(args, err, sizeof err);
    CHECK(rc == 0 && strstr(err, "cannot be checked"), "--score without names: %d, %s", rc, err);
    snprintf(args, sizeof args, "sample models/fmnist-s-cond -n 2 --steps 2 --score models/fmnist-classifier --out "
             "%s/s.png", t);
    rc = run_err(args, err, sizeof err);
    CHECK(rc == 0 && !strstr(err, "cannot be checked"), "--score with the same names: %d, %s", rc, err);
}

/* --resume: a budget is the run's total, and the run equals a straight run of it bit for bit; sampling
 * options given on resume are used; a budget already reached and a fixed setting are refused by name; with
 * no budget a finished run says so and writes nothing. */
TEST(cli_train_resume_rules) {
    const char *dir = test_tmp_dir();
    char data[600], cfg[600], common[2000], args[4000], err[8192], a[700], b[700], fb[900];
    test_toy_idx(dir, "resume-toy", 32, 4, data, sizeof data);
    df_unet_config c;
    test_tiny_unet(&c, 1);
    snprintf(cfg, sizeof cfg, "%s/resume-tiny.json", dir);
    CHECK_OK(df_unet_config_save(&c, cfg));
    /* a schedule that does not depend on the budget, so a run of 4 steps extended to 9 is a run of 9 */
    snprintf(common, sizeof common, "--config %s --data %s --batch 8 --lr-decay constant --warmup 2 --save-every 0 "
             "--sample-every 0 --samples 0 --log-every 1", cfg, data);
    snprintf(a, sizeof a, "%s/resume-straight", dir);
    snprintf(b, sizeof b, "%s/resume-extended", dir);
    snprintf(args, sizeof args, "train %s --steps 9 --out %s", common, a);
    CHECK(run_err(args, err, sizeof err) == 0, "the straight run: %s", err);
    snprintf(args, sizeof args, "train %s --steps 4 --out %s", common, b);
    CHECK(run_err(args, err, sizeof err) == 0, "the short run: %s", err);
    snprintf(args, sizeof args, "train --resume --steps 9 --samples 4 --sample-steps 2 --out %s", b);
    int rc = run_err(args, err, sizeof err);
    CHECK(rc == 0 && strstr(err, "resumed at step 4") && strstr(err, "to a budget of 9 steps"),
          "--resume --steps 9 from step 4: %d, %s", rc, err);
    const char *files[] = {"unet_raw/diffusion_pytorch_model.safetensors", "training_state.safetensors"};
    const char *differs = test_checkpoint_differs(a, b, 9, files, 2);
    CHECK(!differs, "%s: the run extended to 9 steps differs from the straight one", differs);
    /* the grid has the 4 images asked for on resume (2 x 2 of 8 x 8 with 2-pixel gaps: 22 wide), not 64 */
    snprintf(fb, sizeof fb, "%s/samples/step-0000009.png", b);
    char *png = NULL;
    size_t n = 0;
    CHECK_OK(df_read_file(fb, &png, &n));
    long width = png && n > 24 ? ((long)(unsigned char)png[16] << 24 | (long)(unsigned char)png[17] << 16 |
                                  (long)(unsigned char)png[18] << 8 | (unsigned char)png[19]) : -1;
    free(png);
    CHECK(width == 22, "the grid of --samples 4 given on resume is 22 pixels wide, not %ld", width);
    /* left out on the next resume, --samples and --sample-steps stay as the last session had them */
    snprintf(args, sizeof args, "train --resume --steps 10 --out %s", b);
    rc = run_err(args, err, sizeof err);
    CHECK(rc == 0, "--resume --steps 10: %d, %s", rc, err);
    snprintf(fb, sizeof fb, "%s/samples/step-0000010.png", b);
    png = NULL, n = 0;
    CHECK_OK(df_read_file(fb, &png, &n));
    width = png && n > 24 ? ((long)(unsigned char)png[16] << 24 | (long)(unsigned char)png[17] << 16 |
                             (long)(unsigned char)png[18] << 8 | (unsigned char)png[19]) : -1;
    free(png);
    CHECK(width == 22, "the next session's grid is the last session's 4 images (22 pixels wide), not %ld", width);
    /* --sample-steps given on resume is checked against the model before any step */
    snprintf(args, sizeof args, "train --resume --steps 12 --samples 4 --sample-steps 5000 --out %s", b);
    rc = run_err(args, err, sizeof err);
    CHECK(rc == 1 && strstr(err, "5000 DDIM steps"), "--sample-steps 5000 on resume: %d, %s", rc, err);
    /* a budget the run has reached, and a setting that cannot change, are refused by name */
    snprintf(args, sizeof args, "train --resume --steps 5 --out %s", b);
    rc = run_err(args, err, sizeof err);
    CHECK(rc == 1 && strstr(err, "the run is at step 10") && strstr(err, "a budget of 5 steps is already reached"),
          "--steps 5 at step 10: %d, %s", rc, err);
    snprintf(args, sizeof args, "train --resume --steps 12 --lr-decay cosine --out %s", b);
    rc = run_err(args, err, sizeof err);
    CHECK(rc == 2 && strstr(err, "--lr-decay: a resumed run keeps the settings it started with"),
          "--lr-decay on resume: %d, %s", rc, err);
    /* no budget: the run finished its 9 steps; it says so, exits 0 and leaves the log as it was */
    char log[800], *before = NULL, *after = NULL;
    size_t nb = 0, na = 0;
    snprintf(log, sizeof log, "%s/loss.csv", b);
    CHECK_OK(df_read_file(log, &before, &nb));
    snprintf(args, sizeof args, "train --resume --out %s", b);
    rc = run_err(args, err, sizeof err);
    CHECK(rc == 0 && strstr(err, "already finished its budget of 10 steps, at step 10") && strstr(err, "nothing to do"),
          "--resume of a finished run: %d, %s", rc, err);
    CHECK_OK(df_read_file(log, &after, &na));
    CHECK(before && after && nb == na && memcmp(before, after, nb) == 0, "a finished run's resume changed loss.csv");
    free(before), free(after);
    df_training_summary s;
    CHECK(df_training_summary_load(b, &s) == DF_OK && s.step == 10, "latest is still step 10 (%ld)", s.step);
}
