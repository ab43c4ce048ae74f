/* Collectives between the ranks of a data-parallel run (docs/distributed.md).
 *
 * One interface, several transports: a cx_comm holds a table of functions that the
 * trainer calls without knowing which backend runs them.
 *   - shared memory (comm_shm.c): the ranks are processes on one host that map the same
 *     segment. The all-reduce is deterministic: every element is summed in rank order
 *     0, 1, ..., W-1 whichever rank arrives first, so two runs give the same bits.
 *   - NCCL (comm_nccl.c): not implemented yet; creating one fails with a clear error.
 *
 * Every call is collective: all ranks make the same calls in the same order with the same
 * sizes. A call that does not complete within the communicator's timeout fails on the
 * ranks that waited, naming the rank(s) that never arrived, and aborts the communicator so
 * every other rank fails too instead of waiting in turn. After any failure the
 * communicator is aborted: every later call fails at once with the first error's reason.
 * A communicator is used by one thread at a time. */
#ifndef CX_DIST_COMM_H
#define CX_DIST_COMM_H

#include "../core/cx.h"

#include <stddef.h>

#define CX_COMM_MAX_RANKS 64

typedef struct cx_comm cx_comm;

typedef struct {
    const char *name; /* "shm", "nccl" */
    /* data [n] (float32): replaced by the element-wise sum over the ranks. */
    cx_status (*all_reduce_sum)(cx_comm *comm, float *data, size_t n);
    /* data [n_bytes]: root's bytes are copied to every rank. */
    cx_status (*broadcast)(cx_comm *comm, void *data, size_t n_bytes, int root);
    cx_status (*barrier)(cx_comm *comm);
    /* Marks the communicator failed on every rank (waiting ranks wake and fail with
     * `reason`); never blocks, callable after any error. */
    void (*abort)(cx_comm *comm, const char *reason);
    void (*destroy)(cx_comm *comm);
} cx_comm_ops;

struct cx_comm {
    const cx_comm_ops *ops;
    int rank, world;
    double timeout_s; /* per call; <= 0: wait forever */
};

/* Thin wrappers that check the arguments every backend shares. */
cx_status cx_comm_all_reduce_sum(cx_comm *comm, float *data, size_t n);
/* all_reduce_sum, then data *= 1 / world (the DDP gradient average). */
cx_status cx_comm_all_reduce_mean(cx_comm *comm, float *data, size_t n);
cx_status cx_comm_broadcast(cx_comm *comm, void *data, size_t n_bytes, int root);
cx_status cx_comm_barrier(cx_comm *comm);
void cx_comm_abort(cx_comm *comm, const char *reason);
void cx_comm_destroy(cx_comm *comm);

/* Shared-memory backend. `name` is a POSIX shared-memory name ("/codext-..."), unique to
 * the run (the launcher makes it and passes it through the store), or "file:/dir/name" for a
 * segment in a regular file (when /dev/shm is too small, as Docker's default 64 MB). Rank 0 creates the
 * segment (O_EXCL: an existing name is an error), the others open it, waiting up to
 * timeout_s for it to appear; once all ranks are attached, rank 0 unlinks the name, so
 * nothing is left in /dev/shm after the run, even after a crash. `capacity_floats`: the
 * staging size per rank per chunk (0: a default of 256 Ki floats, smaller for many
 * ranks so the segment stays under 32 MiB). */
cx_status cx_comm_shm_create(const char *name, int rank, int world, double timeout_s,
                             size_t capacity_floats, cx_comm **out);
/* Bytes of /dev/shm the segment needs for `world` ranks (for the launcher's space check). */
size_t cx_comm_shm_segment_bytes(int world, size_t capacity_floats);

/* NCCL backend: not implemented yet. Always CX_ERUNTIME saying so. */
cx_status cx_comm_nccl_create(const void *unique_id, size_t id_bytes, int rank, int world,
                              double timeout_s, cx_comm **out);

#endif
