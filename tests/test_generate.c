/* df_generate: image k depends on (seed, k) only, not on n, batch, first_index or guidance's doubled batch,
 * for every sampler and for the edits; it matches the sampler called by hand; bad requests are refused. */
#include "test.h"

#include <stdlib.h>
#include <string.h>

/* A tiny random conditional model: 3 classes and the null class 3. */
static df_model *tiny_model(int classes) {
    df_unet_config c;
    test_tiny_unet(&c, 1);
    c.num_class_embeds = classes;
    df_model *m = NULL;
    CHECK_OK(df_model_create(&c, 7, &m));
    return m;
}

static void base_params(df_generate_params *g, df_model *m, const df_schedule *s, int n, int batch) {
    df_generate_params_default(g);
    g->model = m, g->schedule = s, g->n = n, g->batch = batch, g->seed = 42;
    g->sampler.steps = 6;
}

/* Largest |a - b| over count values. */
static double max_abs(const float *a, const float *b, size_t count) {
    double d = 0;
    for (size_t i = 0; i < count; i++) d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

/* The noise is exactly the same; the network's float rounding depends on the batch size (GEMM and
 * convolution blocking, about 5e-7 of its output), which the steps may amplify. A 256-level pixel is 8e-3. */
#define SAME_TOL 1e-4

TEST(generate_image_k_depends_on_seed_and_k_only) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_model *m = tiny_model(4);
    const size_t dim = 64;
    const int n = 5;
    float *all = malloc(sizeof(float) * n * dim), *part = malloc(sizeof(float) * n * dim);
    struct { df_sampler_kind kind; double eta; } runs[] = {
        {DF_SAMPLER_DDPM, 0}, {DF_SAMPLER_DDIM, 0}, {DF_SAMPLER_DDIM, 0.7}, {DF_SAMPLER_DPMPP_1S, 0},
        {DF_SAMPLER_DPMPP_2M, 0}, {DF_SAMPLER_DPMPP_3M, 0}, {DF_SAMPLER_EULER, 0}, {DF_SAMPLER_HEUN, 0},
        {DF_SAMPLER_EULER_A, 0}};
    for (int r = 0; r < DF_SAMPLER_COUNT + 1; r++) {
        df_generate_params g;
        base_params(&g, m, &s, n, n);
        g.sampler.kind = runs[r].kind, g.sampler.eta = runs[r].eta;
        g.null_class = 3, g.guidance = 2.5;
        const char *name = df_sampler_name(runs[r].kind);
        CHECK_OK(df_generate(&g, all));
        /* batches of 2: the last one partial; the doubled (guided) batch is 4, not 10 */
        g.batch = 2;
        CHECK_OK(df_generate(&g, part));
        double d = max_abs(all, part, n * dim);
        CHECK(d <= SAME_TOL, "%s (eta %g): batch 2 vs 5 differ by %g", name, runs[r].eta, d);
        /* images 2..4 alone, as a later part of a split run: first_index 2 */
        int lab[3] = {2 * 3 / 5, 3 * 3 / 5, 4 * 3 / 5};   /* the default labels of images 2..4 of 5 */
        g.n = 3, g.batch = 3, g.first_index = 2, g.labels = lab;
        CHECK_OK(df_generate(&g, part));
        d = max_abs(all + 2 * dim, part, 3 * dim);
        CHECK(d <= SAME_TOL, "%s: images 2..4 from first_index 2 differ by %g", name, d);
        /* another seed changes every image */
        base_params(&g, m, &s, n, n);
        g.sampler.kind = runs[r].kind, g.sampler.eta = runs[r].eta, g.null_class = 3, g.guidance = 2.5;
        g.seed = 43;
        CHECK_OK(df_generate(&g, part));
        for (int k = 0; k < n; k++)
            CHECK(max_abs(all + k * dim, part + k * dim, dim) > 1e-3, "%s: seed 43 image %d is seed 42's", name, k);
    }
    free(all), free(part);
    df_model_free(m);
    df_schedule_free(&s);
}

