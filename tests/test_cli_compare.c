/* `diffuse compare`: the table and the JSON carry each run's evaluation rows from loss.csv, --out draws the
 * plot, and wrong arguments or unreadable runs are refused with the right exit code and nothing written. */
#define _POSIX_C_SOURCE 200809L
#include "test.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* DIR/old and DIR/new with evaluation rows (and a training row and an event row each), DIR/none with none. */
static void runs_fixture(char *dir, size_t cap) {
    snprintf(dir, cap, "%s/compare-cli", test_tmp_dir());
    mkdir(dir, 0755);
    const char *names[3] = {"old", "new", "none"};
    const char *logs[3] = {
        "step,epoch,loss,loss_avg,loss_q0,loss_q1,loss_q2,loss_q3,lr,grad_norm,images_per_sec,elapsed_sec,images,fd,"
        "kid,eval_sec\n"
        "10,0,0.5,0.5,0.1,0.2,0.3,0.4,1e-4,1,100,30.0,640,,,\n"
        "100,0,0.3,0.3,0.1,0.2,0.3,0.4,1e-4,1,100,300.0,6400,150.5,0.125,20.0\n"
        "150,0,,,,,,,,,,,,,,\n"
        "200,1,,,,,,,,,,600.0,12800,80.25,0.0625,20.0\n",
        "step,elapsed_sec,images,fd,kid\n"
        "50,120.0,3200,300,0.25\n"
        "60,150.0,3840,,\n"
        "150,450.0,9600,61.5,\n",
        "step,elapsed_sec,images,fd,kid\n10,6.0,640,,\n",
    };
    for (int k = 0; k < 3; k++) {
        char path[700];
        snprintf(path, sizeof path, "%s/%s", dir, names[k]);
        mkdir(path, 0755);
        snprintf(path, sizeof path, "%s/%s/loss.csv", dir, names[k]);
        write_text(path, logs[k]);
    }
}

