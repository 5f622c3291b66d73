/* Checks on the paths a command reads and writes, made before any work starts, and where the shipped
 * feature network is. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* "what path" for messages: "--mask m.png", or the path alone. */
static const char *sep(const char *what) { return *what ? " " : ""; }

int cli_check_input(const char *what, const char *path, int want_dir) {
    struct stat sb;
    if (stat(path, &sb) != 0) return cli_die("%s%s%s: %s", what, sep(what), path, strerror(errno));
    if (want_dir && !S_ISDIR(sb.st_mode)) return cli_die("%s%s%s: not a directory", what, sep(what), path);
    if (!want_dir && S_ISDIR(sb.st_mode)) return cli_die("%s%s%s: is a directory, not a file", what, sep(what), path);
    if (access(path, R_OK) != 0) return cli_die("%s%s%s: cannot read: %s", what, sep(what), path, strerror(errno));
    return 0;
}

int cli_check_data(const char *what, const char *path) {
    struct stat sb;
    if (strcmp(path, "fashion-mnist") == 0 || strcmp(path, "fashion-mnist:test") == 0) return 0;
    return cli_check_input(what, path, stat(path, &sb) == 0 && S_ISDIR(sb.st_mode));
}

/* The directory `path` goes in, into buf: "a/b/c" -> "a/b", "c" and "c/" -> ".", "/c" -> "/". */
static void parent_of(const char *path, char *buf, size_t cap) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;   /* "dir/" names dir */
    while (n > 0 && path[n - 1] != '/') n--;
    while (n > 1 && path[n - 1] == '/') n--;
    if (n == 0) snprintf(buf, cap, ".");
    else snprintf(buf, cap, "%.*s", (int)n, path);
}

int cli_check_output(const char *what, const char *path, int want_dir) {
    struct stat sb;
    if (stat(path, &sb) == 0) {
        if (!want_dir && S_ISDIR(sb.st_mode)) return cli_die("%s%s%s: is a directory", what, sep(what), path);
        if (want_dir && !S_ISDIR(sb.st_mode))
            return cli_die("%s%s%s: exists and is not a directory", what, sep(what), path);
    }
    if (want_dir) return 0;   /* made with its parents */
    char dir[4096];
    parent_of(path, dir, sizeof dir);
    if (stat(dir, &sb) != 0)
        return cli_die("%s%s%s: cannot write in %s: %s", what, sep(what), path, dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) return cli_die("%s%s%s: %s is not a directory", what, sep(what), path, dir);
    if (access(dir, W_OK | X_OK) != 0)
        return cli_die("%s%s%s: cannot write in %s: %s", what, sep(what), path, dir, strerror(errno));
    /* access() says yes to root everywhere (/proc, read-only mounts): make a file there to be sure, before
     * any work is done */
    char probe[4200];
    if (snprintf(probe, sizeof probe, "%s/.diffuse-probe-XXXXXX", dir) >= (int)sizeof probe)
        return cli_die("%s%s%s: path too long", what, sep(what), path);
    int fd = mkstemp(probe);
    if (fd < 0) return cli_die("%s%s%s: cannot write in %s: %s", what, sep(what), path, dir, strerror(errno));
    close(fd);
    unlink(probe);
    return 0;
}

/* The last component of path: "a/b.png" -> "b.png", "dir/" -> "dir/". */
static const char *base_of(const char *path) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    while (n > 0 && path[n - 1] != '/') n--;
    return path + n;
}

int cli_same_file(const char *a, const char *b) {
    if (strcmp(a, b) == 0) return 1;
    struct stat sa, sb;
    if (stat(a, &sa) == 0 && stat(b, &sb) == 0) return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    /* not both there yet: the same name in the same directory ("./x.png" and "x.png") */
    const char *ba = base_of(a), *bb = base_of(b);
    size_t la = strcspn(ba, "/"), lb = strcspn(bb, "/");
    if (la != lb || strncmp(ba, bb, la) != 0) return 0;
    char da[4096], db[4096];
    parent_of(a, da, sizeof da);
    parent_of(b, db, sizeof db);
    return stat(da, &sa) == 0 && stat(db, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int cli_has_suffix(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcasecmp(s + a - b, suffix) == 0;
}

const char *cli_default_features(char *buf, size_t cap) {
    const char *rel = "models/fmnist-features";
    struct stat sb;
    if (stat(rel, &sb) == 0 && S_ISDIR(sb.st_mode)) return rel;
    char exe[4096];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {   /* beside the program: build/diffuse -> models/ */
        exe[len] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        snprintf(buf, cap, "%s/../%s", exe, rel);
        if (stat(buf, &sb) == 0 && S_ISDIR(sb.st_mode)) return buf;
    }
    return rel;   /* missing: the error names it */
}