TEST(generate_edits_depend_on_seed_and_k_only) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_model *m = tiny_model(0);
    const size_t dim = 64;
    const int n = 5;
    float img[64], mask[64], *all = malloc(sizeof(float) * n * dim), *part = malloc(sizeof(float) * n * dim);
    for (int j = 0; j < 64; j++) img[j] = (j % 8 < 4) ? 0.8f : -0.6f, mask[j] = j < 32;
    for (int e = 0; e < 2; e++) {
        df_generate_params g;
        base_params(&g, m, &s, n, n);
        if (e == 0) g.init_image = img, g.strength = 0.6;
        else g.inpaint_image = img, g.mask = mask, g.jump_length = 2, g.jump_n = 2;
        CHECK_OK(df_generate(&g, all));
        g.batch = 3;
        CHECK_OK(df_generate(&g, part));
        double d = max_abs(all, part, n * dim);
        CHECK(d <= SAME_TOL, "%s: batch 3 vs 5 differ by %g", e ? "inpaint" : "img2img", d);
        if (e == 1)   /* the kept half is the input exactly at the clean end */
            for (int k = 0; k < n; k++) CHECK_NEAR(all[k * dim + 5], img[5], 1e-6, "inpaint keeps the known pixels");
        CHECK(max_abs(all, all + dim, dim) > 1e-3, "%s: images 0 and 1 have the same noise", e ? "inpaint" : "img2img");
    }
    free(all), free(part);
    df_model_free(m);
    df_schedule_free(&s);
}

/* With a denoiser that treats samples independently (the mixture's exact one), the samplers and edits give
 * bit-identical samples however the calls are batched: sample i's noise is stream i of the key. */
TEST(generate_sampler_noise_is_per_sample_exactly) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_gmm gmm;
    CHECK_OK(df_gmm_init(&gmm, 2, 1));
    gmm.weight[0] = 0.3, gmm.weight[1] = 0.7, gmm.mean[0] = -0.5, gmm.mean[1] = 0.6;
    gmm.cov[0] = gmm.cov[1] = 0.01;
    const size_t dim = 16;
    const int n = 5;
    df_gmm_denoiser dn = {&gmm, &s, dim, DF_PRED_EPSILON};
    float a[5 * 16], b[5 * 16], known[5 * 16], mask[16];
    for (size_t j = 0; j < n * dim; j++) known[j] = 0.5f;
    for (size_t j = 0; j < dim; j++) mask[j] = j < dim / 2;
    for (int kind = 0; kind < DF_SAMPLER_COUNT + 2; kind++) {
        df_sampler_params p;
        df_sampler_params_default(&p);
        p.steps = 8, p.kind = kind < DF_SAMPLER_COUNT ? (df_sampler_kind)kind : DF_SAMPLER_DDIM;
        if (p.kind == DF_SAMPLER_DDIM) p.eta = 0.8;
        for (int split = 0; split < 2; split++) {
            df_rng key;
            df_rng_init(&key, 9);
            float *out = split ? b : a;
            for (int i0 = 0, bn; i0 < n; i0 += bn) {
                bn = split ? (i0 == 0 ? 2 : 3) : n;
                float *o = out + i0 * dim;
                if (kind < DF_SAMPLER_COUNT) CHECK_OK(df_sample(&s, &p, df_gmm_denoise, &dn, bn, dim, &key, o));
                else if (kind == DF_SAMPLER_COUNT) CHECK_OK(df_img2img(&s, &p, df_gmm_denoise, &dn, bn, dim, known, 0.7, &key, o));
                else CHECK_OK(df_inpaint(&s, &p, df_gmm_denoise, &dn, bn, dim, known, mask, 2, 2, &key, o));
            }
        }
        const char *what = kind < DF_SAMPLER_COUNT ? df_sampler_name(p.kind) : kind == DF_SAMPLER_COUNT ? "img2img" : "inpaint";
        CHECK(memcmp(a, b, sizeof a) == 0, "%s: 2 + 3 samples differ from 5 in one call", what);
        CHECK(memcmp(a, a + dim, dim * sizeof(float)) != 0, "%s: samples 0 and 1 are equal", what);
    }
    df_gmm_free(&gmm);
    df_schedule_free(&s);
}

