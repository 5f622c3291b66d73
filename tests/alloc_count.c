/* Counting the library's allocations: the test binary is linked with -Wl,--wrap=malloc,... (Makefile),
 * so every call of malloc & co. from the static library and the tests lands here first, while the
 * shared libraries (oneDNN, OpenMP, OpenBLAS, libc itself) keep calling their allocator directly. */
#include "test.h"

#include <malloc.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

void *__real_malloc(size_t size);
void *__real_calloc(size_t count, size_t size);
void *__real_realloc(void *p, size_t size);
void  __real_free(void *p);
int   __real_posix_memalign(void **p, size_t align, size_t size);
void *__real_aligned_alloc(size_t align, size_t size);
char *__real_strdup(const char *s);

/* Lock-free atomics: OpenMP threads allocate too, and counting must not allocate itself. */
static atomic_int  counting;
static atomic_long allocations;
static size_t      heap_at_begin, heap_growth;

static void count(void) {
    if (atomic_load_explicit(&counting, memory_order_relaxed))
        atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
}

void *__wrap_malloc(size_t size) {
    count();
    return __real_malloc(size);
}
void *__wrap_calloc(size_t n, size_t size) {
    count();
    return __real_calloc(n, size);
}
void *__wrap_realloc(void *p, size_t size) {
    count();
    return __real_realloc(p, size);
}
void __wrap_free(void *p) { __real_free(p); }   /* giving memory back is not an allocation */
int __wrap_posix_memalign(void **p, size_t align, size_t size) {
    count();
    return __real_posix_memalign(p, align, size);
}
void *__wrap_aligned_alloc(size_t align, size_t size) {
    count();
    return __real_aligned_alloc(align, size);
}
char *__wrap_strdup(const char *s) {
    count();
    return __real_strdup(s);
}

/* Bytes in use by glibc's allocator (small blocks and mmapped ones): what everyone allocated. */
static size_t heap_in_use(void) {
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

void test_alloc_begin(void) {
    atomic_store(&allocations, 0);
    heap_at_begin = heap_in_use();
    atomic_store(&counting, 1);
}

long test_alloc_end(void) {
    atomic_store(&counting, 0);
    size_t now = heap_in_use();
    heap_growth = now > heap_at_begin ? now - heap_at_begin : 0;
    return atomic_load(&allocations);
}

long test_alloc_others(void) { return (long)heap_growth; }
