/* The kept fuzzing corpus and every input that once broke a parser (fuzz/regress/), replayed through
 * the same targets the fuzzers run: each must end in a proper status or a consistent result. */
#define _POSIX_C_SOURCE 200809L
#include "test.h"
#include "fuzz.h"
#include "internal.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

/* Replay every file of dir through t; returns how many there were. */
static int replay_dir(const fuzz_target *t, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        char *data;
        size_t len;
        if (df_read_file(path, &data, &len)) continue;
        const char *broken = t->fn((const uint8_t *)data, len);
        CHECK(!broken, "%s: %s", path, broken);
        free(data);
        n++;
    }
    closedir(d);
    return n;
}

TEST(fuzz_corpus_and_regressions_replay) {
    char root[1100];
    snprintf(root, sizeof root, "%s/../fuzz", test_bin_dir());
    int total = 0;
    for (const fuzz_target *t = fuzz_targets; t->name; t++) {
        char dir[1200];
        snprintf(dir, sizeof dir, "%s/corpus/%s", root, t->name);
        int n = replay_dir(t, dir);
        CHECK(n > 0, "%s: no corpus to replay", dir);
        snprintf(dir, sizeof dir, "%s/regress/%s", root, t->name);
        n += replay_dir(t, dir);
        total += n;
    }
    printf("    %d inputs replayed\n", total);
}