/* The same images as the sampler driven by hand over the model, one stream per image. */
TEST(generate_matches_the_sampler_by_hand) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_model *m = tiny_model(0);
    const size_t dim = 64;
    const int n = 4;
    float *a = malloc(sizeof(float) * n * dim), *b = malloc(sizeof(float) * n * dim);
    df_generate_params g;
    base_params(&g, m, &s, n, 3);
    g.sampler.kind = DF_SAMPLER_DDPM;
    CHECK_OK(df_generate(&g, a));
    df_sampler_params sp = g.sampler;
    df_model_denoiser dn = {.model = m, .h = 8, .w = 8, .labels = NULL};
    df_rng rng;
    df_rng_init(&rng, 42);
    CHECK_OK(df_sample(&s, &sp, df_model_denoise, &dn, 1, dim, &rng, b));   /* image 0, then 1..3 */
    CHECK_OK(df_sample(&s, &sp, df_model_denoise, &dn, 3, dim, &rng, b + dim));
    CHECK(rng.stream == 4, "the key advanced by the images drawn: stream %llu", (unsigned long long)rng.stream);
    double d = max_abs(a, b, n * dim);
    CHECK(d <= SAME_TOL, "df_generate vs df_sample by hand: %g", d);
    free(a), free(b);
    df_model_free(m);
    df_schedule_free(&s);
}

TEST(generate_refuses_bad_requests) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_model *cond = tiny_model(4), *uncond = tiny_model(0);
    float x[2 * 64];
    df_generate_params g;
    struct { const char *what, *msg; } cases[] = {
        {"null label", "null class"}, {"label out of range", "out of range"}, {"guidance, no null class", "null class"},
        {"labels, unconditional", "unconditional"}, {"guidance, unconditional", "unconditional"},
        {"too many steps", "timesteps"}, {"strength 0", "strength"}, {"inpaint without mask", "mask"},
        {"no model", "required"}, {"strength that runs no step", "runs no step"}};
    for (int c = 0; c < (int)(sizeof cases / sizeof cases[0]); c++) {
        int lab[2] = {0, 3};
        base_params(&g, cond, &s, 2, 2);
        g.null_class = 3;
        switch (c) {
        case 0: g.labels = lab; break;
        case 1: lab[1] = 4, g.labels = lab; break;
        case 2: g.null_class = -1, g.guidance = 3; break;
        case 3: g.model = uncond, lab[1] = 1, g.labels = lab; break;
        case 4: g.model = uncond, g.guidance = 3; break;
        case 5: g.sampler.steps = s.T + 1; break;
        case 6: g.init_image = x, g.strength = 0; break;
        case 7: g.inpaint_image = x; break;
        case 8: g.model = NULL; break;
        case 9: g.model = uncond, g.init_image = x, g.strength = 0.1; break;   /* 6 steps: int(0.6) = 0 */
        }
        df_status st = df_generate(&g, x);
        CHECK(st != DF_OK && strstr(df_error(), cases[c].msg), "%s: status %d, message \"%s\"", cases[c].what, st,
              df_error());
    }
    df_model_free(cond), df_model_free(uncond);
    df_schedule_free(&s);
}

/* Counting the library's allocations from the end of the first step to the end of the last: batches
 * (a partial one among them), guidance's doubled batch and the samplers' buffers were all sized before. */
typedef struct {
    long allocations;
    int  started;
    long last_done;
} alloc_watch;

static void count_steps(void *ctx, const df_generate_step *s) {
    alloc_watch *w = ctx;
    if (!w->started) {
        w->started = 1;
        test_alloc_begin();
    } else if (s->done == s->total) {
        w->allocations = test_alloc_end();
    }
    w->last_done = s->done;
}