TEST(cli_compare_table_and_json) {
    char dir[600], err[1024], png[700];
    runs_fixture(dir, sizeof dir);
    const size_t cap = 1 << 16;
    char *out = malloc(cap);
    if (!out) return;
    int rc = test_run_diffuse(dir, 60, "compare old new/loss.csv --out cmp.png", out, cap, err, sizeof err);
    snprintf(png, sizeof png, "%s/cmp.png", dir);
    CHECK(rc == 0 && file_exists(png) && strstr(err, "wrote cmp.png"), "compare --out: %d, %s", rc, err);
    /* the blocks: a header per run, its rows, the final FD */
    const char *want[] = {"old (old/loss.csv)", "100", "6400", "5.00", "150.5", "0.12500", "200", "12800", "10.00", "80.25", "0.06250",
                          "old: final FD 80.25 at step 200 (10.00 minutes)", "new (new/loss.csv)",
                          "new: final FD 61.5 at step 150 (7.50 minutes)"};
    const char *at = out;
    for (int i = 0; i < (int)(sizeof want / sizeof want[0]); i++) {
        const char *f = strstr(at, want[i]);
        CHECK(f, "the table lacks \"%s\" (in order): %s", want[i], out);
        if (f) at = f + strlen(want[i]);
    }
    /* old's block has two rows, new's two: the training and event rows are not evaluations */
    int rows = 0;
    for (const char *c = out; (c = strstr(c, "\n  ")); c++) rows++;
    CHECK(rows == 6, "%d indented lines (two headers, four rows): %s", rows, out);

    rc = test_run_diffuse(dir, 60, "compare old new --json --by images --labels before,after", out, cap, err, sizeof err);
    CHECK(rc == 0, "compare --json: %d, %s", rc, err);
    cJSON *j = rc == 0 ? cJSON_Parse(out) : NULL;
    const cJSON *runs = cJSON_GetObjectItem(j, "runs");
    CHECK(j && cJSON_GetArraySize(runs) == 2, "--json: not an object with two runs: %.300s", out);
    CHECK(j && cJSON_IsString(cJSON_GetObjectItem(j, "by")) &&
              !strcmp(cJSON_GetObjectItem(j, "by")->valuestring, "images") && cJSON_IsNull(cJSON_GetObjectItem(j, "plot")),
          "--json: by images, no plot");
    if (cJSON_GetArraySize(runs) == 2) {
        const cJSON *a = cJSON_GetArrayItem(runs, 0), *b = cJSON_GetArrayItem(runs, 1);
        const cJSON *ea = cJSON_GetObjectItem(a, "evals"), *eb = cJSON_GetObjectItem(b, "evals");
        CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(a, "label")), "before") &&
                  !strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(b, "label")), "after"),
              "--labels: the runs' labels");
        CHECK(cJSON_GetArraySize(ea) == 2 && cJSON_GetArraySize(eb) == 2, "rows: %d and %d", cJSON_GetArraySize(ea),
              cJSON_GetArraySize(eb));
        const cJSON *r0 = cJSON_GetArrayItem(ea, 0), *r1 = cJSON_GetArrayItem(eb, 1);
        CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(r0, "step")) == 100 &&
                  cJSON_GetNumberValue(cJSON_GetObjectItem(r0, "images")) == 6400 &&
                  cJSON_GetNumberValue(cJSON_GetObjectItem(r0, "minutes")) == 5 &&
                  cJSON_GetNumberValue(cJSON_GetObjectItem(r0, "fd")) == 150.5 &&
                  cJSON_GetNumberValue(cJSON_GetObjectItem(r0, "kid")) == 0.125,
              "old's first row: %s", cJSON_PrintUnformatted(r0));
        CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(r1, "step")) == 150 &&
                  cJSON_GetNumberValue(cJSON_GetObjectItem(r1, "minutes")) == 7.5 &&
                  cJSON_GetNumberValue(cJSON_GetObjectItem(r1, "fd")) == 61.5 && cJSON_IsNull(cJSON_GetObjectItem(r1, "kid")),
              "new's last row (no KID: null)");
        CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(a, "final_fd")) == 80.25 &&
                  cJSON_GetNumberValue(cJSON_GetObjectItem(b, "final_fd")) == 61.5,
              "final FDs");
    }
    cJSON_Delete(j);
    free(out);
}

/* Usage errors exit 2, unreadable runs 1; neither writes the picture. */
TEST(cli_compare_refuses) {
    char dir[600], err[1024], png[700];
    runs_fixture(dir, sizeof dir);
    snprintf(png, sizeof png, "%s/bad.png", dir);
    struct {
        const char *args, *msg;
        int rc;
    } cases[] = {
        {"compare old new --labels a --out bad.png", "--labels gives 1 label for 2 runs", 2},
        {"compare old new --labels a,b,c --out bad.png", "--labels gives 3 labels for 2 runs", 2},
        {"compare old new --labels a,,b --out bad.png", "an empty label", 2},
        {"compare --out bad.png", "which runs?", 2},
        {"compare old --by steps --out bad.png", "--by", 2},
        {"compare old --out bad.txt", "name it .png", 2},
        {"compare old missing --out bad.png", "missing", 1},
        {"compare old none --out bad.png", "none: no evaluation rows in loss.csv: train with --eval-every N", 1},
    };
    for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) {
        int rc = test_run_diffuse(dir, 60, cases[i].args, NULL, 0, err, sizeof err);
        int lines = 0;   /* one line for an error, and the usage line after a usage error */
        for (const char *c = err; *c; c++) lines += *c == '\n';
        CHECK(rc == cases[i].rc && strstr(err, cases[i].msg) && lines == (cases[i].rc == 2 ? 2 : 1),
              "`%s`: exit %d (want %d), %d lines: %s", cases[i].args, rc, cases[i].rc, lines, err);
        CHECK(!file_exists(png), "`%s` wrote the picture", cases[i].args);
    }
}
