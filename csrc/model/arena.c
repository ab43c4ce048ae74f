/* Activation arena (see arena.h). */
#include "arena.h"

static float planning_dummy[16] __attribute__((aligned(64)));

float *cx_arena_take(cx_arena *arena, size_t n) {
    size_t rounded = (n + 15) & ~(size_t)15;
    size_t offset = arena->used;
    arena->used += rounded;
    if (arena->used > arena->high_water)
        arena->high_water = arena->used;
    if (arena->planning)
        return planning_dummy;
    if (arena->used > arena->capacity)
        return NULL;
    return arena->base + offset;
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
    return CX_OK;
}

void cx_arena_free(cx_arena *arena) {
    if (arena->base && arena->be)
        arena->be->free(arena->be, arena->base);
    arena->base = NULL;
    arena->capacity = 0;
    arena->used = 0;
}
