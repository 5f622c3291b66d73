/* Bad arguments to every command of the `diffuse` CLI: unknown options, missing or malformed values, values
 * out of range, contradictory options, missing files and directories given as files. Each must fail early
 * with one line "diffuse <cmd>: ..." naming the culprit (and the usage line after a usage error), the right
 * exit code, nothing on stdout, and no output file. */
#define _XOPEN_SOURCE 700   /* realpath */
#include "test.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

/* The fixtures: $T the scratch directory (the command runs there, so a default output would land in it),
 * $M a model directory, $I its io.safetensors, $C its config.json, $P a small PNG, $X a text file, $B a
 * config that is not JSON, $R a directory that holds a run. $T/adir and $T/adir.png are directories. */
typedef struct {
    char t[PATH_MAX], m[PATH_MAX];
} fixture;

static void expand(const fixture *fx, const char *args, char *out, size_t cap) {
    size_t n = 0;
    out[0] = 0;
    for (const char *p = args; *p && n + 1 < cap; p++) {
        char buf[PATH_MAX + 64];
        const char *rep = NULL;
        if (p[0] == '$' && p[1]) {
            switch (p[1]) {
            case 'T': rep = fx->t; break;
            case 'M': rep = fx->m; break;
            case 'I': snprintf(buf, sizeof buf, "%s/io.safetensors", fx->m), rep = buf; break;
            case 'C': snprintf(buf, sizeof buf, "%s/config.json", fx->m), rep = buf; break;
            case 'P': snprintf(buf, sizeof buf, "%s/in.png", fx->t), rep = buf; break;
            case 'X': snprintf(buf, sizeof buf, "%s/notes.txt", fx->t), rep = buf; break;
            case 'B': snprintf(buf, sizeof buf, "%s/bad.json", fx->t), rep = buf; break;
            case 'R': snprintf(buf, sizeof buf, "%s/oldrun", fx->t), rep = buf; break;
            }
        }
        if (rep) {
            n += (size_t)snprintf(out + n, cap - n, "%s", rep);
            p++;
        } else {
            out[n++] = *p;
            out[n] = 0;
        }
    }
}

static void write_text(const char *dir, const char *name, const char *text) {
    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void make_dir(const char *dir, const char *name) {
    char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    mkdir(p, 0755);
}

static int setup(fixture *fx) {
    char g[PATH_MAX + 32], t[PATH_MAX];
    snprintf(g, sizeof g, "%s/fmnist-s", test_golden_dir());
    snprintf(t, sizeof t, "%s/args", test_tmp_dir());
    mkdir(t, 0755);
    if (!realpath(g, fx->m) || !realpath(t, fx->t)) {
        CHECK(0, "fixtures: cannot resolve %s or %s", g, t);
        return 0;
    }
    float px[16 * 16];
    for (int i = 0; i < 16 * 16; i++) px[i] = (float)(i % 16) / 8 - 1;
    char p[PATH_MAX + 32];
    snprintf(p, sizeof p, "%s/in.png", fx->t);
    CHECK_OK(df_image_save_png(p, px, 1, 16, 16));
    write_text(fx->t, "notes.txt", "not a model\n");
    write_text(fx->t, "bad.json", "{\"sample_size\": 28,");
    make_dir(fx->t, "adir");
    make_dir(fx->t, "adir.png");
    make_dir(fx->t, "oldrun");
    make_dir(fx->t, "oldrun/latest");
    return 1;
}

/* Outputs the cases might write: none may exist after a failed command. */
static const char *const outputs[] = {
    "o.png", "o.jpg", "o.npy", "o.gif", "o.mp4", "o2.png", "o.safetensors", "odir", "orun", "omodel",
    "samples.png", "runs", "missing", "m.png", "strip.png",
};

static int exists(const char *dir, const char *name) {
    char p[PATH_MAX + 64];
    struct stat sb;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &sb) == 0;
}

/* Runs `diffuse ARGS` in $T; returns the exit code (-1 if killed), stderr and stdout in err and out. */
static int run(const fixture *fx, const char *args, char *err, size_t errcap, char *out, size_t outcap) {
    /* the time limit turns a check that let work start into a failure instead of a long run */
    return test_run_diffuse(fx->t, 30, args, out, outcap, err, errcap);
}

