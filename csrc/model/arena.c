/* Activation arena (see arena.h). */
#include "arena.h"

#ifdef CX_SANITIZE
#include <sanitizer/asan_interface.h>
/* Floats of poisoned red zone after every buffer (a multiple of 16 keeps 64-byte alignment). */
#define ARENA_RED_ZONE 16
static void poison(cx_arena *arena, size_t from, size_t to) {
    if (arena->base && to > from)
        ASAN_POISON_MEMORY_REGION(arena->base + from, (to - from) * sizeof(float));
}
static void unpoison(cx_arena *arena, size_t from, size_t to) {
    if (arena->base && to > from)
        ASAN_UNPOISON_MEMORY_REGION(arena->base + from, (to - from) * sizeof(float));
}
#else
#define ARENA_RED_ZONE 0
static void poison(cx_arena *arena, size_t from, size_t to) {}
static void unpoison(cx_arena *arena, size_t from, size_t to) {}
#endif

static float planning_dummy[16] __attribute__((aligned(64)));

float *cx_arena_take(cx_arena *arena, size_t n) {
    size_t rounded = ((n + 15) & ~(size_t)15) + ARENA_RED_ZONE;
    size_t offset = arena->used;
    arena->used += rounded;
    if (arena->used > arena->high_water)
        arena->high_water = arena->used;
    if (arena->planning)
        return planning_dummy;
    if (arena->used > arena->capacity)
        return NULL;
    /* exactly n floats become addressable; the rounding and the red zone stay poisoned */
    unpoison(arena, offset, offset + n);
    return arena->base + offset;
}

void cx_arena_release(cx_arena *arena, size_t mark) {
    if (mark < arena->used)
        poison(arena, mark, arena->used < arena->capacity ? arena->used : arena->capacity);
    arena->used = mark;
}

cx_status cx_arena_reserve(cx_arena *arena, cx_backend *be, size_t floats) {
    if (arena->base && arena->capacity >= floats && arena->be == be)
        return CX_OK;
    cx_arena_free(arena);
    arena->base = be->alloc(be, floats * sizeof(float));
    if (!arena->base)
        return cx_fail(CX_ENOMEM, "cannot allocate %.1f MiB of activation memory",
                       (double)floats * sizeof(float) / (1 << 20));
    arena->be = be;
    arena->capacity = floats;
    poison(arena, 0, floats);
    return CX_OK;
}

void cx_arena_free(cx_arena *arena) {
    if (arena->base && arena->be) {
        unpoison(arena, 0, arena->capacity);
        arena->be->free(arena->be, arena->base);
    }
    arena->base = NULL;
    arena->capacity = 0;
    arena->used = 0;
}
