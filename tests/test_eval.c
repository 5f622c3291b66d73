/* Evaluation as users run it: calibration of FD, KID and precision/recall on Fashion-MNIST with the shipped
 * feature network, the whole df_evaluate path on a tiny model (every metric, a resumed bits/dim run), and bad
 * input to `diffuse eval`. */
#define _XOPEN_SOURCE 700
#include "test.h"

#include <cjson/cJSON.h>
#include "internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void shipped_features(char *out, size_t cap) { snprintf(out, cap, "%s/../models/fmnist-features", test_bin_dir()); }

/* Features of images idx[0..n) of d, possibly corrupted: noise sd > 0 adds N(0, sd^2) and clamps, blur > 0
 * applies a 3x3 box blur that many times. */
static void features_of(df_feature_net *f, const df_dataset *d, const int *idx, int n, double noise, int blur,
                        df_rng *r, float *feats) {
    int c, h, w;
    df_dataset_shape(d, &c, &h, &w);
    const size_t dim = (size_t)c * h * w;
    float *x = malloc(sizeof(float) * (size_t)n * dim), *tmp = malloc(sizeof(float) * dim);
    for (int i = 0; i < n; i++) {
        float *xi = x + (size_t)i * dim;
        df_dataset_get(d, idx[i], 0, xi);
        for (int b = 0; b < blur; b++) {
            memcpy(tmp, xi, sizeof(float) * dim);
            for (int y = 0; y < h; y++)
                for (int xx = 0; xx < w; xx++) {
                    double s = 0;
                    int cnt = 0;
                    for (int dy = -1; dy <= 1; dy++)
                        for (int dx = -1; dx <= 1; dx++) {
                            int yy = y + dy, xq = xx + dx;
                            if (yy >= 0 && yy < h && xq >= 0 && xq < w) s += tmp[yy * w + xq], cnt++;
                        }
                    xi[y * w + xx] = (float)(s / cnt);
                }
        }
        for (size_t j = 0; noise > 0 && j < dim; j++) xi[j] = (float)fmin(1, fmax(-1, xi[j] + noise * df_rng_normal(r)));
    }
    CHECK_OK(df_feature_net_features(f, n, c, h, w, x, feats));
    free(x), free(tmp);
}

static double fd_of(const float *feats, int n, int d, const df_ref_features *ref) {
    double fd = NAN;
    CHECK_OK(df_fd_bootstrap(feats, n, d, &ref->stats, 0, NULL, &fd, NULL));
    return fd;
}