typedef struct {
    const char *args;    /* with the fixtures' $ names */
    int         code;    /* 2: a usage error (the usage line follows), 1: a file or model problem */
    const char *named;   /* what the first line must mention */
} bad_case;

static const bad_case cases[] = {
    /* the top level */
    {"", 2, "no command"},
    {"frobnicate", 2, "frobnicate"},
    /* "did you mean": a command one swap away, a short option by its letter, never a far-off name */
    {"smaple $M", 2, "unknown command \"smaple\" (did you mean sample?)"},
    {"help smaple", 2, "(did you mean sample?)"},
    {"train -o $T/orun --steps 1", 2, "(did you mean --optimizer or --out?)"},
    {"train --step 5 --out $T/orun", 2, "(did you mean --steps?)"},
    {"train --steps 1 --ot $T/orun", 2, "(did you mean --out?)"},
    {"sample $M -seed 3", 2, "(did you mean --seed?)"},
    {"sample $M --cfg 3", 2, "(did you mean --guidance?)"},
    {"--bogus", 2, "--bogus"},
    {"--threads", 2, "--threads"},
    {"--threads 0 info $M", 2, "--threads"},
    {"--threads=many info $M", 2, "--threads"},
    {"help nosuch", 2, "nosuch"},
    /* train: unknown options, values */
    {"train --bogus --steps 1 --out $T/orun", 2, "--bogus"},
    {"train --step 5 --out $T/orun", 2, "--step"},
    {"train --steps", 2, "--steps"},
    {"train --steps -5 --out $T/orun", 2, "--steps"},
    {"train --steps 0 --out $T/orun", 2, "--steps"},
    {"train --steps 1e3 --out $T/orun", 2, "--steps"},
    {"train --steps 1 --steps 2 --out $T/orun", 2, "--steps"},
    {"train --steps 1 --batch 0 --out $T/orun", 2, "--batch"},
    {"train --steps 1 --batch 5000 --out $T/orun", 2, "--batch"},
    {"train --steps 1 --lr -1 --out $T/orun", 2, "--lr"},
    {"train --steps 1 --lr nan --out $T/orun", 2, "--lr"},
    {"train --steps 1 --minutes 0 --out $T/orun", 2, "--minutes"},
    {"train --steps 1 --seed abc --out $T/orun", 2, "--seed"},
    {"train --steps 1 --seed -1 --out $T/orun", 2, "--seed"},
    {"train --steps 1 --seed 99999999999999999999999 --out $T/orun", 2, "--seed"},
    {"train --steps 1 --ema-decay 1.5 --out $T/orun", 2, "--ema-decay"},
    {"train --steps 1 --timesteps 1 --out $T/orun", 2, "--timesteps"},
    {"train --steps 1 --flip=yes --out $T/orun", 2, "--flip"},
    {"train --steps 1 --out", 2, "--out"},
    {"train --out --steps 1", 2, "--out"},
    {"train --steps 1 --out $T/orun extra", 2, "extra"},
    {"train --steps 1 --schedule nosuch --out $T/orun", 2, "nosuch"},
    {"train --steps 1 --prediction x0 --out $T/orun", 2, "x0"},
    {"train --steps 1 --optimizer adam --out $T/orun", 2, "adam"},
    {"train --steps 1 --lr-decay step --out $T/orun", 2, "--lr-decay"},
    {"train --steps 1 --preset nosuch --out $T/orun", 2, "nosuch"},
    {"train --steps 1 --size 30 --out $T/orun", 2, "--size"},
    /* train: contradictions */
    {"train --out $T/orun", 2, "budget"},
    {"train --steps 1 --preset cifar10 --config $C --out $T/orun", 2, "--preset"},
    {"train --steps 1 --config $C --init $M --out $T/orun", 2, "--init"},
    {"train --resume --init $M --out $T/orun", 2, "--init"},
    {"train --resume --preset cifar10 --out $R", 2, "--preset"},
    {"train --resume --batch 8 --out $R", 2, "--batch"},
    {"train --resume --lr 0.01 --out $R", 2, "--lr"},
    {"train --resume --data $T/adir --out $R", 2, "--data"},
    {"train --steps 1 --optimizer sgd --beta2 0.9 --out $T/orun", 2, "--beta2"},
    {"train --steps 1 --momentum 0.5 --out $T/orun", 2, "--momentum"},
    {"train --steps 1 --no-ema --ema-decay 0.9 --out $T/orun", 2, "--ema-decay"},
    {"train --steps 1 --beta-start 0.02 --beta-end 0.001 --out $T/orun", 2, "--beta-end"},
    {"train --steps 1 --schedule squaredcos_cap_v2 --beta-end 0.01 --out $T/orun", 2, "--beta-end"},
    {"train --steps 1 --timesteps 20 --sample-steps 50 --out $T/orun", 2, "--sample-steps"},
    {"train --steps 1 --timesteps 20 --out $T/orun", 2, "--sample-steps 50 (the default)"},
    {"train --steps 1 --init $T/orun --out $T/orun", 2, "--init"},
    {"train --steps 1 --data $T/adir --out $T/adir", 2, "--data"},
    /* train: files */
    {"train --steps 1 --data $T/missing --out $T/orun", 1, "missing"},
    {"train --steps 1 --config $T/missing.json --out $T/orun", 1, "missing.json"},
    {"train --steps 1 --config $T/adir --out $T/orun", 1, "adir"},
    {"train --steps 1 --config $B --out $T/orun", 1, "bad.json"},
    {"train --steps 1 --init $X --out $T/orun", 1, "notes.txt"},
    {"train --steps 1 --init $T/missing --out $T/orun", 1, "missing"},
    {"train --resume --out $T/orun", 1, "orun"},
    {"train --steps 1 --out $X", 1, "notes.txt"},
    {"train --steps 1 --out $R", 1, "oldrun"},
    /* sample: values */
    {"sample", 2, "model"},
    {"sample $M $M", 2, "unexpected"},
    {"sample $M --bogus", 2, "--bogus"},
    {"sample $M --n 0", 2, "--n"},
    /* sample: the short and familiar spellings are the options they stand for */
    {"sample $M -n 0", 2, "--n"},
    {"sample $M -s abc", 2, "--seed"},
    {"sample $M -o $T/x.txt", 2, "--out"},
    {"sample $M -o -n 4", 2, "--out needs a value"},
    {"sample $M --cfg-scale 500", 2, "--guidance"},
    {"sample $M --cfg-scale=-1", 2, "--guidance"},
    {"sample $M --sampler dpm++2x", 2, "dpm++2x"},
    {"sample $M --n 3x", 2, "--n"},
    {"sample $M --n", 2, "--n"},
    {"sample $M --batch -1", 2, "--batch"},
    {"sample $M --steps 0", 2, "--steps"},
    {"sample $M --eta 1.5", 2, "--eta"},
    {"sample $M --eta -0.1", 2, "--eta"},
    {"sample $M --init-image $P --strength 0", 2, "--strength"},
    {"sample $M --init-image $P --strength 1.5", 2, "--strength"},
    {"sample $M --seed 0x10", 2, "--seed"},
    {"sample $M --sampler nosuch", 2, "nosuch"},
    {"sample $M --spacing odd", 2, "odd"},
    {"sample $M --labels 1,x", 2, "--labels"},
    {"sample $M --labels 1,,2", 2, "--labels"},
    {"sample $M --labels 1,2,", 2, "--labels"},
    {"sample $M --labels -1", 2, "--labels"},
    {"sample $M --raw=1", 2, "--raw"},
    {"sample $M --out=", 2, "--out"},
    {"sample $M --out --n 2", 2, "--out"},
    {"sample $M --frames 1 --animate $T/o.gif", 2, "--frames"},
    /* sample: contradictions */
    {"sample $M --sampler euler --eta 0.3", 2, "--eta"},
    {"sample $M --karras", 2, "--karras"},
    {"sample $M --sampler heun --large-variance", 2, "--large-variance"},
    {"sample $M --init-image $P", 2, "--strength"},
    {"sample $M --strength 0.5", 2, "--strength"},
    {"sample $M --init-image $P --strength 0.5 --inpaint $P --mask $P", 2, "--inpaint"},
    {"sample $M --inpaint $P", 2, "--mask"},
    {"sample $M --mask $P", 2, "--mask"},
    {"sample $M --jump-n 3", 2, "--jump-n"},
    {"sample $M --inpaint $P --mask $P --sampler euler", 2, "--sampler"},
    {"sample $M --frames 5 --out $T/o.png", 2, "--frames"},
    {"sample $M --cols 4 --npy $T/o.npy", 2, "--cols"},
    {"sample $M --out $T/o.gif", 2, "o.gif"},
    {"sample $M --npy $T/o.png", 2, "--npy"},
    {"sample $M --animate $T/o.mp4", 2, "--animate"},
    {"sample $M --out $T/o.png --animate $T/o.png", 2, "--animate"},
    {"sample $M --out $T/o.png --animate $T/./o.png", 2, "--animate"},
    {"sample $M --out $P --init-image $P --strength 0.5", 2, "--init-image"},
    {"sample $M --out-dir $M", 2, "MODEL"},
    {"sample $M --labels 3 --out $T/o.png", 2, "unconditional"},
    {"sample $M --steps 5000 --out $T/o.png", 2, "--steps"},
    /* sample: files */
    {"sample $T/missing", 1, "missing"},
    {"sample $X", 1, "notes.txt"},
    {"sample $T/adir", 1, "adir"},
    {"sample $M --init-image $T/missing.png --strength 0.5 --out $T/o.png", 1, "missing.png"},
    {"sample $M --init-image $T/adir --strength 0.5 --out $T/o.png", 1, "adir"},
    {"sample $M --inpaint $P --mask $T/missing.png --out $T/o.png", 1, "missing.png"},
    {"sample $M --out $T/missing/o.png", 1, "missing"},
    {"sample $M --out $T/adir.png", 1, "adir.png"},
    {"sample $M --out-dir $X", 1, "notes.txt"},
    {"sample $M --npy $T/missing/o.npy", 1, "missing"},
    /* noise */
    {"noise", 2, "IMAGE"},
    {"noise $P", 2, "OUT.png"},
    {"noise --demo", 2, "OUT.png"},
    {"noise $P $T/o.png $T/o2.png", 2, "o2.png"},
    {"noise --demo $P $T/o.png", 2, "--demo"},
    {"noise $P $T/o.png --bogus", 2, "--bogus"},
    {"noise $P $T/o.png --steps 0,5,x", 2, "--steps"},
    {"noise $P $T/o.png --steps", 2, "--steps"},
    {"noise $P $T/o.png --size 0", 2, "--size"},
    {"noise $P $T/o.png --size 5000", 2, "--size"},
    {"noise $P $T/o.png --timesteps 10 --steps 10", 2, "T = 10"},
    {"noise $P $T/o.png --schedule cosine2", 2, "cosine2"},
    {"noise $P $T/o.png --seed 1.5", 2, "--seed"},
    {"noise $P $T/o.png --gray --gray", 2, "--gray"},
    {"noise --demo $T/o.png --size 4096 --steps 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16", 2, "--size"},
    {"noise $P $P", 2, "IMAGE"},
    {"noise $P $T/o.jpg", 2, "o.jpg"},
    {"noise $T/missing.png $T/o.png", 1, "missing.png"},
    {"noise $T/adir $T/o.png", 1, "adir"},
    {"noise $X $T/o.png", 1, "notes.txt"},
    {"noise $P $T/missing/o.png", 1, "missing"},
    {"noise $P $T/adir.png", 1, "adir.png"},
    /* info */
    {"info", 2, "model"},
    {"info $M $M", 2, "unexpected"},
    {"info --verbose $M", 2, "--verbose"},
    {"info $T/missing", 1, "missing"},
    {"info $X", 1, "notes.txt"},
    {"info $T/adir", 1, "adir"},
    /* init */
    {"init $T/omodel", 2, "--preset"},
    {"init --preset fmnist-s", 2, "OUT_DIR"},
    {"init --preset fmnist-s --config $C $T/omodel", 2, "--config"},
    {"init --preset nosuch $T/omodel", 2, "nosuch"},
    {"init --preset fmnist-s --seed x $T/omodel", 2, "--seed"},
    {"init --preset fmnist-s --preset cifar10 $T/omodel", 2, "--preset"},
    {"init --preset fmnist-s $T/omodel extra", 2, "extra"},
    {"init --preset", 2, "--preset"},
    {"init --config $T/missing.json $T/omodel", 1, "missing.json"},
    {"init --config $T/adir $T/omodel", 1, "adir"},
    {"init --config $B $T/omodel", 1, "bad.json"},
    {"init --preset fmnist-s $X", 1, "notes.txt"},
    /* predict */
    {"predict", 2, "MODEL_DIR"},
    {"predict $M $I", 2, "OUT"},
    {"predict $M $I $T/o.safetensors extra", 2, "extra"},
    {"predict --grad $M $I $T/o.safetensors", 2, "--grad"},
    {"predict $M $I $I", 2, "overwrite"},
    {"predict $T/missing $I $T/o.safetensors", 1, "missing"},
    {"predict $X $I $T/o.safetensors", 1, "notes.txt"},
    {"predict $M $T/missing.safetensors $T/o.safetensors", 1, "missing.safetensors"},
    {"predict $M $T/adir $T/o.safetensors", 1, "adir"},
    {"predict $M $I $T/missing/o.safetensors", 1, "missing"},
    {"predict $M $I $T/adir.png", 1, "adir.png"},
    {"predict $M $P $T/o.safetensors", 1, "in.png"},
    /* guidance and classifiers */
    {"sample $M --guidance 3", 2, "--guidance"},
    {"sample $M --classifier-scale 2", 2, "--classifier-scale"},
    {"sample $M --classifier $T/missing", 1, "missing"},
    {"sample $M --score $M", 2, "not a classifier"},
    {"sample $M --guidance -1", 2, "--guidance"},
    {"sample $M --guidance-rescale 2", 2, "--guidance-rescale"},
    {"sample $M --clipped-eps --model-eps", 2, "--clipped-eps"},
    {"train-classifier --steps 3", 2, "--out"},
    {"train-classifier --out $T/c", 2, "budget"},
    {"train-classifier --preset fmnist-s --config $T/missing.json --steps 3 --out $T/c", 2, "--preset"},
    {"train-classifier --config $T/missing.json --steps 3 --out $T/c", 1, "missing.json"},
    {"train-classifier --preset nosuch --steps 3 --out $T/c", 2, "nosuch"},
    {"train-classifier --data $T/missing-data --steps 3 --out $T/c", 1, "missing-data"},
    {"train-classifier --eval $T/missing-test --steps 3 --out $T/c", 1, "missing-test"},
    {"train --class-dropout 0.2 --steps 3 --out $T/r", 2, "--class-dropout"},
    {"train --classes --class-dropout 1.5 --steps 3 --out $T/r", 2, "--class-dropout"},
    /* text-to-image training */
    {"train --tokenizer $T --steps 3 --out $T/r", 2, "--captions"},
    {"train --caption-dropout 0.2 --steps 3 --out $T/r", 2, "--captions"},
    {"train --captions --classes --steps 3 --out $T/r", 2, "not both"},
    {"train --captions --freeze-text-encoder --steps 3 --out $T/r", 2, "--text-encoder"},
    {"train --captions --text-encoder $T --cross-attention-dim 8 --steps 3 --out $T/r", 2, "--cross-attention-dim"},
    {"train --captions --caption-dropout 1 --steps 3 --out $T/r", 2, "--caption-dropout"},
    {"train --captions --tokenizer $T/missing --steps 3 --out $T/r", 1, "missing"},
    {"train --captions --sample-prompts $T/missing.txt --steps 3 --out $T/r", 1, "missing.txt"},
    /* evaluation */
    {"eval", 2, "what to score"},
    {"eval $M --metrics fd,zzz", 2, "zzz"},
    {"eval $M --n 1", 2, "--n"},
    {"eval $M --sweep steps", 2, "--sweep"},
    {"eval $M --save-images $T/o.png", 2, "--save-images"},
    {"eval $X", 2, "notes.txt"},
    {"eval $T/missing", 1, "missing"},
    {"eval $P --steps 3", 2, "in.png"},
    {"eval $P --spacing trailing", 2, "in.png"},
    {"eval $M --spacing odd", 2, "odd"},
    {"eval $M --karras", 2, "sigma-space"},
    {"eval $M --sampler euler --eta 0.5", 2, "--eta"},
    {"eval $M --features $T/missing", 1, "missing"},
    {"train --eval-n 300 --steps 3 --out $T/r", 2, "--eval-every"},
    {"train --eval-every 5 --eval-features $T/missing --steps 3 --out $T/r", 1, "missing"},
};

