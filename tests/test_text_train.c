/* Text-to-image training on captioned images the tests draw (coloured shapes): a model trained from scratch with
 * its text encoder follows its prompts; runs resume bit for bit with the encoder's weights, moments and EMA; a
 * frozen encoder stays as it was; bad text settings are refused with one clear line and nothing written. */
#define _GNU_SOURCE
#include "test.h"
#include "internal.h"
#include "loop.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *const colours[3] = {"red", "green", "blue"};
static const char *const shapes[2] = {"square", "circle"};

/* An 8x8 RGB folder of n images: image i a square or circle of radius 2 in pure colour i % 3 (shape i / 3 % 2)
 * on black, at a place drawn from a fixed seed, with metadata.jsonl captions "COLOUR SHAPE" (and "a COLOUR
 * SHAPE" when two_captions); by_colour puts them in a folder per colour (labels) with a .txt caption each. */
static void shapes_folder(const char *dir, int n, int two_captions, int by_colour) {
    mkdir(dir, 0755);
    char path[700];
    snprintf(path, sizeof path, "%s/metadata.jsonl", dir);
    FILE *meta = by_colour ? NULL : fopen(path, "w");
    if (!meta && !by_colour) return;
    for (int c = 0; by_colour && c < 3; c++) {
        snprintf(path, sizeof path, "%s/%s", dir, colours[c]);
        mkdir(path, 0755);
    }
    df_rng r;
    df_rng_init(&r, 77);
    float x[3 * 64];
    for (int i = 0; i < n; i++) {
        const int c = i % 3, s = i / 3 % 2;
        const int cx = 2 + (int)(df_rng_u32(&r) % 4), cy = 2 + (int)(df_rng_u32(&r) % 4);
        for (int y = 0; y < 8; y++)
            for (int xx = 0; xx < 8; xx++) {
                const int dx = xx - cx, dy = y - cy;
                const int in = s == 0 ? abs(dx) <= 2 && abs(dy) <= 2 : dx * dx + dy * dy <= 4;
                for (int k = 0; k < 3; k++) x[k * 64 + y * 8 + xx] = in && k == c ? 1.f : -1.f;
            }
        if (by_colour) {
            snprintf(path, sizeof path, "%s/%s/%04d.txt", dir, colours[c], i);
            FILE *f = fopen(path, "w");
            if (f) fprintf(f, "%s %s\n", colours[c], shapes[s]), fclose(f);
            snprintf(path, sizeof path, "%s/%s/%04d.png", dir, colours[c], i);
            CHECK_OK(df_image_save_png(path, x, 3, 8, 8));
            continue;
        }
        snprintf(path, sizeof path, "%s/%04d.png", dir, i);
        CHECK_OK(df_image_save_png(path, x, 3, 8, 8));
        if (two_captions)
            fprintf(meta, "{\"file_name\": \"%04d.png\", \"text\": [\"%s %s\", \"a %s %s\"]}\n", i, colours[c], shapes[s],
                    colours[c], shapes[s]);
        else fprintf(meta, "{\"file_name\": \"%04d.png\", \"text\": \"%s %s\"}\n", i, colours[c], shapes[s]);
    }
    if (meta) fclose(meta);
}

/* The U-Net: 8x8 RGB, 16 and 32 channels, attention at the inner level (a UNet2DModel config, which text
 * training makes a UNet2DConditionModel). */
static void shapes_config(const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) return;
    fputs("{\"_class_name\": \"UNet2DModel\", \"sample_size\": 8, \"in_channels\": 3, \"out_channels\": 3,\n"
          " \"block_out_channels\": [16, 32], \"down_block_types\": [\"DownBlock2D\", \"AttnDownBlock2D\"],\n"
          " \"up_block_types\": [\"AttnUpBlock2D\", \"UpBlock2D\"], \"layers_per_block\": 1, \"norm_num_groups\": 8,\n"
          " \"attention_head_dim\": 16}\n",
          f);
    fclose(f);
}

typedef struct {
    char dir[512], data[600], tok[600], cfg[600];
} shapes_setup;

/* The folder of n images, the tokenizer and the config under the test's directory (named by tag). 0 when all
 * three are there. */