TEST(generate_allocates_nothing_between_steps) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_model *m = tiny_model(4), *clf = NULL;
    df_unet_config cc;
    test_tiny_unet(&cc, 0);
    cc.classifier_classes = 3;
    CHECK_OK(df_model_create(&cc, 3, &clf));
    const size_t dim = 64;
    const int n = 5;
    float *x = malloc(sizeof(float) * n * dim), img[64], mask[64];
    for (int j = 0; j < 64; j++) img[j] = 0.5f, mask[j] = j < 32;
    for (int r = 0; r < 6; r++) {
        df_generate_params g;
        base_params(&g, m, &s, n, 2);   /* batches of 2, 2 and 1 */
        g.null_class = 3;
        const char *what[] = {"ddim, guided", "dpmpp-3m", "ddpm, classifier guidance", "heun, guided, rescale",
                              "img2img", "inpaint with jumps"};
        switch (r) {
        case 0: g.guidance = 3; break;
        case 1: g.sampler.kind = DF_SAMPLER_DPMPP_3M; break;
        case 2: g.sampler.kind = DF_SAMPLER_DDPM, g.classifier = clf, g.classifier_scale = 2; break;
        case 3: g.sampler.kind = DF_SAMPLER_HEUN, g.guidance = 2, g.guidance_rescale = 0.5; break;
        case 4: g.init_image = img, g.strength = 0.7; break;
        case 5: g.inpaint_image = img, g.mask = mask, g.jump_length = 2, g.jump_n = 2; break;
        }
        alloc_watch w = {0};
        g.on_step = count_steps, g.ctx = &w;
        CHECK_OK(df_generate(&g, x));
        CHECK(w.started && w.last_done > 3, "%s: %ld steps reported", what[r], w.last_done);
        CHECK(w.allocations == 0, "%s: %ld allocations by the library between the first and the last step", what[r],
              w.allocations);
        printf("    %s: %ld library allocations over %ld steps; shared libraries' heap grew %ld bytes\n", what[r],
               w.allocations, w.last_done, test_alloc_others());
    }
    free(x);
    df_model_free(m), df_model_free(clf);
    df_schedule_free(&s);
}

/* df_default_labels is df_spread_labels over the classes but the null one, wherever the null class is. */
TEST(generate_default_labels_skip_the_null_class) {
    struct { int count, null, n; } cases[] = {{11, 10, 7}, {11, 10, 20}, {5, 0, 9}, {5, 2, 4}, {4, -1, 6}, {3, -1, 1}};
    for (int c = 0; c < (int)(sizeof cases / sizeof cases[0]); c++) {
        int list[16], k = 0, got[32], want[32];
        for (int j = 0; j < cases[c].count; j++)
            if (j != cases[c].null) list[k++] = j;
        df_spread_labels(list, k, cases[c].n, want);
        int kk = df_default_labels(cases[c].count, cases[c].null, cases[c].n, got);
        CHECK(kk == k && df_default_labels(cases[c].count, cases[c].null, cases[c].n, NULL) == k,
              "%d classes, null %d: %d classes used, want %d", cases[c].count, cases[c].null, kk, k);
        for (int i = 0; i < cases[c].n; i++)
            CHECK(got[i] == want[i], "%d classes, null %d, n %d: image %d gets %d, want %d", cases[c].count,
                  cases[c].null, cases[c].n, i, got[i], want[i]);
    }
}

static void count_batches(void *ctx, const df_generate_step *s) {
    int *seen = ctx;   /* [0]: the last done, [1]: the total, [2]: the first image of the last batch */
    seen[0] = (int)s->done, seen[1] = (int)s->total, seen[2] = s->first;
}

/* Image k alone, or a few images, bit for bit as the whole run made them: in a later batch, in the last
 * (partial) one, across batches, guided (a doubled batch, whose float rounding depends on its size) and with
 * the run's default labels (image k keeps the class the run gave it, not the first class). */
