/* libFuzzer entry point for one target, chosen at build time: -DFUZZ_TARGET=name. */
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>

#define STR2(x) #x
#define STR(x) STR2(x)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const fuzz_target *t;
    if (!t && !(t = fuzz_find(STR(FUZZ_TARGET)))) {
        fprintf(stderr, "no fuzz target %s\n", STR(FUZZ_TARGET));
        abort();
    }
    const char *broken = t->fn(data, size);
    if (broken) {
        fprintf(stderr, "fuzz target %s: %s\n", t->name, broken);
        abort();
    }
    return 0;
}
