/* Collectives between the ranks of a data-parallel run (docs/distributed.md).
 *
 * One interface, several transports: a cx_comm holds a table of functions that the
 * trainer calls without knowing which backend runs them.
 *   - shared memory (comm_shm.c): the ranks are processes on one host that map the same
 *     segment. The all-reduce is deterministic: every element is summed in rank order
 *     0, 1, ..., W-1 whichever rank arrives first, so two runs give the same bits.
 *   - NCCL (comm_nccl.c): GPU ranks; the collectives take DEVICE memory (device_buffers
 *     below) and run through the CUDA library's NCCL (kernels/nccl.cu, ops/cuda_abi.h
 *     nccl_*), non-blocking, every wait bounded by a watchdog. Compiled against the real
 *     NCCL, it has run only against the emulated NCCL (docs/emulator.md), never on a GPU.
 *
 * Host or device memory. A backend's all_reduce_sum / all_reduce_mean / broadcast take
 * the memory it communicates in: host memory for shm, device memory for NCCL
 * (ops->device_buffers = 1; the buffers are memory of the communicator's device whose
 * writers have finished: the caller synchronizes the stream that produced them). Values
 * that live on the host on every rank (a loss, a count of out-of-memory ranks, the union
 * of the experts routed to, a weight hash, Python's arrays) go through the host entries
 * cx_comm_host_*, which every backend takes: shm directly, NCCL staged through a device
 * buffer of the communicator (one copy each way per chunk). So the trainer reduces its
 * device gradients in place with a device-buffer backend and stages them through host
 * memory with shm (csrc/train/device_step.c), and keeps its scalars on the host route.
 *
 * The mean: shm sums in rank order and multiplies by float(1/W) afterwards; NCCL's ncclAvg
 * multiplies each rank's value by float(1/W) and then sums (NCCL's PreMulSum). For W a
 * power of two both are exact scalings and give the same bits for the same sum order
 * (barring subnormal results); for other W they may differ in the last bit. The sum order
 * of real NCCL is its ring's or tree's, not rank order: results agree with shm's to float
 * rounding, not bit for bit (the emulated NCCL sums in rank order).
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
    /* 1: all_reduce_sum, all_reduce_mean and broadcast take device memory (see above);
     * 0: host memory. */
    int device_buffers;
    /* data [n] (float32, the backend's memory): replaced by the element-wise sum over the
     * ranks. */
    cx_status (*all_reduce_sum)(cx_comm *comm, float *data, size_t n);
    /* The mean; NULL: all_reduce_sum, then data *= float(1/world) (host memory only). */
    cx_status (*all_reduce_mean)(cx_comm *comm, float *data, size_t n);
    /* data [n_bytes] (the backend's memory): root's bytes are copied to every rank. */
    cx_status (*broadcast)(cx_comm *comm, void *data, size_t n_bytes, int root);
    cx_status (*barrier)(cx_comm *comm);
    /* device_buffers backends: all_reduce_sum and broadcast of HOST memory (staged); NULL
     * for host backends (their own entries take host memory). */
    cx_status (*host_all_reduce_sum)(cx_comm *comm, float *data, size_t n);
    cx_status (*host_broadcast)(cx_comm *comm, void *data, size_t n_bytes, int root);
    /* Marks the communicator failed on every rank (waiting ranks wake and fail with
     * `reason`); never blocks, callable after any error. */
    void (*abort)(cx_comm *comm, const char *reason);
    void (*destroy)(cx_comm *comm);
} cx_comm_ops;

struct cx_comm {
    const cx_comm_ops *ops;
    int rank, world;
    double timeout_s; /* per call; <= 0: wait forever */
    /* Fault injection for tests (CODEXT_FAULT's "hang", codext/_worker.py): 1 makes this
     * rank's next all-reduce of at least one float stall INSIDE the collective, as a rank
     * wedged mid-collective would. shm: after its data is posted and the first barrier
     * passed, so its peers wait in the second; a peer's abort (shared) wakes it. NCCL:
     * before the enqueue; only this rank's own abort wakes it (a peer's watchdog abort
     * does not reach it), so it stays until killed. Set with
     * cx_comm_stall_next_all_reduce while no collective runs. */
    int stall_next_all_reduce;
};

/* Thin wrappers that check the arguments every backend shares. These three take the
 * backend's memory: host for shm, device for NCCL (cx_comm_device_buffers). */
cx_status cx_comm_all_reduce_sum(cx_comm *comm, float *data, size_t n);
/* The DDP gradient average (see "The mean" above for how each backend rounds). */
cx_status cx_comm_all_reduce_mean(cx_comm *comm, float *data, size_t n);
cx_status cx_comm_broadcast(cx_comm *comm, void *data, size_t n_bytes, int root);
/* The same on host memory, for every backend. host_all_reduce_mean: the host sum, then
 * data *= float(1/world). */
cx_status cx_comm_host_all_reduce_sum(cx_comm *comm, float *data, size_t n);
cx_status cx_comm_host_all_reduce_mean(cx_comm *comm, float *data, size_t n);
cx_status cx_comm_host_broadcast(cx_comm *comm, void *data, size_t n_bytes, int root);
/* 1 when the backend's own entries take device memory. */
int cx_comm_device_buffers(const cx_comm *comm);
cx_status cx_comm_barrier(cx_comm *comm);
void cx_comm_abort(cx_comm *comm, const char *reason);
/* See stall_next_all_reduce above. */
void cx_comm_stall_next_all_reduce(cx_comm *comm);
/* For the backends: sleeps in 20 ms slices until aborted(comm) is nonzero. */
void cx_comm_stall_until_aborted(cx_comm *comm, int (*aborted)(cx_comm *comm));
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

/* NCCL backend (comm_nccl.c) through the CUDA library's nccl_* entries.
 * available: 1 when the CUDA library loads and provides NCCL, else 0 with the reason in
 * `reason` (a CPU-only build, no library, ...). `build` (may be NULL) gets the NCCL the
 * library was built against. */
#define CX_COMM_NCCL_ID_BYTES 128
int cx_comm_nccl_available(char *reason, size_t reason_size, const char **build);
/* id [CX_COMM_NCCL_ID_BYTES]: a fresh unique id (rank 0 makes it; the store shares it). */
cx_status cx_comm_nccl_unique_id(unsigned char *id);
/* Joins the communicator of `world` ranks named by `unique_id` on CUDA device `device`,
 * waiting (at most timeout_s; <= 0: forever) for every rank. */
cx_status cx_comm_nccl_create(const unsigned char *unique_id, int rank, int world, int device,
                              double timeout_s, cx_comm **out);

#endif