/* The command a case runs ("" for the top level): its first word, when that names one. */
static void command_of(const char *args, char *cmd, size_t cap) {
    static const char *const names[] = {"train", "sample", "noise", "info", "init", "predict", "train-classifier", "eval"};
    const char *a = args;
    int skip = strncmp(a, "--threads=", 10) == 0 ? 1 : strncmp(a, "--threads ", 10) == 0 ? 2 : 0;
    for (; skip > 0 && *a; skip--) a = strchr(a, ' ') ? strchr(a, ' ') + 1 : a + strlen(a);
    cmd[0] = 0;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        size_t n = strlen(names[i]);
        if (strncmp(a, names[i], n) == 0 && (a[n] == ' ' || a[n] == 0)) snprintf(cmd, cap, "%s", names[i]);
    }
}

TEST(cli_args_bad_arguments_fail_early_and_clearly) {
    fixture fx;
    if (!setup(&fx)) return;
    char p[PATH_MAX + 32];
    snprintf(p, sizeof p, "%s/in.png", fx.t);
    struct stat before;
    CHECK(stat(p, &before) == 0, "fixture %s", p);
    int failed_cases = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const bad_case *c = &cases[i];
        char args[4096], err[8192], out[2048], cmd[32], prefix[64], first[2048] = "";
        expand(&fx, c->args, args, sizeof args);
        int rc = run(&fx, args, err, sizeof err, out, sizeof out);
        if (getenv("DIFFUSE_VERBOSE")) printf("    [%d] diffuse %s\n%s", rc, c->args, err);
        command_of(c->args, cmd, sizeof cmd);
        snprintf(prefix, sizeof prefix, cmd[0] ? "diffuse %s: " : "diffuse: ", cmd);
        size_t len = strcspn(err, "\n");
        snprintf(first, sizeof first, "%.*s", (int)len, err);
        const char *rest = err[len] ? err + len + 1 : err + len;
        int lines = 0;
        for (const char *q = err; *q; q++) lines += *q == '\n';
        int bad = 0;
#define EXPECT(cond, ...)             \
    do {                              \
        if (!(cond)) {                \
            CHECK(cond, __VA_ARGS__); \
            bad = 1;                  \
        }                             \
    } while (0)
        EXPECT(rc == c->code, "\"%s\": exit %d, expected %d; stderr: %s", c->args, rc, c->code, err);
        EXPECT(strncmp(first, prefix, strlen(prefix)) == 0, "\"%s\": first line does not start with \"%s\": %s",
               c->args, prefix, first);
        EXPECT(strstr(first, c->named) != NULL, "\"%s\": first line does not name \"%s\": %s", c->args, c->named,
               first);
        if (c->code == 2) {
            char usage[64];
            snprintf(usage, sizeof usage, "usage: diffuse %s", cmd[0] ? cmd : "<command>");
            EXPECT(strncmp(rest, usage, strlen(usage)) == 0 && strstr(rest, "--help"),
                   "\"%s\": the usage line (\"%s ... --help ...\") does not follow: %s", c->args, usage, err);
            EXPECT(lines >= 2 && lines <= 3, "\"%s\": %d lines on stderr, expected the error and the usage line: %s",
                   c->args, lines, err);
        } else {
            EXPECT(lines == 1, "\"%s\": %d lines on stderr, expected one: %s", c->args, lines, err);
        }
        EXPECT(!strstr(err, "Sanitizer") && !strstr(err, "Segmentation") && !strstr(err, "runtime error"),
               "\"%s\": crashed: %s", c->args, err);
        EXPECT(out[0] == 0, "\"%s\": printed on stdout: %s", c->args, out);
        for (size_t k = 0; k < sizeof outputs / sizeof *outputs; k++)
            if (exists(fx.t, outputs[k])) {
                EXPECT(0, "\"%s\": left %s/%s behind", c->args, fx.t, outputs[k]);
                char rm[PATH_MAX + 64];
                snprintf(rm, sizeof rm, "rm -rf '%s/%s'", fx.t, outputs[k]);
                if (system(rm) != 0) CHECK(0, "cannot remove %s/%s", fx.t, outputs[k]);
            }
#undef EXPECT
        failed_cases += bad;
    }
    struct stat after;
    CHECK(stat(p, &after) == 0 && after.st_size == before.st_size && after.st_mtime == before.st_mtime,
          "the input %s was left as it was", p);
    CHECK(failed_cases == 0, "%d of %zu bad argument lists were not handled as expected", failed_cases,
          sizeof cases / sizeof *cases);
}

