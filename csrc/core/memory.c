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

void *cx_aligned_alloc(size_t bytes) {
    void *ptr = NULL;
    if (bytes == 0)
        bytes = 64;
    if (posix_memalign(&ptr, 64, bytes) != 0)
        return NULL;
    return ptr;
}

void cx_aligned_free(void *ptr) { free(ptr); }

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
        float *fresh = cx_aligned_alloc(want * sizeof(float));
        if (!fresh)
            return NULL;
        UNPOISON(buf->data, buf->capacity * sizeof(float));
        cx_aligned_free(buf->data);
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
        cx_aligned_free(scratch[i].data);
        scratch[i].data = NULL;
        scratch[i].capacity = 0;
    }
}