TEST(generate_images_are_the_runs_bit_for_bit) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_model *m = tiny_model(4);
    const size_t dim = 64;
    const int n = 7;
    float *all = malloc(sizeof(float) * n * dim), *part = malloc(sizeof(float) * n * dim);
    for (int guided = 0; guided < 2; guided++) {
        df_generate_params g;
        base_params(&g, m, &s, n, 3);   /* batches 0-2, 3-5 and 6 */
        g.null_class = 3, g.guidance = guided ? 2.5 : 1;
        CHECK_OK(df_generate(&g, all));
        const int ranges[][2] = {{0, 1}, {4, 1}, {6, 1}, {2, 4}, {0, 7}};
        for (int r = 0; r < 5; r++) {
            const int first = ranges[r][0], count = ranges[r][1];
            int seen[3] = {0};
            g.on_step = count_batches, g.ctx = seen;
            memset(part, 0xff, sizeof(float) * n * dim);
            CHECK_OK(df_generate_images(&g, first, count, part));
            CHECK(memcmp(part, all + first * dim, sizeof(float) * count * dim) == 0,
                  "guided %d: images %d..%d differ from the run's (largest difference %g)", guided, first,
                  first + count - 1, max_abs(part, all + first * dim, count * dim));
            const int batches = (first + count - 1) / 3 - first / 3 + 1;
            CHECK(seen[0] == seen[1] && seen[1] == batches * 6, "guided %d, images %d..%d: %d of %d steps reported, "
                  "want %d batches of 6", guided, first, first + count - 1, seen[0], seen[1], batches);
            g.on_step = NULL, g.ctx = NULL;
        }
        /* the default label of image 6 of 7 is class 2; alone as a run of one it would be class 0 */
        int lab = 0;
        base_params(&g, m, &s, 1, 1);
        g.null_class = 3, g.guidance = guided ? 2.5 : 1, g.first_index = 6, g.labels = &lab;
        CHECK_OK(df_generate(&g, part));
        CHECK(max_abs(part, all + 6 * dim, dim) > 1e-3, "guided %d: image 6 with class 0 is the run's image 6", guided);
        /* how a run of one differs: the label, and the float rounding of another batch size (said, not required) */
        lab = 2;
        CHECK_OK(df_generate(&g, part));
        printf("    guided %d: image 6 as a run of one with its label differs from the run's by %g\n", guided,
               max_abs(part, all + 6 * dim, dim));
    }
    df_generate_params g;
    base_params(&g, m, &s, n, 3);
    CHECK(df_generate_images(&g, 5, 3, part) != DF_OK && strstr(df_error(), "not among"), "images 5..7 of 7: %s",
          df_error());
    CHECK(df_generate_images(&g, -1, 1, part) != DF_OK, "image -1 accepted");
    free(all), free(part);
    df_model_free(m);
    df_schedule_free(&s);
}