TEST(eval_calibration_fashion_mnist) {
    char fpath[PATH_MAX];
    shipped_features(fpath, sizeof fpath);
    df_feature_net *f = NULL;
    df_dataset *train = NULL, *test = NULL;
    CHECK_OK(df_feature_net_load(fpath, &f));
    CHECK_OK(df_dataset_open("fashion-mnist", 0, 0, &train));
    CHECK_OK(df_dataset_open("fashion-mnist:test", 0, 0, &test));
    if (!f || !train || !test) return;
    const int quick = test_quick(), d = df_feature_net_dim(f);
    df_ref_features ref;
    int cached;
    CHECK_OK(df_ref_features_get(f, test, 0, &ref, &cached, NULL, NULL));
    printf("    reference: %ld test images, %d-d features (%s)\n", ref.n, ref.d, cached == 1 ? "from the cache" : "computed");
    df_rng r;
    df_rng_init(&r, 77);
    int *perm = malloc(sizeof(int) * df_dataset_count(train));
    df_shuffle(perm, df_dataset_count(train), &r);
    float *feats = malloc(sizeof(float) * 5000 * d);

    /* the test split against itself: 0 up to rounding */
    double self = fd_of(ref.feats, (int)ref.n, d, &ref), trace = 0;
    for (int j = 0; j < d; j++) trace += ref.stats.sigma[(size_t)j * d + j];
    printf("    FD(test, test) = %.3g (trace of the covariance %.3g)\n", self, trace);
    CHECK(fabs(self) < 1e-9 * trace, "FD of the test split against itself: %g", self);

    /* real training images against the test split: FD falls as n grows (its bias is about 1/n); disjoint
     * draws, the mean of several at the small sizes */
    const int sizes[4] = {500, 1000, 2000, 5000}, reps[4] = {4, 3, 2, 1};
    double fd_n[4];
    int used = 0;
    for (int s = 0; s < (quick ? 3 : 4); s++) {
        fd_n[s] = 0;
        for (int k = 0; k < reps[s]; k++) {
            features_of(f, train, perm + used, sizes[s], 0, 0, &r, feats);
            used += sizes[s];
            fd_n[s] += fd_of(feats, sizes[s], d, &ref) / reps[s];
        }
        printf("    FD(train n = %d, test) = %.4f\n", sizes[s], fd_n[s]);
        if (s > 0) CHECK(fd_n[s] < fd_n[s - 1], "FD at n = %d (%g) is not below n = %d (%g)", sizes[s], fd_n[s],
                         sizes[s - 1], fd_n[s - 1]);
    }

    /* corruption: more noise, more blur, pure noise: FD rises at every step */
    const int m = quick ? 1000 : 2000;
    const double noise[4] = {0, 0.1, 0.2, 0.4};
    double fd_noise[4], fd_blur[4];
    for (int k = 0; k < 4; k++) {
        features_of(f, train, perm + used, m, noise[k], 0, &r, feats);
        fd_noise[k] = fd_of(feats, m, d, &ref);
        features_of(f, train, perm + used, m, 0, k, &r, feats);
        fd_blur[k] = fd_of(feats, m, d, &ref);
    }
    printf("    FD with noise sd 0, 0.1, 0.2, 0.4: %.3f %.3f %.3f %.3f; blurred 0-3 times: %.3f %.3f %.3f %.3f\n",
           fd_noise[0], fd_noise[1], fd_noise[2], fd_noise[3], fd_blur[0], fd_blur[1], fd_blur[2], fd_blur[3]);
    for (int k = 1; k < 4; k++) {
        CHECK(fd_noise[k] > fd_noise[k - 1], "noise sd %g: FD %g not above %g", noise[k], fd_noise[k], fd_noise[k - 1]);
        CHECK(fd_blur[k] > fd_blur[k - 1], "blur x%d: FD %g not above %g", k, fd_blur[k], fd_blur[k - 1]);
    }
    {   /* images of pure noise */
        int c, h, w;
        df_dataset_shape(train, &c, &h, &w);
        float *x = malloc(sizeof(float) * (size_t)m * c * h * w);
        for (size_t j = 0; j < (size_t)m * c * h * w; j++) x[j] = (float)fmin(1, fmax(-1, df_rng_normal(&r)));
        CHECK_OK(df_feature_net_features(f, m, c, h, w, x, feats));
        double fdn = fd_of(feats, m, d, &ref);
        printf("    FD of pure noise: %.3f\n", fdn);
        CHECK(fdn > fd_noise[3] && fdn > fd_blur[3], "pure noise FD %g not above the corrupted images'", fdn);
        free(x);
    }

    /* standard errors against the spread over independent draws of real images (disjoint sets of n) */
    const int draws = quick ? 8 : 20, n = 1000;
    double fds[20], kids[20], fd_se = 0, kid_se = 0;
    for (int k = 0; k < draws; k++) {
        features_of(f, train, perm + used, n, 0, 0, &r, feats);
        used += n;
        double se, kd, ks;
        CHECK_OK(df_fd_bootstrap(feats, n, d, &ref.stats, 50, &r, &fds[k], &se));
        CHECK_OK(df_kid(feats, n, ref.feats, ref.n, d, 20, 1000, &r, &kids[k], NULL, &ks));
        (void)kd;
        fd_se += se / draws, kid_se += ks / draws;
    }
    double sf = 0, sk = 0, qf = 0, qk = 0;
    for (int k = 0; k < draws; k++) sf += fds[k] / draws, sk += kids[k] / draws;
    for (int k = 0; k < draws; k++) qf += (fds[k] - sf) * (fds[k] - sf), qk += (kids[k] - sk) * (kids[k] - sk);
    double spread_fd = sqrt(qf / (draws - 1)), spread_kid = sqrt(qk / (draws - 1));
    printf("    n = %d, %d draws: FD %.4f, spread %.4f, bootstrap error %.4f; KID %.6f, spread %.6f, jackknife error %.6f\n",
           n, draws, sf, spread_fd, fd_se, sk, spread_kid, kid_se);
    CHECK(fd_se < 1.5 * spread_fd && spread_fd < 1.5 * fd_se, "FD error %g vs spread %g", fd_se, spread_fd);
    CHECK(kid_se < 1.5 * spread_kid && spread_kid < 1.5 * kid_se, "KID error %g vs spread %g", kid_se, spread_kid);

    /* precision and recall: real against real, and a collapsed set (one image repeated) */
    {
        const int k = 3, np = 2000;
        float *sub = malloc(sizeof(float) * np * d), *one = malloc(sizeof(float) * np * d);
        for (int i = 0; i < np; i++) memcpy(sub + (size_t)i * d, ref.feats + (size_t)i * d, sizeof(float) * d);
        features_of(f, train, perm + used, np, 0, 0, &r, feats);
        for (int i = 0; i < np; i++) memcpy(one + (size_t)i * d, feats, sizeof(float) * d);
        double p, rc, pc, rcc;
        CHECK_OK(df_precision_recall(sub, np, feats, np, d, k, &p, &rc));
        CHECK_OK(df_precision_recall(sub, np, one, np, d, k, &pc, &rcc));
        printf("    k = %d, n = %d: real vs real precision %.3f recall %.3f; one image repeated: precision %.3f recall %.4f\n",
               k, np, p, rc, pc, rcc);
        CHECK(rcc < 0.01, "a collapsed set's recall %g", rcc);
        CHECK(rc > 0.3 && p > 0.3 && rc > 30 * rcc, "real vs real: precision %g, recall %g", p, rc);
        free(sub), free(one);
    }
    free(perm), free(feats);
    df_ref_features_free(&ref);
    df_dataset_free(train), df_dataset_free(test);
    df_feature_net_free(f);
}

