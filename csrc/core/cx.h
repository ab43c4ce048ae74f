/* codext core: status values, error messages, the thread pool and scratch memory.
 *
 * Every fallible function returns a cx_status. CX_OK is 0; any other value is an
 * error class that the Python layer maps to an exception type, and the message set
 * by cx_fail() (thread-local, so concurrent workers do not overwrite each other)
 * becomes the exception text. Library code never calls exit() or abort(). */
#ifndef CX_CORE_H
#define CX_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CX_OK = 0,
    CX_EINVAL = 1,   /* bad argument: ValueError */
    CX_EIO = 2,      /* file problem: OSError */
    CX_ERUNTIME = 3, /* device, collective or internal failure: RuntimeError */
    CX_ENOMEM = 4,   /* allocation failed: MemoryError */
    CX_EKEY = 5,     /* unknown name: KeyError */
} cx_status;

/* Records a formatted message for the calling thread and returns `code`, so that
 * `return cx_fail(CX_EINVAL, "x has rank %d, expected 4", ndim);` reads naturally. */
cx_status cx_fail(cx_status code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prepends context ("while loading stem.0.weight: ") to the current message. */
cx_status cx_fail_context(cx_status code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
const char *cx_last_error(void);
void cx_clear_error(void);

#define CX_TRY(expr)                          \
    do {                                      \
        cx_status cx_try_status_ = (expr);    \
        if (cx_try_status_ != CX_OK)          \
            return cx_try_status_;            \
    } while (0)

/* ---- thread pool --------------------------------------------------------------
 * A small pthread pool of our own (libgomp is not fork-safe and can clash with the
 * OpenMP of a torch loaded into the same process).
 *
 * cx_parallel_for splits [0, n) into contiguous ranges of at least `grain` items and
 * calls fn(ctx, begin, end) for each, on the pool's threads and the caller's.
 * Contract for determinism: each index's output must be written by code that does not
 * depend on how the range was split (disjoint outputs, fixed reduction order inside an
 * index). Reductions across indices must be split by problem size (fixed chunks that
 * write partials) and combined in a fixed order, never per thread. A parallel_for
 * issued from inside a pool task runs serially on that thread. */
typedef void (*cx_range_fn)(void *ctx, int64_t begin, int64_t end);
void cx_parallel_for(int64_t n, int64_t grain, cx_range_fn fn, void *ctx);

/* Threads used by cx_parallel_for (caller included). Default: the CPUs this process
 * may run on (sched_getaffinity), or CODEXT_NUM_THREADS when set. Lock-free: safe to
 * call from inside a pool task. */
int cx_get_num_threads(void);
cx_status cx_set_num_threads(int n_threads);
/* Index of the calling thread within the pool: 0 for the caller, 1.. for workers. */
int cx_thread_index(void);

/* ---- scratch memory -----------------------------------------------------------
 * A per-thread buffer that grows to the largest size asked for and is kept, so ops
 * that need temporary space (im2col panels, GEMM packing) allocate only on the first
 * step. `slot` (0..CX_SCRATCH_SLOTS-1) lets one op hold several buffers at once.
 * Ownership: slots 0 and 1 are for an op family's own temporaries; slots 2 and 3 are
 * the GEMM's packing buffers on whichever thread runs a tile, so an op that calls
 * cx_gemm must not hold slot 2 or 3 across the call. Ops that never call the GEMM
 * (norms, attention) may use slot 3 for reduction partials.
 * Returns NULL only when the allocation fails. Aligned to 64 bytes. */
#define CX_SCRATCH_SLOTS 4
float *cx_scratch(int slot, size_t n_floats);
/* Frees the calling thread's scratch buffers (pool threads free theirs on exit). */
void cx_scratch_release(void);

/* ---- aligned allocation --------------------------------------------------------
 * The engine's allocator: model, arena, metrics and scratch memory all come from here,
 * so the fault-injection hook below reaches every allocation the engine makes. */
void *cx_aligned_alloc(size_t bytes); /* 64-byte aligned, NULL on failure */
void cx_aligned_free(void *ptr);      /* NULL is fine */

#ifdef CX_TEST_BUILD
/* ---- fault injection (test builds only: CODEXT_TEST_BUILD=1) --------------------------
 * cx_test_alloc_fail_at(n) restarts the allocation count; the n-th allocation from then
 * on (cx_aligned_alloc or a scratch buffer growing; n >= 1) returns NULL, once. n = 0
 * turns failing off. cx_test_alloc_count() is the number of allocations since the last
 * restart. cx_test_alloc_live() is the number of cx_aligned_alloc blocks not yet freed
 * (scratch buffers, which are kept on purpose, are not counted). Thread-safe. */
void cx_test_alloc_fail_at(long long n);
long long cx_test_alloc_count(void);
long long cx_test_alloc_live(void);
#endif

#ifdef __cplusplus
}
#endif
#endif