TEST(cli_args_help_is_full_and_on_stdout) {
    fixture fx;
    if (!setup(&fx)) return;
    const char *const cmds[] = {"train", "sample", "noise", "info", "init", "predict", "train-classifier", "eval",
                                "compare"};
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
        const char *forms[] = {"%s --help", "%s -h", "help %s", "%s --steps 3 --help"};
        for (size_t f = 0; f < sizeof forms / sizeof *forms; f++) {
            char args[256], err[4096], out[8192], usage[64];
            snprintf(args, sizeof args, forms[f], cmds[i]);
            int rc = run(&fx, args, err, sizeof err, out, sizeof out);
            snprintf(usage, sizeof usage, "usage: diffuse %s", cmds[i]);
            int lines = 0;
            for (const char *q = out; *q; q++) lines += *q == '\n';
            CHECK(rc == 0 && err[0] == 0, "\"%s\": exit %d, stderr: %s", args, rc, err);
            CHECK(strncmp(out, usage, strlen(usage)) == 0 && lines >= 3, "\"%s\": not the full help (%d lines): %s",
                  args, lines, out);
        }
    }
    char err[4096], out[8192];
    CHECK(run(&fx, "--help", err, sizeof err, out, sizeof out) == 0 && strstr(out, "commands:") && !err[0],
          "diffuse --help: the overview on stdout: %s%s", out, err);
}