/* ---- the whole path on a tiny model ------------------------------------------------------------------------------ */

/* n noisy 8x8 toy images: a bright square at one of 4 places (class i % 4) plus pixel noise, as IDX files. */
static void noisy_toy(const char *dir, const char *name, int n, uint64_t seed, char *images, size_t cap) {
    char p[PATH_MAX + 64];   /* as long as `images` */
    unsigned char *b = malloc(16 + (size_t)n * 64), *l = malloc(8 + (size_t)n);
    const unsigned char hi[16] = {0, 0, 8, 3, 0, 0, (unsigned char)(n >> 8), (unsigned char)n, 0, 0, 0, 8, 0, 0, 0, 8};
    const unsigned char hl[8] = {0, 0, 8, 1, 0, 0, (unsigned char)(n >> 8), (unsigned char)n};
    memcpy(b, hi, 16), memcpy(l, hl, 8);
    df_rng r;
    df_rng_init(&r, seed);
    for (int i = 0; i < n; i++) {
        int k = i % 4, oy = (k / 2) * 4, ox = (k % 2) * 4;
        l[8 + i] = (unsigned char)k;
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++) {
                double v = (y >= oy && y < oy + 3 && x >= ox && x < ox + 3 ? 200 : 40) + 25 * df_rng_normal(&r);
                b[16 + (size_t)i * 64 + y * 8 + x] = (unsigned char)fmin(255, fmax(0, v));
            }
    }
    snprintf(images, cap, "%s/%s-images-idx3-ubyte", dir, name);
    snprintf(p, sizeof p, "%s/%s-labels-idx1-ubyte", dir, name);
    FILE *f = fopen(images, "wb");
    CHECK(f && fwrite(b, 1, 16 + (size_t)n * 64, f) == 16 + (size_t)n * 64 && !fclose(f), "writing %s", images);
    f = fopen(p, "wb");
    CHECK(f && fwrite(l, 1, 8 + (size_t)n, f) == 8 + (size_t)n && !fclose(f), "writing %s", p);
    free(b), free(l);
}

typedef struct {
    int stop_after;   /* set *stop when bits/dim has reported this many images */
    volatile int *stop;
} stopper;

static void stop_bpd(void *ctx, const char *stage, double done, double total) {
    stopper *s = ctx;
    (void)total;
    if (strcmp(stage, "bits/dim") == 0 && done >= s->stop_after) *s->stop = 1;
}

/* The tiny world: toy data, a tiny conditional diffusion model, a tiny classifier as feature network. */
typedef struct {
    char dir[PATH_MAX], train[PATH_MAX + 64], test[PATH_MAX + 64], model[PATH_MAX + 16], clf[PATH_MAX + 16];
} tiny_world;

static int tiny_setup(tiny_world *tw) {
    snprintf(tw->dir, sizeof tw->dir, "%s/eval", test_tmp_dir());
    mkdir(tw->dir, 0755);
    noisy_toy(tw->dir, "train", 400, 1, tw->train, sizeof tw->train);
    noisy_toy(tw->dir, "test", 200, 2, tw->test, sizeof tw->test);
    df_unet_config cfg;
    test_tiny_unet(&cfg, 0);
    cfg.num_class_embeds = 5;   /* 4 classes and the null one */
    df_model *m;
    df_status st = df_model_create(&cfg, 3, &m);
    CHECK_OK(st);
    if (st) return 0;
    df_scheduler_config sc;
    df_scheduler_config_default(&sc);
    sc.num_train_timesteps = 50;
    snprintf(tw->model, sizeof tw->model, "%s/model", tw->dir);
    CHECK_OK(df_pipeline_save(tw->model, m, &sc));
    df_class_info ci = {5, 4, NULL};
    CHECK_OK(df_class_info_save(tw->model, &ci));
    df_model_free(m);
    /* a classifier of the tiny config's encoder: 16-d features */
    df_classifier_train_params tp;
    df_classifier_train_params_default(&tp);
    test_tiny_unet(&cfg, 0);
    tp.config = &cfg, tp.data = tw->train, tp.noise_aware = 0, tp.max_steps = 60, tp.batch_size = 32, tp.lr = 3e-3;
    snprintf(tw->clf, sizeof tw->clf, "%s/clf", tw->dir);
    tp.out_dir = tw->clf;
    st = df_classifier_train(&tp);
    CHECK_OK(st);
    return !st;
}

