/* Activation arena and execution context.
 *
 * A model's forward and backward code takes every activation and activation-gradient
 * buffer from an arena with cx_arena_take(). Before the first step of a given
 * (batch, size, mode) the same code runs once against the planning backend
 * (cx_backend_null: every op a no-op) with a counting arena; the arena is then sized
 * once and the step loop never allocates. */
#ifndef CX_ARENA_H
#define CX_ARENA_H

#include "../ops/ops.h"

typedef struct {
    cx_backend *be;     /* the backend that owns `base` */
    float *base;        /* NULL while planning */
    size_t capacity;    /* floats */
    size_t used;        /* floats */
    size_t high_water;  /* largest `used` seen */
    int planning;
} cx_arena;

/* Returns n floats (64-byte aligned). While planning, returns a dummy non-NULL pointer
 * and only counts. Running out of a planned arena is a bug in the plan: it returns
 * NULL and the caller fails with CX_ERUNTIME.
 * In the sanitizer build (CX_SANITIZE) every buffer is followed by a poisoned red zone and
 * everything past `used` is poisoned, so ASan reports a read or write one element past a
 * buffer, or into a released one, although the whole arena is one allocation. */
float *cx_arena_take(cx_arena *arena, size_t n);
/* Marks and releases (stack discipline) for buffers whose life ends inside a phase; a
 * release to 0 starts a new phase (forward). */
static inline size_t cx_arena_mark(const cx_arena *arena) { return arena->used; }
void cx_arena_release(cx_arena *arena, size_t mark);
/* Ensures capacity >= floats on backend be (frees and reallocates when growing). */
cx_status cx_arena_reserve(cx_arena *arena, cx_backend *be, size_t floats);
void cx_arena_free(cx_arena *arena);

/* Called by a backward pass whenever every gradient at offsets >= `offset` of the
 * parameter buffer is final for this pass (queued on the backend, maybe not yet computed:
 * a device hook records where the stream is). The trainer launches gradient buckets from
 * it while the rest of the backward runs (csrc/train/buckets.h). */
typedef void (*cx_grads_final_fn)(void *ctx, size_t offset);

/* What forward and backward code needs to run: the backend, the arena, the parameter
 * values and (for backward) the gradient buffer; grads NULL means no parameter
 * gradients (a frozen part); grads_final (may be NULL): the hook above. */
typedef struct {
    cx_backend *be;
    cx_arena *arena;
    const float *params;
    float *grads;
    cx_grads_final_fn grads_final;
    void *grads_final_ctx;
} cx_exec;

/* Tells ex's hook, if any, that gradients at offsets >= offset are final. */
static inline void cx_exec_grads_final(const cx_exec *ex, size_t offset) {
    if (ex->grads && ex->grads_final)
        ex->grads_final(ex->grads_final_ctx, offset);
}

#define CX_TAKE(ex, ptr, n)                                                              \
    do {                                                                                 \
        (ptr) = cx_arena_take((ex)->arena, (n));                                         \
        if (!(ptr))                                                                      \
            return cx_fail(CX_ERUNTIME, "activation arena exhausted (%s:%d): plan bug",  \
                           __FILE__, __LINE__);                                          \
    } while (0)

/* Ends a pass: the backend's sync() when the pass succeeded; when it failed, an error an
 * op recorded earlier in the pass (reported by sync) came first and wins, else the pass's
 * own. Either way nothing stays pending for the next caller's sync. */
static inline cx_status cx_exec_finish(cx_backend *be, cx_status pass_status) {
    cx_status pending = be->sync(be);
    return pending != CX_OK ? pending : pass_status;
}

/* Ends a pass without waiting for it where the backend can tell a call-time error (out of
 * memory, a failed launch) without waiting (be->pending): CX_OK with the pass still
 * queued, or, when the pass or one of its ops failed, cx_exec_finish's answer (so the
 * error and its message are the same as there). Errors the device finds while running the
 * pass come at the next sync. Other backends: cx_exec_finish. */
static inline cx_status cx_exec_check(cx_backend *be, cx_status pass_status) {
    if (pass_status != CX_OK || !be->pending || be->pending(be) != CX_OK)
        return cx_exec_finish(be, pass_status);
    return CX_OK;
}

/* A zeroed gradient buffer from the arena. */
#define CX_TAKE_ZERO(ex, ptr, n)                                                         \
    do {                                                                                 \
        CX_TAKE(ex, ptr, n);                                                             \
        (ex)->be->zero((ex)->be, (ptr), (n));                                            \
    } while (0)

#endif
