/* Error messages, aligned allocation and whole-file I/O used across the library.
 * Files are written atomically (temporary name, fsync, rename) so a crash never leaves half a file. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <cblas.h>
#include <omp.h>
#include <cjson/cJSON.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static _Thread_local char last_error[512];

const char *df_error(void) { return last_error; }

const char *df_status_name(df_status s) {
    static const char *names[] = {"ok", "io error", "format error", "config error",
                                  "shape error", "invalid argument", "out of memory"};
    _Static_assert(sizeof(names) / sizeof(names[0]) == DF_STATUS_COUNT, "status name table");
    return (unsigned)s < DF_STATUS_COUNT ? names[s] : "unknown status";
}

df_status df_fail(df_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    /* one printable line whatever a file put into it (names from JSON can hold newlines or escapes) */
    for (unsigned char *c = (unsigned char *)last_error; *c; c++)
        if (*c < 0x20 || *c == 0x7f) *c = '?';
    return s;
}

void *df_alloc_aligned(size_t bytes) {
    void *p = NULL;
    if (bytes == 0) bytes = 64;
    if (posix_memalign(&p, 64, (bytes + 63) & ~(size_t)63) != 0) return NULL;
    return p;
}

void df_free_aligned(void *p) { free(p); }

df_status df_read_file(const char *path, char **data, size_t *len) {
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return df_fail(DF_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return df_fail(DF_ERR_IO, "%s: not a regular file", path);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        fclose(f);
        return df_fail(DF_ERR_NOMEM, "%s: out of memory reading %zu bytes", path, n);
    }
    size_t got = fread(buf, 1, n, f);
    int err = ferror(f);
    fclose(f);
    if (got != n || err) {
        free(buf);
        return df_fail(DF_ERR_IO, "%s: short read (%zu of %zu bytes)", path, got, n);
    }
    buf[n] = 0;
    *data = buf;
    *len = n;
    return DF_OK;
}

df_status df_write_file_atomic(const char *path, const void *data, size_t len) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return df_fail(DF_ERR_ARG, "%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return df_fail(DF_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w <= 0) {
            if (w < 0 && errno == EINTR) continue;
            int e = w < 0 ? errno : ENOSPC;   /* no progress on a regular file: the disk is full */
            close(fd);
            unlink(tmp);
            return df_fail(DF_ERR_IO, "%s: write failed: %s", path, strerror(e));
        }
        p += w;
        left -= (size_t)w;
    }
    int e = fsync(fd) != 0 ? errno : 0;
    if (close(fd) != 0 && !e) e = errno;
    if (e) {
        unlink(tmp);
        return df_fail(DF_ERR_IO, "%s: cannot flush: %s", path, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        return df_fail(DF_ERR_IO, "%s: cannot rename into place: %s", path, strerror(e));
    }
    /* the rename itself survives a power cut only once the directory is on disk */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    int dfd = open(slash ? (dir[0] ? dir : "/") : ".", O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);   /* best effort: some filesystems refuse fsync on directories */
        close(dfd);
    }
    return DF_OK;
}

double df_now_sec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int df_is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

df_status df_mkdir_p(const char *dir) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf) return df_fail(DF_ERR_ARG, "%s: path too long", dir);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return df_fail(DF_ERR_IO, "%s: cannot create directory: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return df_fail(DF_ERR_IO, "%s: cannot create directory: %s", buf, strerror(errno));
    return DF_OK;
}

int df_fit_aligned(void **p, size_t *cap, size_t need, size_t size, int exact) {
    if (need <= *cap && !(exact && need != *cap)) return 0;
    df_free_aligned(*p);
    *p = df_alloc_aligned(DF_MAX(need, 1) * size);
    *cap = *p ? need : 0;
    return *p ? 0 : -1;
}

df_status df_lines_read(const char *path, df_lines *out) {
    memset(out, 0, sizeof *out);
    char *text;
    size_t len;
    df_status st = df_read_file(path, &text, &len);
    if (st) return st;
    const long bad = df_utf8_invalid_at(text, len);
    if (memchr(text, 0, len)) st = df_fail(DF_ERR_FORMAT, "%s: not text (a NUL byte)", path);
    else if (bad >= 0) st = df_fail(DF_ERR_FORMAT, "%s: not text (invalid UTF-8 at byte %ld)", path, bad);
    size_t cap = 1;
    for (size_t i = 0; i < len; i++) cap += text[i] == '\n';
    char **lines = st ? NULL : malloc(sizeof(char *) * cap);
    if (!st && !lines) st = df_fail(DF_ERR_NOMEM, "%s: out of memory", path);
    if (st) return free(text), st;
    int n = 0;
    for (char *line = text, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        size_t k = strlen(line);
        while (k && (line[k - 1] == '\r' || line[k - 1] == ' ' || line[k - 1] == '\t')) line[--k] = 0;
        if (k) lines[n++] = line;
    }
    out->text = text, out->lines = lines, out->n = n;
    return DF_OK;
}

void df_lines_free(df_lines *l) {
    if (!l) return;
    free(l->text), free(l->lines);
    memset(l, 0, sizeof *l);
}

df_status df_read_json_object(const char *path, cJSON **out) {
    char *text;
    size_t len;
    *out = NULL;
    df_status st = df_read_file(path, &text, &len);
    if (st) return st;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return df_fail(DF_ERR_FORMAT, "%s: not a JSON object", path);
    }
    *out = j;
    return DF_OK;
}

df_status df_write_json_atomic(const char *path, cJSON *j) {
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    if (!text) return df_fail(DF_ERR_NOMEM, "%s: out of memory", path);
    df_status st = df_write_file_atomic(path, text, strlen(text));
    free(text);
    return st;
}

void df_blas_single_thread(void) { openblas_set_num_threads(1); }

int df_threads_enter(int threads) {
    const int caller = omp_get_max_threads();
    if (threads && threads != caller) omp_set_num_threads(threads);
    return caller;
}

void df_threads_leave(int caller) {
    if (omp_get_max_threads() != caller) omp_set_num_threads(caller);
}