static int setup(shapes_setup *s, const char *tag, int n, int two_captions, int by_colour) {
    snprintf(s->dir, sizeof s->dir, "%s/%s", test_tmp_dir(), tag);
    mkdir(s->dir, 0755);
    snprintf(s->data, sizeof s->data, "%s/data", s->dir);
    snprintf(s->tok, sizeof s->tok, "%s/tokenizer", s->dir);
    snprintf(s->cfg, sizeof s->cfg, "%s/unet.json", s->dir);
    shapes_folder(s->data, n, two_captions, by_colour);
    shapes_config(s->cfg);
    return test_learn_tokenizer(s->tok, 8);
}

static void text_params(df_train_params *p, const shapes_setup *s, const char *out) {
    df_train_params_default(p);
    p->data = s->data, p->preset = NULL, p->config_path = s->cfg, p->out_dir = out;
    p->text_conditional = 1, p->tokenizer = s->tok, p->cross_attention_dim = 32;
    p->batch_size = 32, p->optim.lr = 2e-3, p->optim.warmup_steps = 20, p->ema_max_decay = 0.99;
    p->sample_count = 0, p->sample_every = 0, p->save_every = 0, p->log_every = 100;
}

/* Trained for 1,400 steps of 16 on 180 captioned shapes (about 20 s on one core), the model draws the asked colour: for
 * each of three prompts, 8 images at guidance 3, whose mean in the asked channel is above the other two by at
 * least 0.1 (on [0, 1]); without the text the three colours come equally often. */
TEST(text_train_follows_prompts) {
    shapes_setup s;
    if (setup(&s, "t2i-follow", 180, 0, 0)) return;
    char out[700];
    snprintf(out, sizeof out, "%s/run", s.dir);
    df_train_params p;
    text_params(&p, &s, out);
    /* sanitizer runs (quick) check the memory of the whole path on a short run; the colours need the full one */
    const int quick = test_quick();
    p.max_steps = quick ? 40 : 1400, p.batch_size = 16;
    CHECK_OK(df_train(&p));
    df_model *m = NULL;
    df_scheduler_config sc;
    df_text_encoder *enc = NULL;
    df_tokenizer *tok = NULL;
    CHECK_OK(df_pipeline_load(out, 0, &m, &sc));
    if (!m) return;
    CHECK_OK(df_text_pipeline_load(out, m, &enc, &tok));
    if (!enc || !tok) {
        df_model_free(m);
        return;
    }
    const char *prompts[4] = {"red square", "green circle", "blue square", ""};
    const int L = df_tokenizer_context(tok), D = df_text_encoder_config(enc)->hidden_size;
    float *states = malloc(sizeof(float) * 4 * L * D), *x = malloc(sizeof(float) * 24 * 3 * 64);
    CHECK_OK(df_encode_prompts(enc, tok, 4, prompts, states, NULL));
    df_schedule sched;
    CHECK_OK(df_schedule_from_config(&sc, &sched));
    df_generate_params g;
    df_generate_params_for(&g, m, &sc, &sched);
    g.n = 24, g.seed = 0, g.sampler.kind = DF_SAMPLER_DDIM, g.sampler.steps = 20, g.guidance = 3;
    g.texts = states, g.n_texts = 4, g.text_len = L, g.null_class = 3;
    CHECK_OK(df_generate(&g, x));
    for (int row = 0; row < 3; row++) {
        double mean[3] = {0, 0, 0};
        for (int i = row * 8; i < row * 8 + 8; i++)
            for (int k = 0; k < 3; k++)
                for (int j = 0; j < 64; j++) mean[k] += (fmin(fmax(x[(i * 3 + k) * 64 + j], -1), 1) + 1) / 2 / (8 * 64);
        printf("    \"%s\": mean red %.3f, green %.3f, blue %.3f\n", prompts[row], mean[0], mean[1], mean[2]);
        for (int k = 0; k < 3; k++)
            CHECK(quick ? isfinite(mean[k]) : k == row || mean[row] > mean[k] + 0.1, "\"%s\" draws %s %.3f, not above %s %.3f by 0.1", prompts[row],
                  colours[row], mean[row], colours[k], mean[k]);
    }
    df_schedule_free(&sched);
    free(states), free(x);
    df_text_encoder_free(enc), df_tokenizer_free(tok), df_model_free(m);
}

