/* Fuzz targets for every file parser: each takes the bytes of one file (or, for several files, a small
 * container of them) and runs the library's loader on them. The libFuzzer programs (fuzz/entry.c) and the
 * test suite's replay of the kept corpus (tests/test_fuzz.c) call the same functions. */
#ifndef DF_FUZZ_H
#define DF_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* Run target `name` on data. Returns NULL, or a description of a broken promise: a failure without a
 * one-line message naming the file, or a success whose result is inconsistent. (A crash or sanitizer
 * report is a failure too, caught by the caller's process.) */
typedef const char *(*fuzz_fn)(const uint8_t *data, size_t size);

typedef struct {
    const char *name;
    fuzz_fn     fn;
} fuzz_target;

extern const fuzz_target fuzz_targets[];   /* ends with {NULL, NULL} */
const fuzz_target *fuzz_find(const char *name);

#endif