/* The help of one option in `help`: its line and the continuation lines (indented past the options), joined
 * with spaces, into buf; "" if the option is not listed. */
static void option_help(const char *help, const char *opt, char *buf, size_t cap) {
    char key[64];
    snprintf(key, sizeof key, "\n  %s ", opt);
    buf[0] = 0;
    const char *p = strstr(help, key);
    if (!p) {   /* after a short alias: "  -n, --n N" */
        snprintf(key, sizeof key, ", %s ", opt);
        if (!(p = strstr(help, key))) return;
        while (p > help && p[-1] != '\n') p--;
        p--;
    }
    size_t n = 0;
    for (p++; *p && n + 1 < cap;) {
        size_t len = strcspn(p, "\n");
        n += (size_t)snprintf(buf + n, cap - n, "%.*s ", (int)len, p);
        p += len + (p[len] == '\n');
        if (strncmp(p, "         ", 9) != 0) break;   /* the next option or section */
    }
}

/* --help comes from the option tables: each option with its value, the library's names for enum choices and
 * the library's defaults; `help CMD` prints the same. */
TEST(cli_args_help_shows_the_tables_defaults_and_choices) {
    fixture fx;
    if (!setup(&fx)) return;
    static char out[16384], out2[16384], err[4096], line[2048];
    CHECK(run(&fx, "train --help", err, sizeof err, out, sizeof out) == 0, "train --help: %s", err);
    df_train_params tp;
    df_train_params_default(&tp);
    char want[64];
    snprintf(want, sizeof want, "(default: %d)", tp.batch_size);
    option_help(out, "--batch N", line, sizeof line);
    CHECK(strstr(line, want), "train --help: --batch shows \"%s\": \"%s\"", want, line);
    option_help(out, "--lr X", line, sizeof line);
    snprintf(want, sizeof want, "(default: %g)", tp.optim.lr);
    CHECK(strstr(line, want), "train --help: --lr shows \"%s\": \"%s\"", want, line);
    option_help(out, "--schedule NAME", line, sizeof line);
    for (int k = 0; k < DF_BETA_COUNT; k++)
        CHECK(strstr(line, df_beta_kind_name((df_beta_kind)k)), "train --help: --schedule lists %s: \"%s\"",
              df_beta_kind_name((df_beta_kind)k), line);
    CHECK(run(&fx, "help train", err, sizeof err, out2, sizeof out2) == 0 && strcmp(out, out2) == 0,
          "help train and train --help differ");

    CHECK(run(&fx, "sample --help", err, sizeof err, out, sizeof out) == 0, "sample --help: %s", err);
    df_sampler_params sp;
    df_sampler_params_default(&sp);
    option_help(out, "--sampler NAME", line, sizeof line);
    for (int k = 0; k < DF_SAMPLER_COUNT; k++)
        CHECK(strstr(line, df_sampler_name((df_sampler_kind)k)), "sample --help: --sampler lists %s: \"%s\"",
              df_sampler_name((df_sampler_kind)k), line);
    snprintf(want, sizeof want, "(default: %s)", df_sampler_name(sp.kind));
    CHECK(strstr(line, want), "sample --help: --sampler shows \"%s\": \"%s\"", want, line);
    static const char *const sample_opts[] = {"--n N", "--batch N", "--seed S", "--steps N", "--eta X", "--labels",
                                              "--guidance,", "--out FILE.png", "--animate FILE", "--inpaint IMG"};
    for (size_t i = 0; i < sizeof sample_opts / sizeof *sample_opts; i++) {
        option_help(out, sample_opts[i], line, sizeof line);
        CHECK(line[0], "sample --help does not list %s", sample_opts[i]);
    }

    /* the short and familiar spellings are on their options' lines */
    static const char *const spelled[][2] = {{"-n, --n N", "--n N"}, {"-s, --seed S", "--seed S"},
                                             {"-o, --out FILE.png", "--out FILE.png"},
                                             {"--guidance, --cfg-scale W", "--guidance,"}};
    for (size_t i = 0; i < sizeof spelled / sizeof *spelled; i++) {
        option_help(out, spelled[i][1], line, sizeof line);
        CHECK(strncmp(line + 2, spelled[i][0], strlen(spelled[i][0])) == 0, "sample --help: \"%s\" on its line: \"%s\"",
              spelled[i][0], line);
    }
    /* --list-samplers: every sampler with its summary and its aliases, then exit 0 */
    CHECK(run(&fx, "sample --list-samplers", err, sizeof err, out, sizeof out) == 0 && !err[0],
          "sample --list-samplers: %s", err);
    for (int k = 0; k < DF_SAMPLER_COUNT; k++) {
        const df_sampler_info *si = df_sampler_info_get((df_sampler_kind)k);
        char head[160];
        snprintf(head, sizeof head, "%-10s %s\n", si->name, si->summary);
        CHECK(strstr(out, head), "sample --list-samplers: no line \"%s\" in %s", si->name, out);
        CHECK(!si->aliases[0] || strstr(out, si->aliases), "sample --list-samplers: %s's aliases \"%s\"", si->name,
              si->aliases);
    }
    CHECK(strstr(out, "dpm++2m") && strstr(out, "euler_ancestral"), "sample --list-samplers: %s", out);

    CHECK(run(&fx, "eval --help", err, sizeof err, out, sizeof out) == 0, "eval --help: %s", err);
    option_help(out, "--metrics LIST", line, sizeof line);
    for (int m = 0; m < DF_METRIC_COUNT; m++)
        CHECK(strstr(line, df_metric_name((df_metric)m)), "eval --help: --metrics lists %s: \"%s\"",
              df_metric_name((df_metric)m), line);
    CHECK(run(&fx, "--help", err, sizeof err, out, sizeof out) == 0, "--help: %s", err);
    option_help(out, "--threads N", line, sizeof line);
    CHECK(strstr(line, "(default: all cores)"), "--help: --threads and its default: \"%s\"", line);
}