/* Stopped and resumed, a text run (two captions per image drawn by epoch, caption dropout, the encoder training)
 * ends with the same bytes as a straight run: the U-Net and text encoder, their EMA, the optimizer's moments. */
TEST(text_train_resume_is_bit_exact) {
    shapes_setup s;
    if (setup(&s, "t2i-resume", 30, 1, 0)) return;
    char a[700], b[700], c[700];
    snprintf(a, sizeof a, "%s/straight", s.dir);
    snprintf(b, sizeof b, "%s/resumed", s.dir);
    snprintf(c, sizeof c, "%s/other", s.dir);
    df_train_params p;
    text_params(&p, &s, a);
    p.batch_size = 8, p.caption_dropout = 0.3, p.max_steps = 12, p.optim.total_steps = 12, p.sample_count = 6;
    CHECK_OK(df_train(&p));
    p.out_dir = b, p.max_steps = 5;
    CHECK_OK(df_train(&p));
    df_train_params q;
    df_train_params_default(&q);
    df_train_paths paths;
    CHECK_OK(df_train_params_resume(&q, b, &paths));
    q.max_steps = 12;
    CHECK_OK(df_train(&q));
    const char *files[] = {"unet_raw/diffusion_pytorch_model.safetensors", "text_encoder_raw/model.safetensors",
                           "unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
                           "training_state.safetensors", "tokenizer/vocab.json", "model_index.json"};
    const char *differs = test_checkpoint_differs(a, b, 12, files, DF_COUNTOF(files));
    CHECK(!differs, "%s differs between the straight and the resumed run", differs);
    /* the comparison can fail: no caption dropout gives another text encoder */
    text_params(&p, &s, c);
    p.batch_size = 8, p.caption_dropout = 0, p.max_steps = 12, p.optim.total_steps = 12;
    CHECK_OK(df_train(&p));
    CHECK(test_checkpoint_differs(a, c, 12, files + 1, 1), "caption dropout changes nothing");
    /* the grid of the first images' captions: 6 samples, 2 prompts ("red square", "green square"... the first
     * captions of images 0..) a row each */
    char png[800];
    snprintf(png, sizeof png, "%s/samples/latest.png", a);
    struct stat sb;
    CHECK(stat(png, &sb) == 0, "no sample grid in %s", png);
}

/* A given encoder kept frozen: the checkpoint's text_encoder/ holds its weights unchanged (and no
 * text_encoder_raw/), while the U-Net trains. */
TEST(text_train_frozen_encoder) {
    shapes_setup s;
    if (setup(&s, "t2i-frozen", 12, 0, 0)) return;
    df_tokenizer *tok = NULL;
    CHECK_OK(df_tokenizer_load(s.tok, &tok));
    if (!tok) return;
    df_text_config tc;
    df_text_config_default(&tc);
    tc.vocab_size = df_tokenizer_vocab_size(tok), tc.hidden_size = 16, tc.intermediate_size = 32;
    tc.num_hidden_layers = 1, tc.num_attention_heads = 2, tc.max_position_embeddings = 8;
    df_tokenizer_free(tok);
    df_text_encoder *enc = NULL;
    char encdir[700], out[700], path[800], path2[800];
    snprintf(encdir, sizeof encdir, "%s/encoder", s.dir);
    snprintf(out, sizeof out, "%s/run", s.dir);
    CHECK_OK(df_text_encoder_create(&tc, 5, &enc));
    if (!enc) return;
    CHECK_OK(df_text_encoder_save(enc, encdir));
    df_text_encoder_free(enc);
    df_train_params p;
    text_params(&p, &s, out);
    p.batch_size = 4, p.max_steps = 3, p.text_encoder = encdir, p.freeze_text_encoder = 1, p.cross_attention_dim = 0;
    CHECK_OK(df_train(&p));
    snprintf(path, sizeof path, "%s/model.safetensors", encdir);
    snprintf(path2, sizeof path2, "%s/latest/text_encoder/model.safetensors", out);
    CHECK(test_files_equal(path, path2), "the frozen encoder's weights changed");
    snprintf(path2, sizeof path2, "%s/latest/text_encoder_raw", out);
    struct stat sb;
    CHECK(stat(path2, &sb) != 0, "a frozen encoder has no trained weights to keep, yet %s exists", path2);
    snprintf(path2, sizeof path2, "%s/latest/unet/config.json", out);
    char *text = NULL;
    size_t len;
    CHECK_OK(df_read_file(path2, &text, &len));
    CHECK(text && strstr(text, "\"cross_attention_dim\": 16"), "the U-Net attends to the encoder's 16-wide states");
    free(text);
}