TEST(eval_every_metric_on_a_tiny_model) {
    tiny_world tw;
    if (!tiny_setup(&tw)) return;
    df_eval_params p;
    df_eval_params_default(&p);
    p.model = tw.model, p.ref = tw.test, p.features = tw.clf, p.n = 48, p.batch = 16;
    p.sampler.steps = 4, p.guidance = 2;
    p.metrics = (1u << DF_METRIC_COUNT) - 1;
    p.bootstrap = 10, p.kid_subsets = 5, p.kid_subset_size = 20;
    p.cas_per_class = 20, p.cas_epochs = 100, p.cas_train = tw.train;
    p.bpd_n = 30, p.bpd_timesteps = 5;
    char npy[PATH_MAX + 16], state[PATH_MAX + 16];
    snprintf(npy, sizeof npy, "%s/scored.npy", tw.dir);
    p.save_images = npy;
    df_eval_result r;
    CHECK_OK(df_evaluate(&p, &r));
    const df_eval_value *v[] = {&r.fd, &r.kid, &r.precision, &r.recall, &r.acc, &r.cas, &r.cas_real, &r.bpd,
                                &r.confident};
    const char *names[] = {"fd", "kid", "precision", "recall", "acc", "cas", "cas_real", "bpd", "confident"};
    for (int i = 0; i < 9; i++) CHECK(v[i]->have && isfinite(v[i]->value), "%s: not computed (%g)", names[i], v[i]->value);
    CHECK(r.fd.value > 0 && isfinite(r.fd.se) && r.fd.se > 0, "FD %g +- %g", r.fd.value, r.fd.se);
    CHECK(r.precision.value >= 0 && r.precision.value <= 1 && r.recall.value >= 0 && r.recall.value <= 1, "P/R range");
    CHECK(r.bpd.value > 0 && r.bpd.value < 30 && r.bpd.n == 30, "bits/dim %g over %ld images", r.bpd.value, r.bpd.n);
    CHECK(r.cas_real.value > 0.9, "a classifier trained on the real toy images should be near perfect: %g", r.cas_real.value);
    CHECK(r.n == 48 && r.n_ref == 200, "n %d, n_ref %ld", r.n, r.n_ref);
    /* acc: the same images scored directly by the classifier */
    float *x;
    int n, c, h, w;
    CHECK_OK(df_npy_load_images(npy, &x, &n, &c, &h, &w));
    df_model *clf;
    CHECK_OK(df_model_load(tw.clf, &clf));
    int labels[48], hits = 0;
    for (int i = 0; i < 48; i++) labels[i] = i * 4 / 48;
    CHECK_OK(df_classifier_predict(clf, n, h, w, x, NULL, labels, &hits));
    CHECK_NEAR(r.acc.value, hits / 48.0, 1e-12, "acc against the classifier's own count on the saved images");
    /* FD from the saved images (uint8, as a user would pass them) is near the one on the float samples */
    df_eval_params q = p;
    q.model = NULL, q.images = npy, q.metrics = 1u << DF_METRIC_FD, q.save_images = NULL;
    df_eval_result rq;
    CHECK_OK(df_evaluate(&q, &rq));
    CHECK_NEAR(rq.fd.value, r.fd.value, 0.05 * r.fd.value + 1e-3, "FD of the saved .npy against FD of the samples");
    free(x);
    df_model_free(clf);

    /* bits/dim stopped after the first chunk, then resumed from its state file, equals one uninterrupted run */
    df_eval_params b = p;
    b.metrics = 1u << DF_METRIC_BPD, b.save_images = NULL, b.bpd_n = 120;
    df_eval_result full, part, resumed;
    CHECK_OK(df_evaluate(&b, &full));
    snprintf(state, sizeof state, "%s/bpd.json", tw.dir);
    volatile int stop = 0;
    stopper s = {50, &stop};
    b.bpd_state = state, b.stop = &stop, b.progress = stop_bpd, b.progress_ctx = &s;
    CHECK(df_evaluate(&b, &part) != DF_OK && strstr(df_error(), "stopped after 50 of 120"), "stop: %s", df_error());
    stop = 0;
    b.progress = NULL;
    CHECK_OK(df_evaluate(&b, &resumed));
    CHECK(resumed.bpd_resumed == 50, "%d images taken from the state file", resumed.bpd_resumed);
    CHECK(resumed.bpd.value == full.bpd.value && resumed.bpd.se == full.bpd.se, "resumed %.9g +- %.9g, whole %.9g +- %.9g",
          resumed.bpd.value, resumed.bpd.se, full.bpd.value, full.bpd.se);
    /* a state file of other settings is refused */
    b.bpd_timesteps = 7;
    CHECK(df_evaluate(&b, &part) == DF_ERR_ARG && strstr(df_error(), "timesteps"), "other settings: %s", df_error());

    /* the command passes the sampler's options through and reports them */
    char args[4 * PATH_MAX + 256], out[8192], err[2048];
    snprintf(args, sizeof args, "eval %s --ref %s --features %s --n 20 --batch 10 --metrics pr --sampler euler --steps 2 "
             "--spacing trailing --karras --json", tw.model, tw.test, tw.clf);
    int rc = test_run_diffuse(NULL, 120, args, out, sizeof out, err, sizeof err);
    cJSON *j = rc == 0 ? cJSON_Parse(out) : NULL, *smp = cJSON_GetObjectItem(j, "sampler");
    CHECK(j && smp, "eval --json: %d, %s", rc, err);
    const cJSON *sp = cJSON_GetObjectItem(smp, "spacing"), *nm = cJSON_GetObjectItem(smp, "name");
    CHECK(cJSON_IsString(sp) && !strcmp(sp->valuestring, "trailing"), "--spacing trailing not reported");
    CHECK(cJSON_IsString(nm) && !strcmp(nm->valuestring, "euler"), "--sampler euler not reported");
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(smp, "karras")), "--karras not reported");
    cJSON_Delete(j);
}

