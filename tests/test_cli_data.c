/* `diffuse train` and `train-classifier` on a folder of images: the counts after the start line, converted
 * and unreadable images said once, --strict, numbered class folders in numeric order. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

/* Run `diffuse ARGS` with stderr into *text (malloc'd, the caller frees); returns the exit code. */
static int run_diffuse(const char *args, char **text) {
    const size_t cap = 1 << 18;
    *text = calloc(1, cap);
    return test_run_diffuse(NULL, 0, args, NULL, 0, *text, *text ? cap : 0);
}

static int count_of(const char *text, const char *what) {
    int n = 0;
    for (const char *p = text; (p = strstr(p, what)); p += strlen(what)) n++;
    return n;
}

/* Folders 0 .. 11 of two 8x8 gray images each; folder 5 also holds a 12x10 RGB image and folder 3 a file
 * that is not an image. */
static void numbered_folder(const char *dir) {
    char p[900];
    float img[3 * 10 * 12];
    mkdir(dir, 0755);
    for (int k = 0; k < 12; k++) {
        snprintf(p, sizeof p, "%s/%d", dir, k);
        mkdir(p, 0755);
        for (int i = 0; i < 2; i++) {
            for (int j = 0; j < 64; j++) img[j] = (float)((j * 5 + k * 3 + i) % 17) / 8 - 1;
            snprintf(p, sizeof p, "%s/%d/%d.png", dir, k, i);
            CHECK_OK(df_image_save_png(p, img, 1, 8, 8));
        }
    }
    for (int j = 0; j < 3 * 10 * 12; j++) img[j] = (float)(j % 11) / 5 - 1;
    snprintf(p, sizeof p, "%s/5/big.png", dir);
    CHECK_OK(df_image_save_png(p, img, 3, 10, 12));
    snprintf(p, sizeof p, "%s/3/notes.png", dir);
    FILE *f = fopen(p, "w");
    if (f) fputs("not an image\n", f), fclose(f);
}

TEST(cli_train_folder_reports_its_data) {
    const char *t = test_tmp_dir();
    char data[700], cfg[700], args[3000], p[900];
    snprintf(data, sizeof data, "%s/numbered-data", t);
    numbered_folder(data);
    df_unet_config c;
    test_tiny_unet(&c, 0);
    snprintf(cfg, sizeof cfg, "%s/data-tiny.json", t);
    CHECK_OK(df_unet_config_save(&c, cfg));
    const char *common = "--steps 1 --batch 4 --samples 0";

    /* skipped and converted images said once each, after the start line with the counts */
    char *text;
    snprintf(args, sizeof args, "train --config %s --data %s %s --classes --out %s/data-run", cfg, data, common, t);
    int rc = run_diffuse(args, &text);
    printf("%s", text);
    CHECK(rc == 0, "train on the folder exits %d", rc);
    const char *start = strstr(text, "diffuse train: starting"), *nl = start ? strchr(start, '\n') : NULL;
    CHECK(nl && !strncmp(nl + 1, "data: 25 images, 12 classes (", 29) && count_of(text, "data: ") == 1,
          "the counts on the line after the start line: %s", text);
    CHECK(count_of(text, "converted 1 of 25 images to 8x8 gray, e.g. 5/big.png (12x10 RGB)") == 1,
          "the converted image said once: %s", text);
    CHECK(count_of(text, "skipped 1 unreadable image: 3/notes.png (not a PNG or JPEG file)") == 1,
          "the unreadable image said once: %s", text);
    free(text);
    /* classes.json in numeric order: "10" is class 10 */
    snprintf(p, sizeof p, "%s/data-run/latest/classes.json", t);
    char *classes = NULL;
    size_t n;
    CHECK_OK(df_read_file(p, &classes, &n));
    if (classes) {
        const char *names = strstr(classes, "\"names\"");
        CHECK(names && strstr(names, "\"0\", \"1\", \"2\", \"3\", \"4\", \"5\", \"6\", \"7\", \"8\", \"9\", \"10\", \"11\""),
              "classes in numeric order: %s", classes);
        free(classes);
    }

    /* --strict refuses, naming the file, before writing anything */
    snprintf(args, sizeof args, "train --config %s --data %s %s --strict --out %s/data-strict", cfg, data, common, t);
    rc = run_diffuse(args, &text);
    CHECK(rc == 1 && strstr(text, "3/notes.png: not a PNG or JPEG file"), "--strict: exit %d, %s", rc, text);
    free(text);
    struct stat sb;
    snprintf(p, sizeof p, "%s/data-strict", t);
    CHECK(stat(p, &sb) != 0, "a refused run leaves no directory");
    snprintf(args, sizeof args, "train-classifier --config %s --data %s --steps 1 --batch 4 --strict --out %s/data-clf",
             cfg, data, t);
    rc = run_diffuse(args, &text);
    CHECK(rc == 1 && strstr(text, "3/notes.png: not a PNG or JPEG file"), "train-classifier --strict: exit %d, %s", rc,
          text);
    free(text);
    snprintf(args, sizeof args, "train-classifier --config %s --data %s --steps 1 --batch 4 --out %s/data-clf", cfg,
             data, t);
    rc = run_diffuse(args, &text);
    CHECK(rc == 0 && count_of(text, "data: 25 images, 12 classes (") == 1 &&
              count_of(text, "skipped 1 unreadable image: 3/notes.png") == 1,
          "train-classifier says what it found: exit %d, %s", rc, text);
    free(text);

    /* a folder with no readable image is an error */
    char bad[800];
    snprintf(bad, sizeof bad, "%s/unreadable-data", t);
    mkdir(bad, 0755);
    snprintf(p, sizeof p, "%s/x.png", bad);
    FILE *f = fopen(p, "w");
    if (f) fputs("GIF89a", f), fclose(f);
    snprintf(args, sizeof args, "train --config %s --data %s %s --out %s/data-none", cfg, bad, common, t);
    rc = run_diffuse(args, &text);
    CHECK(rc == 1 && strstr(text, "none of its 1 image could be read") && strstr(text, "x.png"),
          "no readable image: exit %d, %s", rc, text);
    free(text);
}