/* Bad text settings: one clear error each, and no run directory left behind. */
TEST(text_train_bad_settings) {
    shapes_setup s;
    if (setup(&s, "t2i-bad", 6, 0, 0)) return;
    char out[700], idx[600], emptytok[700];
    snprintf(out, sizeof out, "%s/run", s.dir);
    snprintf(emptytok, sizeof emptytok, "%s/empty-tokenizer", s.dir);
    mkdir(emptytok, 0755);
    test_toy_idx(s.dir, "toy", 8, 2, idx, sizeof idx);
    struct {
        const char *what, *want;
    } cases[] = {
        {"uncaptioned data", "no captions"},
        {"no tokenizer", "needs a tokenizer"},
        {"tokenizer folder without files", "vocab.json"},
        {"frozen new encoder", "frozen text encoder must come trained"},
        {"classes too", "not both"},
        {"dropout 1", "caption dropout"},
    };
    for (int k = 0; k < DF_COUNTOF(cases); k++) {
        df_train_params p;
        text_params(&p, &s, out);
        p.max_steps = 2, p.batch_size = 2;
        switch (k) {
        case 0: p.data = idx; break;
        case 1: p.tokenizer = NULL; break;
        case 2: p.tokenizer = emptytok; break;
        case 3: p.freeze_text_encoder = 1; break;
        case 4: p.class_conditional = 1; break;
        case 5: p.caption_dropout = 1; break;
        }
        df_status st = df_train(&p);
        CHECK(st != DF_OK && strstr(df_error(), cases[k].want), "%s: %s (want \"%s\")", cases[k].what,
              st ? df_error() : "accepted", cases[k].want);
        struct stat sb;
        CHECK(stat(out, &sb) != 0, "%s: the failed run left %s", cases[k].what, out);
    }
}

/* The command line: `diffuse train --captions` with grid prompts from a file, resumed without repeating the text
 * options, then `diffuse sample --prompt` and `diffuse info` on the run. */
TEST(text_train_cli) {
    shapes_setup s;
    if (setup(&s, "t2i-cli", 12, 1, 0)) return;
    char args[4000], err[8192], prompts[700];
    snprintf(prompts, sizeof prompts, "%s/prompts.txt", s.dir);
    FILE *f = fopen(prompts, "w");
    if (!f) return;
    fputs("red square\n\nblue circle\n", f);
    fclose(f);
    snprintf(args, sizeof args,
             "train --data %s --config %s --captions --tokenizer %s --cross-attention-dim 16 --batch 4 --steps 2 "
             "--samples 4 --sample-steps 2 --sample-prompts %s --out %s/run",
             s.data, s.cfg, s.tok, prompts, s.dir);
    int rc = test_run_diffuse(NULL, 120, args, NULL, 0, err, sizeof err);
    CHECK(rc == 0, "diffuse %s: exit %d: %s", args, rc, err);
    CHECK(strstr(err, "text-conditional on its captions") && strstr(err, "text: 24 captions of 12 images, 8 tokens each"),
          "the start line and the text note: %s", err);
    snprintf(args, sizeof args, "train --resume --steps 4 --out %s/run", s.dir);
    rc = test_run_diffuse(NULL, 120, args, NULL, 0, err, sizeof err);
    CHECK(rc == 0, "diffuse %s: exit %d: %s", args, rc, err);
    char png[800];
    snprintf(png, sizeof png, "%s/run/samples/latest.png", s.dir);
    int c = 0, h = 0, w = 0;
    float *img = NULL;
    CHECK_OK(df_image_load(png, 0, &c, &h, &w, &img));
    CHECK(h == 2 + 2 * 10 && w == 2 + 2 * 10, "a grid of two prompts' rows of two: %dx%d", w, h);
    free(img);
    snprintf(args, sizeof args, "sample %s/run --prompt \"blue circle\" --n 2 --steps 2 --out %s/s.png", s.dir, s.dir);
    rc = test_run_diffuse(NULL, 120, args, NULL, 0, err, sizeof err);
    CHECK(rc == 0, "diffuse %s: exit %d: %s", args, rc, err);
    char out[4096];
    snprintf(args, sizeof args, "info %s/run", s.dir);
    rc = test_run_diffuse(NULL, 60, args, out, sizeof out, err, sizeof err);
    CHECK(rc == 0 && strstr(out, "UNet2DConditionModel") && strstr(out, "captioned"), "diffuse info: %s%s", out, err);
    /* diffuse eval does not draw prompts: it says so in one line */
    snprintf(args, sizeof args, "eval %s/run --n 4 --metrics fd", s.dir);
    rc = test_run_diffuse(NULL, 60, args, NULL, 0, err, sizeof err);
    CHECK(rc != 0 && strstr(err, "text-to-image model") && strchr(err, '\n') == err + strlen(err) - 1,
          "diffuse eval of a text model: exit %d: %s", rc, err);
}