/* ---- bad input to the command ----------------------------------------------------------------------------------- */

static int run_cli(const char *args, char *err, size_t cap) {
    char cmd[16384], ef[PATH_MAX];
    snprintf(ef, sizeof ef, "%s/eval-stderr.txt", test_tmp_dir());
    snprintf(cmd, sizeof cmd, "timeout 120 %s/diffuse %s >/dev/null 2>%s", test_bin_dir(), args, ef);
    int st = system(cmd);
    err[0] = 0;
    FILE *f = fopen(ef, "r");
    if (f) {
        size_t n = fread(err, 1, cap - 1, f);
        err[n] = 0;
        fclose(f);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* classes: on real test images and on noise, the share the feature network is sure of and the class mix equal
 * a softmax computed here in double from the network's logits; real images are nearly all sure and evenly
 * mixed, noise is not. */
TEST(eval_classes_confidence_and_mix) {
    char fpath[PATH_MAX];
    shipped_features(fpath, sizeof fpath);
    df_dataset *test = NULL;
    df_model *clf = NULL;
    CHECK_OK(df_dataset_open("fashion-mnist:test", 0, 0, &test));
    CHECK_OK(df_model_load(fpath, &clf));
    if (!test || !clf) return;
    enum { N = 600 };
    const int k = df_model_config(clf)->classifier_classes, dim = 28 * 28;
    float *x = malloc(sizeof(float) * N * dim), *z = malloc(sizeof(float) * N * k), t[N] = {0};
    df_rng r;
    df_rng_init(&r, 5);
    for (int kind = 0; kind < 2; kind++) {   /* 0: the first N test images; 1: clamped Gaussian noise */
        for (int i = 0; i < N; i++) df_dataset_get(test, i, 0, x + (size_t)i * dim);
        for (size_t j = 0; kind && j < (size_t)N * dim; j++) x[j] = (float)fmin(1, fmax(-1, df_rng_normal(&r)));
        df_eval_params p;
        df_eval_params_default(&p);
        p.image_data = x, p.image_count = N, p.image_c = 1, p.image_h = p.image_w = 28;
        p.features = fpath, p.metrics = 1u << DF_METRIC_CLASSES;
        df_eval_result res;
        CHECK_OK(df_evaluate(&p, &res));
        /* the reference: logits in batches of 100, softmax in double */
        for (int i0 = 0; i0 < N; i0 += 100)
            CHECK_OK(df_model_forward(clf, 100, 28, 28, x + (size_t)i0 * dim, t, NULL, z + (size_t)i0 * k));
        int sure = 0, count[16] = {0};
        for (int i = 0; i < N; i++) {
            const float *zi = z + (size_t)i * k;
            int best = 0;
            double sum = 0;
            for (int j = 1; j < k; j++) best = zi[j] > zi[best] ? j : best;
            for (int j = 0; j < k; j++) sum += exp((double)zi[j] - zi[best]);
            sure += 1 / sum >= 0.5, count[best]++;
        }
        CHECK(res.confident.have && res.confident.n == N && res.nclasses == k, "classes not computed (%d classes)",
              res.nclasses);
        CHECK(fabs(res.confident.value - (double)sure / N) < 1e-12, "%s: confident %g, the reference %g",
              kind ? "noise" : "real", res.confident.value, (double)sure / N);
        double top = 0, total = 0;
        for (int j = 0; j < k; j++) {
            CHECK(fabs(res.class_share[j] - (double)count[j] / N) < 1e-12, "class %d: share %g, the reference %g", j,
                  res.class_share[j], (double)count[j] / N);
            top = fmax(top, res.class_share[j]), total += res.class_share[j];
        }
        CHECK(fabs(total - 1) < 1e-9, "the shares sum to %g", total);
        printf("    %s: confident %.3f, largest class share %.3f\n", kind ? "noise" : "real test images",
               res.confident.value, top);
        if (!kind) CHECK(res.confident.value > 0.95 && top < 0.2, "real images: confident %g, top share %g",
                         res.confident.value, top);
        else CHECK(res.confident.value < 0.8 && top > 0.25, "noise looks like real garments: confident %g, top share %g",
                   res.confident.value, top);
    }
    /* df_classifier_probs: rows of probabilities whose arg max is df_classifier_predict's */
    float *pr = malloc(sizeof(float) * 100 * k);
    int pred[100];
    CHECK_OK(df_classifier_probs(clf, 100, 28, 28, x, NULL, pr));
    CHECK_OK(df_classifier_predict(clf, 100, 28, 28, x, NULL, pred, NULL));
    for (int i = 0; i < 100; i++) {
        double sum = 0;
        int best = 0;
        for (int j = 0; j < k; j++) sum += pr[i * k + j], best = pr[i * k + j] > pr[i * k + best] ? j : best;
        CHECK(fabs(sum - 1) < 1e-5 && best == pred[i], "image %d: probabilities sum to %g, arg max %d, predicted %d", i,
              sum, best, pred[i]);
    }
    free(pr), free(x), free(z);
    df_model_free(clf);
    df_dataset_free(test);
}

TEST(eval_bad_input_one_clear_line) {
    tiny_world tw;
    if (!tiny_setup(&tw)) return;
    char d[PATH_MAX + 64], other[PATH_MAX + 64], refile[PATH_MAX + 64];
    /* fixtures: an empty folder, a folder of 16x16 images, a .npy of int64, reference features of another network */
    snprintf(d, sizeof d, "%s/empty", tw.dir);
    mkdir(d, 0755);
    snprintf(d, sizeof d, "%s/wrongsize", tw.dir);
    mkdir(d, 0755);
    float px[256] = {0};
    for (int i = 0; i < 3; i++) {
        char p[PATH_MAX + 80];
        snprintf(p, sizeof p, "%s/%d.png", d, i);
        px[i] = 1;
        CHECK_OK(df_image_save_png(p, px, 1, 16, 16));
    }
    snprintf(d, sizeof d, "%s/int64.npy", tw.dir);
    {
        const char hdr[] = "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 8, 8), }";
        unsigned char buf[128 + 2 * 64 * 8] = {0};
        memcpy(buf, "\x93NUMPY\x01\x00", 8);
        buf[8] = 118, buf[9] = 0;
        memset(buf + 10, ' ', 118);
        memcpy(buf + 10, hdr, strlen(hdr));
        buf[127] = '\n';
        FILE *f = fopen(d, "wb");
        CHECK(f && fwrite(buf, 1, sizeof buf, f) == sizeof buf && !fclose(f), "writing %s", d);
    }
    {   /* a second classifier (other seed): reference features saved with it do not fit the first */
        df_classifier_train_params tp;
        df_classifier_train_params_default(&tp);
        df_unet_config cfg;
        test_tiny_unet(&cfg, 0);
        tp.config = &cfg, tp.data = tw.train, tp.noise_aware = 0, tp.max_steps = 2, tp.seed = 9;
        snprintf(other, sizeof other, "%s/clf2", tw.dir);
        tp.out_dir = other;
        CHECK_OK(df_classifier_train(&tp));
        df_feature_net *f;
        df_dataset *ds;
        df_ref_features rf;
        CHECK_OK(df_feature_net_load(other, &f));
        CHECK_OK(df_dataset_open(tw.test, 0, 0, &ds));
        CHECK_OK(df_ref_features_compute(f, ds, 0, &rf, NULL, NULL));
        snprintf(refile, sizeof refile, "%s/other-ref.safetensors", tw.dir);
        CHECK_OK(df_ref_features_save(&rf, refile));
        /* the cache next to a network: computed and written once, then read; a cache file that holds another
         * network's features (as after retraining) is not trusted but computed again */
        df_feature_net *g;
        df_ref_features a1, a2, a3;
        int c1 = -1, c2 = -1, c3 = -1;
        CHECK_OK(df_feature_net_load(tw.clf, &g));
        CHECK_OK(df_ref_features_get(g, ds, 0, &a1, &c1, NULL, NULL));
        CHECK_OK(df_ref_features_get(g, ds, 0, &a2, &c2, NULL, NULL));
        char cache[PATH_MAX + 200];
        snprintf(cache, sizeof cache, "%s/reference-%.16s.safetensors", tw.clf, a1.data_sha256);
        CHECK_OK(df_ref_features_save(&rf, cache));   /* clf2's features under clf's cache name */
        CHECK_OK(df_ref_features_get(g, ds, 0, &a3, &c3, NULL, NULL));
        CHECK(c2 == 1 && c3 == 2, "cache use: first %d, second %d (want 1), stale %d (want 2: recomputed)", c1, c2, c3);
        CHECK(a3.n == a1.n && a3.d == a1.d && memcmp(a3.feats, a1.feats, sizeof(float) * a1.n * a1.d) == 0,
              "the recomputed features are the network's own");
        df_ref_features_free(&a1), df_ref_features_free(&a2), df_ref_features_free(&a3), df_feature_net_free(g);
        df_ref_features_free(&rf), df_dataset_free(ds), df_feature_net_free(f);
    }
    struct {
        const char *fmt;   /* %1$s the world's directory */
        int code;
        const char *named;
    } cases[] = {
        {"eval %1$s/empty --features %1$s/clf --ref %1$s/test-images-idx3-ubyte", 1, "empty"},
        {"eval %1$s/wrongsize --features %1$s/clf --ref %1$s/test-images-idx3-ubyte", 1, "16x16"},
        {"eval %1$s/int64.npy --features %1$s/clf --ref %1$s/test-images-idx3-ubyte", 1, "int64"},
        {"eval %1$s/model --features %1$s/clf --ref %1$s/other-ref.safetensors --n 40", 1, "another network"},
        {"eval %1$s/model --features %1$s/model --ref %1$s/test-images-idx3-ubyte", 1, "no feature layer"},
        {"eval %1$s/model --features %1$s/clf --ref %1$s/test-images-idx3-ubyte --n 10", 1, "singular"},
        {"eval %1$s/model --metrics fd,nosuch", 2, "nosuch"},
        {"eval %1$s/model --plot %1$s/p.png", 2, "--sweep"},
        {"eval %1$s/model --state %1$s/s.json", 2, "--metrics bpd"},
        {"eval %1$s/missing", 1, "missing"},
        {"eval %1$s/wrongsize --steps 5", 2, "not a model"},
        {"eval %1$s/model --guidance-interval 0.5,20", 2, "--guidance W"},
        {"eval %1$s/model --guidance 2 --guidance-interval 3,2", 2, "LO < HI"},
        {"eval %1$s/wrongsize --guidance-interval 0.5,20", 2, "not a model"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char args[4096], err[8192];
        snprintf(args, sizeof args, cases[i].fmt, tw.dir);
        int rc = run_cli(args, err, sizeof err);
        int lines = 0;
        for (const char *q = err; *q; q++) lines += *q == '\n';
        CHECK(rc == cases[i].code, "\"%s\": exit %d, expected %d: %s", args, rc, cases[i].code, err);
        CHECK(strncmp(err, "diffuse eval: ", 14) == 0 && strstr(err, cases[i].named), "\"%s\": first line should name \"%s\": %s",
              args, cases[i].named, err);
        CHECK(lines == (cases[i].code == 2 ? 2 : 1), "\"%s\": %d lines: %s", args, lines, err);
        CHECK(!strstr(err, "nan") && !strstr(err, "Sanitizer"), "\"%s\": %s", args, err);
    }
}

/* ---- evaluation during training ------------------------------------------------------------------------------ */

static int read_lines(const char *path, char lines[][512], int cap) {
    FILE *f = fopen(path, "r");
    int n = 0;
    while (f && n < cap && fgets(lines[n], 512, f)) n++;
    if (f) fclose(f);
    return n;
}

TEST(eval_during_training_leaves_training_alone) {
    tiny_world tw;
    if (!tiny_setup(&tw)) return;
    char cfg_path[PATH_MAX + 32], a[PATH_MAX + 32], b[PATH_MAX + 32], path[PATH_MAX + 64];
    df_unet_config cfg;
    test_tiny_unet(&cfg, 0);
    snprintf(cfg_path, sizeof cfg_path, "%s/tiny.json", tw.dir);
    CHECK_OK(df_unet_config_save(&cfg, cfg_path));
    snprintf(a, sizeof a, "%s/run-plain", tw.dir);
    snprintf(b, sizeof b, "%s/run-eval", tw.dir);
    for (int k = 0; k < 2; k++) {
        df_train_params p;
        df_train_params_default(&p);
        p.data = tw.train, p.preset = NULL, p.config_path = cfg_path, p.out_dir = k ? b : a;
        p.batch_size = 8, p.max_steps = 12, p.save_every = 0, p.sample_every = 0, p.sample_count = 0, p.log_every = 3;
        if (k) p.eval_every = 5, p.eval_n = 40, p.eval_steps = 3, p.eval_features = tw.clf, p.eval_ref = tw.test;
        CHECK_OK(df_train(&p));
    }
    /* the evaluation draws from its own stream: the weights are those of the run without it */
    char wa[PATH_MAX + 96], wb[PATH_MAX + 96], *x, *y;
    size_t nx = 0, ny = 1;
    snprintf(wa, sizeof wa, "%s/checkpoint-0000012/unet/diffusion_pytorch_model.safetensors", a);
    snprintf(wb, sizeof wb, "%s/checkpoint-0000012/unet/diffusion_pytorch_model.safetensors", b);
    if (!df_read_file(wa, &x, &nx) && !df_read_file(wb, &y, &ny)) {
        CHECK(nx == ny && memcmp(x, y, nx) == 0, "evaluating during training changed the weights");
        free(x), free(y);
    } else {
        CHECK(0, "checkpoints missing: %s", df_error());
    }
    /* loss.csv: FD and KID at steps 5, 10 and the last (12), empty elsewhere; progress.png drawn */
    snprintf(path, sizeof path, "%s/loss.csv", b);
    static char lines[64][512];
    int n = read_lines(path, lines, 64), evals = 0;
    CHECK(n >= 2 && strstr(lines[0], ",images,fd,kid,eval_sec"), "header: %s", n ? lines[0] : "(none)");
    for (int i = 1; i < n; i++) {
        long step, images;
        int commas = 0;
        for (const char *q = lines[i]; *q; q++) commas += *q == ',';
        CHECK(commas == 15, "row %d has %d fields: %s", i, commas + 1, lines[i]);
        const char *f = lines[i];
        for (int c = 0; c < 12; c++) f = strchr(f, ',') + 1;
        CHECK(sscanf(lines[i], "%ld,", &step) == 1 && sscanf(f, "%ld,", &images) == 1 && images == step * 8,
              "images seen in row %d: %s", i, lines[i]);
        const char *fd = strchr(f, ',') + 1;
        if (*fd != ',') {
            evals++;
            CHECK(step == 5 || step == 10 || step == 12, "an evaluation at step %ld", step);
            CHECK(atof(fd) > 0, "FD at step %ld: %s", step, lines[i]);
        }
    }
    CHECK(evals == 3, "%d evaluation rows, expected steps 5, 10 and 12", evals);
    struct stat sb;
    snprintf(path, sizeof path, "%s/progress.png", b);
    CHECK(stat(path, &sb) == 0 && sb.st_size > 1000, "progress.png written");
    /* a log from before the evaluation columns is brought up to date when the run resumes */
    snprintf(path, sizeof path, "%s/loss.csv", a);
    n = read_lines(path, lines, 64);
    FILE *f = fopen(path, "w");
    for (int i = 0; f && i < n; i++) {   /* the first 12 fields only */
        char *q = lines[i];
        for (int c = 0; c < 12 && q; c++) q = strchr(q, ',') ? strchr(q, ',') + (c < 11) : NULL;
        if (q) strcpy(q, "\n");
        fputs(lines[i], f);
    }
    if (f) fclose(f);
    df_train_params q;
    df_train_params_default(&q);
    q.out_dir = a, q.resume = 1, q.max_steps = 15, q.sample_count = 0, q.sample_every = 0;
    CHECK_OK(df_train(&q));
    n = read_lines(path, lines, 64);
    CHECK(n >= 2 && strstr(lines[0], ",images,fd,kid,eval_sec"), "upgraded header: %s", n ? lines[0] : "(none)");
    for (int i = 1; i < n; i++) {
        int commas = 0;
        for (const char *c = lines[i]; *c; c++) commas += *c == ',';
        CHECK(commas == 15, "upgraded row %d: %s", i, lines[i]);
    }
}
