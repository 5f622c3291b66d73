/* A training step allocates nothing in the library: after the loop's setup and the model's reservation,
 * fetching the batch, the forward and backward passes, the optimizer and the EMA run in memory planned
 * before the first step (diffusion training with every per-step option on, and classifier training). */
#include "test.h"
#include "loop.h"

#include <string.h>

long test_step_allocations, test_steps_watched;

void test_watch_step(int after) {
    if (!after) {
        test_alloc_begin();
        return;
    }
    test_step_allocations += test_alloc_end();
    test_steps_watched++;
}

TEST(train_steps_allocate_nothing) {
    const char *dir = test_tmp_dir();
    char data[700], cfg[700], out[800];
    test_toy_idx(dir, "alloc", 40, 4, data, sizeof data);
    df_unet_config c;
    test_tiny_unet(&c, 1);
    c.dropout = 0.1f;
    snprintf(cfg, sizeof cfg, "%s/alloc-tiny.json", dir);
    CHECK_OK(df_unet_config_save(&c, cfg));
    df_train_params p;
    df_train_params_default(&p);
    snprintf(out, sizeof out, "%s/alloc-run", dir);
    p.data = data, p.preset = NULL, p.config_path = cfg, p.out_dir = out;
    p.batch_size = 8, p.grad_accum = 2, p.flip = 1, p.max_steps = 8, p.save_every = 4, p.log_every = 1;
    p.class_conditional = 1, p.class_dropout = 0.2, p.min_snr_gamma = 5, p.use_ema = 1;
    p.sample_count = 0;
    test_step_allocations = test_steps_watched = 0;
    df_train_step_watch = test_watch_step;
    CHECK_OK(df_train(&p));
    CHECK(test_steps_watched == 8, "%ld steps watched", test_steps_watched);
    CHECK(test_step_allocations == 0, "diffusion training: %ld library allocations in %ld steps", test_step_allocations,
          test_steps_watched);
    printf("    diffusion: %ld library allocations in %ld steps (batch 8 x 2, EMA, dropout, flips, classes)\n",
           test_step_allocations, test_steps_watched);

    df_classifier_train_params q;
    df_classifier_train_params_default(&q);
    snprintf(out, sizeof out, "%s/alloc-clf", dir);
    q.data = data, q.preset = NULL, q.config_path = cfg, q.out_dir = out;
    q.noise_aware = 1, q.batch_size = 8, q.max_steps = 6, q.log_every = 1;
    test_step_allocations = test_steps_watched = 0;
    CHECK_OK(df_classifier_train(&q));
    CHECK(test_steps_watched == 6, "%ld classifier steps watched", test_steps_watched);
    CHECK(test_step_allocations == 0, "classifier training: %ld library allocations in %ld steps", test_step_allocations,
          test_steps_watched);
    df_train_step_watch = NULL;
}