/* Evaluation during training of a text run: each image from a training image's caption (here a .txt beside each
 * image, in a folder per colour), scored by a feature network (a tiny colour classifier): FD and KID in
 * loss.csv at the evaluated steps. */
TEST(text_train_evaluates_from_captions) {
    shapes_setup s;
    if (setup(&s, "t2i-eval", 60, 0, 1)) return;
    df_unet_config cfg;
    test_tiny_unet(&cfg, 0);
    cfg.in_channels = cfg.out_channels = 3;
    df_classifier_train_params tp;
    df_classifier_train_params_default(&tp);
    char clf[700], out[700], path[800];
    snprintf(clf, sizeof clf, "%s/clf", s.dir);
    snprintf(out, sizeof out, "%s/run", s.dir);
    tp.config = &cfg, tp.data = s.data, tp.noise_aware = 0, tp.max_steps = 20, tp.batch_size = 16, tp.out_dir = clf;
    CHECK_OK(df_classifier_train(&tp));
    df_train_params p;
    text_params(&p, &s, out);
    p.batch_size = 8, p.max_steps = 6, p.log_every = 1;
    p.eval_every = 3, p.eval_n = 20, p.eval_steps = 2, p.eval_features = clf, p.eval_ref = s.data;
    CHECK_OK(df_train(&p));
    snprintf(path, sizeof path, "%s/loss.csv", out);
    char *text = NULL;
    size_t len;
    CHECK_OK(df_read_file(path, &text, &len));
    int evals = 0;
    for (char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        long step;
        double fd, kid;
        /* step,...,images,fd,kid,eval_sec: the last three fields */
        char *end = strchr(line, '\n'), *f = end ? end : line + strlen(line);
        int commas = 0;
        while (f > line && commas < 3) commas += *--f == ',';
        if (sscanf(line, "%ld,", &step) == 1 && sscanf(f, ",%lf,%lf", &fd, &kid) == 2) {
            CHECK(step % 3 == 0 && isfinite(fd) && fd >= 0 && isfinite(kid), "step %ld: FD %g, KID %g", step, fd, kid);
            evals++;
        }
    }
    CHECK(evals == 2, "%d evaluations in loss.csv, want steps 3 and 6", evals);
    free(text);
}

/* A text training step allocates nothing: the captions' ids, the encoder's passes both ways, the U-Net's context
 * and its gradient run in memory planned before the first step. */
TEST(text_train_steps_allocate_nothing) {
    shapes_setup s;
    if (setup(&s, "t2i-alloc", 20, 1, 0)) return;
    char out[700];
    snprintf(out, sizeof out, "%s/run", s.dir);
    df_train_params p;
    text_params(&p, &s, out);
    p.batch_size = 4, p.grad_accum = 2, p.max_steps = 6, p.save_every = 3, p.log_every = 1, p.caption_dropout = 0.3;
    test_step_allocations = test_steps_watched = 0;
    df_train_step_watch = test_watch_step;
    CHECK_OK(df_train(&p));
    df_train_step_watch = NULL;
    CHECK(test_steps_watched == 6, "%ld steps watched", test_steps_watched);
    CHECK(test_step_allocations == 0, "text training: %ld library allocations in %ld steps", test_step_allocations, test_steps_watched);
}
