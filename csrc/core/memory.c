/* Aligned allocation and per-thread scratch buffers (see cx.h). */
#include "cx.h"

#include <stdlib.h>

#ifdef CX_SANITIZE
#include <sanitizer/asan_interface.h>
#define POISON(ptr, bytes) ASAN_POISON_MEMORY_REGION((ptr), (bytes))
#define UNPOISON(ptr, bytes) ASAN_UNPOISON_MEMORY_REGION((ptr), (bytes))
#else
#define POISON(ptr, bytes) ((void)0)
#define UNPOISON(ptr, bytes) ((void)0)
#endif

#ifdef CX_TEST_BUILD
static long long fail_at;     /* 0: never fail */
static long long alloc_count; /* allocations since the last cx_test_alloc_fail_at */
static long long live_blocks; /* cx_aligned_alloc blocks not yet freed */

void cx_test_alloc_fail_at(long long n) {
    __atomic_store_n(&alloc_count, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&fail_at, n > 0 ? n : 0, __ATOMIC_SEQ_CST);
}
long long cx_test_alloc_count(void) { return __atomic_load_n(&alloc_count, __ATOMIC_SEQ_CST); }
long long cx_test_alloc_live(void) { return __atomic_load_n(&live_blocks, __ATOMIC_SEQ_CST); }

/* 1 when this allocation is the one to fail. */
static int injected_failure(void) {
    long long index = __atomic_add_fetch(&alloc_count, 1, __ATOMIC_SEQ_CST);
    return index == __atomic_load_n(&fail_at, __ATOMIC_SEQ_CST);
}
#endif

static void *allocate(size_t bytes) {
    void *ptr = NULL;
#ifdef CX_TEST_BUILD
    if (injected_failure())
        return NULL;
#endif
    if (bytes == 0)
        bytes = 64;
    if (posix_memalign(&ptr, 64, bytes) != 0)
        return NULL;
    return ptr;
}

void *cx_aligned_alloc(size_t bytes) {
    void *ptr = allocate(bytes);
#ifdef CX_TEST_BUILD
    if (ptr)
        __atomic_add_fetch(&live_blocks, 1, __ATOMIC_SEQ_CST);
#endif
    return ptr;
}

void cx_aligned_free(void *ptr) {
#ifdef CX_TEST_BUILD
    if (ptr)
        __atomic_sub_fetch(&live_blocks, 1, __ATOMIC_SEQ_CST);
#endif
    free(ptr);
}

typedef struct {
    float *data;
    size_t capacity; /* in floats */
} scratch_buffer;

static _Thread_local scratch_buffer scratch[CX_SCRATCH_SLOTS];

float *cx_scratch(int slot, size_t n_floats) {
    if (slot < 0 || slot >= CX_SCRATCH_SLOTS)
        return NULL;
    scratch_buffer *buf = &scratch[slot];
    if (n_floats > buf->capacity) {
        /* grow geometrically so a sequence of slightly larger requests stays cheap */
        size_t grown = buf->capacity + buf->capacity / 2;
        size_t want = n_floats > grown ? n_floats : grown;
        float *fresh = allocate(want * sizeof(float));
        if (!fresh)
            return NULL;
        UNPOISON(buf->data, buf->capacity * sizeof(float));
        free(buf->data);
        buf->data = fresh;
        buf->capacity = want;
    }
    /* sanitizer build: only the n floats asked for are addressable, so a write past them
     * is reported even though the buffer is larger */
    UNPOISON(buf->data, n_floats * sizeof(float));
    POISON(buf->data + n_floats, (buf->capacity - n_floats) * sizeof(float));
    return buf->data;
}

void cx_scratch_release(void) {
    for (int i = 0; i < CX_SCRATCH_SLOTS; i++) {
        UNPOISON(scratch[i].data, scratch[i].capacity * sizeof(float));
        free(scratch[i].data);
        scratch[i].data = NULL;
        scratch[i].capacity = 0;
    }
}