/* Classes by number or name (any case, '_' for ' '), and a classifier's classes against a model's. */
TEST(generate_class_names_find_and_match) {
    char *names[] = {"T-shirt/top", "Ankle boot", "Bag", "(none)"}, *other[] = {"T-shirt/top", "Boot", "Bag"};
    df_class_info model = {4, 3, names}, clf = {3, -1, names}, renamed = {3, -1, other}, unnamed = {3, -1, NULL};
    const char *ok[][2] = {{"bag", "2"}, {"BAG", "2"}, {"ankle_boot", "1"}, {"ANKLE BOOT", "1"}, {"t-shirt/top", "0"},
                           {"3", "3"}, {"0", "0"}};
    for (int i = 0; i < (int)(sizeof ok / sizeof ok[0]); i++) {
        int k = -1;
        CHECK_OK(df_class_info_find(&model, ok[i][0], &k));
        CHECK(k == atoi(ok[i][1]), "\"%s\" is class %d, want %s", ok[i][0], k, ok[i][1]);
    }
    int k;
    CHECK(df_class_info_find(&model, "bags", &k) == DF_ERR_ARG && strstr(df_error(), "no class \"bags\"") &&
          strstr(df_error(), "Ankle boot"), "an unknown name: %s", df_error());
    CHECK(df_class_info_find(&model, "4", &k) == DF_ERR_ARG && strstr(df_error(), "out of range 0..3"),
          "a number out of range: %s", df_error());
    CHECK(df_class_info_find(&model, "-1", &k) == DF_ERR_ARG && strstr(df_error(), "out of range"), "-1: %s",
          df_error());
    CHECK(df_class_info_find(&unnamed, "bag", &k) == DF_ERR_ARG && strstr(df_error(), "no names"),
          "a name without names: %s", df_error());
    CHECK(df_class_info_find(&unnamed, "2", &k) == DF_OK && k == 2, "a number without names");
    CHECK_OK(df_class_info_match(&model, &clf));       /* the model's classes but its null one */
    CHECK_OK(df_class_info_match(&model, &unnamed));   /* nothing to compare */
    CHECK(df_class_info_match(&model, &renamed) == DF_ERR_CONFIG &&
              strstr(df_error(), "1 \"Ankle boot\" against \"Boot\""),
          "renamed classes: %s", df_error());
    df_class_info two = {2, -1, names};
    CHECK(df_class_info_match(&model, &two) == DF_ERR_CONFIG && strstr(df_error(), "4 classes against 2"),
          "another count: %s", df_error());
    df_class_info none = {0, -1, NULL};
    CHECK_OK(df_class_info_match(&none, &renamed));   /* an unconditional model: the classifier's classes rule */
}
/* Another size than the model's: the convolutional U-Net samples any multiple of 2^(levels - 1), square or not,
 * and its output at its own size afterwards is what it was (each size has its tape); other sizes are refused. */
TEST(generate_at_another_size) {
    df_schedule s;
    CHECK_OK(df_schedule_init_default(&s));
    df_model *m = tiny_model(0);
    enum { S = 8, N = 2 };
    float x[N * S * S], t[N] = {10, 500}, before[N * S * S], after[N * S * S];
    df_rng r;
    df_rng_init(&r, 3);
    df_rng_fill_normal(&r, x, N * S * S);
    CHECK_OK(df_model_forward(m, N, S, S, x, t, NULL, before));
    const int sizes[][2] = {{2 * S, 2 * S}, {2 * S, S}, {4, 6}};   /* h, w */
    for (int k = 0; k < 3; k++) {
        const int h = sizes[k][0], w = sizes[k][1];
        float *big = malloc(sizeof(float) * N * h * w);
        df_generate_params g;
        base_params(&g, m, &s, N, N);
        g.h = h, g.w = w, g.sampler.steps = 3;
        CHECK_OK(df_generate(&g, big));
        double sum = 0, sq = 0;
        int finite = 1;
        for (int i = 0; i < N * h * w; i++) finite &= isfinite(big[i]), sum += big[i], sq += (double)big[i] * big[i];
        const double var = sq / (N * h * w) - (sum / (N * h * w)) * (sum / (N * h * w));
        CHECK(finite && var > 1e-4, "%dx%d: finite %d, variance %.3g", w, h, finite, var);
        free(big);
    }
    CHECK_OK(df_model_forward(m, N, S, S, x, t, NULL, after));
    CHECK(memcmp(before, after, sizeof before) == 0, "the output at 8x8 changed after sampling at other sizes (by %.3g)",
          max_abs(before, after, N * S * S));
    float y[N * 9 * 9];
    df_generate_params g;
    base_params(&g, m, &s, N, N);
    g.h = g.w = 9;
    df_status st = df_generate(&g, y);
    CHECK(st == DF_ERR_ARG && strstr(df_error(), "halves images 1 times: give multiples of 2"), "9x9: %d, %s", st,
          df_error());
    df_model_free(m);
    df_schedule_free(&s);
}
